//! sockd is killed while the application's sockets wait: a blocked
//! accept, a full accept queue, a connect in progress, a blocked UDP
//! receive, an event loop on readiness fds. libsock reconnects and
//! re-attaches; the application (this test process, through libsock)
//! sees a pause, never an error, and every byte arrives intact at the
//! kernel peer and back.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_tests::{
    blocked_in_wait, bounded, connect_and_echo, echo_to_eof, gettid, kernel_echo_server, pattern,
    sha256_file, unique, Bg, Netns, Stack, HOST_IP, STACK_IP,
};

/// tcpd's states of the TCP connections (`strata ss`), with each row's
/// local address.
fn tcp_states(st: &Stack) -> Vec<(String, String)> {
    st.sockets()
        .iter()
        .filter_map(|x| {
            let state = x["tcp"]["state"].as_str()?;
            Some((state.to_string(), x["local"].as_str()?.to_string()))
        })
        .collect()
}

/// Waits until thread `tid` (one of ours, in a libsock call) sleeps
/// until sockd wakes it.
fn wait_blocked(st: &Stack, what: &str, tid: i32) {
    st.wait_for(what, Duration::from_secs(20), || blocked_in_wait(tid));
}

/// Kernel TCP client: connects to `port` on the stack, sends `file`,
/// shuts down its write side, and prints `connected` once connected and
/// then the sha256 of what came back.
fn kernel_client(ns: &Netns, port: u16, file: &std::path::Path) -> Bg {
    ns.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket,hashlib\n\
             s=socket.create_connection(('{STACK_IP}',{port}),timeout=30)\n\
             print('connected',flush=True)\n\
             s.sendall(open('{}','rb').read())\n\
             s.shutdown(socket.SHUT_WR)\n\
             h=hashlib.sha256()\n\
             while True:\n    d=s.recv(65536)\n    if not d: break\n    h.update(d)\n\
             print(h.hexdigest())",
            file.display()
        ),
    ])
}

fn client_sha(c: Bg, st: &Stack) -> String {
    let out = c
        .wait_output(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("kernel client hung\nlog:\n{}", st.log_text()));
    out.split_whitespace().last().unwrap_or("").to_string()
}

/// `n` kernel clients of `port`, each sending a random file of 200,000
/// bytes of its own: each with its file's sha256.
fn file_clients(ns: &Netns, files: &Files, port: u16, n: usize) -> Vec<(Bg, String)> {
    (0..n)
        .map(|i| {
            let (f, sha) = files.random(&format!("{port}-{i}.bin"), 200_000);
            (kernel_client(ns, port, &f), sha)
        })
        .collect()
}

/// Every client got its own file back.
fn assert_echoed(clients: Vec<(Bg, String)>, st: &Stack) {
    for (c, sha) in clients {
        assert_eq!(client_sha(c, st), sha);
    }
}

struct Files {
    dir: std::path::PathBuf,
}

impl Files {
    fn new() -> Files {
        let dir = std::env::temp_dir().join(unique("strata-sdr"));
        std::fs::create_dir_all(&dir).unwrap();
        Files { dir }
    }

    /// A random file of `len` bytes and its sha256.
    fn random(&self, name: &str, len: u64) -> (std::path::PathBuf, String) {
        let p = self.dir.join(name);
        let sha = strata_tests::random_file(&p, len);
        (p, sha)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_blocked_accept_takes_connections_made_during_and_after_a_sockd_restart() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let files = Files::new();
    let (fa, sha_a) = files.random("a.bin", 300_000);
    let (fb, sha_b) = files.random("b.bin", 300_000);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let la = stack.builder().tcp_bind("0.0.0.0:7101").unwrap();
    let lb = stack.builder().tcp_bind("0.0.0.0:7102").unwrap();
    let (tx, rx) = mpsc::channel();
    let accept = |l: libsock::TcpListener, tx: mpsc::Sender<i32>| {
        move || -> std::io::Result<(usize, SocketAddr)> {
            let _ = tx.send(gettid());
            let (s, peer) = l.accept()?;
            Ok((echo_to_eof(s)?, peer))
        }
    };
    let wa = bounded(
        "accept on 7101",
        Duration::from_secs(40),
        accept(la, tx.clone()),
    );
    let wb = bounded("accept on 7102", Duration::from_secs(40), accept(lb, tx));
    // Both threads are in accept, asleep until sockd wakes them.
    for _ in 0..2 {
        let tid = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("thread started");
        wait_blocked(&st, "a thread blocked in accept", tid);
    }
    let before = st.kill_layer("sockd");
    // The handshake completes in tcpd while sockd is down or starting.
    let ca = kernel_client(&ns, 7101, &fa);
    st.wait_restarted("sockd", before);
    let cb = kernel_client(&ns, 7102, &fb);
    assert_eq!(client_sha(ca, &st), sha_a);
    assert_eq!(client_sha(cb, &st), sha_b);
    for w in [wa, wb] {
        let (n, peer) = w.join(&st).expect("accept and echo without an error");
        assert_eq!(n, 300_000);
        assert_eq!(peer.ip().to_string(), HOST_IP);
    }
    assert_eq!(sha256_file(&fa), sha_a);
    assert_eq!(st.restarts("sockd"), before + 1);
}

#[test]
fn connections_waiting_in_the_accept_queue_survive_a_sockd_restart() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let files = Files::new();
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let l = stack.builder().tcp_bind("0.0.0.0:7103").unwrap();
    let mut clients = file_clients(&ns, &files, 7103, 3);
    for (c, _) in &mut clients {
        strata_tests::wait_line(c, "connected", Duration::from_secs(10));
    }
    // Established and announced to sockd, not accepted: all three in
    // tcpd's table, and then nothing left in tcpd's ring to sockd (tcpd
    // sends ACCEPTABLE in the turn that establishes a connection, and
    // nothing else for a connection nobody accepted).
    st.wait_for(
        "three connections established",
        Duration::from_secs(20),
        || {
            tcp_states(&st)
                .iter()
                .filter(|(state, local)| state == "ESTAB" && local.ends_with(":7103"))
                .count()
                == 3
        },
    );
    st.wait_for(
        "the ACCEPTABLEs taken by sockd",
        Duration::from_secs(20),
        || st.ring_len("tcpd", "sockd") == 0,
    );
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    let w = bounded("three accepts", Duration::from_secs(40), move || {
        let mut n = Vec::new();
        for _ in 0..3 {
            let (s, _) = l.accept()?;
            n.push(echo_to_eof(s)?);
        }
        std::io::Result::Ok(n)
    });
    assert_echoed(clients, &st);
    assert_eq!(w.join(&st).expect("accepts"), vec![200_000; 3]);
}

#[test]
fn connections_an_accept_took_ahead_survive_a_sockd_restart() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let files = Files::new();
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let l = stack.builder().tcp_bind("0.0.0.0:7109").unwrap();
    let clients = file_clients(&ns, &files, 7109, 4);
    st.wait_for("four connections waiting", Duration::from_secs(20), || {
        l.pending_accepts() == Some(4)
    });
    // One accept takes all four from sockd, hands out one and keeps
    // three in this process, registered with the session like any
    // socket: a restarted sockd takes them back.
    let (first, _) = l.accept().unwrap();
    assert_eq!(l.pending_accepts(), Some(3));
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    let w = bounded("the accepts", Duration::from_secs(40), move || {
        let mut n = vec![echo_to_eof(first)?];
        for _ in 0..3 {
            let (s, _) = l.accept()?;
            n.push(echo_to_eof(s)?);
        }
        std::io::Result::Ok(n)
    });
    assert_echoed(clients, &st);
    assert_eq!(w.join(&st).expect("accepts"), vec![200_000; 4]);
}

#[test]
fn a_connect_in_progress_completes_across_a_sockd_restart() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let server = kernel_echo_server(&ns, 7104, 1, Duration::from_secs(15));
    // ARP on both sides first: the qdisc below drops ARP as well.
    let r = strata_tests::ping(&ns, &["-c", "1", "-W", "10", STACK_IP]);
    assert_eq!(r.received, 1, "{}", r.text);
    // The SYN is lost in strata0's qdisc (and so are its retransmissions)
    // until the qdisc is cleared: sockd dies while the handshake is in
    // progress and the application blocks in connect, however long the
    // restart takes.
    let o = st.strata(&["qdisc", "strata0", "loss", "100%"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let data = Arc::new(pattern(500_000, 7));
    let b = stack.builder();
    let d = data.clone();
    let w = bounded("connect", Duration::from_secs(60), move || {
        connect_and_echo(b, 7104, d)
    });
    let syn_sent = || tcp_states(&st).iter().any(|(state, _)| state == "SYN-SENT");
    st.wait_for(
        "the connect in progress",
        Duration::from_secs(20),
        &syn_sent,
    );
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    assert!(
        syn_sent(),
        "the handshake was over before sockd came back: the test did not test"
    );
    let o = st.strata(&["qdisc", "strata0", "clear"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back = w.join(&st).expect("connect and echo without an error");
    assert!(back == *data, "echo differs ({} bytes back)", back.len());
    assert!(server
        .wait_output(Duration::from_secs(10))
        .unwrap()
        .contains("done"));
}

#[test]
fn connects_made_all_around_a_sockd_restart_succeed() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    const N: usize = 24;
    let server = kernel_echo_server(&ns, 7105, N, Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let mut ws = Vec::new();
    let t0 = Instant::now();
    for i in 0..N {
        let b = stack.builder();
        let d = Arc::new(pattern(20_000 + i * 1000, i as u32 + 1));
        // Spread over 1.2 s; sockd dies at 0.6 s: socket, connect and
        // close requests meet it dying, restarting, and back. The times
        // only spread the connections around the kill: every one must
        // succeed wherever it falls, so no speed can change the verdict.
        let at = Duration::from_millis(50 * i as u64);
        ws.push((
            d.clone(),
            bounded("connect", Duration::from_secs(40), move || {
                std::thread::sleep(at.saturating_sub(t0.elapsed()));
                connect_and_echo(b, 7105, d)
            }),
        ));
    }
    std::thread::sleep(Duration::from_millis(600).saturating_sub(t0.elapsed()));
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    for (i, (d, w)) in ws.into_iter().enumerate() {
        let back = w
            .join(&st)
            .unwrap_or_else(|e| panic!("connection {i}: {e}\nlog:\n{}", st.log_text()));
        assert!(back == *d, "connection {i}: echo differs");
    }
    assert!(server
        .wait_output(Duration::from_secs(10))
        .unwrap()
        .contains("done"));
}

#[test]
fn a_blocked_udp_recv_from_receives_after_a_sockd_restart() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let sock = stack.builder().udp_bind("0.0.0.0:7106").unwrap();
    let (tx, rx) = mpsc::channel();
    let w = bounded("recv_from", Duration::from_secs(60), move || {
        let _ = tx.send(gettid());
        let mut buf = [0u8; 2048];
        let (n, peer) = sock.recv_from(&mut buf)?;
        let mut reply = b"echo:".to_vec();
        reply.extend_from_slice(&buf[..n]);
        sock.send_to(&reply, peer)?;
        std::io::Result::Ok((buf[..n].to_vec(), peer))
    });
    let tid = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("thread started");
    wait_blocked(&st, "the thread blocked in recv_from", tid);
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    // A datagram that reaches a socket nobody has re-attached yet is
    // lost, as one in flight may be: the kernel side sends until answered
    // (for up to 30 s: a bound for a hang).
    let out = ns.run_ok(&[
        "python3",
        "-c",
        &format!(
            "import socket,time\n\
             s=socket.socket(2,2)\n\
             s.settimeout(0.2)\n\
             end=time.time()+30\n\
             while time.time()<end:\n    \
                 s.sendto(b'hello after restart',('{STACK_IP}',7106))\n    \
                 try:\n        \
                     print(s.recv(100).decode()); break\n    \
                 except socket.timeout: pass"
        ),
    ]);
    assert_eq!(out.trim(), "echo:hello after restart");
    let (got, peer) = w.join(&st).expect("recv_from without an error");
    assert_eq!(got, b"hello after restart");
    assert_eq!(peer.ip().to_string(), HOST_IP);
}

/// Waits up to `ms` for any of `fds` to become readable; how many are.
fn poll_fds(fds: &[i32], ms: i32) -> i32 {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: p is a live, writable vector of exactly p.len() pollfds for the
    // whole call.
    unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) }
}

#[test]
fn an_event_loop_on_readiness_fds_carries_on_after_a_sockd_restart() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let l = stack.builder().tcp_bind("0.0.0.0:7107").unwrap();
    l.set_nonblocking(true).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    // Wakes the loop for the end of the test.
    // SAFETY: no pointers; the call only creates a descriptor.
    let stop_fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(stop_fd >= 0);
    // A line-echo server in one thread that moves only when poll(2) says
    // a readiness fd fired; any error ends it and fails the test.
    let w = bounded("event loop", Duration::from_secs(60), move || {
        let mut conns: Vec<(libsock::TcpStream, Vec<u8>)> = Vec::new();
        let mut accepted = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let mut fds = vec![stop_fd, l.as_raw_fd()];
            fds.extend(conns.iter().map(|(s, _)| s.as_raw_fd()));
            if poll_fds(&fds, 20_000) == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no readiness fd fired for 20 s",
                ));
            }
            loop {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(true)?;
                        conns.push((s, Vec::new()));
                        accepted += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            let mut i = 0;
            while i < conns.len() {
                let (s, pending) = &mut conns[i];
                let mut buf = [0u8; 4096];
                let mut eof = false;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                // Small lines: the send ring always has room.
                while let Some(k) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=k).collect();
                    s.write_all(&line)?;
                }
                if eof {
                    conns.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        std::io::Result::Ok(accepted)
    });
    // One client connected before the kill, talking on both sides of it
    // (its stdin says when to go on).
    let mut c1 = Bg::new(
        ns.cmd("python3")
            .args([
                "-c",
                &format!(
                    "import socket,sys\n\
                     s=socket.create_connection(('{STACK_IP}',7107),timeout=20)\n\
                     f=s.makefile('rb')\n\
                     s.sendall(b'one\\n'); print(f.readline().decode().strip(),flush=True)\n\
                     sys.stdin.readline()\n\
                     s.sendall(b'two\\n'); print(f.readline().decode().strip(),flush=True)\n\
                     s.close()"
                ),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(
        strata_tests::wait_line(&mut c1, "one", Duration::from_secs(10)),
        "one"
    );
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    c1.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(
        strata_tests::wait_line(&mut c1, "two", Duration::from_secs(15)),
        "two"
    );
    // A new client after the restart: the listener's readiness fd.
    let out = ns.run_ok(&[
        "python3",
        "-c",
        &format!(
            "import socket\n\
             s=socket.create_connection(('{STACK_IP}',7107),timeout=20)\n\
             s.sendall(b'three\\n'); print(s.makefile('rb').readline().decode().strip())"
        ),
    ]);
    assert_eq!(out.trim(), "three");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the kernel reads 8 bytes from a live temporary array.
    unsafe { libc::write(stop_fd, 1u64.to_ne_bytes().as_ptr().cast(), 8) };
    let accepted = w.join(&st);
    // SAFETY: stop_fd is our eventfd, closed once, here, after the loop that
    // used it has been joined.
    unsafe { libc::close(stop_fd) };
    assert_eq!(accepted.expect("event loop without an error"), 2);
}

#[test]
fn accepts_and_connects_whose_news_died_with_sockd_complete() {
    let ns = Netns::new();
    // sockd is held stopped for a while: no heartbeat kill meanwhile.
    let st = Stack::up_with(&ns, "\n[limits]\nheartbeat_timeout_ms = 20000\n");
    let server = kernel_echo_server(&ns, 7108, 1, Duration::from_secs(15));
    let files = Files::new();
    let (f, sha) = files.random("lost.bin", 300_000);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let l = stack.builder().tcp_bind("0.0.0.0:7109").unwrap();
    let wa = bounded("accept", Duration::from_secs(40), move || {
        let (s, _) = l.accept()?;
        echo_to_eof(s)
    });
    // Handshakes take half a second in the qdisc.
    let o = st.strata(&["qdisc", "strata0", "delay", "500"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = Arc::new(pattern(300_000, 99));
    let (b, d) = (stack.builder(), data.clone());
    let wc = bounded("connect", Duration::from_secs(40), move || {
        connect_and_echo(b, 7108, d)
    });
    // The connect reached tcpd (its SYN waits in the qdisc).
    st.wait_for("the connect in tcpd", Duration::from_secs(20), || {
        tcp_states(&st).iter().any(|(state, _)| state == "SYN-SENT")
    });
    // Stopped, sockd leaves tcpd's CONNECTED and ACCEPTABLE in its ring;
    // killed, it loses them: the ring is reset for its successor.
    let pid = st.layer_pid("sockd");
    // SAFETY: kill takes no pointers; the pid is a layer of the stack this
    // test started, read from its fabric while the layer runs.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let client = kernel_client(&ns, 7109, &f);
    // Both handshakes over in tcpd: CONNECTED and ACCEPTABLE were sent
    // (in the same turn) to the stopped sockd.
    st.wait_for(
        "both connections established",
        Duration::from_secs(20),
        || {
            let t = tcp_states(&st);
            let estab = |incoming: bool| {
                t.iter()
                    .any(|(state, local)| state == "ESTAB" && local.ends_with(":7109") == incoming)
            };
            estab(true) && estab(false)
        },
    );
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    let o = st.strata(&["qdisc", "strata0", "clear"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(client_sha(client, &st), sha);
    assert_eq!(wa.join(&st).expect("accept and echo"), 300_000);
    let back = wc.join(&st).expect("connect and echo");
    assert!(back == *data, "echo differs ({} bytes back)", back.len());
    assert!(server
        .wait_output(Duration::from_secs(10))
        .unwrap()
        .contains("done"));
}

#[test]
fn an_accept_whose_attach_was_lost_is_attached_by_the_restarted_sockd() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let files = Files::new();
    let (f, sha) = files.random("attach.bin", 300_000);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let l = stack.builder().tcp_bind("0.0.0.0:7110").unwrap();
    let mut client = kernel_client(&ns, 7110, &f);
    strata_tests::wait_line(&mut client, "connected", Duration::from_secs(10));
    // tcpd stopped: the ATTACH of the accept below waits in its ring, and
    // tcpd never speaks of the new socket. Killed, tcpd loses the ring,
    // ATTACH included; the connection stays in its accept queue.
    let tcpd = st.layer_pid("tcpd");
    // SAFETY: kill takes no pointers; the pid is a layer of the stack this
    // test started, read from its fabric while the layer runs.
    unsafe { libc::kill(tcpd, libc::SIGSTOP) };
    let queued = st.ring_len("sockd", "tcpd");
    let (tx, rx) = mpsc::channel();
    let w = bounded("accept", Duration::from_secs(40), move || {
        let (s, _) = l.accept()?;
        let _ = tx.send(());
        echo_to_eof(s)
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("accepted");
    // sockd answers the accept, then puts the ATTACH in the stopped
    // tcpd's ring.
    st.wait_for("the ATTACH in tcpd's ring", Duration::from_secs(20), || {
        st.ring_len("sockd", "tcpd") > queued
    });
    let before = st.restarts("tcpd");
    assert!(st.strata(&["kill", "tcpd"]).status.success());
    st.wait_for("tcpd restarted", Duration::from_secs(10), || {
        st.restarts("tcpd") > before
    });
    // The restarted sockd knows the socket was accepted and never
    // confirmed: it sends the ATTACH again.
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    assert_eq!(client_sha(client, &st), sha);
    assert_eq!(w.join(&st).expect("echo without an error"), 300_000);
}

#[test]
fn a_write_shutdown_pending_when_sockd_dies_still_reaches_the_peer() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let server = kernel_echo_server(&ns, 7111, 1, Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let s = stack
        .builder()
        .tcp_connect(format!("{HOST_IP}:7111"))
        .unwrap();
    let data = pattern(50_000, 7);
    // tcpd stopped: it takes none of the data, so the write shutdown,
    // answered at once, waits in sockd for the send ring to drain.
    let tcpd = st.layer_pid("tcpd");
    // SAFETY: kill takes no pointers; the pid is a layer of the stack this
    // test started, read from its fabric while the layer runs.
    unsafe { libc::kill(tcpd, libc::SIGSTOP) };
    (&s).write_all(&data).unwrap();
    s.shutdown(libsock::Shutdown::Write).unwrap();
    // sockd dies with it; the restarted one must still send it.
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    // SAFETY: as above.
    unsafe { libc::kill(tcpd, libc::SIGCONT) };
    let w = bounded("the echo to its end", Duration::from_secs(40), move || {
        let mut back = Vec::new();
        (&s).read_to_end(&mut back).map(|_| back)
    });
    assert!(w.join(&st).expect("echo") == data, "echo differs");
    assert!(server
        .wait_output(Duration::from_secs(10))
        .unwrap()
        .contains("done"));
}
