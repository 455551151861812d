//! The strata fabric (docs/DESIGN.md, "Fabric"): one named shared-memory
//! region per stack instance holding the packet pool, the rings between
//! layers, the per-layer control blocks and the state arenas.
//!
//! Reference protocol, which reclaim relies on:
//! - a buffer's header counts the references each layer holds on it, four
//!   bits per layer in one word ([`layout::BufHdr::holders`]); several
//!   layers may share a buffer, and the last release frees it;
//! - a handle in a ring is a reference still charged to the producer; the
//!   consumer's pop moves it to itself in one atomic step, then advances
//!   the ring's `claimed` index, before it releases the slot;
//! - when a layer dies, the launcher empties the rings it consumed and
//!   releases every reference it held except those still unclaimed in the
//!   rings it produced, see [`Fabric::reclaim`]; a layer that keeps
//!   buffers in its arena (tcpd) settles its own references at restart
//!   instead, see [`Fabric::reconcile`].

pub mod addrs;
pub mod arena;
pub mod bufs;
pub mod capture;
pub mod confine;
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
pub mod freelist;
pub mod qdisc_cfg;
pub mod quarantine;
mod raw;
pub mod route;
pub mod runtime;
pub mod serve;
pub mod service;
pub mod sockring;
pub mod socktable;
pub mod stats;
pub use route::{Route, RouteTable};
pub use service::{now_ns, Service, BUDGET};
