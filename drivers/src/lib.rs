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
//!
//! A backend is opened by the launcher, which keeps its fd for the life of
//! the stack so that a crashed driverd loses only the frames in flight: the
//! restarted driverd rebuilds the backend from an inherited copy of the fd
//! ([`Tap::from_fd`], [`Pair::from_fd`]).

#![warn(missing_docs)]

use std::io;
use std::os::fd::RawFd;

pub mod pair;
mod sys;
pub mod tap;
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

    /// The fd to poll for readability (and writability when send returned
    /// false).
    fn as_raw_fd(&self) -> RawFd;
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
