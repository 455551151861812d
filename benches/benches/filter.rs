//! filterd's per-packet cost: a TCP segment through INPUT with no rules
//! (the fast path), with 1,000 rules of the common kinds (port, address,
//! source prefix: indexed, so the cost must stay near the few-rules
//! case), and with connection tracking on.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU64;
use strata_filterd::conntrack::Conntrack;
use strata_filterd::rule::{parse_command, Hook};
use strata_filterd::ruleset::RuleSet;
use strata_filterd::tables::Tables;
use strata_filterd::{Filter, Meta};

fn tables(lines: &[String]) -> Tables {
    let mut t = Tables::new(4096);
    for l in lines {
        let w: Vec<&str> = l.split(' ').collect();
        t.apply(&parse_command(&w).unwrap()).unwrap();
    }
    t
}

/// A 60-byte TCP ACK from 192.168.1.1:40000 to 10.77.0.2:8080.
fn segment() -> Vec<u8> {
    let mut p = vec![0u8; 40];
    let ip = strata_proto::ipv4::Ipv4Header {
        header_len: 20,
        tos: 0,
        total_len: 40,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        ttl: 64,
        protocol: 6,
        checksum: 0,
        src: Ipv4Addr::new(192, 168, 1, 1),
        dst: Ipv4Addr::new(10, 77, 0, 2),
    };
    ip.emit(&mut p).unwrap();
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&8080u16.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    p
}

fn bench(c: &mut Criterion) {
    let counters: Vec<AtomicU64> = (0..8192).map(|_| AtomicU64::new(0)).collect();
    let mut many = Vec::new();
    for i in 0..333u32 {
        many.push(format!("add INPUT -p tcp --dport {} -j DROP", 20000 + i));
        many.push(format!(
            "add INPUT -d 10.1.{}.{}/32 -j DROP",
            i / 256,
            i % 256
        ));
        many.push(format!("add INPUT -s 172.16.{}.0/24 -j DROP", i % 250));
    }
    many.push("add INPUT -p tcp --dport 8080 -j ACCEPT".into());
    let cases = [
        ("input/no rules", Vec::new()),
        (
            "input/2 rules",
            vec![
                "add INPUT -p tcp --dport 22 -j DROP".to_string(),
                "add INPUT -p tcp --dport 8080 -j ACCEPT".to_string(),
            ],
        ),
        ("input/1000 rules", many),
        (
            "input/stateful",
            vec![
                "add INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT".to_string(),
                "add INPUT -p tcp --dport 8080 -j ACCEPT".to_string(),
            ],
        ),
    ];
    let mut g = c.benchmark_group("filter");
    for (name, lines) in cases {
        let set = RuleSet::compile(&tables(&lines), &["strata0"]).unwrap();
        let mut f = Filter::new(Conntrack::new(1024, [1, 2]), &counters);
        f.set_rules(set, &["strata0"]);
        let pkt = segment();
        let mut buf = pkt.clone();
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.copy_from_slice(&pkt);
                let mut m = Meta {
                    in_if: 0,
                    ..Meta::default()
                };
                black_box(f.hook(Hook::Input, black_box(&mut buf), &mut m, 1))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
