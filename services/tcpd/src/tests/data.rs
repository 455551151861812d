//! Data both ways: segmentation, zero-copy sends, in-order and
//! out-of-order reception with SACK blocks, delayed ACKs, Nagle.

use super::*;
use crate::Stat;

fn mss(m: u16) -> TcpOptions {
    TcpOptions {
        mss: Some(m),
        ..TcpOptions::default()
    }
}

#[test]
fn send_is_cut_into_mss_segments_within_cwnd() {
    let (mut h, iss) = H::established(mss(1000));
    let data = pattern(12_000, 3);
    h.send(2, &data);
    // Initial window: 10 segments.
    let mut got = Vec::new();
    for i in 0..10 {
        let s = h.expect(ACK);
        assert_eq!(s.seq(), iss + 1 + i * 1000);
        assert_eq!(s.len(), 1000);
        got.extend(&s.payload);
    }
    h.expect_none();
    // ACK of everything: slow start doubles, the rest goes.
    h.peer(ACK, PISS + 1, iss + 1 + 10_000, &[]);
    for _ in 0..2 {
        got.extend(h.expect(ACK).payload);
    }
    assert_eq!(got, data);
    // Each flight left as one super-segment (TSO), cut into segments on
    // the wire, both straight from the queued buffer (the acknowledged
    // part was trimmed off its front), without a copy.
    assert_eq!(h.core.stats().get(Stat::OutSuperSegs), 2);
    assert_eq!(h.core.stats().get(Stat::TxCopyBytes), 0);
    let last = h.segs.back();
    assert!(last.is_none());
    // (What was taken was told already.)
    h.ups
        .retain(|u| !matches!(u, Up::Ctl(m) if m.op == op::SEND_CREDIT));
    h.peer(ACK, PISS + 1, iss + 1 + 12_000, &[]);
    let c = h.expect_up(op::SEND_CREDIT);
    assert_eq!(
        SendCredit::unpack(c.value),
        SendCredit {
            freed: 12_000,
            taken: 12_000
        }
    );
    assert_eq!(h.conn().send_q, 0);
    assert_eq!(h.conn().cwnd, 12_000 + 10_000);
    h.finish();
}

#[test]
fn a_buffer_of_exactly_one_segment_is_sent_without_copy() {
    let (mut h, iss) = H::established(mss(1000));
    h.nodelay(2);
    h.send(2, &pattern(1000, 1));
    h.send(2, &pattern(400, 2));
    let a = h.expect(ACK);
    assert_eq!(a.payload, pattern(1000, 1));
    let b = h.expect(ACK);
    assert_eq!(b.payload, pattern(400, 2));
    assert_eq!(h.core.stats().get(Stat::TxCopyBytes), 0);
    // A retransmission copies.
    h.advance(200);
    let r = h.expect(ACK);
    assert_eq!((r.seq(), r.payload.clone()), (iss + 1, pattern(1000, 1)));
    assert_eq!(h.core.stats().get(Stat::TxCopyBytes), 1000);
    h.finish();
}

#[test]
fn nagle_holds_runts_until_acked_and_nodelay_does_not() {
    let (mut h, iss) = H::established(mss(1000));
    h.send(2, b"a");
    assert_eq!(h.expect(ACK).payload, b"a");
    h.send(2, b"b");
    h.send(2, b"c");
    h.expect_none();
    h.peer(ACK, PISS + 1, iss + 2, &[]);
    let s = h.expect(ACK);
    assert_eq!((s.seq(), s.payload.clone()), (iss + 2, b"bc".to_vec()));
    // A large write's tail is not held (Minshall): no runt outstanding.
    h.peer(ACK, PISS + 1, iss + 4, &[]);
    h.send(2, &pattern(1500, 0));
    h.expect(ACK);
    assert_eq!(h.expect(ACK).len(), 500);
    h.peer(ACK, PISS + 1, iss + 4 + 1500, &[]);
    h.nodelay(2);
    h.send(2, b"x");
    h.send(2, b"y");
    h.expect(ACK);
    h.expect(ACK);
    h.finish();
}

#[test]
fn in_order_data_goes_up_and_delayed_acks_follow_linux() {
    let (mut h, iss) = H::established(mss(1000));
    let mut seq = PISS + 1;
    // Quick-ACK mode at the start: every segment ACKed at once.
    for _ in 0..16 {
        h.peer(ACK, seq, iss + 1, b"0123456789");
        seq += 10;
        assert_eq!(h.expect(ACK).ack(), seq);
    }
    // Then a runt waits for the delayed-ACK timer (40 ms).
    h.peer(ACK, seq, iss + 1, b"0123456789");
    seq += 10;
    h.expect_none();
    h.advance(39);
    h.expect_none();
    h.advance(1);
    assert_eq!(h.expect(ACK).ack(), seq);
    assert_eq!(h.core.stats().get(Stat::DelayedAcks), 1);
    // Two full-sized segments: ACK after the second.
    let full = pattern(1000, 9);
    h.peer(ACK, seq, iss + 1, &full);
    h.expect_none();
    h.peer(ACK, seq + 1000, iss + 1, &full);
    assert_eq!(h.expect(ACK).ack(), seq + 2000);
    let d = h.data_for(2);
    assert_eq!(d.len(), 170 + 2000);
    // Data piggybacks the ACK.
    h.peer(ACK, seq + 2000, iss + 1, b"q");
    h.nodelay(2);
    h.send(2, b"answer");
    let s = h.expect(ACK);
    assert_eq!(s.ack(), seq + 2001);
    // The ACK rode on the data: no delayed ACK follows.
    h.advance(100);
    h.expect_none();
    h.finish();
}

/// Data sent while out-of-order data is queued: SACK blocks never make
/// a full-sized segment larger than the MSS allows (ipd drops a datagram
/// over the MTU); a shorter segment carries the blocks it has room for.
#[test]
fn sack_blocks_never_push_a_data_segment_past_the_mss() {
    let (mut h, iss) = H::established(TcpOptions {
        mss: Some(1000),
        sack_permitted: true,
        ..TcpOptions::default()
    });
    let base = PISS + 1;
    // Two holes: two SACK blocks queued.
    h.peer(ACK, base + 1000, iss + 1, &pattern(1000, 1));
    h.peer(ACK, base + 3000, iss + 1, &pattern(1000, 3));
    h.segs.clear();
    h.nodelay(2);
    h.send(2, &pattern(1500, 9));
    let full = h.expect(ACK);
    assert_eq!(full.len(), 1000);
    assert!(
        full.tcp.header_len as usize + 1000 <= TcpHeader::MIN_LEN + 1000,
        "a full segment carries no SACK block: {:?}",
        full.opts.sack()
    );
    // 500 bytes leave room for the most recent block and more.
    let part = h.expect(ACK);
    assert_eq!(part.len(), 500);
    assert_eq!(part.opts.sack()[0], (base + 3000, base + 4000));
    assert!(part.tcp.header_len as usize + 500 <= TcpHeader::MIN_LEN + 1000);
    h.finish();
}

#[test]
fn out_of_order_data_is_queued_sacked_and_delivered_in_order() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    let o = TcpOptions {
        mss: Some(1000),
        sack_permitted: true,
        ..TcpOptions::default()
    };
    let iss = h.accept(2, o);
    let seg = |i: u32| pattern(1000, i as u8);
    let base = PISS + 1;
    // Segments 1 and 3 of 0..=4 arrive first.
    h.peer(ACK, base + 1000, iss + 1, &seg(1));
    let a = h.expect(ACK);
    assert_eq!(a.ack(), base);
    assert_eq!(a.opts.sack(), &[(base + 1000, base + 2000)]);
    h.peer(ACK, base + 3000, iss + 1, &seg(3));
    let a = h.expect(ACK);
    assert_eq!(
        a.opts.sack(),
        &[(base + 3000, base + 4000), (base + 1000, base + 2000)],
        "most recent block first"
    );
    // A duplicate of 3, and an overlapping 2.5..3.5.
    h.peer(ACK, base + 3000, iss + 1, &seg(3));
    h.expect(ACK);
    let mut mid = seg(2)[500..].to_vec();
    mid.extend(&seg(3)[..500]);
    h.peer(ACK, base + 2500, iss + 1, &mid);
    let a = h.expect(ACK);
    assert_eq!(a.opts.sack()[0], (base + 2500, base + 4000));
    assert!(h.data_for(2).is_empty());
    assert_eq!(h.conn().ooo_q, 2500);
    // Segment 0 fills the first hole: 0..2000 delivered, ACK at once.
    h.peer(ACK, base, iss + 1, &seg(0));
    let a = h.expect(ACK);
    assert_eq!(a.ack(), base + 2000);
    assert_eq!(a.opts.sack(), &[(base + 2500, base + 4000)]);
    // Segment 2 (overlapping what is queued) and 4 with FIN.
    h.peer(ACK, base + 2000, iss + 1, &seg(2));
    let a = h.expect(ACK);
    assert_eq!(a.ack(), base + 4000);
    assert!(a.opts.sack().is_empty());
    h.peer(ACK | FIN, base + 4000, iss + 1, &seg(4));
    assert_eq!(h.expect(ACK).ack(), base + 5001);
    let want: Vec<u8> = (0..5).flat_map(seg).collect();
    assert_eq!(h.data_for(2), want);
    h.expect_up(op::EOF);
    assert_eq!(h.conn().ooo_q, 0);
    h.finish();
}

#[test]
fn out_of_order_fin_waits_for_the_gap() {
    let (mut h, iss) = H::established(mss(1000));
    h.peer(ACK | FIN, PISS + 6, iss + 1, b"world");
    h.expect(ACK);
    h.no_ctl_up();
    h.peer(ACK, PISS + 1, iss + 1, b"hello");
    assert_eq!(h.expect(ACK).ack(), PISS + 12);
    assert_eq!(h.data_for(2), b"helloworld");
    h.expect_up(op::EOF);
    assert_eq!(h.state_of(2), Some(State::CloseWait));
    h.finish();
}

#[test]
fn the_peers_scaled_window_limits_sending() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    let o = TcpOptions {
        mss: Some(1000),
        window_scale: Some(2),
        ..TcpOptions::default()
    };
    h.pwin = 1000; // 4000 bytes with scale 2
    let iss = h.accept(2, o);
    assert_eq!(h.conn().snd_wnd, 4000);
    h.nodelay(2);
    h.send(2, &pattern(6000, 0));
    for _ in 0..4 {
        h.expect(ACK);
    }
    h.expect_none();
    h.pwin = 250; // 1000 bytes
    h.peer(ACK, PISS + 1, iss + 1 + 4000, &[]);
    assert_eq!(h.expect(ACK).len(), 1000);
    h.expect_none();
    h.finish();
}

#[test]
fn data_on_the_handshake_ack_is_held_until_attach() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    h.peer(SYN, PISS, 0, &[]);
    let sa = h.expect(SYN | ACK);
    h.peer(ACK | PSH, PISS + 1, sa.seq() + 1, b"GET / HTTP/1.1\r\n\r\n");
    let a = h.expect_up(op::ACCEPTABLE);
    assert!(h.data_for(0).is_empty());
    assert_eq!(
        h.core
            .connections()
            .find(|c| c.id == a.value)
            .unwrap()
            .recv_q,
        18
    );
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 9,
        value: a.value,
        ..L4Ctl::default()
    });
    assert_eq!(h.data_for(9), b"GET / HTTP/1.1\r\n\r\n");
    // FIN before ATTACH: EOF after the data.
    h.peer(SYN, PISS + 50, 0, &[]);
    h.segs.clear();
    h.finish();
}

#[test]
fn active_side_exchanges_data_and_closes() {
    let mut h = H::new();
    let (iss, _port) = h.connected(TcpOptions {
        mss: Some(1000),
        sack_permitted: true,
        ..TcpOptions::default()
    });
    h.send(5, b"GET /");
    let s = h.expect(ACK);
    assert_eq!((s.seq(), s.payload.clone()), (iss + 1, b"GET /".to_vec()));
    h.peer(ACK | FIN, PISS + 1, iss + 6, b"200 OK");
    assert_eq!(h.expect(ACK).ack(), PISS + 8);
    assert_eq!(h.data_for(5), b"200 OK");
    h.expect_up(op::EOF);
    h.req(op::CLOSE, 5, 0);
    h.expect_up(op::CLOSED);
    let f = h.expect(FIN | ACK);
    assert_eq!(f.seq(), iss + 6);
    h.peer(ACK, PISS + 8, iss + 7, &[]);
    assert_eq!(h.core.conns_in_use(), 0);
    h.finish();
}

#[test]
fn queued_buffers_are_reported_for_pinning() {
    let (mut h, iss) = H::established(mss(1000));
    // Sent data stays queued (pinned) until acknowledged.
    let mut d = h.pool.alloc(100).unwrap();
    d.data_len = 100;
    d.sock = 2;
    h.core.from_sock(h.now, &mut h.pool, d, &mut h.out);
    assert_eq!(h.out.pin.len(), 1);
    assert_eq!(h.out.pin[0].buf, d.buf);
    h.collect();
    h.segs.clear();
    // Received in-order data is queued, then handed to sockd whole.
    let seg = build(
        (PEER, PPORT),
        (LOCAL, LPORT),
        ACK,
        PISS + 1,
        iss + 101,
        65535,
        &TcpOptions::default(),
        b"abc",
    );
    let r = ip_handle(&mut h.pool, &seg, protocol::TCP);
    h.core.from_ip(h.now, &mut h.pool, r, &mut h.out);
    // Delivered, but kept pinned until sockd says it is in the ring.
    assert_eq!(h.out.pin.len(), 1);
    assert!(h.out.unpin.is_empty());
    h.collect();
    assert_eq!(h.data_for(2), b"abc");
    let m = L4Ctl {
        op: op::READ_CREDIT,
        sock: 2,
        value: ReadCredit {
            read: 0,
            written: 3,
        }
        .pack(),
        flags: strata_ipc::l4::ctl_flags::WRITTEN,
        ..L4Ctl::default()
    };
    let c = m.to_handle(&mut h.pool).unwrap();
    h.core.from_sock(h.now, &mut h.pool, c, &mut h.out);
    assert_eq!(h.out.unpin.len(), 1);
    assert_eq!(h.out.unpin[0].buf, r.buf);
    h.finish();
}
