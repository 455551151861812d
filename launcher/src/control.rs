//! The launcher's control socket: one JSON request per line in, one JSON
//! response per line out. `strata status|stats|kill|qdisc` are its clients.

use crate::supervisor::{log, Supervisor};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_ipc::layout::{aside, state};
use strata_ipc::serve::Economy;
use strata_ipc::{Fabric, LayerId, IFACE_COUNTER_NAMES};

/// Shared between the supervision loop and the control thread.
pub struct Shared {
    /// The fabric (owned by the launcher).
    pub fabric: Arc<Fabric>,
    /// The layers.
    pub sup: Mutex<Supervisor>,
    /// Instance name.
    pub instance: String,
    /// When `up` started.
    pub started: Instant,
    /// Set to stop the launcher.
    pub stop: Arc<AtomicBool>,
    /// The filter rules and filterd's arena.
    pub filter: Mutex<crate::filter::FilterState>,
    /// The configuration in force: as `up` read it, with what `strata
    /// addr`, `route`, `neigh` and `link` changed since.
    pub config: Mutex<crate::config::Config>,
    /// What each interface's device is, as the launcher opened it (an
    /// AF_XDP socket's copy or zero-copy mode).
    pub devices: Vec<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Pool occupancy.
fn pool_json(f: &Fabric) -> Value {
    let p = f.params();
    let (fs, fl) = f.free_counts();
    let (stale, dbl) = f.pool_errors();
    let owners = f.in_use_by_owner();
    let mut by_owner = serde_json::Map::new();
    for (i, &n) in owners.iter().enumerate() {
        if n > 0 {
            by_owner.insert(LayerId(i as u8).label(), json!(n));
        }
    }
    json!({
        "small_total": p.small_bufs, "small_free": fs,
        "large_total": p.large_bufs, "large_free": fl,
        "in_use": p.small_bufs.saturating_sub(fs) + p.large_bufs.saturating_sub(fl),
        "held": f.held_count(),
        "in_use_by_owner": by_owner,
        "pinned": f.pinned_count(),
        "stale_refused": stale, "double_free_refused": dbl,
    })
}

/// The answer to `status`.
pub fn status(sh: &Shared) -> Value {
    let f = &sh.fabric;
    let sup = sh.sup.lock().unwrap();
    let now = now_ms();
    let layers: Vec<Value> = sup
        .layers
        .iter()
        .map(|l| {
            let c = f.ctl(l.id);
            let st = c.state.load(Acquire);
            let up_ms = if l.pid().is_some() {
                now.saturating_sub(f.launch(l.id).started_ms.load(Relaxed))
            } else {
                0
            };
            json!({
                "layer": l.id.label(),
                "pid": l.pid(),
                "state": state::name(st),
                "aside": match f.aside(l.id) {
                    aside::ASIDE => "aside",
                    aside::RETURNING => "returning",
                    _ => "in",
                },
                "uptime_s": up_ms as f64 / 1000.0,
                "restarts": l.restarts,
                "upgrades": l.upgrades,
                "binary": l.binary.display().to_string(),
                "reclaimed_buffers": c.reclaimed.load(Relaxed),
                "quarantined_inputs": f.quarantine_counts(l.id).0,
                "quarantine_drops": f.quarantine_counts(l.id).1,
                "last_exit": l.last_exit,
                "last_recovery_ms": l.last_recovery.map(|r| json!({
                    "detect": r.detect_ns.map(|d| d as f64 / 1e6),
                    "reclaim": r.reclaim_ns as f64 / 1e6,
                    "startup": r.startup_ns as f64 / 1e6,
                    "exec": r.exec_ns as f64 / 1e6,
                    "total": r.total_ns() as f64 / 1e6,
                })),
                "wakeups": c.kicks.load(Relaxed),
                "cpus": l.cpus.as_ref().map(|c| c.to_string()),
            })
        })
        .collect();
    let rings: Vec<Value> = f
        .rings()
        .into_iter()
        .map(|(p, c, by, size, len)| {
            json!({"from": p.label(), "to": c.label(), "taken_by": by.label(), "size": size, "len": len})
        })
        .collect();
    let quarantine: Vec<Value> = sup
        .layers
        .iter()
        .flat_map(|l| {
            f.quarantine_entries(l.id).into_iter().map(move |e| {
                json!({
                    "layer": l.id.label(),
                    "len": e.len,
                    "hash": format!("{:016x}", e.hash),
                    "dropped": e.hits,
                })
            })
        })
        .collect();
    // What one idle established TCP connection costs the stack, shared
    // memory and sockd's record (its data rings aside).
    let sockd_bytes = f
        .counters(LayerId::SOCKD)
        .into_iter()
        .find(|(k, _)| k == "tcp_socket_state_bytes")
        .map_or(0, |(_, v)| v);
    let parts = [
        (
            "tcpd_block",
            std::mem::size_of::<strata_tcpd::ConnBlock>() as u64,
        ),
        (
            "socket_table_row",
            std::mem::size_of::<strata_ipc::socktable::SockRec>() as u64,
        ),
        ("sockd_record", sockd_bytes),
        (
            "conntrack_entry",
            std::mem::size_of::<strata_filterd::conntrack::CtEntry>() as u64,
        ),
    ];
    let mut per_conn: serde_json::Map<String, Value> = parts
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    per_conn.insert(
        "total".into(),
        json!(parts.iter().map(|p| p.1).sum::<u64>()),
    );
    let ifaces: Vec<Value> = sh
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"index": i, "name": f.iface_name(i as u8), "device": d}))
        .collect();
    json!({
        "instance": sh.instance,
        "launcher_pid": std::process::id(),
        "uptime_s": sh.started.elapsed().as_secs_f64(),
        "interfaces": ifaces,
        "bytes_per_tcp_connection": per_conn,
        "layers": layers,
        "rings": rings,
        "quarantine": quarantine,
        "pool": pool_json(f),
    })
}

/// The answer to `stats`.
pub fn stats(sh: &Shared) -> Value {
    let f = &sh.fabric;
    let sup = sh.sup.lock().unwrap();
    let mut layers = serde_json::Map::new();
    for l in &sup.layers {
        let mut m = serde_json::Map::new();
        let counters = f.counters(l.id);
        let two = |x: f64| (x * 100.0).round() / 100.0;
        // driverd: how many segments a super-segment stood for, each way.
        for dir in ["rx", "tx"] {
            let get = |name: String| counters.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
            let frames = get(format!("{dir}_super_frames"));
            let segs = get(format!("{dir}_super_segments"));
            if let (Some(n), Some(s)) = (frames, segs) {
                let per = if n == 0 { 0.0 } else { s as f64 / n as f64 };
                m.insert(format!("{dir}_segments_per_super_frame"), json!(two(per)));
            }
        }
        if let Some(e) = Economy::from_counters(&counters) {
            m.insert(
                "packets_per_wakeup".into(),
                json!(two(e.packets_per_wakeup())),
            );
            m.insert(
                "syscalls_per_packet".into(),
                json!(two(e.syscalls_per_packet())),
            );
        }
        for (k, v) in counters {
            m.insert(k, json!(v));
        }
        // Every layer's shell drops quarantined inputs; the count is kept
        // beside its own counters rather than among them.
        m.insert("quarantined".into(), json!(f.quarantine_counts(l.id).1));
        layers.insert(l.id.label(), Value::Object(m));
    }
    let ifaces: Vec<Value> = (0..f.params().n_ifaces as u8)
        .map(|i| {
            let b = f.iface(i);
            let mut m = serde_json::Map::new();
            for (k, name) in IFACE_COUNTER_NAMES.iter().enumerate() {
                m.insert(name.to_string(), json!(b.counters[k].load(Relaxed)));
            }
            json!({"index": i, "name": f.iface_name(i), "counters": m})
        })
        .collect();
    let netstat: serde_json::Map<String, Value> = crate::netstat::from_layers(&layers)
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({"instance": sh.instance, "layers": layers, "interfaces": ifaces, "netstat": netstat, "pool": pool_json(f)})
}

/// tcpd's view of a connection: its state machine, windows and timers.
#[derive(serde::Serialize)]
struct TcpRow {
    state: &'static str,
    cc: &'static str,
    cwnd: u32,
    ssthresh: u32,
    srtt_us: u32,
    rto_us: u64,
    mss: u32,
    snd_wnd: u32,
    rcv_wnd: u32,
    rcvbuf: u32,
    unacked: u32,
    recv_q: u32,
    ooo_q: u32,
}

impl From<&strata_tcpd::ConnInfo> for TcpRow {
    fn from(c: &strata_tcpd::ConnInfo) -> TcpRow {
        TcpRow {
            state: c.state.name(),
            cc: c.cc,
            cwnd: c.cwnd,
            ssthresh: c.ssthresh,
            srtt_us: c.srtt_us,
            rto_us: c.rto_us,
            mss: c.mss,
            snd_wnd: c.snd_wnd,
            rcv_wnd: c.rcv_wnd,
            rcvbuf: c.rcvbuf,
            unacked: c.send_q,
            recv_q: c.recv_q,
            ooo_q: c.ooo_q,
        }
    }
}

/// One row of the `ss` answer: a socket, or a connection no socket owns
/// (`id` and `pid` 0).
#[derive(serde::Serialize)]
struct SockRow {
    id: u32,
    proto: &'static str,
    state: &'static str,
    local: String,
    peer: String,
    recv_q: u32,
    send_q: u32,
    drops: u32,
    pid: u32,
    uid: u32,
    process: String,
    tcp: Option<TcpRow>,
}

/// The answer to `ss`.
#[derive(serde::Serialize)]
pub struct SsAnswer {
    instance: String,
    sockets: Vec<SockRow>,
}

/// The answer to `ss`: sockd's socket table, read from its arena, with
/// tcpd's connection blocks (read from tcpd's arena) joined to TCP
/// sockets, and tcpd's connections no socket owns any more (TIME-WAIT,
/// closed but still sending, waiting in an accept queue) listed too.
/// Typed rows rather than a JSON tree: with 100,000 connections the tree
/// cost seconds of the launcher's time, taken from the stack's cores.
pub fn sockets(sh: &Shared) -> SsAnswer {
    let t = sh.fabric.sock_table_view();
    // `1.2.3.4:80`, or `[fd00::1]:80` for IPv6, as `ss` writes them.
    let sock_addr = |a: u128, port: u16| {
        std::net::SocketAddr::new(strata_ipc::addrs::to_ip(a), port).to_string()
    };
    let (p, n) = sh.fabric.arena_bytes(LayerId::TCPD);
    // SAFETY: the fabric maps tcpd's arena for as long as it lives; the
    // snapshot only reads it.
    let conns = unsafe { strata_tcpd::snapshot(p, n) };
    let mut by_sock: std::collections::HashMap<u32, &strata_tcpd::ConnInfo> = conns
        .iter()
        .filter(|c| c.sock != 0)
        .map(|c| (c.sock, c))
        .collect();
    // Each process's name read once, not once per socket.
    let mut names: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
    let mut socks: Vec<SockRow> = t
        .iter()
        .map(|(_, r)| SockRow {
            id: r.id,
            proto: if r.proto == 6 { "tcp" } else { "udp" },
            state: strata_ipc::socktable::sock_state::name(r.state),
            local: sock_addr(r.local(), r.local_port),
            peer: if strata_ipc::addrs::is_any(r.peer()) && r.peer_port == 0 {
                match strata_ipc::addrs::unmapped(r.local()) {
                    Some(_) => "0.0.0.0:*".to_string(),
                    None => "[::]:*".to_string(),
                }
            } else {
                sock_addr(r.peer(), r.peer_port)
            },
            recv_q: r.recv_q,
            send_q: r.send_q,
            drops: r.drops,
            pid: r.pid,
            uid: r.uid,
            process: names
                .entry(r.pid)
                .or_insert_with(|| {
                    std::fs::read_to_string(format!("/proc/{}/comm", r.pid))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default()
                })
                .clone(),
            tcp: match (r.proto, by_sock.remove(&r.id)) {
                (6, Some(c)) => Some(c.into()),
                _ => None,
            },
        })
        .collect();
    let addr = |(a, p): (u128, u16)| sock_addr(a, p);
    let unowned = |c: &&strata_tcpd::ConnInfo| {
        (c.sock == 0 && c.state != strata_tcpd::State::Closed) || by_sock.contains_key(&c.sock)
    };
    for c in conns.iter().filter(unowned) {
        socks.push(SockRow {
            id: 0,
            proto: "tcp",
            state: c.state.name(),
            local: addr(c.local),
            peer: addr(c.remote),
            recv_q: c.recv_q,
            send_q: c.send_q,
            drops: 0,
            pid: 0,
            uid: 0,
            process: String::new(),
            tcp: Some(c.into()),
        });
    }
    SsAnswer {
        instance: sh.instance.clone(),
        sockets: socks,
    }
}

/// The answer to request `req`, one line of JSON.
fn answer(sh: &Shared, req: &Value) -> String {
    if req.get("cmd").and_then(|c| c.as_str()) == Some("ss") {
        #[derive(serde::Serialize)]
        struct Ok {
            ok: bool,
            data: SsAnswer,
        }
        let a = Ok {
            ok: true,
            data: sockets(sh),
        };
        return serde_json::to_string(&a).unwrap_or_default();
    }
    handle(sh, req).to_string()
}

fn handle(sh: &Shared, req: &Value) -> Value {
    match req.get("cmd").and_then(|c| c.as_str()) {
        Some("status") => json!({"ok": true, "data": status(sh)}),
        Some("stats") => json!({"ok": true, "data": stats(sh)}),
        Some("kill") => {
            let name = req.get("layer").and_then(|l| l.as_str()).unwrap_or("");
            match LayerId::from_label(name) {
                None => {
                    json!({"ok": false, "error": format!("unknown layer {name:?} (driverdN, netdevd, filterd, ipd, tcpd, udpd, sockd)")})
                }
                Some(id) => match sh.sup.lock().unwrap().kill(id) {
                    Ok(pid) => json!({"ok": true, "data": {"layer": id.label(), "pid": pid}}),
                    Err(e) => json!({"ok": false, "error": e}),
                },
            }
        }
        Some("upgrade") => crate::upgrade::handle(sh, req),
        Some("qdisc") => crate::qdisc::handle(&sh.fabric, req),
        Some("filter") => {
            let words: Vec<String> = req
                .get("words")
                .and_then(|w| w.as_array())
                .map(|a| {
                    a.iter()
                        .map(|x| x.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default();
            let mut fs = sh.filter.lock().unwrap();
            match fs.command(&sh.fabric, &words) {
                Ok(v) => {
                    if v.get("text").is_none() {
                        log(&format!("filter: {}", words.join(" ")));
                    }
                    json!({"ok": true, "data": v})
                }
                Err(e) => json!({"ok": false, "error": e}),
            }
        }
        Some("addr" | "route" | "neigh" | "link") => crate::netconf::handle(sh, req),
        Some("conntrack") => {
            let fs = sh.filter.lock().unwrap();
            let r = match req.get("action").and_then(|a| a.as_str()) {
                Some("list") | None => fs.conntrack_list(),
                Some("flush") => fs.conntrack_flush(&sh.fabric),
                Some(a) => Err(format!("unknown conntrack action {a:?} (list, flush)")),
            };
            match r {
                Ok(v) => json!({"ok": true, "data": v}),
                Err(e) => json!({"ok": false, "error": e}),
            }
        }
        Some("stop") => {
            sh.stop.store(true, SeqCst);
            json!({"ok": true, "data": {}})
        }
        Some(c) => json!({"ok": false, "error": format!("unknown command {c:?}")}),
        None => json!({"ok": false, "error": "request without \"cmd\""}),
    }
}

fn serve_one(sh: &Shared, s: UnixStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut line = String::new();
    // A request is one short line; cap what a client can make us buffer.
    if BufReader::new(s.take(64 * 1024))
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let resp = match serde_json::from_str::<Value>(&line) {
        Ok(req) => answer(sh, &req),
        Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}).to_string(),
    };
    // One write: formatting into the socket directly wrote each token
    // on its own (millions of system calls for `ss` with 100,000
    // connections, 40 s during which the launcher and the client took a
    // core and a half from the stack).
    let mut out = resp.into_bytes();
    out.push(b'\n');
    let _ = w.write_all(&out);
}

/// Binds the control socket (owner-only) and serves it on a thread.
pub fn serve(sh: Arc<Shared>, path: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for s in l.incoming() {
                match s {
                    Ok(s) => serve_one(&sh, s),
                    Err(e) => log(&format!("control socket: {e}")),
                }
            }
        })?;
    Ok(())
}

/// Sends one request to a running instance.
pub fn request(instance: &str, req: Value) -> Result<Value, String> {
    request_waiting(instance, req, Duration::from_secs(10))
}

/// Sends one request and waits at most `wait` for the answer.
pub fn request_waiting(instance: &str, req: Value, wait: Duration) -> Result<Value, String> {
    let path = strata_ipc::runtime::control_socket(instance);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        format!(
            "no strata instance {instance:?} is running ({}: {e})",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(wait)).ok();
    writeln!(s, "{req}").map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("control socket: {e}"))?;
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("bad answer: {e}"))?;
    if v.get("ok") == Some(&Value::Bool(true)) {
        Ok(v.get("data").cloned().unwrap_or(Value::Null))
    } else {
        Err(v
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("request failed")
            .to_string())
    }
}

/// The state shown for a layer's row of the `status` answer: its
/// lifecycle state, except that a running layer standing aside (or on
/// its way back) says so.
pub fn shown_state(l: &Value) -> &str {
    match (l["state"].as_str(), l["aside"].as_str()) {
        (Some("running"), Some(a @ ("aside" | "returning"))) => a,
        (Some(st), _) => st,
        _ => "-",
    }
}

/// How long the launcher waits for a layer to carry out what it asked
/// (the layer may be restarting meanwhile).
const LAYER_WAIT: Duration = Duration::from_secs(3);

/// Waits until `done`, kicking layer `l` (which may be asleep, or aside)
/// every 2 ms; Err after [`LAYER_WAIT`].
pub fn wait_for_layer(f: &Fabric, l: LayerId, done: impl Fn() -> bool) -> Result<(), String> {
    let t = Instant::now();
    while !done() {
        f.kick(l);
        if t.elapsed() > LAYER_WAIT {
            return Err(format!(
                "{l} did not answer within {} s (is it running?)",
                LAYER_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
