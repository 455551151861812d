//! Layer identities: every process of a stack instance has a fixed id that
//! names its control block, its arena, the rings it produces and consumes,
//! and the owner of the buffers it holds.

use std::fmt;

/// Most interfaces (and so driverd processes) an instance can have.
pub const MAX_IFACES: usize = 8;
/// Number of layer slots in the fabric.
pub const MAX_LAYERS: usize = 16;

/// A layer's id: an index into the fabric's control blocks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(pub u8);

impl LayerId {
    /// The launcher (owns buffers only transiently, never consumes rings).
    pub const LAUNCHER: LayerId = LayerId(0);
    /// L2: Ethernet, counters, qdisc.
    pub const NETDEVD: LayerId = LayerId(1);
    /// Netfilter hooks.
    pub const FILTERD: LayerId = LayerId(2);
    /// IPv4, ARP, ICMP, routing, fragments.
    pub const IPD: LayerId = LayerId(3);
    /// TCP.
    pub const TCPD: LayerId = LayerId(4);
    /// UDP.
    pub const UDPD: LayerId = LayerId(5);
    /// The socket server.
    pub const SOCKD: LayerId = LayerId(6);
    /// Layers that are the same for every instance, in start order
    /// (lowest first, so that a layer's consumers exist before it sends).
    pub const SERVICES: [LayerId; 6] = [
        LayerId::NETDEVD,
        LayerId::FILTERD,
        LayerId::IPD,
        LayerId::TCPD,
        LayerId::UDPD,
        LayerId::SOCKD,
    ];

    /// The driverd process of interface `iface`.
    pub const fn driver(iface: u8) -> LayerId {
        LayerId(8 + iface)
    }

    /// The interface index if this is a driverd.
    pub fn iface(self) -> Option<u8> {
        (8..8 + MAX_IFACES as u8)
            .contains(&self.0)
            .then(|| self.0 - 8)
    }

    /// The process name (and binary name) of the layer.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "launcher",
            1 => "netdevd",
            2 => "filterd",
            3 => "ipd",
            4 => "tcpd",
            5 => "udpd",
            6 => "sockd",
            8..=15 => "driverd",
            _ => "unknown",
        }
    }

    /// Whether the layer may stand aside ([`crate::Fabric::step_aside`]):
    /// filterd, whose work is nothing while there are no rules and no
    /// tracked connections.
    pub fn can_stand_aside(self) -> bool {
        self == LayerId::FILTERD
    }

    /// The name with the interface index for drivers, e.g. `driverd0`.
    pub fn label(self) -> String {
        match self.iface() {
            Some(i) => format!("driverd{i}"),
            None => self.name().to_string(),
        }
    }

    /// Parses a label as printed by [`LayerId::label`] (`driverd` alone
    /// means `driverd0`).
    pub fn from_label(s: &str) -> Option<LayerId> {
        if let Some(rest) = s.strip_prefix("driverd") {
            let i: u8 = if rest.is_empty() {
                0
            } else {
                rest.parse().ok()?
            };
            return ((i as usize) < MAX_IFACES).then(|| LayerId::driver(i));
        }
        LayerId::SERVICES.into_iter().find(|l| l.name() == s)
    }
}

impl fmt::Debug for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// What the handles on a ring hold: it decides whether and how a ring can
/// be captured, and whether what a dead consumer took from it is replayed
/// ([`Carries::replayed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carries {
    /// Ethernet frames: every ring between driverd, netdevd, filterd and
    /// ipd.
    Ethernet,
    /// Bare IPv4 datagrams: the rings between ipd and the transports.
    Ipv4,
    /// Socket calls and stream data: the rings between the transports
    /// and sockd, which hold no packets.
    Messages,
}

impl Carries {
    /// What the ring from `from` to `to` carries.
    pub fn ring(from: LayerId, to: LayerId) -> Carries {
        let transport = |l: LayerId| l == LayerId::TCPD || l == LayerId::UDPD;
        if from == LayerId::SOCKD || to == LayerId::SOCKD {
            Carries::Messages
        } else if transport(from) || transport(to) {
            Carries::Ipv4
        } else {
            Carries::Ethernet
        }
    }

    /// Whether the handles a consumer had taken from the ring `from` →
    /// `to` and not finished when it died go to its next instance
    /// (docs/ARCHITECTURE.md, "Replay"): only the datagrams ipd hands
    /// tcpd and udpd, which those layers only read (the ICMP errors they
    /// turn into notifications in place excepted: those are dropped on
    /// replay, [`crate::serve::Layer::replayable`]). Elsewhere a packet
    /// may be half-changed (ipd's echo answered in place and TTL,
    /// filterd's NAT, driverd's checksums) or a message whose second
    /// delivery would repeat its effect (sockd's rings); what such a
    /// consumer took is dropped as it always was.
    pub fn replayed(from: LayerId, to: LayerId) -> bool {
        from == LayerId::IPD && (to == LayerId::TCPD || to == LayerId::UDPD)
    }
}

/// The edges of the layer graph (docs/DESIGN.md, "Layers"), as
/// (producer, consumer) pairs: one ring per direction per edge.
pub fn topology(n_ifaces: u8) -> Vec<(LayerId, LayerId)> {
    let mut v = Vec::new();
    for i in 0..n_ifaces {
        v.push((LayerId::driver(i), LayerId::NETDEVD));
        v.push((LayerId::NETDEVD, LayerId::driver(i)));
    }
    let pairs = [
        (LayerId::NETDEVD, LayerId::FILTERD),
        (LayerId::FILTERD, LayerId::IPD),
        (LayerId::IPD, LayerId::TCPD),
        (LayerId::IPD, LayerId::UDPD),
        (LayerId::TCPD, LayerId::SOCKD),
        (LayerId::UDPD, LayerId::SOCKD),
    ];
    for (a, b) in pairs {
        v.push((a, b));
        v.push((b, a));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for l in LayerId::SERVICES {
            assert_eq!(LayerId::from_label(&l.label()), Some(l));
        }
        assert_eq!(LayerId::from_label("driverd3"), Some(LayerId::driver(3)));
        assert_eq!(LayerId::from_label("driverd"), Some(LayerId::driver(0)));
        assert_eq!(LayerId::from_label("driverd8"), None);
        assert_eq!(LayerId::from_label("launcher"), None);
        assert_eq!(LayerId::driver(2).iface(), Some(2));
        assert_eq!(LayerId::IPD.iface(), None);
    }

    #[test]
    fn topology_has_both_directions() {
        let t = topology(2);
        for &(a, b) in &t {
            assert!(t.contains(&(b, a)), "{a}->{b} without its reverse");
        }
        assert_eq!(t.len(), 4 + 12);
    }
}
