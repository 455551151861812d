//! smoltcp's side of the `versus` bench: smoltcp on a TAP device, run in
//! a thread of the bench process that entered the stack's network
//! namespace.
//!
//! The thread creates the TAP itself (`TunTapInterface::new` after
//! `setns`, so the device is born in that namespace; not persistent, it
//! vanishes when the thread drops its fd), and [`Smol::start`] gives the
//! kernel's side of it [`HOST_IP`]/24. smoltcp is [`STACK_IP`]/24, not a
//! local kernel address, so the kernel reaches it only through the TAP.
//!
//! One poll loop serves every workload: a sink on [`SINK_PORT`], an
//! echoing rr server on [`RR_PORT`], a UDP echo server on [`ECHO_PORT`],
//! and, on command, a bulk source to the kernel's sink on
//! [`PEER_SINK_PORT`] or an rr client of the kernel's server on
//! [`PEER_RR_PORT`]. Each turn polls the interface, serves the sockets
//! and then sleeps in `phy_wait` until the TAP is readable or
//! `iface.poll_delay` has passed, but at most [`MAX_WAIT`] (so a command
//! is seen soon; idle, the thread wakes 100 times a second; `phy_wait`
//! counts whole milliseconds, so a shorter delay becomes a busy turn). A
//! zero delay (a socket has more to send) skips the sleep and its
//! `select` call: smoltcp sends one segment per socket and poll, so a
//! `select` per segment would cost more than the sending.

use crate::common::sorted;
use crate::{ECHO_PORT, PEER_RR_PORT, PEER_SINK_PORT, RR_PORT, SINK_PORT};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{wait as phy_wait, Medium, TunTapInterface};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration as SDuration, Instant as SInstant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use strata_tests::{Netns, HOST_IP, STACK_IP};

/// Bytes of each TCP socket's send and receive buffers: enough that the
/// window is not what limits a bulk transfer.
const TCP_BUFFER: usize = 1 << 20;
/// Datagrams the UDP socket queues each way (with 2 KiB of room each).
const UDP_SLOTS: usize = 256;
/// The longest sleep, which bounds how late a command is seen.
const MAX_WAIT: SDuration = SDuration::from_millis(10);
/// smoltcp's MAC address (locally administered).
const MAC: [u8; 6] = [0x02, 0x53, 0x4d, 0x4f, 0x4c, 0x02];
/// First local port of the connections smoltcp opens.
const FIRST_PORT: u16 = 49152;

/// What the bench asks of the smoltcp thread.
enum Cmd {
    /// Connect to the kernel sink, send `bytes`, close.
    Source {
        bytes: u64,
        done: Sender<Result<(), String>>,
    },
    /// Connect to the kernel rr server, make `warmup` and then `count`
    /// round trips of 1 byte; the measured ones in µs, sorted.
    Rr {
        count: u64,
        warmup: u64,
        done: Sender<Result<Vec<f64>, String>>,
    },
    /// Leave the loop (and close the TAP).
    Stop,
}

/// smoltcp serving in its thread; stopped (and its TAP gone) on drop.
pub struct Smol {
    cmds: Sender<Cmd>,
    sink: Receiver<u64>,
    thread: Option<JoinHandle<()>>,
}

impl Smol {
    /// Starts smoltcp on a new TAP called `tap` in `ns` and brings the
    /// kernel's side of it up with [`HOST_IP`]/24 and a 1500-byte MTU.
    pub fn start(ns: &Netns, tap: &str) -> Smol {
        let (cmds, cmd_rx) = channel();
        let (sink_tx, sink) = channel();
        let (ready_tx, ready_rx) = channel();
        let name = tap.to_string();
        let thread = crate::common::in_netns(&ns.name, move || {
            serve(&name, &ready_tx, &cmd_rx, sink_tx);
        });
        let smol = Smol {
            cmds,
            sink,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("smoltcp: TAP {tap}: {e}"),
            Err(_) => panic!("smoltcp: the thread did not start"),
        }
        ns.run_ok(&["ip", "link", "set", tap, "mtu", "1500", "up"]);
        ns.run_ok(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", tap]);
        smol
    }

    /// Bytes the sink read from the connection that ended last.
    pub fn sink_total(&self, timeout: Duration) -> u64 {
        self.sink
            .recv_timeout(timeout)
            .expect("smoltcp's sink did not report a connection")
    }

    /// smoltcp sends `bytes` to the kernel sink and closes; returns once
    /// the kernel has closed too.
    pub fn source(&self, bytes: u64, timeout: Duration) {
        let (done, rx) = channel();
        self.send(Cmd::Source { bytes, done });
        let r = rx
            .recv_timeout(timeout)
            .expect("smoltcp's source finishing");
        r.unwrap_or_else(|e| panic!("smoltcp source: {e}"));
    }

    /// Round trips of 1 byte from smoltcp to the kernel rr server; the
    /// measured ones in µs, sorted.
    pub fn rr(&self, count: u64, warmup: u64, timeout: Duration) -> Vec<f64> {
        let (done, rx) = channel();
        self.send(Cmd::Rr {
            count,
            warmup,
            done,
        });
        let r = rx
            .recv_timeout(timeout)
            .expect("smoltcp's rr client finishing");
        r.unwrap_or_else(|e| panic!("smoltcp rr client: {e}"))
    }

    /// Hands `cmd` to the thread, which must still run.
    fn send(&self, cmd: Cmd) {
        self.cmds.send(cmd).expect("the smoltcp thread is gone");
    }
}

impl Drop for Smol {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The smoltcp thread: creates the TAP `tap`, says so on `ready`, then
/// polls and serves until told to stop.
fn serve(tap: &str, ready: &Sender<std::io::Result<()>>, cmds: &Receiver<Cmd>, sink: Sender<u64>) {
    let mut dev = match TunTapInterface::new(tap, Medium::Ethernet) {
        Ok(d) => d,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let fd = dev.as_raw_fd();
    let mut iface = interface(&mut dev);
    let mut sockets = SocketSet::new(vec![]);
    let mut apps = Apps::new(&mut sockets, sink);
    let _ = ready.send(Ok(()));
    loop {
        iface.poll(SInstant::now(), &mut dev, &mut sockets);
        apps.serve(&mut sockets);
        match cmds.try_recv() {
            Ok(Cmd::Stop) | Err(TryRecvError::Disconnected) => return,
            Ok(cmd) => apps.start(cmd, &mut iface, &mut sockets),
            Err(TryRecvError::Empty) => {}
        }
        let wait = iface
            .poll_delay(SInstant::now(), &sockets)
            .map_or(MAX_WAIT, |d| d.min(MAX_WAIT));
        if wait > SDuration::ZERO {
            phy_wait(fd, Some(wait)).expect("select on the TAP");
        }
    }
}

/// smoltcp's interface on `dev`: [`MAC`], [`STACK_IP`]/24.
fn interface(dev: &mut TunTapInterface) -> Interface {
    let mut config = Config::new(EthernetAddress(MAC).into());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    config.random_seed = now.map_or(1, |d| d.as_nanos() as u64);
    let mut iface = Interface::new(config, dev, SInstant::now());
    let ip: Ipv4Addr = STACK_IP.parse().expect("STACK_IP is an IPv4 address");
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::Ipv4(ip), 24))
            .expect("room for one address");
    });
    iface
}

/// A TCP socket with [`TCP_BUFFER`]-byte buffers each way.
fn tcp_socket(nagle: bool) -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(vec![0; TCP_BUFFER]);
    let tx = tcp::SocketBuffer::new(vec![0; TCP_BUFFER]);
    let mut s = tcp::Socket::new(rx, tx);
    s.set_nagle_enabled(nagle);
    s
}

/// A bulk transfer smoltcp sends.
struct Source {
    sock: SocketHandle,
    left: u64,
    done: Sender<Result<(), String>>,
}

/// Round trips smoltcp's client makes.
struct RrClient {
    sock: SocketHandle,
    /// Round trips to make, warm-up included.
    total: u64,
    warmup: u64,
    /// Round trips completed.
    n: u64,
    /// When the request in flight went into the socket.
    sent_at: Option<Instant>,
    us: Vec<f64>,
    done: Sender<Result<Vec<f64>, String>>,
}

/// The applications on smoltcp's sockets.
struct Apps {
    sink: SocketHandle,
    sink_bytes: u64,
    sink_tx: Sender<u64>,
    /// Where the sink reads to.
    scratch: Vec<u8>,
    rr: SocketHandle,
    udp: SocketHandle,
    source: Option<Source>,
    client: Option<RrClient>,
    /// Connections closed by us, removed once the peer has closed too.
    closing: Vec<SocketHandle>,
    next_port: u16,
}

impl Apps {
    /// The servers' sockets, added to `sockets`.
    fn new(sockets: &mut SocketSet<'static>, sink_tx: Sender<u64>) -> Apps {
        let udp_buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_SLOTS],
                vec![0; UDP_SLOTS * 2048],
            )
        };
        let mut udp = udp::Socket::new(udp_buffer(), udp_buffer());
        udp.bind(ECHO_PORT).expect("bind smoltcp's UDP echo");
        Apps {
            sink: sockets.add(tcp_socket(true)),
            sink_bytes: 0,
            sink_tx,
            scratch: vec![0; 64 << 10],
            rr: sockets.add(tcp_socket(false)),
            udp: sockets.add(udp),
            source: None,
            client: None,
            closing: Vec::new(),
            next_port: FIRST_PORT,
        }
    }

    /// One turn of every application.
    fn serve(&mut self, sockets: &mut SocketSet<'static>) {
        self.serve_sink(sockets);
        self.serve_rr(sockets);
        serve_udp(sockets.get_mut(self.udp));
        self.serve_source(sockets);
        self.serve_client(sockets);
        self.closing.retain(|&h| {
            let s = sockets.get::<tcp::Socket>(h);
            let gone = matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
            if gone {
                sockets.remove(h);
            }
            !gone
        });
    }

    /// Starts what `cmd` asks for, on a new socket.
    fn start(&mut self, cmd: Cmd, iface: &mut Interface, sockets: &mut SocketSet<'static>) {
        match cmd {
            Cmd::Source { bytes, done } => match self.connect(iface, PEER_SINK_PORT, true) {
                Ok(s) => {
                    let sock = sockets.add(s);
                    self.source = Some(Source {
                        sock,
                        left: bytes,
                        done,
                    });
                }
                Err(e) => drop(done.send(Err(e))),
            },
            Cmd::Rr {
                count,
                warmup,
                done,
            } => match self.connect(iface, PEER_RR_PORT, false) {
                Ok(s) => {
                    self.client = Some(RrClient {
                        sock: sockets.add(s),
                        total: warmup + count,
                        warmup,
                        n: 0,
                        sent_at: None,
                        us: Vec::with_capacity(count as usize),
                        done,
                    });
                }
                Err(e) => drop(done.send(Err(e))),
            },
            Cmd::Stop => {}
        }
    }

    /// A new socket connecting to the kernel peer's `port`, from the next
    /// local port.
    fn connect(
        &mut self,
        iface: &mut Interface,
        port: u16,
        nagle: bool,
    ) -> Result<tcp::Socket<'static>, String> {
        let mut s = tcp_socket(nagle);
        let host: Ipv4Addr = HOST_IP.parse().expect("HOST_IP is an IPv4 address");
        let local = self.next_port;
        self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_PORT);
        s.connect(iface.context(), (IpAddress::Ipv4(host), port), local)
            .map_err(|e| format!("connect: {e}"))?;
        Ok(s)
    }

    /// The sink: listens, reads everything (copied out, as an
    /// application's read would), and when the peer has finished, closes
    /// and reports the connection's byte count.
    fn serve_sink(&mut self, sockets: &mut SocketSet<'static>) {
        let s = sockets.get_mut::<tcp::Socket>(self.sink);
        if !s.is_open() {
            s.listen(SINK_PORT).expect("smoltcp sink listen");
        }
        while s.can_recv() {
            let n = s.recv_slice(&mut self.scratch).unwrap_or(0);
            self.sink_bytes += n as u64;
        }
        if s.state() == tcp::State::CloseWait {
            s.close();
            let _ = self.sink_tx.send(std::mem::take(&mut self.sink_bytes));
        }
    }

    /// The rr server: every byte received goes back.
    fn serve_rr(&mut self, sockets: &mut SocketSet<'static>) {
        let s = sockets.get_mut::<tcp::Socket>(self.rr);
        if !s.is_open() {
            s.listen(RR_PORT).expect("smoltcp rr server listen");
        }
        let mut buf = [0u8; 4096];
        while s.can_recv() {
            let room = s.send_capacity() - s.send_queue();
            let n = s.recv_slice(&mut buf[..room.min(4096)]).unwrap_or(0);
            if n == 0 {
                break;
            }
            s.send_slice(&buf[..n]).expect("room was there");
        }
        if s.state() == tcp::State::CloseWait {
            s.close();
        }
    }

    /// The bulk source: fills the send buffer until all is written, then
    /// closes; done once the kernel has closed too.
    fn serve_source(&mut self, sockets: &mut SocketSet<'static>) {
        let Some(src) = &mut self.source else { return };
        let s = sockets.get_mut::<tcp::Socket>(src.sock);
        if src.left > 0 && s.can_send() {
            let left = src.left;
            let n = s
                .send(|b| {
                    let n = b.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    b[..n].fill(0x5a);
                    (n, n)
                })
                .unwrap_or(0);
            src.left -= n as u64;
            if src.left == 0 {
                s.close();
            }
        }
        let result = match s.state() {
            tcp::State::TimeWait | tcp::State::Closed if src.left == 0 => Ok(()),
            tcp::State::Closed => Err(format!("connection lost, {} bytes unsent", src.left)),
            _ => return,
        };
        let _ = src.done.send(result);
        self.closing.push(src.sock);
        self.source = None;
    }

    /// The rr client: one 1-byte request at a time, timed from the moment
    /// it goes into the socket until its response is read.
    fn serve_client(&mut self, sockets: &mut SocketSet<'static>) {
        let Some(c) = &mut self.client else { return };
        let s = sockets.get_mut::<tcp::Socket>(c.sock);
        if let Some(t) = c.sent_at {
            let mut one = [0u8; 64];
            if s.recv_slice(&mut one).unwrap_or(0) > 0 {
                if c.n >= c.warmup {
                    c.us.push(t.elapsed().as_secs_f64() * 1e6);
                }
                c.n += 1;
                c.sent_at = None;
            }
        }
        let result = if c.n == c.total {
            s.close();
            Ok(sorted(std::mem::take(&mut c.us)))
        } else if !s.is_open() {
            s.abort();
            Err(format!("connection lost after {} round trips", c.n))
        } else {
            if c.sent_at.is_none() && s.can_send() {
                s.send_slice(&[c.n as u8]).expect("room for a byte");
                c.sent_at = Some(Instant::now());
            }
            return;
        };
        let _ = c.done.send(result);
        self.closing.push(c.sock);
        self.client = None;
    }
}

/// The UDP echo: every datagram back to its sender, while there is room.
fn serve_udp(s: &mut udp::Socket<'static>) {
    let mut buf = [0u8; 2048];
    while s.can_recv() && s.can_send() {
        let Ok((n, meta)) = s.recv_slice(&mut buf) else {
            break;
        };
        let _ = s.send_slice(&buf[..n], meta);
    }
}
