//! tcpd's process shell: maps the fabric, lays the pure TCP core's
//! connection blocks and queue entries in tcpd's arena (so a restarted
//! tcpd takes them back), and moves segments between ipd, the core and
//! sockd.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::collections::HashMap;
use std::sync::atomic::Ordering::Release;
use strata_ipc::runtime::StackConfig;
use strata_ipc::serve::{Cx, Layer, Loop, Overflow};
use strata_ipc::service::ArenaFormat;
use strata_ipc::{now_ns, service, Handle, LayerId, Service, BUDGET};
use strata_tcpd::block::{Fresh, STORAGE_VERSION};
use strata_tcpd::{Outputs, Stat, Storage, TcpConfig, TcpCore};

fn random_secret() -> [u64; 2] {
    let mut b = [0u8; 16];
    // getrandom(2) never blocks once the pool is initialised; fall back to
    // the clock only if it fails.
    // SAFETY: `b` is 16 writable bytes, and getrandom(2) writes at most
    // the 16 it is asked for.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast::<libc::c_void>(), b.len(), 0) };
    if n != 16 {
        let t = now_ns() ^ ((std::process::id() as u64) << 32);
        return [
            t.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
            t.wrapping_mul(0xbf58_476d_1ce4_e5b9),
        ];
    }
    [
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u64::from_le_bytes(b[8..].try_into().unwrap()),
    ]
}

fn main() {
    // The arena's format is that of its connection storage: a tcpd of
    // another storage version would find no connection there (version 8
    // made addresses 16 bytes; a running tcpd of version 7 is not
    // upgraded live to this one, `strata upgrade` refuses it).
    let format = ArenaFormat {
        writes: STORAGE_VERSION,
        reads_from: STORAGE_VERSION,
    };
    let svc = Service::start("tcpd", format).unwrap_or_else(|e| service::die("tcpd", &e));
    let f = &svc.fabric;
    let me = svc.me;

    let (p, len) = f.arena_bytes(me);
    let n_conns = svc.config.tcp_connections as usize;
    // SAFETY: `p..p+len` is tcpd's own arena in the fabric, which `svc`
    // keeps mapped and writable for as long as `main` runs (it never
    // returns). Nothing else in this process touches it, and no other
    // process writes it: the launcher starts the next tcpd only once this
    // one is dead, and only copies blocks out of it for `strata ss` (see
    // `strata_tcpd::snapshot`).
    let Some((hdr, storage, fresh)) = (unsafe { Storage::from_raw(p, len, n_conns) }) else {
        service::die(
            "tcpd",
            &format!("arena of {len} bytes cannot hold {n_conns} connections"),
        );
    };
    let mut cfg = TcpConfig::from_stack(&svc.config);
    cfg.max_conns = n_conns;
    cfg.seed = (now_ns() as u32) ^ std::process::id();
    let params = f.params();
    // A quarter of the small buffers' count, whatever class holds each
    // segment: large ones are kept from running short by `pool_short`.
    cfg.max_ooo_segs = u64::from(params.small_bufs) / 4;
    let mut pool = f.pool(me);
    let mut out = Outputs::with_capacity(8 * BUDGET);
    let now = now_ns();
    let core = if fresh != Fresh::No || hdr.secret == [0, 0] {
        hdr.secret = random_secret();
        cfg.secret = hdr.secret;
        // A new arena is all zero: its blocks need no clearing, and are
        // touched only as connections use them.
        if fresh == Fresh::Zeroed {
            TcpCore::new_on_zeroed(cfg, storage)
        } else {
            TcpCore::new(cfg, storage)
        }
        .unwrap_or_else(|e| service::die("tcpd", &format!("configuration: {e}")))
    } else {
        cfg.secret = hdr.secret;
        let began = std::time::Instant::now();
        let (core, n) = TcpCore::restore(cfg, storage, now, &mut pool, &mut out)
            .unwrap_or_else(|e| service::die("tcpd", &format!("restore: {e}")));
        svc.log(&format!(
            "restored {n} connections in {} ms",
            began.elapsed().as_millis()
        ));
        core
    };
    // What the dead instance held beyond its arena (segments on their
    // way out, copies for sockd, a half-done event's buffers) is ours to
    // drop: the launcher leaves tcpd's references alone.
    f.ctl(me).self_reclaim.store(1, Release);
    let mut keep: HashMap<(u32, u32), u32> = HashMap::new();
    for h in core
        .held_buffers()
        .chain(out.to_ip.iter())
        .chain(out.to_sock.iter())
    {
        *keep.entry((h.buf, h.gen)).or_insert(0) += 1;
    }
    let dropped = f.reconcile(me, |buf, gen| keep.get(&(buf, gen)).copied().unwrap_or(0));
    if dropped > 0 {
        svc.log(&format!(
            "released {dropped} buffer references of the previous instance"
        ));
    }
    drop(keep);

    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    let mut lp = Loop::new(
        &svc,
        &names,
        &[],
        &[LayerId::IPD, LayerId::SOCKD],
        &[
            (LayerId::IPD, Overflow::Refuse),
            (LayerId::SOCKD, Overflow::Keep),
        ],
    );
    let autoconf = svc.config.ifaces.iter().any(|i| i.autoconf);
    let mut shell = Shell {
        core,
        out,
        autoconf,
        autoconf_at: 0,
    };
    shell.hand_over(lp.cx());
    lp.run(&mut shell)
}

// Inputs and outputs of the loop, in the order given to it.
const FROM_IP: usize = 0;
const FROM_SOCK: usize = 1;
const TO_IP: usize = 0;
const TO_SOCK: usize = 1;

/// How often, at most, tcpd reads ipd's autoconfigured addresses.
const AUTOCONF_EVERY_NS: u64 = 1_000_000_000;

/// What sockd's ring may owe before tcpd takes no more from sockd.
const SOCK_BACKLOG_HIGH: usize = 2048;

/// tcpd's side of the service loop.
struct Shell<'a> {
    core: TcpCore<'a>,
    out: Outputs,
    /// Some interface makes addresses from router advertisements.
    autoconf: bool,
    /// When ipd's autoconfigured addresses were last read.
    autoconf_at: u64,
}

impl Shell<'_> {
    /// Applies the core's pins and hands its segments to the loop. What
    /// sockd must get is bounded by the credits it gave, so it is never
    /// dropped: it waits in the loop for room ([`Overflow::Keep`]).
    fn hand_over(&mut self, cx: &mut Cx) {
        let f = cx.pool.fabric();
        for h in &self.out.pin {
            let _ = f.set_pinned(h, true);
        }
        for h in &self.out.unpin {
            let _ = f.set_pinned(h, false);
        }
        cx.send_all(TO_IP, self.out.to_ip.iter().copied());
        cx.send_all(TO_SOCK, self.out.to_sock.iter().copied());
        self.out.clear();
    }
}

impl Layer for Shell<'_> {
    fn begin(&mut self, cx: &mut Cx) -> usize {
        // Out-of-order data is limited to a quarter of the pool
        // (`max_ooo_segs`); and when the pool is nearly gone, whoever
        // holds it, none is kept: the last buffers are in-order data's
        // and the other layers'.
        let f = cx.pool.fabric();
        let (small, large) = f.free_counts();
        let p = f.params();
        self.core
            .set_pool_short(small < p.small_bufs / 8, large < p.large_bufs / 8);
        // The addresses ipd made from advertised prefixes, read from its
        // arena at most once a second while tcpd runs anyway (never a
        // wake-up of its own): a connection may be made from one.
        if self.autoconf && cx.now >= self.autoconf_at + AUTOCONF_EVERY_NS {
            self.autoconf_at = cx.now;
            self.core.set_autoconf6(&strata_ipd::autoconf_addresses(f));
        }
        0
    }

    fn admit(&self, input: usize, cx: &Cx) -> usize {
        match input {
            FROM_IP => BUDGET,
            // Each request may yield a segment for ipd: take only what
            // its ring can hold, and nothing while sockd owes much.
            FROM_SOCK if cx.queued(TO_SOCK) < SOCK_BACKLOG_HIGH => cx.room(TO_IP),
            _ => 0,
        }
    }

    fn input(&mut self, input: usize, h: Handle, cx: &mut Cx) {
        match input {
            FROM_IP => self.core.from_ip(cx.now, &mut cx.pool, h, &mut self.out),
            FROM_SOCK => self.core.from_sock(cx.now, &mut cx.pool, h, &mut self.out),
            _ => unreachable!("tcpd has two inputs"),
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

    fn refused(&mut self, _output: usize, h: Handle, cx: &mut Cx) {
        // TCP retransmits what is lost here.
        self.core.ring_full(&mut cx.pool, &h);
    }

    /// An ICMP or ICMPv6 error may have been turned into a notification
    /// for sockd in its own buffer before a death: not taken again.
    /// Segments are only read, never changed, so they are.
    fn replayable(&self, h: &Handle) -> bool {
        h.l4proto != strata_proto::ipv4::protocol::ICMP
            && h.l4proto != strata_proto::ipv6::next_header::ICMPV6
    }

    /// Every event is journaled in the arena before `input` returns.
    fn commits_each_input(&self) -> bool {
        true
    }

    fn reconfigure(&mut self, cfg: &StackConfig, _cx: &mut Cx) {
        if let Err(e) = self.core.set_addresses(&TcpConfig::from_stack(cfg)) {
            eprintln!("tcpd: new addresses not taken: {e}");
        }
    }

    fn counters(&self) -> &[u64] {
        self.core.stats().as_array()
    }
}
