//! ICMPv4 (RFC 792) message headers.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 rest of header (depends on type)              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 data ...
//! ```
//!
//! The checksum covers the whole message (header and data), so
//! [`IcmpHeader::parse`] and [`IcmpHeader::emit`] take the whole message.
//! The "rest of header" word is kept as raw bytes; accessors interpret it
//! for echo (identifier, sequence number), destination unreachable /
//! fragmentation needed (next-hop MTU, RFC 1191) and parameter problem
//! (pointer).
//!
//! Error messages ([`is_error`]: destination unreachable, source quench,
//! redirect, time exceeded, parameter problem) carry the offending
//! datagram's IP header and at least 8 bytes of its payload as data
//! (RFC 792; RFC 1812 allows more, up to 576 bytes in all).
//! [`IcmpHeader::emit_error`] builds one, quoting as much as Linux does;
//! [`QuotedDatagram::parse`] reads the quote of a received one, and
//! [`socket_error`] says what it means to the socket that sent the quoted
//! datagram (Linux's errno and hard/soft split).
//!
//! This module is the one place that classifies ICMP types: [`is_error`]
//! (errors, which quote a datagram and are never answered with an error),
//! [`is_query`] (the informational types, the only ones Linux answers with
//! an error) and [`reaches_transport`] (the errors a transport layer is
//! told of).

use core::fmt;
use std::net::Ipv4Addr;

use crate::checksum;
use crate::ipv4::Ipv4Header;
use crate::{be16, be32, put16, EmitError};

/// ICMP message types (RFC 792; address mask: RFC 950).
pub mod icmp_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (codes in [`unreach_code`](super::unreach_code)).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated by RFC 6633: not sent, ignored when
    /// received).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (codes in [`time_exceeded_code`](super::time_exceeded_code)).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Timestamp request.
    pub const TIMESTAMP_REQUEST: u8 = 13;
    /// Timestamp reply.
    pub const TIMESTAMP_REPLY: u8 = 14;
    /// Information request.
    pub const INFO_REQUEST: u8 = 15;
    /// Information reply.
    pub const INFO_REPLY: u8 = 16;
    /// Address mask request (RFC 950).
    pub const ADDRESS_MASK_REQUEST: u8 = 17;
    /// Address mask reply (RFC 950).
    pub const ADDRESS_MASK_REPLY: u8 = 18;
}

/// Codes of destination unreachable messages (RFC 792 for 0-5, RFC 1122
/// §3.2.2.1 for 6-12, RFC 1812 §5.2.7.1 for 13-15).
pub mod unreach_code {
    /// Network unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Protocol unreachable.
    pub const PROTOCOL: u8 = 2;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set (carries the next-hop MTU).
    pub const FRAG_NEEDED: u8 = 4;
    /// Source route failed.
    pub const SOURCE_ROUTE_FAILED: u8 = 5;
    /// Destination network unknown.
    pub const NET_UNKNOWN: u8 = 6;
    /// Destination host unknown.
    pub const HOST_UNKNOWN: u8 = 7;
    /// Source host isolated.
    pub const HOST_ISOLATED: u8 = 8;
    /// Communication with destination network administratively prohibited.
    pub const NET_PROHIBITED: u8 = 9;
    /// Communication with destination host administratively prohibited.
    pub const HOST_PROHIBITED: u8 = 10;
    /// Network unreachable for type of service.
    pub const NET_TOS: u8 = 11;
    /// Host unreachable for type of service.
    pub const HOST_TOS: u8 = 12;
    /// Communication administratively prohibited (by a filter).
    pub const ADMIN_PROHIBITED: u8 = 13;
    /// Host precedence violation.
    pub const PRECEDENCE_VIOLATION: u8 = 14;
    /// Precedence cutoff in effect.
    pub const PRECEDENCE_CUTOFF: u8 = 15;
}

/// Codes of time exceeded messages.
pub mod time_exceeded_code {
    /// Time to live exceeded in transit.
    pub const TTL: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
}

/// Whether ICMP type `t` is an error message: destination unreachable
/// (3), source quench (4), redirect (5), time exceeded (11) or parameter
/// problem (12).
///
/// These are the five types RFC 1122 §3.2.2 lists as error messages, and
/// the five whose data RFC 792 defines as the offending datagram's IP
/// header and first 64 bits of payload. So they are at once the types
/// that carry a quoted datagram (see [`QuotedDatagram`]) and the types to
/// which no ICMP error may be sent in turn (RFC 1122 §3.2.2, RFC 1812
/// §4.3.2.7). Each was decided deliberately:
///
/// * destination unreachable, time exceeded, parameter problem: errors in
///   every RFC, and what a transport layer is told of
///   ([`reaches_transport`]);
/// * source quench: deprecated (RFC 6633 says not to send it and to ignore
///   it), but one still received is an error that quotes a datagram, and
///   answering it would be answering an error;
/// * redirect: meant for the IP layer's routing (RFC 1122 §3.2.2.2), not
///   for the transport, yet it quotes the redirected datagram and RFC 1122
///   counts it as an error.
///
/// Every other type, known or not, is not an error here. Linux is
/// stricter when deciding whether to *answer* a datagram: see
/// [`is_query`].
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        icmp_type::DEST_UNREACHABLE
            | icmp_type::SOURCE_QUENCH
            | icmp_type::REDIRECT
            | icmp_type::TIME_EXCEEDED
            | icmp_type::PARAMETER_PROBLEM
    )
}

/// Whether ICMP type `t` is a query (an informational message): echo,
/// timestamp, information or address mask, request or reply (0, 8, 13-18).
///
/// Linux answers an ICMP message with an ICMP error only if its type is
/// one of these: its `icmp_pointers[]` table (net/ipv4/icmp.c) marks the
/// unassigned types 1, 2, 6, 7, 9, 10 as errors too, and `__icmp_send`
/// treats any type past 18 as one ("assume any unknown ICMP type is an
/// error"). A sender that wants Linux's caution checks `!is_query(t)`
/// rather than [`is_error`].
pub fn is_query(t: u8) -> bool {
    matches!(
        t,
        icmp_type::ECHO_REPLY | icmp_type::ECHO_REQUEST | icmp_type::TIMESTAMP_REQUEST
            ..=icmp_type::ADDRESS_MASK_REPLY
    )
}

/// Whether an ICMP error of type `t` is passed to the transport protocol
/// whose datagram it quotes: destination unreachable, time exceeded and
/// parameter problem (RFC 1122 §3.2.2.1, §3.2.2.4, §3.2.2.5).
///
/// The other two errors stop at the IP layer, as in Linux (`tcp_v4_err`,
/// `__udp4_lib_err`): source quench is ignored (RFC 6633) and a redirect
/// only updates routing (RFC 1122 §3.2.2.2). These are exactly the types
/// for which [`socket_error`] has an answer.
pub fn reaches_transport(t: u8) -> bool {
    matches!(
        t,
        icmp_type::DEST_UNREACHABLE | icmp_type::TIME_EXCEEDED | icmp_type::PARAMETER_PROBLEM
    )
}

/// Largest ICMP error datagram we send, IPv4 header included: RFC 1812
/// §4.3.2.3 lets the quote grow until the error is 576 bytes in all, which
/// is what Linux sends.
pub const ERROR_MAX_LEN: usize = 576;

/// Most bytes of the offending datagram an ICMP error quotes: what fits
/// into [`ERROR_MAX_LEN`] after a 20-byte IPv4 header and the ICMP header
/// (548 bytes).
pub const ERROR_QUOTE_MAX: usize = ERROR_MAX_LEN - Ipv4Header::MIN_LEN - IcmpHeader::LEN;

/// How many bytes of an offending datagram of `len` bytes (counted from
/// the start of its IPv4 header) an ICMP error quotes: all of them, up to
/// [`ERROR_QUOTE_MAX`]. That is always at least the IP header and the 8
/// bytes RFC 792 asks for, when the datagram has them.
pub fn error_quote_len(len: usize) -> usize {
    len.min(ERROR_QUOTE_MAX)
}

/// Why an ICMP message could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Shorter than the 8-byte header.
    Truncated,
    /// The checksum over the message is wrong.
    BadChecksum,
}

impl IcmpError {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            IcmpError::Truncated => "truncated",
            IcmpError::BadChecksum => "bad_checksum",
        }
    }
}

impl fmt::Display for IcmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IcmpError::Truncated => "ICMP message shorter than its header",
            IcmpError::BadChecksum => "ICMP checksum mismatch",
        })
    }
}

impl std::error::Error for IcmpError {}

/// The 8-byte header of an ICMP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpHeader {
    /// Message type (see [`icmp_type`]).
    pub icmp_type: u8,
    /// Message code (see [`unreach_code`], [`time_exceeded_code`]).
    pub code: u8,
    /// Checksum as received. [`emit`](Self::emit) ignores it and computes
    /// a fresh one.
    pub checksum: u16,
    /// The type-specific second word: identifier and sequence number for
    /// echo; unused, then next-hop MTU in bytes 2..4, for fragmentation
    /// needed; pointer in byte 0 for parameter problem; zero otherwise.
    pub rest: [u8; 4],
}

impl IcmpHeader {
    /// Length of the header in bytes.
    pub const LEN: usize = 8;

    /// An echo request with identifier `id` and sequence number `seq`.
    pub fn echo_request(id: u16, seq: u16) -> Self {
        Self::echo(icmp_type::ECHO_REQUEST, id, seq)
    }

    /// An echo reply with identifier `id` and sequence number `seq` (copy
    /// them, and the data, from the request).
    pub fn echo_reply(id: u16, seq: u16) -> Self {
        Self::echo(icmp_type::ECHO_REPLY, id, seq)
    }

    fn echo(icmp_type: u8, id: u16, seq: u16) -> Self {
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        IcmpHeader {
            icmp_type,
            code: 0,
            checksum: 0,
            rest: [a, b, c, d],
        }
    }

    /// A destination unreachable message with `code` (see [`unreach_code`]);
    /// `mtu` is the next-hop MTU for [`unreach_code::FRAG_NEEDED`] and
    /// should be 0 otherwise.
    pub fn dest_unreachable(code: u8, mtu: u16) -> Self {
        let [a, b] = mtu.to_be_bytes();
        IcmpHeader {
            icmp_type: icmp_type::DEST_UNREACHABLE,
            code,
            checksum: 0,
            rest: [0, 0, a, b],
        }
    }

    /// An error message of `icmp_type` and `code` whose second word is
    /// zero, as it is for every error but fragmentation needed (see
    /// [`dest_unreachable`](Self::dest_unreachable)) and parameter problem
    /// (see [`parameter_problem`](Self::parameter_problem)).
    pub fn error(icmp_type: u8, code: u8) -> Self {
        IcmpHeader {
            icmp_type,
            code,
            checksum: 0,
            rest: [0; 4],
        }
    }

    /// A time exceeded message with `code` (see [`time_exceeded_code`]).
    pub fn time_exceeded(code: u8) -> Self {
        IcmpHeader {
            icmp_type: icmp_type::TIME_EXCEEDED,
            code,
            checksum: 0,
            rest: [0; 4],
        }
    }

    /// A parameter problem message (code 0) pointing at byte `pointer` of
    /// the offending datagram's header.
    pub fn parameter_problem(pointer: u8) -> Self {
        IcmpHeader {
            icmp_type: icmp_type::PARAMETER_PROBLEM,
            code: 0,
            checksum: 0,
            rest: [pointer, 0, 0, 0],
        }
    }

    /// The echo identifier (bytes 0..2 of `rest`).
    pub fn echo_id(&self) -> u16 {
        u16::from_be_bytes([self.rest[0], self.rest[1]])
    }

    /// The echo sequence number (bytes 2..4 of `rest`).
    pub fn echo_seq(&self) -> u16 {
        u16::from_be_bytes([self.rest[2], self.rest[3]])
    }

    /// The next-hop MTU of a fragmentation-needed message (bytes 2..4 of
    /// `rest`; 0 from routers predating RFC 1191).
    pub fn next_hop_mtu(&self) -> u16 {
        u16::from_be_bytes([self.rest[2], self.rest[3]])
    }

    /// Whether this is an error message, to which no ICMP error may be
    /// sent in turn (RFC 1122 §3.2.2): [`is_error`] of its type.
    pub fn is_error(&self) -> bool {
        is_error(self.icmp_type)
    }

    /// Parses the header of the whole ICMP message `msg` (the IP payload,
    /// exactly) and verifies the checksum over all of `msg`. The message's
    /// data is `&msg[IcmpHeader::LEN..]`.
    pub fn parse(msg: &[u8]) -> Result<Self, IcmpError> {
        if msg.len() < Self::LEN {
            return Err(IcmpError::Truncated);
        }
        if !checksum::verify(msg) {
            return Err(IcmpError::BadChecksum);
        }
        Ok(IcmpHeader {
            icmp_type: msg[0],
            code: msg[1],
            checksum: u16::from_be_bytes([msg[2], msg[3]]),
            rest: [msg[4], msg[5], msg[6], msg[7]],
        })
    }

    /// Writes the header at the start of `msg`, the whole message with its
    /// data already in place after the first 8 bytes, and fills the
    /// checksum over all of `msg`.
    pub fn emit(&self, msg: &mut [u8]) -> Result<(), EmitError> {
        if msg.len() < Self::LEN {
            return Err(EmitError::BufferTooSmall);
        }
        msg[0] = self.icmp_type;
        msg[1] = self.code;
        put16(msg, 2, 0);
        msg[4..8].copy_from_slice(&self.rest);
        let c = checksum::checksum(msg);
        put16(msg, 2, c);
        Ok(())
    }

    /// Writes error message `self` about `datagram` (the offending
    /// datagram as received, from the start of its IPv4 header) at the
    /// start of `msg`: this header, then the first
    /// [`error_quote_len`]`(datagram.len())` bytes of `datagram`, with the
    /// checksum filled over both. Returns the message's length; the IPv4
    /// header in front of it is the caller's.
    ///
    /// Fails with [`EmitError::BufferTooSmall`] when `msg` cannot hold the
    /// message. Whether an error may be sent about `datagram` at all (RFC
    /// 1122 §3.2.2: not about an error, a later fragment, a broadcast...)
    /// is the caller's decision.
    pub fn emit_error(&self, datagram: &[u8], msg: &mut [u8]) -> Result<usize, EmitError> {
        let quote = error_quote_len(datagram.len());
        let len = Self::LEN + quote;
        let msg = msg.get_mut(..len).ok_or(EmitError::BufferTooSmall)?;
        msg[Self::LEN..].copy_from_slice(&datagram[..quote]);
        self.emit(msg)?;
        Ok(len)
    }
}

/// Why the datagram quoted in an ICMP error could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteError {
    /// Shorter than its IPv4 header plus the 8 bytes after it.
    Truncated,
    /// The quoted header's version is not 4.
    BadVersion,
    /// The quoted header length is under 20 bytes.
    BadHeaderLen,
    /// The quoted datagram is a fragment other than the first, so the
    /// bytes after its header are not a transport header.
    NotFirstFragment,
}

impl QuoteError {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            QuoteError::Truncated => "quote_truncated",
            QuoteError::BadVersion => "quote_bad_version",
            QuoteError::BadHeaderLen => "quote_bad_header_len",
            QuoteError::NotFirstFragment => "quote_not_first_fragment",
        }
    }
}

impl fmt::Display for QuoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuoteError::Truncated => "quoted datagram shorter than its header and 8 bytes",
            QuoteError::BadVersion => "quoted datagram is not IPv4",
            QuoteError::BadHeaderLen => "quoted IPv4 header length under 20 bytes",
            QuoteError::NotFirstFragment => "quoted datagram is a later fragment",
        })
    }
}

impl std::error::Error for QuoteError {}

/// The start of the datagram an ICMP error quotes: its IPv4 header and the
/// first 8 bytes of its payload (all RFC 792 promises), which hold a TCP
/// or UDP header's ports (and TCP's sequence number) or an ICMP message's
/// type, code, and identifier.
///
/// For an error about a datagram this host sent, `src`/`src_port` are
/// ours and `dst`/`dst_port` the peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedDatagram {
    /// Source address of the quoted datagram.
    pub src: Ipv4Addr,
    /// Destination address of the quoted datagram.
    pub dst: Ipv4Addr,
    /// Its IP protocol (see [`protocol`](crate::ipv4::protocol)).
    pub protocol: u8,
    /// Length of its IPv4 header in bytes (20-60); the transport header
    /// starts this far into the quote.
    pub header_len: u8,
    /// The first 8 bytes after its IPv4 header.
    pub transport: [u8; 8],
}

impl QuotedDatagram {
    /// Shortest quote that can parse: a 20-byte header and 8 bytes.
    pub const MIN_LEN: usize = Ipv4Header::MIN_LEN + 8;

    /// Reads `quote`, the data of an ICMP error (the message after its
    /// 8-byte header). It must hold a whole IPv4 header of an unfragmented
    /// datagram or a first fragment, and the 8 bytes after it: Linux
    /// requires as much before it looks for the socket an error is about.
    ///
    /// The quoted header's checksum, total length and options are not
    /// checked: the quote is usually cut short, and the header was the
    /// offending datagram's as the reporting router saw it.
    pub fn parse(quote: &[u8]) -> Result<Self, QuoteError> {
        let v = *quote.first().ok_or(QuoteError::Truncated)?;
        let hl = usize::from(v & 0x0f) * 4;
        if v >> 4 != 4 {
            return Err(QuoteError::BadVersion);
        }
        if hl < Ipv4Header::MIN_LEN {
            return Err(QuoteError::BadHeaderLen);
        }
        let Some(transport) = quote.get(hl..hl + 8) else {
            return Err(QuoteError::Truncated);
        };
        if be16(quote, 6) & 0x1fff != 0 {
            return Err(QuoteError::NotFirstFragment);
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(transport);
        Ok(QuotedDatagram {
            src: Ipv4Addr::from(be32(quote, 12)),
            dst: Ipv4Addr::from(be32(quote, 16)),
            protocol: quote[9],
            header_len: hl as u8,
            transport: t,
        })
    }

    /// TCP or UDP source port (transport bytes 0..2).
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes([self.transport[0], self.transport[1]])
    }

    /// TCP or UDP destination port (transport bytes 2..4).
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([self.transport[2], self.transport[3]])
    }

    /// TCP sequence number (transport bytes 4..8).
    pub fn tcp_seq(&self) -> u32 {
        let t = &self.transport;
        u32::from_be_bytes([t[4], t[5], t[6], t[7]])
    }
}

/// What an ICMP error means to the socket that sent the datagram it
/// quotes (see [`socket_error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketError {
    /// The errno reported (a `libc` value).
    pub errno: i32,
    /// Linux's `fatal`: a hard error is reported to a connected UDP socket
    /// even without `IP_RECVERR`, and fails a TCP connection still being
    /// opened in tcpd; a soft one (RFC 1122 §4.2.3.9: may be transient)
    /// is only remembered.
    pub hard: bool,
}

/// Linux's `icmp_err_convert[]` (net/ipv4/icmp.c), indexed by destination
/// unreachable code: (errno, fatal).
const UNREACH_ERRORS: [(i32, bool); 16] = [
    (libc::ENETUNREACH, false),  // 0 net unreachable
    (libc::EHOSTUNREACH, false), // 1 host unreachable
    (libc::ENOPROTOOPT, true),   // 2 protocol unreachable
    (libc::ECONNREFUSED, true),  // 3 port unreachable
    (libc::EMSGSIZE, false),     // 4 fragmentation needed
    (libc::EOPNOTSUPP, false),   // 5 source route failed
    (libc::ENETUNREACH, true),   // 6 net unknown
    (libc::EHOSTDOWN, true),     // 7 host unknown
    (libc::ENONET, true),        // 8 host isolated
    (libc::ENETUNREACH, true),   // 9 net administratively prohibited
    (libc::EHOSTUNREACH, true),  // 10 host administratively prohibited
    (libc::ENETUNREACH, false),  // 11 net unreachable for TOS
    (libc::EHOSTUNREACH, false), // 12 host unreachable for TOS
    (libc::EHOSTUNREACH, true),  // 13 communication prohibited (filtered)
    (libc::EHOSTUNREACH, true),  // 14 precedence violation
    (libc::EHOSTUNREACH, true),  // 15 precedence cutoff
];

/// The errno an ICMP error of `icmp_type`/`code` reports to the socket
/// whose datagram it quotes, and whether it is hard; `None` for the types
/// that mean nothing to a socket (all but those of [`reaches_transport`]).
///
/// This is Linux's mapping, shared by tcpd and udpd:
///
/// * destination unreachable: `icmp_err_convert[code]` (net/ipv4/icmp.c),
///   `fatal` being `hard`; a code past that table (16 and up) is
///   `EHOSTUNREACH`, soft, as `__udp4_lib_err` (net/ipv4/udp.c) treats it.
///   Fragmentation needed is in the table as `EMSGSIZE`, soft, but a
///   transport doing path MTU discovery handles it before asking;
/// * time exceeded: `EHOSTUNREACH`, soft (`__udp4_lib_err`, `tcp_v4_err`);
/// * parameter problem: `EPROTO`, hard (`__udp4_lib_err`; `tcp_v4_err`
///   reports `EPROTO` too).
pub fn socket_error(icmp_type: u8, code: u8) -> Option<SocketError> {
    let (errno, hard) = match icmp_type {
        icmp_type::DEST_UNREACHABLE => UNREACH_ERRORS
            .get(usize::from(code))
            .copied()
            .unwrap_or((libc::EHOSTUNREACH, false)),
        icmp_type::TIME_EXCEEDED => (libc::EHOSTUNREACH, false),
        icmp_type::PARAMETER_PROBLEM => (libc::EPROTO, true),
        _ => return None,
    };
    Some(SocketError { errno, hard })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An echo request as sent by Linux ping (id 0x1234, seq 1, 8 bytes of
    /// data), with its checksum.
    const ECHO: [u8; 16] = [
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];

    #[test]
    fn known_echo() {
        let h = IcmpHeader::parse(&ECHO).unwrap();
        assert_eq!(h.icmp_type, icmp_type::ECHO_REQUEST);
        assert_eq!(h.code, 0);
        assert_eq!(h.echo_id(), 0x1234);
        assert_eq!(h.echo_seq(), 1);
        assert_eq!(h.checksum, 0x5435);
        assert!(!h.is_error());

        // Re-emitting gives the same bytes.
        let mut m = ECHO;
        m[2] = 0;
        m[3] = 0;
        IcmpHeader::echo_request(0x1234, 1).emit(&mut m).unwrap();
        assert_eq!(m, ECHO);

        // Turning it into a reply (type 8 -> 0) changes the checksum by 0x0800.
        let mut r = ECHO;
        IcmpHeader::echo_reply(h.echo_id(), h.echo_seq())
            .emit(&mut r)
            .unwrap();
        assert_eq!(r[0], 0);
        assert_eq!(u16::from_be_bytes([r[2], r[3]]), 0x5c35);
        assert!(IcmpHeader::parse(&r).is_ok());
    }

    #[test]
    fn errors() {
        assert_eq!(IcmpHeader::parse(&ECHO[..7]), Err(IcmpError::Truncated));
        let mut b = ECHO;
        b[15] ^= 1;
        assert_eq!(IcmpHeader::parse(&b), Err(IcmpError::BadChecksum));
        assert_eq!(IcmpError::BadChecksum.reason(), "bad_checksum");
        assert_eq!(
            IcmpHeader::echo_request(1, 1).emit(&mut [0u8; 7]),
            Err(EmitError::BufferTooSmall)
        );
    }

    #[test]
    fn both_zero_representations_accepted() {
        // Found by fuzzing: all-ones data sums to 0xffff with a checksum
        // field of either 0xffff or 0x0000; both are correct.
        let ones = [0xffu8; 8];
        let h = IcmpHeader::parse(&ones).unwrap();
        assert_eq!(h.checksum, 0xffff);
        let mut m = ones;
        h.emit(&mut m).unwrap();
        assert_eq!(&m[2..4], &[0, 0]);
        assert_eq!(IcmpHeader::parse(&m).unwrap().checksum, 0);
    }

    #[test]
    fn constructors() {
        let f = IcmpHeader::dest_unreachable(unreach_code::FRAG_NEEDED, 1400);
        assert_eq!(f.next_hop_mtu(), 1400);
        assert!(f.is_error());
        assert!(IcmpHeader::time_exceeded(time_exceeded_code::TTL).is_error());
        let p = IcmpHeader::parameter_problem(9);
        assert_eq!(p.rest, [9, 0, 0, 0]);
        assert!(p.is_error());
    }

    #[test]
    fn type_classes() {
        for t in 0..=255u8 {
            let error = matches!(t, 3 | 4 | 5 | 11 | 12);
            assert_eq!(is_error(t), error, "is_error({t})");
            assert_eq!(
                IcmpHeader::error(t, 0).is_error(),
                error,
                "IcmpHeader::is_error({t})"
            );
            let query = matches!(t, 0 | 8 | 13..=18);
            assert_eq!(is_query(t), query, "is_query({t})");
            assert!(!(error && query), "{t} is both");
            assert_eq!(reaches_transport(t), matches!(t, 3 | 11 | 12), "{t}");
            if reaches_transport(t) {
                assert!(is_error(t));
            }
        }
    }

    /// A UDP datagram 10.0.0.1:40000 -> 10.0.0.2:53 with 4 bytes of data.
    fn udp_datagram() -> Vec<u8> {
        let mut d = vec![
            0x45, 0, 0, 32, 0, 7, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        crate::ipv4::fill_checksum(&mut d);
        d.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
        d
    }

    #[test]
    fn emit_error_quotes_the_datagram() {
        let d = udp_datagram();
        let mut m = [0u8; 600];
        let n = IcmpHeader::dest_unreachable(unreach_code::PORT, 0)
            .emit_error(&d, &mut m)
            .unwrap();
        assert_eq!(n, 8 + d.len());
        let h = IcmpHeader::parse(&m[..n]).unwrap();
        assert_eq!((h.icmp_type, h.code, h.rest), (3, 3, [0; 4]));
        assert_eq!(&m[8..n], &d[..], "the whole datagram quoted");

        // A long datagram is quoted up to 576 bytes of error in all.
        let big = vec![0x45u8; 1500];
        let n = IcmpHeader::time_exceeded(time_exceeded_code::TTL)
            .emit_error(&big, &mut m)
            .unwrap();
        assert_eq!(n, ERROR_QUOTE_MAX + 8);
        assert_eq!(20 + n, ERROR_MAX_LEN);
        assert!(IcmpHeader::parse(&m[..n]).is_ok());
        assert_eq!(error_quote_len(10), 10);
        assert_eq!(error_quote_len(548), 548);
        assert_eq!(error_quote_len(549), 548);

        assert_eq!(
            IcmpHeader::error(3, 1).emit_error(&d, &mut m[..8 + d.len() - 1]),
            Err(EmitError::BufferTooSmall)
        );
    }

    #[test]
    fn quoted_datagram() {
        let d = udp_datagram();
        let q = QuotedDatagram::parse(&d).unwrap();
        assert_eq!(q.src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(q.dst, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!((q.protocol, q.header_len), (17, 20));
        assert_eq!((q.src_port(), q.dst_port()), (40000, 53));
        assert_eq!(q.tcp_seq(), 0x000c_0000);
        // Header and 8 bytes are enough; one byte less is not.
        assert_eq!(QuotedDatagram::parse(&d[..28]), Ok(q));
        assert_eq!(QuotedDatagram::parse(&d[..27]), Err(QuoteError::Truncated));
        assert_eq!(QuotedDatagram::parse(&[]), Err(QuoteError::Truncated));

        let mut v6 = d.clone();
        v6[0] = 0x65;
        assert_eq!(QuotedDatagram::parse(&v6), Err(QuoteError::BadVersion));
        let mut short = d.clone();
        short[0] = 0x44;
        assert_eq!(QuotedDatagram::parse(&short), Err(QuoteError::BadHeaderLen));
        // Options: the transport header starts after them.
        let mut opts = d[..20].to_vec();
        opts[0] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&d[20..]);
        let o = QuotedDatagram::parse(&opts).unwrap();
        assert_eq!((o.header_len, o.src_port(), o.dst_port()), (24, 40000, 53));
        assert_eq!(
            QuotedDatagram::parse(&opts[..31]),
            Err(QuoteError::Truncated)
        );
        // A first fragment has the ports, a later one does not.
        let mut first = d.clone();
        first[6] = 0x20;
        assert!(QuotedDatagram::parse(&first).is_ok());
        let mut later = d.clone();
        later[7] = 1;
        assert_eq!(
            QuotedDatagram::parse(&later),
            Err(QuoteError::NotFirstFragment)
        );
        assert_eq!(
            QuoteError::NotFirstFragment.reason(),
            "quote_not_first_fragment"
        );
    }

    #[test]
    fn socket_errors_match_linux() {
        use libc::*;
        // Linux's icmp_err_convert[], net/ipv4/icmp.c, code by code.
        let linux: [(i32, bool); 16] = [
            (ENETUNREACH, false),
            (EHOSTUNREACH, false),
            (ENOPROTOOPT, true),
            (ECONNREFUSED, true),
            (EMSGSIZE, false),
            (EOPNOTSUPP, false),
            (ENETUNREACH, true),
            (EHOSTDOWN, true),
            (ENONET, true),
            (ENETUNREACH, true),
            (EHOSTUNREACH, true),
            (ENETUNREACH, false),
            (EHOSTUNREACH, false),
            (EHOSTUNREACH, true),
            (EHOSTUNREACH, true),
            (EHOSTUNREACH, true),
        ];
        for code in 0..=255u8 {
            let (errno, hard) = linux
                .get(usize::from(code))
                .copied()
                .unwrap_or((EHOSTUNREACH, false));
            assert_eq!(
                socket_error(icmp_type::DEST_UNREACHABLE, code),
                Some(SocketError { errno, hard }),
                "unreachable code {code}"
            );
            assert_eq!(
                socket_error(icmp_type::TIME_EXCEEDED, code),
                Some(SocketError {
                    errno: EHOSTUNREACH,
                    hard: false
                })
            );
            assert_eq!(
                socket_error(icmp_type::PARAMETER_PROBLEM, code),
                Some(SocketError {
                    errno: EPROTO,
                    hard: true
                })
            );
        }
        for t in 0..=255u8 {
            assert_eq!(
                socket_error(t, 0).is_some(),
                reaches_transport(t),
                "type {t}"
            );
        }
    }

    proptest! {
        #[test]
        fn quote_parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(q) = QuotedDatagram::parse(&b) {
                let hl = usize::from(q.header_len);
                prop_assert!(hl >= 20 && hl + 8 <= b.len());
                prop_assert_eq!(&q.transport[..], &b[hl..hl + 8]);
            }
        }

        #[test]
        fn emit_error_never_panics(
            d in proptest::collection::vec(any::<u8>(), 0..700),
            room in 0usize..700,
        ) {
            let mut m = vec![0u8; room];
            match IcmpHeader::error(3, 3).emit_error(&d, &mut m) {
                Ok(n) => {
                    prop_assert_eq!(n, 8 + error_quote_len(d.len()));
                    prop_assert!(IcmpHeader::parse(&m[..n]).is_ok());
                }
                Err(e) => {
                    prop_assert_eq!(e, EmitError::BufferTooSmall);
                    prop_assert!(room < 8 + error_quote_len(d.len()));
                }
            }
        }

        #[test]
        fn round_trip(
            t in any::<u8>(), c in any::<u8>(), rest in any::<[u8; 4]>(),
            data in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut m = vec![0u8; 8];
            m.extend_from_slice(&data);
            let h = IcmpHeader { icmp_type: t, code: c, checksum: 0, rest };
            h.emit(&mut m).unwrap();
            let p = IcmpHeader::parse(&m).unwrap();
            prop_assert_eq!(p, IcmpHeader { checksum: p.checksum, ..h });
            prop_assert_eq!(&m[8..], &data[..]);
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = IcmpHeader::parse(&b);
        }
    }
}
