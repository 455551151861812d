//! The AF_XDP driver: the stack drives one end of a veth pair through an
//! AF_XDP socket (with the XDP program the launcher attaches), and the
//! kernel of another namespace is at the other end.

use std::sync::Arc;
use std::time::Duration;
use strata_tests::{connect_and_echo, kernel_echo_server, pattern, ping, Netns, Stack, HOST_IP};

/// A veth pair of one queue each way (the stack serves queue 0):
/// `xs0` in `stack`'s namespace (up, no address: the stack drives it),
/// `xk0` in `peer`'s with the kernel side's address. Both go with their
/// namespaces.
fn veth(stack: &Netns, peer: &Netns) {
    stack.run_ok(&[
        "ip",
        "link",
        "add",
        "xs0",
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "type",
        "veth",
        "peer",
        "name",
        "xk0",
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "netns",
        &peer.name,
    ]);
    stack.run_ok(&["ip", "link", "set", "xs0", "up"]);
    peer.run_ok(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", "xk0"]);
    // The kernel leaves the transport checksum of what it sends over a
    // veth to be completed, and XDP hands the frame over as it is: the
    // kernel side computes its checksums (a NIC's frames come complete).
    let o = peer
        .cmd("ethtool")
        .args(["-K", "xk0", "tx", "off"])
        .output()
        .expect("ethtool is missing (apt-get install ethtool)");
    assert!(o.status.success(), "ethtool -K xk0 tx off: {o:?}");
    peer.run_ok(&["ip", "link", "set", "xk0", "up"]);
}

const CONFIG: &str = "[[interface]]\nname = \"x0\"\ndriver = \"af_xdp\"\ndevice = \"xs0\"\n\
                      mac = \"02:53:54:00:00:07\"\naddresses = [\"10.77.0.2/24\"]\n";

/// Whether an XDP program is attached to `xs0` (`ip link` says `xdp`).
fn xdp_attached(ns: &Netns) -> bool {
    ns.run_ok(&["ip", "-d", "link", "show", "xs0"])
        .contains("xdp")
}

/// Whether this kernel makes AF_XDP sockets (CONFIG_XDP_SOCKETS).
fn af_xdp_available() -> bool {
    // SAFETY: socket(2) with constants; the fd, if any, is closed here.
    let fd = unsafe { libc::socket(44, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

#[test]
fn the_kernel_reaches_the_stack_through_af_xdp_even_as_driverd_dies() {
    if !af_xdp_available() {
        eprintln!("skipped: this kernel makes no AF_XDP sockets (CONFIG_XDP_SOCKETS)");
        return;
    }
    let (ns, peer) = (Netns::new(), Netns::new());
    veth(&ns, &peer);
    let mut st = Stack::up_config(&ns, CONFIG);
    assert!(xdp_attached(&ns), "no XDP program on xs0");
    let device = st.json("status")["interfaces"][0]["device"].clone();
    assert!(
        device
            .as_str()
            .is_some_and(|d| d.starts_with("af_xdp, ") && d.contains(" mode")),
        "{device}"
    );
    let r = ping(&peer, &["-c", "3", "-i", "0.2", "10.77.0.2"]);
    assert_eq!(r.received, 3, "{r:?}");
    // 200 MB each way (to a kernel echo server), driverd killed during.
    let port = 7301;
    let server = kernel_echo_server(&peer, port, 1, Duration::from_secs(15));
    let len = 200_000_000;
    let data = Arc::new(pattern(len, 7301));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let echo = {
        let data = data.clone();
        let b = stack.builder();
        std::thread::spawn(move || connect_and_echo(b, port, data))
    };
    st.wait_for("bytes through driverd", Duration::from_secs(60), || {
        st.counter("driverd0", "rx_frames") > 20_000
    });
    let before = st.kill_layer("driverd0");
    st.wait_restarted("driverd0", before);
    let back = echo.join().expect("echo thread").expect("echo");
    assert_eq!(back.len(), len);
    assert!(back == *data, "the echo differs from what was sent");
    assert!(server.wait_output(Duration::from_secs(30)).is_some());
    assert!(st.stop(), "strata stopped cleanly");
    assert!(!xdp_attached(&ns), "the XDP program outlived the stack");
}
