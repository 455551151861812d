//! netdevd: the L2 layer. Receives frames from every driverd, keeps those
//! addressed to us (our MAC, broadcast, multicast), counts per interface,
//! and passes them up; queues outgoing frames in a per-interface qdisc and
//! feeds them to each driverd as its ring has room.
//!
//! The qdisc of each interface and direction can inject faults (loss,
//! duplication, reordering, delay) and limit the rate, as `strata qdisc`
//! sets in the fabric ([`strata_ipc::qdisc_cfg`]); netdevd picks changes
//! up at the start of its next turn. Egress always runs through the
//! qdisc; ingress only while faults are set for it.

#![forbid(unsafe_code)]

mod fault;
mod qdisc;

use qdisc::{Qdisc, Stats as QdiscStats};
use std::sync::atomic::Ordering::Relaxed;
use strata_ipc::handle::gso;
use strata_ipc::qdisc_cfg::{Direction, QdiscTable};
use strata_ipc::runtime::StackConfig;
use strata_ipc::serve::{Cx, Layer, Loop, Overflow};
use strata_ipc::service::ArenaFormat;
use strata_ipc::{ifc, service, Buffers, Handle, LayerId, Service, BUDGET};

const ETH_HLEN: u32 = 14;

// The layer's counters (per-interface ones live in the interface blocks).
strata_ipc::layer_stats! { "netdevd";
    /// Frames passed up to filterd.
    UpPackets => "up_packets",
    /// Frames taken from filterd for the wire.
    DownPackets => "down_packets",
    /// Outgoing frames for an interface that does not exist.
    DropBadOif => "drop_bad_oif",
    /// Frames whose buffer was no longer valid.
    DropStale => "drop_stale",
    /// Egress faults: frames lost.
    FaultLoss => "fault_loss",
    /// Egress faults: frames duplicated.
    FaultDuplicate => "fault_duplicate",
    /// Egress faults: duplicates not made for want of a buffer.
    FaultDupNoBuffer => "fault_dup_no_buffer",
    /// Egress faults: frames reordered.
    FaultReorder => "fault_reorder",
    /// Egress faults: frames delayed.
    FaultDelayed => "fault_delayed",
    /// Egress: frames dropped because the delay queue was full.
    DelayQueueFull => "delay_queue_full",
    /// Egress: times the rate limit held a frame back.
    RateLimitedWaits => "rate_limited_waits",
    /// Ingress faults: frames lost.
    IngressFaultLoss => "ingress_fault_loss",
    /// Ingress faults: frames duplicated.
    IngressFaultDuplicate => "ingress_fault_duplicate",
    /// Ingress faults: duplicates not made for want of a buffer.
    IngressFaultDupNoBuffer => "ingress_fault_dup_no_buffer",
    /// Ingress faults: frames reordered.
    IngressFaultReorder => "ingress_fault_reorder",
    /// Ingress faults: frames delayed.
    IngressFaultDelayed => "ingress_fault_delayed",
    /// Ingress: frames dropped because the delay queue was full.
    IngressDelayQueueFull => "ingress_delay_queue_full",
    /// Ingress: times the rate limit held a frame back.
    IngressRateLimitedWaits => "ingress_rate_limited_waits",
    /// Ingress: frames dropped by a full ingress queue.
    IngressDropQdisc => "ingress_drop_qdisc",
    /// Qdisc settings taken in from `strata qdisc`.
    QdiscReloads => "qdisc_reloads",
    /// IPv6 multicast frames for a group none of the stack's addresses is
    /// in (other hosts' solicited-node groups, MLD reports to routers).
    DropOtherGroup => "drop_other_group",
}

/// The first fault counter of each direction, in [`fault_counts`] order.
const EGRESS_FAULTS: Stat = Stat::FaultLoss;
const INGRESS_FAULTS: Stat = Stat::IngressFaultLoss;
const FAULT_COUNTERS: usize = 7;

/// The fault counts of one direction, in counter order.
fn fault_counts(s: &QdiscStats) -> [u64; FAULT_COUNTERS] {
    [
        s.loss,
        s.duplicate,
        s.duplicate_no_buffer,
        s.reorder,
        s.delayed,
        s.delay_queue_full,
        s.rate_limited_waits,
    ]
}

/// netdevd's side of the service loop. Inputs: each driverd's ring (by
/// interface index), then filterd's; outputs: filterd, then each
/// driverd.
struct Shell<'a> {
    svc: &'a Service,
    settings: QdiscTable<'a>,
    seen: Vec<[u64; 2]>,
    macs: Vec<[u8; 6]>,
    /// Per interface, the IPv6 multicast MACs it takes ([`groups6`]).
    groups6: Vec<Vec<[u8; 6]>>,
    max_frame: Vec<u32>,
    egress: Vec<Qdisc>,
    ingress: Vec<Qdisc>,
    stats: Stats,
    /// When a qdisc next releases something on its own.
    wake: Option<u64>,
    /// A qdisc holds frames a full ring will not take.
    held: bool,
}

/// Output 0 goes up to filterd; output 1 + i to driverd i.
const TO_FILTER: usize = 0;

impl Shell<'_> {
    fn n_if(&self) -> usize {
        self.macs.len()
    }

    fn filter_input(&self) -> usize {
        self.n_if()
    }

    /// Settings changed by `strata qdisc` (or set before a restart).
    fn reload(&mut self, now: u64) -> usize {
        let f = &self.svc.fabric;
        let mut n = 0;
        for i in 0..self.n_if() {
            for d in Direction::ALL {
                let g = self.settings.generation(i as u8, d);
                if g == self.seen[i][d.index()] {
                    continue;
                }
                // None: a change is being written; take it next turn.
                let Some((s, g)) = self.settings.load(i as u8, d) else {
                    continue;
                };
                let q = match d {
                    Direction::Egress => &mut self.egress[i],
                    Direction::Ingress => &mut self.ingress[i],
                };
                q.configure(&s, now);
                self.seen[i][d.index()] = g;
                self.stats.inc(Stat::QdiscReloads);
                n += 1;
                self.svc.log(&format!(
                    "qdisc {} {}: {}",
                    f.iface_name(i as u8),
                    d.name(),
                    s
                ));
            }
        }
        n
    }

    /// A frame from driverd `i`: checked, counted and passed up (through
    /// the ingress qdisc while it has faults set).
    fn frame_in(&mut self, i: usize, mut h: Handle, cx: &mut Cx) {
        let f = cx.pool.fabric();
        let iif = i as u8;
        if !f.iface_up(iif) {
            f.iface_add(iif, ifc::DROP_LINK_DOWN, 1);
            cx.pool.free(&h);
            return;
        }
        let Ok(d) = cx.pool.data(&h) else {
            self.stats.inc(Stat::DropStale);
            return;
        };
        f.iface_add(iif, ifc::RX_PACKETS, 1);
        f.iface_add(iif, ifc::RX_BYTES, d.len() as u64);
        if d.len() < ETH_HLEN as usize {
            f.iface_add(iif, ifc::RX_DROP_RUNT, 1);
            cx.pool.free(&h);
            return;
        }
        // A super-segment is as long as its longest segment.
        let wire = ETH_HLEN as usize + gso::wire_len(&h, &d[ETH_HLEN as usize..]);
        if wire as u32 > self.max_frame[i] {
            f.iface_add(iif, ifc::RX_DROP_OVERSIZE, 1);
            cx.pool.free(&h);
            return;
        }
        let dst = &d[..6];
        if dst[0] & 1 != 0 {
            if dst == [0xff; 6] {
                f.iface_add(iif, ifc::RX_BROADCAST, 1);
            } else {
                f.iface_add(iif, ifc::RX_MULTICAST, 1);
            }
            if dst[..2] == [0x33, 0x33] && !self.groups6[i].iter().any(|g| g[..] == *dst) {
                self.stats.inc(Stat::DropOtherGroup);
                cx.pool.free(&h);
                return;
            }
        } else if dst != self.macs[i] {
            f.iface_add(iif, ifc::RX_DROP_NOT_FOR_US, 1);
            cx.pool.free(&h);
            return;
        }
        h.ethertype = u16::from_be_bytes([d[12], d[13]]);
        h.iif = iif;
        h.l2_off = 0;
        h.l3_off = ETH_HLEN as u16;
        if self.ingress[i].is_plain() {
            cx.send(TO_FILTER, h);
            self.stats.inc(Stat::UpPackets);
        } else {
            self.ingress[i].enqueue(h, cx.now, &mut cx.pool);
        }
    }

    /// A frame from filterd, into its interface's egress qdisc.
    fn frame_out(&mut self, h: Handle, cx: &mut Cx) {
        self.stats.inc(Stat::DownPackets);
        let f = cx.pool.fabric();
        if (h.oif as usize) < self.n_if() && !f.iface_up(h.oif) {
            f.iface_add(h.oif, ifc::DROP_LINK_DOWN, 1);
            cx.pool.free(&h);
            return;
        }
        match self.egress.get_mut(h.oif as usize) {
            Some(q) => q.enqueue(h, cx.now, &mut cx.pool),
            None => {
                self.stats.inc(Stat::DropBadOif);
                cx.pool.free(&h);
            }
        }
    }

    /// Adds a qdisc's fault counts, from `first` on.
    fn count_faults(&mut self, q: &QdiscStats, first: Stat) {
        for (c, v) in fault_counts(q).into_iter().enumerate() {
            self.stats.add(Stat::ALL[first as usize + c], v);
        }
    }

    /// Out of the qdiscs as far as each ring has room: egress to the
    /// drivers, ingress (where faults are set) to filterd.
    fn drain_qdiscs(&mut self, cx: &mut Cx) {
        let f = cx.pool.fabric();
        for i in 0..self.n_if() {
            let to = 1 + i;
            let mut k = 0;
            while cx.room(to) > 0 {
                let Some(h) = self.egress[i].dequeue(cx.now, &mut cx.pool) else {
                    break;
                };
                f.iface_add(i as u8, ifc::TX_BYTES, h.data_len as u64);
                cx.send(to, h);
                k += 1;
            }
            if k > 0 {
                f.iface_add(i as u8, ifc::TX_PACKETS, k);
            }
            let st = self.egress[i].take_stats();
            if st != QdiscStats::default() {
                self.count_faults(&st, EGRESS_FAULTS);
                f.iface_add(i as u8, ifc::TX_DROP_QDISC, st.queue_full);
            }
            f.iface(i as u8).counters[ifc::QDISC_BACKLOG]
                .store(self.egress[i].backlog() as u64, Relaxed);
        }
        for i in 0..self.n_if() {
            if self.ingress[i].is_plain() && self.ingress[i].is_empty() {
                continue;
            }
            while cx.room(TO_FILTER) > 0 {
                let Some(h) = self.ingress[i].dequeue(cx.now, &mut cx.pool) else {
                    break;
                };
                cx.send(TO_FILTER, h);
                self.stats.inc(Stat::UpPackets);
            }
            let st = self.ingress[i].take_stats();
            if st != QdiscStats::default() {
                self.count_faults(&st, INGRESS_FAULTS);
                self.stats.add(Stat::IngressDropQdisc, st.queue_full);
            }
        }
    }

    /// When to run again without input, and whether a full ring holds a
    /// qdisc's frames back.
    fn plan(&mut self, cx: &Cx) {
        let mut wake: Option<u64> = None;
        let mut held = false;
        let qs = self.egress.iter().enumerate().map(|(i, q)| (q, 1 + i));
        let qs = qs.chain(self.ingress.iter().map(|q| (q, TO_FILTER)));
        for (q, to) in qs {
            held |= !q.is_empty() && cx.room(to) == 0;
            if let Some(w) = q.next_wake(cx.now) {
                wake = Some(wake.map_or(w, |x| x.min(w)));
            }
        }
        self.wake = wake;
        self.held = held;
    }
}

/// The longest frame taken in on each interface: its MTU, with room for
/// one VLAN tag, as Linux allows on a plain interface.
fn max_frames(cfg: &StackConfig) -> Vec<u32> {
    cfg.ifaces
        .iter()
        .map(|i| u32::from(i.mtu) + ETH_HLEN + 4)
        .collect()
}

impl Layer for Shell<'_> {
    fn begin(&mut self, cx: &mut Cx) -> usize {
        self.reload(cx.now)
    }

    fn admit(&self, input: usize, cx: &Cx) -> usize {
        if input < self.n_if() {
            // Every interface gets a budget in turn, as filterd's ring
            // has room.
            cx.room(TO_FILTER)
        } else {
            BUDGET
        }
    }

    fn input(&mut self, input: usize, h: Handle, cx: &mut Cx) {
        if input == self.filter_input() {
            self.frame_out(h, cx);
        } else {
            self.frame_in(input, h, cx);
        }
    }

    fn end(&mut self, cx: &mut Cx) -> usize {
        self.drain_qdiscs(cx);
        self.plan(cx);
        0
    }

    fn deadline(&self) -> Option<u64> {
        self.wake
    }

    fn held(&self) -> bool {
        self.held
    }

    /// What the qdiscs hold: a successor would not find it.
    fn holds(&self) -> usize {
        self.egress
            .iter()
            .chain(&self.ingress)
            .map(Qdisc::backlog)
            .sum()
    }

    /// A new MTU (`strata link set IFACE mtu N`): longer frames are
    /// dropped from now on.
    fn reconfigure(&mut self, cfg: &StackConfig, _cx: &mut Cx) {
        self.max_frame = max_frames(cfg);
        self.groups6 = groups6(cfg);
    }

    fn counters(&self) -> &[u64] {
        self.stats.as_array()
    }
}

/// Per interface, the IPv6 multicast MACs (`33:33:…`, RFC 2464 §7) it
/// takes: all-nodes, all-routers on a router, and the solicited-node
/// group of the link-local address (which every address ipd makes from
/// the MAC shares) and of each configured address; ipd joins these.
/// IPv4 multicast is not filtered here.
fn groups6(cfg: &StackConfig) -> Vec<Vec<[u8; 6]>> {
    use strata_proto::ndp::{
        link_local_from_mac, multicast_mac, solicited_node, ALL_NODES, ALL_ROUTERS,
    };
    cfg.ifaces
        .iter()
        .map(|i| {
            let ll = link_local_from_mac(strata_proto::MacAddr(i.mac));
            let mut g = vec![multicast_mac(ALL_NODES), multicast_mac(solicited_node(ll))];
            if cfg.forwarding {
                g.push(multicast_mac(ALL_ROUTERS));
            }
            g.extend(
                i.addrs6
                    .iter()
                    .map(|&(a, _)| multicast_mac(solicited_node(a))),
            );
            g.into_iter().map(|m| m.0).collect()
        })
        .collect()
}

fn main() {
    let svc = Service::start("netdevd", ArenaFormat::FIRST)
        .unwrap_or_else(|e| service::die("netdevd", &e));
    let f = &svc.fabric;
    let n_if = svc.config.ifaces.len();
    let limit = svc.config.qdisc_limit as usize;
    let mut inputs: Vec<LayerId> = (0..n_if as u8).map(LayerId::driver).collect();
    inputs.push(LayerId::FILTERD);
    let mut outputs = vec![(LayerId::FILTERD, Overflow::Keep)];
    outputs.extend((0..n_if as u8).map(|i| (LayerId::driver(i), Overflow::Keep)));
    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    let lp = Loop::new(&svc, &names, &[], &inputs, &outputs);
    let mut shell = Shell {
        svc: &svc,
        // Settings live in the fabric; generation 0 is "never set" (all
        // off), which is what a new qdisc starts with.
        settings: f.qdisc_settings(),
        seen: vec![[0u64; 2]; n_if],
        macs: svc.config.ifaces.iter().map(|i| i.mac).collect(),
        groups6: groups6(&svc.config),
        max_frame: max_frames(&svc.config),
        egress: (0..n_if).map(|i| Qdisc::new(limit, 2 * i as u64)).collect(),
        ingress: (0..n_if)
            .map(|i| Qdisc::new(limit, 2 * i as u64 + 1))
            .collect(),
        stats: Stats::default(),
        wake: None,
        held: false,
    };
    lp.run(&mut shell)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interface_takes_all_nodes_and_its_own_solicited_node_groups_only() {
        let mut cfg: StackConfig = serde_json::from_str(
            r#"{"instance":"t","ifaces":[{"index":0,"name":"tap0","driver":"tap",
                "mac":[2,83,84,0,0,1],"mtu":1500,"addrs":[],
                "addrs6":[["fd00:77::2",64]]}],"routes":[],"qdisc_limit":1000}"#,
        )
        .unwrap();
        let g = &groups6(&cfg)[0];
        // ff02::1, ff02::1:ff00:1 (the link-local's), ff02::1:ff00:2.
        assert!(g.contains(&[0x33, 0x33, 0, 0, 0, 1]));
        assert!(g.contains(&[0x33, 0x33, 0xff, 0, 0, 1]));
        assert!(g.contains(&[0x33, 0x33, 0xff, 0, 0, 2]));
        // Not MLDv2 routers' ff02::16, nor all-routers on a host.
        assert!(!g.contains(&[0x33, 0x33, 0, 0, 0, 0x16]));
        assert!(!g.contains(&[0x33, 0x33, 0, 0, 0, 2]));
        cfg.forwarding = true;
        assert!(groups6(&cfg)[0].contains(&[0x33, 0x33, 0, 0, 0, 2]));
    }
}
