//! UDP sockets: [`UdpSocket`].

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use strata_ipc::sockring::{wait, REC_HDR};
use strata_proto::sock::{Request, SockOpt};

use crate::addr::{each_addr, resolve_one, shown, Use};
use crate::core::{would_block, Core, Readiness};
use crate::session::lock;
use crate::stack::Builder;

/// Largest UDP payload over IPv4 (65535 − 20 − 8), as Linux enforces;
/// libsock holds datagrams of IPv6 sockets to it too.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// EMSGSIZE for datagrams larger than UDP allows or the ring can hold.
pub(crate) fn check_dgram_len(len: usize, ring_max: usize) -> io::Result<()> {
    if len > MAX_UDP_PAYLOAD || len > ring_max {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok(())
}

/// A UDP socket on a strata stack, with the API of
/// [`std::net::UdpSocket`].
///
/// Datagrams travel through shared memory between the application and
/// sockd: sending queues a datagram in the socket's send ring (blocking,
/// or `WouldBlock`, only while the ring is full), receiving takes one
/// from its receive ring (blocking while it is empty). Errors come out
/// with the kinds and raw OS errors `std` gives on Linux.
///
/// A socket is IPv4 or IPv6 after the address it was bound to, as std's
/// are (see [the crate docs](crate#ipv4-and-ipv6)): an IPv6 socket is
/// dual-stack unless `IPV6_V6ONLY` is set
/// ([`Builder::only_v6`](crate::Builder::only_v6)), and shows IPv4 peers
/// as `::ffff:a.b.c.d`.
///
/// The socket is closed when the value (and every
/// [`try_clone`](UdpSocket::try_clone)) is dropped.
///
/// ```no_run
/// use libsock::UdpSocket;
///
/// // An echo server.
/// let sock = UdpSocket::bind("0.0.0.0:7")?;
/// let mut buf = [0u8; 1500];
/// loop {
///     let (n, from) = sock.recv_from(&mut buf)?;
///     sock.send_to(&buf[..n], from)?;
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct UdpSocket {
    core: Arc<Core>,
}

impl UdpSocket {
    /// The socket behind it.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub(crate) fn from_core(core: Arc<Core>) -> UdpSocket {
        UdpSocket { core }
    }

    /// Creates a socket bound to `addr` on the stack named by
    /// `STRATA_INSTANCE` (default `"default"`). Port 0 picks a free
    /// port. With several addresses (of either family), the first that
    /// binds wins. The socket is IPv6 for an IPv6 address: `[::]:p` binds
    /// both families (dual-stack), `0.0.0.0:p` IPv4 only.
    ///
    /// Fails at once when no such stack runs; `AddrInUse` when the port
    /// is taken (`[::]:p` also by an IPv4 socket on `p`).
    ///
    /// ```no_run
    /// let v4 = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// let both = libsock::UdpSocket::bind("[::]:0")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        Builder::new().udp_bind(addr)
    }

    /// A [`Builder`] for sockets `bind` cannot make: on another stack,
    /// with `SO_REUSEADDR` or `IPV6_V6ONLY`, with other ring sizes, or
    /// unbound.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::builder()
    ///     .instance("lab")
    ///     .reuse_address(true)
    ///     .udp_bind("0.0.0.0:5000")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Receives one datagram: copies it into `buf` (cutting what does not
    /// fit, as Linux does) and returns the bytes copied and the sender
    /// (on an IPv6 socket always `SocketAddr::V6`, an IPv4 sender as
    /// `::ffff:a.b.c.d`).
    ///
    /// Blocks while no datagram is queued, up to the read timeout (then
    /// `WouldBlock`, like std on Linux); in non-blocking mode returns
    /// `WouldBlock` at once.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:9000")?;
    /// let mut buf = [0u8; 2048];
    /// let (n, from) = sock.recv_from(&mut buf)?;
    /// println!("{n} bytes from {from}");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_inner(buf, false)
    }

    /// Like [`recv_from`](UdpSocket::recv_from), but leaves the datagram
    /// queued: the next receive returns it again.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:9000")?;
    /// let mut head = [0u8; 4];
    /// let (_, from) = sock.peek_from(&mut head)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_inner(buf, true)
    }

    /// Sends `buf` as one datagram to `addr` (its first address, as std
    /// does), and returns its length. An unbound socket is bound to a
    /// free port by the first send.
    ///
    /// The address must fit the socket's family, as on Linux: an IPv4
    /// socket takes IPv4 addresses (and IPv4-mapped IPv6 ones, as the
    /// IPv4 they map), other IPv6 addresses fail with `EAFNOSUPPORT`; an
    /// IPv6 socket takes IPv6 addresses and sends to a `SocketAddr::V4`
    /// as to its mapped address `::ffff:a.b.c.d` (Linux takes an
    /// `AF_INET` address there too), but with `IPV6_V6ONLY` any IPv4
    /// destination fails with `ENETUNREACH`.
    ///
    /// Blocks only while the send ring is full (up to the write timeout,
    /// then `WouldBlock`). Datagrams over 65507 bytes (or over what the
    /// ring can hold) fail with `EMSGSIZE`; port 0 with `EINVAL`.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// sock.send_to(b"ping", "10.77.0.1:7")?;
    /// let sock6 = libsock::UdpSocket::bind("[::]:0")?;
    /// sock6.send_to(b"ping", "[fd00::1]:7")?;
    /// sock6.send_to(b"ping", "10.77.0.1:7")?; // to ::ffff:10.77.0.1
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let to = resolve_one(addr)?;
        if to.port() == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let to = SocketAddr::from(self.core.wire(Use::Send, to)?);
        self.core.bind_before_send()?;
        self.send_inner(buf, to)
    }

    /// The address of the peer this socket is connected to; `NotConnected`
    /// if it is not. On an IPv6 socket an IPv4 peer shows as
    /// `::ffff:a.b.c.d`.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// sock.connect("10.77.0.1:53")?;
    /// assert_eq!(sock.peer_addr()?, "10.77.0.1:53".parse::<std::net::SocketAddr>().unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.core.peer_addr()
    }

    /// The local address (`0.0.0.0:0` while unbound, `[::]:0` for an
    /// IPv6 socket).
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// println!("port {}", sock.local_addr()?.port());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.core.local_addr()
    }

    /// Another handle to the same socket (options, timeouts and
    /// non-blocking mode are shared, as with `dup(2)`).
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:7")?;
    /// let sender = sock.try_clone()?;
    /// std::thread::spawn(move || sender.send_to(b"hi", "10.77.0.1:7"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            core: self.core.clone(),
        })
    }

    /// Sets how long a receive may block (`None`: forever). Zero is an
    /// error (`InvalidInput`), as in std. A receive that times out fails
    /// with `WouldBlock`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    /// let mut buf = [0u8; 1500];
    /// match sock.recv_from(&mut buf) {
    ///     Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => println!("nothing came"),
    ///     r => println!("{r:?}"),
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.core.set_read_timeout(dur)
    }

    /// Sets how long a send may block on a full ring (`None`: forever).
    /// Zero is an error (`InvalidInput`).
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// sock.set_write_timeout(Some(Duration::from_secs(1)))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.core.set_write_timeout(dur)
    }

    /// The read timeout.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// assert_eq!(sock.read_timeout()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.core.read_timeout())
    }

    /// The write timeout.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// assert_eq!(sock.write_timeout()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.core.write_timeout())
    }

    /// Connects the socket to `addr` (the first address that works):
    /// [`send`](UdpSocket::send) goes there, and only datagrams from
    /// there are received. Connecting to `0.0.0.0` (or `::`) dissolves
    /// the association.
    ///
    /// Addresses must fit the socket's family as for
    /// [`send_to`](UdpSocket::send_to): an IPv6 socket connects to an
    /// IPv4 address as to its mapped one, but with `IPV6_V6ONLY` fails
    /// with `EAFNOSUPPORT` (a `SocketAddr::V4`) or `ENETUNREACH` (a
    /// mapped one), as on Linux; an IPv4 socket fails with
    /// `EAFNOSUPPORT` for an IPv6 address that is not IPv4-mapped.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// sock.connect("10.77.0.1:7")?;
    /// sock.send(b"ping")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        let c = &*self.core;
        each_addr(addr, |a| {
            let w = c.wire(Use::Connect, a)?;
            c.request(&Request::Connect { id: c.id, addr: w })?;
            let dissolved = strata_ipc::addrs::is_any(w.ip);
            *lock(&c.peer) = (!dissolved).then_some(a);
            // Connected: bound. Disconnected: the binding the connect
            // made may be gone.
            c.set_maybe_unbound(dissolved);
            Ok(())
        })
    }

    /// Binds a socket that is not bound yet (one from
    /// [`Builder::udp_unbound`] or [`Builder::udp_unbound_v6`]) to
    /// `addr` (the first address that works), as `bind(2)` binds a
    /// socket made by `socket(2)`. Port 0 picks a free port. A socket
    /// that is bound already (also by its first send) fails with
    /// `EINVAL`, as on Linux; a port in use with `AddrInUse`.
    ///
    /// The address must be of the socket's family, as on Linux: an IPv4
    /// socket fails with `EAFNOSUPPORT` for an IPv6 address (one that
    /// maps IPv4 counts as that IPv4), an IPv6 socket with `EINVAL` for
    /// a `SocketAddr::V4` (give `::ffff:a.b.c.d` to bind it to an IPv4
    /// address, which `IPV6_V6ONLY` refuses with `EINVAL`).
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::builder().udp_unbound()?;
    /// sock.bind_to("0.0.0.0:5353")?;
    /// assert_eq!(sock.local_addr()?.port(), 5353);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind_to<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        let c = &*self.core;
        each_addr(addr, |a| {
            let w = c.wire(Use::Bind, a)?;
            c.request(&Request::Bind { id: c.id, addr: w })?;
            c.set_maybe_unbound(false);
            Ok(())
        })
    }

    /// `IPV6_V6ONLY`, for an IPv6 socket not bound yet (one from
    /// [`Builder::udp_unbound_v6`]): with it, a bind to `[::]:p` takes
    /// IPv6 only (another socket may have IPv4's `0.0.0.0:p`), and
    /// IPv4 peers are refused. It takes effect at
    /// [`bind_to`](UdpSocket::bind_to) (or the bind of the first send).
    /// [`Builder::only_v6`] sets it as the socket is made.
    ///
    /// Errors as on Linux: `EINVAL` once the socket is bound,
    /// `ENOPROTOOPT` on an IPv4 socket (the option is IPv6's).
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::builder().udp_unbound_v6()?;
    /// sock.set_only_v6(true)?;
    /// sock.bind_to("[::]:5353")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_only_v6(&self, only_v6: bool) -> io::Result<()> {
        self.core.set_only_v6(only_v6)
    }

    /// `IPV6_V6ONLY` as set (off by default: dual-stack, as Linux's
    /// `net.ipv6.bindv6only = 0`); `ENOPROTOOPT` on an IPv4 socket.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("[::]:0")?;
    /// assert!(!sock.only_v6()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn only_v6(&self) -> io::Result<bool> {
        self.core.only_v6()
    }

    /// `SO_REUSEADDR`, for a socket not bound yet: it takes effect at
    /// [`bind_to`](UdpSocket::bind_to) (or at the bind of the first
    /// send), as `setsockopt(2)` before `bind(2)` does.
    /// [`Builder::reuse_address`] sets it for a socket as it is made.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::builder().udp_unbound()?;
    /// sock.set_reuse_address(true)?;
    /// sock.bind_to("0.0.0.0:5353")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_reuse_address(&self, on: bool) -> io::Result<()> {
        self.core.request(&Request::SetOption {
            id: self.core.id,
            opt: SockOpt::ReuseAddr(on),
        })
    }

    /// `SO_REUSEPORT`, for a socket not bound yet: sockets of one user
    /// that all set it may bind the same address and port, and the stack
    /// gives each peer's datagrams to one of them (chosen by the peer's
    /// address and port). [`Builder::reuse_port`] sets it as the socket
    /// is made.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::builder().udp_unbound()?;
    /// sock.set_reuse_port(true)?;
    /// sock.bind_to("0.0.0.0:5353")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_reuse_port(&self, on: bool) -> io::Result<()> {
        self.core.request(&Request::SetOption {
            id: self.core.id,
            opt: SockOpt::ReusePort(on),
        })
    }

    /// Sends `buf` to the connected peer; `EDESTADDRREQ` if there is
    /// none. Otherwise as [`send_to`](UdpSocket::send_to).
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// sock.connect("10.77.0.1:7")?;
    /// sock.send(b"ping")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        if lock(&self.core.peer).is_none() {
            return Err(io::Error::from_raw_os_error(libc::EDESTADDRREQ));
        }
        // 0.0.0.0:0 in the ring means "the connected peer".
        self.send_inner(buf, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())
    }

    /// Receives one datagram from the connected peer into `buf` (cut to
    /// fit). Otherwise as [`recv_from`](UdpSocket::recv_from).
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// sock.connect("10.77.0.1:7")?;
    /// sock.send(b"ping")?;
    /// let mut buf = [0u8; 1500];
    /// let n = sock.recv(&mut buf)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_inner(buf, false).map(|(n, _)| n)
    }

    /// Like [`recv`](UdpSocket::recv), but leaves the datagram queued.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// sock.connect("10.77.0.1:7")?;
    /// let mut buf = [0u8; 1500];
    /// let n = sock.peek(&mut buf)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_inner(buf, true).map(|(n, _)| n)
    }

    /// Non-blocking mode: calls that would wait fail with `WouldBlock`
    /// instead. Use it with the readiness fd ([`AsRawFd`]).
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:9000")?;
    /// sock.set_nonblocking(true)?;
    /// let mut buf = [0u8; 1500];
    /// match sock.recv_from(&mut buf) {
    ///     Ok((n, from)) => println!("{n} bytes from {from}"),
    ///     Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.core.set_nonblocking(nonblocking);
        Ok(())
    }

    /// Takes the pending socket error (`SO_ERROR`), e.g.
    /// `ConnectionRefused` after an ICMP port unreachable on a connected
    /// socket. The next call on the socket would have returned it instead;
    /// it is reported once either way.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// if let Some(e) = sock.take_error()? {
    ///     eprintln!("socket error: {e}");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(self.core.take_error())
    }

    /// Datagrams the stack dropped because the receive ring was full
    /// (since the socket was made).
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:9000")?;
    /// println!("{} dropped", sock.dropped_datagrams());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn dropped_datagrams(&self) -> u64 {
        self.core.mem.hdr().rx_drops.load(Ordering::Relaxed)
    }

    /// The readiness fd an event loop watches ([`AsRawFd`] gives the same
    /// fd, or where this fails one that is always readable): made on the first call, a wake pair
    /// whose other end the stack kicks on every change. A socket no
    /// event loop watches has none, and costs no fd.
    ///
    /// ```no_run
    /// let s = libsock::UdpSocket::bind("0.0.0.0:9000")?;
    /// let fd = s.readiness_fd()?; // register with epoll for EPOLLIN
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn readiness_fd(&self) -> io::Result<RawFd> {
        self.core.readiness_fd()
    }

    /// What calls could do now without waiting (no system call), as
    /// `poll(2)` reports a UDP socket: `readable` with a datagram queued
    /// or an error pending, `writable` with room for a datagram in the
    /// send ring.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?;
    /// assert!(sock.readiness().writable);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn readiness(&self) -> Readiness {
        self.core.readiness(false)
    }

    /// Bytes of the next datagram waiting (0: none), as `FIONREAD`
    /// reports for a UDP socket.
    pub fn next_datagram_len(&self) -> usize {
        let c = &*self.core;
        let _rx = lock(&c.rx_lock);
        c.mem
            .peek_recv()
            .map_or(0, |r| c.mem.record_bytes(false, &r).len())
    }

    fn recv_inner(&self, buf: &mut [u8], peek: bool) -> io::Result<(usize, SocketAddr)> {
        let c = &*self.core;
        c.block_on(wait::RX, c.read_timeout(), would_block, || {
            c.check()?;
            let _rx = lock(&c.rx_lock);
            let Some(r) = c.mem.peek_recv() else {
                return Ok(None);
            };
            let data = c.mem.record_bytes(false, &r);
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            if !peek {
                c.mem.consume_recv(&r);
            }
            Ok(Some((n, shown(c.family, r.addr))))
        })
    }

    /// Queues `buf` for `to` (what the ring holds: an IPv4 address for
    /// a mapped one; `0.0.0.0:0` for the connected peer).
    fn send_inner(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let c = &*self.core;
        check_dgram_len(buf.len(), c.mem.max_tx_dgram())?;
        let need = REC_HDR + buf.len().next_multiple_of(8);
        c.block_on(wait::TX, c.write_timeout(), would_block, || {
            c.check()?;
            let queued = {
                let _tx = lock(&c.tx_lock);
                c.mem.send_dgram(to, buf)
            };
            if queued {
                c.set_tx_need(0);
                c.sent();
                Ok(Some(buf.len()))
            } else {
                c.set_tx_need(need);
                Ok(None)
            }
        })
    }
}

/// The socket's readiness fd, for an event loop (epoll, mio, poll(2)).
///
/// Register it for readability. It becomes readable when anything about
/// the socket changes (a datagram arrived, the send ring has room again,
/// an error is pending, the stack went away); it does not say which, so
/// put the socket in non-blocking mode and call `recv_from` / `send_to`
/// until they return `WouldBlock`. Do not read the fd yourself: a call
/// that returns `WouldBlock` empties it, and it stays readable until
/// then, so level- and edge-triggered loops both work.
///
/// The first call switches sockd to kicking this fd on every change
/// (a little more work per datagram), so call it only to register the
/// fd. The fd belongs to the socket: it is valid as long as the socket.
///
/// ```no_run
/// use std::os::fd::AsRawFd;
///
/// let sock = libsock::UdpSocket::bind("0.0.0.0:9000")?;
/// sock.set_nonblocking(true)?;
/// let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
/// let mut buf = [0u8; 1500];
/// loop {
///     unsafe { libc::poll(&mut pfd, 1, -1) };
///     loop {
///         match sock.recv_from(&mut buf) {
///             Ok((n, from)) => { sock.send_to(&buf[..n], from)?; }
///             Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
///             Err(e) => return Err(e),
///         }
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.core.raw_readiness_fd()
    }
}

/// The readiness fd, borrowed; see [`AsRawFd`](#impl-AsRawFd-for-UdpSocket).
///
/// ```no_run
/// use std::os::fd::AsFd;
///
/// let sock = libsock::UdpSocket::bind("0.0.0.0:9000")?;
/// let fd = sock.as_fd();
/// # Ok::<(), std::io::Error>(())
/// ```
impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the wake end lives as long as the socket's core, which
        // `self` keeps alive for the borrow.
        unsafe { BorrowedFd::borrow_raw(self.core.raw_readiness_fd()) }
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("instance", &self.core.session.instance())
            .field("id", &self.core.id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_datagrams_are_emsgsize_like_linux() {
        let ring_max = 256 << 10;
        assert!(check_dgram_len(MAX_UDP_PAYLOAD, ring_max).is_ok());
        assert!(check_dgram_len(0, ring_max).is_ok());
        let e = check_dgram_len(MAX_UDP_PAYLOAD + 1, ring_max).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
        // Small rings cap it further instead of waiting forever.
        let e = check_dgram_len(5000, 4096 - 2 * REC_HDR).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
    }
}
