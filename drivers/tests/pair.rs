//! The pair wire between two ends in this process: frames cross, frames to an
//! absent end are lost, a full wire pushes back with a wake-up, and an end
//! survives being handed over by fd.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use strata_drivers::{Driver, Pair, Side};

/// A link name no other test (or concurrent test run) uses.
fn link(test: &str) -> String {
    format!("drvtest-{}-{test}", std::process::id())
}

fn recv_one(end: &mut Pair) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    end.recv(&mut buf).unwrap().map(|n| buf[..n].to_vec())
}

fn writable(end: &Pair) -> bool {
    let mut fds = [PollFd::new(end.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO).unwrap();
    fds[0].revents().unwrap().contains(PollFlags::POLLOUT)
}

fn readable(end: &Pair, timeout_ms: u16) -> bool {
    let mut fds = [PollFd::new(end.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(timeout_ms)).unwrap();
    fds[0].revents().unwrap().contains(PollFlags::POLLIN)
}

#[test]
fn frames_cross_both_ways() {
    let link = link("cross");
    let mut a = Pair::open(&link, Side::A).unwrap();
    let mut b = Pair::open(&link, Side::B).unwrap();
    assert_eq!((a.link(), a.side()), (link.as_str(), Side::A));
    assert_eq!(recv_one(&mut a), None);

    assert!(a.send(b"frame from a").unwrap());
    assert!(readable(&b, 1000));
    assert_eq!(recv_one(&mut b).as_deref(), Some(&b"frame from a"[..]));
    assert_eq!(recv_one(&mut b), None);

    for i in 0..5u8 {
        assert!(b.send(&[i; 60]).unwrap());
    }
    for i in 0..5u8 {
        assert_eq!(recv_one(&mut a), Some(vec![i; 60]));
    }
    assert_eq!(recv_one(&mut a), None);
}

#[test]
fn frames_to_an_absent_end_are_lost() {
    let link = link("absent");
    let mut a = Pair::open(&link, Side::A).unwrap();
    assert!(a.send(b"nobody is listening").unwrap());

    let mut b = Pair::open(&link, Side::B).unwrap();
    assert_eq!(
        recv_one(&mut b),
        None,
        "a frame sent to nobody must not wait for a later end"
    );

    // And when the other end goes away again.
    drop(b);
    assert!(a.send(b"lost again").unwrap());
    let mut b = Pair::open(&link, Side::B).unwrap();
    assert_eq!(recv_one(&mut b), None);
    assert!(a.send(b"found").unwrap());
    assert_eq!(recv_one(&mut b).as_deref(), Some(&b"found"[..]));
}

#[test]
fn survivor_reattaches_to_a_reopened_end() {
    let link = link("reopen");
    let mut a = Pair::open(&link, Side::A).unwrap();
    let mut b = Pair::open(&link, Side::B).unwrap();
    assert!(a.send(b"1").unwrap());
    assert!(b.send(b"2").unwrap());
    assert_eq!(recv_one(&mut b).as_deref(), Some(&b"1"[..]));
    assert_eq!(recv_one(&mut a).as_deref(), Some(&b"2"[..]));

    drop(b);
    let mut b = Pair::open(&link, Side::B).unwrap();
    // a is still attached to the old b, so this frame is refused: lost,
    // not an error (see the module docs).
    assert!(b.send(b"early").unwrap());
    // a's next send re-attaches it; from then on both directions work.
    assert!(a.send(b"3").unwrap());
    assert_eq!(recv_one(&mut b).as_deref(), Some(&b"3"[..]));
    assert!(b.send(b"4").unwrap());
    assert_eq!(recv_one(&mut a).as_deref(), Some(&b"4"[..]));
}

#[test]
fn a_full_wire_pushes_back_and_wakes_the_sender() {
    let link = link("full");
    let mut a = Pair::open(&link, Side::A).unwrap();
    let mut b = Pair::open(&link, Side::B).unwrap();

    let mut sent = 0u32;
    loop {
        assert!(sent < 1_000_000, "the wire never filled up");
        let mut frame = [0u8; 64];
        frame[..4].copy_from_slice(&sent.to_be_bytes());
        if !a.send(&frame).unwrap() {
            break;
        }
        sent += 1;
    }
    // Far more than net.unix.max_dgram_qlen: the ends are each other's peers.
    assert!(sent > 64, "only {sent} frames fit on the wire");
    assert!(
        !writable(&a),
        "a full wire must not report writable (busy loop)"
    );

    let mut buf = [0u8; 2048];
    for expect in 0..sent {
        let n = b
            .recv(&mut buf)
            .unwrap()
            .expect("a frame that was accepted went missing");
        assert_eq!(n, 64);
        assert_eq!(u32::from_be_bytes(buf[..4].try_into().unwrap()), expect);
    }
    assert_eq!(b.recv(&mut buf).unwrap(), None);
    assert!(writable(&a));
    assert!(a.send(&[0u8; 64]).unwrap());
}

#[test]
fn an_end_can_only_be_open_once() {
    let link = link("twice");
    let _a = Pair::open(&link, Side::A).unwrap();
    let err = Pair::open(&link, Side::A).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&link));
}

#[test]
fn bad_link_names_are_refused() {
    for bad in [
        String::new(),
        "x".repeat(strata_drivers::pair::MAX_LINK_LEN + 1),
        "a\0b".into(),
    ] {
        let err = Pair::open(&bad, Side::A).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
    let max = strata_drivers::pair::MAX_LINK_LEN;
    let longest = format!("{:x<max$}", link("long"));
    Pair::open(&longest, Side::A).unwrap();
}

#[test]
fn an_end_survives_handover_by_fd() {
    let link = link("handover");
    let a = Pair::open(&link, Side::A).unwrap();
    let mut b = Pair::open(&link, Side::B).unwrap();
    // The launcher keeps its copy; driverd gets another.
    let launcher_copy = a.as_fd().try_clone_to_owned().unwrap();
    drop(a);
    let mut a = Pair::from_fd(launcher_copy.try_clone().unwrap()).unwrap();
    assert_eq!((a.link(), a.side()), (link.as_str(), Side::A));
    assert!(b.send(b"to a").unwrap());
    assert_eq!(recv_one(&mut a).as_deref(), Some(&b"to a"[..]));
    assert!(a.send(b"to b").unwrap());
    assert_eq!(recv_one(&mut b).as_deref(), Some(&b"to b"[..]));

    // A driverd crash drops its copy; the end stays open and nothing sent
    // meanwhile is lost at the wire.
    drop(a);
    assert!(b.send(b"while restarting").unwrap());
    let mut a = Pair::from_fd(launcher_copy).unwrap();
    assert_eq!(recv_one(&mut a).as_deref(), Some(&b"while restarting"[..]));
}

#[test]
fn from_fd_refuses_other_sockets() {
    let unnamed = UnixDatagram::unbound().unwrap();
    assert!(Pair::from_fd(OwnedFd::from(unnamed)).is_err());
    let (stream, _other) = UnixStream::pair().unwrap();
    assert!(Pair::from_fd(OwnedFd::from(stream)).is_err());
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(Pair::from_fd(OwnedFd::from(udp)).is_err());
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(Pair::from_fd(OwnedFd::from(file)).is_err());
}

#[test]
fn oversized_frames_are_reported_not_cut() {
    let link = link("trunc");
    let mut a = Pair::open(&link, Side::A).unwrap();
    let mut b = Pair::open(&link, Side::B).unwrap();
    assert!(a.send(&[7u8; 100]).unwrap());
    assert!(a.send(&[8u8; 10]).unwrap());
    let mut small = [0u8; 10];
    let err = b.recv(&mut small).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(b.recv(&mut small).unwrap(), Some(10));
    assert_eq!(small, [8u8; 10]);
}
