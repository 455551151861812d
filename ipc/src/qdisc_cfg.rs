//! Run-time qdisc settings: the network faults (loss, duplication,
//! reordering, delay) and the rate limit netdevd applies per interface and
//! direction, as `strata qdisc` sets them.
//!
//! They live in the fabric, in the first [`AREA_BYTES`] of netdevd's arena,
//! so that they survive a netdevd restart and the launcher can change them
//! at run time without a channel to netdevd: the launcher writes a slot,
//! netdevd notices the slot's generation move and reloads it.
//!
//! Each slot (one per interface and direction) is a seqlock: the writer
//! makes the generation odd, writes the fields, and makes it even again;
//! a reader retries while the generation is odd or changed under it. A
//! fresh fabric reads as zeros, which is "everything off".

use crate::fabric::Fabric;
use crate::layer::{LayerId, MAX_IFACES};
use crate::raw::{Region, Shared};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{fence, AtomicU64, Ordering::*};

/// Bytes of netdevd's arena reserved for the settings (the rest is free
/// for netdevd's own use).
pub const AREA_BYTES: usize = 4096;

/// Parts per million of a probability: 1_000_000 is 100 %.
pub const PPM: u32 = 1_000_000;

/// Longest delay (and jitter) accepted, in µs (one minute).
pub const MAX_DELAY_US: u32 = 60_000_000;

/// Which way the packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the stack to the wire (the qdisc path, before the driver).
    Egress,
    /// From the wire to the stack (after netdevd's L2 checks).
    Ingress,
}

impl Direction {
    /// Both, egress first.
    pub const ALL: [Direction; 2] = [Direction::Egress, Direction::Ingress];

    /// Index of the direction in a slot pair.
    pub fn index(self) -> usize {
        match self {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        }
    }

    /// "egress" or "ingress".
    pub fn name(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

/// One interface's settings in one direction. All zero means off: packets
/// take the plain pfifo path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QdiscSettings {
    /// Probability of dropping a packet, in parts per million.
    pub loss_ppm: u32,
    /// Probability of sending a packet twice, in parts per million.
    pub duplicate_ppm: u32,
    /// Probability of holding a packet back so that the next one overtakes
    /// it, in parts per million.
    pub reorder_ppm: u32,
    /// Time every packet is held before it may leave, in µs.
    pub delay_us: u32,
    /// Each packet's delay varies uniformly by up to ± this, in µs.
    pub jitter_us: u32,
    /// Rate limit in bits per second (token bucket); 0: unlimited.
    pub rate_bps: u64,
    /// Bucket size in bytes; 0: a default derived from the rate.
    pub burst_bytes: u32,
    /// Seed of the fault generator; 0 picks a fixed one per interface and
    /// direction. The same seed gives the same faults for the same traffic.
    pub seed: u64,
}

impl QdiscSettings {
    /// True when no fault and no rate limit is set (the seed alone does
    /// nothing).
    pub fn is_off(&self) -> bool {
        QdiscSettings { seed: 0, ..*self } == QdiscSettings::default()
    }

    /// Checks the ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("loss", self.loss_ppm),
            ("duplicate", self.duplicate_ppm),
            ("reorder", self.reorder_ppm),
        ] {
            if v > PPM {
                return Err(format!("{name}: {v} ppm is above 100%"));
            }
        }
        for (name, v) in [("delay", self.delay_us), ("jitter", self.jitter_us)] {
            if v > MAX_DELAY_US {
                return Err(format!("{name}: {v} µs is above one minute"));
            }
        }
        if self.jitter_us > 0 && self.delay_us == 0 {
            return Err("jitter needs a delay".into());
        }
        if self.burst_bytes > 0 && self.rate_bps == 0 {
            return Err("burst needs a rate".into());
        }
        Ok(())
    }

    fn to_words(self) -> [u64; WORDS] {
        [
            self.loss_ppm as u64 | (self.duplicate_ppm as u64) << 32,
            self.reorder_ppm as u64 | (self.delay_us as u64) << 32,
            self.jitter_us as u64 | (self.burst_bytes as u64) << 32,
            self.rate_bps,
            self.seed,
            0,
            0,
        ]
    }

    fn from_words(w: &[u64; WORDS]) -> QdiscSettings {
        QdiscSettings {
            loss_ppm: w[0] as u32,
            duplicate_ppm: (w[0] >> 32) as u32,
            reorder_ppm: w[1] as u32,
            delay_us: (w[1] >> 32) as u32,
            jitter_us: w[2] as u32,
            burst_bytes: (w[2] >> 32) as u32,
            rate_bps: w[3],
            seed: w[4],
        }
    }
}

/// The settings as `strata qdisc` words ("loss 2% delay 100ms rate
/// 1gbit"), or "off".
impl fmt::Display for QdiscSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_off() {
            return f.write_str("off");
        }
        // f64's Display prints 50.0 as "50" and 0.5 as "0.5".
        let pct = |p: u32| p as f64 / 10_000.0;
        let ms = |us: u32| us as f64 / 1000.0;
        let mut w = Vec::new();
        if self.loss_ppm > 0 {
            w.push(format!("loss {}%", pct(self.loss_ppm)));
        }
        if self.duplicate_ppm > 0 {
            w.push(format!("duplicate {}%", pct(self.duplicate_ppm)));
        }
        if self.reorder_ppm > 0 {
            w.push(format!("reorder {}%", pct(self.reorder_ppm)));
        }
        if self.delay_us > 0 {
            w.push(format!("delay {}ms", ms(self.delay_us)));
        }
        if self.jitter_us > 0 {
            w.push(format!("jitter {}ms", ms(self.jitter_us)));
        }
        if self.rate_bps > 0 {
            w.push(format!("rate {}", fmt_rate(self.rate_bps)));
        }
        if self.burst_bytes > 0 {
            w.push(format!("burst {}", self.burst_bytes));
        }
        if self.seed != 0 {
            w.push(format!("seed {}", self.seed));
        }
        f.write_str(&w.join(" "))
    }
}

/// A rate in the largest unit that divides it ("100mbit", "1500bit").
pub fn fmt_rate(bps: u64) -> String {
    for (d, u) in [
        (1_000_000_000_000, "tbit"),
        (1_000_000_000, "gbit"),
        (1_000_000, "mbit"),
        (1000, "kbit"),
    ] {
        if bps >= d && bps / d * d == bps {
            return format!("{}{u}", bps / d);
        }
    }
    format!("{bps}bit")
}

const WORDS: usize = 7;

/// One seqlocked slot: a generation and the settings as words.
#[repr(C, align(64))]
struct Slot {
    gen: AtomicU64,
    words: [AtomicU64; WORDS],
}

// SAFETY: repr(C), atomics only.
unsafe impl Shared for Slot {}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);
const _: () = assert!(MAX_IFACES * 2 * std::mem::size_of::<Slot>() <= AREA_BYTES);

/// The settings of every interface and direction, over netdevd's arena.
pub struct QdiscTable<'a> {
    slots: &'a [Slot],
}

impl<'a> QdiscTable<'a> {
    /// The table over `p..p+n` (only its first [`AREA_BYTES`] are used;
    /// a smaller area holds fewer interfaces).
    ///
    /// # Safety
    /// `p..p+n` must be mapped for `'a`, aligned to 64 bytes, and used only
    /// as this table.
    pub unsafe fn new(p: *mut u8, n: usize) -> QdiscTable<'a> {
        // SAFETY: the caller's contract is `Region::new`'s.
        QdiscTable::over(unsafe { Region::new(p, n) })
    }

    /// The table over an arena.
    pub(crate) fn over(r: Region<'a>) -> QdiscTable<'a> {
        let k = (r.len().min(AREA_BYTES) / std::mem::size_of::<Slot>()).min(MAX_IFACES * 2);
        QdiscTable {
            slots: r.slice(0, k),
        }
    }

    fn slot(&self, iface: u8, d: Direction) -> Option<&Slot> {
        self.slots.get(iface as usize * 2 + d.index())
    }

    /// The slot's generation: even when stable, bumped by two on every
    /// change (0 when never written). Cheap enough to poll every turn.
    pub fn generation(&self, iface: u8, d: Direction) -> u64 {
        self.slot(iface, d).map_or(0, |s| s.gen.load(Acquire))
    }

    /// A consistent copy of the settings and the generation it was taken
    /// at; `None` while a writer is in the middle of a change (try again
    /// later) or for an interface beyond the table.
    pub fn load(&self, iface: u8, d: Direction) -> Option<(QdiscSettings, u64)> {
        let s = self.slot(iface, d)?;
        for _ in 0..64 {
            let g1 = s.gen.load(Acquire);
            if g1 & 1 != 0 {
                std::hint::spin_loop();
                continue;
            }
            let mut w = [0u64; WORDS];
            for (o, a) in w.iter_mut().zip(&s.words) {
                *o = a.load(Relaxed);
            }
            fence(Acquire);
            if s.gen.load(Relaxed) == g1 {
                return Some((QdiscSettings::from_words(&w), g1));
            }
        }
        None
    }

    /// Replaces the settings (the launcher; one writer at a time per slot).
    /// Returns the new generation, or `None` for an interface beyond the
    /// table.
    pub fn store(&self, iface: u8, d: Direction, v: &QdiscSettings) -> Option<u64> {
        let s = self.slot(iface, d)?;
        // Take the slot by making its generation odd. A writer that died
        // holding it (odd for good) is taken over after a while.
        let mut g = s.gen.load(Relaxed);
        for i in 0.. {
            if g & 1 == 0 {
                match s.gen.compare_exchange_weak(g, g + 1, Relaxed, Relaxed) {
                    Ok(_) => {
                        g += 1;
                        break;
                    }
                    Err(now) => g = now,
                }
            } else if i > 10_000 {
                break;
            } else {
                std::thread::yield_now();
                g = s.gen.load(Relaxed);
            }
        }
        fence(Release);
        for (a, w) in s.words.iter().zip(v.to_words()) {
            a.store(w, Relaxed);
        }
        s.gen.store(g + 1, Release);
        Some(g + 1)
    }
}

impl Fabric {
    /// The qdisc settings table, in netdevd's arena (see [`qdisc_cfg`](self)).
    pub fn qdisc_settings(&self) -> QdiscTable<'_> {
        // netdevd reserves its arena's first AREA_BYTES for this.
        QdiscTable::over(self.arena(LayerId::NETDEVD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(mem: &mut [u64]) -> QdiscTable<'_> {
        // Vec<u64> is 8-aligned; Slot wants 64: over-allocate and align.
        let p = mem.as_mut_ptr() as usize;
        let a = p.div_ceil(64) * 64;
        // SAFETY: inside the borrowed vector, which outlives the table and
        // is used only by it; aligned to 64 above.
        unsafe { QdiscTable::new(a as *mut u8, mem.len() * 8 - (a - p)) }
    }

    #[test]
    fn zeros_are_off_and_store_round_trips() {
        let mut mem = vec![0u64; AREA_BYTES / 8 + 8];
        let t = table(&mut mem);
        let (s, g) = t.load(0, Direction::Egress).unwrap();
        assert!(s.is_off());
        assert_eq!(g, 0);
        let v = QdiscSettings {
            loss_ppm: 20_000,
            duplicate_ppm: 10_000,
            reorder_ppm: 5,
            delay_us: 100_000,
            jitter_us: 10_000,
            rate_bps: 1_000_000_000,
            burst_bytes: 64 * 1024,
            seed: 0xdead_beef_1234,
        };
        assert_eq!(t.store(3, Direction::Ingress, &v), Some(2));
        assert_eq!(t.generation(3, Direction::Ingress), 2);
        assert_eq!(t.load(3, Direction::Ingress), Some((v, 2)));
        // Other slots are untouched.
        assert!(t.load(3, Direction::Egress).unwrap().0.is_off());
        assert_eq!(
            t.store(3, Direction::Ingress, &QdiscSettings::default()),
            Some(4)
        );
        assert!(t.load(3, Direction::Ingress).unwrap().0.is_off());
        assert!(t.load(MAX_IFACES as u8, Direction::Egress).is_none());
    }

    #[test]
    fn a_slot_mid_write_is_not_read() {
        let mut mem = vec![0u64; AREA_BYTES / 8 + 8];
        let t = table(&mut mem);
        t.slots[0].gen.store(7, Relaxed);
        assert_eq!(t.load(0, Direction::Egress), None);
        // A writer that died mid-change is taken over.
        assert_eq!(
            t.store(0, Direction::Egress, &QdiscSettings::default()),
            Some(8)
        );
        assert!(t.load(0, Direction::Egress).is_some());
    }

    #[test]
    fn validation_names_the_field() {
        let bad = QdiscSettings {
            loss_ppm: PPM + 1,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("loss"));
        let j = QdiscSettings {
            jitter_us: 5,
            ..Default::default()
        };
        assert!(j.validate().unwrap_err().contains("jitter"));
        assert!(QdiscSettings {
            seed: 9,
            ..Default::default()
        }
        .is_off());
    }

    #[test]
    fn display_reads_like_the_command_line() {
        assert_eq!(QdiscSettings::default().to_string(), "off");
        let s = QdiscSettings {
            loss_ppm: 5_000,
            delay_us: 2_500,
            rate_bps: 100_000_000,
            ..Default::default()
        };
        assert_eq!(s.to_string(), "loss 0.5% delay 2.5ms rate 100mbit");
        assert_eq!(fmt_rate(1_500), "1500bit");
    }

    #[test]
    fn concurrent_reader_sees_whole_records() {
        let mut mem = vec![0u64; AREA_BYTES / 8 + 8];
        let t = table(&mut mem);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                for i in 1..20_000u32 {
                    let v = QdiscSettings {
                        loss_ppm: i,
                        duplicate_ppm: i,
                        delay_us: i,
                        rate_bps: i as u64,
                        seed: i as u64,
                        ..Default::default()
                    };
                    t.store(0, Direction::Egress, &v);
                }
            });
            for _ in 0..20_000 {
                if let Some((s, _)) = t.load(0, Direction::Egress) {
                    assert_eq!(s.loss_ppm, s.duplicate_ppm);
                    assert_eq!(s.delay_us, s.loss_ppm);
                    assert_eq!(s.rate_bps, s.seed);
                }
            }
        });
    }
}
