//! IPv6 headers (RFC 8200 §3) and the processing of extension headers a
//! destination node does (RFC 8200 §4).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                         Source Address                        |
//! +                          (16 bytes)                           +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                      Destination Address                      |
//! +                          (16 bytes)                           +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Extension headers sit between this fixed header and the upper-layer
//! header, each naming the next in its first byte:
//!
//! ```text
//! Hop-by-Hop Options (0) and Destination Options (60), RFC 8200 §4.3, §4.6:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |  Hdr Ext Len  |  Options (type, length, data) |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Routing (43), RFC 8200 §4.4:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |  Hdr Ext Len  |  Routing Type | Segments Left |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       type-specific data                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Fragment (44), RFC 8200 §4.5:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Identification                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Hdr Ext Len counts 8-byte units after the first 8 bytes; a fragment
//! header is always 8 bytes.
//!
//! [`Ipv6Header::parse`] validates the fixed header and
//! [`Ipv6Header::emit`] writes one. [`walk`] follows the extension headers
//! of a packet addressed to this node and returns a [`Disposition`]: the
//! upper-layer protocol and where it starts, a fragment to reassemble, a
//! silent discard, or the ICMPv6 parameter problem to send. It only
//! decides; the caller drops, reassembles, replies or delivers.
//! [`FragmentHeader`] reads and writes fragment headers.

use core::fmt;
use std::net::Ipv6Addr;

use crate::icmpv6::param_problem_code;
use crate::{be16, be32, put16, put32, EmitError};

/// Next Header values (IP protocol numbers) the stack knows of.
pub mod next_header {
    /// Hop-by-Hop Options header (RFC 8200 §4.3).
    pub const HOP_BY_HOP: u8 = 0;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
    /// Routing header (RFC 8200 §4.4).
    pub const ROUTING: u8 = 43;
    /// Fragment header (RFC 8200 §4.5).
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating Security Payload (RFC 4303).
    pub const ESP: u8 = 50;
    /// Authentication Header (RFC 4302).
    pub const AH: u8 = 51;
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
    /// No next header: nothing follows (RFC 8200 §4.7).
    pub const NO_NEXT: u8 = 59;
    /// Destination Options header (RFC 8200 §4.6).
    pub const DEST_OPTS: u8 = 60;
}

/// Option types of Hop-by-Hop and Destination Options headers that the
/// walk treats specially (RFC 8200 §4.2).
pub mod option_type {
    /// A single byte of padding, with no length or data.
    pub const PAD1: u8 = 0;
    /// Padding of two or more bytes.
    pub const PADN: u8 = 1;
    /// Router alert (RFC 2711); skipped, as its type says.
    pub const ROUTER_ALERT: u8 = 5;
    /// Jumbo payload (RFC 2675); not supported, so unrecognized.
    pub const JUMBO: u8 = 0xc2;
}

/// The minimum link MTU of IPv6 (RFC 8200 §5): every link carries packets
/// of this many bytes, IPv6 header included, without fragmenting them.
pub const MIN_MTU: usize = 1280;

/// How many extension headers [`walk`] follows before it gives up with
/// [`DiscardReason::TooManyHeaders`]. RFC 8200 §4.1 recommends an order
/// with each header at most once and Destination Options twice, six at
/// most; the bound leaves room beyond that and stops a packet made of
/// thousands of empty headers.
pub const MAX_EXT_HEADERS: usize = 8;

/// Why an IPv6 header (or a fragment header) could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Error {
    /// Shorter than the header: 40 bytes, or 8 for a fragment header.
    Truncated,
    /// The version field is not 6.
    BadVersion,
    /// Payload length 0 with a Hop-by-Hop header next: a jumbogram
    /// (RFC 2675), which the stack does not support.
    Jumbogram,
    /// The payload length runs past the bytes received.
    PayloadLenExceedsFrame,
}

impl Ipv6Error {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            Ipv6Error::Truncated => "truncated",
            Ipv6Error::BadVersion => "bad_version",
            Ipv6Error::Jumbogram => "jumbogram",
            Ipv6Error::PayloadLenExceedsFrame => "payload_len_exceeds_frame",
        }
    }
}

impl fmt::Display for Ipv6Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ipv6Error::Truncated => "IPv6 header truncated",
            Ipv6Error::BadVersion => "IP version is not 6",
            Ipv6Error::Jumbogram => "IPv6 jumbograms are not supported",
            Ipv6Error::PayloadLenExceedsFrame => "IPv6 payload length exceeds the frame",
        })
    }
}

impl std::error::Error for Ipv6Error {}

/// Mask of the 20-bit flow label.
const FLOW_MASK: u32 = 0x000f_ffff;

/// The fixed IPv6 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Header {
    /// Traffic class: DSCP and ECN (RFC 8200 §7).
    pub traffic_class: u8,
    /// Flow label, 20 bits (RFC 6437). [`emit`](Self::emit) writes only the
    /// low 20 bits.
    pub flow_label: u32,
    /// Length of everything after this header, extension headers included.
    pub payload_len: u16,
    /// Type of the header that follows (see [`next_header`]).
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
}

impl Ipv6Header {
    /// Length of the header.
    pub const LEN: usize = 40;

    /// Parses and validates the header at the start of `b` (RFC 8200 §3).
    ///
    /// The checks run in this order:
    /// fewer than 40 bytes: [`Truncated`](Ipv6Error::Truncated);
    /// version not 6: [`BadVersion`](Ipv6Error::BadVersion);
    /// payload length 0 with a Hop-by-Hop header next, the mark of a
    /// jumbogram (RFC 2675 §3): [`Jumbogram`](Ipv6Error::Jumbogram);
    /// 40 + payload length above `b.len()`:
    /// [`PayloadLenExceedsFrame`](Ipv6Error::PayloadLenExceedsFrame).
    ///
    /// A payload length of 0 with any other next header is an empty
    /// payload, as RFC 2675 §3 and Linux read it (it is how a packet with
    /// No Next Header and nothing after it looks).
    ///
    /// `b` may be longer than the packet (Ethernet pads short frames): the
    /// payload is [`payload`](Self::payload)`(b)`. Address checks (a
    /// multicast source, RFC 4291 §2.7) are the caller's business.
    pub fn parse(b: &[u8]) -> Result<Self, Ipv6Error> {
        let hdr = Self::parse_fixed(b)?;
        if Self::LEN + usize::from(hdr.payload_len) > b.len() {
            return Err(Ipv6Error::PayloadLenExceedsFrame);
        }
        Ok(hdr)
    }

    /// Parses the header of a packet quoted in an ICMPv6 error (RFC 4443
    /// §2.4 (c)), which is usually cut short of its payload length: the
    /// checks of [`parse`](Self::parse) but that one. The payload length
    /// is reported as the header says.
    pub fn parse_quoted(b: &[u8]) -> Result<Self, Ipv6Error> {
        Self::parse_fixed(b)
    }

    /// The checks of [`parse`](Self::parse) but the payload length's.
    fn parse_fixed(b: &[u8]) -> Result<Self, Ipv6Error> {
        let h = b.get(..Self::LEN).ok_or(Ipv6Error::Truncated)?;
        if h[0] >> 4 != 6 {
            return Err(Ipv6Error::BadVersion);
        }
        let payload_len = be16(h, 4);
        let next_header = h[6];
        if payload_len == 0 && next_header == next_header::HOP_BY_HOP {
            return Err(Ipv6Error::Jumbogram);
        }
        let word = be32(h, 0);
        Ok(Ipv6Header {
            traffic_class: (word >> 20) as u8,
            flow_label: word & FLOW_MASK,
            payload_len,
            next_header,
            hop_limit: h[7],
            src: Ipv6Addr::from(addr_at(h, 8)),
            dst: Ipv6Addr::from(addr_at(h, 24)),
        })
    }

    /// Writes the header into the first 40 bytes of `b` and returns 40
    /// (RFC 8200 §3). The payload length is written as given; the flow
    /// label is cut to 20 bits.
    pub fn emit(&self, b: &mut [u8]) -> Result<usize, EmitError> {
        let h = b.get_mut(..Self::LEN).ok_or(EmitError::BufferTooSmall)?;
        let word = 6 << 28 | u32::from(self.traffic_class) << 20 | (self.flow_label & FLOW_MASK);
        put32(h, 0, word);
        put16(h, 4, self.payload_len);
        h[6] = self.next_header;
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(&self.src.octets());
        h[24..40].copy_from_slice(&self.dst.octets());
        Ok(Self::LEN)
    }

    /// The payload of `packet`, whose header this is: the `payload_len`
    /// bytes after the 40-byte header, or as many of them as `packet` has.
    pub fn payload<'a>(&self, packet: &'a [u8]) -> &'a [u8] {
        let end = Self::LEN + usize::from(self.payload_len);
        packet
            .get(Self::LEN..end)
            .or_else(|| packet.get(Self::LEN..))
            .unwrap_or(&[])
    }
}

/// Reads the 16 bytes of an address at `at` (zeros if `b` is too short;
/// callers check the length first).
fn addr_at(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    if let Some(s) = b.get(at..at + 16) {
        a.copy_from_slice(s);
    }
    a
}

/// A fragment header (RFC 8200 §4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Type of the first header of the fragmentable part.
    pub next_header: u8,
    /// Offset of this fragment's data in the fragmentable part of the
    /// original packet, in **8-byte units** (13 bits; see
    /// [`byte_offset`](Self::byte_offset)).
    pub offset: u16,
    /// The M flag: more fragments follow.
    pub more: bool,
    /// Identification, shared by the fragments of one packet.
    pub ident: u32,
}

impl FragmentHeader {
    /// Length of a fragment header.
    pub const LEN: usize = 8;

    /// Parses the fragment header at the start of `b` (RFC 8200 §4.5).
    /// The reserved fields are ignored, as the RFC asks of a receiver.
    pub fn parse(b: &[u8]) -> Result<Self, Ipv6Error> {
        let h = b.get(..Self::LEN).ok_or(Ipv6Error::Truncated)?;
        let word = be16(h, 2);
        Ok(FragmentHeader {
            next_header: h[0],
            offset: word >> 3,
            more: word & 1 != 0,
            ident: be32(h, 4),
        })
    }

    /// Writes the header into the first 8 bytes of `b` and returns 8
    /// (RFC 8200 §4.5). Reserved fields are zero; the offset is cut to
    /// 13 bits.
    pub fn emit(&self, b: &mut [u8]) -> Result<usize, EmitError> {
        let h = b.get_mut(..Self::LEN).ok_or(EmitError::BufferTooSmall)?;
        h[0] = self.next_header;
        h[1] = 0;
        put16(h, 2, (self.offset & 0x1fff) << 3 | u16::from(self.more));
        put32(h, 4, self.ident);
        Ok(Self::LEN)
    }

    /// The fragment offset in bytes.
    pub fn byte_offset(&self) -> usize {
        usize::from(self.offset) * 8
    }

    /// Whether this is an atomic fragment (RFC 6946): offset 0 and no M
    /// flag, the whole packet in one piece, to be processed as it is.
    pub fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more
    }
}

/// Why [`walk`] says to drop a packet without telling its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// The Next Header chain ends in No Next Header (RFC 8200 §4.7): there
    /// is nothing to deliver.
    NoNextHeader,
    /// An extension header runs past the payload.
    Truncated,
    /// An option's length runs past its options header.
    BadOptions,
    /// An unrecognized option whose type says to discard the packet
    /// silently (high bits `01`, or `11` with a multicast destination).
    UnknownOption,
    /// More than [`MAX_EXT_HEADERS`] extension headers.
    TooManyHeaders,
}

impl DiscardReason {
    /// A short `snake_case` name for the reason, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            DiscardReason::NoNextHeader => "no_next_header",
            DiscardReason::Truncated => "ext_header_truncated",
            DiscardReason::BadOptions => "bad_options",
            DiscardReason::UnknownOption => "unknown_option",
            DiscardReason::TooManyHeaders => "too_many_ext_headers",
        }
    }
}

impl fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiscardReason::NoNextHeader => "no next header",
            DiscardReason::Truncated => "IPv6 extension header truncated",
            DiscardReason::BadOptions => "malformed IPv6 options",
            DiscardReason::UnknownOption => "unrecognized IPv6 option",
            DiscardReason::TooManyHeaders => "too many IPv6 extension headers",
        })
    }
}

impl std::error::Error for DiscardReason {}

/// What to do with a packet addressed to this node, as [`walk`] decided
/// from its extension headers.
///
/// Offsets named `offset` count from the start of the payload (the byte
/// after the fixed header); pointers count from the start of the IPv6
/// header, as the ICMPv6 parameter problem's pointer field does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Deliver the upper-layer message `&payload[offset..]` to `protocol`
    /// (one of the `upper` protocols given to [`walk`]).
    Upper {
        /// The upper-layer protocol.
        protocol: u8,
        /// Where its header starts in the payload.
        offset: usize,
        /// The fragment header of an atomic fragment (RFC 6946) on the
        /// way, if there was one.
        fragment: Option<FragmentHeader>,
    },
    /// The packet is a fragment: queue it for reassembly (RFC 8200 §4.5).
    /// The unfragmentable part is `&payload[..header_offset]` and the
    /// fragment's data `&payload[data_offset..]`; the reassembled packet's
    /// Next Header field at `next_header_at` becomes
    /// `header.next_header`, and it is walked again from there.
    Fragment {
        /// The fragment header.
        header: FragmentHeader,
        /// Where the fragment header starts in the payload.
        header_offset: usize,
        /// Where the fragment's data starts in the payload.
        data_offset: usize,
        /// Offset from the start of the IPv6 header of the Next Header
        /// field that names the fragment header.
        next_header_at: usize,
    },
    /// Drop the packet silently.
    Discard(DiscardReason),
    /// Drop the packet and send an ICMPv6 parameter problem with `code`
    /// (see [`param_problem_code`]) and `pointer` (RFC 8200 §4, §4.2,
    /// §4.4, §4.5). Whether an error may be sent at all (RFC 4443 §2.4
    /// (e), (f): not to a multicast destination except for code 2, not
    /// over the rate limit) is the caller's decision.
    ParamProblem {
        /// The parameter problem code.
        code: u8,
        /// Offset of the offending byte from the start of the IPv6 header.
        pointer: u32,
    },
}

/// Follows the extension headers of the packet with fixed header `header`
/// and payload `payload`, addressed to this node, and decides what to do
/// with it (RFC 8200 §4). `upper` lists the upper-layer protocols the
/// caller handles (TCP, UDP, ICMPv6...).
///
/// `payload` is the packet after its 40-byte header
/// ([`Ipv6Header::payload`]); bytes past `header.payload_len` are ignored.
///
/// The walk:
///
/// * Hop-by-Hop Options is accepted only right after the fixed header
///   (RFC 8200 §4.1); anywhere else it is an unrecognized Next Header.
///   Its options and those of Destination Options headers are processed
///   as in RFC 8200 §4.2: Pad1 and PadN are skipped, and since no other
///   option is implemented, each other option is handled by the two high
///   bits of its type: `00` skip, `01` discard, `10` discard and send
///   parameter problem code 2 pointing at the option type, `11` the same
///   unless the destination is multicast, then discard.
/// * A Routing header with Segments Left 0 is skipped; with Segments Left
///   above 0 it gives parameter problem code 0 pointing at its Routing
///   Type, since no routing type is implemented (type 0 is deprecated by
///   RFC 5095 §3 and handled as unrecognized, as that RFC asks).
/// * A Fragment header of an atomic fragment (RFC 6946) is skipped and
///   reported in [`Disposition::Upper`]; any other fragment ends the walk
///   with [`Disposition::Fragment`], after the checks of RFC 8200 §4.5:
///   a fragment with M set whose data is not a multiple of 8 bytes gives
///   code 0 pointing at the Payload Length; one reaching past 65535 bytes
///   of reassembled payload gives code 0 pointing at the Fragment Offset;
///   a first fragment whose extension headers do not all fit in it gives
///   code 3 (RFC 7112 §5) with pointer 0.
/// * No Next Header ends the walk with
///   [`DiscardReason::NoNextHeader`]; a protocol in `upper` with
///   [`Disposition::Upper`]; any other value with code 1 pointing at the
///   Next Header field that holds it. ESP and AH are upper-layer
///   protocols here: unless `upper` lists them they are unrecognized.
///
/// An extension header running past the payload, an option running past
/// its header, or more than [`MAX_EXT_HEADERS`] headers are discarded
/// silently. The walk never panics, whatever the bytes.
///
/// A router forwarding a packet looks only at a Hop-by-Hop header and
/// does not call this.
pub fn walk(header: &Ipv6Header, payload: &[u8], upper: &[u8]) -> Disposition {
    let payload = payload
        .get(..usize::from(header.payload_len))
        .unwrap_or(payload);
    let mut nh = header.next_header;
    // Offset from the start of the IPv6 header of the field holding `nh`.
    let mut nh_at = 6;
    // Offset in the payload of the header `nh` names.
    let mut off = 0;
    let mut atomic = None;
    for _ in 0..=MAX_EXT_HEADERS {
        let rest = payload.get(off..).unwrap_or(&[]);
        let len = match nh {
            next_header::HOP_BY_HOP if nh_at != 6 => return unrecognized_next_header(nh_at),
            next_header::HOP_BY_HOP | next_header::DEST_OPTS => {
                let Some(h) = ext_header(rest) else {
                    return Disposition::Discard(DiscardReason::Truncated);
                };
                if let Some(d) = options(header.dst, h, off) {
                    return d;
                }
                h.len()
            }
            next_header::ROUTING => {
                let Some(h) = ext_header(rest) else {
                    return Disposition::Discard(DiscardReason::Truncated);
                };
                if let Some(d) = routing(h, off) {
                    return d;
                }
                h.len()
            }
            next_header::FRAGMENT => {
                let Ok(f) = FragmentHeader::parse(rest) else {
                    return Disposition::Discard(DiscardReason::Truncated);
                };
                if !f.is_atomic() {
                    return fragment(payload, f, off, nh_at);
                }
                atomic = Some(f);
                FragmentHeader::LEN
            }
            next_header::NO_NEXT => return Disposition::Discard(DiscardReason::NoNextHeader),
            p if upper.contains(&p) => {
                return Disposition::Upper {
                    protocol: p,
                    offset: off,
                    fragment: atomic,
                }
            }
            _ => return unrecognized_next_header(nh_at),
        };
        nh = rest.first().copied().unwrap_or(next_header::NO_NEXT);
        nh_at = Ipv6Header::LEN + off;
        off += len;
    }
    Disposition::Discard(DiscardReason::TooManyHeaders)
}

/// Parameter problem code 1 pointing at the Next Header field at `at`
/// (RFC 8200 §4).
fn unrecognized_next_header(at: usize) -> Disposition {
    Disposition::ParamProblem {
        code: param_problem_code::NEXT_HEADER,
        pointer: pointer(at),
    }
}

/// An offset from the start of the IPv6 header as a pointer field.
fn pointer(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

/// The extension header at the start of `b` whose second byte is its
/// length in 8-byte units beyond the first 8 (RFC 8200 §4.3, §4.4, §4.6),
/// or `None` if it runs past `b`.
fn ext_header(b: &[u8]) -> Option<&[u8]> {
    let units = usize::from(*b.get(1)?);
    b.get(..(units + 1) * 8)
}

/// Processes the options of the Hop-by-Hop or Destination Options header
/// `h`, found at `off` in the payload (RFC 8200 §4.2). Returns what to do
/// with the packet if an option stops it, `None` to go on.
fn options(dst: Ipv6Addr, h: &[u8], off: usize) -> Option<Disposition> {
    let mut i = 2;
    while let Some(&t) = h.get(i) {
        if t == option_type::PAD1 {
            i += 1;
            continue;
        }
        let end = match h.get(i + 1) {
            Some(&l) if i + 2 + usize::from(l) <= h.len() => i + 2 + usize::from(l),
            _ => return Some(Disposition::Discard(DiscardReason::BadOptions)),
        };
        if t != option_type::PADN {
            if let Some(d) = unrecognized_option(dst, t, Ipv6Header::LEN + off + i) {
                return Some(d);
            }
        }
        i = end;
    }
    None
}

/// What to do about an unrecognized option of type `t` at `at` from the
/// start of the IPv6 header: its two high bits decide (RFC 8200 §4.2).
fn unrecognized_option(dst: Ipv6Addr, t: u8, at: usize) -> Option<Disposition> {
    let problem = Disposition::ParamProblem {
        code: param_problem_code::OPTION,
        pointer: pointer(at),
    };
    match t >> 6 {
        0 => None,
        1 => Some(Disposition::Discard(DiscardReason::UnknownOption)),
        2 => Some(problem),
        _ if dst.is_multicast() => Some(Disposition::Discard(DiscardReason::UnknownOption)),
        _ => Some(problem),
    }
}

/// Processes the Routing header `h` at `off` in the payload (RFC 8200
/// §4.4). No routing type is implemented: one with segments left is
/// answered with parameter problem code 0 at its Routing Type field.
fn routing(h: &[u8], off: usize) -> Option<Disposition> {
    match h.get(3) {
        Some(&0) | None => None,
        Some(_) => Some(Disposition::ParamProblem {
            code: param_problem_code::HEADER_FIELD,
            pointer: pointer(Ipv6Header::LEN + off + 2),
        }),
    }
}

/// Checks the non-atomic fragment `f`, whose header is at `off` in
/// `payload` and is named by the Next Header field at `nh_at`, before it
/// goes to reassembly (RFC 8200 §4.5, RFC 7112 §5).
fn fragment(payload: &[u8], f: FragmentHeader, off: usize, nh_at: usize) -> Disposition {
    let data_offset = off + FragmentHeader::LEN;
    let data = payload.get(data_offset..).unwrap_or(&[]);
    if f.more && data.len() % 8 != 0 {
        return Disposition::ParamProblem {
            code: param_problem_code::HEADER_FIELD,
            pointer: 4,
        };
    }
    if off + f.byte_offset() + data.len() > usize::from(u16::MAX) {
        return Disposition::ParamProblem {
            code: param_problem_code::HEADER_FIELD,
            pointer: pointer(Ipv6Header::LEN + off + 2),
        };
    }
    if f.offset == 0 && !chain_fits(f.next_header, data) {
        return Disposition::ParamProblem {
            code: param_problem_code::HEADER_CHAIN,
            pointer: 0,
        };
    }
    Disposition::Fragment {
        header: f,
        header_offset: off,
        data_offset,
        next_header_at: nh_at,
    }
}

/// Whether the extension headers starting with `nh` at the start of `b`
/// all fit into `b` (RFC 7112 §5: a first fragment holds the whole header
/// chain). Only the lengths are read; the headers are processed after
/// reassembly.
fn chain_fits(mut nh: u8, b: &[u8]) -> bool {
    let mut rest = b;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match nh {
            next_header::HOP_BY_HOP | next_header::DEST_OPTS | next_header::ROUTING => {
                ext_header(rest).map(<[u8]>::len)
            }
            next_header::AH => rest
                .get(1)
                .map(|&l| (usize::from(l) + 2) * 4)
                .filter(|&n| n <= rest.len()),
            next_header::FRAGMENT => Some(FragmentHeader::LEN).filter(|&n| n <= rest.len()),
            _ => return true,
        };
        let Some(len) = len else {
            return false;
        };
        nh = rest.first().copied().unwrap_or(next_header::NO_NEXT);
        rest = rest.get(len..).unwrap_or(&[]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UPPER: &[u8] = &[next_header::TCP, next_header::UDP, next_header::ICMPV6];

    /// 2001:db8::1 -> 2001:db8::2, traffic class 0xb8 (EF), flow label
    /// 0x12345, UDP, payload length 12, hop limit 64.
    const HDR: [u8; 40] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x0c, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
    ];

    fn hdr() -> Ipv6Header {
        Ipv6Header {
            traffic_class: 0xb8,
            flow_label: 0x12345,
            payload_len: 12,
            next_header: next_header::UDP,
            hop_limit: 64,
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
        }
    }

    /// A header for `payload` with first next header `nh`.
    fn with(nh: u8, payload: &[u8]) -> Ipv6Header {
        Ipv6Header {
            next_header: nh,
            payload_len: u16::try_from(payload.len()).unwrap(),
            ..hdr()
        }
    }

    #[test]
    fn known_header() {
        let mut p = HDR.to_vec();
        p.extend_from_slice(&[0xaa; 12]);
        p.extend_from_slice(&[0, 0]); // link padding
        let h = Ipv6Header::parse(&p).unwrap();
        assert_eq!(h, hdr());
        assert_eq!(h.payload(&p), &[0xaa; 12]);
        let mut out = [0u8; 40];
        assert_eq!(h.emit(&mut out), Ok(40));
        assert_eq!(out, HDR);
    }

    #[test]
    fn errors() {
        let mut p = HDR.to_vec();
        p.extend_from_slice(&[0; 12]);
        assert_eq!(Ipv6Header::parse(&p[..39]), Err(Ipv6Error::Truncated));
        let mut b = p.clone();
        b[0] = 0x4b;
        assert_eq!(Ipv6Header::parse(&b), Err(Ipv6Error::BadVersion));
        assert_eq!(
            Ipv6Header::parse(&p[..51]),
            Err(Ipv6Error::PayloadLenExceedsFrame)
        );
        let mut j = p.clone();
        j[4] = 0;
        j[5] = 0;
        j[6] = next_header::HOP_BY_HOP;
        assert_eq!(Ipv6Header::parse(&j), Err(Ipv6Error::Jumbogram));
        // Payload length 0 with anything else next is an empty payload.
        j[6] = next_header::NO_NEXT;
        let h = Ipv6Header::parse(&j[..40]).unwrap();
        assert_eq!(h.payload_len, 0);
        assert_eq!(h.payload(&j), &[] as &[u8]);
        assert_eq!(
            walk(&h, h.payload(&j), UPPER),
            Disposition::Discard(DiscardReason::NoNextHeader)
        );
        assert_eq!(Ipv6Error::Jumbogram.reason(), "jumbogram");
        assert_eq!(
            Ipv6Error::PayloadLenExceedsFrame.to_string(),
            "IPv6 payload length exceeds the frame"
        );
        assert_eq!(hdr().emit(&mut [0u8; 39]), Err(EmitError::BufferTooSmall));
    }

    #[test]
    fn flow_label_is_cut_to_20_bits() {
        let h = Ipv6Header {
            flow_label: 0xfff1_2345,
            ..hdr()
        };
        let mut out = [0u8; 40];
        h.emit(&mut out).unwrap();
        assert_eq!(out, HDR);
        assert_eq!(hdr().payload(&HDR), &[] as &[u8]);
    }

    #[test]
    fn fragment_header() {
        // Next header UDP, offset 185 units (1480 bytes), M set, id 0xdeadbeef.
        let b = [17, 0xff, 0x05, 0xc9, 0xde, 0xad, 0xbe, 0xef];
        let f = FragmentHeader::parse(&b).unwrap();
        assert_eq!(
            f,
            FragmentHeader {
                next_header: 17,
                offset: 185,
                more: true,
                ident: 0xdead_beef,
            }
        );
        assert_eq!(f.byte_offset(), 1480);
        assert!(!f.is_atomic());
        let mut out = [0xffu8; 8];
        assert_eq!(f.emit(&mut out), Ok(8));
        assert_eq!(out, [17, 0, 0x05, 0xc9, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(FragmentHeader::parse(&b[..7]), Err(Ipv6Error::Truncated));
        assert_eq!(f.emit(&mut [0u8; 7]), Err(EmitError::BufferTooSmall));
    }

    #[test]
    fn walk_plain() {
        let p = [0u8; 8];
        assert_eq!(
            walk(&with(next_header::UDP, &p), &p, UPPER),
            Disposition::Upper {
                protocol: next_header::UDP,
                offset: 0,
                fragment: None
            }
        );
        // Not in `upper`: unrecognized, pointing at the fixed header's field.
        assert_eq!(
            walk(&with(132, &p), &p, UPPER),
            Disposition::ParamProblem {
                code: 1,
                pointer: 6
            }
        );
        assert_eq!(
            walk(&with(next_header::ESP, &p), &p, UPPER),
            Disposition::ParamProblem {
                code: 1,
                pointer: 6
            }
        );
        assert_eq!(
            walk(&with(next_header::ESP, &p), &p, &[next_header::ESP]),
            Disposition::Upper {
                protocol: next_header::ESP,
                offset: 0,
                fragment: None
            }
        );
    }

    #[test]
    fn walk_options_headers() {
        // Hop-by-hop with router alert and PadN, destination options with
        // Pad1s and a skippable unknown option, then UDP.
        let mut p = vec![
            next_header::DEST_OPTS,
            0,
            option_type::ROUTER_ALERT,
            2,
            0,
            0,
            option_type::PADN,
            0,
            next_header::UDP,
            1,
            0,
            0,
            0,
            0x1e,
            3,
            1,
            2,
            3,
        ];
        p.extend_from_slice(&[option_type::PADN, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[0; 8]);
        assert_eq!(
            walk(&with(next_header::HOP_BY_HOP, &p), &p, UPPER),
            Disposition::Upper {
                protocol: next_header::UDP,
                offset: 24,
                fragment: None
            }
        );
        // Hop-by-hop after the first header is an unrecognized next header,
        // pointing at the next header field of the header before it.
        let mut late = p.clone();
        late[8] = next_header::HOP_BY_HOP;
        assert_eq!(
            walk(&with(next_header::HOP_BY_HOP, &late), &late, UPPER),
            Disposition::ParamProblem {
                code: 1,
                pointer: 48
            }
        );
        let mut late = p.clone();
        late[0] = next_header::HOP_BY_HOP;
        assert_eq!(
            walk(&with(next_header::DEST_OPTS, &late), &late, UPPER),
            Disposition::ParamProblem {
                code: 1,
                pointer: 40
            }
        );
        // An unknown upper layer after the options.
        let mut unknown = p.clone();
        unknown[8] = 200;
        assert_eq!(
            walk(&with(next_header::HOP_BY_HOP, &unknown), &unknown, UPPER),
            Disposition::ParamProblem {
                code: 1,
                pointer: 48
            }
        );
    }

    /// A destination options header holding one option of type `t`,
    /// followed by UDP.
    fn one_option(t: u8) -> Vec<u8> {
        let mut p = vec![next_header::UDP, 0, option_type::PAD1, t, 2, 0, 0, 0];
        p.extend_from_slice(&[0; 8]);
        p
    }

    #[test]
    fn walk_unknown_option_actions() {
        let unicast = |t: u8| {
            let p = one_option(t);
            walk(&with(next_header::DEST_OPTS, &p), &p, UPPER)
        };
        let multicast = |t: u8| {
            let p = one_option(t);
            let h = Ipv6Header {
                dst: "ff02::1".parse().unwrap(),
                ..with(next_header::DEST_OPTS, &p)
            };
            walk(&h, &p, UPPER)
        };
        let upper = Disposition::Upper {
            protocol: next_header::UDP,
            offset: 8,
            fragment: None,
        };
        let discard = Disposition::Discard(DiscardReason::UnknownOption);
        let problem = Disposition::ParamProblem {
            code: 2,
            pointer: 43,
        };
        assert_eq!(unicast(0x3f), upper);
        assert_eq!(multicast(0x3f), upper);
        assert_eq!(unicast(0x7f), discard);
        assert_eq!(multicast(0x7f), discard);
        assert_eq!(unicast(0x80), problem);
        assert_eq!(multicast(0x80), problem);
        assert_eq!(unicast(option_type::JUMBO), problem);
        assert_eq!(multicast(option_type::JUMBO), discard);
    }

    #[test]
    fn walk_malformed() {
        // Option length past the header.
        let mut p = one_option(0x3f);
        p[4] = 5;
        assert_eq!(
            walk(&with(next_header::DEST_OPTS, &p), &p, UPPER),
            Disposition::Discard(DiscardReason::BadOptions)
        );
        // Option length byte missing (type in the last byte).
        let mut p = vec![
            next_header::UDP,
            0,
            option_type::PADN,
            1,
            0,
            option_type::PAD1,
            option_type::PAD1,
            0x3f,
        ];
        p.extend_from_slice(&[0; 8]);
        assert_eq!(
            walk(&with(next_header::DEST_OPTS, &p), &p, UPPER),
            Disposition::Discard(DiscardReason::BadOptions)
        );
        // Header length past the payload; too short for a length byte;
        // fragment header cut short.
        let p = [next_header::UDP, 1, 0, 0, 0, 0, 0, 0];
        for nh in [
            next_header::HOP_BY_HOP,
            next_header::DEST_OPTS,
            next_header::ROUTING,
        ] {
            assert_eq!(
                walk(&with(nh, &p), &p, UPPER),
                Disposition::Discard(DiscardReason::Truncated)
            );
            assert_eq!(
                walk(&with(nh, &p[..1]), &p[..1], UPPER),
                Disposition::Discard(DiscardReason::Truncated)
            );
        }
        assert_eq!(
            walk(&with(next_header::FRAGMENT, &p[..7]), &p[..7], UPPER),
            Disposition::Discard(DiscardReason::Truncated)
        );
        // Bytes past the payload length are not read.
        let p = one_option(0x3f);
        let h = Ipv6Header {
            payload_len: 7,
            ..with(next_header::DEST_OPTS, &p)
        };
        assert_eq!(
            walk(&h, &p, UPPER),
            Disposition::Discard(DiscardReason::Truncated)
        );
        assert_eq!(DiscardReason::BadOptions.reason(), "bad_options");
        assert_eq!(
            DiscardReason::TooManyHeaders.to_string(),
            "too many IPv6 extension headers"
        );
    }

    #[test]
    fn walk_too_many_headers() {
        let chain = |n: usize| {
            let mut p = Vec::new();
            for _ in 1..n {
                p.extend_from_slice(&[next_header::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
            }
            p.extend_from_slice(&[next_header::UDP, 0, 1, 4, 0, 0, 0, 0]);
            p.extend_from_slice(&[0; 8]);
            p
        };
        let p = chain(MAX_EXT_HEADERS);
        assert_eq!(
            walk(&with(next_header::DEST_OPTS, &p), &p, UPPER),
            Disposition::Upper {
                protocol: next_header::UDP,
                offset: MAX_EXT_HEADERS * 8,
                fragment: None
            }
        );
        let p = chain(MAX_EXT_HEADERS + 1);
        assert_eq!(
            walk(&with(next_header::DEST_OPTS, &p), &p, UPPER),
            Disposition::Discard(DiscardReason::TooManyHeaders)
        );
    }

    #[test]
    fn walk_routing() {
        // Type 0 (deprecated), type 2 and type 4 with segments left 0 are
        // skipped; with segments left, parameter problem at the type.
        for rt in [0u8, 2, 4] {
            let mut p = vec![next_header::TCP, 2, rt, 0, 0, 0, 0, 0];
            p.extend_from_slice(&[0; 16]);
            p.extend_from_slice(&[0; 20]);
            assert_eq!(
                walk(&with(next_header::ROUTING, &p), &p, UPPER),
                Disposition::Upper {
                    protocol: next_header::TCP,
                    offset: 24,
                    fragment: None
                },
                "type {rt}"
            );
            p[3] = 1;
            assert_eq!(
                walk(&with(next_header::ROUTING, &p), &p, UPPER),
                Disposition::ParamProblem {
                    code: 0,
                    pointer: 42
                },
                "type {rt}"
            );
        }
    }

    /// A fragment header with `offset`, `more`, next header UDP and
    /// identification 7, followed by `data` bytes.
    fn frag(offset: u16, more: bool, next: u8, data: usize) -> Vec<u8> {
        let mut p = vec![0u8; 8 + data];
        FragmentHeader {
            next_header: next,
            offset,
            more,
            ident: 7,
        }
        .emit(&mut p)
        .unwrap();
        p
    }

    #[test]
    fn walk_fragments() {
        // An atomic fragment goes on, and is reported.
        let p = frag(0, false, next_header::UDP, 8);
        assert_eq!(
            walk(&with(next_header::FRAGMENT, &p), &p, UPPER),
            Disposition::Upper {
                protocol: next_header::UDP,
                offset: 8,
                fragment: Some(FragmentHeader::parse(&p).unwrap())
            }
        );
        // A first fragment behind a destination options header.
        let mut p = vec![next_header::FRAGMENT, 0, 1, 4, 0, 0, 0, 0];
        p.extend_from_slice(&frag(0, true, next_header::UDP, 16));
        assert_eq!(
            walk(&with(next_header::DEST_OPTS, &p), &p, UPPER),
            Disposition::Fragment {
                header: FragmentHeader {
                    next_header: next_header::UDP,
                    offset: 0,
                    more: true,
                    ident: 7
                },
                header_offset: 8,
                data_offset: 16,
                next_header_at: 40,
            }
        );
        // A last fragment need not be a multiple of 8 bytes; one with M
        // set must, or the pointer goes to the payload length.
        let p = frag(100, false, next_header::UDP, 13);
        assert!(matches!(
            walk(&with(next_header::FRAGMENT, &p), &p, UPPER),
            Disposition::Fragment {
                header_offset: 0,
                data_offset: 8,
                next_header_at: 6,
                ..
            }
        ));
        let p = frag(100, true, next_header::UDP, 13);
        assert_eq!(
            walk(&with(next_header::FRAGMENT, &p), &p, UPPER),
            Disposition::ParamProblem {
                code: 0,
                pointer: 4
            }
        );
        // Reaching past 65535 bytes: pointer to the fragment offset field.
        let p = frag(8191, false, next_header::UDP, 8);
        assert_eq!(
            walk(&with(next_header::FRAGMENT, &p), &p, UPPER),
            Disposition::ParamProblem {
                code: 0,
                pointer: 42
            }
        );
        let p = frag(8190, false, next_header::UDP, 7);
        assert!(matches!(
            walk(&with(next_header::FRAGMENT, &p), &p, UPPER),
            Disposition::Fragment { .. }
        ));
        // A first fragment must hold the whole header chain (RFC 7112).
        let mut p = frag(0, true, next_header::DEST_OPTS, 16);
        p[9] = 2; // a 24-byte destination options header in 16 bytes
        assert_eq!(
            walk(&with(next_header::FRAGMENT, &p), &p, UPPER),
            Disposition::ParamProblem {
                code: 3,
                pointer: 0
            }
        );
        // A 16-byte destination options header, then a 12-byte AH in 8
        // bytes.
        p[8] = next_header::AH;
        p[9] = 1;
        p.extend_from_slice(&[next_header::UDP, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            walk(&with(next_header::FRAGMENT, &p), &p, UPPER),
            Disposition::ParamProblem {
                code: 3,
                pointer: 0
            }
        );
        p[25] = 0;
        assert!(matches!(
            walk(&with(next_header::FRAGMENT, &p), &p, UPPER),
            Disposition::Fragment { .. }
        ));
        // A later fragment is not checked for the chain.
        let mut p = frag(1, true, next_header::DEST_OPTS, 16);
        p[9] = 2;
        assert!(matches!(
            walk(&with(next_header::FRAGMENT, &p), &p, UPPER),
            Disposition::Fragment { .. }
        ));
    }

    #[test]
    fn chain_fits_cases() {
        assert!(chain_fits(next_header::UDP, &[]));
        assert!(!chain_fits(next_header::DEST_OPTS, &[]));
        assert!(!chain_fits(next_header::AH, &[0]));
        assert!(!chain_fits(next_header::FRAGMENT, &[0; 7]));
        let mut b = frag(0, false, next_header::ROUTING, 8);
        b[8] = next_header::UDP;
        assert!(chain_fits(next_header::FRAGMENT, &b));
        assert!(!chain_fits(next_header::FRAGMENT, &b[..15]));
        // A chain longer than the bound is left to the walk after
        // reassembly.
        let b = [next_header::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0].repeat(MAX_EXT_HEADERS);
        assert!(chain_fits(next_header::DEST_OPTS, &b));
    }

    prop_compose! {
        fn arb_header()(
            traffic_class in any::<u8>(), flow_label in 0u32..0x10_0000,
            payload_len in 1u16..2000, next_header in any::<u8>(), hop_limit in any::<u8>(),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
        ) -> Ipv6Header {
            Ipv6Header {
                traffic_class, flow_label, payload_len, next_header, hop_limit,
                src: Ipv6Addr::from(src), dst: Ipv6Addr::from(dst),
            }
        }
    }

    /// Checks the invariants of a walk's result on `payload`.
    fn check_disposition(d: Disposition, h: &Ipv6Header, payload: &[u8]) {
        let len = payload.len().min(usize::from(h.payload_len));
        match d {
            Disposition::Upper {
                protocol, offset, ..
            } => {
                assert!(offset <= len);
                assert!(UPPER.contains(&protocol));
            }
            Disposition::Fragment {
                header_offset,
                data_offset,
                next_header_at,
                ..
            } => {
                assert_eq!(data_offset, header_offset + 8);
                assert!(data_offset <= len);
                assert!(next_header_at < Ipv6Header::LEN + header_offset);
            }
            Disposition::ParamProblem { code, pointer } => {
                assert!(code <= 3);
                assert!((pointer as usize) < Ipv6Header::LEN + len.max(1));
            }
            Disposition::Discard(_) => {}
        }
    }

    proptest! {
        #[test]
        fn round_trip(h in arb_header()) {
            let mut b = vec![0u8; 40 + usize::from(h.payload_len)];
            prop_assert_eq!(h.emit(&mut b), Ok(40));
            prop_assert_eq!(Ipv6Header::parse(&b), Ok(h));
        }

        #[test]
        fn fragment_round_trip(
            next_header in any::<u8>(), offset in 0u16..0x2000,
            more in any::<bool>(), ident in any::<u32>(),
        ) {
            let f = FragmentHeader { next_header, offset, more, ident };
            let mut b = [0u8; 8];
            prop_assert_eq!(f.emit(&mut b), Ok(8));
            prop_assert_eq!(FragmentHeader::parse(&b), Ok(f));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = FragmentHeader::parse(&b);
            if let Ok(h) = Ipv6Header::parse(&b) {
                prop_assert!(40 + usize::from(h.payload_len) <= b.len());
                let payload = h.payload(&b);
                prop_assert_eq!(payload.len(), usize::from(h.payload_len));
                check_disposition(walk(&h, payload, UPPER), &h, payload);
            }
        }

        #[test]
        fn walk_never_panics(
            nh in prop::sample::select(vec![0u8, 6, 17, 43, 44, 50, 51, 58, 59, 60, 99]),
            dst in any::<[u8; 16]>(),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let h = Ipv6Header { dst: Ipv6Addr::from(dst), ..with(nh, &payload) };
            check_disposition(walk(&h, &payload, UPPER), &h, &payload);
        }

        #[test]
        fn walk_plausible_chains(
            headers in proptest::collection::vec(
                (prop::sample::select(vec![0u8, 43, 44, 60]), 0u8..3, any::<[u8; 24]>()),
                0..10,
            ),
            last in prop::sample::select(vec![6u8, 17, 58, 59, 99]),
            dst in any::<[u8; 16]>(),
        ) {
            // A chain of extension headers with consistent lengths and
            // random contents.
            let mut p = Vec::new();
            let first = headers.first().map_or(last, |h| h.0);
            for (i, (kind, units, body)) in headers.iter().enumerate() {
                let next = headers.get(i + 1).map_or(last, |h| h.0);
                let len = if *kind == 44 { 8 } else { (usize::from(*units) + 1) * 8 };
                let start = p.len();
                p.extend_from_slice(&body[..len.min(24)]);
                p.resize(start + len, 0);
                p[start] = next;
                if *kind != 44 {
                    p[start + 1] = *units;
                }
            }
            p.extend_from_slice(&[0; 8]);
            let h = Ipv6Header { dst: Ipv6Addr::from(dst), ..with(first, &p) };
            check_disposition(walk(&h, &p, UPPER), &h, &p);
        }
    }
}
