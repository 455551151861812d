//! The socket table and requests to the transports: counters, replies to
//! sessions, control messages to udpd and tcpd (remembered until answered),
//! and closing sockets and sessions.

use super::*;

impl Sockd<'_> {
    pub(crate) fn respond(&mut self, sid: u64, r: &Response, fds: &[RawFd]) {
        let failed = match self.sessions.get(&sid) {
            Some(s) => {
                crate::syscall();
                wire::send(&s.fd, &r.encode(), fds).is_err()
            }
            None => false,
        };
        if failed {
            self.close_session(sid);
        }
    }

    pub(crate) fn sync_rec(&self, id: u32) {
        if let Some(s) = self.socks.get(&id) {
            self.table.update(s.slot, s.rec);
        }
    }

    pub(crate) fn send_ctl(&mut self, kind: Kind, m: L4Ctl) -> bool {
        if kind == Kind::Tcp && m.sock != 0 && matches!(m.op, op::CLOSE | op::ABORT) {
            let now = Instant::now();
            let e = self.closes.entry(m.sock).or_insert((m.op, now, now));
            e.2 = now;
        }
        if self.ctl_wait.is_empty() && self.push_ctl(kind, &m) {
            return true;
        }
        if self.ctl_wait.len() >= CTL_WAIT_MAX {
            self.stats.inc(Stat::CtlDropped);
            return false;
        }
        self.stats.inc(Stat::CtlWaitNoBuffer);
        self.ctl_wait.push_back((kind, m));
        true
    }

    /// `m` into a pool buffer, queued for its transport; false when no
    /// buffer is free.
    fn push_ctl(&mut self, kind: Kind, m: &L4Ctl) -> bool {
        let mut pool = self.svc.fabric.pool(self.svc.me);
        let Some(h) = m.to_handle(&mut pool) else {
            return false;
        };
        match kind {
            Kind::Udp => self.to_udp.push(h),
            Kind::Tcp => self.to_tcp.push(h),
        }
        true
    }

    /// Sends the control messages that waited for buffers, in order, as
    /// far as buffers go; true when none waits any more.
    pub(crate) fn send_waiting_ctl(&mut self) -> bool {
        while let Some((kind, m)) = self.ctl_wait.front().copied() {
            if !self.push_ctl(kind, &m) {
                return false;
            }
            self.ctl_wait.pop_front();
        }
        true
    }

    pub(crate) fn tcp_ctl(&mut self, op: u32, sock: u32, value: u64, flags: u32) {
        self.send_ctl(
            Kind::Tcp,
            L4Ctl {
                op,
                sock,
                value,
                flags,
                ..Default::default()
            },
        );
    }

    pub(crate) fn request_transport(&mut self, sid: u64, id: u32, mut m: L4Ctl) {
        self.next_req = self.next_req.wrapping_add(1).max(1);
        m.req = self.next_req;
        m.sock = id;
        let kind = self.socks.get(&id).map_or(Kind::Udp, Sock::kind);
        if !self.send_ctl(kind, m) {
            self.respond(sid, &errno_resp(libc::ENOBUFS), &[]);
            return;
        }
        let now = Instant::now();
        self.pending.insert(
            m.req,
            Pending {
                session: sid,
                sock: id,
                op: m.op,
                deadline: now + CTL_TIMEOUT,
                msg: m,
                kind,
                sent: now,
                resent: false,
            },
        );
    }

    /// Session `sid`'s poll bell, for the socket in table row `row`.
    pub(crate) fn poll_bell(&self, sid: u64, row: usize) -> Option<(Rc<SessionBell>, usize)> {
        let b = self.sessions.get(&sid)?.bell.as_ref()?;
        Some((b.clone(), row))
    }

    /// Socket `id` gets a look this turn (or the next, if this one's
    /// look is over).
    pub(crate) fn activate(&mut self, id: u32) {
        if let Some(s) = self.socks.get_mut(&id) {
            if !s.active {
                s.active = true;
                self.active.push_back(id);
            }
        }
    }

    /// Socket `id` gets a look at `at` at the latest.
    pub(crate) fn schedule(&mut self, id: u32, at: Instant) {
        if let Some(s) = self.socks.get_mut(&id) {
            if s.due.is_none_or(|d| at < d) {
                s.due = Some(at);
                self.timers.push(Reverse((at, id)));
            }
        }
    }

    /// The sockets to look at this turn, UDP and TCP: those activated,
    /// those whose timer came by `now`, and rows of the socket table in
    /// turn ([`SWEEP_PER_SEC`]; their `strata ss` queues are refreshed so);
    /// at most `looks` of them, oldest first.
    pub(crate) fn take_active(&mut self, now: Instant, looks: usize) -> (Vec<u32>, Vec<u32>) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(s) = self.socks.get_mut(&id) {
                if s.due == Some(at) {
                    s.due = None;
                    self.activate(id);
                }
            }
        }
        let rows = self.table.used();
        let (mut row, since) = self.sweep;
        let owed =
            now.saturating_duration_since(since).as_micros() as u64 * SWEEP_PER_SEC / 1_000_000;
        if owed > 0 {
            for _ in 0..owed.min(SWEEP_MAX).min(rows as u64) {
                row = (row + 1) % rows;
                if let Some(r) = self.table.get(row) {
                    self.activate(r.id);
                }
            }
            self.sweep = (row, now);
        }
        let (mut udp, mut tcp) = (Vec::new(), Vec::new());
        // The oldest; the rest stay on the list for the next turn.
        let n = self.active.len().min(looks);
        self.stats.add(Stat::SocketLooks, n as u64);
        let batch: Vec<u32> = self.active.drain(..n).collect();
        for id in batch {
            if let Some(s) = self.socks.get_mut(&id) {
                s.active = false;
                if let Some(m) = &s.mem {
                    let q = |n: u64| n.min(u64::from(u32::MAX)) as u32;
                    let (recv_q, send_q) = (q(m.rx_queued()), q(m.tx_queued()));
                    if (recv_q, send_q) != (s.rec.recv_q, s.rec.send_q) {
                        s.rec.recv_q = recv_q;
                        s.rec.send_q = send_q;
                        self.table.update(s.slot, s.rec);
                    }
                }
                match s.kind() {
                    Kind::Udp => udp.push(id),
                    Kind::Tcp => tcp.push(id),
                }
            }
        }
        (udp, tcp)
    }

    /// Takes socket `id` in, counted for its process and user.
    pub(crate) fn insert_sock(&mut self, id: u32, mut s: Sock) {
        if let Some(sid) = s.session {
            s.kick_end.bell = self.poll_bell(sid, s.slot);
        }
        self.socks_of_pid.add(s.rec.pid);
        self.socks_of_uid.add(s.rec.uid);
        if s.rec.state == sock_state::LISTEN {
            self.listeners.insert(id);
        }
        if let Some(old) = self.socks.insert(id, s) {
            self.socks_of_pid.remove(old.rec.pid);
            self.socks_of_uid.remove(old.rec.uid);
        }
        self.activate(id);
    }

    /// Forgets socket `id`: its slot, its held data, its user's charge,
    /// its count. Returns it for what else its end needs.
    pub(crate) fn drop_sock(&mut self, id: u32) -> Option<Sock> {
        let mut s = self.socks.remove(&id)?;
        self.listeners.remove(&id);
        s.gone = true;
        self.socks_of_pid.remove(s.rec.pid);
        self.socks_of_uid.remove(s.rec.uid);
        self.table.remove(s.slot);
        for h in s.rx_hold() {
            self.svc.fabric.free(h);
        }
        let uid = s.rec.uid;
        if let Some(t) = s.tcp_mut() {
            t.rx_hold.clear();
            self.charges.settle(uid, &mut t.charged, 0);
        }
        self.stats.add(Stat::SocketsClosed, 1);
        Some(s)
    }

    pub(crate) fn close_sock(&mut self, id: u32) {
        if let Some(s) = self.drop_sock(id) {
            if let Some(conn) = s.rec.accepted_conn() {
                self.claimed.remove(&conn);
            }
            if let Some(m) = &s.mem {
                m.set_state(sstate::CLOSED);
            }
            if s.rec.state != sock_state::OPEN || s.kind() == Kind::Tcp {
                self.send_ctl(
                    s.kind(),
                    L4Ctl {
                        op: op::CLOSE,
                        sock: id,
                        ..Default::default()
                    },
                );
            }
        }
    }

    pub(crate) fn close_session(&mut self, sid: u64) {
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        self.sessions_of_uid.remove(s.uid);
        drop(s);
        let mut ids = Vec::new();
        for (&id, s) in self.socks.iter_mut() {
            s.sharers.retain(|&x| x != sid);
            if s.session == Some(sid) {
                // Another process that shares it holds it on.
                s.session = s.sharers.pop();
                if s.session.is_none() {
                    ids.push(id);
                }
            }
        }
        for id in ids {
            self.app_close(id);
        }
        self.pending.retain(|_, p| p.session != sid);
        self.stats.add(Stat::SessionsClosed, 1);
    }

    /// The application closed `id` (or its process ended). UDP: gone at
    /// once. TCP, as Linux: unread data, or SO_LINGER with a zero
    /// timeout, means RST; otherwise what the application queued is still
    /// sent, then FIN.
    pub(crate) fn app_close(&mut self, id: u32) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        let udp_queued =
            s.kind() == Kind::Udp && !s.broken && s.mem.as_ref().is_some_and(|m| m.tx_queued() > 0);
        if udp_queued {
            // Datagrams sent before the close still go, as on Linux (a
            // reply sent just before closing, typically): `pump_tx`
            // closes the socket once they have.
            s.closing = true;
            s.session = None;
            s.sharers.clear();
            return;
        }
        if s.kind() == Kind::Udp || s.rec.state != sock_state::CONNECTED {
            self.close_sock(id);
            return;
        }
        let unread =
            s.rx_hold().next().is_some() || s.mem.as_ref().is_some_and(|m| m.rx_queued() > 0);
        // SO_LINGER with a zero timeout: RST, what is queued dropped.
        if unread || s.rec.has(rec_flags::LINGER_ABORT) {
            self.tcp_ctl(op::ABORT, id, 0, 0);
            self.drop_sock(id);
            return;
        }
        s.closing = true;
        s.session = None;
        s.sharers.clear();
    }
}
