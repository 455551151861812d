//! The TCP data path: stream bytes from tcpd into the application's ring
//! (by stream offset, so a repeat or a gap after a restart is seen), and
//! queued bytes to tcpd within its send credit, with the read credit,
//! shutdowns and closes that go with them.

use super::*;
use strata_ipc::handle::gso;
use strata_ipc::{Fabric, Pool, HEADROOM, SMALL_BUF};
use strata_sockd::stream::Unsent;

impl Sockd<'_> {
    /// TCP data from tcpd: into the application's ring, or held until it
    /// has room (tcpd's credits keep this short).
    pub(crate) fn deliver_tcp(&mut self, h: Handle) {
        self.activate(h.sock);
        let verdict = match self.socks.get_mut(&h.sock) {
            Some(Sock {
                mem: Some(_),
                closing: false,
                proto: Proto::Tcp(t),
                ..
            }) => {
                // By stream offset: a repeat (tcpd delivers again after a
                // restart) is skipped, a gap (what tcpd sent before was
                // lost) is asked for again.
                match t.stream.arrival(h.stream_off, h.data_len) {
                    Arrival::Gap => Some(Stat::RxGaps),
                    Arrival::Repeat => Some(Stat::RxRepeats),
                    Arrival::Take { skip } => {
                        t.rx_hold.push_back((h, skip));
                        None
                    }
                }
            }
            _ => Some(Stat::RxDropNoSocket),
        };
        if let Some(k) = verdict {
            self.stats.inc(k);
            self.svc.fabric.free(&h);
        }
    }

    /// Per TCP socket of `ids` (this turn's look): held data into the
    /// ring, read credit to tcpd, queued bytes to tcpd within its send
    /// credit, and closes and shutdowns once the send ring is empty. A
    /// socket that still waits for something gets another look next
    /// turn, and each its next look unasked (`Sockd::timers`). Returns
    /// buffers moved and whether something waits.
    pub(crate) fn pump_tcp(&mut self, ids: &[u32], room: usize) -> (usize, bool) {
        let f = &self.svc.fabric;
        let me = self.svc.me;
        let mut pool = f.pool(me);
        let mut turn = Turn {
            f,
            now: Instant::now(),
            room,
            moved: 0,
            waiting: false,
            ctl: Vec::new(),
            closed: Vec::new(),
            charges: &mut self.charges,
            stats: &mut self.stats,
        };
        let mut again = Vec::new();
        let mut later = Vec::new();
        for &id in ids {
            let Some(s) = self.socks.get_mut(&id) else {
                continue;
            };
            let Sock {
                mem: Some(mem),
                kick_end,
                rec,
                broken,
                closing,
                proto: Proto::Tcp(t),
                ..
            } = s
            else {
                continue;
            };
            let waiting_before = std::mem::take(&mut turn.waiting);
            turn.fill_ring(&mut pool, mem, kick_end, t);
            if turn.ctl.len() + self.to_tcp.len() >= turn.room {
                // No room toward tcpd this turn: what the socket has for
                // it waits for the next, without another look now (a
                // burst of due SYNCs must not cost every turn a look at
                // all of them).
                again.push(id);
                turn.waiting = true;
                continue;
            }
            let now = turn.now;
            if t.reannounce
                .as_ref()
                .is_some_and(|(t, _)| now.duration_since(*t) > REANNOUNCE_WINDOW)
            {
                t.reannounce = None;
            }
            let moved_before = turn.moved;
            if !*broken && rec.state == sock_state::CONNECTED {
                let uid = rec.uid;
                if turn.send_queued(&mut pool, (id, uid), mem, t, *closing, &mut self.to_tcp)
                    == Err(BadRing)
                {
                    *broken = true;
                    mem.set_error(libc::EIO);
                    turn.stats.inc(Stat::BadRings);
                }
            }
            // Read credit: what the application consumed in total and
            // what sockd wrote, when it changed and matters to tcpd or can
            // go with data sent now; and now and then unasked with a
            // request for the send state, so that nothing lost in a
            // restart stays lost.
            let (read, written) = (mem.rx_consumed(), mem.rx_written());
            let rx_cap = mem.rx_cap() as u64;
            let riding = turn.moved > moved_before;
            // As many as tcpd's ring has room for this turn (the rest
            // stay due): ten thousand sockets' SYNCs at once would take
            // as many pool buffers, and tcpd as many again to answer.
            let credit_room = turn.ctl.len() + self.to_tcp.len() < turn.room;
            turn.waiting |= !credit_room;
            if let Some(m) = credit_room
                .then(|| t.stream.read_credit_due(now, read, written, rx_cap, riding))
                .flatten()
            {
                if m.resync() && rec.state == sock_state::LISTEN {
                    t.reannounce = Some((now, Vec::new()));
                }
                let known = m.resync() && rec.state == sock_state::CONNECTED;
                let flags = m.flags | if known { ctl_flags::KNOWN_CONNECTED } else { 0 };
                turn.ctl.push((op::READ_CREDIT, id, m.credit.pack(), flags));
            }
            // While tcpd believes the ring more than half full, the
            // application's next read is news: ask it for a kick. A read
            // that came before the request may have missed it: look again
            // soon.
            if t.stream.read_matters(written, rx_cap) && mem.request_read_kick(read) {
                turn.waiting = true;
            }
            let sync = t.stream.sync_due();
            later.push((id, t.stream.credit_due_at().map_or(sync, |c| c.min(sync))));
            if turn.waiting {
                again.push(id);
            }
            turn.waiting |= waiting_before;
        }
        let Turn {
            moved,
            waiting,
            ctl,
            closed,
            ..
        } = turn;
        for (id, at) in later {
            self.schedule(id, at);
        }
        for id in again {
            self.activate(id);
        }
        for (o, id, v, fl) in ctl {
            self.tcp_ctl(o, id, v, fl);
        }
        for id in closed {
            // tcpd finishes the connection alone; the slot is free now.
            self.drop_sock(id);
        }
        (moved, waiting)
    }
}

/// The application broke its send ring.
#[derive(Debug, PartialEq, Eq)]
struct BadRing;

/// One turn of `pump_tcp` over the TCP sockets: what it needs and what
/// it produced.
struct Turn<'f> {
    f: &'f Fabric,
    now: Instant,
    /// Room in the ring to tcpd.
    room: usize,
    /// Buffers moved.
    moved: usize,
    /// Something waits for room, buffers or tcpd.
    waiting: bool,
    /// Control messages for tcpd: (op, socket, value, flags).
    ctl: Vec<(u32, u32, u64, u32)>,
    /// Sockets closed for good (their CLOSE is in `ctl`).
    closed: Vec<u32>,
    /// What each user's sockets hold at tcpd.
    charges: &'f mut Charges,
    /// sockd's counters.
    stats: &'f mut Stats,
}

impl Turn<'_> {
    /// Received data held back into the application's ring, as far as it
    /// has room, and the end of the stream once all of it is there.
    fn fill_ring(&mut self, pool: &mut Pool, mem: &SockMem, kick_end: &Notify, t: &mut TcpSock) {
        while let Some(&(h, done)) = t.rx_hold.front() {
            let Ok(d) = pool.data(&h) else {
                t.rx_hold.pop_front();
                continue;
            };
            let read = mem.rx_consumed();
            let (n, kick_app) = mem.deliver_stream(&d[done.min(d.len())..]);
            if n > 0 {
                self.stats.add(Stat::RxCopyBytes, n as u64);
            }
            wake(kick_end, kick_app);
            if done + n >= d.len() {
                t.rx_hold.pop_front();
                pool.free(&h);
                self.moved += 1;
            } else {
                t.rx_hold.front_mut().unwrap().1 = done + n;
                // The ring is full: the application's next read wakes
                // us (a read just before the request may have missed
                // it: look again soon).
                if mem.request_read_kick(read) {
                    self.waiting = true;
                }
                break;
            }
        }
        if t.rx_hold.is_empty() && t.eof_pending {
            t.eof_pending = false;
            wake(kick_end, mem.set_state(sstate::EOF));
        }
    }

    /// Bytes the application queued, to tcpd within its send credit in
    /// one-segment buffers (the one copy on the way out); once the ring
    /// is empty and tcpd took everything, the CLOSE or write SHUTDOWN
    /// that waited for it.
    fn send_queued(
        &mut self,
        pool: &mut Pool,
        (id, uid): (u32, u32),
        mem: &SockMem,
        t: &mut TcpSock,
        closing: bool,
        to_tcp: &mut Vec<Handle>,
    ) -> Result<(), BadRing> {
        loop {
            let (a, b) = mem.send_slices().map_err(|_| BadRing)?;
            // The ring holds from what tcpd took; send from what it was
            // not handed yet.
            let Unsent { skip, avail } = t.stream.unsent(mem.tx_consumed(), a.len() + b.len());
            if avail == 0 {
                if mem.request_kick_after(t.stream.tx_sent()) {
                    continue;
                }
                if skip > 0 {
                    // Sent, not yet taken: a close or shutdown waits for
                    // tcpd to say it took it, which a SYNC asks at once.
                    if closing || t.shut_wr {
                        t.stream.sync_now(self.now);
                        self.waiting = true;
                    }
                } else if closing {
                    self.ctl.push((op::CLOSE, id, 0, 0));
                    self.closed.push(id);
                } else if t.shut_wr {
                    t.shut_wr = false;
                    t.shut_sent.write = true;
                    self.ctl.push((op::SHUTDOWN, id, 1, 0));
                }
                return Ok(());
            }
            // Super-segment-sized buffers (tcpd sends each whole, TSO)
            // while half the large ones are free, then one-segment ones:
            // the other half is the receive path's, where a super-segment
            // with no large buffer to land in is lost.
            let (small_free, large_free) = self.f.free_counts();
            let params = self.f.params();
            let large_ok = large_free > params.large_bufs / 2;
            let most = if large_ok {
                gso::tcp_max_payload(t.mss)
            } else {
                t.mss
            };
            let n = t.stream.chunk(avail, most as usize);
            if to_tcp.len() + self.ctl.len() >= self.room || n == 0 {
                self.waiting = true;
                return Ok(());
            }
            // The user's sockets hold their share of the pool already:
            // this one waits for their peers' acknowledgements.
            if !self.charges.allows(uid, n as u64) {
                self.stats.add(Stat::TxWaitUserLimit, 1);
                self.waiting = true;
                return Ok(());
            }
            // Leave a quarter of the pool to the receive path: if queued
            // sends could take every buffer, no ACK could be received to
            // free them again.
            let low = if n > SMALL_BUF - HEADROOM as usize {
                !large_ok
            } else {
                small_free < params.small_bufs / 4
            };
            let Some(mut h) = (!low).then(|| pool.alloc(n)).flatten() else {
                self.stats.add(Stat::TxWaitNoBuffer, 1);
                self.waiting = true;
                return Ok(());
            };
            h.data_len = n as u32;
            h.sock = id;
            h.l4proto = 6;
            if let Ok(d) = pool.data_mut(&h) {
                let (a2, b2) = if skip < a.len() {
                    (&a[skip..], b)
                } else {
                    (&b[skip - a.len()..], &b[..0])
                };
                let k = a2.len().min(n);
                d[..k].copy_from_slice(&a2[..k]);
                d[k..].copy_from_slice(&b2[..n - k]);
            }
            self.stats.add(Stat::TxCopyBytes, n as u64);
            h.stream_off = t.stream.sent(n);
            self.charges.settle(uid, &mut t.charged, t.stream.held());
            to_tcp.push(h);
            self.moved += 1;
        }
    }
}
