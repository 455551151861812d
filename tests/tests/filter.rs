//! filterd against the Linux kernel: rules by port, address and
//! interface seen from the kernel side (timeout, refused at once,
//! success), a stateful policy, DNAT port forwarding, LOG with its rate
//! limit, counters, refused rules, rules from the configuration file,
//! conntrack listing, and NAT surviving filterd's restarts.

use std::time::{Duration, Instant};
use strata_tests::{spawn_app, wait_line, wait_tcp_listening, Bg, Netns, Stack, HOST_IP, STACK_IP};

/// Kernel-side TCP probe: connects to HOST:PORT (timeout TIMEOUT s),
/// sends a line and reads the echo. Prints `ok`, `refused`, `timeout` or
/// the error, then the seconds it took.
const PROBE: &str = r#"
import socket, sys, time
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
src = sys.argv[4] if len(sys.argv) > 4 else None
t = time.time()
try:
    s = socket.create_connection((host, port), timeout=timeout, source_address=(src, 0) if src else None)
    s.sendall(b"hello\n")
    r = s.recv(100)
    print("ok" if r == b"hello\n" else "bad %r" % r, end=" ")
except ConnectionRefusedError:
    print("refused", end=" ")
except socket.timeout:
    print("timeout", end=" ")
except OSError as e:
    print("error %s" % e, end=" ")
print("%.2f" % (time.time() - t))
"#;

/// How long a probe that must be answered (`ok`, `refused`) may wait: a
/// bound for a hang, not for speed; an answer ends the wait at once.
const ANSWERED: f64 = 10.0;
/// How long a probe whose SYN must be dropped waits for the answer that
/// never comes: an unanswered SYN stays unanswered however fast the
/// stack, so this cannot flip with speed.
const DROPPED: f64 = 1.0;

/// Runs the probe from the kernel side, giving up after `timeout`
/// seconds: (outcome, seconds).
fn probe_for(ns: &Netns, port: u16, src: Option<&str>, timeout: f64) -> (String, f64) {
    let port = port.to_string();
    let timeout = timeout.to_string();
    let mut args = vec![
        "python3",
        "-c",
        PROBE,
        STACK_IP,
        port.as_str(),
        timeout.as_str(),
    ];
    if let Some(s) = src {
        args.push(s);
    }
    let out = ns.run_ok(&args);
    let mut w = out.split_whitespace();
    let what = w.next().unwrap_or_default().to_string();
    let secs = w.last().and_then(|s| s.parse().ok()).unwrap_or(99.0);
    (what, secs)
}

/// A probe that must be answered ([`ANSWERED`]).
fn probe(ns: &Netns, port: u16, src: Option<&str>) -> (String, f64) {
    probe_for(ns, port, src, ANSWERED)
}

/// A probe whose SYN must vanish ([`DROPPED`]).
fn probe_dropped(ns: &Netns, port: u16, src: Option<&str>) -> (String, f64) {
    probe_for(ns, port, src, DROPPED)
}

fn listing(st: &Stack, args: &str) -> String {
    let mut a = vec!["filter", "list"];
    a.extend(args.split_whitespace());
    let o = st.strata(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// (packets, bytes) of rule `num` in a listing.
fn rule_counts(list: &str, num: usize) -> (u64, u64) {
    let line = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&num.to_string()))
        .unwrap_or_else(|| panic!("no rule {num} in\n{list}"));
    let mut w = line.split_whitespace().skip(1);
    let p = w.next().unwrap().parse().unwrap();
    let b = w.next().unwrap().parse().unwrap();
    (p, b)
}

fn echo(st: &Stack, port: u16) -> Bg {
    let a = format!("0.0.0.0:{port}");
    let mut e = spawn_app(st, "echo", &["--tcp", &a, "--udp", &a]);
    wait_line(&mut e, "serving UDP", Duration::from_secs(15));
    e
}

#[test]
fn drop_reject_and_accept_by_port_as_the_kernel_sees_them() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let _e: Vec<Bg> = [7001, 7002, 7003].map(|p| echo(&st, p)).into();
    assert_eq!(probe(&ns, 7001, None).0, "ok", "before any rule");
    st.filter("add INPUT -p tcp --dport 7001 -j DROP");
    st.filter("add INPUT -p tcp --dport 7002 -j REJECT --reject-with tcp-reset");
    let (what, secs) = probe_dropped(&ns, 7001, None);
    assert_eq!(what, "timeout", "DROP: the SYN vanishes");
    assert!(secs >= 0.9, "{secs}");
    let (what, _) = probe(&ns, 7002, None);
    assert_eq!(what, "refused", "REJECT with tcp-reset: a RST");
    assert_eq!(probe(&ns, 7003, None).0, "ok", "no rule: accepted");
    let l = listing(&st, "INPUT");
    assert!(rule_counts(&l, 1).0 >= 1, "{l}");
    // Refused at once: one SYN hit rule 2, the kernel never had to send
    // it again (it would after a second; the probe waits longer).
    assert_eq!(rule_counts(&l, 2).0, 1, "{l}");
    assert!(st.counter("filterd", "rejected") >= 1);

    // ICMP port unreachable for UDP, as `--reject-with` defaults to.
    st.filter("add INPUT -p udp --dport 7003 -j REJECT");
    let out = ns.run_ok(&[
        "python3",
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.settimeout(10)\ns.connect((sys.argv[1],7003))\ns.send(b'x')\n\
         try:\n    s.recv(10)\n    print('answer')\nexcept ConnectionRefusedError:\n    print('refused')\n\
         except socket.timeout:\n    print('timeout')",
        STACK_IP,
    ]);
    assert_eq!(out.trim(), "refused");
    // Deleting the rules lets everything through again.
    st.filter("del INPUT 1");
    st.filter("flush INPUT");
    assert_eq!(probe(&ns, 7001, None).0, "ok");
    assert_eq!(probe(&ns, 7002, None).0, "ok");
}

#[test]
fn rules_match_source_address_and_interface_and_count_exactly() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let _e = echo(&st, 7);
    ns.run_ok(&["ip", "addr", "add", "10.77.0.3/24", "dev", "strata0"]);
    st.filter("add INPUT -s 10.77.0.3 -j DROP");
    assert_eq!(probe(&ns, 7, None).0, "ok", "from .1: allowed");
    assert_eq!(
        probe_dropped(&ns, 7, Some("10.77.0.3")).0,
        "timeout",
        "from .3: dropped"
    );
    st.filter("flush INPUT");
    st.filter("add INPUT -i strata9 -j DROP");
    assert_eq!(probe(&ns, 7, None).0, "ok", "another interface's rule");
    st.filter("add INPUT ! -i strata0 -j DROP");
    assert_eq!(probe(&ns, 7, None).0, "ok", "negated interface");
    st.filter("flush INPUT");

    // Counters match the traffic: five datagrams of 100 bytes each are
    // five packets of 128 IP bytes.
    st.filter("add INPUT -p udp --dport 9 -j DROP");
    ns.run_ok(&[
        "python3",
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         [s.sendto(b'x'*100,(sys.argv[1],9)) for _ in range(5)]",
        STACK_IP,
    ]);
    st.wait_for("the counters", Duration::from_secs(20), || {
        rule_counts(&listing(&st, "INPUT"), 1) == (5, 640)
    });
    st.filter("zero INPUT");
    assert_eq!(rule_counts(&listing(&st, "INPUT"), 1), (0, 0));
}

#[test]
fn a_stateful_policy_lets_our_connections_out_and_keeps_others_out() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let _e = echo(&st, 7);
    let mut server = ns.spawn(&["socat", "TCP-LISTEN:9000,reuseaddr,fork", "EXEC:cat"]);
    wait_tcp_listening(&ns, 9000, Duration::from_secs(20));
    st.filter("add INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT");
    st.filter("policy INPUT DROP");
    // Incoming: dropped (a NEW connection).
    assert_eq!(probe_dropped(&ns, 7, None).0, "timeout");
    // Outgoing: our SYN is NEW on OUTPUT (allowed), the answers are
    // ESTABLISHED on INPUT.
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let mut c = stack
        .builder()
        .tcp_connect(format!("{HOST_IP}:9000").as_str())
        .expect("connect through the stateful policy");
    use std::io::{Read, Write};
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let msg = vec![0x5a; 300_000];
    c.write_all(&msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
    let ct = st.json("conntrack");
    let entries: Vec<&str> = ct["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        entries
            .iter()
            .any(|e| e.contains("ESTABLISHED") && e.contains("dport=9000")),
        "{entries:?}"
    );
    let dropped = st.counter("filterd", "dropped_policy");
    assert!(dropped >= 1, "the incoming SYNs met the policy");
    // Flushed, the table forgets the connection once it is idle. Until
    // then a late segment (the window update after the last read, which
    // follows sockd's next read report) is picked up again mid-stream, as
    // Linux does: flush until a flush holds.
    st.wait_for(
        "a conntrack flush that forgets the idle connection",
        Duration::from_secs(20),
        || {
            let o = st.strata(&["conntrack", "flush"]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            !st.json("conntrack")["entries"]
                .to_string()
                .contains("dport=9000")
        },
    );
    drop(c);
    server.alive();
}

#[test]
fn dnat_forwards_port_80_to_httpd_on_8080() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let dir = std::env::temp_dir().join(strata_tests::unique("strata-dnat"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "through the NAT\n").unwrap();
    let _httpd = httpd(&st, &dir);
    st.filter(&format!(
        "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination {STACK_IP}:8080"
    ));
    let out = ns.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        &format!("http://{STACK_IP}:80/hello.txt"),
    ]);
    assert_eq!(out, "through the NAT\n");
    // The table remembers the translation.
    let ct = st.json("conntrack");
    let s = ct["entries"].to_string();
    assert!(s.contains("dport=80") && s.contains("sport=8080"), "{s}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn log_lines_reach_the_launchers_log_rate_limited() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let o = st.strata(&[
        "filter",
        "add",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        "5555",
        "-j",
        "LOG",
        "--log-prefix",
        "probe: ",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // ARP first, so that all 100 datagrams leave the kernel at once.
    let r = strata_tests::ping(&ns, &["-c", "1", "-W", "10", STACK_IP]);
    assert_eq!(r.received, 1, "{}", r.text);
    let t0 = Instant::now();
    ns.run_ok(&[
        "python3",
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         [s.sendto(b'x',(sys.argv[1],5555)) for _ in range(100)]",
        STACK_IP,
    ]);
    // Every datagram met the rule, and every line it wrote reached the
    // launcher's log.
    st.wait_for(
        "all 100 datagrams through the LOG rule",
        Duration::from_secs(20),
        || rule_counts(&listing(&st, "INPUT"), 1).0 == 100,
    );
    let span = t0.elapsed();
    let written = st.counter("filterd", "log_lines");
    let lines = || {
        st.log_text()
            .lines()
            .filter(|l| l.contains("probe: IN="))
            .count() as u64
    };
    st.wait_for("the LOG lines in the log", Duration::from_secs(20), || {
        lines() >= written
    });
    let log = st.log_text();
    let n = lines();
    // The limit lets a burst of 10 through, then 5 a second: however long
    // the 100 datagrams took to arrive, no more than that for their span.
    let cap = 20.max(10 + 5 * (span.as_secs() + 1));
    assert!(
        (1..=cap).contains(&n),
        "{n} lines for 100 packets in {span:?}:\n{log}"
    );
    assert!(log.contains("DPT=5555"), "{log}");
    let suppressed = st.counter("filterd", "log_suppressed");
    assert!(suppressed > 0 || cap >= 100, "{suppressed} suppressed");
    assert!(n + suppressed <= 100, "{n} lines + {suppressed} suppressed");
}

#[test]
fn a_malformed_rule_is_refused_naming_the_bad_word() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let o = st.strata(&[
        "filter", "add", "INPUT", "-p", "tcp", "--dport", "80x", "-j", "DROP",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("\"80x\""), "{err}");
    let o = st.strata(&["filter", "add", "NOSUCH", "-j", "DROP"]);
    assert!(!o.status.success());
    let o = st.strata(&["filter", "-t", "nat", "-A", "INPUT", "-j", "MASQUERADE"]);
    assert!(!o.status.success(), "MASQUERADE belongs in POSTROUTING");
    // Nothing half-applied.
    assert!(!listing(&st, "").contains("DROP "), "{}", listing(&st, ""));
}

#[test]
fn rules_from_the_configuration_file_are_in_force_at_start() {
    let ns = Netns::new();
    let st = Stack::up_with(
        &ns,
        "\n[filter]\nrules = [\"add INPUT -p tcp --dport 7 -j REJECT --reject-with tcp-reset\"]\n",
    );
    let _e = echo(&st, 7);
    assert_eq!(probe(&ns, 7, None).0, "refused");
    assert!(listing(&st, "INPUT").contains("--dport 7"));
}

#[test]
fn a_nat_transfer_survives_filterd_restarts() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let dir = std::env::temp_dir().join(strata_tests::unique("strata-natkill"));
    std::fs::create_dir_all(&dir).unwrap();
    let len: u64 = std::env::var("STRATA_NAT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000);
    let want = strata_tests::random_file(&dir.join("big.bin"), len);
    let _httpd = httpd(&st, &dir);
    st.filter("-t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080");
    // The kernel's download is slowed so that it lasts through the kills.
    let o = st.strata(&["qdisc", "strata0", "egress", "rate", "200mbit"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = dir.join("got.bin");
    let mut curl = ns.spawn(&[
        "bash",
        "-c",
        &format!(
            "curl -sS --fail --max-time 300 -o {} http://{STACK_IP}:80/big.bin && sha256sum {0}",
            got.display()
        ),
    ]);
    // Each kill once the download has moved another sixth of the file:
    // both within its first half, however fast the machine (the rate
    // limit keeps the second half from being over in an instant).
    for k in 0..2u64 {
        let mark = (k + 1) * len / 6;
        st.wait_for(
            &format!("{mark} bytes downloaded before kill {k}"),
            Duration::from_secs(60),
            || {
                assert!(curl.alive(), "the transfer ended before kill {k}");
                std::fs::metadata(&got).map_or(0, |m| m.len()) >= mark
            },
        );
        let o = st.strata(&["kill", "filterd"]);
        assert!(o.status.success(), "kill {k}");
        st.wait_for("filterd back", Duration::from_secs(10), || {
            st.restarts("filterd") > k
        });
    }
    let out = curl
        .wait_output(Duration::from_secs(330))
        .expect("curl finished");
    assert_eq!(out.split_whitespace().next(), Some(want.as_str()), "{out}");
    assert!(
        st.log_text().contains("restored"),
        "filterd took its table back"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// examples/httpd serving `dir` on port 8080.
fn httpd(st: &Stack, dir: &std::path::Path) -> Bg {
    let mut h = spawn_app(
        st,
        "httpd",
        &["--root", dir.to_str().unwrap(), "--listen", "0.0.0.0:8080"],
    );
    wait_line(&mut h, "httpd: serving", Duration::from_secs(15));
    h
}

/// Sends `n` UDP datagrams from the kernel side to `dst`:5353, out of
/// strata0's address (so a multicast group goes out over the TAP).
fn send_mdns(ns: &Netns, dst: &str, n: u32) {
    ns.run_ok(&[
        "python3",
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_IF,socket.inet_aton(sys.argv[2]))\n\
         [s.sendto(b'query',(sys.argv[1],5353)) for _ in range(int(sys.argv[3]))]",
        dst,
        HOST_IP,
        &n.to_string(),
    ]);
}

#[test]
fn multicast_that_ipd_drops_meets_no_input_or_forward_rule() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    st.filter("add INPUT -p udp --dport 5353 -j ACCEPT");
    st.filter("add FORWARD -p udp --dport 5353 -j ACCEPT");
    // Three datagrams to an mDNS group nobody joined: ipd drops them as
    // not for us, and no INPUT or FORWARD rule saw them (as on Linux,
    // where routing drops them first).
    let before = st.counter("ipd", "not_for_us");
    send_mdns(&ns, "224.0.0.251", 3);
    st.wait_for("ipd to drop the datagrams", Duration::from_secs(20), || {
        st.counter("ipd", "not_for_us") >= before + 3
    });
    assert_eq!(rule_counts(&listing(&st, "INPUT"), 1).0, 0, "INPUT");
    assert_eq!(rule_counts(&listing(&st, "FORWARD"), 1).0, 0, "FORWARD");
    // The same rule counts a datagram for the stack's own address.
    send_mdns(&ns, STACK_IP, 1);
    st.wait_for(
        "the INPUT rule to count it",
        Duration::from_secs(20),
        || rule_counts(&listing(&st, "INPUT"), 1).0 == 1,
    );
}
