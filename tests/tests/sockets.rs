//! The socket boundary under stress and abuse: a slow reader, a hostile
//! client, and `strata ss`.

use nix::sys::socket::MsgFlags;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;
use strata_ipc::sockring::{wait, wake_pair};
use strata_proto::sock::{Kind, Request, Response};
use strata_tests::{
    spawn_app, wait_line, Bg, Netns, RawClient, Stack, ECHO_10MB, STACK_IP, UDP_ECHO_ROUNDS,
};

/// Kernel-side sender of 1000-byte datagrams to port 6000 on the stack:
/// for each number N read on stdin, N of them at once, then `sent`.
const SENDER: &str = r#"
import socket, sys
s = socket.socket(2, 2)
print("ready", flush=True)
for line in sys.stdin:
    for _ in range(int(line)):
        s.sendto(b"x" * 1000, ("10.77.0.2", 6000))
    print("sent", flush=True)
"#;

/// Sends `bursts` bursts of 100 datagrams through [`SENDER`], each once
/// `taken(k)` has returned for the one before (it waits for the stack to
/// take burst `k`), so that nothing below the socket overflows however
/// slow the machine.
fn send_in_bursts(ns: &Netns, bursts: u64, mut taken: impl FnMut(u64)) {
    let mut sender = Bg::new(
        ns.cmd("python3")
            .args(["-c", SENDER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_line(&mut sender, "ready", Duration::from_secs(15));
    for k in 1..=bursts {
        let stdin = sender.child.stdin.as_mut().unwrap();
        stdin.write_all(b"100\n").unwrap();
        stdin.flush().unwrap();
        wait_line(&mut sender, "sent", Duration::from_secs(15));
        taken(k);
    }
}

/// The UDP echo server on port 7 answers a kernel client, and no layer
/// restarted: what a hostile client did touched nobody else.
fn echo_still_answers_and_nothing_restarted(ns: &Netns, st: &Stack) {
    let r = ns.run_ok(&[
        "python3",
        "-c",
        "import socket\ns=socket.socket(2,2)\ns.settimeout(10)\ns.sendto(b'still here',('10.77.0.2',7))\nprint(s.recv(100).decode())",
    ]);
    assert_eq!(r.trim(), "still here");
    for l in st.json("status")["layers"].as_array().unwrap() {
        assert_eq!(l["restarts"], 0, "{l}");
    }
}

#[test]
fn a_reader_that_falls_behind_loses_datagrams_and_they_are_counted() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let sock = stack.builder().udp_bind("0.0.0.0:6000").unwrap();
    let r = strata_tests::ping(&ns, &["-c", "1", "-W", "10", STACK_IP]);
    assert_eq!(r.received, 1);
    // 2000 datagrams of 1000 bytes: far more than the 256 KiB receive ring.
    // In bursts of 100, each once the stack has taken the one before, so
    // that nothing below the socket overflows however slow the machine.
    send_in_bursts(&ns, 20, |k| {
        st.wait_for("the burst through udpd", Duration::from_secs(20), || {
            st.counter("udpd", "delivered") >= 100 * k
        })
    });
    // sockd put each in the ring or dropped it.
    st.wait_for(
        "every datagram through sockd",
        Duration::from_secs(20),
        || st.counter("sockd", "rx_datagrams") + st.counter("sockd", "rx_drop_app_slow") >= 2000,
    );
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2000];
    let mut got = 0u64;
    while sock.recv(&mut buf).is_ok() {
        got += 1;
    }
    let dropped = sock.dropped_datagrams();
    assert!(
        dropped > 0,
        "nothing dropped: the test did not overflow the ring"
    );
    assert!(got > 100, "received {got}");
    assert_eq!(st.counter("sockd", "rx_drop_app_slow"), dropped);
    // Every datagram is accounted for: received, or dropped and counted.
    assert_eq!(got + dropped, st.counter("udpd", "delivered"));
    assert_eq!(st.counter("udpd", "delivered"), 2000);
}

#[test]
fn a_hostile_client_reaches_nothing_but_its_own_sockets() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    let ss = st.json("ss");
    let victim = ss["sockets"][0]["id"].as_u64().unwrap() as u32;

    let evil = RawClient::connect(&st.instance);
    let ebadf = Response::Error { errno: libc::EBADF };
    assert_eq!(evil.call(&Request::Close { id: victim }, &[]), ebadf);
    assert_eq!(evil.call(&Request::Names { id: victim }, &[]), ebadf);
    assert_eq!(
        evil.call(
            &Request::Connect {
                id: victim,
                addr: Default::default()
            },
            &[]
        ),
        ebadf
    );
    // Not its process: it cannot take the socket over either.
    assert_eq!(
        evil.call_with_slot(|mem| Request::Reattach { id: victim, mem }),
        ebadf
    );
    // Garbage and unsealed memory are refused.
    assert_eq!(
        evil.call_bytes(&[0xff; 37], &[]),
        Response::Error {
            errno: libc::EINVAL
        }
    );
    // SAFETY: memfd_create returns a new descriptor nobody else owns (a
    // failure, -1, makes from_raw_fd panic); the name is a C string literal.
    let raw = unsafe { OwnedFd::from_raw_fd(libc::memfd_create(c"x".as_ptr(), 0)) };
    // SAFETY: ftruncate takes no pointers; the fd is open for the call.
    unsafe { libc::ftruncate(raw.as_raw_fd(), 1 << 16) };
    let einval = Response::Error {
        errno: libc::EINVAL,
    };
    assert_eq!(
        evil.call(&Request::Segment { seg: 2 }, &[raw.as_raw_fd()]),
        einval
    );
    // Other memory under a name in use is refused; the same again is not.
    let (_other, other_fd) = strata_ipc::sockring::Segment::create(1 << 16).unwrap();
    let seg1 = Request::Segment {
        seg: strata_tests::RAW_SEGMENT,
    };
    assert_eq!(
        evil.call(&seg1, &[other_fd.as_raw_fd()]),
        Response::Error {
            errno: libc::EEXIST
        }
    );
    assert_eq!(
        evil.call(&seg1, &[evil.segment_fd.as_raw_fd()]),
        Response::Ok
    );
    // Memory in no segment of its session, outside its segment, not laid
    // out, or not where a slot's header lies is refused.
    let udp = |seg: u64, off: u64| Request::Socket {
        kind: Kind::Udp,
        mem: strata_proto::sock::Slot { seg, off },
    };
    let hdr_at = strata_ipc::sockring::HDR_AT as u64;
    for (seg, off) in [
        (2, hdr_at),
        (strata_tests::RAW_SEGMENT, (1 << 40) + hdr_at),
        (strata_tests::RAW_SEGMENT, (15 << 20) + hdr_at),
        (strata_tests::RAW_SEGMENT, 100),
        (strata_tests::RAW_SEGMENT, 0),
    ] {
        assert_eq!(evil.call(&udp(seg, off), &[]), einval, "{seg} {off}");
    }
    // Anything but a wake pair's end to be kicked through (a pipe, an
    // eventfd: fds whose blocking the client controls) is refused as a
    // readiness fd.
    let (own, _mem) = evil.udp_socket();
    let (pr, pw) = nix::unistd::pipe().unwrap();
    // SAFETY: eventfd returns a new descriptor nobody else owns (a failure,
    // -1, makes from_raw_fd panic, not misbehave).
    let efd = unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_CLOEXEC)) };
    for bad in [&pw, &efd] {
        assert_eq!(
            evil.call(&Request::Readiness { id: own }, &[bad.as_raw_fd()]),
            einval
        );
    }
    drop(pr);
    // Nor can it ask for another's socket's readiness.
    let (_w, k) = wake_pair().unwrap();
    assert_eq!(
        evil.call(&Request::Readiness { id: victim }, &[k.as_raw_fd()]),
        ebadf
    );
    // A socket of its own whose ring it corrupts: sockd refuses the ring
    // and carries on.
    let (id, mem) = evil.udp_socket();
    assert!(matches!(
        evil.call(
            &Request::Connect {
                id,
                addr: strata_proto::sock::Addr::v4(0x0a4d0001, 9)
            },
            &[]
        ),
        Response::Ok
    ));
    mem.hdr()
        .tx_tail
        .store(1 << 40, std::sync::atomic::Ordering::SeqCst);
    evil.ring(id);
    st.wait_for("sockd refusing the ring", Duration::from_secs(20), || {
        st.counter("sockd", "bad_rings") >= 1
    });
    assert!(st.counter("sockd", "bad_requests") >= 1);
    // It rings its doorbell for every row of the table, again and again:
    // sockd takes a bounded share each turn and serves the others.
    for _ in 0..3 {
        for row in 0..strata_ipc::sockring::DOORBELL_BITS {
            evil.bell.ring(row);
        }
        evil.ring(id);
    }
    // The echo server never noticed.
    echo_still_answers_and_nothing_restarted(&ns, &st);
}

#[test]
fn a_client_that_never_drains_its_wake_pair_cannot_block_sockd() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    let evil = RawClient::connect(&st.instance);
    let (id, mem) = evil.udp_socket();
    let (_wait, kick) = evil.readiness(id);
    // The client fills the queue of the end it should wait on (and never
    // reads it), makes the end sockd kicks blocking (the flag belongs to
    // the file both processes share), and asks for a kick on every
    // change: a kick that honoured the file's flag would hang sockd.
    while nix::sys::socket::send(kick.as_raw_fd(), &[1], MsgFlags::MSG_DONTWAIT).is_ok() {}
    // SAFETY: F_SETFL takes no pointer; the fd is open for the call.
    unsafe { libc::fcntl(kick.as_raw_fd(), libc::F_SETFL, 0) };
    mem.announce_wait(wait::ALWAYS);
    assert_eq!(
        evil.call(
            &Request::Bind {
                id,
                addr: strata_proto::sock::Addr::v4(0, 6000)
            },
            &[]
        ),
        Response::Ok
    );
    // The kernel resolves the stack's address first (it would drop what
    // overflows its queue for an unresolved neighbour).
    let r = strata_tests::ping(&ns, &["-c", "1", "-W", "10", STACK_IP]);
    assert_eq!(r.received, 1);
    // 2,000 datagrams, in bursts of 100 that each wait for sockd to have
    // taken the one before (into the ring, or dropped as the client never
    // reads), so that none is lost below sockd however slow the machine.
    // sockd tries to kick the client for each: taking them all, it never
    // blocked.
    send_in_bursts(&ns, 20, |k| {
        st.wait_for("sockd to take the burst", Duration::from_secs(20), || {
            st.counter("sockd", "rx_datagrams") + st.counter("sockd", "rx_drop_app_slow") >= 100 * k
        })
    });
    echo_still_answers_and_nothing_restarted(&ns, &st);
}

#[test]
fn ss_lists_sockets_with_their_process() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7777"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    let o = st.strata(&["ss"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(":7777"))
        .unwrap_or_else(|| panic!("no socket on 7777:\n{text}"));
    assert!(line.starts_with("udp"), "{line}");
    assert!(line.contains(&format!("pid={}", echo.child.id())), "{line}");
    assert!(line.contains("\"echo\""), "{line}");
}

#[test]
fn sockets_per_process_and_per_user_are_limited_with_emfile() {
    let ns = Netns::new();
    let st = Stack::up_with(
        &ns,
        "[limits]\nsockets_per_process = 8\nsockets_per_user = 12\n",
    );
    let emfile = Response::Error {
        errno: libc::EMFILE,
    };
    let open = |c: &RawClient| {
        c.call_with_slot(|mem| Request::Socket {
            kind: Kind::Udp,
            mem,
        })
    };
    // One session (this process) up to its limit, then refused.
    let a = RawClient::connect(&st.instance);
    let mut ids = Vec::new();
    for _ in 0..8 {
        match open(&a) {
            Response::Created { id } => ids.push(id),
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(open(&a), emfile);
    // Another session of the same process counts with it.
    let b = RawClient::connect(&st.instance);
    assert_eq!(open(&b), emfile);
    // A closed socket makes room again.
    assert_eq!(a.call(&Request::Close { id: ids[0] }, &[]), Response::Ok);
    assert!(matches!(open(&b), Response::Created { .. }));
    // Another process of the same user: up to the user's 12.
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    assert!(st.counter("sockd", "socket_limit") >= 2);
    let sockets = st.sockets().len();
    assert_eq!(sockets, 9, "8 of this process and echo's");
    let mut others = Vec::new();
    for _ in 0..3 {
        let child = spawn_app(&st, "echo", &["--udp", "0.0.0.0:0"]);
        others.push(child);
    }
    for o in &mut others {
        wait_line(o, "serving UDP", Duration::from_secs(15));
    }
    let refused = spawn_app(&st, "echo", &["--udp", "0.0.0.0:0"]);
    let out = refused
        .wait_output(Duration::from_secs(15))
        .expect("echo over the user's limit exits");
    assert!(!out.contains("serving"), "{out}");
}

#[test]
fn out_of_descriptors_sockd_pauses_accepting_and_serves_the_waiting_session_later() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let pid = st.layer_pid("sockd");
    // As sockd's own user: changing another user's limits needs
    // CAP_SYS_RESOURCE, which a test's root may lack.
    let id = |field: &str| {
        let v = strata_tests::status_field(pid, field);
        v.split_whitespace().next().unwrap().to_string()
    };
    let (uid, gid) = (id("Uid:"), id("Gid:"));
    let nofile = |soft: &str| {
        let o = std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "prlimit",
                "--pid",
                &pid.to_string(),
                &format!("--nofile={soft}:"),
            ])
            .output()
            .expect("prlimit (util-linux)");
        assert!(o.status.success(), "{o:?}");
    };
    // No descriptor to spare: sockd cannot accept the next session.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    nofile(&open.to_string());
    let fd = strata_tests::connect_sockd(&st.instance);
    st.wait_for("sockd to be refused", Duration::from_secs(20), || {
        st.counter("sockd", "accept_refused") >= 1
    });
    // It pauses instead of spinning on a listener that stays readable:
    // about ten tries a second, where a spin makes tens of thousands.
    let (t, before) = (
        std::time::Instant::now(),
        st.counter("sockd", "accept_refused"),
    );
    st.wait_for("more tries", Duration::from_secs(20), || {
        st.counter("sockd", "accept_refused") >= before + 5
    });
    let tries = st.counter("sockd", "accept_refused") - before;
    let rate = tries as f64 / t.elapsed().as_secs_f64();
    assert!(rate < 100.0, "{tries} tries in {:?}", t.elapsed());
    // Room again: the session that waited in the backlog is served.
    nofile("1024");
    assert!(RawClient::hello(fd).is_some(), "the waiting session served");
    assert_eq!(st.restarts("sockd"), 0);
}

/// A kernel server on 10.77.0.1:9100 that takes connections with a small
/// receive buffer and never reads them.
const SINK: &str = r#"
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
srv.bind(("10.77.0.1", 9100))
srv.listen(64)
print("listening", flush=True)
conns = []
while True:
    conns.append(srv.accept()[0])
"#;

#[test]
fn one_users_sockets_hold_no_more_than_their_share_of_the_pool() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut sink = ns.spawn(&["python3", "-c", SINK]);
    wait_line(&mut sink, "listening", Duration::from_secs(15));
    // This test (root) fills 24 send rings of 256 KiB towards peers that
    // never read: 6 MiB it would have tcpd hold, three quarters of the
    // pool. Its share is a quarter (2 MiB).
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let conns: Vec<libsock::TcpStream> = (0..24)
        .map(|_| stack.builder().tcp_connect("10.77.0.1:9100").unwrap())
        .collect();
    for c in &conns {
        c.set_nonblocking(true).unwrap();
        let mut c = c;
        loop {
            match c.write(&[0u8; 65536]) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    st.wait_for(
        "the user's share to run out",
        Duration::from_secs(30),
        || st.counter("sockd", "tx_wait_user_limit") > 0,
    );
    let pool = st.json("status")["pool"].clone();
    eprintln!("pool: {pool}");
    // 2 MiB in segments of up to 1448 bytes: ~1450 buffers, not ~3000.
    let in_use = pool["in_use"].as_u64().unwrap();
    assert!(in_use < 2000, "{in_use} buffers in use");
    // Another user sends and receives 10 MB meanwhile.
    let child = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(strata_tests::bin("echo"))
        .args(["--tcp", "0.0.0.0:7007", "--udp", "0.0.0.0:7007"])
        .env("STRATA_INSTANCE", &st.instance)
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    let mut echo = Bg::new(child);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(10));
    let out = ns.run_ok(&["python3", "-c", ECHO_10MB, "7007"]);
    assert_eq!(out.trim(), "ok");
    assert_eq!(st.restarts("sockd") + st.restarts("tcpd"), 0);
    drop(conns);
}

#[test]
fn sockd_reads_only_the_sessions_and_listener_that_are_ready() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Idle sessions beside a busy one: none of them costs a read that
    // finds nothing (sockd asks epoll which are ready, and reads once per
    // readiness).
    let _idle: Vec<RawClient> = (0..3).map(|_| RawClient::connect(&st.instance)).collect();
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7", "--tcp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(10));
    let out = ns.run_ok(&["python3", "-c", UDP_ECHO_ROUNDS, "2000"]);
    assert_eq!(out.trim(), "ok");
    let out = ns.run_ok(&["python3", "-c", ECHO_10MB, "7"]);
    assert_eq!(out.trim(), "ok");
    assert!(st.counter("sockd", "sessions_opened") >= 4);
    assert_eq!(st.counter("sockd", "empty_reads"), 0);
}

/// The file descriptors and mappings process `pid` holds ("self": this
/// one).
fn fds_and_maps(pid: &str) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let maps =
        std::fs::read_to_string(format!("/proc/{pid}/maps")).map_or(0, |s| s.lines().count());
    (fds, maps)
}

/// Kernel-side UDP echo on 10.77.0.1:7.
const KERNEL_UDP_ECHO: &str = r#"
import socket
s = socket.socket(2, 2)
s.bind(("10.77.0.1", 7))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(2048)
    s.sendto(d, a)
"#;

/// A datagram to the kernel's echo and its answer, through `s` (sent
/// again after each second without one; the first may wait for the
/// neighbour to resolve).
fn echoes(s: &libsock::UdpSocket, what: &str) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 64];
    (0..30).any(|_| {
        s.send_to(what.as_bytes(), "10.77.0.1:7").unwrap();
        matches!(s.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == what.as_bytes())
    })
}

#[test]
fn ten_thousand_sockets_cost_their_process_and_sockd_no_fd_or_mapping_each() {
    const N: usize = 10_000;
    let ns = Netns::new();
    let st = Stack::up_with(
        &ns,
        "[limits]\nsockets_per_process = 20000\nsockets_per_user = 20000\n",
    );
    let mut echo = ns.spawn(&["python3", "-c", KERNEL_UDP_ECHO]);
    wait_line(&mut echo, "ready", Duration::from_secs(15));
    let sockd = st.layer_pid("sockd").to_string();
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    // The session's own descriptors and first segment exist once one
    // socket does.
    let mut socks = vec![stack.builder().udp_bind("0.0.0.0:0").unwrap()];
    let (me0, sd0) = (fds_and_maps("self"), fds_and_maps(&sockd));
    while socks.len() < N {
        socks.push(stack.builder().udp_bind("0.0.0.0:0").unwrap());
    }
    let (me1, sd1) = (fds_and_maps("self"), fds_and_maps(&sockd));
    let grew =
        |a: (usize, usize), b: (usize, usize)| (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1));
    let (me, sd) = (grew(me0, me1), grew(sd0, sd1));
    // A few segments, each one fd and one mapping, for all of them (the
    // other tests of this process may open and map a few things too:
    // one per socket would be thousands).
    assert!(
        me.0 < N / 100 && me.1 < N / 100,
        "this process: {me:?} more (fds, mappings)"
    );
    assert!(
        sd.0 <= 16 && sd.1 <= 16,
        "sockd: {sd:?} more (fds, mappings)"
    );
    assert!(st.sockets().len() >= N, "sockd lists them all");
    // They work, a blocking receive included.
    for i in (0..N).step_by(999).chain([N - 1]) {
        assert!(
            echoes(&socks[i], &format!("socket {i}")),
            "socket {i} {:?}: {}\n{}",
            socks[i].local_addr(),
            st.json("stats")["layers"]["sockd"],
            st.json("stats")["layers"]["udpd"]
        );
    }
    // A readiness fd (for an event loop) costs that socket an fd in
    // sockd (and a wake pair here).
    socks[7].readiness_fd().unwrap();
    let sd2 = fds_and_maps(&sockd);
    assert_eq!(grew(sd1, sd2).0, 1, "sockd: the end it kicks");
    assert!(echoes(&socks[7], "watched"));
    // Closed, their memory is used again: as many new sockets take no
    // new segment.
    drop(socks);
    st.wait_for("sockd to close them", Duration::from_secs(60), || {
        st.sockets().len() < 10
    });
    let mut again = Vec::new();
    while again.len() < N {
        again.push(stack.builder().udp_bind("0.0.0.0:0").unwrap());
    }
    // (sockd maps every segment the process makes.)
    let sd3 = fds_and_maps(&sockd);
    assert!(
        sd3.1 <= sd2.1 + 2,
        "sockd mapped {} more",
        sd3.1.saturating_sub(sd2.1)
    );
    assert!(echoes(&again[N / 2], "again"));
}

/// Kernel side: for each port read on stdin, one datagram (the port's
/// number as text) to that port on the stack; `sent` after each batch
/// (a blank line ends it).
const SEND_TO_PORTS: &str = r#"
import socket, sys
s = socket.socket(2, 2)
print("ready", flush=True)
for line in sys.stdin:
    for p in line.split():
        s.sendto(p.encode(), ("10.77.0.2", int(p)))
    print("sent", flush=True)
"#;

#[test]
fn one_poller_reports_five_thousand_sockets_with_no_fd_for_any_of_them() {
    const N: usize = 5000;
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let sockd = st.layer_pid("sockd").to_string();
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let poller = libsock::Poller::new(&stack).unwrap();
    assert_eq!(
        libsock::Poller::new(&stack).err().map(|e| e.kind()),
        Some(std::io::ErrorKind::AlreadyExists),
        "one poller per stack and process"
    );
    let first = stack.builder().udp_bind("0.0.0.0:0").unwrap();
    let (me0, sd0) = (fds_and_maps("self"), fds_and_maps(&sockd));
    let mut socks = vec![first];
    while socks.len() < N {
        socks.push(stack.builder().udp_bind("0.0.0.0:0").unwrap());
    }
    let mut ports = std::collections::HashMap::new();
    for (i, s) in socks.iter().enumerate() {
        s.set_nonblocking(true).unwrap();
        poller.register(s, i).unwrap();
        ports.insert(i, s.local_addr().unwrap().port());
    }
    // Registering reports each socket once, nothing to read on any.
    let mut events = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < N {
        poller
            .wait(&mut events, Some(Duration::from_secs(30)))
            .unwrap();
        assert!(!events.is_empty(), "{} of {N} reported", seen.len());
        for e in &events {
            assert!(!e.readiness.readable, "socket {} has nothing", e.token);
            seen.insert(e.token);
        }
    }
    // A datagram to every socket: the poller names each as readable,
    // and each holds its own.
    let mut sender = Bg::new(
        ns.cmd("python3")
            .args(["-c", SEND_TO_PORTS])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_line(&mut sender, "ready", Duration::from_secs(15));
    let mut got = std::collections::HashSet::new();
    let mut buf = [0u8; 64];
    // In batches of 500 the kernel side sends once the last were taken,
    // so that nothing overflows below the sockets however slow the
    // machine; a datagram lost on the way is sent again.
    let all: Vec<usize> = (0..N).collect();
    for batch in all.chunks(500) {
        let mut missing: Vec<usize> = batch.to_vec();
        for _round in 0..10 {
            let line: Vec<String> = missing.iter().map(|i| ports[i].to_string()).collect();
            let stdin = sender.child.stdin.as_mut().unwrap();
            writeln!(stdin, "{}", line.join(" ")).unwrap();
            stdin.flush().unwrap();
            wait_line(&mut sender, "sent", Duration::from_secs(30));
            let until = std::time::Instant::now() + Duration::from_secs(3);
            while !missing.is_empty() && std::time::Instant::now() < until {
                poller
                    .wait(&mut events, Some(Duration::from_millis(500)))
                    .unwrap();
                for e in &events {
                    let s = &socks[e.token];
                    while let Ok((n, _)) = s.recv_from(&mut buf) {
                        assert_eq!(&buf[..n], ports[&e.token].to_string().as_bytes());
                        got.insert(e.token);
                    }
                }
                missing.retain(|i| !got.contains(i));
            }
            if missing.is_empty() {
                break;
            }
        }
        assert!(missing.is_empty(), "{} never reported", missing.len());
    }
    assert_eq!(got.len(), N);
    // All that through one wake pair: two fds here, one in sockd.
    let (me1, sd1) = (fds_and_maps("self"), fds_and_maps(&sockd));
    assert!(
        me1.0 < me0.0 + N / 100,
        "this process: {} more fds",
        me1.0.saturating_sub(me0.0)
    );
    assert!(
        sd1.0 <= sd0.0 + 8,
        "sockd: {} more fds",
        sd1.0.saturating_sub(sd0.0)
    );
    // A socket let go of is not reported again.
    poller.deregister(&socks[3]).unwrap();
    assert!(poller.deregister(&socks[3]).is_err());
}
