//! What the transports tell sockd: replies to requests, and TCP's and
//! UDP's notifications (accept queue, connected, end of stream, credits,
//! errors, closed).

use super::*;

impl Sockd<'_> {
    pub(crate) fn on_ctl(&mut self, m: L4Ctl) {
        match m.op {
            op::OK | op::ERROR => {
                // A reply to the sockd that died can carry a request
                // number we use again: it must also name the socket.
                if !matches!(self.pending.get(&m.req), Some(p) if p.sock == m.sock) {
                    return;
                }
                let Some(p) = self.pending.remove(&m.req) else {
                    return;
                };
                let repeated_connect = m.op == op::ERROR
                    && p.op == op::CONNECT
                    && (m.errno == libc::EALREADY || m.errno == libc::EISCONN)
                    && self
                        .socks
                        .get(&p.sock)
                        .is_some_and(|s| s.kind() == Kind::Tcp && (s.reattached || p.resent));
                if p.resent && p.kind == Kind::Tcp {
                    // What tcpd announced after the first reply may have
                    // died with it (CONNECTED, ACCEPTABLE): restated.
                    if let Some(t) = self.socks.get_mut(&p.sock).and_then(Sock::tcp_mut) {
                        t.resync = true;
                    }
                }
                if repeated_connect {
                    // libsock sent the connect again after our restart,
                    // but the first one reached tcpd: it is in progress
                    // or done, and CONNECTED (repeated after the RESYNC
                    // of the re-attach) says when.
                    self.respond(p.session, &Response::Ok, &[]);
                } else if m.op == op::OK {
                    if let Some(s) = self.socks.get_mut(&p.sock) {
                        s.rec.local_ip = m.local_addr;
                        s.rec.local_port = m.local_port;
                        if p.op == op::LISTEN {
                            s.rec.state = sock_state::LISTEN;
                        } else if p.op == op::CONNECT && s.kind() == Kind::Tcp {
                            // In progress: CONNECTED or an error follows
                            // (or came already, for a repeated connect).
                            s.rec.peer_ip = m.remote_addr;
                            s.rec.peer_port = m.remote_port;
                            if s.rec.state != sock_state::CONNECTED {
                                s.rec.state = sock_state::BOUND;
                            }
                        } else if p.op == op::CONNECT {
                            s.rec.peer_ip = m.remote_addr;
                            s.rec.peer_port = m.remote_port;
                            s.rec.state = if m.remote_addr != 0 {
                                sock_state::CONNECTED
                            } else if m.local_port == 0 {
                                // Disconnecting dissolved an automatic
                                // binding, as on Linux.
                                sock_state::OPEN
                            } else {
                                sock_state::BOUND
                            };
                        } else {
                            s.rec.state = sock_state::BOUND;
                        }
                    }
                    self.sync_rec(p.sock);
                    self.respond(p.session, &Response::Ok, &[]);
                } else {
                    self.respond(p.session, &errno_resp(m.errno), &[]);
                }
            }
            op::BOUND => {
                if let Some(s) = self.socks.get_mut(&m.sock) {
                    s.rec.local_ip = m.local_addr;
                    s.rec.local_port = m.local_port;
                    if s.rec.state == sock_state::OPEN {
                        s.rec.state = sock_state::BOUND;
                    }
                }
                self.sync_rec(m.sock);
            }
            op::SOCK_ERROR => {
                if let Some(s) = self.socks.get(&m.sock) {
                    if let Some(mem) = &s.mem {
                        let mut wake = mem.set_error(m.errno);
                        if s.kind() == Kind::Tcp {
                            wake |= mem.set_state(sstate::RESET);
                        }
                        s.wake(wake);
                    }
                    self.count(c::SOCK_ERRORS, 1);
                }
            }
            op::CONNECTED => {
                if let Some(s) = self.socks.get_mut(&m.sock) {
                    s.rec.local_ip = m.local_addr;
                    s.rec.local_port = m.local_port;
                    s.rec.peer_ip = m.remote_addr;
                    s.rec.peer_port = m.remote_port;
                    s.rec.state = sock_state::CONNECTED;
                    if let (true, Some(t)) = (m.value > 0, s.tcp_mut()) {
                        t.mss = m.value.min(65000) as u32;
                    }
                    if let Some(mem) = &s.mem {
                        s.wake(mem.set_state(sstate::CONNECTED));
                    }
                }
                self.sync_rec(m.sock);
            }
            op::ACCEPTABLE => {
                let claimed = self.claimed.contains(&m.value);
                match self.socks.get_mut(&m.sock) {
                    Some(Sock {
                        rec,
                        mem,
                        efd,
                        proto: Proto::Tcp(t),
                        ..
                    }) if rec.state == sock_state::LISTEN => {
                        // Announced again (see `reannounce`): queued or
                        // accepted already.
                        let repeat = claimed
                            || t.accept_q.iter().any(|q| q.0 == m.value)
                            || t.reannounce
                                .as_ref()
                                .is_some_and(|(_, taken)| taken.contains(&m.value));
                        if !repeat {
                            t.accept_q.push_back((
                                m.value,
                                Addr {
                                    ip: m.local_addr,
                                    port: m.local_port,
                                },
                                Addr {
                                    ip: m.remote_addr,
                                    port: m.remote_port,
                                },
                            ));
                            if let Some(mem) = mem {
                                wake(efd, mem.notify(wait::RX));
                            }
                        }
                    }
                    // The listener is gone: so is the connection.
                    _ => self.tcp_ctl(op::ABORT, 0, m.value, 0),
                }
            }
            op::EOF => {
                if let Some(Sock {
                    mem,
                    efd,
                    proto: Proto::Tcp(t),
                    ..
                }) = self.socks.get_mut(&m.sock)
                {
                    // The stream ends at `value`: bytes before it that we
                    // lack (delivered to a sockd that died) come first;
                    // tcpd says EOF again after delivering them anew.
                    let missing = (m.value as u32).wrapping_sub(t.rx_next as u32) as i32 > 0;
                    if missing {
                        t.resync = true;
                    } else if t.rx_hold.is_empty() {
                        if let Some(mem) = mem {
                            wake(efd, mem.set_state(sstate::EOF));
                        }
                    } else {
                        t.eof_pending = true;
                    }
                }
            }
            op::SEND_CREDIT => {
                let cap = self.tcp_credit;
                let mut resent = false;
                if let Some(s) = self.socks.get_mut(&m.sock) {
                    if let Some(conn) = s.rec.accepted_conn() {
                        // tcpd speaks of this socket: it attached it.
                        s.rec.set_accepted_conn(None);
                        self.claimed.remove(&conn);
                        self.table.update(s.slot, s.rec);
                    }
                    if let Sock {
                        mem: Some(mem),
                        efd,
                        proto: Proto::Tcp(t),
                        ..
                    } = s
                    {
                        let SendCredit {
                            freed,
                            taken: taken32,
                        } = SendCredit::unpack(m.value);
                        let consumed = mem.tx_consumed();
                        // Where tcpd is, between what the ring still
                        // holds and what the application wrote (it can be
                        // past `tx_sent` after our own restart).
                        let ahead = u64::from(taken32.wrapping_sub(consumed as u32));
                        if ahead <= mem.tx_queued() {
                            let taken = consumed + ahead;
                            if ahead > 0 {
                                wake(efd, mem.consume_send_bytes(ahead as usize));
                            }
                            if t.tx_sent < taken {
                                t.tx_sent = taken;
                            }
                            // The answer to a SYNC covers everything sent
                            // before it: what tcpd lacks was lost.
                            if m.flags & ctl_flags::SYNC != 0 && taken < t.sync_sent {
                                t.tx_sent = taken;
                                resent = true;
                            }
                        }
                        let held = u64::from((t.tx_sent as u32).wrapping_sub(freed));
                        if held <= cap {
                            t.credit = cap - held;
                        }
                    }
                }
                if resent {
                    self.count(c::TX_RESENDS, 1);
                }
            }
            op::CLOSED if self.socks.get(&m.sock).is_some_and(|s| s.closing) => {
                self.closes.remove(&m.sock);
                if let Some(s) = self.socks.remove(&m.sock) {
                    self.table.remove(s.slot);
                    self.count(c::SOCKETS_CLOSED, 1);
                }
            }
            op::CLOSED => {
                self.closes.remove(&m.sock);
                // tcpd forgot a socket the application still has: if its
                // SOCK_ERROR or EOF died with a tcpd, the application
                // would wait forever, so the end is shown here.
                if let Some(s) = self.socks.get(&m.sock) {
                    let listening = s.rec.state == sock_state::LISTEN;
                    let eof_pending = s.tcp().is_some_and(|t| t.eof_pending);
                    if let (Some(mem), false, false, Kind::Tcp) =
                        (&s.mem, listening, eof_pending, s.kind())
                    {
                        let st = mem.hdr().state.load(Acquire);
                        if st & (sstate::EOF | sstate::RESET) == 0 {
                            let wake = if st & sstate::CONNECTED != 0 {
                                mem.set_state(sstate::EOF)
                            } else {
                                mem.set_error(libc::ECONNREFUSED) | mem.set_state(sstate::RESET)
                            };
                            s.wake(wake);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
