//! `strata kill` of each lower layer during a ping at 100/s: the launcher
//! restarts it, pings resume within one second, and no buffer leaks.
//! Deliberate kills do not count towards the crash-loop back-off; other
//! deaths do.

use std::time::Duration;
use strata_tests::{ping, Netns, Stack, STACK_IP};

fn kill_during_ping(layer: &str) {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Warm up (ARP on both sides), then take the pool's baseline.
    let r = ping(&ns, &["-c", "3", "-i", "0.2", "-W", "1", STACK_IP]);
    assert_eq!(r.received, 3, "{}", r.text);
    let baseline = st.pool_in_use();

    let pinger = std::thread::scope(|s| {
        let h = s.spawn(|| ping(&ns, &["-c", "400", "-i", "0.01", "-W", "1", STACK_IP]));
        std::thread::sleep(Duration::from_millis(1500));
        let o = st.strata(&["kill", layer]);
        assert!(
            o.status.success(),
            "kill {layer}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        h.join().unwrap()
    });
    assert_eq!(
        st.restarts(layer),
        1,
        "{layer} restarted once\n{}",
        st.log_text()
    );
    // At 100 pings a second, a gap of 100 sequence numbers is one second.
    let gap = pinger.longest_gap();
    assert!(
        gap <= 100,
        "{layer}: pings stopped for {gap} sequence numbers:\n{}",
        pinger.text
    );
    assert!(
        pinger.received >= 300,
        "{layer}: {}/{}",
        pinger.received,
        pinger.sent
    );
    assert!(!pinger.corrupted);
    // Once traffic stops, every buffer is back.
    st.wait_for("pool back at baseline", Duration::from_secs(5), || {
        st.pool_in_use() <= baseline
    });
    let log = st.log_text();
    assert!(log.contains(&format!("{layer} restarted")), "{log}");
}

#[test]
fn kill_driverd_during_ping() {
    kill_during_ping("driverd0");
}

#[test]
fn kill_netdevd_during_ping() {
    kill_during_ping("netdevd");
}

#[test]
fn kill_filterd_during_ping() {
    kill_during_ping("filterd");
}

#[test]
fn kill_ipd_during_ping() {
    kill_during_ping("ipd");
}

#[test]
fn a_hung_layer_is_killed_and_restarted() {
    let ns = Netns::new();
    let st = Stack::up_with(&ns, "\n[limits]\nheartbeat_timeout_ms = 500\n");
    // SIGSTOP: alive but silent, like a layer stuck in a loop.
    unsafe { libc::kill(st.layer_pid("filterd"), libc::SIGSTOP) };
    st.wait_for("filterd restarted", Duration::from_secs(5), || {
        st.restarts("filterd") == 1
    });
    let r = ping(&ns, &["-c", "3", "-i", "0.2", "-W", "1", STACK_IP]);
    assert_eq!(r.received, 3, "{}", r.text);
    assert!(st.log_text().contains("missed its heartbeat"));
}

#[test]
fn stop_leaves_nothing_behind() {
    let ns = Netns::new();
    let mut st = Stack::up(&ns);
    let status = st.json("status");
    let pids: Vec<i32> = status["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["pid"].as_i64().unwrap() as i32)
        .collect();
    let inst = st.instance.clone();
    assert!(st.stop(), "launcher exited cleanly");
    for pid in pids {
        assert_eq!(
            unsafe { libc::kill(pid, 0) },
            -1,
            "layer pid {pid} still alive"
        );
    }
    assert!(!std::path::Path::new(&format!("/dev/shm/strata-{inst}")).exists());
    assert!(!std::path::Path::new(&format!("/run/strata/{inst}")).exists());
    let links = ns.run_ok(&["ip", "link", "show"]);
    assert!(
        !links.contains("strata0"),
        "TAP device left behind:\n{links}"
    );
}

/// Kills `layer` `times` times, each once the previous instance serves,
/// by `strata kill` or by a SIGKILL of our own that the launcher did not
/// ask for.
fn kill_repeatedly(st: &Stack, layer: &str, times: u64, by_request: bool) {
    for n in 1..=times {
        if by_request {
            let o = st.strata(&["kill", layer]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        } else {
            unsafe { libc::kill(st.layer_pid(layer), libc::SIGKILL) };
        }
        st.wait_for(
            "the restarted layer serving",
            Duration::from_secs(5),
            || {
                let l = st.layer_status(layer);
                l["restarts"] == n && l["state"] == "running"
            },
        );
    }
}

#[test]
fn deliberate_kills_are_no_crash_loop_and_each_restart_is_timed() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Five kills within a second or so: a crash loop if they counted.
    kill_repeatedly(&st, "ipd", 5, true);
    st.wait_for("every restart timed", Duration::from_secs(2), || {
        st.log_text().matches("ipd serving again").count() == 5
    });
    let log = st.log_text();
    assert!(!log.contains("crash loop back-off"), "{log}");
    let r = &st.layer_status("ipd")["last_recovery_ms"];
    let total = r["total"].as_f64().unwrap();
    assert!(r["detect"].as_f64().is_some(), "{r}");
    assert!(total > 0.0 && total < 1000.0, "{r}");
    let p = ping(&ns, &["-c", "3", "-i", "0.2", "-W", "1", STACK_IP]);
    assert_eq!(p.received, 3, "{}", p.text);
}

#[test]
fn deaths_the_launcher_did_not_ask_for_still_back_off() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    kill_repeatedly(&st, "udpd", 3, false);
    let log = st.log_text();
    assert!(
        log.contains("restarting in 100 ms (crash loop back-off)"),
        "{log}"
    );
    // Not a kill of ours: no time from a SIGKILL to its notice.
    assert!(st.layer_status("udpd")["last_recovery_ms"]["detect"].is_null());
}
