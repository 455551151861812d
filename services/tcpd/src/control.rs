//! Requests from sockd: BIND, LISTEN, CONNECT, ATTACH, SHUTDOWN, CLOSE,
//! ABORT, READ_CREDIT, SETOPT, and stream payload to send.

use strata_ipc::addrs::{is_any, unmapped};
use strata_ipc::l4::{ctl_flags, op, tcp_opt, L4Ctl, ReadCredit};
use strata_ipc::{Buffers, Handle};

use crate::block::{cf, ef, pend, ConnBlock, Slot, State, NIL};
use crate::ip::is_v4;
use crate::output::reply;
use crate::{cc, conn_msg, isn, Outputs, Stat, TcpCore, Tuple, MAX_BACKLOG};

/// The smallest receive ring sockd accepts from an application.
const MIN_RX_RING: u32 = strata_ipc::sockring::MIN_RING;

impl TcpCore<'_> {
    pub(crate) fn control<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        let m = match L4Ctl::from_handle(pool, &h) {
            Ok(Some(m)) => m,
            Ok(None) => return self.drop(pool, &h, Stat::CtlMalformed),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        self.stats.inc(Stat::CtlRequests);
        let res = match m.op {
            op::BIND => self.bind(&m),
            op::LISTEN => self.listen(pool, &m, out),
            op::CONNECT => self.connect(pool, &m, out),
            op::ATTACH | op::SHUTDOWN | op::CLOSE | op::ABORT | op::READ_CREDIT | op::SETOPT => {
                pool.free(&h);
                match m.op {
                    op::ATTACH => self.attach(pool, &m, out),
                    op::SHUTDOWN => self.shutdown(pool, &m, out),
                    op::CLOSE => self.close(pool, &m, false, out),
                    op::ABORT if m.sock == 0 => self.abort_unattached(pool, m.value, out),
                    op::ABORT => self.close(pool, &m, true, out),
                    op::READ_CREDIT => self.read_credit(pool, &m, out),
                    _ => self.setopt(pool, &m, out),
                }
                return;
            }
            _ => {
                self.stats.inc(Stat::CtlUnknownOp);
                Err(libc::EOPNOTSUPP)
            }
        };
        let mut r = match res {
            Ok(()) => match self.by_sock.get(&m.sock) {
                Some(&i) => conn_msg(op::OK, m.sock, &self.conns[i as usize]),
                None => reply(op::OK, m.sock, 0),
            },
            Err(errno) => {
                let mut r = reply(op::ERROR, m.sock, 0);
                r.errno = errno;
                r
            }
        };
        r.req = m.req;
        self.write_ctl(pool, &h, &r, out);
    }

    /// Whether binding `addr:port` with the [`cf`] bits `bits` (reuse
    /// options, IPV6_V6ONLY) would conflict with a block other than
    /// `except` (Linux `inet_csk_bind_conflict`: overlapping addresses,
    /// see [`overlap`], conflict unless both sides set SO_REUSEADDR and
    /// neither listens, or both set SO_REUSEPORT, which sockd allows only
    /// among one user's sockets).
    fn bind_conflict(&self, addr: u128, port: u16, bits: u32, except: usize) -> bool {
        if !self.port_use.contains_key(&port) {
            return false;
        }
        let both = |c: &ConnBlock, f: u32| bits & f != 0 && c.has(f);
        let v6only = bits & cf::V6ONLY != 0;
        self.conns[..self.blocks_taken()]
            .iter()
            .enumerate()
            .any(|(i, c)| {
                i != except
                    && c.in_use()
                    && c.has(cf::BOUND)
                    && c.local_port == u32::from(port)
                    && overlap((c.local_addr, c.has(cf::V6ONLY)), (addr, v6only))
                    && !(both(c, cf::REUSEADDR) && c.slot() != Slot::Live(State::Listen))
                    && !both(c, cf::REUSEPORT)
            })
    }

    /// A port of the ephemeral range nothing holds.
    fn ephemeral_port(&mut self) -> Option<u16> {
        let (lo, hi) = self.cfg.ephemeral_ports;
        let n = u32::from(hi - lo) + 1;
        let start = self.next_rand() % n;
        (0..n)
            .map(|i| lo + ((start + i) % n) as u16)
            .find(|p| !self.port_use.contains_key(p))
    }

    fn take_port(&mut self, c: &mut ConnBlock, port: u16) {
        c.local_port = u32::from(port);
        c.flags |= cf::BOUND;
        *self.port_use.entry(port).or_insert(0) += 1;
    }

    /// `bind()`: an address of either family, any of IPv4's
    /// (`0.0.0.0`) or of both (`::`, IPv6 only with IPV6_V6ONLY).
    fn bind(&mut self, m: &L4Ctl) -> Result<(), i32> {
        let local = m.local_addr;
        if m.flags & ctl_flags::REPEAT != 0 {
            if let Some(&i) = self.by_sock.get(&m.sock) {
                // The first one took effect before its reply was lost.
                let c = &self.conns[i as usize];
                if c.has(cf::BOUND)
                    && (m.local_port == 0 || c.local_port == u32::from(m.local_port))
                    && (is_any(local) || c.local_addr == local)
                {
                    return Ok(());
                }
            }
        }
        if self.by_sock.contains_key(&m.sock) || m.sock == 0 {
            self.stats.inc(Stat::BadState);
            return Err(libc::EINVAL);
        }
        let bits = sock_bits(m.flags);
        if bits & cf::V6ONLY != 0 && is_v4(local) {
            // Linux `__inet6_bind`: a mapped address on an IPv6-only
            // socket makes no sense.
            self.stats.inc(Stat::BadState);
            return Err(libc::EINVAL);
        }
        if !is_any(local) && !self.net.is_local(local) {
            self.stats.inc(Stat::AddrNotAvail);
            return Err(libc::EADDRNOTAVAIL);
        }
        let port = if m.local_port != 0 {
            if self.bind_conflict(local, m.local_port, bits, usize::MAX) {
                self.stats.inc(Stat::AddrInUse);
                return Err(libc::EADDRINUSE);
            }
            m.local_port
        } else {
            match self.ephemeral_port() {
                Some(p) => p,
                None => {
                    self.stats.inc(Stat::AddrInUse);
                    return Err(libc::EADDRINUSE);
                }
            }
        };
        let Some(i) = self.alloc_block() else {
            self.stats.inc(Stat::ConnLimit);
            return Err(libc::ENOBUFS);
        };
        let mut c = self.begin(i);
        c.sock = m.sock;
        c.local_addr = local;
        c.flags |= bits;
        if m.local_port != 0 {
            c.flags |= cf::PORT_LOCK;
        }
        if !is_any(local) {
            c.flags |= cf::ADDR_LOCK;
        }
        self.take_port(&mut c, port);
        self.commit_block(i, c);
        self.by_sock.insert(m.sock, i as u32);
        self.stats.inc(Stat::Binds);
        Ok(())
    }

    /// The block of `sock`, made (unbound, CLOSED) if it has none.
    fn sock_block(&mut self, m: &L4Ctl) -> Result<usize, i32> {
        if let Some(&i) = self.by_sock.get(&m.sock) {
            return Ok(i as usize);
        }
        if m.sock == 0 {
            self.stats.inc(Stat::BadState);
            return Err(libc::EINVAL);
        }
        let Some(i) = self.alloc_block() else {
            self.stats.inc(Stat::ConnLimit);
            return Err(libc::ENOBUFS);
        };
        let mut c = self.begin(i);
        c.sock = m.sock;
        c.flags |= sock_bits(m.flags);
        // Unbound: any IPv4 address if the request says `0.0.0.0`, else
        // any address of both families, as Linux's IPv6 socket (a
        // CONNECT names its peer's family anyway; a LISTEN before any
        // BIND listens on `::` unless told `0.0.0.0`).
        c.local_addr = if is_any(m.local_addr) {
            m.local_addr
        } else {
            0
        };
        self.commit_block(i, c);
        self.by_sock.insert(m.sock, i as u32);
        Ok(i)
    }

    /// `listen()`.
    fn listen<B: Buffers>(
        &mut self,
        pool: &mut B,
        m: &L4Ctl,
        out: &mut Outputs,
    ) -> Result<(), i32> {
        let i = self.sock_block(m)?;
        let mut c = self.begin(i);
        let r = (|| {
            match c.state() {
                // Listening already: only the backlog changes (as Linux).
                State::Listen => {}
                // RFC 9293 §3.10.1 OPEN, passive: CLOSED to LISTEN.
                State::Closed => {
                    c.flags |= sock_bits(m.flags) & cf::V6ONLY;
                    if !c.has(cf::BOUND) {
                        let p = self.ephemeral_port().ok_or(libc::EADDRINUSE)?;
                        self.take_port(&mut c, p);
                    } else if self.bind_conflict(
                        c.local_addr,
                        c.local_port as u16,
                        c.flags & (cf::REUSEADDR | cf::REUSEPORT | cf::V6ONLY),
                        i,
                    ) {
                        self.stats.inc(Stat::AddrInUse);
                        return Err(libc::EADDRINUSE);
                    }
                    c.set_state(State::Listen);
                    self.add_listener((c.local_addr, c.local_port as u16), i);
                }
                // A connection cannot listen (`listen(2)`: EINVAL).
                State::SynSent
                | State::SynReceived
                | State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
                | State::Closing
                | State::LastAck
                | State::TimeWait => {
                    self.stats.inc(Stat::BadState);
                    return Err(libc::EINVAL);
                }
            }
            c.backlog = (m.value.min(u64::from(MAX_BACKLOG))) as u32;
            Ok(())
        })();
        self.end(pool, i, c, out);
        r
    }

    /// `connect()`: starts the handshake; the reply says "in progress",
    /// CONNECTED or SOCK_ERROR follows. The peer's family is the
    /// connection's: an IPv4 (mapped) peer from a socket bound to IPv4 or
    /// to `::` without IPV6_V6ONLY, an IPv6 one from a socket not bound
    /// to IPv4.
    fn connect<B: Buffers>(
        &mut self,
        pool: &mut B,
        m: &L4Ctl,
        out: &mut Outputs,
    ) -> Result<(), i32> {
        let remote = m.remote_addr;
        if m.remote_port == 0 || self.net.is_bad_peer(remote) {
            self.stats.inc(Stat::BadState);
            // Linux: no route to "any" or to an IPv6 multicast group
            // (`tcp_v6_connect`); an IPv4 broadcast or group refuses.
            return Err(if is_any(remote) || !is_v4(remote) {
                libc::ENETUNREACH
            } else {
                libc::ECONNREFUSED
            });
        }
        if m.flags & ctl_flags::REPEAT != 0 {
            if let Some(&i) = self.by_sock.get(&m.sock) {
                // The first one took effect before its reply was lost: in
                // progress or done, CONNECTED (restated on RESYNC) says.
                let c = &self.conns[i as usize];
                if c.state().has_peer()
                    && c.remote_addr == remote
                    && c.remote_port == u32::from(m.remote_port)
                {
                    return Ok(());
                }
            }
        }
        let i = self.sock_block(m)?;
        let mut c = self.begin(i);
        let r = self.connect_block(i, &mut c, m);
        if r.is_err() && c.state() == State::Closed && !c.has(cf::BOUND) {
            // Nothing to keep of a socket that never got anywhere.
            c.flags |= cf::DEAD;
            if self.by_sock.get(&m.sock) == Some(&(i as u32)) {
                self.by_sock.remove(&m.sock);
            }
            c.sock = 0;
        }
        self.end(pool, i, c, out);
        r
    }

    /// Whether socket `c` (with the CONNECT's IPV6_V6ONLY `v6only`) may
    /// reach a peer of `remote`'s family: Linux's `tcp_v6_connect` sends
    /// an IPv4-mapped peer to IPv4 unless the socket is IPv6-only (the
    /// option, or bound to an IPv6 address, `__inet6_bind`), and an IPv6
    /// peer needs a socket not bound to IPv4.
    fn family_check(c: &ConnBlock, remote: u128, v6only: bool) -> Result<(), i32> {
        let bound6 = !is_any(c.local_addr) && !is_v4(c.local_addr);
        match (is_v4(remote), is_v4(c.local_addr)) {
            (true, _) if v6only || c.has(cf::V6ONLY) || bound6 => Err(libc::ENETUNREACH),
            (false, true) => Err(libc::EAFNOSUPPORT),
            _ => Ok(()),
        }
    }

    fn connect_block(&mut self, i: usize, c: &mut ConnBlock, m: &L4Ctl) -> Result<(), i32> {
        let remote = m.remote_addr;
        match c.state() {
            // RFC 9293 §3.10.1 OPEN, active: CLOSED to SYN-SENT.
            State::Closed => {}
            // `connect(2)`: the handshake is under way,
            State::SynSent | State::SynReceived => {
                self.stats.inc(Stat::BadState);
                return Err(libc::EALREADY);
            }
            // a listener does not connect,
            State::Listen => {
                self.stats.inc(Stat::BadState);
                return Err(libc::EINVAL);
            }
            // and a connection is made once.
            State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck
            | State::TimeWait => {
                self.stats.inc(Stat::BadState);
                return Err(libc::EISCONN);
            }
        }
        if let Err(e) = Self::family_check(c, remote, m.flags & ctl_flags::V6ONLY != 0) {
            self.stats.inc(Stat::BadState);
            return Err(e);
        }
        let src = if is_any(c.local_addr) {
            self.net.source_for(remote)
        } else {
            Some(c.local_addr)
        };
        let Some(src) = src else {
            self.stats.inc(Stat::AddrNotAvail);
            return Err(libc::ENETUNREACH);
        };
        if !c.has(cf::BOUND) {
            let Some(p) = self.ephemeral_port() else {
                self.stats.inc(Stat::AddrInUse);
                return Err(libc::EADDRNOTAVAIL);
            };
            self.take_port(c, p);
        }
        let t = Tuple {
            la: src,
            lp: c.local_port as u16,
            ra: remote,
            rp: m.remote_port,
        };
        if self.by_tuple.contains_key(&t) {
            self.stats.inc(Stat::AddrInUse);
            return Err(libc::EADDRNOTAVAIL);
        }
        c.flags |= sock_bits(m.flags) & cf::V6ONLY;
        c.local_addr = src;
        c.remote_addr = remote;
        c.remote_port = u32::from(m.remote_port);
        c.rx_credit = self.cfg.socket_rx_bytes;
        c.rcvbuf = self.initial_rcvbuf();
        c.our_mss = self.net.mss_for(remote).max(64);
        c.peer_mss = c.our_mss;
        c.rcv_wscale = if self.cfg.window_scaling {
            self.wscale_for_buffer()
        } else {
            0
        };
        c.flags &= !(cf::SACK_OK | cf::TS_OK | cf::WS_OK);
        self.set_mss(c);
        c.ts_offset = isn::ts_offset(self.cfg.secret, src, t.lp, t.ra, t.rp);
        c.flow_label = isn::flow_label(self.cfg.secret, src, t.lp, t.ra, t.rp);
        let iss = isn::isn(self.cfg.secret, self.now, src, t.lp, t.ra, t.rp);
        self.set_iss(c, iss);
        c.set_state(State::SynSent);
        c.last_rx = self.now;
        self.by_tuple.insert(t, i as u32);
        if !is_v4(remote) {
            self.stats.inc(Stat::ActiveOpens6);
        }
        self.stats.inc(Stat::ActiveOpens);
        Ok(())
    }

    /// ATTACH: socket `m.sock` takes over accepted connection `m.value`.
    /// The block of connection `id` (as in ACCEPTABLE) if it still waits
    /// in an accept queue.
    fn queued_child(&self, id: u64) -> Option<usize> {
        let idx = (id & 0xffff_ffff) as usize;
        let gen = (id >> 32) as u32;
        self.conns
            .get(idx)
            .is_some_and(|c| c.in_use() && c.gen == gen && c.has(cf::IN_ACCEPTQ) && c.sock == 0)
            .then_some(idx)
    }

    /// Takes `c` out of its listener's accept queue.
    fn leave_accept_queue(&mut self, c: &mut ConnBlock) {
        if let Some(l) = self.parent_of(c) {
            let lb = &mut self.conns[l];
            lb.acc_q = lb.acc_q.saturating_sub(1);
        }
        c.flags &= !cf::IN_ACCEPTQ;
        c.pend &= !pend::ACCEPTABLE;
        c.parent = NIL;
    }

    fn attach<B: Buffers>(&mut self, pool: &mut B, m: &L4Ctl, out: &mut Outputs) {
        let child = self.queued_child(m.value);
        let ok = m.sock != 0 && !self.by_sock.contains_key(&m.sock) && child.is_some();
        let (true, Some(idx)) = (ok, child) else {
            // The connection is gone (reset, or its listener closed).
            self.stats.inc(Stat::UnknownSock);
            if m.sock != 0 && !self.by_sock.contains_key(&m.sock) {
                let mut e = reply(op::SOCK_ERROR, m.sock, 0);
                e.errno = libc::ECONNRESET;
                self.notify(pool, &e, out);
                self.notify(pool, &reply(op::CLOSED, m.sock, 0), out);
            }
            return;
        };
        let mut c = self.begin(idx);
        self.leave_accept_queue(&mut c);
        c.sock = m.sock;
        self.by_sock.insert(m.sock, idx as u32);
        if c.has(cf::DEAD) {
            c.pend |= pend::CLOSED;
        }
        self.end(pool, idx, c, out);
    }

    /// ABORT of a connection still in an accept queue, named by its id as
    /// in ACCEPTABLE (sockd could not give it a socket, or its listener's
    /// socket is gone): a reset, as Linux sends for a child dropped from
    /// the accept queue.
    fn abort_unattached<B: Buffers>(&mut self, pool: &mut B, id: u64, out: &mut Outputs) {
        let Some(idx) = self.queued_child(id) else {
            // Gone already (reset, or its listener closed).
            self.stats.inc(Stat::UnknownSock);
            return;
        };
        let mut c = self.begin(idx);
        self.leave_accept_queue(&mut c);
        if !c.has(cf::DEAD) {
            self.stats.inc(Stat::Aborted);
            self.send_rst(pool, &mut c, out);
        }
        self.discard_rcv(&mut c);
        self.terminate(&mut c, 0);
        self.end(pool, idx, c, out);
    }

    /// The block of an existing socket, counting unknown ones.
    fn known(&mut self, sock: u32) -> Option<usize> {
        match self.by_sock.get(&sock) {
            Some(&i) => Some(i as usize),
            None => {
                self.stats.inc(Stat::UnknownSock);
                None
            }
        }
    }

    /// Queues our FIN after the data (RFC 9293 CLOSE for one direction).
    fn shut_write(&mut self, c: &mut ConnBlock) {
        match c.state() {
            // RFC 9293 §3.10.4 CLOSE in SYN-RECEIVED: "queue for
            // processing after entering ESTABLISHED state" (which then is
            // FIN-WAIT-1); SYN-SENT alike, shutdown(2) keeping the
            // connection.
            State::SynSent | State::SynReceived => c.flags |= cf::FIN_QUEUED,
            // "form a FIN segment ... enter FIN-WAIT-1 state",
            State::Established => {
                c.flags |= cf::FIN_QUEUED;
                c.set_state(State::FinWait1);
            }
            // "... enter LAST-ACK state".
            State::CloseWait => {
                c.flags |= cf::FIN_QUEUED;
                c.set_state(State::LastAck);
            }
            // "error: connection closing" (our FIN is out already), or
            // no connection to shut.
            State::FinWait1
            | State::FinWait2
            | State::Closing
            | State::LastAck
            | State::TimeWait
            | State::Closed
            | State::Listen => {}
        }
    }

    fn shutdown<B: Buffers>(&mut self, pool: &mut B, m: &L4Ctl, out: &mut Outputs) {
        let Some(i) = self.known(m.sock) else { return };
        let mut c = self.begin(i);
        if m.value != 1 {
            c.flags |= cf::RD_SHUT;
        }
        if c.state() == State::Listen && m.value != 1 {
            // Linux: shutting a listener's read side stops listening.
            self.stop_listening(pool, i, &mut c, out);
        } else if m.value != 0 {
            self.shut_write(&mut c);
        }
        self.end(pool, i, c, out);
    }

    /// Closes a listener's pending children: those established get a RST
    /// (Linux `inet_csk_listen_stop`), half-open ones are dropped.
    fn stop_listening<B: Buffers>(
        &mut self,
        pool: &mut B,
        l: usize,
        c: &mut ConnBlock,
        out: &mut Outputs,
    ) {
        self.remove_listener((c.local_addr, c.local_port as u16), l);
        let gen = c.gen;
        for i in 0..self.blocks_taken() {
            let x = &self.conns[i];
            if i == l || !x.in_use() || x.parent != l as u32 || x.parent_gen != gen {
                continue;
            }
            let mut ch = self.begin(i);
            let embryo = ch.state() == State::SynReceived;
            if !embryo && !ch.has(cf::DEAD) {
                self.send_rst(pool, &mut ch, out);
            }
            if embryo {
                c.syn_q = c.syn_q.saturating_sub(1);
            }
            if ch.has(cf::IN_ACCEPTQ) {
                c.acc_q = c.acc_q.saturating_sub(1);
            }
            ch.parent = NIL;
            ch.flags &= !cf::IN_ACCEPTQ;
            ch.pend &= !pend::ACCEPTABLE;
            self.terminate(&mut ch, 0);
            self.end(pool, i, ch, out);
        }
        c.set_state(State::Closed);
        c.syn_q = 0;
        c.acc_q = 0;
    }

    /// CLOSE (`abort` false) or ABORT.
    fn close<B: Buffers>(&mut self, pool: &mut B, m: &L4Ctl, abort: bool, out: &mut Outputs) {
        let Some(i) = self.known(m.sock) else {
            // Closed already (a repeat after our restart, whose CLOSED
            // died with us), or never had a block: sockd waits for this.
            self.notify(pool, &reply(op::CLOSED, m.sock, 0), out);
            return;
        };
        let mut c = self.begin(i);
        match c.state() {
            // RFC 9293 §3.10.4 CLOSE: no connection yet, the TCB goes.
            State::Closed | State::SynSent => self.terminate(&mut c, 0),
            // LISTEN: the same, with the children (§3.10.4; Linux
            // `inet_csk_listen_stop`).
            State::Listen => {
                self.stop_listening(pool, i, &mut c, out);
                self.terminate(&mut c, 0);
            }
            // The peer's SYN is in: the FIN follows the data (§3.10.4),
            // or ABORT (§3.10.5) resets.
            state @ (State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck
            | State::TimeWait) => {
                let unread = !c.rcv_q.is_empty();
                let live = state != State::TimeWait;
                if live && (abort || unread) && !c.has(cf::DEAD) {
                    // Linux: close with unread data, or SO_LINGER 0, resets
                    // (RFC 9293 §3.10.5 ABORT).
                    self.stats.inc(Stat::Aborted);
                    self.send_rst(pool, &mut c, out);
                    self.discard_rcv(&mut c);
                    self.terminate(&mut c, 0);
                } else if state == State::TimeWait || c.has(cf::DEAD) {
                    // Nobody will read what is still queued for the
                    // socket (delivered and not yet confirmed, say): it
                    // goes now, not when 2·MSL ends the block, as Linux
                    // frees a closed socket's receive queue.
                    self.discard_rcv(&mut c);
                    c.pend |= pend::CLOSED;
                    c.flags |= cf::ORPHAN;
                } else {
                    self.shut_write(&mut c);
                    c.flags |= cf::ORPHAN | cf::RD_SHUT;
                    c.pend |= pend::CLOSED;
                    if c.state() == State::FinWait2 {
                        c.t_state = self.now + self.cfg.fin_timeout_ms * 1_000_000;
                    }
                }
            }
        }
        self.end(pool, i, c, out);
    }

    fn read_credit<B: Buffers>(&mut self, pool: &mut B, m: &L4Ctl, out: &mut Outputs) {
        let Some(i) = self.known(m.sock) else {
            // The connection is gone and its SOCK_ERROR or CLOSED may have
            // died with a previous instance: restated for a RESYNC.
            if m.flags & ctl_flags::RESYNC != 0 && m.sock != 0 {
                self.notify(pool, &reply(op::CLOSED, m.sock, 0), out);
            }
            return;
        };
        let mut c = self.begin(i);
        // Absolute, so a lost or repeated message does no harm: what the
        // application has read of the stream, from which the credit
        // follows (the ring holds `rx_ring`), and what sockd has
        // written into the ring, which tcpd no longer needs to keep.
        let ReadCredit { read, written } = ReadCredit::unpack(m.value);
        if c.state().is_synchronized() {
            let written = if m.flags & ctl_flags::WRITTEN != 0 {
                written
            } else {
                read
            };
            self.confirm_delivered(&mut c, written, out);
            if m.flags & ctl_flags::RESYNC != 0 {
                self.redeliver(&mut c, Some(written));
                // The CONNECTED of a connect that finished while sockd
                // was down died with it; the application still waits
                // (unless sockd says it knows).
                let known = m.flags & ctl_flags::KNOWN_CONNECTED != 0;
                if !c.has(cf::IN_ACCEPTQ) && !c.has(cf::DEAD) && !known {
                    c.pend |= pend::CONNECTED;
                }
            }
        }
        if m.flags & ctl_flags::RESYNC != 0 && c.state() == State::Listen {
            self.reannounce_accept_queue(pool, i, &c, out);
        }
        let fin = u32::from(c.has(cf::FIN_RCVD));
        let delivered = c
            .rcv_nxt
            .wrapping_sub(c.irs)
            .wrapping_sub(1)
            .wrapping_sub(fin)
            .wrapping_sub(c.rcv_q.bytes);
        let unread = delivered.wrapping_sub(read);
        let cap = self.rx_ring(&c);
        let synchronized = c.state().is_synchronized();
        if synchronized && unread <= cap {
            c.rx_credit = cap - unread;
            c.rcv_read = read;
            self.rcvbuf_adjust(&mut c);
            // The application's read may reopen a window the peer saw
            // shrink or close: tell it now rather than at its next probe
            // (Linux `tcp_cleanup_rbuf`).
            if self.window_update_due(&c) {
                c.flags |= cf::ACK_NOW;
            }
        } else if synchronized {
            self.stats.inc(Stat::CtlMalformed);
        }
        if m.flags & ctl_flags::SYNC != 0 {
            c.flags |= cf::SYNC_ASKED;
        }
        self.end(pool, i, c, out);
    }

    /// A restarted sockd lost listener `l`'s accept queue (and the
    /// ACCEPTABLEs in flight): every child still waiting for an ATTACH is
    /// announced again, before the answer to the RESYNC.
    fn reannounce_accept_queue<B: Buffers>(
        &mut self,
        pool: &mut B,
        l: usize,
        lc: &ConnBlock,
        out: &mut Outputs,
    ) {
        for i in 0..self.blocks_taken() {
            let x = &self.conns[i];
            if i == l
                || !x.in_use()
                || x.parent != l as u32
                || x.parent_gen != lc.gen
                || !x.has(cf::IN_ACCEPTQ)
                || x.sock != 0
            {
                continue;
            }
            let mut ch = self.begin(i);
            ch.pend |= pend::ACCEPTABLE;
            self.end(pool, i, ch, out);
        }
    }

    fn setopt<B: Buffers>(&mut self, pool: &mut B, m: &L4Ctl, out: &mut Outputs) {
        let Some(i) = self.known(m.sock) else { return };
        let mut c = self.begin(i);
        let on = m.value != 0;
        let set = |c: &mut ConnBlock, f: u32| {
            if on {
                c.flags |= f;
            } else {
                c.flags &= !f;
            }
        };
        match m.flags {
            tcp_opt::NODELAY => set(&mut c, cf::NODELAY),
            tcp_opt::KEEPALIVE => {
                set(&mut c, cf::KEEPALIVE);
                c.t_keepalive = 0;
            }
            // Linux's bounds are sockd's to check; a new idle time
            // re-arms the timer from the last segment received, as
            // Linux's tcp_sock_set_keepidle does.
            tcp_opt::KEEPIDLE => {
                c.ka_idle_s = m.value.min(u64::from(u32::MAX)) as u32;
                c.t_keepalive = 0;
            }
            tcp_opt::KEEPINTVL => c.ka_intvl_s = m.value.min(u64::from(u32::MAX)) as u32,
            tcp_opt::KEEPCNT => c.ka_cnt = m.value.min(u64::from(u32::MAX)) as u32,
            tcp_opt::CONGESTION => {
                if let Some(a) = cc::CcAlgo::from_raw(m.value) {
                    if a as u32 != c.cc_algo {
                        c.cc_algo = a as u32;
                        c.cc_epoch = 0;
                        c.cwnd_cnt = 0;
                    }
                }
            }
            // The socket's receive ring: what is unread stays unread, the
            // credit and the buffer shrink (or grow) to the ring. A
            // repeat changes nothing.
            tcp_opt::RCVBUF => {
                let ring = (m.value.min(u64::from(u32::MAX)) as u32)
                    .clamp(MIN_RX_RING, self.cfg.socket_rx_bytes);
                let unread = self.rx_ring(&c).saturating_sub(c.rx_credit);
                c.rx_ring = ring;
                c.rx_credit = ring.saturating_sub(unread);
                if c.rcvbuf == 0 || c.rcvbuf > ring {
                    c.rcvbuf = ring;
                }
            }
            _ => self.stats.inc(Stat::CtlUnknownOp),
        }
        self.end(pool, i, c, out);
    }

    // ---- payload ----

    /// Stream payload from sockd: appended to the send queue.
    pub(crate) fn sock_data<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::SockDataIn);
        self.stats.add(Stat::SockDataBytes, u64::from(h.data_len));
        if let Err(e) = pool.data(&h) {
            return self.bad_handle(pool, &h, e);
        }
        let Some(&i) = self.by_sock.get(&h.sock) else {
            return self.drop(pool, &h, Stat::UnknownSock);
        };
        let i = i as usize;
        let mut c = self.begin(i);
        // By stream offset: what sockd sends again after a restart is
        // skipped; what follows a loss waits until sockd sends again.
        let ahead = h.stream_off.wrapping_sub(c.tx_taken) as i32;
        let have = c.tx_taken.wrapping_sub(h.stream_off);
        if ahead > 0 {
            self.drop(pool, &h, Stat::SockDataGap);
            return self.end(pool, i, c, out);
        }
        if have >= h.data_len {
            self.drop(pool, &h, Stat::SockDataRepeat);
            return self.end(pool, i, c, out);
        }
        let mut h = h;
        h.data_off += have;
        h.data_len -= have;
        c.tx_taken = c.tx_taken.wrapping_add(h.data_len);
        let open = c.state().accepts_send() && !c.has(cf::FIN_QUEUED | cf::DEAD);
        if !open || h.data_len == 0 {
            self.drop(pool, &h, Stat::SockDataDropped);
            // The credit comes back: the bytes left the send buffer.
            c.tx_owed = c.tx_owed.saturating_add(h.data_len);
            c.tx_freed = c.tx_freed.wrapping_add(h.data_len);
            return self.end(pool, i, c, out);
        }
        let len = h.data_len;
        let room = self.queued_bytes + u64::from(len) <= self.cfg.max_queued_bytes;
        let mut hh = h;
        hh.flags = 0;
        let e = if room {
            self.slab.alloc(i, hh, c.snd_end, ef::SND)
        } else {
            None
        };
        match e {
            Some(e) => {
                self.slab.push_back(&mut c.snd_q, e);
                out.pin.push(hh);
            }
            None => {
                if !self.append_tail(pool, &mut c, &h) {
                    // No entry and no room to coalesce: the stream would
                    // lose bytes, so the connection fails instead.
                    self.stats.inc(Stat::MemLimit);
                    pool.free(&h);
                    self.send_rst(pool, &mut c, out);
                    self.discard_rcv(&mut c);
                    self.terminate(&mut c, libc::ENOBUFS);
                    return self.end(pool, i, c, out);
                }
                pool.free(&h);
            }
        }
        c.snd_end = c.snd_end.wrapping_add(len);
        self.queued_bytes += u64::from(len);
        self.end(pool, i, c, out);
    }

    /// Copies `h`'s bytes behind the last unsent send-queue entry when its
    /// buffer has room (only when the entry slab is exhausted).
    fn append_tail<B: Buffers>(&mut self, pool: &mut B, c: &mut ConnBlock, h: &Handle) -> bool {
        let t = c.snd_q.tail;
        if t == NIL {
            return false;
        }
        let x = *self.slab.get(t);
        if crate::seq::lt(x.seq, c.snd_max) {
            return false;
        }
        let len = h.data_len as usize;
        let Ok(cap) = pool.raw(&x.h).map(|r| r.len()) else {
            return false;
        };
        let end = (x.h.data_off + x.h.data_len) as usize;
        if end + len > cap || len > 2048 {
            return false;
        }
        let mut tmp = [0u8; 2048];
        match pool.data(h) {
            Ok(d) => tmp[..len].copy_from_slice(d),
            Err(_) => return false,
        }
        match pool.raw_mut(&x.h) {
            Ok(r) => r[end..end + len].copy_from_slice(&tmp[..len]),
            Err(_) => return false,
        }
        self.slab.grow(&mut c.snd_q, t, len as u32);
        true
    }
}

/// The [`cf`] bits for the socket options of a BIND, CONNECT or LISTEN:
/// SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY.
fn sock_bits(flags: u32) -> u32 {
    let v6only = if flags & ctl_flags::V6ONLY != 0 {
        cf::V6ONLY
    } else {
        0
    };
    strata_ipc::l4::reuse_options(flags, cf::REUSEADDR, cf::REUSEPORT) | v6only
}

/// Whether two bound sockets' addresses overlap, each with its
/// IPV6_V6ONLY (Linux `ipv6_rcv_saddr_equal`): two IPv4 ones when either
/// is `0.0.0.0` or they are equal; `::` and any IPv6 address; `::`
/// without IPV6_V6ONLY and any IPv4 address; equal addresses. A specific
/// IPv6 address never overlaps an IPv4 one.
fn overlap((a, a_v6only): (u128, bool), (b, b_v6only): (u128, bool)) -> bool {
    let dual = |x: u128, v6only: bool| x == 0 && !v6only;
    match (unmapped(a), unmapped(b)) {
        (Some(x), Some(y)) => x == 0 || y == 0 || x == y,
        (None, None) => a == 0 || b == 0 || a == b,
        (None, Some(_)) => dual(a, a_v6only),
        (Some(_), None) => dual(b, b_v6only),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ipc::addrs::mapped;

    #[test]
    fn overlaps_are_linuxs() {
        let (any4, a4, b4) = (mapped(0), mapped(0x0a00_0001), mapped(0x0a00_0002));
        let (a6, b6) = (0xfd00 << 112 | 1, 0xfd00 << 112 | 2);
        let o = |a, b| overlap(a, b) && overlap(b, a);
        let n = |a, b| !overlap(a, b) && !overlap(b, a);
        // IPv4 among themselves.
        assert!(o((any4, false), (a4, false)) && o((a4, false), (a4, false)));
        assert!(n((a4, false), (b4, false)));
        // IPv6 among themselves: `::` covers all, V6ONLY or not.
        assert!(o((0, true), (a6, false)) && o((0, true), (0, false)));
        assert!(o((a6, true), (a6, false)) && n((a6, false), (b6, false)));
        // Across: only a dual-stack `::`.
        for v4 in [any4, a4] {
            assert!(o((0, false), (v4, false)), "{v4:x}");
            assert!(n((0, true), (v4, false)), "{v4:x}");
            assert!(n((a6, false), (v4, false)), "{v4:x}");
        }
    }
}
