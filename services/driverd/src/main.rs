//! driverd: moves frames between one device and the pool, in batches
//! (NAPI-style: read up to a budget, hand the batch up in one ring update,
//! then sleep on device readiness and the eventfd; an empty device is not
//! read again until poll says it is readable, frames went out, or the
//! loop has been busy for a few turns).
//!
//! The launcher opened the device and holds it; we work on an inherited
//! copy of its fd, so our death does not take the interface down.
//!
//! A device that reaches the pool's buffers itself (a VFIO NIC, an AF_XDP
//! socket whose UMEM is the pool: `PoolDevice`) is given pool buffers to
//! receive into and the stack's own buffers to send: no copy here. Such a
//! device may still hold buffers when we die; who settles them is the
//! device's to say (`settles_references`): a VFIO NIC is reset by our
//! successor, who then drops what we held; an AF_XDP socket is closed by
//! the launcher before it reclaims.
//!
//! Offloads. A device with offloads (a TAP with a virtio-net header)
//! hands us TCP super-segments of up to 64 KiB: each frame is read into a
//! small buffer and, when longer, runs on into a large one kept spare for
//! it, so short frames cost no large buffer. Its checksum state and
//! segment size become the handle's `csum` and `gso_*`. On the way out a
//! handle's partial checksum and super-segment go to such a device as they
//! are; for a device without offloads driverd does the work in software
//! here, at the last hop, as Linux does in `validate_xmit_skb`: it
//! completes the checksum, or cuts the super-segment into MSS-sized frames
//! written straight from the buffer with their own headers (software GSO).

mod gro;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::sync::atomic::Ordering;
use strata_drivers::{Csum, Driver, Offload, Offloads, Rx};
use strata_ipc::fabric::Pool;
use strata_ipc::handle::{csum, gso};
use strata_ipc::runtime::{IfaceRt, StackConfig};
use strata_ipc::serve::{Cx, Layer, Loop, Overflow, MAX_WAIT_FDS};
use strata_ipc::service::{self, ArenaFormat, DEVICE_FD_ENV, DEVICE_MEM_FD_ENV};
use strata_ipc::{ifc, Buffers, Handle, LayerId, Service, BUDGET, HEADROOM, LARGE_BUF, SMALL_BUF};
use strata_proto::offload::{complete_checksum, segment_tcp4, IpFrame};

strata_ipc::layer_stats! { "driverd";
    /// Frames read from the device.
    RxFrames => "rx_frames",
    /// Frames written to the device.
    TxFrames => "tx_frames",
    /// Reads not made for want of a pool buffer (the frame waits in the
    /// device).
    RxNoBuffer => "rx_no_buffer",
    /// Frames the device refused with an error.
    TxError => "tx_error",
    /// Reads that failed (oversized frame, device error).
    RxError => "rx_error",
    /// Frames longer than a small buffer lost because the pool had no
    /// large one to read them into.
    RxTooLong => "rx_too_long",
    /// Reads that found the device empty.
    RxEmptyReads => "rx_empty_reads",
    /// TCP super-segments read from the device.
    RxSuperFrames => "rx_super_frames",
    /// Segments those super-segments stood for.
    RxSuperSegments => "rx_super_segments",
    /// Frames whose transport checksum the device verified, or left
    /// partial (sent by the kernel itself): no software check is needed.
    RxCsumOffloaded => "rx_csum_offloaded",
    /// TCP super-segments written to the device whole.
    TxSuperFrames => "tx_super_frames",
    /// Segments those super-segments stood for.
    TxSuperSegments => "tx_super_segments",
    /// Frames written with a partial checksum for the device to complete.
    TxCsumOffloaded => "tx_csum_offloaded",
    /// Super-segments cut into segments here (software GSO).
    GsoSoftFrames => "gso_soft_frames",
    /// Segments written by software GSO.
    GsoSoftSegments => "gso_soft_segments",
    /// Partial checksums completed here in software.
    CsumSoft => "csum_soft",
    /// Frames dropped because their offload request made no sense (a
    /// partial checksum or super-segment that is not TCP or UDP over IPv4).
    TxOffloadError => "tx_offload_error",
    /// Super-segments made by software GRO (devices without offloads).
    GroSuperFrames => "gro_super_frames",
    /// Segments merged into them.
    GroSegments => "gro_segments",
    /// Segments GRO found with a wrong checksum (passed on unmerged, for
    /// tcpd to count and drop).
    GroBadChecksum => "gro_bad_checksum",
    /// Flows GRO cut short for want of a large buffer.
    GroNoBuffer => "gro_no_buffer",
    /// A device that says (a VFIO NIC): its link is up (1) or down (0).
    DevLinkUp => "dev_link_up",
    /// Interrupts the device raised.
    DevInterrupts => "dev_interrupts",
    /// Notifications (doorbell writes) sent to the device.
    DevNotifies => "dev_notifies",
    /// Completions the device gave that named no buffer it held, or a
    /// length beyond one (ignored).
    DevBadCompletions => "dev_bad_completions",
    /// Frames a device that reaches the pool itself sent by copy instead
    /// (too little headroom for its header, or cut in software).
    DevTxCopied => "dev_tx_copied",
    /// Pool buffers a device that reaches the pool holds to receive into
    /// (a level).
    DevRxBuffers => "dev_rx_buffers",
}

fn open_device(cfg: &IfaceRt, fd: RawFd, pool: &Pool) -> std::io::Result<Box<dyn Driver>> {
    let kind = cfg.driver.as_str();
    if kind == "af_xdp" || kind == "vfio" {
        // SAFETY: the launcher passed us this fd for exactly this purpose,
        // and nothing else in this process uses it.
        let dev = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        if kind == "af_xdp" {
            return Ok(Box::new(strata_drivers::xdp::Xdp::from_fd(dev, pool)?));
        }
        let mem = service::inherited_fd(DEVICE_MEM_FD_ENV)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e))?;
        let opts = strata_drivers::vfio::Options {
            offloads: cfg.offloads,
            poll: cfg.poll,
            mtu: cfg.mtu,
        };
        return Ok(Box::new(strata_drivers::vfio::Vfio::from_fds(
            dev, mem, opts,
        )?));
    }
    // SAFETY: as above.
    unsafe {
        Ok(match kind {
            "pair" => Box::new(strata_drivers::pair::Pair::from_raw_fd(fd)?),
            _ => Box::new(strata_drivers::tap::Tap::from_raw_fd(fd)?),
        })
    }
}

/// Busy turns (no wait, so no poll of the device) after which an empty
/// device is read again: frames can arrive while the loop transmits.
const REARM_AFTER_TURNS: u32 = 2;

/// The loop's one input (from netdevd) and one output (to it).
const TO_NETDEV: usize = 0;

/// Bytes of a small buffer after the headroom: a frame read goes there
/// first.
const HEAD_CAP: usize = SMALL_BUF - HEADROOM as usize;

/// The longest frame a device may deliver: a 64 KiB super-segment when
/// it segments TCP itself, else an MTU-sized frame with room for one VLAN
/// tag.
fn max_frame(offloads: Offloads, mtu: u16) -> usize {
    if offloads.tso4 {
        14 + 65535
    } else {
        usize::from(mtu) + 14 + 4
    }
}

/// driverd's side of the service loop.
struct Shell {
    dev: Box<dyn Driver>,
    /// What the device offloads.
    offloads: Offloads,
    iface: u8,
    /// The longest frame the device may deliver.
    max_frame: usize,
    /// A large buffer kept for the next frame longer than a small one
    /// (only when `max_frame` exceeds [`HEAD_CAP`]).
    spare: Option<Handle>,
    /// Segments of the oldest pending super-segment already written by
    /// software GSO, when the device refused the next one.
    gso_done: usize,
    /// Software GRO, for a device that gives no super-segments.
    gro: Option<gro::Gro>,
    /// Frames read this turn, on their way to netdevd.
    batch: Vec<Handle>,
    /// Frames a device wrote into pool buffers, taken this turn (kept to
    /// reuse its allocation).
    by_ref: Vec<(Handle, Offload)>,
    /// Frames the device would not take yet; bounded by one ring's worth.
    pending: VecDeque<Handle>,
    /// The device may have frames: set when poll says it is readable,
    /// while reads fill their budget, after frames went out, and when the
    /// loop has been busy for a few turns without polling; cleared by a
    /// read that finds it empty. So a busy loop does not ask an empty
    /// device each turn.
    rx_armed: bool,
    /// Turns since the loop last waited (and so polled the device).
    awake_turns: u32,
    /// The device refused a frame: wait for it to be writable.
    dev_full: bool,
    /// netdevd's ring was full when we last looked.
    up_full: bool,
    /// The pool had no buffer for the last read: the frames wait in the
    /// device, and we nap rather than let a readable device wake us to
    /// find none again (after a tcpd restart with the pool dry, driverd
    /// spun 48 million times in a minute, on a core the layers that free
    /// buffers needed).
    pool_dry: bool,
    stats: Stats,
}

impl Shell {
    /// Reads frames into pool buffers, as many as netdevd's ring can take
    /// (a slow stack leaves them in the device queue rather than losing
    /// them here). Returns how many.
    fn receive(&mut self, cx: &mut Cx) -> usize {
        let room = cx.room(TO_NETDEV).min(BUDGET);
        if self.dev.pool_device().is_some() {
            return self.receive_by_reference(cx, room);
        }
        let mut n = 0;
        // Reads, counting the frames lost as too long: bounded too.
        let mut reads = 0;
        while n < room && reads < BUDGET {
            reads += 1;
            let Some(h) = self.buffers(&mut cx.pool) else {
                self.stats.inc(Stat::RxNoBuffer);
                cx.pool
                    .fabric()
                    .iface_add(self.iface, ifc::RX_DROP_NO_BUFFER, 1);
                self.pool_dry = true;
                break;
            };
            self.pool_dry = false;
            cx.syscalls(1);
            match self.read_frame(&mut cx.pool, h) {
                Ok(Some((h, off))) => {
                    self.take_in(cx, h, &off);
                    n += 1;
                }
                Ok(None) => {
                    self.stats.inc(Stat::RxEmptyReads);
                    self.rx_armed = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData && self.spare.is_none() => {
                    // Too long for a small buffer, and no large one: the
                    // frame is gone; read on.
                    self.stats.inc(Stat::RxTooLong);
                    cx.pool.fabric().iface_add(self.iface, ifc::RX_ERROR, 1);
                }
                Err(_) => {
                    self.stats.inc(Stat::RxError);
                    cx.pool.fabric().iface_add(self.iface, ifc::RX_ERROR, 1);
                    self.rx_armed = false;
                    break;
                }
            }
        }
        self.pass_up(cx, n)
    }

    /// [`Shell::receive`] from a device that writes frames into pool
    /// buffers itself: up to `room` frames, uncopied.
    fn receive_by_reference(&mut self, cx: &mut Cx, room: usize) -> usize {
        let mut got = std::mem::take(&mut self.by_ref);
        let rx = match self.dev.pool_device() {
            Some(d) => d.receive(&mut cx.pool, room, &mut got),
            None => Rx::default(),
        };
        if rx.dry {
            self.stats.inc(Stat::RxEmptyReads);
            self.rx_armed = false;
        }
        if rx.no_buffer {
            self.stats.inc(Stat::RxNoBuffer);
            cx.pool
                .fabric()
                .iface_add(self.iface, ifc::RX_DROP_NO_BUFFER, 1);
        }
        // No buffer and nothing received: nap rather than spin.
        self.pool_dry = rx.no_buffer && got.is_empty();
        let n = got.len();
        for (h, off) in got.drain(..) {
            self.take_in(cx, h, &off);
        }
        self.by_ref = got;
        self.pass_up(cx, n)
    }

    /// Adds a frame read from the device to this turn's batch: stamped,
    /// its offload state noted, through software GRO where there is one.
    fn take_in(&mut self, cx: &mut Cx, mut h: Handle, off: &Offload) {
        h.iif = self.iface;
        h.tstamp = cx.now;
        self.note_offload(&mut h, &mut cx.pool, off);
        match &mut self.gro {
            Some(g) => g.receive(&mut cx.pool, h, &mut self.batch),
            None => self.batch.push(h),
        }
    }

    /// Hands the frames read this turn to netdevd, after software GRO's
    /// flush, and counts them.
    fn pass_up(&mut self, cx: &mut Cx, n: usize) -> usize {
        if let Some(g) = &mut self.gro {
            g.flush(&mut cx.pool, &mut self.batch);
            self.stats.set(Stat::GroSuperFrames, g.stats.super_frames);
            self.stats.set(Stat::GroSegments, g.stats.segments);
            self.stats.set(Stat::GroBadChecksum, g.stats.bad_checksum);
            self.stats.set(Stat::GroNoBuffer, g.stats.no_buffer);
        }
        for h in self.batch.drain(..) {
            cx.send(TO_NETDEV, h);
        }
        self.stats.add(Stat::RxFrames, n as u64);
        cx.received(n as u64);
        n
    }

    /// A buffer to read the next frame into, with the spare large buffer
    /// ready when frames may be long and the pool has one; None when the
    /// pool has no small buffer.
    ///
    /// Without a large buffer, frames are still read: a long one is then
    /// lost (counted as `rx_too_long`), as on a NIC out of big receive
    /// buffers, but ACKs and short frames, which free buffers, go on.
    fn buffers(&mut self, pool: &mut Pool) -> Option<Handle> {
        if self.max_frame <= HEAD_CAP {
            return pool.alloc(self.max_frame);
        }
        if self.spare.is_none() {
            self.spare = pool.alloc(LARGE_BUF - HEADROOM as usize);
        }
        pool.alloc(HEAD_CAP)
    }

    /// Reads one frame into `h` (a small buffer), running on into the
    /// spare large buffer when it is longer; the frame's handle (the large
    /// buffer, its first bytes copied from the small one, when the frame
    /// was long) and offload state. Frees what it does not hand back.
    fn read_frame(&mut self, pool: &mut Pool, h: Handle) -> io::Result<Option<(Handle, Offload)>> {
        let start = HEADROOM as usize;
        let got = match self.spare {
            Some(big) => match pool.raw_pair_mut(&h, &big) {
                Ok((head, tail)) => self.dev.recv_split(
                    &mut head[start..start + HEAD_CAP],
                    &mut tail[start + HEAD_CAP..],
                ),
                Err(_) => Err(io::ErrorKind::InvalidInput.into()),
            },
            None => match pool.raw_mut(&h) {
                Ok(raw) => self.dev.recv_split(&mut raw[start..], &mut []),
                Err(_) => Err(io::ErrorKind::InvalidInput.into()),
            },
        };
        let (len, off) = match got {
            Ok(Some(x)) => x,
            other => {
                pool.free(&h);
                return other.map(|_| None);
            }
        };
        let mut out = h;
        // A long frame ran on into the spare: move its start there too.
        // (Without a spare it fit `h`, a large buffer the pool gave for
        // want of small ones.)
        if len > HEAD_CAP {
            if let Some(big) = self.spare.take() {
                if let Ok((head, tail)) = pool.raw_pair_mut(&h, &big) {
                    tail[start..start + HEAD_CAP].copy_from_slice(&head[start..start + HEAD_CAP]);
                }
                pool.free(&h);
                out = big;
            }
        }
        out.data_len = len as u32;
        Ok(Some((out, off)))
    }

    /// Carries a received frame's offload state into its handle, and
    /// counts it. A partial checksum is left to the layers above only on
    /// IPv4, where they know where to find it again; on anything else
    /// (IPv6) it is completed here, in software, where the device says.
    fn note_offload(&mut self, h: &mut Handle, pool: &mut Pool, off: &Offload) {
        match off.csum {
            Csum::Unknown => {}
            Csum::Verified => h.csum = csum::VERIFIED,
            Csum::Partial { start, offset } => {
                let ipv4 = pool
                    .data(h)
                    .is_ok_and(|d| IpFrame::parse(d).is_ok_and(|f| !f.v6));
                if ipv4 {
                    h.csum = csum::PARTIAL;
                } else {
                    let done = pool.data_mut(h).is_ok_and(|d| {
                        complete_checksum(d, usize::from(start), usize::from(offset)).is_ok()
                    });
                    // Undone (the device named no checksum inside the
                    // frame), it stays unknown: ipd or the transport
                    // verifies it and drops the frame.
                    if done {
                        self.stats.inc(Stat::CsumSoft);
                        h.csum = csum::VERIFIED;
                    }
                }
            }
        }
        if h.csum != csum::NONE {
            self.stats.inc(Stat::RxCsumOffloaded);
        }
        if off.tcp4_mss > 0 {
            h.gso_type = gso::TCPV4;
            h.gso_size = off.tcp4_mss;
            self.stats.inc(Stat::RxSuperFrames);
            let segs = pool.data(h).map_or(1, |d| tcp_segments(d, off.tcp4_mss));
            self.stats.add(Stat::RxSuperSegments, segs as u64);
        }
    }

    /// Writes what waits for the device, oldest first, until it refuses.
    /// Returns how many frames left.
    fn transmit(&mut self, cx: &mut Cx) -> usize {
        let mut sent = 0;
        self.dev_full = false;
        while let Some(h) = self.pending.front().copied() {
            let res = match cx.pool.data(&h) {
                Ok(_) => self.send_one(cx, &h),
                Err(_) => Ok(true),
            };
            match res {
                Ok(true) => {
                    self.pending.pop_front();
                    self.gso_done = 0;
                    cx.pool.free(&h);
                    sent += 1;
                }
                Ok(false) => {
                    self.dev_full = true;
                    break;
                }
                Err(_) => {
                    self.pending.pop_front();
                    self.gso_done = 0;
                    cx.pool.free(&h);
                    self.stats.inc(Stat::TxError);
                    cx.pool
                        .fabric()
                        .iface_add(self.iface, ifc::TX_DROP_DEVICE, 1);
                }
            }
        }
        if sent > 0 {
            if let Err(_e) = self.dev.flush() {
                self.stats.inc(Stat::TxError);
            }
        }
        self.stats.add(Stat::TxFrames, sent as u64);
        sent
    }

    /// Writes one handle's frame, doing in software what it asks of the
    /// device and the device cannot do; Ok(false) when the device would
    /// block (a super-segment cut in software resumes where it stopped).
    fn send_one(&mut self, cx: &mut Cx, h: &Handle) -> io::Result<bool> {
        let super_seg = h.gso_type == gso::TCPV4 && h.gso_size > 0;
        if !super_seg && h.csum != csum::PARTIAL {
            return self.send_frame(cx, h, &Offload::default());
        }
        let d = cx.pool.data(h).map_err(|_| io::ErrorKind::InvalidInput)?;
        let Some((f, csum_at)) = IpFrame::parse(d)
            .ok()
            .and_then(|f| Some((f, f.csum_offset()?)))
        else {
            self.stats.inc(Stat::TxOffloadError);
            return Ok(true);
        };
        // The segments it stands for (parsed once: counted and, without
        // TSO, cut).
        let segs = if super_seg {
            tcp_segments(d, h.gso_size)
        } else {
            1
        };
        if segs > 1 && !(self.offloads.tso4 && self.offloads.csum) {
            return self.send_gso_soft(cx, h);
        }
        let off = if self.offloads.csum {
            self.stats.inc(Stat::TxCsumOffloaded);
            Offload {
                csum: Csum::Partial {
                    start: f.l4 as u16,
                    offset: csum_at as u16,
                },
                tcp4_mss: if super_seg { h.gso_size } else { 0 },
            }
        } else {
            let d = cx
                .pool
                .data_mut(h)
                .map_err(|_| io::ErrorKind::InvalidInput)?;
            if complete_checksum(&mut d[..f.end], f.l4, csum_at).is_err() {
                self.stats.inc(Stat::TxOffloadError);
                return Ok(true);
            }
            self.stats.inc(Stat::CsumSoft);
            Offload::default()
        };
        if off.tcp4_mss > 0 {
            self.stats.inc(Stat::TxSuperFrames);
            self.stats.add(Stat::TxSuperSegments, segs as u64);
        }
        self.send_frame(cx, h, &off)
    }

    /// Writes `h`'s frame whole with offload state `off`: by reference to
    /// a device that reaches the pool, else by copy.
    fn send_frame(&mut self, cx: &mut Cx, h: &Handle, off: &Offload) -> io::Result<bool> {
        if let Some(d) = self.dev.pool_device() {
            return d.transmit(&mut cx.pool, h, off);
        }
        cx.syscalls(1);
        let frame = cx.pool.data(h).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.dev.send_parts(&[frame], off)
    }

    /// Software GSO: writes the super-segment `h` as MSS-sized frames, each
    /// its headers and then its slice of the payload, from the first one
    /// not yet written.
    fn send_gso_soft(&mut self, cx: &mut Cx, h: &Handle) -> io::Result<bool> {
        let frame = cx.pool.data(h).map_err(|_| io::ErrorKind::InvalidInput)?;
        let Ok(segs) = segment_tcp4(frame, h.gso_size) else {
            self.stats.inc(Stat::TxOffloadError);
            return Ok(true);
        };
        if self.gso_done == 0 {
            self.stats.inc(Stat::GsoSoftFrames);
        }
        let mut writes = 0;
        let mut res = Ok(true);
        for seg in segs.skip(self.gso_done) {
            writes += 1;
            let parts = [seg.headers(), seg.payload];
            let sent = match self.dev.pool_device() {
                // A second view of the pool: the copy goes to a new
                // buffer, never the one `frame` is read from.
                Some(d) => {
                    let mut pool = cx.pool.fabric().pool(cx.pool.me());
                    d.transmit_copy(&mut pool, &parts, &Offload::default())
                }
                None => self.dev.send_parts(&parts, &Offload::default()),
            };
            match sent {
                Ok(true) => {
                    self.gso_done += 1;
                    self.stats.inc(Stat::GsoSoftSegments);
                }
                other => {
                    res = other;
                    break;
                }
            }
        }
        cx.syscalls(writes);
        res
    }
}

impl Shell {
    /// Copies a device's own counters into ours (each turn: a device
    /// keeps them in memory, never behind a register read).
    fn note_device(&mut self) {
        if let Some(d) = self.dev.device_stats() {
            self.stats.set(Stat::DevLinkUp, d.link_up);
            self.stats.set(Stat::DevInterrupts, d.interrupts);
            self.stats.set(Stat::DevNotifies, d.notifies);
            self.stats.set(Stat::DevBadCompletions, d.bad_completions);
            self.stats.set(Stat::DevTxCopied, d.tx_copied);
            self.stats.set(Stat::DevRxBuffers, d.rx_buffers);
        }
    }
}

/// How many segments of `mss` payload bytes the TCP/IPv4 frame `d` stands
/// for (1 when it is not one).
fn tcp_segments(d: &[u8], mss: u16) -> usize {
    segment_tcp4(d, mss).map_or(1, |s| s.remaining())
}

impl Layer for Shell {
    fn begin(&mut self, cx: &mut Cx) -> usize {
        self.awake_turns += 1;
        if self.awake_turns > REARM_AFTER_TURNS {
            self.awake_turns = 0;
            self.rx_armed = true;
        }
        self.up_full = cx.room(TO_NETDEV) == 0;
        if self.rx_armed && !self.up_full {
            self.receive(cx)
        } else {
            0
        }
    }

    fn admit(&self, _input: usize, _cx: &Cx) -> usize {
        self.pending.capacity() - self.pending.len()
    }

    fn input(&mut self, _input: usize, h: Handle, _cx: &mut Cx) {
        self.pending.push_back(h);
    }

    fn end(&mut self, cx: &mut Cx) -> usize {
        let sent = self.transmit(cx);
        self.note_device();
        if sent > 0 {
            // The kernel handles a frame written to a TAP in the writer's
            // system call, and a peer on this CPU often answers before we
            // would sleep: read again next turn rather than poll first.
            self.rx_armed = true;
        }
        sent
    }

    fn held(&self) -> bool {
        // A full ring or a dry pool means we could not take frames
        // anyway: nap rather than let a readable device wake us just to
        // spin.
        self.up_full || self.pool_dry
    }

    fn wait_fds(&self, fds: &mut [libc::pollfd; MAX_WAIT_FDS]) -> usize {
        let hold = self.up_full || self.pool_dry;
        fds[0] = libc::pollfd {
            fd: self.dev.as_raw_fd(),
            events: if hold { 0 } else { libc::POLLIN }
                | if self.dev_full {
                    self.dev.wait_for_room()
                } else {
                    0
                },
            revents: 0,
        };
        1
    }

    fn woke(&mut self, fds: &[libc::pollfd]) {
        self.awake_turns = 0;
        if fds.first().is_some_and(|p| p.revents & libc::POLLIN != 0) {
            self.rx_armed = true;
        }
        // A wait that ended for any other reason (a kick, the tick) after
        // a full ring: netdevd may have made room.
        if self.up_full {
            self.rx_armed = true;
        }
    }

    /// A new MTU (`strata link set IFACE mtu N`): frames are read up to
    /// it; the spare large buffer goes back once none can need it.
    fn reconfigure(&mut self, cfg: &StackConfig, cx: &mut Cx) {
        let Some(ifc) = cfg.ifaces.get(usize::from(self.iface)) else {
            return;
        };
        self.max_frame = max_frame(self.offloads, ifc.mtu);
        if self.max_frame <= HEAD_CAP {
            if let Some(h) = self.spare.take() {
                cx.pool.free(&h);
            }
        }
    }

    fn counters(&self) -> &[u64] {
        self.stats.as_array()
    }
}

fn main() {
    let svc = Service::start("driverd", ArenaFormat::FIRST)
        .unwrap_or_else(|e| service::die("driverd", &e));
    let f = &svc.fabric;
    let iface = svc.me.iface().expect("driverd has an interface");
    let cfg = svc
        .config
        .ifaces
        .get(iface as usize)
        .unwrap_or_else(|| service::die("driverd", "no such interface in the configuration"));
    let fd: RawFd = service::inherited_fd(DEVICE_FD_ENV)
        .unwrap_or_else(|e| service::die("driverd", &e))
        .into_raw_fd();
    let mut dev = open_device(cfg, fd, &f.pool(svc.me))
        .unwrap_or_else(|e| service::die("driverd", &format!("device fd {fd}: {e}")));
    if dev.pool_device().is_some_and(|d| d.settles_references()) {
        // The device may have held pool buffers for a predecessor; it
        // was reset just now and touches none, so what that instance held
        // (the launcher left it, see self_reclaim) is ours to drop.
        f.ctl(svc.me).self_reclaim.store(1, Ordering::Release);
        let dropped = f.reconcile(svc.me, |_, _| 0);
        if dropped > 0 {
            svc.log(&format!(
                "released {dropped} buffer references of the previous instance"
            ));
        }
    }
    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    let lp = Loop::new(
        &svc,
        &names,
        &[Stat::DevLinkUp as usize, Stat::DevRxBuffers as usize],
        &[LayerId::NETDEVD],
        &[(LayerId::NETDEVD, Overflow::Keep)],
    );
    let offloads = dev.offloads();
    let max_frame = max_frame(offloads, cfg.mtu);
    let mut shell = Shell {
        dev,
        offloads,
        iface,
        max_frame,
        spare: None,
        gso_done: 0,
        // The device gives no super-segments: make them.
        gro: (!offloads.tso4).then(gro::Gro::default),
        batch: Vec::with_capacity(BUDGET),
        by_ref: Vec::with_capacity(BUDGET),
        pending: VecDeque::with_capacity(f.params().ring_size as usize),
        rx_armed: true,
        awake_turns: 0,
        dev_full: false,
        up_full: false,
        pool_dry: false,
        stats: Stats::default(),
    };
    lp.run(&mut shell)
}
