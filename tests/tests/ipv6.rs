//! IPv6 against the kernel across a TAP: duplicate address detection,
//! neighbour discovery both ways, pings to the link-local and the global
//! address, and malformed IPv6 counted by reason.

use std::time::Duration;

use strata_tests::{ping_all, tap_config6, wait_line, Netns, Stack, HOST_IP6, STACK_IP6};

/// The link-local address the stack makes from its MAC 02:53:54:00:00:01
/// (RFC 4291 modified EUI-64).
const STACK_LL: &str = "fe80::53:54ff:fe00:1";

/// One TAP, dual-stack on both sides.
fn config() -> String {
    tap_config6("")
}

/// Waits until the kernel side has an IPv6 link-local address that has
/// passed its own detection, so that it can send from it.
fn wait_kernel_ipv6(st: &Stack, ns: &Netns) {
    st.wait_for(
        "the kernel's link-local address to pass DAD",
        Duration::from_secs(30),
        || {
            let all = ns.run_ok(&["ip", "-6", "addr", "show", "dev", "strata0"]);
            let tentative = ns.run_ok(&["ip", "-6", "addr", "show", "dev", "strata0", "tentative"]);
            all.contains("fe80::") && tentative.trim().is_empty()
        },
    );
}

/// The stack's address `addr` as `strata addr show` has it.
fn stack_addr(st: &Stack, addr: &str) -> Option<serde_json::Value> {
    let v = st.json("addr");
    v["interfaces"]
        .as_array()?
        .iter()
        .flat_map(|i| i["addr_info"].as_array().cloned().unwrap_or_default())
        .find(|a| a["local"] == addr)
}

/// The stack's neighbour entry for `ip`, as `strata neigh show` has it.
fn stack_neigh_state(st: &Stack, ip: &str) -> Option<String> {
    let v = st.json("neigh");
    v["entries"]
        .as_array()?
        .iter()
        .find(|e| e["ip"] == ip)
        .and_then(|e| e["state"].as_str().map(str::to_string))
}

/// Pings `dst` once a second until `done` holds (or panics after 40 s):
/// neighbour states move on traffic and timers.
fn ping_until(st: &Stack, ns: &Netns, dst: &str, what: &str, mut done: impl FnMut() -> bool) {
    st.wait_for(what, Duration::from_secs(40), || {
        if done() {
            return true;
        }
        ns.run(&["ping", "-6", "-c", "1", "-W", "1", dst]);
        done()
    });
}

#[test]
fn pings_to_the_link_local_and_the_global_address_and_both_neighbour_entries_become_reachable() {
    let ns = Netns::new();
    let st = Stack::up_config(&ns, &config());
    wait_kernel_ipv6(&st, &ns);
    st.wait_for(
        "the stack's addresses to pass DAD",
        Duration::from_secs(30),
        || {
            [STACK_IP6, STACK_LL]
                .iter()
                .all(|a| stack_addr(&st, a).is_some_and(|x| x.get("tentative").is_none()))
        },
    );
    let ll = format!("{STACK_LL}%strata0");
    for dst in [STACK_IP6, ll.as_str()] {
        let r = ping_all(
            &ns,
            &[
                "-6", "-c", "200", "-i", "0.01", "-W", "1", "-p", "a5c3", dst,
            ],
        );
        assert!(
            r.received >= 199,
            "{dst}: only {} of {} answered:\n{}",
            r.received,
            r.sent,
            r.text
        );
        assert!(!r.corrupted, "{dst}: corrupted reply payload:\n{}", r.text);
    }
    assert!(st.counter("ipd", "icmp6_out_echo_replies") >= 400);
    // The kernel resolved the stack by solicitation; its entry is
    // confirmed by the solicited advertisement.
    ping_until(
        &st,
        &ns,
        STACK_IP6,
        "the kernel's entry for the stack to be REACHABLE",
        || {
            let n = ns.run_ok(&["ip", "-6", "neigh", "show", "dev", "strata0", STACK_IP6]);
            n.contains("02:53:54:00:00:01") && n.contains("REACHABLE")
        },
    );
    // The stack learnt the kernel from its solicitation (STALE), used it
    // (DELAY), probed it and got the answer.
    ping_until(
        &st,
        &ns,
        STACK_IP6,
        "the stack's entry for the kernel to be REACHABLE",
        || stack_neigh_state(&st, HOST_IP6).as_deref() == Some("REACHABLE"),
    );
    for l in st.json("status")["layers"].as_array().unwrap() {
        assert_eq!(l["restarts"], 0, "{l}");
    }
}

#[test]
fn large_pings_are_fragmented_and_reassembled_both_ways() {
    let ns = Netns::new();
    let st = Stack::up_config(&ns, &config());
    wait_kernel_ipv6(&st, &ns);
    for size in ["1400", "4000", "20000"] {
        let r = ping_all(
            &ns,
            &[
                "-6", "-c", "3", "-i", "0.2", "-W", "2", "-s", size, "-p", "5a", STACK_IP6,
            ],
        );
        assert_eq!(r.received, 3, "size {size}:\n{}", r.text);
        assert!(!r.corrupted, "size {size}: corrupted payload:\n{}", r.text);
    }
    // The two larger sizes arrive in fragments and leave in fragments.
    assert!(st.counter("ipd", "frag_reassembled") >= 6);
    assert!(st.counter("ipd", "frag6_out_packets") >= 6);
}

/// radvd's configuration: the kernel side advertises itself as the
/// default router and fd00:aa::/64 as on-link and autonomous.
const RADVD_CONF: &str = "interface strata0 {
    AdvSendAdvert on;
    MinRtrAdvInterval 3;
    MaxRtrAdvInterval 10;
    prefix fd00:aa::/64 { AdvOnLink on; AdvAutonomous on; };
};
";

/// Kernel-side TCP server: accepts one connection on [ADDR]:PORT, sends
/// the client's address and closes.
const WHO: &str = r#"
import socket, sys
l = socket.socket(socket.AF_INET6)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(1)
print("listening", flush=True)
c, a = l.accept()
c.sendall(a[0].encode())
c.close()
"#;

#[test]
fn a_router_advertisement_gives_an_address_and_a_default_router() {
    let ns = Netns::new();
    let st = Stack::up_config(&ns, &(config() + "autoconf = true\n"));
    wait_kernel_ipv6(&st, &ns);
    // The kernel side becomes a router with radvd, the usual daemon.
    ns.run_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    ns.run_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:aa::1/64",
        "dev",
        "strata0",
        "nodad",
    ]);
    let dir = strata_tests::TempDir::new("strata-radvd");
    let conf = dir.path().join("radvd.conf");
    std::fs::write(&conf, RADVD_CONF).unwrap();
    let pid = dir.path().join("radvd.pid");
    let _radvd = ns.spawn(&[
        "radvd",
        "--nodaemon",
        "--logmethod",
        "stderr",
        "--config",
        conf.to_str().unwrap(),
        "--pidfile",
        pid.to_str().unwrap(),
    ]);
    // The address made from the prefix and the MAC 02:53:54:00:00:01.
    let slaac = "fd00:aa::53:54ff:fe00:1";
    st.wait_for(
        "an address from the advertised prefix",
        Duration::from_secs(60),
        || stack_addr(&st, slaac).is_some_and(|a| a.get("tentative").is_none()),
    );
    assert_eq!(stack_addr(&st, slaac).unwrap()["dynamic"], true);
    let r = ping_all(&ns, &["-6", "-c", "5", "-i", "0.1", "-W", "1", slaac]);
    assert_eq!(r.received, 5, "{}", r.text);
    // The default router: an address the stack has no prefix for is
    // answered through the kernel's link-local address.
    ns.run_ok(&["ip", "-6", "addr", "add", "fd00:bb::1/128", "dev", "lo"]);
    let from_afar = || {
        let args = [
            "-6",
            "-c",
            "5",
            "-i",
            "0.1",
            "-W",
            "1",
            "-I",
            "fd00:bb::1",
            slaac,
        ];
        let r = ping_all(&ns, &args);
        assert_eq!(r.received, 5, "{}", r.text);
    };
    from_afar();
    let routes = st.json("route")["routes"].clone();
    let learnt = |dst: &str| {
        routes
            .as_array()
            .is_some_and(|v| v.iter().any(|r| r["dst"] == dst && r["protocol"] == "ra"))
    };
    assert!(learnt("default") && learnt("fd00:aa::/64"), "{routes}");
    // TCP and UDP may use the address: a connection to a kernel server
    // behind the default router comes from it (its prefix is the closer
    // to fd00:bb::1), and a socket can be bound to it.
    let mut server = ns.spawn(&["python3", "-c", WHO, "fd00:bb::1", "8500"]);
    wait_line(&mut server, "listening", Duration::from_secs(15));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let mut c = stack.builder().tcp_connect("[fd00:bb::1]:8500").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut peer = String::new();
    std::io::Read::read_to_string(&mut c, &mut peer).unwrap();
    assert_eq!(peer, slaac);
    assert_eq!(c.local_addr().unwrap().ip().to_string(), slaac);
    let u = stack.builder().udp_bind(format!("[{slaac}]:0")).unwrap();
    assert_eq!(u.local_addr().unwrap().ip().to_string(), slaac);
    // A restarted ipd keeps what it learnt.
    let before = st.kill_layer("ipd");
    st.wait_restarted("ipd", before);
    from_afar();
}

#[test]
fn packet_too_big_from_a_router_on_the_way_lowers_the_path_mtu() {
    // The kernel side is a router to a second namespace, over a link of
    // IPv6's minimum MTU; the stack's default route points at it.
    let ns = Netns::new();
    let far = Netns::new();
    let cfg = config() + "[[route]]\nto = \"::/0\"\nvia = \"fd00:77::1\"\n";
    let st = Stack::up_config(&ns, &cfg);
    wait_kernel_ipv6(&st, &ns);
    ns.run_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    ns.run_ok(&[
        "ip", "link", "add", "v0", "mtu", "1280", "type", "veth", "peer", "name", "v1",
    ]);
    ns.run_ok(&["ip", "link", "set", "v1", "netns", &far.name]);
    ns.run_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:cc::1/64",
        "dev",
        "v0",
        "nodad",
    ]);
    ns.run_ok(&["ip", "link", "set", "v0", "up"]);
    far.run_ok(&["ip", "link", "set", "v1", "mtu", "1280"]);
    far.run_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:cc::2/64",
        "dev",
        "v1",
        "nodad",
    ]);
    far.run_ok(&["ip", "link", "set", "v1", "up"]);
    far.run_ok(&["ip", "-6", "route", "add", "default", "via", "fd00:cc::1"]);
    st.wait_for(
        "the far host reaching the stack",
        Duration::from_secs(30),
        || strata_tests::ping(&far, &["-6", "-c", "1", "-W", "1", STACK_IP6]).received == 1,
    );
    // 1448-byte replies do not fit the far link: the kernel router says
    // so, and the next replies leave in fragments that do.
    let r = strata_tests::ping(
        &far,
        &[
            "-6", "-c", "6", "-i", "0.3", "-W", "2", "-s", "1400", "-p", "5a", STACK_IP6,
        ],
    );
    assert!(r.received >= 4, "{}", r.text);
    assert!(!r.corrupted, "{}", r.text);
    assert!(st.counter("ipd", "pmtu6_learnt") >= 1);
    assert!(st.counter("ipd", "frag6_out_packets") >= 4);
}

/// Sends an MLDv2 general query (maximum response delay 1 s) from the
/// kernel side's link-local address to all nodes, as a multicast router
/// would.
const MLD_QUERY: &str = r#"
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex("strata0"))
q = struct.pack("!BBHHH16sBBH", 130, 0, 0, 1000, 0, bytes(16), 2, 125, 0)
s.sendto(q, ("ff02::1", 0, 0, socket.if_nametoindex("strata0")))
print("sent")
"#;

#[test]
fn a_multicast_router_query_is_answered_with_a_report() {
    let ns = Netns::new();
    let st = Stack::up_config(&ns, &config());
    wait_kernel_ipv6(&st, &ns);
    // The stack's reports, not the kernel's own: from its link-local
    // address (the one it sent at start came from ::, before that address
    // passed detection).
    let mut dump = ns.spawn(&[
        "tcpdump", "-i", "strata0", "-n", "-l", "-v", "ip6", "and", "dst", "ff02::16", "and",
        "src", STACK_LL,
    ]);
    let lines = dump.collect_lines();
    let mut tries = 0;
    st.wait_for(
        "a listener report after a query",
        Duration::from_secs(60),
        || {
            // tcpdump may not listen yet: ask again every second or so.
            if tries % 20 == 0 {
                ns.run_ok(&["python3", "-c", MLD_QUERY]);
            }
            tries += 1;
            lines
                .snapshot()
                .iter()
                .any(|l| l.contains("multicast listener report v2"))
        },
    );
    assert!(st.counter("ipd", "mld_rx_queries") >= 1);
    // The kernel answers the query too, with reports to the routers'
    // group, which the stack is not in: netdevd drops them, ipd never
    // sees them.
    st.wait_for(
        "the kernel's reports dropped",
        Duration::from_secs(30),
        || {
            ns.run_ok(&["python3", "-c", MLD_QUERY]);
            st.counter("netdevd", "drop_other_group") >= 1
        },
    );
}

#[test]
fn an_address_the_kernel_already_holds_is_found_duplicate_and_refused() {
    let ns = Netns::new();
    let st = Stack::up_config(&ns, &config());
    wait_kernel_ipv6(&st, &ns);
    let dup = "fd00:77::5";
    ns.run_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd00:77::5/64",
        "dev",
        "strata0",
        "nodad",
    ]);
    let o = st.strata(&["addr", "add", "fd00:77::5/64", "dev", "strata0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    st.wait_for(
        "the duplicate to be detected",
        Duration::from_secs(30),
        || st.counter("ipd", "dad_duplicate") >= 1,
    );
    let a = stack_addr(&st, dup).expect("the address is still listed");
    assert_eq!(a["dadfailed"], true, "{a}");
    let log = st.log_text();
    assert!(
        log.contains("fd00:77::5") && log.contains("duplicate address detection"),
        "the stack does not say why it refused the address:\n{log}"
    );
    // The stack's other address was never in doubt and still answers.
    let r = ping_all(&ns, &["-6", "-c", "5", "-i", "0.1", "-W", "1", STACK_IP6]);
    assert_eq!(r.received, 5, "{}", r.text);
}

/// Sends hand-made IPv6 frames to the stack through a raw packet socket on
/// the kernel side of the TAP: five of each kind.
const INJECT6: &str = r#"
import socket, struct
S = socket.inet_pton(socket.AF_INET6, "fd00:77::1")
D = socket.inet_pton(socket.AF_INET6, "fd00:77::2")
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def icmp6(body, src=S, dst=D):
    m = bytearray(body)
    m[2:4] = b"\0\0"
    pseudo = src + dst + struct.pack("!IxxxB", len(m), 58)
    m[2:4] = struct.pack("!H", csum(pseudo + bytes(m)))
    return bytes(m)
def ip6(payload, nh=58, hops=64, plen=None, src=S, dst=D):
    plen = len(payload) if plen is None else plen
    return struct.pack("!IHBB", 6 << 28, plen, nh, hops) + src + dst + payload
def ns_msg(opt_len=1):
    return icmp6(bytes([135, 0, 0, 0, 0, 0, 0, 0]) + D + bytes([1, opt_len]) + b"\x02\x53\x54\x00\x00\x09")
echo = icmp6(bytes([128, 0, 0, 0, 0x12, 0x34, 0, 1]) + b"x" * 16)
def frag(offset, more, data, ident=77):
    return ip6(struct.pack("!BBHI", 58, 0, offset << 3 | more, ident) + data, nh=44)
chain = b"".join(bytes([60, 0, 1, 4, 0, 0, 0, 0]) for _ in range(12))
kinds = {
    "bad_payload_length": ip6(echo, plen=400),
    "ext_header_chain_too_long": ip6(chain, nh=60),
    "nd_bad_hop_limit": ip6(ns_msg(), hops=254),
    "nd_zero_option_length": ip6(ns_msg(opt_len=0), hops=255),
    "icmp6_bad_checksum": ip6(echo[:2] + b"\x55\x55" + echo[4:]),
    "truncated": ip6(echo)[:30],
}
# Two fragments of one packet whose data overlap (RFC 5722): the second
# starts 8 bytes before the first ends. Each pair under its own identification.
overlaps = []
for i in range(5):
    overlaps += [frag(0, 1, echo + b"y" * 8, 100 + i), frag(3, 0, b"z" * 16, 100 + i)]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("strata0", 0))
src = s.getsockname()[4]
eth = bytes.fromhex("025354000001") + src + b"\x86\xdd"
for name, pkt in kinds.items():
    frame = eth + pkt
    for _ in range(5):
        s.send(frame)
for pkt in overlaps:
    s.send(eth + pkt)
print("sent")
"#;

#[test]
fn malformed_ipv6_is_counted_by_reason_and_disturbs_nothing() {
    let ns = Netns::new();
    let st = Stack::up_config(&ns, &config());
    wait_kernel_ipv6(&st, &ns);
    let r = ping_all(&ns, &["-6", "-c", "2", "-i", "0.2", "-W", "1", STACK_IP6]);
    assert_eq!(r.received, 2, "{}", r.text);
    let out = ns.run_ok(&["python3", "-c", INJECT6]);
    assert!(out.contains("sent"));
    for counter in [
        "ipv6_payload_len_exceeds_frame",
        "ip6_too_many_ext_headers",
        "ndp_bad_hop_limit",
        "ndp_zero_option_length",
        "icmp6_bad_checksum",
        "ipv6_truncated",
        "frag_overlap",
    ] {
        st.wait_for(counter, Duration::from_secs(20), || {
            st.counter("ipd", counter) >= 5
        });
    }
    let r = ping_all(&ns, &["-6", "-c", "5", "-i", "0.1", "-W", "1", STACK_IP6]);
    assert_eq!(r.received, 5, "{}", r.text);
    for l in st.json("status")["layers"].as_array().unwrap() {
        assert_eq!(l["restarts"], 0, "{l}");
    }
}
