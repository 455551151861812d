//! ARP (RFC 826) for IPv4 over Ethernet — the only combination the stack
//! speaks.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      hardware type (1)        |     protocol type (0x0800)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  hlen (6)     |   plen (4)    |          operation            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            sender MAC, sender IP, target MAC, target IP       |
//! |                       (6 + 4 + 6 + 4 bytes)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::fmt;
use std::net::Ipv4Addr;

use crate::ethernet::{ethertype, MacAddr};
use crate::{be16, put16, EmitError};

/// Operation code of a request ("who has target_ip?").
pub const OP_REQUEST: u16 = 1;
/// Operation code of a reply ("target_ip is at sender_mac").
pub const OP_REPLY: u16 = 2;

/// Hardware type of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// Why an ARP packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpError {
    /// Shorter than the 28 bytes of an Ethernet/IPv4 ARP packet.
    Truncated,
    /// Hardware type is not Ethernet (1).
    BadHardwareType,
    /// Protocol type is not IPv4 (0x0800).
    BadProtocolType,
    /// Hardware address length is not 6 or protocol address length not 4.
    BadAddressLen,
    /// Operation is neither request (1) nor reply (2).
    BadOp,
}

impl ArpError {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            ArpError::Truncated => "truncated",
            ArpError::BadHardwareType => "bad_hardware_type",
            ArpError::BadProtocolType => "bad_protocol_type",
            ArpError::BadAddressLen => "bad_address_len",
            ArpError::BadOp => "bad_op",
        }
    }
}

impl fmt::Display for ArpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArpError::Truncated => "ARP packet truncated",
            ArpError::BadHardwareType => "ARP hardware type is not Ethernet",
            ArpError::BadProtocolType => "ARP protocol type is not IPv4",
            ArpError::BadAddressLen => "ARP address lengths are not 6 and 4",
            ArpError::BadOp => "ARP operation is not request or reply",
        })
    }
}

impl std::error::Error for ArpError {}

/// An Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpPacket {
    /// Operation: [`OP_REQUEST`] or [`OP_REPLY`].
    pub op: u16,
    /// Hardware address of the sender.
    pub sender_mac: MacAddr,
    /// Protocol address of the sender.
    pub sender_ip: Ipv4Addr,
    /// Hardware address of the target ([`MacAddr::ZERO`] in a request).
    pub target_mac: MacAddr,
    /// Protocol address of the target.
    pub target_ip: Ipv4Addr,
}

impl ArpPacket {
    /// Length of an Ethernet/IPv4 ARP packet in bytes. (Frames carrying it
    /// are usually padded to the Ethernet minimum; the padding is ignored.)
    pub const LEN: usize = 28;

    /// A request from `sender_mac`/`sender_ip` asking for `target_ip`'s MAC.
    /// For a gratuitous ARP announcement, pass `target_ip == sender_ip`.
    pub fn request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        ArpPacket {
            op: OP_REQUEST,
            sender_mac,
            sender_ip,
            target_mac: MacAddr::ZERO,
            target_ip,
        }
    }

    /// The reply to this request, sent by the owner of `self.target_ip`
    /// whose hardware address is `my_mac`.
    pub fn reply(&self, my_mac: MacAddr) -> Self {
        ArpPacket {
            op: OP_REPLY,
            sender_mac: my_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// Parses an ARP packet at the start of `b` (trailing padding is
    /// ignored), checking that it is Ethernet/IPv4 and a request or reply.
    pub fn parse(b: &[u8]) -> Result<Self, ArpError> {
        if b.len() < Self::LEN {
            return Err(ArpError::Truncated);
        }
        if be16(b, 0) != HTYPE_ETHERNET {
            return Err(ArpError::BadHardwareType);
        }
        if be16(b, 2) != ethertype::IPV4 {
            return Err(ArpError::BadProtocolType);
        }
        if b[4] != 6 || b[5] != 4 {
            return Err(ArpError::BadAddressLen);
        }
        let op = be16(b, 6);
        if op != OP_REQUEST && op != OP_REPLY {
            return Err(ArpError::BadOp);
        }
        let mac = |at: usize| MacAddr::from_bytes(&b[at..]).ok_or(ArpError::Truncated);
        let ip = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
        Ok(ArpPacket {
            op,
            sender_mac: mac(8)?,
            sender_ip: ip(14),
            target_mac: mac(18)?,
            target_ip: ip(24),
        })
    }

    /// Writes the packet into the first 28 bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), EmitError> {
        let p = b.get_mut(..Self::LEN).ok_or(EmitError::BufferTooSmall)?;
        put16(p, 0, HTYPE_ETHERNET);
        put16(p, 2, ethertype::IPV4);
        p[4] = 6;
        p[5] = 4;
        put16(p, 6, self.op);
        p[8..14].copy_from_slice(&self.sender_mac.0);
        p[14..18].copy_from_slice(&self.sender_ip.octets());
        p[18..24].copy_from_slice(&self.target_mac.0);
        p[24..28].copy_from_slice(&self.target_ip.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real ARP request (payload of a broadcast frame): who has
    /// 192.168.1.1? tell 192.168.1.100 (52:54:00:12:34:56), with padding.
    const REQUEST: [u8; 46] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0xc0,
        0xa8, 0x01, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x01, 0x01, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn known_request() {
        let p = ArpPacket::parse(&REQUEST).unwrap();
        let mac = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let expected = ArpPacket::request(
            mac,
            Ipv4Addr::new(192, 168, 1, 100),
            Ipv4Addr::new(192, 168, 1, 1),
        );
        assert_eq!(p, expected);
        let mut out = [0u8; 28];
        p.emit(&mut out).unwrap();
        assert_eq!(out[..], REQUEST[..28]);

        let me = MacAddr([0x02, 0, 0, 0, 0, 1]);
        let r = p.reply(me);
        assert_eq!(r.op, OP_REPLY);
        assert_eq!(r.sender_mac, me);
        assert_eq!(r.sender_ip, Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(r.target_mac, mac);
        assert_eq!(r.target_ip, Ipv4Addr::new(192, 168, 1, 100));
    }

    #[test]
    fn rejects() {
        assert_eq!(ArpPacket::parse(&REQUEST[..27]), Err(ArpError::Truncated));
        let mut b = REQUEST;
        b[1] = 6;
        assert_eq!(ArpPacket::parse(&b), Err(ArpError::BadHardwareType));
        let mut b = REQUEST;
        b[2] = 0x86;
        assert_eq!(ArpPacket::parse(&b), Err(ArpError::BadProtocolType));
        let mut b = REQUEST;
        b[4] = 8;
        assert_eq!(ArpPacket::parse(&b), Err(ArpError::BadAddressLen));
        let mut b = REQUEST;
        b[5] = 16;
        assert_eq!(ArpPacket::parse(&b), Err(ArpError::BadAddressLen));
        let mut b = REQUEST;
        b[7] = 3;
        assert_eq!(ArpPacket::parse(&b), Err(ArpError::BadOp));
        assert_eq!(ArpError::BadOp.reason(), "bad_op");
        let p = ArpPacket::parse(&REQUEST).unwrap();
        assert_eq!(p.emit(&mut [0u8; 27]), Err(EmitError::BufferTooSmall));
    }

    proptest! {
        #[test]
        fn round_trip(
            reply in any::<bool>(),
            smac in any::<[u8; 6]>(), sip in any::<u32>(),
            tmac in any::<[u8; 6]>(), tip in any::<u32>(),
        ) {
            let p = ArpPacket {
                op: if reply { OP_REPLY } else { OP_REQUEST },
                sender_mac: MacAddr(smac),
                sender_ip: Ipv4Addr::from(sip),
                target_mac: MacAddr(tmac),
                target_ip: Ipv4Addr::from(tip),
            };
            let mut b = [0u8; 28];
            p.emit(&mut b).unwrap();
            prop_assert_eq!(ArpPacket::parse(&b), Ok(p));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ArpPacket::parse(&b);
        }

        #[test]
        fn parse_never_panics_valid_prefix(tail in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut b = REQUEST[..8].to_vec();
            b.extend_from_slice(&tail);
            let _ = ArpPacket::parse(&b);
        }
    }
}
