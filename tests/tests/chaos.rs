//! The chaos test of the recovery contract (DESIGN.md §3): concurrent TCP
//! transfers both ways between kernel peers and a libsock application
//! (some through NAT) and a UDP echo stream, while a random layer is
//! SIGKILLed every 200–500 ms for the whole run. Every byte must arrive
//! intact, no application may see an error, every kill must show as a
//! restart in the launcher's log, and the pool must come back to where it
//! was.
//!
//! `STRATA_CHAOS_BYTES` sets the bytes per transfer (default 50 MB),
//! `STRATA_CHAOS_STREAMS` the transfers per direction (default 8),
//! `STRATA_CHAOS_SECS` the time limit (default 600), and
//! `STRATA_CHAOS_SEED` the kill schedule (printed on every run).
//! `STRATA_CHAOS_SOAK=1` is the long variant: 4 GB per transfer and an
//! hour's limit, some thousands of kills.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_tests::{spawn_app, wait_line, Bg, Netns, Stack, HOST_IP, STACK_IP};

/// Kernel-side sender: connects, sends N seeded pseudo-random bytes,
/// half-closes, waits for the peer to close, prints the bytes' sha256.
const SENDER: &str = r#"
import socket, sys, random, hashlib
host, port, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = random.Random(seed)
h = hashlib.sha256()
s = socket.create_connection((host, port), timeout=300)
left = n
while left:
    b = r.randbytes(min(left, 1 << 16))
    s.sendall(b)
    h.update(b)
    left -= len(b)
s.shutdown(socket.SHUT_WR)
while s.recv(1 << 16):
    pass
print(h.hexdigest(), flush=True)
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

const LAYERS: [&str; 7] = [
    "driverd0", "netdevd", "filterd", "ipd", "tcpd", "udpd", "sockd",
];

#[test]
fn transfers_survive_a_layer_killed_every_few_hundred_ms() {
    let soak = std::env::var_os("STRATA_CHAOS_SOAK").is_some_and(|v| v != "0");
    let bytes = env_or(
        "STRATA_CHAOS_BYTES",
        if soak { 4_000_000_000 } else { 50_000_000 },
    );
    let limit_secs = env_or("STRATA_CHAOS_SECS", if soak { 3600 } else { 600 });
    let streams = env_or("STRATA_CHAOS_STREAMS", 8) as usize;
    let seed = env_or(
        "STRATA_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    ) | 1;
    eprintln!("chaos: {streams}+{streams} transfers of {bytes} bytes, seed {seed}");

    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Half of the kernel's connections reach the application through NAT.
    st.filter("-t nat -A PREROUTING -p tcp --dport 9080 -j REDIRECT --to-ports 9000");
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
    let baseline = st.pool_in_use();

    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();

    // kernel -> libsock: a listener taking `streams` connections.
    let listener = stack.builder().tcp_bind("0.0.0.0:9000").unwrap();
    let received: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
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
                        .push((n, format!("{:x}", h.finalize())));
                }));
            }
            workers
        })
    };
    let mut senders: Vec<Bg> = (0..streams)
        .map(|i| {
            let port = if i % 2 == 0 { "9000" } else { "9080" };
            ns.spawn(&[
                "python3",
                "-c",
                SENDER,
                STACK_IP,
                port,
                &bytes.to_string(),
                &(1000 + i).to_string(),
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
                let mut left = bytes;
                while left > 0 {
                    let k = left.min(buf.len() as u64) as usize;
                    for c in buf[..k].chunks_mut(8) {
                        let w = rng.next().to_le_bytes();
                        c.copy_from_slice(&w[..c.len()]);
                    }
                    if let Err(e) = s.write_all(&buf[..k]) {
                        return fail(format!("write {i} with {left} left: {e}"));
                    }
                    h.update(&buf[..k]);
                    left -= k as u64;
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
                Some(format!("{:x}", h.finalize()))
            })
        })
        .collect();
    let secs_arg = limit_secs.to_string();
    let udp = ns.spawn(&["python3", "-c", UDP_STREAM, STACK_IP, &secs_arg]);

    // The chaos driver.
    let done = Arc::new(AtomicBool::new(false));
    let chaos = {
        let done = done.clone();
        let instance = st.instance.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut kills = Vec::new();
            // Every layer once per round of seven, in a random order, so
            // that a short run still kills each of them.
            let mut round = Vec::new();
            while !done.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(200 + rng.next() % 301));
                if done.load(Relaxed) {
                    break;
                }
                if round.is_empty() {
                    round = LAYERS.to_vec();
                    for k in (1..round.len()).rev() {
                        round.swap(k, (rng.next() % (k as u64 + 1)) as usize);
                    }
                }
                let layer = round.pop().unwrap();
                let o = std::process::Command::new(strata_tests::bin("strata"))
                    .args(["--instance", &instance, "kill", layer])
                    .output()
                    .unwrap();
                if o.status.success() {
                    kills.push(layer);
                }
            }
            kills
        })
    };

    let t = Instant::now();
    let deadline = Duration::from_secs(limit_secs);
    let mut sender_sums = Vec::new();
    for s in senders.drain(..) {
        let left = deadline.saturating_sub(t.elapsed());
        let out = s.wait_output(left).unwrap_or_else(|| "timeout".into());
        sender_sums.push(out.trim().to_string());
    }
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
    done.store(true, Relaxed);
    let kills = chaos.join().unwrap();
    eprintln!(
        "chaos: {} kills in {secs:.1} s: {:?}",
        kills.len(),
        LAYERS.map(|l| (l, kills.iter().filter(|k| **k == l).count()))
    );

    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "applications saw errors: {errors:?}");
    // kernel -> libsock: the same multiset of hashes, every one whole.
    let mut got: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(n, h)| {
            assert_eq!(*n, bytes, "a stream arrived short");
            h.clone()
        })
        .collect();
    got.sort();
    sender_sums.sort();
    assert_eq!(got, sender_sums, "kernel -> libsock streams differ");
    // libsock -> kernel.
    for (i, (s, r)) in sent_sums.iter().zip(&receiver_sums).enumerate() {
        let want = format!("{bytes} {}", s.as_deref().unwrap_or("?"));
        assert_eq!(r, &want, "libsock -> kernel stream {i}");
    }
    // Each layer was killed at least once while the transfers ran.
    for l in LAYERS {
        assert!(kills.contains(&l), "{l} was never killed: {kills:?}");
    }
    // The UDP echo kept answering and the echo server never failed.
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
    // Every kill is a restart in the log.
    let log = st.log_text();
    for l in LAYERS {
        let k = kills.iter().filter(|x| **x == l).count();
        let r = log.matches(&format!("{l} restarted")).count();
        assert!(r >= k, "{l}: {k} kills, {r} restarts logged");
    }
    // No buffer leaked.
    eprintln!(
        "chaos: pool in use {} (baseline {baseline})",
        st.pool_in_use()
    );
    st.wait_for(
        "the pool back at its baseline",
        Duration::from_secs(20),
        || st.pool_in_use() <= baseline,
    );
    assert_eq!(
        st.json("status")["pool"]["pinned"],
        0,
        "tcpd keeps nothing once every connection is closed"
    );
}
