//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum is the 16-bit one's complement of the one's complement sum
//! of the data taken as big-endian 16-bit words, an odd final byte padded
//! with a zero byte. The value returned by [`checksum`] and
//! [`Checksum::finish`] is ready to be stored big-endian into the header's
//! checksum field (which must be zero while the sum is taken).
//!
//! A receiver checks a message by summing it *including* its checksum field:
//! the sum of correct data is `0xffff` ([`verify`]).
//!
//! ```
//! use strata_proto::checksum::{checksum, verify};
//! let mut hdr = [0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01,
//!                0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02];
//! let c = checksum(&hdr);
//! hdr[10..12].copy_from_slice(&c.to_be_bytes());
//! assert!(verify(&hdr));
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

/// A running one's complement sum, for checksums over data that is not
/// contiguous (a pseudo-header, then a header, then a payload).
///
/// Bytes are summed as if all the chunks given to
/// [`add_bytes`](Self::add_bytes) were concatenated, so chunks may have odd
/// lengths: a trailing odd byte is held back and paired with the first byte
/// of the next chunk.
///
/// ```
/// use strata_proto::checksum::{checksum, Checksum};
/// let data = [1u8, 2, 3, 4, 5, 6, 7];
/// let mut c = Checksum::new();
/// c.add_bytes(&data[..3]);
/// c.add_bytes(&data[3..]);
/// assert_eq!(c.finish(), checksum(&data));
/// ```
#[derive(Clone, Copy, Default, Debug)]
pub struct Checksum {
    /// Unfolded sum of 32-bit big-endian words (and 16-bit ones). A `u64`
    /// cannot overflow before 2^32 words, far beyond any packet.
    sum: u64,
    /// The high byte of a half-filled 16-bit word left by an odd-length
    /// chunk, waiting for its low byte.
    odd: Option<u8>,
}

impl Checksum {
    /// An empty sum.
    pub fn new() -> Self {
        Checksum { sum: 0, odd: None }
    }

    /// Adds bytes that follow everything added so far.
    pub fn add_bytes(&mut self, b: &[u8]) {
        let mut b = b;
        if let Some(hi) = self.odd.take() {
            match b.split_first() {
                Some((&lo, rest)) => {
                    self.sum += u64::from(u16::from_be_bytes([hi, lo]));
                    b = rest;
                }
                None => {
                    self.odd = Some(hi);
                    return;
                }
            }
        }
        // Summing big-endian 32-bit words gives the same one's complement
        // sum as summing their two 16-bit halves, since 2^16 = 1 (mod 2^16-1).
        let mut words = b.chunks_exact(4);
        let mut sum = self.sum;
        for w in &mut words {
            sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        }
        let rest = words.remainder();
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
        }
        if let Some(&last) = pairs.remainder().first() {
            self.odd = Some(last);
        }
        self.sum = sum;
    }

    /// Adds a 16-bit word (in host order; it is summed as its big-endian
    /// bytes would be).
    pub fn add_u16(&mut self, v: u16) {
        if self.odd.is_some() {
            self.add_bytes(&v.to_be_bytes());
        } else {
            self.sum += u64::from(v);
        }
    }

    /// Adds a 32-bit word (in host order; it is summed as its big-endian
    /// bytes would be).
    pub fn add_u32(&mut self, v: u32) {
        if self.odd.is_some() {
            self.add_bytes(&v.to_be_bytes());
        } else {
            self.sum += u64::from(v);
        }
    }

    /// The folded one's complement sum, *not* complemented.
    ///
    /// This is what a device doing checksum offload expects in the checksum
    /// field (the pseudo-header sum, for virtio-net `NEEDS_CSUM`), and what
    /// [`verify`] compares with `0xffff`.
    pub fn sum(self) -> u16 {
        let mut s = self.sum;
        if let Some(hi) = self.odd {
            s += u64::from(hi) << 8;
        }
        fold(s)
    }

    /// The checksum: the complemented folded sum, ready to store big-endian.
    pub fn finish(self) -> u16 {
        !self.sum()
    }
}

/// Folds a wide sum into 16 bits with end-around carry.
#[inline]
fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The Internet checksum of `data`, ready to store big-endian.
///
/// The checksum field inside `data`, if any, must be zero.
pub fn checksum(data: &[u8]) -> u16 {
    let mut c = Checksum::new();
    c.add_bytes(data);
    c.finish()
}

/// Whether `data`, checksum field included, sums to `0xffff`, i.e. whether
/// its checksum is correct.
pub fn verify(data: &[u8]) -> bool {
    let mut c = Checksum::new();
    c.add_bytes(data);
    c.sum() == 0xffff
}

/// A [`Checksum`] primed with the IPv4 pseudo-header used by UDP and TCP
/// (RFC 768, RFC 793): source, destination, zero, protocol, and `len`, the
/// length of the UDP datagram or TCP segment (header plus payload).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> Checksum {
    let mut c = Checksum::new();
    c.add_u32(u32::from(src));
    c.add_u32(u32::from(dst));
    c.add_u16(u16::from(protocol));
    c.add_u16(len);
    c
}

/// A [`Checksum`] primed with the IPv6 pseudo-header used by upper-layer
/// checksums over IPv6 (RFC 8200 §8.1): source, destination, `len` (the
/// upper-layer packet length, header plus data) as 32 bits, three zero
/// bytes, and `next_header`, the upper-layer protocol (58 for ICMPv6).
///
/// `dst` is the final destination: with a routing header it is the last
/// address of that header, not the one in the IPv6 header.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> Checksum {
    let mut c = Checksum::new();
    c.add_bytes(&src.octets());
    c.add_bytes(&dst.octets());
    c.add_u32(len);
    c.add_u32(u32::from(next_header));
    c
}

/// Updates checksum `old_csum` for a 16-bit field of the covered data that
/// changed from `old` to `new`, without summing the data again
/// (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
///
/// The result equals a full recomputation whenever the updated data is not
/// all zeros (for all-zero data a full recomputation yields `0xffff`, this
/// yields the equivalent `0x0000`).
///
/// For UDP, where a zero checksum means "no checksum", the caller must leave
/// a zero checksum alone and store a computed zero as `0xffff`.
pub fn update_u16(old_csum: u16, old: u16, new: u16) -> u16 {
    let s = u64::from(!old_csum) + u64::from(!old) + u64::from(new);
    !fold(s)
}

/// Like [`update_u16`] for a 32-bit field (an address, a sequence number)
/// that changed from `old` to `new`.
pub fn update_u32(old_csum: u16, old: u32, new: u32) -> u16 {
    let s = u64::from(!old_csum)
        + u64::from(!(old >> 16) as u16)
        + u64::from(!(old as u16))
        + u64::from((new >> 16) as u16)
        + u64::from(new as u16);
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: word-at-a-time 16-bit sum as in RFC 1071 §4.1.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            sum += u32::from(data[i]) << 8 | u32::from(data[i + 1]);
            i += 2;
        }
        if i < data.len() {
            sum += u32::from(data[i]) << 8;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        let mut c = Checksum::new();
        c.add_bytes(&data);
        assert_eq!(c.sum(), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic example header (checksum 0xb861).
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verify(&hdr));
        let mut zeroed = hdr;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0xb861);
    }

    #[test]
    fn empty_and_odd() {
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&[0x12]), !0x1200);
        assert_eq!(checksum(&[0x12, 0x34, 0x56]), !(0x1234 + 0x5600));
    }

    #[test]
    fn odd_byte_then_words() {
        let mut c = Checksum::new();
        c.add_bytes(&[0xab]);
        c.add_u16(0xcdef);
        c.add_u32(0x0102_0304);
        c.add_bytes(&[]);
        c.add_bytes(&[0x05]);
        assert_eq!(
            c.finish(),
            checksum(&[0xab, 0xcd, 0xef, 0x01, 0x02, 0x03, 0x04, 0x05])
        );
    }

    #[test]
    fn pseudo_header() {
        let c = pseudo_header_v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            17,
            8,
        );
        assert_eq!(
            c.finish(),
            checksum(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 8])
        );
    }

    #[test]
    fn pseudo_header_ipv6() {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1:ff00:2".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&[0, 1, 0, 32, 0, 0, 0, 58]);
        let c = pseudo_header_v6(src, dst, 58, 0x0001_0020);
        assert_eq!(c.finish(), checksum(&bytes));
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives 0x0000.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    proptest! {
        #[test]
        fn matches_reference(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn chunked_equals_whole(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
            points.sort_unstable();
            let mut c = Checksum::new();
            let mut start = 0;
            for p in points {
                c.add_bytes(&data[start..p]);
                start = p;
            }
            c.add_bytes(&data[start..]);
            prop_assert_eq!(c.finish(), checksum(&data));
        }

        #[test]
        fn verify_after_fill(mut data in proptest::collection::vec(any::<u8>(), 2..300)) {
            data[0] = 0;
            data[1] = 0;
            let c = checksum(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            prop_assert!(verify(&data));
        }

        #[test]
        fn incremental_u16_equals_recompute(
            mut data in proptest::collection::vec(any::<u16>(), 2..40),
            idx in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            // Word 0 holds the checksum; some other word changes.
            data[0] = 0;
            let i = 1 + idx.index(data.len() - 1);
            let bytes = |d: &[u16]| d.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
            let old_csum = checksum(&bytes(&data));
            let old = data[i];
            data[i] = new;
            prop_assume!(data.iter().any(|&w| w != 0));
            prop_assert_eq!(update_u16(old_csum, old, new), checksum(&bytes(&data)));
        }

        #[test]
        fn incremental_u32_equals_recompute(
            mut data in proptest::collection::vec(any::<u16>(), 3..40),
            idx in any::<prop::sample::Index>(),
            new in any::<u32>(),
        ) {
            data[0] = 0;
            let i = 1 + idx.index(data.len() - 2);
            let bytes = |d: &[u16]| d.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
            let old_csum = checksum(&bytes(&data));
            let old = u32::from(data[i]) << 16 | u32::from(data[i + 1]);
            data[i] = (new >> 16) as u16;
            data[i + 1] = new as u16;
            prop_assume!(data.iter().any(|&w| w != 0));
            prop_assert_eq!(update_u32(old_csum, old, new), checksum(&bytes(&data)));
        }
    }
}
