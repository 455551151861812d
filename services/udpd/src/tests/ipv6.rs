//! UDP over IPv6, and dual-stack sockets (RFC 3493 §3.7): receiving,
//! sending, binds across the families, checksums, ICMPv6 errors.

use super::*;
use crate::bflags;
use strata_proto::icmpv6::{icmpv6_type, unreach_code};
use strata_proto::ipv6::FragmentHeader;

/// `::`.
const ANY6: u128 = 0;

/// The socket ids and windows of the datagrams delivered to sockd.
fn socks(r: &mut Rig) -> Vec<u32> {
    r.delivered().iter().map(|d| d.0).collect()
}

#[test]
fn datagram_over_ipv6_goes_up_whole_with_the_offsets_sockd_expects() {
    let mut r = Rig::new();
    r.bind6(7, ANY6, 5353, false, false).unwrap();
    let dg = Dg6::new(P6, 1234, L6, 5353);
    let d = dg.build(&pattern(100));
    // Padding after the UDP datagram (UDP length < IPv6 payload) is
    // trimmed off the window.
    let mut padded = d.clone();
    padded.extend_from_slice(&[0xee; 4]);
    let pl = padded.len() as u16 - 40;
    padded[4..6].copy_from_slice(&pl.to_be_bytes());
    r.rx6_with(&padded, 40, protocol::UDP, csum::NONE);
    let up = r.delivered();
    assert_eq!(up.len(), 1);
    let (sock, h, bytes) = &up[0];
    assert_eq!(*sock, 7);
    assert_eq!(bytes[40..], d[40..], "window ends at the UDP length");
    assert_eq!(&bytes[8..24], &P6.octets(), "the source sockd reads");
    assert_eq!(
        (h.l3_off, h.l4_off, h.l4proto, h.flags, h.ethertype),
        (0, 40, protocol::UDP, 0, ethertype::IPV6)
    );
    // After an extension header ipd walked: l4_off says where UDP is.
    let ext = Dg6 { ext: true, ..dg };
    r.rx6(&ext, b"after options");
    let up = r.delivered();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].1.l4_off, 48);
    assert_eq!(&up[0].2[56..], b"after options");
    assert_eq!(r.stat(Stat::InDatagrams6), 2);
    assert_eq!(r.stat(Stat::Delivered), 2);
    r.finish();
}

#[test]
fn a_specific_address_takes_only_its_own_and_binds_are_checked() {
    let mut r = Rig::new();
    let b = r.bind6(1, a6(L6), 7000, false, false).unwrap();
    assert_eq!((b.local_addr, b.local_port), (a6(L6), 7000));
    assert_eq!(
        r.core.binding(1).unwrap().flags & bflags::ADDR_LOCK,
        bflags::ADDR_LOCK
    );
    r.rx6(&Dg6::new(P6, 1, L6, 7000), b"mine");
    assert_eq!(socks(&mut r), [1]);
    // Another of our addresses: nobody's, so port unreachable.
    r.rx6(&Dg6::new(P6, 1, L6B, 7000), b"not mine");
    assert!(r.delivered().is_empty());
    assert_eq!(r.take_ip().len(), 1);
    // Nor does an IPv4 datagram reach a socket bound to an IPv6 address.
    r.rx(&Dg::new(PEER, 1, A1, 7000).build(b"v4"));
    assert!(r.delivered().is_empty());
    assert_eq!(r.take_ip().len(), 1);
    // Ours: configured ones, the link-local one from the MAC, loopback.
    for (s, a) in [(2, LL), (3, L6B), (4, Ipv6Addr::LOCALHOST)] {
        assert_eq!(
            r.bind6(s, a6(a), 7000, false, false).map(|c| c.local_addr),
            Ok(a6(a))
        );
    }
    r.rx6(
        &Dg6::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9), 1, LL, 7000),
        b"ll",
    );
    assert_eq!(socks(&mut r), [2]);
    // Not ours: a peer's, another link-local, a multicast group (not yet).
    let other_ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    for (s, a) in [(5, P6), (6, other_ll), (7, ALL_NODES)] {
        assert_eq!(
            r.bind6(s, a6(a), 7000, false, false),
            Err(libc::EADDRNOTAVAIL)
        );
    }
    assert_eq!(r.stat(Stat::BindAddrNotAvail), 3);
    r.finish();
}

#[test]
fn a_dual_stack_socket_takes_ipv4_with_mapped_peers_and_answers_over_ipv4() {
    let mut r = Rig::new();
    r.bind6(1, ANY6, 5000, false, false).unwrap();
    assert!(r.core.binding(1).unwrap().inet6());
    // IPv4 goes up as it came (sockd reads an IPv4 header; the peer is
    // mapped on its way to the application).
    let d = Dg::new(PEER, 1234, A1, 5000).build(b"v4 to ::");
    r.rx(&d);
    let up = r.delivered();
    assert_eq!(up.len(), 1);
    assert_eq!((up[0].0, &up[0].2), (1, &d));
    r.rx6(&Dg6::new(P6, 1234, L6, 5000), b"v6 to ::");
    assert_eq!(socks(&mut r), [1]);
    // The answer to the mapped peer leaves over IPv4, from the address
    // routing gives, and to the IPv6 one over IPv6.
    r.send_to(1, m(PEER), 1234, b"back v4");
    r.send_to(1, a6(P6), 1234, b"back v6");
    let sent = r.take_ip();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].0.ethertype, ethertype::IPV4);
    let ip = Ipv4Header::parse(&sent[0].1).unwrap();
    assert_eq!((ip.src, ip.dst), (A1, PEER));
    assert!(UdpHeader::verify_checksum(&sent[0].1[20..], A1, PEER));
    assert_eq!(sent[1].0.ethertype, ethertype::IPV6);
    // Connected to the mapped peer: the local address becomes the mapped
    // source, and errors and replies name the peer mapped.
    let c = r.connect6(1, m(PEER), 53, false).unwrap();
    assert_eq!(
        (c.local_addr, c.remote_addr, c.local_port),
        (m(A1), m(PEER), 5000)
    );
    r.rx(&Dg::new(PEER, 53, A1, 5000).build(b"answer"));
    assert_eq!(socks(&mut r), [1]);
    r.rx6(&Dg6::new(P6, 53, L6, 5000), b"not the peer");
    assert!(r.delivered().is_empty());
    r.take_ip();
    let sent = Dg::new(A1, 5000, PEER, 53).build(b"q");
    let e = icmp_error(PEER, A1, 3, 3, &sent);
    r.rx_with(&e, protocol::ICMP, csum::NONE);
    let n = r.take_ctl();
    assert_eq!(
        (n[0].op, n[0].errno, n[0].remote_addr),
        (op::SOCK_ERROR, libc::ECONNREFUSED, m(PEER))
    );
    // Connected on to an IPv6 peer: the local address is `::` again (ipd
    // chooses the source).
    let c = r.connect6(1, a6(P6), 53, false).unwrap();
    assert_eq!((c.local_addr, c.remote_addr), (ANY6, a6(P6)));
    // Disconnected: back to `::`, the port kept (bind chose it).
    let c = r.connect6(1, ANY6, 0, false).unwrap();
    assert_eq!(
        (c.local_addr, c.remote_addr, c.local_port),
        (ANY6, ANY6, 5000)
    );
    r.rx(&Dg::new(PEER_B, 9, B1, 5000).build(b"anyone again"));
    assert_eq!(socks(&mut r), [1]);
    r.finish();
}

#[test]
fn a_v6only_socket_refuses_ipv4_and_an_ipv4_socket_ipv6() {
    let mut r = Rig::new();
    let b = r.bind6(1, ANY6, 5000, true, false).unwrap();
    assert_eq!(b.flags & ctl_flags::V6ONLY, ctl_flags::V6ONLY);
    // IPv4 to the port: not for it, so port unreachable.
    let h = r.rx(&Dg::new(PEER, 1, A1, 5000).build(b"v4"));
    let back = r.take_ip();
    assert_eq!(
        (back.len(), back[0].0.buf, back[0].0.flags),
        (1, h.buf, flags::ICMP_PORT_UNREACH)
    );
    // Sending to an IPv4 peer: dropped; connecting: ENETUNREACH (Linux).
    r.send_to(1, m(PEER), 9, b"no");
    assert!(r.take_ip().is_empty());
    assert_eq!(r.connect6(1, m(PEER), 9, false), Err(libc::ENETUNREACH));
    assert_eq!(r.connect6(2, m(PEER), 9, true), Err(libc::ENETUNREACH));
    assert!(
        r.core.binding(2).is_none(),
        "a refused connect binds nothing"
    );
    assert_eq!(r.stat(Stat::V6OnlyRefused), 3);
    // Nor may it bind an IPv4 address.
    assert_eq!(r.bind6(3, m(A1), 5001, true, false), Err(libc::EINVAL));
    assert_eq!(r.bind6(3, mapped(0), 5001, true, false), Err(libc::EINVAL));
    // 0.0.0.0 on the same port does not conflict, and takes IPv4.
    r.bind(4, Ipv4Addr::UNSPECIFIED, 5000, false).unwrap();
    r.rx(&Dg::new(PEER, 1, A1, 5000).build(b"v4"));
    r.rx6(&Dg6::new(P6, 1, L6, 5000), b"v6");
    assert_eq!(socks(&mut r), [4, 1]);
    // The IPv4 socket neither sends nor connects to IPv6.
    r.send_to(4, a6(P6), 9, b"no");
    assert!(r.take_ip().is_empty());
    assert_eq!(r.connect6(4, a6(P6), 9, false), Err(libc::EAFNOSUPPORT));
    // Nor does one bound to an IPv6 address send to IPv4.
    r.bind6(5, a6(L6), 6000, false, false).unwrap();
    r.send_to(5, m(PEER), 9, b"no");
    assert!(r.take_ip().is_empty());
    assert_eq!(r.stat(Stat::WrongFamily), 3);
    // An IPv6 datagram to an IPv4-only port: port unreachable.
    r.bind(6, Ipv4Addr::UNSPECIFIED, 6001, false).unwrap();
    r.rx6(&Dg6::new(P6, 1, L6, 6001), b"v6 to 0.0.0.0");
    assert_eq!(r.take_ip().len(), 1);
    assert_eq!(r.stat(Stat::NoPort), 2);
    r.finish();
}

#[test]
fn an_ipv4_datagram_prefers_an_ipv4_socket_to_a_dual_stack_one() {
    let mut r = Rig::new();
    r.bind(1, Ipv4Addr::UNSPECIFIED, 5000, true).unwrap();
    // Newer, and equally unspecific: still second for IPv4 (Linux scores
    // PF_INET above PF_INET6).
    r.bind6(2, ANY6, 5000, false, true).unwrap();
    r.rx(&Dg::new(PEER, 1, A1, 5000).build(b"v4"));
    r.rx6(&Dg6::new(P6, 1, L6, 5000), b"v6");
    assert_eq!(socks(&mut r), [1, 2]);
    // A specific address beats both; a mapped one is an IPv4 address.
    r.bind6(3, m(A1), 5000, false, true).unwrap();
    r.rx(&Dg::new(PEER, 1, A1, 5000).build(b"v4"));
    r.rx(&Dg::new(PEER, 1, A2, 5000).build(b"v4"));
    assert_eq!(socks(&mut r), [3, 1]);
    r.close(1);
    r.rx(&Dg::new(PEER, 1, A2, 5000).build(b"v4"));
    assert_eq!(socks(&mut r), [2]);
    r.finish();
}

#[test]
fn bind_conflicts_across_the_families_follow_linux() {
    let any4 = mapped(0);
    // (first, its V6ONLY, second, its V6ONLY, conflict?) without reuse
    // options (Linux `inet_rcv_saddr_equal`).
    let table = [
        (ANY6, false, any4, false, true),
        (any4, false, ANY6, false, true),
        (ANY6, false, m(A1), false, true),
        (m(A1), false, ANY6, false, true),
        (ANY6, true, any4, false, false),
        (any4, false, ANY6, true, false),
        (ANY6, true, m(A1), false, false),
        (m(A1), false, ANY6, true, false),
        (ANY6, true, ANY6, false, true),
        (ANY6, false, ANY6, true, true),
        (ANY6, true, a6(L6), false, true),
        (a6(L6), false, ANY6, true, true),
        (ANY6, false, a6(L6), false, true),
        (a6(L6), false, a6(L6), false, true),
        (a6(L6), false, a6(L6B), false, false),
        (a6(L6), false, any4, false, false),
        (any4, false, a6(L6), false, false),
        (a6(L6), false, m(A1), false, false),
    ];
    for (i, &(a, a_only, b, b_only, conflict)) in table.iter().enumerate() {
        let mut r = Rig::new();
        assert!(r.bind6(1, a, 5000, a_only, false).is_ok(), "case {i}");
        let second = r.bind6(2, b, 5000, b_only, false);
        if conflict {
            assert_eq!(second.map(|_| ()), Err(libc::EADDRINUSE), "case {i}");
            // Both with SO_REUSEADDR: shared.
            let mut r2 = Rig::new();
            r2.bind6(1, a, 5000, a_only, true).unwrap();
            assert!(r2.bind6(2, b, 5000, b_only, true).is_ok(), "case {i} reuse");
            r2.finish();
        } else {
            assert_eq!(second.map(|c| c.local_addr), Ok(b), "case {i}");
        }
        r.finish();
    }
}

#[test]
fn ipv6_checksums_zero_bad_and_trusted() {
    let mut r = Rig::new();
    r.bind6(1, ANY6, 9, false, false).unwrap();
    let dg = Dg6::new(P6, 1, L6, 9);
    let good = dg.build(b"checksummed");
    let mut bad = good.clone();
    bad[50] ^= 0x01;
    r.rx6_with(&bad, 40, protocol::UDP, csum::NONE);
    // Zero is no checksum over IPv6 (RFC 8200 §8.1), whoever vouches for
    // the datagram.
    let mut zero = good.clone();
    zero[46..48].fill(0);
    for cs in [csum::NONE, csum::VERIFIED, csum::PARTIAL] {
        r.rx6_with(&zero, 40, protocol::UDP, cs);
    }
    assert!(r.delivered().is_empty());
    assert!(r.take_ip().is_empty(), "no port unreachable for either");
    assert_eq!(r.stat(Stat::UdpBadChecksum), 1);
    assert_eq!(r.stat(Stat::Udp6ZeroChecksum), 3);
    // A wrong one the device verified or loopback will fill: trusted.
    r.rx6_with(&bad, 40, protocol::UDP, csum::VERIFIED);
    r.rx6_with(&bad, 40, protocol::UDP, csum::PARTIAL);
    r.rx6_with(&good, 40, protocol::UDP, csum::NONE);
    assert_eq!(r.delivered().len(), 3);
    assert_eq!(r.stat(Stat::CsumTrusted), 2);
    // The checksum covers the addresses: another source fails it.
    let mut moved = good.clone();
    moved[8..24].copy_from_slice(&P6B.octets());
    r.rx6_with(&moved, 40, protocol::UDP, csum::NONE);
    assert_eq!(r.stat(Stat::UdpBadChecksum), 2);
    r.finish();
}

#[test]
fn malformed_ipv6_datagrams_are_dropped_and_counted() {
    let mut r = Rig::new();
    r.bind6(1, ANY6, 9, false, false).unwrap();
    let good = Dg6::new(P6, 1, L6, 9).build(b"payload!");
    // Not IPv6, a payload length past the window, l4_off inside the
    // fixed header or past the end, and a fixed header naming TCP.
    r.rx6_with(&good[..39], 40, protocol::UDP, csum::NONE);
    let mut v4 = good.clone();
    v4[0] = 0x45;
    r.rx6_with(&v4, 40, protocol::UDP, csum::NONE);
    r.rx6_with(&good[..good.len() - 1], 40, protocol::UDP, csum::NONE);
    r.rx6_with(&good, 20, protocol::UDP, csum::NONE);
    r.rx6_with(&good, good.len() + 1, protocol::UDP, csum::NONE);
    let mut tcp = good.clone();
    tcp[6] = protocol::TCP;
    r.rx6_with(&tcp, 40, protocol::UDP, csum::NONE);
    // UDP header too short, and a length beyond the payload.
    r.rx6_with(&good, good.len() - 4, protocol::UDP, csum::NONE);
    let mut long = good.clone();
    long[44..46].copy_from_slice(&100u16.to_be_bytes());
    r.rx6_with(&long, 40, protocol::UDP, csum::NONE);
    // IPv4-mapped addresses never travel in IPv6 headers.
    for at in [8, 24] {
        let mut mapped_addr = good.clone();
        mapped_addr[at..at + 16].copy_from_slice(&PEER.to_ipv6_mapped().octets());
        r.rx6_with(&mapped_addr, 40, protocol::UDP, csum::VERIFIED);
    }
    assert!(r.delivered().is_empty());
    assert!(r.take_ip().is_empty());
    assert_eq!(r.stat(Stat::IpMalformed), 5);
    assert_eq!(r.stat(Stat::WrongProtocol), 1);
    assert_eq!(r.stat(Stat::UdpTruncated), 1);
    assert_eq!(r.stat(Stat::UdpLengthExceedsPacket), 1);
    assert_eq!(r.stat(Stat::Ip6MappedAddress), 2);
    r.finish();
}

#[test]
fn closed_ipv6_port_goes_back_whole_for_port_unreachable_but_not_for_multicast() {
    let mut r = Rig::new();
    let d = Dg6::new(P6, 1, L6, 9).build(&pattern(40));
    let mut padded = d.clone();
    padded.extend_from_slice(&[0; 6]);
    let h = r.rx6_with(&padded, 40, protocol::UDP, csum::NONE);
    let back = r.take_ip();
    assert_eq!(back.len(), 1);
    let (b, bytes) = &back[0];
    assert_eq!(b.buf, h.buf, "the received buffer itself");
    assert_eq!(
        (b.flags, b.l3_off, b.ethertype),
        (flags::ICMP_PORT_UNREACH, 0, ethertype::IPV6)
    );
    assert_eq!(bytes[..], d[..], "window = the received datagram");
    // To a group: every matching socket through one buffer, or nobody
    // and no error (RFC 4443 §2.4 (e)).
    r.rx6(&Dg6::new(P6, 1, ALL_NODES, 9), b"?");
    assert!(r.take_ip().is_empty());
    assert_eq!(r.stat(Stat::NoPortBroadcast), 1);
    r.bind6(1, ANY6, 9, false, true).unwrap();
    r.bind6(2, ANY6, 9, true, true).unwrap();
    r.bind(3, Ipv4Addr::UNSPECIFIED, 9, true).unwrap();
    r.bind6(4, a6(L6), 9, false, true).unwrap();
    let h = r.rx6(&Dg6::new(P6, 1, ALL_NODES, 9), b"all of you");
    let got = r.delivered();
    let mut s: Vec<u32> = got.iter().map(|g| g.0).collect();
    s.sort_unstable();
    assert_eq!(s, [1, 2]);
    assert!(got.iter().all(|g| g.1.buf == h.buf));
    r.finish();
}

/// The ICMPv6 error `ty`/`code` from the peer about a datagram we sent
/// from `local:lport` to [`P6`]:53.
fn error6_about(local: Ipv6Addr, lport: u16, ty: u8, code: u8) -> Vec<u8> {
    let sent = Dg6::new(local, lport, P6, 53).build(&pattern(30));
    icmp6_error(P6, local, ty, code, 0, &sent)
}

#[test]
fn icmpv6_errors_reach_the_connected_socket_with_linuxs_errno() {
    let mut r = Rig::new();
    // Connected while unbound: `::` and an ephemeral port; ipd chose the
    // source the error quotes.
    let c = r.connect6(1, a6(P6), 53, false).unwrap();
    assert_eq!((c.local_addr, c.remote_addr), (ANY6, a6(P6)));
    let lp = c.local_port;
    let cases = [
        (
            icmpv6_type::DEST_UNREACHABLE,
            unreach_code::PORT,
            libc::ECONNREFUSED,
        ),
        (
            icmpv6_type::DEST_UNREACHABLE,
            unreach_code::ADMIN_PROHIBITED,
            libc::EACCES,
        ),
        (
            icmpv6_type::DEST_UNREACHABLE,
            unreach_code::REJECT_ROUTE,
            libc::EACCES,
        ),
        // Hard to a socket doing path MTU discovery (`__udp6_lib_err`).
        (icmpv6_type::PACKET_TOO_BIG, 0, libc::EMSGSIZE),
        (icmpv6_type::PARAMETER_PROBLEM, 0, libc::EPROTO),
    ];
    for (ty, code, _) in cases {
        r.rx_icmp6(&error6_about(L6, lp, ty, code));
    }
    let notes = r.take_ctl();
    let got: Vec<(u32, u32, i32)> = notes.iter().map(|n| (n.op, n.sock, n.errno)).collect();
    let want: Vec<(u32, u32, i32)> = cases.iter().map(|c| (op::SOCK_ERROR, 1, c.2)).collect();
    assert_eq!(got, want);
    assert_eq!((notes[0].remote_addr, notes[0].remote_port), (a6(P6), 53));
    // Soft ones are ignored by default, as Linux does without
    // IPV6_RECVERR.
    for (ty, code) in [
        (icmpv6_type::DEST_UNREACHABLE, unreach_code::NO_ROUTE),
        (icmpv6_type::DEST_UNREACHABLE, unreach_code::ADDRESS),
        (icmpv6_type::DEST_UNREACHABLE, unreach_code::BEYOND_SCOPE),
        (icmpv6_type::TIME_EXCEEDED, 0),
    ] {
        r.rx_icmp6(&error6_about(L6, lp, ty, code));
    }
    assert!(r.take_ctl().is_empty());
    assert_eq!(r.stat(Stat::IcmpSoftIgnored), 4);
    assert_eq!(r.stat(Stat::IcmpReported), 5);
    assert_eq!(r.stat(Stat::Icmp6InErrors), 9);
    r.finish();

    let mut cfg = config();
    cfg.soft_errors = true;
    let mut r = Rig::with(cfg);
    let c = r.connect6(1, a6(P6), 53, false).unwrap();
    r.rx_icmp6(&error6_about(
        L6,
        c.local_port,
        icmpv6_type::DEST_UNREACHABLE,
        0,
    ));
    r.rx_icmp6(&error6_about(
        L6,
        c.local_port,
        icmpv6_type::TIME_EXCEEDED,
        0,
    ));
    let errs: Vec<i32> = r.take_ctl().iter().map(|n| n.errno).collect();
    assert_eq!(errs, [libc::ENETUNREACH, libc::EHOSTUNREACH]);
    r.finish();
}

#[test]
fn an_icmpv6_error_quoting_a_first_fragment_finds_the_socket() {
    let mut r = Rig::new();
    r.bind6(1, a6(L6), 4000, false, false).unwrap();
    r.connect6(1, a6(P6), 53, false).unwrap();
    // The datagram as ipd fragmented it: fixed header naming a fragment
    // header, then UDP, cut short as an error quotes it.
    let whole = Dg6::new(L6, 4000, P6, 53).build(&pattern(1400));
    let frag = |offset: u16| {
        let mut q = whole[..40].to_vec();
        q[6] = next_header::FRAGMENT;
        let mut f = [0u8; 8];
        FragmentHeader {
            next_header: next_header::UDP,
            offset,
            more: true,
            ident: 77,
        }
        .emit(&mut f)
        .unwrap();
        q.extend_from_slice(&f);
        q.extend_from_slice(&whole[40..1000]);
        q
    };
    let err = |q: &[u8]| icmp6_error(P6, L6, icmpv6_type::PACKET_TOO_BIG, 0, 1280, q);
    r.rx_icmp6(&err(&frag(0)));
    let n = r.take_ctl();
    assert_eq!((n.len(), n[0].errno), (1, libc::EMSGSIZE));
    // A later fragment holds no UDP header; a quote cut inside the UDP
    // header, or quoting TCP, names no socket.
    r.rx_icmp6(&err(&frag(100)));
    r.rx_icmp6(&err(&frag(0)[..52]));
    r.rx_icmp6(&err(&whole[..47]));
    let mut tcp = whole.clone();
    tcp[6] = protocol::TCP;
    r.rx_icmp6(&err(&tcp));
    assert_eq!(r.stat(Stat::IcmpMalformed), 4);
    // Informational messages carry nothing for a socket; nor does one
    // quoting a datagram no socket sent, or sent by an unconnected one.
    let echo = icmp6_error(P6, L6, icmpv6_type::ECHO_REPLY, 0, 0, &whole[..48]);
    r.rx_icmp6(&echo);
    r.rx_icmp6(&error6_about(L6, 4001, icmpv6_type::DEST_UNREACHABLE, 4));
    r.bind6(2, ANY6, 4002, false, false).unwrap();
    r.rx_icmp6(&error6_about(L6, 4002, icmpv6_type::DEST_UNREACHABLE, 4));
    assert_eq!(r.stat(Stat::IcmpIgnoredType), 1);
    assert_eq!(r.stat(Stat::IcmpNoSocket), 1);
    assert_eq!(r.stat(Stat::IcmpUnconnected), 1);
    assert!(r.take_ctl().is_empty());
    r.finish();
}

/// Checks that `d` is a valid IPv6+UDP datagram `src`:`sport` ->
/// `dst`:`dport` carrying `payload`, with hop limit `hops`, whose checksum
/// verifies against the pseudo-header over the addresses as written.
fn check6(
    d: &[u8],
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    hops: u8,
    payload: &[u8],
) {
    let ip = Ipv6Header::parse(d).expect("valid IPv6 header");
    assert_eq!(d[0], 0x60, "version 6, traffic class 0");
    assert_eq!((ip.traffic_class, ip.flow_label), (0, 0));
    assert_eq!(usize::from(ip.payload_len), d.len() - 40);
    assert_eq!((ip.next_header, ip.hop_limit), (next_header::UDP, hops));
    assert_eq!((ip.src, ip.dst), (src, dst));
    let udp = UdpHeader::parse(&d[40..]).unwrap();
    assert_eq!((udp.src_port, udp.dst_port), (sport, dport));
    assert_eq!(usize::from(udp.length), 8 + payload.len());
    assert_ne!(udp.checksum, 0);
    assert!(UdpHeader::verify_checksum_v6(&d[40..], src, dst));
    assert_eq!(&d[48..], payload);
}

#[test]
fn sending_over_ipv6_from_any_and_from_a_bound_address() {
    let mut r = Rig::new();
    // Unbound: bound implicitly to `::` (dual-stack), source left to ipd.
    let h = r.send_to(1, a6(P6), 53, b"query");
    let n = r.take_ctl();
    assert_eq!((n[0].op, n[0].local_addr), (op::BOUND, ANY6));
    let lp = n[0].local_port;
    assert!(r.core.binding(1).unwrap().inet6());
    let sent = r.take_ip();
    assert_eq!(sent.len(), 1);
    let (o, d) = &sent[0];
    assert_eq!(o.buf, h.buf, "headers go in front of the payload, no copy");
    assert_eq!(
        (
            o.ethertype,
            o.l3_off,
            o.l4_off,
            o.l4proto,
            o.flags,
            o.sock,
            o.csum
        ),
        (ethertype::IPV6, 0, 40, protocol::UDP, 0, 0, csum::NONE)
    );
    check6(d, Ipv6Addr::UNSPECIFIED, lp, P6, 53, 64, b"query");
    // Bound to one of ours: sent from it; connected: to the peer.
    r.bind6(2, a6(L6B), 7000, false, false).unwrap();
    r.connect6(2, a6(P6B), 9, false).unwrap();
    r.send_to(2, ANY6, 0, b"connected");
    r.send_to(2, mapped(0), 0, b"also connected");
    r.send_to(2, a6(P6), 10, b"sendto");
    // To a multicast group: one hop (Linux IPV6_MULTICAST_HOPS).
    r.send_to(2, a6(ALL_NODES), 11, b"");
    let sent = r.take_ip();
    assert_eq!(sent.len(), 4);
    check6(&sent[0].1, L6B, 7000, P6B, 9, 64, b"connected");
    check6(&sent[1].1, L6B, 7000, P6B, 9, 64, b"also connected");
    check6(&sent[2].1, L6B, 7000, P6, 10, 64, b"sendto");
    check6(&sent[3].1, L6B, 7000, ALL_NODES, 11, 1, b"");
    // The largest payload fits one IPv6 datagram (ipd fragments it).
    let big = pattern(crate::MAX_PAYLOAD);
    r.send_to(2, a6(P6), 12, &big);
    let sent = r.take_ip();
    assert_eq!(sent[0].1.len(), 40 + 8 + crate::MAX_PAYLOAD);
    check6(&sent[0].1, L6B, 7000, P6, 12, 64, &big);
    assert_eq!(r.stat(Stat::OutDatagrams6), 6);
    assert_eq!(r.stat(Stat::OutDatagrams), 6);
    r.finish();
}

#[test]
fn ipv6_bindings_survive_export_and_restore() {
    let mut r = Rig::new();
    r.bind6(1, ANY6, 5000, true, false).unwrap();
    r.bind6(2, a6(L6), 5001, false, false).unwrap();
    r.connect6(3, a6(P6), 53, false).unwrap();
    r.bind6(4, ANY6, 5002, false, false).unwrap();
    r.connect6(4, m(PEER), 53, false).unwrap();
    let saved: Vec<crate::Binding> = r.core.bindings().collect();
    r.finish();

    let mut r = Rig::new();
    let mut recs = saved.clone();
    // V6ONLY with an IPv4 address cannot be; an address no longer ours.
    recs.push(crate::Binding {
        sock: 20,
        local_addr: m(A1),
        local_port: 9,
        flags: bflags::V6ONLY,
        ..Default::default()
    });
    recs.push(crate::Binding {
        sock: 21,
        local_addr: a6(P6),
        local_port: 9,
        ..Default::default()
    });
    assert_eq!(r.core.restore(&recs), 4);
    assert_eq!(r.stat(Stat::RestoreSkipped), 2);
    for b in &saved {
        assert_eq!(r.core.binding(b.sock), Some(*b));
    }
    // They behave as before: V6ONLY still refuses IPv4, the dual-stack
    // socket connected to IPv4 disconnects back to `::`.
    r.rx(&Dg::new(PEER, 1, A1, 5000).build(b"v4"));
    assert_eq!(r.take_ip().len(), 1);
    let c = r.connect6(4, ANY6, 0, false).unwrap();
    assert_eq!((c.local_addr, c.local_port), (ANY6, 5002));
    r.finish();
}
