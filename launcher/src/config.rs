//! The stack's configuration: the TOML file `strata up --config FILE` reads.
//!
//! ```toml
//! instance = "default"
//!
//! [[interface]]
//! name = "strata0"
//! driver = "tap"
//! addresses = ["10.77.0.2/24", "fd00:77::2/64"]
//! host_addresses = ["10.77.0.1/24", "fd00:77::1/64"]
//!
//! [[route]]
//! to = "default"
//! via = "10.77.0.1"
//! ```
//!
//! An interface's `addresses` and `host_addresses` mix IPv4 (`A.B.C.D/N`)
//! and IPv6 (`X:X::X/N`) addresses; read, they are split by family
//! ([`Interface::addresses`], [`Interface::addresses6`]), and written back
//! IPv4 first. Errors number an address by its place in the list as
//! written; those found after reading (an address used twice) by its
//! place in that IPv4-first order. An interface's IPv6 link-local address
//! is not configured: the stack makes it from the MAC.
//!
//! `[[route]]` tables are of either family, by their destination:
//! `to = "default"` is IPv4's default route, `to = "::/0"` IPv6's, and a
//! route's `via` is of its destination's family ([`IpRoute`]); an IPv6
//! one may be link-local, with `dev`. Routes are numbered as written.
//!
//! `launcher/strata.example.toml` shows and explains every key. Reading is
//! two steps: the file is deserialised into plain strings and numbers
//! (unknown keys are refused, and TOML's own errors keep their line and
//! column), then every value is parsed and the whole checked, so that an
//! error names the field it is about and what is wrong with it, e.g.
//! `interface[1].mac: "zz:00" is not a MAC address (...)`. The first problem
//! found is reported.
//!
//! A checked [`Config`] is complete: every default has been filled in, so
//! what it serialises to (the launcher prints it as JSON) is exactly what the
//! stack runs with, and serialised as TOML it reads back the same.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use crate::cpu::{CpuList, Policy, Scheduling};

/// Interfaces one instance can drive; the fabric has a fixed number of
/// driver slots (strata_ipc::MAX_IFACES).
const MAX_INTERFACES: usize = 8;
/// Stack or host addresses per interface, of each family.
pub const MAX_ADDRESSES: usize = 16;
/// Configured routes per instance, of each family (the fabric's
/// configuration region is sized for them).
pub const MAX_ROUTES: usize = strata_ipc::runtime::MAX_ROUTES;
/// Permanent neighbours per instance.
pub const MAX_NEIGHBOURS: usize = 256;
/// Longest instance and pair link name; the instance name becomes part of
/// paths and shared-memory names.
const MAX_INSTANCE_LEN: usize = 32;
const MAX_LINK_LEN: usize = 64;
/// Longest interface name: the kernel's limit for a TAP's name.
const MAX_IFNAME_LEN: usize = 15;

pub const MTU: RangeInclusive<i64> = 68..=9000;
const SMALL_BUFFERS: RangeInclusive<i64> = 256..=262_144;
const LARGE_BUFFERS: RangeInclusive<i64> = 0..=16_384;
const RING_SIZE: RangeInclusive<i64> = 64..=65_536;
const QDISC_LIMIT: RangeInclusive<i64> = 1..=65_536;
const HEARTBEAT_TIMEOUT_MS: RangeInclusive<i64> = 100..=60_000;
const SOCKET_BUFFER_BYTES: RangeInclusive<i64> = 4096..=16_777_216;
const SOCKETS_LIMIT: RangeInclusive<i64> = 1..=1_048_576;
/// Up to the most rows sockd's socket table can have.
const SOCKETS: RangeInclusive<i64> = 64..=strata_ipc::socktable::MAX_ROWS as i64;
const TCP_CONNECTIONS: RangeInclusive<i64> = 64..=1_048_576;
const CONNTRACK_ENTRIES: RangeInclusive<i64> = 1024..=4_194_304;
const EPHEMERAL_PORT: RangeInclusive<i64> = 1024..=65_535;
const SEND_BYTES_PER_USER: RangeInclusive<i64> = 65_536..=1 << 40;
const LAYER_UID_BASE: RangeInclusive<i64> = 1000..=2_147_483_000;
const RESTART_BACKOFF_MAX_MS: RangeInclusive<i64> = 100..=600_000;

/// The whole configuration of one stack instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The instance's name: 1 to 32 of `a-z A-Z 0-9 _ -`. Its runtime
    /// directory is `/run/strata/<instance>/`. Default `"default"`.
    pub instance: String,
    /// The interfaces, in index order (`[[interface]]` tables): 1 to 8.
    #[serde(rename = "interface")]
    pub interfaces: Vec<Interface>,
    /// Routes beyond the connected ones each interface address implies
    /// (`[[route]]` tables), of both families in the order written: at
    /// most 65,536 of each family, one per destination.
    #[serde(rename = "route")]
    pub routes: Vec<IpRoute>,
    /// Permanent neighbours (`[[neighbour]]` tables): at most 256, one per
    /// address and interface.
    #[serde(rename = "neighbour")]
    pub neighbours: Vec<Neighbour>,
    /// How the stack treats IPv4 (`[ip]`).
    pub ip: Ip,
    /// Pool, ring and supervision sizes (`[limits]`).
    pub limits: Limits,
    /// Packet filter and NAT rules (`[filter]`).
    pub filter: Filter,
    /// Who may reach sockd's socket (`[sockd]`).
    pub sockd: Sockd,
    /// Who the layers run as (`[security]`).
    pub security: Security,
    /// Where the layers run (`[cpu]`).
    pub cpu: Cpu,
}

/// Where the layers run (see `cpu.rs` for why it matters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cpu {
    /// "compact" (default: every layer on the first CPU of `cpus`, where
    /// a round trip was measured fastest on a 2-core VM), "spread" (layers
    /// in turn over `cpus`) or "none" (no affinity).
    pub policy: Policy,
    /// The CPUs the layers may use, as `taskset -c` takes them ("0-3,6").
    /// Default: every CPU `strata up` may use. `strata up` refuses a CPU
    /// it may not use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<CpuList>,
    /// A CPU list per layer (`[cpu.layer]`, by label: `tcpd`,
    /// `driverd0`...), which the policy then leaves alone.
    pub layer: BTreeMap<String, CpuList>,
    /// "batch" (default: SCHED_BATCH, a layer woken by another waits for
    /// the waker to sleep instead of preempting it) or "normal".
    pub scheduling: Scheduling,
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu {
            policy: Policy::Compact,
            cpus: None,
            layer: BTreeMap::new(),
            scheduling: Scheduling::Batch,
        }
    }
}

/// Who the layers run as. Each layer handles untrusted bytes, so each runs
/// as its own unprivileged user, in one group that may map the shared
/// region, with no capabilities: taking a layer over gains neither root
/// nor another layer's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Security {
    /// The first id of the layers' block: the group is `layer_uid_base`,
    /// layer k (`strata ps` numbers them) runs as user `layer_uid_base + 1
    /// + k`. 1000..=2147483000, or 0 to keep every layer root (debugging
    /// only). Default 76000: above the ids systems give their users and
    /// below 100000, where subordinate id ranges (`/etc/subuid`) usually
    /// begin. `strata up` refuses a block that `/etc/passwd` or
    /// `/etc/group` names.
    pub layer_uid_base: u32,
}

/// The default [`Security::layer_uid_base`].
pub const DEFAULT_LAYER_UID_BASE: u32 = 76_000;

impl Default for Security {
    fn default() -> Self {
        Security {
            layer_uid_base: DEFAULT_LAYER_UID_BASE,
        }
    }
}

/// Who may reach sockd's socket, `/run/strata/<instance>/sockd.sock`
/// (applications open sockets through it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sockd {
    /// The socket file's permission bits, 0..=0o777. Default 0o666: any
    /// local user may open sockets (sockd then checks each request:
    /// ports below `[ip] unprivileged_port_start`, per-user limits).
    pub socket_mode: u32,
    /// The socket file's group (a name or a number in the file; kept as
    /// the number), so that with a mode such as 0o660 only its members
    /// may use the stack. Default: root's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<u32>,
}

impl Default for Sockd {
    fn default() -> Self {
        Sockd {
            socket_mode: 0o666,
            socket_group: None,
        }
    }
}

/// Packet filter and NAT rules applied when the stack starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    /// `strata filter` command lines, applied in order (for example
    /// `"add INPUT -p tcp --dport 8080 -j REJECT --reject-with tcp-reset"`
    /// or `"-t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080"`).
    /// A line that does not parse or apply stops `strata up` with the word
    /// at fault.
    pub rules: Vec<String>,
}

/// How the stack treats IPv4.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ip {
    /// Forward datagrams not addressed to the stack from one interface to
    /// another (router mode; Linux `net.ipv4.ip_forward`). Default false:
    /// such datagrams are dropped.
    pub forwarding: bool,
    /// The first port any local user may bind; binding a lower one needs
    /// uid 0 or CAP_NET_BIND_SERVICE, as on Linux
    /// (`net.ipv4.ip_unprivileged_port_start`). Default 1024; 0 lets
    /// everyone bind every port.
    pub unprivileged_port_start: u16,
}

impl Default for Ip {
    fn default() -> Self {
        Ip {
            forwarding: false,
            unprivileged_port_start: 1024,
        }
    }
}

/// One network interface of the stack. It serialises as the file writes
/// it: each family's addresses in one list, `addresses` and
/// `host_addresses`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(into = "InterfaceFile")]
pub struct Interface {
    /// The interface's name, unique in the instance: 1 to 15 of
    /// `a-z A-Z 0-9 _ -`. For a TAP it is also the kernel-side interface
    /// name.
    pub name: String,
    /// The device behind the interface (`driver = "tap"`, the default, or
    /// `"pair"` with `link` and `side`).
    #[serde(flatten)]
    pub device: Device,
    /// The stack's MAC address on this interface: unicast, unique in the
    /// instance. Default `02:53:54:00:00:<index + 1>` (locally administered;
    /// 53 54 is "ST"), or for a vfio device its own address.
    pub mac: MacAddr,
    /// The configuration named the MAC (a vfio device's own is used
    /// otherwise).
    pub mac_given: bool,
    /// The stack's IPv4 addresses with their prefix lengths (at most 16);
    /// each implies a connected route. Unique in the instance.
    pub addresses: Vec<Cidr>,
    /// The stack's IPv6 addresses with their prefix lengths (at most 16,
    /// written in `addresses` among the IPv4 ones): global or unique-local
    /// unicast ones, each implying a connected prefix. Unique in the
    /// instance. The link-local address is made from the MAC, not listed.
    pub addresses6: Vec<Cidr6>,
    /// Make IPv6 addresses from the prefixes routers advertise on this
    /// link (SLAAC, RFC 4862), as Linux's `autoconf`; default false.
    /// Router advertisements are heeded (default routers, on-link
    /// prefixes, MTU) unless `[ip] forwarding` is on, as Linux's
    /// `accept_ra` does; so `autoconf` with forwarding on is refused.
    pub autoconf: bool,
    /// The interface MTU in bytes, 68..=9000. Default 1500.
    pub mtu: u16,
    /// TAP only: IPv4 addresses the launcher gives the kernel's side of
    /// the interface (at most 16). Default none.
    pub host_addresses: Vec<Cidr>,
    /// TAP only: IPv6 addresses the launcher gives the kernel's side
    /// (at most 16, written in `host_addresses` among the IPv4 ones), with
    /// duplicate address detection off: the launcher has checked that they
    /// are not the stack's. Default none.
    pub host_addresses6: Vec<Cidr6>,
    /// Device offloads: for a TAP, frames carry a virtio-net header, and
    /// the kernel and the stack exchange TCP super-segments of up to 64 KiB
    /// with checksums left partial; for a vfio device, the same is
    /// negotiated with the device. Default true for a TAP and a vfio
    /// device; the pair and af_xdp drivers have none (false).
    pub offloads: bool,
}

impl Interface {
    /// The stack's addresses of both families, IPv4 first.
    pub fn all_addresses(&self) -> impl Iterator<Item = IpCidr> + '_ {
        let v4 = self.addresses.iter().copied().map(IpCidr::V4);
        v4.chain(self.addresses6.iter().copied().map(IpCidr::V6))
    }

    /// The kernel side's addresses of both families, IPv4 first.
    pub fn all_host_addresses(&self) -> impl Iterator<Item = IpCidr> + '_ {
        let v4 = self.host_addresses.iter().copied().map(IpCidr::V4);
        v4.chain(self.host_addresses6.iter().copied().map(IpCidr::V6))
    }

    /// How many stack addresses of `a`'s family the interface has.
    pub fn count_like(&self, a: IpCidr) -> usize {
        match a {
            IpCidr::V4(_) => self.addresses.len(),
            IpCidr::V6(_) => self.addresses6.len(),
        }
    }

    /// Adds a stack address to the list of its family.
    pub fn push_address(&mut self, a: IpCidr) {
        match a {
            IpCidr::V4(c) => self.addresses.push(c),
            IpCidr::V6(c) => self.addresses6.push(c),
        }
    }

    /// Removes the stack address `ip`, if the interface has it.
    pub fn remove_address(&mut self, ip: IpAddr) {
        self.addresses.retain(|a| IpAddr::V4(a.addr) != ip);
        self.addresses6.retain(|a| IpAddr::V6(a.addr) != ip);
    }
}

/// An [`Interface`] as the file writes it, both families in one list.
#[derive(Serialize)]
struct InterfaceFile {
    name: String,
    #[serde(flatten)]
    device: Device,
    /// Only a MAC the file named: the default (or a vfio device's own)
    /// is found again when it is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<MacAddr>,
    addresses: Vec<IpCidr>,
    autoconf: bool,
    mtu: u16,
    host_addresses: Vec<IpCidr>,
    offloads: bool,
}

impl From<Interface> for InterfaceFile {
    fn from(i: Interface) -> InterfaceFile {
        InterfaceFile {
            addresses: i.all_addresses().collect(),
            host_addresses: i.all_host_addresses().collect(),
            name: i.name,
            device: i.device,
            mac: i.mac_given.then_some(i.mac),
            autoconf: i.autoconf,
            mtu: i.mtu,
            offloads: i.offloads,
        }
    }
}

/// The kind of device behind an interface, with what only that kind needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum Device {
    /// A TAP device whose other side is the kernel of the launcher's
    /// network namespace.
    Tap,
    /// One end of an in-memory link to another strata instance on the same
    /// host (and network namespace).
    Pair {
        /// The link's name, shared by both ends: 1 to 64 of
        /// `a-z A-Z 0-9 _ -`.
        link: String,
        /// Which end this is.
        side: Side,
    },
    /// An existing interface of the launcher's network namespace (a veth
    /// end, a NIC), driven through an AF_XDP socket: an XDP program the
    /// launcher attaches steers the interface's frames to the stack.
    #[serde(rename = "af_xdp")]
    AfXdp {
        /// The kernel's name of the interface.
        device: String,
    },
    /// A virtio-net PCI device bound to vfio-pci, driven from user space
    /// through VFIO (the machine needs an IOMMU).
    Vfio {
        /// The device's PCI address, `DDDD:BB:DD.F` as sysfs spells it.
        device: String,
        /// Poll the device's queues rather than sleep on its interrupts
        /// (`poll = true`): lower latency, a core busy. Default false.
        poll: bool,
    },
}

/// Which end of a pair link an interface is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// `side = "a"`.
    A,
    /// `side = "b"`.
    B,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::A => "a",
            Side::B => "b",
        })
    }
}

/// A permanent neighbour (`[[neighbour]]`, `strata neigh add`): the stack
/// sends to `ip` on `dev` with this MAC without asking, and never ages,
/// probes, relearns or flushes it (Linux's `nud permanent`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Neighbour {
    /// The neighbour's address: unicast, not the stack's own.
    pub ip: Ipv4Addr,
    /// Its MAC address: unicast.
    pub mac: MacAddr,
    /// The interface it is on, by name.
    pub dev: String,
}

/// A static route as the file writes it (`[[route]]`): the interface by
/// name, so that the configuration serialises back to the same TOML.
/// [`Route::resolve`] turns it into the route the layers read. `Route` is
/// an IPv4 one; [`Route6`] (`Route<Cidr6>`) an IPv6 one.
///
/// IPv4: `via` is a unicast address inside a connected prefix of `dev`
/// (of some interface, without `dev`).
///
/// IPv6: `via` is a unicast address, global (or unique-local) or
/// link-local. A link-local one needs `dev`, the link it is on. A global
/// one without `dev` must lie in the prefix of one of the interfaces'
/// IPv6 addresses, whose interface the route then leaves by; with `dev`
/// it is taken to be on that link (a prefix routers advertise there may
/// hold it), as `ip -6 route ... via GW dev IF` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route<C: Prefixed = Cidr> {
    /// The destination prefix, without host bits; `to = "default"` is
    /// 0.0.0.0/0, the IPv6 default route is written `to = "::/0"`.
    pub to: C,
    /// The gateway, of the destination's family. None for a destination
    /// directly on the link `dev`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<C::Addr>,
    /// The interface to send on, by name. Without it the interface is the
    /// one whose connected prefix holds `via`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
}

/// A static IPv6 route (`[[route]]` with an IPv6 destination).
pub type Route6 = Route<Cidr6>;

impl<C: Prefixed> Route<C> {
    /// The route as the layers read it ([`strata_ipc::route::Route`], the
    /// stack's one route type, or its IPv6 form
    /// [`strata_ipc::route::Route6`]): `dev` named by its interface index,
    /// the position of the interface of that name in `interfaces`.
    pub fn resolve(&self, interfaces: &[Interface]) -> strata_ipc::route::Route<C::Addr> {
        strata_ipc::route::Route {
            dest: self.to.network(),
            prefix: self.to.prefix(),
            gateway: self.via,
            iface: self
                .dev
                .as_ref()
                .and_then(|d| interfaces.iter().position(|i| &i.name == d))
                .map(|i| i as u8),
        }
    }
}

/// A static route of either family, as `[[route]]` tables (and `strata
/// route add`) give them; it serialises as the route it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum IpRoute {
    /// An IPv4 one.
    V4(Route),
    /// An IPv6 one.
    V6(Route6),
}

impl IpRoute {
    /// A route to `to` via `via` on `dev`, refusing a gateway of the other
    /// family than the destination's; the error is about `via`.
    pub fn new(to: IpCidr, via: Option<IpAddr>, dev: Option<String>) -> Result<IpRoute, String> {
        Ok(match (to, via) {
            (IpCidr::V4(to), None) => IpRoute::V4(Route { to, via: None, dev }),
            (IpCidr::V4(to), Some(IpAddr::V4(v))) => IpRoute::V4(Route {
                to,
                via: Some(v),
                dev,
            }),
            (IpCidr::V6(to), None) => IpRoute::V6(Route { to, via: None, dev }),
            (IpCidr::V6(to), Some(IpAddr::V6(v))) => IpRoute::V6(Route {
                to,
                via: Some(v),
                dev,
            }),
            (IpCidr::V4(to), Some(v)) => {
                let hint = if to.prefix == 0 {
                    " (the IPv6 default route is ::/0)"
                } else {
                    ""
                };
                return Err(format!(
                    "{v} is an IPv6 address, but the destination {} is IPv4{hint}",
                    dest_name(IpCidr::V4(to))
                ));
            }
            (IpCidr::V6(to), Some(v)) => {
                return Err(format!(
                    "{v} is an IPv4 address, but the destination {} is IPv6",
                    dest_name(IpCidr::V6(to))
                ));
            }
        })
    }

    /// The destination.
    pub fn to(&self) -> IpCidr {
        match self {
            IpRoute::V4(r) => IpCidr::V4(r.to),
            IpRoute::V6(r) => IpCidr::V6(r.to),
        }
    }

    /// The gateway, if any.
    pub fn via(&self) -> Option<IpAddr> {
        match self {
            IpRoute::V4(r) => r.via.map(IpAddr::V4),
            IpRoute::V6(r) => r.via.map(IpAddr::V6),
        }
    }

    /// The interface named, if any.
    pub fn dev(&self) -> Option<&str> {
        match self {
            IpRoute::V4(r) => r.dev.as_deref(),
            IpRoute::V6(r) => r.dev.as_deref(),
        }
    }

    /// The IPv4 route, if it is one.
    pub fn v4(&self) -> Option<&Route> {
        match self {
            IpRoute::V4(r) => Some(r),
            IpRoute::V6(_) => None,
        }
    }

    /// The IPv6 route, if it is one.
    pub fn v6(&self) -> Option<&Route6> {
        match self {
            IpRoute::V6(r) => Some(r),
            IpRoute::V4(_) => None,
        }
    }
}

/// A destination as `strata route` takes it back: `default` for IPv4's
/// default route, otherwise the prefix (`::/0` for IPv6's).
pub fn dest_name(to: IpCidr) -> String {
    match to {
        IpCidr::V4(c) if c.prefix == 0 => "default".into(),
        IpCidr::V4(c) => format!("{}/{}", c.network(), c.prefix),
        IpCidr::V6(c) => format!("{}/{}", c.network(), c.prefix),
    }
}

/// Sizes of the shared fabric and of the launcher's supervision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Small (2 KiB) packet buffers in the pool, 256..=262144. Default 4096.
    pub small_buffers: u32,
    /// Large (64 KiB + headroom) packet buffers for super-packets (TCP
    /// super-segments sent and received, frames longer than a small buffer,
    /// reassembly), 0..=16384. Default 1024: 64 MiB of shared memory,
    /// touched only as it is used.
    pub large_buffers: u32,
    /// Slots in each ring between layers: a power of two, 64..=65536.
    /// Default 1024.
    pub ring_size: u32,
    /// Packets each interface's egress queue holds, 1..=65536. Default 1000.
    pub qdisc_limit: u32,
    /// A layer whose heartbeat stalls this long (ms) is restarted,
    /// 100..=60000. Default 3000.
    pub heartbeat_timeout_ms: u32,
    /// The longest wait (ms) before restarting a layer that keeps crashing,
    /// 100..=600000. Default 5000.
    pub restart_backoff_max_ms: u32,
    /// The most bytes of each socket's receive and send rings (what
    /// SO_RCVBUF and SO_SNDBUF bound on Linux), 4096..=16777216. Default
    /// 4194304 (libsock asks for 4 MiB to receive and 1 MiB to send on
    /// TCP, 256 KiB otherwise).
    pub socket_buffer_bytes: u32,
    /// First port of the ephemeral range, 1024..=65535. Default 32768.
    pub ephemeral_port_first: u32,
    /// Last port of the ephemeral range, 1024..=65535, not below the
    /// first. Default 60999 (Linux's `ip_local_port_range`).
    pub ephemeral_port_last: u32,
    /// Sockets (UDP and TCP, listeners and accepted connections
    /// included) sockd holds at once, for all processes together,
    /// 64..=1048575; more fail with EMFILE. Each is a row of sockd's
    /// socket table: 88 bytes of shared memory, touched only as it is
    /// used (11 MiB for the default), beside sockd's own record of it
    /// (about 500 bytes for a TCP socket). Default 131072.
    pub sockets: u32,
    /// Sockets (accepted connections included) one process may hold at
    /// sockd, 1..=1048576; more fail with EMFILE. Each costs what
    /// [`sockets`](Limits::sockets) says. Default 131072.
    pub sockets_per_process: u32,
    /// Sockets all processes of one user may hold together, 1..=1048576;
    /// more fail with EMFILE. Default 131072.
    pub sockets_per_user: u32,
    /// Sessions (libsock's connections to sockd, one per `Stack`) all
    /// processes of one user may hold together, 1..=1048576; more are
    /// closed at once. Default 1024.
    pub sessions_per_user: u32,
    /// TCP connections tcpd holds at once (listeners, bound sockets and
    /// connections in TIME-WAIT included), 64..=1048576; past it a
    /// connect or bind fails with ENOBUFS and a SYN is dropped. Each
    /// costs tcpd's arena a 624-byte block of shared memory (78 MiB for
    /// the default), cleared when tcpd first starts. Default 131072.
    pub tcp_connections: u32,
    /// Connections filterd tracks at once (both families, TCP, UDP and
    /// ICMP), 1024..=4194304; past it a new connection's first packet is
    /// invalid (counted as filterd's `ct_full`) unless an expired or
    /// never answered entry makes room. Each costs filterd's arena a
    /// 168-byte entry of shared memory (21 MiB for the default), cleared
    /// when filterd first starts. Default 131072.
    pub conntrack_entries: u32,
    /// Bytes all TCP sockets of one user may have sent and not yet had
    /// acknowledged (held in the pool), 65536..=1099511627776; past it
    /// that user's sends wait. Default: a quarter of the small buffers'
    /// bytes (2 MiB with 4096 buffers), so that others keep the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_bytes_per_user: Option<u64>,
}

impl Limits {
    /// [`Limits::send_bytes_per_user`], the default resolved.
    pub fn send_bytes_per_user(&self) -> u64 {
        self.send_bytes_per_user
            .unwrap_or(u64::from(self.small_buffers) * strata_ipc::SMALL_BUF as u64 / 4)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            small_buffers: 4096,
            large_buffers: 1024,
            ring_size: 1024,
            qdisc_limit: 1000,
            heartbeat_timeout_ms: 3000,
            restart_backoff_max_ms: 5000,
            socket_buffer_bytes: 4 << 20,
            ephemeral_port_first: 32768,
            ephemeral_port_last: 60999,
            sockets: 131_072,
            sockets_per_process: 131_072,
            sockets_per_user: 131_072,
            sessions_per_user: 1024,
            tcp_connections: 131_072,
            conntrack_entries: 131_072,
            send_bytes_per_user: None,
        }
    }
}

impl Default for Config {
    /// The configuration used when none is given: instance "default", one
    /// TAP "strata0" with the stack at 10.77.0.2/24 and the kernel side at
    /// 10.77.0.1/24, no routes.
    fn default() -> Config {
        Config {
            instance: "default".to_owned(),
            interfaces: vec![Interface {
                name: "strata0".to_owned(),
                device: Device::Tap,
                mac: default_mac(0),
                mac_given: false,
                addresses: vec![Cidr {
                    addr: Ipv4Addr::new(10, 77, 0, 2),
                    prefix: 24,
                }],
                addresses6: Vec::new(),
                autoconf: false,
                mtu: 1500,
                host_addresses: vec![Cidr {
                    addr: Ipv4Addr::new(10, 77, 0, 1),
                    prefix: 24,
                }],
                host_addresses6: Vec::new(),
                offloads: true,
            }],
            routes: Vec::new(),
            neighbours: Vec::new(),
            ip: Ip::default(),
            limits: Limits::default(),
            filter: Filter::default(),
            sockd: Sockd::default(),
            security: Security::default(),
            cpu: Cpu::default(),
        }
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = BadValue;

    /// Parses six colon-separated hex pairs, e.g. `02:00:00:00:00:01`.
    fn from_str(s: &str) -> Result<MacAddr, BadValue> {
        let bad = || {
            BadValue(format!(
                "{s:?} is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)"
            ))
        };
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(mac))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An IPv4 address with a prefix length, written `A.B.C.D/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub prefix: u8,
}

impl Cidr {
    /// The prefix's first address (the address with its host bits cleared).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & mask(self.prefix))
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network())
    }

    /// The prefix's last address.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }
}

use strata_ipc::addrs::{mask, mask6};

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = BadValue;

    /// Parses `A.B.C.D/N`; the prefix length is required.
    fn from_str(s: &str) -> Result<Cidr, BadValue> {
        let Some((addr, prefix)) = s.split_once('/') else {
            return Err(BadValue(format!(
                "{s:?} is not an address with a prefix length (expected A.B.C.D/N like 10.77.0.2/24)"
            )));
        };
        let addr = addr
            .parse()
            .map_err(|_| BadValue(format!("{addr:?} is not an IPv4 address")))?;
        let prefix = parse_prefix(prefix, 32)?;
        Ok(Cidr { addr, prefix })
    }
}

/// A prefix length written in decimal, 0..=`max`.
fn parse_prefix(text: &str, max: u8) -> Result<u8, BadValue> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadValue(format!("{text:?} is not a prefix length")));
    }
    match text.parse::<u8>() {
        Ok(prefix) if prefix <= max => Ok(prefix),
        _ => Err(BadValue(format!(
            "prefix length {text} is out of range 0..={max}"
        ))),
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An IPv6 address with a prefix length, written `X:X::X/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr6 {
    /// The address.
    pub addr: Ipv6Addr,
    /// The prefix length, 0..=128.
    pub prefix: u8,
}

impl Cidr6 {
    /// The prefix's first address (the address with its host bits
    /// cleared).
    pub fn network(self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) & mask6(self.prefix))
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask6(self.prefix) == u128::from(self.network())
    }
}

impl fmt::Display for Cidr6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr6 {
    type Err = BadValue;

    /// Parses `X:X::X/N`; the prefix length is required.
    fn from_str(s: &str) -> Result<Cidr6, BadValue> {
        let Some((addr, prefix)) = s.split_once('/') else {
            return Err(BadValue(format!(
                "{s:?} is not an address with a prefix length (expected X:X::X/N like fd00:77::2/64)"
            )));
        };
        let addr = addr
            .parse()
            .map_err(|_| BadValue(format!("{addr:?} is not an IPv6 address")))?;
        let prefix = parse_prefix(prefix, 128)?;
        Ok(Cidr6 { addr, prefix })
    }
}

impl Serialize for Cidr6 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An address of either family with its prefix length, as an interface's
/// `addresses` and `host_addresses` (and `strata addr`) take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpCidr {
    /// An IPv4 one.
    V4(Cidr),
    /// An IPv6 one.
    V6(Cidr6),
}

impl IpCidr {
    /// The address.
    pub fn ip(self) -> IpAddr {
        match self {
            IpCidr::V4(c) => IpAddr::V4(c.addr),
            IpCidr::V6(c) => IpAddr::V6(c.addr),
        }
    }

    /// "IPv4" or "IPv6".
    pub fn family(self) -> &'static str {
        match self {
            IpCidr::V4(_) => Cidr::FAMILY,
            IpCidr::V6(_) => Cidr6::FAMILY,
        }
    }

    /// The prefix length.
    pub fn prefix(self) -> u8 {
        match self {
            IpCidr::V4(c) => c.prefix,
            IpCidr::V6(c) => c.prefix,
        }
    }

    /// The prefix's first address.
    pub fn network(self) -> IpAddr {
        match self {
            IpCidr::V4(c) => IpAddr::V4(c.network()),
            IpCidr::V6(c) => IpAddr::V6(c.network()),
        }
    }

    /// Whether `ip` (of either family) lies inside the prefix.
    pub fn contains(self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpCidr::V4(c), IpAddr::V4(ip)) => c.contains(ip),
            (IpCidr::V6(c), IpAddr::V6(ip)) => c.contains(ip),
            _ => false,
        }
    }

    /// Checks that an interface (the stack's or the kernel's side) may
    /// have this address; `field` names it in the error.
    pub fn check(self, field: &str) -> Result<(), ConfigError> {
        match self {
            IpCidr::V4(c) => c.check(field),
            IpCidr::V6(c) => c.check(field),
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpCidr::V4(c) => c.fmt(f),
            IpCidr::V6(c) => c.fmt(f),
        }
    }
}

impl FromStr for IpCidr {
    type Err = BadValue;

    /// Parses `A.B.C.D/N` or `X:X::X/N` (an address with a `:` is IPv6).
    fn from_str(s: &str) -> Result<IpCidr, BadValue> {
        if !s.contains('/') {
            return Err(BadValue(format!(
                "{s:?} is not an IPv4 or IPv6 address with a prefix length \
                 (expected like 10.77.0.2/24 or fd00:77::2/64)"
            )));
        }
        if s.contains(':') {
            s.parse().map(IpCidr::V6)
        } else {
            s.parse().map(IpCidr::V4)
        }
    }
}

impl Serialize for IpCidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why a string is not a valid [`MacAddr`], [`Cidr`], [`Cidr6`] or
/// [`IpCidr`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadValue(String);

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadValue {}

/// Why a configuration could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The text is not valid TOML, or does not have the configuration's
    /// shape (unknown key, wrong type, missing required key); the message
    /// carries TOML's line and column.
    Syntax {
        /// The file, if the text came from one.
        path: Option<PathBuf>,
        /// TOML's error.
        source: Box<toml::de::Error>,
    },
    /// A value is not acceptable.
    Invalid {
        /// The file, if the text came from one.
        path: Option<PathBuf>,
        /// The value's place, e.g. `interface[1].addresses[0]`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    fn in_file(mut self, file: &Path) -> ConfigError {
        match &mut self {
            ConfigError::Read { .. } => {}
            ConfigError::Syntax { path, .. } | ConfigError::Invalid { path, .. } => {
                *path = Some(file.to_owned());
            }
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            ConfigError::Syntax { path, source } => {
                if let Some(path) = path {
                    write!(f, "{}: ", path.display())?;
                }
                write!(f, "{source}")
            }
            ConfigError::Invalid {
                path,
                field,
                problem,
            } => {
                if let Some(path) = path {
                    write!(f, "{}: ", path.display())?;
                }
                write!(f, "{field}: {problem}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Syntax { source, .. } => Some(source.as_ref()),
            ConfigError::Invalid { .. } => None,
        }
    }
}

impl ConfigError {
    /// What is wrong, without the file and field it was found at (for a
    /// change made at run time, where there is no file).
    pub fn problem(&self) -> String {
        match self {
            ConfigError::Invalid { problem, .. } => problem.clone(),
            e => e.to_string(),
        }
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: None,
        field: field.into(),
        problem: problem.into(),
    }
}

/// Parses and checks a configuration given as TOML text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: None,
        source: Box::new(e),
    })?;
    let config = raw.resolve()?;
    config.validate()?;
    Ok(config)
}

/// Reads, parses and checks the configuration file at `path`; errors name
/// the file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|e| e.in_file(path))
}

impl Config {
    /// Checks everything that [`parse`] checks beyond syntax: names,
    /// ranges, uniqueness, and that every route's gateway is reachable.
    /// For a configuration built or changed in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("instance", &self.instance, MAX_INSTANCE_LEN)?;
        if self.interfaces.is_empty() {
            return Err(invalid("interface", "at least one [[interface]] is needed"));
        }
        if self.interfaces.len() > MAX_INTERFACES {
            return Err(invalid(
                "interface",
                format!(
                    "{} interfaces configured; at most {MAX_INTERFACES} are supported",
                    self.interfaces.len()
                ),
            ));
        }
        // Each value maps to the field that claimed it first.
        let mut names = HashMap::new();
        let mut macs = HashMap::new();
        let mut ends = HashMap::new();
        let mut stack_addrs: HashMap<Ipv4Addr, String> = HashMap::new();
        let mut stack6: HashMap<Ipv6Addr, String> = HashMap::new();
        for (i, ifc) in self.interfaces.iter().enumerate() {
            let at = |key: &str| format!("interface[{i}].{key}");
            check_name(&at("name"), &ifc.name, MAX_IFNAME_LEN)?;
            if let Some(j) = names.insert(ifc.name.as_str(), i) {
                return Err(invalid(
                    at("name"),
                    format!("{:?} is already the name of interface[{j}]", ifc.name),
                ));
            }
            let xdp_max = strata_drivers::xdp::MAX_FRAME - 14;
            if matches!(ifc.device, Device::AfXdp { .. }) && u32::from(ifc.mtu) > xdp_max {
                return Err(invalid(
                    at("mtu"),
                    format!("an af_xdp interface takes an MTU of at most {xdp_max} (a frame fits a 2 KiB pool buffer after the kernel's headroom)"),
                ));
            }
            if let Device::Pair { link, side } = &ifc.device {
                check_name(&at("link"), link, MAX_LINK_LEN)?;
                if let Some(j) = ends.insert((link.as_str(), *side), i) {
                    return Err(invalid(
                        at("side"),
                        format!("interface[{j}] is already side \"{side}\" of link {link:?}"),
                    ));
                }
            }
            if ifc.mac.0 == [0; 6] {
                return Err(invalid(
                    at("mac"),
                    format!("{} is not a usable MAC address", ifc.mac),
                ));
            }
            if ifc.mac.is_multicast() {
                return Err(invalid(
                    at("mac"),
                    format!(
                        "{} is a multicast address; an interface needs a unicast one (even first byte, like 02:00:00:00:00:01)",
                        ifc.mac
                    ),
                ));
            }
            if let Some(j) = macs.insert(ifc.mac, i) {
                return Err(invalid(
                    at("mac"),
                    format!("{} is already the MAC address of interface[{j}]", ifc.mac),
                ));
            }
            check_range(&at("mtu"), i64::from(ifc.mtu), &MTU)?;
            if ifc.autoconf && self.ip.forwarding {
                return Err(invalid(
                    at("autoconf"),
                    "autoconf is for hosts: a router (`[ip] forwarding = true`) ignores router advertisements, as Linux does",
                ));
            }
            // IPv6 addresses are numbered after the IPv4 ones, as the
            // interface serialises them.
            let field = at("addresses");
            claim(&mut stack_addrs, None, &field, 0, &ifc.addresses)?;
            let first6 = ifc.addresses.len();
            claim(&mut stack6, None, &field, first6, &ifc.addresses6)?;
        }
        // Host addresses after all stack addresses, so a clash with one on a
        // later interface is caught too.
        let (mut host_addrs, mut host6) = (HashMap::new(), HashMap::new());
        for (i, ifc) in self.interfaces.iter().enumerate() {
            let field = format!("interface[{i}].host_addresses");
            let any = !ifc.host_addresses.is_empty() || !ifc.host_addresses6.is_empty();
            if any && ifc.device != Device::Tap {
                return Err(invalid(
                    field,
                    "only a tap interface has a kernel side to give addresses to",
                ));
            }
            let stack = Some(&stack_addrs);
            claim(&mut host_addrs, stack, &field, 0, &ifc.host_addresses)?;
            let first6 = ifc.host_addresses.len();
            claim(
                &mut host6,
                Some(&stack6),
                &field,
                first6,
                &ifc.host_addresses6,
            )?;
        }
        self.validate_routes(&stack_addrs, &stack6)?;
        self.validate_neighbours(&stack_addrs)?;
        self.limits.validate()?;
        let base = self.security.layer_uid_base;
        if base != 0 {
            check_range("security.layer_uid_base", i64::from(base), &LAYER_UID_BASE)?;
        }
        Ok(())
    }

    fn validate_routes(
        &self,
        stack_addrs: &HashMap<Ipv4Addr, String>,
        stack6: &HashMap<Ipv6Addr, String>,
    ) -> Result<(), ConfigError> {
        let v6 = self.routes.iter().filter(|r| r.v6().is_some()).count();
        for (n, family) in [(self.routes.len() - v6, "IPv4"), (v6, "IPv6")] {
            if n > MAX_ROUTES {
                return Err(invalid(
                    "route",
                    format!("{n} {family} routes configured; at most {MAX_ROUTES} are supported"),
                ));
            }
        }
        let (mut destinations, mut destinations6) = (HashMap::new(), HashMap::new());
        for (j, route) in self.routes.iter().enumerate() {
            match route {
                IpRoute::V4(r) => self.validate_route(j, r, &mut destinations, stack_addrs)?,
                IpRoute::V6(r) => self.validate_route(j, r, &mut destinations6, stack6)?,
            }
        }
        Ok(())
    }

    /// Checks route `j`, recording its destination in `destinations` (of
    /// its family); `stack` holds the stack's addresses of its family.
    fn validate_route<C: Prefixed>(
        &self,
        j: usize,
        route: &Route<C>,
        destinations: &mut HashMap<C, usize>,
        stack: &HashMap<C::Addr, String>,
    ) -> Result<(), ConfigError> {
        let at = |key: &str| format!("route[{j}].{key}");
        let to = route.to;
        if to.prefix() > C::MAX_PREFIX {
            return Err(invalid(
                at("to"),
                format!(
                    "prefix length {} is out of range 0..={}",
                    to.prefix(),
                    C::MAX_PREFIX
                ),
            ));
        }
        if to.network() != to.ip() {
            return Err(invalid(
                at("to"),
                format!(
                    "{to} has host bits set (did you mean {}/{}?)",
                    to.network(),
                    to.prefix()
                ),
            ));
        }
        if let Some(k) = destinations.insert(to, j) {
            return Err(invalid(
                at("to"),
                format!("route[{k}] already leads to {to}"),
            ));
        }
        let dev = match &route.dev {
            Some(name) => Some(
                self.interfaces
                    .iter()
                    .find(|ifc| ifc.name == *name)
                    .ok_or_else(|| invalid(at("dev"), format!("no interface named {name:?}")))?,
            ),
            None => None,
        };
        let Some(via) = route.via else {
            if dev.is_none() {
                return Err(invalid(
                    format!("route[{j}]"),
                    "needs via (a gateway), dev (an interface) or both",
                ));
            }
            return Ok(());
        };
        if !C::is_unicast(via) {
            return Err(invalid(
                at("via"),
                format!("{via} is not a unicast address"),
            ));
        }
        if let Some(owner) = stack.get(&via) {
            return Err(invalid(
                at("via"),
                format!("{via} is the stack's own address ({owner})"),
            ));
        }
        C::check_gateway(self, &at("via"), via, dev)
    }
}

impl Config {
    fn validate_neighbours(
        &self,
        stack_addrs: &HashMap<Ipv4Addr, String>,
    ) -> Result<(), ConfigError> {
        if self.neighbours.len() > MAX_NEIGHBOURS {
            return Err(invalid(
                "neighbour",
                format!(
                    "{} permanent neighbours; at most {MAX_NEIGHBOURS} are supported",
                    self.neighbours.len()
                ),
            ));
        }
        let mut seen = HashMap::new();
        for (j, n) in self.neighbours.iter().enumerate() {
            let at = |key: &str| format!("neighbour[{j}].{key}");
            if !is_unicast(n.ip) {
                return Err(invalid(
                    at("ip"),
                    format!("{} is not a unicast address", n.ip),
                ));
            }
            if let Some(owner) = stack_addrs.get(&n.ip) {
                return Err(invalid(
                    at("ip"),
                    format!("{} is the stack's own address ({owner})", n.ip),
                ));
            }
            if n.mac.0 == [0; 6] || n.mac.is_multicast() {
                return Err(invalid(
                    at("mac"),
                    format!("{} is not a unicast MAC address", n.mac),
                ));
            }
            if !self.interfaces.iter().any(|i| i.name == n.dev) {
                return Err(invalid(
                    at("dev"),
                    format!("no interface named {:?}", n.dev),
                ));
            }
            if let Some(k) = seen.insert((n.ip, n.dev.as_str()), j) {
                return Err(invalid(
                    at("ip"),
                    format!("neighbour[{k}] is already {} on {}", n.ip, n.dev),
                ));
            }
        }
        Ok(())
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let fields = [
            ("small_buffers", self.small_buffers, SMALL_BUFFERS),
            ("large_buffers", self.large_buffers, LARGE_BUFFERS),
            ("ring_size", self.ring_size, RING_SIZE),
            ("qdisc_limit", self.qdisc_limit, QDISC_LIMIT),
            (
                "heartbeat_timeout_ms",
                self.heartbeat_timeout_ms,
                HEARTBEAT_TIMEOUT_MS,
            ),
            (
                "restart_backoff_max_ms",
                self.restart_backoff_max_ms,
                RESTART_BACKOFF_MAX_MS,
            ),
            (
                "socket_buffer_bytes",
                self.socket_buffer_bytes,
                SOCKET_BUFFER_BYTES,
            ),
            (
                "ephemeral_port_first",
                self.ephemeral_port_first,
                EPHEMERAL_PORT,
            ),
            (
                "ephemeral_port_last",
                self.ephemeral_port_last,
                EPHEMERAL_PORT,
            ),
            ("sockets", self.sockets, SOCKETS),
            (
                "sockets_per_process",
                self.sockets_per_process,
                SOCKETS_LIMIT,
            ),
            ("sockets_per_user", self.sockets_per_user, SOCKETS_LIMIT),
            ("sessions_per_user", self.sessions_per_user, SOCKETS_LIMIT),
            ("tcp_connections", self.tcp_connections, TCP_CONNECTIONS),
            (
                "conntrack_entries",
                self.conntrack_entries,
                CONNTRACK_ENTRIES,
            ),
        ];
        for (name, value, range) in fields {
            check_range(&format!("limits.{name}"), i64::from(value), &range)?;
        }
        if self.ephemeral_port_last < self.ephemeral_port_first {
            return Err(invalid(
                "limits.ephemeral_port_last",
                format!(
                    "{} is below ephemeral_port_first ({})",
                    self.ephemeral_port_last, self.ephemeral_port_first
                ),
            ));
        }
        if let Some(v) = self.send_bytes_per_user {
            check_range("limits.send_bytes_per_user", v as i64, &SEND_BYTES_PER_USER)?;
        }
        if !self.ring_size.is_power_of_two() {
            return Err(invalid(
                "limits.ring_size",
                format!("{} is not a power of two", self.ring_size),
            ));
        }
        Ok(())
    }
}

/// The MAC an interface gets when the file gives none.
fn default_mac(index: usize) -> MacAddr {
    MacAddr([0x02, 0x53, 0x54, 0x00, 0x00, (index as u8).wrapping_add(1)])
}

fn check_name(field: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    let ok = (1..=max).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{value:?} is not a valid name (1 to {max} characters from a-z, A-Z, 0-9, _ and -)"
            ),
        ))
    }
}

fn check_range(field: &str, value: i64, range: &RangeInclusive<i64>) -> Result<i64, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!(
                "{value} is out of range {}..={}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// An address with a prefix length of one family ([`Cidr`], [`Cidr6`]),
/// as validation and [`Route`] see it.
pub trait Prefixed: Copy + Eq + Hash + fmt::Display + fmt::Debug + Serialize {
    /// The address alone.
    type Addr: Copy + Eq + Hash + fmt::Display + fmt::Debug + Serialize;
    /// "IPv4" or "IPv6".
    const FAMILY: &'static str;
    /// The longest prefix length.
    const MAX_PREFIX: u8;
    /// The address.
    fn ip(self) -> Self::Addr;
    /// The prefix length.
    fn prefix(self) -> u8;
    /// The prefix's first address.
    fn network(self) -> Self::Addr;
    /// Checks that an interface may have this address.
    fn check(self, field: &str) -> Result<(), ConfigError>;
    /// Whether a route's gateway may be `ip`.
    fn is_unicast(ip: Self::Addr) -> bool;
    /// Checks, in `config`, the gateway `via` of route `at` (`route[j]`)
    /// sending on `dev` (if named), beyond being unicast and not one of
    /// the stack's configured addresses.
    fn check_gateway(
        config: &Config,
        at: &str,
        via: Self::Addr,
        dev: Option<&Interface>,
    ) -> Result<(), ConfigError>;
}

impl Prefixed for Cidr {
    type Addr = Ipv4Addr;
    const FAMILY: &'static str = "IPv4";
    const MAX_PREFIX: u8 = 32;
    fn ip(self) -> Ipv4Addr {
        self.addr
    }
    fn prefix(self) -> u8 {
        self.prefix
    }
    fn network(self) -> Ipv4Addr {
        Cidr::network(self)
    }
    fn check(self, field: &str) -> Result<(), ConfigError> {
        check_host_address(field, self)
    }
    fn is_unicast(ip: Ipv4Addr) -> bool {
        is_unicast(ip)
    }
    /// Inside a connected prefix of `dev`, or of any interface.
    fn check_gateway(
        config: &Config,
        at: &str,
        via: Ipv4Addr,
        dev: Option<&Interface>,
    ) -> Result<(), ConfigError> {
        let reachable = |ifc: &Interface| ifc.addresses.iter().any(|a| a.contains(via));
        match dev {
            Some(ifc) if !reachable(ifc) => {
                let prefixes: Vec<String> = ifc
                    .addresses
                    .iter()
                    .map(|a| format!("{}/{}", a.network(), a.prefix))
                    .collect();
                let prefixes = if prefixes.is_empty() {
                    "it has no addresses".to_owned()
                } else {
                    prefixes.join(", ")
                };
                Err(invalid(
                    at,
                    format!(
                        "{via} is not in a connected prefix of interface {:?} ({prefixes})",
                        ifc.name
                    ),
                ))
            }
            None if !config.interfaces.iter().any(reachable) => Err(invalid(
                at,
                format!("{via} is not in the connected prefix of any interface"),
            )),
            _ => Ok(()),
        }
    }
}

impl Prefixed for Cidr6 {
    type Addr = Ipv6Addr;
    const FAMILY: &'static str = "IPv6";
    const MAX_PREFIX: u8 = 128;
    fn ip(self) -> Ipv6Addr {
        self.addr
    }
    fn prefix(self) -> u8 {
        self.prefix
    }
    fn network(self) -> Ipv6Addr {
        Cidr6::network(self)
    }
    fn check(self, field: &str) -> Result<(), ConfigError> {
        check_address6(field, self)
    }
    /// Not multicast, nor in ::/8 (unspecified, loopback, IPv4-mapped).
    fn is_unicast(ip: Ipv6Addr) -> bool {
        !RESERVED6.contains(ip) && !ip.is_multicast()
    }
    /// Not the stack's link-local address; a link-local gateway needs
    /// `dev`; a global one without `dev` lies in the prefix of an IPv6
    /// address of some interface.
    fn check_gateway(
        config: &Config,
        at: &str,
        via: Ipv6Addr,
        dev: Option<&Interface>,
    ) -> Result<(), ConfigError> {
        if let Some(ifc) = config.interfaces.iter().find(|i| link_local_of(i) == via) {
            return Err(invalid(
                at,
                format!(
                    "{via} is the stack's own link-local address on {:?}",
                    ifc.name
                ),
            ));
        }
        if dev.is_some() {
            return Ok(());
        }
        if LINK_LOCAL.contains(via) {
            return Err(invalid(
                at,
                format!(
                    "{via} is a link-local address, on every link: name the interface it is on with dev"
                ),
            ));
        }
        let reachable = |ifc: &Interface| ifc.addresses6.iter().any(|a| a.contains(via));
        if config.interfaces.iter().any(reachable) {
            return Ok(());
        }
        let prefixes: Vec<String> = config
            .interfaces
            .iter()
            .flat_map(|i| {
                i.addresses6
                    .iter()
                    .map(move |a| format!("{}/{} on {}", a.network(), a.prefix, i.name))
            })
            .collect();
        let prefixes = if prefixes.is_empty() {
            "there are none".to_owned()
        } else {
            prefixes.join(", ")
        };
        Err(invalid(
            at,
            format!(
                "{via} is in no prefix of the interfaces' IPv6 addresses ({prefixes}): \
                 name the interface it is on with dev, or give one an address in its prefix"
            ),
        ))
    }
}

/// The link-local address the stack makes from an interface's MAC.
pub fn link_local_of(ifc: &Interface) -> Ipv6Addr {
    strata_proto::ndp::link_local_from_mac(strata_proto::MacAddr(ifc.mac.0))
}

/// Checks the addresses `list` of one family, which the file lists in
/// `field` from position `first` on, and records each in `claimed` (the
/// field that claimed each address first), refusing one already there or
/// in `stack` (the stack's own addresses, when `list` is the kernel
/// side's).
fn claim<C: Prefixed>(
    claimed: &mut HashMap<C::Addr, String>,
    stack: Option<&HashMap<C::Addr, String>>,
    field: &str,
    first: usize,
    list: &[C],
) -> Result<(), ConfigError> {
    if list.len() > MAX_ADDRESSES {
        return Err(invalid(
            field,
            format!(
                "{} {} addresses; at most {MAX_ADDRESSES} are supported",
                list.len(),
                C::FAMILY
            ),
        ));
    }
    for (k, cidr) in list.iter().enumerate() {
        let at = format!("{field}[{}]", first + k);
        cidr.check(&at)?;
        let ip = cidr.ip();
        if let Some(owner) = stack.and_then(|s| s.get(&ip)) {
            return Err(invalid(
                at,
                format!("{ip} is the stack's own address ({owner})"),
            ));
        }
        if let Some(first) = claimed.get(&ip) {
            return Err(invalid(at, format!("{ip} is already {first}")));
        }
        claimed.insert(ip, at);
    }
    Ok(())
}

/// Whether an address can belong to a host: not 0/8, loopback, multicast,
/// reserved (240/4) or the limited broadcast.
fn is_unicast(ip: Ipv4Addr) -> bool {
    let first = ip.octets()[0];
    first != 0 && !ip.is_loopback() && !ip.is_multicast() && first < 240
}

/// Checks an address an interface (the stack's or the kernel's side) is to
/// have.
fn check_host_address(field: &str, cidr: Cidr) -> Result<(), ConfigError> {
    if cidr.prefix > 32 {
        return Err(invalid(
            field,
            format!("prefix length {} is out of range 0..=32", cidr.prefix),
        ));
    }
    if cidr.prefix == 0 {
        return Err(invalid(
            field,
            "prefix length 0 would put every address on this link; use a default route instead",
        ));
    }
    if !is_unicast(cidr.addr) {
        return Err(invalid(
            field,
            format!("{} is not a unicast address", cidr.addr),
        ));
    }
    // /31 and /32 have no network or broadcast address (RFC 3021).
    if cidr.prefix <= 30 {
        let net = format!("{}/{}", cidr.network(), cidr.prefix);
        if cidr.addr == cidr.network() {
            return Err(invalid(
                field,
                format!("{} is the network address of {net}", cidr.addr),
            ));
        }
        if cidr.addr == cidr.broadcast() {
            return Err(invalid(
                field,
                format!("{} is the broadcast address of {net}", cidr.addr),
            ));
        }
    }
    Ok(())
}

/// fe80::/10, the link-local unicast prefix (RFC 4291 §2.5.6).
const LINK_LOCAL: Cidr6 = Cidr6 {
    addr: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
    prefix: 10,
};

/// ::/8, which holds the unspecified and loopback addresses and other
/// reserved ones (RFC 4291 §2.4).
const RESERVED6: Cidr6 = Cidr6 {
    addr: Ipv6Addr::UNSPECIFIED,
    prefix: 8,
};

/// Checks an IPv6 address an interface (the stack's or the kernel's side)
/// is to have: a global or unique-local unicast one.
fn check_address6(field: &str, cidr: Cidr6) -> Result<(), ConfigError> {
    let a = cidr.addr;
    let refuse = |problem: String| Err(invalid(field, problem));
    if cidr.prefix > 128 {
        return refuse(format!(
            "prefix length {} is out of range 0..=128",
            cidr.prefix
        ));
    }
    if cidr.prefix == 0 {
        return refuse("prefix length 0 would put every address on this link".into());
    }
    if let Some(v4) = a.to_ipv4_mapped() {
        return refuse(format!(
            "{a} is an IPv4-mapped address; give the IPv4 address as such (like {v4}/24)"
        ));
    }
    if LINK_LOCAL.contains(a) {
        return refuse(format!(
            "{a} is a link-local address; link-local addresses are made from the MAC automatically"
        ));
    }
    if RESERVED6.contains(a) || a.is_multicast() {
        return refuse(format!("{a} is not a unicast address"));
    }
    // /127 and /128 have no subnet-router anycast address (RFC 6164).
    if cidr.prefix <= 126 && a == cidr.network() {
        return refuse(format!(
            "{a} is the subnet-router anycast address of {}/{}",
            cidr.network(),
            cidr.prefix
        ));
    }
    Ok(())
}

/// The file as written: strings and numbers, parsed and checked by
/// [`RawConfig::resolve`] so errors can name their field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    instance: Option<String>,
    #[serde(default)]
    interface: Vec<RawInterface>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    neighbour: Vec<RawNeighbour>,
    #[serde(default)]
    ip: RawIp,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    filter: RawFilter,
    #[serde(default)]
    sockd: RawSockd,
    #[serde(default)]
    security: RawSecurity,
    #[serde(default)]
    cpu: RawCpu,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCpu {
    policy: Option<String>,
    cpus: Option<String>,
    scheduling: Option<String>,
    #[serde(default)]
    layer: BTreeMap<String, String>,
}

impl RawCpu {
    fn resolve(self) -> Result<Cpu, ConfigError> {
        let policy = match self.policy.as_deref() {
            None => Cpu::default().policy,
            Some(p) => Policy::parse(p).ok_or_else(|| {
                invalid("cpu.policy", format!("{p:?}: one of compact, spread, none"))
            })?,
        };
        let cpus = match self.cpus {
            None => None,
            Some(s) => Some(CpuList::parse(&s).map_err(|e| invalid("cpu.cpus", e))?),
        };
        let scheduling = match self.scheduling.as_deref() {
            None => Cpu::default().scheduling,
            Some(s) => Scheduling::parse(s)
                .ok_or_else(|| invalid("cpu.scheduling", format!("{s:?}: one of batch, normal")))?,
        };
        let mut layer = BTreeMap::new();
        for (name, s) in self.layer {
            let field = format!("cpu.layer.{name}");
            if strata_ipc::LayerId::from_label(&name)
                .is_none_or(|l| l == strata_ipc::LayerId::LAUNCHER)
            {
                return Err(invalid(field, format!("{name:?} is not a layer (netdevd, filterd, ipd, tcpd, udpd, sockd, driverd0...)")));
            }
            let l = CpuList::parse(&s).map_err(|e| invalid(field, e))?;
            layer.insert(name, l);
        }
        Ok(Cpu {
            policy,
            cpus,
            layer,
            scheduling,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    layer_uid_base: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSockd {
    socket_mode: Option<i64>,
    socket_group: Option<RawGroup>,
}

/// A group by name or by number.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawGroup {
    Id(i64),
    Name(String),
}

impl RawSockd {
    fn resolve(self) -> Result<Sockd, ConfigError> {
        let socket_group = match self.socket_group {
            None => None,
            Some(RawGroup::Id(g)) => {
                Some(check_range("sockd.socket_group", g, &(0..=u32::MAX as i64))? as u32)
            }
            Some(RawGroup::Name(n)) => match nix::unistd::Group::from_name(&n) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                _ => {
                    return Err(invalid(
                        "sockd.socket_group".to_owned(),
                        format!("{n:?} is not a group on this machine"),
                    ))
                }
            },
        };
        Ok(Sockd {
            socket_mode: match self.socket_mode {
                None => Sockd::default().socket_mode,
                Some(m) => check_range("sockd.socket_mode", m, &(0..=0o777))? as u32,
            },
            socket_group,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    rules: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIp {
    forwarding: Option<bool>,
    unprivileged_port_start: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: String,
    driver: Option<String>,
    link: Option<String>,
    side: Option<String>,
    device: Option<String>,
    mac: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    autoconf: Option<bool>,
    mtu: Option<i64>,
    #[serde(default)]
    host_addresses: Vec<String>,
    offloads: Option<bool>,
    poll: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    to: String,
    via: Option<String>,
    dev: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNeighbour {
    ip: String,
    mac: String,
    dev: String,
}

impl RawNeighbour {
    fn resolve(self, j: usize) -> Result<Neighbour, ConfigError> {
        let at = |key: &str| format!("neighbour[{j}].{key}");
        Ok(Neighbour {
            ip: self
                .ip
                .parse()
                .map_err(|_| invalid(at("ip"), format!("{:?} is not an IPv4 address", self.ip)))?,
            mac: self
                .mac
                .parse()
                .map_err(|e: BadValue| invalid(at("mac"), e.0))?,
            dev: self.dev,
        })
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    small_buffers: Option<i64>,
    large_buffers: Option<i64>,
    ring_size: Option<i64>,
    qdisc_limit: Option<i64>,
    heartbeat_timeout_ms: Option<i64>,
    restart_backoff_max_ms: Option<i64>,
    socket_buffer_bytes: Option<i64>,
    ephemeral_port_first: Option<i64>,
    ephemeral_port_last: Option<i64>,
    sockets: Option<i64>,
    sockets_per_process: Option<i64>,
    sockets_per_user: Option<i64>,
    sessions_per_user: Option<i64>,
    tcp_connections: Option<i64>,
    conntrack_entries: Option<i64>,
    send_bytes_per_user: Option<i64>,
}

impl RawConfig {
    /// Parses every value and fills in defaults; [`Config::validate`] then
    /// checks how the values fit together.
    fn resolve(self) -> Result<Config, ConfigError> {
        let interfaces = self
            .interface
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.resolve(i))
            .collect::<Result<_, _>>()?;
        let routes = self
            .route
            .into_iter()
            .enumerate()
            .map(|(j, raw)| raw.resolve(j))
            .collect::<Result<_, _>>()?;
        let neighbours = self
            .neighbour
            .into_iter()
            .enumerate()
            .map(|(j, raw)| raw.resolve(j))
            .collect::<Result<_, _>>()?;
        Ok(Config {
            instance: self.instance.unwrap_or_else(|| "default".to_owned()),
            interfaces,
            routes,
            neighbours,
            ip: Ip {
                forwarding: self.ip.forwarding.unwrap_or(false),
                unprivileged_port_start: match self.ip.unprivileged_port_start {
                    None => Ip::default().unprivileged_port_start,
                    Some(v) => check_range("ip.unprivileged_port_start", v, &(0..=65_535))? as u16,
                },
            },
            limits: self.limits.resolve()?,
            filter: Filter {
                rules: self.filter.rules,
            },
            sockd: self.sockd.resolve()?,
            cpu: self.cpu.resolve()?,
            security: Security {
                layer_uid_base: match self.security.layer_uid_base {
                    None => DEFAULT_LAYER_UID_BASE,
                    Some(0) => 0,
                    Some(v) => check_range("security.layer_uid_base", v, &LAYER_UID_BASE)? as u32,
                },
            },
        })
    }
}

impl RawInterface {
    fn resolve(self, i: usize) -> Result<Interface, ConfigError> {
        let at = |key: &str| format!("interface[{i}].{key}");
        let driver = self.driver.as_deref().unwrap_or("tap");
        let device = match driver {
            "tap" => {
                if self.link.is_some() {
                    return Err(invalid(
                        at("link"),
                        "only a pair interface has a link (this one's driver is tap)",
                    ));
                }
                if self.side.is_some() {
                    return Err(invalid(
                        at("side"),
                        "only a pair interface has a side (this one's driver is tap)",
                    ));
                }
                Device::Tap
            }
            "pair" => {
                let link = self.link.ok_or_else(|| {
                    invalid(at("link"), "a pair interface needs the name of its link")
                })?;
                let side = match self.side.as_deref() {
                    Some("a") => Side::A,
                    Some("b") => Side::B,
                    Some(other) => {
                        return Err(invalid(
                            at("side"),
                            format!("{other:?} is not a side (expected \"a\" or \"b\")"),
                        ));
                    }
                    None => {
                        return Err(invalid(
                            at("side"),
                            "a pair interface needs a side, \"a\" or \"b\"",
                        ))
                    }
                };
                Device::Pair { link, side }
            }
            "af_xdp" => {
                if self.link.is_some() || self.side.is_some() {
                    return Err(invalid(
                        at("link"),
                        "only a pair interface has a link and a side (this one's driver is af_xdp)",
                    ));
                }
                let device = self.device.clone().ok_or_else(|| {
                    invalid(
                        at("device"),
                        "an af_xdp interface needs the kernel interface it drives (device = \"eth1\")",
                    )
                })?;
                check_name(&at("device"), &device, 15)?;
                Device::AfXdp { device }
            }
            "vfio" => {
                if self.link.is_some() || self.side.is_some() {
                    return Err(invalid(
                        at("link"),
                        "only a pair interface has a link and a side (this one's driver is vfio)",
                    ));
                }
                let device = self.device.clone().ok_or_else(|| {
                    invalid(
                        at("device"),
                        "a vfio interface needs the PCI address of its device (device = \"0000:00:03.0\")",
                    )
                })?;
                if !strata_drivers::vfio::valid_pci_address(&device) {
                    return Err(invalid(
                        at("device"),
                        format!("{device:?} is not a PCI address (DDDD:BB:DD.F in lower-case hex, like 0000:00:03.0)"),
                    ));
                }
                Device::Vfio {
                    device,
                    poll: self.poll.unwrap_or(false),
                }
            }
            other => {
                return Err(invalid(
                    at("driver"),
                    format!("{other:?} is not a driver (expected \"tap\", \"pair\", \"af_xdp\" or \"vfio\")"),
                ));
            }
        };
        if self.device.is_some() && !matches!(device, Device::AfXdp { .. } | Device::Vfio { .. }) {
            return Err(invalid(
                at("device"),
                "only an af_xdp or vfio interface names a device",
            ));
        }
        if self.poll.is_some() && !matches!(device, Device::Vfio { .. }) {
            return Err(invalid(at("poll"), "only a vfio interface polls"));
        }
        let mac_given = self.mac.is_some();
        let mac = match self.mac {
            Some(text) => text
                .parse()
                .map_err(|e: BadValue| invalid(at("mac"), e.0))?,
            None => default_mac(i),
        };
        let mtu = match self.mtu {
            Some(mtu) => check_range(&at("mtu"), mtu, &MTU)?,
            None => 1500,
        };

        let offloads = match (self.offloads, &device) {
            (Some(true), Device::Pair { .. }) => {
                return Err(invalid(at("offloads"), "the pair driver has no offloads"))
            }
            (Some(true), Device::AfXdp { .. }) => {
                return Err(invalid(at("offloads"), "the af_xdp driver has no offloads"))
            }
            (Some(on), _) => on,
            (None, device) => matches!(device, Device::Tap | Device::Vfio { .. }),
        };
        let (addresses, addresses6) = parse_cidrs(&at("addresses"), &self.addresses)?;
        let (host_addresses, host_addresses6) =
            parse_cidrs(&at("host_addresses"), &self.host_addresses)?;
        Ok(Interface {
            name: self.name,
            device,
            mac,
            mac_given,
            addresses,
            addresses6,
            autoconf: self.autoconf.unwrap_or(false),
            mtu: u16::try_from(mtu)
                .map_err(|_| invalid(at("mtu"), format!("{mtu} is not an MTU")))?,
            host_addresses,
            host_addresses6,
            offloads,
        })
    }
}

/// Parses a list of addresses of both families and splits it by family.
/// Each is checked here, where its place in the list as written is known
/// ([`Config::validate`] numbers them IPv4 first).
fn parse_cidrs(field: &str, texts: &[String]) -> Result<(Vec<Cidr>, Vec<Cidr6>), ConfigError> {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (k, text) in texts.iter().enumerate() {
        let at = format!("{field}[{k}]");
        let cidr: IpCidr = text.parse().map_err(|e: BadValue| invalid(&at, e.0))?;
        cidr.check(&at)?;
        match cidr {
            IpCidr::V4(c) => v4.push(c),
            IpCidr::V6(c) => v6.push(c),
        }
    }
    Ok((v4, v6))
}

impl RawRoute {
    fn resolve(self, j: usize) -> Result<IpRoute, ConfigError> {
        let at = |key: &str| format!("route[{j}].{key}");
        let to = match self.to.as_str() {
            "default" => IpCidr::V4(Cidr {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
            }),
            text if !text.contains('/') => {
                return Err(invalid(
                    at("to"),
                    format!(
                        "{text:?} is not a destination (expected \"default\", A.B.C.D/N, \
                         \"::/0\" or X:X::X/N)"
                    ),
                ));
            }
            text => text.parse().map_err(|e: BadValue| invalid(at("to"), e.0))?,
        };
        let via = match self.via {
            Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                invalid(
                    at("via"),
                    format!("{text:?} is not an {} address", to.family()),
                )
            })?),
            None => None,
        };
        IpRoute::new(to, via, self.dev).map_err(|e| invalid(at("via"), e))
    }
}

impl RawLimits {
    fn resolve(self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let limit = |name: &str, raw: Option<i64>, default: u32, range: RangeInclusive<i64>| {
            let field = format!("limits.{name}");
            match raw {
                None => Ok(default),
                Some(v) => {
                    let v = check_range(&field, v, &range)?;
                    u32::try_from(v).map_err(|_| invalid(field, format!("{v} is out of range")))
                }
            }
        };
        Ok(Limits {
            small_buffers: limit(
                "small_buffers",
                self.small_buffers,
                d.small_buffers,
                SMALL_BUFFERS,
            )?,
            large_buffers: limit(
                "large_buffers",
                self.large_buffers,
                d.large_buffers,
                LARGE_BUFFERS,
            )?,
            ring_size: limit("ring_size", self.ring_size, d.ring_size, RING_SIZE)?,
            qdisc_limit: limit("qdisc_limit", self.qdisc_limit, d.qdisc_limit, QDISC_LIMIT)?,
            heartbeat_timeout_ms: limit(
                "heartbeat_timeout_ms",
                self.heartbeat_timeout_ms,
                d.heartbeat_timeout_ms,
                HEARTBEAT_TIMEOUT_MS,
            )?,
            restart_backoff_max_ms: limit(
                "restart_backoff_max_ms",
                self.restart_backoff_max_ms,
                d.restart_backoff_max_ms,
                RESTART_BACKOFF_MAX_MS,
            )?,
            socket_buffer_bytes: limit(
                "socket_buffer_bytes",
                self.socket_buffer_bytes,
                d.socket_buffer_bytes,
                SOCKET_BUFFER_BYTES,
            )?,
            ephemeral_port_first: limit(
                "ephemeral_port_first",
                self.ephemeral_port_first,
                d.ephemeral_port_first,
                EPHEMERAL_PORT,
            )?,
            ephemeral_port_last: limit(
                "ephemeral_port_last",
                self.ephemeral_port_last,
                d.ephemeral_port_last,
                EPHEMERAL_PORT,
            )?,
            sockets: limit("sockets", self.sockets, d.sockets, SOCKETS)?,
            sockets_per_process: limit(
                "sockets_per_process",
                self.sockets_per_process,
                d.sockets_per_process,
                SOCKETS_LIMIT,
            )?,
            sockets_per_user: limit(
                "sockets_per_user",
                self.sockets_per_user,
                d.sockets_per_user,
                SOCKETS_LIMIT,
            )?,
            sessions_per_user: limit(
                "sessions_per_user",
                self.sessions_per_user,
                d.sessions_per_user,
                SOCKETS_LIMIT,
            )?,
            tcp_connections: limit(
                "tcp_connections",
                self.tcp_connections,
                d.tcp_connections,
                TCP_CONNECTIONS,
            )?,
            conntrack_entries: limit(
                "conntrack_entries",
                self.conntrack_entries,
                d.conntrack_entries,
                CONNTRACK_ENTRIES,
            )?,
            send_bytes_per_user: match self.send_bytes_per_user {
                None => None,
                Some(v) => {
                    Some(check_range("limits.send_bytes_per_user", v, &SEND_BYTES_PER_USER)? as u64)
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One interface, complete but for what a test adds to its table.
    const IFACE: &str = "[[interface]]\nname = \"strata0\"\naddresses = [\"10.77.0.2/24\"]\n";

    fn error_of(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("accepted:\n{text}\nas {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Checks every (text, expected message) case and reports all mismatches
    /// at once.
    fn expect_errors(cases: &[(String, &str)]) {
        let mut wrong = Vec::new();
        for (text, expected) in cases {
            let got = error_of(text);
            if got != *expected {
                wrong.push(format!(
                    "--- input:\n{text}--- expected: {expected}\n--- got:      {got}\n"
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} cases wrong:\n{}",
            wrong.len(),
            cases.len(),
            wrong.join("\n")
        );
    }

    fn iface(body: &str) -> String {
        format!("[[interface]]\nname = \"strata0\"\n{body}")
    }

    fn route(body: &str) -> String {
        format!("{IFACE}[[route]]\n{body}")
    }

    #[test]
    fn default_is_the_documented_one_and_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.instance, "default");
        assert_eq!(c.interfaces.len(), 1);
        let i = &c.interfaces[0];
        assert_eq!(i.name, "strata0");
        assert_eq!(i.device, Device::Tap);
        assert_eq!(i.mac, MacAddr([0x02, 0x53, 0x54, 0, 0, 1]));
        assert_eq!(i.addresses, ["10.77.0.2/24".parse().unwrap()]);
        assert_eq!(i.host_addresses, ["10.77.0.1/24".parse().unwrap()]);
        assert_eq!(i.mtu, 1500);
        assert!(c.routes.is_empty());
        assert_eq!(c.limits, Limits::default());
        // The default is also what the shortest sensible file means.
        let parsed = parse(&format!("{IFACE}host_addresses = [\"10.77.0.1/24\"]\n")).unwrap();
        assert_eq!(parsed, c);
    }

    #[test]
    fn example_file_parses() {
        let c = parse(include_str!("../strata.example.toml")).unwrap();
        assert_eq!(c.interfaces[0].name, "strata0");
        assert_eq!(c.routes.len(), 1);
        let r = c.routes[0].v4().unwrap();
        assert_eq!(
            r.to,
            Cidr {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix: 0
            }
        );
        assert_eq!(r.via, Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(c.ip, Ip::default());
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn defaults_fill_in_and_pairs_parse() {
        let c = parse(
            "instance = \"lab-1\"\n\
             [[interface]]\nname = \"t0\"\naddresses = [\"10.1.0.2/24\", \"10.2.0.2/16\"]\n\
             [[interface]]\nname = \"p0\"\ndriver = \"pair\"\nlink = \"l1\"\nside = \"b\"\n\
             addresses = [\"192.168.5.2/31\"]\nmtu = 9000\nmac = \"0A:bc:DE:00:00:ff\"\n\
             [[interface]]\nname = \"p1\"\ndriver = \"pair\"\nlink = \"l1\"\nside = \"a\"\n\
             [[route]]\nto = \"172.16.0.0/12\"\nvia = \"192.168.5.3\"\n\
             [[route]]\nto = \"10.9.0.0/16\"\ndev = \"t0\"\n\
             [limits]\nring_size = 64\nlarge_buffers = 0\n",
        )
        .unwrap();
        assert_eq!(c.instance, "lab-1");
        assert_eq!(c.interfaces[0].device, Device::Tap);
        assert_eq!(c.interfaces[0].mac.to_string(), "02:53:54:00:00:01");
        assert_eq!(c.interfaces[0].mtu, 1500);
        assert!(c.interfaces[0].host_addresses.is_empty());
        assert_eq!(
            c.interfaces[1].device,
            Device::Pair {
                link: "l1".into(),
                side: Side::B
            }
        );
        assert_eq!(c.interfaces[1].mac.to_string(), "0a:bc:de:00:00:ff");
        assert_eq!(c.interfaces[1].mtu, 9000);
        assert_eq!(c.interfaces[2].mac.to_string(), "02:53:54:00:00:03");
        assert!(c.interfaces[2].addresses.is_empty());
        assert_eq!(c.routes[0].dev(), None);
        assert_eq!(c.routes[1].via(), None);
        assert_eq!(c.limits.ring_size, 64);
        assert_eq!(c.limits.large_buffers, 0);
        assert_eq!(c.limits.small_buffers, 4096);
    }

    #[test]
    fn serialised_config_reads_back_the_same() {
        for c in [
            Config::default(),
            parse(include_str!("../strata.example.toml")).unwrap(),
            parse(&format!(
                "{IFACE}[[interface]]\nname = \"p\"\ndriver = \"pair\"\nlink = \"x\"\nside = \"a\"\n\
                 [[route]]\nto = \"10.8.0.0/16\"\nvia = \"10.77.0.9\"\n"
            ))
            .unwrap(),
        ] {
            let text = toml::to_string(&c).unwrap();
            assert_eq!(parse(&text).unwrap(), c, "{text}");
        }
    }

    #[test]
    fn toml_errors_keep_their_position() {
        let e = error_of("instance = \"a\"\n[[interface]\n");
        assert!(e.contains("line 2"), "{e}");
        let e = error_of(&format!("{IFACE}mtu = \"big\"\n"));
        assert!(e.contains("line 4") && e.contains("invalid type"), "{e}");
        let e = error_of("[[interface]]\naddresses = []\n");
        assert!(e.contains("missing field `name`"), "{e}");
        let e = error_of("[[route]]\nvia = \"10.0.0.1\"\n");
        assert!(e.contains("missing field `to`"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        for text in [
            format!("instanse = \"x\"\n{IFACE}"),
            format!("{IFACE}adresses = [\"10.0.0.1/8\"]\n"),
            route("to = \"default\"\ngateway = \"10.77.0.1\"\n"),
            format!("{IFACE}[limits]\nsmall_bufs = 10\n"),
            format!("{IFACE}[qdisc]\nkind = \"fq\"\n"),
            format!("{IFACE}[ip]\nip_forward = true\n"),
        ] {
            let e = error_of(&text);
            assert!(e.contains("unknown field"), "{text}: {e}");
        }
    }

    #[test]
    fn sockd_socket_mode_and_group() {
        let d = parse(IFACE).unwrap().sockd;
        assert_eq!((d.socket_mode, d.socket_group), (0o666, None));
        let c = parse(&format!(
            "{IFACE}[sockd]\nsocket_mode = 0o660\nsocket_group = \"root\"\n"
        ))
        .unwrap();
        assert_eq!(
            (c.sockd.socket_mode, c.sockd.socket_group),
            (0o660, Some(0))
        );
        let c = parse(&format!("{IFACE}[sockd]\nsocket_group = 4242\n")).unwrap();
        assert_eq!(c.sockd.socket_group, Some(4242));
        let e = error_of(&format!(
            "{IFACE}[sockd]\nsocket_group = \"no-such-group-here\"\n"
        ));
        assert!(e.contains("sockd.socket_group"), "{e}");
        let e = error_of(&format!("{IFACE}[sockd]\nsocket_mode = 0o1777\n"));
        assert!(e.contains("sockd.socket_mode"), "{e}");
    }

    #[test]
    fn unprivileged_ports_start_at_1024_unless_set() {
        assert_eq!(parse(IFACE).unwrap().ip.unprivileged_port_start, 1024);
        let c = parse(&format!("{IFACE}[ip]\nunprivileged_port_start = 0\n")).unwrap();
        assert_eq!(c.ip.unprivileged_port_start, 0);
        let e = error_of(&format!("{IFACE}[ip]\nunprivileged_port_start = 65536\n"));
        assert!(e.contains("ip.unprivileged_port_start"), "{e}");
    }

    #[test]
    fn ip_forwarding_is_off_unless_asked_for() {
        assert!(!parse(IFACE).unwrap().ip.forwarding);
        assert!(!parse(&format!("{IFACE}[ip]\n")).unwrap().ip.forwarding);
        let on = parse(&format!("{IFACE}[ip]\nforwarding = true\n")).unwrap();
        assert!(on.ip.forwarding);
        let text = toml::to_string(&on).unwrap();
        assert_eq!(parse(&text).unwrap(), on, "{text}");
        for bad in ["\"yes\"", "1", "[true]"] {
            let e = error_of(&format!("{IFACE}[ip]\nforwarding = {bad}\n"));
            assert!(
                e.contains("line 5") && e.contains("invalid type") && e.contains("boolean"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn autoconf_is_off_unless_asked_for_and_not_on_a_router() {
        let c = parse(IFACE).unwrap();
        assert!(!c.interfaces[0].autoconf);
        assert!(!Config::default().interfaces[0].autoconf);
        let off = parse(&iface("autoconf = false\n")).unwrap();
        assert!(!off.interfaces[0].autoconf);
        let on = parse(&format!(
            "{IFACE}autoconf = true\n[[interface]]\nname = \"s1\"\n"
        ))
        .unwrap();
        assert!(on.interfaces[0].autoconf);
        assert!(!on.interfaces[1].autoconf);
        on.validate().unwrap();
        let text = toml::to_string(&on).unwrap();
        assert!(text.contains("autoconf = true"), "{text}");
        assert_eq!(parse(&text).unwrap(), on, "{text}");
        // A router may have it off, said or not.
        let router = parse(&format!(
            "{IFACE}autoconf = false\n[ip]\nforwarding = true\n"
        ))
        .unwrap();
        assert!(router.ip.forwarding && !router.interfaces[0].autoconf);
        expect_errors(&[
            (
                format!("{IFACE}autoconf = true\n[ip]\nforwarding = true\n"),
                "interface[0].autoconf: autoconf is for hosts: a router (`[ip] forwarding = true`) ignores router advertisements, as Linux does",
            ),
            (
                format!("{IFACE}[[interface]]\nname = \"s1\"\nautoconf = true\n[ip]\nforwarding = true\n"),
                "interface[1].autoconf: autoconf is for hosts: a router (`[ip] forwarding = true`) ignores router advertisements, as Linux does",
            ),
        ]);
        // The same check for a configuration changed in code.
        let mut c = router;
        c.interfaces[0].autoconf = true;
        assert!(c.validate().is_err());
        let e = error_of(&iface("autoconf = \"yes\"\n"));
        assert!(e.contains("invalid type") && e.contains("boolean"), "{e}");
    }

    #[test]
    fn instance_and_interface_count_errors() {
        let nine: String = (0..9)
            .map(|i| format!("[[interface]]\nname = \"s{i}\"\naddresses = [\"10.0.{i}.1/24\"]\n"))
            .collect();
        expect_errors(&[
            (format!("instance = \"\"\n{IFACE}"), "instance: \"\" is not a valid name (1 to 32 characters from a-z, A-Z, 0-9, _ and -)"),
            (format!("instance = \"../etc\"\n{IFACE}"), "instance: \"../etc\" is not a valid name (1 to 32 characters from a-z, A-Z, 0-9, _ and -)"),
            (format!("instance = \"{}\"\n{IFACE}", "x".repeat(33)), "instance: \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\" is not a valid name (1 to 32 characters from a-z, A-Z, 0-9, _ and -)"),
            ("instance = \"x\"\n".into(), "interface: at least one [[interface]] is needed"),
            (nine, "interface: 9 interfaces configured; at most 8 are supported"),
        ]);
    }

    #[test]
    fn interface_name_and_driver_errors() {
        expect_errors(&[
            ("[[interface]]\nname = \"eth/0\"\n".into(), "interface[0].name: \"eth/0\" is not a valid name (1 to 15 characters from a-z, A-Z, 0-9, _ and -)"),
            ("[[interface]]\nname = \"sixteen-chars-xx\"\n".into(), "interface[0].name: \"sixteen-chars-xx\" is not a valid name (1 to 15 characters from a-z, A-Z, 0-9, _ and -)"),
            (format!("{IFACE}[[interface]]\nname = \"strata0\"\n"), "interface[1].name: \"strata0\" is already the name of interface[0]"),
            (iface("driver = \"virtio\"\n"), "interface[0].driver: \"virtio\" is not a driver (expected \"tap\", \"pair\", \"af_xdp\" or \"vfio\")"),
            (iface("link = \"l1\"\n"), "interface[0].link: only a pair interface has a link (this one's driver is tap)"),
            (iface("driver = \"tap\"\nside = \"a\"\n"), "interface[0].side: only a pair interface has a side (this one's driver is tap)"),
            (iface("driver = \"pair\"\nside = \"a\"\n"), "interface[0].link: a pair interface needs the name of its link"),
            (iface("driver = \"pair\"\nlink = \"l1\"\n"), "interface[0].side: a pair interface needs a side, \"a\" or \"b\""),
            (iface("driver = \"pair\"\nlink = \"l1\"\nside = \"A\"\n"), "interface[0].side: \"A\" is not a side (expected \"a\" or \"b\")"),
            (iface("driver = \"pair\"\nlink = \"l 1\"\nside = \"a\"\n"), "interface[0].link: \"l 1\" is not a valid name (1 to 64 characters from a-z, A-Z, 0-9, _ and -)"),
            (
                "[[interface]]\nname = \"p0\"\ndriver = \"pair\"\nlink = \"l1\"\nside = \"a\"\n\
                 [[interface]]\nname = \"p1\"\ndriver = \"pair\"\nlink = \"l1\"\nside = \"a\"\n".into(),
                "interface[1].side: interface[0] is already side \"a\" of link \"l1\"",
            ),
        ]);
    }

    #[test]
    fn af_xdp_drives_a_named_kernel_interface() {
        let c = parse(&iface("driver = \"af_xdp\"\ndevice = \"veth1\"\n")).unwrap();
        assert_eq!(
            c.interfaces[0].device,
            Device::AfXdp {
                device: "veth1".into()
            }
        );
        assert!(!c.interfaces[0].offloads);
        expect_errors(&[
            (iface("driver = \"af_xdp\"\n"), "interface[0].device: an af_xdp interface needs the kernel interface it drives (device = \"eth1\")"),
            (iface("device = \"veth1\"\n"), "interface[0].device: only an af_xdp or vfio interface names a device"),
            (iface("driver = \"af_xdp\"\ndevice = \"veth1\"\noffloads = true\n"), "interface[0].offloads: the af_xdp driver has no offloads"),
            (iface("driver = \"af_xdp\"\ndevice = \"veth1\"\nmtu = 1779\n"), "interface[0].mtu: an af_xdp interface takes an MTU of at most 1778 (a frame fits a 2 KiB pool buffer after the kernel's headroom)"),
            (iface("driver = \"af_xdp\"\ndevice = \"a/b\"\n"), "interface[0].device: \"a/b\" is not a valid name (1 to 15 characters from a-z, A-Z, 0-9, _ and -)"),
        ]);
    }

    #[test]
    fn vfio_drives_a_pci_device_by_its_address() {
        let c = parse(&iface("driver = \"vfio\"\ndevice = \"0000:00:03.0\"\n")).unwrap();
        assert_eq!(
            c.interfaces[0].device,
            Device::Vfio {
                device: "0000:00:03.0".into(),
                poll: false
            }
        );
        assert!(c.interfaces[0].offloads, "offloads on by default");
        let c = parse(&iface(
            "driver = \"vfio\"\ndevice = \"0000:00:03.0\"\npoll = true\noffloads = false\n",
        ))
        .unwrap();
        assert!(matches!(
            c.interfaces[0].device,
            Device::Vfio { poll: true, .. }
        ));
        assert!(!c.interfaces[0].offloads);
        expect_errors(&[
            (iface("driver = \"vfio\"\n"), "interface[0].device: a vfio interface needs the PCI address of its device (device = \"0000:00:03.0\")"),
            (iface("driver = \"vfio\"\ndevice = \"00:03.0\"\n"), "interface[0].device: \"00:03.0\" is not a PCI address (DDDD:BB:DD.F in lower-case hex, like 0000:00:03.0)"),
            (iface("poll = true\n"), "interface[0].poll: only a vfio interface polls"),
            (iface("driver = \"vfio\"\ndevice = \"0000:00:03.0\"\nlink = \"l\"\n"), "interface[0].link: only a pair interface has a link and a side (this one's driver is vfio)"),
        ]);
    }

    #[test]
    fn mac_errors() {
        expect_errors(&[
            (
                format!("{IFACE}[[interface]]\nname = \"s1\"\nmac = \"zz:00\"\n"),
                "interface[1].mac: \"zz:00\" is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)",
            ),
            (iface("mac = \"02:00:00:00:00\"\n"), "interface[0].mac: \"02:00:00:00:00\" is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)"),
            (iface("mac = \"02:00:00:00:00:01:02\"\n"), "interface[0].mac: \"02:00:00:00:00:01:02\" is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)"),
            (iface("mac = \"2:00:00:00:00:01\"\n"), "interface[0].mac: \"2:00:00:00:00:01\" is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)"),
            (iface("mac = \"02-00-00-00-00-01\"\n"), "interface[0].mac: \"02-00-00-00-00-01\" is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)"),
            (iface("mac = \"+2:00:00:00:00:01\"\n"), "interface[0].mac: \"+2:00:00:00:00:01\" is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)"),
            (
                iface("mac = \"01:00:5e:00:00:01\"\n"),
                "interface[0].mac: 01:00:5e:00:00:01 is a multicast address; an interface needs a unicast one (even first byte, like 02:00:00:00:00:01)",
            ),
            (
                iface("mac = \"ff:ff:ff:ff:ff:ff\"\n"),
                "interface[0].mac: ff:ff:ff:ff:ff:ff is a multicast address; an interface needs a unicast one (even first byte, like 02:00:00:00:00:01)",
            ),
            (iface("mac = \"00:00:00:00:00:00\"\n"), "interface[0].mac: 00:00:00:00:00:00 is not a usable MAC address"),
            (
                format!("{IFACE}[[interface]]\nname = \"s1\"\nmac = \"02:53:54:00:00:01\"\n"),
                "interface[1].mac: 02:53:54:00:00:01 is already the MAC address of interface[0]",
            ),
        ]);
    }

    #[test]
    fn address_errors() {
        expect_errors(&[
            (iface("addresses = [\"10.0.0.1\"]\n"), "interface[0].addresses[0]: \"10.0.0.1\" is not an IPv4 or IPv6 address with a prefix length (expected like 10.77.0.2/24 or fd00:77::2/64)"),
            (iface("addresses = [\"10.0.0/8\"]\n"), "interface[0].addresses[0]: \"10.0.0\" is not an IPv4 address"),
            (iface("addresses = [\"10.0.0.1/24\", \"10.0.1.1/33\"]\n"), "interface[0].addresses[1]: prefix length 33 is out of range 0..=32"),
            (iface("addresses = [\"10.0.0.1/300\"]\n"), "interface[0].addresses[0]: prefix length 300 is out of range 0..=32"),
            (iface("addresses = [\"10.0.0.1/\"]\n"), "interface[0].addresses[0]: \"\" is not a prefix length"),
            (iface("addresses = [\"10.0.0.1/+8\"]\n"), "interface[0].addresses[0]: \"+8\" is not a prefix length"),
            (iface("addresses = [\"10.0.0.1/0\"]\n"), "interface[0].addresses[0]: prefix length 0 would put every address on this link; use a default route instead"),
            (iface("addresses = [\"10.0.0.0/24\"]\n"), "interface[0].addresses[0]: 10.0.0.0 is the network address of 10.0.0.0/24"),
            (iface("addresses = [\"10.0.0.255/24\"]\n"), "interface[0].addresses[0]: 10.0.0.255 is the broadcast address of 10.0.0.0/24"),
            (iface("addresses = [\"224.0.0.5/24\"]\n"), "interface[0].addresses[0]: 224.0.0.5 is not a unicast address"),
            (iface("addresses = [\"127.0.0.2/8\"]\n"), "interface[0].addresses[0]: 127.0.0.2 is not a unicast address"),
            (iface("addresses = [\"0.1.2.3/8\"]\n"), "interface[0].addresses[0]: 0.1.2.3 is not a unicast address"),
            (iface("addresses = [\"255.255.255.255/32\"]\n"), "interface[0].addresses[0]: 255.255.255.255 is not a unicast address"),
            (iface("addresses = [\"10.0.0.1/24\", \"10.0.0.1/16\"]\n"), "interface[0].addresses[1]: 10.0.0.1 is already interface[0].addresses[0]"),
            (
                format!("{IFACE}[[interface]]\nname = \"s1\"\naddresses = [\"10.77.0.2/16\"]\n"),
                "interface[1].addresses[0]: 10.77.0.2 is already interface[0].addresses[0]",
            ),
            (
                iface(&format!("addresses = [{}]\n", (1..=17).map(|i| format!("\"10.0.0.{i}/24\"")).collect::<Vec<_>>().join(", "))),
                "interface[0].addresses: 17 IPv4 addresses; at most 16 are supported",
            ),
        ]);
        // /31 and /32 have no network or broadcast address to refuse.
        parse(&iface("addresses = [\"10.0.0.0/31\", \"10.0.0.255/32\"]\n")).unwrap();
    }

    #[test]
    fn ipv6_addresses_mix_with_ipv4_ones() {
        let c = parse(&iface(
            "addresses = [\"fd00:77::2/64\", \"10.77.0.2/24\", \"2001:db8::1/128\"]\n\
             host_addresses = [\"fd00:77::1/64\", \"10.77.0.1/24\"]\n",
        ))
        .unwrap();
        let i = &c.interfaces[0];
        assert_eq!(i.addresses, ["10.77.0.2/24".parse().unwrap()]);
        assert_eq!(
            i.addresses6,
            [
                "fd00:77::2/64".parse().unwrap(),
                "2001:db8::1/128".parse().unwrap()
            ]
        );
        assert_eq!(i.host_addresses, ["10.77.0.1/24".parse().unwrap()]);
        assert_eq!(i.host_addresses6, ["fd00:77::1/64".parse().unwrap()]);
        // Written back IPv4 first, in one list per side, and read the same.
        let text = toml::to_string(&c).unwrap();
        assert!(
            text.contains(r#"addresses = ["10.77.0.2/24", "fd00:77::2/64", "2001:db8::1/128"]"#),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), c, "{text}");
        let stack = crate::plan::Plan::from_config(&c).stack;
        assert_eq!(
            stack.ifaces[0].addrs6[1],
            ("2001:db8::1".parse().unwrap(), 128)
        );
        // 16 of each family fit.
        let many = |f: &dyn Fn(usize) -> String| {
            (1..=16)
                .map(|k| format!("\"{}\"", f(k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let v4 = many(&|k| format!("10.0.0.{k}/24"));
        let v6 = many(&|k| format!("fd00::{k}/64"));
        parse(&iface(&format!("addresses = [{v4}, {v6}]\n"))).unwrap();
    }

    #[test]
    fn ipv6_address_errors() {
        let seventeen: Vec<String> = (1..=17).map(|k| format!("\"fd00::{k:x}/64\"")).collect();
        let seventeen = seventeen.join(", ");
        expect_errors(&[
            (iface("addresses = [\"fd00::1\"]\n"), "interface[0].addresses[0]: \"fd00::1\" is not an IPv4 or IPv6 address with a prefix length (expected like 10.77.0.2/24 or fd00:77::2/64)"),
            (iface("addresses = [\"fd00:::1/64\"]\n"), "interface[0].addresses[0]: \"fd00:::1\" is not an IPv6 address"),
            (iface("addresses = [\"fd00::1/129\"]\n"), "interface[0].addresses[0]: prefix length 129 is out of range 0..=128"),
            (iface("addresses = [\"fd00::1/x\"]\n"), "interface[0].addresses[0]: \"x\" is not a prefix length"),
            (iface("addresses = [\"fd00::1/0\"]\n"), "interface[0].addresses[0]: prefix length 0 would put every address on this link"),
            (iface("addresses = [\"::/64\"]\n"), "interface[0].addresses[0]: :: is not a unicast address"),
            (iface("addresses = [\"::1/128\"]\n"), "interface[0].addresses[0]: ::1 is not a unicast address"),
            (iface("addresses = [\"ff02::1/64\"]\n"), "interface[0].addresses[0]: ff02::1 is not a unicast address"),
            (iface("addresses = [\"::ffff:10.0.0.2/120\"]\n"), "interface[0].addresses[0]: ::ffff:10.0.0.2 is an IPv4-mapped address; give the IPv4 address as such (like 10.0.0.2/24)"),
            (iface("addresses = [\"fe80::1/64\"]\n"), "interface[0].addresses[0]: fe80::1 is a link-local address; link-local addresses are made from the MAC automatically"),
            (iface("addresses = [\"febf::1/64\"]\n"), "interface[0].addresses[0]: febf::1 is a link-local address; link-local addresses are made from the MAC automatically"),
            (iface("addresses = [\"fd00:77::/64\"]\n"), "interface[0].addresses[0]: fd00:77:: is the subnet-router anycast address of fd00:77::/64"),
            // Numbered as written, whatever the family before.
            (iface("addresses = [\"10.0.0.2/24\", \"fe80::1/64\"]\n"), "interface[0].addresses[1]: fe80::1 is a link-local address; link-local addresses are made from the MAC automatically"),
            (iface("addresses = [\"fd00::1/64\", \"10.0.0.0/24\"]\n"), "interface[0].addresses[1]: 10.0.0.0 is the network address of 10.0.0.0/24"),
            // Found after reading: numbered IPv4 first.
            (iface("addresses = [\"fd00::1/64\", \"10.0.0.2/24\", \"fd00::1/48\"]\n"), "interface[0].addresses[2]: fd00::1 is already interface[0].addresses[1]"),
            (
                format!("{IFACE}[[interface]]\nname = \"s1\"\naddresses = [\"fd00::1/64\"]\n[[interface]]\nname = \"s2\"\naddresses = [\"fd00::1/64\"]\n"),
                "interface[2].addresses[0]: fd00::1 is already interface[1].addresses[0]",
            ),
            (iface(&format!("addresses = [{seventeen}]\n")), "interface[0].addresses: 17 IPv6 addresses; at most 16 are supported"),
        ]);
        // /127 and /128 have no subnet-router anycast address.
        parse(&iface("addresses = [\"fd00::/127\", \"fd00:1::/128\"]\n")).unwrap();
    }

    #[test]
    fn ipv6_host_address_errors() {
        expect_errors(&[
            (
                iface("driver = \"pair\"\nlink = \"l\"\nside = \"a\"\nhost_addresses = [\"fd00::1/64\"]\n"),
                "interface[0].host_addresses: only a tap interface has a kernel side to give addresses to",
            ),
            (format!("{IFACE}host_addresses = [\"fe80::1/64\"]\n"), "interface[0].host_addresses[0]: fe80::1 is a link-local address; link-local addresses are made from the MAC automatically"),
            (
                iface("addresses = [\"fd00::2/64\"]\nhost_addresses = [\"10.0.0.1/24\", \"fd00::2/64\"]\n"),
                "interface[0].host_addresses[1]: fd00::2 is the stack's own address (interface[0].addresses[0])",
            ),
            (
                "[[interface]]\nname = \"a\"\nhost_addresses = [\"fd00::2/64\"]\n[[interface]]\nname = \"b\"\naddresses = [\"10.0.0.2/24\", \"fd00::2/64\"]\n".to_owned(),
                "interface[0].host_addresses[0]: fd00::2 is the stack's own address (interface[1].addresses[1])",
            ),
            (
                format!("{IFACE}host_addresses = [\"fd00::1/64\"]\n[[interface]]\nname = \"b\"\nhost_addresses = [\"fd00::1/64\"]\n"),
                "interface[1].host_addresses[0]: fd00::1 is already interface[0].host_addresses[0]",
            ),
        ]);
    }

    #[test]
    fn mtu_errors() {
        expect_errors(&[
            (
                format!("{IFACE}mtu = 67\n"),
                "interface[0].mtu: 67 is out of range 68..=9000",
            ),
            (
                format!("{IFACE}mtu = 9001\n"),
                "interface[0].mtu: 9001 is out of range 68..=9000",
            ),
            (
                format!("{IFACE}mtu = -1500\n"),
                "interface[0].mtu: -1500 is out of range 68..=9000",
            ),
            (
                format!("{IFACE}mtu = 9223372036854775807\n"),
                "interface[0].mtu: 9223372036854775807 is out of range 68..=9000",
            ),
        ]);
        parse(&format!("{IFACE}mtu = 68\n")).unwrap();
    }

    #[test]
    fn host_address_errors() {
        expect_errors(&[
            (
                iface("driver = \"pair\"\nlink = \"l\"\nside = \"a\"\nhost_addresses = [\"10.0.0.1/24\"]\n"),
                "interface[0].host_addresses: only a tap interface has a kernel side to give addresses to",
            ),
            (format!("{IFACE}host_addresses = [\"10.77.0.1\"]\n"), "interface[0].host_addresses[0]: \"10.77.0.1\" is not an IPv4 or IPv6 address with a prefix length (expected like 10.77.0.2/24 or fd00:77::2/64)"),
            (format!("{IFACE}host_addresses = [\"10.77.0.255/24\"]\n"), "interface[0].host_addresses[0]: 10.77.0.255 is the broadcast address of 10.77.0.0/24"),
            (format!("{IFACE}host_addresses = [\"10.77.0.2/24\"]\n"), "interface[0].host_addresses[0]: 10.77.0.2 is the stack's own address (interface[0].addresses[0])"),
            (
                "[[interface]]\nname = \"a\"\nhost_addresses = [\"10.9.0.2/24\"]\n[[interface]]\nname = \"b\"\naddresses = [\"10.9.0.2/24\"]\n".to_owned(),
                "interface[0].host_addresses[0]: 10.9.0.2 is the stack's own address (interface[1].addresses[0])",
            ),
            (
                format!("{IFACE}host_addresses = [\"10.77.0.1/24\"]\n[[interface]]\nname = \"b\"\nhost_addresses = [\"10.77.0.1/24\"]\n"),
                "interface[1].host_addresses[0]: 10.77.0.1 is already interface[0].host_addresses[0]",
            ),
            (
                format!("{IFACE}host_addresses = [{}]\n", (1..=17).map(|i| format!("\"10.1.0.{i}/24\"")).collect::<Vec<_>>().join(", ")),
                "interface[0].host_addresses: 17 IPv4 addresses; at most 16 are supported",
            ),
        ]);
        // An empty list is fine on a pair (it is what a pair serialises to).
        parse(&iface(
            "driver = \"pair\"\nlink = \"l\"\nside = \"a\"\nhost_addresses = []\n",
        ))
        .unwrap();
    }

    /// `v4` IPv4 routes through strata0, then `v6` IPv6 ones through s1.
    fn many_routes(v4: usize, v6: usize) -> String {
        let v4 = (0..v4).map(|i| {
            let (a, b, c) = (11 + i / 65_536, i / 256 % 256, i % 256);
            format!("[[route]]\nto = \"{a}.{b}.{c}.0/24\"\ndev = \"strata0\"\n")
        });
        let v6 = (0..v6).map(|i| {
            let (hi, lo) = (i >> 16, i & 0xffff);
            format!("[[route]]\nto = \"fd00:{hi:x}:{lo:x}::/48\"\ndev = \"s1\"\n")
        });
        v4.chain(v6).collect()
    }

    #[test]
    fn route_errors() {
        let many = many_routes(MAX_ROUTES + 1, 0);
        expect_errors(&[
            (route("to = \"everywhere\"\nvia = \"10.77.0.1\"\n"), "route[0].to: \"everywhere\" is not a destination (expected \"default\", A.B.C.D/N, \"::/0\" or X:X::X/N)"),
            (route("to = \"10.0.0.5/24\"\nvia = \"10.77.0.1\"\n"), "route[0].to: 10.0.0.5/24 has host bits set (did you mean 10.0.0.0/24?)"),
            (route("to = \"10.0.0.0/40\"\nvia = \"10.77.0.1\"\n"), "route[0].to: prefix length 40 is out of range 0..=32"),
            (
                route("to = \"default\"\nvia = \"10.77.0.1\"\n[[route]]\nto = \"0.0.0.0/0\"\nvia = \"10.77.0.3\"\n"),
                "route[1].to: route[0] already leads to 0.0.0.0/0",
            ),
            (route("to = \"default\"\ndev = \"eth9\"\n"), "route[0].dev: no interface named \"eth9\""),
            (route("to = \"default\"\n"), "route[0]: needs via (a gateway), dev (an interface) or both"),
            (route("to = \"default\"\nvia = \"10.77.0\"\n"), "route[0].via: \"10.77.0\" is not an IPv4 address"),
            (route("to = \"default\"\nvia = \"10.78.0.1\"\n"), "route[0].via: 10.78.0.1 is not in the connected prefix of any interface"),
            (
                format!("{IFACE}[[interface]]\nname = \"s1\"\naddresses = [\"10.78.0.2/24\", \"10.79.0.2/16\"]\n[[route]]\nto = \"default\"\nvia = \"10.77.0.1\"\ndev = \"s1\"\n"),
                "route[0].via: 10.77.0.1 is not in a connected prefix of interface \"s1\" (10.78.0.0/24, 10.79.0.0/16)",
            ),
            (
                format!("{IFACE}[[interface]]\nname = \"s1\"\n[[route]]\nto = \"default\"\nvia = \"10.77.0.1\"\ndev = \"s1\"\n"),
                "route[0].via: 10.77.0.1 is not in a connected prefix of interface \"s1\" (it has no addresses)",
            ),
            (route("to = \"default\"\nvia = \"10.77.0.2\"\n"), "route[0].via: 10.77.0.2 is the stack's own address (interface[0].addresses[0])"),
            (route("to = \"default\"\nvia = \"224.0.0.1\"\n"), "route[0].via: 224.0.0.1 is not a unicast address"),
            (format!("{IFACE}{many}"), "route: 65537 IPv4 routes configured; at most 65536 are supported"),
        ]);
        // Reachable through the interface named, or through any.
        parse(&route(
            "to = \"default\"\nvia = \"10.77.0.1\"\ndev = \"strata0\"\n",
        ))
        .unwrap();
        parse(&route("to = \"10.0.0.0/8\"\nvia = \"10.77.0.254\"\n")).unwrap();
    }

    /// Two interfaces with IPv6 prefixes, then `routes`.
    fn routes6(routes: &str) -> String {
        format!(
            "[[interface]]\nname = \"strata0\"\naddresses = [\"10.77.0.2/24\", \"fd00:77::2/64\"]\n\
             [[interface]]\nname = \"s1\"\naddresses = [\"fd00:88::2/64\"]\n{routes}"
        )
    }

    #[test]
    fn ipv6_routes_parse_resolve_and_serialise_back() {
        let c = parse(&routes6(
            "[[route]]\nto = \"fd00:99::/64\"\nvia = \"fd00:77::1\"\n\
             [[route]]\nto = \"default\"\nvia = \"10.77.0.1\"\n\
             [[route]]\nto = \"::/0\"\nvia = \"fe80::1\"\ndev = \"s1\"\n\
             [[route]]\nto = \"fd00:98::/48\"\ndev = \"strata0\"\n\
             [[route]]\nto = \"fd00:97::/64\"\nvia = \"fd00:aa::1\"\ndev = \"s1\"\n\
             [[route]]\nto = \"fd00:96::1/128\"\nvia = \"fd00:88::9\"\n",
        ))
        .unwrap();
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        // In the order written, of both families.
        assert_eq!(
            c.routes[0],
            IpRoute::V6(Route {
                to: "fd00:99::/64".parse().unwrap(),
                via: Some(v6("fd00:77::1")),
                dev: None,
            })
        );
        assert!(c.routes[1].v4().is_some() && c.routes[1].v6().is_none());
        let default6 = c.routes[2].v6().unwrap();
        assert_eq!(default6.to.to_string(), "::/0");
        assert_eq!(
            default6.resolve(&c.interfaces),
            strata_ipc::route::Route6 {
                dest: Ipv6Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Some(v6("fe80::1")),
                iface: Some(1),
            }
        );
        assert_eq!(c.routes[3].via(), None);
        assert_eq!(c.routes[3].dev(), Some("strata0"));
        assert_eq!(c.routes[5].to().to_string(), "fd00:96::1/128");
        // Written back as written, and read back the same.
        let text = toml::to_string(&c).unwrap();
        assert!(
            text.contains("[[route]]\nto = \"::/0\"\nvia = \"fe80::1\"\ndev = \"s1\"\n"),
            "{text}"
        );
        assert_eq!(parse(&text).unwrap(), c, "{text}");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json["route"][0],
            serde_json::json!({"to": "fd00:99::/64", "via": "fd00:77::1"})
        );
    }

    #[test]
    fn ipv6_route_errors() {
        let r = |body: &str| routes6(&format!("[[route]]\n{body}"));
        let many = many_routes(200, MAX_ROUTES + 1);
        expect_errors(&[
            (r("to = \"fd00:99::\"\nvia = \"fd00:77::1\"\n"), "route[0].to: \"fd00:99::\" is not a destination (expected \"default\", A.B.C.D/N, \"::/0\" or X:X::X/N)"),
            (r("to = \"fd00:99::/129\"\nvia = \"fd00:77::1\"\n"), "route[0].to: prefix length 129 is out of range 0..=128"),
            (r("to = \"fd00:99::g/64\"\nvia = \"fd00:77::1\"\n"), "route[0].to: \"fd00:99::g\" is not an IPv6 address"),
            (r("to = \"fd00:99::5/64\"\nvia = \"fd00:77::1\"\n"), "route[0].to: fd00:99::5/64 has host bits set (did you mean fd00:99::/64?)"),
            (r("to = \"::1/0\"\nvia = \"fd00:77::1\"\n"), "route[0].to: ::1/0 has host bits set (did you mean ::/0?)"),
            (
                r("to = \"::/0\"\nvia = \"fd00:77::1\"\n[[route]]\nto = \"default\"\nvia = \"10.77.0.1\"\n[[route]]\nto = \"::/0\"\nvia = \"fd00:88::1\"\n"),
                "route[2].to: route[0] already leads to ::/0",
            ),
            (r("to = \"fd00:99::/64\"\nvia = \"10.77.0.1\"\n"), "route[0].via: 10.77.0.1 is an IPv4 address, but the destination fd00:99::/64 is IPv6"),
            (r("to = \"10.99.0.0/16\"\nvia = \"fd00:77::1\"\n"), "route[0].via: fd00:77::1 is an IPv6 address, but the destination 10.99.0.0/16 is IPv4"),
            (r("to = \"default\"\nvia = \"fe80::1\"\ndev = \"s1\"\n"), "route[0].via: fe80::1 is an IPv6 address, but the destination default is IPv4 (the IPv6 default route is ::/0)"),
            (r("to = \"::/0\"\nvia = \"fd00:77::zz\"\n"), "route[0].via: \"fd00:77::zz\" is not an IPv6 address"),
            (r("to = \"::/0\"\n"), "route[0]: needs via (a gateway), dev (an interface) or both"),
            (r("to = \"::/0\"\ndev = \"eth9\"\n"), "route[0].dev: no interface named \"eth9\""),
            (r("to = \"::/0\"\nvia = \"fe80::1\"\n"), "route[0].via: fe80::1 is a link-local address, on every link: name the interface it is on with dev"),
            (
                r("to = \"::/0\"\nvia = \"fd00:99::1\"\n"),
                "route[0].via: fd00:99::1 is in no prefix of the interfaces' IPv6 addresses (fd00:77::/64 on strata0, fd00:88::/64 on s1): name the interface it is on with dev, or give one an address in its prefix",
            ),
            (
                route("to = \"::/0\"\nvia = \"fd00:77::1\"\n"),
                "route[0].via: fd00:77::1 is in no prefix of the interfaces' IPv6 addresses (there are none): name the interface it is on with dev, or give one an address in its prefix",
            ),
            (r("to = \"::/0\"\nvia = \"fd00:88::2\"\n"), "route[0].via: fd00:88::2 is the stack's own address (interface[1].addresses[0])"),
            (r("to = \"::/0\"\nvia = \"fd00:77::2\"\ndev = \"s1\"\n"), "route[0].via: fd00:77::2 is the stack's own address (interface[0].addresses[1])"),
            (r("to = \"::/0\"\nvia = \"fe80::53:54ff:fe00:2\"\ndev = \"strata0\"\n"), "route[0].via: fe80::53:54ff:fe00:2 is the stack's own link-local address on \"s1\""),
            (r("to = \"::/0\"\nvia = \"ff02::2\"\ndev = \"strata0\"\n"), "route[0].via: ff02::2 is not a unicast address"),
            (r("to = \"::/0\"\nvia = \"::\"\ndev = \"strata0\"\n"), "route[0].via: :: is not a unicast address"),
            (r("to = \"::/0\"\nvia = \"::1\"\ndev = \"strata0\"\n"), "route[0].via: ::1 is not a unicast address"),
            (r("to = \"::/0\"\nvia = \"::ffff:10.77.0.1\"\ndev = \"strata0\"\n"), "route[0].via: ::ffff:10.77.0.1 is not a unicast address"),
            (routes6(&many), "route: 65537 IPv6 routes configured; at most 65536 are supported"),
        ]);
        // As many of each family are fine.
        let many = many_routes(MAX_ROUTES, MAX_ROUTES);
        assert_eq!(parse(&routes6(&many)).unwrap().routes.len(), 2 * MAX_ROUTES);
        // The same destination in both families is two routes.
        parse(&r(
            "to = \"default\"\nvia = \"10.77.0.1\"\n[[route]]\nto = \"::/0\"\nvia = \"fd00:77::1\"\n",
        ))
        .unwrap();
        // A link-local gateway with its interface, one not ours.
        parse(&r(
            "to = \"::/0\"\nvia = \"fe80::53:54ff:fe00:9\"\ndev = \"strata0\"\n",
        ))
        .unwrap();
        // The same checks for a configuration changed in code.
        let mut c = parse(&routes6("")).unwrap();
        c.routes.push(
            IpRoute::new(
                "fd00:99::/64".parse().unwrap(),
                Some("fe80::1".parse().unwrap()),
                None,
            )
            .unwrap(),
        );
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "route[0].via: fe80::1 is a link-local address, on every link: name the interface it is on with dev"
        );
        assert_eq!(
            IpRoute::new(
                "fd00:99::/64".parse().unwrap(),
                Some("10.0.0.1".parse().unwrap()),
                None
            )
            .unwrap_err(),
            "10.0.0.1 is an IPv4 address, but the destination fd00:99::/64 is IPv6"
        );
    }

    #[test]
    fn neighbours_and_their_errors() {
        let n = |ip: &str, mac: &str, dev: &str| {
            format!("[[neighbour]]\nip = \"{ip}\"\nmac = \"{mac}\"\ndev = \"{dev}\"\n")
        };
        let c = parse(&format!(
            "{IFACE}{}",
            n("10.77.0.1", "02:00:00:00:00:09", "strata0")
        ))
        .unwrap();
        assert_eq!(
            c.neighbours,
            vec![Neighbour {
                ip: Ipv4Addr::new(10, 77, 0, 1),
                mac: MacAddr([2, 0, 0, 0, 0, 9]),
                dev: "strata0".into()
            }]
        );
        let stack = crate::plan::Plan::from_config(&c).stack;
        assert_eq!(stack.neighbours[0].iface, 0);
        let many: String = (0..257)
            .map(|i| {
                n(
                    &format!("10.{}.{}.1", i / 256, i % 256),
                    "02:00:00:00:00:09",
                    "strata0",
                )
            })
            .collect();
        let ok_mac = "02:00:00:00:00:09";
        expect_errors(&[
            (
                format!("{IFACE}{}", n("10.77.0", ok_mac, "strata0")),
                "neighbour[0].ip: \"10.77.0\" is not an IPv4 address",
            ),
            (
                format!("{IFACE}{}", n("224.0.0.5", ok_mac, "strata0")),
                "neighbour[0].ip: 224.0.0.5 is not a unicast address",
            ),
            (
                format!("{IFACE}{}", n("10.77.0.2", ok_mac, "strata0")),
                "neighbour[0].ip: 10.77.0.2 is the stack's own address (interface[0].addresses[0])",
            ),
            (
                format!("{IFACE}{}", n("10.77.0.1", "01:00:5e:00:00:01", "strata0")),
                "neighbour[0].mac: 01:00:5e:00:00:01 is not a unicast MAC address",
            ),
            (
                format!("{IFACE}{}", n("10.77.0.1", "00:00:00:00:00:00", "strata0")),
                "neighbour[0].mac: 00:00:00:00:00:00 is not a unicast MAC address",
            ),
            (
                format!("{IFACE}{}", n("10.77.0.1", ok_mac, "eth9")),
                "neighbour[0].dev: no interface named \"eth9\"",
            ),
            (
                format!(
                    "{IFACE}{}{}",
                    n("10.77.0.1", ok_mac, "strata0"),
                    n("10.77.0.1", "02:00:00:00:00:0a", "strata0")
                ),
                "neighbour[1].ip: neighbour[0] is already 10.77.0.1 on strata0",
            ),
            (
                format!("{IFACE}{many}"),
                "neighbour: 257 permanent neighbours; at most 256 are supported",
            ),
        ]);
    }

    #[test]
    fn limit_errors() {
        let limits = |body: &str| format!("{IFACE}[limits]\n{body}");
        expect_errors(&[
            (
                limits("small_buffers = 255\n"),
                "limits.small_buffers: 255 is out of range 256..=262144",
            ),
            (
                limits("small_buffers = 262145\n"),
                "limits.small_buffers: 262145 is out of range 256..=262144",
            ),
            (
                limits("large_buffers = -1\n"),
                "limits.large_buffers: -1 is out of range 0..=16384",
            ),
            (
                limits("large_buffers = 16385\n"),
                "limits.large_buffers: 16385 is out of range 0..=16384",
            ),
            (
                limits("ring_size = 32\n"),
                "limits.ring_size: 32 is out of range 64..=65536",
            ),
            (
                limits("ring_size = 131072\n"),
                "limits.ring_size: 131072 is out of range 64..=65536",
            ),
            (
                limits("ring_size = 1000\n"),
                "limits.ring_size: 1000 is not a power of two",
            ),
            (
                limits("qdisc_limit = 0\n"),
                "limits.qdisc_limit: 0 is out of range 1..=65536",
            ),
            (
                limits("heartbeat_timeout_ms = 99\n"),
                "limits.heartbeat_timeout_ms: 99 is out of range 100..=60000",
            ),
            (
                limits("restart_backoff_max_ms = 600001\n"),
                "limits.restart_backoff_max_ms: 600001 is out of range 100..=600000",
            ),
            (
                limits("restart_backoff_max_ms = -9223372036854775808\n"),
                "limits.restart_backoff_max_ms: -9223372036854775808 is out of range 100..=600000",
            ),
            (
                limits("sockets = 63\n"),
                "limits.sockets: 63 is out of range 64..=1048575",
            ),
            (
                limits("sockets = 1048576\n"),
                "limits.sockets: 1048576 is out of range 64..=1048575",
            ),
            (
                limits("tcp_connections = 1048577\n"),
                "limits.tcp_connections: 1048577 is out of range 64..=1048576",
            ),
            (
                limits("conntrack_entries = 1023\n"),
                "limits.conntrack_entries: 1023 is out of range 1024..=4194304",
            ),
            (
                limits("conntrack_entries = 4194305\n"),
                "limits.conntrack_entries: 4194305 is out of range 1024..=4194304",
            ),
        ]);
    }

    #[test]
    fn validate_catches_what_code_changes_break() {
        let mut c = Config::default();
        c.interfaces[0].addresses[0].prefix = 40;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "interface[0].addresses[0]: prefix length 40 is out of range 0..=32"
        );
        let mut c = Config::default();
        c.interfaces[0].mtu = 65535;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "interface[0].mtu: 65535 is out of range 68..=9000"
        );
        let mut c = Config::default();
        c.routes.push(IpRoute::V4(Route {
            to: Cidr {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix: 99,
            },
            via: None,
            dev: Some("strata0".into()),
        }));
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "route[0].to: prefix length 99 is out of range 0..=32"
        );
        let mut c = Config::default();
        c.routes.push(IpRoute::V6(Route {
            to: Cidr6 {
                addr: Ipv6Addr::UNSPECIFIED,
                prefix: 129,
            },
            via: None,
            dev: Some("strata0".into()),
        }));
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "route[0].to: prefix length 129 is out of range 0..=128"
        );
        let mut c = Config::default();
        c.interfaces[0].addresses6.push(Cidr6 {
            addr: "fd00::2".parse().unwrap(),
            prefix: 200,
        });
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "interface[0].addresses[1]: prefix length 200 is out of range 0..=128"
        );
        let c = Config {
            instance: "has space".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn cidr_and_mac_text_forms() {
        let c: Cidr = "10.1.2.3/20".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.2.3/20");
        assert_eq!(c.network(), Ipv4Addr::new(10, 1, 0, 0));
        assert!(c.contains(Ipv4Addr::new(10, 1, 15, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 1, 16, 0)));
        let all = Cidr {
            addr: Ipv4Addr::new(1, 2, 3, 4),
            prefix: 0,
        };
        assert_eq!(all.network(), Ipv4Addr::UNSPECIFIED);
        assert!(all.contains(Ipv4Addr::BROADCAST));
        // Out-of-range prefixes built in code must not panic.
        let odd = Cidr {
            addr: Ipv4Addr::new(1, 2, 3, 4),
            prefix: 200,
        };
        assert_eq!(odd.network(), odd.addr);
        let c: Cidr6 = "fd00:77:1:2::5/62".parse().unwrap();
        assert_eq!(c.to_string(), "fd00:77:1:2::5/62");
        assert_eq!(c.network(), "fd00:77:1::".parse::<Ipv6Addr>().unwrap());
        assert!(c.contains("fd00:77:1:3:ffff::".parse().unwrap()));
        assert!(!c.contains("fd00:77:1:4::".parse().unwrap()));
        for (prefix, net) in [(0, "::"), (128, "fd00:77:1:2::5"), (200, "fd00:77:1:2::5")] {
            let c = Cidr6 { prefix, ..c };
            assert_eq!(c.network(), net.parse::<Ipv6Addr>().unwrap(), "/{prefix}");
        }
        assert!("fd00::1".parse::<Cidr6>().is_err());
        assert!("10.0.0.1/8".parse::<Cidr6>().is_err());
        let any: IpCidr = "fd00::1/64".parse().unwrap();
        assert_eq!((any.ip().to_string(), any.prefix()), ("fd00::1".into(), 64));
        assert_eq!(any.to_string(), "fd00::1/64");
        assert!(matches!("10.0.0.1/8".parse::<IpCidr>(), Ok(IpCidr::V4(_))));
        let m: MacAddr = "02:AB:cd:00:00:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:cd:00:00:01");
        assert!("".parse::<MacAddr>().is_err());
        assert!("é".parse::<Cidr>().is_err());
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("strata-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.toml");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, format!("{IFACE}mtu = 1\n")).unwrap();
        let e = load(&bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: interface[0].mtu: 1 is out of range 68..=9000",
                bad.display()
            )
        );

        let broken = dir.join("broken.toml");
        std::fs::write(&broken, "[[interface]\n").unwrap();
        let e = load(&broken).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: TOML parse error at line 1", broken.display())),
            "{e}"
        );

        let good = dir.join("good.toml");
        std::fs::write(&good, include_str!("../strata.example.toml")).unwrap();
        assert_eq!(
            load(&good).unwrap(),
            parse(include_str!("../strata.example.toml")).unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
