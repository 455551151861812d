//! Flow control by credits: never more to sockd than the receive credit,
//! the advertised window is the credit less what is held, READ_CREDIT
//! reopens it (with a window update), SEND_CREDIT returns acknowledged
//! bytes.

use super::*;
use crate::Stat;

fn small_rx() -> H {
    let mut cfg = config();
    cfg.socket_rx_bytes = 4000;
    cfg.window_scaling = false;
    H::with(cfg)
}

#[test]
fn receive_credit_bounds_delivery_and_the_window() {
    let mut h = small_rx();
    h.listen(1, LPORT, 4);
    h.peer(SYN, PISS, 0, &[]);
    let sa = h.expect(SYN | ACK);
    assert_eq!(sa.tcp.window, 4000);
    let iss = sa.seq();
    h.peer(ACK, PISS + 1, iss + 1, &[]);
    let a = h.expect_up(op::ACCEPTABLE);
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 2,
        value: a.value,
        ..L4Ctl::default()
    });
    let mut seq = PISS + 1;
    for i in 0..8 {
        h.peer(ACK, seq, iss + 1, &pattern(500, i));
        seq += 500;
    }
    let acks: Vec<Seg> = h.segs.drain(..).collect();
    assert_eq!(acks.last().unwrap().tcp.window, 0, "credit used up");
    assert_eq!(h.data_for(2).len(), 4000);
    // Beyond the (zero) window: dropped, ACKed with window 0.
    h.peer(ACK, seq, iss + 1, &pattern(500, 9));
    let z = h.expect(ACK);
    assert_eq!((z.ack(), z.tcp.window), (seq, 0));
    assert!(h.data_for(2).is_empty());
    // The application read 1000 bytes: under an MSS — no window update
    // yet (receiver SWS avoidance); 3000 more (4000 in all): update.
    h.req(op::READ_CREDIT, 2, 1000);
    h.expect_none();
    h.req(op::READ_CREDIT, 2, 4000);
    // Absolute, so a repeat changes nothing.
    h.req(op::READ_CREDIT, 2, 4000);
    let u = h.expect(ACK);
    assert_eq!(u.tcp.window, 4000);
    for i in 0..8 {
        h.peer(ACK, seq, iss + 1, &pattern(500, 10 + i));
        seq += 500;
    }
    let got = h.data_for(2);
    assert_eq!(got.len(), 4000);
    assert_eq!(&got[..500], &pattern(500, 10)[..]);
    assert!(h.core.stats().get(Stat::DeliveredBytes) == 8000);
    h.segs.clear();
    h.finish();
}

#[test]
fn data_held_before_attach_goes_up_at_attach() {
    let mut h = small_rx();
    h.listen(1, LPORT, 4);
    h.peer(SYN, PISS, 0, &[]);
    let iss = h.expect(SYN | ACK).seq();
    // The handshake ACK carries 3000 bytes; then 1000 more before
    // ATTACH: 4000 held.
    h.peer(ACK, PISS + 1, iss + 1, &pattern(3000, 1));
    h.peer(ACK, PISS + 3001, iss + 1, &pattern(1000, 2));
    let a = h.expect_up(op::ACCEPTABLE);
    assert_eq!(h.segs.back().unwrap().tcp.window, 0);
    h.segs.clear();
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 2,
        value: a.value,
        ..L4Ctl::default()
    });
    let mut want = pattern(3000, 1);
    want.extend(pattern(1000, 2));
    assert_eq!(h.data_for(2), want);
    // The window reopens as sockd reads.
    h.segs.clear();
    h.req(op::READ_CREDIT, 2, 4000);
    assert_eq!(h.expect(ACK).tcp.window, 4000);
    h.segs.clear();
    h.finish();
}

#[test]
fn send_credit_returns_acknowledged_bytes() {
    let mut cfg = config();
    cfg.socket_tx_bytes = 8000;
    let mut h = H::with(cfg);
    h.listen(1, LPORT, 4);
    let iss = h.accept(
        2,
        TcpOptions {
            mss: Some(1000),
            ..TcpOptions::default()
        },
    );
    h.send(2, &pattern(3000, 1));
    h.send(2, &pattern(3000, 2));
    h.segs.clear();
    // Taking bytes is worth telling (sockd frees its ring so far).
    let mut t = 0;
    while h
        .ups
        .iter()
        .any(|u| matches!(u, Up::Ctl(m) if m.op == op::SEND_CREDIT))
    {
        t = h.expect_up(op::SEND_CREDIT).value;
    }
    assert_eq!(
        SendCredit::unpack(t),
        SendCredit {
            freed: 0,
            taken: 6000
        }
    );
    // 1500 acknowledged: below a quarter of 8000? No: 1500 < 2000, and
    // the queue is not empty, so nothing yet.
    h.peer(ACK, PISS + 1, iss + 1501, &[]);
    assert!(h.ups.is_empty());
    h.peer(ACK, PISS + 1, iss + 2501, &[]);
    assert_eq!(h.expect_up(op::SEND_CREDIT).value as u32, 2500);
    h.segs.clear();
    h.peer(ACK, PISS + 1, iss + 6001, &[]);
    assert_eq!(h.expect_up(op::SEND_CREDIT).value as u32, 6000, "in total");
    // Asked (READ_CREDIT with SYNC), it says so again at once.
    h.ctl(L4Ctl {
        op: op::READ_CREDIT,
        sock: 2,
        value: 0,
        flags: strata_ipc::l4::ctl_flags::SYNC,
        ..L4Ctl::default()
    });
    assert_eq!(h.expect_up(op::SEND_CREDIT).value as u32, 6000);
    h.finish();
}

#[test]
fn payload_for_unknown_or_shut_sockets_is_dropped_and_counted() {
    let (mut h, _iss) = H::established(TcpOptions::default());
    h.send(77, b"nobody");
    h.req(op::SHUTDOWN, 2, 1);
    h.segs.clear();
    h.send(2, b"after shutdown");
    let c = h.expect_up(op::SEND_CREDIT);
    let credit = SendCredit::unpack(c.value);
    assert_eq!(credit.freed, 14, "the credit comes back");
    assert_eq!(credit.taken, 14, "and the bytes count as taken");
    assert_eq!(h.core.stats().get(Stat::UnknownSock), 1);
    assert_eq!(h.core.stats().get(Stat::SockDataDropped), 1);
    h.expect_none();
    h.finish();
}

#[test]
fn connection_limit_refuses_and_counts() {
    let mut cfg = config();
    cfg.max_conns = 3;
    cfg.syn_cookies = false;
    let mut h = H::with(cfg);
    h.listen(1, LPORT, 16);
    let _ = h.accept(2, TcpOptions::default());
    h.pport = 40001;
    h.peer(SYN, PISS, 0, &[]);
    h.expect(SYN | ACK);
    // The table is full: a SYN is dropped, a socket refused.
    h.pport = 40002;
    h.peer(SYN, PISS, 0, &[]);
    h.expect_none();
    let r = h.connect(7, PEER, 443);
    assert_eq!((r.op, r.errno), (op::ERROR, libc::ENOBUFS));
    assert_eq!(h.core.stats().get(Stat::ConnLimit), 2);
    h.segs.clear();
    h.finish();
}

#[test]
fn an_exhausted_entry_slab_coalesces_small_writes() {
    let mut h = H::with_storage(config(), 8, 6);
    h.listen(1, LPORT, 4);
    let iss = h.accept(
        2,
        TcpOptions {
            mss: Some(1000),
            ..TcpOptions::default()
        },
    );
    // One runt in flight; the rest queue behind Nagle, one entry each
    // until the slab runs out, then appended into the last buffer.
    let mut all: Vec<u8> = Vec::new();
    for i in 0..12u8 {
        let b = pattern(50, i);
        all.extend(&b);
        h.send(2, &b);
    }
    assert!(h.core.entries_in_use() <= 6);
    h.expect(ACK);
    h.peer(ACK, PISS + 1, iss + 51, &[]);
    let s = h.expect(ACK);
    assert_eq!(s.payload, &all[50..]);
    assert_eq!(h.state_of(2), Some(State::Established));
    // Received data finds no entry: dropped (the peer retransmits).
    h.peer(ACK, PISS + 1, iss + 601, b"x");
    h.finish();
}

/// A connection from the peer with window scaling on both sides, a
/// 1 MiB socket buffer and auto-tuning starting at 64 KiB.
fn tuned() -> (H, u32) {
    let mut cfg = config();
    cfg.socket_rx_bytes = 1 << 20;
    cfg.rcvbuf_initial = 64 << 10;
    let mut h = H::with(cfg);
    h.listen(1, LPORT, 4);
    let iss = h.accept(
        2,
        TcpOptions {
            mss: Some(1000),
            window_scale: Some(0),
            ..TcpOptions::default()
        },
    );
    (h, iss)
}

/// The peer fills the offered window; the application reads it all if
/// `read`. Returns the receive buffer afterwards.
fn round(h: &mut H, seq: &mut u32, iss: u32, read: bool) -> u32 {
    let w = h.conn().rcv_wnd;
    let mut left = w;
    while left > 0 {
        let n = left.min(1000);
        h.peer(ACK, *seq, iss + 1, &pattern(n as usize, 1));
        *seq += n;
        left -= n;
    }
    h.data_for(2);
    if read {
        // Absolute: all the peer sent so far was read.
        h.req(op::READ_CREDIT, 2, u64::from(*seq - PISS - 1));
    }
    h.segs.clear();
    h.advance(5);
    h.conn().rcvbuf
}

#[test]
fn the_receive_window_grows_with_a_reader_that_keeps_up() {
    let (mut h, iss) = tuned();
    let mut seq = PISS + 1;
    assert_eq!(h.conn().rcvbuf, 64 << 10);
    assert!(h.conn().rcv_wnd <= 64 << 10);
    let mut buf = 64 << 10;
    let mut steps = 0;
    while buf < 1 << 20 {
        let next = round(&mut h, &mut seq, iss, true);
        assert!(next >= buf, "the buffer shrank: {buf} -> {next}");
        buf = next;
        steps += 1;
        assert!(steps < 8, "not doubling per round trip: {buf}");
    }
    assert!(h.core.stats().get(Stat::RcvbufGrown) >= 3);
    // And the window offered follows it.
    round(&mut h, &mut seq, iss, true);
    assert!(h.conn().rcv_wnd > 512 << 10, "{}", h.conn().rcv_wnd);
}

#[test]
fn a_reader_that_does_not_keep_up_keeps_a_small_window() {
    let (mut h, iss) = tuned();
    let mut seq = PISS + 1;
    for _ in 0..5 {
        round(&mut h, &mut seq, iss, false);
    }
    // Nothing read: the buffer stays as it started, the window closed.
    assert_eq!(h.conn().rcvbuf, 64 << 10);
    assert_eq!(h.conn().rcv_wnd, 0);
    assert_eq!(h.core.stats().get(Stat::RcvbufGrown), 0);
}
