//! The IP under TCP, both families: which family an address is, the IPv4
//! datagram (RFC 791) or IPv6 packet (RFC 8200) a segment arrives in, and
//! the one IP header every segment tcpd sends goes out with.
//!
//! Addresses are 128-bit values, IPv4 ones mapped into `::ffff:0:0/96`
//! (RFC 4291 §2.5.5.2), as on the socket path: a connection whose
//! addresses are mapped speaks IPv4, any other IPv6. What tcpd sends:
//!
//! - IPv4: a 20-byte header (DF set, TTL 64, a running identification),
//!   `l4_off` 20; TCP super-segments (TSO) where the connection sends them.
//! - IPv6: a 40-byte header (traffic class 0, the connection's flow label,
//!   hop limit 64, no extension headers), `l4_off` 40; never a
//!   super-segment (the devices offer TSO for IPv4 only), so every handle
//!   holds one segment of at most one MSS.
//!
//! The TCP checksum covers the family's pseudo-header (RFC 9293 §3.1, RFC
//! 8200 §8.1) over the addresses as written.

use std::net::{Ipv4Addr, Ipv6Addr};

use strata_ipc::addrs::{mapped, unmapped};
use strata_ipc::handle::{csum, gso};
use strata_ipc::Handle;
use strata_proto::ethernet::ethertype;
use strata_proto::ipv4::{protocol, Ipv4Header};
use strata_proto::ipv6::{next_header, Ipv6Header};
use strata_proto::tcp::{TcpHeader, TcpOptions};
use strata_proto::EmitError;

use crate::{Stat, DEFAULT_TTL};

/// Whether `a` is an IPv4 address (mapped), so that what goes to it is
/// an IPv4 datagram.
pub(crate) fn is_v4(a: u128) -> bool {
    unmapped(a).is_some()
}

/// Bytes of the IP header tcpd writes in front of a segment to `peer`.
pub(crate) fn header_len(peer: u128) -> usize {
    if is_v4(peer) {
        Ipv4Header::MIN_LEN
    } else {
        Ipv6Header::LEN
    }
}

/// Where a received segment (or ICMP error) is in its packet, and between
/// which addresses it travelled.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Packet {
    /// Source address (mapped for IPv4).
    pub src: u128,
    /// Destination address (mapped for IPv4).
    pub dst: u128,
    /// Offset of the transport header in the data window.
    pub l4: usize,
    /// End of the packet in the data window (padding after it excluded).
    pub end: usize,
}

/// Finds packet `d` (the handle's data window, `h`'s offsets), IPv4 or
/// IPv6 as its version nibble says (the handle's ethertype, when set,
/// must agree): its addresses and where its transport part is. IPv4
/// fragments are refused (ipd reassembles); over IPv6 the transport
/// starts at `h.l4_off`, behind whatever extension headers ipd walked.
pub(crate) fn parse(d: &[u8], h: &Handle, proto: u8) -> Result<Packet, Stat> {
    let v6 = match d.first().map(|b| b >> 4) {
        Some(4) => false,
        Some(6) => true,
        _ => return Err(Stat::IpMalformed),
    };
    let agrees = match h.ethertype {
        ethertype::IPV4 => !v6,
        ethertype::IPV6 => v6,
        _ => true,
    };
    if !agrees {
        return Err(Stat::IpMalformed);
    }
    if v6 {
        parse_v6(d, h)
    } else {
        parse_v4(d, proto)
    }
}

/// An IPv4 datagram carrying `proto`.
fn parse_v4(d: &[u8], proto: u8) -> Result<Packet, Stat> {
    let ip = Ipv4Header::parse(d).map_err(|_| Stat::IpMalformed)?;
    if ip.protocol != proto {
        return Err(Stat::WrongProtocol);
    }
    if ip.is_fragment() {
        return Err(Stat::IpFragment);
    }
    Ok(Packet {
        src: mapped(u32::from(ip.src)),
        dst: mapped(u32::from(ip.dst)),
        l4: usize::from(ip.header_len),
        end: usize::from(ip.total_len),
    })
}

/// An IPv6 packet whose transport part starts at `h.l4_off` (ipd checked
/// what lies between). Addresses in `::ffff:0:0/96` never travel in an
/// IPv6 header (RFC 4291 §2.5.5.2) and would be taken for IPv4 ones here:
/// refused.
fn parse_v6(d: &[u8], h: &Handle) -> Result<Packet, Stat> {
    let ip = Ipv6Header::parse(d).map_err(|_| Stat::IpMalformed)?;
    let end = Ipv6Header::LEN + usize::from(ip.payload_len);
    let l4 = usize::from(h.l4_off);
    if l4 < Ipv6Header::LEN || l4 > end {
        return Err(Stat::IpMalformed);
    }
    let (src, dst) = (u128::from(ip.src), u128::from(ip.dst));
    if is_v4(src) || is_v4(dst) {
        return Err(Stat::BadAddress);
    }
    Ok(Packet { src, dst, l4, end })
}

/// Whether segment `seg` (TCP header and payload) sent from `src` to
/// `dst` has a correct checksum, over its family's pseudo-header.
pub(crate) fn verify_checksum(seg: &[u8], src: u128, dst: u128) -> bool {
    match (unmapped(src), unmapped(dst)) {
        (Some(s), Some(d)) => TcpHeader::verify_checksum(seg, s.into(), d.into()),
        _ => TcpHeader::verify_checksum_v6(seg, src.into(), dst.into()),
    }
}

/// What the IP header of a segment says besides its addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    /// IPv4 identification.
    pub ident: u16,
    /// IPv6 flow label (20 bits).
    pub flow: u32,
}

/// Writes the IP header and the TCP header of a segment from `src` to
/// `dst` into `d`, the whole packet with the payload in place after both;
/// the TCP checksum final, or with `partial` left for the device or
/// driverd to complete. False, writing nothing sensible, when `d` is too
/// short or too long for the family's length field, or the two addresses
/// are of different families (no packet can carry that). The one place
/// tcpd writes IP headers.
pub(crate) fn emit(
    d: &mut [u8],
    src: u128,
    dst: u128,
    stamp: Stamp,
    tcp: &TcpHeader,
    opts: &TcpOptions,
    partial: bool,
) -> bool {
    let hl = header_len(dst);
    if d.len() < hl {
        return false;
    }
    let (iph, seg) = d.split_at_mut(hl);
    let r = match (unmapped(src), unmapped(dst)) {
        (Some(s), Some(t)) => emit_v4(
            iph,
            seg,
            (s.into(), t.into()),
            stamp.ident,
            tcp,
            opts,
            partial,
        ),
        (None, None) => emit_v6(
            iph,
            seg,
            (src.into(), dst.into()),
            stamp.flow,
            tcp,
            opts,
            partial,
        ),
        _ => Err(EmitError::BufferTooSmall),
    };
    r.is_ok()
}

/// [`emit`] over IPv4: header `iph`, segment `seg`.
fn emit_v4(
    iph: &mut [u8],
    seg: &mut [u8],
    (s, t): (Ipv4Addr, Ipv4Addr),
    ident: u16,
    tcp: &TcpHeader,
    opts: &TcpOptions,
    partial: bool,
) -> Result<usize, EmitError> {
    let total = u16::try_from(iph.len() + seg.len()).map_err(|_| EmitError::TooLong)?;
    v4_header(s, t, total, ident).emit(iph)?;
    if partial {
        tcp.emit_partial(opts, seg, s, t)
    } else {
        tcp.emit(opts, seg, s, t)
    }
}

/// [`emit`] over IPv6: header `iph`, segment `seg`.
fn emit_v6(
    iph: &mut [u8],
    seg: &mut [u8],
    (s, t): (Ipv6Addr, Ipv6Addr),
    flow: u32,
    tcp: &TcpHeader,
    opts: &TcpOptions,
    partial: bool,
) -> Result<usize, EmitError> {
    let len = u16::try_from(seg.len()).map_err(|_| EmitError::TooLong)?;
    v6_header(s, t, len, flow).emit(iph)?;
    if partial {
        tcp.emit_partial_v6(opts, seg, s, t)
    } else {
        tcp.emit_v6(opts, seg, s, t)
    }
}

/// The IPv4 header of a segment: DF (RFC 1191 path MTU discovery), TTL
/// 64.
fn v4_header(src: Ipv4Addr, dst: Ipv4Addr, total_len: u16, ident: u16) -> Ipv4Header {
    Ipv4Header {
        header_len: Ipv4Header::MIN_LEN as u8,
        tos: 0,
        total_len,
        ident,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        ttl: DEFAULT_TTL,
        protocol: protocol::TCP,
        checksum: 0,
        src,
        dst,
    }
}

/// The IPv6 header of a segment: traffic class 0, the flow's label (RFC
/// 6437), next header TCP, hop limit 64 (as Linux's default).
fn v6_header(src: Ipv6Addr, dst: Ipv6Addr, payload_len: u16, flow: u32) -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: flow,
        payload_len,
        next_header: next_header::TCP,
        hop_limit: DEFAULT_TTL,
        src,
        dst,
    }
}

/// The handle ipd takes for a packet to `peer` written in `h`'s data
/// window: `l3_off` 0, `l4_off` past the IP header, TCP, the family's
/// ethertype, no super-segment (the caller marks one), the checksum
/// `partial` or final.
pub(crate) fn finish_handle(h: &Handle, peer: u128, partial: bool) -> Handle {
    let mut o = Handle::new(h.buf, h.gen, h.data_off);
    o.data_len = h.data_len;
    o.l3_off = 0;
    o.l4_off = header_len(peer) as u16;
    o.l4proto = protocol::TCP;
    o.ethertype = if is_v4(peer) {
        ethertype::IPV4
    } else {
        ethertype::IPV6
    };
    o.gso_type = gso::NONE;
    if partial {
        o.csum = csum::PARTIAL;
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const A6: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0001;
    const B6: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0002;

    fn tcp() -> TcpHeader {
        TcpHeader {
            src_port: 80,
            dst_port: 40000,
            seq: 7,
            ack: 9,
            header_len: 0,
            flags: strata_proto::tcp::TcpFlags::ACK,
            window: 100,
            checksum: 0,
            urgent: 0,
        }
    }

    #[test]
    fn a_v6_segment_parses_back_with_its_checksum() {
        let mut d = vec![0u8; 40 + 20 + 5];
        d[60..].copy_from_slice(b"hello");
        let stamp = Stamp {
            ident: 0,
            flow: 0x12345,
        };
        assert!(emit(
            &mut d,
            A6,
            B6,
            stamp,
            &tcp(),
            &TcpOptions::default(),
            false
        ));
        let ip = Ipv6Header::parse(&d).unwrap();
        assert_eq!(
            (ip.flow_label, ip.payload_len, ip.hop_limit),
            (0x12345, 25, 64)
        );
        assert_eq!(ip.next_header, next_header::TCP);
        let mut h = Handle::new(0, 0, 0);
        h.l4_off = 40;
        h.ethertype = ethertype::IPV6;
        let p = parse(&d, &h, protocol::TCP).unwrap();
        assert_eq!((p.src, p.dst, p.l4, p.end), (A6, B6, 40, 65));
        assert!(verify_checksum(&d[40..], A6, B6));
        assert!(!verify_checksum(&d[40..], A6, B6 ^ 1 << 64));
        // The ethertype must agree with the version.
        h.ethertype = ethertype::IPV4;
        assert_eq!(parse(&d, &h, protocol::TCP).unwrap_err(), Stat::IpMalformed);
        // A transport offset outside the packet.
        h.ethertype = ethertype::IPV6;
        h.l4_off = 66;
        assert_eq!(parse(&d, &h, protocol::TCP).unwrap_err(), Stat::IpMalformed);
    }

    #[test]
    fn mixed_families_and_mapped_addresses_in_ipv6_are_refused() {
        let mut d = vec![0u8; 60];
        let stamp = Stamp { ident: 1, flow: 0 };
        let o = TcpOptions::default();
        assert!(!emit(&mut d, mapped(1), B6, stamp, &tcp(), &o, false));
        // An IPv6 packet from ::ffff:10.0.0.2.
        let ip = v6_header(
            Ipv6Addr::from(mapped(0x0a00_0002)),
            Ipv6Addr::from(B6),
            20,
            0,
        );
        ip.emit(&mut d).unwrap();
        let mut h = Handle::new(0, 0, 0);
        h.l4_off = 40;
        assert_eq!(parse(&d, &h, protocol::TCP).unwrap_err(), Stat::BadAddress);
        assert_eq!(
            parse(&[0x50; 60], &h, protocol::TCP).unwrap_err(),
            Stat::IpMalformed
        );
        assert_eq!(
            parse(&[], &h, protocol::TCP).unwrap_err(),
            Stat::IpMalformed
        );
    }

    #[test]
    fn a_v4_segment_is_as_before() {
        let (a, b) = (mapped(0x0a00_0001), mapped(0x0a00_0002));
        let mut d = vec![0u8; 40];
        let stamp = Stamp { ident: 5, flow: 9 };
        assert!(emit(
            &mut d,
            a,
            b,
            stamp,
            &tcp(),
            &TcpOptions::default(),
            true
        ));
        let ip = Ipv4Header::parse(&d).unwrap();
        assert!(ip.dont_frag);
        assert_eq!((ip.ident, ip.ttl, ip.total_len), (5, 64, 40));
        let h = finish_handle(&Handle::new(3, 1, 0), a, true);
        assert_eq!(
            (h.l4_off, h.ethertype, h.csum),
            (20, ethertype::IPV4, csum::PARTIAL)
        );
        let h = finish_handle(&Handle::new(3, 1, 0), B6, false);
        assert_eq!(
            (h.l4_off, h.ethertype, h.csum),
            (40, ethertype::IPV6, csum::NONE)
        );
        assert_eq!(header_len(A6), 40);
        assert_eq!(header_len(a), 20);
    }
}
