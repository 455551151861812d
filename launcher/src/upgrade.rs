//! `strata upgrade`: a running layer replaced by another binary with
//! nothing lost (docs/ARCHITECTURE.md, "Upgrades"). The launcher first
//! asks the binary what it is ([`strata_ipc::service::PROBE_ARG`]) and
//! refuses one that is another layer, maps another fabric layout or
//! cannot read the format the layer's arena holds, leaving the running
//! instance alone. Then the running instance hands over at an event
//! boundary and the new binary starts on its arena and rings, as a
//! restarted instance does.

use crate::control::Shared;
use crate::supervisor::{Ids, Recovery};
use serde_json::{json, Value};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Acquire;
use std::time::{Duration, Instant};
use strata_ipc::serve::HANDOVER_GRACE_NS;
use strata_ipc::service::{ArenaFormat, Probe, PROBE_ARG};
use strata_ipc::{layout, Fabric, LayerId};

/// Longest a binary may take to say what it is.
const PROBE_WAIT: Duration = Duration::from_secs(5);
/// Longest the new instance may take to serve, beyond the old one's
/// grace for handing over.
const SERVE_WAIT: Duration = Duration::from_secs(8);

/// The control request `{"cmd": "upgrade", "layer": L, "binary": PATH}`
/// (`binary` absent: the path the layer runs from, rebuilt in place).
pub fn handle(sh: &Shared, req: &Value) -> Value {
    let name = req["layer"].as_str().unwrap_or("");
    let Some(id) = LayerId::from_label(name) else {
        return json!({"ok": false, "error": format!(
            "unknown layer {name:?} (driverdN, netdevd, filterd, ipd, tcpd, udpd, sockd)")});
    };
    match upgrade(sh, id, req["binary"].as_str().map(PathBuf::from)) {
        Ok(v) => json!({"ok": true, "data": v}),
        Err(e) => json!({"ok": false, "error": e}),
    }
}

fn upgrade(sh: &Shared, id: LayerId, binary: Option<PathBuf>) -> Result<Value, String> {
    let f = &sh.fabric;
    let (current, ids, pid_before) = sh.sup.lock().unwrap().upgrade_target(id)?;
    let binary = binary.unwrap_or(current);
    if !binary.is_absolute() {
        return Err(format!("{}: give an absolute path", binary.display()));
    }
    let probe = probe(&binary, ids)?;
    let format_before = check(f, id, &binary, &probe)?;
    let target = sh
        .sup
        .lock()
        .unwrap()
        .begin_upgrade(f, id, binary.clone())?;
    let deadline = Instant::now() + Duration::from_nanos(HANDOVER_GRACE_NS) + SERVE_WAIT;
    loop {
        std::thread::sleep(Duration::from_millis(2));
        let sup = sh.sup.lock().unwrap();
        let l = sup.layer(id).ok_or("the layer is gone")?;
        if l.upgrades >= target {
            return match &l.last_upgrade {
                Some(Ok(r)) => Ok(done_json(
                    id,
                    &binary,
                    pid_before,
                    l.pid(),
                    format_before,
                    f,
                    r,
                )),
                Some(Err(e)) => Err(e.clone()),
                None => Err("no outcome recorded".into()),
            };
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{id} is not serving {} s after the upgrade began: see the launcher's log",
                (HANDOVER_GRACE_NS / 1_000_000_000) + SERVE_WAIT.as_secs()
            ));
        }
    }
}

fn done_json(
    id: LayerId,
    binary: &Path,
    pid_before: u32,
    pid: Option<u32>,
    format_before: u32,
    f: &Fabric,
    r: &Recovery,
) -> Value {
    let ms = |ns: u64| ns as f64 / 1e6;
    json!({
        "layer": id.label(),
        "binary": binary.display().to_string(),
        "pid_before": pid_before,
        "pid": pid,
        "arena_format_before": format_before,
        "arena_format": f.ctl(id).arena_format.load(Acquire),
        "handover_ms": ms(r.detect_ns.unwrap_or(0)),
        "pause_ms": ms(r.reclaim_ns + r.startup_ns),
        "startup_ms": ms(r.startup_ns),
    })
}

/// Runs `binary` with [`PROBE_ARG`] as the layer's user, for at most
/// [`PROBE_WAIT`].
fn probe(binary: &Path, ids: Ids) -> Result<Probe, String> {
    let shown = binary.display();
    let mut cmd = Command::new(binary);
    cmd.arg(PROBE_ARG)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if ids.uid != 0 {
        cmd.uid(ids.uid).gid(ids.gid);
    }
    let mut child = cmd.spawn().map_err(|e| format!("{shown}: {e}"))?;
    let t = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if t.elapsed() > PROBE_WAIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} did not say what it is within {} s: is it a strata layer?",
                    PROBE_WAIT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        // The answer is one short line; a binary that writes more is not
        // a layer, and what it wrote is not kept.
        let _ = o.by_ref().take(4096).read_to_string(&mut out);
    }
    let not_a_layer =
        || format!("{shown} is not a strata layer binary (it did not answer {PROBE_ARG})");
    if !status.success() {
        return Err(not_a_layer());
    }
    serde_json::from_str(out.trim()).map_err(|_| not_a_layer())
}

/// Whether `probe` can take over from `id`'s running instance; returns
/// the arena format that instance declared.
fn check(f: &Fabric, id: LayerId, binary: &Path, probe: &Probe) -> Result<u32, String> {
    let shown = binary.display();
    if probe.layer != id.name() {
        return Err(format!("{shown} is {}, not {}", probe.layer, id.name()));
    }
    if probe.layout != layout::VERSION {
        return Err(format!(
            "{shown} maps fabric layout {} and this instance's is {}: a change of layout \
             needs the whole instance restarted with binaries built together (`strata up`)",
            probe.layout,
            layout::VERSION
        ));
    }
    let found = f.ctl(id).arena_format.load(Acquire);
    let knows = ArenaFormat {
        writes: probe.arena_writes,
        reads_from: probe.arena_reads_from,
    };
    if !knows.reads(found) {
        return Err(format!(
            "{shown} reads {}'s arena in formats {} to {}, and the running {} keeps it in \
             format {found}: it cannot take over (upgrade through a binary that reads both)",
            id.name(),
            knows.reads_from,
            knows.writes,
            id
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use strata_ipc::layout::Params;

    fn probe(layer: &str, layout: u32, writes: u32, reads_from: u32) -> Probe {
        Probe {
            layer: layer.into(),
            layout,
            arena_writes: writes,
            arena_reads_from: reads_from,
        }
    }

    #[test]
    fn a_binary_is_taken_only_if_it_is_the_layer_maps_the_layout_and_reads_the_arena() {
        let params = Params {
            small_bufs: 16,
            large_bufs: 2,
            ring_size: 16,
            n_ifaces: 1,
            arena_bytes: 8192,
            tcpd_arena_bytes: 0,
            filterd_arena_bytes: 0,
            sockd_arena_bytes: 0,
        };
        let f = Fabric::create(&format!("upgrade-check-{}", std::process::id()), params)
            .expect("a fabric (needs /dev/shm)");
        let b = Path::new("/opt/new/udpd");
        let v = layout::VERSION;
        let udpd = LayerId::UDPD;
        // Nothing declared yet: any format is readable.
        assert_eq!(check(&f, udpd, b, &probe("udpd", v, 2, 1)), Ok(0));
        f.ctl(udpd).arena_format.store(1, Relaxed);
        assert_eq!(check(&f, udpd, b, &probe("udpd", v, 2, 1)), Ok(1));
        assert_eq!(check(&f, udpd, b, &probe("udpd", v, 1, 1)), Ok(1));
        let refused = |p: Probe, why: &str| {
            let e = check(&f, udpd, b, &p).expect_err("refused");
            assert!(e.contains(why), "{e}");
        };
        refused(probe("ipd", v, 1, 1), "is ipd, not udpd");
        refused(probe("udpd", v + 1, 1, 1), "maps fabric layout");
        refused(probe("udpd", v, 3, 2), "in formats 2 to 3");
        f.ctl(udpd).arena_format.store(2, Relaxed);
        refused(probe("udpd", v, 1, 1), "keeps it in format 2");
    }
}
