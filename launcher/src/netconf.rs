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
//!
//! Addresses and routes are of both families (`default` is IPv4's
//! default route, `::/0` IPv6's); permanent neighbours are IPv4 only for
//! now (IPv6 neighbours are learnt by ipd).

use crate::config::{
    dest_name, BadValue, Cidr, Cidr6, Config, Interface, IpCidr, IpRoute, MacAddr, Neighbour,
    MAX_ADDRESSES, MTU,
};
use crate::control::{wait_for_layer, Shared};
use crate::plan::Plan;
use crate::supervisor::log;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::*;
use strata_ipc::layout::state;
use strata_ipc::{Fabric, LayerId};
use strata_ipd::{neigh_state, NeighRecord};

const ADDR_USAGE: &str = "addr: show [dev IFACE], add ADDR/N dev IFACE, or del ADDR[/N] dev IFACE \
     (ADDR: IPv4 like 10.77.0.2 or IPv6 like fd00:77::2)";
const ROUTE_USAGE: &str = "route: show, add DEST [via GATEWAY] [dev IFACE], or del DEST \
     (DEST: default, A.B.C.D/N or A.B.C.D for IPv4; ::/0, X:X::X/N or X:X::X for IPv6; \
     GATEWAY of DEST's family, a link-local one like fe80::1 with dev)";
const NEIGH_USAGE: &str = "neigh: show, flush, add A.B.C.D lladdr MAC dev IFACE, \
     or del A.B.C.D dev IFACE (IPv6 neighbours are only learnt, for now)";
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

/// `ADDR` or `ADDR/N`, of either family.
fn parse_addr(s: &str) -> Result<(IpAddr, Option<u8>), String> {
    if s.contains('/') {
        let c: IpCidr = s.parse().map_err(|e: BadValue| e.to_string())?;
        return Ok((c.ip(), Some(c.prefix())));
    }
    s.parse()
        .map(|ip| (ip, None))
        .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))
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
            let cidr: IpCidr = a.parse().map_err(|e: BadValue| format!("addr add: {e}"))?;
            let dev = dev_arg(&cfg, rest, ADDR_USAGE)?;
            change(sh, &format!("addr add {cidr} dev {dev}"), |c| {
                add_address(c, &dev, cidr)
            })?;
            Ok(json!({}))
        }
        ["del", a, rest @ ..] => {
            let (ip, prefix) = parse_addr(a).map_err(|e| format!("addr del: {e}"))?;
            let dev = dev_arg(&cfg, rest, ADDR_USAGE)?;
            change(sh, &format!("addr del {a} dev {dev}"), |c| {
                del_address_unused(c, &dev, ip, prefix)
            })?;
            Ok(json!({}))
        }
        _ => Err(ADDR_USAGE.to_string()),
    }
}

/// Adds `cidr` to the stack's addresses on `dev`, refusing one that the
/// stack or a kernel side already has; [`change`] then checks it as a
/// file's address is checked.
fn add_address(c: &mut Config, dev: &str, cidr: IpCidr) -> Result<(), String> {
    let ip = cidr.ip();
    let owner = |i: &&Interface| i.all_addresses().any(|x| x.ip() == ip);
    if let Some(owner) = c.interfaces.iter().find(owner) {
        return Err(format!("{ip} is already an address of {}", owner.name));
    }
    let host = |i: &&Interface| i.all_host_addresses().any(|x| x.ip() == ip);
    if let Some(owner) = c.interfaces.iter().find(host) {
        return Err(format!(
            "{ip} is the kernel side's address on {}",
            owner.name
        ));
    }
    let i = iface_of(c, dev)?;
    let ifc = &mut c.interfaces[i];
    if ifc.count_like(cidr) >= MAX_ADDRESSES {
        return Err(format!(
            "{dev} has {MAX_ADDRESSES} {} addresses, the most an interface may have",
            cidr.family()
        ));
    }
    ifc.push_address(cidr);
    Ok(())
}

/// Removes the stack's address `ip` from `dev` (if `prefix` is given,
/// only with that prefix length); returns it.
fn del_address(
    c: &mut Config,
    dev: &str,
    ip: IpAddr,
    prefix: Option<u8>,
) -> Result<IpCidr, String> {
    let i = iface_of(c, dev)?;
    let ifc = &mut c.interfaces[i];
    let gone = ifc
        .all_addresses()
        .find(|a| a.ip() == ip)
        .ok_or_else(|| format!("{ip} is not an address of {dev}"))?;
    if let Some(p) = prefix.filter(|&p| p != gone.prefix()) {
        return Err(format!("the address on {dev} is {gone}, not {ip}/{p}"));
    }
    ifc.remove_address(ip);
    Ok(gone)
}

/// [`del_address`], refused if a route needs the address to reach its
/// gateway.
fn del_address_unused(
    c: &mut Config,
    dev: &str,
    ip: IpAddr,
    prefix: Option<u8>,
) -> Result<(), String> {
    let gone = del_address(c, dev, ip, prefix)?;
    if let Some(r) = c.routes.iter().find(|r| !gateway_reachable(c, r)) {
        return Err(format!(
            "the route {} needs {gone} to reach its gateway: delete the route first",
            route_text(r)
        ));
    }
    Ok(())
}

/// `ip addr`'s view: per interface its state, MTU, MAC and addresses:
/// IPv4 (the first one primary), then IPv6 (the configured ones, then the
/// link-local one), each IPv6 one with the state of ipd's duplicate
/// address detection.
fn addr_show(sh: &Shared, c: &Config, only: Option<usize>) -> Value {
    let f = &sh.fabric;
    // ipd's records, read once: the state of its own addresses, and the
    // ones it made from advertised prefixes.
    let records = strata_ipd::saved_records(f).unwrap_or_default();
    let dad = dad_states(&records);
    let auto = auto_addresses(&records);
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
        let mut info = inet_info(ifc, &mut text);
        let mine: Vec<Cidr6> = auto
            .iter()
            .filter(|(k, _)| usize::from(*k) == i)
            .map(|(_, a)| *a)
            .collect();
        info.extend(inet6_info(ifc, i as u8, &mine, &dad, &mut text));
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

/// An interface's IPv4 addresses for [`addr_show`], as JSON; their lines
/// go to `text`.
fn inet_info(ifc: &Interface, text: &mut String) -> Vec<Value> {
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
    info
}

/// An interface's IPv6 addresses for [`addr_show`] (interface `index`),
/// as JSON: the configured ones, then the link-local one ipd makes from
/// the MAC. One whose duplicate address detection runs is `tentative`,
/// one found in use by another node also `dadfailed`, as Linux marks them.
/// Their lines go to `text`.
fn inet6_info(
    ifc: &Interface,
    index: u8,
    auto: &[Cidr6],
    dad: &HashMap<(u8, Ipv6Addr), u8>,
    text: &mut String,
) -> Vec<Value> {
    let link_local = Cidr6 {
        addr: strata_proto::ndp::link_local_from_mac(strata_proto::MacAddr(ifc.mac.0)),
        prefix: 64,
    };
    let global = ifc.addresses6.iter().map(|a| (*a, "global"));
    let dynamic = auto.iter().map(|a| (*a, "global dynamic"));
    global
        .chain(dynamic)
        .chain([(link_local, "link")])
        .map(|(a, scope)| {
            let state = dad.get(&(index, a.addr)).copied();
            let dadfailed = state == Some(neigh_state::ADDR_DUPLICATE);
            let tentative = dadfailed || state == Some(neigh_state::ADDR_TENTATIVE);
            let flags = match (dadfailed, tentative) {
                (true, _) => " dadfailed tentative",
                (false, true) => " tentative",
                _ => "",
            };
            let _ = writeln!(text, "    inet6 {a} scope {scope}{flags}");
            let mut v = json!({
                "family": "inet6",
                "local": a.addr.to_string(),
                "prefixlen": a.prefix,
                "scope": scope.trim_end_matches(" dynamic"),
            });
            if scope.ends_with("dynamic") {
                v["dynamic"] = json!(true);
            }
            if tentative {
                v["tentative"] = json!(true);
            }
            if dadfailed {
                v["dadfailed"] = json!(true);
            }
            v
        })
        .collect()
}

// ----------------------------------------------------------------- route

/// Whether route `r`'s gateway (if any) is reachable as validation wants
/// it: an IPv4 one in a connected prefix of its interface, or of any
/// interface when it names none; an IPv6 one without an interface in the
/// prefix of an IPv6 address of some interface (with one, it is taken to
/// be on that link).
fn gateway_reachable(c: &Config, r: &IpRoute) -> bool {
    match r {
        IpRoute::V4(r) => {
            let Some(via) = r.via else { return true };
            c.interfaces
                .iter()
                .filter(|i| r.dev.as_ref().is_none_or(|d| *d == i.name))
                .any(|i| i.addresses.iter().any(|a| a.contains(via)))
        }
        IpRoute::V6(r) => {
            let Some(via) = r.via.filter(|_| r.dev.is_none()) else {
                return true;
            };
            c.interfaces
                .iter()
                .any(|i| i.addresses6.iter().any(|a| a.contains(via)))
        }
    }
}

/// A destination as `ip route` shows it: `default` for either family's
/// default route.
fn dest_text(to: IpCidr) -> String {
    match to {
        IpCidr::V6(c) if c.prefix == 0 => "default".into(),
        to => dest_name(to),
    }
}

/// A configured route as `strata route` takes it (the IPv6 default route
/// as `::/0`).
fn route_text(r: &IpRoute) -> String {
    let mut t = dest_name(r.to());
    if let Some(v) = r.via() {
        let _ = write!(t, " via {v}");
    }
    if let Some(d) = r.dev() {
        let _ = write!(t, " dev {d}");
    }
    t
}

/// DEST: `default` (IPv4's), `A.B.C.D/N`, `X:X::X/N` (`::/0`: IPv6's
/// default), or a host's address, `A.B.C.D` (/32) or `X:X::X` (/128).
fn parse_dest(s: &str) -> Result<IpCidr, String> {
    match s {
        "default" => Ok(IpCidr::V4(Cidr {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        })),
        s if s.contains('/') => s.parse().map_err(|e: BadValue| e.to_string()),
        s => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(addr)) => Ok(IpCidr::V4(Cidr { addr, prefix: 32 })),
            Ok(IpAddr::V6(addr)) => Ok(IpCidr::V6(Cidr6 { addr, prefix: 128 })),
            Err(_) => Err(format!(
                "{s:?} is not a destination (default, ::/0, a prefix like 10.0.0.0/8 or \
                 fd00::/64, or an address)"
            )),
        },
    }
}

/// The route `route add DEST rest...` asks for, the interface named
/// checked.
fn parse_route(c: &Config, dest: &str, rest: &[&str]) -> Result<IpRoute, String> {
    let add = |e: String| format!("route add: {e}");
    let to = parse_dest(dest).map_err(add)?;
    let (mut via, mut dev) = (None, None);
    for o in rest.chunks(2) {
        match o {
            ["via", g] => {
                let g = g
                    .parse::<IpAddr>()
                    .map_err(|_| add(format!("{g:?} is not an {} address", to.family())))?;
                via = Some(g);
            }
            ["dev", i] => dev = Some(c.interfaces[iface_of(c, i)?].name.clone()),
            _ => return Err(ROUTE_USAGE.to_string()),
        }
    }
    IpRoute::new(to, via, dev).map_err(add)
}

fn route(sh: &Shared, w: &[&str]) -> Result<Value, String> {
    let cfg = sh.config.lock().unwrap().clone();
    match w {
        [] | ["show"] => Ok(route_show(&cfg, learnt6(&sh.fabric))),
        ["add", d, rest @ ..] => {
            let r = parse_route(&cfg, d, rest)?;
            let what = format!("route add {}", route_text(&r));
            change(sh, &what, |c| add_route(c, r))?;
            Ok(json!({}))
        }
        ["del", d] => {
            let to = parse_dest(d).map_err(|e| format!("route del: {e}"))?;
            change(sh, &format!("route del {}", dest_name(to)), |c| {
                del_route(c, to)
            })?;
            Ok(json!({}))
        }
        _ => Err(ROUTE_USAGE.to_string()),
    }
}

/// Adds route `r`, refusing a second one to its destination; [`change`]
/// then checks it as a file's route is checked.
fn add_route(c: &mut Config, r: IpRoute) -> Result<(), String> {
    if let Some(old) = c.routes.iter().find(|x| x.to() == r.to()) {
        return Err(format!(
            "a route to {} already exists ({}): delete it first",
            dest_name(r.to()),
            route_text(old)
        ));
    }
    c.routes.push(r);
    Ok(())
}

/// Removes the configured route to `to`; a connected one is refused.
fn del_route(c: &mut Config, to: IpCidr) -> Result<(), String> {
    if let Some(k) = c.routes.iter().position(|x| x.to() == to) {
        c.routes.remove(k);
        return Ok(());
    }
    for ifc in &c.interfaces {
        let connected = ifc
            .all_addresses()
            .find(|a| a.prefix() == to.prefix() && a.network() == to.ip());
        if let Some(a) = connected {
            return Err(format!(
                "{} is the connected route of {a} on {}: delete the address instead",
                dest_name(to),
                ifc.name
            ));
        }
    }
    if to == IpCidr::V6(LINK_LOCAL_PREFIX) {
        return Err("fe80::/64 is every IPv6 interface's link-local route: it stays".into());
    }
    Err(format!("no route to {} was added", dest_name(to)))
}

/// fe80::/64, the link-local prefix every IPv6 interface has.
const LINK_LOCAL_PREFIX: Cidr6 = Cidr6 {
    addr: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
    prefix: 64,
};

/// `ip route`'s view: the IPv4 routes, then the IPv6 ones (connected
/// and configured, then those router advertisements taught ipd).
fn route_show(c: &Config, learnt6: Vec<(Value, String)>) -> Value {
    let routes: Vec<(Value, String)> = routes4(c)
        .into_iter()
        .chain(routes6(c))
        .chain(learnt6)
        .collect();
    let text: String = routes.iter().map(|(_, t)| format!("{t}\n")).collect();
    json!({"routes": routes.into_iter().map(|(v, _)| v).collect::<Vec<_>>(), "text": text})
}

/// A configured route as JSON and text, `dev` the interface it leaves by:
/// the one named, else the one whose connected prefix holds its gateway.
fn static_route(c: &Config, r: &IpRoute) -> (Value, String) {
    let dev = r.dev().map(str::to_owned).or_else(|| {
        let via = r.via()?;
        c.interfaces
            .iter()
            .find(|i| i.all_addresses().any(|a| a.contains(via)))
            .map(|i| i.name.clone())
    });
    let mut v = json!({"dst": dest_text(r.to()), "dev": dev, "protocol": "static"});
    if let Some(g) = r.via() {
        v["gateway"] = json!(g.to_string());
    }
    let mut text = dest_text(r.to());
    if let Some(g) = r.via() {
        let _ = write!(text, " via {g}");
    }
    if let Some(d) = &dev {
        let _ = write!(text, " dev {d}");
    }
    if r.v6().is_some() {
        text.push_str(" proto static");
    }
    (v, text)
}

/// The IPv4 routes as JSON and text: the connected routes each address
/// implies, then the configured ones; the default route first.
fn routes4(c: &Config) -> Vec<(Value, String)> {
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
                dest_text(IpCidr::V4(to)),
                ifc.name,
                a.addr
            );
            let v = json!({"dst": dest_text(IpCidr::V4(to)), "dev": ifc.name,
                           "protocol": "kernel", "scope": "link",
                           "prefsrc": a.addr.to_string()});
            routes.push((to, v, text));
        }
    }
    for r in &c.routes {
        if let IpRoute::V4(route) = r {
            let (v, text) = static_route(c, r);
            routes.push((route.to, v, text));
        }
    }
    routes.sort_by_key(|(to, _, _)| (to.prefix != 0, u32::from(to.addr), to.prefix));
    routes.into_iter().map(|(_, v, t)| (v, t)).collect()
}

/// The IPv6 routes as JSON and text: per interface, the prefix of each
/// address and the link-local fe80::/64, and the configured routes; the
/// default route first, then by prefix.
fn routes6(c: &Config) -> Vec<(Value, String)> {
    let mut connected: Vec<(Cidr6, &str)> = Vec::new();
    for ifc in &c.interfaces {
        for a in ifc.addresses6.iter().chain([&LINK_LOCAL_PREFIX]) {
            let to = Cidr6 {
                addr: a.network(),
                prefix: a.prefix,
            };
            // One connected route per prefix and interface.
            if !connected.contains(&(to, ifc.name.as_str())) {
                connected.push((to, ifc.name.as_str()));
            }
        }
    }
    let mut routes: Vec<(Cidr6, Value, String)> = connected
        .into_iter()
        .map(|(to, dev)| {
            let v = json!({"dst": to.to_string(), "dev": dev, "protocol": "kernel",
                           "scope": "link"});
            (to, v, format!("{to} dev {dev} proto kernel scope link"))
        })
        .collect();
    for r in &c.routes {
        if let IpRoute::V6(route) = r {
            let (v, text) = static_route(c, r);
            routes.push((route.to, v, text));
        }
    }
    // Stable: a connected route before a configured one of its prefix.
    routes.sort_by_key(|(to, _, _)| (to.prefix != 0, u128::from(to.addr), to.prefix));
    routes.into_iter().map(|(_, v, t)| (v, t)).collect()
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
            let ip = parse_neigh_ip(ip, "added").map_err(|e| format!("neigh add: {e}"))?;
            let mac: MacAddr = mac
                .parse()
                .map_err(|e: BadValue| format!("neigh add: {e}"))?;
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
            let ip = parse_neigh_ip(ip, "deleted").map_err(|e| format!("neigh del: {e}"))?;
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

/// The address of a neighbour to be `done` ("added", "deleted") by hand:
/// IPv4 only, for now.
fn parse_neigh_ip(s: &str, done: &str) -> Result<Ipv4Addr, String> {
    if s.parse::<Ipv6Addr>().is_ok() {
        return Err(format!("IPv6 neighbours cannot be {done} by hand yet"));
    }
    parse_ip(s)
}

/// Whether a record of ipd's is not a neighbour but one of its own IPv6
/// addresses, under or after duplicate address detection.
fn is_own_address(r: &NeighRecord) -> bool {
    matches!(
        r.state,
        neigh_state::ADDR_TENTATIVE | neigh_state::ADDR_DUPLICATE | neigh_state::ADDR_PREFERRED
    )
}

/// The duplicate address detection state (ADDR_TENTATIVE,
/// ADDR_DUPLICATE or ADDR_PREFERRED) of ipd's own IPv6 addresses, by
/// interface index and address; an address without one (ipd has not
/// saved since it was added) is shown as usable.
fn dad_states(records: &[NeighRecord]) -> HashMap<(u8, Ipv6Addr), u8> {
    records
        .iter()
        .filter(|r| is_own_address(r))
        .filter_map(|r| Some(((r.iface, r.ip.as_v6()?), r.state)))
        .collect()
}

/// ipd's IPv6 addresses made from advertised prefixes (SLAAC), by
/// interface index: address and prefix length.
fn auto_addresses(records: &[NeighRecord]) -> Vec<(u8, Cidr6)> {
    records
        .iter()
        .filter(|r| is_own_address(r) && r.mac[0] == 1)
        .filter_map(|r| {
            let addr = r.ip.as_v6()?;
            Some((
                r.iface,
                Cidr6 {
                    addr,
                    prefix: r.mac[1].min(128),
                },
            ))
        })
        .collect()
}

/// What router advertisements taught ipd, as routes (JSON and text):
/// default routers and on-link prefixes, `proto ra` as Linux shows them.
fn learnt6(f: &Fabric) -> Vec<(Value, String)> {
    strata_ipd::saved_records(f)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            let ip = r.ip.as_v6()?;
            let dev = f.iface_name(r.iface);
            match r.state {
                neigh_state::ROUTER => Some((
                    json!({"dst": "default", "gateway": ip.to_string(), "dev": dev,
                           "protocol": "ra"}),
                    format!("default via {ip} dev {dev} proto ra"),
                )),
                neigh_state::PREFIX => {
                    let to = Cidr6 {
                        addr: ip,
                        prefix: r.mac[0].min(128),
                    };
                    Some((
                        json!({"dst": to.to_string(), "dev": dev, "protocol": "ra",
                               "scope": "link"}),
                        format!("{to} dev {dev} proto ra scope link"),
                    ))
                }
                _ => None,
            }
        })
        .collect()
}

/// What `ip neigh` calls a neighbour state.
fn state_name(state: u8) -> &'static str {
    match state {
        neigh_state::REACHABLE => "REACHABLE",
        neigh_state::DELAY => "DELAY",
        neigh_state::PROBE => "PROBE",
        neigh_state::PERMANENT => "PERMANENT",
        _ => "STALE",
    }
}

/// ipd's neighbour cache of both families as it last saved it to its
/// arena, permanent entries included.
fn neigh_show(f: &Fabric) -> Value {
    let records = match strata_ipd::saved_records(f) {
        Ok(r) => r,
        Err(stored) => {
            let text = format!(
                "ipd (upgraded) keeps its neighbours in arena format {stored}, which this launcher \
                 does not read: restart the instance with the launcher built beside that ipd\n"
            );
            return json!({ "entries": [], "text": text });
        }
    };
    let now = strata_ipc::now_ns();
    let mut text = String::new();
    let entries: Vec<Value> = records
        .iter()
        .filter(|r| r.state < neigh_state::ADDR_TENTATIVE)
        .map(|r| {
            let mac = MacAddr(r.mac).to_string();
            let state = state_name(r.state);
            let ip = r.ip.to_ip();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn dual_stack() -> Config {
        crate::config::parse(
            "[[interface]]\nname = \"strata0\"\nmac = \"02:53:54:00:00:01\"\n\
             addresses = [\"10.77.0.2/24\", \"fd00:77::2/64\"]\n\
             host_addresses = [\"10.77.0.1/24\", \"fd00:77::1/64\"]\n\
             [[interface]]\nname = \"p0\"\ndriver = \"pair\"\nlink = \"l\"\nside = \"a\"\n\
             addresses = [\"fd00:88::2/64\", \"fd00:77::9/64\"]\n",
        )
        .unwrap()
    }

    #[test]
    fn addresses_of_either_family_are_added_and_deleted() {
        let mut c = dual_stack();
        add_address(&mut c, "strata0", "fd00:99::2/48".parse().unwrap()).unwrap();
        add_address(&mut c, "strata0", "10.99.0.2/16".parse().unwrap()).unwrap();
        c.validate().unwrap();
        let ifc = &c.interfaces[0];
        assert_eq!(ifc.addresses6[1].to_string(), "fd00:99::2/48");
        assert_eq!(ifc.addresses[1].to_string(), "10.99.0.2/16");
        let err = |c: &mut Config, a: &str| add_address(c, "strata0", a.parse().unwrap());
        assert_eq!(
            err(&mut c, "fd00:88::2/64").unwrap_err(),
            "fd00:88::2 is already an address of p0"
        );
        assert_eq!(
            err(&mut c, "fd00:77::1/64").unwrap_err(),
            "fd00:77::1 is the kernel side's address on strata0"
        );
        // What is not caught here, validation (run by `change`) refuses
        // as it refuses a file.
        err(&mut c, "fe80::1/64").unwrap();
        assert_eq!(
            c.validate().unwrap_err().problem(),
            "fe80::1 is a link-local address; link-local addresses are made from the MAC automatically"
        );
        let mut c = dual_stack();
        for k in 1..=15 {
            err(&mut c, &format!("fd00:66::{k:x}/64")).unwrap();
        }
        assert_eq!(
            err(&mut c, "fd00:77::ff/64").unwrap_err(),
            "strata0 has 16 IPv6 addresses, the most an interface may have"
        );

        let mut c = dual_stack();
        let ip = IpAddr::V6(v6("fd00:77::2"));
        assert_eq!(
            del_address(&mut c, "strata0", ip, Some(48)).unwrap_err(),
            "the address on strata0 is fd00:77::2/64, not fd00:77::2/48"
        );
        let gone = del_address(&mut c, "strata0", ip, Some(64)).unwrap();
        assert_eq!(gone.to_string(), "fd00:77::2/64");
        assert!(c.interfaces[0].addresses6.is_empty());
        assert_eq!(c.interfaces[0].addresses.len(), 1);
        assert_eq!(
            del_address(&mut c, "strata0", ip, None).unwrap_err(),
            "fd00:77::2 is not an address of strata0"
        );
    }

    #[test]
    fn address_words_parse() {
        assert_eq!(
            parse_addr("fd00::1/64").unwrap(),
            (IpAddr::V6(v6("fd00::1")), Some(64))
        );
        assert_eq!(
            parse_addr("fd00::1").unwrap(),
            (IpAddr::V6(v6("fd00::1")), None)
        );
        assert_eq!(
            parse_addr("10.0.0.1").unwrap(),
            (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), None)
        );
        assert_eq!(
            parse_addr("fd00::g").unwrap_err(),
            "\"fd00::g\" is not an IPv4 or IPv6 address"
        );
        assert_eq!(
            parse_addr("fd00::1/129").unwrap_err(),
            "prefix length 129 is out of range 0..=128"
        );
        assert_eq!(
            "fd00::1".parse::<IpCidr>().unwrap_err().to_string(),
            "\"fd00::1\" is not an IPv4 or IPv6 address with a prefix length \
             (expected like 10.77.0.2/24 or fd00:77::2/64)"
        );
    }

    #[test]
    fn ipv6_addresses_show_with_their_detection_state() {
        let c = dual_stack();
        let ll = v6("fe80::53:54ff:fe00:1");
        let dad = HashMap::from([
            ((0, v6("fd00:77::2")), neigh_state::ADDR_TENTATIVE),
            ((0, ll), neigh_state::ADDR_DUPLICATE),
            // Another interface's state is not this one's.
            ((1, v6("fd00:77::2")), neigh_state::ADDR_DUPLICATE),
        ]);
        let mut text = String::new();
        let info = inet6_info(&c.interfaces[0], 0, &[], &dad, &mut text);
        assert_eq!(
            text,
            "    inet6 fd00:77::2/64 scope global tentative\n    \
             inet6 fe80::53:54ff:fe00:1/64 scope link dadfailed tentative\n"
        );
        assert_eq!(
            info,
            [
                json!({"family": "inet6", "local": "fd00:77::2", "prefixlen": 64,
                       "scope": "global", "tentative": true}),
                json!({"family": "inet6", "local": ll.to_string(), "prefixlen": 64,
                       "scope": "link", "tentative": true, "dadfailed": true}),
            ]
        );
        let mut text = String::new();
        let info = inet6_info(&c.interfaces[1], 1, &[], &HashMap::new(), &mut text);
        assert_eq!(info.len(), 3);
        assert!(info.iter().all(|v| v.get("tentative").is_none()));
        assert!(
            text.starts_with("    inet6 fd00:88::2/64 scope global\n"),
            "{text}"
        );
    }

    #[test]
    fn connected_ipv6_prefixes_are_routes() {
        let v = route_show(&dual_stack(), Vec::new());
        assert_eq!(
            v["text"],
            "10.77.0.0/24 dev strata0 proto kernel scope link src 10.77.0.2\n\
             fd00:77::/64 dev strata0 proto kernel scope link\n\
             fd00:77::/64 dev p0 proto kernel scope link\n\
             fd00:88::/64 dev p0 proto kernel scope link\n\
             fe80::/64 dev strata0 proto kernel scope link\n\
             fe80::/64 dev p0 proto kernel scope link\n"
        );
        assert_eq!(
            v["routes"][1],
            json!({"dst": "fd00:77::/64", "dev": "strata0", "protocol": "kernel",
                   "scope": "link"})
        );
    }

    #[test]
    fn ipv6_neighbours_are_refused_clearly() {
        assert_eq!(
            parse_neigh_ip("fd00::1", "added").unwrap_err(),
            "IPv6 neighbours cannot be added by hand yet"
        );
        assert_eq!(
            parse_neigh_ip("10.0.0.1", "added").unwrap(),
            Ipv4Addr::new(10, 0, 0, 1)
        );
        assert_eq!(
            parse_neigh_ip("10.0.0", "deleted").unwrap_err(),
            "\"10.0.0\" is not an IPv4 address"
        );
    }

    #[test]
    fn route_words_parse_for_either_family() {
        let dest = |s: &str| parse_dest(s).map(|c| c.to_string());
        assert_eq!(dest("default").unwrap(), "0.0.0.0/0");
        assert_eq!(dest("::/0").unwrap(), "::/0");
        assert_eq!(dest("fd00:99::/64").unwrap(), "fd00:99::/64");
        assert_eq!(dest("fd00:99::1").unwrap(), "fd00:99::1/128");
        assert_eq!(dest("10.9.0.1").unwrap(), "10.9.0.1/32");
        assert_eq!(
            dest("fd00::/129").unwrap_err(),
            "prefix length 129 is out of range 0..=128"
        );
        assert_eq!(
            dest("fd00::g").unwrap_err(),
            "\"fd00::g\" is not a destination (default, ::/0, a prefix like 10.0.0.0/8 or \
             fd00::/64, or an address)"
        );
        let c = dual_stack();
        let r = |w: &[&str]| parse_route(&c, w[0], &w[1..]);
        let ok = r(&["fd00:99::/64", "via", "fd00:77::1", "dev", "strata0"]).unwrap();
        assert_eq!(route_text(&ok), "fd00:99::/64 via fd00:77::1 dev strata0");
        let default6 = r(&["::/0", "via", "fe80::1", "dev", "p0"]).unwrap();
        assert_eq!(route_text(&default6), "::/0 via fe80::1 dev p0");
        assert_eq!(dest_text(default6.to()), "default");
        assert_eq!(
            r(&["fd00:99::/64", "via", "10.77.0.1"]).unwrap_err(),
            "route add: 10.77.0.1 is an IPv4 address, but the destination fd00:99::/64 is IPv6"
        );
        assert_eq!(
            r(&["default", "via", "fe80::1", "dev", "p0"]).unwrap_err(),
            "route add: fe80::1 is an IPv6 address, but the destination default is IPv4 \
             (the IPv6 default route is ::/0)"
        );
        assert_eq!(
            r(&["::/0", "via", "fd00:77::zz"]).unwrap_err(),
            "route add: \"fd00:77::zz\" is not an IPv6 address"
        );
        assert_eq!(
            r(&["10.9.0.0/16", "via", "10.77.0"]).unwrap_err(),
            "route add: \"10.77.0\" is not an IPv4 address"
        );
        assert_eq!(
            r(&["::/0", "via", "fe80::1", "dev", "eth9"]).unwrap_err(),
            "no interface named \"eth9\" (interfaces: strata0, p0)"
        );
        assert_eq!(r(&["::/0", "gw", "fe80::1"]).unwrap_err(), ROUTE_USAGE);
    }

    #[test]
    fn ipv6_routes_are_added_shown_and_deleted() {
        let mut c = dual_stack();
        let add = |c: &mut Config, w: &[&str]| {
            let r = parse_route(c, w[0], &w[1..])?;
            add_route(c, r)?;
            c.validate().map_err(|e| e.problem())
        };
        add(&mut c, &["fd00:99::/64", "via", "fd00:77::1"]).unwrap();
        add(&mut c, &["::/0", "via", "fe80::1", "dev", "p0"]).unwrap();
        add(&mut c, &["default", "via", "10.77.0.1"]).unwrap();
        add(&mut c, &["fd00:98::/48", "dev", "p0"]).unwrap();
        add(&mut c, &["fd00:97::/64", "via", "fd00:88::1", "dev", "p0"]).unwrap();
        assert_eq!(
            add(&mut c, &["::/0", "via", "fd00:77::1"]).unwrap_err(),
            "a route to ::/0 already exists (::/0 via fe80::1 dev p0): delete it first"
        );
        let v = route_show(&c, Vec::new());
        assert_eq!(
            v["text"],
            "default via 10.77.0.1 dev strata0\n\
             10.77.0.0/24 dev strata0 proto kernel scope link src 10.77.0.2\n\
             default via fe80::1 dev p0 proto static\n\
             fd00:77::/64 dev strata0 proto kernel scope link\n\
             fd00:77::/64 dev p0 proto kernel scope link\n\
             fd00:88::/64 dev p0 proto kernel scope link\n\
             fd00:97::/64 via fd00:88::1 dev p0 proto static\n\
             fd00:98::/48 dev p0 proto static\n\
             fd00:99::/64 via fd00:77::1 dev strata0 proto static\n\
             fe80::/64 dev strata0 proto kernel scope link\n\
             fe80::/64 dev p0 proto kernel scope link\n"
        );
        let routes = v["routes"].as_array().unwrap();
        assert_eq!(
            routes[2],
            json!({"dst": "default", "gateway": "fe80::1", "dev": "p0", "protocol": "static"})
        );
        assert_eq!(
            routes[8],
            json!({"dst": "fd00:99::/64", "gateway": "fd00:77::1", "dev": "strata0",
                   "protocol": "static"})
        );
        assert_eq!(
            routes[7],
            json!({"dst": "fd00:98::/48", "dev": "p0", "protocol": "static"})
        );

        // The address a gateway needs goes only after the route; a
        // gateway with its interface named needs none.
        let fd = |s: &str| IpAddr::V6(v6(s));
        let mut c2 = c.clone();
        // strata0's fd00:77::2 still holds the gateway.
        del_address_unused(&mut c2, "p0", fd("fd00:77::9"), None).unwrap();
        assert_eq!(
            del_address_unused(&mut c2, "strata0", fd("fd00:77::2"), None).unwrap_err(),
            "the route fd00:99::/64 via fd00:77::1 needs fd00:77::2/64 to reach its gateway: \
             delete the route first"
        );
        let mut c2 = c.clone();
        del_address_unused(&mut c2, "p0", fd("fd00:88::2"), None).unwrap();
        c2.validate().unwrap();

        // Deleting: `default` is IPv4's, `::/0` IPv6's.
        del_route(&mut c, parse_dest("::/0").unwrap()).unwrap();
        assert_eq!(
            del_route(&mut c, parse_dest("::/0").unwrap()).unwrap_err(),
            "no route to ::/0 was added"
        );
        assert!(c.routes.iter().any(|r| r.to().to_string() == "0.0.0.0/0"));
        del_route(&mut c, parse_dest("fd00:99::/64").unwrap()).unwrap();
        del_address_unused(&mut c, "strata0", fd("fd00:77::2"), None).unwrap();
        assert_eq!(
            del_route(&mut c, parse_dest("fd00:88::/64").unwrap()).unwrap_err(),
            "fd00:88::/64 is the connected route of fd00:88::2/64 on p0: delete the address instead"
        );
        assert_eq!(
            del_route(&mut c, parse_dest("fe80::/64").unwrap()).unwrap_err(),
            "fe80::/64 is every IPv6 interface's link-local route: it stays"
        );
        assert_eq!(
            del_route(&mut c, parse_dest("10.77.0.0/24").unwrap()).unwrap_err(),
            "10.77.0.0/24 is the connected route of 10.77.0.2/24 on strata0: delete the address instead"
        );
        c.validate().unwrap();
    }

    #[test]
    fn an_ipv4_gateway_address_goes_only_after_its_route() {
        let mut c = dual_stack();
        let r = parse_route(&c, "10.98.0.0/24", &["via", "10.77.0.1"]).unwrap();
        add_route(&mut c, r).unwrap();
        let ip = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(
            del_address_unused(&mut c.clone(), "strata0", ip, None).unwrap_err(),
            "the route 10.98.0.0/24 via 10.77.0.1 needs 10.77.0.2/24 to reach its gateway: \
             delete the route first"
        );
        del_route(&mut c, parse_dest("10.98.0.0/24").unwrap()).unwrap();
        del_address_unused(&mut c, "strata0", ip, None).unwrap();
    }

    #[test]
    fn neighbour_state_names() {
        assert_eq!(state_name(neigh_state::DELAY), "DELAY");
        assert_eq!(state_name(neigh_state::REACHABLE), "REACHABLE");
        assert_eq!(state_name(neigh_state::STALE), "STALE");
        let own = NeighRecord {
            state: neigh_state::ADDR_TENTATIVE,
            ..NeighRecord::default()
        };
        assert!(is_own_address(&own));
        assert!(!is_own_address(&NeighRecord {
            state: neigh_state::DELAY,
            ..own
        }));
    }
}
