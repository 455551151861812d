//! One strata socket behind an fd: its state machine and its calls.
//!
//! A BSD socket exists before it is bound or connected; libsock's TCP
//! objects do not (a listener is made bound and listening, a stream
//! connecting). So a TCP socket starts [`State::Pending`], keeping its
//! options and bound address, until `listen` makes a listener or
//! `connect` a stream. A UDP socket is a libsock socket from the start
//! (made unbound; `bind` binds it).
//!
//! libsock gives a socket the family of the address it is made with;
//! a BSD socket has its domain from `socket()`. So the socket keeps its
//! domain ([`Socket::v6`]) and makes its libsock object of that family:
//! an `AF_INET6` socket's UDP object with `udp_unbound_v6`, its TCP
//! objects from `sockaddr_in6` addresses only (an IPv4 peer as
//! `::ffff:a.b.c.d`), with `IPV6_V6ONLY` passed to the builder.
//!
//! The fd number the application holds is reserved at `socket()` (an
//! eventfd while the TCP socket is pending, else a dup of the libsock
//! object's readiness fd); once the object exists its readiness fd is
//! `dup3`'d onto the number, which so stays the same for the socket's
//! life.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use libc::c_int;
use libsock::{Stack, TcpListener, TcpStream, UdpSocket};
use strata_ipc::sockring::{MAX_RING, MIN_RING};

use crate::errno::{self, Errno, Res};
use crate::gate::{Busy, Gate, Obj};
use crate::table::{self, lock};

/// Bits of `socket(2)`'s type that are the type (the rest are flags).
const SOCK_TYPE_MASK: c_int = 0xf;
/// One past the largest socket type Linux knows (`SOCK_PACKET`).
const SOCK_MAX: c_int = 11;
/// One past the largest address family Linux knows (`AF_MAX`).
const AF_MAX: c_int = 46;
/// Linux's largest listen backlog (`net.core.somaxconn`'s default).
const SOMAXCONN: u32 = 4096;
/// Rings of a TCP socket unless `SO_SNDBUF`/`SO_RCVBUF` say otherwise
/// (libsock's defaults: 1 MiB to send, 4 MiB to receive).
const TCP_TX_RING: usize = 1 << 20;
const TCP_RX_RING: usize = 4 << 20;
/// Rings of a UDP socket (libsock's default).
const UDP_RING: usize = 256 << 10;

/// The instance `strata_set_instance` named; None: libsock's default
/// (`STRATA_INSTANCE`, else "default").
static INSTANCE: Mutex<Option<String>> = Mutex::new(None);

/// Names the instance for sockets made from now on.
pub(crate) fn set_instance(name: &str) -> Res<()> {
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(libc::EINVAL);
    }
    *lock(&INSTANCE) = Some(name.to_string());
    Ok(())
}

fn stack() -> Res<Stack> {
    libsock::set_interrupt_policy(errno::signal_interrupts);
    let named = lock(&INSTANCE).clone();
    match named {
        Some(n) => Stack::connect(&n),
        None => Stack::from_env(),
    }
    .map_err(errno::io)
}

/// The bytes of the ring libsock makes for a request of `n`: rounded up
/// to a power of two, within the ring limits.
pub(crate) fn ring_bytes(n: usize) -> usize {
    n.clamp(MIN_RING as usize, MAX_RING as usize)
        .next_power_of_two()
}

/// The life of a socket (see the module doc).
#[derive(Clone, Debug)]
pub(crate) enum State {
    /// TCP, neither listening nor connected yet.
    Pending,
    /// TCP, listening.
    Listening(Arc<TcpListener>),
    /// TCP, handshake under way.
    Connecting(Arc<TcpStream>),
    /// TCP, connected (possibly since closed by the peer).
    Connected(Arc<TcpStream>),
    /// TCP, a connect failed and its error was reported, but not by a
    /// `connect()`: as on Linux the connection reads as ended (`recv` 0,
    /// `send` `EPIPE`) until a `connect()` says `ECONNABORTED` and makes
    /// the socket unconnected ([`State::Pending`]) again.
    Failed(Arc<TcpStream>),
    /// UDP.
    Udp(Arc<UdpSocket>),
    /// `strata_close`d (seen by calls that looked it up before).
    Closed,
}

/// Options kept for the socket: applied to its libsock object when that
/// is made, and reported by `getsockopt`.
#[derive(Clone, Debug)]
pub(crate) struct Opts {
    pub(crate) reuse_addr: bool,
    pub(crate) reuse_port: bool,
    pub(crate) keepalive: bool,
    pub(crate) nodelay: bool,
    /// Ring bytes (`SO_SNDBUF`, `SO_RCVBUF`) in effect, or to be made.
    pub(crate) sndbuf: usize,
    pub(crate) rcvbuf: usize,
    pub(crate) rcvtimeo: Option<Duration>,
    pub(crate) sndtimeo: Option<Duration>,
    /// `TCP_CONGESTION` as set (None: the stack's default, CUBIC).
    pub(crate) congestion: Option<&'static str>,
    /// `TCP_KEEPIDLE`, `TCP_KEEPINTVL` (seconds) and `TCP_KEEPCNT` as set
    /// (None: the stack's defaults).
    pub(crate) keepidle: Option<u32>,
    pub(crate) keepintvl: Option<u32>,
    pub(crate) keepcnt: Option<u32>,
    /// `SO_LINGER` as set: `l_onoff` and `l_linger`.
    pub(crate) linger: (bool, u32),
    /// `IPV6_V6ONLY` (an `AF_INET6` socket's; off: dual-stack, Linux's
    /// default `net.ipv6.bindv6only = 0`). TCP: passed to the builder
    /// at `listen`/`connect`, and kept by accepted sockets, as Linux's
    /// inherit it; UDP: the libsock socket's, mirrored.
    pub(crate) v6only: bool,
}

impl Opts {
    pub(crate) fn new(udp: bool) -> Opts {
        let (tx, rx) = if udp {
            (UDP_RING, UDP_RING)
        } else {
            (TCP_TX_RING, TCP_RX_RING)
        };
        Opts {
            reuse_addr: false,
            reuse_port: false,
            keepalive: false,
            nodelay: false,
            sndbuf: ring_bytes(tx),
            rcvbuf: ring_bytes(rx),
            rcvtimeo: None,
            sndtimeo: None,
            congestion: None,
            keepidle: None,
            keepintvl: None,
            keepcnt: None,
            linger: (false, 0),
            v6only: false,
        }
    }

    /// Sets the options a new stream takes from its socket (or, for an
    /// accepted one, from its listener, as Linux's accepted sockets
    /// inherit them).
    fn apply_to_stream(&self, s: &TcpStream) -> Res<()> {
        if self.nodelay {
            s.set_nodelay(true).map_err(errno::io)?;
        }
        if self.keepalive {
            s.set_keepalive(true).map_err(errno::io)?;
        }
        if let Some(cc) = self.congestion {
            s.set_congestion(cc).map_err(errno::io)?;
        }
        if self.linger.0 {
            s.set_linger(Some(Duration::from_secs(u64::from(self.linger.1))))
                .map_err(errno::io)?;
        }
        let secs = |v: Option<u32>| v.map(|s| Duration::from_secs(u64::from(s)));
        if self.keepidle.is_some() || self.keepintvl.is_some() || self.keepcnt.is_some() {
            s.set_keepalive_timing(secs(self.keepidle), secs(self.keepintvl), self.keepcnt)
                .map_err(errno::io)?;
        }
        s.set_read_timeout(self.rcvtimeo).map_err(errno::io)?;
        s.set_write_timeout(self.sndtimeo).map_err(errno::io)?;
        Ok(())
    }
}

/// What the socket's lock guards.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) state: State,
    pub(crate) opts: Opts,
    /// The address `bind` gave (TCP: used by `listen`); of the
    /// socket's family (`SocketAddr::V6` on an `AF_INET6` socket).
    pub(crate) bound: Option<SocketAddr>,
    /// Every fd number of the socket: its own, and dups of it
    /// ([`dup`]); the socket ends with the last.
    pub(crate) numbers: Vec<RawFd>,
}

/// A strata socket: the entry of the fd table.
///
/// Its lock is held for state changes and for the requests to sockd
/// that make them (answered at once), never while a call waits for data,
/// room, a connection or a handshake.
#[derive(Debug)]
pub(crate) struct Socket {
    /// The fd number the application holds.
    pub(crate) fd: RawFd,
    pub(crate) udp: bool,
    /// `AF_INET6` (else `AF_INET`), from `socket()`.
    pub(crate) v6: bool,
    stack: Stack,
    inner: Mutex<Inner>,
    pub(crate) gate: Gate,
    /// Non-zero once the socket was inherited by a forked process: its
    /// key in the count of processes that hold it ([`crate::fork`]).
    pub(crate) fork_key: AtomicU64,
}

/// `fd` duplicated onto the lowest free number, close-on-exec if asked.
fn dup_fd(fd: RawFd, cloexec: bool) -> Res<RawFd> {
    let cmd = if cloexec {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    // SAFETY: F_DUPFD(_CLOEXEC) takes an int and makes a new fd, which
    // the caller owns.
    let n = unsafe { libc::fcntl(fd, cmd, 0) };
    if n < 0 {
        Err(errno::last())
    } else {
        Ok(n)
    }
}

/// Closes an fd number this crate owns.
fn close_fd(fd: RawFd) -> Res<()> {
    // SAFETY: `fd` is ours (a socket's number, out of the table).
    if unsafe { libc::close(fd) } < 0 {
        let e = errno::last();
        // Linux closes the fd also when close(2) is interrupted.
        if e != libc::EINTR {
            return Err(e);
        }
    }
    Ok(())
}

/// An address libsock reports, as a socket of the domain (`v6`:
/// `AF_INET6`) gives it: `SocketAddr::V4` on an `AF_INET` socket,
/// `SocketAddr::V6` on an `AF_INET6` one, an IPv4 address as
/// `::ffff:a.b.c.d` (libsock reports them so already; this only makes
/// sure of the family the caller writes out).
pub(crate) fn shown(v6: bool, a: SocketAddr) -> SocketAddr {
    match (v6, a) {
        (false, SocketAddr::V4(_)) | (true, SocketAddr::V6(_)) => a,
        (false, SocketAddr::V6(a)) => SocketAddrV4::new(
            a.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
            a.port(),
        )
        .into(),
        (true, SocketAddr::V4(a)) => {
            SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0).into()
        }
    }
}

/// The wildcard address, port 0, of the domain: `0.0.0.0:0` or
/// `[::]:0` (what an unbound socket reports, and binds to at `listen`).
pub(crate) fn any(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0).into()
    } else {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into()
    }
}

/// `socket(2)`: the new socket's fd.
pub(crate) fn open(domain: c_int, ty: c_int, protocol: c_int) -> Res<RawFd> {
    // The order of Linux's checks, for the same errno on the same call.
    let flags = ty & !SOCK_TYPE_MASK;
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Err(libc::EINVAL);
    }
    let base = ty & SOCK_TYPE_MASK;
    if !(0..AF_MAX).contains(&domain) {
        return Err(libc::EAFNOSUPPORT);
    }
    if !(0..SOCK_MAX).contains(&base) {
        return Err(libc::EINVAL);
    }
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(libc::EAFNOSUPPORT);
    }
    let v6 = domain == libc::AF_INET6;
    if protocol < 0 {
        return Err(libc::EINVAL);
    }
    let udp = match (base, protocol) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => false,
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => true,
        (libc::SOCK_STREAM | libc::SOCK_DGRAM, _) => return Err(libc::EPROTONOSUPPORT),
        _ => return Err(libc::ESOCKTNOSUPPORT),
    };
    let nonblocking = flags & libc::SOCK_NONBLOCK != 0;
    let cloexec = flags & libc::SOCK_CLOEXEC != 0;
    let stack = stack()?;
    let opts = Opts::new(udp);
    let (fd, state) = if udp {
        let b = stack.builder().ring_sizes(opts.sndbuf, opts.rcvbuf);
        // An unbound socket of the domain: an IPv6 one binds to `[::]:0`
        // at its first send (dual-stack), as Linux's autobind does.
        let u = if v6 {
            b.udp_unbound_v6()
        } else {
            b.udp_unbound()
        }
        .map_err(errno::io)?;
        u.set_nonblocking(nonblocking).map_err(errno::io)?;
        let ready = u.readiness_fd().map_err(errno::io)?;
        (dup_fd(ready, cloexec)?, State::Udp(Arc::new(u)))
    } else {
        let fl = if cloexec { libc::EFD_CLOEXEC } else { 0 };
        // SAFETY: eventfd takes two ints and makes a new fd, ours.
        let fd = unsafe { libc::eventfd(0, fl) };
        if fd < 0 {
            return Err(errno::last());
        }
        (fd, State::Pending)
    };
    table::insert(Arc::new(Socket {
        fd,
        udp,
        v6,
        stack,
        inner: Mutex::new(Inner {
            state,
            opts,
            bound: None,
            numbers: vec![fd],
        }),
        gate: Gate::new(nonblocking),
        fork_key: AtomicU64::new(0),
    }));
    Ok(fd)
}

/// `close(2)` of a strata socket.
pub(crate) fn close(fd: RawFd) -> Res<()> {
    release(fd, true)
}

/// Takes number `fd` out of the table, closing it if `close_number`
/// (else the caller is about to put another file behind it, with
/// `dup2`). The socket ends with its last number, unless a forked
/// process still holds it ([`crate::fork`]).
pub(crate) fn release(fd: RawFd, close_number: bool) -> Res<()> {
    let s = table::remove(fd)?;
    let (old, r) = {
        let mut g = s.lock();
        g.numbers.retain(|&n| n != fd);
        // Under the lock: no dup3 onto the number can race the close.
        let r = if close_number { close_fd(fd) } else { Ok(()) };
        if !g.numbers.is_empty() {
            return r;
        }
        (std::mem::replace(&mut g.state, State::Closed), r)
    };
    let key = s.fork_key.load(Ordering::Acquire);
    if key != 0 && !crate::fork::last_holder(key) {
        // Another process still uses the socket: this one lets go of
        // its object without closing it at sockd.
        std::mem::forget(old);
        return r;
    }
    // Outside the lock: dropping the object closes it at sockd (unless a
    // call in another thread still holds it, as Linux keeps a socket a
    // blocked call uses).
    drop(old);
    r
}

/// `dup(2)`, `dup3(2)`, `fcntl(F_DUPFD)` of a strata socket: `make`
/// makes the new number (a dup of the socket's current file, so that it
/// polls like the old one), which then names the same socket.
pub(crate) fn dup(fd: RawFd, make: impl FnOnce() -> Res<RawFd>) -> Res<RawFd> {
    let s = table::get(fd)?;
    let mut g = s.lock();
    if matches!(g.state, State::Closed) {
        return Err(libc::EBADF);
    }
    let n = make()?;
    g.numbers.push(n);
    drop(g);
    table::insert_at(n, s);
    Ok(n)
}

impl Socket {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// A snapshot of the state (its objects shared).
    pub(crate) fn state(&self) -> State {
        self.lock().state.clone()
    }

    /// Puts `obj`'s readiness fd behind the socket's number (keeping the
    /// number's close-on-exec flag), under the lock `g` of a socket not
    /// closed.
    fn install(&self, g: &Inner, obj: &Obj) -> Res<()> {
        if matches!(g.state, State::Closed) {
            return Err(libc::EBADF);
        }
        let ready = obj
            .readiness_fd()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))?;
        for &n in &g.numbers {
            // SAFETY: F_GETFD takes no argument.
            let fdfl = unsafe { libc::fcntl(n, libc::F_GETFD) };
            if fdfl < 0 {
                return Err(errno::last());
            }
            let fl = if fdfl & libc::FD_CLOEXEC != 0 {
                libc::O_CLOEXEC
            } else {
                0
            };
            // SAFETY: both fds are open; dup3 atomically makes `n` (ours,
            // one of the socket's numbers) another fd of the readiness
            // fd's file, closing what it was.
            if unsafe { libc::dup3(ready, n, fl) } < 0 {
                return Err(errno::last());
            }
        }
        Ok(())
    }

    /// Puts a fresh placeholder (an eventfd) behind the number of a
    /// socket that is unconnected again, under its lock `g`: the failed
    /// stream's readiness fd would read as hung up.
    fn install_placeholder(&self, g: &Inner) {
        if matches!(g.state, State::Closed) {
            return;
        }
        // SAFETY: eventfd takes two ints and makes a new fd, ours.
        let tmp = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if tmp < 0 {
            return;
        }
        for &n in &g.numbers {
            // SAFETY: F_GETFD takes no argument.
            let fdfl = unsafe { libc::fcntl(n, libc::F_GETFD) };
            let fl = if fdfl >= 0 && fdfl & libc::FD_CLOEXEC == 0 {
                0
            } else {
                libc::O_CLOEXEC
            };
            // SAFETY: both fds are open; `n` is ours (see `install`). On
            // failure the number keeps what it had, which is harmless.
            unsafe { libc::dup3(tmp, n, fl) };
        }
        // `tmp` served its purpose; the number holds the eventfd now.
        let _ = close_fd(tmp);
    }

    /// `bind(2)`, to an address of the socket's family.
    pub(crate) fn bind(&self, a: SocketAddr) -> Res<()> {
        let mut g = self.lock();
        match &g.state {
            State::Udp(u) => {
                // Bound already (also by a send): EINVAL, as on Linux
                // (sockd would take a repeat of the same bind, as
                // libsock's replay after a restart).
                let u = u.clone();
                if g.bound.is_some() || u.local_addr().map_err(errno::io)?.port() != 0 {
                    return Err(libc::EINVAL);
                }
                u.bind_to(a).map_err(errno::io)?;
                g.bound = Some(a);
                Ok(())
            }
            State::Pending if g.bound.is_none() => {
                // Linux's __inet6_bind: a TCP socket cannot bind to a
                // multicast address, and with IPV6_V6ONLY not to an
                // IPv4-mapped one (EINVAL). Checked here because the
                // address is only kept until listen().
                if let SocketAddr::V6(a6) = a {
                    if a6.ip().is_multicast()
                        || (g.opts.v6only && a6.ip().to_ipv4_mapped().is_some())
                    {
                        return Err(libc::EINVAL);
                    }
                }
                g.bound = Some(a);
                Ok(())
            }
            State::Closed => Err(libc::EBADF),
            _ => Err(libc::EINVAL),
        }
    }

    /// `listen(2)`.
    pub(crate) fn listen(&self, backlog: c_int) -> Res<()> {
        if self.udp {
            return Err(libc::EOPNOTSUPP);
        }
        let mut g = self.lock();
        match g.state {
            State::Pending => {}
            // Linux takes a new backlog; sockd keeps the first.
            State::Listening(_) => return Ok(()),
            State::Closed => return Err(libc::EBADF),
            _ => return Err(libc::EINVAL),
        }
        let backlog = u32::try_from(backlog).map_or(SOMAXCONN, |b| b.min(SOMAXCONN));
        let l = self
            .stack
            .builder()
            .reuse_address(g.opts.reuse_addr)
            .reuse_port(g.opts.reuse_port)
            .only_v6(g.opts.v6only)
            .ring_sizes(g.opts.sndbuf, g.opts.rcvbuf)
            .backlog(backlog)
            .tcp_bind(g.bound.unwrap_or(any(self.v6)))
            .map_err(errno::io)?;
        let l = Arc::new(l);
        let obj = Obj::Listener(l.clone());
        self.gate.adopt(&obj);
        self.install(&g, &obj)?;
        g.state = State::Listening(l);
        Ok(())
    }

    /// `accept4(2)`: the new socket's fd and its peer.
    pub(crate) fn accept(&self, flags: c_int) -> Res<(RawFd, SocketAddr)> {
        if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
            return Err(libc::EINVAL);
        }
        if self.udp {
            return Err(libc::EOPNOTSUPP);
        }
        let (l, opts) = {
            let g = self.lock();
            match &g.state {
                State::Listening(l) => (l.clone(), g.opts.clone()),
                State::Closed => return Err(libc::EBADF),
                _ => return Err(libc::EINVAL),
            }
        };
        let (stream, peer) = self
            .gate
            .run(&Obj::Listener(l.clone()), false, |_| l.accept())
            .map_err(|Busy| libc::EAGAIN)?
            .map_err(errno::io)?;
        let nonblocking = flags & libc::SOCK_NONBLOCK != 0;
        stream.set_nonblocking(nonblocking).map_err(errno::io)?;
        opts.apply_to_stream(&stream)?;
        let ready = stream.readiness_fd().map_err(errno::io)?;
        let fd = dup_fd(ready, flags & libc::SOCK_CLOEXEC != 0)?;
        table::insert(Arc::new(Socket {
            fd,
            udp: false,
            // Of its listener's family, as libsock's streams are.
            v6: self.v6,
            stack: self.stack.clone(),
            inner: Mutex::new(Inner {
                state: State::Connected(Arc::new(stream)),
                opts,
                bound: None,
                numbers: vec![fd],
            }),
            gate: Gate::new(nonblocking),
            fork_key: AtomicU64::new(0),
        }));
        Ok((fd, shown(self.v6, peer)))
    }

    /// `connect(2)` of a UDP socket: `None` dissolves the association
    /// (`AF_UNSPEC`).
    pub(crate) fn connect_udp(&self, to: Option<SocketAddr>) -> Res<()> {
        let u = match self.state() {
            State::Udp(u) => u,
            _ => return Err(libc::EBADF),
        };
        u.connect(to.unwrap_or(any(self.v6))).map_err(errno::io)
    }

    /// `IPV6_V6ONLY` as in effect (`false` on an `AF_INET` socket).
    pub(crate) fn only_v6(&self) -> bool {
        self.lock().opts.v6only
    }

    /// `connect(2)` of a TCP socket, to an address of its family.
    pub(crate) fn connect_tcp(&self, to: SocketAddr) -> Res<()> {
        let mut g = self.lock();
        match &g.state {
            State::Pending => {}
            State::Connecting(s) => {
                // Again while it connects: EALREADY, or (once) how it went.
                let s = s.clone();
                drop(g);
                return match self.finish_connect(&s, false, true)? {
                    true => Ok(()),
                    false => Err(libc::EALREADY),
                };
            }
            State::Failed(_) => {
                // The failure was reported elsewhere (SO_ERROR, recv):
                // Linux answers this connect so, then starts afresh.
                self.install_placeholder(&g);
                g.state = State::Pending;
                return Err(libc::ECONNABORTED);
            }
            State::Connected(_) | State::Listening(_) => return Err(libc::EISCONN),
            State::Closed => return Err(libc::EBADF),
            State::Udp(_) => return Err(libc::EBADF),
        }
        // libsock connects from the address the stack picks: a bind to
        // anything but the wildcard (port 0) cannot be kept.
        if g.bound
            .is_some_and(|b| !b.ip().is_unspecified() || b.port() != 0)
        {
            return Err(libc::EOPNOTSUPP);
        }
        let s = self
            .stack
            .builder()
            .only_v6(g.opts.v6only)
            .ring_sizes(g.opts.sndbuf, g.opts.rcvbuf)
            .tcp_connect_nonblocking(&to)
            .map_err(errno::io)?;
        g.opts.apply_to_stream(&s)?;
        let s = Arc::new(s);
        let obj = Obj::Stream(s.clone());
        self.gate.adopt(&obj);
        self.install(&g, &obj)?;
        g.state = State::Connecting(s.clone());
        drop(g);
        if self.gate.nonblocking() {
            return Err(libc::EINPROGRESS);
        }
        match self.finish_connect(&s, false, true)? {
            true => Ok(()),
            // Only when the socket went non-blocking meanwhile.
            false => Err(libc::EINPROGRESS),
        }
    }

    /// How the handshake of `s` went (waiting for its end in blocking
    /// mode unless `dontwait`): `true` connected, `false` still under
    /// way, or the error, reported to this caller; the state follows (a
    /// failure seen `by_connect` leaves the socket unconnected, one seen
    /// by another call [`State::Failed`], as on Linux).
    fn finish_connect(&self, s: &Arc<TcpStream>, dontwait: bool, by_connect: bool) -> Res<bool> {
        let r = match self
            .gate
            .run(&Obj::Stream(s.clone()), dontwait, |_| s.connect_finished())
        {
            Ok(r) => r,
            // Another thread waits for the handshake: still under way.
            Err(Busy) => return Ok(false),
        };
        let mut g = self.lock();
        let current = matches!(&g.state, State::Connecting(c) if Arc::ptr_eq(c, s));
        match r {
            Ok(done) => {
                if done && current {
                    g.state = State::Connected(s.clone());
                }
                Ok(done)
            }
            // A signal ended the wait: the handshake goes on (Linux: a
            // later connect says EALREADY, then EISCONN).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(libc::EINTR),
            Err(e) => {
                if current {
                    g.state = if by_connect {
                        self.install_placeholder(&g);
                        State::Pending
                    } else {
                        State::Failed(s.clone())
                    };
                }
                Err(errno::io(e))
            }
        }
    }

    /// The stream to move data on: `None` for a connection that failed
    /// ([`State::Failed`]); `unconnected` is the errno when there is none
    /// (`EPIPE` to send, `ENOTCONN` to receive, as Linux says).
    fn stream(&self, dontwait: bool, unconnected: Errno) -> Res<Option<Arc<TcpStream>>> {
        let s = {
            let g = self.lock();
            match &g.state {
                State::Connected(s) => return Ok(Some(s.clone())),
                State::Connecting(s) => s.clone(),
                State::Failed(_) => return Ok(None),
                State::Closed => return Err(libc::EBADF),
                _ => return Err(unconnected),
            }
        };
        // Linux waits for the handshake (blocking) or says EAGAIN.
        match self.finish_connect(&s, dontwait, false)? {
            true => Ok(Some(s)),
            false => Err(libc::EAGAIN),
        }
    }

    fn udp_socket(&self) -> Res<Arc<UdpSocket>> {
        match self.state() {
            State::Udp(u) => Ok(u),
            _ => Err(libc::EBADF),
        }
    }

    /// `sendto(2)` (`to` None: `send(2)`). EPIPE is returned, not
    /// signalled (the caller raises SIGPIPE).
    pub(crate) fn send(&self, buf: &[u8], flags: c_int, to: Option<SocketAddr>) -> Res<usize> {
        let dontwait = flags & libc::MSG_DONTWAIT != 0;
        if self.udp {
            // MSG_CONFIRM is a hint for neighbour discovery.
            let known = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_CONFIRM;
            if flags & !known != 0 {
                return Err(libc::EOPNOTSUPP);
            }
            let u = self.udp_socket()?;
            let r = self.gate.run(&Obj::Udp(u.clone()), dontwait, |_| match to {
                Some(a) => u.send_to(buf, a),
                None => u.send(buf),
            });
            return r.map_err(|Busy| libc::EAGAIN)?.map_err(errno::io);
        }
        // MSG_MORE asks to delay a partial segment; sending at once is
        // what Linux does when more never comes.
        let known = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_MORE;
        if flags & !known != 0 {
            return Err(libc::EOPNOTSUPP);
        }
        // A destination is ignored on a TCP socket, as Linux does.
        let s = self.stream(dontwait, libc::EPIPE)?.ok_or(libc::EPIPE)?;
        let r = self
            .gate
            .run(&Obj::Stream(s.clone()), dontwait, |blocking| {
                write_stream(&s, buf, blocking)
            });
        r.map_err(|Busy| libc::EAGAIN)?.map_err(errno::io)
    }

    /// `recvfrom(2)`: bytes and, for UDP, the sender.
    pub(crate) fn recv(&self, buf: &mut [u8], flags: c_int) -> Res<(usize, Option<SocketAddr>)> {
        let known = libc::MSG_DONTWAIT
            | libc::MSG_PEEK
            | libc::MSG_WAITALL
            | libc::MSG_NOSIGNAL
            | libc::MSG_CMSG_CLOEXEC;
        if flags & !known != 0 {
            return Err(libc::EOPNOTSUPP);
        }
        let dontwait = flags & libc::MSG_DONTWAIT != 0;
        let peek = flags & libc::MSG_PEEK != 0;
        if self.udp {
            // MSG_WAITALL means nothing for datagrams (Linux ignores it).
            let u = self.udp_socket()?;
            let r = self.gate.run(&Obj::Udp(u.clone()), dontwait, |_| {
                if peek {
                    u.peek_from(buf)
                } else {
                    u.recv_from(buf)
                }
            });
            let (n, from) = r.map_err(|Busy| libc::EAGAIN)?.map_err(errno::io)?;
            return Ok((n, Some(shown(self.v6, from))));
        }
        let waitall = flags & libc::MSG_WAITALL != 0 && !peek;
        // A failed connection reads as ended.
        let Some(s) = self.stream(dontwait, libc::ENOTCONN)? else {
            return Ok((0, None));
        };
        let r = self
            .gate
            .run(&Obj::Stream(s.clone()), dontwait, |blocking| {
                if peek {
                    s.peek(buf)
                } else {
                    read_stream(&s, buf, waitall && blocking)
                }
            });
        let n = r.map_err(|Busy| libc::EAGAIN)?.map_err(errno::io)?;
        Ok((n, None))
    }

    /// `shutdown(2)`.
    pub(crate) fn shutdown(&self, how: c_int) -> Res<()> {
        let how = match how {
            libc::SHUT_RD => Shutdown::Read,
            libc::SHUT_WR => Shutdown::Write,
            libc::SHUT_RDWR => Shutdown::Both,
            _ => return Err(libc::EINVAL),
        };
        match self.state() {
            State::Connected(s) | State::Connecting(s) => s.shutdown(how).map_err(errno::io),
            // Linux: a no-op; stopping a listener (SHUT_RD) libsock
            // cannot do.
            State::Listening(_) if how == Shutdown::Write => Ok(()),
            State::Listening(_) => Err(libc::EOPNOTSUPP),
            // A connected UDP socket's shutdown libsock cannot do.
            State::Udp(u) if u.peer_addr().is_ok() => Err(libc::EOPNOTSUPP),
            State::Closed => Err(libc::EBADF),
            _ => Err(libc::ENOTCONN),
        }
    }

    /// `getsockname(2)`.
    pub(crate) fn local_addr(&self) -> Res<SocketAddr> {
        let a = match self.state() {
            State::Pending => return Ok(self.lock().bound.unwrap_or(any(self.v6))),
            State::Listening(l) => l.local_addr(),
            State::Connecting(s) | State::Connected(s) | State::Failed(s) => s.local_addr(),
            State::Udp(u) => u.local_addr(),
            State::Closed => return Err(libc::EBADF),
        };
        a.map(|a| shown(self.v6, a)).map_err(errno::io)
    }

    /// `getpeername(2)`.
    pub(crate) fn peer_addr(&self) -> Res<SocketAddr> {
        let a = match self.state() {
            State::Connecting(s) | State::Connected(s) => s.peer_addr(),
            State::Udp(u) => u.peer_addr(),
            State::Closed => return Err(libc::EBADF),
            _ => return Err(libc::ENOTCONN),
        };
        a.map(|a| shown(self.v6, a)).map_err(errno::io)
    }

    /// The pending error (`SO_ERROR`), taken; 0 for none. After a
    /// non-blocking connect: 0 while it goes on, then its outcome.
    pub(crate) fn take_error(&self) -> Res<Errno> {
        let taken = |e: Option<std::io::Error>| e.map_or(0, |e| errno::of(&e));
        let s = {
            let g = self.lock();
            match &g.state {
                State::Connecting(s) => s.clone(),
                State::Connected(s) | State::Failed(s) => {
                    return s.take_error().map(taken).map_err(errno::io)
                }
                State::Listening(l) => return l.take_error().map(taken).map_err(errno::io),
                State::Udp(u) => return u.take_error().map(taken).map_err(errno::io),
                State::Pending => return Ok(0),
                State::Closed => return Err(libc::EBADF),
            }
        };
        match self.finish_connect(&s, true, false) {
            Ok(_) => Ok(0),
            Err(e) => Ok(e),
        }
    }

    /// What `poll(2)` would report for the socket (`POLLIN`, `POLLOUT`,
    /// `POLLERR`, `POLLHUP`, `POLLRDHUP` bits), computed from the socket's
    /// shared memory (a listener: its count of waiting connections). With
    /// `drain`, the kicks waiting on the readiness fd are taken first, so
    /// that a caller that then waits for the fd to turn readable wakes
    /// on the next change only.
    pub(crate) fn poll_events(&self, drain: bool) -> i16 {
        let state = self.state();
        let drain_fd = || {
            if drain {
                strata_ipc::sockring::drain(&self.fd_ref());
            }
        };
        let r = match &state {
            // An unconnected TCP socket: Linux says POLLOUT | POLLHUP.
            State::Pending => return libc::POLLOUT | libc::POLLHUP,
            State::Failed(_) => {
                return libc::POLLIN | libc::POLLOUT | libc::POLLHUP | libc::POLLRDHUP
            }
            State::Closed => return libc::POLLNVAL,
            State::Listening(l) => {
                // A counted accept queue is the listener's readiness, and
                // its kicks can be taken as a stream's are; otherwise the
                // kick is the only sign of a connection.
                if l.pending_accepts().is_some() {
                    drain_fd();
                }
                l.readiness()
            }
            State::Connecting(t) | State::Connected(t) => {
                drain_fd();
                t.readiness()
            }
            State::Udp(u) => {
                drain_fd();
                u.readiness()
            }
        };
        let mut ev = 0;
        for (on, bit) in [
            (r.readable, libc::POLLIN),
            (r.writable, libc::POLLOUT),
            (r.error, libc::POLLERR),
            (r.hangup, libc::POLLHUP),
            (r.read_closed, libc::POLLRDHUP),
        ] {
            if on {
                ev |= bit;
            }
        }
        ev
    }

    /// The socket's number, borrowed for a call that takes an `AsRawFd`.
    fn fd_ref(&self) -> RawFdRef {
        RawFdRef(self.lock().numbers.first().copied().unwrap_or(self.fd))
    }

    /// Bytes a read would return now (`FIONREAD`; UDP: the next
    /// datagram's).
    pub(crate) fn nread(&self) -> Res<usize> {
        match self.state() {
            State::Connected(t) | State::Connecting(t) | State::Failed(t) => {
                Ok(t.bytes_available())
            }
            State::Udp(u) => Ok(u.next_datagram_len()),
            State::Listening(_) | State::Pending => Err(libc::EINVAL),
            State::Closed => Err(libc::EBADF),
        }
    }

    /// `fcntl(F_SETFL)`'s `O_NONBLOCK`.
    pub(crate) fn set_nonblocking(&self, on: bool) {
        // The object cannot change meanwhile: making one takes the lock.
        let g = self.lock();
        let obj = match &g.state {
            State::Listening(l) => Some(Obj::Listener(l.clone())),
            State::Connecting(s) | State::Connected(s) => Some(Obj::Stream(s.clone())),
            State::Udp(u) => Some(Obj::Udp(u.clone())),
            _ => None,
        };
        self.gate.set_nonblocking(on, obj.as_ref());
        drop(g);
    }
}

/// An fd number for calls that take an `AsRawFd`.
struct RawFdRef(RawFd);

impl AsRawFd for RawFdRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Writes `buf` to `s`: in blocking mode all of it (as Linux's blocking
/// send does), else what fits now. After a partial write an error ends
/// it with the count, as on Linux.
fn write_stream(s: &TcpStream, buf: &[u8], blocking: bool) -> std::io::Result<usize> {
    let mut done = 0;
    loop {
        match (&*s).write(&buf[done..]) {
            Ok(n) => {
                done += n;
                if !blocking || n == 0 || done == buf.len() {
                    return Ok(done);
                }
            }
            Err(_) if done > 0 => return Ok(done),
            Err(e) => return Err(e),
        }
    }
}

/// Reads from `s` into `buf`: what is there, or with `all` until `buf`
/// is full, the stream ends or an error comes (then the count, if any).
fn read_stream(s: &TcpStream, buf: &mut [u8], all: bool) -> std::io::Result<usize> {
    let mut done = 0;
    loop {
        match (&*s).read(&mut buf[done..]) {
            Ok(n) => {
                done += n;
                if !all || n == 0 || done == buf.len() {
                    return Ok(done);
                }
            }
            Err(_) if done > 0 => return Ok(done),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_round_like_libsock() {
        assert_eq!(ring_bytes(1), MIN_RING as usize);
        assert_eq!(ring_bytes(5000), 8192);
        assert_eq!(ring_bytes(usize::MAX), MAX_RING as usize);
        assert_eq!(ring_bytes(256 << 10), 256 << 10);
    }

    #[test]
    fn socket_refuses_what_strata_has_not_with_linuxs_errnos() {
        let e = |d, t, p| open(d, t, p).unwrap_err();
        assert_eq!(e(libc::AF_UNIX, libc::SOCK_DGRAM, 0), libc::EAFNOSUPPORT);
        assert_eq!(e(libc::AF_PACKET, libc::SOCK_DGRAM, 0), libc::EAFNOSUPPORT);
        assert_eq!(e(-1, libc::SOCK_DGRAM, 0), libc::EAFNOSUPPORT);
        assert_eq!(e(libc::AF_INET, libc::SOCK_STREAM | 0x100, 0), libc::EINVAL);
        assert_eq!(e(libc::AF_INET, 14, 0), libc::EINVAL);
        assert_eq!(
            e(libc::AF_INET, libc::SOCK_SEQPACKET, 0),
            libc::ESOCKTNOSUPPORT
        );
        assert_eq!(e(libc::AF_INET, libc::SOCK_RAW, 1), libc::ESOCKTNOSUPPORT);
        assert_eq!(
            e(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_UDP),
            libc::EPROTONOSUPPORT
        );
        assert_eq!(
            e(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_TCP),
            libc::EPROTONOSUPPORT
        );
        // AF_INET6 passes the family check: the same checks follow.
        assert_eq!(
            e(libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_UDP),
            libc::EPROTONOSUPPORT
        );
        assert_eq!(
            e(libc::AF_INET6, libc::SOCK_SEQPACKET, 0),
            libc::ESOCKTNOSUPPORT
        );
        assert_eq!(e(libc::AF_INET6, libc::SOCK_DGRAM | 0x100, 0), libc::EINVAL);
    }

    #[test]
    fn inet6_sockets_are_made_not_refused() {
        // Without a stack: the errno of "no stack", never EAFNOSUPPORT;
        // with one (a stack runs here), a socket.
        for ty in [libc::SOCK_STREAM, libc::SOCK_DGRAM] {
            match open(libc::AF_INET6, ty | libc::SOCK_CLOEXEC, 0) {
                Ok(fd) => {
                    let s = table::get(fd).unwrap();
                    assert!(s.v6);
                    assert!(!s.only_v6(), "dual-stack by default");
                    assert!(s.local_addr().unwrap().is_ipv6());
                    drop(s);
                    close(fd).unwrap();
                }
                Err(e) => assert!(
                    e == libc::ENOENT || e == libc::ECONNREFUSED,
                    "AF_INET6 type {ty}: errno {e}"
                ),
            }
        }
    }

    #[test]
    fn addresses_are_shown_in_the_sockets_family() {
        let v4: SocketAddr = "10.77.0.1:53".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.77.0.1]:53".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:53".parse().unwrap();
        // AF_INET6: IPv4 peers as ::ffff:a.b.c.d, IPv6 ones as they are.
        assert_eq!(shown(true, v4), mapped);
        assert_eq!(shown(true, mapped), mapped);
        assert_eq!(shown(true, v6), v6);
        // AF_INET: IPv4 only.
        assert_eq!(shown(false, v4), v4);
        assert_eq!(shown(false, mapped), v4);
        assert_eq!(any(false).to_string(), "0.0.0.0:0");
        assert_eq!(any(true).to_string(), "[::]:0");
    }

    #[test]
    fn instance_names_that_are_no_path_component_are_refused() {
        assert_eq!(set_instance(""), Err(libc::EINVAL));
        assert_eq!(set_instance("a/b"), Err(libc::EINVAL));
    }
}
