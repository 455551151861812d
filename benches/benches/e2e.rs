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
//! `STRATA_BENCH_RR` (round trips, default 20000), `STRATA_BENCH_CPU` (the
//! layers' `[cpu] policy`), `STRATA_BENCH_APP_CPUS` (`taskset -c` for the
//! applications), `STRATA_BENCH_THREAD_CPUS` (CPUs for the kernel's
//! threads), `STRATA_BENCH_CC` (the kernel sender's congestion control,
//! default cubic).

mod common;

use common::{
    env_u64, host_addr, number_before, quantile, send_bulk, sorted, spawn_app, stack_addr,
    value_after,
};
use std::time::Duration;
use strata_tests::{wait_line, Netns, Stack, HOST_IP};

/// Unmeasured round trips before the measured ones.
const RR_WARMUP: u64 = 1000;

/// Kernel → libsock: a kernel client writes `bytes` to `perf sink`,
/// closes, and waits for the sink to close (everything delivered).
fn bulk_to_libsock(ns: &Netns, st: &Stack, bytes: u64, runs: u64) -> Vec<f64> {
    let mut sink = spawn_app(st, "perf", &["sink", "--listen", "0.0.0.0:5001"]);
    wait_line(&mut sink, "sink listening", Duration::from_secs(5));
    let mut res = Vec::new();
    for _ in 0..runs {
        let d = send_bulk(&ns.name, stack_addr(5001), bytes)
            .join()
            .expect("kernel sender");
        let line = wait_line(&mut sink, "sink:", Duration::from_secs(30));
        assert!(
            line.contains(&format!(": {bytes} bytes")),
            "sink got a different amount: {line}"
        );
        res.push(common::gbits(bytes, d));
    }
    res
}

/// libsock → kernel: `perf source` writes `bytes` to a kernel server,
/// which reads to the end and closes.
fn bulk_from_libsock(ns: &Netns, st: &Stack, bytes: u64, runs: u64) -> Vec<f64> {
    let rx = common::sink_server(&ns.name, host_addr(5002));
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
        let line = wait_line(&mut src, "source:", Duration::from_secs(300));
        let (total, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
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
    wait_line(&mut srv, "rr-server listening", Duration::from_secs(5));
    let us = common::rr_client(&ns.name, stack_addr(5003), count, RR_WARMUP)
        .join()
        .expect("kernel rr client");
    (quantile(&us, 0.5), quantile(&us, 0.99))
}

/// Round trips of 1 byte, `perf rr` → a kernel server.
fn rr_libsock_client(ns: &Netns, st: &Stack, count: u64) -> (f64, f64) {
    common::rr_server(&ns.name, host_addr(5004));
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
            &RR_WARMUP.to_string(),
        ],
    );
    let line = wait_line(&mut rr, "rr:", Duration::from_secs(120));
    (value_after(&line, "median"), value_after(&line, "p99"))
}

fn main() {
    // `cargo bench` passes --bench (and filters); nothing to choose here.
    let Some(dir) = common::preflight("e2e", &["strata", "perf", "sockd", "tcpd"]) else {
        return;
    };
    let bytes = env_u64("STRATA_BENCH_BYTES", 500_000_000);
    let runs = env_u64("STRATA_BENCH_RUNS", 3).max(1);
    let rr = env_u64("STRATA_BENCH_RR", 20_000).max(1);

    // The layers' placement ([cpu] policy): the launcher's default unless
    // STRATA_BENCH_CPU names one.
    let (policy, extra) = common::cpu_policy();
    let ns = Netns::new();
    let st = Stack::up_with(&ns, &extra);
    println!(
        "e2e: strata TCP over TAP against the Linux kernel \
         (binaries in {dir}; {bytes} bytes per transfer, {runs} runs; {rr} round trips)\n\
         placement {policy}: {}; applications on CPUs {}",
        common::placement(&st),
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
