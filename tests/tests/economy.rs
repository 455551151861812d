//! The wake-up economy of the service loop (docs/ARCHITECTURE.md, "The
//! service loop"), read from the counters every layer publishes, after
//! 10,000 one-byte TCP round trips between a kernel client and a libsock
//! echo server: one at a time, each round trip wakes every layer on the
//! path, the case with the least batching and so the most system calls
//! per packet (filterd, with no rules, stands aside and is no hop).
//! Bounds are what the design allows per handle, not times:
//! a busier or slower machine only batches more.

use std::collections::HashMap;
use std::time::Duration;
use strata_tests::{spawn_app, wait_line, Netns, Stack, LAYERS};

/// 1-byte request/response round trips (argument: how many) to the echo
/// server on port 7, one at a time; prints `ok`.
const TCP_RR: &str = r#"
import socket, sys
s = socket.create_connection(("10.77.0.2", 7), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for i in range(int(sys.argv[1])):
    b = bytes([i & 0xff])
    s.sendall(b)
    assert s.recv(1) == b
print('ok')
"#;

const ROUND_TRIPS: u64 = 10_000;

/// Every layer's counters, plus the kicks it received (`wakeups` in
/// `strata status`) as `kicks_received`.
fn snapshot(st: &Stack) -> HashMap<String, HashMap<String, u64>> {
    let stats = st.json("stats");
    let status = st.json("status");
    let mut all = HashMap::new();
    for layer in LAYERS {
        let mut m: HashMap<String, u64> = stats["layers"][layer]
            .as_object()
            .unwrap_or_else(|| panic!("no counters for {layer}"))
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect();
        let l = status["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["layer"] == layer)
            .unwrap();
        m.insert("kicks_received".into(), l["wakeups"].as_u64().unwrap());
        all.insert(layer.to_string(), m);
    }
    all
}

#[test]
fn round_trips_cost_each_layer_one_wake_up_and_a_few_system_calls_per_packet() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut echo = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:7", "--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(10));
    let before = snapshot(&st);
    let out = ns.run_ok(&["python3", "-c", TCP_RR, &ROUND_TRIPS.to_string()]);
    assert_eq!(out.trim(), "ok");
    let after = snapshot(&st);
    let d = |layer: &str, name: &str| {
        let get = |s: &HashMap<String, HashMap<String, u64>>| {
            *s[layer]
                .get(name)
                .unwrap_or_else(|| panic!("no counter {layer}.{name}"))
        };
        get(&after) - get(&before)
    };
    eprintln!(
        "{:<9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}",
        "layer", "turns", "wakeups", "ticks", "in", "kicks", "syscalls", "pkt/wk", "sys/pkt"
    );
    for layer in LAYERS {
        let (w, i, s) = (
            d(layer, "loop_wakeups"),
            d(layer, "loop_handles_in"),
            d(layer, "loop_syscalls"),
        );
        eprintln!(
            "{layer:<9} {:>8} {w:>8} {:>8} {i:>8} {:>8} {s:>8} {:>7.2} {:>7.2}",
            d(layer, "loop_turns"),
            d(layer, "loop_idle_ticks"),
            d(layer, "loop_kicks_sent"),
            i as f64 / w.max(1) as f64,
            s as f64 / i.max(1) as f64,
        );
    }

    for layer in LAYERS {
        // A kick takes the sleeping flag down: of several producers,
        // only the first writes the eventfd, so every kick ends a sleep
        // of its own.
        assert!(
            d(layer, "kicks_received") <= d(layer, "loop_wakeups"),
            "{layer}: {} kicks for {} wake-ups",
            d(layer, "kicks_received"),
            d(layer, "loop_wakeups")
        );
        // Every packet of the round trips went through (udpd saw none;
        // filterd, with no rules, stood aside).
        if layer == "udpd" || layer == "filterd" {
            continue;
        }
        assert!(
            d(layer, "loop_handles_in") >= ROUND_TRIPS,
            "{layer} took in {} handles",
            d(layer, "loop_handles_in")
        );
    }
    // With no rules filterd is no hop at all: ipd takes the requests from
    // the ring netdevd fills towards it, netdevd the answers from ipd's.
    assert_eq!(d("filterd", "loop_handles_in"), 0, "filterd took packets");
    for layer in ["ipd", "netdevd"] {
        assert!(
            d(layer, "loop_through") >= ROUND_TRIPS,
            "{layer} took {} handles through filterd's rings",
            d(layer, "loop_through")
        );
    }
    // The layers between the rings make no system call of their own: one
    // wait per wake-up, and per handle at most the eventfd read of the
    // wake-up it came with (when the layer polls) and one kick of the
    // next layer.
    for layer in ["netdevd", "filterd", "ipd", "tcpd"] {
        let allowed = d(layer, "loop_wakeups") + 2 * d(layer, "loop_handles_in");
        assert!(
            d(layer, "loop_syscalls") <= allowed,
            "{layer}: {} system calls for {} handles",
            d(layer, "loop_syscalls"),
            d(layer, "loop_handles_in")
        );
    }
    // sockd sleeps in its epoll set, which holds its eventfd: a wake-up
    // is one epoll_wait, and per round trip it drains the application's
    // kick, kicks it, wakes tcpd and looks at its set (6.3 calls
    // measured; polling beside the eventfd cost two more per wake-up).
    assert!(
        d("sockd", "loop_syscalls") <= 7 * ROUND_TRIPS,
        "sockd: {} system calls for {ROUND_TRIPS} round trips",
        d("sockd", "loop_syscalls")
    );
    // driverd reads the TAP only after poll said it is readable (the
    // read that ends that batch may find it empty) or after writing to it
    // (the peer may have answered inside the write): at most one empty
    // read for each.
    assert!(
        d("driverd0", "rx_empty_reads")
            <= d("driverd0", "loop_wakeups") + d("driverd0", "tx_frames"),
        "{} empty reads for {} wake-ups and {} frames written",
        d("driverd0", "rx_empty_reads"),
        d("driverd0", "loop_wakeups"),
        d("driverd0", "tx_frames")
    );
    // sockd reads only what epoll says is ready.
    assert_eq!(d("sockd", "empty_reads"), 0);
    for layer in LAYERS {
        assert_eq!(st.restarts(layer), 0, "{layer} restarted");
    }

    // Idle, the stack only ticks: once the connection's last segments
    // are through (a first tick), nothing reads an empty device, and a
    // tick costs one wait. Whatever else happens meanwhile (an ARP
    // refresh) must be paid for by packets: at most three system calls
    // each (for driverd: the read, the read that finds the device empty,
    // the kick; for the others: the eventfd read and kicks).
    let ticks = |n: u64| {
        let base = st.counter("driverd0", "loop_idle_ticks");
        st.wait_for("idle ticks of driverd", Duration::from_secs(10), || {
            st.counter("driverd0", "loop_idle_ticks") >= base + n
        });
    };
    ticks(1);
    let idle = snapshot(&st);
    ticks(3);
    let now = snapshot(&st);
    let d = |layer: &str, name: &str| now[layer][name] - idle[layer][name];
    assert!(
        d("driverd0", "rx_empty_reads") <= d("driverd0", "rx_frames") + d("driverd0", "tx_frames"),
        "driverd read an empty device {} times while idle",
        d("driverd0", "rx_empty_reads")
    );
    for layer in ["driverd0", "netdevd", "filterd", "ipd", "udpd"] {
        let extra = d(layer, "loop_syscalls") - d(layer, "loop_wakeups");
        assert!(
            extra <= 3 * d(layer, "loop_handles_in"),
            "{layer}: {extra} system calls beyond one wait per wake-up while idle, for {} packets",
            d(layer, "loop_handles_in")
        );
    }
}

/// Sends 4 MB to port 8020 on the stack and prints `sent`.
const SEND_4MB: &str = r#"
import socket
s = socket.create_connection(("10.77.0.2", 8020), timeout=60)
s.sendall(b"x" * 4_000_000)
s.close()
print("sent", flush=True)
"#;

#[test]
fn a_full_ring_costs_sockd_no_polling_and_the_read_that_empties_it_wakes_sockd() {
    use std::io::Read;
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    // A 16 KiB receive ring: the reader is the bottleneck.
    let listener = stack
        .builder()
        .ring_sizes(64 << 10, 16 << 10)
        .tcp_bind("0.0.0.0:8020")
        .unwrap();
    let mut sender = ns.spawn(&["python3", "-c", SEND_4MB]);
    let (mut conn, _) = listener.accept().unwrap();
    // Nobody reads: the receive ring fills and tcpd's window closes.
    st.wait_for("a closed window", Duration::from_secs(30), || {
        st.json("ss")["sockets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["local"] == "10.77.0.2:8020" && x["tcp"]["rcv_wnd"] == 0)
    });
    // While the application does not read, sockd sleeps: it asked the
    // application to wake it when it reads, so it does not look every
    // millisecond (naps) or count on its idle tick.
    let naps = st.counter("sockd", "loop_naps");
    let ticks = st.counter("sockd", "loop_idle_ticks");
    st.wait_for("two idle ticks of sockd", Duration::from_secs(10), || {
        st.counter("sockd", "loop_idle_ticks") >= ticks + 2
    });
    assert_eq!(
        st.counter("sockd", "loop_naps"),
        naps,
        "sockd polled the ring"
    );
    // The application reads everything: each read that matters wakes
    // sockd, which tells tcpd, which reopens the window; the 4 MB arrive
    // without sockd ever sleeping until its idle tick.
    let ticks = st.counter("sockd", "loop_idle_ticks");
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while got < 4_000_000 {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "end of stream after {got} bytes");
        got += n as u64;
    }
    wait_line(&mut sender, "sent", Duration::from_secs(30));
    assert_eq!(
        st.counter("sockd", "loop_idle_ticks"),
        ticks,
        "sockd slept until its idle tick while the window waited on a read"
    );
}
