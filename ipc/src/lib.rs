//! The strata fabric (DESIGN.md §2): one named shared-memory region per
//! stack instance holding the packet pool, the rings between layers, the
//! per-layer control blocks and the state arenas.
//!
//! Ownership protocol, which reclaim relies on:
//! - a buffer's header names the layer that holds it;
//! - a producer keeps ownership of what it pushed until the consumer pops
//!   it; the consumer claims each buffer before it releases the slot;
//! - when a layer dies, the launcher frees what it owned (except pinned
//!   buffers and what it had already published) and empties the rings it
//!   consumed, see [`Fabric::reclaim`].

pub mod addrs;
pub mod arena;
pub mod bufs;
pub mod fabric;
pub mod handle;
pub mod l4;
pub mod layer;
pub mod layout;

pub use arena::{Pod, Records};
pub use bufs::{BufError, Buffers, HeapPool, HEADROOM, LARGE_BUF, SMALL_BUF};
pub use fabric::{Consumer, Fabric, FabricError, Pool, Producer, WAKE_ENV};
pub use handle::Handle;
pub use layer::{LayerId, MAX_IFACES, MAX_LAYERS};
pub use layout::{ifc, Params, IFACE_COUNTER_NAMES};
pub mod qdisc_cfg;
pub mod quarantine;
pub mod runtime;
pub mod service;
pub mod sockring;
pub mod socktable;
pub mod stats;
pub use service::{now_ns, Service, BUDGET};
