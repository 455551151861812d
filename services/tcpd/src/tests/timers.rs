//! Timers: zero-window probing (persist), keep-alive, delayed ACK, and
//! half-open connections given up.

use super::*;
use crate::Stat;

fn mss1000() -> TcpOptions {
    TcpOptions {
        mss: Some(1000),
        ..TcpOptions::default()
    }
}

#[test]
fn zero_window_is_probed_with_backoff_until_it_opens() {
    let (mut h, iss) = H::established(mss1000());
    h.nodelay(2);
    h.send(2, &pattern(3000, 1));
    for _ in 0..3 {
        h.expect(ACK);
    }
    h.send(2, &pattern(2000, 2));
    h.expect(ACK);
    h.expect(ACK);
    // The peer takes it all but its window closes.
    h.pwin = 0;
    h.peer(ACK, PISS + 1, iss + 5001, &[]);
    h.send(2, &pattern(500, 3));
    h.expect_none();
    // Probes: snd_una − 1, no data, at the RTO (200 ms) then doubling.
    h.advance(200);
    let p = h.expect(ACK);
    assert_eq!((p.seq(), p.len()), (iss + 5000, 0));
    h.advance(399);
    h.expect_none();
    h.advance(1);
    h.expect(ACK);
    h.advance(800);
    h.expect(ACK);
    // The peer answers each probe with window 0; probes go on (never a
    // timeout for a zero window).
    h.peer(ACK, PISS + 1, iss + 5001, &[]);
    h.expect_none();
    h.advance(60_000);
    let n = h.segs.len();
    assert!(n >= 4, "{n} probes in a minute");
    h.segs.clear();
    assert_eq!(h.state_of(2), Some(State::Established));
    // The window opens: the data goes at once.
    h.pwin = 65535;
    h.peer(ACK, PISS + 1, iss + 5001, &[]);
    let d = h.expect(ACK);
    assert_eq!((d.seq(), d.payload.clone()), (iss + 5001, pattern(500, 3)));
    assert!(h.core.stats().get(Stat::WindowProbes) >= 4);
    h.finish();
}

#[test]
fn keepalive_probes_then_gives_up() {
    let mut cfg = config();
    cfg.keepalive_idle_ms = 10_000;
    cfg.keepalive_intvl_ms = 1_000;
    cfg.keepalive_probes = 3;
    let mut h = H::with(cfg);
    h.listen(1, LPORT, 4);
    let iss = h.accept(2, TcpOptions::default());
    h.setopt(2, strata_ipc::l4::tcp_opt::KEEPALIVE, 1);
    h.advance(9_999);
    h.expect_none();
    h.advance(1);
    let p = h.expect(ACK);
    assert_eq!((p.seq(), p.len(), p.ack()), (iss, 0, PISS + 1));
    // The peer answers: idle again from now.
    h.peer(ACK, PISS + 1, iss + 1, &[]);
    h.advance(9_999);
    h.expect_none();
    h.advance(1);
    h.expect(ACK);
    // No more answers: probes every second, then a reset.
    h.advance(1000);
    h.expect(ACK);
    h.advance(1000);
    h.expect(ACK);
    h.advance(1000);
    h.expect(RST | ACK);
    let e = h.expect_up(op::SOCK_ERROR);
    assert_eq!(e.errno, libc::ETIMEDOUT);
    h.expect_up(op::CLOSED);
    assert_eq!(h.core.stats().get(Stat::KeepaliveProbes), 4);
    h.finish();
}

#[test]
fn keepalive_off_by_default_and_defaults_match_linux() {
    let d = TcpConfig::default();
    assert_eq!(
        (
            d.keepalive_idle_ms,
            d.keepalive_intvl_ms,
            d.keepalive_probes
        ),
        (7_200_000, 75_000, 9)
    );
    assert_eq!(2 * d.msl_ms, 60_000);
    let (mut h, _) = H::established(TcpOptions::default());
    h.advance(8_000_000);
    h.expect_none();
    h.finish();
}

#[test]
fn half_open_connections_are_dropped_after_synack_retries() {
    let mut cfg = config();
    cfg.synack_retries = 2;
    let mut h = H::with(cfg);
    h.listen(1, LPORT, 4);
    h.peer(SYN, PISS, 0, &[]);
    h.expect(SYN | ACK);
    h.advance(1000);
    h.expect(SYN | ACK);
    h.advance(2000);
    h.expect(SYN | ACK);
    h.advance(4000);
    h.expect_none();
    assert_eq!(h.core.conns_in_use(), 1);
    assert_eq!(h.core.stats().get(Stat::SynAckTimeouts), 1);
    // A retransmitted SYN is answered with the same SYN-ACK.
    h.peer(SYN, PISS, 0, &[]);
    let a = h.expect(SYN | ACK);
    h.peer(SYN, PISS, 0, &[]);
    let b = h.expect(SYN | ACK);
    assert_eq!(a.seq(), b.seq());
    h.finish();
}
