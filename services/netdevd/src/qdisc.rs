//! The queueing discipline of one interface in one direction: a fault
//! stage (loss, duplication, reordering, delay), a bounded FIFO (pfifo)
//! and a token-bucket rate limit at its exit. Pure logic over handles and
//! a clock the caller passes in; the process around it moves the handles.
//!
//! ```text
//! enqueue ─ loss ─ duplicate ─ reorder ─ delay ─▶ pfifo ─ token bucket ─▶ dequeue
//! ```
//!
//! With every fault and the rate limit off, enqueue and dequeue are the
//! plain pfifo and draw no random numbers.

use crate::fault::{DelayQueue, Rng, TokenBucket};
use std::collections::VecDeque;
use strata_ipc::qdisc_cfg::QdiscSettings;
use strata_ipc::{Buffers, Handle};

/// Longest a packet held back for reordering waits for another to
/// overtake it; then it leaves in order.
pub const REORDER_HOLD_NS: u64 = 10_000_000;

/// Seed used when the settings give none.
const DEFAULT_SEED: u64 = 0x5354_5241_5441_4e45;

/// A packet FIFO with a hard limit; arrivals beyond it are refused (the
/// caller frees and counts them), as Linux's pfifo does.
pub struct Pfifo {
    q: VecDeque<Handle>,
    limit: usize,
    /// Packets refused because the queue was full.
    pub drops: u64,
}

impl Pfifo {
    /// A queue holding at most `limit` packets. Its storage is allocated
    /// once, here, so enqueueing never allocates.
    pub fn new(limit: usize) -> Self {
        Pfifo {
            q: VecDeque::with_capacity(limit),
            limit,
            drops: 0,
        }
    }

    /// Queues `h`, or gives it back when the queue is full.
    pub fn enqueue(&mut self, h: Handle) -> Result<(), Handle> {
        if self.q.len() >= self.limit {
            self.drops += 1;
            return Err(h);
        }
        self.q.push_back(h);
        Ok(())
    }

    /// The packet to send next.
    pub fn dequeue(&mut self) -> Option<Handle> {
        self.q.pop_front()
    }

    /// The packet that would be sent next, left in place.
    pub fn front(&self) -> Option<&Handle> {
        self.q.front()
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// True when the next arrival would be refused.
    pub fn is_full(&self) -> bool {
        self.q.len() >= self.limit
    }
}

/// What the qdisc did, since the caller last took the counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets dropped by the loss fault.
    pub loss: u64,
    /// Duplicates sent (a copy of the packet follows it).
    pub duplicate: u64,
    /// Duplicates not made because the pool had no buffer.
    pub duplicate_no_buffer: u64,
    /// Packets overtaken by the one after them.
    pub reorder: u64,
    /// Packets that went through the delay queue.
    pub delayed: u64,
    /// Packets dropped because the delay queue was full.
    pub delay_queue_full: u64,
    /// Times the head of the queue had to wait for tokens.
    pub rate_limited_waits: u64,
    /// Packets dropped because the pfifo was full.
    pub queue_full: u64,
}

/// One interface's discipline in one direction.
pub struct Qdisc {
    fifo: Pfifo,
    delayq: DelayQueue,
    /// A packet held back for reordering, and when it must go anyway.
    held: Option<(Handle, u64)>,
    bucket: Option<TokenBucket>,
    rng: Rng,
    cfg: QdiscSettings,
    salt: u64,
    /// Faults or a rate limit are on.
    active: bool,
    /// The head of the fifo is waiting for tokens (counted once per wait).
    blocked: bool,
    stats: Stats,
    /// Room for one packet, for making duplicates.
    scratch: Vec<u8>,
}

impl Qdisc {
    /// A plain pfifo of `limit` packets (the delay queue, when a delay is
    /// configured, holds as many again). `salt` tells interfaces and
    /// directions apart in the fault generator.
    pub fn new(limit: usize, salt: u64) -> Qdisc {
        Qdisc {
            fifo: Pfifo::new(limit),
            delayq: DelayQueue::default(),
            held: None,
            bucket: None,
            rng: Rng::new(DEFAULT_SEED, salt),
            cfg: QdiscSettings::default(),
            salt,
            active: false,
            blocked: false,
            stats: Stats::default(),
            scratch: Vec::new(),
        }
    }

    /// Applies new settings. Packets already delayed keep their due
    /// times; the generator restarts from the seed; a new rate starts
    /// with a full bucket.
    pub fn configure(&mut self, s: &QdiscSettings, now: u64) {
        let seed = if s.seed != 0 { s.seed } else { DEFAULT_SEED };
        self.rng = Rng::new(seed, self.salt);
        if s.delay_us > 0 {
            self.delayq.reserve(self.fifo.limit);
        }
        if s.duplicate_ppm > 0 {
            self.scratch.reserve_exact(strata_ipc::LARGE_BUF);
        }
        if (s.rate_bps, s.burst_bytes) != (self.cfg.rate_bps, self.cfg.burst_bytes) {
            self.bucket =
                (s.rate_bps > 0).then(|| TokenBucket::new(s.rate_bps, s.burst_bytes, now));
            self.blocked = false;
        }
        self.cfg = *s;
        self.active = !s.is_off();
    }

    /// True when nothing but the pfifo is in the way (no fault, no rate
    /// limit, nothing held back).
    pub fn is_plain(&self) -> bool {
        !self.active && self.held.is_none() && self.delayq.is_empty()
    }

    /// Takes a packet in at time `now`. Whatever the qdisc drops it frees
    /// through `pool` and counts; a duplicate is a copy in a new buffer.
    pub fn enqueue(&mut self, h: Handle, now: u64, pool: &mut impl Buffers) {
        if !self.active {
            self.fifo_stage(h, pool);
            return;
        }
        if self.rng.chance(self.cfg.loss_ppm) {
            self.stats.loss += 1;
            pool.free(&h);
            return;
        }
        let dup = if self.rng.chance(self.cfg.duplicate_ppm) {
            let c = copy(&h, pool, &mut self.scratch);
            match c {
                Some(_) => self.stats.duplicate += 1,
                None => self.stats.duplicate_no_buffer += 1,
            }
            c
        } else {
            None
        };
        self.reorder_stage(h, now, pool);
        if let Some(d) = dup {
            self.reorder_stage(d, now, pool);
        }
    }

    fn reorder_stage(&mut self, h: Handle, now: u64, pool: &mut impl Buffers) {
        if let Some((held, _)) = self.held.take() {
            // The held packet leaves right behind the one overtaking it.
            self.stats.reorder += 1;
            self.delay_stage(h, now, pool);
            self.delay_stage(held, now, pool);
        } else if self.rng.chance(self.cfg.reorder_ppm) {
            self.held = Some((h, now + REORDER_HOLD_NS));
        } else {
            self.delay_stage(h, now, pool);
        }
    }

    fn delay_stage(&mut self, h: Handle, now: u64, pool: &mut impl Buffers) {
        if self.cfg.delay_us == 0 {
            self.fifo_stage(h, pool);
            return;
        }
        let d = self.cfg.delay_us as u64 * 1000;
        let j = self.cfg.jitter_us as u64 * 1000;
        let due = if j > 0 {
            // Uniform in [d - j, d + j], never before now.
            (now + d + self.rng.below(2 * j + 1))
                .saturating_sub(j)
                .max(now)
        } else {
            now + d
        };
        match self.delayq.push(due, h) {
            Ok(()) => self.stats.delayed += 1,
            Err(h) => {
                self.stats.delay_queue_full += 1;
                pool.free(&h);
            }
        }
    }

    fn fifo_stage(&mut self, h: Handle, pool: &mut impl Buffers) {
        if let Err(h) = self.fifo.enqueue(h) {
            self.stats.queue_full += 1;
            pool.free(&h);
        }
    }

    /// The next packet that may leave at time `now`, if any. (A packet
    /// held back for reordering that nobody overtook in time moves on
    /// here, and may be dropped through `pool` if the queues are full.)
    pub fn dequeue(&mut self, now: u64, pool: &mut impl Buffers) -> Option<Handle> {
        if self.is_plain() {
            return self.fifo.dequeue();
        }
        if let Some((h, until)) = self.held {
            if until <= now {
                // Nobody overtook it in time: it goes in order after all.
                self.held = None;
                self.delay_stage(h, until, pool);
            }
        }
        // Due packets move on while the fifo has room; the rest wait in
        // the delay queue rather than being dropped.
        while !self.fifo.is_full() {
            match self.delayq.pop_due(now) {
                Some(h) => {
                    let _ = self.fifo.enqueue(h);
                }
                None => break,
            }
        }
        let head = self.fifo.front()?;
        if let Some(b) = &mut self.bucket {
            if !b.try_take(head.data_len, now) {
                if !self.blocked {
                    self.blocked = true;
                    self.stats.rate_limited_waits += 1;
                }
                return None;
            }
        }
        self.blocked = false;
        self.fifo.dequeue()
    }

    /// When the qdisc next has something to release, if it is waiting on
    /// time (a delay, a held packet, tokens) rather than on the device:
    /// the caller may sleep until then and no longer. `None` when time
    /// alone changes nothing.
    pub fn next_wake(&self, now: u64) -> Option<u64> {
        if self.is_plain() {
            return None;
        }
        let mut t: Option<u64> = None;
        let mut at = |x: u64| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some((_, until)) = self.held {
            at(until);
        }
        match (self.fifo.front(), &self.bucket) {
            (Some(head), Some(b)) => at(b.ready_at(head.data_len, now)),
            // Waiting for the device, not for time.
            (Some(_), None) => {}
            (None, _) => {
                if let Some(d) = self.delayq.next_due() {
                    at(d);
                }
            }
        }
        t
    }

    /// Packets inside (fifo, delay queue and the one held back).
    pub fn backlog(&self) -> usize {
        self.fifo.len() + self.delayq.len() + self.held.is_some() as usize
    }

    /// True when nothing is inside.
    pub fn is_empty(&self) -> bool {
        self.fifo.is_empty() && self.delayq.is_empty() && self.held.is_none()
    }

    /// The counts since the last call, reset.
    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.stats)
    }

    /// Frees everything inside.
    #[cfg(test)]
    pub fn purge(&mut self, pool: &mut impl Buffers) {
        while let Some(h) = self.fifo.dequeue() {
            pool.free(&h);
        }
        while let Some(h) = self.delayq.pop_any() {
            pool.free(&h);
        }
        if let Some((h, _)) = self.held.take() {
            pool.free(&h);
        }
    }
}

/// A copy of `h`'s packet in a buffer of its own, with the same metadata,
/// through `scratch` (whose capacity is reserved when duplication is
/// configured, so this does not allocate). A copy rather than a second
/// reference: reclaim after a crash counts one reference per buffer, and
/// a layer above may rewrite a received packet in place.
fn copy(h: &Handle, pool: &mut impl Buffers, scratch: &mut Vec<u8>) -> Option<Handle> {
    scratch.clear();
    scratch.extend_from_slice(pool.data(h).ok()?);
    let n = pool.alloc(h.data_len as usize)?;
    let c = Handle {
        buf: n.buf,
        gen: n.gen,
        data_off: n.data_off,
        ..*h
    };
    match pool.data_mut(&c) {
        Ok(dst) if dst.len() == scratch.len() => {
            dst.copy_from_slice(scratch);
            Some(c)
        }
        _ => {
            pool.free(&n);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ipc::HeapPool;

    const MS: u64 = 1_000_000;

    fn h(i: u32) -> Handle {
        Handle::new(i, 1, 0)
    }

    /// A packet of `len` bytes whose mark and first bytes carry `id`.
    fn pkt(pool: &mut HeapPool, id: u32, len: u32) -> Handle {
        let mut p = pool.alloc(len as usize).expect("pool");
        p.data_len = len;
        p.mark = id;
        pool.data_mut(&p).unwrap()[..4].copy_from_slice(&id.to_be_bytes());
        p
    }

    fn with(f: impl FnOnce(&mut QdiscSettings)) -> QdiscSettings {
        let mut s = QdiscSettings::default();
        f(&mut s);
        s
    }

    /// Dequeues everything that may leave at `now`, freeing it, and
    /// returns the marks.
    fn drain(q: &mut Qdisc, now: u64, pool: &mut HeapPool) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(p) = q.dequeue(now, pool) {
            out.push(p.mark);
            pool.free(&p);
        }
        out
    }

    #[test]
    fn fifo_order_and_limit() {
        let mut q = Pfifo::new(3);
        for i in 0..3 {
            q.enqueue(h(i)).unwrap();
        }
        assert_eq!(q.enqueue(h(9)), Err(h(9)));
        assert_eq!(q.drops, 1);
        assert_eq!(q.dequeue(), Some(h(0)));
        q.enqueue(h(3)).unwrap();
        let rest: Vec<u32> = std::iter::from_fn(|| q.dequeue()).map(|x| x.buf).collect();
        assert_eq!(rest, vec![1, 2, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn everything_off_is_the_plain_pfifo() {
        let mut pool = HeapPool::new(64, 0);
        let mut q = Qdisc::new(4, 0);
        // A seed alone turns nothing on.
        q.configure(&with(|s| s.seed = 7), 0);
        assert!(q.is_plain());
        let mut reference = Pfifo::new(4);
        let mut rng_before = q.rng.clone();
        for i in 0..6 {
            let p = pkt(&mut pool, i, 60);
            let _ = reference.enqueue(p);
            q.enqueue(p, 0, &mut pool);
        }
        // Two refused (and freed by the qdisc): the pfifo's behaviour.
        assert_eq!(
            q.take_stats(),
            Stats {
                queue_full: 2,
                ..Stats::default()
            }
        );
        assert_eq!(reference.drops, 2);
        assert_eq!(q.next_wake(0), None);
        let got: Vec<Handle> = std::iter::from_fn(|| q.dequeue(0, &mut pool)).collect();
        let want: Vec<Handle> = std::iter::from_fn(|| reference.dequeue()).collect();
        assert_eq!(got, want);
        // No random numbers drawn on the plain path.
        assert_eq!(q.rng.next_u64(), rng_before.next_u64());
        for p in &got {
            pool.free(p);
        }
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn loss_rate_within_tolerance_over_100k_packets() {
        let mut pool = HeapPool::new(8, 0);
        let mut q = Qdisc::new(1000, 1);
        q.configure(&with(|s| s.loss_ppm = 200_000), 0);
        let mut got = 0u64;
        for i in 0..100_000u32 {
            let now = i as u64 * 1000;
            let p = pkt(&mut pool, i, 100);
            q.enqueue(p, now, &mut pool);
            got += drain(&mut q, now, &mut pool).len() as u64;
        }
        let st = q.take_stats();
        assert_eq!(got + st.loss, 100_000);
        // 20 % ± 1 % (about 8 standard deviations).
        assert!((19_000..=21_000).contains(&st.loss), "{st:?}");
        assert_eq!(pool.in_use(), 0, "every dropped packet was freed");
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let run = |seed: u64| {
            let mut pool = HeapPool::new(8, 0);
            let mut q = Qdisc::new(100, 3);
            q.configure(
                &with(|s| {
                    s.loss_ppm = 300_000;
                    s.seed = seed;
                }),
                0,
            );
            let mut out = Vec::new();
            for i in 0..1000 {
                let p = pkt(&mut pool, i, 64);
                q.enqueue(p, 0, &mut pool);
                out.extend(drain(&mut q, 0, &mut pool));
            }
            out
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn duplicates_appear_as_copies_right_behind_the_original() {
        let mut pool = HeapPool::new(8, 0);
        let mut q = Qdisc::new(1000, 2);
        q.configure(&with(|s| s.duplicate_ppm = 100_000), 0);
        let mut out = Vec::new();
        for i in 0..10_000u32 {
            let p = pkt(&mut pool, i, 200);
            q.enqueue(p, 0, &mut pool);
            while let Some(p) = q.dequeue(0, &mut pool) {
                let d = pool.data(&p).unwrap();
                assert_eq!(d.len(), 200);
                assert_eq!(&d[..4], &p.mark.to_be_bytes(), "copy has the bytes");
                out.push((p.mark, p.buf));
                pool.free(&p);
            }
        }
        let st = q.take_stats();
        assert!((800..=1200).contains(&st.duplicate), "{st:?}");
        assert_eq!(out.len() as u64, 10_000 + st.duplicate);
        let dups = out.windows(2).filter(|w| w[0].0 == w[1].0).count();
        assert_eq!(dups as u64, st.duplicate);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn duplicate_without_a_buffer_is_counted_not_fatal() {
        let mut pool = HeapPool::new(1, 0);
        let mut q = Qdisc::new(10, 0);
        q.configure(&with(|s| s.duplicate_ppm = 1_000_000), 0);
        let p = pkt(&mut pool, 1, 60);
        q.enqueue(p, 0, &mut pool);
        assert_eq!(drain(&mut q, 0, &mut pool), vec![1]);
        assert_eq!(q.take_stats().duplicate_no_buffer, 1);
    }

    #[test]
    fn reorder_changes_order_but_loses_nothing() {
        let mut pool = HeapPool::new(8, 0);
        let mut q = Qdisc::new(1000, 4);
        q.configure(&with(|s| s.reorder_ppm = 100_000), 0);
        let mut out = Vec::new();
        for i in 0..10_000u32 {
            let now = i as u64 * 1000;
            q.enqueue(pkt(&mut pool, i, 100), now, &mut pool);
            out.extend(drain(&mut q, now, &mut pool));
        }
        // The last one may still be held: it leaves after the hold time.
        out.extend(drain(&mut q, 10_000 * 1000 + REORDER_HOLD_NS, &mut pool));
        let st = q.take_stats();
        assert_eq!(out.len(), 10_000);
        let mut sorted = out.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10_000).collect::<Vec<_>>(), "nothing lost");
        let swaps = out.windows(2).filter(|w| w[0] > w[1]).count() as u64;
        assert_eq!(swaps, st.reorder);
        assert!((800..=1200).contains(&st.reorder), "{st:?}");
        // Each reordered packet is overtaken by exactly one other.
        for (pos, &m) in out.iter().enumerate() {
            assert!((m as i64 - pos as i64).abs() <= 1);
        }
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_held_packet_nobody_overtakes_leaves_after_the_hold_time() {
        let mut pool = HeapPool::new(8, 0);
        let mut q = Qdisc::new(10, 0);
        q.configure(&with(|s| s.reorder_ppm = 1_000_000), 0);
        q.enqueue(pkt(&mut pool, 1, 60), 5, &mut pool);
        assert!(drain(&mut q, 5, &mut pool).is_empty());
        assert_eq!(q.next_wake(5), Some(5 + REORDER_HOLD_NS));
        assert!(drain(&mut q, 4 + REORDER_HOLD_NS, &mut pool).is_empty());
        assert_eq!(drain(&mut q, 5 + REORDER_HOLD_NS, &mut pool), vec![1]);
        // With every packet held, each pair swaps.
        for i in 2..8 {
            q.enqueue(pkt(&mut pool, i, 60), 20 * MS, &mut pool);
        }
        assert_eq!(drain(&mut q, 20 * MS, &mut pool), vec![3, 2, 5, 4, 7, 6]);
        assert_eq!(q.take_stats().reorder, 3);
    }

    #[test]
    fn delay_holds_packets_exactly_the_configured_time() {
        let mut pool = HeapPool::new(64, 0);
        let mut q = Qdisc::new(100, 0);
        q.configure(&with(|s| s.delay_us = 100_000), 0);
        let t0 = 5;
        for i in 0..10u32 {
            q.enqueue(pkt(&mut pool, i, 100), t0 + i as u64 * MS, &mut pool);
        }
        for i in 0..10u64 {
            let due = t0 + i * MS + 100 * MS;
            assert_eq!(q.next_wake(due - 1), Some(due));
            assert!(drain(&mut q, due - 1, &mut pool).is_empty());
            assert_eq!(drain(&mut q, due, &mut pool), vec![i as u32]);
        }
        let st = q.take_stats();
        assert_eq!(st.delayed, 10);
        assert!(q.is_empty());
        assert_eq!(q.next_wake(0), None);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn jitter_spreads_delays_and_releases_in_due_order() {
        let mut pool = HeapPool::new(600, 0);
        let mut q = Qdisc::new(1000, 0);
        q.configure(
            &with(|s| {
                s.delay_us = 50_000;
                s.jitter_us = 10_000;
            }),
            0,
        );
        for i in 0..500 {
            q.enqueue(pkt(&mut pool, i, 100), 0, &mut pool);
        }
        assert!(drain(&mut q, 40 * MS - 1, &mut pool).is_empty());
        let mut seen = 0;
        let mut t = 40 * MS;
        let mut reordered = false;
        let mut last = 0;
        while t <= 60 * MS {
            for m in drain(&mut q, t, &mut pool) {
                reordered |= m < last;
                last = m;
                seen += 1;
            }
            t += 100_000;
        }
        assert_eq!(seen, 500, "all out within delay ± jitter");
        assert!(reordered, "jitter reorders, as netem's does");
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn the_delay_queue_is_bounded_and_overflow_is_counted() {
        let mut pool = HeapPool::new(64, 0);
        let mut q = Qdisc::new(10, 0);
        q.configure(&with(|s| s.delay_us = 1_000_000), 0);
        for i in 0..15 {
            q.enqueue(pkt(&mut pool, i, 100), 0, &mut pool);
        }
        let st = q.take_stats();
        assert_eq!((st.delayed, st.delay_queue_full), (10, 5));
        assert_eq!(pool.in_use(), 10);
        assert_eq!(q.backlog(), 10);
        q.purge(&mut pool);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn turning_the_delay_off_still_releases_what_was_delayed_on_time() {
        let mut pool = HeapPool::new(64, 0);
        let mut q = Qdisc::new(10, 0);
        q.configure(&with(|s| s.delay_us = 10_000), 0);
        q.enqueue(pkt(&mut pool, 1, 100), 0, &mut pool);
        q.configure(&QdiscSettings::default(), 1);
        assert!(!q.is_plain());
        q.enqueue(pkt(&mut pool, 2, 100), 2, &mut pool);
        // The new packet is not delayed; the old one keeps its due time.
        assert_eq!(drain(&mut q, 2, &mut pool), vec![2]);
        assert_eq!(q.next_wake(2), Some(10 * MS));
        assert_eq!(drain(&mut q, 10 * MS, &mut pool), vec![1]);
        assert!(q.is_plain());
    }

    /// Offers 1000-byte packets as fast as the queue takes them for
    /// `secs` seconds and returns the bytes that left.
    fn shape(rate_bps: u64, burst: u32, step_ns: u64, secs: u64) -> (u64, Stats) {
        let mut pool = HeapPool::new(128, 0);
        let mut q = Qdisc::new(64, 0);
        q.configure(
            &with(|s| {
                s.rate_bps = rate_bps;
                s.burst_bytes = burst;
            }),
            0,
        );
        let mut sent = 0u64;
        let mut id = 0;
        let mut now = 0;
        while now <= secs * 1_000_000_000 {
            while q.backlog() < 32 {
                id += 1;
                q.enqueue(pkt(&mut pool, id, 1000), now, &mut pool);
            }
            while let Some(p) = q.dequeue(now, &mut pool) {
                sent += p.data_len as u64;
                pool.free(&p);
            }
            // Sleep no longer than the qdisc asks.
            let Some(wake) = q.next_wake(now) else {
                // The bucket still had room for everything: offer more.
                assert!(q.is_empty());
                continue;
            };
            assert!(wake > now);
            // Woken exactly when tokens suffice, or on a coarse tick.
            now = if step_ns == 0 { wake } else { now + step_ns };
        }
        (sent, q.take_stats())
    }

    #[test]
    fn rate_limit_shapes_to_the_configured_rate() {
        // 8 Mbit/s = 1 MB/s, for 10 s: 10 MB plus the initial 10 kB burst.
        for step in [0, 100_000, 1_000_000] {
            let (sent, st) = shape(8_000_000, 0, step, 10);
            let want = 10_000_000 + 10_000;
            assert!(
                sent.abs_diff(want) <= want / 100,
                "step {step}: sent {sent}, want {want}"
            );
            assert!(st.rate_limited_waits > 1000, "{st:?}");
        }
        // 1 Gbit/s with a 64 KiB bucket, woken exactly when tokens suffice.
        let (sent, _) = shape(1_000_000_000, 65_536, 0, 1);
        assert!(sent.abs_diff(125_000_000) <= 1_250_000, "sent {sent}");
    }

    #[test]
    fn faults_and_rate_compose_without_leaks() {
        let mut pool = HeapPool::new(256, 0);
        let mut q = Qdisc::new(64, 9);
        q.configure(
            &with(|s| {
                s.loss_ppm = 50_000;
                s.duplicate_ppm = 50_000;
                s.reorder_ppm = 50_000;
                s.delay_us = 2_000;
                s.jitter_us = 1_000;
                s.rate_bps = 100_000_000;
            }),
            0,
        );
        let mut out = 0u64;
        for i in 0..20_000u32 {
            let now = i as u64 * 200_000;
            q.enqueue(pkt(&mut pool, i, 1000), now, &mut pool);
            out += drain(&mut q, now, &mut pool).len() as u64;
        }
        let mut now = 20_000 * 200_000;
        while !q.is_empty() {
            now = q.next_wake(now).unwrap_or(now + 1_000_000);
            out += drain(&mut q, now, &mut pool).len() as u64;
        }
        let st = q.take_stats();
        assert_eq!(
            out + st.loss + st.delay_queue_full + st.queue_full,
            20_000 + st.duplicate,
            "{st:?}"
        );
        assert!(st.reorder > 0 && st.duplicate > 0 && st.loss > 0);
        assert!(q.is_empty());
        assert_eq!(pool.in_use(), 0);
    }
}
