//! Offloads: the virtio-net header a TAP device exchanges with its reader,
//! and the software work a device without offloads needs instead —
//! completing a partial checksum, and cutting a TCP super-segment into
//! MSS-sized segments (software GSO).
//!
//! # The checksum convention
//!
//! A packet whose transport checksum is *partial* carries, in its checksum
//! field, the folded one's complement sum of its pseudo-header (with the
//! transport length of the whole packet), not complemented; whoever sends
//! it sums everything from the transport header on and stores the
//! complement. This is Linux's `CHECKSUM_PARTIAL` and virtio-net's
//! `NEEDS_CSUM` (`csum_start` names the transport header, `csum_offset` the
//! field inside it), so a partial packet goes to a TAP unchanged.
//!
//! # Super-segments
//!
//! A TCP super-segment is one IPv4 datagram whose payload is longer than
//! one segment; `gso_size` says how long each segment is. Every segment
//! gets the super-segment's headers with its own sequence number, IPv4
//! total length and identification (the first segment's plus its index,
//! as Linux's `tcp4_gso_segment` does), and its own checksums; FIN and PSH
//! go only on the last segment, CWR only on the first.

use crate::checksum::{pseudo_header_v4, Checksum};
use crate::ipv4::fill_checksum;
use crate::{be16, be32};

/// Length of the virtio-net header a TAP device opened with `IFF_VNET_HDR`
/// puts in front of every frame (`struct virtio_net_hdr`).
pub const VNET_HDR_LEN: usize = 10;

/// Bits of [`VnetHdr::flags`].
pub mod vnet_flags {
    /// The transport checksum is partial (see the module documentation):
    /// `csum_start` and `csum_offset` say where.
    pub const NEEDS_CSUM: u8 = 1;
    /// The device verified the checksums.
    pub const DATA_VALID: u8 = 2;
}

/// Values of [`VnetHdr::gso_type`].
pub mod gso_type {
    /// Not a super-packet.
    pub const NONE: u8 = 0;
    /// A TCP over IPv4 super-segment.
    pub const TCPV4: u8 = 1;
    /// A UDP super-datagram (fragmented as one, UFO); refused.
    pub const UDP: u8 = 3;
    /// A TCP over IPv6 super-segment.
    pub const TCPV6: u8 = 4;
    /// Flag: the super-segment carries ECN's CWR.
    pub const ECN: u8 = 0x80;
}

/// The virtio-net header (virtio specification §5.1.6, `struct
/// virtio_net_hdr`), in the byte order of the host: a TAP that was not
/// told otherwise (TUNSETVNETLE/BE) uses the host's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// [`vnet_flags`].
    pub flags: u8,
    /// One of [`gso_type`], perhaps with [`gso_type::ECN`].
    pub gso_type: u8,
    /// Bytes of headers (L2 to the end of L4) in a super-packet; a hint.
    pub hdr_len: u16,
    /// Payload bytes per segment of a super-packet.
    pub gso_size: u16,
    /// Where the checksummed range starts, from the frame's first byte.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header from the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b = b.get(..VNET_HDR_LEN).ok_or(OffloadError::Truncated)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's [`VNET_HDR_LEN`] bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Why a frame's offload work could not be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadError {
    /// The frame (or header) is shorter than its headers say.
    Truncated,
    /// Not an IP datagram over Ethernet (or, where only IPv4 will do,
    /// not an IPv4 one).
    NotIpv4,
    /// A super-segment that is not TCP, or is an IPv4 fragment.
    NotTcp,
    /// The checksum's start or field lies outside the frame.
    BadCsumRange,
    /// A segment size of 0, or one that makes a segment too long for its
    /// 16-bit length.
    BadGsoSize,
}

impl OffloadError {
    /// A short `snake_case` name for the error, usable as a counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            OffloadError::Truncated => "truncated",
            OffloadError::NotIpv4 => "not_ipv4",
            OffloadError::NotTcp => "not_tcp",
            OffloadError::BadCsumRange => "bad_csum_range",
            OffloadError::BadGsoSize => "bad_gso_size",
        }
    }
}

impl core::fmt::Display for OffloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for OffloadError {}

/// Where the headers of an Ethernet frame carrying an IPv4 or IPv6
/// datagram are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpFrame {
    /// Offset of the IP header (after the 14-byte Ethernet header).
    pub l3: usize,
    /// Offset of the transport header.
    pub l4: usize,
    /// The IPv4 protocol number, or the next header after IPv6's fixed
    /// header.
    pub protocol: u8,
    /// Bytes of the frame the IP length covers, plus `l3`.
    pub end: usize,
    /// The datagram is a fragment (its transport header may be elsewhere),
    /// or, over IPv6, its transport is behind an extension header.
    pub fragment: bool,
    /// IPv6 rather than IPv4.
    pub v6: bool,
}

impl IpFrame {
    /// Finds the headers of `frame`; checks only what offload work needs
    /// (ipd validates the rest). Over IPv6, a transport header right
    /// after the fixed header is found; behind an extension header it
    /// counts as a fragment's (the stack sends none there).
    pub fn parse(frame: &[u8]) -> Result<IpFrame, OffloadError> {
        const L3: usize = 14;
        if frame.len() < L3 + 20 {
            return Err(OffloadError::Truncated);
        }
        if be16(frame, 12) == 0x86dd && frame[L3] >> 4 == 6 {
            return Self::parse6(frame);
        }
        if be16(frame, 12) != 0x0800 || frame[L3] >> 4 != 4 {
            return Err(OffloadError::NotIpv4);
        }
        let ihl = usize::from(frame[L3] & 0xf) * 4;
        let total = usize::from(be16(frame, L3 + 2));
        if ihl < 20 || total < ihl || L3 + total > frame.len() {
            return Err(OffloadError::Truncated);
        }
        Ok(IpFrame {
            l3: L3,
            l4: L3 + ihl,
            protocol: frame[L3 + 9],
            end: L3 + total,
            fragment: be16(frame, L3 + 6) & 0x3fff != 0,
            v6: false,
        })
    }

    /// [`parse`](Self::parse) of an IPv6 frame (RFC 8200 §3).
    fn parse6(frame: &[u8]) -> Result<IpFrame, OffloadError> {
        const L3: usize = 14;
        const FIXED: usize = 40;
        if frame.len() < L3 + FIXED {
            return Err(OffloadError::Truncated);
        }
        let end = L3 + FIXED + usize::from(be16(frame, L3 + 4));
        if end > frame.len() {
            return Err(OffloadError::Truncated);
        }
        let next = frame[L3 + 6];
        Ok(IpFrame {
            l3: L3,
            l4: L3 + FIXED,
            protocol: next,
            end,
            fragment: !matches!(next, 6 | 17),
            v6: true,
        })
    }

    /// Offset of the transport checksum field from the transport header,
    /// for the protocols that offload it (TCP, UDP).
    pub fn csum_offset(&self) -> Option<usize> {
        match (self.protocol, self.fragment) {
            (6, false) => Some(16),
            (17, false) => Some(6),
            _ => None,
        }
    }
}

/// Completes a partial checksum (see the module documentation): sums
/// `frame[start..]`, the field at `start + offset` holding the
/// pseudo-header sum, and stores the complement there.
pub fn complete_checksum(
    frame: &mut [u8],
    start: usize,
    offset: usize,
) -> Result<(), OffloadError> {
    let at = start
        .checked_add(offset)
        .ok_or(OffloadError::BadCsumRange)?;
    if at.checked_add(2).is_none_or(|e| e > frame.len()) {
        return Err(OffloadError::BadCsumRange);
    }
    let mut c = Checksum::new();
    c.add_bytes(&frame[start..]);
    let mut v = c.finish();
    if v == 0 && offset == 6 {
        // UDP: a computed zero is sent as all ones (RFC 768).
        v = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// The headers (Ethernet, IPv4, TCP) of a super-segment, at most this long.
pub const MAX_SEG_HDRS: usize = 14 + 60 + 60;

/// One segment cut from a super-segment: its own headers and a slice of
/// the super-segment's payload, to be written out one after the other.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    hdr: [u8; MAX_SEG_HDRS],
    hdr_len: usize,
    /// The segment's payload.
    pub payload: &'a [u8],
}

impl Segment<'_> {
    /// The segment's Ethernet, IPv4 and TCP headers, checksums final.
    pub fn headers(&self) -> &[u8] {
        &self.hdr[..self.hdr_len]
    }
}

/// Software GSO for TCP over IPv4: the segments of the super-segment
/// `frame`, `mss` payload bytes each (the last one the rest), with full
/// checksums whatever the super-segment's checksum field held.
pub fn segment_tcp4(frame: &[u8], mss: u16) -> Result<Segments<'_>, OffloadError> {
    let f = IpFrame::parse(frame)?;
    if f.v6 {
        return Err(OffloadError::NotIpv4);
    }
    if f.protocol != 6 || f.fragment {
        return Err(OffloadError::NotTcp);
    }
    if f.l4 + 20 > f.end {
        return Err(OffloadError::Truncated);
    }
    let thl = usize::from(frame[f.l4 + 12] >> 4) * 4;
    let hdrs = f.l4 + thl;
    if thl < 20 || hdrs > f.end || hdrs > MAX_SEG_HDRS {
        return Err(OffloadError::Truncated);
    }
    if mss == 0 || (hdrs - f.l3) + usize::from(mss) > 65535 {
        return Err(OffloadError::BadGsoSize);
    }
    Ok(Segments {
        frame,
        f,
        hdrs,
        mss: usize::from(mss),
        at: hdrs,
        index: 0,
    })
}

/// The iterator [`segment_tcp4`] returns.
#[derive(Clone, Debug)]
pub struct Segments<'a> {
    frame: &'a [u8],
    f: IpFrame,
    hdrs: usize,
    mss: usize,
    /// Offset in `frame` of the next segment's payload.
    at: usize,
    index: u16,
}

impl Segments<'_> {
    /// Segments left to produce (a super-segment without payload makes
    /// one).
    pub fn remaining(&self) -> usize {
        let left = self.f.end - self.at;
        if left == 0 {
            usize::from(self.index == 0)
        } else {
            left.div_ceil(self.mss)
        }
    }
}

/// TCP flags that go on the last segment only (FIN, PSH) and on the first
/// only (CWR).
const LAST_ONLY: u8 = 0x01 | 0x08;
const FIRST_ONLY: u8 = 0x80;

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        if self.remaining() == 0 {
            return None;
        }
        let (l3, l4, hdrs) = (self.f.l3, self.f.l4, self.hdrs);
        let n = (self.f.end - self.at).min(self.mss);
        let payload = &self.frame[self.at..self.at + n];
        let first = self.index == 0;
        let last = self.at + n == self.f.end;
        let mut hdr = [0u8; MAX_SEG_HDRS];
        hdr[..hdrs].copy_from_slice(&self.frame[..hdrs]);
        // IPv4: total length, identification, header checksum.
        let total = (hdrs - l3 + n) as u16;
        hdr[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        let id = be16(self.frame, l3 + 4).wrapping_add(self.index);
        hdr[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
        fill_checksum(&mut hdr[l3..l4]);
        // TCP: sequence number, flags, checksum.
        let seq = be32(self.frame, l4 + 4).wrapping_add((self.at - hdrs) as u32);
        hdr[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        if !last {
            hdr[l4 + 13] &= !LAST_ONLY;
        }
        if !first {
            hdr[l4 + 13] &= !FIRST_ONLY;
        }
        hdr[l4 + 16..l4 + 18].fill(0);
        let src = be32(&hdr, l3 + 12).into();
        let dst = be32(&hdr, l3 + 16).into();
        let mut c = pseudo_header_v4(src, dst, 6, (hdrs - l4 + n) as u16);
        c.add_bytes(&hdr[l4..hdrs]);
        c.add_bytes(payload);
        hdr[l4 + 16..l4 + 18].copy_from_slice(&c.finish().to_be_bytes());
        self.at += n;
        self.index = self.index.wrapping_add(1);
        Some(Segment {
            hdr,
            hdr_len: hdrs,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4::Ipv4Header;
    use crate::tcp::{TcpFlags, TcpHeader, TcpOptions};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// An Ethernet frame holding a TCP segment with `payload`, `flags`,
    /// options `opts`, and a partial checksum (the pseudo-header sum).
    fn super_frame(payload: &[u8], flags: TcpFlags, opts: &TcpOptions) -> Vec<u8> {
        let thl = TcpHeader::header_len_for(opts);
        let total = 20 + thl + payload.len();
        let mut f = vec![0u8; 14 + total];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = Ipv4Header {
            header_len: 20,
            tos: 0,
            total_len: total as u16,
            ident: 0xfffe,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            ttl: 64,
            protocol: 6,
            checksum: 0,
            src: SRC,
            dst: DST,
        };
        ip.emit(&mut f[14..34]).unwrap();
        let tcp = TcpHeader {
            src_port: 5000,
            dst_port: 80,
            seq: 0xffff_fff0,
            ack: 7,
            header_len: 0,
            flags,
            window: 1000,
            checksum: 0,
            urgent: 0,
        };
        tcp.emit_header(opts, &mut f[34..]).unwrap();
        f[34 + thl..].copy_from_slice(payload);
        let pseudo = pseudo_header_v4(SRC, DST, 6, (thl + payload.len()) as u16).sum();
        f[34 + 16..34 + 18].copy_from_slice(&pseudo.to_be_bytes());
        f
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: vnet_flags::NEEDS_CSUM,
            gso_type: gso_type::TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.to_bytes()), Ok(h));
        assert_eq!(VnetHdr::parse(&[0; 9]), Err(OffloadError::Truncated));
    }

    #[test]
    fn completing_a_partial_checksum_gives_the_full_one() {
        let payload: Vec<u8> = (0..1001u32).map(|i| (i * 7) as u8).collect();
        let mut f = super_frame(&payload, TcpFlags::ACK, &TcpOptions::default());
        let fr = IpFrame::parse(&f).unwrap();
        complete_checksum(&mut f, fr.l4, 16).unwrap();
        assert!(TcpHeader::verify_checksum(&f[fr.l4..], SRC, DST));
        assert_eq!(
            complete_checksum(&mut f, fr.l4, 2000),
            Err(OffloadError::BadCsumRange)
        );
        assert_eq!(
            complete_checksum(&mut f, usize::MAX, 16),
            Err(OffloadError::BadCsumRange)
        );
    }

    #[test]
    fn an_ipv6_frame_is_found_and_its_partial_checksum_completed() {
        use crate::ipv6::{next_header, Ipv6Header};
        use std::net::Ipv6Addr;
        let (src, dst) = (
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::LOCALHOST,
        );
        let payload = [9u8; 333];
        let tcp_len = 20 + payload.len();
        let mut f = vec![0u8; 14 + 40 + tcp_len];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        Ipv6Header {
            traffic_class: 0,
            flow_label: 0,
            payload_len: tcp_len as u16,
            next_header: next_header::TCP,
            hop_limit: 64,
            src,
            dst,
        }
        .emit(&mut f[14..])
        .unwrap();
        f[54 + 20..].copy_from_slice(&payload);
        let h = TcpHeader {
            src_port: 80,
            dst_port: 40000,
            seq: 1,
            ack: 2,
            header_len: 20,
            flags: TcpFlags::ACK,
            window: 100,
            checksum: 0,
            urgent: 0,
        };
        h.emit_partial_v6(&TcpOptions::default(), &mut f[54..], src, dst)
            .unwrap();
        let fr = IpFrame::parse(&f).unwrap();
        assert!(fr.v6 && !fr.fragment);
        assert_eq!((fr.l4, fr.end, fr.csum_offset()), (54, f.len(), Some(16)));
        complete_checksum(&mut f, fr.l4, 16).unwrap();
        assert!(TcpHeader::verify_checksum_v6(&f[54..], src, dst));
        // Not for cutting: software GSO is IPv4's.
        assert_eq!(segment_tcp4(&f, 100).err(), Some(OffloadError::NotIpv4));
        // Behind an extension header, no transport is named.
        f[14 + 6] = next_header::FRAGMENT;
        assert_eq!(IpFrame::parse(&f).unwrap().csum_offset(), None);
        // Shorter than its payload length says.
        assert_eq!(IpFrame::parse(&f[..100]), Err(OffloadError::Truncated));
    }

    #[test]
    fn segments_carry_their_own_headers_and_flags() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let opts = TcpOptions {
            timestamp: Some((1, 2)),
            ..TcpOptions::default()
        };
        let fl = TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN | TcpFlags::CWR;
        let f = super_frame(&payload, fl, &opts);
        let segs: Vec<_> = segment_tcp4(&f, 1400).unwrap().collect();
        assert_eq!(segs.len(), 3);
        let mut seen = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let mut seg = s.headers().to_vec();
            seg.extend_from_slice(s.payload);
            let ip = Ipv4Header::parse(&seg[14..]).unwrap();
            assert_eq!(usize::from(ip.total_len), seg.len() - 14);
            assert_eq!(ip.ident, 0xfffeu16.wrapping_add(i as u16));
            assert!(TcpHeader::verify_checksum(&seg[34..], SRC, DST));
            let (t, o) = TcpHeader::parse(&seg[34..]).unwrap();
            assert_eq!(o.timestamp, Some((1, 2)));
            assert_eq!(t.seq, 0xffff_fff0u32.wrapping_add(1400 * i as u32));
            assert_eq!(t.flags.contains(TcpFlags::CWR), i == 0);
            assert_eq!(t.flags.contains(TcpFlags::FIN), i == 2);
            assert_eq!(t.flags.contains(TcpFlags::PSH), i == 2);
            assert!(t.flags.contains(TcpFlags::ACK));
            seen.extend_from_slice(s.payload);
        }
        assert_eq!(seen, payload);
    }

    #[test]
    fn refuses_what_it_cannot_cut() {
        let f = super_frame(&[1; 100], TcpFlags::ACK, &TcpOptions::default());
        assert_eq!(segment_tcp4(&f, 0).err(), Some(OffloadError::BadGsoSize));
        assert_eq!(
            segment_tcp4(&f[..40], 10).err(),
            Some(OffloadError::Truncated)
        );
        let mut udp = f.clone();
        udp[14 + 9] = 17;
        assert_eq!(segment_tcp4(&udp, 10).err(), Some(OffloadError::NotTcp));
        let mut arp = f.clone();
        arp[12] = 8;
        arp[13] = 6;
        assert_eq!(segment_tcp4(&arp, 10).err(), Some(OffloadError::NotIpv4));
        // A bare header makes one segment.
        let bare = super_frame(&[], TcpFlags::ACK, &TcpOptions::default());
        assert_eq!(segment_tcp4(&bare, 100).unwrap().count(), 1);
    }

    proptest! {
        #[test]
        fn segmenting_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), mss: u16) {
            if let Ok(s) = segment_tcp4(&data, mss) {
                let n = s.remaining();
                prop_assert_eq!(s.count(), n);
            }
            let mut d = data.clone();
            let _ = complete_checksum(&mut d, usize::from(mss), 16);
            let _ = VnetHdr::parse(&data);
        }

        #[test]
        fn segments_put_back_together_are_the_super_segment(len in 0usize..5000, mss in 1u16..2000) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let f = super_frame(&payload, TcpFlags::ACK, &TcpOptions::default());
            let mut seen = Vec::new();
            for s in segment_tcp4(&f, mss).unwrap() {
                prop_assert!(s.payload.len() <= usize::from(mss));
                let mut seg = s.headers().to_vec();
                seg.extend_from_slice(s.payload);
                prop_assert!(TcpHeader::verify_checksum(&seg[34..], SRC, DST));
                seen.extend_from_slice(s.payload);
            }
            prop_assert_eq!(seen, payload);
        }
    }
}
