//! Scale: what strata does with many TCP connections open, many filter
//! rules and many routes (issue #20).
//!
//! **Connections.** For each N of `--counts` (default 1, 100, 10,000 and
//! 100,000), a fresh strata instance on a TAP in a namespace of its own,
//! with `echo` servers on it (one per 50,000 connections, each serving
//! all of its connections in one thread on libsock's Poller) and
//! `perf sink`. Kernel clients hold N connections to the echo servers:
//! this bench binary itself, started again inside the namespace
//! (`--scale-client`), one process per 16,000 connections (a process
//! here may open at most 20,000 files), each from a kernel-side address
//! of its own (10.77.0.101, .102, ... added to the TAP's kernel end) so
//! that no source address runs short of ephemeral ports; each keeps 128
//! connections in set-up at once, a connection being set up until it
//! has sent a byte and read its echo (so that no more than 128 per
//! client wait for the server's accept; `STRATA_BENCH_SETUP=flood`
//! counts one as soon as the kernel has it connected, which lets the
//! listen queues fill). Then, with the N held:
//!
//! - set-up: connections per second, from the clients' first connect
//!   until sockd has accepted all N (its `sockets_opened`) and the
//!   clients have them all;
//! - memory: `strata status`'s `bytes_per_tcp_connection` (what the
//!   stack's tables reserve for one), and the growth of the layers' RSS
//!   and PSS (summed over the layers' pids, before the connections and
//!   with them held) divided by N; likewise the echo servers' RSS;
//! - the CPU the layers use over 2 s while all N are idle;
//! - 1-byte round trips (p50, p99) on one more connection, kernel client
//!   → echo, while the N stay idle;
//! - bulk throughput on one more connection, kernel sender → `perf
//!   sink` (median of the runs);
//! - the same round trips while min(N, 1,000) of the held connections
//!   are active: each sends 16 bytes every 100 ms and reads the echo
//!   (10,000 messages a second for 1,000), and the rate the clients
//!   achieved.
//!
//! **Filter rules.** For each count of `--rules` (default 0, 1, 1,000,
//! 4,096, 10,000), a fresh instance whose configuration holds that many
//! rules (`[filter] rules`, the fastest way in: applied at start, no CLI
//! call per rule) of the form `add INPUT -p tcp --dport P -j DROP`, P
//! from 20,000 up, none matching the bench's traffic; the round trips and
//! bulk as above on one connection each. 0 rules leaves filterd standing
//! aside (out of the path); 1 brings it in, so 0 → 1 is the hop and
//! 1 → many the rules.
//!
//! **Routes.** For each count of `--routes` (default 0, 256, 10,000), a
//! fresh instance with that many `[[route]]`s (10.100.0.0/24, ... via the
//! kernel end), none on the traffic's way; the same figures.
//!
//! A count the stack refuses (its configuration takes at most 65,536
//! rules and 65,536 routes of each family) or the machine cannot reach
//! (memory, the stack's `[limits]`) is skipped with the reason; one that
//! fails on the way is reported with what it measured before, how far it
//! got (sockd and tcpd counters, by the second during set-up) and a file
//! with `strata stats`, the launcher's log and `strata ss`; the bench
//! goes on.
//!
//! The table gives every figure with its ratio to the first count of its
//! part (N = 1, 0 rules, 0 routes); `-- --json` prints one JSON object
//! instead. Progress goes to stderr.
//!
//! Knobs: `STRATA_BENCH_RR` (round trips per measure, default 10000,
//! after 1000 unmeasured), `STRATA_BENCH_BYTES` (bytes per bulk
//! transfer, default 300M), `STRATA_BENCH_RUNS` (bulk transfers per
//! measure, default 3), `STRATA_BENCH_WINDOW` (connects in flight per
//! client, default 128), `STRATA_BENCH_SETUP` (`echo`, the default, or
//! `flood`, above); placement as in `versus` (the layers by the
//! launcher's default, the example programs and the bench's threads on
//! CPU 0: `STRATA_BENCH_CPU`, `STRATA_BENCH_APP_CPUS`,
//! `STRATA_BENCH_THREAD_CPUS`), and `STRATA_BENCH_CLIENT_CPUS` for the
//! holding clients (default the last CPU, if there are several);
//! `STRATA_BENCH_CONFIG`, TOML added to every instance's configuration
//! (e.g. `[limits]` lines).
//!
//! Needs root, `ip`, /dev/net/tun and the release binaries (`cargo build
//! --release --workspace --bins`); without them it says what is missing
//! and exits successfully. Namespaces, devices and processes are removed
//! on the way out, also after a failure (the guards' drops).

mod common;

use common::{env_u64, fmt, median, quantile, spawn_app, stack_addr, Machine, STALL};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};
use strata_tests::{status_field, wait_line, Bg, Netns, Stack, HOST_IP, STACK_IP};

/// The first echo server's port (the next ones follow).
const ECHO_PORT: u16 = 9001;
/// `perf sink`'s port.
const SINK_PORT: u16 = 5001;
/// Connections per echo server.
const PER_SERVER: u64 = 50_000;
/// Connections per client process, at most (fewer if its file limit is
/// lower).
const PER_CLIENT: u64 = 16_000;
/// The last byte of the first kernel-side source address (10.77.0.101).
const FIRST_SOURCE: u64 = 101;
/// Held connections that turn active, at most.
const ACTIVE: u64 = 1000;
/// How often each active connection sends.
const ACTIVE_PERIOD_MS: u64 = 100;
/// What an active connection sends each time.
const ACTIVE_MSG: usize = 16;
/// Unmeasured round trips before the measured ones.
const RR_WARMUP: u64 = 1000;
/// The first port the filter rules name.
const RULE_PORT: u64 = 20_000;
/// Memory the machine should have free per held connection (the kernel's
/// socket, the stack's tables and rings, the echo's slot), generously.
const MEM_PER_CONN: u64 = 64 << 10;
/// The stack's default `[limits] tcp_connections` and `sockets`.
const STACK_LIMIT: u64 = 131_072;

/// The knobs.
struct Config {
    counts: Vec<u64>,
    rules: Vec<u64>,
    routes: Vec<u64>,
    rr: u64,
    bytes: u64,
    runs: u64,
    window: u64,
    setup: String,
    client_cpus: Option<String>,
    json: bool,
}

/// A comma-separated list of counts (`none`: empty), each as
/// [`common::parse_count`] takes it.
fn parse_counts(flag: &str, v: &str) -> Vec<u64> {
    if v.is_empty() || v == "none" {
        return Vec::new();
    }
    v.split(',')
        .map(|w| {
            common::parse_count(w).unwrap_or_else(|| panic!("{flag} {v:?}: {w:?} is not a count"))
        })
        .collect()
}

impl Config {
    /// The knobs from the environment and the arguments (`--counts`,
    /// `--rules`, `--routes`, `--json`; the rest, such as cargo's
    /// `--bench`, ignored).
    fn get() -> Config {
        let args: Vec<String> = std::env::args().collect();
        let list = |flag: &str, default: &str| {
            let mut v = default.to_string();
            for (i, a) in args.iter().enumerate() {
                if a == flag {
                    v = args.get(i + 1).cloned().unwrap_or_default();
                } else if let Some(x) = a.strip_prefix(&format!("{flag}=")) {
                    v = x.to_string();
                }
            }
            parse_counts(flag, &v)
        };
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let client_cpus = match std::env::var("STRATA_BENCH_CLIENT_CPUS") {
            Ok(v) if v == "any" => None,
            Ok(v) => Some(v),
            Err(_) => (ncpu > 1).then(|| (ncpu - 1).to_string()),
        };
        Config {
            counts: list("--counts", "1,100,10000,100000"),
            rules: list("--rules", "0,1,1000,4096,10000"),
            routes: list("--routes", "0,256,10000"),
            rr: env_u64("STRATA_BENCH_RR", 10_000).max(1),
            bytes: env_u64("STRATA_BENCH_BYTES", 300_000_000).max(1),
            runs: env_u64("STRATA_BENCH_RUNS", 3).max(1),
            window: env_u64("STRATA_BENCH_WINDOW", 128).max(1),
            setup: match std::env::var("STRATA_BENCH_SETUP").as_deref() {
                Ok("flood") => "flood".into(),
                Ok("echo") | Err(_) => "echo".into(),
                Ok(other) => panic!("STRATA_BENCH_SETUP={other:?}: echo or flood"),
            },
            client_cpus,
            json: args.iter().any(|a| a == "--json"),
        }
    }

    /// How long a bulk transfer may take (as slow as 80 Mbit/s).
    fn bulk_timeout(&self) -> Duration {
        Duration::from_secs(30 + self.bytes / 10_000_000)
    }
}

// ---------------------------------------------------------------------
// The kernel-side client: this binary again, in the namespace.
// ---------------------------------------------------------------------

/// Fails the client with a line the bench reads.
fn client_fail(what: &str) -> ! {
    println!("failed {what}");
    std::process::exit(1);
}

/// The last OS error, as text.
fn os_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// A `sockaddr_in` for `a`.
fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Starts a non-blocking connect from `from` (the port left to the
/// connect, so that ports are shared between destinations) to `to`.
fn start_connect(from: Ipv4Addr, to: SocketAddrV4) -> std::io::Result<OwnedFd> {
    // SAFETY: plain system call; the fd, if any, is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(os_err());
    }
    // SAFETY: `fd` is a new socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: `one` is a c_int that lives across the call, its size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of_val(&one) as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(os_err());
    }
    let src = sockaddr(SocketAddrV4::new(from, 0));
    // SAFETY: `src` is a sockaddr_in that lives across the call.
    let r = unsafe {
        libc::bind(
            fd,
            std::ptr::addr_of!(src).cast(),
            std::mem::size_of_val(&src) as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(os_err());
    }
    let dst = sockaddr(to);
    // SAFETY: as above.
    let r = unsafe {
        libc::connect(
            fd,
            std::ptr::addr_of!(dst).cast(),
            std::mem::size_of_val(&dst) as libc::socklen_t,
        )
    };
    if r != 0 && os_err().raw_os_error() != Some(libc::EINPROGRESS) {
        return Err(os_err());
    }
    Ok(sock)
}

/// A socket option of type int.
fn sockopt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of_val(&v) as libc::socklen_t;
    // SAFETY: `v` and `len` live across the call and describe each other.
    let r =
        unsafe { libc::getsockopt(fd, level, name, std::ptr::addr_of_mut!(v).cast(), &mut len) };
    if r != 0 {
        return -1;
    }
    v
}

/// Sets an int socket option (best effort).
fn set_sockopt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    // SAFETY: `v` lives across the call, its size given.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::addr_of!(v).cast(),
            std::mem::size_of_val(&v) as libc::socklen_t,
        )
    };
}

/// An epoll set.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> Epoll {
        // SAFETY: plain system call; the fd is owned at once.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            client_fail(&format!("epoll_create1: {}", os_err()));
        }
        // SAFETY: a new fd nobody else owns.
        Epoll(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` lives across the call.
        let r = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) };
        if r != 0 {
            client_fail(&format!("epoll_ctl: {}", os_err()));
        }
    }

    /// Ready (token, events), waiting up to `ms`.
    fn wait(&self, evs: &mut [libc::epoll_event], ms: i32) -> Vec<(u64, u32)> {
        // SAFETY: `evs` is valid for its length.
        let n =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), evs.len() as i32, ms) };
        if n < 0 {
            if os_err().raw_os_error() == Some(libc::EINTR) {
                return Vec::new();
            }
            client_fail(&format!("epoll_wait: {}", os_err()));
        }
        evs[..n as usize]
            .iter()
            .map(|e| (e.u64, e.events))
            .collect()
    }
}

/// Lets this process open as many files as its hard limit allows.
fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` lives across the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// The hard limit on open files.
fn nofile_hard() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return 1024;
    }
    l.rlim_max
}

/// Client mode: `--scale-client TO[,TO...] FROM COUNT WINDOW MODE`. Says
/// `ready`; on `go` opens COUNT connections from FROM to the TOs (round
/// robin), WINDOW at a time, and says `open COUNT SECS`: in MODE `echo` a
/// connection is done once it has sent a byte and read its echo (so that
/// at most WINDOW wait for the server's accept), in `flood` once the
/// kernel has it connected; then on
/// `active A PERIOD_MS` makes its first A connections send
/// [`ACTIVE_MSG`] bytes every PERIOD_MS each (spread evenly) and read
/// the echoes, until `idle`, when it says `idle sent S echoed E lag_ms
/// L` (L: how far behind its schedule it fell at worst). Ends on `quit`
/// or the end of its input.
fn client_main(args: &[String]) -> ! {
    let [to, from, count, window, mode] = args else {
        client_fail("usage: --scale-client TO[,TO...] FROM COUNT WINDOW echo|flood");
    };
    let echo_first = mode == "echo";
    let to: Vec<SocketAddrV4> = to
        .split(',')
        .map(|a| a.parse().unwrap_or_else(|_| client_fail("bad TO")))
        .collect();
    let from: Ipv4Addr = from.parse().unwrap_or_else(|_| client_fail("bad FROM"));
    let count: usize = count.parse().unwrap_or_else(|_| client_fail("bad COUNT"));
    let window: usize = window.parse().unwrap_or_else(|_| client_fail("bad WINDOW"));
    raise_nofile();
    let (tx, cmds) = channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
        let _ = tx.send("quit".into());
    });
    let ep = Epoll::new();
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    println!("ready");
    if cmds.recv().map_or(true, |c| c != "go") {
        std::process::exit(0);
    }
    let t0 = Instant::now();
    let mut socks: Vec<Option<OwnedFd>> = Vec::with_capacity(count);
    let (mut done, mut inflight) = (0usize, 0usize);
    let mut last_progress = Instant::now();
    while done < count {
        while inflight < window && socks.len() < count {
            let i = socks.len();
            match start_connect(from, to[i % to.len()]) {
                Ok(s) => {
                    ep.ctl(
                        libc::EPOLL_CTL_ADD,
                        s.as_raw_fd(),
                        libc::EPOLLOUT as u32,
                        i as u64,
                    );
                    socks.push(Some(s));
                    inflight += 1;
                }
                Err(e) => client_fail(&format!("{done} open, connect #{i}: {e}")),
            }
        }
        let ready = ep.wait(&mut evs, 1000);
        if ready.is_empty() && last_progress.elapsed() > Duration::from_secs(60) {
            client_fail(&format!("{done} open, {inflight} connecting for 60 s"));
        }
        for (i, ev) in ready {
            let fd = socks[i as usize]
                .as_ref()
                .expect("a started socket")
                .as_raw_fd();
            if ev & libc::EPOLLIN as u32 != 0 {
                // The echo of the first byte: the server has accepted it.
                let mut one = [0u8; 1];
                // SAFETY: `one` is valid for its length; `fd` is ours.
                let n = unsafe { libc::read(fd, one.as_mut_ptr().cast(), 1) };
                if n == 0 || (n < 0 && os_err().raw_os_error() != Some(libc::EAGAIN)) {
                    client_fail(&format!("{done} open, #{i} closed before its echo"));
                }
                if n < 0 {
                    continue;
                }
            } else {
                let err = sockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR);
                if err != 0 {
                    let e = std::io::Error::from_raw_os_error(err);
                    client_fail(&format!("{done} open, connect #{i}: {e}"));
                }
                set_sockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
                if echo_first {
                    // SAFETY: a 1-byte buffer; `fd` is ours.
                    let n = unsafe { libc::write(fd, b"s".as_ptr().cast(), 1) };
                    if n != 1 {
                        client_fail(&format!("{done} open, #{i}: write: {}", os_err()));
                    }
                    ep.ctl(libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32, i);
                    continue;
                }
            }
            ep.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
            done += 1;
            inflight -= 1;
            last_progress = Instant::now();
        }
    }
    println!("open {count} {:.3}", t0.elapsed().as_secs_f64());
    let fds: Vec<RawFd> = socks.iter().flatten().map(AsRawFd::as_raw_fd).collect();
    loop {
        let cmd = cmds.recv().unwrap_or_else(|_| "quit".into());
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            ["active", a, period] => {
                let a: usize = a.parse().unwrap_or(0).min(fds.len());
                let period: u64 = period.parse().unwrap_or(ACTIVE_PERIOD_MS).max(1);
                run_active(&ep, &mut evs, &fds[..a], period, &cmds);
            }
            ["quit"] => std::process::exit(0),
            _ => {}
        }
    }
}

/// The active phase of [`client_main`] on `fds`, until `idle`.
fn run_active(
    ep: &Epoll,
    evs: &mut [libc::epoll_event],
    fds: &[RawFd],
    period_ms: u64,
    cmds: &Receiver<String>,
) {
    for (i, &fd) in fds.iter().enumerate() {
        ep.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, i as u64);
    }
    println!("active {}", fds.len());
    let msg = [0x61u8; ACTIVE_MSG];
    let mut buf = vec![0u8; 65536];
    let (mut sent, mut got_bytes, mut lag) = (0u64, 0u64, Duration::ZERO);
    let start = Instant::now();
    let period = Duration::from_millis(period_ms);
    // Message k (of all) is due at start + k * period / A, on connection
    // k mod A.
    let due = |k: u64| start + period.mul_f64(k as f64 / fds.len().max(1) as f64);
    let mut k = 0u64;
    let mut stop_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stop_at.is_none() && !fds.is_empty() {
            while due(k) <= now {
                lag = lag.max(now - due(k));
                let fd = fds[(k % fds.len() as u64) as usize];
                // SAFETY: `msg` is valid for its length; `fd` is ours.
                let n = unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
                if n == msg.len() as isize {
                    sent += 1;
                }
                k += 1;
            }
        }
        let wait_ms = if stop_at.is_some() || fds.is_empty() {
            10
        } else {
            due(k)
                .saturating_duration_since(now)
                .as_millis()
                .clamp(0, 10) as i32
        };
        for (i, _) in ep.wait(evs, wait_ms) {
            let fd = fds[i as usize];
            loop {
                // SAFETY: `buf` is valid for its length; `fd` is ours.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                got_bytes += n as u64;
            }
        }
        if stop_at.is_none() {
            if let Ok(c) = cmds.try_recv() {
                if c == "idle" || c == "quit" {
                    stop_at = Some(Instant::now());
                }
            }
        }
        if let Some(t) = stop_at {
            // Every echo back, or gave up after 2 s.
            if got_bytes >= sent * ACTIVE_MSG as u64 || t.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
    }
    for &fd in fds {
        ep.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }
    println!(
        "idle sent {sent} echoed {} lag_ms {:.1}",
        got_bytes / ACTIVE_MSG as u64,
        lag.as_secs_f64() * 1e3
    );
}

// ---------------------------------------------------------------------
// The bench.
// ---------------------------------------------------------------------

/// A client process, killed on drop.
struct Client {
    bg: Bg,
    lines: Receiver<String>,
    count: u64,
}

impl Client {
    /// Starts this binary in client mode in `ns`.
    fn spawn(ns: &Netns, cpus: &Option<String>, args: &[String]) -> Client {
        let exe = std::env::current_exe().expect("the bench's own path");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name]);
        if let Some(cpus) = cpus {
            c.args(["taskset", "-c", cpus]);
        }
        let mut child = c
            .arg(exe)
            .arg("--scale-client")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a client");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let count = args[2].parse().expect("count");
        Client {
            bg: Bg::new(child),
            lines,
            count,
        }
    }

    /// Sends a command line.
    fn tell(&mut self, cmd: &str) {
        let stdin = self.bg.child.stdin.as_mut().expect("stdin");
        let _ = writeln!(stdin, "{cmd}");
        let _ = stdin.flush();
    }

    /// The next line starting with `what` within `timeout`, or why not.
    fn expect(&self, what: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(what) => return Ok(l),
                Ok(l) if l.starts_with("failed") => return Err(l),
                Ok(_) => {}
                Err(_) => return Err(format!("no {what:?} within {timeout:?}")),
            }
        }
    }
}

/// A stack under test with its servers. Fields drop in order: the
/// stack stops first (so that 100,000 connections are not closed one by
/// one), then the applications and clients go, then the namespace.
struct Rig {
    st: Stack,
    echos: Vec<Bg>,
    sink: Bg,
    clients: Vec<Client>,
    ns: Netns,
}

impl Rig {
    /// A fresh namespace and instance with `extra` configuration, `servers`
    /// echo servers and a sink; Err with the reason if the instance did
    /// not come up.
    fn start(extra: &str, servers: u64) -> Result<Rig, String> {
        let ns = Netns::new();
        let st = try_up(&ns, extra)?;
        let echos: Vec<Bg> = (0..servers)
            .map(|k| {
                let port = format!("0.0.0.0:{}", ECHO_PORT + k as u16);
                let mut e = spawn_app(
                    &st,
                    "echo",
                    &["--tcp", &port, "--udp", "0.0.0.0:0", "--backlog", "4096"],
                );
                wait_line(&mut e, "serving UDP", Duration::from_secs(15));
                e
            })
            .collect();
        let mut sink = spawn_app(
            &st,
            "perf",
            &["sink", "--listen", &format!("0.0.0.0:{SINK_PORT}")],
        );
        wait_line(&mut sink, "sink listening", Duration::from_secs(15));
        Ok(Rig {
            st,
            echos,
            sink,
            clients: Vec::new(),
            ns,
        })
    }

    /// `count` 1-byte round trips (after [`RR_WARMUP`]) on a new
    /// connection to the first echo server: (p50, p99) in µs.
    fn rr(&self, count: u64) -> Result<(f64, f64), String> {
        let us = common::rr_client(&self.ns.name, stack_addr(ECHO_PORT), count, RR_WARMUP)
            .join()
            .map_err(|p| {
                let e = panic_text(&*p);
                if e.contains("WouldBlock") || e.contains("TimedOut") {
                    format!("1-byte round trips: a response did not come within {STALL:?} ({e})")
                } else {
                    format!("1-byte round trips: {e}")
                }
            })?;
        Ok((quantile(&us, 0.5), quantile(&us, 0.99)))
    }

    /// Bulk into `perf sink` on a new connection each run: the median
    /// Gbit/s.
    fn bulk(&mut self, c: &Config) -> Result<f64, String> {
        let mut v = Vec::new();
        for _ in 0..c.runs {
            let d = common::send_bulk(&self.ns.name, stack_addr(SINK_PORT), c.bytes)
                .join()
                .map_err(|p| format!("bulk: {}", panic_text(&*p)))?;
            let sink = &mut self.sink;
            let line = quietly(|| wait_line(sink, "sink:", c.bulk_timeout()))
                .map_err(|e| format!("bulk: perf sink: {e}"))?;
            if !line.contains(&format!(": {} bytes", c.bytes)) {
                return Err(format!("bulk: the sink got a different amount: {line}"));
            }
            v.push(common::gbits(c.bytes, d));
        }
        Ok(median(v))
    }

    /// The CPU the layers and the echo servers use over `d` (% of one
    /// CPU): the layers' sum, and each one's that used any.
    fn idle_cpu(&self, d: Duration) -> (f64, String) {
        let status = self.st.json("status");
        let mut procs: Vec<(String, i64)> = status["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| Some((l["layer"].as_str()?.to_string(), l["pid"].as_i64()?)))
            .collect();
        let layers = procs.len();
        for e in &self.echos {
            procs.push(("echo".into(), e.child.id() as i64));
        }
        let before: Vec<u64> = procs.iter().map(|p| cpu_ticks(p.1)).collect();
        let t = Instant::now();
        std::thread::sleep(d);
        let secs = t.elapsed().as_secs_f64();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let pct: Vec<f64> = procs
            .iter()
            .zip(&before)
            .map(|(p, b)| cpu_ticks(p.1).saturating_sub(*b) as f64 / hz / secs * 100.0)
            .collect();
        let each: Vec<String> = procs
            .iter()
            .zip(&pct)
            .filter(|(_, &c)| c >= 0.5)
            .map(|(p, c)| format!("{} {c:.0}", p.0))
            .collect();
        let each = if each.is_empty() {
            "none above 0.5".into()
        } else {
            each.join(", ")
        };
        (pct[..layers].iter().sum(), each)
    }

    /// Pids of the layers.
    fn layer_pids(&self) -> Vec<i64> {
        self.st.json("status")["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["pid"].as_i64())
            .filter(|&p| p > 0)
            .collect()
    }

    /// Sum of the layers' RSS and PSS, in bytes.
    fn layers_mem(&self) -> (u64, u64) {
        let pids = self.layer_pids();
        (
            pids.iter().map(|&p| rss(p)).sum(),
            pids.iter().map(|&p| pss(p)).sum(),
        )
    }

    /// Sum of the echo servers' RSS, in bytes.
    fn echos_rss(&self) -> u64 {
        self.echos.iter().map(|e| rss(e.child.id() as i64)).sum()
    }

    /// sockd's `sockets_opened`.
    fn sockets_opened(&self) -> u64 {
        self.st.counter("sockd", "sockets_opened")
    }
}

/// VmRSS of `pid`, in bytes (0 if it is gone).
fn rss(pid: i64) -> u64 {
    let s = std::panic::catch_unwind(|| status_field(pid, "VmRSS:"));
    s.ok()
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// User and system CPU time of `pid` so far, in clock ticks (0 if it
/// is gone).
fn cpu_ticks(pid: i64) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = s.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// Pss of `pid` (smaps_rollup), in bytes (0 if unknown).
fn pss(pid: i64) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The message of a panic's payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// Runs `f`, which panics on failure (the test helpers do), with the
/// panic message as the error and not printed.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    r.map_err(|p| panic_text(&*p))
}

/// `Stack::up_with`, with a refusal or failure returned as the reason
/// (the launcher's words) instead of a panic.
fn try_up(ns: &Netns, extra: &str) -> Result<Stack, String> {
    quietly(|| Stack::up_with(ns, extra)).map_err(|msg| {
        // The failed instance's log (its text is in `msg`) and
        // configuration, kept for a panic; no other instance of this
        // process runs now.
        let ours = format!("t-{}-", std::process::id());
        let tmp = std::env::temp_dir();
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&ours) && (name.ends_with(".log") || name.ends_with(".toml")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // The launcher's own complaint, if it made one.
        msg.lines()
            .rev()
            .find(|l| l.contains("error") || l.contains("at most") || l.contains("invalid"))
            .unwrap_or(msg.lines().next().unwrap_or("strata did not come up"))
            .trim()
            .to_string()
    })
}

/// Figures by key.
type Figures = BTreeMap<&'static str, f64>;

/// One count of one part: the figures it got, and why it got no more
/// (skipped: not tried; otherwise it failed on the way).
struct Level {
    n: u64,
    figures: Figures,
    failure: Option<String>,
    skipped: bool,
    notes: Vec<String>,
}

impl Level {
    /// A count not tried, for `why`.
    fn skip(n: u64, why: String) -> Level {
        Level {
            n,
            figures: Figures::new(),
            failure: Some(why),
            skipped: true,
            notes: Vec::new(),
        }
    }
}

/// A row of the table: one figure.
struct Row {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    /// Whether a ratio to the first count means anything: not for a
    /// figure that is noise or nothing at N = 1 (set-up, memory growth,
    /// idle CPU), nor for a load that the bench sets by the count.
    ratio: bool,
}

const fn row(key: &'static str, label: &'static str, unit: &'static str) -> Row {
    Row {
        key,
        label,
        unit,
        ratio: true,
    }
}

/// The connections part's rows.
const CONN_ROWS: [Row; 12] = [
    Row {
        key: "setup_conn_per_s",
        label: "set-up rate (accepted by sockd)",
        unit: "conn/s",
        ratio: false,
    },
    row("stack_bytes_per_conn", "stack's figure per connection", "B"),
    Row {
        key: "layers_rss_per_conn",
        label: "layers' RSS growth / N",
        unit: "B",
        ratio: false,
    },
    Row {
        key: "layers_pss_per_conn",
        label: "layers' PSS growth / N",
        unit: "B",
        ratio: false,
    },
    Row {
        key: "echo_rss_per_conn",
        label: "echo servers' RSS growth / N",
        unit: "B",
        ratio: false,
    },
    Row {
        key: "idle_cpu_pct",
        label: "layers' CPU, all N idle",
        unit: "%",
        ratio: false,
    },
    row("rr_idle_p50_us", "1-byte RR p50, the rest idle", "us"),
    row("rr_idle_p99_us", "1-byte RR p99, the rest idle", "us"),
    row("bulk_gbits", "bulk kernel -> perf sink", "Gbit/s"),
    row("rr_active_p50_us", "1-byte RR p50, 1,000 active", "us"),
    row("rr_active_p99_us", "1-byte RR p99, 1,000 active", "us"),
    Row {
        key: "active_msgs_per_s",
        label: "active messages echoed",
        unit: "msg/s",
        ratio: false,
    },
];

/// The rules and routes parts' rows.
const PATH_ROWS: [Row; 3] = [
    row("rr_p50_us", "1-byte RR p50", "us"),
    row("rr_p99_us", "1-byte RR p99", "us"),
    row("bulk_gbits", "bulk kernel -> perf sink", "Gbit/s"),
];

/// Why the machine or the stack cannot hold `n` connections, if so.
fn unreachable(n: u64, per_client: u64) -> Option<String> {
    if n + 64 > STACK_LIMIT {
        return Some(format!(
            "the stack's default [limits] hold {STACK_LIMIT} connections and sockets"
        ));
    }
    let clients = n.div_ceil(per_client.max(1));
    if FIRST_SOURCE + clients > 250 {
        return Some(format!(
            "{clients} client processes; the bench has addresses for {}",
            250 - FIRST_SOURCE
        ));
    }
    let avail = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(u64::MAX, |kb| kb * 1024);
    if n.saturating_mul(MEM_PER_CONN) > avail {
        return Some(format!(
            "needs about {} MB free ({} KiB a connection), {} MB available",
            (n * MEM_PER_CONN) >> 20,
            MEM_PER_CONN >> 10,
            avail >> 20
        ));
    }
    None
}

/// What the stack says when a level fails: the counters that tell how
/// far it got, and where the launcher's log is kept.
fn diagnose(rig: &Rig, what: &str) -> String {
    let stats = rig.st.json("stats");
    let pick = |layer: &str, keys: &[&str]| -> String {
        keys.iter()
            .map(|k| format!("{k}={}", stats["layers"][layer][k]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let path = std::env::temp_dir().join(format!("strata-scale-{}.txt", rig.st.instance));
    let ss = rig.st.strata(&["ss"]);
    let dump = format!(
        "{what}\n\nstrata stats:\n{}\n\nlauncher log:\n{}\n\nstrata ss:\n{}",
        serde_json::to_string_pretty(&stats).unwrap_or_default(),
        rig.st.log_text(),
        String::from_utf8_lossy(&ss.stdout)
    );
    let _ = std::fs::write(&path, dump);
    let pool = &stats["pool"];
    format!(
        "{what}; sockd {}; tcpd {}; driverd0 {}; pool: small free {} of {}, large free {} of {}, \
         pinned {}, in use by {}; details in {}",
        pick(
            "sockd",
            &[
                "sockets_opened",
                "socket_limit",
                "accept_refused",
                "tx_wait_no_buffer",
                "ctl_wait_no_buffer"
            ]
        ),
        pick(
            "tcpd",
            &[
                "passive_opens",
                "established",
                "conn_limit",
                "pool_exhausted"
            ]
        ),
        pick("driverd0", &["rx_no_buffer"]),
        pool["small_free"],
        pool["small_total"],
        pool["large_free"],
        pool["large_total"],
        pool["pinned"],
        pool["in_use_by_owner"],
        path.display()
    )
}

/// The counters that tell how a set-up went: sockd's socket looks,
/// tcpd's listen queue overflows and drops, SYN cookies, retransmissions
/// and given-up handshakes, and frames the interface dropped for want
/// of a buffer.
fn setup_counters(stats: &Value) -> String {
    let l = |layer: &str, k: &str| stats["layers"][layer][k].as_u64().unwrap_or(0);
    let nobuf: u64 = stats["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["counters"]["rx_drop_no_buffer"].as_u64().unwrap_or(0))
        .sum();
    format!(
        "sockd socket_looks {}; tcpd listen_overflows {} listen_drops {} syn_cookies_sent {} \
         retrans_segs {} synack_timeouts {} conn_closed {}; interface rx_drop_no_buffer {nobuf}",
        l("sockd", "socket_looks"),
        l("tcpd", "listen_overflows"),
        l("tcpd", "listen_drops"),
        l("tcpd", "syn_cookies_sent"),
        l("tcpd", "retrans_segs"),
        l("tcpd", "synack_timeouts"),
        l("tcpd", "conn_closed"),
    )
}

/// Samples (second, accepted, established), at most a dozen of them.
fn render_trace(trace: &[(u64, u64, u64)]) -> String {
    let step = trace.len().div_ceil(12).max(1);
    trace
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0 || *i == trace.len() - 1)
        .map(|(_, (s, a, e))| format!("{s}s {a}/{e}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What every instance's configuration gets besides its interface:
/// the placement asked for (`STRATA_BENCH_CPU`) and the TOML in
/// `STRATA_BENCH_CONFIG`, if any (e.g. `[limits]` lines).
fn instance_config() -> String {
    let (_, placement) = common::cpu_policy();
    let extra = std::env::var("STRATA_BENCH_CONFIG").unwrap_or_default();
    format!("{placement}{extra}\n")
}

/// One count of the connections part.
fn connections(n: u64, c: &Config, per_client: u64) -> Level {
    if let Some(why) = unreachable(n, per_client) {
        return Level::skip(n, why);
    }
    let servers = n.div_ceil(PER_SERVER).max(1);
    let mut level = Level::skip(n, String::new());
    level.skipped = false;
    let mut rig = match Rig::start(&instance_config(), servers) {
        Ok(r) => r,
        Err(e) => {
            level.failure = Some(e);
            return level;
        }
    };
    let r = hold(&mut rig, n, servers, c, per_client, &mut level);
    level.failure = r.err();
    level
}

/// Opens and holds `n` connections on `rig`, then measures.
fn hold(
    rig: &mut Rig,
    n: u64,
    servers: u64,
    c: &Config,
    per_client: u64,
    level: &mut Level,
) -> Result<(), String> {
    let Level {
        figures: f, notes, ..
    } = level;
    let clients = n.div_ceil(per_client);
    // The kernel's source addresses, one per client.
    // The stack learns each address's MAC before the clients connect: a
    // SYN from an address it has yet to resolve waits for ARP, and the
    // kernel would send it again only a second later.
    for i in 0..clients {
        let ip = format!("10.77.0.{}", FIRST_SOURCE + i);
        rig.ns
            .run_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "strata0"]);
        rig.ns
            .run_ok(&["ping", "-c", "1", "-W", "5", "-I", &ip, STACK_IP]);
    }
    let to: Vec<String> = (0..servers)
        .map(|k| stack_addr(ECHO_PORT + k as u16).to_string())
        .collect();
    let to = to.join(",");
    // Warm up the path (ARP, first connection) before the baseline.
    rig.rr(100)?;
    std::thread::sleep(Duration::from_millis(300));
    let (rss0, pss0) = rig.layers_mem();
    let echo0 = rig.echos_rss();
    let opened0 = rig.sockets_opened();
    for i in 0..clients {
        let count = (n - i * per_client).min(per_client);
        let from = format!("10.77.0.{}", FIRST_SOURCE + i);
        let args = [
            to.clone(),
            from,
            count.to_string(),
            c.window.to_string(),
            c.setup.clone(),
        ];
        rig.clients
            .push(Client::spawn(&rig.ns, &c.client_cpus, &args));
    }
    for cl in &rig.clients {
        cl.expect("ready", Duration::from_secs(30))?;
    }
    eprintln!("scale: N={n}: {clients} clients, {servers} echo servers; connecting");
    let t0 = Instant::now();
    for cl in &mut rig.clients {
        cl.tell("go");
    }
    let limit = Duration::from_secs(60 + n / 1000);
    // Clients yet to say `open`; and every second, how many sockd had
    // accepted and tcpd had established.
    let mut pending: Vec<usize> = (0..rig.clients.len()).collect();
    let mut t_kernel = None;
    let mut trace: Vec<(u64, u64, u64)> = Vec::new();
    // The clients' lines are watched every 2 ms, the stack's counters
    // (a `strata stats` process each time, CPU taken from the stack) once
    // a second for the trace, and every 20 ms only once the clients are
    // done but sockd has yet to count all (in `flood` mode, where no echo
    // says the server accepted).
    let mut stats_at = t0;
    let t_setup = loop {
        let mut failed = None;
        pending.retain(|&i| match rig.clients[i].lines.try_recv() {
            Ok(l) if l.starts_with("open") => false,
            Ok(l) if l.starts_with("failed") => {
                failed = Some(l);
                true
            }
            _ => true,
        });
        if pending.is_empty() && t_kernel.is_none() {
            t_kernel = Some(t0.elapsed());
        }
        let look = if pending.is_empty() {
            c.setup != "echo" && stats_at.elapsed() >= Duration::from_millis(20)
        } else {
            stats_at.elapsed() >= Duration::from_secs(1) || failed.is_some()
        };
        if pending.is_empty() && c.setup == "echo" {
            // Every connection's first byte came back: the server accepted
            // them all.
            break t0.elapsed();
        }
        if !look && t0.elapsed() <= limit {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        stats_at = Instant::now();
        let stats = rig.st.json("stats");
        let count = |layer: &str, k: &str| stats["layers"][layer][k].as_u64().unwrap_or(0);
        let opened = count("sockd", "sockets_opened") - opened0;
        if opened >= n && pending.is_empty() {
            break t0.elapsed();
        }
        let secs = t0.elapsed().as_secs();
        if secs > trace.last().map_or(0, |t| t.0) {
            trace.push((secs, opened, count("tcpd", "established")));
            if secs.is_multiple_of(5) {
                eprintln!(
                    "scale: N={n}: {secs} s: sockd accepted {opened}, tcpd established {}",
                    count("tcpd", "established")
                );
            }
        }
        let why = match failed {
            Some(l) => Some(format!("a client {l}")),
            None if t0.elapsed() > limit => Some(format!(
                "not all connected and accepted within {} s ({} of {} clients had all theirs connected)",
                limit.as_secs(),
                rig.clients.len() - pending.len(),
                rig.clients.len()
            )),
            None => None,
        };
        if let Some(why) = why {
            let counters = setup_counters(&stats);
            return Err(diagnose(
                rig,
                &format!(
                    "{why}; sockd had accepted {opened} of {n}; by second (accepted/established): {}; {counters}",
                    render_trace(&trace)
                ),
            ));
        }
    };
    let t_kernel = t_kernel.unwrap_or(t_setup);
    f.insert("setup_conn_per_s", n as f64 / t_setup.as_secs_f64());
    notes.push(format!(
        "set-up: {:.2} s to accept all ({:.2} s until the kernel had all connected); {}",
        t_setup.as_secs_f64(),
        t_kernel.as_secs_f64(),
        setup_counters(&rig.st.json("stats"))
    ));
    if trace.len() > 1 {
        notes.push(format!(
            "set-up by second (accepted/established): {}",
            render_trace(&trace)
        ));
    }
    eprintln!(
        "scale: N={n}: all open in {:.2} s; measuring",
        t_setup.as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(500));
    let status = rig.st.json("status");
    f.insert(
        "stack_bytes_per_conn",
        status["bytes_per_tcp_connection"]["total"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
    let pool = &status["pool"];
    notes.push(format!(
        "with the {n} held: pool buffers in use {} (by owner {}), small free {} of {}, large free {} of {}",
        pool["in_use"],
        pool["in_use_by_owner"],
        pool["small_free"],
        pool["small_total"],
        pool["large_free"],
        pool["large_total"]
    ));
    let (rss1, pss1) = rig.layers_mem();
    let echo1 = rig.echos_rss();
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
    f.insert("layers_rss_per_conn", per(rss0, rss1));
    f.insert("layers_pss_per_conn", per(pss0, pss1));
    f.insert("echo_rss_per_conn", per(echo0, echo1));
    notes.push(format!(
        "layers' RSS {} -> {} MB, PSS {} -> {} MB; echo servers' RSS {} -> {} MB",
        rss0 >> 20,
        rss1 >> 20,
        pss0 >> 20,
        pss1 >> 20,
        echo0 >> 20,
        echo1 >> 20
    ));
    // What the stack spends on N connections that do nothing.
    let (total, per_layer) = rig.idle_cpu(Duration::from_secs(2));
    f.insert("idle_cpu_pct", total);
    notes.push(format!("CPU while all idle, % of one CPU: {per_layer}"));
    let (p50, p99) = rig
        .rr(c.rr)
        .map_err(|e| diagnose(rig, &format!("with the {n} idle: {e}")))?;
    f.insert("rr_idle_p50_us", p50);
    f.insert("rr_idle_p99_us", p99);
    let bulk = rig
        .bulk(c)
        .map_err(|e| diagnose(rig, &format!("with the {n} idle: {e}")))?;
    f.insert("bulk_gbits", bulk);
    let pool = &rig.st.json("status")["pool"];
    notes.push(format!(
        "after the bulk, before the active load: pool buffers in use {} (by owner {}), pinned {}",
        pool["in_use"], pool["in_use_by_owner"], pool["pinned"]
    ));
    // Active: min(n, ACTIVE) of the held, spread over the clients in
    // proportion to what each holds.
    let active = n.min(ACTIVE);
    let mut given = 0;
    let k = rig.clients.len() as u64;
    for (i, cl) in rig.clients.iter_mut().enumerate() {
        let a = if i as u64 == k - 1 {
            active - given
        } else {
            active * cl.count / n
        };
        given += a;
        cl.tell(&format!("active {a} {ACTIVE_PERIOD_MS}"));
    }
    for cl in &rig.clients {
        cl.expect("active", Duration::from_secs(10))?;
    }
    // Let the load settle into its rhythm.
    std::thread::sleep(Duration::from_millis(500));
    let t_active = Instant::now();
    let rr = rig.rr(c.rr);
    // The stack's state while the load still runs, if the round trips
    // failed.
    let rr = rr.map_err(|e| diagnose(rig, &format!("with {active} active: {e}")));
    if let Ok((p50, p99)) = rr {
        f.insert("rr_active_p50_us", p50);
        f.insert("rr_active_p99_us", p99);
    }
    for cl in &mut rig.clients {
        cl.tell("idle");
    }
    let (mut sent, mut echoed, mut lag) = (0u64, 0u64, 0f64);
    for cl in &rig.clients {
        let l = cl.expect("idle", Duration::from_secs(10))?;
        let w: Vec<&str> = l.split_whitespace().collect();
        sent += w[2].parse::<u64>().unwrap_or(0);
        echoed += w[4].parse::<u64>().unwrap_or(0);
        lag = lag.max(w[6].parse::<f64>().unwrap_or(0.0));
    }
    // The clients ran from their `active` (before the pause) to their
    // `idle`: about the pause plus the round trips.
    let secs = t_active.elapsed().as_secs_f64() + 0.5;
    f.insert("active_msgs_per_s", echoed as f64 / secs);
    notes.push(format!(
        "active: {active} connections, one {ACTIVE_MSG}-byte message each per {ACTIVE_PERIOD_MS} ms \
         (aiming at {} a second): {sent} sent, {echoed} echoed, the clients' worst lag behind schedule {lag:.1} ms",
        active * 1000 / ACTIVE_PERIOD_MS
    ));
    if echoed < sent {
        notes.push(format!(
            "{} active messages not echoed within 2 s",
            sent - echoed
        ));
    }
    rr.map(|_| ())
}

/// The path measured at each of `counts` (rules or routes, named `what`
/// and `key`), each with the configuration `config(n)` makes.
fn path_part(
    c: &Config,
    counts: &[u64],
    (key, what): (&'static str, &'static str),
    title: &'static str,
    config: fn(u64) -> String,
) -> Part {
    let mut levels = Vec::new();
    for &n in counts {
        eprintln!("scale: {n} {what}");
        let l = path_level(n, &config(n), c);
        if let Some(e) = &l.failure {
            eprintln!("scale: {n} {what}: {e}");
        }
        levels.push(l);
    }
    Part {
        key,
        title,
        what,
        rows: &PATH_ROWS,
        levels,
    }
}

/// One count of the rules or routes part: a fresh instance with
/// `extra` in its configuration; round trips and bulk.
fn path_level(n: u64, extra: &str, c: &Config) -> Level {
    let extra = format!("{}{extra}", instance_config());
    let mut rig = match Rig::start(&extra, 1) {
        Ok(r) => r,
        Err(e) => return Level::skip(n, format!("refused by the stack: {e}")),
    };
    let mut level = Level::skip(n, String::new());
    level.skipped = false;
    let filterd = rig.st.layer_status("filterd");
    let state = filterd["aside"].as_str().or(filterd["state"].as_str());
    if let Some(state) = state {
        level.notes.push(format!("filterd {state}"));
    }
    let f = &mut level.figures;
    let r = rig.rr(c.rr).and_then(|(p50, p99)| {
        f.insert("rr_p50_us", p50);
        f.insert("rr_p99_us", p99);
        let bulk = rig.bulk(c)?;
        f.insert("bulk_gbits", bulk);
        Ok(())
    });
    level.failure = r.err().map(|e| diagnose(&rig, &e));
    level
}

/// The configuration lines of `n` filter rules that match none of the
/// bench's traffic.
fn rules_config(n: u64) -> String {
    if n == 0 {
        return String::new();
    }
    let mut s = String::from("[filter]\nrules = [\n");
    for i in 0..n {
        let port = RULE_PORT + i % (65_536 - RULE_PORT);
        let proto = if i < 65_536 - RULE_PORT { "tcp" } else { "udp" };
        s.push_str(&format!(
            "  \"add INPUT -p {proto} --dport {port} -j DROP\",\n"
        ));
    }
    s.push_str("]\n");
    s
}

/// The configuration of `n` routes via the kernel's end, to
/// 10.100.0.0/24, 10.100.1.0/24, ... (none on the bench's way).
fn routes_config(n: u64) -> String {
    let mut s = String::new();
    for i in 0..n {
        let (a, b) = (100 + i / 256, i % 256);
        s.push_str(&format!(
            "[[route]]\nto = \"10.{}.{b}.0/24\"\nvia = \"{HOST_IP}\"\n",
            a % 256
        ));
    }
    s
}

/// A part of the bench: its counts' outcomes.
struct Part {
    key: &'static str,
    title: &'static str,
    what: &'static str,
    rows: &'static [Row],
    levels: Vec<Level>,
}

impl Part {
    /// The figure of `row` at the first count that has it: what the
    /// ratios divide by.
    fn base(&self, row: &Row) -> Option<f64> {
        self.levels
            .iter()
            .find_map(|l| l.figures.get(row.key).copied())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scale-client") {
        client_main(&args[i + 1..]);
    }
    let bins = ["strata", "perf", "echo", "sockd", "tcpd", "filterd"];
    let Some(dir) = common::preflight("scale", &bins) else {
        return;
    };
    common::one_cpu_unless_told();
    let c = Config::get();
    let per_client = PER_CLIENT.min(nofile_hard().saturating_sub(100)).max(1);
    let (policy, _) = common::cpu_policy();
    eprintln!("scale: binaries in {dir}");
    let t_start = Instant::now();
    let mut parts = Vec::new();
    let mut levels = Vec::new();
    for &n in &c.counts {
        eprintln!("scale: N={n}");
        let l = connections(n, &c, per_client);
        if let Some(e) = &l.failure {
            eprintln!("scale: N={n}: {e}");
        }
        levels.push(l);
    }
    parts.push(Part {
        key: "connections",
        title: "connections held (N idle, plus the measured one)",
        what: "N",
        rows: &CONN_ROWS,
        levels,
    });
    parts.push(path_part(
        &c,
        &c.rules,
        ("filter_rules", "rules"),
        "filter rules (INPUT -p tcp --dport P -j DROP, none matching)",
        rules_config,
    ));
    parts.push(path_part(
        &c,
        &c.routes,
        ("routes", "routes"),
        "routes (10.100.0.0/24... via the kernel end, none on the way)",
        routes_config,
    ));
    let m = Machine::get();
    let took = t_start.elapsed();
    if c.json {
        println!("{:#}", to_json(&parts, &c, &m, &policy, per_client, took));
    } else {
        print_table(&parts, &c, &m, &policy, per_client, took);
    }
}

/// The table: per part, a column per count, each figure with its ratio
/// to the part's first count.
fn print_table(
    parts: &[Part],
    c: &Config,
    m: &Machine,
    policy: &str,
    per_client: u64,
    took: Duration,
) {
    println!("scale: strata with many connections, filter rules and routes (issue #20)");
    println!("  machine  {m}");
    println!(
        "  strata   on a TAP (MTU 1500), kernel clients in its namespace; layers' placement {policy}; \
         apps on CPUs {}; holding clients on CPUs {}",
        common::cpus_env("STRATA_BENCH_APP_CPUS"),
        c.client_cpus.as_deref().unwrap_or("any")
    );
    println!(
        "  work     {} round trips after {RR_WARMUP}; bulk: median of {} transfers of {} bytes; \
         up to {per_client} connections per client process, {} connects in flight each; \
         {PER_SERVER} per echo server",
        c.rr, c.runs, c.bytes, c.window
    );
    println!(
        "  set-up   {}",
        if c.setup == "echo" {
            "a connection counts once it has echoed a byte (at most the window per client unaccepted)"
        } else {
            "flood: a connection counts once the kernel has it connected, accepted or not"
        }
    );
    if let Ok(extra) = std::env::var("STRATA_BENCH_CONFIG") {
        println!("  config   added: {}", extra.replace('\n', "; "));
    }
    println!("  took     {:.0} s", took.as_secs_f64());
    for p in parts {
        if p.levels.is_empty() {
            continue;
        }
        println!("\n  {}", p.title);
        let heads: Vec<String> = p
            .levels
            .iter()
            .map(|l| format!("{}={}", p.what, l.n))
            .collect();
        print!("  {:<34} {:>7}", "figure", "unit");
        for h in &heads {
            print!("  {h:>19}");
        }
        println!();
        for row in p.rows {
            print!("  {:<34} {:>7}", row.label, row.unit);
            for l in &p.levels {
                let cell = match l.figures.get(row.key) {
                    Some(&v) => match ratio(row, v, p.base(row)) {
                        Some(r) => format!("{} ({r:.2})", fmt(v)),
                        None => format!("{} (-)", fmt(v)),
                    },
                    None if l.skipped => "skipped".into(),
                    None => "failed".into(),
                };
                print!("  {cell:>19}");
            }
            println!();
        }
        let first = p.levels.iter().find(|l| !l.figures.is_empty());
        let first = first.map_or("-".into(), |l| l.n.to_string());
        println!("  (in brackets: the ratio to {}={first})", p.what);
        if p.rows.iter().any(|r| !r.ratio) {
            println!(
                "  (no ratio, -: set-up at N=1 is one handshake and the bench's polling, memory \
                 growth over a few connections is a page either way, and the idle CPU and the \
                 active load are near nothing at N=1)"
            );
        }
        for l in &p.levels {
            match &l.failure {
                Some(e) if l.skipped => println!("  {}={}: skipped: {e}", p.what, l.n),
                Some(e) => println!("  {}={}: failed: {e}", p.what, l.n),
                None => {}
            }
            for note in &l.notes {
                println!("  {}={}: {note}", p.what, l.n);
            }
        }
    }
}

/// `v / base`, where both are positive (memory growth over a handful
/// of connections can be a page either way).
fn ratio(row: &Row, v: f64, base: Option<f64>) -> Option<f64> {
    let b = base?;
    (row.ratio && v > 0.0 && b > 0.0).then(|| v / b)
}

/// The JSON object: machine, knobs, and per part and count the figures
/// with their ratios, or why there are none.
fn to_json(
    parts: &[Part],
    c: &Config,
    m: &Machine,
    policy: &str,
    per_client: u64,
    took: Duration,
) -> Value {
    let mut out = serde_json::Map::new();
    for p in parts {
        let levels: Vec<Value> = p
            .levels
            .iter()
            .map(|l| {
                let figures: serde_json::Map<String, Value> = p
                    .rows
                    .iter()
                    .filter_map(|row| {
                        let v = *l.figures.get(row.key)?;
                        let r = ratio(row, v, p.base(row));
                        let fig = json!({ "value": v, "unit": row.unit, "ratio": r });
                        Some((row.key.to_string(), fig))
                    })
                    .collect();
                let mut o = serde_json::Map::new();
                o.insert(p.what.into(), json!(l.n));
                o.insert("figures".into(), Value::Object(figures));
                if let Some(e) = &l.failure {
                    let k = if l.skipped { "skipped" } else { "failed" };
                    o.insert(k.into(), json!(e));
                }
                o.insert("notes".into(), json!(l.notes));
                Value::Object(o)
            })
            .collect();
        out.insert(p.key.into(), json!(levels));
    }
    json!({
        "bench": "scale",
        "machine": m.json(),
        "config": {
            "rr": c.rr, "rr_warmup": RR_WARMUP, "bytes": c.bytes, "bulk_runs": c.runs,
            "connect_window": c.window, "setup": c.setup, "per_client": per_client, "per_server": PER_SERVER,
            "active": ACTIVE, "active_period_ms": ACTIVE_PERIOD_MS, "active_msg_bytes": ACTIVE_MSG,
            "layers_policy": policy,
            "app_cpus": common::cpus_env("STRATA_BENCH_APP_CPUS"),
            "thread_cpus": common::cpus_env("STRATA_BENCH_THREAD_CPUS"),
            "client_cpus": c.client_cpus.as_deref().unwrap_or("any"),
            "added_config": std::env::var("STRATA_BENCH_CONFIG").ok(),
        },
        "seconds": took.as_secs_f64(),
        "parts": out,
    })
}
