//! Neighbour discovery (RFC 4861 §7) on top of the neighbour table,
//! duplicate address detection (RFC 4862 §5.4) of every address, and the
//! MLDv2 reports (RFC 3810) that announce the groups ipd listens to.

use std::net::Ipv6Addr;

use strata_ipc::{Buffers, Handle};
use strata_proto::ipv6::Ipv6Header;
use strata_proto::mld::{
    self, record_type, MldError, Query, ALL_MLDV2_ROUTERS, HOP_BY_HOP_ROUTER_ALERT,
};
use strata_proto::ndp::{
    self, multicast_mac, solicited_node, NdpError, NdpOption, NeighborAdvertisement,
    NeighborSolicitation, ALL_NODES,
};
use strata_proto::MacAddr;

use crate::ip6::{Addr6, Dad, Iface6};
use crate::neigh::{neigh_state, Learn, NeighAddr, NeighRecord};
use crate::stats::Stat;
use crate::{IpCore, Outputs};

/// Length of a solicitation or advertisement with one link-layer address
/// option.
const ND_LEN: usize = NeighborSolicitation::LEN + 8;

impl IpCore {
    /// A neighbour solicitation at `at` in frame `h` (RFC 4861 §7.2.3,
    /// RFC 4862 §5.4.3).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn nd_solicit_input<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        h: Handle,
        slot: usize,
        hdr: &Ipv6Header,
        at: usize,
        out: &mut Outputs,
    ) {
        let parsed = self.take_message(pool, h, at, |m| {
            NeighborSolicitation::parse(m, hdr).map(|ns| (ns.target, ns.source_link_addr()))
        });
        let Some(parsed) = parsed else { return };
        let (target, sender_mac) = match parsed {
            Ok(x) => x,
            Err(e) => return self.stats.inc(ndp_stat(e)),
        };
        self.stats.inc(Stat::NdRxSolicits);
        let Some(addr) = self.v6[slot].find(target).copied() else {
            return self.stats.inc(Stat::NdNotForUs);
        };
        let dad_probe = hdr.src.is_unspecified();
        match addr.dad {
            Dad::New | Dad::Tentative { .. } if dad_probe => {
                // Someone else is trying the same address at the same time
                // (RFC 4862 §5.4.3): neither may have it.
                return self.dad_failed(slot, target);
            }
            // A tentative address is not answered for (RFC 4862 §5.4.3).
            Dad::New | Dad::Tentative { .. } | Dad::Duplicate => {
                return self.stats.inc(Stat::NdNotForUs);
            }
            Dad::Preferred => {}
        }
        if dad_probe {
            // Defend the address: tell everyone (RFC 4861 §7.2.4).
            return self.send_advert(now, pool, slot, target, ALL_NODES, false, out);
        }
        if let Some(mac) = sender_mac {
            // RFC 4861 §7.2.3: the sender's address is cached, STALE when
            // new or changed.
            if !self.usable_neighbour6(hdr.src, mac) {
                return self.stats.inc(Stat::NdInvalidSender);
            }
            let key = NeighAddr::v6(hdr.src);
            self.learn_neighbour(now, pool, slot, key, mac, Learn::Seen, true, out);
        }
        self.send_advert(now, pool, slot, target, hdr.src, true, out);
    }

    /// A neighbour advertisement at `at` in frame `h` (RFC 4861 §7.2.5,
    /// RFC 4862 §5.4.4).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn nd_advert_input<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        h: Handle,
        slot: usize,
        hdr: &Ipv6Header,
        at: usize,
        out: &mut Outputs,
    ) {
        let parsed = self.take_message(pool, h, at, |m| {
            NeighborAdvertisement::parse(m, hdr).map(|na| {
                let mac = na.target_link_addr();
                (na.target, mac, na.solicited, na.override_flag)
            })
        });
        let Some(parsed) = parsed else { return };
        let (target, mac, solicited, override_flag) = match parsed {
            Ok(x) => x,
            Err(e) => return self.stats.inc(ndp_stat(e)),
        };
        self.stats.inc(Stat::NdRxAdverts);
        match self.v6[slot].find(target).map(|a| a.dad) {
            // RFC 4862 §5.4.4: someone holds the address we try.
            Some(Dad::New | Dad::Tentative { .. }) => return self.dad_failed(slot, target),
            Some(Dad::Preferred) => return self.stats.inc(Stat::NdAddrConflict),
            // The address is the other node's: a neighbour like any.
            Some(Dad::Duplicate) | None => {}
        }
        let key = NeighAddr::v6(target);
        let Some(idx) = self.neigh.find(slot, key) else {
            // Unsolicited news of a stranger is not cached (RFC 4861
            // §7.2.5).
            return self.stats.inc(Stat::NdNotForUs);
        };
        let known = self.neigh.mac(idx);
        let Some(mac) = mac.or(known) else {
            // Nothing to learn from: no address, and none cached.
            return self.stats.inc(Stat::NdInvalidSender);
        };
        if !self.usable_neighbour6(target, mac) {
            return self.stats.inc(Stat::NdInvalidSender);
        }
        if known.is_some_and(|k| k != mac) && !override_flag {
            // RFC 4861 §7.2.5: without O, an advertisement does not
            // replace a cached address.
            return;
        }
        let how = if solicited {
            Learn::Confirmed
        } else {
            Learn::Seen
        };
        self.learn_neighbour(now, pool, slot, key, mac, how, false, out);
    }

    /// Sends a neighbour solicitation for `target` on `slot` (RFC 4861
    /// §7.2.2): to its solicited-node group, or unicast to `unicast` when
    /// re-confirming. Nothing goes while the interface has no usable
    /// source address (detection still runs on all of them).
    pub(crate) fn solicit6<B: Buffers>(
        &mut self,
        pool: &mut B,
        slot: usize,
        target: Ipv6Addr,
        unicast: Option<MacAddr>,
        out: &mut Outputs,
    ) {
        let Some(src) = self.v6[slot].source_for(target) else {
            return;
        };
        let dst = if unicast.is_some() {
            target
        } else {
            solicited_node(target)
        };
        let mac = self.net.ifaces[slot].mac;
        let Some(h) = self.build6(pool, src, dst, ndp::HOP_LIMIT, ND_LEN, |m, s, d| {
            let mut opt = [0u8; 8];
            NdpOption::SourceLinkAddr(mac).emit(&mut opt)?;
            NeighborSolicitation {
                target,
                options: &opt,
            }
            .emit(m, s, d)
        }) else {
            return;
        };
        self.stats.inc(Stat::NdTxSolicits);
        self.send_nd(pool, h, slot, unicast.unwrap_or(multicast_mac(dst)), out);
    }

    /// Sends an advertisement of our address `target` on `slot` to `dst`
    /// (RFC 4861 §7.2.4): solicited and unicast in answer to a
    /// solicitation, else to all nodes; always with our link-layer address
    /// and the override flag.
    #[allow(clippy::too_many_arguments)]
    fn send_advert<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        slot: usize,
        target: Ipv6Addr,
        dst: Ipv6Addr,
        solicited: bool,
        out: &mut Outputs,
    ) {
        let mac = self.net.ifaces[slot].mac;
        let router = self.limits.forwarding;
        let Some(h) = self.build6(pool, target, dst, ndp::HOP_LIMIT, ND_LEN, |m, s, d| {
            let mut opt = [0u8; 8];
            NdpOption::TargetLinkAddr(mac).emit(&mut opt)?;
            let na = NeighborAdvertisement {
                router,
                solicited,
                override_flag: true,
                target,
                options: &opt,
            };
            na.emit(m, s, d)
        }) else {
            return;
        };
        self.stats.inc(Stat::NdTxAdverts);
        self.send6(now, pool, h, slot, out);
    }

    /// Emits neighbour discovery packet `h` (an IPv6 packet) to `mac`.
    pub(crate) fn send_nd<B: Buffers>(
        &mut self,
        pool: &mut B,
        mut h: Handle,
        slot: usize,
        mac: MacAddr,
        out: &mut Outputs,
    ) {
        IpCore::own6(&mut h);
        self.stats.inc(Stat::Ip6OutPackets);
        self.transmit(pool, h, slot, mac, out);
    }

    /// Starts duplicate address detection on every address that has not
    /// had it (RFC 4862 §5.4.2): announces the groups with an MLDv2
    /// report, then solicits each tentative address from `::`. The
    /// addresses are used one retransmission time (`arp_retrans_ns`)
    /// later unless someone claims them.
    pub(crate) fn dad_start<B: Buffers>(&mut self, now: u64, pool: &mut B, out: &mut Outputs) {
        let until = now.saturating_add(self.limits.arp_retrans_ns);
        for slot in 0..self.v6.len() {
            let fresh: Vec<Ipv6Addr> = self.v6[slot]
                .addrs
                .iter()
                .filter(|a| a.dad == Dad::New)
                .map(|a| a.addr)
                .collect();
            if fresh.is_empty() {
                continue;
            }
            self.mld_report(pool, slot, out);
            for a in fresh {
                if let Some(x) = self.v6[slot].find_mut(a) {
                    x.dad = Dad::Tentative { until };
                }
                self.addrs6_changed = true;
                self.dad_solicit(pool, slot, a, out);
            }
        }
    }

    /// The duplicate address detection probe for `target`: a solicitation
    /// from `::` to its solicited-node group, without a link-layer
    /// address (RFC 4862 §5.4.2).
    fn dad_solicit<B: Buffers>(
        &mut self,
        pool: &mut B,
        slot: usize,
        target: Ipv6Addr,
        out: &mut Outputs,
    ) {
        let dst = solicited_node(target);
        let src = Ipv6Addr::UNSPECIFIED;
        let len = NeighborSolicitation::LEN;
        let Some(h) = self.build6(pool, src, dst, ndp::HOP_LIMIT, len, |m, s, d| {
            NeighborSolicitation {
                target,
                options: &[],
            }
            .emit(m, s, d)
        }) else {
            return;
        };
        self.stats.inc(Stat::NdTxSolicits);
        self.send_nd(pool, h, slot, multicast_mac(dst), out);
    }

    /// Another node holds our address `addr` on `slot`: it is never used
    /// (RFC 4862 §5.4.5); the shell reports it.
    fn dad_failed(&mut self, slot: usize, addr: Ipv6Addr) {
        if let Some(a) = self.v6[slot].find_mut(addr) {
            if a.dad != Dad::Duplicate {
                a.dad = Dad::Duplicate;
                self.stats.inc(Stat::DadDuplicate);
                self.addrs6_changed = true;
                self.duplicates.push((self.net.ifaces[slot].index, addr));
            }
        }
    }

    /// Ends detection for the addresses whose time is up: they are
    /// preferred now ([`nd_deadline`](Self::nd_deadline) says when the
    /// next is).
    pub(crate) fn dad_poll(&mut self, now: u64) {
        for a in self.v6.iter_mut().flat_map(|i| i.addrs.iter_mut()) {
            if matches!(a.dad, Dad::Tentative { until } if now >= until) {
                a.dad = Dad::Preferred;
                self.addrs6_changed = true;
            }
        }
    }

    /// The earliest end of a running detection, or report due.
    pub(crate) fn nd_deadline(&self) -> Option<u64> {
        let detections = self
            .v6
            .iter()
            .flat_map(|i| i.addrs.iter())
            .filter_map(|a| match a.dad {
                Dad::Tentative { until } => Some(until),
                _ => None,
            });
        detections
            .chain(self.v6.iter().filter_map(|i| i.mld_due))
            .min()
    }

    /// A multicast listener query at `at` in packet `h` (RFC 3810 §6.2):
    /// when it asks about every group or one of ours, a report is due
    /// within its maximum response delay, at a point of it our MAC picks,
    /// so that the hosts on a link do not all answer at once (a pure core
    /// draws no random numbers). A query of MLDv1 is answered with an
    /// MLDv2 report too (no version 1 compatibility mode).
    pub(crate) fn mld_query_input<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        h: Handle,
        slot: usize,
        hdr: &Ipv6Header,
        at: usize,
    ) {
        let parsed = self.take_message(pool, h, at, |m| Query::parse(m, hdr.src, hdr.hop_limit));
        let Some(parsed) = parsed else { return };
        let q = match parsed {
            Ok(q) => q,
            Err(e) => return self.stats.inc(mld_stat(e)),
        };
        self.stats.inc(Stat::MldRxQueries);
        let ours = q.group.is_unspecified() || self.v6[slot].groups().any(|g| g == q.group);
        if !ours {
            return;
        }
        let spread = u64::from(self.net.ifaces[slot].mac.0[5]);
        let due = now.saturating_add(u64::from(q.max_response_ms) * 1_000_000 * spread / 256);
        let i = &mut self.v6[slot];
        i.mld_due = Some(i.mld_due.map_or(due, |d| d.min(due)));
    }

    /// Sends the reports that queries made due.
    pub(crate) fn mld_poll<B: Buffers>(&mut self, now: u64, pool: &mut B, out: &mut Outputs) {
        for slot in 0..self.v6.len() {
            if self.v6[slot].mld_due.is_some_and(|t| t <= now) {
                self.v6[slot].mld_due = None;
                self.mld_report(pool, slot, out);
            }
        }
    }

    /// Sends an MLDv2 report joining the groups of `slot`
    /// ([`Iface6::groups`]; RFC 3810 §6.1, RFC 4862 §5.4.2), from the link-local address or, while it is tentative,
    /// from `::` (RFC 3810 §5.2.13).
    fn mld_report<B: Buffers>(&mut self, pool: &mut B, slot: usize, out: &mut Outputs) {
        let iface = &self.v6[slot];
        let mut groups: Vec<(u8, Ipv6Addr)> = Vec::with_capacity(iface.addrs.len());
        for g in iface.groups() {
            let g = (record_type::CHANGE_TO_EXCLUDE, g);
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        let ll = &iface.addrs[0];
        let src = if ll.dad == Dad::Preferred {
            ll.addr
        } else {
            Ipv6Addr::UNSPECIFIED
        };
        let dst = ALL_MLDV2_ROUTERS;
        let hbh = HOP_BY_HOP_ROUTER_ALERT.len();
        let len = hbh + mld::report_len(groups.len());
        let Some(h) = self.build6(pool, src, dst, mld::HOP_LIMIT, len, |m, s, d| {
            m[..hbh].copy_from_slice(&HOP_BY_HOP_ROUTER_ALERT);
            mld::emit_report(&mut m[hbh..], &groups, s, d).map(|n| n + hbh)
        }) else {
            return;
        };
        // The Hop-by-Hop header comes first.
        if let Ok(d) = pool.data_mut(&h) {
            d[6] = strata_proto::ipv6::next_header::HOP_BY_HOP;
        }
        self.stats.inc(Stat::MldTxReports);
        self.send_nd(pool, h, slot, multicast_mac(dst), out);
    }

    /// Records of our IPv6 addresses' detection state for the arena:
    /// `ADDR_TENTATIVE`, `ADDR_DUPLICATE` or `ADDR_PREFERRED`, so that a
    /// restarted ipd neither repeats a detection that ended nor uses an
    /// address found duplicate, and the launcher can show the state.
    pub(crate) fn address_records(&self) -> impl Iterator<Item = NeighRecord> + '_ {
        self.v6.iter().enumerate().flat_map(move |(slot, i)| {
            let index = self.net.ifaces[slot].index;
            i.addrs.iter().map(move |a| NeighRecord {
                updated_ns: if a.auto { a.expires } else { 0 },
                ip: NeighAddr::v6(a.addr),
                mac: [u8::from(a.auto), a.prefix, 0, 0, 0, 0],
                iface: index,
                state: match a.dad {
                    Dad::New | Dad::Tentative { .. } => neigh_state::ADDR_TENTATIVE,
                    Dad::Duplicate => neigh_state::ADDR_DUPLICATE,
                    Dad::Preferred => neigh_state::ADDR_PREFERRED,
                },
            })
        })
    }

    /// Takes back what a previous instance recorded of address `r` on
    /// `slot`: an ended detection stays ended; one that was running runs
    /// again at [`start`](Self::start). Returns false for a record that is
    /// not about one of our addresses.
    pub(crate) fn restore_address(&mut self, slot: usize, r: &NeighRecord) -> bool {
        let Some(ip) = r.ip.as_v6() else {
            return false;
        };
        let dad = match r.state {
            neigh_state::ADDR_PREFERRED => Dad::Preferred,
            neigh_state::ADDR_DUPLICATE => Dad::Duplicate,
            neigh_state::ADDR_TENTATIVE => Dad::New,
            _ => return false,
        };
        if let Some(a) = self.v6[slot].find_mut(ip) {
            a.dad = dad;
        } else if r.mac[0] == 1 && self.v6[slot].autoconf {
            // An autoconfigured address: it lives until its lifetime ends.
            self.v6[slot].addrs.push(Addr6 {
                addr: ip,
                prefix: r.mac[1].min(128),
                dad,
                auto: true,
                expires: r.updated_ns,
            });
        }
        true
    }

    /// The IPv6 side of interfaces `new`, keeping what `old` had learnt:
    /// the detection state of the addresses both have, autoconfigured
    /// addresses (while `new` still autoconfigures), routers, prefixes, the
    /// advertised MTU and router solicitation.
    pub(crate) fn carry_learnt(old: &[Iface6], new: &mut [Iface6]) {
        for (o, n) in old.iter().zip(new.iter_mut()) {
            for a in n.addrs.iter_mut() {
                if let Some(Addr6 { dad, .. }) = o.find(a.addr) {
                    a.dad = *dad;
                }
            }
            if n.autoconf {
                let auto: Vec<Addr6> = o
                    .addrs
                    .iter()
                    .filter(|a| a.auto && n.find(a.addr).is_none())
                    .copied()
                    .collect();
                n.addrs.extend(auto);
            }
            n.routers = o.routers.clone();
            n.prefixes = o.prefixes.clone();
            n.mtu = o.mtu;
            n.rs_sent = o.rs_sent;
            n.rs_next = o.rs_next;
        }
    }

    /// Our IPv6 addresses found duplicate since the last call, with their
    /// interface index, for the shell to report.
    pub fn take_duplicates(&mut self) -> Vec<(u8, Ipv6Addr)> {
        core::mem::take(&mut self.duplicates)
    }
}

/// The counter for an MLD query parse error.
fn mld_stat(e: MldError) -> Stat {
    match e {
        MldError::BadType => Stat::MldBadType,
        MldError::Truncated => Stat::MldTruncated,
        MldError::SourceNotLinkLocal => Stat::MldSourceNotLinkLocal,
        MldError::BadHopLimit => Stat::MldBadHopLimit,
        MldError::BadGroup => Stat::MldBadGroup,
    }
}

/// The counter for a neighbour discovery parse error.
pub(crate) fn ndp_stat(e: NdpError) -> Stat {
    match e {
        NdpError::BadType => Stat::NdpBadType,
        NdpError::Truncated => Stat::NdpTruncated,
        NdpError::BadHopLimit => Stat::NdpBadHopLimit,
        NdpError::BadCode => Stat::NdpBadCode,
        NdpError::OptionTruncated => Stat::NdpOptionTruncated,
        NdpError::ZeroOptionLength => Stat::NdpZeroOptionLength,
        NdpError::BadLinkAddrLen => Stat::NdpBadLinkAddrLen,
        NdpError::BadOptionLength => Stat::NdpBadOptionLength,
        NdpError::SourceNotLinkLocal => Stat::NdpSourceNotLinkLocal,
        NdpError::LinkAddrFromUnspecified => Stat::NdpLinkAddrFromUnspecified,
        NdpError::DadNotToSolicitedNode => Stat::NdpDadNotToSolicitedNode,
        NdpError::MulticastTarget => Stat::NdpMulticastTarget,
        NdpError::SolicitedToMulticast => Stat::NdpSolicitedToMulticast,
        NdpError::MulticastDestination => Stat::NdpMulticastDestination,
        NdpError::BadRedirectTarget => Stat::NdpBadRedirectTarget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ndp_error_has_a_counter_named_after_it() {
        for e in [
            NdpError::BadType,
            NdpError::Truncated,
            NdpError::BadHopLimit,
            NdpError::BadCode,
            NdpError::OptionTruncated,
            NdpError::ZeroOptionLength,
            NdpError::BadLinkAddrLen,
            NdpError::BadOptionLength,
            NdpError::SourceNotLinkLocal,
            NdpError::LinkAddrFromUnspecified,
            NdpError::DadNotToSolicitedNode,
            NdpError::MulticastTarget,
            NdpError::SolicitedToMulticast,
            NdpError::MulticastDestination,
            NdpError::BadRedirectTarget,
        ] {
            assert_eq!(ndp_stat(e).name(), format!("ndp_{}", e.reason()));
        }
        for e in [
            MldError::BadType,
            MldError::Truncated,
            MldError::SourceNotLinkLocal,
            MldError::BadHopLimit,
            MldError::BadGroup,
        ] {
            assert_eq!(mld_stat(e).name(), format!("mld_{}", e.reason()));
        }
    }
}
