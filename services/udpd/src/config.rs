//! What udpd is told at start, and what it derives from it: which
//! addresses are ours (to check binds), which are broadcasts (to deliver to
//! every socket and never answer with port unreachable), and which of ours
//! a datagram to a given peer leaves from (source address selection).
//!
//! Addresses are `u32` in host order throughout the core, as in
//! [`L4Ctl`](strata_ipc::l4::L4Ctl).

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

/// One configured route: the stack's one route type (the launcher writes
/// it, every layer reads it), under the name udpd's API has used.
pub use strata_ipc::route::Route as RouteInfo;

/// Why a configuration is unusable: the error type tcpd and udpd share.
pub use strata_ipc::runtime::ConfigError;

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
            routes: cfg.routes.clone(),
            ephemeral_ports: cfg.ephemeral_ports,
            ..UdpConfig::default()
        }
    }
}

pub(crate) use strata_ipc::addrs::is_multicast;
use strata_ipc::addrs::AddrTable;

/// The stack's addresses as udpd uses them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Net {
    t: AddrTable,
}

impl Net {
    pub fn new(cfg: &UdpConfig) -> Result<Net, ConfigError> {
        // udpd never fragments: the MTU is ipd's business.
        let ifaces = cfg.ifaces.iter().map(|i| (i.index, &i.addrs[..], 1500));
        Ok(Net {
            t: AddrTable::build(ifaces, &cfg.routes)?,
        })
    }

    /// Whether `a` is one of our (unicast) addresses.
    pub fn is_local(&self, a: u32) -> bool {
        self.t.is_local(a)
    }

    /// Whether `a` is a broadcast (limited or a subnet's) or multicast
    /// address: datagrams to it go to every matching socket and are never
    /// answered with port unreachable.
    pub fn is_group(&self, a: u32) -> bool {
        a == u32::MAX || is_multicast(a) || self.t.is_subnet_broadcast(a)
    }

    /// Whether a socket may bind to `a`: any (0), one of ours, or a
    /// broadcast or multicast address (to receive only those), as Linux's
    /// `inet_bind` allows.
    pub fn bindable(&self, a: u32) -> bool {
        a == 0 || self.is_local(a) || self.is_group(a)
    }

    /// The source address for a datagram to `dst` (see
    /// [`AddrTable::source_for`]; 0, which ipd fills in, when we have no
    /// address).
    pub fn source_for(&self, dst: u32) -> u32 {
        self.t.source_for(dst)
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
