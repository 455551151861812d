//! `struct sockaddr` in and out (`sa`), with Linux's checks and truncation.

use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4};

use libc::{c_int, sa_family_t, sockaddr, sockaddr_in, socklen_t};

use crate::errno::Res;

/// `sizeof(struct sockaddr_in)`.
pub(crate) const SIN_LEN: usize = size_of::<sockaddr_in>();

/// Linux refuses addresses longer than `struct sockaddr_storage`.
const MAX_LEN: usize = size_of::<libc::sockaddr_storage>();

/// An address as the application gave it: its family, and the IPv4
/// address if it is long enough to hold one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Given {
    pub(crate) family: c_int,
    /// Present when `len` covers a `sockaddr_in`.
    pub(crate) v4: Option<SocketAddrV4>,
}

impl Given {
    /// The IPv4 address of an `AF_INET` address (`AF_UNSPEC` counts as
    /// `AF_INET` when `unspec_is_inet`): `EINVAL` when it is too short,
    /// `EAFNOSUPPORT` for another family.
    pub(crate) fn inet(self, unspec_is_inet: bool) -> Res<SocketAddrV4> {
        let v4 = self.v4.ok_or(libc::EINVAL)?;
        match self.family {
            libc::AF_INET => Ok(v4),
            libc::AF_UNSPEC if unspec_is_inet => Ok(v4),
            _ => Err(libc::EAFNOSUPPORT),
        }
    }
}

/// `EINVAL` for an address length Linux refuses outright.
pub(crate) fn check_len(len: socklen_t) -> Res<()> {
    if len as usize > MAX_LEN {
        return Err(libc::EINVAL);
    }
    Ok(())
}

/// Reads the address at `addr`, `len` bytes: `EINVAL` for a length
/// Linux refuses (over `sockaddr_storage`, or too short for a family),
/// `EFAULT` for a null pointer.
///
/// # Safety
///
/// `addr`, unless null, points to `len` readable bytes.
pub(crate) unsafe fn read(addr: *const sockaddr, len: socklen_t) -> Res<Given> {
    check_len(len)?;
    let len = len as usize;
    if addr.is_null() {
        return Err(libc::EFAULT);
    }
    if len < size_of::<sa_family_t>() {
        return Err(libc::EINVAL);
    }
    // SAFETY: `len` covers the family field at the start of `addr` (the
    // caller's promise); it may be unaligned.
    let family = unsafe { std::ptr::read_unaligned(addr.cast::<sa_family_t>()) };
    let v4 = (len >= SIN_LEN).then(|| {
        // SAFETY: `len` covers a whole `sockaddr_in` (the caller's
        // promise); it may be unaligned.
        let sin = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in>()) };
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
            u16::from_be(sin.sin_port),
        )
    });
    Ok(Given {
        family: c_int::from(family),
        v4,
    })
}

/// `a` as a `sockaddr_in`.
pub(crate) fn to_sin(a: SocketAddrV4) -> sockaddr_in {
    sockaddr_in {
        sin_family: libc::AF_INET as sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Checks an address buffer before a call that will fill it: `EFAULT`
/// when `len` is null (or `addr` is and `need_addr`), `EINVAL` when
/// `*len` is negative. Returns `*len`.
///
/// # Safety
///
/// `len`, unless null, points to a readable `socklen_t`.
pub(crate) unsafe fn check_out(
    addr: *mut sockaddr,
    len: *mut socklen_t,
    need_addr: bool,
) -> Res<usize> {
    if len.is_null() || (need_addr && addr.is_null()) {
        return Err(libc::EFAULT);
    }
    // SAFETY: `len` is not null and readable (the caller's promise).
    let n = unsafe { std::ptr::read_unaligned(len) };
    // Linux reads the length as an int.
    if (n as c_int) < 0 {
        return Err(libc::EINVAL);
    }
    Ok(n as usize)
}

/// Writes `a` to `addr` as Linux does: `min(*len, sizeof(sockaddr_in))`
/// bytes (nothing for `None`, a socket that has no address to give), and
/// the full size (0 for `None`) to `*len`.
///
/// # Safety
///
/// As [`check_out`], with `need_addr`; `addr` points to `*len` writable
/// bytes and `len` is writable.
pub(crate) unsafe fn write(
    a: Option<SocketAddrV4>,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> Res<()> {
    // SAFETY: forwarded from the caller.
    let room = unsafe { check_out(addr, len, a.is_some()) }?;
    let full = match a {
        Some(a) => {
            let sin = to_sin(a);
            let n = room.min(SIN_LEN);
            // SAFETY: `sin` is a live local of SIN_LEN bytes; `addr` has
            // room for `room` >= `n` bytes (the caller's promise); the two
            // do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&sin as *const sockaddr_in).cast::<u8>(),
                    addr.cast::<u8>(),
                    n,
                )
            };
            SIN_LEN
        }
        None => 0,
    };
    // SAFETY: `len` is not null and writable (the caller's promise).
    unsafe { std::ptr::write_unaligned(len, full as socklen_t) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(sin: &sockaddr_in, len: usize) -> Res<Given> {
        // SAFETY: `sin` is a live sockaddr_in; only `len` <= SIN_LEN bytes
        // are read.
        unsafe { read((sin as *const sockaddr_in).cast(), len as socklen_t) }
    }

    #[test]
    fn inet_addresses_read_and_write_back() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 4242);
        let sin = to_sin(a);
        assert_eq!(given(&sin, SIN_LEN).unwrap().inet(false), Ok(a));
        let mut out: sockaddr_in = to_sin(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let mut len = SIN_LEN as socklen_t;
        // SAFETY: `out` and `len` are live locals of the sizes given.
        unsafe { write(Some(a), (&mut out as *mut sockaddr_in).cast(), &mut len) }.unwrap();
        assert_eq!(len as usize, SIN_LEN);
        assert_eq!(given(&out, SIN_LEN).unwrap().v4, Some(a));
    }

    #[test]
    fn short_long_null_and_foreign_addresses_fail_like_linux() {
        let sin = to_sin(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
        assert_eq!(given(&sin, 1), Err(libc::EINVAL));
        assert_eq!(
            given(&sin, SIN_LEN - 1).unwrap().inet(false),
            Err(libc::EINVAL)
        );
        // SAFETY: a null pointer is never read.
        let e = unsafe { read(std::ptr::null(), SIN_LEN as socklen_t) };
        assert_eq!(e, Err(libc::EFAULT));
        // SAFETY: the length is refused before anything is read.
        let e = unsafe { read((&sin as *const sockaddr_in).cast(), 129) };
        assert_eq!(e, Err(libc::EINVAL));
        let mut six = sin;
        six.sin_family = libc::AF_INET6 as sa_family_t;
        assert_eq!(
            given(&six, SIN_LEN).unwrap().inet(false),
            Err(libc::EAFNOSUPPORT)
        );
        let mut unspec = sin;
        unspec.sin_family = libc::AF_UNSPEC as sa_family_t;
        assert_eq!(
            given(&unspec, SIN_LEN).unwrap().inet(false),
            Err(libc::EAFNOSUPPORT)
        );
        assert!(given(&unspec, SIN_LEN).unwrap().inet(true).is_ok());
    }

    #[test]
    fn short_buffers_get_a_truncated_copy_and_the_full_length() {
        let a = SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 0x1234);
        let mut buf = [0xaau8; 32];
        let mut len: socklen_t = 4;
        // SAFETY: `buf` has 32 >= 4 writable bytes; `len` is a live local.
        unsafe { write(Some(a), buf.as_mut_ptr().cast(), &mut len) }.unwrap();
        assert_eq!(len as usize, SIN_LEN);
        // Family (host order) and port (network order), then untouched.
        assert_eq!(&buf[..2], &(libc::AF_INET as u16).to_ne_bytes());
        assert_eq!(&buf[2..4], &[0x12, 0x34]);
        assert_eq!(buf[4], 0xaa);
        // A negative length, a null length.
        let mut bad: socklen_t = (-1i32) as socklen_t;
        // SAFETY: `bad` is refused before `buf` is written.
        let e = unsafe { write(Some(a), buf.as_mut_ptr().cast(), &mut bad) };
        assert_eq!(e, Err(libc::EINVAL));
        // SAFETY: null pointers are refused before any access.
        let e = unsafe { write(Some(a), buf.as_mut_ptr().cast(), std::ptr::null_mut()) };
        assert_eq!(e, Err(libc::EFAULT));
        // No address to give: length 0, buffer untouched.
        let mut len: socklen_t = 16;
        // SAFETY: `len` is a live local; nothing is written to `buf`.
        unsafe { write(None, buf.as_mut_ptr().cast(), &mut len) }.unwrap();
        assert_eq!(len, 0);
    }
}
