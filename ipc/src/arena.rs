//! State arenas: per-layer bytes in the fabric that outlive the layer's
//! process, holding index-based plain data (docs/DESIGN.md, "Fabric").

use crate::raw::{Region, Shared};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering::*};

/// Plain data that may live in shared memory: `Copy`, no pointers, and
/// valid for every bit pattern (a crashed writer or a hostile peer may
/// leave any bytes behind).
///
/// # Safety
/// Implement only for `#[repr(C)]` types made of integers and arrays of
/// integers, with no padding-sensitive invariants.
pub unsafe trait Pod: Copy + 'static {}

#[repr(C)]
struct RecHdr {
    /// Which copy (0 or 1) is current.
    current: AtomicU32,
    /// Record counts of the two copies.
    len: [AtomicU32; 2],
    magic: AtomicU32,
}

// SAFETY: repr(C), atomics only.
unsafe impl Shared for RecHdr {}

const REC_MAGIC: u32 = 0x5245_4331;
const HDR: usize = 64;

/// A table of records stored twice: a writer fills the copy that is not
/// current and then flips the index, so a writer killed half-way leaves
/// the previous table intact and a restarted layer always loads a whole
/// one.
pub struct Records<'a, T: Pod> {
    r: Region<'a>,
    cap: usize,
    _m: PhantomData<&'a T>,
}

impl<'a, T: Pod> Records<'a, T> {
    /// # Safety
    /// `p..p+n` must be mapped, readable and writable, for `'a`, aligned
    /// for `T`, and used only as this table.
    pub unsafe fn new(p: *mut u8, n: usize) -> Self {
        // SAFETY: the caller's contract is `Region::new`'s.
        Records::over(unsafe { Region::new(p, n) })
    }

    /// The table over an arena.
    pub(crate) fn over(r: Region<'a>) -> Self {
        let sz = std::mem::size_of::<T>().max(1);
        let cap = r.len().saturating_sub(HDR) / 2 / sz;
        Records {
            r,
            cap,
            _m: PhantomData,
        }
    }

    /// The header; `None` when the arena cannot even hold it (an arena
    /// of zero bytes): such a table stays empty.
    fn hdr(&self) -> Option<&RecHdr> {
        (self.r.len() >= HDR).then(|| self.r.get(0))
    }

    /// Byte offset of record `i` of copy `which`.
    fn rec_off(&self, which: usize, i: usize) -> usize {
        let sz = std::mem::size_of::<T>();
        let a = std::mem::align_of::<T>().max(1);
        let start = HDR.div_ceil(a) * a;
        start + (which * self.cap + i) * sz
    }

    /// Records the table can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The current table (empty if never stored).
    pub fn load(&self) -> Vec<T> {
        let Some(h) = self.hdr() else {
            return Vec::new();
        };
        if h.magic.load(Acquire) != REC_MAGIC {
            return Vec::new();
        }
        let cur = (h.current.load(Acquire) & 1) as usize;
        let n = (h.len[cur].load(Acquire) as usize).min(self.cap);
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            v.push(self.r.load(self.rec_off(cur, i)));
        }
        v
    }

    /// Replaces the table with `recs` (truncated to the capacity), written
    /// straight into the spare copy. Returns how many were stored.
    pub fn store(&self, recs: impl IntoIterator<Item = T>) -> usize {
        let Some(h) = self.hdr() else {
            return 0;
        };
        let cur = if h.magic.load(Acquire) == REC_MAGIC {
            (h.current.load(Acquire) & 1) as usize
        } else {
            1
        };
        let next = cur ^ 1;
        let mut n = 0;
        for r in recs.into_iter().take(self.cap) {
            self.r.store(self.rec_off(next, n), r);
            n += 1;
        }
        h.len[next].store(n as u32, Release);
        h.magic.store(REC_MAGIC, Release);
        h.current.store(next as u32, Release);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_flips_and_load_sees_latest() {
        let mut mem = vec![0u64; 1024];
        // SAFETY: the vector outlives the table and is used only by it.
        let r: Records<u64> = unsafe { Records::new(mem.as_mut_ptr() as *mut u8, 8192) };
        assert!(r.load().is_empty());
        r.store([1, 2, 3]);
        assert_eq!(r.load(), vec![1, 2, 3]);
        r.store([4]);
        assert_eq!(r.load(), vec![4]);
        let cap = r.capacity();
        let big: Vec<u64> = (0..cap as u64 + 10).collect();
        assert_eq!(r.store(big.iter().copied()), cap);
        assert_eq!(r.load().len(), cap);
    }

    #[test]
    fn half_written_copy_is_not_seen() {
        let mut mem = vec![0u64; 1024];
        // SAFETY: the vector outlives the table and is used only by it.
        let r: Records<u64> = unsafe { Records::new(mem.as_mut_ptr() as *mut u8, 8192) };
        r.store([7, 8]);
        // A writer that dies before the flip has written only the other copy.
        let cur = r.hdr().unwrap().current.load(Relaxed) as usize;
        r.r.store(r.rec_off(cur ^ 1, 0), 99u64);
        r.hdr().unwrap().len[cur ^ 1].store(1, Relaxed);
        assert_eq!(r.load(), vec![7, 8]);
    }
}
