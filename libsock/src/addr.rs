//! Address conversion: whatever `std` accepts as [`ToSocketAddrs`], to
//! the addresses of either family sockd takes (IPv4 ones mapped into
//! `::ffff:0:0/96`), and back as a socket of one family shows them.
//!
//! A socket has a family, as one made by `socket(2)` has a domain: the
//! family of the address it was made for ([`Family::of`]), or the one
//! asked for ([`crate::Builder::udp_unbound_v6`]). An IPv4 socket shows
//! every address as `SocketAddr::V4`; an IPv6 socket shows every address
//! as `SocketAddr::V6`, an IPv4 peer of a dual-stack socket as
//! `::ffff:a.b.c.d`, as Linux does.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};

use strata_proto::sock::Addr;

/// A socket's address family (`AF_INET` or `AF_INET6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// IPv4.
    V4,
    /// IPv6, dual-stack unless IPV6_V6ONLY is set.
    V6,
}

impl Family {
    /// The family of a socket made for `a`: IPv6 for every
    /// `SocketAddr::V6`, IPv4-mapped ones included (as std makes an
    /// `AF_INET6` socket for them).
    pub(crate) fn of(a: &SocketAddr) -> Family {
        match a {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }
}

/// What a socket call does with an address, for the errors Linux gives
/// when it does not fit the socket's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// bind(2).
    Bind,
    /// connect(2).
    Connect,
    /// sendto(2).
    Send,
}

/// The error for an address that does not fit the socket, as a raw OS
/// error (what std reports for the same call on Linux).
fn os(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Resolves `addr` like `std::net` does (literals, `(host, port)` pairs,
/// names through the system resolver) and keeps every address, of both
/// families, in order: callers try them in turn, as std's `bind` and
/// `connect` do.
///
/// Errors: what resolving fails with; `InvalidInput` when nothing
/// resolves.
pub(crate) fn resolve<A: ToSocketAddrs>(addr: A) -> io::Result<Vec<SocketAddr>> {
    let all: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if all.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        ));
    }
    Ok(all)
}

/// The first address [`resolve`] finds (what `send_to` uses, like std).
pub(crate) fn resolve_one<A: ToSocketAddrs>(addr: A) -> io::Result<SocketAddr> {
    resolve(addr).map(|v| v[0])
}

/// Address `a`, given to a call of kind `what` on a socket of family
/// `fam` (with IPV6_V6ONLY `v6only`), on the wire; the error Linux gives
/// when it does not fit:
///
/// - IPv4 socket: IPv4 addresses; IPv4-mapped IPv6 ones count as the
///   IPv4 they map (Linux refuses them with `EAFNOSUPPORT`; libsock
///   takes them, so that an address an IPv6 socket reported can be
///   used); other IPv6 addresses are `EAFNOSUPPORT`.
/// - IPv6 socket: IPv6 addresses as they are. A `SocketAddr::V4` is
///   taken as its mapped address to connect or send to (Linux takes an
///   `AF_INET` address there), but `EINVAL` to bind (Linux: too short
///   for an IPv6 socket's bind). With IPV6_V6ONLY, IPv4 peers are
///   refused: `EAFNOSUPPORT` for a `SocketAddr::V4` connect,
///   `ENETUNREACH` for a mapped one or any IPv4 destination of a send,
///   `EINVAL` to bind a mapped address.
pub(crate) fn to_wire(fam: Family, v6only: bool, what: Use, a: SocketAddr) -> io::Result<Addr> {
    // IPv4 addresses mapped, IPv6 ones as they are.
    let w = Addr::from(a);
    let ipv4 = w.ipv4();
    match (fam, a) {
        (Family::V4, _) if ipv4.is_none() => Err(os(libc::EAFNOSUPPORT)),
        (Family::V4, _) => Ok(w),
        (Family::V6, SocketAddr::V4(_)) if what == Use::Bind => Err(os(libc::EINVAL)),
        (Family::V6, _) => match (ipv4, v6only, what) {
            (Some(_), true, Use::Bind) => Err(os(libc::EINVAL)),
            // Connecting to a wildcard disconnects: no IPv4 peer.
            (Some(0), true, Use::Connect) => Ok(w),
            (Some(_), true, Use::Connect) if a.is_ipv4() => Err(os(libc::EAFNOSUPPORT)),
            (Some(_), true, _) => Err(os(libc::ENETUNREACH)),
            _ => Ok(w),
        },
    }
}

/// An address sockd reports (wire form), as a socket of family `fam`
/// shows it: `SocketAddr::V4` on an IPv4 socket (`0.0.0.0` for an
/// unbound one's `::`), `SocketAddr::V6` on an IPv6 socket, IPv4 ones
/// as `::ffff:a.b.c.d`. An IPv6 address on an IPv4 socket, which sockd
/// does not report, stays IPv6.
pub(crate) fn from_wire(fam: Family, a: Addr) -> SocketAddr {
    match fam {
        Family::V4 => match a.ipv4() {
            Some(ip) => SocketAddrV4::new(Ipv4Addr::from(ip), a.port).into(),
            None if a.ip == 0 => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, a.port).into(),
            None => SocketAddrV6::new(Ipv6Addr::from(a.ip), a.port, 0, 0).into(),
        },
        Family::V6 => SocketAddrV6::new(Ipv6Addr::from(a.ip), a.port, 0, 0).into(),
    }
}

/// An address as std has it (from a datagram record), shown as a socket
/// of family `fam` shows it ([`from_wire`]).
pub(crate) fn shown(fam: Family, a: SocketAddr) -> SocketAddr {
    from_wire(fam, Addr::from(a))
}

/// Runs `f` on each address in turn until one succeeds, like std's
/// `bind` and `connect`; the last error otherwise.
pub(crate) fn each_addr<A, T, F>(addr: A, mut f: F) -> io::Result<T>
where
    A: ToSocketAddrs,
    F: FnMut(SocketAddr) -> io::Result<T>,
{
    let mut last = None;
    for a in resolve(addr)? {
        match f(a) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any addresses",
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ipc::addrs::mapped;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn literals_pairs_and_socket_addrs_resolve() {
        let want = sa("10.0.0.1:53");
        assert_eq!(resolve("10.0.0.1:53").unwrap(), vec![want]);
        assert_eq!(resolve(("10.0.0.1", 53)).unwrap(), vec![want]);
        assert_eq!(
            resolve((Ipv4Addr::new(10, 0, 0, 1), 53)).unwrap(),
            vec![want]
        );
        assert_eq!(resolve(want).unwrap(), vec![want]);
        assert_eq!(
            resolve(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 53)).unwrap(),
            vec![want]
        );
        let two = [sa("127.0.0.1:1"), sa("127.0.0.2:2")];
        assert_eq!(resolve(&two[..]).unwrap().len(), 2);
        assert_eq!(resolve_one(&two[..]).unwrap().port(), 1);
    }

    #[test]
    fn both_families_resolve_and_keep_their_order() {
        assert_eq!(resolve("[::1]:80").unwrap(), vec![sa("[::1]:80")]);
        assert_eq!(resolve(("::", 7)).unwrap(), vec![sa("[::]:7")]);
        assert_eq!(
            resolve((Ipv6Addr::LOCALHOST, 9)).unwrap(),
            vec![sa("[::1]:9")]
        );
        let mixed = [sa("[::1]:1"), sa("127.0.0.1:2"), sa("[fd00::1]:3")];
        assert_eq!(resolve(&mixed[..]).unwrap(), mixed.to_vec());
        assert_eq!(resolve_one(&mixed[..]).unwrap(), mixed[0]);
        // A mapped address stays what it is: an IPv6 address, for an
        // IPv6 socket.
        let m = sa("[::ffff:192.0.2.7]:9");
        assert_eq!(resolve(m).unwrap(), vec![m]);
        assert_eq!(Family::of(&m), Family::V6);
        assert_eq!(Family::of(&mixed[1]), Family::V4);
    }

    #[test]
    fn nothing_and_garbage_are_invalid_input() {
        let none: &[SocketAddr] = &[];
        assert_eq!(
            resolve(none).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            resolve("not an address").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(each_addr(none, |_| Ok(())).is_err());
    }

    #[test]
    fn wildcards_of_the_two_families_differ_on_the_wire() {
        for what in [Use::Bind, Use::Connect, Use::Send] {
            let any6 = to_wire(Family::V6, false, what, sa("[::]:5")).unwrap();
            assert_eq!((any6.ip, any6.port), (0, 5));
            let any4 = to_wire(Family::V4, false, what, sa("0.0.0.0:5")).unwrap();
            assert_eq!((any4.ip, any4.port), (mapped(0), 5));
        }
    }

    #[test]
    fn ipv4_sockets_take_ipv4_and_mapped_and_refuse_other_ipv6() {
        for what in [Use::Bind, Use::Connect, Use::Send] {
            let w = to_wire(Family::V4, false, what, sa("10.77.0.2:4242")).unwrap();
            assert_eq!((w.ip, w.port), (mapped(0x0a4d_0002), 4242));
            let m = to_wire(Family::V4, false, what, sa("[::ffff:10.77.0.2]:4242")).unwrap();
            assert_eq!(m, w);
            for a in ["[::1]:80", "[::]:80", "[2001:db8::1]:80"] {
                let e = to_wire(Family::V4, false, what, sa(a)).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EAFNOSUPPORT), "{a}");
            }
        }
    }

    #[test]
    fn ipv6_sockets_take_ipv4_as_mapped_to_connect_and_send_not_to_bind() {
        let v6 = to_wire(Family::V6, false, Use::Bind, sa("[fd00::1]:53")).unwrap();
        assert_eq!(
            v6.ip,
            u128::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1))
        );
        for what in [Use::Connect, Use::Send] {
            let w = to_wire(Family::V6, false, what, sa("10.0.0.1:53")).unwrap();
            assert_eq!((w.ip, w.port), (mapped(0x0a00_0001), 53));
            let m = to_wire(Family::V6, false, what, sa("[::ffff:10.0.0.1]:53")).unwrap();
            assert_eq!(m, w);
        }
        let e = to_wire(Family::V6, false, Use::Bind, sa("10.0.0.1:53")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        // A mapped address binds a dual-stack socket to IPv4 only.
        let m = to_wire(Family::V6, false, Use::Bind, sa("[::ffff:10.0.0.1]:53")).unwrap();
        assert_eq!(m.ip, mapped(0x0a00_0001));
    }

    #[test]
    fn v6only_refuses_ipv4_with_linuxs_errors() {
        let err = |what, a| {
            to_wire(Family::V6, true, what, sa(a))
                .unwrap_err()
                .raw_os_error()
        };
        assert_eq!(err(Use::Bind, "[::ffff:10.0.0.1]:1"), Some(libc::EINVAL));
        assert_eq!(err(Use::Bind, "[::ffff:0.0.0.0]:1"), Some(libc::EINVAL));
        assert_eq!(err(Use::Bind, "10.0.0.1:1"), Some(libc::EINVAL));
        assert_eq!(err(Use::Connect, "10.0.0.1:1"), Some(libc::EAFNOSUPPORT));
        assert_eq!(
            err(Use::Connect, "[::ffff:10.0.0.1]:1"),
            Some(libc::ENETUNREACH)
        );
        assert_eq!(err(Use::Send, "10.0.0.1:1"), Some(libc::ENETUNREACH));
        assert_eq!(
            err(Use::Send, "[::ffff:10.0.0.1]:1"),
            Some(libc::ENETUNREACH)
        );
        for what in [Use::Bind, Use::Connect, Use::Send] {
            assert!(to_wire(Family::V6, true, what, sa("[::]:1")).is_ok());
            assert!(to_wire(Family::V6, true, what, sa("[fd00::1]:1")).is_ok());
        }
        // Disconnecting (a wildcard peer) is no IPv4 peer.
        assert!(to_wire(Family::V6, true, Use::Connect, sa("0.0.0.0:0")).is_ok());
        assert!(to_wire(Family::V6, true, Use::Connect, sa("[::ffff:0.0.0.0]:0")).is_ok());
        // IPv4 sockets have no IPV6_V6ONLY to speak of.
        assert!(to_wire(Family::V4, true, Use::Send, sa("10.0.0.1:1")).is_ok());
        assert!(to_wire(Family::V4, true, Use::Bind, sa("0.0.0.0:1")).is_ok());
    }

    #[test]
    fn reported_addresses_take_the_sockets_family() {
        let peer4 = Addr::v4(0x0a4d_0002, 4242);
        // An IPv4 socket: V4.
        assert_eq!(from_wire(Family::V4, peer4), sa("10.77.0.2:4242"));
        // An IPv6 socket: the IPv4 peer as ::ffff:a.b.c.d, never V4.
        assert_eq!(from_wire(Family::V6, peer4), sa("[::ffff:10.77.0.2]:4242"));
        let peer6 = Addr::from(sa("[fd00::7]:53"));
        assert_eq!(from_wire(Family::V6, peer6), sa("[fd00::7]:53"));
        // Unbound: each family's wildcard, whichever sockd has.
        for any in [0, mapped(0)] {
            let a = Addr { ip: any, port: 0 };
            assert_eq!(from_wire(Family::V4, a), sa("0.0.0.0:0"));
        }
        assert_eq!(from_wire(Family::V6, Addr { ip: 0, port: 0 }), sa("[::]:0"));
        // Never a panic, whatever comes.
        assert_eq!(from_wire(Family::V4, peer6), sa("[fd00::7]:53"));
        // Records (std's form, mapped shown as V4) likewise.
        assert_eq!(
            shown(Family::V6, sa("10.0.0.1:7")),
            sa("[::ffff:10.0.0.1]:7")
        );
        assert_eq!(shown(Family::V4, sa("10.0.0.1:7")), sa("10.0.0.1:7"));
        assert_eq!(shown(Family::V6, sa("[fd00::1]:7")), sa("[fd00::1]:7"));
    }

    #[test]
    fn each_addr_returns_first_success_or_last_error() {
        let two = [sa("[::1]:1"), sa("127.0.0.2:2")];
        let mut seen = vec![];
        let r = each_addr(&two[..], |a| {
            seen.push(a);
            if a.port() == 2 {
                Ok(a)
            } else {
                Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
            }
        });
        assert_eq!(r.unwrap(), two[1]);
        assert_eq!(seen, two.to_vec());
        let e = each_addr(&two[..], |_| -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }
}
