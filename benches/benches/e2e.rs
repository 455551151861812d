//! End to end: strata's TCP against the Linux kernel over a TAP device.
//!
//! Builds a private network namespace with a strata instance in it (as
//! the integration tests do), then measures, between a kernel socket
//! (a thread of this process that entered the namespace) and a libsock
//! application (examples/perf):
//!
//! - bulk throughput kernel → libsock (`perf sink`) and libsock → kernel
//!   (`perf source`), in Gbit/s;
//! - the round trip of 1-byte requests and responses, kernel client →
//!   libsock server (`perf rr-server`) and libsock client (`perf rr`) →
//!   kernel server, in microseconds.
//!
//! Not a timed test: it prints numbers. Needs root and the release
//! binaries (`cargo build --release --workspace --bins`); without them it
//! says so and exits successfully. Knobs: `STRATA_BENCH_BYTES` (bytes per
//! bulk transfer, default 500 MB), `STRATA_BENCH_RUNS` (default 3),
//! `STRATA_BENCH_RR` (round trips, default 20000).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{channel, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use strata_tests::{bin, bin_dir, Bg, Netns, Stack, HOST_IP, STACK_IP};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Runs `f` on a new thread inside network namespace `ns` (sockets it
/// creates belong to that namespace, wherever they are used later).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: plain system call on an fd we own; it affects only
        // this thread.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Every stdout line of a background app, as it comes.
fn lines(bg: &mut Bg) -> Receiver<String> {
    let out = bg.child.stdout.take().expect("stdout piped");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

/// The next line containing `what`.
fn expect(rx: &Receiver<String>, what: &str, timeout: Duration) -> String {
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

fn gbits(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64().max(1e-9) / 1e9
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn quantile(v: &[f64], q: f64) -> f64 {
    v[(((v.len() - 1) as f64) * q).round() as usize]
}

/// A number out of a perf line: the word after `key`.
fn value_after(line: &str, key: &str) -> f64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == key)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// A number out of a perf line: the word before `unit`.
fn number_before(line: &str, unit: &str) -> f64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches(',') == unit)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no {unit} in {line:?}"))
}

const CHUNK: usize = 256 << 10;

/// Kernel → libsock: a kernel client writes `bytes` to `perf sink`,
/// closes, and waits for the sink to close (everything delivered).
fn bulk_to_libsock(ns: &Netns, st: &Stack, bytes: u64, runs: u64) -> Vec<f64> {
    let mut sink = spawn_app(st, "perf", &["sink", "--listen", "0.0.0.0:5001"]);
    let out = lines(&mut sink);
    expect(&out, "sink listening", Duration::from_secs(5));
    let mut res = Vec::new();
    for _ in 0..runs {
        let t = in_netns(&ns.name, move || {
            let mut s = TcpStream::connect((STACK_IP, 5001)).expect("connect to perf sink");
            let buf = vec![0x5au8; CHUNK];
            let start = Instant::now();
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                s.write_all(&buf[..n]).expect("write");
                left -= n as u64;
            }
            s.shutdown(Shutdown::Write).unwrap();
            let mut rest = [0u8; 64];
            while s.read(&mut rest).expect("read") > 0 {}
            start.elapsed()
        });
        let d = t.join().expect("kernel sender");
        let line = expect(&out, "sink:", Duration::from_secs(30));
        assert!(
            line.contains(&format!(": {bytes} bytes")),
            "sink got a different amount: {line}"
        );
        res.push(gbits(bytes, d));
    }
    res
}

/// libsock → kernel: `perf source` writes `bytes` to a kernel server,
/// which reads to the end and closes.
fn bulk_from_libsock(ns: &Netns, st: &Stack, bytes: u64, runs: u64) -> Vec<f64> {
    let (tx, rx) = channel();
    let (ready_tx, ready_rx) = channel();
    let _server = in_netns(&ns.name, move || {
        let l = TcpListener::bind((HOST_IP, 5002)).expect("bind 5002");
        ready_tx.send(()).unwrap();
        let mut buf = vec![0u8; CHUNK];
        for s in l.incoming() {
            let mut s = s.expect("accept");
            let mut total = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
            }
            if tx.send(total).is_err() {
                return;
            }
        }
    });
    ready_rx.recv().unwrap();
    let mut res = Vec::new();
    for _ in 0..runs {
        let mut src = spawn_app(
            st,
            "perf",
            &[
                "source",
                "--connect",
                &format!("{HOST_IP}:5002"),
                "--bytes",
                &bytes.to_string(),
            ],
        );
        let out = lines(&mut src);
        let line = expect(&out, "source:", Duration::from_secs(300));
        let total = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(total, bytes, "the kernel received a different amount");
        // perf source's own clock: from its first write until the kernel
        // closed, the same interval the kernel-to-libsock run measures.
        res.push(number_before(&line, "Gbit/s"));
    }
    res
}

/// Round trips of 1 byte, kernel client → `perf rr-server`.
fn rr_kernel_client(ns: &Netns, st: &Stack, count: u64) -> (f64, f64) {
    let mut srv = spawn_app(st, "perf", &["rr-server", "--listen", "0.0.0.0:5003"]);
    let out = lines(&mut srv);
    expect(&out, "rr-server listening", Duration::from_secs(5));
    let t = in_netns(&ns.name, move || {
        let mut s = TcpStream::connect((STACK_IP, 5003)).expect("connect to rr-server");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut one = [0u8; 1];
        let mut us = Vec::with_capacity(count as usize);
        for i in 0..count + 1000 {
            let t = Instant::now();
            s.write_all(&[i as u8]).unwrap();
            s.read_exact(&mut one).expect("response");
            if i >= 1000 {
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        us
    });
    let us = sorted(t.join().expect("kernel rr client"));
    (quantile(&us, 0.5), quantile(&us, 0.99))
}

/// Round trips of 1 byte, `perf rr` → a kernel server.
fn rr_libsock_client(ns: &Netns, st: &Stack, count: u64) -> (f64, f64) {
    let (ready_tx, ready_rx) = channel();
    let _server = in_netns(&ns.name, move || {
        let l = TcpListener::bind((HOST_IP, 5004)).expect("bind 5004");
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    ready_rx.recv().unwrap();
    let mut rr = spawn_app(
        st,
        "perf",
        &[
            "rr",
            "--connect",
            &format!("{HOST_IP}:5004"),
            "--count",
            &count.to_string(),
            "--warmup",
            "1000",
        ],
    );
    let out = lines(&mut rr);
    let line = expect(&out, "rr:", Duration::from_secs(120));
    (value_after(&line, "median"), value_after(&line, "p99"))
}

/// Starts examples/`name` against `st`, on the CPUs STRATA_BENCH_APP_CPUS
/// names (`taskset -c`), if any.
fn spawn_app(st: &Stack, name: &str, args: &[&str]) -> Bg {
    let mut c = match std::env::var("STRATA_BENCH_APP_CPUS") {
        Ok(cpus) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", &cpus]).arg(bin(name));
            c
        }
        Err(_) => std::process::Command::new(bin(name)),
    };
    let child = c
        .args(args)
        .env("STRATA_INSTANCE", &st.instance)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    Bg::new(child)
}

fn main() {
    // `cargo bench` passes --bench (and filters); nothing to choose here.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("e2e: skipped: needs root (network namespaces, TAP devices)");
        return;
    }
    let dir = bin_dir_checked();
    let Some(dir) = dir else {
        return;
    };
    let bytes = env_u64("STRATA_BENCH_BYTES", 500_000_000);
    let runs = env_u64("STRATA_BENCH_RUNS", 3).max(1);
    let rr = env_u64("STRATA_BENCH_RR", 20_000).max(1);

    // The layers' placement ([cpu] policy): the launcher's default unless
    // STRATA_BENCH_CPU names one.
    let cpu = std::env::var("STRATA_BENCH_CPU").ok();
    let extra = cpu
        .as_deref()
        .map_or_else(String::new, |p| format!("[cpu]\npolicy = \"{p}\"\n"));
    let ns = Netns::new();
    let st = Stack::up_with(&ns, &extra);
    let placed: Vec<String> = st.json("status")["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "{}:{}",
                l["layer"].as_str().unwrap_or("?"),
                l["cpus"].as_str().unwrap_or("any")
            )
        })
        .collect();
    println!(
        "e2e: strata TCP over TAP against the Linux kernel \
         (binaries in {dir}; {bytes} bytes per transfer, {runs} runs; {rr} round trips)\n\
         placement {}: {}; applications on CPUs {}",
        cpu.as_deref().unwrap_or("default"),
        placed.join(" "),
        std::env::var("STRATA_BENCH_APP_CPUS").unwrap_or_else(|_| "any".into())
    );
    let show = |what: &str, v: Vec<f64>| {
        let runs = v
            .iter()
            .map(|g| format!("{g:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        let v = sorted(v);
        println!(
            "  {what:<42} median {:>6.2} Gbit/s   best {:>6.2}   (runs: {runs})",
            quantile(&v, 0.5),
            v[v.len() - 1]
        );
    };
    show(
        "bulk kernel -> libsock (perf sink)",
        bulk_to_libsock(&ns, &st, bytes, runs),
    );
    show(
        "bulk libsock -> kernel (perf source)",
        bulk_from_libsock(&ns, &st, bytes, runs),
    );
    let (m, p) = rr_kernel_client(&ns, &st, rr);
    println!(
        "  {:<42} median {m:>6.1} us        p99 {p:>6.1} us",
        "1-byte rr kernel client -> libsock server"
    );
    let (m, p) = rr_libsock_client(&ns, &st, rr);
    println!(
        "  {:<42} median {m:>6.1} us        p99 {p:>6.1} us",
        "1-byte rr libsock client -> kernel server"
    );
}

/// The binaries' directory, or None (with a message) if they are not built.
fn bin_dir_checked() -> Option<String> {
    let dir = match std::env::var_os("STRATA_BIN_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            // bin_dir() panics when the binaries are missing; look first.
            let exe = std::env::current_exe().ok()?;
            exe.parent()?.parent()?.to_path_buf()
        }
    };
    for b in ["strata", "perf", "sockd", "tcpd"] {
        if !dir.join(b).exists() {
            println!(
                "e2e: skipped: {}/{b} not built; run `cargo build --release --workspace --bins` first",
                dir.display()
            );
            return None;
        }
    }
    Some(bin_dir().display().to_string())
}
