//! filterd: the netfilter layer. For now it sits in its place in the graph
//! and passes packets through unchanged, counting them (rules, conntrack
//! and NAT come with their own issue).

use strata_ipc::{service, Handle, LayerId, Service, BUDGET};

const IN_UP: usize = 0;
const IN_DOWN: usize = 1;

fn main() {
    let svc = Service::start("filterd").unwrap_or_else(|e| service::die("filterd", &e));
    let f = &svc.fabric;
    let me = svc.me;
    f.register_counters(me, &["ingress_packets", "egress_packets"]);
    let mut from_dev = f
        .consumer(LayerId::NETDEVD, me)
        .expect("ring netdevd->filterd");
    let mut to_ip = f.producer(me, LayerId::IPD).expect("ring filterd->ipd");
    let mut from_ip = f.consumer(LayerId::IPD, me).expect("ring ipd->filterd");
    let mut to_dev = f
        .producer(me, LayerId::NETDEVD)
        .expect("ring filterd->netdevd");
    let mut batch = [Handle::default(); BUDGET];
    svc.ready();
    loop {
        f.beat(me);
        // Take only what the next ring can hold: back-pressure instead of
        // drops inside the stack.
        let room = (to_ip.space() as usize).min(BUDGET);
        let n = from_dev.pop(&mut batch[..room]);
        if n > 0 {
            let pushed = to_ip.push(&batch[..n]);
            debug_assert_eq!(pushed, n);
            f.count(me, IN_UP, n as u64);
        }
        let room = (to_dev.space() as usize).min(BUDGET);
        let m = from_ip.pop(&mut batch[..room]);
        if m > 0 {
            to_dev.push(&batch[..m]);
            f.count(me, IN_DOWN, m as u64);
        }
        if n == 0 && m == 0 {
            // Consumers do not kick producers when they free slots, so a
            // layer held up by a full ring naps briefly instead.
            let blocked = (!from_dev.is_empty() && to_ip.space() == 0)
                || (!from_ip.is_empty() && to_dev.space() == 0);
            let tick = if blocked { 1 } else { service::IDLE_TICK_MS };
            f.sleep(me, &mut [], tick, || {
                from_dev.is_empty() && from_ip.is_empty()
            });
        }
    }
}
