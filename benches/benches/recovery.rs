//! Recovery time per layer: from `strata kill LAYER` (SIGKILL) to the
//! stack moving packets again, median and worst over many kills; and the
//! same for `strata upgrade LAYER` (to the same binary): the pause while
//! one instance hands over to the next.
//!
//! A kernel-side prober in a private namespace keeps 1-byte round trips
//! going against examples/echo on the stack: UDP (through driverd,
//! netdevd, filterd, ipd, udpd, sockd) and TCP (through tcpd instead of
//! udpd). After each kill, the longest pause between two completed round
//! trips is the recovery time (for TCP it includes the kernel's
//! retransmission timer when the request itself was lost with the layer;
//! a second TCP connection, with a 5 ms minimum RTO on the kernel's side,
//! shows tcpd's recovery without most of that timer).
//! Beside it, the launcher's side of each restart from `strata status`:
//! from the SIGKILL to the new instance declaring itself serving, and
//! within that the time to notice the death, to reclaim what it held, and
//! from the fork to serving (and, inside that, until the launcher saw the
//! exec succeed). What the pause has beyond that is the data path
//! getting going again (the first packets, and for TCP the timer).
//!
//! Not a timed test: it prints numbers. Needs root and the release
//! binaries (`cargo build --release --workspace --bins`); without them it
//! says so and exits successfully. `STRATA_BENCH_KILLS` sets the kills,
//! and as many upgrades, per layer (default 20: about three minutes in
//! all).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_tests::{bin_dir, spawn_app, wait_line, Netns, Stack, STACK_IP};

/// Completion times of round trips, per protocol.
type Log = Arc<Mutex<Vec<Instant>>>;

fn in_netns(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("netns");
    // SAFETY: a plain system call on an fd we own; it affects only this
    // thread.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
}

fn udp_prober(ns: String, log: Log, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        in_netns(&ns);
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect((STACK_IP, 7)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        let mut b = [0u8; 16];
        while !stop.load(Relaxed) {
            let _ = s.send(b"x");
            if s.recv(&mut b).is_ok() {
                log.lock().unwrap().push(Instant::now());
            }
        }
    })
}

/// Linux's `TCP_RTO_MIN_US` (6.11 and later; not in the libc crate yet).
const TCP_RTO_MIN_US: libc::c_int = 45;

/// A TCP prober; with `rto_min_us`, on a connection whose kernel-side
/// minimum retransmission timeout is that instead of 200 ms, so that its
/// pause shows tcpd's recovery rather than the peer's timer. Logs nothing
/// if the kernel refuses the option.
fn tcp_prober(
    ns: String,
    log: Log,
    stop: Arc<AtomicBool>,
    rto_min_us: Option<u32>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        in_netns(&ns);
        let mut s = TcpStream::connect((STACK_IP, 7)).unwrap();
        s.set_nodelay(true).unwrap();
        if let Some(us) = rto_min_us {
            let v = us as libc::c_int;
            // SAFETY: setsockopt on a socket we own, with an int option.
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    TCP_RTO_MIN_US,
                    &v as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return;
            }
        }
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let mut b = [0u8; 1];
        let mut outstanding = false;
        while !stop.load(Relaxed) {
            if !outstanding {
                s.write_all(b"x").unwrap();
                outstanding = true;
            }
            match s.read(&mut b) {
                Ok(1) => {
                    outstanding = false;
                    log.lock().unwrap().push(Instant::now());
                }
                Ok(_) => break,
                Err(_) => {}
            }
        }
    })
}

/// The longest pause in the round trips completed since `t` (until one
/// completes after `settled`): the outage the kill caused.
fn outage(log: &Log, t: Instant, settled: Instant, limit: Duration) -> Option<Duration> {
    let end = settled + limit;
    loop {
        {
            let l = log.lock().unwrap();
            if l.last().is_some_and(|x| *x > settled) {
                let mut prev = t;
                let mut worst = Duration::ZERO;
                for x in l.iter().filter(|x| **x > t) {
                    worst = worst.max(*x - prev);
                    prev = *x;
                }
                return Some(worst);
            }
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A layer's `last_recovery_ms` from `strata status`.
fn last_recovery(st: &Stack, layer: &str) -> serde_json::Value {
    st.json("status")["layers"]
        .as_array()
        .and_then(|a| a.iter().find(|l| l["layer"] == layer))
        .map(|l| l["last_recovery_ms"].clone())
        .unwrap_or_default()
}

fn median_worst(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let med = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    (med, v.last().copied().unwrap_or(f64::NAN))
}

fn main() {
    // SAFETY: geteuid takes nothing and cannot fail.
    if !bin_dir().join("strata").exists() || unsafe { libc::geteuid() } != 0 {
        println!(
            "recovery bench: needs root and `cargo build --release --workspace --bins`; skipped"
        );
        return;
    }
    let kills: usize = std::env::var("STRATA_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7", "--tcp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let (udp, tcp, tcp_fast): (Log, Log, Log) = Default::default();
    let probers = [
        udp_prober(ns.name.clone(), udp.clone(), stop.clone()),
        tcp_prober(ns.name.clone(), tcp.clone(), stop.clone(), None),
        tcp_prober(ns.name.clone(), tcp_fast.clone(), stop.clone(), Some(5000)),
    ];
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "recovery time over {kills} kills per layer: the longest pause in 1-byte round trips \
         around each SIGKILL; and the launcher's view, SIGKILL to serving (medians of: \
         noticed / reclaimed / fork to serving / of that, until the exec was seen):"
    );
    const LAYERS: [&str; 7] = [
        "driverd0", "netdevd", "filterd", "ipd", "udpd", "sockd", "tcpd",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); LAYERS.len()];
    let mut lost = [0usize; LAYERS.len()];
    // The same for upgrades, and the launcher's handover and pause.
    let mut up_times: Vec<Vec<f64>> = vec![Vec::new(); LAYERS.len()];
    let mut up_lost = [0usize; LAYERS.len()];
    let mut up_launcher: Vec<Vec<[f64; 2]>> = vec![Vec::new(); LAYERS.len()];
    // tcpd's kills seen by the connection with a 5 ms minimum RTO.
    let fast_ok = !tcp_fast.lock().unwrap().is_empty();
    let mut fast: Vec<f64> = Vec::new();
    let mut fast_lost = 0usize;
    // [total, detect, reclaim, startup, exec] per kill, in ms.
    let mut launcher: Vec<Vec<[f64; 5]>> = vec![Vec::new(); LAYERS.len()];
    // Round robin, though `strata kill` deaths do not count towards the
    // launcher's crash-loop back-off any more: each layer gets the same
    // rest between its kills.
    for _ in 0..kills {
        for (i, layer) in LAYERS.iter().enumerate() {
            let log = if *layer == "tcpd" { &tcp } else { &udp };
            let before = st.restarts(layer);
            let prev = last_recovery(&st, layer);
            let t = Instant::now();
            let o = st.strata(&["kill", layer]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            st.wait_for("the restart", Duration::from_secs(10), || {
                st.restarts(layer) > before
            });
            let settled = Instant::now();
            match outage(log, t, settled, Duration::from_secs(10)) {
                Some(d) => times[i].push(d.as_secs_f64() * 1e3),
                None => lost[i] += 1,
            }
            if *layer == "tcpd" && fast_ok {
                match outage(&tcp_fast, t, settled, Duration::from_secs(10)) {
                    Some(d) => fast.push(d.as_secs_f64() * 1e3),
                    None => fast_lost += 1,
                }
            }
            // Logged at the launcher's next tick after the layer is ready.
            let mut r = last_recovery(&st, layer);
            let deadline = Instant::now() + Duration::from_secs(2);
            while r == prev && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                r = last_recovery(&st, layer);
            }
            if r != prev {
                let g = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
                launcher[i].push([
                    g("total"),
                    g("detect"),
                    g("reclaim"),
                    g("startup"),
                    g("exec"),
                ]);
            }
            std::thread::sleep(Duration::from_millis(300));
            // An upgrade: answered once the new instance serves.
            let t = Instant::now();
            let o = st.strata(&["--json", "upgrade", layer]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let settled = Instant::now();
            match outage(log, t, settled, Duration::from_secs(10)) {
                Some(d) => up_times[i].push(d.as_secs_f64() * 1e3),
                None => up_lost[i] += 1,
            }
            let g = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            up_launcher[i].push([g("handover_ms"), g("pause_ms")]);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let never = |n: usize| {
        if n > 0 {
            format!("   ({n} never recovered within 10 s)")
        } else {
            String::new()
        }
    };
    for (i, layer) in LAYERS.iter().enumerate() {
        let (med, worst) = median_worst(&mut times[i]);
        let col = |c: usize| -> Vec<f64> { launcher[i].iter().map(|r| r[c]).collect() };
        let (lmed, lworst) = median_worst(&mut col(0));
        let parts: Vec<String> = (1..5)
            .map(|c| format!("{:.1}", median_worst(&mut col(c)).0))
            .collect();
        println!(
            "  {layer:<9} ({})  pause median {med:6.1} ms  worst {worst:6.1} ms   \
             launcher median {lmed:5.1} ms  worst {lworst:5.1} ms  ({}){}",
            if *layer == "tcpd" { "tcp" } else { "udp" },
            parts.join(" / "),
            never(lost[i])
        );
    }
    println!(
        "upgrade to the same binary, {kills} per layer: the longest pause in the same round \
         trips; and the launcher's view (medians of: request to the old instance's exit / \
         that exit to the new one serving):"
    );
    for (i, layer) in LAYERS.iter().enumerate() {
        let (med, worst) = median_worst(&mut up_times[i]);
        let col = |c: usize| -> Vec<f64> { up_launcher[i].iter().map(|r| r[c]).collect() };
        println!(
            "  {layer:<9} ({})  pause median {med:6.1} ms  worst {worst:6.1} ms   \
             launcher {:.1} / {:.1} ms{}",
            if *layer == "tcpd" { "tcp" } else { "udp" },
            median_worst(&mut col(0)).0,
            median_worst(&mut col(1)).0,
            never(up_lost[i])
        );
    }
    if fast_ok {
        let (med, worst) = median_worst(&mut fast);
        println!(
            "  tcpd      (tcp, kernel rto_min 5 ms, kills)  pause median {med:6.1} ms  \
             worst {worst:6.1} ms{}",
            never(fast_lost)
        );
    } else {
        println!("  (no TCP_RTO_MIN_US in this kernel: no tcpd row with a 5 ms minimum RTO)");
    }
    stop.store(true, Relaxed);
    for p in probers {
        let _ = p.join();
    }
}
