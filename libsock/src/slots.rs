//! The process's socket memory for one session: a few segments (sealed
//! memfds, each registered with sockd once) carved into slots, one per
//! socket. A socket so costs neither a file descriptor nor a mapping of
//! its own, here or in sockd, and a process can hold as many sockets as
//! sockd allows rather than as many as its fd and mapping limits allow.
//!
//! Slots are handed out from the newest segment, or from the free slots
//! of their size. A closed socket's slot is *retired*: sockd may still
//! read it (a UDP socket flushes what its application queued before the
//! close), so it is reused only once sockd marks it released
//! (`sockring::state::RELEASED`), or once a restarted sockd took back
//! the process's sockets without it. Reuse first punches the slot's
//! pages out, so memory a burst of connections touched goes back to the
//! system when they close.
//!
//! A forked child shares its parent's segments (and session) but carves
//! only segments of its own: the two allocators would otherwise hand out
//! the same slot.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use strata_ipc::sockring::{self, Segment, SockMem};
use strata_proto::sock::Slot;

/// The first segment's bytes (address space: pages exist as sockets
/// touch them); each new one is twice the last, up to [`MAX_SEGMENT`].
const FIRST_SEGMENT: usize = 64 << 20;
/// The largest segment made (a slot larger than this gets one of its
/// own size).
const MAX_SEGMENT: usize = 4 << 30;
/// Retired slots looked at per allocation for a release by sockd, so
/// that a long list of slots sockd still holds costs a bounded amount.
const RETIRED_LOOKS: usize = 16;

/// A segment and what re-registering it needs.
pub(crate) struct SegmentRef {
    /// The name the session registered it under.
    pub(crate) id: u64,
    pub(crate) seg: Arc<Segment>,
    /// Its memfd: sent to sockd (again after a restart), and used to
    /// punch released slots out.
    pub(crate) fd: OwnedFd,
    /// The process that made it, the only one that hands out its slots.
    owner: u32,
}

/// One socket's slot.
#[derive(Clone)]
pub(crate) struct SlotRef {
    seg: Arc<SegmentRef>,
    /// Its first byte.
    off: usize,
    len: usize,
    /// Its header, where its rings as last laid out put it.
    hdr: usize,
}

impl SlotRef {
    /// How requests name it.
    pub(crate) fn wire(&self) -> Slot {
        Slot {
            seg: self.seg.id,
            off: self.hdr as u64,
        }
    }

    /// Lays out a fresh socket with rings of `tx` and `rx` bytes in it.
    fn lay_out(&mut self, tx: usize, rx: usize) -> io::Result<SockMem> {
        let m = SockMem::init(&self.seg.seg, self.off, tx, rx)?;
        self.hdr = m.offset();
        Ok(m)
    }
}

/// The allocator of one session's socket memory.
pub(crate) struct Slots {
    /// The process that carves `current` and owns `free` and `retired`
    /// (a forked child starts its own).
    owner: u32,
    /// Every segment this process knows (its own and inherited ones),
    /// registered with sockd.
    segments: Vec<Arc<SegmentRef>>,
    /// The segment being carved and its first unused byte.
    current: Option<(Arc<SegmentRef>, usize)>,
    /// Size of the next segment.
    next_len: usize,
    /// Free slots by length.
    free: HashMap<usize, Vec<SlotRef>>,
    /// Slots of closed sockets sockd may still read.
    retired: VecDeque<(SlotRef, SockMem)>,
}

impl Default for Slots {
    fn default() -> Slots {
        Slots {
            owner: std::process::id(),
            segments: Vec::new(),
            current: None,
            next_len: FIRST_SEGMENT,
            free: HashMap::new(),
            retired: VecDeque::new(),
        }
    }
}

/// A random segment name (processes sharing a session after a fork pick
/// their own, and must not collide).
fn segment_id() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into the live
    // local buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // No entropy yet: time and pid differ between processes too.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return t ^ (u64::from(std::process::id()) << 40);
    }
    u64::from_ne_bytes(b)
}

impl Slots {
    /// Every segment, to register again with a restarted sockd.
    pub(crate) fn segments(&self) -> &[Arc<SegmentRef>] {
        &self.segments
    }

    /// A forked child drops its parent's allocator state (the segments
    /// stay known: its inherited sockets live there).
    fn follow_fork(&mut self) {
        let me = std::process::id();
        if self.owner != me {
            self.owner = me;
            self.current = None;
            self.free.clear();
            self.retired.clear();
            self.next_len = FIRST_SEGMENT;
        }
    }

    /// A slot for a socket with rings of `tx` and `rx` bytes, laid out
    /// fresh. A new segment it needed comes back too: the caller
    /// registers it with sockd, then [`Slots::adopt`]s it (or drops it).
    pub(crate) fn take(
        &mut self,
        tx: usize,
        rx: usize,
    ) -> io::Result<(SlotRef, SockMem, Option<Arc<SegmentRef>>)> {
        self.follow_fork();
        let (tx, rx) = (sockring::ring_size(tx), sockring::ring_size(rx));
        let len = sockring::slot_len(tx, rx);
        self.look_at_retired();
        if let Some(mut s) = self.free.get_mut(&len).and_then(Vec::pop) {
            let m = s.lay_out(tx, rx)?;
            return Ok((s, m, None));
        }
        if let Some((seg, used)) = &mut self.current {
            if seg.seg.len() - *used >= len {
                let mut s = SlotRef {
                    seg: seg.clone(),
                    off: *used,
                    len,
                    hdr: 0,
                };
                *used += len;
                let m = s.lay_out(tx, rx)?;
                return Ok((s, m, None));
            }
        }
        let seg_len = self.next_len.max(len);
        let (seg, fd) = Segment::create(seg_len)?;
        let sr = Arc::new(SegmentRef {
            id: segment_id(),
            seg,
            fd,
            owner: self.owner,
        });
        let mut s = SlotRef {
            seg: sr.clone(),
            off: 0,
            len,
            hdr: 0,
        };
        let m = s.lay_out(tx, rx)?;
        Ok((s, m, Some(sr)))
    }

    /// A new segment sockd took: carve it from now on.
    pub(crate) fn adopt(&mut self, sr: Arc<SegmentRef>, first: &SlotRef) {
        self.next_len = (self.next_len * 2).min(MAX_SEGMENT);
        self.current = Some((sr.clone(), first.len));
        self.segments.push(sr);
    }

    /// Whether this process hands out `s` (a slot of a segment another
    /// process made, before or after a fork, stays that one's).
    fn ours(&self, s: &SlotRef) -> bool {
        s.seg.owner == std::process::id() && s.seg.owner == self.owner
    }

    /// A slot sockd never saw (its request failed): free at once.
    pub(crate) fn unused(&mut self, s: SlotRef) {
        if self.ours(&s) {
            self.free.entry(s.len).or_default().push(s);
        }
    }

    /// The slot of a closed socket: reused once sockd releases it.
    pub(crate) fn retire(&mut self, s: SlotRef, m: SockMem) {
        if self.ours(&s) {
            self.retired.push_back((s, m));
        }
    }

    /// A restarted sockd took back the process's sockets: it never saw
    /// the retired slots, which are free.
    pub(crate) fn sockd_restarted(&mut self) {
        while let Some((s, _)) = self.retired.pop_front() {
            self.release(s);
        }
    }

    /// Frees the retired slots sockd released, looking at a few.
    fn look_at_retired(&mut self) {
        for _ in 0..RETIRED_LOOKS.min(self.retired.len()) {
            let Some((s, m)) = self.retired.pop_front() else {
                break;
            };
            if m.released() {
                self.release(s);
            } else {
                self.retired.push_back((s, m));
            }
        }
    }

    /// Punches a slot's pages out and frees it (a slot whose pages
    /// cannot be punched is dropped instead: it would come back dirty).
    fn release(&mut self, s: SlotRef) {
        if Segment::punch(&s.seg.fd, s.off, s.len).is_ok() {
            self.free.entry(s.len).or_default().push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(sl: &mut Slots, tx: usize, rx: usize) -> (SlotRef, SockMem) {
        let (s, m, new) = sl.take(tx, rx).unwrap();
        if let Some(sr) = new {
            sl.adopt(sr, &s);
        }
        (s, m)
    }

    #[test]
    fn slots_are_carved_from_few_segments_and_reused_only_once_released() {
        let mut sl = Slots::default();
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(take(&mut sl, 4096, 4096));
        }
        assert_eq!(sl.segments().len(), 1, "100 small sockets in one segment");
        let offs: std::collections::HashSet<_> = held.iter().map(|(s, _)| s.off).collect();
        assert_eq!(offs.len(), 100, "no slot handed out twice");
        // A retired slot sockd still holds is not reused.
        let (s, m) = held.pop().unwrap();
        let off = s.off;
        m.hdr().state.store(0, std::sync::atomic::Ordering::Relaxed);
        sl.retire(s, m.clone());
        let (s2, _) = take(&mut sl, 4096, 4096);
        assert_ne!(s2.off, off);
        // Released: reused, and laid out afresh.
        let srv = SockMem::attach(m.segment(), m.offset()).unwrap();
        srv.deliver_dgram("1.2.3.4:5".parse().unwrap(), b"old");
        srv.release();
        let (s3, m3) = take(&mut sl, 4096, 4096);
        assert_eq!(s3.off, off);
        assert!(m3.peek_recv().is_none() && !m3.released());
    }

    #[test]
    fn ten_thousand_slots_never_overlap() {
        let mut sl = Slots::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let (s, _) = take(&mut sl, 256 << 10, 256 << 10);
            assert!(s.off + s.len <= s.seg.seg.len());
            assert!(seen.insert((s.seg.id, s.off)), "{} {}", s.seg.id, s.off);
        }
    }

    #[test]
    fn segments_grow_and_a_large_slot_gets_room() {
        let mut sl = Slots::default();
        let (big, _) = take(&mut sl, 64 << 20, 64 << 20);
        assert!(big.seg.seg.len() >= 128 << 20);
        let (next, _) = take(&mut sl, 4096, 4096);
        assert_eq!(sl.segments().len(), 2);
        assert_eq!(
            (next.off, next.seg.seg.len()),
            (0, 2 * FIRST_SEGMENT),
            "twice the last"
        );
        // The unused slot of a failed request is free at once.
        let (s, _m, _) = sl.take(4096, 4096).unwrap();
        let off = s.off;
        sl.unused(s);
        assert_eq!(take(&mut sl, 4096, 4096).0.off, off);
    }
}
