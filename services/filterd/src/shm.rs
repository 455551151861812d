//! filterd's arena, shared with the launcher: the rule set the launcher
//! publishes, the per-rule counters, requests the launcher makes of
//! filterd (flush the connection table), and the connection-tracking
//! table itself.
//!
//! ```text
//! 0                header: magic, rule-set generation and slot, flush requests
//! 4 KiB            rule counters: COUNTER_SLOTS × (packets, bytes), 1 MiB
//! 1 MiB + 4 KiB    rule set slot 0 (JSON of `Tables`), RULES_MAX bytes
//!                  rule set slot 1
//! ...              the conntrack table (`Conntrack::from_raw`)
//! ```
//!
//! A rule set is published into the slot that is not current, under that
//! slot's sequence number (odd while being written), and only then made
//! current: filterd, which copies a slot out and checks the sequence did
//! not move, never reads half a rule set, and swaps whole compiled sets
//! between packets. Only the bytes of a set are written and copied: the
//! rest of a slot's pages stay untouched.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

/// Rules that can have counters (slots of [`crate::tables::Tables`]): the
/// most rules the tables hold together.
pub const COUNTER_SLOTS: usize = 65_536;
/// Largest rule set, as JSON: [`COUNTER_SLOTS`] rules of 256 bytes. A
/// rule such as `-A INPUT -p tcp --dport 20000 -j DROP` takes some 115
/// bytes, one with interfaces, both addresses, both ports, a state match
/// and a LOG prefix some 420.
pub const RULES_MAX: usize = 16 << 20;

const MAGIC: u64 = 0x5354_5246_494c_5432;
const HDR: usize = 4096;
const COUNTERS: usize = HDR;
const SLOTS: usize = COUNTERS + COUNTER_SLOTS * 2 * 8;
const CT: usize = SLOTS + 2 * RULES_MAX;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Bumped after each publication.
    gen: AtomicU64,
    /// The slot holding the current rule set.
    current: AtomicU32,
    _pad: u32,
    /// Per slot: sequence number (odd while written) and length.
    seq: [AtomicU64; 2],
    len: [AtomicU64; 2],
    /// Conntrack flushes asked for and done.
    flush_req: AtomicU64,
    flush_done: AtomicU64,
    /// The generation filterd has in force: loaded, and filterd in the
    /// path of every packet unless the set leaves them all alone.
    in_force: AtomicU64,
}

/// filterd's arena.
#[derive(Clone, Copy)]
pub struct Shm {
    p: *mut u8,
    len: usize,
}

// SAFETY: everything shared is reached through atomics, or copied out
// under a sequence check.
unsafe impl Send for Shm {}

/// Bytes of filterd's arena with room for `conntrack_entries` tracked
/// connections (a multiple of 64, as the fabric wants: the arena after it
/// starts where it ends).
pub fn arena_bytes(conntrack_entries: usize) -> usize {
    (CT + crate::conntrack::Conntrack::bytes_for(conntrack_entries)).next_multiple_of(64)
}

impl Shm {
    /// The layout over `p..p+len`, initialised if it was not. `None` when
    /// the arena is too small or misaligned.
    ///
    /// # Safety
    /// `p..p+len` must stay mapped while the value (or a copy) is used.
    #[allow(unsafe_code)]
    pub unsafe fn new(p: *mut u8, len: usize) -> Option<Shm> {
        if p.is_null() || !(p as usize).is_multiple_of(64) || len < CT + 4096 {
            return None;
        }
        let s = Shm { p, len };
        let h = s.hdr();
        if h.magic.load(Acquire) != MAGIC {
            h.gen.store(0, Relaxed);
            h.current.store(0, Relaxed);
            for i in 0..2 {
                h.seq[i].store(0, Relaxed);
                h.len[i].store(0, Relaxed);
            }
            h.flush_req.store(0, Relaxed);
            h.flush_done.store(0, Relaxed);
            for c in s.counters() {
                c.store(0, Relaxed);
            }
            h.magic.store(MAGIC, Release);
        }
        Some(s)
    }

    #[allow(unsafe_code)]
    fn hdr(&self) -> &Header {
        // SAFETY: aligned, inside the region, atomics only.
        unsafe { &*(self.p as *const Header) }
    }

    /// The rule counters: packets then bytes for each slot.
    #[allow(unsafe_code)]
    pub fn counters(&self) -> &[AtomicU64] {
        // SAFETY: aligned, inside the region, atomics only.
        unsafe {
            std::slice::from_raw_parts(self.p.add(COUNTERS) as *const AtomicU64, COUNTER_SLOTS * 2)
        }
    }

    /// Zeroes the counters of `slots` (rules removed or replaced).
    pub fn reset_counters(&self, slots: &[u32]) {
        let c = self.counters();
        for &s in slots {
            let i = s as usize * 2;
            if i + 1 < c.len() {
                c[i].store(0, Relaxed);
                c[i + 1].store(0, Relaxed);
            }
        }
    }

    /// The conntrack table's bytes.
    #[allow(unsafe_code)]
    pub fn conntrack_region(&self) -> (*mut u8, usize) {
        // SAFETY: `new` checked the region is larger than CT.
        (unsafe { self.p.add(CT) }, self.len - CT)
    }

    /// Generation of the published rule set (0: none yet).
    pub fn generation(&self) -> u64 {
        self.hdr().gen.load(Acquire)
    }

    /// Publishes a rule set (the launcher). Err when it is too large.
    #[allow(unsafe_code)]
    pub fn publish(&self, json: &[u8]) -> Result<(), String> {
        if json.len() > RULES_MAX {
            return Err(format!(
                "the rule set is too large: it takes {} bytes of JSON, filterd's arena holds \
                 {RULES_MAX} ({COUNTER_SLOTS} rules of {} bytes)",
                json.len(),
                RULES_MAX / COUNTER_SLOTS
            ));
        }
        let h = self.hdr();
        let slot = 1 - (h.current.load(Acquire) as usize & 1);
        h.seq[slot].fetch_add(1, AcqRel);
        // SAFETY: the slot is inside the region; readers detect the
        // overlap through the sequence number.
        unsafe {
            std::ptr::copy_nonoverlapping(
                json.as_ptr(),
                self.p.add(SLOTS + slot * RULES_MAX),
                json.len(),
            );
        }
        h.len[slot].store(json.len() as u64, Release);
        h.seq[slot].fetch_add(1, AcqRel);
        h.current.store(slot as u32, Release);
        h.gen.fetch_add(1, AcqRel);
        Ok(())
    }

    /// The current rule set's bytes (filterd), if a whole one could be
    /// read; `None` while one is being written (try again later).
    #[allow(unsafe_code)]
    pub fn read_rules(&self) -> Option<(u64, Vec<u8>)> {
        let h = self.hdr();
        let gen = h.gen.load(Acquire);
        let slot = h.current.load(Acquire) as usize & 1;
        let s1 = h.seq[slot].load(Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        let n = (h.len[slot].load(Acquire) as usize).min(RULES_MAX);
        let mut v = vec![0u8; n];
        // SAFETY: inside the region; a concurrent writer is detected below.
        unsafe {
            std::ptr::copy_nonoverlapping(self.p.add(SLOTS + slot * RULES_MAX), v.as_mut_ptr(), n);
        }
        std::sync::atomic::fence(Acquire);
        (h.seq[slot].load(Acquire) == s1 && h.gen.load(Acquire) == gen).then_some((gen, v))
    }

    /// The generation filterd has in force ([`Shm::set_in_force`]).
    pub fn in_force(&self) -> u64 {
        self.hdr().in_force.load(Acquire)
    }

    /// filterd: generation `gen` is in force.
    pub fn set_in_force(&self, gen: u64) {
        self.hdr().in_force.store(gen, Release);
    }

    /// Asks filterd to flush the connection table; returns the request
    /// number to wait for with [`flushed`](Self::flushed).
    pub fn request_flush(&self) -> u64 {
        self.hdr().flush_req.fetch_add(1, AcqRel) + 1
    }

    /// Whether flush request `n` was carried out.
    pub fn flushed(&self, n: u64) -> bool {
        self.hdr().flush_done.load(Acquire) >= n
    }

    /// A flush filterd should carry out now, if any (marking it done is
    /// [`flush_done`](Self::flush_done)).
    pub fn flush_pending(&self) -> Option<u64> {
        let h = self.hdr();
        let r = h.flush_req.load(Acquire);
        (r > h.flush_done.load(Acquire)).then_some(r)
    }

    /// Marks flush requests up to `n` done.
    pub fn flush_done(&self, n: u64) {
        self.hdr().flush_done.store(n, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(64))]
    struct Block([u8; 64]);

    fn region() -> (Vec<Block>, usize) {
        let len = CT + 64 * 1024;
        let v: Vec<Block> = (0..len / 64).map(|_| Block([0; 64])).collect();
        (v, len)
    }

    #[test]
    fn a_published_rule_set_is_read_whole_and_counters_reset() {
        let (mut mem, len) = region();
        // SAFETY: the vector outlives both views and is used only through
        // them.
        let s = unsafe { Shm::new(mem.as_mut_ptr() as *mut u8, len) }.unwrap();
        assert_eq!(s.generation(), 0);
        s.publish(b"first").unwrap();
        s.publish(b"second set").unwrap();
        let (g, v) = s.read_rules().unwrap();
        assert_eq!((g, v.as_slice()), (2, &b"second set"[..]));
        s.counters()[6].store(5, Relaxed);
        s.reset_counters(&[3, 99_999]);
        assert_eq!(s.counters()[6].load(Relaxed), 0);
        assert!(s.publish(&vec![b' '; RULES_MAX + 1]).is_err());
        // Mapping it again keeps what is there.
        // SAFETY: as above.
        let s2 = unsafe { Shm::new(mem.as_mut_ptr() as *mut u8, len) }.unwrap();
        assert_eq!(s2.generation(), 2);
        let n = s2.request_flush();
        assert_eq!(s.flush_pending(), Some(n));
        s.flush_done(n);
        assert!(s2.flushed(n));
        assert_eq!(s.flush_pending(), None);
    }

    #[test]
    fn an_arena_sized_for_n_entries_holds_n() {
        for n in [1024, 1025, 131_072, 200_001] {
            let len = arena_bytes(n);
            assert!(len.is_multiple_of(64));
            let mut mem: Vec<Block> = (0..len / 64).map(|_| Block([0; 64])).collect();
            // SAFETY: the vector outlives the views and is used only
            // through them.
            let s = unsafe { Shm::new(mem.as_mut_ptr() as *mut u8, len) }.unwrap();
            let (p, cn) = s.conntrack_region();
            // SAFETY: as above; the table is the region's only user.
            let (ct, fresh) =
                unsafe { crate::conntrack::Conntrack::from_raw(p, cn, [1, 2], 0) }.unwrap();
            assert!(fresh);
            assert_eq!(ct.capacity(), n);
        }
    }
}
