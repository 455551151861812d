//! Tests of the whole filter: hooks in order, NAT through the hooks,
//! state rules, logging, fragments, and random input.

use super::*;
use crate::nat::tests::checksums_ok;
use crate::packet::build;
use crate::rule::parse_command;
use crate::tables::Tables;
use proptest::prelude::*;

fn tables(cmds: &[&str]) -> Tables {
    let mut t = Tables::new(1000);
    for c in cmds {
        let w: Vec<&str> = c.split_whitespace().collect();
        t.apply(&parse_command(&w).unwrap_or_else(|e| panic!("{c}: {e}")))
            .unwrap_or_else(|e| panic!("{c}: {e}"));
    }
    t
}

fn counters() -> &'static [AtomicU64] {
    Box::leak(
        (0..2000)
            .map(|_| AtomicU64::new(0))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    )
}

fn filter(cmds: &[&str]) -> Filter<'static> {
    let mut f = Filter::new(Conntrack::new(64, [5, 6]), counters());
    let ifs = ["lan0", "wan0"];
    f.set_rules(RuleSet::compile(&tables(cmds), &ifs).unwrap(), &ifs);
    f
}

const LAN: u8 = 0;
const WAN: u8 = 1;
const C: [u8; 4] = [192, 168, 1, 10];
const GW_WAN: [u8; 4] = [198, 51, 100, 1];
const SRV: [u8; 4] = [203, 0, 113, 5];
const INNER: [u8; 4] = [192, 168, 1, 20];

fn a(x: [u8; 4]) -> u32 {
    u32::from_be_bytes(x)
}

fn info(p: &[u8]) -> PacketInfo {
    PacketInfo::parse(p, 0, 0).unwrap()
}

fn accepted(d: Decision) -> bool {
    matches!(d, Decision::Accept { .. })
}

#[test]
fn no_rules_is_a_pass_through() {
    let mut f = filter(&[]);
    let mut junk = [1u8, 2, 3];
    for h in Hook::ALL {
        let d = f.hook(h, &mut junk, &mut Meta::default(), 0);
        assert_eq!(
            d,
            Decision::Accept {
                changed: false,
                mark: 0
            }
        );
    }
    assert_eq!(f.stats.fast_path, 5);
    assert_eq!(f.stats.inspected, 0);
}

/// A forwarded connection: client on the LAN masqueraded to the WAN.
#[test]
fn masquerade_forwarded_connection() {
    let mut f = filter(&["-t nat -A POSTROUTING -o wan0 -j MASQUERADE"]);
    let mut syn = build::tcp(C, 40000, SRV, 443, 0x02, 100, 0, 64000, &[]);
    let mut m = Meta {
        in_if: LAN,
        ..Meta::default()
    };
    assert!(accepted(f.hook(Hook::Prerouting, &mut syn, &mut m, 0)));
    assert!(m.ct.created());
    assert!(accepted(f.hook(Hook::Forward, &mut syn, &mut m, 0)));
    m.out_if = WAN;
    m.out_addr = a(GW_WAN);
    let d = f.hook(Hook::Postrouting, &mut syn, &mut m, 0);
    assert_eq!(
        d,
        Decision::Accept {
            changed: true,
            mark: 0
        }
    );
    assert!(!m.ct.created());
    let i = info(&syn);
    assert_eq!(
        (i.src, i.sport, i.dst, i.dport),
        (a(GW_WAN), 40000, a(SRV), 443)
    );
    assert!(checksums_ok(&syn));

    let mut synack = build::tcp(SRV, 443, GW_WAN, 40000, 0x12, 900, 101, 64000, &[]);
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    assert!(accepted(f.hook(Hook::Prerouting, &mut synack, &mut m, 1)));
    assert_eq!((m.ct.state(), m.ct.dir()), (CtState::Established, 1));
    let i = info(&synack);
    assert_eq!((i.dst, i.dport), (a(C), 40000));
    assert!(checksums_ok(&synack));
    assert!(accepted(f.hook(Hook::Forward, &mut synack, &mut m, 1)));
    assert!(accepted(f.hook(Hook::Postrouting, &mut synack, &mut m, 1)));
    assert_eq!(info(&synack).src, a(SRV));

    // The binding survives a restart of filterd (a new Filter over the
    // same table) and a flush of the rules.
    let ct = std::mem::replace(f.conntrack_mut(), Conntrack::new(1, [0, 0]));
    let mut f2 = Filter::new(ct, counters());
    let mut ack = build::tcp(C, 40000, SRV, 443, 0x10, 101, 901, 64000, b"GET /");
    let mut m = Meta {
        in_if: LAN,
        out_if: WAN,
        out_addr: a(GW_WAN),
        ..Meta::default()
    };
    assert!(accepted(f2.hook(Hook::Prerouting, &mut ack, &mut m, 2)));
    assert!(accepted(f2.hook(Hook::Postrouting, &mut ack, &mut m, 2)));
    assert_eq!(info(&ack).src, a(GW_WAN));
    assert!(checksums_ok(&ack));
    let l = f2.conntrack().list(2);
    assert_eq!(l.len(), 1);
    assert!(l[0].to_string().contains("ESTABLISHED"), "{}", l[0]);
}

/// Port forwarding to an inner host, and the stateful INPUT idiom.
#[test]
fn dnat_and_state_rules() {
    let mut f = filter(&[
        "-t nat -A PREROUTING -i wan0 -p tcp --dport 8080 -j DNAT --to-destination 192.168.1.20:80",
        "-P INPUT DROP",
        "add INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        "add INPUT -p tcp --dport 22 -m state --state NEW -j ACCEPT",
        "add INPUT -p tcp --dport 25 -j REJECT --reject-with tcp-reset",
    ]);
    let mut syn = build::tcp(SRV, 5555, GW_WAN, 8080, 0x02, 1, 0, 1000, &[]);
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    assert_eq!(
        f.hook(Hook::Prerouting, &mut syn, &mut m, 0),
        Decision::Accept {
            changed: true,
            mark: 0
        }
    );
    let i = info(&syn);
    assert_eq!((i.dst, i.dport), (a(INNER), 80));
    assert!(checksums_ok(&syn));

    // To the stack itself: port 22 opens, port 23 is dropped and leaves
    // no entry, port 25 is rejected.
    let n = f.conntrack().len();
    let mut p22 = build::tcp(SRV, 5556, GW_WAN, 22, 0x02, 1, 0, 1000, &[]);
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    assert!(accepted(f.hook(Hook::Prerouting, &mut p22, &mut m, 0)));
    assert!(accepted(f.hook(Hook::Input, &mut p22, &mut m, 0)));
    assert_eq!(f.conntrack().len(), n + 1);
    let mut p23 = build::tcp(SRV, 5557, GW_WAN, 23, 0x02, 1, 0, 1000, &[]);
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    f.hook(Hook::Prerouting, &mut p23, &mut m, 0);
    assert_eq!(
        f.hook(Hook::Input, &mut p23, &mut m, 0),
        Decision::Drop(DropReason::Policy)
    );
    assert_eq!(f.conntrack().len(), n + 1);
    let mut p25 = build::tcp(SRV, 5558, GW_WAN, 25, 0x02, 1, 0, 1000, &[]);
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    f.hook(Hook::Prerouting, &mut p25, &mut m, 0);
    assert_eq!(
        f.hook(Hook::Input, &mut p25, &mut m, 0),
        Decision::Reject(RejectWith::TcpReset)
    );
    // An unsolicited ACK is picked up as NEW and dropped with its entry.
    let n = f.conntrack().len();
    let mut ack = build::tcp(SRV, 5559, GW_WAN, 23, 0x10, 1, 1, 1000, &[]);
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    f.hook(Hook::Prerouting, &mut ack, &mut m, 0);
    assert_eq!(m.ct.state(), CtState::New);
    assert_eq!(
        f.hook(Hook::Input, &mut ack, &mut m, 0),
        Decision::Drop(DropReason::Policy)
    );
    assert_eq!(f.conntrack().len(), n);
    // A retransmitted SYN before any reply is still NEW and passes.
    let mut again = build::tcp(SRV, 5556, GW_WAN, 22, 0x02, 1, 0, 1000, &[]);
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    f.hook(Hook::Prerouting, &mut again, &mut m, 0);
    assert_eq!((m.ct.state(), m.ct.created()), (CtState::New, false));
    assert!(accepted(f.hook(Hook::Input, &mut again, &mut m, 0)));
}

#[test]
fn log_is_rate_limited() {
    let mut f = filter(&[
        "add INPUT -p udp -j LOG --log-prefix udp-in: ",
        "add INPUT -j ACCEPT",
    ]);
    let mut p = build::udp(SRV, 1, GW_WAN, 2, b"x");
    for _ in 0..20 {
        let mut m = Meta {
            in_if: WAN,
            ..Meta::default()
        };
        assert!(accepted(f.hook(Hook::Input, &mut p, &mut m, 1000)));
    }
    assert_eq!(f.logs().count(), LOG_BURST as usize);
    let first = f.logs().next().unwrap().to_string();
    assert_eq!(
        first,
        "udp-in:IN=wan0 OUT= SRC=203.0.113.5 DST=198.51.100.1 LEN=29 PROTO=UDP SPT=1 DPT=2"
    );
    assert_eq!(f.stats.logs_suppressed, 10);
    f.clear_logs();
    // One second later five more are allowed; the first says how many
    // were held back.
    for _ in 0..20 {
        let mut m = Meta::default();
        f.hook(Hook::Input, &mut p, &mut m, 2000);
    }
    assert_eq!(f.logs().count(), 5);
    assert!(f.logs().next().unwrap().ends_with("(10 suppressed)"));
    assert_eq!(counters_of(&f, 1), 40);
}

fn counters_of(f: &Filter, rule: u32) -> u64 {
    use crate::ruleset::Counters;
    f.counters.read(f.rules().slot(rule).unwrap()).0
}

#[test]
fn mark_and_mark_match() {
    let mut f = filter(&[
        "add OUTPUT -p udp --dport 53 -j MARK --set-mark 0x10/0xf0",
        "add OUTPUT -m mark --mark 0x10/0xf0 -j ACCEPT",
        "-P OUTPUT DROP",
    ]);
    let mut p = build::udp(C, 1, SRV, 53, b"q");
    let mut m = Meta {
        mark: 0x103,
        ..Meta::default()
    };
    assert_eq!(
        f.hook(Hook::Output, &mut p, &mut m, 0),
        Decision::Accept {
            changed: false,
            mark: 0x113
        }
    );
    assert_eq!(m.mark, 0x113);
    let mut p = build::udp(C, 1, SRV, 54, b"q");
    assert_eq!(
        f.hook(Hook::Output, &mut p, &mut Meta::default(), 0),
        Decision::Drop(DropReason::Policy)
    );
}

#[test]
fn fragments_follow_their_first() {
    let mut f = filter(&[
        "-P INPUT DROP",
        "add INPUT -p udp --dport 9 -j ACCEPT",
        "add INPUT -m state --state ESTABLISHED -j ACCEPT",
        "add INPUT -m state --state NEW -j ACCEPT",
    ]);
    let mut first = build::udp(SRV, 1, GW_WAN, 9, &[0u8; 32]);
    first[6] = 0x20; // MF
    let mut later = first.clone();
    later[6] = 0x00;
    later[7] = 5; // offset 40 bytes
                  // Header checksums do not matter to the filter.
    let mut m = Meta::default();
    assert!(accepted(f.hook(Hook::Prerouting, &mut first, &mut m, 0)));
    assert!(accepted(f.hook(Hook::Input, &mut first, &mut m, 0)));
    let mut m = Meta::default();
    assert!(accepted(f.hook(Hook::Prerouting, &mut later, &mut m, 0)));
    assert_eq!(m.ct.state(), CtState::New);
    assert!(accepted(f.hook(Hook::Input, &mut later, &mut m, 0)));
    // A later fragment of a datagram never seen is INVALID.
    let mut orphan = later.clone();
    orphan[5] ^= 0xff;
    let mut m = Meta::default();
    f.hook(Hook::Prerouting, &mut orphan, &mut m, 0);
    assert_eq!(m.ct.state(), CtState::Invalid);
    assert_eq!(
        f.hook(Hook::Input, &mut orphan, &mut m, 0),
        Decision::Drop(DropReason::Policy)
    );
}

#[test]
fn malformed_is_dropped_when_inspected() {
    let mut f = filter(&["add INPUT -j ACCEPT"]);
    let mut junk = [0x45u8, 0, 0, 10];
    assert_eq!(
        f.hook(Hook::Input, &mut junk, &mut Meta::default(), 0),
        Decision::Drop(DropReason::Malformed)
    );
}

fn fuzz_filter() -> Filter<'static> {
    filter(&[
        "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 10.9.9.9:8080",
        "-t nat -A PREROUTING -p udp -j REDIRECT --to-ports 5353",
        "-t nat -A POSTROUTING -o wan0 -j MASQUERADE",
        "-t nat -A POSTROUTING -p udp -j SNAT --to-source 1.2.3.4:1000-1001",
        "-t nat -A OUTPUT -p icmp -j DNAT --to-destination 10.1.1.1",
        "add INPUT -m state --state INVALID -j DROP",
        "add INPUT -p tcp --tcp-flags SYN,ACK SYN -j LOG",
        "add INPUT -p icmp --icmp-type echo-request -j REJECT",
        "add FORWARD -m mark ! --mark 0 -j DROP",
        "-6 add INPUT -m state --state INVALID -j DROP",
        "-6 add INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset",
        "-6 add INPUT -p icmpv6 --icmpv6-type echo-request -j REJECT",
        "-6 add INPUT -s 2001:db8::/32 -p udp --dport 53 -j ACCEPT",
        "-6 -P FORWARD DROP",
        "-6 -t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination [fd00::9]:8080",
        "-6 -t nat -A PREROUTING -p udp -j REDIRECT --to-ports 5353",
        "-6 -t nat -A POSTROUTING -o wan0 -j MASQUERADE",
        "-6 -t nat -A POSTROUTING -p udp -j SNAT --to-source [2001:db8::4]:1000-1001",
        "-6 -t nat -A OUTPUT -p icmpv6 -j DNAT --to-destination fd00::1",
    ])
}

fn run_all_hooks(f: &mut Filter, bytes: &[u8], now: u64) {
    for (hooks, in_if, out_if) in [
        (&[Hook::Prerouting, Hook::Input][..], WAN, NO_IF),
        (
            &[Hook::Prerouting, Hook::Forward, Hook::Postrouting][..],
            LAN,
            WAN,
        ),
        (&[Hook::Output, Hook::Postrouting][..], NO_IF, WAN),
    ] {
        let mut pkt = bytes.to_vec();
        let mut m = Meta {
            in_if,
            out_if,
            in_addr: 0x0a00_0001,
            out_addr: 0xc633_6401,
            in_addr6: 0xfd00 << 112 | 1,
            out_addr6: 0x2001_0db8 << 96 | 1,
            ..Meta::default()
        };
        for &h in hooks {
            if !accepted(f.hook(h, &mut pkt, &mut m, now)) {
                break;
            }
        }
    }
}

/// Valid-looking packets with random fields, to get past the parser.
fn packet() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(6u8), Just(17u8), Just(1u8), any::<u8>()],
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        proptest::collection::vec(any::<u8>(), 0..80),
        any::<u16>(),
    )
        .prop_map(|(proto, s, d, l4, frag)| {
            let mut p = build::ip(s, d, proto, &l4);
            if frag % 4 == 0 {
                p[6..8].copy_from_slice(&(frag & 0x3fff).to_be_bytes());
            }
            p
        })
}

/// Valid-looking IPv6 packets: random protocols, extension headers
/// (hop-by-hop, destination options, fragments) and transport bytes.
fn packet6() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(6u8), Just(17u8), Just(58u8), any::<u8>()],
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        proptest::collection::vec(any::<u8>(), 0..80),
        0u8..4,
        any::<u16>(),
    )
        .prop_map(|(proto, s, d, l4, ext, frag)| {
            let hdr = match ext {
                1 => vec![proto, 0, 1, 4, 0, 0, 0, 0],
                2 => build::frag_hdr(proto, frag & 3, frag & 4 != 0, u32::from(frag)),
                3 => {
                    let mut e = vec![60, 0, 1, 4, 0, 0, 0, 0];
                    e.extend(build::frag_hdr(proto, frag & 3, frag & 4 != 0, 9));
                    e
                }
                _ => Vec::new(),
            };
            let first = [0u8, 60, 44, 0][usize::from(ext)];
            let first = if ext == 1 { 60 } else { first };
            build::ip6_ext(s, d, first, &hdr, proto, &l4)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_ipv6_packets_never_panic(pkts in proptest::collection::vec(packet6(), 1..20)) {
        let mut f = fuzz_filter();
        for (now, p) in pkts.iter().enumerate() {
            run_all_hooks(&mut f, p, now as u64);
            let mut r = p.clone();
            let (s, d) = (r[8..24].to_vec(), r[24..40].to_vec());
            r[8..24].copy_from_slice(&d);
            r[24..40].copy_from_slice(&s);
            run_all_hooks(&mut f, &r, now as u64);
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[0x86, 0xdd]);
            frame.extend_from_slice(p);
            let mut out = [0u8; crate::reject::MAX_ANSWER];
            for w in [RejectWith::Icmp6PortUnreachable, RejectWith::TcpReset] {
                let _ = crate::reject::build(&frame, w, &mut out);
            }
        }
        let _ = f.conntrack().list(100);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut f = fuzz_filter();
        run_all_hooks(&mut f, &bytes, 0);
        run_all_hooks(&mut f, &bytes, u64::MAX - 1);
    }

    #[test]
    fn random_packets_never_panic(pkts in proptest::collection::vec(packet(), 1..20), step in 0u64..100_000) {
        let mut f = fuzz_filter();
        let mut now = 0;
        for p in &pkts {
            run_all_hooks(&mut f, p, now);
            // Replies of whatever was created.
            let mut r = p.clone();
            if r.len() >= 20 {
                let (s, d) = (r[12..16].to_vec(), r[16..20].to_vec());
                r[12..16].copy_from_slice(&d);
                r[16..20].copy_from_slice(&s);
            }
            run_all_hooks(&mut f, &r, now);
            now += step;
            f.expire(now, 16);
        }
        let _ = f.conntrack().list(now);
    }

    #[test]
    fn random_words_never_panic(words in proptest::collection::vec(
        prop_oneof![
            Just("add"), Just("insert"), Just("del"), Just("list"), Just("flush"), Just("-N"),
            Just("-P"), Just("-t"), Just("nat"), Just("INPUT"), Just("POSTROUTING"), Just("!"),
            Just("-p"), Just("tcp"), Just("udp"), Just("icmp"), Just("--dport"), Just("--sport"),
            Just("80"), Just("1:2"), Just("-s"), Just("10.0.0.0/8"), Just("-j"), Just("ACCEPT"),
            Just("DNAT"), Just("--to-destination"), Just("1.2.3.4:5-6"), Just("-m"), Just("state"),
            Just("--state"), Just("NEW"), Just("--tcp-flags"), Just("SYN,ACK"), Just("--syn"),
            Just("REJECT"), Just("--reject-with"), Just("tcp-reset"), Just("LOG"), Just("--log-prefix"),
            Just("mark"), Just("--mark"), Just("0x1/0xff"), Just("MASQUERADE"), Just("--to-ports"),
            Just("3"), Just(""), Just("-i"), Just("eth+"), Just("--icmp-type"), Just("3/4"),
            Just("-6"), Just("-4"), Just("icmpv6"), Just("--icmpv6-type"), Just("2001:db8::/32"),
            Just("icmp6-adm-prohibited"), Just("::1"),
        ],
        0..14,
    )) {
        if let Ok(c) = parse_command(&words) {
            // Whatever parses applies or is refused, and rules round-trip.
            let mut t = Tables::default();
            let _ = t.apply(&c);
            if let rule::Command::Add { rule, .. } = c {
                let w = rule.to_words();
                let w: Vec<&str> = w.iter().map(|s| s.as_str()).collect();
                prop_assert_eq!(rule::parse_rule(&w).unwrap(), rule);
            }
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(words in proptest::collection::vec(".{0,12}", 0..10)) {
        let w: Vec<&str> = words.iter().map(|s| s.as_str()).collect();
        if let Err(e) = parse_command(&w) {
            prop_assert!(e.word <= w.len());
        }
    }
}

// IPv6: the filter table of ip6tables, conntrack, REJECT, NDP.

const H6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const S6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05,
];
const OTHER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05,
];

/// Runs PREROUTING then INPUT on a packet from the WAN, as the shell does.
fn input(f: &mut Filter, pkt: &[u8], now: u64) -> (Decision, Meta) {
    let mut p = pkt.to_vec();
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    let d = f.hook(Hook::Prerouting, &mut p, &mut m, now);
    if !accepted(d) {
        return (d, m);
    }
    (f.hook(Hook::Input, &mut p, &mut m, now), m)
}

/// Runs OUTPUT then POSTROUTING on a packet the stack sends.
fn output(f: &mut Filter, pkt: &[u8], now: u64) -> (Decision, Meta) {
    let mut p = pkt.to_vec();
    let mut m = Meta {
        out_if: WAN,
        ..Meta::default()
    };
    let d = f.hook(Hook::Output, &mut p, &mut m, now);
    if !accepted(d) {
        return (d, m);
    }
    (f.hook(Hook::Postrouting, &mut p, &mut m, now), m)
}

#[test]
fn ipv6_matches_by_prefix_port_and_type() {
    let mut f = filter(&[
        "-6 add INPUT -s 2001:db8:2::/48 -p tcp --dport 22 -j ACCEPT",
        "-6 add INPUT -p udp --dport 53 -j ACCEPT",
        "-6 add INPUT -i wan0 -p icmpv6 --icmpv6-type echo-request -j ACCEPT",
        "-6 add INPUT -d 2001:db8:1::10 -p tcp ! --dport 80 -j REJECT",
        "-6 -P INPUT DROP",
    ]);
    let ssh = build::tcp6(S6, 4000, H6, 22, 0x02, 1, 0, &[]);
    assert!(accepted(input(&mut f, &ssh, 0).0));
    let ssh_other = build::tcp6(OTHER6, 4000, H6, 22, 0x02, 1, 0, &[]);
    assert_eq!(
        input(&mut f, &ssh_other, 0).0,
        Decision::Reject(RejectWith::Icmp6PortUnreachable)
    );
    let web = build::tcp6(OTHER6, 4000, H6, 80, 0x02, 1, 0, &[]);
    assert_eq!(input(&mut f, &web, 0).0, Decision::Drop(DropReason::Policy));
    assert!(accepted(
        input(&mut f, &build::udp6(OTHER6, 9, H6, 53, b"q"), 0).0
    ));
    assert!(accepted(
        input(&mut f, &build::icmp6_echo(OTHER6, H6, 128, 1, 1), 0).0
    ));
    assert_eq!(
        input(&mut f, &build::icmp6_echo(OTHER6, H6, 129, 1, 1), 0).0,
        Decision::Drop(DropReason::Policy)
    );
    // Many rules: the index agrees.
    let mut cmds: Vec<String> = (0..40)
        .map(|i| format!("-6 add INPUT -s 2001:db8:{i:x}::/48 -j DROP"))
        .collect();
    cmds.push("-6 add INPUT -d 2001:db8:1::10/128 -j REJECT".into());
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let mut f = filter(&refs);
    let v = input(&mut f, &build::udp6(OTHER6, 1, H6, 2, b""), 0).0;
    assert_eq!(v, Decision::Reject(RejectWith::Icmp6PortUnreachable));
    let v = input(&mut f, &build::udp6(S6, 1, H6, 2, b""), 0).0;
    assert_eq!(v, Decision::Drop(DropReason::Rule));
}

#[test]
fn policies_are_per_family() {
    let mut f = filter(&["-P INPUT DROP"]);
    assert!(accepted(
        input(&mut f, &build::udp6(S6, 1, H6, 2, b"x"), 0).0
    ));
    let v4 = build::udp(SRV, 1, GW_WAN, 2, b"x");
    assert_eq!(input(&mut f, &v4, 0).0, Decision::Drop(DropReason::Policy));
    let mut f = filter(&["-6 -P INPUT DROP", "add INPUT -p udp -j DROP"]);
    assert_eq!(
        input(&mut f, &build::udp6(S6, 1, H6, 2, b"x"), 0).0,
        Decision::Drop(DropReason::Policy)
    );
    assert_eq!(input(&mut f, &v4, 0).0, Decision::Drop(DropReason::Rule));
    let tcp4 = build::tcp(SRV, 1, GW_WAN, 2, 0x02, 1, 0, 100, &[]);
    assert!(accepted(input(&mut f, &tcp4, 0).0));
}

#[test]
fn ipv6_stateful_tcp_and_echo() {
    let mut f = filter(&[
        "-6 add INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        "-6 add INPUT -m state --state INVALID -j DROP",
        "-6 -P INPUT DROP",
    ]);
    // We open a connection; the answer is ESTABLISHED.
    let (d, m) = output(
        &mut f,
        &build::tcp6(H6, 40000, S6, 443, 0x02, 100, 0, &[]),
        0,
    );
    assert!(accepted(d));
    assert_eq!(m.ct.state(), CtState::New);
    let synack = build::tcp6(S6, 443, H6, 40000, 0x12, 900, 101, &[]);
    let (d, m) = input(&mut f, &synack, 1);
    assert!(accepted(d));
    assert_eq!((m.ct.state(), m.ct.dir()), (CtState::Established, 1));
    let e = f.conntrack().entry(m.ct.id().unwrap()).unwrap();
    assert_eq!(e.family, 6);
    // A new connection from outside is NEW and meets the policy.
    let syn = build::tcp6(S6, 5000, H6, 22, 0x02, 1, 0, &[]);
    assert_eq!(input(&mut f, &syn, 2).0, Decision::Drop(DropReason::Policy));
    assert_eq!(
        f.conntrack().len(),
        1,
        "an unconfirmed entry dies with its packet"
    );
    // A stray SYN/ACK is INVALID.
    let stray = build::tcp6(S6, 444, H6, 40000, 0x12, 1, 1, &[]);
    assert_eq!(input(&mut f, &stray, 3).0, Decision::Drop(DropReason::Rule));

    // Echo: request out, reply in.
    let (d, m) = output(&mut f, &build::icmp6_echo(H6, S6, 128, 9, 1), 4);
    assert!(accepted(d) && m.ct.state() == CtState::New);
    let (d, m) = input(&mut f, &build::icmp6_echo(S6, H6, 129, 9, 1), 5);
    assert!(accepted(d));
    assert_eq!(m.ct.state(), CtState::Established);
    let (d, _) = input(&mut f, &build::icmp6_echo(S6, H6, 129, 10, 1), 5);
    assert_eq!(
        d,
        Decision::Drop(DropReason::Rule),
        "a reply to nothing is INVALID"
    );

    // An error quoting the connection is RELATED; quoting nothing INVALID.
    let ours = build::tcp6(H6, 40000, S6, 443, 0x10, 101, 901, b"data");
    assert!(accepted(output(&mut f, &ours, 6).0));
    let err = build::icmp6_error(S6, H6, 1, 4, &ours);
    let (d, m) = input(&mut f, &err, 6);
    assert!(accepted(d));
    assert_eq!(m.ct.state(), CtState::Related);
    let other = build::tcp6(H6, 40001, S6, 443, 0x10, 101, 901, b"data");
    let err = build::icmp6_error(S6, H6, 2, 0, &other);
    assert_eq!(input(&mut f, &err, 6).0, Decision::Drop(DropReason::Rule));

    let lines: Vec<String> = f
        .conntrack()
        .list(6)
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with(
            "tcp      6 432000 ESTABLISHED src=2001:db8:1::10 dst=2001:db8:2::5 sport=40000 dport=443"
        )),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("icmpv6   58 29 src=2001:db8:1::10 dst=2001:db8:2::5 id=9")),
        "{lines:?}"
    );
}

#[test]
fn ndp_is_untracked_and_needs_a_rule() {
    let ns = |src: [u8; 16]| {
        let mut target = H6.to_vec();
        target.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 1]);
        let mut dst = [0u8; 16];
        dst[..2].copy_from_slice(&[0xff, 0x02]);
        dst[11..].copy_from_slice(&[1, 0xff, 0, 0, 0x10]);
        build::icmp6(src, dst, 135, 0, 0, &target)
    };
    let stateful = [
        "-6 add INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT",
        "-6 -P INPUT DROP",
    ];
    let mut f = filter(&stateful);
    let (d, m) = input(&mut f, &ns(S6), 0);
    assert_eq!(d, Decision::Drop(DropReason::Policy));
    assert_eq!(m.ct.state(), CtState::Untracked);
    assert!(f.conntrack().is_empty(), "NDP opens no flow");
    let mut rules = stateful.to_vec();
    rules.push("-6 add INPUT -p icmpv6 --icmpv6-type neighbour-solicitation -j ACCEPT");
    let mut f = filter(&rules);
    assert!(accepted(input(&mut f, &ns(S6), 0).0));
    let mld = build::icmp6(S6, H6, 143, 0, 0, &[]);
    assert_eq!(input(&mut f, &mld, 0).0, Decision::Drop(DropReason::Policy));
    let mut f = filter(&[
        "-6 add INPUT -m state --state UNTRACKED -j ACCEPT",
        "-6 -P INPUT DROP",
    ]);
    assert!(accepted(input(&mut f, &mld, 0).0));
    assert!(f.conntrack().is_empty());
}

#[test]
fn ipv6_fragments_follow_their_first() {
    let mut f = filter(&[
        "-6 add INPUT -p udp --dport 53 -m state --state NEW,ESTABLISHED -j ACCEPT",
        "-6 add INPUT -p udp -m state --state ESTABLISHED -j ACCEPT",
        "-6 add INPUT -p udp -j LOG",
        "-6 -P INPUT DROP",
    ]);
    let u = build::udp6(S6, 5000, H6, 53, &[1; 16]);
    let first = build::ip6_ext(S6, H6, 44, &build::frag_hdr(17, 0, true, 99), 17, &u[40..]);
    let (d, m) = input(&mut f, &first, 0);
    assert!(accepted(d));
    assert_eq!(m.ct.state(), CtState::New);
    // The later fragment has no port: the rule with one does not match,
    // but the state of its first does, by its fragment header's protocol.
    let later = build::ip6_ext(S6, H6, 44, &build::frag_hdr(17, 3, false, 99), 99, &[2; 8]);
    let (d, m) = input(&mut f, &later, 1);
    assert_eq!(d, Decision::Drop(DropReason::Policy));
    assert_eq!(m.ct.state(), CtState::New);
    // A later fragment of an unknown packet is INVALID.
    let stray = build::ip6_ext(S6, H6, 44, &build::frag_hdr(17, 3, false, 7), 99, &[2; 8]);
    assert_eq!(input(&mut f, &stray, 1).1.ct.state(), CtState::Invalid);
    // A reply makes the flow ESTABLISHED, and later fragments with it.
    let rep = build::udp6(H6, 53, S6, 5000, b"a");
    assert!(accepted(output(&mut f, &rep, 2).0));
    let first = build::ip6_ext(S6, H6, 44, &build::frag_hdr(17, 0, true, 100), 17, &u[40..]);
    assert!(accepted(input(&mut f, &first, 3).0));
    let later = build::ip6_ext(S6, H6, 44, &build::frag_hdr(17, 3, false, 100), 99, &[2; 8]);
    assert!(accepted(input(&mut f, &later, 4).0));
}

#[test]
fn ipv6_hidden_protocol_matches_only_protocol_free_rules() {
    let mut f = filter(&[
        "-6 add INPUT -p udp -j ACCEPT",
        "-6 add INPUT ! -p tcp -j ACCEPT",
        "-6 add INPUT -s 2001:db8:2::/48 -j REJECT",
    ]);
    let mut ext = Vec::new();
    for _ in 0..12 {
        ext.extend([60, 0, 1, 4, 0, 0, 0, 0]);
    }
    let p = build::ip6_ext(S6, H6, 60, &ext, 17, &[0; 8]);
    assert_eq!(
        input(&mut f, &p, 0).0,
        Decision::Reject(RejectWith::Icmp6PortUnreachable)
    );
}

#[test]
fn ipv6_malformed_is_counted_and_dropped() {
    let mut f = filter(&["-6 add INPUT -j ACCEPT"]);
    let good = build::udp6(S6, 1, H6, 2, b"xyz");
    let mut short = good.clone();
    short.truncate(good.len() - 2);
    for bad in [&short[..], &good[..30], &[0x60u8][..]] {
        let mut b = bad.to_vec();
        assert_eq!(
            f.hook(Hook::Input, &mut b, &mut Meta::default(), 0),
            Decision::Drop(DropReason::Malformed)
        );
    }
    let mut mapped = good.clone();
    mapped[8..24].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]);
    assert_eq!(
        f.hook(Hook::Input, &mut mapped, &mut Meta::default(), 0),
        Decision::Drop(DropReason::Malformed)
    );
    assert_eq!(f.stats.malformed, 4);
}

#[test]
fn ipv6_log_lines() {
    let mut f = filter(&["-6 add INPUT -p icmpv6 -j LOG --log-prefix v6:"]);
    assert!(accepted(
        input(&mut f, &build::icmp6_echo(S6, H6, 128, 1, 1), 0).0
    ));
    let l: Vec<&str> = f.logs().collect();
    assert_eq!(
        l,
        ["v6:IN=wan0 OUT= SRC=2001:db8:2::5 DST=2001:db8:1::10 LEN=56 PROTO=ICMPv6 TYPE=128 CODE=0"]
    );
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// IPv6 NAT through the hooks: a port forward (DNAT) to an inner host
/// and a masqueraded client, both answered, both bindings surviving a
/// restart of filterd.
#[test]
fn ipv6_dnat_and_masquerade_through_the_hooks() {
    use crate::nat::tests::checksums6_ok;
    let w = u128::from_be_bytes;
    let mut f = filter(&[
        "-6 -t nat -A PREROUTING -i wan0 -p tcp --dport 8080 -j DNAT --to-destination [fd00::20]:80",
        "-6 -t nat -A POSTROUTING -o wan0 -j MASQUERADE",
        "-6 -A FORWARD -m state --state ESTABLISHED,RELATED -j ACCEPT",
        "-6 -A FORWARD -i wan0 -d fd00::20 -p tcp --dport 80 -j ACCEPT",
        "-6 -A FORWARD -i lan0 -j ACCEPT",
        "-6 -P FORWARD DROP",
    ]);
    let (gw, remote, inner, client) = (
        v6("2001:db8:9::1"),
        v6("2001:db8:77::5"),
        v6("fd00::20"),
        v6("fd00::10"),
    );
    // In from the WAN to the forwarded port.
    let mut syn = build::tcp6(remote, 50000, gw, 8080, 0x02, 1, 0, &[]);
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    assert!(accepted(f.hook(Hook::Prerouting, &mut syn, &mut m, 0)));
    let i = info(&syn);
    assert_eq!((i.daddr, i.dport), (w(inner), 80));
    assert!(checksums6_ok(&syn));
    m.out_if = LAN;
    assert!(accepted(f.hook(Hook::Forward, &mut syn, &mut m, 0)));
    assert!(accepted(f.hook(Hook::Postrouting, &mut syn, &mut m, 0)));
    assert_eq!(info(&syn).saddr, w(remote));
    // The inner host answers; it leaves from the forwarded port.
    let mut synack = build::tcp6(inner, 80, remote, 50000, 0x12, 7, 2, &[]);
    let mut m = Meta {
        in_if: LAN,
        ..Meta::default()
    };
    assert!(accepted(f.hook(Hook::Prerouting, &mut synack, &mut m, 1)));
    assert_eq!((m.ct.state(), m.ct.dir()), (CtState::Established, 1));
    m.out_if = WAN;
    m.out_addr6 = w(gw);
    assert!(accepted(f.hook(Hook::Forward, &mut synack, &mut m, 1)));
    assert!(accepted(f.hook(Hook::Postrouting, &mut synack, &mut m, 1)));
    let i = info(&synack);
    assert_eq!((i.saddr, i.sport, i.daddr), (w(gw), 8080, w(remote)));
    assert!(checksums6_ok(&synack));

    // A LAN client out through MASQUERADE.
    let mut q = build::udp6(client, 4000, remote, 53, b"query");
    let mut m = Meta {
        in_if: LAN,
        ..Meta::default()
    };
    assert!(accepted(f.hook(Hook::Prerouting, &mut q, &mut m, 2)));
    m.out_if = WAN;
    m.out_addr6 = w(gw);
    assert!(accepted(f.hook(Hook::Forward, &mut q, &mut m, 2)));
    assert_eq!(
        f.hook(Hook::Postrouting, &mut q, &mut m, 2),
        Decision::Accept {
            changed: true,
            mark: 0
        }
    );
    assert_eq!((info(&q).saddr, info(&q).sport), (w(gw), 4000));
    assert!(checksums6_ok(&q));

    // filterd restarts: the bindings are in the shared table.
    let ct = std::mem::replace(f.conntrack_mut(), Conntrack::new(1, [0, 0]));
    let mut f2 = Filter::new(ct, counters());
    let mut a = build::udp6(remote, 53, gw, 4000, b"answer");
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    assert!(accepted(f2.hook(Hook::Prerouting, &mut a, &mut m, 3)));
    let i = info(&a);
    assert_eq!((i.daddr, i.dport), (w(client), 4000));
    assert!(checksums6_ok(&a));
    let mut ack = build::tcp6(remote, 50000, gw, 8080, 0x10, 2, 8, b"GET /");
    let mut m = Meta {
        in_if: WAN,
        ..Meta::default()
    };
    assert!(accepted(f2.hook(Hook::Prerouting, &mut ack, &mut m, 3)));
    assert_eq!((info(&ack).daddr, info(&ack).dport), (w(inner), 80));
    assert!(checksums6_ok(&ack));

    // MASQUERADE without an IPv6 address on the way out drops the flow.
    let mut f = filter(&["-6 -t nat -A POSTROUTING -o wan0 -j MASQUERADE"]);
    let mut p = build::udp6(client, 4001, remote, 53, b"q");
    let mut m = Meta {
        in_if: LAN,
        out_if: WAN,
        out_addr: 0xc633_6401,
        ..Meta::default()
    };
    assert!(accepted(f.hook(Hook::Prerouting, &mut p, &mut m, 0)));
    assert_eq!(
        f.hook(Hook::Postrouting, &mut p, &mut m, 0),
        Decision::Drop(DropReason::NatFailed)
    );
}

/// IPv4's nat table never sees IPv6 packets, nor IPv6's IPv4 ones.
#[test]
fn nat_tables_are_per_family() {
    let mut f = filter(&[
        "-t nat -A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.9:80",
        "-6 -t nat -A PREROUTING -p tcp -j DNAT --to-destination [fd00::9]:80",
    ]);
    let mut p4 = build::tcp(C, 1000, SRV, 22, 0x02, 1, 0, 1000, &[]);
    let mut m = Meta::default();
    assert!(accepted(f.hook(Hook::Prerouting, &mut p4, &mut m, 0)));
    assert_eq!(info(&p4).dst, a([10, 0, 0, 9]));
    let mut p6 = build::tcp6(
        v6("2001:db8::1"),
        1000,
        v6("2001:db8::2"),
        22,
        0x02,
        1,
        0,
        &[],
    );
    let mut m = Meta::default();
    assert!(accepted(f.hook(Hook::Prerouting, &mut p6, &mut m, 0)));
    assert_eq!(info(&p6).daddr, u128::from_be_bytes(v6("fd00::9")));
}
