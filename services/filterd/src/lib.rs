//! The pure core of filterd, strata's netfilter layer (docs/DESIGN.md,
//! "Layers" and "Code shape"):
//! the filter and nat tables with iptables-like rules ([`rule`],
//! [`tables`]), their compiled and indexed form ([`ruleset`]), connection
//! tracking in a plain-data table that can live in the fabric
//! ([`conntrack`]), and NAT with incremental checksum updates ([`nat`]).
//! [`Filter`] ties them together per hook.
//!
//! No I/O, no clock, no globals: the shell passes every packet with the
//! current time and gets a [`Decision`] back; LOG lines wait in a fixed
//! buffer until the shell drains them. Nothing on the per-packet path
//! allocates.
//!
//! Where a packet meets which table, following Linux's hook priorities:
//!
//! | hook        | order                                   |
//! |-------------|-----------------------------------------|
//! | PREROUTING  | conntrack, nat (DNAT)                    |
//! | INPUT       | filter, nat (SNAT), confirm              |
//! | FORWARD     | filter                                  |
//! | OUTPUT      | conntrack, nat (DNAT), filter            |
//! | POSTROUTING | nat (SNAT, MASQUERADE), confirm          |
//!
//! The nat table sees only the first packet of a connection; its decision
//! is stored in the conntrack entry and applied to every later packet and
//! to ICMP errors about the connection.
//!
//! Fragments: Linux reassembles before conntrack; filterd does not
//! (reassembly is ipd's, after filterd on ingress). A first fragment is
//! tracked like a whole datagram and its result remembered for a short
//! while by (source, destination, protocol, IP id); later fragments take
//! that result, so they follow the same NAT binding and match state
//! rules, but never match port, ICMP type or TCP flag rules (they carry
//! no such header). A later fragment seen before its first is INVALID.
//!
//! IPv6 (ip6tables' place): packets of version 6 meet the IPv6 filter
//! and nat tables ([`Table::Filter6`], [`Table::Nat6`]) at the same hooks
//! and never IPv4's; conntrack tracks them in the same table, and their
//! NAT bindings live in it as IPv4's do (MASQUERADE and REDIRECT take
//! [`Meta::out_addr6`] and [`Meta::in_addr6`]).
//! Their fragments are tied together by (source, destination, fragment
//! header identification), RFC 8200 §4.5. A later fragment matches a
//! protocol rule by its fragment header's next header, as in ip6tables;
//! a packet whose extension headers cannot be followed (truncated, more
//! than `MAX_EXT_HEADERS`) matches no protocol rule at all.

pub mod conntrack;
pub mod local6;
pub mod nat;
pub mod packet;
pub mod reject;
pub mod rule;
pub mod ruleset;
pub mod shm;
pub mod tables;

use conntrack::{Conntrack, Track, NONE};
use packet::{Frag, PacketInfo, NO_IF};
use rule::{Hook, RejectWith, Table};
use ruleset::{Action, CtState, RuleSet, Verdict};
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use strata_ipc::addrs::{mapped, to_ip};

/// The conntrack result carried with a packet from hook to hook (in the
/// handle's `ct_id`), so that a packet is tracked once.
///
/// Bit 31: conntrack looked at the packet; bit 30: this packet created
/// the entry (not yet confirmed); bit 29: direction; bits 26–28: state;
/// bits 0–25: entry id (all ones: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtRef(pub u32);

const REF_TRACKED: u32 = 1 << 31;
const REF_CREATED: u32 = 1 << 30;
const REF_DIR: u32 = 1 << 29;
const REF_ID: u32 = (1 << 26) - 1;

impl CtRef {
    /// Not looked at yet.
    pub const NONE: CtRef = CtRef(0);

    fn from_track(t: Track) -> CtRef {
        let st = match t.state {
            CtState::New => 0,
            CtState::Established => 1,
            CtState::Related => 2,
            CtState::Invalid => 3,
            CtState::Untracked => 4,
        };
        let id = if t.id == NONE || t.id >= REF_ID {
            REF_ID
        } else {
            t.id
        };
        CtRef(
            REF_TRACKED
                | if t.created { REF_CREATED } else { 0 }
                | if t.dir != 0 { REF_DIR } else { 0 }
                | st << 26
                | id,
        )
    }

    /// Whether conntrack looked at the packet.
    pub fn is_tracked(self) -> bool {
        self.0 & REF_TRACKED != 0
    }

    /// The entry.
    pub fn id(self) -> Option<u32> {
        let id = self.0 & REF_ID;
        (self.is_tracked() && id != REF_ID).then_some(id)
    }

    /// Direction (0 original, 1 reply).
    pub fn dir(self) -> u8 {
        u8::from(self.0 & REF_DIR != 0)
    }

    /// Whether this packet created its entry.
    pub fn created(self) -> bool {
        self.0 & REF_CREATED != 0
    }

    /// State for rules.
    pub fn state(self) -> CtState {
        if !self.is_tracked() {
            return CtState::Untracked;
        }
        match (self.0 >> 26) & 7 {
            0 => CtState::New,
            1 => CtState::Established,
            2 => CtState::Related,
            3 => CtState::Invalid,
            _ => CtState::Untracked,
        }
    }
}

/// What the shell knows about a packet besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Input interface index, [`NO_IF`] for locally sent packets.
    pub in_if: u8,
    /// Output interface index, [`NO_IF`] before routing.
    pub out_if: u8,
    /// Packet mark (updated by MARK targets).
    pub mark: u32,
    /// Conntrack result from an earlier hook ([`CtRef::NONE`] at first).
    pub ct: CtRef,
    /// Address REDIRECT sends to: the incoming interface's (0 unknown).
    pub in_addr: u32,
    /// Address MASQUERADE uses: the outgoing interface's (0 unknown).
    pub out_addr: u32,
    /// [`in_addr`](Self::in_addr) for an IPv6 packet: the incoming
    /// interface's configured address best matching the packet's source
    /// (0 unknown).
    pub in_addr6: u128,
    /// [`out_addr`](Self::out_addr) for an IPv6 packet: the outgoing
    /// interface's configured global address best matching the packet's
    /// destination (0 unknown).
    pub out_addr6: u128,
    /// The transport checksum is partial (left to the device; see
    /// `strata_proto::offload`): NAT adjusts it as such.
    pub partial_csum: bool,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            in_if: NO_IF,
            out_if: NO_IF,
            mark: 0,
            ct: CtRef::NONE,
            in_addr: 0,
            out_addr: 0,
            in_addr6: 0,
            out_addr6: 0,
            partial_csum: false,
        }
    }
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The IPv4 or IPv6 header (or its address) is invalid.
    Malformed,
    /// A DROP rule.
    Rule,
    /// A chain's DROP policy.
    Policy,
    /// A NAT binding could not be made (no address, no free port).
    NatFailed,
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Pass it on.
    Accept {
        /// Whether NAT rewrote bytes of the packet.
        changed: bool,
        /// Its mark now.
        mark: u32,
    },
    /// Discard it.
    Drop(DropReason),
    /// Discard it and have ipd answer the (unchanged) packet's sender.
    Reject(RejectWith),
}

/// Counters of the filter itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterStats {
    /// Packets passed without a look (no rules, no conntrack).
    pub fast_path: u64,
    /// Packets looked at.
    pub inspected: u64,
    /// Dropped by rules.
    pub dropped_rule: u64,
    /// Dropped by policies.
    pub dropped_policy: u64,
    /// Rejected.
    pub rejected: u64,
    /// Bad IPv4 or IPv6 headers.
    pub malformed: u64,
    /// NAT failures.
    pub nat_failed: u64,
    /// Rules whose matches were checked, in total.
    pub rules_examined: u64,
    /// LOG lines written.
    pub logs: u64,
    /// LOG lines held back by the rate limit.
    pub logs_suppressed: u64,
    /// LOG lines lost because the buffer was full.
    pub logs_lost: u64,
}

/// LOG lines buffered between drains.
pub const LOG_LINES: usize = 16;
/// Longest LOG line in bytes.
pub const LOG_LINE_LEN: usize = 240;
/// LOG rate: lines per second per rule.
pub const LOG_RATE: u64 = 5;
/// LOG burst per rule.
pub const LOG_BURST: u64 = 10;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Thousandths of a line.
    milli: u64,
    last_ms: u64,
    suppressed: u64,
    primed: bool,
}

impl Bucket {
    fn take(&mut self, now: u64) -> bool {
        if !self.primed {
            self.primed = true;
            self.milli = LOG_BURST * 1000;
            self.last_ms = now;
        }
        let dt = now.saturating_sub(self.last_ms);
        self.last_ms = now.max(self.last_ms);
        self.milli = self
            .milli
            .saturating_add(dt.saturating_mul(LOG_RATE))
            .min(LOG_BURST * 1000);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

struct LogBuf {
    lines: [[u8; LOG_LINE_LEN]; LOG_LINES],
    lens: [usize; LOG_LINES],
    n: usize,
}

/// Writes into a fixed line, cutting at a character boundary.
struct LineWriter<'b> {
    buf: &'b mut [u8; LOG_LINE_LEN],
    len: usize,
}

impl std::fmt::Write for LineWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            let mut tmp = [0u8; 4];
            let b = c.encode_utf8(&mut tmp).as_bytes();
            if self.len + b.len() > LOG_LINE_LEN {
                return Ok(());
            }
            self.buf[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        }
        Ok(())
    }
}

const FRAG_SLOTS: usize = 64;
const FRAG_TTL_MS: u64 = 30_000;

/// A first fragment's conntrack result, for its later fragments: keyed
/// by 128-bit addresses (IPv4 mapped), the identification and, for IPv4,
/// the protocol (RFC 791; IPv6 ties fragments by addresses and
/// identification alone, RFC 8200 §4.5).
#[derive(Clone, Copy, Debug, Default)]
struct FragSlot {
    src: u128,
    dst: u128,
    id: u32,
    proto: u8,
    ct: CtRef,
    expires: u64,
}

impl FragSlot {
    /// The slot key of packet `p`: (src, dst, id, protocol or 0 for IPv6).
    fn key(p: &PacketInfo) -> (u128, u128, u32, u8) {
        (p.saddr, p.daddr, p.frag_id, if p.v6 { 0 } else { p.proto })
    }

    /// Which of the slots packet `p` goes in.
    fn index(p: &PacketInfo) -> usize {
        let (s, d, id, proto) = FragSlot::key(p);
        let fold = |a: u128| (a as u32) ^ ((a >> 64) as u32) ^ ((a >> 96) as u32);
        (fold(s) ^ fold(d).rotate_left(11) ^ id << 3 ^ u32::from(proto)) as usize % FRAG_SLOTS
    }
}

/// The filter: rules, conntrack, NAT, logging.
pub struct Filter<'a> {
    rules: RuleSet,
    ct: Conntrack<'a>,
    counters: &'a [AtomicU64],
    buckets: Vec<Bucket>,
    ifaces: Vec<String>,
    frags: [FragSlot; FRAG_SLOTS],
    logs: Box<LogBuf>,
    /// Counters.
    pub stats: FilterStats,
}

impl<'a> Filter<'a> {
    /// A filter with no rules over `ct`, counting rules into `counters`
    /// (two per slot: packets, bytes).
    pub fn new(ct: Conntrack<'a>, counters: &'a [AtomicU64]) -> Filter<'a> {
        Filter {
            rules: RuleSet::empty(),
            ct,
            counters,
            buckets: Vec::new(),
            ifaces: Vec::new(),
            frags: [FragSlot::default(); FRAG_SLOTS],
            logs: Box::new(LogBuf {
                lines: [[0; LOG_LINE_LEN]; LOG_LINES],
                lens: [0; LOG_LINES],
                n: 0,
            }),
            stats: FilterStats::default(),
        }
    }

    /// Installs a new rule set; `ifaces[i]` names interface index `i`
    /// (for log lines).
    pub fn set_rules(&mut self, rules: RuleSet, ifaces: &[&str]) {
        self.buckets = vec![Bucket::default(); rules.len()];
        self.ifaces = ifaces.iter().map(|s| s.to_string()).collect();
        self.rules = rules;
    }

    /// The rule set in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// The connection table.
    pub fn conntrack(&self) -> &Conntrack<'a> {
        &self.ct
    }

    /// The connection table, to expire, flush or tune.
    pub fn conntrack_mut(&mut self) -> &mut Conntrack<'a> {
        &mut self.ct
    }

    /// LOG lines written since the last [`clear_logs`](Self::clear_logs).
    pub fn logs(&self) -> impl Iterator<Item = &str> {
        self.logs.lines[..self.logs.n]
            .iter()
            .zip(self.logs.lens.iter())
            .map(|(l, &n)| std::str::from_utf8(&l[..n]).unwrap_or(""))
    }

    /// Forgets the buffered LOG lines.
    pub fn clear_logs(&mut self) {
        self.logs.n = 0;
    }

    /// Expires conntrack entries (see [`Conntrack::expire_some`]).
    pub fn expire(&mut self, now_ms: u64, budget: usize) -> usize {
        self.ct.expire_some(now_ms, budget)
    }

    fn track(&mut self, p: &PacketInfo, now_ms: u64) -> CtRef {
        let slot = FragSlot::index(p);
        let key = FragSlot::key(p);
        match p.frag {
            Frag::Later => {
                let s = self.frags[slot];
                if s.expires > now_ms && (s.src, s.dst, s.id, s.proto) == key {
                    CtRef(s.ct.0 & !REF_CREATED)
                } else {
                    CtRef::from_track(Track {
                        id: NONE,
                        dir: 0,
                        state: CtState::Invalid,
                        created: false,
                    })
                }
            }
            f => {
                let r = CtRef::from_track(self.ct.track(p, now_ms));
                if f == Frag::First {
                    self.frags[slot] = FragSlot {
                        src: key.0,
                        dst: key.1,
                        id: key.2,
                        proto: key.3,
                        ct: r,
                        expires: now_ms.saturating_add(FRAG_TTL_MS),
                    };
                }
                r
            }
        }
    }

    /// Whether every packet would pass untouched and unrecorded: no hook
    /// has rules, nothing needs connection tracking and no connection is
    /// tracked (its entries, NAT bindings among them, must go on seeing
    /// packets). filterd then stands aside.
    pub fn passive(&self) -> bool {
        !self.rules.needs_conntrack()
            && self.ct.is_empty()
            && !Hook::ALL.iter().any(|&h| self.rules.hook_active(h))
    }

    /// Runs `hook` on an IPv4 datagram or IPv6 packet (non-IP frames
    /// never come here). `meta.ct` and `meta.mark` are updated for the
    /// next hook of the same packet; `pkt` may be rewritten by NAT.
    pub fn hook(&mut self, hook: Hook, pkt: &mut [u8], meta: &mut Meta, now_ms: u64) -> Decision {
        let ct_on = self.rules.needs_conntrack() || !self.ct.is_empty();
        let v6 = pkt.first().is_some_and(|b| b >> 4 == 6);
        if !ct_on && !self.rules.hook_active_for(hook, v6) {
            self.stats.fast_path += 1;
            return Decision::Accept {
                changed: false,
                mark: meta.mark,
            };
        }
        self.stats.inspected += 1;
        let Some(mut info) = PacketInfo::parse(pkt, meta.in_if, meta.out_if) else {
            self.stats.malformed += 1;
            return Decision::Drop(DropReason::Malformed);
        };
        let mut cref = meta.ct;
        if ct_on && !cref.is_tracked() {
            cref = self.track(&info, now_ms);
        }
        let mut mark = meta.mark;
        let mut changed = false;
        #[derive(PartialEq)]
        enum Step {
            Nat,
            Filter,
        }
        let steps: &[Step] = match hook {
            Hook::Prerouting | Hook::Postrouting => &[Step::Nat],
            Hook::Input => &[Step::Filter, Step::Nat],
            Hook::Forward => &[Step::Filter],
            Hook::Output => &[Step::Nat, Step::Filter],
        };
        for step in steps {
            match step {
                Step::Nat => {
                    let Some(id) = cref.id() else { continue };
                    let nat_table = Table::nat_for(info.v6);
                    if cref.created() && self.rules.has_rules(nat_table, hook) {
                        let v = self.rules.evaluate(
                            nat_table,
                            hook,
                            &info,
                            cref.state(),
                            mark,
                            self.counters,
                        );
                        mark = v.mark;
                        self.after_eval(&v, &info, now_ms);
                        if let Action::Nat(a) = v.action {
                            let m4 = |a: u32| if a == 0 { 0 } else { mapped(a) };
                            let (local, out) = if info.v6 {
                                (meta.in_addr6, meta.out_addr6)
                            } else {
                                (m4(meta.in_addr), m4(meta.out_addr))
                            };
                            if nat::setup(&mut self.ct, id, a, local, out).is_err() {
                                self.stats.nat_failed += 1;
                                self.ct.remove(id);
                                return Decision::Drop(DropReason::NatFailed);
                            }
                        }
                    }
                    if nat::translate(pkt, &self.ct, id, cref.dir(), hook, meta.partial_csum) {
                        changed = true;
                        match PacketInfo::parse(pkt, meta.in_if, meta.out_if) {
                            Some(i) => info = i,
                            None => return Decision::Drop(DropReason::Malformed),
                        }
                    }
                }
                Step::Filter => {
                    let table = Table::filter_for(info.v6);
                    if !self.rules.has_rules(table, hook) {
                        continue;
                    }
                    let v =
                        self.rules
                            .evaluate(table, hook, &info, cref.state(), mark, self.counters);
                    mark = v.mark;
                    self.after_eval(&v, &info, now_ms);
                    match v.action {
                        Action::Accept | Action::Nat(_) => {}
                        Action::Drop => {
                            // An unconfirmed connection dies with its
                            // first packet, as in Linux.
                            if let (true, Some(id)) = (cref.created(), cref.id()) {
                                self.ct.remove(id);
                            }
                            return Decision::Drop(if v.rule.is_some() {
                                self.stats.dropped_rule += 1;
                                DropReason::Rule
                            } else {
                                self.stats.dropped_policy += 1;
                                DropReason::Policy
                            });
                        }
                        Action::Reject(w) => {
                            // The entry stays: the answer ipd makes is a
                            // reply of this connection and needs its NAT.
                            self.stats.rejected += 1;
                            return Decision::Reject(w);
                        }
                    }
                }
            }
        }
        if matches!(hook, Hook::Input | Hook::Postrouting) {
            cref.0 &= !REF_CREATED;
        }
        meta.ct = cref;
        meta.mark = mark;
        Decision::Accept { changed, mark }
    }

    fn after_eval(&mut self, v: &Verdict, p: &PacketInfo, now_ms: u64) {
        self.stats.rules_examined += u64::from(v.examined);
        for &i in &v.logs[..usize::from(v.n_logs)] {
            let Some(b) = self.buckets.get_mut(i as usize) else {
                continue;
            };
            if !b.take(now_ms) {
                self.stats.logs_suppressed += 1;
                continue;
            }
            let suppressed = std::mem::take(&mut b.suppressed);
            if self.logs.n == LOG_LINES {
                self.stats.logs_lost += 1;
                continue;
            }
            let n = self.logs.n;
            let mut w = LineWriter {
                buf: &mut self.logs.lines[n],
                len: 0,
            };
            let ifname = |i: u8| self.ifaces.get(usize::from(i)).map_or("", |s| s.as_str());
            let _ = write!(
                w,
                "{}IN={} OUT={} SRC={} DST={} LEN={} ",
                self.rules.log_prefix(i),
                ifname(p.in_if),
                ifname(p.out_if),
                to_ip(p.saddr),
                to_ip(p.daddr),
                p.len
            );
            let _ = match p.proto {
                _ if p.proto_unknown => write!(w, "PROTO=?"),
                6 | 17 if p.has_l4 => write!(
                    w,
                    "PROTO={} SPT={} DPT={}",
                    if p.proto == 6 { "TCP" } else { "UDP" },
                    p.sport,
                    p.dport
                ),
                1 if p.has_l4 => write!(w, "PROTO=ICMP TYPE={} CODE={}", p.icmp_type, p.icmp_code),
                58 if p.has_l4 => {
                    write!(w, "PROTO=ICMPv6 TYPE={} CODE={}", p.icmp_type, p.icmp_code)
                }
                _ => write!(w, "PROTO={}", p.proto),
            };
            if v.mark != 0 {
                let _ = write!(w, " MARK={:#x}", v.mark);
            }
            if suppressed > 0 {
                let _ = write!(w, " ({suppressed} suppressed)");
            }
            self.logs.lens[n] = w.len;
            self.logs.n += 1;
            self.stats.logs += 1;
        }
    }
}

#[cfg(test)]
mod tests;
