//! Privileges. What sockd lets a local user do: ports below 1024 are
//! root's (or a process with CAP_NET_BIND_SERVICE's), as on Linux; and
//! with `[sockd] socket_mode` and `socket_group`, only a group may reach
//! sockd at all. And what the layers may do: every one runs with
//! no_new_privs and under the seccomp filter, and a forbidden call is
//! logged and the layer restarted.

use std::process::{Command, Stdio};
use std::time::Duration;

use strata_tests::{bin, spawn_app, tap_config, wait_line, Bg, Netns, Stack, LAYERS};

/// Runs examples/echo as user and group 65534 (nobody) with `args`;
/// `bounded`: for at most 20 s.
fn echo_as_nobody(st: &Stack, args: &[&str], bounded: bool) -> Command {
    let mut c = Command::new(if bounded { "timeout" } else { "setpriv" });
    if bounded {
        c.args(["20", "setpriv"]);
    }
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin("echo"))
        .args(args)
        .env("STRATA_INSTANCE", &st.instance);
    c
}

#[test]
fn ports_below_1024_are_refused_to_other_users_with_eacces() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // TCP port 80 and UDP port 53: refused, and said so.
    for args in [
        ["--tcp", "0.0.0.0:80", "--udp", "0.0.0.0:5353"],
        ["--tcp", "0.0.0.0:8080", "--udp", "0.0.0.0:53"],
    ] {
        // Refused, it exits at once; served, it would run on (until the
        // `timeout` this wraps it in).
        let out = echo_as_nobody(&st, &args, true)
            .stdout(Stdio::null())
            .output()
            .expect("setpriv (util-linux)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(err.contains("Permission denied"), "{args:?}: {err}");
    }
    // Ports from 1024 on: served to anyone.
    let child = echo_as_nobody(
        &st,
        &["--tcp", "0.0.0.0:8080", "--udp", "0.0.0.0:5353"],
        false,
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("setpriv (util-linux)");
    let mut nobody = Bg::new(child);
    wait_line(&mut nobody, "serving UDP", Duration::from_secs(10));
    // And root still binds port 80.
    let mut root = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:80", "--udp", "0.0.0.0:53"]);
    wait_line(&mut root, "serving UDP", Duration::from_secs(10));
}

#[test]
fn a_socket_mode_without_other_users_keeps_them_out() {
    let ns = Netns::new();
    let st = Stack::up_with(&ns, "[sockd]\nsocket_mode = 0o660\nsocket_group = 0\n");
    let out = echo_as_nobody(&st, &["--udp", "0.0.0.0:5353"], true)
        .stdout(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    // Root, of group 0, still gets in.
    let mut root = spawn_app(&st, "echo", &["--udp", "0.0.0.0:5353"]);
    wait_line(&mut root, "serving UDP", Duration::from_secs(10));
}

/// Asserts that every layer's `/proc/PID/status` has `field` `value`.
fn every_layer_shows(st: &Stack, field: &str, value: &str) {
    for layer in LAYERS {
        let pid = st.layer_pid(layer);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq([field, value])),
            "{layer}: {status}"
        );
    }
}

#[test]
fn every_layer_runs_with_no_new_privileges() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    every_layer_shows(&st, "NoNewPrivs:", "1");
}

#[test]
fn every_layer_is_confined_and_a_forbidden_call_is_logged_and_restarted() {
    let ns = Netns::new();
    let st = Stack::up_config_env(
        &ns,
        &tap_config(""),
        &[(strata_ipc::service::FORBIDDEN_CALL_ENV, "udpd")],
    );
    // The test hook: SIGUSR1 makes udpd call ptrace, which the filter
    // forbids. It dies of SIGSYS and is restarted like a crashed layer.
    // SAFETY: kill takes no pointers; the pid is a layer of this test's
    // stack, read from its fabric while the layer runs.
    unsafe { libc::kill(st.layer_pid("udpd"), libc::SIGUSR1) };
    st.wait_for("udpd restarted", Duration::from_secs(20), || {
        st.restarts("udpd") >= 1
    });
    let log = st.log_text();
    assert!(
        log.contains(&format!("forbidden system call {}", libc::SYS_ptrace)),
        "{log}"
    );
    assert!(log.contains("SIGSYS"), "{log}");
    // Every layer runs under the filter (Seccomp: 2), the new udpd too.
    st.wait_for("udpd serving", Duration::from_secs(20), || {
        st.layer_status("udpd")["state"] == "running"
    });
    every_layer_shows(&st, "Seccomp:", "2");
    // And the stack works.
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(10));
}
