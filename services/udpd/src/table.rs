//! The binding table: every bound socket, indexed by socket id and by local
//! port, with Linux's conflict rule for binds and its scoring for
//! demultiplexing, over addresses of both families (IPv4 ones mapped,
//! [`mapped`]): a socket bound to `::` without IPV6_V6ONLY takes IPv4
//! datagrams too, as Linux's dual-stack sockets do (RFC 3493 §3.7).
//!
//! Storage is a slab allocated once at the configured capacity; each port
//! has a chain through the slab, newest binding first (Linux adds to the
//! head of its hash chains, so among equally good matches the socket bound
//! last receives). Lookups walk one port's chain and never allocate.

use std::collections::HashMap;

use strata_ipc::addrs::{mapped, unmapped};

/// End of a chain / no slot.
const NIL: u32 = u32::MAX;

/// Bits of [`Binding::flags`].
pub mod bflags {
    /// SO_REUSEADDR was set when the socket bound.
    pub const REUSEADDR: u32 = 1;
    /// The local address was chosen by an explicit bind (Linux
    /// `SOCK_BINDADDR_LOCK`): a disconnect keeps it.
    pub const ADDR_LOCK: u32 = 2;
    /// The port was chosen by an explicit bind with a non-zero port (Linux
    /// `SOCK_BINDPORT_LOCK`): a disconnect keeps it.
    pub const PORT_LOCK: u32 = 4;
    /// SO_REUSEPORT was set when the socket bound (sockd checked that
    /// every socket sharing the port is its user's).
    pub const REUSEPORT: u32 = 8;
    /// IPV6_V6ONLY: bound to `::`, the socket takes IPv6 datagrams only
    /// (RFC 3493 §5.3).
    pub const V6ONLY: u32 = 16;
    /// The socket is an IPv6 one (it bound or connected to an IPv6
    /// address, or with IPV6_V6ONLY): its any address is `::`, to which
    /// a disconnect returns it, and it may talk to IPv6 peers.
    pub const INET6: u32 = 32;
    /// Every defined bit.
    pub const ALL: u32 = REUSEADDR | ADDR_LOCK | PORT_LOCK | REUSEPORT | V6ONLY | INET6;
}

/// One bound socket: what udpd keeps per socket, and what it stores in
/// its fabric arena (in the arena's record format), so a restarted udpd
/// keeps every binding.
///
/// Addresses are 128-bit, IPv4 ones mapped ([`mapped`]): a local address
/// of `mapped(0)` is IPv4's any, `0` IPv6's (`::`, which takes IPv4 too
/// unless [`bflags::V6ONLY`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// sockd's socket id.
    pub sock: u32,
    /// Local address (`mapped(0)` or `0`: any).
    pub local_addr: u128,
    /// Connected peer's address (0: not connected).
    pub remote_addr: u128,
    /// Local port (never 0 for a binding).
    pub local_port: u16,
    /// Connected peer's port.
    pub remote_port: u16,
    /// [`bflags`].
    pub flags: u32,
    /// Order of binding: a newer binding has a larger number, and wins
    /// ties in demultiplexing.
    pub seq: u32,
}

impl Binding {
    /// Whether the socket is connected.
    pub fn connected(&self) -> bool {
        self.remote_addr != 0
    }

    /// Whether the socket is an IPv6 one: flagged so, or bound to an IPv6
    /// address (`::` included).
    pub fn inet6(&self) -> bool {
        self.flags & bflags::INET6 != 0 || unmapped(self.local_addr).is_none()
    }

    /// Whether IPV6_V6ONLY is set.
    pub fn v6only(&self) -> bool {
        self.flags & bflags::V6ONLY != 0
    }

    /// The any address of the socket's family: `::` for an IPv6 socket,
    /// `0.0.0.0` (mapped) for an IPv4 one.
    pub fn any(&self) -> u128 {
        if self.inet6() {
            0
        } else {
            mapped(0)
        }
    }

    /// Whether the local address is `addr`'s, or one of the any
    /// addresses that take `addr`'s family.
    fn takes(&self, addr: u128) -> bool {
        let v4 = unmapped(addr).is_some();
        match self.local_addr {
            0 => !(v4 && self.v6only()),
            a if a == mapped(0) => v4,
            a => a == addr,
        }
    }

    /// Linux's `compute_score` (`udp4_lib_lookup2`, `udp6_lib_lookup2`)
    /// for a datagram from `src:sport` to `dst:<our port>`: `None` when
    /// the socket does not match, else higher for a more specific match
    /// (a bound address, a connected peer). An IPv4 datagram prefers an
    /// IPv4 socket to an IPv6 one that takes it as mapped (Linux scores
    /// `PF_INET` 2, `PF_INET6` 1).
    pub(crate) fn score(&self, dst: u128, src: u128, sport: u16) -> Option<u8> {
        if !self.takes(dst) {
            return None;
        }
        let v4 = unmapped(dst).is_some();
        let mut s = if v4 && self.inet6() { 1 } else { 2 };
        if self.local_addr != 0 && self.local_addr != mapped(0) {
            s += 4;
        }
        if self.remote_addr != 0 {
            if self.remote_addr != src {
                return None;
            }
            s += 4;
        }
        if self.remote_port != 0 {
            if self.remote_port != sport {
                return None;
            }
            s += 4;
        }
        Some(s)
    }

    /// Whether this binding's local address and `addr` (bound with
    /// IPV6_V6ONLY if `v6only`) can both receive one datagram: Linux's
    /// `inet_rcv_saddr_equal` with wildcards matching. Equal addresses
    /// overlap; `::` overlaps every IPv6 address, and every IPv4 one
    /// unless it is V6ONLY; `0.0.0.0` overlaps every IPv4 address.
    fn overlaps(&self, addr: u128, v6only: bool) -> bool {
        let wild = |a: u128, only: bool, other: u128| {
            let other_v4 = unmapped(other).is_some();
            (a == 0 && !(only && other_v4)) || (a == mapped(0) && other_v4)
        };
        self.local_addr == addr
            || wild(self.local_addr, self.v6only(), addr)
            || wild(addr, v6only, self.local_addr)
    }
}

#[derive(Clone, Copy)]
struct Slot {
    b: Binding,
    next: u32,
    live: bool,
}

/// Why a binding could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TableError {
    /// Every slot is in use.
    Full,
}

/// The bindings.
pub(crate) struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// First slot of each port's chain.
    heads: Vec<u32>,
    by_sock: HashMap<u32, u32>,
    cap: usize,
    next_seq: u32,
}

impl Table {
    /// An empty table for at most `cap` bindings; allocates everything.
    pub fn new(cap: usize) -> Table {
        Table {
            slots: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            heads: vec![NIL; 65536],
            by_sock: HashMap::with_capacity(cap),
            cap,
            next_seq: 1,
        }
    }

    /// Bindings in the table.
    pub fn len(&self) -> usize {
        self.by_sock.len()
    }

    /// The binding of `sock`.
    pub fn get(&self, sock: u32) -> Option<&Binding> {
        let &i = self.by_sock.get(&sock)?;
        Some(&self.slots[i as usize].b)
    }

    /// The binding of `sock`, to change its addresses (never its port or
    /// socket id, which index it).
    pub fn get_mut(&mut self, sock: u32) -> Option<&mut Binding> {
        let &i = self.by_sock.get(&sock)?;
        Some(&mut self.slots[i as usize].b)
    }

    /// The bindings of `port`, newest first.
    pub fn on_port(&self, port: u16) -> PortIter<'_> {
        PortIter {
            t: self,
            at: self.heads[usize::from(port)],
        }
    }

    /// Whether no socket is bound to `port`.
    pub fn port_unused(&self, port: u16) -> bool {
        self.heads[usize::from(port)] == NIL
    }

    /// Whether binding `addr:port` (with the reuse options and
    /// [`bflags::V6ONLY`] in `flags`) conflicts with an existing binding:
    /// Linux's rule for UDP is that two bindings of one port conflict when
    /// their addresses overlap ([`Binding::overlaps`]) unless both set
    /// SO_REUSEADDR or both SO_REUSEPORT.
    pub fn conflicts(&self, addr: u128, port: u16, flags: u32) -> bool {
        let v6only = flags & bflags::V6ONLY != 0;
        self.on_port(port).any(|b| {
            let both = |f: u32| flags & f != 0 && b.flags & f != 0;
            b.overlaps(addr, v6only) && !both(bflags::REUSEADDR) && !both(bflags::REUSEPORT)
        })
    }

    /// The best match for a datagram from `src:sport` to `dst:dport`
    /// (highest score; among equals the newest binding, unless it is one
    /// of a SO_REUSEPORT group: then the group's member the peer picks).
    pub fn lookup(&self, dst: u128, dport: u16, src: u128, sport: u16) -> Option<&Binding> {
        let shares = |b: &Binding| b.flags & bflags::REUSEPORT != 0;
        let mut best: Option<(&Binding, u8)> = None;
        // SO_REUSEPORT bindings scoring as the best so far.
        let mut group = 0;
        for b in self.on_port(dport) {
            let Some(s) = b.score(dst, src, sport) else {
                continue;
            };
            match best {
                // The first (newest) of equals stays.
                Some((_, bs)) if s < bs => {}
                Some((_, bs)) if s == bs => group += usize::from(shares(b)),
                _ => {
                    best = Some((b, s));
                    group = usize::from(shares(b));
                }
            }
        }
        let (first, score) = best?;
        if group < 2 || !shares(first) {
            return Some(first);
        }
        let pick = strata_ipc::l4::reuseport_pick(fold(src), sport, group);
        self.on_port(dport)
            .filter(|b| shares(b) && b.score(dst, src, sport) == Some(score))
            .nth(pick)
    }

    /// Adds `b` (whose `sock` must not be bound) at the head of its port's
    /// chain, giving it the next sequence number unless `keep_seq`.
    pub fn insert(&mut self, mut b: Binding, keep_seq: bool) -> Result<(), TableError> {
        if self.len() >= self.cap {
            return Err(TableError::Full);
        }
        if keep_seq {
            self.next_seq = self.next_seq.max(b.seq.wrapping_add(1));
        } else {
            b.seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
        }
        let head = &mut self.heads[usize::from(b.local_port)];
        let slot = Slot {
            b,
            next: *head,
            live: true,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        *head = i;
        self.by_sock.insert(b.sock, i);
        Ok(())
    }

    /// Removes the binding of `sock`.
    pub fn remove(&mut self, sock: u32) -> Option<Binding> {
        let i = self.by_sock.remove(&sock)?;
        let b = self.slots[i as usize].b;
        let next = self.slots[i as usize].next;
        let port = usize::from(b.local_port);
        if self.heads[port] == i {
            self.heads[port] = next;
        } else {
            let mut at = self.heads[port];
            while at != NIL {
                let s = &mut self.slots[at as usize];
                if s.next == i {
                    s.next = next;
                    break;
                }
                at = s.next;
            }
        }
        self.slots[i as usize].live = false;
        self.slots[i as usize].next = NIL;
        self.free.push(i);
        Some(b)
    }

    /// Every binding, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> + '_ {
        self.slots.iter().filter(|s| s.live).map(|s| &s.b)
    }
}

/// A peer address as 32 bits for [`reuseport_pick`](strata_ipc::l4::reuseport_pick):
/// an IPv4 one as it is, an IPv6 one its four words xored.
fn fold(a: u128) -> u32 {
    unmapped(a).unwrap_or((a ^ a >> 64 ^ a >> 32 ^ a >> 96) as u32)
}

/// The bindings of one port, newest first.
pub(crate) struct PortIter<'a> {
    t: &'a Table,
    at: u32,
}

impl<'a> Iterator for PortIter<'a> {
    type Item = &'a Binding;

    fn next(&mut self) -> Option<&'a Binding> {
        if self.at == NIL {
            return None;
        }
        let s = &self.t.slots[self.at as usize];
        self.at = s.next;
        Some(&s.b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(sock: u32, addr: u32, port: u16, flags: u32) -> Binding {
        Binding {
            sock,
            local_addr: mapped(addr),
            local_port: port,
            flags,
            ..Default::default()
        }
    }

    #[test]
    fn chains_survive_removal_anywhere() {
        let mut t = Table::new(8);
        for s in 1..=4 {
            t.insert(b(s, 0, 7, bflags::REUSEADDR), false).unwrap();
        }
        t.insert(b(9, 0, 8, 0), false).unwrap();
        let socks = |t: &Table| t.on_port(7).map(|b| b.sock).collect::<Vec<_>>();
        assert_eq!(socks(&t), [4, 3, 2, 1]);
        t.remove(3).unwrap();
        assert_eq!(socks(&t), [4, 2, 1]);
        t.remove(4).unwrap();
        t.remove(1).unwrap();
        assert_eq!(socks(&t), [2]);
        assert!(t.remove(1).is_none());
        t.insert(b(5, 0, 7, 0), false).unwrap();
        assert_eq!(socks(&t), [5, 2]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.iter().count(), 3);
        assert!(t.port_unused(6) && !t.port_unused(8));
        t.remove(9);
        assert!(t.port_unused(8));
        for s in 10..15 {
            t.insert(b(s, 0, 100 + s as u16, 0), false).unwrap();
        }
        assert_eq!(t.len(), 7);
        t.insert(b(20, 0, 1, 0), false).unwrap();
        assert_eq!(t.insert(b(21, 0, 2, 0), false), Err(TableError::Full));
    }

    #[test]
    fn reuseport_bindings_share_a_port_and_split_the_peers() {
        let mut t = Table::new(8);
        let rp = bflags::REUSEPORT;
        t.insert(b(1, 0, 53, rp), false).unwrap();
        let any = mapped(0);
        assert!(!t.conflicts(any, 53, rp), "both share");
        assert!(
            t.conflicts(any, 53, 0),
            "without the option the port is taken"
        );
        assert!(t.conflicts(any, 53, bflags::REUSEADDR));
        t.insert(b(2, 0, 53, rp), false).unwrap();
        t.insert(b(3, 0, 53, rp), false).unwrap();
        let mut got = [0; 4];
        for sport in 1000..1300 {
            let s = t.lookup(mapped(7), 53, mapped(9), sport).unwrap().sock;
            got[s as usize] += 1;
            // A flow always picks the same one.
            assert_eq!(t.lookup(mapped(7), 53, mapped(9), sport).unwrap().sock, s);
        }
        assert!(got[1..].iter().all(|&n| n > 50), "{got:?}");
        // A more specific binding still wins over the group.
    }

    #[test]
    fn reuseport_splits_ipv6_peers_too_and_a_v6only_group_keeps_out_ipv4() {
        let mut t = Table::new(8);
        let rp = bflags::REUSEPORT | bflags::INET6 | bflags::V6ONLY;
        for s in 1..=3 {
            t.insert(
                Binding {
                    local_addr: 0,
                    ..b(s, 0, 53, rp)
                },
                false,
            )
            .unwrap();
        }
        let ours = u128::from(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let mut got = [0; 4];
        for i in 0..300u128 {
            // Peers that differ only in their last 64 bits, as hosts of
            // one prefix do.
            let peer = ours + 0x1000 + i * 0x10001;
            let s = t.lookup(ours, 53, peer, 4000).unwrap().sock;
            got[s as usize] += 1;
            assert_eq!(t.lookup(ours, 53, peer, 4000).unwrap().sock, s);
        }
        assert!(got[1..].iter().all(|&n| n > 50), "{got:?}");
        assert!(t.lookup(mapped(7), 53, mapped(9), 4000).is_none());
        // And 0.0.0.0 may join the port beside them without the option.
        assert!(!t.conflicts(mapped(0), 53, 0));
        assert!(t.conflicts(0, 53, 0));
    }
}
