//! Ethernet II frames: MAC addresses and the 14-byte header.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  destination MAC (6 bytes)                    |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+       source MAC (6 bytes)    +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           EtherType           |   payload ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The frame check sequence is not part of what the stack sees (devices
//! strip and add it). VLAN tags are not interpreted: a tagged frame parses
//! with [`ethertype::VLAN`] and the tag at the start of the payload.

use core::fmt;
use core::str::FromStr;

use crate::EmitError;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// The all-zero address `00:00:00:00:00:00` (ARP's "unknown" target).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the I/G (group) bit is set: multicast, including broadcast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is an individual (unicast) address: the I/G bit is clear.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Whether the U/L bit is set: a locally administered address.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Reads an address from the first six bytes of `b`, if there are six.
    pub fn from_bytes(b: &[u8]) -> Option<MacAddr> {
        let s = b.get(..6)?;
        let mut a = [0u8; 6];
        a.copy_from_slice(s);
        Some(MacAddr(a))
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(a: [u8; 6]) -> Self {
        MacAddr(a)
    }
}

impl fmt::Display for MacAddr {
    /// Formats as six lower-case, colon-separated hex octets: `02:00:5e:00:00:01`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            a[0], a[1], a[2], a[3], a[4], a[5]
        )
    }
}

/// The error returned when a string is not a MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacParseError;

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "invalid MAC address: expected six hex octets separated by ':' or '-', \
             like 02:00:5e:00:00:01",
        )
    }
}

impl std::error::Error for MacParseError {}

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Parses six hex octets of one or two digits each (either case),
    /// separated all by `:` or all by `-`: `02:00:5e:00:00:01`,
    /// `02-00-5E-00-00-01`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for o in out.iter_mut() {
            let p = parts.next().ok_or(MacParseError)?;
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(MacParseError);
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| MacParseError)?;
        }
        if parts.next().is_some() {
            return Err(MacParseError);
        }
        Ok(MacAddr(out))
    }
}

/// Well-known EtherType values.
pub mod ethertype {
    /// Internet Protocol version 4.
    pub const IPV4: u16 = 0x0800;
    /// Address Resolution Protocol.
    pub const ARP: u16 = 0x0806;
    /// Internet Protocol version 6.
    pub const IPV6: u16 = 0x86dd;
    /// IEEE 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
}

/// Why an Ethernet header could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EthernetError {
    /// The frame is shorter than the 14-byte header.
    Truncated,
}

impl EthernetError {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            EthernetError::Truncated => "truncated",
        }
    }
}

impl fmt::Display for EthernetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EthernetError::Truncated => "frame shorter than the Ethernet header",
        })
    }
}

impl std::error::Error for EthernetError {}

/// An Ethernet II header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetHeader {
    /// Destination address.
    pub dst: MacAddr,
    /// Source address.
    pub src: MacAddr,
    /// EtherType of the payload (see [`ethertype`]). Values below `0x0600`
    /// are IEEE 802.3 lengths, which the stack does not use; they are
    /// reported as they are, for the caller to drop.
    pub ethertype: u16,
}

impl EthernetHeader {
    /// Length of the header in bytes.
    pub const LEN: usize = 14;

    /// Parses the header at the start of frame `b`. The payload is
    /// `&b[EthernetHeader::LEN..]`.
    pub fn parse(b: &[u8]) -> Result<Self, EthernetError> {
        if b.len() < Self::LEN {
            return Err(EthernetError::Truncated);
        }
        let dst = MacAddr::from_bytes(&b[0..6]).ok_or(EthernetError::Truncated)?;
        let src = MacAddr::from_bytes(&b[6..12]).ok_or(EthernetError::Truncated)?;
        Ok(EthernetHeader {
            dst,
            src,
            ethertype: crate::be16(b, 12),
        })
    }

    /// Writes the header into the first 14 bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), EmitError> {
        let h = b.get_mut(..Self::LEN).ok_or(EmitError::BufferTooSmall)?;
        h[0..6].copy_from_slice(&self.dst.0);
        h[6..12].copy_from_slice(&self.src.0);
        h[12..14].copy_from_slice(&self.ethertype.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mac_display_and_parse() {
        let m = MacAddr([0x02, 0x00, 0x5e, 0x00, 0x00, 0x01]);
        assert_eq!(m.to_string(), "02:00:5e:00:00:01");
        assert_eq!("02:00:5e:00:00:01".parse::<MacAddr>(), Ok(m));
        assert_eq!("02-00-5E-0-0-1".parse::<MacAddr>(), Ok(m));
        for bad in [
            "",
            "02:00:5e:00:00",
            "02:00:5e:00:00:01:02",
            "02:00:5e:00:00:001",
            "02:00:5e:00:00:0g",
            "02:00:5e:00::01",
            "02:00-5e:00:00:01",
            "+2:00:5e:00:00:01",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(MacParseError), "{bad:?}");
        }
        assert!(!MacParseError.to_string().is_empty());
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        let mcast = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast());
        let uni = MacAddr([0x02, 0, 0, 0, 0, 1]);
        assert!(uni.is_unicast() && uni.is_local());
        assert!(MacAddr::ZERO.is_unicast());
    }

    #[test]
    fn known_frame() {
        // Start of a broadcast ARP request frame.
        let f = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06,
            0x00, 0x01,
        ];
        let h = EthernetHeader::parse(&f).unwrap();
        assert_eq!(h.dst, MacAddr::BROADCAST);
        assert_eq!(h.src, MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        assert_eq!(h.ethertype, ethertype::ARP);
        let mut out = [0u8; 14];
        h.emit(&mut out).unwrap();
        assert_eq!(out[..], f[..14]);
        assert_eq!(
            EthernetHeader::parse(&f[..13]),
            Err(EthernetError::Truncated)
        );
        assert_eq!(h.emit(&mut [0u8; 13]), Err(EmitError::BufferTooSmall));
        assert_eq!(EthernetError::Truncated.reason(), "truncated");
    }

    proptest! {
        #[test]
        fn round_trip(dst in any::<[u8; 6]>(), src in any::<[u8; 6]>(), et in any::<u16>()) {
            let h = EthernetHeader { dst: MacAddr(dst), src: MacAddr(src), ethertype: et };
            let mut b = [0u8; 14];
            h.emit(&mut b).unwrap();
            prop_assert_eq!(EthernetHeader::parse(&b), Ok(h));
        }

        #[test]
        fn mac_string_round_trip(a in any::<[u8; 6]>()) {
            let m = MacAddr(a);
            prop_assert_eq!(m.to_string().parse::<MacAddr>(), Ok(m));
        }

        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = EthernetHeader::parse(&b);
        }

        #[test]
        fn mac_from_str_never_panics(s in ".{0,40}") {
            let _ = s.parse::<MacAddr>();
        }
    }
}
