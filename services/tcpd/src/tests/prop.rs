//! Whatever ipd and sockd hand over, in whatever order and at whatever
//! times, over IPv4 and IPv6, the core neither panics nor leaks: after
//! closing every socket and running the timers out, every block and
//! entry is free and the pool is back at its baseline.

use super::*;
use proptest::prelude::*;
use strata_ipc::l4::ctl_flags::V6ONLY;
use strata_proto::checksum::pseudo_header_v6;
use strata_proto::icmp::IcmpHeader;

#[derive(Clone, Debug)]
enum In {
    /// A segment built from fields, then mutated.
    Seg {
        fl: u8,
        seq: u32,
        /// Relative to our ISN + 1 (the established connection's), or
        /// absolute.
        ack: (bool, u32),
        sport: u16,
        dport: u16,
        win: u16,
        opts: TcpOptions,
        payload: Vec<u8>,
        muts: Vec<(proptest::sample::Index, u8)>,
        cs: u8,
        icmp: bool,
        /// Over IPv6, to the IPv6 connection (else IPv4, to the IPv4 one).
        v6: bool,
    },
    /// Raw bytes as TCP (or another protocol), the transport at `l4`.
    Raw { bytes: Vec<u8>, proto: u8, l4: u16 },
    /// A control request.
    Ctl(L4Ctl),
    /// Payload from sockd.
    Data { sock: u32, len: usize },
    /// Time passes.
    Wait(u64),
}

fn near(base: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(base),
        (0..3000u32).prop_map(move |d| base.wrapping_add(d)),
        (0..70_000u32).prop_map(move |d| base.wrapping_add(d)),
        (0..2000u32).prop_map(move |d| base.wrapping_sub(d)),
        any::<u32>(),
    ]
}

fn opts() -> impl Strategy<Value = TcpOptions> {
    (
        proptest::option::of(any::<u16>()),
        proptest::option::of(0..20u8),
        any::<bool>(),
        proptest::option::of((any::<u32>(), any::<u32>())),
        proptest::collection::vec((near(PISS), near(PISS)), 0..4),
    )
        .prop_map(|(mss, ws, sp, ts, sacks)| {
            let mut o = TcpOptions {
                mss,
                window_scale: ws,
                sack_permitted: sp,
                timestamp: ts,
                ..TcpOptions::default()
            };
            for s in sacks {
                o.push_sack(s);
            }
            o
        })
}

fn input() -> impl Strategy<Value = In> {
    prop_oneof![
        6 => (
            prop_oneof![
                Just(ACK.0),
                Just((ACK | PSH).0),
                Just((ACK | FIN).0),
                Just(RST.0),
                Just(SYN.0),
                any::<u8>()
            ],
            near(PISS + 1),
            prop_oneof![
                2 => Just((true, 0)),
                2 => (0..3000u32).prop_map(|d| (true, d)),
                1 => (0..20_000u32).prop_map(|d| (true, d)),
                1 => any::<u32>().prop_map(|a| (false, a)),
            ],
            prop_oneof![3 => Just(PPORT), 1 => Just(443u16), 1 => any::<u16>()],
            prop_oneof![Just(LPORT), 50000..50100u16, any::<u16>()],
            any::<u16>(),
            opts(),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..2),
            0..4u8,
            proptest::bool::weighted(0.1),
            proptest::bool::weighted(0.3),
        )
            .prop_map(|(fl, seq, ack, sport, dport, win, opts, payload, muts, cs, icmp, v6)| {
                In::Seg {
                    fl,
                    seq,
                    ack,
                    sport,
                    dport,
                    win,
                    opts,
                    payload,
                    muts,
                    cs,
                    icmp,
                    v6,
                }
            }),
        1 => (
            proptest::collection::vec(any::<u8>(), 0..80),
            prop_oneof![Just(protocol::TCP), Just(protocol::ICMP), Just(58u8), any::<u8>()],
            prop_oneof![Just(20u16), Just(40u16), 0..100u16],
        )
            .prop_map(|(bytes, proto, l4)| In::Raw { bytes, proto, l4 }),
        3 => (
            prop_oneof![
                1 => 1..12u32,
                3 => Just(op::READ_CREDIT),
                1 => Just(op::SETOPT),
                1 => Just(op::SHUTDOWN),
            ],
            0..6u32,
            any::<u16>(),
            prop_oneof![0..4u32, Just(V6ONLY), Just(V6ONLY | 1)],
            any::<u64>(),
            prop_oneof![
                Just(mapped(0)),
                Just(0),
                Just(mapped(u(LOCAL))),
                Just(mapped(u(PEER))),
                Just(u128::from(LOCAL6)),
                Just(u128::from(PEER6)),
                any::<u32>().prop_map(mapped),
                any::<u128>(),
            ]
        )
            .prop_map(|(o, sock, port, fl, value, addr)| {
                let value = if value % 3 == 0 { value % 100_000 } else { value };
                let local = [mapped(0), 0, mapped(u(LOCAL)), u128::from(LOCAL6)];
                In::Ctl(L4Ctl {
                    op: o,
                    sock,
                    local_port: if o == op::BIND { port % 4 * 20 } else { 0 },
                    local_addr: if o == op::BIND { local[addr as usize % 4] } else { 0 },
                    remote_addr: addr,
                    remote_port: port,
                    flags: fl,
                    value,
                    ..L4Ctl::default()
                })
            }),
        2 => (0..6u32, 0..5000usize).prop_map(|(sock, len)| In::Data { sock, len }),
        2 => prop_oneof![0..50u64, 0..5000u64].prop_map(In::Wait),
    ]
}

fn run(inputs: Vec<In>) {
    let mut cfg = config();
    cfg.max_retries = 3;
    cfg.syn_retries = 2;
    cfg.synack_retries = 2;
    cfg.max_conns = 12;
    let mut h = H::with_storage(cfg, 12, 256);
    h.listen(1, LPORT, 2);
    let iss = h.accept(2, syn_opts(9));
    let iss6 = accept6(&mut h);
    for i in inputs {
        match i {
            In::Seg {
                fl,
                seq,
                ack,
                sport,
                dport,
                win,
                opts,
                payload,
                muts,
                cs,
                icmp,
                v6: true,
            } => {
                let ack = match ack {
                    (true, d) => (iss6 + 1).wrapping_add(d),
                    (false, a) => a,
                };
                let mut d = build6(
                    (PEER6, sport),
                    (LOCAL6, dport),
                    TcpFlags(fl),
                    seq,
                    ack,
                    win,
                    &opts,
                    &payload,
                );
                for (k, v) in muts {
                    let n = d.len();
                    d[k.index(n)] = v;
                }
                let (bytes, proto) = if icmp {
                    let q = build6(
                        (LOCAL6, dport),
                        (PEER6, sport),
                        TcpFlags(fl),
                        ack,
                        seq,
                        win,
                        &TcpOptions::default(),
                        &[],
                    );
                    (icmp6_quoting(1 + fl % 4, fl % 8, &q), 58)
                } else {
                    (d, protocol::TCP)
                };
                let mut hd = ip_handle(&mut h.pool, &bytes, proto);
                hd.csum = cs;
                h.core.from_ip(h.now, &mut h.pool, hd, &mut h.out);
                h.collect();
            }
            In::Seg {
                fl,
                seq,
                ack,
                sport,
                dport,
                win,
                opts,
                payload,
                muts,
                cs,
                icmp,
                v6: false,
            } => {
                let ack = match ack {
                    (true, d) => (iss + 1).wrapping_add(d),
                    (false, a) => a,
                };
                let mut d = build(
                    (PEER, sport),
                    (LOCAL, dport),
                    TcpFlags(fl),
                    seq,
                    ack,
                    win,
                    &opts,
                    &payload,
                );
                for (k, v) in muts {
                    let n = d.len();
                    d[k.index(n)] = v;
                }
                let (bytes, proto) = if icmp {
                    // An ICMP error quoting (the start of) it, from the
                    // peer to us, turned around.
                    let q = build(
                        (LOCAL, dport),
                        (PEER, sport),
                        TcpFlags(fl),
                        ack,
                        seq,
                        win,
                        &TcpOptions::default(),
                        &[],
                    );
                    let mut m = vec![0u8; 8 + 28];
                    IcmpHeader {
                        icmp_type: 3,
                        code: fl % 16,
                        checksum: 0,
                        rest: [0, 0, 5, 220],
                    }
                    .emit(&mut m[..8])
                    .ok();
                    m[8..].copy_from_slice(&q[..28]);
                    let c = strata_proto::checksum::checksum(&m);
                    m[2..4].copy_from_slice(&c.to_be_bytes());
                    let mut o = vec![0u8; 20 + m.len()];
                    Ipv4Header {
                        header_len: 20,
                        tos: 0,
                        total_len: o.len() as u16,
                        ident: 0,
                        dont_frag: false,
                        more_frags: false,
                        frag_offset: 0,
                        ttl: 64,
                        protocol: protocol::ICMP,
                        checksum: 0,
                        src: PEER,
                        dst: LOCAL,
                    }
                    .emit(&mut o)
                    .unwrap();
                    o[20..].copy_from_slice(&m);
                    (o, protocol::ICMP)
                } else {
                    (d, protocol::TCP)
                };
                let mut hd = ip_handle(&mut h.pool, &bytes, proto);
                hd.csum = cs;
                h.core.from_ip(h.now, &mut h.pool, hd, &mut h.out);
                h.collect();
            }
            In::Raw { bytes, proto, l4 } => {
                if let Some(mut hd) = h.pool.alloc(bytes.len()) {
                    hd.data_len = bytes.len() as u32;
                    h.pool.data_mut(&hd).unwrap().copy_from_slice(&bytes);
                    hd.l4proto = proto;
                    hd.l4_off = l4;
                    h.core.from_ip(h.now, &mut h.pool, hd, &mut h.out);
                    h.collect();
                }
            }
            In::Ctl(m) => {
                let hd = m.to_handle(&mut h.pool).unwrap();
                h.core.from_sock(h.now, &mut h.pool, hd, &mut h.out);
                h.collect();
            }
            In::Data { sock, len } => {
                if let Some(mut hd) = h.pool.alloc(len) {
                    hd.data_len = len as u32;
                    hd.sock = sock;
                    h.core.from_sock(h.now, &mut h.pool, hd, &mut h.out);
                    h.collect();
                }
            }
            In::Wait(ms) => h.advance(ms),
        }
        assert!(h.pool.stale_frees == 0);
    }
    if std::env::var_os("TCPD_PROP_STATS").is_some() {
        eprintln!(
            "{:?}",
            h.core
                .stats()
                .iter()
                .filter(|(_, v)| *v > 0)
                .collect::<Vec<_>>()
        );
    }
    // A few stale and out-of-range handles too.
    let mut bogus = Handle::new(999_999, 1, 0);
    bogus.l4proto = protocol::TCP;
    h.core.from_ip(h.now, &mut h.pool, bogus, &mut h.out);
    bogus.flags = flags::CTRL;
    h.core.from_sock(h.now, &mut h.pool, bogus, &mut h.out);
    h.collect();
    // Sockets sockd still has: closed. Then everything must run out.
    h.advance(1);
    let socks: std::collections::BTreeSet<u32> = h
        .core
        .connections()
        .map(|c| c.sock)
        .filter(|&s| s != 0)
        .collect();
    for s in socks {
        h.req(op::CLOSE, s, 0);
    }
    h.advance(30 * 60 * 1000);
    h.segs.clear();
    h.ups.clear();
    assert_eq!(
        h.core.conns_in_use(),
        0,
        "{:#?}",
        h.core.connections().collect::<Vec<_>>()
    );
    assert_eq!(h.core.entries_in_use(), 0);
    assert_eq!(h.pool.in_use(), 0, "buffers leaked");
    assert_eq!(h.pool.stale_frees, 0);
}

/// An IPv6 connection as socket 3, accepted on an IPV6_V6ONLY `[::]:80`
/// listener (socket 9, beside socket 1's IPv4 one); returns our ISN.
fn accept6(h: &mut H) -> u32 {
    for m in [
        L4Ctl {
            op: op::BIND,
            sock: 9,
            local_port: LPORT,
            flags: V6ONLY,
            ..L4Ctl::default()
        },
        L4Ctl {
            op: op::LISTEN,
            sock: 9,
            value: 2,
            flags: V6ONLY,
            ..L4Ctl::default()
        },
    ] {
        assert_eq!(h.ctl(m).unwrap().op, op::OK);
    }
    (h.paddr, h.laddr) = (PEER6.into(), LOCAL6.into());
    h.peer_opts(SYN, PISS, 0, &[], syn_opts(9));
    let sa = h.expect(SYN | ACK);
    h.peer(ACK, PISS + 1, sa.seq() + 1, &[]);
    let a = h.expect_up(op::ACCEPTABLE);
    assert_eq!(a.sock, 9);
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 3,
        value: a.value,
        ..L4Ctl::default()
    });
    (h.paddr, h.laddr) = (PEER.into(), LOCAL.into());
    sa.seq()
}

/// An ICMPv6 error (`icmp_type`, `code`, MTU 1300 in the word after the
/// checksum) from the peer to us quoting the start of packet `q`.
fn icmp6_quoting(icmp_type: u8, code: u8, q: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 8 + q.len().min(48)];
    m[0] = icmp_type;
    m[1] = code;
    m[4..8].copy_from_slice(&1300u32.to_be_bytes());
    let n = m.len();
    m[8..].copy_from_slice(&q[..n - 8]);
    let mut c = pseudo_header_v6(PEER6, LOCAL6, 58, n as u32);
    c.add_bytes(&m);
    m[2..4].copy_from_slice(&c.finish().to_be_bytes());
    let mut o = vec![0u8; 40 + n];
    strata_proto::ipv6::Ipv6Header {
        traffic_class: 0,
        flow_label: 0,
        payload_len: n as u16,
        next_header: 58,
        hop_limit: 64,
        src: PEER6,
        dst: LOCAL6,
    }
    .emit(&mut o)
    .unwrap();
    o[40..].copy_from_slice(&m);
    o
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics_or_leaks(inputs in proptest::collection::vec(input(), 0..60)) {
        run(inputs);
    }
}

#[test]
fn a_long_random_run() {
    // A longer deterministic sequence than proptest's, from a fixed seed.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    for _ in 0..5 {
        let v = proptest::collection::vec(input(), 400..500)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        run(v);
    }
}
