//! Versus: the same work against three TCP/IP stacks, side by side.
//!
//! - **kernel**: the Linux kernel against itself, a client namespace and a
//!   server namespace joined by a veth pair (MTU 1500, but with veth's
//!   default segmentation offload a TCP segment of up to 64 KB crosses
//!   it whole, where the TAP stacks get 1500-byte frames);
//! - **smoltcp**: smoltcp in a thread of this process on a TAP device in a
//!   namespace of its own, the kernel as the peer on the other side of the
//!   TAP (see `versus/smol.rs`);
//! - **strata**: a strata instance over a TAP with the kernel as the peer,
//!   as the integration tests and the `e2e` bench run it, with the example
//!   programs `perf` (sink, source, rr, rr-server) and `echo` (UDP);
//! - **strata+shim**: the same, with `perf --std` (the standard library's
//!   sockets) under the `LD_PRELOAD` shim instead of libsock: what an
//!   unmodified program pays for the shim (no UDP row: `echo` has no
//!   `std` mode);
//! - **strata/xdp**: strata driving one end of a veth pair through
//!   AF_XDP (copy mode), the kernel as the peer in another namespace at
//!   the other end (skipped, `-`, where the kernel makes no AF_XDP
//!   socket).
//!
//! In each, the stack is [`STACK_IP`] and the kernel peer [`HOST_IP`]
//! (threads of this process that entered the peer's namespace). The work:
//! bulk TCP into the stack (kernel sender → the stack's sink) and out of
//! it (the stack's source → a kernel sink), in Gbit/s, both timed by the
//! kernel peer; bulk into the stack once more from a paced sender (BBR,
//! where the kernel has it); 1-byte TCP request/response round trips both
//! ways (kernel client → the stack's server, and the stack's client → a kernel
//! server), p50 and p99 in µs, each timed by its client; UDP echo of
//! 64-byte datagrams, kernel client → the stack's echo server, 32 in
//! flight, echoes received per second.
//!
//! The three are set up once, then run round by round, interleaved (round
//! 1 of kernel, smoltcp, strata, then round 2, ...), since the machine is
//! noisy; the table shows the median of the rounds and the ratios
//! strata/smoltcp and strata/kernel. `-- --json` prints one JSON object
//! instead (with every round). Progress goes to stderr.
//!
//! The kernel's bulk senders name their congestion control rather than
//! take the host's default: cubic, Linux's default, which sends as fast
//! as the window allows, and BBR for the paced row. A BBR sender spaces
//! its 64 KB super-segments out on a timer, one timer interrupt each (on
//! the development VM, 15,000 per GB against 100 for cubic), and every
//! stack moves less under it, strata most (see README).
//!
//! Knobs: `STRATA_BENCH_CC` (the senders' congestion control for every
//! row but the paced one, default cubic), `STRATA_BENCH_RUNS` (rounds,
//! default 3), `STRATA_BENCH_BYTES` (bytes per bulk transfer, default
//! 500M; k, M, G allowed),
//! `STRATA_BENCH_RR` (round trips, default 20000, after 1000 unmeasured),
//! `STRATA_BENCH_UDP_SECS` (seconds of UDP per round, default 2); for
//! strata's placement, as in `e2e`, `STRATA_BENCH_CPU` (a `[cpu] policy`;
//! default the launcher's) and `STRATA_BENCH_APP_CPUS` (`taskset -c` for
//! the example programs; default 0); and `STRATA_BENCH_THREAD_CPUS` for
//! the bench's own threads (the kernel's sockets on both sides, and
//! smoltcp's thread; default 0). `any` leaves either to the scheduler.
//!
//! On a virtual machine, waking a thread on an idle vCPU costs far more
//! than waking one on the running vCPU (see docs/ARCHITECTURE.md,
//! "Placement"), so where the scheduler happens to put the two ends of a
//! round trip can change its time tenfold from one round to the next (5
//! against 60 µs for the kernel on the 2-core development VM); the table
//! lists every round under the medians. By default everything (strata's
//! layers by its `compact` policy) runs on CPU 0, which gives the same
//! answer round after round.
//!
//! Needs root, `ip`, /dev/net/tun and the release binaries (`cargo build
//! --release --workspace --bins`); without them it says what is missing
//! and exits successfully. Namespaces, devices and processes are
//! removed on the way out, also after a panic (the guards' drops; the TAP
//! and veth devices go with their namespaces).

mod common;
#[path = "versus/smol.rs"]
mod smol;

use common::{cpus_env, fmt, median, one_cpu_unless_told, spawn_app_env, value_after};
use common::{env_u64, host_addr, number_before, quantile, spawn_app, stack_addr};
use common::{Machine, UdpRate};
use serde_json::{json, Value};
use std::sync::mpsc::Receiver;
use std::time::Duration;
use strata_tests::{
    af_xdp_available, af_xdp_config, af_xdp_veth, wait_line, Bg, Netns, Stack, HOST_IP, STACK_IP,
};

/// The stack's sink.
const SINK_PORT: u16 = 5001;
/// The kernel peer's sink, for the stack's source.
const PEER_SINK_PORT: u16 = 5002;
/// The stack's rr server.
const RR_PORT: u16 = 5003;
/// The kernel peer's rr server, for the stack's rr client.
const PEER_RR_PORT: u16 = 5004;
/// The stack's UDP echo server.
const ECHO_PORT: u16 = 7;
/// Unmeasured round trips before the measured ones.
const RR_WARMUP: u64 = 1000;
/// UDP datagrams in flight.
const UDP_WINDOW: usize = 32;
/// UDP payload bytes.
const UDP_SIZE: usize = 64;
/// The stacks, in the table's order.
const STACKS: [&str; 5] = ["kernel", "smoltcp", "strata", "strata+shim", "strata/xdp"];

/// The knobs.
struct Config {
    runs: u64,
    /// The kernel's bulk senders' congestion control.
    cc: String,
    /// The paced sender's, when this kernel has it.
    paced: Option<String>,
    bytes: u64,
    rr: u64,
    udp_secs: f64,
    json: bool,
}

impl Config {
    /// The knobs from the environment and the arguments (`--json`; the
    /// rest, such as cargo's `--bench`, ignored).
    fn get() -> Config {
        let secs = std::env::var("STRATA_BENCH_UDP_SECS").ok();
        Config {
            runs: env_u64("STRATA_BENCH_RUNS", 3).max(1),
            cc: common::sender_cc(),
            paced: common::cc_usable(common::PACED_CC).then(|| common::PACED_CC.to_string()),
            bytes: env_u64("STRATA_BENCH_BYTES", 500_000_000).max(1),
            rr: env_u64("STRATA_BENCH_RR", 20_000).max(1),
            udp_secs: secs
                .and_then(|s| s.parse().ok())
                .unwrap_or(2.0_f64)
                .max(0.1),
            json: std::env::args().any(|a| a == "--json"),
        }
    }

    /// How long a bulk transfer may take (as slow as 80 Mbit/s).
    fn bulk_timeout(&self) -> Duration {
        Duration::from_secs(30 + self.bytes / 10_000_000)
    }

    /// How long the round trips may take (as slow as 2 ms each).
    fn rr_timeout(&self) -> Duration {
        Duration::from_secs(30 + (self.rr + RR_WARMUP) / 500)
    }
}

/// A stack under test, its servers up at [`STACK_IP`]: a sink on
/// [`SINK_PORT`], an rr server on [`RR_PORT`], a UDP echo on
/// [`ECHO_PORT`].
trait Target {
    /// The kernel peer's namespace, where [`HOST_IP`] is.
    fn peer_ns(&self) -> &str;
    /// Bytes the stack's sink read on the connection that ended last.
    fn sink_total(&mut self, timeout: Duration) -> u64;
    /// The stack sends `bytes` to [`HOST_IP`]:[`PEER_SINK_PORT`] and
    /// closes; returns once that is done.
    fn source(&mut self, bytes: u64, timeout: Duration);
    /// The stack's client makes `warmup` and then `count` round trips of
    /// 1 byte with [`HOST_IP`]:[`PEER_RR_PORT`]; the measured ones' p50
    /// and p99 in µs.
    fn rr_client(&mut self, count: u64, warmup: u64, timeout: Duration) -> (f64, f64);
    /// Whether a UDP echo server is up.
    fn udp(&self) -> bool {
        true
    }
}

/// The kernel against itself over a veth pair.
struct Kernel {
    sink: Receiver<(u64, Duration)>,
    peer: Netns,
    stack: Netns,
}

impl Kernel {
    /// Two namespaces joined by a veth pair, the server side's servers up.
    fn start() -> Kernel {
        let peer = Netns::new();
        let stack = Netns::new();
        let (vpeer, vstack) = ("vpeer", "vstack");
        let add = format!(
            "ip link add {vpeer} type veth peer name {vstack} netns {}",
            stack.name
        );
        peer.run_ok(&add.split(' ').collect::<Vec<_>>());
        for (ns, dev, ip) in [(&peer, vpeer, HOST_IP), (&stack, vstack, STACK_IP)] {
            ns.run_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", dev]);
            ns.run_ok(&["ip", "link", "set", dev, "mtu", "1500", "up"]);
        }
        let sink = common::sink_server(&stack.name, stack_addr(SINK_PORT));
        common::rr_server(&stack.name, stack_addr(RR_PORT));
        common::udp_echo_server(&stack.name, stack_addr(ECHO_PORT));
        Kernel { sink, peer, stack }
    }
}

impl Target for Kernel {
    fn peer_ns(&self) -> &str {
        &self.peer.name
    }

    fn sink_total(&mut self, timeout: Duration) -> u64 {
        let (total, _) = self
            .sink
            .recv_timeout(timeout)
            .expect("the kernel sink's count");
        total
    }

    fn source(&mut self, bytes: u64, _timeout: Duration) {
        common::send_bulk(&self.stack.name, host_addr(PEER_SINK_PORT), bytes)
            .join()
            .expect("kernel source");
    }

    fn rr_client(&mut self, count: u64, warmup: u64, _timeout: Duration) -> (f64, f64) {
        let us = common::rr_client(&self.stack.name, host_addr(PEER_RR_PORT), count, warmup)
            .join()
            .expect("kernel rr client");
        (quantile(&us, 0.5), quantile(&us, 0.99))
    }
}

/// smoltcp on a TAP. Fields drop in order: the thread stops (and its TAP
/// goes) before the namespace is deleted.
struct Smoltcp {
    smol: smol::Smol,
    ns: Netns,
}

impl Target for Smoltcp {
    fn peer_ns(&self) -> &str {
        &self.ns.name
    }

    fn sink_total(&mut self, timeout: Duration) -> u64 {
        self.smol.sink_total(timeout)
    }

    fn source(&mut self, bytes: u64, timeout: Duration) {
        self.smol.source(bytes, timeout);
    }

    fn rr_client(&mut self, count: u64, warmup: u64, timeout: Duration) -> (f64, f64) {
        let us = self.smol.rr(count, warmup, timeout);
        (quantile(&us, 0.5), quantile(&us, 0.99))
    }
}

/// strata on a TAP with `perf sink`, `perf rr-server` and `echo` up.
/// Fields drop in order: the applications, then the stack, then the
/// namespace.
struct Strata {
    sink: Bg,
    _apps: Vec<Bg>,
    st: Stack,
    ns: Netns,
    /// The kernel peer's namespace when it is not the stack's (AF_XDP).
    peer: Option<Netns>,
    /// The shim's library, when `perf` runs under it.
    shim: Option<String>,
}

impl Strata {
    /// A strata instance with the servers up; `extra` is added to its
    /// configuration (the placement); with `shim`, `perf` uses the
    /// standard library's sockets under that `LD_PRELOAD` library.
    fn start(extra: &str, shim: Option<String>) -> Strata {
        let ns = Netns::new();
        let st = Stack::up_with(&ns, extra);
        Self::serve(st, ns, None, shim)
    }

    /// A strata instance on one end of a veth pair, by AF_XDP, the
    /// kernel peer at the other end in a namespace of its own.
    fn start_xdp(extra: &str) -> Strata {
        let (ns, peer) = (Netns::new(), Netns::new());
        af_xdp_veth(&ns, &peer);
        let st = Stack::up_config(&ns, &af_xdp_config(extra));
        Self::serve(st, ns, Some(peer), None)
    }

    /// Starts the servers on `st`.
    fn serve(st: Stack, ns: Netns, peer: Option<Netns>, shim: Option<String>) -> Strata {
        let at = |port: u16| format!("0.0.0.0:{port}");
        let mut sink = perf(&st, &shim, &["sink", "--listen", &at(SINK_PORT)]);
        wait_line(&mut sink, "sink listening", Duration::from_secs(5));
        let mut rr = perf(&st, &shim, &["rr-server", "--listen", &at(RR_PORT)]);
        wait_line(&mut rr, "rr-server listening", Duration::from_secs(5));
        let mut apps = vec![rr];
        if shim.is_none() {
            let mut echo = spawn_app(&st, "echo", &["--udp", &at(ECHO_PORT)]);
            wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
            apps.push(echo);
        }
        Strata {
            sink,
            _apps: apps,
            st,
            ns,
            peer,
            shim,
        }
    }
}

/// `perf` with `args` on `st`: on libsock, or with `--std` under the
/// `shim` library.
fn perf(st: &Stack, shim: &Option<String>, args: &[&str]) -> Bg {
    match shim {
        None => spawn_app(st, "perf", args),
        Some(so) => {
            let args: Vec<&str> = std::iter::once("--std")
                .chain(args.iter().copied())
                .collect();
            spawn_app_env(st, "perf", &args, &[("LD_PRELOAD", so)])
        }
    }
}

impl Target for Strata {
    fn peer_ns(&self) -> &str {
        &self.peer.as_ref().unwrap_or(&self.ns).name
    }

    fn sink_total(&mut self, timeout: Duration) -> u64 {
        let line = wait_line(&mut self.sink, "sink:", timeout);
        number_before(&line, "bytes") as u64
    }

    fn source(&mut self, bytes: u64, timeout: Duration) {
        let to = host_addr(PEER_SINK_PORT).to_string();
        let args = ["source", "--connect", &to, "--bytes", &bytes.to_string()];
        let mut src = perf(&self.st, &self.shim, &args);
        wait_line(&mut src, "source:", timeout);
    }

    fn rr_client(&mut self, count: u64, warmup: u64, timeout: Duration) -> (f64, f64) {
        let to = host_addr(PEER_RR_PORT).to_string();
        let (count, warmup) = (count.to_string(), warmup.to_string());
        let args = [
            "rr",
            "--connect",
            &to,
            "--count",
            &count,
            "--warmup",
            &warmup,
        ];
        let mut rr = perf(&self.st, &self.shim, &args);
        let line = wait_line(&mut rr, "rr:", timeout);
        (value_after(&line, "median"), value_after(&line, "p99"))
    }

    fn udp(&self) -> bool {
        self.shim.is_none()
    }
}

/// What one round measured on one stack.
#[derive(Clone, Copy, Debug)]
struct Figures {
    bulk_in: f64,
    /// From a paced sender; NaN where the kernel has none.
    bulk_in_paced: f64,
    bulk_out: f64,
    rr_in: (f64, f64),
    rr_out: (f64, f64),
    udp: UdpRate,
}

/// A row of the table: one figure.
struct Row {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    get: fn(&Figures) -> f64,
}

/// The rows, in the table's order.
const ROWS: [Row; 8] = [
    Row {
        key: "bulk_in_gbits",
        label: "bulk TCP kernel -> stack",
        unit: "Gbit/s",
        get: |f| f.bulk_in,
    },
    Row {
        key: "bulk_in_paced_gbits",
        label: "bulk TCP kernel -> stack, paced",
        unit: "Gbit/s",
        get: |f| f.bulk_in_paced,
    },
    Row {
        key: "bulk_out_gbits",
        label: "bulk TCP stack -> kernel",
        unit: "Gbit/s",
        get: |f| f.bulk_out,
    },
    Row {
        key: "rr_in_p50_us",
        label: "1-byte RR kernel -> stack p50",
        unit: "us",
        get: |f| f.rr_in.0,
    },
    Row {
        key: "rr_in_p99_us",
        label: "1-byte RR kernel -> stack p99",
        unit: "us",
        get: |f| f.rr_in.1,
    },
    Row {
        key: "rr_out_p50_us",
        label: "1-byte RR stack -> kernel p50",
        unit: "us",
        get: |f| f.rr_out.0,
    },
    Row {
        key: "rr_out_p99_us",
        label: "1-byte RR stack -> kernel p99",
        unit: "us",
        get: |f| f.rr_out.1,
    },
    Row {
        key: "udp_echo_pps",
        label: "UDP 64-byte echo, 32 in flight",
        unit: "pkt/s",
        get: |f| f.udp.pps,
    },
];

/// One round of every workload on `t`; `peer_sink` is the kernel sink in
/// `t`'s peer namespace.
fn round(t: &mut dyn Target, peer_sink: &Receiver<(u64, Duration)>, c: &Config) -> Figures {
    let ns = t.peer_ns().to_string();
    let bulk_in = bulk_into(t, &ns, &c.cc, c);
    let bulk_in_paced = c
        .paced
        .as_ref()
        .map_or(f64::NAN, |cc| bulk_into(t, &ns, cc, c));

    t.source(c.bytes, c.bulk_timeout());
    let (got, d) = peer_sink
        .recv_timeout(c.bulk_timeout())
        .expect("the kernel sink's count");
    assert_eq!(got, c.bytes, "the kernel sink got a different amount");
    let bulk_out = common::gbits(got, d);

    let us = common::rr_client(&ns, stack_addr(RR_PORT), c.rr, RR_WARMUP)
        .join()
        .expect("kernel rr client");
    let rr_in = (quantile(&us, 0.5), quantile(&us, 0.99));
    let rr_out = t.rr_client(c.rr, RR_WARMUP, c.rr_timeout());

    let udp = if t.udp() {
        let flood = common::udp_flood(&ns, stack_addr(ECHO_PORT), c.udp_secs, UDP_WINDOW, UDP_SIZE);
        flood.join().expect("kernel UDP client")
    } else {
        UdpRate {
            pps: f64::NAN,
            refills: 0,
        }
    };
    Figures {
        bulk_in,
        bulk_in_paced,
        bulk_out,
        rr_in,
        rr_out,
        udp,
    }
}

/// Bulk TCP into `t` from a kernel sender in `ns` with congestion control
/// `cc`, in Gbit/s.
fn bulk_into(t: &mut dyn Target, ns: &str, cc: &str, c: &Config) -> f64 {
    let d = common::send_bulk_cc(ns, stack_addr(SINK_PORT), c.bytes, cc.to_string())
        .join()
        .expect("kernel sender");
    let got = t.sink_total(c.bulk_timeout());
    assert_eq!(got, c.bytes, "the stack's sink got a different amount");
    common::gbits(c.bytes, d)
}

/// A stack with the kernel peer's servers up in its peer namespace, and
/// the rounds run on it so far.
struct Column {
    name: &'static str,
    target: Box<dyn Target>,
    peer_sink: Receiver<(u64, Duration)>,
    rounds: Vec<Figures>,
}

impl Column {
    /// Starts the kernel peer's sink and rr server beside `target`.
    fn new(name: &'static str, target: Box<dyn Target>) -> Column {
        let peer_sink = common::sink_server(target.peer_ns(), host_addr(PEER_SINK_PORT));
        common::rr_server(target.peer_ns(), host_addr(PEER_RR_PORT));
        Column {
            name,
            target,
            peer_sink,
            rounds: Vec::new(),
        }
    }

    /// The median over the rounds of `row`'s figure.
    fn median(&self, row: &Row) -> f64 {
        median(self.rounds.iter().map(row.get).collect())
    }
}

/// Where things ran: strata's placement policy, where its layers went,
/// the example programs' CPUs, and the bench's own threads' CPUs.
struct Placement {
    policy: String,
    layers: String,
    apps: String,
    threads: String,
}

fn main() {
    let bins = ["strata", "perf", "echo", "sockd", "tcpd", "udpd"];
    let Some(dir) = common::preflight("versus", &bins) else {
        return;
    };
    one_cpu_unless_told();
    let c = Config::get();
    let (policy, extra) = common::cpu_policy();
    eprintln!("versus: setting up the kernel, smoltcp and strata, with and without the shim (binaries in {dir})");
    let kernel = Kernel::start();
    let ns = Netns::new();
    let smol = smol::Smol::start(&ns, "smol0");
    let smoltcp = Smoltcp { smol, ns };
    let strata = Strata::start(&extra, None);
    let so = strata_tests::workspace_lib("strata-preload", "libstrata_preload.so");
    let shimmed = Strata::start(&extra, Some(so.display().to_string()));
    let xdp = af_xdp_available().then(|| Strata::start_xdp(&extra));
    if xdp.is_none() {
        eprintln!("versus: this kernel makes no AF_XDP socket: no strata/xdp figures");
    }
    let placement = Placement {
        policy,
        layers: common::placement(&strata.st),
        apps: cpus_env("STRATA_BENCH_APP_CPUS"),
        threads: cpus_env("STRATA_BENCH_THREAD_CPUS"),
    };
    let mut targets: Vec<Box<dyn Target>> = vec![
        Box::new(kernel),
        Box::new(smoltcp),
        Box::new(strata),
        Box::new(shimmed),
    ];
    if let Some(x) = xdp {
        targets.push(Box::new(x));
    }
    let mut cols: Vec<Column> = STACKS
        .iter()
        .zip(targets)
        .map(|(&name, t)| Column::new(name, t))
        .collect();
    for r in 1..=c.runs {
        for col in &mut cols {
            eprintln!("versus: round {r}/{}: {}", c.runs, col.name);
            let f = round(col.target.as_mut(), &col.peer_sink, &c);
            col.rounds.push(f);
        }
    }
    let m = Machine::get();
    if c.json {
        println!("{:#}", to_json(&cols, &c, &m, &placement));
    } else {
        print_table(&cols, &c, &m, &placement);
    }
}

/// Column `name`'s median of `row`.
fn median_of(cols: &[Column], name: &str, row: &Row) -> f64 {
    let col = cols.iter().find(|c| c.name == name);
    col.map_or(f64::NAN, |c| c.median(row))
}

/// The table.
fn print_table(cols: &[Column], c: &Config, m: &Machine, p: &Placement) {
    println!(
        "versus: the same work against three TCP/IP stacks (strata also under the LD_PRELOAD \
         shim), median of {} rounds (interleaved)",
        c.runs
    );
    println!("  machine  {m}");
    println!("  kernel   client and server namespaces joined by a veth pair (MTU 1500, TSO)");
    println!("  smoltcp  smoltcp 0.12 in a thread, on a TAP (MTU 1500), the kernel as peer");
    println!(
        "  strata   on a TAP (MTU 1500), the kernel as peer; placement {}: {}; apps on CPUs {}",
        p.policy, p.layers, p.apps
    );
    println!("  +shim    the same strata, `perf --std` (std::net) under libstrata_preload.so");
    println!("  /xdp     strata on a veth end by AF_XDP (copy mode), the kernel at the other end");
    println!(
        "  threads  the bench's own (kernel sockets, smoltcp) on CPUs {}",
        p.threads
    );
    println!(
        "  senders  the kernel's bulk senders use {}; the paced row's, {}",
        c.cc,
        c.paced.as_deref().unwrap_or("- (this kernel has no BBR)")
    );
    println!(
        "  work     {} bytes per bulk transfer; {} round trips after {RR_WARMUP}; \
         UDP {} s, {UDP_SIZE}-byte datagrams, {UDP_WINDOW} in flight\n",
        c.bytes, c.rr, c.udp_secs
    );
    println!(
        "  {:<31} {:>6}  {:>10} {:>10} {:>10} {:>11} {:>10}  {:>14} {:>13} {:>11} {:>10}",
        "figure",
        "unit",
        "kernel",
        "smoltcp",
        "strata",
        "strata+shim",
        "strata/xdp",
        "strata/smoltcp",
        "strata/kernel",
        "shim/strata",
        "xdp/strata"
    );
    for row in &ROWS {
        let [k, s, t, sh, x] = STACKS.map(|n| median_of(cols, n, row));
        println!(
            "  {:<31} {:>6}  {:>10} {:>10} {:>10} {:>11} {:>10}  {:>14.3} {:>13.3} {:>11} {:>10}",
            row.label,
            row.unit,
            fmt(k),
            fmt(s),
            fmt(t),
            fmt(sh),
            fmt(x),
            t / s,
            t / k,
            fmt_ratio(sh / t),
            fmt_ratio(x / t)
        );
    }
    println!("  (a ratio above 1: strata's figure is higher; for the us rows, slower)\n");
    println!(
        "  every round, in order: {}",
        STACKS[..cols.len()].join(" | ")
    );
    for row in &ROWS {
        let rounds: Vec<String> = cols
            .iter()
            .map(|col| {
                let v: Vec<String> = col.rounds.iter().map(|f| fmt((row.get)(f))).collect();
                v.join(" ")
            })
            .collect();
        println!("  {:<31} {}", row.label, rounds.join(" | "));
    }
    for col in cols {
        let lost: u64 = col.rounds.iter().map(|f| f.udp.refills).sum();
        if lost > 0 {
            println!(
                "  note: {}: {lost} times no UDP echo came for {:?}; the window was sent anew",
                col.name,
                common::UDP_LOSS_WAIT
            );
        }
    }
}

/// A ratio, or `-` where a figure is missing.
fn fmt_ratio(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.3}")
    }
}

/// The JSON object: machine, knobs, placement, and per figure each
/// stack's median and rounds and the ratios.
fn to_json(cols: &[Column], c: &Config, m: &Machine, p: &Placement) -> Value {
    let mut figures = serde_json::Map::new();
    for row in &ROWS {
        let mut f = serde_json::Map::new();
        f.insert("unit".into(), json!(row.unit));
        for col in cols {
            let rounds: Vec<f64> = col.rounds.iter().map(row.get).collect();
            f.insert(
                col.name.into(),
                json!({ "median": col.median(row), "rounds": rounds }),
            );
        }
        let [k, s, t, sh, x] = STACKS.map(|n| median_of(cols, n, row));
        f.insert("strata/smoltcp".into(), json!(t / s));
        f.insert("strata/kernel".into(), json!(t / k));
        f.insert("shim/strata".into(), json!(sh / t));
        f.insert("xdp/strata".into(), json!(x / t));
        figures.insert(row.key.into(), Value::Object(f));
    }
    let refills: serde_json::Map<String, Value> = cols
        .iter()
        .map(|col| {
            let r: Vec<u64> = col.rounds.iter().map(|f| f.udp.refills).collect();
            (col.name.to_string(), json!(r))
        })
        .collect();
    json!({
        "bench": "versus",
        "machine": m.json(),
        "config": {
            "rounds": c.runs, "bytes": c.bytes, "rr": c.rr, "rr_warmup": RR_WARMUP,
            "sender_cc": c.cc, "paced_cc": c.paced,
            "udp_secs": c.udp_secs, "udp_window": UDP_WINDOW, "udp_size": UDP_SIZE,
        },
        "strata_placement": { "policy": p.policy, "layers": p.layers, "app_cpus": p.apps },
        "bench_thread_cpus": p.threads,
        "figures": figures,
        "udp_window_refills": refills,
    })
}
