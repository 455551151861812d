//! Forwarding (RFC 1812 §5.2–5.3 for IPv4, RFC 8200 §3 and RFC 4443 for
//! IPv6, the way Linux does it with `ip_forward=1` and
//! `net.ipv6.conf.all.forwarding=1`): a packet not addressed to us is
//! routed, its TTL or hop limit decremented, and sent on in the very
//! buffer it arrived in, with a new Ethernet header written over the old
//! one. What cannot be forwarded is answered with the ICMP error Linux
//! sends, and counted (the same counters for both families). IPv6 is
//! never fragmented on the way: a packet too big for the next link gets
//! Packet Too Big.
//!
//! Differences from Linux, on purpose: no ICMP redirects are ever sent
//! (Linux sends them when a packet leaves by the interface it came in on;
//! RFC 1812 only says MAY), options are forwarded as they are (record
//! route and timestamp are not filled in), and there is no reverse-path
//! filter (Linux's compiled-in default, `rp_filter=0`, has none either).

use strata_ipc::handle::flags::FORWARDED;
use strata_ipc::handle::gso::wire_len;
use strata_ipc::{Buffers, Handle};
use strata_proto::icmp::{time_exceeded_code, unreach_code, IcmpHeader};
use strata_proto::icmpv6::{self, Icmpv6Header};
use strata_proto::ipv4::{decrement_ttl, option_kind, options, Ipv4Header};
use strata_proto::ipv6::Ipv6Header;
use strata_proto::ndp::is_link_local;

use crate::neigh::NeighAddr;
use crate::route::is_martian;
use crate::stats::Stat;
use crate::{IpCore, Outputs, ETH_LEN};

/// Whether the IPv4 header at the start of `ip` carries a loose or strict
/// source route. Malformed options were refused by the header parser, so
/// an error here cannot happen and counts as no source route.
fn has_source_route(ip: &[u8]) -> bool {
    options(ip).any(|o| matches!(o, Ok((option_kind::LSRR | option_kind::SSRR, _))))
}

impl IpCore {
    /// Forwards frame `h` (data window = the whole frame, trimmed to the
    /// datagram; `l3_off` at the IPv4 header), whose header `hdr` was
    /// validated and whose source is neither martian nor ours, and whose
    /// destination is none of our addresses or broadcasts. `l2_bcast`
    /// says it came as a link-layer broadcast or multicast.
    ///
    /// The checks run in Linux's order (`ip_route_input`, then
    /// `ip_forward`): routing first, so an unroutable datagram gets net
    /// unreachable whatever its TTL; then the TTL; then the MTU. Each
    /// error quotes the datagram as it arrived.
    pub(crate) fn forward<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        mut h: Handle,
        hdr: &Ipv4Header,
        l2_bcast: bool,
        out: &mut Outputs,
    ) {
        if l2_bcast {
            // Sent to everyone on the link, so not to us as a router; no
            // ICMP either, or every router on the link would answer.
            return self.drop(pool, &h, Stat::FwdL2Broadcast);
        }
        let dst = u32::from(hdr.dst);
        if is_martian(dst) {
            return self.drop(pool, &h, Stat::FwdMartianDest);
        }
        if hdr.header_len > 20 {
            let srr = match pool.data(&h) {
                Ok(d) => has_source_route(d.get(ETH_LEN..).unwrap_or(&[])),
                Err(e) => return self.bad_handle(pool, &h, e),
            };
            if srr {
                return self.drop(pool, &h, Stat::FwdSourceRoute);
            }
        }
        let Some(r) = self.net.lookup(dst) else {
            let msg = IcmpHeader::dest_unreachable(unreach_code::NET, 0);
            self.icmp_error(now, pool, &h, msg, false, out);
            return self.drop(pool, &h, Stat::FwdNoRoute);
        };
        if hdr.ttl <= 1 {
            let msg = IcmpHeader::time_exceeded(time_exceeded_code::TTL);
            self.icmp_error(now, pool, &h, msg, false, out);
            return self.drop(pool, &h, Stat::FwdTtlExceeded);
        }
        let (mtu, oif) = {
            let iface = &self.net.ifaces[r.slot];
            (iface.mtu, iface.index)
        };
        // A super-segment goes out as its segments (`wire_len`), never
        // fragmented: one whose segments exceed the MTU is refused whatever
        // its DF bit (Linux would fragment each segment; TCP sets DF).
        let wire = match pool.data(&h) {
            Ok(d) => wire_len(&h, d.get(ETH_LEN..).unwrap_or(&[])),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let super_seg = wire < usize::from(hdr.total_len);
        if wire > usize::from(mtu) && (hdr.dont_frag || super_seg) {
            let msg = IcmpHeader::dest_unreachable(unreach_code::FRAG_NEEDED, mtu);
            self.icmp_error(now, pool, &h, msg, false, out);
            return self.drop(pool, &h, Stat::FwdFragNeeded);
        }
        let ttl = match pool.data_mut(&h) {
            Ok(d) => d.get_mut(ETH_LEN..).and_then(decrement_ttl),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        // The header was parsed from these bytes with a TTL above 1, so
        // only a window that changed under us gets here.
        if ttl.is_none() || !h.pull_front(ETH_LEN as u32) {
            return self.drop(pool, &h, Stat::BadWindow);
        }
        // The datagram now starts where the old Ethernet header ended; the
        // way out writes the new one into the same 14 bytes of headroom.
        h.l2_off = 0;
        h.l3_off = 0;
        h.l4_off = u16::from(hdr.header_len);
        h.l4proto = hdr.protocol;
        h.flags |= FORWARDED;
        h.oif = oif;
        h.nexthop = r.nexthop;
        self.stats.inc(Stat::Forwarded);
        self.send_to_neighbour(now, pool, h, r.slot, NeighAddr::v4(r.nexthop), out);
    }
}

impl IpCore {
    /// Forwards IPv6 packet `h` (window = the packet, header `hdr`) that
    /// came in on `slot` and is for none of our addresses or groups;
    /// `l2_multicast` says it came as a link-layer multicast. In Linux's
    /// order (`ip6_forward`): scope, hop limit, route, MTU.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward6<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        mut h: Handle,
        slot: usize,
        hdr: &Ipv6Header,
        l2_multicast: bool,
        out: &mut Outputs,
    ) {
        if l2_multicast {
            return self.drop(pool, &h, Stat::FwdL2Broadcast);
        }
        // No multicast routing; nothing unspecified, loopback or
        // link-local leaves its link (RFC 4291 §2.5.6).
        if hdr.dst.is_multicast()
            || hdr.dst.is_unspecified()
            || hdr.dst.is_loopback()
            || is_link_local(hdr.dst)
            || hdr.src.is_unspecified()
        {
            return self.drop(pool, &h, Stat::FwdMartianDest);
        }
        if is_link_local(hdr.src) {
            // RFC 4443 §3.1: beyond the scope of the source address.
            let msg = Icmpv6Header::dest_unreachable(icmpv6::unreach_code::BEYOND_SCOPE);
            self.icmp6_error(now, pool, &h, slot, msg, false, out);
            return self.drop(pool, &h, Stat::FwdMartianDest);
        }
        if hdr.hop_limit <= 1 {
            let msg = Icmpv6Header::time_exceeded(icmpv6::time_exceeded_code::HOP_LIMIT);
            self.icmp6_error(now, pool, &h, slot, msg, false, out);
            return self.drop(pool, &h, Stat::FwdTtlExceeded);
        }
        let Some((to, next)) = self.route6(hdr.dst) else {
            let msg = Icmpv6Header::dest_unreachable(icmpv6::unreach_code::NO_ROUTE);
            self.icmp6_error(now, pool, &h, slot, msg, false, out);
            return self.drop(pool, &h, Stat::FwdNoRoute);
        };
        let (mtu, oif) = {
            let iface = &self.net.ifaces[to];
            (iface.mtu, iface.index)
        };
        if h.data_len as usize > usize::from(mtu) {
            // RFC 8200 §5: no fragmentation on the way.
            let msg = Icmpv6Header::packet_too_big(u32::from(mtu));
            self.icmp6_error(now, pool, &h, slot, msg, true, out);
            return self.drop(pool, &h, Stat::FwdFragNeeded);
        }
        match pool.data_mut(&h) {
            Ok(d) if d.len() >= Ipv6Header::LEN => d[7] = hdr.hop_limit - 1,
            Ok(_) => return self.drop(pool, &h, Stat::BadWindow),
            Err(e) => return self.bad_handle(pool, &h, e),
        }
        h.ethertype = strata_proto::ethernet::ethertype::IPV6;
        h.l4proto = hdr.next_header;
        h.l4_off = Ipv6Header::LEN as u16;
        h.flags |= FORWARDED;
        h.oif = oif;
        h.nexthop = 0;
        self.stats.inc(Stat::Forwarded);
        self.send_to_neighbour(now, pool, h, to, NeighAddr::v6(next), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_routes_are_recognised() {
        let mut h = [0u8; 28];
        h[0] = 0x47;
        h[20..28].copy_from_slice(&[1, option_kind::LSRR, 7, 4, 0, 0, 0, 0]);
        assert!(has_source_route(&h));
        h[21] = option_kind::SSRR;
        assert!(has_source_route(&h));
        h[21] = option_kind::RECORD_ROUTE;
        assert!(!has_source_route(&h));
        h[0] = 0x45;
        assert!(!has_source_route(&h));
    }
}
