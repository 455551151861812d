//! [`Poller`]: the readiness of many sockets through one wait, at the
//! cost of no file descriptor per socket on either side.
//!
//! A socket's readiness fd (`as_raw_fd`) costs a wake pair: two fds in
//! the application and one in sockd. A server with a hundred thousand
//! connections cannot pay that, so the session has one poller instead:
//! sockd, changing a socket the poller watches (`wait::POLLED` in its
//! memory), rings the socket's row on the application's side of the
//! session's doorbell and kicks the poller's one wake pair, once a turn
//! at most. [`Poller::wait`] takes the rung rows and reports each
//! watched socket there with its readiness, read from its shared memory.
//!
//! Events are edge-triggered, as with `EPOLLET`: a socket is reported
//! after the stack changed it (data or a connection arrived, room to
//! send, an error, the end), so make calls on it in non-blocking mode
//! until `WouldBlock` before waiting again. A socket is reported once
//! when it is registered, whatever its state.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use strata_ipc::sockring::{self, wait};
use strata_ipc::socktable::sock_id;

use crate::core::{Core, Readiness};
use crate::session::{lock, Session};
use crate::stack::Stack;

/// What a registered socket is, for its readiness.
#[derive(Clone, Copy)]
enum SourceKind {
    Stream,
    Listener,
    Datagram,
}

/// A socket a [`Poller`] can watch: [`TcpStream`](crate::TcpStream),
/// [`TcpListener`](crate::TcpListener), [`UdpSocket`](crate::UdpSocket).
pub trait Source: private::Sealed {
    /// The socket, as the poller needs it (opaque).
    #[doc(hidden)]
    fn source(&self) -> SourceRef<'_>;
}

/// A socket as a [`Poller`] needs it (opaque).
#[doc(hidden)]
pub struct SourceRef<'a>(&'a Arc<Core>, SourceKind);

mod private {
    pub trait Sealed {}
    impl Sealed for crate::TcpStream {}
    impl Sealed for crate::TcpListener {}
    impl Sealed for crate::UdpSocket {}
}

impl Source for crate::TcpStream {
    fn source(&self) -> SourceRef<'_> {
        SourceRef(self.core(), SourceKind::Stream)
    }
}
impl Source for crate::TcpListener {
    fn source(&self) -> SourceRef<'_> {
        SourceRef(self.core(), SourceKind::Listener)
    }
}
impl Source for crate::UdpSocket {
    fn source(&self) -> SourceRef<'_> {
        SourceRef(self.core(), SourceKind::Datagram)
    }
}

/// One socket the poller watches.
struct Watched {
    id: u32,
    token: usize,
    kind: SourceKind,
    core: Weak<Core>,
}

/// A readiness report: the token the socket was registered with, and
/// what calls on it could do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The socket's token ([`Poller::register`]).
    pub token: usize,
    /// Its readiness when reported.
    pub readiness: Readiness,
}

/// The readiness of many sockets of one stack through one wait (see the
/// module docs); one per stack and process.
///
/// ```no_run
/// use libsock::{Poller, Stack, TcpListener};
///
/// let stack = Stack::from_env()?;
/// let poller = Poller::new(&stack)?;
/// let listener = stack.builder().tcp_bind("0.0.0.0:7")?;
/// listener.set_nonblocking(true)?;
/// poller.register(&listener, 0)?;
/// let mut events = Vec::new();
/// loop {
///     poller.wait(&mut events, None)?;
///     for e in &events {
///         if e.token == 0 {
///             while let Ok((stream, _)) = listener.accept() { /* register it */ }
///         }
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Poller {
    session: Arc<Session>,
    /// The end of the poller's wake pair it sleeps on (sockd and the
    /// session kick the other).
    wait: OwnedFd,
    /// Watched sockets by table row.
    watched: Mutex<HashMap<usize, Watched>>,
    /// The session's recovery count when the poller last looked: after a
    /// restart of sockd every watched socket is reported again.
    epoch: Mutex<u64>,
}

impl Poller {
    /// The poller of `stack`'s session. A second one for the same stack
    /// in one process fails with `AlreadyExists` while the first lives.
    pub fn new(stack: &Stack) -> io::Result<Poller> {
        let session = stack.session.clone();
        let (wait, kick) = sockring::wake_pair()?;
        session.set_poller(kick)?;
        let epoch = session.epoch();
        Ok(Poller {
            session,
            wait,
            watched: Mutex::new(HashMap::new()),
            epoch: Mutex::new(epoch),
        })
    }

    /// Watches `socket` under `token` (reported in its events). The
    /// socket should be in non-blocking mode. Registering it again
    /// changes its token.
    pub fn register(&self, socket: &impl Source, token: usize) -> io::Result<()> {
        let SourceRef(core, kind) = socket.source();
        if !Arc::ptr_eq(&core.session, &self.session) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the socket belongs to another stack than the poller",
            ));
        }
        let row =
            sock_id::slot(core.id).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        lock(&self.watched).insert(
            row,
            Watched {
                id: core.id,
                token,
                kind,
                core: Arc::downgrade(core),
            },
        );
        core.mem.announce_wait(wait::POLLED);
        // Reported once now, whatever happened before.
        self.session.ring_poller(row);
        Ok(())
    }

    /// Stops watching `socket`.
    pub fn deregister(&self, socket: &impl Source) -> io::Result<()> {
        let SourceRef(core, _) = socket.source();
        let row =
            sock_id::slot(core.id).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        let mut w = lock(&self.watched);
        match w.get(&row) {
            Some(x) if x.id == core.id => {
                w.remove(&row);
                core.mem.withdraw_wait(wait::POLLED);
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    /// Replaces `events` with the watched sockets the stack changed, in
    /// no order, waiting up to `timeout` (`None`: for ever) for at least
    /// one. Returns with none when the time is up.
    pub fn wait(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.collect(events);
            if !events.is_empty() {
                return Ok(());
            }
            self.session.check_alive()?;
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => return Ok(()),
                },
            };
            let ms = left.map_or(-1, |d| {
                d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
            });
            let mut pfd = libc::pollfd {
                fd: self.wait.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: pfd is a live local, and the count says one.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::last_os_error());
            }
            sockring::drain(&self.wait);
        }
    }

    /// The watched sockets whose rows rang (all of them after a restart
    /// of sockd), with their readiness; forgets sockets dropped since.
    fn collect(&self, events: &mut Vec<Event>) {
        let mut rows = Vec::new();
        self.session.take_poller_rows(|r| rows.push(r));
        let mut w = lock(&self.watched);
        {
            let now = self.session.epoch();
            let mut seen = lock(&self.epoch);
            if *seen != now {
                *seen = now;
                rows.extend(w.keys().copied());
            }
        }
        for row in rows {
            let Some(x) = w.get(&row) else { continue };
            let Some(core) = x.core.upgrade().filter(|c| c.id == x.id) else {
                w.remove(&row);
                continue;
            };
            let readiness = match x.kind {
                SourceKind::Stream => core.readiness(true),
                SourceKind::Datagram => core.readiness(false),
                SourceKind::Listener => crate::tcp::listener_readiness(&core),
            };
            events.push(Event {
                token: x.token,
                readiness,
            });
        }
    }
}

/// The poller's wake fd, to nest it in another event loop: readable when
/// [`Poller::wait`] would find something (call it with a zero timeout).
impl AsRawFd for Poller {
    fn as_raw_fd(&self) -> RawFd {
        self.wait.as_raw_fd()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        for x in lock(&self.watched).values() {
            if let Some(c) = x.core.upgrade() {
                c.mem.withdraw_wait(wait::POLLED);
            }
        }
        self.session.clear_poller();
    }
}
