//! ICMPv6 (RFC 4443) message headers.
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
//! The checksum covers the IPv6 pseudo-header (RFC 8200 §8.1) and the
//! whole message, so [`Icmpv6Header::parse`] and [`Icmpv6Header::emit`]
//! take the whole message and the addresses. The "rest of header" word is
//! kept as raw bytes; accessors interpret it for echo (identifier,
//! sequence number), packet too big (MTU) and parameter problem (pointer).
//!
//! Error messages are the types below 128 ([`is_error`]); they quote as
//! much of the offending packet as fits in the IPv6 minimum MTU
//! ([`Icmpv6Header::emit_error`]) and are rate limited ([`RateLimiter`]).
//! [`socket_error`] says what a received one means to the socket that sent
//! the packet it quotes (Linux's errno and hard/soft split).
//! Neighbor Discovery messages (types 133 to 137) are read and written by
//! [`ndp`](crate::ndp).

use core::fmt;
use std::net::Ipv6Addr;

use crate::checksum::pseudo_header_v6;
pub use crate::icmp::SocketError;
use crate::ipv6::{next_header, Ipv6Header, MIN_MTU};
use crate::{be32, put16, EmitError};

/// ICMPv6 message types (RFC 4443 §2.1; Neighbor Discovery: RFC 4861 §4).
pub mod icmpv6_type {
    /// Destination unreachable (codes in [`unreach_code`](super::unreach_code)).
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (carries the next-hop MTU).
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded (codes in [`time_exceeded_code`](super::time_exceeded_code)).
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem (codes in
    /// [`param_problem_code`](super::param_problem_code); carries a pointer).
    pub const PARAMETER_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation (RFC 4861 §4.1).
    pub const ROUTER_SOLICITATION: u8 = 133;
    /// Router advertisement (RFC 4861 §4.2).
    pub const ROUTER_ADVERTISEMENT: u8 = 134;
    /// Neighbor solicitation (RFC 4861 §4.3).
    pub const NEIGHBOR_SOLICITATION: u8 = 135;
    /// Neighbor advertisement (RFC 4861 §4.4).
    pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
    /// Redirect (RFC 4861 §4.5).
    pub const REDIRECT: u8 = 137;
}

/// Codes of destination unreachable messages (RFC 4443 §3.1).
pub mod unreach_code {
    /// No route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Communication with destination administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Beyond scope of source address.
    pub const BEYOND_SCOPE: u8 = 2;
    /// Address unreachable.
    pub const ADDRESS: u8 = 3;
    /// Port unreachable.
    pub const PORT: u8 = 4;
    /// Source address failed ingress/egress policy.
    pub const SOURCE_POLICY: u8 = 5;
    /// Reject route to destination.
    pub const REJECT_ROUTE: u8 = 6;
}

/// Codes of time exceeded messages (RFC 4443 §3.3).
pub mod time_exceeded_code {
    /// Hop limit exceeded in transit.
    pub const HOP_LIMIT: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
}

/// Codes of parameter problem messages (RFC 4443 §3.4; code 3: RFC 7112).
pub mod param_problem_code {
    /// Erroneous header field encountered.
    pub const HEADER_FIELD: u8 = 0;
    /// Unrecognized Next Header type encountered.
    pub const NEXT_HEADER: u8 = 1;
    /// Unrecognized IPv6 option encountered.
    pub const OPTION: u8 = 2;
    /// First fragment has an incomplete IPv6 header chain (RFC 7112 §5).
    pub const HEADER_CHAIN: u8 = 3;
}

/// Whether ICMPv6 type `t` is an error message: the types 0 to 127
/// (RFC 4443 §2.1). No error is sent about an error (RFC 4443 §2.4 (e)).
pub fn is_error(t: u8) -> bool {
    t < 128
}

/// Largest ICMPv6 error packet we send, IPv6 header included: the IPv6
/// minimum MTU (RFC 4443 §2.4 (c)).
pub const ERROR_MAX_LEN: usize = MIN_MTU;

/// Most bytes of the offending packet an ICMPv6 error quotes: what fits
/// into [`ERROR_MAX_LEN`] after a 40-byte IPv6 header (without extension
/// headers) and the ICMPv6 header (1232 bytes).
pub const ERROR_QUOTE_MAX: usize = ERROR_MAX_LEN - Ipv6Header::LEN - Icmpv6Header::LEN;

/// How many bytes of an offending packet of `len` bytes (counted from the
/// start of its IPv6 header) an ICMPv6 error quotes: all of them, up to
/// [`ERROR_QUOTE_MAX`] (RFC 4443 §2.4 (c)).
pub fn error_quote_len(len: usize) -> usize {
    len.min(ERROR_QUOTE_MAX)
}

/// Linux's `tab_unreach[]` (net/ipv6/icmp.c), indexed by destination
/// unreachable code (RFC 4443 §3.1): (errno, fatal).
const UNREACH_ERRORS: [(i32, bool); 7] = [
    (libc::ENETUNREACH, false),  // 0 no route to destination
    (libc::EACCES, true),        // 1 administratively prohibited
    (libc::EHOSTUNREACH, false), // 2 beyond scope of source address
    (libc::EHOSTUNREACH, false), // 3 address unreachable
    (libc::ECONNREFUSED, true),  // 4 port unreachable
    (libc::EACCES, true),        // 5 source address failed policy
    (libc::EACCES, true),        // 6 reject route to destination
];

/// The errno an ICMPv6 error of `icmp_type`/`code` reports to the socket
/// whose packet it quotes, and whether it is hard (Linux's `fatal`: a
/// connected UDP socket hears of it even without `IPV6_RECVERR`); `None`
/// for informational messages (RFC 4443 §2.1), which mean nothing to a
/// socket.
///
/// This is Linux's `icmpv6_err_convert` (net/ipv6/icmp.c):
///
/// * destination unreachable: `tab_unreach[code]`; a code past that table
///   (7 and up) is `EPROTO`, hard;
/// * packet too big: `EMSGSIZE`, soft (a UDP socket doing path MTU
///   discovery, Linux's default `IPV6_PMTUDISC_WANT`, makes it hard:
///   `__udp6_lib_err`);
/// * time exceeded: `EHOSTUNREACH`, soft;
/// * parameter problem: `EPROTO`, hard;
/// * any other error type (RFC 4443 §2.4 (b): passed up though unknown):
///   `EPROTO`, soft.
pub fn socket_error(icmp_type: u8, code: u8) -> Option<SocketError> {
    if !is_error(icmp_type) {
        return None;
    }
    let (errno, hard) = match icmp_type {
        icmpv6_type::DEST_UNREACHABLE => UNREACH_ERRORS
            .get(usize::from(code))
            .copied()
            .unwrap_or((libc::EPROTO, true)),
        icmpv6_type::PACKET_TOO_BIG => (libc::EMSGSIZE, false),
        icmpv6_type::TIME_EXCEEDED => (libc::EHOSTUNREACH, false),
        icmpv6_type::PARAMETER_PROBLEM => (libc::EPROTO, true),
        _ => (libc::EPROTO, false),
    };
    Some(SocketError { errno, hard })
}

/// Why an ICMPv6 message could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Error {
    /// Shorter than the 8-byte header.
    Truncated,
    /// The checksum over the pseudo-header and the message is wrong.
    BadChecksum,
}

impl Icmpv6Error {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            Icmpv6Error::Truncated => "truncated",
            Icmpv6Error::BadChecksum => "bad_checksum",
        }
    }
}

impl fmt::Display for Icmpv6Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Icmpv6Error::Truncated => "ICMPv6 message shorter than its header",
            Icmpv6Error::BadChecksum => "ICMPv6 checksum mismatch",
        })
    }
}

impl std::error::Error for Icmpv6Error {}

/// The 8-byte header of an ICMPv6 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmpv6Header {
    /// Message type (see [`icmpv6_type`]).
    pub icmp_type: u8,
    /// Message code (see [`unreach_code`], [`time_exceeded_code`],
    /// [`param_problem_code`]).
    pub code: u8,
    /// Checksum as received. [`emit`](Self::emit) ignores it and computes
    /// a fresh one.
    pub checksum: u16,
    /// The type-specific second word: identifier and sequence number for
    /// echo; the MTU for packet too big; the pointer for parameter
    /// problem; zero (unused) for the other errors.
    pub rest: [u8; 4],
}

impl Icmpv6Header {
    /// Length of the header in bytes.
    pub const LEN: usize = 8;

    /// An echo request with identifier `id` and sequence number `seq`
    /// (RFC 4443 §4.1).
    pub fn echo_request(id: u16, seq: u16) -> Self {
        Self::echo(icmpv6_type::ECHO_REQUEST, id, seq)
    }

    /// An echo reply with identifier `id` and sequence number `seq`
    /// (RFC 4443 §4.2); see also [`emit_echo_reply`].
    pub fn echo_reply(id: u16, seq: u16) -> Self {
        Self::echo(icmpv6_type::ECHO_REPLY, id, seq)
    }

    fn echo(icmp_type: u8, id: u16, seq: u16) -> Self {
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        Icmpv6Header {
            icmp_type,
            code: 0,
            checksum: 0,
            rest: [a, b, c, d],
        }
    }

    /// A destination unreachable message with `code` (see [`unreach_code`];
    /// RFC 4443 §3.1).
    pub fn dest_unreachable(code: u8) -> Self {
        Self::with_word(icmpv6_type::DEST_UNREACHABLE, code, 0)
    }

    /// A packet too big message announcing the next-hop `mtu` (RFC 4443
    /// §3.2).
    pub fn packet_too_big(mtu: u32) -> Self {
        Self::with_word(icmpv6_type::PACKET_TOO_BIG, 0, mtu)
    }

    /// A time exceeded message with `code` (see [`time_exceeded_code`];
    /// RFC 4443 §3.3).
    pub fn time_exceeded(code: u8) -> Self {
        Self::with_word(icmpv6_type::TIME_EXCEEDED, code, 0)
    }

    /// A parameter problem message with `code` (see
    /// [`param_problem_code`]) pointing at byte `pointer` of the offending
    /// packet, counted from the start of its IPv6 header (RFC 4443 §3.4).
    pub fn parameter_problem(code: u8, pointer: u32) -> Self {
        Self::with_word(icmpv6_type::PARAMETER_PROBLEM, code, pointer)
    }

    fn with_word(icmp_type: u8, code: u8, word: u32) -> Self {
        Icmpv6Header {
            icmp_type,
            code,
            checksum: 0,
            rest: word.to_be_bytes(),
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

    /// The MTU of a packet too big message (RFC 4443 §3.2).
    pub fn mtu(&self) -> u32 {
        u32::from_be_bytes(self.rest)
    }

    /// The pointer of a parameter problem message (RFC 4443 §3.4).
    pub fn pointer(&self) -> u32 {
        u32::from_be_bytes(self.rest)
    }

    /// Whether this is an error message ([`is_error`] of its type).
    pub fn is_error(&self) -> bool {
        is_error(self.icmp_type)
    }

    /// Parses the header of the whole ICMPv6 message `msg` (the upper-layer
    /// payload, exactly) sent from `src` to `dst`, and verifies the
    /// checksum over the pseudo-header and all of `msg` (RFC 4443 §2.3,
    /// RFC 8200 §8.1). The message's data is `&msg[Icmpv6Header::LEN..]`.
    ///
    /// What to do with an unknown type (RFC 4443 §2.4 (b), (d): pass an
    /// error up, drop an informational message) is the caller's decision.
    pub fn parse(msg: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<Self, Icmpv6Error> {
        if msg.len() < Self::LEN {
            return Err(Icmpv6Error::Truncated);
        }
        // No IPv6 packet is 4 GiB long; such a slice cannot be checked.
        let Ok(len) = u32::try_from(msg.len()) else {
            return Err(Icmpv6Error::BadChecksum);
        };
        let mut c = pseudo_header_v6(src, dst, next_header::ICMPV6, len);
        c.add_bytes(msg);
        if c.sum() != 0xffff {
            return Err(Icmpv6Error::BadChecksum);
        }
        Ok(Icmpv6Header {
            icmp_type: msg[0],
            code: msg[1],
            checksum: u16::from_be_bytes([msg[2], msg[3]]),
            rest: be32(msg, 4).to_be_bytes(),
        })
    }

    /// Writes the header at the start of `msg`, the whole message with its
    /// data already in place after the first 8 bytes, and fills the
    /// checksum over the pseudo-header for `src` to `dst` and all of
    /// `msg` (RFC 4443 §2.3). Returns `msg.len()`.
    ///
    /// Fails with [`EmitError::BufferTooSmall`] if `msg` is shorter than 8
    /// bytes and [`EmitError::TooLong`] if it is longer than 65535.
    pub fn emit(&self, msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<usize, EmitError> {
        let h = msg.get_mut(..Self::LEN).ok_or(EmitError::BufferTooSmall)?;
        h[0] = self.icmp_type;
        h[1] = self.code;
        h[4..8].copy_from_slice(&self.rest);
        fill_checksum(msg, src, dst)?;
        Ok(msg.len())
    }

    /// Writes error message `self` about `packet` (the offending packet as
    /// received, from the start of its IPv6 header) at the start of `msg`:
    /// this header, then the first [`error_quote_len`]`(packet.len())`
    /// bytes of `packet`, so that the error, behind a 40-byte IPv6 header,
    /// stays within the minimum MTU (RFC 4443 §2.4 (c)). Fills the checksum
    /// for `src` to `dst` and returns the message's length.
    ///
    /// Fails with [`EmitError::BufferTooSmall`] when `msg` cannot hold the
    /// message. Whether an error may be sent about `packet` at all (RFC
    /// 4443 §2.4 (e): not about an error, not to a multicast destination
    /// or from a multicast source...; (f): within the rate limit) is the
    /// caller's decision.
    pub fn emit_error(
        &self,
        packet: &[u8],
        msg: &mut [u8],
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) -> Result<usize, EmitError> {
        let quote = error_quote_len(packet.len());
        let len = Self::LEN + quote;
        let msg = msg.get_mut(..len).ok_or(EmitError::BufferTooSmall)?;
        if let (Some(to), Some(from)) = (msg.get_mut(Self::LEN..), packet.get(..quote)) {
            to.copy_from_slice(from);
        }
        self.emit(msg, src, dst)
    }
}

/// Fills the checksum of the whole ICMPv6 message `msg` sent from `src`
/// to `dst` in place (RFC 4443 §2.3), after its fields were written.
///
/// Fails with [`EmitError::BufferTooSmall`] if `msg` is shorter than 8
/// bytes and [`EmitError::TooLong`] if it is longer than 65535.
pub fn fill_checksum(msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<(), EmitError> {
    if msg.len() < Icmpv6Header::LEN {
        return Err(EmitError::BufferTooSmall);
    }
    let len = u16::try_from(msg.len()).map_err(|_| EmitError::TooLong)?;
    put16(msg, 2, 0);
    let mut c = pseudo_header_v6(src, dst, next_header::ICMPV6, u32::from(len));
    c.add_bytes(msg);
    put16(msg, 2, c.finish());
    Ok(())
}

/// Writes the echo reply to `request` (a whole echo request message, as
/// accepted by [`Icmpv6Header::parse`]) at the start of `msg`, from `src`
/// to `dst`: the same identifier, sequence number and data (RFC 4443
/// §4.2). Returns the reply's length, that of the request.
///
/// Fails with [`EmitError::BufferTooSmall`] if `msg` is shorter than
/// `request` or `request` is shorter than an ICMPv6 header, and with
/// [`EmitError::TooLong`] if it is longer than 65535 bytes. Which source
/// address answers a request sent to a multicast address is the caller's
/// choice (RFC 4443 §2.2).
pub fn emit_echo_reply(
    request: &[u8],
    msg: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> Result<usize, EmitError> {
    if request.len() < Icmpv6Header::LEN {
        return Err(EmitError::BufferTooSmall);
    }
    let m = msg
        .get_mut(..request.len())
        .ok_or(EmitError::BufferTooSmall)?;
    m.copy_from_slice(request);
    m[0] = icmpv6_type::ECHO_REPLY;
    m[1] = 0;
    fill_checksum(m, src, dst)?;
    Ok(m.len())
}

/// A token bucket limiting the rate of ICMPv6 error messages (RFC 4443
/// §2.4 (f)): up to `burst` messages at once, and one more every
/// `interval_ns` nanoseconds on average.
///
/// It reads no clock: the caller passes the time, from a monotonic clock,
/// to [`allow`](Self::allow). The bucket holds time credit, as Linux's
/// `inet_peer_xrlim_allow` does: each message costs `interval_ns`, and
/// credit accrues with elapsed time up to `burst × interval_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimiter {
    /// Time credit one message costs.
    interval_ns: u64,
    /// Most credit the bucket holds.
    capacity_ns: u64,
    /// Credit now.
    credit_ns: u64,
    /// When credit was last added.
    last_ns: u64,
}

impl RateLimiter {
    /// A full bucket at time `now_ns`: `burst` messages may go at once,
    /// then one per `interval_ns`. An `interval_ns` of 0 lets every
    /// message through; a `burst` of 0 (with an interval) none.
    pub fn new(interval_ns: u64, burst: u32, now_ns: u64) -> Self {
        let capacity_ns = interval_ns.saturating_mul(u64::from(burst));
        RateLimiter {
            interval_ns,
            capacity_ns,
            credit_ns: capacity_ns,
            last_ns: now_ns,
        }
    }

    /// Whether an error may be sent at time `now_ns`; if so, its cost is
    /// taken from the bucket (RFC 4443 §2.4 (f)). A time earlier than the
    /// last one seen adds no credit.
    pub fn allow(&mut self, now_ns: u64) -> bool {
        if now_ns > self.last_ns {
            let elapsed = now_ns - self.last_ns;
            self.credit_ns = self.credit_ns.saturating_add(elapsed).min(self.capacity_ns);
            self.last_ns = now_ns;
        }
        if self.credit_ns >= self.interval_ns {
            self.credit_ns -= self.interval_ns;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const B: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

    /// An echo request fe80::1 -> fe80::2, id 0x1234, seq 1, data
    /// "abcdefgh"; the checksum 0xdee5 was computed independently.
    const ECHO: [u8; 16] = [
        0x80, 0x00, 0xde, 0xe5, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];

    #[test]
    fn known_echo() {
        let h = Icmpv6Header::parse(&ECHO, A, B).unwrap();
        assert_eq!(h.icmp_type, icmpv6_type::ECHO_REQUEST);
        assert_eq!((h.code, h.checksum), (0, 0xdee5));
        assert_eq!((h.echo_id(), h.echo_seq()), (0x1234, 1));
        assert!(!h.is_error());
        // The checksum covers the addresses.
        assert_eq!(
            Icmpv6Header::parse(&ECHO, A, A),
            Err(Icmpv6Error::BadChecksum)
        );

        let mut m = ECHO;
        m[2..4].fill(0);
        assert_eq!(
            Icmpv6Header::echo_request(0x1234, 1).emit(&mut m, A, B),
            Ok(16)
        );
        assert_eq!(m, ECHO);
    }

    #[test]
    fn echo_reply() {
        let mut r = [0u8; 20];
        assert_eq!(emit_echo_reply(&ECHO, &mut r, B, A), Ok(16));
        let h = Icmpv6Header::parse(&r[..16], B, A).unwrap();
        assert_eq!(
            h,
            Icmpv6Header {
                checksum: h.checksum,
                ..Icmpv6Header::echo_reply(0x1234, 1)
            }
        );
        assert_eq!(&r[8..16], b"abcdefgh");
        // Type 128 -> 129 with the addresses swapped: the checksum drops by
        // 0x0100.
        assert_eq!(h.checksum, 0xdde5);
        assert_eq!(
            emit_echo_reply(&ECHO, &mut r[..15], B, A),
            Err(EmitError::BufferTooSmall)
        );
        assert_eq!(
            emit_echo_reply(&ECHO[..7], &mut r, B, A),
            Err(EmitError::BufferTooSmall)
        );
        let big = vec![0u8; 65536];
        assert_eq!(
            emit_echo_reply(&big, &mut vec![0u8; 65536], B, A),
            Err(EmitError::TooLong)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            Icmpv6Header::parse(&ECHO[..7], A, B),
            Err(Icmpv6Error::Truncated)
        );
        let mut b = ECHO;
        b[15] ^= 1;
        assert_eq!(Icmpv6Header::parse(&b, A, B), Err(Icmpv6Error::BadChecksum));
        assert_eq!(Icmpv6Error::BadChecksum.reason(), "bad_checksum");
        assert_eq!(
            Icmpv6Error::Truncated.to_string(),
            "ICMPv6 message shorter than its header"
        );
        let h = Icmpv6Header::echo_request(1, 1);
        assert_eq!(h.emit(&mut [0u8; 7], A, B), Err(EmitError::BufferTooSmall));
        assert_eq!(h.emit(&mut vec![0u8; 65536], A, B), Err(EmitError::TooLong));
        assert_eq!(
            fill_checksum(&mut [0u8; 4], A, B),
            Err(EmitError::BufferTooSmall)
        );
    }

    #[test]
    fn constructors() {
        let p = Icmpv6Header::packet_too_big(1280);
        assert_eq!((p.icmp_type, p.code, p.mtu()), (2, 0, 1280));
        let pp = Icmpv6Header::parameter_problem(param_problem_code::NEXT_HEADER, 40);
        assert_eq!((pp.icmp_type, pp.code, pp.pointer()), (4, 1, 40));
        assert_eq!(pp.rest, [0, 0, 0, 40]);
        let u = Icmpv6Header::dest_unreachable(unreach_code::PORT);
        assert_eq!((u.icmp_type, u.code, u.rest), (1, 4, [0; 4]));
        let t = Icmpv6Header::time_exceeded(time_exceeded_code::REASSEMBLY);
        assert_eq!((t.icmp_type, t.code), (3, 1));
        for h in [p, pp, u, t] {
            assert!(h.is_error());
        }
        for t in 0..=255u8 {
            assert_eq!(is_error(t), t <= 127, "type {t}");
        }
    }

    #[test]
    fn emit_error_quotes_the_packet() {
        let packet: Vec<u8> = (0..100u8).collect();
        let mut m = [0u8; 1500];
        let n = Icmpv6Header::dest_unreachable(unreach_code::PORT)
            .emit_error(&packet, &mut m, B, A)
            .unwrap();
        assert_eq!(n, 108);
        let h = Icmpv6Header::parse(&m[..n], B, A).unwrap();
        assert_eq!((h.icmp_type, h.code, h.rest), (1, 4, [0; 4]));
        assert_eq!(&m[8..n], &packet[..]);

        // A big packet is quoted until the error fills the minimum MTU.
        let big = vec![0x60u8; 1500];
        let n = Icmpv6Header::packet_too_big(1400)
            .emit_error(&big, &mut m, B, A)
            .unwrap();
        assert_eq!(n, ERROR_QUOTE_MAX + 8);
        assert_eq!(40 + n, 1280);
        assert!(Icmpv6Header::parse(&m[..n], B, A).is_ok());
        assert_eq!(error_quote_len(1232), 1232);
        assert_eq!(error_quote_len(1233), 1232);

        assert_eq!(
            Icmpv6Header::dest_unreachable(0).emit_error(&packet, &mut m[..107], B, A),
            Err(EmitError::BufferTooSmall)
        );
    }

    #[test]
    fn socket_errors_are_linuxs_icmpv6_err_convert() {
        use icmpv6_type::*;
        let e = |t, c| socket_error(t, c).map(|e| (e.errno, e.hard));
        let unreach = [
            (unreach_code::NO_ROUTE, libc::ENETUNREACH, false),
            (unreach_code::ADMIN_PROHIBITED, libc::EACCES, true),
            (unreach_code::BEYOND_SCOPE, libc::EHOSTUNREACH, false),
            (unreach_code::ADDRESS, libc::EHOSTUNREACH, false),
            (unreach_code::PORT, libc::ECONNREFUSED, true),
            (unreach_code::SOURCE_POLICY, libc::EACCES, true),
            (unreach_code::REJECT_ROUTE, libc::EACCES, true),
            (7, libc::EPROTO, true),
            (255, libc::EPROTO, true),
        ];
        for (code, errno, hard) in unreach {
            assert_eq!(
                e(DEST_UNREACHABLE, code),
                Some((errno, hard)),
                "code {code}"
            );
        }
        assert_eq!(e(PACKET_TOO_BIG, 0), Some((libc::EMSGSIZE, false)));
        for code in [
            time_exceeded_code::HOP_LIMIT,
            time_exceeded_code::REASSEMBLY,
        ] {
            assert_eq!(e(TIME_EXCEEDED, code), Some((libc::EHOSTUNREACH, false)));
        }
        for code in 0..=3 {
            assert_eq!(e(PARAMETER_PROBLEM, code), Some((libc::EPROTO, true)));
        }
        // An error type RFC 4443 does not define is still an error.
        assert_eq!(e(100, 0), Some((libc::EPROTO, false)));
        for t in [
            ECHO_REQUEST,
            ECHO_REPLY,
            NEIGHBOR_SOLICITATION,
            REDIRECT,
            255,
        ] {
            assert_eq!(e(t, 0), None, "type {t}");
        }
    }

    #[test]
    fn rate_limiter() {
        const MS: u64 = 1_000_000;
        // Burst of 3, then one every 100 ms.
        let mut r = RateLimiter::new(100 * MS, 3, 1000 * MS);
        assert!(r.allow(1000 * MS));
        assert!(r.allow(1000 * MS));
        assert!(r.allow(1000 * MS));
        assert!(!r.allow(1000 * MS));
        assert!(!r.allow(1099 * MS));
        assert!(r.allow(1100 * MS));
        assert!(!r.allow(1100 * MS));
        // Credit is capped at the burst.
        assert!(r.allow(9000 * MS));
        assert!(r.allow(9000 * MS));
        assert!(r.allow(9000 * MS));
        assert!(!r.allow(9000 * MS));
        // A clock going back adds nothing, and does not lose the last time.
        assert!(!r.allow(5000 * MS));
        assert!(r.allow(9100 * MS));

        let mut free = RateLimiter::new(0, 0, 0);
        assert!((0..100).all(|_| free.allow(0)));
        let mut closed = RateLimiter::new(MS, 0, 0);
        assert!(!closed.allow(0));
        assert!(!closed.allow(u64::MAX));
        let mut huge = RateLimiter::new(u64::MAX, u32::MAX, 0);
        assert!(huge.allow(0));
        assert!(!huge.allow(1));
        assert!(huge.allow(u64::MAX));
        assert!(!huge.allow(u64::MAX));
    }

    proptest! {
        #[test]
        fn round_trip(
            t in any::<u8>(), c in any::<u8>(), rest in any::<[u8; 4]>(),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
            data in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut m = vec![0u8; 8];
            m.extend_from_slice(&data);
            let h = Icmpv6Header { icmp_type: t, code: c, checksum: 0, rest };
            prop_assert_eq!(h.emit(&mut m, src, dst), Ok(8 + data.len()));
            let p = Icmpv6Header::parse(&m, src, dst).unwrap();
            prop_assert_eq!(p, Icmpv6Header { checksum: p.checksum, ..h });
            prop_assert_eq!(&m[8..], &data[..]);
        }

        #[test]
        fn parse_never_panics(
            b in proptest::collection::vec(any::<u8>(), 0..100),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
        ) {
            let _ = Icmpv6Header::parse(&b, Ipv6Addr::from(src), Ipv6Addr::from(dst));
        }

        #[test]
        fn emit_error_never_panics(
            packet in proptest::collection::vec(any::<u8>(), 0..1400),
            room in 0usize..1400,
        ) {
            let mut m = vec![0u8; room];
            match Icmpv6Header::time_exceeded(0).emit_error(&packet, &mut m, A, B) {
                Ok(n) => {
                    prop_assert_eq!(n, 8 + error_quote_len(packet.len()));
                    prop_assert!(n + 40 <= ERROR_MAX_LEN);
                    prop_assert!(Icmpv6Header::parse(&m[..n], A, B).is_ok());
                }
                Err(e) => {
                    prop_assert_eq!(e, EmitError::BufferTooSmall);
                    prop_assert!(room < 8 + error_quote_len(packet.len()));
                }
            }
        }

        #[test]
        fn socket_error_answers_exactly_the_errors(t in any::<u8>(), c in any::<u8>()) {
            prop_assert_eq!(socket_error(t, c).is_some(), is_error(t));
        }

        #[test]
        fn rate_limiter_bound(
            interval in 1u64..1000, burst in 0u32..10,
            steps in proptest::collection::vec(0u64..500, 1..200),
        ) {
            // Over any run, no more than the burst plus what the elapsed
            // time pays for goes through.
            let mut r = RateLimiter::new(interval, burst, 0);
            let mut now = 0;
            let mut sent = 0u64;
            for s in steps {
                now += s;
                if r.allow(now) {
                    sent += 1;
                }
                prop_assert!(sent <= u64::from(burst) + now / interval);
            }
        }
    }
}
