//! sockd: the socket server, the stack's "system call boundary".
//!
//! Applications (libsock) hold a session on a seqpacket Unix socket and
//! make socket calls as request/response messages on it. Each socket's
//! data moves through shared memory the application created (two rings
//! and a header, `strata_ipc::sockring`), which sockd maps after checking
//! it. Payload crosses the boundary with exactly one copy each way: from
//! the application's ring into a pool buffer on send, from a pool buffer
//! into the application's ring on receive. The socket table lives in
//! sockd's arena, so a restarted sockd keeps every socket and waits for
//! its application to re-attach.

mod wire;

use nix::sys::socket::{
    accept4, bind, getsockopt, listen, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    UnixAddr,
};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use strata_ipc::handle::flags;
use strata_ipc::l4::{ctl_flags, op, L4Ctl, SendMeta, SEND_META_LEN};
use strata_ipc::sockring::{kick, state as sstate, SockMem, HDR_LEN};
use strata_ipc::socktable::{sock_state, SockRec, SockTable};
use strata_ipc::{service, Buffers, Handle, LayerId, Service, BUDGET, HEADROOM};
use strata_proto::sock::{Addr, Kind, Request, Response, SockOpt, SOCKET_FILE, VERSION};
use wire::Recv;

/// Largest socket memory we map for one socket.
const MAX_SOCK_MEM: usize = HDR_LEN + 2 * (16 << 20);
/// How long a transport has to answer a bind or connect.
const CTL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a socket found in the table after a restart waits for its
/// application to re-attach before it is closed.
const REATTACH_GRACE: Duration = Duration::from_secs(10);
/// Largest UDP payload (65535 - 20 - 8).
const MAX_UDP: usize = 65507;

mod c {
    pub const SESSIONS_OPENED: usize = 0;
    pub const SESSIONS_CLOSED: usize = 1;
    pub const SOCKETS_OPENED: usize = 2;
    pub const SOCKETS_CLOSED: usize = 3;
    pub const TX_DGRAMS: usize = 4;
    pub const TX_COPY_BYTES: usize = 5;
    pub const RX_DGRAMS: usize = 6;
    pub const RX_COPY_BYTES: usize = 7;
    pub const RX_DROP_APP_SLOW: usize = 8;
    pub const RX_DROP_NO_SOCKET: usize = 9;
    pub const TX_WAIT_NO_BUFFER: usize = 10;
    pub const BAD_REQUESTS: usize = 11;
    pub const BAD_RINGS: usize = 12;
    pub const CTL_TIMEOUTS: usize = 13;
    pub const REATTACHED: usize = 14;
    pub const ABANDONED: usize = 15;
    pub const TX_DROP_TOO_BIG: usize = 16;
    pub const TX_DROP_NO_DEST: usize = 17;
    pub const SOCK_ERRORS: usize = 18;
    pub const NAMES: [&str; 19] = [
        "sessions_opened",
        "sessions_closed",
        "sockets_opened",
        "sockets_closed",
        "tx_datagrams",
        "tx_copy_bytes",
        "rx_datagrams",
        "rx_copy_bytes",
        "rx_drop_app_slow",
        "rx_drop_no_socket",
        "tx_wait_no_buffer",
        "bad_requests",
        "bad_rings",
        "ctl_timeouts",
        "reattached",
        "abandoned",
        "tx_drop_too_big",
        "tx_drop_no_destination",
        "socket_errors",
    ];
}

struct Session {
    fd: OwnedFd,
    pid: u32,
    uid: u32,
}

struct Sock {
    slot: usize,
    kind: Kind,
    session: Option<u64>,
    mem: Option<SockMem>,
    efd: Option<OwnedFd>,
    rec: SockRec,
    detached_since: Option<Instant>,
    /// A bad record was seen: the application broke its own ring.
    broken: bool,
}

struct Pending {
    session: u64,
    sock: u32,
    op: u32,
    deadline: Instant,
}

struct Sockd<'a> {
    svc: &'a Service,
    table: SockTable,
    sessions: HashMap<u64, Session>,
    socks: HashMap<u32, Sock>,
    pending: HashMap<u32, Pending>,
    next_session: u64,
    next_req: u32,
    /// Control messages and data for udpd, pushed once per turn.
    to_udp: Vec<Handle>,
    wake_fd: RawFd,
}

fn errno_resp(e: i32) -> Response {
    Response::Error { errno: e }
}

impl<'a> Sockd<'a> {
    fn count(&self, i: usize, v: u64) {
        self.svc.fabric.count(self.svc.me, i, v);
    }

    fn respond(&mut self, sid: u64, r: &Response, fds: &[RawFd]) {
        let failed = match self.sessions.get(&sid) {
            Some(s) => wire::send(&s.fd, &r.encode(), fds).is_err(),
            None => false,
        };
        if failed {
            self.close_session(sid);
        }
    }

    fn sync_rec(&self, id: u32) {
        if let Some(s) = self.socks.get(&id) {
            self.table.update(s.slot, s.rec);
        }
    }

    fn send_ctl(&mut self, m: L4Ctl) -> bool {
        let mut pool = self.svc.fabric.pool(self.svc.me);
        match m.to_handle(&mut pool) {
            Some(h) => {
                self.to_udp.push(h);
                true
            }
            None => false,
        }
    }

    fn request_transport(&mut self, sid: u64, id: u32, mut m: L4Ctl) {
        self.next_req = self.next_req.wrapping_add(1).max(1);
        m.req = self.next_req;
        m.sock = id;
        if !self.send_ctl(m) {
            self.respond(sid, &errno_resp(libc::ENOBUFS), &[]);
            return;
        }
        self.pending.insert(
            m.req,
            Pending {
                session: sid,
                sock: id,
                op: m.op,
                deadline: Instant::now() + CTL_TIMEOUT,
            },
        );
    }

    fn close_sock(&mut self, id: u32) {
        if let Some(s) = self.socks.remove(&id) {
            self.table.remove(s.slot);
            if let Some(m) = &s.mem {
                m.set_state(sstate::CLOSED);
            }
            if s.kind == Kind::Udp && s.rec.state != sock_state::OPEN {
                self.send_ctl(L4Ctl {
                    op: op::CLOSE,
                    sock: id,
                    ..Default::default()
                });
            }
            self.count(c::SOCKETS_CLOSED, 1);
        }
    }

    fn close_session(&mut self, sid: u64) {
        if self.sessions.remove(&sid).is_none() {
            return;
        }
        let ids: Vec<u32> = self
            .socks
            .iter()
            .filter(|(_, s)| s.session == Some(sid))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.close_sock(id);
        }
        self.pending.retain(|_, p| p.session != sid);
        self.count(c::SESSIONS_CLOSED, 1);
    }

    fn accept_sessions(&mut self, listener: &OwnedFd) {
        loop {
            let fd = match accept4(
                listener.as_raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
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
    fn own(&self, sid: u64, id: u32) -> Option<&Sock> {
        self.socks.get(&id).filter(|s| s.session == Some(sid))
    }

    fn handle(&mut self, sid: u64, req: Request, mut fds: Vec<OwnedFd>) {
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
                if kind == Kind::Tcp {
                    // The TCP data path arrives with tcpd.
                    errno_resp(libc::EPROTONOSUPPORT)
                } else if fds.len() != 2 {
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
                                proto: 17,
                                pid: s.pid,
                                uid: s.uid,
                                ..Default::default()
                            };
                            match self.table.insert(rec) {
                                None => errno_resp(libc::EMFILE),
                                Some(id) => {
                                    let slot = self.table.find(id).unwrap_or(0);
                                    let rec = self.table.get(slot).unwrap_or(rec);
                                    self.socks.insert(
                                        id,
                                        Sock {
                                            slot,
                                            kind,
                                            session: Some(sid),
                                            mem: Some(mem),
                                            efd: Some(efd),
                                            rec,
                                            detached_since: None,
                                            broken: false,
                                        },
                                    );
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
                    let reuse = s.rec.flags & 1 != 0;
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
                    let reuse = s.rec.flags & 1 != 0;
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
            Request::SetOption { id, opt } => match (self.own(sid, id).map(|s| s.kind), opt) {
                (None, _) => errno_resp(libc::EBADF),
                (Some(_), SockOpt::ReuseAddr(on)) => {
                    if let Some(s) = self.socks.get_mut(&id) {
                        if on {
                            s.rec.flags |= 1;
                        } else {
                            s.rec.flags &= !1;
                        }
                    }
                    self.sync_rec(id);
                    Response::Ok
                }
                (Some(Kind::Udp), _) => errno_resp(libc::ENOPROTOOPT),
                (Some(Kind::Tcp), _) => Response::Ok,
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
                    self.close_sock(id);
                    Response::Ok
                }
            }
            Request::Listen { id, .. } | Request::Accept { id } | Request::Shutdown { id, .. } => {
                match self.own(sid, id) {
                    None => errno_resp(libc::EBADF),
                    Some(_) => errno_resp(libc::EOPNOTSUPP),
                }
            }
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
                            s.mem = Some(mem);
                            s.efd = Some(efd);
                            s.session = Some(sid);
                            s.detached_since = None;
                            self.count(c::REATTACHED, 1);
                            Response::Ok
                        }
                    }
                }
            }
        };
        self.respond(sid, &r, &[]);
    }

    fn serve_sessions(&mut self) -> usize {
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

    fn on_ctl(&mut self, m: L4Ctl) {
        match m.op {
            op::OK | op::ERROR => {
                let Some(p) = self.pending.remove(&m.req) else {
                    return;
                };
                if m.op == op::OK {
                    if let Some(s) = self.socks.get_mut(&p.sock) {
                        s.rec.local_ip = m.local_addr;
                        s.rec.local_port = m.local_port;
                        if p.op == op::CONNECT {
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
                        if mem.set_error(m.errno) {
                            if let Some(e) = &s.efd {
                                kick(e);
                            }
                        }
                    }
                    self.count(c::SOCK_ERRORS, 1);
                }
            }
            _ => {}
        }
    }

    /// A datagram from udpd: copy its payload into the application's ring.
    fn deliver(&mut self, h: &Handle) {
        let f = &self.svc.fabric;
        let pool = f.pool(self.svc.me);
        let Some(s) = self.socks.get_mut(&h.sock) else {
            self.count(c::RX_DROP_NO_SOCKET, 1);
            return;
        };
        let (Some(mem), Ok(d)) = (&s.mem, pool.data(h)) else {
            // Detached (sockd restarted, the application not back yet):
            // the datagram is lost, as one in flight may be.
            self.count(c::RX_DROP_NO_SOCKET, 1);
            return;
        };
        let l4 = h.l4_off as usize;
        if d.len() < 20 || d.len() < l4 + 8 {
            self.count(c::RX_DROP_NO_SOCKET, 1);
            return;
        }
        let src = std::net::Ipv4Addr::new(d[12], d[13], d[14], d[15]);
        let sport = u16::from_be_bytes([d[l4], d[l4 + 1]]);
        let payload = &d[l4 + 8..];
        let (ok, wake) = mem.deliver_dgram(std::net::SocketAddrV4::new(src, sport), payload);
        let me = self.svc.me;
        if ok {
            f.count(me, c::RX_DGRAMS, 1);
            f.count(me, c::RX_COPY_BYTES, payload.len() as u64);
        } else {
            s.rec.drops = s.rec.drops.wrapping_add(1);
            f.count(me, c::RX_DROP_APP_SLOW, 1);
        }
        if wake {
            if let Some(e) = &s.efd {
                kick(e);
            }
        }
    }

    /// Moves what applications queued for sending into pool buffers for
    /// udpd, as far as the ring to udpd has room. Returns datagrams moved
    /// and whether something is still waiting.
    fn pump_tx(&mut self, room: usize) -> (usize, bool) {
        let f = &self.svc.fabric;
        let me = self.svc.me;
        let mut pool = f.pool(me);
        let mut moved = 0;
        let mut waiting = false;
        let mut broken = Vec::new();
        for (&id, s) in self.socks.iter_mut() {
            let Some(mem) = &s.mem else { continue };
            if s.broken {
                continue;
            }
            loop {
                if self.to_udp.len() >= room {
                    waiting = true;
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
                    f.count(me, c::TX_DROP_TOO_BIG, 1);
                    mem.consume_send(&rec);
                    continue;
                }
                if to_peer && s.rec.state != sock_state::CONNECTED {
                    f.count(me, c::TX_DROP_NO_DEST, 1);
                    mem.set_error(libc::EDESTADDRREQ);
                    mem.consume_send(&rec);
                    continue;
                }
                let Some(mut h) = pool.alloc(payload.len() + SEND_META_LEN) else {
                    f.count(me, c::TX_WAIT_NO_BUFFER, 1);
                    waiting = true;
                    break;
                };
                let meta = SendMeta {
                    addr: if to_peer {
                        0
                    } else {
                        u32::from(*rec.addr.ip())
                    },
                    port: if to_peer { 0 } else { rec.addr.port() },
                    reserved: 0,
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
                f.count(me, c::TX_DGRAMS, 1);
                f.count(me, c::TX_COPY_BYTES, payload.len() as u64);
                if mem.consume_send(&rec) {
                    if let Some(e) = &s.efd {
                        kick(e);
                    }
                }
                self.to_udp.push(h);
                moved += 1;
            }
        }
        for id in broken {
            self.count(c::BAD_RINGS, 1);
            if let Some(s) = self.socks.get_mut(&id) {
                s.broken = true;
                if let Some(m) = &s.mem {
                    m.set_error(libc::EIO);
                }
            }
        }
        (moved, waiting)
    }

    fn expire(&mut self, now: Instant) {
        let late: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&r, _)| r)
            .collect();
        for r in late {
            if let Some(p) = self.pending.remove(&r) {
                self.count(c::CTL_TIMEOUTS, 1);
                self.respond(p.session, &errno_resp(libc::ETIMEDOUT), &[]);
            }
        }
        let gone: Vec<u32> = self
            .socks
            .iter()
            .filter(|(_, s)| {
                s.detached_since
                    .is_some_and(|t| now.duration_since(t) > REATTACH_GRACE)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.count(c::ABANDONED, 1);
            self.close_sock(id);
        }
    }

    fn snapshot_queues(&mut self) {
        for s in self.socks.values_mut() {
            if let Some(m) = &s.mem {
                s.rec.recv_q = m.rx_queued().min(u32::MAX as u64) as u32;
                s.rec.send_q = m.tx_queued().min(u32::MAX as u64) as u32;
                self.table.update(s.slot, s.rec);
            }
        }
    }
}

fn listen_socket(instance: &str) -> std::io::Result<OwnedFd> {
    let path = strata_ipc::runtime::run_dir(instance).join(SOCKET_FILE);
    let _ = std::fs::remove_file(&path);
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &UnixAddr::new(&path)?)?;
    // Any local user may open sockets; SO_PEERCRED tells sockd who it is.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

fn main() {
    let svc = Service::start("sockd").unwrap_or_else(|e| service::die("sockd", &e));
    let f = &svc.fabric;
    let me = svc.me;
    f.register_counters(me, &c::NAMES);
    let listener = listen_socket(&svc.config.instance)
        .unwrap_or_else(|e| service::die("sockd", &format!("listen: {e}")));
    let mut d = Sockd {
        svc: &svc,
        table: f.sock_table(),
        sessions: HashMap::new(),
        socks: HashMap::new(),
        pending: HashMap::new(),
        next_session: 0,
        next_req: 0,
        to_udp: Vec::with_capacity(BUDGET * 4),
        wake_fd: f.wake_fd(me),
    };
    // Sockets from before a restart wait for their applications.
    let now = Instant::now();
    let found: Vec<(usize, SockRec)> = d.table.iter().collect();
    for (slot, rec) in &found {
        let kind = if rec.proto == 6 { Kind::Tcp } else { Kind::Udp };
        d.socks.insert(
            rec.id,
            Sock {
                slot: *slot,
                kind,
                session: None,
                mem: None,
                efd: None,
                rec: *rec,
                detached_since: Some(now),
                broken: false,
            },
        );
    }
    if !found.is_empty() {
        svc.log(&format!(
            "{} sockets waiting for their applications to re-attach",
            found.len()
        ));
    }
    let mut from_udp = f.consumer(LayerId::UDPD, me).expect("ring udpd->sockd");
    let mut to_udp = f.producer(me, LayerId::UDPD).expect("ring sockd->udpd");
    let mut from_tcp = f.consumer(LayerId::TCPD, me).expect("ring tcpd->sockd");
    let mut batch = [Handle::default(); BUDGET];
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut last_snapshot = Instant::now();
    svc.ready();
    loop {
        f.beat(me);
        let now = Instant::now();
        d.accept_sessions(&listener);
        let mut work = d.serve_sessions();

        let n = from_udp.pop(&mut batch);
        for h in &batch[..n] {
            if h.flags & flags::CTRL != 0 {
                let pool = f.pool(me);
                if let Ok(Some(m)) = L4Ctl::from_handle(&pool, h) {
                    d.on_ctl(m);
                }
            } else {
                d.deliver(h);
            }
            f.free(h);
        }
        work += n;
        // Nothing speaks TCP yet; free what arrives.
        let n = from_tcp.pop(&mut batch);
        for h in &batch[..n] {
            f.free(h);
        }

        let room = (to_udp.space() as usize).min(BUDGET * 4);
        let (moved, tx_waiting) = d.pump_tx(room);
        work += moved;
        if !d.to_udp.is_empty() {
            let k = to_udp.push(&d.to_udp);
            // What did not fit (control messages beyond the room) goes
            // next turn; keep order.
            d.to_udp.drain(..k);
        }
        d.expire(now);
        if now.duration_since(last_snapshot) > Duration::from_millis(100) {
            d.snapshot_queues();
            last_snapshot = now;
        }

        if work == 0 {
            pfds.clear();
            pfds.push(libc::pollfd {
                fd: -1,
                events: 0,
                revents: 0,
            });
            pfds.push(libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            for s in d.sessions.values() {
                pfds.push(libc::pollfd {
                    fd: s.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let tick = if tx_waiting || !d.to_udp.is_empty() {
                1
            } else {
                service::IDLE_TICK_MS
            };
            f.sleep_on(me, &mut pfds, tick, || {
                from_udp.is_empty() && from_tcp.is_empty()
            });
        }
    }
}
