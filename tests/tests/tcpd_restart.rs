//! tcpd is killed while sockd's requests wait in its ring or its
//! answers wait in its memory: a connect, a bind and listen with an
//! accept, a shutdown and a close, connects and accepts all around the
//! kill. sockd sees the new instance, sends every unanswered request
//! again and has tcpd restate what it may have missed; the application
//! (this test process, through libsock) sees a pause, never an error or
//! a hang, and the kernel peer gets every byte and every FIN.
//!
//! To be sure a request is in the ring when tcpd dies, tcpd is first
//! stopped (SIGSTOP: it takes nothing more), the request made, and then
//! tcpd killed; the heartbeat timeout is raised so the launcher does not
//! kill the stopped tcpd first.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_tests::{
    bounded, connect_and_echo, echo_to_eof, kernel_echo_server, pattern, Bg, Netns, Stack, HOST_IP,
    STACK_IP,
};

const PATIENT: &str = "\n[limits]\nheartbeat_timeout_ms = 20000\n";

/// SIGSTOP our own stack's tcpd: what sockd sends now stays in its ring.
fn stop_tcpd(st: &Stack) {
    assert_eq!(
        // SAFETY: kill takes no pointers; the pid is a layer of the stack this
        // test started, read from its fabric while the layer runs.
        unsafe { libc::kill(st.layer_pid("tcpd"), libc::SIGSTOP) },
        0
    );
}

/// Waits until sockd's ring to the stopped tcpd holds more than `queued`
/// (`more` requests sent since).
fn wait_queued(st: &Stack, what: &str, queued: u64, more: u64) {
    st.wait_for(what, Duration::from_secs(20), || {
        st.ring_len("sockd", "tcpd") >= queued + more
    });
}

/// `strata kill tcpd` and wait for its successor.
fn kill_tcpd(st: &Stack) {
    let before = st.kill_layer("tcpd");
    st.wait_restarted("tcpd", before);
}

/// A kernel server on HOST_IP:`port` that takes `n` connections and
/// prints, per connection in order of arrival, `eof <bytes>` once it
/// read end-of-stream.
fn kernel_eof_server(ns: &Netns, port: u16, n: usize) -> Bg {
    let mut bg = ns.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket,threading\n\
             l=socket.socket()\n\
             l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             l.bind(('{HOST_IP}',{port}))\n\
             l.listen(64)\n\
             print('listening',flush=True)\n\
             lock=threading.Lock()\n\
             def drain(c):\n    \
                 n=0\n    \
                 while True:\n        \
                     d=c.recv(65536)\n        \
                     if not d: break\n        \
                     n+=len(d)\n    \
                 with lock: print('eof',n,flush=True)\n    \
                 c.close()\n\
             ts=[]\n\
             for _ in range({n}):\n    \
                 c,_=l.accept()\n    \
                 t=threading.Thread(target=drain,args=(c,))\n    \
                 t.start()\n    \
                 ts.append(t)\n\
             for t in ts: t.join()\n\
             print('done',flush=True)"
        ),
    ]);
    strata_tests::wait_line(&mut bg, "listening", Duration::from_secs(15));
    bg
}

/// Kernel TCP client: connects to `port` on the stack (retrying while
/// refused: the listener may not be there yet), sends `len` bytes of a
/// pattern, shuts down its write side, and prints the number of bytes
/// that came back and whether they were the same.
fn kernel_client(ns: &Netns, port: u16, len: usize, seed: u32) -> Bg {
    ns.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket,time,random\n\
             r=random.Random({seed})\n\
             data=bytes(r.getrandbits(8) for _ in range({len}))\n\
             t0=time.time()\n\
             while True:\n    \
                 try:\n        \
                     s=socket.create_connection(('{STACK_IP}',{port}),timeout=30)\n        \
                     break\n    \
                 except ConnectionRefusedError:\n        \
                     if time.time()-t0>20: raise\n        \
                     time.sleep(0.1)\n\
             print('connected',flush=True)\n\
             s.sendall(data)\n\
             s.shutdown(socket.SHUT_WR)\n\
             back=b''\n\
             while True:\n    \
                 d=s.recv(65536)\n    \
                 if not d: break\n    \
                 back+=d\n\
             print('back',len(back),back==data,flush=True)"
        ),
    ])
}

fn client_result(c: Bg, st: &Stack) -> String {
    let out = c
        .wait_output(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("kernel client hung\nlog:\n{}", st.log_text()));
    out.lines()
        .find(|l| l.starts_with("back"))
        .unwrap_or_else(|| panic!("kernel client failed: {out}\nlog:\n{}", st.log_text()))
        .to_string()
}

#[test]
fn a_connect_sent_to_a_stopped_tcpd_completes_after_its_kill() {
    let ns = Netns::new();
    let st = Stack::up_with(&ns, PATIENT);
    let server = kernel_echo_server(&ns, 7201, 1, Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let data = Arc::new(pattern(400_000, 3));
    stop_tcpd(&st);
    let queued = st.ring_len("sockd", "tcpd");
    let (b, d) = (stack.builder(), data.clone());
    let w = bounded("connect", Duration::from_secs(40), move || {
        connect_and_echo(b, 7201, d)
    });
    // The CONNECT waits in the stopped tcpd's ring, and dies with it;
    // longer than sockd's 3 s request timeout, which must not count
    // while tcpd is hung. The sleep is that scenario's length, counted
    // from the request's arrival: a slow machine only lengthens it.
    wait_queued(&st, "the CONNECT in tcpd's ring", queued, 1);
    std::thread::sleep(Duration::from_millis(3500));
    kill_tcpd(&st);
    let back = w.join(&st).expect("connect and echo without an error");
    assert!(back == *data, "echo differs ({} bytes back)", back.len());
    assert!(server
        .wait_output(Duration::from_secs(10))
        .unwrap()
        .contains("done"));
    assert!(st.counter("sockd", "tcpd_restarts_seen") >= 1);
}

#[test]
fn a_listen_and_accept_made_while_tcpd_is_stopped_take_connections() {
    let ns = Netns::new();
    let st = Stack::up_with(&ns, PATIENT);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    stop_tcpd(&st);
    let queued = st.ring_len("sockd", "tcpd");
    let b = stack.builder();
    // BIND (then LISTEN) wait in the stopped tcpd's ring.
    let w = bounded("bind, listen, accept", Duration::from_secs(40), move || {
        let l = b.tcp_bind("0.0.0.0:7202")?;
        let mut n = Vec::new();
        for _ in 0..2 {
            let (s, _) = l.accept()?;
            n.push(echo_to_eof(s)?);
        }
        std::io::Result::Ok(n)
    });
    wait_queued(&st, "the BIND in tcpd's ring", queued, 1);
    kill_tcpd(&st);
    let c1 = kernel_client(&ns, 7202, 150_000, 1);
    let c2 = kernel_client(&ns, 7202, 170_000, 2);
    assert_eq!(client_result(c1, &st), "back 150000 True");
    assert_eq!(client_result(c2, &st), "back 170000 True");
    let mut n = w.join(&st).expect("bind, listen, accept without an error");
    n.sort();
    assert_eq!(n, vec![150_000, 170_000]);
}

#[test]
fn an_accept_made_while_tcpd_is_stopped_gets_its_connection_attached() {
    let ns = Netns::new();
    let st = Stack::up_with(&ns, PATIENT);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let l = stack.builder().tcp_bind("0.0.0.0:7206").unwrap();
    let mut c = kernel_client(&ns, 7206, 200_000, 9);
    strata_tests::wait_line(&mut c, "connected", Duration::from_secs(10));
    // Established and announced to sockd (ACCEPTABLE), not accepted: in
    // tcpd's table, and then nothing left in tcpd's ring to sockd (tcpd
    // sends ACCEPTABLE in the turn that establishes the connection, and
    // nothing else for a connection nobody accepted).
    st.wait_for(
        "the connection established",
        Duration::from_secs(20),
        || {
            st.sockets().iter().any(|x| {
                x["tcp"]["state"] == "ESTAB" && x["local"].as_str().unwrap_or("").ends_with(":7206")
            })
        },
    );
    st.wait_for(
        "the ACCEPTABLE taken by sockd",
        Duration::from_secs(20),
        || st.ring_len("tcpd", "sockd") == 0,
    );
    stop_tcpd(&st);
    let queued = st.ring_len("sockd", "tcpd");
    // The accept is answered from sockd's queue; its ATTACH waits in the
    // stopped tcpd's ring and dies with it: tcpd would never hand this
    // socket its data.
    let (tx, rx) = mpsc::channel();
    let w = bounded("accept and echo", Duration::from_secs(40), move || {
        let (s, _) = l.accept()?;
        let _ = tx.send(());
        echo_to_eof(s)
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("accept answered while tcpd is stopped");
    wait_queued(&st, "the ATTACH in tcpd's ring", queued, 1);
    kill_tcpd(&st);
    assert_eq!(client_result(c, &st), "back 200000 True");
    assert_eq!(w.join(&st).expect("accept and echo"), 200_000);
}

#[test]
fn a_shutdown_and_a_close_sent_to_a_stopped_tcpd_reach_the_peer_as_fin() {
    let ns = Netns::new();
    let st = Stack::up_with(&ns, PATIENT);
    let server = kernel_eof_server(&ns, 7203, 2);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let a = stack
        .builder()
        .tcp_connect(format!("{HOST_IP}:7203"))
        .unwrap();
    let mut b = stack
        .builder()
        .tcp_connect(format!("{HOST_IP}:7203"))
        .unwrap();
    (&a).write_all(&pattern(30_000, 5)).unwrap();
    b.write_all(&pattern(40_000, 6)).unwrap();
    // tcpd took it all (and said so) before it stops: sent, acknowledged
    // by the peer, and tcpd's word of it taken by sockd.
    st.wait_for(
        "all data sent and acknowledged",
        Duration::from_secs(20),
        || {
            let socks = st.sockets();
            let ours: Vec<_> = socks
                .iter()
                .filter(|x| x["peer"] == format!("{HOST_IP}:7203").as_str())
                .collect();
            st.counter("tcpd", "out_data_bytes") >= 70_000
                && ours.len() == 2
                && ours.iter().all(|x| x["tcp"]["unacked"] == 0)
        },
    );
    st.wait_for(
        "tcpd's word taken by sockd",
        Duration::from_secs(20),
        || st.ring_len("tcpd", "sockd") == 0,
    );
    stop_tcpd(&st);
    let queued = st.ring_len("sockd", "tcpd");
    // Neither call waits for the stopped tcpd: both return while it is
    // stopped (one that waited would hang until the kill, which comes only
    // after) and nothing sockd asked tcpd timed out.
    let w = bounded("shutdown and close", Duration::from_secs(20), move || {
        a.shutdown(libsock::Shutdown::Write).map(|_| {
            drop(b);
            a
        })
    });
    let a = w.join(&st).expect("shutdown");
    assert_eq!(st.counter("sockd", "ctl_timeouts"), 0);
    // SHUTDOWN and CLOSE wait in the stopped tcpd's ring.
    wait_queued(&st, "SHUTDOWN and CLOSE in tcpd's ring", queued, 2);
    kill_tcpd(&st);
    let out = server
        .wait_output(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the peer never saw both FINs\nlog:\n{}", st.log_text()));
    let mut eofs: Vec<&str> = out.lines().filter(|l| l.starts_with("eof")).collect();
    eofs.sort();
    assert_eq!(eofs, vec!["eof 30000", "eof 40000"], "{out}");
    assert!(out.contains("done"));
    // The peer closed in turn: the half-closed stream reads its end.
    let mut rest = Vec::new();
    let w = bounded("read to eof", Duration::from_secs(20), move || {
        (&a).read_to_end(&mut rest).map(|n| (n, a))
    });
    let (n, a) = w.join(&st).expect("read to end of stream");
    assert_eq!(n, 0);
    drop(a);
}

#[test]
fn connects_and_accepts_made_all_around_a_tcpd_kill_succeed() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    const N: usize = 16;
    const M: usize = 8;
    let server = kernel_echo_server(&ns, 7204, N, Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let l = stack.builder().tcp_bind("0.0.0.0:7205").unwrap();
    let wa = bounded("accepts", Duration::from_secs(50), move || {
        let mut ws = Vec::new();
        for _ in 0..M {
            let (s, _) = l.accept()?;
            ws.push(std::thread::spawn(move || echo_to_eof(s)));
        }
        let mut n = Vec::new();
        for w in ws {
            n.push(w.join().unwrap()?);
        }
        std::io::Result::Ok(n)
    });
    let mut ws = Vec::new();
    let t0 = Instant::now();
    for i in 0..N {
        let b = stack.builder();
        let d = Arc::new(pattern(20_000 + i * 1000, i as u32 + 1));
        // Spread over 1.2 s; tcpd dies at 0.6 s: socket, connect, data
        // and close meet it dying, restarting, and back. The times only
        // spread the connections around the kill: every one must succeed
        // wherever it falls, so no speed can change the verdict.
        let at = Duration::from_millis(75 * i as u64);
        ws.push((
            d.clone(),
            bounded("connect", Duration::from_secs(50), move || {
                std::thread::sleep(at.saturating_sub(t0.elapsed()));
                connect_and_echo(b, 7204, d)
            }),
        ));
    }
    let mut clients = Vec::new();
    for i in 0..M {
        std::thread::sleep(Duration::from_millis(150 * i as u64).saturating_sub(t0.elapsed()));
        clients.push(kernel_client(&ns, 7205, 30_000 + i * 1000, 100 + i as u32));
        if i == M / 2 {
            kill_tcpd(&st);
        }
    }
    for (i, (d, w)) in ws.into_iter().enumerate() {
        let back = w
            .join(&st)
            .unwrap_or_else(|e| panic!("connection {i}: {e}\nlog:\n{}", st.log_text()));
        assert!(back == *d, "connection {i}: echo differs");
    }
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(
            client_result(c, &st),
            format!("back {} True", 30_000 + i * 1000),
            "kernel client {i}"
        );
    }
    let mut n = wa.join(&st).expect("accepts without an error");
    n.sort();
    assert_eq!(n, (0..M).map(|i| 30_000 + i * 1000).collect::<Vec<_>>());
    assert!(server
        .wait_output(Duration::from_secs(10))
        .unwrap()
        .contains("done"));
}
