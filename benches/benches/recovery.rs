//! Recovery time per layer: from `strata kill LAYER` (SIGKILL) to the
//! stack moving packets again, median and worst over many kills.
//!
//! A kernel-side prober in a private namespace keeps 1-byte round trips
//! going against examples/echo on the stack: UDP (through driverd,
//! netdevd, filterd, ipd, udpd, sockd) and TCP (through tcpd instead of
//! udpd). After each kill, the longest pause between two completed round
//! trips is the recovery time (for TCP it includes the kernel's
//! retransmission timer when the request itself was lost with the layer).
//!
//! Not a timed test: it prints numbers. Needs root and the release
//! binaries (`cargo build --release --workspace --bins`); without them it
//! says so and exits successfully. `STRATA_BENCH_KILLS` sets the kills
//! per layer (default 10).

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

fn tcp_prober(ns: String, log: Log, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        in_netns(&ns);
        let mut s = TcpStream::connect((STACK_IP, 7)).unwrap();
        s.set_nodelay(true).unwrap();
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

fn main() {
    if !bin_dir().join("strata").exists() || unsafe { libc::geteuid() } != 0 {
        println!(
            "recovery bench: needs root and `cargo build --release --workspace --bins`; skipped"
        );
        return;
    }
    let kills: usize = std::env::var("STRATA_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7", "--tcp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let (udp, tcp): (Log, Log) = Default::default();
    let probers = [
        udp_prober(ns.name.clone(), udp.clone(), stop.clone()),
        tcp_prober(ns.name.clone(), tcp.clone(), stop.clone()),
    ];
    std::thread::sleep(Duration::from_millis(500));
    println!("recovery time: the longest pause in 1-byte round trips around each SIGKILL ({kills} kills each):");
    const LAYERS: [&str; 7] = [
        "driverd0", "netdevd", "filterd", "ipd", "udpd", "sockd", "tcpd",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); LAYERS.len()];
    let mut lost = [0usize; LAYERS.len()];
    // Round robin, so that no layer dies often enough for the launcher's
    // crash-loop back-off (3 deaths in 10 s) to add its delay.
    for _ in 0..kills {
        for (i, layer) in LAYERS.iter().enumerate() {
            let log = if *layer == "tcpd" { &tcp } else { &udp };
            let before = st.restarts(layer);
            let t = Instant::now();
            let o = st.strata(&["kill", layer]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            st.wait_for("the restart", Duration::from_secs(10), || {
                st.restarts(layer) > before
            });
            match outage(log, t, Instant::now(), Duration::from_secs(10)) {
                Some(d) => times[i].push(d.as_secs_f64() * 1e3),
                None => lost[i] += 1,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    for (i, layer) in LAYERS.iter().enumerate() {
        let v = &mut times[i];
        v.sort_by(f64::total_cmp);
        let med = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
        let worst = v.last().copied().unwrap_or(f64::NAN);
        println!(
            "  {layer:<9} ({})  median {med:7.1} ms   worst {worst:7.1} ms{}",
            if *layer == "tcpd" { "tcp" } else { "udp" },
            if lost[i] > 0 {
                format!("   ({} never recovered within 10 s)", lost[i])
            } else {
                String::new()
            }
        );
    }
    stop.store(true, Relaxed);
    for p in probers {
        let _ = p.join();
    }
}
