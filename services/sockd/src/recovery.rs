//! Recovery: request timeouts that wait while a transport (tcpd, udpd) is
//! hung or restarting, and requests sent again once it is back; noticing
//! a new tcpd instance and sending it again what it lost; and the queue
//! lengths kept in the socket table for `strata ss`.

use super::*;

impl Sockd<'_> {
    pub(crate) fn expire(&mut self, now: Instant) {
        let up = [
            (Kind::Tcp, self.transport_up(Kind::Tcp, now)),
            (Kind::Udp, self.transport_up(Kind::Udp, now)),
        ];
        let mut again = Vec::new();
        for p in self.pending.values_mut() {
            let Some(&(_, up)) = up.iter().find(|(k, _)| *k == p.kind) else {
                continue;
            };
            if !up {
                // The transport's restart, not the transport, is what the
                // request waits for.
                p.deadline = now + CTL_TIMEOUT;
            } else if !p.resent && now.duration_since(p.sent) > RESEND_AFTER {
                // Lost with a transport that died (reclaim empties the
                // rings it consumed) or in its last moments: the repeat
                // is harmless if the first took effect.
                p.resent = true;
                p.sent = now;
                again.push((p.kind, p.msg));
            }
        }
        for (kind, m) in again {
            self.send_ctl(
                kind,
                L4Ctl {
                    flags: m.flags | ctl_flags::REPEAT,
                    ..m
                },
            );
        }
        let again: Vec<(u32, u32)> = self
            .closes
            .iter()
            .filter(|(_, e)| now.duration_since(e.2) > RESEND_AFTER)
            .map(|(&id, e)| (id, e.0))
            .collect();
        for (id, o) in again {
            self.tcp_ctl(o, id, 0, 0);
        }
        self.closes
            .retain(|_, e| now.duration_since(e.1) < CLOSE_CONFIRM_WINDOW);
        let late: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&r, _)| r)
            .collect();
        for r in late {
            if let Some(p) = self.pending.remove(&r) {
                self.stats.add(Stat::CtlTimeouts, 1);
                self.respond(p.session, &errno_resp(libc::ETIMEDOUT), &[]);
            }
        }
        // (One look, not one per socket per turn: they were all found at
        // once, when sockd started.)
        match &self.unclaimed {
            Some((found, _)) if now.duration_since(*found) > REATTACH_GRACE => {}
            _ => return,
        }
        let Some((_, ids)) = self.unclaimed.take() else {
            return;
        };
        for id in ids {
            if !self.socks.get(&id).is_some_and(|s| s.detached) {
                continue;
            }
            self.stats.add(Stat::Abandoned, 1);
            self.close_sock(id);
        }
    }

    /// Whether `kind`'s transport layer runs and beats: a hung one (no
    /// heartbeat) is as good as dead, as the launcher kills it in a while
    /// and its successor gets the request again.
    fn transport_up(&mut self, kind: Kind, now: Instant) -> bool {
        let (layer, beat) = match kind {
            Kind::Tcp => (LayerId::TCPD, &mut self.tcpd_beat),
            Kind::Udp => (LayerId::UDPD, &mut self.udpd_beat),
        };
        let ctl = self.svc.fabric.ctl(layer);
        let b = ctl.heartbeat.load(Relaxed);
        if b != beat.0 {
            *beat = (b, now);
        }
        ctl.pid.load(Acquire) != 0 && now.duration_since(beat.1) < TRANSPORT_STALL
    }

    /// Checked every turn (two atomic loads): a new tcpd instance lost
    /// what sat in its input ring and what it had not pushed to us, so
    /// every request still unanswered goes again, and every TCP socket
    /// has tcpd restate what we may have missed.
    pub(crate) fn watch_tcpd(&mut self) {
        let ctl = self.svc.fabric.ctl(LayerId::TCPD);
        let pid = ctl.pid.load(Acquire);
        if pid == 0 {
            return;
        }
        let started = self
            .svc
            .fabric
            .launch(LayerId::TCPD)
            .started_ms
            .load(Relaxed);
        let now_seen = (pid, started);
        if now_seen == self.tcpd_seen {
            return;
        }
        let first = self.tcpd_seen.0 == 0;
        self.tcpd_seen = now_seen;
        if !first {
            self.tcpd_restarted();
        }
    }

    pub(crate) fn tcpd_restarted(&mut self) {
        let now = Instant::now();
        self.svc
            .log("tcpd restarted: sending unanswered requests again");
        self.stats.add(Stat::TcpdRestarts, 1);
        // Repeats first: an ATTACH and what a request set up must be in
        // place before the RESYNCs (pushed by the next `pump_tcp`).
        let mut again: Vec<(u32, L4Ctl)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.kind == Kind::Tcp)
            .map(|(&r, p)| (r, p.msg))
            .collect();
        again.sort_by_key(|(r, _)| *r);
        for (r, m) in again {
            if let Some(p) = self.pending.get_mut(&r) {
                p.resent = true;
                p.sent = now;
                p.deadline = now + CTL_TIMEOUT;
            }
            self.send_ctl(
                Kind::Tcp,
                L4Ctl {
                    flags: m.flags | ctl_flags::REPEAT,
                    ..m
                },
            );
        }
        let closes: Vec<(u32, u32)> = self.closes.iter().map(|(&id, e)| (id, e.0)).collect();
        for (id, o) in closes {
            self.tcp_ctl(o, id, 0, 0);
        }
        let mut ctl: Vec<(u32, u32, u64, u32)> = Vec::new();
        for (&id, s) in self.socks.iter_mut() {
            let Sock {
                mem: Some(_),
                rec,
                proto: Proto::Tcp(t),
                ..
            } = s
            else {
                continue;
            };
            if let Some(conn) = rec.accepted_conn() {
                // Its ATTACH may have died in tcpd's ring (tcpd ignores a
                // repeat); what the listener hears again of it is ours.
                self.claimed.insert(conn);
                ctl.push((op::ATTACH, id, conn, 0));
            }
            for (name, v) in t.opts.set_ones() {
                ctl.push((op::SETOPT, id, v, name));
            }
            if t.shut_sent.read {
                ctl.push((op::SHUTDOWN, id, 0, 0));
            }
            if t.shut_sent.write {
                ctl.push((op::SHUTDOWN, id, 1, 0));
            }
            if rec.state != sock_state::OPEN {
                t.stream.request_resync();
            }
        }
        for (o, id, v, fl) in ctl {
            self.tcp_ctl(o, id, v, fl);
        }
        // Every TCP socket gets a look (its RESYNC goes at once).
        let tcp: Vec<u32> = self
            .socks
            .iter()
            .filter(|(_, s)| s.kind() == Kind::Tcp)
            .map(|(&id, _)| id)
            .collect();
        for id in tcp {
            self.activate(id);
        }
    }
}
