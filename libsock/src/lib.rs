//! libsock: sockets on a strata stack, with the API of `std::net`.
//!
//! [`UdpSocket`], [`TcpListener`] and [`TcpStream`] look and fail like
//! their `std::net` namesakes (same methods, same `io::ErrorKind`s and raw
//! OS errors as on Linux), but the stack behind them is strata's, not the
//! kernel's: socket calls are messages to strata's socket server, sockd,
//! over a Unix socket, and data moves through memory shared with sockd,
//! one pair of rings per socket.
//!
//! ```no_run
//! use libsock::UdpSocket;
//!
//! let sock = UdpSocket::bind("0.0.0.0:0")?;
//! sock.connect("10.77.0.1:7")?;
//! sock.send(b"ping")?;
//! let mut buf = [0u8; 1500];
//! let n = sock.recv(&mut buf)?;
//! assert_eq!(&buf[..n], b"ping");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Which stack
//!
//! Several strata stacks (instances) can run on one machine, each under
//! a name. Sockets made the `std` way ([`UdpSocket::bind`],
//! [`TcpStream::connect`], ...) use the instance named by the environment
//! variable `STRATA_INSTANCE` ([`INSTANCE_ENV`]), or `"default"`. A
//! [`Stack`] or a [`Builder`] names one explicitly:
//! `UdpSocket::builder().instance("lab").udp_bind("0.0.0.0:0")`.
//!
//! When no stack of that name runs, calls fail at once — they never wait
//! for one to appear — with `NotFound` or `ConnectionRefused` and a
//! message like `no strata stack "lab" is running
//! (/run/strata/lab/sockd.sock: No such file or directory (os error 2))`.
//!
//! The process keeps one session (one Unix socket) per stack, shared by
//! all its sockets and threads; it is opened by the first socket.
//!
//! # Blocking, timeouts, non-blocking mode
//!
//! Socket calls to sockd (bind, connect, names, options, close) are
//! answered at once. Waiting — for a datagram, for room in a full send
//! ring, for a connection to accept or complete — happens on the socket's
//! own shared memory and wake-up socket pair, so one busy socket never holds up
//! another, and many threads may use one socket at once. Read and write
//! timeouts and non-blocking mode are kept by libsock and behave as in
//! `std` on Linux: a timed-out or would-block call fails with
//! `WouldBlock` (`EAGAIN`); `connect_timeout` fails with `TimedOut`.
//!
//! # Readiness for event loops
//!
//! Every socket implements [`AsRawFd`](std::os::fd::AsRawFd) (and
//! `AsFd`): the fd is the end of the socket's wake-up socket pair that
//! libsock waits on. Register it for readability
//! with epoll, mio or poll(2), put the socket in non-blocking mode, and
//! when it fires call the socket until `WouldBlock`. It fires on any
//! change (data, room to send, a pending error, a stack that went away);
//! a call that returns `WouldBlock` clears it, so it works level- and
//! edge-triggered alike. Do not read it yourself, and do not mix it with
//! blocking calls on the same socket. See
//! [`UdpSocket`'s `AsRawFd`](UdpSocket#impl-AsRawFd-for-UdpSocket).
//!
//! # Async Rust
//!
//! With the `tokio` feature, [`tokio`](crate::tokio) has `TcpListener`,
//! `TcpStream` and `UdpSocket` for tokio, built on the readiness fd
//! through tokio's reactor.
//!
//! # When sockd restarts
//!
//! strata's launcher restarts any layer that dies, sockd included, and
//! sockd keeps its socket table across the restart. libsock notices the
//! lost session (a background thread, `libsock-watch`, waits for it to
//! hang up; a request that fails notices too), reconnects (after 1 ms,
//! then doubling the pause up to every 50 ms), re-attaches every socket
//! of the process (handing sockd the same shared memory and wake end
//! again), and carries on: interrupted socket
//! calls are sent again, blocked receives, sends, accepts and connects
//! keep waiting (connections that were waiting in the accept queue, or
//! completed while sockd was down, are still delivered), and readiness
//! fds keep firing. The application sees a pause, not an error.
//!
//! If sockd does not come back within 10 s (`STRATA_RECONNECT_MS`,
//! [`RECONNECT_ENV`], in milliseconds), libsock gives up: waiting calls
//! and later calls fail with an error that says the stack went away. A
//! later call that finds the stack running again reconnects.
//!
//! # Limits for now
//!
//! strata speaks IPv4 only: IPv6 addresses fail with `Unsupported`.
#![deny(missing_docs)]

mod addr;
mod core;
mod session;
mod stack;
mod tcp;
#[cfg(feature = "tokio")]
pub mod tokio;
mod udp;

pub use crate::core::{set_interrupt_policy, Readiness};
pub use session::prepare_fork;
pub use stack::{Builder, Stack, DEFAULT_BACKLOG};
pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::{UdpSocket, MAX_UDP_PAYLOAD};

/// `std::net::Shutdown`, re-exported for [`TcpStream::shutdown`].
pub use std::net::Shutdown;

/// The environment variable naming the default instance
/// (`STRATA_INSTANCE`; `"default"` when unset).
///
/// ```no_run
/// std::env::set_var(libsock::INSTANCE_ENV, "lab");
/// let sock = libsock::UdpSocket::bind("0.0.0.0:0")?; // on "lab"
/// # Ok::<(), std::io::Error>(())
/// ```
pub const INSTANCE_ENV: &str = strata_ipc::service::INSTANCE_ENV;

/// The environment variable with how long (milliseconds) libsock keeps
/// trying to reach a restarted sockd before it gives up
/// (`STRATA_RECONNECT_MS`, default 10000).
///
/// ```no_run
/// std::env::set_var(libsock::RECONNECT_ENV, "30000");
/// ```
pub const RECONNECT_ENV: &str = "STRATA_RECONNECT_MS";

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::time::{Duration, Instant};

    const NOWHERE: &str = "libsock-test-no-such-instance";

    #[test]
    fn sockets_can_move_between_threads_like_std() {
        fn shared<T: Send + Sync>() {}
        shared::<UdpSocket>();
        shared::<TcpListener>();
        shared::<TcpStream>();
        shared::<Stack>();
        shared::<Builder>();
    }

    #[test]
    fn no_stack_means_an_immediate_clear_error() {
        let t = Instant::now();
        let e = UdpSocket::builder()
            .instance(NOWHERE)
            .udp_bind("0.0.0.0:0")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string().starts_with(&format!(
                "no strata stack \"{NOWHERE}\" is running (/run/strata/{NOWHERE}/sockd.sock: "
            )),
            "{e}"
        );
        let e = Stack::connect(NOWHERE).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = TcpListener::builder()
            .instance(NOWHERE)
            .tcp_bind("0.0.0.0:80")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn ipv6_is_refused_before_looking_for_the_stack() {
        let e = UdpSocket::builder()
            .instance(NOWHERE)
            .udp_bind("[::]:0")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("IPv4 only"), "{e}");
    }

    /// Runs in a child process of the test binary, with the environment
    /// set there (setting it here would race the other tests' threads).
    #[test]
    fn the_environment_names_the_instance() {
        const ME: &str = "tests::the_environment_names_the_instance";
        if std::env::var_os("LIBSOCK_TEST_CHILD").is_some() {
            assert_eq!(session::env_instance(), "libsock-test-env");
            let e = UdpSocket::bind("0.0.0.0:0").unwrap_err();
            assert!(
                e.to_string()
                    .contains("no strata stack \"libsock-test-env\" is running"),
                "{e}"
            );
            let e = TcpStream::connect("10.0.0.1:80").unwrap_err();
            assert!(e.to_string().contains("\"libsock-test-env\""), "{e}");
            std::env::remove_var(INSTANCE_ENV);
            assert_eq!(session::env_instance(), "default");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", ME, "--test-threads=1"])
            .env("LIBSOCK_TEST_CHILD", "1")
            .env(INSTANCE_ENV, "libsock-test-env")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
