//! `strata metrics`: the instance's counters in the OpenMetrics text
//! format (which Prometheus scrapes), once to stdout or served over HTTP
//! on the host's own network (`--listen ADDR`). Each scrape asks the
//! launcher for `stats` and `status` afresh; nothing is kept between
//! scrapes, so a restarted exporter or launcher loses nothing.
//!
//! Families, all prefixed `strata_`:
//! - `netstat_<Name>`: the standard counters under their Linux names
//!   (`strata_netstat_IcmpInEchos_total`), from [`crate::netstat`];
//! - `layer_events{layer,counter}`: every layer's own counters;
//!   `layer_level{layer,name}` those that are levels (filterd's
//!   `ct_entries`);
//! - `layer_up`, `layer_restarts`, `layer_reclaimed_buffers`,
//!   `layer_last_recovery_seconds`, `layer_wakeups` per layer;
//! - `interface_events{interface,counter}` and
//!   `interface_qdisc_backlog{interface}`;
//! - `ring_used` and `ring_size{from,to}`;
//! - `pool_buffers{class,state}` and `pool_refused{reason}`.

use crate::control;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::sync::atomic::AtomicU64;

/// Layer counters that are levels, not totals.
const LEVELS: &[&str] = &["ct_entries"];
/// Derived ratios `strata stats` adds to a layer's counters; left out
/// (a scraper computes them from the totals).
const DERIVED: &[&str] = &["packets_per_wakeup", "syscalls_per_packet"];

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

/// The OpenMetrics text for `instance` now.
pub fn scrape(instance: &str) -> Result<String, String> {
    let stats = control::request(instance, serde_json::json!({"cmd": "stats"}))?;
    let status = control::request(instance, serde_json::json!({"cmd": "status"}))?;
    render(&stats, &status)
}

/// A new metric family registered in `reg`.
fn family<F>(reg: &mut Registry, name: &str, help: &str) -> F
where
    F: Default + Clone + prometheus_client::metrics::TypedMetric,
    F: prometheus_client::encoding::EncodeMetric + Send + Sync + std::fmt::Debug + 'static,
{
    let f = F::default();
    reg.register(name, help, f.clone());
    f
}

/// Renders `strata stats` and `strata status` answers.
pub fn render(stats: &Value, status: &Value) -> Result<String, String> {
    let mut reg = Registry::with_prefix("strata");
    let mut add_counter = |name: &str, help: &str| family::<Counters>(&mut reg, name, help);
    let layer_events = add_counter("layer_events", "A layer's own counter");
    let restarts = add_counter("layer_restarts", "Restarts of a layer");
    let reclaimed = add_counter(
        "layer_reclaimed_buffers",
        "Buffers reclaimed from a layer's dead instances",
    );
    let wakeups = add_counter("layer_wakeups", "Kicks that woke a layer");
    let iface_events = add_counter("interface_events", "An interface's counter");
    let refused = add_counter("pool_refused", "Buffer operations the pool refused");
    if let Some(layers) = stats["layers"].as_object() {
        for (name, n) in crate::netstat::from_layers(layers) {
            let c: Counter = Counter::default();
            c.inc_by(n);
            reg.register(
                format!("netstat_{name}"),
                format!("{name}, as Linux counts it (nstat)"),
                c,
            );
        }
    }
    let mut add_gauge = |name: &str, help: &str| family::<Gauges>(&mut reg, name, help);
    let layer_level = add_gauge("layer_level", "A layer's counter that is a level");
    let up = add_gauge("layer_up", "1 while a layer's instance serves");
    let recovery = add_gauge(
        "layer_last_recovery_seconds",
        "A layer's last restart, from its death to its new instance serving",
    );
    let backlog = add_gauge("interface_qdisc_backlog", "Frames held by the qdisc");
    let ring_used = add_gauge("ring_used", "Handles waiting in a ring");
    let ring_size = add_gauge("ring_size", "Slots of a ring");
    let pool = add_gauge("pool_buffers", "Packet buffers by class and state");

    for (layer, counters) in stats["layers"].as_object().into_iter().flatten() {
        for (k, v) in counters.as_object().into_iter().flatten() {
            if DERIVED.contains(&k.as_str()) {
                continue;
            }
            let labels = vec![("layer", layer.clone()), ("counter", k.clone())];
            if LEVELS.contains(&k.as_str()) {
                let labels = vec![("layer", layer.clone()), ("name", k.clone())];
                layer_level
                    .get_or_create(&labels)
                    .set(v.as_f64().unwrap_or(0.0));
            } else if let Some(n) = v.as_u64() {
                layer_events.get_or_create(&labels).inc_by(n);
            }
        }
    }
    for l in status["layers"].as_array().into_iter().flatten() {
        let labels = vec![("layer", l["layer"].as_str().unwrap_or("?").to_string())];
        let serving = l["state"] == "running";
        up.get_or_create(&labels)
            .set(if serving { 1.0 } else { 0.0 });
        restarts
            .get_or_create(&labels)
            .inc_by(l["restarts"].as_u64().unwrap_or(0));
        reclaimed
            .get_or_create(&labels)
            .inc_by(l["reclaimed_buffers"].as_u64().unwrap_or(0));
        wakeups
            .get_or_create(&labels)
            .inc_by(l["wakeups"].as_u64().unwrap_or(0));
        if let Some(ms) = l["last_recovery_ms"]["total"].as_f64() {
            recovery.get_or_create(&labels).set(ms / 1e3);
        }
    }
    for i in stats["interfaces"].as_array().into_iter().flatten() {
        let name = i["name"].as_str().unwrap_or("?").to_string();
        for (k, v) in i["counters"].as_object().into_iter().flatten() {
            let n = v.as_u64().unwrap_or(0);
            if k == "qdisc_backlog" {
                let labels = vec![("interface", name.clone())];
                backlog.get_or_create(&labels).set(n as f64);
            } else {
                let labels = vec![("interface", name.clone()), ("counter", k.clone())];
                iface_events.get_or_create(&labels).inc_by(n);
            }
        }
    }
    for r in status["rings"].as_array().into_iter().flatten() {
        let labels = vec![
            ("from", r["from"].as_str().unwrap_or("?").to_string()),
            ("to", r["to"].as_str().unwrap_or("?").to_string()),
        ];
        let get = |k: &str| r[k].as_f64().unwrap_or(0.0);
        ring_used.get_or_create(&labels).set(get("len"));
        ring_size.get_or_create(&labels).set(get("size"));
    }
    let p = &stats["pool"];
    let get = |k: &str| p[k].as_f64().unwrap_or(0.0);
    for class in ["small", "large"] {
        let free = get(&format!("{class}_free"));
        let total = get(&format!("{class}_total"));
        for (state, n) in [("free", free), ("in_use", total - free)] {
            let labels = vec![("class", class.to_string()), ("state", state.to_string())];
            pool.get_or_create(&labels).set(n);
        }
    }
    for (reason, key) in [
        ("stale", "stale_refused"),
        ("double_free", "double_free_refused"),
    ] {
        let labels = vec![("reason", reason.to_string())];
        refused
            .get_or_create(&labels)
            .inc_by(p[key].as_u64().unwrap_or(0));
    }
    let mut text = String::new();
    encode(&mut text, &reg).map_err(|e| format!("encoding the metrics: {e}"))?;
    Ok(text)
}

/// OpenMetrics' content type, as Prometheus asks for it.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` (any path) on `listen` until killed: each
/// request is one scrape. A launcher that is not running answers 503
/// with the reason, so the scraper records the target as down.
pub fn serve(instance: &str, listen: &str) -> Result<(), String> {
    let server = tiny_http::Server::http(listen).map_err(|e| format!("listen on {listen}: {e}"))?;
    eprintln!("strata metrics: serving instance {instance:?} on http://{listen}/metrics");
    for req in server.incoming_requests() {
        let header = |k: &str, v: &str| {
            tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("a valid header")
        };
        let resp = match scrape(instance) {
            Ok(text) => tiny_http::Response::from_string(text)
                .with_header(header("Content-Type", CONTENT_TYPE)),
            Err(e) => tiny_http::Response::from_string(format!("{e}\n"))
                .with_status_code(503)
                .with_header(header("Content-Type", "text/plain; charset=utf-8")),
        };
        // A scraper that went away before the answer is its loss only.
        let _ = req.respond(resp);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counters_levels_and_status_become_families() {
        let stats = json!({
            "layers": {
                "ipd": {"icmp_in_echo_requests": 100, "packets_per_wakeup": 1.5},
                "filterd": {"ct_entries": 3},
            },
            "interfaces": [{"name": "strata0", "counters": {"rx_packets": 9, "qdisc_backlog": 2}}],
            "pool": {"small_total": 10, "small_free": 7, "large_total": 2, "large_free": 2,
                     "stale_refused": 0, "double_free_refused": 1},
        });
        let status = json!({
            "layers": [{"layer": "ipd", "state": "running", "restarts": 2,
                        "reclaimed_buffers": 4, "wakeups": 5,
                        "last_recovery_ms": {"total": 3.5}}],
            "rings": [{"from": "ipd", "to": "tcpd", "len": 1, "size": 1024}],
        });
        let t = render(&stats, &status).unwrap();
        for line in [
            "strata_netstat_IcmpInEchos_total 100",
            "strata_layer_events_total{layer=\"ipd\",counter=\"icmp_in_echo_requests\"} 100",
            "strata_layer_level{layer=\"filterd\",name=\"ct_entries\"} 3.0",
            "strata_layer_up{layer=\"ipd\"} 1.0",
            "strata_layer_restarts_total{layer=\"ipd\"} 2",
            "strata_layer_last_recovery_seconds{layer=\"ipd\"} 0.0035",
            "strata_interface_events_total{interface=\"strata0\",counter=\"rx_packets\"} 9",
            "strata_interface_qdisc_backlog{interface=\"strata0\"} 2.0",
            "strata_ring_size{from=\"ipd\",to=\"tcpd\"} 1024.0",
            "strata_pool_buffers{class=\"small\",state=\"in_use\"} 3.0",
            "strata_pool_refused_total{reason=\"double_free\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "no {line:?} in:\n{t}");
        }
        assert!(!t.contains("packets_per_wakeup"), "derived ratios left out");
        assert!(t.ends_with("# EOF\n"));
    }
}
