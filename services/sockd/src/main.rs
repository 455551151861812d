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
use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::{Duration, Instant};
use strata_ipc::handle::flags;
use strata_ipc::l4::{
    ctl_flags, op, tcp_opt, L4Ctl, ReadCredit, SendCredit, SendMeta, SEND_META_LEN,
};
use strata_ipc::sockring::{kick, state as sstate, wait, SockMem, HDR_LEN};
use strata_ipc::socktable::{sock_state, SockRec, SockTable};
use strata_ipc::{service, Buffers, Handle, LayerId, Service, BUDGET, HEADROOM};
use strata_proto::sock::{Addr, How, Kind, Request, Response, SockOpt, SOCKET_FILE, VERSION};
use wire::Recv;

/// Largest socket memory we map for one socket.
const MAX_SOCK_MEM: usize = HDR_LEN + 2 * (16 << 20);
/// How long a transport has to answer a bind or connect.
const CTL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a socket found in the table after a restart waits for its
/// application to re-attach before it is closed.
const REATTACH_GRACE: Duration = Duration::from_secs(10);
/// How often sockd restates each TCP socket's receive state to tcpd and
/// asks for its send state.
const SYNC_EVERY: Duration = Duration::from_millis(200);
/// How long after asking tcpd to announce a listener's accept queue
/// again its repeats may still arrive (tcpd answers at once; this is
/// slack for a loaded machine).
const REANNOUNCE_WINDOW: Duration = Duration::from_secs(5);
/// How long a request to tcpd may go unanswered before it is sent again
/// (tcpd answers at once; one lost without a restart is not expected, but
/// a repeat costs nothing).
const RESEND_AFTER: Duration = Duration::from_secs(1);
/// How long sockd keeps sending a CLOSE or ABORT again until tcpd
/// confirms it with CLOSED.
const CLOSE_CONFIRM_WINDOW: Duration = Duration::from_secs(30);
/// tcpd's heartbeat standing still this long: its requests' timeouts
/// wait (tcpd beats at least every 100 ms when idle).
const TCPD_STALL: Duration = Duration::from_millis(500);
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
    pub const RX_REPEATS: usize = 19;
    pub const RX_GAPS: usize = 20;
    pub const TX_RESENDS: usize = 21;
    pub const TCPD_RESTARTS: usize = 22;
    pub const NAMES: [&str; 23] = [
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
        "rx_tcp_repeats",
        "rx_tcp_gaps",
        "tx_tcp_resends",
        "tcpd_restarts_seen",
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
    /// TCP: bytes tcpd will still take (its send credit).
    credit: u64,
    /// TCP: the application's receive-ring consumer index last reported
    /// to tcpd as read credit.
    rx_seen: u64,
    /// TCP: when to next tell tcpd the receive state unasked and ask for
    /// its send state (credits lost when a layer died come back so).
    sync_at: Instant,
    /// TCP: the receive ring's producer index last reported to tcpd.
    wr_seen: u64,
    /// TCP: stream offset of the next byte expected from tcpd (what is in
    /// the ring plus what `rx_hold` holds): earlier bytes are ones we
    /// have, later ones mean something was lost.
    rx_next: u64,
    /// TCP: ask tcpd to deliver again from what the ring has (after our
    /// restart, or a gap).
    resync: bool,
    /// TCP: stream offset of the next byte to hand tcpd. The ring keeps
    /// everything from what tcpd confirmed taking, so that what a dying
    /// tcpd lost can be sent again.
    tx_sent: u64,
    /// TCP: `tx_sent` when the last SYNC went out: tcpd's answer must
    /// account for all of it, or the rest was lost.
    sync_sent: u64,
    /// TCP listener: established connections waiting for accept
    /// (tcpd's id, local, peer).
    accept_q: VecDeque<(u64, Addr, Addr)>,
    /// TCP listener: since the RESYNC that asks tcpd to announce its
    /// accept queue again (our copy died with the last sockd), the
    /// connections accepted meanwhile, whose repeated ACCEPTABLE must not
    /// queue them twice.
    reannounce: Option<(Instant, Vec<u64>)>,
    /// Taken back from a sockd that died: a request the application
    /// repeats may already have reached the transport.
    reattached: bool,
    /// TCP: received data not yet in the ring (handle, bytes written).
    rx_hold: VecDeque<(Handle, usize)>,
    /// TCP: the peer's FIN, to show once `rx_hold` is empty.
    eof_pending: bool,
    /// The application closed it; once the send ring is drained, tcpd
    /// gets CLOSE (TCP) or it is closed (UDP).
    closing: bool,
    /// TCP: a write shutdown waits for the send ring to drain.
    shut_wr: bool,
    /// TCP: segment size, to cut the stream into one-segment buffers.
    mss: u32,
    /// TCP: the SHUTDOWNs sent (bit 0 read, bit 1 write), sent again to a
    /// restarted tcpd (a repeat is harmless).
    shut_sent: u8,
    /// TCP: the options set (NODELAY, KEEPALIVE, CONGESTION), likewise.
    opts: [Option<u64>; 3],
}

impl Sock {
    fn new(slot: usize, kind: Kind, rec: SockRec, credit: u64) -> Sock {
        Sock {
            slot,
            kind,
            session: None,
            mem: None,
            efd: None,
            rec,
            detached_since: None,
            broken: false,
            credit,
            rx_seen: 0,
            sync_at: Instant::now(),
            wr_seen: 0,
            rx_next: 0,
            resync: false,
            tx_sent: 0,
            sync_sent: 0,
            accept_q: VecDeque::new(),
            reannounce: None,
            reattached: false,
            rx_hold: VecDeque::new(),
            eof_pending: false,
            closing: false,
            shut_wr: false,
            mss: 1448,
            shut_sent: 0,
            opts: [None; 3],
        }
    }

    fn wake(&self, yes: bool) {
        if yes {
            if let Some(e) = &self.efd {
                kick(e);
            }
        }
    }
}

struct Pending {
    session: u64,
    sock: u32,
    op: u32,
    deadline: Instant,
    /// The request itself, to send again when tcpd restarted (it may have
    /// died with it in its ring, or with the reply unsent).
    msg: L4Ctl,
    kind: Kind,
    /// When it was last sent.
    sent: Instant,
    /// Sent more than once: its reply may be the first one's.
    resent: bool,
}

struct Sockd<'a> {
    svc: &'a Service,
    table: SockTable,
    sessions: HashMap<u64, Session>,
    socks: HashMap<u32, Sock>,
    pending: HashMap<u32, Pending>,
    next_session: u64,
    next_req: u32,
    /// Connections whose ATTACH a re-attach sent again (see
    /// `SockRec::accepted_conn`): an ACCEPTABLE for one of them is a
    /// repeat, not a connection to accept.
    claimed: HashSet<u64>,
    /// Control messages and data for udpd, pushed once per turn.
    to_udp: Vec<Handle>,
    /// The same for tcpd.
    to_tcp: Vec<Handle>,
    /// tcpd's initial send credit per connection.
    tcp_credit: u64,
    wake_fd: RawFd,
    /// CLOSE and ABORT sent to tcpd for sockets we have forgotten, until
    /// tcpd confirms with CLOSED: sent again if it restarted meanwhile.
    /// (op, first sent, last sent.)
    closes: HashMap<u32, (u32, Instant, Instant)>,
    /// tcpd's instance (pid, start time) last seen running: a new one
    /// lost the requests in its ring and the notifications it had not
    /// pushed.
    tcpd_seen: (u32, u64),
    /// tcpd's heartbeat last seen, and when it last changed.
    tcpd_beat: (u64, Instant),
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

    fn send_ctl(&mut self, kind: Kind, m: L4Ctl) -> bool {
        if kind == Kind::Tcp && m.sock != 0 && matches!(m.op, op::CLOSE | op::ABORT) {
            let now = Instant::now();
            let e = self.closes.entry(m.sock).or_insert((m.op, now, now));
            e.2 = now;
        }
        let mut pool = self.svc.fabric.pool(self.svc.me);
        match m.to_handle(&mut pool) {
            Some(h) => {
                match kind {
                    Kind::Udp => self.to_udp.push(h),
                    Kind::Tcp => self.to_tcp.push(h),
                }
                true
            }
            None => false,
        }
    }

    fn tcp_ctl(&mut self, op: u32, sock: u32, value: u64, flags: u32) {
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

    fn request_transport(&mut self, sid: u64, id: u32, mut m: L4Ctl) {
        self.next_req = self.next_req.wrapping_add(1).max(1);
        m.req = self.next_req;
        m.sock = id;
        let kind = self.socks.get(&id).map_or(Kind::Udp, |s| s.kind);
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

    fn close_sock(&mut self, id: u32) {
        if let Some(s) = self.socks.remove(&id) {
            if let Some(conn) = s.rec.accepted_conn() {
                self.claimed.remove(&conn);
            }
            self.table.remove(s.slot);
            if let Some(m) = &s.mem {
                m.set_state(sstate::CLOSED);
            }
            if s.rec.state != sock_state::OPEN || s.kind == Kind::Tcp {
                self.send_ctl(
                    s.kind,
                    L4Ctl {
                        op: op::CLOSE,
                        sock: id,
                        ..Default::default()
                    },
                );
            }
            for (h, _) in &s.rx_hold {
                self.svc.fabric.free(h);
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
            self.app_close(id);
        }
        self.pending.retain(|_, p| p.session != sid);
        self.count(c::SESSIONS_CLOSED, 1);
    }

    /// The application closed `id` (or its process ended). UDP: gone at
    /// once. TCP, as Linux: unread data means RST; otherwise what the
    /// application queued is still sent, then FIN.
    fn app_close(&mut self, id: u32) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        let udp_queued =
            s.kind == Kind::Udp && !s.broken && s.mem.as_ref().is_some_and(|m| m.tx_queued() > 0);
        if udp_queued {
            // Datagrams sent before the close still go, as on Linux (a
            // reply sent just before closing, typically): `pump_tx`
            // closes the socket once they have.
            s.closing = true;
            s.session = None;
            return;
        }
        if s.kind == Kind::Udp || s.rec.state != sock_state::CONNECTED {
            self.close_sock(id);
            return;
        }
        let unread = !s.rx_hold.is_empty() || s.mem.as_ref().is_some_and(|m| m.rx_queued() > 0);
        if unread {
            self.tcp_ctl(op::ABORT, id, 0, 0);
            if let Some(s) = self.socks.remove(&id) {
                self.table.remove(s.slot);
                for (h, _) in &s.rx_hold {
                    self.svc.fabric.free(h);
                }
                self.count(c::SOCKETS_CLOSED, 1);
            }
            return;
        }
        s.closing = true;
        s.session = None;
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
                (Some(Kind::Tcp), opt) => {
                    let (name, v) = match opt {
                        SockOpt::NoDelay(on) => (tcp_opt::NODELAY, on as u64),
                        SockOpt::KeepAlive(on) => (tcp_opt::KEEPALIVE, on as u64),
                        SockOpt::Congestion(a) => (tcp_opt::CONGESTION, a as u64),
                        SockOpt::ReuseAddr(_) => unreachable!("handled above"),
                    };
                    if let Some(s) = self.socks.get_mut(&id) {
                        s.opts[name as usize - 1] = Some(v);
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
                match self.own(sid, id).map(|s| (s.kind, s.rec.state)) {
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
            Request::Shutdown { id, how } => match self.own(sid, id).map(|s| s.kind) {
                None => errno_resp(libc::EBADF),
                Some(Kind::Udp) => errno_resp(libc::EOPNOTSUPP),
                Some(Kind::Tcp) => {
                    if matches!(how, How::Read | How::Both) {
                        if let Some(s) = self.socks.get_mut(&id) {
                            s.shut_sent |= 1;
                        }
                        self.tcp_ctl(op::SHUTDOWN, id, 0, 0);
                    }
                    if matches!(how, How::Write | How::Both) {
                        if let Some(s) = self.socks.get_mut(&id) {
                            s.shut_wr = true;
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
                            s.rx_next = mem.rx_written();
                            s.tx_sent = mem.tx_consumed();
                            s.sync_sent = s.tx_sent;
                            s.rx_seen = u64::MAX;
                            s.resync = true;
                            s.sync_at = Instant::now();
                            s.mem = Some(mem);
                            s.efd = Some(efd);
                            s.session = Some(sid);
                            s.detached_since = None;
                            s.reattached = true;
                            let conn = s.rec.accepted_conn().filter(|_| s.kind == Kind::Tcp);
                            self.count(c::REATTACHED, 1);
                            if let Some(conn) = conn {
                                // Accepted just before the last sockd
                                // died, maybe after it answered and
                                // before its ATTACH reached tcpd, which
                                // ignores a repeat; what it announced
                                // again is this socket's.
                                self.claimed.insert(conn);
                                for l in self.socks.values_mut() {
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

    fn accept(&mut self, sid: u64, id: u32, fds: &mut Vec<OwnedFd>) -> Response {
        let Some(l) = self.own(sid, id) else {
            return errno_resp(libc::EBADF);
        };
        if l.kind != Kind::Tcp || l.rec.state != sock_state::LISTEN {
            return errno_resp(libc::EINVAL);
        }
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
        let l = self.socks.get_mut(&id).unwrap();
        let (conn, local, peer) = l.accept_q.pop_front().unwrap();
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
                        .is_some_and(|s| s.kind == Kind::Tcp && (s.reattached || p.resent));
                if p.resent && p.kind == Kind::Tcp {
                    // What tcpd announced after the first reply may have
                    // died with it (CONNECTED, ACCEPTABLE): restated.
                    if let Some(s) = self.socks.get_mut(&p.sock) {
                        s.resync = true;
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
                        } else if p.op == op::CONNECT && s.kind == Kind::Tcp {
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
                        if s.kind == Kind::Tcp {
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
                    if m.value > 0 {
                        s.mss = m.value.min(65000) as u32;
                    }
                    if let Some(mem) = &s.mem {
                        s.wake(mem.set_state(sstate::CONNECTED));
                    }
                }
                self.sync_rec(m.sock);
            }
            op::ACCEPTABLE => {
                match self.socks.get_mut(&m.sock) {
                    // Announced again (see `reannounce`): queued or
                    // accepted already.
                    Some(s)
                        if s.rec.state == sock_state::LISTEN
                            && (s.accept_q.iter().any(|q| q.0 == m.value)
                                || self.claimed.contains(&m.value)
                                || s.reannounce
                                    .as_ref()
                                    .is_some_and(|(_, t)| t.contains(&m.value))) => {}
                    Some(s) if s.rec.state == sock_state::LISTEN => {
                        s.accept_q.push_back((
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
                        if let Some(mem) = &s.mem {
                            s.wake(mem.notify(wait::RX));
                        }
                    }
                    // The listener is gone: so is the connection.
                    _ => self.tcp_ctl(op::ABORT, 0, m.value, 0),
                }
            }
            op::EOF => {
                if let Some(s) = self.socks.get_mut(&m.sock) {
                    // The stream ends at `value`: bytes before it that we
                    // lack (delivered to a sockd that died) come first;
                    // tcpd says EOF again after delivering them anew.
                    let missing = (m.value as u32).wrapping_sub(s.rx_next as u32) as i32 > 0;
                    if missing {
                        s.resync = true;
                    } else if s.rx_hold.is_empty() {
                        if let Some(mem) = &s.mem {
                            s.wake(mem.set_state(sstate::EOF));
                        }
                    } else {
                        s.eof_pending = true;
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
                    if let Some(mem) = &s.mem {
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
                                let wake = mem.consume_send_bytes(ahead as usize);
                                s.wake(wake);
                            }
                            if s.tx_sent < taken {
                                s.tx_sent = taken;
                            }
                            // The answer to a SYNC covers everything sent
                            // before it: what tcpd lacks was lost.
                            if m.flags & ctl_flags::SYNC != 0 && taken < s.sync_sent {
                                s.tx_sent = taken;
                                resent = true;
                            }
                        }
                        let held = u64::from((s.tx_sent as u32).wrapping_sub(freed));
                        if held <= cap {
                            s.credit = cap - held;
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
                    if let (Some(mem), false, false, Kind::Tcp) =
                        (&s.mem, listening, s.eof_pending, s.kind)
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
        s.wake(wake);
    }

    /// TCP data from tcpd: into the application's ring, or held until it
    /// has room (tcpd's credits keep this short).
    fn deliver_tcp(&mut self, h: Handle) {
        let verdict = match self.socks.get_mut(&h.sock) {
            Some(s) if s.mem.is_some() && !s.closing => {
                // By stream offset: a repeat (tcpd delivers again after a
                // restart) is skipped, a gap (what tcpd sent before was
                // lost) is asked for again.
                let ahead = h.stream_off.wrapping_sub(s.rx_next as u32) as i32;
                let have = (s.rx_next as u32).wrapping_sub(h.stream_off);
                if ahead > 0 {
                    s.resync = true;
                    Some(c::RX_GAPS)
                } else if have >= h.data_len {
                    Some(c::RX_REPEATS)
                } else {
                    s.rx_next += u64::from(h.data_len - have);
                    s.rx_hold.push_back((h, have as usize));
                    None
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
    fn pump_tcp(&mut self, room: usize) -> (usize, bool) {
        let f = &self.svc.fabric;
        let me = self.svc.me;
        let mut pool = f.pool(me);
        let mut moved = 0;
        let mut waiting = false;
        let mut ctl: Vec<(u32, u32, u64, u32)> = Vec::new();
        let now = Instant::now();
        let mut closed: Vec<u32> = Vec::new();
        for (&id, s) in self.socks.iter_mut() {
            if s.kind != Kind::Tcp {
                continue;
            }
            let Some(mem) = &s.mem else { continue };
            // Received data into the ring.
            while let Some(&(h, done)) = s.rx_hold.front() {
                let Ok(d) = pool.data(&h) else {
                    s.rx_hold.pop_front();
                    continue;
                };
                let (n, wake) = mem.deliver_stream(&d[done.min(d.len())..]);
                if n > 0 {
                    f.count(me, c::RX_COPY_BYTES, n as u64);
                }
                s.wake(wake);
                if done + n >= d.len() {
                    s.rx_hold.pop_front();
                    pool.free(&h);
                    moved += 1;
                } else {
                    s.rx_hold.front_mut().unwrap().1 = done + n;
                    waiting = true;
                    break;
                }
            }
            if s.rx_hold.is_empty() && s.eof_pending {
                s.eof_pending = false;
                s.wake(mem.set_state(sstate::EOF));
            }
            // Read credit: what the application consumed in total, when it
            // changed, and now and then unasked with a request for the
            // send state, so that nothing lost in a restart stays lost.
            let consumed = mem.rx_consumed();
            let written = mem.rx_written();
            if s.reannounce
                .as_ref()
                .is_some_and(|(t, _)| now.duration_since(*t) > REANNOUNCE_WINDOW)
            {
                s.reannounce = None;
            }
            let sync = now >= s.sync_at || s.resync;
            if consumed != s.rx_seen || written != s.wr_seen || sync {
                let mut flags = ctl_flags::WRITTEN;
                if sync {
                    flags |= ctl_flags::SYNC;
                    s.sync_at = now + SYNC_EVERY;
                    s.sync_sent = s.tx_sent;
                }
                if s.resync {
                    flags |= ctl_flags::RESYNC;
                    s.resync = false;
                    if s.rec.state == sock_state::LISTEN {
                        s.reannounce = Some((now, Vec::new()));
                    }
                }
                let v = ReadCredit {
                    read: consumed as u32,
                    written: written as u32,
                }
                .pack();
                ctl.push((op::READ_CREDIT, id, v, flags));
                s.rx_seen = consumed;
                s.wr_seen = written;
            }
            // Queued bytes to tcpd.
            if s.broken || s.rec.state != sock_state::CONNECTED {
                continue;
            }
            loop {
                let (a, b) = match mem.send_slices() {
                    Ok(v) => v,
                    Err(_) => {
                        s.broken = true;
                        mem.set_error(libc::EIO);
                        f.count(me, c::BAD_RINGS, 1);
                        break;
                    }
                };
                // The ring holds from what tcpd took; send from tx_sent.
                let queued = a.len() + b.len();
                let skip = (s.tx_sent.saturating_sub(mem.tx_consumed()) as usize).min(queued);
                let avail = queued - skip;
                if avail == 0 {
                    if mem.request_kick_after(s.tx_sent) {
                        continue;
                    }
                    if queued > 0 {
                        // Sent, not yet taken: a close or shutdown waits
                        // for tcpd to say it took it, which a SYNC asks
                        // at once.
                        if s.closing || s.shut_wr {
                            s.sync_at = now;
                            waiting = true;
                        }
                        break;
                    }
                    if s.closing {
                        ctl.push((op::CLOSE, id, 0, 0));
                        closed.push(id);
                    } else if s.shut_wr {
                        s.shut_wr = false;
                        s.shut_sent |= 2;
                        ctl.push((op::SHUTDOWN, id, 1, 0));
                    }
                    break;
                }
                if self.to_tcp.len() + ctl.len() >= room || s.credit == 0 {
                    waiting = true;
                    break;
                }
                let n = avail.min(s.mss as usize).min(s.credit as usize);
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
                h.stream_off = s.tx_sent as u32;
                s.tx_sent += n as u64;
                s.credit -= n as u64;
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
        let mut closed = Vec::new();
        for (&id, s) in self.socks.iter_mut() {
            let Some(mem) = &s.mem else { continue };
            if s.kind != Kind::Udp {
                continue;
            }
            if s.broken {
                if s.closing {
                    closed.push(id);
                }
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
                let reserve = f.params().small_bufs / 4;
                if f.free_counts().0 < reserve && payload.len() + SEND_META_LEN < 1800 {
                    f.count(me, c::TX_WAIT_NO_BUFFER, 1);
                    waiting = true;
                    break;
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
        let ctl = self.svc.fabric.ctl(LayerId::TCPD);
        let beat = ctl.heartbeat.load(Relaxed);
        if beat != self.tcpd_beat.0 {
            self.tcpd_beat = (beat, now);
        }
        // A hung tcpd (no heartbeat) is as good as dead: the launcher
        // kills it in a while, and its successor gets the request again.
        let tcpd_up =
            ctl.pid.load(Acquire) != 0 && now.duration_since(self.tcpd_beat.1) < TCPD_STALL;
        let mut again = Vec::new();
        for p in self.pending.values_mut() {
            if p.kind != Kind::Tcp {
                continue;
            }
            if !tcpd_up {
                // tcpd's restart, not tcpd, is what the request waits for.
                p.deadline = now + CTL_TIMEOUT;
            } else if !p.resent && now.duration_since(p.sent) > RESEND_AFTER {
                p.resent = true;
                p.sent = now;
                again.push(p.msg);
            }
        }
        for m in again {
            self.send_ctl(
                Kind::Tcp,
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

    /// Checked every turn (two atomic loads): a new tcpd instance lost
    /// what sat in its input ring and what it had not pushed to us, so
    /// every request still unanswered goes again, and every TCP socket
    /// has tcpd restate what we may have missed.
    fn watch_tcpd(&mut self) {
        let ctl = self.svc.fabric.ctl(LayerId::TCPD);
        let pid = ctl.pid.load(Acquire);
        if pid == 0 {
            return;
        }
        let now_seen = (pid, ctl.started_ms.load(Relaxed));
        if now_seen == self.tcpd_seen {
            return;
        }
        let first = self.tcpd_seen.0 == 0;
        self.tcpd_seen = now_seen;
        if !first {
            self.tcpd_restarted();
        }
    }

    fn tcpd_restarted(&mut self) {
        let now = Instant::now();
        self.svc
            .log("tcpd restarted: sending unanswered requests again");
        self.count(c::TCPD_RESTARTS, 1);
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
            if s.kind != Kind::Tcp || s.mem.is_none() {
                continue;
            }
            if let Some(conn) = s.rec.accepted_conn() {
                // Its ATTACH may have died in tcpd's ring (tcpd ignores a
                // repeat); what the listener hears again of it is ours.
                self.claimed.insert(conn);
                ctl.push((op::ATTACH, id, conn, 0));
            }
            for (i, v) in s.opts.iter().enumerate() {
                if let Some(v) = v {
                    ctl.push((op::SETOPT, id, *v, i as u32 + 1));
                }
            }
            if s.shut_sent & 1 != 0 {
                ctl.push((op::SHUTDOWN, id, 0, 0));
            }
            if s.shut_sent & 2 != 0 {
                ctl.push((op::SHUTDOWN, id, 1, 0));
            }
            if s.rec.state != sock_state::OPEN {
                s.resync = true;
            }
        }
        for (o, id, v, fl) in ctl {
            self.tcp_ctl(o, id, v, fl);
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
        // Replies to the sockd that died may still come: start far from
        // its request numbers.
        claimed: HashSet::new(),
        next_req: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| {
                d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16)
            }),
        to_udp: Vec::with_capacity(BUDGET * 4),
        to_tcp: Vec::with_capacity(BUDGET * 4),
        tcp_credit: svc.config.socket_tx_bytes as u64,
        wake_fd: f.wake_fd(me),
        closes: HashMap::new(),
        tcpd_seen: (0, 0),
        tcpd_beat: (0, Instant::now()),
    };
    // Sockets from before a restart wait for their applications.
    let now = Instant::now();
    let found: Vec<(usize, SockRec)> = d.table.iter().collect();
    for (slot, rec) in &found {
        let kind = if rec.proto == 6 { Kind::Tcp } else { Kind::Udp };
        // The send credit is unknown until tcpd says (the first pump asks).
        let mut sk = Sock::new(*slot, kind, *rec, 0);
        sk.detached_since = Some(now);
        d.socks.insert(rec.id, sk);
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
    let mut to_tcp = f.producer(me, LayerId::TCPD).expect("ring sockd->tcpd");
    let mut batch = [Handle::default(); BUDGET];
    let mut pfds: Vec<libc::pollfd> = Vec::new();
    let mut last_snapshot = Instant::now();
    svc.ready();
    loop {
        f.beat(me);
        let now = Instant::now();
        d.accept_sessions(&listener);
        d.watch_tcpd();
        let mut work = d.serve_sessions();

        let n = from_udp.pop(&mut batch);
        for h in &batch[..n] {
            if !f.take_input(me, h) {
                continue;
            }
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
        let n = from_tcp.pop(&mut batch);
        for h in &batch[..n] {
            if !f.take_input(me, h) {
                continue;
            }
            if h.flags & flags::CTRL != 0 {
                let pool = f.pool(me);
                if let Ok(Some(m)) = L4Ctl::from_handle(&pool, h) {
                    d.on_ctl(m);
                }
                f.free(h);
            } else {
                d.deliver_tcp(*h);
            }
        }
        work += n;

        let room = (to_udp.space() as usize).min(BUDGET * 4);
        let (moved, tx_waiting) = d.pump_tx(room);
        work += moved;
        if !d.to_udp.is_empty() {
            let k = to_udp.push(&d.to_udp);
            // What did not fit (control messages beyond the room) goes
            // next turn; keep order.
            d.to_udp.drain(..k);
        }
        let room = (to_tcp.space() as usize).min(BUDGET * 4);
        let (moved, tcp_waiting) = d.pump_tcp(room);
        work += moved;
        if !d.to_tcp.is_empty() {
            let k = to_tcp.push(&d.to_tcp);
            d.to_tcp.drain(..k);
        }
        let tx_waiting = tx_waiting || tcp_waiting;
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
            let tick = if tx_waiting || !d.to_udp.is_empty() || !d.to_tcp.is_empty() {
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
