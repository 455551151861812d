//! A remote peer cannot take the packet pool: tens of thousands of
//! one-byte out-of-order segments spread over many connections, or
//! fragments from a thousand spoofed sources that never complete, leave
//! a bounded share of it held, and a well-behaved client still gets its
//! data through and its pings answered, with no layer restarted.

use std::time::Duration;

use strata_tests::{ping_all, spawn_app, wait_line, Netns, Stack, ECHO_10MB, LAYERS, STACK_IP};

/// Opens N connections to port 7 from the kernel, freezes each (TCP_REPAIR:
/// the kernel then sends nothing on it, and closes it silently), reads its
/// sequence numbers, and sends PER one-byte segments per connection, one
/// byte after each hole, from a raw socket. At most 128 go unanswered at a
/// time (strata answers each with an ACK), so a busy machine loses none to
/// queues; a second without an answer moves on. Prints "sent N", then
/// keeps the connections open until it is killed.
const FLOOD: &str = r#"
import select, signal, socket, struct, sys
N, PER = int(sys.argv[1]), int(sys.argv[2])
TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ, RECV_Q, SEND_Q = 19, 20, 21, 1, 2
SRC, DST = socket.inet_aton("10.77.0.1"), socket.inet_aton("10.77.0.2")
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def seg(sport, seq, ack):
    tcp = struct.pack("!HHIIBBHHH", sport, 7, seq, ack, 5 << 4, 0x10, 64, 0, 0) + b"x"
    c = csum(SRC + DST + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, SRC, DST)
    return ip[:10] + struct.pack("!H", csum(ip)) + ip[12:] + tcp
conns = []
for _ in range(N):
    c = socket.create_connection(("10.77.0.2", 7), timeout=30)
    c.setsockopt(socket.SOL_TCP, TCP_REPAIR, 1)
    c.setsockopt(socket.SOL_TCP, TCP_REPAIR_QUEUE, SEND_Q)
    snd = c.getsockopt(socket.SOL_TCP, TCP_QUEUE_SEQ) & 0xffffffff
    c.setsockopt(socket.SOL_TCP, TCP_REPAIR_QUEUE, RECV_Q)
    rcv = c.getsockopt(socket.SOL_TCP, TCP_QUEUE_SEQ) & 0xffffffff
    conns.append((c, c.getsockname()[1], snd, rcv))
ports = {p for _, p, _, _ in conns}
tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
rx.setblocking(False)
plan = [(p, (snd + 1 + 2 * k) & 0xffffffff, rcv) for k in range(PER) for _, p, snd, rcv in conns]
sent = answered = 0
while sent < len(plan):
    while sent < len(plan) and sent - answered < 128:
        tx.sendto(seg(*plan[sent]), ("10.77.0.2", 0))
        sent += 1
    if not select.select([rx], [], [], 1.0)[0]:
        answered = sent
        continue
    while True:
        try:
            d = rx.recv(65535)
        except BlockingIOError:
            break
        ihl = (d[0] & 15) * 4
        sport, dport = struct.unpack("!HH", d[ihl:ihl + 4])
        if sport == 7 and dport in ports:
            answered += 1
print("sent", sent, flush=True)
signal.pause()
"#;

#[test]
fn one_byte_holes_on_many_connections_leave_the_pool_to_everyone_else() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:7", "--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
    let small = st.json("status")["pool"]["small_total"].as_u64().unwrap();

    // 32 connections × 1,500 holes: 48,000 segments, each of which would
    // keep a buffer of its own, twelve times the pool.
    let mut flood = ns.spawn(&["python3", "-c", FLOOD, "32", "1500"]);
    let line = wait_line(&mut flood, "sent", Duration::from_secs(300));
    eprintln!("flood: {line}");
    let pool = st.json("status")["pool"].clone();
    let tcpd_held = pool["in_use_by_owner"]["tcpd"].as_u64().unwrap_or(0);
    let (ooo, dropped, pruned) = (
        st.counter("tcpd", "ooo_segs"),
        st.counter("tcpd", "ooo_dropped"),
        st.counter("tcpd", "ooo_pruned"),
    );
    eprintln!("pool: {pool}\ntcpd: ooo_segs={ooo} ooo_dropped={dropped} ooo_pruned={pruned}");
    assert!(ooo > 0, "nothing was queued out of order");
    assert!(dropped > 0, "nothing was refused");
    // tcpd keeps out-of-order data in a quarter of the pool at most.
    assert!(
        tcpd_held <= small / 4 + 64,
        "tcpd holds {tcpd_held} of {small} buffers"
    );

    // With the attackers' connections still open and their holes held,
    // everyone else is served.
    let out = ns.run_ok(&["python3", "-c", ECHO_10MB, "7"]);
    assert_eq!(out.trim(), "ok");
    let r = ping_all(&ns, &["-c", "3", "-i", "0.2", "-W", "2", STACK_IP]);
    assert_eq!(r.received, 3, "{}", r.text);
    for layer in LAYERS {
        assert_eq!(st.restarts(layer), 0, "{layer} restarted");
    }
    drop(flood);
}

/// First fragments (more to come, never sent) of 1,000 datagrams from
/// 1,000 spoofed sources, as raw frames on the kernel side of the TAP.
const FRAGMENTS: &str = r#"
import socket, struct
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("strata0", 0))
eth = bytes.fromhex("025354000001") + s.getsockname()[4] + b"\x08\x00"
payload = b"\x08\x00\x00\x00" + bytes(1004)
for i in range(1000):
    src = socket.inet_aton("198.51.%d.%d" % (100 + i // 250, 1 + i % 250))
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), i, 0x2000, 64, 1, 0,
                     src, socket.inet_aton("10.77.0.2"))
    s.send(eth + ip[:10] + struct.pack("!H", csum(ip)) + ip[12:] + payload)
print("sent 1000")
"#;

#[test]
fn fragments_from_a_thousand_spoofed_sources_leave_the_large_buffers_to_everyone_else() {
    let ns = Netns::new();
    // Few large buffers, as a small configuration has: reassembly, which
    // pins one per datagram, must still leave most of them.
    let st = Stack::up_with(&ns, "[limits]\nlarge_buffers = 16\n");
    let mut echo = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:7", "--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
    let out = ns.run_ok(&["python3", "-c", FRAGMENTS]);
    assert_eq!(out.trim(), "sent 1000");
    // Every fragment is taken in or refused by a limit before we look.
    st.wait_for("ipd to see the fragments", Duration::from_secs(30), || {
        st.counter("ipd", "rx_frames") >= 1000
    });
    let pool = st.json("status")["pool"].clone();
    eprintln!(
        "pool: {pool}\nipd: {}",
        ["frag_table_full", "frag_mem_limit", "frag_timeout"]
            .map(|k| format!("{k}={}", st.counter("ipd", k)))
            .join(" ")
    );
    let (free, total) = (
        pool["large_free"].as_u64().unwrap(),
        pool["large_total"].as_u64().unwrap(),
    );
    // (Less the one driverd keeps ready for the next long frame.)
    assert!(
        free >= total - total / 4 - 1,
        "{free} of {total} large buffers free"
    );
    assert!(
        st.counter("ipd", "frag_table_full") > 0,
        "no limit was reached"
    );
    // The partial datagrams are still held (30 s): everyone else is
    // served meanwhile (except for reassembly, whose table they fill, as
    // they would fill Linux's memory for it).
    let out = ns.run_ok(&["python3", "-c", ECHO_10MB, "7"]);
    assert_eq!(out.trim(), "ok");
    let r = ping_all(&ns, &["-c", "3", "-i", "0.2", "-W", "2", STACK_IP]);
    assert_eq!(r.received, 3, "{}", r.text);
}

/// Connects to port 7 with the smallest MSS Linux lets a socket ask for
/// (88) and a 4 KiB receive buffer, sends 200 KB and then never reads:
/// the echo piles up in the stack, cut for a tiny segment size.
const TINY_MSS: &str = r#"
import signal, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)
s.connect(("10.77.0.2", 7))
s.sendall(bytes(200_000))
print("sent", flush=True)
signal.pause()
"#;

#[test]
fn a_peer_with_a_tiny_mss_that_stops_reading_costs_hundreds_of_buffers_not_thousands() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:7", "--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
    let mut peer = ns.spawn(&["python3", "-c", TINY_MSS]);
    wait_line(&mut peer, "sent", Duration::from_secs(60));
    // Most of the echo has gone from the application to tcpd, which
    // cannot send it: the peer's window is closed.
    st.wait_for("the echo to reach tcpd", Duration::from_secs(60), || {
        st.counter("sockd", "tx_copy_bytes") >= 150_000
    });
    let pool = st.json("status")["pool"].clone();
    eprintln!("pool: {pool}");
    // sockd cuts the stream into one buffer per 76-byte segment, but
    // tcpd packs what it cannot send yet into the spare room of its last
    // queued buffer: 150 KB held costs ~150 buffers, not ~2,000.
    let in_use = pool["in_use"].as_u64().unwrap();
    assert!(in_use < 1000, "{in_use} buffers in use");
    let r = ping_all(&ns, &["-c", "3", "-i", "0.2", "-W", "2", STACK_IP]);
    assert_eq!(r.received, 3, "{}", r.text);
}

/// A kernel server on port 9000 that sends each connection 1 MB as fast
/// as it will go.
const BULK_SERVER: &str = r#"
import socket, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("10.77.0.1", 9000))
srv.listen(64)
print("listening", flush=True)
def feed(c):
    try:
        c.sendall(bytes(1 << 20))
    except OSError:
        pass
while True:
    c, _ = srv.accept()
    threading.Thread(target=feed, args=(c,), daemon=True).start()
"#;

#[test]
fn small_receive_rings_that_are_never_read_hold_a_few_buffers_each() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut server = ns.spawn(&["python3", "-c", BULK_SERVER]);
    wait_line(&mut server, "listening", Duration::from_secs(15));
    // 20 connections with 4 KiB rings (the smallest), never read.
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let conns: Vec<libsock::TcpStream> = (0..20)
        .map(|_| {
            stack
                .builder()
                .ring_sizes(4096, 4096)
                .tcp_connect("10.77.0.1:9000")
                .unwrap()
        })
        .collect();
    st.wait_for("every ring to fill", Duration::from_secs(30), || {
        let full = st
            .sockets()
            .iter()
            .filter(|s| s["recv_q"].as_u64().unwrap_or(0) >= 4096 - 1500)
            .count();
        full == conns.len()
    });
    // tcpd delivers no more than a ring holds, so sockd keeps only what
    // did not fit the last time (with the default ring assumed, up to
    // 60 KB more each, ~40 buffers).
    let pool = st.json("status")["pool"].clone();
    eprintln!("pool: {pool}");
    let sockd = pool["in_use_by_owner"]["sockd"].as_u64().unwrap_or(0);
    assert!(
        sockd <= 5 * conns.len() as u64,
        "sockd holds {sockd} buffers"
    );
    drop(conns);
}
