//! A split virtqueue, the driver's side (virtio specification §2.7), over
//! memory the device reaches by DMA.
//!
//! A queue's area holds, each on its own page, the descriptor table
//! (§2.7.5), the available ring the driver fills (§2.7.6) and the used
//! ring the device fills (§2.7.8). The driver here gives every descriptor
//! one buffer of its own for the queue's life: descriptor `i` always
//! names buffer `i`, so the id the device hands back is the buffer's
//! index, checked against the queue's size before it is believed
//! ([`Used`]). Entries are made visible in batches ([`Queue::publish`]),
//! and the device is notified only when it asked (§2.7.10).
//!
//! The device runs beside us (another CPU, or qemu's thread), so the
//! shared indices are atomics and everything else is read and written
//! with volatile operations ordered by those atomics.

use std::sync::atomic::{fence, AtomicU16, Ordering};

/// The most entries a queue here has.
pub const MAX: u16 = 256;
/// Page size the rings are laid out by.
const PAGE: usize = 4096;
/// Bytes of one queue's area: three pages.
pub const AREA: usize = 3 * PAGE;
/// Where the available ring (the "driver area") starts in the area.
pub const AVAIL_AT: usize = PAGE;
/// Where the used ring (the "device area") starts in the area.
pub const USED_AT: usize = 2 * PAGE;

/// Descriptor flag: the device writes the buffer (§2.7.5).
const DESC_F_WRITE: u16 = 2;
/// Available-ring flag: the driver wants no interrupt (§2.7.7).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used-ring flag: the device wants no notification (§2.7.10).
const USED_F_NO_NOTIFY: u16 = 1;

/// A used-ring entry whose descriptor id is one of the queue's: the proof
/// that the device's word was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// The descriptor (and buffer) index, below the queue's size.
    pub id: u16,
    /// Bytes the device wrote into the buffer (0 for a buffer it read).
    pub len: u32,
}

/// A used-ring entry that named no descriptor of the queue: the raw id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadId(pub u32);

/// The driver's side of one split virtqueue.
pub struct Queue {
    /// The queue's area ([`AREA`] bytes) in the shared mapping.
    base: *mut u8,
    size: u16,
    /// The available index the next entry takes.
    next_avail: u16,
    /// The available index the device has been shown.
    published: u16,
    /// The used index up to which entries were taken.
    last_used: u16,
}

// SAFETY: `base` points into a mapping the queue's owner keeps alive and
// moves with it; no other thread of this process touches it.
unsafe impl Send for Queue {}

impl Queue {
    /// A queue of `size` entries (a power of two, at most [`MAX`]) over the
    /// area at `base`, which it zeroes: no buffer given, interrupts on.
    ///
    /// # Safety
    /// `base` must point to [`AREA`] writable bytes, aligned to a page,
    /// that outlive the queue and that nothing else in this process reads
    /// or writes while it lives.
    pub unsafe fn new(base: *mut u8, size: u16) -> Queue {
        assert!(size.is_power_of_two() && size <= MAX, "queue size {size}");
        // SAFETY: the caller gave us AREA bytes at `base`.
        unsafe { std::ptr::write_bytes(base, 0, AREA) };
        Queue {
            base,
            size,
            next_avail: 0,
            published: 0,
            last_used: 0,
        }
    }

    /// Entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Entries given to the device (published or not) and not yet used.
    pub fn outstanding(&self) -> u16 {
        self.next_avail.wrapping_sub(self.last_used)
    }

    /// Entries pushed and not yet published.
    pub fn unpublished(&self) -> u16 {
        self.next_avail.wrapping_sub(self.published)
    }

    fn at<T>(&self, off: usize) -> *mut T {
        debug_assert!(off + std::mem::size_of::<T>() <= AREA);
        // SAFETY: every offset used is inside the area (see the layout
        // constants and the `size` bound), so the pointer stays inside it.
        unsafe { self.base.add(off).cast() }
    }

    fn index(&self, off: usize) -> &AtomicU16 {
        // SAFETY: a 2-byte aligned index inside the area, which lives as
        // long as `self`; the device updates it concurrently, hence atomic.
        unsafe { &*self.at::<AtomicU16>(off) }
    }

    /// Gives the device buffer `id` (`len` bytes at bus address `addr`),
    /// for it to fill (`device_writes`) or to read; seen by the device
    /// after the next [`Queue::publish`].
    pub fn push(&mut self, id: u16, addr: u64, len: u32, device_writes: bool) {
        assert!(id < self.size, "descriptor {id} of {}", self.size);
        let d = usize::from(id) * 16;
        let flags = if device_writes { DESC_F_WRITE } else { 0 };
        // SAFETY: descriptor `id` lies in the table (id < size <= MAX,
        // 16 bytes each in the first page); the device reads it only
        // after the available index below says so.
        unsafe {
            self.at::<u64>(d).write_volatile(addr.to_le());
            self.at::<u32>(d + 8).write_volatile(len.to_le());
            self.at::<u16>(d + 12).write_volatile(flags.to_le());
            self.at::<u16>(d + 14).write_volatile(0);
        }
        let slot = usize::from(self.next_avail % self.size);
        // SAFETY: ring entry `slot` of the available ring (4 bytes of
        // flags and index, then 2 bytes an entry), inside its page.
        unsafe {
            self.at::<u16>(AVAIL_AT + 4 + 2 * slot)
                .write_volatile(id.to_le())
        };
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    /// Shows the device every entry pushed since the last call; true when
    /// there were some and the device asked to be told (§2.7.13.4).
    pub fn publish(&mut self) -> bool {
        if self.next_avail == self.published {
            return false;
        }
        // The descriptors and ring entries before the index (§2.7.13.3).
        self.index(AVAIL_AT + 2)
            .store(self.next_avail.to_le(), Ordering::Release);
        self.published = self.next_avail;
        // The index before reading whether the device wants a
        // notification, or both sides could wait for the other.
        fence(Ordering::SeqCst);
        // SAFETY: the used ring's flags, inside its page.
        let flags = u16::from_le(unsafe { self.at::<u16>(USED_AT).read_volatile() });
        flags & USED_F_NO_NOTIFY == 0
    }

    /// Whether the device has used entries not yet taken.
    pub fn has_used(&self) -> bool {
        u16::from_le(self.index(USED_AT + 2).load(Ordering::Acquire)) != self.last_used
    }

    /// The next entry the device used, if any: its id checked, or the
    /// bad id it gave.
    pub fn pop_used(&mut self) -> Option<Result<Used, BadId>> {
        if !self.has_used() {
            return None;
        }
        let slot = usize::from(self.last_used % self.size);
        let e = USED_AT + 4 + 8 * slot;
        // SAFETY: used entry `slot` (8 bytes each after 4 of flags and
        // index), inside its page; the Acquire load of the index above
        // orders this read after the device's write.
        let (id, len) = unsafe {
            (
                u32::from_le(self.at::<u32>(e).read_volatile()),
                u32::from_le(self.at::<u32>(e + 4).read_volatile()),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        Some(match u16::try_from(id) {
            Ok(id) if id < self.size => Ok(Used { id, len }),
            _ => Err(BadId(id)),
        })
    }

    /// Asks the device for interrupts when it uses entries, or for none
    /// (a hint the device may ignore, §2.7.7). After turning them on, a
    /// driver checks [`Queue::has_used`] again: entries used before the
    /// device saw the flag raise no interrupt.
    pub fn set_interrupts(&mut self, on: bool) {
        let flags = if on { 0 } else { AVAIL_F_NO_INTERRUPT };
        // SAFETY: the available ring's flags, inside its page.
        unsafe { self.at::<u16>(AVAIL_AT).write_volatile(flags.to_le()) };
        fence(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Page-aligned memory standing for the DMA area; every access, the
    /// queue's and the test's, goes through the one raw pointer.
    struct Area {
        ptr: *mut u8,
        _buf: Vec<u8>,
    }

    impl Area {
        fn new() -> Area {
            let mut buf = vec![0u8; AREA + PAGE];
            let skip = buf.as_ptr().align_offset(PAGE);
            // SAFETY: `skip` < PAGE, so the pointer stays in the buffer.
            let ptr = unsafe { buf.as_mut_ptr().add(skip) };
            Area { ptr, _buf: buf }
        }
        fn get<const N: usize>(&self, off: usize) -> [u8; N] {
            assert!(off + N <= AREA);
            let mut b = [0u8; N];
            // SAFETY: inside the area (checked above).
            unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), b.as_mut_ptr(), N) };
            b
        }
        fn u16_at(&self, off: usize) -> u16 {
            u16::from_le_bytes(self.get(off))
        }
        fn set(&mut self, off: usize, b: &[u8]) {
            assert!(off + b.len() <= AREA);
            // SAFETY: inside the area (checked above).
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.ptr.add(off), b.len()) };
        }
    }

    /// What a device does with the available ring: takes the entries the
    /// driver published since `seen`, in order, with their descriptors.
    fn device_takes(a: &Area, seen: &mut u16, size: u16) -> Vec<(u16, u64, u32, u16)> {
        let idx = a.u16_at(AVAIL_AT + 2);
        let mut out = Vec::new();
        while *seen != idx {
            let id = a.u16_at(AVAIL_AT + 4 + 2 * usize::from(*seen % size));
            let d = usize::from(id) * 16;
            let addr = u64::from_le_bytes(a.get(d));
            let len = u32::from_le_bytes(a.get(d + 8));
            out.push((id, addr, len, a.u16_at(d + 12)));
            *seen = seen.wrapping_add(1);
        }
        out
    }

    /// What a device does with the used ring: appends `(id, len)`.
    fn device_uses(a: &mut Area, used: &mut u16, size: u16, id: u32, len: u32) {
        let e = USED_AT + 4 + 8 * usize::from(*used % size);
        a.set(e, &id.to_le_bytes());
        a.set(e + 4, &len.to_le_bytes());
        *used = used.wrapping_add(1);
        a.set(USED_AT + 2, &used.to_le_bytes());
    }

    #[test]
    fn entries_reach_the_device_only_when_published_and_come_back_checked() {
        let mut a = Area::new();
        // SAFETY: the area is AREA page-aligned bytes that outlive `q`.
        let mut q = unsafe { Queue::new(a.ptr, 8) };
        let mut seen = 0;
        q.push(3, 0x1000, 2048, true);
        q.push(5, 0x2000, 60, false);
        assert!(device_takes(&a, &mut seen, 8).is_empty());
        assert!(q.publish(), "the device asks for notifications by default");
        assert!(!q.publish(), "nothing new, nothing to tell");
        assert_eq!(
            device_takes(&a, &mut seen, 8),
            [(3, 0x1000, 2048, DESC_F_WRITE), (5, 0x2000, 60, 0)]
        );
        assert_eq!(q.outstanding(), 2);
        let mut used = 0;
        assert_eq!(q.pop_used(), None);
        device_uses(&mut a, &mut used, 8, 5, 0);
        device_uses(&mut a, &mut used, 8, 9, 100);
        device_uses(&mut a, &mut used, 8, 3, 1514);
        assert_eq!(q.pop_used(), Some(Ok(Used { id: 5, len: 0 })));
        assert_eq!(q.pop_used(), Some(Err(BadId(9))), "an id beyond the queue");
        assert_eq!(q.pop_used(), Some(Ok(Used { id: 3, len: 1514 })));
        assert_eq!(q.pop_used(), None);
    }

    #[test]
    fn indices_wrap_and_the_device_may_decline_notifications() {
        let mut a = Area::new();
        // SAFETY: as above.
        let mut q = unsafe { Queue::new(a.ptr, 4) };
        let (mut seen, mut used) = (0u16, 0u16);
        a.set(USED_AT, &USED_F_NO_NOTIFY.to_le_bytes());
        for round in 0..20_000u32 {
            let id = (round % 4) as u16;
            q.push(id, u64::from(round), round, true);
            assert!(!q.publish(), "the device said not to notify it");
            let got = device_takes(&a, &mut seen, 4);
            assert_eq!(got, [(id, u64::from(round), round, DESC_F_WRITE)]);
            device_uses(&mut a, &mut used, 4, u32::from(id), round);
            assert_eq!(q.pop_used(), Some(Ok(Used { id, len: round })));
        }
        q.set_interrupts(false);
        assert_eq!(a.u16_at(AVAIL_AT), AVAIL_F_NO_INTERRUPT);
        q.set_interrupts(true);
        assert_eq!(a.u16_at(AVAIL_AT), 0);
    }
}
