//! Router mode: strata forwards IPv4 between two TAP interfaces, each the
//! link of a Linux host in a network namespace of its own.
//!
//! ```text
//!  host A (netns a)            strata (launched in netns a)         host B (netns b)
//!  strata0 10.78.1.2/24 ──── 10.78.1.1 [ipd forwards] 10.78.2.1 ──── strata1 10.78.2.2/24
//!                               MTU 1500              MTU 1280
//! ```
//!
//! The launcher creates both TAPs in its own namespace, A's; the test then
//! moves strata1's kernel side into B, where it gets its address. The
//! launcher's TAP file descriptor is unaffected by the move.

use std::time::Duration;
use strata_tests::{pattern, ping, ping_all, socat_upload, wait_line, Netns, Stack, TempDir};

const A_IP: &str = "10.78.1.2";
const B_IP: &str = "10.78.2.2";
/// strata's address on A's link.
const STRATA_A: &str = "10.78.1.1";
/// strata's address on B's link.
const STRATA_B: &str = "10.78.2.1";
/// The MTU of B's link, below A's 1500.
const B_MTU: u16 = 1280;

/// Host A, host B and the stack between them. Fields drop in order: the
/// stack stops (and its TAPs vanish) before the namespaces go.
struct Router {
    st: Stack,
    a: Netns,
    b: Netns,
}

impl Router {
    fn up(forwarding: bool) -> Router {
        let a = Netns::new();
        let b = Netns::new();
        let st = Stack::up_config(
            &a,
            &format!(
                "[[interface]]\nname = \"strata0\"\naddresses = [\"{STRATA_A}/24\"]\n\
                 host_addresses = [\"{A_IP}/24\"]\n\
                 [[interface]]\nname = \"strata1\"\naddresses = [\"{STRATA_B}/24\"]\n\
                 mtu = {B_MTU}\n\
                 [ip]\nforwarding = {forwarding}\n"
            ),
        );
        a.run_ok(&["ip", "route", "add", "default", "via", STRATA_A]);
        a.run_ok(&["ip", "link", "set", "strata1", "netns", &b.name]);
        // Moving a device takes it down and drops its addresses, but keeps
        // its MTU.
        b.run_ok(&["ip", "link", "set", "strata1", "mtu", &B_MTU.to_string()]);
        b.run_ok(&["ip", "addr", "add", &format!("{B_IP}/24"), "dev", "strata1"]);
        b.run_ok(&["ip", "link", "set", "strata1", "up"]);
        b.run_ok(&["ip", "route", "add", "default", "via", STRATA_B]);
        Router { st, a, b }
    }
}

#[test]
fn hosts_ping_each_other_through_strata_with_one_hop_of_ttl_spent() {
    let r = Router::up(true);
    for (from, to) in [(&r.a, B_IP), (&r.b, A_IP)] {
        let p = ping_all(from, &["-c", "5", "-i", "0.2", "-W", "2", "-p", "a5", to]);
        assert!(p.received >= 4, "to {to}:\n{}", p.text);
        assert!(!p.corrupted, "to {to}:\n{}", p.text);
        // Linux replies with TTL 64; one router on the way back.
        assert!(p.text.contains("ttl=63"), "to {to}:\n{}", p.text);
    }
    assert!(r.st.counter("ipd", "forwarded") >= 16);
    assert_eq!(r.st.counter("ipd", "not_for_us"), 0);
}

#[test]
fn what_cannot_be_forwarded_is_reported_with_the_icmp_errors_linux_sends() {
    let r = Router::up(true);
    // What traceroute's first probe sees.
    let p = ping(&r.a, &["-c", "1", "-t", "1", "-W", "2", B_IP]);
    assert!(
        p.text.contains(&format!("From {STRATA_A}")) && p.text.contains("Time to live exceeded"),
        "{}",
        p.text
    );
    assert_eq!(r.st.counter("ipd", "fwd_ttl_exceeded"), 1);

    // DF clear: strata cuts A's 1500-byte fragments down to B's MTU, B
    // reassembles and its fragmented replies come back whole. (Before the
    // DF ping: once A learns the path MTU it fragments to fit by itself.)
    let p = ping_all(
        &r.a,
        &[
            "-c", "3", "-i", "0.2", "-W", "2", "-M", "dont", "-s", "3000", "-p", "5a", B_IP,
        ],
    );
    assert_eq!(p.received, 3, "{}", p.text);
    assert!(!p.corrupted, "{}", p.text);
    assert!(r.st.counter("ipd", "frag_out_datagrams") >= 3);
    assert_eq!(
        r.st.counter("ipd", "frag_reassembled"),
        0,
        "not ours to join"
    );

    // DF set and too big for B's link: fragmentation needed, with the MTU.
    let p = ping(
        &r.a,
        &["-c", "1", "-M", "do", "-s", "1400", "-W", "2", B_IP],
    );
    assert!(
        p.text.contains(&format!("From {STRATA_A}"))
            && p.text.contains("Frag needed")
            && p.text.contains(&format!("mtu = {B_MTU}")),
        "{}",
        p.text
    );
    assert_eq!(r.st.counter("ipd", "fwd_frag_needed"), 1);

    // strata has no default route: net unreachable.
    let p = ping(&r.a, &["-c", "1", "-W", "2", "10.99.0.1"]);
    assert!(
        p.text.contains(&format!("From {STRATA_A}")) && p.text.contains("Net Unreachable"),
        "{}",
        p.text
    );
    assert_eq!(r.st.counter("ipd", "fwd_no_route"), 1);

    // Nobody answers ARP for this one on B's link: host unreachable once
    // strata gives up (three requests, a second apart).
    let p = ping(&r.a, &["-c", "1", "-W", "20", "10.78.2.99"]);
    assert!(
        p.text.contains(&format!("From {STRATA_A}")) && p.text.contains("Host Unreachable"),
        "{}",
        p.text
    );
    r.st.wait_for("ipd to count the failure", Duration::from_secs(10), || {
        r.st.counter("ipd", "fwd_neigh_failed") >= 1
    });
    assert_eq!(r.st.counter("ipd", "fwd_neigh_failed"), 1);
}

#[test]
fn tcp_transfers_both_ways_arrive_intact() {
    let r = Router::up(true);
    let dir = TempDir::new("strata-router");
    const LEN: usize = 4 << 20;
    download(&r, &dir, LEN, 0x5eed);

    // A uploads to a socat listener in B.
    let listen = format!("TCP-LISTEN:9000,bind={B_IP},reuseaddr");
    let connect = format!("TCP:{B_IP}:9000");
    let sent = pattern(LEN, 0xfeed);
    socat_upload(
        &r.st,
        &r.a,
        &r.b,
        (&listen, 9000, &connect),
        &sent,
        dir.path(),
    );

    // Every byte crossed strata as forwarded datagrams (super-segments
    // among them), none of them to or from a socket of its own: each file
    // went out of the interface on the other side.
    let stats = r.st.json("stats");
    let tx = |i: usize| {
        stats["interfaces"][i]["counters"]["tx_bytes"]
            .as_u64()
            .unwrap()
    };
    assert!(tx(0) >= LEN as u64 && tx(1) >= LEN as u64);
    assert!(r.st.counter("ipd", "forwarded") > 0);
    assert_eq!(r.st.counter("ipd", "delivered"), 0);
}

/// B serves `len` bytes of `pattern(len, seed)` over HTTP and A downloads
/// them with curl; panics unless they arrive intact.
fn download(r: &Router, dir: &TempDir, len: usize, seed: u32) {
    let served = pattern(len, seed);
    std::fs::write(dir.path().join("big.bin"), &served).unwrap();
    let _server =
        r.b.http_server(B_IP, 8080, dir.path(), Duration::from_secs(10));
    let got = dir.path().join("got.bin");
    r.a.run_ok(&[
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "120",
        "-o",
        got.to_str().unwrap(),
        &format!("http://{B_IP}:8080/big.bin"),
    ]);
    assert!(std::fs::read(&got).unwrap() == served, "download corrupted");
}

#[test]
fn masquerade_carries_a_fifty_megabyte_download_in_super_segments() {
    let r = Router::up(true);
    r.st.filter("-t nat -A POSTROUTING -o strata1 -j MASQUERADE");
    let dir = TempDir::new("strata-router");
    download(&r, &dir, 50 << 20, 0xda7a);
    // B's kernel sent super-segments (to strata's address, NAT undid
    // that), and they went on to A whole; no checksum was computed in
    // software, so NAT kept the partial ones partial.
    for (drv, dir) in [("driverd1", "rx"), ("driverd0", "tx")] {
        let n = r.st.counter(drv, &format!("{dir}_super_frames"));
        assert!(n > 0, "{drv}: no super-segment ({dir})");
        assert_eq!(r.st.counter(drv, "csum_soft"), 0, "{drv}");
    }
    let ct = r.st.json("conntrack")["entries"].to_string();
    assert!(ct.contains(&format!("dst={STRATA_B}")), "translated: {ct}");
}

#[test]
fn without_forwarding_the_hosts_stay_apart() {
    let r = Router::up(false);
    let p = ping(&r.a, &["-c", "2", "-i", "0.2", "-W", "1", B_IP]);
    assert_eq!(p.received, 0, "{}", p.text);
    // strata itself still answers on both sides.
    let p = ping(&r.a, &["-c", "1", "-W", "10", STRATA_A]);
    assert_eq!(p.received, 1, "{}", p.text);
    let p = ping(&r.b, &["-c", "1", "-W", "10", STRATA_B]);
    assert_eq!(p.received, 1, "{}", p.text);
    assert!(r.st.counter("ipd", "not_for_us") >= 2);
    assert_eq!(r.st.counter("ipd", "forwarded"), 0);
}

/// Kernel-side TCP server that answers each connection with the peer
/// address it sees, then closes.
const WHO: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
print("listening", flush=True)
while True:
    c, a = s.accept()
    c.sendall(("%s\n" % a[0]).encode())
    c.close()
"#;

/// What B's server says A's connection came from ("failed ..." if it
/// got no answer within `timeout` seconds).
fn seen_by_b_within(r: &Router, timeout: &str) -> String {
    let out = r.a.run(&[
        "python3",
        "-c",
        "import socket,sys\ntry:\n s=socket.create_connection((sys.argv[1],7070),timeout=float(sys.argv[2]))\n \
         print(s.recv(64).decode().strip())\nexcept OSError as e:\n print('failed', e)",
        B_IP,
        timeout,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// [`seen_by_b_within`] for a connection that must be answered (20 s: a
/// bound for a hang; the answer ends the wait at once).
fn seen_by_b(r: &Router) -> String {
    seen_by_b_within(r, "20")
}

#[test]
fn masquerade_hides_host_a_behind_strata_and_forward_rules_apply() {
    let r = Router::up(true);
    let mut who = r.b.spawn(&["python3", "-u", "-c", WHO, B_IP, "7070"]);
    wait_line(&mut who, "listening", Duration::from_secs(10));
    assert_eq!(seen_by_b(&r), A_IP, "routed as it is");

    r.st.filter("-t nat -A POSTROUTING -o strata1 -j MASQUERADE");
    assert_eq!(seen_by_b(&r), STRATA_B, "B sees strata's address");
    // The binding: original A → B, reply B → strata.
    let ct = r.st.json("conntrack");
    let s = ct["entries"].to_string();
    assert!(
        s.contains(&format!("src={A_IP}")) && s.contains(&format!("dst={STRATA_B}")),
        "the binding is in the table: {s}"
    );

    // FORWARD: A may not reach B's port 7070 any more; pings still pass.
    r.st.filter("add FORWARD -i strata0 -p tcp --dport 7070 -j REJECT --reject-with tcp-reset");
    assert!(seen_by_b(&r).contains("refused"), "{}", seen_by_b(&r));
    let p = ping_all(&r.a, &["-c", "2", "-i", "0.2", "-W", "1", B_IP]);
    assert_eq!(p.received, 2);
    r.st.filter("flush FORWARD");
    r.st.filter("policy FORWARD DROP");
    // Dropped: no answer comes however long one waits, so 2 s cannot
    // flip with speed.
    assert!(
        seen_by_b_within(&r, "2").contains("failed"),
        "dropped by the policy"
    );
}
