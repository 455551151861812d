//! Vectored and message calls, and `sendfile`, on strata sockets: capi
//! has the flat calls, so iovecs are gathered into (or scattered from)
//! one buffer.

use libc::{c_int, c_void, iovec, msghdr, off_t, size_t, sockaddr, socklen_t, ssize_t};

use crate::{errno, inside, real, set_errno};

/// Linux's cap on the bytes of one call (`MAX_RW_COUNT`).
const MAX_RW: usize = 0x7fff_f000;
/// Linux's cap on iovecs per call (`UIO_MAXIOV`).
const IOV_MAX: c_int = 1024;
/// Bytes `sendfile` moves per round.
const SENDFILE_CHUNK: usize = 1 << 20;

/// The iovecs, checked as Linux checks them.
///
/// # Safety
///
/// `iov`, unless null, points to `cnt` iovecs.
unsafe fn iovecs<'a>(iov: *const iovec, cnt: c_int) -> Result<&'a [iovec], c_int> {
    if !(0..=IOV_MAX).contains(&cnt) {
        return Err(libc::EINVAL);
    }
    if cnt == 0 {
        return Ok(&[]);
    }
    if iov.is_null() {
        return Err(libc::EFAULT);
    }
    // SAFETY: `iov` points to `cnt` iovecs (the caller's promise).
    let v = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
    if v.iter().any(|i| i.iov_len > isize::MAX as usize) {
        return Err(libc::EINVAL);
    }
    Ok(v)
}

fn fail(e: c_int) -> ssize_t {
    set_errno(e);
    -1
}

/// `readv`/`recvmsg` of a strata socket, with `MSG_TRUNC` as Linux has
/// it for UDP (the datagram's full length is returned; capi has no such
/// flag): the datagram is peeked at, measured, then taken. The second
/// value says whether the datagram was cut.
///
/// # Safety
///
/// As [`readv`].
pub(crate) unsafe fn readv_trunc(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> (ssize_t, bool) {
    let room = || {
        // SAFETY: the caller's promise.
        unsafe { iovecs(iov, cnt) }.map_or(0, |v| v.iter().map(|i| i.iov_len).sum::<usize>())
    };
    if flags & libc::MSG_TRUNC == 0 {
        // SAFETY: the caller's promise.
        return (unsafe { readv(fd, iov, cnt, flags, addr, alen) }, false);
    }
    let f = flags & !libc::MSG_TRUNC;
    // SAFETY: the caller's promise.
    let n = unsafe { readv(fd, iov, cnt, f | libc::MSG_PEEK, addr, alen) };
    if n < 0 {
        return (n, false);
    }
    let full = match strata::shim::nread(fd) {
        Ok(k) if k > n as usize => k,
        _ => n as usize,
    };
    if f & libc::MSG_PEEK == 0 {
        // SAFETY: the caller's promise.
        let m = unsafe { readv(fd, iov, cnt, f, addr, alen) };
        if m < 0 {
            return (m, false);
        }
    }
    (full.min(MAX_RW) as ssize_t, full > room())
}

/// `readv`/`recvmsg` of a strata socket: one receive, scattered.
///
/// # Safety
///
/// `iov` points to `cnt` iovecs of writable memory; `addr`/`alen` as for
/// `recvfrom`.
pub(crate) unsafe fn readv(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    // SAFETY: the caller's promise.
    let v = match unsafe { iovecs(iov, cnt) } {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let total = v.iter().map(|i| i.iov_len).sum::<usize>().min(MAX_RW);
    if let [one] = v {
        // SAFETY: one writable buffer (the caller's promise).
        return unsafe { strata::strata_recvfrom(fd, one.iov_base, total, flags, addr, alen) };
    }
    let mut buf = vec![0u8; total];
    // SAFETY: `buf` is `total` writable bytes; `addr`/`alen` the caller's.
    let n =
        unsafe { strata::strata_recvfrom(fd, buf.as_mut_ptr().cast(), total, flags, addr, alen) };
    if n <= 0 {
        return n;
    }
    let mut left = &buf[..n as usize];
    for i in v {
        if left.is_empty() {
            break;
        }
        let k = i.iov_len.min(left.len());
        // SAFETY: `iov_base` has `iov_len` writable bytes (the caller's
        // promise), and `k` is no more; `buf` is ours.
        unsafe { std::ptr::copy_nonoverlapping(left.as_ptr(), i.iov_base.cast(), k) };
        left = &left[k..];
    }
    n
}

/// `writev`/`sendmsg` of a strata socket: gathered, one send.
///
/// # Safety
///
/// `iov` points to `cnt` iovecs of readable memory; `addr` as for
/// `sendto`.
pub(crate) unsafe fn writev(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    // SAFETY: the caller's promise.
    let v = match unsafe { iovecs(iov, cnt) } {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if let [one] = v {
        // SAFETY: one readable buffer (the caller's promise).
        return unsafe { strata::strata_sendto(fd, one.iov_base, one.iov_len, flags, addr, alen) };
    }
    let total = v.iter().map(|i| i.iov_len).sum::<usize>().min(MAX_RW);
    let mut buf = Vec::with_capacity(total);
    for i in v {
        let k = i.iov_len.min(total - buf.len());
        if k == 0 {
            continue;
        }
        if i.iov_base.is_null() {
            return fail(libc::EFAULT);
        }
        // SAFETY: `iov_base` has `iov_len` readable bytes (the caller's
        // promise), `k` is no more.
        buf.extend_from_slice(unsafe { std::slice::from_raw_parts(i.iov_base.cast::<u8>(), k) });
    }
    // SAFETY: `buf` is ours; `addr` the caller's.
    unsafe { strata::strata_sendto(fd, buf.as_ptr().cast(), buf.len(), flags, addr, alen) }
}

/// `recvmsg(2)` of a strata socket (no ancillary data comes back).
///
/// # Safety
///
/// `msg` points to a valid `msghdr`, as for libc's.
pub(crate) unsafe fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if msg.is_null() {
        return fail(libc::EFAULT);
    }
    // SAFETY: `msg` is a valid msghdr (the caller's promise).
    let m = unsafe { &mut *msg };
    let (addr, alen) = if m.msg_name.is_null() {
        (std::ptr::null_mut(), std::ptr::null_mut())
    } else {
        (
            m.msg_name.cast::<sockaddr>(),
            &mut m.msg_namelen as *mut socklen_t,
        )
    };
    // SAFETY: the msghdr's iovecs and name (the caller's promise).
    let (n, cut) = unsafe { readv_trunc(fd, m.msg_iov, m.msg_iovlen as c_int, flags, addr, alen) };
    if n >= 0 {
        m.msg_controllen = 0;
        m.msg_flags = if cut { libc::MSG_TRUNC } else { 0 };
    }
    n
}

/// `sendmsg(2)` of a strata socket (ancillary data: `EOPNOTSUPP`).
///
/// # Safety
///
/// `msg` points to a valid `msghdr`, as for libc's.
pub(crate) unsafe fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if msg.is_null() {
        return fail(libc::EFAULT);
    }
    // SAFETY: `msg` is a valid msghdr (the caller's promise).
    let m = unsafe { &*msg };
    if m.msg_controllen != 0 && !m.msg_control.is_null() {
        return fail(libc::EOPNOTSUPP);
    }
    // SAFETY: the msghdr's iovecs and name (the caller's promise).
    unsafe {
        writev(
            fd,
            m.msg_iov,
            m.msg_iovlen as c_int,
            flags,
            m.msg_name.cast::<sockaddr>(),
            m.msg_namelen,
        )
    }
}

/// `sendfile(2)` to a strata socket: read from the file, sent; the
/// file's offset (or `*off`) moves by what was sent. From a strata
/// socket: `EINVAL`, as Linux says for an input that is no file.
///
/// # Safety
///
/// `off`, unless null, points to a readable and writable `off_t`.
pub(crate) unsafe fn sendfile(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t {
    if crate::ours(inp) {
        return fail(libc::EINVAL);
    }
    let chunk = n.min(SENDFILE_CHUNK).min(MAX_RW);
    let mut buf = vec![0u8; chunk];
    let mut pos = if off.is_null() {
        None
    } else {
        // SAFETY: the caller's promise.
        Some(unsafe { *off })
    };
    let mut sent: usize = 0;
    while sent < n {
        let want = (n - sent).min(chunk);
        // SAFETY: `buf` has `chunk` >= `want` writable bytes.
        let got = unsafe {
            match pos {
                Some(p) => real::pread(inp, buf.as_mut_ptr().cast::<c_void>(), want, p),
                None => real::read(inp, buf.as_mut_ptr().cast::<c_void>(), want),
            }
        };
        if got < 0 {
            if sent > 0 {
                break;
            }
            return -1;
        }
        if got == 0 {
            break;
        }
        let got = got as usize;
        // SAFETY: `buf` has `got` readable bytes.
        let w = inside(|| unsafe { strata::strata_send(out, buf.as_ptr().cast(), got, 0) });
        if w < 0 {
            let e = errno();
            if pos.is_none() {
                // Give the unsent bytes back to the file.
                // SAFETY: lseek takes an fd and an offset.
                unsafe { libc::lseek(inp, -(got as off_t), libc::SEEK_CUR) };
            }
            if sent > 0 {
                break;
            }
            set_errno(e);
            return -1;
        }
        let w = w as usize;
        sent += w;
        if let Some(p) = pos.as_mut() {
            *p += w as off_t;
        }
        if w < got {
            if pos.is_none() {
                // SAFETY: lseek takes an fd and an offset.
                unsafe { libc::lseek(inp, -((got - w) as off_t), libc::SEEK_CUR) };
            }
            break;
        }
    }
    if let Some(p) = pos {
        // SAFETY: the caller's promise.
        unsafe { *off = p };
    }
    sent as ssize_t
}

/// `recvfrom` of a strata socket with `MSG_TRUNC` (see [`readv_trunc`]).
///
/// # Safety
///
/// As libc's `recvfrom`.
pub(crate) unsafe fn recvfrom_trunc(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    let iov = iovec {
        iov_base: buf,
        iov_len: n,
    };
    // SAFETY: one iovec over the caller's buffer.
    unsafe { readv_trunc(fd, &iov, 1, flags, addr, alen) }.0
}
