//! `strata link`: interfaces as `ip link` shows them; `set IFACE down`
//! stops traffic both ways (the kernel's pings go unanswered, counted as
//! dropped), survives netdevd's restart, and `up` brings it back.

use std::time::Duration;
use strata_tests::{ping, Netns, Stack, STACK_IP};

/// strata0's row of `strata link show --json`.
fn strata0(st: &Stack) -> serde_json::Value {
    let o = st.strata(&["link", "show", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["links"][0].clone()
}

fn set(st: &Stack, state: &str) -> std::process::Output {
    st.strata(&["link", "set", "strata0", state])
}

#[test]
fn link_down_stops_traffic_across_a_netdevd_restart_and_up_restores_it() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let l = strata0(&st);
    assert_eq!(
        (l["name"].as_str(), l["state"].as_str()),
        (Some("strata0"), Some("UP"))
    );
    assert_eq!(l["mtu"], 1500);
    assert_eq!(ping(&ns, &["-c", "1", STACK_IP]).received, 1);

    assert!(set(&st, "down").status.success());
    assert_eq!(strata0(&st)["state"], "DOWN");
    // An unanswered echo stays unanswered however fast the stack is.
    assert_eq!(ping(&ns, &["-c", "2", "-W", "1", STACK_IP]).received, 0);
    let dropped = |st: &Stack| {
        st.json("stats")["interfaces"][0]["counters"]["drop_link_down"]
            .as_u64()
            .unwrap()
    };
    assert!(dropped(&st) >= 2, "the pings were dropped, and counted");

    let before = st.kill_layer("netdevd");
    st.wait_restarted("netdevd", before);
    assert_eq!(
        strata0(&st)["state"],
        "DOWN",
        "kept across netdevd's restart"
    );
    assert_eq!(ping(&ns, &["-c", "1", "-W", "1", STACK_IP]).received, 0);

    assert!(set(&st, "up").status.success());
    assert_eq!(strata0(&st)["state"], "UP");
    // The kernel may need its ARP entry again after the silence.
    st.wait_for("pings answered again", Duration::from_secs(20), || {
        ping(&ns, &["-c", "1", "-W", "2", STACK_IP]).received == 1
    });

    for (args, says) in [
        (
            vec!["link", "set", "strata0", "mtu", "9001"],
            "\"9001\" is not an MTU (68..=9000)",
        ),
        (
            vec!["link", "set", "nope", "up"],
            "no interface named \"nope\"",
        ),
        (
            vec!["link", "set", "strata0", "sideways"],
            "up, down or mtu N",
        ),
        (vec!["link", "set"], "set IFACE up|down"),
    ] {
        let o = st.strata(&args);
        assert!(!o.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
