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
    /// The format each copy was written in (the writer's
    /// [`crate::service::ArenaFormat`]): flipping `current` switches the
    /// records and their format at once.
    format: [AtomicU32; 2],
}

// SAFETY: repr(C), atomics only.
unsafe impl Shared for RecHdr {}

const REC_MAGIC: u32 = 0x5245_4331;
const HDR: usize = 64;

/// A table of records stored twice: a writer fills the copy that is not
/// current and then flips the index, so a writer killed half-way leaves
/// the previous table intact and a restarted layer always loads a whole
/// one. Each copy is stamped with the format of its records, so that a
/// binary whose records changed can tell its predecessor's table and read
/// it with the old record type.
pub struct Records<'a, T: Pod> {
    r: Region<'a>,
    cap: usize,
    /// The format of `T`: what `store` stamps and `load` accepts.
    format: u32,
    _m: PhantomData<&'a T>,
}

impl<'a, T: Pod> Records<'a, T> {
    /// The table in `p..p+n`, of records of format `format`.
    ///
    /// # Safety
    /// `p..p+n` must be mapped, readable and writable, for `'a`, aligned
    /// for `T`, and used only as this table.
    pub unsafe fn new(p: *mut u8, n: usize, format: u32) -> Self {
        // SAFETY: the caller's contract is `Region::new`'s.
        Records::over(unsafe { Region::new(p, n) }, format)
    }

    /// The table over an arena.
    pub(crate) fn over(r: Region<'a>, format: u32) -> Self {
        let sz = std::mem::size_of::<T>().max(1);
        let cap = r.len().saturating_sub(HDR) / 2 / sz;
        Records {
            r,
            cap,
            format,
            _m: PhantomData,
        }
    }

    /// The format of the current table (0: none was ever stored).
    pub fn stored_format(&self) -> u32 {
        match self.hdr() {
            Some(h) if h.magic.load(Acquire) == REC_MAGIC => {
                h.format[(h.current.load(Acquire) & 1) as usize].load(Acquire)
            }
            _ => 0,
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

    /// The current table (empty if never stored, or stored in another
    /// format than this table's).
    pub fn load(&self) -> Vec<T> {
        let Some(h) = self.hdr() else {
            return Vec::new();
        };
        if self.stored_format() != self.format {
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
        h.format[next].store(self.format, Release);
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
        let r: Records<u64> = unsafe { Records::new(mem.as_mut_ptr() as *mut u8, 8192, 1) };
        assert!(r.load().is_empty());
        assert_eq!(r.stored_format(), 0);
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
    fn a_table_of_another_format_is_told_and_read_with_its_own_type() {
        let mut mem = vec![0u64; 1024];
        let p = mem.as_mut_ptr() as *mut u8;
        // SAFETY: the vector outlives both views; they are used one after
        // the other, as a layer and its successor would.
        let (old, new): (Records<u32>, Records<u64>) =
            unsafe { (Records::new(p, 8192, 1), Records::new(p, 8192, 2)) };
        old.store([5, 6]);
        assert_eq!(new.stored_format(), 1);
        assert!(new.load().is_empty(), "format 1 is not read as format 2");
        assert_eq!(old.load(), vec![5, 6]);
        new.store([9]);
        assert_eq!(old.stored_format(), 2);
        assert!(old.load().is_empty());
        assert_eq!(new.load(), vec![9]);
    }

    #[test]
    fn half_written_copy_is_not_seen() {
        let mut mem = vec![0u64; 1024];
        // SAFETY: the vector outlives the table and is used only by it.
        let r: Records<u64> = unsafe { Records::new(mem.as_mut_ptr() as *mut u8, 8192, 1) };
        r.store([7, 8]);
        // A writer that dies before the flip has written only the other copy.
        let cur = r.hdr().unwrap().current.load(Relaxed) as usize;
        r.r.store(r.rec_off(cur ^ 1, 0), 99u64);
        r.hdr().unwrap().len[cur ^ 1].store(1, Relaxed);
        assert_eq!(r.load(), vec![7, 8]);
    }
}
