//! filterd's process shell: the netfilter layer between netdevd and ipd.
//!
//! On the way in it runs PREROUTING, then INPUT for the stack's own
//! addresses or FORWARD (with the outgoing interface from the routing
//! table) for the rest; on the way out OUTPUT and POSTROUTING for what the
//! stack sends, POSTROUTING alone for what ipd forwards. IPv4 datagrams
//! meet IPv4's tables, IPv6 packets IPv6's; other frames
//! (ARP) pass untouched. The rule set comes from the launcher through
//! filterd's arena ([`strata_filterd::shm`]), where the rule counters and
//! the connection-tracking table also live, so a restarted filterd keeps
//! every connection and NAT binding.

use std::sync::atomic::AtomicU64;
use strata_filterd::conntrack::{self, Conntrack};
use strata_filterd::local6::Local6;
use strata_filterd::rule::Hook;
use strata_filterd::ruleset::RuleSet;
use strata_filterd::shm::Shm;
use strata_filterd::tables::Tables;
use strata_filterd::{reject, CtRef, Decision, Filter, Meta};
use strata_ipc::addrs::{is_multicast, AddrTable};
use strata_ipc::handle::{flags, NO_IFACE};
use strata_ipc::layout::aside;
use strata_ipc::runtime::StackConfig;
use strata_ipc::serve::{Cx, Layer, Loop, Overflow};
use strata_ipc::service::ArenaFormat;
use strata_ipc::{now_ns, service, Buffers, Handle, LayerId, Service};

strata_ipc::layer_stats! { "filterd";
    /// Frames taken from netdevd.
    IngressPackets => "ingress_packets",
    /// Frames taken from ipd.
    EgressPackets => "egress_packets",
    /// Packets passed without a look (no rules, no conntrack).
    FastPath => "fast_path",
    /// Packets looked at.
    Inspected => "inspected",
    /// Dropped by a DROP rule.
    DroppedRule => "dropped_rule",
    /// Dropped by a chain's policy.
    DroppedPolicy => "dropped_policy",
    /// Refused by a REJECT rule.
    Rejected => "rejected",
    /// Rejected without an answer (none can be built for the packet).
    RejectUnanswered => "reject_unanswered",
    /// Bad IPv4 or IPv6 headers.
    Malformed => "malformed",
    /// NAT failures.
    NatFailed => "nat_failed",
    /// Rules looked at.
    RulesExamined => "rules_examined",
    /// LOG lines written.
    LogLines => "log_lines",
    /// LOG lines held back by the rate limit.
    LogSuppressed => "log_suppressed",
    /// Connections tracked.
    CtCreated => "ct_created",
    /// Unreplied entries dropped to make room.
    CtEarlyDrops => "ct_early_drops",
    /// New connections refused for lack of room.
    CtFull => "ct_full",
    /// Packets found INVALID.
    CtInvalid => "ct_invalid",
    /// Tracked connections that timed out.
    CtExpired => "ct_expired",
    /// Entries kept by restore.
    CtRestored => "ct_restored",
    /// Entries discarded by restore (half-written, corrupt, duplicate).
    CtDiscarded => "ct_discarded",
    /// New connections whose reply tuple clashed with another entry.
    CtClashes => "ct_clashes",
    /// Entries in the conntrack table now (a level, not a total).
    CtEntries => "ct_entries",
    /// Rule sets put in force.
    RuleSetsLoaded => "rule_sets_loaded",
    /// Rule sets refused.
    RuleSetsRefused => "rule_sets_refused",
    /// REJECT answers not sent for want of a buffer.
    NoBuffer => "no_buffer",
}

const ETH: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];

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
    /// IPv6's routing decision.
    local6: Local6,
    names: Vec<String>,
    rules_gen: u64,
    stats: Stats,
    /// REJECT answers, for the ring the packet came from.
    back: Vec<Handle>,
    last_expire: u64,
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
                self.stats.inc(Stat::RuleSetsLoaded);
                self.svc.log(&format!("rule set {gen} in force"));
            }
            Err(e) => {
                self.stats.inc(Stat::RuleSetsRefused);
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
        // Not IP, or too short to be: ipd's business (it counts the
        // malformed).
        let v6 = frame.get(12..14) == Some(&ETHERTYPE_IPV6[..]);
        let v4 = frame.get(12..14) == Some(&ETHERTYPE_IPV4[..]);
        if !(v4 && frame.len() >= ETH + 20 || v6 && frame.len() >= ETH + 40) {
            return true;
        }
        let ip = &mut frame[ETH..];
        // IPv6 NAT's addresses: towards the source for REDIRECT, the
        // destination for MASQUERADE.
        let (src6, dst6) = if v6 {
            let a = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&ip[at..at + 16]);
                u128::from_be_bytes(b)
            };
            (a(8), a(24))
        } else {
            (0, 0)
        };
        let mut meta = Meta {
            mark: h.mark,
            ct: CtRef(h.ct_id),
            partial_csum: h.csum == strata_ipc::handle::csum::PARTIAL,
            ..Meta::default()
        };
        let hooks: &[Hook] = if ingress {
            meta.in_if = h.iif;
            meta.in_addr = self.addrs.primary_of(h.iif);
            meta.in_addr6 = self.local6.nat_addr(h.iif, src6);
            &[Hook::Prerouting]
        } else if h.flags & flags::FORWARDED != 0 {
            meta.in_if = h.iif;
            meta.out_if = h.oif;
            meta.out_addr = self.addrs.primary_of(h.oif);
            meta.out_addr6 = self.local6.nat_addr(h.oif, dst6);
            &[Hook::Postrouting]
        } else {
            meta.ct = CtRef::NONE;
            meta.out_if = h.oif;
            meta.out_addr = self.addrs.primary_of(h.oif);
            meta.out_addr6 = self.local6.nat_addr(h.oif, dst6);
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
        if ingress && matches!(decision, Decision::Accept { .. }) && v6 {
            decision = self.route6(ip, &mut meta, now);
        }
        // The routing decision, after PREROUTING's DNAT. ipd neither
        // delivers nor forwards IPv4 multicast (it joins no group): as on
        // Linux, where routing drops a group nobody joined, such a
        // datagram meets no INPUT or FORWARD rule.
        let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
        if ingress && matches!(decision, Decision::Accept { .. }) && v4 && !is_multicast(dst) {
            let local =
                self.addrs.is_local(dst) || self.addrs.is_subnet_broadcast(dst) || dst == u32::MAX;
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

    /// INPUT or FORWARD for an IPv6 packet that passed PREROUTING, by
    /// [`Local6`]'s routing decision (multicast included: ipd delivers
    /// the groups it listens to, NDP's among them, and forwards none).
    fn route6(&mut self, ip: &mut [u8], meta: &mut Meta, now: u64) -> Decision {
        let mut d = [0u8; 16];
        d.copy_from_slice(ip.get(24..40).unwrap_or(&[0; 16]));
        let dst = u128::from_be_bytes(d);
        let hook = if self.local6.is_local(dst) {
            Hook::Input
        } else {
            meta.out_if = self.local6.out_iface(dst).unwrap_or(NO_IFACE);
            meta.out_addr6 = self.local6.nat_addr(meta.out_if, dst);
            Hook::Forward
        };
        self.filter.hook(hook, ip, meta, now)
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
        let mut buf = [0u8; reject::MAX_ANSWER];
        let n = match pool.data(h) {
            Ok(frame) => reject::build(frame, with, &mut buf),
            Err(_) => None,
        };
        let Some(n) = n else {
            self.stats.inc(Stat::RejectUnanswered);
            return;
        };
        let Some(mut r) = pool.alloc(n) else {
            self.stats.inc(Stat::NoBuffer);
            return;
        };
        r.data_len = n as u32;
        match pool.data_mut(&r) {
            Ok(d) => d.copy_from_slice(&buf[..n]),
            Err(_) => {
                pool.free(&r);
                self.stats.inc(Stat::NoBuffer);
                return;
            }
        }
        r.l2_off = 0;
        r.l3_off = ETH as u16;
        r.ethertype = u16::from_be_bytes([buf[12], buf[13]]);
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

    /// Copies the filter's and conntrack's counts into the layer's
    /// counters.
    fn gather_counters(&mut self) {
        let s = &self.filter.stats;
        let c = &self.filter.conntrack().stats;
        for (stat, v) in [
            (Stat::FastPath, s.fast_path),
            (Stat::Inspected, s.inspected),
            (Stat::DroppedRule, s.dropped_rule),
            (Stat::DroppedPolicy, s.dropped_policy),
            (Stat::Rejected, s.rejected),
            (Stat::Malformed, s.malformed),
            (Stat::NatFailed, s.nat_failed),
            (Stat::RulesExamined, s.rules_examined),
            (Stat::LogLines, s.logs),
            (Stat::LogSuppressed, s.logs_suppressed),
            (Stat::CtCreated, c.created),
            (Stat::CtEarlyDrops, c.early_drops),
            (Stat::CtFull, c.full),
            (Stat::CtInvalid, c.invalid),
            (Stat::CtExpired, c.expired),
            (Stat::CtRestored, c.restored),
            (Stat::CtDiscarded, c.discarded),
            (Stat::CtClashes, c.clashes),
            (Stat::CtEntries, self.filter.conntrack().len() as u64),
        ] {
            self.stats.set(stat, v);
        }
    }
}

// Inputs and outputs of the loop, in the order given to it.
const FROM_DEV: usize = 0;
const FROM_IP: usize = 1;
const TO_IP: usize = 0;
const TO_DEV: usize = 1;

/// How often idle conntrack entries are expired, in ms.
const EXPIRE_EVERY_MS: u64 = 1000;

impl Layer for Shell<'_> {
    fn begin(&mut self, _cx: &mut Cx) -> usize {
        self.load_rules();
        if let Some(req) = self.shm.flush_pending() {
            self.filter.conntrack_mut().flush();
            self.shm.flush_done(req);
            self.svc.log("conntrack table flushed");
        }
        0
    }

    fn admit(&self, _input: usize, cx: &Cx) -> usize {
        // A packet goes on, or is answered back: take only what both
        // rings can hold (back-pressure instead of drops in the stack).
        cx.room(TO_IP).min(cx.room(TO_DEV))
    }

    fn input(&mut self, input: usize, mut h: Handle, cx: &mut Cx) {
        let ingress = input == FROM_DEV;
        let (on, back) = if ingress {
            self.stats.inc(Stat::IngressPackets);
            (TO_IP, TO_DEV)
        } else {
            debug_assert_eq!(input, FROM_IP);
            self.stats.inc(Stat::EgressPackets);
            (TO_DEV, TO_IP)
        };
        let mut answers = std::mem::take(&mut self.back);
        if self.packet(
            &mut cx.pool,
            &mut h,
            ingress,
            cx.now / 1_000_000,
            &mut answers,
        ) {
            cx.send(on, h);
        }
        cx.send_all(back, answers.drain(..));
        self.back = answers;
    }

    fn deadline(&self) -> Option<u64> {
        Some((self.last_expire + EXPIRE_EVERY_MS) * 1_000_000)
    }

    fn poll(&mut self, cx: &mut Cx) {
        let now = cx.now / 1_000_000;
        self.last_expire = now;
        self.filter.expire(now, 4096);
    }

    fn end(&mut self, _cx: &mut Cx) -> usize {
        for line in self.filter.logs() {
            self.svc.log(line);
        }
        self.filter.clear_logs();
        self.gather_counters();
        // A set that touches packets is in force once filterd is back in
        // their path (`strata filter` waits for this).
        let me = self.svc.me;
        if self.shm.in_force() != self.rules_gen
            && (self.filter.passive() || self.svc.fabric.aside(me) == aside::IN)
        {
            self.shm.set_in_force(self.rules_gen);
        }
        0
    }

    fn passive(&self) -> bool {
        self.filter.passive()
    }

    /// New addresses and routes: which packets are local, and where the
    /// FORWARD chain's packets leave, follow them.
    fn reconfigure(&mut self, cfg: &StackConfig, _cx: &mut Cx) {
        match AddrTable::from_stack(cfg) {
            Ok(t) => self.addrs = t,
            Err(e) => self.svc.log(&format!("new addresses not taken: {e}")),
        }
        self.local6 = Local6::from_stack(cfg);
    }

    fn counters(&self) -> &[u64] {
        self.stats.as_array()
    }
}

fn main() {
    // The arena's format is that of the connection-tracking table (the
    // rule set in front of it is the launcher's, part of the layout).
    let format = ArenaFormat {
        writes: conntrack::LAYOUT_VERSION,
        reads_from: conntrack::LAYOUT_VERSION,
    };
    let svc = Service::start("filterd", format).unwrap_or_else(|e| service::die("filterd", &e));
    let f = &svc.fabric;
    let me = svc.me;

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

    let addrs = AddrTable::from_stack(&svc.config)
        .unwrap_or_else(|e| service::die("filterd", &format!("configuration: {e}")));
    let names: Vec<String> = (0..f.params().n_ifaces as u8)
        .map(|i| f.iface_name(i))
        .collect();
    let mut sh = Shell {
        svc: &svc,
        filter: Filter::new(ct, counters),
        shm,
        addrs,
        local6: Local6::from_stack(&svc.config),
        names,
        rules_gen: 0,
        stats: Stats::default(),
        back: Vec::with_capacity(4),
        last_expire: now_ms(),
    };
    sh.load_rules();

    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    let lp = Loop::new(
        &svc,
        &names,
        &[Stat::CtEntries as usize],
        &[LayerId::NETDEVD, LayerId::IPD],
        &[
            (LayerId::IPD, Overflow::Keep),
            (LayerId::NETDEVD, Overflow::Keep),
        ],
    );
    lp.run(&mut sh)
}
