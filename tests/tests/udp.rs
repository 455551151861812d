//! UDP through the whole stack: applications on libsock exchange
//! datagrams with the Linux kernel's own UDP on the far side of the TAP.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use strata_tests::{
    parse_udp_report, spawn_app, udp_echo_client, wait_line, Netns, Stack, HOST_IP, STACK_IP,
    UDP_ECHO_CLIENT,
};

fn start_echo(st: &Stack, port: u16) -> strata_tests::Bg {
    let mut echo = spawn_app(st, "echo", &["--udp", &format!("0.0.0.0:{port}")]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    echo
}

#[test]
fn ten_thousand_kernel_datagrams_are_echoed_unchanged_with_one_copy_each_way() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let _echo = start_echo(&st, 7);
    // 10 s per echo: a bound for a hang; an echo ends the wait at once.
    let r = udp_echo_client(&ns, STACK_IP, 7, 10_000, 10.0);
    assert_eq!(r.sent, 10_000);
    assert_eq!(r.bad, 0, "corrupted echoes");
    assert_eq!(r.lost, 0, "lost echoes");
    // Exactly one copy each way at the socket boundary: the bytes sockd
    // copied in each direction are the bytes the kernel sent.
    assert_eq!(st.counter("sockd", "rx_copy_bytes"), r.bytes);
    assert_eq!(st.counter("sockd", "tx_copy_bytes"), r.bytes);
    assert_eq!(st.counter("sockd", "rx_datagrams"), 10_000);
    assert_eq!(st.counter("sockd", "rx_drop_app_slow"), 0);
    assert_eq!(st.counter("udpd", "sock_ring_full"), 0);
}

/// A kernel-side UDP echo server on HOST_IP:9000, until it is killed
/// (when the test's handle drops).
const SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[1], 9000))
print("listening", flush=True)
while True:
    d, a = s.recvfrom(70000)
    s.sendto(d, a)
"#;

fn host(port: u16) -> SocketAddr {
    format!("{HOST_IP}:{port}").parse().unwrap()
}

#[test]
fn a_libsock_client_exchanges_datagrams_with_a_kernel_echo_server() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut server = ns.spawn(&["python3", "-c", SERVER, HOST_IP]);
    wait_line(&mut server, "listening", Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let sock = stack.builder().udp_bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    assert_eq!(local.ip().to_string(), "0.0.0.0");
    let mut buf = vec![0u8; 70000];
    for (i, size) in [1usize, 100, 1472, 1473, 4000, 20000, 65507]
        .iter()
        .enumerate()
    {
        let payload: Vec<u8> = (0..*size).map(|k| (k * 31 + i) as u8).collect();
        sock.send_to(&payload, host(9000)).unwrap();
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(from, host(9000));
        assert_eq!(&buf[..n], &payload[..], "size {size}");
    }
    // The implicit bind gave the socket a port from the ephemeral range.
    let port = sock.local_addr().unwrap().port();
    assert!((32768..=60999).contains(&port), "port {port}");
    // Connected: send/recv, and peer_addr.
    sock.connect(host(9000)).unwrap();
    assert_eq!(sock.peer_addr().unwrap(), host(9000));
    sock.send(b"connected").unwrap();
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"connected");
    // Too big for UDP.
    let e = sock.send(&vec![0u8; 65508]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
}

#[test]
fn closed_ports_are_refused_on_both_sides() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Kernel → strata: ICMP port unreachable, seen by a connected socket.
    let out = ns.run_ok(&[
        "python3",
        "-c",
        "import socket\ns=socket.socket(2,2)\ns.settimeout(10)\ns.connect(('10.77.0.2',9999))\ns.send(b'x')\n\
         try:\n    s.recv(10)\n    print('answered')\nexcept ConnectionRefusedError:\n    print('refused')\n\
         except socket.timeout:\n    print('timeout')",
    ]);
    assert_eq!(out.trim(), "refused");
    assert!(st.counter("udpd", "no_port") >= 1);
    assert!(st.counter("ipd", "icmp_out_dest_unreach") >= 1);
    // strata → kernel: the kernel answers with port unreachable, and the
    // connected libsock socket reports ConnectionRefused on its next call.
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let sock = stack.builder().udp_bind("0.0.0.0:0").unwrap();
    sock.connect(host(9999)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.send(b"anyone?").unwrap();
    let mut buf = [0u8; 16];
    let e = sock.recv(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    // Reported once, as on Linux.
    let e = sock.recv(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
}

#[test]
fn sockets_are_isolated_and_ports_exclusive() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let a = stack.builder().udp_bind("0.0.0.0:5001").unwrap();
    let b = stack.builder().udp_bind("0.0.0.0:5002").unwrap();
    let e = stack.builder().udp_bind("0.0.0.0:5001").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddrInUse);
    let e = stack
        .builder()
        .udp_bind(format!("{STACK_IP}:5002"))
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::AddrInUse,
        "specific address overlaps ANY"
    );
    let e = stack.builder().udp_bind("10.99.0.1:5003").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddrNotAvailable);
    // Resolve ARP first: the kernel may reorder what it queued while the
    // neighbour was unresolved; after that, order is the stack's own.
    let r = strata_tests::ping(&ns, &["-c", "1", "-W", "10", STACK_IP]);
    assert_eq!(r.received, 1, "{}", r.text);
    ns.run_ok(&[
        "python3",
        "-c",
        "import socket\ns=socket.socket(2,2)\nfor i in range(20):\n    s.sendto(b'to-A %d' % i, ('10.77.0.2',5001))\n    s.sendto(b'to-B %d' % i, ('10.77.0.2',5002))",
    ]);
    let mut buf = [0u8; 64];
    for (sock, tag) in [(&a, "to-A"), (&b, "to-B")] {
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        for i in 0..20 {
            let n = sock.recv(&mut buf).unwrap();
            assert_eq!(
                std::str::from_utf8(&buf[..n]).unwrap(),
                format!("{tag} {i}")
            );
        }
        sock.set_nonblocking(true).unwrap();
        assert_eq!(
            sock.recv(&mut buf).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
    }
    // Both with SO_REUSEADDR may share a port.
    let r1 = stack
        .builder()
        .reuse_address(true)
        .udp_bind("0.0.0.0:5010")
        .unwrap();
    let r2 = stack
        .builder()
        .reuse_address(true)
        .udp_bind("0.0.0.0:5010")
        .unwrap();
    assert_eq!(r1.local_addr().unwrap(), r2.local_addr().unwrap());
}

#[test]
fn an_application_that_exits_without_closing_releases_its_port() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = start_echo(&st, 7100);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    assert_eq!(
        stack.builder().udp_bind("0.0.0.0:7100").unwrap_err().kind(),
        ErrorKind::AddrInUse
    );
    // SIGKILL: no close, no goodbye.
    echo.child.kill().unwrap();
    echo.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stack.builder().udp_bind("0.0.0.0:7100") {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("port not released: {e}"),
        }
    }
    let ss = st.json("ss");
    assert!(
        ss["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["process"] != "echo"),
        "{ss}"
    );
}

#[test]
fn killing_udpd_and_sockd_keeps_an_echo_exchange_going() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = start_echo(&st, 7);
    // The exchange runs until told to stop; each layer is killed once 200
    // more datagrams went back and forth, and the exchange must go on for
    // another 200 after the last restart. A datagram is given 1 s: one
    // lost while a layer restarts costs one loss, however long the restart.
    let stop = std::env::temp_dir().join(strata_tests::unique("strata-udp-stop"));
    let mut client = ns.spawn(&[
        "python3",
        "-c",
        UDP_ECHO_CLIENT,
        STACK_IP,
        "7",
        "0",
        "1.0",
        stop.to_str().unwrap(),
    ]);
    let out = client.collect_lines();
    let exchanged = || {
        out.snapshot()
            .iter()
            .filter_map(|l| l.strip_prefix("exchanged ")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    for layer in ["udpd", "sockd", ""] {
        let from = exchanged();
        st.wait_for(
            "200 more datagrams exchanged",
            Duration::from_secs(60),
            || exchanged() >= from + 200,
        );
        if !layer.is_empty() {
            let before = st.kill_layer(layer);
            st.wait_restarted(layer, before);
        }
    }
    std::fs::write(&stop, b"").unwrap();
    assert!(
        client.wait_output(Duration::from_secs(30)).is_some(),
        "client ended"
    );
    let report = parse_udp_report(&out.wait_eof(Duration::from_secs(10)));
    let _ = std::fs::remove_file(&stop);
    assert_eq!(st.restarts("udpd"), 1);
    assert_eq!(st.restarts("sockd"), 1);
    assert_eq!(report.bad, 0, "corrupted echoes");
    // Datagrams in flight may be lost at each kill; sockets and bindings
    // may not: the exchange continues to the end.
    assert!(report.lost <= 10, "lost {} of {}", report.lost, report.sent);
    assert!(report.sent >= 600, "only {} exchanged", report.sent);
    assert!(echo.alive(), "the application saw an error and exited");
    let r = udp_echo_client(&ns, STACK_IP, 7, 200, 10.0);
    assert_eq!((r.bad, r.lost), (0, 0));
    assert_eq!(st.counter("sockd", "reattached"), 1);
}

/// A bind and a connect that udpd never answered, because it died with
/// them in its ring, are sent again to its successor: the application
/// sees a pause, not ETIMEDOUT. (udpd is stopped first, so the requests
/// are surely in its ring when it is killed; the heartbeat timeout is
/// raised so the launcher does not kill the stopped udpd itself.)
#[test]
fn a_bind_and_a_connect_lost_with_a_dying_udpd_are_sent_again() {
    let ns = Netns::new();
    let st = Stack::up_with(&ns, "\n[limits]\nheartbeat_timeout_ms = 20000\n");
    let mut server = ns.spawn(&["python3", "-c", SERVER, HOST_IP]);
    wait_line(&mut server, "listening", Duration::from_secs(15));
    let instance = st.instance.clone();
    let queued = st.ring_len("sockd", "udpd");
    let udpd = st.layer_pid("udpd");
    // SAFETY: kill takes no pointers; the pid is a layer of the stack
    // this test started.
    let stopped = unsafe { libc::kill(udpd, libc::SIGSTOP) };
    assert_eq!(stopped, 0);
    let app = std::thread::spawn(move || {
        let stack = libsock::Stack::connect(&instance).unwrap();
        let sock = stack.builder().udp_bind("0.0.0.0:0")?;
        sock.connect(host(9000))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        sock.send(b"after the restart")?;
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf)?;
        Ok::<Vec<u8>, std::io::Error>(buf[..n].to_vec())
    });
    st.wait_for("the bind in udpd's ring", Duration::from_secs(20), || {
        st.ring_len("sockd", "udpd") > queued
    });
    let before = st.kill_layer("udpd");
    st.wait_restarted("udpd", before);
    let got = app.join().unwrap().expect("bind, connect and echo");
    assert_eq!(got, b"after the restart");
    assert_eq!(st.counter("sockd", "ctl_timeouts"), 0);
}
