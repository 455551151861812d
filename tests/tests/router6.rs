//! Router mode for IPv6: strata forwards between two TAP interfaces, each
//! the link of a Linux host in a network namespace of its own (the IPv4
//! twin is `router.rs`).
//!
//! ```text
//!  host A (netns a)               strata (in netns a)                host B (netns b)
//!  strata0 fd00:78:1::2/64 ── fd00:78:1::1 [ipd] fd00:78:2::1 ── strata1 fd00:78:2::2/64
//!                                  MTU 1500            MTU 1280
//! ```
//!
//! strata also routes fd00:78:3::/64 via host B, which holds an address of
//! it on its loopback.

use std::time::Duration;
use strata_tests::{pattern, ping, ping_all, socat_upload, Netns, Stack, TempDir};

const A_IP: &str = "fd00:78:1::2";
const B_IP: &str = "fd00:78:2::2";
const STRATA_A: &str = "fd00:78:1::1";
const STRATA_B: &str = "fd00:78:2::1";
/// A network behind host B, which strata reaches by a configured route.
const BEHIND_B: &str = "fd00:78:3::";
/// An address there (on B's loopback).
const BEHIND_B_HOST: &str = "fd00:78:3::1";
/// The MTU of B's link, IPv6's minimum.
const B_MTU: u16 = 1280;

/// Host A, host B and the stack between them; the stack stops before the
/// namespaces go.
struct Router {
    st: Stack,
    a: Netns,
    b: Netns,
}

impl Router {
    fn up() -> Router {
        let a = Netns::new();
        let b = Netns::new();
        let st = Stack::up_config(
            &a,
            &format!(
                "[[interface]]\nname = \"strata0\"\naddresses = [\"{STRATA_A}/64\"]\n\
                 host_addresses = [\"{A_IP}/64\"]\n\
                 [[interface]]\nname = \"strata1\"\naddresses = [\"{STRATA_B}/64\"]\n\
                 mtu = {B_MTU}\n\
                 [[route]]\nto = \"{BEHIND_B}/64\"\nvia = \"{B_IP}\"\n\
                 [ip]\nforwarding = true\n"
            ),
        );
        a.run_ok(&["ip", "-6", "route", "add", "default", "via", STRATA_A]);
        a.run_ok(&["ip", "link", "set", "strata1", "netns", &b.name]);
        b.run_ok(&["ip", "link", "set", "strata1", "mtu", &B_MTU.to_string()]);
        b.run_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{B_IP}/64"),
            "dev",
            "strata1",
            "nodad",
        ]);
        b.run_ok(&["ip", "link", "set", "strata1", "up"]);
        b.run_ok(&["ip", "-6", "route", "add", "default", "via", STRATA_B]);
        b.run_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{BEHIND_B_HOST}/128"),
            "dev",
            "lo",
        ]);
        let r = Router { st, a, b };
        // Both sides reach strata before anything goes through it: its
        // addresses passed detection, and the hosts' routes are in place.
        for (ns, to) in [(&r.a, STRATA_A), (&r.b, STRATA_B)] {
            r.st.wait_for(&format!("{to} answering"), Duration::from_secs(30), || {
                ping(ns, &["-6", "-c", "1", "-W", "1", to]).received == 1
            });
        }
        r
    }
}

#[test]
fn hosts_ping_each_other_through_strata_with_one_hop_spent() {
    let r = Router::up();
    for (from, to) in [(&r.a, B_IP), (&r.b, A_IP)] {
        let p = ping_all(
            from,
            &["-6", "-c", "5", "-i", "0.2", "-W", "2", "-p", "a5", to],
        );
        assert!(p.received >= 4, "to {to}:\n{}", p.text);
        assert!(!p.corrupted, "to {to}:\n{}", p.text);
        // Linux answers with hop limit 64; one router on the way back.
        assert!(p.text.contains("ttl=63"), "to {to}:\n{}", p.text);
    }
    // Behind B, by the configured route via B.
    let p = ping_all(
        &r.a,
        &["-6", "-c", "3", "-i", "0.2", "-W", "2", BEHIND_B_HOST],
    );
    assert_eq!(p.received, 3, "{}", p.text);
    assert!(r.st.counter("ipd", "forwarded") >= 22);
}

#[test]
fn what_cannot_be_forwarded_is_reported_with_the_icmpv6_errors_linux_sends() {
    let r = Router::up();
    let p = ping(&r.a, &["-6", "-c", "1", "-t", "1", "-W", "2", B_IP]);
    assert!(
        p.text.contains(&format!("From {STRATA_A}")) && p.text.contains("Time exceeded"),
        "{}",
        p.text
    );
    assert_eq!(r.st.counter("ipd", "fwd_ttl_exceeded"), 1);

    // Too big for B's link: Packet Too Big with B's MTU, never fragments
    // on the way; A then fragments at the source and gets through.
    let p = ping(&r.a, &["-6", "-c", "1", "-s", "1400", "-W", "2", B_IP]);
    assert!(
        p.text.contains(&format!("From {STRATA_A}"))
            && p.text.contains("Packet too big")
            && p.text.contains(&format!("mtu={B_MTU}")),
        "{}",
        p.text
    );
    assert!(r.st.counter("ipd", "fwd_frag_needed") >= 1);
    let p = ping_all(
        &r.a,
        &[
            "-6", "-c", "3", "-i", "0.2", "-W", "2", "-s", "3000", "-p", "5a", B_IP,
        ],
    );
    assert_eq!(p.received, 3, "{}", p.text);
    assert!(!p.corrupted, "{}", p.text);
    assert_eq!(
        r.st.counter("ipd", "frag_reassembled"),
        0,
        "not ours to join"
    );

    // No route beyond the two prefixes.
    let p = ping(&r.a, &["-6", "-c", "1", "-W", "2", "fd00:99::1"]);
    assert!(
        p.text.contains(&format!("From {STRATA_A}")) && p.text.contains("No route"),
        "{}",
        p.text
    );
    assert_eq!(r.st.counter("ipd", "fwd_no_route"), 1);

    // Nobody answers neighbour discovery for this one on B's link:
    // address unreachable once strata gives up.
    let p = ping(&r.a, &["-6", "-c", "1", "-W", "20", "fd00:78:2::99"]);
    assert!(
        p.text.contains(&format!("From {STRATA_A}")) && p.text.contains("Address unreachable"),
        "{}",
        p.text
    );
}

#[test]
fn tcp_transfers_of_four_megabytes_both_ways_arrive_intact() {
    let r = Router::up();
    let dir = TempDir::new("strata-router6");
    const LEN: usize = 4 << 20;

    // A downloads from B's HTTP server.
    let served = pattern(LEN, 0x5eed);
    std::fs::write(dir.path().join("big.bin"), &served).unwrap();
    let _server =
        r.b.http_server(B_IP, 8080, dir.path(), Duration::from_secs(10));
    let got = dir.path().join("got.bin");
    r.a.run_ok(&[
        "curl",
        "-6",
        "-sS",
        "--fail",
        "--max-time",
        "120",
        "-o",
        got.to_str().unwrap(),
        &format!("http://[{B_IP}]:8080/big.bin"),
    ]);
    assert!(std::fs::read(&got).unwrap() == served, "download corrupted");

    // A uploads to a socat listener in B.
    let listen = format!("TCP6-LISTEN:9000,bind=[{B_IP}],reuseaddr");
    let connect = format!("TCP6:[{B_IP}]:9000");
    let sent = pattern(LEN, 0xfeed);
    socat_upload(
        &r.st,
        &r.a,
        &r.b,
        (&listen, 9000, &connect),
        &sent,
        dir.path(),
    );
    assert!(r.st.counter("ipd", "forwarded") > 2 * (LEN as u64) / 1500);
    assert_eq!(r.st.counter("ipd", "delivered"), 0);
}
