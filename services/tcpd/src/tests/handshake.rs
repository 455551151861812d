//! Opening connections: passive and active handshakes, option
//! negotiation, simultaneous open, RSTs to closed ports and refused
//! connects.

use super::*;
use crate::Stat;

#[test]
fn passive_open_negotiates_options() {
    let mut h = H::new();
    h.listen(1, LPORT, 16);
    h.peer_opts(SYN, PISS, 0, &[], syn_opts(5000));
    let sa = h.expect(SYN | ACK);
    assert_eq!(sa.ack(), PISS + 1);
    assert_eq!(sa.opts.mss, Some(1460));
    assert!(sa.opts.sack_permitted);
    // 64 KiB buffer: scale 1 would do (65535 << 1 >= 65536).
    assert_eq!(sa.opts.window_scale, Some(1));
    let (tsval, ecr) = sa.opts.timestamp.unwrap();
    assert_eq!(ecr, 5000);
    assert_eq!(sa.src, IpAddr::from(LOCAL));
    assert_eq!(sa.tcp.window, 65535);
    h.pts = Some(5001);
    h.peer_opts(
        ACK,
        PISS + 1,
        sa.seq() + 1,
        &[],
        TcpOptions {
            timestamp: Some((5001, tsval)),
            ..TcpOptions::default()
        },
    );
    let a = h.expect_up(op::ACCEPTABLE);
    assert_eq!(a.local_addr, mapped(u(LOCAL)));
    assert_eq!(a.local_port, LPORT);
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 2,
        value: a.value,
        ..L4Ctl::default()
    });
    let c = h.conn();
    assert_eq!(c.state, State::Established);
    assert_eq!(c.sock, 2);
    // MSS 1460 less 12 bytes of timestamps.
    assert_eq!(c.mss, 1448);
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::PassiveOpens), 1);
    h.finish();
}

#[test]
fn active_open_and_established() {
    let mut h = H::new();
    let r = h.connect(5, PEER, 443);
    assert_eq!(r.op, op::OK);
    assert_eq!(r.local_addr, mapped(u(LOCAL)), "source chosen at once");
    assert!((50000..=50099).contains(&r.local_port));
    let syn = h.expect(SYN);
    assert_eq!(syn.opts.mss, Some(1460));
    assert_eq!(syn.opts.window_scale, Some(1));
    assert!(syn.opts.sack_permitted);
    assert!(syn.opts.timestamp.is_some());
    assert_eq!(h.state_of(5), Some(State::SynSent));
    h.lport = syn.tcp.src_port;
    h.pport = 443;
    h.peer_opts(
        SYN | ACK,
        PISS,
        syn.seq() + 1,
        &[],
        TcpOptions {
            mss: Some(1000),
            ..TcpOptions::default()
        },
    );
    let a = h.expect(ACK);
    assert_eq!((a.seq(), a.ack()), (syn.seq() + 1, PISS + 1));
    assert!(a.opts.timestamp.is_none(), "peer declined timestamps");
    let c = h.expect_up(op::CONNECTED);
    assert_eq!(c.local_port, syn.tcp.src_port);
    assert_eq!(c.value, 1000, "the MSS");
    let info = h.conn();
    assert_eq!(info.state, State::Established);
    assert_eq!(info.mss, 1000);
    assert!(info.srtt_us > 0 || info.rto_us >= 200_000);
    h.finish();
}

#[test]
fn connect_to_closed_port_is_refused() {
    let mut h = H::new();
    h.connect(5, PEER, 443);
    let syn = h.expect(SYN);
    h.lport = syn.tcp.src_port;
    h.pport = 443;
    // RST without an acceptable ACK: dropped (RFC 9293 §3.10.7.3).
    h.peer(RST | ACK, 0, syn.seq() + 5, &[]);
    h.expect_none();
    h.no_ctl_up();
    // An unacceptable ACK without RST is answered with one.
    h.peer(ACK, 0, syn.seq() + 5, &[]);
    assert_eq!(h.expect(RST).seq(), syn.seq() + 5);
    h.peer(RST | ACK, 0, syn.seq() + 1, &[]);
    let e = h.expect_up(op::SOCK_ERROR);
    assert_eq!(e.errno, libc::ECONNREFUSED);
    h.expect_up(op::CLOSED);
    h.expect_none();
    assert_eq!(h.core.conns_in_use(), 0);
    assert_eq!(h.core.stats().get(Stat::ConnRefused), 1);
    h.finish();
}

#[test]
fn segments_to_closed_ports_get_rfc9293_resets() {
    let mut h = H::new();
    // No ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    h.peer(SYN, 77, 0, &[]);
    let r = h.expect(RST | ACK);
    assert_eq!((r.seq(), r.ack()), (0, 78));
    h.peer(PSH, 100, 0, b"abc");
    let r = h.expect(RST | ACK);
    assert_eq!(r.ack(), 103);
    h.peer(FIN, 100, 0, b"abc");
    let r = h.expect(RST | ACK);
    assert_eq!(r.ack(), 104);
    // ACK: <SEQ=SEG.ACK><CTL=RST>.
    h.peer(ACK, 100, 5555, b"x");
    let r = h.expect(RST);
    assert_eq!(r.seq(), 5555);
    // A RST is never answered.
    h.peer(RST, 100, 0, &[]);
    h.peer(RST | ACK, 100, 9, &[]);
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::NoConnReset), 4);
    assert_eq!(h.core.stats().get(Stat::NoConnDropped), 2);
    h.finish();
}

#[test]
fn listener_answers_stray_ack_with_reset_and_ignores_rst() {
    let mut h = H::new();
    h.listen(1, LPORT, 16);
    h.peer(ACK, 5, 999, &[]);
    let r = h.expect(RST);
    assert_eq!(r.seq(), 999);
    h.peer(RST, 5, 0, &[]);
    h.expect_none();
    h.peer(FIN, 5, 0, &[]);
    h.expect_none();
    h.finish();
}

#[test]
fn simultaneous_open() {
    let mut h = H::new();
    h.connect(5, PEER, 443);
    let syn = h.expect(SYN);
    h.lport = syn.tcp.src_port;
    h.pport = 443;
    // The peer's own SYN crosses ours.
    h.peer_opts(
        SYN,
        PISS,
        0,
        &[],
        TcpOptions {
            mss: Some(1460),
            ..TcpOptions::default()
        },
    );
    let sa = h.expect(SYN | ACK);
    assert_eq!(sa.seq(), syn.seq(), "same ISN");
    assert_eq!(sa.ack(), PISS + 1);
    assert_eq!(h.state_of(5), Some(State::SynReceived));
    // The peer's SYN-ACK for our SYN.
    h.peer(SYN | ACK, PISS, syn.seq() + 1, &[]);
    // A SYN in SYN-RECEIVED (not a retransmission of the first): challenge.
    h.expect(ACK);
    h.peer(ACK, PISS + 1, syn.seq() + 1, &[]);
    h.expect_up(op::CONNECTED);
    assert_eq!(h.state_of(5), Some(State::Established));
    h.finish();
}

#[test]
fn syn_retransmission_and_timeout() {
    let mut cfg = config();
    cfg.syn_retries = 2;
    let mut h = H::with(cfg);
    h.connect(5, PEER, 443);
    h.expect(SYN);
    h.advance(999);
    h.expect_none();
    h.advance(1);
    h.expect(SYN);
    h.advance(1999);
    h.expect_none();
    h.advance(1);
    h.expect(SYN);
    h.advance(4000);
    h.expect_none();
    let e = h.expect_up(op::SOCK_ERROR);
    assert_eq!(e.errno, libc::ETIMEDOUT);
    h.expect_up(op::CLOSED);
    assert_eq!(h.core.conns_in_use(), 0);
    h.finish();
}

#[test]
fn icmp_port_unreachable_fails_a_connect() {
    let mut h = H::new();
    h.connect(5, PEER, 443);
    let syn = h.expect(SYN);
    // The quoted datagram: our SYN's IP header and first 8 TCP bytes.
    let quoted = build(
        (LOCAL, syn.tcp.src_port),
        (PEER, 443),
        SYN,
        syn.seq(),
        0,
        1000,
        &TcpOptions::default(),
        &[],
    );
    let mut icmp = vec![0u8; 8 + 28];
    icmp[0] = 3;
    icmp[1] = 3;
    icmp[8..].copy_from_slice(&quoted[..28]);
    let c = strata_proto::checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut d = vec![0u8; 20 + icmp.len()];
    Ipv4Header {
        header_len: 20,
        tos: 0,
        total_len: d.len() as u16,
        ident: 3,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
        ttl: 64,
        protocol: protocol::ICMP,
        checksum: 0,
        src: PEER,
        dst: LOCAL,
    }
    .emit(&mut d)
    .unwrap();
    d[20..].copy_from_slice(&icmp);
    let hh = ip_handle(&mut h.pool, &d, protocol::ICMP);
    h.core.from_ip(h.now, &mut h.pool, hh, &mut h.out);
    h.collect();
    let e = h.expect_up(op::SOCK_ERROR);
    assert_eq!(e.errno, libc::ECONNREFUSED);
    h.expect_up(op::CLOSED);
    h.finish();
}

#[test]
fn bind_rules() {
    let mut h = H::new();
    assert_eq!(h.bind(1, 80).op, op::OK);
    let r = h.bind(2, 80);
    assert_eq!((r.op, r.errno), (op::ERROR, libc::EADDRINUSE));
    let r = h.bind(1, 81);
    assert_eq!((r.op, r.errno), (op::ERROR, libc::EINVAL));
    let r = h.ctl(L4Ctl {
        op: op::BIND,
        sock: 3,
        local_addr: mapped(u(Ipv4Addr::new(10, 0, 0, 99))),
        local_port: 90,
        ..L4Ctl::default()
    });
    assert_eq!(r.unwrap().errno, libc::EADDRNOTAVAIL);
    let r = h.bind(4, 0);
    assert_eq!(r.op, op::OK);
    assert!((50000..=50099).contains(&r.local_port));
    // Both with SO_REUSEADDR, neither listening: allowed.
    let reuse = |sock| L4Ctl {
        op: op::BIND,
        sock,
        local_addr: mapped(0),
        local_port: 8080,
        flags: strata_ipc::l4::ctl_flags::REUSEADDR,
        ..L4Ctl::default()
    };
    assert_eq!(h.ctl(reuse(10)).unwrap().op, op::OK);
    assert_eq!(h.ctl(reuse(11)).unwrap().op, op::OK);
    // But only one may listen.
    let l = |sock| L4Ctl {
        op: op::LISTEN,
        sock,
        value: 5,
        ..L4Ctl::default()
    };
    assert_eq!(h.ctl(l(10)).unwrap().op, op::OK);
    assert_eq!(h.ctl(l(11)).unwrap().errno, libc::EADDRINUSE);
    let r = h.ctl(L4Ctl {
        op: 77,
        sock: 1,
        ..L4Ctl::default()
    });
    assert_eq!(r.unwrap().errno, libc::EOPNOTSUPP);
    for s in [1, 4, 10, 11] {
        h.req(op::CLOSE, s, 0);
        h.expect_up(op::CLOSED);
    }
    assert_eq!(h.core.conns_in_use(), 0);
    h.finish();
}
