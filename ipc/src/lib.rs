//! The strata fabric (DESIGN.md §2): one named shared-memory region per
//! stack instance holding the packet pool, the rings between layers, the
//! per-layer control blocks and the state arenas.

pub mod bufs;
pub mod handle;

pub use bufs::{BufError, Buffers, HeapPool, HEADROOM, LARGE_BUF, SMALL_BUF};
pub use handle::Handle;
