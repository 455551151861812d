//! A small parsed summary of an IPv4 datagram or IPv6 packet: what rules
//! match on and what conntrack needs. The bytes come off the wire before
//! ipd has seen them, so every read is bounds-checked and nothing here
//! panics or allocates.
//!
//! Addresses of both families are also kept as one 128-bit value, IPv4
//! ones mapped into `::ffff:0:0/96` (RFC 4291 §2.5.5.2, as
//! [`strata_ipc::addrs::mapped`]): rules and conntrack compare those.
//!
//! IPv6 extension headers are skipped the way a firewall skips them
//! (Linux's `ipv6_skip_exthdr`/`ipv6_find_hdr`, which ip6tables uses), not
//! processed the way the destination does (`strata_proto::ipv6::walk`,
//! whose option and Routing header decisions are ipd's): a packet in
//! transit with Segments Left above 0 still has a transport header to
//! match.

use strata_ipc::addrs::mapped;
use strata_proto::icmp::QuotedDatagram;
use strata_proto::ipv6::{next_header as nh, FragmentHeader, Ipv6Header, MAX_EXT_HEADERS};

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

/// The transport tuple inside an ICMP or ICMPv6 error (the datagram it
/// is about).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inner {
    /// Source of the embedded datagram (IPv4; 0 for IPv6).
    pub src: u32,
    /// Destination of the embedded datagram (IPv4; 0 for IPv6).
    pub dst: u32,
    /// Source as 128 bits (IPv4 mapped).
    pub saddr: u128,
    /// Destination as 128 bits (IPv4 mapped).
    pub daddr: u128,
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
    /// Whether the packet is IPv6.
    pub v6: bool,
    /// IPv4 source address (0 for IPv6).
    pub src: u32,
    /// IPv4 destination address (0 for IPv6).
    pub dst: u32,
    /// Source address as 128 bits (IPv4 mapped).
    pub saddr: u128,
    /// Destination address as 128 bits (IPv4 mapped).
    pub daddr: u128,
    /// IP protocol; for IPv6 the upper-layer protocol after the extension
    /// headers (a later fragment: its fragment header's next header).
    pub proto: u8,
    /// The extension headers could not be followed to an upper-layer
    /// protocol (IPv6: truncated, too many, or a later fragment whose
    /// fragmentable part starts with one): `proto` means nothing and no
    /// protocol match holds, negated or not.
    pub proto_unknown: bool,
    /// IP header length in bytes (IPv6: the fixed header's 40).
    pub ihl: u8,
    /// IP total length (IPv6: 40 + payload length).
    pub len: u32,
    /// IP identification (to tie fragments together).
    pub ip_id: u16,
    /// Fragment identification: IPv4's `ip_id`, IPv6's fragment header's.
    pub frag_id: u32,
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

/// ICMPv6 query types conntrack tracks, as (request, reply): echo (RFC
/// 4443 §4).
pub const ICMPV6_QUERIES: [(u8, u8); 1] = [(128, 129)];

/// IP protocol number of ICMPv6.
pub const ICMPV6: u8 = nh::ICMPV6;

/// Whether ICMPv6 type `t` is an error (types 0–127, RFC 4443 §2.1).
pub use strata_proto::icmpv6::is_error as icmpv6_is_error;

/// The query pairs of an ICMP protocol (1 or 58).
pub fn queries(proto: u8) -> &'static [(u8, u8)] {
    if proto == ICMPV6 {
        &ICMPV6_QUERIES
    } else {
        &ICMP_QUERIES
    }
}

/// Whether `ty` is an error of ICMP protocol `proto` (1 or 58).
pub fn is_icmp_error(proto: u8, ty: u8) -> bool {
    if proto == ICMPV6 {
        icmpv6_is_error(ty)
    } else {
        icmp_is_error(ty)
    }
}

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

/// Ports (or ICMP/ICMPv6 ids in tuple order) from the first 8 bytes of
/// an L4 header.
fn l4_ports(proto: u8, l4: &[u8]) -> Option<(u16, u16)> {
    match proto {
        6 | 17 => Some((be16(l4, 0)?, be16(l4, 2)?)),
        1 | ICMPV6 => {
            let ty = *l4.first()?;
            let id = be16(l4, 4)?;
            let q = queries(proto);
            if q.iter().any(|(req, _)| *req == ty) {
                Some((id, 0))
            } else if q.iter().any(|(_, rep)| *rep == ty) {
                Some((0, id))
            } else {
                Some((0, 0))
            }
        }
        _ => Some((0, 0)),
    }
}

impl PacketInfo {
    /// Parses an IPv4 datagram or an IPv6 packet, by its version. `None`
    /// when the IP header itself is bad (version, header length, total
    /// length): such a datagram would not get past ipd either. A short or
    /// bad L4 header only clears [`has_l4`](Self::has_l4).
    pub fn parse(pkt: &[u8], in_if: u8, out_if: u8) -> Option<PacketInfo> {
        match *pkt.first()? >> 4 {
            4 => Self::parse_v4(pkt, in_if, out_if),
            6 => Self::parse_v6(pkt, in_if, out_if),
            _ => None,
        }
    }

    /// [`parse`](Self::parse) for an IPv4 datagram.
    fn parse_v4(pkt: &[u8], in_if: u8, out_if: u8) -> Option<PacketInfo> {
        let vihl = *pkt.first()?;
        let ihl = usize::from(vihl & 0xf) * 4;
        let len = usize::from(be16(pkt, 2)?);
        if ihl < 20 || len < ihl || len > pkt.len() {
            return None;
        }
        let frag_word = be16(pkt, 6)?;
        let offset = frag_word & 0x1fff;
        let more = frag_word & 0x2000 != 0;
        let (src, dst) = (be32(pkt, 12)?, be32(pkt, 16)?);
        let mut p = PacketInfo {
            in_if,
            out_if,
            src,
            dst,
            saddr: mapped(src),
            daddr: mapped(dst),
            proto: pkt[9],
            ihl: ihl as u8,
            len: len as u32,
            ip_id: be16(pkt, 4)?,
            frag_id: u32::from(be16(pkt, 4)?),
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
        p.parse_l4(l4);
        if p.has_l4 && p.proto == 1 && icmp_is_error(p.icmp_type) {
            p.inner = parse_inner(l4, ihl + 8);
        }
        Some(p)
    }

    /// Reads the transport header `l4` of protocol `self.proto` (the
    /// whole rest of the packet): ports, TCP fields, ICMP type and code.
    /// A short or bad header leaves [`has_l4`](Self::has_l4) clear.
    fn parse_l4(&mut self, l4: &[u8]) {
        match self.proto {
            6 => self.parse_tcp(l4),
            17 => {
                if let (Some(s), Some(d)) = (be16(l4, 0), be16(l4, 2)) {
                    if l4.len() >= 8 {
                        (self.sport, self.dport) = (s, d);
                        self.payload = (l4.len() - 8) as u32;
                        self.has_l4 = true;
                    }
                }
            }
            // ICMP belongs to IPv4, ICMPv6 to IPv6; the other way round
            // they are protocols like any.
            1 | ICMPV6 if (self.proto == ICMPV6) == self.v6 => {
                if l4.len() < 8 {
                    return;
                }
                self.icmp_type = l4[0];
                self.icmp_code = l4[1];
                if let Some((s, d)) = l4_ports(self.proto, l4) {
                    (self.sport, self.dport) = (s, d);
                    self.has_l4 = true;
                }
            }
            _ => self.has_l4 = true,
        }
    }

    /// The TCP part of [`parse_l4`](Self::parse_l4).
    fn parse_tcp(&mut self, l4: &[u8]) {
        let Some(doff) = l4.get(12).map(|b| usize::from(b >> 4) * 4) else {
            return;
        };
        if doff < 20 || doff > l4.len() {
            return;
        }
        let (Some(sport), Some(dport), Some(seq), Some(ack), Some(win)) = (
            be16(l4, 0),
            be16(l4, 2),
            be32(l4, 4),
            be32(l4, 8),
            be16(l4, 14),
        ) else {
            return;
        };
        (self.sport, self.dport, self.seq, self.ack, self.win) = (sport, dport, seq, ack, win);
        self.tcp_flags = l4[13];
        self.payload = (l4.len() - doff) as u32;
        if self.tcp_flags & 0x02 != 0 {
            self.wscale = tcp_wscale(&l4[20..doff]);
        }
        self.has_l4 = true;
    }

    /// [`parse`](Self::parse) for an IPv6 packet (RFC 8200 §3): `None`
    /// when the fixed header is bad (version, payload length past the
    /// bytes, a jumbogram), or an address is IPv4-mapped: such addresses
    /// stand for IPv4 nodes inside an IPv6 API (RFC 4291 §2.5.5.2) and
    /// never appear in a packet; in one they would alias IPv4 flows in the
    /// connection table. Extension headers are skipped ([`find_upper`]);
    /// when they cannot be, the packet has no protocol
    /// ([`proto_unknown`](Self::proto_unknown)).
    fn parse_v6(pkt: &[u8], in_if: u8, out_if: u8) -> Option<PacketInfo> {
        let h = Ipv6Header::parse(pkt).ok()?;
        let saddr = u128::from(h.src);
        let daddr = u128::from(h.dst);
        if saddr >> 32 == 0xffff || daddr >> 32 == 0xffff {
            return None;
        }
        let payload = h.payload(pkt);
        let mut p = PacketInfo {
            in_if,
            out_if,
            v6: true,
            saddr,
            daddr,
            ihl: Ipv6Header::LEN as u8,
            len: (Ipv6Header::LEN + payload.len()) as u32,
            wscale: 0xff,
            ..PacketInfo::default()
        };
        match find_upper(h.next_header, payload) {
            Upper::At {
                proto,
                off,
                frag,
                id,
            } => {
                (p.proto, p.frag, p.frag_id) = (proto, frag, id);
                let l4 = payload.get(off..).unwrap_or(&[]);
                p.parse_l4(l4);
                if p.has_l4 && proto == ICMPV6 && icmpv6_is_error(p.icmp_type) {
                    p.inner = parse_inner6(l4, Ipv6Header::LEN + off + 8);
                }
            }
            Upper::Later { proto, id } => {
                (p.proto, p.frag, p.frag_id) = (proto, Frag::Later, id);
                p.proto_unknown = is_ext_header(proto);
            }
            Upper::Unknown => p.proto_unknown = true,
        }
        Some(p)
    }
}

/// Where [`find_upper`] found the upper-layer header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upper {
    /// Protocol `proto` starts at `off` in the payload; `frag` says whether
    /// a fragment header (the first fragment's, or an atomic one's) came
    /// before, with identification `id`.
    At {
        /// The upper-layer protocol.
        proto: u8,
        /// Its offset in the payload.
        off: usize,
        /// None, or First.
        frag: Frag,
        /// Fragment identification (0 without a fragment header).
        id: u32,
    },
    /// A fragment other than the first: no upper-layer header here;
    /// `proto` is its fragment header's next header.
    Later {
        /// Next header of the fragment header.
        proto: u8,
        /// Fragment identification.
        id: u32,
    },
    /// Truncated, or more than [`MAX_EXT_HEADERS`] extension headers.
    Unknown,
}

/// Whether `h` is an IPv6 extension header [`find_upper`] skips.
fn is_ext_header(h: u8) -> bool {
    matches!(
        h,
        nh::HOP_BY_HOP | nh::ROUTING | nh::FRAGMENT | nh::DEST_OPTS | nh::AH
    )
}

/// Skips the IPv6 extension headers in front of the upper-layer header of
/// a packet whose fixed header names `first` (RFC 8200 §4), as Linux's
/// `ipv6_skip_exthdr` does for netfilter: Hop-by-Hop, Routing and
/// Destination Options by their length (RFC 8200 §4.3, §4.4, §4.6), AH
/// by its own (RFC 4302 §2.2), a fragment header (§4.5) to the header
/// after it for a first or atomic fragment (RFC 6946). `payload` may be
/// cut short (a quoted packet): what does not fit is [`Upper::Unknown`].
pub fn find_upper(first: u8, payload: &[u8]) -> Upper {
    let mut next = first;
    let mut off = 0usize;
    let mut frag = Frag::None;
    let mut id = 0;
    for _ in 0..=MAX_EXT_HEADERS {
        let rest = payload.get(off..).unwrap_or(&[]);
        let len = match next {
            nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS => {
                (usize::from(rest.get(1).copied().unwrap_or(0)) + 1) * 8
            }
            nh::AH => (usize::from(rest.get(1).copied().unwrap_or(0)) + 2) * 4,
            nh::FRAGMENT => {
                let Ok(f) = FragmentHeader::parse(rest) else {
                    return Upper::Unknown;
                };
                id = f.ident;
                if f.offset != 0 {
                    return Upper::Later {
                        proto: f.next_header,
                        id,
                    };
                }
                if f.more {
                    frag = Frag::First;
                }
                FragmentHeader::LEN
            }
            proto => {
                return Upper::At {
                    proto,
                    off,
                    frag,
                    id,
                }
            }
        };
        if rest.len() < len.max(2) {
            return Upper::Unknown;
        }
        next = rest[0];
        off += len;
    }
    Upper::Unknown
}

/// The embedded packet of an ICMPv6 error `icmp` (RFC 4443 §2.4 (c)): its
/// fixed header, extension headers skipped, and the first 8 bytes of its
/// transport header (ports, or an echo's type and identifier). `None`
/// when they are not all there, or the quoted packet is itself an ICMPv6
/// error (none is sent about one, RFC 4443 §2.4 (e)).
fn parse_inner6(icmp: &[u8], base: usize) -> Option<Inner> {
    let quoted = icmp.get(8..)?;
    let h = Ipv6Header::parse_quoted(quoted).ok()?;
    let payload = quoted.get(Ipv6Header::LEN..)?;
    let Upper::At { proto, off, .. } = find_upper(h.next_header, payload) else {
        return None;
    };
    let l4 = payload.get(off..off + 8)?;
    if proto == ICMPV6 && icmpv6_is_error(l4[0]) {
        return None;
    }
    let (sport, dport) = l4_ports(proto, l4)?;
    Some(Inner {
        saddr: u128::from(h.src),
        daddr: u128::from(h.dst),
        proto,
        sport,
        dport,
        off: u16::try_from(base).ok()?,
        ihl: Ipv6Header::LEN as u8,
        ..Inner::default()
    })
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
        saddr: mapped(u32::from(q.src)),
        daddr: mapped(u32::from(q.dst)),
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
    use strata_proto::checksum::{checksum, pseudo_header_v4, pseudo_header_v6};

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

    /// An IPv6 packet from `src` to `dst` whose payload is `ext` (whole
    /// extension headers, the first named by the fixed header as
    /// `first`, each naming the next) then `l4` of protocol `proto`, with
    /// the transport checksum filled over the pseudo-header.
    pub fn ip6_ext(
        src: [u8; 16],
        dst: [u8; 16],
        first: u8,
        ext: &[u8],
        proto: u8,
        l4: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        p[6] = if ext.is_empty() { proto } else { first };
        p[7] = 64;
        p[8..24].copy_from_slice(&src);
        p[24..40].copy_from_slice(&dst);
        p.extend_from_slice(ext);
        let at = p.len();
        p.extend_from_slice(l4);
        let off = match proto {
            6 => 16,
            17 => 6,
            58 => 2,
            _ => return p,
        };
        // The checksum field is summed as zero (`l4` may carry one).
        if let Some(f) = p.get_mut(at + off..at + off + 2) {
            f.fill(0);
        }
        let mut c = pseudo_header_v6(src.into(), dst.into(), proto, l4.len() as u32);
        c.add_bytes(&p[at..]);
        let mut v = c.finish();
        if proto == 17 && v == 0 {
            v = 0xffff;
        }
        if let Some(f) = p.get_mut(at + off..at + off + 2) {
            f.copy_from_slice(&v.to_be_bytes());
        }
        p
    }

    /// An IPv6 packet without extension headers.
    pub fn ip6(src: [u8; 16], dst: [u8; 16], proto: u8, l4: &[u8]) -> Vec<u8> {
        ip6_ext(src, dst, proto, &[], proto, l4)
    }

    /// The IPv4 TCP segment of [`tcp`] as IPv6.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp6(
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let v4 = tcp(
            [0; 4], sport, [0; 4], dport, flags, seq, ack, 65535, payload,
        );
        ip6(src, dst, 6, &v4[20..])
    }

    /// A UDP datagram over IPv6.
    pub fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, payload: &[u8]) -> Vec<u8> {
        let v4 = udp([0; 4], sport, [0; 4], dport, payload);
        ip6(src, dst, 17, &v4[20..])
    }

    /// An ICMPv6 message of `ty`/`code` whose second word is `word`, then
    /// `data`.
    pub fn icmp6(
        src: [u8; 16],
        dst: [u8; 16],
        ty: u8,
        code: u8,
        word: u32,
        data: &[u8],
    ) -> Vec<u8> {
        let mut l4 = vec![ty, code, 0, 0];
        l4.extend_from_slice(&word.to_be_bytes());
        l4.extend_from_slice(data);
        ip6(src, dst, 58, &l4)
    }

    /// An ICMPv6 echo request (128) or reply (129).
    pub fn icmp6_echo(src: [u8; 16], dst: [u8; 16], ty: u8, id: u16, seq: u16) -> Vec<u8> {
        icmp6(
            src,
            dst,
            ty,
            0,
            u32::from(id) << 16 | u32::from(seq),
            b"pingdata",
        )
    }

    /// An ICMPv6 error of `ty`/`code` quoting all of `orig`.
    pub fn icmp6_error(src: [u8; 16], dst: [u8; 16], ty: u8, code: u8, orig: &[u8]) -> Vec<u8> {
        icmp6(src, dst, ty, code, 0, orig)
    }

    /// A fragment header naming `next`, at 8-byte `offset`, with M `more`.
    pub fn frag_hdr(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
        let mut f = vec![next, 0];
        f.extend_from_slice(&(offset << 3 | u16::from(more)).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f
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

    pub(crate) const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    pub(crate) const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// A Destination Options header naming `next`, 8 bytes of padding.
    fn dest_opts(next: u8) -> Vec<u8> {
        vec![next, 0, 1, 4, 0, 0, 0, 0]
    }

    #[test]
    fn ipv6_tcp_behind_extension_headers() {
        let seg = build::tcp6(A6, 40000, B6, 22, 0x02, 9, 0, &[]);
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop -> dest opts
        ext.extend(dest_opts(6));
        let p = build::ip6_ext(A6, B6, 0, &ext, 6, &seg[40..]);
        let i = PacketInfo::parse(&p, 0, NO_IF).unwrap();
        assert!(i.v6 && i.has_l4 && !i.proto_unknown);
        assert_eq!((i.proto, i.sport, i.dport, i.tcp_flags), (6, 40000, 22, 2));
        assert_eq!(i.saddr, u128::from_be_bytes(A6));
        assert_eq!(i.len as usize, p.len());
    }

    #[test]
    fn ipv6_fragments() {
        let u = build::udp6(A6, 5000, B6, 53, b"query");
        let first = build::ip6_ext(A6, B6, 44, &build::frag_hdr(17, 0, true, 77), 17, &u[40..]);
        let i = PacketInfo::parse(&first, 0, 0).unwrap();
        assert_eq!(
            (i.frag, i.frag_id, i.proto, i.dport),
            (Frag::First, 77, 17, 53)
        );
        assert!(i.has_l4);
        let later = build::ip6_ext(A6, B6, 44, &build::frag_hdr(17, 2, false, 77), 99, b"rest");
        let i = PacketInfo::parse(&later, 0, 0).unwrap();
        assert_eq!((i.frag, i.frag_id, i.proto), (Frag::Later, 77, 17));
        assert!(!i.has_l4 && !i.proto_unknown);
        // An atomic fragment (RFC 6946) is a whole packet.
        let atomic = build::ip6_ext(A6, B6, 44, &build::frag_hdr(17, 0, false, 5), 17, &u[40..]);
        let i = PacketInfo::parse(&atomic, 0, 0).unwrap();
        assert_eq!((i.frag, i.dport), (Frag::None, 53));
        // A later fragment whose fragmentable part starts with options.
        let later = build::ip6_ext(A6, B6, 44, &build::frag_hdr(60, 2, false, 7), 99, b"x");
        assert!(PacketInfo::parse(&later, 0, 0).unwrap().proto_unknown);
    }

    #[test]
    fn ipv6_too_many_or_truncated_headers_hide_the_protocol() {
        let mut ext = Vec::new();
        for _ in 0..12 {
            ext.extend(dest_opts(60));
        }
        let p = build::ip6_ext(A6, B6, 60, &ext, 17, &[0; 8]);
        let i = PacketInfo::parse(&p, 0, 0).unwrap();
        assert!(i.proto_unknown && !i.has_l4);
        // Options running past the payload.
        let p = build::ip6_ext(A6, B6, 60, &[17, 3, 1, 0, 0, 0, 0, 0], 17, &[]);
        assert!(PacketInfo::parse(&p, 0, 0).unwrap().proto_unknown);
    }

    #[test]
    fn ipv6_malformed_is_refused_and_never_panics() {
        let p = build::udp6(A6, 1, B6, 2, b"x");
        assert!(PacketInfo::parse(&p[..p.len() - 1], 0, 0).is_none());
        assert!(PacketInfo::parse(&p[..39], 0, 0).is_none());
        let mut mapped = p.clone();
        mapped[8..24].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]);
        assert!(PacketInfo::parse(&mapped, 0, 0).is_none());
        let e = build::icmp6_error(B6, A6, 1, 4, &p);
        for cut in 0..e.len() {
            let mut q = e[..cut].to_vec();
            if cut >= 6 {
                let n = cut.saturating_sub(40) as u16;
                q[4..6].copy_from_slice(&n.to_be_bytes());
            }
            let _ = PacketInfo::parse(&q, 0, 0);
        }
    }

    #[test]
    fn icmpv6_echo_and_error_inner() {
        let e = build::icmp6_echo(A6, B6, 128, 7, 1);
        let i = PacketInfo::parse(&e, 0, 0).unwrap();
        assert_eq!((i.proto, i.icmp_type, i.sport, i.dport), (58, 128, 7, 0));
        let u = build::udp6(A6, 5000, B6, 53, b"q");
        let err = build::icmp6_error(B6, A6, 1, 4, &u);
        let inner = PacketInfo::parse(&err, 0, 0).unwrap().inner.unwrap();
        assert_eq!((inner.proto, inner.sport, inner.dport), (17, 5000, 53));
        assert_eq!(inner.saddr, u128::from_be_bytes(A6));
        // No error about an error.
        let err2 = build::icmp6_error(A6, B6, 1, 4, &err);
        assert_eq!(PacketInfo::parse(&err2, 0, 0).unwrap().inner, None);
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
