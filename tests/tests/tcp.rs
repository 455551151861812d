//! TCP through the whole stack against the Linux kernel's TCP.

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;
use strata_tests::{spawn_app, wait_line, wait_tcp_listening, Netns, Stack, HOST_IP, STACK_IP};

/// Kernel-side client: sends N random bytes to HOST:PORT while reading
/// the echo, then compares.
const ECHO_CLIENT: &str = r#"
import socket, os, sys, threading, hashlib
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=30)
data = os.urandom(n)
got = bytearray()
def rd():
    while True:
        b = s.recv(1 << 16)
        if not b: break
        got.extend(b)
t = threading.Thread(target=rd); t.start()
s.sendall(data)
s.shutdown(socket.SHUT_WR)
t.join()
print("sent", n, "got", len(got), "same", hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest())
"#;

#[test]
fn kernel_client_echoes_twenty_megabytes_through_a_libsock_server() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:7", "--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    let out = ns.run_ok(&["python3", "-c", ECHO_CLIENT, STACK_IP, "7", "20000000"]);
    assert_eq!(out.trim(), "sent 20000000 got 20000000 same True");
    // One copy each way at the socket boundary.
    assert_eq!(st.counter("sockd", "rx_copy_bytes"), 20_000_000);
    assert_eq!(st.counter("sockd", "tx_copy_bytes"), 20_000_000);
}

/// A kernel-side server that sends `n` bytes of a fixed pattern to each
/// client, then closes; or, with "reset", sends some and aborts (RST).
const SERVER: &str = r#"
import socket, sys, struct
host, port, n, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port)); l.listen(8)
print("listening", flush=True)
block = bytes(range(256)) * 256
c, _ = l.accept()
sent = 0
while sent < n:
    k = min(len(block), n - sent)
    c.sendall(block[:k]); sent += k
if mode == "reset":
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # Part of the scenario: let some data through before the RST. The
    # reader sees a reset however much of it arrived first.
    import time; time.sleep(0.2)
c.close()
"#;

fn pattern_ok(data: &[u8]) -> bool {
    data.chunks(65536)
        .all(|c| c.iter().enumerate().all(|(i, &b)| b == i as u8))
}

#[test]
fn a_libsock_client_downloads_from_a_kernel_server() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut server = ns.spawn(&[
        "python3", "-c", SERVER, HOST_IP, "8000", "20000000", "close",
    ]);
    wait_line(&mut server, "listening", Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let addr: std::net::SocketAddr = format!("{HOST_IP}:8000").parse().unwrap();
    let mut s = stack.builder().tcp_connect(addr).unwrap();
    assert_eq!(s.peer_addr().unwrap(), addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut data = Vec::new();
    s.read_to_end(&mut data).unwrap();
    assert_eq!(data.len(), 20_000_000);
    assert!(pattern_ok(&data), "payload corrupted");
    // Our side is still open for writing (half-close), as on Linux.
    assert_eq!(s.write(b"bye").unwrap(), 3);
}

#[test]
fn connecting_to_a_closed_port_is_refused_at_once_on_both_sides() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // At once: the RST answers the kernel's first SYN, which it never
    // has to send again (its retransmission counter, read in the
    // namespace, stays put); how long that took is the machine's business.
    let out = ns.run_ok(&[
        "python3",
        "-c",
        "import socket\n\
         def retrans():\n    \
             t=[l.split() for l in open('/proc/net/snmp') if l.startswith('Tcp:')]\n    \
             return int(t[1][t[0].index('RetransSegs')])\n\
         r=retrans()\n\
         try:\n    socket.create_connection(('10.77.0.2', 4444), timeout=30)\n    print('connected')\n\
         except ConnectionRefusedError:\n    print('refused', retrans()-r)",
    ]);
    assert_eq!(out.trim(), "refused 0");
    // Our side likewise: refused by the kernel's RST to the first SYN,
    // with no SYN timed out and sent again.
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let addr: std::net::SocketAddr = format!("{HOST_IP}:4444").parse().unwrap();
    let e = stack.builder().tcp_connect(addr).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert_eq!(st.counter("tcpd", "rto_expired"), 0, "a SYN was sent again");
}

#[test]
fn a_kernel_peer_that_aborts_surfaces_as_connection_reset() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut server = ns.spawn(&["python3", "-c", SERVER, HOST_IP, "8001", "100000", "reset"]);
    wait_line(&mut server, "listening", Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let addr: std::net::SocketAddr = format!("{HOST_IP}:8001").parse().unwrap();
    let mut s = stack.builder().tcp_connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    let err = loop {
        match s.read(&mut buf) {
            Ok(0) => panic!("clean EOF after {total} bytes, expected a reset"),
            Ok(n) => total += n,
            Err(e) => break e,
        }
    };
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionReset,
        "{err} after {total} bytes"
    );
}

#[test]
fn transfers_stay_identical_under_loss_reordering_and_duplication() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Faults on both directions of the stack's wire.
    st.inject_faults();
    let mut echo = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:7", "--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    let out = ns.run_ok(&["python3", "-c", ECHO_CLIENT, STACK_IP, "7", "5000000"]);
    assert_eq!(out.trim(), "sent 5000000 got 5000000 same True");
    assert!(st.counter("netdevd", "fault_loss") > 0);
    assert!(
        st.counter("tcpd", "retrans_segs") > 0,
        "loss was repaired by retransmission"
    );
}

#[test]
fn newreno_is_selectable_per_connection_and_carries_a_transfer() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut server = ns.spawn(&["python3", "-c", SERVER, HOST_IP, "8002", "5000000", "close"]);
    wait_line(&mut server, "listening", Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let addr: std::net::SocketAddr = format!("{HOST_IP}:8002").parse().unwrap();
    let mut s = stack.builder().tcp_connect(addr).unwrap();
    s.set_congestion("reno").unwrap();
    assert_eq!(
        s.set_congestion("bbr").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    s.set_keepalive(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut data = Vec::new();
    s.read_to_end(&mut data).unwrap();
    assert_eq!(data.len(), 5_000_000);
    assert!(pattern_ok(&data));
}

/// Kernel-side server: accepts one connection, reads to EOF, reports the
/// byte count and how the stream ended.
const READER: &str = r#"
import socket, sys
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(1)
print("listening", flush=True)
c, _ = l.accept(); c.settimeout(10)
n = 0
try:
    while True:
        b = c.recv(1 << 16)
        if not b: print("eof", n, flush=True); break
        n += len(b)
except ConnectionResetError:
    print("reset", n, flush=True)
"#;

#[test]
fn close_sends_everything_queued_then_fin_but_rst_if_data_went_unread() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    // Close after writing: the peer gets every byte, then EOF.
    let mut server = ns.spawn(&["python3", "-c", READER, HOST_IP, "8010"]);
    wait_line(&mut server, "listening", Duration::from_secs(15));
    let addr: std::net::SocketAddr = format!("{HOST_IP}:8010").parse().unwrap();
    let mut s = stack.builder().tcp_connect(addr).unwrap();
    s.write_all(&vec![7u8; 3_000_000]).unwrap();
    drop(s);
    assert_eq!(
        wait_line(&mut server, "eof", Duration::from_secs(15)),
        "eof 3000000"
    );
    // Close with unread received data: RST, as Linux does.
    let listener = stack.builder().tcp_bind("0.0.0.0:8011").unwrap();
    let client = ns.spawn(&[
        "python3",
        "-c",
        "import socket\ns=socket.create_connection(('10.77.0.2',8011),timeout=30)\ns.sendall(b'unread'*100)\n\
         try:\n    print('got', s.recv(10), flush=True)\nexcept ConnectionResetError:\n    print('reset', flush=True)",
    ]);
    let (conn, peer) = listener.accept().unwrap();
    // The 600 bytes wait in the socket, unread (`strata ss`), when it
    // closes.
    let peer = peer.to_string();
    st.wait_for("the data in the socket", Duration::from_secs(20), || {
        st.sockets()
            .iter()
            .any(|x| x["peer"] == peer.as_str() && x["recv_q"].as_u64() == Some(600))
    });
    drop(conn);
    let out = client
        .wait_output(Duration::from_secs(40))
        .expect("client ended");
    assert_eq!(out.trim(), "reset");
}

/// The entry of `strata ss --json` whose peer is `peer`, once `f` holds
/// for it.
fn ss_entry(st: &Stack, peer: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut found = serde_json::Value::Null;
    st.wait_for(
        &format!("an ss entry for {peer}"),
        Duration::from_secs(10),
        || {
            let ss = st.json("ss");
            let hit = ss["sockets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["peer"] == peer && f(x))
                .cloned();
            found = hit.unwrap_or(serde_json::Value::Null);
            !found.is_null()
        },
    );
    found
}

#[test]
fn ss_shows_tcpds_view_of_a_connection_and_its_time_wait() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // A kernel sink that closes when our FIN arrives: we close first.
    let _sink = ns.spawn(&["socat", "-u", "TCP-LISTEN:9000,reuseaddr", "OPEN:/dev/null"]);
    wait_tcp_listening(&ns, 9000, Duration::from_secs(20));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let peer = format!("{HOST_IP}:9000");
    let mut s = stack.builder().tcp_connect(peer.as_str()).unwrap();
    s.write_all(&vec![7u8; 4 << 20]).unwrap();

    let x = ss_entry(&st, &peer, |x| x["tcp"]["state"] == "ESTAB");
    let t = &x["tcp"];
    assert_eq!(x["pid"].as_u64(), Some(u64::from(std::process::id())));
    assert_eq!(t["cc"], "cubic");
    let mss = t["mss"].as_u64().unwrap();
    assert_eq!(mss, 1448, "MTU 1500 less headers and timestamps: {x}");
    assert!(t["cwnd"].as_u64().unwrap() >= mss, "{x}");
    assert!(t["srtt_us"].as_u64().unwrap() > 0, "{x}");
    assert!(t["rto_us"].as_u64().unwrap() >= 200_000, "{x}");
    assert!(t["snd_wnd"].as_u64().unwrap() > 0, "{x}");
    assert!(t["rcvbuf"].as_u64().unwrap() >= 64 << 10, "{x}");
    let o = st.strata(&["ss", "--info"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("ESTAB"), "{text}");
    assert!(text.contains("cubic rto:"), "{text}");

    // We close first: tcpd keeps the connection in TIME-WAIT, owned by
    // no socket or process any more.
    drop(s);
    let x = ss_entry(&st, &peer, |x| x["state"] == "TIME-WAIT");
    assert_eq!(x["pid"], 0, "{x}");
    let o = st.strata(&["ss"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("TIME-WAIT"));
}

/// Kernel-side clients: N connections to HOST:PORT, one byte sent on
/// each; then, once told on stdin, reads each to its end and prints
/// what each got: its data, `eof`, or `reset`.
const BURST_CLIENT: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = [socket.create_connection((host, port), timeout=30) for _ in range(n)]
for c in conns: c.sendall(b"x")
print("connected", flush=True)
sys.stdin.readline()
out = []
for c in conns:
    got = b""
    try:
        while True:
            b = c.recv(100)
            if not b: break
            got += b
        out.append(got.decode() or "eof")
    except ConnectionResetError:
        out.append("reset")
print(" ".join(sorted(out)), flush=True)
"#;

#[test]
fn a_burst_of_connections_is_accepted_in_a_few_requests() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let l = stack
        .builder()
        .backlog(256)
        .tcp_bind("0.0.0.0:7110")
        .unwrap();
    let mut c = ns.spawn_stdin(&["python3", "-c", BURST_CLIENT, STACK_IP, "7110", "100"]);
    wait_line(&mut c, "connected", Duration::from_secs(30));
    st.wait_for("100 connections waiting", Duration::from_secs(20), || {
        l.pending_accepts() == Some(100)
    });
    let before = st.counter("sockd", "accept_requests");
    let mut peers = std::collections::HashSet::new();
    for _ in 0..100 {
        let (mut s, peer) = l.accept().unwrap();
        assert!(peers.insert(peer), "{peer} accepted twice");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"y").unwrap();
    }
    // 32, 32, 32 and 4 (the most one request takes is 32).
    assert_eq!(st.counter("sockd", "accept_requests") - before, 4);
    assert_eq!(l.pending_accepts(), Some(0));
    c.send_line("");
    let out = c.wait_output(Duration::from_secs(30)).expect("clients");
    assert_eq!(out.trim(), vec!["y"; 100].join(" "));
}

#[test]
fn a_closed_listener_resets_the_connections_it_took_ahead() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let l = stack.builder().tcp_bind("0.0.0.0:7111").unwrap();
    let mut c = ns.spawn_stdin(&["python3", "-c", BURST_CLIENT, STACK_IP, "7111", "5"]);
    wait_line(&mut c, "connected", Duration::from_secs(30));
    st.wait_for("5 connections waiting", Duration::from_secs(20), || {
        l.pending_accepts() == Some(5)
    });
    // The one accept takes all five and keeps four ahead.
    let (mut s, _) = l.accept().unwrap();
    assert_eq!(l.pending_accepts(), Some(4));
    // Its byte read (a close with unread data would reset it too).
    s.read_exact(&mut [0u8; 1]).unwrap();
    s.write_all(b"hi").unwrap();
    drop(s);
    drop(l);
    c.send_line("");
    let out = c.wait_output(Duration::from_secs(30)).expect("clients");
    assert_eq!(out.trim(), "hi reset reset reset reset");
    // Only the connection this side closed first stays, in TIME-WAIT.
    st.wait_for("the reset ones gone", Duration::from_secs(20), || {
        let left: Vec<_> = st
            .sockets()
            .into_iter()
            .filter(|x| x["local"].as_str().unwrap_or("").ends_with(":7111"))
            .map(|x| x["state"].as_str().unwrap_or("").to_string())
            .collect();
        left == ["TIME-WAIT"]
    });
}
