//! sockd's socket table, kept in sockd's arena so that it outlives the
//! process: a restarted sockd finds every socket again (and waits for
//! its application to re-attach the socket's memory), and `strata ss`
//! reads it without asking sockd.
//!
//! ```text
//! 0     header: magic, format (VERSION), rows, rows handed out so far
//! 64    rows: one SockRec each
//! ```
//!
//! Rows are updated in place. A row is claimed by writing its `state`
//! last and released by clearing `state` first, so a reader (or a sockd
//! restarted after a crash mid-update) sees a row either unused or with
//! consistent identity fields; counters in it may lag.
//!
//! A socket's id is its row plus one in the low [`SLOT_BITS`] bits and the
//! row's generation, bumped at each use of the row, in the rest
//! ([`sock_id`]): never 0, which means "no socket" everywhere. Rows are
//! handed out from the front of the table, and only those handed out so
//! far (`used` in the header) are ever touched, scanned or read: the
//! arena's memory is touched only as sockets need it. Released rows wait
//! in a queue, oldest first, that sockd rebuilds with one scan of the
//! rows handed out when it opens the table; while fewer than
//! [`REUSE_QUEUE`] wait, sockd takes a new row instead, so a row comes
//! back only after thousands of others, and an id only after millions of
//! sockets.

use crate::raw::Region;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering::*};

/// "SOCK".
const MAGIC: u32 = 0x534f_434b;
/// The table's format: the header's second word. 1 (the word 0): 16-bit
/// rows, no header but the magic. 2: [`SLOT_BITS`]-bit rows, rows counted
/// and handed out from the front.
pub const VERSION: u32 = 2;
const HDR: usize = 64;
const H_MAGIC: usize = 0;
const H_VERSION: usize = 4;
const H_ROWS: usize = 8;
const H_USED: usize = 12;

/// Bits of a socket id that name its row.
pub const SLOT_BITS: u32 = 20;
/// Most rows a table has: row + 1 fills [`SLOT_BITS`] bits.
pub const MAX_ROWS: usize = (1 << SLOT_BITS) - 1;
/// Released rows that wait before one is used again (while the table
/// has rows never used).
pub const REUSE_QUEUE: usize = 4096;

/// Socket ids: `(row + 1) | generation << SLOT_BITS`.
pub mod sock_id {
    use super::SLOT_BITS;

    const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
    /// Generations wrap at this.
    pub const GENERATIONS: u32 = 1 << (32 - SLOT_BITS);

    /// The id of row `slot` (below [`super::MAX_ROWS`]) in generation
    /// `gen` (taken modulo [`GENERATIONS`]).
    pub const fn make(slot: usize, gen: u32) -> u32 {
        (slot as u32 + 1) | (gen % GENERATIONS) << SLOT_BITS
    }

    /// The row `id` names (`None` for 0 and other ids naming no row).
    pub const fn slot(id: u32) -> Option<usize> {
        match (id & SLOT_MASK).checked_sub(1) {
            Some(s) => Some(s as usize),
            None => None,
        }
    }

    /// `id`'s generation.
    pub const fn gen(id: u32) -> u32 {
        id >> SLOT_BITS
    }
}

/// Bytes of arena a table of `rows` rows needs.
pub const fn bytes_for(rows: usize) -> usize {
    HDR + rows * std::mem::size_of::<SockRec>()
}

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
    /// The socket id ([`sock_id`]: row + 1, generation above).
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

/// The table over sockd's arena bytes: sockd's ([`SockTable::open`]),
/// which writes it, or a reader's ([`SockTable::view`]).
pub struct SockTable {
    /// `'static` stands for the table's own lifetime (see `open`).
    r: Region<'static>,
    cap: usize,
    /// sockd's: the released rows, oldest first. `None` in a view, which
    /// never writes.
    free: Option<VecDeque<u32>>,
}

// SAFETY: the table is an address range; what is shared through it is
// atomics (`state`, the header) and volatile copies of plain records,
// with one writer (sockd) and readers that tolerate lag.
unsafe impl Send for SockTable {}

impl SockTable {
    /// sockd's table in `p..p+n`: the one found there, or a new empty
    /// one if there is none (no magic). Errs on a table of another format
    /// or size: a sockd of another build left it, and this one cannot
    /// read its sockets.
    ///
    /// # Safety
    /// `p..p+n` must be mapped, readable and writable, for the table's
    /// lifetime, aligned to 4 bytes, and used only as this table (sockd's
    /// arena), by one writer at a time.
    pub unsafe fn open(p: *mut u8, n: usize) -> Result<SockTable, String> {
        let cap = Self::rows_in(n);
        if n < HDR {
            return Err(format!("an arena of {n} bytes holds no socket table"));
        }
        // SAFETY: the caller's contract is `Region::new`'s, for as long
        // as the table lives.
        let r = unsafe { Region::new(p, n) };
        let word = |off| r.get::<AtomicU32>(off);
        if word(H_MAGIC).load(Acquire) != MAGIC {
            // New (or never finished): the header says no row was handed
            // out, so nothing else need be cleared; the magic goes last.
            word(H_VERSION).store(VERSION, Relaxed);
            word(H_ROWS).store(cap as u32, Relaxed);
            word(H_USED).store(0, Relaxed);
            word(H_MAGIC).store(MAGIC, Release);
        }
        let version = word(H_VERSION).load(Acquire);
        if version != VERSION {
            return Err(format!(
                "sockd's arena holds a socket table of format {} and this sockd reads \
                 format {VERSION}: its sockets cannot be kept (restart the instance)",
                version.max(1)
            ));
        }
        let rows = word(H_ROWS).load(Acquire) as usize;
        if rows != cap {
            return Err(format!(
                "sockd's arena holds a socket table of {rows} rows where {cap} fit"
            ));
        }
        let mut t = SockTable { r, cap, free: None };
        // The released rows, found by one scan of those handed out.
        let free = (0..t.used())
            .filter(|&i| t.state(i).load(Acquire) == sock_state::FREE)
            .map(|i| i as u32)
            .collect();
        t.free = Some(free);
        Ok(t)
    }

    /// A reader's view of the table in `p..p+n` (`strata ss`): empty if
    /// there is no table of this format there. It never writes.
    ///
    /// # Safety
    /// `p..p+n` must be mapped and readable for the view's lifetime, and
    /// aligned to 4 bytes.
    pub unsafe fn view(p: *mut u8, n: usize) -> SockTable {
        // SAFETY: the caller's contract is `Region::new`'s (the view only
        // reads).
        let r = unsafe { Region::new(p, n) };
        let found = n >= HDR
            && r.get::<AtomicU32>(H_MAGIC).load(Acquire) == MAGIC
            && r.get::<AtomicU32>(H_VERSION).load(Acquire) == VERSION;
        let cap = if found {
            (r.get::<AtomicU32>(H_ROWS).load(Acquire) as usize).min(Self::rows_in(n))
        } else {
            0
        };
        SockTable { r, cap, free: None }
    }

    /// Rows a table in `n` bytes has.
    fn rows_in(n: usize) -> usize {
        (n.saturating_sub(HDR) / std::mem::size_of::<SockRec>()).min(MAX_ROWS)
    }

    /// Rows.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Rows in use.
    pub fn len(&self) -> usize {
        match &self.free {
            Some(f) => self.used() - f.len(),
            None => self.iter().count(),
        }
    }

    /// Whether no row is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn used_word(&self) -> &AtomicU32 {
        self.r.get(H_USED)
    }

    /// Rows handed out so far (in use or released): the front of the
    /// table, the only part ever touched.
    pub fn used(&self) -> usize {
        if self.cap == 0 {
            return 0;
        }
        (self.used_word().load(Acquire) as usize).min(self.cap)
    }

    fn slot_off(&self, i: usize) -> usize {
        HDR + i * std::mem::size_of::<SockRec>()
    }

    fn state(&self, i: usize) -> &AtomicU32 {
        self.r
            .get(self.slot_off(i) + std::mem::offset_of!(SockRec, state))
    }

    /// A copy of row `i`, if it is in use.
    pub fn get(&self, i: usize) -> Option<SockRec> {
        if i >= self.used() {
            return None;
        }
        let r: SockRec = self.r.load(self.slot_off(i));
        (r.state != sock_state::FREE).then_some(r)
    }

    /// The row of socket `id`, if that socket exists (a released row, or
    /// one used again since, does not answer to it).
    pub fn find(&self, id: u32) -> Option<usize> {
        let i = sock_id::slot(id)?;
        let r = self.get(i)?;
        (r.id == id).then_some(i)
    }

    /// Every row in use.
    pub fn iter(&self) -> impl Iterator<Item = (usize, SockRec)> + '_ {
        (0..self.used()).filter_map(|i| self.get(i).map(|r| (i, r)))
    }

    /// Claims a row for `rec` (its `id` is assigned here and returned):
    /// a new one while fewer than [`REUSE_QUEUE`] released rows wait, else
    /// the one released longest ago. `None` when every row is in use (or
    /// in a view).
    pub fn insert(&mut self, mut rec: SockRec) -> Option<u32> {
        let used = self.used();
        let i = if self.free.as_ref()?.len() < REUSE_QUEUE && used < self.cap {
            // Counted before it is written: a sockd that dies in between
            // leaves a released row, which the next one finds.
            self.used_word().store(used as u32 + 1, Release);
            used
        } else {
            self.free.as_mut()?.pop_front()? as usize
        };
        let prev: SockRec = self.r.load(self.slot_off(i));
        rec.id = sock_id::make(i, sock_id::gen(prev.id).wrapping_add(1));
        let state = rec.state.max(sock_state::OPEN);
        rec.state = sock_state::FREE;
        self.r.store(self.slot_off(i), rec);
        self.state(i).store(state, Release);
        Some(rec.id)
    }

    /// Updates row `i` (state included, but [`remove`](Self::remove)
    /// alone releases it), if it is in use: a released row stays
    /// released.
    pub fn update(&self, i: usize, rec: SockRec) {
        let Some(now) = self.get(i).filter(|_| self.free.is_some()) else {
            return;
        };
        let state = if rec.state == sock_state::FREE {
            now.state
        } else {
            rec.state
        };
        let mut r = rec;
        r.state = self.state(i).load(Relaxed);
        self.r.store(self.slot_off(i), r);
        self.state(i).store(state, Release);
    }

    /// Releases row `i` (once: releasing a free row does nothing).
    pub fn remove(&mut self, i: usize) {
        if self.free.is_none() || i >= self.used() {
            return;
        }
        if self.state(i).swap(sock_state::FREE, AcqRel) != sock_state::FREE {
            if let Some(free) = self.free.as_mut() {
                free.push_back(i as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Zeroed memory for a table of `rows` rows (u64s, so 4-aligned).
    fn mem_for(rows: usize) -> Vec<u64> {
        vec![0u64; bytes_for(rows).div_ceil(8)]
    }

    /// sockd's table over `mem`.
    fn open(mem: &mut [u64]) -> SockTable {
        // SAFETY: the memory outlives the table (each test keeps it
        // until its end) and only tables use it, one writer at a time.
        unsafe { SockTable::open(mem.as_mut_ptr() as *mut u8, mem.len() * 8) }.unwrap()
    }

    fn rec(pid: u32) -> SockRec {
        SockRec {
            proto: 6,
            pid,
            ..Default::default()
        }
    }

    #[test]
    fn ids_encode_the_row_and_are_never_zero() {
        for slot in [0, 1, 65_534, 65_535, 65_536, MAX_ROWS - 1] {
            for gen in [0, 1, sock_id::GENERATIONS - 1, sock_id::GENERATIONS] {
                let id = sock_id::make(slot, gen);
                assert_ne!(id, 0);
                assert_eq!(sock_id::slot(id), Some(slot));
                assert_eq!(sock_id::gen(id), gen % sock_id::GENERATIONS);
            }
        }
        assert_eq!(sock_id::slot(0), None);
        assert_eq!(sock_id::slot(5 << SLOT_BITS), None);
    }

    #[test]
    fn insert_find_update_remove() {
        let mut mem = mem_for(300);
        let mut t = open(&mut mem);
        assert_eq!(t.capacity(), 300);
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
        t.update(i, r);
        assert!(t.get(i).is_none(), "a released row stays released");
        let id2 = t.insert(SockRec::default()).unwrap();
        assert_ne!(id, id2);
        assert!(t.find(id).is_none());
        assert_eq!(t.iter().count(), 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn more_than_65535_rows() {
        let rows = 70_000;
        let mut mem = mem_for(rows);
        let mut t = open(&mut mem);
        assert_eq!(t.capacity(), rows);
        let ids: Vec<u32> = (0..rows)
            .map(|k| t.insert(rec(k as u32)).unwrap())
            .collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), rows);
        for (k, &id) in ids.iter().enumerate() {
            let i = t.find(id).unwrap();
            assert_eq!(t.get(i).unwrap().pid, k as u32);
        }
        assert!(ids.iter().any(|&id| sock_id::slot(id).unwrap() > 65_535));
        assert_eq!(t.insert(rec(0)), None, "full");
        assert_eq!(t.len(), rows);
        let last = t.find(ids[rows - 1]).unwrap();
        t.remove(last);
        let again = t.insert(rec(7)).unwrap();
        assert_eq!(t.find(again), Some(last));
        assert_ne!(again, ids[rows - 1]);
        assert!(t.find(ids[rows - 1]).is_none());
        assert_eq!(t.iter().count(), rows);
    }

    #[test]
    fn a_stale_generation_is_refused() {
        let mut mem = mem_for(1);
        let mut t = open(&mut mem);
        let old = t.insert(rec(1)).unwrap();
        t.remove(t.find(old).unwrap());
        let new = t.insert(rec(2)).unwrap();
        assert_eq!(sock_id::slot(old), sock_id::slot(new), "the one row again");
        assert_eq!(sock_id::gen(new), sock_id::gen(old) + 1);
        assert_eq!(t.find(old), None);
        assert_eq!(t.find(new), Some(0));
        // Removing twice releases once.
        t.remove(0);
        t.remove(0);
        assert!(t.insert(rec(3)).is_some());
        assert_eq!(t.insert(rec(4)), None);
    }

    #[test]
    fn ids_stay_unique_across_reuse() {
        // A socket opened and closed over and over, beside a few that
        // stay: no id comes back, in a large table or a small full one.
        for rows in [20_000, 64] {
            let mut mem = mem_for(rows);
            let mut t = open(&mut mem);
            let mut seen = HashSet::new();
            for k in 0..10 {
                assert!(seen.insert(t.insert(rec(k)).unwrap()));
            }
            for k in 0..100_000 {
                let id = t.insert(rec(k)).unwrap();
                assert!(seen.insert(id), "id {id:#x} again after {k} sockets");
                t.remove(t.find(id).unwrap());
            }
            assert_eq!(t.len(), 10);
        }
    }

    #[test]
    fn rows_are_reused_oldest_first_once_enough_wait() {
        let mut mem = mem_for(2 * REUSE_QUEUE + 10);
        let mut t = open(&mut mem);
        let first = t.insert(rec(0)).unwrap();
        t.remove(0);
        // Until REUSE_QUEUE rows wait, new rows are taken.
        for k in 1..REUSE_QUEUE {
            let id = t.insert(rec(0)).unwrap();
            assert_eq!(sock_id::slot(id), Some(k));
            t.remove(k);
        }
        let id = t.insert(rec(0)).unwrap();
        assert_eq!(sock_id::slot(id), Some(0), "the oldest released row");
        assert_eq!(sock_id::gen(id), sock_id::gen(first) + 1);
    }

    #[test]
    fn the_free_rows_survive_reopening_the_table() {
        let rows = 8;
        let mut mem = mem_for(rows);
        let p = mem.as_mut_ptr() as *mut u8;
        let n = mem.len() * 8;
        let (kept, gone) = {
            let mut t = open(&mut mem);
            let ids: Vec<u32> = (0..rows as u32)
                .map(|k| t.insert(rec(k)).unwrap())
                .collect();
            for &id in &ids[..3] {
                t.remove(t.find(id).unwrap());
            }
            (ids[3..].to_vec(), ids[..3].to_vec())
        };
        // SAFETY: `mem` outlives the table, and the previous one is gone.
        let mut t = unsafe { SockTable::open(p, n) }.unwrap();
        assert_eq!(t.len(), rows - 3);
        for &id in &kept {
            assert!(t.find(id).is_some());
        }
        for &id in &gone {
            assert!(t.find(id).is_none());
        }
        // The three released rows, and no other, are free.
        let again: Vec<u32> = (0..3).map(|_| t.insert(rec(9)).unwrap()).collect();
        assert_eq!(t.insert(rec(9)), None);
        let mut rows_again: Vec<_> = again.iter().map(|&id| sock_id::slot(id)).collect();
        rows_again.sort();
        let mut rows_gone: Vec<_> = gone.iter().map(|&id| sock_id::slot(id)).collect();
        rows_gone.sort();
        assert_eq!(rows_again, rows_gone);
        for id in again {
            assert!(!gone.contains(&id), "a new generation");
        }
        for &id in &kept {
            assert!(t.find(id).is_some());
        }
    }

    #[test]
    fn a_row_claimed_by_a_sockd_that_died_is_free_again() {
        let mut mem = mem_for(4);
        let p = mem.as_mut_ptr() as *mut u8;
        let n = mem.len() * 8;
        let id = open(&mut mem).insert(rec(1)).unwrap();
        // As if a sockd died after counting row 1 and before claiming it.
        // SAFETY: as in `open`.
        let r = unsafe { Region::new(p, n) };
        r.get::<AtomicU32>(H_USED).store(2, Release);
        // SAFETY: `mem` outlives the table, the only user.
        let mut t = unsafe { SockTable::open(p, n) }.unwrap();
        assert_eq!(t.len(), 1);
        assert!(t.find(id).is_some());
        let ids: Vec<u32> = (0..3).map(|_| t.insert(rec(2)).unwrap()).collect();
        assert_eq!(t.insert(rec(3)), None);
        assert!(ids.iter().all(|&i| sock_id::slot(i) != Some(0)));
    }

    #[test]
    fn a_table_of_another_format_is_refused_and_shows_empty() {
        let mut mem = mem_for(16);
        let p = mem.as_mut_ptr() as *mut u8;
        let n = mem.len() * 8;
        // What a sockd of format 1 left: its magic, no version.
        // SAFETY: as in `open`.
        let r = unsafe { Region::new(p, n) };
        r.get::<AtomicU32>(H_MAGIC).store(MAGIC, Release);
        // SAFETY: `mem` outlives both tables.
        let e = unsafe { SockTable::open(p, n) }.err().unwrap();
        assert!(e.contains("format 1"), "{e}");
        // SAFETY: as above.
        let v = unsafe { SockTable::view(p, n) };
        assert_eq!((v.capacity(), v.iter().count()), (0, 0));
        // SAFETY: as above.
        assert!(unsafe { SockTable::open(p, 10) }.is_err());
    }

    #[test]
    fn a_view_reads_and_never_writes() {
        let mut mem = mem_for(16);
        let p = mem.as_mut_ptr() as *mut u8;
        let n = mem.len() * 8;
        // SAFETY: `mem` outlives the view; nothing writes meanwhile.
        let mut v = unsafe { SockTable::view(p, n) };
        assert_eq!(v.insert(rec(1)), None);
        assert!(mem.iter().all(|&w| w == 0), "an absent table stays absent");
        let id = open(&mut mem).insert(rec(1)).unwrap();
        // SAFETY: as above.
        let mut v = unsafe { SockTable::view(p, n) };
        assert_eq!(v.capacity(), 16);
        let i = v.find(id).unwrap();
        v.remove(i);
        assert_eq!(v.insert(rec(2)), None);
        assert_eq!(v.iter().map(|(_, r)| r.id).collect::<Vec<_>>(), [id]);
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
}
