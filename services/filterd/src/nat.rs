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

use crate::conntrack::{Conntrack, Tuple};
use crate::packet::{icmp_is_error, ICMP_QUERIES};
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
    /// MASQUERADE or REDIRECT without an address to use.
    NoAddress,
    /// Every candidate tuple is in use.
    NoPort,
    /// The entry is gone.
    NoEntry,
    /// The connection is IPv6: IPv6 NAT is not supported.
    Ipv6,
}

/// Most ports tried when the first choice clashes.
const MAX_TRIES: u32 = 1024;

/// Binds connection `id` per `action`. `local` is the address REDIRECT
/// sends to (the incoming interface's), `out` the address MASQUERADE
/// uses (the outgoing interface's); 0 when unknown.
pub fn setup(
    ct: &mut Conntrack,
    id: u32,
    action: NatAction,
    local: u32,
    out: u32,
) -> Result<(), NatError> {
    let e = *ct.entry(id).ok_or(NatError::NoEntry)?;
    if e.family != 4 {
        return Err(NatError::Ipv6);
    }
    let proto = e.proto;
    let orig = e.tuple[0];
    let mut r = e.tuple[1];
    let (manip, addr, range) = match action {
        NatAction::Dnat { addr, ports } => (Manip::Dst, addr, ports),
        NatAction::Redirect { ports } => (Manip::Dst, local, ports),
        NatAction::Snat { addr, ports } => (Manip::Src, addr, ports),
        NatAction::Masquerade { ports } => (Manip::Src, out, ports),
    };
    if addr == 0 {
        return Err(NatError::NoAddress);
    }
    // The reply's source is the new destination, its destination the new
    // source; likewise for ports.
    let cur_port = match manip {
        Manip::Dst => {
            r.set_src4(addr);
            r.sport
        }
        Manip::Src => {
            r.set_dst4(addr);
            r.dport
        }
    };
    // ICMP ids are chosen by the source; a destination has none.
    let has_ports = matches!(proto, 6 | 17) || (proto == 1 && manip == Manip::Src && cur_port != 0);
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
        (None, Manip::Src) if proto == 1 => (0, u16::MAX),
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
    let seed = orig.src4()
        ^ orig.dst4().rotate_left(7)
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

/// Rewrites `pkt` (an IPv4 datagram of connection `id`, direction `dir`)
/// for `hook`. Returns whether any byte changed. Malformed input is left
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
    if e.tuple[1] == e.tuple[0].invert() || e.family != 4 {
        return false; // not translated (no IPv6 NAT)
    }
    let target = e.tuple[usize::from(dir & 1) ^ 1].invert();
    let (addr, port) = match manip {
        Manip::Src => (target.src4(), target.sport),
        Manip::Dst => (target.dst4(), target.dport),
    };
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

    #[test]
    fn dnat_tcp_both_ways() {
        let mut ct = Conntrack::new(16, [1, 2]);
        let mut syn = build::tcp(C, 40000, V, 80, 0x02, 1, 0, 1000, b"hello");
        let t = ct.track(&info(&syn), 0);
        setup(
            &mut ct,
            t.id,
            NatAction::Dnat {
                addr: a(S),
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
            addr: a(S),
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
                addr: a(N),
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
            a(N),
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
                addr: a(N),
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
                addr: a(N),
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
}
