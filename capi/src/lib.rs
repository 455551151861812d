//! strata-capi (`libstrata`): BSD sockets on a strata stack, for C.
//!
//! A C ABI over [`libsock`]: `strata_socket`, `strata_bind`,
//! `strata_connect`, `strata_send`, ... have the signatures of their BSD
//! namesakes and behave like them, so that a C program uses strata by
//! calling `strata_*` where it called the kernel (no `LD_PRELOAD`).
//! `include/strata.h` declares them; build.rs generates it with cbindgen
//! from the functions below and their doc comments.
//!
//! Install:
//!
//! ```text
//! cargo build --release -p strata-capi && install -Dm644 capi/include/strata.h /usr/local/include/strata.h && install -Dm755 target/release/libstrata.so /usr/local/lib/libstrata.so && ldconfig
//! ```
//!
//! then `cc prog.c -lstrata` and run with `STRATA_INSTANCE=<instance>`
//! (or call `strata_set_instance`). `libstrata.a` links statically.
//!
//! # Sockets are fds
//!
//! Each socket is a real fd of the process, in one process-wide table
//! (fd → socket) that the calls look up. The number is reserved at
//! `strata_socket` and stays the same for the socket's life: while a TCP
//! socket is pending it is an eventfd, and once libsock's object exists
//! the object's readiness fd is `dup3`'d onto it (a UDP socket has its
//! object, and its readiness fd, from the start; an accepted one too).
//! `strata_close` closes the number and drops the object. Close strata
//! fds with `strata_close`, not `close(2)`: the table would keep the
//! socket until the number is reused by another strata socket.
//!
//! The table's lock is held only to find a socket, never during a call:
//! a blocking `strata_recv` on one socket never holds up another
//! thread's calls, on that socket or another.
//!
//! A signal handler that interrupts a blocking call makes it fail with
//! `EINTR` (nothing transferred; a connect goes on, as on Linux) unless
//! every handler the process has installed has `SA_RESTART`: Linux
//! decides by the handler that ran, which a call here cannot know.
//!
//! # The state machine
//!
//! libsock makes TCP sockets already listening (a `TcpListener`) or
//! connecting (a `TcpStream`); a BSD socket exists before either. So:
//!
//! * TCP `socket()` → *pending*: options and the `bind()` address are
//!   kept. `bind()` checks the address only; the port is taken by
//!   `listen()`, which may then fail with `EADDRINUSE` or `EACCES`.
//! * *pending* → `listen()` → *listening* (libsock `tcp_bind` with the
//!   kept `SO_REUSEADDR`, buffer sizes and the backlog).
//! * *pending* → `connect()` → *connecting* (`tcp_connect_nonblocking`):
//!   a non-blocking socket returns `EINPROGRESS`, and `SO_ERROR`, or any
//!   call, later finds the outcome; a blocking one waits. → *connected*,
//!   or on failure, as on Linux, with the error reported once: back to
//!   *pending* when `connect()` reported it; when another call did,
//!   *failed* (reads as ended, sends `EPIPE`) until a `connect()` answers
//!   `ECONNABORTED` and makes it *pending*. A *pending* socket may
//!   connect anew.
//! * UDP `socket()` → an unbound libsock `UdpSocket`; `bind()` binds it,
//!   the first `sendto()` binds it to a free port, `connect()` sets its
//!   peer.
//!
//! # IPv4 and IPv6
//!
//! `AF_INET` and `AF_INET6` sockets are made as on Linux. An `AF_INET`
//! socket takes and gives `struct sockaddr_in`. An `AF_INET6` socket
//! takes `struct sockaddr_in6` (at least 24 bytes, `SIN6_LEN_RFC2133`)
//! and gives `struct sockaddr_in6` (28 bytes) everywhere an address
//! comes back (`accept`, `recvfrom`, `getsockname`, `getpeername`). It is
//! dual-stack unless `IPV6_V6ONLY` is set before it is bound: it
//! reaches and is reached by IPv4 peers, which it reports as
//! `::ffff:a.b.c.d`. As on Linux, its UDP `connect` and `sendto` take an
//! `AF_INET` `sockaddr_in` too (`EAFNOSUPPORT`, `ENETUNREACH` with
//! `IPV6_V6ONLY`); its `bind` and TCP `connect` want `AF_INET6`
//! (`EINVAL` for a shorter address, `EAFNOSUPPORT` for another family).
//! `sin6_flowinfo` and `sin6_scope_id` are accepted and ignored, and
//! returned as 0 (no flow labels, no scoped link-local addresses).
//! libsock decides a socket's family from its first address; a socket
//! here keeps the domain `strata_socket` was given and makes its libsock
//! object of that family.
//!
//! # Errors
//!
//! Every call returns -1 and sets `errno` on failure, to the errno Linux
//! gives for the same call in the same situation (libsock reports
//! Linux's errnos; checks made here follow the order of Linux's). On
//! success `errno` is left as it was. A fd that is not open is `EBADF`,
//! an open fd that is no strata socket `ENOTSOCK`. Null pointers are
//! `EFAULT`, bad lengths `EINVAL`. When the stack named by the instance
//! is not running, `strata_socket` fails with `ENOENT` (no sockd socket)
//! or `ECONNREFUSED` (nothing listens on it). Nothing panics across the
//! boundary: every call runs under `catch_unwind` (an unexpected panic
//! would be `EIO`), and the code paths avoid panicking to begin with
//! (the release profile aborts on panic).
//!
//! # Readiness
//!
//! `poll`/`epoll`/`select` on a strata fd report it readable (`POLLIN`)
//! when anything about the socket changed: data arrived, room to send
//! appeared, a connection is waiting or completed, an error is pending,
//! the stack went away. It does not say which, and `POLLOUT` is always
//! set. So the fd is edge-like: put the socket in non-blocking mode, wait
//! for `POLLIN`, then make the calls (receive, send, accept, `SO_ERROR`
//! after a connect) until they fail with `EAGAIN`; a call that fails with
//! `EAGAIN` clears the readiness. Never read the fd yourself. An epoll
//! registration made while a TCP socket is pending follows the
//! placeholder, not the socket: register after `listen`/`connect`.
//!
//! # Not supported (yet)
//!
//! Raw sockets, socket options
//! other than those of `strata_setsockopt`, `MSG_OOB`/`MSG_TRUNC` and
//! other flags (`EOPNOTSUPP`), a `bind()` to a specific address before a
//! TCP `connect()` (`EOPNOTSUPP`), `shutdown()` of a listener's receive
//! side or of a connected UDP socket (`EOPNOTSUPP`), timeouts on
//! `accept`, `dup(2)` of strata fds, `fork(2)` with sockets open.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod errno;
mod fork;
mod gate;
mod opts;
mod sa;
mod socket;
mod table;

use std::ffi::CStr;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::{c_char, c_int, c_void, size_t, sockaddr, socklen_t, ssize_t};

use crate::errno::Res;
use crate::opts::{OptIn, OptOut};

/// Linux's cap on the bytes of one read or write (`MAX_RW_COUNT`).
const MAX_RW: usize = 0x7fff_f000;

/// Runs one call: its value, or `fail` with errno set. errno is left
/// alone on success; a panic is caught and is `EIO`.
fn call<T: Copy>(fail: T, f: impl FnOnce() -> Res<T>) -> T {
    let saved = errno::get();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => {
            errno::set(saved);
            v
        }
        Ok(Err(e)) => {
            errno::set(e);
            fail
        }
        Err(_) => {
            errno::set(libc::EIO);
            fail
        }
    }
}

/// `n` as a `ssize_t` (never more than [`MAX_RW`]).
fn ssize(n: usize) -> ssize_t {
    n.min(MAX_RW) as ssize_t
}

/// The bytes at `ptr`, `len` of them (capped as Linux caps).
///
/// # Safety
///
/// `ptr`, unless null, points to `len` readable bytes that nothing
/// writes during the call.
unsafe fn bytes_in<'a>(ptr: *const c_void, len: size_t) -> Res<&'a [u8]> {
    let len = len.min(MAX_RW);
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `ptr` is not null and points to `len` readable bytes (the
    // caller's promise); C memory counts as initialised bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// The buffer at `ptr`, `len` bytes (capped as Linux caps).
///
/// # Safety
///
/// `ptr`, unless null, points to `len` writable bytes that nothing else
/// touches during the call.
unsafe fn bytes_out<'a>(ptr: *mut c_void, len: size_t) -> Res<&'a mut [u8]> {
    let len = len.min(MAX_RW);
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `ptr` is not null and points to `len` writable bytes that
    // only this call uses (the caller's promise); C memory counts as
    // initialised bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) })
}

/// Linux's answer to a send on a broken connection: SIGPIPE to the
/// thread, unless `MSG_NOSIGNAL`.
fn sigpipe(r: Res<usize>, flags: c_int) -> Res<usize> {
    if r == Err(libc::EPIPE) && flags & libc::MSG_NOSIGNAL == 0 {
        // SAFETY: raise takes a signal number; what SIGPIPE does is the
        // application's choice, as with the kernel's.
        unsafe { libc::raise(libc::SIGPIPE) };
    }
    r
}

/// Creates a socket, like `socket(2)`: `AF_INET` or `AF_INET6` with
/// `SOCK_STREAM` (protocol 0 or `IPPROTO_TCP`) or `SOCK_DGRAM` (0 or
/// `IPPROTO_UDP`); `type` may carry `SOCK_NONBLOCK` and `SOCK_CLOEXEC`.
/// An `AF_INET6` socket takes and gives `struct sockaddr_in6` and is
/// dual-stack unless `IPV6_V6ONLY` is set (IPv4 peers show as
/// `::ffff:a.b.c.d`; `sin6_flowinfo` and `sin6_scope_id` are ignored
/// and returned as 0). TCP over IPv6 needs a stack whose TCP takes
/// IPv6; on one that does not, `listen` and `connect` fail with
/// `EAFNOSUPPORT`. Returns the new socket's fd, a real fd of the
/// process (pollable, see the readiness contract above), or -1 with
/// errno: `EAFNOSUPPORT` for any other family, `EPROTONOSUPPORT` for
/// another protocol, `ESOCKTNOSUPPORT` for another type, `EINVAL` for
/// unknown flags; `ENOENT` or `ECONNREFUSED` when the stack is not
/// running.
///
/// The socket is made on the instance named by `strata_set_instance`,
/// else by the environment variable `STRATA_INSTANCE`, else "default".
#[no_mangle]
pub extern "C" fn strata_socket(domain: c_int, r#type: c_int, protocol: c_int) -> c_int {
    call(-1, || socket::open(domain, r#type, protocol))
}

/// Binds a socket to a local address, like `bind(2)`: `addr` is a
/// `struct sockaddr_in` of `len` bytes (`AF_INET`; `AF_UNSPEC` with
/// `INADDR_ANY` too, as Linux allows) on an `AF_INET` socket. On an
/// `AF_INET6` socket it is a `struct sockaddr_in6` of at least 24 bytes
/// (shorter: `EINVAL`) with `AF_INET6` (another family, `AF_INET`
/// included: `EAFNOSUPPORT`); `::` takes IPv4 too unless `IPV6_V6ONLY`,
/// `::ffff:a.b.c.d` binds an IPv4 address (`EINVAL` with
/// `IPV6_V6ONLY`), a multicast address is `EINVAL` for TCP. Port 0
/// picks a free port.
///
/// UDP binds at once (`EADDRINUSE` when the port is taken, `EINVAL` when
/// the socket is bound already). TCP keeps the address for `listen`,
/// which takes the port (and fails with `EADDRINUSE` if it cannot);
/// `EINVAL` if bound already.
///
/// # Safety
///
/// `addr`, unless null, points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn strata_bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    call(-1, || {
        let s = table::get(fd)?;
        // SAFETY: `addr` has `len` readable bytes (the caller's promise).
        let given = unsafe { sa::read(addr, len) }?;
        if s.v6 {
            // Linux's inet6_bind_sk: EINVAL under SIN6_LEN_RFC2133 bytes
            // (a 16-byte sockaddr_in so), then __inet6_bind:
            // EAFNOSUPPORT for any family but AF_INET6 (AF_INET and
            // AF_UNSPEC too; IPv4 is bound as ::ffff:a.b.c.d).
            return s.bind(SocketAddr::V6(given.inet6()?)).map(|()| 0);
        }
        // Linux's inet_bind: EINVAL under a sockaddr_in, then
        // EAFNOSUPPORT for another family, but AF_UNSPEC with INADDR_ANY.
        let a = given.v4.ok_or(libc::EINVAL)?;
        let any_unspec = given.family == libc::AF_UNSPEC && a.ip().is_unspecified();
        if given.family != libc::AF_INET && !any_unspec {
            return Err(libc::EAFNOSUPPORT);
        }
        s.bind(SocketAddr::V4(a)).map(|()| 0)
    })
}

/// Makes a TCP socket listen, like `listen(2)`, with the address `bind`
/// gave (else any address, a free port) and the options set so far.
/// `backlog` is capped at 4096 (negative: 4096), as Linux caps it. Again
/// on a listening socket: 0, the backlog unchanged. `EOPNOTSUPP` on UDP,
/// `EINVAL` on a connected socket.
#[no_mangle]
pub extern "C" fn strata_listen(fd: c_int, backlog: c_int) -> c_int {
    call(-1, || table::get(fd)?.listen(backlog).map(|()| 0))
}

/// Accepts a connection, like `accept(2)`: `strata_accept4` with no
/// flags.
///
/// # Safety
///
/// As `strata_accept4`.
#[no_mangle]
pub unsafe extern "C" fn strata_accept(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe { strata_accept4(fd, addr, len, 0) }
}

/// Accepts a connection, like `accept4(2)`: waits for one (non-blocking
/// socket: `EAGAIN` when none waits) and returns its new socket's fd,
/// with `SOCK_NONBLOCK` and `SOCK_CLOEXEC` from `flags` (other flags:
/// `EINVAL`). Like Linux's, the new socket takes the listener's
/// `SO_KEEPALIVE`, `TCP_NODELAY`, timeouts and buffer sizes, not its
/// `O_NONBLOCK`. If `addr` is not null the peer's address is written
/// there as `getpeername` writes it. `EINVAL` if the socket does not
/// listen, `EOPNOTSUPP` on UDP.
///
/// # Safety
///
/// `addr`, unless null, points to `*len` writable bytes, and then `len`
/// to a readable and writable `socklen_t`.
#[no_mangle]
pub unsafe extern "C" fn strata_accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    call(-1, || {
        let s = table::get(fd)?;
        if !addr.is_null() {
            // Checked before a connection is taken, not after.
            // SAFETY: `len` is readable (the caller's promise).
            unsafe { sa::check_out(addr, len, true) }?;
        }
        let (nfd, peer) = s.accept(flags)?;
        if !addr.is_null() {
            // SAFETY: `addr` has `*len` writable bytes, `len` is
            // writable (the caller's promise).
            unsafe { sa::write(Some(peer), addr, len) }?;
        }
        Ok(nfd)
    })
}

/// Connects a socket, like `connect(2)`: `addr` is a `struct
/// sockaddr_in` of `len` bytes, on an `AF_INET6` socket a `struct
/// sockaddr_in6` (at least 24 bytes, else `EINVAL`; an IPv4 peer as
/// `::ffff:a.b.c.d`, `ENETUNREACH` with `IPV6_V6ONLY`). As on Linux, a
/// UDP `AF_INET6` socket takes an `AF_INET` `sockaddr_in` too (as its
/// mapped address; `EAFNOSUPPORT` with `IPV6_V6ONLY`), a TCP one does
/// not (`EINVAL` for its 16 bytes, `EAFNOSUPPORT` for a longer one).
///
/// TCP: a blocking socket waits for the handshake (0, or
/// `ECONNREFUSED`, `ETIMEDOUT`, `ENETUNREACH`...). A non-blocking one
/// returns -1 with `EINPROGRESS` at once; its fd turns readable when the
/// handshake ends, and `strata_getsockopt(SO_ERROR)` then says how (0:
/// connected). Called again meanwhile: `EALREADY`, or 0 once connected;
/// later `EISCONN`. After a failure the socket is unconnected again and
/// may connect anew. A TCP socket bound to a specific address first is
/// `EOPNOTSUPP` (libsock connects from the address the stack picks);
/// `AF_UNSPEC` (disconnect) is not supported on TCP (`EAFNOSUPPORT`).
///
/// UDP: sets the peer for `strata_send`/`strata_recv`; `AF_UNSPEC`
/// dissolves the association.
///
/// # Safety
///
/// `addr`, unless null, points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn strata_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    call(-1, || {
        let s = table::get(fd)?;
        // SAFETY: `addr` has `len` readable bytes (the caller's promise).
        let given = unsafe { sa::read(addr, len) }?;
        if s.udp {
            // Linux's inet_dgram_connect: AF_UNSPEC disconnects, on
            // either family.
            if given.family == libc::AF_UNSPEC {
                return s.connect_udp(None).map(|()| 0);
            }
            let to = if s.v6 {
                // udpv6_pre_connect/__ip6_datagram_connect: an AF_INET
                // address is taken on a dual-stack socket (see
                // `Given::udp6_peer`).
                given.udp6_peer(s.only_v6())?
            } else {
                SocketAddr::V4(given.inet(false)?)
            };
            return s.connect_udp(Some(to)).map(|()| 0);
        }
        let to = if s.v6 {
            // tcp_v6_connect: EINVAL under SIN6_LEN_RFC2133 bytes, then
            // EAFNOSUPPORT for any family but AF_INET6 (unlike UDP, an
            // AF_INET address is refused: give ::ffff:a.b.c.d).
            SocketAddr::V6(given.inet6()?)
        } else {
            SocketAddr::V4(given.inet(false)?)
        };
        s.connect_tcp(to).map(|()| 0)
    })
}

/// Sends, like `send(2)`: `strata_sendto` without an address.
///
/// # Safety
///
/// As `strata_sendto`.
#[no_mangle]
pub unsafe extern "C" fn strata_send(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: forwarded from the caller.
    unsafe { strata_sendto(fd, buf, len, flags, std::ptr::null(), 0) }
}

/// Sends, like `sendto(2)`. TCP: queues bytes of `buf` (a blocking
/// socket waits until all `len` are queued, as Linux does; a
/// non-blocking one queues what fits, `EAGAIN` if nothing does); the
/// address is ignored. On an unconnected socket `EPIPE`, while a
/// non-blocking one connects `EAGAIN`. UDP: sends one datagram to `addr`
/// (a `struct sockaddr_in` of `addrlen` bytes), or with a null `addr` to
/// the connected peer (`EDESTADDRREQ` if none); `EMSGSIZE` over 65507
/// bytes. On an `AF_INET6` socket `addr` is a `struct sockaddr_in6` (at
/// least 24 bytes, else `EINVAL`) or, as on Linux, an `AF_INET`
/// `sockaddr_in` (sent over IPv4); with `IPV6_V6ONLY` IPv4 destinations
/// are `ENETUNREACH`. `AF_UNSPEC` there means no address (the connected
/// peer), another family `EINVAL`, as Linux's `udpv6_sendmsg` says.
///
/// Flags: `MSG_DONTWAIT` (see below), `MSG_NOSIGNAL`, and `MSG_MORE`
/// (TCP; sent at once) or `MSG_CONFIRM` (UDP; a hint); others are
/// `EOPNOTSUPP`. `EPIPE` raises `SIGPIPE` in the calling thread unless
/// `MSG_NOSIGNAL`, as Linux does.
///
/// `MSG_DONTWAIT` on a blocking socket: libsock's mode is per socket, so
/// the call switches it for itself; while another thread is inside a
/// blocking call on the same socket that cannot be done safely, and the
/// call fails with `EAGAIN`.
///
/// # Safety
///
/// `buf`, unless null, points to `len` readable bytes; `addr`, unless
/// null, to `addrlen` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn strata_sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    call(-1, || {
        let s = table::get(fd)?;
        // SAFETY: `buf` has `len` readable bytes (the caller's promise).
        let data = unsafe { bytes_in(buf, len) }?;
        let to = if addr.is_null() {
            None
        } else if s.udp {
            // SAFETY: `addr` has `addrlen` readable bytes (the caller's
            // promise).
            let given = unsafe { sa::read(addr, addrlen) }?;
            if s.v6 {
                // udpv6_sendmsg's rules (see `Given::udp6_dest`).
                given.udp6_dest(s.only_v6())?
            } else {
                // udp_sendmsg takes AF_UNSPEC for AF_INET here.
                Some(SocketAddr::V4(given.inet(true)?))
            }
        } else {
            // TCP ignores the address; Linux only checks its length.
            sa::check_len(addrlen)?;
            None
        };
        sigpipe(s.send(data, flags, to), flags).map(ssize)
    })
}

/// Receives, like `recv(2)`: `strata_recvfrom` without an address.
///
/// # Safety
///
/// As `strata_recvfrom`.
#[no_mangle]
pub unsafe extern "C" fn strata_recv(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: forwarded from the caller.
    unsafe {
        strata_recvfrom(
            fd,
            buf,
            len,
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

/// Receives, like `recvfrom(2)`. TCP: up to `len` bytes (0 at the end of
/// the stream); waits while there are none (non-blocking: `EAGAIN`;
/// `SO_RCVTIMEO` elapsed: `EAGAIN`); `ENOTCONN` when not connected. UDP:
/// one datagram, cut to `len` (the rest is lost, as on Linux), and its
/// sender. If `addr` is not null the sender's address is written there
/// (TCP: none, `*addrlen` = 0): a `struct sockaddr_in`, or on an
/// `AF_INET6` socket a `struct sockaddr_in6` (an IPv4 sender as
/// `::ffff:a.b.c.d`), cut to `*addrlen` bytes as `strata_getsockname`
/// cuts it.
///
/// Flags: `MSG_DONTWAIT` (as for `strata_sendto`), `MSG_PEEK` (leave the
/// data queued), `MSG_WAITALL` (TCP, blocking: wait for `len` bytes, the
/// end, or an error), `MSG_NOSIGNAL` and `MSG_CMSG_CLOEXEC` (no effect);
/// others are `EOPNOTSUPP`.
///
/// # Safety
///
/// `buf`, unless null, points to `len` writable bytes; `addr`, unless
/// null, to `*addrlen` writable bytes, and then `addrlen` to a readable
/// and writable `socklen_t`.
#[no_mangle]
pub unsafe extern "C" fn strata_recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    call(-1, || {
        let s = table::get(fd)?;
        // SAFETY: `buf` has `len` writable bytes (the caller's promise).
        let data = unsafe { bytes_out(buf, len) }?;
        if !addr.is_null() {
            // SAFETY: `addrlen` is readable (the caller's promise).
            unsafe { sa::check_out(addr, addrlen, true) }?;
        }
        let (n, from) = s.recv(data, flags)?;
        if !addr.is_null() {
            // SAFETY: `addr` has `*addrlen` writable bytes, `addrlen` is
            // writable (the caller's promise).
            unsafe { sa::write(from, addr, addrlen) }?;
        }
        Ok(ssize(n))
    })
}

/// Reads, like `read(2)` on a socket: `strata_recv` with no flags.
///
/// # Safety
///
/// `buf`, unless null, points to `count` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn strata_read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // SAFETY: forwarded from the caller.
    unsafe {
        strata_recvfrom(
            fd,
            buf,
            count,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

/// Writes, like `write(2)` on a socket: `strata_send` with no flags
/// (so `EPIPE` raises `SIGPIPE`).
///
/// # Safety
///
/// `buf`, unless null, points to `count` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn strata_write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    // SAFETY: forwarded from the caller.
    unsafe { strata_sendto(fd, buf, count, 0, std::ptr::null(), 0) }
}

/// Shuts down part of a connection, like `shutdown(2)`: `SHUT_RD`,
/// `SHUT_WR` (a FIN after what is queued) or `SHUT_RDWR`; another `how`
/// is `EINVAL`. `ENOTCONN` on a socket not connected. On a listener
/// `SHUT_WR` does nothing (as on Linux) and the others are
/// `EOPNOTSUPP`, as on a connected UDP socket (libsock cannot do them).
#[no_mangle]
pub extern "C" fn strata_shutdown(fd: c_int, how: c_int) -> c_int {
    call(-1, || table::get(fd)?.shutdown(how).map(|()| 0))
}

/// Closes a strata socket, like `close(2)`: the fd is closed and the
/// socket with it (a TCP connection ends with a FIN after what is
/// queued). A call another thread is blocked in keeps the socket until
/// it returns, as on Linux. `EBADF`/`ENOTSOCK` for a fd that is not a
/// strata socket (which is then left alone).
#[no_mangle]
pub extern "C" fn strata_close(fd: c_int) -> c_int {
    call(-1, || socket::close(fd).map(|()| 0))
}

/// The socket's local address, like `getsockname(2)`: written to `addr`
/// cut to `*len` bytes, with `*len` set to its full size (`struct
/// sockaddr_in`, 16 bytes; on an `AF_INET6` socket `struct
/// sockaddr_in6`, 28 bytes, with `sin6_flowinfo` and `sin6_scope_id`
/// 0). `0.0.0.0:0` (`[::]:0`) while unbound; a TCP socket's `bind()`
/// address before it listens.
///
/// # Safety
///
/// `addr` points to `*len` writable bytes and `len` to a readable and
/// writable `socklen_t` (null pointers are `EFAULT`).
#[no_mangle]
pub unsafe extern "C" fn strata_getsockname(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> c_int {
    call(-1, || {
        let s = table::get(fd)?;
        // SAFETY: `len` is readable (the caller's promise).
        unsafe { sa::check_out(addr, len, true) }?;
        let a = s.local_addr()?;
        // SAFETY: as promised by the caller.
        unsafe { sa::write(Some(a), addr, len) }.map(|()| 0)
    })
}

/// The peer's address, like `getpeername(2)` (written as by
/// `strata_getsockname`); `ENOTCONN` when not connected.
///
/// # Safety
///
/// As `strata_getsockname`.
#[no_mangle]
pub unsafe extern "C" fn strata_getpeername(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> c_int {
    call(-1, || {
        let s = table::get(fd)?;
        // SAFETY: `len` is readable (the caller's promise).
        unsafe { sa::check_out(addr, len, true) }?;
        let a = s.peer_addr()?;
        // SAFETY: as promised by the caller.
        unsafe { sa::write(Some(a), addr, len) }.map(|()| 0)
    })
}

/// Sets an option, like `setsockopt(2)`. Values are `int`s (0 off, else
/// on) unless said otherwise; a shorter `len` is `EINVAL`, a null `val`
/// `EFAULT`. Options:
///
/// * `SOL_SOCKET`/`SO_REUSEADDR`: takes effect at the bind (TCP: at
///   `listen`); on Linux too it matters only then.
/// * `SOL_SOCKET`/`SO_REUSEPORT`: the same; sockets of one user that
///   all set it share an address and port, and the stack spreads the
///   peers over them (by address and port), as Linux does.
/// * `SOL_SOCKET`/`SO_KEEPALIVE`: TCP keepalive probes (Linux's timing).
///   Kept for a TCP socket not yet connected, and passed by a listener
///   to the connections it accepts; on UDP it has no effect, as on Linux.
/// * `SOL_SOCKET`/`SO_RCVBUF`, `SO_SNDBUF`: the sizes of the socket's
///   receive and send rings (rounded up to a power of two, 4 KiB to 64
///   MiB). Rings are made with the socket and never resized: they take
///   effect on a TCP socket before `listen`/`connect` (a listener's go
///   to the connections it accepts); on any other socket the call
///   succeeds and changes nothing, as Linux succeeds when it keeps a
///   size within its limits. `strata_getsockopt` reports the size in
///   effect.
/// * `SOL_SOCKET`/`SO_RCVTIMEO`, `SO_SNDTIMEO` (a `struct timeval`; zero:
///   none): how long a receive or send may block (then `EAGAIN`);
///   `EDOM` for microseconds out of range. A listener passes them to the
///   connections it accepts; its own `accept` does not time out.
/// * `IPPROTO_TCP`/`TCP_NODELAY`: no Nagle delay. Kept until connected,
///   passed to accepted connections.
/// * `IPPROTO_TCP`/`TCP_CONGESTION`: `"cubic"` (the default) or `"reno"`;
///   other names are `ENOENT`, as Linux says of an algorithm it has not
///   loaded.
/// * `IPPROTO_TCP`/`TCP_KEEPIDLE`, `TCP_KEEPINTVL` (seconds, 1 to
///   32767) and `TCP_KEEPCNT` (1 to 127): this connection's keep-alive
///   timing; unset, the stack's (Linux's: 7200, 75, 9).
/// * `SOL_SOCKET`/`SO_LINGER` (a `struct linger`): on with a zero time,
///   closing resets the connection (RST) and drops what was not sent;
///   with another time, or off, closing is graceful, and never waits.
///   These four are kept until connected and passed to accepted
///   connections.
/// * `IPPROTO_IPV6`/`IPV6_V6ONLY` (`AF_INET6` sockets): on, the socket
///   takes IPv6 only (a bind to `::` leaves IPv4's port to another
///   socket; IPv4 peers are refused); off (the default, as Linux's
///   `net.ipv6.bindv6only = 0`), dual-stack. Only before the socket is
///   bound, as on Linux: `EINVAL` after `bind` (TCP too, whose port
///   Linux takes at `bind`), `listen`, `connect` or a UDP send. A null
///   `val` is 0, as Linux reads it. Accepted connections keep their
///   listener's.
///
/// Any other option, and `SO_ERROR`/`SO_TYPE` (read-only), are
/// `ENOPROTOOPT`: among them the other `IPPROTO_IPV6` options
/// (`IPV6_TCLASS`, `IPV6_RECVPKTINFO`, hop limits, multicast), which
/// strata does not have, as it has not their IPv4 counterparts
/// (`IP_TOS`, ...). On an `AF_INET` socket every `IPPROTO_IPV6` option
/// is `ENOPROTOOPT`, as Linux says.
///
/// # Safety
///
/// `val`, unless null, points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn strata_setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    call(-1, || {
        let s = table::get(fd)?;
        // SAFETY: `val` has `len` readable bytes (the caller's promise).
        let v = unsafe { OptIn::new(val, len) };
        opts::set(&s, level, name, &v).map(|()| 0)
    })
}

/// Reads an option, like `getsockopt(2)`: the value is written to `val`
/// cut to `*len` bytes, and `*len` set to the bytes written (Linux's
/// rule for options). The options of `strata_setsockopt`, and:
///
/// * `SOL_SOCKET`/`SO_ERROR`: the pending error, taken (0: none). After
///   a non-blocking `connect`: 0 while the handshake goes on, then its
///   outcome (0: connected), reported once.
/// * `SOL_SOCKET`/`SO_TYPE`, `SO_DOMAIN` (`AF_INET` or `AF_INET6`),
///   `SO_PROTOCOL`, `SO_ACCEPTCONN`.
///
/// Others are `ENOPROTOOPT`, except at a level the socket has not,
/// which Linux answers with `EOPNOTSUPP` on an `AF_INET` socket
/// (`IPPROTO_IPV6` included) and `ENOPROTOOPT` on an `AF_INET6` one. A
/// null `len` is `EFAULT`, a negative one `EINVAL`.
///
/// # Safety
///
/// `len`, unless null, points to a readable and writable `socklen_t`,
/// and `val`, unless null, to `*len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn strata_getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    call(-1, || {
        let s = table::get(fd)?;
        // SAFETY: as promised by the caller.
        let out = unsafe { OptOut::new(val, len) };
        opts::get(&s, level, name, &out).map(|()| 0)
    })
}

/// File control, like `fcntl(2)`, for the commands sockets need:
/// `F_GETFL` (`O_RDWR`, with `O_NONBLOCK` in non-blocking mode),
/// `F_SETFL` (`O_NONBLOCK` of `arg` sets the mode; other status flags
/// are ignored, as Linux ignores those it cannot change, except
/// `O_ASYNC`, which is `EINVAL`: strata sends no `SIGIO`), `F_GETFD` and
/// `F_SETFD` (close-on-exec, of the fd itself). Other commands are
/// `EINVAL`.
#[no_mangle]
pub extern "C" fn strata_fcntl(fd: c_int, cmd: c_int, arg: c_int) -> c_int {
    call(-1, || {
        let s = table::get(fd)?;
        match cmd {
            libc::F_GETFL => Ok(libc::O_RDWR
                | if s.gate.nonblocking() {
                    libc::O_NONBLOCK
                } else {
                    0
                }),
            libc::F_SETFL => {
                if arg & libc::O_ASYNC != 0 {
                    return Err(libc::EINVAL);
                }
                s.set_nonblocking(arg & libc::O_NONBLOCK != 0);
                Ok(0)
            }
            libc::F_GETFD | libc::F_SETFD => {
                // SAFETY: F_GETFD/F_SETFD take an int; `fd` is the
                // socket's own number.
                let r = unsafe { libc::fcntl(fd, cmd, arg) };
                if r < 0 {
                    Err(errno::last())
                } else {
                    Ok(r)
                }
            }
            _ => Err(libc::EINVAL),
        }
    })
}

/// 1 if `fd` is a strata socket (made by `strata_socket` or
/// `strata_accept` and not closed), else 0. Never fails.
#[no_mangle]
pub extern "C" fn strata_is_socket(fd: c_int) -> c_int {
    table::is_socket(fd) as c_int
}

/// What `poll(2)` would report for strata socket `fd` now: `POLLIN`
/// (data, the end of the stream, a pending error, a connection that may
/// wait), `POLLOUT` (connected with room to send), `POLLERR`, `POLLHUP`,
/// `POLLRDHUP`, computed from the socket's shared memory, without
/// waiting; or -1 with errno `EBADF`/`ENOTSOCK`. Unlike polling the fd
/// itself (which says only "something changed"), this says what.
#[no_mangle]
pub extern "C" fn strata_poll_events(fd: c_int) -> c_int {
    call(-1, || Ok(c_int::from(table::get(fd)?.poll_events(false))))
}

/// What an `LD_PRELOAD` shim over these calls needs beside them (the
/// `strata-preload` crate): the lock-free fd check, readiness, dups of
/// sockets, and fork.
pub mod shim {
    use std::os::fd::RawFd;

    use libc::c_int;

    use crate::{socket, table};

    /// Whether `fd` is a strata socket: one atomic load (a bitmap by fd
    /// number), no lock, no allocation.
    #[inline]
    pub fn is_socket(fd: RawFd) -> bool {
        table::is_socket(fd)
    }

    /// The `poll(2)` bits of strata socket `fd` now (see
    /// [`strata_poll_events`](crate::strata_poll_events)); `POLLNVAL` if
    /// it is none. With `drain`, the kicks waiting on its readiness fd
    /// are taken first (not a listener's), so that a caller that then
    /// waits for the fd to turn readable wakes on the next change only.
    pub fn poll_events(fd: RawFd, drain: bool) -> i16 {
        match table::get(fd) {
            Ok(s) => s.poll_events(drain),
            Err(_) => libc::POLLNVAL,
        }
    }

    /// Whether strata socket `fd` listens (its readiness fd then only
    /// says "a connection may wait", and is cleared by an `accept` that
    /// finds none).
    pub fn is_listener(fd: RawFd) -> bool {
        table::get(fd).is_ok_and(|s| matches!(s.state(), socket::State::Listening(_)))
    }

    /// Bytes a read of strata socket `fd` would return (`FIONREAD`), or
    /// the errno.
    pub fn nread(fd: RawFd) -> Result<usize, c_int> {
        table::get(fd)?.nread()
    }

    /// Makes another number for strata socket `fd`: `make` (`dup`,
    /// `dup3`, `fcntl(F_DUPFD)` of libc on `fd`) makes it, and it then
    /// names the same socket; the socket ends with its last number.
    pub fn dup(fd: RawFd, make: impl FnOnce() -> Result<RawFd, c_int>) -> Result<RawFd, c_int> {
        socket::dup(fd, make)
    }

    /// Takes number `fd` out of the table without closing it (another
    /// file is about to replace it, by `dup2`); the socket ends if it was
    /// its last number.
    pub fn release_number(fd: RawFd) -> Result<(), c_int> {
        socket::release(fd, false)
    }

    /// Before `fork(2)`: the child will hold every socket too. A socket
    /// is closed at sockd only when the last process holding it closes
    /// it; sockd requests of parent and child are serialised.
    pub fn before_fork() {
        crate::fork::prepare();
    }

    /// Before `execve(2)`: lets go of the close-on-exec sockets that a
    /// fork shares (see [`before_fork`]), which the exec closes.
    pub fn before_exec() {
        crate::fork::before_exec();
    }
}

/// Names the strata instance (stack) that sockets made from now on use,
/// instead of `STRATA_INSTANCE` (or "default"). Sockets made before
/// stay on theirs. 0, or -1 with `EINVAL` for a null, empty or non-UTF-8
/// name or one with a `/`.
///
/// # Safety
///
/// `name`, unless null, points to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn strata_set_instance(name: *const c_char) -> c_int {
    call(-1, || {
        if name.is_null() {
            return Err(libc::EINVAL);
        }
        // SAFETY: `name` is a NUL-terminated string (the caller's
        // promise), read only during the call.
        let name = unsafe { CStr::from_ptr(name) };
        let name = name.to_str().map_err(|_| libc::EINVAL)?;
        socket::set_instance(name).map(|()| 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_on_fds_that_are_no_strata_sockets_fail_like_linux() {
        let e = |r: c_int| (r, errno::get());
        assert_eq!(e(strata_listen(-1, 1)), (-1, libc::EBADF));
        // stdin is open but is no strata socket.
        assert_eq!(e(strata_listen(0, 1)), (-1, libc::ENOTSOCK));
        assert_eq!(e(strata_close(0)), (-1, libc::ENOTSOCK));
        assert_eq!(strata_is_socket(0), 0);
        assert_eq!(strata_is_socket(-5), 0);
    }

    #[test]
    fn errno_is_left_alone_on_success() {
        errno::set(libc::EINTR);
        assert_eq!(strata_is_socket(0), 0);
        assert_eq!(errno::get(), libc::EINTR);
    }

    #[test]
    fn null_instance_names_are_refused() {
        // SAFETY: a null name is refused before it is read.
        assert_eq!(unsafe { strata_set_instance(std::ptr::null()) }, -1);
        assert_eq!(errno::get(), libc::EINVAL);
    }
}
