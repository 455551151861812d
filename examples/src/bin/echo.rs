//! An echo server on libsock: every UDP datagram it receives goes back to
//! its sender unchanged, and every TCP connection gets its bytes back.

#![forbid(unsafe_code)]

use clap::Parser;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::process::ExitCode;

/// Echo server on the strata stack: sends every UDP datagram back to
/// where it came from, and echoes every TCP connection (all of them in
/// one thread, on a poller).
#[derive(Parser)]
#[command(name = "echo", version)]
struct Args {
    /// Address and port to serve UDP on.
    #[arg(long, default_value = "0.0.0.0:7")]
    udp: String,
    /// Address and port to serve TCP on (none: no TCP).
    #[arg(long)]
    tcp: Option<String>,
    /// strata instance to use (also STRATA_INSTANCE).
    #[arg(long, short)]
    instance: Option<String>,
    /// Stop after echoing this many datagrams (0: never).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Set SO_REUSEADDR before binding.
    #[arg(long)]
    reuse_address: bool,
    /// The TCP listen backlog (connections established and not yet
    /// accepted; at most 4096).
    #[arg(long, default_value_t = libsock::DEFAULT_BACKLOG)]
    backlog: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(i) = &args.instance {
        std::env::set_var("STRATA_INSTANCE", i);
    }
    if let Some(addr) = args.tcp.clone() {
        match libsock::TcpListener::builder()
            .backlog(args.backlog)
            .tcp_bind(addr.as_str())
        {
            Ok(l) => {
                println!("echo: serving TCP on {addr}");
                std::thread::spawn(move || serve_tcp(l));
            }
            Err(e) => {
                eprintln!("echo: cannot serve TCP on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let sock = match bind(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo: cannot serve UDP on {}: {e}", args.udp);
            return ExitCode::FAILURE;
        }
    };
    match sock.local_addr() {
        Ok(a) => println!("echo: serving UDP on {a}"),
        Err(e) => println!("echo: serving UDP ({e})"),
    }
    let mut buf = vec![0u8; 65536];
    let mut n = 0u64;
    loop {
        match sock.recv_from(&mut buf) {
            Ok((len, from)) => {
                if let Err(e) = sock.send_to(&buf[..len], from) {
                    eprintln!("echo: send to {from}: {e}");
                }
                n += 1;
                if args.count != 0 && n >= args.count {
                    return ExitCode::SUCCESS;
                }
            }
            // A refused earlier reply surfaces here, as on Linux; it
            // concerns one peer, not the server.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                eprintln!("echo: receive: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}

fn bind(args: &Args) -> std::io::Result<libsock::UdpSocket> {
    if args.reuse_address {
        libsock::UdpSocket::builder()
            .reuse_address(true)
            .udp_bind(args.udp.as_str())
    } else {
        libsock::UdpSocket::bind(args.udp.as_str())
    }
}

/// Echoes every connection `l` accepts, all of them in this thread:
/// one poller watches the listener and the connections (edge-triggered:
/// each is served until it would block).
fn serve_tcp(l: libsock::TcpListener) {
    if let Err(e) = serve_tcp_on_poller(l) {
        eprintln!("echo: tcp: {e}");
    }
}

/// One echoed connection: what it sent that could not go back yet.
struct Conn {
    s: libsock::TcpStream,
    pending: Vec<u8>,
    pending_from: usize,
    ended: bool,
}

const LISTENER: usize = 0;

fn serve_tcp_on_poller(l: libsock::TcpListener) -> std::io::Result<()> {
    let stack = libsock::Stack::from_env()?;
    let poller = libsock::Poller::new(&stack)?;
    l.set_nonblocking(true)?;
    poller.register(&l, LISTENER)?;
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next = LISTENER + 1;
    let mut events = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        poller.wait(&mut events, None)?;
        for e in &events {
            if e.token == LISTENER {
                loop {
                    match l.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(true)?;
                            poller.register(&s, next)?;
                            conns.insert(
                                next,
                                Conn {
                                    s,
                                    pending: Vec::new(),
                                    pending_from: 0,
                                    ended: false,
                                },
                            );
                            next += 1;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("echo: accept: {e}");
                            break;
                        }
                    }
                }
            } else if let Some(c) = conns.get_mut(&e.token) {
                match serve(c, &mut buf) {
                    Ok(false) => {}
                    Ok(true) => {
                        conns.remove(&e.token);
                    }
                    Err(err) => {
                        eprintln!("echo: tcp: {err}");
                        conns.remove(&e.token);
                    }
                }
            }
        }
    }
}

/// Moves what `c` can: its pending bytes back, then what it sent, until
/// it would block. True once it is finished (the peer closed its side and
/// everything went back: ours is shut down too).
fn serve(c: &mut Conn, buf: &mut [u8]) -> std::io::Result<bool> {
    loop {
        while c.pending_from < c.pending.len() {
            match c.s.write(&c.pending[c.pending_from..]) {
                Ok(n) => c.pending_from += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        c.pending.clear();
        c.pending_from = 0;
        if c.ended {
            let _ = c.s.shutdown(std::net::Shutdown::Write);
            return Ok(true);
        }
        match c.s.read(buf) {
            Ok(0) => c.ended = true,
            Ok(n) => c.pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}
