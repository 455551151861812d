//! The UDP data path: datagrams from udpd into the application's ring,
//! and datagrams the application queued into pool buffers for udpd (the
//! one copy each way).

use super::*;

impl Sockd<'_> {
    /// A datagram from udpd: copy its payload into the application's ring.
    pub(crate) fn deliver(&mut self, h: &Handle) {
        let f = &self.svc.fabric;
        let pool = f.pool(self.svc.me);
        let Some(s) = self.socks.get_mut(&h.sock) else {
            self.stats.add(Stat::RxDropNoSocket, 1);
            return;
        };
        let (Some(mem), Ok(d)) = (&s.mem, pool.data(h)) else {
            // Detached (sockd restarted, the application not back yet):
            // the datagram is lost, as one in flight may be.
            self.stats.add(Stat::RxDropNoSocket, 1);
            return;
        };
        // The whole IPv4 or IPv6 datagram: the source from its header,
        // the port from the UDP header.
        let Some(src) = family::datagram_source(d, h.ethertype, h.l3_off.into(), h.l4_off.into())
        else {
            self.stats.add(Stat::RxDropNoSocket, 1);
            return;
        };
        let payload = &d[src.payload..];
        let from = std::net::SocketAddr::new(strata_ipc::addrs::to_ip(src.addr), src.port);
        let (ok, wake) = mem.deliver_dgram(from, payload);
        if ok {
            self.stats.add(Stat::RxDgrams, 1);
            self.stats.add(Stat::RxCopyBytes, payload.len() as u64);
        } else {
            s.rec.drops = s.rec.drops.wrapping_add(1);
            self.stats.add(Stat::RxDropAppSlow, 1);
        }
        s.wake(wake);
    }

    /// Moves what the applications of the UDP sockets `ids` queued for
    /// sending into pool buffers for udpd, as far as the ring to udpd has
    /// room (a socket that still has some gets another look next turn).
    /// Returns datagrams moved and whether something is still waiting.
    pub(crate) fn pump_tx(&mut self, ids: &[u32], room: usize) -> (usize, bool) {
        let f = &self.svc.fabric;
        let me = self.svc.me;
        let mut pool = f.pool(me);
        let mut moved = 0;
        let mut waiting = false;
        let mut broken = Vec::new();
        let mut closed = Vec::new();
        let mut again = Vec::new();
        for &id in ids {
            let Some(s) = self.socks.get_mut(&id) else {
                continue;
            };
            let Some(mem) = &s.mem else { continue };
            if s.broken {
                if s.closing {
                    closed.push(id);
                }
                continue;
            }
            loop {
                if self.to_udp.len() >= room {
                    waiting = true;
                    again.push(id);
                    break;
                }
                let rec = match mem.peek_send() {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        if mem.request_kick() {
                            continue;
                        }
                        break;
                    }
                    Err(_) => {
                        broken.push(id);
                        break;
                    }
                };
                let payload = mem.record_bytes(true, &rec);
                let to_peer = rec.addr.ip().is_unspecified();
                if payload.len() > MAX_UDP {
                    self.stats.add(Stat::TxDropTooBig, 1);
                    mem.consume_send(&rec);
                    continue;
                }
                if to_peer && s.rec.state != sock_state::CONNECTED {
                    self.stats.add(Stat::TxDropNoDest, 1);
                    mem.set_error(libc::EDESTADDRREQ);
                    mem.consume_send(&rec);
                    continue;
                }
                let to = strata_ipc::addrs::from_ip(rec.addr.ip());
                if let (false, Err(e)) = (to_peer, family::v6only_peer(to, s.rec.has(REC_V6ONLY))) {
                    // An IPv4 destination for an IPV6_V6ONLY socket
                    // (libsock refuses it before it gets here).
                    self.stats.add(Stat::TxDropNoDest, 1);
                    mem.set_error(e);
                    mem.consume_send(&rec);
                    continue;
                }
                let reserve = f.params().small_bufs / 4;
                if f.free_counts().0 < reserve && payload.len() + SEND_META_LEN < 1800 {
                    self.stats.add(Stat::TxWaitNoBuffer, 1);
                    waiting = true;
                    again.push(id);
                    break;
                }
                let Some(mut h) = pool.alloc(payload.len() + SEND_META_LEN) else {
                    self.stats.add(Stat::TxWaitNoBuffer, 1);
                    waiting = true;
                    again.push(id);
                    break;
                };
                let meta = SendMeta {
                    addr: if to_peer { 0 } else { to },
                    port: if to_peer { 0 } else { rec.addr.port() },
                };
                h.data_off = HEADROOM;
                h.data_len = (SEND_META_LEN + payload.len()) as u32;
                h.sock = id;
                h.l4proto = 17;
                if let Ok(d) = pool.data_mut(&h) {
                    d[..SEND_META_LEN].copy_from_slice(&meta.to_bytes());
                    // The one copy on the way out.
                    d[SEND_META_LEN..].copy_from_slice(payload);
                }
                self.stats.add(Stat::TxDgrams, 1);
                self.stats.add(Stat::TxCopyBytes, payload.len() as u64);
                s.wake(mem.consume_send(&rec));
                self.to_udp.push(h);
                moved += 1;
            }
            if s.closing && mem.tx_queued() == 0 {
                closed.push(id);
            }
        }
        for id in closed {
            // After its datagrams in `to_udp`, so udpd sends them first.
            self.close_sock(id);
        }
        for id in again {
            self.activate(id);
        }
        for id in broken {
            self.stats.add(Stat::BadRings, 1);
            if let Some(s) = self.socks.get_mut(&id) {
                s.broken = true;
                if let Some(m) = &s.mem {
                    m.set_error(libc::EIO);
                }
            }
        }
        (moved, waiting)
    }
}
