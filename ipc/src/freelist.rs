//! The pool's free lists: lock-free stacks (Treiber stacks) of buffer
//! indices, one per size class.
//!
//! A list's head is one 64-bit word holding the index on top, the number
//! of buffers on the list, a lock bit and a tag. Because the count moves
//! in the same compare-and-swap as the index, a layer killed at any
//! instruction can never leave the count wrong: the buffer is either on
//! the list and counted, or off it and not.
//!
//! What a kill can still leave behind is a buffer taken off a list whose
//! new holder died before recording itself (inside `alloc`), or one whose
//! last holder died between letting go and pushing it back (inside the
//! last free). Such a buffer is on no list and held by nobody. The
//! launcher finds them with [`lock`] and [`walk`]: with the lists held
//! still for a moment, a buffer that no list holds, no layer holds and no
//! live layer is in the middle of moving (each layer names the buffer it
//! is moving in its control block while it does) is lost, and goes back.
//! Layers that meet a locked list wait; the launcher holds it for one
//! walk of the list at a restart.
//!
//! The tag changes on every update, so a head that was popped and pushed
//! back in between (ABA) fails a stale compare-and-swap.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Bits of the index on top.
const INDEX_BITS: u32 = 20;
/// Bits of the count.
const COUNT_BITS: u32 = 20;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const LOCK: u64 = 1 << (INDEX_BITS + COUNT_BITS);
const TAG_SHIFT: u32 = INDEX_BITS + COUNT_BITS + 1;

/// The empty list's top.
pub const EMPTY: u32 = INDEX_MASK as u32;
/// Buffers a pool may have in all (every index below [`EMPTY`]).
pub const MAX_BUFFERS: u32 = EMPTY;

/// A decoded head word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The index on top, or [`EMPTY`].
    pub top: u32,
    /// Buffers on the list.
    pub count: u32,
    /// The launcher holds the list still.
    pub locked: bool,
    tag: u32,
}

impl Head {
    fn decode(w: u64) -> Head {
        Head {
            top: (w & INDEX_MASK) as u32,
            count: ((w >> INDEX_BITS) & COUNT_MASK) as u32,
            locked: w & LOCK != 0,
            tag: (w >> TAG_SHIFT) as u32,
        }
    }

    fn encode(self) -> u64 {
        u64::from(self.top) & INDEX_MASK
            | (u64::from(self.count) & COUNT_MASK) << INDEX_BITS
            | if self.locked { LOCK } else { 0 }
            | u64::from(self.tag) << TAG_SHIFT
    }

    /// This head changed to `top` and `count`, with a new tag.
    fn next(self, top: u32, count: u32, locked: bool) -> u64 {
        Head {
            top,
            count,
            locked,
            tag: self.tag.wrapping_add(1),
        }
        .encode()
    }
}

/// The word of an empty, unlocked list.
pub fn empty() -> u64 {
    Head {
        top: EMPTY,
        count: 0,
        locked: false,
        tag: 0,
    }
    .encode()
}

/// The list's head as it is now.
pub fn head(list: &AtomicU64) -> Head {
    Head::decode(list.load(Acquire))
}

/// Waits while the launcher holds the list (it does so for one walk):
/// spinning a little, then yielding, so that on a small machine the
/// launcher gets the core it needs to finish.
fn unlocked(list: &AtomicU64) -> u64 {
    let mut spins = 0u32;
    loop {
        let w = list.load(Acquire);
        if w & LOCK == 0 {
            return w;
        }
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Pushes buffer `i`; `next` is its link field.
pub fn push(list: &AtomicU64, i: u32, next: &AtomicU32) {
    let mut w = unlocked(list);
    loop {
        let h = Head::decode(w);
        next.store(h.top, Relaxed);
        match list.compare_exchange_weak(w, h.next(i, h.count + 1, false), AcqRel, Acquire) {
            Ok(_) => return,
            Err(v) if v & LOCK != 0 => w = unlocked(list),
            Err(v) => w = v,
        }
    }
}

/// Pops the buffer on top. `intend(i)` is told each index the pop is
/// about to take, before the compare-and-swap that takes it (the layer
/// records it, so that a kill right after leaves a trace); `next_of(i)`
/// is buffer `i`'s link field. `None` when the list is empty or its top
/// is not a buffer of `n` (only a corrupted head can be so: refused,
/// never followed).
pub fn pop<'a>(
    list: &AtomicU64,
    n: u32,
    mut intend: impl FnMut(u32),
    next_of: impl Fn(u32) -> &'a AtomicU32,
) -> Option<u32> {
    let mut w = unlocked(list);
    loop {
        let h = Head::decode(w);
        if h.top == EMPTY || h.top >= n {
            return None;
        }
        intend(h.top);
        let below = next_of(h.top).load(Relaxed);
        let new = h.next(below, h.count.saturating_sub(1), false);
        match list.compare_exchange_weak(w, new, AcqRel, Acquire) {
            Ok(_) => return Some(h.top),
            Err(v) if v & LOCK != 0 => w = unlocked(list),
            Err(v) => w = v,
        }
    }
}

/// Takes the list's lock (launcher only: one holder at a time), waiting
/// for a push or pop under way to finish; returns the head as locked.
pub fn lock(list: &AtomicU64) -> Head {
    let mut w = unlocked(list);
    loop {
        let h = Head::decode(w);
        match list.compare_exchange_weak(w, h.next(h.top, h.count, true), AcqRel, Acquire) {
            Ok(_) => return Head::decode(list.load(Acquire)),
            Err(v) if v & LOCK != 0 => w = unlocked(list),
            Err(v) => w = v,
        }
    }
}

/// Visits the buffers of a locked list from the top, at most `n` of
/// them (a cycle in a corrupted list cannot loop for ever).
pub fn walk<'a>(
    locked: Head,
    n: u32,
    next_of: impl Fn(u32) -> &'a AtomicU32,
    mut visit: impl FnMut(u32),
) {
    let mut i = locked.top;
    let mut seen = 0;
    while i != EMPTY && i < n && seen < n {
        visit(i);
        seen += 1;
        i = next_of(i).load(Relaxed);
    }
}

/// Releases a list [`lock`] took, with `found` (lost buffers put back,
/// linked through `next_of`) pushed on top.
pub fn unlock<'a>(list: &AtomicU64, found: &[u32], next_of: impl Fn(u32) -> &'a AtomicU32) {
    let h = Head::decode(list.load(Acquire));
    debug_assert!(h.locked);
    let mut top = h.top;
    for &i in found {
        next_of(i).store(top, Relaxed);
        top = i;
    }
    // A release: the links written above are seen by whoever pops next.
    list.store(h.next(top, h.count + found.len() as u32, false), Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn links(n: usize) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(EMPTY)).collect()
    }

    #[test]
    fn push_pop_keep_the_count_in_the_head() {
        let l = AtomicU64::new(empty());
        let next = links(8);
        for i in 0..8 {
            push(&l, i, &next[i as usize]);
        }
        assert_eq!((head(&l).top, head(&l).count), (7, 8));
        let mut intended = Vec::new();
        let got = pop(&l, 8, |i| intended.push(i), |i| &next[i as usize]);
        assert_eq!(got, Some(7));
        assert_eq!(intended, vec![7]);
        assert_eq!(head(&l).count, 7);
        let mut all = Vec::new();
        while let Some(i) = pop(&l, 8, |_| {}, |i| &next[i as usize]) {
            all.push(i);
        }
        assert_eq!(all, vec![6, 5, 4, 3, 2, 1, 0]);
        assert_eq!((head(&l).top, head(&l).count), (EMPTY, 0));
    }

    #[test]
    fn a_corrupted_top_is_refused() {
        let l = AtomicU64::new(empty());
        let next = links(4);
        push(&l, 3, &next[3]);
        assert_eq!(pop(&l, 2, |_| {}, |i| &next[i as usize]), None);
    }

    #[test]
    fn lock_walk_and_unlock_put_lost_buffers_back() {
        let l = AtomicU64::new(empty());
        let next = links(6);
        for i in [0, 2, 4] {
            push(&l, i, &next[i as usize]);
        }
        let h = lock(&l);
        assert!(h.locked);
        let mut on = Vec::new();
        walk(h, 6, |i| &next[i as usize], |i| on.push(i));
        assert_eq!(on, vec![4, 2, 0]);
        unlock(&l, &[1, 5], |i| &next[i as usize]);
        let h = head(&l);
        assert!(!h.locked);
        assert_eq!((h.top, h.count), (5, 5));
        let mut all = Vec::new();
        while let Some(i) = pop(&l, 6, |_| {}, |i| &next[i as usize]) {
            all.push(i);
        }
        assert_eq!(all, vec![5, 1, 4, 2, 0]);
    }

    #[test]
    fn threads_pushing_and_popping_lose_nothing_while_the_list_is_locked() {
        const N: u32 = 256;
        let l = Arc::new(AtomicU64::new(empty()));
        let next: Arc<Vec<AtomicU32>> = Arc::new(links(N as usize));
        for i in 0..N {
            push(&l, i, &next[i as usize]);
        }
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (l, next) = (l.clone(), next.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(i) = pop(&l, N, |_| {}, |i| &next[i as usize]) {
                            push(&l, i, &next[i as usize]);
                        }
                    }
                })
            })
            .collect();
        for _ in 0..50 {
            let h = lock(&l);
            let mut n = 0;
            walk(h, N, |i| &next[i as usize], |_| n += 1);
            // Popped but not yet pushed back by a worker: not on the list.
            assert!(n <= N && n == h.count, "{n} walked, {} counted", h.count);
            unlock(&l, &[], |i| &next[i as usize]);
        }
        for w in workers {
            w.join().unwrap();
        }
        let h = head(&l);
        assert_eq!(h.count, N);
        let mut seen = vec![false; N as usize];
        let h = lock(&l);
        walk(
            h,
            N,
            |i| &next[i as usize],
            |i| {
                assert!(!seen[i as usize], "{i} twice");
                seen[i as usize] = true;
            },
        );
        unlock(&l, &[], |i| &next[i as usize]);
        assert!(seen.iter().all(|&s| s));
    }
}
