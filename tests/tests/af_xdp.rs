//! The AF_XDP driver: the stack drives one end of a veth pair through an
//! AF_XDP socket (with the XDP program the launcher attaches), and the
//! kernel of another namespace is at the other end.

use std::sync::Arc;
use std::time::Duration;
use strata_tests::{
    af_xdp_available, af_xdp_config, af_xdp_veth, connect_and_echo, kernel_echo_server, pattern,
    ping, Netns, Stack,
};

/// Whether an XDP program is attached to `xs0` (`ip link` says `xdp`).
fn xdp_attached(ns: &Netns) -> bool {
    ns.run_ok(&["ip", "-d", "link", "show", "xs0"])
        .contains("xdp")
}

#[test]
fn the_kernel_reaches_the_stack_through_af_xdp_even_as_driverd_dies() {
    if !af_xdp_available() {
        eprintln!("skipped: this kernel makes no AF_XDP sockets (CONFIG_XDP_SOCKETS)");
        return;
    }
    let (ns, peer) = (Netns::new(), Netns::new());
    af_xdp_veth(&ns, &peer);
    let mut st = Stack::up_config(&ns, &af_xdp_config(""));
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
    // The socket's receive buffers are the pool's, and at rest they are
    // all driverd has out of the pool.
    let at_rest = || {
        let by_driverd = st.json("status")["pool"]["in_use_by_owner"]["driverd0"].as_u64();
        by_driverd == Some(st.counter("driverd0", "dev_rx_buffers"))
    };
    st.wait_for("the pool at rest", Duration::from_secs(30), at_rest);
    assert!(st.counter("driverd0", "dev_rx_buffers") > 0);
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
    // Frames came in uncopied, and what the dead driverd and its socket
    // held went back to the pool: the new socket holds as many.
    assert_eq!(st.counter("driverd0", "dev_bad_completions"), 0);
    st.wait_for("the pool back at rest", Duration::from_secs(30), at_rest);
    assert!(st.stop(), "strata stopped cleanly");
    assert!(!xdp_attached(&ns), "the XDP program outlived the stack");
}
