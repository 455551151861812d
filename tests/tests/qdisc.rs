//! `strata qdisc`: faults injected by netdevd at run time, seen by the
//! kernel's ping on the far side of the TAP.

use std::process::Output;
use std::time::Duration;
use strata_tests::{ping, ping_all, Netns, PingResult, Stack, STACK_IP};

fn qdisc(st: &Stack, args: &[&str]) -> Output {
    let mut a = vec!["qdisc"];
    a.extend_from_slice(args);
    st.strata(&a)
}

fn qdisc_ok(st: &Stack, args: &[&str]) {
    let o = qdisc(st, args);
    assert!(
        o.status.success(),
        "strata qdisc {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Round-trip times of the replies, in ms.
fn rtts(r: &PingResult) -> Vec<f64> {
    r.text
        .lines()
        .filter_map(|l| {
            let t = l.split("time=").nth(1)?;
            t.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// Starts a stack and warms it up (ARP on both sides).
fn up(ns: &Netns) -> Stack {
    let st = Stack::up(ns);
    let r = ping_all(ns, &["-c", "3", "-i", "0.2", "-W", "1", STACK_IP]);
    assert_eq!(r.received, 3, "{}", r.text);
    st
}

#[test]
fn loss_50_percent_loses_about_half_and_clear_restores() {
    let ns = Netns::new();
    let st = up(&ns);
    qdisc_ok(&st, &["strata0", "loss", "50%"]);
    let r = ping(&ns, &["-c", "400", "-i", "0.01", "-W", "1", STACK_IP]);
    assert_eq!(r.sent, 400, "{}", r.text);
    let lost = 100.0 * (r.sent - r.received) as f64 / r.sent as f64;
    assert!(
        (35.0..=65.0).contains(&lost),
        "lost {lost:.1}% ({}/{})",
        r.received,
        r.sent
    );
    let dropped = st.counter("netdevd", "fault_loss");
    assert!(
        dropped >= (r.sent - r.received) as u64,
        "netdevd counted {dropped} losses"
    );
    assert!(!r.corrupted);

    qdisc_ok(&st, &["strata0", "clear"]);
    let r = ping_all(&ns, &["-c", "100", "-i", "0.01", "-W", "1", STACK_IP]);
    assert!(r.received >= 99, "{}/{} after clear", r.received, r.sent);
    assert_eq!(
        st.counter("netdevd", "fault_loss"),
        dropped,
        "no fault drops once cleared"
    );
}

#[test]
fn ingress_loss_drops_requests_not_replies() {
    let ns = Netns::new();
    let st = up(&ns);
    qdisc_ok(&st, &["strata0", "ingress", "loss", "50%"]);
    let r = ping(&ns, &["-c", "200", "-i", "0.01", "-W", "1", STACK_IP]);
    let lost = 100.0 * (r.sent - r.received) as f64 / r.sent as f64;
    assert!((30.0..=70.0).contains(&lost), "lost {lost:.1}%");
    assert!(st.counter("netdevd", "ingress_fault_loss") > 0);
    assert_eq!(st.counter("netdevd", "fault_loss"), 0);
    qdisc_ok(&st, &["strata0", "ingress", "clear"]);
}

#[test]
fn delay_100ms_shows_in_the_round_trip_time() {
    let ns = Netns::new();
    let st = up(&ns);
    qdisc_ok(&st, &["strata0", "delay", "100"]);
    let r = ping_all(&ns, &["-c", "10", "-i", "0.05", "-W", "2", STACK_IP]);
    assert_eq!(r.received, 10, "{}", r.text);
    let t = rtts(&r);
    let min = t.iter().cloned().fold(f64::MAX, f64::min);
    assert!(min >= 100.0, "RTT {min} ms under the delay:\n{}", r.text);
    assert!(st.counter("netdevd", "fault_delayed") >= 10);

    // netdevd wakes when the packet is due, not on its idle tick: with a
    // delay of 10 ms and nothing else to wake it (a ping every 150 ms),
    // a netdevd sleeping its 100 ms tick would hold every reply at least
    // 100 ms, a floor no machine can beat. Load only adds: the bound is
    // on the median, 80 ms above the delay.
    qdisc_ok(&st, &["strata0", "delay", "10"]);
    let r = ping_all(&ns, &["-c", "10", "-i", "0.15", "-W", "2", STACK_IP]);
    assert_eq!(r.received, 10, "{}", r.text);
    let mut t = rtts(&r);
    t.sort_by(f64::total_cmp);
    assert!(t[0] >= 10.0, "RTT {} ms under the delay:\n{}", t[0], r.text);
    let median = t[t.len() / 2];
    assert!(
        median < 90.0,
        "median RTT {median} ms: netdevd slept past the due time:\n{}",
        r.text
    );

    // Cleared: nothing is delayed any more.
    qdisc_ok(&st, &["strata0", "clear"]);
    let delayed = st.counter("netdevd", "fault_delayed");
    let r = ping_all(&ns, &["-c", "5", "-i", "0.05", "-W", "10", STACK_IP]);
    assert_eq!(r.received, 5, "{}", r.text);
    assert_eq!(
        st.counter("netdevd", "fault_delayed"),
        delayed,
        "replies delayed after clear:\n{}",
        r.text
    );
}

#[test]
fn duplicate_100_percent_doubles_every_reply() {
    let ns = Netns::new();
    let st = up(&ns);
    qdisc_ok(&st, &["strata0", "duplicate", "100%"]);
    let r = ping_all(&ns, &["-c", "10", "-i", "0.05", "-W", "1", STACK_IP]);
    assert_eq!(r.received, 10, "{}", r.text);
    let dups = r.text.lines().filter(|l| l.contains("DUP!")).count();
    // ping may exit on the last reply, before its duplicate arrives.
    assert!(dups >= 9, "{}", r.text);
    assert!(st.counter("netdevd", "fault_duplicate") >= 10);
    assert!(!r.corrupted);
}

#[test]
fn rate_limit_queues_large_pings() {
    let ns = Netns::new();
    let st = up(&ns);
    // 1442-byte frames at 100 kbit/s: about 115 ms each once the 4 KiB
    // bucket is spent.
    qdisc_ok(&st, &["strata0", "rate", "100kbit"]);
    let r = ping(
        &ns,
        &[
            "-c", "10", "-i", "0.002", "-s", "1400", "-w", "10", STACK_IP,
        ],
    );
    assert_eq!(r.received, 10, "{}", r.text);
    // A floor set by the token bucket: no machine is fast enough to beat
    // it, and a slow one only adds.
    let max = rtts(&r).into_iter().fold(0.0, f64::max);
    assert!(max >= 500.0, "last reply after {max} ms:\n{}", r.text);
    assert!(st.counter("netdevd", "rate_limited_waits") > 0);
}

#[test]
fn a_misspelt_word_is_named() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let o = qdisc(&st, &["strata0", "los", "5%"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.starts_with("strata qdisc: \"los\": expected loss, duplicate"),
        "{err}"
    );
    let o = qdisc(&st, &["strata0", "loss", "5x"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("\"5x\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = qdisc(&st, &["strata9", "loss", "5%"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no interface \"strata9\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Nothing was set.
    let o = qdisc(&st, &["strata0", "show", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["interfaces"][0]["egress"]["off"], true, "{v}");
    assert_eq!(v["interfaces"][0]["egress"]["generation"], 0, "{v}");
}

#[test]
fn settings_survive_a_netdevd_restart() {
    let ns = Netns::new();
    let st = up(&ns);
    let baseline = st.pool_in_use();
    qdisc_ok(&st, &["strata0", "delay", "100", "--json"]);
    // Kill netdevd with replies sitting in its delay queue: once replies
    // are being delayed, while the ping (a second of requests, each reply
    // held 100 ms) goes on.
    std::thread::scope(|s| {
        let h = s.spawn(|| ping(&ns, &["-c", "100", "-i", "0.01", "-W", "1", STACK_IP]));
        st.wait_for(
            "replies in the delay queue",
            Duration::from_secs(20),
            || st.counter("netdevd", "fault_delayed") >= 3,
        );
        let o = st.strata(&["kill", "netdevd"]);
        assert!(o.status.success());
        h.join().unwrap()
    });
    st.wait_for("netdevd restarted", Duration::from_secs(10), || {
        st.restarts("netdevd") == 1
    });
    let r = ping_all(&ns, &["-c", "5", "-i", "0.05", "-W", "2", STACK_IP]);
    assert_eq!(r.received, 5, "{}", r.text);
    let min = rtts(&r).into_iter().fold(f64::MAX, f64::min);
    assert!(min >= 100.0, "RTT {min} ms: the delay did not survive");
    let o = qdisc(&st, &["strata0", "show", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["interfaces"][0]["egress"]["delay_us"], 100_000, "{v}");
    // Both netdevd instances logged the settings they took.
    let log = st.log_text();
    assert_eq!(log.matches("qdisc strata0 egress: ").count(), 2, "{log}");
    // What the dead netdevd held was reclaimed.
    qdisc_ok(&st, &["strata0", "clear"]);
    st.wait_for("pool back at baseline", Duration::from_secs(10), || {
        st.pool_in_use() <= baseline
    });
}
