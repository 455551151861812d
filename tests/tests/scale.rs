//! Scale: tens of thousands of TCP connections at once. A test binary of
//! its own, so that no other test's processes and threads run beside
//! its 20,000 connections (the development machine allows 32,768 tasks
//! in all).

use std::process::Stdio;
use std::time::Duration;
use strata_tests::{spawn_app, stuck_report, wait_line, Bg, Netns, Stack, HOLD_AND_ECHO};

/// Tells every client to go on (a line on its stdin).
fn go_on(clients: &mut [Bg]) {
    for c in clients.iter_mut() {
        c.send_line("go");
    }
}

/// Echo servers on the stack, one per port of `ports`, each serving all
/// of its connections in one thread, ready.
fn echo_servers(st: &Stack, ports: impl IntoIterator<Item = u16>) -> Vec<Bg> {
    let mut servers: Vec<Bg> = ports
        .into_iter()
        .map(|p| {
            let port = format!("0.0.0.0:{p}");
            spawn_app(
                st,
                "echo",
                &["--tcp", &port, "--udp", "0.0.0.0:0", "--backlog", "4096"],
            )
        })
        .collect();
    for s in &mut servers {
        wait_line(s, "serving UDP", Duration::from_secs(15));
    }
    servers
}

/// TCP connections the stack has established.
fn established(st: &Stack) -> usize {
    st.sockets()
        .iter()
        .filter(|x| x["tcp"]["state"].as_str() == Some("ESTAB"))
        .count()
}

/// Waits until the stack holds no TCP socket but its listeners. Each
/// look lists every connection (a second or more of the launcher's and
/// our time with a hundred thousand), so the looks are spaced to take at
/// most a quarter of the time: the stack closing them needs the cores.
fn wait_none_left(st: &Stack, timeout: Duration) {
    st.wait_for("every connection gone", timeout, || {
        let t = std::time::Instant::now();
        let left = st
            .sockets()
            .iter()
            .filter(|x| x["tcp"]["state"].as_str().is_some_and(|s| s != "LISTEN"))
            .count();
        if left > 0 {
            std::thread::sleep(t.elapsed() * 3);
        }
        left == 0
    });
}

/// Waits for tcpd's log line saying how many connections its newest
/// instance restored (and how fast), and checks it took at least `n`.
fn assert_restored(st: &Stack, n: usize) {
    let line = || {
        st.log_text()
            .lines()
            .rfind(|l| l.contains(" connections in ") && l.contains("restored "))
            .map(str::to_string)
    };
    st.wait_for(
        "tcpd to say what it restored",
        Duration::from_secs(60),
        || line().is_some(),
    );
    let line = line().unwrap_or_default();
    eprintln!("tcpd: {line}");
    let restored = line
        .split("restored ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse::<usize>().ok());
    assert!(restored.unwrap_or(0) >= n, "{line}");
}

#[test]
fn twenty_thousand_connections_open_at_once_survive_a_tcpd_kill_and_each_echo_ten_kilobytes() {
    // Four echo servers (a thread per connection each) and four kernel
    // client processes, 5,000 connections each: no process holds more
    // than the machine lets one open.
    const SERVERS: u16 = 4;
    const PER: usize = 5000;
    let n = SERVERS as usize * PER;
    let ns = Netns::new();
    // The default limits hold them.
    let st = Stack::up(&ns);
    let _servers = echo_servers(&st, (0..SERVERS).map(|k| 7001 + k));
    let mut clients: Vec<Bg> = (0..SERVERS)
        .map(|k| {
            Bg::new(
                ns.cmd("python3")
                    .args([
                        "-c",
                        HOLD_AND_ECHO,
                        &PER.to_string(),
                        &(7001 + k).to_string(),
                        "1",
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("python3"),
            )
        })
        .collect();
    let phase = phases(&ns);
    for c in &mut clients {
        wait_line(c, &format!("open {PER}"), Duration::from_secs(600));
    }
    phase("all open");
    // All open at once: tcpd holds every one.
    let held = established(&st);
    assert!(held >= n, "{held} established");
    // tcpd dies with all of them open, and its successor finds them.
    let before = st.kill_layer("tcpd");
    st.wait_restarted("tcpd", before);
    phase("tcpd restarted");
    // Its successor took every connection back from the arena.
    assert_restored(&st, n);
    go_on(&mut clients);
    for c in &mut clients {
        let line = wait_line(c, "ok ", Duration::from_secs(600));
        if line != format!("ok {PER}") {
            stuck_report(&ns, &st, &line);
        }
    }
    phase("all echoed");
    assert_eq!(st.counter("tcpd", "conn_limit"), 0);
    // Every connection ends cleanly: the kernel closes first, and strata
    // keeps none (TIME-WAIT is the kernel's side).
    go_on(&mut clients);
    for c in &mut clients {
        wait_line(c, "closed", Duration::from_secs(600));
    }
    phase("all closed by the clients");
    wait_none_left(&st, Duration::from_secs(120));
    phase("none left");
}

/// Kernel side: `python3 -c ALL_AT_ONCE <n> <port>` opens `n`
/// connections (`open <n>`), then sends 100 bytes on every one before
/// reading any echo, and prints how many came back identically (`ok
/// <n>`, or `ok <k> stuck ...` for the first that did not).
const ALL_AT_ONCE: &str = r#"
import socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
conns = [socket.create_connection(("10.77.0.2", port), timeout=120) for _ in range(n)]
print("open", len(conns), flush=True)
for i, s in enumerate(conns):
    s.sendall(b"%05d" % i * 20)
ok = 0
for i, s in enumerate(conns):
    want, got = b"%05d" % i * 20, b""
    try:
        while len(got) < len(want):
            b = s.recv(4096)
            if not b:
                break
            got += b
    except OSError as e:
        print("ok", ok, "stuck", s.getsockname()[1], i, len(got), e, flush=True)
        break
    ok += got == want
else:
    print("ok", ok, flush=True)
"#;

#[test]
fn a_pool_far_smaller_than_the_data_in_flight_drains_rather_than_stalls() {
    // 2,000 connections each deliver a segment at once into a pool of
    // 256 buffers: tcpd keeps each delivery until sockd's READ_CREDIT says
    // the ring has it, so the pool runs dry on deliveries. The credits
    // (and tcpd's answers) ride in the ring slots, needing no buffer, so
    // the deliveries are let go and everything is echoed. (When a credit
    // needed a buffer of its own, this stood still for good.)
    const N: usize = 2000;
    let ns = Netns::new();
    let st = Stack::up_with(&ns, "[limits]\nsmall_buffers = 256\nlarge_buffers = 0\n");
    let _server = echo_servers(&st, [7001]);
    let mut client = Bg::new(
        ns.cmd("python3")
            .args(["-c", ALL_AT_ONCE, &N.to_string(), "7001"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    wait_line(&mut client, &format!("open {N}"), Duration::from_secs(300));
    let line = wait_line(&mut client, "ok ", Duration::from_secs(300));
    if line != format!("ok {N}") {
        stuck_report(&ns, &st, &line);
    }
    // The pool ran dry on the way (else this tested nothing), and every
    // buffer came back.
    assert!(
        st.counter("tcpd", "pool_exhausted") + st.counter("driverd0", "rx_no_buffer") > 0,
        "the pool never ran dry: the test needs a smaller pool"
    );
    st.wait_for("the pool back to idle", Duration::from_secs(60), || {
        st.pool_in_use() <= 8
    });
}

/// Kernel side of the soak: `python3 -c TRICKLE <n> <ports> <source>
/// <secs> <period>` opens `n` connections from address `source` to the
/// stack's `ports` (comma-separated, taken in turn) and says `open <n>`;
/// after a line on stdin, for `secs` seconds each connection sends a
/// 16-byte message every `period` seconds (spread evenly) and checks
/// every echo byte against what it sent; then `ok <messages>` once every
/// echo is back (or `lost ...` / `corrupt ...` / `closed ...`); after
/// another line, closes them all (`closed`).
const TRICKLE: &str = r#"
import socket, sys, time, selectors
n, ports, src = int(sys.argv[1]), [int(p) for p in sys.argv[2].split(",")], sys.argv[3]
secs, period = float(sys.argv[4]), float(sys.argv[5])
conns = []
for i in range(n):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(120)
    s.connect(("10.77.0.2", ports[i % len(ports)]))
    s.setblocking(False)
    conns.append(s)
print("open", n, flush=True)
sys.stdin.readline()
sel = selectors.DefaultSelector()
for i, s in enumerate(conns):
    sel.register(s, selectors.EVENT_READ, i)
pending = [b""] * n
owed = 0
sent = 0
start = time.monotonic()
end = start + secs
last = start
while True:
    now = time.monotonic()
    due = int((min(now, end) - start) * n / period)
    while sent < due:
        i, k = sent % n, sent // n
        m = b"%07d:%07d\n" % (i, k)
        if conns[i].send(m) != len(m):
            print("short send", i, k, flush=True)
            sys.exit(1)
        pending[i] += m
        owed += len(m)
        sent += 1
    if now >= end and owed == 0:
        break
    if now >= end + 120:
        late = [i for i in range(n) if pending[i]]
        i = late[0]
        print("lost", len(late), "stuck", conns[i].getsockname()[1], "connection", i, "owed", len(pending[i]),
              "last echo of all at", round(last - start, 1), "s", flush=True)
        sys.exit(1)
    for key, _ in sel.select(timeout=0.05):
        i = key.data
        try:
            b = conns[i].recv(4096)
        except BlockingIOError:
            continue
        except OSError as e:
            print("closed", i, e, flush=True)
            sys.exit(1)
        if not b:
            print("closed", i, "by the stack", flush=True)
            sys.exit(1)
        if not pending[i].startswith(b):
            print("corrupt", i, b[:32], pending[i][:32], flush=True)
            sys.exit(1)
        pending[i] = pending[i][len(b):]
        owed -= len(b)
        last = time.monotonic()
print("ok", sent, flush=True)
sys.stdin.readline()
for s in conns:
    s.close()
print("closed", flush=True)
"#;

/// Frames the kernel dropped on their way into the stack's TAP (its
/// queue full: driverd had not read them yet).
fn tap_drops(ns: &Netns) -> u64 {
    let o = ns.run(&["ip", "-s", "-j", "link", "show", "strata0"]);
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v[0]["stats64"]["tx"]["dropped"].as_u64())
        .unwrap_or(0)
}

/// Says each phase of a test as it comes, with the time since this call
/// and the frames the kernel dropped so far at the TAP because driverd
/// had not read them yet.
fn phases(ns: &Netns) -> impl Fn(&str) + '_ {
    let t0 = std::time::Instant::now();
    move |what| {
        eprintln!(
            "{:>7.1} s  {what} (TAP drops {})",
            t0.elapsed().as_secs_f64(),
            tap_drops(ns)
        )
    }
}

/// A number from the environment, or `default`.
fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn soak_a_hundred_thousand_connections_trickle_for_ten_minutes_through_a_tcpd_kill() {
    // Behind an environment variable: it takes its ten minutes and more.
    // STRATA_SOAK_CONNS and STRATA_SOAK_SECS make it smaller or shorter.
    if std::env::var_os("STRATA_SOAK").is_none() {
        eprintln!("skipped: set STRATA_SOAK=1 to run the soak (100,000 connections, 10 minutes)");
        return;
    }
    let n = env_num("STRATA_SOAK_CONNS", 100_000) as usize;
    let secs = env_num("STRATA_SOAK_SECS", 600);
    // Every connection sends every 30 s: 3,333 messages a second for
    // 100,000.
    let period = 30;
    // Kernel clients of at most 15,000 connections each (a process may
    // open 20,000 files), each from an address of its own so that no
    // source runs short of ephemeral ports; two echo servers.
    let clients = n.div_ceil(15_000);
    let ns = Netns::new();
    // STRATA_SOAK_CONFIG: TOML added to the configuration (`[limits]`).
    let st = Stack::up_with(
        &ns,
        &std::env::var("STRATA_SOAK_CONFIG").unwrap_or_default(),
    );
    let _servers = echo_servers(&st, [7001, 7002]);
    let phase = phases(&ns);
    let mut kids: Vec<Bg> = (0..clients)
        .map(|k| {
            let src = format!("10.77.0.{}", 101 + k);
            ns.run_ok(&["ip", "addr", "add", &format!("{src}/24"), "dev", "strata0"]);
            let per = n / clients + usize::from(k < n % clients);
            Bg::new(
                ns.cmd("python3")
                    .args(["-c", TRICKLE, &per.to_string(), "7001,7002", &src])
                    .args([secs.to_string(), period.to_string()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("python3"),
            )
        })
        .collect();
    for c in &mut kids {
        wait_line(c, "open ", Duration::from_secs(600));
    }
    phase(&format!("{n} open"));
    go_on(&mut kids);
    // Halfway, tcpd dies with them all open, and its successor takes
    // every one back.
    std::thread::sleep(Duration::from_secs(secs / 2));
    let before = st.kill_layer("tcpd");
    st.wait_restarted("tcpd", before);
    assert_restored(&st, n);
    phase("tcpd killed and restarted");
    let lines: Vec<String> = kids
        .iter_mut()
        .map(|c| wait_line(c, "", Duration::from_secs(secs + 300)))
        .collect();
    if let Some(bad) = lines.iter().find(|l| !l.starts_with("ok ")) {
        eprintln!("the clients: {lines:?}");
        stuck_report(&ns, &st, bad);
    }
    phase("every message echoed");
    let held = established(&st);
    assert!(held >= n, "{held} of {n} established");
    assert_eq!(st.counter("tcpd", "conn_limit"), 0);
    go_on(&mut kids);
    for c in &mut kids {
        wait_line(c, "closed", Duration::from_secs(600));
    }
    wait_none_left(&st, Duration::from_secs(300));
    phase("none left");
}
