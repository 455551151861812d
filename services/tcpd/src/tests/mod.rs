//! The deterministic harness: scripted segments in (built with proto's
//! `TcpHeader::emit` into [`HeapPool`] buffers, over IPv4 or IPv6),
//! segments out (parsed back and checked), sockd's side played by the
//! test, and a fake clock. Every scenario ends with the pool back at its
//! baseline.

mod bulk;
pub mod crash;
mod data;
mod flow;
mod handshake;
mod ipv6;
mod limits;
mod listen;
mod prop;
mod recovery;
mod repeats;
mod restore;
mod states;
mod timers;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strata_ipc::addrs::from_ip;
pub use strata_ipc::addrs::mapped;
use strata_ipc::handle::{csum, flags, gso};
use strata_ipc::l4::{op, tcp_opt, L4Ctl, ReadCredit, SendCredit};
use strata_ipc::{Buffers, Handle, HeapPool};
use strata_proto::ethernet::ethertype;
use strata_proto::ipv4::{protocol, Ipv4Header};
use strata_proto::ipv6::{next_header, Ipv6Header};
use strata_proto::offload::{complete_checksum, segment_tcp4};
use strata_proto::tcp::{TcpFlags, TcpHeader, TcpOptions};

use crate::block::{ConnBlock, SegEntry, Storage, UndoRec};
use crate::{IfaceAddrs, Outputs, State, TcpConfig, TcpCore};

pub const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Our IPv6 address (2001:db8::1/64, on the interface of [`LOCAL`]).
pub const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The IPv6 peer, on our prefix.
pub const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The interface's MAC (its link-local address is fe80::ff:fe00:1).
pub const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LPORT: u16 = 80;
pub const PPORT: u16 = 40000;
/// The peer's ISN in scripts.
pub const PISS: u32 = 1_000_000;
pub const MS: u64 = 1_000_000;

pub const SYN: TcpFlags = TcpFlags::SYN;
pub const ACK: TcpFlags = TcpFlags::ACK;
pub const FIN: TcpFlags = TcpFlags::FIN;
pub const RST: TcpFlags = TcpFlags::RST;
pub const PSH: TcpFlags = TcpFlags::PSH;

pub fn u(a: Ipv4Addr) -> u32 {
    u32::from(a)
}

/// One interface 10.0.0.1/24 and 2001:db8::1/64 (MTU 1500), ephemeral
/// ports 50000-50099, 64 KiB socket buffers, short timers where tests
/// need them.
pub fn config() -> TcpConfig {
    TcpConfig {
        ifaces: vec![IfaceAddrs {
            index: 1,
            mtu: 1500,
            addrs: vec![(LOCAL, 24)],
            addrs6: vec![(LOCAL6, 64)],
            mac: MAC,
        }],
        ephemeral_ports: (50000, 50099),
        socket_rx_bytes: 65536,
        socket_tx_bytes: 65536,
        secret: [0x1111, 0x2222],
        seed: 7,
        max_conns: 64,
        ..TcpConfig::default()
    }
}

/// Storage that lives for the test (leaked: tests are short-lived).
pub fn storage(conns: usize, segs: usize) -> Storage<'static> {
    Storage {
        conns: Box::leak(vec![ConnBlock::default(); conns].into_boxed_slice()),
        segs: Box::leak(vec![SegEntry::default(); segs].into_boxed_slice()),
        journal: Box::leak(Box::default()),
        undo: Box::leak(vec![UndoRec::default(); segs].into_boxed_slice()),
    }
}

/// A segment tcpd sent, parsed back.
#[derive(Clone, Debug)]
pub struct Seg {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IPv6 header, for a segment sent over IPv6.
    pub ip6: Option<Ipv6Header>,
    pub tcp: TcpHeader,
    pub opts: TcpOptions,
    pub payload: Vec<u8>,
}

impl Seg {
    pub fn flags(&self) -> TcpFlags {
        self.tcp.flags
    }
    pub fn seq(&self) -> u32 {
        self.tcp.seq
    }
    pub fn ack(&self) -> u32 {
        self.tcp.ack
    }
    pub fn len(&self) -> u32 {
        self.payload.len() as u32
    }
}

/// Something tcpd sent to sockd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Up {
    Ctl(L4Ctl),
    Data { sock: u32, bytes: Vec<u8> },
}

/// What a device without offloads puts on the wire for datagram `h`
/// from tcpd, as driverd does: a super-segment cut into its segments,
/// each with its checksum completed (software GSO), or the datagram (or
/// IPv6 packet, never a super-segment) with a partial checksum
/// completed.
pub fn on_the_wire(pool: &HeapPool, h: &Handle) -> Vec<Vec<u8>> {
    let d = pool.data(h).expect("reachable");
    let v6 = h.ethertype == ethertype::IPV6;
    let mut frame = vec![0u8; 14];
    frame[12..14].copy_from_slice(&h.ethertype.to_be_bytes());
    frame.extend_from_slice(d);
    if v6 {
        assert_eq!(h.gso_type, gso::NONE, "no IPv6 super-segments");
    }
    if h.gso_type == gso::TCPV4 && h.gso_size > 0 {
        assert_eq!(
            h.csum,
            csum::PARTIAL,
            "a super-segment's checksum is partial"
        );
        return segment_tcp4(&frame, h.gso_size)
            .expect("a valid super-segment")
            .map(|s| {
                let mut v = s.headers()[14..].to_vec();
                v.extend_from_slice(s.payload);
                v
            })
            .collect();
    }
    if h.csum == csum::PARTIAL {
        let l4 = 14 + usize::from(h.l4_off);
        complete_checksum(&mut frame, l4, 16).expect("room for the checksum");
    }
    vec![frame.split_off(14)]
}

/// Parses a datagram tcpd sent, checking what ipd relies on; a
/// super-segment becomes the segments a device would send.
pub fn parse_out(pool: &HeapPool, h: &Handle) -> Vec<Seg> {
    assert_eq!(h.l4proto, protocol::TCP);
    assert_eq!(h.l3_off, 0);
    let d = pool.data(h).unwrap();
    let whole = if h.ethertype == ethertype::IPV6 {
        assert_eq!(h.l4_off, 40);
        40 + usize::from(Ipv6Header::parse(d).unwrap().payload_len)
    } else {
        assert_eq!(h.ethertype, ethertype::IPV4);
        assert_eq!(h.l4_off, 20);
        usize::from(Ipv4Header::parse(d).unwrap().total_len)
    };
    assert_eq!(whole, h.data_len as usize);
    on_the_wire(pool, h).iter().map(|d| parse_seg(d)).collect()
}

/// Parses one IPv4 datagram or IPv6 packet carrying a TCP segment,
/// checking it is complete and final.
pub fn parse_seg(d: &[u8]) -> Seg {
    if d[0] >> 4 == 6 {
        return parse_seg6(d);
    }
    let ip = Ipv4Header::parse(d).expect("valid IPv4");
    assert_eq!(usize::from(ip.total_len), d.len());
    assert_eq!(ip.protocol, protocol::TCP);
    assert!(ip.dont_frag, "DF set");
    assert_eq!(ip.ttl, 64);
    assert_ne!(u32::from(ip.src), 0);
    let seg = &d[20..];
    assert!(
        TcpHeader::verify_checksum(seg, ip.src, ip.dst),
        "TCP checksum final"
    );
    let (tcp, opts) = TcpHeader::parse(seg).expect("valid TCP");
    Seg {
        src: ip.src.into(),
        dst: ip.dst.into(),
        ip6: None,
        tcp,
        opts,
        payload: seg[usize::from(tcp.header_len)..].to_vec(),
    }
}

/// [`parse_seg`] for an IPv6 packet: a 40-byte header (version 6,
/// traffic class 0, hop limit 64, next header TCP, no extension
/// headers), the checksum over the IPv6 pseudo-header.
pub fn parse_seg6(d: &[u8]) -> Seg {
    let ip = Ipv6Header::parse(d).expect("valid IPv6");
    assert_eq!(40 + usize::from(ip.payload_len), d.len());
    assert_eq!(ip.next_header, next_header::TCP);
    assert_eq!((ip.traffic_class, ip.hop_limit), (0, 64));
    assert!(!ip.src.is_unspecified());
    let seg = &d[40..];
    assert!(
        TcpHeader::verify_checksum_v6(seg, ip.src, ip.dst),
        "TCP checksum final (IPv6 pseudo-header)"
    );
    let (tcp, opts) = TcpHeader::parse(seg).expect("valid TCP");
    Seg {
        src: ip.src.into(),
        dst: ip.dst.into(),
        ip6: Some(ip),
        tcp,
        opts,
        payload: seg[usize::from(tcp.header_len)..].to_vec(),
    }
}

/// Builds an IPv4 datagram or IPv6 packet (as the addresses are)
/// carrying a TCP segment.
#[allow(clippy::too_many_arguments)]
pub fn build_ip(
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    fl: TcpFlags,
    seq: u32,
    ack: u32,
    window: u16,
    opts: &TcpOptions,
    payload: &[u8],
) -> Vec<u8> {
    match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            build((s, src.1), (d, dst.1), fl, seq, ack, window, opts, payload)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            build6((s, src.1), (d, dst.1), fl, seq, ack, window, opts, payload)
        }
        _ => panic!("one family"),
    }
}

/// Builds an IPv6 packet carrying a TCP segment.
#[allow(clippy::too_many_arguments)]
pub fn build6(
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    fl: TcpFlags,
    seq: u32,
    ack: u32,
    window: u16,
    opts: &TcpOptions,
    payload: &[u8],
) -> Vec<u8> {
    let thl = TcpHeader::header_len_for(opts);
    let n = 40 + thl + payload.len();
    let mut d = vec![0u8; n];
    Ipv6Header {
        traffic_class: 0,
        flow_label: 0x1234,
        payload_len: (thl + payload.len()) as u16,
        next_header: next_header::TCP,
        hop_limit: 64,
        src: src.0,
        dst: dst.0,
    }
    .emit(&mut d)
    .unwrap();
    d[40 + thl..].copy_from_slice(payload);
    TcpHeader {
        src_port: src.1,
        dst_port: dst.1,
        seq,
        ack,
        header_len: 0,
        flags: fl,
        window,
        checksum: 0,
        urgent: 0,
    }
    .emit_v6(opts, &mut d[40..], src.0, dst.0)
    .unwrap();
    d
}

/// Builds an IPv4 datagram carrying a TCP segment.
#[allow(clippy::too_many_arguments)]
pub fn build(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    fl: TcpFlags,
    seq: u32,
    ack: u32,
    window: u16,
    opts: &TcpOptions,
    payload: &[u8],
) -> Vec<u8> {
    let thl = TcpHeader::header_len_for(opts);
    let n = 20 + thl + payload.len();
    let mut d = vec![0u8; n];
    Ipv4Header {
        header_len: 20,
        tos: 0,
        total_len: n as u16,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        ttl: 64,
        protocol: protocol::TCP,
        checksum: 0,
        src: src.0,
        dst: dst.0,
    }
    .emit(&mut d)
    .unwrap();
    d[20 + thl..].copy_from_slice(payload);
    TcpHeader {
        src_port: src.1,
        dst_port: dst.1,
        seq,
        ack,
        header_len: 0,
        flags: fl,
        window,
        checksum: 0,
        urgent: 0,
    }
    .emit(opts, &mut d[20..], src.0, dst.0)
    .unwrap();
    d
}

/// Puts bytes into a pool buffer as a handle from ipd: an IPv4 datagram
/// (`l4_off` 20, as the tests' datagrams have no options) or an IPv6
/// packet (`l4_off` 40, no extension headers, ethertype IPv6), as its
/// version nibble says.
pub fn ip_handle(pool: &mut HeapPool, bytes: &[u8], proto: u8) -> Handle {
    let mut h = pool.alloc(bytes.len()).expect("pool");
    h.data_len = bytes.len() as u32;
    pool.data_mut(&h).unwrap().copy_from_slice(bytes);
    h.l3_off = 0;
    if bytes.first().map(|b| b >> 4) == Some(6) {
        h.l4_off = 40;
        h.ethertype = ethertype::IPV6;
    } else {
        h.l4_off = 20;
    }
    h.l4proto = proto;
    h
}

/// A recognisable payload of `n` bytes.
pub fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ salt)
        .collect()
}

/// Peer-side options of a modern SYN (Linux's set).
pub fn syn_opts(ts: u32) -> TcpOptions {
    TcpOptions {
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        timestamp: Some((ts, 0)),
        ..TcpOptions::default()
    }
}

/// The core, its pool, its outputs parsed, and a fake clock.
pub struct H {
    pub core: TcpCore<'static>,
    pub pool: HeapPool,
    pub now: u64,
    pub out: Outputs,
    pub segs: VecDeque<Seg>,
    pub ups: VecDeque<Up>,
    /// Peer port of scripted segments.
    pub pport: u16,
    /// Our port of scripted segments.
    pub lport: u16,
    /// Peer window of scripted segments.
    pub pwin: u16,
    /// Peer timestamp value of scripted segments (None: no option).
    pub pts: Option<u32>,
    /// The peer's address in scripted segments ([`PEER`] or [`PEER6`]).
    pub paddr: IpAddr,
    /// Our address in scripted segments ([`LOCAL`] or [`LOCAL6`]).
    pub laddr: IpAddr,
    pub cfg: TcpConfig,
    req: u32,
    /// Stream bytes sent per socket so far (each send's offset).
    sent: std::collections::HashMap<u32, u32>,
}

impl H {
    pub fn new() -> H {
        H::with(config())
    }

    pub fn with(cfg: TcpConfig) -> H {
        H::with_storage(cfg, 64, 4096)
    }

    pub fn with_storage(cfg: TcpConfig, conns: usize, segs: usize) -> H {
        let core = TcpCore::new(cfg.clone(), storage(conns, segs)).expect("config");
        H {
            core,
            pool: HeapPool::new(4096, 64),
            now: 1_000_000_000,
            out: Outputs::with_capacity(64),
            segs: VecDeque::new(),
            ups: VecDeque::new(),
            pport: PPORT,
            lport: LPORT,
            pwin: 65535,
            pts: None,
            paddr: PEER.into(),
            laddr: LOCAL.into(),
            cfg,
            req: 0,
            sent: Default::default(),
        }
    }

    /// Drains the core's outputs into `segs` and `ups`, freeing buffers.
    pub fn collect(&mut self) {
        // (A heap pool has no pinned flag.)
        self.out.pin.clear();
        self.out.unpin.clear();
        for h in std::mem::take(&mut self.out.to_ip) {
            let s = parse_out(&self.pool, &h);
            self.pool.free(&h);
            self.segs.extend(s);
        }
        for h in std::mem::take(&mut self.out.to_sock) {
            if h.flags & flags::CTRL != 0 {
                let m = L4Ctl::from_handle(&self.pool, &h).unwrap().unwrap();
                assert_eq!(h.sock, m.sock);
                self.ups.push_back(Up::Ctl(m));
            } else {
                assert_eq!(h.l4proto, protocol::TCP);
                let bytes = self.pool.data(&h).unwrap().to_vec();
                self.ups.push_back(Up::Data {
                    sock: h.sock,
                    bytes,
                });
            }
            self.pool.free(&h);
        }
    }

    /// Moves the clock `ms` forward, running timers on the way (each
    /// deadline at its time).
    pub fn advance(&mut self, ms: u64) {
        let end = self.now + ms * MS;
        loop {
            let next = self.core.next_deadline();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.core.poll(self.now, &mut self.pool, &mut self.out);
                    self.collect();
                }
                _ => break,
            }
        }
        self.now = end;
        self.core.poll(self.now, &mut self.pool, &mut self.out);
        self.collect();
    }

    /// Sends a control request; returns the reply if one came.
    pub fn ctl(&mut self, mut m: L4Ctl) -> Option<L4Ctl> {
        self.req += 1;
        m.req = self.req;
        let h = m.to_handle(&mut self.pool).unwrap();
        self.core
            .from_sock(self.now, &mut self.pool, h, &mut self.out);
        self.collect();
        let pos = self.ups.iter().position(
            |u| matches!(u, Up::Ctl(r) if r.req == m.req && (r.op == op::OK || r.op == op::ERROR)),
        )?;
        match self.ups.remove(pos) {
            Some(Up::Ctl(r)) => Some(r),
            _ => None,
        }
    }

    pub fn bind(&mut self, sock: u32, port: u16) -> L4Ctl {
        self.ctl(L4Ctl {
            op: op::BIND,
            sock,
            local_addr: mapped(0),
            local_port: port,
            ..L4Ctl::default()
        })
        .unwrap()
    }

    pub fn listen(&mut self, sock: u32, port: u16, backlog: u64) {
        assert_eq!(self.bind(sock, port).op, op::OK);
        let r = self
            .ctl(L4Ctl {
                op: op::LISTEN,
                sock,
                value: backlog,
                ..L4Ctl::default()
            })
            .unwrap();
        assert_eq!(r.op, op::OK);
    }

    pub fn connect(&mut self, sock: u32, addr: Ipv4Addr, port: u16) -> L4Ctl {
        self.connect_to(sock, addr.into(), port)
    }

    /// CONNECT to an address of either family (as sockd sends it: IPv4
    /// mapped, from `0.0.0.0`; IPv6 from `::`).
    pub fn connect_to(&mut self, sock: u32, addr: IpAddr, port: u16) -> L4Ctl {
        let local_addr = match addr {
            IpAddr::V4(_) => mapped(0),
            IpAddr::V6(_) => 0,
        };
        self.ctl(L4Ctl {
            op: op::CONNECT,
            sock,
            local_addr,
            remote_addr: from_ip(addr),
            remote_port: port,
            ..L4Ctl::default()
        })
        .unwrap()
    }

    pub fn req(&mut self, o: u32, sock: u32, value: u64) {
        let r = self.ctl(L4Ctl {
            op: o,
            sock,
            value,
            ..L4Ctl::default()
        });
        assert!(r.is_none(), "no reply expected for op {o}");
    }

    pub fn setopt(&mut self, sock: u32, opt: u32, value: u64) {
        let r = self.ctl(L4Ctl {
            op: op::SETOPT,
            sock,
            flags: opt,
            value,
            ..L4Ctl::default()
        });
        assert!(r.is_none());
    }

    pub fn nodelay(&mut self, sock: u32) {
        self.setopt(sock, tcp_opt::NODELAY, 1);
    }

    /// Stream bytes from sockd for `sock`.
    pub fn send(&mut self, sock: u32, bytes: &[u8]) {
        let mut h = self.pool.alloc(bytes.len()).unwrap();
        h.data_len = bytes.len() as u32;
        h.sock = sock;
        let off = self.sent.entry(sock).or_insert(0);
        h.stream_off = *off;
        *off = off.wrapping_add(h.data_len);
        self.pool.data_mut(&h).unwrap().copy_from_slice(bytes);
        self.core
            .from_sock(self.now, &mut self.pool, h, &mut self.out);
        self.collect();
    }

    /// The peer sends a segment to us.
    pub fn peer(&mut self, fl: TcpFlags, seq: u32, ack: u32, payload: &[u8]) {
        let mut o = TcpOptions::default();
        if let Some(ts) = self.pts {
            o.timestamp = Some((ts, 0));
        }
        self.peer_opts(fl, seq, ack, payload, o);
    }

    /// The peer sends a segment with options.
    pub fn peer_opts(
        &mut self,
        fl: TcpFlags,
        seq: u32,
        ack: u32,
        payload: &[u8],
        opts: TcpOptions,
    ) {
        let d = build_ip(
            (self.paddr, self.pport),
            (self.laddr, self.lport),
            fl,
            seq,
            ack,
            self.pwin,
            &opts,
            payload,
        );
        self.inject(&d);
    }

    /// Raw bytes from ipd.
    pub fn inject(&mut self, d: &[u8]) {
        let h = ip_handle(&mut self.pool, d, protocol::TCP);
        self.core
            .from_ip(self.now, &mut self.pool, h, &mut self.out);
        self.collect();
    }

    /// The next segment tcpd sent; its flags must be exactly `fl`
    /// (ignoring PSH).
    #[track_caller]
    pub fn expect(&mut self, fl: TcpFlags) -> Seg {
        let Some(s) = self.segs.pop_front() else {
            panic!("expected a {fl} segment, none sent");
        };
        let got = TcpFlags(s.flags().0 & !PSH.0);
        assert_eq!(got, fl, "segment flags (seq {} len {})", s.seq(), s.len());
        s
    }

    #[track_caller]
    pub fn expect_none(&mut self) {
        assert!(self.segs.is_empty(), "unexpected segments: {:?}", self.segs);
    }

    /// The next control message to sockd; it must be `o`.
    #[track_caller]
    pub fn expect_up(&mut self, o: u32) -> L4Ctl {
        // SEND_CREDIT comes often and is checked on its own: skipped
        // unless asked for.
        let Some(pos) = self
            .ups
            .iter()
            .position(|u| matches!(u, Up::Ctl(m) if m.op == o || m.op != op::SEND_CREDIT))
        else {
            panic!("expected op {o} for sockd, got {:?}", self.ups);
        };
        match self.ups.remove(pos) {
            Some(Up::Ctl(m)) => {
                assert_eq!(m.op, o, "op to sockd: {m:?}");
                m
            }
            _ => unreachable!(),
        }
    }

    #[track_caller]
    pub fn no_ctl_up(&self) {
        assert!(
            !self
                .ups
                .iter()
                .any(|u| matches!(u, Up::Ctl(m) if m.op != op::SEND_CREDIT)),
            "unexpected control for sockd: {:?}",
            self.ups
        );
    }

    /// Every payload byte delivered to `sock` so far (taken).
    pub fn data_for(&mut self, sock: u32) -> Vec<u8> {
        let mut v = Vec::new();
        let mut rest = VecDeque::new();
        for u in self.ups.drain(..) {
            match u {
                Up::Data { sock: s, bytes } if s == sock => v.extend(bytes),
                other => rest.push_back(other),
            }
        }
        self.ups = rest;
        v
    }

    pub fn state_of(&self, sock: u32) -> Option<State> {
        self.core.connection_of(sock).map(|c| c.state)
    }

    /// The single connection that is not a listener.
    #[track_caller]
    pub fn conn(&self) -> crate::ConnInfo {
        let v: Vec<_> = self
            .core
            .connections()
            .filter(|c| c.state != State::Listen && c.remote.0 != 0)
            .collect();
        assert_eq!(v.len(), 1, "{v:?}");
        v[0]
    }

    /// Passive open on listener socket 1 (port 80): the peer's SYN (with
    /// `opts`), our SYN-ACK, its ACK, ACCEPTABLE, ATTACH as socket `sock`.
    /// Returns our ISN.
    pub fn accept(&mut self, sock: u32, opts: TcpOptions) -> u32 {
        self.peer_opts(SYN, PISS, 0, &[], opts);
        let sa = self.expect(SYN | ACK);
        assert_eq!(sa.ack(), PISS + 1);
        let iss = sa.seq();
        self.peer(ACK, PISS + 1, iss + 1, &[]);
        let a = self.expect_up(op::ACCEPTABLE);
        assert_eq!(a.sock, 1);
        assert_eq!(
            (a.remote_addr, a.remote_port),
            (from_ip(self.paddr), self.pport)
        );
        self.ctl(L4Ctl {
            op: op::ATTACH,
            sock,
            value: a.value,
            ..L4Ctl::default()
        });
        iss
    }

    /// Listener on port 80 (socket 1) and an accepted connection as
    /// socket 2, with no options: MSS 536 both ways unless given.
    pub fn established(opts: TcpOptions) -> (H, u32) {
        let mut h = H::new();
        h.listen(1, LPORT, 16);
        let iss = h.accept(2, opts);
        (h, iss)
    }

    /// Active open from socket 5 to the peer: CONNECT, SYN, the peer's
    /// SYN-ACK (with `opts`), our ACK, CONNECTED. Returns (our ISN, our
    /// port).
    pub fn connected(&mut self, opts: TcpOptions) -> (u32, u16) {
        let r = self.connect_to(5, self.paddr, 443);
        assert_eq!(r.op, op::OK);
        let syn = self.expect(SYN);
        self.lport = syn.tcp.src_port;
        self.pport = 443;
        self.peer_opts(SYN | ACK, PISS, syn.seq() + 1, &[], opts);
        let a = self.expect(ACK);
        assert_eq!(a.ack(), PISS + 1);
        let c = self.expect_up(op::CONNECTED);
        assert_eq!((c.remote_addr, c.remote_port), (from_ip(self.paddr), 443));
        (syn.seq(), syn.tcp.src_port)
    }

    /// Simulates a restart of tcpd: the core is dropped, a new one
    /// restores from the same storage (and pool). `corrupt` breaks the
    /// block of that socket (its self-index), which restore must then not
    /// trust. Returns how many blocks were kept.
    pub fn restart(&mut self, corrupt: Option<u32>) -> usize {
        self.restart_with(|st| {
            if let Some(sock) = corrupt {
                let c = st
                    .conns
                    .iter_mut()
                    .find(|c| c.in_use() && c.sock == sock)
                    .unwrap();
                c.index = u32::MAX;
            }
        })
    }

    /// [`H::restart`] after `tamper` has had the storage.
    pub fn restart_with(&mut self, tamper: impl FnOnce(&mut crate::Storage<'_>)) -> usize {
        let placeholder = TcpCore::new(self.cfg.clone(), storage(1, 1)).unwrap();
        let old = std::mem::replace(&mut self.core, placeholder);
        let mut st = old.into_storage();
        tamper(&mut st);
        let (core, kept) = TcpCore::restore(
            self.cfg.clone(),
            st,
            self.now,
            &mut self.pool,
            &mut self.out,
        )
        .unwrap();
        self.core = core;
        self.collect();
        kept
    }

    /// Closes every socket with ABORT, runs every timer out, and checks
    /// the pool is back at its baseline and every block free.
    pub fn finish(mut self) {
        let socks: Vec<u32> = self
            .core
            .connections()
            .map(|c| c.sock)
            .filter(|&s| s != 0)
            .collect();
        for s in socks {
            self.req(op::ABORT, s, 0);
        }
        self.advance(10 * 60 * 1000);
        self.segs.clear();
        self.ups.clear();
        assert_eq!(
            self.core.conns_in_use(),
            0,
            "{:?}",
            self.core.connections().collect::<Vec<_>>()
        );
        assert_eq!(self.core.entries_in_use(), 0);
        assert_eq!(self.pool.in_use(), 0, "buffers leaked");
        assert_eq!(self.pool.stale_frees, 0, "stale frees");
    }
}
