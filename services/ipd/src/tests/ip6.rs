//! IPv6: duplicate address detection, neighbour discovery both ways,
//! echo, and malformed packets counted by reason.

use std::net::Ipv6Addr;

use strata_proto::ethernet::{ethertype, EthernetHeader};
use strata_proto::icmpv6::{icmpv6_type, Icmpv6Header};
use strata_proto::ipv6::{next_header, Ipv6Header};
use strata_proto::ndp::{
    link_local_from_mac, multicast_mac, solicited_node, NdpOption, NeighborAdvertisement,
    NeighborSolicitation, ALL_NODES,
};
use strata_proto::MacAddr;

use super::*;
use crate::neigh::neigh_state;

const OUR_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
const PEER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);

fn rig6() -> Rig {
    let mut cfg = config();
    cfg.ifaces[0].addrs6 = vec![(OUR_IP6, 64)];
    Rig::with(cfg)
}

/// An IPv6 frame from the peer carrying ICMPv6 message `msg` (checksum
/// filled here) from `src` to `dst` with hop limit `hops`.
fn icmp6_frame(dst_mac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, hops: u8, msg: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + msg.len()];
    EthernetHeader {
        dst: dst_mac,
        src: PEER_MAC,
        ethertype: ethertype::IPV6,
    }
    .emit(&mut f)
    .unwrap();
    Ipv6Header {
        traffic_class: 0,
        flow_label: 0,
        payload_len: msg.len() as u16,
        next_header: next_header::ICMPV6,
        hop_limit: hops,
        src,
        dst,
    }
    .emit(&mut f[14..])
    .unwrap();
    f[54..].copy_from_slice(msg);
    strata_proto::icmpv6::fill_checksum(&mut f[54..], src, dst).unwrap();
    f
}

fn ns_msg(target: Ipv6Addr, sender: Option<MacAddr>) -> Vec<u8> {
    let mut opt = [0u8; 8];
    let opts: &[u8] = match sender {
        Some(m) => {
            NdpOption::SourceLinkAddr(m).emit(&mut opt).unwrap();
            &opt
        }
        None => &[],
    };
    let mut m = vec![0u8; 24 + opts.len()];
    NeighborSolicitation {
        target,
        options: opts,
    }
    .emit(&mut m, Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)
    .unwrap();
    m
}

fn na_msg(target: Ipv6Addr, solicited: bool, mac: MacAddr) -> Vec<u8> {
    let mut opt = [0u8; 8];
    NdpOption::TargetLinkAddr(mac).emit(&mut opt).unwrap();
    let mut m = vec![0u8; 32];
    NeighborAdvertisement {
        router: false,
        solicited,
        override_flag: true,
        target,
        options: &opt,
    }
    .emit(&mut m, Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)
    .unwrap();
    m
}

/// The IPv6 packets among `tx` but router solicitations (which a host
/// sends at start until a router answers; [`all_v6`] has them too):
/// (Ethernet destination, IPv6 header, ICMPv6 message after any
/// extension header).
fn v6(tx: &[Tx]) -> Vec<(MacAddr, Ipv6Header, Vec<u8>)> {
    all_v6(tx)
        .into_iter()
        .filter(|(_, _, m)| m[0] != icmpv6_type::ROUTER_SOLICITATION)
        .collect()
}

/// Every IPv6 packet among `tx`, as [`v6`] has them.
fn all_v6(tx: &[Tx]) -> Vec<(MacAddr, Ipv6Header, Vec<u8>)> {
    tx.iter()
        .filter(|t| t.eth().ethertype == ethertype::IPV6)
        .map(|t| {
            let hdr = Ipv6Header::parse(&t.bytes[14..]).unwrap();
            let at = if hdr.next_header == next_header::HOP_BY_HOP {
                62
            } else {
                54
            };
            (t.eth().dst, hdr, t.bytes[at..].to_vec())
        })
        .collect()
}

/// Starts the core and lets detection end with nobody objecting.
fn started() -> Rig {
    let mut r = rig6();
    r.core.start(r.now, &mut r.pool, &mut r.out);
    r.tx();
    r.advance(S);
    r.tx();
    r
}

#[test]
fn start_reports_groups_then_probes_every_address_and_uses_them_after_a_second() {
    let mut r = rig6();
    let ll = link_local_from_mac(OUR_MAC);
    r.core.start(r.now, &mut r.pool, &mut r.out);
    let sent = v6(&r.tx());
    // An MLDv2 report to ff02::16 naming both solicited-node groups, then
    // a solicitation from :: for each address.
    assert_eq!(sent.len(), 3, "{sent:?}");
    let (mac, hdr, msg) = &sent[0];
    assert_eq!(hdr.dst, strata_proto::mld::ALL_MLDV2_ROUTERS);
    assert_eq!(*mac, multicast_mac(hdr.dst));
    assert_eq!((hdr.hop_limit, msg[0]), (1, strata_proto::mld::REPORT_TYPE));
    assert_eq!(&msg[12..28], &solicited_node(ll).octets());
    assert_eq!(&msg[32..48], &solicited_node(OUR_IP6).octets());
    for ((_, hdr, msg), target) in sent[1..].iter().zip([ll, OUR_IP6]) {
        assert!(hdr.src.is_unspecified());
        assert_eq!(hdr.dst, solicited_node(target));
        let ns = NeighborSolicitation::parse(msg, hdr).unwrap();
        assert_eq!((ns.target, ns.options.len()), (target, 0));
    }
    // Tentative: an echo to it is not answered.
    let echo = echo_req(OUR_IP6);
    r.input(&icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &echo));
    assert_eq!(r.stat(Stat::Ip6ToTentative), 1);
    let states = |r: &Rig| -> Vec<u8> { r.core.records().map(|n| n.state).collect() };
    assert_eq!(states(&r), [neigh_state::ADDR_TENTATIVE; 2]);
    assert_eq!(r.core.next_deadline(), Some(r.now + S));
    r.advance(S);
    assert_eq!(states(&r), [neigh_state::ADDR_PREFERRED; 2]);
    assert!(v6(&r.tx()).is_empty());
    r.finish();
}

fn echo_req(_to: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![0u8; 8 + 56];
    m[0] = icmpv6_type::ECHO_REQUEST;
    m[4..8].copy_from_slice(&[0x12, 0x34, 0, 7]);
    for (i, b) in m[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    m
}

#[test]
fn a_solicitation_is_answered_and_the_sender_cached_then_echo_goes_straight_back() {
    let mut r = started();
    let ns = ns_msg(OUR_IP6, Some(PEER_MAC));
    let f = icmp6_frame(
        multicast_mac(solicited_node(OUR_IP6)),
        PEER_IP6,
        solicited_node(OUR_IP6),
        255,
        &ns,
    );
    r.input(&f);
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1);
    let (mac, hdr, msg) = &sent[0];
    assert_eq!(
        (*mac, hdr.src, hdr.dst, hdr.hop_limit),
        (PEER_MAC, OUR_IP6, PEER_IP6, 255)
    );
    let na = NeighborAdvertisement::parse(msg, hdr).unwrap();
    assert!(na.solicited && na.override_flag && !na.router);
    assert_eq!((na.target, na.target_link_addr()), (OUR_IP6, Some(OUR_MAC)));
    let peer = r
        .core
        .neighbours()
        .find(|n| n.ip.as_v6() == Some(PEER_IP6))
        .unwrap();
    // Learnt STALE, then used for the advertisement: DELAY (RFC 4861
    // §7.3.3).
    assert_eq!((peer.state, peer.mac), (neigh_state::DELAY, PEER_MAC.0));
    // An echo request is answered to the cached MAC, with the same data.
    let echo = echo_req(OUR_IP6);
    r.input(&icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &echo));
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1);
    let (mac, hdr, msg) = &sent[0];
    assert_eq!((*mac, hdr.src, hdr.dst), (PEER_MAC, OUR_IP6, PEER_IP6));
    Icmpv6Header::parse(msg, hdr.src, hdr.dst).expect("checksum");
    assert_eq!(msg[0], icmpv6_type::ECHO_REPLY);
    assert_eq!(&msg[4..], &echo[4..]);
    assert_eq!(r.stat(Stat::Icmp6OutEchoReplies), 1);
    // The entry was STALE and used: DELAY, then a unicast probe 5 s later,
    // which a solicited advertisement answers: REACHABLE.
    let state = |r: &Rig| {
        r.core
            .neighbours()
            .find(|n| n.ip.as_v6() == Some(PEER_IP6))
            .map(|n| n.state)
    };
    assert_eq!(state(&r), Some(neigh_state::DELAY));
    r.advance(5 * S);
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1);
    let (mac, hdr, msg) = &sent[0];
    assert_eq!((*mac, hdr.dst), (PEER_MAC, PEER_IP6));
    assert_eq!(
        NeighborSolicitation::parse(msg, hdr).unwrap().target,
        PEER_IP6
    );
    r.input(&icmp6_frame(
        OUR_MAC,
        PEER_IP6,
        OUR_IP6,
        255,
        &na_msg(PEER_IP6, true, PEER_MAC),
    ));
    assert_eq!(state(&r), Some(neigh_state::REACHABLE));
    r.finish();
}

#[test]
fn resolving_a_peer_solicits_its_group_and_the_answer_releases_the_queue() {
    let mut r = started();
    // An echo from an unknown peer: its reply waits for resolution.
    let echo = echo_req(OUR_IP6);
    let mut f = icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &echo);
    // From a MAC-less sender point of view: no neighbour entry yet.
    f[6..12].copy_from_slice(&PEER_MAC.0);
    r.input(&f);
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1);
    let (mac, hdr, msg) = &sent[0];
    assert_eq!(hdr.dst, solicited_node(PEER_IP6));
    assert_eq!(*mac, multicast_mac(hdr.dst));
    let ns = NeighborSolicitation::parse(msg, hdr).unwrap();
    assert_eq!(
        (ns.target, ns.source_link_addr()),
        (PEER_IP6, Some(OUR_MAC))
    );
    assert_eq!(r.core.waiting_for_neighbours(), 1);
    r.input(&icmp6_frame(
        OUR_MAC,
        PEER_IP6,
        OUR_IP6,
        255,
        &na_msg(PEER_IP6, true, PEER_MAC),
    ));
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].0, sent[0].2[0]),
        (PEER_MAC, icmpv6_type::ECHO_REPLY)
    );
    r.finish();
}

#[test]
fn an_advertisement_for_a_tentative_address_makes_it_duplicate_and_unused() {
    let mut r = rig6();
    r.core.start(r.now, &mut r.pool, &mut r.out);
    r.tx();
    // The peer holds our global address.
    let na = na_msg(OUR_IP6, false, PEER_MAC);
    r.input(&icmp6_frame(
        multicast_mac(ALL_NODES),
        OUR_IP6,
        ALL_NODES,
        255,
        &na,
    ));
    assert_eq!(r.stat(Stat::DadDuplicate), 1);
    assert_eq!(r.core.take_duplicates(), [(IFACE, OUR_IP6)]);
    r.advance(S);
    let states: Vec<(Option<Ipv6Addr>, u8)> =
        r.core.records().map(|n| (n.ip.as_v6(), n.state)).collect();
    assert!(states.contains(&(Some(OUR_IP6), neigh_state::ADDR_DUPLICATE)));
    // Solicitations for it go unanswered; echo to it is not ours.
    let ns = ns_msg(OUR_IP6, Some(PEER_MAC));
    let g = solicited_node(OUR_IP6);
    r.input(&icmp6_frame(multicast_mac(g), PEER_IP6, g, 255, &ns));
    r.input(&icmp6_frame(
        OUR_MAC,
        PEER_IP6,
        OUR_IP6,
        64,
        &echo_req(OUR_IP6),
    ));
    assert!(v6(&r.tx()).is_empty());
    assert_eq!(r.stat(Stat::Ip6NotForUs), 2);
    r.finish();
}

#[test]
fn a_simultaneous_probe_for_a_tentative_address_is_a_duplicate_too() {
    let mut r = rig6();
    r.core.start(r.now, &mut r.pool, &mut r.out);
    r.tx();
    let g = solicited_node(OUR_IP6);
    let f = icmp6_frame(
        multicast_mac(g),
        Ipv6Addr::UNSPECIFIED,
        g,
        255,
        &ns_msg(OUR_IP6, None),
    );
    r.input(&f);
    assert_eq!(r.stat(Stat::DadDuplicate), 1);
    r.finish();
}

#[test]
fn a_restarted_core_keeps_detection_results_and_probes_nothing_again() {
    let r = started();
    let recs: Vec<_> = r.core.records().collect();
    let mut again = rig6();
    again.core.restore_neighbours(again.now, &recs);
    again.core.start(again.now, &mut again.pool, &mut again.out);
    assert!(v6(&again.tx()).is_empty(), "no detection after a restart");
    let echo = echo_req(OUR_IP6);
    again.input(&icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &echo));
    assert_eq!(again.stat(Stat::Icmp6InEchoRequests), 1);
    again.finish();
    r.finish();
}

#[test]
fn malformed_packets_are_counted_by_reason_and_leak_nothing() {
    let mut r = started();
    let g = solicited_node(OUR_IP6);
    // Neighbour discovery with a hop limit below 255 (it crossed a router).
    let ns = ns_msg(OUR_IP6, Some(PEER_MAC));
    r.input(&icmp6_frame(multicast_mac(g), PEER_IP6, g, 254, &ns));
    assert_eq!(r.stat(Stat::NdpBadHopLimit), 1);
    // An option of length 0.
    let mut bad = ns.clone();
    bad[25] = 0;
    r.input(&icmp6_frame(multicast_mac(g), PEER_IP6, g, 255, &bad));
    assert_eq!(r.stat(Stat::NdpZeroOptionLength), 1);
    // A wrong checksum.
    let mut f = icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &echo_req(OUR_IP6));
    f[60] ^= 0xff;
    r.input(&f);
    assert_eq!(r.stat(Stat::Icmp6BadChecksum), 1);
    // A payload length past the frame, and a truncated header.
    let mut f = icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &echo_req(OUR_IP6));
    f[18..20].copy_from_slice(&2000u16.to_be_bytes());
    r.input(&f);
    assert_eq!(r.stat(Stat::Ipv6PayloadLenExceedsFrame), 1);
    r.input(&f[..40]);
    assert_eq!(r.stat(Stat::Ipv6Truncated), 1);
    // A chain of destination options headers longer than ipd walks.
    let mut chain = Vec::new();
    for _ in 0..12 {
        chain.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    let mut f = icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &chain);
    f[20] = 60;
    f[54..].copy_from_slice(&chain);
    r.input(&f);
    assert_eq!(r.stat(Stat::Ip6TooManyExtHeaders), 1);
    // A multicast source.
    let f = icmp6_frame(OUR_MAC, ALL_NODES, OUR_IP6, 64, &echo_req(OUR_IP6));
    r.input(&f);
    assert_eq!(r.stat(Stat::Ip6MartianSource), 1);
    assert!(v6(&r.tx()).is_empty());
    r.finish();
}

/// Cuts the IPv6 packet in `frame` (Ethernet and all) into fragments of
/// at most `chunk` data bytes (a multiple of 8), as the kernel would send
/// them: one frame each, `ident` shared.
fn fragments(frame: &[u8], chunk: usize, ident: u32) -> Vec<Vec<u8>> {
    let hdr = Ipv6Header::parse(&frame[14..]).unwrap();
    let payload = &frame[54..];
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let len = chunk.min(payload.len() - off);
        let mut f = frame[..54].to_vec();
        Ipv6Header {
            payload_len: (8 + len) as u16,
            next_header: next_header::FRAGMENT,
            ..hdr
        }
        .emit(&mut f[14..])
        .unwrap();
        let mut fh = [0u8; 8];
        strata_proto::ipv6::FragmentHeader {
            next_header: hdr.next_header,
            offset: (off / 8) as u16,
            more: off + len < payload.len(),
            ident,
        }
        .emit(&mut fh)
        .unwrap();
        f.extend_from_slice(&fh);
        f.extend_from_slice(&payload[off..off + len]);
        out.push(f);
        off += len;
    }
    out
}

/// Puts the fragments among `tx` back together: the whole ICMPv6 message.
fn reassemble(tx: &[(MacAddr, Ipv6Header, Vec<u8>)]) -> Vec<u8> {
    let mut pieces: Vec<(usize, Vec<u8>)> = tx
        .iter()
        .map(|(_, h, m)| {
            assert_eq!(h.next_header, next_header::FRAGMENT);
            let fh = strata_proto::ipv6::FragmentHeader::parse(m).unwrap();
            (fh.byte_offset(), m[8..].to_vec())
        })
        .collect();
    pieces.sort();
    let mut whole = Vec::new();
    for (off, data) in pieces {
        assert_eq!(off, whole.len(), "fragments cover the packet once");
        whole.extend_from_slice(&data);
    }
    whole
}

/// The peer asks for our address, so that we know its MAC.
fn learn_peer(r: &mut Rig) {
    let g = solicited_node(OUR_IP6);
    let ns = ns_msg(OUR_IP6, Some(PEER_MAC));
    r.input(&icmp6_frame(multicast_mac(g), PEER_IP6, g, 255, &ns));
    r.tx();
}

#[test]
fn a_fragmented_echo_is_reassembled_and_its_reply_fragmented_at_the_mtu() {
    let mut r = started();
    learn_peer(&mut r);
    let mut echo = echo_req(OUR_IP6);
    echo.resize(4000, 0);
    for (i, b) in echo[8..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    let whole = icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &echo);
    let mut frags = fragments(&whole, 1448, 0xabcd);
    assert_eq!(frags.len(), 3);
    // Out of order, and the middle one twice.
    frags.swap(0, 2);
    frags.insert(2, frags[1].clone());
    for f in &frags {
        r.input(f);
    }
    assert_eq!(r.stat(Stat::FragReassembled), 1);
    assert_eq!(r.stat(Stat::FragDuplicate), 1);
    // The reply is 4000 bytes of ICMPv6: three fragments of at most 1500.
    let tx = r.tx();
    assert!(tx.iter().all(|t| t.bytes.len() - 14 <= 1500));
    let sent = v6(&tx);
    assert_eq!(sent.len(), 3);
    let (_, hdr, _) = &sent[0];
    assert_eq!((hdr.src, hdr.dst), (OUR_IP6, PEER_IP6));
    let reply = reassemble(&sent);
    Icmpv6Header::parse(&reply, OUR_IP6, PEER_IP6).expect("checksum over the whole reply");
    assert_eq!(reply[0], icmpv6_type::ECHO_REPLY);
    assert_eq!(&reply[4..], &echo[4..]);
    r.finish();
}

#[test]
fn overlapping_fragments_drop_the_whole_packet_and_a_lone_one_times_out_with_an_error() {
    let mut cfg = config();
    cfg.ifaces[0].addrs6 = vec![(OUR_IP6, 64)];
    // Short enough that the peer's entry is still in DELAY at the end.
    cfg.limits.frag_timeout_ns = 2 * S;
    let mut r = Rig::with(cfg);
    r.core.start(r.now, &mut r.pool, &mut r.out);
    r.advance(S);
    r.tx();
    learn_peer(&mut r);
    let mut echo = echo_req(OUR_IP6);
    echo.resize(3000, 1);
    let whole = icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &echo);
    let frags = fragments(&whole, 1448, 7);
    // A second fragment that starts 8 bytes early (RFC 5722).
    let mut overlap = frags[1].clone();
    overlap[56..58].copy_from_slice(&((((1448 - 8) / 8) << 3 | 1) as u16).to_be_bytes());
    r.input(&frags[0]);
    r.input(&overlap);
    r.input(&frags[1]);
    r.input(&frags[2]);
    assert_eq!(r.stat(Stat::FragOverlap), 1);
    assert_eq!(r.stat(Stat::FragReassembled), 0);
    assert!(v6(&r.tx()).is_empty());
    // The remaining fragments started a new reassembly that never
    // completes: after the timeout, time exceeded (fragment 0 was not
    // among them, so nothing is sent). Then one with fragment 0.
    r.advance(2 * S);
    assert_eq!(r.stat(Stat::FragTimeout), 1);
    let frags = fragments(&whole, 1448, 8);
    r.input(&frags[0]);
    r.advance(2 * S);
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1);
    let (_, hdr, msg) = &sent[0];
    assert_eq!(hdr.dst, PEER_IP6);
    assert_eq!((msg[0], msg[1]), (icmpv6_type::TIME_EXCEEDED, 1));
    r.finish();
}

#[test]
fn a_router_forwards_with_one_hop_spent_and_answers_what_it_cannot_forward() {
    let mut cfg = config();
    cfg.limits.forwarding = true;
    cfg.ifaces[0].addrs6 = vec![(OUR_IP6, 64)];
    let far_mac = MacAddr([2, 0, 0, 0, 9, 9]);
    cfg.ifaces.push(IfaceConfig {
        index: 2,
        mac: MacAddr([2, 0, 0, 0, 0, 0x22]),
        addrs: vec![],
        mtu: 1280,
        addrs6: vec![("fd00:88::1".parse().unwrap(), 64)],
        autoconf: false,
    });
    // A network behind the far host.
    cfg.routes6 = vec![strata_ipc::route::Route6 {
        dest: "fd00:77:3::".parse().unwrap(),
        prefix: 64,
        gateway: Some("fd00:88::9".parse().unwrap()),
        iface: None,
    }];
    let mut r = Rig::with(cfg);
    r.core.start(r.now, &mut r.pool, &mut r.out);
    r.advance(S);
    r.tx();
    learn_peer(&mut r);
    let far: Ipv6Addr = "fd00:88::9".parse().unwrap();
    // To a host behind interface 2: resolved there, then sent on with
    // the hop limit one lower.
    r.input(&icmp6_frame(OUR_MAC, PEER_IP6, far, 9, &echo_req(far)));
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.dst, solicited_node(far));
    let ns = NeighborSolicitation::parse(&sent[0].2, &sent[0].1).unwrap();
    assert_eq!(ns.target, far);
    let mut na = icmp6_frame(
        MacAddr([2, 0, 0, 0, 0, 0x22]),
        far,
        "fd00:88::1".parse().unwrap(),
        255,
        &na_msg(far, true, far_mac),
    );
    na[6..12].copy_from_slice(&far_mac.0);
    let mut h = r.buf(&na);
    h.iif = 2;
    r.core.input(r.now, &mut r.pool, h, &mut r.out);
    let tx = r.tx();
    let sent = v6(&tx);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].0, sent[0].1.hop_limit, sent[0].1.src),
        (far_mac, 8, PEER_IP6)
    );
    assert_eq!(tx[0].h.oif, 2);
    assert_eq!(r.stat(Stat::Forwarded), 1);
    // Behind it, by the configured route: to the gateway's MAC.
    let behind: Ipv6Addr = "fd00:77:3::1".parse().unwrap();
    r.input(&icmp6_frame(
        OUR_MAC,
        PEER_IP6,
        behind,
        9,
        &echo_req(behind),
    ));
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0, sent[0].1.dst), (far_mac, behind));
    // Hop limit 1: time exceeded. Too big for the 1280 link: packet too
    // big with that MTU. No prefix holds it: no route.
    r.input(&icmp6_frame(OUR_MAC, PEER_IP6, far, 1, &echo_req(far)));
    let mut big = echo_req(far);
    big.resize(1300, 0);
    r.input(&icmp6_frame(OUR_MAC, PEER_IP6, far, 64, &big));
    let nowhere: Ipv6Addr = "fd00:99::1".parse().unwrap();
    r.input(&icmp6_frame(
        OUR_MAC,
        PEER_IP6,
        nowhere,
        64,
        &echo_req(nowhere),
    ));
    let errs: Vec<(u8, u8, u32)> = v6(&r.tx())
        .iter()
        .map(|(_, h, m)| {
            assert_eq!(h.dst, PEER_IP6);
            (m[0], m[1], u32::from_be_bytes([m[4], m[5], m[6], m[7]]))
        })
        .collect();
    assert_eq!(
        errs,
        [
            (icmpv6_type::TIME_EXCEEDED, 0, 0),
            (icmpv6_type::PACKET_TOO_BIG, 0, 1280),
            (icmpv6_type::DEST_UNREACHABLE, 0, 0),
        ]
    );
    r.finish();
}

#[test]
fn packet_too_big_about_our_packet_lowers_that_path_only() {
    let mut r = started();
    learn_peer(&mut r);
    let mut echo = echo_req(OUR_IP6);
    echo.resize(1400, 3);
    let big = icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &echo);
    r.input(&big);
    assert_eq!(v6(&r.tx()).len(), 1, "1448 bytes fit the link's 1500");
    // A router on the way says 1280: the quote is of our reply.
    let mut ptb = vec![icmpv6_type::PACKET_TOO_BIG, 0, 0, 0, 0, 0, 0x05, 0x00];
    let mut quoted = big[14..14 + 600].to_vec();
    quoted[8..24].copy_from_slice(&OUR_IP6.octets());
    quoted[24..40].copy_from_slice(&PEER_IP6.octets());
    ptb.extend_from_slice(&quoted);
    let from: Ipv6Addr = "fd00:77::fe".parse().unwrap();
    r.input(&icmp6_frame(OUR_MAC, from, OUR_IP6, 64, &ptb));
    assert_eq!(r.stat(Stat::Pmtu6Learnt), 1);
    r.input(&big);
    let tx = r.tx();
    let sent = v6(&tx);
    assert_eq!(sent.len(), 2, "fragmented to the path's 1280");
    assert!(tx.iter().all(|t| t.bytes.len() - 14 <= 1280));
    assert_eq!(&reassemble(&sent)[4..], &echo[4..]);
    // One about a packet that was not ours is not taken.
    quoted[8..24].copy_from_slice(&from.octets());
    let mut other = ptb[..8].to_vec();
    other.extend_from_slice(&quoted);
    r.input(&icmp6_frame(OUR_MAC, from, OUR_IP6, 64, &other));
    assert_eq!(r.stat(Stat::Pmtu6Learnt), 1);
    // Ten minutes on, the path is the link's again.
    r.advance(600 * S);
    r.tx();
    learn_peer(&mut r);
    r.input(&big);
    assert_eq!(v6(&r.tx()).len(), 1, "whole again");
    r.finish();
}

#[test]
fn a_general_query_is_answered_within_its_delay_and_one_for_others_is_not() {
    let mut r = started();
    let query = |group: Ipv6Addr| {
        let mut m = vec![strata_proto::mld::QUERY_TYPE, 0, 0, 0, 0x27, 0x10, 0, 0];
        m.extend_from_slice(&group.octets());
        m.extend_from_slice(&[2, 125, 0, 0]);
        icmp6_frame(multicast_mac(ALL_NODES), ROUTER_LL, ALL_NODES, 1, &m)
    };
    let reports = |r: &mut Rig| {
        v6(&r.tx())
            .iter()
            .filter(|(_, h, m)| {
                h.dst == strata_proto::mld::ALL_MLDV2_ROUTERS
                    && m[0] == strata_proto::mld::REPORT_TYPE
            })
            .count()
    };
    r.input(&query(Ipv6Addr::UNSPECIFIED));
    assert_eq!(r.stat(Stat::MldRxQueries), 1);
    // Within the 10 s the query allows, not at once.
    let due = r.core.next_deadline().unwrap();
    assert!(due <= r.now + 10 * S);
    r.advance(10 * S);
    assert_eq!(reports(&mut r), 1);
    r.input(&query("ff02::1:ff99:9999".parse().unwrap()));
    r.advance(10 * S);
    assert_eq!(reports(&mut r), 0);
    // From a global address: not a query (RFC 3810 §5.1.14).
    let mut bad = query(Ipv6Addr::UNSPECIFIED);
    bad[22..38].copy_from_slice(&PEER_IP6.octets());
    let m = bad[54..].to_vec();
    let bad = icmp6_frame(multicast_mac(ALL_NODES), PEER_IP6, ALL_NODES, 1, &m);
    r.input(&bad);
    assert_eq!(r.stat(Stat::MldSourceNotLinkLocal), 1);
    r.finish();
}

const ROUTER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const ROUTER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);

/// A router advertisement frame from [`ROUTER_LL`] with its link-layer
/// address and, if given, one prefix (on-link and autonomous).
fn ra_frame(lifetime: u16, prefix: Option<(Ipv6Addr, u32)>) -> Vec<u8> {
    let mut opts = vec![0u8; 8];
    NdpOption::SourceLinkAddr(ROUTER_MAC)
        .emit(&mut opts)
        .unwrap();
    if let Some((p, valid)) = prefix {
        let mut o = [0u8; 32];
        NdpOption::PrefixInfo(strata_proto::ndp::PrefixInfo {
            prefix_len: 64,
            on_link: true,
            autonomous: true,
            valid_lifetime: valid,
            preferred_lifetime: valid / 2,
            prefix: p,
        })
        .emit(&mut o)
        .unwrap();
        opts.extend_from_slice(&o);
    }
    let mut m = vec![0u8; 16 + opts.len()];
    strata_proto::ndp::RouterAdvertisement {
        cur_hop_limit: 64,
        managed: false,
        other: false,
        router_lifetime: lifetime,
        reachable_time: 0,
        retrans_timer: 0,
        options: &opts,
    }
    .emit(&mut m, Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)
    .unwrap();
    let mut f = icmp6_frame(multicast_mac(ALL_NODES), ROUTER_LL, ALL_NODES, 255, &m);
    f[6..12].copy_from_slice(&ROUTER_MAC.0);
    f
}

#[test]
fn a_host_solicits_routers_three_times_until_one_advertises() {
    let mut r = rig6();
    r.core.start(r.now, &mut r.pool, &mut r.out);
    r.tx();
    let rs = |r: &mut Rig| -> Vec<Ipv6Header> {
        all_v6(&r.tx())
            .into_iter()
            .filter(|(_, _, m)| m[0] == icmpv6_type::ROUTER_SOLICITATION)
            .map(|(mac, h, m)| {
                assert_eq!(mac, multicast_mac(strata_proto::ndp::ALL_ROUTERS));
                let rs = strata_proto::ndp::RouterSolicitation::parse(&m, &h).unwrap();
                assert_eq!(rs.source_link_addr(), Some(OUR_MAC));
                h
            })
            .collect()
    };
    // The first once the link-local address passed detection.
    r.advance(S);
    let first = rs(&mut r);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].src, link_local_from_mac(OUR_MAC));
    r.advance(4 * S);
    assert_eq!(rs(&mut r).len(), 1);
    r.input(&ra_frame(1800, None));
    r.advance(4 * S);
    assert!(rs(&mut r).is_empty(), "a router answered");
    assert_eq!(r.stat(Stat::NdTxRouterSolicits), 2);
    r.finish();
}

#[test]
fn an_advertised_prefix_gives_an_address_and_off_link_replies_go_through_the_router() {
    let mut cfg = config();
    cfg.ifaces[0].autoconf = true;
    let mut r = Rig::with(cfg);
    r.core.start(r.now, &mut r.pool, &mut r.out);
    r.advance(S);
    r.tx();
    let prefix: Ipv6Addr = "fd00:aa::".parse().unwrap();
    let slaac: Ipv6Addr = "fd00:aa::ff:fe00:1".parse().unwrap();
    r.input(&ra_frame(1800, Some((prefix, 3600))));
    assert_eq!(r.stat(Stat::SlaacAddresses), 1);
    // Tried first: a probe from :: for the new address.
    let sent = v6(&r.tx());
    let probe = sent
        .iter()
        .find(|(_, h, _)| h.src.is_unspecified() && h.dst == solicited_node(slaac));
    assert!(probe.is_some(), "{sent:?}");
    r.advance(S);
    r.tx();
    // An echo from off the link: answered through the router, whose MAC
    // the advertisement taught.
    let far: Ipv6Addr = "2001:db8::5".parse().unwrap();
    let mut f = icmp6_frame(OUR_MAC, far, slaac, 60, &echo_req(slaac));
    f[6..12].copy_from_slice(&ROUTER_MAC.0);
    r.input(&f);
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].0, sent[0].1.src, sent[0].1.dst),
        (ROUTER_MAC, slaac, far)
    );
    let kinds: Vec<u8> = r.core.records().map(|n| n.state).collect();
    assert!(kinds.contains(&neigh_state::ROUTER) && kinds.contains(&neigh_state::PREFIX));
    // A restarted core keeps router, prefix and address.
    let recs: Vec<_> = r.core.records().collect();
    let mut cfg = config();
    cfg.ifaces[0].autoconf = true;
    let mut again = Rig::with(cfg);
    again.now = r.now;
    again.core.restore_neighbours(again.now, &recs);
    again.core.start(again.now, &mut again.pool, &mut again.out);
    again.tx();
    let mut f = icmp6_frame(OUR_MAC, far, slaac, 60, &echo_req(slaac));
    f[6..12].copy_from_slice(&ROUTER_MAC.0);
    again.input(&f);
    let sent = v6(&again.tx());
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, ROUTER_MAC);
    again.finish();
    // The router leaves: off-link destinations have no way out.
    r.input(&ra_frame(0, None));
    let mut f = icmp6_frame(OUR_MAC, far, slaac, 60, &echo_req(slaac));
    f[6..12].copy_from_slice(&ROUTER_MAC.0);
    r.input(&f);
    assert!(v6(&r.tx()).is_empty());
    assert_eq!(r.stat(Stat::Ip6NoRoute), 1);
    // The address ends with its valid lifetime.
    r.advance(3600 * S);
    assert!(!r.core.records().any(|n| n.ip.as_v6() == Some(slaac)));
    r.finish();
}

#[test]
fn a_router_ignores_advertisements() {
    let mut cfg = config();
    cfg.ifaces[0].autoconf = false;
    cfg.limits.forwarding = true;
    let mut r = Rig::with(cfg);
    r.core.start(r.now, &mut r.pool, &mut r.out);
    r.advance(5 * S);
    assert_eq!(r.stat(Stat::NdTxRouterSolicits), 0);
    r.input(&ra_frame(1800, Some(("fd00:aa::".parse().unwrap(), 3600))));
    assert_eq!(r.stat(Stat::NdRaIgnored), 1);
    assert!(!r.core.records().any(|n| n.state == neigh_state::ROUTER));
    r.finish();
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    fn addr6() -> impl Strategy<Value = Ipv6Addr> {
        prop_oneof![
            Just(OUR_IP6),
            Just(PEER_IP6),
            Just(link_local_from_mac(OUR_MAC)),
            Just(link_local_from_mac(PEER_MAC)),
            Just(solicited_node(OUR_IP6)),
            Just(ALL_NODES),
            Just(Ipv6Addr::UNSPECIFIED),
            any::<u128>().prop_map(Ipv6Addr::from),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// ICMPv6 messages of every type with valid checksums and random
        /// bodies, addresses and hop limits, with time passing between
        /// them: no panic, no buffer kept once the timers ran out, and
        /// everything sent is a whole IPv6 packet.
        #[test]
        fn arbitrary_icmpv6_never_panics_or_leaks(
            msgs in proptest::collection::vec(
                (128u8..=137, proptest::collection::vec(any::<u8>(), 4..120),
                 addr6(), addr6(), prop_oneof![Just(255u8), any::<u8>()], 0u64..3),
                1..30),
            start in any::<bool>(),
        ) {
            let mut r = rig6();
            if start {
                r.core.start(r.now, &mut r.pool, &mut r.out);
            }
            for (ty, body, src, dst, hops, wait) in msgs {
                let mut m = vec![ty, 0, 0, 0];
                m.extend_from_slice(&body);
                let l2 = if dst.is_multicast() { multicast_mac(dst) } else { OUR_MAC };
                r.input(&icmp6_frame(l2, src, dst, hops, &m));
                r.advance(wait * S);
                for t in r.tx() {
                    if t.eth().ethertype == ethertype::IPV6 {
                        let h = Ipv6Header::parse(&t.bytes[14..]).unwrap();
                        prop_assert_eq!(40 + h.payload_len as usize, t.bytes.len() - 14);
                        prop_assert!(!h.src.is_multicast());
                    }
                }
            }
            r.finish();
        }
    }
}

/// A UDP packet over IPv6 (no Ethernet header) from `src` to `dst`,
/// behind `ext` (extension headers, the first byte of each its next
/// header), checksum filled as a transport would.
fn udp6(src: Ipv6Addr, dst: Ipv6Addr, ext: &[u8], payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut p = vec![0u8; 40 + ext.len() + len];
    Ipv6Header {
        traffic_class: 0,
        flow_label: 0,
        payload_len: (ext.len() + len) as u16,
        next_header: if ext.is_empty() { next_header::UDP } else { 60 },
        hop_limit: 64,
        src,
        dst,
    }
    .emit(&mut p)
    .unwrap();
    p[40..40 + ext.len()].copy_from_slice(ext);
    let u = &mut p[40 + ext.len()..];
    u[0..2].copy_from_slice(&5000u16.to_be_bytes());
    u[2..4].copy_from_slice(&7u16.to_be_bytes());
    u[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    u[8..].copy_from_slice(payload);
    let mut c = strata_proto::checksum::pseudo_header_v6(src, dst, 17, len as u32);
    c.add_bytes(u);
    let s = match c.finish() {
        0 => 0xffff,
        s => s,
    };
    u[6..8].copy_from_slice(&s.to_be_bytes());
    p
}

/// Whether UDP packet `p` (IPv6, no extension headers) checksums right.
fn udp6_checks(p: &[u8]) -> bool {
    let h = Ipv6Header::parse(p).unwrap();
    let mut c = strata_proto::checksum::pseudo_header_v6(h.src, h.dst, 17, p.len() as u32 - 40);
    c.add_bytes(&p[40..]);
    c.finish() == 0
}

fn frame6(packet: &[u8]) -> Vec<u8> {
    eth(OUR_MAC, PEER_MAC, ethertype::IPV6, packet)
}

#[test]
fn udp_over_ipv6_goes_up_past_extension_headers_and_errors_about_ours_follow() {
    let mut r = started();
    r.core.set_upper(next_header::UDP, true);
    // Destination options with a 4-byte PadN, then UDP.
    let opts = [next_header::UDP, 0, 1, 4, 0, 0, 0, 0];
    let p = udp6(PEER_IP6, OUR_IP6, &opts, b"hello");
    r.input(&frame6(&p));
    let up = r.up();
    assert_eq!(up.len(), 1);
    let (h, bytes) = &up[0];
    assert_eq!((h.ethertype, h.l3_off, h.l4_off), (ethertype::IPV6, 0, 48));
    assert_eq!(h.l4proto, next_header::UDP);
    assert_eq!(bytes, &p);
    assert_eq!(r.stat(Stat::Ip6Delivered), 1);
    // Port unreachable about a datagram we sent (a first fragment of
    // it): to udpd, whose datagram it was.
    let mut ours = udp6(OUR_IP6, PEER_IP6, &[], &[7; 32]);
    ours.truncate(48);
    let mut err = vec![1, 4, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&ours);
    r.input(&icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &err));
    assert_eq!(r.out.up.len(), 1);
    let h = r.out.up[0];
    assert_eq!((h.l4proto, h.l4_off), (next_header::ICMPV6, 40));
    assert_eq!(crate::upper_protocol(&r.pool, &h), next_header::UDP);
    r.up();
    // An error quoting too little to name the ports stays here.
    err.truncate(8 + 44);
    r.input(&icmp6_frame(OUR_MAC, PEER_IP6, OUR_IP6, 64, &err));
    assert!(r.up().is_empty());
    r.finish();
}

#[test]
fn tcp_over_ipv6_goes_up_and_not_to_a_group() {
    let mut r = started();
    r.core.set_upper(next_header::TCP, true);
    learn_peer(&mut r);
    let mut p = udp6(PEER_IP6, OUR_IP6, &[], &[0; 12]);
    p[6] = next_header::TCP;
    r.input(&frame6(&p));
    let up = r.up();
    assert_eq!(up.len(), 1);
    assert_eq!((up[0].0.l4proto, up[0].0.l4_off), (next_header::TCP, 40));
    // To all-nodes: no connection is to a group.
    let mut g = udp6(PEER_IP6, ALL_NODES, &[], &[0; 12]);
    g[6] = next_header::TCP;
    r.input(&eth(
        multicast_mac(ALL_NODES),
        PEER_MAC,
        ethertype::IPV6,
        &g,
    ));
    assert!(r.up().is_empty());
    // Without tcpd attached: port unreachable.
    r.core.set_upper(next_header::TCP, false);
    r.input(&frame6(&p));
    assert!(r.up().is_empty());
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1);
    assert_eq!(&sent[0].2[..2], &[1, 4], "port unreachable");
    r.finish();
}

#[test]
fn a_transport_packet_from_unspecified_gets_our_source_and_a_checksum_that_still_verifies() {
    let mut r = started();
    r.core.set_upper(next_header::UDP, true);
    learn_peer(&mut r);
    r.output(&udp6(Ipv6Addr::UNSPECIFIED, PEER_IP6, &[], b"to the peer"));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    let p = &tx[0].bytes[14..];
    let h = Ipv6Header::parse(p).unwrap();
    assert_eq!((h.src, h.dst), (OUR_IP6, PEER_IP6));
    assert!(udp6_checks(p));
    // A link-local peer is answered from our link-local address.
    let ll_peer = link_local_from_mac(PEER_MAC);
    r.output(&udp6(Ipv6Addr::UNSPECIFIED, ll_peer, &[], b"x"));
    let sent = all_v6(&r.tx());
    assert_eq!(
        sent.len(),
        1,
        "a solicitation for the peer's link-local address"
    );
    assert_eq!(sent[0].1.src, link_local_from_mac(OUR_MAC));
    // Larger than the MTU: fragments at the source, which reassemble
    // to a datagram that verifies.
    r.output(&udp6(Ipv6Addr::UNSPECIFIED, PEER_IP6, &[], &pattern(4000)));
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|(_, h, _)| h.src == OUR_IP6));
    assert_eq!(r.stat(Stat::Frag6OutPackets), 1);
    // To our own address: straight back up, from it.
    r.output(&udp6(Ipv6Addr::UNSPECIFIED, OUR_IP6, &[], b"self"));
    let up = r.up();
    assert_eq!(up.len(), 1);
    assert_eq!(Ipv6Header::parse(&up[0].1).unwrap().src, OUR_IP6);
    assert!(udp6_checks(&up[0].1));
    assert_eq!(up[0].0.l4_off, 40);
    // A datagram no socket took is answered with port unreachable.
    r.input(&frame6(&udp6(PEER_IP6, OUR_IP6, &[], b"nobody")));
    let h = r.out.up.pop().expect("delivered");
    r.core.port_unreachable(r.now, &mut r.pool, &h, &mut r.out);
    r.pool.free(&h);
    let sent = v6(&r.tx());
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].1.src, sent[0].1.dst), (OUR_IP6, PEER_IP6));
    assert_eq!(&sent[0].2[..2], &[1, 4]);
    r.finish();
}

#[test]
fn the_loopback_address_comes_straight_back_up_and_never_from_the_link() {
    let mut r = started();
    r.core.set_upper(next_header::UDP, true);
    let lo = Ipv6Addr::LOCALHOST;
    r.output(&udp6(Ipv6Addr::UNSPECIFIED, lo, &[], b"to ::1"));
    let up = r.up();
    assert_eq!(up.len(), 1);
    let hdr = Ipv6Header::parse(&up[0].1).unwrap();
    assert_eq!((hdr.src, hdr.dst), (lo, lo));
    assert!(udp6_checks(&up[0].1));
    assert_eq!(up[0].0.iif, strata_ipc::handle::NO_IFACE);
    assert!(r.tx().is_empty());
    // From ::1 to elsewhere: never leaves.
    r.output(&udp6(lo, PEER_IP6, &[], b"leak"));
    assert_eq!(r.stat(Stat::Ip6MartianSource), 1);
    // From the link, either way: dropped.
    r.input(&frame6(&udp6(lo, OUR_IP6, &[], b"x")));
    r.input(&frame6(&udp6(PEER_IP6, lo, &[], b"x")));
    assert_eq!(r.stat(Stat::Ip6MartianSource), 2);
    assert_eq!(r.stat(Stat::Ip6NotForUs), 1);
    assert!(r.up().is_empty() && r.tx().is_empty());
    r.finish();
}

#[test]
fn a_datagram_to_a_closed_port_on_the_loopback_address_is_answered_there() {
    let mut r = started();
    r.core.set_upper(next_header::UDP, true);
    let lo = Ipv6Addr::LOCALHOST;
    r.output(&udp6(Ipv6Addr::UNSPECIFIED, lo, &[], b"nobody"));
    let h = r.out.up.pop().expect("back up");
    r.core.port_unreachable(r.now, &mut r.pool, &h, &mut r.out);
    r.pool.free(&h);
    // The error comes back up from ::1 to ::1, for udpd.
    assert_eq!(r.out.up.len(), 1);
    let e = r.out.up[0];
    assert_eq!((e.l4proto, e.l4_off), (next_header::ICMPV6, 40));
    assert_eq!(crate::upper_protocol(&r.pool, &e), next_header::UDP);
    let up = r.up();
    let hdr = Ipv6Header::parse(&up[0].1).unwrap();
    assert_eq!((hdr.src, hdr.dst), (lo, lo));
    assert_eq!(&up[0].1[40..42], &[1, 4]);
    assert!(r.tx().is_empty());
    r.finish();
}
