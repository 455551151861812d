//! The shared region itself: creation by the launcher, mapping by layers,
//! the packet pool, rings, wake-ups, counters, arenas and reclaim.

use crate::bufs::{window, BufError, Buffers, HEADROOM, LARGE_BUF, SMALL_BUF};
use crate::freelist;
use crate::handle::Handle;
use crate::layer::{topology, Carries, LayerId, MAX_IFACES, MAX_LAYERS};
use crate::layout::*;
use crate::raw::Region;
use shared_memory::{Shmem, ShmemConf, ShmemError};
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicU32, Ordering::*};

/// Environment variable through which the launcher tells a layer which
/// inherited fd is whose eventfd: a comma-separated list indexed by layer
/// id, `-1` where a layer has none.
pub const WAKE_ENV: &str = "STRATA_WAKE_FDS";

/// Why the fabric could not be created or mapped.
#[derive(Debug)]
pub enum FabricError {
    /// A region of that name exists already (another instance, or a
    /// leftover of one that was killed).
    Exists(String),
    /// No region of that name: the stack is not running.
    NotFound(String),
    /// The region is not a strata fabric of this version.
    BadLayout(String),
    /// The parameters cannot describe a fabric.
    BadParams(String),
    /// The OS refused.
    Os(String),
}

impl fmt::Display for FabricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FabricError::Exists(n) => write!(f, "shared memory segment {n} already exists"),
            FabricError::NotFound(n) => {
                write!(f, "no shared memory segment {n}: is the stack running?")
            }
            FabricError::BadLayout(m) => write!(f, "not a usable strata fabric: {m}"),
            FabricError::BadParams(m) => write!(f, "bad fabric parameters: {m}"),
            FabricError::Os(m) => write!(f, "shared memory: {m}"),
        }
    }
}

impl std::error::Error for FabricError {}

/// The OS name of an instance's shared region.
pub fn shm_name(instance: &str) -> String {
    format!("strata-{instance}")
}

/// A mapping of the fabric. Cheap to share by reference between threads;
/// every mutable part of the region is atomic or owned by protocol
/// (a buffer's bytes by the layers holding references on it, which agree
/// who writes what; a ring index by one side).
pub struct Fabric {
    shm: Shmem,
    /// The whole mapping, and below the arrays in it. `'static` stands for
    /// "as long as this value": `shm` keeps the region mapped, and every
    /// accessor hands out references borrowed from `&self` only.
    region: Region<'static>,
    ctls: &'static [LayerCtl],
    ifaces: &'static [IfaceBlock],
    bufhdrs: &'static [BufHdr],
    descs: &'static [RingDesc],
    /// Every ring's slots, ring after ring.
    slots: Region<'static>,
    off: Offsets,
    params: Params,
    n_rings: u32,
    ring_ends: Vec<(LayerId, LayerId)>,
    wake: [RawFd; MAX_LAYERS],
    /// The layer this process is: whose references `free` and `add_ref`
    /// change (the launcher unless [`Fabric::set_me`] says otherwise).
    me: LayerId,
    /// Sleep on a futex when there is no fd to watch ([`Fabric::sleep`]).
    futex_wait: bool,
}

/// How a [`Fabric::sleep`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slept {
    /// A kick ended it (else an fd, or the time).
    pub kicked: bool,
    /// System calls it made (the wait, and the eventfd read after a kick
    /// when it polled).
    pub syscalls: u32,
}

/// [`LayerCtl::sleeping`]: the layer sleeps in poll on its eventfd (and
/// other fds); a kick writes the eventfd.
const SLEEP_POLL: u32 = 1;
/// [`LayerCtl::sleeping`]: the layer sleeps in a futex wait on the flag
/// itself; a kick wakes the futex.
const SLEEP_FUTEX: u32 = 2;

// SAFETY: `Shmem` is only the mapping's owner (it is not Send because it
// holds a raw pointer); every mutable part of the region is atomic or
// owned by protocol (see above), whichever thread or process touches it.
unsafe impl Send for Fabric {}
// SAFETY: as for Send: shared access from several threads is what the
// atomics and the protocol are for.
unsafe impl Sync for Fabric {}

impl Fabric {
    /// Creates and initialises the region of `instance` (launcher only).
    /// The creator owns it: dropping this mapping removes the region.
    pub fn create(instance: &str, params: Params) -> Result<Fabric, FabricError> {
        if params.ring_size < 2 || !params.ring_size.is_power_of_two() {
            return Err(FabricError::BadParams(format!(
                "ring size {} is not a power of two",
                params.ring_size
            )));
        }
        if params.n_ifaces == 0 || params.n_ifaces as usize > MAX_IFACES {
            return Err(FabricError::BadParams(format!(
                "{} interfaces (1..={MAX_IFACES})",
                params.n_ifaces
            )));
        }
        if params.small_bufs + params.large_bufs == 0
            || params.small_bufs as u64 + params.large_bufs as u64 >= freelist::MAX_BUFFERS as u64
        {
            return Err(FabricError::BadParams("buffer counts".into()));
        }
        // Each arena starts where the one before it ends, and tcpd's and
        // filterd's want 64-byte alignment (the last, sockd's, any size).
        if [
            params.arena_bytes,
            params.tcpd_arena_bytes,
            params.filterd_arena_bytes,
        ]
        .iter()
        .any(|n| !n.is_multiple_of(64))
        {
            return Err(FabricError::BadParams(
                "arena sizes but sockd's are multiples of 64 bytes".into(),
            ));
        }
        let ends = topology(params.n_ifaces as u8);
        let n_rings = ends.len() as u32;
        let off = Offsets::compute(&params, n_rings);
        let name = shm_name(instance);
        let shm = ShmemConf::new()
            .os_id(&name)
            .size(off.total as usize)
            .create()
            .map_err(|e| match e {
                ShmemError::MappingIdExists => FabricError::Exists(name.clone()),
                e => FabricError::Os(e.to_string()),
            })?;
        if shm.len() < off.total as usize {
            return Err(FabricError::Os("mapping smaller than asked".into()));
        }
        let f = Fabric::over(shm, off, params, ends.clone());
        // A new POSIX shm object reads as zeros, which is a valid empty
        // state for every atomic; only non-zero fields need setting.
        // SAFETY: nobody else uses these plain fields yet: this process
        // holds no other reference to them, and a layer that maps the
        // region reads them only after the magic, published below.
        let (h, descs) = unsafe {
            (
                f.region.get_mut::<Header>(0),
                (0..ends.len())
                    .map(|i| {
                        f.region.get_mut::<RingDesc>(
                            off.ringdesc as usize + i * std::mem::size_of::<RingDesc>(),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        };
        {
            h.version = VERSION;
            h.n_rings = n_rings;
            h.params = params;
            h.total_size = off.total;
            h.ctl_off = off.ctl;
            h.iface_off = off.iface;
            h.bufhdr_off = off.bufhdr;
            h.ringdesc_off = off.ringdesc;
            h.arena_off = off.arena;
            h.small_off = off.small;
            h.large_off = off.large;
            h.launch_off = off.launch;
            h.pool_off = off.pool;
            for (i, (&(p, c), d)) in ends.iter().zip(descs).enumerate() {
                d.producer = p.0 as u32;
                d.consumer = c.0 as u32;
                d.serving = AtomicU32::new(c.0 as u32);
                d.size = params.ring_size;
                d.slots_off = off.slots
                    + i as u64 * params.ring_size as u64 * std::mem::size_of::<Handle>() as u64;
            }
        }
        f.pool_ctl().free_head[0].store(freelist::empty(), Relaxed);
        f.pool_ctl().free_head[1].store(freelist::empty(), Relaxed);
        for i in (0..f.n_bufs()).rev() {
            let b = f.bufhdr(i);
            b.owner.store(OWNER_FREE, Relaxed);
            b.gen.store(1, Relaxed);
            f.push_free(i);
        }
        // Publish the magic last: a layer that maps a half-built region
        // sees no magic and refuses it.
        fence(Release);
        f.header().magic.store(MAGIC, Release);
        Ok(f)
    }

    /// Maps the existing region of `instance` (every layer, the CLI).
    pub fn open(instance: &str) -> Result<Fabric, FabricError> {
        let name = shm_name(instance);
        let shm = ShmemConf::new().os_id(&name).open().map_err(|e| match e {
            ShmemError::MapOpenFailed(_) => FabricError::NotFound(name.clone()),
            e => FabricError::Os(e.to_string()),
        })?;
        if shm.len() < std::mem::size_of::<Header>() {
            return Err(FabricError::BadLayout("region too small".into()));
        }
        // SAFETY: `shm` maps these bytes until it is dropped, after `h`'s
        // last use below, and nothing else in this process has them.
        let h = unsafe { Region::new(shm.as_ptr(), shm.len()) }.get::<Header>(0);
        if h.magic.load(Acquire) != MAGIC {
            return Err(FabricError::BadLayout("bad magic".into()));
        }
        if h.version != VERSION {
            return Err(FabricError::BadLayout(format!(
                "layout version {} (this build speaks {VERSION})",
                h.version
            )));
        }
        let params = h.params;
        let ends = topology(params.n_ifaces as u8);
        let off = Offsets::compute(&params, ends.len() as u32);
        if h.n_rings != ends.len() as u32
            || h.total_size != off.total
            || shm.len() < off.total as usize
        {
            return Err(FabricError::BadLayout("layout mismatch".into()));
        }
        Ok(Fabric::over(shm, off, params, ends))
    }

    /// The mapping `shm`, which holds at least `off.total` bytes, viewed
    /// through the layout `off`.
    fn over(shm: Shmem, off: Offsets, params: Params, ends: Vec<(LayerId, LayerId)>) -> Fabric {
        // SAFETY: `shm` keeps the bytes mapped, readable and writable, and
        // moves into the returned value with every view made here; the
        // views' `'static` never escapes it (see the field's comment).
        let region: Region<'static> = unsafe { Region::new(shm.as_ptr(), shm.len()) };
        let at = |o: u64| o as usize;
        let n_bufs = (params.small_bufs + params.large_bufs) as usize;
        let n_rings = ends.len();
        let slot_bytes = n_rings * params.ring_size as usize * std::mem::size_of::<Handle>();
        Fabric {
            ctls: region.slice(at(off.ctl), MAX_LAYERS),
            ifaces: region.slice(at(off.iface), MAX_IFACES),
            bufhdrs: region.slice(at(off.bufhdr), n_bufs),
            descs: region.slice(at(off.ringdesc), n_rings),
            slots: region.sub(at(off.slots), slot_bytes),
            region,
            shm,
            off,
            params,
            n_rings: n_rings as u32,
            ring_ends: ends,
            wake: [-1; MAX_LAYERS],
            me: LayerId::LAUNCHER,
            futex_wait: false,
        }
    }

    /// Lets group `gid` (the layers', which run as their own users) map
    /// the region, and nobody else but root: mode 0660, group `gid`.
    pub fn grant_group(&self, gid: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path =
            std::path::Path::new("/dev/shm").join(self.shm.get_os_id().trim_start_matches('/'));
        std::os::unix::fs::chown(&path, None, Some(gid))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
    }

    /// Removes a region left behind by an instance that was killed before
    /// it could clean up. Returns true if one was removed.
    pub fn remove_stale(instance: &str) -> bool {
        match ShmemConf::new().os_id(shm_name(instance)).open() {
            Ok(mut s) => {
                s.set_owner(true);
                true
            }
            Err(_) => false,
        }
    }

    /// Sets the layer this process is, so that [`free`](Self::free) and
    /// [`add_ref`](Self::add_ref) charge its references.
    pub fn set_me(&mut self, me: LayerId) {
        self.me = me;
    }

    /// Whether this mapping removes the region when dropped.
    pub fn is_owner(&self) -> bool {
        self.shm.is_owner()
    }

    /// Gives up (or takes) ownership of the region.
    pub fn set_owner(&mut self, owner: bool) {
        self.shm.set_owner(owner);
    }

    /// The sizes the region was created with.
    pub fn params(&self) -> Params {
        self.params
    }

    /// Total bytes mapped.
    pub fn size(&self) -> u64 {
        self.off.total
    }

    #[inline]
    fn header(&self) -> &Header {
        self.region.get(0)
    }

    /// The pool's free lists and error counts.
    #[inline]
    fn pool_ctl(&self) -> &PoolCtl {
        self.region.get(self.off.pool as usize)
    }

    /// What the launcher writes of `l`'s control (read-only to layers).
    #[inline]
    pub fn launch(&self, l: LayerId) -> &LaunchCtl {
        self.region
            .get(self.off.launch as usize + l.0 as usize * std::mem::size_of::<LaunchCtl>())
    }

    /// Leaves writable in this process only what layer `me` writes: the
    /// header and the launcher's control pages, and every other layer's
    /// arena, become read-only. A layer calls it once, before it serves
    /// (its seccomp filter then refuses `mprotect`, so it stays so).
    pub fn protect_for(&self, me: LayerId) -> io::Result<()> {
        self.region.protect_read(0, self.off.pool as usize)?;
        let mut others: Vec<LayerId> = (0..MAX_LAYERS as u8).map(LayerId).collect();
        others.retain(|&l| l != me);
        for l in others {
            let a = self.arena(l);
            let start = a.ptr(0) as usize - self.region.ptr(0) as usize;
            // Whole pages only: a page shared with our own arena stays.
            let first = start.div_ceil(4096) * 4096;
            let end = (start + a.len()) / 4096 * 4096;
            if end > first {
                self.region.protect_read(first, end - first)?;
            }
        }
        Ok(())
    }

    /// A layer's control block.
    #[inline]
    pub fn ctl(&self, l: LayerId) -> &LayerCtl {
        &self.ctls[l.0 as usize]
    }

    /// An interface's block.
    #[inline]
    pub fn iface(&self, i: u8) -> &IfaceBlock {
        &self.ifaces[i as usize]
    }

    /// Records an interface's name, MAC and MTU (launcher).
    pub fn set_iface_info(&self, i: u8, name: &str, mac: [u8; 6], mtu: u32) {
        assert!((i as usize) < MAX_IFACES);
        // Plain bytes, not atomics: written through the region, not
        // through a shared reference.
        let b = self.off.iface as usize + i as usize * std::mem::size_of::<IfaceBlock>();
        let name_at = b + std::mem::offset_of!(IfaceBlock, name);
        let n = name.as_bytes();
        let k = n.len().min(15);
        self.region.fill(name_at, 16, 0);
        self.region.copy_in(name_at, &n[..k]);
        self.region
            .copy_in(b + std::mem::offset_of!(IfaceBlock, mac), &mac);
        self.iface(i).mtu.store(mtu, Relaxed);
    }

    /// An interface's name, as the launcher recorded it.
    pub fn iface_name(&self, i: u8) -> String {
        let n = &self.iface(i).name;
        let end = n.iter().position(|&c| c == 0).unwrap_or(n.len());
        String::from_utf8_lossy(&n[..end]).into_owned()
    }

    /// Adds to an interface counter (index from [`ifc`]).
    #[inline]
    pub fn iface_add(&self, i: u8, counter: usize, v: u64) {
        self.iface(i).counters[counter].fetch_add(v, Relaxed);
    }

    /// Whether interface `i` is up (the default).
    pub fn iface_up(&self, i: u8) -> bool {
        self.iface(i).down.load(Acquire) == 0
    }

    /// Sets interface `i` up or down (the launcher, `strata link set`).
    pub fn set_iface_up(&self, i: u8, up: bool) {
        self.iface(i).down.store(u32::from(!up), Release);
    }

    // ---------------------------------------------------------------- pool

    /// Number of buffers of both classes.
    #[inline]
    pub fn n_bufs(&self) -> u32 {
        self.bufhdrs.len() as u32
    }

    #[inline]
    fn bufhdr(&self, i: u32) -> &BufHdr {
        &self.bufhdrs[i as usize]
    }

    fn class(&self, i: u32) -> usize {
        (i >= self.params.small_bufs) as usize
    }

    /// Capacity of buffer `i`.
    pub fn buf_cap(&self, i: u32) -> usize {
        if self.class(i) == 0 {
            SMALL_BUF
        } else {
            LARGE_BUF
        }
    }

    /// The packet buffers of both classes, for a device that reaches
    /// them by DMA (the launcher maps them into the IOMMU): where they
    /// start in this process's address space, how many bytes, and where
    /// they start in the region. Page-aligned.
    pub fn buffer_area(&self) -> BufferArea {
        let offset = self.off.small as usize;
        let len = self.off.capture as usize - offset;
        BufferArea {
            addr: self.region.ptr(offset) as usize,
            len,
            offset,
        }
    }

    /// Where `h`'s buffer starts in the region (the offset a device that
    /// reaches the buffers by DMA adds to their bus address), once `h` is
    /// checked live.
    pub fn buf_region_offset(&self, h: &Handle) -> Result<usize, BufError> {
        self.check(h)?;
        Ok(self.buf_off(h.buf))
    }

    /// The buffer whose bytes hold region offset `off`, if any (the way
    /// back from an address a device hands back).
    pub fn buf_at_offset(&self, off: usize) -> Option<u32> {
        let (small, large) = (self.off.small as usize, self.off.large as usize);
        let n_small = self.params.small_bufs as usize;
        let i = if (small..small + n_small * SMALL_BUF).contains(&off) {
            (off - small) / SMALL_BUF
        } else if (large..large + self.params.large_bufs as usize * LARGE_BUF).contains(&off) {
            n_small + (off - large) / LARGE_BUF
        } else {
            return None;
        };
        u32::try_from(i).ok()
    }

    /// Where buffer `i`'s bytes start in the region.
    #[inline]
    fn buf_off(&self, i: u32) -> usize {
        if i < self.params.small_bufs {
            self.off.small as usize + i as usize * SMALL_BUF
        } else {
            self.off.large as usize + (i - self.params.small_bufs) as usize * LARGE_BUF
        }
    }

    fn push_free(&self, i: u32) {
        let list = &self.pool_ctl().free_head[self.class(i)];
        freelist::push(list, i, &self.bufhdr(i).next);
    }

    /// Pops a buffer of class `c`, naming each candidate in this
    /// process's [`LayerCtl::pool_op`] before taking it.
    fn pop_free(&self, c: usize) -> Option<u32> {
        let op = &self.ctl(self.me).pool_op;
        freelist::pop(
            &self.pool_ctl().free_head[c],
            self.n_bufs(),
            |i| op.store(u64::from(i) + 1, Relaxed),
            |i| &self.bufhdr(i).next,
        )
    }

    /// Allocates a buffer for `len` bytes after the headroom, with one
    /// reference held by `me`.
    pub fn alloc(&self, me: LayerId, len: usize) -> Option<Handle> {
        let need = len.checked_add(HEADROOM as usize)?;
        let i = if need <= SMALL_BUF {
            self.pop_free(0).or_else(|| self.pop_free(1))
        } else if need <= LARGE_BUF {
            self.pop_free(1)
        } else {
            return None;
        };
        let op = &self.ctl(self.me).pool_op;
        let Some(i) = i else {
            op.store(0, Release);
            return None;
        };
        let b = self.bufhdr(i);
        b.flags.store(0, Relaxed);
        b.owner.store(me.0 as u32, Relaxed);
        b.holders.store(holder_one(me.0), Release);
        // Held now: no longer in a window a kill could strand it in.
        op.store(0, Release);
        Some(Handle::new(i, b.gen.load(Relaxed), HEADROOM))
    }

    /// Checks that `h` names a live buffer of its generation.
    pub fn check(&self, h: &Handle) -> Result<(), BufError> {
        if h.buf >= self.n_bufs() {
            return Err(BufError::BadIndex);
        }
        let b = self.bufhdr(h.buf);
        if b.gen.load(Acquire) != h.gen || b.holders.load(Acquire) == 0 {
            return Err(BufError::Stale);
        }
        Ok(())
    }

    /// Drops one of this process's references ([`set_me`](Self::set_me));
    /// the last one returns the buffer to the pool. A stale handle, a
    /// double free or a free of a reference this layer does not hold is
    /// refused and counted.
    pub fn free(&self, h: &Handle) {
        self.free_as(self.me, h)
    }

    /// [`free`](Self::free) of a reference held by `me`.
    pub fn free_as(&self, me: LayerId, h: &Handle) {
        if h.is_inline() {
            return;
        }
        if self.check(h).is_err() {
            self.pool_ctl().stale_refused.fetch_add(1, Relaxed);
            return;
        }
        self.release(h.buf, me, 1);
    }

    /// Drops `n` references of layer `who` on buffer `i`, and frees the
    /// buffer when none is left. Returns false (and counts a refused
    /// free) if `who` holds fewer than `n`.
    fn release(&self, i: u32, who: LayerId, n: u64) -> bool {
        if n == 0 {
            return true;
        }
        let b = self.bufhdr(i);
        let one = holder_one(who.0);
        // From the last reference gone to the buffer back on its list, a
        // kill would strand it: named while it is in that window.
        let op = &self.ctl(self.me).pool_op;
        op.store(u64::from(i) + 1, Relaxed);
        let r = b.holders.fetch_update(AcqRel, Acquire, |h| {
            (holder_count(h, who.0) >= n).then(|| h - n * one)
        });
        let ok = match r {
            Err(_) => {
                self.pool_ctl().double_free.fetch_add(1, Relaxed);
                false
            }
            Ok(prev) => {
                if prev == n * one {
                    self.finish_free(i);
                }
                true
            }
        };
        op.store(0, Release);
        ok
    }

    /// Puts buffer `i`, whose last reference is gone, back on its free list.
    fn finish_free(&self, i: u32) {
        // Reclaim may finish the same free for a dead recorded owner (see
        // `reclaim`); whoever takes the owner field to free pushes.
        if self.bufhdr(i).owner.swap(OWNER_FREE, AcqRel) != OWNER_FREE {
            self.put_back(i);
        }
    }

    /// Invalidates the handles of buffer `i` and returns it to its list;
    /// the caller has set its owner field free.
    fn put_back(&self, i: u32) {
        let b = self.bufhdr(i);
        b.gen.fetch_add(1, Release);
        b.flags.store(0, Relaxed);
        self.push_free(i);
    }

    /// Adds a reference to a live buffer, held by this process's layer.
    pub fn add_ref(&self, h: &Handle) -> Result<(), BufError> {
        self.add_ref_as(self.me, h)
    }

    /// [`add_ref`](Self::add_ref) for layer `me`. A layer holds at most
    /// [`HOLDER_MAX`] references on one buffer; more are refused (as
    /// [`BufError::Stale`]: the caller treats the buffer as unusable and
    /// copies or waits instead).
    pub fn add_ref_as(&self, me: LayerId, h: &Handle) -> Result<(), BufError> {
        self.check(h)?;
        let one = holder_one(me.0);
        self.bufhdr(h.buf)
            .holders
            .fetch_update(AcqRel, Acquire, |x| {
                (x != 0 && holder_count(x, me.0) < HOLDER_MAX).then(|| x + one)
            })
            .map(|_| ())
            .map_err(|_| BufError::Stale)
    }

    /// References layer `l` holds on buffer `i`.
    pub fn refs_of(&self, i: u32, l: LayerId) -> u32 {
        holder_count(self.bufhdr(i).holders.load(Acquire), l.0) as u32
    }

    /// Marks a buffer as state its owner keeps in its arena (or not). For
    /// `strata status` only: a layer that keeps buffers across a restart
    /// settles its references itself ([`reconcile`](Self::reconcile)).
    pub fn set_pinned(&self, h: &Handle, pinned: bool) -> Result<(), BufError> {
        self.check(h)?;
        let f = &self.bufhdr(h.buf).flags;
        if pinned {
            f.fetch_or(FLAG_PINNED, Relaxed);
        } else {
            f.fetch_and(!FLAG_PINNED, Relaxed);
        }
        Ok(())
    }

    /// The layer recorded as owning buffer `i` (None when free).
    pub fn owner_of(&self, i: u32) -> Option<LayerId> {
        let o = self.bufhdr(i).owner.load(Acquire);
        (o != OWNER_FREE).then_some(LayerId(o as u8))
    }

    /// Buffers on the free lists, (small, large).
    pub fn free_counts(&self) -> (u32, u32) {
        let h = self.pool_ctl();
        (
            freelist::head(&h.free_head[0]).count,
            freelist::head(&h.free_head[1]).count,
        )
    }

    /// Live buffers marked pinned (state a layer keeps in its arena).
    pub fn pinned_count(&self) -> u32 {
        (0..self.n_bufs())
            .filter(|&i| {
                let b = self.bufhdr(i);
                b.holders.load(Relaxed) != 0 && b.flags.load(Relaxed) & FLAG_PINNED != 0
            })
            .count() as u32
    }

    /// Buffers some layer holds a reference on (a scan of the headers, so
    /// it does not depend on the free lists' counts). Without a layer
    /// inside `alloc` or a last free, the pool's size less this is what
    /// the free lists should count; a difference that stays is a buffer
    /// lost by a layer killed inside one of those.
    pub fn held_count(&self) -> u32 {
        (0..self.n_bufs())
            .filter(|&i| self.bufhdr(i).holders.load(Relaxed) != 0)
            .count() as u32
    }

    /// Buffer references held, by layer (indexed by layer id); a buffer
    /// two layers share counts for both.
    pub fn in_use_by_owner(&self) -> [u32; MAX_LAYERS] {
        let mut v = [0; MAX_LAYERS];
        for i in 0..self.n_bufs() {
            let h = self.bufhdr(i).holders.load(Relaxed);
            if h == 0 {
                continue;
            }
            for (l, n) in v.iter_mut().enumerate() {
                *n += holder_count(h, l as u8) as u32;
            }
        }
        v
    }

    /// Stale or bad handles refused, and double frees refused.
    pub fn pool_errors(&self) -> (u64, u64) {
        let h = self.pool_ctl();
        (h.stale_refused.load(Relaxed), h.double_free.load(Relaxed))
    }

    /// A [`Buffers`] view of the pool for layer `me`.
    pub fn pool(&self, me: LayerId) -> Pool<'_> {
        Pool { f: self, me }
    }

    // --------------------------------------------------------------- rings

    #[inline]
    fn ring_desc(&self, r: usize) -> &RingDesc {
        &self.descs[r]
    }

    /// Byte offset in `slots` of ring `r`'s slot for index `idx`.
    #[inline]
    fn slot_off(&self, r: usize, idx: u32) -> usize {
        let size = self.params.ring_size;
        (r * size as usize + (idx & (size - 1)) as usize) * std::mem::size_of::<Handle>()
    }

    /// The handle in ring `r`'s slot `idx` (the ring's protocol keeps the
    /// producer off a slot between its publication and its consumption).
    #[inline]
    fn slot(&self, r: usize, idx: u32) -> Handle {
        self.slots.read(self.slot_off(r, idx))
    }

    #[inline]
    fn set_slot(&self, r: usize, idx: u32, h: Handle) {
        self.slots.write(self.slot_off(r, idx), h)
    }

    /// The ring from `from` to `to`, if the topology has one.
    pub fn ring_index(&self, from: LayerId, to: LayerId) -> Option<usize> {
        self.ring_ends.iter().position(|&e| e == (from, to))
    }

    /// All rings: (producer, consumer, who takes from it now, size,
    /// occupancy).
    pub fn rings(&self) -> Vec<(LayerId, LayerId, LayerId, u32, u32)> {
        (0..self.n_rings as usize)
            .map(|r| {
                let d = self.ring_desc(r);
                let len = d.tail.load(Acquire).wrapping_sub(d.head.load(Acquire));
                let (p, c) = self.ring_ends[r];
                (p, c, self.serving(r), d.size, len)
            })
            .collect()
    }

    /// Moves ring `r`'s head back by `n` slots, as if its consumer had died
    /// inside a pop before publishing it (tests of reclaim only).
    #[doc(hidden)]
    pub fn rewind_head_for_test(&self, r: usize, n: u32) {
        let d = self.ring_desc(r);
        d.head.store(d.head.load(Acquire).wrapping_sub(n), Release);
    }

    /// The producing end of the ring `from` → `to` (only `from` may hold it).
    pub fn producer(&self, from: LayerId, to: LayerId) -> Option<Producer<'_>> {
        let r = self.ring_index(from, to)?;
        Some(Producer {
            f: self,
            r,
            d: self.ring_desc(r),
        })
    }

    /// The consuming end of the ring `from` → `to` (only `to` may hold it).
    pub fn consumer(&self, from: LayerId, to: LayerId) -> Option<Consumer<'_>> {
        let r = self.ring_index(from, to)?;
        Some(Consumer::new(self, r, to))
    }

    // ------------------------------------------------------ configuration

    /// The configuration region ([`crate::runtime::ConfigCtl`]): the
    /// launcher publishes there, the layers read.
    pub fn config(&self) -> &crate::runtime::ConfigCtl {
        self.region.get(self.off.config as usize)
    }

    // ------------------------------------------------------------ capture

    /// What the capture client asks for ([`crate::capture`]).
    pub fn capture_ctl(&self) -> &crate::capture::CaptureCtl {
        self.region.get(self.off.capture_ctl as usize)
    }

    /// Layer `l`'s capture ring.
    pub fn capture_ring(&self, l: LayerId) -> crate::capture::CaptureRing<'_> {
        let n = crate::capture::CAPTURE_RING_BYTES;
        let at = self.off.capture as usize + l.0 as usize * n;
        let hdr_len = std::mem::size_of::<crate::capture::CaptureRingHdr>();
        crate::capture::CaptureRing {
            hdr: self.region.get(at),
            data: self.region.sub(at + hdr_len, n - hdr_len),
        }
    }

    // ------------------------------------------------------- standing aside

    /// The layer taking from ring `r` now ([`RingDesc::serving`]).
    pub(crate) fn serving(&self, r: usize) -> LayerId {
        LayerId(self.ring_desc(r).serving.load(SeqCst) as u8)
    }

    /// Where `l` is: one of [`aside`].
    pub fn aside(&self, l: LayerId) -> u32 {
        self.ctl(l).aside.load(SeqCst)
    }

    /// The two rings into `l`, each with the neighbour that takes it while
    /// `l` stands aside (the producer of the other one). None unless `l`
    /// has exactly two neighbours.
    fn aside_rings(&self, l: LayerId) -> Option<[(usize, LayerId); 2]> {
        let mut into = (0..self.n_rings as usize).filter(|&r| self.ring_ends[r].1 == l);
        let (a, b) = (into.next()?, into.next()?);
        if into.next().is_some() {
            return None;
        }
        Some([(a, self.ring_ends[b].0), (b, self.ring_ends[a].0)])
    }

    /// `me` stands aside: each of its two neighbours takes the ring the
    /// other fills towards `me`, so traffic passes between them without
    /// `me`'s hop (docs/ARCHITECTURE.md, "Standing aside"). Call only
    /// while `me` holds nothing on its way to them. What waits in its
    /// input rings stays in order: a neighbour takes `me`'s ring to it
    /// before the one it takes through. False, with nothing changed,
    /// unless `me` has exactly two neighbours.
    pub fn step_aside(&self, me: LayerId) -> bool {
        let Some(rings) = self.aside_rings(me) else {
            return false;
        };
        let c = self.ctl(me);
        c.aside_acks.store(0, SeqCst);
        for (r, by) in rings {
            self.ring_desc(r).serving.store(u32::from(by.0), SeqCst);
        }
        c.aside.store(aside::ASIDE, SeqCst);
        for (_, by) in rings {
            self.kick(by);
        }
        true
    }

    /// `me`, aside, comes back: its neighbours stop taking its rings
    /// ([`Fabric::ack_return`]), then [`Fabric::try_return`] gives them
    /// back to it.
    pub fn begin_return(&self, me: LayerId) {
        self.ctl(me).aside.store(aside::RETURNING, SeqCst);
        for (_, by) in self.aside_rings(me).into_iter().flatten() {
            self.kick(by);
        }
    }

    /// `by` has stopped taking `owner`'s rings (it saw `owner`
    /// returning); wakes `owner` the first time it says so.
    pub fn ack_return(&self, owner: LayerId, by: LayerId) {
        let bit = 1u32 << by.0;
        if self.ctl(owner).aside_acks.fetch_or(bit, SeqCst) & bit == 0 {
            self.kick(owner);
        }
    }

    /// True when `me` is in the path: it never left, or it was returning
    /// and both neighbours have let go of its rings (which are then its
    /// own again).
    pub fn try_return(&self, me: LayerId) -> bool {
        let c = self.ctl(me);
        match c.aside.load(SeqCst) {
            aside::IN => return true,
            aside::ASIDE => return false,
            _ => {}
        }
        let Some(rings) = self.aside_rings(me) else {
            c.aside.store(aside::IN, SeqCst);
            return true;
        };
        let want = rings.iter().fold(0u32, |m, (_, by)| m | 1 << by.0);
        if c.aside_acks.load(SeqCst) & want != want {
            return false;
        }
        for (r, _) in rings {
            self.ring_desc(r).serving.store(u32::from(me.0), SeqCst);
        }
        c.aside.store(aside::IN, SeqCst);
        true
    }

    /// The ring `me` takes from while its neighbour `via` stands aside:
    /// the one into `via` from `via`'s other neighbour.
    pub fn consumer_through(&self, via: LayerId, me: LayerId) -> Option<Consumer<'_>> {
        let rings = self.aside_rings(via)?;
        let &(r, _) = rings.iter().find(|&&(_, by)| by == me)?;
        Some(Consumer::new(self, r, me))
    }

    // ------------------------------------------------------------ wake-ups

    /// Sets the eventfds by layer id (`-1`: none).
    pub fn set_wakeups(&mut self, fds: [RawFd; MAX_LAYERS]) {
        self.wake = fds;
    }

    /// Reads the eventfds the launcher passed in [`WAKE_ENV`].
    pub fn wakeups_from_env(&mut self) -> io::Result<()> {
        let v = std::env::var(WAKE_ENV)
            .map_err(|_| io::Error::new(io::ErrorKind::NotFound, format!("{WAKE_ENV} not set")))?;
        self.wake = parse_wake_env(&v)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad {WAKE_ENV}")))?;
        Ok(())
    }

    /// Whether [`Fabric::sleep`] waits on a futex when it has no fd to
    /// watch (else poll on the eventfd).
    pub fn set_futex_wait(&mut self, on: bool) {
        self.futex_wait = on;
    }

    /// This layer's eventfd.
    pub fn wake_fd(&self, l: LayerId) -> RawFd {
        self.wake[l.0 as usize]
    }

    /// Wakes `l` if it sleeps (writes its eventfd, or wakes its futex).
    /// Producers call this after publishing; a layer that is awake is not
    /// disturbed (no system call), and of several producers waking the
    /// same sleeper only the first makes the call: it takes the sleeping
    /// flag down as it does. Returns true when it made it.
    #[inline]
    pub fn kick(&self, l: LayerId) -> bool {
        // Pairs with the fence in `sleep`: either the consumer sees our
        // tail, or we see its sleeping flag.
        fence(SeqCst);
        let c = self.ctl(l);
        if c.sleeping.load(Relaxed) == 0 {
            return false;
        }
        match c.sleeping.swap(0, SeqCst) {
            SLEEP_FUTEX => {
                c.kicks.fetch_add(1, Relaxed);
                // SAFETY: FUTEX_WAKE on a live, aligned u32 of the shared
                // region (shared, so not the private variant); it writes
                // nothing.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        c.sleeping.as_ptr(),
                        libc::FUTEX_WAKE,
                        1,
                        std::ptr::null::<libc::timespec>(),
                    )
                };
                true
            }
            SLEEP_POLL => {
                let fd = self.wake[l.0 as usize];
                if fd < 0 {
                    return false;
                }
                c.kicks.fetch_add(1, Relaxed);
                let one: u64 = 1;
                // SAFETY: the kernel reads 8 bytes from a live local; a
                // stale or closed fd makes the call fail, not misbehave.
                unsafe { libc::write(fd, &one as *const u64 as *const libc::c_void, 8) };
                true
            }
            _ => false,
        }
    }

    /// Sleeps until kicked, until one of `extra` is ready, or until
    /// `timeout_ms` passes (-1: no timeout). `idle` is checked after the
    /// sleeping flag is raised, so work published meanwhile is never
    /// missed: if it returns false the call returns at once. The `revents`
    /// of each fd in `extra` (at most 8) are filled in. Returns `None`
    /// when it did not sleep, else how the sleep went.
    pub fn sleep(
        &self,
        me: LayerId,
        extra: &mut [libc::pollfd],
        timeout_ms: i32,
        idle: impl FnOnce() -> bool,
    ) -> Option<Slept> {
        if extra.is_empty() && self.futex_wait {
            return self.sleep_futex(me, timeout_ms, idle);
        }
        let mut fds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; 9];
        let n = extra.len().min(8);
        fds[1..1 + n].copy_from_slice(&extra[..n]);
        let slept = self.sleep_on(me, &mut fds[..n + 1], timeout_ms, idle);
        extra[..n].copy_from_slice(&fds[1..1 + n]);
        slept
    }

    /// As [`Fabric::sleep`] with no fds to watch: a futex wait on the
    /// sleeping flag itself, which a kick clears and wakes, in one system
    /// call each side (a poll on the eventfd takes a poll and a read).
    fn sleep_futex(
        &self,
        me: LayerId,
        timeout_ms: i32,
        idle: impl FnOnce() -> bool,
    ) -> Option<Slept> {
        let c = self.ctl(me);
        if !Self::raise_sleeping(c, SLEEP_FUTEX, idle) {
            return None;
        }
        let ts = libc::timespec {
            tv_sec: (timeout_ms.max(0) / 1000) as libc::time_t,
            tv_nsec: (timeout_ms.max(0) % 1000) as libc::c_long * 1_000_000,
        };
        // A negative timeout is none, as for poll.
        let timeout: *const libc::timespec = if timeout_ms < 0 {
            std::ptr::null()
        } else {
            &ts
        };
        // SAFETY: FUTEX_WAIT on a live, aligned u32 of the shared region,
        // with no timeout or one read from a live local; it sleeps only
        // while the flag still says SLEEP_FUTEX, so a kick before the call
        // is not lost.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                c.sleeping.as_ptr(),
                libc::FUTEX_WAIT,
                SLEEP_FUTEX,
                timeout,
            )
        };
        // A kicker takes the flag down before it wakes us: still up means
        // the time ran out.
        let kicked = c.sleeping.swap(0, Relaxed) == 0;
        Some(Slept {
            kicked,
            syscalls: 1,
        })
    }

    /// Raises `c`'s sleeping flag (saying `how` to wake it), then asks
    /// `idle`: work published meanwhile is seen, or the publisher sees the
    /// flag (the fence pairs with the one in `kick`). False, with the flag
    /// down again, when there is work.
    fn raise_sleeping(c: &LayerCtl, how: u32, idle: impl FnOnce() -> bool) -> bool {
        c.sleeping.store(how, SeqCst);
        fence(SeqCst);
        if idle() {
            return true;
        }
        c.sleeping.store(0, Relaxed);
        false
    }

    /// As [`Fabric::sleep`], for any number of fds: `fds[0]` is set to this
    /// layer's eventfd, the rest are the caller's.
    fn sleep_on(
        &self,
        me: LayerId,
        fds: &mut [libc::pollfd],
        timeout_ms: i32,
        idle: impl FnOnce() -> bool,
    ) -> Option<Slept> {
        for f in fds.iter_mut() {
            f.revents = 0;
        }
        let c = self.ctl(me);
        if !Self::raise_sleeping(c, SLEEP_POLL, idle) {
            return None;
        }
        let wfd = self.wake[me.0 as usize];
        if let Some(f0) = fds.first_mut() {
            *f0 = libc::pollfd {
                fd: wfd,
                events: libc::POLLIN,
                revents: 0,
            };
        }
        // SAFETY: `fds` is a live, writable slice of exactly that many
        // pollfds for the whole call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        c.sleeping.store(0, Relaxed);
        let kicked = fds.first().is_some_and(|f| f.revents & libc::POLLIN != 0);
        if kicked {
            let mut v: u64 = 0;
            // SAFETY: the kernel writes at most 8 bytes into a live local.
            unsafe { libc::read(wfd, &mut v as *mut u64 as *mut libc::c_void, 8) };
        }
        Some(Slept {
            kicked,
            syscalls: 1 + u32::from(kicked),
        })
    }

    /// As [`Fabric::sleep`] for a layer that watches its fds through an
    /// epoll set `epfd` holding its own eventfd (added edge-triggered, so
    /// a kick needs no read to be cleared): one `epoll_wait` sleeps,
    /// wakes and says what is ready, written into `events`. Returns how
    /// the sleep went and how many events there are.
    pub fn sleep_epoll(
        &self,
        me: LayerId,
        epfd: RawFd,
        events: &mut [libc::epoll_event],
        timeout_ms: i32,
        idle: impl FnOnce() -> bool,
    ) -> Option<(Slept, usize)> {
        let c = self.ctl(me);
        if !Self::raise_sleeping(c, SLEEP_POLL, idle) {
            return None;
        }
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` is a live, writable slice of at least `max`
        // epoll_events for the whole call.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), max, timeout_ms) };
        // A kicker takes the flag down before it writes the eventfd.
        let kicked = c.sleeping.swap(0, Relaxed) == 0;
        Some((
            Slept {
                kicked,
                syscalls: 1,
            },
            n.max(0) as usize,
        ))
    }

    /// Marks a turn of `me`'s loop (the launcher's hang detector watches it).
    #[inline]
    pub fn beat(&self, me: LayerId) {
        self.ctl(me).heartbeat.fetch_add(1, Relaxed);
    }

    // ------------------------------------------------------------ counters

    /// Registers `me`'s counter names (at start; names already there are
    /// kept with their values so a restart continues counting).
    pub fn register_counters(&self, me: LayerId, names: &[&str]) {
        assert!((me.0 as usize) < MAX_LAYERS);
        // Plain bytes, not atomics: written through the region, not
        // through a shared reference.
        let names_at = self.off.ctl as usize
            + me.0 as usize * std::mem::size_of::<LayerCtl>()
            + std::mem::offset_of!(LayerCtl, names);
        let n = names.len().min(LAYER_COUNTERS);
        for (i, name) in names.iter().take(n).enumerate() {
            let mut buf = [0u8; COUNTER_NAME_LEN];
            let b = name.as_bytes();
            let k = b.len().min(COUNTER_NAME_LEN);
            buf[..k].copy_from_slice(&b[..k]);
            self.region.copy_in(names_at + i * COUNTER_NAME_LEN, &buf);
        }
        self.ctl(me).n_counters.store(n as u32, Release);
    }

    /// `me`'s counters as (name, value).
    pub fn counters(&self, l: LayerId) -> Vec<(String, u64)> {
        let c = self.ctl(l);
        let n = (c.n_counters.load(Acquire) as usize).min(LAYER_COUNTERS);
        (0..n)
            .map(|i| {
                let nm = &c.names[i];
                let end = nm.iter().position(|&b| b == 0).unwrap_or(nm.len());
                (
                    String::from_utf8_lossy(&nm[..end]).into_owned(),
                    c.counters[i].load(Relaxed),
                )
            })
            .collect()
    }

    /// Adds `v` to counter `i` of `me`.
    #[inline]
    pub fn count(&self, me: LayerId, i: usize, v: u64) {
        if i < LAYER_COUNTERS {
            self.ctl(me).counters[i].fetch_add(v, Relaxed);
        }
    }

    /// Counter `i` of `l`.
    pub fn counter(&self, l: LayerId, i: usize) -> u64 {
        self.ctl(l).counters.get(i).map_or(0, |c| c.load(Relaxed))
    }

    /// Sets counter `i` of `me`.
    #[inline]
    pub fn set_counter(&self, me: LayerId, i: usize, v: u64) {
        if i < LAYER_COUNTERS {
            self.ctl(me).counters[i].store(v, Relaxed);
        }
    }

    // -------------------------------------------------------------- arenas

    /// `l`'s arena: raw bytes that outlive the layer's process.
    pub fn arena_bytes(&self, l: LayerId) -> (*mut u8, usize) {
        let a = self.arena(l);
        (a.ptr(0), a.len())
    }

    /// `l`'s arena.
    pub(crate) fn arena(&self, l: LayerId) -> Region<'_> {
        let n = self.params.arena_bytes as usize;
        // tcpd's, filterd's and sockd's arenas, sized on their own,
        // follow all the uniform ones.
        let tcpd = self.params.tcpd_arena_bytes as usize;
        let filterd = self.params.filterd_arena_bytes as usize;
        let (off, len) = if l == LayerId::TCPD {
            (self.off.arena as usize + MAX_LAYERS * n, tcpd)
        } else if l == LayerId::FILTERD {
            (self.off.arena as usize + MAX_LAYERS * n + tcpd, filterd)
        } else if l == LayerId::SOCKD {
            (
                self.off.arena as usize + MAX_LAYERS * n + tcpd + filterd,
                self.params.sockd_arena_bytes as usize,
            )
        } else {
            (self.off.arena as usize + l.0 as usize * n, n)
        };
        self.region.sub(off, len)
    }

    /// `l`'s arena as a crash-consistent table of records of format
    /// `format` ([`crate::arena::Records`]).
    pub fn records<T: crate::arena::Pod>(
        &self,
        l: LayerId,
        format: u32,
    ) -> crate::arena::Records<'_, T> {
        crate::arena::Records::over(self.arena(l), format)
    }

    // ------------------------------------------------------------- reclaim

    /// Takes back what a dead instance of `dead` held (launcher, before
    /// the restart), ring by ring of those it was taking from:
    /// - what it had taken and not finished from a ring whose handles are
    ///   replayed ([`Carries::replayed`]) stays its own, for its next
    ///   instance to take again; from any other ring it is released (the
    ///   head moves past it);
    /// - what waits untaken stays queued for the next instance on a ring
    ///   of packets; on a ring of socket messages it is released (the
    ///   ring is then empty: sockd and the transports restate what they
    ///   lost to each other, "Restarts between sockd and tcpd").
    ///
    /// Then every reference it held is released except those on their
    /// way to another layer in the rings it produced and those kept for
    /// replay. A layer that settles its own references at restart
    /// ([`LayerCtl::self_reclaim`], tcpd) keeps its references here; its
    /// next instance calls [`reconcile`](Self::reconcile). Returns
    /// references released.
    pub fn reclaim(&self, dead: LayerId) -> u64 {
        let n = self.n_bufs() as usize;
        let mut released = 0;
        for r in 0..self.n_rings as usize {
            let d = self.ring_desc(r);
            // By who takes from it now: a neighbour standing in for a
            // layer that is aside.
            let (p, c) = self.ring_ends[r];
            if self.serving(r) != dead {
                continue;
            }
            let head = d.head.load(Acquire);
            let tail = d.tail.load(Acquire);
            let len = tail.wrapping_sub(head).min(d.size);
            // The dead consumer holds what it claimed; what lies beyond
            // is still the producer's.
            let claimed = d
                .claimed
                .load(Acquire)
                .max_wrapping(head)
                .wrapping_sub(head)
                .min(len);
            if c == dead && Carries::replayed(p, c) {
                continue;
            }
            let keep_queued = Carries::ring(p, c) != Carries::Messages;
            let end = if keep_queued {
                claimed
            } else {
                for k in claimed..len {
                    let h = self.slot(r, head.wrapping_add(k));
                    if self.check(&h).is_ok() && self.release(h.buf, p, 1) {
                        released += 1;
                    }
                }
                len
            };
            let end = head.wrapping_add(end);
            d.claimed.store(end, Release);
            d.head.store(end, Release);
        }
        let own = self.ctl(dead).self_reclaim.load(Acquire) == 0;
        if own {
            let keep = self.kept_at_death(dead, |_, _| 0);
            for i in 0..n as u32 {
                released += self.release_excess(i, dead, keep[i as usize]);
            }
        }
        released += self.recover_stranded(dead);
        self.ctl(dead).reclaimed.fetch_add(released, Relaxed);
        released
    }

    /// Puts back on their free lists the buffers `dead` stranded: taken
    /// off a list inside `alloc` before it held them, or let go inside a
    /// last free before they were pushed back. With both lists held still
    /// ([`freelist::lock`]), such a buffer is on no list, held by nobody,
    /// and not named as being moved by any live layer. Returns how many.
    fn recover_stranded(&self, dead: LayerId) -> u64 {
        let n = self.n_bufs();
        let h = self.pool_ctl();
        let locked = [
            freelist::lock(&h.free_head[0]),
            freelist::lock(&h.free_head[1]),
        ];
        let mut listed = vec![false; n as usize];
        for head in locked {
            freelist::walk(
                head,
                n,
                |i| &self.bufhdr(i).next,
                |i| listed[i as usize] = true,
            );
        }
        let mut found: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        for i in 0..n {
            let b = self.bufhdr(i);
            if listed[i as usize] || b.holders.load(Acquire) != 0 {
                continue;
            }
            // A live layer in the middle of moving it finishes that
            // itself (its push or pop waits for the lists). Read before
            // the holders again: a layer that finished clears its
            // `pool_op` after it records its reference.
            let moving = (0..MAX_LAYERS as u8).any(|l| {
                l != dead.0
                    && l != self.me.0
                    && self.ctl(LayerId(l)).pool_op.load(Acquire) == u64::from(i) + 1
            });
            if moving || b.holders.load(Acquire) != 0 {
                continue;
            }
            b.owner.store(OWNER_FREE, Relaxed);
            b.gen.fetch_add(1, Release);
            b.flags.store(0, Relaxed);
            found[self.class(i)].push(i);
        }
        for c in [1, 0] {
            freelist::unlock(&h.free_head[c], &found[c], |i| &self.bufhdr(i).next);
        }
        self.ctl(dead).pool_op.store(0, Release);
        (found[0].len() + found[1].len()) as u64
    }

    /// For a restarted layer that keeps buffers in its arena (tcpd): drops
    /// every reference of `me` beyond `keep(buffer, generation)` (the
    /// references its restored state holds) and those in flight in the
    /// rings it produces — the references its dead instance held on its
    /// heap or mid-event. Call before producing anything. Returns
    /// references released (also added to the layer's reclaimed count).
    pub fn reconcile(&self, me: LayerId, keep: impl FnMut(u32, u32) -> u32) -> u64 {
        let kept = self.kept_at_death(me, keep);
        let mut released = 0;
        for i in 0..self.n_bufs() {
            let b = self.bufhdr(i);
            if holder_count(b.holders.load(Acquire), me.0) == 0 {
                continue;
            }
            released += self.release_excess(i, me, kept[i as usize]);
        }
        self.ctl(me).reclaimed.fetch_add(released, Relaxed);
        released
    }

    /// The references of a dead `l` that outlive it, by buffer: those in
    /// the rings it produces, unclaimed ([`in_transit`](Self::in_transit)),
    /// those its restored state holds (`state(buffer, generation)`: tcpd's
    /// arena; 0 elsewhere), and those it had taken from a replayed ring
    /// ([`Carries::replayed`]) and not finished.
    ///
    /// A taken handle whose reference the dead layer no longer held apart
    /// from those was finished: its reference went into the state or on to
    /// the next layer (or was freed) before the death, between the event's
    /// end and the slot's release. The head moves past such handles, so
    /// they are not replayed; the layer takes its inputs in order, so they
    /// can only come first.
    fn kept_at_death(&self, l: LayerId, mut state: impl FnMut(u32, u32) -> u32) -> Vec<u32> {
        let mut v = self.in_transit(l);
        for (i, k) in v.iter_mut().enumerate() {
            let b = self.bufhdr(i as u32);
            if holder_count(b.holders.load(Acquire), l.0) > 0 {
                *k += state(i as u32, b.gen.load(Acquire));
            }
        }
        for r in 0..self.n_rings as usize {
            let (p, c) = self.ring_ends[r];
            if c != l || !Carries::replayed(p, c) {
                continue;
            }
            let d = self.ring_desc(r);
            let head = d.head.load(Acquire);
            let taken = d.claimed.load(Acquire).wrapping_sub(head).min(d.size);
            let mut unfinished = false;
            for k in 0..taken {
                let at = head.wrapping_add(k);
                let h = self.slot(r, at);
                let held = self.check(&h).is_ok()
                    && holder_count(self.bufhdr(h.buf).holders.load(Acquire), l.0)
                        > u64::from(v[h.buf as usize]);
                if held {
                    v[h.buf as usize] += 1;
                    unfinished = true;
                } else if !unfinished {
                    d.head.store(at.wrapping_add(1), Release);
                }
            }
        }
        v
    }

    /// How often each buffer sits, unclaimed, in the rings `l` produces.
    fn in_transit(&self, l: LayerId) -> Vec<u32> {
        let mut v = vec![0u32; self.n_bufs() as usize];
        for r in 0..self.n_rings as usize {
            if self.ring_ends[r].0 != l {
                continue;
            }
            let d = self.ring_desc(r);
            // `claimed` first: a pop moves a reference before it advances
            // `claimed`, so this order can only overstate what is in
            // flight (keeping a reference), never understate it.
            let from = d.claimed.load(Acquire).max_wrapping(d.head.load(Acquire));
            let tail = d.tail.load(Acquire);
            let len = tail.wrapping_sub(from).min(d.size);
            for k in 0..len {
                let h = self.slot(r, from.wrapping_add(k));
                if self.check(&h).is_ok() {
                    v[h.buf as usize] += 1;
                }
            }
        }
        v
    }

    /// Drops `who`'s references on buffer `i` beyond `keep`; returns how
    /// many.
    fn release_excess(&self, i: u32, who: LayerId, keep: u32) -> u64 {
        let b = self.bufhdr(i);
        let one = holder_one(who.0);
        let mut n = 0;
        let op = &self.ctl(self.me).pool_op;
        op.store(u64::from(i) + 1, Relaxed);
        let r = b.holders.fetch_update(AcqRel, Acquire, |h| {
            n = holder_count(h, who.0).saturating_sub(u64::from(keep));
            (n > 0).then(|| h - n * one)
        });
        let released = match r {
            Ok(prev) => {
                if prev == n * one {
                    self.finish_free(i);
                }
                n
            }
            Err(_) => 0,
        };
        op.store(0, Release);
        released
    }
}

/// Of two ring indices, the one further along (they are at most a ring
/// apart).
trait MaxWrapping {
    fn max_wrapping(self, other: u32) -> u32;
}

impl MaxWrapping for u32 {
    fn max_wrapping(self, other: u32) -> u32 {
        if (self.wrapping_sub(other) as i32) >= 0 {
            self
        } else {
            other
        }
    }
}

/// Parses [`WAKE_ENV`].
pub fn parse_wake_env(v: &str) -> Option<[RawFd; MAX_LAYERS]> {
    let mut out = [-1; MAX_LAYERS];
    for (i, s) in v.split(',').enumerate() {
        if i >= MAX_LAYERS {
            return None;
        }
        out[i] = s.trim().parse().ok()?;
    }
    Some(out)
}

/// Formats fds for [`WAKE_ENV`].
pub fn format_wake_env(fds: &[RawFd; MAX_LAYERS]) -> String {
    fds.iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The producing end of a ring.
pub struct Producer<'a> {
    f: &'a Fabric,
    r: usize,
    d: &'a RingDesc,
}

impl Producer<'_> {
    /// Free slots.
    pub fn space(&self) -> u32 {
        let used = self
            .d
            .tail
            .load(Relaxed)
            .wrapping_sub(self.d.head.load(Acquire));
        self.d.size.saturating_sub(used)
    }

    /// Publishes as many of `hs` as fit, in order, with one index update,
    /// and wakes the consumer if it sleeps. Returns how many were taken;
    /// the rest stay the caller's.
    pub fn push(&mut self, hs: &[Handle]) -> usize {
        let n = self.publish(hs);
        if n > 0 {
            self.wake();
        }
        n
    }

    /// The ring's index in the fabric.
    pub fn index(&self) -> usize {
        self.r
    }

    /// Wakes the consumer if it sleeps ([`Fabric::kick`]); true when that
    /// took a system call.
    pub fn wake(&self) -> bool {
        // Whoever takes from the ring now: `to`, or the layer on its
        // other side while `to` stands aside. Read after the fence that
        // orders our tail before it ([`Fabric::serving`]).
        fence(SeqCst);
        self.f.kick(self.f.serving(self.r))
    }

    /// As [`Producer::push`] without waking the consumer: the caller
    /// wakes it once ([`Producer::wake`]) after all it publishes in a
    /// turn.
    pub fn publish(&mut self, hs: &[Handle]) -> usize {
        let n = (self.space() as usize).min(hs.len());
        if n == 0 {
            return 0;
        }
        let tail = self.d.tail.load(Relaxed);
        for (k, h) in hs[..n].iter().enumerate() {
            self.f.set_slot(self.r, tail.wrapping_add(k as u32), *h);
        }
        self.d.tail.store(tail.wrapping_add(n as u32), Release);
        n
    }

    /// Occupied slots.
    pub fn len(&self) -> u32 {
        self.d
            .tail
            .load(Relaxed)
            .wrapping_sub(self.d.head.load(Acquire))
    }

    /// True when the consumer has taken everything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The consuming end of a ring.
pub struct Consumer<'a> {
    f: &'a Fabric,
    r: usize,
    d: &'a RingDesc,
    me: LayerId,
    from: LayerId,
    /// While `next` is before `replay_end`: the slots from the head to
    /// `replay_end` were taken by a dead instance of this layer and not
    /// finished; their references are ours already, and they are taken
    /// again once ([`Carries::replayed`] rings only: elsewhere reclaim
    /// moved the head past them). None once done.
    replay_end: Option<u32>,
    /// The next slot to take while replaying (after that, the ring's
    /// `claimed`, which a neighbour standing in may have moved).
    next: u32,
    /// Of the last [`take`](Self::take): the slot after each handle given.
    after: Vec<u32>,
    /// Handles taken again after a restart.
    replayed: u64,
    /// Slots were taken since the last release. A consumer that took
    /// nothing leaves the head alone: a neighbour standing in for an
    /// aside layer (or the layer itself, back in the path) may be taking
    /// from the same ring.
    unreleased: bool,
}

impl<'a> Consumer<'a> {
    fn new(f: &'a Fabric, r: usize, me: LayerId) -> Consumer<'a> {
        let d = f.ring_desc(r);
        let head = d.head.load(Acquire);
        let claimed = d.claimed.load(Acquire);
        let ahead = claimed.wrapping_sub(head);
        Consumer {
            f,
            r,
            d,
            me,
            from: f.ring_ends[r].0,
            // Only a replayed ring's own consumer takes again; on any other
            // ring a gap between head and claimed is a live neighbour's
            // (one standing in for a layer aside) or was dropped by reclaim.
            replay_end: (Carries::replayed(f.ring_ends[r].0, me)
                && f.ring_ends[r].1 == me
                && ahead > 0
                && ahead <= d.size)
                .then_some(claimed),
            next: head,
            after: Vec::with_capacity(crate::BUDGET),
            replayed: 0,
            unreleased: false,
        }
    }
}

impl Consumer<'_> {
    /// The next slot to take.
    fn next_slot(&self) -> u32 {
        match self.replay_end {
            Some(_) => self.next,
            None => self.d.claimed.load(Relaxed),
        }
    }

    /// Handles waiting to be taken.
    pub fn len(&self) -> u32 {
        self.d
            .tail
            .load(Acquire)
            .wrapping_sub(self.next_slot())
            .min(self.d.size)
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`take`](Self::take) and [`release`](Self::release) in one: the
    /// slots are free for the producer at once.
    pub fn pop(&mut self, out: &mut [Handle]) -> usize {
        let n = self.take(out);
        self.release();
        n
    }

    /// Takes up to `out.len()` handles and claims their buffers for this
    /// layer; their slots stay the layer's until it releases them
    /// ([`release`](Self::release), [`release_through`](Self::release_through)),
    /// so that a layer that dies before it has, on a ring whose handles
    /// are replayed ([`Carries::replayed`]), finds them again when it
    /// restarts. Those come first, taken without moving a reference (the
    /// dead instance's are ours). Handles whose buffer is stale or out of
    /// range are dropped and counted, never passed on. Returns how many
    /// valid handles were written to `out`.
    pub fn take(&mut self, out: &mut [Handle]) -> usize {
        let next = self.next_slot();
        let avail = self
            .d
            .tail
            .load(Acquire)
            .wrapping_sub(next)
            .min(self.d.size);
        let n = (avail as usize).min(out.len());
        self.after.clear();
        self.unreleased |= n > 0;
        let mut good = 0;
        for k in 0..n {
            let at = next.wrapping_add(k as u32);
            let h = self.f.slot(self.r, at);
            let replay = self.replay_end.is_some();
            self.next = at.wrapping_add(1);
            if self.replay_end == Some(self.next) {
                self.replay_end = None;
            }
            let taken = if h.is_inline() {
                // No buffer, no reference to move: the message is the
                // slot. Taken again after a restart whether or not the
                // dead instance had finished it: every inline message
                // bears a repeat (absolute credits and offsets, requests
                // the transports take twice as once).
                true
            } else if self.f.check(&h).is_err() {
                if !replay {
                    self.f.pool_ctl().stale_refused.fetch_add(1, Relaxed);
                }
                false
            } else if replay {
                // The dead instance's reference, if it still held one.
                holder_count(self.f.bufhdr(h.buf).holders.load(Acquire), self.me.0) > 0
            } else {
                // The reference moves from producer to consumer in one
                // step, then `claimed` says so: reclaim of either side,
                // at any point, knows whose it is.
                let moved = self
                    .f
                    .bufhdr(h.buf)
                    .holders
                    .fetch_update(AcqRel, Acquire, |x| {
                        (holder_count(x, self.from.0) > 0
                            && holder_count(x, self.me.0) < HOLDER_MAX)
                            .then(|| x - holder_one(self.from.0) + holder_one(self.me.0))
                    });
                if moved.is_err() {
                    // The producer pushed a reference it did not hold.
                    self.f.pool_ctl().double_free.fetch_add(1, Relaxed);
                }
                moved.is_ok()
            };
            if !replay {
                self.d.claimed.store(at.wrapping_add(1), Release);
            }
            if !taken {
                continue;
            }
            self.replayed += u64::from(replay);
            if !h.is_inline() {
                self.f.bufhdr(h.buf).owner.store(self.me.0 as u32, Relaxed);
            }
            out[good] = h;
            self.after.push(at.wrapping_add(1));
            good += 1;
        }
        good
    }

    /// Gives back every slot taken so far: the producer may reuse them.
    pub fn release(&mut self) {
        if std::mem::take(&mut self.unreleased) {
            self.d.head.store(self.next_slot(), Release);
        }
    }

    /// Gives back the slots up to and including that of the `i`th handle
    /// of the last [`take`](Self::take) (the layer is done with it).
    pub fn release_through(&mut self, i: usize) {
        if let Some(&at) = self.after.get(i) {
            self.d.head.store(at, Release);
        }
    }

    /// Handles taken again after a restart, so far.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }
}

/// The packet buffers' place in memory ([`Fabric::buffer_area`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferArea {
    /// Their first byte's address in the calling process.
    pub addr: usize,
    /// Bytes, both classes.
    pub len: usize,
    /// Their first byte's offset in the region.
    pub offset: usize,
}

/// The pool as seen by one layer, implementing [`Buffers`].
pub struct Pool<'a> {
    f: &'a Fabric,
    me: LayerId,
}

impl<'a> Pool<'a> {
    /// The fabric behind this view.
    pub fn fabric(&self) -> &'a Fabric {
        self.f
    }

    /// The layer this view is for.
    pub fn me(&self) -> LayerId {
        self.me
    }
}

impl Buffers for Pool<'_> {
    fn alloc(&mut self, len: usize) -> Option<Handle> {
        self.f.alloc(self.me, len)
    }
    fn free(&mut self, h: &Handle) {
        self.f.free_as(self.me, h)
    }
    fn add_ref(&mut self, h: &Handle) -> Result<(), BufError> {
        self.f.add_ref_as(self.me, h)
    }
    fn raw(&self, h: &Handle) -> Result<&[u8], BufError> {
        self.f.check(h)?;
        // SAFETY: the handle is a live reference on the buffer (checked),
        // so the pool will not hand it out again while the slice lives;
        // the layers that share a buffer agree by protocol who writes
        // which bytes, and this process writes it only through `raw_mut`,
        // which needs `&mut self` and so cannot overlap this borrow.
        Ok(unsafe {
            self.f
                .region
                .bytes(self.f.buf_off(h.buf), self.f.buf_cap(h.buf))
        })
    }
    fn raw_mut(&mut self, h: &Handle) -> Result<&mut [u8], BufError> {
        self.f.check(h)?;
        // SAFETY: as in `raw`; `&mut self` keeps every other slice this
        // view handed out dead while this one lives.
        Ok(unsafe {
            self.f
                .region
                .bytes_mut(self.f.buf_off(h.buf), self.f.buf_cap(h.buf))
        })
    }
    fn data(&self, h: &Handle) -> Result<&[u8], BufError> {
        let raw = self.raw(h)?;
        let (s, e) = window(h, raw.len())?;
        Ok(&raw[s..e])
    }
    fn raw_pair_mut(&mut self, a: &Handle, b: &Handle) -> Result<(&mut [u8], &mut [u8]), BufError> {
        if a.buf == b.buf {
            return Err(BufError::BadIndex);
        }
        self.f.check(a)?;
        self.f.check(b)?;
        // SAFETY: as in `raw_mut`, for each; two different buffers never
        // overlap in the region.
        Ok(unsafe {
            (
                self.f
                    .region
                    .bytes_mut(self.f.buf_off(a.buf), self.f.buf_cap(a.buf)),
                self.f
                    .region
                    .bytes_mut(self.f.buf_off(b.buf), self.f.buf_cap(b.buf)),
            )
        })
    }
}

/// An eventfd for a layer (launcher): non-blocking, inherited by children.
pub fn new_eventfd() -> io::Result<RawFd> {
    // SAFETY: no pointers; the call only creates a descriptor.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

impl Fabric {
    /// sockd's socket table, to write (sockd alone): the one its arena
    /// holds, or a new one. Errs on a table this build cannot read.
    pub fn sock_table(&self) -> Result<crate::socktable::SockTable, String> {
        let (p, n) = self.arena_bytes(LayerId::SOCKD);
        // SAFETY: sockd's arena is mapped for as long as this fabric,
        // 64-byte aligned (`create` checks the sizes of the arenas before
        // it), and holds only this table, which sockd alone opens to
        // write. The table carries no lifetime (sockd keeps it beside its
        // fabric), so its users keep the fabric alive as long as the
        // table: sockd maps the fabric for the life of the process.
        unsafe { crate::socktable::SockTable::open(p, n) }
    }

    /// sockd's socket table, to read (`strata ss`).
    pub fn sock_table_view(&self) -> crate::socktable::SockTable {
        let (p, n) = self.arena_bytes(LayerId::SOCKD);
        // SAFETY: as for `sock_table`; the view only reads, and its user
        // (the launcher) keeps the fabric mapped as long as the view.
        unsafe { crate::socktable::SockTable::view(p, n) }
    }
}
