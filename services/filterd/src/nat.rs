//! Network address translation on top of conntrack, as in Linux: the nat
//! table is consulted only for the first packet of a connection; its
//! decision becomes the entry's reply tuple (the binding), and every
//! later packet of either direction, and ICMP errors about the
//! connection, are rewritten from the two tuples alone.
//!
//! A packet of direction `d` must leave looking like the inverse of the
//! other direction's tuple. Destination manipulation happens in
//! PREROUTING and OUTPUT, source manipulation in INPUT and POSTROUTING.
//! Checksums are updated incrementally (RFC 1624), never recomputed, so a
//! packet that arrived with a bad checksum keeps a bad one.
//!
//! IPv4 and IPv6 alike (iptables' and ip6tables' nat tables): an IPv6
//! packet has no header checksum, but TCP, UDP and ICMPv6 all sum a
//! pseudo-header holding the addresses, so an address change reaches
//! ICMPv6's checksum too; UDP over IPv6 never carries a zero checksum.
//! Extension headers are skipped, never rewritten.

use crate::conntrack::{Conntrack, Tuple};
use crate::packet::{
    find_upper, icmp_is_error, icmpv6_is_error, Upper, ICMPV6, ICMPV6_QUERIES, ICMP_QUERIES,
};
use crate::rule::Hook;
use crate::ruleset::NatAction;
use strata_proto::checksum::{update_u16, update_u32};

/// Which end of a packet a hook rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manip {
    /// The source (INPUT, POSTROUTING).
    Src,
    /// The destination (PREROUTING, OUTPUT).
    Dst,
}

impl Manip {
    /// The manipulation done at `hook` (none in FORWARD).
    pub fn at(hook: Hook) -> Option<Manip> {
        match hook {
            Hook::Prerouting | Hook::Output => Some(Manip::Dst),
            Hook::Input | Hook::Postrouting => Some(Manip::Src),
            Hook::Forward => None,
        }
    }
}

/// Why a binding could not be set up (the packet is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatError {
    /// MASQUERADE or REDIRECT without an address to use, or an address of
    /// the other family.
    NoAddress,
    /// Every candidate tuple is in use.
    NoPort,
    /// The entry is gone.
    NoEntry,
}

/// Most ports tried when the first choice clashes.
const MAX_TRIES: u32 = 1024;

/// Whether `a` (128 bits, IPv4 mapped) is a usable address of the
/// family (`v6`): not unspecified, and mapped exactly when IPv4.
fn addr_fits(a: u128, v6: bool) -> bool {
    if v6 {
        a != 0 && a >> 32 != 0xffff
    } else {
        a >> 32 == 0xffff && a as u32 != 0
    }
}

/// Binds connection `id` per `action`. `local` is the address REDIRECT
/// sends to (the incoming interface's), `out` the address MASQUERADE
/// uses (the outgoing interface's); 128 bits, IPv4 mapped, 0 when
/// unknown. IPv4 and IPv6 connections alike: the addresses must be of the
/// connection's family.
pub fn setup(
    ct: &mut Conntrack,
    id: u32,
    action: NatAction,
    local: u128,
    out: u128,
) -> Result<(), NatError> {
    let e = *ct.entry(id).ok_or(NatError::NoEntry)?;
    let v6 = e.family == 6;
    let proto = e.proto;
    let orig = e.tuple[0];
    let mut r = e.tuple[1];
    let (manip, addr, range) = match action {
        NatAction::Dnat { addr, ports } => (Manip::Dst, addr, ports),
        NatAction::Redirect { ports } => (Manip::Dst, local, ports),
        NatAction::Snat { addr, ports } => (Manip::Src, addr, ports),
        NatAction::Masquerade { ports } => (Manip::Src, out, ports),
    };
    if !addr_fits(addr, v6) {
        return Err(NatError::NoAddress);
    }
    // The reply's source is the new destination, its destination the new
    // source; likewise for ports.
    let cur_port = match manip {
        Manip::Dst => {
            r.src = addr.to_be_bytes();
            r.sport
        }
        Manip::Src => {
            r.dst = addr.to_be_bytes();
            r.dport
        }
    };
    // ICMP (and ICMPv6) ids are chosen by the source; a destination has
    // none.
    let icmp = proto == 1 || proto == ICMPV6;
    let has_ports = matches!(proto, 6 | 17) || (icmp && manip == Manip::Src && cur_port != 0);
    let set_port = |r: &mut Tuple, p: u16| match manip {
        Manip::Dst => r.sport = p,
        Manip::Src => r.dport = p,
    };
    let free = |ct: &Conntrack, t: &Tuple| *t == e.tuple[1] || !ct.tuple_taken(proto, t);
    if !has_ports {
        return if free(ct, &r) && ct.set_reply(id, r) {
            Ok(())
        } else {
            Err(NatError::NoPort)
        };
    }
    let (lo, hi) = match (range, manip) {
        (Some(r), _) => r,
        (None, Manip::Dst) => (cur_port, cur_port),
        // Linux keeps a source port in its class when it must move it.
        (None, Manip::Src) if icmp => (0, u16::MAX),
        (None, Manip::Src) if cur_port < 512 => (1, 511),
        (None, Manip::Src) if cur_port < 1024 => (600, 1023),
        (None, Manip::Src) => (1024, u16::MAX),
    };
    if (lo..=hi).contains(&cur_port) {
        set_port(&mut r, cur_port);
        if free(ct, &r) && ct.set_reply(id, r) {
            return Ok(());
        }
    }
    let size = u32::from(hi - lo) + 1;
    // Start at a point derived from the flow, so that connections that
    // clash spread over the range instead of all probing from `lo`.
    let fold = |a: u128| {
        if v6 {
            (a as u32) ^ ((a >> 32) as u32) ^ ((a >> 64) as u32) ^ ((a >> 96) as u32)
        } else {
            a as u32
        }
    };
    let seed = fold(orig.saddr())
        ^ fold(orig.daddr()).rotate_left(7)
        ^ u32::from(orig.sport) << 16
        ^ u32::from(orig.dport);
    let start = seed.wrapping_mul(0x9e37_79b9) % size;
    for i in 0..size.min(MAX_TRIES) {
        let p = lo as u32 + (start + i) % size;
        set_port(&mut r, p as u16);
        if free(ct, &r) && ct.set_reply(id, r) {
            return Ok(());
        }
    }
    Err(NatError::NoPort)
}

fn rd16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn rd32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn wr16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn wr32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Adjusts the checksum at `at` for a 16-bit change (UDP: a zero
/// checksum means none and stays zero; a computed zero is sent as 0xffff).
fn fix16(b: &mut [u8], at: usize, udp: bool, old: u16, new: u16) {
    if let Some(c) = rd16(b, at) {
        if udp && c == 0 {
            return;
        }
        let mut n = update_u16(c, old, new);
        if udp && n == 0 {
            n = 0xffff;
        }
        wr16(b, at, n);
    }
}

/// As [`fix16`] for a 32-bit change.
fn fix32(b: &mut [u8], at: usize, udp: bool, old: u32, new: u32) {
    if let Some(c) = rd16(b, at) {
        if udp && c == 0 {
            return;
        }
        let mut n = update_u32(c, old, new);
        if udp && n == 0 {
            n = 0xffff;
        }
        wr16(b, at, n);
    }
}

/// Offset of the transport checksum, for protocols with a pseudo-header.
fn l4_csum(proto: u8) -> Option<(usize, bool)> {
    match proto {
        6 => Some((16, false)),
        17 => Some((6, true)),
        _ => None,
    }
}

/// Adjusts a *partial* transport checksum (the uncomplemented
/// pseudo-header sum a device completes, see `strata_proto::offload`) for
/// a changed address: only the pseudo-header part is in the field.
fn fix32_partial(b: &mut [u8], at: usize, old: u32, new: u32) {
    if let Some(c) = rd16(b, at) {
        wr16(b, at, !update_u32(!c, old, new));
    }
}

/// Rewrites `pkt` (an IPv4 datagram or IPv6 packet of connection `id`,
/// direction `dir`) for `hook`. Returns whether any byte changed. Malformed input is left
/// as it is. `partial`: the transport checksum is partial, so a port
/// change leaves it alone (the device sums the ports) and an address
/// change updates the pseudo-header sum it holds.
pub fn translate(
    pkt: &mut [u8],
    ct: &Conntrack,
    id: u32,
    dir: u8,
    hook: Hook,
    partial: bool,
) -> bool {
    let Some(manip) = Manip::at(hook) else {
        return false;
    };
    let Some(e) = ct.entry(id) else { return false };
    if e.tuple[1] == e.tuple[0].invert() {
        return false; // not translated
    }
    let target = e.tuple[usize::from(dir & 1) ^ 1].invert();
    let (addr, port) = match manip {
        Manip::Src => (target.saddr(), target.sport),
        Manip::Dst => (target.daddr(), target.dport),
    };
    match (e.family, pkt.first().map(|b| b >> 4)) {
        (4, Some(4)) => translate4(pkt, manip, addr as u32, port, partial),
        (6, Some(6)) => translate6(pkt, manip, addr, port, partial),
        _ => false,
    }
}

/// [`translate`] for an IPv4 datagram.
fn translate4(pkt: &mut [u8], manip: Manip, addr: u32, port: u16, partial: bool) -> bool {
    let Some(&vihl) = pkt.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0xf) * 4;
    let Some(len) = rd16(pkt, 2).map(usize::from) else {
        return false;
    };
    if vihl >> 4 != 4 || ihl < 20 || len < ihl || len > pkt.len() {
        return false;
    }
    let pkt = &mut pkt[..len];
    let proto = pkt[9];
    let later_frag = rd16(pkt, 6).is_some_and(|f| f & 0x1fff != 0);
    let aoff = if manip == Manip::Src { 12 } else { 16 };
    let mut changed = false;
    let icmp_err = proto == 1 && !later_frag && pkt.get(ihl).is_some_and(|&t| icmp_is_error(t));
    if icmp_err {
        return translate_icmp_error(pkt, ihl, manip, addr, port);
    }
    if let Some(old) = rd32(pkt, aoff).filter(|&o| o != addr) {
        wr32(pkt, aoff, addr);
        fix32(pkt, 10, false, old, addr);
        if !later_frag {
            match l4_csum(proto) {
                Some((c, _)) if partial => fix32_partial(pkt, ihl + c, old, addr),
                Some((c, udp)) => fix32(pkt, ihl + c, udp, old, addr),
                None => {}
            }
        }
        changed = true;
    }
    if later_frag {
        return changed;
    }
    match proto {
        6 | 17 => {
            let poff = ihl + if manip == Manip::Src { 0 } else { 2 };
            let (c, udp) = l4_csum(proto).unwrap_or((16, false));
            if pkt.len() >= ihl + c + 2 {
                if let Some(old) = rd16(pkt, poff).filter(|&o| o != port) {
                    wr16(pkt, poff, port);
                    if !partial {
                        fix16(pkt, ihl + c, udp, old, port);
                    }
                    changed = true;
                }
            }
        }
        1 => {
            let ty = pkt.get(ihl).copied().unwrap_or(0);
            let is_req = ICMP_QUERIES.iter().any(|(q, _)| *q == ty);
            let is_rep = ICMP_QUERIES.iter().any(|(_, r)| *r == ty);
            // The id is the request's source "port", the reply's
            // destination one.
            if (is_req && manip == Manip::Src) || (is_rep && manip == Manip::Dst) {
                if let Some(old) = rd16(pkt, ihl + 4).filter(|&o| o != port) {
                    wr16(pkt, ihl + 4, port);
                    fix16(pkt, ihl + 2, false, old, port);
                    changed = true;
                }
            }
        }
        _ => {}
    }
    changed
}

/// An ICMP error about a translated connection: the outer header gets the
/// manipulation of this direction, and the quoted datagram (which went
/// the other way) the inverse one, so each end recognises its own packet.
fn translate_icmp_error(pkt: &mut [u8], ihl: usize, manip: Manip, addr: u32, port: u16) -> bool {
    let mut changed = false;
    let aoff = if manip == Manip::Src { 12 } else { 16 };
    if let Some(old) = rd32(pkt, aoff).filter(|&o| o != addr) {
        wr32(pkt, aoff, addr);
        fix32(pkt, 10, false, old, addr);
        changed = true;
    }
    let icsum = ihl + 2;
    let inner = ihl + 8;
    let Some(&ivihl) = pkt.get(inner) else {
        return changed;
    };
    let iihl = usize::from(ivihl & 0xf) * 4;
    if ivihl >> 4 != 4 || iihl < 20 || pkt.len() < inner + iihl + 8 {
        return changed;
    }
    let iproto = pkt[inner + 9];
    let il4 = inner + iihl;
    // Quoted source when we rewrite the outer destination, and vice versa.
    let (ia, ip_off) = match manip {
        Manip::Dst => (inner + 12, il4),
        Manip::Src => (inner + 16, il4 + 2),
    };
    if let Some(old) = rd32(pkt, ia).filter(|&o| o != addr) {
        wr32(pkt, ia, addr);
        fix32(pkt, icsum, false, old, addr);
        if let Some(oc) = rd16(pkt, inner + 10) {
            fix32(pkt, inner + 10, false, old, addr);
            if let Some(nc) = rd16(pkt, inner + 10) {
                fix16(pkt, icsum, false, oc, nc);
            }
        }
        if let Some((c, udp)) = l4_csum(iproto) {
            if pkt.len() >= il4 + c + 2 {
                let oc = rd16(pkt, il4 + c).unwrap_or(0);
                fix32(pkt, il4 + c, udp, old, addr);
                let nc = rd16(pkt, il4 + c).unwrap_or(0);
                fix16(pkt, icsum, false, oc, nc);
            }
        }
        changed = true;
    }
    let port_off = match iproto {
        6 | 17 => Some(ip_off),
        1 => {
            let ty = pkt[il4];
            let is_req = ICMP_QUERIES.iter().any(|(q, _)| *q == ty);
            let is_rep = ICMP_QUERIES.iter().any(|(_, r)| *r == ty);
            ((is_req && manip == Manip::Dst) || (is_rep && manip == Manip::Src)).then_some(il4 + 4)
        }
        _ => None,
    };
    if let Some(po) = port_off {
        if let Some(old) = rd16(pkt, po).filter(|&o| o != port) {
            wr16(pkt, po, port);
            fix16(pkt, icsum, false, old, port);
            let inner_csum = match iproto {
                6 | 17 => l4_csum(iproto),
                _ => Some((2, false)),
            };
            if let Some((c, udp)) = inner_csum {
                if pkt.len() >= il4 + c + 2 {
                    let oc = rd16(pkt, il4 + c).unwrap_or(0);
                    fix16(pkt, il4 + c, udp, old, port);
                    let nc = rd16(pkt, il4 + c).unwrap_or(0);
                    fix16(pkt, icsum, false, oc, nc);
                }
            }
            changed = true;
        }
    }
    changed
}

// IPv6 (RFC 8200). There is no header checksum; TCP, UDP and ICMPv6 all
// sum a pseudo-header with both addresses (§8.1), so an address change
// reaches the transport checksum of all three. UDP's checksum is
// mandatory over IPv6: a zero is never left or made (a computed zero is
// sent as 0xffff).

/// The 16 bytes at `at` as one address, if `b` holds them.
fn rd128(b: &[u8], at: usize) -> Option<u128> {
    Some(u128::from_be_bytes(b.get(at..at + 16)?.try_into().ok()?))
}

/// Writes address `v` at `at`, if `b` has room for it.
fn wr128(b: &mut [u8], at: usize, v: u128) {
    if let Some(s) = b.get_mut(at..at + 16) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// The checksum at `at` adjusted by `f`; `udp`: UDP over IPv6, whose
/// checksum is never 0.
fn fix6(b: &mut [u8], at: usize, udp: bool, f: impl FnOnce(u16) -> u16) {
    if let Some(c) = rd16(b, at) {
        let mut n = f(c);
        if udp && n == 0 {
            n = 0xffff;
        }
        wr16(b, at, n);
    }
}

/// A 128-bit change (an address), in the four 32-bit words RFC 1624
/// updates one at a time.
fn update_u128(c: u16, old: u128, new: u128) -> u16 {
    (0..4).rev().fold(c, |c, i| {
        update_u32(c, (old >> (32 * i)) as u32, (new >> (32 * i)) as u32)
    })
}

/// Offset of an IPv6 transport checksum (TCP, UDP, ICMPv6), and whether
/// it is UDP's.
fn l4_csum6(proto: u8) -> Option<(usize, bool)> {
    match proto {
        ICMPV6 => Some((2, false)),
        p => l4_csum(p),
    }
}

/// [`translate`] for an IPv6 packet: the address in the fixed header,
/// then (after the extension headers, which are not touched) the ports
/// or echo identifier and the transport checksum. A later fragment only
/// has its address rewritten; so does a packet whose extension headers
/// cannot be followed.
fn translate6(pkt: &mut [u8], manip: Manip, addr: u128, port: u16, partial: bool) -> bool {
    let Some(plen) = rd16(pkt, 4).map(usize::from) else {
        return false;
    };
    let len = 40 + plen;
    if pkt.len() < len || pkt.first().is_none_or(|b| b >> 4 != 6) {
        return false;
    }
    let pkt = &mut pkt[..len];
    let aoff = if manip == Manip::Src { 8 } else { 24 };
    let l4 = match find_upper(pkt[6], &pkt[40..]) {
        Upper::At { proto, off, .. } => Some((proto, 40 + off)),
        Upper::Later { .. } | Upper::Unknown => None,
    };
    if let Some((ICMPV6, l4)) = l4 {
        if pkt.get(l4).is_some_and(|&t| icmpv6_is_error(t)) && pkt.len() >= l4 + 8 {
            return translate_icmp6_error(pkt, l4, manip, addr, port);
        }
    }
    let mut changed = false;
    if let Some(old) = rd128(pkt, aoff).filter(|&o| o != addr) {
        wr128(pkt, aoff, addr);
        if let Some((proto, l4)) = l4 {
            if let Some((c, udp)) = l4_csum6(proto).filter(|(c, _)| pkt.len() >= l4 + c + 2) {
                if partial && proto != ICMPV6 {
                    // Only the pseudo-header sum is in the field.
                    fix6(pkt, l4 + c, false, |v| !update_u128(!v, old, addr));
                } else {
                    fix6(pkt, l4 + c, udp, |v| update_u128(v, old, addr));
                }
            }
        }
        changed = true;
    }
    let Some((proto, l4)) = l4 else {
        return changed;
    };
    let port_at = match proto {
        6 | 17 => Some(l4 + if manip == Manip::Src { 0 } else { 2 }),
        ICMPV6 => {
            let ty = pkt.get(l4).copied().unwrap_or(0);
            let is_req = ICMPV6_QUERIES.iter().any(|(q, _)| *q == ty);
            let is_rep = ICMPV6_QUERIES.iter().any(|(_, r)| *r == ty);
            // The id is the request's source "port", the reply's
            // destination one.
            ((is_req && manip == Manip::Src) || (is_rep && manip == Manip::Dst)).then_some(l4 + 4)
        }
        _ => None,
    };
    let Some((c, udp)) = l4_csum6(proto) else {
        return changed;
    };
    if let Some(po) = port_at.filter(|_| pkt.len() >= l4 + 8 && pkt.len() >= l4 + c + 2) {
        if let Some(old) = rd16(pkt, po).filter(|&o| o != port) {
            wr16(pkt, po, port);
            if !partial || proto == ICMPV6 {
                fix6(pkt, l4 + c, udp, |v| update_u16(v, old, port));
            }
            changed = true;
        }
    }
    changed
}

/// An ICMPv6 error about a translated connection, as
/// [`translate_icmp_error`]: the outer header gets this direction's
/// manipulation, the quoted packet the inverse one. The ICMPv6 checksum
/// follows every change: the outer address (its pseudo-header) and each
/// rewritten quoted byte, the quoted transport checksum included.
fn translate_icmp6_error(pkt: &mut [u8], l4: usize, manip: Manip, addr: u128, port: u16) -> bool {
    let mut changed = false;
    let icsum = l4 + 2;
    let aoff = if manip == Manip::Src { 8 } else { 24 };
    if let Some(old) = rd128(pkt, aoff).filter(|&o| o != addr) {
        wr128(pkt, aoff, addr);
        fix6(pkt, icsum, false, |v| update_u128(v, old, addr));
        changed = true;
    }
    let inner = l4 + 8;
    if pkt.len() < inner + 40 || pkt[inner] >> 4 != 6 {
        return changed;
    }
    let Upper::At {
        proto: iproto, off, ..
    } = find_upper(pkt[inner + 6], &pkt[inner + 40..])
    else {
        return changed;
    };
    let il4 = inner + 40 + off;
    // Quoted source when we rewrite the outer destination, and vice versa.
    let (ia, ip_off) = match manip {
        Manip::Dst => (inner + 8, il4),
        Manip::Src => (inner + 24, il4 + 2),
    };
    let inner_csum = l4_csum6(iproto).filter(|(c, _)| pkt.len() >= il4 + c + 2);
    // Adjusts the quoted checksum by `f` and the outer one for that.
    let fix_inner = |pkt: &mut [u8], f: &dyn Fn(u16) -> u16| {
        if let Some((c, udp)) = inner_csum {
            let oc = rd16(pkt, il4 + c).unwrap_or(0);
            fix6(pkt, il4 + c, udp, f);
            let nc = rd16(pkt, il4 + c).unwrap_or(0);
            fix6(pkt, icsum, false, |v| update_u16(v, oc, nc));
        }
    };
    if let Some(old) = rd128(pkt, ia).filter(|&o| o != addr) {
        wr128(pkt, ia, addr);
        fix6(pkt, icsum, false, |v| update_u128(v, old, addr));
        fix_inner(pkt, &|v| update_u128(v, old, addr));
        changed = true;
    }
    if pkt.len() < il4 + 8 {
        return changed;
    }
    let port_off = match iproto {
        6 | 17 => Some(ip_off),
        ICMPV6 => {
            let ty = pkt[il4];
            let is_req = ICMPV6_QUERIES.iter().any(|(q, _)| *q == ty);
            let is_rep = ICMPV6_QUERIES.iter().any(|(_, r)| *r == ty);
            ((is_req && manip == Manip::Dst) || (is_rep && manip == Manip::Src)).then_some(il4 + 4)
        }
        _ => None,
    };
    if let Some(po) = port_off {
        if let Some(old) = rd16(pkt, po).filter(|&o| o != port) {
            wr16(pkt, po, port);
            fix6(pkt, icsum, false, |v| update_u16(v, old, port));
            fix_inner(pkt, &|v| update_u16(v, old, port));
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::packet::{build, PacketInfo};
    use strata_proto::checksum::{pseudo_header_v4, verify};

    /// Checks every checksum of an IPv4 datagram from scratch.
    pub fn checksums_ok(p: &[u8]) -> bool {
        let ihl = usize::from(p[0] & 0xf) * 4;
        if !verify(&p[..ihl]) {
            return false;
        }
        let src = u32::from_be_bytes(p[12..16].try_into().unwrap());
        let dst = u32::from_be_bytes(p[16..20].try_into().unwrap());
        let l4 = &p[ihl..];
        match p[9] {
            6 | 17 => {
                if p[9] == 17 && l4[6..8] == [0, 0] {
                    return true;
                }
                let mut c = pseudo_header_v4(src.into(), dst.into(), p[9], l4.len() as u16);
                c.add_bytes(l4);
                c.sum() == 0xffff
            }
            1 => {
                if !verify(l4) {
                    return false;
                }
                if icmp_is_error(l4[0]) {
                    let inner = &l4[8..];
                    let iihl = usize::from(inner[0] & 0xf) * 4;
                    return verify(&inner[..iihl]);
                }
                true
            }
            _ => true,
        }
    }

    fn info(b: &[u8]) -> PacketInfo {
        PacketInfo::parse(b, 0, 0).unwrap()
    }

    const C: [u8; 4] = [192, 168, 1, 10];
    const V: [u8; 4] = [203, 0, 113, 1];
    const S: [u8; 4] = [10, 0, 0, 2];
    const N: [u8; 4] = [198, 51, 100, 7];

    fn a(x: [u8; 4]) -> u32 {
        u32::from_be_bytes(x)
    }

    /// As a NAT address: 128 bits, IPv4 mapped.
    fn m(x: [u8; 4]) -> u128 {
        strata_ipc::addrs::mapped(a(x))
    }

    #[test]
    fn dnat_tcp_both_ways() {
        let mut ct = Conntrack::new(16, [1, 2]);
        let mut syn = build::tcp(C, 40000, V, 80, 0x02, 1, 0, 1000, b"hello");
        let t = ct.track(&info(&syn), 0);
        setup(
            &mut ct,
            t.id,
            NatAction::Dnat {
                addr: m(S),
                ports: Some((8080, 8080)),
            },
            0,
            0,
        )
        .unwrap();
        assert!(translate(&mut syn, &ct, t.id, 0, Hook::Prerouting, false));
        let i = info(&syn);
        assert_eq!((i.dst, i.dport, i.src, i.sport), (a(S), 8080, a(C), 40000));
        assert!(checksums_ok(&syn));
        // Nothing to do at the source hook for this direction.
        assert!(!translate(&mut syn, &ct, t.id, 0, Hook::Postrouting, false));
        let mut reply = build::tcp(S, 8080, C, 40000, 0x12, 9, 2, 1000, &[]);
        let r = ct.track(&info(&reply), 1);
        assert_eq!((r.id, r.dir), (t.id, 1));
        assert!(!translate(
            &mut reply,
            &ct,
            r.id,
            1,
            Hook::Prerouting,
            false
        ));
        assert!(translate(
            &mut reply,
            &ct,
            r.id,
            1,
            Hook::Postrouting,
            false
        ));
        let i = info(&reply);
        assert_eq!((i.src, i.sport), (a(V), 80));
        assert!(checksums_ok(&reply));
    }

    /// NAT on a segment whose checksum is left partial (offload): once
    /// the device completes it, it is the checksum of the new packet.
    #[test]
    fn dnat_keeps_a_partial_checksum_partial() {
        use strata_proto::checksum::pseudo_header_v4;
        let mut ct = Conntrack::new(16, [1, 2]);
        let mut syn = build::tcp(C, 40000, V, 80, 0x02, 1, 0, 1000, b"hello");
        // Make its checksum partial: the pseudo-header sum only.
        let tcp_len = (syn.len() - 20) as u16;
        let pseudo = pseudo_header_v4(C.into(), V.into(), 6, tcp_len).sum();
        syn[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let t = ct.track(&info(&syn), 0);
        let dnat = NatAction::Dnat {
            addr: m(S),
            ports: Some((8080, 8080)),
        };
        setup(&mut ct, t.id, dnat, 0, 0).unwrap();
        assert!(translate(&mut syn, &ct, t.id, 0, Hook::Prerouting, true));
        let want = pseudo_header_v4(C.into(), S.into(), 6, tcp_len).sum();
        assert_eq!(syn[36..38], want.to_be_bytes());
        strata_proto::offload::complete_checksum(&mut syn, 20, 16).unwrap();
        assert!(checksums_ok(&syn));
    }

    #[test]
    fn snat_udp_with_clash_and_zero_checksum() {
        let mut ct = Conntrack::new(16, [1, 2]);
        let mut p1 = build::udp(C, 5000, S, 53, b"q1");
        let t1 = ct.track(&info(&p1), 0);
        setup(
            &mut ct,
            t1.id,
            NatAction::Snat {
                addr: m(N),
                ports: None,
            },
            0,
            0,
        )
        .unwrap();
        assert!(translate(&mut p1, &ct, t1.id, 0, Hook::Postrouting, false));
        assert_eq!((info(&p1).src, info(&p1).sport), (a(N), 5000));
        assert!(checksums_ok(&p1));
        // A second client with the same port must get another one.
        let c2 = [192, 168, 1, 11];
        let mut p2 = build::udp(c2, 5000, S, 53, b"q2");
        p2[26..28].copy_from_slice(&[0, 0]); // no UDP checksum
        let t2 = ct.track(&info(&p2), 0);
        setup(
            &mut ct,
            t2.id,
            NatAction::Masquerade { ports: None },
            0,
            m(N),
        )
        .unwrap();
        translate(&mut p2, &ct, t2.id, 0, Hook::Postrouting, false);
        let i2 = info(&p2);
        assert_eq!(i2.src, a(N));
        assert!(i2.sport >= 1024 && i2.sport != 5000);
        assert_eq!(&p2[26..28], &[0, 0]);
        assert!(checksums_ok(&p2));
        // The reply to the second finds its connection and goes back.
        let mut back = build::udp(S, 53, N, i2.sport, b"a2");
        let r = ct.track(&info(&back), 1);
        assert_eq!((r.id, r.dir), (t2.id, 1));
        assert!(translate(&mut back, &ct, r.id, 1, Hook::Prerouting, false));
        let ib = info(&back);
        assert_eq!((ib.dst, ib.dport), (a(c2), 5000));
        assert!(checksums_ok(&back));
        // Masquerade without an address fails.
        let p3 = build::udp(C, 7000, S, 53, b"q");
        let t3 = ct.track(&info(&p3), 0);
        assert_eq!(
            setup(&mut ct, t3.id, NatAction::Masquerade { ports: None }, 0, 0),
            Err(NatError::NoAddress)
        );
    }

    #[test]
    fn icmp_echo_and_error_through_snat() {
        let mut ct = Conntrack::new(16, [1, 2]);
        let mut req = build::icmp_echo(C, S, 8, 99, 1);
        let t = ct.track(&info(&req), 0);
        setup(
            &mut ct,
            t.id,
            NatAction::Snat {
                addr: m(N),
                ports: Some((500, 500)),
            },
            0,
            0,
        )
        .unwrap();
        assert!(translate(&mut req, &ct, t.id, 0, Hook::Postrouting, false));
        let i = info(&req);
        assert_eq!((i.src, i.sport), (a(N), 500));
        assert!(checksums_ok(&req));
        let mut rep = build::icmp_echo(S, N, 0, 500, 1);
        let r = ct.track(&info(&rep), 1);
        assert_eq!(r.id, t.id);
        assert!(translate(
            &mut rep,
            &ct,
            r.id,
            r.dir,
            Hook::Prerouting,
            false
        ));
        let i = info(&rep);
        assert_eq!((i.dst, i.dport), (a(C), 99));
        assert!(checksums_ok(&rep));

        // A UDP flow through SNAT, and a port unreachable about it.
        let mut u = build::udp(C, 6000, S, 9, b"data");
        let tu = ct.track(&info(&u), 2);
        setup(
            &mut ct,
            tu.id,
            NatAction::Snat {
                addr: m(N),
                ports: Some((7000, 7000)),
            },
            0,
            0,
        )
        .unwrap();
        translate(&mut u, &ct, tu.id, 0, Hook::Postrouting, false);
        let mut err = build::icmp_error(S, N, 3, 3, &u);
        let r = ct.track(&info(&err), 3);
        assert_eq!(
            (r.id, r.dir, r.state),
            (tu.id, 1, crate::ruleset::CtState::Related)
        );
        assert!(translate(
            &mut err,
            &ct,
            r.id,
            r.dir,
            Hook::Prerouting,
            false
        ));
        let i = info(&err);
        assert_eq!(i.dst, a(C));
        let inner = i.inner.unwrap();
        assert_eq!(
            (inner.src, inner.sport, inner.dst, inner.dport),
            (a(C), 6000, a(S), 9)
        );
        assert!(checksums_ok(&err));
        // The quoted UDP checksum still matches the quoted header.
        let q = &err[28..];
        let orig = build::udp(C, 6000, S, 9, b"data");
        assert_eq!(&q[..28], &orig[..28]);
    }
    /// Checks every checksum of an IPv6 packet without extension headers
    /// from scratch, against the IPv6 pseudo-header; an ICMPv6 error's
    /// quoted transport checksum too when the whole packet is quoted. A
    /// UDP checksum must not be 0.
    pub fn checksums6_ok(p: &[u8]) -> bool {
        use strata_proto::checksum::pseudo_header_v6;
        let addr =
            |at: usize| std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&p[at..at + 16]).unwrap());
        let proto = p[6];
        let l4 = &p[40..];
        match proto {
            6 | 17 | 58 => {
                if proto == 17 && l4[6..8] == [0, 0] {
                    return false;
                }
                let mut c = pseudo_header_v6(addr(8), addr(24), proto, l4.len() as u32);
                c.add_bytes(l4);
                if c.sum() != 0xffff {
                    return false;
                }
                if proto == 58 && l4[0] < 128 && l4.len() >= 48 {
                    let q = &l4[8..];
                    let qlen = 40 + usize::from(u16::from_be_bytes([q[4], q[5]]));
                    if q.len() == qlen {
                        return checksums6_ok(q);
                    }
                }
                true
            }
            _ => true,
        }
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    fn w(x: [u8; 16]) -> u128 {
        u128::from_be_bytes(x)
    }

    #[test]
    fn dnat6_tcp_syn_and_reply() {
        let (c, vip, srv) = (v6("2001:db8:1::10"), v6("2001:db8:ff::1"), v6("fd00::2"));
        let mut ct = Conntrack::new(16, [1, 2]);
        let mut syn = build::tcp6(c, 40000, vip, 80, 0x02, 1, 0, b"hello");
        let t = ct.track(&info(&syn), 0);
        let dnat = NatAction::Dnat {
            addr: w(srv),
            ports: Some((8080, 8080)),
        };
        setup(&mut ct, t.id, dnat, 0, 0).unwrap();
        assert!(translate(&mut syn, &ct, t.id, 0, Hook::Prerouting, false));
        let i = info(&syn);
        assert_eq!(
            (i.saddr, i.sport, i.daddr, i.dport),
            (w(c), 40000, w(srv), 8080)
        );
        assert!(checksums6_ok(&syn));
        assert!(!translate(&mut syn, &ct, t.id, 0, Hook::Postrouting, false));
        let mut reply = build::tcp6(srv, 8080, c, 40000, 0x12, 9, 2, &[]);
        let r = ct.track(&info(&reply), 1);
        assert_eq!((r.id, r.dir), (t.id, 1));
        assert!(!translate(
            &mut reply,
            &ct,
            r.id,
            1,
            Hook::Prerouting,
            false
        ));
        assert!(translate(
            &mut reply,
            &ct,
            r.id,
            1,
            Hook::Postrouting,
            false
        ));
        let i = info(&reply);
        assert_eq!(
            (i.saddr, i.sport, i.daddr, i.dport),
            (w(vip), 80, w(c), 40000)
        );
        assert!(checksums6_ok(&reply));
        // An IPv4 address cannot bind an IPv6 connection.
        let p = build::tcp6(c, 40001, vip, 80, 0x02, 1, 0, &[]);
        let t2 = ct.track(&info(&p), 0);
        let v4 = NatAction::Dnat {
            addr: m(S),
            ports: None,
        };
        assert_eq!(setup(&mut ct, t2.id, v4, 0, 0), Err(NatError::NoAddress));
    }

    #[test]
    fn dnat6_keeps_a_partial_checksum_partial() {
        use strata_proto::checksum::pseudo_header_v6;
        let (c, vip, srv) = (v6("2001:db8:1::10"), v6("2001:db8:ff::1"), v6("fd00::2"));
        let mut ct = Conntrack::new(16, [1, 2]);
        let mut syn = build::tcp6(c, 40000, vip, 80, 0x02, 1, 0, b"hello");
        let tcp_len = (syn.len() - 40) as u32;
        let pseudo = pseudo_header_v6(c.into(), vip.into(), 6, tcp_len).sum();
        syn[56..58].copy_from_slice(&pseudo.to_be_bytes());
        let t = ct.track(&info(&syn), 0);
        let dnat = NatAction::Dnat {
            addr: w(srv),
            ports: Some((8080, 8080)),
        };
        setup(&mut ct, t.id, dnat, 0, 0).unwrap();
        assert!(translate(&mut syn, &ct, t.id, 0, Hook::Prerouting, true));
        let want = pseudo_header_v6(c.into(), srv.into(), 6, tcp_len).sum();
        assert_eq!(syn[56..58], want.to_be_bytes());
        strata_proto::offload::complete_checksum(&mut syn, 40, 16).unwrap();
        assert!(checksums6_ok(&syn));
    }

    #[test]
    fn redirect6_to_the_local_address() {
        let (c, dst, me) = (
            v6("2001:db8:1::10"),
            v6("2001:db8:77::7"),
            v6("2001:db8:1::1"),
        );
        let mut ct = Conntrack::new(16, [1, 2]);
        let mut p = build::tcp6(c, 40000, dst, 80, 0x02, 1, 0, &[]);
        let t = ct.track(&info(&p), 0);
        let redirect = NatAction::Redirect {
            ports: Some((3128, 3128)),
        };
        // Without a local address there is nothing to redirect to.
        assert_eq!(
            setup(&mut ct, t.id, redirect, 0, 0),
            Err(NatError::NoAddress)
        );
        setup(&mut ct, t.id, redirect, w(me), 0).unwrap();
        assert!(translate(&mut p, &ct, t.id, 0, Hook::Prerouting, false));
        let i = info(&p);
        assert_eq!((i.daddr, i.dport), (w(me), 3128));
        assert!(checksums6_ok(&p));
        let mut back = build::tcp6(me, 3128, c, 40000, 0x12, 5, 2, &[]);
        let r = ct.track(&info(&back), 1);
        assert_eq!((r.id, r.dir), (t.id, 1));
        assert!(!translate(&mut back, &ct, r.id, 1, Hook::Output, false));
        assert!(translate(&mut back, &ct, r.id, 1, Hook::Postrouting, false));
        let i = info(&back);
        assert_eq!((i.saddr, i.sport), (w(dst), 80));
        assert!(checksums6_ok(&back));
    }

    #[test]
    fn masquerade6_and_snat6_udp_never_zero() {
        let (c, c2, srv, gw) = (
            v6("fd00:1::10"),
            v6("fd00:1::11"),
            v6("2001:db8:5::53"),
            v6("2001:db8:9::1"),
        );
        let mut ct = Conntrack::new(16, [1, 2]);
        let mut p1 = build::udp6(c, 5000, srv, 53, b"q1");
        let t1 = ct.track(&info(&p1), 0);
        setup(
            &mut ct,
            t1.id,
            NatAction::Masquerade { ports: None },
            0,
            w(gw),
        )
        .unwrap();
        assert!(translate(&mut p1, &ct, t1.id, 0, Hook::Postrouting, false));
        assert_eq!((info(&p1).saddr, info(&p1).sport), (w(gw), 5000));
        assert!(checksums6_ok(&p1));
        // A second client with the same port gets another one.
        let mut p2 = build::udp6(c2, 5000, srv, 53, b"q2");
        let t2 = ct.track(&info(&p2), 0);
        let snat = NatAction::Snat {
            addr: w(gw),
            ports: None,
        };
        setup(&mut ct, t2.id, snat, 0, 0).unwrap();
        assert!(translate(&mut p2, &ct, t2.id, 0, Hook::Postrouting, false));
        let i2 = info(&p2);
        assert_eq!(i2.saddr, w(gw));
        assert!(i2.sport >= 1024 && i2.sport != 5000);
        assert!(checksums6_ok(&p2));
        let mut back = build::udp6(srv, 53, gw, i2.sport, b"a2");
        let r = ct.track(&info(&back), 1);
        assert_eq!((r.id, r.dir), (t2.id, 1));
        assert!(translate(&mut back, &ct, r.id, 1, Hook::Prerouting, false));
        let ib = info(&back);
        assert_eq!((ib.daddr, ib.dport), (w(c2), 5000));
        assert!(checksums6_ok(&back));
        // A datagram whose checksum comes out 0 after the rewrite is sent
        // with 0xffff: find a payload word that makes it so.
        let mut hit = false;
        for x in 0..=u16::MAX {
            let mut p = build::udp6(c, 6000 + (x % 7), srv, 53, &x.to_be_bytes());
            // The checksum after SNAT to gw at an unchanged port: the
            // old one adjusted for the address.
            let old = u16::from_be_bytes([p[46], p[47]]);
            if update_u128(old, w(c), w(gw)) != 0 {
                continue;
            }
            let t = ct.track(&info(&p), 0);
            let snat = NatAction::Snat {
                addr: w(gw),
                ports: None,
            };
            setup(&mut ct, t.id, snat, 0, 0).unwrap();
            assert!(translate(&mut p, &ct, t.id, 0, Hook::Postrouting, false));
            assert_eq!(&p[46..48], &[0xff, 0xff]);
            assert!(checksums6_ok(&p));
            hit = true;
            break;
        }
        assert!(hit);
        // Masquerade without an address fails.
        let p3 = build::udp6(c, 7000, srv, 53, b"q");
        let t3 = ct.track(&info(&p3), 0);
        assert_eq!(
            setup(&mut ct, t3.id, NatAction::Masquerade { ports: None }, 0, 0),
            Err(NatError::NoAddress)
        );
    }

    #[test]
    fn icmpv6_echo_and_error_through_snat6() {
        let (c, srv, gw) = (v6("fd00:1::10"), v6("2001:db8:5::1"), v6("2001:db8:9::1"));
        let mut ct = Conntrack::new(16, [1, 2]);
        let mut req = build::icmp6_echo(c, srv, 128, 99, 1);
        let t = ct.track(&info(&req), 0);
        let snat = NatAction::Snat {
            addr: w(gw),
            ports: Some((500, 500)),
        };
        setup(&mut ct, t.id, snat, 0, 0).unwrap();
        assert!(translate(&mut req, &ct, t.id, 0, Hook::Postrouting, false));
        let i = info(&req);
        assert_eq!((i.saddr, i.sport), (w(gw), 500));
        assert!(checksums6_ok(&req));
        let mut rep = build::icmp6_echo(srv, gw, 129, 500, 1);
        let r = ct.track(&info(&rep), 1);
        assert_eq!((r.id, r.dir), (t.id, 1));
        assert!(translate(
            &mut rep,
            &ct,
            r.id,
            r.dir,
            Hook::Prerouting,
            false
        ));
        let i = info(&rep);
        assert_eq!((i.daddr, i.dport), (w(c), 99));
        assert!(checksums6_ok(&rep));

        // A UDP flow through SNAT, and a port unreachable about it.
        let mut u = build::udp6(c, 6000, srv, 9, b"data");
        let orig = u.clone();
        let tu = ct.track(&info(&u), 2);
        let snat = NatAction::Snat {
            addr: w(gw),
            ports: Some((7000, 7000)),
        };
        setup(&mut ct, tu.id, snat, 0, 0).unwrap();
        assert!(translate(&mut u, &ct, tu.id, 0, Hook::Postrouting, false));
        assert!(checksums6_ok(&u));
        let mut err = build::icmp6_error(srv, gw, 1, 4, &u);
        assert!(checksums6_ok(&err));
        let r = ct.track(&info(&err), 3);
        assert_eq!(
            (r.id, r.dir, r.state),
            (tu.id, 1, crate::ruleset::CtState::Related)
        );
        assert!(translate(
            &mut err,
            &ct,
            r.id,
            r.dir,
            Hook::Prerouting,
            false
        ));
        let i = info(&err);
        assert_eq!(i.daddr, w(c));
        let inner = i.inner.unwrap();
        assert_eq!(
            (inner.saddr, inner.sport, inner.daddr, inner.dport),
            (w(c), 6000, w(srv), 9)
        );
        assert!(checksums6_ok(&err));
        // The quoted packet is the client's own again, checksum included.
        assert_eq!(&err[48..], &orig[..]);

        // An echo request DNATed, and an error about it from the server.
        let (vip, inner_srv) = (v6("2001:db8:9::80"), v6("fd00:2::80"));
        let mut ping = build::icmp6_echo(c, vip, 128, 42, 7);
        let ping0 = ping.clone();
        let tp = ct.track(&info(&ping), 4);
        let dnat = NatAction::Dnat {
            addr: w(inner_srv),
            ports: None,
        };
        setup(&mut ct, tp.id, dnat, 0, 0).unwrap();
        assert!(translate(&mut ping, &ct, tp.id, 0, Hook::Prerouting, false));
        assert_eq!(info(&ping).daddr, w(inner_srv));
        assert!(checksums6_ok(&ping));
        let mut err = build::icmp6_error(inner_srv, c, 1, 1, &ping);
        let r = ct.track(&info(&err), 5);
        assert_eq!((r.id, r.dir), (tp.id, 1));
        assert!(translate(
            &mut err,
            &ct,
            r.id,
            r.dir,
            Hook::Postrouting,
            false
        ));
        assert_eq!(info(&err).saddr, w(vip));
        assert!(checksums6_ok(&err));
        assert_eq!(&err[48..], &ping0[..]);
    }
}
