//! `strata neigh`: the neighbour cache as `ip neigh` shows it, with the
//! kernel side's real MAC; `flush` empties it and makes the stack ARP
//! again; the cache survives ipd's restart.

use std::time::Duration;
use strata_tests::{ping, Netns, Stack, HOST_IP, STACK_IP};

/// `strata neigh show --json` entries.
fn entries(st: &Stack) -> Vec<serde_json::Value> {
    let o = st.strata(&["neigh", "show", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["entries"].as_array().unwrap().clone()
}

#[test]
fn neigh_shows_the_kernel_side_and_flush_makes_the_stack_arp_again() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let link = ns.run_ok(&["ip", "link", "show", "strata0"]);
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("the kernel side's MAC")
        .to_string();
    assert_eq!(ping(&ns, &["-c", "1", STACK_IP]).received, 1);
    let known = |st: &Stack| {
        entries(st)
            .iter()
            .any(|e| e["ip"] == HOST_IP && e["lladdr"] == mac.as_str() && e["dev"] == "strata0")
    };
    // The cache is saved when it changes (after the packet that taught it).
    st.wait_for(
        "the kernel side in the cache",
        Duration::from_secs(10),
        || known(&st),
    );
    let text = String::from_utf8(st.strata(&["neigh"]).stdout).unwrap();
    assert!(
        text.contains(&format!("{HOST_IP} dev strata0 lladdr {mac}")),
        "{text}"
    );

    // It survives ipd's restart.
    let before = st.kill_layer("ipd");
    st.wait_restarted("ipd", before);
    assert!(known(&st), "restored: {:?}", entries(&st));

    let asked = st.counter("ipd", "arp_tx_requests");
    let o = st.strata(&["neigh", "flush"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(entries(&st).is_empty(), "flushed: {:?}", entries(&st));
    // The next answer needs the kernel side's MAC again: ipd asks.
    assert_eq!(ping(&ns, &["-c", "1", STACK_IP]).received, 1);
    st.wait_for("an ARP request", Duration::from_secs(10), || {
        st.counter("ipd", "arp_tx_requests") > asked
    });
    st.wait_for(
        "the kernel side learnt again",
        Duration::from_secs(10),
        || known(&st),
    );

    let o = st.strata(&["neigh", "bogus"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("show, flush"));
}
