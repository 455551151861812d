//! The rule language: an iptables-like AST, a parser from argv-like words
//! into a [`Command`], and a [`Display`](fmt::Display) that writes a rule
//! back in the same syntax (what `strata filter list` prints).
//!
//! Words come from a user's command line (or the launcher's config file),
//! so the parser never panics and every error names the word it is about
//! ([`ParseError::word`] is a 0-based index into the words; its `Display`
//! counts from 1, the way people count words).
//!
//! Rules are serde types so the launcher can keep them in its config file
//! and pass them over its JSON control socket.
//!
//! IPv6 rules live in their own table, as ip6tables' do beside
//! iptables': `-6` (or `--ipv6`) anywhere in a command makes it about
//! [`Table::Filter6`], the IPv6 filter table with the same chains. Such a
//! rule takes IPv6 addresses and prefixes only, `-p icmpv6` (also spelled
//! `ipv6-icmp`) with `--icmpv6-type`, and REJECT with the ICMPv6 answers
//! (`icmp6-port-unreachable` by default); IPv4 rules refuse all of those.
//! `-6 -t nat` is [`Table::Nat6`], ip6tables' nat table: the same chains
//! and targets, with IPv6 addresses in `--to-source` and
//! `--to-destination` (`ADDR`, or `[ADDR]:PORT[-PORT]` with ports).
//!
//! Neighbor Discovery (ICMPv6 types 133–137) and MLD are ICMPv6 like any
//! other and pass a DROP policy only if a rule accepts them: conntrack
//! leaves them UNTRACKED, so the usual stateful ruleset needs
//! `-6 -A INPUT -p icmpv6 -j ACCEPT` (or rules per `--icmpv6-type`) for
//! IPv6 to work at all.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use strata_proto::icmp::unreach_code;
use strata_proto::icmpv6::unreach_code as unreach6;

/// Longest chain name (as in iptables: 28 characters plus a NUL there).
pub const MAX_CHAIN_NAME: usize = 28;
/// Longest interface name (IFNAMSIZ - 1).
pub const MAX_IFACE_NAME: usize = 15;
/// Longest `--log-prefix` (iptables' limit).
pub const MAX_LOG_PREFIX: usize = 29;

/// The tables: IPv4's filter and nat, IPv6's filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// IPv4 packet filtering (the default table).
    #[default]
    Filter,
    /// IPv4 address translation, consulted for the first packet of a
    /// connection.
    Nat,
    /// IPv6 packet filtering (`-6`, ip6tables' filter table).
    Filter6,
    /// IPv6 address translation (`-6 -t nat`, ip6tables' nat table).
    Nat6,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 4] = [Table::Filter, Table::Nat, Table::Filter6, Table::Nat6];

    /// The name `-t` takes (with `-6` for an IPv6 table).
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter | Table::Filter6 => "filter",
            Table::Nat | Table::Nat6 => "nat",
        }
    }

    /// The name in messages: `filter`, `nat`, `IPv6 filter` or `IPv6 nat`.
    pub fn label(self) -> &'static str {
        match self {
            Table::Filter6 => "IPv6 filter",
            Table::Nat6 => "IPv6 nat",
            t => t.name(),
        }
    }

    /// Whether the table holds IPv6 rules.
    pub fn is_v6(self) -> bool {
        matches!(self, Table::Filter6 | Table::Nat6)
    }

    /// Whether the table is a nat table (of either family).
    pub fn is_nat(self) -> bool {
        matches!(self, Table::Nat | Table::Nat6)
    }

    /// The nat table of packets of one family.
    pub fn nat_for(v6: bool) -> Table {
        if v6 {
            Table::Nat6
        } else {
            Table::Nat
        }
    }

    /// The filter table of packets of one family.
    pub fn filter_for(v6: bool) -> Table {
        if v6 {
            Table::Filter6
        } else {
            Table::Filter
        }
    }

    /// The table called `s`.
    pub fn from_name(s: &str) -> Option<Table> {
        match s {
            "filter" => Some(Table::Filter),
            "nat" => Some(Table::Nat),
            _ => None,
        }
    }

    /// The hooks this table has built-in chains for (those of Linux).
    pub fn hooks(self) -> &'static [Hook] {
        match self {
            Table::Filter | Table::Filter6 => &[Hook::Input, Hook::Forward, Hook::Output],
            Table::Nat | Table::Nat6 => &[
                Hook::Prerouting,
                Hook::Input,
                Hook::Output,
                Hook::Postrouting,
            ],
        }
    }

    /// Index for per-table arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The five netfilter hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Hook {
    /// Every received packet, before the routing decision.
    Prerouting,
    /// Received packets addressed to the stack.
    Input,
    /// Received packets routed onwards.
    Forward,
    /// Packets the stack sends.
    Output,
    /// Every packet about to leave.
    Postrouting,
}

impl Hook {
    /// All hooks, in [`Hook::index`] order.
    pub const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];

    /// The built-in chain's name.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
            Hook::Postrouting => "POSTROUTING",
        }
    }

    /// The hook whose built-in chain is called `s`.
    pub fn from_name(s: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == s)
    }

    /// Index for per-hook arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a built-in chain does with a packet no rule decided on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Policy {
    /// Let it through.
    #[default]
    Accept,
    /// Discard it.
    Drop,
}

impl Policy {
    /// `ACCEPT` or `DROP`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Accept => "ACCEPT",
            Policy::Drop => "DROP",
        }
    }
}

/// `-i` / `-o`: an interface name; a trailing `+` matches every name with
/// that prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IfaceMatch {
    /// Name, possibly ending in `+`.
    pub name: String,
    /// `!`: match every other interface.
    #[serde(default)]
    pub neg: bool,
}

/// `-s` / `-d`: an address and prefix length, IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddrMatch {
    /// Network address (host bits are cleared by the parser).
    pub addr: IpAddr,
    /// Prefix length, 0..=32 (IPv4) or 0..=128 (IPv6).
    pub prefix: u8,
    /// `!`.
    #[serde(default)]
    pub neg: bool,
}

impl AddrMatch {
    /// The network and mask as 128-bit values, an IPv4 one mapped into
    /// `::ffff:0:0/96` (the form packets are compared in, see
    /// [`PacketInfo::saddr`](crate::packet::PacketInfo::saddr)).
    pub fn net128(&self) -> (u128, u128) {
        let (addr, plen) = match self.addr {
            IpAddr::V4(a) => (
                strata_ipc::addrs::mapped(u32::from(a)),
                96 + self.prefix.min(32),
            ),
            IpAddr::V6(a) => (u128::from(a), self.prefix.min(128)),
        };
        let mask = mask6(plen);
        (addr & mask, mask)
    }
}

pub use strata_ipc::addrs::mask6;

pub use strata_ipc::addrs::mask as prefix_mask;

/// `-p`: an IP protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProtoMatch {
    /// IP protocol number.
    pub proto: u8,
    /// `!`.
    #[serde(default)]
    pub neg: bool,
}

/// `--sport` / `--dport`: an inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMatch {
    /// Lowest port.
    pub lo: u16,
    /// Highest port.
    pub hi: u16,
    /// `!`.
    #[serde(default)]
    pub neg: bool,
}

/// `--icmp-type` / `--icmpv6-type` (which one: the rule's `-p`): a type
/// and optional code, or any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IcmpMatch {
    /// ICMP type; `None` is `any`.
    pub ty: Option<u8>,
    /// ICMP code; `None` matches every code.
    pub code: Option<u8>,
    /// `!`.
    #[serde(default)]
    pub neg: bool,
}

/// TCP flag bits as iptables names them.
pub mod tcpflag {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
    /// What iptables calls ALL (the six classic flags).
    pub const ALL: u8 = 0x3f;
    /// What `--syn` means: SYN set, RST, ACK and FIN clear.
    pub const SYN_MASK: u8 = FIN | SYN | RST | ACK;
    pub(crate) const NAMES: [(&str, u8); 8] = [
        ("FIN", FIN),
        ("SYN", SYN),
        ("RST", RST),
        ("PSH", PSH),
        ("ACK", ACK),
        ("URG", URG),
        ("ECE", ECE),
        ("CWR", CWR),
    ];
}

/// `--tcp-flags MASK COMP` (and `--syn`): the flags in `mask` must equal
/// `comp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlagsMatch {
    /// Flags examined.
    pub mask: u8,
    /// Which of them must be set (the rest of `mask` must be clear).
    pub comp: u8,
    /// `!`.
    #[serde(default)]
    pub neg: bool,
}

/// Conntrack states as bits of [`StateMatch::states`].
pub mod ctbits {
    /// First packet of a connection.
    pub const NEW: u8 = 1;
    /// A packet of a connection that has seen traffic both ways.
    pub const ESTABLISHED: u8 = 2;
    /// An ICMP error about a tracked connection.
    pub const RELATED: u8 = 4;
    /// A packet conntrack could not make sense of (or out of window).
    pub const INVALID: u8 = 8;
    /// A packet conntrack did not look at.
    pub const UNTRACKED: u8 = 16;
    pub(crate) const NAMES: [(&str, u8); 5] = [
        ("NEW", NEW),
        ("ESTABLISHED", ESTABLISHED),
        ("RELATED", RELATED),
        ("INVALID", INVALID),
        ("UNTRACKED", UNTRACKED),
    ];
}

/// Which match module spelled a state match (kept so `list` prints what
/// the user wrote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateModule {
    /// `-m state --state`.
    State,
    /// `-m conntrack --ctstate`.
    Conntrack,
}

/// `--state` / `--ctstate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateMatch {
    /// Module that spelled it.
    pub module: StateModule,
    /// [`ctbits`] that match.
    pub states: u8,
    /// `!`.
    #[serde(default)]
    pub neg: bool,
}

/// `-m mark --mark V[/M]`: `mark & mask == value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MarkMatch {
    /// Value after masking.
    pub value: u32,
    /// Mask.
    pub mask: u32,
    /// `!`.
    #[serde(default)]
    pub neg: bool,
}

/// What a REJECT answers with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectWith {
    /// ICMP destination unreachable, port unreachable (IPv4's default).
    #[default]
    PortUnreachable,
    /// ICMP host unreachable.
    HostUnreachable,
    /// ICMP network unreachable.
    NetUnreachable,
    /// ICMP communication administratively prohibited.
    AdminProhibited,
    /// A TCP RST (TCP rules only; either family).
    TcpReset,
    /// ICMPv6 destination unreachable, port unreachable (IPv6's default;
    /// RFC 4443 §3.1 code 4).
    Icmp6PortUnreachable,
    /// ICMPv6 no route to destination (code 0).
    Icmp6NoRoute,
    /// ICMPv6 communication administratively prohibited (code 1).
    Icmp6AdmProhibited,
    /// ICMPv6 address unreachable (code 3).
    Icmp6AddrUnreachable,
}

impl RejectWith {
    /// `--reject-with` words, the name [`name`](Self::name) prints first;
    /// ip6tables' short aliases after.
    const NAMES: [(&'static str, RejectWith); 13] = [
        ("icmp-port-unreachable", RejectWith::PortUnreachable),
        ("icmp-host-unreachable", RejectWith::HostUnreachable),
        ("icmp-net-unreachable", RejectWith::NetUnreachable),
        ("icmp-admin-prohibited", RejectWith::AdminProhibited),
        ("tcp-reset", RejectWith::TcpReset),
        ("icmp6-port-unreachable", RejectWith::Icmp6PortUnreachable),
        ("icmp6-no-route", RejectWith::Icmp6NoRoute),
        ("icmp6-adm-prohibited", RejectWith::Icmp6AdmProhibited),
        ("icmp6-addr-unreachable", RejectWith::Icmp6AddrUnreachable),
        ("port-unreach", RejectWith::Icmp6PortUnreachable),
        ("no-route", RejectWith::Icmp6NoRoute),
        ("adm-prohibited", RejectWith::Icmp6AdmProhibited),
        ("addr-unreach", RejectWith::Icmp6AddrUnreachable),
    ];

    /// Whether the answer is ICMPv6 (for IPv6 rules only).
    pub fn is_icmp6(self) -> bool {
        self.icmp6_code().is_some()
    }

    /// ICMPv6 destination unreachable (type 1) code of an ICMPv6 answer.
    pub fn icmp6_code(self) -> Option<u8> {
        match self {
            RejectWith::Icmp6PortUnreachable => Some(unreach6::PORT),
            RejectWith::Icmp6NoRoute => Some(unreach6::NO_ROUTE),
            RejectWith::Icmp6AdmProhibited => Some(unreach6::ADMIN_PROHIBITED),
            RejectWith::Icmp6AddrUnreachable => Some(unreach6::ADDRESS),
            _ => None,
        }
    }

    /// The `--reject-with` word.
    pub fn name(self) -> &'static str {
        RejectWith::NAMES
            .iter()
            .find(|(_, r)| *r == self)
            .map_or("", |(n, _)| n)
    }

    /// ICMP destination unreachable (type 3) code of an ICMP (IPv4)
    /// answer; `None` for a TCP reset or an ICMPv6 answer.
    pub fn icmp_code(self) -> Option<u8> {
        match self {
            RejectWith::NetUnreachable => Some(unreach_code::NET),
            RejectWith::HostUnreachable => Some(unreach_code::HOST),
            RejectWith::PortUnreachable => Some(unreach_code::PORT),
            RejectWith::AdminProhibited => Some(unreach_code::ADMIN_PROHIBITED),
            _ => None,
        }
    }
}

/// An inclusive port range for NAT targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// Lowest port.
    pub lo: u16,
    /// Highest port.
    pub hi: u16,
}

/// `-j`: what a matching rule does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// Let the packet through this hook.
    Accept,
    /// Discard it.
    Drop,
    /// Back to the calling chain (or the policy, in a built-in chain).
    Return,
    /// Discard it and tell the sender.
    Reject(RejectWith),
    /// Emit a log line (rate limited) and go on with the next rule.
    Log {
        /// `--log-prefix`.
        prefix: String,
    },
    /// Set the packet's mark and go on: `mark = (mark & !mask) | value`.
    Mark {
        /// Value.
        value: u32,
        /// Bits replaced.
        mask: u32,
    },
    /// Rewrite the source (nat POSTROUTING/INPUT).
    Snat {
        /// New source address (of the rule's family).
        addr: IpAddr,
        /// Source ports to pick from.
        ports: Option<PortRange>,
    },
    /// Rewrite the destination (nat PREROUTING/OUTPUT).
    Dnat {
        /// New destination address (of the rule's family).
        addr: IpAddr,
        /// Destination ports to pick from.
        ports: Option<PortRange>,
    },
    /// SNAT to the outgoing interface's address.
    Masquerade {
        /// Source ports to pick from.
        ports: Option<PortRange>,
    },
    /// DNAT to the stack itself (the incoming interface's address).
    Redirect {
        /// Destination ports to pick from.
        ports: Option<PortRange>,
    },
    /// Continue in a user-defined chain.
    Jump(String),
}

impl Target {
    /// Whether this target is one of the NAT targets.
    pub fn is_nat(&self) -> bool {
        matches!(
            self,
            Target::Snat { .. }
                | Target::Dnat { .. }
                | Target::Masquerade { .. }
                | Target::Redirect { .. }
        )
    }

    /// The `-j` word.
    pub fn name(&self) -> &str {
        match self {
            Target::Accept => "ACCEPT",
            Target::Drop => "DROP",
            Target::Return => "RETURN",
            Target::Reject(_) => "REJECT",
            Target::Log { .. } => "LOG",
            Target::Mark { .. } => "MARK",
            Target::Snat { .. } => "SNAT",
            Target::Dnat { .. } => "DNAT",
            Target::Masquerade { .. } => "MASQUERADE",
            Target::Redirect { .. } => "REDIRECT",
            Target::Jump(c) => c,
        }
    }
}

/// Words that name a target and so cannot name a chain.
const TARGET_WORDS: [&str; 10] = [
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "LOG",
    "MARK",
    "SNAT",
    "DNAT",
    "MASQUERADE",
    "REDIRECT",
];

/// One rule: every given match must hold for the target to apply. A rule
/// without a target only counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// `-i`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_if: Option<IfaceMatch>,
    /// `-o`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_if: Option<IfaceMatch>,
    /// `-s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<AddrMatch>,
    /// `-d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<AddrMatch>,
    /// `-p`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<ProtoMatch>,
    /// `--sport`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<PortMatch>,
    /// `--dport`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<PortMatch>,
    /// `--icmp-type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpMatch>,
    /// `--tcp-flags` / `--syn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<FlagsMatch>,
    /// `--state` / `--ctstate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateMatch>,
    /// `--mark`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<MarkMatch>,
    /// `-j`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

/// Which rule `del` removes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteBy {
    /// Position, from 1.
    Number(usize),
    /// The first rule equal to this one.
    Spec(Rule),
}

/// A parsed `strata filter` command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `add CHAIN RULE` / `-A`: append.
    Add {
        /// Table.
        table: Table,
        /// Chain.
        chain: String,
        /// Rule.
        rule: Rule,
    },
    /// `insert CHAIN [N] RULE` / `-I`: insert before rule N (default 1).
    Insert {
        /// Table.
        table: Table,
        /// Chain.
        chain: String,
        /// Position, from 1.
        pos: usize,
        /// Rule.
        rule: Rule,
    },
    /// `del CHAIN N|RULE` / `-D`.
    Delete {
        /// Table.
        table: Table,
        /// Chain.
        chain: String,
        /// Which rule.
        which: DeleteBy,
    },
    /// `list [CHAIN]` / `-L`.
    List {
        /// Table.
        table: Table,
        /// Only this chain.
        chain: Option<String>,
    },
    /// `flush [CHAIN]` / `-F`: remove rules.
    Flush {
        /// Table.
        table: Table,
        /// Only this chain.
        chain: Option<String>,
    },
    /// `zero [CHAIN]` / `-Z`: reset counters.
    Zero {
        /// Table.
        table: Table,
        /// Only this chain.
        chain: Option<String>,
    },
    /// `new-chain NAME` / `-N`.
    NewChain {
        /// Table.
        table: Table,
        /// Name.
        chain: String,
    },
    /// `delete-chain [NAME]` / `-X`: delete an empty, unreferenced user
    /// chain (every one without a name).
    DeleteChain {
        /// Table.
        table: Table,
        /// Name.
        chain: Option<String>,
    },
    /// `policy CHAIN ACCEPT|DROP` / `-P`.
    Policy {
        /// Table.
        table: Table,
        /// Built-in chain.
        chain: String,
        /// Policy.
        policy: Policy,
    },
}

/// A refused command or rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Index (from 0) of the word the error is about; the number of words
    /// when something is missing at the end.
    pub word: usize,
    /// That word (empty at the end).
    pub text: String,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            write!(f, "at word {} (end): {}", self.word + 1, self.msg)
        } else {
            write!(f, "at word {} {:?}: {}", self.word + 1, self.text, self.msg)
        }
    }
}

impl std::error::Error for ParseError {}

struct Words<'a, 'w> {
    w: &'a [&'w str],
    i: usize,
}

impl<'w> Words<'_, 'w> {
    fn err(&self, at: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            word: at,
            text: self.w.get(at).map_or(String::new(), |s| s.to_string()),
            msg: msg.into(),
        }
    }

    fn peek(&self) -> Option<&'w str> {
        self.w.get(self.i).copied()
    }

    fn next(&mut self) -> Option<&'w str> {
        let w = self.peek();
        if w.is_some() {
            self.i += 1;
        }
        w
    }

    /// The argument of the option at `opt`.
    fn arg(&mut self, opt: usize, what: &str) -> Result<&'w str, ParseError> {
        match self.next() {
            Some(a) => Ok(a),
            None => Err(self.err(opt, format!("expected {what} after it"))),
        }
    }
}

fn bad(opt: usize, words: &Words, what: &str, got: &str) -> ParseError {
    words.err(opt, format!("expected {what}, got {got:?}"))
}

/// Parses a whole `strata filter` command line (the words after
/// `filter`): `add|insert|del|list|flush|zero|new-chain|delete-chain|policy`
/// or their iptables letters `-A -I -D -L -F -Z -N -X -P`, with `-t TABLE`
/// and `-6` (IPv6's table, see the module documentation) or `-4` anywhere.
pub fn parse_command(words: &[&str]) -> Result<Command, ParseError> {
    let mut w = Words { w: words, i: 0 };
    let mut table: Option<(Table, usize)> = None;
    let mut spec = Spec::default();
    // The table and family options may come before the command word.
    while let Some(word @ ("-t" | "--table" | "-4" | "-6" | "--ipv4" | "--ipv6")) = w.peek() {
        let at = w.i;
        w.next();
        if let Some(v6) = family_word(word) {
            spec.set_family(&w, v6, at)?;
            continue;
        }
        let t = w.arg(at, "a table (filter or nat)")?;
        let t = Table::from_name(t).ok_or_else(|| bad(at, &w, "filter or nat", t))?;
        if table.is_some() {
            return Err(w.err(at, "table given twice"));
        }
        table = Some((t, at));
    }
    let cmd_at = w.i;
    let Some(cmd) = w.next() else {
        return Err(w.err(cmd_at, "expected a command (add, insert, del, list, flush, zero, new-chain, delete-chain, policy)"));
    };
    let chain_arg = |w: &mut Words, what: &str| -> Result<(String, usize), ParseError> {
        let at = w.i;
        let c = w.arg(at.saturating_sub(1), what)?;
        check_chain_name(c).map_err(|m| w.err(at, m))?;
        Ok((c.to_string(), at))
    };
    let opt_chain = |w: &mut Words| -> Result<Option<String>, ParseError> {
        match w.peek() {
            Some(c) if !c.starts_with('-') => {
                let at = w.i;
                w.next();
                check_chain_name(c).map_err(|m| w.err(at, m))?;
                Ok(Some(c.to_string()))
            }
            _ => Ok(None),
        }
    };
    let t = |table: Option<(Table, usize)>, spec: &Spec| -> Table {
        table
            .map(|t| t.0)
            .or(spec.table.map(|t| t.0))
            .unwrap_or_default()
    };
    let cmd = match cmd {
        "add" | "-A" | "--append" => {
            let (chain, _) = chain_arg(&mut w, "a chain")?;
            let rule = parse_rule_words(&mut w, &mut spec, table.is_none(), true)?;
            Command::Add {
                table: t(table, &spec),
                chain,
                rule,
            }
        }
        "insert" | "-I" | "--insert" => {
            let (chain, _) = chain_arg(&mut w, "a chain")?;
            let mut pos = 1;
            if let Some(n) = w.peek().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) {
                let at = w.i;
                w.next();
                pos = n
                    .parse::<usize>()
                    .ok()
                    .filter(|&p| p >= 1)
                    .ok_or_else(|| w.err(at, "expected a rule number from 1"))?;
            }
            let rule = parse_rule_words(&mut w, &mut spec, table.is_none(), true)?;
            Command::Insert {
                table: t(table, &spec),
                chain,
                pos,
                rule,
            }
        }
        "del" | "delete" | "-D" | "--delete" => {
            let (chain, _) = chain_arg(&mut w, "a chain")?;
            let which = match w.peek() {
                Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => {
                    let at = w.i;
                    w.next();
                    let n = n
                        .parse::<usize>()
                        .ok()
                        .filter(|&p| p >= 1)
                        .ok_or_else(|| w.err(at, "expected a rule number from 1"))?;
                    DeleteBy::Number(n)
                }
                _ => DeleteBy::Spec(parse_rule_words(&mut w, &mut spec, table.is_none(), true)?),
            };
            Command::Delete {
                table: t(table, &spec),
                chain,
                which,
            }
        }
        "list" | "-L" | "--list" | "-S" => Command::List {
            table: Table::Filter,
            chain: opt_chain(&mut w)?,
        },
        "flush" | "-F" | "--flush" => Command::Flush {
            table: Table::Filter,
            chain: opt_chain(&mut w)?,
        },
        "zero" | "-Z" | "--zero" => Command::Zero {
            table: Table::Filter,
            chain: opt_chain(&mut w)?,
        },
        "new-chain" | "-N" | "--new-chain" => {
            let (chain, at) = chain_arg(&mut w, "a chain name")?;
            if Hook::from_name(&chain).is_some() {
                return Err(w.err(at, "a built-in chain's name"));
            }
            Command::NewChain {
                table: Table::Filter,
                chain,
            }
        }
        "delete-chain" | "-X" | "--delete-chain" => Command::DeleteChain {
            table: Table::Filter,
            chain: opt_chain(&mut w)?,
        },
        "policy" | "-P" | "--policy" => {
            let (chain, at) = chain_arg(&mut w, "a built-in chain")?;
            if Hook::from_name(&chain).is_none() {
                return Err(w.err(at, "only built-in chains have a policy"));
            }
            let pat = w.i;
            let p = w.arg(at, "ACCEPT or DROP")?;
            let policy = match p {
                "ACCEPT" => Policy::Accept,
                "DROP" => Policy::Drop,
                _ => return Err(w.err(pat, "expected ACCEPT or DROP")),
            };
            Command::Policy {
                table: Table::Filter,
                chain,
                policy,
            }
        }
        _ => return Err(w.err(cmd_at, "unknown command (add, insert, del, list, flush, zero, new-chain, delete-chain, policy)")),
    };
    // Commands without a rule may still be followed by `-t TABLE`.
    let mut cmd = cmd;
    while let Some(word) = w.peek() {
        let at = w.i;
        if let Some(v6) = family_word(word) {
            w.next();
            spec.set_family(&w, v6, at)?;
        } else if (word == "-t" || word == "--table") && table.is_none() && spec.table.is_none() {
            w.next();
            let tn = w.arg(at, "a table (filter or nat)")?;
            let tt = Table::from_name(tn).ok_or_else(|| bad(at, &w, "filter or nat", tn))?;
            table = Some((tt, at));
        } else {
            return Err(w.err(at, "unexpected word"));
        }
    }
    let v6 = spec.family.is_some_and(|f| f.0);
    let final_table = match t(table, &spec) {
        Table::Nat if v6 => Table::Nat6,
        Table::Filter if v6 => Table::Filter6,
        other => other,
    };
    match &mut cmd {
        Command::Add { table, .. }
        | Command::Insert { table, .. }
        | Command::Delete { table, .. }
        | Command::List { table, .. }
        | Command::Flush { table, .. }
        | Command::Zero { table, .. }
        | Command::NewChain { table, .. }
        | Command::DeleteChain { table, .. }
        | Command::Policy { table, .. } => *table = final_table,
    }
    if let Command::Add { rule, .. }
    | Command::Insert { rule, .. }
    | Command::Delete {
        which: DeleteBy::Spec(rule),
        ..
    } = &mut cmd
    {
        check_family(rule, v6, &spec, words)?;
    }
    check_command(&cmd, words)?;
    Ok(cmd)
}

/// Fits a parsed rule to its family (`v6`: an IPv6 rule, `-6`): the
/// family's addresses (NAT targets' too), ICMP protocol and REJECT
/// answers only, and a REJECT without `--reject-with` answering with the family's
/// port unreachable (ICMP's or ICMPv6's, as ip6tables does).
fn check_family(r: &mut Rule, v6: bool, spec: &Spec, words: &[&str]) -> Result<(), ParseError> {
    let w = Words { w: words, i: 0 };
    let pos = |opts: &[&str]| words.iter().position(|x| opts.contains(x)).unwrap_or(0);
    let fam = |v6: bool| if v6 { "an IPv6" } else { "an IPv4" };
    for (m, opts) in [
        (&r.src, &["-s", "--source", "--src"]),
        (&r.dst, &["-d", "--destination", "--dst"]),
    ] {
        if let Some(m) = m.filter(|m| m.addr.is_ipv6() != v6) {
            return Err(w.err(
                pos(opts),
                format!(
                    "{} address in {} rule (IPv6 rules are given with -6)",
                    fam(m.addr.is_ipv6()),
                    fam(v6)
                ),
            ));
        }
    }
    match r.proto.map(|p| p.proto) {
        Some(1) if v6 => {
            return Err(w.err(
                pos(&["-p", "--protocol"]),
                "IPv6 rules take -p icmpv6, not icmp",
            ))
        }
        Some(ICMPV6) if !v6 => {
            return Err(w.err(
                pos(&["-p", "--protocol"]),
                "-p icmpv6 needs -6 (an IPv6 rule)",
            ))
        }
        _ => {}
    }
    match &mut r.target {
        Some(Target::Reject(rw)) if v6 && !rw.is_icmp6() && *rw != RejectWith::TcpReset => {
            if spec.reject_at.is_some() {
                return Err(w.err(
                    pos(&["--reject-with"]),
                    "IPv6 rules answer with icmp6-port-unreachable, icmp6-adm-prohibited, icmp6-addr-unreachable, icmp6-no-route or tcp-reset",
                ));
            }
            *rw = RejectWith::Icmp6PortUnreachable;
        }
        Some(Target::Reject(rw)) if !v6 && rw.is_icmp6() => {
            return Err(w.err(
                pos(&["--reject-with"]),
                "an ICMPv6 answer needs -6 (an IPv6 rule)",
            ));
        }
        Some(Target::Snat { addr, .. } | Target::Dnat { addr, .. }) if addr.is_ipv6() != v6 => {
            return Err(w.err(
                pos(&["--to-source", "--to-destination"]),
                format!(
                    "{} address in {} rule (IPv6 rules are given with -6)",
                    fam(addr.is_ipv6()),
                    fam(v6)
                ),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Checks that depend on the table: built-in chains of that table, and
/// targets allowed in it.
fn check_command(cmd: &Command, words: &[&str]) -> Result<(), ParseError> {
    let w = Words { w: words, i: 0 };
    let (table, chain) = match cmd {
        Command::Add { table, chain, .. }
        | Command::Insert { table, chain, .. }
        | Command::Delete { table, chain, .. }
        | Command::Policy { table, chain, .. } => (*table, chain),
        _ => return Ok(()),
    };
    if let Some(h) = Hook::from_name(chain) {
        if !table.hooks().contains(&h) {
            let at = words.iter().position(|s| *s == chain.as_str()).unwrap_or(0);
            return Err(w.err(
                at,
                format!("the {} table has no {} chain", table.label(), h.name()),
            ));
        }
    }
    let rule = match cmd {
        Command::Add { rule, .. } | Command::Insert { rule, .. } => rule,
        Command::Delete {
            which: DeleteBy::Spec(rule),
            ..
        } => rule,
        _ => return Ok(()),
    };
    if let Some(t) = &rule.target {
        let at = words.iter().position(|s| *s == t.name()).unwrap_or(0);
        if t.is_nat() && !table.is_nat() {
            return Err(w.err(at, "a NAT target belongs in the nat table (-t nat)"));
        }
        if matches!(t, Target::Drop | Target::Reject(_)) && table.is_nat() {
            return Err(w.err(at, format!("{} is not allowed in the nat table", t.name())));
        }
    }
    Ok(())
}

fn check_chain_name(c: &str) -> Result<(), String> {
    if c.is_empty() || c.len() > MAX_CHAIN_NAME {
        return Err(format!("a chain name has 1 to {MAX_CHAIN_NAME} characters"));
    }
    if c.starts_with('-') || c.starts_with('!') {
        return Err("expected a chain name".into());
    }
    if !c
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err("a chain name has only letters, digits, '_', '-' and '.'".into());
    }
    if TARGET_WORDS.contains(&c) {
        return Err("that is a target, not a chain".into());
    }
    Ok(())
}

/// Parses a rule specification alone (`-p tcp --dport 80 -j ACCEPT`);
/// error positions count within `words`.
pub fn parse_rule(words: &[&str]) -> Result<Rule, ParseError> {
    let mut w = Words { w: words, i: 0 };
    let mut spec = Spec::default();
    parse_rule_words(&mut w, &mut spec, false, false)
}

#[derive(Default)]
struct Spec {
    table: Option<(Table, usize)>,
    /// `-4` / `-6` (true) and where.
    family: Option<(bool, usize)>,
    /// Where `--reject-with` was given (absent: the family's default).
    reject_at: Option<usize>,
}

impl Spec {
    /// Records `-4` (`v6` false) or `-6` at word `at`.
    fn set_family(&mut self, w: &Words, v6: bool, at: usize) -> Result<(), ParseError> {
        match self.family {
            Some((f, _)) if f != v6 => Err(w.err(at, "-4 and -6 together")),
            _ => {
                self.family = Some((v6, at));
                Ok(())
            }
        }
    }
}

/// Whether `word` is a family option: `Some(true)` for `-6`.
fn family_word(word: &str) -> Option<bool> {
    match word {
        "-6" | "--ipv6" => Some(true),
        "-4" | "--ipv4" => Some(false),
        _ => None,
    }
}

/// Match modules loaded with `-m`.
mod module {
    pub const STATE: u8 = 1;
    pub const CONNTRACK: u8 = 2;
    pub const MARK: u8 = 4;
}

fn parse_rule_words(
    w: &mut Words,
    spec: &mut Spec,
    allow_table: bool,
    in_command: bool,
) -> Result<Rule, ParseError> {
    let mut r = Rule::default();
    let mut neg: Option<usize> = None;
    let mut modules = 0u8;
    let mut proto_at = None;
    let mut target_at: Option<usize> = None;
    // Target options seen, to refuse them twice.
    let mut seen_topt: Vec<&str> = Vec::new();
    while let Some(word) = w.next() {
        let at = w.i - 1;
        if word == "!" {
            if neg.is_some() {
                return Err(w.err(at, "'!' given twice"));
            }
            neg = Some(at);
            continue;
        }
        let n = neg.take().is_some();
        let no_neg = |w: &Words| -> Result<(), ParseError> {
            if n {
                Err(w.err(at - 1, format!("{word} cannot be negated")))
            } else {
                Ok(())
            }
        };
        let twice = |w: &Words, set: bool| -> Result<(), ParseError> {
            if set {
                Err(w.err(at, "given twice"))
            } else {
                Ok(())
            }
        };
        match word {
            "-4" | "--ipv4" | "-6" | "--ipv6" if in_command => {
                no_neg(w)?;
                spec.set_family(w, family_word(word) == Some(true), at)?;
            }
            "-t" | "--table" if allow_table => {
                no_neg(w)?;
                twice(w, spec.table.is_some())?;
                let t = w.arg(at, "a table (filter or nat)")?;
                let t = Table::from_name(t).ok_or_else(|| bad(at, w, "filter or nat", t))?;
                spec.table = Some((t, at));
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let slot = if word.starts_with("-i") || word == "--in-interface" {
                    &mut r.in_if
                } else {
                    &mut r.out_if
                };
                twice(w, slot.is_some())?;
                let name = w.arg(at, "an interface name")?;
                let stem = name.strip_suffix('+').unwrap_or(name);
                if name.is_empty()
                    || name.len() > MAX_IFACE_NAME
                    || stem.contains('+')
                    || !stem
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'!')
                {
                    return Err(bad(
                        at,
                        w,
                        "an interface name (up to 15 characters, '+' at the end for a prefix)",
                        name,
                    ));
                }
                *slot = Some(IfaceMatch {
                    name: name.to_string(),
                    neg: n,
                });
            }
            "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst" => {
                let slot = if word.starts_with("-s") || word.starts_with("--s") {
                    &mut r.src
                } else {
                    &mut r.dst
                };
                twice(w, slot.is_some())?;
                let a = w.arg(at, "an address")?;
                let (addr, prefix) =
                    parse_prefix(a).ok_or_else(|| bad(at, w, "an address or address/prefix", a))?;
                *slot = Some(AddrMatch {
                    addr: network(addr, prefix),
                    prefix,
                    neg: n,
                });
            }
            "-p" | "--protocol" => {
                twice(w, proto_at.is_some())?;
                let p = w.arg(at, "a protocol")?;
                let proto = parse_proto(p).ok_or_else(|| {
                    bad(at, w, "tcp, udp, icmp, icmpv6, all or a protocol number", p)
                })?;
                proto_at = Some(at);
                if proto == 0 {
                    if n {
                        return Err(w.err(at - 1, "'! -p all' matches nothing"));
                    }
                } else {
                    r.proto = Some(ProtoMatch { proto, neg: n });
                }
            }
            "-m" | "--match" => {
                no_neg(w)?;
                let m = w.arg(at, "a match module")?;
                match m {
                    "tcp" | "udp" | "icmp" | "icmp6" | "icmpv6" | "ipv6-icmp" => {
                        let want = parse_proto(m).unwrap_or(0);
                        if r.proto
                            != Some(ProtoMatch {
                                proto: want,
                                neg: false,
                            })
                        {
                            return Err(w.err(at, format!("-m {m} needs -p {m} before it")));
                        }
                    }
                    "state" => modules |= module::STATE,
                    "conntrack" => modules |= module::CONNTRACK,
                    "mark" => modules |= module::MARK,
                    _ => {
                        return Err(bad(
                            at,
                            w,
                            "a match module (tcp, udp, icmp, icmp6, state, conntrack, mark)",
                            m,
                        ))
                    }
                }
            }
            "--sport" | "--source-port" | "--dport" | "--destination-port" => {
                let is_src = word == "--sport" || word == "--source-port";
                let slot = if is_src { &mut r.sport } else { &mut r.dport };
                twice(w, slot.is_some())?;
                match r.proto {
                    Some(ProtoMatch {
                        proto: 6 | 17,
                        neg: false,
                    }) => {}
                    _ => return Err(w.err(at, "port matches need -p tcp or -p udp before them")),
                }
                let a = w.arg(at, "a port or port range")?;
                let (lo, hi) = parse_port_range(a, ':')
                    .ok_or_else(|| bad(at, w, "a port or port range", a))?;
                *slot = Some(PortMatch { lo, hi, neg: n });
            }
            "--icmp-type" | "--icmpv6-type" => {
                twice(w, r.icmp.is_some())?;
                let (proto, p) = if word == "--icmp-type" {
                    (1, "icmp")
                } else {
                    (ICMPV6, "icmpv6")
                };
                if r.proto != Some(ProtoMatch { proto, neg: false }) {
                    return Err(w.err(at, format!("{word} needs -p {p} before it")));
                }
                let a = w.arg(at, "an ICMP type")?;
                let names: &[IcmpName] = if proto == 1 {
                    &ICMP_NAMES
                } else {
                    &ICMP6_NAMES
                };
                let (ty, code) = parse_icmp_type(a, names)
                    .ok_or_else(|| bad(at, w, "an ICMP type name, any, TYPE or TYPE/CODE", a))?;
                r.icmp = Some(IcmpMatch { ty, code, neg: n });
            }
            "--tcp-flags" | "--syn" => {
                twice(w, r.tcp_flags.is_some())?;
                if r.proto
                    != Some(ProtoMatch {
                        proto: 6,
                        neg: false,
                    })
                {
                    return Err(w.err(at, format!("{word} needs -p tcp before it")));
                }
                let (mask, comp) = if word == "--syn" {
                    (tcpflag::SYN_MASK, tcpflag::SYN)
                } else {
                    let m = w.arg(at, "a flag list (e.g. SYN,ACK)")?;
                    let mask = parse_flags(m)
                        .ok_or_else(|| bad(at, w, "a flag list (e.g. SYN,ACK,FIN,RST)", m))?;
                    let c = w.arg(at, "the flags that must be set")?;
                    let comp =
                        parse_flags(c).ok_or_else(|| bad(at, w, "a flag list (e.g. SYN)", c))?;
                    if comp & !mask != 0 {
                        return Err(w.err(at, format!("flags {c:?} are not all in the mask {m:?}")));
                    }
                    (mask, comp)
                };
                r.tcp_flags = Some(FlagsMatch { mask, comp, neg: n });
            }
            "--state" | "--ctstate" => {
                twice(w, r.state.is_some())?;
                let (need, module) = if word == "--state" {
                    (module::STATE, StateModule::State)
                } else {
                    (module::CONNTRACK, StateModule::Conntrack)
                };
                if modules & need == 0 {
                    let m = if need == module::STATE {
                        "state"
                    } else {
                        "conntrack"
                    };
                    return Err(w.err(at, format!("{word} needs -m {m} before it")));
                }
                let a = w.arg(at, "a state list")?;
                let states = parse_states(a).ok_or_else(|| {
                    bad(
                        at,
                        w,
                        "a list of NEW, ESTABLISHED, RELATED, INVALID, UNTRACKED",
                        a,
                    )
                })?;
                r.state = Some(StateMatch {
                    module,
                    states,
                    neg: n,
                });
            }
            "--mark" => {
                twice(w, r.mark.is_some())?;
                if modules & module::MARK == 0 {
                    return Err(w.err(at, "--mark needs -m mark before it"));
                }
                let a = w.arg(at, "a mark")?;
                let (value, mask) =
                    parse_mark(a).ok_or_else(|| bad(at, w, "a mark VALUE or VALUE/MASK", a))?;
                r.mark = Some(MarkMatch {
                    value: value & mask,
                    mask,
                    neg: n,
                });
            }
            "-j" | "--jump" => {
                no_neg(w)?;
                twice(w, r.target.is_some())?;
                let t = w.arg(at, "a target")?;
                target_at = Some(at + 1);
                r.target = Some(match t {
                    "ACCEPT" => Target::Accept,
                    "DROP" => Target::Drop,
                    "RETURN" => Target::Return,
                    "REJECT" => Target::Reject(RejectWith::default()),
                    "LOG" => Target::Log {
                        prefix: String::new(),
                    },
                    "MARK" => Target::Mark { value: 0, mask: 0 },
                    "SNAT" => Target::Snat {
                        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        ports: None,
                    },
                    "DNAT" => Target::Dnat {
                        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        ports: None,
                    },
                    "MASQUERADE" => Target::Masquerade { ports: None },
                    "REDIRECT" => Target::Redirect { ports: None },
                    c => {
                        check_chain_name(c)
                            .map_err(|m| w.err(at + 1, format!("not a target: {m}")))?;
                        if Hook::from_name(c).is_some() {
                            return Err(w.err(at + 1, "cannot jump to a built-in chain"));
                        }
                        Target::Jump(c.to_string())
                    }
                });
            }
            "--reject-with" | "--log-prefix" | "--log-level" | "--set-mark" | "--to-source"
            | "--to-destination" | "--to-ports" => {
                no_neg(w)?;
                if seen_topt.contains(&word) {
                    return Err(w.err(at, "given twice"));
                }
                seen_topt.push(word);
                let tname = r.target.as_ref().map(|t| t.name().to_string());
                let wrong = |w: &Words, want: &str| {
                    w.err(at, format!("{word} belongs to -j {want}, after it"))
                };
                let a = w.arg(at, "a value")?;
                match (word, r.target.as_mut()) {
                    ("--reject-with", Some(Target::Reject(rw))) => {
                        spec.reject_at = Some(at);
                        *rw = RejectWith::NAMES
                            .iter()
                            .find(|(n, _)| *n == a)
                            .map(|(_, r)| *r)
                            .ok_or_else(|| {
                                bad(at, w, "icmp-port-unreachable, icmp-host-unreachable, icmp-net-unreachable, icmp-admin-prohibited, tcp-reset or (-6) icmp6-port-unreachable, icmp6-adm-prohibited, icmp6-addr-unreachable, icmp6-no-route", a)
                            })?;
                    }
                    ("--reject-with", _) => return Err(wrong(w, "REJECT")),
                    ("--log-prefix", Some(Target::Log { prefix })) => {
                        if a.len() > MAX_LOG_PREFIX || a.chars().any(|c| c.is_control()) {
                            return Err(bad(at, w, "a prefix of up to 29 printable characters", a));
                        }
                        *prefix = a.to_string();
                    }
                    ("--log-level", Some(Target::Log { .. })) => {
                        // Accepted for compatibility; every line goes to the
                        // launcher's log at one level.
                        if !matches!(
                            a,
                            "0" | "1"
                                | "2"
                                | "3"
                                | "4"
                                | "5"
                                | "6"
                                | "7"
                                | "emerg"
                                | "alert"
                                | "crit"
                                | "err"
                                | "warning"
                                | "notice"
                                | "info"
                                | "debug"
                        ) {
                            return Err(bad(at, w, "a syslog level", a));
                        }
                    }
                    ("--log-prefix" | "--log-level", _) => return Err(wrong(w, "LOG")),
                    ("--set-mark", Some(Target::Mark { value, mask })) => {
                        let (v, m) = parse_mark(a)
                            .ok_or_else(|| bad(at, w, "a mark VALUE or VALUE/MASK", a))?;
                        *value = v & m;
                        *mask = m;
                    }
                    ("--set-mark", _) => return Err(wrong(w, "MARK")),
                    ("--to-source", Some(Target::Snat { addr, ports })) => {
                        let (ad, p) = parse_nat_to(a).ok_or_else(|| {
                            bad(
                                at,
                                w,
                                "ADDRESS[:PORT[-PORT]] (IPv6: ADDRESS or [ADDRESS]:PORT[-PORT])",
                                a,
                            )
                        })?;
                        *addr = ad;
                        *ports = p;
                    }
                    ("--to-source", _) => return Err(wrong(w, "SNAT")),
                    ("--to-destination", Some(Target::Dnat { addr, ports })) => {
                        let (ad, p) = parse_nat_to(a).ok_or_else(|| {
                            bad(
                                at,
                                w,
                                "ADDRESS[:PORT[-PORT]] (IPv6: ADDRESS or [ADDRESS]:PORT[-PORT])",
                                a,
                            )
                        })?;
                        *addr = ad;
                        *ports = p;
                    }
                    ("--to-destination", _) => return Err(wrong(w, "DNAT")),
                    (
                        "--to-ports",
                        Some(Target::Masquerade { ports } | Target::Redirect { ports }),
                    ) => {
                        let (lo, hi) = parse_port_range(a, '-')
                            .ok_or_else(|| bad(at, w, "PORT or PORT-PORT", a))?;
                        *ports = Some(PortRange { lo, hi });
                    }
                    ("--to-ports", _) => {
                        return Err(wrong(
                            w,
                            if tname.is_some() {
                                "MASQUERADE or REDIRECT"
                            } else {
                                "REDIRECT"
                            },
                        ))
                    }
                    _ => return Err(w.err(at, "unknown option")),
                }
            }
            _ => {
                return Err(w.err(
                    at,
                    if word.starts_with('-') {
                        "unknown option"
                    } else {
                        "unexpected word (options start with '-')"
                    },
                ))
            }
        }
    }
    if let Some(at) = neg {
        return Err(w.err(at, "'!' must be followed by an option"));
    }
    // Checks that need the whole rule.
    let tat = target_at.unwrap_or(0);
    let l4 = matches!(
        r.proto,
        Some(ProtoMatch {
            proto: 6 | 17,
            neg: false
        })
    );
    match &r.target {
        Some(Target::Reject(RejectWith::TcpReset))
            if r.proto
                != Some(ProtoMatch {
                    proto: 6,
                    neg: false,
                }) =>
        {
            return Err(w.err(tat, "--reject-with tcp-reset needs -p tcp"));
        }
        Some(Target::Snat { addr, ports }) | Some(Target::Dnat { addr, ports }) => {
            if addr.is_unspecified() {
                let opt = if matches!(r.target, Some(Target::Snat { .. })) {
                    "--to-source"
                } else {
                    "--to-destination"
                };
                return Err(w.err(tat, format!("needs {opt}")));
            }
            if ports.is_some() && !l4 {
                return Err(w.err(tat, "ports need -p tcp or -p udp"));
            }
        }
        Some(Target::Masquerade { ports: Some(_) }) | Some(Target::Redirect { ports: Some(_) })
            if !l4 =>
        {
            return Err(w.err(tat, "--to-ports needs -p tcp or -p udp"));
        }
        Some(Target::Mark { mask: 0, .. }) => return Err(w.err(tat, "needs --set-mark")),
        _ => {}
    }
    Ok(r)
}

fn parse_u32(s: &str) -> Option<u32> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() || h.len() > 8 {
            return None;
        }
        u32::from_str_radix(h, 16).ok()
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() <= 10 {
        s.parse().ok()
    } else {
        None
    }
}

fn parse_dec_u8(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `N`, `N:M`, `:M`, `N:` with separator `sep` (`:` for matches, `-` for
/// NAT targets, which take no open ends).
fn parse_port_range(s: &str, sep: char) -> Option<(u16, u16)> {
    match s.split_once(sep) {
        None => parse_port(s).map(|p| (p, p)),
        Some((a, b)) => {
            let open = sep == ':';
            let lo = if a.is_empty() && open {
                0
            } else {
                parse_port(a)?
            };
            let hi = if b.is_empty() && open {
                65535
            } else {
                parse_port(b)?
            };
            (lo <= hi).then_some((lo, hi))
        }
    }
}

/// `addr` with the host bits past `prefix` cleared.
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => Ipv4Addr::from(u32::from(a) & prefix_mask(prefix)).into(),
        IpAddr::V6(a) => Ipv6Addr::from(u128::from(a) & mask6(prefix)).into(),
    }
}

/// `A.B.C.D`, `A.B.C.D/N` or `A.B.C.D/M.A.S.K` (contiguous masks only),
/// or an IPv6 `ADDR` or `ADDR/N` (RFC 4291 §2.3; N up to 128).
fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = match s.split_once('/') {
        None => (s, None),
        Some((a, p)) => (a, Some(p)),
    };
    if a.contains(':') {
        let addr: Ipv6Addr = a.parse().ok()?;
        let prefix = match p {
            None => 128,
            Some(p) => parse_dec_u8(p).filter(|&n| n <= 128)?,
        };
        return Some((addr.into(), prefix));
    }
    let addr: Ipv4Addr = a.parse().ok()?;
    let prefix = match p {
        None => 32,
        Some(p) => match parse_dec_u8(p) {
            Some(n) if n <= 32 => n,
            Some(_) => return None,
            None => {
                let m = u32::from(p.parse::<Ipv4Addr>().ok()?);
                let n = m.leading_ones() as u8;
                if prefix_mask(n) != m {
                    return None;
                }
                n
            }
        },
    };
    Some((addr.into(), prefix))
}

fn parse_proto(s: &str) -> Option<u8> {
    match s {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "icmpv6" | "ipv6-icmp" | "icmp6" => Some(ICMPV6),
        "all" => Some(0),
        _ => parse_dec_u8(s),
    }
}

fn proto_name(p: u8) -> Option<&'static str> {
    match p {
        6 => Some("tcp"),
        17 => Some("udp"),
        1 => Some("icmp"),
        ICMPV6 => Some("icmpv6"),
        _ => None,
    }
}

/// IP protocol number of ICMPv6.
const ICMPV6: u8 = 58;

/// A type name, its type and code (`None`: every code).
type IcmpName = (&'static str, u8, Option<u8>);

const ICMP_NAMES: [IcmpName; 16] = [
    ("echo-reply", 0, None),
    ("destination-unreachable", 3, None),
    ("network-unreachable", 3, Some(0)),
    ("host-unreachable", 3, Some(1)),
    ("protocol-unreachable", 3, Some(2)),
    ("port-unreachable", 3, Some(3)),
    ("fragmentation-needed", 3, Some(4)),
    ("communication-prohibited", 3, Some(13)),
    ("source-quench", 4, None),
    ("redirect", 5, None),
    ("echo-request", 8, None),
    ("time-exceeded", 11, None),
    ("ttl-zero-during-transit", 11, Some(0)),
    ("parameter-problem", 12, None),
    ("timestamp-request", 13, None),
    ("timestamp-reply", 14, None),
];

/// ICMPv6 type names as ip6tables knows them (RFC 4443 §3–4, RFC 4861
/// §4, MLD: RFC 2710 §3, RFC 3810 §5.2); the first name of a type and code
/// is the one printed, aliases follow it.
const ICMP6_NAMES: [IcmpName; 32] = [
    ("destination-unreachable", 1, None),
    ("no-route", 1, Some(0)),
    ("communication-prohibited", 1, Some(1)),
    ("beyond-scope", 1, Some(2)),
    ("address-unreachable", 1, Some(3)),
    ("port-unreachable", 1, Some(4)),
    ("failed-policy", 1, Some(5)),
    ("reject-route", 1, Some(6)),
    ("packet-too-big", 2, None),
    ("time-exceeded", 3, None),
    ("ttl-zero-during-transit", 3, Some(0)),
    ("ttl-zero-during-reassembly", 3, Some(1)),
    ("parameter-problem", 4, None),
    ("bad-header", 4, Some(0)),
    ("unknown-header-type", 4, Some(1)),
    ("unknown-option", 4, Some(2)),
    ("echo-request", 128, None),
    ("echo-reply", 129, None),
    ("mld-listener-query", 130, None),
    ("mld-listener-report", 131, None),
    ("mld-listener-done", 132, None),
    ("router-solicitation", 133, None),
    ("router-advertisement", 134, None),
    ("neighbour-solicitation", 135, None),
    ("neighbour-advertisement", 136, None),
    ("redirect", 137, None),
    ("mld2-listener-report", 143, None),
    ("ttl-exceeded", 3, None),
    ("ping", 128, None),
    ("pong", 129, None),
    ("neighbor-solicitation", 135, None),
    ("neighbor-advertisement", 136, None),
];

fn parse_icmp_type(s: &str, names: &[IcmpName]) -> Option<(Option<u8>, Option<u8>)> {
    if s == "any" {
        return Some((None, None));
    }
    if let Some((_, t, c)) = names.iter().find(|(n, _, _)| *n == s) {
        return Some((Some(*t), *c));
    }
    match s.split_once('/') {
        None => Some((Some(parse_dec_u8(s)?), None)),
        Some((t, c)) => Some((Some(parse_dec_u8(t)?), Some(parse_dec_u8(c)?))),
    }
}

fn parse_flags(s: &str) -> Option<u8> {
    match s {
        "ALL" => return Some(tcpflag::ALL),
        "NONE" => return Some(0),
        _ => {}
    }
    let mut v = 0;
    for f in s.split(',') {
        v |= tcpflag::NAMES.iter().find(|(n, _)| *n == f)?.1;
    }
    Some(v)
}

fn parse_states(s: &str) -> Option<u8> {
    let mut v = 0;
    for st in s.split(',') {
        v |= ctbits::NAMES.iter().find(|(n, _)| *n == st)?.1;
    }
    Some(v)
}

fn parse_mark(s: &str) -> Option<(u32, u32)> {
    match s.split_once('/') {
        None => Some((parse_u32(s)?, u32::MAX)),
        Some((v, m)) => Some((parse_u32(v)?, parse_u32(m)?)),
    }
}

/// `A.B.C.D[:P[-Q]]`, or for IPv6 as ip6tables writes it `ADDR` or
/// `[ADDR][:P[-Q]]` (the brackets set the address off from the ports).
fn parse_nat_to(s: &str) -> Option<(IpAddr, Option<PortRange>)> {
    let (addr, p): (IpAddr, _) = if let Some(rest) = s.strip_prefix('[') {
        let (a, after) = rest.split_once(']')?;
        let p = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (IpAddr::V6(a.parse::<Ipv6Addr>().ok()?), p)
    } else if s.matches(':').count() > 1 {
        (IpAddr::V6(s.parse::<Ipv6Addr>().ok()?), None)
    } else {
        let (a, p) = match s.split_once(':') {
            None => (s, None),
            Some((a, p)) => (a, Some(p)),
        };
        (IpAddr::V4(a.parse::<Ipv4Addr>().ok()?), p)
    };
    if addr.is_unspecified() {
        return None;
    }
    let ports = match p {
        None => None,
        Some(p) => {
            let (lo, hi) = parse_port_range(p, '-')?;
            Some(PortRange { lo, hi })
        }
    };
    Some((addr, ports))
}

impl Rule {
    /// The rule as words in the syntax [`parse_rule`] reads:
    /// `parse_rule(&rule.to_words())` gives the rule back.
    pub fn to_words(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        let mut push = |neg: bool, opt: &str, arg: String| {
            if neg {
                v.push("!".into());
            }
            v.push(opt.into());
            if !arg.is_empty() {
                v.push(arg);
            }
        };
        if let Some(m) = &self.in_if {
            push(m.neg, "-i", m.name.clone());
        }
        if let Some(m) = &self.out_if {
            push(m.neg, "-o", m.name.clone());
        }
        let addr = |m: &AddrMatch| {
            if m.prefix == if m.addr.is_ipv6() { 128 } else { 32 } {
                m.addr.to_string()
            } else {
                format!("{}/{}", m.addr, m.prefix)
            }
        };
        if let Some(m) = &self.src {
            push(m.neg, "-s", addr(m));
        }
        if let Some(m) = &self.dst {
            push(m.neg, "-d", addr(m));
        }
        if let Some(m) = &self.proto {
            let name = proto_name(m.proto).map_or(m.proto.to_string(), str::to_string);
            push(m.neg, "-p", name);
        }
        let ports = |m: &PortMatch| {
            if m.lo == m.hi {
                m.lo.to_string()
            } else {
                format!("{}:{}", m.lo, m.hi)
            }
        };
        if let Some(m) = &self.sport {
            push(m.neg, "--sport", ports(m));
        }
        if let Some(m) = &self.dport {
            push(m.neg, "--dport", ports(m));
        }
        if let Some(m) = &self.icmp {
            let v6 = self.proto.is_some_and(|p| p.proto == ICMPV6);
            let (opt, names): (&str, &[IcmpName]) = if v6 {
                ("--icmpv6-type", &ICMP6_NAMES)
            } else {
                ("--icmp-type", &ICMP_NAMES)
            };
            let s = match (m.ty, m.code) {
                (None, _) => "any".to_string(),
                (Some(t), c) => names
                    .iter()
                    .find(|(_, nt, nc)| *nt == t && *nc == c)
                    .map(|(n, _, _)| n.to_string())
                    .unwrap_or_else(|| match c {
                        None => t.to_string(),
                        Some(c) => format!("{t}/{c}"),
                    }),
            };
            push(m.neg, opt, s);
        }
        if let Some(m) = &self.tcp_flags {
            if m.mask == tcpflag::SYN_MASK && m.comp == tcpflag::SYN {
                push(m.neg, "--syn", String::new());
            } else {
                push(m.neg, "--tcp-flags", flags_name(m.mask));
                v.push(flags_name(m.comp));
            }
        }
        if let Some(m) = &self.state {
            let (module, opt) = match m.module {
                StateModule::State => ("state", "--state"),
                StateModule::Conntrack => ("conntrack", "--ctstate"),
            };
            v.push("-m".into());
            v.push(module.into());
            let names: Vec<&str> = ctbits::NAMES
                .iter()
                .filter(|(_, b)| m.states & b != 0)
                .map(|(n, _)| *n)
                .collect();
            let mut push = |neg: bool, opt: &str, arg: String| {
                if neg {
                    v.push("!".into());
                }
                v.push(opt.into());
                v.push(arg);
            };
            push(m.neg, opt, names.join(","));
        }
        if let Some(m) = &self.mark {
            v.push("-m".into());
            v.push("mark".into());
            if m.neg {
                v.push("!".into());
            }
            v.push("--mark".into());
            v.push(mark_str(m.value, m.mask));
        }
        if let Some(t) = &self.target {
            v.push("-j".into());
            v.push(t.name().into());
            let nat_to = |addr: &IpAddr, ports: &Option<PortRange>| {
                let a = match addr {
                    IpAddr::V6(a) if ports.is_some() => format!("[{a}]"),
                    a => a.to_string(),
                };
                match ports {
                    None => a,
                    Some(p) if p.lo == p.hi => format!("{a}:{}", p.lo),
                    Some(p) => format!("{a}:{}-{}", p.lo, p.hi),
                }
            };
            let range = |p: &PortRange| {
                if p.lo == p.hi {
                    p.lo.to_string()
                } else {
                    format!("{}-{}", p.lo, p.hi)
                }
            };
            match t {
                Target::Reject(r) => {
                    v.push("--reject-with".into());
                    v.push(r.name().into());
                }
                Target::Log { prefix } if !prefix.is_empty() => {
                    v.push("--log-prefix".into());
                    v.push(prefix.clone());
                }
                Target::Mark { value, mask } => {
                    v.push("--set-mark".into());
                    v.push(mark_str(*value, *mask));
                }
                Target::Snat { addr, ports } => {
                    v.push("--to-source".into());
                    v.push(nat_to(addr, ports));
                }
                Target::Dnat { addr, ports } => {
                    v.push("--to-destination".into());
                    v.push(nat_to(addr, ports));
                }
                Target::Masquerade { ports: Some(p) } | Target::Redirect { ports: Some(p) } => {
                    v.push("--to-ports".into());
                    v.push(range(p));
                }
                _ => {}
            }
        }
        v
    }
}

fn flags_name(f: u8) -> String {
    match f {
        0 => "NONE".into(),
        tcpflag::ALL => "ALL".into(),
        _ => tcpflag::NAMES
            .iter()
            .filter(|(_, b)| f & b != 0)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn mark_str(value: u32, mask: u32) -> String {
    if mask == u32::MAX {
        format!("{value:#x}")
    } else {
        format!("{value:#x}/{mask:#x}")
    }
}

/// The rule in iptables syntax, a word that needs it quoted for a shell
/// (only a `--log-prefix` can).
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, w) in self.to_words().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if w.is_empty()
                || w.chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
            {
                f.write_str("\"")?;
                for c in w.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("\"")?;
            } else {
                f.write_str(w)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    fn cmd(s: &str) -> Result<Command, ParseError> {
        parse_command(&words(s))
    }

    #[test]
    fn add_reject_with_reset() {
        let c = cmd("add INPUT -p tcp --dport 8080 -j REJECT --reject-with tcp-reset").unwrap();
        let Command::Add { table, chain, rule } = c else {
            panic!()
        };
        assert_eq!(table, Table::Filter);
        assert_eq!(chain, "INPUT");
        assert_eq!(
            rule.proto,
            Some(ProtoMatch {
                proto: 6,
                neg: false
            })
        );
        assert_eq!(
            rule.dport,
            Some(PortMatch {
                lo: 8080,
                hi: 8080,
                neg: false
            })
        );
        assert_eq!(rule.target, Some(Target::Reject(RejectWith::TcpReset)));
    }

    #[test]
    fn round_trips() {
        for s in [
            "-p tcp --dport 8080 -j REJECT --reject-with tcp-reset",
            "! -i eth0 -o tap+ -s 10.0.0.0/8 ! -d 192.168.1.1 -p udp --sport 1000:2000 ! --dport 53 -j ACCEPT",
            "-p icmp --icmp-type echo-request -j DROP",
            "-p icmp ! --icmp-type 3/7 -j LOG --log-prefix icmp:",
            "-p tcp --syn -m state --state NEW,ESTABLISHED -j ACCEPT",
            "-p tcp ! --tcp-flags FIN,SYN,ACK ACK -m conntrack ! --ctstate INVALID -j RETURN",
            "-m mark --mark 0x1/0xff -j MARK --set-mark 0x2",
            "-p 47 -j my-chain",
            "-p tcp -j DNAT --to-destination 10.0.0.2:8080",
            "-p udp -j SNAT --to-source 1.2.3.4:1000-2000",
            "-o eth0 -j MASQUERADE",
            "-p tcp -j REDIRECT --to-ports 3128",
            "-s 1.2.3.4",
            "-p tcp --tcp-flags ALL NONE -j DROP",
        ] {
            let r = parse_rule(&words(s)).unwrap_or_else(|e| panic!("{s}: {e}"));
            let shown = r.to_string();
            assert_eq!(shown, s, "display");
            let back = parse_rule(&words(&shown)).unwrap();
            assert_eq!(back, r, "{s}");
            let json = serde_json::to_string(&r).unwrap();
            let back: Rule = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn log_prefix_with_spaces_is_quoted() {
        let r = parse_rule(&["-j", "LOG", "--log-prefix", "in: \"x\""]).unwrap();
        assert_eq!(r.to_string(), r#"-j LOG --log-prefix "in: \"x\"""#);
        let ws = r.to_words();
        let ws: Vec<&str> = ws.iter().map(|s| s.as_str()).collect();
        assert_eq!(parse_rule(&ws).unwrap(), r);
    }

    #[test]
    fn error_positions() {
        let e = cmd("add INPUT -p tcp --dport 80x -j ACCEPT").unwrap_err();
        assert_eq!(e.word, 4);
        assert_eq!(
            e.to_string(),
            r#"at word 5 "--dport": expected a port or port range, got "80x""#
        );
        let e = cmd("add INPUT -p tcp --bogus 1").unwrap_err();
        assert_eq!((e.word, e.text.as_str()), (4, "--bogus"));
        let e = cmd("add INPUT --dport 80").unwrap_err();
        assert_eq!(e.word, 2);
        let e = cmd("add INPUT -p tcp --dport").unwrap_err();
        assert_eq!(e.word, 4);
        let e = cmd("add INPUT ! -j ACCEPT").unwrap_err();
        assert_eq!(e.word, 2);
        let e = cmd("add INPUT -p udp -j REJECT --reject-with tcp-reset").unwrap_err();
        assert_eq!(e.word, 5);
        let e = cmd("add INPUT -j DNAT --to-destination 1.2.3.4").unwrap_err();
        assert_eq!(e.text, "DNAT");
        let e = cmd("add PREROUTING -j ACCEPT").unwrap_err();
        assert_eq!(e.text, "PREROUTING");
        let e = cmd("bogus").unwrap_err();
        assert_eq!(e.word, 0);
        let e = cmd("").unwrap_err();
        assert_eq!(e.word, 0);
        let e = cmd("add INPUT -s 10.0.0.0/33").unwrap_err();
        assert_eq!(e.word, 2);
        let e = cmd("add INPUT -j LOG --set-mark 1").unwrap_err();
        assert_eq!(e.text, "--set-mark");
        let e = cmd("add INPUT -m state --state NEW,BOGUS").unwrap_err();
        assert_eq!(e.word, 4);
        let e = cmd("list INPUT extra").unwrap_err();
        assert_eq!(e.word, 2);
    }

    #[test]
    fn ipv6_rules_have_their_own_table() {
        let Command::Add { table, rule, .. } =
            cmd("-6 add INPUT -s 2001:db8::1/32 -p tcp --dport 22 -j ACCEPT").unwrap()
        else {
            panic!()
        };
        assert_eq!(table, Table::Filter6);
        let src = rule.src.unwrap();
        assert_eq!((src.addr, src.prefix), ("2001:db8::".parse().unwrap(), 32));
        assert_eq!(
            rule.to_string(),
            "-s 2001:db8::/32 -p tcp --dport 22 -j ACCEPT"
        );
        // `-6` anywhere, long or short; `-4` is IPv4's explicit mark.
        for c in [
            "add INPUT -6 -p icmpv6 -j ACCEPT",
            "--ipv6 -A INPUT -p ipv6-icmp -j ACCEPT",
            "list -6",
            "-6 -P INPUT DROP",
        ] {
            let t = match cmd(c).unwrap() {
                Command::Add { table, .. }
                | Command::List { table, .. }
                | Command::Policy { table, .. } => table,
                other => panic!("{other:?}"),
            };
            assert_eq!(t, Table::Filter6, "{c}");
        }
        assert!(matches!(
            cmd("-4 add INPUT -s 10.0.0.1 -j DROP").unwrap(),
            Command::Add {
                table: Table::Filter,
                ..
            }
        ));
        assert!(cmd("-4 -6 list").is_err());
    }

    #[test]
    fn families_do_not_mix() {
        let e = cmd("-6 add INPUT -s 10.0.0.1 -j DROP").unwrap_err();
        assert_eq!(e.text, "-s");
        assert!(e.msg.contains("IPv4 address in an IPv6 rule"), "{e}");
        let e = cmd("add INPUT -d 2001:db8::1 -j DROP").unwrap_err();
        assert!(e.msg.contains("IPv6 address in an IPv4 rule"), "{e}");
        assert!(cmd("-6 add INPUT -p icmp -j DROP").is_err());
        assert!(cmd("add INPUT -p icmpv6 -j DROP").is_err());
        assert!(cmd("-6 add INPUT -p icmpv6 --icmp-type 8 -j DROP").is_err());
        assert!(cmd("add INPUT -j REJECT --reject-with icmp6-no-route").is_err());
        let e = cmd("-6 add INPUT -j REJECT --reject-with icmp-host-unreachable").unwrap_err();
        assert_eq!(e.text, "--reject-with");
        // NAT addresses are of the rule's family too.
        let e = cmd("-t nat -A PREROUTING -6 -j DNAT --to-destination 10.0.0.1").unwrap_err();
        assert_eq!(e.text, "--to-destination");
        assert!(e.msg.contains("IPv4 address in an IPv6 rule"), "{e}");
        let e = cmd("-6 -t nat -A POSTROUTING -p udp -j SNAT --to-source 10.0.0.1:99").unwrap_err();
        assert!(e.msg.contains("IPv4 address in an IPv6 rule"), "{e}");
        let e = cmd("-t nat -A PREROUTING -p tcp -j DNAT --to-destination [2001:db8::1]:80")
            .unwrap_err();
        assert!(e.msg.contains("IPv6 address in an IPv4 rule"), "{e}");
        assert!(cmd("-t nat -A PREROUTING -j DNAT --to-destination 2001:db8::1").is_err());
        assert!(cmd("-6 -t nat -A PREROUTING -p icmp -j DNAT --to-destination ::1").is_err());
        assert!(cmd("add INPUT -s 2001:db8::/129").is_err());
    }

    #[test]
    fn ipv6_nat_rules() {
        let add = |c: &str| match cmd(c).unwrap() {
            Command::Add { table, rule, .. } => (table, rule),
            other => panic!("{other:?}"),
        };
        let v6 = |s: &str| IpAddr::V6(s.parse().unwrap());
        let (t, r) = add(
            "-6 -t nat -A PREROUTING -i eth0 -d 2001:db8::1 -p tcp --dport 80 \
             -j DNAT --to-destination [fd00::2]:8080",
        );
        assert_eq!(t, Table::Nat6);
        assert_eq!(
            r.target,
            Some(Target::Dnat {
                addr: v6("fd00::2"),
                ports: Some(PortRange { lo: 8080, hi: 8080 }),
            })
        );
        // Written back with the brackets, and read again.
        let words = r.to_words();
        assert!(words.contains(&"[fd00::2]:8080".to_string()), "{words:?}");
        let w: Vec<&str> = words.iter().map(|s| s.as_str()).collect();
        assert_eq!(parse_rule(&w).unwrap(), r);
        // Without a port: the bare address, or in brackets.
        for to in ["fd00::2", "[fd00::2]"] {
            let (_, r) = add(&format!(
                "-t nat -A PREROUTING -6 -j DNAT --to-destination {to}"
            ));
            assert_eq!(
                r.target,
                Some(Target::Dnat {
                    addr: v6("fd00::2"),
                    ports: None
                })
            );
            assert_eq!(r.to_words().last().unwrap(), "fd00::2");
        }
        let (t, r) =
            add("-6 -t nat -A POSTROUTING -p udp -j SNAT --to-source [2001:db8::9]:1000-2000");
        assert_eq!(t, Table::Nat6);
        assert_eq!(
            r.target,
            Some(Target::Snat {
                addr: v6("2001:db8::9"),
                ports: Some(PortRange { lo: 1000, hi: 2000 }),
            })
        );
        let (t, r) = add("-6 -t nat -A POSTROUTING -o eth1 -j MASQUERADE");
        assert_eq!(
            (t, r.target),
            (Table::Nat6, Some(Target::Masquerade { ports: None }))
        );
        let (t, _) = add("-6 -t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 3128");
        assert_eq!(t, Table::Nat6);
        let (t, _) = add("-6 -t nat -A PREROUTING -p icmpv6 --icmpv6-type echo-request -j ACCEPT");
        assert_eq!(t, Table::Nat6);
        // The nat table's own rules hold for IPv6's.
        assert!(cmd("-6 -t nat -A PREROUTING -j DROP").is_err());
        assert!(cmd("-6 -t nat -A FORWARD -j ACCEPT").is_err());
        assert!(cmd("-6 -A INPUT -j DNAT --to-destination ::1").is_err());
        assert!(cmd("-6 -t nat -A PREROUTING -j DNAT --to-destination [fd00::2]:80").is_err());
        assert!(cmd("-6 -t nat -A PREROUTING -p tcp -j DNAT --to-destination [fd00::2").is_err());
        assert!(cmd("-6 -t nat -A PREROUTING -p tcp -j DNAT --to-destination [::]:80").is_err());
        assert!(cmd("-6 -t nat -A PREROUTING -p tcp -j DNAT --to-destination fd00::2:80").is_ok());
        assert!(matches!(
            cmd("-6 list -t nat").unwrap(),
            Command::List {
                table: Table::Nat6,
                ..
            }
        ));
    }

    #[test]
    fn ipv6_reject_and_icmpv6_types() {
        let rule = |c: &str| match cmd(c).unwrap() {
            Command::Add { rule, .. } => rule,
            other => panic!("{other:?}"),
        };
        let r = rule("-6 add INPUT -p udp -j REJECT");
        assert_eq!(
            r.target,
            Some(Target::Reject(RejectWith::Icmp6PortUnreachable))
        );
        for (w, want) in [
            ("icmp6-adm-prohibited", RejectWith::Icmp6AdmProhibited),
            ("adm-prohibited", RejectWith::Icmp6AdmProhibited),
            ("icmp6-addr-unreachable", RejectWith::Icmp6AddrUnreachable),
            ("icmp6-no-route", RejectWith::Icmp6NoRoute),
            ("icmp6-port-unreachable", RejectWith::Icmp6PortUnreachable),
        ] {
            let r = rule(&format!("-6 add INPUT -j REJECT --reject-with {w}"));
            assert_eq!(r.target, Some(Target::Reject(want)), "{w}");
        }
        let r = rule("-6 add INPUT -p tcp -j REJECT --reject-with tcp-reset");
        assert_eq!(r.target, Some(Target::Reject(RejectWith::TcpReset)));
        let r = rule("-6 add INPUT -p icmpv6 --icmpv6-type neighbor-solicitation -j ACCEPT");
        assert_eq!(r.icmp.map(|m| m.ty), Some(Some(135)));
        assert_eq!(
            r.to_string(),
            "-p icmpv6 --icmpv6-type neighbour-solicitation -j ACCEPT"
        );
        // Deleting by specification finds the rule as it was stored.
        let mut t = crate::tables::Tables::default();
        t.apply(&cmd("-6 add INPUT -j REJECT").unwrap()).unwrap();
        t.apply(&cmd("-6 del INPUT -j REJECT").unwrap()).unwrap();
        assert!(t.filter6.chain("INPUT").unwrap().rules.is_empty());
        for s in [
            "-s fe80::/10 ! -d ff02::1 -p icmpv6 --icmpv6-type port-unreachable -j REJECT --reject-with icmp6-adm-prohibited",
            "-p icmpv6 ! --icmpv6-type echo-request -j DROP",
            "-d 2001:db8::1 -p tcp --syn -j REJECT --reject-with tcp-reset",
        ] {
            let r = parse_rule(&words(s)).unwrap();
            assert_eq!(r.to_string(), s);
        }
    }

    #[test]
    fn commands() {
        assert_eq!(
            cmd("-t nat -A POSTROUTING -o eth0 -j MASQUERADE").unwrap(),
            Command::Add {
                table: Table::Nat,
                chain: "POSTROUTING".into(),
                rule: parse_rule(&words("-o eth0 -j MASQUERADE")).unwrap(),
            }
        );
        assert_eq!(
            cmd("add PREROUTING -t nat -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2")
                .map(|_| ()),
            Ok(())
        );
        assert_eq!(
            cmd("insert INPUT 3 -j DROP").unwrap(),
            Command::Insert {
                table: Table::Filter,
                chain: "INPUT".into(),
                pos: 3,
                rule: parse_rule(&["-j", "DROP"]).unwrap(),
            }
        );
        assert_eq!(
            cmd("del INPUT 2").unwrap(),
            Command::Delete {
                table: Table::Filter,
                chain: "INPUT".into(),
                which: DeleteBy::Number(2),
            }
        );
        assert_eq!(
            cmd("list -t nat").unwrap(),
            Command::List {
                table: Table::Nat,
                chain: None
            }
        );
        assert_eq!(
            cmd("-P FORWARD DROP").unwrap(),
            Command::Policy {
                table: Table::Filter,
                chain: "FORWARD".into(),
                policy: Policy::Drop
            }
        );
        assert_eq!(
            cmd("-N web").unwrap(),
            Command::NewChain {
                table: Table::Filter,
                chain: "web".into()
            }
        );
        assert!(cmd("-N ACCEPT").is_err());
        assert!(cmd("-t nat add INPUT -j DROP").is_err());
    }
}
