//! Choosing the stack: [`Stack`] and the socket [`Builder`].

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use strata_proto::sock::{Kind, Request, SockOpt};

use crate::addr::{each_addr, to_wire, Family, Use};
use crate::core::{Core, DEFAULT_RING, DEFAULT_TCP_RX_RING, DEFAULT_TCP_TX_RING};
use crate::session::{env_instance, Session};
use crate::tcp::{connect_one, TcpListener, TcpStream};
use crate::udp::UdpSocket;

/// The listen backlog [`TcpListener::bind`] uses (as std does).
pub const DEFAULT_BACKLOG: u32 = 128;

/// A running strata stack, by instance name: this process's session with
/// its sockd.
///
/// One session exists per instance per process; every `Stack` for the
/// same instance shares it (cloning is cheap). Sockets made without a
/// `Stack` ([`UdpSocket::bind`], [`TcpStream::connect`], ...) use the
/// instance named by `STRATA_INSTANCE` ([`crate::INSTANCE_ENV`]), or
/// `"default"`. A `Stack` is how a program talks to several stacks at
/// once, or to one whose name it gets from elsewhere.
///
/// ```no_run
/// use libsock::Stack;
///
/// let lab = Stack::connect("lab")?;
/// let sock = lab.builder().udp_bind("0.0.0.0:0")?;
/// sock.send_to(b"hello", "10.77.0.1:7")?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Stack {
    pub(crate) session: Arc<Session>,
}

impl Stack {
    /// The stack of instance `instance`. Connects this process's session
    /// with its sockd if there is none yet.
    ///
    /// Fails at once (it never waits for a stack to appear) when the
    /// instance runs no sockd, with `NotFound` or `ConnectionRefused` and
    /// a message naming the instance and the socket path.
    ///
    /// ```no_run
    /// match libsock::Stack::connect("lab") {
    ///     Ok(stack) => println!("talking to {}", stack.instance()),
    ///     Err(e) => eprintln!("{e}"), // no strata stack "lab" is running (...)
    /// }
    /// ```
    pub fn connect(instance: &str) -> io::Result<Stack> {
        Ok(Stack {
            session: Session::get(instance)?,
        })
    }

    /// The stack named by `STRATA_INSTANCE`, or `"default"`.
    ///
    /// ```no_run
    /// let stack = libsock::Stack::from_env()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_env() -> io::Result<Stack> {
        Stack::connect(&env_instance())
    }

    /// The instance name.
    ///
    /// ```no_run
    /// let stack = libsock::Stack::connect("lab")?;
    /// assert_eq!(stack.instance(), "lab");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn instance(&self) -> &str {
        self.session.instance()
    }

    /// A socket [`Builder`] for this stack.
    ///
    /// ```no_run
    /// let stack = libsock::Stack::connect("lab")?;
    /// let listener = stack.builder().backlog(16).tcp_bind("0.0.0.0:8080")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder(&self) -> Builder {
        Builder::new().stack(self)
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("instance", &self.instance())
            .finish()
    }
}

#[derive(Clone, Debug)]
enum Which {
    Env,
    Named(String),
    Stack(Stack),
}

/// Makes sockets with the settings `std::net` has no place for: which
/// stack, `SO_REUSEADDR`, `SO_REUSEPORT` and `IPV6_V6ONLY` before
/// `bind`, the listen backlog, the sizes of the socket's shared-memory
/// rings, sockets not bound yet of either family.
///
/// [`UdpSocket::builder`], [`TcpListener::builder`] and
/// [`TcpStream::builder`] all return `Builder::new()`.
///
/// ```no_run
/// use libsock::UdpSocket;
///
/// // Two sockets on one port, as with SO_REUSEADDR.
/// let a = UdpSocket::builder().reuse_address(true).udp_bind("0.0.0.0:5353")?;
/// let b = UdpSocket::builder().reuse_address(true).udp_bind("0.0.0.0:5353")?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    which: Which,
    reuse_address: Option<bool>,
    reuse_port: bool,
    /// IPV6_V6ONLY for the IPv6 sockets made.
    only_v6: bool,
    /// Ring sizes asked for; None: the defaults of the socket's kind.
    tx_ring: Option<usize>,
    rx_ring: Option<usize>,
    backlog: u32,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: the stack from the environment, no `SO_REUSEADDR` for
    /// UDP (std's listeners set it, so TCP listeners do too), a backlog
    /// of [`DEFAULT_BACKLOG`], rings of 256 KiB each way but 1 MiB to send
    /// and 4 MiB to receive on TCP.
    ///
    /// ```no_run
    /// let sock = libsock::Builder::new().udp_bind("0.0.0.0:0")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> Builder {
        Builder {
            which: Which::Env,
            reuse_address: None,
            reuse_port: false,
            only_v6: false,
            tx_ring: None,
            rx_ring: None,
            backlog: DEFAULT_BACKLOG,
        }
    }

    /// Makes the sockets on `stack`.
    ///
    /// ```no_run
    /// let lab = libsock::Stack::connect("lab")?;
    /// let sock = libsock::Builder::new().stack(&lab).udp_bind("0.0.0.0:0")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stack(mut self, stack: &Stack) -> Builder {
        self.which = Which::Stack(stack.clone());
        self
    }

    /// Makes the sockets on the stack of instance `name` (connected when
    /// the socket is made).
    ///
    /// ```no_run
    /// let sock = libsock::Builder::new().instance("lab").udp_bind("0.0.0.0:0")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn instance(mut self, name: impl Into<String>) -> Builder {
        self.which = Which::Named(name.into());
        self
    }

    /// `SO_REUSEADDR`, set before the socket is bound.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::builder()
    ///     .reuse_address(false)
    ///     .tcp_bind("0.0.0.0:8080")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reuse_address(mut self, on: bool) -> Builder {
        self.reuse_address = Some(on);
        self
    }

    /// `SO_REUSEPORT`, set before the socket is bound: listeners (or UDP
    /// sockets) of one user that all set it share an address and port,
    /// and the stack spreads the peers over them by address and port,
    /// as Linux does. Another user's socket cannot join them.
    ///
    /// ```no_run
    /// // One listener per worker thread on one port.
    /// let workers: Vec<_> = (0..4)
    ///     .map(|_| libsock::TcpListener::builder().reuse_port(true).tcp_bind("0.0.0.0:8080"))
    ///     .collect::<Result<_, _>>()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reuse_port(mut self, on: bool) -> Builder {
        self.reuse_port = on;
        self
    }

    /// `IPV6_V6ONLY` for the IPv6 sockets the builder makes, set before
    /// they are bound or connected (Linux takes it only then): a
    /// socket bound to `[::]:p` then takes IPv6 only, leaving IPv4's
    /// `0.0.0.0:p` to another socket, and refuses IPv4 peers (see
    /// [`UdpSocket::send_to`], [`UdpSocket::connect`]). Off by default:
    /// IPv6 sockets are dual-stack, as with Linux's
    /// `net.ipv6.bindv6only = 0`. IPv4 sockets, which have no such
    /// option, are made as without it, so that a name resolving to
    /// both families can be given.
    ///
    /// ```no_run
    /// // IPv6 and IPv4 on one port, in two listeners.
    /// let v6 = libsock::TcpListener::builder().only_v6(true).tcp_bind("[::]:8080")?;
    /// let v4 = libsock::TcpListener::bind("0.0.0.0:8080")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn only_v6(mut self, on: bool) -> Builder {
        self.only_v6 = on;
        self
    }

    /// Whether a socket of `family` gets IPV6_V6ONLY.
    pub(crate) fn v6only_for(&self, family: Family) -> bool {
        family == Family::V6 && self.only_v6
    }

    /// Bytes of the send (`tx`) and receive (`rx`) rings in the socket's
    /// shared memory: rounded up to a power of two, at least 4 KiB. They
    /// bound what can be queued (and, for UDP, the largest datagram that
    /// can be sent); sockd may refuse memory it finds too large.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::builder()
    ///     .ring_sizes(64 << 10, 4 << 20)
    ///     .udp_bind("0.0.0.0:9000")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ring_sizes(mut self, tx: usize, rx: usize) -> Builder {
        self.tx_ring = Some(tx);
        self.rx_ring = Some(rx);
        self
    }

    /// The send and receive ring sizes for a socket of `kind`: those
    /// asked for, else 256 KiB each, but 1 MiB to send and 4 MiB to
    /// receive on TCP.
    pub(crate) fn rings(&self, kind: Kind) -> (usize, usize) {
        let (tx, rx) = match kind {
            Kind::Tcp => (DEFAULT_TCP_TX_RING, DEFAULT_TCP_RX_RING),
            _ => (DEFAULT_RING, DEFAULT_RING),
        };
        (self.tx_ring.unwrap_or(tx), self.rx_ring.unwrap_or(rx))
    }

    /// The listen backlog of [`Builder::tcp_bind`].
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::builder().backlog(1024).tcp_bind("0.0.0.0:80")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn backlog(mut self, n: u32) -> Builder {
        self.backlog = n;
        self
    }

    pub(crate) fn session(&self) -> io::Result<Arc<Session>> {
        match &self.which {
            Which::Env => Session::get(&env_instance()),
            Which::Named(n) => Session::get(n),
            Which::Stack(s) => Ok(s.session.clone()),
        }
    }

    /// Creates a socket of `family` with the builder's rings and
    /// options, and `SO_REUSEADDR` if asked for (or by default when
    /// `reuse_default`).
    pub(crate) fn open(
        &self,
        kind: Kind,
        family: Family,
        reuse_default: bool,
    ) -> io::Result<Arc<Core>> {
        let (tx, rx) = self.rings(kind);
        self.open_sized(kind, family, reuse_default, tx, rx)
    }

    fn open_sized(
        &self,
        kind: Kind,
        family: Family,
        reuse_default: bool,
        tx: usize,
        rx: usize,
    ) -> io::Result<Arc<Core>> {
        let core = Core::open(self.session()?, kind, family, tx, rx)?;
        if self.v6only_for(family) {
            core.set_only_v6(true)?;
        }
        if self.reuse_address.unwrap_or(reuse_default) {
            core.request(&Request::SetOption {
                id: core.id,
                opt: SockOpt::ReuseAddr(true),
            })?;
        }
        if self.reuse_port {
            core.request(&Request::SetOption {
                id: core.id,
                opt: SockOpt::ReusePort(true),
            })?;
        }
        Ok(core)
    }

    /// A UDP socket bound to `addr` (the first address that works, as
    /// [`std::net::UdpSocket::bind`] does), of that address's family.
    /// Port 0 picks a free port.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::builder().udp_bind("0.0.0.0:0")?;
    /// println!("bound to {}", sock.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn udp_bind<A: ToSocketAddrs>(&self, addr: A) -> io::Result<UdpSocket> {
        each_addr(addr, |a| {
            let family = Family::of(&a);
            let at = to_wire(family, self.v6only_for(family), Use::Bind, a)?;
            let core = self.open(Kind::Udp, family, false)?;
            core.request(&Request::Bind {
                id: core.id,
                addr: at,
            })?;
            Ok(UdpSocket::from_core(core))
        })
    }

    /// An IPv4 UDP socket that is not bound yet, as
    /// `socket(AF_INET, SOCK_DGRAM, 0)` makes one: the first
    /// [`UdpSocket::send_to`] binds it to a free port.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::builder().udp_unbound()?;
    /// sock.send_to(b"ping", "10.77.0.1:7")?;
    /// println!("sent from {}", sock.local_addr()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn udp_unbound(&self) -> io::Result<UdpSocket> {
        Ok(UdpSocket::from_core(self.open(
            Kind::Udp,
            Family::V4,
            false,
        )?))
    }

    /// An IPv6 UDP socket that is not bound yet, as
    /// `socket(AF_INET6, SOCK_DGRAM, 0)` makes one: options that must
    /// come before the bind ([`UdpSocket::set_only_v6`],
    /// [`UdpSocket::set_reuse_address`]) can be set, then
    /// [`UdpSocket::bind_to`] binds it; or the first
    /// [`UdpSocket::send_to`] binds it to `[::]:0` (a free port, both
    /// families unless `IPV6_V6ONLY`), as Linux does.
    ///
    /// ```no_run
    /// let sock = libsock::UdpSocket::builder().udp_unbound_v6()?;
    /// sock.set_only_v6(true)?;
    /// sock.bind_to("[::]:5353")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn udp_unbound_v6(&self) -> io::Result<UdpSocket> {
        let core = self.open(Kind::Udp, Family::V6, false)?;
        core.set_maybe_unbound(true);
        Ok(UdpSocket::from_core(core))
    }

    /// A TCP listener on `addr` (the first address that works), with the
    /// builder's backlog.
    ///
    /// ```no_run
    /// let listener = libsock::TcpListener::builder().backlog(512).tcp_bind("0.0.0.0:8080")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tcp_bind<A: ToSocketAddrs>(&self, addr: A) -> io::Result<TcpListener> {
        each_addr(addr, |a| {
            let family = Family::of(&a);
            let at = to_wire(family, self.v6only_for(family), Use::Bind, a)?;
            // No data flows through a listener's own rings: smallest.
            let min = strata_ipc::sockring::MIN_RING as usize;
            let core = self.open_sized(Kind::Tcp, family, true, min, min)?;
            core.request(&Request::Bind {
                id: core.id,
                addr: at,
            })?;
            core.request(&Request::Listen {
                id: core.id,
                backlog: self.backlog,
            })?;
            Ok(TcpListener::from_core(core, self.rings(Kind::Tcp)))
        })
    }

    /// A TCP connection to `addr` (each address in turn until one
    /// answers), waiting as long as the stack keeps trying.
    ///
    /// ```no_run
    /// let stream = libsock::TcpStream::builder().instance("lab").tcp_connect("10.77.0.1:80")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tcp_connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<TcpStream> {
        each_addr(addr, |a| connect_one(self, a, None))
    }

    /// Starts a TCP connection to `addr` and returns the stream at once,
    /// in non-blocking mode, as `connect(2)` on a non-blocking socket does
    /// (`EINPROGRESS`): its readiness fd fires when the handshake ends,
    /// and [`TcpStream::connect_finished`] says how it ended. Errors known
    /// at once (no such stack, an address family the stack's TCP does not
    /// take, an unreachable network) are returned here.
    ///
    /// ```no_run
    /// use std::os::fd::AsRawFd;
    ///
    /// let addr = "10.77.0.1:80".parse().unwrap();
    /// let stream = libsock::TcpStream::builder().tcp_connect_nonblocking(&addr)?;
    /// let fd = stream.as_raw_fd(); // wait for it to be readable, then:
    /// while !stream.connect_finished()? { /* wait on fd again */ }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tcp_connect_nonblocking(&self, addr: &SocketAddr) -> io::Result<TcpStream> {
        crate::tcp::connect_nonblocking(self, *addr)
    }

    /// A TCP connection to `addr`, giving up after `timeout` (`TimedOut`).
    /// A zero timeout is an error, as in std.
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let addr = "10.77.0.1:80".parse().unwrap();
    /// let stream = libsock::TcpStream::builder()
    ///     .tcp_connect_timeout(&addr, Duration::from_secs(3))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tcp_connect_timeout(
        &self,
        addr: &SocketAddr,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        connect_one(self, *addr, Some(timeout))
    }
}
