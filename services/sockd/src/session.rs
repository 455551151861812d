//! Sessions: accepting libsock's connections (with their peer
//! credentials), reading and answering their socket calls, and handing an
//! accepted TCP connection to the application.

use super::*;
use strata_proto::sock::{Accepted, Slot, MAX_ACCEPT};
use strata_sockd::auth;

/// What sockd learns of a session's process when it connects.
struct Peer {
    /// Its effective capabilities (`CapEff`), if readable.
    caps: Option<u64>,
    /// Its start time ([`auth::start_time`]; 0: unknown).
    start_time: u32,
}

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd of the process that connected.
const SO_PEERPIDFD: libc::c_int = 77;

/// Reads the capabilities and start time of the process that connected
/// on `fd`, whose pid SO_PEERCRED says is `pid`, from `/proc/PID`.
///
/// A pid alone names whichever process has it now: the one that
/// connected may have exited and its pid gone to another, whose
/// capabilities and start time sockd would then credit to this session.
/// So sockd holds the peer's pidfd (SO_PEERPIDFD) across the reads and
/// asks it afterwards whether that process still exists (a signal 0):
/// if it does, its pid was not reused, and what was read is its own.
/// None: it is gone. Kernels before 6.5 have no SO_PEERPIDFD; there the
/// pid is trusted as read. An error: no descriptor or memory for the
/// pidfd now.
fn identify(fd: &OwnedFd, pid: i32) -> Result<Option<Peer>, Errno> {
    let pidfd = match peer_pidfd(fd) {
        Ok(p) => p,
        Err(Errno::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    let proc = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).ok();
    let peer = Peer {
        caps: proc("status").as_deref().and_then(auth::effective_caps),
        start_time: proc("stat")
            .as_deref()
            .and_then(auth::start_time)
            .unwrap_or(0),
    };
    let Some(p) = pidfd else {
        return Ok(Some(peer));
    };
    // SAFETY: pidfd_send_signal takes the pidfd, a signal number (0: only
    // check) and a null siginfo; no memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            p.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    // EPERM (another user's process, which sockd may not signal) also
    // says it exists; ESRCH says it is gone.
    Ok((r == 0 || Errno::last() == Errno::EPERM).then_some(peer))
}

/// The pidfd of the peer of `fd`: None where the kernel has no
/// SO_PEERPIDFD, an error if the peer has exited (ESRCH).
fn peer_pidfd(fd: &OwnedFd) -> Result<Option<OwnedFd>, Errno> {
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `pidfd`, a live
    // local of that size, and the new length into `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    match (r, Errno::last()) {
        // SAFETY: on success the kernel made `pidfd` a new descriptor for
        // this process alone.
        (0, _) if pidfd >= 0 => Ok(Some(unsafe { OwnedFd::from_raw_fd(pidfd) })),
        (0, _) | (_, Errno::ENOPROTOOPT) => Ok(None),
        (_, e) => Err(e),
    }
}

impl Sockd<'_> {
    pub(crate) fn accept_sessions(&mut self, listener: &OwnedFd) {
        let accepting = self.accepting();
        self.ready.listen(listener, accepting);
        if !accepting {
            return;
        }
        self.accept_paused_until = None;
        // Accepted while no descriptor was left for their pidfd: first.
        for fd in std::mem::take(&mut self.unidentified) {
            if !self.open_session(fd) {
                return;
            }
        }
        if !std::mem::take(&mut self.ready.listener) {
            return;
        }
        // One connection per turn, as the readiness promised; another
        // keeps the listener ready for the next.
        crate::syscall();
        let fd = match accept4(
            listener.as_raw_fd(),
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        ) {
            // SAFETY: accept4 just returned this descriptor; nothing
            // else owns it.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM) => {
                // Out of descriptors or memory: the connection waits
                // in the backlog. Look again after a pause rather
                // than spin on a listener that stays readable.
                self.pause_accepting();
                return;
            }
            Err(_) => {
                self.stats.add(Stat::EmptyReads, 1);
                return;
            }
        };
        self.open_session(fd);
    }

    /// Opens a session on a connection just accepted, once sockd knows
    /// who is behind it. False if out of descriptors for that: the
    /// connection waits in `unidentified` and accepting pauses.
    fn open_session(&mut self, fd: OwnedFd) -> bool {
        let Ok(cred) = getsockopt(&fd, sockopt::PeerCredentials) else {
            return true;
        };
        // Each session is a descriptor of sockd's: one user may not take
        // them all.
        if self.sessions_of_uid.of(cred.uid()) >= self.sessions_per_user {
            self.stats.add(Stat::SessionLimit, 1);
            return true;
        }
        let (caps, start_time) = match identify(&fd, cred.pid()) {
            Ok(Some(Peer { caps, start_time })) => (caps, start_time),
            Ok(None) => {
                // Gone before we could tell who it was: its pid may be
                // another process's already. It gets no session.
                self.stats.add(Stat::SessionsUnidentified, 1);
                return true;
            }
            Err(_) => {
                // No descriptor for its pidfd: as when accept4 finds
                // none, look again after a pause. Bounded: accepting
                // stops meanwhile.
                if self.unidentified.len() < MAX_UNIDENTIFIED {
                    self.unidentified.push(fd);
                }
                self.pause_accepting();
                return false;
            }
        };
        self.next_session += 1;
        self.ready.watch(&fd, self.next_session, false);
        self.sessions_of_uid.add(cred.uid());
        self.sessions.insert(
            self.next_session,
            Session {
                fd,
                wake: None,
                pid: cred.pid() as u32,
                uid: cred.uid(),
                start_time,
                low_ports: auth::may_bind_low(cred.uid(), caps),
                ancestors: None,
                segments: HashMap::new(),
                segment_bytes: 0,
                bell: None,
            },
        );
        self.stats.add(Stat::SessionsOpened, 1);
        true
    }

    /// Whether to take new sessions now (not while paused after the
    /// system refused one).
    pub(crate) fn accepting(&self) -> bool {
        self.accept_paused_until.is_none_or(|t| Instant::now() >= t)
    }

    /// The system refused a descriptor for a new session: no accepting
    /// for [`ACCEPT_PAUSE`] (`accept_refused`).
    fn pause_accepting(&mut self) {
        self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
        self.stats.add(Stat::AcceptRefused, 1);
    }

    /// The socket `id` if it belongs to session `sid` (or session `sid`
    /// shares it, see [`Sock::sharers`]).
    pub(crate) fn own(&self, sid: u64, id: u32) -> Option<&Sock> {
        self.socks
            .get(&id)
            .filter(|s| s.session == Some(sid) || s.sharers.contains(&sid))
    }

    /// One request from session `sid`, answered now or (for a request
    /// the transport must answer) when its reply comes.
    pub(crate) fn handle(&mut self, sid: u64, req: Request, mut fds: Vec<OwnedFd>) {
        // Whatever a request did to a socket, it gets a look this turn.
        let named = match req {
            Request::Bind { id, .. }
            | Request::Connect { id, .. }
            | Request::SetOption { id, .. }
            | Request::Close { id }
            | Request::Listen { id, .. }
            | Request::Shutdown { id, .. }
            | Request::Reattach { id, .. }
            | Request::Readiness { id } => Some(id),
            _ => None,
        };
        let answer = match req {
            Request::Hello { version } => Some(self.hello(sid, version, &mut fds)),
            Request::Segment { seg } => Some(self.segment(sid, seg, &mut fds)),
            Request::Socket { kind, mem } => Some(self.socket(sid, kind, mem)),
            Request::Readiness { id } => Some(self.readiness(sid, id, &mut fds)),
            Request::Poller => Some(self.poller(sid, &mut fds)),
            Request::Bind { id, addr } => self.bind(sid, id, addr),
            Request::Connect { id, addr } => self.connect(sid, id, addr),
            Request::SetOption { id, opt } => Some(self.set_option(sid, id, opt)),
            Request::Names { id } => Some(self.names(sid, id)),
            Request::Close { id } => Some(if self.own(sid, id).is_none() {
                errno_resp(libc::EBADF)
            } else {
                self.app_close(id);
                Response::Ok
            }),
            Request::Listen { id, backlog } => self.listen(sid, id, backlog),
            Request::Accept { id, mems } => Some(self.accept(sid, id, &mems)),
            Request::Shutdown { id, how } => Some(self.shutdown(sid, id, how)),
            Request::Reattach { id, mem } => Some(self.reattach(sid, id, mem, &fds)),
        };
        if let Some(r) = answer {
            self.respond(sid, &r, &[]);
        }
        if let Some(id) = named {
            self.activate(id);
        }
    }

    /// The session's first message: the protocol version, the end of its
    /// wake pair sockd waits on, and its doorbell.
    fn hello(&mut self, sid: u64, version: u32, fds: &mut Vec<OwnedFd>) -> Response {
        if version != VERSION {
            return errno_resp(libc::EPROTO);
        }
        if fds.len() != 2 {
            return errno_resp(libc::EINVAL);
        }
        let (bell, w) = (fds.pop().unwrap(), fds.pop().unwrap());
        let Ok(bell) = Doorbell::attach(&bell) else {
            return errno_resp(libc::EINVAL);
        };
        if !sockring::is_wake_end(&w) {
            return errno_resp(libc::EINVAL);
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            self.ready.watch(&w, sid, true);
            s.wake = Some(w);
            s.bell = Some(Rc::new(SessionBell {
                bell,
                poll_kick: RefCell::new(None),
                pending: Cell::new(false),
            }));
        }
        Response::Welcome { session: sid }
    }

    /// EMFILE once the session's process, or all processes of its user,
    /// hold as many sockets as `[limits]` allows (sockets waiting to be
    /// re-attached count for their process and user too).
    fn socket_limits(&mut self, sid: u64) -> Result<(), Response> {
        let s = &self.sessions[&sid];
        if self.socks_of_pid.of(s.pid) >= self.sockets_per_process
            || self.socks_of_uid.of(s.uid) >= self.sockets_per_user
        {
            self.stats.add(Stat::SocketLimit, 1);
            return Err(errno_resp(libc::EMFILE));
        }
        Ok(())
    }

    /// A segment of socket memory for the session's sockets: a sealed
    /// memfd, mapped once. The same memory under the same name again (a
    /// forked process, or a re-attach) changes nothing.
    fn segment(&mut self, sid: u64, seg: u64, fds: &mut Vec<OwnedFd>) -> Response {
        let Some(sess) = self.sessions.get_mut(&sid) else {
            return errno_resp(libc::EBADF);
        };
        let (Some(fd), true) = (fds.pop(), fds.is_empty()) else {
            return errno_resp(libc::EINVAL);
        };
        let Ok(st) = nix::sys::stat::fstat(fd.as_raw_fd()) else {
            return errno_resp(libc::EINVAL);
        };
        let file = (st.st_dev, st.st_ino);
        if let Some((_, known)) = sess.segments.get(&seg) {
            return if *known == file {
                Response::Ok
            } else {
                errno_resp(libc::EEXIST)
            };
        }
        if sess.segments.len() >= MAX_SEGMENTS {
            return errno_resp(libc::ENOBUFS);
        }
        let room = MAX_SEGMENT_BYTES - sess.segment_bytes;
        let m = match Segment::attach(&fd, room.min(sockring::MAX_SEGMENT)) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return errno_resp(libc::EINVAL)
            }
            Err(e) => return errno_resp(e.raw_os_error().unwrap_or(libc::ENOMEM)),
        };
        sess.segment_bytes += m.len();
        sess.segments.insert(seg, (m, file));
        Response::Ok
    }

    /// The socket memory `mem` names in session `sid`'s segments,
    /// checked (EINVAL for anything else).
    fn slot(&self, sid: u64, mem: Slot) -> Result<SockMem, Response> {
        let seg = self
            .sessions
            .get(&sid)
            .and_then(|s| s.segments.get(&mem.seg))
            .map(|(seg, _)| seg)
            .ok_or_else(|| errno_resp(libc::EINVAL))?;
        let off = usize::try_from(mem.off).map_err(|_| errno_resp(libc::EINVAL))?;
        let m = SockMem::attach(seg, off).map_err(|_| errno_resp(libc::EINVAL))?;
        if m.tx_cap() > MAX_RING_BYTES || m.rx_cap() > MAX_RING_BYTES {
            return Err(errno_resp(libc::EINVAL));
        }
        Ok(m)
    }

    /// From now on, kick the fd the application sent on every change of
    /// socket `id` (its event loop watches the other end).
    fn readiness(&mut self, sid: u64, id: u32, fds: &mut Vec<OwnedFd>) -> Response {
        if self.own(sid, id).is_none() {
            return errno_resp(libc::EBADF);
        }
        match (fds.pop(), fds.is_empty()) {
            (Some(k), true) if sockring::is_wake_end(&k) => {
                if let Some(s) = self.socks.get_mut(&id) {
                    s.kick_end.fd = Some(k);
                }
                Response::Ok
            }
            _ => errno_resp(libc::EINVAL),
        }
    }

    /// The session's poller: from now on, a change of a socket whose
    /// memory says it is polled rings the doorbell toward the
    /// application and kicks the fd sent.
    fn poller(&mut self, sid: u64, fds: &mut Vec<OwnedFd>) -> Response {
        let Some(bell) = self.sessions.get(&sid).and_then(|s| s.bell.as_ref()) else {
            return errno_resp(libc::EBADF);
        };
        match (fds.pop(), fds.is_empty()) {
            (Some(k), true) if sockring::is_wake_end(&k) => {
                *bell.poll_kick.borrow_mut() = Some(k);
                Response::Ok
            }
            _ => errno_resp(libc::EINVAL),
        }
    }

    /// A new socket in the memory the application laid out.
    fn socket(&mut self, sid: u64, kind: Kind, mem: Slot) -> Response {
        let mem = match self.slot(sid, mem) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if let Err(r) = self.socket_limits(sid) {
            return r;
        }
        let s = &self.sessions[&sid];
        let rec = SockRec {
            state: sock_state::OPEN,
            proto: if kind == Kind::Tcp { 6 } else { 17 },
            pid: s.pid,
            uid: s.uid,
            start_time: s.start_time,
            ..Default::default()
        };
        let Some(id) = self.table.insert(rec) else {
            return errno_resp(libc::EMFILE);
        };
        let slot = self.table.find(id).unwrap_or(0);
        let rec = self.table.get(slot).unwrap_or(rec);
        let cap = self.tcp_credit;
        let mut sk = Sock::new(slot, kind, rec, cap, cap);
        sk.session = Some(sid);
        sk.mem = Some(mem);
        self.insert_sock(id, sk);
        self.note_ring(id);
        self.stats.add(Stat::SocketsOpened, 1);
        Response::Created { id }
    }

    /// The transport binds; its reply answers (None).
    fn bind(&mut self, sid: u64, id: u32, addr: Addr) -> Option<Response> {
        let Some(s) = self.own(sid, id) else {
            return Some(errno_resp(libc::EBADF));
        };
        match s {
            // A bind repeated by libsock after a sockd restart, which had
            // already taken effect.
            s if s.rec.state != sock_state::OPEN
                && (strata_ipc::addrs::is_any(addr.ip) || addr.ip == s.rec.local())
                && addr.port == s.rec.local_port =>
            {
                Some(Response::Ok)
            }
            s if s.rec.state != sock_state::OPEN => Some(errno_resp(libc::EINVAL)),
            // IPV6_V6ONLY and an IPv4 address (Linux: EINVAL).
            s if family::v6only_bind(addr.ip, s.rec.has(REC_V6ONLY)).is_err() => {
                Some(errno_resp(libc::EINVAL))
            }
            // Ports below the unprivileged start are root's (Linux:
            // EACCES without CAP_NET_BIND_SERVICE).
            _ if !auth::may_bind(
                addr.port,
                self.unprivileged_port_start,
                self.sessions[&sid].low_ports,
            ) =>
            {
                Some(errno_resp(libc::EACCES))
            }
            // SO_REUSEPORT shares a port only among one user's sockets
            // (Linux: the same effective uid), or another user could take
            // a share of a server's connections.
            s if s.rec.has(rec_flags::REUSEPORT)
                && self.reuseport_held_by_another(
                    s.kind(),
                    addr,
                    s.rec.has(REC_V6ONLY),
                    s.rec.uid,
                ) =>
            {
                Some(errno_resp(libc::EADDRINUSE))
            }
            s => {
                let flags = option_flags(&s.rec);
                self.request_transport(
                    sid,
                    id,
                    L4Ctl {
                        op: op::BIND,
                        local_addr: addr.ip,
                        local_port: addr.port,
                        flags,
                        ..Default::default()
                    },
                );
                None
            }
        }
    }

    /// Whether a socket of a user other than `uid` holds `addr`'s port
    /// (or is being bound to it) with SO_REUSEPORT, on an address that
    /// overlaps `addr` (with IPV6_V6ONLY `v6only`) as Linux's dual-stack
    /// rules say ([`family::bindings_overlap`]): `[::]:p` takes IPv4's
    /// port `p` too, unless IPV6_V6ONLY is set.
    fn reuseport_held_by_another(&self, kind: Kind, addr: Addr, v6only: bool, uid: u32) -> bool {
        if addr.port == 0 {
            return false;
        }
        let other = |s: &Sock| s.kind() == kind && s.rec.uid != uid;
        let overlaps = |ip: u128, other_v6only: bool| {
            family::bindings_overlap(addr.ip, v6only, ip, other_v6only)
        };
        self.socks.values().any(|s| {
            other(s)
                && s.rec.has(rec_flags::REUSEPORT)
                && s.rec.local_port == addr.port
                && overlaps(s.rec.local(), s.rec.has(REC_V6ONLY))
        }) || self.pending.values().any(|p| {
            p.op == op::BIND
                && p.msg.local_port == addr.port
                && p.msg.flags & ctl_flags::REUSEPORT != 0
                && overlaps(p.msg.local_addr, p.msg.flags & ctl_flags::V6ONLY != 0)
                && self.socks.get(&p.sock).is_some_and(other)
        })
    }

    /// The transport connects (or, for UDP, sets the peer); its reply
    /// answers (None).
    fn connect(&mut self, sid: u64, id: u32, addr: Addr) -> Option<Response> {
        let Some(s) = self.own(sid, id) else {
            return Some(errno_resp(libc::EBADF));
        };
        // IPV6_V6ONLY and an IPv4 peer (Linux: ENETUNREACH).
        if let Err(e) = family::v6only_peer(addr.ip, s.rec.has(REC_V6ONLY)) {
            return Some(errno_resp(e));
        }
        let flags = option_flags(&s.rec);
        self.request_transport(
            sid,
            id,
            L4Ctl {
                op: op::CONNECT,
                remote_addr: addr.ip,
                remote_port: addr.port,
                flags,
                ..Default::default()
            },
        );
        // tcpd knows the socket from the CONNECT on.
        self.tell_ring(id);
        None
    }

    /// Records a TCP socket's receive ring as an option to tell tcpd (and
    /// restate to a restarted one) when it is not the configured size,
    /// which tcpd assumes: it bounds what tcpd delivers unread, and so
    /// what sockd holds for a ring that is full.
    pub(crate) fn note_ring(&mut self, id: u32) {
        let default = self.rx_ring;
        if let Some(s) = self.socks.get_mut(&id) {
            let cap = s.mem.as_ref().map(|m| m.rx_cap() as u64);
            if let (Some(cap), Some(t)) = (cap.filter(|&c| c != default), s.tcp_mut()) {
                t.opts.set(tcp_opt::RCVBUF, cap);
            }
        }
    }

    /// Sends tcpd the socket's receive ring, if it is not the default.
    fn tell_ring(&mut self, id: u32) {
        let ring = self
            .socks
            .get(&id)
            .and_then(Sock::tcp)
            .and_then(|t| t.opts.rcvbuf);
        if let Some(v) = ring {
            self.tcp_ctl(op::SETOPT, id, v, tcp_opt::RCVBUF);
        }
    }

    fn set_option(&mut self, sid: u64, id: u32, opt: SockOpt) -> Response {
        match (self.own(sid, id).map(Sock::kind), opt) {
            (None, _) => errno_resp(libc::EBADF),
            // IPV6_V6ONLY once bound, or while a bind is on its way
            // (Linux: EINVAL): the binding has taken its addresses.
            (Some(_), SockOpt::V6Only(_))
                if self.socks.get(&id).map(|s| s.rec.state) != Some(sock_state::OPEN)
                    || self.pending.values().any(|p| p.sock == id) =>
            {
                errno_resp(libc::EINVAL)
            }
            (
                Some(kind),
                opt @ (SockOpt::ReuseAddr(_)
                | SockOpt::ReusePort(_)
                | SockOpt::Linger { .. }
                | SockOpt::V6Only(_)),
            ) => {
                // Kept in the socket's record; they take effect at bind
                // (connect, listen) and close.
                let (flag, on) = match opt {
                    SockOpt::ReuseAddr(on) => (rec_flags::REUSEADDR, on),
                    SockOpt::ReusePort(on) => (rec_flags::REUSEPORT, on),
                    SockOpt::V6Only(on) => (REC_V6ONLY, on),
                    // UDP: taken with no effect, as on Linux.
                    SockOpt::Linger { on, secs } => (
                        rec_flags::LINGER_ABORT,
                        kind == Kind::Tcp && on && secs == 0,
                    ),
                    _ => unreachable!("matched above"),
                };
                if let Some(s) = self.socks.get_mut(&id) {
                    s.rec.set_flag(flag, on);
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
                    SockOpt::KeepIdle(s) => (tcp_opt::KEEPIDLE, u64::from(s)),
                    SockOpt::KeepIntvl(s) => (tcp_opt::KEEPINTVL, u64::from(s)),
                    SockOpt::KeepCnt(n) => (tcp_opt::KEEPCNT, u64::from(n)),
                    SockOpt::ReuseAddr(_)
                    | SockOpt::ReusePort(_)
                    | SockOpt::Linger { .. }
                    | SockOpt::V6Only(_) => unreachable!("handled above"),
                };
                if let Some(t) = self.socks.get_mut(&id).and_then(Sock::tcp_mut) {
                    t.opts.set(name, v);
                }
                self.tcp_ctl(op::SETOPT, id, v, name);
                Response::Ok
            }
        }
    }

    fn names(&self, sid: u64, id: u32) -> Response {
        let Some(s) = self.own(sid, id) else {
            return errno_resp(libc::EBADF);
        };
        Response::Names {
            local: Addr {
                ip: s.rec.local(),
                port: s.rec.local_port,
            },
            peer: (s.rec.state == sock_state::CONNECTED).then_some(Addr {
                ip: s.rec.peer(),
                port: s.rec.peer_port,
            }),
        }
    }

    /// tcpd listens; its reply answers (None).
    fn listen(&mut self, sid: u64, id: u32, backlog: u32) -> Option<Response> {
        match self
            .own(sid, id)
            .map(|s| (s.kind(), s.rec.state, option_flags(&s.rec)))
        {
            None => Some(errno_resp(libc::EBADF)),
            Some((Kind::Udp, _, _)) => Some(errno_resp(libc::EOPNOTSUPP)),
            Some((_, sock_state::LISTEN, _)) => Some(Response::Ok),
            Some((_, _, f)) => {
                self.request_transport(
                    sid,
                    id,
                    L4Ctl {
                        op: op::LISTEN,
                        value: backlog.clamp(1, 4096) as u64,
                        // A listener on an address the transport chooses
                        // (listen before bind) must know it too.
                        flags: f & ctl_flags::V6ONLY,
                        ..Default::default()
                    },
                );
                None
            }
        }
    }

    /// A read shutdown goes to tcpd now; a write shutdown once the send
    /// ring has drained (`pump_tcp`).
    fn shutdown(&mut self, sid: u64, id: u32, how: How) -> Response {
        match self.own(sid, id).map(Sock::kind) {
            None => errno_resp(libc::EBADF),
            Some(Kind::Udp) => errno_resp(libc::EOPNOTSUPP),
            Some(Kind::Tcp) => {
                let (read, write) = (
                    matches!(how, How::Read | How::Both),
                    matches!(how, How::Write | How::Both),
                );
                if let Some(s) = self.socks.get_mut(&id) {
                    // In the socket table too: the answer below is final
                    // for the application, and a sockd that dies before
                    // tcpd heard must not lose it.
                    if read {
                        s.rec.flags |= rec_flags::SHUT_RD;
                    }
                    if write {
                        s.rec.flags |= rec_flags::SHUT_WR;
                    }
                    if let Some(t) = s.tcp_mut() {
                        t.shut_sent.read |= read;
                        t.shut_wr |= write;
                    }
                }
                self.sync_rec(id);
                if read {
                    self.tcp_ctl(op::SHUTDOWN, id, 0, 0);
                }
                Response::Ok
            }
        }
    }

    /// An application takes back a socket it had before this sockd
    /// started, with its memory again (the last sockd's mapping died with
    /// it; a readiness fd comes after, with [`Request::Readiness`]).
    fn reattach(&mut self, sid: u64, id: u32, mem: Slot, fds: &[OwnedFd]) -> Response {
        let Some(sess) = self.sessions.get_mut(&sid) else {
            return errno_resp(libc::EBADF);
        };
        let asker = sess.owner();
        let Some(s) = self.socks.get(&id) else {
            return errno_resp(libc::EBADF);
        };
        let owner = auth::Owner {
            pid: s.rec.pid,
            uid: s.rec.uid,
            start_time: s.rec.start_time,
        };
        // The same process (pid and start time: a reused pid is another
        // process) of the same user; or, of the same user, one forked
        // from it, which inherited the socket (each process of a forking
        // server re-attaches on its own session).
        let allowed = fds.is_empty()
            && !s.closing
            && (auth::may_reattach(owner, asker)
                || auth::may_share(
                    owner,
                    asker,
                    sess.ancestors.get_or_insert_with(|| ancestors(asker.pid)),
                ));
        if !allowed {
            return errno_resp(libc::EBADF);
        }
        if s.session.is_some() {
            // Taken back already (its memory and wake end are the ones
            // this process inherited): shared from now on.
            if s.session != Some(sid) && !s.sharers.contains(&sid) {
                if let Some(s) = self.socks.get_mut(&id) {
                    s.sharers.push(sid);
                }
                self.stats.add(Stat::Reattached, 1);
            }
            return Response::Ok;
        }
        let mem = match self.slot(sid, mem) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let Some(s) = self.socks.get_mut(&id) else {
            return errno_resp(libc::EBADF);
        };
        // What tcpd delivered to the sockd that died is gone: it delivers
        // again from what the ring has, and says what credit we have.
        if let Some(t) = s.tcp_mut() {
            t.stream
                .reattach(Instant::now(), mem.rx_written(), mem.tx_consumed());
        }
        s.mem = Some(mem);
        s.session = Some(sid);
        let row = s.slot;
        let bell = self.poll_bell(sid, row);
        let Some(s) = self.socks.get_mut(&id) else {
            return errno_resp(libc::EBADF);
        };
        s.kick_end.bell = bell;
        s.detached = false;
        s.reattached = true;
        // What the last sockd counted died with its queue (tcpd announces
        // the connections again).
        s.publish_accepts();
        let conn = s.rec.accepted_conn().filter(|_| s.kind() == Kind::Tcp);
        self.stats.add(Stat::Reattached, 1);
        // (The option died with the last sockd; tcpd still has it, and a
        // restarted tcpd gets it restated.)
        self.note_ring(id);
        if let Some(conn) = conn {
            // Accepted just before the last sockd died, maybe after it
            // answered and before its ATTACH reached tcpd, which ignores a
            // repeat; what it announced again is this socket's.
            self.claimed.insert(conn);
            for lid in &self.listeners {
                if let Some(l) = self.socks.get_mut(lid) {
                    if let Some(t) = l.tcp_mut() {
                        t.accept_q.retain(|q| q.0 != conn);
                    }
                    l.publish_accepts();
                }
            }
            self.tcp_ctl(op::ATTACH, id, conn, 0);
            self.tell_ring(id);
        }
        Response::Ok
    }

    /// accept(2) on listener `id` for as many waiting connections as
    /// `mems` lays out (at most [`MAX_ACCEPT`]): one request for a burst.
    pub(crate) fn accept(&mut self, sid: u64, id: u32, mems: &[Slot]) -> Response {
        if mems.is_empty() || mems.len() > MAX_ACCEPT {
            return errno_resp(libc::EINVAL);
        }
        let mut conns = Vec::with_capacity(mems.len());
        for &mem in mems {
            match self.accept_one(sid, id, mem) {
                Ok(c) => conns.push(c),
                // What stopped a later one (none left, a limit) is
                // found again by the next request.
                Err(_) if !conns.is_empty() => break,
                Err(r) => return r,
            }
        }
        self.stats.add(Stat::AcceptRequests, 1);
        Response::Accepted { conns }
    }

    /// One connection of an [`Sockd::accept`], laid out in `mem`.
    fn accept_one(&mut self, sid: u64, id: u32, mem: Slot) -> Result<Accepted, Response> {
        let Some(l) = self.own(sid, id) else {
            return Err(errno_resp(libc::EBADF));
        };
        let listening = l.rec.state == sock_state::LISTEN;
        let Some(l) = l.tcp().filter(|_| listening) else {
            return Err(errno_resp(libc::EINVAL));
        };
        if l.accept_q.is_empty() {
            return Err(errno_resp(libc::EAGAIN));
        }
        let mem = self.slot(sid, mem)?;
        // Over a limit, the connection stays queued, as on Linux.
        self.socket_limits(sid)?;
        let Some(l) = self.socks.get_mut(&id).and_then(Sock::tcp_mut) else {
            return Err(errno_resp(libc::EINVAL));
        };
        let Some((conn, local, peer)) = l.accept_q.pop_front() else {
            return Err(errno_resp(libc::EAGAIN));
        };
        if let Some(l) = self.socks.get(&id) {
            l.publish_accepts();
        }
        let Some(l) = self.socks.get_mut(&id).and_then(Sock::tcp_mut) else {
            return Err(errno_resp(libc::EINVAL));
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
            start_time: sess.start_time,
            local_ip: local.ip.to_be_bytes(),
            local_port: local.port,
            peer_ip: peer.ip.to_be_bytes(),
            peer_port: peer.port,
            ..Default::default()
        };
        let mut rec = rec;
        rec.set_accepted_conn(Some(conn));
        let Some(new_id) = self.table.insert(rec) else {
            self.tcp_ctl(op::ABORT, 0, conn, 0);
            return Err(errno_resp(libc::EMFILE));
        };
        let slot = self.table.find(new_id).unwrap_or(0);
        self.table.update(slot, SockRec { id: new_id, ..rec });
        mem.set_state(sstate::CONNECTED);
        let mut sk = Sock::new(
            slot,
            Kind::Tcp,
            SockRec { id: new_id, ..rec },
            self.tcp_credit,
            self.tcp_credit,
        );
        sk.session = Some(sid);
        sk.mem = Some(mem);
        self.insert_sock(new_id, sk);
        self.note_ring(new_id);
        self.tcp_ctl(op::ATTACH, new_id, conn, 0);
        self.tell_ring(new_id);
        self.stats.add(Stat::SocketsOpened, 1);
        Ok(Accepted {
            id: new_id,
            peer,
            local,
        })
    }

    /// Requests from the sessions with something to read.
    pub(crate) fn serve_sessions(&mut self) -> usize {
        let ids = std::mem::take(&mut self.ready.sessions);
        let mut n = 0;
        for sid in ids {
            // One request per ready session per turn: a chatty client
            // cannot starve the data path, and no read is made that the
            // readiness did not promise (another request keeps the
            // session ready for the next turn).
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            crate::syscall();
            match wire::recv(&s.fd) {
                Ok(Recv::Empty) => self.stats.add(Stat::EmptyReads, 1),
                Ok(Recv::Closed) | Err(_) => self.close_session(sid),
                Ok(Recv::Msg(bytes, fds)) => {
                    n += 1;
                    match Request::decode(&bytes) {
                        Ok(req) => self.handle(sid, req, fds),
                        Err(_) => {
                            self.stats.add(Stat::BadRequests, 1);
                            self.respond(sid, &errno_resp(libc::EINVAL), &[]);
                        }
                    }
                }
            }
        }
        n
    }
}

/// The BIND and CONNECT flags for a socket's SO_REUSEADDR, SO_REUSEPORT
/// and IPV6_V6ONLY (LISTEN takes the last).
fn option_flags(rec: &SockRec) -> u32 {
    let mut f = 0;
    if rec.has(rec_flags::REUSEADDR) {
        f |= ctl_flags::REUSEADDR;
    }
    if rec.has(rec_flags::REUSEPORT) {
        f |= ctl_flags::REUSEPORT;
    }
    if rec.has(REC_V6ONLY) {
        f |= ctl_flags::V6ONLY;
    }
    f
}

/// The ancestors of process `pid`, parent first, as `/proc` says now
/// (at most 64; their `uid` is not read, 0).
fn ancestors(pid: u32) -> Vec<auth::Owner> {
    let stat = |p: u32| std::fs::read_to_string(format!("/proc/{p}/stat")).ok();
    let mut out = Vec::new();
    let mut at = stat(pid).as_deref().and_then(auth::parent);
    while let Some(p) = at.filter(|&p| p != 0 && out.len() < 64) {
        let Some(st) = stat(p) else { break };
        out.push(auth::Owner {
            pid: p,
            uid: 0,
            start_time: auth::start_time(&st).unwrap_or(0),
        });
        at = auth::parent(&st).filter(|_| p != 1);
    }
    out
}
