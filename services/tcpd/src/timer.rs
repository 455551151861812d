//! Timers (retransmission with back-off, SYN and SYN-ACK retries, persist,
//! delayed ACK, keep-alive, TIME-WAIT and orphaned FIN-WAIT-2) and the
//! rebuilding of the core's indexes from storage at restart.
//!
//! Deadlines live in the blocks; a binary heap holds at most one entry
//! per block per earlier deadline. A deadline that moves later is left in
//! the heap and found out when it comes (the block's real earliest
//! deadline is then scheduled), so restarting the retransmission timer on
//! every ACK costs nothing.

use std::cmp::Reverse;

use strata_ipc::Buffers;

use crate::block::{cf, rec, ConnBlock, List, SegEntry, Slot, State, Storage, NIL, SACK_RANGES};
use crate::config::{ConfigError, TcpConfig};
use crate::output::rto_ns;
use crate::queue::Slab;
use crate::{sack, Outputs, Stat, TcpCore, Tuple};

/// Timers run per [`TcpCore::poll`] at most (the rest wait for the next
/// call, which the returned deadline asks for at once).
const TIMER_BUDGET: usize = 4096;

impl TcpCore<'_> {
    pub(crate) fn run_timers<B: Buffers>(&mut self, pool: &mut B, out: &mut Outputs) {
        // Notifications and segments that found the pool empty: the
        // oldest, as many as the timers' budget, and none after the first
        // that finds it empty again (the rest wait for the next poll,
        // which the deadline asks for soon). Those put back meanwhile
        // wait behind the rest, and the count keeps any from a second try
        // in the same poll.
        for _ in 0..self.retry.len().min(TIMER_BUDGET) {
            let Some(i) = self.retry.pop_front() else {
                break;
            };
            let i = i as usize;
            if let Some(m) = self.in_retry.get_mut(i) {
                *m = false;
            }
            let short = self.stats.get(Stat::PoolExhausted);
            if self.conns.get(i).is_some_and(|c| c.in_use()) {
                let c = self.begin(i);
                self.end(pool, i, c, out);
            }
            if self.stats.get(Stat::PoolExhausted) != short {
                // The rest stay in front, in order, still marked.
                break;
            }
        }
        let mut n = 0;
        while let Some(&Reverse((t, i))) = self.timers.peek() {
            if t > self.now || n >= TIMER_BUDGET {
                break;
            }
            self.timers.pop();
            let i = i as usize;
            if self.sched.get(i) != Some(&t) {
                continue; // superseded by an earlier deadline
            }
            self.sched[i] = u64::MAX;
            n += 1;
            self.timer_event(pool, i, out);
        }
    }

    fn timer_event<B: Buffers>(&mut self, pool: &mut B, i: usize, out: &mut Outputs) {
        if !self.conns[i].in_use() {
            return;
        }
        let now = self.now;
        let mut c = self.begin(i);
        let due = |t: u64| t != 0 && t <= now;
        if due(c.t_state) {
            c.t_state = 0;
            match c.state() {
                // RFC 9293 §3.10.8: "If the time-wait timeout expires on
                // a connection, delete the TCB".
                State::TimeWait => {
                    self.stats.inc(Stat::TimeWaitExpired);
                    self.terminate(&mut c, 0);
                }
                // An orphan's FIN-WAIT-2 does not wait for ever (Linux
                // `tcp_fin_timeout`; RFC 9293 leaves it open).
                State::FinWait2 if c.has(cf::ORPHAN) => self.terminate(&mut c, 0),
                // The timer is stale (the state moved on since).
                State::FinWait2
                | State::Closed
                | State::Listen
                | State::SynSent
                | State::SynReceived
                | State::Established
                | State::FinWait1
                | State::CloseWait
                | State::Closing
                | State::LastAck => {}
            }
        }
        if !c.has(cf::DEAD) && due(c.t_rtx) {
            c.t_rtx = 0;
            self.rtx_timer(pool, &mut c, out);
        }
        if !c.has(cf::DEAD) && due(c.t_delack) {
            c.t_delack = 0;
            if c.state().has_peer_syn() && (c.rcv_nxt != c.last_ack_sent || c.has(cf::ACK_NOW)) {
                self.stats.inc(Stat::DelayedAcks);
                c.flags |= cf::ACK_NOW;
            }
        }
        if !c.has(cf::DEAD) && due(c.t_keepalive) {
            self.keepalive_timer(pool, &mut c, out);
        }
        self.end(pool, i, c, out);
    }

    /// The retransmission timer: SYN and SYN-ACK retries, zero-window
    /// probes, and the RTO proper (RFC 6298 §5.4–5.7, RFC 5681 §3.1).
    fn rtx_timer<B: Buffers>(&mut self, pool: &mut B, c: &mut ConnBlock, out: &mut Outputs) {
        let state = c.state();
        match state {
            // RFC 9293 §3.8.1: the SYN or SYN-ACK again, backed off;
            // given up after the retries (RFC 1122 §4.2.3.5, R2 for a
            // SYN).
            State::SynSent | State::SynReceived => {
                c.retries += 1;
                let max = if state == State::SynSent {
                    self.cfg.syn_retries
                } else {
                    self.cfg.synack_retries
                };
                if c.retries > max {
                    if state == State::SynReceived && c.has(cf::PASSIVE) {
                        self.stats.inc(Stat::SynAckTimeouts);
                        self.terminate(c, 0);
                    } else {
                        self.stats.inc(Stat::ConnTimeouts);
                        let e = if c.soft_err != 0 {
                            c.soft_err as i32
                        } else {
                            libc::ETIMEDOUT
                        };
                        self.terminate(c, e);
                    }
                    return;
                }
                self.stats.inc(Stat::RtoExpired);
                c.backoff += 1;
                c.flags |= cf::RTX_DONE;
                c.rtt_time = 0;
                c.snd_nxt = c.iss;
                c.t_rtx = self.now + rto_ns(c, &self.cfg);
            }
            // Data or our FIN outstanding (RFC 6298 §5.4–5.7), or the
            // persist timer (RFC 9293 §3.8.6.1).
            State::Established
            | State::CloseWait
            | State::FinWait1
            | State::Closing
            | State::LastAck => {
                if c.snd_una == c.snd_max {
                    // Nothing in flight: the persist timer.
                    let waiting = seq_lt(c.snd_nxt, c.snd_end);
                    if waiting && c.snd_wnd < c.snd_mss.min(c.snd_end.wrapping_sub(c.snd_nxt)) {
                        // Unanswered probes give up like retransmissions
                        // (Linux `tcp_probe_timer`); any ACK resets them.
                        c.retries += 1;
                        if c.retries > self.cfg.max_retries {
                            self.stats.inc(Stat::ConnTimeouts);
                            self.discard_rcv(c);
                            self.terminate(c, libc::ETIMEDOUT);
                            return;
                        }
                        self.stats.inc(Stat::WindowProbes);
                        self.send_probe(pool, c, out);
                        c.flags |= cf::PERSIST;
                        c.backoff = (c.backoff + 1).min(16);
                        c.t_rtx = self.now + rto_ns(c, &self.cfg);
                    } else {
                        c.flags &= !cf::PERSIST;
                    }
                    return;
                }
                if c.has(cf::TLP_TIMER) {
                    c.flags &= !cf::TLP_TIMER;
                    if !c.has(cf::TLP_SENT) && c.recovery == rec::NONE {
                        self.tlp_probe(pool, c, out);
                        return;
                    }
                }
                if c.has(cf::REO_TIMER) {
                    c.flags &= !cf::REO_TIMER;
                    // Only while the head's last send is younger than an
                    // RTO: a stale flag must never hold off the real
                    // timeout (and its back-off and give-up).
                    let since = u64::from(((self.now / 1000) as u32).wrapping_sub(c.rtx_fence_us));
                    if c.rtx_sacked > 0 && since * 1000 < rto_ns(c, &self.cfg) {
                        self.reo_timeout(pool, c, out);
                        return;
                    }
                }
                c.retries += 1;
                if c.retries > self.cfg.max_retries {
                    self.stats.inc(Stat::ConnTimeouts);
                    let e = if c.soft_err != 0 {
                        c.soft_err as i32
                    } else {
                        libc::ETIMEDOUT
                    };
                    self.discard_rcv(c);
                    self.terminate(c, e);
                    return;
                }
                self.stats.inc(Stat::RtoExpired);
                let flight = c.snd_max.wrapping_sub(c.snd_una);
                let cc = Self::cc_of(c);
                if c.backoff == 0 {
                    c.ssthresh = cc.ssthresh(c, flight, self.now);
                }
                cc.on_rto(c);
                c.cwnd = c.snd_mss.max(1);
                c.recovery = rec::NONE;
                c.dupacks = 0;
                c.recover = c.snd_max;
                c.high_rxt = c.snd_una;
                // Keep what the peer SACKed, as Linux does, so the resend
                // skips it; forget it on a repeated timeout in case the
                // peer discarded out-of-order data (RFC 2018 §8).
                if c.backoff > 0 {
                    sack::clear(c);
                }
                c.snd_nxt = c.snd_una;
                c.rtx_fence = c.snd_una;
                c.rtx_sacked = 0;
                c.flags |= cf::LOSS;
                c.snd_cur = NIL;
                c.rtt_time = 0;
                c.flags |= cf::RTX_DONE;
                c.backoff = (c.backoff + 1).min(16);
                c.t_rtx = self.now + rto_ns(c, &self.cfg);
                if c.snd_wnd == 0 {
                    // The peer's window closed with data of ours
                    // outstanding: nothing the timeout would resend fits
                    // it, so ask for the window instead (RFC 9293
                    // §3.8.6.1; Linux sends the head as the probe). The
                    // window update that reopened it may have been lost.
                    self.stats.inc(Stat::WindowProbes);
                    self.send_probe(pool, c, out);
                }
            }
            // Nothing of ours unacknowledged: a stale timer.
            State::FinWait2 | State::TimeWait | State::Closed | State::Listen => {}
        }
    }

    /// Keep-alive (RFC 1122 §4.2.3.6, Linux's timing): after the idle time
    /// a probe every interval; the connection fails after the configured
    /// number without an answer.
    fn keepalive_timer<B: Buffers>(&mut self, pool: &mut B, c: &mut ConnBlock, out: &mut Outputs) {
        c.t_keepalive = 0;
        let eligible = c.has(cf::KEEPALIVE) && c.state().keeps_alive();
        if !eligible {
            return;
        }
        let (idle_ns, intvl_ns, probes) = self.keepalive(c);
        let idle = self.now.saturating_sub(c.last_rx);
        if c.ka_probes == 0 && idle < idle_ns {
            c.t_keepalive = c.last_rx + idle_ns;
            return;
        }
        if c.snd_una != c.snd_max || !c.snd_q.is_empty() {
            // Data outstanding: the retransmission timer watches.
            c.ka_probes = 0;
            c.t_keepalive = self.now + idle_ns;
            return;
        }
        if c.ka_probes >= probes {
            self.stats.inc(Stat::ConnTimeouts);
            self.send_rst(pool, c, out);
            self.discard_rcv(c);
            self.terminate(c, libc::ETIMEDOUT);
            return;
        }
        self.stats.inc(Stat::KeepaliveProbes);
        self.send_probe(pool, c, out);
        c.ka_probes += 1;
        c.t_keepalive = self.now + intvl_ns;
    }
}

fn seq_lt(a: u32, b: u32) -> bool {
    crate::seq::lt(a, b)
}

/// Walks list `l` of block `owner` through `segs`, checking links,
/// ownership and the byte count; the entries on it, or `None` when it is
/// inconsistent.
fn walk(
    segs: &[crate::block::SegEntry],
    l: &List,
    owner: usize,
    seen: &mut [bool],
) -> Option<Vec<u32>> {
    let mut v = Vec::new();
    let mut i = l.head;
    let mut bytes = 0u32;
    let mut last = NIL;
    while i != NIL {
        let x = segs.get(i as usize)?;
        if x.owner != owner as u32 + 1 || seen[i as usize] || v.len() > segs.len() {
            return None;
        }
        seen[i as usize] = true;
        bytes = bytes.wrapping_add(x.len());
        v.push(i);
        last = i;
        i = x.next;
    }
    (last == l.tail && bytes == l.bytes && v.len() as u32 == l.count).then_some(v)
}

/// [`TcpCore::restore`].
pub(crate) fn restore<'a, B: Buffers>(
    cfg: TcpConfig,
    storage: Storage<'a>,
    now: u64,
    pool: &mut B,
    out: &mut Outputs,
) -> Result<(TcpCore<'a>, usize), ConfigError> {
    let Storage {
        conns,
        segs,
        journal,
        undo,
    } = storage;
    // The interrupted event, finished or undone: from here on every block
    // is as before or as after it.
    crate::queue::recover(conns, segs, journal, undo);
    let n = conns.len();
    // Blocks past the high-water mark are free (and, in an arena sized
    // for many more connections than were ever open, never touched):
    // reading them would cost a page fault per few blocks.
    let read = journal.blocks_to_read(n);
    let mut seen = vec![false; segs.len()];
    let mut bad = vec![false; n];
    for (i, c) in conns[..read].iter_mut().enumerate() {
        let state = match c.slot() {
            Slot::Free => continue,
            Slot::Live(s) => Some(s),
            // Nothing to trust: reset below.
            Slot::Garbage(_) => None,
        };
        if state == Some(State::Closed) && c.sock == 0 {
            // Taken by an event that did not finish (a child for a SYN):
            // nothing names it.
            *c = ConnBlock {
                gen: c.gen.wrapping_add(1),
                ..ConnBlock::default()
            };
            continue;
        }
        // A connection's addresses are of one family (both IPv4-mapped
        // or neither): what it sends could not be written otherwise.
        let one_family = !state.is_some_and(State::has_peer)
            || crate::ip::is_v4(c.local_addr) == crate::ip::is_v4(c.remote_addr);
        let valid = state.is_some()
            && one_family
            && c.index == i as u32
            && (c.sack_cnt as usize) <= SACK_RANGES
            && [c.snd_q, c.rcv_q, c.ooo_q, c.dlv_q]
                .iter()
                .all(|l| walk(segs, l, i, &mut seen).is_some());
        if !valid {
            bad[i] = true;
        }
    }
    // Entries of bad blocks, and entries nobody links (taken or unlinked
    // by the interrupted event): their buffers go back to the pool. Each
    // entry is cleared before its buffer is freed, so that a restore that
    // dies here never frees one twice (a reference no entry names is the
    // launcher's to reclaim).
    for (k, x) in segs.iter_mut().enumerate() {
        if x.owner != 0 && !seen[k] {
            let h = x.h;
            *x = SegEntry::default();
            crate::queue::crash_point();
            pool.free(&h);
        }
    }
    let slab = Slab::rebuild(segs, journal, undo, |k| seen[k]);
    let mut core = TcpCore::build(cfg, conns, slab, read)?;
    core.now = now;
    let mut kept = 0;
    // Bad blocks: tell the peer and sockd, forget them.
    for (i, _) in bad.iter().enumerate().filter(|(_, b)| **b) {
        let mut c = core.conns[i];
        c.index = i as u32;
        c.snd_q = List::default();
        c.rcv_q = List::default();
        c.ooo_q = List::default();
        c.dlv_q = List::default();
        core.stats.inc(Stat::RestoreReset);
        // A peer that may still be talking to us hears the reset (RFC
        // 9293 §3.5.2); garbage names no peer to trust.
        let peer_waits = match c.slot() {
            Slot::Live(
                State::SynReceived
                | State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
                | State::Closing
                | State::LastAck,
            ) => true,
            Slot::Live(State::TimeWait | State::Closed | State::Listen | State::SynSent) => false,
            Slot::Free | Slot::Garbage(_) => false,
        };
        if peer_waits && c.remote_addr != 0 {
            c.snd_mss = c.snd_mss.max(48);
            core.send_rst(pool, &mut c, out);
        }
        if c.sock != 0 {
            let mut e = crate::output::reply(strata_ipc::l4::op::SOCK_ERROR, c.sock, 0);
            e.errno = libc::ECONNRESET;
            core.notify(pool, &e, out);
            core.notify(
                pool,
                &crate::output::reply(strata_ipc::l4::op::CLOSED, c.sock, 0),
                out,
            );
        }
        // Only its generation survives; no table knows it yet.
        c = ConnBlock {
            gen: c.gen.wrapping_add(1),
            ..ConnBlock::default()
        };
        core.conns[i] = c;
        core.free_conns.push(i as u32);
    }
    // Indexes of the good ones, and one past the last.
    let mut upto = 0;
    for i in 0..read {
        let c = core.conns[i];
        if !c.in_use() {
            continue;
        }
        upto = i + 1;
        kept += 1;
        core.stats.inc(Stat::Restored);
        // Every block in use is valid from here on.
        let state = c.state();
        if c.remote_addr != 0 && state.has_peer() {
            core.by_tuple.insert(Tuple::of(&c), i as u32);
        }
        if state == State::Listen {
            core.add_listener((c.local_addr, c.local_port as u16), i);
        }
        if c.sock != 0 {
            core.by_sock.insert(c.sock, i as u32);
        }
        if c.has(cf::BOUND) {
            *core.port_use.entry(c.local_port as u16).or_insert(0) += 1;
        }
        core.queued_bytes += u64::from(c.snd_q.bytes)
            + u64::from(c.rcv_q.bytes)
            + u64::from(c.ooo_q.bytes)
            + u64::from(c.dlv_q.bytes);
        core.ooo_segs += u64::from(c.ooo_q.count);
    }
    // Listener counts from their children.
    for i in 0..read {
        let c = core.conns[i];
        if c.slot() == Slot::Live(State::Listen) {
            core.conns[i].syn_q = 0;
            core.conns[i].acc_q = 0;
        }
    }
    for i in 0..read {
        let c = core.conns[i];
        if !c.in_use() {
            continue;
        }
        if let Some(l) = core.parent_of(&c) {
            if c.state() == State::SynReceived {
                core.conns[l].syn_q += 1;
            }
            if c.has(cf::IN_ACCEPTQ) {
                core.conns[l].acc_q += 1;
            }
        }
        if c.snd_cur != NIL && (c.snd_cur as usize) >= core.slab.e.len() {
            core.conns[i].snd_cur = NIL;
        }
        if c.pend != 0 {
            core.retry_later(i);
        }
        core.arm(i);
    }
    // What the dead core delivered may have died in its hands, unsent:
    // it goes again, EOF too; sockd skips what it has by stream offset.
    for i in 0..read {
        let c = core.conns[i];
        if c.in_use() && c.state().is_synchronized() && c.sock != 0 && !c.has(cf::IN_ACCEPTQ) {
            core.deliver_again(pool, &c, out);
        }
    }
    // The high-water mark, now exact.
    core.slab.set_blocks_used(upto);
    Ok((core, kept))
}
