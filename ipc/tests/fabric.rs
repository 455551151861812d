//! Invariants of the fabric, on real shared memory.

use std::os::fd::RawFd;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use strata_ipc::{BufError, Buffers, Fabric, FabricError, Handle, LayerId, MAX_LAYERS};

mod common;

use common::{small, Reaped};

fn name() -> String {
    common::name("test")
}

const D0: LayerId = LayerId::driver(0);
const ND: LayerId = LayerId::NETDEVD;

#[test]
fn alloc_until_empty_then_free_restores_counts() {
    let f = Fabric::create(&name(), small()).unwrap();
    assert_eq!(f.free_counts(), (64, 4));
    let mut hs = Vec::new();
    while let Some(h) = f.alloc(D0, 100) {
        hs.push(h);
    }
    // Small requests overflow into the large class when small runs out.
    assert_eq!(hs.len(), 68);
    assert_eq!(f.free_counts(), (0, 0));
    assert_eq!(f.in_use_by_owner()[D0.0 as usize], 68);
    for h in &hs {
        f.free_as(D0, h);
    }
    assert_eq!(f.free_counts(), (64, 4));
    assert!(f.alloc(D0, 70_000).is_none(), "larger than a large buffer");
}

#[test]
fn a_device_finds_every_buffer_by_its_offset_in_the_buffer_area() {
    let f = Fabric::create(&name(), small()).unwrap();
    let area = f.buffer_area();
    assert_eq!(area.offset % 4096, 0);
    assert_eq!(area.len % 4096, 0);
    let mut hs = Vec::new();
    while let Some(h) = f.alloc(D0, 100) {
        hs.push(h);
    }
    let mut offs = Vec::new();
    for h in &hs {
        let off = f.buf_region_offset(h).unwrap();
        assert!(off >= area.offset && off + f.buf_cap(h.buf) <= area.offset + area.len);
        // Any byte of the buffer leads back to it.
        assert_eq!(f.buf_at_offset(off), Some(h.buf));
        assert_eq!(f.buf_at_offset(off + f.buf_cap(h.buf) - 1), Some(h.buf));
        offs.push(off);
    }
    offs.sort_unstable();
    offs.dedup();
    assert_eq!(offs.len(), hs.len(), "buffers overlap");
    assert_eq!(f.buf_at_offset(area.offset + area.len), None);
    assert_eq!(f.buf_at_offset(0), None);
    let h = hs.pop().unwrap();
    f.free_as(D0, &h);
    assert_eq!(f.buf_region_offset(&h), Err(BufError::Stale));
    for h in &hs {
        f.free_as(D0, h);
    }
}

#[test]
fn stale_handle_is_detected_never_followed() {
    let f = Fabric::create(&name(), small()).unwrap();
    let h = f.alloc(D0, 10).unwrap();
    f.free_as(D0, &h);
    assert_eq!(f.check(&h), Err(BufError::Stale));
    let p = f.pool(D0);
    assert_eq!(p.raw(&h), Err(BufError::Stale));
    // Freeing it again is refused and counted, and does not corrupt the
    // free list (the count stays right).
    f.free_as(D0, &h);
    assert_eq!(f.pool_errors().0, 1);
    assert_eq!(f.free_counts(), (64, 4));
    // The buffer is reused with a new generation; the old handle stays stale.
    let mut again = Vec::new();
    for _ in 0..64 {
        again.push(f.alloc(D0, 10).unwrap());
    }
    assert!(again.iter().any(|n| n.buf == h.buf && n.gen != h.gen));
    assert_eq!(f.check(&h), Err(BufError::Stale));
    let bad = Handle { buf: 10_000, ..h };
    assert_eq!(f.check(&bad), Err(BufError::BadIndex));
}

#[test]
fn refcount_shares_a_buffer() {
    let f = Fabric::create(&name(), small()).unwrap();
    let h = f.alloc(D0, 10).unwrap();
    f.add_ref_as(D0, &h).unwrap();
    f.free_as(D0, &h);
    assert!(f.check(&h).is_ok());
    f.free_as(D0, &h);
    assert!(f.check(&h).is_err());
    assert_eq!(f.free_counts(), (64, 4));
}

#[test]
fn ring_batches_wrap_and_refuse_when_full() {
    let f = Fabric::create(&name(), small()).unwrap();
    let mut prod = f.producer(D0, ND).unwrap();
    let mut cons = f.consumer(D0, ND).unwrap();
    assert!(f.producer(D0, LayerId::IPD).is_none(), "no such edge");
    let mut out = [Handle::default(); 32];
    for round in 0..5 {
        let hs: Vec<Handle> = (0..20).map(|_| f.alloc(D0, 10).unwrap()).collect();
        let n = prod.push(&hs);
        assert_eq!(n, 16, "round {round}: ring of 16 takes 16");
        assert_eq!(prod.space(), 0);
        assert_eq!(prod.push(&hs[16..]), 0);
        let got = cons.pop(&mut out);
        assert_eq!(got, 16);
        assert_eq!(&out[..16], &hs[..16], "order kept");
        for h in &out[..16] {
            assert_eq!(f.owner_of(h.buf), Some(ND), "consumer claimed it");
            f.free_as(ND, h);
        }
        for h in &hs[16..] {
            f.free_as(D0, h);
        }
    }
    assert!(cons.is_empty());
    assert_eq!(f.free_counts(), (64, 4));
}

#[test]
fn stale_handle_in_a_ring_is_dropped_by_the_consumer() {
    let f = Fabric::create(&name(), small()).unwrap();
    let mut prod = f.producer(D0, ND).unwrap();
    let mut cons = f.consumer(D0, ND).unwrap();
    let good = f.alloc(D0, 10).unwrap();
    let gone = f.alloc(D0, 10).unwrap();
    f.free_as(D0, &gone);
    prod.push(&[gone, good]);
    let mut out = [Handle::default(); 4];
    assert_eq!(cons.pop(&mut out), 1);
    assert_eq!(out[0], good);
    assert!(f.pool_errors().0 >= 1);
}

#[test]
fn reclaim_of_a_dead_consumer_frees_what_it_took_and_leaves_what_waits() {
    let f = Fabric::create(&name(), small()).unwrap();
    let mut prod = f.producer(D0, ND).unwrap();
    let mut cons = f.consumer(D0, ND).unwrap();
    let hs: Vec<Handle> = (0..10).map(|_| f.alloc(D0, 10).unwrap()).collect();
    prod.push(&hs);
    let mut out = [Handle::default(); 4];
    // The consumer took 4 and "died" holding them; 6 wait in its ring.
    assert_eq!(cons.pop(&mut out), 4);
    // It also had allocated two of its own, one pinned (informational
    // only: netdevd keeps no buffers across a restart).
    let own = f.alloc(ND, 10).unwrap();
    let pinned = f.alloc(ND, 10).unwrap();
    f.set_pinned(&pinned, true).unwrap();
    let freed = f.reclaim(ND);
    assert_eq!(freed, 6);
    assert!(f.check(&own).is_err());
    assert!(f.check(&pinned).is_err());
    assert_eq!(f.ctl(ND).reclaimed.load(Ordering::Relaxed), 6);
    // The six that waited are the next instance's to take.
    let mut next = f.consumer(D0, ND).unwrap();
    let mut rest = [Handle::default(); 8];
    assert_eq!(next.pop(&mut rest), 6);
    assert_eq!(rest[0].buf, hs[4].buf);
    for h in &rest[..6] {
        f.free_as(ND, h);
    }
    assert_eq!(f.free_counts(), (64, 4));
    assert_eq!(f.pool_errors(), (0, 0));
}

/// What ipd hands tcpd and tcpd had taken but not finished when it died
/// is tcpd's next instance's to take again, without moving a reference
/// twice; what waited behind it follows. From sockd's ring nothing is
/// replayed: what tcpd took from it is gone, what waited is released.
#[test]
fn a_dead_transport_takes_again_what_it_had_taken_from_ipd() {
    let f = Fabric::create(&name(), small()).unwrap();
    f.ctl(TCPD).self_reclaim.store(1, Ordering::Relaxed);
    let mut from_ip = f.producer(IPD, TCPD).unwrap();
    let mut from_sock = f.producer(SOCKD, TCPD).unwrap();
    let segs: Vec<Handle> = (0..5).map(|_| f.alloc(IPD, 10).unwrap()).collect();
    assert_eq!(from_ip.push(&segs), 5);
    let reqs: Vec<Handle> = (0..3).map(|_| f.alloc(SOCKD, 10).unwrap()).collect();
    assert_eq!(from_sock.push(&reqs), 3);
    let mut tcpd = f.consumer(IPD, TCPD).unwrap();
    let mut tcpd_sock = f.consumer(SOCKD, TCPD).unwrap();
    let mut out = [Handle::default(); 3];
    // Took three, finished the first, died in the second.
    assert_eq!(tcpd.take(&mut out), 3);
    tcpd.release_through(0);
    f.free_as(TCPD, &out[0]);
    assert_eq!(tcpd_sock.take(&mut out[..1]), 1);
    assert_eq!(
        f.reclaim(TCPD),
        2,
        "the requests that waited (sockd's); tcpd settles its own"
    );
    // The restart: the arena holds none of them.
    assert_eq!(f.reconcile(TCPD, |_, _| 0), 1, "only the request it took");
    let mut again = f.consumer(IPD, TCPD).unwrap();
    let mut got = [Handle::default(); 8];
    assert_eq!(again.take(&mut got), 4);
    assert_eq!(again.replayed(), 2, "the two it had not finished");
    let bufs: Vec<u32> = got[..4].iter().map(|h| h.buf).collect();
    let want: Vec<u32> = segs[1..].iter().map(|h| h.buf).collect();
    assert_eq!(bufs, want, "in order, each once");
    again.release();
    for h in &got[..4] {
        assert_eq!(f.refs_of(h.buf, TCPD), 1);
        f.free_as(TCPD, h);
    }
    assert!(f.consumer(SOCKD, TCPD).unwrap().is_empty());
    assert_eq!(f.free_counts(), (64, 4));
    assert_eq!(f.pool_errors(), (0, 0));
}

#[test]
fn reclaim_of_a_dead_producer_keeps_what_it_published() {
    let f = Fabric::create(&name(), small()).unwrap();
    let mut prod = f.producer(D0, ND).unwrap();
    let mut cons = f.consumer(D0, ND).unwrap();
    let sent: Vec<Handle> = (0..5).map(|_| f.alloc(D0, 10).unwrap()).collect();
    prod.push(&sent);
    let held: Vec<Handle> = (0..3).map(|_| f.alloc(D0, 10).unwrap()).collect();
    assert_eq!(f.reclaim(D0), 3);
    for h in &held {
        assert!(f.check(h).is_err());
    }
    let mut out = [Handle::default(); 8];
    assert_eq!(cons.pop(&mut out), 5, "published handles still arrive");
    for h in &out[..5] {
        f.free_as(ND, h);
    }
    assert_eq!(f.free_counts(), (64, 4));
}

const TCPD: LayerId = LayerId::TCPD;
const SOCKD: LayerId = LayerId::SOCKD;

/// tcpd keeps a delivered buffer in its arena and hands sockd a second
/// reference; sockd dies holding it (popped, mid-copy). Reclaim must drop
/// sockd's reference and leave tcpd's: the old pinned-flag scheme leaked it.
#[test]
fn reclaim_releases_exactly_the_dead_layers_share_of_a_kept_buffer() {
    let f = Fabric::create(&name(), small()).unwrap();
    f.ctl(TCPD).self_reclaim.store(1, Ordering::Relaxed);
    let mut to_sock = f.producer(TCPD, SOCKD).unwrap();
    let mut sockd = f.consumer(TCPD, SOCKD).unwrap();
    let kept = f.alloc(TCPD, 100).unwrap();
    f.set_pinned(&kept, true).unwrap();
    f.add_ref_as(TCPD, &kept).unwrap();
    let queued = f.alloc(TCPD, 100).unwrap();
    f.add_ref_as(TCPD, &queued).unwrap();
    assert_eq!(to_sock.push(&[kept, queued]), 2);
    let mut out = [Handle::default(); 1];
    assert_eq!(sockd.pop(&mut out), 1);
    assert_eq!(
        (f.refs_of(kept.buf, TCPD), f.refs_of(kept.buf, SOCKD)),
        (1, 1)
    );
    // `queued` still waits in sockd's ring, charged to tcpd.
    assert_eq!(
        f.reclaim(SOCKD),
        2,
        "sockd's popped reference and the queued one"
    );
    assert_eq!(
        (f.refs_of(kept.buf, TCPD), f.refs_of(kept.buf, SOCKD)),
        (1, 0)
    );
    assert_eq!(f.refs_of(queued.buf, TCPD), 1);
    f.free_as(TCPD, &kept);
    f.free_as(TCPD, &queued);
    assert_eq!(f.free_counts(), (64, 4));
    assert_eq!(f.pool_errors(), (0, 0));
}

/// A restarted tcpd keeps what its arena names, drops what its dead
/// instance held on its heap, and leaves copies still in flight to the
/// layer that will pop them.
#[test]
fn reconcile_keeps_arena_references_and_those_in_flight() {
    let f = Fabric::create(&name(), small()).unwrap();
    f.ctl(TCPD).self_reclaim.store(1, Ordering::Relaxed);
    let mut to_ip = f.producer(TCPD, LayerId::IPD).unwrap();
    let mut ipd = f.consumer(TCPD, LayerId::IPD).unwrap();
    // One arena reference, one on the way to ipd, one on the heap.
    let seg = f.alloc(TCPD, 100).unwrap();
    f.add_ref_as(TCPD, &seg).unwrap();
    f.add_ref_as(TCPD, &seg).unwrap();
    assert_eq!(to_ip.push(&[seg]), 1);
    // Heap-only buffers: gone after the restart.
    let scratch = f.alloc(TCPD, 100).unwrap();
    assert_eq!(f.reclaim(TCPD), 0, "tcpd settles its own references");
    assert_eq!(f.refs_of(seg.buf, TCPD), 3);
    let freed = f.reconcile(TCPD, |buf, gen| u32::from(buf == seg.buf && gen == seg.gen));
    assert_eq!(freed, 2);
    assert!(f.check(&scratch).is_err());
    assert_eq!(f.refs_of(seg.buf, TCPD), 2);
    let mut out = [Handle::default(); 1];
    assert_eq!(ipd.pop(&mut out), 1);
    f.free_as(LayerId::IPD, &out[0]);
    f.free_as(TCPD, &seg);
    assert_eq!(f.free_counts(), (64, 4));
    assert_eq!(f.ctl(TCPD).reclaimed.load(Ordering::Relaxed), 2);
}

/// tcpd finished its first input (the segment went into its queue, in
/// the arena) and died before giving the slot back: that one is not
/// replayed, the next is.
#[test]
fn a_finished_input_whose_slot_was_not_given_back_is_not_replayed() {
    let f = Fabric::create(&name(), small()).unwrap();
    f.ctl(TCPD).self_reclaim.store(1, Ordering::Relaxed);
    let mut from_ip = f.producer(IPD, TCPD).unwrap();
    let segs: Vec<Handle> = (0..2).map(|_| f.alloc(IPD, 10).unwrap()).collect();
    assert_eq!(from_ip.push(&segs), 2);
    let mut tcpd = f.consumer(IPD, TCPD).unwrap();
    let mut out = [Handle::default(); 2];
    assert_eq!(tcpd.take(&mut out), 2);
    f.reclaim(TCPD);
    let queued = segs[0];
    let kept = f.reconcile(TCPD, |buf, gen| {
        u32::from(buf == queued.buf && gen == queued.gen)
    });
    assert_eq!(kept, 0);
    let mut again = f.consumer(IPD, TCPD).unwrap();
    let mut got = [Handle::default(); 2];
    assert_eq!(again.take(&mut got), 1);
    assert_eq!((got[0].buf, again.replayed()), (segs[1].buf, 1));
    again.release();
    f.free_as(TCPD, &got[0]);
    f.free_as(TCPD, &queued);
    assert_eq!(f.free_counts(), (64, 4));
    assert_eq!(f.pool_errors(), (0, 0));
}

/// A consumer killed inside a pop, after moving some references and
/// before publishing its new head: reclaim charges each slot to the side
/// that holds it.
#[test]
fn reclaim_splits_a_pop_cut_short_between_consumer_and_producer() {
    let f = Fabric::create(&name(), small()).unwrap();
    let mut prod = f.producer(D0, ND).unwrap();
    let hs: Vec<Handle> = (0..4).map(|_| f.alloc(D0, 10).unwrap()).collect();
    prod.push(&hs);
    // What a pop does for the first two slots before dying.
    let mut cons = f.consumer(D0, ND).unwrap();
    let mut out = [Handle::default(); 2];
    assert_eq!(cons.pop(&mut out), 2);
    let r = f.ring_index(D0, ND).unwrap();
    f.rewind_head_for_test(r, 2);
    assert_eq!(f.reclaim(ND), 2, "the two it claimed");
    let mut next = f.consumer(D0, ND).unwrap();
    let mut rest = [Handle::default(); 4];
    assert_eq!(next.pop(&mut rest), 2, "the two still the producer's");
    for h in &rest[..2] {
        f.free_as(ND, h);
    }
    assert_eq!(f.free_counts(), (64, 4));
    assert_eq!(f.pool_errors(), (0, 0));
}

#[test]
fn a_layer_holds_at_most_fifteen_references_to_one_buffer() {
    let f = Fabric::create(&name(), small()).unwrap();
    let h = f.alloc(D0, 10).unwrap();
    for _ in 1..15 {
        f.add_ref_as(D0, &h).unwrap();
    }
    assert_eq!(f.add_ref_as(D0, &h), Err(BufError::Stale));
    f.add_ref_as(ND, &h).unwrap();
    assert_eq!((f.refs_of(h.buf, D0), f.refs_of(h.buf, ND)), (15, 1));
    // A free of a reference this layer does not hold is refused.
    f.free_as(LayerId::IPD, &h);
    assert_eq!(f.pool_errors().1, 1);
    for _ in 0..15 {
        f.free_as(D0, &h);
    }
    assert!(f.check(&h).is_ok());
    f.free_as(ND, &h);
    assert_eq!(f.free_counts(), (64, 4));
}

#[test]
fn create_twice_is_refused_and_open_finds_it() {
    let n = name();
    let f = Fabric::create(&n, small()).unwrap();
    assert!(matches!(
        Fabric::create(&n, small()),
        Err(FabricError::Exists(_))
    ));
    let g = Fabric::open(&n).unwrap();
    assert_eq!(g.params(), f.params());
    let h = f.alloc(D0, 10).unwrap();
    assert!(g.check(&h).is_ok(), "both mappings see one pool");
    drop(g);
    drop(f);
    assert!(matches!(Fabric::open(&n), Err(FabricError::NotFound(_))));
}

#[test]
fn bad_params_are_refused() {
    let mut p = small();
    p.ring_size = 100;
    assert!(matches!(
        Fabric::create(&name(), p),
        Err(FabricError::BadParams(_))
    ));
    let mut p = small();
    p.n_ifaces = 0;
    assert!(matches!(
        Fabric::create(&name(), p),
        Err(FabricError::BadParams(_))
    ));
}

/// Whether thread `tid` of this process sleeps in the kernel (state S).
fn asleep(tid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // The state follows the command name's closing parenthesis.
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('S'))
}

/// A consumer sleeping (in a futex wait, or in poll on its eventfd) is
/// woken by a push, once however many producers push; an awake one costs
/// its producer no system call.
fn woken_by_a_push(futex: bool) {
    let mut f = Fabric::create(&name(), small()).unwrap();
    let mut fds: [RawFd; MAX_LAYERS] = [-1; MAX_LAYERS];
    fds[ND.0 as usize] = strata_ipc::fabric::new_eventfd().unwrap();
    f.set_wakeups(fds);
    f.set_futex_wait(futex);
    let h = f.alloc(D0, 10).unwrap();
    f.producer(D0, ND).unwrap().push(&[h]);
    assert_eq!(
        f.ctl(ND).kicks.load(Ordering::Relaxed),
        0,
        "awake: no syscall"
    );
    let mut out = [Handle::default(); 1];
    f.consumer(D0, ND).unwrap().pop(&mut out);
    let h2 = f.alloc(LayerId::FILTERD, 10).unwrap();
    std::thread::scope(|s| {
        let fr = &f;
        let (tx, rx) = std::sync::mpsc::channel();
        let t = s.spawn(move || {
            let cons = fr.consumer(D0, ND).unwrap();
            let cons1 = fr.consumer(LayerId::FILTERD, ND).unwrap();
            // SAFETY: gettid takes no arguments.
            tx.send(unsafe { libc::gettid() }).unwrap();
            fr.sleep(ND, &mut [], 60_000, || cons.is_empty() && cons1.is_empty())
        });
        // Push only once the sleeper sleeps in the kernel.
        let tid = rx.recv().unwrap();
        while !asleep(tid) {
            std::thread::yield_now();
        }
        f.producer(D0, ND).unwrap().push(&[out[0]]);
        f.producer(LayerId::FILTERD, ND).unwrap().push(&[h2]);
        let slept = t.join().unwrap().expect("it slept");
        assert!(slept.kicked, "woken by the kick, not the timeout");
        assert_eq!(slept.syscalls, if futex { 1 } else { 2 });
    });
    assert_eq!(
        f.ctl(ND).kicks.load(Ordering::Relaxed),
        1,
        "one kick for two pushes"
    );
}

#[test]
fn sleeping_consumer_is_woken_by_a_push_and_an_awake_one_is_not_kicked() {
    woken_by_a_push(false);
}

#[test]
fn a_consumer_in_a_futex_wait_is_woken_by_a_push() {
    woken_by_a_push(true);
}

#[test]
fn counters_are_named_and_survive_reregistration() {
    let f = Fabric::create(&name(), small()).unwrap();
    f.register_counters(LayerId::IPD, &["rx", "tx"]);
    f.count(LayerId::IPD, 1, 5);
    f.register_counters(LayerId::IPD, &["rx", "tx"]);
    assert_eq!(
        f.counters(LayerId::IPD),
        vec![("rx".to_string(), 0), ("tx".to_string(), 5)]
    );
}

#[test]
fn arena_records_outlive_the_mapping_that_wrote_them() {
    let n = name();
    let f = Fabric::create(&n, small()).unwrap();
    {
        let g = Fabric::open(&n).unwrap();
        g.records::<u64>(LayerId::IPD, 1).store([1, 2, 3]);
    }
    let g = Fabric::open(&n).unwrap();
    assert_eq!(g.records::<u64>(LayerId::IPD, 1).load(), vec![1, 2, 3]);
    assert!(f.records::<u64>(LayerId::TCPD, 1).load().is_empty());
}

/// The consumer half of the two-process test; runs only when the parent
/// starts this binary with the fabric name in the environment.
#[test]
#[ignore = "run by kill_consumer_mid_stream_then_reclaim_restores_the_pool"]
fn child_consumer() {
    let Ok(n) = std::env::var("STRATA_TEST_FABRIC") else {
        return;
    };
    let f = Fabric::open(&n).unwrap();
    let mut cons = f.consumer(D0, ND).unwrap();
    let mut out = [Handle::default(); 8];
    let mut held = Vec::new();
    let parent = std::os::unix::process::parent_id();
    // Ends by itself should the test process die without killing it.
    while std::os::unix::process::parent_id() == parent {
        let k = cons.pop(&mut out);
        for h in &out[..k] {
            // Keep some, free the rest: the kill finds both kinds.
            if held.len() < 5 {
                held.push(*h);
            } else {
                f.free_as(ND, h);
            }
        }
        f.beat(ND);
    }
}

#[test]
fn kill_consumer_mid_stream_then_reclaim_restores_the_pool() {
    let n = name();
    let f = Fabric::create(&n, small()).unwrap();
    let mut child = Reaped(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_consumer", "--ignored", "--nocapture"])
            .env("STRATA_TEST_FABRIC", &n)
            .spawn()
            .unwrap(),
    );
    let mut prod = f.producer(D0, ND).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0u64;
    while sent < 20_000 && Instant::now() < deadline {
        if let Some(h) = f.alloc(D0, 64) {
            if prod.push(&[h]) == 0 {
                f.free_as(D0, &h);
            } else {
                sent += 1;
            }
        }
    }
    assert!(sent > 1000, "the consumer moved traffic ({sent})");
    assert!(f.ctl(ND).heartbeat.load(Ordering::Relaxed) > 0);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let (s, l) = f.free_counts();
    assert!(s + l < 68, "the dead consumer held buffers");
    f.reclaim(ND);
    assert_eq!(f.free_counts(), (64, 4), "reclaim returned every buffer");
    assert!(f.consumer(D0, ND).unwrap().is_empty());
}

const FD: LayerId = LayerId::FILTERD;
const IPD: LayerId = LayerId::IPD;

/// filterd stands aside: ipd takes the ring netdevd fills towards filterd
/// (after filterd's own ring to ipd, so order holds), each reference
/// moving from netdevd to ipd; a dead filterd's reclaim leaves the rings
/// it does not take alone, a dead ipd's leaves what waits in the one it
/// took for the next ipd; and filterd is back only once both neighbours
/// have let go.
#[test]
fn a_layer_aside_has_its_rings_taken_by_its_neighbours_and_returns_when_they_let_go() {
    use strata_ipc::layout::aside;
    let f = Fabric::create(&name(), small()).unwrap();
    let mut up = f.producer(ND, FD).unwrap();
    let mut fd_in = f.consumer(ND, FD).unwrap();
    let mut fd_out = f.producer(FD, IPD).unwrap();
    let mut through = f.consumer_through(FD, IPD).unwrap();
    assert!(f.consumer_through(FD, TCPD).is_none(), "not a neighbour");
    assert!(f.consumer_through(IPD, FD).is_none(), "ipd has more sides");

    // filterd passed one on before it stood aside; one more waits.
    let first = f.alloc(ND, 10).unwrap();
    up.push(&[first]);
    let mut out = [Handle::default(); 4];
    assert_eq!(fd_in.pop(&mut out), 1);
    fd_out.push(&out[..1]);
    let second = f.alloc(ND, 10).unwrap();
    up.push(&[second]);
    assert_eq!(f.aside(FD), aside::IN);
    assert!(f.step_aside(FD));
    assert_eq!(f.aside(FD), aside::ASIDE);
    assert!(!f.step_aside(IPD), "only a layer with two neighbours");

    // A dead filterd loses nothing that waits for its neighbours.
    f.reclaim(FD);
    assert_eq!(through.len(), 1);
    let mut from_fd = f.consumer(FD, IPD).unwrap();
    assert_eq!(from_fd.pop(&mut out), 1, "filterd's own ring first");
    assert_eq!(out[0].buf, first.buf);
    assert_eq!(
        through.pop(&mut out),
        1,
        "then the one it stands aside from"
    );
    assert_eq!(out[0].buf, second.buf);
    assert_eq!(f.refs_of(second.buf, IPD), 1, "the reference moved to ipd");
    assert_eq!(f.refs_of(second.buf, ND), 0);
    f.free_as(IPD, &first);
    f.free_as(IPD, &second);

    // A dead ipd: what waited in the ring it took waits for the next.
    let waiting = f.alloc(ND, 10).unwrap();
    up.push(&[waiting]);
    f.reclaim(IPD);
    let mut through = f.consumer_through(FD, IPD).unwrap();
    assert_eq!(through.pop(&mut out), 1);
    assert_eq!(out[0].buf, waiting.buf);
    f.free_as(IPD, &waiting);

    // Back: not before both neighbours say they let go.
    f.begin_return(FD);
    assert!(!f.try_return(FD));
    f.ack_return(FD, IPD);
    assert!(!f.try_return(FD), "netdevd has not let go");
    f.ack_return(FD, ND);
    assert!(f.try_return(FD));
    assert_eq!(f.aside(FD), aside::IN);
    let again = f.alloc(ND, 10).unwrap();
    up.push(&[again]);
    assert_eq!(fd_in.pop(&mut out), 1, "filterd takes its ring again");
    f.free_as(FD, &again);
    assert_eq!(f.free_counts(), (64, 4));
}

#[test]
fn inline_control_messages_ride_the_rings_without_a_buffer() {
    use strata_ipc::l4::{op, L4Ctl};
    let f = Fabric::create(&name(), small()).unwrap();
    f.ctl(TCPD).self_reclaim.store(1, Ordering::Relaxed);
    // sockd holds the whole pool: a credit goes all the same.
    let mut all = Vec::new();
    while let Some(h) = f.alloc(SOCKD, 10) {
        all.push(h);
    }
    let credit = L4Ctl {
        op: op::READ_CREDIT,
        sock: 9,
        req: 4,
        errno: -1,
        flags: 3,
        value: u64::MAX - 7,
        ..L4Ctl::default()
    };
    let inline = credit
        .to_handle(&mut f.pool(SOCKD))
        .expect("no buffer needed");
    assert!(inline.is_inline());
    let data = all.pop().unwrap();
    let mut to_tcpd = f.producer(SOCKD, TCPD).unwrap();
    assert_eq!(to_tcpd.push(&[inline, data, inline]), 3);
    let mut tcpd = f.consumer(SOCKD, TCPD).unwrap();
    let mut out = [Handle::default(); 4];
    assert_eq!(tcpd.take(&mut out), 3, "in order, none refused");
    assert_eq!(out[1].buf, data.buf);
    for h in [out[0], out[2]] {
        assert_eq!(L4Ctl::from_handle(&f.pool(TCPD), &h).unwrap(), Some(credit));
    }
    assert_eq!(f.refs_of(data.buf, TCPD), 1, "the data's reference moved");
    // Freeing one is nothing, not a stale free.
    f.free_as(TCPD, &out[0]);
    tcpd.release_through(0);
    assert_eq!(f.pool_errors(), (0, 0));
    // tcpd dies with the data and a credit taken and unfinished: sockd's
    // messages die with it (sockd restates them), the data's buffer
    // comes back, and the slots that named none trouble nothing.
    f.reclaim(TCPD);
    f.reconcile(TCPD, |_, _| 0);
    assert!(f.consumer(SOCKD, TCPD).unwrap().is_empty());
    for h in &all {
        f.free_as(SOCKD, h);
    }
    assert_eq!(f.free_counts(), (64, 4));
    assert_eq!(f.pool_errors(), (0, 0));
}
