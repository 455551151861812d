//! Property tests: whatever arrives, the core neither panics nor loses a
//! buffer.

use super::*;
use proptest::prelude::*;
use strata_proto::arp::{OP_REPLY, OP_REQUEST};
use strata_proto::ipv4::protocol;

/// Something that happens to the core.
#[derive(Clone, Debug)]
enum Event {
    /// Raw bytes as a frame.
    Raw(Vec<u8>),
    /// An IPv4 packet with chosen fields, valid header checksum.
    Ip {
        ip: Ip,
        payload: Vec<u8>,
        l2_dst: MacAddr,
    },
    /// An ARP packet.
    Arp(ArpPacket),
    /// A datagram from an upper layer.
    Out(Ip, Vec<u8>),
    /// Time passes and the timers run.
    Wait(u64),
    /// A datagram from the peer cut into fragments, some of which arrive,
    /// in any order, possibly twice; `shift` moves one fragment's offset
    /// to make overlaps.
    Frags {
        ip: Ip,
        len: usize,
        chunk: usize,
        picks: Vec<proptest::sample::Index>,
        shift: Option<(proptest::sample::Index, u16)>,
    },
    /// A valid IPv4 frame with one byte of the IPv4 header changed.
    Flip {
        ip: Ip,
        payload: Vec<u8>,
        at: proptest::sample::Index,
        xor: u8,
    },
}

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        Just(OUR_IP),
        Just(PEER_IP),
        Just(GW_IP),
        Just(Ipv4Addr::new(10, 0, 0, 255)),
        Just(Ipv4Addr::BROADCAST),
        Just(Ipv4Addr::new(8, 8, 8, 8)),
        Just(Ipv4Addr::new(224, 0, 0, 1)),
        any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

fn mac() -> impl Strategy<Value = MacAddr> {
    prop_oneof![
        Just(OUR_MAC),
        Just(PEER_MAC),
        Just(MacAddr::BROADCAST),
        any::<[u8; 6]>().prop_map(MacAddr),
    ]
}

fn ip() -> impl Strategy<Value = Ip> {
    (
        addr(),
        addr(),
        prop_oneof![Just(1u8), Just(6), Just(17), any::<u8>()],
        0u8..3,
        0u16..4,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(0u16),
            (0u16..16).prop_map(|o| o * 8),
            any::<u16>().prop_map(|o| o & !7)
        ],
        prop_oneof![
            Just(vec![]),
            Just(vec![1, 1, 1, 0]),
            Just(vec![7, 7, 4, 0, 0, 0, 0, 0])
        ],
    )
        .prop_map(|(src, dst, proto, ttl, ident, df, mf, off, options)| Ip {
            src,
            dst,
            proto,
            ttl,
            ident,
            df,
            mf,
            off,
            options,
        })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (0usize..3000).prop_map(pattern),
        (0usize..40, any::<u16>()).prop_map(|(n, id)| echo_msg(8, id, 1, &pattern(n))),
        (0usize..200).prop_map(|n| (0..n).map(|i| (i * 8) as u8).collect()),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..120).prop_map(Event::Raw),
        (ip(), payload(), mac()).prop_map(|(ip, payload, l2_dst)| Event::Ip {
            ip,
            payload,
            l2_dst
        }),
        (any::<bool>(), mac(), addr(), mac(), addr()).prop_map(|(req, sm, si, tm, ti)| {
            Event::Arp(ArpPacket {
                op: if req { OP_REQUEST } else { OP_REPLY },
                sender_mac: sm,
                sender_ip: si,
                target_mac: tm,
                target_ip: ti,
            })
        }),
        (ip(), payload()).prop_map(|(mut ip, p)| {
            ip.ttl = 64;
            Event::Out(ip, p)
        }),
        prop_oneof![Just(S / 2), Just(S), Just(31 * S), 0u64..S].prop_map(Event::Wait),
        (
            ip(),
            prop_oneof![1usize..100, 1000usize..5000, Just(20000)],
            1usize..200,
            proptest::collection::vec(any::<proptest::sample::Index>(), 1..30),
            proptest::option::of((any::<proptest::sample::Index>(), 1u16..4)),
        )
            .prop_map(|(mut ip, len, chunk, picks, shift)| {
                ip.src = PEER_IP;
                ip.dst = OUR_IP;
                ip.ttl = 64;
                ip.mf = false;
                ip.off = 0;
                Event::Frags {
                    ip,
                    len,
                    chunk: chunk * 8,
                    picks,
                    shift,
                }
            }),
        (ip(), payload(), any::<proptest::sample::Index>(), 1u8..=255).prop_map(
            |(ip, payload, at, xor)| Event::Flip {
                ip,
                payload,
                at,
                xor
            }
        ),
    ]
}

fn run(events: &[Event], upper: bool, forwarding: bool) {
    let mut cfg = config();
    cfg.limits.forwarding = forwarding;
    cfg.limits.max_reassemblies = 4;
    cfg.limits.unres_total = 8;
    cfg.limits.neigh_capacity = 4;
    let mut r = Rig::with(cfg);
    // Room for what the limits let ipd hold at once (4 reassemblies and 8
    // queued datagrams, each in a large buffer) and the input on its way.
    r.pool = strata_ipc::HeapPool::new(128, 16);
    r.core.set_upper(protocol::UDP, upper);
    r.core.start(r.now, &mut r.pool, &mut r.out);
    for e in events {
        match e {
            Event::Raw(b) => {
                r.input(b);
            }
            Event::Ip {
                ip,
                payload,
                l2_dst,
            } => {
                let d = ip.build(payload);
                r.input(&eth(*l2_dst, PEER_MAC, ethertype::IPV4, &d));
            }
            Event::Arp(p) => {
                r.input(&arp_frame(OUR_MAC, p));
            }
            Event::Out(ip, p) => {
                r.output(&ip.build(p));
            }
            Event::Wait(ns) => {
                r.advance(*ns);
            }
            Event::Frags {
                ip,
                len,
                chunk,
                picks,
                shift,
            } => {
                let payload = if ip.proto == protocol::ICMP {
                    echo_msg(8, 1, 1, &pattern(*len))
                } else {
                    pattern(*len)
                };
                let mut frags = fragment(&ip.build(&payload), *chunk);
                if let Some((i, by)) = shift {
                    let k = i.index(frags.len());
                    let f = &mut frags[k];
                    let ff = u16::from_be_bytes([f[6], f[7]]);
                    let moved = (ff & 0xe000) | (ff & 0x1fff).saturating_sub(*by);
                    f[6..8].copy_from_slice(&moved.to_be_bytes());
                    fill_checksum(f);
                }
                for i in picks {
                    let f = &frags[i.index(frags.len())];
                    r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, f));
                }
            }
            Event::Flip {
                ip,
                payload,
                at,
                xor,
            } => {
                let mut f = eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &ip.build(payload));
                let hl = 20 + ip.options.len();
                f[14 + at.index(hl)] ^= xor;
                r.input(&f);
            }
        }
        // Whatever came out is well-formed enough to parse.
        for t in r.tx() {
            let e = t.eth();
            assert_eq!(e.src, OUR_MAC);
            match e.ethertype {
                ethertype::ARP => {
                    t.arp();
                }
                ethertype::IPV6 => {
                    let h = strata_proto::ipv6::Ipv6Header::parse(&t.bytes[14..]).unwrap();
                    assert_eq!(40 + h.payload_len as usize, t.bytes.len() - 14);
                }
                _ => {
                    let h = t.ip_hdr();
                    assert!(t.ip().len() <= 1500);
                    assert_eq!(h.total_len as usize, t.ip().len());
                }
            }
        }
        r.up();
    }
    r.finish();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_frames_never_panic_or_leak(frames in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..200), 1..20)) {
        run(&frames.into_iter().map(Event::Raw).collect::<Vec<_>>(), true, false);
    }

    #[test]
    fn arbitrary_ethernet_ipv4_never_panics_or_leaks(bodies in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..200), 1..20)) {
        let events: Vec<Event> = bodies
            .into_iter()
            .map(|b| Event::Raw(eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &b)))
            .collect();
        run(&events, false, true);
    }

    #[test]
    fn event_sequences_never_panic_or_leak(
        events in proptest::collection::vec(event(), 1..40),
        upper in any::<bool>(),
        forwarding in any::<bool>(),
    ) {
        run(&events, upper, forwarding);
    }
}
