//! libsock: sockets on a strata stack, with the API of `std::net`.
//!
//! [`UdpSocket`], [`TcpListener`] and [`TcpStream`] look and fail like
//! their `std::net` namesakes (same methods, same `io::ErrorKind`s and raw
//! OS errors as on Linux), but the stack behind them is strata's, not the
//! kernel's: socket calls are messages to strata's socket server, sockd,
//! over a Unix socket, and data moves through memory shared with sockd,
//! one pair of rings per socket, carved from a few shared segments per
//! process: a socket costs no file descriptor and no mapping of its own
//! (until an event loop asks for its readiness fd), so a process can
//! hold a hundred thousand of them.
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
//! # IPv4 and IPv6
//!
//! Every call that takes addresses takes both families, as std's do: a
//! name resolving to several addresses is tried address by address, in
//! the resolver's order, whatever their family.
//!
//! A socket has a family, as one made by `socket(2)` has a domain: that
//! of the address it was bound or connected to when it was made
//! ([`UdpSocket::bind`], [`TcpListener::bind`], [`TcpStream::connect`]:
//! an IPv6 socket for any `SocketAddr::V6`, IPv4-mapped ones included),
//! or the one asked for ([`Builder::udp_unbound`] is IPv4,
//! [`Builder::udp_unbound_v6`] IPv6). Accepted streams are of their
//! listener's family.
//!
//! - `0.0.0.0:p` is IPv4's wildcard; `[::]:p` is IPv6's, and takes IPv4
//!   too (dual-stack, as Linux's default `net.ipv6.bindv6only = 0`),
//!   so that `[::]:p` and `0.0.0.0:p` conflict on one port.
//!   `IPV6_V6ONLY` ([`Builder::only_v6`], [`UdpSocket::set_only_v6`]
//!   before the bind) makes an IPv6 socket take IPv6 only; an IPv4
//!   socket may then have the same port.
//! - Addresses a socket reports (`local_addr`, `peer_addr`, `recv_from`,
//!   `accept`) are `SocketAddr::V4` on an IPv4 socket and
//!   `SocketAddr::V6` on an IPv6 socket, where an IPv4 peer shows as
//!   `::ffff:a.b.c.d`, as on a Linux dual-stack socket.
//! - Addresses given to a socket must fit its family, with Linux's
//!   errors: an IPv4 socket refuses IPv6 addresses with `EAFNOSUPPORT`
//!   (IPv4-mapped ones count as the IPv4 they map, where Linux would
//!   refuse them too); an IPv6 socket connects and sends to a
//!   `SocketAddr::V4` as to its mapped address, but refuses it to bind
//!   (`EINVAL`), and with `IPV6_V6ONLY` refuses IPv4 peers
//!   (`ENETUNREACH`, or `EAFNOSUPPORT` for a `SocketAddr::V4` connect).
//!
//! A stack whose TCP (or UDP) layer does not take IPv6 yet refuses it
//! with `EAFNOSUPPORT` from the bind or connect, as an error like any
//! other.
#![deny(missing_docs)]

mod addr;
mod core;
mod poll;
mod session;
mod slots;
mod stack;
mod tcp;
#[cfg(feature = "tokio")]
pub mod tokio;
mod udp;

pub use crate::core::{set_interrupt_policy, Readiness};
pub use poll::{Event, Poller, Source};
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
    fn ipv6_reaches_for_the_stack_like_ipv4() {
        let b = UdpSocket::builder().instance(NOWHERE);
        for a in ["[::]:0", "[::1]:53", "[::ffff:127.0.0.1]:0"] {
            let e = b.udp_bind(a).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{a}");
            let e = b.tcp_bind(a).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{a}");
        }
        assert_eq!(
            b.udp_unbound_v6().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            b.tcp_connect("[fd00::1]:80").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn v6only_refuses_ipv4_binds_before_looking_for_the_stack() {
        let b = UdpSocket::builder().instance(NOWHERE).only_v6(true);
        let e = b.udp_bind("[::ffff:127.0.0.1]:0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let e = b.tcp_bind("[::ffff:0.0.0.0]:80").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        // An IPv4 socket has no IPV6_V6ONLY: it is made as ever.
        let e = b.udp_bind("0.0.0.0:0").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
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
