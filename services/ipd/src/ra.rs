//! Router discovery and address autoconfiguration for hosts (RFC 4861 §6.3,
//! RFC 4862 §5.5): router solicitations at start, and what router
//! advertisements teach — default routers, on-link prefixes, the link MTU
//! and, with `autoconf`, addresses made from advertised prefixes.
//!
//! A router (`forwarding` on) neither solicits nor heeds advertisements,
//! as Linux's `accept_ra` default has it. Every list is bounded: a
//! hostile node on the link can fill them, not grow them.

use std::net::Ipv6Addr;

use strata_ipc::{Buffers, Handle};
use strata_proto::ipv6::Ipv6Header;
use strata_proto::ndp::{
    self, interface_id, is_link_local, multicast_mac, NdpOption, RouterAdvertisement,
    RouterSolicitation, ALL_ROUTERS,
};

use crate::ip6::{Addr6, Dad};
use crate::nd::ndp_stat;
use crate::neigh::{neigh_state, Learn, NeighAddr, NeighRecord};
use crate::stats::Stat;
use crate::{IpCore, Outputs};

/// Default routers kept per interface.
const MAX_ROUTERS: usize = 8;
/// Advertised on-link prefixes kept per interface.
const MAX_PREFIXES: usize = 16;
/// Addresses an interface may hold, configured and autoconfigured.
const MAX_ADDRS: usize = 32;
/// Router solicitations sent at start (RFC 4861 §10
/// `MAX_RTR_SOLICITATIONS`).
const MAX_RTR_SOLICITATIONS: u8 = 3;
/// Between them (`RTR_SOLICITATION_INTERVAL`, 4 s).
const RTR_SOLICITATION_INTERVAL_NS: u64 = 4_000_000_000;
/// RFC 4862 §5.5.3 (e): an advertisement may shorten an address's
/// remaining valid lifetime no further than two hours.
const TWO_HOURS_NS: u64 = 2 * 3600 * 1_000_000_000;

/// When a lifetime of `secs` seconds given at `now` ends (`0xffffffff`:
/// never).
fn lifetime_end(now: u64, secs: u32) -> u64 {
    if secs == u32::MAX {
        u64::MAX
    } else {
        now.saturating_add(u64::from(secs) * 1_000_000_000)
    }
}

impl IpCore {
    /// Schedules router solicitation on every interface of a host: the
    /// first once the link-local address can be its source.
    pub(crate) fn rs_start(&mut self, now: u64) {
        if self.limits.forwarding {
            return;
        }
        let at = now.saturating_add(self.limits.arp_retrans_ns);
        for i in &mut self.v6 {
            if i.routers.is_empty() {
                i.rs_sent = 0;
                i.rs_next = Some(at);
            }
        }
    }

    /// Runs router discovery's timers: solicitations due, and the ends of
    /// routers', prefixes' and autoconfigured addresses' lifetimes.
    pub(crate) fn ra_poll<B: Buffers>(&mut self, now: u64, pool: &mut B, out: &mut Outputs) {
        for slot in 0..self.v6.len() {
            let i = &mut self.v6[slot];
            let before = (i.routers.len(), i.prefixes.len(), i.addrs.len());
            i.routers.retain(|&(_, end)| end > now);
            i.prefixes.retain(|&(_, _, end)| end > now);
            i.addrs.retain(|a| a.expires > now);
            if before != (i.routers.len(), i.prefixes.len(), i.addrs.len()) {
                self.addrs6_changed = true;
            }
            let i = &mut self.v6[slot];
            let due = i.rs_next.is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            if !i.routers.is_empty() || i.rs_sent >= MAX_RTR_SOLICITATIONS {
                i.rs_next = None;
                continue;
            }
            i.rs_sent += 1;
            i.rs_next = (i.rs_sent < MAX_RTR_SOLICITATIONS)
                .then(|| now.saturating_add(RTR_SOLICITATION_INTERVAL_NS));
            self.send_rs(pool, slot, out);
        }
    }

    /// The earliest of router discovery's deadlines.
    pub(crate) fn ra_deadline(&self) -> Option<u64> {
        self.v6
            .iter()
            .flat_map(|i| {
                let lifetimes = i
                    .routers
                    .iter()
                    .map(|r| r.1)
                    .chain(i.prefixes.iter().map(|p| p.2))
                    .chain(i.addrs.iter().map(|a| a.expires));
                lifetimes.chain(i.rs_next)
            })
            .filter(|&t| t != u64::MAX)
            .min()
    }

    /// A router solicitation on `slot` (RFC 4861 §6.3.7): from the
    /// link-local address with our link-layer address, or from `::`
    /// without it while the link-local address is tentative.
    fn send_rs<B: Buffers>(&mut self, pool: &mut B, slot: usize, out: &mut Outputs) {
        let ll = self.v6[slot].addrs[0];
        let mac = self.net.ifaces[slot].mac;
        let src = if ll.dad == Dad::Preferred {
            ll.addr
        } else {
            Ipv6Addr::UNSPECIFIED
        };
        let len = RouterSolicitation::LEN + if src.is_unspecified() { 0 } else { 8 };
        let Some(h) = self.build6(pool, src, ALL_ROUTERS, ndp::HOP_LIMIT, len, |m, s, d| {
            let mut opt = [0u8; 8];
            let opts: &[u8] = if s.is_unspecified() {
                &[]
            } else {
                NdpOption::SourceLinkAddr(mac).emit(&mut opt)?;
                &opt
            };
            RouterSolicitation { options: opts }.emit(m, s, d)
        }) else {
            return;
        };
        self.stats.inc(Stat::NdTxRouterSolicits);
        self.send_nd(pool, h, slot, multicast_mac(ALL_ROUTERS), out);
    }

    /// A router advertisement at `at` in packet `h` (RFC 4861 §6.3.4, RFC
    /// 4862 §5.5.3).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ra_input<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        h: Handle,
        slot: usize,
        hdr: &Ipv6Header,
        at: usize,
        out: &mut Outputs,
    ) {
        let mut prefixes = [None; MAX_PREFIXES];
        let parsed = self.take_message(pool, h, at, |m| {
            RouterAdvertisement::parse(m, hdr).map(|ra| {
                for (p, slot) in ra.prefixes().zip(prefixes.iter_mut()) {
                    *slot = Some(p);
                }
                (ra.router_lifetime, ra.source_link_addr(), ra.mtu())
            })
        });
        let Some(parsed) = parsed else { return };
        let (lifetime, mac, mtu) = match parsed {
            Ok(x) => x,
            Err(e) => return self.stats.inc(ndp_stat(e)),
        };
        self.stats.inc(Stat::NdRxRouterAdverts);
        if self.limits.forwarding {
            // A router does not take advice from other routers.
            return self.stats.inc(Stat::NdRaIgnored);
        }
        if let Some(mac) = mac.filter(|&m| self.usable_neighbour6(hdr.src, m)) {
            let key = NeighAddr::v6(hdr.src);
            self.learn_neighbour(now, pool, slot, key, mac, Learn::Seen, true, out);
        }
        self.learn_router(now, slot, hdr.src, lifetime);
        if let Some(m) = mtu {
            // RFC 4861 §6.3.4: a valid MTU, no larger than the link's.
            let link = u32::from(self.net.ifaces[slot].mtu);
            self.v6[slot].mtu = (1280..=link).contains(&m).then_some(m as u16);
        }
        for p in prefixes.into_iter().flatten() {
            if is_link_local(p.prefix) || p.preferred_lifetime > p.valid_lifetime {
                continue;
            }
            if p.on_link {
                self.learn_prefix(now, slot, p.prefix, p.prefix_len, p.valid_lifetime);
            }
            if p.autonomous && self.v6[slot].autoconf {
                self.autoconfigure(
                    now,
                    pool,
                    slot,
                    p.prefix,
                    p.prefix_len,
                    p.valid_lifetime,
                    out,
                );
            }
        }
    }

    /// Updates the Default Router List with `router`'s lifetime (0:
    /// removes it).
    fn learn_router(&mut self, now: u64, slot: usize, router: Ipv6Addr, lifetime: u16) {
        let i = &mut self.v6[slot];
        let known = i.routers.iter().position(|r| r.0 == router);
        let end = now.saturating_add(u64::from(lifetime) * 1_000_000_000);
        match (known, lifetime) {
            (Some(k), 0) => {
                i.routers.remove(k);
            }
            (Some(k), _) => i.routers[k].1 = end,
            (None, 0) => return,
            (None, _) if i.routers.len() < MAX_ROUTERS => i.routers.push((router, end)),
            (None, _) => return self.stats.inc(Stat::NdListFull),
        }
        self.addrs6_changed = true;
    }

    /// Updates the Prefix List with an on-link prefix (valid lifetime 0:
    /// removes it).
    fn learn_prefix(&mut self, now: u64, slot: usize, prefix: Ipv6Addr, len: u8, valid: u32) {
        let i = &mut self.v6[slot];
        let known = i.prefixes.iter().position(|p| p.0 == prefix && p.1 == len);
        let end = lifetime_end(now, valid);
        match (known, valid) {
            (Some(k), 0) => {
                i.prefixes.remove(k);
            }
            (Some(k), _) => i.prefixes[k].2 = end,
            (None, 0) => return,
            (None, _) if i.prefixes.len() < MAX_PREFIXES => i.prefixes.push((prefix, len, end)),
            (None, _) => return self.stats.inc(Stat::NdListFull),
        }
        self.addrs6_changed = true;
    }

    /// Forms (or refreshes) the address of `prefix/len` and our interface
    /// identifier (RFC 4862 §5.5.3); a new one is tried by duplicate
    /// address detection before use.
    #[allow(clippy::too_many_arguments)]
    fn autoconfigure<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        slot: usize,
        prefix: Ipv6Addr,
        len: u8,
        valid: u32,
        out: &mut Outputs,
    ) {
        // The interface identifier is 64 bits (RFC 4291 §2.5.1).
        if len != 64 || valid == 0 {
            return;
        }
        let mut a = prefix.octets();
        a[8..].copy_from_slice(&interface_id(self.net.ifaces[slot].mac));
        let addr = Ipv6Addr::from(a);
        let end = lifetime_end(now, valid);
        let i = &mut self.v6[slot];
        if let Some(x) = i.addrs.iter_mut().find(|x| x.addr == addr) {
            if x.auto {
                // (e): a longer lifetime, or one above two hours, is
                // taken; a remaining one of two hours or less is kept;
                // otherwise it is cut to two hours.
                let remaining = x.expires.saturating_sub(now);
                if end > x.expires || end.saturating_sub(now) > TWO_HOURS_NS {
                    x.expires = end;
                } else if remaining > TWO_HOURS_NS {
                    x.expires = now.saturating_add(TWO_HOURS_NS);
                }
            }
            return;
        }
        if i.addrs.len() >= MAX_ADDRS {
            return self.stats.inc(Stat::NdListFull);
        }
        i.addrs.push(Addr6 {
            addr,
            prefix: len,
            dad: Dad::New,
            auto: true,
            expires: end,
        });
        self.stats.inc(Stat::SlaacAddresses);
        self.dad_start(now, pool, out);
    }

    /// The default router to send an off-link packet to, with its
    /// interface slot: the first one whose neighbour entry is not known
    /// to be failing, else the first one (RFC 4861 §6.3.6).
    pub(crate) fn default_router(&self) -> Option<(usize, Ipv6Addr)> {
        let all = || {
            self.v6
                .iter()
                .enumerate()
                .flat_map(|(slot, i)| i.routers.iter().map(move |r| (slot, r.0)))
        };
        all()
            .find(|&(slot, r)| {
                let idx = self.neigh.find(slot, NeighAddr::v6(r));
                idx.is_none_or(|i| self.neigh.mac(i).is_some())
            })
            .or_else(|| all().next())
    }

    /// Records of what router discovery learnt, for the arena: routers
    /// (`ROUTER`, `updated_ns` the end of their lifetime) and prefixes
    /// (`PREFIX`, the length in `mac[0]`).
    pub(crate) fn discovery_records(&self) -> impl Iterator<Item = NeighRecord> + '_ {
        self.v6.iter().enumerate().flat_map(move |(slot, i)| {
            let iface = self.net.ifaces[slot].index;
            let routers = i.routers.iter().map(move |&(r, end)| NeighRecord {
                updated_ns: end,
                ip: NeighAddr::v6(r),
                mac: [0; 6],
                iface,
                state: neigh_state::ROUTER,
            });
            let prefixes = i.prefixes.iter().map(move |&(p, len, end)| NeighRecord {
                updated_ns: end,
                ip: NeighAddr::v6(p),
                mac: [len, 0, 0, 0, 0, 0],
                iface,
                state: neigh_state::PREFIX,
            });
            routers.chain(prefixes)
        })
    }

    /// Takes back a router or prefix a previous instance recorded, on
    /// `slot`; false for another kind of record.
    pub(crate) fn restore_discovery(&mut self, slot: usize, r: &NeighRecord) -> bool {
        let (Some(ip), i) = (r.ip.as_v6(), &mut self.v6[slot]) else {
            return false;
        };
        match r.state {
            neigh_state::ROUTER if i.routers.len() < MAX_ROUTERS => {
                i.routers.push((ip, r.updated_ns));
            }
            neigh_state::PREFIX if i.prefixes.len() < MAX_PREFIXES => {
                i.prefixes.push((ip, r.mac[0].min(128), r.updated_ns));
            }
            neigh_state::ROUTER | neigh_state::PREFIX => {}
            _ => return false,
        }
        true
    }
}
