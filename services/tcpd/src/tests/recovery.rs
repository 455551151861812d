//! Loss recovery: the SACK scoreboard driving RFC 6675 recovery
//! (retransmitting exactly the holes), NewReno partial ACKs (RFC 6582),
//! fast retransmit, and the RTO (RFC 6298) with Karn's rule and back-off.

use super::*;
use crate::Stat;

const M: u32 = 1000;

fn opts(sack: bool) -> TcpOptions {
    TcpOptions {
        mss: Some(M as u16),
        sack_permitted: sack,
        ..TcpOptions::default()
    }
}

fn sack_ack(h: &mut H, ack: u32, blocks: &[(u32, u32)]) {
    let mut o = TcpOptions::default();
    for &b in blocks {
        o.push_sack(b);
    }
    h.peer_opts(ACK, PISS + 1, ack, &[], o);
}

/// Sends `n` segments of M bytes and returns their sequence numbers.
fn flight(h: &mut H, iss: u32, n: u32) -> Vec<u32> {
    h.nodelay(2);
    h.send(2, &pattern((n * M) as usize, 5));
    let mut v = Vec::new();
    for i in 0..n {
        let s = h.expect(ACK);
        assert_eq!(s.seq(), iss + 1 + i * M);
        v.push(s.seq());
    }
    h.expect_none();
    v
}

#[test]
fn sack_recovery_retransmits_exactly_the_holes() {
    let (mut h, iss) = H::established(opts(true));
    let s: Vec<u32> = flight(&mut h, iss, 10);
    let seg = |i: usize| s[0] + i as u32 * M;
    // Segments 2 and 5 are lost. 0 and 1 arrive: a new ACK.
    h.peer(ACK, PISS + 1, seg(2), &[]);
    h.expect_none();
    // 3 and 4: duplicate ACKs with SACK; not yet enough to call 2 lost.
    sack_ack(&mut h, seg(2), &[(seg(3), seg(4))]);
    sack_ack(&mut h, seg(2), &[(seg(3), seg(5))]);
    h.expect_none();
    // 6: third duplicate ACK, 3000 bytes SACKed above 2: recovery.
    sack_ack(&mut h, seg(2), &[(seg(6), seg(7)), (seg(3), seg(5))]);
    let r = h.expect(ACK);
    assert_eq!((r.seq(), r.len()), (seg(2), M), "the first hole");
    assert_eq!(r.payload, pattern(10_000, 5)[2000..3000]);
    // The new ACK for 0..2 grew cwnd to 12000 (slow start): cwnd =
    // ssthresh = 8400 (CUBIC β); pipe = hole 5 (1000, not yet lost) +
    // 7..10 (3000) + the retransmission (1000) = 5000: room for three,
    // but only hole 5 qualifies (RFC 6675 NextSeg rule 3), no new data.
    let r = h.expect(ACK);
    assert_eq!(r.seq(), seg(5), "the second hole");
    h.expect_none();
    assert_eq!(h.conn().cwnd, 8400);
    // 7, 8, 9 arrive: SACKs grow; nothing more to resend.
    for k in 8..=10 {
        sack_ack(&mut h, seg(2), &[(seg(6), seg(k)), (seg(3), seg(5))]);
    }
    h.expect_none();
    // The retransmitted 2 arrives: partial ACK up to 5.
    sack_ack(&mut h, seg(5), &[(seg(6), seg(10))]);
    h.expect_none();
    // And 5: everything.
    h.peer(ACK, PISS + 1, seg(10), &[]);
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::RetransSegs), 2);
    assert_eq!(h.core.stats().get(Stat::SackRecoveries), 1);
    assert_eq!(h.core.stats().get(Stat::RtoExpired), 0);
    let c = h.conn();
    assert_eq!((c.cwnd, c.ssthresh), (8400, 8400));
    h.finish();
}

#[test]
fn sack_recovery_sends_new_data_when_the_window_allows() {
    let (mut h, iss) = H::established(opts(true));
    let s = flight(&mut h, iss, 10);
    let seg = |i: usize| s[0] + i as u32 * M;
    h.send(2, &pattern(5000, 6));
    // Only segment 0 lost; 1..=9 SACKed.
    sack_ack(&mut h, seg(0), &[(seg(1), seg(2))]);
    sack_ack(&mut h, seg(0), &[(seg(1), seg(3))]);
    sack_ack(&mut h, seg(0), &[(seg(1), seg(4))]);
    let r = h.expect(ACK);
    assert_eq!(r.seq(), seg(0));
    // pipe = 6 unSACKed beyond (4..10) + 1 retransmitted = 7000 = cwnd.
    h.expect_none();
    // Each further SACK shrinks the pipe by a segment: one new segment
    // each (RFC 6675 rule 2).
    sack_ack(&mut h, seg(0), &[(seg(1), seg(5))]);
    assert_eq!(h.expect(ACK).seq(), seg(10));
    sack_ack(&mut h, seg(0), &[(seg(1), seg(6))]);
    assert_eq!(h.expect(ACK).seq(), seg(11));
    h.expect_none();
    h.finish();
}

#[test]
fn newreno_partial_acks_retransmit_the_next_hole() {
    let (mut h, iss) = H::established(opts(false));
    h.setopt(2, strata_ipc::l4::tcp_opt::CONGESTION, 1);
    let s = flight(&mut h, iss, 10);
    let seg = |i: usize| s[0] + i as u32 * M;
    h.peer(ACK, PISS + 1, seg(2), &[]);
    // Duplicates for 3, 4, 6.
    for _ in 0..2 {
        h.peer(ACK, PISS + 1, seg(2), &[]);
    }
    h.expect_none();
    h.peer(ACK, PISS + 1, seg(2), &[]);
    let r = h.expect(ACK);
    assert_eq!(r.seq(), seg(2), "fast retransmit");
    // Reno: ssthresh = flight/2 = 4000; cwnd = ssthresh + 3 segments.
    assert_eq!(h.conn().ssthresh, 4000);
    assert_eq!(h.conn().cwnd, 7000);
    // More duplicates inflate the window (7, 8, 9).
    for _ in 0..3 {
        h.peer(ACK, PISS + 1, seg(2), &[]);
    }
    assert_eq!(h.conn().cwnd, 10_000);
    h.expect_none();
    // Partial ACK (2 arrived; 5 still missing): retransmit 5 at once.
    h.peer(ACK, PISS + 1, seg(5), &[]);
    let r = h.expect(ACK);
    assert_eq!(r.seq(), seg(5));
    assert_eq!(h.core.stats().get(Stat::PartialAcks), 1);
    // cwnd deflated by the 3000 acknowledged, plus one segment.
    assert_eq!(h.conn().cwnd, 8000);
    // Full ACK: recovery over, cwnd = min(ssthresh, max(flight, MSS) +
    // MSS) with nothing left in flight.
    h.peer(ACK, PISS + 1, seg(10), &[]);
    assert_eq!(h.conn().cwnd, 2000);
    assert_eq!(h.conn().cc, "reno");
    assert_eq!(h.core.stats().get(Stat::RetransSegs), 2);
    h.finish();
}

#[test]
fn rto_follows_rfc6298_with_karn_and_backoff() {
    let mut cfg = config();
    cfg.timestamps = false;
    cfg.max_retries = 3;
    let mut h = H::with(cfg);
    // Active open with a 100 ms handshake RTT.
    let r = h.connect(5, PEER, 443);
    h.lport = r.local_port;
    h.pport = 443;
    let syn = h.expect(SYN);
    let iss = syn.seq();
    h.advance(100);
    h.peer_opts(SYN | ACK, PISS, iss + 1, &[], opts(false));
    h.expect(ACK);
    h.expect_up(op::CONNECTED);
    // SRTT 100 ms, RTTVAR 50 ms: RTO = 100 + 4·50 = 300 ms.
    let c = h.conn();
    assert_eq!((c.srtt_us, c.rto_us), (100_000, 300_000));
    h.nodelay(5);
    h.send(5, b"one");
    h.expect(ACK);
    h.advance(100);
    h.peer(ACK, PISS + 1, iss + 4, &[]);
    // RTTVAR = 3/4·50 + 1/4·0 = 37.5 ms: RTO = 100 + 150 = 250 ms.
    let c = h.conn();
    assert_eq!((c.srtt_us, c.rto_us), (100_000, 250_000));
    // A lost segment: retransmitted at 250 ms, then 500, 1000 (back-off).
    h.send(5, b"two");
    h.expect(ACK);
    h.advance(249);
    h.expect_none();
    h.advance(1);
    assert_eq!(h.expect(ACK).seq(), iss + 4);
    assert_eq!(h.conn().rto_us, 500_000);
    h.advance(499);
    h.expect_none();
    h.advance(1);
    h.expect(ACK);
    // Its ACK comes 10 ms later: Karn — no sample (it would say 10 ms),
    // the back-off ends.
    h.advance(10);
    h.peer(ACK, PISS + 1, iss + 7, &[]);
    let c = h.conn();
    assert_eq!((c.srtt_us, c.rto_us), (100_000, 250_000));
    // A fresh segment is timed again.
    h.send(5, b"three");
    h.expect(ACK);
    h.advance(50);
    h.peer(ACK, PISS + 1, iss + 12, &[]);
    let c = h.conn();
    // SRTT = 7/8·100 + 1/8·50 = 93.75 ms.
    assert_eq!(c.srtt_us, 93_750);
    // Max retries: 3 timeouts, then ETIMEDOUT.
    h.send(5, b"four");
    h.expect(ACK);
    h.advance(60_000);
    assert_eq!(h.segs.len(), 3, "three retransmissions");
    let e = h.expect_up(op::SOCK_ERROR);
    assert_eq!(e.errno, libc::ETIMEDOUT);
    h.expect_up(op::CLOSED);
    assert_eq!(h.core.stats().get(Stat::ConnTimeouts), 1);
    h.segs.clear();
    h.finish();
}

#[test]
fn rto_resends_from_the_first_unacknowledged_in_slow_start() {
    let (mut h, iss) = H::established(opts(false));
    let s = flight(&mut h, iss, 6);
    h.advance(200);
    // cwnd is one segment after a timeout.
    assert_eq!(h.expect(ACK).seq(), s[0]);
    h.expect_none();
    assert_eq!(h.conn().cwnd, M);
    assert_eq!(h.conn().ssthresh, 7000, "CUBIC: β·cwnd, as Linux");
    h.peer(ACK, PISS + 1, s[1], &[]);
    // Slow start: two segments.
    assert_eq!(h.expect(ACK).seq(), s[1]);
    assert_eq!(h.expect(ACK).seq(), s[2]);
    h.expect_none();
    h.finish();
}

#[test]
fn timestamps_give_rtt_samples_across_retransmissions() {
    // The RTO's retransmission, not a probe before it.
    let mut h = H::with(TcpConfig {
        tail_loss_probe: false,
        ..config()
    });
    h.listen(1, LPORT, 4);
    h.pts = Some(10);
    let iss = h.accept(2, syn_opts(10));
    h.nodelay(2);
    h.send(2, b"x");
    let s = h.expect(ACK);
    h.advance(200);
    let r = h.expect(ACK);
    let (tsval, _) = r.opts.timestamp.unwrap();
    assert_ne!(s.opts.timestamp.unwrap().0, tsval);
    // The ACK echoes the retransmission's TSval, 30 ms after it.
    h.advance(30);
    h.peer_opts(
        ACK,
        PISS + 1,
        iss + 2,
        &[],
        TcpOptions {
            timestamp: Some((11, tsval)),
            ..TcpOptions::default()
        },
    );
    // The handshake sample was 0 (no time passed): SRTT moves towards
    // 30 ms by 1/8.
    let srtt = h.conn().srtt_us;
    assert!((3750..=3751).contains(&srtt), "{srtt}");
    h.finish();
}

/// Gives an established connection an SRTT of 3.751 ms (the handshake's
/// sample was 0 ms, then one of 30 ms); returns the next sequence number
/// to send, less one.
fn with_rtt(h: &mut H, iss: u32) -> u32 {
    let s = flight(h, iss, 1);
    h.advance(30);
    h.peer(ACK, PISS + 1, s[0] + M, &[]);
    h.expect_none();
    assert_eq!(h.conn().srtt_us, 3751);
    s[0] + M - 1
}

#[test]
fn a_tail_loss_probe_resends_the_last_segment_before_the_rto() {
    let (mut h, iss) = H::established(opts(true));
    let base = with_rtt(&mut h, iss);
    let s = flight(&mut h, base, 3);
    // No ACK at all: the probe after 2·SRTT + 2 ms = 9.5 ms is the last
    // segment.
    h.advance(9);
    h.expect_none();
    h.advance(1);
    let p = h.expect(ACK);
    assert_eq!((p.seq(), p.len()), (s[2], M));
    assert_eq!(h.core.stats().get(Stat::TlpProbes), 1);
    // One probe per silence; then the RTO (200 ms after the probe).
    h.advance(199);
    h.expect_none();
    h.advance(1);
    assert_eq!(h.expect(ACK).seq(), s[0]);
    assert_eq!(h.core.stats().get(Stat::RtoExpired), 1);
    assert_eq!(h.core.stats().get(Stat::TlpProbes), 1);
    h.segs.clear();
}

#[test]
fn a_loss_with_too_few_duplicate_acks_is_repaired_after_a_round_trip() {
    let (mut h, iss) = H::established(opts(true));
    let base = with_rtt(&mut h, iss);
    let s = flight(&mut h, base, 3);
    // The first is lost, the other two arrive: two duplicate ACKs, fewer
    // than DupThresh.
    sack_ack(&mut h, s[0], &[(s[1], s[1] + M)]);
    sack_ack(&mut h, s[0], &[(s[1], s[2] + M)]);
    h.expect_none();
    // SRTT + 1 ms (the least reordering allowance) = 4.75 ms after the
    // lost segment was sent, it is declared lost: fast retransmit, long
    // before the RTO.
    h.advance(4);
    h.expect_none();
    h.advance(1);
    let r = h.expect(ACK);
    assert_eq!((r.seq(), r.len()), (s[0], M));
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::FastRetrans), 1);
    assert_eq!(h.core.stats().get(Stat::RtoExpired), 0);
    h.peer(ACK, PISS + 1, s[2] + M, &[]);
    assert_eq!(h.conn().send_q, 0);
}

#[test]
fn a_lost_retransmission_is_sent_again_without_a_timeout() {
    let (mut h, iss) = H::established(opts(true));
    let base = with_rtt(&mut h, iss);
    let s = flight(&mut h, base, 10);
    let seg = |i: usize| s[0] + i as u32 * M;
    // 0 is lost; 1..3 arrive: recovery retransmits 0.
    for k in 2..=4 {
        sack_ack(&mut h, seg(0), &[(seg(1), seg(k))]);
    }
    assert_eq!(h.expect(ACK).seq(), seg(0));
    h.expect_none();
    // More data is queued; the rest of the flight arrives, opening the
    // pipe: new segments 10.. go out, after the retransmission.
    h.send(2, &pattern(5 * M as usize, 6));
    sack_ack(&mut h, seg(0), &[(seg(1), seg(10))]);
    let new: Vec<Seg> = h.segs.drain(..).collect();
    assert!(new.len() >= 3, "{new:?}");
    assert_eq!(new[0].seq(), seg(10));
    // Three of them arrive, yet 0 is still missing: its retransmission
    // was lost as well. It goes again at once.
    sack_ack(&mut h, seg(0), &[(seg(1), seg(13))]);
    let r = h.expect(ACK);
    assert_eq!(r.seq(), seg(0));
    assert_eq!(h.core.stats().get(Stat::LostRetrans), 1);
    assert_eq!(h.core.stats().get(Stat::RtoExpired), 0);
    h.segs.clear();
}

/// Data outstanding when the peer's window closes, and the update that
/// reopens it lost: the retransmission timer asks for the window with a
/// probe (it has nothing that fits a zero window to resend), and the
/// peer's answer lets the data go again.
#[test]
fn a_timeout_into_a_zero_window_probes_for_it() {
    let (mut h, iss) = H::established(opts(true));
    let v = flight(&mut h, iss, 3);
    // The first segment is acknowledged with a zero window.
    h.pwin = 0;
    h.peer(ACK, PISS + 1, v[1], &[]);
    h.expect_none();
    // The timeout: a probe (after the tail loss probe's one segment,
    // which the zero window drops), not silence.
    h.advance(1_500);
    let sent: Vec<(u32, u32)> = h.segs.drain(..).map(|s| (s.seq(), s.len())).collect();
    assert!(
        sent.contains(&(v[1] - 1, 0)),
        "a zero-window probe: {sent:?}"
    );
    // The window reopens: the rest is sent again.
    h.pwin = 65535;
    h.peer(ACK, PISS + 1, v[1], &[]);
    assert_eq!(h.expect(ACK).seq(), v[1]);
    h.finish();
}

#[test]
fn a_pure_ack_after_a_timeout_carries_the_highest_sequence_sent() {
    let (mut h, iss) = H::established(opts(false));
    let s = flight(&mut h, iss, 6);
    h.advance(200);
    // The timeout sends SND.NXT back: the first segment again.
    assert_eq!(h.expect(ACK).seq(), s[0]);
    h.expect_none();
    // An old duplicate from the peer asks for an ACK at once. Numbered
    // from the rewound SND.NXT (s[1]), a peer that received all six
    // segments would drop it as old, and with it our acknowledgement.
    h.peer(ACK, PISS + 1 - 100, iss + 1, &[7; 100]);
    let a = h.expect(ACK);
    assert_eq!(a.len(), 0);
    assert_eq!(a.seq(), iss + 1 + 6 * M, "SND.MAX");
    assert_eq!(a.ack(), PISS + 1);
    h.finish();
}

/// A peer that dropped what we sent (its tiny buffer pruned) and closed
/// its window takes a zero-length segment only at its RCV.NXT: our ACKs
/// of its data are numbered at its window's edge, not SND.MAX, or it
/// would drop every one and stop sending (a stall seen against Linux).
#[test]
fn a_pure_ack_to_a_peer_that_dropped_our_data_is_numbered_at_its_window_edge() {
    let (mut h, iss) = H::established(opts(false));
    flight(&mut h, iss, 3);
    h.pwin = 0;
    h.peer(ACK, PISS + 1, iss + 1, &[]);
    h.segs.clear();
    // Two full segments of its data: acknowledged at once.
    h.peer(ACK, PISS + 1, iss + 1, &pattern(2 * M as usize, 5));
    let a = h.expect(ACK);
    assert_eq!(a.len(), 0);
    assert_eq!(a.ack(), PISS + 1 + 2 * M);
    assert_eq!(a.seq(), iss + 1, "the edge of a zero window: SND.UNA");
    h.finish();
}

#[test]
fn a_pure_ack_at_the_right_edge_of_a_full_window_is_taken() {
    let (mut h, iss) = H::established(opts(true));
    let v = flight(&mut h, iss, 2);
    let wnd = h.conn().rcv_wnd;
    assert!(wnd > 4 * M);
    // The peer fills our window, all but its first segment (lost).
    let edge = (PISS + 1).wrapping_add(wnd);
    let mut at = PISS + 1 + M;
    while at != edge {
        let n = edge.wrapping_sub(at).min(M);
        h.peer(ACK, at, iss + 1, &pattern(n as usize, 3));
        at = at.wrapping_add(n);
    }
    assert_eq!(h.conn().ooo_q, wnd - M);
    h.segs.clear();
    // Its next ACK is numbered SND.NXT, our right edge, and acknowledges
    // our data: taken (RFC 9293's strict `<` would drop it).
    h.peer(ACK, edge, v[1] + M, &[]);
    assert_eq!(h.conn().send_q, 0, "our data acknowledged");
    assert_eq!(h.core.stats().get(Stat::OutOfWindow), 0);
    // The hole filled, everything is delivered.
    h.peer(ACK, PISS + 1, v[1] + M, &pattern(M as usize, 3));
    assert_eq!(h.data_for(2).len() as u32, wnd);
    h.finish();
}

#[test]
fn a_fast_retransmit_resends_only_what_was_sent() {
    let (mut h, iss) = H::established(opts(false));
    // The peer's window lets 700 of a 1,000-byte send go.
    h.pwin = 700;
    h.peer(ACK, PISS + 1, iss + 1, &[]);
    h.nodelay(2);
    h.send(2, &pattern(1000, 1));
    assert_eq!(h.expect(ACK).len(), 700);
    h.expect_none();
    // Three duplicate ACKs: the head again, but only the 700 bytes sent.
    // Sending the rest here would ignore the peer's window and go past
    // SND.MAX, and the peer's ACK of it would be refused as acknowledging
    // unsent data: no ACK of the peer's would ever be taken again.
    for _ in 0..3 {
        h.peer(ACK, PISS + 1, iss + 1, &[]);
    }
    let r = h.expect(ACK);
    assert_eq!((r.seq(), r.len()), (iss + 1, 700));
    h.pwin = 65535;
    h.peer(ACK, PISS + 1, iss + 1 + 700, &[]);
    assert_eq!(h.core.stats().get(Stat::AckInvalid), 0);
    let s = h.expect(ACK);
    assert_eq!((s.seq(), s.len()), (iss + 1 + 700, 300));
    h.finish();
}
