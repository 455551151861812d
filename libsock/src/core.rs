//! What every socket type shares: its id at sockd, its shared memory and
//! wake pair, the client-side options (non-blocking mode, timeouts), the
//! pending-error and state checks, and the one place where a thread
//! blocks (`block_on`).
//!
//! Blocking: a thread that has to wait announces what it waits for in
//! the shared memory (`announce_wait`), reads the wake sequence, looks
//! once more, and sleeps on the sequence (a futex in the shared header),
//! which sockd moves when it makes the awaited condition true. Several
//! threads may wait on one socket (one receives while another sends):
//! a wake-up wakes them all, and each looks again.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use strata_ipc::sockring::{self, state, wait, SockMem};
use strata_proto::sock::{Addr, Kind, Request, Response, SockOpt};

use crate::addr::{self, Family, Use};
use crate::session::{expect_ok, lock, unexpected, Attach, Session, Taken};

/// Ring size used unless a [`crate::Builder`] says otherwise.
pub(crate) const DEFAULT_RING: usize = 256 << 10;

/// A TCP socket's receive ring unless a [`crate::Builder`] says otherwise:
/// the window a sender needs to keep several 64 KiB super-segments in
/// flight (Linux lets its receive buffer grow to 6 MiB). tcpd's
/// auto-tuning offers a reader that falls behind a small window, so the
/// ring fills (and its pages are touched) only as far as the reader keeps
/// up.
pub(crate) const DEFAULT_TCP_RX_RING: usize = 4 << 20;

/// A TCP socket's send ring unless a [`crate::Builder`] says otherwise:
/// room for an application to write several 256 KiB chunks ahead of
/// sockd, so that a bulk sender hands sockd many super-segments per
/// wake-up rather than one per ring's worth freed (on the development VM
/// bulk out of the stack went from about 10 to about 18 Gbit/s against
/// 256 KiB; 4 MiB, Linux's largest send buffer, gave about 21). A ring's
/// pages stay touched while its socket lives, so this bounds what a
/// long-lived connection that has sent much holds.
pub(crate) const DEFAULT_TCP_TX_RING: usize = 1 << 20;

/// The client side of one socket.
pub(crate) struct Core {
    pub(crate) session: Arc<Session>,
    pub(crate) id: u32,
    /// IPv4 or IPv6, as `socket(2)`'s domain: which addresses the
    /// socket takes, and how it shows the ones it reports.
    pub(crate) family: Family,
    /// IPV6_V6ONLY as last set (sockd has no "get option" request).
    only_v6: AtomicBool,
    /// An IPv6 UDP socket that may not be bound yet: its first send
    /// binds it to `[::]:0` first ([`Core::bind_before_send`]).
    unbound_v6: Mutex<bool>,
    pub(crate) mem: SockMem,
    attach: Arc<Attach>,
    nonblocking: AtomicBool,
    /// Nanoseconds; 0: none.
    read_timeout: AtomicU64,
    /// Nanoseconds; 0: none.
    write_timeout: AtomicU64,
    /// A readiness fd was handed out (`wait::ALWAYS`).
    always: AtomicBool,
    /// Bytes a non-blocking send found no room for (0: none), so that a
    /// drained readiness fd is re-armed once that room exists.
    tx_need: AtomicUsize,
    /// The rings are single-consumer and single-producer: threads of the
    /// application take turns on each.
    pub(crate) rx_lock: Mutex<()>,
    pub(crate) tx_lock: Mutex<()>,
    /// UDP: the connected peer (send() needs one).
    pub(crate) peer: Mutex<Option<SocketAddr>>,
    /// TCP_NODELAY as last set (sockd has no "get option" request).
    pub(crate) nodelay: AtomicBool,
    /// A listener: connections accepted ahead.
    ahead: Mutex<Ahead>,
}

/// A listener's connections that one accept took from sockd beyond the
/// one it returned (sockd hands over a burst in one request), for the
/// next accepts. They are the taking process's: a forked child, which
/// shares the listener, does not hand them out a second time.
#[derive(Default)]
struct Ahead {
    pid: u32,
    q: VecDeque<Taken>,
}

impl Ahead {
    /// The queue, emptied first in a forked child (they are the
    /// parent's).
    fn mine(&mut self) -> &mut VecDeque<Taken> {
        if !self.q.is_empty() && self.pid != std::process::id() {
            self.q.clear();
        }
        &mut self.q
    }
}

/// EAGAIN, as std reports a timed-out or would-block socket call.
pub(crate) fn would_block() -> io::Error {
    io::Error::from_raw_os_error(libc::EAGAIN)
}

/// Validates a timeout as std does and converts it to nanoseconds.
pub(crate) fn timeout_nanos(t: Option<Duration>) -> io::Result<u64> {
    match t {
        None => Ok(0),
        Some(d) if d.is_zero() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        )),
        Some(d) => Ok(d.as_nanos().clamp(1, u64::MAX as u128) as u64),
    }
}

fn nanos_timeout(n: u64) -> Option<Duration> {
    (n != 0).then(|| Duration::from_nanos(n))
}

/// What calls on a socket could do now without waiting, as `poll(2)`
/// would report it: see [`TcpStream::readiness`](crate::TcpStream::readiness),
/// [`TcpListener::readiness`](crate::TcpListener::readiness) and
/// [`UdpSocket::readiness`](crate::UdpSocket::readiness).
///
/// ```no_run
/// let s = libsock::TcpStream::connect("10.77.0.1:80")?;
/// let r = s.readiness();
/// if r.readable { /* a read returns data, the end, or an error */ }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A receive (or accept) would not wait: data, the end of the
    /// stream, a pending error, a connection to accept (`POLLIN`).
    pub readable: bool,
    /// A send would not wait: connected with room in the send ring, or
    /// failed (`POLLOUT`).
    pub writable: bool,
    /// An error is pending or the connection was reset (`POLLERR`).
    pub error: bool,
    /// The connection is over: reset, or closed by the stack
    /// (`POLLHUP`).
    pub hangup: bool,
    /// The peer will send no more (`POLLRDHUP`).
    pub read_closed: bool,
}

impl Readiness {
    /// Every bit: what a socket whose stack went away reports, so that
    /// the next call finds the error.
    const GONE: Readiness = Readiness {
        readable: true,
        writable: true,
        error: true,
        hangup: true,
        read_closed: true,
    };
}

/// Asked when a signal interrupts a blocking call's wait (see
/// [`set_interrupt_policy`]).
static INTERRUPT_POLICY: OnceLock<fn() -> bool> = OnceLock::new();

/// Makes a blocking call (`accept`, `read`, `write`, `connect`,
/// `recv_from`, ...) whose wait a signal handler interrupted return an
/// error of kind [`Interrupted`](io::ErrorKind::Interrupted) when
/// `policy` (called then, in that thread) says so, as `accept(2)` or
/// `recv(2)` return `EINTR`; nothing was transferred. Without a policy
/// (the default) blocking calls wait on across signals. Set once per
/// process; later calls are ignored. libstrata sets one that follows
/// the process's handlers' `SA_RESTART`.
///
/// ```no_run
/// libsock::set_interrupt_policy(|| true); // every signal interrupts
/// ```
pub fn set_interrupt_policy(policy: fn() -> bool) {
    let _ = INTERRUPT_POLICY.set(policy);
}

impl Core {
    /// Creates a socket of `kind` and `family` at sockd.
    pub(crate) fn open(
        session: Arc<Session>,
        kind: Kind,
        family: Family,
        tx: usize,
        rx: usize,
    ) -> io::Result<Arc<Core>> {
        let (id, attach) = session.create(kind, tx, rx)?;
        Ok(Core::from_parts(session, id, family, attach))
    }

    /// Wraps a socket of `family` sockd knows as `id` (created or
    /// accepted).
    pub(crate) fn from_parts(
        session: Arc<Session>,
        id: u32,
        family: Family,
        attach: Arc<Attach>,
    ) -> Arc<Core> {
        let mem = attach.mem.clone();
        Arc::new(Core {
            session,
            id,
            family,
            only_v6: AtomicBool::new(false),
            unbound_v6: Mutex::new(false),
            mem,
            attach,
            nonblocking: AtomicBool::new(false),
            read_timeout: AtomicU64::new(0),
            write_timeout: AtomicU64::new(0),
            always: AtomicBool::new(false),
            tx_need: AtomicUsize::new(0),
            rx_lock: Mutex::new(()),
            tx_lock: Mutex::new(()),
            peer: Mutex::new(None),
            nodelay: AtomicBool::new(false),
            ahead: Mutex::default(),
        })
    }

    /// A listener's next connection: one accepted ahead, or else as many
    /// as wait at sockd (by the count in the shared memory, up to
    /// [`MAX_ACCEPT`](strata_proto::sock::MAX_ACCEPT)) taken in one
    /// request, the first returned and the rest kept ahead. `None` when
    /// none waits; no request when the count says so.
    pub(crate) fn take_connection(&self, tx: usize, rx: usize) -> io::Result<Option<Taken>> {
        if let Some(t) = lock(&self.ahead).mine().pop_front() {
            return Ok(Some(t));
        }
        let want = match self.mem.accept_ready() {
            Some(0) => return Ok(None),
            Some(n) => n as usize,
            // Not counted yet: ask.
            None => 1,
        };
        let mut got = self.session.accept(self.id, tx, rx, want)?.into_iter();
        let first = got.next();
        if got.len() > 0 {
            let mut a = lock(&self.ahead);
            a.pid = std::process::id();
            a.q.extend(got);
            // Another thread may sleep in accept: these are its too.
            self.mem.wake_sleepers();
        }
        Ok(first)
    }

    /// A listener: connections accepted ahead.
    pub(crate) fn accepted_ahead(&self) -> usize {
        lock(&self.ahead).mine().len()
    }

    /// A request about this socket that answers `Ok`.
    pub(crate) fn request(&self, req: &Request) -> io::Result<()> {
        expect_ok(self.session.call(req)?)
    }

    /// getsockname and getpeername, as sockd has them.
    pub(crate) fn names(&self) -> io::Result<(Addr, Option<Addr>)> {
        match self.session.call(&Request::Names { id: self.id })? {
            Response::Names { local, peer } => Ok((local, peer)),
            Response::Error { errno } => Err(io::Error::from_raw_os_error(errno)),
            other => Err(unexpected(&other)),
        }
    }

    /// getsockname, as the socket's family shows it.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(addr::from_wire(self.family, self.names()?.0))
    }

    /// getpeername, as the socket's family shows it; `NotConnected`
    /// without a peer.
    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self.names()?.1 {
            Some(p) => Ok(addr::from_wire(self.family, p)),
            None => Err(io::Error::from_raw_os_error(libc::ENOTCONN)),
        }
    }

    /// Address `a` for a `what` call on this socket, on the wire, or the
    /// error Linux gives when it does not fit ([`addr::to_wire`]).
    pub(crate) fn wire(&self, what: Use, a: SocketAddr) -> io::Result<Addr> {
        addr::to_wire(self.family, self.only_v6.load(Relaxed), what, a)
    }

    /// Sets IPV6_V6ONLY: `ENOPROTOOPT` on an IPv4 socket (as Linux: the
    /// option is IPv6's); sockd refuses it with `EINVAL` once the socket
    /// is bound.
    pub(crate) fn set_only_v6(&self, on: bool) -> io::Result<()> {
        if self.family != Family::V6 {
            return Err(io::Error::from_raw_os_error(libc::ENOPROTOOPT));
        }
        self.request(&Request::SetOption {
            id: self.id,
            opt: SockOpt::V6Only(on),
        })?;
        self.only_v6.store(on, Relaxed);
        Ok(())
    }

    /// IPV6_V6ONLY as set; `ENOPROTOOPT` on an IPv4 socket.
    pub(crate) fn only_v6(&self) -> io::Result<bool> {
        if self.family != Family::V6 {
            return Err(io::Error::from_raw_os_error(libc::ENOPROTOOPT));
        }
        Ok(self.only_v6.load(Relaxed))
    }

    /// IPV6_V6ONLY as set, for a socket made from this one (an accepted
    /// connection inherits it, as on Linux).
    pub(crate) fn inherit_only_v6(&self, from: &Core) {
        self.only_v6.store(from.only_v6.load(Relaxed), Relaxed);
    }

    /// Marks an IPv6 UDP socket as possibly unbound (made unbound, or
    /// disconnected, which may dissolve the binding its connect made):
    /// its next send binds it first ([`Core::bind_before_send`]). No
    /// effect on an IPv4 socket, which udpd binds by its first send.
    pub(crate) fn set_maybe_unbound(&self, yes: bool) {
        if self.family == Family::V6 {
            *lock(&self.unbound_v6) = yes;
        }
    }

    /// Before a send: binds an IPv6 socket that is not bound yet to
    /// `[::]:0`, as Linux binds an `AF_INET6` socket by its first send
    /// (a free port, both families unless IPV6_V6ONLY); udpd's own
    /// implicit bind knows neither the socket's family nor its
    /// IPV6_V6ONLY. A no-op once bound.
    pub(crate) fn bind_before_send(&self) -> io::Result<()> {
        let mut unbound = lock(&self.unbound_v6);
        if !*unbound {
            return Ok(());
        }
        if self.names()?.0.port == 0 {
            match self.request(&Request::Bind {
                id: self.id,
                addr: Addr { ip: 0, port: 0 },
            }) {
                Ok(()) => {}
                // Bound meanwhile through another handle.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        *unbound = false;
        Ok(())
    }

    pub(crate) fn set_nonblocking(&self, on: bool) {
        self.nonblocking.store(on, Relaxed);
    }

    pub(crate) fn nonblocking(&self) -> bool {
        self.nonblocking.load(Relaxed)
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.read_timeout.store(timeout_nanos(t)?, Relaxed);
        Ok(())
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.write_timeout.store(timeout_nanos(t)?, Relaxed);
        Ok(())
    }

    pub(crate) fn read_timeout(&self) -> Option<Duration> {
        nanos_timeout(self.read_timeout.load(Relaxed))
    }

    pub(crate) fn write_timeout(&self) -> Option<Duration> {
        nanos_timeout(self.write_timeout.load(Relaxed))
    }

    /// The pending socket error, taken (reported once, like Linux).
    pub(crate) fn take_error(&self) -> Option<io::Error> {
        // Load first: the swap is a write to a line sockd also writes.
        if self.mem.hdr().error.load(Acquire) == 0 {
            return None;
        }
        self.mem.take_error().map(io::Error::from_raw_os_error)
    }

    /// Errors every call reports before doing anything: a socket a
    /// restarted sockd no longer knows, the pending error, a socket
    /// sockd closed.
    pub(crate) fn check(&self) -> io::Result<()> {
        let lost = self.attach.lost.load(Acquire);
        if lost != 0 {
            let e = io::Error::from_raw_os_error(lost);
            return Err(io::Error::new(
                e.kind(),
                format!("sockd restarted and did not take this socket back: {e}"),
            ));
        }
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        if self.state() & state::CLOSED != 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the strata stack closed this socket",
            ));
        }
        Ok(())
    }

    /// The socket's [`state`] bits.
    pub(crate) fn state(&self) -> u32 {
        self.mem.hdr().state.load(Acquire)
    }

    /// Remembers that a send found no room for `need` bytes (0: it did).
    pub(crate) fn set_tx_need(&self, need: usize) {
        if self.tx_need.load(Relaxed) != need {
            self.tx_need.store(need, Relaxed);
        }
    }

    /// After queueing data: kick sockd if it asked for it.
    pub(crate) fn sent(&self) {
        if self.mem.server_wants_kick() {
            self.session.kick_server(self.id);
        }
    }

    /// After reading stream bytes: kick sockd if it asked for it (tcpd's
    /// window waits on what was read).
    pub(crate) fn read_done(&self) {
        if self.mem.server_wants_read_kick() {
            self.session.kick_server(self.id);
        }
    }

    /// Runs `attempt` until it gives a value, in between waiting for the
    /// `bits` condition ([`wait::RX`] or [`wait::TX`]), up
    /// to `timeout` (then `on_timeout`). In non-blocking mode a failed
    /// attempt is `WouldBlock`. `attempt` does its own checks (see
    /// [`Core::check`]).
    pub(crate) fn block_on<T>(
        &self,
        bits: u32,
        timeout: Option<Duration>,
        on_timeout: fn() -> io::Error,
        mut attempt: impl FnMut() -> io::Result<Option<T>>,
    ) -> io::Result<T> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut announced: Option<u32> = None;
        let mut drained = false;
        loop {
            if let Some(v) = attempt()? {
                return Ok(v);
            }
            if self.nonblocking() {
                if self.always.load(Relaxed) && !drained {
                    // The readiness fd fired (or may have): consume the
                    // kick, then look once more so that nothing that
                    // arrived meanwhile goes unnoticed.
                    self.drain();
                    drained = true;
                    continue;
                }
                self.session.check_alive()?;
                return Err(would_block());
            }
            self.session.check_alive()?;
            let Some(seen) = announced else {
                // Announce, read the sequence, then look again before
                // sleeping: whatever sockd does after the announcement
                // moves the sequence past what we read.
                self.mem.announce_wait(bits);
                announced = Some(self.mem.wake_seq());
                continue;
            };
            let remaining = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(on_timeout());
                    }
                    Some(d - now)
                }
            };
            if self.mem.sleep(seen, remaining) && INTERRUPT_POLICY.get().is_some_and(|p| p()) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            announced = None;
        }
    }

    /// Empties the readiness fd, and kicks it again if the socket is
    /// still ready for something (so that a level-triggered event loop
    /// sees it).
    fn drain(&self) {
        if let Some(p) = self.attach.ready.get() {
            sockring::drain(&p.wait);
            if self.ready() {
                sockring::kick(&p.kick);
            }
        }
    }

    /// Whether any call could make progress now (for re-arming).
    fn ready(&self) -> bool {
        let h = self.mem.hdr();
        let need = self.tx_need.load(Relaxed);
        let tx_room = need != 0 && {
            let queued = self.mem.tx_queued() as usize;
            // A record may waste up to its own size at the ring's end.
            queued == 0 || self.mem.tx_cap().saturating_sub(queued) >= 2 * need
        };
        self.mem.rx_queued() != 0
            || self.mem.accept_ready().is_some_and(|n| n > 0)
            || self.accepted_ahead() > 0
            || tx_room
            || h.error.load(Relaxed) != 0
            || h.state.load(Relaxed) & (state::CLOSED | state::RESET) != 0
            || self.attach.lost.load(Relaxed) != 0
            || self.session.is_dead()
    }

    /// The socket's readiness from its shared memory, without a system
    /// call: a stream (`stream`) or a datagram socket.
    pub(crate) fn readiness(&self, stream: bool) -> Readiness {
        if self.attach.lost.load(Relaxed) != 0 || self.session.is_dead() {
            return Readiness::GONE;
        }
        let h = self.mem.hdr();
        let err = h.error.load(Acquire) != 0;
        let st = self.state();
        let rx = self.mem.rx_queued() != 0;
        let queued = self.mem.tx_queued() as usize;
        let free = self.mem.tx_cap().saturating_sub(queued);
        if !stream {
            // Room for a datagram of a typical size (a record may waste
            // up to its own size at the ring's end).
            let room = queued == 0 || free >= 2 * (1500 + sockring::REC_HDR);
            return Readiness {
                readable: rx || err,
                writable: room || err,
                error: err,
                hangup: false,
                read_closed: false,
            };
        }
        let ended = st & (state::EOF | state::RESET | state::CLOSED) != 0;
        let broken = st & (state::RESET | state::CLOSED) != 0;
        let connected = st & state::CONNECTED != 0;
        // As Linux: writable when at least a third of what is queued
        // would fit again (always with an empty ring).
        let room = free > 0 && (queued == 0 || free * 2 >= queued);
        Readiness {
            readable: rx || ended || err,
            writable: (connected && room) || broken || err,
            error: err || st & state::RESET != 0,
            hangup: broken,
            read_closed: ended,
        }
    }

    /// The readiness fd: from the first call on, sockd kicks it on every
    /// change (`wait::ALWAYS`, sticky). It is made on that call (a wake
    /// pair, whose other end sockd holds), so a socket no event loop
    /// watches costs no fd.
    pub(crate) fn readiness_fd(&self) -> io::Result<RawFd> {
        let fd = self.session.readiness(self.id, &self.attach)?;
        if !self.always.swap(true, AcqRel) {
            self.mem.announce_wait(wait::ALWAYS);
            // Make the event loop look once, whatever happened before.
            self.attach.wake();
        }
        Ok(fd)
    }

    /// [`Core::readiness_fd`] for `AsRawFd` and `AsFd`, which cannot
    /// fail: where no fd could be made (the process ran out), an fd that
    /// is always readable, so that an event loop keeps trying the socket
    /// (a later call tries to make the real one again).
    pub(crate) fn raw_readiness_fd(&self) -> RawFd {
        self.readiness_fd()
            .unwrap_or_else(|_| self.session.always_ready())
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.session.close(self.id, &self.attach);
        // A listener's connections accepted ahead were never handed
        // out: reset, as Linux resets those a closed listener leaves in
        // its queue (not a forked child's copy: they are the parent's).
        let ahead = std::mem::take(lock(&self.ahead).mine());
        for t in ahead {
            self.session.abort(t.id, &t.attach);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeouts_are_refused_like_std() {
        let e = timeout_nanos(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(timeout_nanos(None).unwrap(), 0);
        assert_eq!(timeout_nanos(Some(Duration::from_nanos(1))).unwrap(), 1);
        assert_eq!(
            nanos_timeout(timeout_nanos(Some(Duration::from_millis(250))).unwrap()),
            Some(Duration::from_millis(250))
        );
        assert_eq!(timeout_nanos(Some(Duration::MAX)).unwrap(), u64::MAX);
    }

    #[test]
    fn would_block_is_eagain_like_std_on_linux() {
        let e = would_block();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
    }
}
