//! The kernel resolves the stack with ARP and pings it through a TAP
//! device, every layer in its own process.

use strata_tests::{ping_all, Netns, Stack, STACK_IP};

#[test]
fn two_hundred_fast_pings_are_answered_with_intact_payloads() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // A fixed pattern lets ping check every reply's payload byte by byte.
    let r = ping_all(
        &ns,
        &["-c", "200", "-i", "0.01", "-W", "1", "-p", "a5c3", STACK_IP],
    );
    assert!(
        r.received >= 199,
        "only {} of {} answered:\n{}",
        r.received,
        r.sent,
        r.text
    );
    assert!(!r.corrupted, "corrupted reply payload:\n{}", r.text);
    let rx = st.counter("ipd", "icmp_in_echo_requests");
    assert!(rx >= 200, "ipd counted {rx} echo requests");
}

#[test]
fn large_pings_are_fragmented_and_reassembled_both_ways() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    for size in ["1472", "4000", "20000"] {
        let r = ping_all(
            &ns,
            &[
                "-c", "3", "-i", "0.2", "-W", "2", "-s", size, "-p", "5a", STACK_IP,
            ],
        );
        assert_eq!(r.received, 3, "size {size}:\n{}", r.text);
        assert!(!r.corrupted, "size {size}: corrupted payload:\n{}", r.text);
    }
    // The two larger sizes arrive in fragments and leave in fragments.
    assert!(st.counter("ipd", "frag_reassembled") >= 6);
    assert!(st.counter("ipd", "frag_out_created") >= 6 * 3);
}

#[test]
fn arping_is_answered() {
    let ns = Netns::new();
    let _st = Stack::up(&ns);
    let o = ns.run(&["arping", "-c", "3", "-w", "5", "-I", "strata0", STACK_IP]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "arping failed:\n{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("02:53:54:00:00:01")
            || text.contains("02:53:54:00:00:01".to_uppercase().as_str()),
        "reply does not carry the stack's MAC:\n{text}"
    );
}

#[test]
fn the_stack_announces_itself_with_gratuitous_arp() {
    let ns = Netns::new();
    // Let the kernel create neighbour entries from unsolicited ARP, so the
    // announcement shows up in its table before any traffic.
    ns.run_ok(&["sysctl", "-qw", "net.ipv4.conf.default.arp_accept=1"]);
    ns.run_ok(&["sysctl", "-qw", "net.ipv4.conf.all.arp_accept=1"]);
    let st = Stack::up(&ns);
    st.wait_for(
        "kernel learns the stack's MAC",
        std::time::Duration::from_secs(10),
        || {
            let neigh = ns.run_ok(&["ip", "neigh", "show", "dev", "strata0"]);
            neigh.contains(STACK_IP) && neigh.contains("02:53:54:00:00:01")
        },
    );
    assert_eq!(
        st.counter("ipd", "icmp_in_echo_requests"),
        0,
        "no traffic was needed"
    );
}
