//! `strata top`: one view as JSON shows traffic moving through the
//! layers that carry it while pings flow, and the live view, run in tmux
//! at 80×24, shows every layer and quits on q.

use std::process::Command;
use std::time::Duration;
use strata_tests::{bin, layer_of, unique, wait_until, Netns, Stack, LAYERS, STACK_IP};

/// A tmux server of the test's own (its socket named after the test),
/// killed when dropped.
struct Tmux(String);

impl Tmux {
    fn new() -> Tmux {
        Tmux(unique("strata-top"))
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux installed")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn top_shows_traffic_per_layer_and_the_live_view_fits_80_by_24() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Pings from the kernel, every 5 ms, for as long as the test needs
    // them (the ping ends with the namespace at worst).
    let mut pinger = ns.spawn(&["ping", "-q", "-i", "0.005", "-c", "4000", STACK_IP]);
    st.wait_for("pings answered", Duration::from_secs(10), || {
        st.counter("ipd", "icmp_out_echo_replies") > 10
    });
    let o = st.strata(&["top", "--once", "--json", "--interval", "0.5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(pinger.alive(), "the pings lasted through the sample");
    let layer = |name: &str| layer_of(&v, name).clone();
    for name in ["driverd0", "netdevd", "ipd"] {
        let l = layer(name);
        assert!(l["in_per_s"].as_f64().unwrap() > 0.0, "{name}: {l}");
        assert!(l["wakeups_per_s"].as_f64().unwrap() > 0.0, "{name}: {l}");
    }
    assert_eq!(layer("filterd")["state"], "aside", "no rules");
    assert_eq!(layer("tcpd")["in_per_s"].as_f64(), Some(0.0), "no TCP");
    let i = &v["interfaces"][0];
    assert!(i["rx_packets_per_s"].as_f64().unwrap() > 0.0, "{i}");
    assert!(i["tx_bits_per_s"].as_f64().unwrap() > 0.0, "{i}");

    // The live view in an 80×24 terminal.
    let tmux = Tmux::new();
    let cmd = format!("{} top --instance {}", bin("strata").display(), st.instance);
    let o = tmux.run(&["new-session", "-d", "-x", "80", "-y", "24", &cmd]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut pane = String::new();
    wait_until("the view drawn", Duration::from_secs(10), || {
        pane = String::from_utf8_lossy(&tmux.run(&["capture-pane", "-p"]).stdout).into_owned();
        pane.contains("RINGS") && pane.contains("q quits")
    });
    for name in LAYERS {
        assert!(
            pane.lines().any(|l| l.starts_with(name)),
            "{name} not shown:\n{pane}"
        );
    }
    assert!(pane.contains("strata0"), "the interface:\n{pane}");
    let o = tmux.run(&["send-keys", "q"]);
    assert!(o.status.success());
    wait_until("top quit on q", Duration::from_secs(10), || {
        !tmux.run(&["has-session"]).status.success()
    });
}
