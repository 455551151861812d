//! The answer a REJECT rule sends: an ICMP destination unreachable or a
//! TCP RST to the rejected packet's sender (as Linux's `ipt_REJECT`),
//! written as a whole Ethernet frame.
//!
//! The frame's MAC addresses are the rejected frame's, swapped: a packet
//! rejected on its way in came from the neighbour that sent it, so the
//! answer goes back to that neighbour; a packet rejected on its way out
//! carries our address as source and the next hop's as destination, so
//! swapped they make the answer look received from that next hop, which
//! is how it is handed up to ipd.

use strata_proto::icmp::{self, IcmpHeader};
use strata_proto::ipv4::{protocol, Ipv4Header};
use strata_proto::tcp::{TcpFlags, TcpHeader, TcpOptions};

use crate::rule::RejectWith;

const ETH: usize = 14;

/// Writes the answer to the Ethernet frame `frame` (IPv4 at byte 14) into
/// `out`; returns its length, or `None` when no answer may be sent: the
/// rejected packet is an ICMP message other than a query or a RST (no
/// answer to an answer), a fragment other than the first, not from a
/// unicast source, malformed, or a RST was asked for a packet that is not
/// TCP. The ICMP error quotes as much of the datagram as Linux does
/// ([`IcmpHeader::emit_error`]).
pub fn build(frame: &[u8], with: RejectWith, out: &mut [u8]) -> Option<usize> {
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
            let rst = TcpHeader {
                src_port: t.dst_port,
                dst_port: t.src_port,
                seq,
                ack,
                header_len: 20,
                flags,
                window: 0,
                checksum: 0,
                urgent: 0,
            };
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
    out[..6].copy_from_slice(frame.get(6..12)?);
    out[6..12].copy_from_slice(frame.get(..6)?);
    out[12..14].copy_from_slice(frame.get(12..14)?);
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
