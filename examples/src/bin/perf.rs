//! Throughput and latency of TCP on libsock: a sink and a source for bulk
//! transfers, and a 1-byte request/response pair for round-trip latency.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use libsock::Builder;

/// TCP performance on the strata stack. `sink` and `source` measure bulk
/// throughput (Gbit/s), `rr` and `rr-server` the round-trip time of
/// 1-byte requests and responses (microseconds). Either end may be a
/// kernel socket (or another stack).
#[derive(Parser)]
#[command(name = "perf", version)]
struct Args {
    /// strata instance to use (also STRATA_INSTANCE).
    #[arg(long, short, global = true)]
    instance: Option<String>,
    /// Bytes of each socket's send and receive rings (default: libsock's).
    #[arg(long, global = true, value_parser = parse_size)]
    ring: Option<u64>,
    /// Use the standard library's sockets (the kernel's, or strata's
    /// under the LD_PRELOAD shim) instead of libsock: the same work, to
    /// measure what the shim costs.
    #[arg(long, global = true)]
    std: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the sockets come from: libsock, or `std::net`.
enum Net {
    Strata(Builder),
    Std,
}

/// What the work needs of a connection, from either API.
trait Conn: Read + Write + Send + 'static {
    fn peer(&self) -> String;
    fn close(&self, how: Shutdown) -> io::Result<()>;
    fn nodelay(&self) -> io::Result<()>;
    fn read_timeout(&self, t: Duration) -> io::Result<()>;
}

macro_rules! conn_for {
    ($t:ty) => {
        impl Conn for $t {
            fn peer(&self) -> String {
                self.peer_addr().map(|a| a.to_string()).unwrap_or_default()
            }
            fn close(&self, how: Shutdown) -> io::Result<()> {
                self.shutdown(how)
            }
            fn nodelay(&self) -> io::Result<()> {
                self.set_nodelay(true)
            }
            fn read_timeout(&self, t: Duration) -> io::Result<()> {
                self.set_read_timeout(Some(t))
            }
        }
    };
}
conn_for!(libsock::TcpStream);
conn_for!(std::net::TcpStream);

/// A listener of either API: its address, and its connections.
type Accepting = (String, Box<dyn Iterator<Item = io::Result<Box<dyn Conn>>>>);

impl Net {
    fn listen(&self, addr: &str) -> io::Result<Accepting> {
        Ok(match self {
            Net::Strata(b) => {
                let l = b.tcp_bind(addr)?;
                let at = l.local_addr()?.to_string();
                let conns = std::iter::from_fn(move || {
                    Some(l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>))
                });
                (at, Box::new(conns))
            }
            Net::Std => {
                let l = std::net::TcpListener::bind(addr)?;
                let at = l.local_addr()?.to_string();
                let conns = std::iter::from_fn(move || {
                    Some(l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>))
                });
                (at, Box::new(conns))
            }
        })
    }

    fn connect(&self, addr: &str) -> io::Result<Box<dyn Conn>> {
        Ok(match self {
            Net::Strata(b) => Box::new(b.tcp_connect(addr)?),
            Net::Std => Box::new(std::net::TcpStream::connect(addr)?),
        })
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept connections, read and discard everything; report bytes and
    /// Gbit/s per connection when it closes.
    Sink {
        /// Address and port to listen on.
        #[arg(long)]
        listen: String,
        /// Exit after this many connections (0: never).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Connect, write --bytes bytes, close; report throughput (until the
    /// peer has closed too, so everything was delivered).
    Source {
        /// Address and port to connect to.
        #[arg(long)]
        connect: String,
        /// Bytes to send (suffixes k, M, G, Ki, Mi, Gi).
        #[arg(long, value_parser = parse_size)]
        bytes: u64,
        /// Bytes per write.
        #[arg(long, default_value = "256Ki", value_parser = parse_size)]
        chunk: u64,
    },
    /// Send --count 1-byte requests, each after the previous response;
    /// report the median and 99th percentile round trip.
    Rr {
        /// Address and port of an rr-server (or any echo server).
        #[arg(long)]
        connect: String,
        /// Round trips to measure.
        #[arg(long, default_value_t = 10000)]
        count: u64,
        /// Unmeasured round trips first.
        #[arg(long, default_value_t = 100)]
        warmup: u64,
    },
    /// Answer every byte received with one byte (a thread per connection).
    RrServer {
        /// Address and port to listen on.
        #[arg(long)]
        listen: String,
    },
}

/// `123`, `10k`, `1.5G`, `256Ki`: bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim().replace('_', "");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit {
        "" | "B" => 1,
        "k" | "K" | "kB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        _ => return Err(format!("unknown unit {unit:?} (k, M, G, Ki, Mi, Gi)")),
    };
    let n: f64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    if !n.is_finite() || n < 0.0 || n * mult as f64 > u64::MAX as f64 / 2.0 {
        return Err(format!("size out of range: {s:?}"));
    }
    Ok((n * mult as f64).round() as u64)
}

/// A line on stdout, flushed; a closed stdout is not an error here.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn gbits(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64().max(1e-9) / 1e9
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut b = Builder::new();
    if let Some(i) = &args.instance {
        b = b.instance(i.as_str());
    }
    if let Some(r) = args.ring {
        let r = r.min(1 << 30) as usize;
        b = b.ring_sizes(r, r);
    }
    let b = if args.std { Net::Std } else { Net::Strata(b) };
    let r = match args.cmd {
        Cmd::Sink { listen, count } => sink(&b, &listen, count),
        Cmd::Source {
            connect,
            bytes,
            chunk,
        } => source(&b, &connect, bytes, chunk.clamp(1, 64 << 20) as usize),
        Cmd::Rr {
            connect,
            count,
            warmup,
        } => rr(&b, &connect, count.max(1), warmup),
        Cmd::RrServer { listen } => rr_server(&b, &listen),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("perf: {e}");
            ExitCode::FAILURE
        }
    }
}

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn sink(b: &Net, listen: &str, count: u64) -> io::Result<()> {
    let (addr, incoming) = b
        .listen(listen)
        .map_err(context(format!("listen on {listen}")))?;
    say(&format!("perf: sink listening on {addr}"));
    let mut threads = Vec::new();
    let mut n = 0;
    for s in incoming {
        let s = s.map_err(context("accept".into()))?;
        threads.push(std::thread::spawn(move || drain(s)));
        n += 1;
        if count != 0 && n >= count {
            break;
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Reads one connection to its end and reports it.
fn drain(mut s: Box<dyn Conn>) {
    let peer = s.peer();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    let mut start = None;
    let r = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                // From the first byte: the handshake is not throughput.
                start.get_or_insert_with(Instant::now);
                total += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let d = start.map_or(Duration::ZERO, |t| t.elapsed());
    let _ = s.close(Shutdown::Both);
    let how = match r {
        Ok(()) => String::new(),
        Err(e) => format!(" (ended by error: {e})"),
    };
    say(&format!(
        "sink: {peer}: {total} bytes in {:.3} s, {:.2} Gbit/s{how}",
        d.as_secs_f64(),
        gbits(total, d)
    ));
}

fn source(b: &Net, connect: &str, bytes: u64, chunk: usize) -> io::Result<()> {
    let mut s = b
        .connect(connect)
        .map_err(context(format!("connect to {connect}")))?;
    // Not all zeros, so that a broken path cannot look right by chance.
    let buf: Vec<u8> = (0..chunk).map(|i| (i * 7 + i / 251) as u8).collect();
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        s.write_all(&buf[..n])
            .map_err(context(format!("write after {} bytes", bytes - left)))?;
        left -= n as u64;
    }
    let written = start.elapsed();
    s.close(Shutdown::Write)?;
    // The peer closes once it has read everything.
    let mut rest = [0u8; 4096];
    loop {
        match s.read(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(context("waiting for the peer to close".into())(e)),
        }
    }
    let d = start.elapsed();
    say(&format!(
        "source: {bytes} bytes in {:.3} s, {:.2} Gbit/s (written in {:.3} s)",
        d.as_secs_f64(),
        gbits(bytes, d),
        written.as_secs_f64()
    ));
    Ok(())
}

/// The value at quantile `q` of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

fn rr(b: &Net, connect: &str, count: u64, warmup: u64) -> io::Result<()> {
    let mut s = b
        .connect(connect)
        .map_err(context(format!("connect to {connect}")))?;
    s.nodelay()?;
    s.read_timeout(Duration::from_secs(10))?;
    let mut one = [0u8; 1];
    let mut us = Vec::with_capacity(count as usize);
    for i in 0..warmup + count {
        let t = Instant::now();
        s.write_all(&[i as u8])?;
        s.read_exact(&mut one)
            .map_err(context(format!("response {i}")))?;
        if i >= warmup {
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = s.close(Shutdown::Write);
    us.sort_by(f64::total_cmp);
    let mean = us.iter().sum::<f64>() / us.len() as f64;
    say(&format!(
        "rr: {count} round trips of 1 byte: median {:.1} us, p99 {:.1} us, min {:.1} us, mean {:.1} us",
        quantile(&us, 0.5),
        quantile(&us, 0.99),
        us[0],
        mean
    ));
    Ok(())
}

fn rr_server(b: &Net, listen: &str) -> io::Result<()> {
    let (addr, incoming) = b
        .listen(listen)
        .map_err(context(format!("listen on {listen}")))?;
    say(&format!("perf: rr-server listening on {addr}"));
    for s in incoming {
        let mut s = s.map_err(context("accept".into()))?;
        std::thread::spawn(move || {
            let _ = s.nodelay();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        // One byte back per byte received.
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("10k"), Ok(10_000));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_size("256Ki"), Ok(262_144));
        assert_eq!(parse_size("200_000_000"), Ok(200_000_000));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1e30").is_err());
    }

    #[test]
    fn quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }
}
