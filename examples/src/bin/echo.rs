//! An echo server on libsock: every UDP datagram it receives goes back to
//! its sender unchanged, and every TCP connection gets its bytes back.

#![forbid(unsafe_code)]

use clap::Parser;
use std::io::ErrorKind;
use std::process::ExitCode;

/// Echo server on the strata stack: sends every UDP datagram back to
/// where it came from, and echoes every TCP connection (a thread each).
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

fn serve_tcp(l: libsock::TcpListener) {
    for s in l.incoming() {
        match s {
            Ok(s) => {
                std::thread::spawn(move || {
                    let mut r = &s;
                    let mut w = &s;
                    // Copy until the peer closes its side, then close ours.
                    if let Err(e) = std::io::copy(&mut r, &mut w) {
                        eprintln!("echo: tcp: {e}");
                    }
                    let _ = s.shutdown(std::net::Shutdown::Write);
                });
            }
            Err(e) => eprintln!("echo: accept: {e}"),
        }
    }
}
