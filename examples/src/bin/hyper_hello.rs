//! An HTTP/1.1 server written with hyper and tokio, on strata: the same
//! code as over tokio's own sockets, with `libsock::tokio::TcpListener`
//! in place of `tokio::net::TcpListener`. `GET /` answers a greeting,
//! `GET /bytes/N` N bytes (a repeating pattern, up to 100 MB), anything
//! else 404.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::process::ExitCode;

use clap::Parser;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// HTTP server on the strata stack, with hyper on tokio.
#[derive(Parser)]
#[command(name = "hyper-hello", version)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: String,
    /// strata instance to use (also STRATA_INSTANCE).
    #[arg(long, short)]
    instance: Option<String>,
}

/// Largest `/bytes/N` answered.
const MAX_BYTES: usize = 100 << 20;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let body = if path == "/" {
        Some(Bytes::from_static(b"hello from strata\n"))
    } else {
        path.strip_prefix("/bytes/")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n <= MAX_BYTES)
            .map(|n| {
                (0..n)
                    .map(|i| b"0123456789abcdef"[i % 16])
                    .collect::<Vec<u8>>()
                    .into()
            })
    };
    Ok(match body {
        Some(b) => Response::new(Full::new(b)),
        None => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
}

async fn serve(listen: &str) -> std::io::Result<()> {
    let listener = libsock::tokio::TcpListener::bind(listen).await?;
    println!("hyper-hello: serving on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let conn =
                http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(answer));
            if let Err(e) = conn.await {
                eprintln!("hyper-hello: connection: {e}");
            }
        });
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(i) = &args.instance {
        std::env::set_var("STRATA_INSTANCE", i);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyper-hello: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(&args.listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper-hello: {e}");
            ExitCode::FAILURE
        }
    }
}
