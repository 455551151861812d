//! The buffer-access trait the protocol cores are written against, and a
//! heap-backed implementation of it for unit tests.

use crate::handle::Handle;

/// Bytes kept free in front of a fresh buffer's data window, so that lower
/// layers can prepend their headers without moving the payload.
pub const HEADROOM: u32 = 192;
/// Size of a small pool buffer: one 1500-byte frame plus headroom.
pub const SMALL_BUF: usize = 2048;
/// Size of a large pool buffer: a 64 KiB super-packet plus headroom.
pub const LARGE_BUF: usize = 65536 + 512;

/// Why a buffer could not be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufError {
    /// The index names no buffer in the pool.
    BadIndex,
    /// The handle's generation differs from the buffer's: the buffer was
    /// freed (and perhaps reused) since the handle was made.
    Stale,
    /// The handle's data window lies outside the buffer.
    BadWindow,
}

/// Access to packet buffers, as a pure protocol core needs it. The core
/// holds [`Handle`]s (plain data) and reaches bytes only through this trait,
/// so it runs unchanged over the shared-memory pool and over [`HeapPool`].
pub trait Buffers {
    /// Allocates a buffer that can hold `len` bytes after [`HEADROOM`].
    /// The handle has an empty data window at `HEADROOM`. `None` when the
    /// pool is exhausted (the caller counts a drop).
    fn alloc(&mut self, len: usize) -> Option<Handle>;
    /// Gives up the caller's reference to the buffer. A stale handle is
    /// ignored (and counted by the pool).
    fn free(&mut self, h: &Handle);
    /// Adds a reference, so that two handles can share one buffer; each
    /// must then be freed.
    fn add_ref(&mut self, h: &Handle) -> Result<(), BufError>;
    /// The whole buffer (all of its capacity).
    fn raw(&self, h: &Handle) -> Result<&[u8], BufError>;
    /// The whole buffer (all of its capacity), writable.
    fn raw_mut(&mut self, h: &Handle) -> Result<&mut [u8], BufError>;

    /// Two different buffers, whole and writable at once. `BadIndex`
    /// when both handles name the same buffer.
    fn raw_pair_mut(&mut self, a: &Handle, b: &Handle) -> Result<(&mut [u8], &mut [u8]), BufError>;

    /// Copies `len` bytes at raw offset `src_at` of `src`'s buffer to raw
    /// offset `dst_at` of `dst`'s (offsets from the buffer's start, not
    /// the data window; the two may be one buffer). Checks both ranges
    /// first, so nothing is written on error.
    fn copy_raw(
        &mut self,
        src: &Handle,
        src_at: usize,
        dst: &Handle,
        dst_at: usize,
        len: usize,
    ) -> Result<(), BufError> {
        let src_end = src_at.checked_add(len).ok_or(BufError::BadWindow)?;
        let dst_end = dst_at.checked_add(len).ok_or(BufError::BadWindow)?;
        if src.buf == dst.buf {
            self.raw(src)?;
            let b = self.raw_mut(dst)?;
            if b.len() < src_end.max(dst_end) {
                return Err(BufError::BadWindow);
            }
            b.copy_within(src_at..src_end, dst_at);
            return Ok(());
        }
        let (s, d) = self.raw_pair_mut(src, dst)?;
        if s.len() < src_end || d.len() < dst_end {
            return Err(BufError::BadWindow);
        }
        d[dst_at..dst_end].copy_from_slice(&s[src_at..src_end]);
        Ok(())
    }

    /// The handle's data window.
    fn data(&self, h: &Handle) -> Result<&[u8], BufError> {
        let raw = self.raw(h)?;
        let (s, e) = window(h, raw.len())?;
        Ok(&raw[s..e])
    }
    /// The handle's data window, writable.
    fn data_mut(&mut self, h: &Handle) -> Result<&mut [u8], BufError> {
        let raw = self.raw_mut(h)?;
        let (s, e) = window(h, raw.len())?;
        Ok(&mut raw[s..e])
    }
}

/// Start and end of `h`'s data window in a buffer of `cap` bytes.
pub fn window(h: &Handle, cap: usize) -> Result<(usize, usize), BufError> {
    let s = h.data_off as usize;
    let e = s
        .checked_add(h.data_len as usize)
        .ok_or(BufError::BadWindow)?;
    if e > cap {
        return Err(BufError::BadWindow);
    }
    Ok((s, e))
}

/// A heap-backed pool with the same rules as the shared one (generations,
/// reference counts, two size classes), for deterministic unit tests of the
/// protocol cores.
pub struct HeapPool {
    bufs: Vec<Box<[u8]>>,
    gens: Vec<u32>,
    refs: Vec<u32>,
    free_small: Vec<u32>,
    free_large: Vec<u32>,
    small: u32,
    /// Frees of stale handles seen (a bug in the caller if non-zero).
    pub stale_frees: u64,
}

impl HeapPool {
    /// A pool with `small` small buffers and `large` large ones.
    pub fn new(small: u32, large: u32) -> Self {
        let mut bufs = Vec::new();
        for _ in 0..small {
            bufs.push(vec![0u8; SMALL_BUF].into_boxed_slice());
        }
        for _ in 0..large {
            bufs.push(vec![0u8; LARGE_BUF].into_boxed_slice());
        }
        let n = (small + large) as usize;
        HeapPool {
            bufs,
            gens: vec![1; n],
            refs: vec![0; n],
            free_small: (0..small).rev().collect(),
            free_large: (small..small + large).rev().collect(),
            small,
            stale_frees: 0,
        }
    }

    /// Buffers currently allocated (not free).
    pub fn in_use(&self) -> usize {
        self.bufs.len() - self.free_small.len() - self.free_large.len()
    }

    fn check(&self, h: &Handle) -> Result<usize, BufError> {
        let i = h.buf as usize;
        if i >= self.bufs.len() {
            return Err(BufError::BadIndex);
        }
        if self.gens[i] != h.gen || self.refs[i] == 0 {
            return Err(BufError::Stale);
        }
        Ok(i)
    }
}

impl Buffers for HeapPool {
    fn alloc(&mut self, len: usize) -> Option<Handle> {
        let need = len + HEADROOM as usize;
        let i = if need <= SMALL_BUF {
            self.free_small.pop().or_else(|| self.free_large.pop())?
        } else if need <= LARGE_BUF {
            self.free_large.pop()?
        } else {
            return None;
        };
        self.refs[i as usize] = 1;
        Some(Handle::new(i, self.gens[i as usize], HEADROOM))
    }

    fn free(&mut self, h: &Handle) {
        if h.is_inline() {
            return;
        }
        let Ok(i) = self.check(h) else {
            self.stale_frees += 1;
            return;
        };
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            self.gens[i] = self.gens[i].wrapping_add(1);
            if (i as u32) < self.small {
                self.free_small.push(i as u32);
            } else {
                self.free_large.push(i as u32);
            }
        }
    }

    fn add_ref(&mut self, h: &Handle) -> Result<(), BufError> {
        let i = self.check(h)?;
        self.refs[i] += 1;
        Ok(())
    }

    fn raw(&self, h: &Handle) -> Result<&[u8], BufError> {
        let i = self.check(h)?;
        Ok(&self.bufs[i])
    }

    fn raw_mut(&mut self, h: &Handle) -> Result<&mut [u8], BufError> {
        let i = self.check(h)?;
        Ok(&mut self.bufs[i])
    }

    fn raw_pair_mut(&mut self, a: &Handle, b: &Handle) -> Result<(&mut [u8], &mut [u8]), BufError> {
        let (i, j) = (self.check(a)?, self.check(b)?);
        if i == j {
            return Err(BufError::BadIndex);
        }
        let (lo, hi) = self.bufs.split_at_mut(i.max(j));
        let (x, y) = (&mut lo[i.min(j)], &mut hi[0]);
        Ok(if i < j { (x, y) } else { (y, x) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_across_and_within_buffers() {
        let mut p = HeapPool::new(2, 1);
        let a = p.alloc(3000).unwrap();
        let b = p.alloc(100).unwrap();
        for (i, x) in p.raw_mut(&a).unwrap().iter_mut().enumerate() {
            *x = i as u8;
        }
        p.copy_raw(&a, 10, &b, 5, 2000).unwrap();
        assert_eq!(p.raw(&b).unwrap()[5..2005], p.raw(&a).unwrap()[10..2010]);
        p.copy_raw(&a, 0, &a, 1, 4).unwrap();
        assert_eq!(p.raw(&a).unwrap()[..5], [0, 0, 1, 2, 3]);
        assert_eq!(p.copy_raw(&a, 0, &b, 2000, 100), Err(BufError::BadWindow));
        assert_eq!(
            p.copy_raw(&a, usize::MAX, &b, 0, 1),
            Err(BufError::BadWindow)
        );
        p.free(&a);
        p.free(&b);
    }

    #[test]
    fn stale_handle_is_refused_after_free() {
        let mut p = HeapPool::new(2, 1);
        let h = p.alloc(100).unwrap();
        p.free(&h);
        assert_eq!(p.raw(&h), Err(BufError::Stale));
        p.free(&h);
        assert_eq!(p.stale_frees, 1);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn large_requests_get_large_buffers() {
        let mut p = HeapPool::new(1, 1);
        let h = p.alloc(4000).unwrap();
        assert_eq!(p.raw(&h).unwrap().len(), LARGE_BUF);
        assert!(p.alloc(4000).is_none());
        assert!(p.alloc(70000).is_none());
    }

    #[test]
    fn refcount_keeps_buffer_until_last_free() {
        let mut p = HeapPool::new(1, 0);
        let h = p.alloc(10).unwrap();
        p.add_ref(&h).unwrap();
        p.free(&h);
        assert!(p.raw(&h).is_ok());
        p.free(&h);
        assert!(p.raw(&h).is_err());
    }
}
