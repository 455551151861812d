//! Received datagrams and ICMP errors.

use super::*;
use strata_proto::icmp::{icmp_type, unreach_code};

#[test]
fn datagram_goes_up_with_the_window_and_offsets_sockd_expects() {
    let mut r = Rig::new();
    r.bind(7, Ipv4Addr::UNSPECIFIED, 5353, false).unwrap();
    let d = Dg::new(PEER, 1234, A1, 5353).build(&pattern(100));
    // IP padding after the UDP datagram (UDP length < IP payload) is
    // trimmed off the window.
    let mut padded = d.clone();
    padded.extend_from_slice(&[0xee; 4]);
    let tl = padded.len() as u16;
    padded[2..4].copy_from_slice(&tl.to_be_bytes());
    padded[10..12].fill(0);
    strata_proto::ipv4::fill_checksum(&mut padded[..20]);
    r.rx(&padded);
    let up = r.delivered();
    assert_eq!(up.len(), 1);
    let (sock, h, bytes) = &up[0];
    assert_eq!(*sock, 7);
    assert_eq!(bytes[20..], d[20..], "window ends at the UDP length");
    assert_eq!(bytes.len(), d.len());
    assert_eq!(
        (h.l3_off, h.l4_off, h.l4proto, h.flags),
        (0, 20, protocol::UDP, 0)
    );
    assert_eq!(r.stat(Stat::Delivered), 1);
    assert_eq!(r.stat(Stat::InDatagrams), 1);
    r.finish();
}

#[test]
fn demux_prefers_connected_then_specific_then_any() {
    let mut r = Rig::new();
    let any = Ipv4Addr::UNSPECIFIED;
    r.bind(1, any, 5000, true).unwrap();
    r.bind(2, A1, 5000, true).unwrap();
    r.bind(3, A1, 5000, true).unwrap();
    r.connect(3, PEER, 777).unwrap();
    r.bind(4, any, 5000, true).unwrap();
    let to = |r: &mut Rig, src: Ipv4Addr, sport: u16, dst: Ipv4Addr| {
        r.rx(&Dg::new(src, sport, dst, 5000).build(b"x"));
        let d = r.delivered();
        assert_eq!(d.len(), 1);
        d[0].0
    };
    // The connected socket's exact peer.
    assert_eq!(to(&mut r, PEER, 777, A1), 3);
    // Same peer, other port: not the connected one; the specific address.
    assert_eq!(to(&mut r, PEER, 778, A1), 2);
    // Another of our addresses: only the any-bound sockets match; the
    // newest of the two wins (Linux adds to the head of its chains).
    assert_eq!(to(&mut r, PEER, 777, A2), 4);
    r.close(4);
    assert_eq!(to(&mut r, PEER, 777, A2), 1);
    r.close(2);
    assert_eq!(to(&mut r, PEER_B, 1, A1), 1);
    r.finish();
}

#[test]
fn checksums_bad_zero_and_trusted() {
    let mut r = Rig::new();
    r.bind(1, Ipv4Addr::UNSPECIFIED, 9, false).unwrap();
    let good = Dg::new(PEER, 1, A1, 9).build(b"checksummed");
    let mut bad = good.clone();
    bad[30] ^= 0x01;
    r.rx(&bad);
    assert!(r.delivered().is_empty());
    assert!(
        r.take_ip().is_empty(),
        "no port unreachable for a bad checksum"
    );
    assert_eq!(r.stat(Stat::UdpBadChecksum), 1);
    // A zero checksum means none was computed: accepted as it is.
    let mut zero = bad.clone();
    zero[26..28].fill(0);
    r.rx(&zero);
    assert_eq!(r.delivered().len(), 1);
    assert_eq!(r.stat(Stat::CsumZero), 1);
    // Looped back with the checksum still to fill (PARTIAL) or verified by
    // the device: trusted.
    r.rx_with(&bad, protocol::UDP, csum::PARTIAL);
    r.rx_with(&bad, protocol::UDP, csum::VERIFIED);
    assert_eq!(r.delivered().len(), 2);
    assert_eq!(r.stat(Stat::CsumTrusted), 2);
    r.rx(&good);
    assert_eq!(r.delivered().len(), 1);
    assert_eq!(r.stat(Stat::UdpBadChecksum), 1);
    r.finish();
}

#[test]
fn malformed_datagrams_are_dropped_and_counted() {
    let mut r = Rig::new();
    r.bind(1, Ipv4Addr::UNSPECIFIED, 9, false).unwrap();
    let good = Dg::new(PEER, 1, A1, 9).build(b"payload!");
    let with_ip_len = |d: &[u8], n: usize| {
        let mut d = d[..n].to_vec();
        d[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        d[10..12].fill(0);
        strata_proto::ipv4::fill_checksum(&mut d[..20]);
        d
    };
    // Fewer than 8 bytes after the IP header.
    r.rx(&with_ip_len(&good, 27));
    // UDP length below 8, and beyond the IP payload.
    let mut short = good.clone();
    short[24..26].copy_from_slice(&7u16.to_be_bytes());
    r.rx(&short);
    let mut long = good.clone();
    long[24..26].copy_from_slice(&17u16.to_be_bytes());
    r.rx(&long);
    // A broken IP header, a fragment, and a protocol mismatch.
    let mut badip = good.clone();
    badip[10] ^= 1;
    r.rx(&badip);
    r.rx(&[0x45, 0, 0]);
    let mut frag = good.clone();
    frag[6] = 0x20;
    frag[10..12].fill(0);
    strata_proto::ipv4::fill_checksum(&mut frag[..20]);
    r.rx(&frag);
    r.rx_with(&good, protocol::TCP, csum::NONE);
    let mut tcp = good.clone();
    tcp[9] = protocol::TCP;
    tcp[10..12].fill(0);
    strata_proto::ipv4::fill_checksum(&mut tcp[..20]);
    r.rx(&tcp);
    // A handle whose window lies outside its buffer, and a stale one.
    let mut h = r.buf(&good);
    h.l4proto = protocol::UDP;
    h.data_len = 1 << 20;
    r.core.from_ip(&mut r.pool, h, &mut r.out);
    let h = r.buf(&good);
    r.pool.free(&h);
    r.core.from_ip(
        &mut r.pool,
        Handle {
            l4proto: protocol::UDP,
            ..h
        },
        &mut r.out,
    );
    assert!(r.delivered().is_empty());
    assert!(r.take_ip().is_empty());
    assert_eq!(r.stat(Stat::UdpTruncated), 1);
    assert_eq!(r.stat(Stat::UdpBadLength), 1);
    assert_eq!(r.stat(Stat::UdpLengthExceedsPacket), 1);
    assert_eq!(r.stat(Stat::IpMalformed), 2);
    assert_eq!(r.stat(Stat::IpFragment), 1);
    assert_eq!(r.stat(Stat::WrongProtocol), 2);
    assert_eq!(r.stat(Stat::BadWindow), 1);
    assert_eq!(r.stat(Stat::StaleHandle), 1);
    r.finish();
}

#[test]
fn closed_port_goes_back_to_ipd_for_port_unreachable() {
    let mut r = Rig::new();
    r.bind(1, A2, 9, false).unwrap();
    let d = Dg::new(PEER, 1, A1, 9).build(&pattern(40));
    let h = r.rx(&d);
    let back = r.take_ip();
    assert_eq!(back.len(), 1);
    let (b, bytes) = &back[0];
    assert_eq!(b.buf, h.buf, "the received buffer itself");
    assert_eq!(b.flags, flags::ICMP_PORT_UNREACH);
    assert_eq!(b.l3_off, 0);
    assert_eq!(bytes[..], d[..], "window = the received datagram");
    assert_eq!(r.stat(Stat::NoPort), 1);
    // Not for broadcasts or multicasts: dropped silently.
    for dst in [BCAST, Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 251)] {
        r.rx(&Dg::new(PEER, 1, dst, 9).build(b"?"));
    }
    assert!(r.take_ip().is_empty());
    assert_eq!(r.stat(Stat::NoPortBroadcast), 3);
    r.finish();
}

#[test]
fn broadcast_reaches_every_matching_socket_through_one_buffer() {
    let mut r = Rig::new();
    let any = Ipv4Addr::UNSPECIFIED;
    r.bind(1, any, 67, true).unwrap();
    r.bind(2, any, 67, true).unwrap();
    r.bind(3, BCAST, 67, true).unwrap();
    // Bound to a unicast address: does not get broadcasts (Linux).
    r.bind(4, A1, 67, true).unwrap();
    // Connected elsewhere: does not match.
    r.bind(5, any, 67, true).unwrap();
    r.connect(5, PEER_B, 68).unwrap();
    let h = r.rx(&Dg::new(PEER, 68, BCAST, 67).build(b"dhcp?"));
    let got = r.delivered();
    let mut socks: Vec<u32> = got.iter().map(|g| g.0).collect();
    socks.sort_unstable();
    assert_eq!(socks, [1, 2, 3]);
    assert!(got.iter().all(|g| g.1.buf == h.buf && g.2 == got[0].2));
    assert_eq!(r.stat(Stat::Delivered), 3);
    // The limited broadcast: only the any-bound sockets.
    r.rx(&Dg::new(PEER, 68, Ipv4Addr::BROADCAST, 67).build(b"dhcp?"));
    assert_eq!(r.delivered().len(), 2);
    assert_eq!(r.stat(Stat::InBroadcast), 2);
    r.finish();
}

/// The ICMP error `ty`/`code` from the peer about a datagram we sent from
/// `local:lport` to the peer's port 53.
fn error_about(local: u32, lport: u16, ty: u8, code: u8) -> Vec<u8> {
    let sent = Dg::new(Ipv4Addr::from(local), lport, PEER, 53).build(&pattern(30));
    icmp_error(PEER, Ipv4Addr::from(local), ty, code, &sent)
}

#[test]
fn port_unreachable_for_a_connected_socket_becomes_econnrefused() {
    let mut r = Rig::new();
    let c = r.connect(1, PEER, 53).unwrap();
    let e = error_about(v4(c.local_addr), c.local_port, 3, unreach_code::PORT);
    r.rx_with(&e, protocol::ICMP, csum::NONE);
    let notes = r.take_ctl();
    assert_eq!(notes.len(), 1);
    let n = notes[0];
    assert_eq!(
        (n.op, n.sock, n.errno),
        (op::SOCK_ERROR, 1, libc::ECONNREFUSED)
    );
    assert_eq!((n.local_addr, n.local_port), (c.local_addr, c.local_port));
    assert_eq!((n.remote_addr, n.remote_port), (m(PEER), 53));
    assert_eq!(r.stat(Stat::IcmpReported), 1);
    // Protocol unreachable and parameter problem are hard errors too.
    let e = error_about(v4(c.local_addr), c.local_port, 3, unreach_code::PROTOCOL);
    r.rx_with(&e, protocol::ICMP, csum::NONE);
    let e = error_about(
        v4(c.local_addr),
        c.local_port,
        icmp_type::PARAMETER_PROBLEM,
        0,
    );
    r.rx_with(&e, protocol::ICMP, csum::NONE);
    let errs: Vec<i32> = r.take_ctl().iter().map(|m| m.errno).collect();
    assert_eq!(errs, [libc::ENOPROTOOPT, libc::EPROTO]);
    r.finish();
}

#[test]
fn icmp_errors_that_reach_no_connected_socket_are_ignored() {
    let mut r = Rig::new();
    // Unconnected sockets do not hear of errors (no IP_RECVERR).
    r.bind(1, Ipv4Addr::UNSPECIFIED, 4000, false).unwrap();
    let e = error_about(u(A1), 4000, 3, unreach_code::PORT);
    r.rx_with(&e, protocol::ICMP, csum::NONE);
    assert_eq!(r.stat(Stat::IcmpUnconnected), 1);
    // No socket sent it.
    let e = error_about(u(A1), 4001, 3, unreach_code::PORT);
    r.rx_with(&e, protocol::ICMP, csum::NONE);
    assert_eq!(r.stat(Stat::IcmpNoSocket), 1);
    // A connected socket, but another peer port in the quote.
    let c = r.connect(2, PEER, 54).unwrap();
    let e = error_about(v4(c.local_addr), c.local_port, 3, unreach_code::PORT);
    r.rx_with(&e, protocol::ICMP, csum::NONE);
    assert_eq!(r.stat(Stat::IcmpNoSocket), 2);
    // Soft errors for a connected socket: ignored by default, as Linux.
    let c = r.connect(3, PEER, 53).unwrap();
    for (ty, code) in [
        (3, unreach_code::NET),
        (3, unreach_code::HOST),
        (3, unreach_code::FRAG_NEEDED),
        (icmp_type::TIME_EXCEEDED, 0),
    ] {
        let e = error_about(v4(c.local_addr), c.local_port, ty, code);
        r.rx_with(&e, protocol::ICMP, csum::NONE);
    }
    assert_eq!(r.stat(Stat::IcmpSoftIgnored), 4);
    // Malformed: a quote too short for the ports, not UDP, bad checksum,
    // and a type that carries nothing for a socket.
    let good = error_about(v4(c.local_addr), c.local_port, 3, 3);
    let mut short = good[..20 + 8 + 27].to_vec();
    short[2..4].copy_from_slice(&55u16.to_be_bytes());
    short[10..12].fill(0);
    strata_proto::ipv4::fill_checksum(&mut short[..20]);
    let sum = strata_proto::checksum::checksum(&{
        let mut m = short[20..].to_vec();
        m[2..4].fill(0);
        m
    });
    short[22..24].copy_from_slice(&sum.to_be_bytes());
    r.rx_with(&short, protocol::ICMP, csum::NONE);
    let quoted_tcp = {
        let mut q = Dg::new(Ipv4Addr::from(v4(c.local_addr)), c.local_port, PEER, 53).build(b"");
        q[9] = protocol::TCP;
        icmp_error(PEER, A1, 3, 3, &q)
    };
    r.rx_with(&quoted_tcp, protocol::ICMP, csum::NONE);
    let mut badsum = good.clone();
    badsum[22] ^= 1;
    r.rx_with(&badsum, protocol::ICMP, csum::NONE);
    let echo = icmp_error(PEER, A1, icmp_type::ECHO_REPLY, 0, &[0; 28]);
    r.rx_with(&echo, protocol::ICMP, csum::NONE);
    assert_eq!(r.stat(Stat::IcmpMalformed), 3);
    assert_eq!(r.stat(Stat::IcmpIgnoredType), 1);
    assert!(r.take_ctl().is_empty());
    assert_eq!(r.stat(Stat::IcmpInErrors), 11);
    r.finish();
}

#[test]
fn soft_errors_are_reported_when_configured() {
    let mut cfg = config();
    cfg.soft_errors = true;
    let mut r = Rig::with(cfg);
    let c = r.connect(1, PEER, 53).unwrap();
    for (ty, code) in [
        (3, unreach_code::NET),
        (3, unreach_code::HOST),
        (3, unreach_code::FRAG_NEEDED),
        (icmp_type::TIME_EXCEEDED, 0),
    ] {
        let e = error_about(v4(c.local_addr), c.local_port, ty, code);
        r.rx_with(&e, protocol::ICMP, csum::NONE);
    }
    let errs: Vec<i32> = r.take_ctl().iter().map(|m| m.errno).collect();
    assert_eq!(
        errs,
        [
            libc::ENETUNREACH,
            libc::EHOSTUNREACH,
            libc::EMSGSIZE,
            libc::EHOSTUNREACH
        ]
    );
    // Still nothing for unconnected sockets.
    r.bind(2, Ipv4Addr::UNSPECIFIED, 4000, false).unwrap();
    let e = error_about(u(A1), 4000, 3, unreach_code::HOST);
    r.rx_with(&e, protocol::ICMP, csum::NONE);
    assert!(r.take_ctl().is_empty());
    r.finish();
}
