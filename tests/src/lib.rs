//! Support for the integration tests: private network namespaces, a
//! strata instance started inside one, and the kernel's own tools as the
//! peer. Everything here tears itself down on drop, also when a test
//! fails.

/// A well-behaved kernel-side client: echoes 10 MB through the port on
/// the stack given as its argument (`python3 -c ECHO_10MB PORT`), sending
/// and receiving at once, and prints `ok` if every byte came back.
pub const ECHO_10MB: &str = r#"
import os, socket, sys, threading
data = os.urandom(10_000_000)
s = socket.create_connection(("10.77.0.2", int(sys.argv[1])), timeout=120)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
got = bytearray()
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    got += b
t.join()
print("ok" if got == data else "differs: %d of %d bytes" % (len(got), len(data)))
"#;

/// A kernel-side UDP client: sends the numbers 0 to N-1 (its argument,
/// `python3 -c UDP_ECHO_ROUNDS N`) one at a time to port 7 on the stack,
/// checks each echo, and prints `ok`.
pub const UDP_ECHO_ROUNDS: &str = r#"
import socket, sys
s = socket.socket(2, 2)
s.settimeout(10)
for i in range(int(sys.argv[1])):
    s.sendto(b'%d' % i, ('10.77.0.2', 7))
    assert s.recv(100) == b'%d' % i
print('ok')
"#;

/// The value of `field` (e.g. `Uid:`) in `/proc/PID/status` of `pid`
/// ("self" for this process), trimmed.
pub fn status_field(pid: impl std::fmt::Display, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field));
    line.unwrap_or_else(|| panic!("no {field} in {status}"))[field.len()..]
        .trim()
        .to_string()
}

mod raw_client;
pub mod vm;
pub use raw_client::{connect_sockd, RawClient, RAW_SEGMENT};

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for names (namespaces, instances).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The directory holding the workspace's binaries (`strata`, the layers),
/// from `STRATA_BIN_DIR` or next to the test executable's `deps/`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STRATA_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>/deps/..")
        .to_path_buf();
    assert!(
        dir.join("strata").exists(),
        "{}/strata not built: run the tests with `cargo test --release --workspace`",
        dir.display()
    );
    dir
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/..")
        .to_path_buf()
}

/// A library the workspace builds (`file`, e.g. `libstrata.so`, of
/// package `package`), built now with `$CARGO` into `target/<profile>/`
/// (at once when it is up to date). Always asked of cargo rather than
/// found: `cargo test --workspace` does not rebuild a package's cdylib,
/// so a copy lying in `target/` may be stale.
pub fn workspace_lib(package: &str, file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let profile = deps.parent().expect("target/<profile>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "--offline", "-p", package, "--manifest-path"])
        .arg(workspace_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(profile.parent().expect("target/"));
    if profile.file_name().is_some_and(|n| n == "release") {
        c.arg("--release");
    }
    let out = c.output().expect("cargo");
    assert!(
        out.status.success(),
        "building {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = profile.join(file);
    assert!(built.exists(), "no {built:?} after building {package}");
    built
}

/// A temporary directory of the test's own, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory named after `prefix`.
    pub fn new(prefix: &str) -> TempDir {
        let d = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&d).expect("create a temporary directory");
        TempDir(d)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Its path as a string (temporary directories are UTF-8).
    pub fn path_str(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A network namespace of the test's own, deleted on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates a fresh namespace with loopback up.
    pub fn new() -> Netns {
        let name = unique("strata-t");
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip (iproute2) installed");
        assert!(st.success(), "ip netns add {name}");
        let ns = Netns { name };
        ns.run_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs `prog` inside the namespace.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// The kernel's `python3 -m http.server` in the namespace, serving
    /// `dir` on `ip:port`, once it says it serves (within `ready`).
    pub fn http_server(&self, ip: &str, port: u16, dir: &std::path::Path, ready: Duration) -> Bg {
        let mut server = self.spawn(&[
            "python3",
            "-u",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            ip,
            "--directory",
            dir.to_str().expect("a UTF-8 path"),
        ]);
        wait_line(&mut server, "Serving HTTP", ready);
        server
    }

    /// Runs `args` inside the namespace and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", args[0]))
    }

    /// Runs `args` inside the namespace; panics with its output on failure.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{:?} failed: {}\n{}",
            args,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// A background process, killed (SIGKILL) and reaped on drop.
pub struct Bg {
    /// The process.
    pub child: Child,
    /// Its stdout, line by line, once [`wait_line`] started reading it.
    lines: Option<std::sync::mpsc::Receiver<String>>,
}

impl Bg {
    /// Wraps a process started elsewhere.
    pub fn new(child: Child) -> Bg {
        Bg { child, lines: None }
    }

    /// Waits for it to exit, up to `timeout`; its stdout if it did.
    pub fn wait_output(mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => {
                    let mut s = String::new();
                    if let Some(rx) = self.lines.take() {
                        // What `wait_line` has not consumed; its reader
                        // thread ends at EOF.
                        while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
                            s.push_str(&l);
                            s.push('\n');
                        }
                    } else if let Some(mut o) = self.child.stdout.take() {
                        let _ = std::io::Read::read_to_string(&mut o, &mut s);
                    }
                    return Some(s);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return None,
            }
        }
    }

    /// Writes `line` and a newline to its stdin (started with
    /// [`Netns::spawn_stdin`]).
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin piped");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to the process's stdin");
    }

    /// True while it runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Netns {
    /// Starts `args` in the namespace in the background, stdout piped.
    pub fn spawn(&self, args: &[&str]) -> Bg {
        self.spawn_with(args, Stdio::inherit())
    }

    /// [`Netns::spawn`] with stdin piped too ([`Bg::send_line`]).
    pub fn spawn_stdin(&self, args: &[&str]) -> Bg {
        self.spawn_with(args, Stdio::piped())
    }

    fn spawn_with(&self, args: &[&str], stdin: Stdio) -> Bg {
        let child = self
            .cmd(args[0])
            .args(&args[1..])
            .stdin(stdin)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
        Bg { child, lines: None }
    }
}

/// Every layer of a stack with one interface, as `strata status` names
/// them.
pub const LAYERS: [&str; 7] = [
    "driverd0", "netdevd", "filterd", "ipd", "tcpd", "udpd", "sockd",
];

/// The configuration [`Stack::up`] uses: one TAP, the stack at
/// [`STACK_IP`]/24 and the kernel side at [`HOST_IP`]/24, then `extra`.
pub fn tap_config(extra: &str) -> String {
    format!(
        "[[interface]]\nname = \"strata0\"\ndriver = \"tap\"\n\
         mac = \"02:53:54:00:00:01\"\naddresses = [\"{STACK_IP}/24\"]\n\
         host_addresses = [\"{HOST_IP}/24\"]\n{extra}"
    )
}

/// The stack's IPv6 address in [`tap_config6`].
pub const STACK_IP6: &str = "fd00:77::2";
/// The kernel side's IPv6 address in [`tap_config6`].
pub const HOST_IP6: &str = "fd00:77::1";

/// [`tap_config`] with both families: the stack also at
/// [`STACK_IP6`]/64 and the kernel side at [`HOST_IP6`]/64, then `extra`.
pub fn tap_config6(extra: &str) -> String {
    format!(
        "[[interface]]\nname = \"strata0\"\ndriver = \"tap\"\n\
         mac = \"02:53:54:00:00:01\"\n\
         addresses = [\"{STACK_IP}/24\", \"{STACK_IP6}/64\"]\n\
         host_addresses = [\"{HOST_IP}/24\", \"{HOST_IP6}/64\"]\n{extra}"
    )
}

/// Whether this kernel makes AF_XDP sockets (CONFIG_XDP_SOCKETS).
pub fn af_xdp_available() -> bool {
    // SAFETY: socket(2) with constants; the fd, if any, is closed here.
    let fd = unsafe { libc::socket(44, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(fd) };
    }
    fd >= 0
}

/// A veth pair for the AF_XDP driver, one queue each way (the stack
/// serves queue 0): `xs0` in `stack`'s namespace, up and without an
/// address (the stack drives it), `xk0` in `peer`'s with [`HOST_IP`]/24.
/// Both go with their namespaces. The kernel leaves the transport
/// checksum of what it sends over a veth to be completed, and XDP hands
/// the frame over as it is, so the peer computes its checksums (`ethtool
/// -K xk0 tx off`; a NIC's frames come complete).
pub fn af_xdp_veth(stack: &Netns, peer: &Netns) {
    stack.run_ok(&[
        "ip",
        "link",
        "add",
        "xs0",
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "type",
        "veth",
        "peer",
        "name",
        "xk0",
        "numtxqueues",
        "1",
        "numrxqueues",
        "1",
        "netns",
        &peer.name,
    ]);
    stack.run_ok(&["ip", "link", "set", "xs0", "up"]);
    peer.run_ok(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", "xk0"]);
    peer.run_ok(&["ip", "link", "set", "xk0", "up"]);
    let o = peer
        .cmd("ethtool")
        .args(["-K", "xk0", "tx", "off"])
        .output()
        .expect("ethtool is missing (apt-get install ethtool)");
    assert!(o.status.success(), "ethtool -K xk0 tx off: {o:?}");
}

/// The configuration of a stack on [`af_xdp_veth`]'s `xs0` at
/// [`STACK_IP`]/24, then `extra`.
pub fn af_xdp_config(extra: &str) -> String {
    format!(
        "[[interface]]\nname = \"x0\"\ndriver = \"af_xdp\"\ndevice = \"xs0\"\n\
         mac = \"02:53:54:00:00:07\"\naddresses = [\"{STACK_IP}/24\"]\n{extra}"
    )
}

/// The configuration of one end (`side` "a" or "b") of pair link `link`:
/// interface `p<side>` with address `ip`/24 and MAC `mac`. The link name
/// gets the test process's id, so that concurrent tests never share one.
pub fn pair_config(link: &str, side: &str, ip: &str, mac: &str) -> String {
    format!(
        "[[interface]]\nname = \"p{side}\"\ndriver = \"pair\"\nlink = \"{link}{}\"\nside = \"{side}\"\n\
         mac = \"{mac}\"\naddresses = [\"{ip}/24\"]\n",
        std::process::id()
    )
}

/// Starts a workspace binary (an example) against `stack`'s instance, in
/// the host namespace (applications reach the stack through sockd's Unix
/// socket, not through a network namespace).
pub fn spawn_app(stack: &Stack, name: &str, args: &[&str]) -> Bg {
    let child = Command::new(bin(name))
        .args(args)
        .env("STRATA_INSTANCE", &stack.instance)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    Bg { child, lines: None }
}

/// Reads lines from a background process's stdout until one contains
/// `what` (or panics after `timeout`).
pub fn wait_line(bg: &mut Bg, what: &str, timeout: Duration) -> String {
    if bg.lines.is_none() {
        let out = bg.child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        bg.lines = Some(rx);
    }
    let rx = bg.lines.as_ref().unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(_) => panic!("no line containing {what:?} within {timeout:?}"),
        }
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The stack's address in the default test configuration.
pub const STACK_IP: &str = "10.77.0.2";
/// The kernel side's address in the default test configuration.
pub const HOST_IP: &str = "10.77.0.1";

/// A strata instance running inside a namespace; stopped on drop.
pub struct Stack {
    /// Instance name.
    pub instance: String,
    child: Option<Child>,
    log: PathBuf,
    config: PathBuf,
}

impl Stack {
    /// Starts strata in `ns` with one TAP interface, stack 10.77.0.2/24
    /// and kernel side 10.77.0.1/24, and waits for its ready line.
    pub fn up(ns: &Netns) -> Stack {
        Self::up_with(ns, "")
    }

    /// As [`Stack::up`], with extra TOML appended to the configuration.
    pub fn up_with(ns: &Netns, extra: &str) -> Stack {
        Self::up_config(ns, &tap_config(extra))
    }

    /// Starts strata in `ns` with `body` as its configuration (the
    /// instance name is added).
    pub fn up_config(ns: &Netns, body: &str) -> Stack {
        Self::up_config_env(ns, body, &[])
    }

    /// As [`Stack::up_config`], with `env` added to the launcher's
    /// environment (its layers inherit it: fault hooks).
    pub fn up_config_env(ns: &Netns, body: &str, env: &[(&str, &str)]) -> Stack {
        let instance = unique("t");
        let cfg = format!("instance = \"{instance}\"\n\n{body}");
        let config = std::env::temp_dir().join(format!("{instance}.toml"));
        std::fs::write(&config, cfg).expect("write config");
        let log = std::env::temp_dir().join(format!("{instance}.log"));
        let logf = std::fs::File::create(&log).expect("log file");
        let mut child = ns
            .cmd(bin("strata").to_str().unwrap())
            .args(["up", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(logf)
            .spawn()
            .expect("spawn strata up");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut st = Stack {
            instance,
            child: Some(child),
            log,
            config,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.contains("ready") => st,
            other => {
                let log = st.log_text();
                st.stop();
                panic!("strata did not come up: {other:?}\nlog:\n{log}");
            }
        }
    }

    /// The launcher's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `strata --instance <ours> args` (from the host namespace: the
    /// control socket lives on the filesystem).
    pub fn strata(&self, args: &[&str]) -> Output {
        Command::new(bin("strata"))
            .arg("--instance")
            .arg(&self.instance)
            .args(args)
            .output()
            .expect("run strata")
    }

    /// Injects 2% loss, 1% reordering and 1% duplication into both
    /// directions of strata0 (the faults TCP must survive).
    pub fn inject_faults(&self) {
        for dir in ["egress", "ingress"] {
            let o = self.strata(&[
                "qdisc",
                "strata0",
                dir,
                "loss",
                "2%",
                "reorder",
                "1%",
                "duplicate",
                "1%",
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }

    /// `strata filter WORDS` (split at blanks), which must succeed.
    pub fn filter(&self, words: &str) {
        let mut args = vec!["filter"];
        args.extend(words.split_whitespace());
        let o = self.strata(&args);
        assert!(
            o.status.success(),
            "strata filter {words}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `strata <cmd> --json`, parsed.
    pub fn json(&self, cmd: &str) -> Value {
        let o = self.strata(&[cmd, "--json"]);
        assert!(
            o.status.success(),
            "strata {cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("json")
    }

    /// A counter of a layer from `strata stats`.
    pub fn counter(&self, layer: &str, name: &str) -> u64 {
        self.json("stats")["layers"][layer][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {layer}.{name}"))
    }

    /// Buffers in use in the pool.
    pub fn pool_in_use(&self) -> u64 {
        self.json("status")["pool"]["in_use"].as_u64().unwrap()
    }

    /// Restarts recorded for a layer.
    pub fn restarts(&self, layer: &str) -> u64 {
        self.layer_status(layer)["restarts"].as_u64().unwrap()
    }

    /// A layer's row of `strata status --json`.
    pub fn layer_status(&self, layer: &str) -> Value {
        layer_of(&self.json("status"), layer).clone()
    }

    /// The pid of a layer's running instance.
    pub fn layer_pid(&self, layer: &str) -> i32 {
        let pid = self.layer_status(layer)["pid"].as_i64().unwrap() as i32;
        assert!(pid > 0, "{layer} has no pid");
        pid
    }

    /// `strata kill LAYER`; returns the layer's restart count before it,
    /// for [`wait_restarted`](Self::wait_restarted).
    pub fn kill_layer(&self, layer: &str) -> u64 {
        let before = self.restarts(layer);
        let o = self.strata(&["kill", layer]);
        assert!(
            o.status.success(),
            "kill {layer}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        before
    }

    /// Waits for a layer's restart count to pass `before`.
    pub fn wait_restarted(&self, layer: &str, before: u64) {
        self.wait_for(
            &format!("{layer} restarted"),
            Duration::from_secs(10),
            || self.restarts(layer) > before,
        );
    }

    /// Waits until the stack holds IPv6 address `addr` and it has passed
    /// duplicate address detection (`strata addr` shows it, not tentative).
    pub fn wait_dad(&self, addr: &str) {
        self.wait_for(
            &format!("{addr} to pass duplicate address detection"),
            Duration::from_secs(30),
            || {
                self.json("addr")["interfaces"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|i| i["addr_info"].as_array().cloned().unwrap_or_default())
                    .any(|a| a["local"] == addr && a.get("tentative").is_none())
            },
        );
    }

    /// Waits until `f` holds, polling, or panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\nlog:\n{}\nss --info:\n{}\nstats:\n{}",
                    self.log_text(),
                    String::from_utf8_lossy(&self.strata(&["ss", "--info"]).stdout),
                    String::from_utf8_lossy(&self.strata(&["stats"]).stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the launcher (SIGTERM) and waits; true if it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        // SAFETY: kill takes no pointers; the pid is our child, not yet reaped
        // (we hold its Child), so it cannot name another process.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c.try_wait() {
                Ok(Some(st)) => {
                    let _ = std::fs::remove_file(&self.config);
                    return st.success();
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    // It did not stop in time (a loaded machine): killed,
                    // it leaves its layers, its fabric and its runtime
                    // directory, which go here.
                    let _ = c.kill();
                    let _ = c.wait();
                    kill_layers_of(&self.instance);
                    let _ = std::fs::remove_file(&self.config);
                    let shm = strata_ipc::fabric::shm_name(&self.instance);
                    let _ = std::fs::remove_file(std::path::Path::new("/dev/shm").join(shm));
                    let _ = std::fs::remove_dir_all(strata_ipc::runtime::run_dir(&self.instance));
                    return false;
                }
            }
        }
    }
}

/// Kills the layers of `instance` (processes whose environment names it
/// as `STRATA_INSTANCE` and that are strata layers), by pid.
fn kill_layers_of(instance: &str) {
    let want = format!("STRATA_INSTANCE={instance}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut vars = env.split(|&b| b == 0);
        let ours = vars.clone().any(|v| v == want.as_bytes());
        let layer = vars.any(|v| v.starts_with(b"STRATA_LAYER="));
        if ours && layer {
            // SAFETY: kill takes no pointers; the pid is a layer of our
            // own stack, read from /proc just now.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("launcher log kept at {}", self.log.display());
        }
    }
}

/// Summary of a `ping` run.
#[derive(Debug)]
pub struct PingResult {
    /// Echo requests sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// Sequence numbers answered.
    pub seqs: Vec<u32>,
    /// ping complained about the payload of a reply.
    pub corrupted: bool,
    /// Full output.
    pub text: String,
}

impl PingResult {
    /// The longest run of consecutive unanswered sequence numbers.
    pub fn longest_gap(&self) -> u32 {
        let mut s = self.seqs.clone();
        s.sort_unstable();
        let mut prev = 0;
        let mut gap = 0;
        for &q in &s {
            gap = gap.max(q.saturating_sub(prev + 1));
            prev = q;
        }
        gap.max(self.sent.saturating_sub(prev))
    }
}

/// Runs the kernel's ping inside `ns` with `args` and parses the result.
pub fn ping(ns: &Netns, args: &[&str]) -> PingResult {
    let mut a = vec!["ping"];
    a.extend_from_slice(args);
    let o = ns.run(&a);
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let mut sent = 0;
    let mut received = 0;
    let mut seqs = Vec::new();
    for l in text.lines() {
        if l.contains("packets transmitted") {
            let nums: Vec<u32> = l
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            if nums.len() >= 2 {
                sent = nums[0];
                received = nums[1];
            }
        }
        if let Some(i) = l.find("icmp_seq=") {
            let rest = &l[i + 9..];
            let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(n) = n.parse() {
                if !l.contains("DUP") {
                    seqs.push(n);
                }
            }
        }
    }
    let corrupted = text.contains("wrong data byte") || text.contains("wrong byte");
    PingResult {
        sent,
        received,
        seqs,
        corrupted,
        text,
    }
}

/// The sha256 of a file, as `sha256sum` prints it.
pub fn sha256_file(path: &std::path::Path) -> String {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(o.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Writes `len` random bytes to `path`; returns their sha256.
pub fn random_file(path: &std::path::Path, len: u64) -> String {
    let ok = Command::new("head")
        .args(["-c", &len.to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(path).expect("create"))
        .status()
        .expect("head");
    assert!(ok.success());
    sha256_file(path)
}

/// A layer's row in a `strata status --json` answer.
pub fn layer_of<'a>(status: &'a Value, layer: &str) -> &'a Value {
    status["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == layer)
        .unwrap_or_else(|| panic!("no layer {layer}"))
}

/// Runs `f` on a thread; its result, or a panic after `timeout` (a call
/// that hangs fails the test instead of hanging it).
pub fn bounded<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Waiter<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    Waiter {
        what: what.to_string(),
        timeout,
        rx,
    }
}

/// The result of a [`bounded`] call, to come.
pub struct Waiter<T> {
    what: String,
    timeout: Duration,
    rx: std::sync::mpsc::Receiver<T>,
}

impl<T> Waiter<T> {
    /// The result; panics with `st`'s log if it takes too long.
    pub fn join(self, st: &Stack) -> T {
        match self.rx.recv_timeout(self.timeout) {
            Ok(v) => v,
            Err(_) => panic!(
                "{} did not finish within {:?}\nlog:\n{}\nSS:\n{}\nSTATS:\n{}",
                self.what,
                self.timeout,
                st.log_text(),
                String::from_utf8_lossy(&st.strata(&["ss", "--info"]).stdout),
                String::from_utf8_lossy(&st.strata(&["stats"]).stdout)
            ),
        }
    }
}

/// A kernel echo server on [`HOST_IP`]:`port` for `n` connections, one
/// thread each; returned once it listens (within `ready`).
pub fn kernel_echo_server(ns: &Netns, port: u16, n: usize, ready: Duration) -> Bg {
    let mut bg = ns.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket,threading\n\
             l=socket.socket()\n\
             l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             l.bind(('{HOST_IP}',{port}))\n\
             l.listen(64)\n\
             print('listening',flush=True)\n\
             def echo(c):\n    \
                 while True:\n        \
                     d=c.recv(65536)\n        \
                     if not d: break\n        \
                     c.sendall(d)\n    \
                 c.close()\n\
             ts=[]\n\
             for _ in range({n}):\n    \
                 c,_=l.accept()\n    \
                 t=threading.Thread(target=echo,args=(c,))\n    \
                 t.start()\n    \
                 ts.append(t)\n\
             for t in ts: t.join()\n\
             print('done',flush=True)"
        ),
    ]);
    wait_line(&mut bg, "listening", ready);
    bg
}

/// Connects from the stack to a [`kernel_echo_server`], sends `data`,
/// shuts down writing and reads the echo to the end.
pub fn connect_and_echo(
    b: libsock::Builder,
    port: u16,
    data: std::sync::Arc<Vec<u8>>,
) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let s = b.tcp_connect(format!("{HOST_IP}:{port}"))?;
    let r = s.try_clone()?;
    let reader = std::thread::spawn(move || {
        let mut back = Vec::new();
        (&r).read_to_end(&mut back).map(|_| back)
    });
    (&s).write_all(&data)?;
    s.shutdown(libsock::Shutdown::Write)?;
    reader.join().unwrap()
}

/// The application side of an echo through the stack: everything to end
/// of stream, sent back, then shutdown; returns the bytes echoed.
pub fn echo_to_eof(mut s: libsock::TcpStream) -> std::io::Result<usize> {
    use std::io::{Read, Write};
    let mut data = Vec::new();
    s.read_to_end(&mut data)?;
    s.write_all(&data)?;
    s.shutdown(libsock::Shutdown::Write)?;
    Ok(data.len())
}

/// Uploads `data` from namespace `from` to a socat listener in `to` (`listen`
/// its socat address, e.g. `TCP-LISTEN:9000,bind=10.0.0.2,reuseaddr`;
/// `connect` the client's, e.g. `TCP:10.0.0.2:9000`; `port` the one it
/// listens on) and panics unless the listener wrote exactly `data`.
/// Files live in `dir`.
pub fn socat_upload(
    st: &Stack,
    from: &Netns,
    to: &Netns,
    (listen, port, connect): (&str, u16, &str),
    data: &[u8],
    dir: &std::path::Path,
) {
    let src = dir.join("up.bin");
    std::fs::write(&src, data).unwrap();
    let dst = dir.join("uploaded.bin");
    let listener = to.spawn(&["socat", "-u", listen, &format!("CREATE:{}", dst.display())]);
    st.wait_for("socat listening", Duration::from_secs(20), || {
        to.run_ok(&["ss", "-Htln", "sport", "=", &format!(":{port}")])
            .contains(&port.to_string())
    });
    from.run_ok(&[
        "timeout",
        "60",
        "socat",
        "-u",
        &format!("OPEN:{}", src.display()),
        connect,
    ]);
    assert!(
        listener.wait_output(Duration::from_secs(10)).is_some(),
        "the listener did not see the end of the upload"
    );
    assert!(std::fs::read(&dst).unwrap() == data, "upload corrupted");
}

/// `len` pseudo-random bytes from `seed` (xorshift32).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Waits until `f` holds, polling every 20 ms, or panics after `timeout`
/// (for conditions outside a [`Stack`], whose log [`Stack::wait_for`]
/// would print).
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a TCP socket listens on `port` in `ns` (the kernel's `ss`
/// lists it), for peers such as socat that do not say when they listen.
pub fn wait_tcp_listening(ns: &Netns, port: u16, timeout: Duration) {
    let sport = format!(":{port}");
    wait_until(&format!("a listener on port {port}"), timeout, || {
        ns.run_ok(&["ss", "-Htln", "sport", "=", &sport])
            .contains(&sport)
    });
}

/// The calling thread's id (for [`blocked_in_poll`]).
pub fn gettid() -> i32 {
    // SAFETY: gettid takes nothing and cannot fail.
    unsafe { libc::gettid() }
}

/// True while thread `tid` of this process waits in a blocking libsock
/// call (accept, recv, connect) for sockd to wake it: asleep on its
/// socket's futex (or in poll(2), as a call on a readiness fd waits).
pub fn blocked_in_wait(tid: i32) -> bool {
    in_wait(&format!("/proc/self/task/{tid}/syscall"))
}

/// True while the main thread of process `pid` so waits (a program under
/// the shim blocked in a call on a strata socket).
pub fn process_blocked_in_wait(pid: u32) -> bool {
    in_wait(&format!("/proc/{pid}/syscall"))
}

/// Whether the `/proc/.../syscall` file at `path` names poll or ppoll,
/// or a futex wait on shared memory (`FUTEX_WAIT` without
/// `FUTEX_PRIVATE_FLAG`, which locks within a process use): libsock's
/// sleep on a socket.
fn in_wait(path: &str) -> bool {
    let Ok(s) = std::fs::read_to_string(path) else {
        return false;
    };
    let mut words = s.split_whitespace();
    let Some(nr) = words.next().and_then(|w| w.parse::<i64>().ok()) else {
        return false;
    };
    let op = words
        .nth(1)
        .and_then(|w| i64::from_str_radix(w.trim_start_matches("0x"), 16).ok());
    if nr == libc::SYS_futex {
        return op == Some(i64::from(libc::FUTEX_WAIT));
    }
    #[cfg(target_arch = "x86_64")]
    if nr == libc::SYS_poll {
        return true;
    }
    nr == libc::SYS_ppoll
}

impl Stack {
    /// Handles waiting in the ring from layer `from` to layer `to`
    /// (`strata status`), e.g. requests sockd sent a stopped tcpd.
    pub fn ring_len(&self, from: &str, to: &str) -> u64 {
        self.json("status")["rings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["from"] == from && r["to"] == to)
            .unwrap_or_else(|| panic!("no ring {from} -> {to}"))["len"]
            .as_u64()
            .unwrap()
    }

    /// The rows of `strata ss --json`.
    pub fn sockets(&self) -> Vec<Value> {
        self.json("ss")["sockets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A background process's stdout, collected line by line as it comes,
/// for a peer that keeps running while the test watches it (a ping, a
/// client in a loop).
pub struct Lines {
    all: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    eof: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Lines {
    /// The lines so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.all.lock().unwrap().clone()
    }

    /// The lines so far, joined.
    pub fn text(&self) -> String {
        self.snapshot().join("\n")
    }

    /// Waits for the end of the output (the process closed its stdout),
    /// up to `timeout`; the whole text.
    pub fn wait_eof(&self, timeout: Duration) -> String {
        wait_until("the end of the output", timeout, || {
            self.eof.load(Ordering::Acquire)
        });
        self.text()
    }
}

impl Bg {
    /// Starts collecting its stdout (not with [`wait_line`] as well).
    pub fn collect_lines(&mut self) -> Lines {
        let out = self
            .child
            .stdout
            .take()
            .expect("stdout piped, not read yet");
        let all = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let eof = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, e) = (all.clone(), eof.clone());
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                a.lock().unwrap().push(l);
            }
            e.store(true, Ordering::Release);
        });
        Lines { all, eof }
    }
}

/// The sequence numbers of the echo replies in `ping`'s output lines
/// (duplicates left out).
pub fn ping_reply_seqs(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter(|l| l.contains("bytes from") && !l.contains("DUP"))
        .filter_map(|l| {
            let rest = &l[l.find("icmp_seq=")? + 9..];
            let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            n.parse().ok()
        })
        .collect()
}

/// As [`ping`], for a run whose every request should be answered: the
/// same arguments, but ping runs without `-c` until the replies to
/// sequence numbers 1..=N are all in (however late each comes, up to a
/// deadline that is a bound for a hang), rather than giving the last
/// reply only ping's own linger of two round trips, which a busy machine
/// can miss. `sent` is N and `seqs` the answered numbers up to N; the
/// extra requests sent meanwhile are not counted.
pub fn ping_all(ns: &Netns, args: &[&str]) -> PingResult {
    let mut a = vec!["ping"];
    let mut n: u32 = 0;
    let mut interval = 1.0;
    let mut it = args.iter();
    while let Some(&w) = it.next() {
        match w {
            "-c" => n = it.next().and_then(|v| v.parse().ok()).expect("-c N"),
            "-W" | "-w" => {
                it.next();
            }
            "-i" => {
                let v = it.next().expect("-i INTERVAL");
                interval = v.parse().expect("-i INTERVAL");
                a.extend(["-i", v]);
            }
            _ => a.push(w),
        }
    }
    assert!(n > 0, "ping_all needs -c N");
    let mut bg = ns.spawn(&a);
    let lines = bg.collect_lines();
    let deadline = Instant::now() + Duration::from_secs_f64(f64::from(n) * interval + 20.0);
    let answered = |l: &Lines| {
        let mut s: Vec<u32> = ping_reply_seqs(&l.snapshot())
            .into_iter()
            .filter(|&q| (1..=n).contains(&q))
            .collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    while answered(&lines).len() < n as usize && Instant::now() < deadline && bg.alive() {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(bg);
    let text = lines.wait_eof(Duration::from_secs(10));
    let seqs = answered(&lines);
    let corrupted = text.contains("wrong data byte") || text.contains("wrong byte");
    PingResult {
        sent: n,
        received: seqs.len() as u32,
        seqs,
        corrupted,
        text,
    }
}

/// A kernel-side UDP client: sends datagrams of sizes 1..=8000 (a fixed
/// pattern of sizes, random bytes) one at a time to HOST:PORT (over the
/// family of HOST), waits for
/// each to come back (up to TIMEOUT s, then counts it lost), and reports.
/// With a count of 0 it runs until the file STOP exists, printing
/// `exchanged N` every 100 datagrams.
pub const UDP_ECHO_CLIENT: &str = r#"
import socket, os, sys
host, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
stop = sys.argv[5] if len(sys.argv) > 5 else None
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(timeout)
s.connect((host, port))
sent = bad = lost = nbytes = 0
i = 0
while (n and i < n) or (stop and not os.path.exists(stop)):
    if stop and sent % 100 == 0:
        print("exchanged", sent, flush=True)
    p = os.urandom(1 + (i * 7919) % 8000)
    s.send(p)
    sent += 1
    nbytes += len(p)
    while True:
        try:
            r = s.recv(70000)
        except socket.timeout:
            lost += 1
            break
        if r == p:
            break
        # A late echo of an earlier datagram (after a timeout) is not
        # corruption; anything else is.
        if len(r) != len(p) and len(r) == 1 + ((i - 1) * 7919) % 8000:
            continue
        bad += 1
        break
    i += 1
print("sent", sent, "bad", bad, "lost", lost, "bytes", nbytes)
"#;

/// What [`UDP_ECHO_CLIENT`] reported.
pub struct UdpReport {
    /// Datagrams sent.
    pub sent: u64,
    /// Echoes that came back different.
    pub bad: u64,
    /// Echoes that never came back.
    pub lost: u64,
    /// Payload bytes sent.
    pub bytes: u64,
}

/// [`UDP_ECHO_CLIENT`]'s last line, read.
pub fn parse_udp_report(out: &str) -> UdpReport {
    let w: Vec<&str> = out.split_whitespace().collect();
    let num = |k: &str| -> u64 {
        let i = w
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("{out}"));
        w[i + 1].parse().unwrap()
    };
    UdpReport {
        sent: num("sent"),
        bad: num("bad"),
        lost: num("lost"),
        bytes: num("bytes"),
    }
}

/// Runs [`UDP_ECHO_CLIENT`] in `ns` against `host`:`port` for `n`
/// datagrams, each given `timeout` seconds.
pub fn udp_echo_client(ns: &Netns, host: &str, port: u16, n: u64, timeout: f64) -> UdpReport {
    let out = ns.run_ok(&[
        "python3",
        "-c",
        UDP_ECHO_CLIENT,
        host,
        &port.to_string(),
        &n.to_string(),
        &timeout.to_string(),
    ]);
    parse_udp_report(&out)
}

/// Says what both sides know of a TCP connection a kernel client found
/// stuck (a line `ok <n> stuck <port> ...`), then fails.
pub fn stuck_report(ns: &Netns, st: &Stack, line: &str) -> ! {
    let port = line.split_whitespace().nth(3).unwrap_or("0");
    let row: Vec<_> = st
        .sockets()
        .into_iter()
        .filter(|x| x.to_string().contains(&format!(":{port}\"")))
        .collect();
    let kernel = ns.run(&["ss", "-tnie", "sport", "=", &format!(":{port}")]);
    // The kernel's side of the link: frames it dropped because driverd
    // did not read them in time show as TX drops of the TAP.
    let links = ns.run(&["ip", "-s", "link", "show"]);
    let stats = st.json("stats");
    panic!(
        "{line}\nstrata ss: {row:?}\nkernel: {}\nlinks: {}\ntcpd: {}\nsockd: {}\npool: {}",
        String::from_utf8_lossy(&kernel.stdout),
        String::from_utf8_lossy(&links.stdout),
        stats["layers"]["tcpd"],
        stats["layers"]["sockd"],
        stats["pool"]
    );
}

/// Kernel side, a TCP client: `python3 -c HOLD_AND_ECHO <n> <port>
/// <wait>` opens `n` connections to the stack's port `port` and holds
/// them all (`open <n>`); then (after a line on stdin, if `wait` is 1) on
/// each sends 10 KB and reads it back and prints how many echoed
/// identically (`ok <n>`, or `ok <k> stuck <local port> ...` for the
/// first that did not: see [`stuck_report`]); once told on stdin, closes
/// them all (`closed`).
pub const HOLD_AND_ECHO: &str = r#"
import socket, sys
n, port, wait = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
conns = [socket.create_connection(("10.77.0.2", port), timeout=300) for _ in range(n)]
print("open", len(conns), flush=True)
if wait:
    sys.stdin.readline()
ok = 0
for i, s in enumerate(conns):
    msg = (b"%05d%03d" % (port, i % 1000)) * 1280
    got = b""
    try:
        s.sendall(msg)
        while len(got) < len(msg):
            b = s.recv(65536)
            if not b:
                break
            got += b
    except OSError as e:
        print("ok", ok, "stuck", s.getsockname()[1], i, len(got), e, flush=True)
        break
    ok += got == msg
else:
    print("ok", ok, flush=True)
sys.stdin.readline()
for s in conns:
    s.close()
print("closed", flush=True)
"#;
