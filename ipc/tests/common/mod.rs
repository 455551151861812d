//! What the fabric's integration tests share: a small pool, unique
//! region names, and child processes that die with the test.

#![allow(dead_code)] // each test file uses its own part

use std::sync::atomic::{AtomicU32, Ordering};
use strata_ipc::layout::Params;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A region name no other test (or test process) uses.
pub fn name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// 64 small and 4 large buffers, 16-slot rings, one interface.
pub fn small() -> Params {
    Params {
        small_bufs: 64,
        large_bufs: 4,
        ring_size: 16,
        n_ifaces: 1,
        arena_bytes: 8192,
        tcpd_arena_bytes: 0,
        filterd_arena_bytes: 0,
        sockd_arena_bytes: 0,
    }
}

/// A child killed and reaped when the test ends, also when an assertion
/// fails first (the children loop until killed).
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
