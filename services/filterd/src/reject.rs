//! The answer a REJECT rule sends: an ICMP destination unreachable or a
//! TCP RST to the rejected packet's sender (as Linux's `ipt_REJECT`), or
//! for IPv6 an ICMPv6 destination unreachable (RFC 4443 §3.1) or a RST
//! over IPv6 (as `ip6t_REJECT`), written as a whole Ethernet frame.
//!
//! The frame's MAC addresses are the rejected frame's, swapped: a packet
//! rejected on its way in came from the neighbour that sent it, so the
//! answer goes back to that neighbour; a packet rejected on its way out
//! carries our address as source and the next hop's as destination, so
//! swapped they make the answer look received from that next hop, which
//! is how it is handed up to ipd.

use std::net::Ipv6Addr;
use strata_proto::checksum::pseudo_header_v6;
use strata_proto::icmp::{self, IcmpHeader};
use strata_proto::icmpv6::{self, Icmpv6Header};
use strata_proto::ipv4::{protocol, Ipv4Header};
use strata_proto::ipv6::{next_header, Ipv6Header};
use strata_proto::tcp::{TcpFlags, TcpHeader, TcpOptions};

use crate::packet::{find_upper, Upper};
use crate::rule::RejectWith;

const ETH: usize = 14;

/// Bytes an answer may take: an Ethernet header and the IPv6 minimum MTU
/// (an ICMPv6 error fills it, RFC 4443 §2.4 (c)); IPv4's are smaller.
pub const MAX_ANSWER: usize = ETH + icmpv6::ERROR_MAX_LEN;

/// Writes the answer to the Ethernet frame `frame` (IPv4 at byte 14) into
/// `out`; returns its length, or `None` when no answer may be sent: the
/// rejected packet is an ICMP message other than a query or a RST (no
/// answer to an answer), a fragment other than the first, not from a
/// unicast source, malformed, or a RST was asked for a packet that is not
/// TCP. The ICMP error quotes as much of the datagram as Linux does
/// ([`IcmpHeader::emit_error`]). An IPv6 frame is answered by
/// [`build_v6`]; an answer of the other family's kind is never sent.
pub fn build(frame: &[u8], with: RejectWith, out: &mut [u8]) -> Option<usize> {
    match frame.get(12..14)? {
        [0x86, 0xdd] => build_v6(frame, with, out),
        _ if with.is_icmp6() => None,
        _ => build_v4(frame, with, out),
    }
}

/// The RST answering TCP segment `t` that carried `data` bytes (RFC 9293
/// §3.10.7.1): from its ACK if it had one, else acknowledging it.
fn rst_for(t: &TcpHeader, data: u32) -> TcpHeader {
    let (seq, ack, flags) = if t.flags.contains(TcpFlags::ACK) {
        (t.ack, 0, TcpFlags::RST)
    } else {
        let mut l = data;
        if t.flags.contains(TcpFlags::SYN) {
            l += 1;
        }
        if t.flags.contains(TcpFlags::FIN) {
            l += 1;
        }
        (0, t.seq.wrapping_add(l), TcpFlags::RST | TcpFlags::ACK)
    };
    TcpHeader {
        src_port: t.dst_port,
        dst_port: t.src_port,
        seq,
        ack,
        header_len: 20,
        flags,
        window: 0,
        checksum: 0,
        urgent: 0,
    }
}

/// Copies the rejected frame's MAC addresses, swapped, and its EtherType
/// into the answer's Ethernet header.
fn swap_macs(frame: &[u8], out: &mut [u8]) -> Option<()> {
    out.get_mut(..6)?.copy_from_slice(frame.get(6..12)?);
    out.get_mut(6..12)?.copy_from_slice(frame.get(..6)?);
    out.get_mut(12..14)?.copy_from_slice(frame.get(12..14)?);
    Some(())
}

/// Whether an IPv6 address may be the source of a packet we answer: not
/// unspecified, multicast or loopback (RFC 4443 §2.4 (e): no error to a
/// packet whose source does not identify one node; RFC 4291 §2.5.3).
fn v6_answerable(a: Ipv6Addr) -> bool {
    !a.is_unspecified() && !a.is_multicast() && !a.is_loopback()
}

/// [`build`] for an IPv6 frame (IPv6 at byte 14): an ICMPv6 destination
/// unreachable quoting as much of the packet as fits in 1280 bytes (RFC
/// 4443 §2.4 (c), [`Icmpv6Header::emit_error`]), or a RST for TCP.
/// `None` (no answer) for a packet from a source that is not one unicast
/// node or to a multicast group (RFC 4443 §2.4 (e)), an ICMPv6 error or a
/// message too short to tell (RFC 4443 §2.4 (e): no error about an
/// error), a fragment other than the first, a packet whose transport
/// cannot be found, a RST, an IPv4 kind of answer, or malformed input.
pub fn build_v6(frame: &[u8], with: RejectWith, out: &mut [u8]) -> Option<usize> {
    let ip = frame.get(ETH..)?;
    let h = Ipv6Header::parse(ip).ok()?;
    let packet = ip.get(..Ipv6Header::LEN + usize::from(h.payload_len))?;
    if !v6_answerable(h.src) || h.dst.is_multicast() || h.dst.is_unspecified() {
        return None;
    }
    let payload = h.payload(packet);
    let Upper::At { proto, off, .. } = find_upper(h.next_header, payload) else {
        return None;
    };
    let l4 = payload.get(off..)?;
    if proto == next_header::ICMPV6 && icmpv6::is_error(*l4.first()?) {
        return None;
    }
    let body = out.get_mut(ETH + Ipv6Header::LEN..)?;
    let (len, nh) = match (with, with.icmp6_code()) {
        (_, Some(code)) => {
            let n = Icmpv6Header::dest_unreachable(code)
                .emit_error(packet, body, h.dst, h.src)
                .ok()?;
            (n, next_header::ICMPV6)
        }
        (RejectWith::TcpReset, None) if proto == next_header::TCP => {
            (rst_v6(l4, h.dst, h.src, body)?, next_header::TCP)
        }
        _ => return None,
    };
    Ipv6Header {
        traffic_class: 0,
        flow_label: 0,
        payload_len: u16::try_from(len).ok()?,
        next_header: nh,
        hop_limit: 64,
        src: h.dst,
        dst: h.src,
    }
    .emit(out.get_mut(ETH..)?)
    .ok()?;
    swap_macs(frame, out)?;
    Some(ETH + Ipv6Header::LEN + len)
}

/// Writes into `body` the RST (20 bytes) answering TCP segment `seg`,
/// sent from `src` to `dst`, with its checksum over the IPv6
/// pseudo-header (RFC 8200 §8.1). `None` for a RST or a bad segment.
fn rst_v6(seg: &[u8], src: Ipv6Addr, dst: Ipv6Addr, body: &mut [u8]) -> Option<usize> {
    let (t, _) = TcpHeader::parse(seg).ok()?;
    if t.flags.contains(TcpFlags::RST) {
        return None;
    }
    let data = seg.len().saturating_sub(usize::from(t.header_len)) as u32;
    let out = body.get_mut(..20)?;
    rst_for(&t, data)
        .emit_header(&TcpOptions::default(), out)
        .ok()?;
    out[16..18].copy_from_slice(&[0, 0]);
    let mut c = pseudo_header_v6(src, dst, next_header::TCP, 20);
    c.add_bytes(out);
    out[16..18].copy_from_slice(&c.finish().to_be_bytes());
    Some(20)
}

/// [`build`] for an IPv4 frame.
fn build_v4(frame: &[u8], with: RejectWith, out: &mut [u8]) -> Option<usize> {
    let ip = frame.get(ETH..)?;
    let h = Ipv4Header::parse(ip).ok()?;
    let hl = usize::from(h.header_len);
    let total = usize::from(h.total_len).min(ip.len());
    let src = u32::from(h.src);
    let dst = u32::from(h.dst);
    let unicast = |a: u32| a != 0 && a != u32::MAX && (a >> 28) != 14 && (a >> 24) != 127;
    if h.frag_offset != 0 || !unicast(src) || !unicast(dst) {
        return None;
    }
    let payload = ip.get(hl..total)?;
    if h.protocol == protocol::ICMP {
        // Errors (and, as in Linux, unknown types) get no error back;
        // queries may.
        if !icmp::is_query(*payload.first()?) {
            return None;
        }
    }
    let mut reply = Ipv4Header {
        header_len: 20,
        tos: 0,
        total_len: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        ttl: 64,
        protocol: protocol::ICMP,
        checksum: 0,
        src: h.dst,
        dst: h.src,
    };
    let body = out.get_mut(ETH + 20..)?;
    let len = match with.icmp_code() {
        None => {
            if h.protocol != protocol::TCP {
                return None;
            }
            let (t, _) = TcpHeader::parse(payload).ok()?;
            if t.flags.contains(TcpFlags::RST) {
                return None;
            }
            let data = payload.len().saturating_sub(usize::from(t.header_len)) as u32;
            let rst = rst_for(&t, data);
            let seg = body.get_mut(..20)?;
            rst.emit(&TcpOptions::default(), seg, h.dst, h.src).ok()?;
            reply.protocol = protocol::TCP;
            20
        }
        Some(code) => IcmpHeader::dest_unreachable(code, 0)
            .emit_error(ip.get(..total)?, body)
            .ok()?,
    };
    reply.total_len = (20 + len) as u16;
    reply.emit(out.get_mut(ETH..ETH + 20)?).ok()?;
    // MACs swapped, the EtherType kept.
    swap_macs(frame, out)?;
    Some(ETH + 20 + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use strata_proto::checksum;

    fn frame(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; ETH + 20 + l4.len()];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        Ipv4Header {
            header_len: 20,
            tos: 0,
            total_len: (20 + l4.len()) as u16,
            ident: 7,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            ttl: 64,
            protocol: proto,
            checksum: 0,
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
        }
        .emit(&mut f[ETH..])
        .unwrap();
        f[ETH + 20..].copy_from_slice(l4);
        f
    }

    fn syn() -> Vec<u8> {
        let mut seg = [0u8; 20];
        TcpHeader {
            src_port: 40000,
            dst_port: 8080,
            seq: 1000,
            ack: 0,
            header_len: 20,
            flags: TcpFlags::SYN,
            window: 65535,
            checksum: 0,
            urgent: 0,
        }
        .emit(
            &TcpOptions::default(),
            &mut seg,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        )
        .unwrap();
        frame(protocol::TCP, &seg)
    }

    #[test]
    fn a_syn_is_answered_with_rst_ack_to_its_sender() {
        let f = syn();
        let mut out = [0u8; 1600];
        let n = build(&f, RejectWith::TcpReset, &mut out).unwrap();
        assert_eq!(n, ETH + 40);
        assert_eq!(&out[..6], &f[6..12], "back to the sender's MAC");
        let ip = Ipv4Header::parse(&out[ETH..n]).unwrap();
        assert_eq!(
            (ip.src, ip.dst),
            (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1))
        );
        assert!(checksum::verify(&out[ETH..ETH + 20]));
        let seg = &out[ETH + 20..n];
        assert!(TcpHeader::verify_checksum(seg, ip.src, ip.dst));
        let (t, _) = TcpHeader::parse(seg).unwrap();
        assert_eq!((t.src_port, t.dst_port), (8080, 40000));
        assert_eq!((t.seq, t.ack), (0, 1001));
        assert_eq!(t.flags, TcpFlags::RST | TcpFlags::ACK);
    }

    #[test]
    fn port_unreachable_quotes_the_datagram() {
        let f = frame(protocol::UDP, &[0x9c, 0x40, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
        let mut out = [0u8; 1600];
        let n = build(&f, RejectWith::PortUnreachable, &mut out).unwrap();
        let msg = &out[ETH + 20..n];
        assert_eq!((msg[0], msg[1]), (3, 3));
        assert!(checksum::verify(msg));
        assert_eq!(&msg[8..], &f[ETH..], "the whole datagram quoted");
    }

    use crate::packet::build;
    use strata_proto::icmpv6::Icmpv6Header;

    const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn frame6(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(ip);
        f
    }

    #[test]
    fn ipv6_port_unreachable_checksums_and_quotes_up_to_1280_bytes() {
        for (data, with, code) in [
            (12usize, RejectWith::Icmp6PortUnreachable, 4u8),
            (3000, RejectWith::Icmp6AdmProhibited, 1),
            (1, RejectWith::Icmp6AddrUnreachable, 3),
            (1, RejectWith::Icmp6NoRoute, 0),
        ] {
            let f = frame6(&build::udp6(A6, 40000, B6, 53, &vec![7u8; data]));
            let mut out = [0u8; MAX_ANSWER];
            let n = build(&f, with, &mut out).unwrap();
            assert_eq!(&out[..6], &f[6..12], "back to the sender's MAC");
            assert_eq!(&out[12..14], &[0x86, 0xdd]);
            let ip = Ipv6Header::parse(&out[ETH..n]).unwrap();
            assert_eq!((ip.src, ip.dst), (B6.into(), A6.into()));
            assert_eq!(ip.next_header, 58);
            assert!(n - ETH <= 1280, "within the minimum MTU");
            let msg = &out[ETH + 40..n];
            let h = Icmpv6Header::parse(msg, ip.src, ip.dst).expect("checksum verifies");
            assert_eq!((h.icmp_type, h.code), (1, code));
            let quoted = (f.len() - ETH).min(1280 - 48);
            assert_eq!(&msg[8..], &f[ETH..ETH + quoted]);
        }
    }

    #[test]
    fn ipv6_syn_is_answered_with_rst_ack() {
        let f = frame6(&build::tcp6(A6, 40000, B6, 8080, 0x02, 1000, 0, &[]));
        let mut out = [0u8; MAX_ANSWER];
        let n = build(&f, RejectWith::TcpReset, &mut out).unwrap();
        assert_eq!(n, ETH + 60);
        let ip = Ipv6Header::parse(&out[ETH..n]).unwrap();
        assert_eq!((ip.src, ip.dst, ip.next_header), (B6.into(), A6.into(), 6));
        let seg = &out[ETH + 40..n];
        let mut c = pseudo_header_v6(ip.src, ip.dst, 6, 20);
        c.add_bytes(seg);
        assert_eq!(c.sum(), 0xffff, "checksum over the IPv6 pseudo-header");
        let (t, _) = TcpHeader::parse(seg).unwrap();
        assert_eq!(
            (t.src_port, t.dst_port, t.seq, t.ack),
            (8080, 40000, 0, 1001)
        );
        assert_eq!(t.flags, TcpFlags::RST | TcpFlags::ACK);
    }

    #[test]
    fn ipv6_no_answer_to_errors_multicast_or_the_other_family() {
        let mut out = [0u8; MAX_ANSWER];
        let u = build::udp6(A6, 1, B6, 2, b"x");
        let err = frame6(&build::icmp6_error(B6, A6, 1, 4, &u));
        assert_eq!(
            build(&err, RejectWith::Icmp6PortUnreachable, &mut out),
            None
        );
        let mut mcast_src = u.clone();
        mcast_src[8] = 0xff;
        assert_eq!(
            build(
                &frame6(&mcast_src),
                RejectWith::Icmp6PortUnreachable,
                &mut out
            ),
            None
        );
        let mut mcast_dst = u.clone();
        mcast_dst[24] = 0xff;
        assert_eq!(
            build(
                &frame6(&mcast_dst),
                RejectWith::Icmp6PortUnreachable,
                &mut out
            ),
            None
        );
        assert_eq!(
            build(&frame6(&u), RejectWith::PortUnreachable, &mut out),
            None
        );
        assert_eq!(build(&frame6(&u), RejectWith::TcpReset, &mut out), None);
        let v4 = frame(protocol::UDP, &[0, 1, 0, 2, 0, 8, 0, 0]);
        assert_eq!(build(&v4, RejectWith::Icmp6PortUnreachable, &mut out), None);
        let later = build::ip6_ext(A6, B6, 44, &build::frag_hdr(17, 2, false, 1), 99, b"x");
        assert_eq!(
            build(&frame6(&later), RejectWith::Icmp6PortUnreachable, &mut out),
            None
        );
        let f = frame6(&u);
        for cut in 0..f.len() {
            let _ = build(&f[..cut], RejectWith::Icmp6PortUnreachable, &mut out);
        }
        let mut small = [0u8; 60];
        assert_eq!(
            build(&f, RejectWith::Icmp6PortUnreachable, &mut small),
            None
        );
    }

    #[test]
    fn no_answer_to_errors_resets_fragments_or_broadcasts() {
        let mut out = [0u8; 1600];
        let err = frame(protocol::ICMP, &[3, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(build(&err, RejectWith::PortUnreachable, &mut out), None);
        let udp = frame(protocol::UDP, &[0, 1, 0, 2, 0, 8, 0, 0]);
        assert_eq!(build(&udp, RejectWith::TcpReset, &mut out), None);
        let mut bcast = udp.clone();
        bcast[ETH + 16..ETH + 20].copy_from_slice(&[255; 4]);
        strata_proto::ipv4::fill_checksum(&mut bcast[ETH..ETH + 20]);
        assert_eq!(build(&bcast, RejectWith::PortUnreachable, &mut out), None);
        let mut small = [0u8; 20];
        assert_eq!(build(&syn(), RejectWith::TcpReset, &mut small), None);
        for cut in 0..syn().len() {
            let _ = build(&syn()[..cut], RejectWith::TcpReset, &mut out);
        }
    }
}
