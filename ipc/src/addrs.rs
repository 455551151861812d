//! The stack's own addresses and routes as the transport layers and
//! filterd need them: which addresses are ours, which are subnet
//! broadcasts, and which source address, output interface and MTU a packet
//! to a destination gets. (udpd and tcpd choose sources as Linux's
//! `inet_select_addr` does for a socket that is bound to any address.) The
//! routes are a [`RouteTable`], the same table and lookup ipd forwards by.

use std::net::Ipv4Addr;

use crate::route::{Route, RouteEntry, RouteTable};
use crate::runtime::ConfigError;

/// The network mask of a prefix length, as a host-order integer; lengths
/// past 32 count as 32 rather than panicking. The one definition every
/// layer and the launcher use.
pub fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// The network mask of an IPv6 prefix length, as a 128-bit value;
/// lengths past 128 count as 128. The one definition every layer and the
/// launcher use.
pub fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

/// Whether IPv6 address `a` lies in `net/prefix` (128-bit values).
pub fn in_prefix6(net: u128, prefix: u8, a: u128) -> bool {
    (net ^ a) & mask6(prefix) == 0
}

/// How many leading bits IPv6 addresses `a` and `b` share (RFC 6724 §2.2
/// CommonPrefixLen, over all 128 bits).
pub fn common_prefix6(a: u128, b: u128) -> u8 {
    (a ^ b).leading_zeros() as u8
}

/// IPv4 address `v4` (host order) mapped into IPv6's `::ffff:0:0/96`
/// (RFC 4291 §2.5.5.2), as one 128-bit value: the form in which the
/// socket path carries addresses of either family. `mapped(0)`,
/// `::ffff:0.0.0.0`, is IPv4's "any"; `0`, `::`, is IPv6's.
pub const fn mapped(v4: u32) -> u128 {
    0xffff << 32 | v4 as u128
}

/// The IPv4 address (host order) `a` maps, if it is a mapped one.
pub const fn unmapped(a: u128) -> Option<u32> {
    if a >> 32 == 0xffff {
        Some(a as u32)
    } else {
        None
    }
}

/// Whether 128-bit address `a` is "any" of either family (`::` or
/// `::ffff:0.0.0.0`).
pub const fn is_any(a: u128) -> bool {
    a == 0 || a == mapped(0)
}

/// A 128-bit address as std has it: IPv4 for a mapped one.
pub fn to_ip(a: u128) -> std::net::IpAddr {
    match unmapped(a) {
        Some(v4) => Ipv4Addr::from(v4).into(),
        None => std::net::Ipv6Addr::from(a).into(),
    }
}

/// An address of either family as one 128-bit value (see [`mapped`]).
pub fn from_ip(ip: std::net::IpAddr) -> u128 {
    match ip {
        std::net::IpAddr::V4(a) => mapped(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a),
    }
}

/// 224.0.0.0/4.
pub fn is_multicast(a: u32) -> bool {
    a >> 28 == 0xe
}

/// 127.0.0.0/8: the stack's loopback addresses, which ipd delivers back
/// up without a device, as Linux's `lo` does.
pub fn is_loopback(a: u32) -> bool {
    a >> 24 == 127
}

/// The loopback source address (what Linux's `lo` has).
pub const LOOPBACK: u32 = 0x7f00_0001;

/// The loopback MTU: the largest IPv4 datagram (Linux's `lo` has 65536).
pub const LOOPBACK_MTU: u16 = 65_535;

#[derive(Clone, Copy, Debug)]
struct Addr {
    addr: u32,
    /// The subnet's directed broadcast (none for /31 and /32, RFC 3021).
    bcast: Option<u32>,
    /// Position of the interface.
    iface: usize,
}

/// Addresses and routes, built once at start: add every interface, then
/// every route, then call [`AddrTable::finish`]. Interfaces are numbered
/// by position, the slots of its [`RouteTable`].
#[derive(Clone, Debug, Default)]
pub struct AddrTable {
    addrs: Vec<Addr>,
    /// Interface index as in the handles, by position.
    index: Vec<u8>,
    /// Primary address of each interface (0 when it has none).
    primary: Vec<u32>,
    mtu: Vec<u16>,
    /// Connected routes (one per address) and configured ones, the same
    /// table and lookup ipd forwards by.
    routes: RouteTable,
}

impl AddrTable {
    /// The table of `ifaces` (handle index, addresses with the primary
    /// first, MTU), in order, and `routes`, ready for lookups.
    pub fn build<'a>(
        ifaces: impl IntoIterator<Item = (u8, &'a [(Ipv4Addr, u8)], u16)>,
        routes: &[Route],
    ) -> Result<AddrTable, ConfigError> {
        let mut t = AddrTable::default();
        for (index, addrs, mtu) in ifaces {
            t.add_iface(index, addrs, mtu)?;
        }
        for r in routes {
            t.add_route(r)?;
        }
        t.finish();
        Ok(t)
    }

    /// The table of a running stack's configuration.
    pub fn from_stack(cfg: &crate::runtime::StackConfig) -> Result<AddrTable, ConfigError> {
        let ifaces = cfg.ifaces.iter().map(|i| (i.index, &i.addrs[..], i.mtu));
        AddrTable::build(ifaces, &cfg.routes)
    }

    /// Adds an interface (handle index `index`) with its addresses; the
    /// first address is its primary one. [`ConfigError::BadPrefix`] for a
    /// prefix above 32.
    pub fn add_iface(
        &mut self,
        index: u8,
        addrs: &[(Ipv4Addr, u8)],
        mtu: u16,
    ) -> Result<(), ConfigError> {
        let pos = self.primary.len();
        self.index.push(index);
        self.primary
            .push(addrs.first().map_or(0, |(a, _)| u32::from(*a)));
        self.mtu.push(mtu);
        for &(a, p) in addrs {
            let addr = u32::from(a);
            self.routes
                .add_connected(addr, p, pos)
                .map_err(|_| ConfigError::BadPrefix(p))?;
            self.addrs.push(Addr {
                addr,
                bcast: (p <= 30).then_some(addr | !mask(p)),
                iface: pos,
            });
        }
        Ok(())
    }

    /// Adds a configured route, after every interface. Its interface is
    /// resolved as ipd resolves it ([`RouteTable::resolve`]); one that
    /// cannot be (ipd would refuse the configuration) matches and leads
    /// nowhere. [`ConfigError::BadPrefix`] for a prefix above 32.
    pub fn add_route(&mut self, route: &Route) -> Result<(), ConfigError> {
        let slot = self
            .routes
            .resolve(route, |ix| self.index.iter().position(|&i| i == ix))
            .ok();
        self.routes
            .add(route, slot)
            .map_err(|_| ConfigError::BadPrefix(route.prefix))
    }

    /// Orders the routes for lookups; call once after adding them.
    pub fn finish(&mut self) {
        self.routes.finish();
    }

    /// Whether `a` is one of our (unicast) addresses: a configured one,
    /// or a loopback address.
    pub fn is_local(&self, a: u32) -> bool {
        a != 0 && (is_loopback(a) || self.addrs.iter().any(|x| x.addr == a))
    }

    /// Whether `a` is the directed broadcast of one of our subnets.
    pub fn is_subnet_broadcast(&self, a: u32) -> bool {
        self.addrs.iter().any(|x| x.bcast == Some(a))
    }

    /// The route a packet to `dst` takes: the longest-prefix match over
    /// connected and configured routes ([`RouteTable::lookup`]).
    pub fn route(&self, dst: u32) -> Option<&RouteEntry> {
        self.routes.lookup(dst)
    }

    /// The interface (position) a packet to `dst` leaves through: the one
    /// holding `dst` if it is ours, else the route's.
    fn iface_for(&self, dst: u32) -> Option<usize> {
        if let Some(a) = self.addrs.iter().find(|x| x.addr == dst) {
            return Some(a.iface);
        }
        self.route(dst).and_then(|r| r.slot)
    }

    /// The source address for a packet to `dst`: 127.0.0.1 to a loopback
    /// address; `dst` itself if it is ours; else, if the route to `dst` is a connected one, our address
    /// that implies it; else the primary address of the interface the
    /// route leaves through; else the first address we have; 0 when we
    /// have none.
    pub fn source_for(&self, dst: u32) -> u32 {
        if is_loopback(dst) {
            return LOOPBACK;
        }
        if self.is_local(dst) {
            return dst;
        }
        let via = match self.route(dst) {
            Some(RouteEntry { local: Some(a), .. }) => *a,
            Some(r) => r.slot.map_or(0, |i| self.primary[i]),
            None => 0,
        };
        if via != 0 {
            return via;
        }
        self.addrs.first().map_or(0, |a| a.addr)
    }

    /// The interface (handle index) a packet to `dst` leaves through.
    pub fn out_iface(&self, dst: u32) -> Option<u8> {
        self.iface_for(dst).and_then(|i| self.index.get(i).copied())
    }

    /// The primary address of interface `index` (handle index), 0 if it
    /// has none.
    pub fn primary_of(&self, index: u8) -> u32 {
        self.index
            .iter()
            .position(|&x| x == index)
            .map_or(0, |i| self.primary[i])
    }

    /// The MTU towards `dst` (1500 when unknown), at least 576;
    /// [`LOOPBACK_MTU`] to a loopback address.
    pub fn mtu_for(&self, dst: u32) -> u16 {
        if is_loopback(dst) {
            return LOOPBACK_MTU;
        }
        let m = self
            .iface_for(dst)
            .and_then(|i| self.mtu.get(i).copied())
            .unwrap_or(1500);
        m.max(576)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::test_util::{ip, route};

    #[test]
    fn ipv6_masks_prefixes_and_common_lengths() {
        let a = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        assert_eq!(mask6(0), 0);
        assert_eq!(mask6(64), u128::MAX << 64);
        assert_eq!((mask6(128), mask6(200)), (u128::MAX, u128::MAX));
        assert!(in_prefix6(a("fd00:1::"), 64, a("fd00:1::9")));
        assert!(!in_prefix6(a("fd00:1::"), 64, a("fd00:2::9")));
        assert!(in_prefix6(a("fd00:1::"), 0, a("2001:db8::1")));
        assert_eq!(common_prefix6(a("fd00:aa::1"), a("fd00:bb::1")), 27);
        assert_eq!(common_prefix6(a("::1"), a("::1")), 128);
    }

    fn table(routes: &[Route]) -> AddrTable {
        let mut t = AddrTable::default();
        t.add_iface(3, &[("10.0.0.1".parse().unwrap(), 16)], 1500)
            .unwrap();
        t.add_iface(
            5,
            &[
                ("192.168.1.1".parse().unwrap(), 24),
                ("192.168.2.1".parse().unwrap(), 24),
            ],
            9000,
        )
        .unwrap();
        for r in routes {
            t.add_route(r).unwrap();
        }
        t.finish();
        t
    }

    #[test]
    fn the_loopback_network_is_ours_from_127_0_0_1_at_the_largest_mtu() {
        let t = table(&[]);
        for a in ["127.0.0.1", "127.9.8.7"] {
            assert!(t.is_local(ip(a)), "{a}");
            assert_eq!(t.source_for(ip(a)), LOOPBACK);
            assert_eq!(t.mtu_for(ip(a)), LOOPBACK_MTU);
        }
        assert!(!t.is_local(ip("128.0.0.1")));
        assert!(!t.is_local(0));
    }

    #[test]
    fn source_interface_and_mtu_follow_the_route_ipd_takes() {
        let t = table(&[
            route("0.0.0.0", 0, Some("10.0.0.254"), None),
            // More specific than the connected 10.0/16, through the other
            // interface: ipd sends there, so the source is from there.
            route("10.0.7.0", 24, Some("192.168.2.254"), None),
        ]);
        assert_eq!(t.source_for(ip("10.0.7.9")), ip("192.168.1.1"));
        assert_eq!(t.out_iface(ip("10.0.7.9")), Some(5));
        assert_eq!(t.mtu_for(ip("10.0.7.9")), 9000);
        assert_eq!(t.source_for(ip("10.0.8.9")), ip("10.0.0.1"));
        assert_eq!(t.out_iface(ip("10.0.8.9")), Some(3));
        // A connected route gives the address that implies it.
        assert_eq!(t.source_for(ip("192.168.2.7")), ip("192.168.2.1"));
        assert_eq!(t.source_for(ip("8.8.8.8")), ip("10.0.0.1"));
        assert_eq!(t.out_iface(ip("8.8.8.8")), Some(3));
        // Our own address: itself, on its interface.
        assert_eq!(t.source_for(ip("192.168.2.1")), ip("192.168.2.1"));
        assert_eq!(t.out_iface(ip("192.168.2.1")), Some(5));
        assert_eq!(t.primary_of(5), ip("192.168.1.1"));
        assert_eq!(t.primary_of(4), 0);
    }

    #[test]
    fn without_a_route_the_first_address() {
        let t = table(&[]);
        assert_eq!(t.source_for(ip("8.8.8.8")), ip("10.0.0.1"));
        assert_eq!(t.out_iface(ip("8.8.8.8")), None);
        assert_eq!(t.mtu_for(ip("8.8.8.8")), 1500);
        // A route whose gateway no subnet holds leads nowhere.
        let t = table(&[route("0.0.0.0", 0, Some("172.16.0.1"), None)]);
        assert_eq!(t.out_iface(ip("8.8.8.8")), None);
        assert_eq!(t.source_for(ip("8.8.8.8")), ip("10.0.0.1"));
        assert_eq!(AddrTable::default().source_for(ip("8.8.8.8")), 0);
    }

    #[test]
    fn bad_prefixes_are_refused() {
        let mut t = AddrTable::default();
        assert_eq!(
            t.add_iface(1, &[("10.0.0.1".parse().unwrap(), 33)], 1500),
            Err(ConfigError::BadPrefix(33))
        );
        assert_eq!(
            t.add_route(&route("0.0.0.0", 40, None, Some(1))),
            Err(ConfigError::BadPrefix(40))
        );
    }
}
