//! ip-style configuration of a running stack: `strata addr`, `route`,
//! `neigh add|del` and `link set mtu` take effect at once, survive the
//! restart of the layers that use them, and refuse what makes no sense
//! with a sentence that says why.
//!
//! ```text
//!  kernel (netns)                               strata
//!  strata0 10.77.0.1/24  ───── TAP ─────  10.77.0.2/24 (+ 10.77.0.50/24 added)
//!  lo      10.99.0.1/24 (a network only the kernel side reaches:
//!                        strata needs `route add 10.99.0.0/24 via 10.77.0.1`)
//! ```

use std::io::{Read, Write};
use std::time::Duration;
use strata_tests::{ping, wait_line, Netns, Stack, HOST_IP};

const ADDED: &str = "10.77.0.50";
const FAR: &str = "10.99.0.1";

/// Runs a `strata` command that must succeed; its stdout.
fn ok(st: &Stack, args: &[&str]) -> String {
    let o = st.strata(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a `strata` command that must fail; its error message.
fn refused(st: &Stack, args: &[&str]) -> String {
    let o = st.strata(args);
    assert!(!o.status.success(), "{args:?} accepted");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(st: &Stack, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ok(st, &a)).unwrap()
}

/// One echo of the far network answered (ping from the far address to
/// `to`: the answer needs a route back to 10.99.0.0/24).
fn far_ping(ns: &Netns, to: &str, wait_s: &str) -> u32 {
    ping(ns, &["-c", "1", "-W", wait_s, "-I", FAR, to]).received
}

/// Echoes `msg` over TCP from a strata socket to a kernel server on the
/// far network.
fn tcp_to_far(ns: &Netns, st: &Stack, port: u16, msg: &[u8]) -> Vec<u8> {
    let mut server = ns.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket\n\
             l=socket.socket()\n\
             l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             l.bind(('{FAR}',{port}))\n\
             l.listen(1)\n\
             print('listening',flush=True)\n\
             c,a=l.accept()\n\
             print('from',a[0],flush=True)\n\
             c.sendall(c.recv(100))\n\
             c.close()"
        ),
    ]);
    wait_line(&mut server, "listening", Duration::from_secs(10));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let mut s = stack
        .builder()
        .tcp_connect(format!("{FAR}:{port}"))
        .expect("connect through the added route");
    s.write_all(msg).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    let from = wait_line(&mut server, "from", Duration::from_secs(10));
    assert!(
        from.contains("10.77.0.2"),
        "source is the primary address: {from}"
    );
    back
}

#[test]
fn an_address_and_a_route_added_at_run_time_work_survive_restarts_and_go_when_deleted() {
    let ns = Netns::new();
    ns.run_ok(&["ip", "addr", "add", &format!("{FAR}/24"), "dev", "lo"]);
    let st = Stack::up(&ns);
    assert_eq!(ping(&ns, &["-c", "1", "-W", "1", ADDED]).received, 0);
    assert_eq!(far_ping(&ns, "10.77.0.2", "1"), 0, "no route back yet");

    ok(
        &st,
        &["addr", "add", &format!("{ADDED}/24"), "dev", "strata0"],
    );
    ok(&st, &["route", "add", "10.99.0.0/24", "via", HOST_IP]);
    // In force when the command returns: answered at the first echo.
    assert_eq!(ping(&ns, &["-c", "1", "-W", "5", ADDED]).received, 1);
    assert_eq!(far_ping(&ns, ADDED, "5"), 1);
    assert_eq!(
        tcp_to_far(&ns, &st, 7301, b"over the new route"),
        b"over the new route"
    );

    let text = ok(&st, &["addr"]);
    assert!(
        text.contains(&format!("inet {ADDED}/24 brd 10.77.0.255 secondary")),
        "{text}"
    );
    let route = ok(&st, &["route", "show"]);
    assert!(
        route.contains("10.99.0.0/24 via 10.77.0.1 dev strata0")
            && route.contains("10.77.0.0/24 dev strata0 proto kernel scope link src 10.77.0.2"),
        "{route}"
    );
    let v = json(&st, &["addr", "show", "dev", "strata0"]);
    let locals: Vec<&str> = v["interfaces"][0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| a["local"].as_str().unwrap())
        .collect();
    assert_eq!(locals, ["10.77.0.2", ADDED]);

    // Every layer that uses them restarts and takes them from the fabric.
    for layer in ["ipd", "filterd", "tcpd", "udpd"] {
        let before = st.kill_layer(layer);
        st.wait_restarted(layer, before);
    }
    st.wait_for(
        "the added address after restarts",
        Duration::from_secs(20),
        || ping(&ns, &["-c", "1", "-W", "2", ADDED]).received == 1,
    );
    assert_eq!(far_ping(&ns, ADDED, "5"), 1);
    assert_eq!(
        tcp_to_far(&ns, &st, 7302, b"after restarts"),
        b"after restarts"
    );

    ok(&st, &["route", "del", "10.99.0.0/24"]);
    assert_eq!(far_ping(&ns, ADDED, "1"), 0, "no route back any more");
    ok(
        &st,
        &["addr", "del", &format!("{ADDED}/24"), "dev", "strata0"],
    );
    assert_eq!(ping(&ns, &["-c", "1", "-W", "1", ADDED]).received, 0);
    assert_eq!(ping(&ns, &["-c", "1", "-W", "5", "10.77.0.2"]).received, 1);
    assert!(!ok(&st, &["addr"]).contains(ADDED));
}

#[test]
fn a_permanent_neighbour_is_used_without_asking_kept_and_deleted() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    assert_eq!(ping(&ns, &["-c", "1", "-W", "5", "10.77.0.2"]).received, 1);
    // A MAC the kernel side does not have: the stack's answers go to it,
    // so the kernel never sees them.
    let wrong = "02:00:00:00:00:99";
    ok(
        &st,
        &["neigh", "add", HOST_IP, "lladdr", wrong, "dev", "strata0"],
    );
    let entry = |st: &Stack| {
        json(st, &["neigh", "show"])["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["ip"] == HOST_IP)
            .cloned()
    };
    st.wait_for("the permanent entry shown", Duration::from_secs(10), || {
        entry(&st).is_some_and(|e| e["state"] == "PERMANENT" && e["lladdr"] == wrong)
    });
    let asked = st.counter("ipd", "arp_tx_requests");
    assert_eq!(ping(&ns, &["-c", "2", "-W", "1", "10.77.0.2"]).received, 0);
    // Flushing and a restart of ipd keep it; ARP does not replace it.
    ok(&st, &["neigh", "flush"]);
    let before = st.kill_layer("ipd");
    st.wait_restarted("ipd", before);
    assert_eq!(ping(&ns, &["-c", "2", "-W", "1", "10.77.0.2"]).received, 0);
    assert_eq!(entry(&st).unwrap()["state"], "PERMANENT");
    // The restarted ipd announced its one address (a gratuitous ARP
    // request); it asked for nothing else.
    assert_eq!(
        st.counter("ipd", "arp_tx_requests"),
        asked + 1,
        "never asked"
    );

    let err = refused(
        &st,
        &["neigh", "add", HOST_IP, "lladdr", wrong, "dev", "strata0"],
    );
    assert!(err.contains("already a permanent neighbour"), "{err}");
    ok(&st, &["neigh", "del", HOST_IP, "dev", "strata0"]);
    // Resolved again: answered.
    st.wait_for("answers after the delete", Duration::from_secs(20), || {
        ping(&ns, &["-c", "1", "-W", "2", "10.77.0.2"]).received == 1
    });
    let e = entry(&st).expect("learnt again");
    assert_ne!(e["state"], "PERMANENT");
    // A learnt entry can be deleted too.
    ok(&st, &["neigh", "del", HOST_IP]);
    assert!(entry(&st).is_none());
    let err = refused(&st, &["neigh", "del", "10.77.0.77"]);
    assert!(err.contains("no neighbour 10.77.0.77 on strata0"), "{err}");
}

#[test]
fn the_mtu_changes_at_run_time_and_bad_changes_are_refused_with_a_reason() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // The kernel side sends at most 1280-byte datagrams, fragmenting a
    // 1400-byte echo; the stack answers in one datagram while its own MTU
    // is 1500, in fragments once it is 1280.
    ns.run_ok(&["ip", "link", "set", "strata0", "mtu", "1280"]);
    let frags = |st: &Stack| st.counter("ipd", "frag_out_created");
    let big = ["-c", "1", "-W", "5", "-s", "1400", "10.77.0.2"];
    assert_eq!(ping(&ns, &big).received, 1);
    assert_eq!(frags(&st), 0);
    ok(&st, &["link", "set", "strata0", "mtu", "1280"]);
    assert_eq!(json(&st, &["link"])["links"][0]["mtu"], 1280);
    assert_eq!(ping(&ns, &big).received, 1);
    let after = frags(&st);
    assert!(after >= 2, "the answer was fragmented: {after}");
    let before = st.kill_layer("ipd");
    st.wait_restarted("ipd", before);
    st.wait_for("a big echo answered", Duration::from_secs(20), || {
        ping(&ns, &["-c", "1", "-W", "2", "-s", "1400", "10.77.0.2"]).received == 1
    });
    assert!(frags(&st) > after, "still fragmented after ipd's restart");
    assert!(ok(&st, &["link"]).contains("mtu 1280"));

    for (args, says) in [
        (
            vec!["addr", "add", "10.77.0.2/24", "dev", "strata0"],
            "10.77.0.2 is already an address of strata0",
        ),
        (
            vec!["addr", "add", "10.77.0.9", "dev", "strata0"],
            "expected like 10.77.0.2/24",
        ),
        (
            vec!["addr", "add", "10.77.0.1/24"],
            "10.77.0.1 is the kernel side's address on strata0",
        ),
        (
            vec!["addr", "add", "10.77.0.9/24", "dev", "eth7"],
            "no interface named \"eth7\"",
        ),
        (
            vec!["addr", "del", "10.77.0.9/24"],
            "10.77.0.9 is not an address of strata0",
        ),
        (
            vec!["route", "add", "10.98.0.0/24", "via", "10.66.0.1"],
            "10.66.0.1 is not in the connected prefix of any interface",
        ),
        (
            vec!["route", "add", "10.98.0.5/24", "via", HOST_IP],
            "has host bits set (did you mean 10.98.0.0/24?)",
        ),
        (
            vec!["route", "del", "10.77.0.0/24"],
            "connected route of 10.77.0.2/24 on strata0: delete the address instead",
        ),
        (
            vec!["route", "del", "default"],
            "no route to default was added",
        ),
        (
            vec!["neigh", "add", "10.77.0.2", "lladdr", "02:00:00:00:00:01"],
            "10.77.0.2 is the stack's own address",
        ),
        (vec!["addr", "frob"], "addr: show [dev IFACE], add"),
    ] {
        let err = refused(&st, &args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // An address a route needs goes only after the route.
    ok(&st, &["addr", "add", "10.88.0.2/24", "dev", "strata0"]);
    ok(&st, &["route", "add", "10.98.0.0/24", "via", "10.88.0.1"]);
    let err = refused(&st, &["addr", "del", "10.88.0.2", "dev", "strata0"]);
    assert!(
        err.contains("the route 10.98.0.0/24 via 10.88.0.1 needs 10.88.0.2/24 to reach its gateway: delete the route first"),
        "{err}"
    );
    ok(&st, &["route", "del", "10.98.0.0/24"]);
    ok(&st, &["addr", "del", "10.88.0.2", "dev", "strata0"]);
}
