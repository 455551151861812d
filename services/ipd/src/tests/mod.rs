//! Scenario tests of the whole core: frames in, frames out, a fake clock
//! and a [`HeapPool`] whose accounting must return to its baseline at the
//! end of every scenario ([`Rig::finish`]).

mod arp;
mod forward;
mod frag;
mod icmp;
mod input;
mod ip6;
mod output;
mod prop;

use std::net::Ipv4Addr;

use strata_ipc::{Buffers, Handle, HeapPool};
use strata_proto::arp::ArpPacket;
use strata_proto::ethernet::{ethertype, EthernetHeader};
use strata_proto::icmp::IcmpHeader;
use strata_proto::ipv4::{fill_checksum, Ipv4Header};
use strata_proto::MacAddr;

use crate::{IfaceConfig, IpConfig, IpCore, IpLimits, Outputs, RouteConfig, Stat};

pub const S: u64 = 1_000_000_000;
pub const IFACE: u8 = 1;
pub const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
pub const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
pub const GW_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);
pub const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);

/// The default configuration: one interface 10.0.0.1/24, MTU 1500, and a
/// default route via 10.0.0.254.
pub fn config() -> IpConfig {
    IpConfig {
        ifaces: vec![IfaceConfig {
            index: IFACE,
            mac: OUR_MAC,
            addrs: vec![(OUR_IP, 24)],
            mtu: 1500,
            addrs6: vec![],
            autoconf: false,
        }],
        routes: vec![RouteConfig {
            dest: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(GW_IP),
            iface: None,
        }],
        routes6: vec![],
        neighbours: vec![],
        limits: IpLimits::default(),
    }
}

/// A frame that came out of the core, copied out of the pool.
#[derive(Clone, Debug)]
pub struct Tx {
    pub h: Handle,
    pub bytes: Vec<u8>,
}

impl Tx {
    pub fn eth(&self) -> EthernetHeader {
        EthernetHeader::parse(&self.bytes).unwrap()
    }
    pub fn arp(&self) -> ArpPacket {
        assert_eq!(self.eth().ethertype, ethertype::ARP);
        ArpPacket::parse(&self.bytes[14..]).unwrap()
    }
    pub fn ip(&self) -> &[u8] {
        assert_eq!(self.eth().ethertype, ethertype::IPV4);
        &self.bytes[14..]
    }
    pub fn ip_hdr(&self) -> Ipv4Header {
        Ipv4Header::parse(self.ip()).unwrap()
    }
}

/// The core, its pool, its outputs and the clock.
pub struct Rig {
    pub core: IpCore,
    pub pool: HeapPool,
    pub out: Outputs,
    pub now: u64,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with(config())
    }

    pub fn with(cfg: IpConfig) -> Rig {
        Rig {
            core: IpCore::new(cfg).unwrap(),
            pool: HeapPool::new(256, 16),
            out: Outputs::with_capacity(64),
            now: S,
        }
    }

    pub fn with_limits(f: impl FnOnce(&mut IpLimits)) -> Rig {
        let mut cfg = config();
        f(&mut cfg.limits);
        Rig::with(cfg)
    }

    /// Copies `bytes` into a fresh pool buffer at the usual headroom.
    pub fn buf(&mut self, bytes: &[u8]) -> Handle {
        let mut h = self.pool.alloc(bytes.len()).unwrap();
        h.data_len = bytes.len() as u32;
        self.pool.data_mut(&h).unwrap().copy_from_slice(bytes);
        h
    }

    /// Hands a frame to `input` as netdevd would.
    pub fn input(&mut self, frame: &[u8]) -> Handle {
        let mut h = self.buf(frame);
        h.iif = IFACE;
        self.core.input(self.now, &mut self.pool, h, &mut self.out);
        h
    }

    /// Hands a datagram to `output` as tcpd/udpd would.
    pub fn output(&mut self, datagram: &[u8]) -> Handle {
        let h = self.buf(datagram);
        self.core.output(self.now, &mut self.pool, h, &mut self.out);
        h
    }

    /// Moves the clock by `ns` and runs the timers.
    pub fn advance(&mut self, ns: u64) -> Option<u64> {
        self.now += ns;
        self.core.poll(self.now, &mut self.pool, &mut self.out)
    }

    /// Takes (and frees) every emitted frame.
    pub fn tx(&mut self) -> Vec<Tx> {
        let v: Vec<Tx> = self
            .out
            .tx
            .drain(..)
            .map(|h| Tx {
                h,
                bytes: self.pool.data(&h).unwrap().to_vec(),
            })
            .collect();
        for t in &v {
            self.pool.free(&t.h);
        }
        v
    }

    /// Takes (and frees) every datagram delivered up.
    pub fn up(&mut self) -> Vec<(Handle, Vec<u8>)> {
        let v: Vec<_> = self
            .out
            .up
            .drain(..)
            .map(|h| (h, self.pool.data(&h).unwrap().to_vec()))
            .collect();
        for (h, _) in &v {
            self.pool.free(h);
        }
        v
    }

    pub fn stat(&self, s: Stat) -> u64 {
        self.core.stats().get(s)
    }

    /// Teaches the core the MAC of `ip` with an ARP reply aimed at us
    /// (which releases anything queued for it into `out.tx`).
    pub fn learn(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        let reply = ArpPacket {
            op: strata_proto::arp::OP_REPLY,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: OUR_MAC,
            target_ip: OUR_IP,
        };
        self.input(&arp_frame(OUR_MAC, &reply));
    }

    /// Runs every timer out and checks that every buffer came back.
    pub fn finish(mut self) {
        // Follow the deadlines: each retransmission is its own step.
        let mut steps = 0;
        while let Some(d) = self.core.poll(self.now, &mut self.pool, &mut self.out) {
            self.tx();
            self.up();
            self.now = self.now.max(d);
            steps += 1;
            assert!(steps < 1000, "timers never settle");
        }
        self.tx();
        self.up();
        assert_eq!(self.pool.in_use(), 0, "buffers leaked");
        assert_eq!(self.pool.stale_frees, 0, "stale handle freed");
    }
}

/// An Ethernet frame.
pub fn eth(dst: MacAddr, src: MacAddr, et: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + payload.len()];
    EthernetHeader {
        dst,
        src,
        ethertype: et,
    }
    .emit(&mut f)
    .unwrap();
    f[14..].copy_from_slice(payload);
    f
}

/// An ARP packet in a frame from the peer.
pub fn arp_frame(dst: MacAddr, p: &ArpPacket) -> Vec<u8> {
    let mut a = [0u8; 28];
    p.emit(&mut a).unwrap();
    eth(dst, p.sender_mac, ethertype::ARP, &a)
}

/// An IPv4 datagram description for building test packets.
#[derive(Clone, Debug)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub ident: u16,
    pub df: bool,
    pub mf: bool,
    pub off: u16,
    pub options: Vec<u8>,
}

impl Ip {
    /// From the peer to us.
    pub fn new(proto: u8) -> Ip {
        Ip {
            src: PEER_IP,
            dst: OUR_IP,
            proto,
            ttl: 64,
            ident: 0x1234,
            df: false,
            mf: false,
            off: 0,
            options: Vec::new(),
        }
    }

    /// The datagram bytes with `payload`.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        assert_eq!(self.options.len() % 4, 0);
        let hl = 20 + self.options.len();
        let mut d = vec![0u8; hl + payload.len()];
        Ipv4Header {
            header_len: 20,
            tos: 0,
            total_len: (hl + payload.len()) as u16,
            ident: self.ident,
            dont_frag: self.df,
            more_frags: self.mf,
            frag_offset: self.off,
            ttl: self.ttl,
            protocol: self.proto,
            checksum: 0,
            src: self.src,
            dst: self.dst,
        }
        .emit(&mut d)
        .unwrap();
        d[0] = 0x40 | (hl / 4) as u8;
        d[20..hl].copy_from_slice(&self.options);
        fill_checksum(&mut d);
        d[hl..].copy_from_slice(payload);
        d
    }

    /// The datagram in a frame from the peer to us.
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        eth(OUR_MAC, PEER_MAC, ethertype::IPV4, &self.build(payload))
    }
}

/// An ICMP echo message (request or reply by `ty`) with checksum.
pub fn echo_msg(ty: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 8 + data.len()];
    m[8..].copy_from_slice(data);
    let mut h = IcmpHeader::echo_request(id, seq);
    h.icmp_type = ty;
    h.emit(&mut m).unwrap();
    m
}

/// A recognisable payload of `n` bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Cuts datagram `d` into fragments carrying at most `chunk` payload bytes
/// (a multiple of 8), as a sender would.
pub fn fragment(d: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let hl = usize::from(d[0] & 0x0f) * 4;
    let payload = &d[hl..];
    let mut v = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let n = chunk.min(payload.len() - off);
        let mut f = d[..hl].to_vec();
        f.extend_from_slice(&payload[off..off + n]);
        f[2..4].copy_from_slice(&((hl + n) as u16).to_be_bytes());
        let mut ff = (off / 8) as u16;
        if off + n < payload.len() {
            ff |= 0x2000;
        }
        f[6..8].copy_from_slice(&ff.to_be_bytes());
        fill_checksum(&mut f);
        v.push(f);
        off += n;
    }
    v
}

/// Puts fragments back together, checking that they are well-formed,
/// contiguous and complete, and returns the datagram.
pub fn reassemble(frags: &[&[u8]]) -> Vec<u8> {
    let mut parts: Vec<(Ipv4Header, &[u8])> = frags
        .iter()
        .map(|f| (Ipv4Header::parse(f).expect("valid fragment"), *f))
        .collect();
    parts.sort_by_key(|(h, _)| h.frag_offset);
    let (h0, f0) = parts[0];
    let hl = h0.header_len as usize;
    let mut d = f0[..hl].to_vec();
    for (i, (h, f)) in parts.iter().enumerate() {
        assert_eq!(h.frag_offset as usize, d.len() - hl, "gap or overlap");
        assert_eq!(h.ident, h0.ident);
        assert_eq!(h.more_frags, i + 1 < parts.len());
        let fhl = h.header_len as usize;
        if i + 1 < parts.len() {
            assert_eq!((f.len() - fhl) % 8, 0);
        }
        d.extend_from_slice(&f[fhl..]);
    }
    let len = d.len() as u16;
    d[2..4].copy_from_slice(&len.to_be_bytes());
    d[6] &= 0x40;
    d[7] = 0;
    fill_checksum(&mut d);
    d
}
