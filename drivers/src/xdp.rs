//! An existing Linux interface driven through an AF_XDP socket.
//!
//! The launcher ([`XdpAttach::open`]) makes what must outlive a driverd:
//! an XSKMAP, and a five-instruction XDP program, attached to the
//! interface by a BPF link, that redirects every frame of queue 0 to the
//! socket in the map (`bpf_redirect_map`, with `XDP_PASS` while the map
//! holds none). Closing the link (the launcher exits) detaches the
//! program: nothing is left on the interface. Once the fabric exists it
//! makes the socket ([`XdpAttach::bind`]): its UMEM is the packet pool's
//! buffers themselves (both classes, in chunks of [`CHUNK`] bytes, so
//! each small buffer is one chunk), its four rings, bound to queue 0,
//! and put in the map.
//!
//! So frames land where the stack reads them and leave from where it
//! wrote them: driverd ([`Xdp::from_fd`]) gives the kernel small pool
//! buffers to receive into (the frame lands [`XDP_PACKET_HEADROOM`] bytes
//! in, and its handle says so) and sends the stack's own buffers, holding
//! a reference on each buffer while the kernel has it. A frame that
//! crosses a chunk boundary (one in a large buffer may), or a segment
//! software GSO cut, is copied into a fresh small buffer first. The
//! socket is bound in zero-copy mode if the interface's driver can, else
//! in copy mode, where the kernel copies between its own buffers and the
//! pool's ([`XdpAttach::mode`]).
//!
//! A socket holds pool buffers no ring shows (the kernel keeps some it
//! took from the fill ring), so a driverd's death cannot be settled from
//! the rings: before it reclaims the dead driverd's buffers, the launcher
//! closes the socket, which makes the kernel let go of every one, and
//! binds a new one for the next driverd ([`XdpAttach::rebind`]). Frames
//! the old socket held are lost, as on a wire.
//!
//! Linux's `Documentation/networking/af_xdp.rst` describes the rings and
//! the need-wakeup protocol used here: after queueing frames to send,
//! driverd kicks the kernel with `sendto` when the transmit ring asks for
//! it; it refills the fill ring and, when that ring asks, wakes the kernel
//! with `recvfrom`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use strata_ipc::fabric::{BufferArea, Pool};
use strata_ipc::{Buffers, Handle, SMALL_BUF};

use crate::sys::{cvt, last, owned, Map};
use crate::{truncated, DeviceStats, Driver, Offload, PoolDevice, Rx};

/// Bytes per UMEM chunk: a small pool buffer. A power of two, as the
/// kernel's aligned mode wants; a frame the kernel receives or sends
/// lies inside one chunk.
pub const CHUNK: u32 = SMALL_BUF as u32;

/// Where in its chunk the kernel puts a received frame (Linux's
/// `XDP_PACKET_HEADROOM`, the UMEM asking for no more).
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// The longest frame a chunk takes.
pub const MAX_FRAME: u32 = CHUNK - XDP_PACKET_HEADROOM;

/// Entries of each of the four rings.
const RING: u32 = 2048;

/// Pool buffers kept with the kernel for receiving: an eighth of the
/// pool's default small buffers.
const RX_BUFFERS: u32 = 512;

// linux/if_xdp.h
const AF_XDP: i32 = 44;
const SOL_XDP: i32 = 283;
const XDP_MMAP_OFFSETS: i32 = 1;
const XDP_RX_RING: i32 = 2;
const XDP_TX_RING: i32 = 3;
const XDP_UMEM_REG: i32 = 4;
const XDP_UMEM_FILL_RING: i32 = 5;
const XDP_UMEM_COMPLETION_RING: i32 = 6;
const XDP_PGOFF_RX_RING: i64 = 0;
const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;
const XDP_COPY: u16 = 1 << 1;
const XDP_ZEROCOPY: u16 = 1 << 2;
const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
const XDP_RING_NEED_WAKEUP: u32 = 1;

// linux/bpf.h
const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_MAP_DELETE_ELEM: i32 = 3;
const BPF_PROG_LOAD: i32 = 5;
const BPF_LINK_CREATE: i32 = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;

#[repr(C)]
#[derive(Default)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct MmapOffsets {
    rx: RingOffset,
    tx: RingOffset,
    fr: RingOffset,
    cr: RingOffset,
}

#[repr(C)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

/// A receive or transmit descriptor.
#[repr(C)]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    options: u32,
}

/// `bpf(2)` with `attr` (a zero-padded `union bpf_attr`).
fn bpf(cmd: i32, attr: &mut [u8; 128]) -> io::Result<RawFd> {
    // SAFETY: `attr` is a live, writable 128-byte buffer, which covers
    // every field of the commands used here; the size says so.
    cvt(unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) })
}

/// Writes `v` at `off` of `attr`.
fn put(attr: &mut [u8; 128], off: usize, v: &[u8]) {
    attr[off..off + v.len()].copy_from_slice(v);
}

fn setsockopt<T>(fd: &OwnedFd, name: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live `T` of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(last())
    } else {
        Ok(())
    }
}

/// What the launcher holds for an AF_XDP interface: the program, its
/// link and map, and the socket once bound.
pub struct XdpAttach {
    ifindex: u32,
    xsk: Option<OwnedFd>,
    area: Option<BufferArea>,
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    mode: &'static str,
}

impl XdpAttach {
    /// Attaches the redirecting program to interface `ifname` (queue 0):
    /// see the module doc. Frames pass to the kernel until
    /// [`XdpAttach::bind`].
    pub fn open(ifname: &str) -> io::Result<XdpAttach> {
        let name = CString::new(ifname).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface {ifname:?} in this network namespace"),
            ));
        }
        let map = xskmap()?;
        let prog = redirect_program(&map)?;
        // The driver's own XDP hook if it has one, else the generic one.
        let link =
            attach(&prog, ifindex, 0).or_else(|_| attach(&prog, ifindex, XDP_FLAGS_SKB_MODE))?;
        Ok(XdpAttach {
            ifindex,
            xsk: None,
            area: None,
            map,
            _prog: prog,
            _link: link,
            mode: "unbound",
        })
    }

    /// Makes the socket, its UMEM the pool's buffers (`area`, from
    /// `Fabric::buffer_area`), bound to queue 0 (zero-copy if the
    /// interface's driver can, else copy mode), and puts it in the map.
    pub fn bind(&mut self, area: BufferArea) -> io::Result<()> {
        let attempt = |flags| bind_socket(area, self.ifindex, flags);
        let (xsk, mode) = match attempt(XDP_ZEROCOPY | XDP_USE_NEED_WAKEUP) {
            Ok(s) => (s, "zero-copy"),
            Err(_) => (attempt(XDP_COPY | XDP_USE_NEED_WAKEUP)?, "copy"),
        };
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &(self.map.as_raw_fd() as u32).to_ne_bytes());
        let key = 0u32;
        let value = xsk.as_raw_fd() as u32;
        put(&mut attr, 8, &(&key as *const u32 as u64).to_ne_bytes());
        put(&mut attr, 16, &(&value as *const u32 as u64).to_ne_bytes());
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
        self.xsk = Some(xsk);
        self.area = Some(area);
        self.mode = mode;
        Ok(())
    }

    /// A new socket in place of the one a dead driverd used: the old one
    /// leaves the map and is closed first (a queue takes one socket), so
    /// the kernel holds none of the pool's buffers any more; its
    /// successor starts with empty rings. Frames pass to the kernel in
    /// between.
    pub fn rebind(&mut self) -> io::Result<()> {
        let area = self
            .area
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "never bound"))?;
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &(self.map.as_raw_fd() as u32).to_ne_bytes());
        let key = 0u32;
        put(&mut attr, 8, &(&key as *const u32 as u64).to_ne_bytes());
        // Absent already is fine: the socket goes with its last fd anyway.
        let _ = bpf(BPF_MAP_DELETE_ELEM, &mut attr);
        self.xsk = None;
        // The kernel lets go of the queue in deferred work after the last
        // close: until then a bind finds it busy.
        let t0 = std::time::Instant::now();
        loop {
            match self.bind(area) {
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && t0.elapsed() < std::time::Duration::from_secs(2) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                other => return other,
            }
        }
    }

    /// The AF_XDP socket, for driverd (-1 before [`XdpAttach::bind`]).
    pub fn socket_fd(&self) -> RawFd {
        self.xsk.as_ref().map_or(-1, |x| x.as_raw_fd())
    }

    /// "zero-copy" or "copy": how the kernel moves frames to the pool's
    /// buffers.
    pub fn mode(&self) -> &'static str {
        self.mode
    }
}

/// A socket with the pool's buffers (`area`) registered as its UMEM, its
/// rings sized, bound to queue 0 of `ifindex` with `flags`.
fn bind_socket(area: BufferArea, ifindex: u32, flags: u16) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constants; a new fd.
    let xsk = owned(cvt(unsafe {
        libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
    }
    .into())?);
    // The registration pins the pages of the launcher's mapping of the
    // region, the same pages every layer maps.
    let reg = UmemReg {
        addr: area.addr as u64,
        len: area.len as u64,
        chunk_size: CHUNK,
        ..UmemReg::default()
    };
    setsockopt(&xsk, XDP_UMEM_REG, &reg)?;
    for name in [
        XDP_UMEM_FILL_RING,
        XDP_UMEM_COMPLETION_RING,
        XDP_RX_RING,
        XDP_TX_RING,
    ] {
        setsockopt(&xsk, name, &RING)?;
    }
    let sa = SockaddrXdp {
        family: AF_XDP as u16,
        flags,
        ifindex,
        queue_id: 0,
        shared_umem_fd: 0,
    };
    // SAFETY: `sa` is a live sockaddr_xdp of the size given.
    let r = unsafe {
        libc::bind(
            xsk.as_raw_fd(),
            (&sa as *const SockaddrXdp).cast(),
            std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last());
    }
    Ok(xsk)
}

/// An XSKMAP of one entry.
fn xskmap() -> io::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &BPF_MAP_TYPE_XSKMAP.to_ne_bytes());
    put(&mut attr, 4, &4u32.to_ne_bytes());
    put(&mut attr, 8, &4u32.to_ne_bytes());
    put(&mut attr, 12, &1u32.to_ne_bytes());
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// One BPF instruction: `code`, destination and source registers, offset
/// and immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = dst | (src << 4);
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// The XDP program: `return bpf_redirect_map(&map, ctx->rx_queue_index,
/// XDP_PASS);`.
fn redirect_program(map: &OwnedFd) -> io::Result<OwnedFd> {
    let code: Vec<[u8; 8]> = vec![
        // r2 = *(u32 *)(r1 + 16): xdp_md.rx_queue_index
        insn(0x61, 2, 1, 16, 0),
        // r1 = the map (a 64-bit immediate over two slots)
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map.as_raw_fd()),
        insn(0, 0, 0, 0, 0),
        // r3 = XDP_PASS: the action when the map has no socket
        insn(0xb7, 3, 0, 0, XDP_PASS),
        // call bpf_redirect_map
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // exit
        insn(0x95, 0, 0, 0, 0),
    ];
    let insns: Vec<u8> = code.concat();
    let license = c"GPL";
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
    put(&mut attr, 4, &(code.len() as u32).to_ne_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 48, b"strata_xsk\0");
    put(&mut attr, 68, &BPF_XDP.to_ne_bytes());
    bpf(BPF_PROG_LOAD, &mut attr).map(owned)
}

/// Attaches `prog` to `ifindex` through a BPF link (gone with its fd).
fn attach(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 4, &ifindex.to_ne_bytes());
    put(&mut attr, 8, &BPF_XDP.to_ne_bytes());
    put(&mut attr, 12, &flags.to_ne_bytes());
    bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}

/// One of the four rings: a producer and a consumer index, flags and
/// `RING` entries of `T`, mapped from the socket.
struct Ring<T> {
    map: Map,
    off: RingOffset,
    _t: std::marker::PhantomData<T>,
}

impl<T: Copy> Ring<T> {
    fn new(xsk: RawFd, off: RingOffset, pgoff: i64) -> io::Result<Ring<T>> {
        let len = off.desc as usize + RING as usize * std::mem::size_of::<T>();
        Ok(Ring {
            map: Map::new(xsk, len, pgoff)?,
            off,
            _t: std::marker::PhantomData,
        })
    }

    fn index(&self, at: u64) -> &AtomicU32 {
        // SAFETY: the kernel's offsets lie inside the mapping and are
        // 4-byte aligned; the index is shared with the kernel, so atomic.
        unsafe { &*self.map.ptr.add(at as usize).cast::<AtomicU32>() }
    }

    fn producer(&self) -> &AtomicU32 {
        self.index(self.off.producer)
    }

    fn consumer(&self) -> &AtomicU32 {
        self.index(self.off.consumer)
    }

    fn needs_wakeup(&self) -> bool {
        self.index(self.off.flags).load(Ordering::Acquire) & XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, i: u32) -> *mut T {
        let at = self.off.desc as usize + (i % RING) as usize * std::mem::size_of::<T>();
        // SAFETY: `i % RING` is inside the ring's entries, which the
        // mapping covers.
        unsafe { self.map.ptr.add(at).cast::<T>() }
    }

    fn get(&self, i: u32) -> T {
        // SAFETY: an entry of the ring (see `slot`); the kernel may write
        // it, so it is read as it is, once.
        unsafe { self.slot(i).read_volatile() }
    }

    fn set(&self, i: u32, v: T) {
        // SAFETY: as in `get`; an entry we produce, not the kernel's now.
        unsafe { self.slot(i).write_volatile(v) }
    }
}

/// driverd's side: the rings, and the pool buffers the kernel holds.
pub struct Xdp {
    xsk: OwnedFd,
    rx: Ring<Desc>,
    tx: Ring<Desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    /// Where the UMEM (the pool's buffer area) starts in the region.
    area_off: usize,
    /// By buffer index: the buffer given for receiving, in the fill ring
    /// or being filled.
    receiving: Vec<Option<Handle>>,
    /// Buffers given for receiving and not yet back.
    rx_out: u32,
    /// By buffer index: the buffer being sent and how many times (a
    /// duplicated frame is sent twice from one buffer).
    sending: Vec<(u32, Option<Handle>)>,
    /// Frames sent by copy.
    copied: u64,
    /// Receive or completion entries that named no buffer the kernel
    /// held: ignored and counted.
    bad: u64,
}

impl Xdp {
    /// Maps the rings of `xsk` (a copy of the launcher's socket, new and
    /// empty: see the module doc); `pool` is the fabric the UMEM is the
    /// buffers of.
    pub fn from_fd(xsk: OwnedFd, pool: &Pool) -> io::Result<Xdp> {
        let mut off = MmapOffsets::default();
        let mut len = std::mem::size_of::<MmapOffsets>() as libc::socklen_t;
        // SAFETY: `off` is a live, writable MmapOffsets of `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                xsk.as_raw_fd(),
                SOL_XDP,
                XDP_MMAP_OFFSETS,
                (&mut off as *mut MmapOffsets).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {} is not an AF_XDP socket: {}", xsk.as_raw_fd(), last()),
            ));
        }
        let fd = xsk.as_raw_fd();
        let n = pool.fabric().n_bufs() as usize;
        Ok(Xdp {
            rx: Ring::new(fd, off.rx, XDP_PGOFF_RX_RING)?,
            tx: Ring::new(fd, off.tx, XDP_PGOFF_TX_RING)?,
            fill: Ring::new(fd, off.fr, XDP_UMEM_PGOFF_FILL_RING)?,
            comp: Ring::new(fd, off.cr, XDP_UMEM_PGOFF_COMPLETION_RING)?,
            area_off: pool.fabric().buffer_area().offset,
            receiving: vec![None; n],
            rx_out: 0,
            sending: vec![(0, None); n],
            copied: 0,
            bad: 0,
            xsk,
        })
    }

    /// The buffer index at UMEM address `addr`.
    fn buf_at(&self, pool: &Pool, addr: u64) -> Option<usize> {
        let off = usize::try_from(addr).ok()?.checked_add(self.area_off)?;
        pool.fabric().buf_at_offset(off).map(|i| i as usize)
    }

    /// The UMEM address of byte `at` of `h`'s buffer.
    fn umem_addr(&self, pool: &Pool, h: &Handle, at: u32) -> Option<u64> {
        let off = pool.fabric().buf_region_offset(h).ok()?;
        Some((off - self.area_off) as u64 + u64::from(at))
    }

    /// The UMEM address of `h`'s frame, when the frame lies inside one
    /// chunk (the kernel sends nothing else).
    fn frame_addr(&self, pool: &Pool, h: &Handle) -> Option<u64> {
        self.umem_addr(pool, h, h.data_off)
            .filter(|a| a % u64::from(CHUNK) + u64::from(h.data_len) <= u64::from(CHUNK))
    }

    /// Frees the buffers the kernel has sent.
    fn reap(&mut self, pool: &mut Pool) {
        let c = self.comp.consumer().load(Ordering::Relaxed);
        let p = self.comp.producer().load(Ordering::Acquire);
        let n = p.wrapping_sub(c).min(RING);
        for i in 0..n {
            let a = self.comp.get(c.wrapping_add(i));
            match self.buf_at(pool, a).map(|b| &mut self.sending[b]) {
                Some((k @ 1.., h)) => {
                    *k -= 1;
                    let done = if *k == 0 { h.take() } else { *h };
                    if let Some(h) = done {
                        pool.free(&h);
                    }
                }
                _ => self.bad += 1,
            }
        }
        self.comp
            .consumer()
            .store(c.wrapping_add(n), Ordering::Release);
    }

    /// Gives the kernel small pool buffers to receive into, up to
    /// [`RX_BUFFERS`]; false when the pool had none.
    fn refill(&mut self, pool: &mut Pool) -> bool {
        let p = self.fill.producer().load(Ordering::Relaxed);
        let c = self.fill.consumer().load(Ordering::Acquire);
        let room = RING - p.wrapping_sub(c).min(RING);
        let want = room.min(RX_BUFFERS.saturating_sub(self.rx_out));
        let mut n = 0;
        let mut ok = true;
        while n < want {
            let Some(h) = pool.alloc(MAX_FRAME as usize) else {
                ok = false;
                break;
            };
            // A small buffer is one chunk; a large one (the pool's small
            // buffers spent) is not: given back.
            let chunk = self
                .umem_addr(pool, &h, 0)
                .filter(|a| a % u64::from(CHUNK) == 0 && pool.fabric().buf_cap(h.buf) == SMALL_BUF);
            let Some(addr) = chunk else {
                pool.free(&h);
                ok = false;
                break;
            };
            self.receiving[h.buf as usize] = Some(h);
            self.fill.set(p.wrapping_add(n), addr);
            n += 1;
        }
        self.rx_out += n;
        self.fill
            .producer()
            .store(p.wrapping_add(n), Ordering::Release);
        if n > 0 && self.fill.needs_wakeup() {
            self.wake_rx();
        }
        ok
    }

    fn wake_rx(&self) {
        // SAFETY: a zero-length, non-blocking receive on our socket: only
        // a wake-up for the kernel.
        unsafe {
            libc::recvfrom(
                self.xsk.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// The received frame of descriptor `d`: its buffer's handle with the
    /// data window on the frame; None (counted) when the kernel named a
    /// buffer it was not given or a window outside it.
    fn take(&mut self, pool: &mut Pool, d: Desc) -> Option<Handle> {
        let b = self.buf_at(pool, d.addr)?;
        let mut h = self.receiving[b].take()?;
        self.rx_out -= 1;
        let at = self
            .umem_addr(pool, &h, 0)
            .map(|start| d.addr - start)
            .filter(|at| at + u64::from(d.len) <= u64::from(CHUNK));
        let Some(at) = at else {
            pool.free(&h);
            return None;
        };
        h.data_off = at as u32;
        h.data_len = d.len;
        Some(h)
    }

    /// Puts `h` (its frame, `len` bytes at UMEM address `addr`) on the
    /// transmit ring; Ok(false) when the ring is full.
    fn queue(&mut self, addr: u64, h: &Handle) -> io::Result<bool> {
        let p = self.tx.producer().load(Ordering::Relaxed);
        let c = self.tx.consumer().load(Ordering::Acquire);
        if p.wrapping_sub(c) >= RING {
            self.flush()?;
            return Ok(false);
        }
        let slot = &mut self.sending[h.buf as usize];
        slot.0 += 1;
        slot.1 = Some(*h);
        self.tx.set(
            p,
            Desc {
                addr,
                len: h.data_len,
                options: 0,
            },
        );
        self.tx
            .producer()
            .store(p.wrapping_add(1), Ordering::Release);
        Ok(true)
    }
}

/// Refuses an offload request: the socket takes none.
fn no_offloads(off: &Offload) -> io::Result<()> {
    if *off != Offload::default() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "AF_XDP takes no offloads",
        ));
    }
    Ok(())
}

impl PoolDevice for Xdp {
    fn receive(&mut self, pool: &mut Pool, max: usize, out: &mut Vec<(Handle, Offload)>) -> Rx {
        self.reap(pool);
        let c = self.rx.consumer().load(Ordering::Relaxed);
        let p = self.rx.producer().load(Ordering::Acquire);
        let n = p.wrapping_sub(c).min(RING).min(max as u32);
        for i in 0..n {
            let d = self.rx.get(c.wrapping_add(i));
            match self.take(pool, d) {
                Some(h) => out.push((h, Offload::default())),
                None => self.bad += 1,
            }
        }
        self.rx
            .consumer()
            .store(c.wrapping_add(n), Ordering::Release);
        Rx {
            dry: n < max as u32,
            no_buffer: !self.refill(pool),
        }
    }

    fn transmit(&mut self, pool: &mut Pool, h: &Handle, off: &Offload) -> io::Result<bool> {
        no_offloads(off)?;
        self.reap(pool);
        let Some(addr) = self.frame_addr(pool, h) else {
            // Across a chunk's end: from a copy in a small buffer.
            if h.data_len > MAX_FRAME {
                return Err(truncated(MAX_FRAME as usize));
            }
            let Some(mut c) = pool.alloc(h.data_len as usize) else {
                return Ok(false);
            };
            c.data_len = h.data_len;
            let len = h.data_len as usize;
            if pool
                .copy_raw(h, h.data_off as usize, &c, c.data_off as usize, len)
                .is_err()
            {
                pool.free(&c);
                return Err(io::ErrorKind::InvalidInput.into());
            }
            return self.send_copy(pool, c);
        };
        pool.add_ref(h).map_err(|_| io::ErrorKind::InvalidInput)?;
        let sent = self.queue(addr, h)?;
        if !sent {
            pool.free(h);
        }
        Ok(sent)
    }

    fn transmit_copy(
        &mut self,
        pool: &mut Pool,
        parts: &[&[u8]],
        off: &Offload,
    ) -> io::Result<bool> {
        no_offloads(off)?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_FRAME as usize {
            return Err(truncated(MAX_FRAME as usize));
        }
        let Some(mut h) = pool.alloc(len) else {
            return Ok(false);
        };
        h.data_len = len as u32;
        let copied = pool.data_mut(&h).map(|d| {
            let mut at = 0;
            for part in parts {
                d[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
        });
        if copied.is_err() {
            pool.free(&h);
            return Err(io::ErrorKind::InvalidInput.into());
        }
        self.send_copy(pool, h)
    }

    fn settles_references(&self) -> bool {
        false
    }
}

impl Xdp {
    /// Sends `h`, a copy of driverd's own, whose reference the kernel
    /// then holds (freed on refusal).
    fn send_copy(&mut self, pool: &mut Pool, h: Handle) -> io::Result<bool> {
        let sent = match self.frame_addr(pool, &h) {
            Some(addr) => self.queue(addr, &h)?,
            None => {
                pool.free(&h);
                return Err(io::ErrorKind::InvalidInput.into());
            }
        };
        if sent {
            self.copied += 1;
        } else {
            pool.free(&h);
        }
        Ok(sent)
    }
}

impl Driver for Xdp {
    /// Frames come by reference ([`PoolDevice::receive`]): nothing here.
    fn recv_split(
        &mut self,
        _head: &mut [u8],
        _tail: &mut [u8],
    ) -> io::Result<Option<(usize, Offload)>> {
        Ok(None)
    }

    /// Frames go by reference ([`PoolDevice::transmit`]), and copies by
    /// [`PoolDevice::transmit_copy`], which has the pool at hand: nothing
    /// is sent here.
    fn send_parts(&mut self, _parts: &[&[u8]], _off: &Offload) -> io::Result<bool> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an AF_XDP socket sends pool buffers only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        // Copy mode sends only from within a system call; zero-copy asks
        // for one when the driver sleeps.
        let p = self.tx.producer().load(Ordering::Acquire);
        let c = self.tx.consumer().load(Ordering::Acquire);
        if p != c || self.tx.needs_wakeup() {
            // SAFETY: a zero-length, non-blocking send on our socket: the
            // kernel takes the transmit ring.
            let r = unsafe {
                libc::sendto(
                    self.xsk.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = last();
                // Busy or out of room: the ring is taken on the next kick.
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)
                ) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn device_stats(&self) -> Option<DeviceStats> {
        Some(DeviceStats {
            link_up: 1,
            bad_completions: self.bad,
            tx_copied: self.copied,
            rx_buffers: u64::from(self.rx_out),
            ..DeviceStats::default()
        })
    }

    fn pool_device(&mut self) -> Option<&mut dyn PoolDevice> {
        Some(self)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.xsk.as_raw_fd()
    }
}
