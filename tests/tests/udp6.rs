//! UDP over IPv6 through the whole stack, against the kernel's own UDP
//! across a dual-stack TAP: a `[::]` socket serving both families,
//! fragments both ways, and closed ports refused with ICMPv6.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;
use strata_tests::{
    spawn_app, tap_config6, udp_echo_client, wait_line, Netns, Stack, HOST_IP6, STACK_IP, STACK_IP6,
};

/// The stack up on a dual-stack TAP with its global IPv6 address usable.
fn dual_stack(ns: &Netns) -> Stack {
    let st = Stack::up_config(ns, &tap_config6(""));
    st.wait_dad(STACK_IP6);
    st
}

#[test]
fn one_dual_stack_socket_echoes_ten_thousand_ipv6_datagrams_and_ipv4_ones_too() {
    let ns = Netns::new();
    let st = dual_stack(&ns);
    let mut echo = spawn_app(&st, "echo", &["--udp", "[::]:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    // 10 s per echo: a bound for a hang; an echo ends the wait at once.
    let r = udp_echo_client(&ns, STACK_IP6, 7, 10_000, 10.0);
    assert_eq!(
        (r.sent, r.bad, r.lost),
        (10_000, 0, 0),
        "corrupted or lost echoes"
    );
    // One copy each way at the socket boundary.
    assert_eq!(st.counter("sockd", "rx_copy_bytes"), r.bytes);
    assert_eq!(st.counter("sockd", "tx_copy_bytes"), r.bytes);
    assert!(st.counter("udpd", "in_datagrams6") >= 10_000);
    // Datagrams past the 1500-byte MTU came and went in fragments.
    assert!(st.counter("ipd", "frag6_out_packets") > 0);
    assert!(st.counter("ipd", "frag_reassembled") > 0);
    // The same `[::]:7` socket takes IPv4, as Linux's dual-stack one does.
    let r = udp_echo_client(&ns, STACK_IP, 7, 1000, 10.0);
    assert_eq!((r.sent, r.bad, r.lost), (1000, 0, 0));
}

/// A kernel-side UDP echo server on `[HOST_IP6]:9000`.
const SERVER6: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[1], 9000))
print("listening", flush=True)
while True:
    d, a = s.recvfrom(70000)
    s.sendto(d, a)
"#;

fn host6(port: u16) -> SocketAddr {
    format!("[{HOST_IP6}]:{port}").parse().unwrap()
}

#[test]
fn a_libsock_client_exchanges_datagrams_over_ipv6_with_a_kernel_server() {
    let ns = Netns::new();
    let st = dual_stack(&ns);
    let mut server = ns.spawn(&["python3", "-c", SERVER6, HOST_IP6]);
    wait_line(&mut server, "listening", Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let sock = stack.builder().udp_bind("[::]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(sock.local_addr().unwrap().ip().to_string(), "::");
    let mut buf = vec![0u8; 70000];
    // Around the largest unfragmented payload (1500 - 40 - 8), and
    // fragments up to the largest datagram.
    for (i, size) in [1usize, 100, 1452, 1453, 4000, 20000, 65507]
        .iter()
        .enumerate()
    {
        let payload: Vec<u8> = (0..*size).map(|k| (k * 31 + i) as u8).collect();
        sock.send_to(&payload, host6(9000)).unwrap();
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(from, host6(9000));
        assert_eq!(&buf[..n], &payload[..], "size {size}");
    }
    sock.connect(host6(9000)).unwrap();
    assert_eq!(sock.peer_addr().unwrap(), host6(9000));
    sock.send(b"connected").unwrap();
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"connected");
}

#[test]
fn a_closed_port_over_ipv6_is_refused_on_both_sides() {
    let ns = Netns::new();
    let st = dual_stack(&ns);
    // Kernel → strata: ICMPv6 port unreachable, seen by a connected socket.
    let out = ns.run_ok(&[
        "python3",
        "-c",
        &format!(
            "import socket\ns=socket.socket(socket.AF_INET6,2)\ns.settimeout(10)\n\
             s.connect(('{STACK_IP6}',9999))\ns.send(b'x')\n\
             try:\n    s.recv(10)\n    print('answered')\nexcept ConnectionRefusedError:\n    print('refused')\n\
             except socket.timeout:\n    print('timeout')"
        ),
    ]);
    assert_eq!(out.trim(), "refused");
    assert!(st.counter("udpd", "no_port") >= 1);
    assert!(st.counter("ipd", "icmp6_out_errors") >= 1);
    // strata → kernel: the kernel's port unreachable reaches the connected
    // libsock socket as ConnectionRefused, once.
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let sock = stack.builder().udp_bind("[::]:0").unwrap();
    sock.connect(host6(9999)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.send(b"anyone?").unwrap();
    let mut buf = [0u8; 16];
    let e = sock.recv(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    let e = sock.recv(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
}

/// A kernel-side UDP client that sends one datagram to HOST:PORT from a
/// socket bound to port 6000 and prints what came back: the reply,
/// `refused` or `timeout`.
const ONE: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("::" if ":" in host else "0.0.0.0", 6000))
s.settimeout(10)
s.connect((host, port))
s.send(b"ping")
try:
    print(s.recv(100).decode())
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"#;

#[test]
fn a_dual_stack_socket_sees_ipv4_peers_as_mapped_and_a_v6only_one_refuses_ipv4() {
    let ns = Netns::new();
    let st = dual_stack(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    // Dual-stack (the default): IPv4 comes in, from ::ffff:10.77.0.1.
    let dual = stack.builder().udp_bind("[::]:7000").unwrap();
    dual.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let client = ns.spawn(&["python3", "-c", ONE, STACK_IP, "7000"]);
    let mut buf = [0u8; 100];
    let (n, from) = dual.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    let mapped: SocketAddr = format!("[::ffff:{}]:6000", strata_tests::HOST_IP)
        .parse()
        .unwrap();
    assert_eq!(from, mapped);
    dual.send_to(b"pong4", from).unwrap();
    assert_eq!(
        client.wait_output(Duration::from_secs(20)).unwrap().trim(),
        "pong4"
    );
    // IPV6_V6ONLY: IPv6 only; an IPv4 datagram to its port finds no
    // socket and is refused.
    let only = stack.builder().only_v6(true).udp_bind("[::]:7001").unwrap();
    assert!(only.only_v6().unwrap());
    only.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let out = ns.run_ok(&["python3", "-c", ONE, STACK_IP, "7001"]);
    assert_eq!(out.trim(), "refused");
    let client = ns.spawn(&["python3", "-c", ONE, STACK_IP6, "7001"]);
    let (n, from) = only.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from, host6(6000));
    only.send_to(b"pong6", from).unwrap();
    assert_eq!(
        client.wait_output(Duration::from_secs(20)).unwrap().trim(),
        "pong6"
    );
    // An IPv4 socket may share port 7001 with the V6ONLY one, not 7000
    // with the dual-stack one.
    assert!(stack.builder().udp_bind("0.0.0.0:7001").is_ok());
    let e = stack.builder().udp_bind("0.0.0.0:7000").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
}
