//! What udpd is told at start, and what it derives from it: which
//! addresses are ours (to check binds), which are broadcasts (to deliver to
//! every socket and never answer with port unreachable), and which of ours
//! a datagram to a given peer leaves from (source address selection).
//!
//! Addresses are `u32` in host order throughout the core, as in
//! [`L4Ctl`](strata_ipc::l4::L4Ctl).

use std::fmt;
use std::net::Ipv4Addr;

use strata_ipc::runtime::StackConfig;

/// Linux's default `ip_local_port_range`.
pub const DEFAULT_EPHEMERAL: (u16, u16) = (32768, 60999);

/// The whole configuration of the UDP core.
#[derive(Clone, Debug)]
pub struct UdpConfig {
    /// The stack's interfaces with their addresses.
    pub ifaces: Vec<IfaceAddrs>,
    /// Configured routes, used only to pick the source address for peers
    /// outside every connected subnet.
    pub routes: Vec<RouteInfo>,
    /// First and last port handed out for ephemeral binds (inclusive).
    pub ephemeral_ports: (u16, u16),
    /// Most bindings at once (the shell passes what its arena holds).
    pub max_bindings: usize,
    /// Seed of the port and IP identification generators; the shell passes
    /// something that differs per start, tests a constant.
    pub seed: u32,
    /// Also report ICMP errors Linux calls soft (network or host
    /// unreachable, time exceeded, fragmentation needed) to connected
    /// sockets, as Linux does only with `IP_RECVERR`. Off by default:
    /// without `IP_RECVERR` Linux reports only hard errors (port and
    /// protocol unreachable, administratively prohibited, parameter
    /// problem).
    pub soft_errors: bool,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            ifaces: Vec::new(),
            routes: Vec::new(),
            ephemeral_ports: DEFAULT_EPHEMERAL,
            max_bindings: 16384,
            seed: 1,
            soft_errors: false,
        }
    }
}

/// One interface's addresses.
#[derive(Clone, Debug)]
pub struct IfaceAddrs {
    /// Interface index.
    pub index: u8,
    /// Addresses with prefix lengths; the first is the interface's primary
    /// (the source of datagrams that leave through it).
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

/// One configured route.
#[derive(Clone, Debug)]
pub struct RouteInfo {
    /// Destination network.
    pub dest: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway, if not directly connected.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface, if fixed.
    pub iface: Option<u8>,
}

/// Why a configuration is unusable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The ephemeral range is empty, reversed or starts at port 0.
    BadEphemeralRange(u16, u16),
    /// `max_bindings` is 0.
    NoBindings,
    /// A prefix length above 32.
    BadPrefix(u8),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadEphemeralRange(a, b) => write!(f, "bad ephemeral port range {a}-{b}"),
            ConfigError::NoBindings => f.write_str("max_bindings is 0"),
            ConfigError::BadPrefix(p) => write!(f, "prefix length {p} above 32"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl UdpConfig {
    /// The configuration of a running stack (the shell's case): its
    /// interfaces, routes and ephemeral range, default limits.
    pub fn from_stack(cfg: &StackConfig) -> UdpConfig {
        UdpConfig {
            ifaces: cfg
                .ifaces
                .iter()
                .map(|i| IfaceAddrs {
                    index: i.index,
                    addrs: i.addrs.clone(),
                })
                .collect(),
            routes: cfg
                .routes
                .iter()
                .map(|r| RouteInfo {
                    dest: r.dest,
                    prefix: r.prefix,
                    gateway: r.gateway,
                    iface: r.iface,
                })
                .collect(),
            ephemeral_ports: cfg.ephemeral_ports,
            ..UdpConfig::default()
        }
    }
}

/// The network mask of a prefix length (0..=32).
fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// 224.0.0.0/4.
pub(crate) fn is_multicast(a: u32) -> bool {
    a >> 28 == 0xe
}

/// One of our addresses.
#[derive(Clone, Copy, Debug)]
struct Addr {
    addr: u32,
    mask: u32,
    prefix: u8,
    /// The subnet's directed broadcast (none for /31 and /32, RFC 3021).
    bcast: Option<u32>,
    /// Index into `Net::primary`.
    iface: usize,
}

/// A route, reduced to what source selection needs.
#[derive(Clone, Copy, Debug)]
struct Route {
    dest: u32,
    mask: u32,
    prefix: u8,
    /// Where it leaves: index into `Net::primary`, if known.
    iface: Option<usize>,
}

/// The stack's addresses as udpd uses them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Net {
    addrs: Vec<Addr>,
    /// Primary address of each interface (0 when it has none).
    primary: Vec<u32>,
    /// Longest prefix first.
    routes: Vec<Route>,
}

impl Net {
    pub fn new(cfg: &UdpConfig) -> Result<Net, ConfigError> {
        let mut net = Net::default();
        for (i, ifc) in cfg.ifaces.iter().enumerate() {
            net.primary
                .push(ifc.addrs.first().map_or(0, |(a, _)| u32::from(*a)));
            for &(a, p) in &ifc.addrs {
                if p > 32 {
                    return Err(ConfigError::BadPrefix(p));
                }
                let addr = u32::from(a);
                let m = mask(p);
                net.addrs.push(Addr {
                    addr,
                    mask: m,
                    prefix: p,
                    bcast: (p <= 30).then_some(addr | !m),
                    iface: i,
                });
            }
        }
        for r in &cfg.routes {
            if r.prefix > 32 {
                return Err(ConfigError::BadPrefix(r.prefix));
            }
            let iface = match (r.iface, r.gateway) {
                (Some(ix), _) => cfg.ifaces.iter().position(|i| i.index == ix),
                (None, Some(gw)) => net.subnet_of(u32::from(gw)).map(|a| a.iface),
                (None, None) => None,
            };
            let m = mask(r.prefix);
            net.routes.push(Route {
                dest: u32::from(r.dest) & m,
                mask: m,
                prefix: r.prefix,
                iface,
            });
        }
        net.routes.sort_by_key(|r| std::cmp::Reverse(r.prefix));
        Ok(net)
    }

    /// Whether `a` is one of our (unicast) addresses.
    pub fn is_local(&self, a: u32) -> bool {
        a != 0 && self.addrs.iter().any(|x| x.addr == a)
    }

    /// Whether `a` is a broadcast (limited or a subnet's) or multicast
    /// address: datagrams to it go to every matching socket and are never
    /// answered with port unreachable.
    pub fn is_group(&self, a: u32) -> bool {
        a == u32::MAX || is_multicast(a) || self.addrs.iter().any(|x| x.bcast == Some(a))
    }

    /// Whether a socket may bind to `a`: any (0), one of ours, or a
    /// broadcast or multicast address (to receive only those), as Linux's
    /// `inet_bind` allows.
    pub fn bindable(&self, a: u32) -> bool {
        a == 0 || self.is_local(a) || self.is_group(a)
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

    /// The source address for a datagram to `dst`: `dst` itself if it is
    /// ours; else the address of ours whose subnet holds `dst`; else the
    /// primary address of the interface the longest matching route leaves
    /// through; else the first address we have; 0 (which ipd fills in)
    /// when we have none.
    pub fn source_for(&self, dst: u32) -> u32 {
        if self.is_local(dst) {
            return dst;
        }
        if let Some(a) = self.subnet_of(dst) {
            return a.addr;
        }
        let via = self
            .routes
            .iter()
            .find(|r| dst & r.mask == r.dest)
            .and_then(|r| r.iface)
            .map_or(0, |i| self.primary[i]);
        if via != 0 {
            return via;
        }
        self.addrs.first().map_or(0, |a| a.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn source_selection_and_address_classes() {
        let cfg = UdpConfig {
            ifaces: vec![
                IfaceAddrs {
                    index: 0,
                    addrs: vec![
                        ("10.0.0.1".parse().unwrap(), 24),
                        ("10.0.1.1".parse().unwrap(), 24),
                    ],
                },
                IfaceAddrs {
                    index: 1,
                    addrs: vec![("192.168.1.1".parse().unwrap(), 24)],
                },
                IfaceAddrs {
                    index: 2,
                    addrs: vec![("172.31.0.1".parse().unwrap(), 32)],
                },
            ],
            routes: vec![
                RouteInfo {
                    dest: "0.0.0.0".parse().unwrap(),
                    prefix: 0,
                    gateway: Some("10.0.0.254".parse().unwrap()),
                    iface: None,
                },
                RouteInfo {
                    dest: "172.16.0.0".parse().unwrap(),
                    prefix: 12,
                    gateway: Some("192.168.1.254".parse().unwrap()),
                    iface: None,
                },
                RouteInfo {
                    dest: "100.64.0.0".parse().unwrap(),
                    prefix: 10,
                    gateway: None,
                    iface: Some(2),
                },
            ],
            ..UdpConfig::default()
        };
        let n = Net::new(&cfg).unwrap();
        assert_eq!(n.source_for(ip("10.0.1.77")), ip("10.0.1.1"));
        assert_eq!(n.source_for(ip("10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(n.source_for(ip("192.168.1.9")), ip("192.168.1.1"));
        assert_eq!(n.source_for(ip("172.20.1.1")), ip("192.168.1.1"));
        assert_eq!(n.source_for(ip("100.64.3.3")), ip("172.31.0.1"));
        assert_eq!(n.source_for(ip("8.8.8.8")), ip("10.0.0.1"));
        assert_eq!(n.source_for(u32::MAX), ip("10.0.0.1"));
        assert!(n.is_group(ip("10.0.1.255")));
        assert!(n.is_group(u32::MAX));
        assert!(n.is_group(ip("239.1.1.1")));
        assert!(!n.is_group(ip("172.31.0.255")), "a /32 has no broadcast");
        assert!(n.bindable(0) && n.bindable(ip("10.0.1.1")) && n.bindable(ip("10.0.0.255")));
        assert!(!n.bindable(ip("10.0.0.2")));
        assert!(!n.is_local(0));
        assert_eq!(Net::new(&UdpConfig::default()).unwrap().source_for(1), 0);
    }
}
