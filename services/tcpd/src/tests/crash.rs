//! Crash injection: two cores back to back over a lossy wire, each with
//! a sockd made of the real one's stream core (`strata_sockd::stream`:
//! stream offsets, absolute credits, a SYNC every 200 ms, RESYNC on a
//! gap) and an application that writes everything at once, and either
//! core killed at thousands of points chosen by a seeded generator: at
//! any step that leaves something in its arena ([`point`], which the core
//! calls at each of them in test builds) or at any pool call. A kill
//! unwinds out of the core; what it held is reclaimed as the launcher
//! would, a new core restores from the storage as left, and the transfer
//! carries on. Every byte must arrive, once and in order, with no RST on
//! the wire, no error for the application, no connection reset by
//! restore, and the pool back at its baseline. Over IPv4 and over IPv6.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use strata_ipc::l4::{ctl_flags, SendCredit};
use strata_ipc::BufError;
use strata_sockd::stream::{Arrival, Stream};

use super::bulk::{cfg_for, v6_of, Wire};
use super::*;
use crate::Stat;

thread_local! {
    /// Crash points left before the core is killed (0: never).
    static COUNTDOWN: Cell<u64> = const { Cell::new(0) };
}

/// What a killed core unwinds with.
pub struct Killed;

/// Called by the core at every step that leaves something in its arena
/// (and by [`Tracked`] at every pool call): the kill, when it is due.
pub fn point() {
    COUNTDOWN.with(|c| match c.get() {
        0 => {}
        1 => {
            c.set(0);
            std::panic::panic_any(Killed);
        }
        n => c.set(n - 1),
    });
}

/// Kills quietly: a [`Killed`] unwind prints nothing.
fn quiet_kills() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Killed>().is_none() {
                prev(info);
            }
        }));
    });
}

/// The references one core holds, per buffer, so that a kill can be
/// followed by the launcher's reclaim: everything the dead core held that
/// no queue entry in its arena names goes back to the pool; what entries
/// name is restore's to keep or free.
#[derive(Default)]
struct Refs {
    n: Vec<i64>,
    /// A handle of the buffer's current generation.
    h: Vec<Handle>,
}

impl Refs {
    fn take(&mut self, h: &Handle) {
        if h.is_inline() {
            return;
        }
        let b = h.buf as usize;
        if self.n.len() <= b {
            self.n.resize(b + 1, 0);
            self.h.resize(b + 1, Handle::default());
        }
        self.n[b] += 1;
        self.h[b] = *h;
    }

    fn give(&mut self, h: &Handle) {
        if h.is_inline() {
            return;
        }
        self.n[h.buf as usize] -= 1;
        assert!(
            self.n[h.buf as usize] >= 0,
            "core gave away more than it held"
        );
    }
}

/// The pool as one core sees it: counted, and a place to be killed.
struct Tracked<'a> {
    pool: &'a mut HeapPool,
    refs: &'a mut Refs,
}

impl Buffers for Tracked<'_> {
    fn alloc(&mut self, len: usize) -> Option<Handle> {
        point();
        let h = self.pool.alloc(len)?;
        self.refs.take(&h);
        Some(h)
    }

    fn free(&mut self, h: &Handle) {
        point();
        let stale = self.pool.stale_frees;
        self.pool.free(h);
        assert_eq!(self.pool.stale_frees, stale, "core freed a stale handle");
        self.refs.give(h);
    }

    fn add_ref(&mut self, h: &Handle) -> Result<(), BufError> {
        point();
        self.pool.add_ref(h)?;
        self.refs.take(h);
        Ok(())
    }

    fn raw(&self, h: &Handle) -> Result<&[u8], BufError> {
        self.pool.raw(h)
    }

    fn raw_mut(&mut self, h: &Handle) -> Result<&mut [u8], BufError> {
        self.pool.raw_mut(h)
    }

    fn raw_pair_mut(&mut self, a: &Handle, b: &Handle) -> Result<(&mut [u8], &mut [u8]), BufError> {
        self.pool.raw_pair_mut(a, b)
    }
}

/// tcpd's send buffer (`socket_tx_bytes` of [`cfg_for`]).
const CAP: u64 = 256 * 1024;

/// Where a side's storage is, to take it back from a core killed while
/// restoring (which had it moved in).
struct Raw {
    conns: (*mut ConnBlock, usize),
    segs: (*mut SegEntry, usize),
    journal: *mut crate::block::Journal,
    undo: (*mut crate::block::UndoRec, usize),
}

impl Raw {
    fn of(st: &mut Storage<'static>) -> Raw {
        Raw {
            conns: (st.conns.as_mut_ptr(), st.conns.len()),
            segs: (st.segs.as_mut_ptr(), st.segs.len()),
            journal: &mut *st.journal,
            undo: (st.undo.as_mut_ptr(), st.undo.len()),
        }
    }

    /// The storage again, once whatever held it is gone.
    #[allow(unsafe_code)]
    fn storage(&self) -> Storage<'static> {
        // SAFETY: the memory is leaked (lives for the test); the core
        // that held the previous references unwound and is gone, so these
        // are the only ones.
        unsafe {
            Storage {
                conns: std::slice::from_raw_parts_mut(self.conns.0, self.conns.1),
                segs: std::slice::from_raw_parts_mut(self.segs.0, self.segs.1),
                journal: &mut *self.journal,
                undo: std::slice::from_raw_parts_mut(self.undo.0, self.undo.1),
            }
        }
    }
}

/// One side: its core, and the sockd it talks to.
struct Side {
    core: TcpCore<'static>,
    raw: Raw,
    cfg: TcpConfig,
    out: Outputs,
    refs: Refs,
    sock: u32,
    connected: bool,
    /// sockd's stream state.
    stream: Stream,
    /// The sending application's bytes, all written into the send ring
    /// at once.
    data: Vec<u8>,
    /// The send ring's read index: bytes tcpd said it took.
    taken: u64,
    shut: bool,
    /// The receiving application's bytes (it reads everything at once).
    recv: Vec<u8>,
    eof: bool,
    closed: bool,
}

impl Side {
    fn new(addr: Ipv4Addr, seed: u32, data: Vec<u8>, clock: Instant) -> Side {
        let cfg = cfg_for(addr, seed);
        let mut st = storage(16, 2048);
        let raw = Raw::of(&mut st);
        Side {
            core: TcpCore::new(cfg.clone(), st).unwrap(),
            raw,
            cfg,
            out: Outputs::with_capacity(256),
            refs: Refs::default(),
            sock: 0,
            connected: false,
            stream: Stream::new(CAP, CAP, clock),
            data,
            taken: 0,
            shut: false,
            recv: Vec::new(),
            eof: false,
            closed: false,
        }
    }
}

/// What a run saw.
#[derive(Default, Debug)]
struct Tally {
    kills: u64,
    /// Kills by the journal's state: idle, mid-event, mid-commit.
    by_state: [u64; 3],
    restored: u64,
    /// Kills of a restoring core.
    restore_kills: u64,
    resends: u64,
}

struct Net {
    pool: HeapPool,
    now: u64,
    /// The instant `now` counts from, for the stream core's clock.
    clock: Instant,
    sides: [Side; 2],
    wire: Wire,
    rng: u64,
    /// Kill chance per core call, per mille (0: none).
    kill_pm: u64,
    tally: Tally,
    /// Every packet goes over IPv6 (else IPv4).
    v6: bool,
}

enum Call {
    Ip(Handle),
    Sock(Handle),
    Poll,
}

impl Net {
    /// `now` on the stream core's clock.
    fn instant(&self) -> Instant {
        self.clock + Duration::from_nanos(self.now)
    }

    fn rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Kills happen while data flows both ways, not while connecting or
    /// closing (a request lost with a dead tcpd is sockd's to repeat,
    /// which this sockd does not do).
    fn killing(&self) -> bool {
        self.kill_pm > 0 && self.sides.iter().all(|s| !s.recv.is_empty() && !s.shut)
    }

    /// One call into side `w`'s core, perhaps killed on the way; then its
    /// outputs are moved on.
    fn call(&mut self, w: usize, what: Call) {
        let arm = self.killing() && self.rand() % 1000 < self.kill_pm;
        let at = 1 + self.rand() % 48;
        let now = self.now;
        let s = &mut self.sides[w];
        if let Call::Ip(h) | Call::Sock(h) = &what {
            s.refs.take(h);
        }
        if arm {
            COUNTDOWN.with(|c| c.set(at));
        }
        let r = {
            let mut p = Tracked {
                pool: &mut self.pool,
                refs: &mut s.refs,
            };
            let core = &mut s.core;
            let out = &mut s.out;
            catch_unwind(AssertUnwindSafe(|| match what {
                Call::Ip(h) => core.from_ip(now, &mut p, h, out),
                Call::Sock(h) => core.from_sock(now, &mut p, h, out),
                Call::Poll => {
                    core.poll(now, &mut p, out);
                }
            }))
        };
        COUNTDOWN.with(|c| c.set(0));
        match r {
            Ok(()) => {}
            Err(e) => {
                assert!(e.downcast_ref::<Killed>().is_some(), "a real panic");
                self.kill(w);
            }
        }
        self.drain(w);
    }

    /// Side `w`'s core died: its last outputs never left it, the launcher
    /// reclaims what it held outside its arena, and a new core restores
    /// (and is killed again, now and then, while it does).
    fn kill(&mut self, w: usize) {
        self.tally.kills += 1;
        let placeholder = TcpCore::new(self.sides[w].cfg.clone(), storage(1, 1)).unwrap();
        let mut st = std::mem::replace(&mut self.sides[w].core, placeholder).into_storage();
        self.tally.by_state[st.journal.state.min(2) as usize] += 1;
        loop {
            let s = &mut self.sides[w];
            s.out.clear();
            // The launcher's reclaim: references not named by an entry.
            let mut named = vec![0i64; s.refs.n.len()];
            for e in st.segs.iter().filter(|e| e.owner != 0) {
                assert!(self.pool.raw(&e.h).is_ok(), "an entry names a freed buffer");
                named[e.h.buf as usize] += 1;
            }
            for (b, &n) in named.iter().enumerate() {
                let held = s.refs.n[b];
                assert!(
                    held >= n,
                    "entries name {n} references of buffer {b}, core held {held}"
                );
                for _ in n..held {
                    self.pool.free(&s.refs.h[b]);
                }
                s.refs.n[b] = n;
            }
            let in_use = st.conns.iter().filter(|c| c.in_use()).count();
            let again = self.rand().is_multiple_of(2);
            let at = 1 + self.rand() % 12;
            if again {
                COUNTDOWN.with(|c| c.set(at));
            }
            let s = &mut self.sides[w];
            let r = {
                let mut p = Tracked {
                    pool: &mut self.pool,
                    refs: &mut s.refs,
                };
                let (cfg, now, out) = (s.cfg.clone(), self.now, &mut s.out);
                catch_unwind(AssertUnwindSafe(|| {
                    TcpCore::restore(cfg, st, now, &mut p, out)
                }))
            };
            COUNTDOWN.with(|c| c.set(0));
            match r {
                Ok(r) => {
                    let (core, kept) = r.expect("restore");
                    assert_eq!(
                        core.stats().get(Stat::RestoreReset),
                        0,
                        "restore reset a connection"
                    );
                    assert!(kept + 1 >= in_use, "kept {kept} of {in_use}");
                    s.core = core;
                    self.tally.restored += 1;
                    return;
                }
                Err(e) => {
                    assert!(e.downcast_ref::<Killed>().is_some(), "a real panic");
                    self.tally.restore_kills += 1;
                    st = s.raw.storage();
                }
            }
        }
    }

    /// Moves what side `w`'s core produced: datagrams onto the wire,
    /// sockd's share into the side.
    fn drain(&mut self, w: usize) {
        let to_b = w == 0;
        let closing = self.sides.iter().any(|s| s.closed);
        let s = &mut self.sides[w];
        s.out.pin.clear();
        s.out.unpin.clear();
        let mut attach = Vec::new();
        for h in std::mem::take(&mut s.out.to_ip) {
            s.refs.give(&h);
            let wire = on_the_wire(&self.pool, &h);
            self.pool.free(&h);
            assert_eq!(wire[0][0] >> 4 == 6, self.v6, "the connection's family");
            let seg = parse_out_bytes(&wire[0]);
            // (Once a side is closed, late duplicates from the wire get
            // their RST as they should.)
            if seg.contains(RST) && !closing {
                let st: Vec<_> = Stat::ALL
                    .iter()
                    .filter(|&&k| s.core.stats().get(k) > 0)
                    .map(|&k| (k.name(), s.core.stats().get(k)))
                    .collect();
                panic!(
                    "side {w} sent a RST after {:?}: {:?} {st:?}",
                    self.tally,
                    s.core.connections().collect::<Vec<_>>()
                );
            }
            for bytes in wire {
                self.wire.put(self.now, to_b, bytes);
            }
        }
        for h in std::mem::take(&mut s.out.to_sock) {
            s.refs.give(&h);
            if h.flags & flags::CTRL != 0 {
                let m = L4Ctl::from_handle(&self.pool, &h).unwrap().unwrap();
                match m.op {
                    op::CONNECTED => s.connected = true,
                    op::ACCEPTABLE => attach.push(m.value),
                    op::SEND_CREDIT => {
                        let queued = s.data.len() as u64 - s.taken;
                        let sync = m.flags & ctl_flags::SYNC != 0;
                        let credit = SendCredit::unpack(m.value);
                        let got = s.stream.send_credit(credit, sync, s.taken, queued);
                        s.taken += got.consume;
                        if got.resent {
                            self.tally.resends += 1;
                        }
                    }
                    op::EOF => s.eof |= s.stream.eof(m.value as u32),
                    op::CLOSED => s.closed = true,
                    op::OK => {}
                    o => panic!("the application would see op {o}: {m:?}"),
                }
            } else {
                // By stream offset: repeats skipped, a gap asked again.
                let d = self.pool.data(&h).unwrap();
                if let Arrival::Take { skip } = s.stream.arrival(h.stream_off, d.len() as u32) {
                    assert!(!s.eof, "data after EOF");
                    s.recv.extend_from_slice(&d[skip..]);
                }
            }
            self.pool.free(&h);
        }
        for id in attach {
            let s = &mut self.sides[w];
            s.sock = 20;
            s.connected = true;
            let m = L4Ctl {
                op: op::ATTACH,
                sock: 20,
                value: id,
                ..L4Ctl::default()
            };
            let h = m.to_handle(&mut self.pool).unwrap();
            self.call(w, Call::Sock(h));
        }
    }

    /// sockd's work on side `w`: READ_CREDIT (everything is read at
    /// once), a SYNC now and then, payload as the credit allows, and the
    /// write side shut once tcpd took every byte.
    fn app(&mut self, w: usize, step: u64) {
        let now = self.instant();
        let s = &mut self.sides[w];
        if !s.connected || s.sock == 0 {
            return;
        }
        let got = s.recv.len() as u64;
        if let Some(m) = s.stream.read_credit(now, got, got) {
            let m = L4Ctl {
                op: op::READ_CREDIT,
                sock: s.sock,
                flags: m.flags,
                value: m.credit.pack(),
                ..L4Ctl::default()
            };
            let h = m.to_handle(&mut self.pool).unwrap();
            self.call(w, Call::Sock(h));
        }
        for k in 0..64 {
            let s = &mut self.sides[w];
            let unsent = s.stream.unsent(s.taken, s.data.len() - s.taken as usize);
            let off = s.taken as usize + unsent.skip;
            // Buffers of odd sizes, unlike sockd's one segment each.
            let want = match (off / 1448 + step as usize + k) % 4 {
                0 => 1448,
                1 => 700,
                2 => 1800,
                _ => 9000,
            };
            let n = s.stream.chunk(unsent.avail, want);
            if n == 0 {
                break;
            }
            let Some(mut h) = self.pool.alloc(n) else {
                break;
            };
            h.data_len = n as u32;
            h.sock = s.sock;
            h.stream_off = s.stream.sent(n);
            self.pool
                .data_mut(&h)
                .unwrap()
                .copy_from_slice(&s.data[off..off + n]);
            self.call(w, Call::Sock(h));
        }
        let s = &mut self.sides[w];
        if !s.shut && s.taken == s.data.len() as u64 && (s.eof || w == 0) {
            s.shut = true;
            let m = L4Ctl {
                op: op::SHUTDOWN,
                sock: s.sock,
                value: 1,
                ..L4Ctl::default()
            };
            let h = m.to_handle(&mut self.pool).unwrap();
            self.call(w, Call::Sock(h));
        }
    }

    fn step(&mut self, step: u64) {
        self.wire.q.sort_by_key(|(t, _, _)| *t);
        let due = self
            .wire
            .q
            .iter()
            .take_while(|(t, _, _)| *t <= self.now)
            .count();
        let batch: Vec<_> = self.wire.q.drain(..due).collect();
        for (_, to_b, bytes) in batch {
            let h = ip_handle(&mut self.pool, &bytes, protocol::TCP);
            self.call(usize::from(to_b), Call::Ip(h));
        }
        for w in 0..2 {
            self.call(w, Call::Poll);
        }
        for w in 0..2 {
            self.app(w, step);
        }
    }

    fn next_time(&self) -> u64 {
        let mut t = self.now + 50 * MS;
        for (w, _, _) in &self.wire.q {
            t = t.min(*w);
        }
        for s in &self.sides {
            if let Some(d) = s.core.next_deadline() {
                t = t.min(d);
            }
            if s.connected {
                let due = s.stream.sync_due().saturating_duration_since(self.clock);
                t = t.min(due.as_nanos() as u64);
            }
        }
        t.max(self.now + 10_000)
    }
}

/// The flags of a datagram's (or IPv6 packet's) TCP header.
fn parse_out_bytes(d: &[u8]) -> TcpFlags {
    let at = if d[0] >> 4 == 6 { 40 } else { 20 };
    let (tcp, _) = TcpHeader::parse(&d[at..]).expect("valid TCP");
    tcp.flags
}

/// A transfer of `a_bytes` from A to B and `b_bytes` back, each core
/// killed in `kill_pm` per mille of its calls while data flows; over
/// IPv6 (B listening on `::`) when `v6`, else over IPv4 (B on
/// `0.0.0.0`).
fn run(a_bytes: usize, b_bytes: usize, seed: u64, kill_pm: u64, v6: bool) -> Net {
    quiet_kills();
    let now = 1_000_000_000;
    let clock = Instant::now();
    let start = clock + Duration::from_nanos(now);
    let mut net = Net {
        pool: HeapPool::new(16384, 256),
        now,
        clock,
        sides: [
            Side::new(
                Ipv4Addr::new(10, 0, 0, 1),
                11,
                pattern(a_bytes, 0x5a),
                start,
            ),
            Side::new(
                Ipv4Addr::new(10, 0, 0, 2),
                22,
                pattern(b_bytes, 0xa5),
                start,
            ),
        ],
        wire: Wire {
            rng: seed | 1,
            q: Vec::new(),
            loss: 10,
            dup: 5,
            reorder: 10,
            sent: 0,
            lost: 0,
            last: [0; 2],
        },
        rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        kill_pm,
        tally: Tally::default(),
        v6,
    };
    let b = Ipv4Addr::new(10, 0, 0, 2);
    let (any, b_addr) = if v6 {
        (0, u128::from(v6_of(b)))
    } else {
        (mapped(0), mapped(u32::from(b)))
    };
    for m in [
        L4Ctl {
            op: op::BIND,
            sock: 1,
            local_addr: any,
            local_port: 80,
            ..L4Ctl::default()
        },
        L4Ctl {
            op: op::LISTEN,
            sock: 1,
            value: 8,
            ..L4Ctl::default()
        },
    ] {
        let h = m.to_handle(&mut net.pool).unwrap();
        net.call(1, Call::Sock(h));
    }
    net.sides[0].sock = 5;
    let h = L4Ctl {
        op: op::CONNECT,
        sock: 5,
        local_addr: any,
        remote_addr: b_addr,
        remote_port: 80,
        ..L4Ctl::default()
    }
    .to_handle(&mut net.pool)
    .unwrap();
    net.call(0, Call::Sock(h));
    let limit = net.now + 3600 * 1_000_000_000;
    let mut step = 0;
    while !net.sides.iter().all(|s| s.closed) {
        step += 1;
        net.now = net.next_time();
        assert!(
            net.now < limit,
            "stalled after {:?}: a {:?} b {:?}",
            net.tally,
            net.sides[0].core.connections().collect::<Vec<_>>(),
            net.sides[1].core.connections().collect::<Vec<_>>()
        );
        net.step(step);
    }
    // The listener goes too, then every timer runs out (TIME-WAIT).
    let h = L4Ctl {
        op: op::CLOSE,
        sock: 1,
        ..L4Ctl::default()
    }
    .to_handle(&mut net.pool)
    .unwrap();
    net.call(1, Call::Sock(h));
    let end = net.now + 200 * 1_000_000_000;
    while net.now < end {
        net.now = net.next_time().min(end);
        net.step(step);
        net.wire.q.clear();
    }
    let (a, b) = (&net.sides[0], &net.sides[1]);
    assert!(
        b.recv == a.data,
        "A→B bytes differ ({} of {})",
        b.recv.len(),
        a.data.len()
    );
    assert!(
        a.recv == b.data,
        "B→A bytes differ ({} of {})",
        a.recv.len(),
        b.data.len()
    );
    assert!(a.eof && b.eof);
    for s in &net.sides {
        assert_eq!(s.core.conns_in_use(), 0);
        assert_eq!(s.core.entries_in_use(), 0);
        assert!(
            s.refs.n.iter().all(|&n| n == 0),
            "a core still holds a buffer"
        );
    }
    assert_eq!(net.pool.in_use(), 0, "buffers leaked");
    assert_eq!(net.pool.stale_frees, 0);
    net
}

/// [`run`] for `seeds` seeds; what they saw together.
fn runs(seeds: std::ops::Range<u64>, v6: bool) -> Tally {
    let mut total = Tally::default();
    for seed in seeds {
        let net = run(384 << 10, 128 << 10, 0x5eed_0000 + seed, 150, v6);
        let t = &net.tally;
        total.kills += t.kills;
        total.restored += t.restored;
        total.resends += t.resends;
        total.restore_kills += t.restore_kills;
        for k in 0..3 {
            total.by_state[k] += t.by_state[k];
        }
    }
    eprintln!("{total:?}");
    total
}

#[test]
fn killed_anywhere_tcpd_carries_every_connection_on() {
    let total = runs(0..48, false);
    assert!(total.kills >= 2000, "{total:?}");
    // Every kind of moment: between events, mid-event, mid-commit, and
    // restoring.
    assert!(total.by_state.iter().all(|&n| n > 50), "{total:?}");
    assert!(total.restore_kills > 100, "{total:?}");
}

#[test]
fn killed_anywhere_tcpd_carries_every_ipv6_connection_on() {
    let total = runs(100..116, true);
    assert!(total.kills >= 600, "{total:?}");
    assert!(total.by_state.iter().all(|&n| n > 15), "{total:?}");
    assert!(total.restore_kills > 30, "{total:?}");
}

#[test]
fn the_harness_without_kills_transfers_cleanly() {
    for v6 in [false, true] {
        let net = run(256 << 10, 64 << 10, 7, 0, v6);
        assert_eq!(net.tally.kills, 0);
        assert_eq!(net.tally.resends, 0);
    }
}

/// Every block in use and what its queues hold, by value, by block. A
/// listener's counts of children are left out: restore counts them again
/// from the children.
fn snapshot(h: &H) -> BTreeMap<usize, Vec<String>> {
    let (conns, segs) = (&*h.core.conns, &*h.core.slab.e);
    let mut m = BTreeMap::new();
    for (i, c) in conns.iter().enumerate().filter(|(_, c)| c.in_use()) {
        let mut c = *c;
        if c.slot() == crate::block::Slot::Live(crate::State::Listen) {
            (c.syn_q, c.acc_q) = (0, 0);
        }
        let mut v = vec![format!("{c:?}")];
        for l in [c.snd_q, c.rcv_q, c.ooo_q, c.dlv_q] {
            let mut e = l.head;
            let mut n = 0;
            while e != crate::NIL && n < l.count {
                let x = &segs[e as usize];
                v.push(format!(
                    "  {e}: seq {} len {} off {} buf {} flags {} sent {}/{}",
                    x.seq, x.h.data_len, x.h.data_off, x.h.buf, x.flags, x.sent_fence, x.sent_us
                ));
                e = x.next;
                n += 1;
            }
        }
        m.insert(i, v);
    }
    m
}

/// Kills the core at each crash point of `event` in turn (on a fresh
/// `setup` each time), restores, and checks what restore left against a
/// run without a kill: as a whole the state before or after when `event`
/// is one event; else each block as before or after (an event that runs
/// others, each of which commits on its own).
fn kill_everywhere(
    setup: impl Fn() -> H,
    event: impl Fn(&mut H),
    one_event: bool,
    min_points: u64,
) -> (u32, u32) {
    quiet_kills();
    let mut h = setup();
    let before = snapshot(&h);
    event(&mut h);
    let after = snapshot(&h);
    assert_ne!(before, after);
    let (mut seen_before, mut seen_after) = (0, 0);
    for k in 1.. {
        let mut h = setup();
        assert_eq!(snapshot(&h), before, "the scenario is deterministic");
        COUNTDOWN.with(|c| c.set(k));
        let r = catch_unwind(AssertUnwindSafe(|| event(&mut h)));
        COUNTDOWN.with(|c| c.set(0));
        if r.is_ok() {
            assert_eq!(snapshot(&h), after);
            assert!(k > min_points, "only {k} crash points");
            break;
        }
        h.out.clear();
        h.restart(None);
        assert_eq!(h.core.stats().get(Stat::RestoreReset), 0);
        let got = snapshot(&h);
        if got == before {
            seen_before += 1;
        } else if got == after {
            seen_after += 1;
        } else {
            let blocks: BTreeSet<_> = before
                .keys()
                .chain(after.keys())
                .chain(got.keys())
                .collect();
            let each = blocks
                .iter()
                .all(|i| [before.get(i), after.get(i)].contains(&got.get(i)));
            assert!(
                each && !one_event,
                "kill at point {k}: neither before nor after:\n{got:#?}\nbefore {before:#?}\nafter {after:#?}"
            );
        }
    }
    eprintln!("{seen_before} kills restored the state before, {seen_after} the state after");
    assert!(seen_before > 0 && seen_after > 0);
    (seen_before, seen_after)
}

/// A connection with everything queued: 6 segments in flight (one
/// buffer each), 500 bytes delivered and unconfirmed, two out-of-order
/// segments behind a hole. Returns the harness and the segment that
/// fills the hole while acknowledging 3.5 segments: one event that frees,
/// trims, takes, moves and delivers entries and sends.
fn loaded() -> (H, Vec<u8>) {
    let (mut h, iss) = H::established(TcpOptions {
        mss: Some(1000),
        sack_permitted: true,
        ..TcpOptions::default()
    });
    h.nodelay(2);
    for k in 0..6 {
        h.send(2, &pattern(1000, k));
    }
    let peer = pattern(3000, 9);
    h.peer(ACK, PISS + 1, iss + 1, &peer[..500]);
    h.peer(ACK, PISS + 1001, iss + 1, &peer[1000..2000]);
    h.peer(ACK, PISS + 2001, iss + 1, &peer[2000..]);
    h.segs.clear();
    h.ups.clear();
    let d = build(
        (PEER, PPORT),
        (LOCAL, LPORT),
        ACK,
        PISS + 501,
        iss + 1 + 3500,
        65535,
        &TcpOptions::default(),
        &peer[500..1000],
    );
    (h, d)
}

#[test]
fn a_kill_at_any_point_of_an_event_restores_the_state_before_or_after_it() {
    let d = loaded().1;
    kill_everywhere(
        || loaded().0,
        |h| {
            let hd = ip_handle(&mut h.pool, &d, protocol::TCP);
            h.core.from_ip(h.now, &mut h.pool, hd, &mut h.out);
        },
        true,
        30,
    );
}

#[test]
fn a_kill_while_a_syn_makes_a_child_leaves_no_stray_block() {
    let d = build(
        (PEER, 40003),
        (LOCAL, LPORT),
        SYN,
        PISS,
        0,
        65535,
        &syn_opts(5),
        &[],
    );
    kill_everywhere(
        listener_with_children,
        |h| {
            let hd = ip_handle(&mut h.pool, &d, protocol::TCP);
            h.core.from_ip(h.now, &mut h.pool, hd, &mut h.out);
        },
        true,
        8,
    );
}

/// A listener with a child in its accept queue (with data) and one
/// half-open.
fn listener_with_children() -> H {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    h.pport = 40001;
    h.peer(SYN, PISS, 0, &[]);
    let sa = h.expect(SYN | ACK);
    h.peer(ACK, PISS + 1, sa.seq() + 1, b"queued");
    h.pport = 40002;
    h.peer(SYN, PISS, 0, &[]);
    h.segs.clear();
    h.ups.clear();
    h
}

#[test]
fn a_kill_while_a_listener_closes_leaves_each_child_before_or_after() {
    kill_everywhere(
        listener_with_children,
        |h| {
            let m = L4Ctl {
                op: op::CLOSE,
                sock: 1,
                ..L4Ctl::default()
            };
            let hd = m.to_handle(&mut h.pool).unwrap();
            h.core.from_sock(h.now, &mut h.pool, hd, &mut h.out);
        },
        false,
        20,
    );
}

#[test]
fn a_nested_commit_never_lands_on_the_outer_block() {
    use crate::block::{Journal, UndoRec};
    use crate::queue::{recover, Slab};
    quiet_kills();
    let dbg = |c: &ConnBlock| format!("{c:?}");
    for k in 1.. {
        let mut conns = vec![ConnBlock::default(); 2];
        conns[0].set_state(crate::State::Listen);
        conns[1] = ConnBlock {
            index: 1,
            ..ConnBlock::default()
        };
        conns[1].set_state(crate::State::Established);
        let (mut segs, mut undo) = (vec![SegEntry::default(); 4], vec![UndoRec::default(); 4]);
        let mut jn = Journal::default();
        let before = conns.clone();
        let inner = ConnBlock {
            snd_una: 77,
            ..conns[1]
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut slab = Slab::new(&mut segs, &mut jn, &mut undo);
            slab.begin(0);
            slab.begin(1);
            COUNTDOWN.with(|c| c.set(k));
            let (outer, rest) = conns.split_at_mut(1);
            slab.commit(&mut rest[0], &inner, Some(0));
            slab.commit(&mut outer[0], &before[0], None);
        }));
        COUNTDOWN.with(|c| c.set(0));
        if r.is_ok() {
            assert!(k > 5);
            break;
        }
        recover(&mut conns, &mut segs, &mut jn, &undo);
        assert_eq!(dbg(&conns[0]), dbg(&before[0]), "kill at {k}");
        assert!([dbg(&before[1]), dbg(&inner)].contains(&dbg(&conns[1])));
    }
}
