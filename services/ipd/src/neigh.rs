//! The neighbour cache of both families: a fixed-capacity table with the
//! Linux NUD state machine (RFC 1122 §2.3.2 for ARP, RFC 4861 §7.3 for
//! IPv6 neighbour discovery), and the bounded queue of packets that wait
//! for a neighbour to resolve.
//!
//! One table serves IPv4 and IPv6: an entry's key is a [`NeighAddr`],
//! an IPv6 address or an IPv4 one mapped into IPv6. The families differ
//! in one transition: a STALE IPv6 neighbour that is used goes to DELAY
//! and is probed only if nothing confirms it within
//! `delay_first_probe_ns` (RFC 4861 §7.3.3), while an IPv4 one is probed
//! at once, as before.
//!
//! This module only keeps state and says what to do ([`Resolve`], [`Tick`]);
//! the core builds and sends the ARP or neighbour discovery messages and
//! frees dropped packets, so the state machine can be read (and tested)
//! apart from packet handling.
//!
//! Everything is allocated in [`Neighbours::new`]: entries, the hash index
//! and the queue slots. Entry and queue links are `u16` indices, not
//! pointers, so the table is plain data.

use std::net::{IpAddr, Ipv6Addr};

use strata_ipc::Handle;
use strata_proto::MacAddr;

use crate::config::IpLimits;

/// Values of [`NeighRecord::state`].
pub mod neigh_state {
    /// Resolution in progress (never exported).
    pub const INCOMPLETE: u8 = 1;
    /// Reachability confirmed less than `reachable_ns` ago.
    pub const REACHABLE: u8 = 2;
    /// The MAC is known but not recently confirmed; still used.
    pub const STALE: u8 = 3;
    /// In use while STALE: being re-confirmed with unicast requests.
    pub const PROBE: u8 = 4;
    /// Resolution failed (never exported).
    pub const FAILED: u8 = 5;
    /// Configured (`strata neigh add`): never aged, probed, relearnt or
    /// flushed. Exported for `strata neigh show`; a restarted ipd takes
    /// permanent entries from the configuration, not from the arena.
    pub const PERMANENT: u8 = 6;
    /// IPv6 only: STALE and used; probed unless confirmed within
    /// `delay_first_probe_ns` (RFC 4861 §7.3.3).
    pub const DELAY: u8 = 7;
    /// Not a neighbour: one of ipd's own IPv6 addresses whose duplicate
    /// address detection is running (RFC 4862 §5.4). For these three
    /// states `mac[0]` is 1 for an address made from an advertised prefix
    /// (its prefix length in `mac[1]`, the end of its valid lifetime in
    /// `updated_ns`), 0 for a configured one.
    pub const ADDR_TENTATIVE: u8 = 8;
    /// Not a neighbour: one of ipd's own IPv6 addresses that another node
    /// on the link holds (RFC 4862 §5.4.5); ipd does not use it.
    pub const ADDR_DUPLICATE: u8 = 9;
    /// Not a neighbour: one of ipd's own IPv6 addresses that passed
    /// duplicate address detection and is in use.
    pub const ADDR_PREFERRED: u8 = 10;
    /// Not a neighbour: a default router a router advertisement named;
    /// `updated_ns` is when its lifetime ends.
    pub const ROUTER: u8 = 11;
    /// Not a neighbour: an on-link prefix a router advertisement named;
    /// the length is in `mac[0]`, the end of its validity in `updated_ns`.
    pub const PREFIX: u8 = 12;
}

/// A neighbour's address: an IPv6 address, or an IPv4 address as the
/// IPv4-mapped IPv6 address `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2,
/// [`strata_ipc::addrs::mapped`]), which no IPv6 neighbour can have. So
/// one table and one record format hold both families.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NeighAddr(pub u128);

impl NeighAddr {
    /// The key of IPv4 address `ip` (host order).
    pub const fn v4(ip: u32) -> NeighAddr {
        NeighAddr(strata_ipc::addrs::mapped(ip))
    }

    /// The key of an IPv6 address.
    pub fn v6(ip: Ipv6Addr) -> NeighAddr {
        NeighAddr(u128::from(ip))
    }

    /// The IPv4 address (host order), if this is one.
    pub fn as_v4(self) -> Option<u32> {
        strata_ipc::addrs::unmapped(self.0)
    }

    /// The IPv6 address, if this is not an IPv4 one.
    pub fn as_v6(self) -> Option<Ipv6Addr> {
        self.as_v4().is_none().then(|| Ipv6Addr::from(self.0))
    }

    /// The address as std has it.
    pub fn to_ip(self) -> IpAddr {
        strata_ipc::addrs::to_ip(self.0)
    }

    /// A 32-bit mix of the address, for the hash index.
    fn fold(self) -> u32 {
        let x = self.0 ^ (self.0 >> 64);
        (x as u64 ^ (x as u64 >> 32)) as u32
    }
}

impl From<IpAddr> for NeighAddr {
    fn from(ip: IpAddr) -> NeighAddr {
        NeighAddr(strata_ipc::addrs::from_ip(ip))
    }
}

/// One neighbour as exported for the fabric's arena, so that a restarted
/// ipd can read it back with
/// [`IpCore::restore_neighbours`](crate::IpCore::restore_neighbours) and
/// the launcher can show it. In the arena it is 32 bytes
/// ([`to_bytes`](Self::to_bytes)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighRecord {
    /// When the MAC was last learned or confirmed (monotonic ns).
    pub updated_ns: u64,
    /// The neighbour's address.
    pub ip: NeighAddr,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Interface index (as in [`Handle::iif`]).
    pub iface: u8,
    /// One of [`neigh_state`].
    pub state: u8,
}

impl NeighRecord {
    /// The record as ipd's arena holds it in format 2: `updated_ns`
    /// little-endian (8 bytes), the address as 16 bytes in network order,
    /// the MAC (6), the interface index and the state.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.updated_ns.to_le_bytes());
        b[8..24].copy_from_slice(&self.ip.0.to_be_bytes());
        b[24..30].copy_from_slice(&self.mac);
        b[30] = self.iface;
        b[31] = self.state;
        b
    }

    /// A record read back from an arena of `format` (2, or 1 as an IPv4-only
    /// ipd wrote it: the IPv4 address little-endian at 8, the MAC at 12,
    /// the interface and state at 18 and 19). Any bytes make some record;
    /// its users validate it.
    pub fn from_bytes(b: &[u8; 32], format: u32) -> NeighRecord {
        let updated_ns = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
        let mut mac = [0u8; 6];
        if format == 1 {
            mac.copy_from_slice(&b[12..18]);
            let v4 = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
            return NeighRecord {
                updated_ns,
                ip: NeighAddr::v4(v4),
                mac,
                iface: b[18],
                state: b[19],
            };
        }
        mac.copy_from_slice(&b[24..30]);
        NeighRecord {
            updated_ns,
            ip: NeighAddr(u128::from_be_bytes(b[8..24].try_into().unwrap_or_default())),
            mac,
            iface: b[30],
            state: b[31],
        }
    }
}

/// No entry / no queue slot.
const NIL: u16 = u16::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Incomplete,
    Reachable,
    Stale,
    Delay,
    Probe,
    Failed,
    Permanent,
}

impl State {
    /// Whether the MAC can be used to send.
    fn valid(self) -> bool {
        matches!(
            self,
            State::Reachable | State::Stale | State::Delay | State::Probe | State::Permanent
        )
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    state: State,
    ip: NeighAddr,
    slot: u8,
    mac: MacAddr,
    /// Last confirmation or learning of the MAC.
    confirmed_ns: u64,
    /// Last time a packet was sent (or queued) to it.
    used_ns: u64,
    /// Next retransmission (INCOMPLETE, PROBE) or removal (FAILED).
    timer_ns: u64,
    /// Requests sent in the current resolution or probe.
    probes: u8,
    q_head: u16,
    q_tail: u16,
    q_len: u16,
    /// Next entry in the hash chain, or in the free list.
    hnext: u16,
}

const FREE_ENTRY: Entry = Entry {
    state: State::Free,
    ip: NeighAddr(0),
    slot: 0,
    mac: MacAddr::ZERO,
    confirmed_ns: 0,
    used_ns: 0,
    timer_ns: 0,
    probes: 0,
    q_head: NIL,
    q_tail: NIL,
    q_len: 0,
    hnext: NIL,
};

#[derive(Clone, Copy, Debug)]
struct QSlot {
    h: Handle,
    /// Queue order across all neighbours; 0 marks a free slot.
    seq: u64,
    owner: u16,
    next: u16,
}

/// What sending to a neighbour needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolve {
    /// Send to this MAC.
    Mac(MacAddr),
    /// Send to this MAC, and send it a unicast ARP request first: it was
    /// STALE and is now being probed.
    MacProbe(MacAddr),
    /// Queue the packet on entry `idx`; when `solicit`, broadcast an ARP
    /// request (resolution just started).
    Pending { idx: usize, solicit: bool },
    /// No entry could be made: the table is full of entries in use.
    Full,
}

/// What a timer did to one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tick {
    /// Nothing due.
    Idle,
    /// Ask for `ip`'s MAC on interface slot `slot` (an ARP request or a
    /// neighbour solicitation): to everyone (broadcast, or the solicited-node
    /// group) when `mac` is `None`, unicast to `mac` when probing.
    Solicit {
        slot: usize,
        ip: NeighAddr,
        mac: Option<MacAddr>,
    },
    /// Resolution failed: the core must drain and drop the entry's queue.
    Failed,
}

/// How an ARP packet bears on a neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learn {
    /// A reply to us: reachability is confirmed (REACHABLE).
    Confirmed,
    /// Some other ARP from the neighbour: the MAC is current but the path
    /// to it is not confirmed (STALE when new or changed).
    Seen,
}

/// Result of learning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learned {
    /// Entry `idx` holds the MAC now; its queue (if any) can be sent.
    Entry(usize),
    /// Nothing known about the sender and not asked to create.
    Unknown,
    /// Asked to create but the table is full.
    Full,
}

/// The neighbour table.
pub(crate) struct Neighbours {
    entries: Vec<Entry>,
    buckets: Vec<u16>,
    bits: u32,
    free: u16,
    used: usize,
    q: Vec<QSlot>,
    q_free: u16,
    q_used: usize,
    q_seq: u64,
    unres_qlen: u16,
    reachable_ns: u64,
    retrans_ns: u64,
    tries: u8,
    gc_ns: u64,
    delay_ns: u64,
    /// Earliest time an entry needs [`tick`](Self::tick); may be early.
    wake: u64,
    changed: bool,
}

impl Neighbours {
    /// A table sized by `l` (capacity and queue sizes below 65535).
    pub fn new(l: &IpLimits) -> Self {
        let cap = l.neigh_capacity.clamp(1, NIL as usize - 1);
        let qcap = l.unres_total.min(NIL as usize - 1);
        let nb = (cap * 2).next_power_of_two();
        let mut entries = vec![FREE_ENTRY; cap];
        for (i, e) in entries.iter_mut().enumerate() {
            e.hnext = if i + 1 < cap { (i + 1) as u16 } else { NIL };
        }
        let q = (0..qcap)
            .map(|i| QSlot {
                h: Handle::default(),
                seq: 0,
                owner: NIL,
                next: if i + 1 < qcap { (i + 1) as u16 } else { NIL },
            })
            .collect();
        Neighbours {
            entries,
            buckets: vec![NIL; nb],
            bits: nb.trailing_zeros(),
            free: 0,
            used: 0,
            q,
            q_free: if qcap > 0 { 0 } else { NIL },
            q_used: 0,
            q_seq: 0,
            unres_qlen: l.unres_qlen.min(NIL as usize - 1) as u16,
            reachable_ns: l.reachable_ns,
            retrans_ns: l.arp_retrans_ns,
            tries: l.arp_tries.max(1),
            gc_ns: l.neigh_gc_ns,
            delay_ns: l.delay_first_probe_ns,
            wake: u64::MAX,
            changed: false,
        }
    }

    fn bucket(&self, slot: u8, ip: NeighAddr) -> usize {
        let k = ip.fold() ^ (u32::from(slot) << 24).rotate_left(7);
        let h = k.wrapping_mul(0x9e37_79b1);
        if self.bits == 0 {
            0
        } else {
            (h >> (32 - self.bits)) as usize
        }
    }

    /// The entry for `ip` on interface slot `slot`.
    pub fn find(&self, slot: usize, ip: NeighAddr) -> Option<usize> {
        let slot = slot as u8;
        let mut i = self.buckets[self.bucket(slot, ip)];
        while i != NIL {
            let e = &self.entries[i as usize];
            if e.ip == ip && e.slot == slot {
                return Some(i as usize);
            }
            i = e.hnext;
        }
        None
    }

    /// A fresh entry in state `state`, evicting the least recently used
    /// STALE or FAILED entry when the table is full.
    fn create(&mut self, slot: usize, ip: NeighAddr, state: State, now: u64) -> Option<usize> {
        if self.free == NIL {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e.state, State::Stale | State::Failed))
                .min_by_key(|(_, e)| e.used_ns)
                .map(|(i, _)| i)?;
            self.remove(victim);
        }
        let i = self.free;
        self.free = self.entries[i as usize].hnext;
        let b = self.bucket(slot as u8, ip);
        self.entries[i as usize] = Entry {
            state,
            ip,
            slot: slot as u8,
            confirmed_ns: now,
            used_ns: now,
            hnext: self.buckets[b],
            ..FREE_ENTRY
        };
        self.buckets[b] = i;
        self.used += 1;
        Some(i as usize)
    }

    /// Unlinks and frees entry `i`. Its queue must be empty (STALE, FAILED
    /// and the states that can be evicted never hold packets).
    fn remove(&mut self, i: usize) {
        let e = self.entries[i];
        debug_assert_eq!(e.q_len, 0);
        if e.state.valid() {
            self.changed = true;
        }
        let b = self.bucket(e.slot, e.ip);
        let mut link = self.buckets[b];
        if link as usize == i {
            self.buckets[b] = e.hnext;
        } else {
            while link != NIL {
                let next = self.entries[link as usize].hnext;
                if next as usize == i {
                    self.entries[link as usize].hnext = e.hnext;
                    break;
                }
                link = next;
            }
        }
        self.entries[i] = Entry {
            hnext: self.free,
            ..FREE_ENTRY
        };
        self.free = i as u16;
        self.used -= 1;
    }

    fn wake_at(&mut self, t: u64) {
        self.wake = self.wake.min(t);
    }

    /// What sending a packet to `ip` on interface slot `slot` needs now.
    pub fn resolve(&mut self, now: u64, slot: usize, ip: NeighAddr) -> Resolve {
        let Some(i) = self.find(slot, ip) else {
            return match self.create(slot, ip, State::Incomplete, now) {
                Some(idx) => {
                    self.start_solicit(idx, now);
                    Resolve::Pending { idx, solicit: true }
                }
                None => Resolve::Full,
            };
        };
        let reachable_ns = self.reachable_ns;
        let e = &mut self.entries[i];
        e.used_ns = now;
        if e.state == State::Reachable && now >= e.confirmed_ns.saturating_add(reachable_ns) {
            e.state = State::Stale;
            self.changed = true;
        }
        match e.state {
            State::Reachable | State::Delay | State::Probe | State::Permanent => {
                Resolve::Mac(e.mac)
            }
            State::Stale if e.ip.as_v6().is_some() => {
                // RFC 4861 §7.3.3: send, and give an upper layer (or an
                // advertisement) `delay_ns` to confirm before probing.
                let t = now.saturating_add(self.delay_ns);
                e.state = State::Delay;
                self.changed = true;
                e.timer_ns = t;
                let mac = e.mac;
                self.wake_at(t);
                Resolve::Mac(mac)
            }
            State::Stale => {
                // ARP: nothing above ipd confirms a path, so probe now
                // rather than wait in DELAY as Linux does.
                let mac = e.mac;
                e.state = State::Probe;
                self.changed = true;
                self.start_solicit(i, now);
                Resolve::MacProbe(mac)
            }
            State::Incomplete => Resolve::Pending {
                idx: i,
                solicit: false,
            },
            State::Failed | State::Free => {
                e.state = State::Incomplete;
                self.start_solicit(i, now);
                Resolve::Pending {
                    idx: i,
                    solicit: true,
                }
            }
        }
    }

    fn start_solicit(&mut self, i: usize, now: u64) {
        let t = now.saturating_add(self.retrans_ns);
        let e = &mut self.entries[i];
        e.probes = 1;
        e.timer_ns = t;
        self.wake_at(t);
    }

    /// Records the MAC `mac` of `ip` on slot `slot` learned from ARP,
    /// creating the entry only when `create` (RFC 826: only when the ARP
    /// was aimed at us).
    pub fn learn(
        &mut self,
        now: u64,
        slot: usize,
        ip: NeighAddr,
        mac: MacAddr,
        how: Learn,
        create: bool,
    ) -> Learned {
        let state = match how {
            Learn::Confirmed => State::Reachable,
            Learn::Seen => State::Stale,
        };
        let i = match self.find(slot, ip) {
            Some(i) => i,
            None if create => match self.create(slot, ip, state, now) {
                Some(i) => {
                    let e = &mut self.entries[i];
                    e.mac = mac;
                    self.changed = true;
                    let t = now.saturating_add(match state {
                        State::Reachable => self.reachable_ns,
                        _ => self.gc_ns,
                    });
                    self.wake_at(t);
                    return Learned::Entry(i);
                }
                None => return Learned::Full,
            },
            None => return Learned::Unknown,
        };
        let e = &mut self.entries[i];
        if e.state == State::Permanent {
            // Configured: what the network says does not change it (Linux
            // leaves NUD_PERMANENT entries to the administrator too).
            return Learned::Entry(i);
        }
        let new_state = if !e.state.valid() || e.mac != mac {
            self.changed = true;
            e.mac = mac;
            state
        } else if how == Learn::Confirmed {
            State::Reachable
        } else {
            // Same MAC, merely seen again: that confirms nothing (Linux
            // keeps the state too).
            e.state
        };
        if new_state == State::Reachable || e.state != new_state {
            e.confirmed_ns = now;
        }
        let moved = e.state != new_state;
        e.state = new_state;
        e.probes = 0;
        // `strata neigh show` shows states: a new one is worth a save.
        self.changed |= moved;
        let t = now.saturating_add(match new_state {
            State::Reachable => self.reachable_ns,
            _ => self.gc_ns,
        });
        self.wake_at(t);
        Learned::Entry(i)
    }

    /// The interface slot of entry `i`, if it is in use.
    pub fn slot_of(&self, i: usize) -> Option<usize> {
        let e = self.entries.get(i)?;
        (e.state != State::Free).then_some(e.slot as usize)
    }

    /// The MAC of entry `i`, if it is usable.
    pub fn mac(&self, i: usize) -> Option<MacAddr> {
        let e = self.entries.get(i)?;
        e.state.valid().then_some(e.mac)
    }

    /// Runs entry `i`'s timers. Call for every index below
    /// [`capacity`](Self::capacity) when [`due`](Self::due) says so, after
    /// [`begin_scan`](Self::begin_scan).
    pub fn tick(&mut self, i: usize, now: u64) -> Tick {
        let (reachable_ns, gc_ns, retrans_ns, tries) =
            (self.reachable_ns, self.gc_ns, self.retrans_ns, self.tries);
        let e = &mut self.entries[i];
        let (tick, deadline) = match e.state {
            State::Free | State::Permanent => return Tick::Idle,
            State::Incomplete | State::Probe if now >= e.timer_ns => {
                if e.probes < tries {
                    e.probes += 1;
                    e.timer_ns = now.saturating_add(retrans_ns);
                    let probe = e.state == State::Probe;
                    (
                        Tick::Solicit {
                            slot: e.slot as usize,
                            ip: e.ip,
                            mac: probe.then_some(e.mac),
                        },
                        e.timer_ns,
                    )
                } else {
                    if e.state == State::Probe {
                        self.changed = true;
                    }
                    e.state = State::Failed;
                    e.timer_ns = now.saturating_add(gc_ns);
                    (Tick::Failed, e.timer_ns)
                }
            }
            State::Incomplete | State::Probe => (Tick::Idle, e.timer_ns),
            State::Delay if now >= e.timer_ns => {
                // RFC 4861 §7.3.3: unconfirmed after the delay, probe with
                // a unicast solicitation.
                e.state = State::Probe;
                self.changed = true;
                e.probes = 1;
                e.timer_ns = now.saturating_add(retrans_ns);
                let solicit = Tick::Solicit {
                    slot: e.slot as usize,
                    ip: e.ip,
                    mac: Some(e.mac),
                };
                (solicit, e.timer_ns)
            }
            State::Delay => (Tick::Idle, e.timer_ns),
            State::Reachable => {
                let end = e.confirmed_ns.saturating_add(reachable_ns);
                if now >= end {
                    e.state = State::Stale;
                    self.changed = true;
                    (Tick::Idle, e.used_ns.saturating_add(gc_ns).max(now))
                } else {
                    (Tick::Idle, end)
                }
            }
            State::Stale => {
                let end = e.used_ns.saturating_add(gc_ns);
                if now >= end {
                    self.remove(i);
                    return Tick::Idle;
                }
                (Tick::Idle, end)
            }
            State::Failed => {
                if now >= e.timer_ns && e.q_len == 0 {
                    self.remove(i);
                    return Tick::Idle;
                }
                (Tick::Idle, e.timer_ns)
            }
        };
        self.wake_at(deadline);
        tick
    }

    /// Whether any timer may be due at `now`.
    pub fn due(&self, now: u64) -> bool {
        now >= self.wake
    }

    /// Starts a full timer scan: the deadline is recomputed by the ticks.
    pub fn begin_scan(&mut self) {
        self.wake = u64::MAX;
    }

    /// The earliest deadline, if any entry has one.
    pub fn next_wake(&self) -> Option<u64> {
        (self.wake != u64::MAX).then_some(self.wake)
    }

    /// Number of entry slots.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Number of entries in use.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.used
    }

    /// Queues `h` on entry `i`. Returns a packet pushed out to make room
    /// (the entry's oldest when its own queue is full, else the oldest of
    /// all when the shared slots are used up), which the caller drops, or
    /// `h` itself when there are no slots at all.
    pub fn enqueue(&mut self, i: usize, h: Handle) -> Option<Handle> {
        if self.unres_qlen == 0 || self.q.is_empty() {
            return Some(h);
        }
        let mut dropped = None;
        if self.entries[i].q_len >= self.unres_qlen {
            dropped = self.dequeue(i);
        } else if self.q_free == NIL {
            let oldest = self
                .q
                .iter()
                .filter(|s| s.seq != 0)
                .min_by_key(|s| s.seq)
                .map(|s| s.owner as usize);
            if let Some(owner) = oldest {
                dropped = self.dequeue(owner);
            }
        }
        let s = self.q_free;
        if s == NIL {
            return Some(h);
        }
        self.q_free = self.q[s as usize].next;
        self.q_seq += 1;
        self.q[s as usize] = QSlot {
            h,
            seq: self.q_seq,
            owner: i as u16,
            next: NIL,
        };
        self.q_used += 1;
        let e = &mut self.entries[i];
        if e.q_tail == NIL {
            e.q_head = s;
        } else {
            self.q[e.q_tail as usize].next = s;
        }
        e.q_tail = s;
        e.q_len += 1;
        dropped
    }

    /// Takes the oldest packet queued on entry `i`.
    pub fn dequeue(&mut self, i: usize) -> Option<Handle> {
        let e = &mut self.entries[i];
        let s = e.q_head;
        if s == NIL {
            return None;
        }
        let slot = self.q[s as usize];
        e.q_head = slot.next;
        if e.q_head == NIL {
            e.q_tail = NIL;
        }
        e.q_len -= 1;
        self.q[s as usize] = QSlot {
            h: Handle::default(),
            seq: 0,
            owner: NIL,
            next: self.q_free,
        };
        self.q_free = s;
        self.q_used -= 1;
        Some(slot.h)
    }

    /// Packets waiting for resolution, all neighbours together.
    pub fn queued(&self) -> usize {
        self.q_used
    }

    /// Exportable entries, with the interface *slot* in `iface` (the core
    /// maps it to the index).
    pub fn records(&self) -> impl Iterator<Item = NeighRecord> + '_ {
        self.entries
            .iter()
            .filter(|e| e.state.valid())
            .map(|e| NeighRecord {
                updated_ns: e.confirmed_ns,
                ip: e.ip,
                mac: e.mac.0,
                iface: e.slot,
                state: match e.state {
                    State::Reachable => neigh_state::REACHABLE,
                    State::Delay => neigh_state::DELAY,
                    State::Probe => neigh_state::PROBE,
                    State::Permanent => neigh_state::PERMANENT,
                    _ => neigh_state::STALE,
                },
            })
    }

    /// Re-creates an exported entry (`rec.iface` already mapped to a slot).
    /// Entries still within their reachable time stay REACHABLE; the rest
    /// come back STALE, to be re-confirmed on first use. Returns false when
    /// the record was not taken (invalid state, already known, table full).
    pub fn restore(&mut self, now: u64, slot: usize, rec: &NeighRecord) -> bool {
        if !matches!(
            rec.state,
            neigh_state::REACHABLE | neigh_state::STALE | neigh_state::DELAY | neigh_state::PROBE
        ) || self.find(slot, rec.ip).is_some()
        {
            return false;
        }
        let fresh = rec.state == neigh_state::REACHABLE
            && rec.updated_ns <= now
            && now - rec.updated_ns < self.reachable_ns;
        let state = if fresh {
            State::Reachable
        } else {
            State::Stale
        };
        let Some(i) = self.create(slot, rec.ip, state, now) else {
            return false;
        };
        let e = &mut self.entries[i];
        e.mac = MacAddr(rec.mac);
        e.confirmed_ns = rec.updated_ns.min(now);
        // A restart must not make every entry look unused for a minute.
        e.used_ns = now;
        let t = if fresh {
            e.confirmed_ns.saturating_add(self.reachable_ns)
        } else {
            now.saturating_add(self.gc_ns)
        };
        self.wake_at(t);
        true
    }

    /// Forgets every learnt neighbour (`ip neigh flush`), or only those
    /// with address `only`; permanent entries stay. Returns the packets
    /// that were waiting for a forgotten one, for the caller to free.
    pub fn flush(&mut self, only: Option<NeighAddr>) -> Vec<Handle> {
        let mut waiting = Vec::new();
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            if matches!(e.state, State::Free | State::Permanent) || only.is_some_and(|a| a != e.ip)
            {
                continue;
            }
            while let Some(h) = self.dequeue(i) {
                waiting.push(h);
            }
            self.remove(i);
        }
        self.changed = true;
        waiting
    }

    /// Makes the permanent entries exactly `want` (interface slot, address,
    /// MAC): each becomes or stays PERMANENT with its MAC, whatever was
    /// learnt for it, and a permanent entry not in `want` is removed.
    /// Returns the entries whose MAC became known, whose queued packets
    /// can go now. `want` is bounded by the configuration (256); an entry
    /// the full table has no room for is skipped.
    pub fn set_permanent(&mut self, now: u64, want: &[(usize, NeighAddr, MacAddr)]) -> Vec<usize> {
        let mut ready = Vec::new();
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            if e.state == State::Permanent
                && !want
                    .iter()
                    .any(|&(slot, ip, _)| slot == e.slot as usize && ip == e.ip)
            {
                self.remove(i);
            }
        }
        for &(slot, ip, mac) in want {
            let i = match self.find(slot, ip) {
                Some(i) => i,
                None => match self.create(slot, ip, State::Permanent, now) {
                    Some(i) => i,
                    None => continue,
                },
            };
            let e = &mut self.entries[i];
            if e.state != State::Permanent || e.mac != mac {
                self.changed = true;
            }
            e.state = State::Permanent;
            e.mac = mac;
            e.confirmed_ns = now;
            e.probes = 0;
            if e.q_len > 0 {
                ready.push(i);
            }
        }
        ready
    }

    /// Whether a valid entry appeared, vanished, or changed MAC or state
    /// since the last call.
    pub fn take_changed(&mut self) -> bool {
        core::mem::take(&mut self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);

    fn table(cap: usize) -> Neighbours {
        Neighbours::new(&IpLimits {
            neigh_capacity: cap,
            unres_total: 8,
            ..IpLimits::default()
        })
    }

    fn v4(n: u32) -> NeighAddr {
        NeighAddr::v4(n)
    }

    fn h(n: u32) -> Handle {
        Handle::new(n, 1, 0)
    }

    fn tick_all(t: &mut Neighbours, now: u64) -> Vec<(usize, Tick)> {
        t.begin_scan();
        (0..t.capacity())
            .map(|i| (i, t.tick(i, now)))
            .filter(|(_, k)| *k != Tick::Idle)
            .collect()
    }

    #[test]
    fn flush_forgets_everything_and_hands_back_what_waited() {
        let mut t = table(4);
        let Resolve::Pending { idx, .. } = t.resolve(0, 0, v4(7)) else {
            panic!()
        };
        assert_eq!(t.enqueue(idx, h(1)), None);
        assert_eq!(t.enqueue(idx, h(2)), None);
        t.learn(10, 0, v4(9), MAC, Learn::Seen, true);
        t.take_changed();
        let waiting = t.flush(None);
        assert_eq!(waiting, [h(1), h(2)]);
        assert!(t.take_changed());
        assert_eq!((t.len(), t.queued()), (0, 0));
        assert_eq!(t.find(0, v4(7)), None);
        assert_eq!(t.records().count(), 0);
        // Usable again, to its capacity.
        for ip in 0..4 {
            assert!(matches!(t.resolve(20, 0, v4(ip)), Resolve::Pending { .. }));
        }
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn incomplete_retries_then_fails() {
        let mut t = table(4);
        let Resolve::Pending { idx, solicit: true } = t.resolve(0, 0, v4(7)) else {
            panic!()
        };
        assert_eq!(
            t.resolve(1, 0, v4(7)),
            Resolve::Pending {
                idx,
                solicit: false
            }
        );
        assert_eq!(t.next_wake(), Some(S));
        assert!(tick_all(&mut t, S - 1).is_empty());
        let solicit = Tick::Solicit {
            slot: 0,
            ip: v4(7),
            mac: None,
        };
        assert_eq!(tick_all(&mut t, S), vec![(idx, solicit)]);
        assert_eq!(tick_all(&mut t, 2 * S), vec![(idx, solicit)]);
        assert_eq!(tick_all(&mut t, 3 * S), vec![(idx, Tick::Failed)]);
        // A new packet restarts resolution.
        assert_eq!(
            t.resolve(4 * S, 0, v4(7)),
            Resolve::Pending { idx, solicit: true }
        );
    }

    #[test]
    fn reply_resolves_then_ages_to_stale_probe_and_gc() {
        let mut t = table(4);
        let Resolve::Pending { idx, .. } = t.resolve(0, 0, v4(7)) else {
            panic!()
        };
        assert!(!t.take_changed());
        assert_eq!(
            t.learn(10, 0, v4(7), MAC, Learn::Confirmed, false),
            Learned::Entry(idx)
        );
        assert!(t.take_changed());
        assert_eq!(t.resolve(20, 0, v4(7)), Resolve::Mac(MAC));
        tick_all(&mut t, 31 * S);
        assert_eq!(t.records().next().unwrap().state, neigh_state::STALE);
        assert_eq!(t.resolve(31 * S, 0, v4(7)), Resolve::MacProbe(MAC));
        assert_eq!(t.resolve(31 * S, 0, v4(7)), Resolve::Mac(MAC));
        let probe = Tick::Solicit {
            slot: 0,
            ip: v4(7),
            mac: Some(MAC),
        };
        assert_eq!(tick_all(&mut t, 32 * S), vec![(idx, probe)]);
        assert_eq!(tick_all(&mut t, 33 * S), vec![(idx, probe)]);
        assert_eq!(tick_all(&mut t, 34 * S), vec![(idx, Tick::Failed)]);
        assert!(t.take_changed());
        assert_eq!(t.records().count(), 0);
        tick_all(&mut t, 95 * S);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn learning_creates_only_when_asked_and_stale_is_collected() {
        let mut t = table(4);
        assert_eq!(
            t.learn(0, 0, v4(7), MAC, Learn::Seen, false),
            Learned::Unknown
        );
        assert!(matches!(
            t.learn(0, 0, v4(7), MAC, Learn::Seen, true),
            Learned::Entry(_)
        ));
        assert_eq!(t.records().next().unwrap().state, neigh_state::STALE);
        // Seen again, same MAC: unchanged; a confirmation makes it REACHABLE.
        t.learn(S, 0, v4(7), MAC, Learn::Seen, false);
        assert_eq!(t.records().next().unwrap().updated_ns, 0);
        t.learn(2 * S, 0, v4(7), MAC, Learn::Confirmed, false);
        assert_eq!(t.records().next().unwrap().state, neigh_state::REACHABLE);
        tick_all(&mut t, 32 * S);
        assert_eq!(t.len(), 1);
        tick_all(&mut t, 93 * S);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn full_table_evicts_oldest_stale_only() {
        let mut t = table(2);
        assert!(matches!(
            t.learn(0, 0, v4(1), MAC, Learn::Seen, true),
            Learned::Entry(_)
        ));
        assert!(matches!(
            t.learn(5, 0, v4(2), MAC, Learn::Seen, true),
            Learned::Entry(_)
        ));
        assert!(matches!(t.resolve(10, 0, v4(3)), Resolve::Pending { .. }));
        assert!(t.find(0, v4(1)).is_none());
        assert!(t.find(0, v4(2)).is_some());
        assert!(matches!(
            t.learn(11, 0, v4(4), MAC, Learn::Confirmed, true),
            Learned::Entry(_)
        ));
        // Now one INCOMPLETE and one REACHABLE: nothing to evict.
        assert_eq!(t.resolve(12, 0, v4(5)), Resolve::Full);
        assert_eq!(t.learn(12, 0, v4(6), MAC, Learn::Seen, true), Learned::Full);
    }

    #[test]
    fn queue_bounds_per_neighbour_and_total() {
        let mut t = table(8);
        let Resolve::Pending { idx: a, .. } = t.resolve(0, 0, v4(1)) else {
            panic!()
        };
        for n in 0..3 {
            assert_eq!(t.enqueue(a, h(n)), None);
        }
        assert_eq!(t.enqueue(a, h(3)), Some(h(0)));
        let Resolve::Pending { idx: b, .. } = t.resolve(0, 0, v4(2)) else {
            panic!()
        };
        let Resolve::Pending { idx: c, .. } = t.resolve(0, 0, v4(3)) else {
            panic!()
        };
        assert_eq!(t.enqueue(b, h(10)), None);
        assert_eq!(t.enqueue(b, h(11)), None);
        assert_eq!(t.enqueue(c, h(20)), None);
        assert_eq!(t.enqueue(c, h(21)), None);
        assert_eq!(t.queued(), 7);
        assert_eq!(t.enqueue(c, h(22)), None);
        // All 8 slots used: the oldest of all (a's h(1)) goes.
        assert_eq!(t.enqueue(b, h(12)), Some(h(1)));
        assert_eq!(t.queued(), 8);
        assert_eq!(t.dequeue(a), Some(h(2)));
        assert_eq!(t.dequeue(a), Some(h(3)));
        assert_eq!(t.dequeue(a), None);
        assert_eq!(t.dequeue(b), Some(h(10)));
        assert_eq!(t.queued(), 5);
    }

    #[test]
    fn export_and_restore() {
        let mut t = table(4);
        t.learn(100, 0, v4(1), MAC, Learn::Confirmed, true);
        t.learn(100, 1, v4(2), MAC, Learn::Seen, true);
        let recs: Vec<_> = t.records().collect();
        assert_eq!(recs.len(), 2);
        let mut u = table(4);
        for r in &recs {
            assert!(u.restore(200, r.iface as usize, r));
            assert!(!u.restore(200, r.iface as usize, r));
        }
        assert_eq!(u.resolve(300, 0, v4(1)), Resolve::Mac(MAC));
        assert_eq!(u.resolve(300, 1, v4(2)), Resolve::MacProbe(MAC));
        // Restored long after: comes back STALE.
        let mut v = table(4);
        assert!(v.restore(40 * S, 0, &recs[0]));
        assert_eq!(v.resolve(40 * S, 0, v4(1)), Resolve::MacProbe(MAC));
        let bad = NeighRecord {
            state: neigh_state::INCOMPLETE,
            ..recs[0]
        };
        assert!(!table(4).restore(0, 0, &bad));
    }
}
