//! Crash injection (filled in below).

use std::cell::Cell;

thread_local! {
    /// Crash points left before the core is killed (0: never).
    static COUNTDOWN: Cell<u64> = const { Cell::new(0) };
}

/// What a killed core unwinds with.
pub struct Killed;

/// Called by the core at every step that leaves something in its arena.
pub fn point() {
    COUNTDOWN.with(|c| match c.get() {
        0 => {}
        1 => {
            c.set(0);
            std::panic::panic_any(Killed);
        }
        n => c.set(n - 1),
    });
}
