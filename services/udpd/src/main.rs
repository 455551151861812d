//! udpd's process shell: maps the fabric, feeds datagrams from ipd and
//! requests and payloads from sockd to the pure UDP core (the library of
//! this crate), and moves what it emits. The binding table is copied into
//! udpd's arena whenever it changes, so a restarted udpd keeps every
//! binding.

mod arena;

use strata_ipc::handle::flags::CTRL;
use strata_ipc::runtime::StackConfig;
use strata_ipc::serve::{Cx, Layer, Loop, Overflow};
use strata_ipc::{now_ns, service, Handle, LayerId, Service, BUDGET};
use strata_udpd::{Outputs, Ring, Stat, UdpConfig, UdpCore};

/// Control messages for sockd waiting for room in its ring. Replies are
/// never dropped: while any wait, udpd takes no new requests. Only ICMP
/// error notifications can add to a full backlog; past this many they are
/// dropped and counted.
const CTL_BACKLOG_MAX: usize = 4096;

// Inputs and outputs of the loop, in the order given to it.
const FROM_SOCK: usize = 0;
const FROM_IP: usize = 1;
const TO_IP: usize = 0;
const TO_SOCK: usize = 1;

/// udpd's side of the service loop.
struct Shell<'a> {
    core: UdpCore,
    out: Outputs,
    arena: arena::Table<'a>,
    /// The arena must be written although the bindings did not change
    /// (it holds another format).
    dirty: bool,
    /// Some interface makes addresses from router advertisements.
    autoconf: bool,
    /// When ipd's autoconfigured addresses were last read.
    autoconf_at: u64,
}

impl Shell<'_> {
    /// Hands what the core emitted to the loop. Control messages for
    /// sockd wait for room (up to [`CTL_BACKLOG_MAX`]); datagrams that do
    /// not fit are dropped and counted, so a slow sockd never holds up
    /// ipd.
    fn hand_over(&mut self, cx: &mut Cx) {
        cx.send_all(TO_IP, self.out.to_ip.drain(..));
        for h in self.out.to_sock.drain(..) {
            let fits = if h.flags & CTRL != 0 {
                cx.queued(TO_SOCK) < CTL_BACKLOG_MAX
            } else {
                cx.room(TO_SOCK) > 0
            };
            if fits {
                cx.send(TO_SOCK, h);
            } else {
                self.core.ring_full(&mut cx.pool, &h, Ring::Sock);
            }
        }
    }

    /// Copies the binding table into the arena if it changed.
    fn save(&mut self) {
        if self.core.take_changed() || std::mem::take(&mut self.dirty) {
            self.arena.store(self.core.bindings());
        }
    }
}

/// How often, at most, udpd reads ipd's autoconfigured addresses.
const AUTOCONF_EVERY_NS: u64 = 1_000_000_000;

impl Layer for Shell<'_> {
    /// The addresses ipd made from advertised prefixes, read from its
    /// arena at most once a second while udpd runs anyway (never a
    /// wake-up of its own): a socket may be bound to one.
    fn begin(&mut self, cx: &mut Cx) -> usize {
        if self.autoconf && cx.now >= self.autoconf_at + AUTOCONF_EVERY_NS {
            self.autoconf_at = cx.now;
            let addrs = strata_ipd::autoconf_addresses(cx.pool.fabric());
            self.core
                .set_autoconf6(addrs.into_iter().map(|(_, a, _)| a));
        }
        0
    }

    fn admit(&self, input: usize, cx: &Cx) -> usize {
        match input {
            // Each request yields at most one datagram for ipd and one
            // message for sockd: take only what ipd's ring can hold
            // (back-pressure on senders), and nothing while replies wait.
            FROM_SOCK if cx.queued(TO_SOCK) > 0 => 0,
            FROM_SOCK => cx.room(TO_IP),
            // From ipd always.
            FROM_IP => BUDGET,
            _ => 0,
        }
    }

    fn input(&mut self, input: usize, h: Handle, cx: &mut Cx) {
        match input {
            FROM_SOCK => self.core.from_sock(&mut cx.pool, h, &mut self.out),
            FROM_IP => self.core.from_ip(&mut cx.pool, h, &mut self.out),
            _ => unreachable!("udpd has two inputs"),
        }
        self.hand_over(cx);
    }

    fn end(&mut self, _cx: &mut Cx) -> usize {
        self.save();
        0
    }

    fn refused(&mut self, _output: usize, h: Handle, cx: &mut Cx) {
        self.core.ring_full(&mut cx.pool, &h, Ring::Ip);
    }

    /// An ICMP or ICMPv6 error may have been turned into a notification
    /// for sockd in its own buffer before a death: not taken again.
    /// Segments and datagrams are only read, never changed, so they are.
    fn replayable(&self, h: &Handle) -> bool {
        h.l4proto != strata_proto::ipv4::protocol::ICMP
            && h.l4proto != strata_proto::ipv6::next_header::ICMPV6
    }

    fn reconfigure(&mut self, cfg: &StackConfig, _cx: &mut Cx) {
        if let Err(e) = self.core.set_addresses(&UdpConfig::from_stack(cfg)) {
            eprintln!("udpd: new addresses not taken: {e}");
        }
    }

    fn counters(&self) -> &[u64] {
        self.core.stats().as_array()
    }
}

fn main() {
    let svc = Service::start("udpd", arena::FORMAT).unwrap_or_else(|e| service::die("udpd", &e));
    let f = &svc.fabric;
    let arena = arena::Table::of(f);
    let mut cfg = UdpConfig::from_stack(&svc.config);
    cfg.max_bindings = cfg.max_bindings.min(arena.capacity());
    cfg.seed = (now_ns() as u32) ^ std::process::id().rotate_left(16);
    let mut core =
        UdpCore::new(cfg).unwrap_or_else(|e| service::die("udpd", &format!("configuration: {e}")));
    let saved = arena.load();
    let restored = core.restore(&saved.bindings);
    if saved.format != 0 {
        svc.log(&format!(
            "restored {restored} of {} bindings from arena format {}",
            saved.bindings.len(),
            saved.format,
        ));
    }
    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    let lp = Loop::new(
        &svc,
        &names,
        &[],
        &[LayerId::SOCKD, LayerId::IPD],
        &[
            (LayerId::IPD, Overflow::Refuse),
            (LayerId::SOCKD, Overflow::Keep),
        ],
    );
    let mut shell = Shell {
        core,
        out: Outputs::with_capacity(4 * BUDGET),
        arena,
        dirty: false,
        autoconf: svc.config.ifaces.iter().any(|i| i.autoconf),
        autoconf_at: 0,
    };
    // The table is written back (in this build's format, if it was in
    // another) at the end of the first turn, once this instance serves:
    // should it die before, the binary that ran before it can still read
    // the table it left (an upgrade that fails goes back to that binary).
    shell.dirty = saved.format != arena::FORMAT.writes;
    lp.run(&mut shell)
}
