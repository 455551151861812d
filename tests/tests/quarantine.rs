//! Poison input: a datagram that makes ipd abort (the test-only fault hook
//! `STRATA_CRASH_ON`) kills it twice, is then quarantined and dropped, and
//! the stack keeps answering pings and echoing UDP while the kernel keeps
//! sending the poison.

use std::time::Duration;
use strata_tests::{layer_of, ping_all, spawn_app, wait_line, Netns, Stack, STACK_IP};

/// What the poison datagram carries; ipd aborts on any input holding it.
const PATTERN: &[u8] = b"STRATA-POISON-7f3a";

/// A kernel-side sender of one fixed datagram to HOST:9999 every 50 ms
/// until it is killed (when the test's handle drops). Linux numbers each
/// copy anew (IP identification and so the header checksum differ), as
/// any sender repeating a packet of death would.
const POISONER: &str = r#"
import socket, sys, time
host, payload = sys.argv[1], bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("sending", flush=True)
while True:
    s.sendto(payload, (host, 9999))
    time.sleep(0.05)
"#;

/// Five datagrams to the echo server on port 7, one at a time; how many
/// came back (each may take up to 10 s: a bound for a hang).
const ECHO_ONCE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10.0)
s.connect((sys.argv[1], 7))
ok = 0
for i in range(5):
    p = b"normal datagram %d" % i
    s.send(p)
    try:
        if s.recv(2000) == p:
            ok += 1
    except socket.timeout:
        pass
print("echoed", ok)
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The default test stack, with `extra` configuration and the fault hook
/// set to `hook` (`STRATA_CRASH_ON`).
fn up_with_hook(ns: &Netns, extra: &str, hook: &str) -> Stack {
    Stack::up_config_env(
        ns,
        &format!(
            "[[interface]]\nname = \"strata0\"\ndriver = \"tap\"\n\
             mac = \"02:53:54:00:00:01\"\naddresses = [\"{STACK_IP}/24\"]\n\
             host_addresses = [\"{}/24\"]\n{extra}",
            strata_tests::HOST_IP
        ),
        &[("STRATA_CRASH_ON", hook)],
    )
}

#[test]
fn a_packet_of_death_is_quarantined_after_two_deaths_and_the_stack_carries_on() {
    let ns = Netns::new();
    let st = up_with_hook(&ns, "", &format!("ipd:{}", hex(PATTERN)));
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    // Warm up (ARP on both sides); ipd passes everything without the
    // pattern.
    let r = ping_all(&ns, &["-c", "3", "-i", "0.2", "-W", "1", STACK_IP]);
    assert_eq!(r.received, 3, "{}", r.text);
    assert_eq!(st.restarts("ipd"), 0);

    let payload = [b"before ".as_slice(), PATTERN, b" after"].concat();
    let mut poisoner = ns.spawn(&["python3", "-c", POISONER, STACK_IP, &hex(&payload)]);
    wait_line(&mut poisoner, "sending", Duration::from_secs(15));
    st.wait_for("ipd's input quarantined", Duration::from_secs(30), || {
        st.log_text().contains("died twice on the same input")
    });

    // The poison keeps coming: ipd drops it and serves the rest.
    let r = ping_all(&ns, &["-c", "20", "-i", "0.1", "-W", "1", STACK_IP]);
    assert_eq!(r.received, 20, "{}\nlog:\n{}", r.text, st.log_text());
    let out = ns.run_ok(&["python3", "-c", ECHO_ONCE, STACK_IP]);
    assert_eq!(out.trim(), "echoed 5", "log:\n{}", st.log_text());
    assert!(poisoner.alive(), "the poison was still being sent");

    let log = st.log_text();
    // Died exactly twice on it: the first made the launcher watch for it,
    // the second quarantined it before the restart.
    assert_eq!(st.restarts("ipd"), 2, "log:\n{log}");
    let deaths = log
        .lines()
        .filter(|l| l.contains("ipd (pid") && l.contains("died after"))
        .collect::<Vec<_>>();
    assert_eq!(deaths.len(), 2, "log:\n{log}");
    assert!(deaths.iter().all(|l| l.contains("SIGABRT")), "{deaths:?}");
    assert!(log.contains("ipd was handling an input of"), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("died twice on the same input"))
        .unwrap();
    assert!(
        line.contains("ipd") && line.contains("quarantined it"),
        "{line}"
    );
    // The hex dump: the frame, from our MAC address on, pattern included.
    assert!(log.contains("00000000: 0253 5400 0001"), "{log}");
    let ascii: String = log
        .lines()
        .filter(|l| l.trim_start().starts_with("000000"))
        .filter_map(|l| l.get(l.find(": ").unwrap() + 2 + 41..))
        .collect();
    assert!(
        ascii.contains(std::str::from_utf8(PATTERN).unwrap()),
        "{ascii}"
    );

    // strata status, JSON and text.
    let status = st.json("status");
    let ipd = layer_of(&status, "ipd");
    assert_eq!(ipd["restarts"], 2);
    assert_eq!(ipd["quarantined_inputs"], 1);
    assert!(ipd["reclaimed_buffers"].as_u64().unwrap() >= 2, "{ipd}");
    let drops = ipd["quarantine_drops"].as_u64().unwrap();
    assert!(drops >= 5, "copies dropped: {drops}");
    for other in ["netdevd", "filterd", "udpd"] {
        assert_eq!(layer_of(&status, other)["restarts"], 0, "{other}");
        assert_eq!(layer_of(&status, other)["quarantined_inputs"], 0, "{other}");
    }
    let q = status["quarantine"].as_array().unwrap();
    assert_eq!(q.len(), 1, "{status}");
    assert_eq!(q[0]["layer"], "ipd");
    assert_eq!(q[0]["len"], 14 + 20 + 8 + payload.len() as u64);
    assert!(q[0]["dropped"].as_u64().unwrap() >= drops);
    assert!(st.counter("ipd", "quarantined") >= drops);
    let o = st.strata(&["status"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("QUARANTINED") && text.contains("RECLAIMED"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("ipd "))
        .unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // LAYER PID STATE UPTIME CPUS RESTARTS RECLAIMED QUARANTINED RECOVERY ...
    assert_eq!(cols[5], "2", "{row}");
    assert_eq!(cols[7], "1", "{row}");
    assert!(
        cols[8].ends_with("ms") && cols[8].trim_end_matches("ms").parse::<f64>().is_ok(),
        "the last restart's time: {row}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ipd") && l.contains(q[0]["hash"].as_str().unwrap())),
        "{text}"
    );

    // Still sending, still no further death: more copies dropped, and
    // ipd lived through them.
    st.wait_for("more copies dropped", Duration::from_secs(20), || {
        st.layer_status("ipd")["quarantine_drops"].as_u64().unwrap() > drops
    });
    assert_eq!(st.restarts("ipd"), 2);
}

#[test]
fn a_layer_that_hangs_twice_on_an_input_has_it_quarantined() {
    let ns = Netns::new();
    let st = up_with_hook(
        &ns,
        // Long enough that no layer that merely waits for a busy CPU
        // misses it: only the hung one does.
        "\n[limits]\nheartbeat_timeout_ms = 2000\n",
        &format!("udpd:hang:{}", hex(PATTERN)),
    );
    let mut echo = spawn_app(&st, "echo", &["--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(15));
    let payload = [PATTERN, b" hangs udpd"].concat();
    let mut poisoner = ns.spawn(&["python3", "-c", POISONER, STACK_IP, &hex(&payload)]);
    wait_line(&mut poisoner, "sending", Duration::from_secs(15));
    st.wait_for("udpd's input quarantined", Duration::from_secs(30), || {
        st.log_text().contains("died twice on the same input")
    });
    let out = ns.run_ok(&["python3", "-c", ECHO_ONCE, STACK_IP]);
    assert_eq!(out.trim(), "echoed 5", "log:\n{}", st.log_text());
    let log = st.log_text();
    assert_eq!(st.restarts("udpd"), 2, "log:\n{log}");
    assert_eq!(log.matches("missed its heartbeat").count(), 2, "{log}");
    let status = st.json("status");
    let udpd = layer_of(&status, "udpd");
    assert_eq!(udpd["quarantined_inputs"], 1, "{udpd}");
    // udpd's input is the IPv4 datagram: header, UDP header, payload.
    assert_eq!(
        status["quarantine"][0]["len"],
        20 + 8 + payload.len() as u64,
        "{status}"
    );
    assert_eq!(st.restarts("ipd"), 0);
}

#[test]
fn deaths_between_identical_inputs_quarantine_nothing() {
    // A layer killed again and again while the same datagram keeps coming
    // did not die of it: not by request (the launcher caused those deaths),
    // nor by an outside SIGKILL once it had passed the datagram on.
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let r = ping_all(&ns, &["-c", "3", "-i", "0.2", "-W", "1", STACK_IP]);
    assert_eq!(r.received, 3, "{}", r.text);
    let payload = hex(b"the same datagram every time");
    let _sender = ns.spawn(&["python3", "-c", POISONER, STACK_IP, &payload]);
    for k in 1..=4 {
        // Copies of the datagram went through this instance of udpd (to
        // no socket) before it is killed.
        let seen = st.counter("udpd", "no_port");
        st.wait_for("the datagram through udpd", Duration::from_secs(20), || {
            st.counter("udpd", "no_port") >= seen + 2
        });
        if k % 2 == 1 {
            let o = st.strata(&["kill", "udpd"]);
            assert!(o.status.success());
        } else {
            // SAFETY: kill takes no pointers; the pid is a layer of the stack
            // this test started, read from its fabric while the layer runs.
            unsafe { libc::kill(st.layer_pid("udpd"), libc::SIGKILL) };
        }
        st.wait_for("udpd back", Duration::from_secs(10), || {
            st.restarts("udpd") == k
        });
    }
    let status = st.json("status");
    assert_eq!(layer_of(&status, "udpd")["quarantined_inputs"], 0);
    assert!(!st.log_text().contains("died twice"));
}
