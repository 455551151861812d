//! The RFC 9293 state table after ESTABLISHED: active, passive and
//! simultaneous close, TIME-WAIT (expiry, FIN retransmission, reuse),
//! orphans, and the RFC 5961 / RFC 7323 validation of segments.

use super::*;
use crate::Stat;

/// An established passive connection (socket 2) with data both ways.
fn estab() -> (H, u32) {
    let (mut h, iss) = H::established(TcpOptions::default());
    h.expect_none();
    (h, iss)
}

#[test]
fn active_close_through_fin_wait_and_time_wait() {
    let (mut h, iss) = estab();
    h.req(op::SHUTDOWN, 2, 1);
    assert_eq!(h.state_of(2), Some(State::FinWait1));
    let f = h.expect(FIN | ACK);
    assert_eq!((f.seq(), f.ack()), (iss + 1, PISS + 1));
    // The peer acknowledges our FIN: FIN-WAIT-2.
    h.peer(ACK, PISS + 1, iss + 2, &[]);
    h.expect_none();
    assert_eq!(h.state_of(2), Some(State::FinWait2));
    // Data still flows to us in FIN-WAIT-2.
    h.peer(ACK | PSH, PISS + 1, iss + 2, b"late");
    assert_eq!(h.data_for(2), b"late");
    assert_eq!(h.expect(ACK).ack(), PISS + 5);
    // The peer's FIN: TIME-WAIT, ACKed at once, EOF; CLOSED once sockd
    // confirms the delivered bytes in the application's ring (a sockd
    // that died with them asks for them again).
    h.peer(FIN | ACK, PISS + 5, iss + 2, &[]);
    let a = h.expect(ACK);
    assert_eq!(a.ack(), PISS + 6);
    h.expect_up(op::EOF);
    h.no_ctl_up();
    let r = h.ctl(L4Ctl {
        op: op::READ_CREDIT,
        sock: 2,
        value: ReadCredit {
            read: 0,
            written: 4,
        }
        .pack(),
        flags: strata_ipc::l4::ctl_flags::WRITTEN,
        ..L4Ctl::default()
    });
    assert!(r.is_none());
    h.expect_up(op::CLOSED);
    assert_eq!(h.conn().state, State::TimeWait);
    // A retransmitted FIN is ACKed again and restarts 2·MSL.
    h.advance(30_000);
    h.peer(FIN | ACK, PISS + 5, iss + 2, &[]);
    assert_eq!(h.expect(ACK).ack(), PISS + 6);
    h.advance(59_000);
    assert_eq!(h.conn().state, State::TimeWait);
    h.advance(1_000);
    assert_eq!(h.core.conns_in_use(), 1, "only the listener is left");
    assert_eq!(h.core.stats().get(Stat::TimeWaitExpired), 1);
    h.expect_none();
    h.finish();
}

#[test]
fn a_socket_closed_in_time_wait_lets_go_of_its_undelivered_data_at_once() {
    let (mut h, iss) = estab();
    h.req(op::SHUTDOWN, 2, 1);
    h.expect(FIN | ACK);
    h.peer(ACK, PISS + 1, iss + 2, &[]);
    // Data, then the peer's FIN: TIME-WAIT with the data delivered to
    // sockd and not yet confirmed in the application's ring.
    h.peer(ACK | PSH, PISS + 1, iss + 2, b"late");
    assert_eq!(h.data_for(2), b"late");
    h.expect(ACK);
    h.peer(FIN | ACK, PISS + 5, iss + 2, &[]);
    h.expect(ACK);
    h.expect_up(op::EOF);
    assert_eq!(h.conn().state, State::TimeWait);
    assert!(h.pool.in_use() > 0, "the delivered data is still held");
    // The application closes without reading: nothing is kept for the
    // 60 s of TIME-WAIT.
    h.req(op::CLOSE, 2, 0);
    assert_eq!(h.conn().state, State::TimeWait);
    assert_eq!(h.pool.in_use(), 0, "buffers held in TIME-WAIT");
    h.advance(60_000);
    assert_eq!(h.core.conns_in_use(), 1, "only the listener is left");
    h.finish();
}

#[test]
fn fin_wait_1_straight_to_time_wait_on_fin_ack() {
    let (mut h, iss) = estab();
    h.req(op::SHUTDOWN, 2, 1);
    h.expect(FIN | ACK);
    h.peer(FIN | ACK, PISS + 1, iss + 2, &[]);
    h.expect(ACK);
    assert_eq!(h.conn().state, State::TimeWait);
    h.finish();
}

#[test]
fn passive_close_through_close_wait_and_last_ack() {
    let (mut h, iss) = estab();
    h.peer(FIN | ACK, PISS + 1, iss + 1, &[]);
    assert_eq!(h.expect(ACK).ack(), PISS + 2);
    h.expect_up(op::EOF);
    assert_eq!(h.state_of(2), Some(State::CloseWait));
    // We may still send.
    h.send(2, b"reply");
    let d = h.expect(ACK);
    assert_eq!(d.payload, b"reply");
    h.req(op::SHUTDOWN, 2, 2);
    assert_eq!(h.state_of(2), Some(State::LastAck));
    let f = h.expect(FIN | ACK);
    assert_eq!(f.seq(), iss + 6);
    h.peer(ACK, PISS + 2, iss + 7, &[]);
    let cr = h.expect_up(op::SEND_CREDIT);
    assert_eq!(cr.value as u32, 5);
    h.expect_up(op::CLOSED);
    assert_eq!(h.core.conns_in_use(), 1);
    h.finish();
}

#[test]
fn simultaneous_close_through_closing() {
    let (mut h, iss) = estab();
    h.req(op::SHUTDOWN, 2, 1);
    h.expect(FIN | ACK);
    // The peer's FIN crosses ours (it has not seen ours).
    h.peer(FIN | ACK, PISS + 1, iss + 1, &[]);
    assert_eq!(h.expect(ACK).ack(), PISS + 2);
    assert_eq!(h.state_of(2), Some(State::Closing));
    h.peer(ACK, PISS + 2, iss + 2, &[]);
    assert_eq!(h.conn().state, State::TimeWait);
    h.expect_up(op::EOF);
    h.expect_up(op::CLOSED);
    h.advance(60_000);
    assert_eq!(h.core.conns_in_use(), 1);
    h.finish();
}

#[test]
fn fin_is_retransmitted_until_acked() {
    let (mut h, iss) = estab();
    h.req(op::SHUTDOWN, 2, 1);
    h.expect(FIN | ACK);
    // The handshake measured an RTT of 0: the RTO is the 200 ms minimum.
    assert_eq!(h.conn().rto_us, 200_000);
    h.advance(199);
    h.expect_none();
    h.advance(1);
    let f = h.expect(FIN | ACK);
    assert_eq!(f.seq(), iss + 1);
    h.advance(399);
    h.expect_none();
    h.advance(1);
    h.expect(FIN | ACK);
    h.peer(ACK, PISS + 1, iss + 2, &[]);
    assert_eq!(h.state_of(2), Some(State::FinWait2));
    h.advance(10_000);
    h.expect_none();
    h.finish();
}

/// Takes every buffer of the harness's pool.
fn hog(h: &mut H) -> Vec<strata_ipc::handle::Handle> {
    let mut hog = Vec::new();
    while let Some(b) = h.pool.alloc(1) {
        hog.push(b);
    }
    while let Some(b) = h.pool.alloc(strata_ipc::SMALL_BUF * 2) {
        hog.push(b);
    }
    hog
}

#[test]
fn a_fin_that_found_no_buffer_goes_out_once_one_is_free() {
    // A bare FIN runs no timer until it is sent: short of a buffer, only
    // the retry list brings it back (LAST-ACK would wait for ever).
    let (mut h, iss) = estab();
    h.peer(FIN | ACK, PISS + 1, iss + 1, &[]);
    h.expect(ACK);
    h.expect_up(op::EOF);
    let taken = hog(&mut h);
    h.req(op::SHUTDOWN, 2, 2);
    assert_eq!(h.state_of(2), Some(State::LastAck));
    h.expect_none();
    h.advance(5);
    h.expect_none();
    for b in taken {
        h.pool.free(&b);
    }
    h.advance(1);
    assert_eq!(h.expect(FIN | ACK).seq(), iss + 1);
    h.peer(ACK, PISS + 2, iss + 2, &[]);
    h.expect_up(op::CLOSED);
    h.finish();
}

#[test]
fn close_orphans_the_connection_and_fin_wait_2_times_out() {
    let (mut h, iss) = estab();
    h.send(2, b"bye");
    h.expect(ACK);
    h.req(op::CLOSE, 2, 0);
    // CLOSED at once: the socket is forgotten, the connection lives on.
    h.expect_up(op::CLOSED);
    let f = h.expect(FIN | ACK);
    assert_eq!(f.seq(), iss + 4);
    h.peer(ACK, PISS + 1, iss + 5, &[]);
    assert_eq!(h.conn().state, State::FinWait2);
    assert_eq!(h.conn().sock, 0);
    // Data for the closed socket: Linux answers with RST.
    h.peer(ACK, PISS + 1, iss + 5, b"more");
    h.expect(RST | ACK);
    assert_eq!(h.core.conns_in_use(), 1);
    h.finish();
}

#[test]
fn orphan_fin_wait_2_timeout() {
    let (mut h, iss) = estab();
    h.req(op::CLOSE, 2, 0);
    h.expect_up(op::CLOSED);
    h.expect(FIN | ACK);
    h.peer(ACK, PISS + 1, iss + 2, &[]);
    h.advance(59_999);
    assert_eq!(h.core.conns_in_use(), 2);
    h.advance(1);
    assert_eq!(h.core.conns_in_use(), 1);
    h.no_ctl_up();
    h.finish();
}

#[test]
fn abort_sends_rst_and_forgets() {
    let (mut h, iss) = estab();
    h.req(op::ABORT, 2, 0);
    let r = h.expect(RST | ACK);
    assert_eq!(r.seq(), iss + 1);
    h.expect_up(op::CLOSED);
    // The peer's next segment finds nothing: RST.
    h.peer(ACK, PISS + 1, iss + 1, b"x");
    assert_eq!(h.expect(RST).seq(), iss + 1);
    h.finish();
}

#[test]
fn rst_with_exact_sequence_resets() {
    let (mut h, _iss) = estab();
    h.peer(RST, PISS + 1, 0, &[]);
    h.expect_none();
    let e = h.expect_up(op::SOCK_ERROR);
    assert_eq!(e.errno, libc::ECONNRESET);
    h.expect_up(op::CLOSED);
    assert_eq!(h.core.stats().get(Stat::ResetByPeer), 1);
    h.finish();
}

#[test]
fn rfc5961_in_window_rst_gets_a_challenge_ack() {
    let (mut h, iss) = estab();
    h.peer(RST, PISS + 100, 0, &[]);
    let a = h.expect(ACK);
    assert_eq!((a.seq(), a.ack()), (iss + 1, PISS + 1));
    h.no_ctl_up();
    assert_eq!(h.state_of(2), Some(State::Established));
    // Out of the window: ignored without an answer.
    h.peer(RST, PISS + 1_000_000, 0, &[]);
    h.peer(RST, PISS - 10, 0, &[]);
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::RstChallenged), 1);
    assert_eq!(h.core.stats().get(Stat::RstIgnored), 2);
    // The legitimate peer answers the challenge with an exact RST.
    h.peer(RST, PISS + 1, 0, &[]);
    h.expect_up(op::SOCK_ERROR);
    h.finish();
}

#[test]
fn rfc5961_syn_on_established_gets_a_challenge_ack() {
    let (mut h, iss) = estab();
    for seq in [PISS + 1, PISS + 500, 7] {
        h.peer(SYN, seq, 0, &[]);
        let a = h.expect(ACK);
        assert_eq!((a.seq(), a.ack()), (iss + 1, PISS + 1));
    }
    assert_eq!(h.state_of(2), Some(State::Established));
    assert_eq!(h.core.stats().get(Stat::SynChallenged), 2);
    assert_eq!(h.core.stats().get(Stat::OutOfWindow), 1);
    h.finish();
}

#[test]
fn rfc5961_ack_validation() {
    let (mut h, iss) = estab();
    h.nodelay(2);
    h.send(2, b"hello");
    h.expect(ACK);
    // ACK of data never sent: ACK back, dropped (the data too).
    h.peer(ACK, PISS + 1, iss + 100, b"zz");
    let a = h.expect(ACK);
    assert_eq!(a.ack(), PISS + 1);
    assert!(h.data_for(2).is_empty());
    // Far too old: likewise.
    h.peer(ACK, PISS + 1, iss.wrapping_sub(200_000), b"zz");
    h.expect(ACK);
    assert!(h.data_for(2).is_empty());
    assert_eq!(h.core.stats().get(Stat::AckInvalid), 2);
    // A merely old ACK is fine: data accepted.
    h.peer(ACK, PISS + 1, iss, b"ok");
    assert_eq!(h.data_for(2), b"ok");
    h.finish();
}

#[test]
fn challenge_acks_are_rate_limited() {
    let mut cfg = config();
    cfg.challenge_ack_limit = 3;
    let mut h = H::with(cfg);
    h.listen(1, LPORT, 4);
    let iss = h.accept(2, TcpOptions::default());
    let _ = iss;
    for _ in 0..10 {
        h.peer(SYN, PISS + 1, 0, &[]);
    }
    assert_eq!(h.segs.len(), 3);
    assert_eq!(h.core.stats().get(Stat::ChallengeAckLimited), 7);
    h.segs.clear();
    h.advance(1000);
    h.peer(SYN, PISS + 1, 0, &[]);
    h.expect(ACK);
    h.finish();
}

#[test]
fn paws_drops_old_timestamps() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    h.pts = Some(100);
    let iss = h.accept(2, syn_opts(100));
    h.pts = Some(200);
    h.peer(ACK, PISS + 1, iss + 1, b"new");
    assert_eq!(h.data_for(2), b"new");
    h.segs.clear();
    // An old duplicate from a previous incarnation: TSval 150 < 200.
    h.pts = Some(150);
    h.peer(ACK, PISS + 4, iss + 1, b"old");
    h.expect(ACK);
    assert!(h.data_for(2).is_empty());
    assert_eq!(h.core.stats().get(Stat::PawsRejected), 1);
    h.pts = Some(201);
    h.peer(ACK, PISS + 4, iss + 1, b"fine");
    assert_eq!(h.data_for(2), b"fine");
    h.finish();
}

#[test]
fn unacceptable_segments_are_acked_and_dropped() {
    let (mut h, iss) = estab();
    // Old data.
    h.peer(ACK, PISS - 100, iss + 1, b"dup");
    assert_eq!(h.expect(ACK).ack(), PISS + 1);
    // Beyond the window.
    h.peer(ACK, PISS + 1 + 200_000, iss + 1, b"far");
    assert_eq!(h.expect(ACK).ack(), PISS + 1);
    assert!(h.data_for(2).is_empty());
    // No ACK flag: dropped silently.
    h.peer(PSH, PISS + 1, 0, b"noack");
    h.expect_none();
    assert!(h.data_for(2).is_empty());
    h.finish();
}

#[test]
fn time_wait_is_reused_by_a_newer_syn() {
    let (mut h, iss) = estab();
    // We close first, so we hold TIME-WAIT.
    h.req(op::SHUTDOWN, 2, 1);
    h.expect(FIN | ACK);
    h.peer(FIN | ACK, PISS + 1, iss + 2, &[]);
    h.expect(ACK);
    assert_eq!(h.conn().state, State::TimeWait);
    // An old SYN (lower sequence): treated as in TIME-WAIT (challenge).
    h.peer(SYN, PISS - 5, 0, &[]);
    h.expect(ACK);
    // A new incarnation: higher sequence number.
    h.peer(SYN, PISS + 100_000, 0, &[]);
    let sa = h.expect(SYN | ACK);
    assert_eq!(sa.ack(), PISS + 100_001);
    assert!(crate::seq::gt(sa.seq(), iss + 2 + 65535));
    assert_eq!(h.conn().state, State::SynReceived);
    assert_eq!(h.core.stats().get(Stat::TimeWaitReused), 1);
    h.finish();
}

#[test]
fn every_state_is_reached() {
    // A summary over the scenarios above, in one connection's life each
    // way, checking the listing's names.
    let mut seen = std::collections::HashSet::new();
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    seen.insert(h.core.connections().next().unwrap().state);
    h.peer(SYN, PISS, 0, &[]);
    let sa = h.expect(SYN | ACK);
    seen.insert(h.conn().state);
    h.peer(ACK, PISS + 1, sa.seq() + 1, &[]);
    let a = h.expect_up(op::ACCEPTABLE);
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 2,
        value: a.value,
        ..L4Ctl::default()
    });
    seen.insert(h.conn().state);
    h.req(op::SHUTDOWN, 2, 1);
    seen.insert(h.conn().state);
    h.peer(FIN | ACK, PISS + 1, sa.seq() + 1, &[]);
    seen.insert(h.conn().state);
    h.peer(ACK, PISS + 2, sa.seq() + 2, &[]);
    seen.insert(h.conn().state);
    h.advance(60_000);
    h.segs.clear();
    // Active side.
    h.pport = 443;
    let r = h.connect(5, PEER, 443);
    h.lport = r.local_port;
    let syn = h.expect(SYN);
    seen.insert(h.conn().state);
    h.peer(SYN | ACK, PISS, syn.seq() + 1, &[]);
    h.peer(ACK | FIN, PISS + 1, syn.seq() + 1, &[]);
    seen.insert(h.conn().state);
    h.req(op::SHUTDOWN, 5, 1);
    seen.insert(h.conn().state);
    h.peer(ACK, PISS + 2, syn.seq() + 2, &[]);
    h.advance(1);
    // FIN-WAIT-2 on a third connection.
    h.segs.clear();
    let r = h.connect(6, PEER, 443);
    h.lport = r.local_port;
    let syn = h.expect(SYN);
    h.peer(SYN | ACK, PISS, syn.seq() + 1, &[]);
    h.req(op::SHUTDOWN, 6, 1);
    h.peer(ACK, PISS + 1, syn.seq() + 2, &[]);
    seen.insert(h.state_of(6).unwrap());
    let names: std::collections::BTreeSet<_> = seen.iter().map(|s| s.name()).collect();
    for s in [
        "LISTEN",
        "SYN-SENT",
        "SYN-RECV",
        "ESTAB",
        "FIN-WAIT-1",
        "FIN-WAIT-2",
        "CLOSE-WAIT",
        "LAST-ACK",
        "CLOSING",
        "TIME-WAIT",
    ] {
        assert!(names.contains(s), "{s} not reached: {names:?}");
    }
    h.finish();
}
