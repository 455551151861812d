//! tcpd's process shell: maps the fabric, lays the pure TCP core's
//! connection blocks and queue entries in tcpd's arena (so a restarted
//! tcpd takes them back), and moves segments between ipd, the core and
//! sockd.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Release;
use strata_ipc::{now_ns, service, Handle, LayerId, Service, BUDGET};
use strata_tcpd::{Outputs, Stat, Storage, TcpConfig, TcpCore};

/// Connection blocks in the arena; the rest of it holds queue entries.
const MAX_CONNS: usize = 1024;

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
    let svc = Service::start("tcpd").unwrap_or_else(|e| service::die("tcpd", &e));
    let f = &svc.fabric;
    let me = svc.me;
    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    f.register_counters(me, &names);
    let base: Vec<u64> = (0..names.len()).map(|i| f.counter(me, i)).collect();

    let (p, len) = f.arena_bytes(me);
    // SAFETY: `p..p+len` is tcpd's own arena in the fabric, which `svc`
    // keeps mapped and writable for as long as `main` runs (it never
    // returns). Nothing else in this process touches it, and no other
    // process writes it: the launcher starts the next tcpd only once this
    // one is dead, and only copies blocks out of it for `strata ss` (see
    // `strata_tcpd::snapshot`).
    let Some((hdr, storage, fresh)) = (unsafe { Storage::from_raw(p, len, MAX_CONNS) }) else {
        service::die(
            "tcpd",
            &format!("arena of {len} bytes cannot hold {MAX_CONNS} connections"),
        );
    };
    let mut cfg = TcpConfig::from_stack(&svc.config);
    cfg.max_conns = MAX_CONNS;
    cfg.seed = (now_ns() as u32) ^ std::process::id();
    let params = f.params();
    cfg.max_ooo_segs = u64::from(params.small_bufs + params.large_bufs) / 4;
    let mut pool = f.pool(me);
    let mut out = Outputs::with_capacity(8 * BUDGET);
    let now = now_ns();
    let mut core = if fresh || hdr.secret == [0, 0] {
        hdr.secret = random_secret();
        cfg.secret = hdr.secret;
        TcpCore::new(cfg, storage)
            .unwrap_or_else(|e| service::die("tcpd", &format!("configuration: {e}")))
    } else {
        cfg.secret = hdr.secret;
        let (core, n) = TcpCore::restore(cfg, storage, now, &mut pool, &mut out)
            .unwrap_or_else(|e| service::die("tcpd", &format!("restore: {e}")));
        svc.log(&format!("restored {n} connections"));
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

    let mut from_ip = f.consumer(LayerId::IPD, me).expect("ring ipd->tcpd");
    let mut to_ip = f.producer(me, LayerId::IPD).expect("ring tcpd->ipd");
    let mut from_sock = f.consumer(LayerId::SOCKD, me).expect("ring sockd->tcpd");
    let mut to_sock = f.producer(me, LayerId::SOCKD).expect("ring tcpd->sockd");
    // What sockd must get is bounded by the credits it gave, so it is
    // never dropped: it waits here for room.
    let mut sock_backlog: VecDeque<Handle> = VecDeque::with_capacity(4096);
    let mut batch = [Handle::default(); BUDGET];

    svc.ready();
    loop {
        f.beat(me);
        let now = now_ns();
        let mut work = 0;

        let n = from_ip.pop(&mut batch);
        if n > 0 {
            // Out-of-order data is limited to a quarter of the pool
            // (`max_ooo_segs`); and when the pool is nearly gone, whoever
            // holds it, none is kept: the last buffers are in-order
            // data's and the other layers'.
            let (small, large) = f.free_counts();
            let p = f.params();
            core.set_pool_short(small < p.small_bufs / 8, large < p.large_bufs / 8);
        }
        for h in &batch[..n] {
            if !f.take_input(me, h) {
                continue;
            }
            core.from_ip(now, &mut pool, *h, &mut out);
        }
        work += n;
        if sock_backlog.len() < 2048 {
            let room = (to_ip.space() as usize).min(BUDGET);
            let n = from_sock.pop(&mut batch[..room]);
            for h in &batch[..n] {
                if !f.take_input(me, h) {
                    continue;
                }
                core.from_sock(now, &mut pool, *h, &mut out);
            }
            work += n;
        }
        if core.next_deadline().is_some_and(|d| d <= now) {
            core.poll(now, &mut pool, &mut out);
        }

        for h in &out.pin {
            let _ = f.set_pinned(h, true);
        }
        for h in &out.unpin {
            let _ = f.set_pinned(h, false);
        }
        let k = to_ip.push(&out.to_ip);
        for h in &out.to_ip[k..] {
            // TCP retransmits what is lost here.
            core.ring_full(&mut pool, h);
        }
        sock_backlog.extend(out.to_sock.iter().copied());
        out.clear();
        while !sock_backlog.is_empty() {
            let (a, _) = sock_backlog.as_slices();
            let k = to_sock.push(&a[..a.len().min(BUDGET)]);
            if k == 0 {
                break;
            }
            sock_backlog.drain(..k);
            work += k;
        }

        if work > 0 {
            for (i, v) in core.stats().as_array().iter().enumerate() {
                f.set_counter(me, i, base[i] + v);
            }
        }
        if work == 0 {
            let mut tick = service::IDLE_TICK_MS;
            if let Some(d) = core.next_deadline() {
                tick = tick
                    .min(d.saturating_sub(now).div_ceil(1_000_000) as i32)
                    .max(1);
            }
            if !sock_backlog.is_empty() || (!from_sock.is_empty() && to_ip.space() == 0) {
                tick = 1;
            }
            f.sleep(me, &mut [], tick, || {
                from_ip.is_empty() && from_sock.is_empty()
            });
        }
    }
}
