//! `poll`, `ppoll`, `select`, `pselect` over strata and kernel fds (see
//! the crate doc, "Readiness").

use std::time::{Duration, Instant};

use libc::{c_int, fd_set, nfds_t, pollfd, sigset_t, timespec, timeval};
use strata::shim;

use crate::{errno, inside, ours, real, set_errno};

/// A timeout: `None` waits forever.
pub(crate) type Timeout = Option<Duration>;

/// `poll`'s milliseconds (negative: forever).
pub(crate) fn ms(t: c_int) -> Timeout {
    (t >= 0).then(|| Duration::from_millis(t as u64))
}

/// `ppoll`'s timespec (null: forever); `None` for an invalid one.
///
/// # Safety
///
/// `t`, unless null, points to a readable timespec.
pub(crate) unsafe fn ts(t: *const timespec) -> Option<Timeout> {
    if t.is_null() {
        return Some(None);
    }
    // SAFETY: the caller's promise.
    let t = unsafe { *t };
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return None;
    }
    Some(Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32)))
}

fn to_ts(d: Duration) -> timespec {
    timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// libc's wait on `fds` for `t`.
///
/// # Safety
///
/// `fds` points to `n` pollfds; `mask`, unless null, to a sigset.
unsafe fn wait(fds: *mut pollfd, n: nfds_t, t: Timeout, mask: *const sigset_t) -> c_int {
    let spec = t.map(to_ts);
    let sp = spec
        .as_ref()
        .map_or(std::ptr::null(), |s| s as *const timespec);
    // SAFETY: the caller's promise; `sp` null or a live local.
    unsafe { real::ppoll(fds, n, sp, mask) }
}

/// The readiness of strata fd `fd` for `events` (`POLLERR`, `POLLHUP`,
/// `POLLNVAL` always).
pub(crate) fn strata_revents(fd: c_int, events: i16) -> i16 {
    let ev = inside(|| shim::poll_events(fd, true));
    ev & (events | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL)
}

/// `poll`/`ppoll` over strata and kernel fds. `pp`: the caller is ppoll
/// (fewer checks to make: both go to libc's ppoll).
///
/// # Safety
///
/// `fds` points to `n` pollfds (unless `n` is 0); `mask`, unless null,
/// to a sigset.
pub(crate) unsafe fn poll(
    fds: *mut pollfd,
    n: nfds_t,
    t: Timeout,
    mask: *const sigset_t,
    pp: bool,
) -> c_int {
    let user: &mut [pollfd] = if n == 0 || fds.is_null() {
        &mut []
    } else {
        // SAFETY: `fds` points to `n` pollfds (the caller's promise).
        unsafe { std::slice::from_raw_parts_mut(fds, n as usize) }
    };
    if !user.iter().any(|p| ours(p.fd)) {
        // SAFETY: the caller's arguments.
        return unsafe {
            if pp || t.is_some_and(|d| d.as_millis() > i32::MAX as u128) {
                wait(fds, n, t, mask)
            } else {
                real::poll(fds, n, t.map_or(-1, |d| d.as_millis() as c_int))
            }
        };
    }
    let strata: Vec<bool> = user.iter().map(|p| ours(p.fd)).collect();
    let mut work: Vec<pollfd> = user
        .iter()
        .zip(&strata)
        .map(|(p, &s)| pollfd {
            fd: p.fd,
            events: if s { libc::POLLIN } else { p.events },
            revents: 0,
        })
        .collect();
    let mut rev = vec![0i16; user.len()];
    let deadline = t.map(|d| Instant::now() + d);
    loop {
        let mut ready = 0;
        for (i, p) in user.iter().enumerate() {
            if strata[i] {
                rev[i] = strata_revents(p.fd, p.events);
                if rev[i] != 0 {
                    ready += 1;
                }
            }
        }
        let left = if ready > 0 {
            Some(Duration::ZERO)
        } else {
            deadline.map(|d| d.saturating_duration_since(Instant::now()))
        };
        // SAFETY: `work` is a live vector of its length; `mask` the
        // caller's.
        let r = unsafe { wait(work.as_mut_ptr(), work.len() as nfds_t, left, mask) };
        if r < 0 {
            if ready > 0 && errno() == libc::EINTR {
                // The strata fds' answer stands.
            } else {
                return -1;
            }
        }
        for (i, w) in work.iter().enumerate() {
            if strata[i] {
                if w.revents & libc::POLLNVAL != 0 {
                    rev[i] = libc::POLLNVAL;
                }
            } else {
                rev[i] = if r < 0 { 0 } else { w.revents };
            }
        }
        let total = rev.iter().filter(|&&x| x != 0).count();
        let expired = left.is_some_and(|l| l.is_zero());
        if total > 0 || expired {
            for (p, &x) in user.iter_mut().zip(&rev) {
                p.revents = x;
            }
            return total as c_int;
        }
        // A kick with nothing the caller asked for: look again.
    }
}

const FD_SETSIZE: c_int = libc::FD_SETSIZE as c_int;

/// Whether `fd` is in set `s` (null: no set).
///
/// # Safety
///
/// `s`, unless null, points to an fd_set.
unsafe fn isset(fd: c_int, s: *mut fd_set) -> bool {
    // SAFETY: the caller's promise; `fd` is below FD_SETSIZE.
    !s.is_null() && unsafe { libc::FD_ISSET(fd, s) }
}

/// `select`/`pselect` as `poll` on the same fds, when strata fds are
/// among them; `None` when none are (the caller goes to libc).
///
/// # Safety
///
/// The sets, unless null, point to fd_sets; `mask` as for `poll`.
unsafe fn select_poll(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    t: Timeout,
    mask: *const sigset_t,
) -> Option<c_int> {
    if !(0..=FD_SETSIZE).contains(&n) {
        return None;
    }
    let mut any = false;
    let mut fds = Vec::new();
    for fd in 0..n {
        // SAFETY: the caller's promise.
        let (ir, iw, ie) = unsafe { (isset(fd, r), isset(fd, w), isset(fd, e)) };
        if !(ir || iw || ie) {
            continue;
        }
        any |= ours(fd);
        let mut ev = 0;
        if ir {
            ev |= libc::POLLIN;
        }
        if iw {
            ev |= libc::POLLOUT;
        }
        if ie {
            ev |= libc::POLLPRI;
        }
        fds.push(pollfd {
            fd,
            events: ev,
            revents: 0,
        });
    }
    if !any {
        return None;
    }
    // SAFETY: `fds` is a live vector of its length; `mask` the caller's.
    let got = unsafe { poll(fds.as_mut_ptr(), fds.len() as nfds_t, t, mask, true) };
    if got < 0 {
        return Some(-1);
    }
    if fds.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
        set_errno(libc::EBADF);
        return Some(-1);
    }
    for s in [r, w, e] {
        if !s.is_null() {
            // SAFETY: a set of the caller's.
            unsafe { libc::FD_ZERO(s) };
        }
    }
    let mut count = 0;
    for p in &fds {
        let rd = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
        let wr = libc::POLLOUT | libc::POLLERR;
        for (s, bits, asked) in [
            (r, rd, libc::POLLIN),
            (w, wr, libc::POLLOUT),
            (e, libc::POLLPRI, libc::POLLPRI),
        ] {
            if p.events & asked != 0 && p.revents & bits != 0 {
                // SAFETY: a set of the caller's; `fd` below FD_SETSIZE.
                unsafe { libc::FD_SET(p.fd, s) };
                count += 1;
            }
        }
    }
    Some(count)
}

/// `select(2)`: `t` is updated to the time left, as Linux does.
///
/// # Safety
///
/// As libc's.
pub(crate) unsafe fn select(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    t: *mut timeval,
) -> c_int {
    let timeout = if t.is_null() {
        None
    } else {
        // SAFETY: the caller's promise.
        let tv = unsafe { *t };
        if tv.tv_sec < 0 || tv.tv_usec < 0 {
            // SAFETY: libc reports EINVAL.
            return unsafe { real::select(n, r, w, e, t) };
        }
        Some(Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64))
    };
    let start = Instant::now();
    // SAFETY: the caller's promise.
    match unsafe { select_poll(n, r, w, e, timeout, std::ptr::null()) } {
        // SAFETY: the caller's arguments.
        None => unsafe { real::select(n, r, w, e, t) },
        Some(c) => {
            if let Some(d) = timeout {
                let left = d.saturating_sub(start.elapsed());
                // SAFETY: the caller's timeval, writable as Linux writes it.
                unsafe {
                    (*t).tv_sec = left.as_secs() as libc::time_t;
                    (*t).tv_usec = left.subsec_micros() as libc::suseconds_t;
                }
            }
            c
        }
    }
}

/// `pselect(2)`.
///
/// # Safety
///
/// As libc's.
pub(crate) unsafe fn pselect(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    t: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the caller's promise.
    let Some(timeout) = (unsafe { ts(t) }) else {
        // SAFETY: libc reports EINVAL.
        return unsafe { real::pselect(n, r, w, e, t, mask) };
    };
    // SAFETY: the caller's promise.
    match unsafe { select_poll(n, r, w, e, timeout, mask) } {
        // SAFETY: the caller's arguments.
        None => unsafe { real::pselect(n, r, w, e, t, mask) },
        Some(c) => c,
    }
}
