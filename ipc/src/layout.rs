//! The fixed layout of the shared region. Everything in it is plain data
//! and atomics at offsets computed from [`Params`], so every process that
//! maps the region by name finds the same structures at the same places.
//!
//! The region opens with what only the launcher writes: the [`Header`]
//! (the layout, fixed at creation) and one [`LaunchCtl`] per layer (its
//! quarantine table, restarts, start time), on pages of their own that
//! every layer maps read-only ([`crate::Fabric::protect_for`]), so that a
//! layer taken over cannot rewrite the layout or quarantine another
//! layer's inputs. Everything after them is written by the layers.

use crate::handle::Handle;
use crate::layer::{MAX_IFACES, MAX_LAYERS};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// Identifies a strata fabric ("STRATAFB").
pub const MAGIC: u64 = 0x5354_5241_5441_4642;
/// Bumped whenever the layout changes, so a layer built from other
/// sources refuses to map the region instead of misreading it.
pub const VERSION: u32 = 12;

/// Counters per layer control block.
pub const LAYER_COUNTERS: usize = 256;
/// Longest counter name, in bytes.
pub const COUNTER_NAME_LEN: usize = 32;
/// Counters per interface.
pub const IFACE_COUNTERS: usize = 16;
/// Most rings a fabric holds.
pub const MAX_RINGS: usize = 64;

/// Sizes chosen when the fabric is created.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Number of small (2 KiB) buffers.
    pub small_bufs: u32,
    /// Number of large (64 KiB + headroom) buffers.
    pub large_bufs: u32,
    /// Slots per ring (a power of two).
    pub ring_size: u32,
    /// Interfaces (and so driverd processes) in this instance.
    pub n_ifaces: u32,
    /// Bytes of arena per layer.
    pub arena_bytes: u32,
    /// Bytes of tcpd's arena (its connection blocks and queue entries
    /// need far more than the other layers' state).
    pub tcpd_arena_bytes: u32,
    /// Bytes of filterd's arena (rule sets, rule counters and the
    /// connection-tracking table). A multiple of 64: sockd's follows.
    pub filterd_arena_bytes: u32,
    /// Bytes of sockd's arena: its socket table, a row per socket
    /// ([`crate::socktable::bytes_for`]).
    pub sockd_arena_bytes: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            small_bufs: 4096,
            large_bufs: 1024,
            ring_size: 1024,
            n_ifaces: 1,
            arena_bytes: 2 << 20,
            tcpd_arena_bytes: 10 << 20,
            filterd_arena_bytes: 8 << 20,
            sockd_arena_bytes: crate::socktable::bytes_for(131_072) as u32,
        }
    }
}

/// The region's first bytes.
#[repr(C)]
pub struct Header {
    /// [`MAGIC`], stored last when the region is created.
    pub magic: AtomicU64,
    pub version: u32,
    pub n_rings: u32,
    pub params: Params,
    pub total_size: u64,
    pub ctl_off: u64,
    pub iface_off: u64,
    pub bufhdr_off: u64,
    pub ringdesc_off: u64,
    pub arena_off: u64,
    pub small_off: u64,
    pub large_off: u64,
    pub launch_off: u64,
    pub pool_off: u64,
}

/// What the launcher alone writes of a layer's control: on the region's
/// read-only pages (see the module's description).
#[repr(C, align(64))]
pub struct LaunchCtl {
    /// Quarantine entries in use `<< 32 |` (watched input length + 1, 0:
    /// none). Zero, the usual case, lets [`crate::Fabric::take_input`]
    /// skip every check.
    pub quarantine_ctl: AtomicU64,
    /// Inputs quarantined for this layer, ever.
    pub quarantined: AtomicU64,
    /// Unix time (ms) of the current instance's start.
    pub started_ms: AtomicU64,
    /// Restarts by the launcher.
    pub restarts: AtomicU32,
    pub _pad: u32,
    /// Inputs quarantined for this layer ([`crate::quarantine`]); the
    /// first `quarantine_ctl >> 32` are in use, filled round-robin.
    pub quarantine: [QuarantineSlot; QUARANTINE_SLOTS],
    /// Flushes asked of the layer (ipd: its neighbour cache); it answers
    /// in [`LayerCtl::flush_done`].
    pub flush_req: AtomicU64,
    /// What the flush asked in `flush_req` covers (ipd: one neighbour's
    /// IPv4 address, or 0 for all); written before `flush_req` is bumped.
    pub flush_what: AtomicU64,
    /// Bumped to ask the running instance to stop at an event boundary,
    /// holding nothing its successor could not find, so that another
    /// binary takes over (`strata upgrade`, [`crate::serve::Loop`]).
    pub upgrade_req: AtomicU64,
}

/// The packet pool's shared state: written by every layer.
#[repr(C, align(64))]
pub struct PoolCtl {
    /// Free-list heads, one per size class: top index, count, lock bit
    /// and tag in one word ([`crate::freelist`]).
    pub free_head: [AtomicU64; 2],
    /// Frees and accesses with a stale or bad handle, caught and refused.
    pub stale_refused: AtomicU64,
    /// Frees of a buffer whose count was already zero, caught and refused.
    pub double_free: AtomicU64,
}

/// Where a layer that may stand aside ([`LayerCtl::aside`]) is.
pub mod aside {
    /// In the path: it takes its input rings.
    pub const IN: u32 = 0;
    /// Aside: each neighbour takes the other's ring into it.
    pub const ASIDE: u32 = 1;
    /// Coming back: the neighbours stop taking its rings and say so in
    /// [`super::LayerCtl::aside_acks`]; then it is in again.
    pub const RETURNING: u32 = 2;
}

/// Lifecycle state of a layer, as the launcher records it.
pub mod state {
    /// Slot unused.
    pub const ABSENT: u32 = 0;
    /// Process spawned, not yet serving.
    pub const STARTING: u32 = 1;
    /// Serving.
    pub const RUNNING: u32 = 2;
    /// Died; waiting for a restart.
    pub const DEAD: u32 = 3;
    /// Stopped on purpose.
    pub const STOPPED: u32 = 4;

    /// Human name of a state.
    pub fn name(s: u32) -> &'static str {
        match s {
            ABSENT => "absent",
            STARTING => "starting",
            RUNNING => "running",
            DEAD => "dead",
            STOPPED => "stopped",
            _ => "?",
        }
    }
}

/// Per-layer control block.
#[repr(C, align(64))]
pub struct LayerCtl {
    /// Bumped by the layer on every loop turn; a stalled value means hung.
    pub heartbeat: AtomicU64,
    /// The input the layer took last (`gen << 32 | buf`, 0: none), so
    /// that the launcher can tell which input a dead layer was handling
    /// ([`crate::quarantine`]). On this line because the layer writes it
    /// with every input, as it writes the heartbeat with every turn.
    pub input: AtomicU64,
    /// That input's data window as taken: `data_off << 32 | data_len`.
    pub input_span: AtomicU64,
    /// Where its IPv4 header starts in that window, plus one (0: none):
    /// hashes leave out the header's identification and checksum, which
    /// differ between copies of the same datagram.
    pub input_ip: AtomicU64,
    /// That input's hash, computed as it was taken, while the launcher
    /// watches for inputs of its length (0: not computed).
    pub input_hash: AtomicU64,
    /// [`crate::now_ns`] when the current instance declared itself
    /// serving (0: not yet): the launcher times restarts with it, to the
    /// nanosecond, without watching the state word closely.
    pub ready_ns: AtomicU64,
    /// The buffer this layer is moving off or onto a free list, plus one
    /// (0: none): set before the step that could strand it, cleared after
    /// ([`crate::freelist`] says why).
    pub pool_op: AtomicU64,
    /// Non-zero while the layer sleeps (or is about to): producers kick it.
    pub sleeping: AtomicU32,
    /// One of [`state`].
    pub state: AtomicU32,
    /// Current pid (0 when none).
    pub pid: AtomicU32,
    /// One of [`aside`]: whether the layer's neighbours pass its traffic
    /// to each other directly ([`crate::Fabric::step_aside`]).
    pub aside: AtomicU32,
    /// Buffers reclaimed from dead instances of this layer.
    pub reclaimed: AtomicU64,
    /// Wake-ups sent to this layer (eventfd writes).
    pub kicks: AtomicU64,
    /// Number of counters in use.
    pub n_counters: AtomicU32,
    /// Non-zero when the layer settles its own buffer references at
    /// restart ([`crate::Fabric::reconcile`]) and reclaim must leave them.
    pub self_reclaim: AtomicU32,
    /// While the layer returns from aside: the neighbours (one bit per
    /// layer id) that have stopped taking its input rings.
    pub aside_acks: AtomicU32,
    /// The format of what the layer keeps in its arena, as its running
    /// instance declared it ([`crate::service::ArenaFormat`]; 0: none
    /// yet). The launcher checks an upgrade's binary against it.
    pub arena_format: AtomicU32,
    /// The last of [`LaunchCtl::flush_req`] the layer carried out.
    pub flush_done: AtomicU64,
    /// The generation of the configuration region
    /// ([`crate::runtime::ConfigCtl`]) the layer runs with.
    pub config_gen: AtomicU64,
    pub counters: [AtomicU64; LAYER_COUNTERS],
    pub names: [[u8; COUNTER_NAME_LEN]; LAYER_COUNTERS],
    /// Copies of each quarantined input ([`LaunchCtl::quarantine`], by
    /// slot) dropped since it was quarantined.
    pub quarantine_hits: [AtomicU64; QUARANTINE_SLOTS],
    /// Copies of quarantined inputs the layer dropped.
    pub quarantine_drops: AtomicU64,
}

/// Quarantine entries per layer: a packet of death is rare, and the
/// oldest entry makes room for a new one.
pub const QUARANTINE_SLOTS: usize = 8;

/// One quarantined input, known by its length and hash.
#[repr(C)]
pub struct QuarantineSlot {
    /// [`crate::quarantine::input_hash`] of its bytes.
    pub hash: AtomicU64,
    /// Its length, or `u32::MAX` while the slot is being written.
    pub len: AtomicU32,
    pub _pad: u32,
}

/// Per-interface block: its name and L2 counters.
#[repr(C, align(64))]
pub struct IfaceBlock {
    pub name: [u8; 16],
    pub mac: [u8; 8],
    pub mtu: AtomicU32,
    /// Non-zero while the interface is down (`strata link set IF down`):
    /// netdevd drops what it would take in from it or send out on it.
    pub down: AtomicU32,
    pub counters: [AtomicU64; IFACE_COUNTERS],
}

/// Names of [`IfaceBlock::counters`], by index.
pub const IFACE_COUNTER_NAMES: [&str; IFACE_COUNTERS] = [
    "rx_packets",
    "rx_bytes",
    "tx_packets",
    "tx_bytes",
    "rx_drop_not_for_us",
    "rx_drop_runt",
    "rx_drop_oversize",
    "rx_drop_no_buffer",
    "tx_drop_qdisc",
    "tx_drop_device",
    "rx_multicast",
    "rx_broadcast",
    "qdisc_backlog",
    "tx_error",
    "rx_error",
    "drop_link_down",
];

/// Index of an interface counter by name (see [`IFACE_COUNTER_NAMES`]).
pub mod ifc {
    pub const RX_PACKETS: usize = 0;
    pub const RX_BYTES: usize = 1;
    pub const TX_PACKETS: usize = 2;
    pub const TX_BYTES: usize = 3;
    pub const RX_DROP_NOT_FOR_US: usize = 4;
    pub const RX_DROP_RUNT: usize = 5;
    pub const RX_DROP_OVERSIZE: usize = 6;
    pub const RX_DROP_NO_BUFFER: usize = 7;
    pub const TX_DROP_QDISC: usize = 8;
    pub const TX_DROP_DEVICE: usize = 9;
    pub const RX_MULTICAST: usize = 10;
    pub const RX_BROADCAST: usize = 11;
    pub const QDISC_BACKLOG: usize = 12;
    pub const TX_ERROR: usize = 13;
    pub const RX_ERROR: usize = 14;
    pub const DROP_LINK_DOWN: usize = 15;
}

/// Owner value of a buffer on a free list.
pub const OWNER_FREE: u32 = 0xffff;
/// Flag: the buffer is state its owner keeps across a restart.
pub const FLAG_PINNED: u32 = 1;
/// End of a free list.
pub const NIL: u32 = u32::MAX;

/// Per-buffer header.
#[repr(C, align(32))]
pub struct BufHdr {
    /// Layer id that last took the buffer, or [`OWNER_FREE`] (for
    /// display; reclaim goes by `holders`).
    pub owner: AtomicU32,
    /// Bumped at every free: handles made before are stale.
    pub gen: AtomicU32,
    /// Free-list link.
    pub next: AtomicU32,
    /// [`FLAG_PINNED`], ...
    pub flags: AtomicU32,
    /// References by layer: four bits per layer id (see [`holder_one`]).
    /// Their sum is the reference count; zero when free. One word, so a
    /// reference changes hands (a pop) in one atomic step and reclaim
    /// can release exactly what a dead layer held.
    pub holders: AtomicU64,
    pub _pad: u64,
}

/// Most references one layer can hold on one buffer.
pub const HOLDER_MAX: u64 = 15;

/// One reference held by layer `l`, in [`BufHdr::holders`] units.
pub const fn holder_one(l: u8) -> u64 {
    1 << (4 * (l as u32 & 15))
}

/// References layer `l` holds, read from a [`BufHdr::holders`] value.
pub const fn holder_count(h: u64, l: u8) -> u64 {
    (h >> (4 * (l as u32 & 15))) & HOLDER_MAX
}

/// A ring's indices and endpoints; its slots follow it.
#[repr(C, align(64))]
pub struct RingDesc {
    pub producer: u32,
    pub consumer: u32,
    pub size: u32,
    /// The layer that takes from the ring now: `consumer`, or while it
    /// stands aside the neighbour on its other side. Producers wake it,
    /// and reclaim after a death goes by it.
    pub serving: AtomicU32,
    /// Byte offset of the slots from the start of the region.
    pub slots_off: u64,
    pub _pad1: [u64; 5],
    /// Consumer index (next slot to read); written by the consumer only.
    pub head: AtomicU32,
    /// Slots before this index have had their buffers' references moved
    /// to the consumer (it runs ahead of `head` within a pop); written by
    /// the consumer only, read by reclaim.
    pub claimed: AtomicU32,
    pub _pad2: [u32; 14],
    /// Producer index (next slot to write); written by the producer only.
    pub tail: AtomicU32,
    pub _pad3: [u32; 15],
}

const _: () = assert!(std::mem::size_of::<RingDesc>() == 192);
const _: () = assert!(std::mem::size_of::<BufHdr>() == 32);

pub(crate) fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Where each part of the region lives.
#[derive(Clone, Copy, Debug)]
pub struct Offsets {
    /// The [`LaunchCtl`]s, after the header's page.
    pub launch: u64,
    /// The [`crate::capture::CaptureCtl`], in the launcher's pages too
    /// (layers only read it).
    pub capture_ctl: u64,
    /// The [`crate::runtime::ConfigCtl`], in the launcher's pages too.
    pub config: u64,
    /// The [`PoolCtl`]: the first byte layers write (a page boundary).
    pub pool: u64,
    pub ctl: u64,
    pub iface: u64,
    pub bufhdr: u64,
    pub ringdesc: u64,
    pub slots: u64,
    pub arena: u64,
    pub small: u64,
    pub large: u64,
    /// One capture ring per layer ([`crate::capture::CAPTURE_RING_BYTES`]).
    pub capture: u64,
    pub total: u64,
}

impl Offsets {
    /// Computes the layout for `p` with `n_rings` rings.
    pub fn compute(p: &Params, n_rings: u32) -> Offsets {
        let n_bufs = (p.small_bufs + p.large_bufs) as u64;
        let launch = align(std::mem::size_of::<Header>() as u64, 4096);
        let capture_ctl = align(
            launch + (MAX_LAYERS * std::mem::size_of::<LaunchCtl>()) as u64,
            64,
        );
        let config = align(
            capture_ctl + std::mem::size_of::<crate::capture::CaptureCtl>() as u64,
            64,
        );
        let pool = align(
            config + std::mem::size_of::<crate::runtime::ConfigCtl>() as u64,
            4096,
        );
        let ctl = align(pool + std::mem::size_of::<PoolCtl>() as u64, 64);
        let iface = align(
            ctl + (MAX_LAYERS * std::mem::size_of::<LayerCtl>()) as u64,
            64,
        );
        let bufhdr = align(
            iface + (MAX_IFACES * std::mem::size_of::<IfaceBlock>()) as u64,
            64,
        );
        let ringdesc = align(bufhdr + n_bufs * std::mem::size_of::<BufHdr>() as u64, 64);
        let slots = align(
            ringdesc + n_rings as u64 * std::mem::size_of::<RingDesc>() as u64,
            64,
        );
        let ring_bytes = p.ring_size as u64 * std::mem::size_of::<Handle>() as u64;
        let arena = align(slots + n_rings as u64 * ring_bytes, 4096);
        let small = align(
            arena
                + MAX_LAYERS as u64 * p.arena_bytes as u64
                + p.tcpd_arena_bytes as u64
                + p.filterd_arena_bytes as u64
                + p.sockd_arena_bytes as u64,
            4096,
        );
        let large = align(small + p.small_bufs as u64 * crate::SMALL_BUF as u64, 4096);
        let capture = align(large + p.large_bufs as u64 * crate::LARGE_BUF as u64, 4096);
        let total = capture + (MAX_LAYERS * crate::capture::CAPTURE_RING_BYTES) as u64;
        Offsets {
            launch,
            capture_ctl,
            config,
            pool,
            ctl,
            iface,
            bufhdr,
            ringdesc,
            slots,
            arena,
            small,
            large,
            capture,
            total,
        }
    }
}
