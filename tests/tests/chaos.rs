//! The chaos test of the recovery contract (docs/DESIGN.md,
//! "Recovery"): concurrent TCP transfers both ways between kernel peers
//! and a libsock application (some through NAT) and a UDP echo stream,
//! while a random layer is SIGKILLed every 200–500 ms, and every third
//! round of the schedule upgrades instead (`strata upgrade`, to the same
//! binary). Every byte must arrive intact, no application may see an
//! error, every kill and upgrade must show as a restart in the launcher's
//! log, and the pool must come back to where it was.
//!
//! The schedule, not the transfers, sets the test's length: every
//! transfer streams seeded pseudo-random bytes until each layer has been
//! killed at least twice and upgraded at least once, and at least
//! `STRATA_CHAOS_KILLS` kills (default 20) have happened, then ends its
//! stream and both ends compare byte counts and sha256. A faster stack moves more bytes in the same run; it
//! cannot outrun the schedule.
//!
//! `STRATA_CHAOS_STREAMS` sets the transfers per direction (default 8),
//! `STRATA_CHAOS_SECS` the time limit (default 600: a stall fails the
//! test instead of hanging it), and `STRATA_CHAOS_SEED` the kill schedule
//! (printed on every run). `STRATA_CHAOS_SOAK=1` is the long variant:
//! 2,000 kills and an hour's limit.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_tests::{spawn_app, wait_line, Bg, Netns, Stack, HOST_IP, LAYERS, STACK_IP};

/// Kernel-side sender: connects, sends seeded pseudo-random bytes until
/// the stop file exists, half-closes, waits for the peer to close, prints
/// the bytes' count and sha256.
const SENDER: &str = r#"
import socket, sys, random, hashlib, os
host, port, seed, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = random.Random(seed)
h = hashlib.sha256()
s = socket.create_connection((host, port), timeout=300)
n = 0
while not os.path.exists(stop):
    b = r.randbytes(1 << 16)
    s.sendall(b)
    h.update(b)
    n += len(b)
s.shutdown(socket.SHUT_WR)
while s.recv(1 << 16):
    pass
print(n, h.hexdigest(), flush=True)
"#;

/// Kernel-side receiver: accepts one connection, reads to EOF, closes,
/// prints the received bytes' count and sha256.
const RECEIVER: &str = r#"
import socket, sys, hashlib
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(1)
print("listening", flush=True)
c, _ = l.accept()
c.settimeout(300)
h = hashlib.sha256()
n = 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    h.update(b)
    n += len(b)
c.close()
print(n, h.hexdigest(), flush=True)
"#;

/// Kernel-side UDP stream against the echo server: one datagram every
/// 10 ms for the given seconds or until SIGTERM; prints sent and echoed.
const UDP_STREAM: &str = r#"
import signal, socket, sys, time
stop = False
def term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, term)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.01)
s.connect((sys.argv[1], 7))
end = time.time() + float(sys.argv[2])
sent = got = 0
while time.time() < end and not stop:
    s.send(b"%08d" % sent)
    sent += 1
    try:
        while True:
            s.recv(64)
            got += 1
    except (socket.timeout, ConnectionRefusedError):
        pass
print(sent, got, flush=True)
"#;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: the kill schedule and the libsock senders' bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What the schedule did to a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blow {
    Kill,
    Upgrade,
}

/// Kills `LAYERS` in rounds of seven in a random order, one every
/// 200–500 ms (every third round upgrades them instead), until every
/// layer has been killed at least twice and upgraded at least once and at
/// least `min_kills` kills have succeeded (or `give_up` is set); returns
/// what was done to which layer, in order.
fn kill_schedule(
    instance: &str,
    seed: u64,
    min_kills: usize,
    give_up: &AtomicBool,
) -> Vec<(&'static str, Blow)> {
    let mut rng = Rng(seed);
    let mut done: Vec<(&'static str, Blow)> = Vec::new();
    let mut round = Vec::new();
    let mut rounds = 0;
    let count = |done: &Vec<(&str, Blow)>, l: &str, b: Blow| {
        done.iter().filter(|d| d.0 == l && d.1 == b).count()
    };
    let enough = |done: &Vec<(&str, Blow)>| {
        done.iter().filter(|d| d.1 == Blow::Kill).count() >= min_kills
            && LAYERS
                .iter()
                .all(|l| count(done, l, Blow::Kill) >= 2 && count(done, l, Blow::Upgrade) >= 1)
    };
    while !enough(&done) && !give_up.load(Relaxed) {
        // The pause between blows is part of the scenario (how often
        // layers die), not a wait for anything.
        std::thread::sleep(Duration::from_millis(200 + rng.next() % 301));
        if round.is_empty() {
            round = LAYERS.to_vec();
            for k in (1..round.len()).rev() {
                round.swap(k, (rng.next() % (k as u64 + 1)) as usize);
            }
            rounds += 1;
        }
        let layer = round.pop().unwrap();
        let blow = if rounds % 3 == 0 {
            Blow::Upgrade
        } else {
            Blow::Kill
        };
        let verb = match blow {
            Blow::Kill => "kill",
            Blow::Upgrade => "upgrade",
        };
        let o = std::process::Command::new(strata_tests::bin("strata"))
            .args(["--instance", instance, verb, layer])
            .output()
            .unwrap();
        if o.status.success() {
            done.push((layer, blow));
        }
    }
    done
}

#[test]
fn transfers_survive_a_layer_killed_every_few_hundred_ms() {
    let soak = std::env::var_os("STRATA_CHAOS_SOAK").is_some_and(|v| v != "0");
    let min_kills = env_or("STRATA_CHAOS_KILLS", if soak { 2000 } else { 20 }) as usize;
    let limit_secs = env_or("STRATA_CHAOS_SECS", if soak { 3600 } else { 600 });
    let streams = env_or("STRATA_CHAOS_STREAMS", 8) as usize;
    let seed = env_or(
        "STRATA_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    ) | 1;
    eprintln!("chaos: {streams}+{streams} transfers until {min_kills} kills, seed {seed}");

    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Half of the kernel's connections reach the application through NAT.
    st.filter("-t nat -A PREROUTING -p tcp --dport 9080 -j REDIRECT --to-ports 9000");
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
    let baseline = st.pool_in_use();

    // The transfers stream until this file exists (kernel side) and this
    // flag is set (libsock side).
    let stop_file = StopFile(std::env::temp_dir().join(format!("{}.chaos-stop", st.instance)));
    let _ = std::fs::remove_file(&stop_file.0);
    let stop = Arc::new(AtomicBool::new(false));

    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();

    // kernel -> libsock: a listener taking `streams` connections.
    let listener = stack.builder().tcp_bind("0.0.0.0:9000").unwrap();
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let acceptor = {
        let errors = errors.clone();
        let received = received.clone();
        std::thread::spawn(move || {
            let mut workers = Vec::new();
            for _ in 0..streams {
                let (mut s, _) = match listener.accept() {
                    Ok(x) => {
                        let limit = Some(Duration::from_secs(limit_secs));
                        let _ = x.0.set_read_timeout(limit);
                        x
                    }
                    Err(e) => {
                        errors.lock().unwrap().push(format!("accept: {e}"));
                        return workers;
                    }
                };
                let errors = errors.clone();
                let received = received.clone();
                workers.push(std::thread::spawn(move || {
                    let mut h = Sha256::new();
                    let mut n = 0u64;
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(k) => {
                                h.update(&buf[..k]);
                                n += k as u64;
                            }
                            Err(e) => {
                                errors.lock().unwrap().push(format!("read after {n}: {e}"));
                                return;
                            }
                        }
                    }
                    received
                        .lock()
                        .unwrap()
                        .push(format!("{n} {:x}", h.finalize()));
                }));
            }
            workers
        })
    };
    let stop_arg = stop_file.0.to_str().unwrap().to_string();
    let mut senders: Vec<Bg> = (0..streams)
        .map(|i| {
            let port = if i % 2 == 0 { "9000" } else { "9080" };
            ns.spawn(&[
                "python3",
                "-c",
                SENDER,
                STACK_IP,
                port,
                &(1000 + i).to_string(),
                &stop_arg,
            ])
        })
        .collect();

    // libsock -> kernel: one kernel receiver per stream.
    let mut receivers: Vec<Bg> = (0..streams)
        .map(|i| {
            let mut r = ns.spawn(&[
                "python3",
                "-u",
                "-c",
                RECEIVER,
                HOST_IP,
                &(9100 + i).to_string(),
            ]);
            wait_line(&mut r, "listening", Duration::from_secs(10));
            r
        })
        .collect();
    let sent: Vec<std::thread::JoinHandle<Option<String>>> = (0..streams)
        .map(|i| {
            let stack = stack.clone();
            let errors = errors.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let fail = |what: String| {
                    errors.lock().unwrap().push(what);
                    None
                };
                let mut s = match stack
                    .builder()
                    .tcp_connect(format!("{HOST_IP}:{}", 9100 + i).as_str())
                {
                    Ok(s) => s,
                    Err(e) => return fail(format!("connect {i}: {e}")),
                };
                // A stall shows as an error, not a hung test.
                let limit = Some(Duration::from_secs(limit_secs));
                let _ = s.set_write_timeout(limit);
                let _ = s.set_read_timeout(limit);
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 16];
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    for c in buf.chunks_mut(8) {
                        c.copy_from_slice(&rng.next().to_le_bytes());
                    }
                    if let Err(e) = s.write_all(&buf) {
                        return fail(format!("write {i} after {n}: {e}"));
                    }
                    h.update(&buf);
                    n += buf.len() as u64;
                }
                if let Err(e) = s.shutdown(Shutdown::Write) {
                    return fail(format!("shutdown {i}: {e}"));
                }
                // The receiver closes once it has everything.
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return fail(format!("read {i} after sending: {e}")),
                    }
                }
                Some(format!("{n} {:x}", h.finalize()))
            })
        })
        .collect();
    let secs_arg = limit_secs.to_string();
    let udp = ns.spawn(&["python3", "-c", UDP_STREAM, STACK_IP, &secs_arg]);

    // The chaos driver: the transfers run until it is done.
    let t = Instant::now();
    let give_up = Arc::new(AtomicBool::new(false));
    let chaos = {
        let (instance, stop, give_up) = (st.instance.clone(), stop.clone(), give_up.clone());
        let stop_file = stop_file.0.clone();
        std::thread::spawn(move || {
            let kills = kill_schedule(&instance, seed, min_kills, &give_up);
            std::fs::write(&stop_file, b"").expect("stop file");
            stop.store(true, Relaxed);
            kills
        })
    };
    let deadline = Duration::from_secs(limit_secs);
    let mut sender_sums = Vec::new();
    for s in senders.drain(..) {
        let left = deadline.saturating_sub(t.elapsed());
        let out = s.wait_output(left).unwrap_or_else(|| "timeout".into());
        sender_sums.push(out.trim().to_string());
    }
    // A sender that timed out ends the schedule, so the rest can end too.
    give_up.store(true, Relaxed);
    let kills = chaos.join().unwrap();
    let sent_sums: Vec<Option<String>> = sent.into_iter().map(|h| h.join().unwrap()).collect();
    let mut receiver_sums = Vec::new();
    for r in receivers.drain(..) {
        let left = deadline
            .saturating_sub(t.elapsed())
            .max(Duration::from_secs(5));
        let out = r.wait_output(left).unwrap_or_else(|| "timeout".into());
        receiver_sums.push(out.trim().to_string());
    }
    for w in acceptor.join().unwrap() {
        w.join().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let moved: u64 = sender_sums
        .iter()
        .chain(&receiver_sums)
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let count = |l: &str, b: Blow| kills.iter().filter(|k| k.0 == l && k.1 == b).count();
    let n_kills = kills.iter().filter(|k| k.1 == Blow::Kill).count();
    eprintln!(
        "chaos: {n_kills} kills and {} upgrades in {secs:.1} s, {} MB moved: {:?}",
        kills.len() - n_kills,
        moved / 1_000_000,
        LAYERS.map(|l| (l, count(l, Blow::Kill), count(l, Blow::Upgrade)))
    );

    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "applications saw errors: {errors:?}");
    // kernel -> libsock: the same multiset of (count, hash), every stream
    // whole.
    let mut got = received.lock().unwrap().clone();
    got.sort();
    sender_sums.sort();
    assert_eq!(got, sender_sums, "kernel -> libsock streams differ");
    // libsock -> kernel.
    for (i, (s, r)) in sent_sums.iter().zip(&receiver_sums).enumerate() {
        assert_eq!(
            Some(r),
            s.as_ref(),
            "libsock -> kernel stream {i} (receiver, sender)"
        );
    }
    // Every layer was killed at least twice and upgraded at least once
    // while the transfers ran.
    assert!(n_kills >= min_kills, "only {n_kills} kills: {kills:?}");
    for l in LAYERS {
        let (k, u) = (count(l, Blow::Kill), count(l, Blow::Upgrade));
        assert!(k >= 2 && u >= 1, "{l}: {k} kills, {u} upgrades: {kills:?}");
    }
    // The UDP echo kept answering and the echo server never failed.
    // SAFETY: kill takes no pointers; the pid is a process this test started
    // and has not reaped, so it names no other process.
    unsafe { libc::kill(udp.child.id() as i32, libc::SIGTERM) };
    let out = udp
        .wait_output(Duration::from_secs(10))
        .expect("UDP stream ends");
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    eprintln!("chaos: UDP echo {} of {} datagrams", v[1], v[0]);
    assert!(v[0] > 0 && v[1] > 0, "no UDP echo during the chaos: {out}");
    assert!(echo.alive(), "the UDP echo server died");
    let out = ns.run_ok(&["python3", "-c", UDP_STREAM, STACK_IP, "1"]);
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert!(v[1] > 0, "no UDP echo after the chaos: {out}");
    // Every kill and every upgrade is a restart in the log.
    let log = st.log_text();
    for l in LAYERS {
        let k = count(l, Blow::Kill) + count(l, Blow::Upgrade);
        let r = log.matches(&format!("{l} restarted")).count();
        assert!(r >= k, "{l}: {k} kills and upgrades, {r} restarts logged");
        let u = log.matches(&format!("{l} upgraded to")).count();
        assert!(u >= count(l, Blow::Upgrade), "{l}: {u} upgrades logged");
    }
    // No buffer leaked: connections still closing may hold some for a
    // while; what stays is a leak, shown with who holds what.
    let deadline = Instant::now() + Duration::from_secs(20);
    while st.pool_in_use() > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let pool = &st.json("status")["pool"];
    eprintln!("chaos: pool {pool} (baseline {baseline})");
    assert!(
        pool["in_use"].as_u64().unwrap() <= baseline,
        "the pool is not back at its baseline {baseline}: {pool}\nss:\n{}",
        String::from_utf8_lossy(&st.strata(&["ss", "--info"]).stdout)
    );
    assert_eq!(
        st.json("status")["pool"]["pinned"],
        0,
        "tcpd keeps nothing once every connection is closed"
    );
}

/// The stop file, removed when the test ends however it ends.
struct StopFile(std::path::PathBuf);

impl Drop for StopFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
