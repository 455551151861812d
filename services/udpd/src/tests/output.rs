//! Payloads from sockd leaving as IPv4 datagrams.

use super::*;
use strata_proto::checksum::verify;

/// Checks that `d` is a valid IPv4+UDP datagram src:sport -> dst:dport
/// carrying `payload`.
fn check_datagram(d: &[u8], src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) {
    let ip = Ipv4Header::parse(d).expect("valid IPv4 header");
    assert_eq!(
        (ip.header_len, ip.ttl, ip.protocol),
        (20, 64, protocol::UDP)
    );
    assert!(!ip.dont_frag && !ip.more_frags && ip.frag_offset == 0);
    assert_eq!(ip.total_len as usize, d.len());
    assert_eq!((ip.src, ip.dst), (src, dst));
    let udp = UdpHeader::parse(&d[20..]).unwrap();
    assert_eq!((udp.src_port, udp.dst_port), (sport, dport));
    assert_eq!(udp.length as usize, 8 + payload.len());
    assert_ne!(udp.checksum, 0, "a checksum is always sent");
    assert!(UdpHeader::verify_checksum(&d[20..], src, dst));
    assert_eq!(&d[28..], payload);
}

#[test]
fn largest_datagram_leaves_whole_with_correct_headers() {
    let mut r = Rig::new();
    r.bind(1, A2, 4444, false).unwrap();
    let payload = pattern(crate::MAX_PAYLOAD);
    let h = r.send(1, PEER, 9999, &payload);
    let sent = r.take_ip();
    assert_eq!(sent.len(), 1);
    let (o, d) = &sent[0];
    assert_eq!(o.buf, h.buf, "headers go in front of the payload, no copy");
    assert_eq!(d.len(), 65535);
    assert_eq!(
        (o.l3_off, o.l4_off, o.l4proto, o.flags, o.sock),
        (0, 20, protocol::UDP, 0, 0)
    );
    assert_eq!(o.csum, csum::NONE);
    check_datagram(d, A2, 4444, PEER, 9999, &payload);
    assert!(verify(&d[..20]));
    // One byte more does not fit an IPv4 datagram.
    let big = vec![0u8; crate::MAX_PAYLOAD + 1];
    let mut h = r.pool.alloc(big.len() + SEND_META_LEN).unwrap();
    h.data_len = (big.len() + SEND_META_LEN) as u32;
    h.sock = 1;
    r.pool.data_mut(&h).unwrap()[..SEND_META_LEN].copy_from_slice(
        &SendMeta {
            addr: m(PEER),
            port: 9,
        }
        .to_bytes(),
    );
    r.core.from_sock(&mut r.pool, h, &mut r.out);
    assert!(r.take_ip().is_empty());
    assert_eq!(r.stat(Stat::OutTooBig), 1);
    r.finish();
}

#[test]
fn connected_sends_and_destination_rules() {
    let mut r = Rig::new();
    let c = r.connect(1, PEER_B, 53).unwrap();
    // No address: the connected peer.
    r.send(1, Ipv4Addr::UNSPECIFIED, 0, b"query");
    // An explicit destination overrides it (sendto on a connected socket).
    r.send(1, PEER, 54, b"other");
    // Empty payloads are datagrams too.
    r.send(1, Ipv4Addr::UNSPECIFIED, 0, b"");
    let sent = r.take_ip();
    assert_eq!(sent.len(), 3);
    let lp = c.local_port;
    check_datagram(&sent[0].1, B1, lp, PEER_B, 53, b"query");
    // The local address chosen at connect stays the source.
    check_datagram(&sent[1].1, B1, lp, PEER, 54, b"other");
    check_datagram(&sent[2].1, B1, lp, PEER_B, 53, b"");
    // Identification changes per datagram.
    let id = |d: &[u8]| u16::from_be_bytes([d[4], d[5]]);
    assert_ne!(id(&sent[0].1), id(&sent[1].1));
    assert_ne!(id(&sent[1].1), id(&sent[2].1));
    // Unconnected without an address, port 0, too short for the meta,
    // too little headroom: dropped and counted.
    r.bind(2, A1, 7, false).unwrap();
    r.send(2, Ipv4Addr::UNSPECIFIED, 0, b"where?");
    r.send(3, Ipv4Addr::UNSPECIFIED, 0, b"unbound, where?");
    r.send(2, PEER, 0, b"port 0");
    let mut h = r.buf(&[1, 2, 3]);
    h.sock = 2;
    r.core.from_sock(&mut r.pool, h, &mut r.out);
    let mut h = r.pool.alloc(100).unwrap();
    // Less than IPv4 and UDP headers' room once the meta is gone.
    h.data_off = 0;
    h.data_len = SEND_META_LEN as u32 + 12;
    h.sock = 2;
    r.pool.data_mut(&h).unwrap()[..SEND_META_LEN].copy_from_slice(
        &SendMeta {
            addr: m(PEER),
            port: 9,
        }
        .to_bytes(),
    );
    r.core.from_sock(&mut r.pool, h, &mut r.out);
    assert!(r.take_ip().is_empty());
    assert!(
        r.take_ctl().is_empty(),
        "no implicit bind for a dropped send"
    );
    assert!(r.core.binding(3).is_none());
    assert_eq!(r.stat(Stat::OutNoDestination), 2);
    assert_eq!(r.stat(Stat::OutBadPort), 1);
    assert_eq!(r.stat(Stat::OutMalformed), 1);
    assert_eq!(r.stat(Stat::OutNoHeadroom), 1);
    assert_eq!(r.stat(Stat::OutDatagrams), 3);
    r.finish();
}

#[test]
fn sockets_bound_to_a_broadcast_address_send_from_a_real_one() {
    let mut r = Rig::new();
    r.bind(1, BCAST, 67, false).unwrap();
    r.send(1, Ipv4Addr::BROADCAST, 68, b"offer");
    let sent = r.take_ip();
    check_datagram(&sent[0].1, A1, 67, Ipv4Addr::BROADCAST, 68, b"offer");
    r.finish();
}

#[test]
fn ring_full_frees_and_counts() {
    let mut r = Rig::new();
    r.bind(1, A1, 9, false).unwrap();
    r.rx(&Dg::new(PEER, 1, A1, 9).build(b"x"));
    r.rx(&Dg::new(PEER, 1, A1, 10).build(b"x"));
    let h = r.out.to_sock.pop().unwrap();
    r.core.ring_full(&mut r.pool, &h, crate::Ring::Sock);
    let h = r.out.to_ip.pop().unwrap();
    r.core.ring_full(&mut r.pool, &h, crate::Ring::Ip);
    assert_eq!(r.stat(Stat::SockRingFull), 1);
    assert_eq!(r.stat(Stat::IpRingFull), 1);
    r.finish();
}
