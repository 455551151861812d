//! `strata kill` of each lower layer during a ping at 100/s: the launcher
//! restarts it, pings resume as soon as it serves again, and no buffer
//! leaks. Deliberate kills do not count towards the crash-loop back-off;
//! other deaths do.

use std::time::Duration;
use strata_tests::{ping_all, ping_reply_seqs, Netns, Stack, STACK_IP};

fn kill_during_ping(layer: &str) {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Warm up (ARP on both sides), then take the pool's baseline.
    let r = ping_all(&ns, &["-c", "3", "-i", "0.2", "-W", "1", STACK_IP]);
    assert_eq!(r.received, 3, "{}", r.text);
    let baseline = st.pool_in_use();

    // A ping at 100/s that runs until we have seen what we need: 150
    // replies before the kill, the restart, and 150 replies after it.
    let mut pinger = ns.spawn(&["ping", "-i", "0.01", "-W", "1", STACK_IP]);
    let out = pinger.collect_lines();
    let replies = || ping_reply_seqs(&out.snapshot());
    st.wait_for(
        "150 replies before the kill",
        Duration::from_secs(30),
        || replies().len() >= 150,
    );
    let o = st.strata(&["kill", layer]);
    assert!(
        o.status.success(),
        "kill {layer}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    st.wait_restarted(layer, 0);
    let last = replies().into_iter().max().unwrap_or(0);
    st.wait_for(
        "150 replies after the restart",
        Duration::from_secs(30),
        || replies().into_iter().filter(|&q| q > last).count() >= 150,
    );
    drop(pinger);
    let text = out.text();
    let seqs = replies();
    assert_eq!(
        st.restarts(layer),
        1,
        "{layer} restarted once\n{}",
        st.log_text()
    );
    // Requests ping sent and got no answer for: the longest run of them,
    // and all together, up to the last answered.
    let high = seqs.iter().copied().max().unwrap();
    let mut answered = vec![false; high as usize + 1];
    for &q in &seqs {
        answered[q as usize] = true;
    }
    let (mut gap, mut run, mut lost) = (0u64, 0u64, 0u64);
    for &a in &answered[1..] {
        run = if a { 0 } else { run + 1 };
        lost += u64::from(!a);
        gap = gap.max(run);
    }
    // The pings stop for the restart itself (as long as the machine takes
    // to start a process, which the launcher measures) and not a second
    // more: at 100 pings a second, that is 100 sequence numbers. A bound
    // for a stall (waiting for a timeout), not for speed.
    let recovery = st.layer_status(layer)["last_recovery_ms"]["total"]
        .as_f64()
        .unwrap_or_else(|| panic!("{layer}'s restart was not timed"));
    let allowed = 100 + (recovery / 10.0).ceil() as u64;
    eprintln!("{layer}: gap {gap}, lost {lost} of {high}, restart {recovery} ms");
    assert!(
        gap <= allowed,
        "{layer}: pings stopped for {gap} sequence numbers, the restart took {recovery} ms:\n{text}"
    );
    assert!(
        lost <= allowed,
        "{layer}: {lost} of {high} unanswered, the restart took {recovery} ms"
    );
    assert!(
        !text.contains("wrong data byte") && !text.contains("wrong byte"),
        "{text}"
    );
    // Once traffic stops, every buffer is back.
    st.wait_for("pool back at baseline", Duration::from_secs(10), || {
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
    // Long enough that no layer that merely waits for a busy CPU misses
    // it: only the stopped one does.
    let st = Stack::up_with(&ns, "\n[limits]\nheartbeat_timeout_ms = 2000\n");
    // SIGSTOP: alive but silent, like a layer stuck in a loop.
    // SAFETY: kill takes no pointers; the pid is a layer of the stack this
    // test started, read from its fabric while the layer runs.
    unsafe { libc::kill(st.layer_pid("filterd"), libc::SIGSTOP) };
    st.wait_for("filterd restarted", Duration::from_secs(20), || {
        st.restarts("filterd") == 1
    });
    let r = ping_all(&ns, &["-c", "3", "-i", "0.2", "-W", "1", STACK_IP]);
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
            // SAFETY: kill with signal 0 takes no pointers and only probes
            // whether the pid exists.
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
            // SAFETY: kill takes no pointers; the pid is a layer of the stack
            // this test started, read from its fabric while the layer runs.
            unsafe { libc::kill(st.layer_pid(layer), libc::SIGKILL) };
        }
        st.wait_for(
            "the restarted layer serving",
            Duration::from_secs(10),
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
    st.wait_for("every restart timed", Duration::from_secs(10), || {
        st.log_text().matches("ipd serving again").count() == 5
    });
    let log = st.log_text();
    assert!(!log.contains("crash loop back-off"), "{log}");
    // Timed: a death-to-serving time that is the sum of its parts (how
    // long they take is the machine's business).
    let r = &st.layer_status("ipd")["last_recovery_ms"];
    let total = r["total"].as_f64().unwrap();
    let detect = r["detect"].as_f64().unwrap_or_else(|| panic!("{r}"));
    let parts = detect + r["reclaim"].as_f64().unwrap() + r["startup"].as_f64().unwrap();
    assert!(total > 0.0 && total.is_finite(), "{r}");
    assert!((total - parts).abs() < 0.01, "{r}");
    let p = ping_all(&ns, &["-c", "3", "-i", "0.2", "-W", "1", STACK_IP]);
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
