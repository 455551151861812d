//! filterd standing aside (docs/ARCHITECTURE.md, "Standing aside"): with
//! no rules and nothing tracked its neighbours pass traffic to each other
//! directly; a rule set that touches packets brings it back before
//! `strata filter` returns; killing any of the three layers keeps a
//! transfer whole. Against the kernel: a TCP echo through the stack,
//! compared byte for byte.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use strata_tests::{kernel_echo_server, pattern, Netns, Stack, HOST_IP};

/// Bytes sent in each phase of the transfer.
const PHASE: usize = 4 << 20;
/// A bound for a hang, never reached by a working stack.
const PATIENCE: Duration = Duration::from_secs(30);

/// Where filterd is: `in`, `aside` or `returning`.
fn filterd_path(st: &Stack) -> String {
    st.layer_status("filterd")["aside"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Who takes from the ring `from -> to` now.
fn taken_by(st: &Stack, from: &str, to: &str) -> String {
    let status = st.json("status");
    let r = status["rings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["from"] == from && r["to"] == to)
        .unwrap_or_else(|| panic!("no ring {from} -> {to}"))
        .clone();
    r["taken_by"].as_str().unwrap().to_string()
}

/// filterd is out of the path: both its input rings are taken by the
/// neighbour on the other side.
fn assert_aside(st: &Stack) {
    st.wait_for("filterd aside", PATIENCE, || filterd_path(st) == "aside");
    assert_eq!(taken_by(st, "netdevd", "filterd"), "ipd");
    assert_eq!(taken_by(st, "ipd", "filterd"), "netdevd");
}

/// filterd is in the path, its rings its own (at once: `strata filter`
/// returned only then).
fn assert_in(st: &Stack) {
    assert_eq!(filterd_path(st), "in");
    assert_eq!(taken_by(st, "netdevd", "filterd"), "filterd");
    assert_eq!(taken_by(st, "ipd", "filterd"), "filterd");
}

/// What one phase of the transfer showed: handles filterd took, and
/// handles its neighbours took through it.
fn hops(st: &Stack) -> (u64, u64) {
    (
        st.counter("filterd", "loop_handles_in"),
        st.counter("ipd", "loop_through") + st.counter("netdevd", "loop_through"),
    )
}

/// An echo through the stack to the kernel, sent in phases: the sender
/// waits for a word on `go` before each phase after the first, and
/// `echoed` counts the bytes back.
struct Transfer {
    go: mpsc::Sender<()>,
    echoed: Arc<AtomicUsize>,
    done: std::thread::JoinHandle<Vec<u8>>,
}

impl Transfer {
    fn start(st: &Stack, port: u16, data: Arc<Vec<u8>>) -> Transfer {
        let s = libsock::Stack::connect(&st.instance)
            .expect("libsock")
            .builder()
            .tcp_connect(format!("{HOST_IP}:{port}"))
            .expect("connect to the kernel's echo server");
        let r = s.try_clone().unwrap();
        let (go, wait) = mpsc::channel::<()>();
        let echoed = Arc::new(AtomicUsize::new(0));
        let count = echoed.clone();
        let sent = data.clone();
        std::thread::spawn(move || {
            for (k, chunk) in sent.chunks(PHASE).enumerate() {
                if k > 0 {
                    // Once the test stops gating, the rest goes at once.
                    let _ = wait.recv();
                }
                (&s).write_all(chunk).expect("send");
            }
            s.shutdown(libsock::Shutdown::Write).unwrap();
        });
        let done = std::thread::spawn(move || {
            let mut back = Vec::with_capacity(data.len());
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = (&r).read(&mut buf).expect("read the echo");
                if n == 0 {
                    return back;
                }
                back.extend_from_slice(&buf[..n]);
                count.fetch_add(n, SeqCst);
            }
        });
        Transfer { go, echoed, done }
    }

    /// Waits until phase `k` is half echoed (so data is moving), then
    /// lets phase `k + 1` go once `action` has run.
    fn between(&self, st: &Stack, k: usize, action: impl FnOnce()) {
        let mark = k * PHASE + PHASE / 2;
        st.wait_for(&format!("{mark} bytes echoed"), PATIENCE, || {
            self.echoed.load(SeqCst) >= mark
        });
        action();
        self.go.send(()).unwrap();
    }
}

#[test]
fn filterd_stands_aside_without_rules_and_comes_back_for_them_mid_transfer() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // No rules: aside from the start.
    assert_aside(&st);
    let _server = kernel_echo_server(&ns, 9100, 1, Duration::from_secs(10));
    let data = Arc::new(pattern(8 * PHASE, 7));
    let t = Transfer::start(&st, 9100, data.clone());

    let mut seen = hops(&st);
    let mut phase = 0;
    let mut next = |st: &Stack, action: &dyn Fn()| {
        t.between(st, phase, action);
        phase += 1;
    };
    // A rule that matches nothing of ours still brings filterd back:
    // every packet meets it from the moment `strata filter` returns.
    next(&st, &|| {
        st.filter("add INPUT -p tcp --dport 9 -j DROP");
        assert_in(&st);
    });
    next(&st, &|| {
        // Counters are published before a layer sleeps, so they are
        // waited for rather than read once.
        st.wait_for("filterd to take the phase's packets", PATIENCE, || {
            hops(&st).0 > seen.0
        });
        let asides = st.counter("filterd", "loop_asides");
        st.filter("flush INPUT");
        assert_aside(&st);
        // filterd published its count of handles with the one of asides.
        st.wait_for("filterd's counters after it stood aside", PATIENCE, || {
            st.counter("filterd", "loop_asides") > asides
        });
    });
    seen = hops(&st);
    // Aside, filterd takes nothing; its neighbours take its rings.
    next(&st, &|| {
        st.wait_for("handles through filterd's rings", PATIENCE, || {
            hops(&st).1 > seen.1
        });
        assert_eq!(hops(&st).0, seen.0, "filterd took packets while aside");
        let before = st.kill_layer("filterd");
        st.wait_restarted("filterd", before);
        assert_aside(&st);
    });
    // Its neighbours die and come back as well, with filterd aside.
    for layer in ["ipd", "netdevd"] {
        next(&st, &|| {
            let before = st.kill_layer(layer);
            st.wait_restarted(layer, before);
            assert_aside(&st);
        });
    }
    // A stateful rule: filterd tracks connections, and stays in the path
    // after the rule goes while a tracked connection remains, until the
    // table is flushed.
    next(&st, &|| {
        st.filter("add INPUT -m state --state INVALID -j DROP");
        assert_in(&st);
    });
    next(&st, &|| {
        st.filter("flush INPUT");
        let tracked = st.strata(&["conntrack", "list", "--json"]);
        assert!(tracked.status.success());
        let list: serde_json::Value = serde_json::from_slice(&tracked.stdout).unwrap();
        let entries = list["entries"].as_array().map_or(0, Vec::len);
        assert!(entries > 0, "our connection is tracked: {list}");
        assert_eq!(filterd_path(&st), "in", "tracked connections keep it in");
        let o = st.strata(&["conntrack", "flush"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_aside(&st);
    });
    drop(t.go);
    let back = t.done.join().expect("the echo reader");
    assert_eq!(back.len(), data.len(), "echoed length");
    assert!(back == *data, "the echo differs from what was sent");
    let (in_filterd, through) = hops(&st);
    assert!(through > 0 && in_filterd > 0, "{in_filterd} {through}");
}
