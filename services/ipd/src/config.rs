//! What ipd is told at start: interfaces, addresses, routes and limits.

use std::net::{Ipv4Addr, Ipv6Addr};

use strata_ipc::route::RouteError;
use strata_proto::MacAddr;

/// The whole configuration of the IPv4 core.
#[derive(Clone, Debug, Default)]
pub struct IpConfig {
    /// The interfaces ipd sends and receives on.
    pub ifaces: Vec<IfaceConfig>,
    /// Routes beyond the connected ones (which come from the addresses).
    pub routes: Vec<RouteConfig>,
    /// IPv6 routes beyond the on-link prefixes.
    pub routes6: Vec<strata_ipc::route::Route6>,
    /// Permanent neighbours (`strata neigh add`).
    pub neighbours: Vec<StaticNeigh>,
    /// Table sizes, timers and rate limits.
    pub limits: IpLimits,
}

/// One interface.
#[derive(Clone, Debug)]
pub struct IfaceConfig {
    /// The interface index carried in [`Handle::iif`](strata_ipc::Handle)
    /// and `oif` (anything but `NO_IFACE`, 255).
    pub index: u8,
    /// Our MAC address on it.
    pub mac: MacAddr,
    /// Our addresses on it, each with its prefix length. The first is the
    /// source of locally originated packets that leave through it.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// Largest IPv4 datagram sent on it without fragmenting (68..=65535).
    pub mtu: u16,
    /// Our configured IPv6 addresses on it, each with its prefix length
    /// (the prefix is on-link). The link-local address made from `mac` is
    /// always there besides them.
    pub addrs6: Vec<(Ipv6Addr, u8)>,
    /// Make IPv6 addresses from the prefixes routers advertise (SLAAC,
    /// RFC 4862 §5.5); only when not forwarding.
    pub autoconf: bool,
}

/// One configured route: the stack's one route type, which the launcher
/// writes into the runtime configuration and every layer reads, under the
/// name ipd's API has always used.
pub use strata_ipc::route::Route as RouteConfig;

/// A permanent neighbour: the runtime configuration's type.
pub use strata_ipc::runtime::StaticNeigh;

/// Table sizes, timers and rate limits. The defaults follow Linux's where
/// Linux has an equivalent knob (named in each field's doc).
#[derive(Clone, Debug)]
pub struct IpLimits {
    /// Neighbour (ARP) table entries; the table is allocated once at this
    /// size (Linux `gc_thresh3` is 1024).
    pub neigh_capacity: usize,
    /// Packets queued per neighbour while it resolves (Linux `unres_qlen`).
    pub unres_qlen: usize,
    /// Packets queued for all neighbours together.
    pub unres_total: usize,
    /// How long a confirmed neighbour stays REACHABLE
    /// (Linux `base_reachable_time_ms`, 30 s; Linux randomizes it, a pure
    /// core cannot and need not).
    pub reachable_ns: u64,
    /// Interval between ARP retransmissions (Linux `retrans_time_ms`).
    pub arp_retrans_ns: u64,
    /// ARP requests sent before a neighbour is declared FAILED
    /// (Linux `mcast_solicit` / `ucast_solicit`, 3).
    pub arp_tries: u8,
    /// An unused STALE or a FAILED neighbour is removed after this long
    /// (Linux `gc_stale_time`, 60 s).
    pub neigh_gc_ns: u64,
    /// How long a STALE IPv6 neighbour that is used waits in DELAY for a
    /// confirmation before it is probed (RFC 4861 §10
    /// `DELAY_FIRST_PROBE_TIME`, 5 s; Linux `delay_first_probe_time`).
    pub delay_first_probe_ns: u64,
    /// A partial datagram is dropped this long after its first fragment
    /// (Linux `ipfrag_time`, 30 s).
    pub frag_timeout_ns: u64,
    /// Reassembly memory for all sources together (Linux
    /// `ipfrag_high_thresh`, 4 MiB).
    pub frag_mem_total: usize,
    /// Reassembly memory one source may hold, so one sender cannot take
    /// every slot (the default admits 7 datagrams at once).
    pub frag_mem_per_src: usize,
    /// Datagrams being reassembled at once. Each pins one large pool
    /// buffer until it completes or times out, and the pool has few
    /// (the fabric's default is 64, shared with TSO/GRO), so this stays
    /// small.
    pub max_reassemblies: usize,
    /// ICMP errors allowed per second in steady state (Linux
    /// `icmp_msgs_per_sec`, 1000).
    pub icmp_rate_per_sec: u32,
    /// ICMP errors that may be sent back to back (Linux
    /// `icmp_msgs_burst`, 50).
    pub icmp_burst: u32,
    /// Forward packets not addressed to us between interfaces (router
    /// mode, Linux `net.ipv4.ip_forward`). Off, such packets are dropped
    /// and counted as `not_for_us`.
    pub forwarding: bool,
}

impl Default for IpLimits {
    fn default() -> Self {
        const S: u64 = 1_000_000_000;
        IpLimits {
            neigh_capacity: 1024,
            unres_qlen: 3,
            unres_total: 256,
            reachable_ns: 30 * S,
            arp_retrans_ns: S,
            arp_tries: 3,
            neigh_gc_ns: 60 * S,
            delay_first_probe_ns: 5 * S,
            frag_timeout_ns: 30 * S,
            frag_mem_total: 4 << 20,
            frag_mem_per_src: 512 << 10,
            max_reassemblies: 16,
            icmp_rate_per_sec: 1000,
            icmp_burst: 50,
            forwarding: false,
        }
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Interface index 255 is reserved for "no interface".
    ReservedIfaceIndex,
    /// Two interfaces share an index.
    DuplicateIface(u8),
    /// An MTU outside 68..=max, where max lets a frame fit a large buffer.
    BadMtu(u8, u16),
    /// A prefix length above 32 (128 for IPv6).
    BadPrefix(u8),
    /// An IPv6 address that cannot be configured: not global or unique-local
    /// unicast (unspecified, loopback, multicast, IPv4-mapped or
    /// link-local, which comes from the MAC).
    BadAddress6(Ipv6Addr),
    /// An address that cannot be a host's (0.0.0.0, loopback, multicast,
    /// class E).
    BadAddress(Ipv4Addr),
    /// A route names an interface that is not configured.
    UnknownIface(u8),
    /// A route without a gateway must name its interface.
    DirectRouteNeedsIface(Ipv4Addr, u8),
    /// No connected subnet holds this gateway, so no interface reaches it.
    GatewayUnreachable(Ipv4Addr),
    /// A limit is zero (or, for `max_reassemblies`, the neighbour table or
    /// the queue, too large to index).
    BadLimit(&'static str),
    /// A configuration given at run time has other interfaces (indexes or
    /// MACs) than the one ipd started with.
    IfacesChanged,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::ReservedIfaceIndex => write!(f, "interface index 255 is reserved"),
            ConfigError::DuplicateIface(i) => write!(f, "interface index {i} used twice"),
            ConfigError::BadMtu(i, m) => write!(f, "interface {i}: MTU {m} out of range"),
            ConfigError::BadPrefix(p) => write!(f, "prefix length {p} above 32"),
            ConfigError::BadAddress(a) => write!(f, "{a} cannot be a host address"),
            ConfigError::BadAddress6(a) => write!(f, "{a} cannot be configured as an address"),
            ConfigError::UnknownIface(i) => write!(f, "route names unknown interface {i}"),
            ConfigError::DirectRouteNeedsIface(d, p) => {
                write!(f, "route {d}/{p} has no gateway and no interface")
            }
            ConfigError::GatewayUnreachable(g) => {
                write!(f, "gateway {g} is on no connected subnet")
            }
            ConfigError::BadLimit(n) => write!(f, "limit {n} out of range"),
            ConfigError::IfacesChanged => {
                write!(f, "the interfaces differ from those ipd started with")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<RouteError> for ConfigError {
    fn from(e: RouteError) -> ConfigError {
        match e {
            RouteError::BadPrefix(p) => ConfigError::BadPrefix(p),
            RouteError::UnknownIface(i) => ConfigError::UnknownIface(i),
            RouteError::DirectRouteNeedsIface(d, p) => ConfigError::DirectRouteNeedsIface(d, p),
            RouteError::GatewayUnreachable(g) => ConfigError::GatewayUnreachable(g),
        }
    }
}
