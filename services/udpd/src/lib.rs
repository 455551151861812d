//! The protocol core of udpd, strata's UDP layer (RFC 768, RFC 1122
//! §4.1): bindings to explicit and ephemeral ports with Linux's
//! SO_REUSEADDR rules, connected and unconnected sockets, demultiplexing
//! with Linux's scoring, checksum verification and generation, port
//! unreachable for closed ports (sent by ipd), and ICMP errors surfaced to
//! connected sockets.
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

use strata_ipc::addrs::{mapped, unmapped};
use strata_ipc::handle::{csum, flags};
use strata_ipc::l4::{ctl_flags, op, L4Ctl, SendMeta, L4CTL_LEN, SEND_META_LEN};
use strata_ipc::{BufError, Buffers, Handle};
use strata_proto::ethernet::ethertype;
use strata_proto::icmp::{self, IcmpHeader, QuotedDatagram, SocketError};
use strata_proto::ipv4::{protocol, Ipv4Header};
use strata_proto::udp::{UdpError, UdpHeader};

pub use config::{ConfigError, IfaceAddrs, RouteInfo, UdpConfig, DEFAULT_EPHEMERAL};
pub use stats::{Stat, Stats};
pub use table::{bflags, Binding};

use config::Net;
use table::Table;

/// Largest UDP payload over IPv4: 65,535 − 20 (IPv4 header) − 8 (UDP
/// header).
pub const MAX_PAYLOAD: usize = 65507;
/// TTL of the datagrams udpd sends (Linux `ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;
/// IPv4 and UDP headers of a datagram udpd sends.
const HDRS: u32 = (Ipv4Header::MIN_LEN + UdpHeader::LEN) as u32;

/// What the core produced. The shell creates it once with
/// [`Outputs::with_capacity`], drains both vectors after each batch and
/// clears them, so no call allocates in steady state.
#[derive(Debug, Default)]
pub struct Outputs {
    /// For ipd: complete IPv4 datagrams to send (data window = the
    /// datagram, `l3_off` 0, `l4_off` 20, `l4proto` UDP), and received
    /// datagrams to answer with port unreachable (`flags` has
    /// [`ICMP_PORT_UNREACH`](strata_ipc::handle::flags::ICMP_PORT_UNREACH),
    /// data window = the received IPv4 datagram, `l3_off` 0).
    pub to_ip: Vec<Handle>,
    /// For sockd: received datagrams (data window = the whole IPv4
    /// datagram, ending where the UDP length says; `l4_off` at the UDP
    /// header; `sock` set) and control messages (`flags` has
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

/// A received datagram's addresses and sizes, read once.
#[derive(Clone, Copy, Debug)]
struct Rx {
    /// IPv4 header length.
    hl: usize,
    /// IPv4 total length.
    total: usize,
    /// UDP length (header and payload).
    len: usize,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
}

/// What an ICMP error says about one of our datagrams.
#[derive(Clone, Copy, Debug)]
struct IcmpErr {
    errno: i32,
    /// Linux's `fatal` (hard error): reported without `IP_RECVERR`.
    hard: bool,
    /// Our address and port as the quoted datagram carried them.
    local: u32,
    lport: u16,
    /// The peer's address and port.
    remote: u32,
    rport: u16,
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

    /// Takes the interfaces' addresses and the routes of `cfg` at run
    /// time (`strata addr`, `route`): binds, sources and broadcasts are
    /// judged by them from now on; existing bindings stay. On error the
    /// old ones stay in force.
    pub fn set_addresses(&mut self, cfg: &UdpConfig) -> Result<(), ConfigError> {
        self.net = Net::new(cfg)?;
        Ok(())
    }

    /// Takes a handle from ipd: a UDP datagram (`l4proto` UDP) or an ICMP
    /// error quoting one (`l4proto` ICMP); data window = the whole IPv4
    /// datagram. The core owns `h` from here.
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
            _ => self.drop(pool, &h, Stat::WrongProtocol),
        }
    }

    /// Takes a handle from sockd: a control request (`flags` has
    /// [`CTRL`](strata_ipc::handle::flags::CTRL)), answered in
    /// `out.to_sock` except [`op::CLOSE`]; or a payload to send, preceded
    /// by a [`SendMeta`], which leaves as a complete IPv4 datagram in
    /// `out.to_ip` (after an implicit bind, announced with [`op::BOUND`],
    /// if the socket was unbound).
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
            if r.remote_addr == 0 {
                r.remote_port = 0;
            }
            let ok = r.local_port != 0
                && r.flags & !bflags::ALL == 0
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

    fn udp_input<B: Buffers>(&mut self, pool: &mut B, mut h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::InDatagrams);
        let trusted = h.csum == csum::PARTIAL || h.csum == csum::VERIFIED;
        let parsed = match pool.data(&h) {
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
        h.l4_off = rx.hl as u16;
        h.flags = 0;
        h.sock = 0;
        if self.net.is_group(rx.dst) {
            self.stats.inc(Stat::InBroadcast);
            h.data_len = (rx.hl + rx.len) as u32;
            // Every matching socket gets the datagram (Linux
            // `__udp4_lib_mcast_deliver`), each through its own reference
            // to the one buffer.
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
            return;
        }
        match self.table.lookup(rx.dst, rx.dport, rx.src, rx.sport) {
            Some(b) => {
                h.sock = b.sock;
                h.data_len = (rx.hl + rx.len) as u32;
                self.stats.inc(Stat::Delivered);
                out.to_sock.push(h);
            }
            None => {
                // ipd answers it with port unreachable, quoting it whole.
                self.stats.inc(Stat::NoPort);
                h.data_len = rx.total as u32;
                h.flags = flags::ICMP_PORT_UNREACH;
                out.to_ip.push(h);
            }
        }
    }

    fn icmp_input<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::IcmpInErrors);
        let parsed = match pool.data(&h) {
            Ok(d) => parse_icmp(d),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let e = match parsed {
            Ok(e) => e,
            Err(s) => return self.drop(pool, &h, s),
        };
        // Linux `__udp4_lib_err`: the socket that sent the quoted datagram
        // is the one a reply to it would reach.
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

    /// `bind()`: Linux `inet_bind` + `udp_v4_get_port`.
    fn bind(&mut self, m: &L4Ctl) -> Result<(), i32> {
        // IPv4 only, so far: sockd sends nothing else.
        let local = m.local_v4().ok_or(libc::EAFNOSUPPORT)?;
        if m.flags & ctl_flags::REPEAT != 0 {
            if let Some(b) = self.table.get(m.sock) {
                // sockd sent it again: the first took effect before the
                // reply was lost (with a udpd that died).
                if (m.local_port == 0 || b.local_port == m.local_port)
                    && (local == 0 || b.local_addr == local)
                {
                    return Ok(());
                }
            }
        }
        if self.table.get(m.sock).is_some() {
            self.stats.inc(Stat::BindInvalid);
            return Err(libc::EINVAL);
        }
        if !self.net.bindable(local) {
            self.stats.inc(Stat::BindAddrNotAvail);
            return Err(libc::EADDRNOTAVAIL);
        }
        let reuse = reuse_bits(m.flags);
        let port = if m.local_port != 0 {
            if self.table.conflicts(local, m.local_port, reuse) {
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
        let mut fl = reuse;
        if m.local_port != 0 {
            fl |= bflags::PORT_LOCK;
        }
        if local != 0 {
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
    /// `ip4_datagram_connect` (local address from the route), or
    /// `__udp_disconnect` for a zero address.
    fn connect(&mut self, m: &L4Ctl) -> Result<(), i32> {
        let remote = m.remote_v4().ok_or(libc::EAFNOSUPPORT)?;
        if remote == 0 {
            self.stats.inc(Stat::Disconnects);
            let Some(b) = self.table.get_mut(m.sock) else {
                return Ok(());
            };
            b.remote_addr = 0;
            b.remote_port = 0;
            if b.flags & bflags::ADDR_LOCK == 0 {
                b.local_addr = 0;
            }
            if b.flags & bflags::PORT_LOCK == 0 {
                self.table.remove(m.sock);
            }
            self.changed = true;
            return Ok(());
        }
        if self.table.get(m.sock).is_none() {
            let Some(port) = self.ephemeral_port() else {
                self.stats.inc(Stat::ConnectNoPort);
                return Err(libc::EAGAIN);
            };
            // An autobound socket keeps its reuse options for later
            // binds of the port by others.
            self.insert(Binding {
                sock: m.sock,
                local_port: port,
                flags: reuse_bits(m.flags),
                ..Binding::default()
            })?;
        }
        let src = self.net.source_for(remote);
        if let Some(b) = self.table.get_mut(m.sock) {
            if b.local_addr == 0 {
                b.local_addr = src;
            }
            b.remote_addr = remote;
            b.remote_port = m.remote_port;
        }
        self.changed = true;
        self.stats.inc(Stat::Connects);
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
        // `::` and `0.0.0.0` both name the connected peer; IPv6 ones are
        // not sent yet.
        let to = if meta.addr == 0 {
            Some(0)
        } else {
            unmapped(meta.addr)
        };
        let (dst, dport) = match (to, bound) {
            (Some(0), Some(b)) if b.connected() => (b.remote_addr, b.remote_port),
            (Some(0) | None, _) => return self.drop(pool, &h, Stat::OutNoDestination),
            (Some(a), _) => (a, meta.port),
        };
        if dport == 0 {
            return self.drop(pool, &h, Stat::OutBadPort);
        }
        let b = match bound {
            Some(b) => b,
            None => match self.implicit_bind(pool, h.sock, out) {
                Ok(b) => b,
                Err(s) => return self.drop(pool, &h, s),
            },
        };
        // A socket bound to one of our addresses sends from it; one bound
        // to any (or to a broadcast address) from the address routing
        // would choose, so the checksum is final here.
        let src = if self.net.is_local(b.local_addr) {
            b.local_addr
        } else {
            self.net.source_for(dst)
        };
        h.pull_front(SEND_META_LEN as u32);
        if !h.push_front(HDRS) {
            return self.drop(pool, &h, Stat::OutNoHeadroom);
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
        let udp = UdpHeader {
            src_port: b.local_port,
            dst_port: dport,
            length: 0,
            checksum: 0,
        };
        let ok = match pool.data_mut(&h) {
            Ok(d) => {
                ip.emit(d).is_ok()
                    && udp
                        .emit(&mut d[Ipv4Header::MIN_LEN..], src.into(), dst.into())
                        .is_ok()
            }
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        if !ok {
            return self.drop(pool, &h, Stat::BadWindow);
        }
        let mut o = Handle::new(h.buf, h.gen, h.data_off);
        o.data_len = h.data_len;
        o.l3_off = 0;
        o.l4_off = Ipv4Header::MIN_LEN as u16;
        o.l4proto = protocol::UDP;
        o.ethertype = ethertype::IPV4;
        o.tstamp = h.tstamp;
        self.stats.inc(Stat::OutDatagrams);
        out.to_ip.push(o);
    }

    /// Binds unbound `sock` to an ephemeral port for its first send and
    /// tells sockd with [`op::BOUND`]. The notification's buffer is taken
    /// first, so a socket is never bound without sockd hearing of it.
    fn implicit_bind<B: Buffers>(
        &mut self,
        pool: &mut B,
        sock: u32,
        out: &mut Outputs,
    ) -> Result<Binding, Stat> {
        let note = pool.alloc(L4CTL_LEN).ok_or(Stat::PoolExhausted)?;
        let port = self.ephemeral_port();
        let b = port.map(|p| Binding {
            sock,
            local_port: p,
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

    /// Writes control message `m` into `h`'s buffer (which holds at least
    /// [`L4CTL_LEN`] bytes from its data offset: a request, an ICMP error
    /// or a fresh buffer) and queues it for sockd.
    fn write_ctl<B: Buffers>(&mut self, pool: &mut B, h: &Handle, m: &L4Ctl, out: &mut Outputs) {
        let mut c = Handle::new(h.buf, h.gen, h.data_off);
        c.data_len = L4CTL_LEN as u32;
        c.flags = flags::CTRL;
        c.sock = m.sock;
        c.l4proto = protocol::UDP;
        match pool.data_mut(&c) {
            Ok(d) => d.copy_from_slice(&m.to_bytes()),
            Err(e) => return self.bad_handle(pool, &c, e),
        }
        out.to_sock.push(c);
    }

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
}

/// A message `op` about `sock` carrying its binding's addresses (zeros when
/// unbound).
fn state_msg(op: u32, sock: u32, b: Option<&Binding>) -> L4Ctl {
    let mut m = L4Ctl {
        op,
        sock,
        ..L4Ctl::default()
    };
    if let Some(b) = b {
        m.local_addr = mapped(b.local_addr);
        m.local_port = b.local_port;
        m.remote_addr = mapped(b.remote_addr);
        m.remote_port = b.remote_port;
        if b.flags & bflags::REUSEADDR != 0 {
            m.flags |= ctl_flags::REUSEADDR;
        }
        if b.flags & bflags::REUSEPORT != 0 {
            m.flags |= ctl_flags::REUSEPORT;
        }
    }
    m
}

/// The [`bflags`] for the reuse options of a BIND or CONNECT.
fn reuse_bits(flags: u32) -> u32 {
    strata_ipc::l4::reuse_options(flags, bflags::REUSEADDR, bflags::REUSEPORT)
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
        hl,
        total,
        len,
        src: u32::from(ip.src),
        dst: u32::from(ip.dst),
        sport: udp.src_port,
        dport: udp.dst_port,
    };
    Ok((rx, note))
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
        local: u32::from(q.src),
        remote: u32::from(q.dst),
        lport: q.src_port(),
        rport: q.dst_port(),
    })
}
