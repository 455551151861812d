//! ARP and the neighbour cache, through the core.

use super::*;
use crate::neigh_state;
use strata_proto::arp::{OP_REPLY, OP_REQUEST};
use strata_proto::ipv4::protocol;

fn request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        MacAddr::BROADCAST,
        &ArpPacket::request(sender_mac, sender_ip, target_ip),
    )
}

#[test]
fn request_for_our_address_gets_an_exact_reply_in_the_same_buffer() {
    let mut r = Rig::new();
    let h = r.input(&request(PEER_MAC, PEER_IP, OUR_IP));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    let mut want = vec![
        0x02, 0, 0, 0, 0, 0x02, // dst: the asker
        0x02, 0, 0, 0, 0, 0x01, // src: us
        0x08, 0x06, // ARP
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02, // Ethernet/IPv4 reply
        0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 1, // sender: us
        0x02, 0, 0, 0, 0, 0x02, 10, 0, 0, 2, // target: the asker
    ];
    assert_eq!(tx[0].bytes, want);
    assert_eq!(tx[0].h.buf, h.buf, "reply reuses the request's buffer");
    assert_eq!(tx[0].h.oif, IFACE);
    // The asker was learned (STALE: a request confirms no path).
    let n: Vec<_> = r.core.neighbours().collect();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].ip, crate::NeighAddr::v4(u32::from(PEER_IP)));
    assert_eq!(n[0].mac, PEER_MAC.0);
    assert_eq!(n[0].iface, IFACE);
    assert_eq!(n[0].state, neigh_state::STALE);
    assert!(r.core.neighbours_changed());
    assert!(!r.core.neighbours_changed());
    assert_eq!(r.stat(Stat::ArpRxRequests), 1);
    assert_eq!(r.stat(Stat::ArpTxReplies), 1);

    // A padded request (60-byte Ethernet minimum) gets the same reply.
    let mut padded = request(PEER_MAC, PEER_IP, OUR_IP);
    padded.resize(60, 0);
    r.input(&padded);
    want.truncate(42);
    assert_eq!(r.tx()[0].bytes, want);
    r.finish();
}

#[test]
fn request_for_another_address_is_ignored_and_teaches_nothing() {
    let mut r = Rig::new();
    r.input(&request(PEER_MAC, PEER_IP, Ipv4Addr::new(10, 0, 0, 9)));
    assert!(r.tx().is_empty());
    assert_eq!(r.core.neighbours().count(), 0);
    assert_eq!(r.stat(Stat::ArpNotForUs), 1);
    r.finish();
}

#[test]
fn replies_confirm_and_known_senders_are_merged() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    let n: Vec<_> = r.core.neighbours().collect();
    assert_eq!(n[0].state, neigh_state::REACHABLE);
    assert_eq!(n[0].updated_ns, r.now);

    // A gratuitous ARP from a known neighbour with a new MAC updates it...
    let new_mac = MacAddr([0x02, 0, 0, 0, 0, 0x22]);
    r.core.neighbours_changed();
    r.input(&request(new_mac, PEER_IP, PEER_IP));
    assert_eq!(r.core.neighbours().next().unwrap().mac, new_mac.0);
    assert!(r.core.neighbours_changed());
    // ...but one from a stranger creates nothing (Linux arp_accept=0).
    r.input(&request(GW_MAC, GW_IP, GW_IP));
    assert_eq!(r.core.neighbours().count(), 1);
    assert!(r.tx().is_empty());
    r.finish();
}

#[test]
fn unusable_senders_are_never_learned() {
    let mut r = Rig::new();
    let cases = [
        (PEER_MAC, OUR_IP),                       // our own address
        (PEER_MAC, Ipv4Addr::new(10, 0, 0, 255)), // subnet broadcast
        (PEER_MAC, Ipv4Addr::BROADCAST),
        (PEER_MAC, Ipv4Addr::new(224, 0, 0, 1)),
        (MacAddr::BROADCAST, PEER_IP),
        (MacAddr([0x01, 0, 0x5e, 0, 0, 1]), PEER_IP),
        (MacAddr::ZERO, PEER_IP),
    ];
    for (mac, ip) in cases {
        r.input(&request(mac, ip, OUR_IP));
    }
    assert_eq!(r.stat(Stat::ArpInvalidSender), cases.len() as u64);
    assert_eq!(r.core.neighbours().count(), 0);
    assert!(r.tx().is_empty());

    // An RFC 5227 probe (sender 0.0.0.0) for our address is answered, so
    // the prober sees the address is taken, but teaches nothing.
    r.input(&request(PEER_MAC, Ipv4Addr::UNSPECIFIED, OUR_IP));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    let a = tx[0].arp();
    assert_eq!(
        (a.op, a.target_ip, a.target_mac),
        (OP_REPLY, Ipv4Addr::UNSPECIFIED, PEER_MAC)
    );
    assert_eq!(r.core.neighbours().count(), 0);
    r.finish();
}

#[test]
fn gratuitous_arp_for_every_address_at_start() {
    let mut cfg = config();
    cfg.ifaces[0]
        .addrs
        .push((Ipv4Addr::new(192, 168, 9, 1), 24));
    cfg.ifaces.push(IfaceConfig {
        index: 4,
        mac: MacAddr([0x02, 0, 0, 0, 4, 4]),
        addrs: vec![(Ipv4Addr::new(172, 16, 0, 1), 16)],
        mtu: 9000,
        addrs6: vec![],
        autoconf: false,
    });
    let mut r = Rig::with(cfg);
    r.core.start(r.now, &mut r.pool, &mut r.out);
    // IPv6 duplicate address detection starts too (tests/ip6.rs).
    let tx: Vec<Tx> = r
        .tx()
        .into_iter()
        .filter(|t| t.eth().ethertype == ethertype::ARP)
        .collect();
    assert_eq!(tx.len(), 3);
    for (t, (mac, ip, oif)) in tx.iter().zip([
        (OUR_MAC, OUR_IP, IFACE),
        (OUR_MAC, Ipv4Addr::new(192, 168, 9, 1), IFACE),
        (
            MacAddr([0x02, 0, 0, 0, 4, 4]),
            Ipv4Addr::new(172, 16, 0, 1),
            4,
        ),
    ]) {
        assert_eq!(t.bytes.len(), 42);
        assert_eq!(t.eth().dst, MacAddr::BROADCAST);
        assert_eq!(t.eth().src, mac);
        assert_eq!(t.arp(), ArpPacket::request(mac, ip, ip));
        assert_eq!(t.h.oif, oif);
    }
    assert_eq!(r.stat(Stat::ArpTxRequests), 3);
    r.finish();
}

fn udp_to(dst: Ipv4Addr, n: u8) -> Vec<u8> {
    let mut ip = Ip::new(protocol::UDP);
    ip.src = OUR_IP;
    ip.dst = dst;
    ip.ident = u16::from(n);
    ip.build(&[0, 1, 0, 2, 0, 12, 0, 0, n, n, n, n])
}

#[test]
fn output_to_unresolved_neighbour_queues_until_the_reply() {
    let mut r = Rig::new();
    r.output(&udp_to(PEER_IP, 1));
    r.output(&udp_to(PEER_IP, 2));
    let tx = r.tx();
    assert_eq!(tx.len(), 1, "one request for both packets");
    let a = tx[0].arp();
    assert_eq!(a, ArpPacket::request(OUR_MAC, OUR_IP, PEER_IP));
    assert_eq!(tx[0].eth().dst, MacAddr::BROADCAST);
    assert_eq!(r.core.next_deadline(), Some(r.now + S));

    let reply = ArpPacket::request(PEER_MAC, PEER_IP, OUR_IP).reply(PEER_MAC);
    let reply = ArpPacket {
        sender_ip: PEER_IP,
        target_ip: OUR_IP,
        target_mac: OUR_MAC,
        ..reply
    };
    assert_eq!(reply.op, OP_REPLY);
    r.input(&arp_frame(OUR_MAC, &reply));
    let tx = r.tx();
    assert_eq!(tx.len(), 2);
    for (t, n) in tx.iter().zip([1u8, 2]) {
        assert_eq!(t.eth().dst, PEER_MAC);
        assert_eq!(t.eth().src, OUR_MAC);
        assert_eq!(t.ip(), &udp_to(PEER_IP, n)[..]);
        assert_eq!(t.h.nexthop, u32::from(PEER_IP));
        assert_eq!((t.h.l3_off, t.h.l4_off), (14, 34));
    }
    // Resolved: the next packet goes straight out.
    r.output(&udp_to(PEER_IP, 3));
    assert_eq!(r.tx().len(), 1);
    r.finish();
}

#[test]
fn three_unanswered_requests_fail_and_drop_the_queue() {
    let mut r = Rig::new();
    r.output(&udp_to(PEER_IP, 1));
    r.output(&udp_to(PEER_IP, 2));
    assert_eq!(r.tx().len(), 1);
    assert_eq!(r.advance(S - 1), Some(r.now + 1));
    assert!(r.tx().is_empty());
    r.advance(1);
    assert_eq!(r.tx()[0].arp().target_ip, PEER_IP);
    r.advance(S);
    assert_eq!(r.tx()[0].arp().target_ip, PEER_IP);
    assert_eq!(r.stat(Stat::ArpTxRequests), 3);
    r.advance(S);
    assert!(r.tx().is_empty());
    assert_eq!(r.stat(Stat::NeighFailed), 1);
    assert_eq!(r.stat(Stat::ArpFailed), 2);
    assert_eq!(r.pool.in_use(), 0);
    // A new packet starts over.
    r.output(&udp_to(PEER_IP, 3));
    assert_eq!(r.tx()[0].arp().target_ip, PEER_IP);
    r.finish();
}

#[test]
fn resolution_queue_is_bounded_and_drops_the_oldest() {
    let mut r = Rig::new();
    for n in 1..=5 {
        r.output(&udp_to(PEER_IP, n));
    }
    assert_eq!(r.stat(Stat::UnresQueueFull), 2);
    r.tx();
    let reply = ArpPacket {
        op: OP_REPLY,
        sender_mac: PEER_MAC,
        sender_ip: PEER_IP,
        target_mac: OUR_MAC,
        target_ip: OUR_IP,
    };
    r.input(&arp_frame(OUR_MAC, &reply));
    let sent: Vec<u8> = r.tx().iter().map(|t| t.ip()[20 + 8]).collect();
    assert_eq!(sent, [3, 4, 5]);
    r.finish();
}

#[test]
fn stale_neighbour_is_used_and_refreshed_with_a_unicast_request() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    r.advance(31 * S);
    r.output(&udp_to(PEER_IP, 1));
    let tx = r.tx();
    assert_eq!(tx.len(), 2);
    assert_eq!(tx[0].arp().op, OP_REQUEST);
    assert_eq!(tx[0].eth().dst, PEER_MAC, "unicast refresh");
    assert_eq!(tx[1].eth().dst, PEER_MAC);
    // The answer makes it REACHABLE again; no more probes.
    r.learn(PEER_IP, PEER_MAC);
    r.advance(S);
    assert!(r.tx().is_empty());
    assert_eq!(
        r.core.neighbours().next().unwrap().state,
        neigh_state::REACHABLE
    );
    // Unused, it ages to STALE and is collected.
    r.advance(100 * S);
    r.advance(100 * S);
    assert_eq!(r.core.neighbours().count(), 0);
    r.finish();
}

#[test]
fn neighbours_survive_export_and_restore() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    r.learn(GW_IP, GW_MAC);
    let recs: Vec<_> = r.core.neighbours().collect();
    assert_eq!(recs.len(), 2);
    r.finish();

    let mut r = Rig::new();
    r.core.restore_neighbours(r.now, &recs);
    assert_eq!(r.core.neighbours().count(), 2);
    r.output(&udp_to(PEER_IP, 1));
    r.output(&udp_to(Ipv4Addr::new(8, 8, 8, 8), 2));
    let tx = r.tx();
    assert_eq!(tx.len(), 2, "no ARP needed");
    assert_eq!(tx[0].eth().dst, PEER_MAC);
    assert_eq!(tx[1].eth().dst, GW_MAC);
    // Records for unknown interfaces or unusable addresses are skipped.
    let mut bad = recs[0];
    bad.iface = 9;
    let mut bcast = recs[0];
    bcast.ip = crate::NeighAddr::v4(u32::from(Ipv4Addr::new(10, 0, 0, 255)));
    let mut r2 = Rig::new();
    r2.core.restore_neighbours(r2.now, &[bad, bcast]);
    assert_eq!(r2.core.neighbours().count(), 0);
    r2.finish();
    r.finish();
}

#[test]
fn neighbour_table_full_drops_and_counts() {
    let mut r = Rig::with_limits(|l| l.neigh_capacity = 2);
    r.output(&udp_to(PEER_IP, 1));
    r.output(&udp_to(Ipv4Addr::new(10, 0, 0, 3), 1));
    r.output(&udp_to(Ipv4Addr::new(10, 0, 0, 4), 1));
    assert_eq!(r.stat(Stat::NeighTableFull), 1);
    assert_eq!(r.tx().len(), 2);
    r.finish();
}

fn permanent(ip: Ipv4Addr, mac: MacAddr) -> strata_ipc::runtime::StaticNeigh {
    strata_ipc::runtime::StaticNeigh {
        ip,
        mac: mac.0,
        iface: IFACE,
    }
}

#[test]
fn a_permanent_neighbour_is_used_without_asking_and_never_relearnt_aged_or_flushed() {
    let mut cfg = config();
    cfg.neighbours = vec![permanent(PEER_IP, PEER_MAC)];
    let mut r = Rig::with(cfg);
    r.output(&udp_to(PEER_IP, 1));
    let tx = r.tx();
    assert_eq!(tx.len(), 1, "no ARP request: {tx:?}");
    assert_eq!(tx[0].eth().dst, PEER_MAC);
    // Another MAC claimed by the network does not replace it.
    r.learn(PEER_IP, GW_MAC);
    r.advance(1000 * S);
    r.core.flush_neighbours(&mut r.pool, None);
    r.output(&udp_to(PEER_IP, 2));
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].eth().dst, PEER_MAC);
    let recs: Vec<_> = r.core.neighbours().collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].state, neigh_state::PERMANENT);
    // Exported records of permanent entries are not restored as learnt
    // ones: the configuration brings them back.
    let mut fresh = Rig::new();
    fresh.core.restore_neighbours(fresh.now, &recs);
    assert_eq!(fresh.core.neighbours().count(), 0);
    fresh.finish();
    r.finish();
}

#[test]
fn flushing_one_address_forgets_only_that_learnt_neighbour() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    r.learn(GW_IP, GW_MAC);
    r.core
        .flush_neighbours(&mut r.pool, Some(u32::from(PEER_IP)));
    let left: Vec<_> = r.core.neighbours().map(|n| n.ip).collect();
    assert_eq!(left, [crate::NeighAddr::v4(u32::from(GW_IP))]);
    r.finish();
}

#[test]
fn reconfiguring_installs_and_removes_permanent_neighbours_and_sends_what_waited() {
    let mut r = Rig::new();
    // A packet waits for resolution...
    r.output(&udp_to(PEER_IP, 1));
    assert_eq!(r.tx()[0].arp().target_ip, PEER_IP);
    // ...and goes once the neighbour is made permanent.
    let mut cfg = config();
    cfg.neighbours = vec![permanent(PEER_IP, PEER_MAC)];
    r.core
        .reconfigure(r.now, &mut r.pool, &cfg, &mut r.out)
        .unwrap();
    let tx = r.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].eth().dst, PEER_MAC);
    assert_eq!(tx[0].ip(), &udp_to(PEER_IP, 1)[..]);
    // Taken out of the configuration, it is resolved again.
    r.core
        .reconfigure(r.now, &mut r.pool, &config(), &mut r.out)
        .unwrap();
    assert_eq!(r.core.neighbours().count(), 0);
    r.output(&udp_to(PEER_IP, 2));
    assert_eq!(r.tx()[0].arp().target_ip, PEER_IP);
    r.finish();
}

#[test]
fn reconfiguring_changes_addresses_and_routes_but_not_interfaces() {
    let mut r = Rig::new();
    let new_ip = Ipv4Addr::new(10, 0, 0, 9);
    let mut cfg = config();
    cfg.ifaces[0].addrs.push((new_ip, 24));
    cfg.routes.clear();
    r.core
        .reconfigure(r.now, &mut r.pool, &cfg, &mut r.out)
        .unwrap();
    // The new address answers ARP; the default route is gone.
    r.input(&arp_frame(
        MacAddr::BROADCAST,
        &ArpPacket::request(PEER_MAC, PEER_IP, new_ip),
    ));
    assert_eq!(r.tx()[0].arp().sender_ip, new_ip);
    r.output(&udp_to(Ipv4Addr::new(8, 8, 8, 8), 1));
    assert!(r.tx().is_empty());
    assert_eq!(r.stat(Stat::NoRoute), 1);
    // Other interfaces are refused, and the old configuration stays.
    let mut other = cfg.clone();
    other.ifaces[0].index = IFACE + 1;
    assert_eq!(
        r.core.reconfigure(r.now, &mut r.pool, &other, &mut r.out),
        Err(crate::ConfigError::IfacesChanged)
    );
    r.input(&arp_frame(
        MacAddr::BROADCAST,
        &ArpPacket::request(PEER_MAC, PEER_IP, new_ip),
    ));
    assert_eq!(r.tx().len(), 1);
    r.finish();
}
