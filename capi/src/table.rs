//! The process's table of strata sockets, by fd number.
//!
//! One global map from fd to an `Arc`'d [`Socket`]. The map's lock is
//! held only to look up, insert or remove an entry, never during a call
//! on a socket: a call takes its entry out (an `Arc` clone) and goes on
//! without it, so a blocking call on one socket never holds up another
//! thread's calls.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::errno::{Errno, Res};
use crate::socket::Socket;

type Map = HashMap<RawFd, Arc<Socket>>;

static TABLE: OnceLock<Mutex<Map>> = OnceLock::new();

/// Locks, ignoring poison: every critical section here leaves its data
/// consistent between statements that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn map() -> MutexGuard<'static, Map> {
    lock(TABLE.get_or_init(Default::default))
}

/// Enters `s` under its fd. An entry left under that number (a socket
/// whose fd was closed with close(2) instead of `strata_close`) is
/// dropped.
pub(crate) fn insert(s: Arc<Socket>) {
    let stale = map().insert(s.fd, s);
    // Dropped here, outside the lock (closing a socket talks to sockd).
    drop(stale);
}

/// The socket under `fd`: `EBADF` if `fd` is not open, `ENOTSOCK` if
/// it is not a strata socket (as Linux says for an fd that is no
/// socket).
pub(crate) fn get(fd: RawFd) -> Res<Arc<Socket>> {
    let found = map().get(&fd).cloned();
    found.ok_or_else(|| not_ours(fd))
}

/// Takes `fd`'s socket out of the table.
pub(crate) fn remove(fd: RawFd) -> Res<Arc<Socket>> {
    let found = map().remove(&fd);
    found.ok_or_else(|| not_ours(fd))
}

/// Whether `fd` is a strata socket.
pub(crate) fn contains(fd: RawFd) -> bool {
    map().contains_key(&fd)
}

fn not_ours(fd: RawFd) -> Errno {
    // SAFETY: F_GETFD takes no argument and only looks the fd up.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        libc::EBADF
    } else {
        libc::ENOTSOCK
    }
}
