//! Privileges. What sockd lets a local user do: ports below 1024 are
//! root's (or a process with CAP_NET_BIND_SERVICE's), as on Linux; and
//! with `[sockd] socket_mode` and `socket_group`, only a group may reach
//! sockd at all. And what the layers may do: every one runs as its own
//! unprivileged user, with no capabilities, with no_new_privs and under
//! the seccomp filter, and a forbidden call is logged and the layer
//! restarted.

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;
use strata_proto::sock::{Addr, Request, Response};
use strata_tests::{
    bin, spawn_app, status_field, tap_config, wait_line, Bg, Netns, RawClient, Stack, LAYERS,
};

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
        let got = status_field(st.layer_pid(layer), field);
        assert_eq!(got, value, "{layer}: {field}");
    }
}

#[test]
fn every_layer_runs_as_its_own_user_without_capabilities_or_new_privileges() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    every_layer_shows(&st, "NoNewPrivs:", "1");
    let mut uids = std::collections::HashSet::new();
    for layer in LAYERS {
        let pid = st.layer_pid(layer);
        // Real, effective, saved and filesystem ids: one user, not root,
        // of the layers' group and no other.
        let ids: Vec<u32> = status_field(pid, "Uid:")
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(ids.len(), 4);
        assert!(
            ids.iter().all(|&u| u == ids[0] && u != 0),
            "{layer}: {ids:?}"
        );
        assert!(uids.insert(ids[0]), "{layer} shares uid {}", ids[0]);
        let gid = status_field(pid, "Gid:");
        assert!(
            gid.split_whitespace().all(|g| g == "76000"),
            "{layer}: {gid}"
        );
        assert_eq!(status_field(pid, "Groups:"), "76000", "{layer}");
        for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(status_field(pid, set), "0000000000000000", "{layer} {set}");
        }
    }
    // The shared region is the layers' group's and root's alone.
    let meta = std::fs::metadata(format!("/dev/shm/strata-{}", st.instance)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 76000));
    // And the stack serves.
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(10));
}

#[test]
fn every_layer_maps_the_launchers_pages_and_other_layers_arenas_read_only() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let region = format!("/dev/shm/strata-{}", st.instance);
    for layer in LAYERS {
        let pid = st.layer_pid(layer);
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        // "start-end perms offset dev inode path", for the region only.
        let parts: Vec<(&str, u64)> = maps
            .lines()
            .filter(|l| l.ends_with(&region))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[1], u64::from_str_radix(f[2], 16).unwrap())
            })
            .collect();
        let first = parts.iter().find(|p| p.1 == 0);
        assert_eq!(first.map(|p| p.0), Some("r--s"), "{layer}: {parts:?}");
        let writable = parts.iter().filter(|p| p.0 == "rw-s").count();
        let read_only = parts.iter().filter(|p| p.0 == "r--s").count();
        // The launcher's pages, then the others' arenas around its own.
        assert!(writable >= 1 && read_only >= 2, "{layer}: {parts:?}");
    }
    // And the stack serves.
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(10));
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

/// Connects to sockd as `uid`, from a python child that hands the
/// connection back over its stdin (a Unix socket) and then exits or, with
/// `stay`, lives until its stdin closes. The connection's SO_PEERCRED and
/// SO_PEERPIDFD name that child. Returns the connection, the child, and
/// our end of its stdin.
fn connect_as(st: &Stack, uid: u32, stay: bool) -> (OwnedFd, Bg, UnixStream) {
    const HAND_OVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
back = socket.socket(fileno=0)
socket.send_fds(back, [b"x"], [s.fileno()])
if sys.argv[2] == "stay":
    back.recv(1)
"#;
    let (ours, theirs) = UnixStream::pair().unwrap();
    let path = strata_ipc::runtime::run_dir(&st.instance).join(strata_proto::sock::SOCKET_FILE);
    let child = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            // The system's python, which any user may run (a python
            // under root's home may be out of reach).
            "/usr/bin/python3",
            "-c",
            HAND_OVER,
        ])
        .arg(&path)
        .arg(if stay { "stay" } else { "go" })
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux), /usr/bin/python3");
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let m = recvmsg::<()>(
        ours.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .expect("the connection handed over");
    let fd = m
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(v) => v.first().copied(),
            _ => None,
        })
        .expect("an fd with the message");
    // SAFETY: SCM_RIGHTS installed this descriptor in this process for
    // this message; nothing else owns it.
    (unsafe { OwnedFd::from_raw_fd(fd) }, Bg::new(child), ours)
}

/// Sends `sig` to `pid`.
fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill takes no pointers.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid} {sig}");
}

/// Starts `sleep` as root with pid `pid` (just freed), through the pid
/// namespace's `ns_last_pid`; retries while other processes take it first.
fn sleep_with_pid(pid: u32) -> Bg {
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("ns_last_pid is writable (root with CAP_SYS_ADMIN)");
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        if child.id() == pid {
            return Bg::new(child);
        }
        drop(Bg::new(child));
    }
    panic!("pid {pid} never came back");
}

#[test]
fn a_client_gone_before_sockd_looked_is_not_credited_with_the_next_owner_of_its_pid() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // sockd is stopped while a client of user nobody connects and exits,
    // and a root process takes its pid: /proc/PID now shows root and its
    // capabilities. A pid alone would credit them to the session (port 80
    // for nobody); the session's pidfd says its process is gone.
    let sockd = st.layer_pid("sockd");
    signal(sockd, libc::SIGSTOP);
    let (fd, mut client, _stdin) = connect_as(&st, 65534, false);
    let gone = client.child.id();
    assert!(client.child.wait().unwrap().success());
    let _imposter = sleep_with_pid(gone);
    signal(sockd, libc::SIGCONT);
    assert!(
        RawClient::hello(fd).is_none(),
        "a session for a process that is gone"
    );
    st.wait_for(
        "sockd to count the session",
        Duration::from_secs(10),
        || st.counter("sockd", "sessions_unidentified") >= 1,
    );
    // Clients that stay are served as before.
    let (fd, _client, _stdin) = connect_as(&st, 65534, true);
    let c = RawClient::hello(fd).expect("a session");
    let (id, _mem) = c.udp_socket();
    let bind = |port| Request::Bind {
        id,
        addr: Addr::v4(0, port),
    };
    let eacces = Response::Error {
        errno: libc::EACCES,
    };
    assert_eq!(c.call(&bind(80), &[]), eacces);
    assert_eq!(c.call(&bind(8080), &[]), Response::Ok);
}

#[test]
fn neither_another_user_nor_another_process_reattaches_a_socket_left_behind() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(10));
    let id = st.json("ss")["sockets"][0]["id"].as_u64().unwrap() as u32;
    // The echo server is stopped, so it cannot re-attach when sockd
    // restarts: its socket waits for it, detached.
    let echo_pid = echo.child.id() as i32;
    signal(echo_pid, libc::SIGSTOP);
    signal(st.layer_pid("sockd"), libc::SIGKILL);
    st.wait_for("sockd restarted", Duration::from_secs(20), || {
        st.restarts("sockd") >= 1 && st.layer_status("sockd")["state"] == "running"
    });
    let reattach = |c: &RawClient| c.call_with_slot(|mem| Request::Reattach { id, mem });
    let ebadf = Response::Error { errno: libc::EBADF };
    // Another user: refused.
    let (fd, _nobody, _stdin) = connect_as(&st, 65534, true);
    let nobody = RawClient::hello(fd).expect("a session");
    assert_eq!(reattach(&nobody), ebadf);
    // Another process of the same user (this test, root): refused too.
    let root = RawClient::connect(&st.instance);
    assert_eq!(reattach(&root), ebadf);
    assert_eq!(st.counter("sockd", "reattached"), 0);
    // Its owner, resumed, takes it back and serves on it.
    signal(echo_pid, libc::SIGCONT);
    st.wait_for(
        "the echo server re-attached",
        Duration::from_secs(20),
        || st.counter("sockd", "reattached") >= 1,
    );
    let out = ns.run_ok(&[
        "python3",
        "-c",
        "import socket\ns=socket.socket(2,2)\ns.settimeout(10)\ns.sendto(b'mine',('10.77.0.2',7))\nprint(s.recv(100).decode())",
    ]);
    assert_eq!(out.trim(), "mine");
}

#[test]
fn one_user_cannot_take_every_session() {
    let ns = Netns::new();
    let st = Stack::up_with(&ns, "[limits]\nsessions_per_user = 3\n");
    // This test's user (root): three sessions, and the fourth is closed.
    let mut mine: Vec<RawClient> = (0..3).map(|_| RawClient::connect(&st.instance)).collect();
    let fourth = strata_tests::connect_sockd(&st.instance);
    assert!(RawClient::hello(fourth).is_none(), "a fourth session");
    st.wait_for(
        "sockd to count the refusal",
        Duration::from_secs(10),
        || st.counter("sockd", "session_limit") >= 1,
    );
    assert_eq!(st.counter("sockd", "session_limit"), 1);
    // Another user is not affected.
    let (fd, _nobody, _stdin) = connect_as(&st, 65534, true);
    assert!(RawClient::hello(fd).is_some(), "another user's session");
    // Once one of ours ends, there is room again.
    mine.pop();
    st.wait_for("the session closed", Duration::from_secs(20), || {
        st.counter("sockd", "sessions_closed") >= 1
    });
    assert!(RawClient::hello(strata_tests::connect_sockd(&st.instance)).is_some());
    assert_eq!(st.restarts("sockd"), 0);
}
