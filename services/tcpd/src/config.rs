//! What tcpd is told at start: the stack's addresses (to check binds and
//! pick source addresses), interface MTUs (to clamp the MSS), socket
//! buffer sizes (the credits), protocol timers and limits, and the secret
//! of the keyed hashes.
//!
//! Addresses are `u128` throughout the core, as in
//! [`L4Ctl`](strata_ipc::l4::L4Ctl): IPv4 ones mapped into `::ffff:0:0/96`
//! ([`mapped`]), IPv6 ones as they are. Times are in milliseconds here and
//! in nanoseconds inside the core.

use std::net::{Ipv4Addr, Ipv6Addr};

use strata_ipc::addrs::{mapped, unmapped};
use strata_ipc::runtime::StackConfig;
use strata_proto::ndp::link_local_from_mac;
use strata_proto::MacAddr;

use crate::cc::CcAlgo;

/// Linux's default `ip_local_port_range`.
pub const DEFAULT_EPHEMERAL: (u16, u16) = (32768, 60999);

/// The whole configuration of the TCP core.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// The stack's interfaces with their addresses and MTUs.
    pub ifaces: Vec<IfaceAddrs>,
    /// Configured routes, used to pick the source address (and MTU) for
    /// peers outside every connected subnet.
    pub routes: Vec<RouteInfo>,
    /// Configured IPv6 routes, used to pick the interface (and MTU) for
    /// IPv6 peers outside every on-link prefix.
    pub routes6: Vec<Route6>,
    /// First and last port handed out for ephemeral binds (inclusive).
    pub ephemeral_ports: (u16, u16),
    /// Bytes of each socket's receive ring: the initial receive credit,
    /// and what the window scale is chosen from.
    pub socket_rx_bytes: u32,
    /// Receive buffer a connection starts with; auto-tuning grows it
    /// towards `socket_rx_bytes` as fast as the application reads (Linux
    /// starts at `tcp_rmem[1]`, 128 KiB, offering half).
    pub rcvbuf_initial: u32,
    /// Bytes of each socket's send ring: the send credit sockd starts with.
    pub socket_tx_bytes: u32,
    /// Key of the keyed hashes (ISNs per RFC 6528, SYN cookies, timestamp
    /// offsets). The shell draws it once per stack and keeps it across
    /// restarts of tcpd.
    pub secret: [u64; 2],
    /// Seed of the ephemeral-port and IP-identification generators.
    pub seed: u32,
    /// Most connection blocks in use at once (sockets, listeners,
    /// connections); capped by the storage given to the core.
    pub max_conns: usize,
    /// Most payload bytes held in queues (send, receive, out of order)
    /// across all connections.
    pub max_queued_bytes: u64,
    /// Most out-of-order segments kept across all connections, each
    /// holding a pool buffer however small it is. tcpd's shell sets a
    /// quarter of the pool, so that peers leaving holes cannot take the
    /// buffers in-order data, sends and the other layers need.
    pub max_ooo_segs: u64,
    /// Upper bound of a listener's SYN queue (Linux `tcp_max_syn_backlog`);
    /// the queue also never exceeds the listen backlog.
    pub max_syn_backlog: u32,
    /// Answer SYNs with cookies when a SYN queue overflows (Linux
    /// `tcp_syncookies = 1`).
    pub syn_cookies: bool,
    /// Maximum segment lifetime; TIME-WAIT lasts 2·MSL (default 30 s, so
    /// TIME-WAIT lasts Linux's 60 s).
    pub msl_ms: u64,
    /// How long an orphaned connection may stay in FIN-WAIT-2 (Linux
    /// `tcp_fin_timeout`, 60 s).
    pub fin_timeout_ms: u64,
    /// Lower bound of the retransmission timeout (Linux 200 ms).
    pub rto_min_ms: u64,
    /// Retransmission timeout before any RTT sample (RFC 6298: 1 s).
    pub rto_initial_ms: u64,
    /// Upper bound of the retransmission timeout (Linux 120 s).
    pub rto_max_ms: u64,
    /// SYN retransmissions before a connect fails (Linux `tcp_syn_retries`).
    pub syn_retries: u32,
    /// SYN-ACK retransmissions before a half-open connection is dropped
    /// (Linux `tcp_synack_retries`).
    pub synack_retries: u32,
    /// Retransmissions of data before the connection fails with ETIMEDOUT
    /// (Linux `tcp_retries2`).
    pub max_retries: u32,
    /// Delayed-ACK timeout (Linux's minimum, 40 ms).
    pub delack_ms: u64,
    /// Keep-alive idle time (Linux `tcp_keepalive_time`, 7200 s).
    pub keepalive_idle_ms: u64,
    /// Keep-alive probe interval (Linux `tcp_keepalive_intvl`, 75 s).
    pub keepalive_intvl_ms: u64,
    /// Unanswered keep-alive probes before the connection fails (Linux
    /// `tcp_keepalive_probes`, 9).
    pub keepalive_probes: u32,
    /// Challenge ACKs sent per second at most (Linux
    /// `tcp_challenge_ack_limit`).
    pub challenge_ack_limit: u32,
    /// Congestion control of new connections.
    pub congestion: CcAlgo,
    /// Initial congestion window in segments (RFC 6928: 10).
    pub initial_cwnd: u32,
    /// Offer window scaling (RFC 7323).
    pub window_scaling: bool,
    /// Offer timestamps (RFC 7323).
    pub timestamps: bool,
    /// Offer SACK (RFC 2018).
    pub sack: bool,
    /// Send tail loss probes (RFC 8985 §7; Linux `tcp_early_retrans`).
    pub tail_loss_probe: bool,
    /// Send new data in super-segments of up to 64 KiB (TSO), each cut
    /// into MSS-sized segments by the device or, without offloads, by
    /// driverd; retransmissions stay one MSS each.
    pub tso: bool,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            ifaces: Vec::new(),
            routes: Vec::new(),
            routes6: Vec::new(),
            ephemeral_ports: DEFAULT_EPHEMERAL,
            socket_rx_bytes: 256 * 1024,
            rcvbuf_initial: 64 * 1024,
            socket_tx_bytes: 256 * 1024,
            secret: [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210],
            seed: 1,
            max_conns: 16384,
            max_queued_bytes: 1 << 30,
            max_ooo_segs: u64::MAX,
            max_syn_backlog: 4096,
            syn_cookies: true,
            msl_ms: 30_000,
            fin_timeout_ms: 60_000,
            rto_min_ms: 200,
            rto_initial_ms: 1000,
            rto_max_ms: 120_000,
            syn_retries: 6,
            synack_retries: 5,
            max_retries: 15,
            delack_ms: 40,
            keepalive_idle_ms: 7_200_000,
            keepalive_intvl_ms: 75_000,
            keepalive_probes: 9,
            challenge_ack_limit: 1000,
            congestion: CcAlgo::Cubic,
            initial_cwnd: 10,
            window_scaling: true,
            timestamps: true,
            sack: true,
            tail_loss_probe: true,
            tso: true,
        }
    }
}

/// One interface's addresses.
#[derive(Clone, Debug, Default)]
pub struct IfaceAddrs {
    /// Interface index.
    pub index: u8,
    /// MTU (IP bytes): the MSS offered on connections through it is this
    /// less 40 over IPv4, less 60 over IPv6.
    pub mtu: u16,
    /// Addresses with prefix lengths; the first is the interface's primary.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// Configured IPv6 addresses with prefix lengths.
    pub addrs6: Vec<(Ipv6Addr, u8)>,
    /// The interface's MAC, from which its link-local address comes
    /// (modified EUI-64, RFC 4291 §2.5.6, as ipd makes it); all zeros:
    /// none.
    pub mac: [u8; 6],
}

/// One configured route: the stack's one route type (the launcher writes
/// it, every layer reads it), under the name tcpd's API has used.
pub use strata_ipc::route::Route as RouteInfo;

/// One configured IPv6 route.
pub use strata_ipc::route::Route6;

/// Why a configuration (or the storage given with it) is unusable: the
/// error type tcpd and udpd share.
pub use strata_ipc::runtime::ConfigError;

impl TcpConfig {
    /// The configuration of a running stack (the shell's case): its
    /// interfaces, routes, ephemeral range and socket sizes, default
    /// protocol settings. The shell sets `secret` and `seed`.
    pub fn from_stack(cfg: &StackConfig) -> TcpConfig {
        TcpConfig {
            ifaces: cfg
                .ifaces
                .iter()
                .map(|i| IfaceAddrs {
                    index: i.index,
                    mtu: i.mtu,
                    addrs: i.addrs.clone(),
                    addrs6: i.addrs6.clone(),
                    mac: i.mac,
                })
                .collect(),
            routes: cfg.routes.clone(),
            routes6: cfg.routes6.clone(),
            ephemeral_ports: cfg.ephemeral_ports,
            socket_rx_bytes: cfg.socket_rx_bytes,
            socket_tx_bytes: cfg.socket_tx_bytes,
            ..TcpConfig::default()
        }
    }
}

use strata_ipc::addrs::{common_prefix6, in_prefix6, AddrTable, LOOPBACK_MTU};
use strata_ipc::route::PrefixIndex;

/// The IPv6 minimum link MTU (RFC 8200 §5): no path is assumed smaller.
pub const IPV6_MIN_MTU: u16 = 1280;

/// One of our IPv6 addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Addr6 {
    addr: u128,
    /// Its prefix (128 for a link-local address, whose link is named by
    /// the interface, not by a prefix).
    prefix: u8,
    /// Position of its interface in [`Net::mtu6`].
    iface: usize,
}

/// The stack's addresses as tcpd uses them: IPv4 in an [`AddrTable`] (the
/// one every layer uses), IPv6 in a short list of our addresses and the
/// configured routes (ipd alone routes IPv6; tcpd only needs a source
/// and an MTU).
#[derive(Clone, Debug, Default)]
pub(crate) struct Net {
    t: AddrTable,
    /// Our IPv6 addresses: each interface's configured ones, then its
    /// link-local one (the first `own6`), then those ipd made from
    /// advertised prefixes ([`Net::set_autoconf`]).
    v6: Vec<Addr6>,
    /// How many of `v6` come from the configuration.
    own6: usize,
    /// Each interface's index, by position.
    index: Vec<u8>,
    /// Each interface's MTU, by position.
    mtu6: Vec<u16>,
    /// Configured IPv6 routes and the position of the interface each
    /// leaves through (`None`: unknown).
    routes6: Vec<(Route6, Option<usize>)>,
    /// Over `routes6` (among routes to one network the last configured is
    /// taken, as ipd takes it).
    index6: PrefixIndex<u128>,
}

/// Whether `a` is an IPv6 link-local unicast address (`fe80::/10`).
fn is_link_local6(a: u128) -> bool {
    strata_proto::ndp::is_link_local(Ipv6Addr::from(a))
}

/// `::1`.
const LOOPBACK6: u128 = 1;

impl Net {
    pub fn new(cfg: &TcpConfig) -> Result<Net, ConfigError> {
        let ifaces = cfg.ifaces.iter().map(|i| (i.index, &i.addrs[..], i.mtu));
        let mut v6 = Vec::new();
        for (pos, i) in cfg.ifaces.iter().enumerate() {
            for &(a, p) in &i.addrs6 {
                v6.push(Addr6 {
                    addr: u128::from(a),
                    prefix: p.min(128),
                    iface: pos,
                });
            }
            if i.mac != [0; 6] {
                let ll = link_local_from_mac(MacAddr(i.mac));
                v6.push(Addr6 {
                    addr: u128::from(ll),
                    prefix: 128,
                    iface: pos,
                });
            }
        }
        let slot_of = |ix: u8| cfg.ifaces.iter().position(|i| i.index == ix);
        let routes6: Vec<(Route6, Option<usize>)> = cfg
            .routes6
            .iter()
            .map(|r| {
                let via = match (r.iface, r.gateway) {
                    (Some(ix), _) => slot_of(ix),
                    (None, Some(g)) => Self::on_link(&v6, u128::from(g)),
                    (None, None) => None,
                };
                (*r, via)
            })
            .collect();
        let mut index6 = PrefixIndex::default();
        for (r, _) in &routes6 {
            index6.push_over(u128::from(r.dest), r.prefix);
        }
        Ok(Net {
            t: AddrTable::build(ifaces, &cfg.routes)?,
            own6: v6.len(),
            index: cfg.ifaces.iter().map(|i| i.index).collect(),
            v6,
            mtu6: cfg.ifaces.iter().map(|i| i.mtu).collect(),
            routes6,
            index6,
        })
    }

    /// Takes the addresses ipd made from advertised prefixes (SLAAC), as
    /// interface index, address and prefix length, in place of the ones
    /// it had; those of unknown interfaces are left out. True when they
    /// changed.
    pub fn set_autoconf(&mut self, addrs: &[(u8, Ipv6Addr, u8)]) -> bool {
        let learnt: Vec<Addr6> = addrs
            .iter()
            .filter_map(|&(ix, a, p)| {
                Some(Addr6 {
                    addr: u128::from(a),
                    prefix: p.min(128),
                    iface: self.index.iter().position(|&i| i == ix)?,
                })
            })
            .collect();
        if self.v6[self.own6..] == learnt[..] {
            return false;
        }
        self.v6.truncate(self.own6);
        self.v6.extend(learnt);
        true
    }

    /// The interface (position) whose prefix holds `a`, the longest one.
    fn on_link(v6: &[Addr6], a: u128) -> Option<usize> {
        v6.iter()
            .filter(|x| x.prefix < 128 && in_prefix6(x.addr, x.prefix, a))
            .max_by_key(|x| x.prefix)
            .map(|x| x.iface)
    }

    /// Whether `a` is one of our unicast addresses, of either family:
    /// IPv4 as [`AddrTable::is_local`] says; IPv6 `::1`, a configured
    /// address, an interface's link-local one, or one ipd made from an
    /// advertised prefix ([`Net::set_autoconf`]).
    pub fn is_local(&self, a: u128) -> bool {
        match unmapped(a) {
            Some(v4) => self.t.is_local(v4),
            None => a == LOOPBACK6 || self.v6.iter().any(|x| x.addr == a),
        }
    }

    /// Whether `a` can never be a TCP endpoint: for IPv4 zero, limited or
    /// subnet broadcast, multicast, class E; for IPv6 `::` and multicast
    /// (RFC 4291 §2.7: never a source; RFC 9293 §3.9.1.1: TCP is
    /// unicast).
    pub fn is_bad_peer(&self, a: u128) -> bool {
        match unmapped(a) {
            Some(v4) => v4 == 0 || v4 >> 28 >= 0xe || self.t.is_subnet_broadcast(v4),
            None => a == 0 || a >> 120 == 0xff,
        }
    }

    /// The source address for a connection to `dst`, of its family; `None`
    /// when we have none. IPv4: [`AddrTable::source_for`]. IPv6: `::1` to
    /// `::1`, `dst` itself if it is ours, a link-local address to a
    /// link-local one, else the configured address sharing the longest
    /// prefix with `dst` (RFC 6724 §5, rules 1, 2 and 8; the first on a
    /// tie).
    pub fn source_for(&self, dst: u128) -> Option<u128> {
        if let Some(v4) = unmapped(dst) {
            return Some(self.t.source_for(v4)).filter(|&a| a != 0).map(mapped);
        }
        if dst == LOOPBACK6 || self.is_local(dst) {
            return Some(dst);
        }
        let link = is_link_local6(dst);
        self.v6
            .iter()
            .filter(|x| is_link_local6(x.addr) == link)
            .min_by_key(|x| core::cmp::Reverse(common_prefix6(x.addr, dst)))
            .map(|x| x.addr)
    }

    /// The MTU towards `dst` (1500 when unknown): the interface's MTU,
    /// also for our own addresses; the loopback's for `::1`; never below
    /// IPv6's minimum (RFC 8200 §5).
    pub fn mtu_for(&self, dst: u128) -> u16 {
        let Some(v4) = unmapped(dst) else {
            return self.mtu6_for(dst).max(IPV6_MIN_MTU);
        };
        self.t.mtu_for(v4)
    }

    /// The MSS a connection to `dst` offers: the MTU less the IP header
    /// (20 bytes, 40 over IPv6) and the TCP header (20) (RFC 9293
    /// §3.7.1; RFC 8200 §8.3).
    pub fn mss_for(&self, dst: u128) -> u32 {
        let ip = if unmapped(dst).is_some() { 20 } else { 40 };
        u32::from(self.mtu_for(dst)).saturating_sub(ip + 20)
    }

    /// The MTU of the interface an IPv6 packet to `dst` leaves through:
    /// the one holding `dst` if it is ours, else the one of the longest
    /// on-link prefix or configured route covering it (as ipd routes),
    /// else the first interface (where ipd's default router, learnt from
    /// advertisements, most likely is).
    fn mtu6_for(&self, dst: u128) -> u16 {
        if dst == LOOPBACK6 {
            return LOOPBACK_MTU;
        }
        let ours = self.v6.iter().find(|x| x.addr == dst).map(|x| x.iface);
        let link = is_link_local6(dst)
            .then(|| self.v6.iter().find(|x| is_link_local6(x.addr)))
            .flatten()
            .map(|x| x.iface);
        let on_link = self
            .v6
            .iter()
            .filter(|x| x.prefix < 128 && in_prefix6(x.addr, x.prefix, dst))
            .max_by_key(|x| x.prefix)
            .map(|x| (x.prefix, x.iface));
        let routed = self
            .index6
            .lookup(dst)
            .map(|i| (self.routes6[i].0.prefix, self.routes6[i].1));
        // A route more specific than the on-link prefix wins, as in ipd.
        let iface = ours.or(link).or(match (on_link, routed) {
            (Some((len, _)), Some((p, via))) if p > len => via,
            (Some((_, i)), _) => Some(i),
            (None, Some((_, via))) => via,
            (None, None) => None,
        });
        iface
            .or((!self.mtu6.is_empty()).then_some(0))
            .and_then(|i| self.mtu6.get(i).copied())
            .unwrap_or(1500)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u128 {
        strata_ipc::addrs::from_ip(s.parse().unwrap())
    }

    #[test]
    fn source_and_mtu_selection() {
        let cfg = TcpConfig {
            ifaces: vec![
                IfaceAddrs {
                    index: 0,
                    mtu: 1500,
                    addrs: vec![("10.0.0.1".parse().unwrap(), 24)],
                    ..IfaceAddrs::default()
                },
                IfaceAddrs {
                    index: 1,
                    mtu: 9000,
                    addrs: vec![("192.168.1.1".parse().unwrap(), 24)],
                    ..IfaceAddrs::default()
                },
            ],
            routes: vec![RouteInfo {
                dest: "0.0.0.0".parse().unwrap(),
                prefix: 0,
                gateway: Some("192.168.1.254".parse().unwrap()),
                iface: None,
            }],
            ..TcpConfig::default()
        };
        let n = Net::new(&cfg).unwrap();
        assert_eq!(n.source_for(ip("10.0.0.7")), Some(ip("10.0.0.1")));
        assert_eq!(n.source_for(ip("8.8.8.8")), Some(ip("192.168.1.1")));
        assert_eq!(n.mtu_for(ip("10.0.0.7")), 1500);
        assert_eq!(n.mtu_for(ip("8.8.8.8")), 9000);
        assert_eq!(n.mss_for(ip("10.0.0.7")), 1460);
        assert!(n.is_bad_peer(ip("10.0.0.255")) && n.is_bad_peer(ip("0.0.0.0")));
        assert!(n.is_bad_peer(ip("224.0.0.1")) && !n.is_bad_peer(ip("10.0.0.2")));
        assert_eq!(
            Net::new(&TcpConfig::default())
                .unwrap()
                .source_for(ip("10.0.0.2")),
            None
        );
    }

    /// Two interfaces: a global and a ULA prefix on the first (MTU 1500,
    /// with a MAC), a global one on the second (MTU 9000, no MAC), and a
    /// route to 2001:db8:99::/48 through the second.
    fn dual() -> Net {
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let cfg = TcpConfig {
            ifaces: vec![
                IfaceAddrs {
                    index: 1,
                    mtu: 1500,
                    addrs: vec![("10.0.0.1".parse().unwrap(), 24)],
                    addrs6: vec![(a("2001:db8:1::1"), 64), (a("fd00:1::1"), 64)],
                    mac: [0x02, 0, 0, 0, 0, 0x01],
                },
                IfaceAddrs {
                    index: 2,
                    mtu: 9000,
                    addrs6: vec![(a("2001:db8:2::1"), 64)],
                    ..IfaceAddrs::default()
                },
            ],
            routes6: vec![Route6 {
                dest: a("2001:db8:99::"),
                prefix: 48,
                gateway: Some(a("2001:db8:2::fe")),
                iface: None,
            }],
            ..TcpConfig::default()
        };
        Net::new(&cfg).unwrap()
    }

    #[test]
    fn addresses_ipd_made_from_advertisements_are_ours_and_sources_too() {
        let mut n = dual();
        let slaac = ip("2001:db8:77::5");
        assert!(!n.is_local(slaac));
        let ix = n.index[1];
        let learnt = [
            (ix, Ipv6Addr::from(slaac), 64),
            (99, Ipv6Addr::from(ip("2001:db8:66::5")), 64),
        ];
        assert!(n.set_autoconf(&learnt));
        assert!(!n.set_autoconf(&learnt), "the same again changes nothing");
        assert!(n.is_local(slaac));
        assert!(!n.is_local(ip("2001:db8:66::5")), "of no interface of ours");
        assert_eq!(n.source_for(ip("2001:db8:77::9")), Some(slaac));
        // On its prefix: the second interface's MTU.
        assert_eq!(n.mtu_for(ip("2001:db8:77::9")), n.mtu6[1]);
        // Gone from ipd: gone here.
        assert!(n.set_autoconf(&[]));
        assert!(!n.is_local(slaac));
        assert!(n.is_local(ip("fd00:1::1")), "the configured ones stay");
    }

    #[test]
    fn ipv6_sources_share_the_longest_prefix_and_link_local_goes_to_link_local() {
        let n = dual();
        let ll = ip("fe80::ff:fe00:1");
        assert!(n.is_local(ll) && n.is_local(ip("::1")) && n.is_local(ip("fd00:1::1")));
        assert!(!n.is_local(ip("2001:db8:1::2")) && !n.is_local(0));
        assert_eq!(n.source_for(ip("2001:db8:1::7")), Some(ip("2001:db8:1::1")));
        assert_eq!(n.source_for(ip("2001:db8:2::7")), Some(ip("2001:db8:2::1")));
        assert_eq!(n.source_for(ip("fd00:1:5::7")), Some(ip("fd00:1::1")));
        // Far away: the longest common prefix (2001:db8::/32 and more).
        assert_eq!(n.source_for(ip("2001:db8:3::7")), Some(ip("2001:db8:2::1")));
        assert_eq!(n.source_for(ip("fe80::9")), Some(ll));
        assert_eq!(n.source_for(ip("::1")), Some(ip("::1")));
        assert_eq!(n.source_for(ip("2001:db8:2::1")), Some(ip("2001:db8:2::1")));
        // No link-local address without a MAC; no IPv6 address at all.
        let none = Net::new(&TcpConfig::default()).unwrap();
        assert_eq!(none.source_for(ip("fe80::9")), None);
        assert_eq!(none.source_for(ip("2001:db8::9")), None);
    }

    #[test]
    fn ipv6_mtu_follows_the_interface_and_mss_is_60_less() {
        let n = dual();
        assert_eq!(n.mtu_for(ip("2001:db8:1::7")), 1500);
        assert_eq!(n.mss_for(ip("2001:db8:1::7")), 1440);
        assert_eq!(n.mtu_for(ip("2001:db8:2::7")), 9000);
        assert_eq!(n.mtu_for(ip("2001:db8:99::7")), 9000, "routed");
        assert_eq!(n.mtu_for(ip("2001:db8:2::1")), 9000, "ours");
        assert_eq!(n.mtu_for(ip("fe80::9")), 1500);
        assert_eq!(n.mtu_for(ip("2a00::1")), 1500, "default: first");
        assert_eq!(n.mtu_for(ip("::1")), LOOPBACK_MTU);
        assert!(n.is_bad_peer(0) && n.is_bad_peer(ip("ff02::1")));
        assert!(!n.is_bad_peer(ip("2001:db8::2")) && !n.is_bad_peer(ip("::1")));
        // Never below IPv6's minimum.
        let tiny = TcpConfig {
            ifaces: vec![IfaceAddrs {
                index: 1,
                mtu: 600,
                ..IfaceAddrs::default()
            }],
            ..TcpConfig::default()
        };
        assert_eq!(
            Net::new(&tiny).unwrap().mtu_for(ip("2001:db8::2")),
            IPV6_MIN_MTU
        );
    }
}
