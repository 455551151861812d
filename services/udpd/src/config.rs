//! What udpd is told at start, and what it derives from it: which
//! addresses are ours (to check binds), which are broadcasts or multicasts
//! (to deliver to every socket and never answer with port unreachable),
//! and which of ours an IPv4 datagram to a given peer leaves from (source
//! address selection; over IPv6 ipd chooses, RFC 6724).
//!
//! Addresses are `u128` throughout the core, as in
//! [`L4Ctl`](strata_ipc::l4::L4Ctl): IPv4 ones mapped into `::ffff:0:0/96`
//! ([`mapped`]), so that `mapped(0)` is IPv4's any and `0` IPv6's.

use std::net::{Ipv4Addr, Ipv6Addr};

use strata_ipc::addrs::{mapped, unmapped};
use strata_ipc::runtime::StackConfig;
use strata_proto::ndp::link_local_from_mac;
use strata_proto::MacAddr;

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
    /// unreachable, time exceeded, fragmentation needed; ICMPv6 no route,
    /// address unreachable, beyond scope, time exceeded) to connected
    /// sockets, as Linux does only with `IP_RECVERR`/`IPV6_RECVERR`. Off
    /// by default: without them Linux reports only hard errors (port and
    /// protocol unreachable, administratively prohibited, parameter
    /// problem; over IPv6 packet too big too).
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
#[derive(Clone, Debug, Default)]
pub struct IfaceAddrs {
    /// Interface index.
    pub index: u8,
    /// Addresses with prefix lengths; the first is the interface's primary
    /// (the source of datagrams that leave through it).
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// Configured IPv6 addresses with prefix lengths.
    pub addrs6: Vec<(Ipv6Addr, u8)>,
    /// The interface's MAC, from which its link-local address comes
    /// (modified EUI-64, RFC 4291 §2.5.6, as ipd makes it); all zeros:
    /// none.
    pub mac: [u8; 6],
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
                    addrs6: i.addrs6.clone(),
                    mac: i.mac,
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
    /// Our IPv6 unicast addresses: the configured ones and each
    /// interface's link-local one.
    local6: Vec<u128>,
    /// Those ipd made from advertised prefixes ([`Net::set_autoconf`]).
    auto6: Vec<u128>,
}

impl Net {
    pub fn new(cfg: &UdpConfig) -> Result<Net, ConfigError> {
        // udpd never fragments: the MTU is ipd's business.
        let ifaces = cfg.ifaces.iter().map(|i| (i.index, &i.addrs[..], 1500));
        Ok(Net {
            t: AddrTable::build(ifaces, &cfg.routes)?,
            local6: cfg.ifaces.iter().flat_map(addrs6_of).collect(),
            auto6: Vec::new(),
        })
    }

    /// Takes the addresses ipd made from advertised prefixes (SLAAC), in
    /// place of the ones it had: sockets may be bound to them.
    pub fn set_autoconf(&mut self, addrs: impl IntoIterator<Item = Ipv6Addr>) {
        self.auto6.clear();
        self.auto6.extend(addrs.into_iter().map(u128::from));
    }

    /// Whether `a` is one of our unicast addresses (of either family;
    /// `::1` included, as Linux's `lo` has it).
    pub fn is_local(&self, a: u128) -> bool {
        match unmapped(a) {
            Some(v4) => self.t.is_local(v4),
            None => {
                a == u128::from(Ipv6Addr::LOCALHOST)
                    || self.local6.contains(&a)
                    || self.auto6.contains(&a)
            }
        }
    }

    /// Whether `a` is a broadcast (limited or a subnet's) or multicast
    /// address of either family: datagrams to it go to every matching
    /// socket and are never answered with port unreachable (RFC 1122
    /// §4.1.3.1; RFC 4443 §2.4 (e)).
    pub fn is_group(&self, a: u128) -> bool {
        match unmapped(a) {
            Some(v4) => v4 == u32::MAX || is_multicast(v4) || self.t.is_subnet_broadcast(v4),
            None => Ipv6Addr::from(a).is_multicast(),
        }
    }

    /// Whether a socket may bind to `a`: any of either family, one of
    /// ours, or an IPv4 broadcast or multicast address (to receive only
    /// those), as Linux's `inet_bind` allows. IPv6 multicast addresses
    /// are not bindable yet (udpd has no IPv6 group membership).
    pub fn bindable(&self, a: u128) -> bool {
        strata_ipc::addrs::is_any(a)
            || self.is_local(a)
            || (unmapped(a).is_some() && self.is_group(a))
    }

    /// The source address for a datagram to `dst`: for an IPv4 one, see
    /// [`AddrTable::source_for`] (`mapped(0)`, which ipd fills in, when we
    /// have no address); for an IPv6 one `::`, which ipd fills in by RFC
    /// 6724's rules.
    pub fn source_for(&self, dst: u128) -> u128 {
        match unmapped(dst) {
            Some(v4) => mapped(self.t.source_for(v4)),
            None => 0,
        }
    }
}

/// The IPv6 addresses interface `i` has: its configured ones and its
/// link-local one, if it has a MAC.
fn addrs6_of(i: &IfaceAddrs) -> impl Iterator<Item = u128> + '_ {
    let ll = (i.mac != [0; 6]).then(|| u128::from(link_local_from_mac(MacAddr(i.mac))));
    i.addrs6.iter().map(|&(a, _)| u128::from(a)).chain(ll)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u128 {
        match s.parse::<std::net::IpAddr>().unwrap() {
            std::net::IpAddr::V4(a) => mapped(u32::from(a)),
            std::net::IpAddr::V6(a) => u128::from(a),
        }
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
                    addrs6: vec![("2001:db8::1".parse().unwrap(), 64)],
                    mac: [0x02, 0, 0, 0, 0, 0x01],
                },
                IfaceAddrs {
                    index: 1,
                    addrs: vec![("192.168.1.1".parse().unwrap(), 24)],
                    ..IfaceAddrs::default()
                },
                IfaceAddrs {
                    index: 2,
                    addrs: vec![("172.31.0.1".parse().unwrap(), 32)],
                    ..IfaceAddrs::default()
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
        assert_eq!(n.source_for(ip("255.255.255.255")), ip("10.0.0.1"));
        assert!(n.is_group(ip("10.0.1.255")));
        assert!(n.is_group(ip("255.255.255.255")));
        assert!(n.is_group(ip("239.1.1.1")));
        assert!(!n.is_group(ip("172.31.0.255")), "a /32 has no broadcast");
        assert!(
            n.bindable(mapped(0)) && n.bindable(ip("10.0.1.1")) && n.bindable(ip("10.0.0.255"))
        );
        assert!(!n.bindable(ip("10.0.0.2")));
        assert!(!n.is_local(mapped(0)) && !n.is_local(0));
        let none = Net::new(&UdpConfig::default()).unwrap();
        assert_eq!(none.source_for(ip("10.0.0.2")), mapped(0));
    }

    #[test]
    fn addresses_ipd_made_from_advertisements_can_be_bound() {
        let mut n = Net::new(&UdpConfig::default()).unwrap();
        let slaac: Ipv6Addr = "2001:db8:77::5".parse().unwrap();
        assert!(!n.bindable(u128::from(slaac)));
        n.set_autoconf([slaac]);
        assert!(n.bindable(u128::from(slaac)) && n.is_local(u128::from(slaac)));
        n.set_autoconf([]);
        assert!(!n.is_local(u128::from(slaac)));
    }

    #[test]
    fn ipv6_addresses_are_the_configured_the_link_local_and_loopback() {
        let cfg = UdpConfig {
            ifaces: vec![
                IfaceAddrs {
                    index: 1,
                    addrs6: vec![("2001:db8::1".parse().unwrap(), 64)],
                    mac: [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30],
                    ..IfaceAddrs::default()
                },
                IfaceAddrs {
                    index: 2,
                    addrs: vec![("10.0.0.1".parse().unwrap(), 24)],
                    ..IfaceAddrs::default()
                },
            ],
            ..UdpConfig::default()
        };
        let n = Net::new(&cfg).unwrap();
        // The MAC's modified EUI-64, U/L bit flipped (RFC 4291 §2.5.1).
        for a in ["2001:db8::1", "fe80::5eff:fe10:2030", "::1", "::"] {
            assert!(n.bindable(ip(a)), "{a}");
        }
        for a in ["::1", "2001:db8::1", "fe80::5eff:fe10:2030"] {
            assert!(n.is_local(ip(a)), "{a}");
        }
        // Not ours: another host's, another MAC's link-local (the one
        // without a MAC has none), and IPv6 multicast (not yet).
        for a in [
            "2001:db8::2",
            "fe80::1",
            "fe80::200:ff:fe00:0",
            "ff02::1",
            "ff05::1:3",
        ] {
            assert!(!n.bindable(ip(a)), "{a}");
        }
        assert!(n.is_group(ip("ff02::1")) && !n.is_group(ip("2001:db8::1")));
        assert_eq!(n.source_for(ip("2001:db8::2")), 0, "ipd chooses");
    }
}
