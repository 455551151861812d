//! What tcpd is told at start: the stack's addresses (to check binds and
//! pick source addresses), interface MTUs (to clamp the MSS), socket
//! buffer sizes (the credits), protocol timers and limits, and the secret
//! of the keyed hashes.
//!
//! Addresses are `u32` in host order throughout the core, as in
//! [`L4Ctl`](strata_ipc::l4::L4Ctl). Times are in milliseconds here and in
//! nanoseconds inside the core.

use std::net::Ipv4Addr;

use strata_ipc::runtime::StackConfig;

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
#[derive(Clone, Debug)]
pub struct IfaceAddrs {
    /// Interface index.
    pub index: u8,
    /// MTU (IP bytes): the MSS offered on connections through it is this
    /// less 40.
    pub mtu: u16,
    /// Addresses with prefix lengths; the first is the interface's primary.
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

/// One configured route: the stack's one route type (the launcher writes
/// it, every layer reads it), under the name tcpd's API has used.
pub use strata_ipc::route::Route as RouteInfo;

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
                })
                .collect(),
            routes: cfg.routes.clone(),
            ephemeral_ports: cfg.ephemeral_ports,
            socket_rx_bytes: cfg.socket_rx_bytes,
            socket_tx_bytes: cfg.socket_tx_bytes,
            ..TcpConfig::default()
        }
    }
}

use strata_ipc::addrs::AddrTable;

/// The stack's addresses as tcpd uses them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Net {
    t: AddrTable,
}

impl Net {
    pub fn new(cfg: &TcpConfig) -> Result<Net, ConfigError> {
        let ifaces = cfg.ifaces.iter().map(|i| (i.index, &i.addrs[..], i.mtu));
        Ok(Net {
            t: AddrTable::build(ifaces, &cfg.routes)?,
        })
    }

    /// Whether `a` is one of our (unicast) addresses.
    pub fn is_local(&self, a: u32) -> bool {
        self.t.is_local(a)
    }

    /// Whether `a` can never be a TCP endpoint: zero, limited or subnet
    /// broadcast, multicast, class E.
    pub fn is_bad_peer(&self, a: u32) -> bool {
        a == 0 || a >> 28 >= 0xe || self.t.is_subnet_broadcast(a)
    }

    /// The source address for a connection to `dst` (see
    /// [`AddrTable::source_for`]).
    pub fn source_for(&self, dst: u32) -> u32 {
        self.t.source_for(dst)
    }

    /// The MTU towards `dst` (1500 when unknown): the interface's MTU,
    /// also for our own addresses.
    pub fn mtu_for(&self, dst: u32) -> u16 {
        self.t.mtu_for(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn source_and_mtu_selection() {
        let cfg = TcpConfig {
            ifaces: vec![
                IfaceAddrs {
                    index: 0,
                    mtu: 1500,
                    addrs: vec![("10.0.0.1".parse().unwrap(), 24)],
                },
                IfaceAddrs {
                    index: 1,
                    mtu: 9000,
                    addrs: vec![("192.168.1.1".parse().unwrap(), 24)],
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
        assert_eq!(n.source_for(ip("10.0.0.7")), ip("10.0.0.1"));
        assert_eq!(n.source_for(ip("8.8.8.8")), ip("192.168.1.1"));
        assert_eq!(n.mtu_for(ip("10.0.0.7")), 1500);
        assert_eq!(n.mtu_for(ip("8.8.8.8")), 9000);
        assert!(n.is_bad_peer(ip("10.0.0.255")) && n.is_bad_peer(0));
        assert!(n.is_bad_peer(ip("224.0.0.1")) && !n.is_bad_peer(ip("10.0.0.2")));
    }
}
