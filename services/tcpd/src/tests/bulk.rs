//! Two cores back to back over a lossy wire (seeded: loss, reordering,
//! duplication, all deterministic), each with sockd played by the test:
//! megabytes both ways arrive byte-identical, the connection closes
//! cleanly, and the pool returns to its baseline.

use super::*;
use crate::{CcAlgo, Stat};

const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// A side at `addr`/24, and at 2001:db8::`n`/64 for IPv6 where `n` is
/// `addr`'s last byte.
pub(super) fn cfg_for(addr: Ipv4Addr, seed: u32) -> TcpConfig {
    TcpConfig {
        ifaces: vec![IfaceAddrs {
            index: 1,
            mtu: 1500,
            addrs: vec![(addr, 24)],
            addrs6: vec![(v6_of(addr), 64)],
            ..IfaceAddrs::default()
        }],
        socket_rx_bytes: 256 * 1024,
        socket_tx_bytes: 256 * 1024,
        secret: [seed as u64, 99],
        seed,
        ..config()
    }
}

/// The IPv6 address of the side at IPv4 address `addr`.
pub(super) fn v6_of(addr: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(addr.octets()[3]))
}

/// One side: its core and the sockd it talks to.
struct Side {
    core: TcpCore<'static>,
    out: Outputs,
    /// sockd's socket of the connection.
    sock: u32,
    /// Bytes to send, and how far they went to tcpd.
    data: Vec<u8>,
    off: usize,
    credit: u64,
    recv: Vec<u8>,
    unread: u64,
    eof: bool,
    closed: bool,
    shut: bool,
    connected: bool,
}

impl Side {
    fn new(addr: Ipv4Addr, seed: u32, data: Vec<u8>, cc: CcAlgo) -> Side {
        let mut cfg = cfg_for(addr, seed);
        cfg.congestion = cc;
        if TRANSFER_NO_SACK.with(|f| f.get()) {
            cfg.sack = false;
            cfg.timestamps = false;
        }
        Side {
            core: TcpCore::new(cfg, storage(16, 8192)).unwrap(),
            out: Outputs::with_capacity(256),
            sock: 0,
            data,
            off: 0,
            credit: 256 * 1024,
            recv: Vec::new(),
            unread: 0,
            eof: false,
            closed: false,
            shut: false,
            connected: false,
        }
    }
}

/// A wire both ways: datagrams delivered after 2 ms, some lost, late or
/// twice, as a seeded generator says.
pub(super) struct Wire {
    pub rng: u64,
    /// (delivery time, to B?, bytes)
    pub q: Vec<(u64, bool, Vec<u8>)>,
    pub loss: u64,
    pub dup: u64,
    pub reorder: u64,
    pub sent: u64,
    pub lost: u64,
    pub last: [u64; 2],
}

impl Wire {
    pub fn rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Per-mille chance.
    pub fn chance(&mut self, pm: u64) -> bool {
        self.rand() % 1000 < pm
    }

    pub fn put(&mut self, now: u64, to_b: bool, bytes: Vec<u8>) {
        self.sent += 1;
        if self.chance(self.loss) {
            self.lost += 1;
            return;
        }
        // In order (FIFO per direction) unless picked for reordering.
        let last = &mut self.last[usize::from(to_b)];
        let base = (now + 2 * MS).max(*last);
        *last = base;
        let at = if self.chance(self.reorder) {
            base + 3 * MS + self.rand() % (5 * MS)
        } else {
            base
        };
        if self.chance(self.dup) {
            let later = at + self.rand() % MS;
            self.q.push((later, to_b, bytes.clone()));
        }
        self.q.push((at, to_b, bytes));
    }
}

struct Net {
    pool: HeapPool,
    now: u64,
    a: Side,
    b: Side,
    wire: Wire,
}

impl Net {
    /// Moves what a side's core produced: datagrams onto the wire,
    /// sockd's share into the side.
    fn drain(&mut self, to_b: bool) {
        let side = if to_b { &mut self.a } else { &mut self.b };
        side.out.pin.clear();
        side.out.unpin.clear();
        for h in side.out.to_ip.drain(..) {
            for bytes in on_the_wire(&self.pool, &h) {
                self.wire.put(self.now, to_b, bytes);
            }
            self.pool.free(&h);
        }
        let mut attach = Vec::new();
        for h in std::mem::take(&mut side.out.to_sock) {
            if h.flags & flags::CTRL != 0 {
                let m = L4Ctl::from_handle(&self.pool, &h).unwrap().unwrap();
                match m.op {
                    op::CONNECTED => side.connected = true,
                    op::ACCEPTABLE => attach.push(m.value),
                    op::SEND_CREDIT => {
                        // Absolute: what left tcpd's send buffer in total.
                        let held = (side.off as u32).wrapping_sub(m.value as u32);
                        side.credit = (256 * 1024u64).saturating_sub(u64::from(held));
                    }
                    op::EOF => side.eof = true,
                    op::CLOSED => side.closed = true,
                    op::OK => {}
                    o => panic!("unexpected op {o}: {m:?}"),
                }
            } else {
                assert!(!side.eof, "data after EOF");
                let d = self.pool.data(&h).unwrap();
                side.recv.extend_from_slice(d);
                side.unread += d.len() as u64;
            }
            self.pool.free(&h);
        }
        for id in attach {
            let m = L4Ctl {
                op: op::ATTACH,
                sock: 20,
                value: id,
                ..L4Ctl::default()
            };
            side.sock = 20;
            side.connected = true;
            let h = m.to_handle(&mut self.pool).unwrap();
            side.core
                .from_sock(self.now, &mut self.pool, h, &mut side.out);
        }
    }

    /// sockd's work on one side: the application reads everything
    /// (READ_CREDIT), writes what the send credit allows.
    fn app(&mut self, which_a: bool, step: u64) {
        let side = if which_a { &mut self.a } else { &mut self.b };
        if !side.connected || side.sock == 0 {
            return;
        }
        if side.unread > 0 && (side.unread >= 32 * 1024 || step.is_multiple_of(3)) {
            // Absolute: everything read so far.
            let m = L4Ctl {
                op: op::READ_CREDIT,
                sock: side.sock,
                value: (side.recv.len() as u64),
                ..L4Ctl::default()
            };
            side.unread = 0;
            let h = m.to_handle(&mut self.pool).unwrap();
            side.core
                .from_sock(self.now, &mut self.pool, h, &mut side.out);
        }
        let mut k = 0;
        while side.off < side.data.len() && side.credit > 0 && k < 64 {
            k += 1;
            // Buffers of varied sizes, some exactly one segment.
            let want = match (side.off / 1448 + step as usize) % 4 {
                0 => 1448,
                1 => 700,
                2 => 1800,
                _ => 9000,
            };
            let n = want
                .min(side.data.len() - side.off)
                .min(side.credit as usize);
            let Some(mut h) = self.pool.alloc(n) else {
                break;
            };
            h.data_len = n as u32;
            h.sock = side.sock;
            h.stream_off = side.off as u32;
            self.pool
                .data_mut(&h)
                .unwrap()
                .copy_from_slice(&side.data[side.off..side.off + n]);
            side.off += n;
            side.credit -= n as u64;
            side.core
                .from_sock(self.now, &mut self.pool, h, &mut side.out);
        }
        if side.off == side.data.len() && !side.shut {
            side.shut = true;
            let m = L4Ctl {
                op: op::CLOSE,
                sock: side.sock,
                ..L4Ctl::default()
            };
            // Close only once the peer's data is all in (a full-duplex
            // exchange ends with both sides closing).
            if side.eof || which_a {
                let h = L4Ctl {
                    op: op::SHUTDOWN,
                    value: 1,
                    ..m
                }
                .to_handle(&mut self.pool)
                .unwrap();
                side.core
                    .from_sock(self.now, &mut self.pool, h, &mut side.out);
            } else {
                side.shut = false;
            }
        }
    }

    fn step(&mut self, step: u64) {
        // Deliver what is due, in time order.
        // Stable: equal times keep their sending order.
        self.wire.q.sort_by_key(|(t, _, _)| *t);
        let due = self
            .wire
            .q
            .iter()
            .take_while(|(t, _, _)| *t <= self.now)
            .count();
        let batch: Vec<_> = self.wire.q.drain(..due).collect();
        for (_, to_b, bytes) in batch {
            let h = ip_handle(&mut self.pool, &bytes, protocol::TCP);
            let side = if to_b { &mut self.b } else { &mut self.a };
            side.core
                .from_ip(self.now, &mut self.pool, h, &mut side.out);
        }
        for s in [&mut self.a, &mut self.b] {
            s.core.poll(self.now, &mut self.pool, &mut s.out);
        }
        self.drain(true);
        self.drain(false);
        self.app(true, step);
        self.app(false, step);
        self.drain(true);
        self.drain(false);
    }

    fn next_time(&self) -> u64 {
        let mut t = self.now + 50 * MS;
        for (w, _, _) in &self.wire.q {
            t = t.min(*w);
        }
        for d in [self.a.core.next_deadline(), self.b.core.next_deadline()]
            .into_iter()
            .flatten()
        {
            t = t.min(d);
        }
        t.max(self.now + 10_000)
    }
}

/// Runs a transfer of `a_bytes` from A to B and `b_bytes` back, over a
/// wire losing, reordering and duplicating the given per mille.
fn transfer(
    a_bytes: usize,
    b_bytes: usize,
    loss: u64,
    reorder: u64,
    dup: u64,
    seed: u64,
    cc: CcAlgo,
) -> (Net, u64) {
    let mut net = Net {
        pool: HeapPool::new(16384, 256),
        now: 1_000_000_000,
        a: Side::new(A_ADDR, 11, pattern(a_bytes, 0x5a), cc),
        b: Side::new(B_ADDR, 22, pattern(b_bytes, 0xa5), cc),
        wire: Wire {
            rng: seed | 1,
            q: Vec::new(),
            loss,
            dup,
            reorder,
            sent: 0,
            lost: 0,
            last: [0; 2],
        },
    };
    // B listens on 80; A connects.
    for m in [
        L4Ctl {
            op: op::BIND,
            sock: 1,
            local_addr: mapped(0),
            local_port: 80,
            ..L4Ctl::default()
        },
        L4Ctl {
            op: op::LISTEN,
            sock: 1,
            value: 8,
            ..L4Ctl::default()
        },
    ] {
        let h = m.to_handle(&mut net.pool).unwrap();
        net.b
            .core
            .from_sock(net.now, &mut net.pool, h, &mut net.b.out);
    }
    net.a.sock = 5;
    let h = L4Ctl {
        op: op::CONNECT,
        sock: 5,
        local_addr: mapped(0),
        remote_addr: mapped(u(B_ADDR)),
        remote_port: 80,
        ..L4Ctl::default()
    }
    .to_handle(&mut net.pool)
    .unwrap();
    net.a
        .core
        .from_sock(net.now, &mut net.pool, h, &mut net.a.out);
    net.drain(true);
    net.drain(false);
    let start = net.now;
    let mut step = 0;
    let limit = start + 3600 * 1_000_000_000;
    while !(net.a.closed && net.b.closed) {
        step += 1;
        net.now = net.next_time();
        assert!(
            net.now < limit,
            "stalled: a {:?} b {:?}",
            net.a.core.connections().collect::<Vec<_>>(),
            net.b.core.connections().collect::<Vec<_>>()
        );
        net.step(step);
    }
    let elapsed = net.now - start;
    // The listener goes too, then every timer runs out (TIME-WAIT).
    let h = L4Ctl {
        op: op::CLOSE,
        sock: 1,
        ..L4Ctl::default()
    }
    .to_handle(&mut net.pool)
    .unwrap();
    net.b
        .core
        .from_sock(net.now, &mut net.pool, h, &mut net.b.out);
    let end = net.now + 200 * 1_000_000_000;
    while net.now < end {
        net.now = net.next_time().min(end);
        net.step(step);
        net.wire.q.clear();
    }
    (net, elapsed)
}

fn check(net: &mut Net, a_bytes: usize, b_bytes: usize) {
    assert_eq!(net.b.recv.len(), a_bytes);
    assert!(net.b.recv == pattern(a_bytes, 0x5a), "A→B bytes differ");
    assert_eq!(net.a.recv.len(), b_bytes);
    assert!(net.a.recv == pattern(b_bytes, 0xa5), "B→A bytes differ");
    assert!(net.a.eof && net.b.eof);
    assert_eq!(net.a.core.conns_in_use(), 0);
    assert_eq!(net.b.core.conns_in_use(), 0);
    assert_eq!(net.a.core.entries_in_use() + net.b.core.entries_in_use(), 0);
    assert_eq!(net.pool.in_use(), 0, "buffers leaked");
    assert_eq!(net.pool.stale_frees, 0);
}

#[test]
fn bulk_transfer_over_a_lossy_reordering_duplicating_wire() {
    let (a_bytes, b_bytes) = (4 << 20, 1 << 20);
    let (mut net, elapsed) = transfer(a_bytes, b_bytes, 20, 20, 10, 0x1234_5678, CcAlgo::Cubic);
    check(&mut net, a_bytes, b_bytes);
    let (sa, sb) = (net.a.core.stats(), net.b.core.stats());
    assert!(net.wire.lost > 50, "the wire lost {}", net.wire.lost);
    assert!(sa.get(Stat::RetransSegs) > 0);
    assert!(sa.get(Stat::SackRecoveries) > 0, "SACK recovery used");
    assert!(sb.get(Stat::OooSegs) > 0);
    assert!(sb.get(Stat::DupData) > 0);
    assert_eq!(sa.get(Stat::BadChecksum) + sb.get(Stat::BadChecksum), 0);
    eprintln!(
        "4 MiB + 1 MiB in {:.1} s simulated; {} datagrams, {} lost; A retransmitted {}, {} timeouts",
        elapsed as f64 / 1e9,
        net.wire.sent,
        net.wire.lost,
        sa.get(Stat::RetransSegs),
        sa.get(Stat::RtoExpired)
    );
}

#[test]
fn bulk_transfer_newreno_without_sack() {
    let (a_bytes, b_bytes) = (1 << 20, 256 << 10);
    let mut net = {
        let (net, _) = transfer_cfg(a_bytes, b_bytes, CcAlgo::NewReno);
        net
    };
    check(&mut net, a_bytes, b_bytes);
    assert!(net.a.core.stats().get(Stat::FastRetrans) > 0);
    assert_eq!(net.a.core.stats().get(Stat::SackRecoveries), 0);
}

/// As [`transfer`], with SACK and timestamps off on both sides.
fn transfer_cfg(a_bytes: usize, b_bytes: usize, cc: CcAlgo) -> (Net, u64) {
    TRANSFER_NO_SACK.with(|f| f.set(true));
    let r = transfer(a_bytes, b_bytes, 20, 10, 10, 0xdead_beef, cc);
    TRANSFER_NO_SACK.with(|f| f.set(false));
    r
}

thread_local! {
    static TRANSFER_NO_SACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[test]
fn clean_wire_reaches_full_speed_without_retransmissions() {
    let (mut net, elapsed) = transfer(2 << 20, 64 << 10, 0, 0, 0, 7, CcAlgo::Cubic);
    check(&mut net, 2 << 20, 64 << 10);
    assert_eq!(net.a.core.stats().get(Stat::RetransSegs), 0);
    // 2 MiB over a 2 ms wire with a 256 KiB window: well under a second.
    assert!(elapsed < 1_000_000_000, "{elapsed} ns");
}
