//! What a hostile peer can make tcpd hold: out-of-order data is charged
//! in whole buffers against four times the connection's receive buffer,
//! pruned from the far end for data nearer the hole, and not kept at all
//! while the pool is short.

use super::*;
use crate::Stat;
use strata_ipc::SMALL_BUF;

/// The out-of-order cap of a fresh connection of the test config, in
/// small buffers: four times the 64 KiB receive buffer.
const CAP_BUFS: u64 = 4 * 65536 / SMALL_BUF as u64;

#[test]
fn one_byte_holes_hold_a_bounded_number_of_buffers() {
    let (mut h, iss) = H::established(TcpOptions::default());
    let data = pattern(48_000, 9);
    let base = h.pool.in_use() as u64;
    // A byte every 16: 3,000 segments, each of which would keep a buffer.
    for off in (1..data.len()).step_by(16) {
        h.peer(ACK, PISS + 1 + off as u32, iss + 1, &data[off..off + 1]);
        h.segs.clear();
    }
    let held = h.pool.in_use() as u64 - base;
    assert!(held <= CAP_BUFS, "{held} buffers held");
    assert!(
        held >= CAP_BUFS - 2,
        "the cap is used, not undercut: {held}"
    );
    assert!(h.core.stats().get(Stat::OooDropped) >= 3_000 - CAP_BUFS);
    // The connection still works: the peer sends everything in order.
    for off in (0..data.len()).step_by(500) {
        h.peer(ACK, PISS + 1 + off as u32, iss + 1, &data[off..off + 500]);
    }
    assert_eq!(h.data_for(2), data);
    assert_eq!(h.conn().ooo_q, 0);
    h.finish();
}

#[test]
fn data_nearer_the_hole_displaces_the_farthest() {
    let (mut h, iss) = H::established(TcpOptions::default());
    let data = pattern(60_000, 4);
    // Far out: more one-byte segments than the cap holds.
    for k in 0..CAP_BUFS as usize + 8 {
        let off = 20_000 + 100 * k;
        h.peer(ACK, PISS + 1 + off as u32, iss + 1, &data[off..off + 1]);
    }
    let kept = h.conn().ooo_q;
    assert_eq!(u64::from(kept), CAP_BUFS);
    assert_eq!(h.core.stats().get(Stat::OooPruned), 0);
    // A segment just past the hole: the farthest one goes for it.
    h.peer(ACK, PISS + 1 + 10, iss + 1, &data[10..11]);
    assert_eq!(h.core.stats().get(Stat::OooPruned), 1);
    assert_eq!(h.conn().ooo_q, kept);
    // The hole filled: byte 10 was kept, so 11 bytes go up at once.
    h.peer(ACK, PISS + 1, iss + 1, &data[..10]);
    assert_eq!(h.data_for(2), data[..11]);
    h.finish();
}

#[test]
fn a_short_pool_keeps_no_out_of_order_data_but_takes_in_order_data() {
    let (mut h, iss) = H::established(TcpOptions::default());
    h.core.set_pool_short(true, false);
    let data = pattern(1_000, 2);
    h.peer(ACK, PISS + 1 + 500, iss + 1, &data[500..]);
    assert_eq!(h.conn().ooo_q, 0);
    assert_eq!(h.core.stats().get(Stat::OooDropped), 1);
    // Still acknowledged at once (the duplicate ACK the peer's fast
    // retransmit needs).
    assert_eq!(h.expect(ACK).ack(), PISS + 1);
    h.peer(ACK, PISS + 1, iss + 1, &data[..500]);
    assert_eq!(h.data_for(2), data[..500]);
    h.core.set_pool_short(false, false);
    h.peer(ACK, PISS + 1 + 500, iss + 1, &data[500..]);
    assert_eq!(h.data_for(2), data[500..]);
    h.finish();
}

#[test]
fn out_of_order_data_across_connections_stays_under_its_share_of_the_pool() {
    let mut h = H::with(TcpConfig {
        max_ooo_segs: 10,
        ..config()
    });
    h.listen(1, LPORT, 16);
    let iss = h.accept(2, TcpOptions::default());
    let data = pattern(100, 6);
    for k in 0..12u32 {
        let off = 2 * k as usize + 1;
        h.peer(ACK, PISS + 1 + off as u32, iss + 1, &data[off..off + 1]);
    }
    // Ten kept (give or take the segment in flight when the count is
    // read), the rest dropped.
    let kept = h.conn().ooo_q;
    assert!((10..=11).contains(&kept), "{kept} kept");
    assert_eq!(h.core.stats().get(Stat::OooDropped), 12 - u64::from(kept));
    // A restarted tcpd counts what its arena holds: still no room.
    h.restart(None);
    h.peer(ACK, PISS + 1 + 25, iss + 1, &data[25..26]);
    assert_eq!(h.conn().ooo_q, kept);
    // The holes filled, they are delivered, and the share is free again.
    h.peer(ACK, PISS + 1, iss + 1, &data[..30]);
    assert_eq!(h.conn().ooo_q, 0);
    h.segs.clear();
    h.peer(ACK, PISS + 1 + 40, iss + 1, &data[40..41]);
    assert_eq!(h.conn().ooo_q, 1, "room again");
    h.finish();
}

#[test]
fn a_small_receive_ring_bounds_what_is_delivered_and_then_the_window() {
    let (mut h, iss) = H::established(TcpOptions::default());
    h.setopt(2, tcp_opt::RCVBUF, 4096);
    let data = pattern(80_000, 8);
    // The peer sends all it may: the window offered before (64 KiB) is
    // honoured (its edge never moves back), beyond it the segments are
    // dropped and come again later.
    for off in (0..data.len()).step_by(500) {
        h.peer(ACK, PISS + 1 + off as u32, iss + 1, &data[off..off + 500]);
    }
    // sockd gets no more than the ring holds (the rest waits in tcpd)...
    let got = h.data_for(2);
    assert!(got.len() <= 4096, "{} bytes delivered unread", got.len());
    assert_eq!(got, data[..got.len()]);
    // ...and once the old edge is reached, the window is the ring's.
    let last = h.segs.back().expect("ACKs").tcp.window;
    assert!(u32::from(last) <= 4096, "window {last}");
    h.finish();
}

#[test]
fn without_a_large_buffer_queued_writes_go_out_one_segment_each() {
    let (mut h, iss) = H::established(TcpOptions {
        mss: Some(1000),
        ..TcpOptions::default()
    });
    // The peer's window is shut while ten one-segment writes queue up.
    h.pwin = 0;
    h.peer(ACK, PISS + 1, iss + 1, &[]);
    let data = pattern(10_000, 4);
    for k in 0..10 {
        h.send(2, &data[k * 1000..(k + 1) * 1000]);
    }
    h.segs.clear();
    // Every large buffer taken: the super-segment that would copy the ten
    // together has nowhere to go.
    let mut hog = Vec::new();
    while let Some(b) = h.pool.alloc(SMALL_BUF * 2) {
        hog.push(b);
    }
    h.pwin = 65535;
    h.peer(ACK, PISS + 1, iss + 1, &[]);
    let mut got = Vec::new();
    while let Some(s) = h.segs.pop_front() {
        if s.len() > 0 {
            assert_eq!(s.len(), 1000);
            got.extend(s.payload);
        }
    }
    assert_eq!(got, data, "each write went alone, sharing its buffer");
    assert!(h.core.stats().get(Stat::PoolExhausted) > 0);
    for b in hog {
        h.pool.free(&b);
    }
}
