//! The routing decision filterd makes for an IPv6 packet on the way in:
//! INPUT (for the stack) or FORWARD (through it, and out of which
//! interface), the IPv6 counterpart of `strata_ipc::addrs::AddrTable`.
//!
//! ipd alone knows every IPv6 address it holds: besides the configured
//! ones it makes a link-local address (RFC 4291 §2.5.6) and, with
//! autoconfiguration, addresses from advertised prefixes (RFC 4862 §5.5.3),
//! both ending in the interface identifier of the interface's MAC
//! (RFC 4291 §2.5.1, RFC 2464 §4). So a destination is ours when it is
//! configured, ends in one of our interface identifiers, is link-local
//! (never forwarded, RFC 4291 §2.5.6) or multicast (the groups ipd
//! listens to; it forwards none), and when the stack does not forward at
//! all: then every packet ipd keeps is for it, and INPUT's rules must see
//! them all. The outgoing interface of a forwarded packet comes from the
//! on-link prefixes and the configured routes (routes learnt from router
//! advertisements are ipd's alone: through them `-o` matches nothing).

use std::net::Ipv6Addr;
use strata_ipc::addrs::{common_prefix6, mask6};
use strata_ipc::route::{PrefixIndex, Route6};
use strata_ipc::runtime::StackConfig;
use strata_proto::ethernet::MacAddr;
use strata_proto::ndp::interface_id;

/// A prefix and the interface (handle index) it is reached through.
#[derive(Clone, Copy, Debug)]
struct Prefix {
    net: u128,
    plen: u8,
    iface: u8,
}

/// Our IPv6 addresses and routes as filterd needs them.
#[derive(Clone, Debug, Default)]
pub struct Local6 {
    own: Vec<u128>,
    /// Configured addresses with their interface, in configuration order.
    by_iface: Vec<(u8, u128)>,
    iids: Vec<u64>,
    /// The prefixes of our addresses: a few, scanned.
    on_link: Vec<Prefix>,
    /// The interface (handle index) and prefix length of each configured
    /// route that has an interface, in configuration order, and their
    /// longest-prefix index.
    routes: Vec<(u8, u8)>,
    index: PrefixIndex<u128>,
    forwarding: bool,
}

impl Local6 {
    /// An empty table; `forwarding`: whether ipd forwards.
    pub fn new(forwarding: bool) -> Local6 {
        Local6 {
            forwarding,
            ..Local6::default()
        }
    }

    /// The table of a running stack's configuration.
    pub fn from_stack(cfg: &StackConfig) -> Local6 {
        let mut t = Local6::new(cfg.forwarding);
        for i in &cfg.ifaces {
            t.add_iface(i.index, i.mac, &i.addrs6);
        }
        for r in &cfg.routes6 {
            t.add_route(r);
        }
        t
    }

    /// Interface `index` with MAC `mac` and configured addresses `addrs`
    /// (their prefixes are on-link).
    pub fn add_iface(&mut self, index: u8, mac: [u8; 6], addrs: &[(Ipv6Addr, u8)]) {
        let iid = interface_id(MacAddr(mac));
        self.iids.push(u64::from_be_bytes(iid));
        for &(a, plen) in addrs {
            let a = u128::from(a);
            self.own.push(a);
            self.by_iface.push((index, a));
            self.on_link.push(Prefix {
                net: a & mask6(plen),
                plen: plen.min(128),
                iface: index,
            });
        }
    }

    /// A configured route: by its interface, else by the on-link prefix
    /// holding its gateway.
    pub fn add_route(&mut self, r: &Route6) {
        let iface = r.iface.or_else(|| {
            r.gateway
                .and_then(|g| self.out_iface_of(u128::from(g), true))
        });
        if let Some(iface) = iface {
            let plen = r.prefix.min(128);
            self.routes.push((iface, plen));
            self.index.push(u128::from(r.dest), plen);
        }
    }

    /// The address NAT uses on interface `iface` towards `peer`
    /// (MASQUERADE: the outgoing interface and the destination; REDIRECT:
    /// the incoming interface and the source): among the interface's
    /// configured global addresses (not link-local, not multicast) the one
    /// sharing the longest prefix with `peer` (RFC 6724 rule 8), the first
    /// configured among equals; 0 when the interface has none.
    pub fn nat_addr(&self, iface: u8, peer: u128) -> u128 {
        self.by_iface
            .iter()
            .filter(|&&(i, a)| {
                let ip = Ipv6Addr::from(a);
                i == iface && !ip.is_unicast_link_local() && !ip.is_multicast() && a != 0
            })
            .fold(None, |best: Option<(u8, u128)>, &(_, a)| {
                let common = common_prefix6(a, peer);
                match best {
                    Some((b, _)) if b >= common => best,
                    _ => Some((common, a)),
                }
            })
            .map_or(0, |(_, a)| a)
    }

    /// Whether a packet to `dst` is for the stack (INPUT) rather than
    /// forwarded.
    pub fn is_local(&self, dst: u128) -> bool {
        let a = Ipv6Addr::from(dst);
        !self.forwarding
            || a.is_multicast()
            || a.is_unicast_link_local()
            || self.own.contains(&dst)
            || self.iids.contains(&(dst as u64))
    }

    /// The interface a forwarded packet to `dst` leaves by (longest
    /// prefix), if a known route covers it.
    pub fn out_iface(&self, dst: u128) -> Option<u8> {
        self.out_iface_of(dst, false)
    }

    /// [`out_iface`](Self::out_iface), among on-link prefixes only when
    /// `on_link_only`.
    fn out_iface_of(&self, dst: u128, on_link_only: bool) -> Option<u8> {
        // The longest prefix; among equal ones the first, on-link first.
        let on_link = self
            .on_link
            .iter()
            .filter(|p| dst & mask6(p.plen) == p.net)
            .fold(None, |best: Option<&Prefix>, p| match best {
                Some(b) if b.plen >= p.plen => Some(b),
                _ => Some(p),
            });
        let routed = (!on_link_only)
            .then(|| self.index.lookup(dst))
            .flatten()
            .map(|i| self.routes[i])
            .filter(|&(_, plen)| on_link.is_none_or(|p| plen > p.plen));
        routed.map(|(iface, _)| iface).or(on_link.map(|p| p.iface))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    #[test]
    fn ours_and_forwarded() {
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let mut t = Local6::new(true);
        t.add_iface(0, mac, &[("2001:db8:1::1".parse().unwrap(), 64)]);
        t.add_iface(1, [0x02, 0, 0, 0, 0, 0x02], &[]);
        t.add_route(&Route6 {
            dest: "2001:db8:9::".parse().unwrap(),
            prefix: 48,
            gateway: Some("2001:db8:1::fe".parse().unwrap()),
            iface: None,
        });
        assert!(t.is_local(a("2001:db8:1::1")));
        assert!(t.is_local(a("ff02::1:ff00:1")));
        assert!(t.is_local(a("fe80::1234")));
        // A SLAAC address: an advertised prefix and our identifier.
        assert!(t.is_local(a("2001:db8:77::ff:fe00:1")));
        assert!(!t.is_local(a("2001:db8:1::2")));
        assert_eq!(t.out_iface(a("2001:db8:1::2")), Some(0));
        assert_eq!(t.out_iface(a("2001:db8:9::5")), Some(0));
        assert_eq!(t.out_iface(a("2001:db8:5::5")), None);
        // Without forwarding every packet ipd keeps is for the stack.
        assert!(Local6::new(false).is_local(a("2001:db8:1::2")));
    }

    #[test]
    fn the_route_index_answers_as_a_scan_of_thousands_of_routes() {
        // xorshift: the same routes every run.
        let mut x = 0x853c_49e6_748f_ea9b_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // fd00::/16 with a few bits of variety, so that prefixes overlap.
        let addr =
            |n: u64| 0xfd00_u128 << 112 | u128::from(n & 0xfff) << 100 | u128::from(n >> 40) << 64;
        let mut t = Local6::new(true);
        let own = [(Ipv6Addr::from(addr(1)), 32), (Ipv6Addr::from(addr(2)), 64)];
        t.add_iface(0, [0x02, 0, 0, 0, 0, 1], &own);
        t.add_iface(1, [0x02, 0, 0, 0, 0, 2], &[(Ipv6Addr::from(addr(3)), 48)]);
        // What the routes were before the index: on-link prefixes, then
        // each route with an interface, the first of the longest taken.
        let mut scan: Vec<Prefix> = t.on_link.clone();
        let plens = [0u8, 16, 24, 32, 48, 48, 64, 64, 112, 128];
        let mut dests: Vec<u128> = Vec::new();
        for i in 0..3000u64 {
            let r = next();
            let plen = plens[(r % plens.len() as u64) as usize];
            // Now and then a second route to an earlier one's network.
            let dest = match dests.get((r >> 8) as usize % (dests.len() + 1)) {
                Some(&d) if r >> 32 & 7 == 0 => d,
                _ => addr(next()),
            };
            dests.push(dest);
            let route = Route6 {
                dest: Ipv6Addr::from(dest),
                prefix: plen,
                gateway: Some(Ipv6Addr::from(addr(next()))),
                iface: (r >> 40 & 3 != 0).then_some((i % 4) as u8),
            };
            t.add_route(&route);
            let iface = route
                .iface
                .or_else(|| t.out_iface_of(u128::from(route.gateway.unwrap()), true));
            if let Some(iface) = iface {
                scan.push(Prefix {
                    net: dest & mask6(plen),
                    plen,
                    iface,
                });
            }
        }
        let mut hits = 0;
        for _ in 0..50_000 {
            let dst = addr(next());
            let want = scan
                .iter()
                .filter(|p| dst & mask6(p.plen) == p.net)
                .fold(None, |best: Option<&Prefix>, p| match best {
                    Some(b) if b.plen >= p.plen => Some(b),
                    _ => Some(p),
                })
                .map(|p| (p.iface, p.plen));
            assert_eq!(
                t.out_iface(dst),
                want.map(|w| w.0),
                "{}",
                Ipv6Addr::from(dst)
            );
            hits += usize::from(want.is_some_and(|w| w.1 > 16));
        }
        assert!(
            hits > 25_000,
            "{hits} addresses matched more than fd00::/16"
        );
    }

    #[test]
    fn nat_address_by_longest_prefix() {
        let mut t = Local6::new(true);
        let addrs = [
            ("fe80::1".parse().unwrap(), 64),
            ("2001:db8:1::1".parse().unwrap(), 64),
            ("fd00:5::1".parse().unwrap(), 64),
        ];
        t.add_iface(0, [0x02, 0, 0, 0, 0, 1], &addrs);
        t.add_iface(1, [0x02, 0, 0, 0, 0, 2], &[]);
        assert_eq!(t.nat_addr(0, a("fd00:5:9::7")), a("fd00:5::1"));
        assert_eq!(t.nat_addr(0, a("2001:db8:77::1")), a("2001:db8:1::1"));
        // Nothing shares a prefix: the first configured global address.
        assert_eq!(t.nat_addr(0, a("4000::1")), a("2001:db8:1::1"));
        // Link-local addresses are never used, even towards link-local.
        assert_eq!(t.nat_addr(0, a("fe80::99")), a("fd00:5::1"));
        assert_eq!(t.nat_addr(1, a("2001:db8::1")), 0);
        assert_eq!(t.nat_addr(7, a("2001:db8::1")), 0);
    }
}
