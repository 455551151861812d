//! Both address families on one socket path: where a delivered datagram
//! came from (IPv4 or IPv6 header), which bindings overlap under Linux's
//! dual-stack rules, and what IPV6_V6ONLY forbids.
//!
//! Addresses are 128-bit values, IPv4 ones mapped into `::ffff:0:0/96`
//! ([`strata_ipc::addrs::mapped`]): `::` is IPv6's wildcard (which, on a
//! dual-stack socket, takes IPv4 too), `::ffff:0.0.0.0` IPv4's.

use strata_ipc::addrs::{mapped, unmapped};
use strata_proto::ethernet::ethertype;

/// The bit of `SockRec::flags` that keeps IPV6_V6ONLY with the socket.
pub use strata_ipc::socktable::rec_flags::V6ONLY as REC_V6ONLY;

/// Bytes of an IPv4 header without options.
const IPV4_MIN: usize = 20;
/// Bytes of IPv6's fixed header.
const IPV6_FIXED: usize = 40;
/// Bytes of a UDP header.
const UDP_HDR: usize = 8;

/// Where a UDP datagram udpd delivered came from, and where its payload
/// starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// The source address (IPv4 mapped).
    pub addr: u128,
    /// The source port.
    pub port: u16,
    /// Offset of the payload in the data window.
    pub payload: usize,
}

/// The source of datagram `d`, a data window as udpd delivers it: the IP
/// header at `l3` (IPv4, or IPv6's fixed header and maybe extension
/// headers), the UDP header at `l4`. The family is `ether` (the handle's
/// ethertype: 0x0800 or 0x86DD), or the header's version when the
/// ethertype is neither. None when the window is too short for the
/// headers it claims or the family is unknown.
pub fn datagram_source(d: &[u8], ether: u16, l3: usize, l4: usize) -> Option<Source> {
    // `len` bytes at `off`, if the window has them.
    let at = |off: usize, len: usize| d.get(off..off.checked_add(len)?);
    let version = match ether {
        ethertype::IPV4 => 4,
        ethertype::IPV6 => 6,
        _ => at(l3, 1)?[0] >> 4,
    };
    let (min, addr) = match version {
        4 => {
            let a = at(l3.checked_add(12)?, 4)?;
            (
                IPV4_MIN,
                mapped(u32::from_be_bytes([a[0], a[1], a[2], a[3]])),
            )
        }
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(at(l3.checked_add(8)?, 16)?);
            (IPV6_FIXED, u128::from_be_bytes(a))
        }
        _ => return None,
    };
    let udp = at(l4, UDP_HDR)?;
    if l4 < l3.checked_add(min)? {
        return None;
    }
    Some(Source {
        addr,
        port: u16::from_be_bytes([udp[0], udp[1]]),
        payload: l4 + UDP_HDR,
    })
}

/// What a binding to local address `a` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Takes {
    /// Every address of both families: `::` on a dual-stack socket.
    All,
    /// Every IPv4 address: `::ffff:0.0.0.0`.
    AllV4,
    /// Every IPv6 address: `::` with IPV6_V6ONLY.
    AllV6,
    /// That address only.
    One(u128),
}

fn takes(a: u128, v6only: bool) -> Takes {
    match a {
        0 if v6only => Takes::AllV6,
        0 => Takes::All,
        a if a == mapped(0) => Takes::AllV4,
        a => Takes::One(a),
    }
}

/// Whether bindings to local addresses `a` and `b` (each with its
/// IPV6_V6ONLY) share addresses, as Linux decides when it looks for a
/// conflict on one port: a dual-stack `::` overlaps every IPv4 binding,
/// a `::` with IPV6_V6ONLY none; the IPv4 wildcard overlaps every IPv4
/// address, a specific address only itself.
pub fn bindings_overlap(a: u128, a_v6only: bool, b: u128, b_v6only: bool) -> bool {
    let v4 = |x: u128| unmapped(x).is_some();
    match (takes(a, a_v6only), takes(b, b_v6only)) {
        (Takes::All, _) | (_, Takes::All) => true,
        (Takes::AllV4, Takes::AllV4) | (Takes::AllV6, Takes::AllV6) => true,
        (Takes::AllV4, Takes::AllV6) | (Takes::AllV6, Takes::AllV4) => false,
        (Takes::AllV4, Takes::One(x)) | (Takes::One(x), Takes::AllV4) => v4(x),
        (Takes::AllV6, Takes::One(x)) | (Takes::One(x), Takes::AllV6) => !v4(x),
        (Takes::One(x), Takes::One(y)) => x == y,
    }
}

/// What IPV6_V6ONLY refuses a bind to local address `a`, as Linux does:
/// EINVAL for an IPv4 (mapped) address, which the socket could then
/// never use.
pub fn v6only_bind(a: u128, v6only: bool) -> Result<(), i32> {
    if v6only && unmapped(a).is_some() {
        return Err(libc::EINVAL);
    }
    Ok(())
}

/// What IPV6_V6ONLY refuses a connect to (or a datagram for) peer `a`,
/// as Linux does: ENETUNREACH for an IPv4 (mapped) peer. A wildcard peer
/// (a UDP socket's disconnect) is never refused.
pub fn v6only_peer(a: u128, v6only: bool) -> Result<(), i32> {
    if v6only && a != mapped(0) && unmapped(a).is_some() {
        return Err(libc::ENETUNREACH);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> u128 {
        mapped(u32::from(s.parse::<Ipv4Addr>().unwrap()))
    }

    fn v6(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    /// An IPv4 header (no options) from 10.0.0.1, then UDP from port
    /// 5353, then `payload`.
    fn ipv4_dgram(payload: &[u8]) -> Vec<u8> {
        let mut d = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        d.extend_from_slice(&[0x14, 0xe9, 0, 53, 0, 0, 0, 0]);
        d.extend_from_slice(payload);
        d
    }

    /// An IPv6 fixed header from fd00::7, `ext` bytes of extension
    /// headers, UDP from port 4242, then `payload`.
    fn ipv6_dgram(ext: usize, payload: &[u8]) -> Vec<u8> {
        let mut d = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        d.extend_from_slice(&v6("fd00::7").to_be_bytes());
        d.extend_from_slice(&v6("fd00::1").to_be_bytes());
        d.extend(std::iter::repeat_n(0, ext));
        d.extend_from_slice(&[0x10, 0x92, 0, 53, 0, 0, 0, 0]);
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn an_ipv4_datagram_comes_from_its_mapped_source() {
        let d = ipv4_dgram(b"hi");
        let s = datagram_source(&d, ethertype::IPV4, 0, 20).unwrap();
        assert_eq!(
            s,
            Source {
                addr: v4("10.0.0.1"),
                port: 5353,
                payload: 28
            }
        );
        assert_eq!(&d[s.payload..], b"hi");
        // An unset ethertype: the header's version says.
        assert_eq!(datagram_source(&d, 0, 0, 20), Some(s));
        // Options: the UDP header further on.
        let mut o = d.clone();
        o[0] = 0x46;
        o.splice(20..20, [1, 1, 1, 0]);
        assert_eq!(
            datagram_source(&o, ethertype::IPV4, 0, 24).unwrap().payload,
            32
        );
    }

    #[test]
    fn an_ipv6_datagram_comes_from_its_source_past_extension_headers() {
        let d = ipv6_dgram(0, b"hello");
        let s = datagram_source(&d, ethertype::IPV6, 0, 40).unwrap();
        assert_eq!(
            s,
            Source {
                addr: v6("fd00::7"),
                port: 4242,
                payload: 48
            }
        );
        assert_eq!(&d[s.payload..], b"hello");
        assert_eq!(datagram_source(&d, 0, 0, 40), Some(s));
        let d = ipv6_dgram(16, b"x");
        let s = datagram_source(&d, ethertype::IPV6, 0, 56).unwrap();
        assert_eq!(
            (s.addr, s.port, &d[s.payload..]),
            (v6("fd00::7"), 4242, &b"x"[..])
        );
    }

    #[test]
    fn short_or_unknown_datagrams_have_no_source() {
        let d = ipv6_dgram(0, b"");
        assert!(datagram_source(&d, ethertype::IPV6, 0, 40).is_some());
        // The window ends inside the UDP header or the IP header.
        assert_eq!(datagram_source(&d[..47], ethertype::IPV6, 0, 40), None);
        assert_eq!(datagram_source(&d[..20], ethertype::IPV6, 0, 40), None);
        // A UDP header inside the IP header.
        assert_eq!(datagram_source(&d, ethertype::IPV6, 0, 20), None);
        assert_eq!(
            datagram_source(&ipv4_dgram(b""), ethertype::IPV4, 0, 12),
            None
        );
        // Neither family, offsets past the end: nothing, no panic.
        assert_eq!(datagram_source(&[0x50; 64], 0, 0, 40), None);
        assert_eq!(datagram_source(&[], 0, 0, 0), None);
        assert_eq!(
            datagram_source(&d, ethertype::IPV6, usize::MAX - 4, 0),
            None
        );
        assert_eq!(
            datagram_source(&d, ethertype::IPV6, 0, usize::MAX - 4),
            None
        );
    }

    #[test]
    fn dual_stack_wildcards_overlap_ipv4_and_v6only_ones_do_not() {
        let (any6, any4) = (0, mapped(0));
        // [::]:p dual-stack against 0.0.0.0:p and 10.0.0.1:p.
        assert!(bindings_overlap(any6, false, any4, false));
        assert!(bindings_overlap(any4, false, any6, false));
        assert!(bindings_overlap(any6, false, v4("10.0.0.1"), false));
        // With IPV6_V6ONLY it takes IPv6 only.
        assert!(!bindings_overlap(any6, true, any4, false));
        assert!(!bindings_overlap(v4("10.0.0.1"), false, any6, true));
        assert!(bindings_overlap(any6, true, v6("fd00::1"), false));
        assert!(bindings_overlap(any6, true, any6, false));
        assert!(bindings_overlap(any6, true, any6, true));
        // IPv4's wildcard takes IPv4 only.
        assert!(bindings_overlap(any4, false, v4("10.0.0.1"), false));
        assert!(!bindings_overlap(any4, false, v6("fd00::1"), false));
        // Specific addresses: only themselves.
        assert!(bindings_overlap(
            v4("10.0.0.1"),
            false,
            v4("10.0.0.1"),
            false
        ));
        assert!(!bindings_overlap(
            v4("10.0.0.1"),
            false,
            v4("10.0.0.2"),
            false
        ));
        assert!(!bindings_overlap(v6("fd00::1"), false, v6("fd00::2"), true));
    }

    #[test]
    fn v6only_refuses_ipv4_as_linux_does() {
        assert_eq!(v6only_bind(v4("10.0.0.1"), true), Err(libc::EINVAL));
        assert_eq!(v6only_bind(mapped(0), true), Err(libc::EINVAL));
        assert_eq!(v6only_bind(0, true), Ok(()));
        assert_eq!(v6only_bind(v4("10.0.0.1"), false), Ok(()));
        assert_eq!(v6only_peer(v4("10.0.0.1"), true), Err(libc::ENETUNREACH));
        assert_eq!(v6only_peer(v6("fd00::1"), true), Ok(()));
        assert_eq!(v6only_peer(v4("10.0.0.1"), false), Ok(()));
        // Disconnecting is not a peer.
        assert_eq!(v6only_peer(mapped(0), true), Ok(()));
        assert_eq!(v6only_peer(0, true), Ok(()));
    }
}
