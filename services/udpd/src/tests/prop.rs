//! Whatever ipd and sockd hand over, the core neither panics nor leaks.

use super::*;
use proptest::prelude::*;

/// One input: bytes from ipd (as UDP, ICMP or ICMPv6 over IPv4 or IPv6,
/// with a checksum state and a transport offset) or from sockd (control
/// or payload), for one of a few sockets.
#[derive(Clone, Debug)]
enum In {
    Ip {
        bytes: Vec<u8>,
        proto: u8,
        cs: u8,
        v6: bool,
        l4: u16,
    },
    Sock {
        bytes: Vec<u8>,
        ctrl: bool,
        sock: u32,
    },
    Ctl(L4Ctl),
}

fn addr() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(u(A1)),
        Just(u(A2)),
        Just(u(B1)),
        Just(u(PEER)),
        Just(u(BCAST)),
        any::<u32>(),
    ]
}

fn addr6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        Just(Ipv6Addr::UNSPECIFIED),
        Just(L6),
        Just(L6B),
        Just(LL),
        Just(P6),
        Just(ALL_NODES),
        Just(PEER.to_ipv6_mapped()),
        any::<[u8; 16]>().prop_map(Ipv6Addr::from),
    ]
}

/// An address as the socket path carries it: IPv4 (mapped) or IPv6.
fn addr_any() -> impl Strategy<Value = u128> {
    prop_oneof![
        addr().prop_map(strata_ipc::addrs::mapped),
        addr6().prop_map(u128::from),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0), 5000..5003u16, 50000..50100u16, any::<u16>()]
}

/// Valid datagrams with random mutations, so the parsers get past their
/// first checks.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        addr(),
        port(),
        addr(),
        port(),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..3),
        any::<bool>(),
    )
        .prop_map(|(s, sp, d, dp, payload, muts, wrap)| {
            let mut b = Dg::new(s.into(), sp, d.into(), dp).build(&payload);
            if wrap {
                b = icmp_error(PEER, A1, 3, 3, &b);
            }
            for (i, v) in muts {
                let k = i.index(b.len());
                b[k] = v;
            }
            b
        })
}

/// Valid IPv6 datagrams (some after an extension header, some quoted in
/// an ICMPv6 error, some of those as a first fragment) with random
/// mutations; the second value is where the transport header is.
fn datagram6() -> impl Strategy<Value = (Vec<u8>, u16)> {
    (
        (addr6(), port(), addr6(), port(), any::<bool>()),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..3),
        (any::<bool>(), any::<bool>(), 0..8u8),
    )
        .prop_map(|((s, sp, d, dp, ext), payload, muts, (wrap, frag, ty))| {
            let dg = Dg6 {
                ext,
                ..Dg6::new(s, sp, d, dp)
            };
            let mut b = dg.build(&payload);
            let mut l4 = dg.l4() as u16;
            if wrap {
                if frag {
                    b[6] = strata_proto::ipv6::next_header::FRAGMENT;
                    b.splice(40..40, [17, 0, 0, 1, 0, 0, 0, 9]);
                }
                b = icmp6_error(P6, L6, ty, 4, 0, &b);
                l4 = 40;
            }
            for (i, v) in muts {
                let k = i.index(b.len());
                b[k] = v;
            }
            (b, l4)
        })
}

fn input() -> impl Strategy<Value = In> {
    prop_oneof![
        (
            prop_oneof![datagram(), proptest::collection::vec(any::<u8>(), 0..80)],
            prop_oneof![Just(protocol::UDP), Just(protocol::ICMP), any::<u8>()],
            0..4u8,
        )
            .prop_map(|(bytes, proto, cs)| In::Ip {
                bytes,
                proto,
                cs,
                v6: false,
                l4: 20
            }),
        (
            prop_oneof![
                datagram6(),
                (proptest::collection::vec(any::<u8>(), 0..100), 0..100u16),
            ],
            prop_oneof![Just(protocol::UDP), Just(58u8), any::<u8>()],
            0..4u8,
        )
            .prop_map(|((bytes, l4), proto, cs)| In::Ip {
                bytes,
                proto,
                cs,
                v6: true,
                l4
            }),
        (
            proptest::collection::vec(any::<u8>(), 0..60),
            any::<bool>(),
            0..6u32
        )
            .prop_map(|(bytes, ctrl, sock)| In::Sock { bytes, ctrl, sock }),
        (
            1..5u32,
            0..6u32,
            addr_any(),
            port(),
            addr_any(),
            port(),
            0..128u32
        )
            .prop_map(|(op, sock, la, lp, ra, rp, flags)| In::Ctl(L4Ctl {
                op,
                sock,
                local_addr: la,
                local_port: lp,
                remote_addr: ra,
                remote_port: rp,
                flags,
                ..Default::default()
            })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_input_never_panics_or_leaks(inputs in proptest::collection::vec(input(), 1..40)) {
        let mut cfg = config();
        cfg.ephemeral_ports = (50000, 50003);
        let mut r = Rig::with(cfg);
        for i in inputs {
            match i {
                In::Ip { bytes, proto, cs, v6: false, .. } => {
                    r.rx_with(&bytes, proto, cs);
                }
                In::Ip { bytes, proto, cs, v6: true, l4 } => {
                    r.rx6_with(&bytes, usize::from(l4), proto, cs);
                }
                In::Sock { bytes, ctrl, sock } => {
                    let mut h = r.buf(&bytes);
                    h.sock = sock;
                    if ctrl {
                        h.flags = flags::CTRL;
                    }
                    r.core.from_sock(&mut r.pool, h, &mut r.out);
                }
                In::Ctl(m) => {
                    r.ctl(m);
                }
            }
            // Everything for sockd is a control message or a datagram whose
            // window sockd can read as the contract says.
            for h in &r.out.to_sock {
                if h.flags & flags::CTRL == 0 {
                    let d = r.pool.data(h).unwrap();
                    let off = usize::from(h.l4_off);
                    let udp = UdpHeader::parse(&d[off..]).unwrap();
                    prop_assert_eq!(off + usize::from(udp.length), d.len());
                    prop_assert!(r.core.binding(h.sock).is_some());
                }
            }
            for h in &r.out.to_ip {
                let d = r.pool.data(h).unwrap();
                if h.ethertype == strata_proto::ethernet::ethertype::IPV6 {
                    prop_assert!(Ipv6Header::parse(d).is_ok());
                } else {
                    prop_assert!(Ipv4Header::parse(d).is_ok());
                }
            }
            r.take_ctl();
            r.delivered();
            r.take_ip();
            prop_assert_eq!(r.pool.in_use(), 0);
        }
        // The table exports and restores to the same bindings.
        let saved: Vec<crate::Binding> = r.core.bindings().collect();
        let mut r2 = Rig::new();
        prop_assert_eq!(r2.core.restore(&saved), saved.len());
        for b in &saved {
            prop_assert_eq!(r2.core.binding(b.sock), Some(*b));
        }
        r.finish();
        r2.finish();
    }
}
