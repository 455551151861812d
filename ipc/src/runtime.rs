//! The configuration the launcher hands to the layers: the resolved stack
//! description, written as JSON into the instance's runtime directory
//! before any layer starts, and read again by every (re)started layer.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::route::Route;

/// Root of the runtime directories.
pub const RUN_ROOT: &str = "/run/strata";

/// The runtime directory of an instance (control socket, stack.json).
pub fn run_dir(instance: &str) -> PathBuf {
    PathBuf::from(RUN_ROOT).join(instance)
}

/// Path of the runtime configuration of an instance.
pub fn stack_file(instance: &str) -> PathBuf {
    run_dir(instance).join("stack.json")
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
    /// "tap" or "pair".
    pub driver: String,
    /// The stack's MAC on this interface.
    pub mac: [u8; 6],
    /// MTU (IP bytes, without the Ethernet header).
    pub mtu: u16,
    /// The stack's addresses, with prefix lengths.
    pub addrs: Vec<(Ipv4Addr, u8)>,
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
    /// Sessions (connections to sockd) all processes of one user may
    /// hold together: each costs sockd a descriptor.
    #[serde(default = "default_sessions_per_user")]
    pub sessions_per_user: u32,
    /// Bytes all TCP sockets of one user may have at tcpd, sent and not
    /// yet acknowledged (pool buffers).
    #[serde(default = "default_send_bytes_per_user")]
    pub send_bytes_per_user: u64,
}

fn default_sessions_per_user() -> u32 {
    1024
}

fn default_send_bytes_per_user() -> u64 {
    2 << 20
}

fn default_sockets_per_process() -> u32 {
    4096
}

fn default_sockets_per_user() -> u32 {
    16384
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

impl StackConfig {
    /// Reads the runtime configuration of `instance`.
    pub fn load(instance: &str) -> Result<StackConfig, String> {
        let p = stack_file(instance);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
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
