//! udpd's core wired to ipd's core the way their shells wire them (one
//! pool, handles moved between `Outputs`), checking the contract between
//! the two layers end to end: loopback delivery, port unreachable sent by
//! ipd for udpd and coming back as ECONNREFUSED, the largest datagram, and
//! frames from a peer on the wire.

use std::net::Ipv4Addr;

use strata_ipc::addrs::mapped;
use strata_ipc::handle::flags;
use strata_ipc::l4::{op, L4Ctl, SendMeta, SEND_META_LEN};
use strata_ipc::{Buffers, Handle, HeapPool};
use strata_ipd::{upper_protocol, IfaceConfig, IpConfig, IpCore};
use strata_proto::arp::{ArpPacket, OP_REPLY};
use strata_proto::ethernet::{ethertype, EthernetHeader};
use strata_proto::icmp::{icmp_type, unreach_code};
use strata_proto::ipv4::{protocol, Ipv4Header};
use strata_proto::udp::UdpHeader;
use strata_proto::MacAddr;
use strata_udpd::{IfaceAddrs, UdpConfig, UdpCore};

const IFACE: u8 = 1;
const OUR_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

struct Stack {
    ip: IpCore,
    udp: UdpCore,
    pool: HeapPool,
    ip_out: strata_ipd::Outputs,
    udp_out: strata_udpd::Outputs,
    /// What reached sockd.
    sock: Vec<Handle>,
    /// What reached the wire.
    wire: Vec<Handle>,
    now: u64,
    req: u32,
}

impl Stack {
    fn new() -> Stack {
        let mut ip = IpCore::new(IpConfig {
            ifaces: vec![IfaceConfig {
                index: IFACE,
                mac: OUR_MAC,
                addrs: vec![(OUR_IP, 24)],
                mtu: 1500,
                addrs6: vec![],
                autoconf: false,
            }],
            routes: vec![],
            routes6: vec![],
            neighbours: vec![],
            limits: Default::default(),
        })
        .unwrap();
        ip.set_upper(protocol::UDP, true);
        let udp = UdpCore::new(UdpConfig {
            ifaces: vec![IfaceAddrs {
                index: IFACE,
                addrs: vec![(OUR_IP, 24)],
                ..IfaceAddrs::default()
            }],
            ..UdpConfig::default()
        })
        .unwrap();
        Stack {
            ip,
            udp,
            pool: HeapPool::new(64, 8),
            ip_out: strata_ipd::Outputs::with_capacity(16),
            udp_out: strata_udpd::Outputs::with_capacity(16),
            sock: Vec::new(),
            wire: Vec::new(),
            now: 1_000_000_000,
            req: 0,
        }
    }

    /// Moves handles between the cores as the shells do until nothing
    /// moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for h in std::mem::take(&mut self.udp_out.to_ip) {
                moved = true;
                if h.flags & flags::ICMP_PORT_UNREACH != 0 {
                    self.ip.send_icmp_error(
                        self.now,
                        &mut self.pool,
                        &h,
                        icmp_type::DEST_UNREACHABLE,
                        unreach_code::PORT,
                        &mut self.ip_out,
                    );
                    self.pool.free(&h);
                } else {
                    self.ip
                        .output(self.now, &mut self.pool, h, &mut self.ip_out);
                }
            }
            for h in std::mem::take(&mut self.ip_out.up) {
                moved = true;
                assert_eq!(upper_protocol(&self.pool, &h), protocol::UDP);
                self.udp.from_ip(&mut self.pool, h, &mut self.udp_out);
            }
            self.sock.append(&mut self.udp_out.to_sock);
            self.wire.append(&mut self.ip_out.tx);
            if !moved {
                return;
            }
        }
    }

    fn request(&mut self, mut m: L4Ctl) -> L4Ctl {
        self.req += 1;
        m.req = self.req;
        let h = m.to_handle(&mut self.pool).unwrap();
        self.udp.from_sock(&mut self.pool, h, &mut self.udp_out);
        self.pump();
        let mut ctl = self.take_ctl();
        assert_eq!(ctl.len(), 1);
        ctl.pop().unwrap()
    }

    fn take_ctl(&mut self) -> Vec<L4Ctl> {
        let (ctl, data): (Vec<Handle>, Vec<Handle>) = self
            .sock
            .drain(..)
            .partition(|h| h.flags & flags::CTRL != 0);
        self.sock = data;
        ctl.iter()
            .map(|h| {
                let m = L4Ctl::from_handle(&self.pool, h).unwrap().unwrap();
                self.pool.free(h);
                m
            })
            .collect()
    }

    /// Received datagrams: (sock, peer addr, peer port, payload).
    fn take_data(&mut self) -> Vec<(u32, Ipv4Addr, u16, Vec<u8>)> {
        let (data, ctl): (Vec<Handle>, Vec<Handle>) = self
            .sock
            .drain(..)
            .partition(|h| h.flags & flags::CTRL == 0);
        self.sock = data;
        let v = self
            .sock
            .iter()
            .map(|h| {
                let d = self.pool.data(h).unwrap();
                let ip = Ipv4Header::parse(d).unwrap();
                let l4 = usize::from(h.l4_off);
                let udp = UdpHeader::parse(&d[l4..]).unwrap();
                (h.sock, ip.src, udp.src_port, d[l4 + 8..].to_vec())
            })
            .collect();
        for h in self.sock.drain(..) {
            self.pool.free(&h);
        }
        self.sock = ctl;
        v
    }

    fn send(&mut self, sock: u32, dst: Ipv4Addr, port: u16, payload: &[u8]) {
        let mut h = self.pool.alloc(payload.len()).unwrap();
        h.data_len = payload.len() as u32;
        self.pool.data_mut(&h).unwrap().copy_from_slice(payload);
        assert!(h.push_front(SEND_META_LEN as u32));
        let meta = SendMeta {
            addr: mapped(u32::from(dst)),
            port,
        };
        self.pool.data_mut(&h).unwrap()[..SEND_META_LEN].copy_from_slice(&meta.to_bytes());
        h.sock = sock;
        self.udp.from_sock(&mut self.pool, h, &mut self.udp_out);
        self.pump();
    }

    /// A frame from the wire.
    fn input(&mut self, frame: &[u8]) {
        let mut h = self.pool.alloc(frame.len()).unwrap();
        h.data_len = frame.len() as u32;
        h.iif = IFACE;
        self.pool.data_mut(&h).unwrap().copy_from_slice(frame);
        self.ip.input(self.now, &mut self.pool, h, &mut self.ip_out);
        self.pump();
    }

    fn take_wire(&mut self) -> Vec<Vec<u8>> {
        let v = self
            .wire
            .iter()
            .map(|h| self.pool.data(h).unwrap().to_vec())
            .collect();
        for h in self.wire.drain(..) {
            self.pool.free(&h);
        }
        v
    }

    fn finish(mut self) {
        self.take_ctl();
        self.take_data();
        self.take_wire();
        assert_eq!(self.pool.in_use(), 0, "buffers leaked");
        assert_eq!(self.pool.stale_frees, 0);
    }
}

fn bind(sock: u32, addr: Ipv4Addr, port: u16) -> L4Ctl {
    L4Ctl {
        op: op::BIND,
        sock,
        local_addr: mapped(u32::from(addr)),
        local_port: port,
        ..Default::default()
    }
}

fn connect(sock: u32, addr: Ipv4Addr, port: u16) -> L4Ctl {
    L4Ctl {
        op: op::CONNECT,
        sock,
        remote_addr: mapped(u32::from(addr)),
        remote_port: port,
        ..Default::default()
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + payload.len()];
    EthernetHeader {
        dst: OUR_MAC,
        src: PEER_MAC,
        ethertype: ethertype::IPV4,
    }
    .emit(&mut f)
    .unwrap();
    f[14..].copy_from_slice(payload);
    f
}

#[test]
fn loopback_between_two_sockets_and_port_unreachable_back_to_the_sender() {
    let mut s = Stack::new();
    let a = s.request(bind(1, OUR_IP, 5000));
    assert_eq!(a.op, op::OK);
    let b = s.request(connect(2, OUR_IP, 5000));
    assert_eq!((b.op, b.local_addr), (op::OK, mapped(u32::from(OUR_IP))));

    s.send(2, Ipv4Addr::UNSPECIFIED, 0, b"ping");
    let got = s.take_data();
    assert_eq!(got, [(1, OUR_IP, b.local_port, b"ping".to_vec())]);
    s.send(1, OUR_IP, b.local_port, b"pong");
    let got = s.take_data();
    assert_eq!(got, [(2, OUR_IP, 5000, b"pong".to_vec())]);

    // The largest datagram loops back whole.
    let big: Vec<u8> = (0..strata_udpd::MAX_PAYLOAD).map(|i| i as u8).collect();
    s.send(2, Ipv4Addr::UNSPECIFIED, 0, &big);
    let got = s.take_data();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].3, big);

    // To a closed port: udpd asks ipd for port unreachable, which ipd
    // sends to us, and the connected sender hears ECONNREFUSED.
    let c = s.request(connect(2, OUR_IP, 5999));
    assert_eq!(c.op, op::OK);
    s.send(2, Ipv4Addr::UNSPECIFIED, 0, b"anyone?");
    assert!(s.take_data().is_empty());
    let notes = s.take_ctl();
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0].op, notes[0].sock, notes[0].errno),
        (op::SOCK_ERROR, 2, libc::ECONNREFUSED)
    );
    assert!(s.take_wire().is_empty(), "nothing left the host");
    s.finish();
}

#[test]
fn datagrams_from_the_wire_and_port_unreachable_onto_it() {
    let mut s = Stack::new();
    // The peer's MAC, so replies need no ARP.
    let mut arp = [0u8; 28];
    ArpPacket {
        op: OP_REPLY,
        sender_mac: PEER_MAC,
        sender_ip: PEER_IP,
        target_mac: OUR_MAC,
        target_ip: OUR_IP,
    }
    .emit(&mut arp)
    .unwrap();
    let mut f = frame(&arp);
    f[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
    s.input(&f);
    s.take_wire();

    s.request(bind(1, Ipv4Addr::UNSPECIFIED, 53));
    let dgram = |dport: u16, payload: &[u8]| {
        let mut d = vec![0u8; 28 + payload.len()];
        Ipv4Header {
            header_len: 20,
            tos: 0,
            total_len: d.len() as u16,
            ident: 9,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            ttl: 64,
            protocol: protocol::UDP,
            checksum: 0,
            src: PEER_IP,
            dst: OUR_IP,
        }
        .emit(&mut d)
        .unwrap();
        d[28..].copy_from_slice(payload);
        UdpHeader {
            src_port: 4321,
            dst_port: dport,
            length: 0,
            checksum: 0,
        }
        .emit(&mut d[20..], PEER_IP, OUR_IP)
        .unwrap();
        d
    };
    s.input(&frame(&dgram(53, b"query")));
    assert_eq!(s.take_data(), [(1, PEER_IP, 4321, b"query".to_vec())]);

    // The answer leaves as a frame with a valid datagram.
    s.send(1, PEER_IP, 4321, b"answer");
    let wire = s.take_wire();
    assert_eq!(wire.len(), 1);
    let ip = Ipv4Header::parse(&wire[0][14..]).unwrap();
    assert_eq!((ip.src, ip.dst), (OUR_IP, PEER_IP));
    assert!(UdpHeader::verify_checksum(&wire[0][34..], OUR_IP, PEER_IP));

    // To a closed port: an ICMP port unreachable quoting it.
    let d = dgram(54, b"closed?");
    s.input(&frame(&d));
    let wire = s.take_wire();
    assert_eq!(wire.len(), 1);
    let icmp = &wire[0][34..];
    assert_eq!((icmp[0], icmp[1]), (3, 3));
    assert_eq!(&icmp[8..], &d[..]);
    s.finish();
}
