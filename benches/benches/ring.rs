//! The fabric between two processes: handles per second through a ring
//! pair at batch 1 and batch 32, and the round trip to a consumer that is
//! asleep on its eventfd (the wake-up latency).
//!
//! The bench binary re-executes itself as the second process: an echo
//! layer that pops handles from one ring and pushes them back on the other.

use criterion::{criterion_group, Criterion, Throughput};
use std::os::fd::RawFd;
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use strata_ipc::layout::Params;
use strata_ipc::{Fabric, Handle, LayerId, MAX_LAYERS, WAKE_ENV};

const A: LayerId = LayerId::driver(0);
const B: LayerId = LayerId::NETDEVD;
const CHILD_ENV: &str = "STRATA_BENCH_ECHO";

/// The echo process: pops from A→B, pushes back on B→A. With `sleepy`,
/// it sleeps on its eventfd whenever idle.
fn echo(instance: &str) -> ! {
    let mut f = Fabric::open(instance).expect("open fabric");
    f.set_me(B);
    f.wakeups_from_env().expect("wake fds");
    let mut rx = f.consumer(A, B).unwrap();
    let mut tx = f.producer(B, A).unwrap();
    let mut batch = [Handle::default(); 64];
    loop {
        let n = rx.pop(&mut batch);
        if n > 0 {
            let mut done = 0;
            while done < n {
                done += tx.push(&batch[done..n]);
            }
        } else {
            f.sleep(B, &mut [], 100, || rx.is_empty());
        }
    }
}

struct Pair {
    f: Fabric,
    child: Child,
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup() -> Pair {
    let name = format!("bench-{}", std::process::id());
    Fabric::remove_stale(&name);
    let mut f = Fabric::create(
        &name,
        Params {
            small_bufs: 1024,
            large_bufs: 0,
            ring_size: 1024,
            ..Params::default()
        },
    )
    .expect("create fabric");
    f.set_me(A);
    let mut fds: [RawFd; MAX_LAYERS] = [-1; MAX_LAYERS];
    for l in [A, B] {
        fds[l.0 as usize] = strata_ipc::fabric::new_eventfd().unwrap();
    }
    f.set_wakeups(fds);
    let child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, &name)
        .env(WAKE_ENV, strata_ipc::fabric::format_wake_env(&fds))
        .spawn()
        .expect("spawn echo process");
    Pair { f, child }
}

fn throughput(c: &mut Criterion) {
    let p = setup();
    let f = &p.f;
    let mut g = c.benchmark_group("ring_two_processes");
    for batch in [1usize, 32] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("batch_{batch}"), |b| {
            let handles: Vec<Handle> = (0..256).map(|_| f.alloc(A, 64).unwrap()).collect();
            b.iter_custom(|iters| {
                let mut tx = f.producer(A, B).unwrap();
                let mut rx = f.consumer(B, A).unwrap();
                let mut back = [Handle::default(); 64];
                let mut sent = 0u64;
                let mut got = 0u64;
                let mut next = 0usize;
                let start = Instant::now();
                while got < iters {
                    // Keep up to 256 handles in flight, pushed `batch` at a time.
                    let in_flight = (sent - got) as usize;
                    if sent < iters && in_flight + batch <= handles.len() {
                        let k = batch.min((iters - sent) as usize);
                        let mut chunk = [Handle::default(); 32];
                        for slot in chunk.iter_mut().take(k) {
                            *slot = handles[next % handles.len()];
                            next += 1;
                        }
                        sent += tx.push(&chunk[..k]) as u64;
                    }
                    got += rx.pop(&mut back[..batch.max(1)]) as u64;
                }
                start.elapsed()
            });
            for h in &handles {
                f.free(h);
            }
        });
    }
    g.finish();
}

fn wakeup(c: &mut Criterion) {
    let p = setup();
    let f = &p.f;
    let h = f.alloc(A, 64).unwrap();
    c.bench_function("wakeup_round_trip_sleeping_consumer", |b| {
        b.iter_custom(|iters| {
            let mut tx = f.producer(A, B).unwrap();
            let mut rx = f.consumer(B, A).unwrap();
            let mut back = [Handle::default(); 1];
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Measure only from the moment the echo process sleeps.
                while f.ctl(B).sleeping.load(Ordering::SeqCst) == 0 {
                    std::hint::spin_loop();
                }
                std::thread::sleep(Duration::from_micros(50));
                let t = Instant::now();
                tx.push(&[h]);
                while rx.pop(&mut back) == 0 {
                    std::hint::spin_loop();
                }
                total += t.elapsed();
            }
            total
        });
    });
    f.free(&h);
}

criterion_group!(benches, throughput, wakeup);

fn main() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        echo(&name);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
