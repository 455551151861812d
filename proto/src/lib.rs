//! strata wire formats: Ethernet II, ARP, IPv4, ICMPv4, IPv6 with its
//! extension headers, ICMPv6 and neighbour discovery, UDP and TCP headers,
//! the virtio-net offload header, and the Internet checksum (with the
//! software fallbacks for offloads: checksum completion and TCP GSO).
//!
//! Every layer of the stack parses packets with this crate, so its parsers
//! are written for **untrusted input**:
//!
//! * a parser never panics, whatever bytes it is given (each has a property
//!   test and a fuzz target, see `proto/fuzz`);
//! * a parser checks every length against the buffer before reading, and
//!   reports what was wrong with a per-module error enum whose
//!   [`reason`](ipv4::Ipv4Error::reason) is a short `snake_case` name meant
//!   to be used as a drop-counter name;
//! * nothing here allocates: parse and emit run once per packet.
//!
//! Headers are plain `Copy` structs with public fields. `parse` reads one
//! from the start of a byte slice; `emit` writes one into a caller-supplied
//! buffer and fails with [`EmitError`] instead of panicking when the buffer
//! is too small. Multi-byte fields are held in host order; the conversion
//! to and from network (big-endian) order happens inside `parse`/`emit`.
//!
//! Where a checksum covers a payload as well as the header (ICMP, UDP, TCP),
//! `emit` takes the *whole* message with the payload already in place and
//! fills the checksum over all of it, so a sender writes the payload into a
//! pool buffer once and then emits the headers in front of it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod mld;
pub mod ndp;
pub mod offload;
pub mod sock;
pub mod tcp;
pub mod udp;
pub mod virtio;

pub use ethernet::MacAddr;

/// Why an `emit` function could not write a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitError {
    /// The destination buffer is shorter than the header (or, where the
    /// function takes the whole message, than the message's minimum size).
    BufferTooSmall,
    /// The options do not fit into the header's option space
    /// (40 bytes for IPv4 and TCP).
    OptionsTooLong,
    /// The message is longer than its 16-bit length field (or the 16-bit
    /// length of a checksum pseudo-header) can express.
    TooLong,
}

impl EmitError {
    /// A short `snake_case` name for the error, usable as a counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            EmitError::BufferTooSmall => "buffer_too_small",
            EmitError::OptionsTooLong => "options_too_long",
            EmitError::TooLong => "too_long",
        }
    }
}

impl core::fmt::Display for EmitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EmitError::BufferTooSmall => "buffer too small for the header",
            EmitError::OptionsTooLong => "options do not fit into the header",
            EmitError::TooLong => "message too long for its length field",
        })
    }
}

impl std::error::Error for EmitError {}

/// Reads a big-endian `u16` at `at`. Callers check the length first; the
/// `unwrap_or` fallback only exists so that a wrong check could never panic.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// Reads a big-endian `u32` at `at` (see [`be16`]).
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// Writes a big-endian `u16` at `at` (callers check the length first).
#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes a big-endian `u32` at `at` (callers check the length first).
#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
