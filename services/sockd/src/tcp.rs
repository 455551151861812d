//! The TCP data path: stream bytes from tcpd into the application's ring
//! (by stream offset, so a repeat or a gap after a restart is seen), and
//! queued bytes to tcpd within its send credit, with the read credit,
//! shutdowns and closes that go with them.

use super::*;
use strata_sockd::stream::Unsent;

impl Sockd<'_> {
    /// TCP data from tcpd: into the application's ring, or held until it
    /// has room (tcpd's credits keep this short).
    pub(crate) fn deliver_tcp(&mut self, h: Handle) {
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
                    Arrival::Gap => Some(c::RX_GAPS),
                    Arrival::Repeat => Some(c::RX_REPEATS),
                    Arrival::Take { skip } => {
                        t.rx_hold.push_back((h, skip));
                        None
                    }
                }
            }
            _ => Some(c::RX_DROP_NO_SOCKET),
        };
        if let Some(k) = verdict {
            self.count(k, 1);
            self.svc.fabric.free(&h);
        }
    }

    /// Per TCP socket, each turn: held data into the ring, read credit to
    /// tcpd, queued bytes to tcpd within its send credit, and closes and
    /// shutdowns once the send ring is empty. Returns buffers moved and
    /// whether something waits.
    pub(crate) fn pump_tcp(&mut self, room: usize) -> (usize, bool) {
        let f = &self.svc.fabric;
        let me = self.svc.me;
        let mut pool = f.pool(me);
        let mut moved = 0;
        let mut waiting = false;
        let mut ctl: Vec<(u32, u32, u64, u32)> = Vec::new();
        let now = Instant::now();
        let mut closed: Vec<u32> = Vec::new();
        for (&id, s) in self.socks.iter_mut() {
            let Sock {
                mem: Some(mem),
                efd,
                rec,
                broken,
                closing,
                proto: Proto::Tcp(t),
                ..
            } = s
            else {
                continue;
            };
            // Received data into the ring.
            while let Some(&(h, done)) = t.rx_hold.front() {
                let Ok(d) = pool.data(&h) else {
                    t.rx_hold.pop_front();
                    continue;
                };
                let (n, kick_app) = mem.deliver_stream(&d[done.min(d.len())..]);
                if n > 0 {
                    f.count(me, c::RX_COPY_BYTES, n as u64);
                }
                wake(efd, kick_app);
                if done + n >= d.len() {
                    t.rx_hold.pop_front();
                    pool.free(&h);
                    moved += 1;
                } else {
                    t.rx_hold.front_mut().unwrap().1 = done + n;
                    waiting = true;
                    break;
                }
            }
            if t.rx_hold.is_empty() && t.eof_pending {
                t.eof_pending = false;
                wake(efd, mem.set_state(sstate::EOF));
            }
            // Read credit: what the application consumed in total, when it
            // changed, and now and then unasked with a request for the
            // send state, so that nothing lost in a restart stays lost.
            let consumed = mem.rx_consumed();
            let written = mem.rx_written();
            if t.reannounce
                .as_ref()
                .is_some_and(|(t, _)| now.duration_since(*t) > REANNOUNCE_WINDOW)
            {
                t.reannounce = None;
            }
            if let Some(m) = t.stream.read_credit(now, consumed, written) {
                if m.resync() && rec.state == sock_state::LISTEN {
                    t.reannounce = Some((now, Vec::new()));
                }
                ctl.push((op::READ_CREDIT, id, m.credit.pack(), m.flags));
            }
            // Queued bytes to tcpd.
            if *broken || rec.state != sock_state::CONNECTED {
                continue;
            }
            loop {
                let (a, b) = match mem.send_slices() {
                    Ok(v) => v,
                    Err(_) => {
                        *broken = true;
                        mem.set_error(libc::EIO);
                        f.count(me, c::BAD_RINGS, 1);
                        break;
                    }
                };
                // The ring holds from what tcpd took; send from what it
                // was not handed yet.
                let Unsent { skip, avail } = t.stream.unsent(mem.tx_consumed(), a.len() + b.len());
                let queued = skip + avail;
                if avail == 0 {
                    if mem.request_kick_after(t.stream.tx_sent()) {
                        continue;
                    }
                    if queued > 0 {
                        // Sent, not yet taken: a close or shutdown waits
                        // for tcpd to say it took it, which a SYNC asks
                        // at once.
                        if *closing || t.shut_wr {
                            t.stream.sync_now(now);
                            waiting = true;
                        }
                        break;
                    }
                    if *closing {
                        ctl.push((op::CLOSE, id, 0, 0));
                        closed.push(id);
                    } else if t.shut_wr {
                        t.shut_wr = false;
                        t.shut_sent.write = true;
                        ctl.push((op::SHUTDOWN, id, 1, 0));
                    }
                    break;
                }
                let n = t.stream.chunk(avail, t.mss as usize);
                if self.to_tcp.len() + ctl.len() >= room || n == 0 {
                    waiting = true;
                    break;
                }
                // Leave a quarter of the pool to the receive path: if
                // queued sends could take every buffer, no ACK could be
                // received to free them again.
                if f.free_counts().0 < f.params().small_bufs / 4 {
                    f.count(me, c::TX_WAIT_NO_BUFFER, 1);
                    waiting = true;
                    break;
                }
                let Some(mut h) = pool.alloc(n) else {
                    f.count(me, c::TX_WAIT_NO_BUFFER, 1);
                    waiting = true;
                    break;
                };
                h.data_len = n as u32;
                h.sock = id;
                h.l4proto = 6;
                if let Ok(d) = pool.data_mut(&h) {
                    // The one copy on the way out, from `skip` on.
                    let (a2, b2) = if skip < a.len() {
                        (&a[skip..], b)
                    } else {
                        (&b[skip - a.len()..], &b[..0])
                    };
                    let k = a2.len().min(n);
                    d[..k].copy_from_slice(&a2[..k]);
                    d[k..].copy_from_slice(&b2[..n - k]);
                }
                f.count(me, c::TX_COPY_BYTES, n as u64);
                h.stream_off = t.stream.sent(n);
                self.to_tcp.push(h);
                moved += 1;
            }
        }
        for (o, id, v, fl) in ctl {
            self.tcp_ctl(o, id, v, fl);
        }
        for id in closed {
            // tcpd finishes the connection alone; the slot is free now.
            if let Some(s) = self.socks.remove(&id) {
                self.table.remove(s.slot);
                self.count(c::SOCKETS_CLOSED, 1);
            }
        }
        (moved, waiting)
    }
}
