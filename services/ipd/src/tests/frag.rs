//! Reassembly on input and fragmentation on output, end to end.

use super::*;
use strata_ipc::LARGE_BUF;
use strata_proto::checksum::verify;
use strata_proto::ipv4::protocol;

/// An echo request datagram with `n` bytes of data.
fn echo_request(ident: u16, n: usize) -> Vec<u8> {
    let mut ip = Ip::new(protocol::ICMP);
    ip.ident = ident;
    ip.build(&echo_msg(8, ident, 1, &pattern(n)))
}

fn frames(frags: &[Vec<u8>], order: &[usize]) -> Vec<Vec<u8>> {
    order
        .iter()
        .map(|&i| eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &frags[i]))
        .collect()
}

/// Checks that `tx` is the fragmented echo reply to `req`: every frame fits
/// the MTU, and putting them together gives the reply.
fn check_fragmented_reply(tx: &[Tx], req: &[u8]) {
    assert!(tx.len() > 1);
    for t in tx {
        assert!(t.bytes.len() <= 14 + 1500);
        assert_eq!(t.eth().dst, PEER_MAC);
        assert_eq!((t.h.l3_off, t.h.l4_off, t.h.oif), (14, 34, IFACE));
    }
    let frags: Vec<&[u8]> = tx.iter().map(|t| t.ip()).collect();
    let reply = reassemble(&frags);
    let h = Ipv4Header::parse(&reply).unwrap();
    assert_eq!((h.src, h.dst, h.protocol), (OUR_IP, PEER_IP, 1));
    assert_eq!(reply.len(), req.len());
    assert!(verify(&reply[20..]), "ICMP checksum of the whole reply");
    assert_eq!(reply[20], 0);
    assert_eq!(reply[24..], req[24..], "id, seq and data intact");
}

fn ping(r: &mut Rig, req: &[u8], order: &[usize]) -> Vec<Tx> {
    let frags = fragment(req, 1480);
    for f in frames(&frags, order) {
        r.input(&f);
    }
    r.tx()
}

#[test]
fn ping_4000_and_20000_bytes_in_order() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    let req = echo_request(1, 4000);
    let tx = ping(&mut r, &req, &[0, 1, 2]);
    assert_eq!(tx.len(), 3);
    check_fragmented_reply(&tx, &req);
    assert_eq!(r.stat(Stat::FragReassembled), 1);
    assert_eq!(r.stat(Stat::FragOutCreated), 3);

    let req = echo_request(2, 20000);
    let order: Vec<usize> = (0..14).collect();
    let tx = ping(&mut r, &req, &order);
    assert_eq!(tx.len(), 14);
    check_fragmented_reply(&tx, &req);
    assert_eq!(r.stat(Stat::FragOutDatagrams), 2);
    r.finish();
}

#[test]
fn out_of_order_and_duplicate_fragments() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    let req = echo_request(3, 4000);
    let tx = ping(&mut r, &req, &[2, 0, 2, 0]);
    assert!(tx.is_empty());
    assert_eq!(r.stat(Stat::FragDuplicate), 2);
    let tx = ping(&mut r, &req, &[1]);
    check_fragmented_reply(&tx, &req);

    let req = echo_request(4, 20000);
    let order: Vec<usize> = (0..14).rev().chain([5, 9]).collect();
    let tx = ping(&mut r, &req, &order);
    check_fragmented_reply(&tx, &req);
    // The two late duplicates opened a new reassembly: it times out
    // without fragment 0, silently.
    r.advance(31 * S);
    assert!(r.tx().iter().all(|t| t.eth().ethertype == ethertype::ARP));
    assert_eq!(r.stat(Stat::FragTimeout), 1);
    r.finish();
}

#[test]
fn overlapping_fragments_drop_the_datagram() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    let req = echo_request(5, 4000);
    let frags = fragment(&req, 1480);
    r.input(&eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &frags[0]));
    // A fragment at offset 1472 overlapping fragment 0's last 8 bytes.
    let mut ip = Ip::new(protocol::ICMP);
    ip.ident = 5;
    ip.off = 1472;
    ip.mf = true;
    r.input(&ip.frame(&pattern(16)));
    assert_eq!(r.stat(Stat::FragOverlap), 1);
    assert_eq!(r.pool.in_use(), 0, "reassembly freed at once");
    // The rest no longer completes anything.
    for f in frames(&frags, &[1, 2]) {
        r.input(&f);
    }
    assert!(r.tx().is_empty());
    r.finish();
}

#[test]
fn too_big_bad_length_and_inconsistent_fragments() {
    let mut r = Rig::new();
    let mut ip = Ip::new(protocol::UDP);
    ip.off = 65528;
    r.input(&ip.frame(&[0; 16]));
    assert_eq!(r.stat(Stat::FragTooBig), 1);
    ip.off = 0;
    ip.mf = true;
    r.input(&ip.frame(&[0; 12]));
    assert_eq!(r.stat(Stat::FragBadLength), 1);
    ip.off = 16;
    ip.mf = false;
    r.input(&ip.frame(&[0; 8]));
    ip.off = 32;
    ip.mf = true;
    r.input(&ip.frame(&[0; 8]));
    assert_eq!(r.stat(Stat::FragInconsistent), 1);
    assert_eq!(r.pool.in_use(), 0);
    r.finish();
}

#[test]
fn memory_and_slot_limits() {
    let mut r = Rig::with_limits(|l| {
        l.frag_mem_per_src = LARGE_BUF;
        l.max_reassemblies = 2;
    });
    let first = |ident: u16, src: Ipv4Addr| {
        let mut ip = Ip::new(protocol::UDP);
        ip.ident = ident;
        ip.src = src;
        ip.mf = true;
        ip.frame(&[0; 8])
    };
    r.input(&first(1, PEER_IP));
    r.input(&first(2, PEER_IP));
    assert_eq!(r.stat(Stat::FragMemLimit), 1, "one per source");
    r.input(&first(3, GW_IP));
    r.input(&first(4, Ipv4Addr::new(10, 0, 0, 3)));
    assert_eq!(r.stat(Stat::FragTableFull), 1);
    // Fragments of a datagram in progress still get in.
    let mut ip = Ip::new(protocol::UDP);
    ip.ident = 1;
    ip.off = 8;
    r.input(&ip.frame(&[0; 8]));
    assert_eq!(r.stat(Stat::FragReassembled), 1);
    assert_eq!(r.stat(Stat::UpperNotAttached), 1);
    r.finish();
}

#[test]
fn reassembly_needs_a_large_buffer() {
    let mut r = Rig::new();
    r.pool = strata_ipc::HeapPool::new(16, 0);
    let mut ip = Ip::new(protocol::UDP);
    ip.mf = true;
    r.input(&ip.frame(&[0; 8]));
    assert_eq!(r.stat(Stat::PoolExhausted), 1);
    r.finish();
}

fn udp_from_us(n: usize, df: bool) -> Vec<u8> {
    let mut ip = Ip::new(protocol::UDP);
    ip.src = OUR_IP;
    ip.dst = PEER_IP;
    ip.df = df;
    ip.ident = 77;
    ip.build(&pattern(n))
}

#[test]
fn output_fragments_unless_df() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    r.output(&udp_from_us(1480, true));
    assert_eq!(r.tx().len(), 1, "exactly the MTU: one frame");
    r.output(&udp_from_us(1481, true));
    assert!(r.tx().is_empty());
    assert_eq!(r.stat(Stat::DfTooBig), 1);
    let d = udp_from_us(3000, false);
    r.output(&d);
    let tx = r.tx();
    assert_eq!(tx.len(), 3);
    let sizes: Vec<usize> = tx.iter().map(|t| t.ip().len()).collect();
    assert_eq!(sizes, [1500, 1500, 60]);
    let frags: Vec<&[u8]> = tx.iter().map(|t| t.ip()).collect();
    assert_eq!(reassemble(&frags), d);
    r.finish();
}

#[test]
fn fragments_carry_only_copied_options_after_the_first() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    let mut ip = Ip::new(protocol::UDP);
    ip.src = OUR_IP;
    ip.dst = PEER_IP;
    // Record route (not copied) and a copied option (LSRR-shaped).
    ip.options = vec![7, 3, 4, 131, 3, 4, 0, 0];
    let d = ip.build(&pattern(2000));
    r.output(&d);
    let tx = r.tx();
    assert_eq!(tx.len(), 2);
    assert_eq!(tx[0].ip()[20..28], [7, 3, 4, 131, 3, 4, 0, 0]);
    assert_eq!(tx[1].ip()[20..28], [1, 1, 1, 131, 3, 4, 0, 0]);
    assert_eq!(tx[0].ip().len(), 28 + 1472);
    assert_eq!(tx[1].ip_hdr().frag_offset, 1472);
    let frags: Vec<&[u8]> = tx.iter().map(|t| t.ip()).collect();
    assert_eq!(reassemble(&frags)[28..], d[28..]);
    r.finish();
}

#[test]
fn fragmentation_without_buffers_sends_nothing() {
    let mut r = Rig::new();
    r.learn(PEER_IP, PEER_MAC);
    r.pool = strata_ipc::HeapPool::new(3, 1);
    let d = udp_from_us(5000, false);
    r.output(&d);
    assert!(r.tx().is_empty(), "all or nothing");
    assert_eq!(r.stat(Stat::PoolExhausted), 1);
    r.finish();
}
