//! Address conversion: whatever `std` accepts as [`ToSocketAddrs`], down
//! to the IPv4 addresses strata speaks, and back.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};

use strata_proto::sock::Addr;

/// Resolves `addr` like `std::net` does (literals, `(host, port)` pairs,
/// names through the system resolver) and keeps the IPv4 addresses, in
/// order. IPv4-mapped IPv6 addresses count as IPv4.
///
/// Errors: `InvalidInput` when nothing resolves, `Unsupported` when only
/// IPv6 addresses do.
pub(crate) fn resolve<A: ToSocketAddrs>(addr: A) -> io::Result<Vec<SocketAddrV4>> {
    let mut v4 = Vec::new();
    let mut saw_v6 = false;
    for a in addr.to_socket_addrs()? {
        match to_v4(a) {
            Some(a) => v4.push(a),
            None => saw_v6 = true,
        }
    }
    if v4.is_empty() {
        return Err(if saw_v6 {
            ipv6_unsupported()
        } else {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any addresses",
            )
        });
    }
    Ok(v4)
}

/// The first address [`resolve`] finds (what `send_to` uses, like std).
pub(crate) fn resolve_one<A: ToSocketAddrs>(addr: A) -> io::Result<SocketAddrV4> {
    resolve(addr).map(|v| v[0])
}

/// `a` as IPv4, if it is (or maps) one.
pub(crate) fn to_v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}

/// The error for IPv6 addresses.
pub(crate) fn ipv6_unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "strata speaks IPv4 only for now; IPv6 addresses are not supported",
    )
}

/// std → wire.
pub(crate) fn to_wire(a: SocketAddrV4) -> Addr {
    Addr::from(a)
}

/// Wire → std.
pub(crate) fn from_wire(a: Addr) -> SocketAddr {
    SocketAddr::from(a)
}

/// Runs `f` on each address in turn until one succeeds, like std's
/// `bind` and `connect`; the last error otherwise.
pub(crate) fn each_addr<A, T, F>(addr: A, mut f: F) -> io::Result<T>
where
    A: ToSocketAddrs,
    F: FnMut(SocketAddrV4) -> io::Result<T>,
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
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    #[test]
    fn literals_pairs_and_socket_addrs_resolve() {
        let want = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 53);
        assert_eq!(resolve("10.0.0.1:53").unwrap(), vec![want]);
        assert_eq!(resolve(("10.0.0.1", 53)).unwrap(), vec![want]);
        assert_eq!(
            resolve((Ipv4Addr::new(10, 0, 0, 1), 53)).unwrap(),
            vec![want]
        );
        assert_eq!(resolve(SocketAddr::V4(want)).unwrap(), vec![want]);
        assert_eq!(resolve(want).unwrap(), vec![want]);
        let two = [
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 2], 2)),
        ];
        assert_eq!(resolve(&two[..]).unwrap().len(), 2);
        assert_eq!(resolve_one(&two[..]).unwrap().port(), 1);
    }

    #[test]
    fn ipv6_is_refused_with_a_clear_error_but_mapped_v4_is_fine() {
        let e = resolve("[::1]:80").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("IPv4 only"), "{e}");
        let mapped = SocketAddrV6::new(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped(), 9, 0, 0);
        assert_eq!(
            resolve(mapped).unwrap(),
            vec![SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 7), 9)]
        );
        // Mixed lists keep the IPv4 ones.
        let mixed = [
            SocketAddr::from((Ipv6Addr::LOCALHOST, 1)),
            SocketAddr::from(([127, 0, 0, 1], 2)),
        ];
        assert_eq!(resolve(&mixed[..]).unwrap().len(), 1);
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
    fn wire_round_trip() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 4242);
        let w = to_wire(a);
        assert_eq!(w.ipv4(), Some(0x0a4d_0002));
        assert_eq!(w.port, 4242);
        assert_eq!(from_wire(w), SocketAddr::V4(a));
    }

    #[test]
    fn each_addr_returns_first_success_or_last_error() {
        let two = [
            SocketAddr::from(([127, 0, 0, 1], 1)),
            SocketAddr::from(([127, 0, 0, 2], 2)),
        ];
        let mut seen = vec![];
        let r = each_addr(&two[..], |a| {
            seen.push(a.port());
            if a.port() == 2 {
                Ok(a)
            } else {
                Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
            }
        });
        assert_eq!(r.unwrap().port(), 2);
        assert_eq!(seen, vec![1, 2]);
        let e = each_addr(&two[..], |_| -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::EADDRINUSE))
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }
}
