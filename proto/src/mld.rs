//! Multicast Listener Discovery version 2 reports (RFC 3810 §5.2): how a
//! node tells the routers and snooping switches on its link which
//! multicast groups it listens to, so that they forward those groups'
//! packets (among them the solicited-node groups neighbour discovery
//! needs).
//!
//! A report is an ICMPv6 message (type 143) sent with hop limit 1 to
//! `ff02::16`, behind a Hop-by-Hop Options header that carries the Router
//! Alert option (RFC 2711) so that routers look at it:
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Type = 143   |    Reserved   |           Checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Reserved            |Nr of Mcast Address Records (M)|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Record Type  |  Aux Data Len |     Number of Sources (N)     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Multicast Address (16 bytes)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   ... further records (M in all)
//! ```
//!
//! Only what a host that joins groups without source filters needs is
//! here: reports with records without sources, and [`Query::parse`] for
//! the queries routers send to learn who still listens (RFC 3810 §5.1;
//! an MLDv1 query, RFC 2710 §3, reads as one without sources).

use std::net::Ipv6Addr;

use crate::icmpv6::fill_checksum;
use crate::ipv6::{next_header, option_type};
use crate::{put16, EmitError};

/// ICMPv6 type of an MLDv2 report (RFC 3810 §5.2).
pub const REPORT_TYPE: u8 = 143;

/// ICMPv6 type of a multicast listener query, of either version (RFC 3810
/// §5.1, RFC 2710 §3.6).
pub const QUERY_TYPE: u8 = 130;

/// Why a query could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MldError {
    /// The ICMPv6 type is not a query's.
    BadType,
    /// Shorter than an MLDv1 query (24 bytes), or an MLDv2 one shorter
    /// than its sources.
    Truncated,
    /// Not sent from a link-local address (RFC 3810 §5.1.14).
    SourceNotLinkLocal,
    /// The IPv6 hop limit is not 1 (RFC 3810 §5).
    BadHopLimit,
    /// The multicast address field is neither `::` nor a multicast
    /// address.
    BadGroup,
}

impl MldError {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            MldError::BadType => "bad_type",
            MldError::Truncated => "truncated",
            MldError::SourceNotLinkLocal => "source_not_link_local",
            MldError::BadHopLimit => "bad_hop_limit",
            MldError::BadGroup => "bad_group",
        }
    }
}

/// A multicast listener query (RFC 3810 §5.1):
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Type = 130   |      Code     |           Checksum            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |    Maximum Response Code      |           Reserved            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                Multicast Address (16 bytes)                   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Resv  |S| QRV |     QQIC      |     Number of Sources (N)     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Source addresses (16 bytes each) ...
/// ```
///
/// An MLDv1 query ends after the multicast address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    /// The longest a listener may wait before answering, in milliseconds
    /// (the Maximum Response Code decoded, RFC 3810 §5.1.3).
    pub max_response_ms: u32,
    /// The group asked about; `::` for a general query.
    pub group: Ipv6Addr,
    /// Sources a group-and-source-specific query names.
    pub sources: u16,
}

impl Query {
    /// Parses the query `msg` (the whole ICMPv6 message, checksum already
    /// verified) that came with IPv6 source `src` and hop limit
    /// `hop_limit`.
    pub fn parse(msg: &[u8], src: Ipv6Addr, hop_limit: u8) -> Result<Query, MldError> {
        if msg.first() != Some(&QUERY_TYPE) {
            return Err(MldError::BadType);
        }
        if msg.len() < 24 {
            return Err(MldError::Truncated);
        }
        if src.segments()[0] & 0xffc0 != 0xfe80 {
            return Err(MldError::SourceNotLinkLocal);
        }
        if hop_limit != HOP_LIMIT {
            return Err(MldError::BadHopLimit);
        }
        let mut g = [0u8; 16];
        g.copy_from_slice(&msg[8..24]);
        let group = Ipv6Addr::from(g);
        if !group.is_unspecified() && !group.is_multicast() {
            return Err(MldError::BadGroup);
        }
        let code = u16::from_be_bytes([msg[4], msg[5]]);
        let sources = if msg.len() >= 28 {
            let n = u16::from_be_bytes([msg[26], msg[27]]);
            if msg.len() < 28 + 16 * usize::from(n) {
                return Err(MldError::Truncated);
            }
            n
        } else {
            0
        };
        Ok(Query {
            max_response_ms: max_response_ms(code),
            group,
            sources,
        })
    }
}

/// Decodes a Maximum Response Code (RFC 3810 §5.1.3): below 32768 it is
/// the delay in milliseconds, above a mantissa and exponent.
pub fn max_response_ms(code: u16) -> u32 {
    if code < 0x8000 {
        u32::from(code)
    } else {
        let mant = u32::from(code & 0x0fff);
        let exp = u32::from((code >> 12) & 0x7);
        (mant | 0x1000) << (exp + 3)
    }
}

/// The group every MLDv2-capable router listens to (RFC 3810 §5.2.14).
pub const ALL_MLDV2_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);

/// The hop limit of every MLD message (RFC 3810 §5).
pub const HOP_LIMIT: u8 = 1;

/// Values of a multicast address record's type (RFC 3810 §5.2.12).
pub mod record_type {
    /// The listener is in exclude mode for the group (a plain "I listen
    /// to it" when the source list is empty).
    pub const MODE_IS_EXCLUDE: u8 = 2;
    /// The listener changed to exclude mode: it joined the group.
    pub const CHANGE_TO_EXCLUDE: u8 = 4;
    /// The listener changed to include mode with no sources: it left.
    pub const CHANGE_TO_INCLUDE: u8 = 3;
}

/// Length of the report's fixed part.
const FIXED_LEN: usize = 8;
/// Length of a record without sources or auxiliary data.
const RECORD_LEN: usize = 20;

/// The length of a report with `records` records.
pub fn report_len(records: usize) -> usize {
    FIXED_LEN + records * RECORD_LEN
}

/// The Hop-by-Hop Options header an MLD message travels behind: next
/// header ICMPv6, the Router Alert option with value 0 ("the datagram
/// contains a Multicast Listener Discovery message", RFC 2711 §2.1) and a
/// two-byte PadN to fill 8 bytes.
pub const HOP_BY_HOP_ROUTER_ALERT: [u8; 8] = [
    next_header::ICMPV6,
    0,
    option_type::ROUTER_ALERT,
    2,
    0,
    0,
    option_type::PADN,
    0,
];

/// Writes a report with one sourceless record per `(record type, group)`
/// of `records` at the start of `msg`, checksummed for `src` to `dst`
/// (RFC 3810 §5.2), and returns its length. Fails with
/// [`EmitError::BufferTooSmall`] when `msg` is shorter than
/// [`report_len`], and with [`EmitError::TooLong`] for more records than
/// the 16-bit count holds.
pub fn emit_report(
    msg: &mut [u8],
    records: &[(u8, Ipv6Addr)],
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> Result<usize, EmitError> {
    let n = u16::try_from(records.len()).map_err(|_| EmitError::TooLong)?;
    let len = report_len(records.len());
    let m = msg.get_mut(..len).ok_or(EmitError::BufferTooSmall)?;
    m.fill(0);
    m[0] = REPORT_TYPE;
    put16(m, 6, n);
    for (i, (kind, group)) in records.iter().enumerate() {
        let r = &mut m[FIXED_LEN + i * RECORD_LEN..][..RECORD_LEN];
        r[0] = *kind;
        r[4..20].copy_from_slice(&group.octets());
    }
    fill_checksum(m, src, dst)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icmpv6::Icmpv6Header;
    use crate::ipv6::{walk, Disposition, Ipv6Header};

    const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

    #[test]
    fn a_report_checksums_and_walks_to_icmpv6_behind_the_router_alert() {
        let groups = [
            (
                record_type::CHANGE_TO_EXCLUDE,
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1),
            ),
            (
                record_type::CHANGE_TO_EXCLUDE,
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2),
            ),
        ];
        let mut pkt = vec![0u8; Ipv6Header::LEN + 8 + report_len(2)];
        let hdr = Ipv6Header {
            traffic_class: 0,
            flow_label: 0,
            payload_len: (8 + report_len(2)) as u16,
            next_header: next_header::HOP_BY_HOP,
            hop_limit: HOP_LIMIT,
            src: LL,
            dst: ALL_MLDV2_ROUTERS,
        };
        hdr.emit(&mut pkt).unwrap();
        pkt[40..48].copy_from_slice(&HOP_BY_HOP_ROUTER_ALERT);
        let n = emit_report(&mut pkt[48..], &groups, LL, ALL_MLDV2_ROUTERS).unwrap();
        assert_eq!(n, 48);
        // The walk skips the router alert (its type's high bits are 00).
        let d = walk(&hdr, &pkt[40..], &[next_header::ICMPV6]);
        assert!(matches!(
            d,
            Disposition::Upper {
                protocol: 58,
                offset: 8,
                ..
            }
        ));
        let msg = &pkt[48..];
        Icmpv6Header::parse(msg, LL, ALL_MLDV2_ROUTERS).expect("checksum");
        assert_eq!(msg[0], REPORT_TYPE);
        assert_eq!(u16::from_be_bytes([msg[6], msg[7]]), 2);
        assert_eq!(msg[8], record_type::CHANGE_TO_EXCLUDE);
        assert_eq!(&msg[12..28], &groups[0].1.octets());
        assert_eq!(&msg[32..48], &groups[1].1.octets());
    }

    #[test]
    fn queries_of_both_versions_parse_and_bad_ones_are_refused() {
        let mut v2 = vec![QUERY_TYPE, 0, 0, 0, 0x27, 0x10, 0, 0];
        v2.extend_from_slice(&[0; 16]);
        v2.extend_from_slice(&[2, 125, 0, 0]);
        let q = Query::parse(&v2, LL, 1).unwrap();
        assert_eq!(
            (q.max_response_ms, q.group, q.sources),
            (10_000, Ipv6Addr::UNSPECIFIED, 0)
        );
        // MLDv1, specific to a group.
        let mut v1 = v2[..24].to_vec();
        let g = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1);
        v1[8..24].copy_from_slice(&g.octets());
        assert_eq!(Query::parse(&v1, LL, 1).unwrap().group, g);
        assert_eq!(Query::parse(&v1[..20], LL, 1), Err(MldError::Truncated));
        assert_eq!(Query::parse(&v1, LL, 2), Err(MldError::BadHopLimit));
        let global = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(
            Query::parse(&v1, global, 1),
            Err(MldError::SourceNotLinkLocal)
        );
        let mut bad = v1.clone();
        bad[8..24].copy_from_slice(&global.octets());
        assert_eq!(Query::parse(&bad, LL, 1), Err(MldError::BadGroup));
        // Three sources announced, none there.
        let mut short = v2.clone();
        short[27] = 3;
        assert_eq!(Query::parse(&short, LL, 1), Err(MldError::Truncated));
        assert_eq!(max_response_ms(0x8000), 0x1000 << 3);
    }

    #[test]
    fn too_small_a_buffer_is_an_error() {
        let mut m = [0u8; 27];
        let g = [(record_type::CHANGE_TO_EXCLUDE, ALL_MLDV2_ROUTERS)];
        assert_eq!(
            emit_report(&mut m, &g, LL, ALL_MLDV2_ROUTERS),
            Err(EmitError::BufferTooSmall)
        );
    }
}
