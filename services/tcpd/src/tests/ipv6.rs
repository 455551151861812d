//! TCP over IPv6, dual-stack as Linux: handshakes both ways with IPv6
//! headers and the IPv6 MSS, a `::` listener taking IPv4 too (reported
//! mapped) unless IPV6_V6ONLY, bind conflicts across the families, SYN
//! cookies, checksums over the IPv6 pseudo-header, RSTs to nothing,
//! ICMPv6 errors (packet too big, unreachable), and a restart.

use super::*;
use crate::Stat;
use strata_ipc::l4::ctl_flags::{REUSEADDR, REUSEPORT, V6ONLY};
use strata_proto::checksum::pseudo_header_v6;

/// Our link-local address (from [`MAC`]).
const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 1);

fn a6(a: Ipv6Addr) -> u128 {
    u128::from(a)
}

/// A harness whose scripted peer is [`PEER6`], talking to [`LOCAL6`].
fn h6() -> H {
    h6_with(config())
}

fn h6_with(cfg: TcpConfig) -> H {
    let mut h = H::with(cfg);
    h.paddr = PEER6.into();
    h.laddr = LOCAL6.into();
    h
}

/// BIND of socket `sock` to `addr:port` with request flags `flags`.
fn bind_at(h: &mut H, sock: u32, addr: u128, port: u16, flags: u32) -> L4Ctl {
    h.ctl(L4Ctl {
        op: op::BIND,
        sock,
        local_addr: addr,
        local_port: port,
        flags,
        ..L4Ctl::default()
    })
    .unwrap()
}

/// A listener, socket `sock`, on `addr:port` (flags for BIND and LISTEN).
fn listen_at(h: &mut H, sock: u32, addr: u128, port: u16, flags: u32) {
    assert_eq!(bind_at(h, sock, addr, port, flags).op, op::OK);
    let r = h
        .ctl(L4Ctl {
            op: op::LISTEN,
            sock,
            value: 16,
            flags: flags & V6ONLY,
            ..L4Ctl::default()
        })
        .unwrap();
    assert_eq!(r.op, op::OK);
}

/// An accepted IPv6 connection as socket 2 on a `[::]:80` listener
/// (socket 1), the peer's SYN carrying `opts`. Returns our ISN.
fn established6(opts: TcpOptions) -> (H, u32) {
    let mut h = h6();
    listen_at(&mut h, 1, 0, LPORT, 0);
    let iss = h.accept(2, opts);
    (h, iss)
}

#[test]
fn passive_open_over_ipv6_carries_data_both_ways_and_closes() {
    let mut h = h6();
    listen_at(&mut h, 1, 0, LPORT, 0);
    h.peer_opts(SYN, PISS, 0, &[], syn_opts(5000));
    let sa = h.expect(SYN | ACK);
    // An IPv6 header (parse_seg6 checked version, hop limit, next header
    // and the checksum over the IPv6 pseudo-header), from our address.
    let ip = sa.ip6.expect("sent over IPv6");
    assert_eq!((ip.src, ip.dst), (LOCAL6, PEER6));
    assert_ne!(ip.flow_label, 0, "a flow label per connection (RFC 6437)");
    assert_eq!(sa.ack(), PISS + 1);
    assert_eq!(sa.opts.mss, Some(1440), "MTU 1500 less 60");
    let (tsval, _) = sa.opts.timestamp.unwrap();
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
    assert_eq!((a.local_addr, a.local_port), (a6(LOCAL6), LPORT));
    assert_eq!((a.remote_addr, a.remote_port), (a6(PEER6), PPORT));
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 2,
        value: a.value,
        ..L4Ctl::default()
    });
    let c = h.conn();
    assert_eq!((c.state, c.mss), (State::Established, 1440 - 12));
    assert_eq!(
        (c.local, c.remote),
        ((a6(LOCAL6), LPORT), (a6(PEER6), PPORT))
    );
    // Peer to us.
    h.peer_opts(
        ACK | PSH,
        PISS + 1,
        sa.seq() + 1,
        b"hello over six",
        TcpOptions {
            timestamp: Some((5002, tsval)),
            ..TcpOptions::default()
        },
    );
    assert_eq!(h.data_for(2), b"hello over six");
    // Us to the peer: ten segments' worth, never a super-segment (the
    // harness refuses IPv6 handles with GSO), each at most one MSS.
    h.nodelay(2);
    let data = pattern(10 * 1428, 3);
    h.send(2, &data);
    let mut got = Vec::new();
    while let Some(s) = h.segs.pop_front() {
        assert!(s.ip6.is_some());
        assert!(s.len() <= 1428, "one MSS per packet: {}", s.len());
        got.extend_from_slice(&s.payload);
    }
    assert_eq!(got, data);
    // FIN from the peer: EOF, and our FIN after CLOSE.
    h.pts = None;
    h.peer(ACK | FIN, PISS + 15, sa.seq() + 1 + data.len() as u32, &[]);
    assert!(h.expect(ACK).ip6.is_some());
    h.expect_up(op::EOF);
    h.req(op::CLOSE, 2, 0);
    let fin = h.expect(FIN | ACK);
    h.peer(ACK, PISS + 16, fin.seq() + 1, &[]);
    h.expect_up(op::CLOSED);
    let st = h.core.stats();
    assert_eq!(st.get(Stat::PassiveOpens6), 1);
    assert!(st.get(Stat::InSegs6) >= 5 && st.get(Stat::InSegs6) == st.get(Stat::InSegs));
    assert_eq!(st.get(Stat::OutSegs6), st.get(Stat::OutSegs));
    assert_eq!(st.get(Stat::OutSuperSegs), 0);
    h.finish();
}

#[test]
fn active_open_over_ipv6_chooses_its_source_and_takes_the_ipv6_default_mss() {
    let mut h = h6();
    let r = h.connect_to(5, PEER6.into(), 443);
    assert_eq!(r.op, op::OK);
    assert_eq!(r.local_addr, a6(LOCAL6), "source chosen at once");
    let syn = h.expect(SYN);
    let ip = syn.ip6.unwrap();
    assert_eq!((ip.src, ip.dst), (LOCAL6, PEER6));
    assert_eq!(syn.opts.mss, Some(1440));
    h.lport = syn.tcp.src_port;
    h.pport = 443;
    // A SYN-ACK naming no MSS: IPv6's default, 1220 (RFC 9293 §3.7.1).
    h.peer(SYN | ACK, PISS, syn.seq() + 1, &[]);
    let a = h.expect(ACK);
    assert_eq!(
        a.ip6.unwrap().flow_label,
        ip.flow_label,
        "one label per flow"
    );
    let c = h.expect_up(op::CONNECTED);
    assert_eq!((c.local_addr, c.remote_addr), (a6(LOCAL6), a6(PEER6)));
    assert_eq!(c.value, 1220);
    assert_eq!(h.core.stats().get(Stat::ActiveOpens6), 1);
    h.nodelay(5);
    h.send(5, &pattern(3000, 1));
    let lens: Vec<u32> = h.segs.iter().map(Seg::len).collect();
    assert_eq!(lens, [1220, 1220, 560]);
    h.segs.clear();
    h.finish();
}

#[test]
fn a_link_local_peer_gets_our_link_local_source() {
    let mut h = h6();
    let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9);
    let r = h.connect_to(5, peer.into(), 22);
    assert_eq!(r.local_addr, a6(LL));
    let ip = h.expect(SYN).ip6.unwrap();
    assert_eq!((ip.src, ip.dst), (LL, peer));
    h.finish();
}

#[test]
fn connects_across_families_follow_linux() {
    let mut h = h6();
    // A socket bound to IPv4 cannot reach an IPv6 peer.
    assert_eq!(bind_at(&mut h, 1, mapped(0), 0, 0).op, op::OK);
    let r = h.connect_to(1, PEER6.into(), 443);
    assert_eq!((r.op, r.errno), (op::ERROR, libc::EAFNOSUPPORT));
    // IPV6_V6ONLY (or a bound IPv6 address) and an IPv4 peer: no route.
    let r = h
        .ctl(L4Ctl {
            op: op::CONNECT,
            sock: 2,
            remote_addr: mapped(u(PEER)),
            remote_port: 443,
            flags: V6ONLY,
            ..L4Ctl::default()
        })
        .unwrap();
    assert_eq!((r.op, r.errno), (op::ERROR, libc::ENETUNREACH));
    assert_eq!(bind_at(&mut h, 3, a6(LOCAL6), 0, 0).op, op::OK);
    let r = h.connect_to(3, PEER.into(), 443);
    assert_eq!((r.op, r.errno), (op::ERROR, libc::ENETUNREACH));
    // A dual-stack socket bound to `::` reaches IPv4 over IPv4.
    assert_eq!(bind_at(&mut h, 4, 0, 0, 0).op, op::OK);
    let r = h.connect_to(4, PEER.into(), 443);
    assert_eq!(r.local_addr, mapped(u(LOCAL)));
    let syn = h.expect(SYN);
    assert!(syn.ip6.is_none());
    assert_eq!(syn.opts.mss, Some(1460));
    // Multicast and `::` are no peers.
    let r = h.connect_to(6, "ff02::1".parse().unwrap(), 80);
    assert_eq!(r.errno, libc::ENETUNREACH);
    let r = h.connect_to(7, Ipv6Addr::UNSPECIFIED.into(), 80);
    assert_eq!(r.errno, libc::ENETUNREACH);
    h.finish();
}

#[test]
fn a_dual_stack_listener_takes_ipv4_and_reports_it_mapped() {
    let mut h = H::new();
    listen_at(&mut h, 1, 0, LPORT, 0);
    // The harness's peer speaks IPv4: the SYN-ACK goes over IPv4.
    h.peer_opts(SYN, PISS, 0, &[], syn_opts(1));
    let sa = h.expect(SYN | ACK);
    assert!(sa.ip6.is_none());
    assert_eq!((sa.src, sa.dst), (IpAddr::from(LOCAL), IpAddr::from(PEER)));
    assert_eq!(sa.opts.mss, Some(1460));
    h.peer(ACK, PISS + 1, sa.seq() + 1, &[]);
    let a = h.expect_up(op::ACCEPTABLE);
    assert_eq!(
        (a.local_addr, a.remote_addr),
        (mapped(u(LOCAL)), mapped(u(PEER)))
    );
    // And IPv6 on the same listener.
    h.paddr = PEER6.into();
    h.laddr = LOCAL6.into();
    h.pport = 40001;
    h.peer(SYN, PISS, 0, &[]);
    let sa = h.expect(SYN | ACK);
    assert!(sa.ip6.is_some());
    h.peer(ACK, PISS + 1, sa.seq() + 1, &[]);
    let b = h.expect_up(op::ACCEPTABLE);
    assert_eq!((b.local_addr, b.remote_addr), (a6(LOCAL6), a6(PEER6)));
    h.finish();
}

#[test]
fn a_v6only_listener_answers_ipv4_with_a_reset() {
    let mut h = H::new();
    listen_at(&mut h, 1, 0, LPORT, V6ONLY);
    h.peer(SYN, PISS, 0, &[]);
    let r = h.expect(RST | ACK);
    assert!(r.ip6.is_none(), "the reset goes over IPv4");
    assert_eq!(r.ack(), PISS + 1);
    // An IPv4 listener may share the port; each family goes to its own.
    listen_at(&mut h, 2, mapped(0), LPORT, 0);
    h.pport = 40001;
    h.peer(SYN, PISS, 0, &[]);
    let sa = h.expect(SYN | ACK);
    h.peer(ACK, PISS + 1, sa.seq() + 1, &[]);
    assert_eq!(h.expect_up(op::ACCEPTABLE).sock, 2);
    h.paddr = PEER6.into();
    h.laddr = LOCAL6.into();
    h.pport = 40002;
    h.peer(SYN, PISS, 0, &[]);
    let sa = h.expect(SYN | ACK);
    h.peer(ACK, PISS + 1, sa.seq() + 1, &[]);
    assert_eq!(h.expect_up(op::ACCEPTABLE).sock, 1);
    h.finish();
}

#[test]
fn a_listener_on_a_specific_address_wins_over_the_wildcard() {
    let mut h = h6();
    // Both listen on port 80 (SO_REUSEPORT on both, as Linux needs).
    listen_at(&mut h, 1, 0, LPORT, REUSEPORT);
    listen_at(&mut h, 2, a6(LOCAL6), LPORT, REUSEPORT);
    let to = |h: &mut H, laddr: IpAddr, paddr: IpAddr, pport: u16| {
        (h.laddr, h.paddr, h.pport) = (laddr, paddr, pport);
        h.peer(SYN, PISS, 0, &[]);
        let sa = h.expect(SYN | ACK);
        h.peer(ACK, PISS + 1, sa.seq() + 1, &[]);
        h.expect_up(op::ACCEPTABLE).sock
    };
    assert_eq!(to(&mut h, LOCAL6.into(), PEER6.into(), 1000), 2);
    assert_eq!(to(&mut h, LL.into(), "fe80::9".parse().unwrap(), 1001), 1);
    assert_eq!(to(&mut h, LOCAL.into(), PEER.into(), 1002), 1, "dual-stack");
    h.finish();
}

#[test]
fn bind_conflicts_across_families() {
    let mut h = H::new();
    let inuse = |r: L4Ctl| (r.op, r.errno) == (op::ERROR, libc::EADDRINUSE);
    // `[::]:80` dual-stack holds IPv4's port 80 too.
    assert_eq!(bind_at(&mut h, 1, 0, 80, 0).op, op::OK);
    assert!(inuse(bind_at(&mut h, 2, mapped(0), 80, 0)));
    assert!(inuse(bind_at(&mut h, 3, mapped(u(LOCAL)), 80, 0)));
    assert!(inuse(bind_at(&mut h, 4, a6(LOCAL6), 80, 0)));
    assert!(inuse(bind_at(&mut h, 5, 0, 80, V6ONLY)));
    // IPV6_V6ONLY `[::]:81` leaves IPv4's port 81 free.
    assert_eq!(bind_at(&mut h, 6, 0, 81, V6ONLY).op, op::OK);
    assert_eq!(bind_at(&mut h, 7, mapped(0), 81, 0).op, op::OK);
    assert!(inuse(bind_at(&mut h, 8, a6(LOCAL6), 81, 0)));
    // IPv4 first: a dual-stack `::` conflicts, an IPv6-only one or a
    // specific IPv6 address does not.
    assert_eq!(bind_at(&mut h, 9, mapped(u(LOCAL)), 82, 0).op, op::OK);
    assert!(inuse(bind_at(&mut h, 10, 0, 82, 0)));
    assert_eq!(bind_at(&mut h, 11, 0, 82, V6ONLY).op, op::OK);
    assert!(
        inuse(bind_at(&mut h, 12, a6(LOCAL6), 82, 0)),
        "overlaps [::]:82"
    );
    assert_eq!(bind_at(&mut h, 13, mapped(0), 83, 0).op, op::OK);
    assert_eq!(bind_at(&mut h, 14, a6(LL), 83, 0).op, op::OK);
    // SO_REUSEADDR on both, neither listening: allowed across too.
    assert_eq!(bind_at(&mut h, 15, mapped(0), 84, REUSEADDR).op, op::OK);
    assert_eq!(bind_at(&mut h, 16, 0, 84, REUSEADDR).op, op::OK);
    // Addresses: not ours, or a mapped one on an IPv6-only socket.
    let r = bind_at(&mut h, 17, a6("2001:db8::99".parse().unwrap()), 85, 0);
    assert_eq!(r.errno, libc::EADDRNOTAVAIL);
    let r = bind_at(&mut h, 18, mapped(u(LOCAL)), 85, V6ONLY);
    assert_eq!(r.errno, libc::EINVAL);
    let socks: Vec<u32> = h.core.connections().map(|c| c.sock).collect();
    for s in socks {
        h.req(op::CLOSE, s, 0);
        h.expect_up(op::CLOSED);
    }
    h.finish();
}

#[test]
fn syn_cookies_over_ipv6_encode_the_ipv6_mss() {
    let mut cfg = config();
    cfg.max_syn_backlog = 1;
    let mut h = h6_with(cfg);
    listen_at(&mut h, 1, 0, LPORT, 0);
    h.pport = 1;
    h.peer(SYN, PISS, 0, &[]);
    h.expect(SYN | ACK);
    // The SYN queue is full: a cookie, over IPv6.
    h.pport = 40_000;
    h.peer_opts(SYN, PISS, 0, &[], syn_opts(777));
    let sa = h.expect(SYN | ACK);
    assert!(sa.ip6.is_some());
    assert_eq!(sa.opts.mss, Some(1440));
    assert_eq!(h.core.stats().get(Stat::SynCookiesSent), 1);
    let (tsval, _) = sa.opts.timestamp.unwrap();
    h.peer_opts(
        ACK,
        PISS + 1,
        sa.seq() + 1,
        b"cookie",
        TcpOptions {
            timestamp: Some((778, tsval)),
            ..TcpOptions::default()
        },
    );
    let a = h.expect_up(op::ACCEPTABLE);
    assert_eq!(a.remote_addr, a6(PEER6));
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 2,
        value: a.value,
        ..L4Ctl::default()
    });
    assert_eq!(h.data_for(2), b"cookie");
    // 1440 from IPv6's cookie table, less the timestamp option.
    assert_eq!(h.core.connection_of(2).unwrap().mss, 1428);
    assert_eq!(h.core.stats().get(Stat::SynCookiesOk), 1);
    // The connection's packets carry the cookie SYN-ACK's flow label.
    let flow = sa.ip6.unwrap().flow_label;
    h.segs.clear();
    h.nodelay(2);
    h.send(2, b"back");
    assert_eq!(h.expect(ACK).ip6.unwrap().flow_label, flow);
    h.finish();
}

#[test]
fn a_bad_checksum_over_ipv6_is_dropped_and_mapped_addresses_refused() {
    let mut h = h6();
    listen_at(&mut h, 1, 0, LPORT, 0);
    let mut d = build6(
        (PEER6, PPORT),
        (LOCAL6, LPORT),
        SYN,
        PISS,
        0,
        1000,
        &TcpOptions::default(),
        b"x",
    );
    let n = d.len();
    d[n - 1] ^= 0x40;
    h.inject(&d);
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::BadChecksum), 1);
    // A checksum over IPv4's pseudo-header is just as wrong.
    let mut d = build6(
        (PEER6, PPORT),
        (LOCAL6, LPORT),
        SYN,
        PISS,
        0,
        1000,
        &TcpOptions::default(),
        &[],
    );
    let c = TcpHeader::parse(
        &build(
            (PEER, PPORT),
            (LOCAL, LPORT),
            SYN,
            PISS,
            0,
            1000,
            &TcpOptions::default(),
            &[],
        )[20..],
    )
    .unwrap()
    .0
    .checksum;
    d[56..58].copy_from_slice(&c.to_be_bytes());
    h.inject(&d);
    assert_eq!(h.core.stats().get(Stat::BadChecksum), 2);
    // An IPv6 packet from an IPv4-mapped address (RFC 4291 §2.5.5.2).
    let d = build6(
        (Ipv6Addr::from(mapped(u(PEER))), PPORT),
        (LOCAL6, LPORT),
        SYN,
        PISS,
        0,
        1000,
        &TcpOptions::default(),
        &[],
    );
    h.inject(&d);
    h.expect_none();
    assert_eq!(h.core.stats().get(Stat::BadAddress), 1);
    h.finish();
}

#[test]
fn a_segment_to_nothing_over_ipv6_gets_a_reset() {
    let mut h = h6();
    h.peer(SYN, PISS, 0, &[]);
    let r = h.expect(RST | ACK);
    let ip = r.ip6.unwrap();
    assert_eq!((ip.src, ip.dst), (LOCAL6, PEER6));
    assert_ne!(ip.flow_label, 0);
    assert_eq!((r.seq(), r.ack()), (0, PISS + 1));
    h.peer(ACK, PISS + 1, 777, b"late");
    let r = h.expect(RST);
    assert_eq!(r.seq(), 777);
    assert_eq!(h.core.stats().get(Stat::NoConnReset), 2);
    h.finish();
}

/// An ICMPv6 error of `icmp_type`/`code` (bytes 4..8: `word`) from a
/// router, quoting the first 48 bytes of packet `quoted`.
fn icmp6(icmp_type: u8, code: u8, word: u32, quoted: &[u8]) -> Vec<u8> {
    let router: Ipv6Addr = "2001:db8::fe".parse().unwrap();
    let q = &quoted[..quoted.len().min(48)];
    let mut msg = vec![0u8; 8 + q.len()];
    msg[0] = icmp_type;
    msg[1] = code;
    msg[4..8].copy_from_slice(&word.to_be_bytes());
    msg[8..].copy_from_slice(q);
    let mut c = pseudo_header_v6(router, LOCAL6, 58, msg.len() as u32);
    c.add_bytes(&msg);
    msg[2..4].copy_from_slice(&c.finish().to_be_bytes());
    let mut d = vec![0u8; 40 + msg.len()];
    Ipv6Header {
        traffic_class: 0,
        flow_label: 0,
        payload_len: msg.len() as u16,
        next_header: 58,
        hop_limit: 64,
        src: router,
        dst: LOCAL6,
    }
    .emit(&mut d)
    .unwrap();
    d[40..].copy_from_slice(&msg);
    d
}

/// Hands an ICMPv6 message to the core, as ipd does.
fn inject_icmp6(h: &mut H, d: &[u8]) {
    let hh = ip_handle(&mut h.pool, d, next_header::ICMPV6);
    h.core.from_ip(h.now, &mut h.pool, hh, &mut h.out);
    h.collect();
}

/// A segment as we sent it, for an ICMPv6 error to quote.
fn as_sent(s: &Seg) -> Vec<u8> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (s.src, s.dst) else {
        panic!("an IPv6 segment");
    };
    build6(
        (src, s.tcp.src_port),
        (dst, s.tcp.dst_port),
        s.flags(),
        s.seq(),
        s.ack(),
        s.tcp.window,
        &s.opts,
        &s.payload,
    )
}

#[test]
fn packet_too_big_lowers_the_mss_and_resends_at_the_new_size() {
    let (mut h, _iss) = established6(TcpOptions {
        mss: Some(1440),
        ..TcpOptions::default()
    });
    assert_eq!(h.conn().mss, 1440);
    h.nodelay(2);
    h.send(2, &pattern(4000, 7));
    let first = h.expect(ACK);
    assert_eq!(first.len(), 1440);
    h.segs.clear();
    // A tunnel of MTU 1400 on the way.
    inject_icmp6(&mut h, &icmp6(2, 0, 1400, &as_sent(&first)));
    assert_eq!(h.core.stats().get(Stat::IcmpPmtu), 1);
    assert_eq!(h.core.stats().get(Stat::Icmp6In), 1);
    assert_eq!(h.conn().mss, 1340);
    // What was in flight goes again at once, at the new size.
    let lens: Vec<(u32, u32)> = h.segs.drain(..).map(|s| (s.seq(), s.len())).collect();
    let s0 = first.seq();
    assert_eq!(lens, [(s0, 1340), (s0 + 1340, 1340), (s0 + 2680, 1320)]);
    // Below IPv6's minimum MTU is taken as 1280 (RFC 8200 §5): 1220.
    inject_icmp6(&mut h, &icmp6(2, 0, 600, &as_sent(&first)));
    assert_eq!(h.conn().mss, 1220);
    assert_eq!(h.expect(ACK).len(), 1220);
    // A quote of a sequence number not in flight is ignored.
    let mut old = first.clone();
    old.tcp.seq = first.seq().wrapping_sub(100_000);
    inject_icmp6(&mut h, &icmp6(2, 0, 1280, &as_sent(&old)));
    assert_eq!(h.core.stats().get(Stat::IcmpPmtu), 2);
    h.segs.clear();
    h.finish();
}

#[test]
fn port_unreachable_in_syn_sent_refuses_and_time_exceeded_is_soft() {
    let mut h = h6();
    h.connect_to(5, PEER6.into(), 443);
    let syn = h.expect(SYN);
    inject_icmp6(&mut h, &icmp6(1, 4, 0, &as_sent(&syn)));
    let e = h.expect_up(op::SOCK_ERROR);
    assert_eq!(e.errno, libc::ECONNREFUSED);
    h.expect_up(op::CLOSED);
    assert_eq!(h.core.stats().get(Stat::IcmpReported), 1);
    // Time exceeded: soft, reported only when the connect times out.
    let mut cfg = config();
    cfg.syn_retries = 1;
    let mut h2 = h6_with(cfg);
    h2.connect_to(5, PEER6.into(), 443);
    let syn = h2.expect(SYN);
    inject_icmp6(&mut h2, &icmp6(3, 0, 0, &as_sent(&syn)));
    h2.no_ctl_up();
    h2.advance(10_000);
    h2.segs.clear();
    let e = h2.expect_up(op::SOCK_ERROR);
    assert_eq!(e.errno, libc::EHOSTUNREACH);
    // Administratively prohibited is hard (EACCES); an echo reply is no
    // error at all.
    let mut h3 = h6();
    h3.connect_to(5, PEER6.into(), 443);
    let syn = h3.expect(SYN);
    inject_icmp6(&mut h3, &icmp6(129, 0, 0, &as_sent(&syn)));
    h3.no_ctl_up();
    inject_icmp6(&mut h3, &icmp6(1, 1, 0, &as_sent(&syn)));
    assert_eq!(h3.expect_up(op::SOCK_ERROR).errno, libc::EACCES);
    for h in [h, h2, h3] {
        h.finish();
    }
}

#[test]
fn an_ipv6_connection_survives_a_restart() {
    let mut h = H::with(TcpConfig {
        tail_loss_probe: false,
        ..config()
    });
    h.paddr = PEER6.into();
    h.laddr = LOCAL6.into();
    listen_at(&mut h, 1, 0, LPORT, 0);
    let iss = h.accept(
        2,
        TcpOptions {
            mss: Some(1000),
            sack_permitted: true,
            ..TcpOptions::default()
        },
    );
    h.nodelay(2);
    h.send(2, &pattern(2000, 1));
    let first = h.expect(ACK);
    let flow = first.ip6.unwrap().flow_label;
    h.expect(ACK);
    // Out of order from the peer.
    h.peer(ACK, PISS + 1001, iss + 1, &pattern(500, 2));
    h.expect(ACK);
    let before: Vec<_> = h.core.connections().collect();
    h.advance(50);
    assert_eq!(h.restart(None), 2);
    h.expect_none();
    assert_eq!(h.core.connections().collect::<Vec<_>>(), before);
    // The retransmission goes over IPv6 with the same flow label.
    h.advance(150);
    let r = h.expect(ACK);
    assert_eq!((r.seq(), r.ip6.unwrap().flow_label), (iss + 1, flow));
    // The peer's segments still find the connection.
    h.peer(ACK, PISS + 1, iss + 2001, &pattern(1000, 3));
    assert_eq!(h.expect(ACK).ack(), PISS + 1501);
    let mut want = pattern(1000, 3);
    want.extend(pattern(500, 2));
    assert_eq!(h.data_for(2), want);
    h.finish();
}
