//! Neighbor Discovery for IPv6 (RFC 4861): the router solicitation and
//! advertisement, neighbor solicitation and advertisement, and redirect
//! messages, their options, and the addresses Neighbor Discovery uses
//! (RFC 4291, RFC 2464).
//!
//! Every message is an ICMPv6 message (types 133 to 137) with a fixed
//! part followed by options:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |       rest of the fixed part (depends on type) ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Options ...
//! +-+-+-+-+-+-+-+-+-+-+-+-
//! ```
//!
//! Each option (RFC 4861 §4.6) is a type, a length in units of 8 bytes
//! (type and length bytes included; 0 is invalid), and data:
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |    Length     |              ...              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                              ...                              ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! A message's `parse` takes the whole ICMPv6 message, after
//! [`Icmpv6Header::parse`](crate::icmpv6::Icmpv6Header::parse) has checked
//! its checksum, and the IPv6 header it came in, and applies the validity
//! checks of RFC 4861 §6.1.1, §6.1.2, §7.1.1, §7.1.2 and §8.1 that need
//! nothing but the packet: hop limit 255, code 0, length, well-formed
//! options, and the rules on addresses and flags. What needs the node's
//! state (whether a redirect comes from the current first-hop router) is
//! the caller's. Link-layer addresses are Ethernet's (RFC 2464 §6).
//!
//! A message's `emit` writes the whole ICMPv6 message, checksum included;
//! its options are given as bytes, each written by [`NdpOption::emit`].

use core::fmt;
use std::net::Ipv6Addr;

use crate::icmpv6::{fill_checksum, icmpv6_type};
use crate::ipv6::Ipv6Header;
use crate::{be16, be32, put16, put32, EmitError, MacAddr};

/// Neighbor Discovery option types (RFC 4861 §4.6).
pub mod option_type {
    /// Source link-layer address.
    pub const SOURCE_LINK_ADDR: u8 = 1;
    /// Target link-layer address.
    pub const TARGET_LINK_ADDR: u8 = 2;
    /// Prefix information.
    pub const PREFIX_INFO: u8 = 3;
    /// Redirected header.
    pub const REDIRECTED_HEADER: u8 = 4;
    /// MTU.
    pub const MTU: u8 = 5;
}

/// The hop limit every Neighbor Discovery message is sent with and must
/// arrive with, proof that it did not cross a router (RFC 4861 §3.1).
pub const HOP_LIMIT: u8 = 255;

/// The link-local all-nodes multicast address `ff02::1` (RFC 4291 §2.7.1).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The link-local all-routers multicast address `ff02::2` (RFC 4291
/// §2.7.1).
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// Why a Neighbor Discovery message could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpError {
    /// The ICMPv6 type is not that of the message being parsed.
    BadType,
    /// Shorter than the message's fixed part.
    Truncated,
    /// The IPv6 hop limit is not 255.
    BadHopLimit,
    /// The ICMPv6 code is not 0.
    BadCode,
    /// An option's length runs past the message, or its length byte is
    /// missing.
    OptionTruncated,
    /// An option's length is 0.
    ZeroOptionLength,
    /// A link-layer address option is not 8 bytes long (6 for the
    /// Ethernet address, RFC 2464 §6).
    BadLinkAddrLen,
    /// A prefix information or MTU option has the wrong length.
    BadOptionLength,
    /// A router advertisement or redirect whose IPv6 source is not
    /// link-local.
    SourceNotLinkLocal,
    /// A solicitation from the unspecified address carries a source
    /// link-layer address option.
    LinkAddrFromUnspecified,
    /// A solicitation from the unspecified address is not sent to a
    /// solicited-node multicast address.
    DadNotToSolicitedNode,
    /// A neighbor solicitation or advertisement's target is multicast.
    MulticastTarget,
    /// A neighbor advertisement to a multicast address has the S flag.
    SolicitedToMulticast,
    /// A redirect's destination address is multicast.
    MulticastDestination,
    /// A redirect's target is neither link-local nor its destination.
    BadRedirectTarget,
}

impl NdpError {
    /// A short `snake_case` name for the error, usable as a drop-counter name.
    pub fn reason(&self) -> &'static str {
        match self {
            NdpError::BadType => "bad_type",
            NdpError::Truncated => "truncated",
            NdpError::BadHopLimit => "bad_hop_limit",
            NdpError::BadCode => "bad_code",
            NdpError::OptionTruncated => "option_truncated",
            NdpError::ZeroOptionLength => "zero_option_length",
            NdpError::BadLinkAddrLen => "bad_link_addr_len",
            NdpError::BadOptionLength => "bad_option_length",
            NdpError::SourceNotLinkLocal => "source_not_link_local",
            NdpError::LinkAddrFromUnspecified => "link_addr_from_unspecified",
            NdpError::DadNotToSolicitedNode => "dad_not_to_solicited_node",
            NdpError::MulticastTarget => "multicast_target",
            NdpError::SolicitedToMulticast => "solicited_to_multicast",
            NdpError::MulticastDestination => "multicast_destination",
            NdpError::BadRedirectTarget => "bad_redirect_target",
        }
    }
}

impl fmt::Display for NdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NdpError::BadType => "wrong ICMPv6 type for this NDP message",
            NdpError::Truncated => "NDP message shorter than its fixed part",
            NdpError::BadHopLimit => "NDP message hop limit is not 255",
            NdpError::BadCode => "NDP message code is not 0",
            NdpError::OptionTruncated => "NDP option runs past the message",
            NdpError::ZeroOptionLength => "NDP option with length 0",
            NdpError::BadLinkAddrLen => "NDP link-layer address option is not 8 bytes",
            NdpError::BadOptionLength => "NDP option has the wrong length",
            NdpError::SourceNotLinkLocal => "NDP message source is not link-local",
            NdpError::LinkAddrFromUnspecified => {
                "source link-layer address option from the unspecified address"
            }
            NdpError::DadNotToSolicitedNode => {
                "solicitation from the unspecified address not to a solicited-node address"
            }
            NdpError::MulticastTarget => "NDP target address is multicast",
            NdpError::SolicitedToMulticast => "solicited neighbor advertisement to multicast",
            NdpError::MulticastDestination => "redirect destination is multicast",
            NdpError::BadRedirectTarget => {
                "redirect target is neither link-local nor the destination"
            }
        })
    }
}

impl std::error::Error for NdpError {}

/// The contents of a prefix information option (RFC 4861 §4.6.2).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |    Length     | Prefix Length |L|A| Reserved1 |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         Valid Lifetime                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       Preferred Lifetime                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                           Reserved2                           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       Prefix (16 bytes)                       |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Lifetimes are in seconds; `0xffffffff` is infinity. Whether to use the
/// prefix (a link-local prefix, preferred above valid lifetime...) is
/// decided by the caller (RFC 4861 §6.3.4, RFC 4862 §5.5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixInfo {
    /// Number of leading bits of `prefix` that are valid (0-128).
    pub prefix_len: u8,
    /// The L flag: the prefix is on-link.
    pub on_link: bool,
    /// The A flag: the prefix may be used for address autoconfiguration.
    pub autonomous: bool,
    /// How long the prefix is valid for on-link determination.
    pub valid_lifetime: u32,
    /// How long addresses made from the prefix stay preferred.
    pub preferred_lifetime: u32,
    /// The prefix.
    pub prefix: Ipv6Addr,
}

/// One Neighbor Discovery option (RFC 4861 §4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdpOption<'a> {
    /// Source link-layer address (type 1, RFC 4861 §4.6.1).
    SourceLinkAddr(MacAddr),
    /// Target link-layer address (type 2, RFC 4861 §4.6.1).
    TargetLinkAddr(MacAddr),
    /// Prefix information (type 3, RFC 4861 §4.6.2).
    PrefixInfo(PrefixInfo),
    /// Redirected header (type 4, RFC 4861 §4.6.3): the start of the
    /// redirected packet, after the option's 6 reserved bytes.
    RedirectedHeader(&'a [u8]),
    /// MTU (type 5, RFC 4861 §4.6.4).
    Mtu(u32),
    /// An option of another type, which a receiver ignores (RFC 4861
    /// §4.6): its type and the bytes after the length byte.
    Unknown {
        /// The option type.
        kind: u8,
        /// The option's bytes after its type and length.
        data: &'a [u8],
    },
}

/// Flag bit of a prefix information option: on-link.
const PREFIX_L: u8 = 0x80;
/// Flag bit of a prefix information option: autonomous.
const PREFIX_A: u8 = 0x40;

impl NdpOption<'_> {
    /// The option type.
    pub fn kind(&self) -> u8 {
        match self {
            NdpOption::SourceLinkAddr(_) => option_type::SOURCE_LINK_ADDR,
            NdpOption::TargetLinkAddr(_) => option_type::TARGET_LINK_ADDR,
            NdpOption::PrefixInfo(_) => option_type::PREFIX_INFO,
            NdpOption::RedirectedHeader(_) => option_type::REDIRECTED_HEADER,
            NdpOption::Mtu(_) => option_type::MTU,
            NdpOption::Unknown { kind, .. } => *kind,
        }
    }

    /// How many bytes [`emit`](Self::emit) writes: a multiple of 8.
    pub fn encoded_len(&self) -> usize {
        let unpadded = match self {
            NdpOption::SourceLinkAddr(_) | NdpOption::TargetLinkAddr(_) | NdpOption::Mtu(_) => 8,
            NdpOption::PrefixInfo(_) => 32,
            NdpOption::RedirectedHeader(d) => 8 + d.len(),
            NdpOption::Unknown { data, .. } => 2 + data.len(),
        };
        unpadded.div_ceil(8) * 8
    }

    /// Writes the option at the start of `b` and returns its length
    /// (RFC 4861 §4.6). Reserved fields are zero; the data of a redirected
    /// header or unknown option is padded with zeros to a multiple of 8
    /// bytes. [`Unknown`](NdpOption::Unknown) is meant for types this
    /// module does not decode; its bytes are written as given.
    ///
    /// Fails with [`EmitError::TooLong`] if the option is longer than its
    /// length byte can express (2040 bytes) and with
    /// [`EmitError::BufferTooSmall`] if `b` is shorter than the option.
    pub fn emit(&self, b: &mut [u8]) -> Result<usize, EmitError> {
        let len = self.encoded_len();
        let units = u8::try_from(len / 8).map_err(|_| EmitError::TooLong)?;
        let o = b.get_mut(..len).ok_or(EmitError::BufferTooSmall)?;
        o.fill(0);
        o[0] = self.kind();
        o[1] = units;
        match self {
            NdpOption::SourceLinkAddr(mac) | NdpOption::TargetLinkAddr(mac) => {
                o[2..8].copy_from_slice(&mac.octets());
            }
            NdpOption::PrefixInfo(p) => {
                o[2] = p.prefix_len;
                o[3] = flag(p.on_link, PREFIX_L) | flag(p.autonomous, PREFIX_A);
                put32(o, 4, p.valid_lifetime);
                put32(o, 8, p.preferred_lifetime);
                o[16..32].copy_from_slice(&p.prefix.octets());
            }
            NdpOption::RedirectedHeader(d) => copy_into(o, 8, d),
            NdpOption::Mtu(mtu) => put32(o, 4, *mtu),
            NdpOption::Unknown { data, .. } => copy_into(o, 2, data),
        }
        Ok(len)
    }
}

/// `bit` if `set`, else 0.
fn flag(set: bool, bit: u8) -> u8 {
    if set {
        bit
    } else {
        0
    }
}

/// Copies `src` into `dst` at `at`, if it fits (callers size `dst` first).
fn copy_into(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = dst.get_mut(at..at + src.len()) {
        d.copy_from_slice(src);
    }
}

/// Reads the 16 bytes of an address at `at` (zeros if `b` is too short;
/// callers check the length first).
fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    if let Some(s) = b.get(at..at + 16) {
        a.copy_from_slice(s);
    }
    Ipv6Addr::from(a)
}

/// Decodes the option `opt` of type `kind` (its whole bytes, a non-zero
/// multiple of 8 long) (RFC 4861 §4.6).
fn decode(kind: u8, opt: &[u8]) -> Result<NdpOption<'_>, NdpError> {
    match kind {
        option_type::SOURCE_LINK_ADDR | option_type::TARGET_LINK_ADDR => {
            let mac = match opt.len() {
                8 => MacAddr::from_bytes(opt.get(2..).unwrap_or(&[])),
                _ => None,
            };
            let mac = mac.ok_or(NdpError::BadLinkAddrLen)?;
            Ok(if kind == option_type::SOURCE_LINK_ADDR {
                NdpOption::SourceLinkAddr(mac)
            } else {
                NdpOption::TargetLinkAddr(mac)
            })
        }
        option_type::PREFIX_INFO if opt.len() == 32 => {
            let flags = opt[3];
            Ok(NdpOption::PrefixInfo(PrefixInfo {
                prefix_len: opt[2],
                on_link: flags & PREFIX_L != 0,
                autonomous: flags & PREFIX_A != 0,
                valid_lifetime: be32(opt, 4),
                preferred_lifetime: be32(opt, 8),
                prefix: addr_at(opt, 16),
            }))
        }
        option_type::REDIRECTED_HEADER => {
            Ok(NdpOption::RedirectedHeader(opt.get(8..).unwrap_or(&[])))
        }
        option_type::MTU if opt.len() == 8 => Ok(NdpOption::Mtu(be32(opt, 4))),
        option_type::PREFIX_INFO | option_type::MTU => Err(NdpError::BadOptionLength),
        _ => Ok(NdpOption::Unknown {
            kind,
            data: opt.get(2..).unwrap_or(&[]),
        }),
    }
}

/// Iterator over Neighbor Discovery options; see [`options`].
#[derive(Clone, Debug)]
pub struct NdpOptions<'a> {
    /// The option bytes still to be read.
    rest: &'a [u8],
}

/// Iterates over the options in `b` (the bytes after a message's fixed
/// part), RFC 4861 §4.6.
///
/// Yields each option in order. On a malformed option it yields one
/// `Err` and then stops: [`NdpError::ZeroOptionLength`] for a length of
/// 0, [`NdpError::OptionTruncated`] for a missing length byte or a length
/// past the end, [`NdpError::BadLinkAddrLen`] and
/// [`NdpError::BadOptionLength`] for a known option of the wrong length.
/// Any of these makes the whole message invalid. It never panics,
/// whatever the bytes.
pub fn options(b: &[u8]) -> NdpOptions<'_> {
    NdpOptions { rest: b }
}

impl<'a> Iterator for NdpOptions<'a> {
    type Item = Result<NdpOption<'a>, NdpError>;

    fn next(&mut self) -> Option<Self::Item> {
        let &kind = self.rest.first()?;
        let r = match self.rest.get(1) {
            None => Err(NdpError::OptionTruncated),
            Some(0) => Err(NdpError::ZeroOptionLength),
            Some(&units) => {
                let len = usize::from(units) * 8;
                match (self.rest.get(..len), self.rest.get(len..)) {
                    (Some(opt), Some(rest)) => {
                        self.rest = rest;
                        decode(kind, opt)
                    }
                    _ => Err(NdpError::OptionTruncated),
                }
            }
        };
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

impl core::iter::FusedIterator for NdpOptions<'_> {}

/// Checks what every Neighbor Discovery message must satisfy (RFC 4861
/// §6.1.1, §6.1.2, §7.1.1, §7.1.2, §8.1) and returns its options: type
/// `ty`, at least `fixed` bytes, hop limit 255, code 0, well-formed
/// options.
fn check<'a>(msg: &'a [u8], ip: &Ipv6Header, ty: u8, fixed: usize) -> Result<&'a [u8], NdpError> {
    if msg.first() != Some(&ty) {
        return Err(NdpError::BadType);
    }
    let opts = msg.get(fixed..).ok_or(NdpError::Truncated)?;
    if ip.hop_limit != HOP_LIMIT {
        return Err(NdpError::BadHopLimit);
    }
    if msg.get(1) != Some(&0) {
        return Err(NdpError::BadCode);
    }
    for o in options(opts) {
        o?;
    }
    Ok(opts)
}

/// Checks that a solicitation from the unspecified address carries no
/// source link-layer address option (RFC 4861 §6.1.1, §7.1.1).
fn check_unspecified_source(ip: &Ipv6Header, opts: &[u8]) -> Result<(), NdpError> {
    if ip.src.is_unspecified() && link_addr(opts, option_type::SOURCE_LINK_ADDR).is_some() {
        return Err(NdpError::LinkAddrFromUnspecified);
    }
    Ok(())
}

/// The first link-layer address option of type `kind` in `opts`.
fn link_addr(opts: &[u8], kind: u8) -> Option<MacAddr> {
    options(opts).find_map(|o| match o {
        Ok(NdpOption::SourceLinkAddr(m)) if kind == option_type::SOURCE_LINK_ADDR => Some(m),
        Ok(NdpOption::TargetLinkAddr(m)) if kind == option_type::TARGET_LINK_ADDR => Some(m),
        _ => None,
    })
}

/// Writes a message of type `ty` whose fixed part after the checksum is
/// `fixed`, followed by `options`, at the start of `msg`, and fills the
/// checksum for `src` to `dst`. Returns the message's length.
fn emit_message(
    ty: u8,
    fixed: &[u8],
    options: &[u8],
    msg: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> Result<usize, EmitError> {
    let len = 4 + fixed.len() + options.len();
    if len > usize::from(u16::MAX) {
        return Err(EmitError::TooLong);
    }
    let m = msg.get_mut(..len).ok_or(EmitError::BufferTooSmall)?;
    m[0] = ty;
    m[1] = 0;
    copy_into(m, 4, fixed);
    copy_into(m, 4 + fixed.len(), options);
    fill_checksum(m, src, dst)?;
    Ok(len)
}

/// A router solicitation (RFC 4861 §4.1).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |     Code      |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                            Reserved                           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Options ...
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterSolicitation<'a> {
    /// The encoded options (see [`options`]).
    pub options: &'a [u8],
}

impl<'a> RouterSolicitation<'a> {
    /// Length of the fixed part.
    pub const LEN: usize = 8;

    /// Parses the router solicitation `msg` (the whole ICMPv6 message,
    /// checksum already verified) that came in IPv6 header `ip`, with the
    /// checks of RFC 4861 §6.1.1.
    pub fn parse(msg: &'a [u8], ip: &Ipv6Header) -> Result<Self, NdpError> {
        let options = check(msg, ip, icmpv6_type::ROUTER_SOLICITATION, Self::LEN)?;
        check_unspecified_source(ip, options)?;
        Ok(RouterSolicitation { options })
    }

    /// Writes the message from `src` to `dst` at the start of `msg` and
    /// returns its length (RFC 4861 §4.1).
    pub fn emit(&self, msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<usize, EmitError> {
        let ty = icmpv6_type::ROUTER_SOLICITATION;
        emit_message(ty, &[0; 4], self.options, msg, src, dst)
    }

    /// Iterates over the options.
    pub fn options(&self) -> NdpOptions<'a> {
        options(self.options)
    }

    /// The source link-layer address option's address, if there is one.
    pub fn source_link_addr(&self) -> Option<MacAddr> {
        link_addr(self.options, option_type::SOURCE_LINK_ADDR)
    }
}

/// Flag bit of a router advertisement: managed address configuration.
const RA_M: u8 = 0x80;
/// Flag bit of a router advertisement: other configuration.
const RA_O: u8 = 0x40;

/// A router advertisement (RFC 4861 §4.2).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |     Code      |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Cur Hop Limit |M|O|  Reserved |       Router Lifetime         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         Reachable Time                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                          Retrans Timer                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Options ...
/// ```
///
/// The reserved flag bits (used by later RFCs for router preference and
/// more) are ignored and sent as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterAdvertisement<'a> {
    /// Hop limit hosts should use (0: unspecified).
    pub cur_hop_limit: u8,
    /// The M flag: addresses are available via DHCPv6.
    pub managed: bool,
    /// The O flag: other configuration is available via DHCPv6.
    pub other: bool,
    /// Lifetime as a default router, in seconds (0: not a default router).
    pub router_lifetime: u16,
    /// Reachable time in milliseconds (0: unspecified).
    pub reachable_time: u32,
    /// Retransmission timer in milliseconds (0: unspecified).
    pub retrans_timer: u32,
    /// The encoded options (see [`options`]).
    pub options: &'a [u8],
}

impl<'a> RouterAdvertisement<'a> {
    /// Length of the fixed part.
    pub const LEN: usize = 16;

    /// Parses the router advertisement `msg` (the whole ICMPv6 message,
    /// checksum already verified) that came in IPv6 header `ip`, with the
    /// checks of RFC 4861 §6.1.2, the source being link-local among them.
    pub fn parse(msg: &'a [u8], ip: &Ipv6Header) -> Result<Self, NdpError> {
        let options = check(msg, ip, icmpv6_type::ROUTER_ADVERTISEMENT, Self::LEN)?;
        if !is_link_local(ip.src) {
            return Err(NdpError::SourceNotLinkLocal);
        }
        let flags = msg[5];
        Ok(RouterAdvertisement {
            cur_hop_limit: msg[4],
            managed: flags & RA_M != 0,
            other: flags & RA_O != 0,
            router_lifetime: be16(msg, 6),
            reachable_time: be32(msg, 8),
            retrans_timer: be32(msg, 12),
            options,
        })
    }

    /// Writes the message from `src` to `dst` at the start of `msg` and
    /// returns its length (RFC 4861 §4.2).
    pub fn emit(&self, msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<usize, EmitError> {
        let mut fixed = [0u8; 12];
        fixed[0] = self.cur_hop_limit;
        fixed[1] = flag(self.managed, RA_M) | flag(self.other, RA_O);
        put16(&mut fixed, 2, self.router_lifetime);
        put32(&mut fixed, 4, self.reachable_time);
        put32(&mut fixed, 8, self.retrans_timer);
        let ty = icmpv6_type::ROUTER_ADVERTISEMENT;
        emit_message(ty, &fixed, self.options, msg, src, dst)
    }

    /// Iterates over the options.
    pub fn options(&self) -> NdpOptions<'a> {
        options(self.options)
    }

    /// The source link-layer address option's address, if there is one.
    pub fn source_link_addr(&self) -> Option<MacAddr> {
        link_addr(self.options, option_type::SOURCE_LINK_ADDR)
    }

    /// The MTU option's value, if there is one.
    pub fn mtu(&self) -> Option<u32> {
        self.options().find_map(|o| match o {
            Ok(NdpOption::Mtu(m)) => Some(m),
            _ => None,
        })
    }

    /// The prefix information options, in order.
    pub fn prefixes(&self) -> impl Iterator<Item = PrefixInfo> + 'a {
        self.options().filter_map(|o| match o {
            Ok(NdpOption::PrefixInfo(p)) => Some(p),
            _ => None,
        })
    }
}

/// A neighbor solicitation (RFC 4861 §4.3).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |     Code      |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                           Reserved                            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Target Address (16 bytes)                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Options ...
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborSolicitation<'a> {
    /// The address whose link-layer address is asked for.
    pub target: Ipv6Addr,
    /// The encoded options (see [`options`]).
    pub options: &'a [u8],
}

impl<'a> NeighborSolicitation<'a> {
    /// Length of the fixed part.
    pub const LEN: usize = 24;

    /// Parses the neighbor solicitation `msg` (the whole ICMPv6 message,
    /// checksum already verified) that came in IPv6 header `ip`, with the
    /// checks of RFC 4861 §7.1.1: the target is not multicast, and one
    /// from the unspecified address (duplicate address detection) goes to
    /// a solicited-node address and has no source link-layer address.
    pub fn parse(msg: &'a [u8], ip: &Ipv6Header) -> Result<Self, NdpError> {
        let options = check(msg, ip, icmpv6_type::NEIGHBOR_SOLICITATION, Self::LEN)?;
        let target = addr_at(msg, 8);
        if target.is_multicast() {
            return Err(NdpError::MulticastTarget);
        }
        if ip.src.is_unspecified() && !is_solicited_node(ip.dst) {
            return Err(NdpError::DadNotToSolicitedNode);
        }
        check_unspecified_source(ip, options)?;
        Ok(NeighborSolicitation { target, options })
    }

    /// Writes the message from `src` to `dst` at the start of `msg` and
    /// returns its length (RFC 4861 §4.3).
    pub fn emit(&self, msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<usize, EmitError> {
        let mut fixed = [0u8; 20];
        fixed[4..].copy_from_slice(&self.target.octets());
        let ty = icmpv6_type::NEIGHBOR_SOLICITATION;
        emit_message(ty, &fixed, self.options, msg, src, dst)
    }

    /// Iterates over the options.
    pub fn options(&self) -> NdpOptions<'a> {
        options(self.options)
    }

    /// The source link-layer address option's address, if there is one.
    pub fn source_link_addr(&self) -> Option<MacAddr> {
        link_addr(self.options, option_type::SOURCE_LINK_ADDR)
    }
}

/// Flag bit of a neighbor advertisement: sent by a router.
const NA_R: u8 = 0x80;
/// Flag bit of a neighbor advertisement: in answer to a solicitation.
const NA_S: u8 = 0x40;
/// Flag bit of a neighbor advertisement: override a cached address.
const NA_O: u8 = 0x20;

/// A neighbor advertisement (RFC 4861 §4.4).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |     Code      |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |R|S|O|                     Reserved                            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Target Address (16 bytes)                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Options ...
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborAdvertisement<'a> {
    /// The R flag: the sender is a router.
    pub router: bool,
    /// The S flag: sent in answer to a neighbor solicitation.
    pub solicited: bool,
    /// The O flag: the target link-layer address overrides a cached one
    /// (`override` is a Rust keyword).
    pub override_flag: bool,
    /// The address advertised.
    pub target: Ipv6Addr,
    /// The encoded options (see [`options`]).
    pub options: &'a [u8],
}

impl<'a> NeighborAdvertisement<'a> {
    /// Length of the fixed part.
    pub const LEN: usize = 24;

    /// Parses the neighbor advertisement `msg` (the whole ICMPv6 message,
    /// checksum already verified) that came in IPv6 header `ip`, with the
    /// checks of RFC 4861 §7.1.2: the target is not multicast, and one
    /// sent to a multicast address does not have the S flag.
    pub fn parse(msg: &'a [u8], ip: &Ipv6Header) -> Result<Self, NdpError> {
        let options = check(msg, ip, icmpv6_type::NEIGHBOR_ADVERTISEMENT, Self::LEN)?;
        let flags = msg[4];
        let target = addr_at(msg, 8);
        if target.is_multicast() {
            return Err(NdpError::MulticastTarget);
        }
        let solicited = flags & NA_S != 0;
        if solicited && ip.dst.is_multicast() {
            return Err(NdpError::SolicitedToMulticast);
        }
        Ok(NeighborAdvertisement {
            router: flags & NA_R != 0,
            solicited,
            override_flag: flags & NA_O != 0,
            target,
            options,
        })
    }

    /// Writes the message from `src` to `dst` at the start of `msg` and
    /// returns its length (RFC 4861 §4.4).
    pub fn emit(&self, msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<usize, EmitError> {
        let mut fixed = [0u8; 20];
        fixed[0] =
            flag(self.router, NA_R) | flag(self.solicited, NA_S) | flag(self.override_flag, NA_O);
        fixed[4..].copy_from_slice(&self.target.octets());
        let ty = icmpv6_type::NEIGHBOR_ADVERTISEMENT;
        emit_message(ty, &fixed, self.options, msg, src, dst)
    }

    /// Iterates over the options.
    pub fn options(&self) -> NdpOptions<'a> {
        options(self.options)
    }

    /// The target link-layer address option's address, if there is one.
    pub fn target_link_addr(&self) -> Option<MacAddr> {
        link_addr(self.options, option_type::TARGET_LINK_ADDR)
    }
}

/// A redirect (RFC 4861 §4.5).
///
/// ```text
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |     Code      |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                           Reserved                            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Target Address (16 bytes)                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                 Destination Address (16 bytes)                |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Options ...
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect<'a> {
    /// The better first hop for `destination`: a router's link-local
    /// address, or `destination` itself when it is on-link.
    pub target: Ipv6Addr,
    /// The destination being redirected.
    pub destination: Ipv6Addr,
    /// The encoded options (see [`options`]).
    pub options: &'a [u8],
}

impl<'a> Redirect<'a> {
    /// Length of the fixed part.
    pub const LEN: usize = 40;

    /// Parses the redirect `msg` (the whole ICMPv6 message, checksum
    /// already verified) that came in IPv6 header `ip`, with the checks of
    /// RFC 4861 §8.1 that need no state: the source is link-local, the
    /// destination is not multicast, the target is link-local or the
    /// destination. That the source is the current first-hop router for
    /// the destination is the caller's to check.
    pub fn parse(msg: &'a [u8], ip: &Ipv6Header) -> Result<Self, NdpError> {
        let options = check(msg, ip, icmpv6_type::REDIRECT, Self::LEN)?;
        if !is_link_local(ip.src) {
            return Err(NdpError::SourceNotLinkLocal);
        }
        let target = addr_at(msg, 8);
        let destination = addr_at(msg, 24);
        if destination.is_multicast() {
            return Err(NdpError::MulticastDestination);
        }
        if !is_link_local(target) && target != destination {
            return Err(NdpError::BadRedirectTarget);
        }
        Ok(Redirect {
            target,
            destination,
            options,
        })
    }

    /// Iterates over the options.
    pub fn options(&self) -> NdpOptions<'a> {
        options(self.options)
    }

    /// The target link-layer address option's address, if there is one.
    pub fn target_link_addr(&self) -> Option<MacAddr> {
        link_addr(self.options, option_type::TARGET_LINK_ADDR)
    }

    /// The redirected header option's data (the start of the packet that
    /// caused the redirect), if there is one.
    pub fn redirected_header(&self) -> Option<&'a [u8]> {
        self.options().find_map(|o| match o {
            Ok(NdpOption::RedirectedHeader(d)) => Some(d),
            _ => None,
        })
    }
}

/// Whether `addr` is a link-local unicast address, in `fe80::/10`
/// (RFC 4291 §2.5.6).
pub fn is_link_local(addr: Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

/// The first 13 bytes of every solicited-node multicast address,
/// `ff02::1:ff00:0/104` (RFC 4291 §2.7.1).
const SOLICITED_NODE_PREFIX: [u8; 13] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff];

/// The solicited-node multicast address of `addr`: `ff02::1:ff00:0/104`
/// followed by the low 24 bits of `addr` (RFC 4291 §2.7.1).
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let mut a = addr.octets();
    a[..13].copy_from_slice(&SOLICITED_NODE_PREFIX);
    Ipv6Addr::from(a)
}

/// Whether `addr` is a solicited-node multicast address (RFC 4291 §2.7.1).
pub fn is_solicited_node(addr: Ipv6Addr) -> bool {
    addr.octets()[..13] == SOLICITED_NODE_PREFIX
}

/// The Ethernet multicast address a packet to the IPv6 multicast address
/// `addr` is sent to: `33:33` and the last four bytes of `addr` (RFC 2464
/// §7).
pub fn multicast_mac(addr: Ipv6Addr) -> MacAddr {
    let a = addr.octets();
    MacAddr([0x33, 0x33, a[12], a[13], a[14], a[15]])
}

/// The modified EUI-64 interface identifier of an Ethernet interface with
/// address `mac`: `ff:fe` inserted in the middle and the
/// universal/local bit inverted (RFC 4291 §2.5.1 and appendix A, RFC
/// 2464 §4).
pub fn interface_id(mac: MacAddr) -> [u8; 8] {
    let m = mac.octets();
    [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
}

/// The link-local address `fe80::/64` plus [`interface_id`]`(mac)` of an
/// Ethernet interface with address `mac` (RFC 4291 §2.5.6, RFC 2464 §5).
pub fn link_local_from_mac(mac: MacAddr) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8..].copy_from_slice(&interface_id(mac));
    Ipv6Addr::from(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icmpv6::Icmpv6Header;
    use proptest::prelude::*;

    const R1: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    const H2: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
    const MAC1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const MAC2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    /// The IPv6 header an NDP message from `src` to `dst` comes in.
    fn ip(src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6Header {
        Ipv6Header {
            traffic_class: 0,
            flow_label: 0,
            payload_len: 0,
            next_header: crate::ipv6::next_header::ICMPV6,
            hop_limit: HOP_LIMIT,
            src,
            dst,
        }
    }

    /// fe80::1 -> ff02::1:ff00:2: who has fe80::2? Source link-layer
    /// address 02:00:00:00:00:01. Checksum 0x7a97 computed independently.
    const NS: [u8; 32] = [
        0x87, 0x00, 0x7a, 0x97, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x01,
    ];

    /// fe80::2 -> fe80::1: fe80::2 is at 02:00:00:00:00:02, solicited,
    /// override. Checksum 0x181a computed independently.
    const NA: [u8; 32] = [
        0x88, 0x00, 0x18, 0x1a, 0x60, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x02,
    ];

    /// fe80::1 -> ff02::1: hop limit 64, O flag, lifetime 1800 s, source
    /// link-layer address, MTU 1500, prefix 2001:db8::/64 with L and A,
    /// valid 30 days, preferred 7 days. Checksum 0xeda9 computed
    /// independently.
    const RA: [u8; 64] = [
        0x86, 0x00, 0xed, 0xa9, 0x40, 0x40, 0x07, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x05, 0xdc, 0x03, 0x04, 0x40, 0xc0, 0x00, 0x27, 0x8d, 0x00, 0x00, 0x09, 0x3a, 0x80, 0x00,
        0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
    ];

    /// :: -> ff02::2, no options. Checksum 0x7bb8 computed independently.
    const RS: [u8; 8] = [0x85, 0x00, 0x7b, 0xb8, 0x00, 0x00, 0x00, 0x00];

    const PREFIX: PrefixInfo = PrefixInfo {
        prefix_len: 64,
        on_link: true,
        autonomous: true,
        valid_lifetime: 2_592_000,
        preferred_lifetime: 604_800,
        prefix: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
    };

    #[test]
    fn known_neighbor_solicitation() {
        let dst = solicited_node(H2);
        assert!(Icmpv6Header::parse(&NS, R1, dst).is_ok());
        let ns = NeighborSolicitation::parse(&NS, &ip(R1, dst)).unwrap();
        assert_eq!(ns.target, H2);
        assert_eq!(ns.source_link_addr(), Some(MAC1));
        let mut opt = [0u8; 8];
        assert_eq!(NdpOption::SourceLinkAddr(MAC1).emit(&mut opt), Ok(8));
        let mut out = [0u8; 40];
        let n = NeighborSolicitation {
            target: H2,
            options: &opt,
        }
        .emit(&mut out, R1, dst)
        .unwrap();
        assert_eq!(&out[..n], &NS);
    }

    #[test]
    fn known_neighbor_advertisement() {
        assert!(Icmpv6Header::parse(&NA, H2, R1).is_ok());
        let na = NeighborAdvertisement::parse(&NA, &ip(H2, R1)).unwrap();
        assert_eq!(
            (na.router, na.solicited, na.override_flag, na.target),
            (false, true, true, H2)
        );
        assert_eq!(na.target_link_addr(), Some(MAC2));
        let mut out = [0u8; 32];
        assert_eq!(na.emit(&mut out, H2, R1), Ok(32));
        assert_eq!(out, NA);
    }

    #[test]
    fn known_router_advertisement() {
        assert!(Icmpv6Header::parse(&RA, R1, ALL_NODES).is_ok());
        let ra = RouterAdvertisement::parse(&RA, &ip(R1, ALL_NODES)).unwrap();
        assert_eq!(
            (
                ra.cur_hop_limit,
                ra.managed,
                ra.other,
                ra.router_lifetime,
                ra.reachable_time,
                ra.retrans_timer
            ),
            (64, false, true, 1800, 0, 0)
        );
        assert_eq!(ra.source_link_addr(), Some(MAC1));
        assert_eq!(ra.mtu(), Some(1500));
        assert_eq!(ra.prefixes().collect::<Vec<_>>(), vec![PREFIX]);
        assert_eq!(
            ra.options().collect::<Vec<_>>(),
            vec![
                Ok(NdpOption::SourceLinkAddr(MAC1)),
                Ok(NdpOption::Mtu(1500)),
                Ok(NdpOption::PrefixInfo(PREFIX)),
            ]
        );
        let mut out = [0u8; 64];
        assert_eq!(ra.emit(&mut out, R1, ALL_NODES), Ok(64));
        assert_eq!(out, RA);
    }

    #[test]
    fn known_router_solicitation() {
        let any = Ipv6Addr::UNSPECIFIED;
        assert!(Icmpv6Header::parse(&RS, any, ALL_ROUTERS).is_ok());
        let rs = RouterSolicitation::parse(&RS, &ip(any, ALL_ROUTERS)).unwrap();
        assert_eq!(rs.options, &[] as &[u8]);
        assert_eq!(rs.source_link_addr(), None);
        let mut out = [0xffu8; 8];
        assert_eq!(rs.emit(&mut out, any, ALL_ROUTERS), Ok(8));
        assert_eq!(out, RS);
        // With a source link-layer address it must come from an address.
        let mut m = RS.to_vec();
        m.extend_from_slice(&NS[24..32]);
        assert_eq!(
            RouterSolicitation::parse(&m, &ip(any, ALL_ROUTERS)),
            Err(NdpError::LinkAddrFromUnspecified)
        );
        let rs = RouterSolicitation::parse(&m, &ip(H2, ALL_ROUTERS)).unwrap();
        assert_eq!(rs.source_link_addr(), Some(MAC1));
    }

    #[test]
    fn common_checks() {
        let dst = solicited_node(H2);
        let good = ip(R1, dst);
        let parse = |m: &[u8], ip: &Ipv6Header| NeighborSolicitation::parse(m, ip).map(|_| ());
        assert_eq!(parse(&NA, &good), Err(NdpError::BadType));
        assert_eq!(parse(&[], &good), Err(NdpError::BadType));
        assert_eq!(parse(&NS[..23], &good), Err(NdpError::Truncated));
        let hop = Ipv6Header {
            hop_limit: 254,
            ..good
        };
        assert_eq!(parse(&NS, &hop), Err(NdpError::BadHopLimit));
        let mut m = NS;
        m[1] = 1;
        assert_eq!(parse(&m, &good), Err(NdpError::BadCode));
        // Without options is fine.
        assert_eq!(parse(&NS[..24], &good), Ok(()));
        // Option errors make the whole message invalid.
        let mut m = NS;
        m[25] = 0;
        assert_eq!(parse(&m, &good), Err(NdpError::ZeroOptionLength));
        m[25] = 2;
        assert_eq!(parse(&m, &good), Err(NdpError::OptionTruncated));
        assert_eq!(parse(&NS[..25], &good), Err(NdpError::OptionTruncated));
        assert_eq!(NdpError::ZeroOptionLength.reason(), "zero_option_length");
        assert_eq!(
            NdpError::BadHopLimit.to_string(),
            "NDP message hop limit is not 255"
        );
    }

    #[test]
    fn neighbor_solicitation_checks() {
        let mut m = NS;
        m[8] = 0xff; // target ff80::2
        assert_eq!(
            NeighborSolicitation::parse(&m, &ip(R1, solicited_node(H2))),
            Err(NdpError::MulticastTarget)
        );
        // Duplicate address detection: from ::, to the solicited-node
        // address, without a source link-layer address.
        let any = Ipv6Addr::UNSPECIFIED;
        let dad = NeighborSolicitation::parse(&NS[..24], &ip(any, solicited_node(H2))).unwrap();
        assert_eq!(dad.target, H2);
        assert_eq!(
            NeighborSolicitation::parse(&NS[..24], &ip(any, H2)),
            Err(NdpError::DadNotToSolicitedNode)
        );
        assert_eq!(
            NeighborSolicitation::parse(&NS, &ip(any, solicited_node(H2))),
            Err(NdpError::LinkAddrFromUnspecified)
        );
        // Unicast solicitations (reachability confirmation) are fine.
        assert!(NeighborSolicitation::parse(&NS, &ip(R1, H2)).is_ok());
    }

    #[test]
    fn neighbor_advertisement_checks() {
        assert_eq!(
            NeighborAdvertisement::parse(&NA, &ip(H2, ALL_NODES)),
            Err(NdpError::SolicitedToMulticast)
        );
        let mut m = NA;
        m[4] = 0xa0; // R and O, unsolicited
        let na = NeighborAdvertisement::parse(&m, &ip(H2, ALL_NODES)).unwrap();
        assert_eq!(
            (na.router, na.solicited, na.override_flag),
            (true, false, true)
        );
        m[8] = 0xff;
        assert_eq!(
            NeighborAdvertisement::parse(&m, &ip(H2, ALL_NODES)),
            Err(NdpError::MulticastTarget)
        );
    }

    #[test]
    fn router_advertisement_checks() {
        let global = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        assert_eq!(
            RouterAdvertisement::parse(&RA, &ip(global, ALL_NODES)),
            Err(NdpError::SourceNotLinkLocal)
        );
        assert_eq!(
            RouterAdvertisement::parse(&RA[..15], &ip(R1, ALL_NODES)),
            Err(NdpError::Truncated)
        );
        // A prefix option of the wrong length, an MTU option of the wrong
        // length.
        let mut m = RA.to_vec();
        m[33] = 3;
        m.truncate(56);
        assert_eq!(
            RouterAdvertisement::parse(&m, &ip(R1, ALL_NODES)),
            Err(NdpError::BadOptionLength)
        );
        let mut m = RA[..32].to_vec();
        m[25] = 2;
        m.extend_from_slice(&[0; 8]);
        assert_eq!(
            RouterAdvertisement::parse(&m, &ip(R1, ALL_NODES)),
            Err(NdpError::BadOptionLength)
        );
        // A link-layer address option longer than Ethernet's.
        let mut m = RA[..24].to_vec();
        m[17] = 2;
        m.extend_from_slice(&[0; 8]);
        assert_eq!(
            RouterAdvertisement::parse(&m, &ip(R1, ALL_NODES)),
            Err(NdpError::BadLinkAddrLen)
        );
        // Unknown options are skipped.
        let mut m = RA[..16].to_vec();
        m.extend_from_slice(&[200, 1, 1, 2, 3, 4, 5, 6]);
        let ra = RouterAdvertisement::parse(&m, &ip(R1, ALL_NODES)).unwrap();
        assert_eq!(
            ra.options().collect::<Vec<_>>(),
            vec![Ok(NdpOption::Unknown {
                kind: 200,
                data: &[1, 2, 3, 4, 5, 6]
            })]
        );
        assert_eq!((ra.mtu(), ra.prefixes().count()), (None, 0));
    }

    /// A redirect from fe80::1: go to `target` for `destination`, with a
    /// target link-layer address and a redirected header.
    fn redirect(target: Ipv6Addr, destination: Ipv6Addr) -> Vec<u8> {
        let mut m = vec![137, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&destination.octets());
        let mut opt = [0u8; 24];
        NdpOption::TargetLinkAddr(MAC2).emit(&mut opt).unwrap();
        NdpOption::RedirectedHeader(&[0x60; 8])
            .emit(&mut opt[8..])
            .unwrap();
        m.extend_from_slice(&opt);
        m
    }

    #[test]
    fn redirect_checks() {
        let far = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 9);
        let m = redirect(H2, far);
        let r = Redirect::parse(&m, &ip(R1, H2)).unwrap();
        assert_eq!((r.target, r.destination), (H2, far));
        assert_eq!(r.target_link_addr(), Some(MAC2));
        assert_eq!(r.redirected_header(), Some(&[0x60u8; 8][..]));
        // On-link destination: target equals destination.
        assert!(Redirect::parse(&redirect(far, far), &ip(R1, H2)).is_ok());
        assert_eq!(
            Redirect::parse(&redirect(far, H2), &ip(R1, H2)),
            Err(NdpError::BadRedirectTarget)
        );
        assert_eq!(
            Redirect::parse(&redirect(H2, ALL_NODES), &ip(R1, H2)),
            Err(NdpError::MulticastDestination)
        );
        assert_eq!(
            Redirect::parse(&m, &ip(far, H2)),
            Err(NdpError::SourceNotLinkLocal)
        );
        assert_eq!(
            Redirect::parse(&m[..39], &ip(R1, H2)),
            Err(NdpError::Truncated)
        );
        assert_eq!(
            Redirect::parse(&m[..40], &ip(R1, H2))
                .unwrap()
                .redirected_header(),
            None
        );
    }

    #[test]
    fn option_emit() {
        let mut b = [0xffu8; 40];
        assert_eq!(NdpOption::Mtu(1280).emit(&mut b), Ok(8));
        assert_eq!(&b[..8], &[5, 1, 0, 0, 0, 0, 5, 0]);
        // Data padded to 8 bytes.
        let u = NdpOption::Unknown {
            kind: 9,
            data: &[7; 3],
        };
        assert_eq!(u.encoded_len(), 8);
        assert_eq!(u.emit(&mut b), Ok(8));
        assert_eq!(&b[..8], &[9, 1, 7, 7, 7, 0, 0, 0]);
        assert_eq!(NdpOption::RedirectedHeader(&[1; 9]).encoded_len(), 24);
        assert_eq!(
            NdpOption::PrefixInfo(PREFIX).emit(&mut b[..31]),
            Err(EmitError::BufferTooSmall)
        );
        let big = [0u8; 2040];
        assert_eq!(
            NdpOption::Unknown {
                kind: 9,
                data: &big
            }
            .emit(&mut [0u8; 4096]),
            Err(EmitError::TooLong)
        );
        assert_eq!(
            NdpOption::Unknown {
                kind: 9,
                data: &big[..2038]
            }
            .emit(&mut [0u8; 4096]),
            Ok(2040)
        );
    }

    #[test]
    fn message_emit_errors() {
        let ns = NeighborSolicitation {
            target: H2,
            options: &[],
        };
        assert_eq!(
            ns.emit(&mut [0u8; 23], R1, H2),
            Err(EmitError::BufferTooSmall)
        );
        let big = vec![0u8; 65536];
        let rs = RouterSolicitation { options: &big };
        assert_eq!(
            rs.emit(&mut vec![0u8; 70000], R1, H2),
            Err(EmitError::TooLong)
        );
    }

    #[test]
    fn options_iterator_stops_after_error() {
        let b = [1, 0, 0, 0, 0, 0, 0, 0, 5, 1, 0, 0, 0, 0, 5, 0];
        assert_eq!(
            options(&b).collect::<Vec<_>>(),
            vec![Err(NdpError::ZeroOptionLength)]
        );
        assert_eq!(
            options(&[5]).collect::<Vec<_>>(),
            vec![Err(NdpError::OptionTruncated)]
        );
        assert_eq!(options(&[]).count(), 0);
    }

    #[test]
    fn addresses() {
        // RFC 4291 §2.7.1's example.
        let a: Ipv6Addr = "4037::01:800:200e:8c6c".parse().unwrap();
        let s = solicited_node(a);
        assert_eq!(s, "ff02::1:ff0e:8c6c".parse::<Ipv6Addr>().unwrap());
        assert!(is_solicited_node(s));
        assert!(!is_solicited_node(a));
        assert!(!is_solicited_node(ALL_NODES));
        assert_eq!(
            multicast_mac(s),
            MacAddr([0x33, 0x33, 0xff, 0x0e, 0x8c, 0x6c])
        );
        assert_eq!(multicast_mac(ALL_NODES), MacAddr([0x33, 0x33, 0, 0, 0, 1]));
        // RFC 2464 §4's example: 34-56-78-9A-BC-DE.
        let mac = MacAddr([0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde]);
        assert_eq!(
            interface_id(mac),
            [0x36, 0x56, 0x78, 0xff, 0xfe, 0x9a, 0xbc, 0xde]
        );
        let ll = link_local_from_mac(mac);
        assert_eq!(ll, "fe80::3656:78ff:fe9a:bcde".parse::<Ipv6Addr>().unwrap());
        assert!(is_link_local(ll));
        assert!(is_link_local("febf::1".parse().unwrap()));
        assert!(!is_link_local("fec0::1".parse().unwrap()));
        assert!(!is_link_local(ALL_NODES));
        // A locally administered address has the bit cleared instead.
        assert_eq!(interface_id(MAC1)[0], 0);
    }

    fn arb_mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>().prop_map(MacAddr)
    }

    fn arb_addr() -> impl Strategy<Value = Ipv6Addr> {
        any::<[u8; 16]>().prop_map(Ipv6Addr::from)
    }

    fn arb_prefix() -> impl Strategy<Value = PrefixInfo> {
        (
            any::<u8>(),
            any::<bool>(),
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            arb_addr(),
        )
            .prop_map(|(l, on, auto, v, p, prefix)| PrefixInfo {
                prefix_len: l,
                on_link: on,
                autonomous: auto,
                valid_lifetime: v,
                preferred_lifetime: p,
                prefix,
            })
    }

    /// An option whose emitted form parses back to itself, as owned data.
    #[derive(Clone, Debug)]
    enum Opt {
        Src(MacAddr),
        Tgt(MacAddr),
        Prefix(PrefixInfo),
        Redirected(Vec<u8>),
        Mtu(u32),
        Unknown(u8, Vec<u8>),
    }

    impl Opt {
        fn as_option(&self) -> NdpOption<'_> {
            match self {
                Opt::Src(m) => NdpOption::SourceLinkAddr(*m),
                Opt::Tgt(m) => NdpOption::TargetLinkAddr(*m),
                Opt::Prefix(p) => NdpOption::PrefixInfo(*p),
                Opt::Redirected(d) => NdpOption::RedirectedHeader(d),
                Opt::Mtu(m) => NdpOption::Mtu(*m),
                Opt::Unknown(k, d) => NdpOption::Unknown { kind: *k, data: d },
            }
        }
    }

    fn arb_opt() -> impl Strategy<Value = Opt> {
        prop_oneof![
            arb_mac().prop_map(Opt::Src),
            arb_mac().prop_map(Opt::Tgt),
            arb_prefix().prop_map(Opt::Prefix),
            (0usize..4, any::<u8>()).prop_map(|(n, b)| Opt::Redirected(vec![b; n * 8])),
            any::<u32>().prop_map(Opt::Mtu),
            (6u8..=255, 0usize..3, any::<u8>())
                .prop_map(|(k, n, b)| Opt::Unknown(k, vec![b; 6 + n * 8])),
        ]
    }

    /// The options encoded one after another.
    fn encode(opts: &[Opt]) -> Vec<u8> {
        let mut out = Vec::new();
        for o in opts {
            let o = o.as_option();
            let mut b = vec![0u8; o.encoded_len()];
            assert_eq!(o.emit(&mut b), Ok(b.len()));
            out.extend_from_slice(&b);
        }
        out
    }

    /// Emits with `emit` into a buffer, checks the checksum, and returns
    /// the message.
    fn emitted(
        emit: impl FnOnce(&mut [u8]) -> Result<usize, EmitError>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) -> Vec<u8> {
        let mut b = vec![0u8; 2000];
        let n = emit(&mut b).unwrap();
        b.truncate(n);
        assert!(Icmpv6Header::parse(&b, src, dst).is_ok());
        b
    }

    proptest! {
        #[test]
        fn options_round_trip(opts in proptest::collection::vec(arb_opt(), 0..6)) {
            let b = encode(&opts);
            let got: Vec<_> = options(&b).collect();
            let want: Vec<_> = opts.iter().map(|o| Ok(o.as_option())).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn router_solicitation_round_trip(
            opts in proptest::collection::vec(arb_opt(), 0..4), src in arb_addr(),
        ) {
            let o = encode(&opts);
            let rs = RouterSolicitation { options: &o };
            let m = emitted(|b| rs.emit(b, src, ALL_ROUTERS), src, ALL_ROUTERS);
            let p = RouterSolicitation::parse(&m, &ip(src, ALL_ROUTERS));
            if src.is_unspecified() && rs.source_link_addr().is_some() {
                prop_assert_eq!(p, Err(NdpError::LinkAddrFromUnspecified));
            } else {
                prop_assert_eq!(p, Ok(rs));
            }
        }

        #[test]
        fn router_advertisement_round_trip(
            cur_hop_limit in any::<u8>(), managed in any::<bool>(), other in any::<bool>(),
            router_lifetime in any::<u16>(), reachable_time in any::<u32>(),
            retrans_timer in any::<u32>(), opts in proptest::collection::vec(arb_opt(), 0..4),
            iid in any::<u64>(),
        ) {
            let o = encode(&opts);
            let src = Ipv6Addr::from(0xfe80u128 << 112 | u128::from(iid));
            let ra = RouterAdvertisement {
                cur_hop_limit, managed, other, router_lifetime, reachable_time,
                retrans_timer, options: &o,
            };
            let m = emitted(|b| ra.emit(b, src, ALL_NODES), src, ALL_NODES);
            prop_assert_eq!(RouterAdvertisement::parse(&m, &ip(src, ALL_NODES)), Ok(ra));
        }

        #[test]
        fn neighbor_solicitation_round_trip(
            target in arb_addr(), src in arb_addr(),
            opts in proptest::collection::vec(arb_opt(), 0..4),
        ) {
            prop_assume!(!target.is_multicast() && !src.is_unspecified());
            let o = encode(&opts);
            let dst = solicited_node(target);
            let ns = NeighborSolicitation { target, options: &o };
            let m = emitted(|b| ns.emit(b, src, dst), src, dst);
            prop_assert_eq!(NeighborSolicitation::parse(&m, &ip(src, dst)), Ok(ns));
        }

        #[test]
        fn neighbor_advertisement_round_trip(
            router in any::<bool>(), solicited in any::<bool>(), override_flag in any::<bool>(),
            target in arb_addr(), dst in arb_addr(),
            opts in proptest::collection::vec(arb_opt(), 0..4),
        ) {
            prop_assume!(!target.is_multicast());
            prop_assume!(!(solicited && dst.is_multicast()));
            let o = encode(&opts);
            let na = NeighborAdvertisement {
                router, solicited, override_flag, target, options: &o,
            };
            let m = emitted(|b| na.emit(b, target, dst), target, dst);
            prop_assert_eq!(NeighborAdvertisement::parse(&m, &ip(target, dst)), Ok(na));
        }

        #[test]
        fn parse_never_panics(
            b in proptest::collection::vec(any::<u8>(), 0..120),
            src in arb_addr(), dst in arb_addr(), hop in prop::sample::select(vec![255u8, 64]),
        ) {
            let h = Ipv6Header { hop_limit: hop, ..ip(src, dst) };
            // Try every message type with the given bytes.
            for t in 133..=137u8 {
                let mut m = b.clone();
                if let Some(first) = m.first_mut() {
                    *first = t;
                }
                let _ = RouterSolicitation::parse(&m, &h);
                if let Ok(ra) = RouterAdvertisement::parse(&m, &h) {
                    prop_assert!(ra.options().all(|o| o.is_ok()));
                    let _ = (ra.mtu(), ra.prefixes().count(), ra.source_link_addr());
                }
                if let Ok(ns) = NeighborSolicitation::parse(&m, &h) {
                    prop_assert!(!ns.target.is_multicast());
                }
                if let Ok(na) = NeighborAdvertisement::parse(&m, &h) {
                    prop_assert!(!na.target.is_multicast());
                }
                if let Ok(r) = Redirect::parse(&m, &h) {
                    prop_assert!(!r.destination.is_multicast());
                    let _ = (r.redirected_header(), r.target_link_addr());
                }
            }
            let mut n = 0;
            for _ in options(&b) {
                n += 1;
            }
            prop_assert!(n <= b.len() / 8 + 1);
        }

        #[test]
        fn address_helpers(a in arb_addr(), mac in arb_mac()) {
            let s = solicited_node(a);
            prop_assert!(is_solicited_node(s) && s.is_multicast());
            prop_assert_eq!(&s.octets()[13..], &a.octets()[13..]);
            prop_assert_eq!(&multicast_mac(s).octets()[2..], &s.octets()[12..]);
            prop_assert!(multicast_mac(s).is_multicast());
            let ll = link_local_from_mac(mac);
            prop_assert!(is_link_local(ll));
            prop_assert_eq!(&ll.octets()[8..], &interface_id(mac)[..]);
        }
    }
}
