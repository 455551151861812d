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
//! Error messages (destination unreachable, time exceeded, parameter
//! problem) carry the offending datagram's IP header and at least 8 bytes
//! of its payload as data (RFC 792; RFC 1812 allows more, up to 576 bytes
//! in all).

use core::fmt;

use crate::checksum;
use crate::{put16, EmitError};

/// ICMP message types.
pub mod icmp_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (codes in [`unreach_code`](super::unreach_code)).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (codes in [`time_exceeded_code`](super::time_exceeded_code)).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// Codes of destination unreachable messages.
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
}

/// Codes of time exceeded messages.
pub mod time_exceeded_code {
    /// Time to live exceeded in transit.
    pub const TTL: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
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

    /// Whether this is an error message (destination unreachable, time
    /// exceeded, parameter problem), to which no ICMP error may be sent
    /// in turn (RFC 1122 §3.2.2).
    pub fn is_error(&self) -> bool {
        matches!(
            self.icmp_type,
            icmp_type::DEST_UNREACHABLE | icmp_type::TIME_EXCEEDED | icmp_type::PARAMETER_PROBLEM
        )
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

    proptest! {
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
