//! What each user's TCP sockets hold at tcpd, so that one user cannot
//! take the pool's send share from everyone else.
//!
//! Bytes sockd hands tcpd sit in pool buffers until the peer
//! acknowledges them. Each socket may have up to its send buffer there
//! (tcpd's credit says how much it holds), and a user may open thousands
//! of sockets: without a bound per user, one user's sockets towards
//! peers that never acknowledge would fill the pool's send share and
//! every other user's sends would wait. Linux bounds this globally
//! (`tcp_mem`) and per cgroup; sockd bounds it per user, as the socket
//! limits are.
//!
//! A socket's charge is settled whenever its holding may have changed
//! (bytes handed over, a credit from tcpd, the socket gone), from the
//! stream's own account ([`crate::stream::Stream::held`]): a settle that
//! was missed is made up by the next, never accumulated.

use std::collections::HashMap;

/// Bytes held at tcpd per user, against one limit.
#[derive(Debug)]
pub struct Charges {
    limit: u64,
    by_user: HashMap<u32, u64>,
}

impl Charges {
    /// Charges bounded by `limit` bytes per user.
    pub fn new(limit: u64) -> Charges {
        Charges {
            limit,
            by_user: HashMap::new(),
        }
    }

    /// Bytes `uid`'s sockets hold.
    pub fn held(&self, uid: u32) -> u64 {
        self.by_user.get(&uid).copied().unwrap_or(0)
    }

    /// Whether `uid` may hand tcpd `more` bytes now.
    pub fn allows(&self, uid: u32, more: u64) -> bool {
        self.held(uid) + more <= self.limit
    }

    /// One socket of `uid`, charged `charged` so far, now holds `now`:
    /// the user's charge follows, and `charged` becomes `now`. A socket
    /// that is gone settles at 0.
    pub fn settle(&mut self, uid: u32, charged: &mut u64, now: u64) {
        if *charged == now {
            return;
        }
        let held = self.by_user.entry(uid).or_insert(0);
        *held = (*held + now).saturating_sub(*charged);
        *charged = now;
        if *held == 0 {
            self.by_user.remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_charged_what_its_sockets_hold_and_nothing_once_they_are_gone() {
        let mut c = Charges::new(100);
        let (mut a, mut b) = (0, 0);
        c.settle(7, &mut a, 60);
        c.settle(7, &mut b, 30);
        assert_eq!(c.held(7), 90);
        assert!(c.allows(7, 10));
        assert!(!c.allows(7, 11));
        // Another user is not affected.
        assert!(c.allows(8, 100));
        // Acknowledged bytes leave; a settle repeated changes nothing.
        c.settle(7, &mut a, 20);
        c.settle(7, &mut a, 20);
        assert_eq!(c.held(7), 50);
        c.settle(7, &mut a, 0);
        c.settle(7, &mut b, 0);
        assert_eq!(c.held(7), 0);
        assert!(
            c.by_user.is_empty(),
            "no entry left for a user with nothing"
        );
    }
}
