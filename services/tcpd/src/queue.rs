//! Queues of buffers as singly linked lists through the entry slab, and
//! the journal that makes each event's changes to them crash-atomic (see
//! [`block`](crate::block)'s module documentation).
//!
//! Entries are allocated from a free stack that is rebuilt at start (an
//! entry is free when its `owner` is 0). Every operation is O(1) except
//! the walks the callers do, and none allocates: the side tables are
//! sized for the whole slab at start.

use std::sync::atomic::{compiler_fence, Ordering};

use strata_ipc::{Buffers, Handle};

use crate::block::{journal, ConnBlock, Journal, List, SegEntry, UndoRec, NIL};

/// Keeps the compiler from moving arena stores across a step of the
/// journal. A SIGKILL stops the process between two instructions, and the
/// restarted one reads the memory the dead one left: program order is
/// what matters, not the order other CPUs see (the kill and the restart
/// pass through the kernel, which orders everything).
#[inline(always)]
fn step() {
    compiler_fence(Ordering::SeqCst);
    crash_point();
}

/// A place where the crash tests may kill the core (a no-op outside
/// tests).
#[inline(always)]
pub(crate) fn crash_point() {
    #[cfg(test)]
    crate::tests::crash::point();
}

/// The entry slab, its free stack and the journal.
pub(crate) struct Slab<'a> {
    pub e: &'a mut [SegEntry],
    free: Vec<u32>,
    jn: &'a mut Journal,
    undo: &'a mut [UndoRec],
    /// The event in which each entry was last saved or taken, so that it
    /// is saved once per event.
    mark: Vec<u32>,
    /// The current event's number (never 0).
    epoch: u32,
    /// Entries the current event unlinked: released, and their buffers
    /// freed, once its block is written back.
    gone: Vec<u32>,
}

impl<'a> Slab<'a> {
    /// A slab over `e`, every entry free (and cleared).
    pub fn new(e: &'a mut [SegEntry], jn: &'a mut Journal, undo: &'a mut [UndoRec]) -> Slab<'a> {
        for x in e.iter_mut() {
            *x = SegEntry::default();
        }
        *jn = Journal {
            blocks_used: jn.blocks_used,
            ..Journal::default()
        };
        let free = (0..e.len() as u32).rev().collect();
        Self::with_free(e, free, jn, undo)
    }

    /// A slab over `e` whose entries with `keep(i)` stay in use; every
    /// other entry is cleared and free. The journal must have been dealt
    /// with (it is left idle).
    pub fn rebuild(
        e: &'a mut [SegEntry],
        jn: &'a mut Journal,
        undo: &'a mut [UndoRec],
        keep: impl Fn(usize) -> bool,
    ) -> Slab<'a> {
        let mut free = Vec::with_capacity(e.len());
        for i in (0..e.len()).rev() {
            if !keep(i) {
                e[i] = SegEntry::default();
                free.push(i as u32);
            }
        }
        *jn = Journal {
            blocks_used: jn.blocks_used,
            ..Journal::default()
        };
        Self::with_free(e, free, jn, undo)
    }

    fn with_free(
        e: &'a mut [SegEntry],
        free: Vec<u32>,
        jn: &'a mut Journal,
        undo: &'a mut [UndoRec],
    ) -> Slab<'a> {
        let n = e.len();
        assert!(undo.len() >= n, "an undo record per queue entry");
        Slab {
            e,
            free,
            jn,
            undo,
            mark: vec![0; n],
            epoch: 1,
            gone: Vec::with_capacity(n),
        }
    }

    /// Connection block `i` is about to be taken: raises the high-water
    /// mark a restore reads up to ([`Journal::blocks_used`]) first, so
    /// that a kill between the two never hides the block.
    pub fn block_taken(&mut self, i: usize) {
        if self.jn.blocks_used != 0 && self.jn.blocks_to_read(usize::MAX) <= i {
            self.jn.set_blocks_used(i + 1);
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// See [`Journal::blocks_to_read`].
    pub fn blocks_to_read(&self, n: usize) -> usize {
        self.jn.blocks_to_read(n)
    }

    /// See [`Journal::set_blocks_used`].
    pub fn set_blocks_used(&mut self, upto: usize) {
        self.jn.set_blocks_used(upto);
    }

    /// The memory, for a restart.
    pub fn into_parts(self) -> (&'a mut [SegEntry], &'a mut Journal, &'a mut [UndoRec]) {
        (self.e, self.jn, self.undo)
    }

    /// Entries free.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    // ---- the journal ----

    /// Starts an event on block `block` (or goes on with the one an inner
    /// event interrupted). An event in progress (one running others
    /// inside it) must not have changed an entry yet: the inner event
    /// takes the journal over, and its commit is final on its own.
    pub fn begin(&mut self, block: usize) {
        debug_assert!(
            self.jn.state != journal::ACTIVE || (self.jn.n == 0 && self.gone.is_empty()),
            "a nested event after the outer one changed entries"
        );
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.mark.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
        // Records of an earlier event must not count for this one: the
        // count is cleared before the journal names the block.
        self.jn.n = 0;
        step();
        self.jn.block = block as u32;
        step();
        self.jn.state = journal::ACTIVE;
        step();
    }

    /// Saves entry `i`'s fields before the first change of this event.
    #[inline]
    fn save(&mut self, i: u32) {
        let k = i as usize;
        debug_assert_eq!(
            self.jn.state,
            journal::ACTIVE,
            "an entry changed outside an event"
        );
        if self.mark[k] == self.epoch || self.jn.state != journal::ACTIVE {
            return;
        }
        self.mark[k] = self.epoch;
        let n = self.jn.n as usize;
        self.undo[n] = UndoRec::of(i, &self.e[k]);
        step();
        self.jn.n = n as u32 + 1;
        step();
    }

    /// Ends the event: `c` becomes block `blk` (the arena's),
    /// crash-atomically; the journal is back in the event around it, if
    /// any (`outer`). [`finish`](Self::finish) must follow.
    pub fn commit(&mut self, blk: &mut ConnBlock, c: &ConnBlock, outer: Option<usize>) {
        self.jn.after = *c;
        step();
        self.jn.state = journal::COMMIT;
        step();
        // A write torn here is made whole again from the journal.
        #[cfg(test)]
        {
            blk.snd_una = c.snd_una;
            blk.rcv_q = c.rcv_q;
            step();
        }
        *blk = *c;
        step();
        // Idle before naming another block: COMMIT with the outer block's
        // index would copy this block's image over it.
        self.jn.state = journal::IDLE;
        step();
        if let Some(o) = outer {
            self.begin(o);
        }
    }

    /// Releases the entries the committed event unlinked and frees their
    /// buffers.
    pub fn finish<B: Buffers>(&mut self, pool: &mut B) {
        // Linked from no block now: a crash from here on leaves them to
        // restore, or (entry released, buffer not yet freed) leaves a
        // reference that no entry names, which the launcher's reclaim
        // takes back.
        while let Some(i) = self.gone.pop() {
            let h = self.e[i as usize].h;
            self.release(i);
            step();
            pool.free(&h);
        }
    }

    // ---- entries ----

    /// Takes a free entry for `h`, owned by block `owner`.
    pub fn alloc(&mut self, owner: usize, h: Handle, seq: u32, flags: u32) -> Option<u32> {
        let i = self.free.pop()?;
        // New to this event: nothing to save (after a crash no block
        // links it, and restore frees it).
        self.mark[i as usize] = self.epoch;
        self.e[i as usize] = SegEntry {
            h,
            next: NIL,
            owner: owner as u32 + 1,
            seq,
            flags,
            sent_fence: 0,
            sent_us: 0,
            reserved: [0; 10],
        };
        step();
        Some(i)
    }

    /// Returns entry `i` to the free stack at once (its handle is the
    /// caller's). Only for entries no block links.
    fn release(&mut self, i: u32) {
        if let Some(x) = self.e.get_mut(i as usize) {
            if x.owner != 0 {
                *x = SegEntry::default();
                self.free.push(i);
            }
        }
    }

    /// Gives up entry `i`, unlinked by the current event, and the buffer
    /// reference it holds, once the event is over.
    pub fn discard(&mut self, i: u32) {
        debug_assert_eq!(
            self.jn.state,
            journal::ACTIVE,
            "an entry given up outside an event"
        );
        self.gone.push(i);
    }

    /// The entry at `i`.
    #[inline]
    pub fn get(&self, i: u32) -> &SegEntry {
        &self.e[i as usize]
    }

    /// Marks when entry `i`'s data was sent.
    pub fn set_sent(&mut self, i: u32, fence: u32, us: u32) {
        self.save(i);
        let x = &mut self.e[i as usize];
        x.sent_fence = fence;
        x.sent_us = us;
        step();
    }

    /// Sets flags `f` on entry `i`.
    pub fn set_flags(&mut self, i: u32, f: u32) {
        self.save(i);
        self.e[i as usize].flags = f;
        step();
    }

    /// Grows entry `i` of list `l` by `n` bytes written behind its data.
    pub fn grow(&mut self, l: &mut List, i: u32, n: u32) {
        self.save(i);
        self.e[i as usize].h.data_len += n;
        l.bytes = l.bytes.wrapping_add(n);
        step();
    }

    /// Appends entry `i` to `l`.
    pub fn push_back(&mut self, l: &mut List, i: u32) {
        self.save(i);
        let n = self.e[i as usize].len();
        self.e[i as usize].next = NIL;
        step();
        if l.tail == NIL {
            l.head = i;
        } else {
            self.save(l.tail);
            self.e[l.tail as usize].next = i;
            step();
        }
        l.tail = i;
        l.count += 1;
        l.bytes = l.bytes.wrapping_add(n);
    }

    /// Inserts entry `i` after `prev` (at the head when `prev` is NIL).
    pub fn insert_after(&mut self, l: &mut List, prev: u32, i: u32) {
        self.save(i);
        let n = self.e[i as usize].len();
        if prev == NIL {
            self.e[i as usize].next = l.head;
            step();
            l.head = i;
        } else {
            self.save(prev);
            self.e[i as usize].next = self.e[prev as usize].next;
            step();
            self.e[prev as usize].next = i;
            step();
        }
        if self.e[i as usize].next == NIL {
            l.tail = i;
        }
        l.count += 1;
        l.bytes = l.bytes.wrapping_add(n);
    }

    /// Unlinks the entry after `prev` (the head when `prev` is NIL) and
    /// returns its index; the entry stays allocated, and its own link as
    /// it was (the block before the event may still name it).
    pub fn unlink_after(&mut self, l: &mut List, prev: u32) -> Option<u32> {
        let i = if prev == NIL {
            l.head
        } else {
            self.e[prev as usize].next
        };
        if i == NIL {
            return None;
        }
        let next = self.e[i as usize].next;
        if prev == NIL {
            l.head = next;
        } else {
            self.save(prev);
            self.e[prev as usize].next = next;
            step();
        }
        if l.tail == i {
            l.tail = prev;
        }
        l.count = l.count.saturating_sub(1);
        l.bytes = l.bytes.wrapping_sub(self.e[i as usize].len());
        Some(i)
    }

    /// Unlinks the head of `l`.
    pub fn pop_front(&mut self, l: &mut List) -> Option<u32> {
        self.unlink_after(l, NIL)
    }

    /// Drops the first `n` bytes of entry `i` of list `l` (it must keep at
    /// least one byte or be FIN-carrying).
    pub fn trim_front(&mut self, l: &mut List, i: u32, n: u32) {
        self.save(i);
        let x = &mut self.e[i as usize];
        let n = n.min(x.h.data_len);
        x.h.pull_front(n);
        x.seq = x.seq.wrapping_add(n);
        l.bytes = l.bytes.wrapping_sub(n);
        step();
    }
}

/// Finishes or undoes the event a dead core left in `jn` (see
/// [`block`](crate::block)): afterwards every block is as before or as
/// after it, and the journal is idle. Entries the event took or unlinked
/// are then linked from no block; the caller frees them.
pub(crate) fn recover(
    conns: &mut [ConnBlock],
    segs: &mut [SegEntry],
    jn: &mut Journal,
    undo: &[UndoRec],
) {
    match jn.state {
        journal::ACTIVE => {
            let n = (jn.n as usize).min(undo.len());
            for r in undo[..n].iter().rev() {
                if let Some(e) = segs.get_mut(r.idx as usize) {
                    r.apply(e);
                }
            }
        }
        journal::COMMIT => {
            if let Some(b) = conns.get_mut(jn.block as usize) {
                *b = jn.after;
            }
        }
        _ => {}
    }
    jn.state = journal::IDLE;
    jn.n = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(len: u32) -> Handle {
        let mut h = Handle::new(1, 1, 192);
        h.data_len = len;
        h
    }

    #[test]
    fn list_operations() {
        let mut mem = vec![SegEntry::default(); 4];
        let mut jn = Journal::default();
        let mut undo = vec![UndoRec::default(); 4];
        let mut s = Slab::new(&mut mem, &mut jn, &mut undo);
        s.begin(0);
        let mut l = List::default();
        let a = s.alloc(0, h(10), 100, 0).unwrap();
        let b = s.alloc(0, h(20), 110, 0).unwrap();
        let c = s.alloc(0, h(5), 90, 0).unwrap();
        s.push_back(&mut l, a);
        s.push_back(&mut l, b);
        s.insert_after(&mut l, NIL, c);
        assert_eq!((l.head, l.tail, l.count, l.bytes), (c, b, 3, 35));
        assert_eq!(s.unlink_after(&mut l, a), Some(b));
        assert_eq!((l.tail, l.count, l.bytes), (a, 2, 15));
        s.trim_front(&mut l, a, 4);
        assert_eq!((s.get(a).seq, s.get(a).len(), l.bytes), (104, 6, 11));
        assert_eq!(s.pop_front(&mut l), Some(c));
        assert_eq!(s.pop_front(&mut l), Some(a));
        assert!(l.is_empty() && l.tail == NIL && l.bytes == 0);
        s.discard(a);
        s.discard(c);
        assert_eq!(s.free_count(), 1);
        let mut pool = strata_ipc::HeapPool::new(4, 0);
        s.commit(&mut ConnBlock::default(), &ConnBlock::default(), None);
        s.finish(&mut pool);
        assert_eq!(s.free_count(), 3);
    }
}
