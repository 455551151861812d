//! `strata capture`: packets at a point of the stack, written as pcapng
//! (or pcap) for tcpdump and Wireshark. The client maps the instance's
//! fabric, writes a filter program, a snap length and the rings to watch
//! ([`strata_ipc::capture`]), and drains the layers' capture rings until
//! it has its count, is interrupted, or its reader goes away; then it
//! turns the capture off and says what it captured and what the capture
//! rings lost (as tcpdump does). The stack never waits for it.

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, TsResolution};
use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_ipc::capture::{publish, Carries, Dir, Op, Program, Proto, MAX_SNAPLEN};
use strata_ipc::{now_ns, Fabric, LayerId, MAX_LAYERS};

/// What `strata capture` was asked.
pub struct Args {
    pub iface: Option<String>,
    pub at: Vec<String>,
    pub write: String,
    pub count: Option<u64>,
    pub snaplen: u32,
    pub pcap: bool,
    /// Cut TCP super-segments into the segments the wire carries.
    pub segment: bool,
    pub expr: Vec<String>,
}

/// The segments a TCP super-segment `packet` (whole: an Ethernet frame or
/// a bare datagram, as `carries` says) leaves the stack as on a link of
/// `mtu`, in the same form; None for anything else (written as is).
fn wire_segments(packet: &[u8], carries: Carries, mtu: usize) -> Option<Vec<Vec<u8>>> {
    use strata_proto::offload::{segment_tcp4, IpFrame};
    let framed;
    let frame = match carries {
        Carries::Ethernet => packet,
        // Cut as a frame with a blank Ethernet header, which comes off
        // again below.
        Carries::Ipv4 => {
            framed = [&[0u8; 12][..], &[0x08, 0x00], packet].concat();
            &framed
        }
        Carries::Messages => return None,
    };
    if frame.len() <= mtu + 14 {
        return None;
    }
    let f = IpFrame::parse(frame).ok()?;
    let thl = usize::from(*frame.get(f.l4 + 12)? >> 4) * 4;
    let mss = mtu.checked_sub(f.l4 - f.l3 + thl).filter(|&m| m > 0)?;
    let segs = segment_tcp4(frame, u16::try_from(mss).ok()?).ok()?;
    let skip = if carries == Carries::Ipv4 { 14 } else { 0 };
    Some(
        segs.map(|s| {
            let mut v = s.headers()[skip..].to_vec();
            v.extend_from_slice(s.payload);
            v
        })
        .collect(),
    )
}

// ------------------------------------------------------------ expression

/// Compiles a tcpdump-style expression: primitives `host A`, `net A/N`
/// (or `net A mask M`), `port N`, each optionally after `src` or `dst`
/// and a protocol (`tcp port 80`), the protocols `ip tcp udp icmp arp`,
/// combined with `and`/`&&`, `or`/`||`, `not`/`!` and parentheses.
/// `and` and `or` bind equally and from the left, as in pcap-filter(7).
/// The empty expression matches everything.
pub fn compile(words: &[String]) -> Result<Program, String> {
    // Parentheses may touch their neighbours ("(port 80)").
    let mut toks = Vec::new();
    for w in words {
        let mut cur = String::new();
        for ch in w.chars() {
            if ch == '(' || ch == ')' {
                if !cur.is_empty() {
                    toks.push(std::mem::take(&mut cur));
                }
                toks.push(ch.to_string());
            } else if ch.is_whitespace() {
                if !cur.is_empty() {
                    toks.push(std::mem::take(&mut cur));
                }
            } else {
                cur.push(ch);
            }
        }
        if !cur.is_empty() {
            toks.push(cur);
        }
    }
    if toks.is_empty() {
        return Program::new(vec![Op::True]).map_err(|e| format!("{e:?}"));
    }
    let mut p = Parser {
        toks: &toks,
        i: 0,
        ops: Vec::new(),
    };
    p.expr()?;
    if let Some(t) = p.toks.get(p.i) {
        return Err(format!("unexpected {t:?} in the filter"));
    }
    Program::new(p.ops).map_err(|e| match e {
        strata_ipc::capture::ProgramError::TooLong => "the filter is too long".to_string(),
        e => format!("the filter does not make sense ({e:?})"),
    })
}

struct Parser<'a> {
    toks: &'a [String],
    i: usize,
    ops: Vec<Op>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.i).map(String::as_str)
    }

    fn next(&mut self, what: &str) -> Result<&str, String> {
        let t = self
            .toks
            .get(self.i)
            .ok_or_else(|| format!("the filter ends where {what} was expected"))?;
        self.i += 1;
        Ok(t)
    }

    fn expr(&mut self) -> Result<(), String> {
        self.unary()?;
        loop {
            let op = match self.peek() {
                Some("and" | "&&") => Op::And,
                Some("or" | "||") => Op::Or,
                _ => return Ok(()),
            };
            self.i += 1;
            self.unary()?;
            self.ops.push(op);
        }
    }

    fn unary(&mut self) -> Result<(), String> {
        match self.peek() {
            Some("not" | "!") => {
                self.i += 1;
                self.unary()?;
                self.ops.push(Op::Not);
                Ok(())
            }
            Some("(") => {
                self.i += 1;
                self.expr()?;
                match self.next("')'")? {
                    ")" => Ok(()),
                    t => Err(format!("expected ')' in the filter, found {t:?}")),
                }
            }
            _ => self.primitive(),
        }
    }

    /// `[proto] [src|dst] (host A | net N | port P)`, or a protocol.
    fn primitive(&mut self) -> Result<(), String> {
        let proto = match self.peek() {
            Some("ip") => Some(Proto::Ip),
            Some("tcp") => Some(Proto::Tcp),
            Some("udp") => Some(Proto::Udp),
            Some("icmp") => Some(Proto::Icmp),
            Some("arp") => Some(Proto::Arp),
            Some("ip6") => Some(Proto::Ip6),
            Some("icmp6") => Some(Proto::Icmp6),
            _ => None,
        };
        if proto.is_some() {
            self.i += 1;
        }
        let dir = match self.peek() {
            Some("src") => Some(Dir::Src),
            Some("dst") => Some(Dir::Dst),
            _ => None,
        };
        if dir.is_some() {
            self.i += 1;
        }
        let d = dir.unwrap_or(Dir::Either);
        let term = match self.peek() {
            Some("host") => {
                self.i += 1;
                Some(Op::Host(d, addr(self.next("an address")?)?))
            }
            Some("net") => {
                self.i += 1;
                let n = self.next("a network")?.to_string();
                let (a, m) = if self.peek() == Some("mask") {
                    self.i += 1;
                    (addr(&n)?, addr(self.next("a mask")?)?)
                } else {
                    net(&n)?
                };
                Some(Op::Net(d, a, m))
            }
            Some("port") => {
                self.i += 1;
                let t = self.next("a port")?;
                let p = t
                    .parse::<u16>()
                    .map_err(|_| format!("{t:?} is not a port (0-65535)"))?;
                Some(Op::Port(d, p))
            }
            _ if dir.is_some() => {
                return Err(format!(
                    "{} must be followed by host, net or port",
                    if d == Dir::Src { "src" } else { "dst" }
                ))
            }
            _ => None,
        };
        match (proto, term) {
            (Some(p), Some(t)) => {
                self.ops.push(Op::Proto(p));
                self.ops.push(t);
                self.ops.push(Op::And);
            }
            (Some(p), None) => self.ops.push(Op::Proto(p)),
            (None, Some(t)) => self.ops.push(t),
            (None, None) => {
                return Err(match self.peek() {
                    Some(t) => format!(
                        "{t:?} is not understood in a filter (host, net, port, src, dst, ip, ip6, tcp, udp, icmp, icmp6, arp, and, or, not)"
                    ),
                    None => "the filter ends where a primitive was expected".into(),
                })
            }
        }
        Ok(())
    }
}

fn addr(s: &str) -> Result<u32, String> {
    s.parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

/// `A/N`, or a bare address (a /32).
fn net(s: &str) -> Result<(u32, u32), String> {
    let (a, n) = match s.split_once('/') {
        Some((a, n)) => (
            a,
            n.parse::<u32>()
                .ok()
                .filter(|&n| n <= 32)
                .ok_or_else(|| format!("{s:?}: a prefix length is 0-32"))?,
        ),
        None => (s, 32),
    };
    let mask = if n == 0 { 0 } else { u32::MAX << (32 - n) };
    Ok((addr(a)?, mask))
}

// ---------------------------------------------------------------- points

/// A ring a capture watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    /// Its index in the fabric.
    pub ring: usize,
    /// `producer->consumer`, the pcapng interface's name.
    pub name: String,
    /// Frames or datagrams (never socket messages).
    pub carries: Carries,
}

/// The rings a capture point names: `wire` (of `iface`: what driverd
/// read and what it is given to write), `LAYER-in` (every ring into the
/// layer that holds packets) or `LAYER-out` (out of it).
pub fn rings_of(f: &Fabric, point: &str, iface: u8) -> Result<Vec<Watched>, String> {
    // Ring r's producer and consumer, at index r.
    let ends: Vec<(LayerId, LayerId)> = f.rings().into_iter().map(|(p, c, ..)| (p, c)).collect();
    let pick = |keep: &dyn Fn(LayerId, LayerId) -> bool| -> Vec<Watched> {
        (0..ends.len())
            .filter_map(|r| {
                let (p, c) = ends[r];
                let carries = Carries::ring(p, c);
                (keep(p, c) && carries != Carries::Messages).then(|| Watched {
                    ring: r,
                    name: format!("{}->{}", p.label(), c.label()),
                    carries,
                })
            })
            .collect()
    };
    let drv = LayerId::driver(iface);
    let rings = if point == "wire" {
        pick(&|p, c| p == drv || c == drv)
    } else {
        let (name, dir) = point
            .rsplit_once('-')
            .filter(|(_, d)| *d == "in" || *d == "out")
            .ok_or_else(|| {
                format!("--at {point:?}: wire, or LAYER-in / LAYER-out (e.g. filterd-in, ipd-out)")
            })?;
        let l = LayerId::from_label(name)
            .filter(|l| *l != LayerId::LAUNCHER)
            .ok_or_else(|| format!("--at {point:?}: {name:?} is not a layer"))?;
        if l == LayerId::SOCKD {
            return Err(format!(
                "--at {point:?}: sockd's rings carry socket calls and stream data, not packets; \
                 tcpd-in, tcpd-out, udpd-in and udpd-out see the transports' datagrams"
            ));
        }
        if dir == "in" {
            pick(&|_, c| c == l)
        } else {
            pick(&|p, _| p == l)
        }
    };
    if rings.is_empty() {
        return Err(format!("--at {point:?}: no such ring in this instance"));
    }
    Ok(rings)
}

/// The pcap link type of what a ring carries.
fn linktype(c: Carries) -> DataLink {
    match c {
        Carries::Ipv4 => DataLink::IPV4,
        _ => DataLink::ETHERNET,
    }
}

// ---------------------------------------------------------------- output

/// The output, shared between the pcap writer and the loop that flushes
/// it after every batch (the pcap writer gives no access to its writer).
#[derive(Clone)]
struct Sink(std::rc::Rc<std::cell::RefCell<Box<dyn Write>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// pcapng with one interface per ring, or pcap.
enum Out<W: Write> {
    Ng(PcapNgWriter<W>, Vec<usize>),
    Pcap(PcapWriter<W>),
}

impl<W: Write> Out<W> {
    fn new(w: W, pcap: bool, rings: &[Watched], snaplen: u32) -> Result<Out<W>, String> {
        let e = |e: pcap_file::PcapError| format!("writing the capture: {e}");
        if pcap {
            // One kind for all ([`run`] refuses a mix).
            let kind = rings.first().map_or(Carries::Ethernet, |r| r.carries);
            let h = PcapHeader {
                snaplen,
                datalink: linktype(kind),
                ts_resolution: TsResolution::NanoSecond,
                ..PcapHeader::default()
            };
            return Ok(Out::Pcap(PcapWriter::with_header(w, h).map_err(e)?));
        }
        let mut ng = PcapNgWriter::new(w).map_err(e)?;
        for r in rings {
            ng.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: linktype(r.carries),
                snaplen,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(r.name.clone())),
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            })
            .map_err(e)?;
        }
        Ok(Out::Ng(ng, rings.iter().map(|r| r.ring).collect()))
    }

    fn write(
        &mut self,
        ts: Duration,
        ring: usize,
        orig_len: u32,
        data: &[u8],
    ) -> std::io::Result<()> {
        let io = |e: pcap_file::PcapError| match e {
            pcap_file::PcapError::IoError(e) => e,
            e => std::io::Error::other(e.to_string()),
        };
        match self {
            Out::Pcap(w) => w
                .write_packet(&PcapPacket::new(ts, orig_len, data))
                .map(|_| ())
                .map_err(io),
            Out::Ng(w, ids) => {
                let id = ids.iter().position(|&r| r == ring).unwrap_or(0) as u32;
                w.write_pcapng_block(EnhancedPacketBlock {
                    interface_id: id,
                    timestamp: ts,
                    original_len: orig_len,
                    data: Cow::Borrowed(data),
                    options: vec![],
                })
                .map(|_| ())
                .map_err(io)
            }
        }
    }
}

// ------------------------------------------------------------------ run

/// `strata capture`.
pub fn run(instance: &str, a: &Args) -> Result<(), String> {
    let program = compile(&a.expr)?;
    if a.snaplen == 0 || a.snaplen > MAX_SNAPLEN {
        return Err(format!("-s {}: 1 to {MAX_SNAPLEN} bytes", a.snaplen));
    }
    let to_stdout = a.write == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        return Err("the capture is binary pcap data: give -w FILE, or pipe it (strata capture ... | tcpdump -r -)".into());
    }
    // A clear error when no launcher runs, before touching its memory.
    crate::control::request(instance, serde_json::json!({"cmd": "status"}))?;
    let f = Fabric::open(instance).map_err(|e| format!("the instance's memory: {e}"))?;
    let iface = match &a.iface {
        None => 0,
        Some(n) => (0..f.params().n_ifaces as u8)
            .find(|&i| f.iface_name(i) == *n)
            .ok_or_else(|| format!("-i {n}: no such interface"))?,
    };
    let mut rings: Vec<Watched> = Vec::new();
    let points = if a.at.is_empty() {
        vec!["wire".to_string()]
    } else {
        a.at.clone()
    };
    for p in &points {
        for r in rings_of(&f, p, iface)? {
            if !rings.iter().any(|x| x.ring == r.ring) {
                rings.push(r);
            }
        }
    }
    if a.pcap && rings.iter().any(|r| r.carries != rings[0].carries) {
        return Err("--format pcap holds one link type, and these rings carry both Ethernet frames and bare datagrams: use pcapng (the default), or points of one kind".into());
    }
    let mask = rings.iter().fold(0u64, |m, r| m | 1 << (r.ring & 63));
    let ctl = f.capture_ctl();
    let me = std::process::id();
    let owner = ctl.owner.load(SeqCst);
    if owner == strata_ipc::capture::CAPTURE_CLEARING {
        return Err("the launcher is ending a capture whose client died: try again".into());
    }
    if owner != 0 && owner != me && std::path::Path::new(&format!("/proc/{owner}")).exists() {
        return Err(format!(
            "another capture (pid {owner}) is running on this instance"
        ));
    }
    if ctl
        .owner
        .compare_exchange(owner, me, SeqCst, SeqCst)
        .is_err()
    {
        return Err("another capture started at the same moment".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    // Ctrl-C or SIGTERM ends the capture cleanly (a handler may be set
    // only once per process; a second is not our case).
    let _ = ctrlc::set_handler(move || s.store(true, SeqCst));

    let lost_before: u64 = (0..MAX_LAYERS as u8)
        .map(|l| f.capture_ring(LayerId(l)).drops())
        .sum();
    // Records already waiting were for an earlier capture.
    for l in 0..MAX_LAYERS as u8 {
        let _ = f.capture_ring(LayerId(l)).take();
    }
    publish(ctl, &program, a.snaplen, mask);
    let names: Vec<&str> = rings.iter().map(|r| r.name.as_str()).collect();
    eprintln!(
        "capturing on {}, snapshot length {} bytes",
        names.join(", "),
        a.snaplen
    );
    let mtu = f.iface(iface).mtu.load(Relaxed) as usize;
    let res = pump(&f, a, &rings, mtu, &stop);
    ctl.rings.store(0, SeqCst);
    ctl.owner.store(0, SeqCst);
    let lost: u64 = (0..MAX_LAYERS as u8)
        .map(|l| f.capture_ring(LayerId(l)).drops())
        .sum::<u64>()
        .saturating_sub(lost_before);
    let (n, corrupt) = res?;
    eprintln!("{n} packets captured");
    eprintln!("{lost} packets dropped by strata (capture buffer full)");
    if corrupt > 0 {
        eprintln!("{corrupt} bytes of capture records skipped as corrupt");
    }
    Ok(())
}

/// Drains the capture rings into the output until done; (packets
/// written, corrupt bytes).
fn pump(
    f: &Fabric,
    a: &Args,
    rings: &[Watched],
    mtu: usize,
    stop: &AtomicBool,
) -> Result<(u64, u64), String> {
    // Wall-clock time of the monotonic clock's zero.
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_nanos(now_ns()));
    let w: Box<dyn Write> = if a.write == "-" {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&a.write).map_err(|e| format!("-w {}: {e}", a.write))?,
        ))
    };
    let mut sink = Sink(std::rc::Rc::new(std::cell::RefCell::new(w)));
    let mut out = Out::new(sink.clone(), a.pcap, rings, a.snaplen)?;
    sink.flush()
        .map_err(|e| format!("writing the capture: {e}"))?;
    let (mut n, mut corrupt) = (0u64, 0u64);
    let done = |n: u64| a.count.is_some_and(|c| n >= c);
    loop {
        let finishing = stop.load(SeqCst);
        let mut batch = Vec::new();
        for l in 0..MAX_LAYERS as u8 {
            let (recs, bad) = f.capture_ring(LayerId(l)).take();
            corrupt += bad;
            batch.extend(recs);
        }
        batch.sort_by_key(|r| r.ts_ns);
        for r in &batch {
            // Only a whole super-segment can be cut.
            let whole = r.data.len() == r.orig_len as usize;
            let carries = rings
                .iter()
                .find(|w| w.ring == r.ring as usize)
                .map_or(Carries::Ethernet, |w| w.carries);
            let cut = (a.segment && whole)
                .then(|| wire_segments(&r.data, carries, mtu))
                .flatten();
            let frames = match &cut {
                Some(segs) => segs
                    .iter()
                    .map(|s| (s.len() as u32, s.as_slice()))
                    .collect(),
                None => vec![(r.orig_len, r.data.as_slice())],
            };
            for (orig_len, data) in frames {
                if done(n) {
                    break;
                }
                let ts = epoch + Duration::from_nanos(r.ts_ns);
                if let Err(e) = out.write(ts, r.ring as usize, orig_len, data) {
                    // The reader went away (tcpdump quit): the end, not
                    // an error.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok((n, corrupt));
                    }
                    return Err(format!("writing the capture: {e}"));
                }
                n += 1;
            }
        }
        if !batch.is_empty() {
            match sink.flush() {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok((n, corrupt)),
                Err(e) => return Err(format!("writing the capture: {e}")),
                Ok(()) => {}
            }
        }
        if done(n) || finishing {
            return Ok((n, corrupt));
        }
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Result<Vec<Op>, String> {
        let words: Vec<String> = s.split(' ').map(str::to_string).collect();
        compile(&words).map(|p| p.ops().to_vec())
    }

    #[test]
    fn a_super_segment_is_cut_to_the_mtu_and_other_frames_are_left_alone() {
        // Ethernet, IPv4 (20), TCP (20): 3,000 bytes of payload.
        let payload = 3000;
        let mut f = vec![0u8; 14 + 40 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[14 + 8] = 64;
        f[14 + 9] = 6;
        f[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 1]);
        f[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 2]);
        f[34 + 12] = 5 << 4;
        let segs = wire_segments(&f, Carries::Ethernet, 1500).expect("cut");
        assert_eq!(segs.len(), 3, "1460 + 1460 + 80");
        assert!(segs.iter().all(|s| s.len() <= 1514));
        let total: usize = segs.iter().map(|s| s.len() - 54).sum();
        assert_eq!(total, payload);
        assert!(
            wire_segments(&f[..1000], Carries::Ethernet, 1500).is_none(),
            "fits the MTU"
        );
        // The same datagram without its Ethernet header (a ring above
        // ipd): the same segments, without theirs.
        let bare = wire_segments(&f[14..], Carries::Ipv4, 1500).expect("cut");
        let want: Vec<Vec<u8>> = segs.iter().map(|s| s[14..].to_vec()).collect();
        assert_eq!(bare, want);
        assert!(wire_segments(&f, Carries::Messages, 1500).is_none());
    }

    #[test]
    fn tcpdump_expressions_compile_to_postfix() {
        let h = u32::from(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            c("tcp port 80 and not src host 10.0.0.1").unwrap(),
            [
                Op::Proto(Proto::Tcp),
                Op::Port(Dir::Either, 80),
                Op::And,
                Op::Host(Dir::Src, h),
                Op::Not,
                Op::And
            ]
        );
        assert_eq!(
            c("(udp or icmp) && dst net 10.0.0.0/8").unwrap(),
            [
                Op::Proto(Proto::Udp),
                Op::Proto(Proto::Icmp),
                Op::Or,
                Op::Net(Dir::Dst, 0x0a00_0000, 0xff00_0000),
                Op::And
            ]
        );
        assert_eq!(
            c("net 10.0.0.0 mask 255.255.0.0").unwrap()[0],
            Op::Net(Dir::Either, 0x0a00_0000, 0xffff_0000)
        );
        assert_eq!(compile(&[]).unwrap().ops(), [Op::True]);
        for bad in [
            "port",
            "port 70000",
            "host 10.0.0",
            "src",
            "tcp and",
            "(tcp",
            "tcp )",
            "bogus",
            "net 10.0.0.0/33",
        ] {
            let e = c(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }
}
