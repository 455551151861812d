//! Router mode: forwarding between interfaces (RFC 1812) and the ICMP
//! errors Linux sends when it cannot forward.

use super::*;
use strata_ipc::handle::flags::FORWARDED;
use strata_proto::arp::OP_REPLY;
use strata_proto::icmp::{icmp_type, time_exceeded_code, unreach_code};
use strata_proto::ipv4::protocol;

/// The second interface: 192.168.1.1/24 with MTU 1000.
const IF2: u8 = 2;
const IF2_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 2, 1]);
const IF2_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const IF2_MTU: u16 = 1000;
/// A host behind the second interface.
const FAR_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 7);
const FAR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 2, 7]);

/// The default configuration plus the second interface, forwarding on.
fn router_config() -> IpConfig {
    let mut cfg = config();
    cfg.ifaces.push(IfaceConfig {
        index: IF2,
        mac: IF2_MAC,
        addrs: vec![(IF2_IP, 24)],
        mtu: IF2_MTU,
        addrs6: vec![],
        autoconf: false,
    });
    cfg.limits.forwarding = true;
    cfg
}

fn router() -> Rig {
    Rig::with(router_config())
}

/// Hands `frame` to the core as arriving on interface `iif`.
fn input_on(r: &mut Rig, iif: u8, frame: &[u8]) -> Handle {
    let mut h = r.buf(frame);
    h.iif = iif;
    r.core.input(r.now, &mut r.pool, h, &mut r.out);
    h
}

/// Teaches the core the far host's MAC on the second interface.
fn learn_far(r: &mut Rig) {
    let reply = ArpPacket {
        op: OP_REPLY,
        sender_mac: FAR_MAC,
        sender_ip: FAR_IP,
        target_mac: IF2_MAC,
        target_ip: IF2_IP,
    };
    input_on(r, IF2, &arp_frame(IF2_MAC, &reply));
}

/// A datagram from the peer (on the first interface) to the far host.
fn to_far(proto: u8) -> Ip {
    let mut ip = Ip::new(proto);
    ip.dst = FAR_IP;
    ip
}

/// Checks that `t` is ICMP error `ty`/`code` from our first address to
/// the peer, quoting the start of `orig` exactly, and returns the 4 bytes
/// after its checksum.
fn check_error(t: &Tx, ty: u8, code: u8, orig: &[u8]) -> [u8; 4] {
    assert_eq!(t.eth().dst, PEER_MAC);
    assert_eq!(t.h.oif, IFACE);
    assert_eq!(t.h.flags & FORWARDED, 0, "an error ipd makes is its own");
    let h = t.ip_hdr();
    assert_eq!(
        (h.src, h.dst, h.protocol),
        (OUR_IP, PEER_IP, protocol::ICMP)
    );
    let msg = &t.ip()[20..];
    assert!(strata_proto::checksum::verify(msg), "ICMP checksum");
    assert_eq!((msg[0], msg[1]), (ty, code));
    let quote = &msg[8..];
    let n = quote.len().min(orig.len());
    assert!(n >= 28, "quotes the header and 8 bytes");
    assert_eq!(quote[..n], orig[..n], "quote is the datagram as it came");
    [msg[4], msg[5], msg[6], msg[7]]
}

#[test]
fn forwarding_off_drops_what_is_not_ours_as_before() {
    let mut r = Rig::with({
        let mut c = router_config();
        c.limits.forwarding = false;
        c
    });
    learn_far(&mut r);
    r.tx();
    r.input(&to_far(protocol::UDP).frame(&[0; 8]));
    assert!(r.out.tx.is_empty());
    assert_eq!(r.stat(Stat::NotForUs), 1);
    assert_eq!(r.stat(Stat::Forwarded), 0);
    r.finish();
}

#[test]
fn forwarded_in_the_same_buffer_with_ttl_decremented_and_flags_set() {
    let mut r = router();
    r.core.set_upper(protocol::UDP, true);
    r.core.set_upper(protocol::TCP, true);
    learn_far(&mut r);
    r.tx();
    for proto in [protocol::UDP, protocol::TCP, protocol::ICMP, 99] {
        let d = to_far(proto).build(&pattern(300));
        let mut f = eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &d);
        // Ethernet padding must not travel on.
        f.extend_from_slice(&[0xee; 4]);
        let h = r.input(&f);
        assert!(r.out.up.is_empty(), "nothing for the upper layers");
        let tx = r.tx();
        assert_eq!(tx.len(), 1);
        let t = &tx[0];
        assert_eq!((t.h.buf, t.h.data_off), (h.buf, h.data_off), "no copy");
        assert_eq!(t.bytes.len(), 14 + d.len());
        assert_eq!(t.eth().dst, FAR_MAC);
        assert_eq!(t.eth().src, IF2_MAC);
        assert_eq!(t.eth().ethertype, ethertype::IPV4);
        assert_eq!((t.h.iif, t.h.oif), (IFACE, IF2));
        assert_ne!(t.h.flags & FORWARDED, 0);
        assert_eq!((t.h.l2_off, t.h.l3_off, t.h.l4_off), (0, 14, 34));
        assert_eq!(t.h.nexthop, u32::from(FAR_IP));
        // `ip_hdr` parses, which checks the header checksum.
        let ip = t.ip_hdr();
        assert_eq!(ip.ttl, 63);
        assert_eq!((ip.src, ip.dst), (PEER_IP, FAR_IP));
        let mut want = d.clone();
        want[8] = 63;
        want[10..12].copy_from_slice(&t.ip()[10..12]);
        assert_eq!(t.ip(), &want[..], "only TTL and checksum change");
    }
    assert_eq!(r.stat(Stat::Forwarded), 4);
    assert_eq!(r.stat(Stat::Delivered), 0);

    // The other way, with options kept and a TTL of 2 still enough.
    let mut back = Ip::new(protocol::UDP);
    back.src = FAR_IP;
    back.dst = PEER_IP;
    back.ttl = 2;
    back.options = vec![1, 1, 1, 0];
    let d = back.build(&[7; 20]);
    input_on(&mut r, IF2, &eth(IF2_MAC, FAR_MAC, ethertype::IPV4, &d));
    let tx = r.tx();
    assert_eq!(tx[0].arp().target_ip, PEER_IP, "resolves the peer first");
    r.learn(PEER_IP, PEER_MAC);
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!((tx[0].eth().dst, tx[0].eth().src), (PEER_MAC, OUR_MAC));
    assert_eq!((tx[0].h.iif, tx[0].h.oif), (IF2, IFACE));
    assert_ne!(tx[0].h.flags & FORWARDED, 0);
    assert_eq!(tx[0].ip_hdr().ttl, 1);
    assert_eq!(tx[0].ip()[20..24], [1, 1, 1, 0]);
    r.finish();
}

#[test]
fn locally_originated_datagrams_never_carry_the_flag() {
    let mut r = router();
    learn_far(&mut r);
    r.tx();
    let mut ip = Ip::new(protocol::UDP);
    ip.src = OUR_IP;
    ip.dst = FAR_IP;
    let mut h = r.buf(&ip.build(&[0; 8]));
    h.flags = FORWARDED;
    r.core.output(r.now, &mut r.pool, h, &mut r.out);
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].h.flags & FORWARDED, 0);
    assert_eq!(tx[0].ip_hdr().ttl, 64);
    assert_eq!(r.stat(Stat::Forwarded), 0);
    r.finish();
}

#[test]
fn forwarding_waits_for_the_next_hop_like_any_datagram() {
    let mut r = router();
    // Through the gateway of the default route, on the first interface.
    let mut ip = Ip::new(protocol::UDP);
    ip.src = FAR_IP;
    ip.dst = Ipv4Addr::new(8, 8, 8, 8);
    let d = ip.build(&[1; 16]);
    input_on(&mut r, IF2, &eth(IF2_MAC, FAR_MAC, ethertype::IPV4, &d));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].arp().target_ip, GW_IP);
    assert_eq!(tx[0].h.oif, IFACE);
    r.learn(GW_IP, GW_MAC);
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].eth().dst, GW_MAC);
    assert_eq!(tx[0].ip_hdr().dst, ip.dst, "destination unchanged");
    assert_eq!(tx[0].ip_hdr().ttl, 63);
    assert_eq!(tx[0].h.nexthop, u32::from(GW_IP));
    assert_ne!(tx[0].h.flags & FORWARDED, 0);
    assert_eq!(tx[0].h.iif, IF2);
    r.finish();
}

#[test]
fn ttl_running_out_gets_time_exceeded_from_the_incoming_side() {
    let mut r = router();
    r.learn(PEER_IP, PEER_MAC);
    learn_far(&mut r);
    r.tx();
    let mut ip = to_far(protocol::UDP);
    ip.ttl = 1;
    let d = ip.build(&pattern(40));
    r.input(&ip.frame(&pattern(40)));
    let tx = r.tx();
    assert_eq!(tx.len(), 1, "the error only; nothing forwarded");
    let rest = check_error(
        &tx[0],
        icmp_type::TIME_EXCEEDED,
        time_exceeded_code::TTL,
        &d,
    );
    assert_eq!(rest, [0; 4]);
    assert_eq!(r.stat(Stat::FwdTtlExceeded), 1);
    assert_eq!(r.stat(Stat::IcmpOutTimeExceeded), 1);
    assert_eq!(r.stat(Stat::Forwarded), 0);
    r.finish();
}

#[test]
fn no_route_gets_net_unreachable() {
    let mut cfg = router_config();
    cfg.routes.clear();
    let mut r = Rig::with(cfg);
    r.learn(PEER_IP, PEER_MAC);
    r.tx();
    let mut ip = Ip::new(protocol::TCP);
    ip.dst = Ipv4Addr::new(8, 8, 8, 8);
    // Routing comes first: a TTL of 1 does not change the answer.
    ip.ttl = 1;
    let d = ip.build(&pattern(20));
    r.input(&ip.frame(&pattern(20)));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    check_error(&tx[0], icmp_type::DEST_UNREACHABLE, unreach_code::NET, &d);
    assert_eq!(r.stat(Stat::FwdNoRoute), 1);
    assert_eq!(r.stat(Stat::FwdTtlExceeded), 0);
    assert_eq!(r.stat(Stat::IcmpOutDestUnreach), 1);
    r.finish();
}

#[test]
fn too_big_with_df_gets_fragmentation_needed_with_the_mtu() {
    let mut r = router();
    r.learn(PEER_IP, PEER_MAC);
    learn_far(&mut r);
    r.tx();
    let mut ip = to_far(protocol::UDP);
    ip.df = true;
    let payload = pattern(IF2_MTU as usize - 20 + 1);
    let d = ip.build(&payload);
    r.input(&ip.frame(&payload));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    let rest = check_error(
        &tx[0],
        icmp_type::DEST_UNREACHABLE,
        unreach_code::FRAG_NEEDED,
        &d,
    );
    assert_eq!(rest, [0, 0, (IF2_MTU >> 8) as u8, IF2_MTU as u8]);
    assert_eq!(tx[0].ip_hdr().total_len, 576, "quote capped at 576 bytes");
    assert_eq!(r.stat(Stat::FwdFragNeeded), 1);
    assert_eq!(r.stat(Stat::DfTooBig), 0);

    // Exactly the MTU fits, DF or not.
    let payload = pattern(IF2_MTU as usize - 20);
    r.input(&ip.frame(&payload));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].eth().dst, FAR_MAC);
    assert_eq!(tx[0].ip_hdr().total_len, IF2_MTU);
    assert_eq!(r.stat(Stat::Forwarded), 1);
    r.finish();
}

#[test]
fn too_big_without_df_is_fragmented_and_every_fragment_marked() {
    let mut r = router();
    learn_far(&mut r);
    r.tx();
    let ip = to_far(protocol::UDP);
    let payload = pattern(2500);
    let d = ip.build(&payload);
    r.input(&ip.frame(&payload));
    let tx = r.tx();
    assert_eq!(tx.len(), 3);
    for t in &tx {
        assert!(t.ip().len() <= IF2_MTU as usize);
        assert_eq!(t.eth().dst, FAR_MAC);
        assert_ne!(t.h.flags & FORWARDED, 0);
        assert_eq!((t.h.iif, t.h.oif), (IFACE, IF2));
        assert_eq!(t.ip_hdr().ttl, 63);
    }
    let frags: Vec<&[u8]> = tx.iter().map(|t| t.ip()).collect();
    let mut want = d.clone();
    want[8] = 63;
    fill_checksum(&mut want);
    assert_eq!(reassemble(&frags), want);
    assert_eq!(r.stat(Stat::Forwarded), 1);
    assert_eq!(r.stat(Stat::FragOutDatagrams), 1);
    r.finish();
}

#[test]
fn fragments_pass_through_unreassembled() {
    let mut r = router();
    learn_far(&mut r);
    r.tx();
    let d = to_far(protocol::UDP).build(&pattern(64));
    for f in fragment(&d, 32) {
        r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &f));
        let tx = r.tx();
        assert_eq!(tx.len(), 1);
        let mut want = f.clone();
        want[8] -= 1;
        fill_checksum(&mut want);
        assert_eq!(tx[0].ip(), &want[..]);
    }
    assert_eq!(r.stat(Stat::FragReceived), 0);
    assert_eq!(r.stat(Stat::Forwarded), 2);
    r.finish();
}

#[test]
fn next_hop_that_never_answers_gets_host_unreachable() {
    let mut r = router();
    r.learn(PEER_IP, PEER_MAC);
    r.tx();
    let ip = to_far(protocol::UDP);
    let d = ip.build(&[5; 12]);
    r.input(&ip.frame(&[5; 12]));
    // A datagram of our own waits for the same neighbour.
    let mut mine = Ip::new(protocol::UDP);
    mine.src = IF2_IP;
    mine.dst = FAR_IP;
    r.output(&mine.build(&[6; 12]));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].arp().target_ip, FAR_IP);
    assert_eq!(r.stat(Stat::Forwarded), 1);
    r.advance(S);
    r.advance(S);
    assert_eq!(r.tx().len(), 2, "two more ARP requests");
    r.advance(S);
    let tx = r.tx();
    assert_eq!(tx.len(), 1, "one error, for the forwarded datagram only");
    // The datagram had been forwarded, so its TTL was already one less.
    let mut quoted = d.clone();
    quoted[8] = 63;
    fill_checksum(&mut quoted);
    check_error(
        &tx[0],
        icmp_type::DEST_UNREACHABLE,
        unreach_code::HOST,
        &quoted,
    );
    assert_eq!(r.stat(Stat::NeighFailed), 1);
    assert_eq!(r.stat(Stat::FwdNeighFailed), 1);
    assert_eq!(r.stat(Stat::ArpFailed), 1);
    r.finish();
}

#[test]
fn what_must_never_be_forwarded_is_dropped_silently() {
    let mut r = router();
    r.core.set_upper(protocol::UDP, true);
    r.learn(PEER_IP, PEER_MAC);
    learn_far(&mut r);
    r.tx();
    let check = |r: &mut Rig, frame: Vec<u8>, why: Stat| {
        let before = r.stat(why);
        r.input(&frame);
        assert_eq!(r.stat(why), before + 1, "{}", why.name());
        assert!(r.out.tx.is_empty(), "{}: nothing sent", why.name());
        r.up();
    };
    for src in [
        "0.0.0.0",
        "127.0.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "10.0.0.255",
        "192.168.1.255",
        "10.0.0.1",
    ] {
        let mut ip = to_far(protocol::UDP);
        ip.src = src.parse().unwrap();
        check(&mut r, ip.frame(&[0; 8]), Stat::MartianSource);
    }
    for dst in [
        "224.1.2.3",
        "239.255.255.250",
        "127.0.0.1",
        "0.1.2.3",
        "240.0.0.1",
    ] {
        let mut ip = Ip::new(protocol::UDP);
        ip.dst = dst.parse().unwrap();
        check(&mut r, ip.frame(&[0; 8]), Stat::FwdMartianDest);
    }
    // The limited broadcast and our subnets' broadcasts are ours.
    for dst in ["255.255.255.255", "192.168.1.255"] {
        let mut ip = Ip::new(protocol::UDP);
        ip.dst = dst.parse().unwrap();
        let f = eth(
            MacAddr::BROADCAST,
            PEER_MAC,
            ethertype::IPV4,
            &ip.build(&[0; 8]),
        );
        check(&mut r, f, Stat::Delivered);
    }
    let unicast = to_far(protocol::UDP).build(&[0; 8]);
    for mac in [MacAddr::BROADCAST, MacAddr([0x01, 0, 0x5e, 0, 0, 1])] {
        check(
            &mut r,
            eth(mac, PEER_MAC, ethertype::IPV4, &unicast),
            Stat::FwdL2Broadcast,
        );
    }
    for kind in [131u8, 137] {
        let mut ip = to_far(protocol::UDP);
        ip.options = vec![kind, 7, 4, 192, 168, 1, 9, 0];
        check(&mut r, ip.frame(&[0; 8]), Stat::FwdSourceRoute);
    }
    assert_eq!(r.stat(Stat::Forwarded), 0);
    assert_eq!(r.stat(Stat::IcmpOutDestUnreach), 0);
    r.finish();
}

#[test]
fn no_icmp_error_about_an_error_a_later_fragment_or_over_the_limit() {
    let mut r = router();
    r.learn(PEER_IP, PEER_MAC);
    r.tx();
    // An ICMP error with TTL 1.
    let mut err = vec![3, 1, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&to_far(protocol::UDP).build(&[0; 8]));
    IcmpHeader::dest_unreachable(1, 0).emit(&mut err).unwrap();
    let mut ip = to_far(protocol::ICMP);
    ip.ttl = 1;
    r.input(&ip.frame(&err));
    // A later fragment with TTL 1.
    let mut frag = to_far(protocol::UDP);
    frag.ttl = 1;
    frag.off = 8;
    r.input(&frag.frame(&[0; 16]));
    assert!(r.tx().is_empty());
    assert_eq!(r.stat(Stat::IcmpOutSuppressed), 2);
    assert_eq!(r.stat(Stat::FwdTtlExceeded), 2);
    // An echo request is not an error: it gets one.
    let mut ping = to_far(protocol::ICMP);
    ping.ttl = 1;
    r.input(&ping.frame(&echo_msg(8, 1, 1, b"trace")));
    assert_eq!(r.tx().len(), 1);
    assert_eq!(r.stat(Stat::IcmpOutTimeExceeded), 1);
    r.finish();

    // The rate limit holds for forwarding errors too.
    let mut r = Rig::with({
        let mut c = router_config();
        c.limits.icmp_burst = 2;
        c
    });
    r.learn(PEER_IP, PEER_MAC);
    r.tx();
    let mut ip = to_far(protocol::UDP);
    ip.ttl = 1;
    for _ in 0..5 {
        r.input(&ip.frame(&[0; 8]));
    }
    assert_eq!(r.tx().len(), 2);
    assert_eq!(r.stat(Stat::IcmpOutRatelimited), 3);
    assert_eq!(r.stat(Stat::FwdTtlExceeded), 5);
    r.finish();
}

#[test]
fn back_out_the_way_it_came_without_a_redirect() {
    let mut r = router();
    r.learn(PEER_IP, PEER_MAC);
    let other = Ipv4Addr::new(10, 0, 0, 9);
    r.learn(other, MacAddr([2, 0, 0, 0, 0, 9]));
    r.tx();
    let mut ip = Ip::new(protocol::UDP);
    ip.dst = other;
    r.input(&ip.frame(&[0; 8]));
    let tx = r.tx();
    assert_eq!(tx.len(), 1, "the datagram, and no redirect");
    assert_eq!(tx[0].eth().dst, MacAddr([2, 0, 0, 0, 0, 9]));
    assert_eq!((tx[0].h.iif, tx[0].h.oif), (IFACE, IFACE));
    assert_eq!(tx[0].ip_hdr().ttl, 63);
    assert_eq!(r.stat(Stat::IcmpOutOtherErrors), 0);
    r.finish();
}
