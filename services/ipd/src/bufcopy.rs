//! Copying bytes from one pool buffer into another through the [`Buffers`]
//! trait.
//!
//! The trait lends one buffer at a time, so a copy between two buffers goes
//! through a small bounce buffer on the stack that stays in L1. The only
//! callers are the two copies ipd accepts (reassembly and fragmentation);
//! the quote of an ICMP error, at most 548 bytes, is copied to the stack
//! and written with `IcmpHeader::emit_error` instead. A `Buffers` method
//! lending two buffers at once would remove the bounce.

use strata_ipc::{BufError, Buffers, Handle};

const BOUNCE: usize = 1024;

/// Copies `len` bytes at raw offset `src_at` of `src`'s buffer to raw offset
/// `dst_at` of `dst`'s buffer (offsets from the buffer start, not the data
/// window). Checks both ranges first, so nothing is written on error.
pub(crate) fn copy_between<B: Buffers>(
    pool: &mut B,
    src: &Handle,
    src_at: usize,
    dst: &Handle,
    dst_at: usize,
    len: usize,
) -> Result<(), BufError> {
    let src_end = src_at.checked_add(len).ok_or(BufError::BadWindow)?;
    let dst_end = dst_at.checked_add(len).ok_or(BufError::BadWindow)?;
    if pool.raw(src)?.len() < src_end || pool.raw(dst)?.len() < dst_end {
        return Err(BufError::BadWindow);
    }
    if src.buf == dst.buf {
        pool.raw_mut(dst)?.copy_within(src_at..src_end, dst_at);
        return Ok(());
    }
    let mut bounce = [0u8; BOUNCE];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(BOUNCE);
        bounce[..n].copy_from_slice(&pool.raw(src)?[src_at + done..src_at + done + n]);
        pool.raw_mut(dst)?[dst_at + done..dst_at + done + n].copy_from_slice(&bounce[..n]);
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ipc::HeapPool;

    #[test]
    fn copies_across_and_within_buffers() {
        let mut p = HeapPool::new(2, 1);
        let a = p.alloc(3000).unwrap();
        let b = p.alloc(100).unwrap();
        for (i, x) in p.raw_mut(&a).unwrap().iter_mut().enumerate() {
            *x = i as u8;
        }
        copy_between(&mut p, &a, 10, &b, 5, 2000).unwrap();
        assert_eq!(p.raw(&b).unwrap()[5..2005], p.raw(&a).unwrap()[10..2010]);
        copy_between(&mut p, &a, 0, &a, 1, 4).unwrap();
        assert_eq!(p.raw(&a).unwrap()[..5], [0, 0, 1, 2, 3]);
        assert_eq!(
            copy_between(&mut p, &a, 0, &b, 2000, 100),
            Err(BufError::BadWindow)
        );
        p.free(&a);
        p.free(&b);
    }
}
