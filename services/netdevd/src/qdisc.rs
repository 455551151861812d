//! The egress queueing discipline: a bounded FIFO per interface (pfifo).
//! Pure logic over handles; the process around it moves them.

use std::collections::VecDeque;
use strata_ipc::Handle;

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

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u32) -> Handle {
        Handle::new(i, 1, 0)
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
}
