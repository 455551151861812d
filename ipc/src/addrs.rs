//! The stack's own addresses and routes as the transport layers need
//! them: which addresses are ours, which are subnet broadcasts, and which
//! source address and MTU a packet to a destination gets. (ipd has its
//! full routing table; udpd and tcpd only choose sources, as Linux's
//! `inet_select_addr` does for a socket that is bound to any address.)

use std::net::Ipv4Addr;

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

/// 224.0.0.0/4.
pub fn is_multicast(a: u32) -> bool {
    a >> 28 == 0xe
}

#[derive(Clone, Copy, Debug)]
struct Addr {
    addr: u32,
    mask: u32,
    prefix: u8,
    /// The subnet's directed broadcast (none for /31 and /32, RFC 3021).
    bcast: Option<u32>,
    /// Position of the interface.
    iface: usize,
}

#[derive(Clone, Copy, Debug)]
struct Route {
    dest: u32,
    mask: u32,
    prefix: u8,
    /// Where it leaves: position of the interface, if known.
    iface: Option<usize>,
}

/// Addresses and routes, built once at start.
#[derive(Clone, Debug, Default)]
pub struct AddrTable {
    addrs: Vec<Addr>,
    /// Interface index as in the handles, by position.
    index: Vec<u8>,
    /// Primary address of each interface (0 when it has none).
    primary: Vec<u32>,
    mtu: Vec<u16>,
    /// Longest prefix first, once [`AddrTable::finish`] ran.
    routes: Vec<Route>,
}

impl AddrTable {
    /// Adds an interface (handle index `index`) with its addresses; the
    /// first address is its primary one. Err(prefix) for a prefix above 32.
    pub fn add_iface(&mut self, index: u8, addrs: &[(Ipv4Addr, u8)], mtu: u16) -> Result<(), u8> {
        let pos = self.primary.len();
        self.index.push(index);
        self.primary
            .push(addrs.first().map_or(0, |(a, _)| u32::from(*a)));
        self.mtu.push(mtu);
        for &(a, p) in addrs {
            if p > 32 {
                return Err(p);
            }
            let addr = u32::from(a);
            let m = mask(p);
            self.addrs.push(Addr {
                addr,
                mask: m,
                prefix: p,
                bcast: (p <= 30).then_some(addr | !m),
                iface: pos,
            });
        }
        Ok(())
    }

    /// Adds a route, after every interface. Err(prefix) for a prefix
    /// above 32.
    pub fn add_route(
        &mut self,
        dest: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        iface: Option<u8>,
    ) -> Result<(), u8> {
        if prefix > 32 {
            return Err(prefix);
        }
        let iface = match (iface, gateway) {
            (Some(ix), _) => self.index.iter().position(|&i| i == ix),
            (None, Some(gw)) => self.subnet_of(u32::from(gw)).map(|a| a.iface),
            (None, None) => None,
        };
        let m = mask(prefix);
        self.routes.push(Route {
            dest: u32::from(dest) & m,
            mask: m,
            prefix,
            iface,
        });
        Ok(())
    }

    /// Orders the routes for lookups; call once after adding them.
    pub fn finish(&mut self) {
        self.routes.sort_by_key(|r| std::cmp::Reverse(r.prefix));
    }

    /// Whether `a` is one of our (unicast) addresses.
    pub fn is_local(&self, a: u32) -> bool {
        a != 0 && self.addrs.iter().any(|x| x.addr == a)
    }

    /// Whether `a` is the directed broadcast of one of our subnets.
    pub fn is_subnet_broadcast(&self, a: u32) -> bool {
        self.addrs.iter().any(|x| x.bcast == Some(a))
    }

    /// Our address whose subnet holds `a`, the longest prefix winning.
    fn subnet_of(&self, a: u32) -> Option<&Addr> {
        self.addrs
            .iter()
            .filter(|x| x.prefix > 0 && (a & x.mask) == (x.addr & x.mask))
            // `max_by_key` keeps the last of equals: reversed, the first
            // (the primary) of several addresses on one subnet wins.
            .rev()
            .max_by_key(|x| x.prefix)
    }

    fn route_iface(&self, dst: u32) -> Option<usize> {
        self.routes
            .iter()
            .find(|r| dst & r.mask == r.dest)
            .and_then(|r| r.iface)
    }

    /// The interface (position) a packet to `dst` leaves through.
    fn iface_for(&self, dst: u32) -> Option<usize> {
        if let Some(a) = self.addrs.iter().find(|x| x.addr == dst) {
            return Some(a.iface);
        }
        if let Some(a) = self.subnet_of(dst) {
            return Some(a.iface);
        }
        self.route_iface(dst)
    }

    /// The source address for a packet to `dst`: `dst` itself if it is
    /// ours; else ours whose subnet holds `dst`; else the primary address
    /// of the interface the longest matching route leaves through; else
    /// the first address we have; 0 when we have none.
    pub fn source_for(&self, dst: u32) -> u32 {
        if self.is_local(dst) {
            return dst;
        }
        if let Some(a) = self.subnet_of(dst) {
            return a.addr;
        }
        let via = self.route_iface(dst).map_or(0, |i| self.primary[i]);
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

    /// The MTU towards `dst` (1500 when unknown), at least 576.
    pub fn mtu_for(&self, dst: u32) -> u16 {
        let m = self
            .iface_for(dst)
            .and_then(|i| self.mtu.get(i).copied())
            .unwrap_or(1500);
        m.max(576)
    }
}
