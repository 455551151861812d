//! Queues of buffers as singly linked lists through the entry slab.
//!
//! Entries are allocated from a free stack that is rebuilt at start (an
//! entry is free when its `owner` is 0). Every operation is O(1) except
//! the walks the callers do, and none allocates.

use strata_ipc::Handle;

use crate::block::{List, SegEntry, NIL};

/// The entry slab and its free stack.
pub(crate) struct Slab<'a> {
    pub e: &'a mut [SegEntry],
    free: Vec<u32>,
}

impl<'a> Slab<'a> {
    /// A slab over `e`, every entry free (and cleared).
    pub fn new(e: &'a mut [SegEntry]) -> Slab<'a> {
        for x in e.iter_mut() {
            *x = SegEntry::default();
        }
        let free = (0..e.len() as u32).rev().collect();
        Slab { e, free }
    }

    /// A slab over `e` whose entries with `keep(i)` stay in use; every
    /// other entry is cleared and free.
    pub fn rebuild(e: &'a mut [SegEntry], keep: impl Fn(usize) -> bool) -> Slab<'a> {
        let mut free = Vec::with_capacity(e.len());
        for i in (0..e.len()).rev() {
            if !keep(i) {
                e[i] = SegEntry::default();
                free.push(i as u32);
            }
        }
        Slab { e, free }
    }

    /// Entries free.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Takes a free entry for `h`, owned by block `owner`.
    pub fn alloc(&mut self, owner: usize, h: Handle, seq: u32, flags: u32) -> Option<u32> {
        let i = self.free.pop()?;
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
        Some(i)
    }

    /// Returns entry `i` to the free stack (its handle is the caller's).
    pub fn release(&mut self, i: u32) {
        if let Some(x) = self.e.get_mut(i as usize) {
            if x.owner != 0 {
                *x = SegEntry::default();
                self.free.push(i);
            }
        }
    }

    /// The entry at `i`.
    #[inline]
    pub fn get(&self, i: u32) -> &SegEntry {
        &self.e[i as usize]
    }

    /// The entry at `i`, writable.
    #[inline]
    pub fn get_mut(&mut self, i: u32) -> &mut SegEntry {
        &mut self.e[i as usize]
    }

    /// Appends entry `i` to `l`.
    pub fn push_back(&mut self, l: &mut List, i: u32) {
        let n = self.e[i as usize].len();
        self.e[i as usize].next = NIL;
        if l.tail == NIL {
            l.head = i;
        } else {
            self.e[l.tail as usize].next = i;
        }
        l.tail = i;
        l.count += 1;
        l.bytes = l.bytes.wrapping_add(n);
    }

    /// Inserts entry `i` after `prev` (at the head when `prev` is NIL).
    pub fn insert_after(&mut self, l: &mut List, prev: u32, i: u32) {
        let n = self.e[i as usize].len();
        if prev == NIL {
            self.e[i as usize].next = l.head;
            l.head = i;
        } else {
            self.e[i as usize].next = self.e[prev as usize].next;
            self.e[prev as usize].next = i;
        }
        if self.e[i as usize].next == NIL {
            l.tail = i;
        }
        l.count += 1;
        l.bytes = l.bytes.wrapping_add(n);
    }

    /// Unlinks the entry after `prev` (the head when `prev` is NIL) and
    /// returns its index; the entry stays allocated.
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
            self.e[prev as usize].next = next;
        }
        if l.tail == i {
            l.tail = prev;
        }
        l.count = l.count.saturating_sub(1);
        l.bytes = l.bytes.wrapping_sub(self.e[i as usize].len());
        self.e[i as usize].next = NIL;
        Some(i)
    }

    /// Unlinks the head of `l`.
    pub fn pop_front(&mut self, l: &mut List) -> Option<u32> {
        self.unlink_after(l, NIL)
    }

    /// Drops the first `n` bytes of entry `i` of list `l` (it must keep at
    /// least one byte or be FIN-carrying).
    pub fn trim_front(&mut self, l: &mut List, i: u32, n: u32) {
        let x = &mut self.e[i as usize];
        let n = n.min(x.h.data_len);
        x.h.pull_front(n);
        x.seq = x.seq.wrapping_add(n);
        l.bytes = l.bytes.wrapping_sub(n);
    }
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
        let mut s = Slab::new(&mut mem);
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
        s.release(a);
        s.release(a);
        assert_eq!(s.free_count(), 2);
    }
}
