//! UDP (RFC 768) headers over IPv4 and IPv6 (RFC 8200 §8.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Length             |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          data ...
//! ```
//!
//! The checksum covers a pseudo-header of the IP layer (IPv4:
//! [`emit`](UdpHeader::emit), [`verify_checksum`](UdpHeader::verify_checksum);
//! IPv6: [`emit_v6`](UdpHeader::emit_v6),
//! [`verify_checksum_v6`](UdpHeader::verify_checksum_v6)), the UDP header
//! and the data. Over IPv4 a zero checksum field means the sender computed
//! none; over IPv6 the checksum is mandatory and a zero field is invalid
//! (RFC 8200 §8.1). Either way a computed checksum of zero is sent as
//! `0xffff`.

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum::{pseudo_header_v4, pseudo_header_v6, Checksum};
use crate::ipv4::protocol;
use crate::{be16, put16, EmitError};

/// Why a UDP header could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpError {
    /// Shorter than the 8-byte header.
    Truncated,
    /// The length field is below 8.
    BadLength,
    /// The length field is larger than the bytes received.
    LengthExceedsPacket,
    /// The checksum is wrong. Not returned by [`UdpHeader::parse`], which
    /// does not see the pseudo-header; for callers whose
    /// [`UdpHeader::verify_checksum`] failed, to count the drop by the same
    /// naming scheme.
    BadChecksum,
}

impl UdpError {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            UdpError::Truncated => "truncated",
            UdpError::BadLength => "bad_length",
            UdpError::LengthExceedsPacket => "length_exceeds_packet",
            UdpError::BadChecksum => "bad_checksum",
        }
    }
}

impl fmt::Display for UdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UdpError::Truncated => "UDP datagram shorter than its header",
            UdpError::BadLength => "UDP length below 8",
            UdpError::LengthExceedsPacket => "UDP length exceeds the packet",
            UdpError::BadChecksum => "UDP checksum mismatch",
        })
    }
}

impl std::error::Error for UdpError {}

/// A UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHeader {
    /// Source port (0 if the sender expects no reply).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Length of header plus data in bytes. [`emit`](UdpHeader::emit) sets
    /// it from the buffer.
    pub length: u16,
    /// Checksum as received (0: none). [`emit`](UdpHeader::emit) ignores it
    /// and computes a fresh one.
    pub checksum: u16,
}

impl UdpHeader {
    /// Length of the header in bytes.
    pub const LEN: usize = 8;

    /// Parses the header at the start of `b`, checking
    /// `8 <= length <= b.len()`.
    ///
    /// `b` may be longer than `length` (the IP payload can carry padding);
    /// the caller trims the datagram to `&b[..length as usize]` before
    /// [`verify_checksum`](Self::verify_checksum). The data is
    /// `&b[8..length as usize]`.
    pub fn parse(b: &[u8]) -> Result<Self, UdpError> {
        if b.len() < Self::LEN {
            return Err(UdpError::Truncated);
        }
        let length = be16(b, 4);
        if usize::from(length) < Self::LEN {
            return Err(UdpError::BadLength);
        }
        if usize::from(length) > b.len() {
            return Err(UdpError::LengthExceedsPacket);
        }
        Ok(UdpHeader {
            src_port: be16(b, 0),
            dst_port: be16(b, 2),
            length,
            checksum: be16(b, 6),
        })
    }

    /// Verifies the checksum of the whole datagram `d` (header and data,
    /// exactly `length` bytes) sent from `src` to `dst`. A zero checksum
    /// field means "no checksum" and is accepted. Returns `false` for a
    /// `d` shorter than 8 or longer than 65535 bytes.
    pub fn verify_checksum(d: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if d.len() < Self::LEN {
            return false;
        }
        if be16(d, 6) == 0 {
            return true;
        }
        let Ok(len) = u16::try_from(d.len()) else {
            return false;
        };
        let mut c = pseudo_header_v4(src, dst, protocol::UDP, len);
        c.add_bytes(d);
        c.sum() == 0xffff
    }

    /// Verifies the checksum of the whole datagram `d` (header and data,
    /// exactly `length` bytes) sent over IPv6 from `src` to `dst` (the
    /// final destination), with the IPv6 pseudo-header (RFC 8200 §8.1).
    /// A zero checksum field is invalid over IPv6 (RFC 8200 §8.1) and
    /// fails, as does a `d` shorter than 8 or longer than 65535 bytes (no
    /// jumbograms, RFC 2675).
    pub fn verify_checksum_v6(d: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if d.len() < Self::LEN || be16(d, 6) == 0 {
            return false;
        }
        let Ok(len) = u16::try_from(d.len()) else {
            return false;
        };
        let mut c = pseudo_header_v6(src, dst, protocol::UDP, u32::from(len));
        c.add_bytes(d);
        c.sum() == 0xffff
    }

    /// Writes the header at the start of `d`, the whole datagram with its
    /// data already in place after the first 8 bytes; sets the length field
    /// to `d.len()` and fills the checksum (a computed 0 is sent as
    /// `0xffff`). `self.length` and `self.checksum` are ignored.
    ///
    /// Fails with [`EmitError::BufferTooSmall`] if `d` is shorter than 8
    /// bytes and [`EmitError::TooLong`] if it is longer than 65535.
    pub fn emit(&self, d: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<(), EmitError> {
        self.emit_with(d, |len| pseudo_header_v4(src, dst, protocol::UDP, len))
    }

    /// As [`emit`](Self::emit), for a datagram sent over IPv6 from `src`
    /// to `dst` (the final destination): the checksum covers the IPv6
    /// pseudo-header (RFC 8200 §8.1), over the addresses as given (`::`
    /// included), and is never sent as zero (RFC 8200 §8.1: a computed 0
    /// goes as `0xffff`).
    ///
    /// Fails with [`EmitError::BufferTooSmall`] if `d` is shorter than 8
    /// bytes and [`EmitError::TooLong`] if it is longer than 65535 (no
    /// jumbograms, RFC 2675).
    pub fn emit_v6(&self, d: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<(), EmitError> {
        self.emit_with(d, |len| {
            pseudo_header_v6(src, dst, protocol::UDP, u32::from(len))
        })
    }

    /// Writes the header into `d` and the checksum over `pseudo(length)`
    /// and all of `d`.
    fn emit_with(
        &self,
        d: &mut [u8],
        pseudo: impl FnOnce(u16) -> Checksum,
    ) -> Result<(), EmitError> {
        if d.len() < Self::LEN {
            return Err(EmitError::BufferTooSmall);
        }
        let len = u16::try_from(d.len()).map_err(|_| EmitError::TooLong)?;
        put16(d, 0, self.src_port);
        put16(d, 2, self.dst_port);
        put16(d, 4, len);
        put16(d, 6, 0);
        let mut c = pseudo(len);
        c.add_bytes(d);
        let sum = match c.finish() {
            0 => 0xffff,
            s => s,
        };
        put16(d, 6, sum);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 199);

    /// A DNS-like datagram 192.168.0.1:53 -> 192.168.0.199:1024 with
    /// payload "hello"; the checksum 0x35b4 was computed independently:
    /// pseudo-header c0a8+0001+c0a8+00c7+0011+000d, header 0035+0400+000d,
    /// data 6865+6c6c+6f00 sum to 0xca4b.
    const DGRAM: [u8; 13] = [
        0x00, 0x35, 0x04, 0x00, 0x00, 0x0d, 0x35, 0xb4, b'h', b'e', b'l', b'l', b'o',
    ];

    #[test]
    fn known_datagram() {
        let h = UdpHeader::parse(&DGRAM).unwrap();
        assert_eq!(
            h,
            UdpHeader {
                src_port: 53,
                dst_port: 1024,
                length: 13,
                checksum: 0x35b4
            }
        );
        assert!(UdpHeader::verify_checksum(&DGRAM, SRC, DST));
        assert!(!UdpHeader::verify_checksum(
            &DGRAM,
            DST,
            Ipv4Addr::new(1, 2, 3, 4)
        ));
        let mut d = DGRAM;
        d[..8].fill(0);
        h.emit(&mut d, SRC, DST).unwrap();
        assert_eq!(d, DGRAM);
    }

    #[test]
    fn zero_checksum_accepted() {
        let mut d = DGRAM;
        d[6] = 0;
        d[7] = 0;
        assert!(UdpHeader::verify_checksum(&d, SRC, DST));
    }

    #[test]
    fn zero_becomes_ffff() {
        // Pick a source port that makes the computed checksum 0: bump the
        // port by the checksum's value so the sum becomes 0xffff.
        let base = UdpHeader::parse(&DGRAM).unwrap();
        let h = UdpHeader {
            src_port: base.src_port + 0x35b4,
            ..base
        };
        let mut d = DGRAM;
        h.emit(&mut d, SRC, DST).unwrap();
        assert_eq!(&d[6..8], &[0xff, 0xff]);
        assert!(UdpHeader::verify_checksum(&d, SRC, DST));
    }

    #[test]
    fn errors() {
        assert_eq!(UdpHeader::parse(&DGRAM[..7]), Err(UdpError::Truncated));
        let mut d = DGRAM;
        d[5] = 7;
        assert_eq!(UdpHeader::parse(&d), Err(UdpError::BadLength));
        assert_eq!(
            UdpHeader::parse(&DGRAM[..12]),
            Err(UdpError::LengthExceedsPacket)
        );
        // Longer buffer (padding) is fine.
        let mut padded = DGRAM.to_vec();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(UdpHeader::parse(&padded).unwrap().length, 13);
        let mut bad = DGRAM;
        bad[12] ^= 0x40;
        assert!(!UdpHeader::verify_checksum(&bad, SRC, DST));
        assert!(!UdpHeader::verify_checksum(&DGRAM[..7], SRC, DST));
        let h = UdpHeader::parse(&DGRAM).unwrap();
        assert_eq!(
            h.emit(&mut [0u8; 7], SRC, DST),
            Err(EmitError::BufferTooSmall)
        );
        assert_eq!(
            h.emit(&mut vec![0u8; 65536], SRC, DST),
            Err(EmitError::TooLong)
        );
        assert_eq!(
            UdpError::LengthExceedsPacket.reason(),
            "length_exceeds_packet"
        );
    }

    const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    /// The datagram of [`DGRAM`] over IPv6, 2001:db8::1 -> 2001:db8::2;
    /// the checksum 0x5c58 was computed independently (RFC 8200 §8.1
    /// pseudo-header: addresses, length 13 as 32 bits, next header 17).
    const DGRAM6: [u8; 13] = [
        0x00, 0x35, 0x04, 0x00, 0x00, 0x0d, 0x5c, 0x58, b'h', b'e', b'l', b'l', b'o',
    ];

    #[test]
    fn known_datagram_over_ipv6() {
        let h = UdpHeader::parse(&DGRAM6).unwrap();
        assert!(UdpHeader::verify_checksum_v6(&DGRAM6, SRC6, DST6));
        assert!(!UdpHeader::verify_checksum_v6(
            &DGRAM6,
            SRC6,
            Ipv6Addr::LOCALHOST
        ));
        let mut d = DGRAM6;
        d[..8].fill(0);
        h.emit_v6(&mut d, SRC6, DST6).unwrap();
        assert_eq!(d, DGRAM6);
        // From `::`, as udpd sends when ipd chooses the source: 0x8a12,
        // computed independently too.
        h.emit_v6(&mut d, Ipv6Addr::UNSPECIFIED, DST6).unwrap();
        assert_eq!(&d[6..8], &[0x8a, 0x12]);
        assert!(UdpHeader::verify_checksum_v6(
            &d,
            Ipv6Addr::UNSPECIFIED,
            DST6
        ));
    }

    #[test]
    fn over_ipv6_a_zero_checksum_is_invalid_and_never_sent() {
        // RFC 8200 §8.1: the field is never zero.
        let mut d = DGRAM6;
        d[6..8].fill(0);
        assert!(!UdpHeader::verify_checksum_v6(&d, SRC6, DST6));
        // A source port that makes the computed checksum 0 sends 0xffff.
        let base = UdpHeader::parse(&DGRAM6).unwrap();
        let h = UdpHeader {
            src_port: base.src_port + 0x5c58,
            ..base
        };
        h.emit_v6(&mut d, SRC6, DST6).unwrap();
        assert_eq!(&d[6..8], &[0xff, 0xff]);
        assert!(UdpHeader::verify_checksum_v6(&d, SRC6, DST6));
        assert!(!UdpHeader::verify_checksum_v6(&d[..7], SRC6, DST6));
        assert_eq!(
            h.emit_v6(&mut [0u8; 7], SRC6, DST6),
            Err(EmitError::BufferTooSmall)
        );
        assert_eq!(
            h.emit_v6(&mut vec![0u8; 65536], SRC6, DST6),
            Err(EmitError::TooLong)
        );
        assert!(!UdpHeader::verify_checksum_v6(
            &vec![1u8; 65536],
            SRC6,
            DST6
        ));
    }

    proptest! {
        #[test]
        fn round_trip(
            sp in any::<u16>(), dp in any::<u16>(),
            src in any::<u32>(), dst in any::<u32>(),
            data in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let mut d = vec![0u8; 8];
            d.extend_from_slice(&data);
            let h = UdpHeader { src_port: sp, dst_port: dp, length: 0, checksum: 0 };
            h.emit(&mut d, src, dst).unwrap();
            let p = UdpHeader::parse(&d).unwrap();
            prop_assert_eq!(p.src_port, sp);
            prop_assert_eq!(p.dst_port, dp);
            prop_assert_eq!(usize::from(p.length), d.len());
            prop_assert_ne!(p.checksum, 0);
            prop_assert!(UdpHeader::verify_checksum(&d, src, dst));
            prop_assert_eq!(&d[8..], &data[..]);
        }

        #[test]
        fn round_trip_v6(
            sp in any::<u16>(), dp in any::<u16>(),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
            data in proptest::collection::vec(any::<u8>(), 0..200),
            flip in any::<proptest::sample::Index>(),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut d = vec![0u8; 8];
            d.extend_from_slice(&data);
            let h = UdpHeader { src_port: sp, dst_port: dp, length: 0, checksum: 0 };
            h.emit_v6(&mut d, src, dst).unwrap();
            let p = UdpHeader::parse(&d).unwrap();
            prop_assert_eq!((p.src_port, p.dst_port), (sp, dp));
            prop_assert_eq!(usize::from(p.length), d.len());
            prop_assert_ne!(p.checksum, 0);
            prop_assert!(UdpHeader::verify_checksum_v6(&d, src, dst));
            prop_assert_eq!(&d[8..], &data[..]);
            // One bit changed anywhere is caught.
            let k = flip.index(d.len());
            d[k] ^= 0x10;
            prop_assert!(!UdpHeader::verify_checksum_v6(&d, src, dst));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(h) = UdpHeader::parse(&b) {
                prop_assert!(usize::from(h.length) <= b.len());
                let _ = UdpHeader::verify_checksum(&b[..usize::from(h.length)],
                    Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
            }
            let _ = UdpHeader::verify_checksum(&b, Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST);
            let _ = UdpHeader::verify_checksum_v6(&b, Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        }
    }
}
