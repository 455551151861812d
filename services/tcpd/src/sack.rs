//! The SACK scoreboard (RFC 2018, RFC 6675): which bytes above `snd_una`
//! the peer reported holding, as up to [`SACK_RANGES`] sorted disjoint
//! ranges in the connection block, and the RFC 6675 functions over it —
//! `IsLost`, `SetPipe` and `NextSeg` — computed byte-wise over the holes
//! between ranges (`DupThresh` = 3).

use crate::block::{ConnBlock, SACK_RANGES};
use crate::seq;

/// RFC 6675 DupThresh.
pub const DUP_THRESH: u32 = 3;

/// The ranges in use, as `(left, right)` in sequence order.
pub fn ranges(c: &ConnBlock) -> impl Iterator<Item = (u32, u32)> + '_ {
    c.sacked[..(c.sack_cnt as usize).min(SACK_RANGES)]
        .iter()
        .map(|r| (r[0], r[1]))
}

/// Forgets every range (after a timeout, RFC 2018 §8).
pub fn clear(c: &mut ConnBlock) {
    c.sack_cnt = 0;
}

/// Records the peer's SACK block `[l, r)` (clipped to
/// `(snd_una, snd_max]`); returns the bytes newly marked.
pub fn add(c: &mut ConnBlock, l: u32, r: u32) -> u32 {
    let l = seq::max(l, c.snd_una);
    let r = seq::min(r, c.snd_max);
    if seq::ge(l, r) {
        return 0;
    }
    let base = c.snd_una;
    let key = |x: u32| x.wrapping_sub(base);
    let n = (c.sack_cnt as usize).min(SACK_RANGES);
    let mut v = [[0u32; 2]; SACK_RANGES + 1];
    let mut k = 0;
    let (mut nl, mut nr) = (l, r);
    let mut before = 0u32;
    let mut inserted = false;
    for x in c.sacked[..n].iter() {
        before = before.wrapping_add(x[1].wrapping_sub(x[0]));
        if key(x[1]) < key(nl) {
            v[k] = *x;
            k += 1;
        } else if key(x[0]) > key(nr) {
            if !inserted {
                v[k] = [nl, nr];
                k += 1;
                inserted = true;
            }
            v[k] = *x;
            k += 1;
        } else {
            // Overlapping or adjacent: merge into the new range.
            if key(x[0]) < key(nl) {
                nl = x[0];
            }
            if key(x[1]) > key(nr) {
                nr = x[1];
            }
        }
    }
    if !inserted {
        v[k] = [nl, nr];
        k += 1;
    }
    // Too many: forget the highest (the lowest matter for retransmission).
    let k = k.min(SACK_RANGES);
    c.sacked[..k].copy_from_slice(&v[..k]);
    c.sack_cnt = k as u32;
    let after: u32 = ranges(c).map(|(a, b)| b.wrapping_sub(a)).sum();
    after.saturating_sub(before)
}

/// Drops what `snd_una` has passed.
pub fn on_ack(c: &mut ConnBlock) {
    let n = (c.sack_cnt as usize).min(SACK_RANGES);
    let mut k = 0;
    for i in 0..n {
        let [l, r] = c.sacked[i];
        if seq::le(r, c.snd_una) {
            continue;
        }
        c.sacked[k] = [seq::max(l, c.snd_una), r];
        k += 1;
    }
    c.sack_cnt = k as u32;
}

/// Whether `s` is SACKed; the end of its range if so.
pub fn sacked_end(c: &ConnBlock, s: u32) -> Option<u32> {
    ranges(c)
        .find(|&(l, r)| seq::within(s, l, r))
        .map(|(_, r)| r)
}

/// Highest SACKed sequence number plus one (`snd_una` if none).
pub fn high_sacked(c: &ConnBlock) -> u32 {
    ranges(c).last().map_or(c.snd_una, |(_, r)| r)
}

/// Bytes SACKed in total.
pub fn sacked_bytes(c: &ConnBlock) -> u32 {
    ranges(c).map(|(l, r)| r.wrapping_sub(l)).sum()
}

/// One hole: unSACKed bytes `[start, end)` below the highest SACKed byte,
/// and whether RFC 6675 `IsLost` holds for them (it depends only on what
/// is SACKed above, the same for every byte of a hole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hole {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
    /// `IsLost`.
    pub lost: bool,
}

/// The holes, lowest first.
pub fn holes(c: &ConnBlock, mss: u32) -> impl Iterator<Item = Hole> + '_ {
    let n = (c.sack_cnt as usize).min(SACK_RANGES);
    let mut prev = c.snd_una;
    (0..n).filter_map(move |i| {
        let [l, r] = c.sacked[i];
        let start = prev;
        prev = r;
        if seq::ge(start, l) {
            return None;
        }
        // SACKed above the hole: ranges i.. .
        let above: u32 = c.sacked[i..n].iter().map(|x| x[1].wrapping_sub(x[0])).sum();
        let lost = above > (DUP_THRESH - 1) * mss || (n - i) as u32 >= DUP_THRESH;
        Some(Hole {
            start,
            end: l,
            lost,
        })
    })
}

/// RFC 6675 `IsLost(seq)`.
pub fn is_lost(c: &ConnBlock, s: u32, mss: u32) -> bool {
    holes(c, mss).any(|h| h.lost && seq::within(s, h.start, h.end))
}

/// RFC 6675 `SetPipe`: bytes believed in the network — every unSACKed
/// byte not presumed lost, plus every byte retransmitted (below
/// `high_rxt`).
pub fn pipe(c: &ConnBlock, mss: u32) -> u32 {
    let mut p = 0u32;
    let rtx = |a: u32, b: u32| -> u32 {
        let e = seq::min(b, c.high_rxt);
        if seq::lt(a, e) {
            e.wrapping_sub(a)
        } else {
            0
        }
    };
    for h in holes(c, mss) {
        if !h.lost {
            p = p.wrapping_add(h.end.wrapping_sub(h.start));
        }
        p = p.wrapping_add(rtx(h.start, h.end));
    }
    let top = high_sacked(c);
    if seq::lt(top, c.snd_max) {
        p = p.wrapping_add(c.snd_max.wrapping_sub(top));
        p = p.wrapping_add(rtx(top, c.snd_max));
    }
    p
}

/// What RFC 6675 `NextSeg` picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Retransmit `len` bytes from `seq` (rule 1: lost; rule 3: not yet
    /// known lost).
    Rtx(u32, u32),
    /// Send new data (rule 2), if the windows allow.
    New,
}

/// RFC 6675 `NextSeg()`: the first lost unSACKed byte at or above
/// `high_rxt`; else new data if there is any; else the first unSACKed byte
/// at or above `high_rxt` below the highest SACKed one (rule 3).
pub fn next_seg(c: &ConnBlock, mss: u32, have_new: bool) -> Option<Next> {
    let pick = |want_lost: bool| {
        holes(c, mss).find_map(|h| {
            if h.lost != want_lost && want_lost {
                return None;
            }
            let s = seq::max(h.start, c.high_rxt);
            seq::lt(s, h.end).then(|| Next::Rtx(s, h.end.wrapping_sub(s).min(mss)))
        })
    };
    if let Some(n) = pick(true) {
        return Some(n);
    }
    if have_new {
        return Some(Next::New);
    }
    pick(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blk() -> ConnBlock {
        ConnBlock {
            snd_una: 1000,
            snd_max: 11000,
            high_rxt: 1000,
            ..ConnBlock::default()
        }
    }

    #[test]
    fn ranges_merge_and_clip() {
        let mut c = blk();
        assert_eq!(add(&mut c, 3000, 4000), 1000);
        assert_eq!(add(&mut c, 5000, 6000), 1000);
        assert_eq!(add(&mut c, 4000, 5000), 1000);
        assert_eq!(ranges(&c).collect::<Vec<_>>(), vec![(3000, 6000)]);
        assert_eq!(add(&mut c, 500, 1500), 500, "clipped at snd_una");
        assert_eq!(add(&mut c, 10000, 20000), 1000, "clipped at snd_max");
        assert_eq!(add(&mut c, 3500, 3600), 0, "nothing new");
        assert_eq!(
            ranges(&c).collect::<Vec<_>>(),
            vec![(1000, 1500), (3000, 6000), (10000, 11000)]
        );
        c.snd_una = 3200;
        on_ack(&mut c);
        assert_eq!(
            ranges(&c).collect::<Vec<_>>(),
            vec![(3200, 6000), (10000, 11000)]
        );
        assert_eq!(sacked_end(&c, 5999), Some(6000));
        assert_eq!(sacked_end(&c, 6000), None);
    }

    #[test]
    fn overflow_keeps_the_lowest_ranges() {
        let mut c = blk();
        c.snd_max = 100_000;
        for i in 0..20u32 {
            add(&mut c, 2000 + i * 2000, 2500 + i * 2000);
        }
        assert_eq!(c.sack_cnt as usize, SACK_RANGES);
        assert_eq!(ranges(&c).next(), Some((2000, 2500)));
        // A block below the others still gets in.
        add(&mut c, 1200, 1300);
        assert_eq!(ranges(&c).next(), Some((1200, 1300)));
    }

    /// Segments of 1000 bytes 1000..11000; the peer SACKs 2, 4, 5, 6 (by
    /// index from 0): holes at 0, 1, 3 and 7..9 above the last SACK.
    #[test]
    fn is_lost_pipe_and_next_seg_per_rfc6675() {
        let mss = 1000;
        let mut c = blk();
        add(&mut c, 3000, 4000);
        add(&mut c, 5000, 8000);
        let h: Vec<_> = holes(&c, mss).collect();
        assert_eq!(
            h,
            vec![
                Hole {
                    start: 1000,
                    end: 3000,
                    lost: true
                },
                Hole {
                    start: 4000,
                    end: 5000,
                    lost: true
                },
            ]
        );
        assert!(is_lost(&c, 1000, mss) && is_lost(&c, 4999, mss));
        assert!(!is_lost(&c, 8000, mss));
        // Not lost: 8000..11000 (3000); lost holes count 0.
        assert_eq!(pipe(&c, mss), 3000);
        assert_eq!(next_seg(&c, mss, true), Some(Next::Rtx(1000, 1000)));
        c.high_rxt = 2000;
        assert_eq!(pipe(&c, mss), 4000, "a retransmitted segment counts");
        assert_eq!(next_seg(&c, mss, true), Some(Next::Rtx(2000, 1000)));
        c.high_rxt = 3000;
        assert_eq!(next_seg(&c, mss, true), Some(Next::Rtx(4000, 1000)));
        c.high_rxt = 5000;
        assert_eq!(next_seg(&c, mss, true), Some(Next::New));
        assert_eq!(next_seg(&c, mss, false), None);

        // Only 2 segments SACKed above a hole: not lost (rule 3 applies).
        let mut c = blk();
        add(&mut c, 2000, 4000);
        assert!(!is_lost(&c, 1000, mss));
        assert_eq!(pipe(&c, mss), 1000 + 7000);
        assert_eq!(next_seg(&c, mss, true), Some(Next::New));
        assert_eq!(next_seg(&c, mss, false), Some(Next::Rtx(1000, 1000)));
        // A third SACKed byte beyond 2·MSS makes it lost.
        add(&mut c, 5000, 5001);
        assert!(is_lost(&c, 1000, mss));
        assert_eq!(high_sacked(&c), 5001);
        assert_eq!(sacked_bytes(&c), 2001);
    }
}
