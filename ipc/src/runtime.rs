//! The configuration the launcher hands to the layers: the resolved stack
//! description, written as JSON into the instance's runtime directory
//! before any layer starts, and read again by every (re)started layer.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

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

/// One configured route.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteRt {
    /// Destination network.
    pub dest: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway, if not directly connected.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface, if fixed.
    pub iface: Option<u8>,
}

/// The whole runtime configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackConfig {
    /// Instance name.
    pub instance: String,
    /// Interfaces, by index.
    pub ifaces: Vec<IfaceRt>,
    /// Configured routes (connected routes are implied by addresses).
    pub routes: Vec<RouteRt>,
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
}

fn default_ephemeral() -> (u16, u16) {
    (32768, 60999)
}

fn default_sock_ring() -> u32 {
    256 * 1024
}

impl StackConfig {
    /// Reads the runtime configuration of `instance`.
    pub fn load(instance: &str) -> Result<StackConfig, String> {
        let p = stack_file(instance);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    }
}
