//! The LD_PRELOAD shim (`preload/`, `libstrata_preload.so`): unmodified
//! programs (the system's curl, socat, python3) run on the stack with
//! `LD_PRELOAD` and `STRATA_INSTANCE`, against kernel peers in the test's
//! namespace.
//!
//! The bulk transfers move `STRATA_PRELOAD_BYTES` bytes (default 100 MB).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_tests::{
    kernel_echo_server, process_blocked_in_wait, random_file, sha256_file, wait_line,
    wait_tcp_listening, wait_until, workspace_lib, Bg, Netns, Stack, TempDir, HOST_IP, STACK_IP,
};

/// A bound for a hang, never reached by a working stack.
const PATIENCE: Duration = Duration::from_secs(180);

fn big_bytes() -> u64 {
    std::env::var("STRATA_PRELOAD_BYTES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(100_000_000)
}

/// `libstrata_preload.so` of this build (`STRATA_PRELOAD_SO` names
/// another).
fn preload_so() -> PathBuf {
    std::env::var_os("STRATA_PRELOAD_SO")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_lib("strata-preload", "libstrata_preload.so"))
}

/// The real python3 executable (not a pyenv shim script), so that the
/// shim is loaded into python itself.
fn python() -> String {
    let o = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 installed");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `prog args` under the shim on `st` (in the host namespace: the
/// process reaches the stack through sockd's socket), stdout piped.
fn shimmed(st: &Stack, prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args)
        .env("LD_PRELOAD", preload_so())
        .env("STRATA_INSTANCE", &st.instance)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped());
    c
}

fn spawn_shimmed(st: &Stack, prog: &str, args: &[&str]) -> Bg {
    Bg::new(shimmed(st, prog, args).spawn().expect("spawn"))
}

/// Runs to the end (bounded), asserting success; its stdout.
fn finish(bg: Bg, what: &str) -> String {
    let pid = bg.child.id();
    let mut bg = bg;
    let st = loop {
        match bg.child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            std::time::Instant::now() < started(pid) + PATIENCE,
            "{what} did not finish"
        );
    };
    let out = bg.wait_output(Duration::from_secs(10)).unwrap_or_default();
    assert!(st.success(), "{what} failed ({st}): {out}");
    out
}

/// When the bounded wait for `pid` started (first call).
fn started(pid: u32) -> std::time::Instant {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static T: OnceLock<Mutex<HashMap<u32, std::time::Instant>>> = OnceLock::new();
    *T.get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(pid)
        .or_insert_with(std::time::Instant::now)
}

/// Waits until `strata ss` lists a socket on local port `port`.
fn wait_strata_port(st: &Stack, port: u16) {
    let suffix = format!(":{port}");
    wait_until(&format!("a strata socket on port {port}"), PATIENCE, || {
        st.sockets()
            .iter()
            .any(|r| r["local"].as_str().is_some_and(|l| l.ends_with(&suffix)))
    });
}

#[test]
fn curl_under_the_shim_downloads_from_a_kernel_http_server() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let dir = TempDir::new("strata-preload");
    let sum = random_file(&dir.path().join("big"), big_bytes());
    let _server = ns.http_server(HOST_IP, 8000, dir.path(), PATIENCE);
    let out = dir.path().join("got");
    let url = format!("http://{HOST_IP}:8000/big");
    let curl = spawn_shimmed(
        &st,
        "curl",
        &["-sS", "--fail", "-o", out.to_str().unwrap(), &url],
    );
    finish(curl, "curl under the shim");
    assert_eq!(sha256_file(&out), sum);
    // The name resolver still works under the shim (glibc's own calls).
    let r = finish(
        spawn_shimmed(
            &st,
            &python(),
            &[
                "-c",
                "import socket; print(socket.getaddrinfo('localhost', 80)[0][4][0])",
            ],
        ),
        "getaddrinfo under the shim",
    );
    assert!(r.contains("127.0.0.1") || r.contains("::1"), "{r}");
}

#[test]
fn python_http_server_under_the_shim_serves_a_kernel_curl() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let dir = TempDir::new("strata-preload");
    let sum = random_file(&dir.path().join("big"), big_bytes());
    let mut server = spawn_shimmed(
        &st,
        &python(),
        &[
            "-m",
            "http.server",
            "8001",
            "--bind",
            "0.0.0.0",
            "--directory",
            dir.path_str(),
        ],
    );
    wait_line(&mut server, "Serving HTTP", PATIENCE);
    let out = dir.path().join("got");
    ns.run_ok(&[
        "curl",
        "-sS",
        "--fail",
        "-m",
        "170",
        "-o",
        out.to_str().unwrap(),
        &format!("http://{STACK_IP}:8001/big"),
    ]);
    assert_eq!(sha256_file(&out), sum);
}

#[test]
fn socat_under_the_shim_moves_tcp_both_ways() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let dir = TempDir::new("strata-preload");
    let src = dir.path().join("src");
    let sum = random_file(&src, 10_000_000);
    // The shim listens, the kernel sends.
    let got1 = dir.path().join("got1");
    let listener = spawn_shimmed(
        &st,
        "socat",
        &[
            "-u",
            "TCP-LISTEN:7401,reuseaddr",
            &format!("CREATE:{}", got1.display()),
        ],
    );
    wait_strata_port(&st, 7401);
    ns.run_ok(&[
        "socat",
        "-u",
        &format!("OPEN:{}", src.display()),
        &format!("TCP:{STACK_IP}:7401"),
    ]);
    finish(listener, "socat TCP-LISTEN under the shim");
    assert_eq!(sha256_file(&got1), sum);
    // The kernel listens, the shim sends.
    let got2 = dir.path().join("got2");
    let kernel = ns.spawn(&[
        "socat",
        "-u",
        "TCP-LISTEN:7402,reuseaddr",
        &format!("CREATE:{}", got2.display()),
    ]);
    wait_tcp_listening(&ns, 7402, PATIENCE);
    finish(
        spawn_shimmed(
            &st,
            "socat",
            &[
                "-u",
                &format!("OPEN:{}", src.display()),
                &format!("TCP:{HOST_IP}:7402"),
            ],
        ),
        "socat TCP under the shim",
    );
    finish(kernel, "kernel socat");
    assert_eq!(sha256_file(&got2), sum);
}

#[test]
fn socat_under_the_shim_moves_udp_both_ways() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let dir = TempDir::new("strata-preload");
    let msg = dir.path().join("msg");
    std::fs::write(&msg, "hello through strata\n").unwrap();
    // The shim receives, the kernel sends (again until it arrives: UDP).
    let got1 = dir.path().join("got1");
    let _rx = spawn_shimmed(
        &st,
        "socat",
        &["-u", "UDP-RECV:7403", &format!("CREATE:{}", got1.display())],
    );
    wait_strata_port(&st, 7403);
    wait_until("the datagram in the shim's socat", PATIENCE, || {
        ns.run_ok(&[
            "socat",
            "-u",
            &format!("OPEN:{}", msg.display()),
            &format!("UDP-SENDTO:{STACK_IP}:7403"),
        ]);
        std::fs::read_to_string(&got1).is_ok_and(|s| s.contains("hello through strata"))
    });
    // The kernel receives, the shim sends.
    let got2 = dir.path().join("got2");
    let _krx = ns.spawn(&[
        "socat",
        "-u",
        "UDP-RECV:7404",
        &format!("CREATE:{}", got2.display()),
    ]);
    wait_until("the kernel's UDP socket", PATIENCE, || {
        ns.run_ok(&["ss", "-Huln", "sport", "=", ":7404"])
            .contains(":7404")
    });
    wait_until("the datagram in the kernel's socat", PATIENCE, || {
        finish(
            spawn_shimmed(
                &st,
                "socat",
                &[
                    "-u",
                    &format!("OPEN:{}", msg.display()),
                    &format!("UDP-SENDTO:{HOST_IP}:7404"),
                ],
            ),
            "socat UDP-SENDTO under the shim",
        );
        std::fs::read_to_string(&got2).is_ok_and(|s| s.contains("hello through strata"))
    });
}

/// A pipe and a strata TCP socket in one epoll set: both seen.
const EPOLL_MIX: &str = r#"
import os, select, socket, sys
r, w = os.pipe()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setblocking(False)
ep = select.epoll()
ep.register(r, select.EPOLLIN)
ep.register(s.fileno(), select.EPOLLIN)
os.write(w, b"x")
s.send(b"ping")
seen = set()
got = b""
while seen != {"pipe", "sock"}:
    for fd, ev in ep.poll(30):
        if fd == r:
            os.read(r, 1)
            seen.add("pipe")
            ep.unregister(r)
        elif fd == s.fileno():
            try:
                got += s.recv(100)
            except BlockingIOError:
                continue
            if got == b"ping":
                seen.add("sock")
    else:
        pass
print("both", sorted(seen), got, flush=True)
"#;

#[test]
fn epoll_sees_a_kernel_pipe_and_a_strata_socket_in_one_set() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let _echo = kernel_echo_server(&ns, 7405, 1, PATIENCE);
    let out = finish(
        spawn_shimmed(&st, &python(), &["-c", EPOLL_MIX, HOST_IP, "7405"]),
        "the epoll program",
    );
    assert!(out.contains("both ['pipe', 'sock'] b'ping'"), "{out}");
}

const ASYNCIO_ECHO: &str = r#"
import asyncio
async def echo(r, w):
    while True:
        d = await r.read(65536)
        if not d:
            break
        w.write(d)
        await w.drain()
    w.close()
async def main():
    srv = await asyncio.start_server(echo, "0.0.0.0", 7406)
    print("listening", flush=True)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"#;

const KERNEL_CLIENTS: &str = r#"
import socket, sys, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = []
def one(i):
    s = socket.create_connection((host, port), timeout=120)
    msg = (b"client %d " % i) * 100
    s.sendall(msg)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
    s.close()
    if got == msg:
        ok.append(i)
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ts: t.start()
for t in ts: t.join()
print("ok", len(ok), flush=True)
"#;

#[test]
fn an_asyncio_echo_server_under_the_shim_answers_200_kernel_clients() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut server = spawn_shimmed(&st, &python(), &["-c", ASYNCIO_ECHO]);
    wait_line(&mut server, "listening", PATIENCE);
    let out = ns.run_ok(&["python3", "-c", KERNEL_CLIENTS, STACK_IP, "7406", "200"]);
    assert!(out.contains("ok 200"), "{out}");
    assert!(server.alive(), "the server died");
}

/// A forking server: the parent accepts, a child per connection answers
/// and exits, the parent closes its copy and accepts the next.
const FORKING: &str = r#"
import os, socket
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 7407))
l.listen(16)
print("listening", os.getpid(), flush=True)
for _ in range(3):
    c, _ = l.accept()
    pid = os.fork()
    if pid == 0:
        l.close()
        c.sendall(b"hello from child %d\n" % os.getpid())
        c.shutdown(socket.SHUT_WR)
        c.close()
        os._exit(0)
    c.close()
    os.waitpid(pid, 0)
print("served", flush=True)
"#;

#[test]
fn a_forking_server_under_the_shim_answers_from_its_children() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut server = spawn_shimmed(&st, &python(), &["-c", FORKING]);
    let line = wait_line(&mut server, "listening", PATIENCE);
    let parent = line.split_whitespace().nth(1).unwrap().to_string();
    for _ in 0..3 {
        let out = ns.run_ok(&[
            "python3",
            "-c",
            "import socket,sys\n\
             s=socket.create_connection((sys.argv[1],7407),timeout=60)\n\
             d=b''\n\
             while True:\n    x=s.recv(100)\n    if not x: break\n    d+=x\n\
             print(d.decode().strip())",
            STACK_IP,
        ]);
        assert!(out.starts_with("hello from child "), "{out}");
        assert!(!out.contains(&parent), "the parent answered: {out}");
    }
    wait_line(&mut server, "served", PATIENCE);
}

#[test]
fn strata_ss_shows_the_preloaded_process_with_its_pid() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut server = spawn_shimmed(
        &st,
        &python(),
        &[
            "-c",
            "import socket,time\n\
             l=socket.socket(); l.bind(('0.0.0.0',7408)); l.listen(4)\n\
             print('listening',flush=True)\n\
             time.sleep(600)",
        ],
    );
    wait_line(&mut server, "listening", PATIENCE);
    let pid = server.child.id();
    let rows = st.sockets();
    let row = rows
        .iter()
        .find(|r| r["local"].as_str().is_some_and(|l| l.ends_with(":7408")))
        .unwrap_or_else(|| panic!("no socket on 7408: {rows:?}"));
    assert_eq!(row["pid"].as_u64(), Some(u64::from(pid)), "{row}");
}

/// The calls the other tests do not make, on one strata connection to a
/// kernel echo server: select, writev/readv, FIONREAD, dup2 (and the
/// socket going on after the dup is closed), sendfile from a file,
/// TCP_CONGESTION, and exec, across which the (close-on-exec) socket does
/// not survive.
const MORE_CALLS: &str = r#"
import fcntl, os, select, socket, struct, sys, tempfile, termios
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
s.settimeout(None)
def recv_exactly(n, fd=None):
    got = b""
    while len(got) < n:
        d = os.read(fd, n - len(got)) if fd is not None else s.recv(n - len(got))
        if not d:
            sys.exit("FAIL: end of stream")
        got += d
    return got
r, w, _ = select.select([s], [s], [], 30)
assert r == [] and w == [s], ("select", r, w)
assert os.writev(s.fileno(), [b"ab", b"cd"]) == 4
r, _, _ = select.select([s], [], [], 60)
assert r == [s], ("select readable", r)
def fionread():
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
while fionread() < 4:
    select.select([s], [], [], 60)
print("fionread", fionread(), flush=True)
a, b = bytearray(3), bytearray(1)
assert os.readv(s.fileno(), [a, b]) == 4 and bytes(a + b) == b"abcd"
assert os.dup2(s.fileno(), 100) == 100
os.write(100, b"dup")
assert recv_exactly(3, fd=100) == b"dup"
os.close(100)
s.sendall(b"after")
assert recv_exactly(5) == b"after"
data = os.urandom(100000)
with tempfile.TemporaryFile() as f:
    f.write(data)
    f.flush()
    f.seek(0)
    assert s.sendfile(f) == len(data)
assert recv_exactly(len(data)) == data
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
cc = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0")
assert cc == b"reno", cc
try:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"no-such-cc")
    sys.exit("FAIL: an unknown congestion control was taken")
except OSError as e:
    assert e.errno == 2, e
s.sendall(b"reno")
assert recv_exactly(4) == b"reno"
print("calls ok", flush=True)
os.execv(sys.executable, [sys.executable, "-c",
    "import os, sys\n"
    "try:\n    os.fstat(int(sys.argv[1])); print('open after exec')\n"
    "except OSError:\n    print('closed after exec')\n", str(s.fileno())])
"#;

#[test]
fn select_readv_writev_fionread_dup2_sendfile_congestion_and_exec_under_the_shim() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let _echo = kernel_echo_server(&ns, 7406, 1, PATIENCE);
    let out = finish(
        spawn_shimmed(&st, &python(), &["-c", MORE_CALLS, HOST_IP, "7406"]),
        "the calls program",
    );
    assert!(out.contains("fionread 4"), "{out}");
    assert!(out.contains("calls ok"), "{out}");
    assert!(out.contains("closed after exec"), "{out}");
}

/// Keep-alive with the socket's own timing: 1 s idle, 1 s between
/// probes, 2 probes. Once the test makes the stack's side lose every
/// frame, the unanswered probes end the connection with ETIMEDOUT.
const KEEPALIVE: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
s.settimeout(None)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
for opt, v in ((socket.TCP_KEEPIDLE, 1), (socket.TCP_KEEPINTVL, 1), (socket.TCP_KEEPCNT, 2)):
    s.setsockopt(socket.IPPROTO_TCP, opt, v)
got = [s.getsockopt(socket.IPPROTO_TCP, o) for o in
       (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)]
try:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 128)
    sys.exit("FAIL: TCP_KEEPCNT 128 was taken")
except OSError as e:
    assert e.errno == 22, e
print("armed", got, flush=True)
try:
    d = s.recv(10)
    print("FAIL: recv returned", d, flush=True)
except OSError as e:
    print("ended", e.errno, flush=True)
"#;

#[test]
fn keepalive_timing_set_on_the_socket_ends_a_dead_connection() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let _echo = kernel_echo_server(&ns, 7407, 1, PATIENCE);
    let mut bg = spawn_shimmed(&st, &python(), &["-c", KEEPALIVE, HOST_IP, "7407"]);
    let armed = wait_line(&mut bg, "armed", PATIENCE);
    assert!(armed.contains("[1, 1, 2]"), "{armed}");
    // Every frame the stack sends is lost from now on: the probes too.
    let o = st.strata(&["qdisc", "strata0", "loss", "100%"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = finish(bg, "the keep-alive program");
    assert!(out.contains("ended 110"), "{out}\nlog:\n{}", st.log_text());
    assert!(st.counter("tcpd", "keepalive_probes") >= 2);
}

/// Kernel side: accepts two connections, one after the other, and says
/// how each ended as the kernel saw it: "eof" (FIN) or "reset" (RST).
const HOW_ENDED: &str = r#"
import socket, sys
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(4)
print("listening", flush=True)
for n in (1, 2):
    c, _ = l.accept()
    c.settimeout(60)
    try:
        while c.recv(65536):
            pass
        print(n, "eof", flush=True)
    except ConnectionResetError:
        print(n, "reset", flush=True)
"#;

/// Under the shim: one connection closed as usual, then one with
/// SO_LINGER and a zero time (what it sent may be dropped, as on Linux).
const LINGER: &str = r#"
import socket, struct, sys
for linger in (None, (1, 0)):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
    if linger:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", *linger))
        got = struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
        assert got == linger, got
    s.sendall(b"hello")
    s.close()
print("closed both", flush=True)
"#;

#[test]
fn so_linger_with_a_zero_time_resets_at_close_and_plain_close_sends_fin() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut kernel = ns.spawn(&["python3", "-c", HOW_ENDED, HOST_IP, "7408"]);
    wait_line(&mut kernel, "listening", PATIENCE);
    let out = finish(
        spawn_shimmed(&st, &python(), &["-c", LINGER, HOST_IP, "7408"]),
        "the linger program",
    );
    assert!(out.contains("closed both"), "{out}");
    let seen = kernel.wait_output(PATIENCE).expect("the kernel side ends");
    assert!(seen.contains("1 eof"), "{seen}");
    assert!(seen.contains("2 reset"), "{seen}");
}

/// Under the shim: two TCP listeners and two UDP sockets share port
/// 7409 with SO_REUSEPORT; a third socket without it is refused. Each
/// answers a peer with its number (0, 1: TCP; 2, 3: UDP).
const REUSEPORT: &str = r#"
import errno, select, socket, sys
def shared(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    s.bind(("0.0.0.0", 7409))
    return s
socks = [shared(k) for k in [socket.SOCK_STREAM] * 2 + [socket.SOCK_DGRAM] * 2]
for l in socks[:2]:
    l.listen(64)
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    x = socket.socket(socket.AF_INET, kind)
    try:
        # TCP: the bind may be refused at listen, where the stack binds.
        x.bind(("0.0.0.0", 7409))
        if kind == socket.SOCK_STREAM:
            x.listen(1)
        sys.exit("a socket without SO_REUSEPORT joined the port")
    except OSError as e:
        assert e.errno == errno.EADDRINUSE, e
    x.close()
print("listening", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        n = b"%d" % socks.index(s)
        if s.type == socket.SOCK_STREAM:
            c, _ = s.accept()
            c.sendall(n)
            c.close()
        else:
            _, peer = s.recvfrom(100)
            s.sendto(n, peer)
"#;

/// Kernel side: new TCP connections, then UDP datagrams from new source
/// ports, until every one of the four sockets has answered (bounded).
const REUSEPORT_PEERS: &str = r#"
import socket, sys
seen = set()
for i in range(400):
    if {0, 1} <= seen:
        break
    s = socket.create_connection((sys.argv[1], 7409), timeout=60)
    seen.add(int(s.recv(10)))
    s.close()
for i in range(400):
    if {2, 3} <= seen:
        break
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(60)
    u.sendto(b"?", (sys.argv[1], 7409))
    seen.add(int(u.recvfrom(10)[0]))
    u.close()
print("answered by", sorted(seen), flush=True)
"#;

/// As another user (nobody), under the shim: joining the port with
/// SO_REUSEPORT is refused, TCP and UDP.
const REUSEPORT_INTRUDER: &str = r#"
import errno, socket
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    x = socket.socket(socket.AF_INET, kind)
    x.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        x.bind(("0.0.0.0", 7409))
        if kind == socket.SOCK_STREAM:
            x.listen(1)
        print("joined", kind, flush=True)
    except OSError as e:
        print("refused", errno.errorcode[e.errno], flush=True)
"#;

#[test]
fn so_reuseport_spreads_peers_over_one_users_sockets_and_keeps_others_out() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut server = spawn_shimmed(&st, &python(), &["-c", REUSEPORT]);
    wait_line(&mut server, "listening", PATIENCE);
    let out = ns.run_ok(&["python3", "-c", REUSEPORT_PEERS, STACK_IP]);
    assert!(out.contains("answered by [0, 1, 2, 3]"), "{out}");
    // The system's python, which user nobody can run (a pyenv one may
    // live under /root).
    let sys_python = "/usr/bin/python3";
    assert!(
        Path::new(sys_python).exists(),
        "{sys_python} is missing (apt-get install python3)"
    );
    let mut intruder = shimmed(&st, "setpriv", &[]);
    intruder.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        sys_python,
        "-c",
        REUSEPORT_INTRUDER,
    ]);
    let out = finish(
        Bg::new(intruder.spawn().expect("setpriv (util-linux)")),
        "the other user's program",
    );
    assert_eq!(out.matches("refused EADDRINUSE").count(), 2, "{out}");
    assert!(server.alive(), "the server died");
}

/// Under the shim: blocked in `accept`, a signal whose handler returns
/// runs it at once (the call goes on, as Python retries after EINTR);
/// blocked in `recv`, a handler that raises ends the call.
const SIGNALS: &str = r#"
import signal, socket, sys
class Stop(Exception):
    pass
def stop(*_):
    raise Stop()
signal.signal(signal.SIGUSR1, stop)
signal.signal(signal.SIGUSR2, lambda *_: print("handler ran", flush=True))
l = socket.socket()
l.bind(("0.0.0.0", 7410))
l.listen(4)
print("listening", flush=True)
c, _ = l.accept()
print("accepted", flush=True)
try:
    c.recv(10)
    print("recv returned", flush=True)
except Stop:
    print("recv interrupted", flush=True)
"#;

#[test]
fn a_signal_interrupts_a_blocking_call_on_a_strata_socket() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut prog = spawn_shimmed(&st, &python(), &["-c", SIGNALS]);
    let pid = prog.child.id();
    wait_line(&mut prog, "listening", PATIENCE);
    let signal = |sig| {
        st.wait_for("the program blocked in its call", PATIENCE, || {
            process_blocked_in_wait(pid)
        });
        // SAFETY: kill takes a pid (our child's) and a signal number.
        assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
    };
    signal(libc::SIGUSR2);
    // Printed by the handler, before any connection came.
    wait_line(&mut prog, "handler ran", PATIENCE);
    let mut client = ns.spawn(&[
        "python3",
        "-c",
        "import socket,sys\n\
         s=socket.create_connection((sys.argv[1],7410),timeout=60)\n\
         print('connected',flush=True)\n\
         s.recv(1)",
        STACK_IP,
    ]);
    wait_line(&mut client, "connected", PATIENCE);
    wait_line(&mut prog, "accepted", PATIENCE);
    signal(libc::SIGUSR1);
    let out = finish(prog, "the signalled program");
    assert!(out.contains("recv interrupted"), "{out}");
}

/// Under the shim: the parent accepts and forks; the child answers the
/// connection only after the test said "go" on stdin (sockd restarted
/// meanwhile), then reads the peer's reply.
const FORK_ACROSS_RESTART: &str = r#"
import os, socket, sys
l = socket.socket()
l.bind(("0.0.0.0", 7411))
l.listen(4)
print("listening", flush=True)
c, _ = l.accept()
pid = os.fork()
if pid == 0:
    l.close()
    print("child ready", flush=True)
    sys.stdin.readline()
    c.sendall(b"from the child\n")
    got = b""
    while not got.endswith(b"\n"):
        d = c.recv(100)
        if not d:
            break
        got += d
    print("child got", got.decode().strip(), flush=True)
    c.close()
    os._exit(0)
c.close()
_, status = os.waitpid(pid, 0)
print("child exited", status, flush=True)
# Alive until told: the child's close alone must end the connection.
sys.stdin.readline()
"#;

#[test]
fn a_forked_child_keeps_its_socket_across_a_sockd_restart() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut cmd = shimmed(&st, &python(), &["-c", FORK_ACROSS_RESTART]);
    let mut server = Bg::new(cmd.stdin(Stdio::piped()).spawn().expect("spawn"));
    wait_line(&mut server, "listening", PATIENCE);
    let client = ns.spawn(&[
        "python3",
        "-c",
        "import socket,sys\n\
         s=socket.create_connection((sys.argv[1],7411),timeout=120)\n\
         f=s.makefile('rb')\n\
         line=f.readline()\n\
         s.sendall(b'ack\\n')\n\
         print('got', line.decode().strip(), flush=True)\n\
         print('then', f.read().decode(), 'eof', flush=True)",
        STACK_IP,
    ]);
    wait_line(&mut server, "child ready", PATIENCE);
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    let mut stdin = server.child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("write to the program");
    stdin.flush().expect("flush");
    let line = wait_line(&mut server, "child got", PATIENCE);
    assert!(
        line.contains("child got ack"),
        "{line}\nlog:\n{}",
        st.log_text()
    );
    wait_line(&mut server, "child exited 0", PATIENCE);
    // The parent still runs (and holds its session): the end the client
    // sees is the child's close.
    let seen = client
        .wait_output(PATIENCE)
        .expect("the kernel client ends");
    assert!(seen.contains("got from the child"), "{seen}");
    assert!(seen.contains("then  eof"), "{seen}");
    stdin.write_all(b"done\n").expect("write to the program");
    drop(stdin);
    finish(server, "the forking program");
}
