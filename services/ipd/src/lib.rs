//! The protocol core of ipd, strata's IP layer: for IPv4 validation, local
//! delivery, ICMP, ARP and the neighbour cache, routing, reassembly,
//! fragmentation and, when enabled, forwarding (RFC 791, 792, 826, 815,
//! 1122, 1812); for IPv6 the same (RFC 8200, 4443) with neighbour
//! discovery, address autoconfiguration and MLD (`ip6.rs`, `nd.rs`,
//! `ra.rs`).
//!
//! The core is pure (docs/DESIGN.md, "Code shape"): no I/O, no clock, no
//! globals, no threads. The process shell (`main.rs`) pops handles from
//! its rings and calls [`IpCore::input`] (frames from netdevd) and
//! [`IpCore::output`] (datagrams from tcpd/udpd), then pushes what the
//! core left in [`Outputs`]: `tx` down to netdevd, `up` to tcpd/udpd by
//! `l4proto`.
//! Time is the `now` argument (monotonic nanoseconds); [`IpCore::poll`]
//! runs the timers and says when it next needs to run.
//!
//! Ownership: every handle given to the core ends in exactly one place —
//! `out.tx`, `out.up`, a queue inside the core (ARP resolution,
//! reassembly), or freed back to the pool with a counter saying why. So
//! the pool returns to its baseline once timers have run out, which the
//! tests check after every scenario.
//!
//! No allocation per packet: the neighbour table, its packet queue and the
//! reassembly slots are allocated once in [`IpCore::new`]; `Outputs`
//! vectors are reused by the shell.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod arp;
pub mod config;
mod forward;
mod icmp;
mod ip6;
mod nd;
mod neigh;
mod output;
mod ra;
mod reasm;
mod route;
pub mod stats;

#[cfg(test)]
mod tests;

use strata_ipc::{BufError, Buffers, Handle};
use strata_proto::ethernet::{ethertype, EthernetHeader};
use strata_proto::ipv4::{protocol, Ipv4Error, Ipv4Header};

pub use config::{ConfigError, IfaceConfig, IpConfig, IpLimits, RouteConfig, StaticNeigh};
pub use neigh::{neigh_state, NeighAddr, NeighRecord};

/// The format of ipd's arena: a table of [`NeighRecord`]s
/// ([`strata_ipc::Records`]), which the launcher reads too (`strata neigh
/// show`, `strata addr show`).
///
/// Format 2 holds 16-byte addresses (IPv6, and IPv4 mapped into IPv6);
/// format 1, which it reads, held IPv4 ones only.
pub const ARENA_FORMAT: strata_ipc::service::ArenaFormat = strata_ipc::service::ArenaFormat {
    writes: 2,
    reads_from: 1,
};
pub use stats::{Stat, Stats};

use neigh::Neighbours;
use reasm::{FragInfo, Reassembly};
use route::{is_martian, Net};

/// Length of the Ethernet header ipd adds and strips.
const ETH_LEN: usize = EthernetHeader::LEN;

/// What one call into the core produced. The shell creates it once with
/// [`Outputs::with_capacity`], drains both vectors after each batch and
/// clears them, so no call allocates in steady state.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Complete Ethernet frames for netdevd: data window = the whole frame,
    /// `oif` set, `l3_off` at the IPv4 header or ARP packet. Forwarded
    /// datagrams (and their fragments) carry
    /// [`flags::FORWARDED`](strata_ipc::handle::flags::FORWARDED) and keep
    /// the `iif` they came in on.
    pub tx: Vec<Handle>,
    /// TCP and UDP datagrams for the upper layer chosen by `l4proto`: data
    /// window = the whole IPv4 datagram (`l3_off` 0, `l4_off` its header
    /// length), `iif` set. Also ICMP errors (destination unreachable, time
    /// exceeded, parameter problem) quoting a TCP or UDP datagram, for that
    /// protocol's layer: `l4proto` ICMP, the same window, `l4_off` at the
    /// ICMP header; [`upper_protocol`] says whose they are.
    pub up: Vec<Handle>,
}

impl Outputs {
    /// Empty outputs with room for `n` handles in each vector.
    pub fn with_capacity(n: usize) -> Self {
        Outputs {
            tx: Vec::with_capacity(n),
            up: Vec::with_capacity(n),
        }
    }

    /// Empties both vectors, keeping their capacity.
    pub fn clear(&mut self) {
        self.tx.clear();
        self.up.clear();
    }
}

/// The IPv4 core: all of ipd's protocol state.
pub struct IpCore {
    net: Net,
    limits: IpLimits,
    neigh: Neighbours,
    reasm: Reassembly,
    stats: Stats,
    /// Which protocols have an upper layer attached, by protocol number.
    upper: [bool; 256],
    /// Identification for datagrams ipd itself originates.
    ident: u16,
    /// ICMP error token bucket.
    icmp_tokens: u32,
    icmp_last: u64,
    /// Forwarded datagrams whose next hop failed to resolve, held while
    /// the neighbour timers run and answered with ICMP host unreachable
    /// after them (sending touches the table the timers are walking).
    /// Allocated once with room for every queue slot.
    unreachable: Vec<Handle>,
    /// The IPv6 side of each interface, by slot as `net.ifaces`.
    v6: Vec<ip6::Iface6>,
    /// Whether an own IPv6 address changed detection state since the
    /// arena copy was last taken.
    addrs6_changed: bool,
    /// Own IPv6 addresses found duplicate, not yet reported by the shell.
    duplicates: Vec<(u8, std::net::Ipv6Addr)>,
    /// [`start`](Self::start) ran: new IPv6 addresses are tried at once.
    started: bool,
    /// Identification of the last IPv6 packet ipd cut into fragments.
    frag6_ident: u32,
    /// Configured IPv6 routes.
    routes6: ip6::Routes6,
    /// Path MTUs learnt from Packet Too Big: destination, MTU, when it
    /// ends (a destination cache of RFC 4861 §5.1, for this alone).
    pmtu6: Vec<(std::net::Ipv6Addr, u16, u64)>,
}

impl IpCore {
    /// A core for `cfg`, or why `cfg` is unusable. Allocates every table.
    pub fn new(cfg: IpConfig) -> Result<Self, ConfigError> {
        let l = &cfg.limits;
        if l.neigh_capacity == 0 || l.neigh_capacity >= u16::MAX as usize {
            return Err(ConfigError::BadLimit("neigh_capacity"));
        }
        if l.unres_total >= u16::MAX as usize {
            return Err(ConfigError::BadLimit("unres_total"));
        }
        if l.arp_retrans_ns == 0 || l.arp_tries == 0 {
            return Err(ConfigError::BadLimit("arp_retrans_ns/arp_tries"));
        }
        let net = Net::new(&cfg.ifaces, &cfg.routes)?;
        let v6 = ifaces6(&cfg.ifaces)?;
        let routes6 = ip6::routes6(&cfg.routes6, &v6, |i| net.slot(i))?;
        let mut core = IpCore {
            net,
            neigh: Neighbours::new(l),
            reasm: Reassembly::new(l),
            stats: Stats::default(),
            upper: [false; 256],
            ident: 0,
            icmp_tokens: l.icmp_burst,
            icmp_last: 0,
            unreachable: Vec::with_capacity(l.unres_total),
            limits: cfg.limits,
            v6,
            addrs6_changed: false,
            duplicates: Vec::new(),
            started: false,
            frag6_ident: 0,
            routes6,
            pmtu6: Vec::new(),
        };
        core.set_permanent(0, &cfg.neighbours);
        Ok(core)
    }

    /// Takes a new configuration of the same interfaces at run time
    /// (`strata addr`, `route`, `neigh add|del`, `link set mtu`):
    /// addresses, routes, MTUs and permanent neighbours. Learnt neighbours,
    /// reassemblies and counters carry on. Packets that were waiting for a
    /// neighbour that is now permanent are sent. A configuration ipd
    /// cannot use leaves the old one in force.
    pub fn reconfigure<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        cfg: &IpConfig,
        out: &mut Outputs,
    ) -> Result<(), ConfigError> {
        let net = Net::new(&cfg.ifaces, &cfg.routes)?;
        let mut v6 = ifaces6(&cfg.ifaces)?;
        let same_ifaces = net.ifaces.len() == self.net.ifaces.len()
            && net
                .ifaces
                .iter()
                .zip(&self.net.ifaces)
                .all(|(a, b)| a.index == b.index && a.mac == b.mac);
        if !same_ifaces {
            return Err(ConfigError::IfacesChanged);
        }
        IpCore::carry_learnt(&self.v6, &mut v6);
        self.routes6 = ip6::routes6(&cfg.routes6, &v6, |i| net.slot(i))?;
        self.net = net;
        self.v6 = v6;
        self.addrs6_changed = true;
        for (idx, slot) in self.set_permanent(now, &cfg.neighbours) {
            self.flush_neighbour(pool, idx, slot, out);
        }
        // New IPv6 addresses are tried before they are used.
        if self.started {
            self.dad_start(now, pool, out);
        }
        Ok(())
    }

    /// Makes the permanent neighbours those of `list` (the ones on an
    /// unknown interface or with an address ipd would never resolve are
    /// left out, as [`restore_neighbours`](Self::restore_neighbours)
    /// leaves such records out). Returns the entries, with their
    /// interface slots, whose queued packets can go now.
    fn set_permanent(&mut self, now: u64, list: &[StaticNeigh]) -> Vec<(usize, usize)> {
        let want: Vec<(usize, NeighAddr, strata_proto::MacAddr)> = list
            .iter()
            .filter_map(|n| {
                let slot = self.net.slot(n.iface)?;
                let (ip, mac) = (u32::from(n.ip), strata_proto::MacAddr(n.mac));
                self.usable_neighbour(ip, mac)
                    .then_some((slot, NeighAddr::v4(ip), mac))
            })
            .collect();
        self.neigh
            .set_permanent(now, &want)
            .into_iter()
            .filter_map(|i| Some((i, self.neigh.slot_of(i)?)))
            .collect()
    }

    /// Announces every IPv4 address with a gratuitous ARP request (RFC
    /// 5227 announcement: sender and target IP both ours), so neighbours
    /// that cached an old MAC for it update, and starts duplicate address
    /// detection on every IPv6 address that has not passed it (all of
    /// them, unless a previous instance's records were restored). Call
    /// once when the layer starts.
    pub fn start<B: Buffers>(&mut self, now: u64, pool: &mut B, out: &mut Outputs) {
        for slot in 0..self.net.ifaces.len() {
            for a in 0..self.net.ifaces[slot].addrs.len() {
                let ip = self.net.ifaces[slot].addrs[a].addr;
                self.send_arp_request(pool, slot, ip, ip, None, out);
            }
        }
        self.started = true;
        self.dad_start(now, pool, out);
        self.rs_start(now);
    }

    /// Takes an Ethernet frame from netdevd (data window = whole frame,
    /// `iif` set). The core owns `h` from here: it ends in `out.tx`,
    /// `out.up`, one of the core's queues, or is freed and counted.
    pub fn input<B: Buffers>(&mut self, now: u64, pool: &mut B, mut h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::RxFrames);
        let eth = match pool.data(&h) {
            Ok(d) => EthernetHeader::parse(d),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let Ok(eth) = eth else {
            return self.drop(pool, &h, Stat::EthTruncated);
        };
        let Some(slot) = self.net.slot(h.iif) else {
            return self.drop(pool, &h, Stat::UnknownIface);
        };
        if eth.dst.is_unicast() && eth.dst != self.net.ifaces[slot].mac {
            return self.drop(pool, &h, Stat::L2OtherHost);
        }
        h.l2_off = 0;
        h.l3_off = ETH_LEN as u16;
        h.ethertype = eth.ethertype;
        match eth.ethertype {
            ethertype::ARP => self.arp_input(now, pool, h, slot, out),
            ethertype::IPV4 => self.ip_input(now, pool, h, eth.dst.is_multicast(), out),
            ethertype::IPV6 => self.ip6_input(now, pool, h, slot, eth.dst.is_multicast(), out),
            _ => self.drop(pool, &h, Stat::UnknownEthertype),
        }
    }

    /// Takes a locally originated IPv4 datagram from tcpd/udpd (data window
    /// starts at the complete IPv4 header the upper layer built). Routes
    /// it, fills in a 0.0.0.0 source (fixing the IPv4 and TCP/UDP
    /// checksums), resolves the next hop (queueing while ARP runs),
    /// fragments it if it is larger than the MTU (or drops it, counted as
    /// `df_too_big`, if DF is set) and emits the frames into `out.tx`. A
    /// datagram to one of our own addresses comes back in `out.up`.
    pub fn output<B: Buffers>(&mut self, now: u64, pool: &mut B, mut h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::OutRequests);
        if pool
            .data(&h)
            .is_ok_and(|d| d.first().is_some_and(|b| b >> 4 == 6))
        {
            return self.output6(now, pool, h, out);
        }
        let hdr = match pool.data(&h) {
            Ok(d) => Ipv4Header::parse(d),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let Ok(hdr) = hdr else {
            return self.drop(pool, &h, Stat::OutMalformed);
        };
        h.data_len = u32::from(hdr.total_len);
        h.l2_off = 0;
        h.l3_off = 0;
        h.l4_off = u16::from(hdr.header_len);
        h.l4proto = hdr.protocol;
        h.ethertype = ethertype::IPV4;
        // Only ipd says what was forwarded: filterd would run the wrong
        // chain on a local datagram carrying the flag.
        h.flags &= !strata_ipc::handle::flags::FORWARDED;
        self.route_out(now, pool, h, out);
    }

    /// Runs the timers due at `now`: ARP retransmissions and failures
    /// (queued packets are dropped and counted), neighbour aging, and
    /// reassembly timeouts (with ICMP time exceeded when fragment 0 had
    /// arrived). Returns when it next needs to run. Cheap when nothing is
    /// due, so the shell may call it after every batch.
    pub fn poll<B: Buffers>(&mut self, now: u64, pool: &mut B, out: &mut Outputs) -> Option<u64> {
        if self.neigh.due(now) {
            self.neigh_timers(now, pool, out);
        }
        self.dad_poll(now);
        self.pmtu6.retain(|p| p.2 > now);
        self.ra_poll(now, pool, out);
        self.mld_poll(now, pool, out);
        while let Some(e) = self.reasm.expire(now) {
            self.stats.inc(Stat::FragTimeout);
            match (e.quote, self.net.slot(e.iif)) {
                (Some(q), Some(slot)) if e.v6 => {
                    // RFC 8200 §4.5: only when fragment 0 came.
                    let msg = strata_proto::icmpv6::Icmpv6Header::time_exceeded(
                        strata_proto::icmpv6::time_exceeded_code::REASSEMBLY,
                    );
                    self.icmp6_error(now, pool, &q, slot, msg, false, out);
                }
                (Some(q), _) if !e.v6 => self.icmp_error(
                    now,
                    pool,
                    &q,
                    strata_proto::icmp::IcmpHeader::time_exceeded(
                        strata_proto::icmp::time_exceeded_code::REASSEMBLY,
                    ),
                    false,
                    out,
                ),
                _ => {}
            }
            pool.free(&e.buf);
        }
        self.next_deadline()
    }

    /// When [`poll`](Self::poll) next has work, if ever. Input and output
    /// can bring this closer (a new ARP resolution, a first fragment).
    pub fn next_deadline(&self) -> Option<u64> {
        [
            self.neigh.next_wake(),
            self.reasm.next_wake(),
            self.nd_deadline(),
            self.ra_deadline(),
            self.pmtu6.iter().map(|p| p.2).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Says whether an upper layer is attached for IP protocol `protocol`.
    /// TCP and UDP datagrams go to `out.up` only while their layer is
    /// attached; otherwise, like every protocol ipd does not handle itself,
    /// they are answered with ICMP protocol unreachable.
    pub fn set_upper(&mut self, protocol: u8, attached: bool) {
        self.upper[protocol as usize] = attached;
    }

    /// Drops a datagram for the upper layers that their ring had no room
    /// for, and counts it.
    pub fn upper_ring_full<B: Buffers>(&mut self, pool: &mut B, h: &Handle) {
        pool.free(h);
        self.stats.inc(Stat::UpperRingFull);
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Packets waiting for a neighbour to be resolved.
    pub fn waiting_for_neighbours(&self) -> usize {
        self.neigh.queued()
    }

    /// The usable neighbour entries.
    pub fn neighbours(&self) -> impl Iterator<Item = NeighRecord> + '_ {
        self.neigh.records().filter_map(|mut r| {
            r.iface = self.net.ifaces.get(r.iface as usize)?.index;
            Some(r)
        })
    }

    /// What the shell persists in the fabric's arena: the usable
    /// neighbours, then the duplicate address detection state of each of
    /// our IPv6 addresses.
    pub fn records(&self) -> impl Iterator<Item = NeighRecord> + '_ {
        self.neighbours()
            .chain(self.address_records())
            .chain(self.discovery_records())
    }

    /// Re-creates neighbours exported by a previous instance. Records for
    /// unknown interfaces, with unusable addresses, or already present are
    /// skipped; entries come back REACHABLE only if still within their
    /// reachable time, else STALE (re-confirmed on first use).
    pub fn restore_neighbours(&mut self, now: u64, recs: &[NeighRecord]) {
        for r in recs {
            let Some(slot) = self.net.slot(r.iface) else {
                continue;
            };
            if r.state >= neigh_state::ADDR_TENTATIVE {
                if !self.restore_discovery(slot, r) {
                    self.restore_address(slot, r);
                }
                continue;
            }
            let mac = strata_proto::MacAddr(r.mac);
            let usable = match (r.ip.as_v4(), r.ip.as_v6()) {
                (Some(v4), _) => self.usable_neighbour(v4, mac),
                (_, Some(v6)) => self.usable_neighbour6(v6, mac),
                _ => false,
            };
            if usable {
                self.neigh.restore(now, slot, r);
            }
        }
    }

    /// Whether `ip` at `mac` can be a neighbour at all: a unicast host
    /// address that is not ours, with a unicast MAC (what a restored or
    /// configured entry must be, and a sender ARP teaches).
    pub(crate) fn usable_neighbour(&self, ip: u32, mac: strata_proto::MacAddr) -> bool {
        !is_martian(ip)
            && !self.net.is_local(ip)
            && !self.net.is_bcast(ip)
            && !mac.is_multicast()
            && mac != strata_proto::MacAddr::ZERO
    }

    /// Forgets every learnt neighbour, or the one with address `only`
    /// (`strata neigh flush`, `neigh del`): the next packet to each is
    /// resolved anew. Permanent neighbours stay. Packets waiting for
    /// resolution of a forgotten one are freed.
    pub fn flush_neighbours<B: Buffers>(&mut self, pool: &mut B, only: Option<u32>) {
        for h in self.neigh.flush(only.map(NeighAddr::v4)) {
            pool.free(&h);
        }
    }

    /// Whether what [`records`](Self::records) returns changed (a
    /// neighbour appeared, went, or changed MAC or state; an own IPv6
    /// address changed detection state) since the last call; the shell
    /// rewrites its arena copy when it did.
    pub fn neighbours_changed(&mut self) -> bool {
        self.neigh.take_changed() | core::mem::take(&mut self.addrs6_changed)
    }

    // ---- input path ----

    fn ip_input<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        mut h: Handle,
        l2_bcast: bool,
        out: &mut Outputs,
    ) {
        let hdr = match pool.data(&h) {
            Ok(d) => Ipv4Header::parse(d.get(ETH_LEN..).unwrap_or(&[])),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let hdr = match hdr {
            Ok(hdr) => hdr,
            Err(e) => return self.drop(pool, &h, ipv4_stat(e)),
        };
        self.stats.inc(Stat::RxIpv4);
        // Drop Ethernet padding: the datagram ends where total_len says.
        h.data_len = (ETH_LEN + hdr.total_len as usize) as u32;
        if hdr.ttl == 0 {
            return self.drop(pool, &h, Stat::TtlZero);
        }
        let src = u32::from(hdr.src);
        let dst = u32::from(hdr.dst);
        if is_martian(src) || self.net.is_local(src) || self.net.is_bcast(src) {
            return self.drop(pool, &h, Stat::MartianSource);
        }
        let bcast = self.net.is_bcast(dst);
        if !bcast && !self.net.is_local(dst) {
            if self.limits.forwarding {
                // Before reassembly: a router passes fragments on as they
                // are (RFC 1812 §5.2.6).
                return self.forward(now, pool, h, &hdr, l2_bcast, out);
            }
            return self.drop(pool, &h, Stat::NotForUs);
        }
        let hl = hdr.header_len as usize;
        h.l4proto = hdr.protocol;
        if hdr.is_fragment() {
            self.stats.inc(Stat::FragReceived);
            let f = FragInfo {
                src: NeighAddr::v4(src).0,
                dst: NeighAddr::v4(dst).0,
                proto: hdr.protocol,
                ident: u32::from(hdr.ident),
                hl,
                data_at: hl,
                v6_next: None,
                offset: hdr.frag_offset as usize,
                payload_len: hdr.payload_len(),
                more: hdr.more_frags,
                iif: h.iif,
                ip_at: h.data_off as usize + ETH_LEN,
            };
            match self.reasm.insert(now, pool, h, &f) {
                Ok(Some(whole)) => {
                    self.stats.inc(Stat::FragReassembled);
                    h = whole;
                }
                Ok(None) => return,
                Err(s) => return self.stats.inc(s),
            }
        } else {
            h.pull_front(ETH_LEN as u32);
            h.l2_off = 0;
            h.l3_off = 0;
            h.l4_off = hl as u16;
        }
        self.local_deliver(now, pool, h, bcast, l2_bcast, out);
    }

    /// Delivers a datagram addressed to us (data window = the datagram):
    /// ICMP here, TCP/UDP up, anything else answered with protocol
    /// unreachable.
    fn local_deliver<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        h: Handle,
        bcast: bool,
        l2_bcast: bool,
        out: &mut Outputs,
    ) {
        let p = h.l4proto;
        if p == protocol::ICMP {
            return self.icmp_input(now, pool, h, bcast, out);
        }
        if bcast && p != protocol::UDP {
            return self.drop(pool, &h, Stat::BroadcastNonUdp);
        }
        if (p == protocol::TCP || p == protocol::UDP) && self.upper[p as usize] {
            self.stats.inc(Stat::Delivered);
            out.up.push(h);
            return;
        }
        let why = if p == protocol::TCP || p == protocol::UDP {
            Stat::UpperNotAttached
        } else {
            Stat::UnknownProtocol
        };
        self.stats.inc(why);
        let unreach = strata_proto::icmp::IcmpHeader::dest_unreachable(
            strata_proto::icmp::unreach_code::PROTOCOL,
            0,
        );
        self.icmp_error(now, pool, &h, unreach, l2_bcast, out);
        pool.free(&h);
    }

    // ---- small helpers ----

    /// Frees `h` and counts why.
    fn drop<B: Buffers>(&mut self, pool: &mut B, h: &Handle, why: Stat) {
        self.stats.inc(why);
        pool.free(h);
    }

    /// A handle whose bytes cannot be reached: a stale or out-of-range one
    /// names a buffer that is not ours to free; a bad window is ours.
    fn bad_handle<B: Buffers>(&mut self, pool: &mut B, h: &Handle, e: BufError) {
        match e {
            BufError::BadWindow => self.drop(pool, h, Stat::BadWindow),
            BufError::Stale | BufError::BadIndex => self.stats.inc(Stat::StaleHandle),
        }
    }

    /// Identification for a datagram ipd originates.
    fn next_ident(&mut self) -> u16 {
        self.ident = self.ident.wrapping_add(1);
        self.ident
    }
}

/// The IPv6 side of interfaces `ifaces`, or why their IPv6 addresses
/// cannot be used.
fn ifaces6(ifaces: &[IfaceConfig]) -> Result<Vec<ip6::Iface6>, ConfigError> {
    ifaces
        .iter()
        .map(|i| {
            ip6::check_config(i)?;
            Ok(ip6::Iface6::new(i.mac, &i.addrs6, i.autoconf))
        })
        .collect()
}

/// ipd's records as it last saved them to its arena (ipd is neither
/// stopped nor asked): its neighbours and the detection states of its
/// own IPv6 addresses, of interfaces the fabric has. Err(format) if an
/// ipd of another version keeps them in a format this one does not read.
pub fn saved_records(f: &strata_ipc::Fabric) -> Result<Vec<NeighRecord>, u32> {
    let stored = f
        .records::<[u8; 32]>(strata_ipc::LayerId::IPD, ARENA_FORMAT.writes)
        .stored_format();
    if stored == 0 {
        return Ok(Vec::new());
    }
    if !ARENA_FORMAT.reads(stored) {
        return Err(stored);
    }
    let n_ifaces = f.params().n_ifaces;
    let table = f.records::<[u8; 32]>(strata_ipc::LayerId::IPD, stored);
    Ok(table
        .load()
        .iter()
        .map(|b| NeighRecord::from_bytes(b, stored))
        .filter(|r| u32::from(r.iface) < n_ifaces)
        .collect())
}

/// The usable IPv6 addresses ipd made itself from advertised prefixes
/// (SLAAC, past detection), as its saved records have them: interface
/// index, address and prefix length (none when ipd saved none this build
/// reads). The transports are configured with the others.
pub fn autoconf_addresses(f: &strata_ipc::Fabric) -> Vec<(u8, std::net::Ipv6Addr, u8)> {
    saved_records(f)
        .unwrap_or_default()
        .iter()
        .filter(|r| r.state == neigh_state::ADDR_PREFERRED && r.mac[0] == 1)
        .filter_map(|r| Some((r.iface, r.ip.as_v6()?, r.mac[1].min(128))))
        .collect()
}

/// The upper layer's protocol (TCP or UDP) for a handle the core left in
/// [`Outputs::up`]: its `l4proto`, or for an ICMP error the protocol of
/// the datagram it quotes. Another value only for a handle that did not
/// come from `out.up`.
pub fn upper_protocol<B: Buffers>(pool: &B, h: &Handle) -> u8 {
    let quoted: fn(&[u8]) -> Option<u8> = match h.l4proto {
        protocol::ICMP => icmp::quoted_protocol,
        strata_proto::ipv6::next_header::ICMPV6 => ip6::quoted_protocol6,
        p => return p,
    };
    // ICMP's and ICMPv6's headers are both 8 bytes before the quote.
    pool.data(h)
        .ok()
        .and_then(|d| d.get(usize::from(h.l4_off) + strata_proto::icmp::IcmpHeader::LEN..))
        .and_then(quoted)
        .unwrap_or(h.l4proto)
}

/// The counter for an IPv4 parse error.
fn ipv4_stat(e: Ipv4Error) -> Stat {
    match e {
        Ipv4Error::Truncated => Stat::Ipv4Truncated,
        Ipv4Error::BadVersion => Stat::Ipv4BadVersion,
        Ipv4Error::BadHeaderLen => Stat::Ipv4BadHeaderLen,
        Ipv4Error::BadTotalLen => Stat::Ipv4BadTotalLen,
        Ipv4Error::TotalLenExceedsFrame => Stat::Ipv4TotalLenExceedsFrame,
        Ipv4Error::BadChecksum => Stat::Ipv4BadChecksum,
        Ipv4Error::BadOptions => Stat::Ipv4BadOptions,
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn every_ipv4_error_has_a_counter_named_after_it() {
        for e in [
            Ipv4Error::Truncated,
            Ipv4Error::BadVersion,
            Ipv4Error::BadHeaderLen,
            Ipv4Error::BadTotalLen,
            Ipv4Error::TotalLenExceedsFrame,
            Ipv4Error::BadChecksum,
            Ipv4Error::BadOptions,
        ] {
            assert_eq!(ipv4_stat(e).name(), format!("ipv4_{}", e.reason()));
        }
    }
}
