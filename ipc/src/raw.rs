//! Every access `ipc` makes to memory through an address rather than a
//! Rust reference, in one module to audit (docs/DESIGN.md, "Fabric" and
//! "Trust and limits"). The fabric, the socket rings, the arenas and the
//! tables over them call these primitives; none of them does pointer
//! arithmetic of its own.
//!
//! The memory is shared with other processes: the other layers (trusted,
//! each following the protocol documented on the structure it touches),
//! and for a socket's memory an application (untrusted: it may write any
//! byte at any time). What keeps our side sound whatever they do:
//!
//! - every access is checked against the bounds and the alignment of the
//!   mapping first ([`Region`]), so a corrupted offset, index or length
//!   costs a panic, never a wild access;
//! - in place we only reference [`Shared`] types: atomics, and plain
//!   fields nobody writes while they can be referenced;
//! - plain data ([`Pod`]: valid for every bit pattern) is copied out,
//!   once, with a volatile read ([`Region::load`]), so a value the other
//!   side changes under us is at worst a wrong value, which the caller
//!   validates, and never one the compiler reads twice;
//! - the few accesses whose soundness depends on a protocol (who may write
//!   which bytes of a buffer or a ring, and when) stay `unsafe fn`s here,
//!   and each caller says why its protocol holds.
//!
//! The mapping itself is kept alive by its owner ([`Mapping`] or the
//! fabric's `Shmem`) for as long as a [`Region`] over it may be used, and
//! the region of a socket's memory is a memfd sealed against shrinking
//! (`SockMem::attach`), so no access can hit a page that went away.

use crate::arena::Pod;
use crate::handle::Handle;
use crate::layout::{BufHdr, Header, IfaceBlock, LaunchCtl, LayerCtl, PoolCtl, RingDesc};
use crate::socktable::SockRec;
use std::io;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// Types that may be referenced in place in memory other processes map.
///
/// # Safety
/// Implement only for `#[repr(C)]` types that are valid for every bit
/// pattern (a crashed or hostile writer may leave any bytes behind) and
/// whose fields are atomics, or plain data that nobody writes while a
/// reference to it may be alive (written once before the memory is
/// shared, or through [`Region::get_mut`] or [`Region::bytes_mut`] under
/// their contracts).
pub(crate) unsafe trait Shared {}

// SAFETY: atomics only (and padding words nobody writes): any bits are
// valid, and every write is an atomic store.
unsafe impl Shared for crate::capture::CaptureCtl {}
// SAFETY: as for `CaptureCtl`.
unsafe impl Shared for crate::capture::CaptureRingHdr {}
// SAFETY: repr(C); atomics and an array of atomics only.
unsafe impl Shared for crate::runtime::ConfigCtl {}

// SAFETY: a single atomic: any bits are a valid value, and every write
// from any process is an atomic store.
unsafe impl Shared for AtomicU32 {}
// SAFETY: as for AtomicU32.
unsafe impl Shared for AtomicU64 {}
// SAFETY: repr(C); atomics, integers and arrays of integers. The plain
// fields (version, sizes, offsets) are written by `Fabric::create` through
// `get_mut` before it publishes the magic; `Fabric::open` reads none of
// them before it has seen the magic with Acquire.
unsafe impl Shared for Header {}
// SAFETY: repr(C); atomics, and counter names written only through
// `bytes_mut` by `Fabric::register_counters` (see its contract there).
unsafe impl Shared for LayerCtl {}
// SAFETY: repr(C); atomics, and a name and MAC written only through
// `bytes_mut` by `Fabric::set_iface_info` (see its contract there).
unsafe impl Shared for IfaceBlock {}
// SAFETY: repr(C); atomics and padding.
unsafe impl Shared for BufHdr {}
// SAFETY: repr(C); atomics, arrays of atomics and padding.
unsafe impl Shared for LaunchCtl {}
// SAFETY: repr(C); atomics.
unsafe impl Shared for PoolCtl {}
// SAFETY: repr(C); atomics, and endpoints, size and slot offset written
// by `Fabric::create` through `get_mut` before the magic is published.
unsafe impl Shared for RingDesc {}

// SAFETY: primitive integers: every bit pattern is a value.
unsafe impl Pod for u8 {}
// SAFETY: as for u8.
unsafe impl Pod for u16 {}
// SAFETY: as for u8.
unsafe impl Pod for u32 {}
// SAFETY: as for u8.
unsafe impl Pod for u64 {}
// SAFETY: bytes: every bit pattern is a value.
unsafe impl<const N: usize> Pod for [u8; N] {}
// SAFETY: repr(C), integers only; its padding carries no meaning, and a
// forged handle is refused by `Fabric::check` before it is followed.
unsafe impl Pod for Handle {}
// SAFETY: repr(C), u32, u16 and byte-array fields in an order that leaves
// no padding; every field is range-checked where it is used.
unsafe impl Pod for SockRec {}

/// Unaligned, for [`Region::load`] and [`Region::store`].
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct Unaligned<T>(T);

/// A mapped, readable and writable byte range, valid for `'a`; every
/// access through it is checked against its bounds and alignment.
#[derive(Clone, Copy)]
pub(crate) struct Region<'a> {
    base: *mut u8,
    len: usize,
    _m: PhantomData<&'a [u8]>,
}

impl<'a> Region<'a> {
    /// # Safety
    /// `base..base + len` must stay mapped, readable and writable for
    /// `'a`, and inside this process be accessed only through regions
    /// (and what they return), so that their checks and contracts cover
    /// every access.
    #[inline]
    pub(crate) unsafe fn new(base: *mut u8, len: usize) -> Region<'a> {
        Region {
            base,
            len,
            _m: PhantomData,
        }
    }

    /// Bytes in the region.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The address of byte `off` (for the public APIs that hand an arena
    /// out as a pointer and a length). Panics beyond the end.
    #[inline]
    pub(crate) fn ptr(&self, off: usize) -> *mut u8 {
        self.at(off, 0, 1)
    }

    /// The address of `bytes` bytes at `off`, aligned to `align`; panics
    /// if they are not inside the region or not aligned. The only place
    /// an address is computed.
    #[inline(always)]
    fn at(&self, off: usize, bytes: usize, align: usize) -> *mut u8 {
        assert!(
            off <= self.len && bytes <= self.len - off,
            "access of {bytes} bytes at {off} outside a region of {}",
            self.len
        );
        let p = self.base.wrapping_add(off);
        assert!(
            (p as usize) & (align - 1) == 0,
            "misaligned access at {off}"
        );
        p
    }

    #[inline(always)]
    fn array<T>(&self, off: usize, n: usize) -> *mut T {
        let bytes = n.checked_mul(size_of::<T>()).expect("array size overflows");
        self.at(off, bytes, align_of::<T>()) as *mut T
    }

    /// Makes the `n` bytes at `off` read-only in this process (both page
    /// aligned). A write through the region there faults from now on: the
    /// caller keeps to what it may write.
    pub(crate) fn protect_read(&self, off: usize, n: usize) -> io::Result<()> {
        let p = self.at(off, n, 4096);
        if !n.is_multiple_of(4096) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: `at` checked that the range lies inside the mapping and
        // starts on a page; mprotect changes only its protection, and no
        // `&mut` into it is alive (the fabric hands out only shared
        // references to atomics and write-once fields).
        if unsafe { libc::mprotect(p.cast(), n, libc::PROT_READ) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The `n` bytes at `off`, as a region of their own.
    #[inline]
    pub(crate) fn sub(&self, off: usize, n: usize) -> Region<'a> {
        Region {
            base: self.at(off, n, 1),
            len: n,
            _m: PhantomData,
        }
    }

    /// The `T` at `off`, in place.
    #[inline]
    pub(crate) fn get<T: Shared>(&self, off: usize) -> &'a T {
        let p = self.array::<T>(off, 1);
        // SAFETY: `array` checked that the bytes lie inside the region and
        // are aligned for T; the region is mapped for 'a (`new`); T is
        // valid for every bit pattern and only its atomics change while
        // it is referenced (`Shared`).
        unsafe { &*p }
    }

    /// `n` consecutive `T` from `off`, in place.
    #[inline]
    pub(crate) fn slice<T: Shared>(&self, off: usize, n: usize) -> &'a [T] {
        let p = self.array::<T>(off, n);
        // SAFETY: as in `get`, for all n elements (`array` checked the
        // whole span).
        unsafe { std::slice::from_raw_parts(p, n) }
    }

    /// The `T` at `off`, for initialising its plain fields.
    ///
    /// # Safety
    /// No other reference to these bytes may be alive in this process
    /// while the result is used, and no other process may access them
    /// (e.g. memory not yet published).
    #[inline]
    pub(crate) unsafe fn get_mut<T: Shared>(&self, off: usize) -> &'a mut T {
        let p = self.array::<T>(off, 1);
        // SAFETY: in bounds and aligned (checked), valid for any bits
        // (`Shared`), and exclusive by the caller's contract.
        unsafe { &mut *p }
    }

    /// A copy of the aligned `T` at `off` (a ring slot: the ring's
    /// protocol keeps its writer away while it is read).
    #[inline]
    pub(crate) fn read<T: Pod>(&self, off: usize) -> T {
        let p = self.array::<T>(off, 1);
        // SAFETY: in bounds and aligned (checked), mapped (`new`); any
        // bits are a valid T (`Pod`), so whatever another process left
        // there reads as some value.
        unsafe { p.read() }
    }

    /// Stores the aligned `T` at `off` (a ring slot, before the index
    /// that publishes it).
    #[inline]
    pub(crate) fn write<T: Pod>(&self, off: usize, v: T) {
        let p = self.array::<T>(off, 1);
        // SAFETY: in bounds and aligned (checked), writable (`new`); no
        // reference covers plain bytes of the region (`Shared` allows
        // none to be written while referenced), so this aliases nothing.
        unsafe { p.write(v) }
    }

    /// A copy of the `T` at `off`, at any alignment, read once (volatile):
    /// for memory another process may be writing right now, such as a
    /// client's ring or a record table a crashed writer left behind.
    #[inline]
    pub(crate) fn load<T: Pod>(&self, off: usize) -> T {
        let p = self.at(off, size_of::<T>(), 1) as *const Unaligned<T>;
        // SAFETY: in bounds (checked) and Unaligned<T> has alignment 1;
        // any bits are a valid T (`Pod`). The volatile read makes it one
        // copy: a concurrent writer can change the value we get, never
        // make the compiler read it again after the caller checked it.
        unsafe { p.read_volatile().0 }
    }

    /// Stores the `T` at `off`, at any alignment (volatile: the other
    /// side reads it from another process).
    #[inline]
    pub(crate) fn store<T: Pod>(&self, off: usize, v: T) {
        let p = self.at(off, size_of::<T>(), 1) as *mut Unaligned<T>;
        // SAFETY: in bounds (checked), alignment 1, writable (`new`); no
        // reference covers plain bytes being written (`Shared`, `bytes`).
        unsafe { p.write_volatile(Unaligned(v)) }
    }

    /// Copies `src` to `off`.
    #[inline]
    pub(crate) fn copy_in(&self, off: usize, src: &[u8]) {
        let p = self.at(off, src.len(), 1);
        // SAFETY: the destination lies inside the region (checked) and
        // cannot overlap `src`, a reference no region hands out for bytes
        // that are written (`bytes` forbids writes while it lives).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) }
    }

    /// Sets `n` bytes from `off` to `byte`.
    #[inline]
    pub(crate) fn fill(&self, off: usize, n: usize, byte: u8) {
        let p = self.at(off, n, 1);
        // SAFETY: inside the region (checked) and writable (`new`).
        unsafe { std::ptr::write_bytes(p, byte, n) }
    }

    /// The `n` bytes at `off`, in place.
    ///
    /// # Safety
    /// Nothing in this process may write these bytes while the slice is
    /// alive (the caller's protocol says who writes what, and when).
    /// Another process writing them only changes the values seen, which
    /// are plain bytes.
    #[inline]
    pub(crate) unsafe fn bytes(&self, off: usize, n: usize) -> &'a [u8] {
        let p = self.at(off, n, 1);
        // SAFETY: inside the region (checked), mapped for 'a; u8 is valid
        // for every bit pattern; no writer in this process by contract.
        unsafe { std::slice::from_raw_parts(p, n) }
    }

    /// The `n` bytes at `off`, in place and writable.
    ///
    /// # Safety
    /// Nothing else in this process may access these bytes while the
    /// slice is alive (the caller's protocol makes them its own).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, off: usize, n: usize) -> &'a mut [u8] {
        let p = self.at(off, n, 1);
        // SAFETY: inside the region (checked), mapped and writable for
        // 'a; exclusive by contract.
        unsafe { std::slice::from_raw_parts_mut(p, n) }
    }
}

/// A shared mapping of a file, unmapped when dropped.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd`, shared, readable and writable.
    pub(crate) fn shared(fd: impl AsFd, len: usize) -> io::Result<Mapping> {
        let n = NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"))?;
        // SAFETY: a fresh mapping at an address the kernel picks overlaps
        // nothing this process uses; the fd is open for the call.
        let p = unsafe {
            nix::sys::mman::mmap(
                None,
                n,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }?;
        Ok(Mapping { ptr: p.cast(), len })
    }

    /// The mapped bytes, for as long as the mapping is borrowed.
    #[inline]
    pub(crate) fn region(&self) -> Region<'_> {
        // SAFETY: the bytes stay mapped until `drop`, which the borrow
        // keeps away; nothing else in this process gets their address.
        unsafe { Region::new(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range, and no region over it
        // outlives the borrow of `self` it came from.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_are_checked() {
        let mut mem = vec![0u64; 8];
        // SAFETY: the vector outlives the region and is not touched
        // otherwise while it is used.
        let r = unsafe { Region::new(mem.as_mut_ptr() as *mut u8, 64) };
        r.store::<u32>(60, 7);
        assert_eq!(r.load::<u32>(60), 7);
        r.write::<u64>(8, 9);
        assert_eq!(r.read::<u64>(8), 9);
        assert_eq!(
            r.get::<AtomicU64>(8)
                .load(std::sync::atomic::Ordering::Relaxed),
            9
        );
        assert!(std::panic::catch_unwind(|| r.load::<u32>(61)).is_err());
        assert!(std::panic::catch_unwind(|| r.read::<u64>(4)).is_err());
        assert!(std::panic::catch_unwind(|| r.sub(60, 5)).is_err());
        assert_eq!(r.sub(8, 8).read::<u64>(0), 9);
    }
}
