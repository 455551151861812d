//! The service loop every layer runs (docs/ARCHITECTURE.md, "The service
//! loop"). A layer's shell implements [`Layer`]: it says what to do with
//! one input, what else it has to do in a turn, and when its core next
//! needs to run; the loop owns the rest:
//!
//! - popping each input ring in batches of at most [`BUDGET`], as far as
//!   the layer admits (its back-pressure);
//! - queueing what the layer sends per output, pushing each queue in one
//!   ring update at the end of the turn, and waking each consumer that
//!   got something once, after all of it is published (a consumer that
//!   sleeps is woken once however many producers publish to it: the
//!   first kick takes its sleeping flag down);
//! - what a full ring cannot take: kept in order for the next turn
//!   ([`Overflow::Keep`]) or handed back to the layer
//!   ([`Overflow::Refuse`]);
//! - the heartbeat, the core's timer, publishing the layer's counters
//!   (one [`crate::layer_stats!`] array per layer, continued across
//!   restarts) and its own economy counters ([`Economy`]) before every
//!   wait and every millisecond while busy;
//! - sleeping: on the layer's eventfd and the fds it names, until the
//!   core's deadline, for a millisecond while held up by a full ring, or
//!   for the idle tick.

use crate::bufs::Buffers;
use crate::capture::{Capturer, Carries};
use crate::fabric::{Consumer, Fabric, Pool, Producer, Slept};
use crate::handle::Handle;
use crate::layer::LayerId;
use crate::layout::aside;
use crate::runtime::StackConfig;
use crate::service::{now_ns, Service, BUDGET, IDLE_TICK_MS};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::{Relaxed, Release};

/// What happens to handles an output ring has no room for at the end of
/// a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// They wait, in order, for the next turn. For outputs whose volume
    /// the layer bounds itself (credit, or admitting no more input while
    /// [`Cx::queued`] is high).
    Keep,
    /// They go back to the layer ([`Layer::refused`]), which drops and
    /// counts them or sends them again later (TCP retransmits).
    Refuse,
}

/// How stale a busy layer's published counters may get, in ns.
const PUBLISH_BUSY_NS: u64 = 1_000_000;

/// Longest a layer asked to hand over waits for what it
/// [holds](Layer::holds) to leave, in ns; then it hands over anyway, and
/// the launcher's reclaim frees those handles, as after a death.
pub const HANDOVER_GRACE_NS: u64 = 1_000_000_000;

/// Most fds a layer waits on beside its eventfd.
pub const MAX_WAIT_FDS: usize = 8;

/// Most events one `epoll_wait` of [`Layer::epoll_fd`] returns.
pub const EPOLL_EVENTS: usize = 64;

/// A layer's side of the loop. Inputs and outputs are numbered in the
/// order given to [`Loop::new`].
pub trait Layer {
    /// Work besides the input rings, first in each turn: a device, client
    /// sessions, changed settings. Returns how much was done (0: none).
    fn begin(&mut self, _cx: &mut Cx) -> usize {
        0
    }

    /// Most handles to take from `input` in this turn (capped at
    /// [`BUDGET`]); 0 leaves the ring alone, and the loop naps briefly
    /// rather than sleeping while it holds anything.
    fn admit(&self, _input: usize, _cx: &Cx) -> usize {
        BUDGET
    }

    /// One handle from `input`, already taken in (quarantine checked).
    fn input(&mut self, input: usize, h: Handle, cx: &mut Cx);

    /// When the core next needs to run with no input (on the
    /// [`now_ns`] clock).
    fn deadline(&self) -> Option<u64> {
        None
    }

    /// The deadline has passed.
    fn poll(&mut self, _cx: &mut Cx) {}

    /// Last in each turn, before the outputs are pushed: hand over what
    /// was produced outside [`Layer::input`], save state. Returns how much
    /// was done.
    fn end(&mut self, _cx: &mut Cx) -> usize {
        0
    }

    /// A handle output `output` could not take ([`Overflow::Refuse`]).
    fn refused(&mut self, _output: usize, h: Handle, cx: &mut Cx) {
        cx.pool.free(&h);
    }

    /// Whether the layer must run again soon although no input is
    /// waiting (held up by something the loop cannot see): the loop then
    /// wakes within a millisecond.
    fn held(&self) -> bool {
        false
    }

    /// Whether the layer has nothing to do with what passes through it
    /// now (a filter with no rules): then it stands aside, and its two
    /// neighbours pass their traffic to each other directly until it
    /// says otherwise ([`Fabric::step_aside`]). Asked after every turn
    /// of a layer that may stand aside ([`LayerId::can_stand_aside`]).
    fn passive(&self) -> bool {
        false
    }

    /// Fds to wait on besides the eventfd, written into `fds`; returns
    /// how many.
    fn wait_fds(&self, _fds: &mut [libc::pollfd; MAX_WAIT_FDS]) -> usize {
        0
    }

    /// What the wait found on those fds (also after a timeout: `revents`
    /// are then 0).
    fn woke(&mut self, _fds: &[libc::pollfd]) {}

    /// An epoll set to sleep in instead of polling [`Layer::wait_fds`]:
    /// it must hold the layer's eventfd, edge-triggered (sockd, whose
    /// set holds every client's fd: one `epoll_wait` then sleeps and says
    /// what is ready).
    fn epoll_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// What that `epoll_wait` found (none after a timeout).
    fn woke_epoll(&mut self, _events: &[libc::epoll_event]) {}

    /// Whether a handle a dead instance had taken and not finished may be
    /// handed to this one again ([`crate::layer::Carries::replayed`]
    /// rings only): false for one the layer may have changed in place
    /// before it died, which is then dropped (counted as
    /// `loop_replay_dropped`).
    fn replayable(&self, _h: &Handle) -> bool {
        true
    }

    /// Whether each input's effect is made durable by [`Layer::input`]
    /// itself (tcpd journals every event in its arena): the loop then
    /// gives the input's slot back as soon as `input` returns, so that a
    /// restart replays only what was not finished. Otherwise slots go back
    /// at the end of the turn, once what the inputs produced is in the
    /// output rings.
    fn commits_each_input(&self) -> bool {
        false
    }

    /// The launcher published a new configuration (`strata addr`,
    /// `route`, `neigh add|del`, `link set mtu`): take what concerns the
    /// layer from it. Only addresses, routes, MTUs and permanent
    /// neighbours change at run time; the rest is as the layer started.
    /// Called at the start of a turn, before [`Layer::begin`].
    fn reconfigure(&mut self, _cfg: &StackConfig, _cx: &mut Cx) {}

    /// Handles the layer keeps in its own memory rather than in a ring or
    /// its arena (a qdisc's backlog, packets waiting for a neighbour):
    /// what its successor could not find. Asked to hand over, the loop
    /// waits (at most [`HANDOVER_GRACE_NS`]) until there are none.
    fn holds(&self) -> usize {
        0
    }

    /// The layer's counters, in the order of the names given to
    /// [`Loop::new`].
    fn counters(&self) -> &[u64];
}

/// What a turn gives the layer: the clock, the pool, the outputs.
pub struct Cx<'f> {
    /// The time at the start of the turn ([`now_ns`]).
    pub now: u64,
    /// The pool, as this layer.
    pub pool: Pool<'f>,
    outs: Vec<Out<'f>>,
    syscalls: u64,
    received: u64,
    /// The capture program in force, if a capture watches our outputs.
    capture: Capturer,
}

struct Out<'f> {
    ring: Producer<'f>,
    queue: VecDeque<Handle>,
    overflow: Overflow,
    /// What the ring holds, for a capture's filter.
    carries: Carries,
}

impl Cx<'_> {
    /// Sends `h` to output `o` (pushed at the end of the turn).
    #[inline]
    pub fn send(&mut self, o: usize, h: Handle) {
        self.outs[o].queue.push_back(h);
    }

    /// Sends every handle of `hs` to output `o`, in order.
    pub fn send_all(&mut self, o: usize, hs: impl IntoIterator<Item = Handle>) {
        self.outs[o].queue.extend(hs);
    }

    /// Handles waiting for output `o`.
    pub fn queued(&self, o: usize) -> usize {
        self.outs[o].queue.len()
    }

    /// Slots output `o`'s ring has free beyond what waits for it: what the
    /// layer can still send there this turn without overflowing.
    pub fn room(&self, o: usize) -> usize {
        let out = &self.outs[o];
        (out.ring.space() as usize).saturating_sub(out.queue.len())
    }

    /// Counts `n` system calls the layer made itself (device reads and
    /// writes, session messages), for the economy counters.
    #[inline]
    pub fn syscalls(&mut self, n: u64) {
        self.syscalls += n;
    }

    /// Counts `n` packets the layer took in from outside its rings (a
    /// device), as handles taken in.
    #[inline]
    pub fn received(&mut self, n: u64) {
        self.received += n;
    }

    /// Pushes what waits for each output with one ring update per output,
    /// then wakes that output's consumer (a kick costs nothing unless it
    /// sleeps). What stays is refused or kept. Returns how many handles
    /// went out and how many kicks were sent.
    fn flush(&mut self, layer: &mut impl Layer) -> (usize, u64) {
        let (mut moved, mut kicks) = (0, 0);
        let f = self.pool.fabric();
        // One load when nobody captures.
        let watched = f.capture_ctl().rings.load(Relaxed);
        for o in 0..self.outs.len() {
            let out = &mut self.outs[o];
            let mut budget = usize::MAX;
            let r = out.ring.index();
            if watched & (1u64 << (r & 63)) != 0 && out.carries != Carries::Messages {
                if let Some((program, snaplen)) = self.capture.refresh(f.capture_ctl()) {
                    // Exactly what is published below, copied before the
                    // consumer may touch it.
                    budget = out.queue.len().min(out.ring.space() as usize);
                    let ring = f.capture_ring(self.pool.me());
                    let now = now_ns();
                    for h in out.queue.iter().take(budget) {
                        if let Ok(frame) = self.pool.data(h) {
                            if program.matches(frame, out.carries) {
                                ring.put(now, r as u32, frame, snaplen);
                            }
                        }
                    }
                }
            }
            let mut pushed = 0;
            while !out.queue.is_empty() && pushed < budget {
                let (a, _) = out.queue.as_slices();
                let a = &a[..a.len().min(budget - pushed)];
                let k = out.ring.publish(a);
                if k == 0 {
                    break;
                }
                out.queue.drain(..k);
                pushed += k;
            }
            if pushed > 0 {
                moved += pushed;
                kicks += u64::from(out.ring.wake());
            }
            if out.overflow == Overflow::Refuse {
                while let Some(h) = self.outs[o].queue.pop_front() {
                    layer.refused(o, h, self);
                }
            }
        }
        (moved, kicks)
    }

    /// True when some output keeps handles its ring has no room for.
    fn blocked(&self) -> bool {
        self.outs.iter().any(|o| !o.queue.is_empty())
    }

    /// Handles kept for all outputs together.
    fn queued_total(&self) -> usize {
        self.outs.iter().map(|o| o.queue.len()).sum()
    }
}

/// How a layer spends its wake-ups, published after its own counters.
/// Packets per wake-up is `handles_in / wakeups`, system calls per packet
/// `syscalls / handles_in` (`strata stats` shows both).
#[derive(Clone, Copy, Debug, Default)]
pub struct Economy {
    /// Turns of the loop.
    pub turns: u64,
    /// Waits that ended (the layer slept and ran again).
    pub wakeups: u64,
    /// Waits the core's timer ended ([`Layer::deadline`]).
    pub timeouts: u64,
    /// Waits the idle tick ended: nothing to do for 100 ms.
    pub idle_ticks: u64,
    /// Waits of a millisecond, while held up by a full ring (or by what
    /// [`Layer::held`] says), that ended without any fd ready.
    pub naps: u64,
    /// Handles taken from input rings (and packets from a device).
    pub handles_in: u64,
    /// Handles pushed to output rings.
    pub handles_out: u64,
    /// Eventfd writes to wake a consumer.
    pub kicks_sent: u64,
    /// System calls: the loop's (poll, eventfd read and write) and those
    /// the layer counts ([`Cx::syscalls`]).
    pub syscalls: u64,
    /// Handles taken from the ring into a neighbour that stands aside
    /// (also counted in `handles_in`).
    pub through: u64,
    /// Times this layer stood aside ([`Layer::passive`]).
    pub asides: u64,
    /// Handles a dead instance had taken and not finished, taken again.
    pub replayed: u64,
    /// Of those, the ones the layer could not take again
    /// ([`Layer::replayable`]), dropped.
    pub replay_dropped: u64,
}

/// The economy counters' names, as `strata stats` shows them.
pub const ECONOMY_NAMES: [&str; 13] = [
    "loop_turns",
    "loop_wakeups",
    "loop_timeouts",
    "loop_idle_ticks",
    "loop_naps",
    "loop_handles_in",
    "loop_handles_out",
    "loop_kicks_sent",
    "loop_syscalls",
    "loop_through",
    "loop_asides",
    "loop_replayed",
    "loop_replay_dropped",
];

impl Economy {
    /// Reads the economy back from a layer's published counters (`None`
    /// if the layer does not run the loop).
    pub fn from_counters(counters: &[(String, u64)]) -> Option<Economy> {
        let get = |name: &str| counters.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        Some(Economy {
            turns: get(ECONOMY_NAMES[0])?,
            wakeups: get(ECONOMY_NAMES[1])?,
            timeouts: get(ECONOMY_NAMES[2])?,
            idle_ticks: get(ECONOMY_NAMES[3])?,
            naps: get(ECONOMY_NAMES[4])?,
            handles_in: get(ECONOMY_NAMES[5])?,
            handles_out: get(ECONOMY_NAMES[6])?,
            kicks_sent: get(ECONOMY_NAMES[7])?,
            syscalls: get(ECONOMY_NAMES[8])?,
            through: get(ECONOMY_NAMES[9])?,
            asides: get(ECONOMY_NAMES[10])?,
            replayed: get(ECONOMY_NAMES[11]).unwrap_or(0),
            replay_dropped: get(ECONOMY_NAMES[12]).unwrap_or(0),
        })
    }

    /// Handles taken in per wake-up (0 before the first).
    pub fn packets_per_wakeup(&self) -> f64 {
        ratio(self.handles_in, self.wakeups)
    }

    /// System calls per handle taken in (0 before the first).
    pub fn syscalls_per_packet(&self) -> f64 {
        ratio(self.syscalls, self.handles_in)
    }

    fn as_array(&self) -> [u64; 13] {
        [
            self.turns,
            self.wakeups,
            self.timeouts,
            self.idle_ticks,
            self.naps,
            self.handles_in,
            self.handles_out,
            self.kicks_sent,
            self.syscalls,
            self.through,
            self.asides,
            self.replayed,
            self.replay_dropped,
        ]
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// One input: the ring from a neighbour and, if that neighbour can stand
/// aside, the ring into it from its other side, which this layer takes
/// while it is aside (after the neighbour's own ring is empty, so that
/// order holds).
struct Input<'f> {
    ring: Consumer<'f>,
    through: Option<(LayerId, Consumer<'f>)>,
}

impl Input<'_> {
    /// Whether the input has nothing for this layer now.
    fn is_empty(&self, f: &Fabric) -> bool {
        self.ring.is_empty()
            && match &self.through {
                Some((via, r)) => f.aside(*via) != aside::ASIDE || r.is_empty(),
                None => true,
            }
    }
}

/// A layer's loop: its rings, outputs, counters and economy.
pub struct Loop<'f> {
    svc: &'f Service,
    inputs: Vec<Input<'f>>,
    cx: Cx<'f>,
    /// Counter values of earlier instances, so counting continues.
    base: Vec<u64>,
    /// Counters that are levels, not totals: published as they are.
    gauges: &'static [usize],
    n_layer: usize,
    econ: Economy,
    /// The generation of the configuration the layer runs with.
    config_gen: u64,
    /// When the launcher's request to hand over was seen (`strata
    /// upgrade`).
    handover_asked: Option<u64>,
}

impl<'f> Loop<'f> {
    /// A loop for `svc` reading `inputs` (from those layers, in the order
    /// served) and sending to `outputs` (each with its overflow rule).
    /// `names` are the layer's counters (`gauges`: the indexes of those
    /// that are levels); the loop's economy counters follow them.
    pub fn new(
        svc: &'f Service,
        names: &[&str],
        gauges: &'static [usize],
        inputs: &[LayerId],
        outputs: &[(LayerId, Overflow)],
    ) -> Loop<'f> {
        let f: &'f Fabric = &svc.fabric;
        let me = svc.me;
        let mut all: Vec<&str> = names.to_vec();
        all.extend(ECONOMY_NAMES);
        f.register_counters(me, &all);
        let base = (0..all.len()).map(|i| f.counter(me, i)).collect();
        let no_ring = |from: LayerId, to: LayerId| -> ! {
            crate::service::die(&me.label(), &format!("no ring {from}->{to} in the fabric"))
        };
        assert!(inputs.len() <= 32, "at most 32 inputs");
        let inputs = inputs
            .iter()
            .map(|&from| Input {
                ring: f.consumer(from, me).unwrap_or_else(|| no_ring(from, me)),
                through: from
                    .can_stand_aside()
                    .then(|| f.consumer_through(from, me).map(|c| (from, c)))
                    .flatten(),
            })
            .collect();
        let outs = outputs
            .iter()
            .map(|&(to, overflow)| Out {
                ring: f.producer(me, to).unwrap_or_else(|| no_ring(me, to)),
                queue: VecDeque::with_capacity(f.params().ring_size as usize),
                overflow,
                carries: Carries::ring(me, to),
            })
            .collect();
        Loop {
            svc,
            inputs,
            cx: Cx {
                now: now_ns(),
                pool: f.pool(me),
                outs,
                syscalls: 0,
                received: 0,
                capture: Capturer::default(),
            },
            base,
            gauges,
            n_layer: names.len(),
            econ: Economy::default(),
            config_gen: svc.config_gen,
            handover_asked: None,
        }
    }

    /// The turn context, for what a layer sends before the loop runs (a
    /// restored core's first segments).
    pub fn cx(&mut self) -> &mut Cx<'f> {
        &mut self.cx
    }

    /// Declares the layer serving ([`Service::ready`]) and runs it.
    pub fn run(mut self, layer: &mut impl Layer) -> ! {
        self.svc.ready();
        let mut batch = [Handle::default(); BUDGET];
        let mut published = 0;
        loop {
            let work = self.turn(layer, &mut batch);
            self.hand_over_if_asked(layer);
            // Before every wait, so what a layer counted is there once it
            // sleeps; while it keeps busy, now and then.
            if work == 0 || self.cx.now >= published + PUBLISH_BUSY_NS {
                self.publish(layer);
                published = self.cx.now;
            }
            if work == 0 {
                self.wait(layer);
            }
        }
    }

    /// One turn: the layer's own work, every input, the timer, the
    /// layer's end of turn, then the outputs. Returns how much was done
    /// (0: nothing, so the loop may sleep).
    fn turn(&mut self, layer: &mut impl Layer, batch: &mut [Handle; BUDGET]) -> usize {
        let f = &self.svc.fabric;
        let me = self.svc.me;
        f.beat(me);
        self.econ.turns += 1;
        self.cx.now = now_ns();
        let mut work = 0;
        if f.config().generation() != self.config_gen {
            work += self.reconfigure(layer);
        }
        work += layer.begin(&mut self.cx);
        // Aside, the rings into this layer are its neighbours' to take.
        let in_path = !me.can_stand_aside() || f.try_return(me);
        for i in 0..self.inputs.len() {
            // A neighbour coming back is let go of first, whatever this
            // layer admits: held up, it must not hold the neighbour up.
            let via = self.inputs[i].through.as_ref().map(|t| t.0);
            let via_state = via.map(|v| f.aside(v));
            if let (Some(v), Some(aside::RETURNING)) = (via, via_state) {
                f.ack_return(v, me);
            }
            let room = layer.admit(i, &self.cx).min(BUDGET);
            if room == 0 || !in_path {
                continue;
            }
            let input = &mut self.inputs[i];
            let before = input.ring.replayed();
            let mut n = input.ring.take(&mut batch[..room]);
            let from_ring = n;
            let replays = (input.ring.replayed() - before) as usize;
            if let Some((_, through)) = &mut input.through {
                if via_state == Some(aside::ASIDE) && input.ring.is_empty() && n < room {
                    let k = through.take(&mut batch[n..room]);
                    self.econ.through += k as u64;
                    n += k;
                }
            }
            self.econ.replayed += replays as u64;
            let each = layer.commits_each_input();
            for (j, h) in batch[..n].iter().enumerate() {
                if j < replays && !layer.replayable(h) {
                    self.econ.replay_dropped += 1;
                    self.cx.pool.free(h);
                } else if f.take_input(me, h) {
                    layer.input(i, *h, &mut self.cx);
                }
                if each {
                    match &mut input.through {
                        Some((_, t)) if j >= from_ring => t.release_through(j - from_ring),
                        _ => input.ring.release_through(j),
                    }
                }
            }
            work += n;
            self.econ.handles_in += n as u64;
        }
        // The timer's work needs no second turn: what it sent goes out
        // below.
        if layer.deadline().is_some_and(|d| d <= self.cx.now) {
            layer.poll(&mut self.cx);
        }
        work += layer.end(&mut self.cx);
        let (moved, kicks) = self.cx.flush(layer);
        // What the inputs produced is in the output rings (or held by the
        // layer): their slots go back.
        for input in &mut self.inputs {
            input.ring.release();
            if let Some((_, t)) = &mut input.through {
                t.release();
            }
        }
        self.econ.handles_out += moved as u64;
        self.econ.kicks_sent += kicks;
        self.econ.syscalls += kicks;
        self.stand_aside_or_return(layer);
        // Pushing is work worth another turn only while some output still
        // holds handles back: more may fit now that the consumer runs.
        if self.cx.blocked() {
            work += moved;
        }
        work
    }

    /// Between two turns, the event boundary: if the launcher asked this
    /// instance to make way for another binary, and nothing is left that
    /// its successor could not find (output queues pushed, nothing
    /// [held](Layer::holds)), publishes the counters and exits. What the
    /// input rings hold stays there for the successor, which restores
    /// from the arena as after a restart.
    fn hand_over_if_asked(&mut self, layer: &impl Layer) {
        let f = &self.svc.fabric;
        let me = self.svc.me;
        let asked = match self.handover_asked {
            Some(t) => t,
            None if f.launch(me).upgrade_req.load(Relaxed) != self.svc.upgrade_req => {
                self.handover_asked = Some(self.cx.now);
                self.cx.now
            }
            None => return,
        };
        let left = layer.holds() + self.cx.queued_total();
        let waited = self.cx.now.saturating_sub(asked);
        if left > 0 && waited < HANDOVER_GRACE_NS {
            return;
        }
        self.publish(layer);
        if left > 0 {
            self.svc.log(&format!(
                "hands over with {left} handles still held after {} ms: they are freed",
                waited / 1_000_000
            ));
        } else {
            self.svc.log(&format!(
                "hands over to its successor ({:.1} ms after the request)",
                waited as f64 / 1e6
            ));
        }
        std::process::exit(0)
    }

    /// Hands a newly published configuration to the layer and says it
    /// runs with it ([`LayerCtl::config_gen`], which the launcher waits
    /// for). Returns 1 when it did; 0 while the launcher is still
    /// writing (the next turn tries again; the launcher kicks meanwhile).
    fn reconfigure(&mut self, layer: &mut impl Layer) -> usize {
        let f = &self.svc.fabric;
        match f.config().read() {
            None => 0,
            Some(Ok((g, cfg))) => {
                layer.reconfigure(&cfg, &mut self.cx);
                self.config_gen = g;
                f.ctl(self.svc.me).config_gen.store(g, Release);
                1
            }
            Some(Err(e)) => {
                // Not acknowledged: the launcher reports that this layer
                // did not take it. Not retried until the next change.
                self.config_gen = f.config().generation();
                self.svc.log(&format!("new configuration refused: {e}"));
                0
            }
        }
    }

    /// After a turn: a passive layer that holds nothing for its
    /// neighbours stands aside; one that no longer is passive comes back
    /// (in the path again once both neighbours have let go of its rings).
    fn stand_aside_or_return(&mut self, layer: &impl Layer) {
        let f = &self.svc.fabric;
        let me = self.svc.me;
        if !me.can_stand_aside() {
            return;
        }
        let passive = layer.passive();
        match f.aside(me) {
            aside::IN if passive && !self.cx.blocked() && f.step_aside(me) => {
                self.econ.asides += 1;
                self.svc
                    .log("stands aside: its neighbours pass traffic directly");
            }
            aside::ASIDE if !passive => {
                f.begin_return(me);
                self.svc.log("returns to the path");
            }
            _ => {}
        }
    }

    /// Copies the layer's counters and the economy into the fabric.
    fn publish(&mut self, layer: &impl Layer) {
        let f = &self.svc.fabric;
        let me = self.svc.me;
        self.econ.syscalls += std::mem::take(&mut self.cx.syscalls);
        self.econ.handles_in += std::mem::take(&mut self.cx.received);
        let econ = self.econ.as_array();
        let values = layer.counters().iter().take(self.n_layer).chain(&econ);
        for (i, v) in values.enumerate() {
            let v = if self.gauges.contains(&i) {
                *v
            } else {
                self.base[i].wrapping_add(*v)
            };
            f.set_counter(me, i, v);
        }
    }

    /// Sleeps until there is work, the core's deadline, or the idle tick.
    fn wait(&mut self, layer: &mut impl Layer) {
        let cx = &self.cx;
        let f = &self.svc.fabric;
        // Aside (or on the way back), the input rings are not this
        // layer's to wait for: the kick that completes a return wakes it.
        let path = if self.svc.me.can_stand_aside() {
            f.aside(self.svc.me)
        } else {
            aside::IN
        };
        let in_path = path == aside::IN;
        // Bit i: input i is admitted (no allocation on this path).
        let admitted = (0..self.inputs.len())
            .filter(|&i| in_path && layer.admit(i, cx) > 0)
            .fold(0u32, |m, i| m | 1 << i);
        let admits = |i: usize| admitted & (1 << i) != 0;
        let held_back = in_path
            && self
                .inputs
                .iter()
                .enumerate()
                .any(|(i, r)| !admits(i) && !r.is_empty(f));
        let mut tick = IDLE_TICK_MS;
        if let Some(d) = layer.deadline() {
            let ms = d.saturating_sub(cx.now).div_ceil(1_000_000);
            tick = tick.min(ms as i32).max(1);
        }
        let idle_tick = tick == IDLE_TICK_MS;
        // Consumers do not wake producers when they free slots, so a
        // layer held up by a full ring naps instead. On the way back from
        // aside, the neighbours' acknowledgements are looked for every
        // millisecond.
        let returning = path == aside::RETURNING;
        let handing_over = self.handover_asked.is_some();
        let nap = held_back || cx.blocked() || layer.held() || returning || handing_over;
        if nap {
            tick = 1;
        }
        let inputs = &self.inputs;
        let nothing_waits = || {
            inputs
                .iter()
                .enumerate()
                .all(|(i, r)| !admits(i) || r.is_empty(f))
        };
        let me = self.svc.me;
        if let Some(epfd) = layer.epoll_fd() {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS];
            if let Some((slept, n)) = f.sleep_epoll(me, epfd, &mut events, tick, nothing_waits) {
                self.count_sleep(slept, n > 0, nap, idle_tick);
                layer.woke_epoll(&events[..n]);
            }
            return;
        }
        let mut fds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; MAX_WAIT_FDS];
        let n = layer.wait_fds(&mut fds);
        if let Some(slept) = f.sleep(me, &mut fds[..n], tick, nothing_waits) {
            let ready = fds[..n].iter().any(|p| p.revents != 0);
            self.count_sleep(slept, ready, nap, idle_tick);
        }
        layer.woke(&fds[..n]);
    }

    /// Counts a sleep that ended: a wake-up, and if neither a kick nor an
    /// fd ended it, what kind of timeout did.
    fn count_sleep(&mut self, slept: Slept, ready: bool, nap: bool, idle_tick: bool) {
        self.econ.wakeups += 1;
        self.econ.syscalls += u64::from(slept.syscalls);
        if !slept.kicked && !ready {
            if nap {
                self.econ.naps += 1;
            } else if idle_tick {
                self.econ.idle_ticks += 1;
            } else {
                self.econ.timeouts += 1;
            }
        }
    }
}
