//! A virtual wire between two strata instances, for tests without a kernel
//! peer.
//!
//! Each end is a Unix datagram socket bound in the abstract namespace to
//! `strata-pair-{link}-{a|b}`; one frame is one datagram, sent to the other
//! end's name. Abstract names belong to a network namespace, so both
//! instances must run in the same one. Nothing is left in the filesystem, and
//! a name is freed the moment the last fd on its socket closes.
//!
//! Like a cable, the wire does not care whether anyone is at the other end: a
//! frame sent while the other end is absent is lost, and a frame that was
//! waiting at an end that closes is lost with it.
//!
//! # Why the ends connect to each other
//!
//! Each end `connect`s its socket to the other end's name whenever that end
//! exists, so that the two sockets are peers of each other. Two things depend
//! on it. The kernel caps the queue of an unconnected datagram receiver at
//! `net.unix.max_dgram_qlen` (often 10) datagrams, far below a driverd batch,
//! but lets a receiver's own peer queue up to the sender's socket buffer. And
//! only a sender connected to its receiver is woken (POLLOUT) when the
//! receiver drains a full queue, so [`Driver::send`] returning `Ok(false)`
//! comes with a wake-up instead of a busy loop.
//!
//! The cost: a socket accepts datagrams only from its own peer. If one end is
//! closed and reopened while the other keeps running, the survivor is still
//! attached to the old socket and refuses the new end's frames (they count
//! as lost) until the survivor next sends: that send finds the old socket
//! gone and attaches to the new one. A driverd restart does not cause this,
//! as the launcher keeps the socket open throughout.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, MsgFlags};

use crate::{truncated, Driver, Offload, MAX_PARTS};

/// What every pair end's abstract socket name starts with.
pub const NAME_PREFIX: &str = "strata-pair-";

/// The longest link name that still fits a socket address (108 bytes of
/// sun_path, less the leading NUL, the prefix and the `-a` suffix).
pub const MAX_LINK_LEN: usize = 107 - NAME_PREFIX.len() - 2;

/// Send buffer asked for each end. Frames wait in the receiver's queue but
/// are charged to the sender's buffer, so this is how much the wire holds
/// in flight; the kernel caps it at net.core.wmem_max.
const SEND_BUFFER: usize = 4 << 20;

/// Which end of a link a pair device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The end named `...-a`.
    A,
    /// The end named `...-b`.
    B,
}

impl Side {
    /// The other end.
    pub fn peer(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn letter(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

/// One end of a pair link; see the [module documentation](self).
#[derive(Debug)]
pub struct Pair {
    sock: UnixDatagram,
    link: String,
    side: Side,
    peer: SocketAddr,
    /// Whether we believe the socket is connected to the peer's current
    /// socket. Only a hint: the truth lives in the kernel (and is shared with
    /// every copy of the fd), and errors from send correct it.
    connected: bool,
}

impl Pair {
    /// Opens end `side` of the link named `link`.
    ///
    /// Fails with [`io::ErrorKind::AddrInUse`] if that end is already open
    /// anywhere in this network namespace. The other end need not exist yet.
    pub fn open(link: &str, side: Side) -> io::Result<Pair> {
        if link.is_empty() || link.len() > MAX_LINK_LEN || link.as_bytes().contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{link:?} is not a valid pair link name (1..={MAX_LINK_LEN} bytes, no NUL)"
                ),
            ));
        }
        let own = SocketAddr::from_abstract_name(end_name(link, side))?;
        let sock = UnixDatagram::bind_addr(&own).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(
                    e.kind(),
                    format!("pair link {link:?} side {side} is already open"),
                )
            } else {
                e
            }
        })?;
        Pair::finish(sock, link.to_owned(), side)
    }

    /// Takes over an fd that refers to a pair end, e.g. the copy driverd
    /// inherits from the launcher. The link and side are read back from the
    /// socket's own name.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Pair> {
        let not_a_pair = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {} is not a pair end: {why}", fd.as_raw_fd()),
            )
        };
        match socket::getsockopt(&fd, sockopt::SockType) {
            Ok(socket::SockType::Datagram) => {}
            Ok(_) => return Err(not_a_pair("not a datagram socket")),
            Err(e) => return Err(not_a_pair(&e.to_string())),
        }
        let sock = UnixDatagram::from(fd);
        let local = sock.local_addr()?;
        let name = local
            .as_abstract_name()
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.strip_prefix(NAME_PREFIX));
        let (link, side) = match name {
            Some(n) if n.len() > 2 && n.ends_with("-a") => (&n[..n.len() - 2], Side::A),
            Some(n) if n.len() > 2 && n.ends_with("-b") => (&n[..n.len() - 2], Side::B),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("socket {local:?} is not named like a pair end"),
                ))
            }
        };
        let link = link.to_owned();
        Pair::finish(sock, link, side)
    }

    /// Takes over a raw fd number, e.g. one named on driverd's command line;
    /// see [`Pair::from_fd`].
    ///
    /// # Safety
    ///
    /// `fd` must be open and owned by nobody else: the returned `Pair` (or the
    /// error path) closes it.
    pub unsafe fn from_raw_fd(fd: RawFd) -> io::Result<Pair> {
        // SAFETY: the caller hands over ownership of an open fd.
        Pair::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn finish(sock: UnixDatagram, link: String, side: Side) -> io::Result<Pair> {
        sock.set_nonblocking(true)?;
        // Best effort: a smaller buffer only means fewer frames in flight.
        let _ = socket::setsockopt(&sock, sockopt::SndBuf, &SEND_BUFFER);
        let peer = SocketAddr::from_abstract_name(end_name(&link, side.peer()))?;
        let mut pair = Pair {
            sock,
            link,
            side,
            peer,
            connected: false,
        };
        pair.connect_peer()?;
        Ok(pair)
    }

    /// The link this end belongs to.
    pub fn link(&self) -> &str {
        &self.link
    }

    /// Which end of the link this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Attaches the socket to the other end's current socket: Ok(false) if
    /// there is none, or it will not take us yet.
    fn connect_peer(&mut self) -> io::Result<bool> {
        match self.sock.connect_addr(&self.peer) {
            Ok(()) => {
                self.connected = true;
                Ok(true)
            }
            // EPERM: the other end is attached to our predecessor; see the
            // module docs.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED | libc::ENOENT | libc::EPERM)
                ) =>
            {
                self.connected = false;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

impl Driver for Pair {
    fn recv_split(
        &mut self,
        head: &mut [u8],
        tail: &mut [u8],
    ) -> io::Result<Option<(usize, Offload)>> {
        let len = head.len() + tail.len();
        let mut iov = [IoSliceMut::new(head), IoSliceMut::new(tail)];
        // Bounded: each pending socket error is reported only once.
        for _ in 0..4 {
            match socket::recvmsg::<()>(self.sock.as_raw_fd(), &mut iov, None, MsgFlags::MSG_TRUNC)
            {
                Ok(m) if m.bytes > len => return Err(truncated(len)),
                Ok(m) => {
                    // The other end is up: attach to it now rather than at
                    // our first send, to lift the small unconnected queue
                    // limit from its sends to us.
                    // Best effort: the frame is already in hand.
                    if !self.connected {
                        let _ = self.connect_peer();
                    }
                    return Ok(Some((m.bytes, Offload::default())));
                }
                Err(Errno::EAGAIN) => return Ok(None),
                // ECONNRESET: frames from the other end were discarded when
                // it re-attached elsewhere; nothing to do but read on.
                Err(Errno::EINTR | Errno::ECONNRESET | Errno::ECONNREFUSED) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    fn send_parts(&mut self, parts: &[&[u8]], _off: &Offload) -> io::Result<bool> {
        if parts.len() > MAX_PARTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a frame in more parts than a send takes",
            ));
        }
        let mut iov = [IoSlice::new(&[]); MAX_PARTS];
        for (slot, part) in iov.iter_mut().zip(parts) {
            *slot = IoSlice::new(part);
        }
        // At most two tries: the second follows a re-attach to a new socket
        // at the other end.
        for _ in 0..2 {
            if !self.connected && !self.connect_peer()? {
                return Ok(true); // nobody at the other end: lost
            }
            let sent = socket::sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov[..parts.len()],
                &[],
                MsgFlags::empty(),
                None,
            );
            match sent {
                Ok(_) => return Ok(true),
                Err(Errno::EAGAIN) => return Ok(false),
                // The socket we were attached to has gone (the kernel
                // has detached us), or a stale error was pending.
                Err(Errno::ECONNREFUSED | Errno::ENOTCONN | Errno::ECONNRESET | Errno::EINTR) => {
                    self.connected = false;
                }
                // The other end is attached to our predecessor; see the
                // module docs. Lost, as on a wire.
                Err(Errno::EPERM) => return Ok(true),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for Pair {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl IntoRawFd for Pair {
    fn into_raw_fd(self) -> RawFd {
        self.sock.into_raw_fd()
    }
}

impl From<Pair> for OwnedFd {
    fn from(pair: Pair) -> OwnedFd {
        pair.sock.into()
    }
}

/// The abstract socket name of one end of a link.
fn end_name(link: &str, side: Side) -> String {
    format!("{NAME_PREFIX}{link}-{side}")
}
