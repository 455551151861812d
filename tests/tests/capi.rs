//! The C ABI (libstrata, `capi/`) from C: `tests/c/strata_echo.c`,
//! compiled with `cc` against `capi/include/strata.h` and linked with
//! `libstrata.so`, talks to the kernel in the test's namespace as a TCP
//! client (1 MiB echoed, non-blocking connect and poll), a TCP server,
//! a UDP peer, and checks the errnos of the usual failures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_tests::{
    kernel_echo_server, wait_line, workspace_lib, workspace_root, Bg, Netns, Stack, TempDir,
    HOST_IP, STACK_IP,
};

/// A bound for a hang, never reached by a working stack.
const PATIENCE: Duration = Duration::from_secs(120);

/// `tests/c/strata_echo.c` compiled into `dir`, linked with libstrata.
fn compile(dir: &TempDir) -> PathBuf {
    let so = workspace_lib("strata-capi", "libstrata.so");
    let lib = so.parent().expect("the library's directory");
    let exe = dir.path().join("strata_echo");
    let out = Command::new("cc")
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .arg("-I")
        .arg(workspace_root().join("capi/include"))
        .arg(workspace_root().join("tests/c/strata_echo.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lstrata")
        .output()
        .expect("cc (a C compiler) installed");
    assert!(
        out.status.success(),
        "cc strata_echo.c:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Starts the C program on `st`'s instance (in the host namespace, as
/// applications reach a stack through its sockd socket).
fn spawn_c(exe: &Path, st: &Stack, args: &[&str]) -> Bg {
    let child = Command::new(exe)
        .args(args)
        .env("STRATA_INSTANCE", &st.instance)
        .stdout(Stdio::piped())
        .spawn()
        .expect("strata_echo");
    Bg::new(child)
}

/// Runs the C program to its end; its output, which must not report a
/// failure.
fn run_c(exe: &Path, st: &Stack, args: &[&str]) -> String {
    finish(spawn_c(exe, st, args), st, args)
}

/// Waits for the C program to end; what it printed (and had not been
/// read by [`wait_line`]), which must not report a failure.
fn finish(bg: Bg, st: &Stack, what: &[&str]) -> String {
    let out = bg
        .wait_output(PATIENCE)
        .unwrap_or_else(|| panic!("strata_echo {what:?} did not end\nlog:\n{}", st.log_text()));
    assert!(
        !out.contains("FAIL"),
        "strata_echo {what:?}:\n{out}\nlog:\n{}",
        st.log_text()
    );
    out
}

#[test]
fn a_c_client_echoes_a_megabyte_through_a_kernel_server() {
    let dir = TempDir::new("strata-capi");
    let exe = compile(&dir);
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let _server = kernel_echo_server(&ns, 7300, 1, PATIENCE);
    let out = run_c(&exe, &st, &["client", "7300"]);
    assert!(out.contains("client ok 1048576"), "{out}");
}

/// The kernel client of the C server: sends N bytes of the program's
/// pattern, shuts down its side, and checks what comes back (each byte
/// inverted).
const KERNEL_CLIENT: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = bytes(((i * 31) + (i >> 8)) & 0xff for i in range(n))
s = socket.create_connection((host, port), timeout=120)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
got = bytearray()
while True:
    b = s.recv(1 << 16)
    if not b:
        break
    got += b
want = bytes(b ^ 0xff for b in data)
print("ok" if got == want else "differs: %d of %d bytes" % (len(got), n), flush=True)
"#;

#[test]
fn a_c_server_accepts_a_kernel_client_and_exchanges_data() {
    let dir = TempDir::new("strata-capi");
    let exe = compile(&dir);
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let n = "300000";
    let mut server = spawn_c(&exe, &st, &["server", "7301", n]);
    wait_line(&mut server, "listening 7301", PATIENCE);
    let client = ns.spawn(&["python3", "-c", KERNEL_CLIENT, STACK_IP, "7301", n]);
    wait_line(&mut server, &format!("accepted from {HOST_IP}"), PATIENCE);
    let said = client
        .wait_output(PATIENCE)
        .expect("the kernel client ends");
    assert_eq!(said.trim(), "ok", "log:\n{}", st.log_text());
    let out = finish(server, &st, &["server"]);
    assert!(out.contains("server ok 300000"), "{out}");
}

/// A UDP echo server on the kernel side, at HOST_IP:PORT.
const KERNEL_UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
"#;

#[test]
fn c_sends_and_receives_datagrams_with_the_kernel() {
    let dir = TempDir::new("strata-capi");
    let exe = compile(&dir);
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = ns.spawn(&["python3", "-c", KERNEL_UDP_ECHO, HOST_IP, "7302"]);
    wait_line(&mut echo, "ready", PATIENCE);
    let out = run_c(&exe, &st, &["udp", "7303", "7302"]);
    assert!(out.contains("udp sendto/recvfrom ok 20"), "{out}");
    assert!(out.contains("udp blocked thread ok"), "{out}");
    assert!(out.contains("udp ok"), "{out}");
}

#[test]
fn c_calls_fail_with_the_errnos_of_linux() {
    let dir = TempDir::new("strata-capi");
    let exe = compile(&dir);
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Nothing listens on 7399 on the kernel side: it answers with a RST.
    let out = run_c(&exe, &st, &["errors", "7399"]);
    for want in [
        "connect_refused ECONNREFUSED",
        "recv_after_refused_connect ENOTCONN",
        "connect_nonblocking EINPROGRESS",
        "so_error ECONNREFUSED",
        "so_error_again 0",
        "recv_after_refusal =0",
        "send_after_refusal EPIPE",
        "connect_after_refusal ECONNABORTED",
        "connect_anew EINPROGRESS",
        "udp_bind_in_use EADDRINUSE",
        "udp_bind_again EINVAL",
        "tcp_listen_in_use EADDRINUSE",
        "recv_nonblocking EAGAIN",
        "recv_dontwait EAGAIN",
        "recv_after_fcntl EAGAIN",
        "accept_nonblocking EAGAIN",
        "send_unconnected EPIPE",
        "recv_unconnected ENOTCONN",
        "udp_send_no_peer EDESTADDRREQ",
        "unix EAFNOSUPPORT",
        "raw ESOCKTNOSUPPORT",
        "unknown_option ENOPROTOOPT",
        "short_option EINVAL",
        "null_address EFAULT",
        "short_address EINVAL",
        "not_a_socket ENOTSOCK",
        "closed EBADF",
    ] {
        assert!(
            out.lines().any(|l| l == format!("check {want}")),
            "no `check {want}` in:\n{out}"
        );
    }
    assert!(out.contains("errors done"), "{out}");
}
