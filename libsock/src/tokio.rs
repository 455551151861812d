//! strata sockets for tokio (the `tokio` feature): [`TcpListener`],
//! [`TcpStream`] (with [`AsyncRead`] and [`AsyncWrite`]) and [`UdpSocket`],
//! with the async methods of tokio's own types.
//!
//! Each wraps a libsock socket in non-blocking mode and waits on its
//! readiness fd through tokio's reactor ([`AsyncFd`]): no thread per
//! socket and no polling. The readiness fd fires on any change (data,
//! room to send, a connection, an error), so every operation here first
//! *tries* and only waits after `WouldBlock`; a task woken by a change
//! meant for another (a reader by room to send) tries, finds nothing and
//! waits again. Readers and writers wait through two registrations of
//! the fd (the second a duplicate of the first), since a tokio
//! registration wakes one task per direction.
//!
//! Every operation is cancellation-safe as tokio's are: a future dropped
//! before it completes has taken nothing (an accept, a datagram, bytes).
//! Across a restart of sockd, libsock re-attaches the socket with the
//! same shared memory and readiness fd, so pending futures simply go on.
//!
//! Names are resolved with the system resolver, synchronously, as
//! libsock's blocking calls do; give addresses to avoid it.
//!
//! ```no_run
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # async fn serve() -> std::io::Result<()> {
//! let listener = libsock::tokio::TcpListener::bind("0.0.0.0:7").await?;
//! loop {
//!     let (mut stream, _) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let mut buf = vec![0; 65536];
//!         while let Ok(n @ 1..) = stream.read(&mut buf).await {
//!             if stream.write_all(&buf[..n]).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! }
//! # }
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use crate::stack::Builder;

/// The result of one non-blocking attempt: `None` when it would block.
fn attempt<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits (on `fd`) until `op` stops blocking ([`poll_until_ready`]).
async fn until_ready<F: AsRawFd, T>(
    fd: &AsyncFd<F>,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    std::future::poll_fn(|cx| poll_until_ready(fd, cx, &mut op)).await
}

/// Polls `op` until it stops blocking: it tries first, and after each
/// wake-up clears the readiness before it tries again, so that a change
/// after the attempt is never missed.
fn poll_until_ready<F: AsRawFd, T>(
    fd: &AsyncFd<F>,
    cx: &mut Context<'_>,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        if let Some(v) = attempt(op())? {
            return Poll::Ready(Ok(v));
        }
        ready!(fd.poll_read_ready(cx))?.clear_ready();
    }
}

/// Registers a libsock socket's readiness fd with tokio's reactor;
/// `made` is the socket's `readiness_fd()`, which makes the fd (or says
/// why it could not).
fn register<T: AsRawFd>(made: io::Result<std::os::fd::RawFd>, socket: T) -> io::Result<AsyncFd<T>> {
    made?;
    // SAFETY: a libsock socket's `as_raw_fd` is the wake end of its wake
    // pair, which the socket owns and keeps open, always the same fd
    // (a restart of sockd re-attaches the same one), until it is dropped,
    // which the `AsyncFd` does before it could be closed.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }.map_err(io::Error::from)
}

/// A second registration of a socket's readiness fd, for the writers.
fn writers_fd(fd: impl AsFd) -> io::Result<AsyncFd<OwnedFd>> {
    let dup = fd.as_fd().try_clone_to_owned()?;
    // SAFETY: `dup` is an fd of our own, open until the `AsyncFd` that
    // owns it drops it.
    unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }.map_err(io::Error::from)
}

// ------------------------------------------------------------ listener

/// A TCP listener on a strata stack, for tokio.
pub struct TcpListener {
    fd: AsyncFd<crate::TcpListener>,
}

impl TcpListener {
    /// Listens on `addr` on the stack named by `STRATA_INSTANCE`, as
    /// [`crate::TcpListener::bind`] does.
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        TcpListener::from_std(crate::TcpListener::bind(addr)?)
    }

    /// Listens on `addr` on the stack and with the options of `builder`.
    pub async fn bind_with<A: ToSocketAddrs>(
        builder: &Builder,
        addr: A,
    ) -> io::Result<TcpListener> {
        TcpListener::from_std(builder.tcp_bind(addr)?)
    }

    /// Takes a libsock listener (put in non-blocking mode) into tokio;
    /// call it inside a runtime.
    pub fn from_std(listener: crate::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            fd: register(listener.readiness_fd(), listener)?,
        })
    }

    /// The next connection and its peer's address.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, a) = until_ready(&self.fd, || self.fd.get_ref().accept()).await?;
        Ok((TcpStream::from_std(s)?, a))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }
}

// -------------------------------------------------------------- stream

/// A TCP connection on a strata stack, for tokio: [`AsyncRead`],
/// [`AsyncWrite`] (its shutdown ends the sending side), and the methods
/// of tokio's `TcpStream` that fit.
pub struct TcpStream {
    fd: AsyncFd<crate::TcpStream>,
    writers: AsyncFd<OwnedFd>,
}

impl TcpStream {
    /// Connects to `addr` (each address in turn) from the stack named by
    /// `STRATA_INSTANCE`.
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        TcpStream::connect_with(&Builder::new(), addr).await
    }

    /// Connects to `addr` from the stack and with the options of
    /// `builder`.
    pub async fn connect_with<A: ToSocketAddrs>(
        builder: &Builder,
        addr: A,
    ) -> io::Result<TcpStream> {
        let mut last = None;
        for a in crate::addr::resolve(addr)? {
            match TcpStream::connect_one(builder, a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any addresses",
            )
        }))
    }

    async fn connect_one(builder: &Builder, a: SocketAddr) -> io::Result<TcpStream> {
        let s = TcpStream::from_std(crate::tcp::connect_nonblocking(builder, a)?)?;
        until_ready(&s.fd, || match s.fd.get_ref().connect_finished()? {
            true => Ok(()),
            false => Err(crate::core::would_block()),
        })
        .await?;
        Ok(s)
    }

    /// Takes a libsock stream (put in non-blocking mode) into tokio; call
    /// it inside a runtime.
    pub fn from_std(stream: crate::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        let writers = writers_fd(&stream)?;
        Ok(TcpStream {
            fd: register(stream.readiness_fd(), stream)?,
            writers,
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    /// Sets TCP_NODELAY.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.fd.get_ref().set_nodelay(nodelay)
    }

    /// Reads what is there without taking it, waiting for data.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        until_ready(&self.fd, || self.fd.get_ref().peek(buf)).await
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &*self;
        let n = ready!(poll_until_ready(&this.fd, cx, || {
            (&mut this.fd.get_ref()).read(buf.initialize_unfilled())
        }))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &*self;
        poll_until_ready(&this.writers, cx, || (&mut this.fd.get_ref()).write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are in the socket's ring, tcpd's to send.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.fd.get_ref().shutdown(Shutdown::Write))
    }
}

// ----------------------------------------------------------------- UDP

/// A UDP socket on a strata stack, for tokio. `&self` methods, so one
/// socket (in an `Arc`) may send and receive from several tasks.
pub struct UdpSocket {
    fd: AsyncFd<crate::UdpSocket>,
    writers: AsyncFd<OwnedFd>,
}

impl UdpSocket {
    /// Binds to `addr` on the stack named by `STRATA_INSTANCE`.
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        UdpSocket::from_std(crate::UdpSocket::bind(addr)?)
    }

    /// Binds to `addr` on the stack and with the options of `builder`.
    pub async fn bind_with<A: ToSocketAddrs>(builder: &Builder, addr: A) -> io::Result<UdpSocket> {
        UdpSocket::from_std(builder.udp_bind(addr)?)
    }

    /// Takes a libsock socket (put in non-blocking mode) into tokio; call
    /// it inside a runtime.
    pub fn from_std(socket: crate::UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        let writers = writers_fd(&socket)?;
        Ok(UdpSocket {
            fd: register(socket.readiness_fd(), socket)?,
            writers,
        })
    }

    /// Sets the default peer ([`send`](Self::send), [`recv`](Self::recv)).
    pub async fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        self.fd.get_ref().connect(addr)
    }

    /// Sends one datagram to `addr`, waiting for room.
    pub async fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let to = crate::addr::resolve_one(addr)?;
        until_ready(&self.writers, || self.fd.get_ref().send_to(buf, to)).await
    }

    /// Sends one datagram to the connected peer.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        until_ready(&self.writers, || self.fd.get_ref().send(buf)).await
    }

    /// Receives one datagram and its sender.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        until_ready(&self.fd, || self.fd.get_ref().recv_from(buf)).await
    }

    /// Receives one datagram from the connected peer.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        until_ready(&self.fd, || self.fd.get_ref().recv(buf)).await
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }
}
