//! Sockets a forked process inherits: a count, shared by the processes,
//! of how many of them hold each socket, so that the socket is closed at
//! sockd only by the last one that closes it (as the kernel closes a
//! socket with its last descriptor).
//!
//! The counts live in an anonymous shared mapping made at the first
//! fork, which every process forked after inherits. A socket is keyed by
//! the inode of its readiness fd (a Unix socket, unique while open).
//! [`prepare`] (before `fork(2)`) counts one more holder for every
//! socket of the table; [`last_holder`] (when a process lets go of one)
//! one fewer, and says whether it was the last. A process that exits
//! without closing a socket leaves its count standing: the socket then
//! lives until the session with sockd ends (every process holding it
//! exited).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::table;

/// Sockets the shared count can hold (open addressing).
const SLOTS: usize = 1 << 14;

/// One socket's count: its key (0: a free slot) and holders.
#[repr(C)]
struct Slot {
    key: AtomicU64,
    holders: AtomicU64,
}

/// The shared mapping, made once (its address, as usize).
static SHARED: OnceLock<Option<usize>> = OnceLock::new();

fn slots() -> Option<&'static [Slot]> {
    let base = (*SHARED.get_or_init(|| {
        let len = SLOTS * std::mem::size_of::<Slot>();
        // SAFETY: an anonymous shared mapping of `len` bytes, nothing
        // else mapped at the address the kernel picks; zeroed by the
        // kernel (all slots free).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(p as usize)
    }))?;
    // SAFETY: the mapping is `SLOTS` zero-initialised slots (atomics of
    // all-zero bytes are valid), never unmapped, suitably aligned (page
    // aligned), and only ever accessed through atomics.
    Some(unsafe { std::slice::from_raw_parts(base as *const Slot, SLOTS) })
}

/// The slot of `key`, made if `make`.
fn slot(key: u64, make: bool) -> Option<&'static Slot> {
    let s = slots()?;
    let start = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 50) as usize % SLOTS;
    for i in 0..SLOTS {
        let sl = &s[(start + i) % SLOTS];
        let k = sl.key.load(Ordering::Acquire);
        if k == key {
            return Some(sl);
        }
        if k == 0 {
            if !make {
                return None;
            }
            match sl
                .key
                .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(sl),
                Err(k) if k == key => return Some(sl),
                Err(_) => continue,
            }
        }
    }
    None
}

/// The inode of `fd`'s file (0: none).
fn inode(fd: RawFd) -> u64 {
    // SAFETY: an all-zero stat is valid; fstat writes it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live local.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return 0;
    }
    st.st_ino
}

/// Before `fork(2)`: every socket of the table with a libsock object
/// gets one more holder (the child). Also readies libsock's sessions
/// (see `libsock::prepare_fork`).
pub(crate) fn prepare() {
    let all = table::all();
    if all.is_empty() {
        return;
    }
    libsock::prepare_fork();
    let mut seen = Vec::new();
    for (fd, s) in all {
        if seen.iter().any(|p| std::ptr::eq(*p, &*s)) {
            continue;
        }
        seen.push(std::sync::Arc::as_ptr(&s));
        if matches!(
            s.state(),
            crate::socket::State::Pending | crate::socket::State::Closed
        ) {
            continue;
        }
        let mut key = s.fork_key.load(Ordering::Acquire);
        if key == 0 {
            key = inode(fd);
            if key == 0 {
                continue;
            }
        }
        let Some(sl) = slot(key, true) else { continue };
        // A socket counted for the first time: this process and the
        // child; else one more.
        if sl.holders.load(Ordering::Acquire) == 0 || s.fork_key.load(Ordering::Acquire) == 0 {
            sl.holders.store(2, Ordering::Release);
        } else {
            sl.holders.fetch_add(1, Ordering::AcqRel);
        }
        s.fork_key.store(key, Ordering::Release);
    }
}

/// A process lets go of the socket of `key`: whether it was the last
/// holder (then it closes it at sockd).
pub(crate) fn last_holder(key: u64) -> bool {
    let Some(sl) = slot(key, false) else {
        return true;
    };
    let mut h = sl.holders.load(Ordering::Acquire);
    loop {
        if h <= 1 {
            sl.holders.store(0, Ordering::Release);
            return true;
        }
        match sl
            .holders
            .compare_exchange(h, h - 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return false,
            Err(now) => h = now,
        }
    }
}

/// Before `execve(2)`: the close-on-exec numbers of sockets that forked
/// processes share are let go of now (the exec closes them without a
/// word to this table), so that the count of holders stays right.
pub(crate) fn before_exec() {
    for (fd, s) in table::all() {
        if s.fork_key.load(Ordering::Acquire) == 0 {
            continue;
        }
        // SAFETY: F_GETFD takes no argument.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if fl >= 0 && fl & libc::FD_CLOEXEC != 0 {
            let _ = crate::socket::release(fd, false);
        }
    }
}
