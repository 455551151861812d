//! The building blocks of the fault stage: a deterministic random number
//! generator, a time-ordered delay queue of bounded capacity, and a token
//! bucket. Pure logic over handles and nanosecond timestamps the caller
//! supplies; no clock reads, no I/O, no allocation after setup.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use strata_ipc::Handle;

/// SplitMix64: tiny, fast, statistically sound for fault injection, and
/// fully determined by its seed (the same seed and the same traffic give
/// the same faults).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`, mixed with `salt` (so that interfaces and
    /// directions sharing one seed draw different sequences).
    pub fn new(seed: u64, salt: u64) -> Rng {
        let mut r = Rng(seed ^ salt.wrapping_mul(0xa076_1d64_78bd_642f));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-high (bias below 2^-32).
    pub fn below(&mut self, n: u64) -> u64 {
        (((self.next_u64() >> 32) * n) >> 32).min(n.saturating_sub(1))
    }

    /// True with probability `ppm` parts per million. Draws nothing when
    /// `ppm` is 0, so a disabled fault does not disturb the others'
    /// sequences.
    pub fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < ppm as u64
    }
}

struct Entry {
    due: u64,
    seq: u64,
    h: Handle,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap, and the earliest due time (then
    // the earliest arrival) must come out first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

/// Packets held until a due time, released in due order (arrival order
/// among equal due times). Its capacity is reserved once, when a delay is
/// first configured; a packet beyond it is refused.
#[derive(Default)]
pub struct DelayQueue {
    heap: BinaryHeap<Entry>,
    limit: usize,
    seq: u64,
}

impl DelayQueue {
    /// Makes room for `limit` packets (allocates now, never per packet).
    pub fn reserve(&mut self, limit: usize) {
        if self.heap.capacity() < limit {
            self.heap.reserve_exact(limit - self.heap.len());
        }
        self.limit = limit;
    }

    /// Queues `h` until `due`, or gives it back when full.
    pub fn push(&mut self, due: u64, h: Handle) -> Result<(), Handle> {
        if self.heap.len() >= self.limit {
            return Err(h);
        }
        self.seq += 1;
        self.heap.push(Entry {
            due,
            seq: self.seq,
            h,
        });
        Ok(())
    }

    /// The earliest due time.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|e| e.due)
    }

    /// The next packet whose time has come.
    pub fn pop_due(&mut self, now: u64) -> Option<Handle> {
        if self.heap.peek()?.due <= now {
            self.heap.pop().map(|e| e.h)
        } else {
            None
        }
    }

    /// Every packet, due or not (to free them).
    #[cfg(test)]
    pub fn pop_any(&mut self) -> Option<Handle> {
        self.heap.pop().map(|e| e.h)
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Token units per byte: 8 bits × 10⁹ ns, so that `rate_bps` units accrue
/// per nanosecond and the arithmetic stays exact in integers.
const UNIT: i128 = 8_000_000_000;

/// Smallest default bucket, in bytes.
pub const MIN_DEFAULT_BURST: u64 = 4096;

/// A token bucket in bytes, refilled by elapsed time. A packet leaves when
/// the bucket holds its length; one larger than the whole bucket leaves
/// when the bucket is full and drives it into debt, so that nothing waits
/// for ever and the long-run rate still holds.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_bps: u64,
    cap: i128,
    tokens: i128,
    last: u64,
}

impl TokenBucket {
    /// A full bucket of `burst_bytes` (0: 10 ms at the rate, at least
    /// [`MIN_DEFAULT_BURST`]) refilled at `rate_bps` bits per second.
    pub fn new(rate_bps: u64, burst_bytes: u32, now: u64) -> TokenBucket {
        let burst = if burst_bytes > 0 {
            burst_bytes as u64
        } else {
            (rate_bps / 8 / 100).max(MIN_DEFAULT_BURST)
        };
        let cap = burst as i128 * UNIT;
        TokenBucket {
            rate_bps: rate_bps.max(1),
            cap,
            tokens: cap,
            last: now,
        }
    }

    /// The bucket size in bytes.
    #[cfg(test)]
    pub fn burst_bytes(&self) -> u64 {
        (self.cap / UNIT) as u64
    }

    fn refill(&mut self, now: u64) {
        if now > self.last {
            let add = (now - self.last) as i128 * self.rate_bps as i128;
            self.tokens = (self.tokens + add).min(self.cap);
            self.last = now;
        }
    }

    /// Takes `len` bytes' worth if they are there; false when the packet
    /// must wait.
    pub fn try_take(&mut self, len: u32, now: u64) -> bool {
        self.refill(now);
        let cost = len as i128 * UNIT;
        if self.tokens >= cost || self.tokens >= self.cap {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// The earliest time at which a packet of `len` bytes may leave.
    pub fn ready_at(&self, len: u32, now: u64) -> u64 {
        let need = (len as i128 * UNIT).min(self.cap);
        let at = self.last.max(now);
        let have = self.tokens + (at - self.last) as i128 * self.rate_bps as i128;
        if have >= need {
            return at;
        }
        let r = self.rate_bps as i128;
        at + ((need - have + r - 1) / r) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_roughly_uniform() {
        let mut a = Rng::new(42, 1);
        let mut b = Rng::new(42, 1);
        let mut c = Rng::new(42, 2);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[a.below(10) as usize] += 1;
        }
        for n in buckets {
            assert!((9_500..10_500).contains(&n), "{buckets:?}");
        }
        assert!(!a.chance(0));
        assert!((0..1000).all(|_| a.chance(1_000_000)));
    }

    #[test]
    fn delay_queue_orders_by_due_then_arrival_and_is_bounded() {
        let mut q = DelayQueue::default();
        q.reserve(3);
        let h = |i: u32| Handle::new(i, 1, 0);
        q.push(30, h(0)).unwrap();
        q.push(10, h(1)).unwrap();
        q.push(10, h(2)).unwrap();
        assert_eq!(q.push(5, h(3)), Err(h(3)));
        assert_eq!(q.next_due(), Some(10));
        assert_eq!(q.pop_due(9), None);
        assert_eq!(q.pop_due(10), Some(h(1)));
        assert_eq!(q.pop_due(10), Some(h(2)));
        assert_eq!(q.pop_due(29), None);
        assert_eq!(q.pop_due(100), Some(h(0)));
        assert!(q.is_empty());
    }

    #[test]
    fn bucket_refills_with_time_and_allows_oversize_when_full() {
        // 8 Mbit/s = 1 byte per µs; 1000-byte bucket.
        let mut b = TokenBucket::new(8_000_000, 1000, 0);
        assert!(b.try_take(600, 0));
        assert!(!b.try_take(600, 0));
        assert_eq!(b.ready_at(600, 0), 200_000);
        assert!(!b.try_take(600, 199_999));
        assert!(b.try_take(600, 200_000));
        // A packet larger than the bucket waits for a full bucket, then
        // goes into debt.
        assert_eq!(b.ready_at(5000, 200_000), 200_000 + 1_000_000);
        assert!(b.try_take(5000, 1_200_000));
        assert!(!b.try_take(1, 1_200_000));
        assert_eq!(b.ready_at(1, 1_200_000), 1_200_000 + 4_001_000);
        assert_eq!(TokenBucket::new(1_000_000, 0, 0).burst_bytes(), 4096);
        assert_eq!(
            TokenBucket::new(10_000_000_000, 0, 0).burst_bytes(),
            12_500_000
        );
    }
}
