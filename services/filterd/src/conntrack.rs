//! Connection tracking: a fixed-capacity table of plain-data entries that
//! can live in filterd's arena, so a restarted filterd keeps every
//! connection and NAT binding (docs/DESIGN.md, "Recovery").
//!
//! Each entry holds the tuple of its original direction and of its reply
//! direction (they differ once NAT has bound the connection), the TCP
//! state and per-direction window tracking, flags, and its deadline. The
//! hash index over both tuples, the free list and the queue of unreplied
//! entries (for early drop) are process memory rebuilt from the entries by
//! [`Conntrack::restore`].
//!
//! TCP follows Linux's nf_conntrack_proto_tcp, simplified: the same state
//! table (without SYN_SENT2, i.e. simultaneous open), the same window
//! checks (`td_end`, `td_maxend`, `td_maxwin` per direction, window
//! scaling, loose pick-up of connections already running, tracked
//! liberally since their scale is unknown), the same timeouts. UDP lives
//! 30 s until replied and 180 s once a stream; ICMP queries 30 s; other
//! protocols 600 s. IPv6 flows share the table: tuples hold 16-byte
//! addresses, IPv4 ones mapped into `::ffff:0:0/96` (RFC 4291 §2.5.5.2),
//! so the two families never meet in a lookup. ICMPv6 echo is tracked as
//! ICMP echo is, ICMPv6 errors (types 0–127) quoting a tracked flow are
//! RELATED, and Neighbor Discovery and MLD messages are UNTRACKED, as in
//! Linux's `nf_conntrack_proto_icmpv6` (they open no flow).
//!
//! Crash consistency: an entry is updated in place between two bumps of
//! [`CtEntry::update`]; an odd value means a writer died mid-update, and
//! restore discards that one entry. Everything else loaded is validated
//! too (state values, scales, deadlines, duplicate tuples), because a
//! crashed writer may leave anything behind.

use crate::packet::{is_icmp_error, queries, PacketInfo, ICMPV6};
use crate::ruleset::CtState;
use std::fmt;
use std::sync::atomic::{compiler_fence, Ordering};
use strata_ipc::addrs::{mapped, to_ip, unmapped};
use strata_ipc::arena::Pod;

/// No entry.
pub const NONE: u32 = u32::MAX;
/// Most entries a table may have (what a [`CtRef`](crate::CtRef) can name).
pub const MAX_CAPACITY: usize = (1 << 26) - 2;
/// [`CtEntry::magic`] of an entry in use.
pub const ENTRY_MAGIC: u32 = 0x4354_4531;

/// One direction's addresses and ports (ICMP queries: the id is the source
/// "port" of the request and the destination "port" of the reply).
/// Addresses are 16 bytes in network order, IPv4 ones mapped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl Tuple {
    /// An IPv4 tuple (addresses in host order).
    pub fn v4(src: u32, dst: u32, sport: u16, dport: u16) -> Tuple {
        Tuple::new(mapped(src), mapped(dst), sport, dport)
    }

    /// A tuple of 128-bit addresses (IPv4 mapped).
    pub fn new(src: u128, dst: u128, sport: u16, dport: u16) -> Tuple {
        Tuple {
            src: src.to_be_bytes(),
            dst: dst.to_be_bytes(),
            sport,
            dport,
        }
    }

    /// The source as 128 bits.
    pub fn saddr(&self) -> u128 {
        u128::from_be_bytes(self.src)
    }

    /// The destination as 128 bits.
    pub fn daddr(&self) -> u128 {
        u128::from_be_bytes(self.dst)
    }

    /// The IPv4 source (host order; meaningless for IPv6).
    pub fn src4(&self) -> u32 {
        self.saddr() as u32
    }

    /// The IPv4 destination (host order; meaningless for IPv6).
    pub fn dst4(&self) -> u32 {
        self.daddr() as u32
    }

    /// Sets an IPv4 source.
    pub fn set_src4(&mut self, a: u32) {
        self.src = mapped(a).to_be_bytes();
    }

    /// Sets an IPv4 destination.
    pub fn set_dst4(&mut self, a: u32) {
        self.dst = mapped(a).to_be_bytes();
    }

    /// Whether both addresses are IPv6 ones (neither is mapped).
    pub fn is_v6(&self) -> bool {
        unmapped(self.saddr()).is_none() && unmapped(self.daddr()).is_none()
    }

    /// Whether both addresses are IPv4 (mapped) ones.
    pub fn is_v4(&self) -> bool {
        unmapped(self.saddr()).is_some() && unmapped(self.daddr()).is_some()
    }

    /// The same flow seen from the other end.
    pub fn invert(self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }

    /// The tuple of a packet.
    pub fn of(p: &PacketInfo) -> Tuple {
        Tuple::new(p.saddr, p.daddr, p.sport, p.dport)
    }
}

/// TCP window tracking of one direction (what its sender has sent and
/// may send), as Linux's `ip_ct_tcp_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpDir {
    /// Highest sequence number sent + 1.
    pub end: u32,
    /// Highest sequence number the peer allowed (ack + window).
    pub maxend: u32,
    /// Largest window the sender advertised.
    pub maxwin: u32,
    /// Window scale.
    pub scale: u8,
    /// [`tdf`] bits.
    pub flags: u8,
    /// Reserved.
    pub pad: [u8; 2],
}

/// [`TcpDir::flags`].
pub mod tdf {
    /// The sender offered window scaling.
    pub const WSCALE: u8 = 1;
    /// Picked up mid-stream: window violations are tolerated.
    pub const LIBERAL: u8 = 2;
}

/// TCP conntrack states, as stored in [`CtEntry::tcp_state`].
pub mod tcpst {
    /// No state (not TCP).
    pub const NONE: u8 = 0;
    /// SYN seen.
    pub const SYN_SENT: u8 = 1;
    /// SYN/ACK seen.
    pub const SYN_RECV: u8 = 2;
    /// Handshake done.
    pub const ESTABLISHED: u8 = 3;
    /// One side sent FIN.
    pub const FIN_WAIT: u8 = 4;
    /// The FIN is acknowledged.
    pub const CLOSE_WAIT: u8 = 5;
    /// The other side sent FIN too.
    pub const LAST_ACK: u8 = 6;
    /// Both FINs acknowledged.
    pub const TIME_WAIT: u8 = 7;
    /// Reset.
    pub const CLOSE: u8 = 8;
    /// Names, by value.
    pub const NAMES: [&str; 9] = [
        "NONE",
        "SYN_SENT",
        "SYN_RECV",
        "ESTABLISHED",
        "FIN_WAIT",
        "CLOSE_WAIT",
        "LAST_ACK",
        "TIME_WAIT",
        "CLOSE",
    ];
}

/// [`CtEntry::flags`].
pub mod ctf {
    /// A packet in the reply direction was seen.
    pub const SEEN_REPLY: u8 = 1;
    /// The connection is established enough not to be dropped early.
    pub const ASSURED: u8 = 2;
    /// Every flag defined.
    pub const ALL: u8 = SEEN_REPLY | ASSURED;
}

/// One tracked connection, plain data in the arena.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// [`ENTRY_MAGIC`] when in use, else free.
    pub magic: u32,
    /// Bumped before and after every in-place update: odd while one runs.
    pub update: u32,
    /// IP protocol.
    pub proto: u8,
    /// [`tcpst`] value (TCP only).
    pub tcp_state: u8,
    /// [`ctf`] bits.
    pub flags: u8,
    /// Address family: 4 or 6 (what the tuples' addresses say; kept for
    /// validation and listings).
    pub family: u8,
    /// Connection mark.
    pub mark: u32,
    /// Original and reply tuples.
    pub tuple: [Tuple; 2],
    /// TCP window tracking per direction (by sender).
    pub td: [TcpDir; 2],
    /// When it was created (ms).
    pub created_ms: u64,
    /// When it expires (ms).
    pub expires_ms: u64,
    /// Packets per direction.
    pub packets: [u64; 2],
    /// Bytes per direction.
    pub bytes: [u64; 2],
}

// SAFETY: repr(C) integers and arrays of them, no padding (checked below),
// every bit pattern valid; restore validates the meaning.
unsafe impl Pod for CtEntry {}
// 16 bytes of header, two 36-byte tuples, two 16-byte TCP directions, two
// times and four counters: no padding anywhere (the tuples end 4-aligned
// at 88, the times start 8-aligned at 120).
const _: () = assert!(std::mem::size_of::<CtEntry>() == 168);

/// The arena header in front of the entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CtHeader {
    /// [`HEADER_MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// Entries that follow.
    pub capacity: u32,
    /// Hash key, kept so lookups stay keyed the same across restarts.
    pub secret: [u64; 2],
    /// Reserved.
    pub reserved: [u64; 4],
}

const _: () = assert!(std::mem::size_of::<CtHeader>() == 64);

/// Marks an arena laid out by [`Conntrack::from_raw`].
pub const HEADER_MAGIC: u64 = 0x4354_5241_434b_3031;
/// Layout version of [`CtEntry`]: 2 since tuples hold 16-byte addresses
/// (IPv6). A table of another version is laid out afresh (its
/// connections are lost, as they would be by a reboot).
pub const LAYOUT_VERSION: u32 = 2;

/// Timeouts in milliseconds (Linux's defaults).
pub mod timeout {
    /// TCP, by [`tcpst`](super::tcpst) value.
    pub const TCP: [u64; 9] = [
        10_000,
        120_000,
        60_000,
        432_000_000,
        120_000,
        60_000,
        30_000,
        120_000,
        10_000,
    ];
    /// UDP before a reply.
    pub const UDP: u64 = 30_000;
    /// UDP once a stream.
    pub const UDP_STREAM: u64 = 180_000;
    /// ICMP and ICMPv6 queries.
    pub const ICMP: u64 = 30_000;
    /// Other protocols.
    pub const GENERIC: u64 = 600_000;
    /// The longest of them.
    pub const MAX: u64 = 432_000_000;
}

/// What [`Conntrack::track`] made of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Track {
    /// Entry, or [`NONE`].
    pub id: u32,
    /// 0 original, 1 reply.
    pub dir: u8,
    /// State for rules.
    pub state: CtState,
    /// Whether this packet created the entry.
    pub created: bool,
}

impl Track {
    fn invalid() -> Track {
        Track {
            id: NONE,
            dir: 0,
            state: CtState::Invalid,
            created: false,
        }
    }

    fn untracked() -> Track {
        Track {
            state: CtState::Untracked,
            ..Track::invalid()
        }
    }
}

/// ICMPv6 types conntrack leaves untracked, as Linux's `noct_valid_new`
/// (nf_conntrack_proto_icmpv6.c): MLD query, report and done (RFC 2710
/// §3), router and neighbour solicitation and advertisement (RFC 4861
/// §4.1–4.4), MLDv2 report (RFC 3810 §5.2). They open no flow and answer
/// none; rules see them as UNTRACKED.
pub const ICMPV6_UNTRACKED: [u8; 8] = [130, 131, 132, 133, 134, 135, 136, 143];

/// Behaviour switches.
#[derive(Clone, Copy, Debug)]
pub struct CtConfig {
    /// Pick up TCP connections from a plain ACK (Linux's
    /// `nf_conntrack_tcp_loose`, on by default).
    pub tcp_loose: bool,
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig { tcp_loose: true }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtStats {
    /// Entries created.
    pub created: u64,
    /// Unreplied entries dropped to make room.
    pub early_drops: u64,
    /// New connections refused for lack of room.
    pub full: u64,
    /// Packets found INVALID.
    pub invalid: u64,
    /// Entries expired.
    pub expired: u64,
    /// Entries kept by restore.
    pub restored: u64,
    /// Entries discarded by restore (half-written, corrupt, duplicate).
    pub discarded: u64,
    /// New connections whose reply tuple clashed with another entry.
    pub clashes: u64,
}

/// An entry as `strata conntrack list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtSummary {
    /// Entry id.
    pub id: u32,
    /// Protocol.
    pub proto: u8,
    /// Seconds left.
    pub secs_left: u64,
    /// TCP state name, if TCP.
    pub tcp_state: Option<&'static str>,
    /// Original tuple.
    pub orig: Tuple,
    /// Reply tuple.
    pub reply: Tuple,
    /// Flags.
    pub flags: u8,
    /// Mark.
    pub mark: u32,
    /// Packets, bytes per direction.
    pub counts: [(u64, u64); 2],
}

impl fmt::Display for CtSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.proto {
            6 => "tcp",
            17 => "udp",
            1 => "icmp",
            ICMPV6 => "icmpv6",
            _ => "unknown",
        };
        // conntrack(8)'s columns, which are the same for both families
        // (IPv6 addresses in their RFC 5952 text form).
        write!(f, "{name:<8} {} {}", self.proto, self.secs_left)?;
        if let Some(s) = self.tcp_state {
            write!(f, " {s}")?;
        }
        let t = |f: &mut fmt::Formatter<'_>, t: &Tuple| {
            write!(f, " src={} dst={}", to_ip(t.saddr()), to_ip(t.daddr()))?;
            if matches!(self.proto, 1 | ICMPV6) {
                write!(f, " id={}", t.sport.max(t.dport))
            } else if matches!(self.proto, 6 | 17) {
                write!(f, " sport={} dport={}", t.sport, t.dport)
            } else {
                Ok(())
            }
        };
        t(f, &self.orig)?;
        write!(
            f,
            " packets={} bytes={}",
            self.counts[0].0, self.counts[0].1
        )?;
        if self.flags & ctf::SEEN_REPLY == 0 {
            write!(f, " [UNREPLIED]")?;
        }
        t(f, &self.reply)?;
        write!(
            f,
            " packets={} bytes={}",
            self.counts[1].0, self.counts[1].1
        )?;
        if self.flags & ctf::ASSURED != 0 {
            write!(f, " [ASSURED]")?;
        }
        write!(f, " mark={}", self.mark)
    }
}

enum Store<'a> {
    Owned(Box<[CtEntry]>),
    Borrowed(&'a mut [CtEntry]),
}

impl Store<'_> {
    fn get(&self) -> &[CtEntry] {
        match self {
            Store::Owned(b) => b,
            Store::Borrowed(s) => s,
        }
    }
    fn get_mut(&mut self) -> &mut [CtEntry] {
        match self {
            Store::Owned(b) => b,
            Store::Borrowed(s) => s,
        }
    }
}

/// The connection table.
pub struct Conntrack<'a> {
    store: Store<'a>,
    secret: [u64; 2],
    heads: Vec<u32>,
    hmask: usize,
    /// Hash chain links per node (entry * 2 + direction).
    next: Vec<u32>,
    free: Vec<u32>,
    /// Unreplied entries, oldest first (doubly linked by entry id).
    uq_prev: Vec<u32>,
    uq_next: Vec<u32>,
    uq_head: u32,
    uq_tail: u32,
    in_use: usize,
    cursor: usize,
    /// Behaviour switches.
    pub cfg: CtConfig,
    /// Counters.
    pub stats: CtStats,
}

fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// Whether entry `e`'s family byte agrees with its tuples' addresses
/// (both of each tuple of the one family).
fn family_ok(e: &CtEntry) -> bool {
    match e.family {
        4 => e.tuple.iter().all(Tuple::is_v4),
        6 => e.tuple.iter().all(Tuple::is_v6),
        _ => false,
    }
}

const IV: u8 = 0xfe;
const IG: u8 = 0xff;

/// Linux's TCP state table (without SYN_SENT2), by direction, packet kind
/// (syn, synack, fin, ack, rst, none) and old state.
const TCP_TABLE: [[[u8; 9]; 6]; 2] = {
    use tcpst::*;
    const NO: u8 = NONE;
    const SS: u8 = SYN_SENT;
    const SR: u8 = SYN_RECV;
    const ES: u8 = ESTABLISHED;
    const FW: u8 = FIN_WAIT;
    const CW: u8 = CLOSE_WAIT;
    const LA: u8 = LAST_ACK;
    const TW: u8 = TIME_WAIT;
    const CL: u8 = CLOSE;
    let _ = NO;
    [
        [
            [SS, SS, IG, IG, IG, IG, IG, SS, SS],
            [IV, IV, SR, IV, IV, IV, IV, IV, IV],
            [IV, IV, FW, FW, LA, LA, LA, TW, CL],
            [ES, IV, ES, ES, CW, CW, TW, TW, CL],
            [IV, CL, CL, CL, CL, CL, CL, CL, CL],
            [IV; 9],
        ],
        [
            [IV, IV, IV, IV, IV, IV, IV, SS, IV],
            [IV, SR, SR, IG, IG, IG, IG, IG, IG],
            [IV, IV, FW, FW, LA, LA, LA, TW, CL],
            [IV, IG, SR, ES, CW, CW, TW, TW, CL],
            [IV, CL, CL, CL, CL, CL, CL, CL, CL],
            [IV; 9],
        ],
    ]
};

fn tcp_kind(flags: u8) -> usize {
    if flags & 0x04 != 0 {
        4
    } else if flags & 0x02 != 0 {
        if flags & 0x10 != 0 {
            1
        } else {
            0
        }
    } else if flags & 0x01 != 0 {
        2
    } else if flags & 0x10 != 0 {
        3
    } else {
        5
    }
}

/// Linux's MAXACKWINCONST.
const MAX_ACK_WIN: u32 = 66_000;

/// Linux's tcp_in_window, simplified (no SACK blocks): whether the
/// segment lies in the windows seen so far, updating them if so.
fn tcp_in_window(td: &mut [TcpDir; 2], dir: usize, state: u8, p: &PacketInfo) -> bool {
    let mut s = td[dir];
    let mut r = td[dir ^ 1];
    let syn = p.tcp_flags & 0x02 != 0;
    let fin = p.tcp_flags & 0x01 != 0;
    let rst = p.tcp_flags & 0x04 != 0;
    let ackf = p.tcp_flags & 0x10 != 0;
    let mut seq = p.seq;
    let mut ack = p.ack;
    let mut end = seq
        .wrapping_add(p.payload)
        .wrapping_add(u32::from(syn))
        .wrapping_add(u32::from(fin));
    let mut win = u32::from(p.win);
    let init_syn = |s: &mut TcpDir, end: u32, win: u32| {
        s.end = end;
        s.maxend = end;
        s.maxwin = win.max(1);
        if p.wscale != 0xff {
            s.scale = p.wscale.min(14);
            s.flags |= tdf::WSCALE;
        } else {
            s.scale = 0;
            s.flags &= !tdf::WSCALE;
        }
    };
    if s.maxwin == 0 {
        if syn {
            init_syn(&mut s, end, win);
            if !(s.flags & tdf::WSCALE != 0 && r.flags & tdf::WSCALE != 0) {
                s.scale = 0;
                r.scale = 0;
            }
            if !ackf {
                td[dir] = s;
                td[dir ^ 1] = r;
                return true;
            }
        } else {
            // Mid-stream: its history is lost to us.
            s.end = end;
            s.maxwin = (win << s.scale).max(1);
            s.maxend = end.wrapping_add(s.maxwin);
            if r.maxwin == 0 {
                r.end = ack;
                r.maxend = ack;
            } else if ack == r.end.wrapping_add(1) {
                r.end = r.end.wrapping_add(1);
            }
        }
    } else if ((state == tcpst::SYN_SENT && dir == 0) || (state == tcpst::SYN_RECV && dir == 1))
        && after(end, s.end)
    {
        // A retransmitted SYN (or SYN/ACK) with a new ISN.
        init_syn(&mut s, end, win);
    }
    if !ackf || (rst && ack == 0) {
        ack = r.end;
    }
    if rst && seq == 0 && state == tcpst::SYN_SENT {
        seq = s.end;
        end = s.end;
    }
    let in_recv_win = r.maxwin == 0 || after(end, s.end.wrapping_sub(r.maxwin).wrapping_sub(1));
    let max_ack = s.maxwin.max(MAX_ACK_WIN);
    let ok = !after(seq, s.maxend)
        && in_recv_win
        && !after(ack, r.end)
        && after(ack, r.end.wrapping_sub(max_ack).wrapping_sub(1));
    let liberal = (s.flags | r.flags) & tdf::LIBERAL != 0;
    if ok || liberal {
        if !syn {
            win <<= s.scale.min(14);
        }
        if s.maxwin < win {
            s.maxwin = win;
        }
        if after(end, s.end) {
            s.end = end;
        }
        if r.maxwin != 0 && after(end, s.maxend) {
            r.maxwin = r.maxwin.wrapping_add(end.wrapping_sub(s.maxend));
        }
        if after(ack.wrapping_add(win), r.maxend.wrapping_sub(1)) {
            r.maxend = ack.wrapping_add(win);
            if win == 0 {
                r.maxend = r.maxend.wrapping_add(1);
            }
        }
    }
    td[dir] = s;
    td[dir ^ 1] = r;
    ok || liberal
}

impl Conntrack<'static> {
    /// A table of `capacity` entries on the heap (tests, or a shell without
    /// an arena).
    pub fn new(capacity: usize, secret: [u64; 2]) -> Conntrack<'static> {
        let store = Store::Owned(
            vec![CtEntry::default(); capacity.clamp(1, MAX_CAPACITY)].into_boxed_slice(),
        );
        Conntrack::with_store(store, secret)
    }
}

impl<'a> Conntrack<'a> {
    fn with_store(store: Store<'a>, secret: [u64; 2]) -> Conntrack<'a> {
        let cap = store.get().len();
        let hsize = (cap * 2).next_power_of_two();
        let mut c = Conntrack {
            store,
            secret,
            heads: vec![NONE; hsize],
            hmask: hsize - 1,
            next: vec![NONE; cap * 2],
            free: Vec::with_capacity(cap),
            uq_prev: vec![NONE; cap],
            uq_next: vec![NONE; cap],
            uq_head: NONE,
            uq_tail: NONE,
            in_use: 0,
            cursor: 0,
            cfg: CtConfig::default(),
            stats: CtStats::default(),
        };
        c.free.extend((0..cap as u32).rev());
        c
    }

    /// Bytes of arena [`Conntrack::from_raw`] needs for `capacity` entries.
    pub fn bytes_for(capacity: usize) -> usize {
        64 + capacity * std::mem::size_of::<CtEntry>()
    }

    /// Lays out (or finds) a header and as many entries as fit in `len`
    /// bytes at `p`. The flag says whether the memory was laid out afresh
    /// (magic, version or capacity differed: every entry cleared, `secret`
    /// stored); otherwise the stored secret is used and the entries are
    /// restored and validated as of `now_ms`. `None` when `p` is null or
    /// not 8-byte aligned or holds no entry.
    ///
    /// # Safety
    /// `p..p+len` must be mapped, writable and used by nothing else for
    /// `'a`.
    #[allow(unsafe_code)]
    pub unsafe fn from_raw(
        p: *mut u8,
        len: usize,
        secret: [u64; 2],
        now_ms: u64,
    ) -> Option<(Conntrack<'a>, bool)> {
        if p.is_null() || !(p as usize).is_multiple_of(8) {
            return None;
        }
        let cap = len.checked_sub(64)? / std::mem::size_of::<CtEntry>();
        if cap == 0 {
            return None;
        }
        let cap = cap.min(MAX_CAPACITY);
        // SAFETY: the caller hands us the region; header and entries are
        // disjoint, aligned and inside it; every bit pattern is valid.
        let hdr = unsafe { &mut *(p as *mut CtHeader) };
        // SAFETY: the cap entries after the 64-byte header fit in len
        // (computed above), start 8-aligned, do not overlap the header, and
        // are ours for 'a by the caller's contract; every bit pattern is a
        // valid CtEntry.
        let entries = unsafe { std::slice::from_raw_parts_mut(p.add(64) as *mut CtEntry, cap) };
        let fresh = hdr.magic != HEADER_MAGIC
            || hdr.version != LAYOUT_VERSION
            || hdr.capacity as usize != cap;
        if fresh {
            entries.fill(CtEntry::default());
            *hdr = CtHeader {
                magic: HEADER_MAGIC,
                version: LAYOUT_VERSION,
                capacity: cap as u32,
                secret,
                reserved: [0; 4],
            };
        }
        let secret = hdr.secret;
        let mut c = Conntrack::with_store(Store::Borrowed(entries), secret);
        if !fresh {
            c.restore(now_ms);
        }
        Some((c, fresh))
    }

    /// Rebuilds the index, free list and unreplied queue from the entries,
    /// discarding (and clearing) those a crash or corruption left invalid
    /// or that expired by `now_ms`.
    pub fn restore(&mut self, now_ms: u64) {
        let cap = self.capacity();
        self.heads.fill(NONE);
        self.next.fill(NONE);
        self.uq_prev.fill(NONE);
        self.uq_next.fill(NONE);
        self.uq_head = NONE;
        self.uq_tail = NONE;
        self.free.clear();
        self.in_use = 0;
        let mut unreplied: Vec<(u64, u32)> = Vec::new();
        for id in 0..cap as u32 {
            let e = self.store.get()[id as usize];
            if e.magic == 0 && e == CtEntry::default() {
                continue;
            }
            let valid = e.magic == ENTRY_MAGIC
                && e.update & 1 == 0
                && family_ok(&e)
                && (e.proto == 6 && e.tcp_state <= tcpst::CLOSE
                    || e.proto != 6 && e.tcp_state == 0)
                && e.flags & !ctf::ALL == 0
                && e.td.iter().all(|d| d.scale <= 14)
                && e.expires_ms > now_ms
                && self.find(e.proto, &e.tuple[0]).is_none()
                && self.find(e.proto, &e.tuple[1]).is_none()
                && e.tuple[0] != e.tuple[1];
            if !valid {
                self.store.get_mut()[id as usize] = CtEntry::default();
                self.stats.discarded += 1;
                continue;
            }
            let e = &mut self.store.get_mut()[id as usize];
            // A deadline further out than any timeout is corrupt; cap it.
            e.expires_ms = e.expires_ms.min(now_ms.saturating_add(timeout::MAX));
            let e = *e;
            self.link(id, 0, e.proto, &e.tuple[0]);
            self.link(id, 1, e.proto, &e.tuple[1]);
            self.in_use += 1;
            self.stats.restored += 1;
            if e.flags & ctf::SEEN_REPLY == 0 {
                unreplied.push((e.created_ms, id));
            }
        }
        for id in (0..cap as u32).rev() {
            if self.store.get()[id as usize].magic != ENTRY_MAGIC {
                self.free.push(id);
            }
        }
        unreplied.sort_unstable();
        for (_, id) in unreplied {
            self.uq_push(id);
        }
    }

    /// Entries the table can hold.
    pub fn capacity(&self) -> usize {
        self.store.get().len()
    }

    /// Entries in use.
    pub fn len(&self) -> usize {
        self.in_use
    }

    /// Whether no entry is in use.
    pub fn is_empty(&self) -> bool {
        self.in_use == 0
    }

    /// Entry `id`, if in use.
    pub fn entry(&self, id: u32) -> Option<&CtEntry> {
        self.store
            .get()
            .get(id as usize)
            .filter(|e| e.magic == ENTRY_MAGIC)
    }

    fn hash(&self, proto: u8, t: &Tuple) -> usize {
        // A keyed multiply-xorshift mix: not cryptographic, but the key
        // keeps outsiders from aiming many flows at one chain. The 16-byte
        // addresses fold into 64 bits first (an IPv4 one is its low half).
        let fold = |a: u128| (a as u64) ^ ((a >> 64) as u64).rotate_left(23);
        let a = (fold(t.saddr()) ^ fold(t.daddr()).rotate_left(32)) ^ self.secret[0];
        let b = (u64::from(t.sport) << 32 | u64::from(t.dport) << 16 | u64::from(proto))
            ^ self.secret[1];
        let mut h = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b;
        h ^= h >> 31;
        h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
        h ^= h >> 32;
        h as usize & self.hmask
    }

    fn link(&mut self, id: u32, dir: u8, proto: u8, t: &Tuple) {
        let b = self.hash(proto, t);
        let n = id * 2 + u32::from(dir);
        self.next[n as usize] = self.heads[b];
        self.heads[b] = n;
    }

    fn unlink(&mut self, id: u32, dir: u8, proto: u8, t: &Tuple) {
        let b = self.hash(proto, t);
        let n = id * 2 + u32::from(dir);
        let mut prev = NONE;
        let mut cur = self.heads[b];
        while cur != NONE {
            if cur == n {
                let nx = self.next[cur as usize];
                if prev == NONE {
                    self.heads[b] = nx;
                } else {
                    self.next[prev as usize] = nx;
                }
                self.next[cur as usize] = NONE;
                return;
            }
            prev = cur;
            cur = self.next[cur as usize];
        }
    }

    /// The entry and direction whose tuple is `t`.
    pub fn find(&self, proto: u8, t: &Tuple) -> Option<(u32, u8)> {
        let es = self.store.get();
        let mut cur = self.heads[self.hash(proto, t)];
        while cur != NONE {
            let (id, dir) = (cur / 2, (cur % 2) as u8);
            let e = &es[id as usize];
            if e.proto == proto && e.tuple[dir as usize] == *t {
                return Some((id, dir));
            }
            cur = self.next[cur as usize];
        }
        None
    }

    fn uq_push(&mut self, id: u32) {
        self.uq_prev[id as usize] = self.uq_tail;
        self.uq_next[id as usize] = NONE;
        if self.uq_tail == NONE {
            self.uq_head = id;
        } else {
            self.uq_next[self.uq_tail as usize] = id;
        }
        self.uq_tail = id;
    }

    fn uq_remove(&mut self, id: u32) {
        let (p, n) = (self.uq_prev[id as usize], self.uq_next[id as usize]);
        if p == NONE && self.uq_head != id {
            return; // not queued
        }
        if p == NONE {
            self.uq_head = n;
        } else {
            self.uq_next[p as usize] = n;
        }
        if n == NONE {
            self.uq_tail = p;
        } else {
            self.uq_prev[n as usize] = p;
        }
        self.uq_prev[id as usize] = NONE;
        self.uq_next[id as usize] = NONE;
    }

    /// Runs `f` on entry `id` between the two bumps of its update counter.
    fn modify<R>(&mut self, id: u32, f: impl FnOnce(&mut CtEntry) -> R) -> R {
        let e = &mut self.store.get_mut()[id as usize];
        e.update = e.update.wrapping_add(1) | 1;
        compiler_fence(Ordering::SeqCst);
        let r = f(e);
        compiler_fence(Ordering::SeqCst);
        e.update = e.update.wrapping_add(1);
        r
    }

    /// Frees entry `id`.
    pub fn remove(&mut self, id: u32) {
        let Some(e) = self.entry(id).copied() else {
            return;
        };
        self.unlink(id, 0, e.proto, &e.tuple[0]);
        self.unlink(id, 1, e.proto, &e.tuple[1]);
        self.uq_remove(id);
        // Clearing the magic first makes the slot free even if the rest
        // of the clear is cut short.
        self.store.get_mut()[id as usize].magic = 0;
        compiler_fence(Ordering::SeqCst);
        self.store.get_mut()[id as usize] = CtEntry::default();
        self.free.push(id);
        self.in_use -= 1;
    }

    /// Removes every entry.
    pub fn flush(&mut self) {
        for id in 0..self.capacity() as u32 {
            self.remove(id);
        }
    }

    /// Removes entries whose deadline passed; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        self.expire_some(now_ms, self.capacity())
    }

    /// Like [`expire`](Self::expire) over at most `budget` slots, resuming
    /// where the previous call stopped, for a shell that spreads the work.
    pub fn expire_some(&mut self, now_ms: u64, budget: usize) -> usize {
        let cap = self.capacity();
        let mut n = 0;
        for _ in 0..budget.min(cap) {
            self.cursor = (self.cursor + 1) % cap;
            let id = self.cursor as u32;
            if self.entry(id).is_some_and(|e| e.expires_ms <= now_ms) {
                self.remove(id);
                n += 1;
            }
        }
        self.stats.expired += n as u64;
        n
    }

    /// Replaces entry `id`'s reply tuple (a NAT binding); `false` if
    /// another entry already uses the new tuple.
    pub fn set_reply(&mut self, id: u32, reply: Tuple) -> bool {
        let Some(e) = self.entry(id).copied() else {
            return false;
        };
        if e.tuple[1] == reply {
            return true;
        }
        if self.find(e.proto, &reply).is_some() {
            return false;
        }
        self.unlink(id, 1, e.proto, &e.tuple[1]);
        self.modify(id, |e| e.tuple[1] = reply);
        self.link(id, 1, e.proto, &reply);
        true
    }

    /// Whether `t` is some entry's tuple (either direction).
    pub fn tuple_taken(&self, proto: u8, t: &Tuple) -> bool {
        self.find(proto, t).is_some()
    }

    /// Sets entry `id`'s connection mark.
    pub fn set_mark(&mut self, id: u32, mark: u32) {
        if self.entry(id).is_some() {
            self.modify(id, |e| e.mark = mark);
        }
    }

    fn alloc(&mut self, now_ms: u64) -> Option<u32> {
        if let Some(id) = self.free.pop() {
            return Some(id);
        }
        // Full: reclaim a little expired space, else drop the oldest
        // connection that never saw a reply (Linux's early_drop).
        if self.expire_some(now_ms, 64) > 0 {
            return self.free.pop();
        }
        if self.uq_head != NONE {
            let victim = self.uq_head;
            self.remove(victim);
            self.stats.early_drops += 1;
            return self.free.pop();
        }
        None
    }

    fn create(
        &mut self,
        p: &PacketInfo,
        t: Tuple,
        tcp_state: u8,
        td0: TcpDir,
        now_ms: u64,
    ) -> Track {
        if self.find(p.proto, &t.invert()).is_some() {
            self.stats.clashes += 1;
            self.stats.invalid += 1;
            return Track::invalid();
        }
        let Some(id) = self.alloc(now_ms) else {
            self.stats.full += 1;
            self.stats.invalid += 1;
            return Track::invalid();
        };
        let to = Self::timeout_for(p.proto, tcp_state, 0);
        self.modify(id, |e| {
            *e = CtEntry {
                magic: ENTRY_MAGIC,
                update: e.update,
                proto: p.proto,
                tcp_state,
                family: if p.v6 { 6 } else { 4 },
                tuple: [t, t.invert()],
                td: [td0, TcpDir::default()],
                created_ms: now_ms,
                expires_ms: now_ms.saturating_add(to),
                packets: [1, 0],
                bytes: [u64::from(p.len), 0],
                ..CtEntry::default()
            };
        });
        self.link(id, 0, p.proto, &t);
        self.link(id, 1, p.proto, &t.invert());
        self.uq_push(id);
        self.in_use += 1;
        self.stats.created += 1;
        Track {
            id,
            dir: 0,
            state: CtState::New,
            created: true,
        }
    }

    fn timeout_for(proto: u8, tcp_state: u8, flags: u8) -> u64 {
        match proto {
            6 => timeout::TCP[usize::from(tcp_state.min(tcpst::CLOSE))],
            17 if flags & ctf::ASSURED != 0 => timeout::UDP_STREAM,
            17 => timeout::UDP,
            1 | ICMPV6 => timeout::ICMP,
            _ => timeout::GENERIC,
        }
    }

    /// Accounts a valid packet of direction `dir` and gives its state.
    fn seen(
        &mut self,
        id: u32,
        dir: u8,
        p: &PacketInfo,
        now_ms: u64,
        tcp_state: Option<u8>,
    ) -> Track {
        let was_replied = self
            .entry(id)
            .is_some_and(|e| e.flags & ctf::SEEN_REPLY != 0);
        self.modify(id, |e| {
            let d = usize::from(dir);
            e.packets[d] = e.packets[d].wrapping_add(1);
            e.bytes[d] = e.bytes[d].wrapping_add(u64::from(p.len));
            if let Some(s) = tcp_state {
                // Linux: a valid ACK after SYN_RECV, or a valid packet
                // of a picked-up connection.
                if (e.tcp_state == tcpst::SYN_RECV || e.tcp_state == tcpst::ESTABLISHED)
                    && s == tcpst::ESTABLISHED
                {
                    e.flags |= ctf::ASSURED;
                }
                e.tcp_state = s;
            } else if e.proto == 17 && was_replied {
                // Traffic both ways and more: a stream.
                e.flags |= ctf::ASSURED;
            }
            if dir == 1 {
                e.flags |= ctf::SEEN_REPLY;
            }
            e.expires_ms = now_ms.saturating_add(Self::timeout_for(e.proto, e.tcp_state, e.flags));
        });
        if dir == 1 && !was_replied {
            self.uq_remove(id);
        }
        let state = if dir == 1 || was_replied {
            CtState::Established
        } else {
            CtState::New
        };
        Track {
            id,
            dir,
            state,
            created: false,
        }
    }

    /// Finds the connection of `p` (creating it for a first packet that
    /// may open one) and updates it: Linux's `nf_conntrack_in`.
    pub fn track(&mut self, p: &PacketInfo, now_ms: u64) -> Track {
        let r = self.track_inner(p, now_ms);
        if r.state == CtState::Invalid {
            self.stats.invalid += 1;
        }
        r
    }

    fn lookup_live(&mut self, proto: u8, t: &Tuple, now_ms: u64) -> Option<(u32, u8)> {
        let (id, dir) = self.find(proto, t)?;
        if self.entry(id).is_some_and(|e| e.expires_ms <= now_ms) {
            self.remove(id);
            self.stats.expired += 1;
            return None;
        }
        Some((id, dir))
    }

    fn track_inner(&mut self, p: &PacketInfo, now_ms: u64) -> Track {
        if !p.has_l4 {
            return Track::invalid();
        }
        let t = Tuple::of(p);
        let icmp = if p.v6 { ICMPV6 } else { 1 };
        match p.proto {
            x if x == icmp && is_icmp_error(x, p.icmp_type) => self.track_related(p, now_ms),
            ICMPV6 if p.v6 && ICMPV6_UNTRACKED.contains(&p.icmp_type) => Track::untracked(),
            x if x == icmp => self.track_query(p, t, now_ms),
            6 => self.track_tcp(p, t, now_ms),
            _ => match self.lookup_live(p.proto, &t, now_ms) {
                Some((id, dir)) => self.seen(id, dir, p, now_ms, None),
                None => self.create(p, t, 0, TcpDir::default(), now_ms),
            },
        }
    }

    /// An ICMP or ICMPv6 error: RELATED to the connection of the datagram
    /// it quotes (which went the other way), else INVALID.
    fn track_related(&mut self, p: &PacketInfo, now_ms: u64) -> Track {
        let Some(inner) = p.inner else {
            return Track::invalid();
        };
        let q = Tuple::new(inner.daddr, inner.saddr, inner.dport, inner.sport);
        match self.lookup_live(inner.proto, &q, now_ms) {
            Some((id, dir)) => Track {
                id,
                dir,
                state: CtState::Related,
                created: false,
            },
            None => Track::invalid(),
        }
    }

    /// An ICMP or ICMPv6 informational message: a request opens or
    /// refreshes a flow, a reply must match one; any other type is
    /// INVALID.
    fn track_query(&mut self, p: &PacketInfo, t: Tuple, now_ms: u64) -> Track {
        let q = queries(p.proto);
        let request = q.iter().any(|(r, _)| *r == p.icmp_type);
        let reply = q.iter().any(|(_, r)| *r == p.icmp_type);
        match self.lookup_live(p.proto, &t, now_ms) {
            Some((id, dir)) if request || reply => self.seen(id, dir, p, now_ms, None),
            None if request => self.create(p, t, 0, TcpDir::default(), now_ms),
            _ => Track::invalid(),
        }
    }

    fn track_tcp(&mut self, p: &PacketInfo, t: Tuple, now_ms: u64) -> Track {
        let kind = tcp_kind(p.tcp_flags);
        let pure_syn = kind == 0;
        if let Some((id, dir)) = self.lookup_live(6, &t, now_ms) {
            let Some(e) = self.entry(id).copied() else {
                return Track::invalid();
            };
            let old = e.tcp_state.min(tcpst::CLOSE);
            if pure_syn && (old == tcpst::TIME_WAIT || old == tcpst::CLOSE) {
                // A new connection on the same ports: start over, with
                // this SYN's sender as the originator.
                self.remove(id);
                return self.track_tcp(p, t, now_ms);
            }
            let new = TCP_TABLE[usize::from(dir)][kind][usize::from(old)];
            if new == IV {
                return Track::invalid();
            }
            if new == IG {
                let replied = e.flags & ctf::SEEN_REPLY != 0;
                return Track {
                    id,
                    dir,
                    state: if dir == 1 || replied {
                        CtState::Established
                    } else {
                        CtState::New
                    },
                    created: false,
                };
            }
            let mut td = e.td;
            if !tcp_in_window(&mut td, usize::from(dir), old, p) {
                // The window edges moved anyway where Linux moves them.
                self.modify(id, |e| e.td = td);
                return Track::invalid();
            }
            self.modify(id, |e| e.td = td);
            return self.seen(id, dir, p, now_ms, Some(new));
        }
        let end = p
            .seq
            .wrapping_add(p.payload)
            .wrapping_add(u32::from(p.tcp_flags & 0x02 != 0))
            .wrapping_add(u32::from(p.tcp_flags & 0x01 != 0));
        let win = u32::from(p.win);
        if pure_syn {
            let td0 = TcpDir {
                end,
                maxend: end,
                maxwin: win.max(1),
                scale: if p.wscale == 0xff {
                    0
                } else {
                    p.wscale.min(14)
                },
                flags: if p.wscale == 0xff { 0 } else { tdf::WSCALE },
                pad: [0; 2],
            };
            self.create(p, t, tcpst::SYN_SENT, td0, now_ms)
        } else if kind == 3 && self.cfg.tcp_loose {
            let td0 = TcpDir {
                end,
                maxend: end.wrapping_add(win.max(1)),
                maxwin: win.max(1),
                scale: 0,
                flags: tdf::LIBERAL,
                pad: [0; 2],
            };
            let r = self.create(p, t, tcpst::ESTABLISHED, td0, now_ms);
            if r.id != NONE {
                // The peer's side starts at the ACK we saw, liberal too.
                self.modify(r.id, |e| {
                    e.td[1] = TcpDir {
                        end: p.ack,
                        maxend: p.ack,
                        maxwin: 0,
                        scale: 0,
                        flags: tdf::LIBERAL,
                        pad: [0; 2],
                    }
                });
            }
            r
        } else {
            Track::invalid()
        }
    }

    /// Owned summaries of every entry, for `strata conntrack list`.
    pub fn list(&self, now_ms: u64) -> Vec<CtSummary> {
        self.store
            .get()
            .iter()
            .enumerate()
            .filter(|(_, e)| e.magic == ENTRY_MAGIC)
            .map(|(id, e)| CtSummary {
                id: id as u32,
                proto: e.proto,
                secs_left: e.expires_ms.saturating_sub(now_ms) / 1000,
                tcp_state: (e.proto == 6).then(|| tcpst::NAMES[usize::from(e.tcp_state.min(8))]),
                orig: e.tuple[0],
                reply: e.tuple[1],
                flags: e.flags,
                mark: e.mark,
                counts: [(e.packets[0], e.bytes[0]), (e.packets[1], e.bytes[1])],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::build;

    const C: [u8; 4] = [10, 0, 0, 1];
    const S: [u8; 4] = [10, 0, 0, 2];

    fn info(b: &[u8]) -> PacketInfo {
        PacketInfo::parse(b, 0, 0).unwrap()
    }

    fn tcp(
        ct: &mut Conntrack,
        from_client: bool,
        flags: u8,
        seq: u32,
        ack: u32,
        data: usize,
        now: u64,
    ) -> Track {
        let payload = vec![0u8; data];
        let b = if from_client {
            build::tcp(C, 40000, S, 80, flags, seq, ack, 65535, &payload)
        } else {
            build::tcp(S, 80, C, 40000, flags, seq, ack, 65535, &payload)
        };
        ct.track(&info(&b), now)
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;

    fn handshake(ct: &mut Conntrack) -> u32 {
        let t = tcp(ct, true, SYN, 1000, 0, 0, 0);
        assert_eq!((t.state, t.created), (CtState::New, true));
        let t = tcp(ct, false, SYN | ACK, 5000, 1001, 0, 1);
        assert_eq!((t.state, t.dir), (CtState::Established, 1));
        assert_eq!(ct.entry(t.id).unwrap().tcp_state, tcpst::SYN_RECV);
        let t = tcp(ct, true, ACK, 1001, 5001, 0, 2);
        assert_eq!(t.state, CtState::Established);
        let e = ct.entry(t.id).unwrap();
        assert_eq!(e.tcp_state, tcpst::ESTABLISHED);
        assert_ne!(e.flags & ctf::ASSURED, 0);
        t.id
    }

    #[test]
    fn tcp_handshake_data_close() {
        let mut ct = Conntrack::new(16, [1, 2]);
        let id = handshake(&mut ct);
        assert_eq!(
            tcp(&mut ct, true, ACK, 1001, 5001, 100, 3).state,
            CtState::Established
        );
        assert_eq!(
            tcp(&mut ct, false, ACK, 5001, 1101, 0, 4).state,
            CtState::Established
        );
        assert_eq!(
            tcp(&mut ct, true, FIN | ACK, 1101, 5001, 0, 5).state,
            CtState::Established
        );
        assert_eq!(ct.entry(id).unwrap().tcp_state, tcpst::FIN_WAIT);
        tcp(&mut ct, false, ACK, 5001, 1102, 0, 6);
        assert_eq!(ct.entry(id).unwrap().tcp_state, tcpst::CLOSE_WAIT);
        tcp(&mut ct, false, FIN | ACK, 5001, 1102, 0, 7);
        assert_eq!(ct.entry(id).unwrap().tcp_state, tcpst::LAST_ACK);
        tcp(&mut ct, true, ACK, 1102, 5002, 0, 8);
        let e = *ct.entry(id).unwrap();
        assert_eq!(e.tcp_state, tcpst::TIME_WAIT);
        assert_eq!(e.expires_ms, 8 + 120_000);
        // A new SYN on the same ports replaces it.
        let t = tcp(&mut ct, true, SYN, 9000, 0, 0, 10);
        assert!(t.created);
        assert_eq!(ct.len(), 1);
    }

    #[test]
    fn out_of_window_is_invalid() {
        let mut ct = Conntrack::new(16, [1, 2]);
        let id = handshake(&mut ct);
        let before = ct.entry(id).unwrap().td;
        assert_eq!(
            tcp(&mut ct, true, ACK, 1001 + 200_000, 5001, 10, 3).state,
            CtState::Invalid
        );
        assert_eq!(
            tcp(&mut ct, true, ACK, 1001, 5001 + 100_000, 0, 3).state,
            CtState::Invalid
        );
        assert_eq!(
            tcp(
                &mut ct,
                false,
                ACK,
                5001u32.wrapping_sub(300_000),
                1001,
                10,
                3
            )
            .state,
            CtState::Invalid
        );
        assert_eq!(ct.entry(id).unwrap().td, before);
        // An ACK for data never sent.
        assert_eq!(
            tcp(&mut ct, false, ACK, 5001, 1001 + 10, 0, 3).state,
            CtState::Invalid
        );
        assert_eq!(
            tcp(&mut ct, true, ACK, 1001, 5001, 10, 3).state,
            CtState::Established
        );
        // Stray SYN/ACK and lone FIN without a connection.
        let b = build::tcp(S, 81, C, 1, SYN | ACK, 1, 1, 100, &[]);
        assert_eq!(ct.track(&info(&b), 4).state, CtState::Invalid);
        let b = build::tcp(S, 81, C, 1, RST, 1, 0, 0, &[]);
        assert_eq!(ct.track(&info(&b), 4).state, CtState::Invalid);
    }

    #[test]
    fn loose_pickup_and_rst() {
        let mut ct = Conntrack::new(16, [1, 2]);
        let t = tcp(&mut ct, true, ACK, 777, 888, 10, 0);
        assert_eq!((t.state, t.created), (CtState::New, true));
        assert_eq!(
            tcp(&mut ct, false, ACK, 888, 787, 10, 1).state,
            CtState::Established
        );
        tcp(&mut ct, false, RST | ACK, 898, 787, 0, 2);
        assert_eq!(ct.entry(t.id).unwrap().tcp_state, tcpst::CLOSE);
        ct.cfg.tcp_loose = false;
        let b = build::tcp(C, 1, S, 2, ACK, 1, 1, 100, &[]);
        assert_eq!(ct.track(&info(&b), 3).state, CtState::Invalid);
    }

    #[test]
    fn udp_timeouts() {
        let mut ct = Conntrack::new(16, [1, 2]);
        let q = build::udp(C, 5000, S, 53, b"q");
        let a = build::udp(S, 53, C, 5000, b"a");
        let t = ct.track(&info(&q), 0);
        assert_eq!(t.state, CtState::New);
        assert_eq!(ct.entry(t.id).unwrap().expires_ms, 30_000);
        assert_eq!(ct.track(&info(&q), 10).state, CtState::New);
        assert_eq!(ct.track(&info(&a), 20).state, CtState::Established);
        assert_eq!(ct.entry(t.id).unwrap().expires_ms, 30_020);
        assert_eq!(ct.track(&info(&q), 30).state, CtState::Established);
        let e = *ct.entry(t.id).unwrap();
        assert_eq!(
            (e.expires_ms, e.flags & ctf::ASSURED),
            (180_030, ctf::ASSURED)
        );
        assert_eq!(ct.expire(180_029), 0);
        assert_eq!(ct.expire(180_030), 1);
        assert!(ct.is_empty());
        // Lookups treat an expired entry as gone.
        let t = ct.track(&info(&q), 200_000);
        assert!(t.created);
        assert!(ct.track(&info(&a), 230_000).created);
    }

    #[test]
    fn icmp_echo_and_related() {
        let mut ct = Conntrack::new(16, [1, 2]);
        let req = build::icmp_echo(C, S, 8, 77, 1);
        let rep = build::icmp_echo(S, C, 0, 77, 1);
        let t = ct.track(&info(&req), 0);
        assert_eq!((t.state, t.created), (CtState::New, true));
        assert_eq!(ct.track(&info(&rep), 1).state, CtState::Established);
        assert_eq!(ct.entry(t.id).unwrap().expires_ms, 30_001);
        let stray = build::icmp_echo(S, C, 0, 78, 1);
        assert_eq!(ct.track(&info(&stray), 1).state, CtState::Invalid);

        let q = build::udp(C, 5000, S, 53, b"q");
        let u = ct.track(&info(&q), 2);
        let err = build::icmp_error(S, C, 3, 3, &q);
        let r = ct.track(&info(&err), 3);
        assert_eq!((r.state, r.id, r.dir), (CtState::Related, u.id, 1));
        let other = build::udp(C, 5001, S, 53, b"q");
        let err = build::icmp_error(S, C, 3, 3, &other);
        assert_eq!(ct.track(&info(&err), 3).state, CtState::Invalid);
    }

    #[test]
    fn early_drop_oldest_unreplied() {
        let mut ct = Conntrack::new(4, [1, 2]);
        let mk = |port: u16| build::udp(C, port, S, 53, b"q");
        let ids: Vec<u32> = (0..4)
            .map(|i| ct.track(&info(&mk(1000 + i)), i as u64).id)
            .collect();
        // The first one gets a reply, so the second is the oldest unreplied.
        ct.track(&info(&build::udp(S, 53, C, 1000, b"a")), 5);
        let t = ct.track(&info(&mk(2000)), 6);
        assert!(t.created);
        assert_eq!(ct.stats.early_drops, 1);
        assert!(ct.entry(ids[0]).is_some());
        assert_eq!(t.id, ids[1]);
        assert_eq!(ct.find(17, &Tuple::of(&info(&mk(1001)))), None);
        // With nothing unreplied left to drop, new flows are refused.
        for i in 2..4 {
            ct.track(&info(&build::udp(S, 53, C, 1000 + i, b"a")), 7);
        }
        ct.track(&info(&build::udp(S, 53, C, 2000, b"a")), 7);
        assert_eq!(ct.track(&info(&mk(3000)), 8).state, CtState::Invalid);
        assert_eq!(ct.stats.full, 1);
    }

    #[test]
    fn arena_restart_keeps_entries_and_drops_torn_ones() {
        let len = Conntrack::bytes_for(8);
        let mut mem = vec![0u64; len / 8];
        let p = mem.as_mut_ptr() as *mut u8;
        #[allow(unsafe_code)]
        // SAFETY: the vector outlives the table and nothing else touches it
        // meanwhile.
        let (mut ct, fresh) = unsafe { Conntrack::from_raw(p, len, [3, 4], 0).unwrap() };
        assert!(fresh);
        let id = handshake(&mut ct);
        let u = ct.track(&info(&build::udp(C, 1, S, 2, b"x")), 3).id;
        let g = ct.track(&info(&build::udp(C, 9, S, 9, b"x")), 3).id;
        let summary = ct.list(3);
        drop(ct);
        // A writer died inside an update of `u`; `g` got garbage.
        #[allow(unsafe_code)]
        // SAFETY: the table was dropped above; the vector holds 8 entries
        // after the header.
        let entries = unsafe { std::slice::from_raw_parts_mut(p.add(64) as *mut CtEntry, 8) };
        entries[u as usize].update |= 1;
        entries[g as usize].tcp_state = 200;
        #[allow(unsafe_code)]
        // SAFETY: as above: the vector outlives the table, which is its only
        // user.
        let (mut ct, fresh) = unsafe { Conntrack::from_raw(p, len, [9, 9], 10).unwrap() };
        assert!(!fresh);
        assert_eq!((ct.len(), ct.stats.restored, ct.stats.discarded), (1, 1, 2));
        assert_eq!(ct.list(3)[0], summary[0]);
        assert_eq!(
            tcp(&mut ct, true, ACK, 1001, 5001, 10, 11).state,
            CtState::Established
        );
        assert_eq!(tcp(&mut ct, true, ACK, 1001, 5001, 10, 11).id, id);
        let line = ct.list(11)[0].to_string();
        assert!(
            line.starts_with(
                "tcp      6 432000 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80"
            ),
            "{line}"
        );
        assert!(line.ends_with("[ASSURED] mark=0"), "{line}");
    }

    #[test]
    fn ipv6_entries_survive_a_restart_and_are_checked() {
        const A6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        const B6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let len = Conntrack::bytes_for(8);
        let mut mem = vec![0u64; len / 8];
        let p = mem.as_mut_ptr() as *mut u8;
        #[allow(unsafe_code)]
        // SAFETY: the vector outlives the table and nothing else touches it
        // meanwhile.
        let (mut ct, _) = unsafe { Conntrack::from_raw(p, len, [3, 4], 0).unwrap() };
        let q6 = build::udp6(A6, 5000, B6, 53, b"q");
        let a6 = build::udp6(B6, 53, A6, 5000, b"a");
        let u6 = ct.track(&info(&q6), 0).id;
        let u4 = ct.track(&info(&build::udp(C, 5000, S, 53, b"q")), 0).id;
        let bad = ct.track(&info(&build::udp6(A6, 1, B6, 2, b"q")), 0).id;
        assert_ne!(u6, u4, "the families never share a tuple");
        assert_eq!(ct.entry(u6).unwrap().family, 6);
        drop(ct);
        #[allow(unsafe_code)]
        // SAFETY: the table was dropped above; the vector holds 8 entries
        // after the header.
        let entries = unsafe { std::slice::from_raw_parts_mut(p.add(64) as *mut CtEntry, 8) };
        entries[bad as usize].family = 4;
        #[allow(unsafe_code)]
        // SAFETY: as above: the vector outlives the table, its only user.
        let (mut ct, fresh) = unsafe { Conntrack::from_raw(p, len, [9, 9], 1).unwrap() };
        assert!(!fresh);
        assert_eq!((ct.len(), ct.stats.discarded), (2, 1));
        let t = ct.track(&info(&a6), 2);
        assert_eq!((t.id, t.dir, t.state), (u6, 1, CtState::Established));
        let line = ct.list(2).iter().find(|e| e.id == u6).unwrap().to_string();
        assert!(
            line.starts_with("udp      17 30 src=2001:db8::1 dst=2001:db8::2 sport=5000 dport=53"),
            "{line}"
        );
    }

    #[test]
    fn restore_survives_garbage() {
        let mut ct = Conntrack::new(32, [1, 2]);
        let mut x: u64 = 0x1234_5678;
        for e in ct.store.get_mut().iter_mut() {
            let mut bytes = [0u8; std::mem::size_of::<CtEntry>()];
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            #[allow(unsafe_code)]
            // SAFETY: e is a whole CtEntry of bytes.len() bytes, and every bit
            // pattern is a valid CtEntry (plain integers).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    e as *mut CtEntry as *mut u8,
                    bytes.len(),
                )
            };
            if x.is_multiple_of(2) {
                e.magic = ENTRY_MAGIC;
                e.update = 0;
                e.flags &= 3;
                e.family = if x.is_multiple_of(4) { 6 } else { 4 };
                e.tcp_state = if e.proto == 6 { e.tcp_state % 9 } else { 0 };
                e.td[0].scale %= 15;
                e.td[1].scale %= 15;
                e.expires_ms = 1 + (x % 1_000_000);
            }
        }
        ct.restore(0);
        for now in [0u64, 100, 10_000_000] {
            ct.expire(now);
            let _ = ct.list(now);
        }
        let q = build::udp(C, 5000, S, 53, b"q");
        ct.track(&info(&q), 20_000_000);
    }
}
