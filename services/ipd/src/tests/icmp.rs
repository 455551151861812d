//! ICMP: echo, errors sent and received, the rate limit.

use super::*;
use strata_proto::checksum::verify;
use strata_proto::icmp::{icmp_type, time_exceeded_code, unreach_code};
use strata_proto::ipv4::protocol;

/// Checks an echo reply to `req` (a datagram) in `t`.
fn check_reply(t: &Tx, req: &[u8]) {
    assert_eq!(t.eth().dst, PEER_MAC);
    assert_eq!(t.eth().src, OUR_MAC);
    let rq = Ipv4Header::parse(req).unwrap();
    let rhl = rq.header_len as usize;
    let h = t.ip_hdr();
    assert_eq!(h.header_len, 20);
    assert_eq!((h.src, h.dst), (rq.dst, rq.src));
    assert_eq!(
        (h.protocol, h.ttl, h.more_frags, h.frag_offset),
        (1, 64, false, 0)
    );
    assert_eq!(h.total_len as usize, 20 + req.len() - rhl);
    let msg = &t.ip()[20..];
    assert!(verify(msg), "ICMP checksum");
    assert_eq!(msg[0], icmp_type::ECHO_REPLY);
    assert_eq!(msg[1], 0);
    assert_eq!(msg[4..], req[rhl + 4..], "id, seq and data intact");
}

#[test]
fn echo_request_gets_a_byte_exact_reply_in_the_same_buffer() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    let req = Ip::new(protocol::ICMP).build(&echo_msg(8, 0x4242, 7, &pattern(56)));
    let h = r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &req));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    check_reply(&tx[0], &req);
    assert_eq!(tx[0].h.buf, h.buf, "reply reuses the request's buffer");
    assert_eq!(tx[0].bytes.len(), 14 + 84);
    assert_eq!(r.stat(Stat::IcmpInEchoRequests), 1);
    assert_eq!(r.stat(Stat::IcmpOutEchoReplies), 1);

    // With options in the request and Ethernet padding after it.
    let mut ip = Ip::new(protocol::ICMP);
    ip.options = vec![1, 1, 1, 0];
    let req = ip.build(&echo_msg(8, 1, 2, b"hi"));
    let mut f = eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &req);
    f.resize(60, 0xee);
    r.input(&f);
    let tx = r.tx();
    check_reply(&tx[0], &req);
    assert_eq!(tx[0].bytes.len(), 14 + 20 + 10);
    r.finish();
}

#[test]
fn echo_reply_waits_for_arp_like_any_datagram() {
    let mut r = Rig::new();
    let req = Ip::new(protocol::ICMP).build(&echo_msg(8, 1, 1, b"abcdefgh"));
    r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &req));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].arp().target_ip, PEER_IP);
    r.learn(PEER_IP, PEER_MAC);
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    check_reply(&tx[0], &req);
    r.finish();
}

#[test]
fn echo_to_a_broadcast_address_is_ignored() {
    let mut r = Rig::new();
    for dst in [Ipv4Addr::new(10, 0, 0, 255), Ipv4Addr::BROADCAST] {
        let mut ip = Ip::new(protocol::ICMP);
        ip.dst = dst;
        let f = eth(
            MacAddr::BROADCAST,
            PEER_MAC,
            ethertype::IPV4,
            &ip.build(&echo_msg(8, 1, 1, b"x")),
        );
        r.input(&f);
    }
    assert!(r.tx().is_empty());
    assert_eq!(r.stat(Stat::IcmpEchoBroadcastIgnored), 2);
    r.finish();
}

#[test]
fn received_icmp_is_checked_and_counted() {
    let mut r = Rig::new();
    let ip = Ip::new(protocol::ICMP);
    r.input(&ip.frame(&echo_msg(0, 1, 1, b"reply")));
    let mut unreach = vec![3, 3, 0, 0, 0, 0, 0, 0];
    unreach.extend_from_slice(&Ip::new(protocol::UDP).build(&[0; 8]));
    let mut hdr = IcmpHeader::dest_unreachable(3, 0);
    hdr.emit(&mut unreach).unwrap();
    r.input(&ip.frame(&unreach));
    hdr = IcmpHeader::time_exceeded(0);
    hdr.emit(&mut unreach).unwrap();
    r.input(&ip.frame(&unreach));
    hdr.icmp_type = 12;
    hdr.emit(&mut unreach).unwrap();
    r.input(&ip.frame(&unreach));
    r.input(&ip.frame(&echo_msg(13, 1, 1, b"timestamp?")));
    let mut bad = echo_msg(8, 1, 1, b"ping");
    bad[9] ^= 1;
    r.input(&ip.frame(&bad));
    r.input(&ip.frame(&[8, 0, 0]));
    assert!(r.tx().is_empty(), "nothing answers these");
    assert_eq!(r.stat(Stat::IcmpInMsgs), 5);
    assert_eq!(r.stat(Stat::IcmpInEchoReplies), 1);
    assert_eq!(r.stat(Stat::IcmpInDestUnreach), 1);
    assert_eq!(r.stat(Stat::IcmpInTimeExceeded), 1);
    assert_eq!(r.stat(Stat::IcmpInOtherErrors), 1);
    assert_eq!(r.stat(Stat::IcmpInOther), 1);
    assert_eq!(r.stat(Stat::IcmpBadChecksum), 1);
    assert_eq!(r.stat(Stat::IcmpTruncated), 1);
    r.finish();
}

/// Checks that `t` is ICMP error `ty`/`code` from us to the peer quoting
/// `quote` exactly.
fn check_error(t: &Tx, ty: u8, code: u8, quote: &[u8]) {
    let h = t.ip_hdr();
    assert_eq!((h.src, h.dst, h.protocol), (OUR_IP, PEER_IP, 1));
    assert_eq!(h.tos & 0xe0, 0xc0);
    assert!(h.total_len <= 576);
    let msg = &t.ip()[20..];
    assert!(verify(msg));
    assert_eq!((msg[0], msg[1]), (ty, code));
    assert_eq!(msg[4..8], [0; 4]);
    assert_eq!(&msg[8..], quote);
}

#[test]
fn unknown_protocol_gets_protocol_unreachable_quoting_the_datagram() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    let d = Ip::new(99).build(&pattern(100));
    r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &d));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    check_error(&tx[0], 3, unreach_code::PROTOCOL, &d);
    assert_eq!(r.stat(Stat::UnknownProtocol), 1);
    assert_eq!(r.stat(Stat::IcmpOutDestUnreach), 1);

    // A long datagram is quoted up to 576 bytes in all, like Linux.
    let d = Ip::new(99).build(&pattern(1400));
    r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &d));
    let tx = r.tx();
    assert_eq!(tx[0].ip_hdr().total_len, 576);
    check_error(&tx[0], 3, unreach_code::PROTOCOL, &d[..548]);

    // TCP and UDP without their layer attached get the same answer.
    r.input(&Ip::new(protocol::TCP).frame(&pattern(20)));
    r.input(&Ip::new(protocol::UDP).frame(&pattern(8)));
    assert_eq!(r.tx().len(), 2);
    assert_eq!(r.stat(Stat::UpperNotAttached), 2);
    r.finish();
}

#[test]
fn tcp_and_udp_go_up_when_attached() {
    let mut r = Rig::new();
    r.core.set_upper(protocol::TCP, true);
    r.core.set_upper(protocol::UDP, true);
    let mut ip = Ip::new(protocol::TCP);
    ip.options = vec![1, 1, 1, 1];
    let tcp = ip.build(&pattern(40));
    let mut f = eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &tcp);
    f.resize(f.len() + 6, 0);
    r.input(&f);
    let udp = Ip::new(protocol::UDP).build(&pattern(8));
    r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &udp));
    // Broadcast UDP is accepted, broadcast TCP is not.
    let mut ip = Ip::new(protocol::UDP);
    ip.dst = Ipv4Addr::BROADCAST;
    r.input(&eth(
        MacAddr::BROADCAST,
        PEER_MAC,
        ethertype::IPV4,
        &ip.build(&[0; 8]),
    ));
    ip.proto = protocol::TCP;
    r.input(&eth(
        MacAddr::BROADCAST,
        PEER_MAC,
        ethertype::IPV4,
        &ip.build(&[0; 20]),
    ));
    assert_eq!(r.stat(Stat::BroadcastNonUdp), 1);
    let up = r.up();
    assert_eq!(up.len(), 3);
    assert_eq!(up[0].1, tcp, "padding trimmed, window = datagram");
    let h = up[0].0;
    assert_eq!(
        (h.l3_off, h.l4_off, h.l4proto, h.iif),
        (0, 24, protocol::TCP, IFACE)
    );
    assert_eq!(up[1].1, udp);
    assert_eq!(up[1].0.l4_off, 20);
    assert_eq!(r.stat(Stat::Delivered), 3);
    assert!(r.tx().is_empty());
    r.finish();
}

#[test]
fn port_unreachable_through_the_public_entry_point() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    r.core.set_upper(protocol::UDP, true);
    let udp = Ip::new(protocol::UDP).build(&pattern(30));
    r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &udp));
    let h = r.out.up.pop().unwrap();
    // udpd found no socket: the shell asks for port unreachable.
    r.core
        .send_icmp_error(r.now, &mut r.pool, &h, 3, unreach_code::PORT, &mut r.out);
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    check_error(&tx[0], 3, unreach_code::PORT, &udp);
    r.pool.free(&h);
    r.finish();
}

#[test]
fn no_errors_about_errors_fragments_or_broadcasts() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    let ask = |r: &mut Rig, d: &[u8]| {
        let h = r.buf(d);
        r.core
            .send_icmp_error(r.now, &mut r.pool, &h, 3, unreach_code::PORT, &mut r.out);
        r.pool.free(&h);
    };
    // About an ICMP error.
    let mut unreach = vec![0u8; 36];
    IcmpHeader::dest_unreachable(1, 0)
        .emit(&mut unreach)
        .unwrap();
    ask(&mut r, &Ip::new(protocol::ICMP).build(&unreach));
    // About a truncated ICMP message (no type to look at).
    ask(&mut r, &Ip::new(protocol::ICMP).build(&[]));
    // About a non-first fragment.
    let mut ip = Ip::new(protocol::UDP);
    ip.off = 8;
    ask(&mut r, &ip.build(&[0; 8]));
    // About datagrams to broadcast and multicast addresses.
    for dst in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(10, 0, 0, 255),
        Ipv4Addr::new(224, 0, 0, 9),
    ] {
        let mut ip = Ip::new(protocol::UDP);
        ip.dst = dst;
        ask(&mut r, &ip.build(&[0; 8]));
    }
    // About datagrams from addresses that name no single host.
    for src in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(10, 0, 0, 255),
        Ipv4Addr::new(224, 1, 1, 1),
    ] {
        let mut ip = Ip::new(protocol::UDP);
        ip.src = src;
        ask(&mut r, &ip.build(&[0; 8]));
    }
    // Garbage.
    ask(&mut r, &[0x45, 0, 0]);
    assert!(r.tx().is_empty());
    assert_eq!(r.stat(Stat::IcmpOutSuppressed), 10);
    // But an echo request is not an error: errors about it are fine.
    ask(
        &mut r,
        &Ip::new(protocol::ICMP).build(&echo_msg(8, 1, 1, b"")),
    );
    assert_eq!(r.tx().len(), 1);
    // Unknown protocol sent to a link-layer broadcast: no error either.
    let d = Ip::new(99).build(&[0; 8]);
    r.input(&eth(MacAddr::BROADCAST, PEER_MAC, ethertype::IPV4, &d));
    assert!(r.tx().is_empty());
    assert_eq!(r.stat(Stat::IcmpOutSuppressed), 11);
    r.finish();
}

#[test]
fn errors_are_rate_limited_by_a_token_bucket() {
    let mut r = Rig::with_limits(|l| {
        l.icmp_burst = 5;
        l.icmp_rate_per_sec = 1000;
    });
    r.learn(PEER_IP, PEER_MAC);
    let d = Ip::new(99).frame(&[0; 8]);
    for _ in 0..8 {
        r.input(&d);
    }
    assert_eq!(r.tx().len(), 5);
    assert_eq!(r.stat(Stat::IcmpOutRatelimited), 3);
    // One token per millisecond.
    r.now += 1_000_000;
    r.input(&d);
    r.input(&d);
    assert_eq!(r.tx().len(), 1);
    // Idle time refills up to the burst, no more.
    r.now += 10 * S;
    for _ in 0..8 {
        r.input(&d);
    }
    assert_eq!(r.tx().len(), 5);
    // Echo replies are not limited.
    for _ in 0..8 {
        r.input(&Ip::new(protocol::ICMP).frame(&echo_msg(8, 1, 1, b"")));
    }
    assert_eq!(r.tx().len(), 8);
    r.finish();
}

#[test]
fn reassembly_timeout_sends_time_exceeded_only_with_fragment_zero() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    let d = Ip::new(protocol::UDP).build(&pattern(3000));
    let frags = fragment(&d, 1480);
    r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &frags[0]));
    let mut ip = Ip::new(protocol::UDP);
    ip.ident = 99;
    let other = fragment(&ip.build(&pattern(3000)), 1480);
    r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &other[1]));
    assert_eq!(r.core.next_deadline(), Some(r.now + 30 * S));
    assert_eq!(r.advance(30 * S - 1), Some(r.now + 1));
    assert!(r.tx().is_empty());
    r.advance(1);
    // (The peer's entry went STALE meanwhile, so a unicast ARP refresh
    // goes out too.)
    let tx: Vec<Tx> = r
        .tx()
        .into_iter()
        .filter(|t| t.eth().ethertype == ethertype::IPV4)
        .collect();
    assert_eq!(tx.len(), 1);
    check_error(&tx[0], 11, time_exceeded_code::REASSEMBLY, &frags[0][..548]);
    assert_eq!(r.stat(Stat::FragTimeout), 2);
    assert_eq!(r.stat(Stat::IcmpOutTimeExceeded), 1);
    assert_eq!(r.pool.in_use(), 0);
    r.finish();
}

/// An ICMP error `ty`/`code` from `from` about `quoted` (a datagram we
/// sent), in a frame to us.
fn error_frame(from: Ipv4Addr, ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut msg = vec![0u8; 8 + quoted.len()];
    msg[8..].copy_from_slice(quoted);
    IcmpHeader {
        icmp_type: ty,
        code,
        checksum: 0,
        rest: [0; 4],
    }
    .emit(&mut msg)
    .unwrap();
    let mut ip = Ip::new(protocol::ICMP);
    ip.src = from;
    ip.frame(&msg)
}

/// A UDP datagram we sent to the peer, as an error would quote it.
fn our_udp(payload_len: usize) -> Vec<u8> {
    let mut ip = Ip::new(protocol::UDP);
    ip.src = OUR_IP;
    ip.dst = PEER_IP;
    let mut udp = pattern(8 + payload_len);
    udp[4..6].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    ip.build(&udp)
}

#[test]
fn icmp_errors_about_udp_go_up_when_udp_is_attached() {
    let mut r = Rig::new();
    r.core.set_upper(protocol::UDP, true);
    let quoted = our_udp(20);
    let cases = [
        (3, unreach_code::PORT, Stat::IcmpInDestUnreach),
        (3, unreach_code::FRAG_NEEDED, Stat::IcmpInDestUnreach),
        (11, time_exceeded_code::TTL, Stat::IcmpInTimeExceeded),
        (12, 0, Stat::IcmpInOtherErrors),
    ];
    for (ty, code, _) in cases {
        let f = error_frame(PEER_IP, ty, code, &quoted);
        r.input(&f);
        let up = r.up();
        assert_eq!(up.len(), 1, "type {ty} code {code}");
        let (h, bytes) = &up[0];
        assert_eq!(bytes[..], f[14..], "window = the whole outer datagram");
        assert_eq!(
            (h.l3_off, h.l4_off, h.l4proto, h.iif),
            (0, 20, protocol::ICMP, IFACE)
        );
        assert_eq!(bytes[20], ty);
    }
    assert_eq!(r.stat(Stat::IcmpInDestUnreach), 2);
    assert_eq!(r.stat(Stat::IcmpInTimeExceeded), 1);
    assert_eq!(r.stat(Stat::IcmpInOtherErrors), 1);
    assert_eq!(r.stat(Stat::IcmpErrDelivered), 4);
    assert_eq!(r.stat(Stat::IcmpInMsgs), 4);
    assert!(r.tx().is_empty());

    // The shell routes them by the quoted protocol.
    r.input(&error_frame(PEER_IP, 3, unreach_code::PORT, &quoted));
    let h = r.out.up[0];
    assert_eq!(crate::upper_protocol(&r.pool, &h), protocol::UDP);
    r.up();

    // A quote too short to hold the ports, a non-first fragment, a quote
    // of TCP (not attached), an error to a broadcast address, and a
    // source quench: counted, not delivered.
    r.input(&error_frame(PEER_IP, 3, 3, &quoted[..27]));
    let mut frag = quoted.clone();
    frag[6..8].copy_from_slice(&1u16.to_be_bytes());
    r.input(&error_frame(PEER_IP, 3, 3, &frag));
    let mut tcp = quoted.clone();
    tcp[9] = protocol::TCP;
    r.input(&error_frame(PEER_IP, 3, 3, &tcp));
    let mut bcast = error_frame(PEER_IP, 3, 3, &quoted);
    let mut ip = Ip::new(protocol::ICMP);
    ip.dst = Ipv4Addr::new(10, 0, 0, 255);
    bcast = eth(
        MacAddr::BROADCAST,
        PEER_MAC,
        ethertype::IPV4,
        &ip.build(&bcast[34..]),
    );
    r.input(&bcast);
    r.input(&error_frame(PEER_IP, 4, 0, &quoted));
    assert!(r.up().is_empty());
    assert_eq!(r.stat(Stat::IcmpErrDelivered), 5);
    assert_eq!(r.stat(Stat::IcmpInDestUnreach), 3 + 4);
    assert_eq!(r.stat(Stat::IcmpInOtherErrors), 2);
    assert!(r.tx().is_empty());
    r.finish();
}

#[test]
fn icmp_errors_about_udp_are_only_counted_when_udp_is_not_attached() {
    let mut r = Rig::new();
    r.core.set_upper(protocol::TCP, true);
    let quoted = our_udp(20);
    r.input(&error_frame(PEER_IP, 3, unreach_code::PORT, &quoted));
    r.input(&error_frame(PEER_IP, 11, 0, &quoted));
    assert!(r.up().is_empty());
    assert_eq!(r.stat(Stat::IcmpInDestUnreach), 1);
    assert_eq!(r.stat(Stat::IcmpInTimeExceeded), 1);
    assert_eq!(r.stat(Stat::IcmpErrDelivered), 0);
    // TCP is attached: an error quoting TCP goes up, to tcpd.
    let mut tcp = quoted.clone();
    tcp[9] = protocol::TCP;
    r.input(&error_frame(PEER_IP, 3, unreach_code::HOST, &tcp));
    let h = r.out.up[0];
    assert_eq!(crate::upper_protocol(&r.pool, &h), protocol::TCP);
    assert_eq!(r.up().len(), 1);
    assert!(r.tx().is_empty());
    r.finish();
}

#[test]
fn port_unreachable_for_a_local_sender_comes_back_up_as_an_error() {
    // udpd sent to one of our own addresses and found no socket: the
    // port unreachable ipd sends about it loops back to udpd.
    let mut r = Rig::new();
    r.core.set_upper(protocol::UDP, true);
    let mut ip = Ip::new(protocol::UDP);
    ip.src = OUR_IP;
    let mut udp = pattern(12);
    udp[4..6].copy_from_slice(&12u16.to_be_bytes());
    let d = ip.build(&udp);
    r.output(&d);
    let h = r.out.up.pop().unwrap();
    assert_eq!(h.l4proto, protocol::UDP);
    r.core
        .send_icmp_error(r.now, &mut r.pool, &h, 3, unreach_code::PORT, &mut r.out);
    r.pool.free(&h);
    let up = r.up();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].0.l4proto, protocol::ICMP);
    assert_eq!(&up[0].1[28..], &d[..]);
    assert!(r.tx().is_empty());
    r.finish();
}
