//! Routing and the way out.

use super::*;
use strata_proto::checksum::{pseudo_header_v4, verify};
use strata_proto::ipv4::protocol;

fn udp_to(dst: Ipv4Addr) -> Vec<u8> {
    let mut ip = Ip::new(protocol::UDP);
    ip.src = OUR_IP;
    ip.dst = dst;
    ip.build(&[0, 1, 0, 2, 0, 12, 0, 0, 1, 2, 3, 4])
}

#[test]
fn longest_prefix_match_and_default_gateway() {
    let mut cfg = config();
    cfg.ifaces.push(IfaceConfig {
        index: 2,
        mac: MacAddr([0x02, 0, 0, 0, 2, 1]),
        addrs: vec![(Ipv4Addr::new(192, 168, 1, 1), 24)],
        mtu: 1500,
        addrs6: vec![],
        autoconf: false,
    });
    cfg.routes.push(RouteConfig {
        dest: Ipv4Addr::new(172, 16, 0, 0),
        prefix: 12,
        gateway: Some(Ipv4Addr::new(192, 168, 1, 254)),
        iface: None,
    });
    cfg.routes.push(RouteConfig {
        dest: Ipv4Addr::new(172, 16, 5, 0),
        prefix: 24,
        gateway: None,
        iface: Some(IFACE),
    });
    let mut r = Rig::with(cfg);
    let target = |t: &Tx| (t.arp().target_ip, t.arp().sender_ip, t.h.oif);
    r.output(&udp_to(Ipv4Addr::new(8, 8, 8, 8)));
    assert_eq!(target(&r.tx()[0]), (GW_IP, OUR_IP, IFACE));
    r.output(&udp_to(Ipv4Addr::new(172, 17, 0, 1)));
    let via = Ipv4Addr::new(192, 168, 1, 254);
    assert_eq!(target(&r.tx()[0]), (via, Ipv4Addr::new(192, 168, 1, 1), 2));
    r.output(&udp_to(Ipv4Addr::new(172, 16, 5, 9)));
    assert_eq!(
        target(&r.tx()[0]),
        (Ipv4Addr::new(172, 16, 5, 9), OUR_IP, IFACE)
    );
    r.output(&udp_to(Ipv4Addr::new(192, 168, 1, 7)));
    assert_eq!(
        target(&r.tx()[0]),
        (
            Ipv4Addr::new(192, 168, 1, 7),
            Ipv4Addr::new(192, 168, 1, 1),
            2
        )
    );

    // Once the gateway answers, off-link traffic goes to its MAC with the
    // destination unchanged.
    r.learn(GW_IP, GW_MAC);
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].eth().dst, GW_MAC);
    assert_eq!(tx[0].ip_hdr().dst, Ipv4Addr::new(8, 8, 8, 8));
    assert_eq!(tx[0].h.nexthop, u32::from(GW_IP));
    r.finish();
}

#[test]
fn no_route_without_a_default() {
    let mut cfg = config();
    cfg.routes.clear();
    let mut r = Rig::with(cfg);
    r.output(&udp_to(Ipv4Addr::new(8, 8, 8, 8)));
    r.output(&udp_to(Ipv4Addr::new(0, 1, 2, 3)));
    assert_eq!(r.stat(Stat::NoRoute), 2);
    assert!(r.tx().is_empty());
    r.finish();
}

#[test]
fn the_loopback_network_comes_back_up_from_127_0_0_1_without_a_device() {
    let mut cfg = config();
    cfg.routes.clear();
    let mut r = Rig::with(cfg);
    r.core.set_upper(protocol::UDP, true);
    let mut d = udp_to(Ipv4Addr::new(127, 0, 0, 9));
    d[12..16].fill(0);
    strata_proto::ipv4::fill_checksum(&mut d[..20]);
    r.output(&d);
    assert!(r.tx().is_empty(), "nothing on a device");
    let up = r.up();
    assert_eq!(up.len(), 1);
    let hdr = Ipv4Header::parse(&up[0].1).unwrap();
    assert_eq!(hdr.src, Ipv4Addr::LOCALHOST);
    assert_eq!(hdr.dst, Ipv4Addr::new(127, 0, 0, 9));
    assert_eq!(up[0].0.iif, strata_ipc::handle::NO_IFACE);
    assert_eq!(r.stat(Stat::Loopback), 1);
    assert_eq!(r.stat(Stat::NoRoute), 0);
    r.finish();
}

#[test]
fn broadcast_and_multicast_need_no_arp() {
    let mut r = Rig::new();
    r.output(&udp_to(Ipv4Addr::BROADCAST));
    r.output(&udp_to(Ipv4Addr::new(10, 0, 0, 255)));
    r.output(&udp_to(Ipv4Addr::new(224, 0, 0, 251)));
    let tx = r.tx();
    assert_eq!(tx.len(), 3);
    assert_eq!(tx[0].eth().dst, MacAddr::BROADCAST);
    assert_eq!(tx[1].eth().dst, MacAddr::BROADCAST);
    assert_eq!(tx[2].eth().dst, MacAddr([1, 0, 0x5e, 0, 0, 0xfb]));
    r.finish();
}

#[test]
fn zero_source_is_filled_in_and_checksums_fixed() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    for proto in [protocol::UDP, protocol::TCP] {
        let mut seg = pattern(if proto == protocol::UDP { 40 } else { 60 });
        let csum_at = if proto == protocol::UDP { 6 } else { 16 };
        if proto == protocol::UDP {
            seg[4..6].copy_from_slice(&40u16.to_be_bytes());
        } else {
            seg[12] = 0x50;
        }
        seg[csum_at] = 0;
        seg[csum_at + 1] = 0;
        let mut c = pseudo_header_v4(Ipv4Addr::UNSPECIFIED, PEER_IP, proto, seg.len() as u16);
        c.add_bytes(&seg);
        let v = c.finish();
        seg[csum_at..csum_at + 2].copy_from_slice(&v.to_be_bytes());
        let mut ip = Ip::new(proto);
        ip.src = Ipv4Addr::UNSPECIFIED;
        ip.dst = PEER_IP;
        r.output(&ip.build(&seg));
        let tx = r.tx();
        let h = tx[0].ip_hdr();
        assert_eq!(h.src, OUR_IP);
        let l4 = &tx[0].ip()[20..];
        let mut c = pseudo_header_v4(OUR_IP, PEER_IP, proto, l4.len() as u16);
        c.add_bytes(l4);
        assert_eq!(c.sum(), 0xffff, "transport checksum still valid");
    }
    // Without a UDP checksum there is nothing to fix.
    let mut ip = Ip::new(protocol::UDP);
    ip.src = Ipv4Addr::UNSPECIFIED;
    ip.dst = PEER_IP;
    r.output(&ip.build(&[0, 1, 0, 2, 0, 8, 0, 0]));
    let tx = r.tx();
    assert_eq!(tx[0].ip()[26..28], [0, 0]);
    assert!(verify(&tx[0].ip()[..20]));
    r.finish();
}

#[test]
fn to_ourselves_comes_back_up() {
    let mut r = Rig::new();
    r.core.set_upper(protocol::UDP, true);
    let mut ip = Ip::new(protocol::UDP);
    ip.src = Ipv4Addr::UNSPECIFIED;
    ip.dst = OUR_IP;
    r.output(&ip.build(&[0, 1, 0, 2, 0, 8, 0, 0]));
    let up = r.up();
    assert_eq!(up.len(), 1);
    assert_eq!(Ipv4Header::parse(&up[0].1).unwrap().src, OUR_IP);
    assert_eq!((up[0].0.iif, up[0].0.l4_off), (IFACE, 20));
    assert_eq!(r.stat(Stat::Loopback), 1);
    // A ping to ourselves answers itself.
    let mut ip = Ip::new(protocol::ICMP);
    ip.src = OUR_IP;
    ip.dst = OUR_IP;
    r.output(&ip.build(&echo_msg(8, 1, 1, b"me")));
    assert_eq!(r.stat(Stat::IcmpInEchoReplies), 1);
    assert!(r.tx().is_empty());
    r.finish();
}

#[test]
fn malformed_datagrams_from_above_are_dropped() {
    let mut r = Rig::new();
    r.output(&[0x45, 0, 0, 20]);
    let mut d = udp_to(PEER_IP);
    d[10] ^= 1;
    r.output(&d);
    assert_eq!(r.stat(Stat::OutMalformed), 2);
    assert_eq!(r.stat(Stat::OutRequests), 2);
    // Trailing bytes past total_len are not sent.
    let mut d = udp_to(PEER_IP);
    let want = d.clone();
    d.extend_from_slice(&[0xee; 10]);
    r.learn(PEER_IP, PEER_MAC);
    r.output(&d);
    assert_eq!(r.tx()[0].ip(), &want[..]);
    r.finish();
}
