//! IPv6 in ipd (RFC 8200, 4443, 4291): the interfaces' own addresses,
//! the input checks and local delivery (reassembly included), ICMPv6
//! echo and errors, routing, path MTU, and the sending (and cutting into
//! fragments) of what ipd itself originates. Neighbour discovery,
//! duplicate address detection and MLD are in `nd.rs`, router discovery
//! in `ra.rs`, forwarding in `forward.rs`; the neighbour cache is the one
//! IPv4 uses (`neigh.rs`).
//!
//! TCP and UDP packets go up to their transport with the window at the
//! IPv6 header and `l4_off` past the extension headers; ICMPv6 errors
//! quoting one go up too. What the transports send comes back through
//! [`IpCore::output6`], which chooses a source for a `::` one.

use std::net::Ipv6Addr;

use strata_ipc::route::PrefixIndex;
use strata_ipc::{Buffers, Handle};
use strata_proto::ethernet::ethertype;
use strata_proto::icmpv6::{icmpv6_type, unreach_code, Icmpv6Error, Icmpv6Header, ERROR_MAX_LEN};
use strata_proto::ipv6::{
    next_header, walk, DiscardReason, Disposition, FragmentHeader, Ipv6Error, Ipv6Header,
};
use strata_proto::ndp::{
    is_link_local, link_local_from_mac, multicast_mac, solicited_node, ALL_NODES,
};
use strata_proto::MacAddr;

use crate::config::{ConfigError, IfaceConfig};
use crate::neigh::NeighAddr;
use crate::reasm::FragInfo;
use crate::stats::Stat;
use crate::{IpCore, Outputs, ETH_LEN};

/// Hop limit of the packets ipd originates (Linux `hop_limit`, 64).
const HOP_LIMIT: u8 = 64;
/// IPv6's minimum link MTU (RFC 8200 §5).
const MIN_MTU: usize = strata_proto::ipv6::MIN_MTU;
/// How long a path MTU learnt from Packet Too Big holds (RFC 8201 §5.3
/// asks at least five minutes; Linux's `mtu_expires` is ten).
const PMTU_TIMEOUT_NS: u64 = 600 * 1_000_000_000;
/// Destinations whose path MTU is remembered; the oldest goes first.
const PMTU_ENTRIES: usize = 64;

/// Where one of our IPv6 addresses stands in duplicate address detection
/// (RFC 4862 §5.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dad {
    /// Configured; detection has not started (the core has not started,
    /// or the address came with a new configuration).
    New,
    /// Detection runs: a solicitation went out, and the address is used
    /// unless someone claims it by `until` (RFC 4862 §5.4.3, §5.4.4).
    Tentative {
        /// When the address becomes preferred.
        until: u64,
    },
    /// Unique on the link: in use.
    Preferred,
    /// Another node holds it: never used (RFC 4862 §5.4.5).
    Duplicate,
}

/// One of our IPv6 addresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addr6 {
    pub addr: Ipv6Addr,
    /// On-link prefix length (64 for the link-local address).
    pub prefix: u8,
    pub dad: Dad,
    /// Made from a router's advertised prefix (SLAAC), not configured.
    pub auto: bool,
    /// When an autoconfigured address's valid lifetime ends (`u64::MAX`:
    /// never); configured addresses never end.
    pub expires: u64,
}

impl Addr6 {
    /// A configured address, detection yet to run.
    pub fn configured(addr: Ipv6Addr, prefix: u8) -> Addr6 {
        Addr6 {
            addr,
            prefix,
            dad: Dad::New,
            auto: false,
            expires: u64::MAX,
        }
    }

    /// Whether `dst` is on the link this address's prefix names.
    fn covers(&self, dst: Ipv6Addr) -> bool {
        covers(self.addr, self.prefix, dst)
    }
}

/// Whether `dst` is in `prefix/len`.
pub(crate) fn covers(prefix: Ipv6Addr, len: u8, dst: Ipv6Addr) -> bool {
    strata_ipc::addrs::in_prefix6(u128::from(prefix), len, u128::from(dst))
}

/// The IPv6 side of one interface: its addresses, the link-local one
/// (made from the MAC) first, and what router discovery learnt on its
/// link (`ra.rs`).
#[derive(Clone, Debug)]
pub(crate) struct Iface6 {
    pub addrs: Vec<Addr6>,
    /// Make addresses from advertised prefixes (SLAAC).
    pub autoconf: bool,
    /// Default routers: address and when its lifetime ends (RFC 4861
    /// §6.3.4's Default Router List).
    pub routers: Vec<(Ipv6Addr, u64)>,
    /// Advertised on-link prefixes: prefix, length, end of validity (the
    /// Prefix List).
    pub prefixes: Vec<(Ipv6Addr, u8, u64)>,
    /// The link MTU a router advertised, when lower than the interface's.
    pub mtu: Option<u16>,
    /// Router solicitations sent since the start, and when the next is due.
    pub rs_sent: u8,
    pub rs_next: Option<u64>,
    /// When the report answering a router's query is due.
    pub mld_due: Option<u64>,
}

/// What an IPv6 destination is to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Local6 {
    /// One of our addresses in use, or a group we listen to.
    Ours,
    /// One of our addresses under duplicate address detection.
    Tentative,
    /// Someone else's.
    NotOurs,
}

impl Iface6 {
    /// The addresses of an interface with `mac` configured with `addrs`;
    /// detection has yet to run on all of them.
    pub fn new(mac: MacAddr, addrs: &[(Ipv6Addr, u8)], autoconf: bool) -> Iface6 {
        let ll = Addr6::configured(link_local_from_mac(mac), 64);
        let configured = addrs
            .iter()
            .map(|&(addr, prefix)| Addr6::configured(addr, prefix));
        Iface6 {
            addrs: core::iter::once(ll).chain(configured).collect(),
            autoconf,
            routers: Vec::new(),
            prefixes: Vec::new(),
            mtu: None,
            rs_sent: 0,
            rs_next: None,
            mld_due: None,
        }
    }

    /// The address entry for `a`.
    pub fn find(&self, a: Ipv6Addr) -> Option<&Addr6> {
        self.addrs.iter().find(|x| x.addr == a)
    }

    /// The address entry for `a`, to change.
    pub fn find_mut(&mut self, a: Ipv6Addr) -> Option<&mut Addr6> {
        self.addrs.iter_mut().find(|x| x.addr == a)
    }

    /// The solicited-node groups this interface is in: one for every
    /// address not found duplicate, tentative ones included (RFC 4862
    /// §5.4.2); addresses that share one name it more than once.
    pub fn groups(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.addrs
            .iter()
            .filter(|a| a.dad != Dad::Duplicate)
            .map(|a| solicited_node(a.addr))
    }

    /// What `dst` is to this interface: a preferred address of ours or a
    /// group we are in (all-nodes and [`groups`](Self::groups)), a
    /// tentative address, or neither.
    pub fn classify(&self, dst: Ipv6Addr) -> Local6 {
        if dst.is_multicast() {
            let listens = dst == ALL_NODES || self.groups().any(|g| g == dst);
            return if listens {
                Local6::Ours
            } else {
                Local6::NotOurs
            };
        }
        match self.find(dst).map(|a| a.dad) {
            Some(Dad::Preferred) => Local6::Ours,
            Some(Dad::New | Dad::Tentative { .. }) => Local6::Tentative,
            Some(Dad::Duplicate) | None => Local6::NotOurs,
        }
    }

    /// The source for a packet to `dst` through this interface (RFC 6724
    /// §5, in short): a preferred address whose prefix holds `dst`, else
    /// for a link-local or multicast destination the link-local address,
    /// else any preferred global one, else the link-local one. `None`
    /// while nothing is preferred.
    pub fn source_for(&self, dst: Ipv6Addr) -> Option<Ipv6Addr> {
        let usable = |a: &&Addr6| a.dad == Dad::Preferred;
        let mut preferred = self.addrs.iter().filter(usable);
        let ll = self.addrs.first().filter(usable).map(|a| a.addr);
        if let Some(a) = self
            .addrs
            .iter()
            .skip(1)
            .filter(usable)
            .find(|a| a.covers(dst))
        {
            return Some(a.addr);
        }
        if is_link_local(dst) || dst.is_multicast() {
            return ll;
        }
        preferred
            .find(|a| !is_link_local(a.addr))
            .map(|a| a.addr)
            .or(ll)
    }

    /// The longest on-link prefix of this interface (of its addresses or
    /// advertised by a router) that holds `dst`, if one does.
    pub fn prefix_for(&self, dst: Ipv6Addr) -> Option<u8> {
        let advertised = self
            .prefixes
            .iter()
            .filter(|&&(p, len, _)| covers(p, len, dst))
            .map(|&(_, len, _)| len);
        self.addrs
            .iter()
            .skip(1)
            .filter(|a| a.covers(dst))
            .map(|a| a.prefix)
            .chain(advertised)
            .max()
    }

    /// Whether `dst` is link-local or in an on-link prefix of this
    /// interface (so it is a neighbour here).
    pub fn on_link(&self, dst: Ipv6Addr) -> bool {
        is_link_local(dst) || self.prefix_for(dst).is_some()
    }
}

/// A configured IPv6 route, its interface resolved to a slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route6Entry {
    pub dest: Ipv6Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv6Addr>,
    /// `None` when neither the route nor its gateway names an interface
    /// we have.
    pub slot: Option<usize>,
}

/// The configured IPv6 routes, resolved, with their longest-prefix
/// index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Routes6 {
    entries: Vec<Route6Entry>,
    /// Over `entries`; among routes to one network the last configured is
    /// the one taken.
    index: PrefixIndex<u128>,
}

impl Routes6 {
    /// The configured route with the longest prefix holding `dst` (the
    /// last configured among routes to one network).
    pub fn lookup(&self, dst: Ipv6Addr) -> Option<&Route6Entry> {
        self.index.lookup(u128::from(dst)).map(|i| &self.entries[i])
    }
}

/// The configured IPv6 routes of `cfg`, resolved against interfaces
/// `v6` (by slot, as `slot_of` maps interface indexes): a route without
/// an interface leaves by the one whose address prefix holds its gateway.
pub(crate) fn routes6(
    cfg: &[strata_ipc::route::Route6],
    v6: &[Iface6],
    slot_of: impl Fn(u8) -> Option<usize>,
) -> Result<Routes6, ConfigError> {
    let entries = cfg
        .iter()
        .map(|r| {
            if r.prefix > 128 {
                return Err(ConfigError::BadPrefix(r.prefix));
            }
            let slot = match (r.iface, r.gateway) {
                (Some(i), _) => slot_of(i),
                (None, Some(g)) => v6.iter().position(|i| i.on_link(g) && !is_link_local(g)),
                (None, None) => None,
            };
            Ok(Route6Entry {
                dest: r.dest,
                prefix: r.prefix,
                gateway: r.gateway,
                slot,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut index = PrefixIndex::default();
    for r in &entries {
        index.push_over(u128::from(r.dest), r.prefix);
    }
    Ok(Routes6 { entries, index })
}

/// Checks the IPv6 addresses of an interface's configuration.
pub(crate) fn check_config(i: &IfaceConfig) -> Result<(), ConfigError> {
    for &(a, p) in &i.addrs6 {
        if p > 128 {
            return Err(ConfigError::BadPrefix(p));
        }
        if a.is_unspecified()
            || a.is_loopback()
            || a.is_multicast()
            || a.to_ipv4_mapped().is_some()
            || is_link_local(a)
        {
            return Err(ConfigError::BadAddress6(a));
        }
    }
    Ok(())
}

impl IpCore {
    /// Takes an IPv6 frame from interface slot `slot` (RFC 8200 §4: the
    /// checks and the walk of the extension headers of a packet for us).
    pub(crate) fn ip6_input<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        mut h: Handle,
        slot: usize,
        l2_multicast: bool,
        out: &mut Outputs,
    ) {
        let hdr = match pool.data(&h) {
            Ok(d) => Ipv6Header::parse(d.get(ETH_LEN..).unwrap_or(&[])),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let hdr = match hdr {
            Ok(hdr) => hdr,
            Err(e) => return self.drop(pool, &h, ipv6_stat(e)),
        };
        self.stats.inc(Stat::RxIpv6);
        // From here the window is the packet: no Ethernet header, and no
        // padding after where its length says it ends.
        h.pull_front(ETH_LEN as u32);
        h.data_len = (Ipv6Header::LEN + usize::from(hdr.payload_len)) as u32;
        h.l2_off = 0;
        h.l3_off = 0;
        // RFC 4291 §2.5.3: `::1` never comes from a link, either way.
        if hdr.src.is_multicast() || hdr.src.is_loopback() {
            return self.drop(pool, &h, Stat::Ip6MartianSource);
        }
        if hdr.dst.is_loopback() {
            return self.drop(pool, &h, Stat::Ip6NotForUs);
        }
        match self.local6(slot, hdr.dst) {
            Local6::Ours => {}
            Local6::Tentative => {
                // RFC 4862 §5.4: only the solicitations and advertisements
                // of detection itself, which go to multicast groups.
                return self.drop(pool, &h, Stat::Ip6ToTentative);
            }
            Local6::NotOurs if self.limits.forwarding => {
                return self.forward6(now, pool, h, slot, &hdr, l2_multicast, out);
            }
            Local6::NotOurs => return self.drop(pool, &h, Stat::Ip6NotForUs),
        }
        self.ip6_local(now, pool, h, slot, &hdr, out);
    }

    /// Delivers packet `h` for us (window = the packet, header `hdr`) as
    /// its extension headers say (RFC 8200 §4): to ICMPv6, to reassembly
    /// (and, once whole, through here again), or answered with an error.
    fn ip6_local<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        h: Handle,
        slot: usize,
        hdr: &Ipv6Header,
        out: &mut Outputs,
    ) {
        let upper = [next_header::ICMPV6, next_header::TCP, next_header::UDP];
        let walked = match pool.data(&h) {
            Ok(d) => walk(hdr, hdr.payload(d), &upper),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        match walked {
            Disposition::Upper {
                protocol: next_header::ICMPV6,
                offset,
                ..
            } => {
                let at = Ipv6Header::LEN + offset;
                self.icmp6_input(now, pool, h, slot, hdr, at, out);
            }
            Disposition::Upper {
                protocol, offset, ..
            } => self.transport6(
                now,
                pool,
                h,
                slot,
                hdr,
                protocol,
                Ipv6Header::LEN + offset,
                out,
            ),
            Disposition::Fragment {
                header,
                header_offset,
                data_offset,
                next_header_at,
            } => {
                self.stats.inc(Stat::FragReceived);
                let f = FragInfo {
                    src: u128::from(hdr.src),
                    dst: u128::from(hdr.dst),
                    proto: 0,
                    ident: header.ident,
                    hl: Ipv6Header::LEN + header_offset,
                    data_at: Ipv6Header::LEN + data_offset,
                    v6_next: Some((next_header_at, header.next_header)),
                    offset: header.byte_offset(),
                    payload_len: usize::from(hdr.payload_len).saturating_sub(data_offset),
                    more: header.more,
                    iif: h.iif,
                    ip_at: h.data_off as usize,
                };
                match self.reasm.insert(now, pool, h, &f) {
                    Ok(Some(whole)) => {
                        self.stats.inc(Stat::FragReassembled);
                        let parsed = pool.data(&whole).map(Ipv6Header::parse);
                        match parsed {
                            Ok(Ok(hdr)) => self.ip6_local(now, pool, whole, slot, &hdr, out),
                            _ => self.drop(pool, &whole, Stat::BadWindow),
                        }
                    }
                    Ok(None) => {}
                    Err(s) => self.stats.inc(s),
                }
            }
            Disposition::Discard(why) => self.drop(pool, &h, discard_stat(why)),
            Disposition::ParamProblem { code, pointer } => {
                self.stats.inc(Stat::Ip6ParamProblem);
                let msg = Icmpv6Header::parameter_problem(code, pointer);
                let to_multicast_ok = code == strata_proto::icmpv6::param_problem_code::OPTION;
                self.icmp6_error(now, pool, &h, slot, msg, to_multicast_ok, out);
                pool.free(&h);
            }
        }
    }

    /// TCP or UDP packet `h` for us (window = the packet, the transport's
    /// header at `at`) to its layer, when attached; else answered with
    /// port unreachable as IPv4's protocol unreachable is. TCP to a group
    /// is dropped (RFC 9293 §3.9.1 connections are unicast).
    #[allow(clippy::too_many_arguments)]
    fn transport6<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        mut h: Handle,
        slot: usize,
        hdr: &Ipv6Header,
        protocol: u8,
        at: usize,
        out: &mut Outputs,
    ) {
        if protocol == next_header::TCP && hdr.dst.is_multicast() {
            return self.drop(pool, &h, Stat::BroadcastNonUdp);
        }
        if !self.upper[usize::from(protocol)] {
            self.stats.inc(Stat::UpperNotAttached);
            let msg = Icmpv6Header::dest_unreachable(unreach_code::PORT);
            self.icmp6_error(now, pool, &h, slot, msg, false, out);
            return pool.free(&h);
        }
        h.ethertype = ethertype::IPV6;
        h.l4_off = at as u16;
        h.l4proto = protocol;
        self.stats.inc(Stat::Delivered);
        self.stats.inc(Stat::Ip6Delivered);
        out.up.push(h);
    }

    /// Takes an IPv6 packet tcpd or udpd made (window = the packet: the
    /// 40-byte header, then the TCP or UDP header). A `::` source becomes
    /// the address the outgoing interface would use for the destination
    /// (RFC 6724), the transport checksum updated to match; a packet to
    /// one of our addresses comes back up; the rest goes out as ipd's own
    /// packets do, cut into fragments at the source when it exceeds the
    /// path MTU (RFC 8200 §4.5). A link-local or group destination leaves
    /// by the interface the sender chose, else the first one (sockets
    /// carry no scope id yet).
    pub(crate) fn output6<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        mut h: Handle,
        out: &mut Outputs,
    ) {
        let hdr = match pool.data(&h) {
            Ok(d) => Ipv6Header::parse(d),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let hdr = match hdr {
            Ok(x) if matches!(x.next_header, next_header::TCP | next_header::UDP) => x,
            _ => return self.drop(pool, &h, Stat::OutMalformed),
        };
        h.data_len = (Ipv6Header::LEN + usize::from(hdr.payload_len)) as u32;
        h.l2_off = 0;
        h.l3_off = 0;
        h.l4_off = Ipv6Header::LEN as u16;
        h.l4proto = hdr.next_header;
        h.ethertype = ethertype::IPV6;
        h.flags &= !strata_ipc::handle::flags::FORWARDED;
        let dst = hdr.dst;
        if let Some((slot, iif)) = self.loopback6(dst) {
            // To ourselves: back up without a device, from the address
            // itself unless the sender chose.
            let src = if hdr.src.is_unspecified() {
                fill_source6(pool, &h, dst);
                dst
            } else {
                hdr.src
            };
            h.iif = iif;
            h.oif = iif;
            self.stats.inc(Stat::Loopback);
            let hdr = Ipv6Header { src, ..hdr };
            let l4 = hdr.next_header;
            return self.transport6(now, pool, h, slot, &hdr, l4, Ipv6Header::LEN, out);
        }
        if hdr.src.is_loopback() {
            // RFC 4291 §2.5.3: never sent outside a single node.
            return self.drop(pool, &h, Stat::Ip6MartianSource);
        }
        if dst.is_unspecified() || dst.is_loopback() || dst.to_ipv4_mapped().is_some() {
            return self.drop(pool, &h, Stat::Ip6NoRoute);
        }
        let chosen = self.net.slot(h.oif).or((!self.v6.is_empty()).then_some(0));
        let hop = if dst.is_multicast() || is_link_local(dst) {
            chosen.map(|s| (s, dst))
        } else {
            self.route6(dst)
        };
        let Some((slot, next)) = hop else {
            return self.drop(pool, &h, Stat::Ip6NoRoute);
        };
        if hdr.src.is_unspecified() {
            let Some(src) = self.v6[slot].source_for(dst) else {
                return self.drop(pool, &h, Stat::Ip6NoSource);
            };
            fill_source6(pool, &h, src);
        }
        self.stats.inc(Stat::Ip6OutPackets);
        if dst.is_multicast() {
            return self.transmit(pool, h, slot, multicast_mac(dst), out);
        }
        self.send_to_neighbour(now, pool, h, slot, NeighAddr::v6(next), out);
    }

    /// Where a packet to `dst` we send comes back up, if it is ours: the
    /// slot of the interface holding it and that interface's index, or
    /// for `::1` (RFC 4291 §2.5.3, the stack's loopback as Linux's `lo`)
    /// the first slot and no interface.
    fn loopback6(&self, dst: Ipv6Addr) -> Option<(usize, u8)> {
        if dst.is_loopback() {
            return Some((0, strata_ipc::handle::NO_IFACE)).filter(|_| !self.v6.is_empty());
        }
        let slot = (0..self.v6.len()).find(|&s| self.v6[s].classify(dst) == Local6::Ours)?;
        Some((slot, self.net.ifaces[slot].index))
    }

    /// What `dst` is to us, arriving on slot `slot`: link-local and
    /// multicast addresses are the interface's own; a global address of
    /// any interface is ours (the weak host model, as Linux).
    pub(crate) fn local6(&self, slot: usize, dst: Ipv6Addr) -> Local6 {
        let here = self.v6[slot].classify(dst);
        if here != Local6::NotOurs || dst.is_multicast() || is_link_local(dst) {
            return here;
        }
        self.v6
            .iter()
            .map(|i| i.classify(dst))
            .find(|c| *c != Local6::NotOurs)
            .unwrap_or(Local6::NotOurs)
    }

    /// Whether `a` is one of our IPv6 addresses, tentative or in use (one
    /// found duplicate is the other node's, a neighbour like any).
    pub(crate) fn is_own6(&self, a: Ipv6Addr) -> bool {
        self.v6
            .iter()
            .any(|i| i.find(a).is_some_and(|x| x.dad != Dad::Duplicate))
    }

    /// An ICMPv6 message for us at `at` in frame `h` (RFC 4443 §2.4).
    #[allow(clippy::too_many_arguments)]
    fn icmp6_input<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        h: Handle,
        slot: usize,
        hdr: &Ipv6Header,
        at: usize,
        out: &mut Outputs,
    ) {
        let end = h.data_len as usize;
        let parsed = match pool.data(&h) {
            Ok(d) => Icmpv6Header::parse(d.get(at..end).unwrap_or(&[]), hdr.src, hdr.dst),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => return self.drop(pool, &h, icmpv6_stat(e)),
        };
        match msg.icmp_type {
            icmpv6_type::ECHO_REQUEST => self.echo6_reply(now, pool, h, slot, hdr, at, out),
            icmpv6_type::NEIGHBOR_SOLICITATION => {
                self.nd_solicit_input(now, pool, h, slot, hdr, at, out)
            }
            icmpv6_type::NEIGHBOR_ADVERTISEMENT => {
                self.nd_advert_input(now, pool, h, slot, hdr, at, out)
            }
            icmpv6_type::ROUTER_ADVERTISEMENT => self.ra_input(now, pool, h, slot, hdr, at, out),
            strata_proto::mld::QUERY_TYPE => self.mld_query_input(now, pool, h, slot, hdr, at),
            t if strata_proto::icmpv6::is_error(t) => {
                self.stats.inc(Stat::Icmp6InErrors);
                if t == icmpv6_type::PACKET_TOO_BIG {
                    if let Ok(d) = pool.data(&h) {
                        let quoted = d.get(at + Icmpv6Header::LEN..).unwrap_or(&[]);
                        self.learn_pmtu6(now, quoted, msg.mtu());
                    }
                }
                // The transport that sent what is quoted hears of it
                // (RFC 4443 §3: "notify the upper-layer process"): window
                // = the packet, `l4_off` at the ICMPv6 header.
                let mut h = h;
                h.l4_off = at as u16;
                h.l4proto = next_header::ICMPV6;
                let p = crate::upper_protocol(pool, &h);
                if p != next_header::ICMPV6 && self.upper[usize::from(p)] {
                    self.stats.inc(Stat::IcmpErrDelivered);
                    out.up.push(h);
                } else {
                    pool.free(&h);
                }
            }
            _ => self.drop(pool, &h, Stat::Icmp6InOther),
        }
    }

    /// Answers an echo request in its own buffer (RFC 4443 §4.2): the
    /// reply's IPv6 header is written right before the ICMPv6 message,
    /// over the request's header and extension headers. A request to a
    /// group is answered from the address the interface would use to
    /// reach the requester (RFC 4443 §2.2), as Linux does.
    #[allow(clippy::too_many_arguments)]
    fn echo6_reply<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        mut h: Handle,
        slot: usize,
        hdr: &Ipv6Header,
        at: usize,
        out: &mut Outputs,
    ) {
        self.stats.inc(Stat::Icmp6InEchoRequests);
        let src = if hdr.dst.is_multicast() {
            self.v6[slot].source_for(hdr.src)
        } else {
            Some(hdr.dst)
        };
        let Some(src) = src else {
            return self.drop(pool, &h, Stat::Ip6NoRoute);
        };
        let start = at - Ipv6Header::LEN;
        h.pull_front(start as u32);
        let reply = Ipv6Header {
            traffic_class: hdr.traffic_class,
            flow_label: 0,
            payload_len: (h.data_len as usize - Ipv6Header::LEN) as u16,
            next_header: next_header::ICMPV6,
            hop_limit: HOP_LIMIT,
            src,
            dst: hdr.src,
        };
        let ok = pool.data_mut(&h).map(|d| {
            let msg = &mut d[Ipv6Header::LEN..];
            msg[0] = icmpv6_type::ECHO_REPLY;
            msg[1] = 0;
            reply.emit(d).is_ok()
                && strata_proto::icmpv6::fill_checksum(&mut d[Ipv6Header::LEN..], src, hdr.src)
                    .is_ok()
        });
        match ok {
            Ok(true) => {}
            Ok(false) => return self.drop(pool, &h, Stat::BadWindow),
            Err(e) => return self.bad_handle(pool, &h, e),
        }
        self.stats.inc(Stat::Icmp6OutEchoReplies);
        self.send6(now, pool, h, slot, out);
    }

    /// Sends ICMPv6 error `msg` about packet `orig` (window = the packet
    /// from its IPv6 header), which came in on `slot`, unless RFC 4443
    /// §2.4 (e) forbids it: not about an error or a redirect, not to or from what is not
    /// one unicast host, except that a packet too big or a parameter
    /// problem about an option may answer a packet to a group
    /// (`to_multicast_ok`). Within the rate limit (§2.4 (f)).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn icmp6_error<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        orig: &Handle,
        slot: usize,
        msg: Icmpv6Header,
        to_multicast_ok: bool,
        out: &mut Outputs,
    ) {
        let Ok(pkt) = pool.data(orig) else {
            return self.stats.inc(Stat::Icmp6OutSuppressed);
        };
        // What is quoted may be cut short of its payload length
        // (reassembly's time exceeded quotes what came of fragment 0).
        let Ok(hdr) = Ipv6Header::parse_quoted(pkt) else {
            return self.stats.inc(Stat::Icmp6OutSuppressed);
        };
        // An ICMPv6 message right behind the header that is an error or a
        // redirect (or too short to tell) is never answered.
        let about_error = hdr.next_header == next_header::ICMPV6
            && pkt
                .get(Ipv6Header::LEN)
                .is_none_or(|&t| strata_proto::icmpv6::is_error(t) || t == icmpv6_type::REDIRECT);
        if about_error
            || hdr.src.is_unspecified()
            || hdr.src.is_multicast()
            || (hdr.dst.is_multicast() && !to_multicast_ok)
        {
            return self.stats.inc(Stat::Icmp6OutSuppressed);
        }
        if !self.icmp_allow(now) {
            return self.stats.inc(Stat::Icmp6OutRatelimited);
        }
        let from = if hdr.src.is_loopback() {
            // About a packet sent to ourselves over `::1`: from it.
            Some(Ipv6Addr::LOCALHOST)
        } else if hdr.dst.is_multicast() || self.local6(slot, hdr.dst) != Local6::Ours {
            self.v6[slot].source_for(hdr.src)
        } else {
            Some(hdr.dst)
        };
        let Some(from) = from else {
            return self.stats.inc(Stat::Icmp6OutSuppressed);
        };
        // The quote, held on the stack while the error's buffer is
        // allocated.
        let quote_len = strata_proto::icmpv6::error_quote_len(pkt.len());
        let mut quote = [0u8; ERROR_MAX_LEN];
        quote[..quote_len].copy_from_slice(&pkt[..quote_len]);
        let len = Icmpv6Header::LEN + quote_len;
        let e = self.build6(pool, from, hdr.src, HOP_LIMIT, len, |m, s, d| {
            msg.emit_error(&quote[..quote_len], m, s, d)
        });
        if let Some(e) = e {
            self.stats.inc(Stat::Icmp6OutErrors);
            self.send6(now, pool, e, slot, out);
        }
    }

    /// Reads the ICMPv6 message at `at` in packet `h` with `parse`, then
    /// frees `h`. `None` (counted) when the handle's bytes cannot be
    /// reached.
    pub(crate) fn take_message<B: Buffers, T>(
        &mut self,
        pool: &mut B,
        h: Handle,
        at: usize,
        parse: impl FnOnce(&[u8]) -> T,
    ) -> Option<T> {
        let end = h.data_len as usize;
        let parsed = match pool.data(&h) {
            Ok(d) => parse(d.get(at..end).unwrap_or(&[])),
            Err(e) => {
                self.bad_handle(pool, &h, e);
                return None;
            }
        };
        pool.free(&h);
        Some(parsed)
    }

    /// Marks `h` (window = an IPv6 packet with its ICMPv6 message right
    /// after the header) as one ipd originates, for the way out.
    pub(crate) fn own6(h: &mut Handle) {
        h.ethertype = ethertype::IPV6;
        h.l2_off = 0;
        h.l3_off = 0;
        h.l4_off = Ipv6Header::LEN as u16;
        h.l4proto = next_header::ICMPV6;
        h.flags &= !strata_ipc::handle::flags::FORWARDED;
    }

    /// A fresh buffer holding an IPv6 header from `src` to `dst` and an
    /// ICMPv6 message of `len` bytes that `write` fills in (given the
    /// message's bytes and the addresses, for the checksum); `None`,
    /// counted, when the pool is empty or `write` fails.
    pub(crate) fn build6<B: Buffers>(
        &mut self,
        pool: &mut B,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        len: usize,
        write: impl FnOnce(&mut [u8], Ipv6Addr, Ipv6Addr) -> Result<usize, strata_proto::EmitError>,
    ) -> Option<Handle> {
        let Some(mut h) = pool.alloc(Ipv6Header::LEN + len) else {
            self.stats.inc(Stat::PoolExhausted);
            return None;
        };
        h.data_len = (Ipv6Header::LEN + len) as u32;
        let hdr = Ipv6Header {
            traffic_class: 0,
            flow_label: 0,
            payload_len: len as u16,
            next_header: next_header::ICMPV6,
            hop_limit,
            src,
            dst,
        };
        let ok = pool
            .data_mut(&h)
            .map(|d| hdr.emit(d).is_ok() && write(&mut d[Ipv6Header::LEN..], src, dst).is_ok());
        if ok != Ok(true) {
            self.drop(pool, &h, Stat::BadWindow);
            return None;
        }
        Some(h)
    }

    /// Sends IPv6 packet `h` (data window = the packet) that ipd made: on
    /// interface slot `slot` when its destination is a group or on that
    /// link, else where [`route6`](Self::route6) says.
    pub(crate) fn send6<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        mut h: Handle,
        slot: usize,
        out: &mut Outputs,
    ) {
        let dst = match pool.data(&h).map(dst6) {
            Ok(Some(dst)) => dst,
            Ok(None) => return self.drop(pool, &h, Stat::BadWindow),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        IpCore::own6(&mut h);
        if dst.is_loopback() {
            // An answer to a packet sent over `::1` comes back up.
            let hdr = match pool.data(&h).map(Ipv6Header::parse) {
                Ok(Ok(hdr)) => hdr,
                _ => return self.drop(pool, &h, Stat::BadWindow),
            };
            h.iif = strata_ipc::handle::NO_IFACE;
            self.stats.inc(Stat::Loopback);
            return self.ip6_local(now, pool, h, slot, &hdr, out);
        }
        self.stats.inc(Stat::Ip6OutPackets);
        if dst.is_multicast() {
            return self.transmit(pool, h, slot, multicast_mac(dst), out);
        }
        let hop = if is_link_local(dst) || self.v6[slot].on_link(dst) {
            Some((slot, dst))
        } else {
            self.route6(dst)
        };
        let Some((slot, next)) = hop else {
            return self.drop(pool, &h, Stat::Ip6NoRoute);
        };
        self.send_to_neighbour(now, pool, h, slot, NeighAddr::v6(next), out);
    }

    /// The MTU for IPv6 packet `h` leaving by `slot`: the link's
    /// ([`mtu6`](Self::mtu6)), or less for a destination a Packet Too Big
    /// told of (RFC 8201) in the last ten minutes ([`poll`](Self::poll)
    /// forgets older ones).
    pub(crate) fn path_mtu6<B: Buffers>(&self, pool: &B, h: &Handle, slot: usize) -> u16 {
        let link = self.mtu6(slot);
        if h.data_len as usize <= MIN_MTU || self.pmtu6.is_empty() {
            return link;
        }
        let Some(dst) = pool.data(h).ok().and_then(dst6) else {
            return link;
        };
        self.pmtu6
            .iter()
            .find(|p| p.0 == dst)
            .map_or(link, |p| p.1.min(link))
    }

    /// Takes a Packet Too Big about a packet of ours (RFC 8201 §4): the
    /// path to the quoted destination carries at most `mtu` bytes (never
    /// taken below IPv6's minimum, 1280), for ten minutes.
    pub(crate) fn learn_pmtu6(&mut self, now: u64, quoted: &[u8], mtu: u32) {
        let Ok(q) = Ipv6Header::parse_quoted(quoted) else {
            return;
        };
        if !self.is_own6(q.src) {
            // Not about a packet we sent.
            return;
        }
        let mtu = mtu.clamp(MIN_MTU as u32, u32::from(u16::MAX)) as u16;
        let end = now.saturating_add(PMTU_TIMEOUT_NS);
        self.pmtu6.retain(|p| p.2 > now && p.0 != q.dst);
        if self.pmtu6.len() >= PMTU_ENTRIES {
            self.pmtu6.remove(0);
        }
        self.pmtu6.push((q.dst, mtu, end));
        self.stats.inc(Stat::Pmtu6Learnt);
    }

    /// Cuts IPv6 packet `h` (window = the packet, one ipd made, with no
    /// extension headers) into fragments that fit the interface's MTU, each
    /// in a new buffer with its own copy of the header and a fragment
    /// header (RFC 8200 §4.5), sends them to `mac` and frees `h`. Like
    /// IPv4's fragmentation, this copies the payload, which only packets
    /// larger than the MTU pay.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fragment6<B: Buffers>(
        &mut self,
        pool: &mut B,
        h: Handle,
        slot: usize,
        mac: MacAddr,
        mtu: u16,
        out: &mut Outputs,
    ) {
        const UNFRAG: usize = Ipv6Header::LEN + FragmentHeader::LEN;
        let mtu = usize::from(mtu);
        let hdr = match pool.data(&h).map(Ipv6Header::parse) {
            Ok(Ok(hdr)) => hdr,
            Ok(Err(_)) => return self.drop(pool, &h, Stat::BadWindow),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let Some(room) = mtu.checked_sub(UNFRAG).filter(|r| *r >= 8) else {
            return self.drop(pool, &h, Stat::Ip6TooBig);
        };
        let chunk = room & !7;
        let total = usize::from(hdr.payload_len);
        self.frag6_ident = self.frag6_ident.wrapping_add(1);
        let ident = self.frag6_ident;
        let mut off = 0;
        while off < total {
            let len = chunk.min(total - off);
            let Some(mut f) = pool.alloc(UNFRAG + len) else {
                self.stats.inc(Stat::PoolExhausted);
                break;
            };
            f.data_len = (UNFRAG + len) as u32;
            let piece = Ipv6Header {
                payload_len: (FragmentHeader::LEN + len) as u16,
                next_header: next_header::FRAGMENT,
                ..hdr
            };
            let fh = FragmentHeader {
                next_header: hdr.next_header,
                offset: (off / 8) as u16,
                more: off + len < total,
                ident,
            };
            let written = pool
                .data_mut(&f)
                .map(|d| piece.emit(d).is_ok() && fh.emit(&mut d[Ipv6Header::LEN..]).is_ok());
            let from = h.data_off as usize + Ipv6Header::LEN + off;
            let copied = pool.copy_raw(&h, from, &f, f.data_off as usize + UNFRAG, len);
            if written != Ok(true) || copied.is_err() {
                self.drop(pool, &f, Stat::BadWindow);
                break;
            }
            f.ethertype = ethertype::IPV6;
            f.l4proto = hdr.next_header;
            if self.push_eth(pool, f, slot, mac, out) {
                self.stats.inc(Stat::TxFrames);
            }
            off += len;
        }
        self.stats.inc(Stat::Frag6OutPackets);
        pool.free(&h);
    }

    /// The IPv6 MTU of interface slot `slot`: the interface's, or the
    /// lower one a router advertised for the link.
    pub(crate) fn mtu6(&self, slot: usize) -> u16 {
        let link = self.net.ifaces[slot].mtu;
        self.v6[slot].mtu.map_or(link, |m| m.min(link))
    }

    /// Where a packet to `dst` goes: the interface slot and the neighbour
    /// to hand it to. The longest prefix wins among the on-link ones (of
    /// our addresses and advertised: the neighbour is `dst`) and the
    /// configured routes (the gateway, or `dst` for a direct route); at
    /// equal length on-link comes first. Nothing matching, a default
    /// router learnt from advertisements. A configured route whose
    /// interface could not be found leads nowhere.
    pub(crate) fn route6(&self, dst: Ipv6Addr) -> Option<(usize, Ipv6Addr)> {
        let on_link = self
            .v6
            .iter()
            .enumerate()
            .filter_map(|(slot, i)| Some((i.prefix_for(dst)?, slot)))
            .max_by_key(|&(len, slot)| (len, core::cmp::Reverse(slot)));
        let configured = self.routes6.lookup(dst);
        match (on_link, configured) {
            (Some((len, slot)), c) if c.is_none_or(|c| c.prefix <= len) => Some((slot, dst)),
            (_, Some(c)) => Some((c.slot?, c.gateway.unwrap_or(dst))),
            _ => self.default_router(),
        }
    }

    /// Whether `ip` at `mac` can be an IPv6 neighbour: a unicast address
    /// that is not ours, with a unicast MAC.
    pub(crate) fn usable_neighbour6(&self, ip: Ipv6Addr, mac: MacAddr) -> bool {
        !ip.is_unspecified()
            && !ip.is_multicast()
            && !ip.is_loopback()
            && ip.to_ipv4_mapped().is_none()
            && !self.is_own6(ip)
            && !mac.is_multicast()
            && mac != MacAddr::ZERO
    }
}

/// The transport (TCP or UDP) of the IPv6 packet an ICMPv6 error quotes
/// (`quote`, after the ICMPv6 header): right behind the header, or behind
/// the fragment header of a first fragment (ours are cut at the source),
/// with the 8 bytes that hold the ports there.
pub(crate) fn quoted_protocol6(quote: &[u8]) -> Option<u8> {
    let hdr = Ipv6Header::parse_quoted(quote).ok()?;
    let (p, at) = match hdr.next_header {
        next_header::FRAGMENT => {
            let f = FragmentHeader::parse(quote.get(Ipv6Header::LEN..)?).ok()?;
            (f.offset == 0).then_some((f.next_header, Ipv6Header::LEN + FragmentHeader::LEN))?
        }
        p => (p, Ipv6Header::LEN),
    };
    let tcp_or_udp = matches!(p, next_header::TCP | next_header::UDP);
    (tcp_or_udp && quote.len() >= at + 8).then_some(p)
}

/// Writes source `src` into IPv6 packet `h` (a transport's, sent from
/// `::`, its TCP or UDP header right after the fixed header) and updates
/// the transport checksum, whose pseudo-header covers the source (RFC
/// 8200 §8.1). With checksum offload (`csum::PARTIAL`) the field holds
/// the uncomplemented pseudo-header sum and is adjusted as such; a UDP
/// checksum never becomes 0, which IPv6 forbids.
fn fill_source6<B: Buffers>(pool: &mut B, h: &Handle, src: Ipv6Addr) {
    use strata_proto::checksum::update_u32;
    let Ok(d) = pool.data_mut(h) else {
        return;
    };
    d[8..24].copy_from_slice(&src.octets());
    let udp = d[6] == next_header::UDP;
    let at = Ipv6Header::LEN + if udp { 6 } else { 16 };
    let Some(field) = d.get_mut(at..at + 2) else {
        return;
    };
    let partial = h.csum == strata_ipc::handle::csum::PARTIAL;
    let mut c = u16::from_be_bytes([field[0], field[1]]);
    if partial {
        c = !c;
    }
    for w in src.octets().chunks_exact(4) {
        c = update_u32(c, 0, u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let c = match c {
        _ if partial => !c,
        0 if udp => 0xffff,
        c => c,
    };
    field.copy_from_slice(&c.to_be_bytes());
}

/// The destination of the IPv6 packet at the start of `d`, if `d` holds
/// its header.
fn dst6(d: &[u8]) -> Option<Ipv6Addr> {
    let a: [u8; 16] = d.get(24..40)?.try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

/// The counter for an IPv6 parse error.
fn ipv6_stat(e: Ipv6Error) -> Stat {
    match e {
        Ipv6Error::Truncated => Stat::Ipv6Truncated,
        Ipv6Error::BadVersion => Stat::Ipv6BadVersion,
        Ipv6Error::Jumbogram => Stat::Ipv6Jumbogram,
        Ipv6Error::PayloadLenExceedsFrame => Stat::Ipv6PayloadLenExceedsFrame,
    }
}

/// The counter for a silent discard decided by the extension-header walk.
fn discard_stat(r: DiscardReason) -> Stat {
    match r {
        DiscardReason::NoNextHeader => Stat::Ip6NoNextHeader,
        DiscardReason::Truncated => Stat::Ip6ExtHeaderTruncated,
        DiscardReason::BadOptions => Stat::Ip6BadOptions,
        DiscardReason::UnknownOption => Stat::Ip6UnknownOption,
        DiscardReason::TooManyHeaders => Stat::Ip6TooManyExtHeaders,
    }
}

/// The counter for an ICMPv6 parse error.
fn icmpv6_stat(e: Icmpv6Error) -> Stat {
    match e {
        Icmpv6Error::Truncated => Stat::Icmp6Truncated,
        Icmpv6Error::BadChecksum => Stat::Icmp6BadChecksum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ipv6_error_and_discard_has_a_counter_named_after_it() {
        for e in [
            Ipv6Error::Truncated,
            Ipv6Error::BadVersion,
            Ipv6Error::Jumbogram,
            Ipv6Error::PayloadLenExceedsFrame,
        ] {
            assert_eq!(ipv6_stat(e).name(), format!("ipv6_{}", e.reason()));
        }
        for r in [
            DiscardReason::NoNextHeader,
            DiscardReason::Truncated,
            DiscardReason::BadOptions,
            DiscardReason::UnknownOption,
            DiscardReason::TooManyHeaders,
        ] {
            assert_eq!(discard_stat(r).name(), format!("ip6_{}", r.reason()));
        }
        for e in [Icmpv6Error::Truncated, Icmpv6Error::BadChecksum] {
            assert_eq!(icmpv6_stat(e).name(), format!("icmp6_{}", e.reason()));
        }
    }

    #[test]
    fn the_route_index_answers_as_a_scan_of_thousands_of_routes() {
        // xorshift: the same routes every run.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // fd00::/16 with a few bits of variety, so that routes overlap.
        let addr = |n: u64| -> Ipv6Addr {
            let bits = u128::from(n & 0xfff) << 100 | u128::from(n >> 40) << 64;
            Ipv6Addr::from(0xfd00_u128 << 112 | bits)
        };
        let plens = [0u8, 16, 20, 24, 28, 32, 48, 64, 64, 64, 112, 128];
        let mut cfg: Vec<strata_ipc::route::Route6> = Vec::new();
        for i in 0..3000u64 {
            let r = next();
            let prefix = plens[(r % plens.len() as u64) as usize];
            // Now and then a second route to an earlier one's network.
            let dest = match cfg.get((r >> 8) as usize % (cfg.len() + 1)) {
                Some(c) if r >> 32 & 7 == 0 => c.dest,
                _ => addr(next()),
            };
            cfg.push(strata_ipc::route::Route6 {
                dest,
                prefix,
                gateway: Some(addr(i)),
                iface: Some((i % 4) as u8),
            });
        }
        let routes = routes6(&cfg, &[], |i| Some(usize::from(i))).unwrap();
        let mut hits = 0;
        for _ in 0..50_000 {
            let dst = addr(next());
            let scan = routes
                .entries
                .iter()
                .filter(|r| covers(r.dest, r.prefix, dst))
                .max_by_key(|r| r.prefix);
            let got = routes.lookup(dst);
            assert_eq!(
                got.map(|r| (r.dest, r.prefix, r.gateway)),
                scan.map(|r| (r.dest, r.prefix, r.gateway)),
                "{dst}"
            );
            hits += usize::from(got.is_some_and(|r| r.prefix > 16));
        }
        assert!(
            hits > 25_000,
            "{hits} addresses matched more than fd00::/16"
        );
    }

    #[test]
    fn source_selection_prefers_the_matching_prefix_and_waits_for_dad() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let g: Ipv6Addr = "fd00:1::2".parse().unwrap();
        let mut i = Iface6::new(mac, &[(g, 64)], false);
        let peer: Ipv6Addr = "fd00:1::9".parse().unwrap();
        assert_eq!(i.source_for(peer), None, "nothing preferred yet");
        assert_eq!(i.classify(g), Local6::Tentative);
        assert_eq!(i.classify(solicited_node(g)), Local6::Ours);
        for a in &mut i.addrs {
            a.dad = Dad::Preferred;
        }
        assert_eq!(i.source_for(peer), Some(g));
        let ll = link_local_from_mac(mac);
        assert_eq!(i.source_for("fe80::9".parse().unwrap()), Some(ll));
        assert_eq!(i.source_for("2001:db8::1".parse().unwrap()), Some(g));
        assert!(i.on_link(peer) && !i.on_link("fd00:2::1".parse().unwrap()));
        i.addrs[1].dad = Dad::Duplicate;
        assert_eq!(i.classify(g), Local6::NotOurs);
        assert_eq!(i.classify(solicited_node(g)), Local6::NotOurs);
        assert_eq!(i.source_for(peer), Some(ll));
    }
}
