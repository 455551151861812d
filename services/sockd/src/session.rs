//! Sessions: accepting libsock's connections (with their peer
//! credentials), reading and answering their socket calls, and handing an
//! accepted TCP connection to the application.

use super::*;

impl Sockd<'_> {
    pub(crate) fn accept_sessions(&mut self, listener: &OwnedFd) {
        loop {
            let fd = match accept4(
                listener.as_raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                // SAFETY: accept4 just returned this descriptor; nothing
                // else owns it.
                Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
                Err(_) => return,
            };
            let Ok(cred) = getsockopt(&fd, sockopt::PeerCredentials) else {
                continue;
            };
            self.next_session += 1;
            self.sessions.insert(
                self.next_session,
                Session {
                    fd,
                    pid: cred.pid() as u32,
                    uid: cred.uid(),
                },
            );
            self.count(c::SESSIONS_OPENED, 1);
        }
    }

    /// The socket `id` if it belongs to session `sid`.
    pub(crate) fn own(&self, sid: u64, id: u32) -> Option<&Sock> {
        self.socks.get(&id).filter(|s| s.session == Some(sid))
    }

    pub(crate) fn handle(&mut self, sid: u64, req: Request, mut fds: Vec<OwnedFd>) {
        let r = match req {
            Request::Hello { version } => {
                if version != VERSION {
                    errno_resp(libc::EPROTO)
                } else {
                    let wake = self.wake_fd;
                    self.respond(sid, &Response::Welcome { session: sid }, &[wake]);
                    return;
                }
            }
            Request::Socket { kind } => {
                if fds.len() != 2 {
                    errno_resp(libc::EINVAL)
                } else {
                    let efd = fds.pop().unwrap();
                    let memfd = fds.pop().unwrap();
                    match SockMem::attach(&memfd, MAX_SOCK_MEM) {
                        Err(_) => errno_resp(libc::EINVAL),
                        Ok(mem) => {
                            let s = &self.sessions[&sid];
                            let rec = SockRec {
                                state: sock_state::OPEN,
                                proto: if kind == Kind::Tcp { 6 } else { 17 },
                                pid: s.pid,
                                uid: s.uid,
                                ..Default::default()
                            };
                            match self.table.insert(rec) {
                                None => errno_resp(libc::EMFILE),
                                Some(id) => {
                                    let slot = self.table.find(id).unwrap_or(0);
                                    let rec = self.table.get(slot).unwrap_or(rec);
                                    let mut sk = Sock::new(slot, kind, rec, self.tcp_credit);
                                    sk.session = Some(sid);
                                    sk.mem = Some(mem);
                                    sk.efd = Some(efd);
                                    self.socks.insert(id, sk);
                                    self.count(c::SOCKETS_OPENED, 1);
                                    Response::Created { id }
                                }
                            }
                        }
                    }
                }
            }
            Request::Bind { id, addr } => match self.own(sid, id) {
                None => errno_resp(libc::EBADF),
                // A bind repeated by libsock after a sockd restart, which
                // had already taken effect.
                Some(s)
                    if s.rec.state != sock_state::OPEN
                        && (addr.ip == 0 || addr.ip == s.rec.local_ip)
                        && addr.port == s.rec.local_port =>
                {
                    Response::Ok
                }
                Some(s) if s.rec.state != sock_state::OPEN => errno_resp(libc::EINVAL),
                Some(s) => {
                    let reuse = s.rec.reuse_addr();
                    self.request_transport(
                        sid,
                        id,
                        L4Ctl {
                            op: op::BIND,
                            local_addr: addr.ip,
                            local_port: addr.port,
                            flags: if reuse { ctl_flags::REUSEADDR } else { 0 },
                            ..Default::default()
                        },
                    );
                    return;
                }
            },
            Request::Connect { id, addr } => match self.own(sid, id) {
                None => errno_resp(libc::EBADF),
                Some(s) => {
                    let reuse = s.rec.reuse_addr();
                    self.request_transport(
                        sid,
                        id,
                        L4Ctl {
                            op: op::CONNECT,
                            remote_addr: addr.ip,
                            remote_port: addr.port,
                            flags: if reuse { ctl_flags::REUSEADDR } else { 0 },
                            ..Default::default()
                        },
                    );
                    return;
                }
            },
            Request::SetOption { id, opt } => match (self.own(sid, id).map(Sock::kind), opt) {
                (None, _) => errno_resp(libc::EBADF),
                (Some(_), SockOpt::ReuseAddr(on)) => {
                    if let Some(s) = self.socks.get_mut(&id) {
                        s.rec.set_reuse_addr(on);
                    }
                    self.sync_rec(id);
                    Response::Ok
                }
                (Some(Kind::Udp), _) => errno_resp(libc::ENOPROTOOPT),
                (Some(Kind::Tcp), opt) => {
                    let (name, v) = match opt {
                        SockOpt::NoDelay(on) => (tcp_opt::NODELAY, on as u64),
                        SockOpt::KeepAlive(on) => (tcp_opt::KEEPALIVE, on as u64),
                        SockOpt::Congestion(a) => (tcp_opt::CONGESTION, a as u64),
                        SockOpt::ReuseAddr(_) => unreachable!("handled above"),
                    };
                    if let Some(t) = self.socks.get_mut(&id).and_then(Sock::tcp_mut) {
                        t.opts.set(name, v);
                    }
                    self.tcp_ctl(op::SETOPT, id, v, name);
                    Response::Ok
                }
            },
            Request::Names { id } => match self.own(sid, id) {
                None => errno_resp(libc::EBADF),
                Some(s) => Response::Names {
                    local: Addr {
                        ip: s.rec.local_ip,
                        port: s.rec.local_port,
                    },
                    peer: (s.rec.state == sock_state::CONNECTED).then_some(Addr {
                        ip: s.rec.peer_ip,
                        port: s.rec.peer_port,
                    }),
                },
            },
            Request::Close { id } => {
                if self.own(sid, id).is_none() {
                    errno_resp(libc::EBADF)
                } else {
                    self.app_close(id);
                    Response::Ok
                }
            }
            Request::Listen { id, backlog } => {
                match self.own(sid, id).map(|s| (s.kind(), s.rec.state)) {
                    None => errno_resp(libc::EBADF),
                    Some((Kind::Udp, _)) => errno_resp(libc::EOPNOTSUPP),
                    Some((_, sock_state::LISTEN)) => Response::Ok,
                    Some(_) => {
                        self.request_transport(
                            sid,
                            id,
                            L4Ctl {
                                op: op::LISTEN,
                                value: backlog.clamp(1, 4096) as u64,
                                ..Default::default()
                            },
                        );
                        return;
                    }
                }
            }
            Request::Accept { id } => {
                let r = self.accept(sid, id, &mut fds);
                self.respond(sid, &r, &[]);
                return;
            }
            Request::Shutdown { id, how } => match self.own(sid, id).map(Sock::kind) {
                None => errno_resp(libc::EBADF),
                Some(Kind::Udp) => errno_resp(libc::EOPNOTSUPP),
                Some(Kind::Tcp) => {
                    if matches!(how, How::Read | How::Both) {
                        if let Some(t) = self.socks.get_mut(&id).and_then(Sock::tcp_mut) {
                            t.shut_sent.read = true;
                        }
                        self.tcp_ctl(op::SHUTDOWN, id, 0, 0);
                    }
                    if matches!(how, How::Write | How::Both) {
                        if let Some(t) = self.socks.get_mut(&id).and_then(Sock::tcp_mut) {
                            t.shut_wr = true;
                        }
                    }
                    Response::Ok
                }
            },
            Request::Reattach { id } => {
                let pid = self.sessions[&sid].pid;
                let ok = self
                    .socks
                    .get(&id)
                    .is_some_and(|s| s.session.is_none() && s.rec.pid == pid);
                if !ok || fds.len() != 2 {
                    errno_resp(libc::EBADF)
                } else {
                    let efd = fds.pop().unwrap();
                    let memfd = fds.pop().unwrap();
                    match SockMem::attach(&memfd, MAX_SOCK_MEM) {
                        Err(_) => errno_resp(libc::EINVAL),
                        Ok(mem) => {
                            let s = self.socks.get_mut(&id).unwrap();
                            // What tcpd delivered to the sockd that died
                            // is gone: it delivers again from what the
                            // ring has, and says what credit we have.
                            if let Some(t) = s.tcp_mut() {
                                t.rx_next = mem.rx_written();
                                t.tx_sent = mem.tx_consumed();
                                t.sync_sent = t.tx_sent;
                                t.rx_seen = u64::MAX;
                                t.resync = true;
                                t.sync_at = Instant::now();
                            }
                            s.mem = Some(mem);
                            s.efd = Some(efd);
                            s.session = Some(sid);
                            s.detached_since = None;
                            s.reattached = true;
                            let conn = s.rec.accepted_conn().filter(|_| s.kind() == Kind::Tcp);
                            self.count(c::REATTACHED, 1);
                            if let Some(conn) = conn {
                                // Accepted just before the last sockd
                                // died, maybe after it answered and
                                // before its ATTACH reached tcpd, which
                                // ignores a repeat; what it announced
                                // again is this socket's.
                                self.claimed.insert(conn);
                                for l in self.socks.values_mut().filter_map(Sock::tcp_mut) {
                                    l.accept_q.retain(|q| q.0 != conn);
                                }
                                self.tcp_ctl(op::ATTACH, id, conn, 0);
                            }
                            Response::Ok
                        }
                    }
                }
            }
        };
        self.respond(sid, &r, &[]);
    }

    pub(crate) fn accept(&mut self, sid: u64, id: u32, fds: &mut Vec<OwnedFd>) -> Response {
        let Some(l) = self.own(sid, id) else {
            return errno_resp(libc::EBADF);
        };
        let listening = l.rec.state == sock_state::LISTEN;
        let Some(l) = l.tcp().filter(|_| listening) else {
            return errno_resp(libc::EINVAL);
        };
        if l.accept_q.is_empty() {
            return errno_resp(libc::EAGAIN);
        }
        if fds.len() != 2 {
            return errno_resp(libc::EINVAL);
        }
        let efd = fds.pop().unwrap();
        let memfd = fds.pop().unwrap();
        let Ok(mem) = SockMem::attach(&memfd, MAX_SOCK_MEM) else {
            return errno_resp(libc::EINVAL);
        };
        let Some(l) = self.socks.get_mut(&id).and_then(Sock::tcp_mut) else {
            return errno_resp(libc::EINVAL);
        };
        let Some((conn, local, peer)) = l.accept_q.pop_front() else {
            return errno_resp(libc::EAGAIN);
        };
        if let Some((_, taken)) = &mut l.reannounce {
            taken.push(conn);
        }
        let sess = &self.sessions[&sid];
        let rec = SockRec {
            state: sock_state::CONNECTED,
            proto: 6,
            pid: sess.pid,
            uid: sess.uid,
            local_ip: local.ip,
            local_port: local.port,
            peer_ip: peer.ip,
            peer_port: peer.port,
            ..Default::default()
        };
        let mut rec = rec;
        rec.set_accepted_conn(Some(conn));
        let Some(new_id) = self.table.insert(rec) else {
            self.tcp_ctl(op::ABORT, 0, conn, 0);
            return errno_resp(libc::EMFILE);
        };
        let slot = self.table.find(new_id).unwrap_or(0);
        self.table.update(slot, SockRec { id: new_id, ..rec });
        mem.set_state(sstate::CONNECTED);
        let mut sk = Sock::new(
            slot,
            Kind::Tcp,
            SockRec { id: new_id, ..rec },
            self.tcp_credit,
        );
        sk.session = Some(sid);
        sk.mem = Some(mem);
        sk.efd = Some(efd);
        self.socks.insert(new_id, sk);
        self.tcp_ctl(op::ATTACH, new_id, conn, 0);
        self.count(c::SOCKETS_OPENED, 1);
        Response::Accepted {
            id: new_id,
            peer,
            local,
        }
    }

    pub(crate) fn serve_sessions(&mut self) -> usize {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        let mut n = 0;
        for sid in ids {
            // A few requests per session per turn keeps one chatty client
            // from starving the data path.
            for _ in 0..16 {
                let Some(s) = self.sessions.get(&sid) else {
                    break;
                };
                match wire::recv(&s.fd) {
                    Ok(Recv::Empty) => break,
                    Ok(Recv::Closed) | Err(_) => {
                        self.close_session(sid);
                        break;
                    }
                    Ok(Recv::Msg(bytes, fds)) => {
                        n += 1;
                        match Request::decode(&bytes) {
                            Ok(req) => self.handle(sid, req, fds),
                            Err(_) => {
                                self.count(c::BAD_REQUESTS, 1);
                                self.respond(sid, &errno_resp(libc::EINVAL), &[]);
                            }
                        }
                    }
                }
            }
        }
        n
    }
}
