//! The configuration the launcher hands to the layers: the resolved stack
//! description, published as JSON in the fabric's configuration region
//! ([`ConfigCtl`], on the launcher's pages, read-only to the layers)
//! before any layer starts. Every (re)started layer reads it there, and a
//! running layer reads it again whenever its generation changes: that is
//! how `strata addr`, `route`, `neigh add|del` and `link set mtu` take
//! effect without a restart, and why a restarted layer sees what they
//! changed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{fence, AtomicU64, Ordering::*};

use crate::route::Route;

/// Root of the runtime directories.
pub const RUN_ROOT: &str = "/run/strata";

/// The runtime directory of an instance (control and sockd sockets).
pub fn run_dir(instance: &str) -> PathBuf {
    PathBuf::from(RUN_ROOT).join(instance)
}

/// Path of the launcher's control socket.
pub fn control_socket(instance: &str) -> PathBuf {
    run_dir(instance).join("control.sock")
}

/// One interface as the layers see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IfaceRt {
    /// Index (also the driverd's number).
    pub index: u8,
    /// Device name.
    pub name: String,
    /// "tap", "pair", "af_xdp" or "vfio".
    pub driver: String,
    /// The stack's MAC on this interface.
    pub mac: [u8; 6],
    /// MTU (IP bytes, without the Ethernet header).
    pub mtu: u16,
    /// The stack's IPv4 addresses, with prefix lengths.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// The stack's configured IPv6 addresses, with prefix lengths (the
    /// link-local address ipd makes from the MAC is not among them).
    #[serde(default)]
    pub addrs6: Vec<(Ipv6Addr, u8)>,
    /// Make IPv6 addresses from the prefixes routers advertise on this
    /// link (SLAAC, RFC 4862; Linux `autoconf`).
    #[serde(default)]
    pub autoconf: bool,
    /// vfio only: negotiate checksum offload and TSO with the device.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offloads: bool,
    /// vfio only: poll the device rather than sleep on its interrupts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub poll: bool,
}

/// The whole runtime configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackConfig {
    /// Instance name.
    pub instance: String,
    /// Interfaces, by index.
    pub ifaces: Vec<IfaceRt>,
    /// Configured routes (connected routes are implied by addresses).
    pub routes: Vec<Route>,
    /// Configured IPv6 routes (on-link prefixes are implied by the
    /// addresses and learnt from routers).
    #[serde(default)]
    pub routes6: Vec<crate::route::Route6>,
    /// Egress queue limit per interface, in packets.
    pub qdisc_limit: u32,
    /// First and last port of the ephemeral range (Linux's default
    /// `ip_local_port_range` is 32768–60999).
    #[serde(default = "default_ephemeral")]
    pub ephemeral_ports: (u16, u16),
    /// Bytes of each socket's receive ring (what SO_RCVBUF bounds on Linux).
    #[serde(default = "default_sock_ring")]
    pub socket_rx_bytes: u32,
    /// Bytes of each socket's send ring.
    #[serde(default = "default_sock_ring")]
    pub socket_tx_bytes: u32,
    /// ipd forwards IPv4 between interfaces (router mode, Linux
    /// `net.ipv4.ip_forward`). Off by default.
    #[serde(default)]
    pub forwarding: bool,
    /// The first port any local user may bind (Linux
    /// `net.ipv4.ip_unprivileged_port_start`); below it sockd asks for uid
    /// 0 or CAP_NET_BIND_SERVICE.
    #[serde(default = "default_unprivileged_port_start")]
    pub unprivileged_port_start: u16,
    /// Sockets one process may hold at sockd.
    #[serde(default = "default_sockets_per_process")]
    pub sockets_per_process: u32,
    /// Sockets all processes of one user may hold together.
    #[serde(default = "default_sockets_per_user")]
    pub sockets_per_user: u32,
    /// TCP connections (and listeners and bound sockets) tcpd holds at
    /// once: its connection blocks.
    #[serde(default = "default_tcp_connections")]
    pub tcp_connections: u32,
    /// Sessions (connections to sockd) all processes of one user may
    /// hold together: each costs sockd a descriptor.
    #[serde(default = "default_sessions_per_user")]
    pub sessions_per_user: u32,
    /// Bytes all TCP sockets of one user may have at tcpd, sent and not
    /// yet acknowledged (pool buffers).
    #[serde(default = "default_send_bytes_per_user")]
    pub send_bytes_per_user: u64,
    /// Permanent neighbours (`strata neigh add`): ipd never ages, probes,
    /// relearns or flushes them.
    #[serde(default)]
    pub neighbours: Vec<StaticNeigh>,
}

/// A permanent neighbour entry.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StaticNeigh {
    /// The neighbour's address.
    pub ip: Ipv4Addr,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Interface index.
    pub iface: u8,
}

fn default_sessions_per_user() -> u32 {
    1024
}

fn default_send_bytes_per_user() -> u64 {
    2 << 20
}

fn default_sockets_per_process() -> u32 {
    131_072
}

fn default_sockets_per_user() -> u32 {
    131_072
}

fn default_tcp_connections() -> u32 {
    131_072
}

fn default_unprivileged_port_start() -> u16 {
    1024
}

fn default_ephemeral() -> (u16, u16) {
    (32768, 60999)
}

fn default_sock_ring() -> u32 {
    4 << 20
}

/// Configured routes of each family a configuration holds at most (the
/// launcher refuses more): what [`CONFIG_BYTES`] is sized for.
pub const MAX_ROUTES: usize = 65_536;

/// Bytes of JSON the configuration region holds: room for every
/// interface with its 16 addresses of each family, 256 permanent
/// neighbours and [`MAX_ROUTES`] routes of each family in their longest
/// text forms (79 bytes of JSON an IPv4 route, 128 an IPv6 one: 12.9
/// MiB; 10,000 usual routes, to /24s through a gateway, take 0.6 MiB).
/// The region's pages are touched only as far as a configuration was
/// written, and the layers copy out only the bytes written.
pub const CONFIG_BYTES: usize = 14 * 1024 * 1024;

/// The configuration region: the [`StackConfig`] as JSON under a sequence
/// lock. Only the launcher writes it (one writer, under its own lock);
/// the layers copy it out and keep the copy only if the generation read
/// before and after is the same even number.
#[repr(C, align(64))]
pub struct ConfigCtl {
    /// Odd while the launcher writes; 0 before the first configuration.
    /// Each change adds 2.
    pub gen: AtomicU64,
    /// Bytes of JSON in `words`.
    pub len: AtomicU64,
    /// The JSON, eight bytes per word (little-endian).
    pub words: [AtomicU64; CONFIG_BYTES / 8],
}

/// Why a configuration could not be published or read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishError {
    /// The JSON is longer than [`CONFIG_BYTES`].
    TooLarge(usize),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::TooLarge(n) => write!(
                f,
                "the configuration takes {n} bytes, more than the {CONFIG_BYTES} the fabric holds"
            ),
        }
    }
}

impl ConfigCtl {
    /// The generation now (Acquire: a reader that sees it sees the bytes
    /// written before it).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.gen.load(Acquire)
    }

    /// Publishes `cfg` (the launcher, the only writer); returns its
    /// generation.
    pub fn publish(&self, cfg: &StackConfig) -> Result<u64, PublishError> {
        let json = serde_json::to_vec(cfg).expect("a StackConfig serialises");
        if json.len() > CONFIG_BYTES {
            return Err(PublishError::TooLarge(json.len()));
        }
        let g = self.gen.load(Relaxed);
        self.gen.store(g | 1, Relaxed);
        fence(Release);
        self.len.store(json.len() as u64, Relaxed);
        for (w, chunk) in self.words.iter().zip(json.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            w.store(u64::from_le_bytes(b), Relaxed);
        }
        let next = (g | 1) + 1;
        self.gen.store(next, Release);
        Ok(next)
    }

    /// One consistent copy of the configuration with its generation, or
    /// None while the launcher is writing (try again) or before it first
    /// did. A copy that does not parse is an error (the launcher wrote
    /// it, so it means binaries of different builds).
    pub fn read(&self) -> Option<Result<(u64, StackConfig), String>> {
        let g = self.gen.load(Acquire);
        if g == 0 || g & 1 == 1 {
            return None;
        }
        let len = (self.len.load(Relaxed) as usize).min(CONFIG_BYTES);
        let mut bytes = Vec::with_capacity(len.next_multiple_of(8));
        for w in &self.words[..len.div_ceil(8)] {
            bytes.extend_from_slice(&w.load(Relaxed).to_le_bytes());
        }
        bytes.truncate(len);
        fence(Acquire);
        if self.gen.load(Relaxed) != g {
            return None;
        }
        Some(
            serde_json::from_slice(&bytes)
                .map(|c| (g, c))
                .map_err(|e| format!("the fabric's configuration: {e}")),
        )
    }

    /// [`ConfigCtl::read`], waiting out a write in progress (the launcher
    /// holds it for microseconds); Err if there is no configuration.
    pub fn read_settled(&self) -> Result<(u64, StackConfig), String> {
        for _ in 0..100_000 {
            match self.read() {
                Some(r) => return r,
                None if self.gen.load(Relaxed) == 0 => break,
                None => std::thread::yield_now(),
            }
        }
        Err("the fabric holds no configuration (layers are started by `strata up`)".into())
    }
}

/// Why a transport layer's (tcpd's or udpd's) configuration, or the
/// storage given with it, is unusable. One type for both: they check the
/// same things (ephemeral range, the address table's prefixes, their own
/// capacity), each variant's doc says which layer reports it. ipd's
/// (`strata_ipd::ConfigError`) and the launcher's differ: ipd checks the
/// interfaces, addresses and routes it forwards by, the launcher names the
/// field of the TOML file at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The ephemeral range is empty, reversed or starts at port 0.
    BadEphemeralRange(u16, u16),
    /// A prefix length above 32 (an address's or a route's).
    BadPrefix(u8),
    /// tcpd: a socket buffer size of 0.
    BadBufferSize,
    /// tcpd: no connection block (storage or `max_conns` is 0).
    NoConns,
    /// tcpd: no queue entry in the storage.
    NoQueueEntries,
    /// udpd: `max_bindings` is 0.
    NoBindings,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadEphemeralRange(a, b) => write!(f, "bad ephemeral port range {a}-{b}"),
            ConfigError::BadPrefix(p) => write!(f, "prefix length {p} above 32"),
            ConfigError::BadBufferSize => f.write_str("socket buffer size 0"),
            ConfigError::NoConns => f.write_str("no room for any connection"),
            ConfigError::NoQueueEntries => f.write_str("no room for any queue entry"),
            ConfigError::NoBindings => f.write_str("max_bindings is 0"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Box<ConfigCtl> {
        // Made on the heap: it is larger than a test thread's stack.
        // SAFETY: every field is atomics, for which all zeros is a value
        // (0), as in a new shared-memory region.
        unsafe { Box::<ConfigCtl>::new_zeroed().assume_init() }
    }

    fn config(routes: usize) -> StackConfig {
        let mut c: StackConfig = serde_json::from_str(
            r#"{"instance":"t","ifaces":[{"index":0,"name":"tap0","driver":"tap",
                "mac":[2,0,0,0,0,1],"mtu":1500,"addrs":[["10.0.0.2",24]]}],
                "routes":[],"qdisc_limit":1000}"#,
        )
        .unwrap();
        c.routes = (0..routes)
            .map(|i| Route {
                dest: Ipv4Addr::from(0x0a00_0000 | (i as u32) << 8),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                iface: None,
            })
            .collect();
        c
    }

    #[test]
    fn nothing_is_read_before_the_first_publication() {
        let r = region();
        assert!(r.read().is_none());
        assert!(r.read_settled().is_err());
    }

    #[test]
    fn what_is_published_is_read_back_with_its_generation() {
        let r = region();
        let a = config(0);
        let g1 = r.publish(&a).unwrap();
        assert_eq!(r.read().unwrap().unwrap(), (g1, a));
        // A shorter configuration after a longer one: the length counts.
        let long = config(200);
        let g2 = r.publish(&long).unwrap();
        let short = config(1);
        let g3 = r.publish(&short).unwrap();
        assert!(g1 < g2 && g2 < g3 && g3.is_multiple_of(2));
        assert_eq!(r.read_settled().unwrap(), (g3, short));
    }

    #[test]
    fn a_write_in_progress_is_not_read() {
        let r = region();
        r.publish(&config(0)).unwrap();
        r.gen.fetch_add(1, SeqCst);
        assert!(r.read().is_none());
    }

    /// An IPv4 and an IPv6 route in the longest text forms there are
    /// (every number of three digits, every IPv6 group of four), to a
    /// network of its own for each `i` below 65,536.
    fn longest_routes(i: u32) -> (Route, crate::route::Route6) {
        let octet = |k: u32| (100 + k % 150) as u8;
        let v4 = Route {
            dest: Ipv4Addr::new(200 + (i / 22_500) as u8, octet(i / 150), octet(i), 255),
            prefix: 32,
            gateway: Some(Ipv4Addr::new(255, 255, 255, 254)),
            iface: Some(255),
        };
        let low = u128::from(0xf000 | i >> 12) << 16 | u128::from(0xf000 | (i & 0xfff));
        let v6 = crate::route::Route6 {
            dest: Ipv6Addr::from(0xfd00_abcd_ef01_2345_6789_abcd_0000_0000_u128 | low),
            prefix: 128,
            gateway: Some(Ipv6Addr::from(
                0xfe80_abcd_ef01_2345_6789_abcd_ef10_f00f_u128,
            )),
            iface: Some(255),
        };
        (v4, v6)
    }

    #[test]
    fn a_route_takes_at_most_79_bytes_of_json_an_ipv6_one_128() {
        // With the comma that parts it from the next.
        fn bytes<T: Serialize>(r: &T) -> usize {
            serde_json::to_string(r).unwrap().len() + 1
        }
        let (v4, v6) = longest_routes(0);
        let (v4, v6) = (bytes(&v4), bytes(&v6));
        assert_eq!((v4, v6), (79, 128));
        // A usual one, to a /24 through a gateway: 66.
        assert_eq!(bytes(&config(1).routes[0]), 66);
        // The region holds the largest configuration with room to spare.
        assert!(MAX_ROUTES * (v4 + v6) + 512 * 1024 <= CONFIG_BYTES);
    }

    #[test]
    fn the_largest_configuration_fits_and_a_larger_one_is_refused() {
        let r = region();
        // 8 interfaces of 16 addresses of each family (IPv6 ones of the
        // longest text form), MAX_ROUTES routes of each family in their
        // longest text forms, 256 neighbours.
        let mut c = config(0);
        (c.routes, c.routes6) = (0..MAX_ROUTES as u32).map(longest_routes).unzip();
        let ifc = c.ifaces[0].clone();
        c.ifaces = (0..8)
            .map(|i| IfaceRt {
                index: i,
                addrs: (0..16)
                    .map(|k| (Ipv4Addr::new(10, i, k, 200), 24))
                    .collect(),
                addrs6: (0..16u8)
                    .map(|k| {
                        let low = u128::from(k) << 4 | u128::from(i);
                        let a = 0xfd00_abcd_ef01_2345_6789_abcd_ef10_f000_u128 | low;
                        (Ipv6Addr::from(a), 128)
                    })
                    .collect(),
                name: "a-long-name-15c".into(),
                ..ifc.clone()
            })
            .collect();
        c.neighbours = (0..256)
            .map(|i| StaticNeigh {
                ip: Ipv4Addr::new(192, 168, 100, i as u8),
                mac: [0xfe; 6],
                iface: 7,
            })
            .collect();
        let g = r.publish(&c).unwrap();
        assert_eq!(r.read().unwrap().unwrap(), (g, c.clone()));
        c.routes6.extend(c.routes6.clone());
        assert!(matches!(r.publish(&c), Err(PublishError::TooLarge(_))));
        // The refused one left the published one alone.
        assert_eq!(r.read().unwrap().unwrap().0, g);
    }
}
