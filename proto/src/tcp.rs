//! TCP (RFC 9293) headers and options, over IPv4 and IPv6.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence Number                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Acknowledgment Number                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! |       |       |R|E|G|K|H|T|N|N|                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Checksum            |         Urgent Pointer        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (0..40 bytes)                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Options understood: maximum segment size (RFC 9293), window scale and
//! timestamps (RFC 7323), SACK-permitted and SACK blocks (RFC 2018). They
//! are parsed into a fixed-size [`TcpOptions`] (no allocation) whatever
//! segment they arrive on; which ones to honour on which segment (MSS and
//! window scale only on a SYN, say) is the TCP state machine's decision.
//!
//! The checksum covers a pseudo-header of the IP layer below: IPv4's
//! (RFC 9293 §3.1; [`TcpHeader::emit`], [`TcpHeader::verify_checksum`])
//! or IPv6's (RFC 8200 §8.1; [`TcpHeader::emit_v6`],
//! [`TcpHeader::verify_checksum_v6`]). Over either, the `_partial`
//! variants leave the field holding the pseudo-header sum for a device
//! or driver to complete (checksum offload).

use core::fmt;
use core::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Not};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum::{pseudo_header_v4, pseudo_header_v6, Checksum};
use crate::ipv4::protocol;
use crate::{be16, be32, put16, put32, EmitError};

/// TCP option kinds.
pub mod option_kind {
    /// End of option list.
    pub const EOL: u8 = 0;
    /// No operation (padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size (length 4).
    pub const MSS: u8 = 2;
    /// Window scale (length 3).
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted (length 2).
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks (length 2 + 8 × blocks).
    pub const SACK: u8 = 5;
    /// Timestamps (length 10).
    pub const TIMESTAMP: u8 = 8;
}

/// Largest window scale shift allowed (RFC 7323 §2.3). A received larger
/// value is treated as this.
pub const MAX_WINDOW_SCALE: u8 = 14;

/// Most option bytes a TCP header can carry (data offset 15).
pub const MAX_OPTIONS_LEN: usize = 40;

/// Why a TCP header could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpError {
    /// Shorter than 20 bytes, or shorter than the data offset says.
    Truncated,
    /// The data offset is below 5 (a header is at least 20 bytes).
    BadHeaderLen,
    /// An option's length is missing, below 2, runs past the header, or is
    /// wrong for a known option kind.
    BadOptions,
    /// The checksum is wrong. Not returned by [`TcpHeader::parse`], which
    /// does not see the pseudo-header; for callers whose
    /// [`TcpHeader::verify_checksum`] failed, to count the drop by the same
    /// naming scheme.
    BadChecksum,
}

impl TcpError {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            TcpError::Truncated => "truncated",
            TcpError::BadHeaderLen => "bad_header_len",
            TcpError::BadOptions => "bad_options",
            TcpError::BadChecksum => "bad_checksum",
        }
    }
}

impl fmt::Display for TcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpError::Truncated => "TCP segment shorter than its header",
            TcpError::BadHeaderLen => "TCP data offset below 5",
            TcpError::BadOptions => "malformed TCP options",
            TcpError::BadChecksum => "TCP checksum mismatch",
        })
    }
}

impl std::error::Error for TcpError {}

/// The eight TCP control bits (byte 13 of the header).
///
/// ```
/// use strata_proto::tcp::TcpFlags;
/// let f = TcpFlags::SYN | TcpFlags::ACK;
/// assert!(f.contains(TcpFlags::SYN));
/// assert!(!f.contains(TcpFlags::SYN | TcpFlags::FIN));
/// assert_eq!(f.to_string(), "SYN|ACK");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// No flags.
    pub const fn empty() -> Self {
        TcpFlags(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set in `self`.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: TcpFlags) {
        self.0 |= other.0;
    }

    /// Clears the flags of `other`.
    pub fn remove(&mut self, other: TcpFlags) {
        self.0 &= !other.0;
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl BitAndAssign for TcpFlags {
    fn bitand_assign(&mut self, rhs: TcpFlags) {
        self.0 &= rhs.0;
    }
}

impl Not for TcpFlags {
    type Output = TcpFlags;
    fn not(self) -> TcpFlags {
        TcpFlags(!self.0)
    }
}

impl fmt::Display for TcpFlags {
    /// Formats the set flags' names joined by `|` (`SYN|ACK`), or `-` when
    /// none is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (i, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// The TCP options the stack understands, parsed into fixed-size fields.
///
/// Unknown options are skipped by the parser and cannot be emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// Maximum segment size the sender can receive.
    pub mss: Option<u16>,
    /// Window scale shift count. The parser caps it at
    /// [`MAX_WINDOW_SCALE`]; `emit` writes it as it is.
    pub window_scale: Option<u8>,
    /// SACK permitted.
    pub sack_permitted: bool,
    /// SACK blocks `(left edge, right edge)`; only the first
    /// [`sack_count`](Self::sack_count) are meaningful (see
    /// [`sack`](Self::sack)). The first block should report the most
    /// recently received data (RFC 2018).
    pub sack_blocks: [(u32, u32); 4],
    /// Number of meaningful SACK blocks (0..=4; larger values count as 4).
    pub sack_count: u8,
    /// Timestamps `(TSval, TSecr)`.
    pub timestamp: Option<(u32, u32)>,
}

impl TcpOptions {
    /// The meaningful SACK blocks.
    pub fn sack(&self) -> &[(u32, u32)] {
        let n = usize::from(self.sack_count).min(self.sack_blocks.len());
        &self.sack_blocks[..n]
    }

    /// Appends a SACK block; returns `false` (changing nothing) if four are
    /// held already.
    pub fn push_sack(&mut self, block: (u32, u32)) -> bool {
        let n = self.sack().len();
        match self.sack_blocks.get_mut(n) {
            Some(slot) => {
                *slot = block;
                self.sack_count = n as u8 + 1;
                true
            }
            None => false,
        }
    }

    /// Bytes of every option but SACK blocks, as laid out by `emit`.
    fn fixed_len(&self) -> usize {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        if self.timestamp.is_some() {
            n += 12; // SACK-permitted (or two NOPs) + timestamps
        } else if self.sack_permitted {
            n += 4; // two NOPs + SACK-permitted
        }
        if self.window_scale.is_some() {
            n += 4; // NOP + window scale
        }
        n
    }

    /// How many SACK blocks `emit` writes: as many of [`sack`](Self::sack)
    /// as fit into the option space left by the other options (4 without
    /// timestamps, 3 with them).
    pub fn emitted_sack_count(&self) -> usize {
        let room = MAX_OPTIONS_LEN - self.fixed_len();
        let fit = room.saturating_sub(4) / 8;
        self.sack().len().min(fit)
    }

    /// Length in bytes of the options as emitted, a multiple of 4 (0..=40).
    ///
    /// The layout is the one Linux uses: MSS; SACK-permitted and timestamps
    /// packed together (NOP-padded when only one is present); NOP and
    /// window scale; two NOPs and the SACK blocks.
    pub fn emit_len(&self) -> usize {
        let sacks = self.emitted_sack_count();
        self.fixed_len() + if sacks > 0 { 4 + 8 * sacks } else { 0 }
    }

    /// Writes the options as laid out by [`emit_len`](Self::emit_len) into
    /// the start of `b` and returns their length.
    pub fn emit(&self, b: &mut [u8]) -> Result<usize, EmitError> {
        let len = self.emit_len();
        let b = b.get_mut(..len).ok_or(EmitError::BufferTooSmall)?;
        let mut at = 0;
        if let Some(mss) = self.mss {
            b[at..at + 2].copy_from_slice(&[option_kind::MSS, 4]);
            put16(b, at + 2, mss);
            at += 4;
        }
        match (self.sack_permitted, self.timestamp) {
            (sp, Some((val, ecr))) => {
                let head = if sp {
                    [option_kind::SACK_PERMITTED, 2]
                } else {
                    [option_kind::NOP, option_kind::NOP]
                };
                b[at..at + 2].copy_from_slice(&head);
                b[at + 2..at + 4].copy_from_slice(&[option_kind::TIMESTAMP, 10]);
                put32(b, at + 4, val);
                put32(b, at + 8, ecr);
                at += 12;
            }
            (true, None) => {
                b[at..at + 4].copy_from_slice(&[
                    option_kind::NOP,
                    option_kind::NOP,
                    option_kind::SACK_PERMITTED,
                    2,
                ]);
                at += 4;
            }
            (false, None) => {}
        }
        if let Some(ws) = self.window_scale {
            b[at..at + 4].copy_from_slice(&[option_kind::NOP, option_kind::WINDOW_SCALE, 3, ws]);
            at += 4;
        }
        let sacks = self.emitted_sack_count();
        if sacks > 0 {
            b[at..at + 4].copy_from_slice(&[
                option_kind::NOP,
                option_kind::NOP,
                option_kind::SACK,
                (2 + 8 * sacks) as u8,
            ]);
            at += 4;
            for &(l, r) in &self.sack()[..sacks] {
                put32(b, at, l);
                put32(b, at + 4, r);
                at += 8;
            }
        }
        debug_assert_eq!(at, len);
        Ok(len)
    }

    /// Parses an option area (the header bytes after the first 20).
    ///
    /// Stops at EOL; skips NOPs and unknown options; a later duplicate of
    /// an option replaces the earlier one. Fails with
    /// [`TcpError::BadOptions`] if an option's length octet is missing, is
    /// below 2, runs past the area, or is wrong for a known kind (MSS 4,
    /// window scale 3, SACK-permitted 2, timestamps 10, SACK 10/18/26/34).
    pub fn parse(area: &[u8]) -> Result<TcpOptions, TcpError> {
        let mut o = TcpOptions::default();
        let mut rest = area;
        while let Some((&kind, after)) = rest.split_first() {
            match kind {
                option_kind::EOL => break,
                option_kind::NOP => {
                    rest = after;
                    continue;
                }
                _ => {}
            }
            let len = match after.first() {
                Some(&l) if l >= 2 && usize::from(l) <= rest.len() => usize::from(l),
                _ => return Err(TcpError::BadOptions),
            };
            let (opt, tail) = rest.split_at(len);
            rest = tail;
            let data = &opt[2..];
            match kind {
                option_kind::MSS => {
                    if data.len() != 2 {
                        return Err(TcpError::BadOptions);
                    }
                    o.mss = Some(be16(data, 0));
                }
                option_kind::WINDOW_SCALE => match data {
                    [ws] => o.window_scale = Some((*ws).min(MAX_WINDOW_SCALE)),
                    _ => return Err(TcpError::BadOptions),
                },
                option_kind::SACK_PERMITTED => {
                    if !data.is_empty() {
                        return Err(TcpError::BadOptions);
                    }
                    o.sack_permitted = true;
                }
                option_kind::TIMESTAMP => {
                    if data.len() != 8 {
                        return Err(TcpError::BadOptions);
                    }
                    o.timestamp = Some((be32(data, 0), be32(data, 4)));
                }
                option_kind::SACK => {
                    let n = data.len() / 8;
                    if data.is_empty() || data.len() % 8 != 0 || n > o.sack_blocks.len() {
                        return Err(TcpError::BadOptions);
                    }
                    for (slot, blk) in o.sack_blocks.iter_mut().zip(data.chunks_exact(8)) {
                        *slot = (be32(blk, 0), be32(blk, 4));
                    }
                    o.sack_count = n as u8;
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// A TCP header (options are held apart, in [`TcpOptions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful with [`TcpFlags::ACK`]).
    pub ack: u32,
    /// Header length in bytes, options included (20..=60). `emit` derives
    /// it from the options and ignores this field.
    pub header_len: u8,
    /// Control bits.
    pub flags: TcpFlags,
    /// Receive window (unscaled, as on the wire).
    pub window: u16,
    /// Checksum as received. `emit` ignores it and computes a fresh one.
    pub checksum: u16,
    /// Urgent pointer (meaningful with [`TcpFlags::URG`]).
    pub urgent: u16,
}

impl TcpHeader {
    /// Length of a header without options.
    pub const MIN_LEN: usize = 20;
    /// Length of a header with the most options (data offset 15).
    pub const MAX_LEN: usize = 60;

    /// Parses the header and its options at the start of segment `b`.
    ///
    /// Fails with [`TcpError::Truncated`] if `b` is shorter than 20 bytes or
    /// than the data offset says, [`TcpError::BadHeaderLen`] if the data
    /// offset is below 5, and [`TcpError::BadOptions`] as
    /// [`TcpOptions::parse`] does. Unknown options are skipped. The reserved
    /// bits are ignored. The payload is `&b[header_len as usize..]`.
    ///
    /// The checksum is not checked here (it needs the IP addresses): see
    /// [`verify_checksum`](Self::verify_checksum).
    pub fn parse(b: &[u8]) -> Result<(Self, TcpOptions), TcpError> {
        if b.len() < Self::MIN_LEN {
            return Err(TcpError::Truncated);
        }
        let doff = b[12] >> 4;
        if doff < 5 {
            return Err(TcpError::BadHeaderLen);
        }
        let header_len = usize::from(doff) * 4;
        let area = b
            .get(Self::MIN_LEN..header_len)
            .ok_or(TcpError::Truncated)?;
        let opts = TcpOptions::parse(area)?;
        let h = TcpHeader {
            src_port: be16(b, 0),
            dst_port: be16(b, 2),
            seq: be32(b, 4),
            ack: be32(b, 8),
            header_len: header_len as u8,
            flags: TcpFlags(b[13]),
            window: be16(b, 14),
            checksum: be16(b, 16),
            urgent: be16(b, 18),
        };
        Ok((h, opts))
    }

    /// Verifies the checksum of the whole segment `seg` (header and
    /// payload) sent from `src` to `dst`. Returns `false` for a `seg`
    /// shorter than 20 or longer than 65535 bytes.
    pub fn verify_checksum(seg: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        Self::verify_with(seg, |len| pseudo_header_v4(src, dst, protocol::TCP, len))
    }

    /// Verifies the checksum of the whole segment `seg` (header and
    /// payload) sent over IPv6 from `src` to `dst` (the final
    /// destination), with the IPv6 pseudo-header (RFC 8200 §8.1). Returns
    /// `false` for a `seg` shorter than 20 or longer than 65535 bytes (no
    /// jumbograms, RFC 2675).
    pub fn verify_checksum_v6(seg: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        Self::verify_with(seg, |len| {
            pseudo_header_v6(src, dst, protocol::TCP, u32::from(len))
        })
    }

    /// Whether `pseudo(length)` and all of `seg` sum to the checksum's
    /// all-ones (RFC 1071).
    fn verify_with(seg: &[u8], pseudo: impl FnOnce(u16) -> Checksum) -> bool {
        if seg.len() < Self::MIN_LEN {
            return false;
        }
        let Ok(len) = u16::try_from(seg.len()) else {
            return false;
        };
        let mut c = pseudo(len);
        c.add_bytes(seg);
        c.sum() == 0xffff
    }

    /// The header length, in bytes, of a header carrying `opts`:
    /// 20 plus [`TcpOptions::emit_len`].
    pub fn header_len_for(opts: &TcpOptions) -> usize {
        Self::MIN_LEN + opts.emit_len()
    }

    /// Writes the header and options at the start of `b` and returns the
    /// header length, storing `self.checksum` as it is: for a caller that
    /// fills the checksum later or leaves it to the device (checksum
    /// offload, where the field holds the pseudo-header sum).
    /// `self.header_len` is ignored.
    pub fn emit_header(&self, opts: &TcpOptions, b: &mut [u8]) -> Result<usize, EmitError> {
        let hl = Self::header_len_for(opts);
        let h = b.get_mut(..hl).ok_or(EmitError::BufferTooSmall)?;
        put16(h, 0, self.src_port);
        put16(h, 2, self.dst_port);
        put32(h, 4, self.seq);
        put32(h, 8, self.ack);
        h[12] = ((hl / 4) as u8) << 4;
        h[13] = self.flags.0;
        put16(h, 14, self.window);
        put16(h, 16, self.checksum);
        put16(h, 18, self.urgent);
        opts.emit(&mut h[Self::MIN_LEN..])?;
        Ok(hl)
    }

    /// Writes the header and options at the start of `seg`, the whole
    /// segment with its payload already in place after
    /// [`header_len_for(opts)`](Self::header_len_for) bytes, fills the
    /// checksum over all of `seg`, and returns the header length.
    /// `self.header_len` and `self.checksum` are ignored.
    ///
    /// Fails with [`EmitError::BufferTooSmall`] if `seg` is shorter than the
    /// header and [`EmitError::TooLong`] if it is longer than 65535 bytes.
    pub fn emit(
        &self,
        opts: &TcpOptions,
        seg: &mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<usize, EmitError> {
        let hl = self.emit_partial(opts, seg, src, dst)?;
        Self::complete(seg);
        Ok(hl)
    }

    /// As [`emit`](Self::emit), but leaves the checksum *partial*: the
    /// field holds the pseudo-header sum, for the device or the driver to
    /// complete (see [`crate::offload`]). The payload is not read.
    pub fn emit_partial(
        &self,
        opts: &TcpOptions,
        seg: &mut [u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<usize, EmitError> {
        self.emit_partial_with(opts, seg, |len| {
            pseudo_header_v4(src, dst, protocol::TCP, len)
        })
    }

    /// As [`emit`](Self::emit), for a segment sent over IPv6 from `src` to
    /// `dst` (the final destination): the checksum covers the IPv6
    /// pseudo-header (RFC 8200 §8.1) over the addresses as given (`::`
    /// included, for a layer below that fills in the source and updates
    /// the checksum).
    ///
    /// Fails with [`EmitError::BufferTooSmall`] if `seg` is shorter than the
    /// header and [`EmitError::TooLong`] if it is longer than 65535 bytes
    /// (no jumbograms, RFC 2675).
    pub fn emit_v6(
        &self,
        opts: &TcpOptions,
        seg: &mut [u8],
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) -> Result<usize, EmitError> {
        let hl = self.emit_partial_v6(opts, seg, src, dst)?;
        Self::complete(seg);
        Ok(hl)
    }

    /// As [`emit_v6`](Self::emit_v6), but leaves the checksum *partial*:
    /// the field holds the IPv6 pseudo-header sum, for the device or the
    /// driver to complete. The payload is not read.
    pub fn emit_partial_v6(
        &self,
        opts: &TcpOptions,
        seg: &mut [u8],
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) -> Result<usize, EmitError> {
        self.emit_partial_with(opts, seg, |len| {
            pseudo_header_v6(src, dst, protocol::TCP, u32::from(len))
        })
    }

    /// Writes the header into `seg` with the checksum field holding
    /// `pseudo(seg.len())`'s sum, uncomplemented.
    fn emit_partial_with(
        &self,
        opts: &TcpOptions,
        seg: &mut [u8],
        pseudo: impl FnOnce(u16) -> Checksum,
    ) -> Result<usize, EmitError> {
        let len = u16::try_from(seg.len()).map_err(|_| EmitError::TooLong)?;
        let hl = self.emit_header(opts, seg)?;
        put16(seg, 16, pseudo(len).sum());
        Ok(hl)
    }

    /// Completes a partial checksum in place: the field holds the
    /// pseudo-header sum, so summing the whole segment covers both.
    fn complete(seg: &mut [u8]) {
        let mut c = Checksum::new();
        c.add_bytes(seg);
        put16(seg, 16, c.finish());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// A SYN as Linux sends it: 10.0.0.1:40000 -> 10.0.0.2:80, seq
    /// 0x12345678, window 64240, options mss 1460, sackOK, TS val 123456
    /// ecr 0, nop, wscale 7. Checksum 0x518e computed independently.
    const SYN: [u8; 40] = [
        0x9c, 0x40, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0x51, 0x8e, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01,
        0xe2, 0x40, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    fn syn_opts() -> TcpOptions {
        TcpOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamp: Some((123_456, 0)),
            ..TcpOptions::default()
        }
    }

    #[test]
    fn a_completed_partial_checksum_is_the_full_one() {
        let payload = [7u8; 33];
        let mut full = vec![0u8; 20 + payload.len()];
        full[20..].copy_from_slice(&payload);
        let mut partial = full.clone();
        let h = TcpHeader::parse(&SYN).unwrap().0;
        let o = TcpOptions::default();
        h.emit(&o, &mut full, SRC, DST).unwrap();
        h.emit_partial(&o, &mut partial, SRC, DST).unwrap();
        assert!(!TcpHeader::verify_checksum(&partial, SRC, DST));
        crate::offload::complete_checksum(&mut partial, 0, 16).unwrap();
        assert_eq!(partial, full);
    }

    #[test]
    fn known_syn() {
        let (h, o) = TcpHeader::parse(&SYN).unwrap();
        assert_eq!(
            h,
            TcpHeader {
                src_port: 40000,
                dst_port: 80,
                seq: 0x1234_5678,
                ack: 0,
                header_len: 40,
                flags: TcpFlags::SYN,
                window: 64240,
                checksum: 0x518e,
                urgent: 0,
            }
        );
        assert_eq!(o, syn_opts());
        assert!(TcpHeader::verify_checksum(&SYN, SRC, DST));
        assert!(!TcpHeader::verify_checksum(
            &SYN,
            DST,
            Ipv4Addr::new(1, 2, 3, 4)
        ));

        // Emitting the same header and options reproduces the bytes.
        assert_eq!(TcpHeader::header_len_for(&o), 40);
        let mut seg = [0u8; 40];
        assert_eq!(h.emit(&o, &mut seg, SRC, DST), Ok(40));
        assert_eq!(seg, SYN);
    }

    const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    #[test]
    fn known_syn_over_ipv6() {
        // The SYN of `SYN` sent 2001:db8::1 -> 2001:db8::2: checksum
        // 0x0a1c, computed independently (RFC 8200 §8.1 pseudo-header:
        // addresses, length 40 as 32 bits, next header 6).
        let (h, o) = TcpHeader::parse(&SYN).unwrap();
        let mut seg = [0u8; 40];
        assert_eq!(h.emit_v6(&o, &mut seg, SRC6, DST6), Ok(40));
        assert_eq!(&seg[16..18], &[0x0a, 0x1c]);
        assert_eq!(&seg[..16], &SYN[..16]);
        assert_eq!(&seg[18..], &SYN[18..]);
        assert!(TcpHeader::verify_checksum_v6(&seg, SRC6, DST6));
        assert!(!TcpHeader::verify_checksum_v6(
            &seg,
            DST6,
            Ipv6Addr::LOCALHOST
        ));
        assert!(!TcpHeader::verify_checksum_v6(&SYN, SRC6, DST6));
        assert!(!TcpHeader::verify_checksum_v6(&seg[..19], SRC6, DST6));
        assert_eq!(
            h.emit_v6(&o, &mut vec![0u8; 65536], SRC6, DST6),
            Err(EmitError::TooLong)
        );
        assert_eq!(
            h.emit_partial_v6(&o, &mut [0u8; 39], SRC6, DST6),
            Err(EmitError::BufferTooSmall)
        );
    }

    #[test]
    fn a_completed_partial_checksum_over_ipv6_is_the_full_one() {
        let payload = [9u8; 21];
        let mut full = vec![0u8; 20 + payload.len()];
        full[20..].copy_from_slice(&payload);
        let mut partial = full.clone();
        let h = TcpHeader::parse(&SYN).unwrap().0;
        let o = TcpOptions::default();
        h.emit_v6(&o, &mut full, SRC6, DST6).unwrap();
        h.emit_partial_v6(&o, &mut partial, SRC6, DST6).unwrap();
        assert!(!TcpHeader::verify_checksum_v6(&partial, SRC6, DST6));
        crate::offload::complete_checksum(&mut partial, 0, 16).unwrap();
        assert_eq!(partial, full);
    }

    #[test]
    fn data_segment_with_sack() {
        // ACK with NOP NOP TS, NOP NOP SACK(2 blocks), 3 payload bytes.
        let o = TcpOptions {
            timestamp: Some((7, 9)),
            sack_blocks: [(100, 200), (300, 400), (0, 0), (0, 0)],
            sack_count: 2,
            ..TcpOptions::default()
        };
        assert_eq!(o.emit_len(), 12 + 4 + 16);
        let h = TcpHeader {
            src_port: 80,
            dst_port: 40000,
            seq: 1,
            ack: 2,
            header_len: 0,
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 501,
            checksum: 0,
            urgent: 0,
        };
        let mut seg = vec![0u8; 20 + 32 + 3];
        seg[52..].copy_from_slice(b"abc");
        assert_eq!(h.emit(&o, &mut seg, DST, SRC), Ok(52));
        assert_eq!(
            &seg[20..36],
            &[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9, 1, 1, 5, 18]
        );
        assert!(TcpHeader::verify_checksum(&seg, DST, SRC));
        let (p, po) = TcpHeader::parse(&seg).unwrap();
        assert_eq!(po, o);
        assert_eq!(po.sack(), &[(100, 200), (300, 400)]);
        assert_eq!(p.header_len, 52);
        assert_eq!(&seg[usize::from(p.header_len)..], b"abc");
    }

    #[test]
    fn sack_truncated_to_fit() {
        let mut o = TcpOptions {
            timestamp: Some((1, 2)),
            ..TcpOptions::default()
        };
        for i in 0..4 {
            assert!(o.push_sack((i, i + 1)));
        }
        assert!(!o.push_sack((9, 9)));
        assert_eq!(o.sack().len(), 4);
        assert_eq!(o.emitted_sack_count(), 3);
        assert_eq!(o.emit_len(), 40);
        o.timestamp = None;
        assert_eq!(o.emitted_sack_count(), 4);
        assert_eq!(o.emit_len(), 36);
        // Everything at once still fits, with fewer blocks.
        let all = TcpOptions {
            timestamp: Some((1, 2)),
            ..syn_opts()
        };
        let mut all = TcpOptions {
            sack_count: 4,
            ..all
        };
        all.sack_blocks = [(1, 2); 4];
        assert_eq!(all.emitted_sack_count(), 2);
        assert_eq!(all.emit_len(), 40);
        // sack_count beyond 4 counts as 4.
        all.sack_count = 200;
        assert_eq!(all.sack().len(), 4);
    }

    #[test]
    fn option_parsing_edge_cases() {
        // Unknown option skipped, EOL ends parsing, garbage after EOL ignored.
        let area = [30, 4, 0xaa, 0xbb, 2, 4, 0x05, 0xdc, 0, 0xff, 0xff, 0xff];
        let o = TcpOptions::parse(&area).unwrap();
        assert_eq!(o.mss, Some(1500));
        // Window scale above 14 is capped.
        assert_eq!(
            TcpOptions::parse(&[3, 3, 20, 1]).unwrap().window_scale,
            Some(14)
        );
        // Malformed lengths.
        for bad in [
            &[2u8][..],                    // length missing
            &[30, 1, 0, 0][..],            // length below 2
            &[30, 0, 0, 0][..],            // length zero
            &[30, 5, 0, 0][..],            // runs past the area
            &[2, 3, 5, 0][..],             // MSS of length 3
            &[3, 4, 1, 0][..],             // window scale of length 4
            &[4, 3, 0, 1][..],             // SACK-permitted of length 3
            &[5, 2, 1, 1][..],             // SACK with no block
            &[5, 6, 0, 0, 0, 0][..],       // SACK with half a block
            &[8, 8, 0, 0, 0, 0, 0, 0][..], // short timestamps
        ] {
            assert_eq!(TcpOptions::parse(bad), Err(TcpError::BadOptions), "{bad:?}");
        }
        assert_eq!(TcpOptions::parse(&[]), Ok(TcpOptions::default()));
        assert_eq!(TcpOptions::parse(&[1, 1, 1, 1]), Ok(TcpOptions::default()));
    }

    #[test]
    fn header_errors() {
        assert_eq!(TcpHeader::parse(&SYN[..19]), Err(TcpError::Truncated));
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(TcpHeader::parse(&b), Err(TcpError::BadHeaderLen));
        assert_eq!(TcpHeader::parse(&SYN[..39]), Err(TcpError::Truncated));
        let mut b = SYN;
        b[21] = 9;
        assert_eq!(TcpHeader::parse(&b), Err(TcpError::BadOptions));
        assert_eq!(TcpError::BadHeaderLen.reason(), "bad_header_len");
        assert!(!TcpHeader::verify_checksum(&SYN[..19], SRC, DST));

        let (h, o) = TcpHeader::parse(&SYN).unwrap();
        assert_eq!(
            h.emit(&o, &mut [0u8; 39], SRC, DST),
            Err(EmitError::BufferTooSmall)
        );
        assert_eq!(
            h.emit(&o, &mut vec![0u8; 65536], SRC, DST),
            Err(EmitError::TooLong)
        );
        // Reserved bits are ignored.
        let mut b = SYN;
        b[12] |= 0x0f;
        assert_eq!(TcpHeader::parse(&b).unwrap().0, h);
    }

    #[test]
    fn flags() {
        let mut f = TcpFlags::SYN | TcpFlags::ACK;
        assert!(f.contains(TcpFlags::ACK));
        assert!(f.intersects(TcpFlags::ACK | TcpFlags::FIN));
        assert!(!f.intersects(TcpFlags::RST | TcpFlags::FIN));
        f.remove(TcpFlags::SYN);
        assert_eq!(f, TcpFlags::ACK);
        f.insert(TcpFlags::FIN);
        f |= TcpFlags::CWR;
        assert_eq!(f.bits(), 0x91);
        f &= !TcpFlags::CWR;
        assert_eq!(f & TcpFlags::FIN, TcpFlags::FIN);
        assert_eq!(f.to_string(), "FIN|ACK");
        assert_eq!(TcpFlags::empty().to_string(), "-");
        assert!(TcpFlags::default().is_empty());
        assert_eq!(
            TcpFlags(0xff).to_string(),
            "FIN|SYN|RST|PSH|ACK|URG|ECE|CWR"
        );
    }

    #[test]
    fn emit_header_keeps_checksum() {
        let (h, o) = TcpHeader::parse(&SYN).unwrap();
        let mut b = [0u8; 40];
        assert_eq!(h.emit_header(&o, &mut b), Ok(40));
        assert_eq!(b, SYN);
        assert_eq!(
            h.emit_header(&o, &mut [0u8; 39]),
            Err(EmitError::BufferTooSmall)
        );
    }

    prop_compose! {
        fn arb_options()(
            mss in proptest::option::of(any::<u16>()),
            ws in proptest::option::of(0u8..=MAX_WINDOW_SCALE),
            sp in any::<bool>(),
            ts in proptest::option::of(any::<(u32, u32)>()),
            blocks in proptest::collection::vec(any::<(u32, u32)>(), 0..=4),
        ) -> TcpOptions {
            let mut o = TcpOptions { mss, window_scale: ws, sack_permitted: sp, timestamp: ts,
                ..TcpOptions::default() };
            for b in blocks {
                o.push_sack(b);
            }
            o
        }
    }

    proptest! {
        #[test]
        fn round_trip(
            sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(),
            flags in any::<u8>(), window in any::<u16>(), urgent in any::<u16>(),
            opts in arb_options(),
            src in any::<u32>(), dst in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let h = TcpHeader { src_port: sp, dst_port: dp, seq, ack, header_len: 0,
                flags: TcpFlags(flags), window, checksum: 0, urgent };
            let hl = TcpHeader::header_len_for(&opts);
            prop_assert!(hl & 3 == 0 && hl <= TcpHeader::MAX_LEN);
            let mut seg = vec![0u8; hl];
            seg.extend_from_slice(&payload);
            prop_assert_eq!(h.emit(&opts, &mut seg, src, dst), Ok(hl));
            prop_assert!(TcpHeader::verify_checksum(&seg, src, dst));
            let (p, po) = TcpHeader::parse(&seg).unwrap();
            prop_assert_eq!(p, TcpHeader { header_len: hl as u8, checksum: p.checksum, ..h });
            // What was emitted comes back; SACK blocks that did not fit are dropped.
            let mut expect = opts;
            let n = opts.emitted_sack_count();
            expect.sack_count = n as u8;
            expect.sack_blocks = [(0, 0); 4];
            expect.sack_blocks[..n].copy_from_slice(&opts.sack()[..n]);
            prop_assert_eq!(po, expect);
            prop_assert_eq!(&seg[hl..], &payload[..]);
        }

        #[test]
        fn round_trip_v6(
            sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(),
            flags in any::<u8>(), window in any::<u16>(),
            opts in arb_options(),
            src in any::<u128>(), dst in any::<u128>(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let h = TcpHeader { src_port: sp, dst_port: dp, seq, ack, header_len: 0,
                flags: TcpFlags(flags), window, checksum: 0, urgent: 0 };
            let hl = TcpHeader::header_len_for(&opts);
            let mut seg = vec![0u8; hl];
            seg.extend_from_slice(&payload);
            prop_assert_eq!(h.emit_v6(&opts, &mut seg, src, dst), Ok(hl));
            prop_assert!(TcpHeader::verify_checksum_v6(&seg, src, dst));
            // Any other destination fails, unless it sums alike (it does
            // not when one word changes).
            let other = Ipv6Addr::from(u128::from(dst) ^ 1);
            prop_assert!(!TcpHeader::verify_checksum_v6(&seg, src, other));
            let (p, _) = TcpHeader::parse(&seg).unwrap();
            prop_assert_eq!(p, TcpHeader { header_len: hl as u8, checksum: p.checksum, ..h });
            prop_assert_eq!(&seg[hl..], &payload[..]);
            // The partial form completes to the same bytes.
            let mut partial = seg.clone();
            partial[16..18].fill(0);
            prop_assert_eq!(h.emit_partial_v6(&opts, &mut partial, src, dst), Ok(hl));
            crate::offload::complete_checksum(&mut partial, 0, 16).unwrap();
            prop_assert_eq!(partial, seg);
        }

        #[test]
        fn verify_v6_never_panics(
            b in proptest::collection::vec(any::<u8>(), 0..80),
            src in any::<u128>(), dst in any::<u128>(),
        ) {
            let _ = TcpHeader::verify_checksum_v6(&b, Ipv6Addr::from(src), Ipv6Addr::from(dst));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok((h, o)) = TcpHeader::parse(&b) {
                prop_assert!(usize::from(h.header_len) <= b.len());
                prop_assert!(o.sack().len() <= 4);
            }
            let _ = TcpHeader::verify_checksum(&b, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
        }

        #[test]
        fn options_parse_never_panics(
            area in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(1u8), 0u8..=10, Just(34u8), any::<u8>()], 0..44),
        ) {
            // Plausible kinds and lengths, to reach the per-kind checks.
            if let Ok(o) = TcpOptions::parse(&area) {
                prop_assert!(o.window_scale.unwrap_or(0) <= MAX_WINDOW_SCALE);
                let mut b = [0u8; 40];
                prop_assert_eq!(o.emit(&mut b), Ok(o.emit_len()));
            }
        }
    }
}
