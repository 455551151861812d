//! The loopback network: a libsock application reaches another on the
//! same stack at 127.0.0.1 (or any 127/8 address), over TCP and UDP, as
//! on Linux's `lo`; nothing of it reaches the wire, and the kernel side
//! cannot reach the stack's loopback addresses. The same over `::1`.

use std::io::{Read, Write};
use std::time::Duration;
use strata_tests::{pattern, ping, Netns, Stack};

/// A TCP server bound to `bind` and a client connecting to `to` exchange
/// 4 MB both ways on `stack`; both ends see `lo` (the loopback address
/// the client sends from) as the other's address.
fn tcp_echo_over(stack: &libsock::Stack, bind: &str, to: &str, lo: &str) {
    let l = stack.builder().tcp_bind(bind).unwrap();
    let data = pattern(4_000_000, 7501);
    let server = std::thread::spawn(move || {
        let (mut s, peer) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&got).unwrap();
        (peer, got.len())
    });
    let mut c = stack.builder().tcp_connect(to).unwrap();
    assert_eq!(c.local_addr().unwrap().ip().to_string(), lo);
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(&data).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    let (peer, n) = server.join().unwrap();
    assert_eq!(n, data.len());
    assert!(back == data, "the echo over {lo} differs");
    assert_eq!(peer.ip().to_string(), lo);
}

/// Packets the stack's first interface has sent.
fn tx_packets(st: &Stack) -> u64 {
    st.json("stats")["interfaces"][0]["counters"]["tx_packets"]
        .as_u64()
        .unwrap()
}

#[test]
fn applications_on_one_stack_talk_over_127_0_0_1() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let tx_before = tx_packets(&st);

    // TCP: a server on the wildcard and one on 127.0.0.1, a client each.
    tcp_echo_over(&stack, "0.0.0.0:7501", "127.0.0.1:7501", "127.0.0.1");
    tcp_echo_over(&stack, "127.0.0.1:7502", "127.0.0.1:7502", "127.0.0.1");

    // UDP to another loopback address; the answer comes from it.
    let a = stack.builder().udp_bind("127.0.0.5:7503").unwrap();
    let b = stack.builder().udp_bind("0.0.0.0:0").unwrap();
    b.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    b.send_to(b"over lo", "127.0.0.5:7503").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = a.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over lo");
    assert_eq!(from.ip().to_string(), "127.0.0.1");
    a.send_to(b"and back", from).unwrap();
    let (n, from) = b.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"and back");
    assert_eq!(from.to_string(), "127.0.0.5:7503");
    // Nobody on that port: refused, as on Linux.
    let c = stack.builder().udp_bind("0.0.0.0:0").unwrap();
    c.connect("127.0.0.1:7599").unwrap();
    c.send(b"anyone?").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let e = c.recv(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

    // None of it went out on the wire.
    let tx_after = tx_packets(&st);
    assert_eq!(tx_after, tx_before, "loopback traffic stays in the stack");
    assert!(st.counter("ipd", "loopback") > 0);
    // The kernel side cannot reach the stack's loopback network.
    ns.run_ok(&["ip", "route", "add", "127.77.0.0/16", "via", "10.77.0.2"]);
    assert_eq!(ping(&ns, &["-c", "1", "-W", "1", "127.77.0.1"]).received, 0);
}

#[test]
fn applications_on_one_stack_talk_over_ipv6_loopback() {
    let ns = Netns::new();
    let st = Stack::up_config(&ns, &strata_tests::tap_config6(""));
    st.wait_dad(strata_tests::STACK_IP6);
    // The stack's own start-up traffic (detection, reports, three router
    // solicitations four seconds apart) over before the wire is watched.
    st.wait_for("the router solicitations", Duration::from_secs(30), || {
        st.counter("ipd", "nd_tx_router_solicits") >= 3
    });
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let tx_before = tx_packets(&st);
    // TCP: a server on the IPv6 wildcard and one on ::1.
    tcp_echo_over(&stack, "[::]:7601", "[::1]:7601", "::1");
    tcp_echo_over(&stack, "[::1]:7602", "[::1]:7602", "::1");
    // UDP, and a closed port refused over ::1 too.
    let a = stack.builder().udp_bind("[::1]:7603").unwrap();
    let b = stack.builder().udp_bind("[::]:0").unwrap();
    a.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    b.send_to(b"over ::1", "[::1]:7603").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = a.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over ::1");
    assert_eq!(from.ip().to_string(), "::1");
    a.send_to(b"and back", from).unwrap();
    let (n, from) = b.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"and back");
    assert_eq!(from.to_string(), "[::1]:7603");
    let c = stack.builder().udp_bind("[::]:0").unwrap();
    c.connect("[::1]:7699").unwrap();
    c.send(b"anyone?").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let e = c.recv(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    // None of it went out on the wire, and the kernel cannot reach ::1.
    let tx_after = tx_packets(&st);
    assert_eq!(tx_after, tx_before, "loopback traffic stays in the stack");
}
