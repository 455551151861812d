//! What clients made readable: the listener, each session's socket and
//! each session's wake pair, in one epoll set. A turn asks it once
//! (`epoll_wait` without waiting) and then reads only what is ready, where
//! it used to try `accept4` and a `recvmsg` per session every turn, each
//! failing with EAGAIN when nothing came. sockd sleeps in the same set,
//! which holds its eventfd too (edge-triggered: a kick wakes it and needs
//! no read), and the events that woke it are the next turn's look.

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use super::*;

/// The listener's tag; a session's socket is tagged `sid << 1`, its wake
/// pair `sid << 1 | 1`.
const LISTENER: u64 = u64::MAX;

/// Most events taken per turn; more stay ready for the next.
const EVENTS: usize = 64;

/// Doorbell words (64 rows each) taken from one session per turn.
const BELL_WORDS_PER_TURN: usize = 64;

/// sockd's own eventfd's tag.
const EVENTFD: u64 = u64::MAX - 1;

/// The epoll set and what its last look found.
pub(crate) struct Ready {
    epoll: Epoll,
    /// The listener is in the set (not while accepting pauses: it stays
    /// readable, and sockd would not sleep).
    listening: bool,
    /// The listener had a connection waiting.
    pub(crate) listener: bool,
    /// Sessions with a message (or a hang-up) waiting.
    pub(crate) sessions: Vec<u64>,
    /// Sessions whose wake pair was kicked (their doorbells rang).
    pub(crate) rung: Vec<u64>,
    /// The tags of what the last `epoll_wait` found.
    tags: [u64; EVENTS],
    /// How many of `tags` a sleep found, until the next look takes them
    /// instead of asking again.
    woke: Option<usize>,
}

impl Ready {
    pub(crate) fn new() -> nix::Result<Ready> {
        Ok(Ready {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            listening: false,
            listener: false,
            sessions: Vec::new(),
            rung: Vec::new(),
            tags: [0; EVENTS],
            woke: None,
        })
    }

    /// Adds sockd's eventfd `fd` to the set, edge-triggered, so that
    /// sockd sleeps in it ([`strata_ipc::serve::Layer::epoll_fd`]).
    pub(crate) fn watch_eventfd(&self, fd: RawFd) -> nix::Result<()> {
        // SAFETY: the fd is the fabric's eventfd for sockd, open for the
        // process's lifetime; borrowed only for this call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        self.epoll.add(
            fd,
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, EVENTFD),
        )
    }

    /// Keeps what the sleep's `epoll_wait` found for the next look.
    pub(crate) fn woke(&mut self, events: &[libc::epoll_event]) {
        let n = events.len().min(EVENTS);
        for (t, e) in self.tags.iter_mut().zip(&events[..n]) {
            *t = e.u64;
        }
        self.woke = Some(n);
    }

    /// Watches session `sid`'s socket (`wake`: its wake pair's end).
    pub(crate) fn watch(&self, fd: impl AsFd, sid: u64, wake: bool) {
        let tag = sid << 1 | u64::from(wake);
        // A failure (out of memory) leaves the session unheard; its
        // client then times out, as with a sockd that cannot serve it.
        let _ = self
            .epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, tag));
    }

    /// Watches the listener, or stops (`on`).
    pub(crate) fn listen(&mut self, listener: &OwnedFd, on: bool) {
        if on == self.listening {
            return;
        }
        let done = if on {
            self.epoll
                .add(listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
        } else {
            self.epoll.delete(listener)
        };
        if done.is_ok() {
            self.listening = on;
        }
        // Whatever waits in the backlog shows at the next look.
        self.listener = false;
    }

    /// What is ready now, without waiting; wake pairs that were kicked
    /// are drained here (`wake_of` finds a session's end).
    pub(crate) fn look(&mut self, wake_of: impl Fn(u64) -> Option<RawFd>) {
        let n = match self.woke.take() {
            Some(n) => n,
            None => {
                let mut ev = [EpollEvent::empty(); EVENTS];
                crate::syscall();
                let n = self.epoll.wait(&mut ev, 0u8).unwrap_or(0);
                for (t, e) in self.tags.iter_mut().zip(&ev[..n]) {
                    *t = e.data();
                }
                n
            }
        };
        self.sessions.clear();
        for i in 0..n {
            let tag = self.tags[i];
            match tag {
                EVENTFD => {}
                LISTENER => self.listener = true,
                tag if tag & 1 == 1 => {
                    if let Some(fd) = wake_of(tag >> 1) {
                        crate::syscall();
                        sockring::drain(&fd);
                    }
                    self.rung.push(tag >> 1);
                }
                tag => self.sessions.push(tag >> 1),
            }
        }
    }
}

impl AsRawFd for Ready {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }
}

impl Sockd<'_> {
    /// Looks at what clients made readable (once per turn), and gives
    /// the sockets whose doorbells rang a look (a row is only a hint: the
    /// socket there must be the session's).
    pub(crate) fn poll_ready(&mut self) {
        let sessions = &self.sessions;
        self.ready.look(|sid| {
            sessions
                .get(&sid)
                .and_then(|s| s.wake.as_ref())
                .map(|w| w.as_raw_fd())
        });
        let mut named = Vec::new();
        let mut more = Vec::new();
        for sid in std::mem::take(&mut self.ready.rung) {
            let Some(bell) = self.sessions.get(&sid).and_then(|s| s.bell.as_ref()) else {
                continue;
            };
            let left = bell.bell.take(BELL_WORDS_PER_TURN, |row| {
                if let Some(r) = self.table.get(row) {
                    named.push((sid, r.id));
                }
            });
            if left {
                // The rest next turn (a session that rings every row
                // gets no more than its share of a turn).
                more.push(sid);
            }
        }
        self.ready.rung = more;
        self.stats.add(Stat::DoorbellRings, named.len() as u64);
        for (sid, id) in named {
            if self.own(sid, id).is_some() {
                self.activate(id);
            }
        }
    }
}
