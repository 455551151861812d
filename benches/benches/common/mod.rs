//! What the end-to-end benches (`e2e`, `versus`) share: the checks that
//! decide whether they can run at all, the parsing of knobs and of the
//! example programs' output, and the kernel's side of each workload (a
//! thread of the bench process that entered a network namespace).
//!
//! The kernel servers here ([`sink_server`], [`rr_server`],
//! [`udp_echo_server`]) serve for as long as the bench process runs: their
//! threads block in `accept` or `recv` and end with the process (so does
//! their hold on the namespace, which `ip netns del` has already unlinked).

// Each bench includes this module and uses a part of it.
#![allow(dead_code)]

use socket2::{Domain, Protocol, Socket, Type};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{channel, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use strata_tests::{bin, bin_dir, Bg, Stack, HOST_IP, STACK_IP};

/// Bytes per write of a bulk sender and per read of a sink.
pub const CHUNK: usize = 256 << 10;

/// How long a kernel client waits for any progress before it fails.
pub const STALL: Duration = Duration::from_secs(30);

/// An unsigned knob from the environment: digits (`_` allowed as a
/// separator), optionally followed by `k`, `M` or `G` (powers of 1000).
pub fn env_u64(name: &str, default: u64) -> u64 {
    let Ok(v) = std::env::var(name) else {
        return default;
    };
    parse_count(&v).unwrap_or_else(|| panic!("{name}={v:?}: not a number (digits, then k, M or G)"))
}

/// A count as the benches take them: digits (`_` allowed as a
/// separator), optionally followed by `k`, `M` or `G` (powers of 1000).
pub fn parse_count(v: &str) -> Option<u64> {
    let digits = v.trim().replace('_', "");
    let (num, mult) = match digits.chars().last() {
        Some('k') => (&digits[..digits.len() - 1], 1_000),
        Some('M') => (&digits[..digits.len() - 1], 1_000_000),
        Some('G') => (&digits[..digits.len() - 1], 1_000_000_000),
        _ => (&digits[..], 1),
    };
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult))
}

/// [`STACK_IP`]:`port`, where the stack under test serves.
pub fn stack_addr(port: u16) -> SocketAddr {
    let ip: Ipv4Addr = STACK_IP.parse().expect("STACK_IP is an IPv4 address");
    SocketAddr::from((ip, port))
}

/// [`HOST_IP`]:`port`, where the kernel peer serves.
pub fn host_addr(port: u16) -> SocketAddr {
    let ip: Ipv4Addr = HOST_IP.parse().expect("HOST_IP is an IPv4 address");
    SocketAddr::from((ip, port))
}

/// Runs `f` on a new thread inside network namespace `ns` (sockets it
/// creates belong to that namespace, wherever they are used later), on
/// the CPUs STRATA_BENCH_THREAD_CPUS names, if any.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    let cpus = std::env::var("STRATA_BENCH_THREAD_CPUS").ok();
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: plain system call on an fd we own; it affects only
        // this thread.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        if let Some(cpus) = cpus {
            pin_thread(&cpus);
        }
        f()
    })
}

/// Puts the calling thread on `cpus`, a list such as `0` or `0,2-3`.
fn pin_thread(cpus: &str) {
    // SAFETY: cpu_set_t is plain bits; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for item in cpus.split(',') {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        let parse = |v: &str| -> usize {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("STRATA_BENCH_THREAD_CPUS: not a CPU list: {cpus:?}"))
        };
        for cpu in parse(a)..=parse(b) {
            assert!(cpu < libc::CPU_SETSIZE as usize, "no CPU {cpu}");
            // SAFETY: `cpu` is within the set (checked above).
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is
    // the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(
        r,
        0,
        "sched_setaffinity({cpus}): {}",
        std::io::Error::last_os_error()
    );
}

/// `bytes` in `d`, in Gbit/s.
pub fn gbits(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64().max(1e-9) / 1e9
}

/// `v`, sorted.
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The value at quantile `q` of sorted, non-empty `v`.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    v[(((v.len() - 1) as f64) * q).round() as usize]
}

/// A number out of a perf line: the word after `key`.
pub fn value_after(line: &str, key: &str) -> f64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == key)
        .and_then(|w| w[1].trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// A number out of a perf line: the word before `unit`.
pub fn number_before(line: &str, unit: &str) -> f64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches(',') == unit)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no {unit} in {line:?}"))
}

/// Starts examples/`name` against `st`, on the CPUs STRATA_BENCH_APP_CPUS
/// names (`taskset -c`), if any.
pub fn spawn_app(st: &Stack, name: &str, args: &[&str]) -> Bg {
    spawn_app_env(st, name, args, &[])
}

/// As [`spawn_app`], with `env` added to the program's environment.
pub fn spawn_app_env(st: &Stack, name: &str, args: &[&str], env: &[(&str, &str)]) -> Bg {
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
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    Bg::new(child)
}

/// The binaries' directory if `bench` can run here; otherwise None, after
/// saying what is missing (root, `ip`, /dev/net/tun, one of `bins`).
pub fn preflight(bench: &str, bins: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("{bench}: skipped: needs root (network namespaces, TAP devices)");
        return None;
    }
    let ip = std::process::Command::new("ip").arg("-V").output();
    if !ip.is_ok_and(|o| o.status.success()) {
        println!("{bench}: skipped: no `ip` command (install iproute2)");
        return None;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        println!("{bench}: skipped: no /dev/net/tun (TUN/TAP support)");
        return None;
    }
    let dir = match std::env::var_os("STRATA_BIN_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            // bin_dir() panics when the binaries are missing; look first.
            let exe = std::env::current_exe().ok()?;
            exe.parent()?.parent()?.to_path_buf()
        }
    };
    for b in bins {
        if !dir.join(b).exists() {
            println!(
                "{bench}: skipped: {}/{b} not built; run `cargo build --release --workspace --bins` first",
                dir.display()
            );
            return None;
        }
    }
    Some(bin_dir().display().to_string())
}

/// The layers' placement asked for: STRATA_BENCH_CPU (a `[cpu] policy`)
/// or the launcher's default; and the configuration lines that ask it.
pub fn cpu_policy() -> (String, String) {
    match std::env::var("STRATA_BENCH_CPU") {
        Ok(p) => (p.clone(), format!("[cpu]\npolicy = \"{p}\"\n")),
        Err(_) => ("default".into(), String::new()),
    }
}

/// Where `st` put its layers, as `layer:cpus` words (`strata status`).
pub fn placement(st: &Stack) -> String {
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
    placed.join(" ")
}

/// Waits for a server thread's "listening" signal, or panics naming it.
fn ready(rx: &Receiver<()>, what: &str, addr: SocketAddr) {
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what} on {addr} did not start"));
}

/// The congestion control the kernel's bulk senders use unless told
/// otherwise: Linux's default, which sends as fast as the window allows.
/// A host may have made another its default (this VM's is BBR, which
/// paces), so the benches name it on each socket rather than inherit it.
pub const SENDER_CC: &str = "cubic";

/// The congestion control of a paced sender, for the rows that measure
/// one: BBR paces each super-segment out on a timer of its own.
pub const PACED_CC: &str = "bbr";

/// The bulk senders' congestion control: STRATA_BENCH_CC, else
/// [`SENDER_CC`]; panics, saying why, if this kernel has no such
/// algorithm.
pub fn sender_cc() -> String {
    let cc = std::env::var("STRATA_BENCH_CC")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| SENDER_CC.into());
    if let Err(e) = tcp_socket_with_cc(&cc) {
        panic!("STRATA_BENCH_CC: {e}");
    }
    cc
}

/// Whether this kernel lets a socket take congestion control `cc`
/// (loading its module if need be, as root may).
pub fn cc_usable(cc: &str) -> bool {
    tcp_socket_with_cc(cc).is_ok()
}

/// A new IPv4 TCP socket with congestion control `cc` (TCP_CONGESTION).
fn tcp_socket_with_cc(cc: &str) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_tcp_congestion(cc.as_bytes()).map_err(|e| {
        let have = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
            .unwrap_or_default();
        std::io::Error::new(
            e.kind(),
            format!("congestion control {cc}: {e} (available: {})", have.trim()),
        )
    })?;
    Ok(s)
}

/// A TCP connection to `to` with congestion control `cc`.
///
/// The algorithm is set before the connection is made: one that paces
/// (BBR) marks the socket for pacing when it takes over, and a later
/// switch to another keeps that mark, so cubic set after `connect` on a
/// BBR host still paces.
pub fn connect_with_cc(to: SocketAddr, cc: &str) -> std::io::Result<TcpStream> {
    let s = tcp_socket_with_cc(cc)?;
    s.connect(&to.into())?;
    Ok(s.into())
}

/// A kernel client in `ns` writes `bytes` to the sink at `to`, closes its
/// side and waits until the sink has closed too (everything delivered);
/// the time from its first write to then. Its congestion control is
/// [`sender_cc`].
pub fn send_bulk(ns: &str, to: SocketAddr, bytes: u64) -> JoinHandle<Duration> {
    send_bulk_cc(ns, to, bytes, sender_cc())
}

/// [`send_bulk`] with congestion control `cc`.
pub fn send_bulk_cc(ns: &str, to: SocketAddr, bytes: u64, cc: String) -> JoinHandle<Duration> {
    in_netns(ns, move || {
        let mut s =
            connect_with_cc(to, &cc).unwrap_or_else(|e| panic!("connect to sink {to}: {e}"));
        // A stalled transfer fails the bench instead of hanging it.
        s.set_write_timeout(Some(STALL)).expect("write timeout");
        s.set_read_timeout(Some(STALL)).expect("read timeout");
        let buf = vec![0x5au8; CHUNK];
        let start = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            s.write_all(&buf[..n]).expect("write to the sink");
            left -= n as u64;
        }
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut rest = [0u8; 64];
        while s.read(&mut rest).expect("read the sink's close") > 0 {}
        start.elapsed()
    })
}

/// A kernel sink on `addr` in `ns`, for one connection after another:
/// each is read to its end and closed, and its byte count and the time
/// from its first byte to its end come out of the receiver.
pub fn sink_server(ns: &str, addr: SocketAddr) -> Receiver<(u64, Duration)> {
    let (tx, rx) = channel();
    let (ready_tx, ready_rx) = channel();
    in_netns(ns, move || {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let _ = ready_tx.send(());
        let mut buf = vec![0u8; CHUNK];
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let (mut total, mut start) = (0u64, None);
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        start.get_or_insert_with(Instant::now);
                        total += n as u64;
                    }
                }
            }
            let d = start.map_or(Duration::ZERO, |t: Instant| t.elapsed());
            drop(s);
            if tx.send((total, d)).is_err() {
                return;
            }
        }
    });
    ready(&ready_rx, "kernel sink", addr);
    rx
}

/// `warmup` and then `count` round trips of 1 byte from a kernel client
/// in `ns` to the echoing server at `to`; the measured ones in
/// microseconds, sorted.
pub fn rr_client(ns: &str, to: SocketAddr, count: u64, warmup: u64) -> JoinHandle<Vec<f64>> {
    in_netns(ns, move || {
        let mut s =
            TcpStream::connect(to).unwrap_or_else(|e| panic!("connect to rr server {to}: {e}"));
        s.set_nodelay(true).expect("TCP_NODELAY");
        s.set_read_timeout(Some(STALL)).expect("read timeout");
        let mut one = [0u8; 1];
        let mut us = Vec::with_capacity(count as usize);
        for i in 0..count + warmup {
            let t = Instant::now();
            s.write_all(&[i as u8]).expect("request");
            s.read_exact(&mut one).expect("response");
            if i >= warmup {
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        sorted(us)
    })
}

/// A kernel server on `addr` in `ns` that sends every byte back, a thread
/// per connection (NODELAY: 1-byte responses go out at once).
pub fn rr_server(ns: &str, addr: SocketAddr) {
    let (ready_tx, ready_rx) = channel();
    in_netns(ns, move || {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let _ = ready_tx.send(());
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || echo_stream(s));
        }
    });
    ready(&ready_rx, "kernel rr server", addr);
}

/// Sends everything read from `s` back, until its end.
fn echo_stream(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
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
}

/// A kernel UDP echo server on `addr` in `ns`.
pub fn udp_echo_server(ns: &str, addr: SocketAddr) {
    let (ready_tx, ready_rx) = channel();
    in_netns(ns, move || {
        let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind UDP {addr}: {e}"));
        let _ = ready_tx.send(());
        let mut buf = [0u8; 2048];
        loop {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    ready(&ready_rx, "kernel UDP echo", addr);
}

/// What a [`udp_flood`] measured.
#[derive(Clone, Copy, Debug)]
pub struct UdpRate {
    /// Echoes received per second.
    pub pps: f64,
    /// Times no echo came for [`UDP_LOSS_WAIT`] and the window was sent
    /// anew (datagrams lost on the way).
    pub refills: u64,
}

/// How long the UDP client waits for an echo before taking its window
/// for lost.
pub const UDP_LOSS_WAIT: Duration = Duration::from_millis(10);

/// For `secs` seconds, a kernel client in `ns` keeps `window` datagrams
/// of `size` bytes in flight to the echo server at `to`: one new for
/// each echo received, a whole window anew when none came for
/// [`UDP_LOSS_WAIT`]. Counts only the echoes of that size received.
pub fn udp_flood(
    ns: &str,
    to: SocketAddr,
    secs: f64,
    window: usize,
    size: usize,
) -> JoinHandle<UdpRate> {
    in_netns(ns, move || {
        let s = UdpSocket::bind(("0.0.0.0", 0)).expect("bind a UDP client");
        s.connect(to).expect("connect UDP");
        s.set_read_timeout(Some(UDP_LOSS_WAIT))
            .expect("read timeout");
        let payload = vec![0x42u8; size];
        let send_window = |n: usize| {
            for _ in 0..n {
                let _ = s.send(&payload);
            }
        };
        let mut buf = vec![0u8; size + 1];
        let (mut got, mut refills) = (0u64, 0u64);
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(secs);
        send_window(window);
        while Instant::now() < end {
            match s.recv(&mut buf) {
                Ok(n) if n == size => {
                    got += 1;
                    send_window(1);
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    refills += 1;
                    send_window(window);
                }
                Err(e) => panic!("UDP echo from {to}: {e}"),
            }
        }
        UdpRate {
            pps: got as f64 / start.elapsed().as_secs_f64(),
            refills,
        }
    })
}

/// The median of non-empty `v` (the mean of the middle two if even).
pub fn median(v: Vec<f64>) -> f64 {
    let v = sorted(v);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A figure with about four significant digits (`-`: not measured).
pub fn fmt(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The machine a bench ran on: CPU model, CPUs, kernel, date (UTC).
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
    pub date: String,
}

impl Machine {
    /// This machine, from /proc and `date`.
    pub fn get() -> Machine {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = info
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown CPU".into(), |(_, m)| m.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("?".into(), |k| format!("Linux {}", k.trim()));
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map_or("?".into(), |o| {
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            });
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel,
            date,
        }
    }

    /// The machine as a JSON object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": self.cpu, "cpus": self.cpus, "kernel": self.kernel, "date": self.date,
        })
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} CPUs, {}, {}",
            self.cpu, self.cpus, self.kernel, self.date
        )
    }
}

/// Puts the bench's threads and the example programs on CPU 0 unless
/// `STRATA_BENCH_THREAD_CPUS` or `STRATA_BENCH_APP_CPUS` say otherwise
/// (`any`: wherever the scheduler likes). With strata's default
/// placement (`compact`: every layer on the first CPU) a stack then runs
/// on one CPU with its peers, the one placement that gives the same
/// answer round after round; left to the scheduler, a round trip takes
/// 5 or 60 µs depending on whether the two ends happen to share a vCPU.
pub fn one_cpu_unless_told() {
    for var in ["STRATA_BENCH_THREAD_CPUS", "STRATA_BENCH_APP_CPUS"] {
        match std::env::var(var).as_deref() {
            Err(_) => std::env::set_var(var, "0"),
            Ok("any") => std::env::remove_var(var),
            Ok(_) => {}
        }
    }
}

/// The CPU list in environment variable `name`, or "any".
pub fn cpus_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "any".into())
}
