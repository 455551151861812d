//! strata-preload (`libstrata_preload.so`): unmodified programs on a
//! strata stack, by `LD_PRELOAD`.
//!
//! ```text
//! LD_PRELOAD=/path/to/libstrata_preload.so STRATA_INSTANCE=lab curl http://10.77.0.1/
//! ```
//!
//! The library defines the socket functions of libc; the dynamic linker
//! makes a dynamically linked program call them instead of libc's.
//! `AF_INET` and `AF_INET6` `SOCK_STREAM` (TCP) and `SOCK_DGRAM` (UDP)
//! sockets become strata sockets (through strata-capi, `libstrata`'s
//! calls, over libsock); every other fd, and every other kind of socket
//! (`AF_UNIX`, netlink, raw), goes to libc unchanged. An `AF_INET6`
//! socket is one as on Linux: dual-stack unless `IPV6_V6ONLY`, IPv4
//! peers as `::ffff:a.b.c.d` in `sockaddr_in6` (see strata-capi).
//!
//! # What is intercepted
//!
//! `socket`, `bind`, `listen`, `accept`, `accept4`, `connect`, `read`,
//! `write`, `readv`, `writev`, `recv`, `recvfrom`, `recvmsg`, `send`,
//! `sendto`, `sendmsg`, `shutdown`, `close`, `getsockname`,
//! `getpeername`, `getsockopt`, `setsockopt`, `fcntl`/`fcntl64`
//! (`F_GETFL`/`F_SETFL` with `O_NONBLOCK`, `F_GETFD`/`F_SETFD`,
//! `F_DUPFD`/`F_DUPFD_CLOEXEC`), `ioctl` (`FIONBIO`, `FIONREAD`), `dup`,
//! `dup2`, `dup3`, `poll`, `ppoll`, `select`, `pselect`, `epoll_ctl`,
//! `epoll_wait`, `epoll_pwait`, `sendfile`/`sendfile64` (from a file to a
//! strata socket), `execve`, and the fortified `__read_chk`,
//! `__recv_chk`, `__recvfrom_chk`, `__poll_chk`, `__ppoll_chk`. libc's own
//! functions are found once with `dlsym(RTLD_NEXT)`.
//!
//! Strata sockets are real fd numbers (see strata-capi: the number holds
//! the socket's readiness fd). Whether an fd is one is a bit in a bitmap
//! by fd number (one atomic load): calls on any other fd go to libc with
//! no lock and no allocation. Errors are the errnos Linux gives (capi's).
//!
//! Re-entrancy: libsock and Rust's std call `read`, `poll`, `close`,
//! `socket`... on their own kernel fds (the Unix socket to sockd, wake
//! pairs); those resolve to this library's symbols too and fall through
//! at the bitmap check. capi itself calls `close`, `dup3` and `fcntl` on
//! strata numbers: a thread-local "inside the shim" flag sends those to
//! libc.
//!
//! Name resolution is untouched: glibc's resolver uses its internal
//! socket functions, not the interposed ones, so `getaddrinfo` keeps
//! using `/etc/hosts` and the kernel's DNS path.
//!
//! When no stack runs under the instance (`STRATA_INSTANCE`, else
//! "default"), `socket(AF_INET, ...)` and `socket(AF_INET6, ...)` fail
//! with capi's errno (`ENOENT` or `ECONNREFUSED`) and a message on
//! stderr, printed once.
//!
//! # Readiness: poll, select
//!
//! A strata fd, polled by the kernel, says only "something changed". The
//! shim asks capi for the real readiness of each strata fd
//! (`POLLIN`/`POLLOUT`/`POLLERR`/`POLLHUP`/`POLLRDHUP`, computed from the
//! socket's shared memory), answers at once if any is ready (or the
//! timeout is 0), else waits in libc's `ppoll` on the kernel fds plus the
//! strata fds (for `POLLIN`, a kick), recomputes, and loops until
//! something is ready or the deadline passes (the remaining time is kept;
//! `EINTR` is returned as libc returns it). Before it looks at a strata
//! fd it takes the kicks waiting on it, so that the wait wakes on the
//! next change only. A listener is readable while connections wait for
//! `accept`, which sockd counts in its shared memory, so that a program
//! that polls several listeners and accepts from the readable one in
//! blocking mode (a `SO_REUSEPORT` group) never blocks.
//! `select`/`pselect` are `poll` on the same fds (readable: `POLLIN`,
//! `POLLHUP`, `POLLERR`; writable: `POLLOUT`, `POLLERR`).
//!
//! # epoll
//!
//! The shim keeps, per epoll fd, the strata fds registered with it and
//! their events and data, and registers each with the kernel's epoll as
//! `EPOLLIN` (level-triggered) under a tag. `epoll_wait` first checks the
//! strata fds that may be ready without a kick (just registered or
//! modified, and level-triggered ones last reported ready), then waits
//! in the kernel's epoll (not at all if something is ready already),
//! translates the tagged events into the fds' real readiness with the
//! application's data, drops spurious ones, and loops until something is
//! ready or the deadline passes. Kernel fds in the same set are reported
//! as the kernel reports them. `EPOLLET` reports a strata fd on a change
//! (a kick) that leaves it ready, `EPOLLONESHOT` once until
//! `EPOLL_CTL_MOD`. A TCP socket registered before `listen`/`connect`
//! holds a placeholder until then; capi then `dup3`s the real readiness
//! fd onto the number, which drops the placeholder from every epoll set:
//! the shim registers it again after `listen` and `connect`.
//! Limits: a strata fd reached through a `dup` of it is reported as the
//! number it was registered under; epoll sets are not told of a strata
//! fd closed through an unintercepted path.
//!
//! # fork and exec
//!
//! Before `fork(2)` (a `pthread_atfork` prepare handler) every socket of
//! the table is counted as held by one more process, in a count shared
//! by the processes (capi), and libsock serialises its requests to sockd
//! across processes (`libsock::prepare_fork`): the child keeps its
//! sockets and uses them (the data path is shared memory, inherited); a
//! socket is closed at sockd when the last process holding it closes it.
//! After a restart of sockd each process re-attaches on a session of its
//! own: sockd lets the process that made a socket, and processes of the
//! same user forked from it, take it back, and a socket two sessions
//! hold lives until both let go. A process that exits without closing a shared
//! socket leaves it open until every process sharing the session with
//! sockd exits. The fork must not happen while another thread is inside
//! a strata call (its locks would stay held in the child).
//!
//! At `execve(2)` close-on-exec strata fds close with the image (the
//! kernel closes the number; the table dies with the image; sockets a
//! fork shares are let go of first). A strata fd without close-on-exec
//! cannot carry libsock's state into the new image: there it is a plain
//! (dead) Unix socket fd, and the socket lives until the session with
//! sockd ends.
//!
//! # Limits
//!
//! Statically linked programs, and calls libc makes internally (stdio on
//! an `fdopen`ed socket, `close_range`, `posix_spawn`'s fd actions) are
//! not seen. `recvmmsg`/`sendmmsg`,
//! `splice`, `SIGIO`, `MSG_OOB` are not supported on strata sockets;
//! ancillary data (`sendmsg` with control messages) is `EOPNOTSUPP`, and
//! `recvmsg` returns none. Everything else of capi's limits holds
//! (socket options, signals; TCP over IPv6 needs a stack whose TCP
//! takes IPv6, else its bind/connect fail with `EAFNOSUPPORT`).
#![deny(unsafe_op_in_unsafe_fn)]

mod epoll;
mod io;
mod poll;
mod real;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use libc::{
    c_char, c_int, c_ulong, c_void, epoll_event, fd_set, msghdr, nfds_t, off_t, pollfd, sigset_t,
    size_t, sockaddr, socklen_t, ssize_t, timespec, timeval,
};
use strata::shim;

thread_local! {
    /// Inside a strata call: calls on strata numbers go to libc.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Whether a call on `fd` is the shim's: a strata socket, and not made
/// by the shim itself.
#[inline]
fn ours(fd: c_int) -> bool {
    shim::is_socket(fd) && !INSIDE.try_with(Cell::get).unwrap_or(true)
}

/// Clears [`INSIDE`] again, also on unwind.
struct Leave(bool);

impl Drop for Leave {
    fn drop(&mut self) {
        let was = self.0;
        let _ = INSIDE.try_with(|c| c.set(was));
    }
}

/// Runs `f` (calls into capi) with [`INSIDE`] set.
fn inside<T>(f: impl FnOnce() -> T) -> T {
    let was = INSIDE.try_with(|c| c.replace(true)).unwrap_or(true);
    let _leave = Leave(was);
    f()
}

fn errno() -> c_int {
    // SAFETY: the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e }
}

/// The "no stack" message was printed.
static TOLD: AtomicBool = AtomicBool::new(false);

/// Says once on stderr that no stack runs.
fn tell_no_stack(e: c_int) {
    if TOLD.swap(true, Ordering::Relaxed) {
        return;
    }
    let inst = std::env::var("STRATA_INSTANCE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let why = std::io::Error::from_raw_os_error(e);
    let msg = format!(
        "strata-preload: no strata stack \"{inst}\" is running \
         (/run/strata/{inst}/sockd.sock: {why}); AF_INET and AF_INET6 sockets fail\n"
    );
    // SAFETY: a write of a live buffer to stderr.
    unsafe { real::write(2, msg.as_ptr().cast(), msg.len()) };
    set_errno(e);
}

/// Bits of `socket(2)`'s type that are the type.
const SOCK_TYPE_MASK: c_int = 0xf;

/// Whether `socket(domain, ty, protocol)` makes a socket strata has:
/// TCP or UDP over IPv4 or IPv6.
fn strata_kind(domain: c_int, ty: c_int, protocol: c_int) -> bool {
    (domain == libc::AF_INET || domain == libc::AF_INET6)
        && match ty & SOCK_TYPE_MASK {
            libc::SOCK_STREAM => protocol == 0 || protocol == libc::IPPROTO_TCP,
            libc::SOCK_DGRAM => protocol == 0 || protocol == libc::IPPROTO_UDP,
            _ => false,
        }
}

/// `socket(2)`.
#[no_mangle]
pub extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    if !strata_kind(domain, ty, protocol) || INSIDE.try_with(Cell::get).unwrap_or(true) {
        // SAFETY: libc's socket with the caller's arguments.
        return unsafe { real::socket(domain, ty, protocol) };
    }
    let r = inside(|| strata::strata_socket(domain, ty, protocol));
    if r < 0 {
        let e = errno();
        if e == libc::ENOENT || e == libc::ECONNREFUSED {
            tell_no_stack(e);
        }
    }
    r
}

/// `bind(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::bind(fd, addr, len) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_bind(fd, addr, len) })
}

/// `listen(2)`.
#[no_mangle]
pub extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's listen takes two ints.
        return unsafe { real::listen(fd, backlog) };
    }
    let r = inside(|| strata::strata_listen(fd, backlog));
    let e = errno();
    epoll::refresh(fd);
    set_errno(e);
    r
}

/// `accept(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::accept(fd, addr, len) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_accept4(fd, addr, len, 0) })
}

/// `accept4(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::accept4(fd, addr, len, flags) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_accept4(fd, addr, len, flags) })
}

/// `connect(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::connect(fd, addr, len) };
    }
    // SAFETY: the caller's promise.
    let r = inside(|| unsafe { strata::strata_connect(fd, addr, len) });
    let e = errno();
    epoll::refresh(fd);
    set_errno(e);
    r
}

/// `read(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::read(fd, buf, n) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_read(fd, buf, n) })
}

/// glibc's fortified `read`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if !ours(fd) || n > buflen {
        // SAFETY: the caller's arguments (libc reports the overflow).
        return unsafe { real::__read_chk(fd, buf, n, buflen) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_read(fd, buf, n) })
}

/// `write(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::write(fd, buf, n) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_write(fd, buf, n) })
}

/// `readv(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::readv(fd, iov, cnt) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { io::readv(fd, iov, cnt, 0, std::ptr::null_mut(), std::ptr::null_mut()) })
}

/// `writev(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::writev(fd, iov, cnt) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { io::writev(fd, iov, cnt, 0, std::ptr::null(), 0) })
}

/// `recv(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::recv(fd, buf, n, flags) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe {
        io::recvfrom_trunc(
            fd,
            buf,
            n,
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    })
}

/// glibc's fortified `recv`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if !ours(fd) || n > buflen {
        // SAFETY: the caller's arguments (libc reports the overflow).
        return unsafe { real::__recv_chk(fd, buf, n, buflen, flags) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe {
        io::recvfrom_trunc(
            fd,
            buf,
            n,
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    })
}

/// `recvfrom(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::recvfrom(fd, buf, n, flags, addr, len) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { io::recvfrom_trunc(fd, buf, n, flags, addr, len) })
}

/// glibc's fortified `recvfrom`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if !ours(fd) || n > buflen {
        // SAFETY: the caller's arguments (libc reports the overflow).
        return unsafe { real::__recvfrom_chk(fd, buf, n, buflen, flags, addr, len) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { io::recvfrom_trunc(fd, buf, n, flags, addr, len) })
}

/// `recvmsg(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::recvmsg(fd, msg, flags) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { io::recvmsg(fd, msg, flags) })
}

/// `send(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::send(fd, buf, n, flags) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_send(fd, buf, n, flags) })
}

/// `sendto(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::sendto(fd, buf, n, flags, addr, len) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_sendto(fd, buf, n, flags, addr, len) })
}

/// `sendmsg(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { io::sendmsg(fd, msg, flags) })
}

/// `shutdown(2)`.
#[no_mangle]
pub extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's shutdown takes two ints.
        return unsafe { real::shutdown(fd, how) };
    }
    inside(|| strata::strata_shutdown(fd, how))
}

/// `close(2)`.
#[no_mangle]
pub extern "C" fn close(fd: c_int) -> c_int {
    if !ours(fd) {
        epoll::closing_fd(fd);
        // SAFETY: libc's close takes an int.
        return unsafe { real::close(fd) };
    }
    epoll::forget(fd);
    inside(|| strata::strata_close(fd))
}

/// `getsockname(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::getsockname(fd, addr, len) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_getsockname(fd, addr, len) })
}

/// `getpeername(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::getpeername(fd, addr, len) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_getpeername(fd, addr, len) })
}

/// `getsockopt(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::getsockopt(fd, level, name, val, len) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_getsockopt(fd, level, name, val, len) })
}

/// `setsockopt(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::setsockopt(fd, level, name, val, len) };
    }
    // SAFETY: the caller's promise.
    inside(|| unsafe { strata::strata_setsockopt(fd, level, name, val, len) })
}

/// `fcntl` on a strata socket.
fn strata_fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let r = inside(|| {
                shim::dup(fd, || {
                    // SAFETY: F_DUPFD takes an int.
                    let n = unsafe { real::fcntl(fd, cmd, arg) };
                    if n < 0 {
                        Err(errno())
                    } else {
                        Ok(n)
                    }
                })
            });
            r.unwrap_or_else(|e| {
                set_errno(e);
                -1
            })
        }
        libc::F_GETFL | libc::F_SETFL | libc::F_GETFD | libc::F_SETFD => {
            inside(|| strata::strata_fcntl(fd, cmd, arg as c_int))
        }
        // Others (owner, locks, ...) act on the number's file, as on a
        // kernel socket's.
        // SAFETY: the caller's command and argument.
        _ => unsafe { real::fcntl(fd, cmd, arg) },
    }
}

/// `fcntl(2)` (its variadic argument taken as a word, as the x86-64 and
/// aarch64 calling conventions pass it).
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::fcntl(fd, cmd, arg) };
    }
    strata_fcntl(fd, cmd, arg)
}

/// `fcntl64` (glibc's name for `fcntl` with 64-bit offsets).
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::fcntl64(fd, cmd, arg) };
    }
    strata_fcntl(fd, cmd, arg)
}

/// `ioctl(2)`: `FIONBIO` and `FIONREAD` on strata sockets; others act on
/// the number's file.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: usize) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::ioctl(fd, req, arg) };
    }
    let p = arg as *mut c_int;
    match req {
        libc::FIONBIO => {
            if p.is_null() {
                set_errno(libc::EFAULT);
                return -1;
            }
            // SAFETY: FIONBIO's argument points to an int (the caller's
            // promise; null checked).
            let on = unsafe { *p } != 0;
            inside(|| {
                let fl = strata::strata_fcntl(fd, libc::F_GETFL, 0);
                if fl < 0 {
                    return -1;
                }
                let fl = if on {
                    fl | libc::O_NONBLOCK
                } else {
                    fl & !libc::O_NONBLOCK
                };
                strata::strata_fcntl(fd, libc::F_SETFL, fl)
            })
        }
        libc::FIONREAD => {
            if p.is_null() {
                set_errno(libc::EFAULT);
                return -1;
            }
            match inside(|| shim::nread(fd)) {
                Ok(n) => {
                    // SAFETY: FIONREAD's argument points to a writable
                    // int (the caller's promise; null checked).
                    unsafe { *p = n.min(c_int::MAX as usize) as c_int };
                    0
                }
                Err(e) => {
                    set_errno(e);
                    -1
                }
            }
        }
        // SAFETY: the caller's arguments.
        _ => unsafe { real::ioctl(fd, req, arg) },
    }
}

/// `dup(2)`.
#[no_mangle]
pub extern "C" fn dup(fd: c_int) -> c_int {
    if !ours(fd) {
        // SAFETY: libc's dup takes an int.
        return unsafe { real::dup(fd) };
    }
    inside(|| {
        shim::dup(fd, || {
            // SAFETY: libc's dup takes an int.
            let n = unsafe { real::dup(fd) };
            if n < 0 {
                Err(errno())
            } else {
                Ok(n)
            }
        })
    })
    .unwrap_or_else(|e| {
        set_errno(e);
        -1
    })
}

/// `dup2`/`dup3` of anything onto anything: a strata socket behind `new`
/// is let go of first; a strata socket `fd` gets `new` as another number.
fn dup_onto(fd: c_int, new: c_int, flags: c_int, three: bool) -> c_int {
    let do_real = || {
        // SAFETY: libc's dup2/dup3 take ints.
        unsafe {
            if three {
                real::dup3(fd, new, flags)
            } else {
                real::dup2(fd, new)
            }
        }
    };
    let from = ours(fd);
    let onto = ours(new);
    if !from && !onto {
        return do_real();
    }
    if fd == new {
        // dup2 leaves it alone; dup3 says EINVAL (libc checks).
        return do_real();
    }
    if onto {
        epoll::forget(new);
        let _ = inside(|| shim::release_number(new));
    }
    if !from {
        return do_real();
    }
    inside(|| {
        shim::dup(fd, || {
            let n = do_real();
            if n < 0 {
                Err(errno())
            } else {
                Ok(n)
            }
        })
    })
    .unwrap_or_else(|e| {
        set_errno(e);
        -1
    })
}

/// `dup2(2)`.
#[no_mangle]
pub extern "C" fn dup2(fd: c_int, new: c_int) -> c_int {
    dup_onto(fd, new, 0, false)
}

/// `dup3(2)`.
#[no_mangle]
pub extern "C" fn dup3(fd: c_int, new: c_int, flags: c_int) -> c_int {
    dup_onto(fd, new, flags, true)
}

/// `poll(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { poll::poll(fds, n, poll::ms(timeout), std::ptr::null(), false) }
}

/// glibc's fortified `poll`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    if fdslen / std::mem::size_of::<pollfd>() < n as usize {
        // SAFETY: libc reports the overflow.
        return unsafe { real::__poll_chk(fds, n, timeout, fdslen) };
    }
    // SAFETY: the caller's promise.
    unsafe { poll(fds, n, timeout) }
}

/// `ppoll(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    t: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the caller's promise (a timespec, if not null).
    let timeout = unsafe { poll::ts(t) };
    match timeout {
        // SAFETY: the caller's promise.
        Some(timeout) => unsafe { poll::poll(fds, n, timeout, mask, true) },
        None => {
            set_errno(libc::EINVAL);
            -1
        }
    }
}

/// glibc's fortified `ppoll`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    t: *const timespec,
    mask: *const sigset_t,
    fdslen: size_t,
) -> c_int {
    if fdslen / std::mem::size_of::<pollfd>() < n as usize {
        // SAFETY: libc reports the overflow.
        return unsafe { real::__ppoll_chk(fds, n, t, mask, fdslen) };
    }
    // SAFETY: the caller's promise.
    unsafe { ppoll(fds, n, t, mask) }
}

/// `select(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn select(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    t: *mut timeval,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { poll::select(n, r, w, e, t) }
}

/// `pselect(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    t: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { poll::pselect(n, r, w, e, t, mask) }
}

/// `epoll_ctl(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(ep: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    if !ours(fd) {
        // SAFETY: the caller's arguments.
        return unsafe { real::epoll_ctl(ep, op, fd, ev) };
    }
    // SAFETY: the caller's promise.
    unsafe { epoll::ctl(ep, op, fd, ev) }
}

/// `epoll_wait(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    ep: c_int,
    ev: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { epoll::wait(ep, ev, max, timeout, std::ptr::null(), false) }
}

/// `epoll_pwait(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    ep: c_int,
    ev: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { epoll::wait(ep, ev, max, timeout, mask, true) }
}

/// `sendfile(2)`.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sendfile(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t {
    if !ours(out) && !ours(inp) {
        // SAFETY: the caller's arguments.
        return unsafe { real::sendfile(out, inp, off, n) };
    }
    // SAFETY: the caller's promise.
    unsafe { io::sendfile(out, inp, off, n) }
}

/// `sendfile64` (glibc's name with a 64-bit offset; the same on 64-bit).
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn sendfile64(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t {
    if !ours(out) && !ours(inp) {
        // SAFETY: the caller's arguments.
        return unsafe { real::sendfile64(out, inp, off, n) };
    }
    // SAFETY: the caller's promise.
    unsafe { io::sendfile(out, inp, off, n) }
}

/// `execve(2)`: close-on-exec strata sockets a fork shares are let go
/// of first.
///
/// # Safety
///
/// As libc's.
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    inside(shim::before_exec);
    // SAFETY: the caller's arguments.
    unsafe { real::execve(path, argv, envp) }
}

/// The `pthread_atfork` prepare handler.
extern "C" fn before_fork() {
    inside(shim::before_fork);
}

/// Registers the fork handler when the library is loaded.
extern "C" fn init() {
    // SAFETY: registers a handler that lives as long as the process
    // (this library is never unloaded: LD_PRELOAD).
    unsafe { libc::pthread_atfork(Some(before_fork), None, None) };
}

/// Runs [`init`] at load time.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
