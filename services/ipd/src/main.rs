//! ipd's process shell: maps the fabric, feeds frames and datagrams to the
//! pure IPv4 core (the library of this crate), and moves what it emits.
//! The neighbour cache is copied into ipd's arena whenever it changes, so
//! a restarted ipd resolves nothing anew.

use std::collections::VecDeque;
use strata_ipc::arena::Pod;
use strata_ipc::handle::flags::ICMP_PORT_UNREACH;
use strata_ipc::{now_ns, service, Handle, LayerId, Service, BUDGET};
use strata_ipd::{
    upper_protocol, IfaceConfig, IpConfig, IpCore, IpLimits, NeighRecord, Outputs, Stat,
};
use strata_proto::icmp::{icmp_type, unreach_code};
use strata_proto::ipv4::protocol;
use strata_proto::MacAddr;

/// The arena's record type: a neighbour as the core exports it.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct Rec(NeighRecord);
// SAFETY: NeighRecord is repr(C), integers and byte arrays only, and any
// bit pattern is a value the core's restore validates.
unsafe impl Pod for Rec {}

/// Frames waiting for room in the ring to filterd. Past this many, ipd
/// stops taking input until filterd catches up.
const TXQ_HIGH: usize = 1024;

fn config(svc: &Service) -> IpConfig {
    IpConfig {
        ifaces: svc
            .config
            .ifaces
            .iter()
            .map(|i| IfaceConfig {
                index: i.index,
                mac: MacAddr(i.mac),
                addrs: i.addrs.clone(),
                mtu: i.mtu,
            })
            .collect(),
        routes: svc.config.routes.clone(),
        limits: IpLimits {
            forwarding: svc.config.forwarding,
            // Each reassembly pins a large buffer until it completes or
            // times out: at most a quarter of them, so that fragments
            // from spoofed sources never take the class.
            max_reassemblies: (svc.fabric.params().large_bufs as usize / 4)
                .clamp(1, IpLimits::default().max_reassemblies),
            ..Default::default()
        },
    }
}

fn main() {
    let svc = Service::start("ipd").unwrap_or_else(|e| service::die("ipd", &e));
    let f = &svc.fabric;
    let me = svc.me;
    let mut core = IpCore::new(config(&svc))
        .unwrap_or_else(|e| service::die("ipd", &format!("configuration: {e}")));
    if svc.config.forwarding {
        svc.log("forwarding IPv4 between interfaces");
    }
    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    f.register_counters(me, &names);
    // Counters live in the fabric and keep counting across restarts; the
    // core starts from zero, so publish base + core.
    let base: Vec<u64> = (0..names.len()).map(|i| f.counter(me, i)).collect();

    let arena = f.records::<Rec>(me);
    let saved: Vec<NeighRecord> = arena.load().into_iter().map(|r| r.0).collect();
    let now = now_ns();
    core.restore_neighbours(now, &saved);
    if !saved.is_empty() {
        svc.log(&format!("restored {} neighbours", saved.len()));
    }
    // Both transports are attached; a protocol without one gets protocol
    // unreachable.
    core.set_upper(protocol::TCP, true);
    core.set_upper(protocol::UDP, true);

    let mut from_filter = f.consumer(LayerId::FILTERD, me).expect("ring filterd->ipd");
    let mut to_filter = f.producer(me, LayerId::FILTERD).expect("ring ipd->filterd");
    let mut to_tcp = f.producer(me, LayerId::TCPD).expect("ring ipd->tcpd");
    let mut to_udp = f.producer(me, LayerId::UDPD).expect("ring ipd->udpd");
    let mut from_tcp = f.consumer(LayerId::TCPD, me).expect("ring tcpd->ipd");
    let mut from_udp = f.consumer(LayerId::UDPD, me).expect("ring udpd->ipd");
    let mut pool = f.pool(me);
    let mut out = Outputs::with_capacity(4096);
    let mut txq: VecDeque<Handle> = VecDeque::with_capacity(4096);
    let mut batch = [Handle::default(); BUDGET];
    let mut arena_buf: Vec<Rec> = Vec::with_capacity(arena.capacity());

    core.start(now, &mut pool, &mut out);
    svc.ready();
    loop {
        f.beat(me);
        let now = now_ns();
        let mut work = 0;

        if txq.len() < TXQ_HIGH {
            let n = from_filter.pop(&mut batch);
            for h in &batch[..n] {
                if !f.take_input(me, h) {
                    continue;
                }
                core.input(now, &mut pool, *h, &mut out);
            }
            work += n;
            for (ring, udp) in [(&mut from_tcp, false), (&mut from_udp, true)] {
                let n = ring.pop(&mut batch);
                for h in &batch[..n] {
                    if !f.take_input(me, h) {
                        continue;
                    }
                    if udp && h.flags & ICMP_PORT_UNREACH != 0 {
                        // A datagram udpd found no socket for: answer it
                        // with port unreachable, never send it.
                        core.send_icmp_error(
                            now,
                            &mut pool,
                            h,
                            icmp_type::DEST_UNREACHABLE,
                            unreach_code::PORT,
                            &mut out,
                        );
                        f.free(h);
                    } else {
                        core.output(now, &mut pool, *h, &mut out);
                    }
                }
                work += n;
            }
        }
        if core.next_deadline().is_some_and(|d| d <= now) {
            core.poll(now, &mut pool, &mut out);
        }

        txq.extend(out.tx.drain(..));
        for h in out.up.drain(..) {
            let ring = match upper_protocol(&pool, &h) {
                protocol::TCP => &mut to_tcp,
                _ => &mut to_udp,
            };
            if ring.push(&[h]) == 0 {
                f.free(&h);
            }
        }
        while !txq.is_empty() {
            let (a, _) = txq.as_slices();
            let k = to_filter.push(&a[..a.len().min(BUDGET)]);
            if k == 0 {
                break;
            }
            txq.drain(..k);
            work += k;
        }

        if work > 0 {
            for (i, v) in core.stats().as_array().iter().enumerate() {
                f.set_counter(me, i, base[i] + v);
            }
        }
        if core.neighbours_changed() {
            arena_buf.clear();
            arena_buf.extend(core.neighbours().map(Rec));
            arena.store(&arena_buf);
        }

        if work == 0 {
            let mut tick = service::IDLE_TICK_MS;
            if let Some(d) = core.next_deadline() {
                let ms = d.saturating_sub(now).div_ceil(1_000_000);
                tick = tick.min(ms as i32).max(1);
            }
            if !txq.is_empty() {
                tick = 1;
            }
            f.sleep(me, &mut [], tick, || {
                from_filter.is_empty() && from_tcp.is_empty() && from_udp.is_empty()
            });
        }
    }
}
