//! An existing Linux interface driven through an AF_XDP socket.
//!
//! The launcher ([`XdpAttach::open`]) makes everything that must outlive a
//! driverd: the UMEM (a memfd of [`FRAMES`] frames of [`FRAME`] bytes,
//! registered with the socket), the socket with its four rings, bound to
//! the interface's queue 0, an XSKMAP holding it, and a five-instruction
//! XDP program, attached to the interface by a BPF link, that redirects
//! every frame of that queue to the socket (`bpf_redirect_map`, with
//! `XDP_PASS` when no socket is bound). Closing the link (the launcher
//! exits) detaches the program: nothing is left on the interface.
//!
//! driverd ([`Xdp::from_fds`]) maps the UMEM and the rings from inherited
//! copies of the socket and memfd. The rings' indices live in that shared
//! memory, so a restarted driverd finds every frame where its predecessor
//! left it: frames in the fill and transmit rings are the kernel's,
//! frames in the receive and completion rings wait for us, every other
//! frame is free (one popped from the receive ring but not yet copied
//! when driverd died is simply lost, as on a wire).
//!
//! Frames are copied between the UMEM and the pool's buffers, one copy
//! each way as with a TAP's `read` and `write`. The socket is bound in
//! copy mode unless the interface's driver can do zero-copy, which the
//! launcher tries first ([`XdpAttach::mode`]).
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

use crate::sys::{cvt, last, memfd, owned, Map};
use crate::{truncated, Driver, Offload};

/// Bytes per UMEM frame (room for a 1500-byte MTU frame and headroom;
/// a power of two, as the kernel's aligned mode wants).
pub const FRAME: u32 = 4096;

/// Frames in the UMEM: half for the fill ring, the rest for sending.
pub const FRAMES: u32 = 4096;

/// Entries of each of the four rings.
const RING: u32 = 2048;

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

/// What the launcher holds for an interface driven by AF_XDP: the socket
/// and UMEM it hands to driverd, and the XDP program with the link that
/// keeps it attached.
pub struct XdpAttach {
    xsk: OwnedFd,
    umem: OwnedFd,
    _map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    mode: &'static str,
}

impl XdpAttach {
    /// Sets up AF_XDP on interface `ifname` (queue 0): see the module doc.
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
        let umem = make_umem()?;
        let attempt = |flags| bind_socket(&umem, ifindex, flags);
        let (xsk, mode) = match attempt(XDP_ZEROCOPY | XDP_USE_NEED_WAKEUP) {
            Ok(s) => (s, "zero-copy"),
            Err(_) => (attempt(XDP_COPY | XDP_USE_NEED_WAKEUP)?, "copy"),
        };
        let map = xskmap()?;
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &(map.as_raw_fd() as u32).to_ne_bytes());
        let key = 0u32;
        let value = xsk.as_raw_fd() as u32;
        put(&mut attr, 8, &(&key as *const u32 as u64).to_ne_bytes());
        put(&mut attr, 16, &(&value as *const u32 as u64).to_ne_bytes());
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
        let prog = redirect_program(&map)?;
        // The driver's own XDP hook if it has one, else the generic one.
        let link =
            attach(&prog, ifindex, 0).or_else(|_| attach(&prog, ifindex, XDP_FLAGS_SKB_MODE))?;
        Ok(XdpAttach {
            xsk,
            umem,
            _map: map,
            _prog: prog,
            _link: link,
            mode,
        })
    }

    /// The AF_XDP socket, for driverd.
    pub fn socket_fd(&self) -> RawFd {
        self.xsk.as_raw_fd()
    }

    /// The UMEM's memfd, for driverd.
    pub fn umem_fd(&self) -> RawFd {
        self.umem.as_raw_fd()
    }

    /// "zero-copy" or "copy": how the kernel moves frames to the UMEM.
    pub fn mode(&self) -> &'static str {
        self.mode
    }
}

/// The UMEM: a memfd of `FRAMES * FRAME` bytes.
fn make_umem() -> io::Result<OwnedFd> {
    memfd(c"strata-umem", u64::from(FRAMES) * u64::from(FRAME))
}

/// A socket with the UMEM registered, its rings sized, bound to queue 0
/// of `ifindex` with `flags`.
fn bind_socket(umem: &OwnedFd, ifindex: u32, flags: u16) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constants; a new fd.
    let xsk = owned(cvt(unsafe {
        libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
    }
    .into())?);
    let len = FRAMES as usize * FRAME as usize;
    // The registration pins the pages; this mapping only names them and
    // goes when we return (driverd maps the memfd itself).
    let map = Map::new(umem.as_raw_fd(), len, 0)?;
    let reg = UmemReg {
        addr: map.ptr as u64,
        len: len as u64,
        chunk_size: FRAME,
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

/// driverd's side: the rings and the UMEM, and the frames that are free.
pub struct Xdp {
    xsk: OwnedFd,
    umem: Map,
    rx: Ring<Desc>,
    tx: Ring<Desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    /// UMEM frame addresses free for sending or refilling.
    free: Vec<u64>,
}

impl Xdp {
    /// Maps the UMEM (`umem`, the launcher's memfd) and the rings of
    /// `xsk` (the launcher's socket), finds the free frames (see the
    /// module doc) and fills the fill ring.
    pub fn from_fds(xsk: OwnedFd, umem: OwnedFd) -> io::Result<Xdp> {
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
        let mut x = Xdp {
            umem: Map::new(umem.as_raw_fd(), FRAMES as usize * FRAME as usize, 0)?,
            rx: Ring::new(fd, off.rx, XDP_PGOFF_RX_RING)?,
            tx: Ring::new(fd, off.tx, XDP_PGOFF_TX_RING)?,
            fill: Ring::new(fd, off.fr, XDP_UMEM_PGOFF_FILL_RING)?,
            comp: Ring::new(fd, off.cr, XDP_UMEM_PGOFF_COMPLETION_RING)?,
            free: Vec::with_capacity(FRAMES as usize),
            xsk,
        };
        drop(umem);
        x.find_free();
        x.refill();
        Ok(x)
    }

    /// Every frame that is in no ring: free.
    fn find_free(&mut self) {
        let mut used = vec![false; FRAMES as usize];
        let mut mark = |addr: u64| {
            if let Some(u) = used.get_mut((addr / u64::from(FRAME)) as usize) {
                *u = true;
            }
        };
        let span = |r: &AtomicU32, p: &AtomicU32| {
            let (c, p) = (r.load(Ordering::Acquire), p.load(Ordering::Acquire));
            c..c.wrapping_add(p.wrapping_sub(c).min(RING))
        };
        for i in span(self.fill.consumer(), self.fill.producer()) {
            mark(self.fill.get(i));
        }
        for i in span(self.comp.consumer(), self.comp.producer()) {
            mark(self.comp.get(i));
        }
        for i in span(self.rx.consumer(), self.rx.producer()) {
            mark(self.rx.get(i).addr);
        }
        for i in span(self.tx.consumer(), self.tx.producer()) {
            mark(self.tx.get(i).addr);
        }
        self.free = (0..FRAMES)
            .filter(|&f| !used[f as usize])
            .map(|f| u64::from(f) * u64::from(FRAME))
            .collect();
    }

    /// Frames the kernel has sent: free again.
    fn reap(&mut self) {
        let c = self.comp.consumer().load(Ordering::Relaxed);
        let p = self.comp.producer().load(Ordering::Acquire);
        let n = p.wrapping_sub(c).min(RING);
        for i in 0..n {
            let a = self.comp.get(c.wrapping_add(i));
            if self.valid(a) {
                self.free.push(a);
            }
        }
        self.comp
            .consumer()
            .store(c.wrapping_add(n), Ordering::Release);
    }

    /// Gives the kernel free frames to receive into, keeping half of
    /// them for sending.
    fn refill(&mut self) {
        let p = self.fill.producer().load(Ordering::Relaxed);
        let c = self.fill.consumer().load(Ordering::Acquire);
        let room = RING - p.wrapping_sub(c).min(RING);
        let spare = self.free.len().saturating_sub(FRAMES as usize / 2) as u32;
        let n = room.min(spare);
        for i in 0..n {
            let a = self.free.pop().expect("counted");
            self.fill.set(p.wrapping_add(i), a);
        }
        self.fill
            .producer()
            .store(p.wrapping_add(n), Ordering::Release);
        if n > 0 && self.fill.needs_wakeup() {
            self.wake_rx();
        }
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

    /// Whether `addr` is the start of a UMEM frame (what the kernel hands
    /// back is checked, not trusted).
    fn valid(&self, addr: u64) -> bool {
        addr.is_multiple_of(u64::from(FRAME)) && addr < u64::from(FRAMES) * u64::from(FRAME)
    }

    /// The bytes of the frame at `addr`, `len` long (within the frame).
    fn frame(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let len = len.min(FRAME as usize - (addr % u64::from(FRAME)) as usize);
        // SAFETY: `addr..addr+len` lies inside the UMEM mapping (checked
        // by the callers with `valid`, and `len` is cut to the frame).
        unsafe { std::slice::from_raw_parts_mut(self.umem.ptr.add(addr as usize), len) }
    }
}

impl Driver for Xdp {
    fn recv_split(
        &mut self,
        head: &mut [u8],
        tail: &mut [u8],
    ) -> io::Result<Option<(usize, Offload)>> {
        let c = self.rx.consumer().load(Ordering::Relaxed);
        let p = self.rx.producer().load(Ordering::Acquire);
        if c == p {
            self.refill();
            return Ok(None);
        }
        let d = self.rx.get(c);
        self.rx
            .consumer()
            .store(c.wrapping_add(1), Ordering::Release);
        // The frame's start: aligned mode may hand an address inside the
        // frame (after headroom); the frame it names is freed.
        let base = d.addr - d.addr % u64::from(FRAME);
        if !self.valid(base) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad rx descriptor",
            ));
        }
        let len = d.len as usize;
        let r = if len > head.len() + tail.len() {
            Err(truncated(head.len() + tail.len()))
        } else {
            let (h, t) = (len.min(head.len()), len.saturating_sub(head.len()));
            let addr = d.addr;
            let f = self.frame(addr, len);
            if f.len() < len {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "rx descriptor past its frame",
                ))
            } else {
                head[..h].copy_from_slice(&f[..h]);
                tail[..t].copy_from_slice(&f[h..len]);
                Ok(Some((len, Offload::default())))
            }
        };
        self.free.push(base);
        if self.free.len() > FRAMES as usize / 2 {
            self.refill();
        }
        r
    }

    fn send_parts(&mut self, parts: &[&[u8]], off: &Offload) -> io::Result<bool> {
        if *off != Offload::default() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "AF_XDP takes no offloads",
            ));
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > FRAME as usize {
            return Err(truncated(FRAME as usize));
        }
        let p = self.tx.producer().load(Ordering::Relaxed);
        let c = self.tx.consumer().load(Ordering::Acquire);
        if self.free.is_empty() {
            self.reap();
        }
        if p.wrapping_sub(c) >= RING {
            self.flush()?;
            return Ok(false);
        }
        let Some(addr) = self.free.pop() else {
            self.flush()?;
            return Ok(false);
        };
        let f = self.frame(addr, len);
        let mut at = 0;
        for part in parts {
            f[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        self.tx.set(
            p,
            Desc {
                addr,
                len: len as u32,
                options: 0,
            },
        );
        self.tx
            .producer()
            .store(p.wrapping_add(1), Ordering::Release);
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.reap();
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

    fn as_raw_fd(&self) -> RawFd {
        self.xsk.as_raw_fd()
    }
}
