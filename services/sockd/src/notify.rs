//! What the transports tell sockd: replies to requests, and TCP's and
//! UDP's notifications (accept queue, connected, end of stream, credits,
//! errors, closed).

use super::*;

impl Sockd<'_> {
    pub(crate) fn on_ctl(&mut self, m: L4Ctl) {
        // Whatever a transport said of a socket, it gets a look.
        self.activate(m.sock);
        match m.op {
            op::OK | op::ERROR => self.on_reply(m),
            op::BOUND => {
                if let Some(s) = self.socks.get_mut(&m.sock) {
                    s.rec.set_local(m.local_addr);
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
                    self.stats.add(Stat::SockErrors, 1);
                }
            }
            op::CONNECTED => {
                if let Some(s) = self.socks.get_mut(&m.sock) {
                    s.rec.set_local(m.local_addr);
                    s.rec.local_port = m.local_port;
                    s.rec.set_peer(m.remote_addr);
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
            op::ACCEPTABLE => self.on_acceptable(m),
            op::EOF => self.on_eof(m),
            op::SEND_CREDIT => self.on_send_credit(m),
            op::CLOSED if self.socks.get(&m.sock).is_some_and(|s| s.closing) => {
                self.closes.remove(&m.sock);
                self.drop_sock(m.sock);
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

    /// A reply to a request sockd made on behalf of an application (matched by request number and socket).
    fn on_reply(&mut self, m: L4Ctl) {
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
                t.stream.request_resync();
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
                s.rec.set_local(m.local_addr);
                s.rec.local_port = m.local_port;
                if p.op == op::LISTEN {
                    s.rec.state = sock_state::LISTEN;
                    self.listeners.insert(p.sock);
                    // From now on its readiness is the count.
                    s.publish_accepts();
                } else if p.op == op::CONNECT && s.kind() == Kind::Tcp {
                    // In progress: CONNECTED or an error follows
                    // (or came already, for a repeated connect).
                    s.rec.set_peer(m.remote_addr);
                    s.rec.peer_port = m.remote_port;
                    if s.rec.state != sock_state::CONNECTED {
                        s.rec.state = sock_state::BOUND;
                    }
                } else if p.op == op::CONNECT {
                    s.rec.set_peer(m.remote_addr);
                    s.rec.peer_port = m.remote_port;
                    s.rec.state = if !strata_ipc::addrs::is_any(m.remote_addr) {
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

    /// tcpd has an established connection for a listener: queued for accept, unless it is a repeat.
    fn on_acceptable(&mut self, m: L4Ctl) {
        let claimed = self.claimed.contains(&m.value);
        match self.socks.get_mut(&m.sock) {
            Some(Sock {
                rec,
                mem,
                kick_end,
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
                        mem.set_accept_ready(t.accept_q.len());
                        wake(kick_end, mem.notify(wait::RX));
                    }
                }
            }
            // The listener is gone: so is the connection.
            _ => self.tcp_ctl(op::ABORT, 0, m.value, 0),
        }
    }

    /// The peer ended the stream.
    fn on_eof(&mut self, m: L4Ctl) {
        if let Some(Sock {
            mem,
            kick_end,
            proto: Proto::Tcp(t),
            ..
        }) = self.socks.get_mut(&m.sock)
        {
            // The stream ends at `value`. Bytes before it that we
            // lack (delivered to a sockd that died) are asked for
            // again; tcpd says EOF again after delivering them.
            if t.stream.eof(m.value as u32) {
                if t.rx_hold.is_empty() {
                    if let Some(mem) = mem {
                        wake(kick_end, mem.set_state(sstate::EOF));
                    }
                } else {
                    t.eof_pending = true;
                }
            }
        }
    }

    /// tcpd's send state: what it took and what left its buffer.
    fn on_send_credit(&mut self, m: L4Ctl) {
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
                kick_end,
                proto: Proto::Tcp(t),
                ..
            } = s
            {
                let got = t.stream.send_credit(
                    SendCredit::unpack(m.value),
                    m.flags & ctl_flags::SYNC != 0,
                    mem.tx_consumed(),
                    mem.tx_queued(),
                );
                if got.consume > 0 {
                    wake(kick_end, mem.consume_send_bytes(got.consume as usize));
                }
                resent = got.resent;
                self.charges
                    .settle(s.rec.uid, &mut t.charged, t.stream.held());
            }
        }
        if resent {
            self.stats.add(Stat::TxResends, 1);
        }
    }
}
