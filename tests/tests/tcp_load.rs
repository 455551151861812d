//! TCP under load: a SYN flood, and hundreds of concurrent connections.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;
use strata_tests::{spawn_app, stuck_report, wait_line, Bg, Netns, Stack, HOLD_AND_ECHO};

/// Floods port 7 with SYNs from spoofed, unreachable sources (raw frames
/// on the kernel side of the TAP) for `secs` seconds.
const FLOOD: &str = r#"
import socket, struct, random, sys, time
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("strata0", 0))
me = s.getsockname()[4]
dst = socket.inet_aton("10.77.0.2")
end = time.time() + float(sys.argv[1])
n = 0
while time.time() < end:
    for _ in range(200):
        src = socket.inet_aton("192.0.2.%d" % random.randint(1, 254))
        sport = random.randint(1024, 65535)
        tcp = struct.pack("!HHIIBBHHH", sport, 7, random.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
        ph = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", csum(ph + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), n & 0xffff, 0, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        s.send(bytes.fromhex("025354000001") + me + b"\x08\x00" + ip + tcp)
        n += 1
    time.sleep(0.01)
print("syns", n)
"#;

const CLIENT: &str = r#"
import socket, sys, time
ok = 0
for i in range(int(sys.argv[1])):
    s = socket.create_connection(("10.77.0.2", 7), timeout=5)
    msg = b"legit %d" % i
    s.sendall(msg)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = s.recv(100)
        if not b: break
        got += b
    ok += got == msg
    s.close()
    time.sleep(0.1)
print("ok", ok)
"#;

#[test]
fn a_syn_flood_does_not_keep_a_legitimate_client_out() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:7", "--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
    let flood = ns.spawn(&["python3", "-c", FLOOD, "4"]);
    std::thread::sleep(Duration::from_millis(500));
    let out = ns.run_ok(&["python3", "-c", CLIENT, "20"]);
    assert_eq!(out.trim(), "ok 20");
    let syns = flood
        .wait_output(Duration::from_secs(10))
        .expect("flood ended");
    let n: u64 = syns.trim().trim_start_matches("syns ").parse().unwrap();
    assert!(n > 1000, "flood too small: {n}");
    assert!(
        st.counter("tcpd", "syn_cookies_sent") > 0,
        "the SYN queue never overflowed into cookies"
    );
}

/// N concurrent clients each echo SIZE random bytes; prints how many
/// succeeded, the first errors, and the slowest connect and echo (how
/// long the queues' overflow held clients back).
const MANY: &str = r#"
import asyncio, os, sys, time
N, SIZE = int(sys.argv[1]), int(sys.argv[2])
slow = [0.0, 0.0]
async def one(i):
    t0 = time.monotonic()
    r, w = await asyncio.open_connection("10.77.0.2", 7)
    t1 = time.monotonic()
    data = os.urandom(SIZE)
    async def send():
        w.write(data); await w.drain(); w.write_eof()
    t = asyncio.create_task(send())
    got = await r.read(-1)
    await t
    w.close()
    slow[0] = max(slow[0], t1 - t0)
    slow[1] = max(slow[1], time.monotonic() - t1)
    return got == data
async def main():
    res = await asyncio.gather(*[one(i) for i in range(N)], return_exceptions=True)
    print("ok", sum(1 for x in res if x is True), "errors", [repr(x) for x in res if x is not True][:3],
          "slowest connect %.1f s echo %.1f s" % (slow[0], slow[1]))
asyncio.run(main())
"#;

#[test]
fn five_hundred_concurrent_connections_each_echo_a_megabyte() {
    let ns = Netns::new();
    // Room for 500 connections' worth of queues: buffers, and rings that
    // hold their bursts (with the default 1,024 slots tcpd drops
    // thousands of segments on a full ring to ipd, and the timers those
    // losses back off make the run minutes long on a busy machine).
    let st = Stack::up_with(
        &ns,
        "\n[limits]\nsmall_buffers = 65536\nlarge_buffers = 1024\nring_size = 8192\n",
    );
    let mut echo = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:7", "--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
    let out = ns.run_ok(&["python3", "-c", MANY, "500", "1000000"]);
    // What tcpd did with the burst: the SYN and accept queues overflow
    // (cookies, dropped SYNs and ACKs), and none of it may reset a client.
    let stats = st.json("stats");
    let tcpd = &stats["layers"]["tcpd"];
    let seen: Vec<String> = [
        "out_rsts",
        "no_conn_reset",
        "syn_cookies_sent",
        "syn_cookies_ok",
        "syn_cookies_bad",
        "listen_drops",
        "listen_overflows",
        "synack_timeouts",
        "conn_limit",
        "aborted",
    ]
    .iter()
    .map(|k| format!("{k}={}", tcpd[k]))
    .collect();
    // Where the stack dropped packets on the way (the retransmissions
    // and backed-off timers a busy machine causes start there).
    let drops: Vec<String> = stats["layers"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(layer, counters)| {
            counters
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(move |(k, v)| {
                    let v = v.as_u64()?;
                    let dropish = [
                        "drop",
                        "full",
                        "exhausted",
                        "overflow",
                        "rto",
                        "retrans",
                        "too_long",
                        "no_buffer",
                    ]
                    .iter()
                    .any(|w| k.contains(w));
                    (dropish && v > 0).then(|| format!("{layer}.{k}={v}"))
                })
        })
        .collect();
    // The kernel's side: frames its TAP queue dropped on their way to
    // the stack, and its clients' retransmissions and timeouts.
    let nstat = ns.run(&["nstat", "-asz", "TcpRetransSegs", "TcpExtTCPTimeouts"]);
    let tap = ns.run(&["cat", "/sys/class/net/strata0/statistics/tx_dropped"]);
    let kernel: Vec<String> = String::from_utf8_lossy(&nstat.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(format!("{}={}", w.next()?, w.next()?))
        })
        .collect();
    eprintln!(
        "tcpd: {}\nclients: {}\ndrops: {}\nkernel: tap_tx_dropped={} {}",
        seen.join(" "),
        out.trim(),
        drops.join(" "),
        String::from_utf8_lossy(&tap.stdout).trim(),
        kernel.join(" ")
    );
    assert!(
        out.starts_with("ok 500 "),
        "{out}\ntcpd: {}",
        seen.join(" ")
    );
}

#[test]
fn three_thousand_connections_held_at_once_each_echo_ten_kilobytes() {
    // Past the 1,024 connections tcpd once held; the default limit is
    // `[limits] tcp_connections` = 131072.
    let n = 3000;
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // A backlog above `n`: however far behind the server's accepts fall
    // (a loaded machine), no handshake meets a full accept queue.
    let mut echo = spawn_app(
        &st,
        "echo",
        &[
            "--tcp",
            "0.0.0.0:7",
            "--udp",
            "0.0.0.0:7",
            "--backlog",
            "4096",
        ],
    );
    wait_line(&mut echo, "serving UDP", Duration::from_secs(5));
    let mut client = Bg::new(
        ns.cmd("python3")
            .args(["-c", HOLD_AND_ECHO, &n.to_string(), "7", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    wait_line(&mut client, &format!("open {n}"), Duration::from_secs(300));
    let line = wait_line(&mut client, "ok ", Duration::from_secs(300));
    if line != format!("ok {n}") {
        stuck_report(&ns, &st, &line);
    }
    // All held and idle: they hold no pool buffers (a few are the stack's
    // own, whatever the connections).
    st.wait_for(
        "idle connections holding no buffers",
        Duration::from_secs(30),
        || st.pool_in_use() < 64,
    );
    assert_eq!(st.counter("tcpd", "conn_limit"), 0);
    // What one idle connection costs, as `strata status` says: its parts
    // add up, and stay within the 4 KiB an idle connection may cost.
    let c = st.json("status")["bytes_per_tcp_connection"].clone();
    let part = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"));
    let parts = [
        "tcpd_block",
        "socket_table_row",
        "sockd_record",
        "conntrack_entry",
    ];
    assert!(parts.iter().all(|k| part(k) > 0), "{c}");
    assert_eq!(part("total"), parts.iter().map(|k| part(k)).sum::<u64>());
    assert!(part("total") <= 4096, "{c}");
    // Every connection ends cleanly: none is left but in TIME-WAIT.
    let mut stdin = client.child.stdin.take().expect("stdin");
    stdin.write_all(b"close\n").expect("tell the client");
    drop(stdin);
    wait_line(&mut client, "closed", Duration::from_secs(300));
    st.wait_for("the connections closed", Duration::from_secs(60), || {
        st.sockets()
            .iter()
            .filter(|x| x["tcp"]["state"].as_str().is_some_and(|s| s != "TIME-WAIT"))
            .count()
            <= 2
    });
}
