//! What `strata up` will build: the configuration resolved into fabric
//! sizes, the layers' runtime configuration and the devices to open.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use strata_ipc::runtime::StackConfig;
use strata_ipc::Params;

/// A device the launcher opens and holds.
#[derive(Clone, Debug)]
pub enum DeviceSpec {
    /// A TAP interface in the launcher's network namespace.
    Tap {
        /// Interface name.
        name: String,
        /// MTU to set on the kernel side.
        mtu: u16,
        /// IPv4 addresses to give the kernel side.
        host_addrs: Vec<(Ipv4Addr, u8)>,
        /// IPv6 addresses to give the kernel side.
        host_addrs6: Vec<(Ipv6Addr, u8)>,
        /// Open with a virtio-net header and offloads on.
        offloads: bool,
    },
    /// One side of an in-memory link to another instance.
    Pair {
        /// Link name.
        link: String,
        /// true for side "a".
        side_a: bool,
    },
    /// An existing interface of the launcher's network namespace, driven
    /// through an AF_XDP socket.
    AfXdp {
        /// The kernel's name of the interface.
        device: String,
    },
    /// A virtio-net PCI device, opened through VFIO.
    Vfio {
        /// Its PCI address.
        device: String,
    },
}

/// Everything `up` needs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Instance name.
    pub instance: String,
    /// Fabric sizes.
    pub params: Params,
    /// What the layers read.
    pub stack: StackConfig,
    /// Devices, by interface index.
    pub devices: Vec<DeviceSpec>,
    /// A layer whose heartbeat stalls this long is killed and restarted.
    pub heartbeat_timeout: Duration,
    /// Longest wait before restarting a crash-looping layer.
    pub backoff_max: Duration,
    /// `strata filter` command lines applied at start, in order.
    pub filter_rules: Vec<String>,
    /// Permission bits of sockd's socket file.
    pub socket_mode: u32,
    /// Group of sockd's socket file (None: root's).
    pub socket_group: Option<u32>,
    /// The layers' id block (`[security]`; 0: the layers stay root).
    pub layer_uid_base: u32,
    /// Where the layers run.
    pub cpu: crate::config::Cpu,
}

impl Plan {
    /// Resolves a validated configuration.
    pub fn from_config(c: &crate::config::Config) -> Plan {
        use crate::config::{Device, Side};
        use strata_ipc::runtime::IfaceRt;
        let ifaces: Vec<IfaceRt> = c
            .interfaces
            .iter()
            .enumerate()
            .map(|(i, ifc)| IfaceRt {
                index: i as u8,
                name: ifc.name.clone(),
                driver: match ifc.device {
                    Device::Tap => "tap".into(),
                    Device::Pair { .. } => "pair".into(),
                    Device::AfXdp { .. } => "af_xdp".into(),
                    Device::Vfio { .. } => "vfio".into(),
                },
                // Only driverd of a vfio device reads these: it negotiates
                // the device's features itself.
                offloads: matches!(ifc.device, Device::Vfio { .. }) && ifc.offloads,
                poll: matches!(ifc.device, Device::Vfio { poll: true, .. }),
                mac: ifc.mac.0,
                mtu: ifc.mtu,
                addrs: ifc.addresses.iter().map(|a| (a.addr, a.prefix)).collect(),
                addrs6: ifc.addresses6.iter().map(|a| (a.addr, a.prefix)).collect(),
                autoconf: ifc.autoconf,
            })
            .collect();
        let devices = c
            .interfaces
            .iter()
            .map(|ifc| match &ifc.device {
                Device::Tap => DeviceSpec::Tap {
                    name: ifc.name.clone(),
                    mtu: ifc.mtu,
                    host_addrs: ifc
                        .host_addresses
                        .iter()
                        .map(|a| (a.addr, a.prefix))
                        .collect(),
                    host_addrs6: ifc
                        .host_addresses6
                        .iter()
                        .map(|a| (a.addr, a.prefix))
                        .collect(),
                    offloads: ifc.offloads,
                },
                Device::Pair { link, side } => DeviceSpec::Pair {
                    link: link.clone(),
                    side_a: *side == Side::A,
                },
                Device::AfXdp { device } => DeviceSpec::AfXdp {
                    device: device.clone(),
                },
                Device::Vfio { device, .. } => DeviceSpec::Vfio {
                    device: device.clone(),
                },
            })
            .collect();
        let routes = c
            .routes
            .iter()
            .filter_map(|r| r.v4())
            .map(|r| r.resolve(&c.interfaces))
            .collect();
        let routes6 = c
            .routes
            .iter()
            .filter_map(|r| r.v6())
            .map(|r| r.resolve(&c.interfaces))
            .collect();
        Plan {
            instance: c.instance.clone(),
            params: Params {
                small_bufs: c.limits.small_buffers,
                large_bufs: c.limits.large_buffers,
                ring_size: c.limits.ring_size,
                n_ifaces: c.interfaces.len() as u32,
                tcpd_arena_bytes: strata_tcpd::Storage::arena_bytes(
                    c.limits.tcp_connections as usize,
                ) as u32,
                filterd_arena_bytes: strata_filterd::shm::arena_bytes(
                    c.limits.conntrack_entries as usize,
                ) as u32,
                sockd_arena_bytes: strata_ipc::socktable::bytes_for(c.limits.sockets as usize)
                    as u32,
                ..Params::default()
            },
            stack: StackConfig {
                instance: c.instance.clone(),
                ifaces,
                routes,
                routes6,
                qdisc_limit: c.limits.qdisc_limit,
                ephemeral_ports: (
                    c.limits.ephemeral_port_first as u16,
                    c.limits.ephemeral_port_last as u16,
                ),
                socket_rx_bytes: c.limits.socket_buffer_bytes,
                socket_tx_bytes: c.limits.socket_buffer_bytes,
                forwarding: c.ip.forwarding,
                unprivileged_port_start: c.ip.unprivileged_port_start,
                sockets_per_process: c.limits.sockets_per_process,
                sockets_per_user: c.limits.sockets_per_user,
                tcp_connections: c.limits.tcp_connections,
                sessions_per_user: c.limits.sessions_per_user,
                send_bytes_per_user: c.limits.send_bytes_per_user(),
                neighbours: c
                    .neighbours
                    .iter()
                    .filter_map(|n| {
                        Some(strata_ipc::runtime::StaticNeigh {
                            ip: n.ip,
                            mac: n.mac.0,
                            iface: c.interfaces.iter().position(|i| i.name == n.dev)? as u8,
                        })
                    })
                    .collect(),
            },
            devices,
            heartbeat_timeout: Duration::from_millis(c.limits.heartbeat_timeout_ms as u64),
            backoff_max: Duration::from_millis(c.limits.restart_backoff_max_ms as u64),
            filter_rules: c.filter.rules.clone(),
            socket_mode: c.sockd.socket_mode,
            socket_group: c.sockd.socket_group,
            layer_uid_base: c.security.layer_uid_base,
            cpu: c.cpu.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_reaches_the_layers_config() {
        let mut c = crate::config::Config::default();
        assert!(!Plan::from_config(&c).stack.forwarding);
        c.ip.forwarding = true;
        let stack = Plan::from_config(&c).stack;
        assert!(stack.forwarding);
        // What the layers read back from stack.json.
        let json = serde_json::to_string(&stack).unwrap();
        let back: StackConfig = serde_json::from_str(&json).unwrap();
        assert!(back.forwarding);
    }

    #[test]
    fn ipv6_addresses_reach_the_layers_and_the_tap() {
        let c = crate::config::parse(
            "[[interface]]\nname = \"t0\"\naddresses = [\"10.1.0.2/24\", \"fd00:1::2/64\"]\n\
             host_addresses = [\"fd00:1::1/64\"]\n",
        )
        .unwrap();
        let plan = Plan::from_config(&c);
        let fd = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(plan.stack.ifaces[0].addrs6, [(fd("fd00:1::2"), 64)]);
        let DeviceSpec::Tap {
            host_addrs,
            host_addrs6,
            ..
        } = &plan.devices[0]
        else {
            panic!("{:?}", plan.devices[0]);
        };
        assert!(host_addrs.is_empty());
        assert_eq!(host_addrs6, &[(fd("fd00:1::1"), 64)]);
    }

    #[test]
    fn routes_of_each_family_reach_the_layers_with_their_interface_index() {
        let c = crate::config::parse(
            "[[interface]]\nname = \"t0\"\naddresses = [\"10.1.0.2/24\", \"fd00:1::2/64\"]\n\
             [[interface]]\nname = \"t1\"\naddresses = [\"fd00:2::2/64\"]\n\
             [[route]]\nto = \"::/0\"\nvia = \"fe80::1\"\ndev = \"t1\"\n\
             [[route]]\nto = \"default\"\nvia = \"10.1.0.1\"\n\
             [[route]]\nto = \"fd00:99::/64\"\nvia = \"fd00:1::1\"\n\
             [[route]]\nto = \"fd00:98::/48\"\ndev = \"t0\"\n",
        )
        .unwrap();
        let stack = Plan::from_config(&c).stack;
        let fd = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(
            stack.routes,
            [strata_ipc::route::Route {
                dest: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Some(Ipv4Addr::new(10, 1, 0, 1)),
                iface: None,
            }]
        );
        assert_eq!(
            stack.routes6,
            [
                strata_ipc::route::Route6 {
                    dest: Ipv6Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: Some(fd("fe80::1")),
                    iface: Some(1),
                },
                strata_ipc::route::Route6 {
                    dest: fd("fd00:99::"),
                    prefix: 64,
                    gateway: Some(fd("fd00:1::1")),
                    iface: None,
                },
                strata_ipc::route::Route6 {
                    dest: fd("fd00:98::"),
                    prefix: 48,
                    gateway: None,
                    iface: Some(0),
                },
            ]
        );
        // What ipd reads back from stack.json.
        let json = serde_json::to_string(&stack).unwrap();
        let back: StackConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back.routes6, stack.routes6);
        // A stack.json written before IPv6 routes reads as having none.
        let mut v = serde_json::to_value(&stack).unwrap();
        v.as_object_mut().unwrap().remove("routes6");
        let back: StackConfig = serde_json::from_value(v).unwrap();
        assert!(back.routes6.is_empty());
    }

    #[test]
    fn the_defaults_hold_a_hundred_thousand_tcp_connections() {
        let c = crate::config::Config::default();
        let l = &c.limits;
        for n in [
            l.sockets,
            l.sockets_per_process,
            l.sockets_per_user,
            l.tcp_connections,
            l.conntrack_entries,
        ] {
            assert!(n >= 100_000, "{l:?}");
        }
        let p = Plan::from_config(&c).params;
        assert_eq!(
            p.sockd_arena_bytes as usize,
            strata_ipc::socktable::bytes_for(l.sockets as usize)
        );
        assert_eq!(
            p.tcpd_arena_bytes as usize,
            strata_tcpd::Storage::arena_bytes(l.tcp_connections as usize)
        );
        assert_eq!(
            p.filterd_arena_bytes as usize,
            strata_filterd::shm::arena_bytes(l.conntrack_entries as usize)
        );
    }

    #[test]
    fn each_arena_holds_what_its_limit_says() {
        let mut c = crate::config::Config::default();
        c.limits.sockets = 70_001;
        c.limits.tcp_connections = 1000;
        c.limits.conntrack_entries = 2001;
        let plan = Plan::from_config(&c);
        let f =
            strata_ipc::Fabric::create(&format!("plan-arenas-{}", std::process::id()), plan.params)
                .expect("a fabric (needs /dev/shm)");
        assert_eq!(f.sock_table().unwrap().capacity(), 70_001);
        let (p, n) = f.arena_bytes(strata_ipc::LayerId::TCPD);
        // SAFETY: the fabric maps tcpd's arena until the end of the test,
        // and nothing else uses it.
        assert!(unsafe { strata_tcpd::Storage::from_raw(p, n, 1000) }.is_some());
        let (p, n) = f.arena_bytes(strata_ipc::LayerId::FILTERD);
        // SAFETY: as for tcpd's.
        let shm = unsafe { strata_filterd::shm::Shm::new(p, n) }.unwrap();
        let (p, n) = shm.conntrack_region();
        // SAFETY: as above; the table is the region's only user.
        let (ct, _) =
            unsafe { strata_filterd::conntrack::Conntrack::from_raw(p, n, [1, 2], 0) }.unwrap();
        assert_eq!(ct.capacity(), 2001);
    }

    #[test]
    fn an_older_stack_json_without_forwarding_reads_as_off() {
        let mut v = serde_json::to_value(Plan::from_config(&Default::default()).stack).unwrap();
        v.as_object_mut().unwrap().remove("forwarding");
        let back: StackConfig = serde_json::from_value(v).unwrap();
        assert!(!back.forwarding);
    }
}
