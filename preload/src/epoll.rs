//! epoll over strata and kernel fds (see the crate doc, "epoll").

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use libc::{c_int, epoll_event, sigset_t};

use crate::poll::strata_revents;
use crate::{errno, real, set_errno};

/// The kernel's registration of a strata fd carries this tag (and the fd
/// in its low 32 bits) as its data: far above any pointer or fd an
/// application puts there.
const TAG: u64 = 0x57a7_a000_0000_0000;
const TAG_MASK: u64 = 0xffff_f000_0000_0000;

/// A strata fd registered with one epoll fd.
struct Reg {
    events: u32,
    data: u64,
    /// Not disarmed by `EPOLLONESHOT`.
    armed: bool,
}

/// What the shim keeps of one epoll fd.
#[derive(Default)]
struct Ep {
    regs: HashMap<c_int, Reg>,
    /// Strata fds to look at without a kick: just registered or
    /// modified, or level-triggered and ready when last reported.
    hot: HashSet<c_int>,
}

static EPS: OnceLock<Mutex<HashMap<c_int, Ep>>> = OnceLock::new();
/// A strata fd was registered with some epoll fd (else every epoll call
/// goes straight to libc).
static ANY: AtomicBool = AtomicBool::new(false);

fn eps() -> MutexGuard<'static, HashMap<c_int, Ep>> {
    EPS.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The kernel-side registration of strata fd `fd` with `ep`.
fn kernel_add(ep: c_int, fd: c_int) -> c_int {
    let mut ev = epoll_event {
        events: libc::EPOLLIN as u32,
        u64: TAG | fd as u32 as u64,
    };
    // SAFETY: `ev` is a live local.
    unsafe { real::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }
}

/// `epoll_ctl(2)` of a strata fd.
///
/// # Safety
///
/// `ev`, unless null, points to an epoll_event.
pub(crate) unsafe fn ctl(ep: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    let fail = |e| {
        set_errno(e);
        -1
    };
    let user = if ev.is_null() {
        None
    } else {
        // SAFETY: the caller's promise.
        Some(unsafe { *ev })
    };
    match op {
        libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD => {
            let Some(u) = user else {
                return fail(libc::EFAULT);
            };
            if op == libc::EPOLL_CTL_ADD {
                if ep == fd {
                    return fail(libc::EINVAL);
                }
                if eps().get(&ep).is_some_and(|e| e.regs.contains_key(&fd)) {
                    return fail(libc::EEXIST);
                }
                if kernel_add(ep, fd) < 0 {
                    return -1;
                }
            } else if !eps().get(&ep).is_some_and(|e| e.regs.contains_key(&fd)) {
                // A wrong epoll fd says EBADF/EINVAL, as libc would.
                // SAFETY: a probe of `ep` with a null event (DEL).
                if unsafe { real::epoll_ctl(ep, libc::EPOLL_CTL_DEL, -1, std::ptr::null_mut()) } < 0
                    && errno() != libc::EBADF
                {
                    return fail(libc::ENOENT);
                }
                return -1;
            }
            ANY.store(true, Ordering::Release);
            let mut all = eps();
            let e = all.entry(ep).or_default();
            e.regs.insert(
                fd,
                Reg {
                    events: u.events,
                    data: u.u64,
                    armed: true,
                },
            );
            e.hot.insert(fd);
            0
        }
        libc::EPOLL_CTL_DEL => {
            let had = eps()
                .get_mut(&ep)
                .and_then(|e| {
                    e.hot.remove(&fd);
                    e.regs.remove(&fd)
                })
                .is_some();
            // SAFETY: DEL takes no event.
            let r = unsafe { real::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
            if had {
                0
            } else {
                r
            }
        }
        _ => fail(libc::EINVAL),
    }
}

/// After `listen`/`connect` of strata fd `fd`: capi may have put another
/// file behind the number, which dropped it from the kernel's epoll
/// sets; it is registered again (and looked at).
pub(crate) fn refresh(fd: c_int) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let mut all = eps();
    for (&ep, e) in all.iter_mut() {
        if e.regs.contains_key(&fd) {
            kernel_add(ep, fd);
            e.hot.insert(fd);
        }
    }
}

/// Before strata fd `fd` closes: out of every epoll set.
pub(crate) fn forget(fd: c_int) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let mut all = eps();
    for (&ep, e) in all.iter_mut() {
        if e.regs.remove(&fd).is_some() {
            e.hot.remove(&fd);
            // SAFETY: DEL takes no event.
            unsafe { real::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
        }
    }
}

/// Before kernel fd `fd` closes: if it is an epoll fd, its record goes.
pub(crate) fn closing_fd(fd: c_int) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let e = errno();
    eps().remove(&fd);
    set_errno(e);
}

/// The events of strata fd `fd` that `r` asks for, now (0: none).
fn ready(fd: c_int, r: &Reg) -> u32 {
    let want = r.events as i16 & (libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP | libc::POLLPRI);
    strata_revents(fd, want) as u16 as u32
}

/// After reporting `fd` of `e`: one-shot disarms, edge-triggered leaves
/// the hot set, level-triggered stays in it.
fn reported(e: &mut Ep, fd: c_int) {
    let Some(r) = e.regs.get_mut(&fd) else { return };
    if r.events & libc::EPOLLONESHOT as u32 != 0 {
        r.armed = false;
        e.hot.remove(&fd);
    } else if r.events & libc::EPOLLET as u32 != 0 {
        e.hot.remove(&fd);
    } else {
        e.hot.insert(fd);
    }
}

/// `epoll_wait`/`epoll_pwait` (`p`).
///
/// # Safety
///
/// `out` points to `max` writable epoll_events; `mask`, unless null, to
/// a sigset.
pub(crate) unsafe fn wait(
    ep: c_int,
    out: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
    p: bool,
) -> c_int {
    let plain = || {
        // SAFETY: the caller's arguments.
        unsafe {
            if p {
                real::epoll_pwait(ep, out, max, timeout, mask)
            } else {
                real::epoll_wait(ep, out, max, timeout)
            }
        }
    };
    if !ANY.load(Ordering::Acquire) || max <= 0 || out.is_null() {
        return plain();
    }
    let has_strata = matches!(eps().get(&ep), Some(e) if !e.regs.is_empty());
    if !has_strata {
        return plain();
    }
    let max = max as usize;
    let deadline = (timeout >= 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
    let mut got: Vec<epoll_event> = Vec::with_capacity(max);
    let mut buf: Vec<epoll_event> = Vec::with_capacity(max);
    loop {
        got.clear();
        {
            let mut all = eps();
            let Some(e) = all.get_mut(&ep) else {
                drop(all);
                return plain();
            };
            let hot: Vec<c_int> = e.hot.iter().copied().collect();
            for fd in hot {
                if got.len() >= max {
                    break;
                }
                let Some(r) = e.regs.get(&fd) else {
                    e.hot.remove(&fd);
                    continue;
                };
                let ev = if r.armed { ready(fd, r) } else { 0 };
                if ev == 0 {
                    e.hot.remove(&fd);
                    continue;
                }
                got.push(epoll_event {
                    events: ev,
                    u64: r.data,
                });
                reported(e, fd);
            }
        }
        let room = max - got.len();
        let left_ms = if !got.is_empty() {
            0
        } else {
            match deadline {
                None => -1,
                Some(d) => {
                    let l = d.saturating_duration_since(Instant::now());
                    l.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as c_int
                }
            }
        };
        let n = if room == 0 {
            0
        } else {
            buf.clear();
            // SAFETY: `buf` has room for `room` events; `mask` the
            // caller's.
            let n = unsafe {
                if p {
                    real::epoll_pwait(ep, buf.as_mut_ptr(), room as c_int, left_ms, mask)
                } else {
                    real::epoll_wait(ep, buf.as_mut_ptr(), room as c_int, left_ms)
                }
            };
            if n < 0 {
                if got.is_empty() {
                    return -1;
                }
                0
            } else {
                // SAFETY: the kernel wrote `n` events.
                unsafe { buf.set_len(n as usize) };
                n
            }
        };
        if n > 0 {
            let mut all = eps();
            let e = all.entry(ep).or_default();
            for k in &buf {
                if k.u64 & TAG_MASK != TAG {
                    got.push(*k);
                    continue;
                }
                let fd = (k.u64 & 0xffff_ffff) as u32 as c_int;
                let Some(r) = e.regs.get(&fd) else {
                    continue;
                };
                if !r.armed {
                    // Take the kick, report nothing until re-armed.
                    strata_revents(fd, 0);
                    continue;
                }
                let data = r.data;
                if got.iter().any(|g| g.u64 == data) && e.hot.contains(&fd) {
                    continue;
                }
                let ev = ready(fd, r);
                if ev != 0 {
                    got.push(epoll_event {
                        events: ev,
                        u64: data,
                    });
                    reported(e, fd);
                }
            }
        }
        if !got.is_empty() {
            // SAFETY: `out` has room for `max` >= `got.len()` events.
            unsafe { std::ptr::copy_nonoverlapping(got.as_ptr(), out, got.len()) };
            return got.len() as c_int;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) || timeout == 0 {
            return 0;
        }
    }
}
