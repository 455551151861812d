//! Interfaces, their addresses, and the routing table: a
//! [`RouteTable`], the stack's one longest-prefix match over connected and
//! configured routes (its rules are in [`strata_ipc::route`]), the same
//! filterd and the transports look routes up in.
//!
//! Addresses are `u32` in host order throughout the core: that is what
//! [`Handle::nexthop`](strata_ipc::Handle) carries and what masks need.

use strata_ipc::route::RouteTable;
use strata_ipc::{HEADROOM, LARGE_BUF};
use strata_proto::MacAddr;

use crate::config::{ConfigError, IfaceConfig, RouteConfig};

pub(crate) use strata_ipc::addrs::{is_multicast, mask};

/// A source address no host may send from (RFC 1122 3.2.1.3, RFC 1812
/// 5.3.7): "this network" 0/8, loopback 127/8, multicast 224/4 and the
/// reserved 240/4, which includes the limited broadcast.
pub(crate) fn is_martian(a: u32) -> bool {
    let top = a >> 24;
    top == 0 || top == 127 || top >= 224
}

/// One of our addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IfAddr {
    pub addr: u32,
    pub mask: u32,
    /// The subnet's directed broadcast, if the subnet has one (a /31 or /32
    /// has none: RFC 3021).
    pub bcast: Option<u32>,
}

/// An interface as the core uses it.
#[derive(Clone, Debug)]
pub(crate) struct Iface {
    pub index: u8,
    pub mac: MacAddr,
    pub addrs: Vec<IfAddr>,
    pub mtu: u16,
}

impl Iface {
    /// The source address for packets leaving through this interface.
    pub fn primary(&self) -> Option<u32> {
        self.addrs.first().map(|a| a.addr)
    }

    /// Whether `a` is one of this interface's addresses.
    pub fn has_addr(&self, a: u32) -> bool {
        self.addrs.iter().any(|x| x.addr == a)
    }

    /// Whether `a` is the directed broadcast of one of this interface's
    /// subnets.
    pub fn is_bcast(&self, a: u32) -> bool {
        self.addrs.iter().any(|x| x.bcast == Some(a))
    }
}

/// Where routing sends a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RouteHit {
    /// Interface slot (index into [`Net::ifaces`]).
    pub slot: usize,
    /// The neighbour to hand the frame to: the gateway or the destination.
    pub nexthop: u32,
}

/// Interfaces and routes.
#[derive(Debug)]
pub(crate) struct Net {
    pub ifaces: Vec<Iface>,
    /// Slot of each interface index, 255 when unknown; a table rather than
    /// a search because it is consulted for every packet.
    slot_of: [u8; 256],
    /// Connected and configured routes, every one resolved to a slot.
    routes: RouteTable,
}

/// Largest MTU whose frames still fit a large pool buffer.
const MAX_MTU: usize = LARGE_BUF - HEADROOM as usize - 14;

impl Net {
    /// Checks and builds interfaces and routes.
    pub fn new(ifaces: &[IfaceConfig], routes: &[RouteConfig]) -> Result<Net, ConfigError> {
        let mut net = Net {
            ifaces: Vec::with_capacity(ifaces.len()),
            slot_of: [u8::MAX; 256],
            routes: RouteTable::default(),
        };
        if ifaces.len() > 254 {
            return Err(ConfigError::BadLimit("ifaces"));
        }
        for ic in ifaces {
            if ic.index == strata_ipc::handle::NO_IFACE {
                return Err(ConfigError::ReservedIfaceIndex);
            }
            if net.slot_of[ic.index as usize] != u8::MAX {
                return Err(ConfigError::DuplicateIface(ic.index));
            }
            if ic.mtu < 68 || ic.mtu as usize > MAX_MTU {
                return Err(ConfigError::BadMtu(ic.index, ic.mtu));
            }
            let mut addrs = Vec::with_capacity(ic.addrs.len());
            for &(a, p) in &ic.addrs {
                if p > 32 {
                    return Err(ConfigError::BadPrefix(p));
                }
                let addr = u32::from(a);
                if is_martian(addr) {
                    return Err(ConfigError::BadAddress(a));
                }
                let m = mask(p);
                addrs.push(IfAddr {
                    addr,
                    mask: m,
                    bcast: (p < 31).then_some(addr | !m),
                });
                net.routes.add_connected(addr, p, net.ifaces.len())?;
            }
            net.slot_of[ic.index as usize] = net.ifaces.len() as u8;
            net.ifaces.push(Iface {
                index: ic.index,
                mac: ic.mac,
                addrs,
                mtu: ic.mtu,
            });
        }
        // Every interface first: a route's gateway resolves against
        // connected routes only.
        for rc in routes {
            if rc.prefix > 32 {
                return Err(ConfigError::BadPrefix(rc.prefix));
            }
            let slot = net.routes.resolve(rc, |i| net.slot(i))?;
            net.routes.add(rc, Some(slot))?;
        }
        net.routes.finish();
        Ok(net)
    }

    /// The slot of interface index `index`.
    #[inline]
    pub fn slot(&self, index: u8) -> Option<usize> {
        match self.slot_of[index as usize] {
            u8::MAX => None,
            s => Some(s as usize),
        }
    }

    /// Where a datagram to `dst` goes: the longest-prefix match
    /// ([`RouteTable::lookup`]).
    pub fn lookup(&self, dst: u32) -> Option<RouteHit> {
        let r = self.routes.lookup(dst)?;
        Some(RouteHit {
            // Every route of ipd's table has its slot (`new` refuses one
            // that does not resolve).
            slot: r.slot?,
            nexthop: r.nexthop(dst),
        })
    }

    /// The slot of the interface holding address `a`, if `a` is ours.
    pub fn local_slot(&self, a: u32) -> Option<usize> {
        self.ifaces.iter().position(|i| i.has_addr(a))
    }

    /// Whether `a` is one of our addresses.
    pub fn is_local(&self, a: u32) -> bool {
        self.local_slot(a).is_some()
    }

    /// Whether `a` is the limited broadcast or the directed broadcast of
    /// any of our subnets.
    pub fn is_bcast(&self, a: u32) -> bool {
        a == u32::MAX || self.ifaces.iter().any(|i| i.is_bcast(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    fn iface(index: u8, addrs: &[(&str, u8)]) -> IfaceConfig {
        IfaceConfig {
            index,
            mac: MacAddr([2, 0, 0, 0, 0, index]),
            addrs: addrs
                .iter()
                .map(|(a, p)| (a.parse().unwrap(), *p))
                .collect(),
            mtu: 1500,
            addrs6: vec![],
            autoconf: false,
        }
    }

    fn route(d: &str, p: u8, gw: Option<&str>, iface: Option<u8>) -> RouteConfig {
        RouteConfig {
            dest: d.parse().unwrap(),
            prefix: p,
            gateway: gw.map(|g| g.parse().unwrap()),
            iface,
        }
    }

    #[test]
    fn longest_prefix_wins_and_default_route_catches_rest() {
        let net = Net::new(
            &[
                iface(1, &[("10.0.0.1", 24)]),
                iface(2, &[("192.168.5.2", 16)]),
            ],
            &[
                route("0.0.0.0", 0, Some("10.0.0.254"), None),
                route("172.16.0.0", 12, Some("192.168.0.1"), None),
                route("172.16.9.0", 24, Some("10.0.0.9"), None),
                route("192.168.77.0", 24, None, Some(1)),
            ],
        )
        .unwrap();
        let hit = |d| net.lookup(ip(d)).unwrap();
        assert_eq!(
            hit("10.0.0.7"),
            RouteHit {
                slot: 0,
                nexthop: ip("10.0.0.7")
            }
        );
        assert_eq!(
            hit("192.168.1.1"),
            RouteHit {
                slot: 1,
                nexthop: ip("192.168.1.1")
            }
        );
        assert_eq!(
            hit("192.168.77.3"),
            RouteHit {
                slot: 0,
                nexthop: ip("192.168.77.3")
            }
        );
        assert_eq!(
            hit("172.17.0.1"),
            RouteHit {
                slot: 1,
                nexthop: ip("192.168.0.1")
            }
        );
        assert_eq!(
            hit("172.16.9.200"),
            RouteHit {
                slot: 0,
                nexthop: ip("10.0.0.9")
            }
        );
        assert_eq!(
            hit("8.8.8.8"),
            RouteHit {
                slot: 0,
                nexthop: ip("10.0.0.254")
            }
        );
        assert!(net.is_local(ip("192.168.5.2")));
        assert!(net.is_bcast(ip("10.0.0.255")));
        assert!(net.is_bcast(ip("192.168.255.255")));
        assert!(net.is_bcast(u32::MAX));
        assert!(!net.is_bcast(ip("10.0.1.255")));
        assert_eq!(net.slot(2), Some(1));
        assert_eq!(net.slot(3), None);
    }

    #[test]
    fn filterd_and_the_transports_see_the_routes_ipd_forwards_by() {
        let ifaces = [
            iface(1, &[("10.0.0.1", 16), ("10.1.0.1", 24)]),
            iface(2, &[("192.168.5.2", 24)]),
            iface(4, &[("172.31.0.1", 32)]),
        ];
        let routes = [
            route("0.0.0.0", 0, Some("10.0.0.254"), None),
            route("10.0.9.0", 24, Some("192.168.5.1"), None),
            route("100.64.0.0", 10, None, Some(4)),
            route("10.1.0.0", 24, Some("192.168.5.9"), None),
        ];
        let net = Net::new(&ifaces, &routes).unwrap();
        let t = strata_ipc::addrs::AddrTable::build(
            ifaces.iter().map(|i| (i.index, &i.addrs[..], i.mtu)),
            &routes,
        )
        .unwrap();
        for d in [
            "10.0.9.1",
            "10.0.8.1",
            "10.1.0.7",
            "192.168.5.77",
            "100.65.0.1",
            "8.8.8.8",
            "172.31.0.2",
        ] {
            let hit = net.lookup(ip(d)).unwrap();
            assert_eq!(t.out_iface(ip(d)), Some(net.ifaces[hit.slot].index), "{d}");
        }
    }

    #[test]
    fn no_default_route_means_no_route() {
        let net = Net::new(&[iface(1, &[("10.0.0.1", 24)])], &[]).unwrap();
        assert!(net.lookup(ip("8.8.8.8")).is_none());
    }

    #[test]
    fn bad_configs_are_refused() {
        let one = [iface(1, &[("10.0.0.1", 24)])];
        assert_eq!(
            Net::new(&one, &[route("0.0.0.0", 0, Some("10.9.0.1"), None)]).unwrap_err(),
            ConfigError::GatewayUnreachable("10.9.0.1".parse().unwrap())
        );
        assert!(matches!(
            Net::new(&one, &[route("1.0.0.0", 8, None, None)]),
            Err(ConfigError::DirectRouteNeedsIface(..))
        ));
        assert!(matches!(
            Net::new(&one, &[route("1.0.0.0", 8, None, Some(7))]),
            Err(ConfigError::UnknownIface(7))
        ));
        assert!(matches!(
            Net::new(&[iface(1, &[]), iface(1, &[])], &[]),
            Err(ConfigError::DuplicateIface(1))
        ));
        assert!(matches!(
            Net::new(&[iface(255, &[])], &[]),
            Err(ConfigError::ReservedIfaceIndex)
        ));
        assert!(matches!(
            Net::new(&[iface(1, &[("127.0.0.1", 8)])], &[]),
            Err(ConfigError::BadAddress(_))
        ));
        let mut small = iface(1, &[]);
        small.mtu = 60;
        assert!(matches!(
            Net::new(&[small], &[]),
            Err(ConfigError::BadMtu(1, 60))
        ));
    }

    #[test]
    fn martians() {
        for a in [
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_martian(ip(a)), "{a}");
        }
        for a in ["1.2.3.4", "10.0.0.1", "223.255.255.255"] {
            assert!(!is_martian(ip(a)), "{a}");
        }
        assert_eq!(mask(0), 0);
        assert_eq!(mask(24), 0xffff_ff00);
        assert_eq!(mask(32), u32::MAX);
    }
}
