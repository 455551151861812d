//! Poison input: a layer that dies twice on the same input gets that input
//! quarantined, so one packet of death cannot keep the stack down.
//!
//! - Every layer's shell calls [`Fabric::take_input`] before its logic sees
//!   a popped handle. That records the handle in the layer's control block
//!   (two relaxed stores on the layer's own cache line: no system call, no
//!   allocation) and, only while the layer has quarantine entries or is
//!   watched, compares the input with them.
//! - When the layer dies, the launcher reads the record before reclaim
//!   frees anything ([`Fabric::dead_input`]). The input counts only if the
//!   dead layer still held it, live, in the generation it took: one it
//!   had passed on or freed did not kill it.
//! - The first death on an input makes the launcher watch the layer for
//!   inputs of that length ([`Fabric::watch_inputs`]): the next instance
//!   hashes those as it takes them, before its logic can change them in
//!   place. A second death on an input of the same bytes quarantines it
//!   ([`Fabric::quarantine`]), under the hash taken on arrival.
//! - Quarantine entries hold the input's length as well as its hash, so a
//!   layer hashes only inputs of a quarantined length.
//! - "The same input" means the same bytes, except an IPv4 header's
//!   identification and checksum (where the handle says there is one),
//!   which a sender changes in every copy. Anything else that differs
//!   between copies (a TCP timestamp, a sequence number) makes them
//!   different inputs: the crash-loop back-off is then what is left.
//!
//! **Test-only fault hook:** with `STRATA_CRASH_ON=<layer>:<hex bytes>`
//! in the launcher's environment (layers inherit it), that layer aborts
//! when it takes an input whose bytes contain the pattern, e.g.
//! `STRATA_CRASH_ON=ipd:504f49534f4e` ("POISON"); with
//! `<layer>:hang:<hex bytes>` it hangs instead (stops beating its
//! heartbeat, for the launcher to kill); with `<layer>:once:...` only the
//! layer's first instance fails (the input is then no poison: its
//! replay is what such a test shows). The variable is read once;
//! unset, it costs one relaxed load per input.

use crate::bufs::Buffers;
use crate::fabric::Fabric;
use crate::handle::Handle;
use crate::layer::LayerId;
use crate::layout::{LayerCtl, QUARANTINE_SLOTS};
use std::sync::atomic::{AtomicU8, Ordering::*};
use std::sync::OnceLock;

/// The fault hook's environment variable (tests only, see the module).
pub const CRASH_ENV: &str = "STRATA_CRASH_ON";

/// Most bytes of a quarantined input the launcher keeps for its log.
pub const DUMP_MAX: usize = 256;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a (64-bit) of an input's bytes; never 0, which marks "none".
/// With `ip`, the offset of an IPv4 header in `bytes`, its identification
/// and header checksum count as zeros: a sender numbers every datagram
/// anew (Linux does, unless DF is set on an unconnected socket), so the
/// copies of one packet of death differ there and nowhere else.
pub fn input_hash(bytes: &[u8], ip: Option<usize>) -> u64 {
    let h = 0xcbf2_9ce4_8422_2325;
    let h = match ip {
        Some(i) if bytes.len() >= i.saturating_add(20) && bytes[i] >> 4 == 4 => {
            let h = fnv1a(h, &bytes[..i + 4]);
            let h = fnv1a(h, &[0, 0]);
            let h = fnv1a(h, &bytes[i + 6..i + 10]);
            let h = fnv1a(h, &[0, 0]);
            fnv1a(h, &bytes[i + 12..])
        }
        _ => fnv1a(h, bytes),
    };
    h.max(1)
}

/// Where `h`'s IPv4 header is, for [`input_hash`], as recorded in
/// [`LayerCtl::input_ip`] (offset + 1, 0: none).
#[inline]
fn ip_mark(h: &Handle) -> u64 {
    if h.ethertype == 0x0800 {
        h.l3_off as u64 + 1
    } else {
        0
    }
}

fn ip_at(mark: u64) -> Option<usize> {
    mark.checked_sub(1).map(|i| i as usize)
}

/// What a dead layer was handling when it died, as the launcher found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadInput {
    /// Its length.
    pub len: u32,
    /// The hash of its bytes as they were at the death (the dead layer's
    /// logic may have changed them in place: two deaths on the same input
    /// leave the same bytes).
    pub hash: u64,
    /// The hash of its bytes as the layer took them, if it was watched
    /// for inputs of this length; what a quarantine entry must hold.
    pub taken_hash: Option<u64>,
    /// Its first [`DUMP_MAX`] bytes as they were at the death.
    pub head: Vec<u8>,
}

impl DeadInput {
    /// Whether `other` (an earlier death) was on the same input.
    pub fn same_as(&self, other: &DeadInput) -> bool {
        self.len == other.len
            && (self.hash == other.hash
                || (self.taken_hash.is_some() && self.taken_hash == other.taken_hash))
    }

    /// The hash to quarantine it under: as taken, when known.
    pub fn key(&self) -> u64 {
        self.taken_hash.unwrap_or(self.hash)
    }
}

/// A quarantine entry as the launcher reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// Input length.
    pub len: u32,
    /// Input hash.
    pub hash: u64,
    /// Copies dropped since it was quarantined.
    pub hits: u64,
}

// The fault hook: 0 not read yet, 1 off, 2 on for HOOK's layer.
static HOOK_STATE: AtomicU8 = AtomicU8::new(0);
static HOOK: OnceLock<Option<CrashHook>> = OnceLock::new();

/// What [`CRASH_ENV`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashHook {
    /// The layer that is to fail.
    pub layer: LayerId,
    /// Hang rather than abort.
    pub hang: bool,
    /// Only the first instance of the layer fails (one that was never
    /// restarted): for showing what its next instance does with the
    /// input, which is then no poison.
    pub once: bool,
    /// The bytes that make it fail.
    pub pattern: Vec<u8>,
}

/// Parses [`CRASH_ENV`]: `<layer label>:[once:][hang:]<hex bytes>`.
pub fn parse_crash_env(v: &str) -> Option<CrashHook> {
    let (layer, rest) = v.split_once(':')?;
    let layer = LayerId::from_label(layer.trim())?;
    let (once, rest) = match rest.trim().strip_prefix("once:") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (hang, hex) = match rest.trim().strip_prefix("hang:") {
        Some(h) => (true, h),
        None => (false, rest),
    };
    let hex = hex.trim();
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(CrashHook {
        layer,
        hang,
        once,
        pattern: bytes,
    })
}

#[inline]
fn hook_may_fire() -> bool {
    HOOK_STATE.load(Relaxed) != 1
}

/// The hook's verdict on an input: `Some(hang)` when it is to fail.
/// `restarted`: this instance is not the layer's first.
#[cold]
fn hook_fires(me: LayerId, data: &[u8], restarted: bool) -> Option<bool> {
    let hook = HOOK.get_or_init(|| {
        let v = std::env::var(CRASH_ENV).ok()?;
        let h = parse_crash_env(&v);
        if h.is_none() {
            eprintln!("{}: ignoring malformed {CRASH_ENV}={v:?}", me.label());
        }
        h
    });
    match hook {
        Some(h) if h.layer == me && !(h.once && restarted) => {
            HOOK_STATE.store(2, Relaxed);
            data.windows(h.pattern.len())
                .any(|w| w == h.pattern.as_slice())
                .then_some(h.hang)
        }
        _ => {
            HOOK_STATE.store(1, Relaxed);
            None
        }
    }
}

impl Fabric {
    /// Takes a popped handle in as `me`'s input: records it as the input
    /// in progress (for the launcher, should `me` die on it) and drops it
    /// if it is quarantined. Returns false when it was dropped: the handle
    /// has then been freed and counted, and the caller goes on to the next.
    #[inline]
    pub fn take_input(&self, me: LayerId, h: &Handle) -> bool {
        let c = self.ctl(me);
        c.input
            .store(((h.gen as u64) << 32) | h.buf as u64, Relaxed);
        c.input_span
            .store(((h.data_off as u64) << 32) | h.data_len as u64, Relaxed);
        c.input_ip.store(ip_mark(h), Relaxed);
        // Acquire: pairs with `quarantine`'s release, so the slots it
        // wrote are visible once the count is.
        let q = self.launch(me).quarantine_ctl.load(Acquire);
        if q == 0 && !hook_may_fire() {
            return true;
        }
        self.take_input_checked(me, c, h, q)
    }

    #[cold]
    #[inline(never)]
    fn take_input_checked(&self, me: LayerId, c: &LayerCtl, h: &Handle, q: u64) -> bool {
        let pool = self.pool(me);
        // A bad handle is the logic's to refuse, as ever.
        let Ok(data) = pool.data(h) else {
            return true;
        };
        let mut hash = None;
        let ip = ip_at(ip_mark(h));
        let n = ((q >> 32) as usize).min(QUARANTINE_SLOTS);
        for (k, s) in self.launch(me).quarantine[..n].iter().enumerate() {
            if s.len.load(Relaxed) != h.data_len {
                continue;
            }
            let x = *hash.get_or_insert_with(|| input_hash(data, ip));
            if s.hash.load(Relaxed) == x {
                c.quarantine_hits[k].fetch_add(1, Relaxed);
                c.quarantine_drops.fetch_add(1, Relaxed);
                self.pool(me).free(h);
                return false;
            }
        }
        let watched = q as u32;
        if watched != 0 {
            let v = if watched - 1 == h.data_len {
                *hash.get_or_insert_with(|| input_hash(data, ip))
            } else {
                0
            };
            c.input_hash.store(v, Relaxed);
        }
        if hook_may_fire() {
            let restarted = self.launch(me).restarts.load(Relaxed) > 0;
            if let Some(hang) = hook_fires(me, data, restarted) {
                eprintln!(
                    "{}[{}]: {CRASH_ENV}: input of {} bytes matches: {}",
                    me.label(),
                    std::process::id(),
                    data.len(),
                    if hang { "hanging" } else { "aborting" }
                );
                if hang {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
                std::process::abort();
            }
        }
        true
    }

    /// The input `dead` was handling when it died (launcher, after the
    /// death, before [`Fabric::reclaim`]), if it still held it. Clears the
    /// record either way, so the next instance starts with none.
    pub fn dead_input(&self, dead: LayerId) -> Option<DeadInput> {
        let c = self.ctl(dead);
        let rec = c.input.swap(0, Relaxed);
        let span = c.input_span.swap(0, Relaxed);
        let ip = ip_at(c.input_ip.swap(0, Relaxed));
        let taken = c.input_hash.swap(0, Relaxed);
        let q = self.launch(dead).quarantine_ctl.load(Relaxed);
        if rec == 0 {
            return None;
        }
        let h = Handle {
            buf: rec as u32,
            gen: (rec >> 32) as u32,
            data_off: (span >> 32) as u32,
            data_len: span as u32,
            ..Default::default()
        };
        // Live in the generation it took, and not passed on or freed: a
        // buffer others still hold (tcpd keeps what it delivered) may
        // have left the dead layer all the same.
        if self.check(&h).is_err() || self.refs_of(h.buf, dead) == 0 {
            return None;
        }
        let pool = self.pool(LayerId::LAUNCHER);
        let data = pool.data(&h).ok()?;
        let watched = q as u32;
        Some(DeadInput {
            len: h.data_len,
            hash: input_hash(data, ip),
            taken_hash: (watched != 0 && watched - 1 == h.data_len && taken != 0).then_some(taken),
            head: data[..data.len().min(DUMP_MAX)].to_vec(),
        })
    }

    /// Makes `l` hash, as it takes them, its inputs of length `len` (or
    /// stops that), so the hash of a suspect input is known from before
    /// any logic touched it (launcher only).
    pub fn watch_inputs(&self, l: LayerId, len: Option<u32>) {
        let c = self.launch(l);
        let q = c.quarantine_ctl.load(Relaxed);
        let w = len.map_or(0, |n| n.saturating_add(1) as u64);
        c.quarantine_ctl.store((q & !0xffff_ffff) | w, Release);
    }

    /// Quarantines inputs of `len` bytes with hash `hash` for `l`
    /// (launcher only). Returns false if they already were.
    pub fn quarantine(&self, l: LayerId, len: u32, hash: u64) -> bool {
        let c = self.launch(l);
        let q = c.quarantine_ctl.load(Relaxed);
        let n = ((q >> 32) as usize).min(QUARANTINE_SLOTS);
        if c.quarantine[..n]
            .iter()
            .any(|s| s.len.load(Relaxed) == len && s.hash.load(Relaxed) == hash)
        {
            return false;
        }
        let total = c.quarantined.load(Relaxed);
        let k = (total % QUARANTINE_SLOTS as u64) as usize;
        let s = &c.quarantine[k];
        // A layer reading the slot meanwhile matches no input's length.
        s.len.store(u32::MAX, Release);
        s.hash.store(hash, Release);
        self.ctl(l).quarantine_hits[k].store(0, Relaxed);
        s.len.store(len, Release);
        c.quarantined.store(total + 1, Relaxed);
        let n = (n + 1).min(QUARANTINE_SLOTS) as u64;
        c.quarantine_ctl
            .store((n << 32) | (q & 0xffff_ffff), Release);
        true
    }

    /// `l`'s quarantine entries, oldest first.
    pub fn quarantine_entries(&self, l: LayerId) -> Vec<QuarantineEntry> {
        let (c, hits) = (self.launch(l), &self.ctl(l).quarantine_hits);
        let n = ((c.quarantine_ctl.load(Acquire) >> 32) as usize).min(QUARANTINE_SLOTS);
        let total = c.quarantined.load(Relaxed) as usize;
        // Once the table wrapped, the oldest entry is the next to go.
        let first = if total > QUARANTINE_SLOTS {
            total % QUARANTINE_SLOTS
        } else {
            0
        };
        (0..n)
            .map(|k| (first + k) % QUARANTINE_SLOTS)
            .map(|k| QuarantineEntry {
                len: c.quarantine[k].len.load(Acquire),
                hash: c.quarantine[k].hash.load(Acquire),
                hits: hits[k].load(Relaxed),
            })
            .collect()
    }

    /// Inputs quarantined for `l` ever, and copies of them `l` dropped.
    pub fn quarantine_counts(&self, l: LayerId) -> (u64, u64) {
        (
            self.launch(l).quarantined.load(Relaxed),
            self.ctl(l).quarantine_drops.load(Relaxed),
        )
    }
}

/// Formats bytes as `xxd` does: offset, 16 bytes in pairs, then ASCII.
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(16) * 68);
    for (i, row) in bytes.chunks(16).enumerate() {
        out.push_str(&format!("{:08x}: ", i * 16));
        for k in 0..16 {
            match row.get(k) {
                Some(b) => out.push_str(&format!("{b:02x}")),
                None => out.push_str("  "),
            }
            if k % 2 == 1 {
                out.push(' ');
            }
        }
        out.push(' ');
        out.extend(row.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        out.push('\n');
    }
    out
}
