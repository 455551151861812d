//! `strata top`: a live view of a running instance, refreshed every
//! interval: per interface packets and bits per second, per layer its
//! state, CPU, handles in and out per second, wake-ups per second and
//! packets per wake-up, restarts; ring occupancy and pool use. Rates are
//! differences of two samples of `strata stats` and `strata status` (and
//! each layer's `/proc/PID/stat` for CPU), so the view costs the stack
//! two control requests per refresh and nothing on the data path.
//! `--once` prints one view (`--json` for scripts) after one interval.

use crate::control;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// One look at the instance.
struct Sample {
    at: Instant,
    stats: Value,
    status: Value,
    /// CPU time of each layer's process (by label), in clock ticks.
    cpu: Vec<(String, u64)>,
}

fn sample(instance: &str) -> Result<Sample, String> {
    let stats = control::request(instance, json!({"cmd": "stats"}))?;
    let status = control::request(instance, json!({"cmd": "status"}))?;
    let cpu = status["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some((
                l["layer"].as_str()?.to_string(),
                cpu_ticks(l["pid"].as_u64()?)?,
            ))
        })
        .collect();
    Ok(Sample {
        at: Instant::now(),
        stats,
        status,
        cpu,
    })
}

/// utime + stime of process `pid`, in clock ticks.
fn cpu_ticks(pid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold blanks and
    // parentheses) start after its last ')': utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after it.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split_whitespace().skip(11);
    Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
}

/// Clock ticks per second.
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf takes no pointers.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The rates between two samples, as JSON (what `--once --json` prints
/// and the views are drawn from).
fn rates(a: &Sample, b: &Sample) -> Value {
    let dt = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
    let counter =
        |s: &Sample, layer: &str, k: &str| s.stats["layers"][layer][k].as_u64().unwrap_or(0);
    let ticks = ticks_per_s();
    let layers: Vec<Value> = b.status["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let name = l["layer"].as_str().unwrap_or("?");
            let d = |k: &str| counter(b, name, k).saturating_sub(counter(a, name, k));
            let cpu = |s: &Sample| s.cpu.iter().find(|(n, _)| n == name).map(|c| c.1);
            // A restart between the samples starts the count again.
            let cpu_pct = match (cpu(a), cpu(b)) {
                (Some(x), Some(y)) if y >= x => (y - x) as f64 / ticks / dt * 100.0,
                _ => 0.0,
            };
            let wakeups = d("loop_wakeups");
            json!({
                "layer": name,
                "state": crate::control::shown_state(l),
                "cpu_percent": cpu_pct,
                "in_per_s": d("loop_handles_in") as f64 / dt,
                "out_per_s": d("loop_handles_out") as f64 / dt,
                "wakeups_per_s": wakeups as f64 / dt,
                "packets_per_wakeup": if wakeups == 0 { 0.0 } else { d("loop_handles_in") as f64 / wakeups as f64 },
                "restarts": l["restarts"].as_u64().unwrap_or(0),
            })
        })
        .collect();
    let ifaces: Vec<Value> = b.stats["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let name = i["name"].as_str().unwrap_or("?");
            let before = a.stats["interfaces"]
                .as_array()
                .and_then(|v| v.iter().find(|x| x["name"] == name));
            let get =
                |s: Option<&Value>, k: &str| s.and_then(|s| s["counters"][k].as_u64()).unwrap_or(0);
            let r = |k: &str| per_s(get(before, k), get(Some(i), k));
            json!({
                "interface": name,
                "rx_packets_per_s": r("rx_packets"),
                "rx_bits_per_s": 8.0 * r("rx_bytes"),
                "tx_packets_per_s": r("tx_packets"),
                "tx_bits_per_s": 8.0 * r("tx_bytes"),
            })
        })
        .collect();
    let rings: Vec<Value> = b.status["rings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| json!({"from": r["from"], "to": r["to"], "used": r["len"], "size": r["size"]}))
        .collect();
    let p = &b.stats["pool"];
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    json!({
        "instance": b.status["instance"],
        "uptime_s": b.status["uptime_s"],
        "interval_s": dt,
        "interfaces": ifaces,
        "layers": layers,
        "rings": rings,
        "pool": {
            "small_in_use": n("small_total").saturating_sub(n("small_free")),
            "small_total": n("small_total"),
            "large_in_use": n("large_total").saturating_sub(n("large_free")),
            "large_total": n("large_total"),
        },
    })
}

/// The view as lines of at most 80 columns: 23 for one interface.
fn lines(v: &Value, interactive: bool) -> Vec<String> {
    let f = |x: &Value| x.as_f64().unwrap_or(0.0);
    let mut out = vec![format!(
        "strata top  instance {}  up {:.0}s  every {:.1}s{}",
        v["instance"].as_str().unwrap_or("?"),
        f(&v["uptime_s"]),
        f(&v["interval_s"]),
        if interactive { "  (q quits)" } else { "" }
    )];
    let p = &v["pool"];
    out.push(format!(
        "pool: small {}/{} in use, large {}/{}",
        p["small_in_use"], p["small_total"], p["large_in_use"], p["large_total"]
    ));
    out.push(String::new());
    out.push(format!(
        "{:<12} {:>11} {:>11} {:>11} {:>11}",
        "INTERFACE", "RX pkt/s", "RX Mbit/s", "TX pkt/s", "TX Mbit/s"
    ));
    for i in v["interfaces"].as_array().into_iter().flatten() {
        out.push(format!(
            "{:<12} {:>11.0} {:>11.1} {:>11.0} {:>11.1}",
            i["interface"].as_str().unwrap_or("?"),
            f(&i["rx_packets_per_s"]),
            f(&i["rx_bits_per_s"]) / 1e6,
            f(&i["tx_packets_per_s"]),
            f(&i["tx_bits_per_s"]) / 1e6
        ));
    }
    out.push(String::new());
    out.push(format!(
        "{:<9} {:<8} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "LAYER", "STATE", "CPU%", "IN/s", "OUT/s", "WAKE/s", "PKT/WAKE", "RESTARTS"
    ));
    for l in v["layers"].as_array().into_iter().flatten() {
        out.push(format!(
            "{:<9} {:<8} {:>6.1} {:>9.0} {:>9.0} {:>8.0} {:>8.1} {:>8}",
            l["layer"].as_str().unwrap_or("?"),
            l["state"].as_str().unwrap_or("?"),
            f(&l["cpu_percent"]),
            f(&l["in_per_s"]),
            f(&l["out_per_s"]),
            f(&l["wakeups_per_s"]),
            f(&l["packets_per_wakeup"]),
            l["restarts"].as_u64().unwrap_or(0)
        ));
    }
    out.push(String::new());
    out.push("RINGS (used/size)".into());
    let rings: Vec<String> = v["rings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{:<22}{:>6}/{:<6}",
                format!(
                    "{} -> {}",
                    r["from"].as_str().unwrap_or("?"),
                    r["to"].as_str().unwrap_or("?")
                ),
                r["used"],
                r["size"]
            )
        })
        .collect();
    for pair in rings.chunks(2) {
        out.push(pair.join("   "));
    }
    out
}

/// `strata top [--once] [--interval S]`.
pub fn run(instance: &str, once: bool, as_json: bool, interval: Duration) -> Result<(), String> {
    let mut a = sample(instance)?;
    if once {
        std::thread::sleep(interval);
        let v = rates(&a, &sample(instance)?);
        if as_json {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            for l in lines(&v, false) {
                println!("{l}");
            }
        }
        return Ok(());
    }
    let mut term = ratatui::init();
    let res = (|| {
        let mut next = Instant::now() + interval.min(Duration::from_millis(200));
        loop {
            if wait_for_quit(next)? {
                return Ok(());
            }
            let b = sample(instance)?;
            let text = lines(&rates(&a, &b), true).join("\n");
            a = b;
            term.draw(|f| f.render_widget(ratatui::widgets::Paragraph::new(text), f.area()))
                .map_err(|e| e.to_string())?;
            next = Instant::now() + interval;
        }
    })();
    ratatui::restore();
    res
}

/// Waits until `until` for a key: true for q, Q, Esc or Ctrl-C.
fn wait_for_quit(until: Instant) -> Result<bool, String> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || !event::poll(left).map_err(|e| e.to_string())? {
            return Ok(false);
        }
        if let Event::Key(k) = event::read().map_err(|e| e.to_string())? {
            let ctrl_c =
                k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
            if k.kind == KeyEventKind::Press
                && (matches!(k.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) || ctrl_c)
            {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_of(stats: Value, status: Value, cpu: u64, at: Instant) -> Sample {
        Sample {
            at,
            stats,
            status,
            cpu: vec![("ipd".into(), cpu)],
        }
    }

    #[test]
    fn rates_are_differences_per_second_and_the_view_fits_80_columns() {
        let t0 = Instant::now();
        let status = json!({
            "instance": "x", "uptime_s": 5.0,
            "layers": [{"layer": "ipd", "state": "running", "aside": "in", "restarts": 1}],
            "rings": [{"from": "ipd", "to": "tcpd", "len": 3, "size": 1024}],
        });
        let stats = |n: u64| {
            json!({
                "layers": {"ipd": {"loop_handles_in": n, "loop_handles_out": n, "loop_wakeups": n / 10}},
                "interfaces": [{"name": "strata0", "counters": {"rx_packets": n, "rx_bytes": 100 * n, "tx_packets": 0, "tx_bytes": 0}}],
                "pool": {"small_total": 4096, "small_free": 4000, "large_total": 1024, "large_free": 1024},
            })
        };
        let a = sample_of(stats(1000), status.clone(), 10, t0);
        let b = sample_of(
            stats(3000),
            status,
            10 + ticks_per_s() as u64 / 2,
            t0 + Duration::from_secs(2),
        );
        let v = rates(&a, &b);
        let l = &v["layers"][0];
        assert_eq!(l["in_per_s"], 1000.0);
        assert_eq!(l["wakeups_per_s"], 100.0);
        assert_eq!(l["packets_per_wakeup"], 10.0);
        assert!((l["cpu_percent"].as_f64().unwrap() - 25.0).abs() < 1e-6);
        assert_eq!(v["interfaces"][0]["rx_bits_per_s"], 8.0 * 100.0 * 1000.0);
        assert_eq!(v["pool"]["small_in_use"], 96);
        for line in lines(&v, true) {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
    }
}
