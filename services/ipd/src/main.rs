//! ipd's process shell: maps the fabric, feeds frames and datagrams to the
//! pure IPv4 core (the library of this crate), and moves what it emits.
//! The neighbour cache is copied into ipd's arena whenever it changes, so
//! a restarted ipd resolves nothing anew.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use strata_ipc::arena::Records;
use strata_ipc::handle::flags::ICMP_PORT_UNREACH;
use strata_ipc::runtime::StackConfig;
use strata_ipc::serve::{Cx, Layer, Loop, Overflow};
use strata_ipc::{now_ns, service, Buffers, Handle, LayerId, Service, BUDGET};
use strata_ipd::{
    neigh_state, upper_protocol, IfaceConfig, IpConfig, IpCore, IpLimits, NeighRecord, Outputs,
    Stat,
};
use strata_proto::ipv4::protocol;
use strata_proto::MacAddr;

/// Frames waiting for room in the ring to filterd. Past this many, ipd
/// takes no input until filterd catches up.
const TXQ_HIGH: usize = 1024;

/// ipd's configuration from the stack's (`large_bufs`: the pool's large
/// buffers, which bound reassembly).
fn config(stack: &StackConfig, large_bufs: u32) -> IpConfig {
    IpConfig {
        ifaces: stack
            .ifaces
            .iter()
            .map(|i| IfaceConfig {
                index: i.index,
                mac: MacAddr(i.mac),
                addrs: i.addrs.clone(),
                mtu: i.mtu,
                addrs6: i.addrs6.clone(),
                autoconf: i.autoconf,
            })
            .collect(),
        routes: stack.routes.clone(),
        routes6: stack.routes6.clone(),
        neighbours: stack.neighbours.clone(),
        limits: IpLimits {
            forwarding: stack.forwarding,
            // Each reassembly pins a large buffer until it completes or
            // times out: at most a quarter of them, so that fragments
            // from spoofed sources never take the class.
            max_reassemblies: (large_bufs as usize / 4)
                .clamp(1, IpLimits::default().max_reassemblies),
            ..Default::default()
        },
    }
}

// Inputs and outputs of the loop, in the order given to it.
const FROM_FILTER: usize = 0;
const FROM_TCP: usize = 1;
const FROM_UDP: usize = 2;
const TO_FILTER: usize = 0;
const TO_TCP: usize = 1;
const TO_UDP: usize = 2;

/// ipd's side of the service loop.
struct Shell<'a> {
    core: IpCore,
    out: Outputs,
    arena: Records<'a, [u8; 32]>,
}

impl Shell<'_> {
    /// Hands what the core emitted to the loop: frames to filterd wait
    /// for room (ipd takes no input while many do), datagrams for a
    /// transport whose ring is full are dropped and counted.
    fn hand_over(&mut self, cx: &mut Cx) {
        cx.send_all(TO_FILTER, self.out.tx.drain(..));
        for h in self.out.up.drain(..) {
            let to = match upper_protocol(&cx.pool, &h) {
                protocol::TCP => TO_TCP,
                _ => TO_UDP,
            };
            cx.send(to, h);
        }
    }

    /// Copies the neighbour cache into the arena if it changed.
    fn save(&mut self) {
        if self.core.neighbours_changed() {
            self.arena.store(self.core.records().map(|r| r.to_bytes()));
        }
    }
}

impl Layer for Shell<'_> {
    /// `strata neigh flush`, if asked since the last one.
    fn begin(&mut self, cx: &mut Cx) -> usize {
        let f = cx.pool.fabric();
        let me = cx.pool.me();
        let asked = f.launch(me).flush_req.load(Acquire);
        if asked == f.ctl(me).flush_done.load(Relaxed) {
            return 0;
        }
        // One address (`strata neigh del`), or 0 for all.
        let only = f.launch(me).flush_what.load(Relaxed) as u32;
        self.core
            .flush_neighbours(&mut cx.pool, (only != 0).then_some(only));
        self.save();
        f.ctl(me).flush_done.store(asked, Release);
        1
    }

    fn admit(&self, _input: usize, cx: &Cx) -> usize {
        if cx.queued(TO_FILTER) < TXQ_HIGH {
            BUDGET
        } else {
            0
        }
    }

    fn input(&mut self, input: usize, h: Handle, cx: &mut Cx) {
        let now = cx.now;
        match input {
            FROM_FILTER => self.core.input(now, &mut cx.pool, h, &mut self.out),
            FROM_UDP if h.flags & ICMP_PORT_UNREACH != 0 => {
                // A datagram udpd found no socket for: answer it with
                // port unreachable, never send it.
                self.core
                    .port_unreachable(now, &mut cx.pool, &h, &mut self.out);
                cx.pool.free(&h);
            }
            FROM_TCP | FROM_UDP => self.core.output(now, &mut cx.pool, h, &mut self.out),
            _ => unreachable!("ipd has three inputs"),
        }
        self.hand_over(cx);
    }

    fn deadline(&self) -> Option<u64> {
        self.core.next_deadline()
    }

    fn poll(&mut self, cx: &mut Cx) {
        self.core.poll(cx.now, &mut cx.pool, &mut self.out);
        self.hand_over(cx);
    }

    fn end(&mut self, _cx: &mut Cx) -> usize {
        for (iface, addr) in self.core.take_duplicates() {
            eprintln!(
                "ipd: {addr} on interface {iface} is already used by another node on the link \
                 (duplicate address detection, RFC 4862): not using it"
            );
        }
        self.save();
        0
    }

    fn refused(&mut self, _output: usize, h: Handle, cx: &mut Cx) {
        self.core.upper_ring_full(&mut cx.pool, &h);
    }

    fn reconfigure(&mut self, cfg: &StackConfig, cx: &mut Cx) {
        let large = cx.pool.fabric().params().large_bufs;
        let r = self
            .core
            .reconfigure(cx.now, &mut cx.pool, &config(cfg, large), &mut self.out);
        if let Err(e) = r {
            eprintln!("ipd: new configuration not taken: {e}");
        }
        self.hand_over(cx);
        self.save();
    }

    /// Packets waiting for a neighbour's address: an upgrade waits for
    /// their resolution (or the grace's end).
    fn holds(&self) -> usize {
        self.core.waiting_for_neighbours()
    }

    fn counters(&self) -> &[u64] {
        self.core.stats().as_array()
    }
}

fn main() {
    let svc =
        Service::start("ipd", strata_ipd::ARENA_FORMAT).unwrap_or_else(|e| service::die("ipd", &e));
    let f = &svc.fabric;
    let mut core = IpCore::new(config(&svc.config, f.params().large_bufs))
        .unwrap_or_else(|e| service::die("ipd", &format!("configuration: {e}")));
    if svc.config.forwarding {
        svc.log("forwarding IPv4 between interfaces");
    }
    let arena = f.records::<[u8; 32]>(svc.me, strata_ipd::ARENA_FORMAT.writes);
    // What the previous instance left, in the format it wrote (Service
    // has checked that this binary reads it).
    let stored = arena.stored_format();
    let saved: Vec<NeighRecord> = f
        .records::<[u8; 32]>(svc.me, stored)
        .load()
        .iter()
        .map(|b| NeighRecord::from_bytes(b, stored))
        .collect();
    let now = now_ns();
    core.restore_neighbours(now, &saved);
    if !saved.is_empty() {
        let n = saved
            .iter()
            .filter(|r| r.state < neigh_state::ADDR_TENTATIVE)
            .count();
        svc.log(&format!("restored {n} neighbours"));
    }
    // Both transports are attached; a protocol without one gets protocol
    // unreachable.
    core.set_upper(protocol::TCP, true);
    core.set_upper(protocol::UDP, true);

    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    let mut lp = Loop::new(
        &svc,
        &names,
        &[],
        &[LayerId::FILTERD, LayerId::TCPD, LayerId::UDPD],
        &[
            (LayerId::FILTERD, Overflow::Keep),
            (LayerId::TCPD, Overflow::Refuse),
            (LayerId::UDPD, Overflow::Refuse),
        ],
    );
    let mut shell = Shell {
        core,
        out: Outputs::with_capacity(4096),
        arena,
    };
    let cx = lp.cx();
    shell.core.start(now, &mut cx.pool, &mut shell.out);
    shell.hand_over(cx);
    lp.run(&mut shell)
}
