//! The compiled, immutable rule set filterd evaluates per packet.
//!
//! Compiling checks what the parser cannot see from one rule alone
//! (jump targets exist, no jump loops, NAT targets only where Linux allows
//! them), resolves interface names to a bit mask of interface indexes,
//! and indexes long chains so that a packet is checked only against the
//! rules that could match it:
//!
//! every rule of a chain with at least [`INDEX_MIN`] rules goes into one
//! bucket, keyed by the most selective exact field it has — protocol and
//! single destination port, else destination prefix, else source prefix,
//! else protocol, else the catch-all list. A packet looks up the few
//! buckets its own fields select (one per key kind, one per prefix length
//! in use) and walks their union in rule order, so the result is exactly
//! that of a linear scan. Evaluation allocates nothing.
//!
//! Addresses of both families are compared as 128-bit values (IPv4 ones
//! mapped, so an IPv4 `/8` is a `/104`); a bucket key folds the masked
//! address into 32 bits, which may put unrelated rules in one bucket but
//! never leaves a matching rule out of the buckets a packet selects.
//!
//! Counters are not in the set: each rule has a slot, and the shell gives
//! [`RuleSet::evaluate`] something that implements [`Counters`] (in
//! production an `[AtomicU64]` in shared memory), so a new set can replace
//! the old one at any time while counts carry on.

use crate::packet::{Frag, PacketInfo};
use crate::rule::{
    mask6, FlagsMatch, Hook, IcmpMatch, MarkMatch, Policy, PortMatch, RejectWith, Rule, Table,
    Target,
};
use crate::tables::Tables;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Chains at least this long get an index.
pub const INDEX_MIN: usize = 8;
/// Deepest chain nesting (jumps) allowed.
pub const MAX_DEPTH: usize = 16;
/// LOG hits remembered per evaluation.
pub const MAX_LOGS: usize = 4;
/// Prefix lengths indexed per chain and direction.
const MAX_PLENS: usize = 4;

/// Where per-rule packet and byte counts go.
pub trait Counters {
    /// Counts one packet of `bytes` for `slot`.
    fn hit(&self, slot: u32, bytes: u64);
    /// (packets, bytes) of `slot`.
    fn read(&self, slot: u32) -> (u64, u64);
}

/// Two atomics per slot (packets, then bytes): what the shell keeps in
/// shared memory. Slots beyond the slice are not counted.
impl Counters for [AtomicU64] {
    fn hit(&self, slot: u32, bytes: u64) {
        let i = slot as usize * 2;
        if let (Some(p), Some(b)) = (self.get(i), self.get(i + 1)) {
            p.fetch_add(1, Relaxed);
            b.fetch_add(bytes, Relaxed);
        }
    }

    fn read(&self, slot: u32) -> (u64, u64) {
        let i = slot as usize * 2;
        match (self.get(i), self.get(i + 1)) {
            (Some(p), Some(b)) => (p.load(Relaxed), b.load(Relaxed)),
            _ => (0, 0),
        }
    }
}

/// Counts nothing.
pub struct NoCounters;

impl Counters for NoCounters {
    fn hit(&self, _: u32, _: u64) {}
    fn read(&self, _: u32) -> (u64, u64) {
        (0, 0)
    }
}

/// Connection state as rules see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CtState {
    /// First packet(s) of a connection, before any reply.
    New,
    /// A connection that has seen a reply.
    Established,
    /// An ICMP error about a tracked connection.
    Related,
    /// Conntrack could not place the packet.
    Invalid,
    /// Conntrack did not look at the packet.
    #[default]
    Untracked,
}

impl CtState {
    /// The [`ctbits`](crate::rule::ctbits) bit.
    pub fn bit(self) -> u8 {
        use crate::rule::ctbits::*;
        match self {
            CtState::New => NEW,
            CtState::Established => ESTABLISHED,
            CtState::Related => RELATED,
            CtState::Invalid => INVALID,
            CtState::Untracked => UNTRACKED,
        }
    }
}

/// A rule's NAT address as 128 bits, IPv4 mapped (as conntrack keeps
/// addresses).
fn addr128(a: &std::net::IpAddr) -> u128 {
    match a {
        std::net::IpAddr::V4(a) => strata_ipc::addrs::mapped(u32::from(*a)),
        std::net::IpAddr::V6(a) => u128::from(*a),
    }
}

/// A NAT decision of a nat table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatAction {
    /// New source address and optional port range.
    Snat {
        /// Address (128 bits, IPv4 mapped).
        addr: u128,
        /// Ports.
        ports: Option<(u16, u16)>,
    },
    /// New destination address and optional port range.
    Dnat {
        /// Address (128 bits, IPv4 mapped).
        addr: u128,
        /// Ports.
        ports: Option<(u16, u16)>,
    },
    /// SNAT to the outgoing interface's address.
    Masquerade {
        /// Ports.
        ports: Option<(u16, u16)>,
    },
    /// DNAT to the stack's own address.
    Redirect {
        /// Ports.
        ports: Option<(u16, u16)>,
    },
}

/// The outcome of one chain traversal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let it through.
    Accept,
    /// Discard it.
    Drop,
    /// Discard and answer.
    Reject(RejectWith),
    /// Translate (nat table only).
    Nat(NatAction),
}

/// What [`RuleSet::evaluate`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Decision.
    pub action: Action,
    /// The rule (index in the set) that decided; `None` for a policy.
    pub rule: Option<u32>,
    /// The packet's mark after MARK targets.
    pub mark: u32,
    /// Rules whose matches were checked (the index at work shows here).
    pub examined: u32,
    /// LOG rules hit (indexes in the set), first [`MAX_LOGS`].
    pub logs: [u32; MAX_LOGS],
    /// How many of `logs` are valid.
    pub n_logs: u8,
}

#[derive(Clone, Copy, Debug)]
enum IfSel {
    Any,
    Mask { bits: u64, neg: bool },
}

impl IfSel {
    fn matches(self, idx: u8) -> bool {
        match self {
            IfSel::Any => true,
            IfSel::Mask { bits, neg } => {
                let hit = idx < 64 && bits & (1 << idx) != 0;
                hit != neg
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct AddrSel {
    addr: u128,
    mask: u128,
    neg: bool,
}

impl AddrSel {
    /// Prefix length (the mask is contiguous).
    fn plen(&self) -> u8 {
        self.mask.count_ones() as u8
    }
}

/// A 128-bit masked address folded into a bucket key's 32 bits.
fn fold(a: u128) -> u32 {
    (a as u32) ^ ((a >> 32) as u32) ^ ((a >> 64) as u32) ^ ((a >> 96) as u32)
}

#[derive(Clone, Copy, Debug)]
enum CTarget {
    None,
    Accept,
    Drop,
    Return,
    Reject(RejectWith),
    Log,
    Mark { value: u32, mask: u32 },
    Nat(NatAction),
    Jump(u32),
}

#[derive(Clone, Debug)]
struct CRule {
    slot: u32,
    in_if: IfSel,
    out_if: IfSel,
    src: AddrSel,
    dst: AddrSel,
    proto: Option<(u8, bool)>,
    sport: Option<PortMatch>,
    dport: Option<PortMatch>,
    icmp: Option<IcmpMatch>,
    flags: Option<FlagsMatch>,
    state: Option<(u8, bool)>,
    mark: Option<MarkMatch>,
    target: CTarget,
    log_prefix: String,
}

#[derive(Clone, Debug, Default)]
struct Index {
    /// Sorted bucket keys.
    keys: Vec<u64>,
    /// For each key, its range in `ids`.
    spans: Vec<(u32, u32)>,
    /// Rule indexes, ascending within each bucket.
    ids: Vec<u32>,
    /// Rules in no bucket (checked for every packet).
    any: Vec<u32>,
    dst_plens: Vec<u8>,
    src_plens: Vec<u8>,
}

const K_DPORT: u64 = 1;
const K_DST: u64 = 2;
const K_SRC: u64 = 3;
const K_PROTO: u64 = 4;

fn key(kind: u64, small: u8, value: u32) -> u64 {
    kind << 40 | u64::from(small) << 32 | u64::from(value)
}

impl Index {
    fn bucket(&self, k: u64) -> &[u32] {
        match self.keys.binary_search(&k) {
            Ok(i) => {
                let (a, b) = self.spans[i];
                &self.ids[a as usize..b as usize]
            }
            Err(_) => &[],
        }
    }
}

#[derive(Clone, Debug)]
struct CChain {
    start: u32,
    end: u32,
    policy: Option<Policy>,
    index: Option<Index>,
}

/// The compiled rules of both tables.
#[derive(Clone, Debug)]
pub struct RuleSet {
    rules: Vec<CRule>,
    chains: Vec<CChain>,
    /// Built-in chain per (table, hook).
    hooks: [[Option<u32>; 5]; Table::ALL.len()],
    needs_ct: bool,
    has_nat: bool,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet::empty()
    }
}

/// Which NAT manipulations a hook allows (Linux's rules): destination in
/// PREROUTING and OUTPUT, source in POSTROUTING and INPUT; MASQUERADE only
/// in POSTROUTING.
fn nat_allowed(t: &Target, hook: Hook) -> bool {
    match t {
        Target::Dnat { .. } | Target::Redirect { .. } => {
            matches!(hook, Hook::Prerouting | Hook::Output)
        }
        Target::Snat { .. } => matches!(hook, Hook::Postrouting | Hook::Input),
        Target::Masquerade { .. } => hook == Hook::Postrouting,
        _ => true,
    }
}

/// Checks `tables` as [`RuleSet::compile`] would, without interfaces.
pub fn validate(tables: &Tables) -> Result<(), String> {
    RuleSet::compile(tables, &[]).map(|_| ())
}

/// The checks of rule `r` of chain `chain` of `table` that [`validate`]
/// makes, when the rule can be checked alone: when it jumps nowhere and
/// has no NAT target outside a built-in chain, adding it to a valid set
/// leaves the set valid exactly if this passes (a jump changes which
/// chains are reached from where, and what a user chain may hold depends
/// on that). `None` when the whole set must be checked.
pub fn check_alone(table: Table, chain: &str, r: &Rule) -> Option<Result<(), String>> {
    // A chain named after a hook is that hook's built-in chain: a set
    // holding another does not validate. Only the hook reaches it.
    let builtin = Hook::from_name(chain).filter(|h| table.hooks().contains(h));
    match (&r.target, builtin) {
        (Some(Target::Jump(_)), _) => None,
        (Some(t), None) if t.is_nat() => None,
        (_, h) => Some(check_rule(table, chain, h.map_or(0, |h| 1 << h.index()), r)),
    }
}

/// What [`RuleSet::compile`] checks of rule `r` itself, in chain `chain`
/// of `table`, reached from the hooks of bit mask `reach`.
fn check_rule(table: Table, chain: &str, reach: u8, r: &Rule) -> Result<(), String> {
    check_family(table, r).map_err(|m| format!("{}: chain {chain}: {m}", table.label()))?;
    let Some(t) = &r.target else {
        return Ok(());
    };
    if t.is_nat() {
        if !table.is_nat() {
            return Err(format!("{} belongs in the nat table", t.name()));
        }
        for h in Hook::ALL {
            if reach & (1 << h.index()) != 0 && !nat_allowed(t, h) {
                return Err(format!(
                    "{} is not allowed in {} (chain {chain} is reached from it)",
                    t.name(),
                    h.name(),
                ));
            }
        }
    }
    if table.is_nat() && matches!(t, Target::Drop | Target::Reject(_)) {
        return Err(format!("{} is not allowed in the nat table", t.name()));
    }
    Ok(())
}

fn resolve_if(m: &Option<crate::rule::IfaceMatch>, ifaces: &[&str]) -> IfSel {
    let Some(m) = m else { return IfSel::Any };
    let mut bits = 0u64;
    for (i, name) in ifaces.iter().enumerate().take(64) {
        let hit = match m.name.strip_suffix('+') {
            Some(stem) => name.starts_with(stem),
            None => *name == m.name,
        };
        if hit {
            bits |= 1 << i;
        }
    }
    IfSel::Mask { bits, neg: m.neg }
}

impl RuleSet {
    /// A set with no rules and ACCEPT everywhere.
    pub fn empty() -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            chains: Vec::new(),
            hooks: [[None; 5]; Table::ALL.len()],
            needs_ct: false,
            has_nat: false,
        }
    }

    /// Compiles `tables`; `ifaces[i]` is the name of interface index `i`
    /// (rules naming interfaces not present match no packet, or every
    /// packet when negated).
    pub fn compile(tables: &Tables, ifaces: &[&str]) -> Result<RuleSet, String> {
        let mut set = RuleSet::empty();
        for table in Table::ALL {
            let tr = tables.table(table);
            let base = set.chains.len() as u32;
            // Chain ids first, so jumps can be resolved.
            for (i, c) in tr.chains.iter().enumerate() {
                if tr.chains[..i].iter().any(|d| d.name == c.name) {
                    return Err(format!("{}: chain {} twice", table.name(), c.name));
                }
                match Hook::from_name(&c.name) {
                    Some(h) => {
                        if !table.hooks().contains(&h) {
                            return Err(format!(
                                "the {} table has no {} chain",
                                table.name(),
                                c.name
                            ));
                        }
                        set.hooks[table.index()][h.index()] = Some(base + i as u32);
                    }
                    None if c.policy.is_some() => {
                        return Err(format!("user chain {} has a policy", c.name))
                    }
                    None => {}
                }
            }
            // Reachability from each hook, and depth, by DFS over jumps.
            let n = tr.chains.len();
            let mut edges: Vec<Vec<usize>> = vec![Vec::new(); n];
            for (i, c) in tr.chains.iter().enumerate() {
                for e in &c.rules {
                    if let Some(Target::Jump(j)) = &e.rule.target {
                        let Some(k) = tr.chains.iter().position(|d| d.name == *j) else {
                            return Err(format!(
                                "{}: chain {} jumps to unknown chain {j}",
                                table.name(),
                                c.name
                            ));
                        };
                        if tr.chains[k].policy.is_some() {
                            return Err(format!(
                                "{}: cannot jump to built-in chain {j}",
                                table.name()
                            ));
                        }
                        edges[i].push(k);
                    }
                }
            }
            let mut reach: Vec<u8> = vec![0; n];
            for h in table.hooks() {
                let Some(start) = tr.chains.iter().position(|c| c.name == h.name()) else {
                    continue;
                };
                let mut path = Vec::new();
                dfs(
                    start,
                    &edges,
                    &mut path,
                    &mut reach,
                    1 << h.index(),
                    &tr.chains,
                )?;
            }
            for (i, c) in tr.chains.iter().enumerate() {
                let start = set.rules.len() as u32;
                for e in &c.rules {
                    let r = &e.rule;
                    check_rule(table, &c.name, reach[i], r)?;
                    let target = match &r.target {
                        None => CTarget::None,
                        Some(Target::Accept) => CTarget::Accept,
                        Some(Target::Drop) => CTarget::Drop,
                        Some(Target::Return) => CTarget::Return,
                        Some(Target::Reject(w)) => CTarget::Reject(*w),
                        Some(Target::Log { .. }) => CTarget::Log,
                        Some(Target::Mark { value, mask }) => CTarget::Mark {
                            value: *value,
                            mask: *mask,
                        },
                        Some(Target::Snat { addr, ports }) => CTarget::Nat(NatAction::Snat {
                            addr: addr128(addr),
                            ports: ports.map(|p| (p.lo, p.hi)),
                        }),
                        Some(Target::Dnat { addr, ports }) => CTarget::Nat(NatAction::Dnat {
                            addr: addr128(addr),
                            ports: ports.map(|p| (p.lo, p.hi)),
                        }),
                        Some(Target::Masquerade { ports }) => CTarget::Nat(NatAction::Masquerade {
                            ports: ports.map(|p| (p.lo, p.hi)),
                        }),
                        Some(Target::Redirect { ports }) => CTarget::Nat(NatAction::Redirect {
                            ports: ports.map(|p| (p.lo, p.hi)),
                        }),
                        Some(Target::Jump(j)) => {
                            let k = tr.chains.iter().position(|d| d.name == *j).unwrap_or(0);
                            CTarget::Jump(base + k as u32)
                        }
                    };
                    if r.state.is_some() {
                        set.needs_ct = true;
                    }
                    if matches!(target, CTarget::Nat(_)) {
                        set.has_nat = true;
                        set.needs_ct = true;
                    }
                    let addr = |m: &Option<crate::rule::AddrMatch>| match m {
                        None => AddrSel {
                            addr: 0,
                            mask: 0,
                            neg: false,
                        },
                        Some(m) => {
                            let (addr, mask) = m.net128();
                            AddrSel {
                                addr,
                                mask,
                                neg: m.neg,
                            }
                        }
                    };
                    set.rules.push(CRule {
                        slot: e.slot,
                        in_if: resolve_if(&r.in_if, ifaces),
                        out_if: resolve_if(&r.out_if, ifaces),
                        src: addr(&r.src),
                        dst: addr(&r.dst),
                        proto: r.proto.map(|p| (p.proto, p.neg)),
                        sport: r.sport,
                        dport: r.dport,
                        icmp: r.icmp,
                        flags: r.tcp_flags,
                        state: r.state.map(|s| (s.states, s.neg)),
                        mark: r.mark,
                        target,
                        log_prefix: match &r.target {
                            Some(Target::Log { prefix }) => prefix.clone(),
                            _ => String::new(),
                        },
                    });
                }
                let end = set.rules.len() as u32;
                let index =
                    (c.rules.len() >= INDEX_MIN).then(|| build_index(&set.rules, start, end));
                set.chains.push(CChain {
                    start,
                    end,
                    policy: c.policy,
                    index,
                });
            }
        }
        Ok(set)
    }

    /// Whether anything can happen at `hook` in `table`: rules, or a
    /// policy other than ACCEPT. When not, the packet needs no evaluation.
    pub fn has_rules(&self, table: Table, hook: Hook) -> bool {
        match self.hooks[table.index()][hook.index()] {
            None => false,
            Some(c) => {
                let c = &self.chains[c as usize];
                c.start != c.end || c.policy == Some(Policy::Drop)
            }
        }
    }

    /// Whether any table has work at `hook`.
    pub fn hook_active(&self, hook: Hook) -> bool {
        Table::ALL.iter().any(|t| self.has_rules(*t, hook))
    }

    /// Whether a table of the family (`v6`) has work at `hook`: its
    /// filter or nat table.
    pub fn hook_active_for(&self, hook: Hook, v6: bool) -> bool {
        self.has_rules(Table::filter_for(v6), hook) || self.has_rules(Table::nat_for(v6), hook)
    }

    /// Whether some rule needs connection tracking (a state match or a
    /// NAT target).
    pub fn needs_conntrack(&self) -> bool {
        self.needs_ct
    }

    /// Whether the nat table has any NAT target.
    pub fn has_nat(&self) -> bool {
        self.has_nat
    }

    /// Rules in the set.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the set has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The counter slot of rule `i`.
    pub fn slot(&self, i: u32) -> Option<u32> {
        self.rules.get(i as usize).map(|r| r.slot)
    }

    /// The `--log-prefix` of rule `i`.
    pub fn log_prefix(&self, i: u32) -> &str {
        self.rules
            .get(i as usize)
            .map_or("", |r| r.log_prefix.as_str())
    }

    /// Runs `table`'s chain for `hook` on the packet: jumps and returns,
    /// LOG and MARK along the way, until a terminating target or the
    /// policy. Counts every matching rule in `counters`.
    pub fn evaluate(
        &self,
        table: Table,
        hook: Hook,
        p: &PacketInfo,
        ct: CtState,
        mark: u32,
        counters: &(impl Counters + ?Sized),
    ) -> Verdict {
        let mut v = Verdict {
            action: Action::Accept,
            rule: None,
            mark,
            examined: 0,
            logs: [0; MAX_LOGS],
            n_logs: 0,
        };
        let Some(top) = self.hooks[table.index()][hook.index()] else {
            return v;
        };
        let keys = Keys::of(p);
        let ctbit = ct.bit();
        let mut stack = [(0u32, 0u32); MAX_DEPTH + 1];
        let mut depth = 0usize;
        let mut chain = top;
        let mut from = self.chains[top as usize].start;
        loop {
            let c = &self.chains[chain as usize];
            let next = match &c.index {
                None => (from < c.end).then_some(from),
                Some(ix) => ix.next(&keys, from),
            };
            let Some(i) = next else {
                // End of chain: back to the caller, or the policy.
                if depth == 0 {
                    if c.policy == Some(Policy::Drop) {
                        v.action = Action::Drop;
                    }
                    return v;
                }
                depth -= 1;
                (chain, from) = stack[depth];
                continue;
            };
            from = i + 1;
            let r = &self.rules[i as usize];
            v.examined += 1;
            if !r.matches(p, ctbit, v.mark) {
                continue;
            }
            counters.hit(r.slot, u64::from(p.len));
            match r.target {
                CTarget::None => {}
                CTarget::Accept => {
                    v.rule = Some(i);
                    return v;
                }
                CTarget::Drop => {
                    v.action = Action::Drop;
                    v.rule = Some(i);
                    return v;
                }
                CTarget::Reject(w) => {
                    v.action = Action::Reject(w);
                    v.rule = Some(i);
                    return v;
                }
                CTarget::Nat(n) => {
                    v.action = Action::Nat(n);
                    v.rule = Some(i);
                    return v;
                }
                CTarget::Log => {
                    if (v.n_logs as usize) < MAX_LOGS {
                        v.logs[v.n_logs as usize] = i;
                        v.n_logs += 1;
                    }
                }
                CTarget::Mark { value, mask } => v.mark = (v.mark & !mask) | value,
                CTarget::Return => {
                    from = c.end;
                }
                CTarget::Jump(j) => {
                    // Compilation bounds the depth; the check keeps a
                    // corrupt set from indexing out of the stack.
                    if depth < MAX_DEPTH {
                        stack[depth] = (chain, from);
                        depth += 1;
                        chain = j;
                        from = self.chains[j as usize].start;
                    }
                }
            }
        }
    }
}

fn dfs(
    at: usize,
    edges: &[Vec<usize>],
    path: &mut Vec<usize>,
    reach: &mut [u8],
    bit: u8,
    chains: &[crate::tables::Chain],
) -> Result<(), String> {
    if path.contains(&at) {
        return Err(format!("jump loop through chain {}", chains[at].name));
    }
    if path.len() > MAX_DEPTH {
        return Err(format!("chains nest deeper than {MAX_DEPTH}"));
    }
    reach[at] |= bit;
    path.push(at);
    for &k in &edges[at] {
        dfs(k, edges, path, reach, bit, chains)?;
    }
    path.pop();
    Ok(())
}

/// Whether rule `r` fits `table`'s family: addresses (NAT targets' too),
/// ICMP protocol and REJECT answers of that family. The parser refuses
/// the rest already; this keeps a hand-made rule set honest too.
fn check_family(table: Table, r: &Rule) -> Result<(), String> {
    let v6 = table.is_v6();
    let addr_ok = |m: &Option<crate::rule::AddrMatch>| m.is_none_or(|m| m.addr.is_ipv6() == v6);
    if !addr_ok(&r.src) || !addr_ok(&r.dst) {
        return Err(format!("an address of the wrong family in {r}"));
    }
    if r.proto.is_some_and(|p| p.proto == if v6 { 1 } else { 58 }) {
        return Err(format!("the other family's ICMP in {r}"));
    }
    match &r.target {
        Some(Target::Reject(w)) if w.is_icmp6() != v6 && *w != RejectWith::TcpReset => {
            Err(format!("the other family's REJECT answer in {r}"))
        }
        Some(Target::Snat { addr, .. } | Target::Dnat { addr, .. }) if addr.is_ipv6() != v6 => {
            Err(format!("a NAT address of the wrong family in {r}"))
        }
        _ => Ok(()),
    }
}

/// The bucket keys a packet selects, computed once per evaluation.
struct Keys {
    dport: Option<u64>,
    proto: Option<u64>,
    src: u128,
    dst: u128,
}

impl Keys {
    fn of(p: &PacketInfo) -> Keys {
        Keys {
            dport: (p.has_l4 && matches!(p.proto, 6 | 17))
                .then(|| key(K_DPORT, p.proto, p.dport.into())),
            proto: (!p.proto_unknown).then(|| key(K_PROTO, p.proto, 0)),
            src: p.saddr,
            dst: p.daddr,
        }
    }
}

impl Index {
    /// The first rule at or after `from` in any bucket the packet selects.
    fn next(&self, k: &Keys, from: u32) -> Option<u32> {
        let mut best: Option<u32> = None;
        let mut consider = |list: &[u32]| {
            let at = list.partition_point(|&r| r < from);
            if let Some(&r) = list.get(at) {
                if best.is_none_or(|b| r < b) {
                    best = Some(r);
                }
            }
        };
        consider(&self.any);
        if let Some(d) = k.dport {
            consider(self.bucket(d));
        }
        for &pl in &self.dst_plens {
            consider(self.bucket(key(K_DST, pl, fold(k.dst & mask6(pl)))));
        }
        for &pl in &self.src_plens {
            consider(self.bucket(key(K_SRC, pl, fold(k.src & mask6(pl)))));
        }
        if let Some(p) = k.proto {
            consider(self.bucket(p));
        }
        best
    }
}

fn build_index(rules: &[CRule], start: u32, end: u32) -> Index {
    let mut ix = Index::default();
    let exact_port = |r: &CRule| match (r.proto, r.dport) {
        (Some((p, false)), Some(d)) if !d.neg && d.lo == d.hi => Some(key(K_DPORT, p, d.lo.into())),
        _ => None,
    };
    // Pick the prefix lengths most used by rules not keyed by port.
    let pick = |sel: &dyn Fn(&CRule) -> AddrSel| -> Vec<u8> {
        let mut count = [0u32; 129];
        for r in &rules[start as usize..end as usize] {
            let a = sel(r);
            if exact_port(r).is_none() && !a.neg && a.mask != 0 {
                count[usize::from(a.plen())] += 1;
            }
        }
        let mut lens: Vec<u8> = (1..=128u8).filter(|&l| count[l as usize] > 0).collect();
        lens.sort_by_key(|&l| std::cmp::Reverse(count[l as usize]));
        lens.truncate(MAX_PLENS);
        lens
    };
    ix.dst_plens = pick(&|r| r.dst);
    ix.src_plens = pick(&|r| r.src);
    let mut pairs: Vec<(u64, u32)> = Vec::new();
    for i in start..end {
        let r = &rules[i as usize];
        let plen = |a: AddrSel, lens: &[u8]| {
            let l = a.plen();
            (!a.neg && a.mask != 0 && lens.contains(&l)).then_some(l)
        };
        let k = if let Some(k) = exact_port(r) {
            Some(k)
        } else if let Some(l) = plen(r.dst, &ix.dst_plens) {
            Some(key(K_DST, l, fold(r.dst.addr)))
        } else if let Some(l) = plen(r.src, &ix.src_plens) {
            Some(key(K_SRC, l, fold(r.src.addr)))
        } else {
            match r.proto {
                Some((p, false)) => Some(key(K_PROTO, p, 0)),
                _ => None,
            }
        };
        match k {
            Some(k) => pairs.push((k, i)),
            None => ix.any.push(i),
        }
    }
    pairs.sort_unstable();
    for (k, i) in pairs {
        if ix.keys.last() != Some(&k) {
            ix.keys.push(k);
            let at = ix.ids.len() as u32;
            ix.spans.push((at, at));
        }
        ix.ids.push(i);
        if let Some(s) = ix.spans.last_mut() {
            s.1 += 1;
        }
    }
    ix
}

impl CRule {
    fn matches(&self, p: &PacketInfo, ctbit: u8, mark: u32) -> bool {
        if !self.in_if.matches(p.in_if) || !self.out_if.matches(p.out_if) {
            return false;
        }
        if ((p.saddr & self.src.mask) == self.src.addr) == self.src.neg {
            return false;
        }
        if ((p.daddr & self.dst.mask) == self.dst.addr) == self.dst.neg {
            return false;
        }
        // An IPv6 packet whose extension headers hide its protocol
        // matches no protocol rule, negated or not.
        if let Some((proto, neg)) = self.proto {
            if p.proto_unknown || (p.proto == proto) == neg {
                return false;
            }
        }
        // Matches on the L4 header never hold for a packet without one
        // (a later fragment, a truncated header), negated or not, as in
        // Linux's xt_tcpudp.
        let l4 = p.has_l4 && p.frag != Frag::Later;
        for (m, v) in [(self.sport, p.sport), (self.dport, p.dport)] {
            if let Some(m) = m {
                if !l4 || (v >= m.lo && v <= m.hi) == m.neg {
                    return false;
                }
            }
        }
        if let Some(m) = self.icmp {
            if !l4 || !matches!(p.proto, 1 | 58) {
                return false;
            }
            let hit =
                m.ty.is_none_or(|t| t == p.icmp_type) && m.code.is_none_or(|c| c == p.icmp_code);
            if hit == m.neg {
                return false;
            }
        }
        if let Some(m) = self.flags {
            if !l4 || p.proto != 6 || ((p.tcp_flags & m.mask) == m.comp) == m.neg {
                return false;
            }
        }
        if let Some((states, neg)) = self.state {
            if (states & ctbit != 0) == neg {
                return false;
            }
        }
        if let Some(m) = self.mark {
            if ((mark & m.mask) == m.value) == m.neg {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::NO_IF;
    use crate::rule::{parse_command, Command};

    fn tables(cmds: &[&str]) -> Tables {
        let mut t = Tables::new(100_000);
        for c in cmds {
            let w: Vec<&str> = c.split_whitespace().collect();
            t.apply(&parse_command(&w).unwrap()).unwrap();
        }
        t
    }

    fn pkt(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> PacketInfo {
        PacketInfo {
            in_if: 0,
            out_if: NO_IF,
            src: u32::from_be_bytes(src),
            dst: u32::from_be_bytes(dst),
            saddr: strata_ipc::addrs::mapped(u32::from_be_bytes(src)),
            daddr: strata_ipc::addrs::mapped(u32::from_be_bytes(dst)),
            proto,
            ihl: 20,
            len: 60,
            has_l4: true,
            sport,
            dport,
            ..PacketInfo::default()
        }
    }

    fn eval(s: &RuleSet, p: &PacketInfo) -> Verdict {
        s.evaluate(Table::Filter, Hook::Input, p, CtState::New, 0, &NoCounters)
    }

    #[test]
    fn order_policy_and_counters() {
        let t = tables(&[
            "add INPUT -p tcp --dport 22 -j ACCEPT",
            "add INPUT -p tcp -j DROP",
            "add INPUT -i eth0 -p udp -j REJECT",
            "-P INPUT DROP",
        ]);
        let s = RuleSet::compile(&t, &["eth0", "eth1"]).unwrap();
        let counters: Vec<AtomicU64> = (0..10).map(|_| AtomicU64::new(0)).collect();
        let v = s.evaluate(
            Table::Filter,
            Hook::Input,
            &pkt(6, [1, 1, 1, 1], [2, 2, 2, 2], 9, 22),
            CtState::New,
            0,
            &counters[..],
        );
        assert_eq!((v.action, v.rule), (Action::Accept, Some(0)));
        assert_eq!(
            eval(&s, &pkt(6, [1; 4], [2; 4], 9, 80)).action,
            Action::Drop
        );
        assert_eq!(
            eval(&s, &pkt(17, [1; 4], [2; 4], 9, 80)).action,
            Action::Reject(RejectWith::PortUnreachable)
        );
        let mut p = pkt(17, [1; 4], [2; 4], 9, 80);
        p.in_if = 1;
        let v = eval(&s, &p);
        assert_eq!((v.action, v.rule), (Action::Drop, None));
        assert_eq!(counters[..].read(0), (1, 60));
        assert!(!s.has_rules(Table::Filter, Hook::Output));
        assert!(s.has_rules(Table::Filter, Hook::Input));
    }

    #[test]
    fn jump_return_mark_log() {
        let t = tables(&[
            "-N web",
            "-N deeper",
            "add INPUT -j LOG --log-prefix in:",
            "add INPUT -p tcp -j web",
            "add INPUT -m mark --mark 7 -j DROP",
            "add web -j MARK --set-mark 7",
            "add web -p tcp --dport 80 -j deeper",
            "add web -j RETURN",
            "add web -j ACCEPT",
            "add deeper -j ACCEPT",
        ]);
        let s = RuleSet::compile(&t, &[]).unwrap();
        let v = eval(&s, &pkt(6, [1; 4], [2; 4], 9, 80));
        assert_eq!((v.action, v.mark, v.rule), (Action::Accept, 7, Some(7)));
        assert_eq!((v.n_logs, v.logs[0]), (1, 0));
        assert_eq!(s.log_prefix(0), "in:");
        let v = eval(&s, &pkt(6, [1; 4], [2; 4], 9, 81));
        assert_eq!((v.action, v.rule), (Action::Drop, Some(2)));
        assert_eq!(
            eval(&s, &pkt(17, [1; 4], [2; 4], 9, 81)).action,
            Action::Accept
        );
    }

    #[test]
    fn negation_and_fragments() {
        let t = tables(&[
            "add INPUT ! -s 10.0.0.0/8 -j DROP",
            "add INPUT -p udp ! --dport 53 -j DROP",
        ]);
        let s = RuleSet::compile(&t, &[]).unwrap();
        assert_eq!(
            eval(&s, &pkt(17, [9; 4], [2; 4], 9, 53)).action,
            Action::Drop
        );
        assert_eq!(
            eval(&s, &pkt(17, [10, 1, 2, 3], [2; 4], 9, 53)).action,
            Action::Accept
        );
        assert_eq!(
            eval(&s, &pkt(17, [10, 1, 2, 3], [2; 4], 9, 54)).action,
            Action::Drop
        );
        let mut f = pkt(17, [10, 1, 2, 3], [2; 4], 0, 0);
        f.frag = Frag::Later;
        f.has_l4 = false;
        assert_eq!(eval(&s, &f).action, Action::Accept);
    }

    #[test]
    fn thousand_rules_touch_few() {
        let mut cmds: Vec<String> = Vec::new();
        for i in 0..400u32 {
            cmds.push(format!("add INPUT -p tcp --dport {} -j ACCEPT", 1000 + i));
            cmds.push(format!(
                "add INPUT -d 10.1.{}.{}/32 -j DROP",
                i / 256,
                i % 256
            ));
            cmds.push(format!("add INPUT -s 172.16.{}.0/24 -j DROP", i % 200));
        }
        cmds.push("add INPUT -p udp --dport 5000:6000 -j REJECT".into());
        cmds.push("add INPUT -p tcp --dport 1399 -j DROP".into());
        let refs: Vec<&str> = cmds.iter().map(|s| s.as_str()).collect();
        let t = tables(&refs);
        let s = RuleSet::compile(&t, &[]).unwrap();
        assert!(s.len() > 1000);
        let v = eval(&s, &pkt(6, [1; 4], [2; 4], 9, 1399));
        assert_eq!((v.action, v.rule), (Action::Accept, Some(399 * 3)));
        assert!(v.examined <= 3, "examined {}", v.examined);
        let v = eval(&s, &pkt(6, [1; 4], [10, 1, 1, 44], 9, 1));
        assert_eq!((v.action, v.rule), (Action::Drop, Some(300 * 3 + 1)));
        assert!(v.examined <= 3, "examined {}", v.examined);
        let v = eval(&s, &pkt(17, [172, 16, 7, 9], [2; 4], 9, 5500));
        assert_eq!(v.rule, Some(7 * 3 + 2));
        let v = eval(&s, &pkt(17, [1; 4], [2; 4], 9, 5500));
        assert_eq!(v.action, Action::Reject(RejectWith::PortUnreachable));
        assert!(v.examined <= 3, "examined {}", v.examined);
        // The index agrees with a linear scan on many packets.
        let mut lin = t.clone();
        lin.max_rules = 100_000;
        for i in 0..200u32 {
            let p = pkt(
                if i % 3 == 0 { 17 } else { 6 },
                [172, 16, (i % 250) as u8, 1],
                [10, 1, (i % 3) as u8, (i * 7 % 256) as u8],
                9,
                (990 + i * 3) as u16,
            );
            let a = eval(&s, &p);
            let b = linear(&s, &p);
            assert_eq!((a.action, a.rule), b, "packet {i}");
        }
    }

    #[test]
    fn ten_thousand_port_rules_compile_and_a_packet_examines_few() {
        let lines: Vec<String> = (0..10_000)
            .map(|i| format!("add INPUT -p tcp --dport {} -j DROP", 20_000 + i))
            .collect();
        let cmds: Vec<Command> = lines
            .iter()
            .map(|l| parse_command(&l.split_whitespace().collect::<Vec<_>>()).unwrap())
            .collect();
        let mut t = Tables::new(10_000);
        t.apply_all(&cmds).unwrap();
        let started = std::time::Instant::now();
        let s = RuleSet::compile(&t, &["eth0"]).unwrap();
        eprintln!("10,000 rules compiled in {:?}", started.elapsed());
        assert_eq!(s.len(), 10_000);
        // Matching none: the packet meets the bucket of its port alone.
        let v = eval(&s, &pkt(6, [1; 4], [2; 4], 9, 80));
        assert_eq!((v.action, v.rule), (Action::Accept, None));
        assert!(v.examined <= 1, "examined {}", v.examined);
        let v = eval(&s, &pkt(6, [1; 4], [2; 4], 9, 29_999));
        assert_eq!(
            (v.action, v.rule, v.examined),
            (Action::Drop, Some(9_999), 1)
        );
    }

    /// Reference: first matching terminal rule in the INPUT chain (no
    /// jumps in that test).
    fn linear(s: &RuleSet, p: &PacketInfo) -> (Action, Option<u32>) {
        let c = &s.chains[s.hooks[0][Hook::Input.index()].unwrap() as usize];
        for i in c.start..c.end {
            let r = &s.rules[i as usize];
            if r.matches(p, CtState::New.bit(), 0) {
                let a = match r.target {
                    CTarget::Accept => Action::Accept,
                    CTarget::Drop => Action::Drop,
                    CTarget::Reject(w) => Action::Reject(w),
                    _ => continue,
                };
                return (a, Some(i));
            }
        }
        (Action::Accept, None)
    }
}
