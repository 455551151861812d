//! One TCP socket's stream between sockd and tcpd: which received bytes
//! are new, what to tell tcpd of the receive side, what may be sent and
//! from where, and what tcpd's credits mean for the send side.
//!
//! Both directions are counted in stream offsets (bytes since the
//! connection began), so that anything lost or repeated when sockd or
//! tcpd restarts shows up as a gap or a repeat rather than as corrupt
//! data:
//!
//! - **Receive.** tcpd tags each delivery with its offset. Bytes before
//!   `rx_next` are a repeat (tcpd delivers again after a restart) and are
//!   skipped; a delivery past it means bytes were lost on the way (with a
//!   sockd that died, or a full ring) and tcpd is asked to deliver again
//!   from `rx_next` (RESYNC). A READ_CREDIT tells tcpd how much the
//!   application has read and how much sockd has written, so tcpd can
//!   open its window and free what was delivered.
//! - **Send.** The application's send ring keeps every byte until tcpd
//!   says it took it (`taken` in SEND_CREDIT), so a byte lost with a dying
//!   tcpd can be sent again. `tx_sent` is the offset of the next byte to
//!   hand tcpd; the credit is how much more tcpd will hold (its buffer size
//!   less what it holds unacknowledged).
//! - **Sync.** Every [`SYNC_EVERY`] (or at once after a gap) the
//!   READ_CREDIT carries SYNC, and tcpd answers with its send state. That
//!   answer covers every byte sent before it: if tcpd took less, the rest
//!   was lost and `tx_sent` goes back to what it took. A stream with
//!   nothing in flight either way has nothing a lost message could hold
//!   up, so its SYNC comes a quarter as often each time it finds it so
//!   (0.8 s, 3.2 s, 12.8 s), down to one every [`SYNC_IDLE`] (51.2 s):
//!   four SYNCs on the way rather than eight when it halved, which
//!   connections opened together paid in waves; a hundred thousand idle
//!   connections cost tcpd and sockd about four thousand messages a
//!   second rather than a million. Any traffic brings the cadence back at
//!   once.
//!
//! The type is pure: the shell passes in the ring's indices and the
//! clock, and carries out what it returns. tcpd's crash test drives it
//! the same way against a tcpd that is killed thousands of times.

use std::time::{Duration, Instant};

use strata_ipc::l4::{ctl_flags, ReadCredit, SendCredit};

/// How often sockd restates a socket's receive state to tcpd unasked and
/// asks for its send state (credits lost when a layer died come back so).
pub const SYNC_EVERY: Duration = Duration::from_millis(200);

/// The longest a quiet stream goes between SYNCs (see the module docs).
pub const SYNC_IDLE: Duration = Duration::from_millis(51_200);

/// How long a READ_CREDIT that does not matter yet waits for a message
/// to tcpd to go with (so that it costs tcpd no wake-up of its own).
pub const CREDIT_DELAY: Duration = Duration::from_millis(2);

/// Unread bytes (as tcpd knows them) past which the application's reads
/// matter to tcpd even in a large ring: tcpd's own receive buffer starts
/// at 64 KiB and grows with use, so its window may close long before the
/// ring is half full.
pub const READ_NEWS_BYTES: u64 = 32 << 10;

/// What to do with a delivery from tcpd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// New bytes: the first `skip` of the delivery are ones we have.
    Take { skip: usize },
    /// Nothing new (tcpd delivered it again after a restart).
    Repeat,
    /// Bytes before it are missing; tcpd will be asked for them again.
    Gap,
}

/// What a SEND_CREDIT from tcpd meant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credited {
    /// Bytes tcpd newly took: the send ring may let them go.
    pub consume: u64,
    /// tcpd lacked bytes sent before a SYNC: they are sent again.
    pub resent: bool,
}

/// A READ_CREDIT to send tcpd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadCreditMsg {
    /// `ctl_flags`: WRITTEN always, SYNC and RESYNC when due.
    pub flags: u32,
    pub credit: ReadCredit,
}

impl ReadCreditMsg {
    /// It asks tcpd to deliver again from what we have.
    pub fn resync(&self) -> bool {
        self.flags & ctl_flags::RESYNC != 0
    }
}

/// The bytes in the send ring not yet handed to tcpd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsent {
    /// Bytes at the front of the ring already handed to tcpd (kept until
    /// it says it took them).
    pub skip: usize,
    /// Bytes after those.
    pub avail: usize,
}

/// One TCP socket's stream state (see the module docs).
#[derive(Clone, Debug)]
pub struct Stream {
    /// tcpd's send buffer per connection: the most credit there can be.
    cap: u64,
    /// Bytes tcpd will still take.
    credit: u64,
    /// Offset of the next byte to hand tcpd.
    tx_sent: u64,
    /// `tx_sent` when the last SYNC went out.
    sync_sent: u64,
    /// Offset of the next byte expected from tcpd.
    rx_next: u64,
    /// The application's read index last reported to tcpd.
    rx_seen: u64,
    /// The receive ring's write index last reported to tcpd.
    wr_seen: u64,
    /// When the next SYNC is due.
    sync_at: Instant,
    /// The gap before it: [`SYNC_EVERY`], four times longer each time
    /// the stream is found quiet, up to [`SYNC_IDLE`].
    sync_every: Duration,
    /// When the last SYNC went.
    synced: Instant,
    /// Ask tcpd to deliver again from `rx_next` and restate what it
    /// announced.
    resync: bool,
    /// Since when a READ_CREDIT waits for company.
    deferred_since: Option<Instant>,
}

impl Stream {
    /// A new stream; tcpd holds up to `cap` bytes, of which `credit` are
    /// known to be free (0 when unknown: the first SYNC's answer says).
    pub fn new(cap: u64, credit: u64, now: Instant) -> Stream {
        Stream {
            cap,
            credit: credit.min(cap),
            tx_sent: 0,
            sync_sent: 0,
            rx_next: 0,
            rx_seen: 0,
            wr_seen: 0,
            sync_at: now,
            sync_every: SYNC_EVERY,
            synced: now,
            resync: false,
            deferred_since: None,
        }
    }

    /// The socket came back to a new sockd (or its application
    /// re-attached): whatever tcpd delivered to or took from the one
    /// before is known only from the ring, `written` bytes received and
    /// `consumed` taken by tcpd. Ask tcpd where it is at once.
    pub fn reattach(&mut self, now: Instant, written: u64, consumed: u64) {
        self.rx_next = written;
        self.tx_sent = consumed;
        self.sync_sent = consumed;
        self.rx_seen = u64::MAX;
        self.resync = true;
        self.busy();
        self.sync_at = now;
    }

    /// Asks tcpd to deliver again and restate what it announced (with the
    /// next READ_CREDIT).
    pub fn request_resync(&mut self) {
        self.resync = true;
    }

    /// Asks for tcpd's send state with the next READ_CREDIT.
    pub fn sync_now(&mut self, now: Instant) {
        self.busy();
        self.sync_at = now;
    }

    /// Traffic: SYNCs come at the full cadence again.
    fn busy(&mut self) {
        self.sync_every = SYNC_EVERY;
        self.sync_at = self.sync_at.min(self.synced + SYNC_EVERY);
    }

    /// Nothing in flight either way since the last SYNC: the application
    /// read what was written (`read`, `written`) and we last said so,
    /// nothing was sent since, and tcpd holds nothing of ours.
    fn quiet(&self, read: u64, written: u64) -> bool {
        !self.resync
            && read == written
            && read == self.rx_seen
            && written == self.wr_seen
            && self.tx_sent == self.sync_sent
            && self.credit == self.cap
    }

    /// Bytes tcpd will still take.
    pub fn credit(&self) -> u64 {
        self.credit
    }

    /// Bytes tcpd holds of this stream, taken and not yet acknowledged
    /// (what its credit lacks): pool buffers, charged to the socket's
    /// user ([`crate::charge`]).
    pub fn held(&self) -> u64 {
        self.cap - self.credit
    }

    /// Offset of the next byte to hand tcpd.
    pub fn tx_sent(&self) -> u64 {
        self.tx_sent
    }

    /// When the next READ_CREDIT with SYNC is due unasked (a resync
    /// asked for is due at once).
    pub fn sync_due(&self) -> Instant {
        self.sync_at
    }

    /// Offset of the next byte expected from tcpd.
    pub fn rx_next(&self) -> u64 {
        self.rx_next
    }

    /// A delivery of `len` bytes at stream offset `off` (32-bit, as on
    /// the wire between the layers).
    pub fn arrival(&mut self, off: u32, len: u32) -> Arrival {
        let next = self.rx_next as u32;
        if off.wrapping_sub(next) as i32 > 0 {
            self.resync = true;
            return Arrival::Gap;
        }
        let have = next.wrapping_sub(off);
        if have >= len {
            return Arrival::Repeat;
        }
        self.rx_next += u64::from(len - have);
        Arrival::Take {
            skip: have as usize,
        }
    }

    /// tcpd says the stream ends at `end`. True if every byte before it
    /// is here (the end can be shown once they are in the ring); false if
    /// some are missing, which are asked for again (tcpd says EOF again
    /// after delivering them).
    pub fn eof(&mut self, end: u32) -> bool {
        if end.wrapping_sub(self.rx_next as u32) as i32 > 0 {
            self.resync = true;
            return false;
        }
        true
    }

    /// tcpd's SEND_CREDIT (`sync`: its answer to a SYNC). `consumed` is
    /// the send ring's read index (what tcpd took before) and `queued`
    /// what the ring holds after it.
    pub fn send_credit(
        &mut self,
        c: SendCredit,
        sync: bool,
        consumed: u64,
        queued: u64,
    ) -> Credited {
        let mut out = Credited::default();
        // Where tcpd is, between what the ring still holds and what the
        // application wrote (it can be past `tx_sent` after our own
        // restart). Anything else is stale or nonsense, and ignored.
        let ahead = u64::from(c.taken.wrapping_sub(consumed as u32));
        if ahead <= queued {
            let taken = consumed + ahead;
            out.consume = ahead;
            self.tx_sent = self.tx_sent.max(taken);
            // The answer to a SYNC covers everything sent before it: what
            // tcpd lacks was lost.
            if sync && taken < self.sync_sent {
                self.tx_sent = taken;
                out.resent = true;
            }
        }
        let held = u64::from((self.tx_sent as u32).wrapping_sub(c.freed));
        if held <= self.cap {
            self.credit = self.cap - held;
        }
        out
    }

    /// The READ_CREDIT due now, if any: when the application read or
    /// sockd wrote since the last one (`read` and `written` are the
    /// receive ring's indices), and with SYNC every [`SYNC_EVERY`] or
    /// when a resync is wanted.
    pub fn read_credit(&mut self, now: Instant, read: u64, written: u64) -> Option<ReadCreditMsg> {
        let sync = now >= self.sync_at || self.resync;
        if read == self.rx_seen && written == self.wr_seen && !sync {
            return None;
        }
        let mut flags = ctl_flags::WRITTEN;
        if sync {
            flags |= ctl_flags::SYNC;
            self.sync_every = if self.quiet(read, written) {
                (self.sync_every * 4).min(SYNC_IDLE)
            } else {
                SYNC_EVERY
            };
            self.sync_at = now + self.sync_every;
            self.synced = now;
            self.sync_sent = self.tx_sent;
        } else {
            self.busy();
        }
        if self.resync {
            flags |= ctl_flags::RESYNC;
            self.resync = false;
        }
        self.rx_seen = read;
        self.wr_seen = written;
        Some(ReadCreditMsg {
            flags,
            credit: ReadCredit {
                read: read as u32,
                written: written as u32,
            },
        })
    }

    /// As [`Stream::read_credit`], but a READ_CREDIT that does not matter
    /// yet waits (up to [`CREDIT_DELAY`]) for something else going to
    /// tcpd (`riding`: this socket sends tcpd data or a request now). It
    /// matters when the read does ([`Stream::read_matters`]), or when
    /// tcpd holds a quarter of the `rx_cap`-byte ring (at most
    /// [`READ_NEWS_BYTES`]) of delivered bytes it has not heard were
    /// written; a SYNC or RESYNC goes at once.
    pub fn read_credit_due(
        &mut self,
        now: Instant,
        read: u64,
        written: u64,
        rx_cap: u64,
        riding: bool,
    ) -> Option<ReadCreditMsg> {
        let changed = read != self.rx_seen || written != self.wr_seen;
        let late = self.deferred_since.is_some_and(|t| now >= t + CREDIT_DELAY);
        let matters = self.read_matters(written, rx_cap)
            || written.saturating_sub(self.wr_seen) >= (rx_cap / 4).min(READ_NEWS_BYTES);
        let due = self.resync || now >= self.sync_at || (changed && (riding || matters || late));
        if !due {
            if changed && self.deferred_since.is_none() {
                self.deferred_since = Some(now);
            }
            return None;
        }
        self.deferred_since = None;
        self.read_credit(now, read, written)
    }

    /// When a READ_CREDIT that waits for company goes anyway.
    pub fn credit_due_at(&self) -> Option<Instant> {
        self.deferred_since.map(|t| t + CREDIT_DELAY)
    }

    /// Whether the application's next read matters to tcpd (it believes
    /// more than half of the `rx_cap`-byte ring, or [`READ_NEWS_BYTES`],
    /// unread, from `written` and the read index it last heard): then
    /// sockd asks the application to wake it when it reads.
    pub fn read_matters(&self, written: u64, rx_cap: u64) -> bool {
        written.saturating_sub(self.rx_seen) > (rx_cap / 2).min(READ_NEWS_BYTES)
    }

    /// The part of a send ring holding `queued` bytes from read index
    /// `consumed` that tcpd has not been handed.
    pub fn unsent(&self, consumed: u64, queued: usize) -> Unsent {
        let skip = (self.tx_sent.saturating_sub(consumed) as usize).min(queued);
        Unsent {
            skip,
            avail: queued - skip,
        }
    }

    /// How much of `avail` unsent bytes to hand tcpd in one buffer of at
    /// most `max`: what the credit allows.
    pub fn chunk(&self, avail: usize, max: usize) -> usize {
        avail.min(max).min(self.credit as usize)
    }

    /// `n` bytes were handed to tcpd; returns their stream offset.
    pub fn sent(&mut self, n: usize) -> u32 {
        self.busy();
        let off = self.tx_sent as u32;
        self.tx_sent += n as u64;
        self.credit = self.credit.saturating_sub(n as u64);
        off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 64 * 1024;

    fn stream() -> (Stream, Instant) {
        let now = Instant::now();
        (Stream::new(CAP, CAP, now), now)
    }

    #[test]
    fn deliveries_in_order_are_taken_whole() {
        let (mut s, _) = stream();
        assert_eq!(s.arrival(0, 100), Arrival::Take { skip: 0 });
        assert_eq!(s.arrival(100, 50), Arrival::Take { skip: 0 });
        assert_eq!(s.rx_next(), 150);
    }

    #[test]
    fn a_repeat_is_skipped_and_an_overlap_taken_from_the_new_byte() {
        let (mut s, _) = stream();
        s.arrival(0, 100);
        assert_eq!(s.arrival(0, 100), Arrival::Repeat);
        assert_eq!(s.arrival(40, 20), Arrival::Repeat);
        assert_eq!(s.arrival(60, 100), Arrival::Take { skip: 40 });
        assert_eq!(s.rx_next(), 160);
    }

    #[test]
    fn a_gap_is_not_taken_and_asks_tcpd_to_deliver_again() {
        let (mut s, now) = stream();
        s.arrival(0, 100);
        let _ = s.read_credit(now, 0, 100);
        assert_eq!(s.arrival(200, 100), Arrival::Gap);
        assert_eq!(s.rx_next(), 100);
        let m = s.read_credit(now, 0, 100).expect("a resync is due");
        assert!(m.resync());
        assert_ne!(m.flags & ctl_flags::SYNC, 0, "a resync also syncs");
        // Asked once.
        let m = s.read_credit(now, 0, 100);
        assert!(m.is_none_or(|m| !m.resync()));
    }

    #[test]
    fn offsets_wrap_at_four_gigabytes() {
        let (mut s, now) = stream();
        let start = u64::from(u32::MAX) - 9;
        s.reattach(now, start, 0);
        assert_eq!(s.arrival(start as u32, 20), Arrival::Take { skip: 0 });
        assert_eq!(s.rx_next(), start + 20);
        assert_eq!(s.arrival(5, 10), Arrival::Take { skip: 5 });
        assert_eq!(s.arrival(2, 3), Arrival::Repeat);
        assert_eq!(s.arrival(40, 1), Arrival::Gap);
        assert!(s.eof((start + 25) as u32));
        assert!(!s.eof((start + 26) as u32));
    }

    #[test]
    fn the_end_is_shown_only_once_every_byte_before_it_is_here() {
        let (mut s, now) = stream();
        s.arrival(0, 100);
        let _ = s.read_credit(now, 0, 100);
        assert!(!s.eof(150), "50 bytes missing");
        assert!(s.read_credit(now, 0, 100).unwrap().resync());
        assert_eq!(s.arrival(100, 50), Arrival::Take { skip: 0 });
        assert!(s.eof(150));
    }

    #[test]
    fn read_credit_goes_when_something_changed_and_on_the_sync_cadence() {
        let (mut s, t0) = stream();
        // Due at once (sync_at = creation), then quiet until read or
        // written change or the cadence comes round.
        let m = s.read_credit(t0, 0, 0).unwrap();
        assert_eq!(m.flags, ctl_flags::WRITTEN | ctl_flags::SYNC);
        assert_eq!(s.read_credit(t0, 0, 0), None);
        let m = s.read_credit(t0, 10, 30).unwrap();
        assert_eq!(m.flags, ctl_flags::WRITTEN);
        assert_eq!(
            m.credit,
            ReadCredit {
                read: 10,
                written: 30
            }
        );
        assert_eq!(s.read_credit(t0 + SYNC_EVERY / 2, 10, 30), None);
        let m = s.read_credit(t0 + SYNC_EVERY, 10, 30).unwrap();
        assert_eq!(m.flags, ctl_flags::WRITTEN | ctl_flags::SYNC);
    }

    #[test]
    fn a_quiet_stream_syncs_ever_less_often_and_traffic_restores_the_cadence() {
        let (mut s, t0) = stream();
        let mut t = t0;
        let mut gaps = Vec::new();
        for _ in 0..10 {
            let m = s.read_credit(t, 0, 0).expect("a SYNC is due");
            assert_ne!(m.flags & ctl_flags::SYNC, 0);
            let next = s.sync_due();
            assert_eq!(s.read_credit(next - Duration::from_millis(1), 0, 0), None);
            gaps.push((next - t).as_millis());
            t = next;
        }
        assert_eq!(
            gaps,
            [800, 3200, 12_800, 51_200, 51_200, 51_200, 51_200, 51_200, 51_200, 51_200]
        );
        // Data sent: the next SYNC is the full cadence after the last.
        s.sent(100);
        assert_eq!(s.sync_due(), t - SYNC_IDLE + SYNC_EVERY);
        let m = s.read_credit(s.sync_due(), 0, 0).unwrap();
        assert_ne!(m.flags & ctl_flags::SYNC, 0);
        // Still held by tcpd: not quiet, the cadence stays.
        let t = s.sync_due();
        let _ = s.read_credit(t, 0, 0).unwrap();
        assert_eq!(s.sync_due() - t, SYNC_EVERY);
        // A read the application made brings it back too.
        let (mut s, t0) = stream();
        let _ = s.read_credit(t0, 0, 0).unwrap();
        let _ = s.read_credit(s.sync_due(), 0, 0).unwrap();
        let t1 = s.sync_due();
        assert_eq!(t1 - t0, Duration::from_millis(4000));
        let _ = s
            .read_credit(t1 - Duration::from_millis(300), 10, 10)
            .unwrap();
        // Due the full cadence after the last SYNC (at 800 ms), long
        // past: now.
        assert_eq!(s.sync_due(), t0 + Duration::from_millis(1000));
    }

    #[test]
    fn a_read_credit_that_does_not_matter_waits_for_company_or_its_delay() {
        const RING: u64 = 65536;
        let (mut s, t0) = stream();
        let _ = s.read_credit(t0, 0, 0).unwrap(); // the first SYNC
                                                  // One byte written and read: tcpd's window is all but open.
        assert_eq!(s.read_credit_due(t0, 1, 1, RING, false), None);
        assert_eq!(s.credit_due_at(), Some(t0 + CREDIT_DELAY));
        // It goes with data sent to tcpd...
        let m = s.read_credit_due(t0, 1, 1, RING, true).unwrap();
        assert_eq!(
            m.credit,
            ReadCredit {
                read: 1,
                written: 1
            }
        );
        assert_eq!(s.credit_due_at(), None);
        // ...or alone once it has waited CREDIT_DELAY.
        assert_eq!(s.read_credit_due(t0, 2, 2, RING, false), None);
        let later = t0 + CREDIT_DELAY;
        assert_eq!(
            s.read_credit_due(later - CREDIT_DELAY / 2, 2, 2, RING, false),
            None
        );
        assert!(s.read_credit_due(later, 2, 2, RING, false).is_some());
        // Nothing changed: nothing waits.
        assert_eq!(s.read_credit_due(later, 2, 2, RING, false), None);
        assert_eq!(s.credit_due_at(), None);
    }

    #[test]
    fn a_read_credit_goes_at_once_when_tcpd_believes_the_ring_half_full() {
        const RING: u64 = 65536;
        let (mut s, t0) = stream();
        let _ = s.read_credit(t0, 0, 0).unwrap();
        // A quarter ring written and unconfirmed: tcpd may free it.
        assert!(s.read_credit_due(t0, 0, RING / 4, RING, false).is_some());
        // More than half the ring unread as tcpd knows it: the next read
        // is news, and goes at once.
        assert_eq!(s.read_credit_due(t0, 0, RING / 4 + 10, RING, false), None);
        let _ = s.read_credit_due(t0, 0, 3 * RING / 4, RING, false).unwrap();
        assert!(s.read_matters(3 * RING / 4, RING));
        let m = s
            .read_credit_due(t0, RING / 2, 3 * RING / 4, RING, false)
            .unwrap();
        assert_eq!(m.credit.read, (RING / 2) as u32);
        assert!(!s.read_matters(3 * RING / 4, RING));
    }

    #[test]
    fn sending_spends_credit_and_a_send_credit_gives_it_back() {
        let (mut s, _) = stream();
        let u = s.unsent(0, 100_000);
        assert_eq!(
            u,
            Unsent {
                skip: 0,
                avail: 100_000
            }
        );
        let mut sent = 0;
        while s.credit() > 0 {
            let n = s.chunk(100_000 - sent, 1448);
            assert_eq!(s.sent(n), sent as u32);
            sent += n;
        }
        assert_eq!(sent as u64, CAP, "never more than tcpd holds");
        assert_eq!(s.held(), CAP);
        assert_eq!(s.unsent(0, 100_000).skip, sent);
        // tcpd took everything and freed 10,000 bytes (acknowledged).
        let c = s.send_credit(
            SendCredit {
                freed: 10_000,
                taken: sent as u32,
            },
            false,
            0,
            100_000,
        );
        assert_eq!(c.consume, sent as u64);
        assert!(!c.resent);
        assert_eq!(s.credit(), 10_000);
        assert_eq!(s.held(), CAP - 10_000);
        // The ring let the taken bytes go: nothing before tx_sent is left.
        assert_eq!(s.unsent(sent as u64, 100_000 - sent).skip, 0);
    }

    #[test]
    fn bytes_a_sync_answer_lacks_are_sent_again() {
        let (mut s, now) = stream();
        s.sent(3000);
        let _ = s.read_credit(now, 0, 0).unwrap(); // SYNC with 3000 sent
        s.sent(1000);
        // tcpd (restarted) took only 1000 of the 3000 before the SYNC.
        let c = s.send_credit(
            SendCredit {
                freed: 0,
                taken: 1000,
            },
            true,
            0,
            4000,
        );
        assert_eq!(
            c,
            Credited {
                consume: 1000,
                resent: true
            }
        );
        assert_eq!(s.tx_sent(), 1000);
        assert_eq!(
            s.unsent(1000, 3000),
            Unsent {
                skip: 0,
                avail: 3000
            }
        );
        assert_eq!(s.credit(), CAP - 1000);
    }

    #[test]
    fn a_credit_that_is_not_a_sync_answer_never_rewinds() {
        let (mut s, now) = stream();
        s.sent(3000);
        let _ = s.read_credit(now, 0, 0).unwrap();
        // An ordinary update (sent before tcpd saw the last 2000) is old
        // news, not a loss.
        let c = s.send_credit(
            SendCredit {
                freed: 0,
                taken: 1000,
            },
            false,
            0,
            3000,
        );
        assert_eq!(
            c,
            Credited {
                consume: 1000,
                resent: false
            }
        );
        assert_eq!(s.tx_sent(), 3000);
    }

    #[test]
    fn a_credit_naming_bytes_the_ring_never_held_is_ignored() {
        let (mut s, _) = stream();
        s.sent(500);
        let c = s.send_credit(
            SendCredit {
                freed: 0,
                taken: 9000,
            },
            true,
            0,
            500,
        );
        assert_eq!(c, Credited::default());
        assert_eq!(s.tx_sent(), 500);
        // A freed count from the future would mean negative holdings:
        // the credit stays as it was.
        let before = s.credit();
        s.send_credit(
            SendCredit {
                freed: 900,
                taken: 500,
            },
            false,
            0,
            500,
        );
        assert_eq!(s.credit(), before);
    }

    #[test]
    fn after_a_restart_tcpd_may_have_taken_more_than_we_remember() {
        let (mut s, now) = stream();
        // The ring says tcpd took 2000 of 5000 written; it took 4000.
        s.reattach(now, 0, 2000);
        let c = s.send_credit(
            SendCredit {
                freed: 1000,
                taken: 4000,
            },
            true,
            2000,
            3000,
        );
        assert_eq!(
            c,
            Credited {
                consume: 2000,
                resent: false
            }
        );
        assert_eq!(s.tx_sent(), 4000);
        assert_eq!(s.credit(), CAP - 3000);
        assert_eq!(
            s.unsent(4000, 1000),
            Unsent {
                skip: 0,
                avail: 1000
            }
        );
    }

    #[test]
    fn credit_comes_from_tcpd_when_it_starts_unknown() {
        let now = Instant::now();
        let mut s = Stream::new(CAP, 0, now);
        assert_eq!(s.chunk(1000, 1448), 0);
        s.send_credit(SendCredit { freed: 0, taken: 0 }, true, 0, 1000);
        assert_eq!(s.chunk(1000, 1448), 1000);
    }
}
