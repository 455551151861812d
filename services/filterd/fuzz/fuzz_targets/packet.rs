//! Fuzzes the per-packet path: arbitrary bytes through every hook of a
//! filter with state tracking, NAT and a REJECT rule, and the REJECT
//! answer builder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::atomic::AtomicU64;
use strata_filterd::conntrack::Conntrack;
use strata_filterd::rule::{parse_command, Hook, RejectWith};
use strata_filterd::ruleset::RuleSet;
use strata_filterd::tables::Tables;
use strata_filterd::{reject, Filter, Meta};

fuzz_target!(|data: &[u8]| {
    let counters: Vec<AtomicU64> = (0..64).map(|_| AtomicU64::new(0)).collect();
    let mut t = Tables::default();
    for line in [
        "add INPUT -m state --state INVALID -j DROP",
        "add INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset",
        "-t nat -A PREROUTING -p udp --dport 53 -j DNAT --to-destination 10.0.0.9:5353",
        "-t nat -A POSTROUTING -j MASQUERADE",
    ] {
        let w: Vec<&str> = line.split(' ').collect();
        t.apply(&parse_command(&w).unwrap()).unwrap();
    }
    let mut f = Filter::new(Conntrack::new(64, [1, 2]), &counters);
    f.set_rules(RuleSet::compile(&t, &["eth0"]).unwrap(), &["eth0"]);
    let mut pkt = data.to_vec();
    for (i, hook) in [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output, Hook::Postrouting]
        .into_iter()
        .enumerate()
    {
        let mut m = Meta {
            in_if: 0,
            out_if: 0,
            in_addr: 0x0a00_0001,
            out_addr: 0x0a00_0001,
            ..Meta::default()
        };
        let _ = f.hook(hook, &mut pkt, &mut m, i as u64);
    }
    let mut out = [0u8; 700];
    let mut frame = vec![0u8; 14];
    frame.extend_from_slice(data);
    for w in [RejectWith::TcpReset, RejectWith::PortUnreachable] {
        let _ = reject::build(&frame, w, &mut out);
    }
});
