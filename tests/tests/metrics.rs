//! `strata metrics` and the standard counters: the text is OpenMetrics
//! that Prometheus' own Python parser accepts, printed once and served
//! over HTTP to curl; the standard counters are sums of counters the
//! layers really publish, and move by exactly what a known exchange
//! (100 pings from the kernel) makes them move.

use std::time::Duration;
use strata_tests::{bin, ping, wait_until, Bg, Netns, Stack, STACK_IP};

/// Reads OpenMetrics text on stdin with the `prometheus_client` parser
/// (the system Python's, as the CI installs it); prints each sample as
/// `name{labels} value`, one per line, then `parsed N`.
const PARSE: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
n = 0
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        print("%s{%s} %s" % (s.name, labels, s.value))
        n += 1
print("parsed", n)
"#;

/// The system Python, which has the parser (a Python of the user's own,
/// first on PATH, may not).
const PYTHON: &str = "/usr/bin/python3";

/// Parses `text` with [`PARSE`]; returns the samples' lines, panicking
/// with the parser's complaint if it refuses the text.
fn parse(text: &str) -> Vec<String> {
    use std::io::Write;
    let mut child = std::process::Command::new(PYTHON)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && out.contains("parsed"),
        "the parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.lines().map(str::to_string).collect()
}

/// The value of the sample named exactly `name` (no labels).
fn sample(samples: &[String], name: &str) -> u64 {
    let prefix = format!("{name}{{}} ");
    samples
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no sample {name}"))
        .parse::<f64>()
        .unwrap() as u64
}

fn metrics_once(st: &Stack) -> String {
    let o = st.strata(&["metrics"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn metrics_parse_as_openmetrics_and_count_a_hundred_pings() {
    let ns = Netns::new();
    let st = Stack::up(&ns);

    // The standard counters, beside the layers' own.
    let stats = st.json("stats");
    let text = String::from_utf8(st.strata(&["stats"]).stdout).unwrap();
    let netstat = stats["netstat"].as_object().expect("netstat in stats");
    for name in [
        "IpInReceives",
        "IcmpInEchos",
        "TcpActiveOpens",
        "UdpInDatagrams",
    ] {
        assert!(netstat.contains_key(name), "{name}");
        assert!(text.contains(name), "strata stats shows {name}");
    }

    let before = parse(&metrics_once(&st));
    let echos = sample(&before, "strata_netstat_IcmpInEchos_total");
    let replies = sample(&before, "strata_netstat_IcmpOutEchoReps_total");
    let r = ping(&ns, &["-c", "100", "-i", "0.01", "-W", "5", STACK_IP]);
    assert_eq!(r.received, 100, "{}", r.text);
    // Counters are published before a layer sleeps: wait for them.
    let mut after = Vec::new();
    wait_until("the pings counted", Duration::from_secs(10), || {
        after = parse(&metrics_once(&st));
        sample(&after, "strata_netstat_IcmpOutEchoReps_total") >= replies + 100
    });
    assert_eq!(
        sample(&after, "strata_netstat_IcmpInEchos_total"),
        echos + 100
    );
    assert_eq!(
        sample(&after, "strata_netstat_IcmpOutEchoReps_total"),
        replies + 100
    );
    for family in [
        "strata_layer_events_total",
        "strata_layer_up",
        "strata_layer_restarts_total",
        "strata_interface_events_total",
        "strata_ring_used",
        "strata_pool_buffers",
    ] {
        assert!(
            after.iter().any(|l| l.starts_with(&format!("{family}{{"))),
            "no {family}"
        );
    }
    assert!(after
        .iter()
        .any(|l| l.starts_with("strata_layer_up{layer=\"ipd\"} 1")));

    // Served over HTTP on the namespace's own loopback, to curl.
    let listen = "127.0.0.1:19477";
    let mut server = Bg::new(
        ns.cmd(bin("strata").to_str().unwrap())
            .args(["metrics", "--instance", &st.instance, "--listen", listen])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("strata metrics --listen"),
    );
    let url = format!("http://{listen}/metrics");
    let mut served = String::new();
    wait_until("the metrics server", Duration::from_secs(10), || {
        assert!(server.alive(), "strata metrics --listen exited");
        let o = ns.run(&["curl", "-sS", "--fail", "-i", &url]);
        served = String::from_utf8_lossy(&o.stdout).into_owned();
        o.status.success()
    });
    let (head, body) = served.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let samples = parse(body);
    assert!(sample(&samples, "strata_netstat_IcmpInEchos_total") >= echos + 100);
}
