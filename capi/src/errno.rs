//! errno: setting it, and the errno of an `io::Error`.

use std::io;

use libc::c_int;

/// A failed call's errno.
pub(crate) type Errno = c_int;

/// The result of a call: a value, or the errno it fails with.
pub(crate) type Res<T> = Result<T, Errno>;

/// The calling thread's errno.
pub(crate) fn get() -> c_int {
    // SAFETY: `__errno_location` returns the calling thread's errno
    // slot, valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno.
pub(crate) fn set(e: c_int) {
    // SAFETY: as in `get`; the slot is the thread's own to write.
    unsafe { *libc::__errno_location() = e }
}

/// The errno a failed libsock call stands for: its OS error when it has
/// one (libsock reports Linux's errnos), else the errno of its kind.
pub(crate) fn of(e: &io::Error) -> Errno {
    if let Some(n) = e.raw_os_error() {
        return n;
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EACCES,
        K::ConnectionRefused => libc::ECONNREFUSED,
        K::ConnectionReset => libc::ECONNRESET,
        K::ConnectionAborted => libc::ECONNABORTED,
        K::NotConnected => libc::ENOTCONN,
        K::AddrInUse => libc::EADDRINUSE,
        K::AddrNotAvailable => libc::EADDRNOTAVAIL,
        K::BrokenPipe => libc::EPIPE,
        K::AlreadyExists => libc::EEXIST,
        K::WouldBlock => libc::EAGAIN,
        K::InvalidInput => libc::EINVAL,
        K::InvalidData => libc::EPROTO,
        K::TimedOut => libc::ETIMEDOUT,
        K::Interrupted => libc::EINTR,
        K::Unsupported => libc::EOPNOTSUPP,
        K::OutOfMemory => libc::ENOMEM,
        K::UnexpectedEof => libc::ECONNRESET,
        _ => libc::EIO,
    }
}

/// `io::Error` → errno, for `map_err`.
pub(crate) fn io(e: io::Error) -> Errno {
    of(&e)
}

/// The errno of the last failed system call.
pub(crate) fn last() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Whether a blocking call a signal handler interrupted fails with
/// `EINTR` (libsock's interrupt policy). Linux restarts the call when the
/// handler that ran has `SA_RESTART`; which handler ran is not known
/// here, so: `EINTR` unless every handler the process has installed
/// restarts calls.
pub(crate) fn signal_interrupts() -> bool {
    (1..=libc::SIGRTMAX()).any(|sig| {
        // SAFETY: an all-zero sigaction is a valid value to overwrite.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a null new action only reads the current one into
        // `old`, a live local.
        let ok = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } == 0;
        ok && old.sa_sigaction != libc::SIG_DFL
            && old.sa_sigaction != libc::SIG_IGN
            && old.sa_flags & libc::SA_RESTART == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_keep_their_number_and_kinds_map_like_linux() {
        let e = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert_eq!(of(&e), libc::EHOSTUNREACH);
        // libsock's "no strata stack ... is running" keeps only the kind.
        let e = io::Error::new(io::ErrorKind::NotFound, "no strata stack");
        assert_eq!(of(&e), libc::ENOENT);
        let e = io::Error::new(io::ErrorKind::Unsupported, "IPv4 only");
        assert_eq!(of(&e), libc::EOPNOTSUPP);
        let e = io::Error::new(io::ErrorKind::WouldBlock, "x");
        assert_eq!(of(&e), libc::EAGAIN);
    }

    #[test]
    fn errno_round_trips_on_this_thread() {
        set(libc::EINPROGRESS);
        assert_eq!(get(), libc::EINPROGRESS);
        set(0);
        assert_eq!(get(), 0);
    }
}
