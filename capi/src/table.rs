//! The process's table of strata sockets, by fd number.
//!
//! One global map from fd to an `Arc`'d [`Socket`]. The map's lock is
//! held only to look up, insert or remove an entry, never during a call
//! on a socket: a call takes its entry out (an `Arc` clone) and goes on
//! without it, so a blocking call on one socket never holds up another
//! thread's calls.
//!
//! Beside the map, a bitmap by fd number (fds below [`BITMAP_FDS`]) says
//! without a lock whether an fd is a strata socket ([`is_socket`]), so
//! that an `LD_PRELOAD` shim sends the calls on every other fd straight
//! to libc at the cost of one atomic load.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::errno::{Errno, Res};
use crate::socket::Socket;

type Map = HashMap<RawFd, Arc<Socket>>;

static TABLE: OnceLock<Mutex<Map>> = OnceLock::new();

/// Fds below this have a bit in [`BITS`]; above, [`BIG`] counts them.
pub(crate) const BITMAP_FDS: usize = 1 << 16;
/// One bit per fd number below [`BITMAP_FDS`]: a strata socket.
static BITS: [AtomicU64; BITMAP_FDS / 64] = [const { AtomicU64::new(0) }; BITMAP_FDS / 64];
/// Strata sockets at numbers of [`BITMAP_FDS`] and above.
static BIG: AtomicUsize = AtomicUsize::new(0);

/// Marks `fd` in the bitmap (under the map's lock).
fn mark(fd: RawFd, on: bool) {
    match usize::try_from(fd) {
        Ok(i) if i < BITMAP_FDS => {
            let bit = 1u64 << (i % 64);
            if on {
                BITS[i / 64].fetch_or(bit, Ordering::Release);
            } else {
                BITS[i / 64].fetch_and(!bit, Ordering::Release);
            }
        }
        Ok(_) if on => {
            BIG.fetch_add(1, Ordering::Release);
        }
        Ok(_) => {
            BIG.fetch_sub(1, Ordering::Release);
        }
        Err(_) => {}
    }
}

/// Whether `fd` is a strata socket: one atomic load for fds below
/// [`BITMAP_FDS`] (a look at the map above, only when there are such
/// sockets), no lock, no allocation.
pub(crate) fn is_socket(fd: RawFd) -> bool {
    match usize::try_from(fd) {
        Ok(i) if i < BITMAP_FDS => BITS[i / 64].load(Ordering::Acquire) & (1u64 << (i % 64)) != 0,
        Ok(_) => BIG.load(Ordering::Acquire) != 0 && contains(fd),
        Err(_) => false,
    }
}

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
    let fd = s.fd;
    insert_at(fd, s);
}

/// Enters `s` under number `fd` (the socket's own, or a dup of it).
pub(crate) fn insert_at(fd: RawFd, s: Arc<Socket>) {
    let stale = {
        let mut m = map();
        let stale = m.insert(fd, s);
        if stale.is_none() {
            mark(fd, true);
        }
        stale
    };
    // Dropped here, outside the lock (closing a socket talks to sockd).
    drop(stale);
}

/// Every socket of the table, with its numbers (for a fork).
pub(crate) fn all() -> Vec<(RawFd, Arc<Socket>)> {
    map().iter().map(|(&fd, s)| (fd, s.clone())).collect()
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
    let found = {
        let mut m = map();
        let found = m.remove(&fd);
        if found.is_some() {
            mark(fd, false);
        }
        found
    };
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
