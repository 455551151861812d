//! sockd's socket table, kept in sockd's arena so that it outlives the
//! process: a restarted sockd finds every socket again (and waits for
//! its application to re-attach the socket's memory), and `strata ss`
//! reads it without asking sockd.
//!
//! Slots are updated in place. A slot is claimed by writing its `state`
//! last and released by clearing `state` first, so a reader (or a sockd
//! restarted after a crash mid-update) sees a slot either unused or with
//! consistent identity fields; counters in it may lag.

use crate::raw::Region;
use std::sync::atomic::{AtomicU32, Ordering::*};

/// "SOCKTBL1".
const MAGIC: u32 = 0x534f_434b;
const HDR: usize = 64;

/// Values of [`SockRec::state`].
pub mod sock_state {
    /// Slot unused.
    pub const FREE: u32 = 0;
    /// Socket exists, not bound.
    pub const OPEN: u32 = 1;
    /// Bound to a local address.
    pub const BOUND: u32 = 2;
    /// Connected (UDP: a default peer).
    pub const CONNECTED: u32 = 3;
    /// Listening (TCP).
    pub const LISTEN: u32 = 4;

    /// Name as `ss` prints it.
    pub fn name(s: u32) -> &'static str {
        match s {
            OPEN => "UNCONN",
            BOUND => "UNCONN",
            CONNECTED => "ESTAB",
            LISTEN => "LISTEN",
            _ => "?",
        }
    }
}

/// One socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRec {
    /// [`sock_state`]; written last when claiming, first when releasing.
    pub state: u32,
    /// The socket id (slot + 1 + generation << 16).
    pub id: u32,
    /// 17 UDP, 6 TCP.
    pub proto: u32,
    /// Owning process (SO_PEERCRED of the session that created it).
    pub pid: u32,
    /// Owning user.
    pub uid: u32,
    /// Local address: 16 bytes in network order, IPv4 ones mapped
    /// ([`crate::addrs::mapped`]); see [`SockRec::local`].
    pub local_ip: [u8; 16],
    /// Peer address, likewise; `::ffff:0.0.0.0` or `::` if none.
    pub peer_ip: [u8; 16],
    /// Local port.
    pub local_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// Bytes waiting for the application (last seen by sockd).
    pub recv_q: u32,
    /// Bytes waiting to be sent (last seen by sockd).
    pub send_q: u32,
    /// Datagrams dropped because the application fell behind.
    pub drops: u32,
    /// Socket options kept with the record ([`rec_flags`]).
    pub flags: u32,
    /// tcpd's id of the connection this socket was accepted for, low and
    /// high halves (see [`SockRec::accepted_conn`]).
    pub accepted: [u32; 2],
    /// 1 while [`accepted`](SockRec::accepted) holds an id.
    pub accepted_set: u32,
    /// The owning process's start time (low 32 bits of `starttime` in
    /// `/proc/PID/stat`, clock ticks since boot; 0: unknown). With the
    /// pid it names the process, which a reused pid does not.
    pub start_time: u32,
}

/// Bits of [`SockRec::flags`].
pub mod rec_flags {
    /// SO_REUSEADDR.
    pub const REUSEADDR: u32 = 1;
    /// TCP: the application shut its read side (kept so that a restarted
    /// sockd tells tcpd again).
    pub const SHUT_RD: u32 = 2;
    /// TCP: the application shut its write side; tcpd gets SHUTDOWN once
    /// the send ring has drained (kept so that a sockd that dies before
    /// then does not lose it).
    pub const SHUT_WR: u32 = 4;
    /// TCP: SO_LINGER with a zero timeout: close resets the connection.
    pub const LINGER_ABORT: u32 = 8;
    /// SO_REUSEPORT.
    pub const REUSEPORT: u32 = 16;
    /// IPV6_V6ONLY: an IPv6 socket that takes no IPv4 (kept so that a
    /// restarted sockd binds and connects as the application asked).
    pub const V6ONLY: u32 = 32;
}

impl SockRec {
    /// The local address as a 128-bit value (IPv4 mapped).
    pub fn local(&self) -> u128 {
        u128::from_be_bytes(self.local_ip)
    }

    /// The peer's address as a 128-bit value (IPv4 mapped).
    pub fn peer(&self) -> u128 {
        u128::from_be_bytes(self.peer_ip)
    }

    /// Sets the local address (a 128-bit value, IPv4 mapped).
    pub fn set_local(&mut self, a: u128) {
        self.local_ip = a.to_be_bytes();
    }

    /// Sets the peer's address (a 128-bit value, IPv4 mapped).
    pub fn set_peer(&mut self, a: u128) {
        self.peer_ip = a.to_be_bytes();
    }

    /// Whether the [`rec_flags`] bit `flag` is set.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Sets or clears the [`rec_flags`] bit `flag`.
    pub fn set_flag(&mut self, flag: u32, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Whether SO_REUSEADDR is set.
    pub fn reuse_addr(&self) -> bool {
        self.has(rec_flags::REUSEADDR)
    }

    /// tcpd's id of the connection this socket was accepted for, while
    /// sockd is not yet sure tcpd attached it: a restarted sockd sends
    /// the ATTACH again.
    pub fn accepted_conn(&self) -> Option<u64> {
        (self.accepted_set != 0)
            .then(|| u64::from(self.accepted[0]) | u64::from(self.accepted[1]) << 32)
    }

    /// Sets or clears [`accepted_conn`](SockRec::accepted_conn).
    pub fn set_accepted_conn(&mut self, conn: Option<u64>) {
        let v = conn.unwrap_or(0);
        self.accepted = [v as u32, (v >> 32) as u32];
        self.accepted_set = u32::from(conn.is_some());
    }
}

/// The table over a layer's arena bytes.
pub struct SockTable {
    /// `'static` stands for the table's own lifetime (see `new`).
    r: Region<'static>,
    cap: usize,
}

// SAFETY: the table is an address range; what is shared through it is
// atomics (`state`) and volatile copies of plain records, with one writer
// (sockd) and readers that tolerate lag.
unsafe impl Send for SockTable {}

impl SockTable {
    /// # Safety
    /// `p..p+n` must be mapped, readable and writable, for the table's
    /// lifetime, aligned to 4 bytes, and used only as this table (sockd's
    /// arena).
    pub unsafe fn new(p: *mut u8, n: usize) -> SockTable {
        // SAFETY: the caller's contract is `Region::new`'s, for as long
        // as the table lives.
        let r = unsafe { Region::new(p, n) };
        let cap = (n.saturating_sub(HDR) / std::mem::size_of::<SockRec>()).min(65535);
        let t = SockTable { r, cap };
        let m = r.get::<AtomicU32>(0);
        if m.load(Acquire) != MAGIC {
            r.fill(0, n, 0);
            m.store(MAGIC, Release);
        }
        t
    }

    /// Slots.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn slot_off(&self, i: usize) -> usize {
        HDR + i * std::mem::size_of::<SockRec>()
    }

    fn state(&self, i: usize) -> &AtomicU32 {
        self.r
            .get(self.slot_off(i) + std::mem::offset_of!(SockRec, state))
    }

    /// A copy of slot `i`.
    pub fn get(&self, i: usize) -> Option<SockRec> {
        if i >= self.cap {
            return None;
        }
        let r: SockRec = self.r.load(self.slot_off(i));
        (r.state != sock_state::FREE).then_some(r)
    }

    /// The slot of socket `id`, if that socket exists.
    pub fn find(&self, id: u32) -> Option<usize> {
        let i = (id & 0xffff).checked_sub(1)? as usize;
        let r = self.get(i)?;
        (r.id == id).then_some(i)
    }

    /// Every used slot.
    pub fn iter(&self) -> impl Iterator<Item = (usize, SockRec)> + '_ {
        (0..self.cap).filter_map(|i| self.get(i).map(|r| (i, r)))
    }

    /// Claims a free slot for `rec` (its `id` is assigned here and
    /// returned).
    pub fn insert(&self, mut rec: SockRec) -> Option<u32> {
        let i = (0..self.cap).find(|&i| self.state(i).load(Acquire) == sock_state::FREE)?;
        let prev: SockRec = self.r.load(self.slot_off(i));
        let gen = (prev.id >> 16).wrapping_add(1) & 0x7fff;
        rec.id = (i as u32 + 1) | (gen << 16);
        let state = rec.state.max(sock_state::OPEN);
        rec.state = sock_state::FREE;
        self.r.store(self.slot_off(i), rec);
        self.state(i).store(state, Release);
        Some(rec.id)
    }

    /// Updates slot `i` (state included).
    pub fn update(&self, i: usize, rec: SockRec) {
        if i < self.cap {
            let state = rec.state;
            let mut r = rec;
            r.state = self.state(i).load(Relaxed);
            self.r.store(self.slot_off(i), r);
            self.state(i).store(state, Release);
        }
    }

    /// Releases slot `i`.
    pub fn remove(&self, i: usize) {
        if i < self.cap {
            self.state(i).store(sock_state::FREE, Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_update_remove() {
        let mut mem = vec![0u64; 4096];
        // SAFETY: the vector outlives the table and is used only by it.
        let t = unsafe { SockTable::new(mem.as_mut_ptr() as *mut u8, 32768) };
        let id = t
            .insert(SockRec {
                proto: 17,
                pid: 5,
                ..Default::default()
            })
            .unwrap();
        let i = t.find(id).unwrap();
        let mut r = t.get(i).unwrap();
        assert_eq!((r.proto, r.pid, r.state), (17, 5, sock_state::OPEN));
        r.local_port = 53;
        r.state = sock_state::BOUND;
        t.update(i, r);
        assert_eq!(t.get(i).unwrap().local_port, 53);
        t.remove(i);
        assert!(t.find(id).is_none());
        let id2 = t.insert(SockRec::default()).unwrap();
        assert_ne!(id, id2, "a reused slot gets a new generation");
        assert!(t.find(id).is_none());
        assert_eq!(t.iter().count(), 1);
    }

    #[test]
    fn an_accepted_connection_id_round_trips_including_zero() {
        let mut r = SockRec::default();
        assert_eq!(r.accepted_conn(), None);
        for c in [0, 7, u64::from(u32::MAX) + 3, u64::MAX] {
            r.set_accepted_conn(Some(c));
            assert_eq!(r.accepted_conn(), Some(c));
        }
        r.set_accepted_conn(None);
        assert_eq!(r, SockRec::default());
    }

    #[test]
    fn table_survives_a_second_mapping() {
        let mut mem = vec![0u64; 4096];
        let p = mem.as_mut_ptr() as *mut u8;
        // SAFETY: the vector outlives both tables, which are the only
        // users of it and are used one after the other.
        let id = unsafe { SockTable::new(p, 32768) }
            .insert(SockRec::default())
            .unwrap();
        // SAFETY: as above.
        let t = unsafe { SockTable::new(p, 32768) };
        assert!(t.find(id).is_some());
    }
}
