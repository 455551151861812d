//! strata device backends.
//!
//! Every device the stack can drive sits behind one trait, [`Driver`], so
//! that driverd — the per-NIC process that moves frames between the device
//! and the shared-memory packet pool — is the same program whatever the
//! device is. A backend is deliberately small: it knows how to move one frame
//! at a time without blocking and which fd to sleep on; batching, buffer
//! ownership and statistics belong to driverd.
//!
//! Backends:
//! - [`tap::Tap`]: a Linux TAP device, whose other side is the kernel's own
//!   stack (the real peer the integration tests talk to). The module also
//!   holds the helpers the launcher uses to configure the kernel side.
//! - [`pair::Pair`]: a virtual wire between two strata instances on the same
//!   host, for tests that need no kernel peer.
//! - [`xdp::Xdp`]: an existing interface (a veth end, a NIC) through an
//!   AF_XDP socket, with the XDP program that steers its frames there.
//! - [`vfio::Vfio`]: a virtio-net PCI device driven from user space
//!   through VFIO, with split virtqueues ([`virtq`]) in a DMA area of its
//!   own.
//!
//! A backend is opened by the launcher, which keeps its fd for the life of
//! the stack so that a crashed driverd loses only the frames in flight: the
//! restarted driverd rebuilds the backend from an inherited copy of the fd
//! ([`Tap::from_fd`], [`Pair::from_fd`]).

#![warn(missing_docs)]

use std::io;
use std::os::fd::RawFd;

use strata_ipc::fabric::Pool;
use strata_ipc::Handle;
use strata_proto::offload::{gso_type, vnet_flags, VnetHdr};

pub mod pair;
mod sys;
pub mod tap;
pub mod vfio;
pub mod virtq;
pub mod xdp;

pub use pair::{Pair, Side};
pub use tap::Tap;

/// Most parts [`Driver::send_parts`] takes.
pub const MAX_PARTS: usize = 4;

/// A network device that moves whole Ethernet frames without blocking.
///
/// The caller sleeps on [`Driver::as_raw_fd`] and, once woken, calls
/// [`Driver::recv`] until it returns `Ok(None)` and retries any frame
/// [`Driver::send`] refused. No method ever blocks, so one thread can serve
/// the device and the packet rings together.
///
/// Errors: an error from `recv` or `send` concerns the one frame at hand,
/// which is lost; the device stays usable, so callers count the error and
/// carry on. A frame too large for the buffer given to `recv` is reported as
/// [`io::ErrorKind::InvalidData`] for the same reason: it is counted, not
/// fatal.
pub trait Driver: Send {
    /// Reads one frame into `head`, going on into `tail` when it is longer
    /// (so a caller can read into a small buffer and keep a large one for
    /// the rare long frame), with the frame's offload state; Ok(None) when
    /// nothing is ready (non-blocking).
    ///
    /// A frame longer than both together is dropped with an
    /// [`io::ErrorKind::InvalidData`] error rather than handed up cut short.
    fn recv_split(
        &mut self,
        head: &mut [u8],
        tail: &mut [u8],
    ) -> io::Result<Option<(usize, Offload)>>;

    /// Sends one frame given as consecutive parts (say, headers and then a
    /// payload elsewhere) with its offload state, which asks only for what
    /// [`Driver::offloads`] promises; Ok(false) when the device cannot take
    /// it now (would block) — the caller keeps the frame and retries after
    /// readiness.
    ///
    /// Ok(true) means the frame left, or was lost the way it would be on a
    /// wire with nobody listening (link down, peer absent): the device
    /// accepted responsibility for it either way.
    fn send_parts(&mut self, parts: &[&[u8]], off: &Offload) -> io::Result<bool>;

    /// What the device does in place of the stack: on transmit it takes
    /// these, on receive it may hand them over. None by default.
    fn offloads(&self) -> Offloads {
        Offloads::default()
    }

    /// Reads one frame into buf; Ok(None) when nothing is ready.
    ///
    /// `buf` should hold the largest frame the device can deliver (MTU plus
    /// the 14-byte Ethernet header); see [`Driver::recv_split`].
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(self.recv_split(buf, &mut [])?.map(|(n, _)| n))
    }

    /// Sends one frame without offloads; see [`Driver::send_parts`].
    fn send(&mut self, frame: &[u8]) -> io::Result<bool> {
        self.send_parts(&[frame], &Offload::default())
    }

    /// Hands the frames [`Driver::send_parts`] queued to the device, for a
    /// device that queues them (AF_XDP); called after each batch. Nothing
    /// by default.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The poll events on [`Driver::as_raw_fd`] that say a device which
    /// refused a frame may take one now: writability by default.
    fn wait_for_room(&self) -> i16 {
        libc::POLLOUT
    }

    /// The device's own state and counters, for a device that keeps
    /// them; None by default.
    fn device_stats(&self) -> Option<DeviceStats> {
        None
    }

    /// For a device that reaches the pool's buffers itself (by DMA):
    /// frames move by handle, uncopied. None by default.
    fn pool_device(&mut self) -> Option<&mut dyn PoolDevice> {
        None
    }

    /// The fd to poll for readability (and for [`Driver::wait_for_room`]
    /// when send returned false).
    fn as_raw_fd(&self) -> RawFd;
}

/// The device's own state and the driver's work on its queues, for
/// `strata stats` (virtio-net keeps no counters a driver can read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// The device says its link is up (1), down (0); 1 when it cannot
    /// say (no `STATUS` feature).
    pub link_up: u64,
    /// Interrupts taken (eventfd signals).
    pub interrupts: u64,
    /// Doorbell writes (notifications to the device).
    pub notifies: u64,
    /// Used-ring entries the device gave that named no buffer it held,
    /// or a length beyond one: ignored and counted.
    pub bad_completions: u64,
    /// Frames sent by copy rather than by reference (too little room in
    /// front of them for the device's header, or cut in software).
    pub tx_copied: u64,
    /// Pool buffers the device holds to receive into.
    pub rx_buffers: u64,
}

/// A device that reads and writes the pool's buffers itself (DMA): it
/// receives into buffers it takes from the pool and sends from the
/// handles it is given, holding a reference on each buffer while it may
/// touch it. Such a device holds pool buffers across a driverd death, so
/// the driverd that opens one settles its predecessor's references only
/// after the device is reset (`Fabric::reconcile`).
pub trait PoolDevice {
    /// Takes up to `max` received frames into `out`, each the handle of
    /// the buffer it landed in (data window set) and its offload state,
    /// and gives the device fresh buffers for those. Frames the device got
    /// wrong are freed and counted.
    fn receive(&mut self, pool: &mut Pool, max: usize, out: &mut Vec<(Handle, Offload)>) -> Rx;

    /// Sends the frame `h` by reference (taking a reference of its own
    /// until the device is done); Ok(false) when the device has no room
    /// now. A frame it cannot send by reference goes by copy.
    fn transmit(&mut self, pool: &mut Pool, h: &Handle, off: &Offload) -> io::Result<bool>;

    /// Sends a frame given as consecutive parts (a segment software GSO
    /// cut) by copying it; Ok(false) when the device has no room now.
    fn transmit_copy(
        &mut self,
        pool: &mut Pool,
        parts: &[&[u8]],
        off: &Offload,
    ) -> io::Result<bool>;

    /// Whether driverd settles a dead predecessor's references itself,
    /// after opening (and so resetting) the device: true for a device
    /// that only a driverd can make let go of its buffers. False when the
    /// launcher does it before the restart (an AF_XDP socket, which it
    /// closes), so its ordinary reclaim applies.
    fn settles_references(&self) -> bool;
}

/// What [`PoolDevice::receive`] found besides frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rx {
    /// The device's receive queue is empty: nothing more to take now.
    pub dry: bool,
    /// The pool had no buffer to give the device.
    pub no_buffer: bool,
}

/// The offloads a device performs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Transport checksums: a frame may go out with a partial one, and
    /// frames may come in with theirs verified or partial.
    pub csum: bool,
    /// TCP over IPv4 segmentation: a super-segment may go out whole, and
    /// super-segments may come in.
    pub tso4: bool,
}

/// The offload state of one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// What is known of the transport checksum.
    pub csum: Csum,
    /// Payload bytes per segment when the frame is a TCP over IPv4
    /// super-segment; 0 when it is an ordinary frame.
    pub tcp4_mss: u16,
}

/// What is known of a frame's transport checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Csum {
    /// Nothing: the receiver verifies it, the sender computed it.
    #[default]
    Unknown,
    /// The device verified it (receive only).
    Verified,
    /// It is partial (see [`strata_proto::offload`]): the range summed
    /// starts `start` bytes into the frame, and the field is `offset`
    /// bytes further.
    Partial {
        /// Start of the summed range, from the frame's first byte.
        start: u16,
        /// The checksum field, from `start`.
        offset: u16,
    },
}

/// The one way every backend reports a frame longer than the caller's buffer,
/// so driverd can count these separately from device failures.
pub(crate) fn truncated(buf_len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("dropped a frame longer than the {buf_len}-byte receive buffer"),
    )
}

/// The offload state a virtio-net header from a device (a TAP's
/// kernel, a virtio NIC) describes.
pub(crate) fn offload_of(h: &VnetHdr) -> io::Result<Offload> {
    let csum = if h.flags & vnet_flags::NEEDS_CSUM != 0 {
        Csum::Partial {
            start: h.csum_start,
            offset: h.csum_offset,
        }
    } else if h.flags & vnet_flags::DATA_VALID != 0 {
        Csum::Verified
    } else {
        Csum::Unknown
    };
    let tcp4_mss = match h.gso_type & !gso_type::ECN {
        gso_type::NONE => 0,
        gso_type::TCPV4 if h.gso_size > 0 => h.gso_size,
        t => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a super-frame of GSO type {t} and size {}, which we did not ask for",
                    h.gso_size
                ),
            ))
        }
    };
    Ok(Offload { csum, tcp4_mss })
}

/// The virtio-net header that asks a device for `off`.
pub(crate) fn vnet_of(off: &Offload) -> VnetHdr {
    let mut h = VnetHdr::default();
    if let Csum::Partial { start, offset } = off.csum {
        h.flags = vnet_flags::NEEDS_CSUM;
        h.csum_start = start;
        h.csum_offset = offset;
    }
    if off.tcp4_mss > 0 {
        h.gso_type = gso_type::TCPV4;
        h.gso_size = off.tcp4_mss;
    }
    h
}

/// A virtio-net header that could not be read.
pub(crate) fn bad_vnet(e: strata_proto::offload::OffloadError) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("virtio-net header: {e}"),
    )
}
