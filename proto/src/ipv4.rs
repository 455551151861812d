//! IPv4 headers (RFC 791, with the receive checks of RFC 1122 §3.2.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (0..40 bytes)                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`Ipv4Header::parse`] validates a received header; options are checked
//! for well-formedness and otherwise skipped (the stack acts on none of
//! them; [`options`] lets a caller look at them). [`Ipv4Header::emit`]
//! writes an option-less header. [`fill_checksum`] and [`decrement_ttl`]
//! edit a header in place, for forwarding and NAT.

use core::fmt;
use std::net::Ipv4Addr;

use crate::checksum::{self, update_u16};
use crate::{be16, put16, EmitError};

/// IP protocol numbers of the payloads the stack handles.
pub mod protocol {
    /// Internet Control Message Protocol.
    pub const ICMP: u8 = 1;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
}

/// IPv4 option kinds (the "option type" octet, copy flag included).
pub mod option_kind {
    /// End of option list.
    pub const EOL: u8 = 0;
    /// No operation (padding).
    pub const NOP: u8 = 1;
    /// Record route.
    pub const RECORD_ROUTE: u8 = 7;
    /// Internet timestamp.
    pub const TIMESTAMP: u8 = 68;
    /// Loose source and record route.
    pub const LSRR: u8 = 131;
    /// Strict source and record route.
    pub const SSRR: u8 = 137;
    /// Router alert (RFC 2113).
    pub const ROUTER_ALERT: u8 = 148;
}

/// Why an IPv4 header could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Error {
    /// Shorter than 20 bytes, or shorter than the header length says.
    Truncated,
    /// The version field is not 4.
    BadVersion,
    /// The IHL field is below 5 (a header is at least 20 bytes).
    BadHeaderLen,
    /// The total length is smaller than the header length.
    BadTotalLen,
    /// The total length is larger than the bytes received.
    TotalLenExceedsFrame,
    /// The header checksum is wrong.
    BadChecksum,
    /// An option's length runs past the header or is below 2.
    BadOptions,
}

impl Ipv4Error {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            Ipv4Error::Truncated => "truncated",
            Ipv4Error::BadVersion => "bad_version",
            Ipv4Error::BadHeaderLen => "bad_header_len",
            Ipv4Error::BadTotalLen => "bad_total_len",
            Ipv4Error::TotalLenExceedsFrame => "total_len_exceeds_frame",
            Ipv4Error::BadChecksum => "bad_checksum",
            Ipv4Error::BadOptions => "bad_options",
        }
    }
}

impl fmt::Display for Ipv4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ipv4Error::Truncated => "IPv4 header truncated",
            Ipv4Error::BadVersion => "IP version is not 4",
            Ipv4Error::BadHeaderLen => "IPv4 header length below 20 bytes",
            Ipv4Error::BadTotalLen => "IPv4 total length below header length",
            Ipv4Error::TotalLenExceedsFrame => "IPv4 total length exceeds the frame",
            Ipv4Error::BadChecksum => "IPv4 header checksum mismatch",
            Ipv4Error::BadOptions => "malformed IPv4 options",
        })
    }
}

impl std::error::Error for Ipv4Error {}

/// Flag bit: don't fragment (in the flags/fragment-offset word).
const FLAG_DF: u16 = 0x4000;
/// Flag bit: more fragments.
const FLAG_MF: u16 = 0x2000;
/// Mask of the fragment offset (in 8-byte units).
const FRAG_MASK: u16 = 0x1fff;

/// An IPv4 header.
///
/// Options are not held here: [`Ipv4Header::parse`] checks and skips them,
/// and [`options`] iterates over them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Header length in bytes, options included (20..=60, a multiple of 4).
    /// [`emit`](Self::emit) ignores it and always writes 20.
    pub header_len: u8,
    /// Type of service / DSCP and ECN byte.
    pub tos: u8,
    /// Length of the datagram (header plus payload) in bytes.
    pub total_len: u16,
    /// Identification, shared by the fragments of one datagram.
    pub ident: u16,
    /// The DF (don't fragment) flag.
    pub dont_frag: bool,
    /// The MF (more fragments) flag.
    pub more_frags: bool,
    /// Offset of this fragment's payload in the original datagram, in
    /// **bytes** (the wire field times 8, so always a multiple of 8).
    pub frag_offset: u16,
    /// Time to live.
    pub ttl: u8,
    /// Protocol of the payload (see [`protocol`]).
    pub protocol: u8,
    /// Header checksum as received. [`emit`](Self::emit) ignores it and
    /// computes a fresh one.
    pub checksum: u16,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
}

impl Ipv4Header {
    /// Length of a header without options.
    pub const MIN_LEN: usize = 20;
    /// Length of a header with the most options (IHL 15).
    pub const MAX_LEN: usize = 60;

    /// Parses and validates the header at the start of `b`.
    ///
    /// The checks run in this order (RFC 791, RFC 1122 §3.2.1):
    /// fewer than 20 bytes: [`Truncated`](Ipv4Error::Truncated);
    /// version not 4: [`BadVersion`](Ipv4Error::BadVersion);
    /// IHL below 5: [`BadHeaderLen`](Ipv4Error::BadHeaderLen);
    /// fewer bytes than IHL × 4: [`Truncated`](Ipv4Error::Truncated);
    /// total length below the header length:
    /// [`BadTotalLen`](Ipv4Error::BadTotalLen);
    /// total length above `b.len()`:
    /// [`TotalLenExceedsFrame`](Ipv4Error::TotalLenExceedsFrame);
    /// wrong header checksum: [`BadChecksum`](Ipv4Error::BadChecksum);
    /// malformed options: [`BadOptions`](Ipv4Error::BadOptions).
    ///
    /// `b` may be longer than the total length (Ethernet pads short frames
    /// to 60 bytes): the caller trims the packet to
    /// `&b[..total_len as usize]`; the payload is
    /// `&b[header_len as usize..total_len as usize]`.
    ///
    /// Address checks (martian sources, broadcast) and fragment-offset
    /// limits are the caller's business.
    pub fn parse(b: &[u8]) -> Result<Self, Ipv4Error> {
        if b.len() < Self::MIN_LEN {
            return Err(Ipv4Error::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Ipv4Error::BadVersion);
        }
        let ihl = b[0] & 0x0f;
        if ihl < 5 {
            return Err(Ipv4Error::BadHeaderLen);
        }
        let header_len = usize::from(ihl) * 4;
        if header_len > b.len() {
            return Err(Ipv4Error::Truncated);
        }
        let total_len = be16(b, 2);
        if usize::from(total_len) < header_len {
            return Err(Ipv4Error::BadTotalLen);
        }
        if usize::from(total_len) > b.len() {
            return Err(Ipv4Error::TotalLenExceedsFrame);
        }
        let header = &b[..header_len];
        if !checksum::verify(header) {
            return Err(Ipv4Error::BadChecksum);
        }
        for o in options(header) {
            o?;
        }
        let frag = be16(b, 6);
        Ok(Ipv4Header {
            header_len: header_len as u8,
            tos: b[1],
            total_len,
            ident: be16(b, 4),
            dont_frag: frag & FLAG_DF != 0,
            more_frags: frag & FLAG_MF != 0,
            frag_offset: (frag & FRAG_MASK) << 3,
            ttl: b[8],
            protocol: b[9],
            checksum: be16(b, 10),
            src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
            dst: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        })
    }

    /// Writes a 20-byte header without options into the start of `b`, with
    /// a freshly computed checksum, and returns 20.
    ///
    /// `header_len` and `checksum` are ignored. `total_len` is written as
    /// it is (it must count these 20 bytes). `frag_offset` is in bytes; its
    /// low three bits are dropped, and offsets of 65536 bytes and more cannot
    /// be expressed.
    pub fn emit(&self, b: &mut [u8]) -> Result<usize, EmitError> {
        let h = b
            .get_mut(..Self::MIN_LEN)
            .ok_or(EmitError::BufferTooSmall)?;
        h[0] = 0x45;
        h[1] = self.tos;
        put16(h, 2, self.total_len);
        put16(h, 4, self.ident);
        let mut frag = (self.frag_offset >> 3) & FRAG_MASK;
        if self.dont_frag {
            frag |= FLAG_DF;
        }
        if self.more_frags {
            frag |= FLAG_MF;
        }
        put16(h, 6, frag);
        h[8] = self.ttl;
        h[9] = self.protocol;
        put16(h, 10, 0);
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(h);
        put16(h, 10, c);
        Ok(Self::MIN_LEN)
    }

    /// Whether this is a fragment (not a whole datagram): MF is set or the
    /// offset is not zero.
    pub fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }

    /// Length of the payload: total length minus header length (0 if the
    /// fields are inconsistent, which `parse` never returns).
    pub fn payload_len(&self) -> usize {
        usize::from(self.total_len).saturating_sub(usize::from(self.header_len))
    }
}

/// Iterator over the options of an IPv4 header; see [`options`].
#[derive(Clone, Debug)]
pub struct Ipv4Options<'a> {
    /// The option bytes still to be read.
    rest: &'a [u8],
    /// An error to yield before anything else (a bad header).
    pending: Option<Ipv4Error>,
}

/// Iterates over the options of the IPv4 header at the start of `header`
/// (which may be the whole packet: only the IHL × 4 header bytes are read).
///
/// Yields `Ok((kind, data))` for each option other than NOP and EOL, where
/// `data` is the option's bytes after its kind and length octets; stops at
/// EOL or at the end of the header. On malformed input it yields one
/// `Err` and then stops:
/// [`Ipv4Error::Truncated`] if `header` is shorter than 20 bytes or than
/// IHL × 4, [`Ipv4Error::BadHeaderLen`] if IHL is below 5, and
/// [`Ipv4Error::BadOptions`] for an option whose length octet is missing,
/// below 2 or runs past the header. It never panics, whatever the bytes.
///
/// ```
/// use strata_proto::ipv4::{options, option_kind};
/// let mut h = [0u8; 24];
/// h[0] = 0x46; // version 4, IHL 6
/// h[20..24].copy_from_slice(&[option_kind::ROUTER_ALERT, 4, 0, 0]);
/// let opts: Vec<_> = options(&h).collect();
/// assert_eq!(opts, vec![Ok((option_kind::ROUTER_ALERT, &[0u8, 0][..]))]);
/// ```
pub fn options(header: &[u8]) -> Ipv4Options<'_> {
    let mut it = Ipv4Options {
        rest: &[],
        pending: None,
    };
    match header.first() {
        _ if header.len() < Ipv4Header::MIN_LEN => it.pending = Some(Ipv4Error::Truncated),
        Some(&b0) if b0 & 0x0f < 5 => it.pending = Some(Ipv4Error::BadHeaderLen),
        Some(&b0) => match header.get(Ipv4Header::MIN_LEN..usize::from(b0 & 0x0f) * 4) {
            Some(rest) => it.rest = rest,
            None => it.pending = Some(Ipv4Error::Truncated),
        },
        None => it.pending = Some(Ipv4Error::Truncated),
    }
    it
}

impl<'a> Iterator for Ipv4Options<'a> {
    type Item = Result<(u8, &'a [u8]), Ipv4Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            self.rest = &[];
            return Some(Err(e));
        }
        loop {
            let (&kind, after) = self.rest.split_first()?;
            match kind {
                option_kind::EOL => {
                    self.rest = &[];
                    return None;
                }
                option_kind::NOP => self.rest = after,
                _ => {
                    let len = match after.first() {
                        Some(&l) if l >= 2 && usize::from(l) <= self.rest.len() => usize::from(l),
                        _ => {
                            self.rest = &[];
                            return Some(Err(Ipv4Error::BadOptions));
                        }
                    };
                    let (opt, rest) = self.rest.split_at(len);
                    self.rest = rest;
                    return Some(Ok((kind, &opt[2..])));
                }
            }
        }
    }
}

impl core::iter::FusedIterator for Ipv4Options<'_> {}

/// Recomputes the header checksum of the IPv4 header at the start of
/// `header` in place, after fields were changed (TTL, total length, flags,
/// addresses). Options are covered; bytes past IHL × 4 are not touched.
///
/// Does nothing if `header` is shorter than 20 bytes or than its IHL says,
/// or if the IHL is below 5.
pub fn fill_checksum(header: &mut [u8]) {
    let hl = match header.first() {
        Some(&b0) => usize::from(b0 & 0x0f) * 4,
        None => return,
    };
    if hl < Ipv4Header::MIN_LEN {
        return;
    }
    if let Some(h) = header.get_mut(..hl) {
        put16(h, 10, 0);
        let c = checksum::checksum(h);
        put16(h, 10, c);
    }
}

/// Decrements the TTL of the IPv4 header at the start of `header` and
/// updates its checksum incrementally (RFC 1624), as a router does when
/// forwarding. Returns the new TTL, or `None` (changing nothing) if
/// `header` is shorter than 20 bytes or the TTL is already 0.
///
/// A router must not forward a packet whose new TTL is 0: it sends ICMP
/// time exceeded instead.
pub fn decrement_ttl(header: &mut [u8]) -> Option<u8> {
    if header.len() < Ipv4Header::MIN_LEN || header[8] == 0 {
        return None;
    }
    let old_word = be16(header, 8);
    header[8] -= 1;
    let new_word = be16(header, 8);
    let c = update_u16(be16(header, 10), old_word, new_word);
    put16(header, 10, c);
    Some(header[8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 192.168.0.1 -> 192.168.0.199, UDP, total length 115, DF, TTL 64,
    /// checksum 0xb861 (the well-known worked example).
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn packet(hdr: &[u8], total: usize) -> Vec<u8> {
        let mut p = hdr.to_vec();
        p.resize(total, 0xaa);
        p
    }

    #[test]
    fn known_header() {
        let p = packet(&HDR, 115);
        let h = Ipv4Header::parse(&p).unwrap();
        assert_eq!(
            h,
            Ipv4Header {
                header_len: 20,
                tos: 0,
                total_len: 115,
                ident: 0,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
                ttl: 64,
                protocol: protocol::UDP,
                checksum: 0xb861,
                src: Ipv4Addr::new(192, 168, 0, 1),
                dst: Ipv4Addr::new(192, 168, 0, 199),
            }
        );
        assert!(!h.is_fragment());
        assert_eq!(h.payload_len(), 95);
        let mut out = [0u8; 20];
        assert_eq!(h.emit(&mut out), Ok(20));
        assert_eq!(out, HDR);
        assert_eq!(options(&p).count(), 0);
    }

    #[test]
    fn padding_accepted() {
        // total_len 20 inside a 46-byte (padded) frame payload.
        let mut h = HDR;
        h[2] = 0;
        h[3] = 20;
        fill_checksum(&mut h);
        let p = packet(&h, 46);
        assert_eq!(Ipv4Header::parse(&p).unwrap().total_len, 20);
    }

    #[test]
    fn error_order() {
        let p = packet(&HDR, 115);
        assert_eq!(Ipv4Header::parse(&p[..19]), Err(Ipv4Error::Truncated));

        let mut b = p.clone();
        b[0] = 0x65;
        assert_eq!(Ipv4Header::parse(&b), Err(Ipv4Error::BadVersion));

        let mut b = p.clone();
        b[0] = 0x44;
        assert_eq!(Ipv4Header::parse(&b), Err(Ipv4Error::BadHeaderLen));

        let mut b = p[..40].to_vec();
        b[0] = 0x4f; // 60-byte header in 40 bytes
        assert_eq!(Ipv4Header::parse(&b), Err(Ipv4Error::Truncated));

        let mut b = p.clone();
        b[3] = 19;
        assert_eq!(Ipv4Header::parse(&b), Err(Ipv4Error::BadTotalLen));

        assert_eq!(
            Ipv4Header::parse(&p[..114]),
            Err(Ipv4Error::TotalLenExceedsFrame)
        );

        let mut b = p.clone();
        b[8] = 63;
        assert_eq!(Ipv4Header::parse(&b), Err(Ipv4Error::BadChecksum));

        // IHL 6 with an option whose length runs past the header.
        let mut b = p.clone();
        b[0] = 0x46;
        b[20..24].copy_from_slice(&[option_kind::RECORD_ROUTE, 7, 4, 0]);
        fill_checksum(&mut b);
        assert_eq!(Ipv4Header::parse(&b), Err(Ipv4Error::BadOptions));
        assert_eq!(Ipv4Error::BadOptions.reason(), "bad_options");
        assert_eq!(
            Ipv4Error::TotalLenExceedsFrame.reason(),
            "total_len_exceeds_frame"
        );
    }

    #[test]
    fn options_walk() {
        let mut b = packet(&HDR, 115);
        b[0] = 0x48; // 32-byte header: 12 bytes of options
        b[20..32].copy_from_slice(&[
            option_kind::NOP,
            option_kind::ROUTER_ALERT,
            4,
            0,
            0,
            option_kind::RECORD_ROUTE,
            3,
            4,
            option_kind::EOL,
            0xff, // garbage after EOL is ignored
            0x00,
            0x33,
        ]);
        fill_checksum(&mut b);
        let h = Ipv4Header::parse(&b).unwrap();
        assert_eq!(h.header_len, 32);
        let got: Vec<_> = options(&b).collect();
        assert_eq!(
            got,
            vec![
                Ok((option_kind::ROUTER_ALERT, &[0u8, 0][..])),
                Ok((option_kind::RECORD_ROUTE, &[4u8][..])),
            ]
        );
    }

    #[test]
    fn options_malformed() {
        let mut h = [0u8; 24];
        h[0] = 0x46;
        // Length octet missing.
        h[20..24].copy_from_slice(&[1, 1, 1, 7]);
        assert_eq!(
            options(&h).collect::<Vec<_>>(),
            vec![Err(Ipv4Error::BadOptions)]
        );
        // Length below 2.
        h[20..24].copy_from_slice(&[7, 1, 0, 0]);
        assert_eq!(
            options(&h).collect::<Vec<_>>(),
            vec![Err(Ipv4Error::BadOptions)]
        );
        // Exactly filling the option space is fine.
        h[20..24].copy_from_slice(&[7, 4, 9, 9]);
        assert_eq!(
            options(&h).collect::<Vec<_>>(),
            vec![Ok((7, &[9u8, 9][..]))]
        );
        // Bad headers.
        assert_eq!(
            options(&h[..10]).collect::<Vec<_>>(),
            vec![Err(Ipv4Error::Truncated)]
        );
        assert_eq!(
            options(&h[..22]).collect::<Vec<_>>(),
            vec![Err(Ipv4Error::Truncated)]
        );
        h[0] = 0x43;
        assert_eq!(
            options(&h).collect::<Vec<_>>(),
            vec![Err(Ipv4Error::BadHeaderLen)]
        );
        assert_eq!(
            options(&[]).collect::<Vec<_>>(),
            vec![Err(Ipv4Error::Truncated)]
        );
    }

    #[test]
    fn fragments() {
        let mut b = HDR;
        b[6] = 0x20 | 0x01; // MF, offset 256 units
        b[7] = 0x00;
        fill_checksum(&mut b);
        let p = packet(&b, 115);
        let h = Ipv4Header::parse(&p).unwrap();
        assert!(h.more_frags && !h.dont_frag);
        assert_eq!(h.frag_offset, 256 * 8);
        assert!(h.is_fragment());
        let mut out = [0u8; 20];
        h.emit(&mut out).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn emit_small_buffer() {
        let h = Ipv4Header::parse(&packet(&HDR, 115)).unwrap();
        assert_eq!(h.emit(&mut [0u8; 19]), Err(EmitError::BufferTooSmall));
    }

    #[test]
    fn fill_checksum_edge_cases() {
        fill_checksum(&mut []);
        let mut short = [0x45u8; 10];
        fill_checksum(&mut short);
        assert_eq!(short, [0x45u8; 10]);
        let mut b = HDR;
        b[10] = 0x12;
        b[11] = 0x34;
        fill_checksum(&mut b);
        assert_eq!(b, HDR);
    }

    #[test]
    fn ttl_decrement() {
        let mut b = HDR;
        assert_eq!(decrement_ttl(&mut b), Some(63));
        assert!(checksum::verify(&b));
        let mut z = HDR;
        z[8] = 0;
        fill_checksum(&mut z);
        let before = z;
        assert_eq!(decrement_ttl(&mut z), None);
        assert_eq!(z, before);
        assert_eq!(decrement_ttl(&mut [0u8; 5]), None);
    }

    prop_compose! {
        fn arb_header()(
            tos in any::<u8>(), payload in 0u16..2000, ident in any::<u16>(),
            df in any::<bool>(), mf in any::<bool>(), off in 0u16..0x2000,
            ttl in any::<u8>(), proto in any::<u8>(), src in any::<u32>(), dst in any::<u32>(),
        ) -> Ipv4Header {
            Ipv4Header {
                header_len: 20, tos, total_len: 20 + payload, ident, dont_frag: df,
                more_frags: mf, frag_offset: off << 3, ttl, protocol: proto, checksum: 0,
                src: Ipv4Addr::from(src), dst: Ipv4Addr::from(dst),
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(mut h in arb_header()) {
            let mut b = vec![0u8; usize::from(h.total_len)];
            prop_assert_eq!(h.emit(&mut b), Ok(20));
            let p = Ipv4Header::parse(&b).unwrap();
            h.checksum = p.checksum;
            prop_assert_eq!(p, h);
            prop_assert!(checksum::verify(&b[..20]));
        }

        #[test]
        fn decrement_ttl_matches_full(h in arb_header()) {
            let mut b = [0u8; 20];
            h.emit(&mut b).unwrap();
            let mut full = b;
            if decrement_ttl(&mut b).is_some() {
                full[8] -= 1;
                fill_checksum(&mut full);
                prop_assert_eq!(b, full);
            }
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Ipv4Header::parse(&b);
            for _ in options(&b) {}
        }

        #[test]
        fn parse_never_panics_plausible(
            ihl in 0u8..16, total in any::<u16>(),
            opts in proptest::collection::vec(any::<u8>(), 0..40),
            len in 0usize..80,
        ) {
            // A header with a valid checksum and random options/lengths, so
            // the checks past the checksum get exercised too.
            let mut b = vec![0u8; 60];
            b[0] = 0x40 | ihl;
            b[2..4].copy_from_slice(&total.to_be_bytes());
            b[20..20 + opts.len()].copy_from_slice(&opts);
            fill_checksum(&mut b);
            b.resize(len, 0);
            let r = Ipv4Header::parse(&b);
            if let Ok(h) = r {
                prop_assert!(usize::from(h.header_len) <= b.len());
                prop_assert!(usize::from(h.total_len) <= b.len());
                prop_assert!(h.total_len >= u16::from(h.header_len));
            }
            let mut n = 0;
            for o in options(&b) {
                if let Ok((_, d)) = o {
                    prop_assert!(d.len() <= 38);
                }
                n += 1;
            }
            prop_assert!(n <= 40);
        }
    }
}
