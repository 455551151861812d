//! Runtime configuration, ip-style: `strata addr`, `route`, `neigh` and
//! `link` on a running instance.
//!
//! Addresses, routes, MTUs and permanent neighbours are part of the
//! launcher's [`Config`]. A change edits a copy of it, checks the copy as
//! `strata up` checks a file, and publishes the layers' view of it in the
//! fabric's configuration region ([`strata_ipc::runtime::ConfigCtl`]);
//! each running layer takes it at its next turn, and the command returns
//! once every one has. A layer that restarts later reads the region, so
//! the change outlives any layer's restart; nothing on disk says
//! otherwise. Two things are not configuration but state held by a
//! layer: an interface being down (the launcher sets a flag netdevd
//! reads) and learnt neighbours (ipd's cache, shown from its arena and
//! flushed on request).
//!
//! Each answer carries `text`, what the command prints without `--json`,
//! in the form `ip` prints.

use crate::config::{Cidr, Config, MacAddr, Neighbour, Route, MAX_ADDRESSES, MTU};
use crate::control::{wait_for_layer, Shared};
use crate::plan::Plan;
use crate::supervisor::log;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::*;
use strata_ipc::layout::state;
use strata_ipc::{Fabric, LayerId};

const ADDR_USAGE: &str =
    "addr: show [dev IFACE], add A.B.C.D/N dev IFACE, or del A.B.C.D[/N] dev IFACE";
const ROUTE_USAGE: &str =
    "route: show, add DEST [via GATEWAY] [dev IFACE], or del DEST (DEST: default, A.B.C.D/N or A.B.C.D)";
const NEIGH_USAGE: &str =
    "neigh: show, flush, add A.B.C.D lladdr MAC dev IFACE, or del A.B.C.D dev IFACE";
const LINK_USAGE: &str = "link: show, or set IFACE up|down|mtu N";

/// Answers a control request `{"cmd": "addr"|"route"|"neigh"|"link",
/// "words": [...]}`.
pub fn handle(sh: &Shared, req: &Value) -> Value {
    let words: Vec<&str> = req["words"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let r = match req["cmd"].as_str() {
        Some("addr") => addr(sh, &words),
        Some("route") => route(sh, &words),
        Some("neigh") => neigh(sh, &words),
        Some("link") => link(sh, &words),
        c => Err(format!("not a configuration command: {c:?}")),
    };
    match r {
        Ok(v) => json!({"ok": true, "data": v}),
        Err(e) => json!({"ok": false, "error": e}),
    }
}

/// Applies `edit` to the configuration in force, checks the result and
/// publishes it, then waits until every running layer runs with it.
/// `what` is the command, for the log and for errors.
fn change(
    sh: &Shared,
    what: &str,
    edit: impl FnOnce(&mut Config) -> Result<(), String>,
) -> Result<(), String> {
    let mut cfg = sh.config.lock().unwrap();
    let mut new = cfg.clone();
    edit(&mut new).map_err(|e| format!("{what}: {e}"))?;
    new.validate()
        .map_err(|e| format!("{what}: {}", e.problem()))?;
    let stack = Plan::from_config(&new).stack;
    let f = &sh.fabric;
    let g = f
        .config()
        .publish(&stack)
        .map_err(|e| format!("{what}: {e}"))?;
    for ifc in &stack.ifaces {
        f.iface(ifc.index).mtu.store(u32::from(ifc.mtu), Relaxed);
    }
    *cfg = new;
    log(what);
    let running: Vec<LayerId> = sh
        .sup
        .lock()
        .unwrap()
        .layers
        .iter()
        .map(|l| l.id)
        .filter(|&id| f.ctl(id).state.load(Acquire) == state::RUNNING)
        .collect();
    for id in running {
        wait_for_layer(f, id, || f.ctl(id).config_gen.load(Acquire) >= g)
            .map_err(|e| format!("{what}: made, but {e}"))?;
    }
    Ok(())
}

/// The interface named `name`, by position.
fn iface_of(c: &Config, name: &str) -> Result<usize, String> {
    c.interfaces
        .iter()
        .position(|i| i.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = c.interfaces.iter().map(|i| i.name.as_str()).collect();
            format!(
                "no interface named {name:?} (interfaces: {})",
                names.join(", ")
            )
        })
}

/// `dev IFACE` from the end of a command; without it, the only
/// interface, if there is one.
fn dev_arg(c: &Config, rest: &[&str], usage: &str) -> Result<String, String> {
    match rest {
        ["dev", name] => iface_of(c, name).map(|i| c.interfaces[i].name.clone()),
        [] if c.interfaces.len() == 1 => Ok(c.interfaces[0].name.clone()),
        [] => Err(format!("which interface? add `dev IFACE` ({usage})")),
        _ => Err(usage.to_string()),
    }
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    s.parse()
        .map_err(|e: crate::config::BadValue| e.to_string())
}

// ------------------------------------------------------------------ addr

fn addr(sh: &Shared, w: &[&str]) -> Result<Value, String> {
    let cfg = sh.config.lock().unwrap().clone();
    match w {
        [] | ["show"] => Ok(addr_show(sh, &cfg, None)),
        ["show", "dev", d] => {
            let i = iface_of(&cfg, d)?;
            Ok(addr_show(sh, &cfg, Some(i)))
        }
        ["add", a, rest @ ..] => {
            let cidr = parse_cidr(a).map_err(|e| format!("addr add: {e}"))?;
            let dev = dev_arg(&cfg, rest, ADDR_USAGE)?;
            change(sh, &format!("addr add {cidr} dev {dev}"), |c| {
                if let Some(owner) = c
                    .interfaces
                    .iter()
                    .find(|i| i.addresses.iter().any(|x| x.addr == cidr.addr))
                {
                    return Err(format!(
                        "{} is already an address of {}",
                        cidr.addr, owner.name
                    ));
                }
                if let Some(owner) = c
                    .interfaces
                    .iter()
                    .find(|i| i.host_addresses.iter().any(|x| x.addr == cidr.addr))
                {
                    return Err(format!(
                        "{} is the kernel side's address on {}",
                        cidr.addr, owner.name
                    ));
                }
                let i = iface_of(c, &dev)?;
                let ifc = &mut c.interfaces[i];
                if ifc.addresses.len() >= MAX_ADDRESSES {
                    return Err(format!(
                        "{dev} has {MAX_ADDRESSES} addresses, the most an interface may have"
                    ));
                }
                ifc.addresses.push(cidr);
                Ok(())
            })?;
            Ok(json!({}))
        }
        ["del", a, rest @ ..] => {
            let (ip, prefix) = match a.split_once('/') {
                Some(_) => parse_cidr(a).map(|c| (c.addr, Some(c.prefix))),
                None => parse_ip(a).map(|ip| (ip, None)),
            }
            .map_err(|e| format!("addr del: {e}"))?;
            let dev = dev_arg(&cfg, rest, ADDR_USAGE)?;
            change(sh, &format!("addr del {a} dev {dev}"), |c| {
                let i = iface_of(c, &dev)?;
                let ifc = &mut c.interfaces[i];
                let k = ifc
                    .addresses
                    .iter()
                    .position(|x| x.addr == ip)
                    .ok_or_else(|| format!("{ip} is not an address of {dev}"))?;
                let gone = ifc.addresses[k];
                if prefix.is_some_and(|p| p != gone.prefix) {
                    return Err(format!("the address on {dev} is {gone}, not {a}"));
                }
                ifc.addresses.remove(k);
                if let Some(r) = c.routes.iter().find(|r| !gateway_reachable(c, r)) {
                    return Err(format!(
                        "the route {} needs {gone} to reach its gateway: delete the route first",
                        route_text(r)
                    ));
                }
                Ok(())
            })?;
            Ok(json!({}))
        }
        _ => Err(ADDR_USAGE.to_string()),
    }
}

/// `ip addr`'s view: per interface its state, MTU, MAC and addresses
/// (the first one primary).
fn addr_show(sh: &Shared, c: &Config, only: Option<usize>) -> Value {
    let f = &sh.fabric;
    let mut text = String::new();
    let mut ifaces = Vec::new();
    for (i, ifc) in c.interfaces.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let up = f.iface_up(i as u8);
        let _ = writeln!(
            text,
            "{i}: {}: <{}> mtu {}\n    link/ether {}",
            ifc.name,
            if up { "UP" } else { "DOWN" },
            ifc.mtu,
            ifc.mac
        );
        let mut info = Vec::new();
        for (k, a) in ifc.addresses.iter().enumerate() {
            let brd = (a.prefix <= 30).then(|| a.broadcast());
            let _ = writeln!(
                text,
                "    inet {a}{}{}",
                brd.map(|b| format!(" brd {b}")).unwrap_or_default(),
                if k > 0 { " secondary" } else { "" }
            );
            info.push(json!({
                "family": "inet",
                "local": a.addr.to_string(),
                "prefixlen": a.prefix,
                "broadcast": brd.map(|b| b.to_string()),
                "secondary": k > 0,
            }));
        }
        ifaces.push(json!({
            "ifindex": i,
            "ifname": ifc.name,
            "operstate": if up { "UP" } else { "DOWN" },
            "mtu": ifc.mtu,
            "address": ifc.mac.to_string(),
            "addr_info": info,
        }));
    }
    json!({"interfaces": ifaces, "text": text})
}

// ----------------------------------------------------------------- route

/// Whether route `r`'s gateway (if any) lies in a connected prefix of its
/// interface, or of any interface when it names none.
fn gateway_reachable(c: &Config, r: &Route) -> bool {
    let Some(via) = r.via else { return true };
    c.interfaces
        .iter()
        .filter(|i| r.dev.as_ref().is_none_or(|d| *d == i.name))
        .any(|i| i.addresses.iter().any(|a| a.contains(via)))
}

fn dest_text(to: Cidr) -> String {
    if to.prefix == 0 {
        "default".into()
    } else {
        format!("{}/{}", to.network(), to.prefix)
    }
}

/// A configured route as `ip route` prints it.
fn route_text(r: &Route) -> String {
    let mut t = dest_text(r.to);
    if let Some(v) = r.via {
        let _ = write!(t, " via {v}");
    }
    if let Some(d) = &r.dev {
        let _ = write!(t, " dev {d}");
    }
    t
}

/// DEST: `default`, `A.B.C.D/N` or `A.B.C.D` (a host, /32).
fn parse_dest(s: &str) -> Result<Cidr, String> {
    match s {
        "default" => Ok(Cidr {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        }),
        s if s.contains('/') => parse_cidr(s),
        s => parse_ip(s).map(|addr| Cidr { addr, prefix: 32 }),
    }
}

fn route(sh: &Shared, w: &[&str]) -> Result<Value, String> {
    let cfg = sh.config.lock().unwrap().clone();
    match w {
        [] | ["show"] => Ok(route_show(&cfg)),
        ["add", d, rest @ ..] => {
            let to = parse_dest(d).map_err(|e| format!("route add: {e}"))?;
            let mut r = Route {
                to,
                via: None,
                dev: None,
            };
            let mut opts = rest.chunks(2);
            for o in opts.by_ref() {
                match o {
                    ["via", g] => r.via = Some(parse_ip(g).map_err(|e| format!("route add: {e}"))?),
                    ["dev", i] => {
                        r.dev = Some(cfg.interfaces[iface_of(&cfg, i)?].name.clone());
                    }
                    _ => return Err(ROUTE_USAGE.to_string()),
                }
            }
            let what = format!("route add {}", route_text(&r));
            change(sh, &what, |c| {
                if let Some(old) = c.routes.iter().find(|x| x.to == r.to) {
                    return Err(format!(
                        "a route to {} already exists ({}): delete it first",
                        dest_text(r.to),
                        route_text(old)
                    ));
                }
                c.routes.push(r);
                Ok(())
            })?;
            Ok(json!({}))
        }
        ["del", d] => {
            let to = parse_dest(d).map_err(|e| format!("route del: {e}"))?;
            change(sh, &format!("route del {}", dest_text(to)), |c| {
                if let Some(k) = c.routes.iter().position(|x| x.to == to) {
                    c.routes.remove(k);
                    return Ok(());
                }
                for ifc in &c.interfaces {
                    if let Some(a) = ifc
                        .addresses
                        .iter()
                        .find(|a| a.prefix == to.prefix && a.network() == to.addr)
                    {
                        return Err(format!(
                            "{} is the connected route of {a} on {}: delete the address instead",
                            dest_text(to),
                            ifc.name
                        ));
                    }
                }
                Err(format!("no route to {} was added", dest_text(to)))
            })?;
            Ok(json!({}))
        }
        _ => Err(ROUTE_USAGE.to_string()),
    }
}

/// `ip route`'s view: the connected routes each address implies, then the
/// configured ones; the default route first.
fn route_show(c: &Config) -> Value {
    let mut routes: Vec<(Cidr, Value, String)> = Vec::new();
    for ifc in &c.interfaces {
        for a in &ifc.addresses {
            let to = Cidr {
                addr: a.network(),
                prefix: a.prefix,
            };
            // One connected route per prefix and interface (the primary's).
            if routes
                .iter()
                .any(|(t, v, _)| *t == to && v["dev"] == *ifc.name)
            {
                continue;
            }
            let text = format!(
                "{} dev {} proto kernel scope link src {}",
                dest_text(to),
                ifc.name,
                a.addr
            );
            let v = json!({"dst": dest_text(to), "dev": ifc.name, "protocol": "kernel",
                           "scope": "link", "prefsrc": a.addr.to_string()});
            routes.push((to, v, text));
        }
    }
    for r in &c.routes {
        // The interface a route without `dev` leaves by: the one whose
        // connected prefix holds its gateway.
        let dev = r.dev.clone().or_else(|| {
            let via = r.via?;
            c.interfaces
                .iter()
                .find(|i| i.addresses.iter().any(|a| a.contains(via)))
                .map(|i| i.name.clone())
        });
        let mut v = json!({"dst": dest_text(r.to), "dev": dev, "protocol": "static"});
        if let Some(g) = r.via {
            v["gateway"] = json!(g.to_string());
        }
        let text = route_text(&Route {
            dev: dev.clone(),
            ..r.clone()
        });
        routes.push((r.to, v, text));
    }
    routes.sort_by_key(|(to, _, _)| (to.prefix != 0, u32::from(to.addr), to.prefix));
    let text: String = routes.iter().map(|(_, _, t)| format!("{t}\n")).collect();
    json!({"routes": routes.into_iter().map(|(_, v, _)| v).collect::<Vec<_>>(), "text": text})
}

// ----------------------------------------------------------------- neigh

fn neigh(sh: &Shared, w: &[&str]) -> Result<Value, String> {
    let cfg = sh.config.lock().unwrap().clone();
    match w {
        [] | ["show"] => Ok(neigh_show(&sh.fabric)),
        ["flush"] => {
            flush_neighbours(&sh.fabric, None)?;
            log("neigh flush");
            Ok(json!({}))
        }
        ["add", ip, "lladdr", mac, rest @ ..] => {
            let ip = parse_ip(ip).map_err(|e| format!("neigh add: {e}"))?;
            let mac: MacAddr = mac
                .parse()
                .map_err(|e: crate::config::BadValue| format!("neigh add: {e}"))?;
            let dev = dev_arg(&cfg, rest, NEIGH_USAGE)?;
            change(sh, &format!("neigh add {ip} lladdr {mac} dev {dev}"), |c| {
                if let Some(old) = c.neighbours.iter().find(|n| n.ip == ip && n.dev == dev) {
                    return Err(format!(
                        "{ip} on {dev} is already a permanent neighbour (lladdr {}): delete it first",
                        old.mac
                    ));
                }
                c.neighbours.push(Neighbour { ip, mac, dev });
                Ok(())
            })?;
            Ok(json!({}))
        }
        ["del", ip, rest @ ..] => {
            let ip = parse_ip(ip).map_err(|e| format!("neigh del: {e}"))?;
            let dev = dev_arg(&cfg, rest, NEIGH_USAGE)?;
            let what = format!("neigh del {ip} dev {dev}");
            if cfg.neighbours.iter().any(|n| n.ip == ip && n.dev == dev) {
                change(sh, &what, |c| {
                    c.neighbours.retain(|n| !(n.ip == ip && n.dev == dev));
                    Ok(())
                })?;
                return Ok(json!({}));
            }
            // A learnt one: ipd forgets it.
            let learnt = neigh_show(&sh.fabric)["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["ip"] == ip.to_string() && e["dev"] == dev.as_str());
            if !learnt {
                return Err(format!("{what}: no neighbour {ip} on {dev}"));
            }
            flush_neighbours(&sh.fabric, Some(ip)).map_err(|e| format!("{what}: {e}"))?;
            log(&what);
            Ok(json!({}))
        }
        _ => Err(NEIGH_USAGE.to_string()),
    }
}

/// ipd's neighbour cache as it last saved it to its arena (ipd is neither
/// stopped nor asked), permanent entries included.
fn neigh_show(f: &Fabric) -> Value {
    use strata_ipd::{neigh_state, NeighRecord};
    let now = strata_ipc::now_ns();
    let n_ifaces = f.params().n_ifaces;
    let mut text = String::new();
    // ipd wrote these: a record naming no interface of ours is left out.
    let table = f.records::<[u8; 32]>(LayerId::IPD, strata_ipd::ARENA_FORMAT.writes);
    let entries: Vec<Value> = table
        .load()
        .iter()
        .map(NeighRecord::from_bytes)
        .filter(|r| u32::from(r.iface) < n_ifaces)
        .map(|r| {
            let mac = MacAddr(r.mac).to_string();
            let state = match r.state {
                neigh_state::REACHABLE => "REACHABLE",
                neigh_state::PROBE => "PROBE",
                neigh_state::PERMANENT => "PERMANENT",
                _ => "STALE",
            };
            let ip = Ipv4Addr::from(r.ip);
            let dev = f.iface_name(r.iface);
            let _ = writeln!(text, "{ip} dev {dev} lladdr {mac} {state}");
            json!({
                "ip": ip.to_string(),
                "dev": dev,
                "lladdr": mac,
                "state": state,
                "confirmed_s_ago": now.saturating_sub(r.updated_ns) as f64 / 1e9,
            })
        })
        .collect();
    let stored = table.stored_format();
    if stored != 0 && stored != strata_ipd::ARENA_FORMAT.writes {
        text = format!(
            "ipd (upgraded) keeps its neighbours in arena format {stored}, which this launcher \
             does not read: restart the instance with the launcher built beside that ipd\n"
        );
    }
    json!({ "entries": entries, "text": text })
}

/// Asks ipd to forget the learnt neighbour `ip`, or every learnt one
/// (permanent ones stay); waits until it has.
fn flush_neighbours(f: &Fabric, ip: Option<Ipv4Addr>) -> Result<(), String> {
    let launch = f.launch(LayerId::IPD);
    launch
        .flush_what
        .store(ip.map_or(0, |a| u64::from(u32::from(a))), Relaxed);
    let req = launch.flush_req.fetch_add(1, SeqCst) + 1;
    wait_for_layer(f, LayerId::IPD, || {
        f.ctl(LayerId::IPD).flush_done.load(Acquire) >= req
    })
}

// ------------------------------------------------------------------ link

fn link(sh: &Shared, w: &[&str]) -> Result<Value, String> {
    let f = &sh.fabric;
    let cfg = sh.config.lock().unwrap().clone();
    match w {
        [] | ["show"] => Ok(link_show(f, &cfg)),
        ["set", name, what @ ..] => {
            let i = iface_of(&cfg, name)?;
            match what {
                ["up"] | ["down"] => {
                    let up = what[0] == "up";
                    f.set_iface_up(i as u8, up);
                    log(&format!("link set {name} {}", what[0]));
                }
                ["mtu", n] => {
                    let mtu = n
                        .parse::<u16>()
                        .ok()
                        .filter(|m| MTU.contains(&i64::from(*m)))
                        .ok_or_else(|| {
                            format!(
                                "link set {name} mtu: {n:?} is not an MTU ({}..={})",
                                MTU.start(),
                                MTU.end()
                            )
                        })?;
                    change(sh, &format!("link set {name} mtu {mtu}"), |c| {
                        c.interfaces[i].mtu = mtu;
                        Ok(())
                    })?;
                }
                _ => return Err(format!("link set {name}: up, down or mtu N")),
            }
            Ok(json!({}))
        }
        _ => Err(LINK_USAGE.to_string()),
    }
}

/// `ip link`'s view.
fn link_show(f: &Fabric, c: &Config) -> Value {
    let mut text = String::new();
    let links: Vec<Value> = c
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, ifc)| {
            let state = if f.iface_up(i as u8) { "UP" } else { "DOWN" };
            let _ = writeln!(
                text,
                "{i}: {} state {state} mtu {} link/ether {}",
                ifc.name, ifc.mtu, ifc.mac
            );
            json!({
                "index": i,
                "name": ifc.name,
                "mac": ifc.mac.to_string(),
                "mtu": ifc.mtu,
                "state": state,
            })
        })
        .collect();
    json!({ "links": links, "text": text })
}
