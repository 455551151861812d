//! udpd's process shell: maps the fabric, feeds datagrams from ipd and
//! requests and payloads from sockd to the pure UDP core (the library of
//! this crate), and moves what it emits. The binding table is copied into
//! udpd's arena whenever it changes, so a restarted udpd keeps every
//! binding.

use std::collections::VecDeque;
use strata_ipc::arena::Pod;
use strata_ipc::handle::flags::CTRL;
use strata_ipc::{now_ns, service, Handle, LayerId, Service, BUDGET};
use strata_udpd::{Binding, Outputs, Ring, Stat, UdpConfig, UdpCore};

/// The arena's record type: a binding as the core exports it.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct Rec(Binding);
// SAFETY: Binding is repr(C), made of u32 and u16 fields with no padding
// (4+4+4+2+2+4+4 bytes), and any bit pattern is a value the core's restore
// validates.
unsafe impl Pod for Rec {}

/// Control messages for sockd waiting for room in its ring. Replies are
/// never dropped: while any wait, udpd takes no new requests. Only ICMP
/// error notifications can add to a full backlog; past this many they are
/// dropped and counted.
const CTL_BACKLOG_MAX: usize = 4096;

fn main() {
    let svc = Service::start("udpd").unwrap_or_else(|e| service::die("udpd", &e));
    let f = &svc.fabric;
    let me = svc.me;
    let arena = f.records::<Rec>(me);
    let mut cfg = UdpConfig::from_stack(&svc.config);
    cfg.max_bindings = cfg.max_bindings.min(arena.capacity());
    cfg.seed = (now_ns() as u32) ^ std::process::id().rotate_left(16);
    let mut core =
        UdpCore::new(cfg).unwrap_or_else(|e| service::die("udpd", &format!("configuration: {e}")));
    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    f.register_counters(me, &names);
    // Counters live in the fabric and keep counting across restarts; the
    // core starts from zero, so publish base + core.
    let base: Vec<u64> = (0..names.len()).map(|i| f.counter(me, i)).collect();

    let saved: Vec<Binding> = arena.load().into_iter().map(|r| r.0).collect();
    let restored = core.restore(&saved);
    if !saved.is_empty() {
        svc.log(&format!("restored {restored} of {} bindings", saved.len()));
    }
    let mut arena_buf: Vec<Rec> = Vec::with_capacity(arena.capacity());
    if core.take_changed() {
        arena_buf.extend(core.bindings().map(Rec));
        arena.store(&arena_buf);
    }

    let mut from_ip = f.consumer(LayerId::IPD, me).expect("ring ipd->udpd");
    let mut to_ip = f.producer(me, LayerId::IPD).expect("ring udpd->ipd");
    let mut from_sock = f.consumer(LayerId::SOCKD, me).expect("ring sockd->udpd");
    let mut to_sock = f.producer(me, LayerId::SOCKD).expect("ring udpd->sockd");
    let mut pool = f.pool(me);
    let mut out = Outputs::with_capacity(4 * BUDGET);
    let mut backlog: VecDeque<Handle> = VecDeque::with_capacity(CTL_BACKLOG_MAX);
    let mut batch = [Handle::default(); BUDGET];

    svc.ready();
    loop {
        f.beat(me);
        let mut work = 0;

        // Replies that waited for room go first, in order.
        while let Some(&h) = backlog.front() {
            if to_sock.push(&[h]) == 0 {
                break;
            }
            backlog.pop_front();
            work += 1;
        }
        // From sockd: each handle yields at most one datagram for ipd and
        // one message for sockd, so take only what ipd's ring can hold
        // (back-pressure on senders), and nothing while replies wait.
        if backlog.is_empty() {
            let room = (to_ip.space() as usize).min(BUDGET);
            let n = from_sock.pop(&mut batch[..room]);
            for h in &batch[..n] {
                if !f.take_input(me, h) {
                    continue;
                }
                core.from_sock(&mut pool, *h, &mut out);
            }
            work += n;
        }
        // From ipd: always, so a slow sockd never holds up ipd; what does
        // not fit upwards is dropped and counted.
        let n = from_ip.pop(&mut batch);
        for h in &batch[..n] {
            if !f.take_input(me, h) {
                continue;
            }
            core.from_ip(&mut pool, *h, &mut out);
        }
        work += n;

        let k = to_ip.push(&out.to_ip);
        for h in &out.to_ip[k..] {
            core.ring_full(&mut pool, h, Ring::Ip);
        }
        let k = if backlog.is_empty() {
            to_sock.push(&out.to_sock)
        } else {
            0
        };
        for h in &out.to_sock[k..] {
            if h.flags & CTRL != 0 && backlog.len() < CTL_BACKLOG_MAX {
                backlog.push_back(*h);
            } else {
                core.ring_full(&mut pool, h, Ring::Sock);
            }
        }
        out.clear();

        if work > 0 {
            for (i, v) in core.stats().as_array().iter().enumerate() {
                f.set_counter(me, i, base[i] + v);
            }
        }
        if core.take_changed() {
            arena_buf.clear();
            arena_buf.extend(core.bindings().map(Rec));
            arena.store(&arena_buf);
        }

        if work == 0 {
            // Consumers do not kick producers when they free slots, so a
            // layer held up by a full ring naps briefly instead.
            let blocked = !backlog.is_empty() || (!from_sock.is_empty() && to_ip.space() == 0);
            let tick = if blocked { 1 } else { service::IDLE_TICK_MS };
            f.sleep(me, &mut [], tick, || {
                from_ip.is_empty() && (blocked || from_sock.is_empty())
            });
        }
    }
}
