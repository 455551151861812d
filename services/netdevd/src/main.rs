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

use qdisc::{Qdisc, Stats};
use strata_ipc::qdisc_cfg::Direction;
use strata_ipc::{ifc, now_ns, service, Buffers, Handle, LayerId, Service, BUDGET};

const ETH_HLEN: u32 = 14;

// Layer counters (per-interface ones live in the interface blocks).
const C_UP: usize = 0;
const C_DOWN: usize = 1;
const C_BAD_OIF: usize = 2;
const C_STALE: usize = 3;
/// First of the egress fault counters (see [`fault_counts`]).
const C_EGRESS_FAULTS: usize = 4;
/// First of the ingress fault counters.
const C_INGRESS_FAULTS: usize = C_EGRESS_FAULTS + FAULT_COUNTERS;
const C_INGRESS_DROP_QDISC: usize = C_INGRESS_FAULTS + FAULT_COUNTERS;
const C_QDISC_RELOADS: usize = C_INGRESS_DROP_QDISC + 1;

const FAULT_COUNTERS: usize = 7;

const COUNTER_NAMES: [&str; C_QDISC_RELOADS + 1] = [
    "up_packets",
    "down_packets",
    "drop_bad_oif",
    "drop_stale",
    "fault_loss",
    "fault_duplicate",
    "fault_dup_no_buffer",
    "fault_reorder",
    "fault_delayed",
    "delay_queue_full",
    "rate_limited_waits",
    "ingress_fault_loss",
    "ingress_fault_duplicate",
    "ingress_fault_dup_no_buffer",
    "ingress_fault_reorder",
    "ingress_fault_delayed",
    "ingress_delay_queue_full",
    "ingress_rate_limited_waits",
    "ingress_drop_qdisc",
    "qdisc_reloads",
];

/// The fault counts of one direction, in counter order.
fn fault_counts(s: &Stats) -> [u64; FAULT_COUNTERS] {
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

/// Milliseconds from `now` to `wake`, rounded up (poll's resolution is a
/// millisecond, and waking early would only mean sleeping again), at most
/// the idle tick.
fn ms_until(wake: u64, now: u64) -> i32 {
    wake.saturating_sub(now)
        .div_ceil(1_000_000)
        .min(service::IDLE_TICK_MS as u64) as i32
}

fn main() {
    let svc = Service::start("netdevd").unwrap_or_else(|e| service::die("netdevd", &e));
    let f = &svc.fabric;
    let me = svc.me;
    f.register_counters(me, &COUNTER_NAMES);
    let n_if = svc.config.ifaces.len();
    let macs: Vec<[u8; 6]> = svc.config.ifaces.iter().map(|i| i.mac).collect();
    let max_frame: Vec<u32> = svc
        .config
        .ifaces
        .iter()
        // Room for one VLAN tag, as Linux allows on a plain interface.
        .map(|i| i.mtu as u32 + ETH_HLEN + 4)
        .collect();
    let mut rx: Vec<_> = (0..n_if as u8)
        .map(|i| f.consumer(LayerId::driver(i), me).expect("driver ring"))
        .collect();
    let mut tx: Vec<_> = (0..n_if as u8)
        .map(|i| f.producer(me, LayerId::driver(i)).expect("driver ring"))
        .collect();
    let mut up = f
        .producer(me, LayerId::FILTERD)
        .expect("ring netdevd->filterd");
    let mut down = f
        .consumer(LayerId::FILTERD, me)
        .expect("ring filterd->netdevd");
    let limit = svc.config.qdisc_limit as usize;
    let mut egress: Vec<Qdisc> = (0..n_if).map(|i| Qdisc::new(limit, 2 * i as u64)).collect();
    let mut ingress: Vec<Qdisc> = (0..n_if)
        .map(|i| Qdisc::new(limit, 2 * i as u64 + 1))
        .collect();
    // Settings live in the fabric; generation 0 is "never set" (all off),
    // which is what a new qdisc starts with.
    let settings = f.qdisc_settings();
    let mut seen = vec![[0u64; 2]; n_if];
    let mut pool = f.pool(me);
    let mut batch = [Handle::default(); BUDGET];
    let mut pass = [Handle::default(); BUDGET];
    svc.ready();
    loop {
        f.beat(me);
        let mut moved = 0;

        // Settings changed by `strata qdisc` (or set before a restart).
        let mut now = 0;
        for (i, seen) in seen.iter_mut().enumerate() {
            for d in Direction::ALL {
                let g = settings.generation(i as u8, d);
                if g == seen[d.index()] {
                    continue;
                }
                // None: a change is being written; take it next turn.
                let Some((s, g)) = settings.load(i as u8, d) else {
                    continue;
                };
                now = now_ns();
                let q = match d {
                    Direction::Egress => &mut egress[i],
                    Direction::Ingress => &mut ingress[i],
                };
                q.configure(&s, now);
                seen[d.index()] = g;
                f.count(me, C_QDISC_RELOADS, 1);
                svc.log(&format!(
                    "qdisc {} {}: {}",
                    f.iface_name(i as u8),
                    d.name(),
                    s
                ));
            }
        }
        // The clock is read only when some qdisc does more than pfifo.
        let timed = egress.iter().chain(&ingress).any(|q| !q.is_plain());
        if timed {
            now = now_ns();
        }

        // Ingress: every interface gets a budget in turn.
        for (i, ring) in rx.iter_mut().enumerate() {
            let room = (up.space() as usize).min(BUDGET);
            let n = ring.pop(&mut batch[..room]);
            moved += n;
            let faults = !ingress[i].is_plain();
            let mut k = 0;
            for h in &mut batch[..n] {
                if !f.take_input(me, h) {
                    continue;
                }
                let iif = i as u8;
                let Ok(d) = pool.data(h) else {
                    f.count(me, C_STALE, 1);
                    continue;
                };
                f.iface_add(iif, ifc::RX_PACKETS, 1);
                f.iface_add(iif, ifc::RX_BYTES, d.len() as u64);
                if d.len() < ETH_HLEN as usize {
                    f.iface_add(iif, ifc::RX_DROP_RUNT, 1);
                    pool.free(h);
                    continue;
                }
                if d.len() as u32 > max_frame[i] {
                    f.iface_add(iif, ifc::RX_DROP_OVERSIZE, 1);
                    pool.free(h);
                    continue;
                }
                let dst = &d[..6];
                if dst[0] & 1 != 0 {
                    if dst == [0xff; 6] {
                        f.iface_add(iif, ifc::RX_BROADCAST, 1);
                    } else {
                        f.iface_add(iif, ifc::RX_MULTICAST, 1);
                    }
                } else if dst != macs[i] {
                    f.iface_add(iif, ifc::RX_DROP_NOT_FOR_US, 1);
                    pool.free(h);
                    continue;
                }
                h.ethertype = u16::from_be_bytes([d[12], d[13]]);
                h.iif = iif;
                h.l2_off = 0;
                h.l3_off = ETH_HLEN as u16;
                if faults {
                    ingress[i].enqueue(*h, now, &mut pool);
                } else {
                    pass[k] = *h;
                    k += 1;
                }
            }
            if k > 0 {
                up.push(&pass[..k]);
                f.count(me, C_UP, k as u64);
            }
        }
        // ...and out of the ingress fault stages, where set.
        for q in ingress.iter_mut().filter(|q| !q.is_plain()) {
            let room = (up.space() as usize).min(BUDGET);
            let mut k = 0;
            while k < room {
                let Some(h) = q.dequeue(now, &mut pool) else {
                    break;
                };
                pass[k] = h;
                k += 1;
            }
            if k > 0 {
                up.push(&pass[..k]);
                f.count(me, C_UP, k as u64);
                moved += k;
            }
            let st = q.take_stats();
            if st != Stats::default() {
                for (c, v) in fault_counts(&st).into_iter().enumerate() {
                    f.count(me, C_INGRESS_FAULTS + c, v);
                }
                f.count(me, C_INGRESS_DROP_QDISC, st.queue_full);
            }
        }

        // Egress: into the qdiscs...
        let n = down.pop(&mut batch);
        moved += n;
        for h in &batch[..n] {
            if !f.take_input(me, h) {
                continue;
            }
            let Some(q) = egress.get_mut(h.oif as usize) else {
                f.count(me, C_BAD_OIF, 1);
                pool.free(h);
                continue;
            };
            q.enqueue(*h, now, &mut pool);
        }
        f.count(me, C_DOWN, n as u64);
        // ...and out of them as each driver's ring has room.
        for (i, q) in egress.iter_mut().enumerate() {
            let room = (tx[i].space() as usize).min(BUDGET);
            let mut k = 0;
            while k < room {
                let Some(h) = q.dequeue(now, &mut pool) else {
                    break;
                };
                f.iface_add(i as u8, ifc::TX_BYTES, h.data_len as u64);
                pass[k] = h;
                k += 1;
            }
            if k > 0 {
                tx[i].push(&pass[..k]);
                f.iface_add(i as u8, ifc::TX_PACKETS, k as u64);
                moved += k;
            }
            let st = q.take_stats();
            if st != Stats::default() {
                for (c, v) in fault_counts(&st).into_iter().enumerate() {
                    f.count(me, C_EGRESS_FAULTS + c, v);
                }
                f.iface_add(i as u8, ifc::TX_DROP_QDISC, st.queue_full);
            }
            f.iface(i as u8).counters[ifc::QDISC_BACKLOG]
                .store(q.backlog() as u64, std::sync::atomic::Ordering::Relaxed);
        }

        if moved == 0 {
            // Sleep until kicked, but no longer than the earliest time a
            // qdisc releases something, and only a millisecond while a
            // full driver (or filterd) ring holds a backlog back.
            let mut tick = service::IDLE_TICK_MS;
            for (i, q) in egress.iter().enumerate() {
                if !q.is_empty() && tx[i].space() == 0 {
                    tick = tick.min(1);
                }
                if let Some(w) = q.next_wake(now) {
                    tick = tick.min(ms_until(w, now));
                }
            }
            for q in &ingress {
                if !q.is_empty() && up.space() == 0 {
                    tick = tick.min(1);
                }
                if let Some(w) = q.next_wake(now) {
                    tick = tick.min(ms_until(w, now));
                }
            }
            f.sleep(me, &mut [], tick, || {
                down.is_empty() && rx.iter().all(|r| r.is_empty())
            });
        }
    }
}
