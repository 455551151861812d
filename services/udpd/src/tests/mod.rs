//! Scenario tests of the core: requests and datagrams in, handles out,
//! over a [`HeapPool`] whose accounting must return to its baseline at
//! the end of every scenario ([`Rig::finish`]).

mod bind;
mod input;
mod ipv6;
mod output;
mod prop;

use std::net::{Ipv4Addr, Ipv6Addr};

pub use strata_ipc::addrs::mapped;
use strata_ipc::handle::{csum, flags};
use strata_ipc::l4::{ctl_flags, op, L4Ctl, SendMeta, SEND_META_LEN};
use strata_ipc::{Buffers, Handle, HeapPool};
use strata_proto::ethernet::ethertype;
use strata_proto::icmp::IcmpHeader;
use strata_proto::icmpv6::Icmpv6Header;
use strata_proto::ipv4::{protocol, Ipv4Header};
use strata_proto::ipv6::{next_header, Ipv6Header};
use strata_proto::udp::UdpHeader;

use crate::{IfaceAddrs, Outputs, RouteInfo, Stat, UdpConfig, UdpCore};

pub const A1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const A2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
pub const B1: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
pub const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const PEER_B: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);
pub const FAR: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
pub const BCAST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 255);

/// Interface 1's configured IPv6 address.
pub const L6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// Interface 2's configured IPv6 address.
pub const L6B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
/// Interface 1's link-local address, from its MAC 02:00:00:00:00:01.
pub const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 1);
pub const P6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const P6B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 9);
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// `a` as control messages carry it.
pub fn a6(a: Ipv6Addr) -> u128 {
    u128::from(a)
}

pub fn u(a: Ipv4Addr) -> u32 {
    u32::from(a)
}

/// `a` as control messages carry it.
pub fn m(a: Ipv4Addr) -> u128 {
    strata_ipc::addrs::mapped(u32::from(a))
}

/// The IPv4 address a control message carries.
pub fn v4(a: u128) -> u32 {
    strata_ipc::addrs::unmapped(a).expect("an IPv4 address")
}

/// Interface 1: 10.0.0.1/24 and 10.0.0.9/24, [`L6`] and [`LL`];
/// interface 2: 192.168.1.1/24 and [`L6B`]; a default route via
/// 10.0.0.254; ephemeral ports 50000-50099.
pub fn config() -> UdpConfig {
    UdpConfig {
        ifaces: vec![
            IfaceAddrs {
                index: 1,
                addrs: vec![(A1, 24), (A2, 24)],
                addrs6: vec![(L6, 64)],
                mac: [2, 0, 0, 0, 0, 1],
            },
            IfaceAddrs {
                index: 2,
                addrs: vec![(B1, 24)],
                addrs6: vec![(L6B, 64)],
                ..IfaceAddrs::default()
            },
        ],
        routes: vec![RouteInfo {
            dest: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(Ipv4Addr::new(10, 0, 0, 254)),
            iface: None,
        }],
        ephemeral_ports: (50000, 50099),
        max_bindings: 1024,
        seed: 7,
        soft_errors: false,
    }
}

/// A UDP datagram description for building test packets.
#[derive(Clone, Debug)]
pub struct Dg {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Dg {
    pub fn new(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Dg {
        Dg {
            src,
            dst,
            sport,
            dport,
        }
    }

    /// The IPv4 datagram carrying `payload`, checksums filled.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let n = 28 + payload.len();
        let mut d = vec![0u8; n];
        Ipv4Header {
            header_len: 20,
            tos: 0,
            total_len: n as u16,
            ident: 1,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            ttl: 64,
            protocol: protocol::UDP,
            checksum: 0,
            src: self.src,
            dst: self.dst,
        }
        .emit(&mut d)
        .unwrap();
        d[28..].copy_from_slice(payload);
        UdpHeader {
            src_port: self.sport,
            dst_port: self.dport,
            length: 0,
            checksum: 0,
        }
        .emit(&mut d[20..], self.src, self.dst)
        .unwrap();
        d
    }
}

/// A UDP datagram over IPv6, for building test packets.
#[derive(Clone, Debug)]
pub struct Dg6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    /// Put a Destination Options header (8 bytes, padding only) between
    /// the fixed header and UDP.
    pub ext: bool,
}

impl Dg6 {
    pub fn new(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Dg6 {
        Dg6 {
            src,
            dst,
            sport,
            dport,
            ext: false,
        }
    }

    /// Where the UDP header is.
    pub fn l4(&self) -> usize {
        if self.ext {
            48
        } else {
            40
        }
    }

    /// The IPv6 datagram carrying `payload`, checksum filled.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let l4 = self.l4();
        let n = l4 + 8 + payload.len();
        let mut d = vec![0u8; n];
        Ipv6Header {
            traffic_class: 0,
            flow_label: 0,
            payload_len: (n - 40) as u16,
            next_header: if self.ext {
                next_header::DEST_OPTS
            } else {
                next_header::UDP
            },
            hop_limit: 64,
            src: self.src,
            dst: self.dst,
        }
        .emit(&mut d)
        .unwrap();
        if self.ext {
            // Next header UDP, length 0 (8 bytes), PadN of 4 bytes.
            d[40..48].copy_from_slice(&[next_header::UDP, 0, 1, 4, 0, 0, 0, 0]);
        }
        d[l4 + 8..].copy_from_slice(payload);
        UdpHeader {
            src_port: self.sport,
            dst_port: self.dport,
            length: 0,
            checksum: 0,
        }
        .emit_v6(&mut d[l4..], self.src, self.dst)
        .unwrap();
        d
    }
}

/// An ICMPv6 error `ty`/`code` (with `rest` as its second word) from
/// `from` to `to` quoting `quoted`.
pub fn icmp6_error(
    from: Ipv6Addr,
    to: Ipv6Addr,
    ty: u8,
    code: u8,
    rest: u32,
    quoted: &[u8],
) -> Vec<u8> {
    let n = 48 + quoted.len();
    let mut d = vec![0u8; n];
    Ipv6Header {
        traffic_class: 0,
        flow_label: 0,
        payload_len: (n - 40) as u16,
        next_header: next_header::ICMPV6,
        hop_limit: 64,
        src: from,
        dst: to,
    }
    .emit(&mut d)
    .unwrap();
    d[48..].copy_from_slice(quoted);
    Icmpv6Header {
        icmp_type: ty,
        code,
        checksum: 0,
        rest: rest.to_be_bytes(),
    }
    .emit(&mut d[40..], from, to)
    .unwrap();
    d
}

/// An ICMP error `ty`/`code` from `from` to `to` quoting `quoted`.
pub fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let n = 28 + quoted.len();
    let mut d = vec![0u8; n];
    Ipv4Header {
        header_len: 20,
        tos: 0xc0,
        total_len: n as u16,
        ident: 2,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
        ttl: 64,
        protocol: protocol::ICMP,
        checksum: 0,
        src: from,
        dst: to,
    }
    .emit(&mut d)
    .unwrap();
    d[28..].copy_from_slice(quoted);
    IcmpHeader {
        icmp_type: ty,
        code,
        checksum: 0,
        rest: [0; 4],
    }
    .emit(&mut d[20..])
    .unwrap();
    d
}

/// A recognisable payload of `n` bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The core, its pool and its outputs.
pub struct Rig {
    pub core: UdpCore,
    pub pool: HeapPool,
    pub out: Outputs,
    pub req: u32,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with(config())
    }

    pub fn with(cfg: UdpConfig) -> Rig {
        Rig {
            core: UdpCore::new(cfg).unwrap(),
            pool: HeapPool::new(64, 4),
            out: Outputs::with_capacity(16),
            req: 0,
        }
    }

    pub fn stat(&self, s: Stat) -> u64 {
        self.core.stats().get(s)
    }

    /// Copies `bytes` into a fresh pool buffer at the usual headroom.
    pub fn buf(&mut self, bytes: &[u8]) -> Handle {
        let mut h = self.pool.alloc(bytes.len()).unwrap();
        h.data_len = bytes.len() as u32;
        self.pool.data_mut(&h).unwrap().copy_from_slice(bytes);
        h
    }

    /// Sends control message `m` as sockd would and returns every control
    /// message udpd answered with (freeing them).
    pub fn ctl(&mut self, mut m: L4Ctl) -> Vec<L4Ctl> {
        self.req += 1;
        m.req = self.req;
        let h = m.to_handle(&mut self.pool).unwrap();
        self.core.from_sock(&mut self.pool, h, &mut self.out);
        self.take_ctl()
    }

    /// The control messages waiting for sockd (freed).
    pub fn take_ctl(&mut self) -> Vec<L4Ctl> {
        let mut v = Vec::new();
        let mut rest = Vec::new();
        for h in self.out.to_sock.drain(..) {
            if h.flags & flags::CTRL != 0 {
                let m = L4Ctl::from_handle(&self.pool, &h).unwrap().unwrap();
                assert_eq!(h.sock, m.sock);
                if !h.is_inline() {
                    assert_eq!(h.data_len as usize, strata_ipc::l4::L4CTL_LEN);
                }
                v.push(m);
                self.pool.free(&h);
            } else {
                rest.push(h);
            }
        }
        self.out.to_sock = rest;
        v
    }

    /// The one reply to request `m`: Ok((local, remote)) or Err(errno).
    pub fn request(&mut self, m: L4Ctl) -> Result<L4Ctl, i32> {
        let sock = m.sock;
        let r = self.ctl(m);
        assert_eq!(r.len(), 1, "one reply");
        let r = r[0];
        assert_eq!(
            (r.req, r.sock),
            (self.req, sock),
            "reply echoes req and sock"
        );
        match r.op {
            op::OK => Ok(r),
            op::ERROR => Err(r.errno),
            o => panic!("unexpected op {o}"),
        }
    }

    /// bind(sock, addr:port), with SO_REUSEADDR if `reuse`: the bound
    /// (addr, port) or the errno.
    pub fn bind(
        &mut self,
        sock: u32,
        addr: Ipv4Addr,
        port: u16,
        reuse: bool,
    ) -> Result<(u32, u16), i32> {
        let r = self.request(L4Ctl {
            op: op::BIND,
            sock,
            local_addr: m(addr),
            local_port: port,
            flags: if reuse { ctl_flags::REUSEADDR } else { 0 },
            ..Default::default()
        })?;
        Ok((v4(r.local_addr), r.local_port))
    }

    pub fn connect(&mut self, sock: u32, addr: Ipv4Addr, port: u16) -> Result<L4Ctl, i32> {
        self.request(L4Ctl {
            op: op::CONNECT,
            sock,
            local_addr: mapped(0),
            remote_addr: m(addr),
            remote_port: port,
            ..Default::default()
        })
    }

    pub fn close(&mut self, sock: u32) {
        let r = self.ctl(L4Ctl {
            op: op::CLOSE,
            sock,
            ..Default::default()
        });
        assert!(r.is_empty(), "close has no reply");
    }

    /// Hands a datagram to `from_ip` as ipd would.
    pub fn rx_with(&mut self, bytes: &[u8], proto: u8, cs: u8) -> Handle {
        let mut h = self.buf(bytes);
        h.l4_off = 20;
        h.l4proto = proto;
        h.iif = 1;
        h.csum = cs;
        self.core.from_ip(&mut self.pool, h, &mut self.out);
        h
    }

    pub fn rx(&mut self, bytes: &[u8]) -> Handle {
        self.rx_with(bytes, protocol::UDP, csum::NONE)
    }

    /// Hands an IPv6 packet to `from_ip` as ipd would: `l4` where the
    /// transport header is, `proto` what it is.
    pub fn rx6_with(&mut self, bytes: &[u8], l4: usize, proto: u8, cs: u8) -> Handle {
        let mut h = self.buf(bytes);
        h.ethertype = ethertype::IPV6;
        h.l4_off = l4 as u16;
        h.l4proto = proto;
        h.iif = 1;
        h.csum = cs;
        self.core.from_ip(&mut self.pool, h, &mut self.out);
        h
    }

    /// Hands IPv6 datagram `d` to `from_ip`.
    pub fn rx6(&mut self, d: &Dg6, payload: &[u8]) -> Handle {
        let bytes = d.build(payload);
        self.rx6_with(&bytes, d.l4(), protocol::UDP, csum::NONE)
    }

    /// Hands ICMPv6 error `bytes` to `from_ip`.
    pub fn rx_icmp6(&mut self, bytes: &[u8]) -> Handle {
        self.rx6_with(bytes, 40, next_header::ICMPV6, csum::NONE)
    }

    /// bind(sock, addr:port) for an IPv6 socket (IPV6_V6ONLY if
    /// `v6only`), with SO_REUSEADDR if `reuse`: the reply or the errno.
    pub fn bind6(
        &mut self,
        sock: u32,
        addr: u128,
        port: u16,
        v6only: bool,
        reuse: bool,
    ) -> Result<L4Ctl, i32> {
        let mut flags = 0;
        if v6only {
            flags |= ctl_flags::V6ONLY;
        }
        if reuse {
            flags |= ctl_flags::REUSEADDR;
        }
        self.request(L4Ctl {
            op: op::BIND,
            sock,
            local_addr: addr,
            local_port: port,
            flags,
            ..Default::default()
        })
    }

    /// connect(sock, addr:port) as sockd sends it (no local address),
    /// IPV6_V6ONLY if `v6only`.
    pub fn connect6(
        &mut self,
        sock: u32,
        addr: u128,
        port: u16,
        v6only: bool,
    ) -> Result<L4Ctl, i32> {
        self.request(L4Ctl {
            op: op::CONNECT,
            sock,
            remote_addr: addr,
            remote_port: port,
            flags: if v6only { ctl_flags::V6ONLY } else { 0 },
            ..Default::default()
        })
    }

    /// Sends `payload` from `sock` to `addr:port` (an any address: the
    /// connected peer).
    pub fn send_to(&mut self, sock: u32, addr: u128, port: u16, payload: &[u8]) -> Handle {
        let meta = SendMeta { addr, port };
        let mut h = self.pool.alloc(payload.len()).unwrap();
        h.data_len = payload.len() as u32;
        self.pool.data_mut(&h).unwrap().copy_from_slice(payload);
        assert!(h.push_front(SEND_META_LEN as u32));
        self.pool.data_mut(&h).unwrap()[..SEND_META_LEN].copy_from_slice(&meta.to_bytes());
        h.sock = sock;
        self.core.from_sock(&mut self.pool, h, &mut self.out);
        h
    }

    /// Datagrams delivered to sockd: (sock, handle, window bytes), freed.
    pub fn delivered(&mut self) -> Vec<(u32, Handle, Vec<u8>)> {
        let mut v = Vec::new();
        let mut rest = Vec::new();
        for h in self.out.to_sock.drain(..) {
            if h.flags & flags::CTRL == 0 {
                v.push((h.sock, h, self.pool.data(&h).unwrap().to_vec()));
            } else {
                rest.push(h);
            }
        }
        self.out.to_sock = rest;
        for (_, h, _) in &v {
            self.pool.free(h);
        }
        v
    }

    /// Sends `payload` from `sock` to `dst` (0.0.0.0:0 = connected peer).
    pub fn send(&mut self, sock: u32, dst: Ipv4Addr, port: u16, payload: &[u8]) -> Handle {
        let addr = if dst.is_unspecified() { 0 } else { m(dst) };
        self.send_to(sock, addr, port, payload)
    }

    /// Handles for ipd: (handle, window bytes), freed.
    pub fn take_ip(&mut self) -> Vec<(Handle, Vec<u8>)> {
        let v: Vec<_> = self
            .out
            .to_ip
            .drain(..)
            .map(|h| (h, self.pool.data(&h).unwrap().to_vec()))
            .collect();
        for (h, _) in &v {
            self.pool.free(h);
        }
        v
    }

    /// Checks that every buffer came back.
    pub fn finish(mut self) {
        self.take_ctl();
        self.delivered();
        self.take_ip();
        assert_eq!(self.pool.in_use(), 0, "buffers leaked");
        assert_eq!(self.pool.stale_frees, 0, "stale handle freed");
    }
}
