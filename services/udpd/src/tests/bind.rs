//! Binds, connects, closes and the arena round trip.

use super::*;
use crate::bflags;

#[test]
fn explicit_bind_conflicts_follow_linux_reuseaddr_rules() {
    // (first addr, first reuse, second addr, second reuse, conflict?)
    let any = Ipv4Addr::UNSPECIFIED;
    let table = [
        (any, false, any, false, true),
        (any, true, any, false, true),
        (any, false, any, true, true),
        (any, true, any, true, false),
        (any, false, A1, false, true),
        (A1, false, any, false, true),
        (A1, true, any, true, false),
        (any, true, A1, true, false),
        (A1, false, A1, false, true),
        (A1, true, A1, false, true),
        (A1, true, A1, true, false),
        (A1, false, A2, false, false),
        (A1, false, B1, true, false),
    ];
    for (i, &(a, ra, b, rb, conflict)) in table.iter().enumerate() {
        let mut r = Rig::new();
        assert_eq!(r.bind(1, a, 5000, ra), Ok((u(a), 5000)), "case {i}");
        let second = r.bind(2, b, 5000, rb);
        if conflict {
            assert_eq!(second, Err(libc::EADDRINUSE), "case {i}");
        } else {
            assert_eq!(second, Ok((u(b), 5000)), "case {i}");
        }
        // Another port never conflicts.
        assert_eq!(r.bind(3, b, 5001, false), Ok((u(b), 5001)), "case {i}");
        // Once the first is closed, the port is free again.
        r.close(1);
        if conflict {
            assert_eq!(r.bind(2, b, 5000, rb), Ok((u(b), 5000)), "case {i}");
        }
        r.finish();
    }
}

#[test]
fn bind_errors() {
    let mut r = Rig::new();
    // Not one of our addresses.
    assert_eq!(r.bind(1, PEER, 53, false), Err(libc::EADDRNOTAVAIL));
    assert_eq!(r.stat(Stat::BindAddrNotAvail), 1);
    // Broadcast and multicast addresses may be bound (to receive them).
    assert_eq!(r.bind(2, BCAST, 67, false), Ok((u(BCAST), 67)));
    let mcast = Ipv4Addr::new(239, 1, 2, 3);
    assert_eq!(r.bind(3, mcast, 67, false), Ok((u(mcast), 67)));
    // Bound already.
    assert_eq!(r.bind(2, A1, 68, false), Err(libc::EINVAL));
    assert_eq!(r.stat(Stat::BindInvalid), 1);
    // Unknown operation: EOPNOTSUPP, echoing req and sock.
    let e = r.request(L4Ctl {
        op: 77,
        sock: 9,
        ..Default::default()
    });
    assert_eq!(e, Err(libc::EOPNOTSUPP));
    // A control handle too short to hold a message.
    let mut h = r.buf(&[1, 2, 3]);
    h.flags = flags::CTRL;
    r.core.from_sock(&mut r.pool, h, &mut r.out);
    assert_eq!(r.stat(Stat::CtlMalformed), 1);
    assert!(r.out.to_sock.is_empty());
    // Closing an unbound socket is harmless.
    r.close(1234);
    assert_eq!(r.stat(Stat::Closes), 0);
    r.finish();
}

#[test]
fn ephemeral_binds_stay_in_range_skip_used_ports_and_run_out() {
    let mut cfg = config();
    cfg.ephemeral_ports = (40000, 40003);
    let mut r = Rig::with(cfg);
    // An explicit bind inside the range takes that port out of it.
    assert_eq!(r.bind(1, A1, 40002, false), Ok((u(A1), 40002)));
    let mut got = Vec::new();
    for s in 2..5 {
        let (a, p) = r.bind(s, Ipv4Addr::UNSPECIFIED, 0, false).unwrap();
        assert_eq!(a, 0);
        got.push(p);
    }
    got.sort_unstable();
    assert_eq!(got, [40000, 40001, 40003]);
    assert_eq!(r.bind(5, A1, 0, false), Err(libc::EADDRINUSE));
    assert_eq!(r.connect(6, PEER, 53), Err(libc::EAGAIN));
    // A send from an unbound socket has no port either: dropped, counted,
    // no BOUND notification, no leak.
    r.send(7, PEER, 53, b"x");
    assert!(r.take_ip().is_empty());
    assert!(r.take_ctl().is_empty());
    assert_eq!(r.stat(Stat::OutNoPort), 1);
    assert_eq!(r.stat(Stat::ConnectNoPort), 1);
    // Freeing one makes it available again.
    r.close(3);
    let (_, p) = r.bind(5, A1, 0, true).unwrap();
    assert!((40000..=40003).contains(&p) && p != 40002);
    // A specific address with an ephemeral port is address-locked only.
    let b = r.core.binding(5).unwrap();
    assert_eq!(b.flags, bflags::REUSEADDR | bflags::ADDR_LOCK);
    r.finish();
}

#[test]
fn ephemeral_ports_are_spread_over_the_range() {
    let mut r = Rig::new();
    let mut ports = std::collections::HashSet::new();
    for s in 0..100 {
        let (_, p) = r.bind(s, Ipv4Addr::UNSPECIFIED, 0, false).unwrap();
        assert!((50000..=50099).contains(&p));
        assert!(ports.insert(p), "port {p} twice");
    }
    assert_eq!(
        r.bind(100, Ipv4Addr::UNSPECIFIED, 0, false),
        Err(libc::EADDRINUSE)
    );
    r.finish();
}

#[test]
fn connect_binds_and_picks_the_local_address() {
    let mut r = Rig::new();
    // Unbound: an ephemeral port, and the address of the interface whose
    // subnet holds the peer.
    let c = r.connect(1, PEER_B, 53).unwrap();
    assert_eq!(
        (c.local_addr, c.remote_addr, c.remote_port),
        (m(B1), m(PEER_B), 53)
    );
    assert!((50000..=50099).contains(&c.local_port));
    // Off-subnet peers go by the route: the default gateway's interface.
    let c = r.connect(2, FAR, 53).unwrap();
    assert_eq!(c.local_addr, m(A1));
    // A peer that is one of our own addresses: that address.
    let c = r.connect(3, A2, 53).unwrap();
    assert_eq!(c.local_addr, m(A2));
    // Bound to any with an explicit port: the port stays, the address is
    // chosen.
    r.bind(4, Ipv4Addr::UNSPECIFIED, 7000, false).unwrap();
    let c = r.connect(4, PEER, 9).unwrap();
    assert_eq!((c.local_addr, c.local_port), (m(A1), 7000));
    // Bound to a specific address: kept, even if another would be closer.
    r.bind(5, A2, 7001, false).unwrap();
    let c = r.connect(5, PEER_B, 9).unwrap();
    assert_eq!((c.local_addr, c.local_port), (m(A2), 7001));
    // Connecting again changes the peer, not the local address.
    let c = r.connect(4, PEER_B, 10).unwrap();
    assert_eq!(
        (c.local_addr, c.remote_addr, c.remote_port),
        (m(A1), m(PEER_B), 10)
    );
    assert_eq!(r.stat(Stat::Connects), 6);
    // SO_REUSEADDR on a socket that connect binds is kept: another socket
    // with it may share the port, one without may not.
    let c = r
        .request(L4Ctl {
            op: op::CONNECT,
            sock: 6,
            local_addr: mapped(0),
            remote_addr: m(PEER),
            remote_port: 1,
            flags: ctl_flags::REUSEADDR,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.core.binding(6).unwrap().flags, bflags::REUSEADDR);
    assert_eq!(r.bind(7, A1, c.local_port, false), Err(libc::EADDRINUSE));
    assert!(r.bind(7, A1, c.local_port, true).is_ok());
    r.finish();
}

#[test]
fn disconnect_undoes_what_connect_chose_and_keeps_what_bind_chose() {
    let mut r = Rig::new();
    let unspec = Ipv4Addr::UNSPECIFIED;
    // Implicitly bound by connect: disconnect unbinds it entirely.
    r.connect(1, PEER, 53).unwrap();
    let d = r.connect(1, unspec, 0).unwrap();
    assert_eq!((d.local_addr, d.local_port, d.remote_addr), (0, 0, 0));
    assert!(r.core.binding(1).is_none());
    // ...so it may bind again.
    r.bind(1, A1, 6000, false).unwrap();
    // Explicit port, any address: keeps the port, forgets the address.
    r.bind(2, unspec, 6001, false).unwrap();
    r.connect(2, PEER, 53).unwrap();
    let d = r.connect(2, unspec, 0).unwrap();
    assert_eq!(
        (d.local_addr, d.local_port, d.remote_port),
        (m(unspec), 6001, 0)
    );
    // Explicit address and port: both stay.
    r.connect(1, PEER, 53).unwrap();
    let d = r.connect(1, unspec, 0).unwrap();
    assert_eq!((d.local_addr, d.local_port), (m(A1), 6000));
    // Disconnecting an unbound socket is fine.
    assert!(r.connect(9, unspec, 0).is_ok());
    assert_eq!(r.stat(Stat::Disconnects), 4);
    r.finish();
}

#[test]
fn first_send_binds_implicitly_and_tells_sockd() {
    let mut r = Rig::new();
    r.send(1, PEER, 53, b"hello");
    let notes = r.take_ctl();
    assert_eq!(notes.len(), 1);
    let n = notes[0];
    assert_eq!((n.op, n.sock, n.local_addr), (op::BOUND, 1, mapped(0)));
    assert!((50000..=50099).contains(&n.local_port));
    let sent = r.take_ip();
    assert_eq!(sent.len(), 1);
    let udp = UdpHeader::parse(&sent[0].1[20..]).unwrap();
    assert_eq!(udp.src_port, n.local_port);
    // Bound to any: the source address is chosen per destination.
    assert_eq!(&sent[0].1[12..16], &A1.octets());
    r.send(1, PEER_B, 53, b"again");
    assert!(r.take_ctl().is_empty(), "only the first send binds");
    let sent = r.take_ip();
    assert_eq!(&sent[0].1[12..16], &B1.octets());
    assert_eq!(r.stat(Stat::ImplicitBinds), 1);
    r.finish();
}

#[test]
fn bindings_survive_export_and_restore() {
    let mut r = Rig::new();
    r.bind(1, Ipv4Addr::UNSPECIFIED, 5000, true).unwrap();
    r.bind(2, Ipv4Addr::UNSPECIFIED, 5000, true).unwrap();
    r.bind(3, A1, 0, false).unwrap();
    r.connect(4, PEER, 53).unwrap();
    assert!(r.core.take_changed());
    assert!(!r.core.take_changed());
    let saved: Vec<crate::Binding> = r.core.bindings().collect();
    assert_eq!(saved.len(), 4);
    r.finish();

    // A new instance, as after a restart, with a few bad records mixed in.
    let mut r = Rig::new();
    let mut recs = saved.clone();
    recs.reverse();
    let mut dup = saved[0];
    dup.seq = 99;
    recs.push(dup);
    recs.push(crate::Binding {
        sock: 50,
        local_port: 0,
        ..Default::default()
    });
    recs.push(crate::Binding {
        sock: 51,
        local_addr: m(PEER),
        local_port: 9,
        ..Default::default()
    });
    recs.push(crate::Binding {
        sock: 52,
        local_port: 9,
        flags: 0x80,
        ..Default::default()
    });
    assert_eq!(r.core.restore(&recs), 4);
    assert_eq!(r.stat(Stat::Restored), 4);
    assert_eq!(r.stat(Stat::RestoreSkipped), 4);
    assert!(r.core.take_changed(), "skipped records are rewritten away");
    for b in &saved {
        assert_eq!(r.core.binding(b.sock), Some(*b));
    }
    // The restored table behaves like the old one: conflicts, demux order
    // (newest of equals first), and new sequence numbers after the old.
    assert_eq!(r.bind(5, A1, 5000, false), Err(libc::EADDRINUSE));
    r.rx(&Dg::new(PEER, 9, A1, 5000).build(b"x"));
    let d = r.delivered();
    assert_eq!(d[0].0, 2);
    let c4 = r.core.binding(4).unwrap();
    r.rx(&Dg::new(PEER, 53, A1, c4.local_port).build(b"y"));
    assert_eq!(r.delivered()[0].0, 4);
    r.bind(6, A1, 6000, false).unwrap();
    assert!(r.core.binding(6).unwrap().seq > saved.iter().map(|b| b.seq).max().unwrap());
    r.finish();
}

#[test]
fn a_repeated_bind_finds_the_first_in_force_and_a_second_bind_is_refused() {
    let mut r = Rig::new();
    let bind = |port: u16, flags: u32| L4Ctl {
        op: op::BIND,
        sock: 1,
        local_addr: mapped(0),
        local_port: port,
        flags,
        ..Default::default()
    };
    // An ephemeral bind whose reply was lost: sockd sends it again.
    let first = r.request(bind(0, 0)).unwrap();
    let again = r.request(bind(0, ctl_flags::REPEAT)).unwrap();
    assert_eq!(again.local_port, first.local_port);
    assert_eq!(r.core.bindings().count(), 1);
    // A repeat naming another port is not the same request.
    assert_eq!(
        r.request(bind(first.local_port.wrapping_add(1), ctl_flags::REPEAT)),
        Err(libc::EINVAL)
    );
    // Nor is a second bind() of a bound socket.
    assert_eq!(r.request(bind(0, 0)), Err(libc::EINVAL));
}
