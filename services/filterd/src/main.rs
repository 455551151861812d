//! filterd's process shell: the netfilter layer between netdevd and ipd.
//!
//! On the way in it runs PREROUTING, then INPUT for the stack's own
//! addresses or FORWARD (with the outgoing interface from the routing
//! table) for the rest; on the way out OUTPUT and POSTROUTING for what the
//! stack sends, POSTROUTING alone for what ipd forwards. Non-IPv4 frames
//! (ARP) pass untouched. The rule set comes from the launcher through
//! filterd's arena ([`strata_filterd::shm`]), where the rule counters and
//! the connection-tracking table also live, so a restarted filterd keeps
//! every connection and NAT binding.

use std::sync::atomic::AtomicU64;
use strata_filterd::conntrack::Conntrack;
use strata_filterd::rule::Hook;
use strata_filterd::ruleset::RuleSet;
use strata_filterd::shm::Shm;
use strata_filterd::tables::Tables;
use strata_filterd::{reject, CtRef, Decision, Filter, Meta};
use strata_ipc::addrs::{is_multicast, AddrTable};
use strata_ipc::handle::{flags, NO_IFACE};
use strata_ipc::{now_ns, service, Buffers, Handle, LayerId, Service, BUDGET};

const IN_UP: usize = 0;
const IN_DOWN: usize = 1;
/// The one gauge among the counters: entries in the conntrack table.
const CT_ENTRIES: usize = 21;
const STAT_NAMES: [&str; 25] = [
    "ingress_packets",
    "egress_packets",
    "fast_path",
    "inspected",
    "dropped_rule",
    "dropped_policy",
    "rejected",
    "reject_unanswered",
    "malformed",
    "nat_failed",
    "rules_examined",
    "log_lines",
    "log_suppressed",
    "ct_created",
    "ct_early_drops",
    "ct_full",
    "ct_invalid",
    "ct_expired",
    "ct_restored",
    "ct_discarded",
    "ct_clashes",
    "ct_entries",
    "rule_sets_loaded",
    "rule_sets_refused",
    "no_buffer",
];

const ETH: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];

fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// The key of conntrack's hashes, drawn once when the table is laid out
/// (afterwards it is kept in the arena with the entries).
fn secret() -> [u64; 2] {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if !ok {
        b[..8].copy_from_slice(&now_ns().to_le_bytes());
        b[8..].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
    }
    [
        u64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
        u64::from_le_bytes(b[8..].try_into().unwrap_or_default()),
    ]
}

struct Shell<'a> {
    svc: &'a Service,
    filter: Filter<'a>,
    shm: Shm,
    addrs: AddrTable,
    names: Vec<String>,
    rules_gen: u64,
    loaded: u64,
    refused: u64,
    unanswered: u64,
    no_buffer: u64,
}

impl Shell<'_> {
    /// Installs the published rule set if it changed. A set that does
    /// not parse or compile (the launcher checks before publishing, so
    /// only a mismatch of versions could do it) leaves the old one.
    fn load_rules(&mut self) {
        if self.shm.generation() == self.rules_gen {
            return;
        }
        let Some((gen, bytes)) = self.shm.read_rules() else {
            return;
        };
        self.rules_gen = gen;
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let set = serde_json::from_slice::<Tables>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| RuleSet::compile(&t, &names));
        match set {
            Ok(set) => {
                self.filter.set_rules(set, &names);
                self.loaded += 1;
                self.svc.log(&format!("rule set {gen} in force"));
            }
            Err(e) => {
                self.refused += 1;
                self.svc.log(&format!("rule set {gen} refused: {e}"));
            }
        }
    }

    /// Runs the hooks of one direction on `h`; true when it goes on.
    /// `ingress`: from netdevd, else from ipd. Rejects are answered into
    /// `back` (towards where the packet came from).
    fn packet<B: Buffers>(
        &mut self,
        pool: &mut B,
        h: &mut Handle,
        ingress: bool,
        now: u64,
        back: &mut Vec<Handle>,
    ) -> bool {
        let Ok(frame) = pool.data_mut(h) else {
            // A stale or foreign handle: nothing to free.
            return false;
        };
        // Not IPv4, or too short to be: ipd's business (it counts the
        // malformed).
        if frame.len() < ETH + 20 || frame[12..14] != ETHERTYPE_IPV4 {
            return true;
        }
        let ip = &mut frame[ETH..];
        let mut meta = Meta {
            mark: h.mark,
            ct: CtRef(h.ct_id),
            ..Meta::default()
        };
        let hooks: &[Hook] = if ingress {
            meta.in_if = h.iif;
            meta.in_addr = self.addrs.primary_of(h.iif);
            &[Hook::Prerouting]
        } else if h.flags & flags::FORWARDED != 0 {
            meta.in_if = h.iif;
            meta.out_if = h.oif;
            meta.out_addr = self.addrs.primary_of(h.oif);
            &[Hook::Postrouting]
        } else {
            meta.ct = CtRef::NONE;
            meta.out_if = h.oif;
            meta.out_addr = self.addrs.primary_of(h.oif);
            &[Hook::Output, Hook::Postrouting]
        };
        let mut decision = Decision::Accept {
            changed: false,
            mark: meta.mark,
        };
        for &hook in hooks {
            decision = self.filter.hook(hook, ip, &mut meta, now);
            if !matches!(decision, Decision::Accept { .. }) {
                break;
            }
        }
        if ingress && matches!(decision, Decision::Accept { .. }) {
            // The routing decision, after PREROUTING's DNAT.
            let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
            let local = self.addrs.is_local(dst)
                || self.addrs.is_subnet_broadcast(dst)
                || dst == u32::MAX
                || is_multicast(dst);
            let hook = if local {
                Hook::Input
            } else {
                meta.out_if = self.addrs.out_iface(dst).unwrap_or(NO_IFACE);
                meta.out_addr = self.addrs.primary_of(meta.out_if);
                Hook::Forward
            };
            decision = self.filter.hook(hook, ip, &mut meta, now);
        }
        match decision {
            Decision::Accept { mark, .. } => {
                h.mark = mark;
                h.ct_id = meta.ct.0;
                true
            }
            Decision::Drop(_) => {
                pool.free(h);
                false
            }
            Decision::Reject(with) => {
                self.answer(pool, h, ingress, with, back);
                pool.free(h);
                false
            }
        }
    }

    /// Sends the answer to a rejected packet back where it came from.
    fn answer<B: Buffers>(
        &mut self,
        pool: &mut B,
        h: &Handle,
        ingress: bool,
        with: strata_filterd::rule::RejectWith,
        back: &mut Vec<Handle>,
    ) {
        let mut buf = [0u8; 640];
        let n = match pool.data(h) {
            Ok(frame) => reject::build(frame, with, &mut buf),
            Err(_) => None,
        };
        let Some(n) = n else {
            self.unanswered += 1;
            return;
        };
        let Some(mut r) = pool.alloc(n) else {
            self.no_buffer += 1;
            return;
        };
        r.data_len = n as u32;
        match pool.data_mut(&r) {
            Ok(d) => d.copy_from_slice(&buf[..n]),
            Err(_) => {
                pool.free(&r);
                self.no_buffer += 1;
                return;
            }
        }
        r.l2_off = 0;
        r.l3_off = ETH as u16;
        r.ethertype = u16::from_be_bytes(ETHERTYPE_IPV4);
        // Back out of the interface it came in on, or up to ipd as if
        // received on the one it was leaving by.
        if ingress {
            r.oif = h.iif;
            r.iif = NO_IFACE;
        } else {
            r.iif = h.oif;
            r.oif = NO_IFACE;
        }
        back.push(r);
    }

    fn publish_counters(&self, base: &[u64]) {
        let f = &self.svc.fabric;
        let s = &self.filter.stats;
        let c = &self.filter.conntrack().stats;
        let v = [
            0,
            0,
            s.fast_path,
            s.inspected,
            s.dropped_rule,
            s.dropped_policy,
            s.rejected,
            self.unanswered,
            s.malformed,
            s.nat_failed,
            s.rules_examined,
            s.logs,
            s.logs_suppressed,
            c.created,
            c.early_drops,
            c.full,
            c.invalid,
            c.expired,
            c.restored,
            c.discarded,
            c.clashes,
            0,
            self.loaded,
            self.refused,
            self.no_buffer,
        ];
        debug_assert_eq!(STAT_NAMES[CT_ENTRIES], "ct_entries");
        for (i, x) in v.iter().enumerate().skip(2) {
            f.set_counter(self.svc.me, i, base[i] + x);
        }
        // A gauge, not a count.
        f.set_counter(
            self.svc.me,
            CT_ENTRIES,
            self.filter.conntrack().len() as u64,
        );
    }
}

fn main() {
    let svc = Service::start("filterd").unwrap_or_else(|e| service::die("filterd", &e));
    let f = &svc.fabric;
    let me = svc.me;
    f.register_counters(me, &STAT_NAMES);
    let base: Vec<u64> = (0..STAT_NAMES.len()).map(|i| f.counter(me, i)).collect();

    let (p, n) = f.arena_bytes(me);
    // SAFETY: the fabric maps filterd's arena for the process's lifetime.
    let shm = unsafe { Shm::new(p, n) }
        .unwrap_or_else(|| service::die("filterd", &format!("arena of {n} bytes is too small")));
    let (cp, cn) = shm.conntrack_region();
    // SAFETY: the region is ours alone and mapped for good.
    let (ct, fresh) = unsafe { Conntrack::from_raw(cp, cn, secret(), now_ms()) }
        .unwrap_or_else(|| service::die("filterd", "no room for the conntrack table"));
    if !fresh {
        svc.log(&format!(
            "restored {} tracked connections ({} discarded)",
            ct.len(),
            ct.stats.discarded
        ));
    }
    // SAFETY: the counters are atomics in the mapping, which `svc` keeps
    // until the process ends (`main` does not return while they are in
    // use, and nothing unmaps the fabric before): `'static` holds.
    let counters: &'static [AtomicU64] =
        unsafe { std::slice::from_raw_parts(shm.counters().as_ptr(), shm.counters().len()) };

    let mut addrs = AddrTable::default();
    for i in &svc.config.ifaces {
        if addrs.add_iface(i.index, &i.addrs, i.mtu).is_err() {
            service::die("filterd", "bad interface address prefix");
        }
    }
    for r in &svc.config.routes {
        if addrs.add_route(r).is_err() {
            service::die("filterd", "bad route prefix");
        }
    }
    addrs.finish();
    let names: Vec<String> = (0..f.params().n_ifaces as u8)
        .map(|i| f.iface_name(i))
        .collect();
    let mut sh = Shell {
        svc: &svc,
        filter: Filter::new(ct, counters),
        shm,
        addrs,
        names,
        rules_gen: 0,
        loaded: 0,
        refused: 0,
        unanswered: 0,
        no_buffer: 0,
    };
    sh.load_rules();

    let mut pool = f.pool(me);
    let mut from_dev = f
        .consumer(LayerId::NETDEVD, me)
        .expect("ring netdevd->filterd");
    let mut to_ip = f.producer(me, LayerId::IPD).expect("ring filterd->ipd");
    let mut from_ip = f.consumer(LayerId::IPD, me).expect("ring ipd->filterd");
    let mut to_dev = f
        .producer(me, LayerId::NETDEVD)
        .expect("ring filterd->netdevd");
    let mut batch = [Handle::default(); BUDGET];
    let mut pass: Vec<Handle> = Vec::with_capacity(BUDGET);
    let mut back: Vec<Handle> = Vec::with_capacity(BUDGET);
    let mut last_expire = 0u64;
    let mut last_publish = 0u64;
    svc.ready();
    loop {
        f.beat(me);
        sh.load_rules();
        if let Some(req) = sh.shm.flush_pending() {
            sh.filter.conntrack_mut().flush();
            sh.shm.flush_done(req);
            svc.log("conntrack table flushed");
        }
        let now = now_ms();
        // Take only what both rings a batch may feed can hold:
        // back-pressure instead of drops inside the stack.
        let room = (to_ip.space() as usize)
            .min(to_dev.space() as usize)
            .min(BUDGET);
        let n = from_dev.pop(&mut batch[..room]);
        for h in &mut batch[..n] {
            if !f.take_input(me, h) {
                continue;
            }
            if sh.packet(&mut pool, h, true, now, &mut back) {
                pass.push(*h);
            }
        }
        if n > 0 {
            to_ip.push(&pass);
            to_dev.push(&back);
            pass.clear();
            back.clear();
            f.count(me, IN_UP, n as u64);
        }
        let room = (to_ip.space() as usize)
            .min(to_dev.space() as usize)
            .min(BUDGET);
        let m = from_ip.pop(&mut batch[..room]);
        for h in &mut batch[..m] {
            if !f.take_input(me, h) {
                continue;
            }
            if sh.packet(&mut pool, h, false, now, &mut back) {
                pass.push(*h);
            }
        }
        if m > 0 {
            to_dev.push(&pass);
            to_ip.push(&back);
            pass.clear();
            back.clear();
            f.count(me, IN_DOWN, m as u64);
        }
        for line in sh.filter.logs() {
            svc.log(line);
        }
        sh.filter.clear_logs();
        if now >= last_expire + 1000 {
            last_expire = now;
            sh.filter.expire(now, 4096);
        }
        if n + m > 0 || now >= last_publish + 200 {
            last_publish = now;
            sh.publish_counters(&base);
        }
        if n == 0 && m == 0 {
            // Consumers do not kick producers when they free slots, so a
            // layer held up by a full ring naps briefly instead.
            let blocked = (!from_dev.is_empty() || !from_ip.is_empty())
                && (to_ip.space() == 0 || to_dev.space() == 0);
            let tick = if blocked { 1 } else { service::IDLE_TICK_MS };
            f.sleep(me, &mut [], tick, || {
                from_dev.is_empty() && from_ip.is_empty()
            });
        }
    }
}
