//! Two strata instances wired back to back with the in-memory pair
//! driver: no kernel stack in the path at all.

use std::time::Duration;
use strata_tests::{pair_config, spawn_app, wait_line, Netns, Stack};

fn side(side: &str, ip: &str, mac: &str) -> String {
    pair_config("l", side, ip, mac)
}

#[test]
fn two_instances_exchange_udp_over_a_pair_link() {
    // Abstract Unix socket names are per network namespace: one of our
    // own keeps the link private.
    let ns = Netns::new();
    let a = Stack::up_config(&ns, &side("a", "10.88.0.1", "02:00:00:00:88:01"));
    let b = Stack::up_config(&ns, &side("b", "10.88.0.2", "02:00:00:00:88:02"));
    let mut echo = spawn_app(&b, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));

    let stack = libsock::Stack::connect(&a.instance).unwrap();
    let sock = stack.builder().udp_bind("0.0.0.0:0").unwrap();
    sock.connect("10.88.0.2:7").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 70000];
    for size in [1usize, 1000, 1472, 3000, 30000] {
        let payload: Vec<u8> = (0..size).map(|k| (k * 7) as u8).collect();
        sock.send(&payload).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &payload[..], "size {size}");
    }
    // ARP resolved both ways over the link, and frames crossed it.
    assert!(a.counter("ipd", "arp_rx_replies") >= 1);
    assert!(b.counter("ipd", "arp_tx_replies") >= 1);
    assert!(b.counter("driverd0", "rx_frames") >= 5);
}
