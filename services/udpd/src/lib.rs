//! The protocol core of udpd, strata's UDP layer (RFC 768, RFC 1122
//! §4.1; over IPv6 RFC 8200 §8): bindings to explicit and ephemeral ports
//! with Linux's SO_REUSEADDR rules, connected and unconnected sockets,
//! demultiplexing with Linux's scoring, checksum verification and
//! generation, port unreachable for closed ports (sent by ipd), and ICMP
//! and ICMPv6 errors surfaced to connected sockets.
//!
//! Both families, dual-stack as Linux (RFC 3493 §3.7): addresses are
//! 128-bit throughout, IPv4 ones mapped ([`mapped`]); a socket bound to
//! `::` without IPV6_V6ONLY takes IPv4 datagrams too, its peers appearing
//! as mapped addresses. A datagram goes out over IPv4 or IPv6 by its
//! destination's family.
//!
//! The core is pure (docs/DESIGN.md, "Code shape"): no I/O, no clock, no
//! globals. The process shell (`main.rs`) pops handles from its rings and
//! calls [`UdpCore::from_ip`] (datagrams and ICMP errors from ipd) and
//! [`UdpCore::from_sock`] (control requests and payloads from sockd), then
//! pushes what the core left in [`Outputs`]: `to_ip` to ipd, `to_sock` to
//! sockd.
//!
//! Ownership: every handle given to the core ends in exactly one place —
//! `out.to_ip`, `out.to_sock`, or freed back to the pool with a counter
//! saying why. A broadcast delivered to several sockets goes up as several
//! handles sharing one buffer (one reference each), so sockd must treat
//! received buffers as read-only.
//!
//! State that must survive a restart is the binding table:
//! [`UdpCore::bindings`] exports it as plain [`Binding`] records for the
//! shell to keep in the fabric arena, [`UdpCore::restore`] takes them back.
//!
//! No allocation per packet: the binding table is allocated once in
//! [`UdpCore::new`]; a send from an unbound socket allocates one pool
//! buffer for its [`op::BOUND`] notification; replies to control requests
//! and ICMP error notifications reuse the buffer they answer.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod stats;
mod table;

#[cfg(test)]
mod tests;

use std::net::Ipv6Addr;

use strata_ipc::addrs::{is_any, mapped, unmapped};
use strata_ipc::handle::{csum, flags};
use strata_ipc::l4::{ctl_flags, op, L4Ctl, SendMeta, L4CTL_LEN, SEND_META_LEN};
use strata_ipc::{BufError, Buffers, Handle};
use strata_proto::ethernet::ethertype;
use strata_proto::icmp::{self, IcmpHeader, QuotedDatagram, SocketError};
use strata_proto::icmpv6::{self, icmpv6_type, Icmpv6Header};
use strata_proto::ipv4::{protocol, Ipv4Header};
use strata_proto::ipv6::{next_header, FragmentHeader, Ipv6Header};
use strata_proto::udp::{UdpError, UdpHeader};

pub use config::{ConfigError, IfaceAddrs, RouteInfo, UdpConfig, DEFAULT_EPHEMERAL};
pub use stats::{Stat, Stats};
pub use table::{bflags, Binding};

use config::Net;
use table::Table;

/// Largest UDP payload over IPv4: 65,535 − 20 (IPv4 header) − 8 (UDP
/// header); IPv6 datagrams keep the same limit.
pub const MAX_PAYLOAD: usize = 65507;
/// TTL (IPv4) and hop limit (IPv6 unicast) of the datagrams udpd sends
/// (Linux `ip_default_ttl`, `hop_limit`).
pub const DEFAULT_TTL: u8 = 64;
/// Hop limit of IPv6 datagrams to a multicast address: Linux's default
/// `IPV6_MULTICAST_HOPS`, 1, which keeps them on the link (RFC 3493
/// §5.2).
pub const MULTICAST_HOPS: u8 = 1;
/// IPv4 and UDP headers of a datagram udpd sends.
const HDRS: u32 = (Ipv4Header::MIN_LEN + UdpHeader::LEN) as u32;
/// IPv6 and UDP headers of a datagram udpd sends (no extension headers).
const HDRS6: u32 = (Ipv6Header::LEN + UdpHeader::LEN) as u32;

/// What the core produced. The shell creates it once with
/// [`Outputs::with_capacity`], drains both vectors after each batch and
/// clears them, so no call allocates in steady state.
#[derive(Debug, Default)]
pub struct Outputs {
    /// For ipd: complete IPv4 or IPv6 datagrams to send (data window =
    /// the datagram, `l3_off` 0, `l4_off` 20 or 40, `ethertype` saying
    /// which, `l4proto` UDP), and received datagrams to answer with port
    /// unreachable (`flags` has
    /// [`ICMP_PORT_UNREACH`](strata_ipc::handle::flags::ICMP_PORT_UNREACH),
    /// data window = the received IP datagram, `l3_off` 0).
    pub to_ip: Vec<Handle>,
    /// For sockd: received datagrams (data window = the whole IP
    /// datagram, from its IPv4 or IPv6 header as `ethertype` says, ending
    /// where the UDP length says; `l4_off` at the UDP header; `sock` set)
    /// and control messages (`flags` has
    /// [`CTRL`](strata_ipc::handle::flags::CTRL): replies, [`op::BOUND`],
    /// [`op::SOCK_ERROR`]).
    pub to_sock: Vec<Handle>,
}

impl Outputs {
    /// Empty outputs with room for `n` handles in each vector.
    pub fn with_capacity(n: usize) -> Self {
        Outputs {
            to_ip: Vec::with_capacity(n),
            to_sock: Vec::with_capacity(n),
        }
    }

    /// Empties both vectors, keeping their capacity.
    pub fn clear(&mut self) {
        self.to_ip.clear();
        self.to_sock.clear();
    }
}

/// Which of udpd's output rings a handle did not fit into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    /// udpd → ipd.
    Ip,
    /// udpd → sockd.
    Sock,
}

/// A received datagram's addresses and sizes, read once. Addresses are
/// 128-bit, IPv4 ones mapped.
#[derive(Clone, Copy, Debug)]
struct Rx {
    /// Offset of the UDP header: the IPv4 header's length, or the IPv6
    /// header's and its extension headers'.
    l4: usize,
    /// The whole IP datagram's length (what port unreachable quotes).
    total: usize,
    /// UDP length (header and payload).
    len: usize,
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
}

/// What an ICMP or ICMPv6 error says about one of our datagrams.
#[derive(Clone, Copy, Debug)]
struct IcmpErr {
    errno: i32,
    /// Linux's `fatal` (hard error): reported without `IP_RECVERR`.
    hard: bool,
    /// Our address and port as the quoted datagram carried them.
    local: u128,
    lport: u16,
    /// The peer's address and port.
    remote: u128,
    rport: u16,
}

/// Why a socket may not talk to a peer of the family it named.
#[derive(Clone, Copy, Debug)]
enum Mismatch {
    /// An IPV6_V6ONLY socket and an IPv4 peer.
    V6Only,
    /// A peer of the other family than the socket's.
    Family,
}

impl Mismatch {
    /// The errno a connect answers with (Linux: `__ip6_datagram_connect`
    /// says ENETUNREACH, `ip4_datagram_connect` EAFNOSUPPORT).
    fn errno(self) -> i32 {
        match self {
            Mismatch::V6Only => libc::ENETUNREACH,
            Mismatch::Family => libc::EAFNOSUPPORT,
        }
    }

    /// The counter of a refusal.
    fn stat(self) -> Stat {
        match self {
            Mismatch::V6Only => Stat::V6OnlyRefused,
            Mismatch::Family => Stat::WrongFamily,
        }
    }
}

/// The UDP core: all of udpd's protocol state.
pub struct UdpCore {
    net: Net,
    table: Table,
    stats: Stats,
    ephemeral: (u16, u16),
    soft_errors: bool,
    /// xorshift32 state for the start of the ephemeral search.
    rng: u32,
    /// IP identification of the next datagram.
    ident: u16,
    /// The binding table changed since [`UdpCore::take_changed`].
    changed: bool,
}

impl UdpCore {
    /// A core for `cfg`, or why `cfg` is unusable. Allocates every table.
    pub fn new(cfg: UdpConfig) -> Result<Self, ConfigError> {
        let (lo, hi) = cfg.ephemeral_ports;
        if lo == 0 || lo > hi {
            return Err(ConfigError::BadEphemeralRange(lo, hi));
        }
        if cfg.max_bindings == 0 {
            return Err(ConfigError::NoBindings);
        }
        let net = Net::new(&cfg)?;
        let rng = cfg.seed | 1;
        Ok(UdpCore {
            net,
            table: Table::new(cfg.max_bindings),
            stats: Stats::default(),
            ephemeral: (lo, hi),
            soft_errors: cfg.soft_errors,
            rng,
            ident: (rng >> 16) as u16,
            changed: false,
        })
    }

    /// Takes the IPv6 addresses ipd made from advertised prefixes (SLAAC),
    /// which no configuration names: sockets may be bound to them.
    pub fn set_autoconf6(&mut self, addrs: impl IntoIterator<Item = Ipv6Addr>) {
        self.net.set_autoconf(addrs);
    }

    /// Takes the interfaces' addresses and the routes of `cfg` at run
    /// time (`strata addr`, `route`): binds, sources and broadcasts are
    /// judged by them from now on; existing bindings stay. On error the
    /// old ones stay in force.
    pub fn set_addresses(&mut self, cfg: &UdpConfig) -> Result<(), ConfigError> {
        self.net = Net::new(cfg)?;
        Ok(())
    }

    /// Takes a handle from ipd: a UDP datagram (`l4proto` UDP), an ICMP
    /// error quoting one (`l4proto` ICMP) or an ICMPv6 error quoting one
    /// (`l4proto` ICMPv6); data window = the whole IP datagram, from its
    /// IPv6 header when `ethertype` says IPv6 (then `l4_off` is where ipd
    /// found the UDP or ICMPv6 header, after any extension headers), else
    /// from its IPv4 header. The core owns `h` from here.
    ///
    /// A valid datagram goes to the best-matching socket (every matching
    /// socket for a broadcast or multicast destination) in `out.to_sock`,
    /// or, when no socket matches a unicast destination, back to ipd in
    /// `out.to_ip` flagged for port unreachable. An ICMP error for a
    /// connected socket becomes an [`op::SOCK_ERROR`] for sockd.
    pub fn from_ip<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        match h.l4proto {
            protocol::UDP => self.udp_input(pool, h, out),
            protocol::ICMP => self.icmp_input(pool, h, out),
            next_header::ICMPV6 => self.icmp6_input(pool, h, out),
            _ => self.drop(pool, &h, Stat::WrongProtocol),
        }
    }

    /// Takes a handle from sockd: a control request (`flags` has
    /// [`CTRL`](strata_ipc::handle::flags::CTRL)), answered in
    /// `out.to_sock` except [`op::CLOSE`]; or a payload to send, preceded
    /// by a [`SendMeta`], which leaves as a complete IPv4 or IPv6
    /// datagram (by the destination's family) in `out.to_ip` (after an
    /// implicit bind, announced with [`op::BOUND`], if the socket was
    /// unbound).
    pub fn from_sock<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        if h.flags & flags::CTRL != 0 {
            self.control(pool, h, out)
        } else {
            self.send(pool, h, out)
        }
    }

    /// Frees a handle the shell could not push because `ring` was full,
    /// and counts it.
    pub fn ring_full<B: Buffers>(&mut self, pool: &mut B, h: &Handle, ring: Ring) {
        let s = match ring {
            Ring::Ip => Stat::IpRingFull,
            Ring::Sock => Stat::SockRingFull,
        };
        self.drop(pool, h, s);
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The binding of socket `sock`, if it is bound.
    pub fn binding(&self, sock: u32) -> Option<Binding> {
        self.table.get(sock).copied()
    }

    /// Every binding, for the shell to persist in the fabric's arena.
    pub fn bindings(&self) -> impl Iterator<Item = Binding> + '_ {
        self.table.iter().copied()
    }

    /// Whether the bindings changed since the last call; the shell
    /// rewrites its arena copy when they did.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Re-creates bindings exported by a previous instance, in their
    /// original order. Records that are malformed, name a socket twice, or
    /// an address the stack no longer has are skipped (and counted);
    /// returns how many were restored.
    pub fn restore(&mut self, recs: &[Binding]) -> usize {
        let mut v = recs.to_vec();
        v.sort_by_key(|b| b.seq);
        let mut n = 0;
        for mut r in v {
            if is_any(r.remote_addr) {
                r.remote_addr = 0;
                r.remote_port = 0;
            }
            let ok = r.local_port != 0
                && r.flags & !bflags::ALL == 0
                // IPV6_V6ONLY sockets never have an IPv4 address.
                && !(r.v6only() && unmapped(r.local_addr).is_some())
                && self.table.get(r.sock).is_none()
                && self.net.bindable(r.local_addr)
                && self.table.insert(r, true).is_ok();
            if ok {
                n += 1;
                self.stats.inc(Stat::Restored);
            } else {
                self.stats.inc(Stat::RestoreSkipped);
                self.changed = true;
            }
        }
        n
    }

    // ---- from ipd ----

    /// A UDP datagram from ipd, over IPv6 if `h.ethertype` says so, else
    /// over IPv4: to its socket (or every matching one for a group
    /// address), back to ipd for port unreachable, or dropped and counted.
    fn udp_input<B: Buffers>(&mut self, pool: &mut B, mut h: Handle, out: &mut Outputs) {
        let v6 = h.ethertype == ethertype::IPV6;
        self.stats.inc(Stat::InDatagrams);
        if v6 {
            self.stats.inc(Stat::InDatagrams6);
        }
        let trusted = h.csum == csum::PARTIAL || h.csum == csum::VERIFIED;
        let parsed = match pool.data(&h) {
            Ok(d) if v6 => parse_udp6(d, usize::from(h.l4_off), trusted),
            Ok(d) => parse_udp(d, trusted),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let (rx, note) = match parsed {
            Ok(x) => x,
            Err(s) => return self.drop(pool, &h, s),
        };
        if let Some(s) = note {
            self.stats.inc(s);
        }
        h.l2_off = 0;
        h.l3_off = 0;
        h.l4_off = rx.l4 as u16;
        h.flags = 0;
        h.sock = 0;
        h.data_len = (rx.l4 + rx.len) as u32;
        if self.net.is_group(rx.dst) {
            return self.deliver_group(pool, h, &rx, out);
        }
        match self.table.lookup(rx.dst, rx.dport, rx.src, rx.sport) {
            Some(b) => {
                h.sock = b.sock;
                self.stats.inc(Stat::Delivered);
                out.to_sock.push(h);
            }
            None => {
                // ipd answers it with port unreachable (ICMP or ICMPv6),
                // quoting it whole.
                self.stats.inc(Stat::NoPort);
                h.data_len = rx.total as u32;
                h.flags = flags::ICMP_PORT_UNREACH;
                out.to_ip.push(h);
            }
        }
    }

    /// Delivers a datagram to a broadcast or multicast address `h` holds
    /// to every matching socket (Linux `__udp4_lib_mcast_deliver`,
    /// `__udp6_lib_mcast_deliver`), each through its own reference to the
    /// one buffer; one that none takes is dropped without an ICMP error
    /// (RFC 1122 §4.1.3.1, RFC 4443 §2.4 (e)).
    fn deliver_group<B: Buffers>(&mut self, pool: &mut B, h: Handle, rx: &Rx, out: &mut Outputs) {
        self.stats.inc(Stat::InBroadcast);
        let mut n = 0u64;
        for b in self.table.on_port(rx.dport) {
            if b.score(rx.dst, rx.src, rx.sport).is_none() {
                continue;
            }
            if n > 0 && pool.add_ref(&h).is_err() {
                break;
            }
            out.to_sock.push(Handle { sock: b.sock, ..h });
            n += 1;
        }
        if n == 0 {
            return self.drop(pool, &h, Stat::NoPortBroadcast);
        }
        for _ in 0..n {
            self.stats.inc(Stat::Delivered);
        }
    }

    /// An ICMP error from ipd (the whole IPv4 datagram carrying it).
    fn icmp_input<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::IcmpInErrors);
        let parsed = match pool.data(&h) {
            Ok(d) => parse_icmp(d),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        match parsed {
            Ok(e) => self.report(pool, h, &e, out),
            Err(s) => self.drop(pool, &h, s),
        }
    }

    /// An ICMPv6 error from ipd (the whole IPv6 datagram carrying it, the
    /// message at `l4_off`).
    fn icmp6_input<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::IcmpInErrors);
        self.stats.inc(Stat::Icmp6InErrors);
        let parsed = match pool.data(&h) {
            Ok(d) => parse_icmp6(d, usize::from(h.l4_off)),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        match parsed {
            Ok(e) => self.report(pool, h, &e, out),
            Err(s) => self.drop(pool, &h, s),
        }
    }

    /// Tells sockd of ICMP error `e`, which `h` carried, if the socket
    /// that sent the quoted datagram is connected and the error is hard
    /// (or soft ones are reported); else drops `h`, counting why.
    fn report<B: Buffers>(&mut self, pool: &mut B, h: Handle, e: &IcmpErr, out: &mut Outputs) {
        // Linux `__udp4_lib_err`, `__udp6_lib_err`: the socket that sent
        // the quoted datagram is the one a reply to it would reach.
        let b = match self.table.lookup(e.local, e.lport, e.remote, e.rport) {
            None => return self.drop(pool, &h, Stat::IcmpNoSocket),
            Some(b) if !b.connected() => return self.drop(pool, &h, Stat::IcmpUnconnected),
            Some(b) => *b,
        };
        if !e.hard && !self.soft_errors {
            return self.drop(pool, &h, Stat::IcmpSoftIgnored);
        }
        let mut m = state_msg(op::SOCK_ERROR, b.sock, Some(&b));
        m.errno = e.errno;
        self.stats.inc(Stat::IcmpReported);
        self.write_ctl(pool, &h, &m, out);
    }

    // ---- from sockd: control ----

    fn control<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        let m = match L4Ctl::from_handle(pool, &h) {
            Ok(Some(m)) => m,
            Ok(None) => return self.drop(pool, &h, Stat::CtlMalformed),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        self.stats.inc(Stat::CtlRequests);
        let res = match m.op {
            op::BIND => self.bind(&m),
            op::CONNECT => self.connect(&m),
            op::CLOSE => {
                if self.table.remove(m.sock).is_some() {
                    self.changed = true;
                    self.stats.inc(Stat::Closes);
                }
                return pool.free(&h);
            }
            _ => {
                self.stats.inc(Stat::CtlUnknownOp);
                Err(libc::EOPNOTSUPP)
            }
        };
        let mut reply = match res {
            Ok(()) => state_msg(op::OK, m.sock, self.table.get(m.sock)),
            Err(errno) => L4Ctl {
                op: op::ERROR,
                sock: m.sock,
                errno,
                ..L4Ctl::default()
            },
        };
        reply.req = m.req;
        self.write_ctl(pool, &h, &reply, out);
    }

    /// `bind()`: Linux `inet_bind` / `__inet6_bind` + `udp_lib_get_port`.
    fn bind(&mut self, m: &L4Ctl) -> Result<(), i32> {
        let local = m.local_addr;
        if m.flags & ctl_flags::REPEAT != 0 {
            if let Some(b) = self.table.get(m.sock) {
                // sockd sent it again: the first took effect before the
                // reply was lost (with a udpd that died).
                if (m.local_port == 0 || b.local_port == m.local_port)
                    && (is_any(local) || b.local_addr == local)
                {
                    return Ok(());
                }
            }
        }
        // Bound already; or IPV6_V6ONLY and an IPv4 address, which such a
        // socket cannot have (Linux `__inet6_bind`: EINVAL).
        let v4_on_v6only = m.flags & ctl_flags::V6ONLY != 0 && unmapped(local).is_some();
        if self.table.get(m.sock).is_some() || v4_on_v6only {
            self.stats.inc(Stat::BindInvalid);
            return Err(libc::EINVAL);
        }
        if !self.net.bindable(local) {
            self.stats.inc(Stat::BindAddrNotAvail);
            return Err(libc::EADDRNOTAVAIL);
        }
        let mut fl = reuse_bits(m.flags) | family_bits(m.flags, local);
        let port = if m.local_port != 0 {
            if self.table.conflicts(local, m.local_port, fl) {
                self.stats.inc(Stat::BindAddrInUse);
                return Err(libc::EADDRINUSE);
            }
            m.local_port
        } else {
            match self.ephemeral_port() {
                Some(p) => p,
                None => {
                    self.stats.inc(Stat::BindAddrInUse);
                    return Err(libc::EADDRINUSE);
                }
            }
        };
        if m.local_port != 0 {
            fl |= bflags::PORT_LOCK;
        }
        if !is_any(local) {
            fl |= bflags::ADDR_LOCK;
        }
        let b = Binding {
            sock: m.sock,
            local_addr: local,
            local_port: port,
            flags: fl,
            ..Binding::default()
        };
        self.insert(b)?;
        self.stats.inc(Stat::Binds);
        Ok(())
    }

    /// `connect()`: Linux `inet_dgram_connect` (autobind) +
    /// `ip4_datagram_connect` / `__ip6_datagram_connect` (local address
    /// from the route; over IPv6 it stays `::`, ipd choosing the source
    /// per datagram), or `__udp_disconnect` for an any address.
    fn connect(&mut self, m: &L4Ctl) -> Result<(), i32> {
        let remote = m.remote_addr;
        if is_any(remote) {
            return self.disconnect(m.sock);
        }
        let bound = self.table.get(m.sock).copied();
        if let Err(e) = family_check(bound.as_ref(), m.flags, remote) {
            self.stats.inc(e.stat());
            return Err(e.errno());
        }
        if bound.is_none() {
            let Some(port) = self.ephemeral_port() else {
                self.stats.inc(Stat::ConnectNoPort);
                return Err(libc::EAGAIN);
            };
            // An autobound socket keeps its reuse options for later
            // binds of the port by others.
            let local = any_for(remote);
            self.insert(Binding {
                sock: m.sock,
                local_addr: local,
                local_port: port,
                flags: reuse_bits(m.flags) | family_bits(m.flags, local),
                ..Binding::default()
            })?;
        }
        let src = self.net.source_for(remote);
        if let Some(b) = self.table.get_mut(m.sock) {
            // A local address connect chose before, for a peer of the
            // other family (a dual-stack socket), is chosen again.
            let other = unmapped(b.local_addr).is_some() != unmapped(remote).is_some();
            if is_any(b.local_addr) || (other && b.flags & bflags::ADDR_LOCK == 0) {
                b.local_addr = src;
            }
            b.remote_addr = remote;
            b.remote_port = m.remote_port;
        }
        self.changed = true;
        self.stats.inc(Stat::Connects);
        Ok(())
    }

    /// `__udp_disconnect`: forgets the peer, the local address unless
    /// bind chose it (back to the socket's any), and the port unless bind
    /// chose it.
    fn disconnect(&mut self, sock: u32) -> Result<(), i32> {
        self.stats.inc(Stat::Disconnects);
        let Some(b) = self.table.get_mut(sock) else {
            return Ok(());
        };
        b.remote_addr = 0;
        b.remote_port = 0;
        if b.flags & bflags::ADDR_LOCK == 0 {
            b.local_addr = b.any();
        }
        if b.flags & bflags::PORT_LOCK == 0 {
            self.table.remove(sock);
        }
        self.changed = true;
        Ok(())
    }

    fn insert(&mut self, b: Binding) -> Result<(), i32> {
        if self.table.insert(b, false).is_err() {
            self.stats.inc(Stat::TableFull);
            return Err(libc::ENOBUFS);
        }
        self.changed = true;
        Ok(())
    }

    /// A port of the ephemeral range no socket is bound to, searched from
    /// a pseudo-random start; `None` when every one is taken.
    fn ephemeral_port(&mut self) -> Option<u16> {
        let (lo, hi) = self.ephemeral;
        let n = u32::from(hi - lo) + 1;
        let start = self.next_rand() % n;
        (0..n)
            .map(|i| lo + ((start + i) % n) as u16)
            .find(|&p| self.table.port_unused(p))
    }

    fn next_rand(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    // ---- from sockd: data ----

    /// A payload from sockd behind its [`SendMeta`]: out to ipd over the
    /// destination's family, or dropped and counted.
    fn send<B: Buffers>(&mut self, pool: &mut B, mut h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::OutRequests);
        let meta = match pool.data(&h) {
            Ok(d) => d
                .get(..SEND_META_LEN)
                .and_then(|m| <&[u8; SEND_META_LEN]>::try_from(m).ok())
                .map(SendMeta::from_bytes),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let Some(meta) = meta else {
            return self.drop(pool, &h, Stat::OutMalformed);
        };
        let payload = h.data_len as usize - SEND_META_LEN;
        if payload > MAX_PAYLOAD {
            return self.drop(pool, &h, Stat::OutTooBig);
        }
        let bound = self.table.get(h.sock).copied();
        // `::` and `0.0.0.0` both name the connected peer.
        let (dst, dport) = match (is_any(meta.addr), bound) {
            (true, Some(b)) if b.connected() => (b.remote_addr, b.remote_port),
            (true, _) => return self.drop(pool, &h, Stat::OutNoDestination),
            (false, _) => (meta.addr, meta.port),
        };
        if dport == 0 {
            return self.drop(pool, &h, Stat::OutBadPort);
        }
        if let Err(e) = family_check(bound.as_ref(), 0, dst) {
            return self.drop(pool, &h, e.stat());
        }
        let b = match bound {
            Some(b) => b,
            None => match self.implicit_bind(pool, h.sock, dst, out) {
                Ok(b) => b,
                Err(s) => return self.drop(pool, &h, s),
            },
        };
        h.pull_front(SEND_META_LEN as u32);
        let sent = match unmapped(dst) {
            Some(v4) => self.emit4(pool, &mut h, &b, v4, dport),
            None => self.emit6(pool, &mut h, &b, dst, dport),
        };
        match sent {
            Ok(o) => {
                self.stats.inc(Stat::OutDatagrams);
                out.to_ip.push(o);
            }
            Err(Some(s)) => self.drop(pool, &h, s),
            // Not ours to free (a stale handle): counted.
            Err(None) => {}
        }
    }

    /// Puts IPv4 and UDP headers from `b`'s port to `dst:dport` in front
    /// of the payload `h` holds: the handle for ipd, or the counter to
    /// drop `h` with (`None`: not ours to free, counted).
    fn emit4<B: Buffers>(
        &mut self,
        pool: &mut B,
        h: &mut Handle,
        b: &Binding,
        dst: u32,
        dport: u16,
    ) -> Result<Handle, Option<Stat>> {
        // A socket bound to one of our addresses sends from it; one bound
        // to any (or to a broadcast address) from the address routing
        // would choose, so the checksum is final here.
        let src = if unmapped(b.local_addr).is_some() && self.net.is_local(b.local_addr) {
            b.local_addr
        } else {
            self.net.source_for(mapped(dst))
        };
        let src = unmapped(src).unwrap_or(0);
        if !h.push_front(HDRS) {
            return Err(Some(Stat::OutNoHeadroom));
        }
        self.ident = self.ident.wrapping_add(1);
        let ip = Ipv4Header {
            header_len: 20,
            tos: 0,
            total_len: h.data_len as u16,
            ident: self.ident,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            ttl: DEFAULT_TTL,
            protocol: protocol::UDP,
            checksum: 0,
            src: src.into(),
            dst: dst.into(),
        };
        let udp = udp_header(b.local_port, dport);
        let ok = match pool.data_mut(h) {
            Ok(d) => {
                ip.emit(d).is_ok()
                    && udp
                        .emit(&mut d[Ipv4Header::MIN_LEN..], src.into(), dst.into())
                        .is_ok()
            }
            Err(e) => return Err(self.window_error(e)),
        };
        if !ok {
            return Err(Some(Stat::BadWindow));
        }
        Ok(outgoing(h, ethertype::IPV4, Ipv4Header::MIN_LEN))
    }

    /// As [`emit4`](Self::emit4), with IPv6 and UDP headers (no extension
    /// headers). The source is `b`'s address if it is one of ours, else
    /// `::`, for ipd to choose (RFC 6724) and to fix the checksum for; the
    /// checksum covers the addresses as written (RFC 8200 §8.1).
    fn emit6<B: Buffers>(
        &mut self,
        pool: &mut B,
        h: &mut Handle,
        b: &Binding,
        dst: u128,
        dport: u16,
    ) -> Result<Handle, Option<Stat>> {
        let src = if unmapped(b.local_addr).is_none() && self.net.is_local(b.local_addr) {
            b.local_addr
        } else {
            0
        };
        if !h.push_front(HDRS6) {
            return Err(Some(Stat::OutNoHeadroom));
        }
        let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
        let ip = Ipv6Header {
            traffic_class: 0,
            flow_label: 0,
            payload_len: (h.data_len - Ipv6Header::LEN as u32) as u16,
            next_header: next_header::UDP,
            hop_limit: if dst.is_multicast() {
                MULTICAST_HOPS
            } else {
                DEFAULT_TTL
            },
            src,
            dst,
        };
        let udp = udp_header(b.local_port, dport);
        let ok = match pool.data_mut(h) {
            Ok(d) => ip.emit(d).is_ok() && udp.emit_v6(&mut d[Ipv6Header::LEN..], src, dst).is_ok(),
            Err(e) => return Err(self.window_error(e)),
        };
        if !ok {
            return Err(Some(Stat::BadWindow));
        }
        self.stats.inc(Stat::OutDatagrams6);
        Ok(outgoing(h, ethertype::IPV6, Ipv6Header::LEN))
    }

    /// Binds unbound `sock` to an ephemeral port for its first send, to
    /// the any address of `dst`'s family (`::`, taking IPv4 too, for an
    /// IPv6 one, as Linux autobinds an IPv6 socket), and tells sockd with
    /// [`op::BOUND`]. The notification's buffer is taken first, so a
    /// socket is never bound without sockd hearing of it.
    fn implicit_bind<B: Buffers>(
        &mut self,
        pool: &mut B,
        sock: u32,
        dst: u128,
        out: &mut Outputs,
    ) -> Result<Binding, Stat> {
        let note = pool.alloc(L4CTL_LEN).ok_or(Stat::PoolExhausted)?;
        let port = self.ephemeral_port();
        let local = any_for(dst);
        let b = port.map(|p| Binding {
            sock,
            local_addr: local,
            local_port: p,
            flags: family_bits(0, local),
            ..Binding::default()
        });
        let Some(b) = b.filter(|b| self.table.insert(*b, false).is_ok()) else {
            pool.free(&note);
            return Err(if port.is_none() {
                Stat::OutNoPort
            } else {
                Stat::TableFull
            });
        };
        self.changed = true;
        self.stats.inc(Stat::ImplicitBinds);
        let m = state_msg(op::BOUND, sock, Some(&b));
        self.write_ctl(pool, &note, &m, out);
        Ok(b)
    }

    // ---- small helpers ----

    /// Sends control message `m` to sockd, made from `h` (a request, an
    /// ICMP error or a buffer taken for it; [`L4Ctl::reply_in`]).
    fn write_ctl<B: Buffers>(&mut self, pool: &mut B, h: &Handle, m: &L4Ctl, out: &mut Outputs) {
        match m.reply_in(pool, h, protocol::UDP) {
            Ok(c) => out.to_sock.push(c),
            Err(BufError::BadIndex) if h.is_inline() => self.stats.inc(Stat::PoolExhausted),
            Err(e) => self.bad_handle(pool, h, e),
        }
    }

    /// Frees `h` and counts why.
    fn drop<B: Buffers>(&mut self, pool: &mut B, h: &Handle, why: Stat) {
        self.stats.inc(why);
        pool.free(h);
    }

    /// The counter to drop a handle whose bytes cannot be reached with,
    /// or `None` (counted here) when its buffer is not ours to free.
    fn window_error(&mut self, e: BufError) -> Option<Stat> {
        match e {
            BufError::BadWindow => Some(Stat::BadWindow),
            BufError::Stale | BufError::BadIndex => {
                self.stats.inc(Stat::StaleHandle);
                None
            }
        }
    }

    /// A handle whose bytes cannot be reached: a stale or out-of-range one
    /// names a buffer that is not ours to free; a bad window is ours.
    fn bad_handle<B: Buffers>(&mut self, pool: &mut B, h: &Handle, e: BufError) {
        match e {
            BufError::BadWindow => self.drop(pool, h, Stat::BadWindow),
            BufError::Stale | BufError::BadIndex => self.stats.inc(Stat::StaleHandle),
        }
    }
}

/// A message `op` about `sock` carrying its binding's addresses (zeros when
/// unbound; an unconnected socket's peer is its family's any).
fn state_msg(op: u32, sock: u32, b: Option<&Binding>) -> L4Ctl {
    let mut m = L4Ctl {
        op,
        sock,
        ..L4Ctl::default()
    };
    if let Some(b) = b {
        m.local_addr = b.local_addr;
        m.local_port = b.local_port;
        m.remote_addr = if b.connected() {
            b.remote_addr
        } else {
            b.any()
        };
        m.remote_port = b.remote_port;
        if b.flags & bflags::REUSEADDR != 0 {
            m.flags |= ctl_flags::REUSEADDR;
        }
        if b.flags & bflags::REUSEPORT != 0 {
            m.flags |= ctl_flags::REUSEPORT;
        }
        if b.v6only() {
            m.flags |= ctl_flags::V6ONLY;
        }
    }
    m
}

/// The [`bflags`] for the reuse options of a BIND or CONNECT.
fn reuse_bits(flags: u32) -> u32 {
    strata_ipc::l4::reuse_options(flags, bflags::REUSEADDR, bflags::REUSEPORT)
}

/// The [`bflags`] for the family of a socket that binds to `local` with
/// request flags `flags`: IPv6 if the address is (`::` included) or the
/// socket is IPV6_V6ONLY, which it then keeps.
fn family_bits(flags: u32, local: u128) -> u32 {
    let mut f = 0;
    if flags & ctl_flags::V6ONLY != 0 {
        f |= bflags::V6ONLY | bflags::INET6;
    }
    if unmapped(local).is_none() {
        f |= bflags::INET6;
    }
    f
}

/// The any address of `peer`'s family, to which an unbound socket
/// talking to `peer` is bound.
fn any_for(peer: u128) -> u128 {
    if unmapped(peer).is_some() {
        mapped(0)
    } else {
        0
    }
}

/// Whether the socket bound as `b` (`None`: unbound, with request flags
/// `flags`) may talk to `peer`: an IPV6_V6ONLY socket has no IPv4 peers
/// (RFC 3493 §5.3); an IPv4 socket no IPv6 ones; a socket bound to an
/// address of one family no peers of the other.
fn family_check(b: Option<&Binding>, flags: u32, peer: u128) -> Result<(), Mismatch> {
    let v4 = unmapped(peer).is_some();
    let v6only = flags & ctl_flags::V6ONLY != 0 || b.is_some_and(Binding::v6only);
    if v4 && v6only {
        return Err(Mismatch::V6Only);
    }
    let Some(b) = b else {
        return Ok(());
    };
    let locked_v4 = unmapped(b.local_addr).is_some();
    if (!v4 && !b.inet6()) || (b.flags & bflags::ADDR_LOCK != 0 && locked_v4 != v4) {
        return Err(Mismatch::Family);
    }
    Ok(())
}

/// A UDP header from `sport` to `dport`; `emit` fills length and checksum.
fn udp_header(sport: u16, dport: u16) -> UdpHeader {
    UdpHeader {
        src_port: sport,
        dst_port: dport,
        length: 0,
        checksum: 0,
    }
}

/// The handle for ipd of the datagram `h` holds (from its IP header of
/// `ethertype`; the UDP header at `l4`): a fresh one, so nothing sockd set
/// goes down but the timestamp.
fn outgoing(h: &Handle, ethertype: u16, l4: usize) -> Handle {
    let mut o = Handle::new(h.buf, h.gen, h.data_off);
    o.data_len = h.data_len;
    o.l3_off = 0;
    o.l4_off = l4 as u16;
    o.l4proto = protocol::UDP;
    o.ethertype = ethertype;
    o.tstamp = h.tstamp;
    o
}

/// The counter for a UDP header error.
pub(crate) fn udp_stat(e: UdpError) -> Stat {
    match e {
        UdpError::Truncated => Stat::UdpTruncated,
        UdpError::BadLength => Stat::UdpBadLength,
        UdpError::LengthExceedsPacket => Stat::UdpLengthExceedsPacket,
        UdpError::BadChecksum => Stat::UdpBadChecksum,
    }
}

/// Validates a received datagram `d` (the whole IPv4 datagram): IPv4
/// header, UDP header, lengths, and the checksum unless `trusted` or zero
/// (then the second value says which).
fn parse_udp(d: &[u8], trusted: bool) -> Result<(Rx, Option<Stat>), Stat> {
    let ip = Ipv4Header::parse(d).map_err(|_| Stat::IpMalformed)?;
    if ip.protocol != protocol::UDP {
        return Err(Stat::WrongProtocol);
    }
    if ip.is_fragment() {
        return Err(Stat::IpFragment);
    }
    let hl = usize::from(ip.header_len);
    let total = usize::from(ip.total_len);
    let seg = &d[hl..total];
    let udp = UdpHeader::parse(seg).map_err(udp_stat)?;
    let len = usize::from(udp.length);
    let note = if trusted {
        Some(Stat::CsumTrusted)
    } else if udp.checksum == 0 {
        Some(Stat::CsumZero)
    } else if UdpHeader::verify_checksum(&seg[..len], ip.src, ip.dst) {
        None
    } else {
        return Err(Stat::UdpBadChecksum);
    };
    let rx = Rx {
        l4: hl,
        total,
        len,
        src: mapped(u32::from(ip.src)),
        dst: mapped(u32::from(ip.dst)),
        sport: udp.src_port,
        dport: udp.dst_port,
    };
    Ok((rx, note))
}

/// Validates a received datagram `d` (the whole IPv6 datagram, its UDP
/// header at `l4`, after the extension headers ipd walked): IPv6 header,
/// UDP header, lengths, and the checksum, which must not be zero (RFC
/// 8200 §8.1) and is verified unless `trusted` (then the second value
/// says so).
fn parse_udp6(d: &[u8], l4: usize, trusted: bool) -> Result<(Rx, Option<Stat>), Stat> {
    let ip = Ipv6Header::parse(d).map_err(|_| Stat::IpMalformed)?;
    let total = Ipv6Header::LEN + usize::from(ip.payload_len);
    let seg = upper6(d, &ip, l4, next_header::UDP)?;
    let (src, dst) = addrs6(&ip)?;
    let udp = UdpHeader::parse(seg).map_err(udp_stat)?;
    let len = usize::from(udp.length);
    // RFC 8200 §8.1: IPv6 receivers discard UDP packets with a zero
    // checksum, whoever vouches for the rest (Linux checks it after any
    // offload too).
    let note = if udp.checksum == 0 {
        return Err(Stat::Udp6ZeroChecksum);
    } else if trusted {
        Some(Stat::CsumTrusted)
    } else if UdpHeader::verify_checksum_v6(&seg[..len], ip.src, ip.dst) {
        None
    } else {
        return Err(Stat::UdpBadChecksum);
    };
    let rx = Rx {
        l4,
        total,
        len,
        src,
        dst,
        sport: udp.src_port,
        dport: udp.dst_port,
    };
    Ok((rx, note))
}

/// The upper-layer part of IPv6 datagram `d` with header `ip`, from `l4`
/// (where ipd found the `proto` header) to the end of its payload. With
/// no extension headers the fixed header must name `proto` itself; past
/// them, ipd's walk is trusted.
fn upper6<'a>(d: &'a [u8], ip: &Ipv6Header, l4: usize, proto: u8) -> Result<&'a [u8], Stat> {
    if l4 == Ipv6Header::LEN && ip.next_header != proto {
        return Err(Stat::WrongProtocol);
    }
    let end = Ipv6Header::LEN + usize::from(ip.payload_len);
    if l4 < Ipv6Header::LEN {
        return Err(Stat::IpMalformed);
    }
    d.get(l4..end).ok_or(Stat::IpMalformed)
}

/// The source and destination of IPv6 header `ip` as the core keeps
/// addresses; IPv4-mapped ones are refused: they never appear on the wire
/// (RFC 4291 §2.5.5.2), and here they would pass for IPv4 peers.
fn addrs6(ip: &Ipv6Header) -> Result<(u128, u128), Stat> {
    let (src, dst) = (u128::from(ip.src), u128::from(ip.dst));
    if unmapped(src).is_some() || unmapped(dst).is_some() {
        return Err(Stat::Ip6MappedAddress);
    }
    Ok((src, dst))
}

/// Reads an ICMP error `d` (the whole IPv4 datagram) about a UDP datagram
/// we sent.
fn parse_icmp(d: &[u8]) -> Result<IcmpErr, Stat> {
    let ip = Ipv4Header::parse(d).map_err(|_| Stat::IpMalformed)?;
    if ip.protocol != protocol::ICMP {
        return Err(Stat::WrongProtocol);
    }
    if ip.is_fragment() {
        return Err(Stat::IpFragment);
    }
    let msg = &d[usize::from(ip.header_len)..usize::from(ip.total_len)];
    let icmp = IcmpHeader::parse(msg).map_err(|_| Stat::IcmpMalformed)?;
    // The errno, and whether Linux calls it hard (reported to a connected
    // socket even without `IP_RECVERR`); types that carry nothing for a
    // socket are ignored. Fragmentation needed comes out soft (`EMSGSIZE`):
    // udpd never sets DF, which is Linux's `IP_PMTUDISC_DONT`, under which
    // Linux ignores it.
    let SocketError { errno, hard } =
        icmp::socket_error(icmp.icmp_type, icmp.code).ok_or(Stat::IcmpIgnoredType)?;
    let q = QuotedDatagram::parse(&msg[IcmpHeader::LEN..]).map_err(|_| Stat::IcmpMalformed)?;
    if q.protocol != protocol::UDP {
        return Err(Stat::IcmpMalformed);
    }
    Ok(IcmpErr {
        errno,
        hard,
        local: mapped(u32::from(q.src)),
        remote: mapped(u32::from(q.dst)),
        lport: q.src_port(),
        rport: q.dst_port(),
    })
}

/// Reads an ICMPv6 error `d` (the whole IPv6 datagram, the ICMPv6 message
/// at `l4`, its checksum verified by ipd) about a UDP datagram we sent.
fn parse_icmp6(d: &[u8], l4: usize) -> Result<IcmpErr, Stat> {
    let ip = Ipv6Header::parse(d).map_err(|_| Stat::IpMalformed)?;
    let msg = upper6(d, &ip, l4, next_header::ICMPV6)?;
    let (ty, code) = match msg {
        [ty, code, _, _, _, _, _, _, ..] => (*ty, *code),
        _ => return Err(Stat::IcmpMalformed),
    };
    // Linux `icmpv6_err_convert`; informational messages mean nothing.
    let SocketError { errno, mut hard } =
        icmpv6::socket_error(ty, code).ok_or(Stat::IcmpIgnoredType)?;
    // `__udp6_lib_err`: packet too big is hard to a socket doing path MTU
    // discovery, Linux's default (`IPV6_PMTUDISC_WANT`), which is what
    // udpd's sockets get: ipd fragments them to the path MTU.
    if ty == icmpv6_type::PACKET_TOO_BIG {
        hard = true;
    }
    let (local, remote, ports) = quoted_udp6(&msg[Icmpv6Header::LEN..])?;
    Ok(IcmpErr {
        errno,
        hard,
        local,
        remote,
        lport: u16::from_be_bytes([ports[0], ports[1]]),
        rport: u16::from_be_bytes([ports[2], ports[3]]),
    })
}

/// The source, destination and first 8 bytes of the UDP header of the
/// IPv6 packet an ICMPv6 error quotes (RFC 4443 §2.4 (c): as much as fits,
/// usually cut short): its UDP header follows the fixed header directly,
/// or a fragment header of a first fragment (ipd fragments large
/// datagrams at the source, RFC 8200 §4.5). Anything else quotes no UDP
/// header we can read.
fn quoted_udp6(quote: &[u8]) -> Result<(u128, u128, [u8; 8]), Stat> {
    let q = Ipv6Header::parse_quoted(quote).map_err(|_| Stat::IcmpMalformed)?;
    let rest = quote.get(Ipv6Header::LEN..).unwrap_or(&[]);
    let udp = match q.next_header {
        next_header::UDP => rest,
        next_header::FRAGMENT => {
            let f = FragmentHeader::parse(rest).map_err(|_| Stat::IcmpMalformed)?;
            if f.offset != 0 || f.next_header != next_header::UDP {
                return Err(Stat::IcmpMalformed);
            }
            rest.get(FragmentHeader::LEN..).unwrap_or(&[])
        }
        _ => return Err(Stat::IcmpMalformed),
    };
    let mut ports = [0u8; 8];
    ports.copy_from_slice(udp.get(..UdpHeader::LEN).ok_or(Stat::IcmpMalformed)?);
    let (local, remote) = addrs6(&q)?;
    Ok((local, remote, ports))
}
