//! A static-file HTTP/1.1 server on libsock: GET and HEAD, keep-alive,
//! large files streamed in 256 KiB writes, a thread per connection.

#![forbid(unsafe_code)]

use clap::Parser;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libsock::{TcpListener, TcpStream};
use strata_examples::http::{self, Method, PathError, Request};

/// Static-file HTTP/1.1 server on the strata stack: serves the files
/// under --root with GET and HEAD, keeps connections alive (HTTP/1.1's
/// default; `Connection: close` is honoured) and streams large files in
/// big chunks. One thread per connection.
#[derive(Parser)]
#[command(name = "httpd", version)]
struct Args {
    /// Directory to serve.
    #[arg(long)]
    root: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: String,
    /// strata instance to use (also STRATA_INSTANCE).
    #[arg(long, short)]
    instance: Option<String>,
    /// Bytes per write when streaming a file.
    #[arg(long, default_value_t = 256 << 10)]
    chunk: usize,
    /// Close a connection idle (or stalled) for this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Most connections served at once; more are closed at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Log every request to stderr.
    #[arg(long)]
    log: bool,
}

/// What every connection thread shares.
struct Server {
    root: PathBuf,
    chunk: usize,
    timeout: Duration,
    log: bool,
    active: AtomicUsize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let root = match args.root.canonicalize() {
        Ok(r) if r.is_dir() => r,
        Ok(r) => {
            eprintln!("httpd: {} is not a directory", r.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("httpd: {}: {e}", args.root.display());
            return ExitCode::FAILURE;
        }
    };
    let mut b = TcpListener::builder().backlog(1024);
    if let Some(i) = &args.instance {
        b = b.instance(i.as_str());
    }
    let listener = match b.tcp_bind(args.listen.as_str()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("httpd: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| args.listen.clone(), |a| a.to_string());
    let server = Arc::new(Server {
        root,
        chunk: args.chunk.clamp(4096, 16 << 20),
        timeout: Duration::from_secs(args.timeout.max(1)),
        log: args.log,
        active: AtomicUsize::new(0),
    });
    say(&format!(
        "httpd: serving {} on {addr}",
        server.root.display()
    ));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                eprintln!("httpd: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if server.active.fetch_add(1, Ordering::AcqRel) >= args.max_connections {
            server.active.fetch_sub(1, Ordering::AcqRel);
            drop(stream);
            continue;
        }
        let server = server.clone();
        let spawned = std::thread::Builder::new()
            .name("httpd-conn".into())
            .spawn(move || {
                if let Err(e) = serve(&server, &stream) {
                    if server.log {
                        eprintln!("httpd: connection: {e}");
                    }
                }
                server.active.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            eprintln!("httpd: cannot start a thread: {e}");
        }
    }
    ExitCode::SUCCESS
}

/// A line on stdout; a closed stdout is not the server's problem.
fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Serves requests on one connection until it closes or must be closed.
fn serve(server: &Server, stream: &TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(server.timeout))?;
    stream.set_write_timeout(Some(server.timeout))?;
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut head: Vec<u8> = Vec::with_capacity(4096);
    let mut scratch = vec![0u8; 16 << 10];
    let mut chunk: Vec<u8> = Vec::new();
    let mut r = stream;
    loop {
        let (req, used) = match http::parse_request(&head) {
            Ok(Some(p)) => p,
            Ok(None) => {
                let n = match r.read(&mut scratch) {
                    Ok(n) => n,
                    // Idle keep-alive connection: close it quietly.
                    Err(e) if e.kind() == ErrorKind::WouldBlock && head.is_empty() => return Ok(()),
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    return Ok(());
                }
                head.extend_from_slice(&scratch[..n]);
                continue;
            }
            Err(e) => {
                let (code, reason) = e.status();
                if server.log {
                    eprintln!("httpd: {peer} bad request: {code} ({e:?})");
                }
                error(stream, code, reason, false, true, &[])?;
                return linger(stream);
            }
        };
        head.drain(..used);
        // This server reads no bodies: skip any that was sent.
        let mut body = req.content_length;
        let here = (body as usize).min(head.len());
        head.drain(..here);
        body -= here as u64;
        while body > 0 {
            let n = r.read(&mut scratch[..(body as usize).min(16 << 10)])?;
            if n == 0 {
                return Ok(());
            }
            body -= n as u64;
        }
        let keep = respond(server, stream, &req, &mut chunk)?;
        if server.log {
            eprintln!("httpd: {peer} {} {}", req.method.as_str(), req.target);
        }
        if !(keep && req.keep_alive) {
            return linger(stream);
        }
    }
}

/// Closes our side, then reads what the client still sends for a short
/// while, so that a reset does not destroy the response it has not read.
fn linger(stream: &TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 4096];
    let mut left = 1usize << 20;
    let mut r = stream;
    while left > 0 {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "md" | "rs" | "toml" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    http::http_date(secs)
}

/// A response head.
fn head(code: u16, reason: &str, len: u64, ctype: &str, close: bool, extra: &[&str]) -> String {
    let mut h = format!(
        "HTTP/1.1 {code} {reason}\r\nServer: strata-httpd\r\nDate: {}\r\n\
         Content-Type: {ctype}\r\nContent-Length: {len}\r\n",
        now()
    );
    for e in extra {
        h.push_str(e);
        h.push_str("\r\n");
    }
    if close {
        h.push_str("Connection: close\r\n");
    }
    h.push_str("\r\n");
    h
}

/// An error response with a short text body (none for HEAD).
fn error(
    mut w: &TcpStream,
    code: u16,
    reason: &str,
    head_only: bool,
    close: bool,
    extra: &[&str],
) -> io::Result<()> {
    let body = format!("{code} {reason}\n");
    let mut out = head(
        code,
        reason,
        body.len() as u64,
        "text/plain; charset=utf-8",
        close,
        extra,
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    w.write_all(&out)
}

/// Where a request's file is: a regular file under the root (following
/// symbolic links only while they stay inside it), `index.html` for a
/// directory.
fn locate(root: &Path, target: &str) -> Result<(PathBuf, File, u64), (u16, &'static str)> {
    let segs = http::target_segments(target).map_err(|e| match e {
        PathError::Bad => (400, "Bad Request"),
        PathError::Traversal => (403, "Forbidden"),
    })?;
    let mut path = root.to_path_buf();
    path.extend(segs);
    let not_found = (404, "Not Found");
    let mut real = path.canonicalize().map_err(|_| not_found)?;
    if !real.starts_with(root) {
        return Err((403, "Forbidden"));
    }
    if real.is_dir() {
        real = real
            .join("index.html")
            .canonicalize()
            .map_err(|_| not_found)?;
        if !real.starts_with(root) {
            return Err((403, "Forbidden"));
        }
    }
    let file = File::open(&real).map_err(|e| match e.kind() {
        ErrorKind::PermissionDenied => (403, "Forbidden"),
        _ => not_found,
    })?;
    let meta = file.metadata().map_err(|_| not_found)?;
    if !meta.is_file() {
        return Err(not_found);
    }
    Ok((real, file, meta.len()))
}

/// Answers one request. Ok(false): the connection must close after it.
fn respond(
    server: &Server,
    stream: &TcpStream,
    req: &Request,
    chunk: &mut Vec<u8>,
) -> io::Result<bool> {
    let head_only = req.method == Method::Head;
    let close = !req.keep_alive;
    if let Method::Other(_) = req.method {
        error(
            stream,
            405,
            "Method Not Allowed",
            false,
            close,
            &["Allow: GET, HEAD"],
        )?;
        return Ok(true);
    }
    let (path, file, len) = match locate(&server.root, &req.target) {
        Ok(f) => f,
        Err((code, reason)) => {
            error(stream, code, reason, head_only, close, &[])?;
            return Ok(true);
        }
    };
    let h = head(200, "OK", len, content_type(&path), close, &[]);
    let mut w = stream;
    if head_only {
        w.write_all(h.as_bytes())?;
        return Ok(true);
    }
    // The head and the first part of the file go out in one write, the
    // rest in chunks of `server.chunk` bytes: few, large writes.
    if chunk.len() < server.chunk {
        chunk.resize(server.chunk, 0);
    }
    let mut fill = h.len();
    chunk[..fill].copy_from_slice(h.as_bytes());
    let mut left = len;
    let mut f = file.take(len);
    loop {
        while fill < chunk.len() && left > 0 {
            let n = match f.read(&mut chunk[fill..]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            fill += n;
            left -= n as u64;
        }
        if fill > 0 {
            w.write_all(&chunk[..fill])?;
        }
        if left == 0 {
            return Ok(true);
        }
        if fill == 0 {
            // The file shrank under us: the promised length cannot be
            // kept, so the connection must end here.
            return Ok(false);
        }
        fill = 0;
    }
}
