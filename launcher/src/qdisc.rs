//! `strata qdisc`: network faults and a rate limit per interface, set at
//! run time (the kernel here has no netem). The CLI turns words into a
//! control request; the launcher writes the settings into the fabric
//! ([`strata_ipc::qdisc_cfg`]), where netdevd picks them up.
//!
//! ```text
//! strata qdisc IFACE [ingress|egress|both] [loss P%] [duplicate P%] [reorder P%]
//!                    [delay T [jitter T]] [rate RATE] [burst BYTES] [seed N]
//! strata qdisc IFACE [ingress|egress|both] clear
//! strata qdisc [IFACE] show
//! ```
//!
//! Setting replaces the whole configuration of the direction(s) named
//! (egress when none is), as `tc qdisc replace` does: what is not given is
//! off. `clear` without a direction clears both.

use serde_json::{json, Map, Value};
use strata_ipc::qdisc_cfg::{Direction, QdiscSettings, MAX_DELAY_US, PPM};
use strata_ipc::{Fabric, LayerId};

/// Words accepted after the interface, for error messages.
const EXPECTED: &str =
    "expected loss, duplicate, reorder, delay, jitter, rate, burst, seed, ingress, egress, both, clear or show";

/// What the words ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QdiscCmd {
    /// Replace the settings of these directions.
    Set(Vec<Direction>, QdiscSettings),
    /// Turn everything off in these directions.
    Clear(Vec<Direction>),
    /// Print the settings.
    Show,
}

fn percent(word: &str, v: Option<&String>) -> Result<u32, String> {
    let bad = |v: &str| format!("{word} {v:?}: expected a percentage such as 2%, 0.5% or 2");
    let Some(v) = v else {
        return Err(format!(
            "{word}: expected a percentage after it, such as 2%"
        ));
    };
    let num = v.strip_suffix('%').unwrap_or(v);
    if num.is_empty()
        || !num.chars().all(|c| c.is_ascii_digit() || c == '.')
        || num.matches('.').count() > 1
    {
        return Err(bad(v));
    }
    let p: f64 = num.parse().map_err(|_| bad(v))?;
    if p > 100.0 {
        return Err(format!("{word} {v:?}: above 100%"));
    }
    Ok(((p * 10_000.0).round() as u32).min(PPM))
}

/// Splits "12.5ms" into (12.5, "ms"); the number must be plain decimal.
fn number_unit(v: &str) -> Option<(f64, String)> {
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (n, u) = v.split_at(end);
    if n.is_empty() || n.matches('.').count() > 1 {
        return None;
    }
    Some((n.parse().ok()?, u.to_ascii_lowercase()))
}

fn duration_us(word: &str, v: Option<&String>) -> Result<u32, String> {
    let Some(v) = v else {
        return Err(format!(
            "{word}: expected a time after it, in ms unless given (100, 2.5ms, 500us, 1s)"
        ));
    };
    let bad = || format!("{word} {v:?}: expected a time such as 100 (ms), 2.5ms, 500us or 1s");
    let (n, u) = number_unit(v).ok_or_else(bad)?;
    let us = match u.as_str() {
        "" | "ms" => n * 1e3,
        "us" | "µs" => n,
        "s" => n * 1e6,
        _ => return Err(bad()),
    };
    if us > MAX_DELAY_US as f64 {
        return Err(format!("{word} {v:?}: above one minute"));
    }
    Ok(us.round() as u32)
}

fn rate_bps(word: &str, v: Option<&String>) -> Result<u64, String> {
    let units = "bit, kbit, mbit, gbit, tbit (bits/s), kibit, mibit, gibit, \
                 or bps, kbps, mbps, gbps (bytes/s, as tc)";
    let Some(v) = v else {
        return Err(format!(
            "{word}: expected a rate after it, such as 100mbit, 1gbit or 500kbit"
        ));
    };
    let (n, u) = number_unit(v).ok_or_else(|| {
        format!("{word} {v:?}: expected a rate such as 100mbit, 1gbit or 500kbit")
    })?;
    let mult: f64 = match u.as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "kibit" => 1024.0,
        "mibit" => 1024.0 * 1024.0,
        "gibit" => 1024.0 * 1024.0 * 1024.0,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        "" => return Err(format!("{word} {v:?}: give a unit: {units}")),
        _ => return Err(format!("{word} {v:?}: unknown unit {u:?}: {units}")),
    };
    let bps = (n * mult).round();
    if !(1.0..=1e15).contains(&bps) {
        return Err(format!("{word} {v:?}: out of range (1bit to 1000tbit)"));
    }
    Ok(bps as u64)
}

fn bytes(word: &str, v: Option<&String>) -> Result<u32, String> {
    let Some(v) = v else {
        return Err(format!(
            "{word}: expected a size in bytes after it, such as 32k or 65536"
        ));
    };
    let bad = || format!("{word} {v:?}: expected a size in bytes such as 1500, 32k or 1m");
    let (n, u) = number_unit(v).ok_or_else(bad)?;
    let mult = match u.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let b = (n * mult).round();
    if b < 1.0 || b > u32::MAX as f64 {
        return Err(format!("{word} {v:?}: out of range (1 byte to 4 GiB)"));
    }
    Ok(b as u32)
}

fn seed(word: &str, v: Option<&String>) -> Result<u64, String> {
    let Some(v) = v else {
        return Err(format!("{word}: expected a number after it"));
    };
    let r = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    r.map_err(|_| format!("{word} {v:?}: expected a number (decimal or 0x hex)"))
}

/// Parses the words after the interface name.
pub fn parse(words: &[String]) -> Result<QdiscCmd, String> {
    let mut s = QdiscSettings::default();
    let mut dirs: Vec<Direction> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut action: Option<&str> = None;
    let mut it = words.iter().peekable();
    while let Some(w) = it.next() {
        let word = w.to_ascii_lowercase();
        let key: &str = match word.as_str() {
            "loss" => "loss",
            "duplicate" => "duplicate",
            "reorder" => "reorder",
            "delay" => "delay",
            "jitter" => "jitter",
            "rate" => "rate",
            "burst" => "burst",
            "seed" => "seed",
            "ingress" => "ingress",
            "egress" => "egress",
            "both" => "both",
            "clear" => "clear",
            "show" => "show",
            _ => return Err(format!("{w:?}: {EXPECTED}")),
        };
        if seen.contains(&key) {
            return Err(format!("{w:?} given twice"));
        }
        seen.push(key);
        match key {
            "loss" => s.loss_ppm = percent(key, it.next())?,
            "duplicate" => s.duplicate_ppm = percent(key, it.next())?,
            "reorder" => s.reorder_ppm = percent(key, it.next())?,
            "delay" => s.delay_us = duration_us(key, it.next())?,
            "jitter" => s.jitter_us = duration_us(key, it.next())?,
            "rate" => s.rate_bps = rate_bps(key, it.next())?,
            "burst" => s.burst_bytes = bytes(key, it.next())?,
            "seed" => s.seed = seed(key, it.next())?,
            "ingress" => dirs.push(Direction::Ingress),
            "egress" => dirs.push(Direction::Egress),
            "both" => dirs.extend(Direction::ALL),
            _ => action = Some(key),
        }
    }
    let settings_given = seen
        .iter()
        .any(|k| !matches!(*k, "ingress" | "egress" | "both" | "clear" | "show"));
    dirs.sort_by_key(|d| d.index());
    dirs.dedup();
    match action {
        Some("show") if settings_given || !dirs.is_empty() || seen.len() > 1 => {
            Err("show takes nothing else".into())
        }
        Some("show") => Ok(QdiscCmd::Show),
        Some(_) if settings_given => {
            Err("clear takes no settings, only ingress, egress or both".into())
        }
        Some(_) => Ok(QdiscCmd::Clear(if dirs.is_empty() {
            Direction::ALL.to_vec()
        } else {
            dirs
        })),
        None if !settings_given && dirs.is_empty() => Ok(QdiscCmd::Show),
        None if !settings_given => Err(format!(
            "nothing to set: give loss, duplicate, reorder, delay, rate or burst, or clear; {EXPECTED}"
        )),
        None => {
            if s.jitter_us > 0 && s.delay_us == 0 {
                return Err("jitter needs a delay (delay 100 jitter 10)".into());
            }
            if s.burst_bytes > 0 && s.rate_bps == 0 {
                return Err("burst needs a rate (rate 1mbit burst 32k)".into());
            }
            if s.jitter_us > s.delay_us {
                return Err(format!(
                    "jitter {}ms is larger than delay {}ms",
                    s.jitter_us as f64 / 1000.0,
                    s.delay_us as f64 / 1000.0
                ));
            }
            Ok(QdiscCmd::Set(
                if dirs.is_empty() {
                    vec![Direction::Egress]
                } else {
                    dirs
                },
                s,
            ))
        }
    }
}

/// The control request for `cmd` on `iface` (None: every interface, for
/// show).
pub fn request(iface: Option<&str>, cmd: &QdiscCmd) -> Value {
    let mut m = Map::new();
    m.insert("cmd".into(), json!("qdisc"));
    if let Some(i) = iface {
        m.insert("iface".into(), json!(i));
    }
    let dir_json = |d: &[Direction]| match d {
        [one] => json!(one.name()),
        _ => json!("both"),
    };
    match cmd {
        QdiscCmd::Show => {
            m.insert("action".into(), json!("show"));
        }
        QdiscCmd::Clear(d) => {
            m.insert("action".into(), json!("clear"));
            m.insert("direction".into(), dir_json(d));
        }
        QdiscCmd::Set(d, s) => {
            m.insert("action".into(), json!("set"));
            m.insert("direction".into(), dir_json(d));
            if let Value::Object(f) = serde_json::to_value(s).unwrap_or_default() {
                m.extend(f);
            }
        }
    }
    Value::Object(m)
}

// ------------------------------------------------------------- launcher side

const SETTING_KEYS: [&str; 8] = [
    "loss_ppm",
    "duplicate_ppm",
    "reorder_ppm",
    "delay_us",
    "jitter_us",
    "rate_bps",
    "burst_bytes",
    "seed",
];

fn find_iface(f: &Fabric, name: &str) -> Result<u8, String> {
    let n = f.params().n_ifaces as u8;
    (0..n).find(|&i| f.iface_name(i) == name).ok_or_else(|| {
        let names: Vec<String> = (0..n).map(|i| f.iface_name(i)).collect();
        format!("no interface {name:?} (have: {})", names.join(", "))
    })
}

fn iface_json(f: &Fabric, i: u8) -> Value {
    let t = f.qdisc_settings();
    let mut m = Map::new();
    m.insert("index".into(), json!(i));
    m.insert("name".into(), json!(f.iface_name(i)));
    for d in Direction::ALL {
        let (s, g) = t.load(i, d).unwrap_or_default();
        let mut v = serde_json::to_value(s).unwrap_or_default();
        v["generation"] = json!(g);
        v["off"] = json!(s.is_off());
        m.insert(d.name().into(), v);
    }
    Value::Object(m)
}

/// netdevd's fault counters (totals over interfaces).
fn counters_json(f: &Fabric) -> Value {
    let mut m = Map::new();
    for (k, v) in f.counters(LayerId::NETDEVD) {
        if k.contains("fault")
            || k.contains("delay_queue")
            || k.contains("rate_limited")
            || k == "ingress_drop_qdisc"
            || k == "qdisc_reloads"
        {
            m.insert(k, json!(v));
        }
    }
    Value::Object(m)
}

fn handle_inner(f: &Fabric, req: &Value) -> Result<Value, String> {
    let obj = req.as_object().ok_or("request is not an object")?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "cmd" | "iface" | "action" | "direction")
            && !SETTING_KEYS.contains(&k.as_str())
        {
            return Err(format!(
                "qdisc: unknown field {k:?} (iface, action, direction, {})",
                SETTING_KEYS.join(", ")
            ));
        }
    }
    let action = obj.get("action").and_then(Value::as_str).unwrap_or("set");
    let iface = match obj.get("iface") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(find_iface(f, s)?),
        Some(v) => return Err(format!("qdisc: iface {v}: expected a name")),
    };
    let dirs = match obj.get("direction").and_then(Value::as_str) {
        None => None,
        Some("egress") => Some(vec![Direction::Egress]),
        Some("ingress") => Some(vec![Direction::Ingress]),
        Some("both") => Some(Direction::ALL.to_vec()),
        Some(d) => {
            return Err(format!(
                "qdisc: direction {d:?}: expected egress, ingress or both"
            ))
        }
    };
    let settings = match action {
        "show" => None,
        "clear" => Some(QdiscSettings::default()),
        "set" => {
            let s: QdiscSettings = serde_json::from_value(Value::Object(
                obj.iter()
                    .filter(|(k, _)| SETTING_KEYS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ))
            .map_err(|e| format!("qdisc: {e}"))?;
            s.validate().map_err(|e| format!("qdisc: {e}"))?;
            Some(s)
        }
        a => return Err(format!("qdisc: action {a:?}: expected set, clear or show")),
    };
    if let Some(s) = settings {
        let i = iface.ok_or("qdisc: which interface? (\"iface\")")?;
        let dirs = dirs.unwrap_or_else(|| {
            if action == "clear" {
                Direction::ALL.to_vec()
            } else {
                vec![Direction::Egress]
            }
        });
        let t = f.qdisc_settings();
        for d in dirs {
            t.store(i, d, &s)
                .ok_or_else(|| format!("qdisc: interface {i} has no settings slot"))?;
        }
    }
    let ifaces: Vec<Value> = match iface {
        Some(i) => vec![iface_json(f, i)],
        None => (0..f.params().n_ifaces as u8)
            .map(|i| iface_json(f, i))
            .collect(),
    };
    Ok(json!({"interfaces": ifaces, "counters": counters_json(f)}))
}

/// The launcher's answer to a `qdisc` control request.
pub fn handle(f: &Fabric, req: &Value) -> Value {
    match handle_inner(f, req) {
        Ok(v) => json!({"ok": true, "data": v}),
        Err(e) => json!({"ok": false, "error": e}),
    }
}

// ------------------------------------------------------------------ output

/// Prints the answer to a qdisc request as a table.
pub fn print(v: &Value) {
    for i in v["interfaces"].as_array().into_iter().flatten() {
        for d in Direction::ALL {
            let s: QdiscSettings = serde_json::from_value(i[d.name()].clone()).unwrap_or_default();
            println!("{} {}: {}", i["name"].as_str().unwrap_or("?"), d.name(), s);
        }
    }
    if let Some(m) = v["counters"].as_object() {
        let nonzero: Vec<String> = m
            .iter()
            .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !nonzero.is_empty() {
            println!("netdevd: {}", nonzero.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<QdiscCmd, String> {
        let w: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&w)
    }

    fn set(s: &str) -> QdiscSettings {
        match p(s) {
            Ok(QdiscCmd::Set(_, v)) => v,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn percentages_accept_decimals_and_the_sign() {
        assert_eq!(set("loss 2%").loss_ppm, 20_000);
        assert_eq!(set("loss 0.5%").loss_ppm, 5_000);
        assert_eq!(set("loss 2").loss_ppm, 20_000);
        assert_eq!(set("loss 100%").loss_ppm, PPM);
        assert_eq!(set("duplicate 0.001%").duplicate_ppm, 10);
        for bad in ["loss -1%", "loss abc", "loss 1e3", "loss 1.2.3%", "loss %"] {
            let e = p(bad).unwrap_err();
            assert!(e.contains("percentage"), "{bad}: {e}");
        }
        assert!(p("loss 101%").unwrap_err().contains("above 100%"));
        assert!(p("loss").unwrap_err().contains("percentage after it"));
    }

    #[test]
    fn a_bad_word_is_named() {
        let e = p("los 5%").unwrap_err();
        assert!(e.starts_with("\"los\": expected loss, duplicate"), "{e}");
        let e = p("loss 5% delya 10").unwrap_err();
        assert!(e.starts_with("\"delya\""), "{e}");
        assert!(p("loss 1% loss 2%").unwrap_err().contains("twice"));
    }

    #[test]
    fn times_rates_and_sizes() {
        let s = set("delay 100 jitter 10");
        assert_eq!((s.delay_us, s.jitter_us), (100_000, 10_000));
        assert_eq!(set("delay 2.5ms").delay_us, 2_500);
        assert_eq!(set("delay 500us").delay_us, 500);
        assert_eq!(set("delay 1s").delay_us, 1_000_000);
        assert!(p("delay 2h").unwrap_err().contains("time"));
        assert!(p("delay 61s").unwrap_err().contains("one minute"));
        assert_eq!(set("rate 100mbit").rate_bps, 100_000_000);
        assert_eq!(set("rate 1gbit").rate_bps, 1_000_000_000);
        assert_eq!(set("rate 500kbit").rate_bps, 500_000);
        assert_eq!(set("rate 1.5Mbit").rate_bps, 1_500_000);
        assert_eq!(set("rate 10mbps").rate_bps, 80_000_000);
        assert!(p("rate 100").unwrap_err().contains("give a unit"));
        assert!(p("rate 5furlongs").unwrap_err().contains("unknown unit"));
        let s = set("rate 1mbit burst 32k");
        assert_eq!(s.burst_bytes, 32 * 1024);
        assert_eq!(set("rate 1mbit burst 1500").burst_bytes, 1500);
        assert!(p("burst 32k").unwrap_err().contains("needs a rate"));
        assert!(p("jitter 5").unwrap_err().contains("needs a delay"));
        assert!(p("delay 5 jitter 10").unwrap_err().contains("larger"));
        assert_eq!(set("loss 1% seed 0x10").seed, 16);
    }

    #[test]
    fn directions_clear_and_show() {
        assert_eq!(p("").unwrap(), QdiscCmd::Show);
        assert_eq!(p("show").unwrap(), QdiscCmd::Show);
        assert!(p("show loss 1%").is_err());
        assert_eq!(
            p("clear").unwrap(),
            QdiscCmd::Clear(Direction::ALL.to_vec())
        );
        assert_eq!(
            p("ingress clear").unwrap(),
            QdiscCmd::Clear(vec![Direction::Ingress])
        );
        assert!(p("clear loss 1%").is_err());
        match p("loss 1% ingress egress").unwrap() {
            QdiscCmd::Set(d, _) => assert_eq!(d, Direction::ALL.to_vec()),
            o => panic!("{o:?}"),
        }
        match p("both loss 1%").unwrap() {
            QdiscCmd::Set(d, _) => assert_eq!(d, Direction::ALL.to_vec()),
            o => panic!("{o:?}"),
        }
        match p("loss 1%").unwrap() {
            QdiscCmd::Set(d, _) => assert_eq!(d, vec![Direction::Egress]),
            o => panic!("{o:?}"),
        }
        assert!(p("ingress").unwrap_err().contains("nothing to set"));
    }

    #[test]
    fn display_round_trips_through_parse() {
        for s in [
            "loss 2% duplicate 1% reorder 0.5% delay 100ms jitter 2.5ms rate 1gbit burst 65536 seed 7",
            "rate 500kbit",
            "delay 1ms",
        ] {
            let v = set(s);
            assert_eq!(v.to_string(), s);
            assert_eq!(set(&v.to_string()), v);
        }
    }

    #[test]
    fn requests_carry_the_settings() {
        let r = request(Some("strata0"), &p("loss 50% ingress").unwrap());
        assert_eq!(r["cmd"], "qdisc");
        assert_eq!(r["iface"], "strata0");
        assert_eq!(r["action"], "set");
        assert_eq!(r["direction"], "ingress");
        assert_eq!(r["loss_ppm"], 500_000);
        assert_eq!(r["delay_us"], 0);
        let r = request(None, &QdiscCmd::Show);
        assert_eq!(r, json!({"cmd": "qdisc", "action": "show"}));
    }
}
