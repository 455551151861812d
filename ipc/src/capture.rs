//! Packet capture at the rings (docs/ARCHITECTURE.md, "Capture"). A
//! capture client (`strata capture`) writes a filter, a snap length and
//! the set of rings to watch into the [`CaptureCtl`] in the launcher's
//! read-only pages; every layer's service loop, when it pushes handles
//! into a watched ring, copies the matching frames into its own
//! [`CaptureRing`], which the client drains into a pcap file. With no
//! capture running this costs one load per push; a full capture ring
//! loses records (counted), never packets.
//!
//! The filter is a small program in postfix order ([`Program`]): the
//! client compiles a tcpdump-style expression to it, and each layer
//! accepts it only once it has checked it ([`Program::decode`]), so a
//! bad program captures nothing rather than misbehaving.

pub use crate::layer::Carries;
use crate::raw::Region;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

/// Bytes of each layer's capture ring, its header included.
pub const CAPTURE_RING_BYTES: usize = 1 << 20;
/// Most instructions in a filter program.
pub const MAX_OPS: usize = 64;
/// Deepest stack a program may build.
pub const MAX_DEPTH: usize = 16;
/// Default and largest snap length (a whole super-frame).
pub const MAX_SNAPLEN: u32 = 262_144;
/// [`CaptureCtl::owner`] while the launcher ends a capture whose client
/// died.
pub const CAPTURE_CLEARING: u32 = u32::MAX;

/// What the client asks of the layers, in the launcher's pages.
#[repr(C, align(64))]
pub struct CaptureCtl {
    /// Fabric ring indices watched, one bit each (0: no capture).
    pub rings: AtomicU64,
    /// Bumped each time the client (re)writes the program.
    pub gen: AtomicU32,
    /// The capturing client's pid (0: none): one capture at a time.
    pub owner: AtomicU32,
    /// Bytes of each frame kept.
    pub snaplen: AtomicU32,
    /// Instructions in `ops`.
    pub n_ops: AtomicU32,
    /// The program, encoded ([`Op::encode`]).
    pub ops: [[AtomicU32; 3]; MAX_OPS],
}

/// The indices of one layer's capture ring: bytes written and read since
/// the stack started, so that neither wraps.
#[repr(C, align(64))]
pub struct CaptureRingHdr {
    /// Written by the layer.
    pub tail: AtomicU64,
    /// Records the layer could not fit.
    pub drops: AtomicU64,
    /// Records the layer wrote.
    pub captured: AtomicU64,
    pub _pad: [u64; 5],
    /// Written by the client.
    pub head: AtomicU64,
    pub _pad2: [u64; 7],
}

/// Bytes of a record's header: time (ns, [`crate::now_ns`]), the frame's
/// length, the bytes kept, the ring it was pushed into.
pub const RECORD_HDR: usize = 24;
/// A record header whose `cap_len` is this says: go on at the start.
const WRAP: u32 = u32::MAX;

/// A layer's capture ring: the header, then the records.
pub struct CaptureRing<'a> {
    pub(crate) hdr: &'a CaptureRingHdr,
    pub(crate) data: Region<'a>,
}

/// A record as the client reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ts_ns: u64,
    pub orig_len: u32,
    pub ring: u32,
    pub data: Vec<u8>,
}

impl CaptureRing<'_> {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// The layer: appends a record of `frame` (its first `snaplen`
    /// bytes) pushed into ring `ring`; false (and a drop counted) when
    /// the client has not made room.
    pub fn put(&self, ts_ns: u64, ring: u32, frame: &[u8], snaplen: u32) -> bool {
        let cap = frame.len().min(snaplen as usize);
        let need = (RECORD_HDR + cap).next_multiple_of(8) as u64;
        let size = self.size();
        let tail = self.hdr.tail.load(Relaxed);
        let head = self.hdr.head.load(Acquire);
        let mut at = tail % size;
        // A record never wraps: what is left at the end is skipped.
        let skip = if at + need > size { size - at } else { 0 };
        if need > size || tail.wrapping_sub(head) + skip + need > size {
            self.hdr.drops.fetch_add(1, Relaxed);
            return false;
        }
        if skip > 0 {
            if skip >= RECORD_HDR as u64 {
                self.data.store(at as usize + 12, WRAP);
            }
            at = 0;
        }
        let at = at as usize;
        self.data.store(at, ts_ns);
        self.data.store(at + 8, frame.len() as u32);
        self.data.store(at + 12, cap as u32);
        self.data.store(at + 16, ring);
        self.data.copy_in(at + RECORD_HDR, &frame[..cap]);
        self.hdr.tail.store(tail + skip + need, Release);
        self.hdr.captured.fetch_add(1, Relaxed);
        true
    }

    /// The client: the records waiting, oldest first, each checked (the
    /// ring is written by another process: a record that makes no sense
    /// ends the read and the rest is skipped). Returns them and how many
    /// bytes were skipped as corrupt.
    pub fn take(&self) -> (Vec<Record>, u64) {
        let size = self.size();
        let mut head = self.hdr.head.load(Relaxed);
        let tail = self.hdr.tail.load(Acquire);
        let mut out = Vec::new();
        let mut corrupt = 0;
        if tail.wrapping_sub(head) > size {
            corrupt = tail.wrapping_sub(head);
            self.hdr.head.store(tail, Release);
            return (out, corrupt);
        }
        while head < tail {
            let at = head % size;
            let left = size - at;
            let skip = left < RECORD_HDR as u64 || self.data.load::<u32>(at as usize + 12) == WRAP;
            if skip {
                if head + left > tail {
                    corrupt += tail - head;
                    head = tail;
                    break;
                }
                head += left;
                continue;
            }
            let at = at as usize;
            let cap: u32 = self.data.load(at + 12);
            let need = (RECORD_HDR + cap as usize).next_multiple_of(8) as u64;
            if need > left || head + need > tail {
                corrupt += tail - head;
                head = tail;
                break;
            }
            // SAFETY: the layer wrote these bytes before it published
            // `tail` past them and does not touch them again until we
            // move `head` past them; nothing in this process writes them.
            let data = unsafe { self.data.bytes(at + RECORD_HDR, cap as usize) }.to_vec();
            out.push(Record {
                ts_ns: self.data.load(at),
                orig_len: self.data.load(at + 8),
                ring: self.data.load(at + 16),
                data,
            });
            head += need;
        }
        self.hdr.head.store(head, Release);
        (out, corrupt)
    }

    /// Records lost to a full ring so far.
    pub fn drops(&self) -> u64 {
        self.hdr.drops.load(Relaxed)
    }
}

// ---------------------------------------------------------------- filter

/// Which address or port of a packet a term looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Either,
    Src,
    Dst,
}

/// What a term matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Ip,
    Tcp,
    Udp,
    Icmp,
    Arp,
    /// IPv6.
    Ip6,
    /// ICMPv6 right after the IPv6 header.
    Icmp6,
}

/// One instruction of a [`Program`]: a term pushes whether the frame
/// matches it; `And`, `Or` and `Not` combine what is on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Every frame (the empty expression).
    True,
    Proto(Proto),
    /// An IPv4 address (of an IPv4 packet, or the sender or target of
    /// an ARP one).
    Host(Dir, u32),
    /// A network: address and mask, both host order.
    Net(Dir, u32, u32),
    /// A TCP or UDP port (not of a later fragment).
    Port(Dir, u16),
    And,
    Or,
    Not,
}

/// Why a program was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramError {
    TooLong,
    BadOp,
    /// An operator with too few operands, more than [`MAX_DEPTH`] values,
    /// or not exactly one value at the end.
    BadStack,
}

impl Op {
    /// Three words: kind, direction and protocol; address or port; mask.
    pub fn encode(self) -> [u32; 3] {
        let dir = |d: Dir| (d as u32) << 8;
        match self {
            Op::True => [1, 0, 0],
            Op::Proto(p) => [2 | (p as u32) << 16, 0, 0],
            Op::Host(d, a) => [3 | dir(d), a, 0],
            Op::Net(d, a, m) => [4 | dir(d), a, m],
            Op::Port(d, p) => [5 | dir(d), u32::from(p), 0],
            Op::And => [6, 0, 0],
            Op::Or => [7, 0, 0],
            Op::Not => [8, 0, 0],
        }
    }

    /// The instruction `w` encodes, if it is one.
    pub fn decode(w: [u32; 3]) -> Option<Op> {
        let dir = match (w[0] >> 8) & 0xff {
            0 => Dir::Either,
            1 => Dir::Src,
            2 => Dir::Dst,
            _ => return None,
        };
        let proto = match w[0] >> 16 {
            0 => Proto::Ip,
            1 => Proto::Tcp,
            2 => Proto::Udp,
            3 => Proto::Icmp,
            4 => Proto::Arp,
            5 => Proto::Ip6,
            6 => Proto::Icmp6,
            _ => return None,
        };
        Some(match w[0] & 0xff {
            1 => Op::True,
            2 => Op::Proto(proto),
            3 => Op::Host(dir, w[1]),
            4 => Op::Net(dir, w[1], w[2]),
            5 => Op::Port(dir, u16::try_from(w[1]).ok()?),
            6 => Op::And,
            7 => Op::Or,
            8 => Op::Not,
            _ => return None,
        })
    }
}

/// A filter program that was checked: it evaluates to one value without
/// ever running out of operands or stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    ops: Vec<Op>,
}

impl Program {
    /// Checks `ops` (postfix order).
    pub fn new(ops: Vec<Op>) -> Result<Program, ProgramError> {
        if ops.is_empty() || ops.len() > MAX_OPS {
            return Err(ProgramError::TooLong);
        }
        let mut depth = 0usize;
        for op in &ops {
            depth = match op {
                Op::And | Op::Or if depth >= 2 => depth - 1,
                Op::Not if depth >= 1 => depth,
                Op::And | Op::Or | Op::Not => return Err(ProgramError::BadStack),
                _ => depth + 1,
            };
            if depth > MAX_DEPTH {
                return Err(ProgramError::BadStack);
            }
        }
        if depth != 1 {
            return Err(ProgramError::BadStack);
        }
        Ok(Program { ops })
    }

    /// The program encoded in `words` (as the layers read it).
    pub fn decode(words: &[[u32; 3]]) -> Result<Program, ProgramError> {
        let ops = words
            .iter()
            .map(|w| Op::decode(*w).ok_or(ProgramError::BadOp))
            .collect::<Result<Vec<_>, _>>()?;
        Program::new(ops)
    }

    /// The instructions.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether `packet`, an Ethernet frame or a bare IPv4 datagram as
    /// `carries` says, matches (socket messages never do).
    pub fn matches(&self, packet: &[u8], carries: Carries) -> bool {
        let p = match carries {
            Carries::Ethernet => Parsed::of(packet, true),
            Carries::Ipv4 => Parsed::of(packet, false),
            Carries::Messages => return false,
        };
        let mut stack = [false; MAX_DEPTH];
        let mut n = 0;
        for op in &self.ops {
            let v = match *op {
                Op::And => {
                    n -= 1;
                    stack[n - 1] && stack[n]
                }
                Op::Or => {
                    n -= 1;
                    stack[n - 1] || stack[n]
                }
                Op::Not => !stack[n - 1],
                Op::True => true,
                Op::Proto(x) => p.is(x),
                Op::Host(d, a) => p.addr(d, |x| x == a),
                Op::Net(d, a, m) => p.addr(d, |x| x & m == a & m),
                Op::Port(d, port) => p.port(d, port),
            };
            match op {
                Op::And | Op::Or | Op::Not => stack[n - 1] = v,
                _ => {
                    stack[n] = v;
                    n += 1;
                }
            }
        }
        stack[0]
    }
}

/// What a filter looks at in a frame.
#[derive(Default)]
struct Parsed {
    arp: bool,
    ipv4: bool,
    /// IPv6; `proto` is then the fixed header's Next Header (a protocol
    /// behind extension headers is not looked for, as libpcap's `ip6
    /// proto` does not).
    ipv6: bool,
    proto: u8,
    src: u32,
    dst: u32,
    ports: Option<(u16, u16)>,
}

impl Parsed {
    /// What `f` holds: an Ethernet frame, or (`ethernet` false) an IPv4
    /// datagram from its first byte.
    fn of(f: &[u8], ethernet: bool) -> Parsed {
        let be16 = |i: usize| f.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let be32 = |i: usize| {
            f.get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (mut l2, mut ethertype) = if ethernet {
            (14, be16(12))
        } else {
            (0, Some(0x0800))
        };
        if ethernet && ethertype == Some(0x8100) {
            l2 = 18;
            ethertype = be16(16);
        }
        let mut p = Parsed::default();
        match ethertype {
            Some(0x0806) => {
                // ARP for IPv4 over Ethernet: sender and target addresses.
                p.arp = true;
                if let (Some(s), Some(t)) = (be32(l2 + 14), be32(l2 + 24)) {
                    (p.src, p.dst) = (s, t);
                }
            }
            Some(0x0800) => {
                let Some(&vihl) = f.get(l2) else { return p };
                let ihl = usize::from(vihl & 0x0f) * 4;
                let (Some(src), Some(dst), Some(&proto), Some(frag)) =
                    (be32(l2 + 12), be32(l2 + 16), f.get(l2 + 9), be16(l2 + 6))
                else {
                    return p;
                };
                p.ipv4 = vihl >> 4 == 4 && ihl >= 20;
                (p.src, p.dst, p.proto) = (src, dst, proto);
                let first = frag & 0x1fff == 0;
                if p.ipv4 && first && (proto == 6 || proto == 17) {
                    if let (Some(s), Some(d)) = (be16(l2 + ihl), be16(l2 + ihl + 2)) {
                        p.ports = Some((s, d));
                    }
                }
            }
            Some(0x86dd) => {
                let (Some(&v), Some(&next)) = (f.get(l2), f.get(l2 + 6)) else {
                    return p;
                };
                p.ipv6 = v >> 4 == 6;
                p.proto = next;
                if p.ipv6 && (next == 6 || next == 17) {
                    if let (Some(s), Some(d)) = (be16(l2 + 40), be16(l2 + 42)) {
                        p.ports = Some((s, d));
                    }
                }
            }
            _ => {}
        }
        p
    }

    fn is(&self, x: Proto) -> bool {
        match x {
            Proto::Ip => self.ipv4,
            Proto::Tcp => (self.ipv4 || self.ipv6) && self.proto == 6,
            Proto::Udp => (self.ipv4 || self.ipv6) && self.proto == 17,
            Proto::Icmp => self.ipv4 && self.proto == 1,
            Proto::Arp => self.arp,
            Proto::Ip6 => self.ipv6,
            Proto::Icmp6 => self.ipv6 && self.proto == 58,
        }
    }

    fn addr(&self, d: Dir, f: impl Fn(u32) -> bool) -> bool {
        if !self.ipv4 && !self.arp {
            return false;
        }
        match d {
            Dir::Either => f(self.src) || f(self.dst),
            Dir::Src => f(self.src),
            Dir::Dst => f(self.dst),
        }
    }

    fn port(&self, d: Dir, port: u16) -> bool {
        let Some((s, t)) = self.ports else {
            return false;
        };
        match d {
            Dir::Either => s == port || t == port,
            Dir::Src => s == port,
            Dir::Dst => t == port,
        }
    }
}

/// A layer's side: the program in force and where to copy to.
#[derive(Default)]
pub struct Capturer {
    gen: u32,
    program: Option<Program>,
    snaplen: u32,
}

impl Capturer {
    /// Reads the client's program again if it changed; the snap length
    /// and the program to apply (None: a program that failed its check,
    /// which captures nothing).
    pub fn refresh(&mut self, ctl: &CaptureCtl) -> Option<(&Program, u32)> {
        let gen = ctl.gen.load(Acquire);
        // Odd: being written.
        if gen & 1 == 1 {
            return None;
        }
        if gen != self.gen {
            let n = (ctl.n_ops.load(Relaxed) as usize).min(MAX_OPS);
            let words: Vec<[u32; 3]> = ctl.ops[..n]
                .iter()
                .map(|w| [w[0].load(Relaxed), w[1].load(Relaxed), w[2].load(Relaxed)])
                .collect();
            let snaplen = ctl.snaplen.load(Relaxed).clamp(1, MAX_SNAPLEN);
            // Rewritten while read: read again next time.
            if ctl.gen.load(Acquire) != gen {
                return None;
            }
            self.gen = gen;
            self.program = Program::decode(&words).ok();
            self.snaplen = snaplen;
        }
        let snaplen = self.snaplen;
        self.program.as_ref().map(|p| (p, snaplen))
    }
}

/// The client's side of [`CaptureCtl`]: writes a program (the layers pick
/// it up at their next push into a watched ring).
pub fn publish(ctl: &CaptureCtl, program: &Program, snaplen: u32, rings: u64) {
    ctl.rings.store(0, SeqCst);
    // Odd while written: a layer reading meanwhile sees the change and
    // reads again.
    ctl.gen.fetch_add(1, SeqCst);
    for (i, op) in program.ops().iter().enumerate() {
        for (k, w) in op.encode().into_iter().enumerate() {
            ctl.ops[i][k].store(w, Relaxed);
        }
    }
    ctl.n_ops.store(program.ops().len() as u32, Relaxed);
    ctl.snaplen.store(snaplen.clamp(1, MAX_SNAPLEN), Relaxed);
    ctl.gen.fetch_add(1, SeqCst);
    ctl.rings.store(rings, SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `p` matches the frame of [`frame`]; the same datagram
    /// without its Ethernet header must get the same verdict.
    fn m(p: &Program, proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> bool {
        let f = frame(proto, src, dst, sport, dport);
        let e = p.matches(&f, Carries::Ethernet);
        assert_eq!(e, p.matches(&f[14..], Carries::Ipv4), "bare datagram");
        assert!(!p.matches(&f, Carries::Messages));
        e
    }

    #[test]
    fn rings_carry_frames_below_ipd_datagrams_above_and_messages_to_sockd() {
        use crate::layer::LayerId as L;
        assert_eq!(Carries::ring(L::driver(0), L::NETDEVD), Carries::Ethernet);
        assert_eq!(Carries::ring(L::FILTERD, L::IPD), Carries::Ethernet);
        assert_eq!(Carries::ring(L::IPD, L::TCPD), Carries::Ipv4);
        assert_eq!(Carries::ring(L::UDPD, L::IPD), Carries::Ipv4);
        assert_eq!(Carries::ring(L::TCPD, L::SOCKD), Carries::Messages);
        assert_eq!(Carries::ring(L::SOCKD, L::UDPD), Carries::Messages);
    }

    fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = proto;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn ip(a: [u8; 4]) -> u32 {
        u32::from_be_bytes(a)
    }

    #[test]
    fn programs_are_checked_and_evaluate_like_tcpdump() {
        use Op::*;
        assert_eq!(Program::new(vec![And]), Err(ProgramError::BadStack));
        assert_eq!(Program::new(vec![True, True]), Err(ProgramError::BadStack));
        assert_eq!(Program::new(vec![]), Err(ProgramError::TooLong));
        // tcp and (port 80 or not src host 10.0.0.1)
        let p = Program::new(vec![
            Proto(super::Proto::Tcp),
            Port(Dir::Either, 80),
            Host(Dir::Src, ip([10, 0, 0, 1])),
            Not,
            Or,
            And,
        ])
        .unwrap();
        let words: Vec<[u32; 3]> = p.ops().iter().map(|o| o.encode()).collect();
        assert_eq!(Program::decode(&words).unwrap(), p);
        assert!(m(&p, 6, [10, 0, 0, 1], [10, 0, 0, 2], 1234, 80));
        assert!(!m(&p, 6, [10, 0, 0, 1], [10, 0, 0, 2], 1234, 81));
        assert!(m(&p, 6, [10, 0, 0, 3], [10, 0, 0, 2], 1234, 81));
        assert!(!m(&p, 17, [10, 0, 0, 3], [10, 0, 0, 2], 1234, 80));
        let net = Program::new(vec![Net(Dir::Dst, ip([10, 0, 0, 0]), 0xffff_ff00)]).unwrap();
        assert!(m(&net, 1, [1, 1, 1, 1], [10, 0, 0, 9], 0, 0));
        assert!(!m(&net, 1, [10, 0, 0, 9], [1, 1, 1, 1], 0, 0));
        // Short or foreign frames match no address term, and never panic.
        for n in 0..40 {
            let f = frame(6, [10, 0, 0, 1], [10, 0, 0, 2], 1, 80);
            let _ = p.matches(&f[..n], Carries::Ethernet);
            let _ = p.matches(&f[14..n.max(14)], Carries::Ipv4);
        }
    }

    #[test]
    fn ip6_icmp6_and_the_transports_over_ipv6_match() {
        use Op::*;
        // An IPv6 frame: ICMPv6, or TCP to port 80 (fixed header only).
        let v6 = |next: u8| {
            let mut f = vec![0u8; 14 + 40 + 8];
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f[14] = 0x60;
            f[14 + 6] = next;
            f[56..58].copy_from_slice(&80u16.to_be_bytes());
            f
        };
        let prog = |ops: Vec<Op>| Program::new(ops).unwrap();
        let is = |p: &Program, f: &[u8]| p.matches(f, Carries::Ethernet);
        let ip6 = prog(vec![Proto(super::Proto::Ip6)]);
        let icmp6 = prog(vec![Proto(super::Proto::Icmp6)]);
        let tcp80 = prog(vec![Proto(super::Proto::Tcp), Port(Dir::Dst, 80), And]);
        let ip = prog(vec![Proto(super::Proto::Ip)]);
        assert!(is(&ip6, &v6(58)) && is(&icmp6, &v6(58)) && !is(&tcp80, &v6(58)));
        assert!(is(&tcp80, &v6(6)) && !is(&icmp6, &v6(6)) && !is(&ip, &v6(6)));
        let v4 = frame(1, [10, 0, 0, 1], [10, 0, 0, 2], 0, 0);
        assert!(!is(&ip6, &v4) && !is(&icmp6, &v4));
        let words: Vec<[u32; 3]> = icmp6.ops().iter().map(|o| o.encode()).collect();
        assert_eq!(Program::decode(&words).unwrap(), icmp6);
    }

    #[test]
    fn a_ring_keeps_records_in_order_drops_when_full_and_survives_garbage() {
        let mut mem = vec![0u64; 512];
        let hdr = CaptureRingHdr {
            tail: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            captured: AtomicU64::new(0),
            _pad: [0; 5],
            head: AtomicU64::new(0),
            _pad2: [0; 7],
        };
        // SAFETY: `mem` outlives the region and nothing else uses it.
        let data = unsafe { Region::new(mem.as_mut_ptr().cast(), 4096) };
        let r = CaptureRing { hdr: &hdr, data };
        let mut want = Vec::new();
        for round in 0..200u32 {
            let f = vec![round as u8; 300 + (round as usize * 97) % 1300];
            if r.put(u64::from(round), round % 5, &f, 1400) {
                want.push((round, f[..f.len().min(1400)].to_vec()));
            }
            if round % 3 == 2 {
                let (got, corrupt) = r.take();
                assert_eq!(corrupt, 0);
                for g in got {
                    let (n, d) = want.remove(0);
                    assert_eq!((g.ts_ns, g.ring, &g.data), (u64::from(n), n % 5, &d));
                }
            }
        }
        assert!(r.drops() > 0, "4 KiB cannot hold three of the larger ones");
        // Garbage where a record should be: skipped, never a panic.
        let (_, _) = r.take();
        hdr.tail.store(hdr.head.load(Relaxed) + 64, Relaxed);
        mem_fill(&r, 0xff);
        let (got, corrupt) = r.take();
        assert!(got.is_empty() && corrupt > 0);
    }

    proptest::proptest! {
        /// Any words a client (or a hostile layer) leaves in the control
        /// block are refused or make a program that evaluates any frame.
        #[test]
        fn any_program_is_refused_or_evaluates_any_frame(
            words in proptest::collection::vec(proptest::array::uniform3(0u32..0x0007_0300), 0..70),
            frame in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
        ) {
            if let Ok(p) = Program::decode(&words) {
                let _ = p.matches(&frame, Carries::Ethernet);
                let _ = p.matches(&frame, Carries::Ipv4);
                let again: Vec<[u32; 3]> = p.ops().iter().map(|o| o.encode()).collect();
                proptest::prop_assert_eq!(Program::decode(&again), Ok(p));
            }
        }
    }

    fn mem_fill(r: &CaptureRing, b: u8) {
        r.data.fill(0, r.data.len(), b);
    }
}
