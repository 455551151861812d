//! The binding table: every bound socket, indexed by socket id and by local
//! port, with Linux's conflict rule for binds and its scoring for
//! demultiplexing.
//!
//! Storage is a slab allocated once at the configured capacity; each port
//! has a chain through the slab, newest binding first (Linux adds to the
//! head of its hash chains, so among equally good matches the socket bound
//! last receives). Lookups walk one port's chain and never allocate.

use std::collections::HashMap;

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
    /// Every defined bit.
    pub const ALL: u32 = REUSEADDR | ADDR_LOCK | PORT_LOCK | REUSEPORT;
}

/// One bound socket: what udpd keeps per socket, and the record it stores
/// in its fabric arena (plain integers, host byte order), so a restarted
/// udpd keeps every binding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// sockd's socket id.
    pub sock: u32,
    /// Local address (0: any).
    pub local_addr: u32,
    /// Connected peer's address (0: not connected).
    pub remote_addr: u32,
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

    /// Linux's `compute_score` for a datagram from `src:sport` to
    /// `dst:<our port>`: `None` when the socket does not match, else higher
    /// for a more specific match (a bound address, a connected peer).
    pub(crate) fn score(&self, dst: u32, src: u32, sport: u16) -> Option<u8> {
        let mut s = 2;
        if self.local_addr != 0 {
            if self.local_addr != dst {
                return None;
            }
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

    /// Whether binding `addr:port` (with SO_REUSEADDR if `reuse`) conflicts
    /// with an existing binding: Linux's rule for UDP is that two bindings
    /// of one port conflict when their addresses overlap (equal, or either
    /// is any) unless both set SO_REUSEADDR.
    pub fn conflicts(&self, addr: u32, port: u16, reuse: u32) -> bool {
        self.on_port(port).any(|b| {
            let overlap = b.local_addr == addr || b.local_addr == 0 || addr == 0;
            let both = |f: u32| reuse & f != 0 && b.flags & f != 0;
            overlap && !both(bflags::REUSEADDR) && !both(bflags::REUSEPORT)
        })
    }

    /// The best match for a datagram from `src:sport` to `dst:dport`
    /// (highest score; among equals the newest binding, unless it is one
    /// of a SO_REUSEPORT group: then the group's member the peer picks).
    pub fn lookup(&self, dst: u32, dport: u16, src: u32, sport: u16) -> Option<&Binding> {
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
        let pick = strata_ipc::l4::reuseport_pick(src, sport, group);
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
            local_addr: addr,
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
        assert!(!t.conflicts(0, 53, rp), "both share");
        assert!(
            t.conflicts(0, 53, 0),
            "without the option the port is taken"
        );
        assert!(t.conflicts(0, 53, bflags::REUSEADDR));
        t.insert(b(2, 0, 53, rp), false).unwrap();
        t.insert(b(3, 0, 53, rp), false).unwrap();
        let mut got = [0; 4];
        for sport in 1000..1300 {
            let s = t.lookup(7, 53, 9, sport).unwrap().sock;
            got[s as usize] += 1;
            // A flow always picks the same one.
            assert_eq!(t.lookup(7, 53, 9, sport).unwrap().sock, s);
        }
        assert!(got[1..].iter().all(|&n| n > 50), "{got:?}");
        // A more specific binding still wins over the group.
    }
}
