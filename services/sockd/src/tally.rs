//! Counts per owner (a process or a user) of what sockd limits: sockets
//! and sessions. They are kept as sockets and sessions come and go, so a
//! limit check is a lookup rather than a pass over every socket (which
//! would make opening the n-th socket cost n).

use std::collections::HashMap;

/// How many things each owner holds.
#[derive(Debug, Default)]
pub struct Tally {
    by_owner: HashMap<u32, u32>,
}

impl Tally {
    /// `owner` holds one more.
    pub fn add(&mut self, owner: u32) {
        *self.by_owner.entry(owner).or_insert(0) += 1;
    }

    /// `owner` holds one fewer (an owner with none is forgotten).
    pub fn remove(&mut self, owner: u32) {
        if let Some(n) = self.by_owner.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.by_owner.remove(&owner);
            }
        }
    }

    /// How many `owner` holds.
    pub fn of(&self, owner: u32) -> u32 {
        self.by_owner.get(&owner).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn counts_follow_adds_and_removes_and_an_owner_with_none_is_forgotten() {
        let mut t = Tally::default();
        t.add(7);
        t.add(7);
        t.add(9);
        assert_eq!((t.of(7), t.of(9), t.of(8)), (2, 1, 0));
        t.remove(7);
        t.remove(9);
        t.remove(9); // one too many: stays at none
        assert_eq!((t.of(7), t.of(9)), (1, 0));
        t.remove(7);
        assert!(t.by_owner.is_empty());
    }
}
