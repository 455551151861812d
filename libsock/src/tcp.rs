//! TCP sockets: [`TcpListener`] and [`TcpStream`].
//!
//! The control half (socket, bind, listen, accept, connect, shutdown,
//! options, names, readiness, recovery) talks to sockd; the data half is
//! [`stream_read`] and [`stream_write`] below, on byte rings in the
//! socket's shared memory.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use strata_ipc::sockring::{state, wait};
use strata_proto::sock::{How, Kind, Request, SockOpt};

use crate::addr::{self, Family, Use};
use crate::core::{would_block, Core, Readiness};
use crate::session::lock;
use crate::stack::Builder;

/// Reads (or peeks) stream bytes from the socket's receive ring, waiting
/// for data while the ring is empty (0 at end-of-file).
fn stream_read(c: &Core, buf: &mut [u8], peek: bool) -> io::Result<usize> {
    if buf.is_empty() {
        c.check()?;
        return Ok(0);
    }
    let n = c.block_on(wait::RX, c.read_timeout(), would_block, || {
        c.check()?;
        take_stream(
            || {
                let _rx = lock(&c.rx_lock);
                c.mem.read_stream(buf, peek)
            },
            || c.state(),
        )
    })?;
    if !peek && n > 0 {
        c.read_done();
    }
    Ok(n)
}

/// One attempt of a stream read: `Some(n)` bytes read (0: the end), or
/// `None` to wait. `read` copies from the ring, `state` loads the
/// socket's state word.
fn take_stream(
    mut read: impl FnMut() -> usize,
    state: impl Fn() -> u32,
) -> io::Result<Option<usize>> {
    let n = read();
    if n > 0 {
        return Ok(Some(n));
    }
    let st = state();
    if st & state::RESET != 0 {
        return Err(io::Error::from_raw_os_error(libc::ECONNRESET));
    }
    if st & state::EOF != 0 {
        // sockd shows the end only after the last bytes are in the ring,
        // but they may have arrived between the read above and this look
        // at the state: read again, and only an empty ring is the end.
        return Ok(Some(read()));
    }
    if st & state::CONNECTED == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
    }
    Ok(None)
}

/// Writes stream bytes into the socket's send ring: as much as fits now,
/// waiting for room only when none does.
fn stream_write(c: &Core, buf: &[u8]) -> io::Result<usize> {
    if buf.is_empty() {
        c.check()?;
        return Ok(0);
    }
    c.block_on(wait::TX, c.write_timeout(), would_block, || {
        c.check()?;
        let st = c.state();
        if st & state::RESET != 0 {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        if st & state::CONNECTED == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
        }
        let n = {
            let _tx = lock(&c.tx_lock);
            c.mem.write_stream(buf)
        };
        if n > 0 {
            c.set_tx_need(0);
            c.sent();
            Ok(Some(n))
        } else {
            c.set_tx_need(1);
            Ok(None)
        }
    })
}

/// `io::ErrorKind::TimedOut`, as std's `connect_timeout` reports it.
fn connect_timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
}

/// Opens a socket of `a`'s family and asks sockd to connect it to `a`,
/// without waiting for the handshake; in non-blocking mode when
/// `nonblocking`.
fn connect_begin(b: &Builder, a: SocketAddr, nonblocking: bool) -> io::Result<Arc<Core>> {
    let family = Family::of(&a);
    // Refused before a socket is made for it (IPV6_V6ONLY and a mapped
    // peer).
    let to = addr::to_wire(family, b.v6only_for(family), Use::Connect, a)?;
    let core = b.open(Kind::Tcp, family, false)?;
    core.set_nonblocking(nonblocking);
    match core.request(&Request::Connect {
        id: core.id,
        addr: to,
    }) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(core)
}

/// Waits up to `timeout` (not at all in non-blocking mode: `WouldBlock`)
/// for the handshake `connect_begin` started.
fn connect_wait(c: &Core, timeout: Option<Duration>) -> io::Result<()> {
    c.block_on(wait::TX, timeout, connect_timed_out, || {
        c.check()?;
        let s = c.state();
        if s & state::CONNECTED != 0 {
            Ok(Some(()))
        } else if s & state::RESET != 0 {
            Err(io::Error::from_raw_os_error(libc::ECONNREFUSED))
        } else {
            Ok(None)
        }
    })
}

/// Connects one socket to `a`, waiting up to `timeout` for the handshake.
pub(crate) fn connect_one(
    b: &Builder,
    a: SocketAddr,
    timeout: Option<Duration>,
) -> io::Result<TcpStream> {
    let core = connect_begin(b, a, false)?;
    connect_wait(&core, timeout)?;
    Ok(TcpStream { core })
}

/// Starts connecting one socket to `a` and returns it at once, in
/// non-blocking mode: its readiness fd fires when the handshake ends, and
/// [`TcpStream::connect_finished`] says how.
pub(crate) fn connect_nonblocking(b: &Builder, a: SocketAddr) -> io::Result<TcpStream> {
    Ok(TcpStream {
        core: connect_begin(b, a, true)?,
    })
}

/// A TCP listening socket on a strata stack, with the API of
/// [`std::net::TcpListener`].
///
/// ```no_run
/// use std::io::Write;
/// use libsock::TcpListener;
///
/// let listener = TcpListener::bind("0.0.0.0:8080")?;
/// for stream in listener.incoming() {
///     let mut stream = stream?;
///     stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello\n")?;
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpListener {
    core: Arc<Core>,
    /// Ring sizes for accepted streams.
    rings: (usize, usize),
}

/// A listener's readiness: readable when a connection waits (or on an
/// error or the end), never writable.
pub(crate) fn listener_readiness(core: &Core) -> Readiness {
    let mut r = core.readiness(false);
    r.writable = false;
    let waiting = core.mem.accept_ready().is_some_and(|n| n > 0) || core.accepted_ahead() > 0;
    r.readable = r.error || r.hangup || waiting;
    r
}

impl TcpListener {
    /// The socket behind it.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub(crate) fn from_core(core: Arc<Core>, rings: (usize, usize)) -> TcpListener {
        TcpListener { core, rings }
    }

    /// Creates a listener bound to `addr` (the first address that works,
    /// of either family) on the stack named by `STRATA_INSTANCE`, with
    /// `SO_REUSEADDR` and a backlog of 128, as std does. Port 0 picks a
    /// free port. `[::]:p` listens on both families (dual-stack: IPv4
    /// peers show as `::ffff:a.b.c.d`) unless `IPV6_V6ONLY` is set
    /// ([`Builder::only_v6`]); `0.0.0.0:p` on IPv4 only. A stack whose
    /// TCP does not take IPv6 yet refuses an IPv6 listener with
    /// `EAFNOSUPPORT`.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::bind("0.0.0.0:0")?;
    /// println!("listening on {}", listener.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        Builder::new().tcp_bind(addr)
    }

    /// A [`Builder`] (another stack, backlog, `SO_REUSEADDR`,
    /// `IPV6_V6ONLY`, ring sizes of accepted streams).
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::builder()
    ///     .instance("lab")
    ///     .backlog(1024)
    ///     .tcp_bind("0.0.0.0:80")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The local address.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::bind("0.0.0.0:0")?;
    /// let port = listener.local_addr()?.port();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.core.local_addr()
    }

    /// `IPV6_V6ONLY`, as std's (deprecated) `set_only_v6`: the option
    /// must be set before the bind, and a listener is bound, so this
    /// fails as it does on Linux: `EINVAL` on an IPv6 listener,
    /// `ENOPROTOOPT` on an IPv4 one. Set it with
    /// [`Builder::only_v6`] instead.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::builder().only_v6(true).tcp_bind("[::]:8080")?;
    /// assert!(listener.only_v6()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_only_v6(&self, only_v6: bool) -> io::Result<()> {
        self.core.set_only_v6(only_v6)
    }

    /// `IPV6_V6ONLY`: whether an IPv6 listener takes IPv6 connections
    /// only (off by default: dual-stack); `ENOPROTOOPT` on an IPv4
    /// listener, as on Linux.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::bind("[::]:8080")?;
    /// assert!(!listener.only_v6()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn only_v6(&self) -> io::Result<bool> {
        self.core.only_v6()
    }

    /// Another handle to the same listener.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::bind("0.0.0.0:8080")?;
    /// let other = listener.try_clone()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        Ok(TcpListener::from_core(self.core.clone(), self.rings))
    }

    /// Takes the next connection from the accept queue, waiting for one
    /// (in non-blocking mode: `WouldBlock` when none waits). Returns the
    /// stream and the peer's address (on an IPv6 listener always
    /// `SocketAddr::V6`, an IPv4 peer as `::ffff:a.b.c.d`). The stream
    /// is of the listener's family.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::bind("0.0.0.0:8080")?;
    /// let (stream, peer) = listener.accept()?;
    /// println!("connection from {peer}");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let c = &*self.core;
        let t = c.block_on(wait::RX, None, would_block, || {
            c.check()?;
            c.take_connection(self.rings.0, self.rings.1)
        })?;
        let core = Core::from_parts(c.session.clone(), t.id, c.family, t.attach);
        core.inherit_only_v6(c);
        Ok((TcpStream { core }, addr::from_wire(c.family, t.peer)))
    }

    /// An iterator over incoming connections: [`accept`] in a loop
    /// (never `None`).
    ///
    /// [`accept`]: TcpListener::accept
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::bind("0.0.0.0:8080")?;
    /// for stream in listener.incoming() {
    ///     match stream {
    ///         Ok(s) => println!("from {}", s.peer_addr()?),
    ///         Err(e) => eprintln!("accept failed: {e}"),
    ///     }
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// Non-blocking mode for [`accept`](TcpListener::accept).
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::bind("0.0.0.0:8080")?;
    /// listener.set_nonblocking(true)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.core.set_nonblocking(nonblocking);
        Ok(())
    }

    /// The readiness fd an event loop watches ([`AsRawFd`] gives the same
    /// fd, or where this fails one that is always readable): made on the first call, a wake pair
    /// whose other end the stack kicks on every change. A socket no
    /// event loop watches has none, and costs no fd.
    ///
    /// ```no_run
    /// let s = libsock::TcpListener::bind("0.0.0.0:8080")?;
    /// let fd = s.readiness_fd()?; // register with epoll for EPOLLIN
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn readiness_fd(&self) -> io::Result<RawFd> {
        self.core.readiness_fd()
    }

    /// Whether an `accept` would not wait, without waiting (as
    /// `poll(2)` reports a listener): `readable` when a connection waits
    /// ([`pending_accepts`](TcpListener::pending_accepts)) or an error
    /// is pending. From a stack that does not count them, `readable`
    /// means the readiness fd was kicked since a non-blocking `accept`
    /// last found none (one `poll` with no timeout), and an `accept` may
    /// then still answer `WouldBlock` once.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::bind("0.0.0.0:8080")?;
    /// if listener.readiness().readable { /* accept */ }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn readiness(&self) -> Readiness {
        listener_readiness(&self.core)
    }

    /// Connections waiting for `accept`: as the stack counts them in the
    /// listener's shared memory (no request to sockd), and those an
    /// earlier `accept` took along (one accept takes a burst in one
    /// request and keeps the rest for the next calls); `None` from a
    /// stack that does not count them.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::bind("0.0.0.0:8080")?;
    /// println!("{:?} waiting", listener.pending_accepts());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pending_accepts(&self) -> Option<usize> {
        let ahead = self.core.accepted_ahead();
        self.core.mem.accept_ready().map(|n| n as usize + ahead)
    }

    /// Takes the pending socket error (`SO_ERROR`), reported once.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::bind("0.0.0.0:8080")?;
    /// if let Some(e) = listener.take_error()? {
    ///     eprintln!("{e}");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(self.core.take_error())
    }
}

/// The readiness fd (see [`UdpSocket`'s](crate::UdpSocket#impl-AsRawFd-for-UdpSocket)):
/// readable when a connection may be waiting; then call `accept` in
/// non-blocking mode until `WouldBlock`.
///
/// ```no_run
/// use std::os::fd::AsRawFd;
///
/// let listener = libsock::TcpListener::bind("0.0.0.0:8080")?;
/// listener.set_nonblocking(true)?;
/// let fd = listener.as_raw_fd(); // register with epoll for EPOLLIN
/// # Ok::<(), std::io::Error>(())
/// ```
impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.core.raw_readiness_fd()
    }
}

/// The readiness fd, borrowed.
///
/// ```no_run
/// use std::os::fd::AsFd;
///
/// let listener = libsock::TcpListener::bind("0.0.0.0:8080")?;
/// let fd = listener.as_fd();
/// # Ok::<(), std::io::Error>(())
/// ```
impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the wake end lives as long as the core `self` holds.
        unsafe { BorrowedFd::borrow_raw(self.core.raw_readiness_fd()) }
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("instance", &self.core.session.instance())
            .field("id", &self.core.id)
            .finish()
    }
}

/// The iterator of [`TcpListener::incoming`].
///
/// ```no_run
/// let listener = libsock::TcpListener::bind("0.0.0.0:8080")?;
/// let mut incoming: libsock::Incoming<'_> = listener.incoming();
/// let first = incoming.next();
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

/// A TCP connection on a strata stack, with the API of
/// [`std::net::TcpStream`].
///
/// ```no_run
/// use std::io::{Read, Write};
/// use libsock::TcpStream;
///
/// let mut stream = TcpStream::connect("10.77.0.1:80")?;
/// stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
/// let mut reply = Vec::new();
/// stream.read_to_end(&mut reply)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct TcpStream {
    core: Arc<Core>,
}

impl TcpStream {
    /// The socket behind it.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Connects to `addr` (each address in turn until one answers, of
    /// either family) from the stack named by `STRATA_INSTANCE`,
    /// blocking until the handshake completes or fails
    /// (`ConnectionRefused`, `TimedOut`...). The stream is IPv6 for an
    /// IPv6 address (an IPv4-mapped one too, as with std); a stack whose
    /// TCP does not take IPv6 yet refuses it with `EAFNOSUPPORT`.
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        Builder::new().tcp_connect(addr)
    }

    /// Connects to `addr`, giving up after `timeout` with `TimedOut`. A
    /// zero timeout is `InvalidInput`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let addr = "10.77.0.1:80".parse().unwrap();
    /// let stream = libsock::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        Builder::new().tcp_connect_timeout(addr, timeout)
    }

    /// How the handshake of a stream from
    /// [`Builder::tcp_connect_nonblocking`] went: `Ok(true)` once
    /// connected, `Ok(false)` while it goes on, the error
    /// (`ConnectionRefused`, `TimedOut`, ...) if it failed, as `SO_ERROR`
    /// reports it after a non-blocking `connect(2)`. The error is
    /// reported once.
    ///
    /// In non-blocking mode (the mode such a stream starts in) it never
    /// waits, and an `Ok(false)` clears the readiness fd as a
    /// `WouldBlock` does; in blocking mode it waits for the end of the
    /// handshake. A stream that connected long ago says `Ok(true)`.
    ///
    /// ```no_run
    /// let addr = "10.77.0.1:80".parse().unwrap();
    /// let stream = libsock::TcpStream::builder().tcp_connect_nonblocking(&addr)?;
    /// // ... when its readiness fd fires:
    /// if stream.connect_finished()? {
    ///     println!("connected to {}", stream.peer_addr()?);
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connect_finished(&self) -> io::Result<bool> {
        match connect_wait(&self.core, None) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A [`Builder`] (another stack, ring sizes).
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::builder()
    ///     .instance("lab")
    ///     .ring_sizes(1 << 20, 1 << 20)
    ///     .tcp_connect("10.77.0.1:5001")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The peer's address (on an IPv6 stream always `SocketAddr::V6`,
    /// an IPv4 peer as `::ffff:a.b.c.d`).
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// assert_eq!(stream.peer_addr()?, "10.77.0.1:80".parse::<std::net::SocketAddr>().unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.core.peer_addr()
    }

    /// The local address, of the stream's family.
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// println!("from {}", stream.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.core.local_addr()
    }

    /// Shuts down the read half, the write half (a FIN after what is
    /// queued), or both.
    ///
    /// ```no_run
    /// use std::net::Shutdown;
    ///
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// stream.shutdown(Shutdown::Write)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => How::Read,
            Shutdown::Write => How::Write,
            Shutdown::Both => How::Both,
        };
        self.core.request(&Request::Shutdown {
            id: self.core.id,
            how,
        })
    }

    /// Another handle to the same connection (options, timeouts and
    /// non-blocking mode are shared).
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// let reader = stream.try_clone()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream {
            core: self.core.clone(),
        })
    }

    /// Sets how long a read may block (`None`: forever; zero is
    /// `InvalidInput`). A read that times out fails with `WouldBlock`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_read_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.core.set_read_timeout(dur)
    }

    /// Sets how long a write may block on a full send ring.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_write_timeout(&self, dur: Option<Duration>) -> io::Result<()> {
        self.core.set_write_timeout(dur)
    }

    /// The read timeout.
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// assert_eq!(stream.read_timeout()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.core.read_timeout())
    }

    /// The write timeout.
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// assert_eq!(stream.write_timeout()?, None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.core.write_timeout())
    }

    /// Reads without consuming: the next read returns the same bytes.
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// let mut buf = [0u8; 16];
    /// let n = stream.peek(&mut buf)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        stream_read(&self.core, buf, true)
    }

    /// `TCP_NODELAY`: send small segments at once instead of coalescing
    /// them (Nagle's algorithm off).
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// stream.set_nodelay(true)?;
    /// assert!(stream.nodelay()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.core.request(&Request::SetOption {
            id: self.core.id,
            opt: SockOpt::NoDelay(nodelay),
        })?;
        self.core.nodelay.store(nodelay, Ordering::Relaxed);
        Ok(())
    }

    /// `TCP_CONGESTION`: the congestion control algorithm of this
    /// connection, `"cubic"` (the default) or `"reno"` (NewReno).
    /// Anything else is `InvalidInput`.
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// stream.set_congestion("reno")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_congestion(&self, algorithm: &str) -> io::Result<()> {
        let id = match algorithm {
            "cubic" => 0,
            "reno" | "newreno" => 1,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unknown congestion control {other:?} (cubic or reno)"),
                ))
            }
        };
        self.core.request(&Request::SetOption {
            id: self.core.id,
            opt: SockOpt::Congestion(id),
        })
    }

    /// `SO_LINGER`: `Some(Duration::ZERO)` makes dropping the stream
    /// reset the connection (RST), discarding what was not yet sent, as
    /// Linux does with a zero linger time; `None` (the default) closes
    /// gracefully, sending what is queued and then FIN. A non-zero time
    /// is taken as `None` is: dropping never waits for the data to go.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// stream.set_linger(Some(Duration::ZERO))?; // drop sends RST
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        self.core.request(&Request::SetOption {
            id: self.core.id,
            opt: SockOpt::Linger {
                on: linger.is_some(),
                secs: linger.map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32),
            },
        })
    }

    /// `TCP_KEEPIDLE`, `TCP_KEEPINTVL` and `TCP_KEEPCNT`: with
    /// keep-alive on ([`set_keepalive`](TcpStream::set_keepalive)), the
    /// first probe after `idle` without a segment received, then one
    /// every `interval`, and the connection fails with `TimedOut` after
    /// `probes` unanswered. Each is rounded to whole seconds and must be
    /// within Linux's bounds (1 to 32767 s, 1 to 127 probes), else
    /// `InvalidInput`; None leaves that one as it is.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// stream.set_keepalive(true)?;
    /// stream.set_keepalive_timing(Some(Duration::from_secs(60)), Some(Duration::from_secs(10)), Some(5))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_keepalive_timing(
        &self,
        idle: Option<Duration>,
        interval: Option<Duration>,
        probes: Option<u32>,
    ) -> io::Result<()> {
        let secs = |d: Duration, what: &str| -> io::Result<u32> {
            let s = d.as_secs();
            if (1..=32767).contains(&s) {
                Ok(s as u32)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{what} must be 1 to 32767 s"),
                ))
            }
        };
        let mut opts = Vec::new();
        if let Some(d) = idle {
            opts.push(SockOpt::KeepIdle(secs(d, "the keep-alive idle time")?));
        }
        if let Some(d) = interval {
            opts.push(SockOpt::KeepIntvl(secs(d, "the keep-alive interval")?));
        }
        if let Some(n) = probes {
            if !(1..=127).contains(&n) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the keep-alive probe count must be 1 to 127",
                ));
            }
            opts.push(SockOpt::KeepCnt(n));
        }
        for opt in opts {
            self.core.request(&Request::SetOption {
                id: self.core.id,
                opt,
            })?;
        }
        Ok(())
    }

    /// `SO_KEEPALIVE`: probe an idle connection (Linux's timing: first
    /// probe after 2 hours, then every 75 s, 9 probes).
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// stream.set_keepalive(true)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_keepalive(&self, on: bool) -> io::Result<()> {
        self.core.request(&Request::SetOption {
            id: self.core.id,
            opt: SockOpt::KeepAlive(on),
        })
    }

    /// `TCP_NODELAY` as last set on this connection.
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// assert!(!stream.nodelay()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn nodelay(&self) -> io::Result<bool> {
        Ok(self.core.nodelay.load(Ordering::Relaxed))
    }

    /// Non-blocking mode: reads and writes that would wait fail with
    /// `WouldBlock`.
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// stream.set_nonblocking(true)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.core.set_nonblocking(nonblocking);
        Ok(())
    }

    /// The readiness fd an event loop watches ([`AsRawFd`] gives the same
    /// fd, or where this fails one that is always readable): made on the first call, a wake pair
    /// whose other end the stack kicks on every change. A socket no
    /// event loop watches has none, and costs no fd.
    ///
    /// ```no_run
    /// let s = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// let fd = s.readiness_fd()?; // register with epoll for EPOLLIN
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn readiness_fd(&self) -> io::Result<RawFd> {
        self.core.readiness_fd()
    }

    /// What calls could do now without waiting, computed from the
    /// socket's shared memory (no system call), as `poll(2)` reports a
    /// TCP socket: `readable` with data, at the end of the stream or with
    /// a pending error; `writable` once connected with room in the send
    /// ring, or failed; `error` with a pending error or after a reset;
    /// `hangup` once reset or closed by the stack. While a non-blocking
    /// connect goes on: nothing.
    ///
    /// ```no_run
    /// let s = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// assert!(s.readiness().writable);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn readiness(&self) -> Readiness {
        self.core.readiness(true)
    }

    /// Bytes received and not read yet (`FIONREAD`).
    ///
    /// ```no_run
    /// let s = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// let n = s.bytes_available();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bytes_available(&self) -> usize {
        self.core.mem.rx_queued() as usize
    }

    /// Takes the pending socket error (`SO_ERROR`), reported once.
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
    /// if let Some(e) = stream.take_error()? {
    ///     eprintln!("{e}");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(self.core.take_error())
    }
}

/// Reads bytes from the connection (0 at end of stream).
///
/// ```no_run
/// use std::io::Read;
///
/// let mut stream = libsock::TcpStream::connect("10.77.0.1:80")?;
/// let mut buf = [0u8; 4096];
/// let n = stream.read(&mut buf)?;
/// # Ok::<(), std::io::Error>(())
/// ```
impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        stream_read(&self.core, buf, false)
    }
}

/// Reads through a shared reference, as with `std`'s `&TcpStream`.
///
/// ```no_run
/// use std::io::Read;
///
/// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
/// let mut buf = [0u8; 4096];
/// let n = (&stream).read(&mut buf)?;
/// # Ok::<(), std::io::Error>(())
/// ```
impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        stream_read(&self.core, buf, false)
    }
}

/// Writes bytes to the connection; `flush` has nothing to do (queued
/// bytes belong to the stack, as with a kernel socket).
///
/// ```no_run
/// use std::io::Write;
///
/// let mut stream = libsock::TcpStream::connect("10.77.0.1:80")?;
/// stream.write_all(b"hello")?;
/// # Ok::<(), std::io::Error>(())
/// ```
impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        stream_write(&self.core, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes through a shared reference, as with `std`'s `&TcpStream`.
///
/// ```no_run
/// use std::io::Write;
///
/// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
/// (&stream).write_all(b"hello")?;
/// # Ok::<(), std::io::Error>(())
/// ```
impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        stream_write(&self.core, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The readiness fd (see [`UdpSocket`'s](crate::UdpSocket#impl-AsRawFd-for-UdpSocket)):
/// readable when the connection may be readable or writable, or has an
/// error; then read and write in non-blocking mode until `WouldBlock`.
///
/// ```no_run
/// use std::os::fd::AsRawFd;
///
/// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
/// stream.set_nonblocking(true)?;
/// let fd = stream.as_raw_fd(); // register with epoll for EPOLLIN
/// # Ok::<(), std::io::Error>(())
/// ```
impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.core.raw_readiness_fd()
    }
}

/// The readiness fd, borrowed.
///
/// ```no_run
/// use std::os::fd::AsFd;
///
/// let stream = libsock::TcpStream::connect("10.77.0.1:80")?;
/// let fd = stream.as_fd();
/// # Ok::<(), std::io::Error>(())
/// ```
impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the wake end lives as long as the core `self` holds.
        unsafe { BorrowedFd::borrow_raw(self.core.raw_readiness_fd()) }
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("instance", &self.core.session.instance())
            .field("id", &self.core.id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// The last bytes and the end-of-file arrive between the read that
    /// found the ring empty and the look at the state: the bytes are read,
    /// not lost behind an early end (an application that then closed saw
    /// its connection reset for the unread bytes).
    #[test]
    fn bytes_that_arrive_with_the_end_are_read_before_it() {
        let ring = Cell::new(0usize);
        let st = Cell::new(state::CONNECTED);
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            if reads.get() == 1 {
                // sockd, between this read and the state load: the last
                // 5 bytes into the ring, then the end.
                ring.set(5);
                st.set(state::CONNECTED | state::EOF);
                0
            } else {
                ring.replace(0)
            }
        };
        assert_eq!(take_stream(read, || st.get()).unwrap(), Some(5));
        // Once the ring is empty, the end.
        assert_eq!(
            take_stream(|| ring.replace(0), || st.get()).unwrap(),
            Some(0)
        );
    }

    #[test]
    fn an_empty_ring_waits_and_a_reset_fails() {
        assert_eq!(take_stream(|| 0, || state::CONNECTED).unwrap(), None);
        let e = take_stream(|| 0, || state::RESET).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
        let e = take_stream(|| 0, || 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN));
    }

    #[test]
    fn connect_timeout_error_is_timed_out() {
        assert_eq!(connect_timed_out().kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn connect_timeout_validates_before_touching_any_stack() {
        let b = Builder::new().instance("libsock-test-no-such-instance");
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let e = b.tcp_connect_timeout(&v4, Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // Valid requests of either family reach for the stack, which is
        // not there.
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        for a in [v4, v6] {
            let e = b
                .tcp_connect_timeout(&a, Duration::from_secs(1))
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{a}");
        }
    }

    #[test]
    fn nonblocking_connect_takes_ipv6_and_checks_v6only_before_touching_any_stack() {
        let b = Builder::new().instance("libsock-test-no-such-instance");
        for a in ["[2001:db8::1]:80", "[::ffff:10.0.0.1]:80", "10.0.0.1:80"] {
            let e = b.tcp_connect_nonblocking(&a.parse().unwrap()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{a}");
        }
        // IPV6_V6ONLY: no IPv4 peer for an IPv6 socket, as on Linux; an
        // IPv4 socket has no such option and connects as ever.
        let b = b.only_v6(true);
        let e = b
            .tcp_connect_nonblocking(&"[::ffff:10.0.0.1]:80".parse().unwrap())
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH));
        for a in ["[2001:db8::1]:80", "10.0.0.1:80"] {
            let e = b.tcp_connect_nonblocking(&a.parse().unwrap()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{a}");
        }
    }
}
