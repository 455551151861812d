//! `struct sockaddr` in and out (`sa`), with Linux's checks and truncation.
//!
//! An `AF_INET` socket takes and gives `struct sockaddr_in`; an
//! `AF_INET6` socket takes `struct sockaddr_in6` (and `sockaddr_in`
//! where Linux does: a dual-stack socket's connect and sendto) and gives
//! `struct sockaddr_in6`, IPv4 peers as `::ffff:a.b.c.d`. Of a
//! `sockaddr_in6`, `sin6_flowinfo` and `sin6_scope_id` are accepted and
//! ignored (strata has neither flow labels nor scoped addresses), and
//! written back as 0.

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use libc::{c_int, sa_family_t, sockaddr, sockaddr_in, sockaddr_in6, socklen_t};

use crate::errno::Res;

/// `sizeof(struct sockaddr_in)`.
pub(crate) const SIN_LEN: usize = size_of::<sockaddr_in>();

/// `sizeof(struct sockaddr_in6)`: 28 bytes, what Linux writes back.
pub(crate) const SIN6_LEN: usize = size_of::<sockaddr_in6>();

/// The shortest `sockaddr_in6` Linux takes (`SIN6_LEN_RFC2133`: the
/// struct before `sin6_scope_id` was added).
pub(crate) const SIN6_LEN_RFC2133: usize = 24;

/// Linux refuses addresses longer than `struct sockaddr_storage`.
const MAX_LEN: usize = size_of::<libc::sockaddr_storage>();

/// An address as the application gave it: its family, and the address
/// read as each family's struct the length covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Given {
    pub(crate) family: c_int,
    /// Present when `len` covers a `sockaddr_in`.
    pub(crate) v4: Option<SocketAddrV4>,
    /// Present when `len` covers a `sockaddr_in6` without its scope id
    /// (`SIN6_LEN_RFC2133`); flow info and scope id are dropped.
    pub(crate) v6: Option<SocketAddrV6>,
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

    /// The IPv6 address of an `AF_INET6` address, for a bind (UDP or
    /// TCP) or a TCP connect on an `AF_INET6` socket: `EINVAL` when it
    /// is shorter than `SIN6_LEN_RFC2133`, then `EAFNOSUPPORT` for
    /// another family, `AF_INET` included. Linux's order, in
    /// `inet6_bind_sk`/`__inet6_bind` and `tcp_v6_connect` (an
    /// `AF_INET` `sockaddr_in` of 16 bytes is so `EINVAL`).
    pub(crate) fn inet6(self) -> Res<SocketAddrV6> {
        let v6 = self.v6.ok_or(libc::EINVAL)?;
        if self.family != libc::AF_INET6 {
            return Err(libc::EAFNOSUPPORT);
        }
        Ok(v6)
    }

    /// The peer of a UDP connect on an `AF_INET6` socket (`AF_UNSPEC`,
    /// a disconnect, is the caller's), as Linux's `udpv6_pre_connect`
    /// and `__ip6_datagram_connect` take it: an `AF_INET` address is
    /// taken on a dual-stack socket (as its mapped address), but is
    /// `EAFNOSUPPORT` with `IPV6_V6ONLY` (checked before its length),
    /// and `EINVAL` when shorter than a `sockaddr_in`; any other family
    /// must be a `sockaddr_in6` of at least `SIN6_LEN_RFC2133` bytes
    /// (`EINVAL`) and `AF_INET6` (`EAFNOSUPPORT`).
    pub(crate) fn udp6_peer(self, only_v6: bool) -> Res<SocketAddr> {
        if self.family == libc::AF_INET {
            if only_v6 {
                return Err(libc::EAFNOSUPPORT);
            }
            return self.inet(false).map(SocketAddr::V4);
        }
        self.inet6().map(SocketAddr::V6)
    }

    /// The destination of a UDP sendto on an `AF_INET6` socket, as
    /// Linux's `udpv6_sendmsg` takes it: `AF_INET6` (at least
    /// `SIN6_LEN_RFC2133` bytes, else `EINVAL`); `AF_INET`, sent over
    /// IPv4 as `udp_sendmsg` would (`ENETUNREACH` with `IPV6_V6ONLY`,
    /// before the length is looked at; `EINVAL` when shorter than a
    /// `sockaddr_in`); `AF_UNSPEC` as no address at all (`None`: the
    /// connected peer); any other family `EINVAL` (not `EAFNOSUPPORT`:
    /// Linux's switch says so).
    pub(crate) fn udp6_dest(self, only_v6: bool) -> Res<Option<SocketAddr>> {
        match self.family {
            libc::AF_INET6 => self.v6.map(|a| Some(a.into())).ok_or(libc::EINVAL),
            libc::AF_INET if only_v6 => Err(libc::ENETUNREACH),
            libc::AF_INET => self.inet(false).map(|a| Some(a.into())),
            libc::AF_UNSPEC => Ok(None),
            _ => Err(libc::EINVAL),
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
    let v6 = (len >= SIN6_LEN_RFC2133).then(|| {
        // Only the first SIN6_LEN_RFC2133 bytes may be there: the rest
        // of the struct (the scope id, ignored) stays zero.
        let mut sin6 = zero_sin6();
        // SAFETY: `len` covers SIN6_LEN_RFC2133 bytes at `addr` (the
        // caller's promise), and `sin6` is a live local of SIN6_LEN >=
        // SIN6_LEN_RFC2133 bytes; the two do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                addr.cast::<u8>(),
                (&mut sin6 as *mut sockaddr_in6).cast::<u8>(),
                SIN6_LEN_RFC2133,
            )
        };
        SocketAddrV6::new(
            Ipv6Addr::from(sin6.sin6_addr.s6_addr),
            u16::from_be(sin6.sin6_port),
            0,
            0,
        )
    });
    Ok(Given {
        family: c_int::from(family),
        v4,
        v6,
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

fn zero_sin6() -> sockaddr_in6 {
    sockaddr_in6 {
        sin6_family: 0,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
        sin6_scope_id: 0,
    }
}

/// `a` as a `sockaddr_in6` (flow info and scope id 0).
pub(crate) fn to_sin6(a: SocketAddrV6) -> sockaddr_in6 {
    sockaddr_in6 {
        sin6_family: libc::AF_INET6 as sa_family_t,
        sin6_port: a.port().to_be(),
        sin6_addr: libc::in6_addr {
            s6_addr: a.ip().octets(),
        },
        ..zero_sin6()
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

/// Writes `a` to `addr` as Linux does: `min(*len, size)` bytes of a
/// `sockaddr_in` (`SocketAddr::V4`) or `sockaddr_in6` (`SocketAddr::V6`;
/// flow info and scope id 0), nothing for `None` (a socket that has no
/// address to give), and the full size (0 for `None`) to `*len`.
///
/// # Safety
///
/// As [`check_out`], with `need_addr`; `addr` points to `*len` writable
/// bytes and `len` is writable.
pub(crate) unsafe fn write(
    a: Option<SocketAddr>,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> Res<()> {
    // SAFETY: forwarded from the caller.
    let room = unsafe { check_out(addr, len, a.is_some()) }?;
    let (sin, sin6);
    let (bytes, full): (*const u8, usize) = match a {
        Some(SocketAddr::V4(a)) => {
            sin = to_sin(a);
            ((&sin as *const sockaddr_in).cast(), SIN_LEN)
        }
        Some(SocketAddr::V6(a)) => {
            sin6 = to_sin6(a);
            ((&sin6 as *const sockaddr_in6).cast(), SIN6_LEN)
        }
        None => (std::ptr::null(), 0),
    };
    let n = room.min(full);
    if n > 0 {
        // SAFETY: `bytes` is a live local of `full` >= `n` bytes; `addr`
        // has room for `room` >= `n` bytes (the caller's promise); the
        // two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes, addr.cast::<u8>(), n) };
    }
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
        unsafe {
            write(
                Some(a.into()),
                (&mut out as *mut sockaddr_in).cast(),
                &mut len,
            )
        }
        .unwrap();
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

    fn given6(sin6: &sockaddr_in6, len: usize) -> Res<Given> {
        // SAFETY: `sin6` is a live sockaddr_in6; only `len` <= SIN6_LEN
        // bytes are read.
        unsafe { read((sin6 as *const sockaddr_in6).cast(), len as socklen_t) }
    }

    /// A sockaddr_in in a sockaddr_in6-sized buffer, to give it with
    /// lengths up to SIN6_LEN.
    fn sin_as6(a: SocketAddrV4) -> sockaddr_in6 {
        let mut buf = zero_sin6();
        let sin = to_sin(a);
        // SAFETY: both are live locals; SIN_LEN <= SIN6_LEN.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&sin as *const sockaddr_in).cast::<u8>(),
                (&mut buf as *mut sockaddr_in6).cast::<u8>(),
                SIN_LEN,
            )
        };
        buf
    }

    #[test]
    fn inet6_addresses_read_and_write_back_without_flow_or_scope() {
        assert_eq!((SIN6_LEN, SIN6_LEN_RFC2133), (28, 24));
        let a: SocketAddrV6 = "[fd00:77::2]:4242".parse().unwrap();
        let mut sin6 = to_sin6(a);
        // Given, and ignored.
        sin6.sin6_flowinfo = 0x1234u32.to_be();
        sin6.sin6_scope_id = 7;
        assert_eq!(given6(&sin6, SIN6_LEN).unwrap().inet6(), Ok(a));
        // The RFC 2133 struct, without the scope id, is enough.
        assert_eq!(given6(&sin6, SIN6_LEN_RFC2133).unwrap().inet6(), Ok(a));
        let mut out = sin6;
        let mut len = SIN6_LEN as socklen_t;
        // SAFETY: `out` and `len` are live locals of the sizes given.
        unsafe {
            write(
                Some(a.into()),
                (&mut out as *mut sockaddr_in6).cast(),
                &mut len,
            )
        }
        .unwrap();
        assert_eq!(len as usize, SIN6_LEN);
        assert_eq!(c_int::from(out.sin6_family), libc::AF_INET6);
        assert_eq!(u16::from_be(out.sin6_port), 4242);
        assert_eq!(Ipv6Addr::from(out.sin6_addr.s6_addr), *a.ip());
        assert_eq!((out.sin6_flowinfo, out.sin6_scope_id), (0, 0));
        // An IPv4 peer of a dual-stack socket, as it is written out.
        let mapped = SocketAddrV6::new(Ipv4Addr::new(10, 77, 0, 1).to_ipv6_mapped(), 53, 0, 0);
        let mut len = SIN6_LEN as socklen_t;
        // SAFETY: as above.
        unsafe {
            write(
                Some(mapped.into()),
                (&mut out as *mut sockaddr_in6).cast(),
                &mut len,
            )
        }
        .unwrap();
        assert_eq!(len as usize, SIN6_LEN);
        let back = given6(&out, SIN6_LEN).unwrap().inet6().unwrap();
        assert_eq!(back.to_string(), "[::ffff:10.77.0.1]:53");
    }

    #[test]
    fn inet6_binds_and_tcp_connects_want_af_inet6_like_linux() {
        let a: SocketAddrV6 = "[::1]:80".parse().unwrap();
        let sin6 = to_sin6(a);
        // Under SIN6_LEN_RFC2133: EINVAL, whatever the family.
        assert_eq!(
            given6(&sin6, SIN6_LEN_RFC2133 - 1).unwrap().inet6(),
            Err(libc::EINVAL)
        );
        // A sockaddr_in: EINVAL at its own length (shorter than Linux
        // wants), EAFNOSUPPORT when longer.
        let sin = sin_as6(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80));
        assert_eq!(given6(&sin, SIN_LEN).unwrap().inet6(), Err(libc::EINVAL));
        assert_eq!(
            given6(&sin, SIN6_LEN).unwrap().inet6(),
            Err(libc::EAFNOSUPPORT)
        );
        let mut unspec = sin6;
        unspec.sin6_family = libc::AF_UNSPEC as sa_family_t;
        assert_eq!(
            given6(&unspec, SIN6_LEN).unwrap().inet6(),
            Err(libc::EAFNOSUPPORT)
        );
        // And an AF_INET6 address on an AF_INET socket.
        assert_eq!(
            given6(&sin6, SIN6_LEN).unwrap().inet(false),
            Err(libc::EAFNOSUPPORT)
        );
    }

    #[test]
    fn udp6_connects_take_af_inet_on_a_dual_stack_socket_like_linux() {
        let v4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 7);
        let sin = sin_as6(v4);
        let g = given6(&sin, SIN_LEN).unwrap();
        assert_eq!(g.udp6_peer(false), Ok(SocketAddr::V4(v4)));
        // IPV6_V6ONLY: EAFNOSUPPORT, before the length is looked at.
        assert_eq!(g.udp6_peer(true), Err(libc::EAFNOSUPPORT));
        let short = given6(&sin, SIN_LEN - 1).unwrap();
        assert_eq!(short.udp6_peer(true), Err(libc::EAFNOSUPPORT));
        assert_eq!(short.udp6_peer(false), Err(libc::EINVAL));
        let a: SocketAddrV6 = "[fd00::1]:7".parse().unwrap();
        let sin6 = to_sin6(a);
        assert_eq!(
            given6(&sin6, SIN6_LEN).unwrap().udp6_peer(true),
            Ok(SocketAddr::V6(a))
        );
        assert_eq!(
            given6(&sin6, SIN_LEN).unwrap().udp6_peer(false),
            Err(libc::EINVAL)
        );
        let mut unix = sin6;
        unix.sin6_family = libc::AF_UNIX as sa_family_t;
        assert_eq!(
            given6(&unix, SIN6_LEN).unwrap().udp6_peer(false),
            Err(libc::EAFNOSUPPORT)
        );
    }

    #[test]
    fn udp6_destinations_follow_udpv6_sendmsg() {
        let v4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 7);
        let sin = sin_as6(v4);
        let g = given6(&sin, SIN_LEN).unwrap();
        // AF_INET: sent over IPv4, as Linux's udpv6_sendmsg does
        // (`goto do_udp_sendmsg`), but not with IPV6_V6ONLY.
        assert_eq!(g.udp6_dest(false), Ok(Some(SocketAddr::V4(v4))));
        assert_eq!(g.udp6_dest(true), Err(libc::ENETUNREACH));
        let short = given6(&sin, SIN_LEN - 1).unwrap();
        assert_eq!(short.udp6_dest(false), Err(libc::EINVAL));
        assert_eq!(short.udp6_dest(true), Err(libc::ENETUNREACH));
        let a: SocketAddrV6 = "[fd00::1]:7".parse().unwrap();
        let sin6 = to_sin6(a);
        assert_eq!(
            given6(&sin6, SIN6_LEN).unwrap().udp6_dest(true),
            Ok(Some(SocketAddr::V6(a)))
        );
        assert_eq!(
            given6(&sin6, SIN6_LEN_RFC2133 - 1)
                .unwrap()
                .udp6_dest(false),
            Err(libc::EINVAL)
        );
        // AF_UNSPEC: no address (the connected peer); others EINVAL.
        let mut unspec = sin6;
        unspec.sin6_family = libc::AF_UNSPEC as sa_family_t;
        assert_eq!(given6(&unspec, 2).unwrap().udp6_dest(false), Ok(None));
        let mut unix = sin6;
        unix.sin6_family = libc::AF_UNIX as sa_family_t;
        assert_eq!(
            given6(&unix, SIN6_LEN).unwrap().udp6_dest(false),
            Err(libc::EINVAL)
        );
    }

    #[test]
    fn short_buffers_get_a_truncated_sockaddr_in6_and_its_full_length() {
        let a: SocketAddrV6 = "[2001:db8::1]:4660".parse().unwrap();
        let mut buf = [0xaau8; 32];
        let mut len: socklen_t = 8;
        // SAFETY: `buf` has 32 >= 8 writable bytes; `len` is a live local.
        unsafe { write(Some(a.into()), buf.as_mut_ptr().cast(), &mut len) }.unwrap();
        assert_eq!(len as usize, SIN6_LEN);
        assert_eq!(&buf[..2], &(libc::AF_INET6 as u16).to_ne_bytes());
        assert_eq!(&buf[2..4], &[0x12, 0x34]);
        // Flow info (0), then untouched.
        assert_eq!(&buf[4..8], &[0; 4]);
        assert_eq!(buf[8], 0xaa);
    }

    #[test]
    fn short_buffers_get_a_truncated_copy_and_the_full_length() {
        let a = SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 0x1234);
        let mut buf = [0xaau8; 32];
        let mut len: socklen_t = 4;
        // SAFETY: `buf` has 32 >= 4 writable bytes; `len` is a live local.
        unsafe { write(Some(a.into()), buf.as_mut_ptr().cast(), &mut len) }.unwrap();
        assert_eq!(len as usize, SIN_LEN);
        // Family (host order) and port (network order), then untouched.
        assert_eq!(&buf[..2], &(libc::AF_INET as u16).to_ne_bytes());
        assert_eq!(&buf[2..4], &[0x12, 0x34]);
        assert_eq!(buf[4], 0xaa);
        // A negative length, a null length.
        let mut bad: socklen_t = (-1i32) as socklen_t;
        // SAFETY: `bad` is refused before `buf` is written.
        let e = unsafe { write(Some(a.into()), buf.as_mut_ptr().cast(), &mut bad) };
        assert_eq!(e, Err(libc::EINVAL));
        // SAFETY: null pointers are refused before any access.
        let e = unsafe {
            write(
                Some(a.into()),
                buf.as_mut_ptr().cast(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(e, Err(libc::EFAULT));
        // No address to give: length 0, buffer untouched.
        let mut len: socklen_t = 16;
        // SAFETY: `len` is a live local; nothing is written to `buf`.
        unsafe { write(None, buf.as_mut_ptr().cast(), &mut len) }.unwrap();
        assert_eq!(len, 0);
    }
}
