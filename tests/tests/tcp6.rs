//! TCP over IPv6 through the whole stack against the kernel's own TCP
//! across a dual-stack TAP: curl downloads from examples/httpd, a
//! libsock client downloads from a kernel server (also under loss,
//! reordering and duplication), dual-stack listeners and IPV6_V6ONLY,
//! closed ports, and ip6tables-style rules in filterd.

use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::time::Duration;
use strata_tests::{
    random_file, sha256_file, spawn_app, tap_config6, wait_line, Netns, Stack, TempDir, HOST_IP,
    HOST_IP6, STACK_IP, STACK_IP6,
};

/// The stack up on a dual-stack TAP with its global IPv6 address usable.
fn dual_stack(ns: &Netns) -> Stack {
    let st = Stack::up_config(ns, &tap_config6(""));
    st.wait_dad(STACK_IP6);
    st
}

/// Kernel-side TCP probe: connects to HOST:PORT (either family, timeout
/// TIMEOUT s), sends a line and reads the echo. Prints `ok`, `refused`,
/// `timeout` or the error.
const PROBE: &str = r#"
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(b"hello\n")
    r = s.recv(100)
    print("ok" if r == b"hello\n" else "bad %r" % r)
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error %s" % e)
"#;

/// How long a probe that must be answered may wait: a bound for a hang;
/// an answer ends the wait at once.
const ANSWERED: f64 = 10.0;
/// How long a probe whose SYN must be dropped waits for the answer that
/// never comes (an unanswered SYN stays unanswered however fast the
/// stack).
const DROPPED: f64 = 1.0;

fn probe(ns: &Netns, host: &str, port: u16, timeout: f64) -> String {
    let out = ns.run_ok(&[
        "python3",
        "-c",
        PROBE,
        host,
        &port.to_string(),
        &timeout.to_string(),
    ]);
    out.trim().to_string()
}

/// examples/echo serving TCP and UDP on `[::]:port`.
fn echo6(st: &Stack, port: u16) -> strata_tests::Bg {
    let a = format!("[::]:{port}");
    let mut e = spawn_app(st, "echo", &["--tcp", &a, "--udp", &a]);
    wait_line(&mut e, "serving UDP", Duration::from_secs(15));
    e
}

#[test]
fn curl_over_ipv6_and_ipv4_downloads_a_hundred_megabytes_from_one_dual_stack_httpd() {
    let ns = Netns::new();
    let st = dual_stack(&ns);
    let dir = TempDir::new("tcp6");
    let want = random_file(&dir.path().join("f"), 100_000_000);
    let _httpd = httpd6(&st, dir.path_str());
    curl(&ns, &dir, "-6", &format!("[{STACK_IP6}]"), &want);
    curl(&ns, &dir, "-4", STACK_IP, &want);
    assert!(st.counter("tcpd", "passive_opens6") >= 1);
    assert!(st.counter("tcpd", "out_segs6") > 60_000);
}

/// examples/httpd serving `root` on `[::]:8080`.
fn httpd6(st: &Stack, root: &str) -> strata_tests::Bg {
    let mut httpd = spawn_app(
        st,
        "httpd",
        &["--root", root, "--listen", "[::]:8080", "--timeout", "20"],
    );
    wait_line(&mut httpd, "httpd: serving", Duration::from_secs(15));
    httpd
}

/// The kernel's curl (`-6` or `-4`) downloads `dir`'s file `f` from
/// httpd at `host`; it must arrive whole (`want`: its SHA-256).
fn curl(ns: &Netns, dir: &TempDir, flag: &str, host: &str, want: &str) {
    let out = dir.path().join("got");
    let o = ns.run(&[
        "curl",
        flag,
        "-g",
        "-sS",
        "--max-time",
        "300",
        "-o",
        out.to_str().unwrap(),
        &format!("http://{host}:8080/f"),
    ]);
    assert!(
        o.status.success(),
        "curl {flag}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(sha256_file(&out), want, "curl {flag}: the file differs");
    std::fs::remove_file(&out).unwrap();
}

/// Kernel-side IPv6 server: accepts one connection on [ADDR]:PORT and
/// sends N bytes of the pattern `i % 256` per 64 KiB, then closes.
const SERVER6: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
l = socket.socket(socket.AF_INET6)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port)); l.listen(1)
print("listening", flush=True)
c, _ = l.accept()
chunk = bytes(i % 256 for i in range(65536))
left = n
while left:
    k = min(left, len(chunk))
    c.sendall(chunk[:k])
    left -= k
c.close()
"#;

fn pattern_ok(data: &[u8]) -> bool {
    data.chunks(65536)
        .all(|c| c.iter().enumerate().all(|(i, &b)| b == i as u8))
}

/// A libsock client downloads `n` bytes from a kernel server on `port`.
fn download(ns: &Netns, st: &Stack, port: u16, n: usize) {
    let mut server = ns.spawn(&[
        "python3",
        "-c",
        SERVER6,
        HOST_IP6,
        &port.to_string(),
        &n.to_string(),
    ]);
    wait_line(&mut server, "listening", Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let addr: SocketAddr = format!("[{HOST_IP6}]:{port}").parse().unwrap();
    let mut s = stack.builder().tcp_connect(addr).unwrap();
    assert_eq!(s.peer_addr().unwrap(), addr);
    assert_eq!(s.local_addr().unwrap().ip().to_string(), STACK_IP6);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut data = Vec::new();
    s.read_to_end(&mut data).unwrap();
    assert_eq!(data.len(), n);
    assert!(pattern_ok(&data), "payload corrupted");
}

#[test]
fn downloads_over_ipv6_both_ways_survive_loss_reordering_and_duplication() {
    let ns = Netns::new();
    let st = dual_stack(&ns);
    download(&ns, &st, 8000, 20_000_000);
    st.inject_faults();
    // Into the stack: out-of-order and repeated segments are repaired.
    download(&ns, &st, 8001, 5_000_000);
    assert!(st.counter("netdevd", "ingress_fault_loss") > 0);
    assert!(
        st.counter("tcpd", "ooo_segs") + st.counter("tcpd", "dup_data") > 0,
        "nothing out of order or repeated"
    );
    // Out of it: curl -6 from httpd, repaired by retransmission.
    let dir = TempDir::new("tcp6-faults");
    let want = random_file(&dir.path().join("f"), 20_000_000);
    let _httpd = httpd6(&st, dir.path_str());
    curl(&ns, &dir, "-6", &format!("[{STACK_IP6}]"), &want);
    assert!(st.counter("netdevd", "fault_loss") > 0);
    assert!(
        st.counter("tcpd", "retrans_segs") > 0,
        "nothing retransmitted"
    );
}

#[test]
fn a_dual_stack_listener_takes_both_families_and_a_v6only_one_refuses_ipv4() {
    let ns = Netns::new();
    let st = dual_stack(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let dual = stack.builder().tcp_bind("[::]:9000").unwrap();
    let client = ns.spawn(&["python3", "-c", PROBE, STACK_IP, "9000", "10"]);
    let (dual, mut s, peer) = accept(&st, dual);
    assert_eq!(peer.ip().to_string(), format!("::ffff:{HOST_IP}"));
    assert_eq!(
        s.local_addr().unwrap().ip().to_string(),
        format!("::ffff:{STACK_IP}")
    );
    echo_once(&mut s);
    assert_eq!(
        client.wait_output(Duration::from_secs(20)).unwrap().trim(),
        "ok"
    );
    let client = ns.spawn(&["python3", "-c", PROBE, STACK_IP6, "9000", "10"]);
    let (_dual, mut s, peer) = accept(&st, dual);
    assert_eq!(peer.ip().to_string(), HOST_IP6);
    echo_once(&mut s);
    assert_eq!(
        client.wait_output(Duration::from_secs(20)).unwrap().trim(),
        "ok"
    );
    // IPV6_V6ONLY: an IPv4 SYN to its port finds no listener (a RST).
    let only = stack.builder().only_v6(true).tcp_bind("[::]:9001").unwrap();
    assert_eq!(probe(&ns, STACK_IP, 9001, ANSWERED), "refused");
    let client = ns.spawn(&["python3", "-c", PROBE, STACK_IP6, "9001", "10"]);
    let (_only, mut s, _) = accept(&st, only);
    echo_once(&mut s);
    assert_eq!(
        client.wait_output(Duration::from_secs(20)).unwrap().trim(),
        "ok"
    );
    // An IPv4 listener may share 9001 with the V6ONLY one, not 9000.
    assert!(stack.builder().tcp_bind("0.0.0.0:9001").is_ok());
    let e = stack.builder().tcp_bind("0.0.0.0:9000").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
}

/// Accepts one connection on `l`, or fails the test after 30 s.
fn accept(
    st: &Stack,
    l: libsock::TcpListener,
) -> (libsock::TcpListener, libsock::TcpStream, SocketAddr) {
    let w = strata_tests::bounded("accept", Duration::from_secs(30), move || {
        let r = l.accept();
        (l, r)
    });
    let (l, r) = w.join(st);
    let (s, peer) = r.unwrap();
    (l, s, peer)
}

/// Reads the probe's line and sends it back.
fn echo_once(s: &mut libsock::TcpStream) {
    use std::io::Write;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 6];
    s.read_exact(&mut b).unwrap();
    s.write_all(&b).unwrap();
}

#[test]
fn a_closed_port_over_ipv6_is_refused_at_once_on_both_sides() {
    let ns = Netns::new();
    let st = dual_stack(&ns);
    assert_eq!(probe(&ns, STACK_IP6, 9999, ANSWERED), "refused");
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let addr: SocketAddr = format!("[{HOST_IP6}]:9999").parse().unwrap();
    let e = stack.builder().tcp_connect(addr).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
}

#[test]
fn ip6tables_style_rules_reject_drop_and_a_stateful_policy() {
    let ns = Netns::new();
    let st = dual_stack(&ns);
    let _e: Vec<_> = [7001, 7002, 7003].map(|p| echo6(&st, p)).into();
    assert_eq!(
        probe(&ns, STACK_IP6, 7001, ANSWERED),
        "ok",
        "before any rule"
    );
    st.filter("-6 add INPUT -p tcp --dport 7001 -j DROP");
    st.filter("-6 add INPUT -p tcp --dport 7002 -j REJECT --reject-with tcp-reset");
    st.filter("-6 add INPUT -p udp --dport 7003 -j REJECT");
    assert_eq!(probe(&ns, STACK_IP6, 7001, DROPPED), "timeout", "DROP");
    assert_eq!(
        probe(&ns, STACK_IP6, 7002, ANSWERED),
        "refused",
        "tcp-reset"
    );
    // The IPv4 table is another: port 7001 over IPv4 still answers.
    assert_eq!(probe(&ns, STACK_IP, 7001, ANSWERED), "ok");
    let out = ns.run_ok(&[
        "python3",
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
         s.settimeout(10)\ns.connect((sys.argv[1],7003))\ns.send(b'x')\n\
         try:\n    s.recv(10)\n    print('answer')\nexcept ConnectionRefusedError:\n    print('refused')\n\
         except socket.timeout:\n    print('timeout')",
        STACK_IP6,
    ]);
    assert_eq!(out.trim(), "refused", "REJECT: ICMPv6 port unreachable");
    assert!(st.counter("filterd", "rejected") >= 2);
    // A stateful policy: nothing comes in but replies and neighbour
    // discovery; what the stack opens still works.
    st.filter("-6 flush INPUT");
    st.filter("-6 add INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT");
    st.filter("-6 add INPUT -p icmpv6 -j ACCEPT");
    st.filter("-6 policy INPUT DROP");
    assert_eq!(
        probe(&ns, STACK_IP6, 7002, DROPPED),
        "timeout",
        "new: dropped"
    );
    download(&ns, &st, 8002, 2_000_000);
    // Neighbour discovery goes on: the kernel's entry for the stack is
    // refreshed through the policy.
    ns.run_ok(&["ip", "-6", "neigh", "flush", "dev", "strata0"]);
    download(&ns, &st, 8003, 1_000_000);
}

#[test]
fn the_ipv6_nat_table_redirects_a_port_and_conntrack_shows_the_flow() {
    let ns = Netns::new();
    let st = dual_stack(&ns);
    let _e = echo6(&st, 7001);
    assert_eq!(
        probe(&ns, STACK_IP6, 8080, ANSWERED),
        "refused",
        "nothing on 8080"
    );
    st.filter("-6 -t nat -A PREROUTING -p tcp --dport 8080 -j REDIRECT --to-ports 7001");
    assert_eq!(
        probe(&ns, STACK_IP6, 8080, ANSWERED),
        "ok",
        "8080 reaches 7001"
    );
    // IPv4's nat table is another: 8080 over IPv4 is still refused.
    assert_eq!(probe(&ns, STACK_IP, 8080, ANSWERED), "refused");
    let o = st.strata(&["conntrack", "list"]);
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(
        list.lines()
            .any(|l| l.contains(HOST_IP6) && l.contains("dport=8080") && l.contains("sport=7001")),
        "{list}"
    );
}
