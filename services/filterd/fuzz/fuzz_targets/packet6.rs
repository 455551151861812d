//! Fuzzes the IPv6 per-packet path: arbitrary bytes made into an IPv6
//! packet (version and payload length fixed up so that the extension
//! header walk, fragments, ICMPv6 errors and their quoted packets are
//! reached), through every hook of a filter with IPv6 state rules and
//! REJECTs, then the IPv6 REJECT answer builder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::atomic::AtomicU64;
use strata_filterd::conntrack::Conntrack;
use strata_filterd::packet::PacketInfo;
use strata_filterd::reject::{self, MAX_ANSWER};
use strata_filterd::rule::{parse_command, Hook, RejectWith};
use strata_filterd::ruleset::RuleSet;
use strata_filterd::tables::Tables;
use strata_filterd::{Filter, Meta};

fuzz_target!(|data: &[u8]| {
    let mut pkt = data.to_vec();
    if pkt.len() >= 40 {
        pkt[0] = 0x60 | (pkt[0] & 0x0f);
        let n = u16::try_from(pkt.len() - 40).unwrap_or(u16::MAX);
        pkt[4..6].copy_from_slice(&n.to_be_bytes());
    }
    let _ = PacketInfo::parse(&pkt, 0, 0);
    let counters: Vec<AtomicU64> = (0..64).map(|_| AtomicU64::new(0)).collect();
    let mut t = Tables::default();
    for line in [
        "-6 add INPUT -m state --state INVALID -j DROP",
        "-6 add INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset",
        "-6 add INPUT -p icmpv6 --icmpv6-type echo-request -j REJECT",
        "-6 add INPUT -s 2001:db8::/32 -p udp -j REJECT --reject-with icmp6-adm-prohibited",
        "-6 add FORWARD -m state --state ESTABLISHED,RELATED,UNTRACKED -j ACCEPT",
        "-6 policy FORWARD DROP",
        "-6 -t nat -A PREROUTING -p udp --dport 53 -j DNAT --to-destination [fd00::9]:5353",
        "-6 -t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 8080",
        "-6 -t nat -A POSTROUTING -j MASQUERADE",
    ] {
        let w: Vec<&str> = line.split(' ').collect();
        t.apply(&parse_command(&w).unwrap()).unwrap();
    }
    let mut f = Filter::new(Conntrack::new(64, [1, 2]), &counters);
    f.set_rules(RuleSet::compile(&t, &["eth0"]).unwrap(), &["eth0"]);
    for (i, hook) in [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ]
    .into_iter()
    .enumerate()
    {
        let mut m = Meta {
            in_if: 0,
            out_if: 0,
            in_addr6: 0xfd00 << 112 | 1,
            out_addr6: 0x2001_0db8 << 96 | 1,
            ..Meta::default()
        };
        let _ = f.hook(hook, &mut pkt, &mut m, i as u64);
    }
    let _ = f.conntrack().list(10);
    let mut out = [0u8; MAX_ANSWER];
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&[0x86, 0xdd]);
    frame.extend_from_slice(&pkt);
    for w in [
        RejectWith::TcpReset,
        RejectWith::Icmp6PortUnreachable,
        RejectWith::Icmp6NoRoute,
    ] {
        let _ = reject::build(&frame, w, &mut out);
    }
});
