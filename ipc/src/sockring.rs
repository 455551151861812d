//! The shared memory of sockets, between an application (libsock) and
//! sockd. Each socket has a slot: a header with notification flags and
//! two byte rings, one per direction. Slots are carved from segments,
//! sealed memfds the application creates and hands to sockd with
//! SCM_RIGHTS, a few per process however many sockets it holds; it never
//! sees the packet pool. sockd treats every index and length it reads
//! here as hostile.
//!
//! A slot is laid out as the receive ring, the header, the send ring,
//! with the header in the middle of a page ([`HDR_AT`]) and the receive
//! ring's first bytes written at its end: the first 2 KiB received, the
//! header and the first 1.5 KiB sent share one page. A connection whose
//! exchanges stay that small so touches one new page, not three, and
//! each process one page table page for it, not two: on a virtual
//! machine whose host backs a page only when it is first touched, a new
//! page costs ~10 µs, and a burst of connections is mostly that.
//!
//! An application thread that waits sleeps on a futex in its socket's
//! header, which sockd wakes when it makes the awaited condition true;
//! only a socket whose readiness an event loop watches has a wake pair
//! (an fd at each end).
//!
//! Datagram sockets carry records: a 24-byte record header (payload
//! length, peer port, peer address of either family as 16 bytes, IPv4
//! mapped) followed by the payload, padded to 8 bytes. A record never
//! wraps; a producer that reaches the end of the ring writes a wrap
//! marker and continues at the start. Stream sockets (TCP) carry plain
//! bytes.

use crate::raw::{Mapping, Region, Shared};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64, Ordering::*};
use std::sync::Arc;

/// "SOCKRING".
pub const MAGIC: u64 = 0x534f_434b_5249_4e47;
/// Layout version.
pub const VERSION: u32 = 4;
/// Bytes of the header; the rx ring precedes it, the tx ring follows.
pub const HDR_LEN: usize = 512;
/// The header's offset in its page: the rx ring's last `HDR_AT` bytes
/// (where its first bytes go) precede it in that page.
pub const HDR_AT: usize = 2048;
/// Record header length.
pub const REC_HDR: usize = 24;
/// Record length value marking "continue at the start of the ring".
const WRAP: u32 = u32::MAX;
/// Smallest and largest ring.
pub const MIN_RING: u32 = 4096;
/// Largest ring.
pub const MAX_RING: u32 = 64 << 20;

/// Bits of [`SockHdr::client_wait`].
pub mod wait {
    /// The application sleeps until data arrives in the rx ring.
    pub const RX: u32 = 1;
    /// The application sleeps until the tx ring has room.
    pub const TX: u32 = 2;
    /// The application registered a readiness fd (a wake pair) for an
    /// event loop: kick it on every change (the bit stays set).
    pub const ALWAYS: u32 = 4;
    /// The session's poller watches the socket: on every change, ring
    /// the socket's row on the application's side of the session's
    /// [`Doorbell`](super::Doorbell) and kick the poller (the bit stays
    /// set until the application clears it).
    pub const POLLED: u32 = 8;
}

/// Bits of [`SockHdr::state`].
pub mod state {
    /// sockd closed the socket (its session ended, or it was reset).
    pub const CLOSED: u32 = 1;
    /// No more data will arrive (stream: the peer's FIN was read).
    pub const EOF: u32 = 2;
    /// The connection was reset.
    pub const RESET: u32 = 4;
    /// A stream connection is established (a TCP connect completed, or
    /// the socket came from accept). Set once; libsock's blocking connect
    /// waits for it (or for a pending error, or for [`RESET`]).
    pub const CONNECTED: u32 = 8;
    /// A listener whose [`SockHdr::accept_ready`] sockd keeps (set with
    /// the first count).
    pub const ACCEPTS_COUNTED: u32 = 16;
    /// sockd is done with the socket's slot; the application may reuse
    /// it (after punching its pages out).
    pub const RELEASED: u32 = 32;
}

/// The header at the start of the shared memory.
#[repr(C, align(64))]
pub struct SockHdr {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// Bytes of the tx ring (application → sockd), a power of two.
    pub tx_cap: AtomicU32,
    /// Bytes of the rx ring (sockd → application), a power of two.
    pub rx_cap: AtomicU32,
    _p0: [u32; 11],
    /// tx consumer index (sockd writes), in bytes since creation.
    pub tx_head: AtomicU64,
    _p1: [u64; 7],
    /// tx producer index (application writes).
    pub tx_tail: AtomicU64,
    _p2: [u64; 7],
    /// rx consumer index (application writes).
    pub rx_head: AtomicU64,
    _p3: [u64; 7],
    /// rx producer index (sockd writes).
    pub rx_tail: AtomicU64,
    _p4: [u64; 7],
    /// What the application sleeps for ([`wait`] bits); sockd wakes the
    /// application's sleepers when it makes one of them true.
    pub client_wait: AtomicU32,
    /// Non-zero when sockd drained the tx ring and wants a kick on the
    /// next write.
    pub server_wait: AtomicU32,
    /// A pending socket error (errno) for the next call, 0 when none.
    pub error: AtomicI32,
    /// [`state`] bits.
    pub state: AtomicU32,
    /// Datagrams dropped because the rx ring was full.
    pub rx_drops: AtomicU64,
    /// Non-zero when sockd wants a kick after the application's next
    /// read (tcpd's window waits on it).
    pub server_wait_rx: AtomicU32,
    /// A listener: the connections waiting for `accept` (sockd writes
    /// it, with [`state::ACCEPTS_COUNTED`]).
    pub accept_ready: AtomicU32,
    /// The futex word application threads sleep on: sockd bumps it (and
    /// wakes them if [`SockHdr::sleepers`] says any sleep) when it makes
    /// a condition they announced in `client_wait` true.
    pub wake_seq: AtomicU32,
    /// Application threads sleeping on `wake_seq`.
    pub sleepers: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<SockHdr>() <= HDR_LEN);

// SAFETY: repr(C); atomics, and padding nobody writes. The application
// may store anything in the atomics: every value is read once and checked
// (capacities only at attach, indices against our own capacities).
unsafe impl Shared for SockHdr {}

/// A received or queued datagram's place in a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Peer (source on rx, destination on tx; 0.0.0.0:0 = connected peer).
    pub addr: SocketAddr,
    /// Offset of the payload in the ring area.
    pub off: usize,
    /// Payload bytes.
    pub len: usize,
    /// Bytes the record occupies, to consume it (wrap marker included).
    pub span: u64,
}

/// Why sockd refused what it read from an application's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The indices are inconsistent (more data than the ring holds, or
    /// moving backwards).
    BadIndex,
    /// A record header names a length the ring cannot hold.
    BadRecord,
}

/// Socket memory lives in **segments**: sealed memfds that a session's
/// application creates and hands to sockd once, each carved into
/// **slots**, one per socket (a header and its two rings). A process
/// holding many sockets so costs a few fds and mappings on each side,
/// not one per socket.
///
/// A slot starts on a [`SLOT_ALIGN`] boundary and spans
/// [`slot_len`] bytes; requests name it by its header's offset
/// ([`SockMem::offset`]), [`HDR_AT`] past such a boundary.
pub const SLOT_ALIGN: usize = 4096;

/// Largest segment sockd maps (address space only: the memfd's pages
/// exist as they are touched).
pub const MAX_SEGMENT: usize = 64 << 30;

/// Bytes of a slot with rings of `tx` and `rx` bytes (powers of two,
/// as [`SockMem::init`] rounds them).
pub fn slot_len(tx: usize, rx: usize) -> usize {
    (HDR_AT + rx + HDR_LEN + tx).next_multiple_of(SLOT_ALIGN)
}

/// A ring size as sockets use it: clamped to [`MIN_RING`]..=[`MAX_RING`]
/// and rounded up to a power of two.
pub fn ring_size(n: usize) -> usize {
    n.clamp(MIN_RING as usize, MAX_RING as usize)
        .next_power_of_two()
}

fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// Application side: a memfd of `len` bytes sealed against resizing (so
/// that sockd can map it without fearing a shrink).
fn sealed_memfd(name: &std::ffi::CStr, len: usize) -> io::Result<OwnedFd> {
    let fd = memfd_create(
        name,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    nix::unistd::ftruncate(&fd, len as libc::off_t)?;
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(fd)
}

/// sockd side: the size of `what` an application sent, once it is known
/// to be a memfd that cannot shrink (a shrink would turn our reads of a
/// mapping into SIGBUS).
fn sealed_len(fd: &OwnedFd, what: &str) -> io::Result<usize> {
    let seals = fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS).unwrap_or(-1);
    if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} is not a memfd sealed against shrinking"),
        ));
    }
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    Ok(usize::try_from(st.st_size).unwrap_or(0))
}

/// A mapped segment of socket memory.
pub struct Segment {
    map: Mapping,
    len: usize,
}

// SAFETY: as for SockMem: the mapping is an address range whose shared
// state is atomics and ring bytes guarded by the indices.
unsafe impl Send for Segment {}
// SAFETY: as for Send.
unsafe impl Sync for Segment {}

impl Segment {
    /// Application side: a new segment of `len` bytes (rounded up to
    /// [`SLOT_ALIGN`]), sealed against resizing so that sockd can map it
    /// safely. Returns the mapping and the fd to send to sockd (and to
    /// punch out released slots with [`Segment::punch`]).
    pub fn create(len: usize) -> io::Result<(Arc<Segment>, OwnedFd)> {
        let len = len.max(SLOT_ALIGN).next_multiple_of(SLOT_ALIGN);
        let fd = sealed_memfd(c"strata-sockets", len)?;
        let seg = Segment {
            map: Mapping::shared(&fd, len)?,
            len,
        };
        Ok((Arc::new(seg), fd))
    }

    /// sockd side: maps an application's segment after checking that it
    /// cannot shrink under us (a shrink would turn our reads into
    /// SIGBUS) and that its size is whole slots and at most `max_len`.
    pub fn attach(fd: &OwnedFd, max_len: usize) -> io::Result<Arc<Segment>> {
        let len = sealed_len(fd, "socket memory")?;
        if len < SLOT_ALIGN || !len.is_multiple_of(SLOT_ALIGN) || len > max_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket memory has a bad size",
            ));
        }
        Ok(Arc::new(Segment {
            map: Mapping::shared(fd, len)?,
            len,
        }))
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the segment has no bytes (never: one slot at least).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Application side: gives the pages of a released slot back to the
    /// system (they read as zeros afterwards). `fd` is the segment's.
    pub fn punch(fd: &OwnedFd, off: usize, len: usize) -> io::Result<()> {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: no pointers; the fd is open for the call.
        let r = unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as i64, len as i64) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// One socket's shared memory: a slot of a [`Segment`].
#[derive(Clone)]
pub struct SockMem {
    seg: Arc<Segment>,
    off: usize,
    tx_cap: usize,
    rx_cap: usize,
}

impl SockMem {
    /// Application side: lays out a fresh socket in the slot that starts
    /// at `start` of `seg`, with rings of the given sizes (as
    /// [`ring_size`] makes them); the slot must be free (never used, or
    /// released by sockd and punched out).
    pub fn init(
        seg: &Arc<Segment>,
        start: usize,
        tx_cap: usize,
        rx_cap: usize,
    ) -> io::Result<SockMem> {
        let tx = ring_size(tx_cap);
        let rx = ring_size(rx_cap);
        if !start.is_multiple_of(SLOT_ALIGN)
            || start
                .checked_add(slot_len(tx, rx))
                .is_none_or(|e| e > seg.len)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "socket slot outside its segment",
            ));
        }
        let off = start + HDR_AT + rx;
        let m = SockMem {
            seg: seg.clone(),
            off,
            tx_cap: tx,
            rx_cap: rx,
        };
        let r = seg.map.region();
        r.fill(off, HDR_LEN, 0);
        let h = m.hdr();
        h.version.store(VERSION, Relaxed);
        h.tx_cap.store(tx as u32, Relaxed);
        h.rx_cap.store(rx as u32, Relaxed);
        h.magic.store(MAGIC, Release);
        Ok(m)
    }

    /// Application side, for tests and single sockets: a segment holding
    /// just one socket. Returns the memory and the segment's fd.
    pub fn create(tx_cap: u32, rx_cap: u32) -> io::Result<(SockMem, OwnedFd)> {
        let (tx, rx) = (ring_size(tx_cap as usize), ring_size(rx_cap as usize));
        let (seg, fd) = Segment::create(slot_len(tx, rx))?;
        Ok((SockMem::init(&seg, 0, tx, rx)?, fd))
    }

    /// sockd side: the socket whose header is at `off` of an
    /// application's segment ([`SockMem::offset`]), after checking the
    /// header and that the slot lies inside the segment. From here on the
    /// capacities are ours, whatever the application writes into its
    /// header later.
    pub fn attach(seg: &Arc<Segment>, off: usize) -> io::Result<SockMem> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        if off % SLOT_ALIGN != HDR_AT || off.checked_add(HDR_LEN).is_none_or(|e| e > seg.len) {
            return Err(bad("socket slot outside its segment"));
        }
        let h: &SockHdr = seg.map.region().get(off);
        let tx = h.tx_cap.load(Acquire) as usize;
        let rx = h.rx_cap.load(Acquire) as usize;
        if h.magic.load(Acquire) != MAGIC
            || h.version.load(Acquire) != VERSION
            || !tx.is_power_of_two()
            || !rx.is_power_of_two()
            || !(MIN_RING as usize..=MAX_RING as usize).contains(&tx)
            || !(MIN_RING as usize..=MAX_RING as usize).contains(&rx)
            || off < HDR_AT + rx
            || off - HDR_AT - rx + slot_len(tx, rx) > seg.len
        {
            return Err(bad("socket memory has a bad header"));
        }
        Ok(SockMem {
            seg: seg.clone(),
            off,
            tx_cap: tx,
            rx_cap: rx,
        })
    }

    /// The segment the slot lies in.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// The offset of the slot's header in its segment: what requests
    /// name the socket's memory by.
    pub fn offset(&self) -> usize {
        self.off
    }

    /// The offset of the slot's first byte in its segment.
    pub fn start(&self) -> usize {
        self.off - HDR_AT - self.rx_cap
    }

    /// The slot's bytes.
    pub fn slot_len(&self) -> usize {
        slot_len(self.tx_cap, self.rx_cap)
    }

    /// sockd: it is done with this slot for good (the socket is gone);
    /// the application may reuse it.
    pub fn release(&self) {
        self.hdr().state.fetch_or(state::RELEASED, Release);
        self.wake_sleepers();
    }

    /// Application: whether sockd released the slot.
    pub fn released(&self) -> bool {
        self.hdr().state.load(Acquire) & state::RELEASED != 0
    }

    /// Wakes every thread of the application sleeping in
    /// [`SockMem::sleep`] (a futex on the shared header: no fd).
    pub fn wake_sleepers(&self) {
        let h = self.hdr();
        h.wake_seq.fetch_add(1, SeqCst);
        if h.sleepers.load(SeqCst) != 0 {
            // SAFETY: the futex word is a live, aligned u32 of a shared
            // mapping; FUTEX_WAKE takes no other pointer.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    h.wake_seq.as_ptr(),
                    libc::FUTEX_WAKE,
                    i32::MAX,
                    std::ptr::null::<libc::timespec>(),
                )
            };
        }
    }

    /// Application: the wake sequence, read before the last look at the
    /// condition a thread is about to sleep for.
    pub fn wake_seq(&self) -> u32 {
        self.hdr().wake_seq.load(SeqCst)
    }

    /// Application: sleeps until [`SockMem::wake_sleepers`] moves the
    /// wake sequence past `seen` (at once if it already has), at most
    /// `timeout`; true if a signal interrupted the sleep.
    pub fn sleep(&self, seen: u32, timeout: Option<std::time::Duration>) -> bool {
        let h = self.hdr();
        h.sleepers.fetch_add(1, SeqCst);
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: the futex word is a live, aligned u32 of a shared
        // mapping, and `tsp` is null or points at a live local timespec.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                h.wake_seq.as_ptr(),
                libc::FUTEX_WAIT,
                seen,
                tsp,
            )
        };
        let interrupted = r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
        h.sleepers.fetch_sub(1, SeqCst);
        interrupted
    }

    /// The header.
    pub fn hdr(&self) -> &SockHdr {
        self.seg.map.region().get(self.off)
    }

    /// Bytes of the tx ring.
    pub fn tx_cap(&self) -> usize {
        self.tx_cap
    }

    /// Bytes of the rx ring.
    pub fn rx_cap(&self) -> usize {
        self.rx_cap
    }

    /// Largest datagram payload the tx ring can ever hold.
    pub fn max_tx_dgram(&self) -> usize {
        self.tx_cap - 2 * REC_HDR
    }

    /// A ring's bytes and their number (our own capacity, checked at
    /// attach, never the header's).
    fn area(&self, tx: bool) -> (Region<'_>, usize) {
        let r = self.seg.map.region();
        if tx {
            (r.sub(self.off + HDR_LEN, self.tx_cap), self.tx_cap)
        } else {
            (r.sub(self.off - self.rx_cap, self.rx_cap), self.rx_cap)
        }
    }

    /// Where in its ring index `i` lies: the rx ring starts [`HDR_AT`]
    /// bytes before its end, in the header's page.
    fn pos(&self, tx: bool, i: u64) -> usize {
        let (cap, lead) = if tx {
            (self.tx_cap, 0)
        } else {
            (self.rx_cap, (self.rx_cap - HDR_AT) as u64)
        };
        (i.wrapping_add(lead) % cap as u64) as usize
    }

    fn indices(&self, tx: bool) -> (&AtomicU64, &AtomicU64) {
        let h = self.hdr();
        if tx {
            (&h.tx_head, &h.tx_tail)
        } else {
            (&h.rx_head, &h.rx_tail)
        }
    }

    /// Writes a datagram record; false when the ring has no room now.
    fn push_dgram(&self, tx: bool, addr: SocketAddr, payload: &[u8]) -> bool {
        let (base, cap) = self.area(tx);
        let (head, tail) = self.indices(tx);
        let need = REC_HDR + pad8(payload.len());
        if need > cap - REC_HDR {
            return false;
        }
        let t = tail.load(Relaxed);
        let used = t.wrapping_sub(head.load(Acquire));
        let free = (cap as u64).saturating_sub(used);
        let pos = self.pos(tx, t);
        let waste = if pos + need > cap { cap - pos } else { 0 };
        if (waste + need) as u64 > free {
            return false;
        }
        let mut p = pos;
        if waste > 0 {
            // Records are 8-byte multiples, so a sane index leaves at
            // least 8 bytes here; an index the other side corrupted may
            // leave fewer, and only those are written (its reader then
            // finds no whole record header and refuses the ring).
            base.copy_in(p, &WRAP.to_ne_bytes()[..waste.min(4)]);
            p = 0;
        }
        base.store(p, payload.len() as u32);
        base.store(p + 4, addr.port());
        let ip = match addr.ip() {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        base.store(p + 8, ip.octets());
        base.copy_in(p + REC_HDR, payload);
        tail.store(t + (waste + need) as u64, Release);
        true
    }

    /// Reads the next datagram record without consuming it, checking
    /// everything against what the ring can hold.
    fn peek_dgram(&self, tx: bool) -> Result<Option<Record>, RingError> {
        let (base, cap) = self.area(tx);
        let (head, tail) = self.indices(tx);
        let h = head.load(Relaxed);
        let t = tail.load(Acquire);
        let avail = t.wrapping_sub(h);
        if avail == 0 {
            return Ok(None);
        }
        if avail > cap as u64 {
            return Err(RingError::BadIndex);
        }
        let mut pos = self.pos(tx, h);
        let mut waste = 0u64;
        // `pos` may be the last byte: a record header that does not fit
        // before the end is refused below, but its first word is read
        // here, so read what fits (a short read cannot be WRAP).
        let mut len = if pos + 4 <= cap {
            base.load::<u32>(pos)
        } else {
            0
        };
        if len == WRAP {
            waste = (cap - pos) as u64;
            pos = 0;
            if avail <= waste {
                return Err(RingError::BadRecord);
            }
            len = base.load::<u32>(0);
        }
        let len = len as usize;
        let span = REC_HDR + pad8(len);
        if pos + span > cap || waste + span as u64 > avail {
            return Err(RingError::BadRecord);
        }
        let port = base.load::<u16>(pos + 4);
        let ip = Ipv6Addr::from(base.load::<[u8; 16]>(pos + 8));
        let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
        Ok(Some(Record {
            addr: SocketAddr::new(ip, port),
            off: pos + REC_HDR,
            len,
            span: waste + span as u64,
        }))
    }

    /// The bytes of a record found by a peek.
    ///
    /// The other side may scribble over them while we read (its own loss),
    /// but they always lie inside the mapping.
    pub fn record_bytes(&self, tx: bool, r: &Record) -> &[u8] {
        let (base, cap) = self.area(tx);
        let off = r.off.min(cap);
        let len = r.len.min(cap - off);
        // SAFETY: the record was published to us and not yet consumed, so
        // nothing in this process writes it (our writes go to the rings
        // we produce, and to their free part only); the other process may
        // scribble on it, which changes plain bytes, never their bounds.
        unsafe { base.bytes(off, len) }
    }

    fn consume(&self, tx: bool, span: u64) {
        let (head, _) = self.indices(tx);
        head.store(head.load(Relaxed) + span, Release);
    }

    // ----------------------------------------------------- application side

    /// Application: queue a datagram for sending (`0.0.0.0:0`: to the
    /// connected peer). False when the ring is full now.
    pub fn send_dgram(&self, to: SocketAddr, payload: &[u8]) -> bool {
        self.push_dgram(true, to, payload)
    }

    /// Application: the next received datagram, if any.
    pub fn peek_recv(&self) -> Option<Record> {
        // Our own ring's producer is sockd, which we trust to be sane; a
        // bad record still must not crash us: treat it as empty.
        self.peek_dgram(false).ok().flatten()
    }

    /// Application: consume a datagram returned by [`SockMem::peek_recv`].
    pub fn consume_recv(&self, r: &Record) {
        self.consume(false, r.span);
    }

    /// Application: kicks needed after a send? Returns true if sockd asked
    /// to be woken (and clears the request).
    pub fn server_wants_kick(&self) -> bool {
        fence(SeqCst);
        self.hdr().server_wait.load(SeqCst) != 0 && self.hdr().server_wait.swap(0, SeqCst) != 0
    }

    /// Application: kick needed after a read? Returns true if sockd asked
    /// to be woken when the application reads (and clears the request).
    pub fn server_wants_read_kick(&self) -> bool {
        fence(SeqCst);
        let w = &self.hdr().server_wait_rx;
        w.load(SeqCst) != 0 && w.swap(0, SeqCst) != 0
    }

    /// Application: announce what we are about to sleep for; the caller
    /// reads [`SockMem::wake_seq`], re-checks its condition, then sleeps.
    pub fn announce_wait(&self, bits: u32) {
        self.hdr().client_wait.fetch_or(bits, SeqCst);
        fence(SeqCst);
    }

    /// Application: bytes queued for sending, not yet taken by sockd.
    pub fn tx_queued(&self) -> u64 {
        let h = self.hdr();
        h.tx_tail
            .load(Relaxed)
            .wrapping_sub(h.tx_head.load(Acquire))
    }

    /// Bytes received, not yet read by the application.
    pub fn rx_queued(&self) -> u64 {
        let h = self.hdr();
        h.rx_tail
            .load(Acquire)
            .wrapping_sub(h.rx_head.load(Acquire))
    }

    /// Takes the pending socket error, if any.
    pub fn take_error(&self) -> Option<i32> {
        match self.hdr().error.swap(0, AcqRel) {
            0 => None,
            e => Some(e),
        }
    }

    // ------------------------------------------------------------ sockd side

    /// sockd: the next datagram the application queued, validated.
    pub fn peek_send(&self) -> Result<Option<Record>, RingError> {
        self.peek_dgram(true)
    }

    /// sockd: consume a datagram returned by [`SockMem::peek_send`], and
    /// wake the application if it waits for room.
    pub fn consume_send(&self, r: &Record) -> bool {
        self.consume(true, r.span);
        self.take_wait(wait::TX)
    }

    /// sockd: deliver a datagram; false (and a counted drop) when the
    /// application's ring is full. Returns (delivered, wake the app).
    pub fn deliver_dgram(&self, from: SocketAddr, payload: &[u8]) -> (bool, bool) {
        if !self.push_dgram(false, from, payload) {
            self.hdr().rx_drops.fetch_add(1, Relaxed);
            return (false, false);
        }
        (true, self.take_wait(wait::RX))
    }

    /// sockd: after draining the tx ring, ask for a kick on the next
    /// write; returns true if data arrived meanwhile (drain again).
    pub fn request_kick(&self) -> bool {
        self.request_kick_after(self.hdr().tx_head.load(Relaxed))
    }

    /// sockd: as [`request_kick`](Self::request_kick), when the stream
    /// ring is drained up to `sent` (its producer index) though not yet
    /// consumed: true if the application wrote beyond it meanwhile.
    pub fn request_kick_after(&self, sent: u64) -> bool {
        self.hdr().server_wait.store(1, SeqCst);
        fence(SeqCst);
        self.hdr().tx_tail.load(Acquire) != sent
    }

    /// sockd: ask for a kick after the application's next read; returns
    /// true if it read past `read` (its read index as sockd last saw it)
    /// meanwhile, and may not have seen the request.
    pub fn request_read_kick(&self, read: u64) -> bool {
        self.hdr().server_wait_rx.store(1, SeqCst);
        fence(SeqCst);
        self.hdr().rx_head.load(Acquire) != read
    }

    /// sockd: set the socket error the application sees next.
    pub fn set_error(&self, errno: i32) -> bool {
        self.hdr().error.store(errno, Release);
        self.take_wait(wait::RX | wait::TX)
    }

    /// sockd: set state bits; returns whether to wake the application.
    pub fn set_state(&self, bits: u32) -> bool {
        self.hdr().state.fetch_or(bits, Release);
        self.take_wait(wait::RX | wait::TX)
    }

    /// sockd: a listener's connections waiting for `accept` (a new one
    /// is then announced with [`notify`](SockMem::notify)).
    pub fn set_accept_ready(&self, n: usize) {
        let h = self.hdr();
        h.accept_ready
            .store(u32::try_from(n).unwrap_or(u32::MAX), Release);
        h.state.fetch_or(state::ACCEPTS_COUNTED, Release);
    }

    /// A listener's connections waiting for `accept`, if sockd counts
    /// them.
    pub fn accept_ready(&self) -> Option<u32> {
        let h = self.hdr();
        let counted = h.state.load(Acquire) & state::ACCEPTS_COUNTED != 0;
        counted.then(|| h.accept_ready.load(Acquire))
    }

    /// Wakes the application's sleepers if they wait for any of `bits`
    /// (and clears those bits); true if an event loop watches the socket
    /// as well ([`wait::ALWAYS`], [`wait::POLLED`]), which the caller
    /// then tells.
    fn take_wait(&self, bits: u32) -> bool {
        fence(SeqCst);
        let h = self.hdr();
        let w = h.client_wait.load(SeqCst);
        if w & bits != 0 && h.client_wait.fetch_and(!bits, SeqCst) & bits != 0 {
            self.wake_sleepers();
        }
        w & (wait::ALWAYS | wait::POLLED) != 0
    }

    /// Application: stops what [`SockMem::announce_wait`] announced of
    /// `bits` (a poller lets go of the socket).
    pub fn withdraw_wait(&self, bits: u32) {
        self.hdr().client_wait.fetch_and(!bits, SeqCst);
    }
}

impl SockMem {
    // -------------------------------------------------------------- streams

    /// Copies as much of `data` into a stream ring as fits; returns bytes
    /// written.
    fn push_stream(&self, tx: bool, data: &[u8]) -> usize {
        let (base, cap) = self.area(tx);
        let (head, tail) = self.indices(tx);
        let t = tail.load(Relaxed);
        let used = t.wrapping_sub(head.load(Acquire)).min(cap as u64) as usize;
        let n = data.len().min(cap - used);
        if n == 0 {
            return 0;
        }
        let pos = self.pos(tx, t);
        let first = n.min(cap - pos);
        base.copy_in(pos, &data[..first]);
        base.copy_in(0, &data[first..n]);
        tail.store(t + n as u64, Release);
        n
    }

    /// The bytes waiting in a stream ring as (up to) two slices, checked
    /// against the ring's size.
    fn stream_slices(&self, tx: bool) -> Result<(&[u8], &[u8]), RingError> {
        let (base, cap) = self.area(tx);
        let (head, tail) = self.indices(tx);
        let h = head.load(Relaxed);
        let avail = tail.load(Acquire).wrapping_sub(h);
        if avail > cap as u64 {
            return Err(RingError::BadIndex);
        }
        let avail = avail as usize;
        let pos = self.pos(tx, h);
        let first = avail.min(cap - pos);
        // SAFETY: these bytes were published to us (up to the producer
        // index, bounded by the ring's size above) and not yet consumed,
        // so nothing in this process writes them while the slices live;
        // the other process may scribble on them, which changes plain
        // bytes, never their bounds.
        unsafe { Ok((base.bytes(pos, first), base.bytes(0, avail - first))) }
    }

    /// Application: queue stream bytes for sending; returns how many fit.
    pub fn write_stream(&self, data: &[u8]) -> usize {
        self.push_stream(true, data)
    }

    /// Application: copy received stream bytes into `buf`, consuming them
    /// unless `peek`; returns how many.
    pub fn read_stream(&self, buf: &mut [u8], peek: bool) -> usize {
        let Ok((a, b)) = self.stream_slices(false) else {
            return 0;
        };
        let n1 = a.len().min(buf.len());
        buf[..n1].copy_from_slice(&a[..n1]);
        let n2 = b.len().min(buf.len() - n1);
        buf[n1..n1 + n2].copy_from_slice(&b[..n2]);
        if !peek {
            self.consume(false, (n1 + n2) as u64);
        }
        n1 + n2
    }

    /// sockd: the stream bytes the application queued, validated.
    pub fn send_slices(&self) -> Result<(&[u8], &[u8]), RingError> {
        self.stream_slices(true)
    }

    /// sockd: consume `n` stream bytes handed on; returns whether to wake
    /// the application (it waits for room).
    pub fn consume_send_bytes(&self, n: usize) -> bool {
        self.consume(true, n as u64);
        self.take_wait(wait::TX)
    }

    /// sockd: deliver stream bytes; returns (bytes written, wake the app).
    pub fn deliver_stream(&self, data: &[u8]) -> (usize, bool) {
        let n = self.push_stream(false, data);
        (n, n > 0 && self.take_wait(wait::RX))
    }

    /// sockd: the receive ring's producer index (stream bytes written
    /// since creation).
    pub fn rx_written(&self) -> u64 {
        self.hdr().rx_tail.load(Acquire)
    }

    /// sockd: the send ring's consumer index (stream bytes handed on
    /// since creation).
    pub fn tx_consumed(&self) -> u64 {
        self.hdr().tx_head.load(Acquire)
    }

    /// sockd: the application's receive-ring consumer index (bytes read
    /// since creation), as the application last published it.
    pub fn rx_consumed(&self) -> u64 {
        self.hdr().rx_head.load(Acquire)
    }

    /// sockd: wake the application if it waits for any of `bits`.
    pub fn notify(&self, bits: u32) -> bool {
        self.take_wait(bits)
    }
}

/// Sockets one [`Doorbell`] can name: one bit per row of sockd's socket
/// table.
pub const DOORBELL_BITS: usize = crate::socktable::MAX_ROWS + 1;
/// Words of a doorbell's bitmap.
const BELL_WORDS: usize = DOORBELL_BITS / 64;
/// Words of its summary (one bit per bitmap word).
const SUMMARY_WORDS: usize = BELL_WORDS / 64;
/// Words of one direction of a doorbell: the summary, then the bitmap.
const BELL_SPAN: usize = SUMMARY_WORDS + BELL_WORDS;
/// Bytes of a doorbell: a header line, then toward sockd and toward the
/// application.
pub const DOORBELL_LEN: usize = 64 + 2 * BELL_SPAN * 8;
/// "DOORBELL".
const BELL_MAGIC: u64 = 0x444f_4f52_4245_4c4c;

/// One session's doorbell, both ways. Toward sockd: which of its
/// sockets the application wrote to or read from after sockd asked to
/// hear of it (`server_wait`, `server_wait_rx`), so that sockd looks at
/// those sockets and no other. Toward the application: which of the
/// sockets its poller watches ([`wait::POLLED`]) sockd changed, so that
/// the poller looks at those and no other.
/// A bitmap by socket-table row, with a summary bit per bitmap word: the
/// application sets the row's bit, then its summary bit, then kicks the
/// session's wake pair; sockd swaps summary words to zero, then the
/// bitmap words they name, so a ring it misses now it finds next time.
/// A few KiB of it are touched however many sockets there are, and
/// sockd reads at most the summary (2 KiB) and the words it names.
///
/// The application creates it (a sealed memfd) and sends it with Hello.
/// Rows are only hints to sockd: it checks that the socket there is the
/// session's.
pub struct Doorbell {
    map: Mapping,
}

// SAFETY: the mapping is an address range holding only atomics.
unsafe impl Send for Doorbell {}
// SAFETY: as for Send: `&Doorbell` gives out only atomic operations.
unsafe impl Sync for Doorbell {}

impl Doorbell {
    /// Application side: a new doorbell and the fd to send to sockd.
    pub fn create() -> io::Result<(Doorbell, OwnedFd)> {
        let fd = sealed_memfd(c"strata-doorbell", DOORBELL_LEN)?;
        let d = Doorbell {
            map: Mapping::shared(&fd, DOORBELL_LEN)?,
        };
        d.map
            .region()
            .get::<AtomicU64>(0)
            .store(BELL_MAGIC, Release);
        Ok((d, fd))
    }

    /// sockd side: maps an application's doorbell after checking its
    /// seals, size and magic.
    pub fn attach(fd: &OwnedFd) -> io::Result<Doorbell> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        if sealed_len(fd, "doorbell")? != DOORBELL_LEN {
            return Err(bad("doorbell has a bad size"));
        }
        let d = Doorbell {
            map: Mapping::shared(fd, DOORBELL_LEN)?,
        };
        if d.map.region().get::<AtomicU64>(0).load(Acquire) != BELL_MAGIC {
            return Err(bad("doorbell has a bad header"));
        }
        Ok(d)
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        self.map.region().get(64 + i * 8)
    }

    /// Sets `row`'s bit in the direction starting at word `base`.
    fn ring_in(&self, base: usize, row: usize) {
        if row >= DOORBELL_BITS {
            return;
        }
        let w = row / 64;
        self.word(base + SUMMARY_WORDS + w)
            .fetch_or(1 << (row % 64), SeqCst);
        self.word(base + w / 64).fetch_or(1 << (w % 64), SeqCst);
    }

    /// Takes the rows rung in the direction starting at word `base`, from
    /// at most `words` bitmap words (64 rows each); true if some were
    /// left for another call.
    fn take_in(&self, base: usize, mut words: usize, mut f: impl FnMut(usize)) -> bool {
        for s in 0..SUMMARY_WORDS {
            if self.word(base + s).load(Relaxed) == 0 {
                continue;
            }
            let mut sum = self.word(base + s).swap(0, SeqCst);
            while sum != 0 {
                if words == 0 {
                    // Put back what this call does not take.
                    self.word(base + s).fetch_or(sum, SeqCst);
                    return true;
                }
                words -= 1;
                let w = s * 64 + sum.trailing_zeros() as usize;
                sum &= sum - 1;
                let mut bits = self.word(base + SUMMARY_WORDS + w).swap(0, SeqCst);
                while bits != 0 {
                    f(w * 64 + bits.trailing_zeros() as usize);
                    bits &= bits - 1;
                }
            }
        }
        false
    }

    /// Application: rings for the socket in table row `row` (the caller
    /// then kicks sockd). Rows past the bitmap are ignored.
    pub fn ring(&self, row: usize) {
        self.ring_in(0, row);
    }

    /// sockd: takes the rows rung since the last call, in no order, from
    /// at most `words` bitmap words (64 rows each: a client that rings
    /// every row costs sockd a bounded amount per call); true if some
    /// were left for the next call.
    pub fn take(&self, words: usize, f: impl FnMut(usize)) -> bool {
        self.take_in(0, words, f)
    }

    /// sockd: rings for the application's poller (the caller then kicks
    /// it); the application itself, to have its poller look at a row.
    pub fn ring_app(&self, row: usize) {
        self.ring_in(BELL_SPAN, row);
    }

    /// Application: takes every row rung toward it since the last call.
    pub fn take_app(&self, f: impl FnMut(usize)) {
        self.take_in(BELL_SPAN, BELL_WORDS, f);
    }
}

/// A wake-up channel: a connected pair of Unix datagram sockets, both
/// non-blocking, returned as (the end to wait on, the end to kick).
///
/// The side that waits polls its end for readability and [`drain`]s it;
/// the other side [`kick`]s its end. Kicks are sent with `MSG_DONTWAIT`,
/// a flag of the call and not of the file, so that the waiting side,
/// which may be a hostile client holding a copy of either end, cannot
/// make a kick block (it could clear `O_NONBLOCK` on a shared eventfd, or
/// fill its counter, and hang whoever writes it).
pub fn wake_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    Ok((a, b))
}

/// Whether `fd` is what [`wake_pair`] makes: a Unix datagram socket. A
/// kick never blocks on anything else either (it fails), but a client
/// that hands over something else gets a clear error instead.
pub fn is_wake_end(fd: &impl AsRawFd) -> bool {
    let int_opt = |name: libc::c_int| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into the live
        // local `v` and updates the live local `len`.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                &mut v as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        (r == 0).then_some(v)
    };
    int_opt(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && int_opt(libc::SO_TYPE) == Some(libc::SOCK_DGRAM)
}

/// Kicks the other end of a [`wake_pair`]: one byte, never blocking. A
/// full queue means a kick is pending already; a descriptor that is not
/// such a socket makes the call fail, nothing else.
pub fn kick(fd: &impl AsRawFd) {
    use nix::sys::socket::{send, MsgFlags};
    let _ = send(
        fd.as_raw_fd(),
        &[1],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}

/// Kicks taken per system call by [`drain`].
const DRAIN_BATCH: usize = 32;

/// Empties the waiting end of a [`wake_pair`]: one `recvmmsg` takes up to
/// `DRAIN_BATCH` kicks, so the usual single pending kick costs one call
/// and no call that is known to fail (a fuller queue takes another call,
/// at most a bounded number: a peer that kicks without pause cannot keep
/// the caller here).
pub fn drain(fd: &impl AsRawFd) {
    let mut bytes = [[0u8; 1]; DRAIN_BATCH];
    for _ in 0..8 {
        // SAFETY: zeroed msghdrs are valid empty headers; each is then
        // pointed at one live iovec, itself pointing at one live byte of
        // `bytes`, and all of them outlive the call.
        let got = unsafe {
            let mut iov: [libc::iovec; DRAIN_BATCH] = std::mem::zeroed();
            let mut msgs: [libc::mmsghdr; DRAIN_BATCH] = std::mem::zeroed();
            for ((m, v), b) in msgs.iter_mut().zip(iov.iter_mut()).zip(bytes.iter_mut()) {
                v.iov_base = b.as_mut_ptr().cast();
                v.iov_len = 1;
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
            }
            libc::recvmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                DRAIN_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < DRAIN_BATCH as libc::c_int {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::new(std::net::Ipv4Addr::from(ip).into(), port)
    }

    #[test]
    fn datagrams_cross_in_order_and_wrap() {
        let (app, fd) = SockMem::create(4096, 4096).unwrap();
        let srv = SockMem::attach(&Segment::attach(&fd, 1 << 20).unwrap(), app.offset()).unwrap();
        for round in 0..50u32 {
            let payload = vec![round as u8; 100 + (round as usize * 37) % 900];
            assert!(app.send_dgram(a([10, 0, 0, 1], 7), &payload));
            let r = srv.peek_send().unwrap().unwrap();
            assert_eq!(r.addr, a([10, 0, 0, 1], 7));
            assert_eq!(srv.record_bytes(true, &r), &payload[..]);
            srv.consume_send(&r);
            let (ok, _) = srv.deliver_dgram(a([10, 0, 0, 2], 9), &payload);
            assert!(ok);
            let r = app.peek_recv().unwrap();
            assert_eq!(app.record_bytes(false, &r), &payload[..]);
            app.consume_recv(&r);
        }
        assert!(srv.peek_send().unwrap().is_none());
    }

    #[test]
    fn full_ring_refuses_and_counts() {
        let (app, fd) = SockMem::create(4096, 4096).unwrap();
        let srv = SockMem::attach(&Segment::attach(&fd, 1 << 20).unwrap(), app.offset()).unwrap();
        let mut n = 0;
        while srv.deliver_dgram(a([1, 2, 3, 4], 5), &[0u8; 1000]).0 {
            n += 1;
        }
        assert_eq!(n, 4096 / (REC_HDR + 1000));
        assert_eq!(app.hdr().rx_drops.load(Relaxed), 1);
        assert!(
            !app.send_dgram(a([0, 0, 0, 0], 0), &[0u8; 5000]),
            "larger than the ring"
        );
    }

    #[test]
    fn hostile_indices_and_lengths_are_refused() {
        let (app, fd) = SockMem::create(4096, 4096).unwrap();
        let srv = SockMem::attach(&Segment::attach(&fd, 1 << 20).unwrap(), app.offset()).unwrap();
        app.hdr().tx_tail.store(1 << 40, Relaxed);
        assert_eq!(srv.peek_send(), Err(RingError::BadIndex));
        app.hdr().tx_tail.store(64, Relaxed);
        app.seg
            .map
            .region()
            .store(app.offset() + HDR_LEN, 100_000u32);
        assert_eq!(srv.peek_send(), Err(RingError::BadRecord));
        // A header that later claims other sizes does not change ours.
        app.hdr().tx_cap.store(1 << 30, Relaxed);
        assert_eq!(srv.tx_cap(), 4096);
    }

    #[test]
    fn unsealed_or_odd_memory_is_refused() {
        let fd = memfd_create(c"x", MemFdCreateFlag::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 1 << 16).unwrap();
        assert!(Segment::attach(&fd, 1 << 20).is_err());
        let (_app, fd) = SockMem::create(4096, 4096).unwrap();
        assert!(Segment::attach(&fd, 1024).is_err(), "over the size limit");
    }

    #[test]
    fn slots_outside_their_segment_or_with_bad_headers_are_refused() {
        let (seg, fd) = Segment::create(4 * SLOT_ALIGN).unwrap();
        let srv = Segment::attach(&fd, 1 << 20).unwrap();
        let hdr = HDR_AT + 4096;
        // Never laid out: no magic.
        assert!(SockMem::attach(&srv, hdr).is_err());
        let app = SockMem::init(&seg, 0, 4096, 4096).unwrap();
        assert_eq!((app.offset(), app.start()), (hdr, 0));
        assert_eq!(app.slot_len(), 3 * SLOT_ALIGN);
        assert!(SockMem::attach(&srv, hdr).is_ok());
        assert!(SockMem::attach(&srv, hdr + 100).is_err(), "unaligned");
        assert!(SockMem::attach(&srv, 0).is_err(), "not a header's place");
        assert!(
            SockMem::attach(&srv, 4 * SLOT_ALIGN + HDR_AT).is_err(),
            "past the end"
        );
        assert!(SockMem::init(&seg, 2 * SLOT_ALIGN, 4096, 4096).is_err());
        // A header whose rings would run past the segment, or whose rx
        // ring would start before it.
        app.hdr().tx_cap.store(1 << 20, Relaxed);
        assert!(SockMem::attach(&srv, hdr).is_err());
        app.hdr().tx_cap.store(4096, Relaxed);
        app.hdr().rx_cap.store(8192, Relaxed);
        assert!(SockMem::attach(&srv, hdr).is_err());
        app.hdr().rx_cap.store(3000, Relaxed);
        assert!(SockMem::attach(&srv, hdr).is_err(), "not a power of two");
    }

    #[test]
    fn slots_of_one_segment_are_separate_and_a_released_one_comes_back_empty() {
        let (seg, fd) = Segment::create(6 * SLOT_ALIGN).unwrap();
        let srv_seg = Segment::attach(&fd, 1 << 20).unwrap();
        let a1 = SockMem::init(&seg, 0, 4096, 4096).unwrap();
        let a2 = SockMem::init(&seg, 3 * SLOT_ALIGN, 4096, 4096).unwrap();
        let s1 = SockMem::attach(&srv_seg, a1.offset()).unwrap();
        let s2 = SockMem::attach(&srv_seg, a2.offset()).unwrap();
        assert!(s1.deliver_dgram(a([1, 1, 1, 1], 1), b"one").0);
        assert!(s2.deliver_dgram(a([2, 2, 2, 2], 2), b"two").0);
        let r = a1.peek_recv().unwrap();
        assert_eq!(a1.record_bytes(false, &r), b"one");
        let r = a2.peek_recv().unwrap();
        assert_eq!(a2.record_bytes(false, &r), b"two");
        assert!(!a1.released());
        s1.release();
        assert!(a1.released() && !a2.released());
        Segment::punch(&fd, 0, a1.slot_len()).unwrap();
        assert_eq!(s1.hdr().magic.load(Relaxed), 0, "punched out");
        let again = SockMem::init(&seg, 0, 4096, 4096).unwrap();
        assert!(again.peek_recv().is_none() && !again.released());
        assert!(a2.peek_recv().is_some(), "the neighbour is untouched");
    }

    #[test]
    fn a_sleeper_wakes_when_what_it_waits_for_happens() {
        let (app, fd) = SockMem::create(4096, 4096).unwrap();
        let srv = SockMem::attach(&Segment::attach(&fd, 1 << 20).unwrap(), app.offset()).unwrap();
        // Nothing announced: a timed sleep runs out.
        let seen = app.wake_seq();
        assert!(!app.sleep(seen, Some(std::time::Duration::from_millis(1))));
        // A wake after the sequence was read makes the sleep return at
        // once, even if it came before the sleep began.
        app.announce_wait(wait::RX);
        let seen = app.wake_seq();
        assert_eq!(srv.deliver_dgram(a([1, 1, 1, 1], 1), b"x"), (true, false));
        assert_ne!(app.wake_seq(), seen);
        assert!(!app.sleep(seen, None));
        // A thread asleep is woken.
        app.announce_wait(wait::RX);
        let seen = app.wake_seq();
        let t = std::thread::spawn(move || app.sleep(seen, None));
        while srv.hdr().sleepers.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        srv.deliver_dgram(a([1, 1, 1, 1], 1), b"y");
        assert!(!t.join().unwrap());
    }

    #[test]
    fn a_wake_pair_wakes_and_a_kick_never_blocks() {
        let (w, k) = wake_pair().unwrap();
        assert!(is_wake_end(&w) && is_wake_end(&k));
        let readable = |fd: &OwnedFd| {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd, no timeout.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        assert!(!readable(&w));
        kick(&k);
        assert!(readable(&w));
        drain(&w);
        assert!(!readable(&w));
        // Several pending kicks go in one drain.
        for _ in 0..DRAIN_BATCH - 1 {
            kick(&k);
        }
        drain(&w);
        assert!(!readable(&w));
        // Nobody drains: the queue fills and kicks go on returning.
        for _ in 0..10_000 {
            kick(&k);
        }
        assert!(readable(&w));
        // A full queue empties in a bounded number of drains.
        assert!((0..100).any(|_| {
            drain(&w);
            !readable(&w)
        }));
        // A pipe is not a wake end, and kicking it returns at once.
        let (r, wr) = nix::unistd::pipe().unwrap();
        assert!(!is_wake_end(&wr));
        kick(&wr);
        drop(r);
    }

    #[test]
    fn wait_flags_ask_for_exactly_one_kick() {
        let (app, fd) = SockMem::create(4096, 4096).unwrap();
        let srv = SockMem::attach(&Segment::attach(&fd, 1 << 20).unwrap(), app.offset()).unwrap();
        app.announce_wait(wait::RX);
        let seq = app.wake_seq();
        assert_eq!(srv.deliver_dgram(a([1, 1, 1, 1], 1), b"x"), (true, false));
        assert_eq!(app.wake_seq(), seq.wrapping_add(1), "woken");
        assert_eq!(srv.deliver_dgram(a([1, 1, 1, 1], 1), b"y"), (true, false));
        assert_eq!(app.wake_seq(), seq.wrapping_add(1), "once");

        assert!(!srv.request_kick());
        assert!(app.send_dgram(a([0, 0, 0, 0], 0), b"z"));
        assert!(app.server_wants_kick());
        assert!(!app.server_wants_kick());
        assert!(!srv.set_error(111));
        assert_eq!(app.take_error(), Some(111));
        assert_eq!(app.take_error(), None);
        // A readiness fd wants a kick on every change.
        app.announce_wait(wait::ALWAYS);
        assert_eq!(srv.deliver_dgram(a([1, 1, 1, 1], 1), b"w"), (true, true));
        assert_eq!(srv.deliver_dgram(a([1, 1, 1, 1], 1), b"v"), (true, true));
    }
}

#[cfg(test)]
mod bell {
    use super::*;

    #[test]
    fn rung_rows_are_taken_once_and_in_full() {
        let (app, fd) = Doorbell::create().unwrap();
        let srv = Doorbell::attach(&fd).unwrap();
        let rows = [0, 1, 63, 64, 4095, 4096, 70_000, DOORBELL_BITS - 1];
        for r in rows {
            app.ring(r);
        }
        app.ring(1);
        app.ring(DOORBELL_BITS);
        let mut got = Vec::new();
        assert!(!srv.take(usize::MAX, |r| got.push(r)));
        got.sort_unstable();
        assert_eq!(got, rows);
        let mut again = Vec::new();
        assert!(!srv.take(usize::MAX, |r| again.push(r)));
        assert!(again.is_empty());
        // A bounded take leaves the rest for the next.
        for r in 0..64 * 10 {
            app.ring(r);
        }
        let mut some = Vec::new();
        assert!(srv.take(3, |r| some.push(r)));
        assert_eq!(some.len(), 3 * 64);
        assert!(!srv.take(usize::MAX, |r| some.push(r)));
        some.sort_unstable();
        assert_eq!(some, (0..640).collect::<Vec<_>>());
        // The other way is apart.
        srv.ring_app(70_000);
        app.take(usize::MAX, |r| again.push(r));
        assert!(again.is_empty());
        app.take_app(|r| again.push(r));
        assert_eq!(again, [70_000]);
    }

    #[test]
    fn other_memory_is_not_a_doorbell() {
        let (_seg, fd) = Segment::create(DOORBELL_LEN).unwrap();
        assert!(Doorbell::attach(&fd).is_err(), "no magic");
        let (_app, fd) = SockMem::create(4096, 4096).unwrap();
        assert!(Doorbell::attach(&fd).is_err(), "wrong size");
    }
}

#[cfg(test)]
mod burst {
    use super::*;

    #[test]
    fn a_burst_of_small_datagrams_reads_back_in_order() {
        let (app, fd) = SockMem::create(256 << 10, 256 << 10).unwrap();
        let srv = SockMem::attach(&Segment::attach(&fd, 1 << 20).unwrap(), app.offset()).unwrap();
        let from = SocketAddr::new(std::net::Ipv4Addr::new(10, 0, 0, 1).into(), 9);
        for i in 0..20 {
            assert!(srv.deliver_dgram(from, format!("to-A {i}").as_bytes()).0);
        }
        for i in 0..20 {
            let r = app.peek_recv().unwrap();
            assert_eq!(app.record_bytes(false, &r), format!("to-A {i}").as_bytes());
            app.consume_recv(&r);
        }
        assert!(app.peek_recv().is_none());
    }
}

#[cfg(test)]
mod stream {
    use super::*;

    #[test]
    fn small_exchanges_touch_only_the_headers_page() {
        let (seg, fd) = Segment::create(slot_len(256 << 10, 4 << 20)).unwrap();
        let app = SockMem::init(&seg, 0, 256 << 10, 4 << 20).unwrap();
        let srv = SockMem::attach(&Segment::attach(&fd, 1 << 30).unwrap(), app.offset()).unwrap();
        let page = app.offset() - HDR_AT;
        assert!(page.is_multiple_of(SLOT_ALIGN));
        assert_eq!(app.write_stream(&[1u8; 1536]), 1536);
        assert_eq!(srv.deliver_stream(&[2u8; 2048]).0, 2048);
        let r = seg.map.region();
        assert_eq!(r.load::<[u8; 8]>(page), [2u8; 8], "rx starts the page");
        assert_eq!(r.load::<[u8; 8]>(page + HDR_AT - 8), [2u8; 8]);
        assert_eq!(r.load::<[u8; 8]>(app.offset() + HDR_LEN), [1u8; 8]);
        assert_eq!(
            r.load::<[u8; 8]>(page + SLOT_ALIGN - 8),
            [1u8; 8],
            "tx ends it"
        );
        // The next byte received wraps to the rx ring's first byte, the
        // slot's first (after its lead-in).
        assert_eq!(srv.deliver_stream(&[3u8]).0, 1);
        assert_eq!(r.load::<u8>(app.start() + HDR_AT), 3);
        let mut buf = vec![0u8; 4096];
        assert_eq!(app.read_stream(&mut buf, false), 2049);
        assert!(buf[..2048].iter().all(|&b| b == 2) && buf[2048] == 3);
    }

    #[test]
    fn stream_bytes_cross_in_order_across_the_wrap() {
        let (app, fd) = SockMem::create(4096, 4096).unwrap();
        let srv = SockMem::attach(&Segment::attach(&fd, 1 << 20).unwrap(), app.offset()).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 253) as u8).collect();
        let (mut sent, mut got) = (0, Vec::new());
        let mut buf = [0u8; 1500];
        let mut turns = 0;
        while got.len() < data.len() {
            turns += 1;
            assert!(turns < 10_000, "stuck: sent {sent} got {}", got.len());
            sent += app.write_stream(&data[sent..]);
            let (a, b) = srv.send_slices().unwrap();
            let chunk: Vec<u8> = a.iter().chain(b).copied().collect();
            srv.consume_send_bytes(chunk.len());
            let mut off = 0;
            let mut inner = 0;
            while off < chunk.len() {
                inner += 1;
                assert!(inner < 10_000, "inner stuck: off {off} of {}", chunk.len());
                let (n, _) = srv.deliver_stream(&chunk[off..]);
                off += n;
                let k = app.read_stream(&mut buf, false);
                got.extend_from_slice(&buf[..k]);
            }
            let k = app.read_stream(&mut buf, false);
            got.extend_from_slice(&buf[..k]);
        }
        assert_eq!(got, data);
        assert_eq!(app.read_stream(&mut buf, true), 0);
    }

    #[test]
    fn peek_does_not_consume_and_bad_indices_are_refused() {
        let (app, fd) = SockMem::create(4096, 4096).unwrap();
        let srv = SockMem::attach(&Segment::attach(&fd, 1 << 20).unwrap(), app.offset()).unwrap();
        assert_eq!(srv.deliver_stream(b"hello").0, 5);
        let mut b = [0u8; 8];
        assert_eq!(app.read_stream(&mut b, true), 5);
        assert_eq!(app.read_stream(&mut b, false), 5);
        assert_eq!(&b[..5], b"hello");
        assert_eq!(srv.rx_consumed(), 5);
        app.hdr().tx_tail.store(1 << 50, Relaxed);
        assert_eq!(srv.send_slices(), Err(RingError::BadIndex));
    }
}
