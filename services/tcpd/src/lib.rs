//! The protocol core of tcpd, strata's TCP layer, over IPv4 and IPv6
//! (dual-stack as Linux: an IPv6 socket bound to `::` takes IPv4 too,
//! its peers seen as IPv4-mapped addresses, unless IPV6_V6ONLY): the
//! RFC 9293 state machine with RFC 5961 protections, RFC 6528 ISNs and
//! SYN cookies, options (MSS, window scaling, timestamps with PAWS and
//! RTTM, SACK), retransmission per RFC 6298, fast retransmit with NewReno
//! (RFC 5681, 6582) or SACK-based recovery (RFC 6675), CUBIC (RFC 9438)
//! or NewReno congestion control behind one trait
//! ([`cc::CongestionControl`]), delayed ACKs, Nagle, zero-window probing,
//! keep-alive, and credit-based flow control with sockd.
//!
//! The core is pure (docs/DESIGN.md, "Code shape"): no I/O, no clock, no
//! randomness, no globals. The process shell pops handles from its rings
//! and calls [`TcpCore::from_ip`] (segments, ICMP and ICMPv6 errors from
//! ipd), [`TcpCore::from_sock`] (control requests and stream payload from
//! sockd) and, when [`TcpCore::next_deadline`] has passed,
//! [`TcpCore::poll`] (timers), always with the current monotonic time;
//! then it pushes what the core left in [`Outputs`].
//!
//! Ownership: every handle given to the core ends in exactly one place —
//! a connection queue, `out.to_ip`, `out.to_sock`, or freed back to the
//! pool with a counter saying why. A segment sent for the first time may
//! share its buffer with the send queue (its headers are written into the
//! headroom in front of sockd's payload); received payload goes up to
//! sockd in the buffer it arrived in, the headers pulled off.
//!
//! State that must survive a restart (connection blocks, queues of
//! handles, timer deadlines) lives in the [`Storage`] slices the shell
//! gives the core, see [`block`]; [`TcpCore::restore`] rebuilds the
//! lookup tables and timers from it.
//!
//! No heap allocation per segment: tables are sized at start; segments,
//! ACKs and notifications use pool buffers.
//!
//! Addresses are 128-bit everywhere (tuples, listeners, binds, hashes),
//! IPv4 ones mapped as on the socket path; which family a connection
//! speaks follows from its peer's address (the private `ip` module holds
//! what differs: parsing either header, writing either, one MSS per
//! IPv6 packet).

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod block;
pub mod cc;
pub mod config;
pub mod isn;
pub mod sack;
pub mod seq;
pub mod stats;

mod control;
mod input;
mod ip;
mod output;
mod queue;
mod timer;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use strata_ipc::addrs::unmapped;
use strata_ipc::l4::L4Ctl;
use strata_ipc::{handle::flags, BufError, Buffers, Handle};
use strata_proto::ipv4::protocol;
use strata_proto::ipv6::next_header;

pub use block::{ConnBlock, SegEntry, Slot, State, Storage, StorageHeader, NIL};
pub use cc::{CcAlgo, CongestionControl};
pub use config::{ConfigError, IfaceAddrs, Route6, RouteInfo, TcpConfig, DEFAULT_EPHEMERAL};
pub use stats::{Stat, Stats};

use block::{cf, pend};
use config::Net;
use queue::Slab;

/// TTL of the datagrams tcpd sends (Linux `ip_default_ttl`), and hop
/// limit of its IPv6 packets (Linux `hop_limit`).
pub const DEFAULT_TTL: u8 = 64;
/// Default MSS when the peer announces none, over IPv4 (RFC 9293 §3.7.1:
/// 576 − 40).
pub const DEFAULT_MSS: u32 = 536;
/// Default MSS when the peer announces none, over IPv6 (RFC 9293 §3.7.1,
/// RFC 8200 §8.3: the minimum MTU 1280 − 60).
pub const DEFAULT_MSS6: u32 = 1220;
/// Largest listen backlog (Linux `somaxconn`).
pub const MAX_BACKLOG: u32 = 4096;

/// What the core produced. The shell creates it once with
/// [`Outputs::with_capacity`], drains both vectors after each call and
/// clears them, so no call allocates in steady state.
#[derive(Debug, Default)]
pub struct Outputs {
    /// For ipd: complete IPv4 datagrams or IPv6 packets (data window =
    /// the packet, `l3_off` 0, `l4_off` 20 or 40, `l4proto` TCP, the
    /// family's ethertype, the TCP checksum final or partial). The shell
    /// may drop these when ipd's ring is full ([`TcpCore::ring_full`]):
    /// TCP retransmits.
    pub to_ip: Vec<Handle>,
    /// For sockd: in-order stream payload (data window = payload, `sock`
    /// set, `l4proto` TCP) and control messages (`flags` has
    /// [`CTRL`](strata_ipc::handle::flags::CTRL)). The shell must never
    /// drop these (they are bounded by the credits): it keeps what sockd's
    /// ring cannot take and pushes it first next time.
    pub to_sock: Vec<Handle>,
    /// Buffers the core took into a connection queue in this call: the
    /// shell marks them pinned in the fabric (`Fabric::set_pinned`), so
    /// that they survive a restart of tcpd with the queue that names them.
    /// (Buffers leaving a queue to be freed need nothing: a free clears
    /// the flag.)
    pub pin: Vec<Handle>,
    /// Queued buffers handed on whole (payload to sockd): the shell clears
    /// their pinned flag before pushing `to_sock`.
    pub unpin: Vec<Handle>,
}

impl Outputs {
    /// Empty outputs with room for `n` handles in each vector.
    pub fn with_capacity(n: usize) -> Self {
        Outputs {
            to_ip: Vec::with_capacity(n),
            to_sock: Vec::with_capacity(n),
            pin: Vec::with_capacity(n),
            unpin: Vec::with_capacity(n),
        }
    }

    /// Empties both vectors, keeping their capacity.
    pub fn clear(&mut self) {
        self.to_ip.clear();
        self.to_sock.clear();
        self.pin.clear();
        self.unpin.clear();
    }
}

/// One connection as `strata ss` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Connection id (as in ACCEPTABLE).
    pub id: u64,
    /// sockd's socket id (0: none, e.g. orphaned or in the accept queue).
    pub sock: u32,
    /// State.
    pub state: State,
    /// Local address of either family, IPv4 mapped (`::ffff:0.0.0.0`: any
    /// IPv4 address; `::`: any), and port.
    pub local: (u128, u16),
    /// Peer address of either family, IPv4 mapped, and port (zeros for
    /// listeners and bound sockets).
    pub remote: (u128, u16),
    /// Bytes in the send queue (unacknowledged and unsent).
    pub send_q: u32,
    /// Bytes received in order, not yet handed to sockd (listeners: the
    /// accept queue length).
    pub recv_q: u32,
    /// Bytes received out of order.
    pub ooo_q: u32,
    /// Congestion window, bytes.
    pub cwnd: u32,
    /// Slow-start threshold, bytes.
    pub ssthresh: u32,
    /// Smoothed RTT, µs.
    pub srtt_us: u32,
    /// Current retransmission timeout (with back-off), µs.
    pub rto_us: u64,
    /// MSS in use for sending.
    pub mss: u32,
    /// Peer's window, bytes.
    pub snd_wnd: u32,
    /// Receive buffer (auto-tuned), bytes.
    pub rcvbuf: u32,
    /// Window last advertised, bytes.
    pub rcv_wnd: u32,
    /// Congestion control name.
    pub cc: &'static str,
}

/// What `strata ss` shows of block `i`; `None` for a free block (or one
/// caught holding garbage).
fn conn_info(i: usize, c: &ConnBlock, cfg: &TcpConfig) -> Option<ConnInfo> {
    let state = match c.slot() {
        Slot::Live(s) => s,
        Slot::Free | Slot::Garbage(_) => return None,
    };
    Some(ConnInfo {
        id: c.id(i),
        sock: c.sock,
        state,
        local: (c.local_addr, c.local_port as u16),
        remote: (c.remote_addr, c.remote_port as u16),
        send_q: c.snd_q.bytes,
        recv_q: if state == State::Listen {
            c.acc_q
        } else {
            c.rcv_q.bytes
        },
        ooo_q: c.ooo_q.bytes,
        cwnd: c.cwnd,
        ssthresh: c.ssthresh,
        srtt_us: c.srtt_us,
        rto_us: output::rto_ns(c, cfg) / 1000,
        mss: c.snd_mss,
        snd_wnd: c.snd_wnd,
        rcvbuf: c.rcvbuf,
        rcv_wnd: TcpCore::rcv_wnd(c),
        cc: cc::algo(c).name(),
    })
}

/// The connections in a tcpd arena, read from outside tcpd (the
/// launcher's `strata ss`) without writing to it. Blocks are copied one
/// at a time while tcpd may be changing them: a listing may mix moments,
/// and a block caught mid-update may show odd numbers, nothing worse (every
/// bit pattern is a valid block). Empty when the arena holds no layout of
/// this version.
///
/// # Safety
/// `p..p+len` must be mapped and readable for the duration of the call.
#[allow(unsafe_code)]
pub unsafe fn snapshot(p: *const u8, len: usize) -> Vec<ConnInfo> {
    if p.is_null() || len < 64 || !(p as usize).is_multiple_of(64) {
        return Vec::new();
    }
    // SAFETY: the caller vouches that `p..p+len` is mapped and readable;
    // the header is its first 64 bytes (`len` >= 64), at a 64-byte aligned
    // address (checked), and plain integers: any bytes are a value.
    let hdr = unsafe { std::ptr::read_volatile(p.cast::<StorageHeader>()) };
    if hdr.magic != block::STORAGE_MAGIC || hdr.version != block::STORAGE_VERSION {
        return Vec::new();
    }
    let n = hdr.n_conns as usize;
    if n > u32::MAX as usize / 2 || Storage::bytes_for(n, 0) > len {
        return Vec::new();
    }
    // Only blocks below the journal's high-water mark can be in use.
    let j_off = Storage::journal_off(n);
    let read = if j_off + std::mem::size_of::<block::Journal>() <= len {
        // SAFETY: the journal lies inside `p..p+len` (checked), at a
        // multiple of 64 from the 64-aligned `p`, and is plain integers.
        let jn = unsafe { std::ptr::read_volatile(p.wrapping_add(j_off).cast::<block::Journal>()) };
        jn.blocks_to_read(n)
    } else {
        n
    };
    let cfg = TcpConfig::default();
    let base = p.wrapping_add(64).cast::<ConnBlock>();
    (0..read)
        .filter_map(|i| {
            let b = base.wrapping_add(i);
            // A free block is skipped after reading its state alone (most
            // of a large arena is free).
            // SAFETY: block `i` < `n` lies inside `p..p+len` (the blocks
            // end before `bytes_for(n, 0)` <= `len`, checked), aligned (64
            // plus a multiple of its size, itself a multiple of 8), and a
            // ConnBlock is plain integers: any bytes, even a block caught
            // mid-update, are a value; its `state` is a u32 inside it.
            let state = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*b).state)) };
            if state == block::st::FREE {
                return None;
            }
            // SAFETY: as for its state, the whole block.
            let c = unsafe { std::ptr::read_volatile(b) };
            conn_info(i, &c, &cfg)
        })
        .collect()
}

/// The lookup key of a connection: its addresses (IPv4 mapped) and
/// ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tuple {
    la: u128,
    lp: u16,
    ra: u128,
    rp: u16,
}

impl Tuple {
    fn of(c: &ConnBlock) -> Tuple {
        Tuple {
            la: c.local_addr,
            lp: c.local_port as u16,
            ra: c.remote_addr,
            rp: c.remote_port as u16,
        }
    }
}

/// The TCP core: all of tcpd's protocol state.
pub struct TcpCore<'a> {
    cfg: TcpConfig,
    net: Net,
    conns: &'a mut [ConnBlock],
    slab: Slab<'a>,
    stats: Stats,
    /// Blocks free, as a stack (rebuilt at start).
    free_conns: Vec<u32>,
    max_conns: usize,
    by_tuple: HashMap<Tuple, u32>,
    /// Listening blocks by local address (IPv4 mapped; `::` holds the
    /// dual-stack and IPV6_V6ONLY ones alike) and port: one, or a
    /// SO_REUSEPORT group in block order.
    listeners: HashMap<(u128, u16), Vec<u32>>,
    by_sock: HashMap<u32, u32>,
    /// Blocks holding each local port.
    port_use: HashMap<u16, u32>,
    /// Deadlines: (time, block); lazily invalidated, see `sched`.
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    /// The deadline each block has in `timers` (u64::MAX: none).
    sched: Vec<u64>,
    /// Blocks with notifications or a segment that could not be sent
    /// (pool empty), each once ([`TcpCore::in_retry`]).
    retry: VecDeque<u32>,
    /// Whether each block is in `retry`: a look-up in the list itself
    /// cost every event O(list), and after a restart with a hundred
    /// thousand connections short of buffers the list was that long.
    in_retry: Vec<bool>,
    /// A segment found no buffer since the last event ended ([`xmit`]
    /// sets it; `end` puts the block on `retry` and clears it): an ACK,
    /// data, a retransmission, a FIN or a SYN-ACK, which nothing else
    /// would bring back (a bare FIN or an ACK runs no timer).
    ///
    /// [`xmit`]: TcpCore::xmit
    xmit_missed: bool,
    /// Blocks with an event in progress, innermost last (a listener's
    /// event runs its children's).
    events: Vec<u32>,
    /// Time of the call being served (ns).
    now: u64,
    rng: u32,
    ident: u16,
    /// Payload bytes in all queues.
    queued_bytes: u64,
    /// Out-of-order segments across all connections (kept up to date by
    /// `commit_block`, recounted by restore).
    ooo_segs: u64,
    /// The pool's small and large buffers are nearly gone (the shell
    /// says, each batch): out-of-order data in that class is not kept.
    pool_short: [bool; 2],
    /// Challenge ACK rate limit: (second, count).
    challenge: (u64, u32),
}

impl<'a> TcpCore<'a> {
    /// Whether the pool's small and large buffers are nearly gone, as the
    /// shell sees it: while a class is, out-of-order segments in it are
    /// dropped rather than kept (the peer sends them again), leaving the
    /// last buffers to in-order data and to every other layer.
    pub fn set_pool_short(&mut self, small: bool, large: bool) {
        self.pool_short = [small, large];
    }

    /// Takes the IPv6 addresses ipd made from advertised prefixes (SLAAC:
    /// interface index, address, prefix length), which no configuration
    /// names: new connections may be bound to them and choose them as
    /// sources. True when they changed.
    pub fn set_autoconf6(&mut self, addrs: &[(u8, std::net::Ipv6Addr, u8)]) -> bool {
        self.net.set_autoconf(addrs)
    }

    /// Takes the interfaces' addresses (both families), MTUs and the
    /// routes of `cfg` at run time (`strata addr`, `route`, `link set
    /// mtu`): new connections choose sources and MSS by them. Established connections keep their
    /// addresses, as on Linux. On error the old ones stay in force.
    pub fn set_addresses(&mut self, cfg: &TcpConfig) -> Result<(), ConfigError> {
        self.net = Net::new(cfg)?;
        self.cfg.ifaces.clone_from(&cfg.ifaces);
        self.cfg.routes.clone_from(&cfg.routes);
        self.cfg.routes6.clone_from(&cfg.routes6);
        Ok(())
    }

    /// A core for `cfg` over `storage`, which it clears. Allocates every
    /// table.
    pub fn new(cfg: TcpConfig, storage: Storage<'a>) -> Result<Self, ConfigError> {
        Self::laid_out(cfg, storage, false)
    }

    /// As [`TcpCore::new`] over storage that was never written (all
    /// zero, as a new arena is): its connection blocks are left
    /// untouched, since a zero block is a free one of generation 0 as a
    /// cleared one is, and a block taken for a connection is laid out
    /// whole. Memory is then touched only as connections use it.
    pub fn new_on_zeroed(cfg: TcpConfig, storage: Storage<'a>) -> Result<Self, ConfigError> {
        Self::laid_out(cfg, storage, true)
    }

    fn laid_out(cfg: TcpConfig, storage: Storage<'a>, zeroed: bool) -> Result<Self, ConfigError> {
        let Storage {
            conns,
            segs,
            journal,
            undo,
        } = storage;
        if !zeroed {
            for c in conns.iter_mut() {
                *c = ConnBlock::default();
            }
        }
        let mut slab = Slab::new(segs, journal, undo);
        // Every block is free.
        slab.set_blocks_used(0);
        Self::build(cfg, conns, slab, 0)
    }

    /// The core over `conns` and `slab`; which of the first `scanned`
    /// blocks are free is read from them, and every one after is free.
    fn build(
        cfg: TcpConfig,
        conns: &'a mut [ConnBlock],
        slab: Slab<'a>,
        scanned: usize,
    ) -> Result<Self, ConfigError> {
        let (lo, hi) = cfg.ephemeral_ports;
        if lo == 0 || lo > hi {
            return Err(ConfigError::BadEphemeralRange(lo, hi));
        }
        if cfg.socket_rx_bytes == 0 || cfg.socket_tx_bytes == 0 {
            return Err(ConfigError::BadBufferSize);
        }
        let max_conns = cfg.max_conns.min(conns.len());
        if max_conns == 0 {
            return Err(ConfigError::NoConns);
        }
        if slab.e.is_empty() {
            return Err(ConfigError::NoQueueEntries);
        }
        let net = Net::new(&cfg)?;
        let n = conns.len();
        let free_conns = (0..n as u32)
            .rev()
            .filter(|&i| i as usize >= scanned || !conns[i as usize].in_use())
            .collect();
        let rng = cfg.seed | 1;
        Ok(TcpCore {
            net,
            slab,
            stats: Stats::default(),
            free_conns,
            max_conns,
            by_tuple: HashMap::with_capacity(n),
            listeners: HashMap::with_capacity(64),
            by_sock: HashMap::with_capacity(n),
            port_use: HashMap::with_capacity(n.min(65536)),
            timers: BinaryHeap::with_capacity(n * 2),
            sched: vec![u64::MAX; n],
            retry: VecDeque::with_capacity(64),
            in_retry: vec![false; n],
            xmit_missed: false,
            events: Vec::with_capacity(4),
            now: 0,
            rng,
            ident: (rng >> 16) as u16,
            queued_bytes: 0,
            ooo_segs: 0,
            pool_short: [false; 2],
            challenge: (0, 0),
            cfg,
            conns,
        })
    }

    /// A core for `cfg` over `storage` left by a previous instance, which
    /// may have died at any point: the event it was running is finished or
    /// undone from the journal (see [`block`]), and then every
    /// connection, queue and deadline carries on. Queue entries no block
    /// links (the interrupted event's) are freed with their buffers;
    /// what each connection delivered to sockd unconfirmed is delivered
    /// again (the dead core's last outputs may never have left it). Only
    /// a block found inconsistent is reset: its peer
    /// gets a RST, sockd a SOCK_ERROR (ECONNRESET) and CLOSED, its
    /// buffers go back to `pool`. Returns the core and how many
    /// connections it kept.
    pub fn restore<B: Buffers>(
        cfg: TcpConfig,
        storage: Storage<'a>,
        now_ns: u64,
        pool: &mut B,
        out: &mut Outputs,
    ) -> Result<(Self, usize), ConfigError> {
        timer::restore(cfg, storage, now_ns, pool, out)
    }

    /// Gives the storage back (the core's tables and timers are dropped;
    /// the blocks and entries stay as they are, for
    /// [`restore`](Self::restore) — what a restart does, used by tests).
    pub fn into_storage(self) -> Storage<'a> {
        let (segs, journal, undo) = self.slab.into_parts();
        Storage {
            conns: self.conns,
            segs,
            journal,
            undo,
        }
    }

    /// Takes a handle from ipd: a TCP segment (`l4proto` TCP), an ICMP
    /// error quoting one (`l4proto` ICMP) or an ICMPv6 error quoting one
    /// (`l4proto` ICMPv6); data window = the whole IPv4 datagram or IPv6
    /// packet, `l4_off` at the TCP or ICMPv6 header. The core owns `h`
    /// from here.
    pub fn from_ip<B: Buffers>(&mut self, now_ns: u64, pool: &mut B, h: Handle, out: &mut Outputs) {
        self.now = now_ns;
        match h.l4proto {
            protocol::TCP => self.tcp_input(pool, h, out),
            protocol::ICMP => self.icmp_input(pool, h, out),
            next_header::ICMPV6 => self.icmp6_input(pool, h, out),
            _ => self.drop(pool, &h, Stat::WrongProtocol),
        }
    }

    /// Takes a handle from sockd: a control request (`flags` has
    /// [`CTRL`](strata_ipc::handle::flags::CTRL)), or stream payload for
    /// socket `h.sock` (data window = the bytes, appended to the send
    /// queue). The core owns `h` from here.
    pub fn from_sock<B: Buffers>(
        &mut self,
        now_ns: u64,
        pool: &mut B,
        h: Handle,
        out: &mut Outputs,
    ) {
        self.now = now_ns;
        if h.flags & flags::CTRL != 0 {
            self.control(pool, h, out)
        } else {
            self.sock_data(pool, h, out)
        }
    }

    /// Runs every timer due at `now_ns` (retransmissions, delayed ACKs,
    /// probes, TIME-WAIT...) and retries notifications that found the
    /// pool empty; returns the next deadline.
    pub fn poll<B: Buffers>(
        &mut self,
        now_ns: u64,
        pool: &mut B,
        out: &mut Outputs,
    ) -> Option<u64> {
        self.now = now_ns;
        self.run_timers(pool, out);
        self.next_deadline()
    }

    /// The earliest time [`poll`](Self::poll) has work (possibly a little
    /// early: deadlines that moved later are found out when they come).
    pub fn next_deadline(&self) -> Option<u64> {
        let t = self.timers.peek().map(|Reverse((t, _))| *t);
        if self.retry.is_empty() {
            t
        } else {
            let r = self.now + 1_000_000;
            Some(t.map_or(r, |t| t.min(r)))
        }
    }

    /// Frees a segment the shell could not push because ipd's ring was
    /// full, and counts it (the connection retransmits it).
    pub fn ring_full<B: Buffers>(&mut self, pool: &mut B, h: &Handle) {
        self.drop(pool, h, Stat::IpRingFull);
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every connection, listener and bound socket, for `strata ss`.
    pub fn connections(&self) -> impl Iterator<Item = ConnInfo> + '_ {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| conn_info(i, c, &self.cfg))
    }

    /// The connection of socket `sock`, if any.
    pub fn connection_of(&self, sock: u32) -> Option<ConnInfo> {
        let &i = self.by_sock.get(&sock)?;
        let id = self.conns[i as usize].id(i as usize);
        self.connections().find(|c| c.id == id)
    }

    /// Blocks in use.
    pub fn conns_in_use(&self) -> usize {
        self.conns.len() - self.free_conns.len()
    }

    /// Queue entries in use.
    pub fn entries_in_use(&self) -> usize {
        self.slab.e.len() - self.slab.free_count()
    }

    /// The buffer of every queue entry: one pool reference each. A
    /// restarted shell keeps exactly these and drops the rest its dead
    /// instance held (`Fabric::reconcile`).
    pub fn held_buffers(&self) -> impl Iterator<Item = &Handle> + '_ {
        self.slab.e.iter().filter(|x| x.owner != 0).map(|x| &x.h)
    }

    // ---- shared helpers ----

    /// Starts an event on block `idx` (journaled, see [`block`]) and
    /// returns a working copy; the block itself stays as it is until
    /// [`commit`](Self::commit).
    fn begin(&mut self, idx: usize) -> ConnBlock {
        self.slab.begin(idx);
        self.events.push(idx as u32);
        self.conns[idx]
    }

    /// Ends the event on block `idx`: `c` replaces the block, then what
    /// the event unlinked from its queues is freed.
    fn commit<B: Buffers>(&mut self, pool: &mut B, idx: usize, c: ConnBlock) {
        self.commit_block(idx, c);
        self.slab.finish(pool);
    }

    /// [`commit`](Self::commit) for an event that unlinked no entry.
    fn commit_block(&mut self, idx: usize, c: ConnBlock) {
        debug_assert_eq!(self.events.last(), Some(&(idx as u32)), "events nest");
        self.events.pop();
        let outer = self.events.last().map(|&o| o as usize);
        let before = u64::from(self.conns[idx].ooo_q.count);
        self.slab.commit(&mut self.conns[idx], &c, outer);
        self.ooo_segs = (self.ooo_segs + u64::from(c.ooo_q.count)).saturating_sub(before);
    }

    /// Finishes an event on block `idx`: sends what can be sent, tells
    /// sockd what it must hear, frees a finished connection, writes the
    /// copy back and schedules its timers.
    fn end<B: Buffers>(&mut self, pool: &mut B, idx: usize, mut c: ConnBlock, out: &mut Outputs) {
        if !c.has(cf::DEAD) {
            self.output(pool, idx, &mut c, out);
        }
        self.sock_sync(pool, idx, &mut c, out);
        if c.has(cf::ACK_NOW) && !c.has(cf::DEAD) {
            // A window update found by delivering to sockd.
            self.output(pool, idx, &mut c, out);
        }
        if c.has(cf::DEAD) && c.sock == 0 && c.pend & pend::ACCEPTABLE == 0 {
            self.release(idx, &mut c);
        } else {
            self.arm_keepalive(&mut c);
        }
        self.commit(pool, idx, c);
        self.arm(idx);
        let missed = std::mem::take(&mut self.xmit_missed) && !c.has(cf::DEAD);
        if c.in_use() && (c.pend != 0 || missed) {
            self.retry_later(idx);
        }
    }

    /// Block `idx` has notifications or an ACK the pool had no buffer
    /// for: they are tried again at the next poll.
    fn retry_later(&mut self, idx: usize) {
        if let Some(m) = self.in_retry.get_mut(idx).filter(|m| !**m) {
            *m = true;
            self.retry.push_back(idx as u32);
        }
    }

    /// How many blocks, from the first, a scan of the table must look
    /// at: none past the last one ever taken is in use (an arena is sized
    /// for many more connections than are usually open, and its untouched
    /// pages would each cost a fault).
    pub(crate) fn blocks_taken(&self) -> usize {
        self.slab.blocks_to_read(self.conns.len())
    }

    /// A free block, initialised as an unbound socket (state CLOSED).
    fn alloc_block(&mut self) -> Option<usize> {
        if self.conns_in_use() >= self.max_conns {
            return None;
        }
        let i = self.free_conns.pop()? as usize;
        self.slab.block_taken(i);
        let gen = self.conns[i].gen;
        let mut c = ConnBlock {
            gen,
            index: i as u32,
            parent: NIL,
            snd_cur: NIL,
            cc_algo: self.cfg.congestion as u32,
            rto_us: (self.cfg.rto_initial_ms * 1000) as u32,
            ..ConnBlock::default()
        };
        c.set_state(State::Closed);
        self.conns[i] = c;
        Some(i)
    }

    /// Forgets block `idx` (whose working copy is `c`): gives up its
    /// queue entries (their buffers are freed once the event commits),
    /// removes it from every table, settles its listener's counts, bumps
    /// its generation.
    fn release(&mut self, idx: usize, c: &mut ConnBlock) {
        let state = c.state();
        for which in 0..4 {
            let mut l = match which {
                0 => c.snd_q,
                1 => c.rcv_q,
                2 => c.dlv_q,
                _ => c.ooo_q,
            };
            while let Some(e) = self.slab.pop_front(&mut l) {
                let x = *self.slab.get(e);
                self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(x.len()));
                self.slab.discard(e);
            }
        }
        if c.remote_addr != 0 {
            let t = Tuple::of(c);
            if self.by_tuple.get(&t) == Some(&(idx as u32)) {
                self.by_tuple.remove(&t);
            }
        }
        if state == State::Listen {
            self.remove_listener((c.local_addr, c.local_port as u16), idx);
        }
        if c.sock != 0 && self.by_sock.get(&c.sock) == Some(&(idx as u32)) {
            self.by_sock.remove(&c.sock);
        }
        if c.has(cf::BOUND) {
            let p = c.local_port as u16;
            if let Some(n) = self.port_use.get_mut(&p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.port_use.remove(&p);
                }
            }
        }
        if let Some(l) = self.parent_of(c) {
            let lb = &mut self.conns[l];
            if state == State::SynReceived {
                lb.syn_q = lb.syn_q.saturating_sub(1);
            }
            if c.has(cf::IN_ACCEPTQ) {
                lb.acc_q = lb.acc_q.saturating_sub(1);
            }
        }
        if state.has_peer() {
            self.stats.inc(Stat::ConnClosed);
        }
        *c = ConnBlock {
            gen: c.gen.wrapping_add(1),
            ..ConnBlock::default()
        };
        self.free_conns.push(idx as u32);
        if let Some(s) = self.sched.get_mut(idx) {
            *s = u64::MAX;
        }
    }

    /// Adds listening block `i` to the listeners of `k`, in block order
    /// (the same order after a restart, so a tuple picks the same one).
    fn add_listener(&mut self, k: (u128, u16), i: usize) {
        let group = self.listeners.entry(k).or_default();
        if let Err(at) = group.binary_search(&(i as u32)) {
            group.insert(at, i as u32);
        }
    }

    /// Removes block `i` from the listeners of `k`.
    fn remove_listener(&mut self, k: (u128, u16), i: usize) {
        if let Some(group) = self.listeners.get_mut(&k) {
            group.retain(|&x| x != i as u32);
            if group.is_empty() {
                self.listeners.remove(&k);
            }
        }
    }

    /// The listener a segment for `t` goes to, as Linux scores them: one
    /// bound to its address; else, for IPv4, one bound to any IPv4
    /// address (`0.0.0.0`), then one bound to `::` without IPV6_V6ONLY
    /// (dual-stack, RFC 3493 §3.7); for IPv6 one bound to `::`. Within a
    /// SO_REUSEPORT group, one chosen by the peer's address and port, so
    /// that every segment of a handshake reaches the same one (as Linux's
    /// reuseport hash). At most three lookups, no allocation.
    fn listener_for(&self, t: &Tuple) -> Option<u32> {
        let any = |_: &u32| true;
        let v4 = |&i: &u32| !self.conns[i as usize].has(cf::V6ONLY);
        if let Some(g) = self.listeners.get(&(t.la, t.lp)) {
            return self.pick_listener(g, t, any);
        }
        if ip::is_v4(t.la) {
            if let Some(g) = self.listeners.get(&(strata_ipc::addrs::mapped(0), t.lp)) {
                return self.pick_listener(g, t, any);
            }
            let g = self.listeners.get(&(0, t.lp))?;
            return self.pick_listener(g, t, v4);
        }
        self.pick_listener(self.listeners.get(&(0, t.lp))?, t, any)
    }

    /// The member of listener group `group` that takes `t`, among those
    /// `ok` admits (SO_REUSEPORT: by the peer's address and port, see
    /// [`strata_ipc::l4::reuseport_pick`]; an IPv6 peer's address folded
    /// to 32 bits).
    fn pick_listener(&self, group: &[u32], t: &Tuple, ok: impl Fn(&u32) -> bool) -> Option<u32> {
        let n = group.iter().filter(|i| ok(i)).count();
        if n == 0 {
            return None;
        }
        let fold = (t.ra >> 96) as u32 ^ (t.ra >> 64) as u32 ^ (t.ra >> 32) as u32 ^ t.ra as u32;
        let ra = unmapped(t.ra).unwrap_or(fold);
        let pick = strata_ipc::l4::reuseport_pick(ra, t.rp, n);
        group.iter().filter(|i| ok(i)).nth(pick).copied()
    }

    /// The live listener of a passive connection.
    fn parent_of(&self, c: &ConnBlock) -> Option<usize> {
        let p = c.parent as usize;
        let l = self.conns.get(p)?;
        // `l` may be any block, free or reused since.
        let listening = l.slot() == Slot::Live(State::Listen);
        (c.parent != NIL && l.gen == c.parent_gen && listening).then_some(p)
    }

    /// Ends a connection: it is freed once its notifications are out.
    /// `errno` (0 for none) is reported to its socket with SOCK_ERROR,
    /// then CLOSED.
    fn terminate(&mut self, c: &mut ConnBlock, errno: i32) {
        c.flags |= cf::DEAD;
        c.t_rtx = 0;
        c.t_delack = 0;
        c.t_keepalive = 0;
        c.t_state = 0;
        if c.sock != 0 {
            if errno != 0 {
                c.pend |= pend::ERROR;
                c.err = errno as u32;
            }
            c.pend |= pend::CLOSED;
        }
        c.pend &= !pend::CONNECTED;
    }

    /// Schedules block `idx`'s earliest deadline.
    fn arm(&mut self, idx: usize) {
        let c = &self.conns[idx];
        if !c.in_use() {
            return;
        }
        let t = [c.t_rtx, c.t_delack, c.t_keepalive, c.t_state]
            .into_iter()
            .filter(|&t| t != 0)
            .min();
        if let Some(t) = t {
            if t < self.sched[idx] {
                self.sched[idx] = t;
                self.timers.push(Reverse((t, idx as u32)));
            }
        }
    }

    fn next_rand(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    /// Sends control message `m` to sockd, made from `h` (a request, or
    /// a buffer taken for it; [`L4Ctl::reply_in`]).
    fn write_ctl<B: Buffers>(&mut self, pool: &mut B, h: &Handle, m: &L4Ctl, out: &mut Outputs) {
        match m.reply_in(pool, h, protocol::TCP) {
            Ok(c) => out.to_sock.push(c),
            Err(BufError::BadIndex) if h.is_inline() => self.stats.inc(Stat::PoolExhausted),
            Err(e) => self.bad_handle(pool, h, e),
        }
    }

    /// Sends `m` to sockd, in the handle itself when it fits, else in a
    /// fresh buffer; false when that was needed and the pool is empty.
    fn notify<B: Buffers>(&mut self, pool: &mut B, m: &L4Ctl, out: &mut Outputs) -> bool {
        match m.to_handle(pool) {
            Some(mut h) => {
                h.l4proto = protocol::TCP;
                out.to_sock.push(h);
                true
            }
            None => {
                self.stats.inc(Stat::PoolExhausted);
                false
            }
        }
    }

    /// Frees `h` and counts why.
    fn drop<B: Buffers>(&mut self, pool: &mut B, h: &Handle, why: Stat) {
        self.stats.inc(why);
        pool.free(h);
    }

    /// A handle whose bytes cannot be reached: a stale or out-of-range one
    /// names a buffer that is not ours to free; a bad window is ours.
    fn bad_handle<B: Buffers>(&mut self, pool: &mut B, h: &Handle, e: BufError) {
        match e {
            BufError::BadWindow => self.drop(pool, h, Stat::BadWindow),
            BufError::Stale | BufError::BadIndex => self.stats.inc(Stat::StaleHandle),
        }
    }
}

/// A message `op` about socket `sock` carrying `c`'s addresses (IPv4
/// ones mapped, as they are kept: a dual-stack listener's IPv4
/// connections are reported as sockd expects them).
fn conn_msg(op: u32, sock: u32, c: &ConnBlock) -> L4Ctl {
    L4Ctl {
        op,
        sock,
        local_addr: c.local_addr,
        local_port: c.local_port as u16,
        remote_addr: c.remote_addr,
        remote_port: c.remote_port as u16,
        ..L4Ctl::default()
    }
}
