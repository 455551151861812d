//! sockd's sockets by id, stored at their row of the socket table.
//!
//! A socket's id names its row (`sock_id::slot`) and the row's
//! generation, and the table hands rows out densely from the first, so a
//! vector indexed by row finds a socket without hashing, and its
//! memory follows the rows in use. Sized for the table's rows when made,
//! it never grows: a hash map that doubled at 100,000 sockets moved tens
//! of megabytes in one go, a pause every connection then waited out.

use strata_ipc::socktable::sock_id;

/// Values by socket id.
pub struct Rows<T> {
    rows: Vec<Option<(u32, T)>>,
}

impl<T> Rows<T> {
    /// Room for the ids of `rows` rows (address space only until used).
    pub fn with_rows(rows: usize) -> Rows<T> {
        Rows {
            rows: Vec::with_capacity(rows),
        }
    }

    fn row(id: u32) -> Option<usize> {
        sock_id::slot(id)
    }

    /// The value of `id` (not of another generation of its row).
    pub fn get(&self, id: &u32) -> Option<&T> {
        match self.rows.get(Self::row(*id)?)? {
            Some((i, v)) if i == id => Some(v),
            _ => None,
        }
    }

    /// The value of `id`, to change.
    pub fn get_mut(&mut self, id: &u32) -> Option<&mut T> {
        match self.rows.get_mut(Self::row(*id)?)? {
            Some((i, v)) if i == id => Some(v),
            _ => None,
        }
    }

    /// Stores `v` under `id`; returns what its row held (of this id or,
    /// never removed, of an earlier generation). An id naming no row is
    /// not stored.
    pub fn insert(&mut self, id: u32, v: T) -> Option<T> {
        let r = Self::row(id)?;
        if r >= self.rows.len() {
            self.rows.resize_with(r + 1, || None);
        }
        self.rows[r].replace((id, v)).map(|(_, old)| old)
    }

    /// Takes the value of `id` out.
    pub fn remove(&mut self, id: &u32) -> Option<T> {
        let slot = self.rows.get_mut(Self::row(*id)?)?;
        match slot {
            Some((i, _)) if i == id => slot.take().map(|(_, v)| v),
            _ => None,
        }
    }

    /// Every value, by row.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.rows.iter().flatten().map(|(_, v)| v)
    }

    /// Every value, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.rows.iter_mut().flatten().map(|(_, v)| v)
    }

    /// Every id and value.
    pub fn iter(&self) -> impl Iterator<Item = (&u32, &T)> {
        self.rows.iter().flatten().map(|(i, v)| (i, v))
    }

    /// Every id and value, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u32, &mut T)> {
        self.rows.iter_mut().flatten().map(|(i, v)| (&*i, v))
    }

    /// Bytes one row takes.
    pub const fn row_bytes() -> usize {
        std::mem::size_of::<Option<(u32, T)>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_holds_one_generation_and_finds_no_other() {
        let mut m = Rows::with_rows(4);
        let a = sock_id::make(2, 7);
        let b = sock_id::make(2, 8);
        assert_eq!(m.insert(a, "a"), None);
        assert_eq!(m.get(&a), Some(&"a"));
        assert_eq!(m.get(&b), None, "another generation of the row");
        assert_eq!(m.remove(&b), None);
        assert_eq!(m.get(&sock_id::make(0, 7)), None);
        assert_eq!(m.get(&0), None, "0 names no row");
        assert_eq!(m.insert(0, "z"), None);
        assert_eq!(m.values().count(), 1);
        assert_eq!(m.remove(&a), Some("a"));
        assert_eq!(m.get(&a), None);
        assert_eq!(m.insert(b, "b"), None);
        *m.get_mut(&b).unwrap() = "c";
        // A later generation stored over one never removed: handed back.
        assert_eq!(m.insert(sock_id::make(2, 9), "d"), Some("c"));
        let ids: Vec<u32> = m.iter_mut().map(|(i, _)| *i).collect();
        assert_eq!(ids, vec![sock_id::make(2, 9)]);
    }

    #[test]
    fn rows_past_the_room_made_still_work() {
        let mut m = Rows::with_rows(1);
        for r in 0..1000 {
            m.insert(sock_id::make(r, 1), r);
        }
        assert_eq!(m.values().sum::<usize>(), (0..1000).sum::<usize>());
        for v in m.values_mut() {
            *v += 1;
        }
        assert_eq!(m.get(&sock_id::make(999, 1)), Some(&1000));
    }
}
