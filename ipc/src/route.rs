//! The one model of routes every layer uses: [`Route`], a configured route
//! as the launcher writes it into the runtime configuration and as ipd,
//! tcpd, udpd and filterd read it, and [`RouteTable`], the longest-prefix
//! match over connected and configured routes. ipd forwards by it,
//! [`AddrTable`](crate::addrs::AddrTable) chooses source addresses and
//! output interfaces by it (tcpd, udpd) and filterd takes its FORWARD
//! decision's output interface from it, so they all agree on where a
//! packet goes.
//!
//! Lookup rules ([`RouteTable::lookup`]):
//! 1. the longest matching prefix wins;
//! 2. among equal prefixes a connected route (implied by one of our
//!    addresses) comes before a configured one;
//! 3. among connected routes of equal prefix, the one added first (the
//!    first interface, and on it the first address: the primary) wins;
//!    among configured ones, the first in configuration order.
//!
//! The first matching entry is the answer even if it leads nowhere (a
//! configured route whose interface could not be resolved): a shorter
//! prefix is not tried.
//!
//! Addresses are `u32` in host order in the table, as in
//! [`Handle::nexthop`](crate::Handle).
//!
//! Lookups scale with the number of prefix lengths in use, not of routes:
//! [`PrefixIndex`], which IPv6's route lookups (ipd's, tcpd's, filterd's)
//! use too, keeps a hash map per prefix length from network to route and
//! probes the lengths from the longest down.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::ops::BitAnd;

use serde::{Deserialize, Serialize};

use crate::addrs::mask;

/// One configured route (connected routes are implied by the interfaces'
/// addresses and are not written as routes): an IPv4 one, or with
/// `A = Ipv6Addr` ([`Route6`]) an IPv6 one, which ipd alone routes by.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Route<A = Ipv4Addr> {
    /// Destination network (host bits are ignored).
    pub dest: A,
    /// Prefix length, 0 for the default route.
    pub prefix: u8,
    /// Next-hop router, or `None` for a destination reached directly. An
    /// IPv6 gateway may be link-local, with the interface named.
    pub gateway: Option<A>,
    /// Interface (index) to send on; when `None` it is the one whose
    /// connected subnet holds the gateway (a direct route must name it).
    pub iface: Option<u8>,
}

/// A configured IPv6 route.
pub type Route6 = Route<std::net::Ipv6Addr>;

/// Why a route cannot be added or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// A prefix length above 32.
    BadPrefix(u8),
    /// The route names an interface that is not configured.
    UnknownIface(u8),
    /// A route without a gateway must name its interface (destination,
    /// prefix).
    DirectRouteNeedsIface(Ipv4Addr, u8),
    /// No connected subnet holds this gateway, so no interface reaches it.
    GatewayUnreachable(Ipv4Addr),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::BadPrefix(p) => write!(f, "prefix length {p} above 32"),
            RouteError::UnknownIface(i) => write!(f, "route names unknown interface {i}"),
            RouteError::DirectRouteNeedsIface(d, p) => {
                write!(f, "route {d}/{p} has no gateway and no interface")
            }
            RouteError::GatewayUnreachable(g) => {
                write!(f, "gateway {g} is on no connected subnet")
            }
        }
    }
}

impl std::error::Error for RouteError {}

/// A route in a [`RouteTable`]: masked, its interface resolved to a slot
/// (the interface's position in the order the table's owner numbers them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination network, host bits cleared.
    pub dest: u32,
    /// Network mask of `prefix`.
    pub mask: u32,
    /// Prefix length.
    pub prefix: u8,
    /// Next-hop router, 0 for a destination reached directly.
    pub gateway: u32,
    /// Slot of the interface it leaves through; `None` only for a
    /// configured route whose interface could not be resolved.
    pub slot: Option<usize>,
    /// For a connected route, the address of ours that implies it; `None`
    /// for a configured route.
    pub local: Option<u32>,
}

impl RouteEntry {
    /// Whether `dst` lies in this route's destination network.
    #[inline]
    pub fn matches(&self, dst: u32) -> bool {
        dst & self.mask == self.dest
    }

    /// Whether this route is implied by one of our addresses.
    #[inline]
    pub fn is_connected(&self) -> bool {
        self.local.is_some()
    }

    /// The neighbour a packet to `dst` is handed to: the gateway, or `dst`
    /// itself for a directly reached destination.
    #[inline]
    pub fn nexthop(&self, dst: u32) -> u32 {
        if self.gateway != 0 {
            self.gateway
        } else {
            dst
        }
    }
}

/// Connected and configured routes with one longest-prefix match (the
/// rules are in the [module documentation](self)). Built once per
/// configuration: add the connected routes of every address, then the
/// configured routes, then call [`RouteTable::finish`], which sorts them
/// and indexes them ([`PrefixIndex`]: a lookup costs a hash probe per
/// prefix length in use, whatever the number of routes, and a short
/// table is scanned). Until `finish` a lookup scans the routes in the
/// order added.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// Once [`RouteTable::finish`] ran: longest prefix first, connected
    /// before configured among equals, otherwise in the order added.
    entries: Vec<RouteEntry>,
    /// The connected routes in the order added: what gateways resolve
    /// against ([`RouteTable::connected`]), a handful however many
    /// routes are configured.
    connected: Vec<RouteEntry>,
    /// The index of `entries`, from [`RouteTable::finish`] until the next
    /// route is added.
    index: Option<PrefixIndex<u32>>,
}

impl RouteTable {
    /// Adds the connected route implied by our address `addr/prefix` on
    /// interface `slot`.
    pub fn add_connected(&mut self, addr: u32, prefix: u8, slot: usize) -> Result<(), RouteError> {
        if prefix > 32 {
            return Err(RouteError::BadPrefix(prefix));
        }
        let m = mask(prefix);
        let e = RouteEntry {
            dest: addr & m,
            mask: m,
            prefix,
            gateway: 0,
            slot: Some(slot),
            local: Some(addr),
        };
        self.entries.push(e);
        self.connected.push(e);
        self.index = None;
        Ok(())
    }

    /// The interface slot configured `route` leaves through: the slot of
    /// the interface it names (`slot_of` maps an interface index to its
    /// slot), else that of the connected route holding its gateway (by the
    /// lookup rules, connected routes only: a gateway reached through
    /// another gateway is not a neighbour). Call after every connected
    /// route was added.
    pub fn resolve(
        &self,
        route: &Route,
        slot_of: impl Fn(u8) -> Option<usize>,
    ) -> Result<usize, RouteError> {
        match (route.iface, route.gateway) {
            (Some(i), _) => slot_of(i).ok_or(RouteError::UnknownIface(i)),
            (None, Some(g)) => self
                .connected(u32::from(g))
                .and_then(|e| e.slot)
                .ok_or(RouteError::GatewayUnreachable(g)),
            (None, None) => Err(RouteError::DirectRouteNeedsIface(route.dest, route.prefix)),
        }
    }

    /// Adds configured `route` leaving through interface `slot` (`None`:
    /// unresolved, see [`RouteTable::resolve`]; the route then matches but
    /// leads nowhere).
    pub fn add(&mut self, route: &Route, slot: Option<usize>) -> Result<(), RouteError> {
        if route.prefix > 32 {
            return Err(RouteError::BadPrefix(route.prefix));
        }
        let m = mask(route.prefix);
        self.entries.push(RouteEntry {
            dest: u32::from(route.dest) & m,
            mask: m,
            prefix: route.prefix,
            gateway: route.gateway.map_or(0, u32::from),
            slot,
            local: None,
        });
        self.index = None;
        Ok(())
    }

    /// Orders and indexes the routes for [`RouteTable::lookup`]; call once
    /// after adding them all.
    pub fn finish(&mut self) {
        // Stable: among equal keys the order added stands.
        self.entries
            .sort_by_key(|e| (Reverse(e.prefix), !e.is_connected()));
        // In lookup order, so the index keeps the first of equals.
        self.index = Some(self.entries.iter().map(|e| (e.dest, e.prefix)).collect());
    }

    /// The longest-prefix match for `dst`, by the rules in the
    /// [module documentation](self); `None` when no route matches.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<&RouteEntry> {
        match &self.index {
            Some(ix) => ix.lookup(dst).map(|i| &self.entries[i]),
            None => self.entries.iter().find(|e| e.matches(dst)),
        }
    }

    /// The longest-prefix match for `dst` among connected routes only: our
    /// address whose subnet holds `dst`. Same rules as
    /// [`RouteTable::lookup`], whether or not [`RouteTable::finish`] ran.
    pub fn connected(&self, dst: u32) -> Option<&RouteEntry> {
        self.connected
            .iter()
            .filter(|e| e.matches(dst))
            // `max_by_key` keeps the last of equals: reversed, the first
            // added wins.
            .rev()
            .max_by_key(|e| e.prefix)
    }

    /// Every route, in lookup order once [`RouteTable::finish`] ran.
    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }
}

/// An address as [`PrefixIndex`] keys it: IPv4's as a host-order `u32`,
/// IPv6's as a `u128`.
pub trait PrefixAddr: Copy + Eq + Hash + BitAnd<Output = Self> {
    /// The network mask of prefix length `prefix` (lengths past the
    /// address's width count as the width).
    fn mask(prefix: u8) -> Self;
}

impl PrefixAddr for u32 {
    #[inline]
    fn mask(prefix: u8) -> u32 {
        mask(prefix)
    }
}

impl PrefixAddr for u128 {
    #[inline]
    fn mask(prefix: u8) -> u128 {
        crate::addrs::mask6(prefix)
    }
}

/// Below this many routes [`PrefixIndex::lookup`] scans them rather than
/// probing its hash maps: a compare costs under a nanosecond, a probe
/// some 10 to 20 (measured: with two prefix lengths in use the two break
/// even at about 32 routes).
const SCAN_BELOW: usize = 32;

/// The longest-prefix match over routes of one family, each given as
/// (destination, prefix length) and known by its position in the order
/// given: a lookup answers the position of the route with the longest
/// prefix holding the address, and among routes to the same network the
/// first ([`push`](Self::push)) or the last ([`push_over`](Self::push_over)).
/// Routes are added, never removed: a new configuration makes a new
/// index.
///
/// For each prefix length in use a hash map from network to the route
/// taken for it; a lookup probes them from the longest length down and
/// stops at the first hit, so it costs at most as many probes as there are
/// lengths in use (33 for IPv4, 129 for IPv6; typically a few), however
/// many routes there are. Fewer than 32 routes are scanned instead,
/// longest prefix first.
#[derive(Clone, Debug)]
pub struct PrefixIndex<A> {
    /// Routes added.
    len: usize,
    /// While fewer than [`SCAN_BELOW`]: (prefix length, mask, network,
    /// position) of each, longest prefix first, the route taken first
    /// among routes to one network.
    short: Vec<(u8, A, A, u32)>,
    /// (prefix length, mask, network → position of the route taken) of
    /// each length in use, longest first.
    levels: Vec<(u8, A, HashMap<A, u32>)>,
}

impl<A> Default for PrefixIndex<A> {
    fn default() -> Self {
        PrefixIndex {
            len: 0,
            short: Vec::new(),
            levels: Vec::new(),
        }
    }
}

impl<A: PrefixAddr> PrefixIndex<A> {
    /// Adds route number [`len`](Self::len): `dest/prefix` (host bits of
    /// `dest` are ignored), after the routes to its network added before.
    pub fn push(&mut self, dest: A, prefix: u8) {
        self.add(dest, prefix, false);
    }

    /// [`push`](Self::push), but the route is preferred to the routes to
    /// its network added before (for tables where the last configured of
    /// equals is taken).
    pub fn push_over(&mut self, dest: A, prefix: u8) {
        self.add(dest, prefix, true);
    }

    fn add(&mut self, dest: A, prefix: u8, over: bool) {
        let mask = A::mask(prefix);
        let net = dest & mask;
        let pos = u32::try_from(self.len).expect("fewer than 2^32 routes");
        self.len += 1;
        let at = self.levels.partition_point(|l| l.0 > prefix);
        if self.levels.get(at).is_none_or(|l| l.0 != prefix) {
            self.levels.insert(at, (prefix, mask, HashMap::new()));
        }
        let nets = &mut self.levels[at].2;
        if over {
            nets.insert(net, pos);
        } else {
            nets.entry(net).or_insert(pos);
        }
        if self.len < SCAN_BELOW {
            let at = self
                .short
                .partition_point(|s| s.0 > prefix || (s.0 == prefix && !over));
            self.short.insert(at, (prefix, mask, net, pos));
        } else if !self.short.is_empty() {
            self.short = Vec::new();
        }
    }

    /// The position of the route for `dst`: the longest prefix holding
    /// it, among routes to one network the one taken (see
    /// [`push`](Self::push)); `None` when none holds it.
    #[inline]
    pub fn lookup(&self, dst: A) -> Option<usize> {
        if self.len < SCAN_BELOW {
            return self
                .short
                .iter()
                .find(|&&(_, m, net, _)| dst & m == net)
                .map(|s| s.3 as usize);
        }
        self.levels
            .iter()
            .find_map(|(_, m, nets)| nets.get(&(dst & *m)))
            .map(|&p| p as usize)
    }

    /// Routes added.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no route was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<A: PrefixAddr> FromIterator<(A, u8)> for PrefixIndex<A> {
    fn from_iter<I: IntoIterator<Item = (A, u8)>>(routes: I) -> Self {
        let mut ix = PrefixIndex::default();
        for (dest, prefix) in routes {
            ix.push(dest, prefix);
        }
        ix
    }
}

/// Short ways to write addresses and routes in tests.
#[cfg(test)]
pub(crate) mod test_util {
    use super::Route;
    use std::net::Ipv4Addr;

    /// A dotted-quad address as a host-order `u32`.
    pub fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    /// A route to `d`/`p` via `gw` on `iface`.
    pub fn route(d: &str, p: u8, gw: Option<&str>, iface: Option<u8>) -> Route {
        Route {
            dest: d.parse().unwrap(),
            prefix: p,
            gateway: gw.map(|g| g.parse().unwrap()),
            iface,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{ip, route};
    use super::*;

    /// Interfaces 10 (slot 0) and 20 (slot 1), then `routes`, resolved.
    fn table(addrs: &[(&str, u8, usize)], routes: &[Route]) -> RouteTable {
        let mut t = RouteTable::default();
        for &(a, p, slot) in addrs {
            t.add_connected(ip(a), p, slot).unwrap();
        }
        let slot_of = |i: u8| [10, 20].iter().position(|&x| x == i);
        for r in routes {
            let slot = t.resolve(r, slot_of).unwrap();
            t.add(r, Some(slot)).unwrap();
        }
        t.finish();
        t
    }

    /// (slot, nexthop) of the match for `dst`.
    fn hop(t: &RouteTable, dst: &str) -> Option<(usize, u32)> {
        t.lookup(ip(dst))
            .map(|e| (e.slot.unwrap(), e.nexthop(ip(dst))))
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(
            &[("10.0.0.1", 16, 0), ("192.168.1.1", 24, 1)],
            &[
                route("172.16.0.0", 12, Some("10.0.0.254"), None),
                route("172.16.9.0", 24, Some("192.168.1.254"), None),
                // More specific than the connected 10.0/16: it wins.
                route("10.0.5.0", 24, Some("192.168.1.9"), None),
            ],
        );
        assert_eq!(hop(&t, "172.16.1.1"), Some((0, ip("10.0.0.254"))));
        assert_eq!(hop(&t, "172.16.9.1"), Some((1, ip("192.168.1.254"))));
        assert_eq!(hop(&t, "10.0.5.7"), Some((1, ip("192.168.1.9"))));
        assert_eq!(hop(&t, "10.0.6.7"), Some((0, ip("10.0.6.7"))));
        let e = t.lookup(ip("10.0.6.7")).unwrap();
        assert!(e.is_connected() && e.local == Some(ip("10.0.0.1")));
    }

    #[test]
    fn default_route_catches_the_rest() {
        let t = table(
            &[("10.0.0.1", 24, 0)],
            &[route("0.0.0.0", 0, Some("10.0.0.254"), None)],
        );
        assert_eq!(hop(&t, "8.8.8.8"), Some((0, ip("10.0.0.254"))));
        assert_eq!(hop(&t, "10.0.0.9"), Some((0, ip("10.0.0.9"))));
        // Host bits of a destination are ignored.
        let t = table(
            &[("10.0.0.1", 24, 0)],
            &[route("1.2.3.4", 0, Some("10.0.0.254"), None)],
        );
        assert_eq!(hop(&t, "8.8.8.8"), Some((0, ip("10.0.0.254"))));
    }

    #[test]
    fn ties_go_to_connected_then_to_the_first_added() {
        // A configured route of the connected prefix's length, added
        // first, still loses to the connected one.
        let mut t = RouteTable::default();
        t.add(&route("10.0.0.0", 24, Some("192.168.1.254"), None), Some(1))
            .unwrap();
        t.add_connected(ip("10.0.0.1"), 24, 0).unwrap();
        t.finish();
        assert_eq!(hop(&t, "10.0.0.9"), Some((0, ip("10.0.0.9"))));

        // Two interfaces on one subnet: the first interface's, and on it
        // the first (primary) address's route wins.
        let t = table(
            &[
                ("10.0.0.1", 24, 0),
                ("10.0.0.2", 24, 0),
                ("10.0.0.3", 24, 1),
            ],
            &[],
        );
        assert_eq!(
            t.lookup(ip("10.0.0.9")).unwrap().local,
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            t.connected(ip("10.0.0.9")).unwrap().local,
            Some(ip("10.0.0.1"))
        );

        // Two configured routes of one prefix: the first configured.
        let t = table(
            &[("10.0.0.1", 24, 0), ("192.168.1.1", 24, 1)],
            &[
                route("0.0.0.0", 0, Some("192.168.1.254"), None),
                route("0.0.0.0", 0, Some("10.0.0.254"), None),
            ],
        );
        assert_eq!(hop(&t, "8.8.8.8"), Some((1, ip("192.168.1.254"))));
    }

    #[test]
    fn no_route() {
        let t = table(&[("10.0.0.1", 24, 0)], &[]);
        assert!(t.lookup(ip("8.8.8.8")).is_none());
        assert!(RouteTable::default().lookup(ip("8.8.8.8")).is_none());
        // The first match stands even when it leads nowhere.
        let mut t = table(&[("10.0.0.1", 24, 0)], &[]);
        t.add(&route("0.0.0.0", 0, Some("10.0.0.254"), None), Some(0))
            .unwrap();
        t.add(&route("8.0.0.0", 8, Some("10.9.9.9"), None), None)
            .unwrap();
        t.finish();
        assert_eq!(t.lookup(ip("8.8.8.8")).unwrap().slot, None);
    }

    #[test]
    fn resolution() {
        let mut t = RouteTable::default();
        t.add_connected(ip("10.0.0.1"), 16, 0).unwrap();
        t.add_connected(ip("10.0.1.1"), 24, 1).unwrap();
        let slot_of = |i: u8| [10, 20].iter().position(|&x| x == i);
        // The longest connected prefix holding the gateway.
        let r = route("0.0.0.0", 0, Some("10.0.1.254"), None);
        assert_eq!(t.resolve(&r, slot_of), Ok(1));
        let r = route("0.0.0.0", 0, Some("10.0.2.254"), None);
        assert_eq!(t.resolve(&r, slot_of), Ok(0));
        // A named interface wins over the gateway's subnet.
        let r = route("0.0.0.0", 0, Some("10.0.1.254"), Some(10));
        assert_eq!(t.resolve(&r, slot_of), Ok(0));
        let r = route("1.0.0.0", 8, None, Some(20));
        assert_eq!(t.resolve(&r, slot_of), Ok(1));
        // Configured routes never resolve a gateway.
        t.add(&route("10.9.0.0", 16, Some("10.0.0.9"), None), Some(0))
            .unwrap();
        let r = route("0.0.0.0", 0, Some("10.9.0.1"), None);
        assert_eq!(
            t.resolve(&r, slot_of),
            Err(RouteError::GatewayUnreachable("10.9.0.1".parse().unwrap()))
        );
        let r = route("1.0.0.0", 8, None, Some(7));
        assert_eq!(t.resolve(&r, slot_of), Err(RouteError::UnknownIface(7)));
        let r = route("1.0.0.0", 8, None, None);
        assert!(matches!(
            t.resolve(&r, slot_of),
            Err(RouteError::DirectRouteNeedsIface(_, 8))
        ));
        assert_eq!(
            t.add(&route("1.0.0.0", 33, None, None), None),
            Err(RouteError::BadPrefix(33))
        );
        assert_eq!(t.add_connected(1, 40, 0), Err(RouteError::BadPrefix(40)));
    }

    /// A xorshift generator: the same "random" tables every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// An address of 10.0.0.0/13 (so that routes overlap and most
    /// addresses meet several), or now and then any address.
    fn some_addr(rng: &mut Rng) -> u32 {
        if rng.below(8) == 0 {
            rng.next() as u32
        } else {
            0x0a00_0000 | (rng.next() as u32 & 0x0007_ffff)
        }
    }

    #[test]
    fn the_index_answers_as_a_scan_of_thousands_of_routes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let plens = [0, 8, 13, 16, 20, 22, 24, 24, 24, 25, 28, 30, 32];
        let mut t = RouteTable::default();
        let mut added = Vec::new();
        for i in 0..4000usize {
            let p = plens[rng.below(plens.len() as u64) as usize];
            // Now and then a route to where an earlier one leads.
            let (a, p) = match added.get(rng.below(added.len() as u64 + 1) as usize) {
                Some(&(a, p)) if rng.below(6) == 0 => (a, p),
                _ => (some_addr(&mut rng), p),
            };
            added.push((a, p));
            if rng.below(10) == 0 {
                t.add_connected(a, p, i % 8).unwrap();
            } else {
                let r = Route {
                    dest: Ipv4Addr::from(a),
                    prefix: p,
                    gateway: Some(Ipv4Addr::from(rng.next() as u32)),
                    iface: None,
                };
                let slot = (rng.below(5) != 0).then_some(i % 8);
                t.add(&r, slot).unwrap();
            }
        }
        t.finish();
        // The rules, spelt out over the routes in the order added.
        let by_rules = |dst: u32| {
            let mut best: Option<&RouteEntry> = None;
            let mut order: Vec<&RouteEntry> = t.connected.iter().collect();
            let configured = t.entries().iter().filter(|e| !e.is_connected());
            // `entries` keeps the order added among equal prefixes.
            order.extend(configured);
            for e in order.into_iter().filter(|e| e.matches(dst)) {
                if best.is_none_or(|b| e.prefix > b.prefix) {
                    best = Some(e);
                }
            }
            best.copied()
        };
        let mut hits = 0;
        for _ in 0..100_000 {
            let dst = some_addr(&mut rng);
            let scan = t.entries().iter().find(|e| e.matches(dst)).copied();
            let got = t.lookup(dst).copied();
            assert_eq!(got, scan, "{}", Ipv4Addr::from(dst));
            assert_eq!(got, by_rules(dst), "{}", Ipv4Addr::from(dst));
            hits += usize::from(got.is_some_and(|e| e.prefix > 0));
        }
        assert!(
            hits > 50_000,
            "{hits} addresses matched more than the default"
        );
        // Every route's own network finds it, or one preferred to it.
        for &(a, _) in &added {
            assert_eq!(t.lookup(a).copied(), by_rules(a));
        }
    }

    #[test]
    fn short_and_long_indexes_agree_with_a_scan() {
        // Each size around the switch from scanning to hashing, with the
        // first or the last of equals taken.
        let mut rng = Rng(7);
        let some_addr =
            |rng: &mut Rng| u128::from(rng.below(4)) << 120 | u128::from(rng.next()) << 64;
        for n in [0usize, 1, 2, 31, 32, 33, 80] {
            let routes: Vec<(u128, u8)> = (0..n)
                .map(|_| {
                    let p = [0u8, 8, 16, 32, 48, 64, 64, 128][rng.below(8) as usize];
                    (some_addr(&mut rng), p)
                })
                .collect();
            for over in [false, true] {
                let mut ix = PrefixIndex::default();
                for &(a, p) in &routes {
                    if over {
                        ix.push_over(a, p);
                    } else {
                        ix.push(a, p);
                    }
                }
                assert_eq!(ix.len(), n);
                for _ in 0..2000 {
                    let dst = some_addr(&mut rng);
                    // Longest prefix; the first or the last among equals.
                    let scan = routes
                        .iter()
                        .enumerate()
                        .filter(|(_, &(a, p))| crate::addrs::in_prefix6(a, p, dst))
                        .fold(None, |best: Option<(usize, u8)>, (i, &(_, p))| match best {
                            Some((_, bp)) if bp > p || (bp == p && !over) => best,
                            _ => Some((i, p)),
                        })
                        .map(|(i, _)| i);
                    assert_eq!(ix.lookup(dst), scan, "{n} routes, over {over}, {dst:x}");
                }
            }
        }
    }

    #[test]
    fn a_route_added_after_finish_is_found_by_a_scan() {
        let mut t = RouteTable::default();
        t.add_connected(ip("10.0.0.1"), 24, 0).unwrap();
        t.finish();
        t.add(&route("8.0.0.0", 8, Some("10.0.0.254"), None), Some(0))
            .unwrap();
        assert_eq!(t.lookup(ip("8.8.8.8")).unwrap().prefix, 8);
        t.finish();
        assert_eq!(t.lookup(ip("8.8.8.8")).unwrap().prefix, 8);
    }

    #[test]
    fn route_reads_as_the_runtime_configuration_writes_it() {
        let r = route("10.1.0.0", 16, Some("10.0.0.1"), Some(2));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"dest":"10.1.0.0","prefix":16,"gateway":"10.0.0.1","iface":2}"#
        );
        assert_eq!(serde_json::from_str::<Route>(&json).unwrap(), r);
    }
}
