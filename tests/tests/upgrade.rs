//! Live upgrades (`strata upgrade`) and kills against kernel peers:
//!
//! - a 200 MB download from examples/httpd to the kernel's side goes on,
//!   identical, while every layer is upgraded in turn: to the same binary,
//!   and udpd from a build of its previous arena format (1) to this one
//!   (2), whose UDP binding made before still answers after;
//! - a binary that is another layer, is no layer, or cannot read the
//!   arena's format is refused, and the running instance goes on; `all`
//!   upgrades every layer;
//! - three SIGKILLs of tcpd during a 1-byte request/response loop make
//!   the kernel peer (default RTO) retransmit nothing: what tcpd held
//!   when it died is replayed to its next instance.
//!
//! The download moves `STRATA_UPGRADE_BYTES` bytes (default 200 MB).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use strata_tests::{
    bin, bin_dir, random_file, sha256_file, spawn_app, tap_config, wait_line, wait_until, Bg,
    Netns, Stack, TempDir, LAYERS, STACK_IP,
};

/// udpd built with the `arena-v1` feature: the udpd of the previous arena
/// format, in a target directory of its own beside the workspace's (built
/// once; cargo makes it again only if a source changed).
fn udpd_of_format_1() -> PathBuf {
    let release = bin_dir();
    let target = release
        .parent()
        .expect("target/release/..")
        .join("arena-v1");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--offline", "-p", "strata-udpd"])
        .args(["--features", "arena-v1", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "building udpd of arena format 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("release/udpd")
}

/// A directory of the layer binaries the launcher runs (`STRATA_BIN_DIR`):
/// the workspace's, except udpd, which is `udpd`.
fn bin_dir_with_udpd(udpd: &Path) -> TempDir {
    let d = TempDir::new("strata-upgrade");
    for name in ["driverd", "netdevd", "filterd", "ipd", "tcpd", "sockd"] {
        std::os::unix::fs::symlink(bin(name), d.0.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(udpd, d.0.join("udpd")).unwrap();
    d
}

fn upgrade(st: &Stack, layer: &str, binary: Option<&Path>) -> Result<serde_json::Value, String> {
    let mut args = vec!["--json", "upgrade", layer];
    let b;
    if let Some(p) = binary {
        b = p.to_str().unwrap().to_string();
        args.extend(["--binary", &b]);
    }
    let o = st.strata(&args);
    if o.status.success() {
        Ok(serde_json::from_slice(&o.stdout).expect("upgrade --json"))
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// Kernel-side HTTP/1.0 client: downloads `/NAME`, and after each of the
/// first `STEPS` `CHUNK`s of the body writes the step reached to `CTL.at`
/// and waits for `CTL.goN` to exist, so that the test knows the transfer is
/// under way when it upgrades. Prints the body's length and sha256.
const STEPPED_GET: &str = r#"
import hashlib, os, socket, sys, time
host, name, chunk, steps, ctl = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = socket.create_connection((host, 8080), timeout=120)
s.sendall(("GET /%s HTTP/1.0\r\nHost: strata\r\n\r\n" % name).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    d = s.recv(65536)
    if not d:
        sys.exit("no response: %r" % buf)
    buf += d
head, body = buf.split(b"\r\n\r\n", 1)
if not head.startswith(b"HTTP/1.0 200") and not head.startswith(b"HTTP/1.1 200"):
    sys.exit("bad status: %r" % head[:80])
h = hashlib.sha256(body)
n = len(body)
step = 1
while True:
    if step <= steps and n >= step * chunk:
        with open(ctl + ".tmp", "w") as f:
            f.write(str(step))
        os.rename(ctl + ".tmp", ctl + ".at")
        while not os.path.exists("%s.go%d" % (ctl, step)):
            time.sleep(0.002)
        step += 1
    d = s.recv(1 << 16)
    if not d:
        break
    h.update(d)
    n += len(d)
print(n, h.hexdigest())
"#;

/// One UDP datagram to the echo server; prints what came back, or
/// "timeout" (a bound for a hang, never reached by a working stack).
const UDP_ONCE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(30.0)
s.sendto(sys.argv[2].encode(), (sys.argv[1], 7))
try:
    print(s.recv(4096).decode())
except socket.timeout:
    print("timeout")
"#;

fn udp_echo(ns: &Netns, msg: &str) -> String {
    ns.run_ok(&["python3", "-c", UDP_ONCE, STACK_IP, msg])
        .trim()
        .to_string()
}

fn bytes() -> u64 {
    std::env::var("STRATA_UPGRADE_BYTES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(200_000_000)
}

#[test]
fn a_download_goes_on_identical_while_every_layer_is_upgraded_in_turn() {
    let v1 = udpd_of_format_1();
    let dir = bin_dir_with_udpd(&v1);
    let ns = Netns::new();
    let st = Stack::up_config_env(
        &ns,
        &tap_config(""),
        &[("STRATA_BIN_DIR", dir.0.to_str().unwrap())],
    );
    let root = TempDir::new("strata-upgrade");
    let len = bytes();
    let sum = random_file(&root.0.join("big"), len);
    let mut httpd = spawn_app(
        &st,
        "httpd",
        &[
            "--root",
            root.0.to_str().unwrap(),
            "--listen",
            "0.0.0.0:8080",
        ],
    );
    wait_line(&mut httpd, "httpd: serving", Duration::from_secs(15));
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    assert_eq!(udp_echo(&ns, "before"), "before");

    let ctl = root.0.join("ctl");
    let chunk = len / (LAYERS.len() as u64 + 1);
    let get: Bg = ns.spawn(&[
        "python3",
        "-c",
        STEPPED_GET,
        STACK_IP,
        "big",
        &chunk.to_string(),
        &LAYERS.len().to_string(),
        ctl.to_str().unwrap(),
    ]);
    let this_udpd = bin("udpd");
    for (k, layer) in LAYERS.iter().enumerate() {
        let step = (k + 1).to_string();
        let at = ctl.with_extension("at");
        wait_until(
            &format!("the download at step {step}"),
            Duration::from_secs(120),
            || std::fs::read_to_string(&at).is_ok_and(|s| s == step),
        );
        // Let the transfer go on, and upgrade while it does (or while
        // it waits at the next step: mid-transfer either way).
        std::fs::write(ctl.with_extension(format!("go{step}")), "").unwrap();
        let to = (*layer == "udpd").then_some(this_udpd.as_path());
        let v = upgrade(&st, layer, to)
            .unwrap_or_else(|e| panic!("upgrading {layer}: {e}\nlog:\n{}", st.log_text()));
        assert_ne!(v["pid"], v["pid_before"], "{v}");
        if *layer == "udpd" {
            assert_eq!(
                (
                    v["arena_format_before"].as_u64(),
                    v["arena_format"].as_u64()
                ),
                (Some(1), Some(2)),
                "{v}"
            );
        }
    }
    let got = get
        .wait_output(Duration::from_secs(600))
        .expect("the download ends");
    assert_eq!(
        got.trim(),
        format!("{len} {sum}"),
        "log:\n{}",
        st.log_text()
    );
    // The binding made before udpd's format changed still answers; the
    // applications never failed, and every upgrade is in the log.
    assert_eq!(udp_echo(&ns, "after"), "after");
    assert!(httpd.alive(), "httpd failed");
    assert!(echo.alive(), "the echo server failed");
    let log = st.log_text();
    for layer in LAYERS {
        assert!(
            log.contains(&format!("{layer} upgraded to")),
            "{layer}:\n{log}"
        );
    }
    assert!(
        log.contains("restored 1 of 1 bindings from arena format 1"),
        "{log}"
    );
    // The file on disk is the one served (nothing rewrote it meanwhile).
    assert_eq!(sha256_file(&root.0.join("big")), sum);
}

#[test]
fn a_binary_that_cannot_take_over_is_refused_and_the_layer_runs_on() {
    let v1 = udpd_of_format_1();
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    let pid = st.layer_pid("udpd");
    let ipd = bin("ipd");
    let refusals = [
        (v1.as_path(), "keeps it in format 2"),
        (ipd.as_path(), "is ipd, not udpd"),
        (Path::new("/bin/true"), "is not a strata layer binary"),
    ];
    for (binary, why) in refusals {
        let e = upgrade(&st, "udpd", Some(binary)).expect_err("refused");
        assert!(e.contains(why), "{}: {e}", binary.display());
    }
    let e = upgrade(&st, "udpd", Some(Path::new("/nonexistent/udpd"))).expect_err("refused");
    assert!(e.contains("No such file"), "{e}");
    assert_eq!(st.layer_pid("udpd"), pid, "the running udpd was left alone");
    assert_eq!(st.restarts("udpd"), 0);
    assert_eq!(udp_echo(&ns, "still"), "still");
    // `all`: every layer, one after the other; the binding survives.
    let o = st.strata(&["upgrade", "all"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stdout);
    for layer in LAYERS {
        assert!(
            said.contains(&format!("upgraded {layer} ")),
            "{layer}: {said}"
        );
    }
    assert_ne!(st.layer_pid("udpd"), pid);
    assert_eq!(udp_echo(&ns, "again"), "again");
}

/// Kernel-side client: 1-byte requests and their echoes on one
/// connection until `STOP` exists, writing the round trips done to
/// `COUNT` every 20; prints round trips and the growth of the network
/// namespace's TcpRetransSegs meanwhile.
const PING_PONG: &str = r#"
import os, socket, sys
def retrans():
    t = [l.split() for l in open("/proc/net/snmp") if l.startswith("Tcp:")]
    return int(t[1][t[0].index("RetransSegs")])
host, count, stop = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.create_connection((host, 7), timeout=60)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
r0 = retrans()
n = 0
while not os.path.exists(stop):
    s.sendall(b"x")
    if s.recv(1) != b"x":
        sys.exit("bad echo")
    n += 1
    if n % 20 == 0:
        with open(count + ".tmp", "w") as f:
            f.write(str(n))
        os.rename(count + ".tmp", count)
print(n, retrans() - r0)
"#;

#[test]
fn tcpd_killed_three_times_mid_conversation_makes_the_kernel_retransmit_nothing() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving TCP", Duration::from_secs(15));
    let dir = TempDir::new("strata-upgrade");
    let (count, stop) = (dir.0.join("count"), dir.0.join("stop"));
    let done = || {
        std::fs::read_to_string(&count)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let pp = ns.spawn(&[
        "python3",
        "-c",
        PING_PONG,
        STACK_IP,
        count.to_str().unwrap(),
        stop.to_str().unwrap(),
    ]);
    for k in 0..3 {
        // Mid-conversation: round trips are flowing before each kill.
        let before = done();
        wait_until("round trips", Duration::from_secs(60), || {
            done() >= before + 100
        });
        let r = st.kill_layer("tcpd");
        st.wait_restarted("tcpd", r);
        eprintln!("kill {} at {} round trips", k + 1, done());
    }
    let before = done();
    wait_until("round trips after", Duration::from_secs(60), || {
        done() >= before + 100
    });
    std::fs::write(&stop, "").unwrap();
    let out = pp
        .wait_output(Duration::from_secs(60))
        .expect("client ends");
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    eprintln!("{} round trips, {} kernel retransmissions", v[0], v[1]);
    assert_eq!(v[1], 0, "the kernel retransmitted; log:\n{}", st.log_text());
    assert_eq!(st.restarts("tcpd"), 3);
}
