//! Listeners: the accept queue and its backlog, the SYN queue, SYN
//! cookies under a SYN flood, closing a listener.

use super::*;
use crate::Stat;

/// A SYN from peer port `port`.
fn syn_from(h: &mut H, port: u16, opts: TcpOptions) {
    h.pport = port;
    h.peer_opts(SYN, PISS, 0, &[], opts);
}

/// A listener on port 80 with room for `backlog` and a SYN queue of one,
/// already filled by an embryo from peer port 1: the next SYN gets a
/// cookie.
fn listener_sending_cookies(backlog: u64) -> H {
    let mut cfg = config();
    cfg.max_syn_backlog = 1;
    let mut h = H::with(cfg);
    h.listen(1, LPORT, backlog);
    syn_from(&mut h, 1, TcpOptions::default());
    h
}

#[test]
fn accept_queue_honours_the_backlog() {
    let mut h = H::new();
    h.listen(1, LPORT, 1);
    let mut isns = Vec::new();
    for p in 0..3u16 {
        syn_from(&mut h, 1000 + p, TcpOptions::default());
        isns.push(h.expect(SYN | ACK).seq());
    }
    for p in 0..3u16 {
        h.pport = 1000 + p;
        h.peer(ACK, PISS + 1, isns[p as usize] + 1, &[]);
    }
    // Linux: backlog + 1 wait for accept; the third ACK is dropped.
    h.expect_up(op::ACCEPTABLE);
    h.expect_up(op::ACCEPTABLE);
    h.no_ctl_up();
    assert_eq!(h.core.stats().get(Stat::ListenOverflows), 1);
    // A new SYN is dropped while the queue is full.
    syn_from(&mut h, 2000, TcpOptions::default());
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::ListenDrops), 1);
    let l = h
        .core
        .connections()
        .find(|c| c.state == State::Listen)
        .unwrap();
    assert_eq!(l.recv_q, 2);
    h.finish();
}

#[test]
fn syn_flood_falls_back_to_cookies_and_a_real_client_still_connects() {
    let mut cfg = config();
    cfg.synack_retries = 1;
    let mut h = H::with(cfg);
    h.listen(1, LPORT, 8);
    // 1000 spoofed SYNs that never complete.
    for p in 0..1000u16 {
        syn_from(&mut h, 10_000 + p, syn_opts(1));
    }
    assert_eq!(h.segs.len(), 1000, "every SYN answered");
    h.segs.clear();
    assert_eq!(h.core.stats().get(Stat::SynCookiesSent), 992);
    assert_eq!(
        h.core.conns_in_use(),
        1 + 8,
        "only the SYN queue holds state"
    );
    // A legitimate client while the queue is full: a cookie.
    h.pts = None;
    syn_from(&mut h, 40_000, syn_opts(777));
    let sa = h.expect(SYN | ACK);
    assert_eq!(sa.ack(), PISS + 1);
    let (tsval, ecr) = sa.opts.timestamp.unwrap();
    assert_eq!(ecr, 777);
    assert_eq!(sa.opts.window_scale, Some(1), "kept in the timestamp");
    assert!(sa.opts.sack_permitted);
    // Its ACK (with data) completes the handshake from the cookie alone.
    h.peer_opts(
        ACK,
        PISS + 1,
        sa.seq() + 1,
        b"hello",
        TcpOptions {
            timestamp: Some((778, tsval)),
            ..TcpOptions::default()
        },
    );
    let a = h.expect_up(op::ACCEPTABLE);
    assert_eq!(a.remote_port, 40_000);
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 2,
        value: a.value,
        ..L4Ctl::default()
    });
    assert_eq!(h.data_for(2), b"hello");
    h.expect(ACK);
    let c = h.core.connection_of(2).unwrap();
    assert_eq!(c.state, State::Established);
    // MSS 1460 from the cookie table, less the timestamp option.
    assert_eq!(c.mss, 1448);
    assert_eq!(h.core.stats().get(Stat::SynCookiesOk), 1);
    // A forged ACK does not get in (and gets no reset while cookies are
    // out: see the next test).
    h.pport = 40_001;
    h.peer(ACK, PISS + 1, 12345, &[]);
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::SynCookiesBad), 1);
    assert_eq!(h.core.conns_in_use(), 2 + 8);
    // The flood's half-open connections time out; the data path works.
    h.advance(10_000);
    h.segs.clear();
    assert_eq!(h.core.conns_in_use(), 2);
    h.pport = 40_000;
    h.nodelay(2);
    h.send(2, b"world");
    assert_eq!(h.expect(ACK).payload, b"world");
    h.finish();
}

#[test]
fn cookie_without_timestamps_offers_no_options() {
    let mut h = listener_sending_cookies(8);
    h.expect(SYN | ACK);
    syn_from(
        &mut h,
        2,
        TcpOptions {
            mss: Some(1400),
            window_scale: Some(3),
            sack_permitted: true,
            ..TcpOptions::default()
        },
    );
    let sa = h.expect(SYN | ACK);
    assert_eq!(sa.opts.window_scale, None);
    assert!(!sa.opts.sack_permitted);
    h.peer(ACK, PISS + 1, sa.seq() + 1, &[]);
    h.expect_up(op::ACCEPTABLE);
    let c = h.core.connections().find(|c| c.remote.1 == 2).unwrap();
    assert_eq!(c.mss, 1300, "largest cookie MSS not above 1400");
    h.finish();
}

#[test]
fn closing_a_listener_resets_unaccepted_connections() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    syn_from(&mut h, 1, TcpOptions::default());
    let a = h.expect(SYN | ACK);
    h.peer(ACK, PISS + 1, a.seq() + 1, &[]);
    h.expect_up(op::ACCEPTABLE);
    syn_from(&mut h, 2, TcpOptions::default());
    h.expect(SYN | ACK);
    h.req(op::CLOSE, 1, 0);
    // The established one gets a RST; the half-open one is dropped.
    let r = h.expect(RST | ACK);
    assert_eq!(r.tcp.dst_port, 1);
    h.expect_none();
    h.expect_up(op::CLOSED);
    assert_eq!(h.core.conns_in_use(), 0);
    // An ATTACH that crossed the close: the new socket is told.
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 9,
        value: 0,
        ..L4Ctl::default()
    });
    assert_eq!(h.expect_up(op::SOCK_ERROR).errno, libc::ECONNRESET);
    h.expect_up(op::CLOSED);
    h.finish();
}

#[test]
fn sockd_aborts_an_unaccepted_connection_by_its_id() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    syn_from(&mut h, 1, TcpOptions::default());
    let a = h.expect(SYN | ACK);
    h.peer(ACK, PISS + 1, a.seq() + 1, &[]);
    let acc = h.expect_up(op::ACCEPTABLE);
    assert_eq!(h.core.conns_in_use(), 2);
    // sockd had no socket for it: ABORT by connection id, no socket.
    h.ctl(L4Ctl {
        op: op::ABORT,
        sock: 0,
        value: acc.value,
        ..L4Ctl::default()
    });
    let r = h.expect(RST | ACK);
    assert_eq!(r.tcp.dst_port, 1);
    h.expect_none();
    assert_eq!(h.core.conns_in_use(), 1, "only the listener is left");
    assert_eq!(h.core.stats().get(Stat::Aborted), 1);
    // A second ABORT of the same id, or of a stale one, does nothing.
    h.ctl(L4Ctl {
        op: op::ABORT,
        sock: 0,
        value: acc.value,
        ..L4Ctl::default()
    });
    h.expect_none();
    // The listener still accepts, its queue not counting the aborted one.
    syn_from(&mut h, 2, TcpOptions::default());
    let a = h.expect(SYN | ACK);
    h.peer(ACK, PISS + 1, a.seq() + 1, &[]);
    h.expect_up(op::ACCEPTABLE);
    h.segs.clear();
}

/// The cause of the resets a burst of 500 kernel clients saw: a cookie's
/// ACK arriving while the accept queue was full was dropped with nothing
/// remembered, so the client's next data segment (its sequence number past
/// the one the cookie encodes) failed the cookie check and was reset.
/// Linux resets nobody because an accept queue is full; neither may tcpd.
#[test]
fn a_cookie_ack_meeting_a_full_accept_queue_waits_and_is_never_reset() {
    let mut cfg = config();
    cfg.max_syn_backlog = 1;
    let mut h = H::with(cfg);
    h.listen(1, LPORT, 1);
    // One embryo fills the SYN queue; the next SYN gets a cookie.
    syn_from(&mut h, 1, TcpOptions::default());
    let sa1 = h.expect(SYN | ACK);
    syn_from(&mut h, 2, TcpOptions::default());
    let cookie = h.expect(SYN | ACK);
    assert_eq!(h.core.stats().get(Stat::SynCookiesSent), 1);
    // Two handshakes complete: the accept queue (backlog 1 holds two, as
    // on Linux) is full.
    h.pport = 1;
    h.peer(ACK, PISS + 1, sa1.seq() + 1, &[]);
    syn_from(&mut h, 3, TcpOptions::default());
    let sa3 = h.expect(SYN | ACK);
    h.peer(ACK, PISS + 1, sa3.seq() + 1, &[]);
    let first = h.expect_up(op::ACCEPTABLE);
    let third = h.expect_up(op::ACCEPTABLE);
    // The cookie's ACK with data, then more data: both dropped, no reset.
    h.pport = 2;
    h.peer(ACK, PISS + 1, cookie.seq() + 1, b"abc");
    h.peer(ACK, PISS + 4, cookie.seq() + 1, b"def");
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::SynCookiesBad), 0);
    assert_eq!(h.core.stats().get(Stat::OutRsts), 0);
    assert_eq!(h.core.stats().get(Stat::ListenOverflows), 2);
    h.no_ctl_up();
    // A client waiting for us to speak first is asked again: the SYN-ACK
    // is retransmitted from the connection the cookie made.
    h.advance(1_100);
    let again = h.expect(SYN | ACK);
    assert_eq!((again.seq(), again.ack()), (cookie.seq(), PISS + 1));
    h.expect_none();
    // The application accepts; the client's retransmission gets in.
    for (sock, a) in [(10, first), (11, third)] {
        h.ctl(L4Ctl {
            op: op::ATTACH,
            sock,
            value: a.value,
            ..L4Ctl::default()
        });
    }
    h.peer(ACK, PISS + 1, cookie.seq() + 1, b"abcdef");
    let a = h.expect_up(op::ACCEPTABLE);
    assert_eq!(a.remote_port, 2);
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 12,
        value: a.value,
        ..L4Ctl::default()
    });
    assert_eq!(h.data_for(12), b"abcdef");
    assert_eq!(h.state_of(12), Some(State::Established));
    assert_eq!(h.core.stats().get(Stat::OutRsts), 0);
    h.finish();
}

/// With the connection table full a SYN is dropped (the peer retries),
/// not answered with a cookie whose ACK would find no room and whose
/// later segments would be reset.
#[test]
fn a_full_connection_table_drops_syns_rather_than_sending_cookies() {
    let mut h = H::with_storage(config(), 2, 256);
    h.listen(1, LPORT, 8);
    syn_from(&mut h, 1, TcpOptions::default());
    h.expect(SYN | ACK);
    syn_from(&mut h, 2, TcpOptions::default());
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::ConnLimit), 1);
    assert_eq!(h.core.stats().get(Stat::SynCookiesSent), 0);
    h.finish();
}

/// A cookie connection whose first segment after the handshake (the one
/// whose sequence number the cookie encodes) was lost: its later segments
/// fail the cookie check and are dropped, not reset, and the peer's
/// retransmission of the first one makes the connection.
#[test]
fn a_cookie_connection_survives_the_loss_of_its_first_segment() {
    let mut h = listener_sending_cookies(8);
    h.expect(SYN | ACK);
    syn_from(&mut h, 2, TcpOptions::default());
    let cookie = h.expect(SYN | ACK);
    // Its ACK with "abc" is lost; "def" arrives.
    h.peer(ACK, PISS + 4, cookie.seq() + 1, b"def");
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::SynCookiesBad), 1);
    assert_eq!(h.core.stats().get(Stat::OutRsts), 0);
    // The peer's timer sends "abc" again (and "def" with it).
    h.peer(ACK, PISS + 1, cookie.seq() + 1, b"abcdef");
    let a = h.expect_up(op::ACCEPTABLE);
    assert_eq!(a.remote_port, 2);
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 5,
        value: a.value,
        ..L4Ctl::default()
    });
    assert_eq!(h.data_for(5), b"abcdef");
    assert_eq!(h.core.stats().get(Stat::OutRsts), 0);
    h.finish();
}

/// Binds and listens `sock` on the listening port with SO_REUSEPORT.
fn listen_reuseport(h: &mut H, sock: u32) -> L4Ctl {
    let bind = h
        .ctl(L4Ctl {
            op: op::BIND,
            sock,
            local_addr: mapped(0),
            local_port: LPORT,
            flags: strata_ipc::l4::ctl_flags::REUSEPORT,
            ..L4Ctl::default()
        })
        .unwrap();
    if bind.op != op::OK {
        return bind;
    }
    h.ctl(L4Ctl {
        op: op::LISTEN,
        sock,
        value: 128,
        ..L4Ctl::default()
    })
    .unwrap()
}

/// Handshakes from peer ports `ports`; the listener each was announced on.
fn listeners_of(h: &mut H, ports: std::ops::Range<u16>) -> Vec<u32> {
    let mut to = Vec::new();
    for p in ports {
        syn_from(h, p, TcpOptions::default());
        let isn = h.expect(SYN | ACK).seq();
        h.peer(ACK, PISS + 1, isn + 1, &[]);
        to.push(h.expect_up(op::ACCEPTABLE).sock);
    }
    to
}

#[test]
fn reuseport_listeners_split_connections_and_others_are_refused() {
    let mut h = H::new();
    assert_eq!(listen_reuseport(&mut h, 1).op, op::OK);
    assert_eq!(listen_reuseport(&mut h, 2).op, op::OK);
    // Without SO_REUSEPORT the port is taken.
    let r = h.bind(3, LPORT);
    assert_eq!((r.op, r.errno), (op::ERROR, libc::EADDRINUSE));
    let to = listeners_of(&mut h, 3000..3040);
    let (a, b) = (
        to.iter().filter(|&&s| s == 1).count(),
        to.iter().filter(|&&s| s == 2).count(),
    );
    assert_eq!(a + b, 40);
    assert!(a > 4 && b > 4, "split {a}/{b}");
    // Closing one (its waiting connections are reset, as on Linux)
    // leaves the other to take every connection.
    h.req(op::CLOSE, 1, 0);
    h.expect_up(op::CLOSED);
    h.segs.clear();
    h.ups.clear();
    // The other takes every connection now (its children stay).
    let to = listeners_of(&mut h, 4000..4010);
    assert!(to.iter().all(|&s| s == 2), "{to:?}");
    h.finish();
}
