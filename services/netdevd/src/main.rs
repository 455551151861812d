//! netdevd: the L2 layer. Receives frames from every driverd, keeps those
//! addressed to us (our MAC, broadcast, multicast), counts per interface,
//! and passes them up; queues outgoing frames in a per-interface qdisc and
//! feeds them to each driverd as its ring has room.

mod qdisc;

use qdisc::Pfifo;
use strata_ipc::{ifc, service, Buffers, Handle, LayerId, Service, BUDGET};

const ETH_HLEN: u32 = 14;

// Layer counters (per-interface ones live in the interface blocks).
const C_UP: usize = 0;
const C_DOWN: usize = 1;
const C_BAD_OIF: usize = 2;
const C_STALE: usize = 3;

fn main() {
    let svc = Service::start("netdevd").unwrap_or_else(|e| service::die("netdevd", &e));
    let f = &svc.fabric;
    let me = svc.me;
    f.register_counters(
        me,
        &["up_packets", "down_packets", "drop_bad_oif", "drop_stale"],
    );
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
    let mut qdiscs: Vec<Pfifo> = (0..n_if)
        .map(|_| Pfifo::new(svc.config.qdisc_limit as usize))
        .collect();
    let mut pool = f.pool(me);
    let mut batch = [Handle::default(); BUDGET];
    let mut pass = [Handle::default(); BUDGET];
    svc.ready();
    loop {
        f.beat(me);
        let mut moved = 0;

        // Ingress: every interface gets a budget in turn.
        for (i, ring) in rx.iter_mut().enumerate() {
            let room = (up.space() as usize).min(BUDGET);
            let n = ring.pop(&mut batch[..room]);
            moved += n;
            let mut k = 0;
            for h in &mut batch[..n] {
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
                pass[k] = *h;
                k += 1;
            }
            if k > 0 {
                up.push(&pass[..k]);
                f.count(me, C_UP, k as u64);
            }
        }

        // Egress: into the qdiscs...
        let n = down.pop(&mut batch);
        moved += n;
        for h in &batch[..n] {
            let Some(q) = qdiscs.get_mut(h.oif as usize) else {
                f.count(me, C_BAD_OIF, 1);
                pool.free(h);
                continue;
            };
            if let Err(h) = q.enqueue(*h) {
                f.iface_add(h.oif, ifc::TX_DROP_QDISC, 1);
                pool.free(&h);
            }
        }
        f.count(me, C_DOWN, n as u64);
        // ...and out of them as each driver's ring has room.
        for (i, q) in qdiscs.iter_mut().enumerate() {
            let room = (tx[i].space() as usize).min(BUDGET);
            let mut k = 0;
            while k < room {
                let Some(h) = q.dequeue() else { break };
                f.iface_add(i as u8, ifc::TX_BYTES, h.data_len as u64);
                pass[k] = h;
                k += 1;
            }
            if k > 0 {
                tx[i].push(&pass[..k]);
                f.iface_add(i as u8, ifc::TX_PACKETS, k as u64);
                moved += k;
            }
            f.iface(i as u8).counters[ifc::QDISC_BACKLOG]
                .store(q.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }

        if moved == 0 {
            let backlog = qdiscs.iter().any(|q| !q.is_empty());
            let tick = if backlog { 1 } else { service::IDLE_TICK_MS };
            f.sleep(me, &mut [], tick, || {
                down.is_empty() && rx.iter().all(|r| r.is_empty())
            });
        }
    }
}
