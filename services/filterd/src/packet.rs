//! A small parsed summary of an IPv4 datagram: what rules match on and
//! what conntrack needs. The bytes come off the wire before ipd has seen
//! them, so every read is bounds-checked and nothing here panics.

use strata_proto::icmp::QuotedDatagram;

/// No interface (the handle's `NO_IFACE`).
pub const NO_IF: u8 = 0xff;

/// Where a datagram sits among its fragments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frag {
    /// Not fragmented.
    #[default]
    None,
    /// First fragment (offset 0, more fragments): has the L4 header.
    First,
    /// A later fragment: no L4 header.
    Later,
}

/// The transport tuple inside an ICMP error (the datagram it is about).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inner {
    /// Source of the embedded datagram.
    pub src: u32,
    /// Destination of the embedded datagram.
    pub dst: u32,
    /// Its protocol.
    pub proto: u8,
    /// Source port (ICMP echo: the id for a request, 0 for a reply).
    pub sport: u16,
    /// Destination port (ICMP echo: 0 for a request, the id for a reply).
    pub dport: u16,
    /// Offset of the embedded IP header in the datagram.
    pub off: u16,
    /// Embedded IP header length.
    pub ihl: u8,
}

/// What rules and conntrack see of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketInfo {
    /// Input interface index, [`NO_IF`] for locally sent packets.
    pub in_if: u8,
    /// Output interface index, [`NO_IF`] before routing.
    pub out_if: u8,
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// IP protocol.
    pub proto: u8,
    /// IP header length in bytes.
    pub ihl: u8,
    /// IP total length.
    pub len: u16,
    /// IP identification (to tie fragments together).
    pub ip_id: u16,
    /// Fragment position.
    pub frag: Frag,
    /// Whether the L4 header was present and whole (ports, ICMP type,
    /// TCP fields below are meaningful only then).
    pub has_l4: bool,
    /// TCP/UDP source port; ICMP echo/timestamp request: the id.
    pub sport: u16,
    /// TCP/UDP destination port; ICMP echo/timestamp reply: the id.
    pub dport: u16,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// TCP flags.
    pub tcp_flags: u8,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgment number.
    pub ack: u32,
    /// TCP window (unscaled).
    pub win: u16,
    /// TCP window scale option of a SYN, 0xff if none.
    pub wscale: u8,
    /// TCP payload length.
    pub payload: u32,
    /// For ICMP errors whose embedded datagram could be read.
    pub inner: Option<Inner>,
}

/// ICMP types that are errors and so carry an embedded datagram (and are
/// never answered with an error): strata-proto's one definition.
pub use strata_proto::icmp::is_error as icmp_is_error;

/// ICMP query types conntrack tracks, as (request, reply).
pub const ICMP_QUERIES: [(u8, u8); 3] = [(8, 0), (13, 14), (15, 16)];

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Ports (or ICMP ids in tuple order) from the first 8 bytes of an L4
/// header.
fn l4_ports(proto: u8, l4: &[u8]) -> Option<(u16, u16)> {
    match proto {
        6 | 17 => Some((be16(l4, 0)?, be16(l4, 2)?)),
        1 => {
            let ty = *l4.first()?;
            let id = be16(l4, 4)?;
            if ICMP_QUERIES.iter().any(|(req, _)| *req == ty) {
                Some((id, 0))
            } else if ICMP_QUERIES.iter().any(|(_, rep)| *rep == ty) {
                Some((0, id))
            } else {
                Some((0, 0))
            }
        }
        _ => Some((0, 0)),
    }
}

impl PacketInfo {
    /// Parses an IPv4 datagram. `None` when the IP header itself is bad
    /// (version, header length, total length): such a datagram would not
    /// get past ipd either. A short or bad L4 header only clears
    /// [`has_l4`](Self::has_l4).
    pub fn parse(pkt: &[u8], in_if: u8, out_if: u8) -> Option<PacketInfo> {
        let vihl = *pkt.first()?;
        if vihl >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(vihl & 0xf) * 4;
        let len = usize::from(be16(pkt, 2)?);
        if ihl < 20 || len < ihl || len > pkt.len() {
            return None;
        }
        let frag_word = be16(pkt, 6)?;
        let offset = frag_word & 0x1fff;
        let more = frag_word & 0x2000 != 0;
        let mut p = PacketInfo {
            in_if,
            out_if,
            src: be32(pkt, 12)?,
            dst: be32(pkt, 16)?,
            proto: pkt[9],
            ihl: ihl as u8,
            len: len as u16,
            ip_id: be16(pkt, 4)?,
            frag: if offset != 0 {
                Frag::Later
            } else if more {
                Frag::First
            } else {
                Frag::None
            },
            wscale: 0xff,
            ..PacketInfo::default()
        };
        if p.frag == Frag::Later {
            return Some(p);
        }
        let l4 = &pkt[ihl..len];
        match p.proto {
            6 => {
                let Some(doff) = l4.get(12).map(|b| usize::from(b >> 4) * 4) else {
                    return Some(p);
                };
                if doff < 20 || doff > l4.len() {
                    return Some(p);
                }
                p.sport = be16(l4, 0)?;
                p.dport = be16(l4, 2)?;
                p.seq = be32(l4, 4)?;
                p.ack = be32(l4, 8)?;
                p.tcp_flags = l4[13];
                p.win = be16(l4, 14)?;
                p.payload = (l4.len() - doff) as u32;
                if p.tcp_flags & 0x02 != 0 {
                    p.wscale = tcp_wscale(&l4[20..doff]);
                }
                p.has_l4 = true;
            }
            17 => {
                if l4.len() < 8 {
                    return Some(p);
                }
                p.sport = be16(l4, 0)?;
                p.dport = be16(l4, 2)?;
                p.payload = (l4.len() - 8) as u32;
                p.has_l4 = true;
            }
            1 => {
                if l4.len() < 8 {
                    return Some(p);
                }
                p.icmp_type = l4[0];
                p.icmp_code = l4[1];
                let (s, d) = l4_ports(1, l4)?;
                p.sport = s;
                p.dport = d;
                p.has_l4 = true;
                if icmp_is_error(p.icmp_type) {
                    p.inner = parse_inner(l4, ihl + 8);
                }
            }
            _ => p.has_l4 = true,
        }
        Some(p)
    }
}

/// The embedded datagram of an ICMP error: its IP header and the first 8
/// bytes after it (all RFC 792 promises), as [`QuotedDatagram::parse`]
/// reads them (only the first fragment of the embedded datagram has
/// ports).
fn parse_inner(icmp: &[u8], base: usize) -> Option<Inner> {
    let q = QuotedDatagram::parse(icmp.get(8..)?).ok()?;
    let (sport, dport) = l4_ports(q.protocol, &q.transport)?;
    if q.protocol == 1 && icmp_is_error(q.transport[0]) {
        // An error about an error is never sent (RFC 1122 3.2.2).
        return None;
    }
    Some(Inner {
        src: u32::from(q.src),
        dst: u32::from(q.dst),
        proto: q.protocol,
        sport,
        dport,
        off: u16::try_from(base).ok()?,
        ihl: q.header_len,
    })
}

/// The window scale option in a SYN's options, 0xff if absent or
/// malformed.
fn tcp_wscale(mut opts: &[u8]) -> u8 {
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                let Some(&len) = opts.get(1) else { break };
                let len = usize::from(len);
                if len < 2 || len > opts.len() {
                    break;
                }
                if kind == 3 && len == 3 {
                    return opts[2].min(14);
                }
                opts = &opts[len..];
            }
        }
    }
    0xff
}

#[cfg(test)]
pub(crate) mod build {
    //! Test packet builders with correct checksums.
    use strata_proto::checksum::{checksum, pseudo_header_v4};

    pub fn ip(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let len = 20 + l4.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..].copy_from_slice(l4);
        let l4c = match proto {
            6 | 17 => {
                let mut c = pseudo_header_v4(src.into(), dst.into(), proto, l4.len() as u16);
                c.add_bytes(l4);
                let v = c.finish();
                if proto == 17 && v == 0 {
                    0xffff
                } else {
                    v
                }
            }
            1 => checksum(l4),
            _ => return p,
        };
        let at = 20
            + match proto {
                6 => 16,
                17 => 6,
                _ => 2,
            };
        if let Some(f) = p.get_mut(at..at + 2) {
            f.copy_from_slice(&l4c.to_be_bytes());
        }
        p
    }

    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        win: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut l4 = vec![0u8; 20];
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        l4[4..8].copy_from_slice(&seq.to_be_bytes());
        l4[8..12].copy_from_slice(&ack.to_be_bytes());
        l4[12] = 5 << 4;
        l4[13] = flags;
        l4[14..16].copy_from_slice(&win.to_be_bytes());
        l4.extend_from_slice(payload);
        ip(src, dst, 6, &l4)
    }

    pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut l4 = vec![0u8; 8];
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        l4[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(payload);
        ip(src, dst, 17, &l4)
    }

    pub fn icmp_echo(src: [u8; 4], dst: [u8; 4], ty: u8, id: u16, seq: u16) -> Vec<u8> {
        let mut l4 = vec![ty, 0, 0, 0];
        l4.extend_from_slice(&id.to_be_bytes());
        l4.extend_from_slice(&seq.to_be_bytes());
        l4.extend_from_slice(b"pingdata");
        ip(src, dst, 1, &l4)
    }

    /// An ICMP error of `ty`/`code` from `src` to `dst` quoting `orig`.
    pub fn icmp_error(src: [u8; 4], dst: [u8; 4], ty: u8, code: u8, orig: &[u8]) -> Vec<u8> {
        let mut l4 = vec![ty, code, 0, 0, 0, 0, 0, 0];
        let n = orig.len().min(28);
        l4.extend_from_slice(&orig[..n]);
        ip(src, dst, 1, &l4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_syn_with_wscale() {
        let mut p = build::tcp(
            [10, 0, 0, 1],
            1000,
            [10, 0, 0, 2],
            80,
            0x02,
            7,
            0,
            1000,
            &[],
        );
        // Splice in options: MSS, NOP, WS 7.
        let opts = [2u8, 4, 5, 0xb4, 1, 3, 3, 7];
        p.splice(40..40, opts);
        p[32] = 7 << 4;
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let i = PacketInfo::parse(&p, 1, NO_IF).unwrap();
        assert!(i.has_l4);
        assert_eq!(
            (i.sport, i.dport, i.seq, i.tcp_flags, i.wscale),
            (1000, 80, 7, 2, 7)
        );
    }

    #[test]
    fn short_and_bad_headers() {
        assert!(PacketInfo::parse(&[], 0, 0).is_none());
        assert!(PacketInfo::parse(&[0x45; 19], 0, 0).is_none());
        let p = build::udp([1, 1, 1, 1], 1, [2, 2, 2, 2], 2, b"x");
        assert!(PacketInfo::parse(&p[..p.len() - 1], 0, 0).is_none());
        let mut q = p.clone();
        q[2..4].copy_from_slice(&24u16.to_be_bytes());
        let i = PacketInfo::parse(&q, 0, 0).unwrap();
        assert!(!i.has_l4);
    }

    #[test]
    fn icmp_error_inner() {
        let u = build::udp([10, 0, 0, 1], 5000, [10, 0, 0, 2], 53, b"q");
        let e = build::icmp_error([10, 0, 0, 2], [10, 0, 0, 1], 3, 3, &u);
        let i = PacketInfo::parse(&e, 0, 0).unwrap();
        let inner = i.inner.unwrap();
        assert_eq!((inner.proto, inner.sport, inner.dport), (17, 5000, 53));
        assert_eq!(inner.src, u32::from_be_bytes([10, 0, 0, 1]));
    }
}
