//! sockd: the socket server, the stack's "system call boundary".
//!
//! Applications (libsock) hold a session on a seqpacket Unix socket and
//! make socket calls as request/response messages on it. Each socket's
//! data moves through shared memory the application created (two rings
//! and a header, `strata_ipc::sockring`), which sockd maps after checking
//! it. Payload crosses the boundary with exactly one copy each way: from
//! the application's ring into a pool buffer on send, from a pool buffer
//! into the application's ring on receive. The socket table lives in
//! sockd's arena, so a restarted sockd keeps every socket and waits for
//! its application to re-attach.

#![deny(clippy::undocumented_unsafe_blocks)]

mod notify;
mod ready;
mod recovery;
mod session;
mod sockets;
mod tcp;
mod udp;
mod wire;

use nix::errno::Errno;
use nix::sys::socket::{accept4, getsockopt, sockopt, SockFlag};
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_ipc::handle::flags;
use strata_ipc::l4::{ctl_flags, op, tcp_opt, L4Ctl, SendCredit, SendMeta, SEND_META_LEN};
use strata_ipc::serve::{Cx, Layer, Loop, Overflow, MAX_WAIT_FDS};
use strata_ipc::service::{ArenaFormat, LISTEN_FD_ENV};
use strata_ipc::sockring::{self, kick, state as sstate, wait, Doorbell, Segment, SockMem};
use strata_ipc::socktable::{self, rec_flags, sock_state, SockRec, SockTable};
use strata_ipc::{service, Buffers, Handle, LayerId, Service, BUDGET, HEADROOM};
use strata_proto::sock::{Addr, How, Kind, Request, Response, SockOpt, VERSION};
use strata_sockd::charge::Charges;
use strata_sockd::family::{self, REC_V6ONLY};
use strata_sockd::rows::Rows;
use strata_sockd::stream::{Arrival, Stream};
use strata_sockd::tally::Tally;
use wire::Recv;

/// Most connections kept waiting for a descriptor to identify them.
const MAX_UNIDENTIFIED: usize = 16;

/// Largest ring of one socket (`[limits] socket_buffer_bytes` at most).
const MAX_RING_BYTES: usize = 16 << 20;
/// Segments of socket memory one session may register.
const MAX_SEGMENTS: usize = 4096;
/// Bytes of address space the segments of one session may take (pages
/// exist only as the application touches them): room for 100,000
/// sockets with libsock's default rings many times over.
const MAX_SEGMENT_BYTES: usize = 4 << 40;
/// Rows of the socket table the sweep looks at per second, however
/// many turns there are (a busy sockd takes thousands: a sweep by the
/// turn cost every round trip dozens of cold looks), and at most in one
/// turn.
const SWEEP_PER_SEC: u64 = 4096;
const SWEEP_MAX: u64 = 256;
/// Sockets looked at in one turn: as many as the transports' rings have
/// room for (at most `4 * BUDGET` each), and this many more. The rest
/// wait on the list, in order, for the next turn (which comes at once:
/// the loop is held). Most looks that do something send to a transport,
/// and one that finds no room only goes back on the list: after a tcpd
/// restart every TCP socket wants a look, and 4,096 looks a turn moved
/// some 60 messages and took sockd's whole core for half a minute. The
/// spare looks move what needs no room (held data into a ring the
/// application emptied).
const LOOKS_SPARE: usize = 64;
/// How long a transport has to answer a bind or connect.
const CTL_TIMEOUT: Duration = Duration::from_secs(3);

/// Control messages that may wait for pool buffers before more are
/// dropped (and counted): far more than sockets make while buffers are
/// short, since no read credit or data is made while any waits.
const CTL_WAIT_MAX: usize = 1 << 16;
/// How long a socket found in the table after a restart waits for its
/// application to re-attach before it is closed.
const REATTACH_GRACE: Duration = Duration::from_secs(10);
/// How long after asking tcpd to announce a listener's accept queue
/// again its repeats may still arrive (tcpd answers at once; this is
/// slack for a loaded machine).
const REANNOUNCE_WINDOW: Duration = Duration::from_secs(5);
/// How long a request to tcpd may go unanswered before it is sent again
/// (tcpd answers at once; one lost without a restart is not expected, but
/// a repeat costs nothing).
const RESEND_AFTER: Duration = Duration::from_secs(1);
/// How long sockd keeps sending a CLOSE or ABORT again until tcpd
/// confirms it with CLOSED.
const CLOSE_CONFIRM_WINDOW: Duration = Duration::from_secs(30);
/// A transport's (tcpd's, udpd's) heartbeat standing still this long: its
/// requests' timeouts wait (layers beat at least every 100 ms when idle).
const TRANSPORT_STALL: Duration = Duration::from_millis(500);
/// How long sockd takes no new session after the system refused one
/// (out of descriptors): the connection waits in the listen backlog.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Largest UDP payload (65535 - 20 - 8).
const MAX_UDP: usize = 65507;

strata_ipc::layer_stats! { "sockd";
    /// Client connections (sessions) accepted.
    SessionsOpened => "sessions_opened",
    /// Sessions ended.
    SessionsClosed => "sessions_closed",
    /// Sockets created (and accepted connections).
    SocketsOpened => "sockets_opened",
    /// Bytes of sockd's own record of one TCP socket (a level: its heap
    /// state, the socket's rings and memory aside).
    TcpSocketStateBytes => "tcp_socket_state_bytes",
    /// Sockets removed.
    SocketsClosed => "sockets_closed",
    /// Accept requests answered with connections (each takes as many
    /// as wait, up to `MAX_ACCEPT`).
    AcceptRequests => "accept_requests",
    /// UDP datagrams sent to udpd.
    TxDgrams => "tx_datagrams",
    /// Payload bytes copied from applications' send rings.
    TxCopyBytes => "tx_copy_bytes",
    /// UDP datagrams copied into applications' receive rings.
    RxDgrams => "rx_datagrams",
    /// Payload bytes copied into applications' receive rings.
    RxCopyBytes => "rx_copy_bytes",
    /// UDP datagrams dropped: the application's ring was full.
    RxDropAppSlow => "rx_drop_app_slow",
    /// Data for a socket sockd does not have (or has detached).
    RxDropNoSocket => "rx_drop_no_socket",
    /// Sends that waited for a pool buffer.
    TxWaitNoBuffer => "tx_wait_no_buffer",
    /// Control messages to tcpd or udpd that waited for a pool buffer.
    CtlWaitNoBuffer => "ctl_wait_no_buffer",
    /// Control messages dropped: [`CTL_WAIT_MAX`] already waited.
    CtlDropped => "ctl_dropped",
    /// Requests that could not be decoded.
    BadRequests => "bad_requests",
    /// Socket rings found corrupt (the socket gets EIO).
    BadRings => "bad_rings",
    /// Requests tcpd or udpd did not answer in time.
    CtlTimeouts => "ctl_timeouts",
    /// Sockets taken back by their application after a restart.
    Reattached => "reattached",
    /// Sockets whose application did not come back.
    Abandoned => "abandoned",
    /// UDP datagrams larger than the largest buffer.
    TxDropTooBig => "tx_drop_too_big",
    /// UDP datagrams with no destination (unconnected, no address), or
    /// with an IPv4 one from an IPV6_V6ONLY socket.
    TxDropNoDest => "tx_drop_no_destination",
    /// Errors reported to sockets (ICMP, resets).
    SockErrors => "socket_errors",
    /// TCP data tcpd sent again that the application already has.
    RxRepeats => "rx_tcp_repeats",
    /// TCP data after a gap (what tcpd sent before was lost), asked for
    /// again.
    RxGaps => "rx_tcp_gaps",
    /// TCP data sent to tcpd again after a restart.
    TxResends => "tx_tcp_resends",
    /// Restarts of tcpd that sockd recovered from.
    TcpdRestarts => "tcpd_restarts_seen",
    /// Sockets refused by a per-process or per-user limit.
    SocketLimit => "socket_limit",
    /// Times the system refused a descriptor for a new session
    /// (accepting then pauses).
    AcceptRefused => "accept_refused",
    /// Connections refused: the client could not be identified.
    SessionsUnidentified => "sessions_unidentified",
    /// Sends that waited on the user's limit of unacknowledged bytes.
    TxWaitUserLimit => "tx_wait_user_limit",
    /// Connections refused by the per-user session limit.
    SessionLimit => "session_limit",
    /// Reads of a ready session or the listener that found nothing.
    EmptyReads => "empty_reads",
    /// Sockets a doorbell named.
    DoorbellRings => "doorbell_rings",
    /// Looks at sockets (a turn looks at the active ones only).
    SocketLooks => "socket_looks",
}

struct Session {
    fd: OwnedFd,
    /// The end of the session's wake pair sockd waits on (the
    /// application kicks the other), once Hello brought it.
    wake: Option<OwnedFd>,
    pid: u32,
    uid: u32,
    /// The process's start time (`auth::start_time`; 0: unknown).
    start_time: u32,
    /// The process may bind ports below the unprivileged start (root, or
    /// CAP_NET_BIND_SERVICE when the session opened).
    low_ports: bool,
    /// The process's ancestors (`/proc`), read at its first re-attach of
    /// a socket it did not make, then kept for its others.
    ancestors: Option<Vec<strata_sockd::auth::Owner>>,
    /// The segments of socket memory the session registered, by the
    /// application's names for them, with their files (device, inode),
    /// to tell the same memory registered again from other memory under
    /// a name in use.
    segments: HashMap<u64, (Arc<Segment>, (u64, u64))>,
    /// Their bytes.
    segment_bytes: usize,
    /// The session's doorbell (from Hello): which of its sockets its
    /// application wants looked at, and which its poller should.
    bell: Option<Rc<SessionBell>>,
}

impl Session {
    /// The process behind the session, as socket records name owners.
    fn owner(&self) -> strata_sockd::auth::Owner {
        strata_sockd::auth::Owner {
            pid: self.pid,
            uid: self.uid,
            start_time: self.start_time,
        }
    }
}

struct Sock {
    slot: usize,
    session: Option<u64>,
    /// Other sessions that took the socket back after a restart of
    /// sockd: processes forked from its owner, which share it (before the
    /// restart they shared the owner's session). The socket outlives a
    /// session while another holds it.
    sharers: Vec<u64>,
    mem: Option<SockMem>,
    /// Whom to tell of every change, when an event loop watches the
    /// socket.
    kick_end: Notify,
    /// Forgotten for good ([`Sockd::drop_sock`]): the application may
    /// reuse the memory once this is dropped.
    gone: bool,
    /// In `Sockd::active`.
    active: bool,
    /// Its earliest entry in `Sockd::timers`.
    due: Option<Instant>,
    rec: SockRec,
    /// Found at start-up and not yet re-attached by its application.
    detached: bool,
    /// A bad record was seen: the application broke its own ring.
    broken: bool,
    /// Taken back from a sockd that died: a request the application
    /// repeats may already have reached the transport.
    reattached: bool,
    /// The application closed it; once the send ring is drained, tcpd
    /// gets CLOSE (TCP) or it is closed (UDP).
    closing: bool,
    /// What only one protocol keeps.
    proto: Proto,
}

/// A socket's protocol, with what only that protocol keeps.
enum Proto {
    /// UDP: datagrams go straight between the rings and udpd.
    Udp,
    /// TCP: a stream with credits, offsets and a listener's queue.
    Tcp(Box<TcpSock>),
}

/// What sockd keeps of a TCP socket beyond the common fields.
struct TcpSock {
    /// The stream's offsets and credits in both directions.
    stream: Stream,
    /// Listener: established connections waiting for accept (tcpd's id,
    /// local, peer).
    accept_q: VecDeque<(u64, Addr, Addr)>,
    /// Listener: since the RESYNC that asks tcpd to announce its accept
    /// queue again (our copy died with the last sockd), the connections
    /// accepted meanwhile, whose repeated ACCEPTABLE must not queue them
    /// twice.
    reannounce: Option<(Instant, Vec<u64>)>,
    /// Received data not yet in the ring (handle, bytes written).
    rx_hold: VecDeque<(Handle, usize)>,
    /// The peer's FIN, to show once `rx_hold` is empty.
    eof_pending: bool,
    /// A write shutdown waits for the send ring to drain.
    shut_wr: bool,
    /// Segment size, to cut the stream into one-segment buffers.
    mss: u32,
    /// The SHUTDOWNs sent, sent again to a restarted tcpd (a repeat is
    /// harmless).
    shut_sent: ShutSent,
    /// The options set, likewise.
    opts: TcpOpts,
    /// What its user is charged for it ([`Charges`]).
    charged: u64,
}

impl TcpSock {
    fn new(cap: u64, credit: u64) -> TcpSock {
        TcpSock {
            stream: Stream::new(cap, credit, Instant::now()),
            accept_q: VecDeque::new(),
            reannounce: None,
            rx_hold: VecDeque::new(),
            eof_pending: false,
            shut_wr: false,
            mss: 1448,
            shut_sent: ShutSent::default(),
            opts: TcpOpts::default(),
            charged: 0,
        }
    }
}

/// The SHUTDOWN requests a TCP socket sent tcpd.
#[derive(Clone, Copy, Debug, Default)]
struct ShutSent {
    read: bool,
    write: bool,
}

/// The TCP options an application set on a socket (`tcp_opt`), kept to
/// restate them to a restarted tcpd.
#[derive(Clone, Copy, Debug, Default)]
struct TcpOpts {
    nodelay: Option<u64>,
    keepalive: Option<u64>,
    congestion: Option<u64>,
    /// The receive ring's size, when not the configured one.
    rcvbuf: Option<u64>,
    keepidle: Option<u64>,
    keepintvl: Option<u64>,
    keepcnt: Option<u64>,
}

impl TcpOpts {
    /// Records option `name` (a `tcp_opt` value) set to `v`.
    fn set(&mut self, name: u32, v: u64) {
        match name {
            tcp_opt::NODELAY => self.nodelay = Some(v),
            tcp_opt::KEEPALIVE => self.keepalive = Some(v),
            tcp_opt::CONGESTION => self.congestion = Some(v),
            tcp_opt::RCVBUF => self.rcvbuf = Some(v),
            tcp_opt::KEEPIDLE => self.keepidle = Some(v),
            tcp_opt::KEEPINTVL => self.keepintvl = Some(v),
            tcp_opt::KEEPCNT => self.keepcnt = Some(v),
            _ => {}
        }
    }

    /// The options set, as (`tcp_opt` name, value).
    fn set_ones(&self) -> impl Iterator<Item = (u32, u64)> {
        [
            (tcp_opt::NODELAY, self.nodelay),
            (tcp_opt::KEEPALIVE, self.keepalive),
            (tcp_opt::CONGESTION, self.congestion),
            (tcp_opt::RCVBUF, self.rcvbuf),
            (tcp_opt::KEEPIDLE, self.keepidle),
            (tcp_opt::KEEPINTVL, self.keepintvl),
            (tcp_opt::KEEPCNT, self.keepcnt),
        ]
        .into_iter()
        .filter_map(|(n, v)| Some((n, v?)))
    }
}

impl Sock {
    /// A socket of `kind`; a TCP one's tcpd holds up to `cap` bytes, of
    /// which `credit` are known to be free.
    fn new(slot: usize, kind: Kind, rec: SockRec, cap: u64, credit: u64) -> Sock {
        Sock {
            slot,
            session: None,
            sharers: Vec::new(),
            mem: None,
            kick_end: Notify::default(),
            gone: false,
            active: false,
            due: None,
            rec,
            detached: false,
            broken: false,
            reattached: false,
            closing: false,
            proto: match kind {
                Kind::Udp => Proto::Udp,
                Kind::Tcp => Proto::Tcp(Box::new(TcpSock::new(cap, credit))),
            },
        }
    }
}

/// A socket forgotten for good releases its memory last of all, after
/// whatever its end wrote there (the application may then lay out a new
/// socket in it).
impl Drop for Sock {
    fn drop(&mut self) {
        if let (true, Some(m)) = (self.gone, &self.mem) {
            m.release();
        }
    }
}

impl Sock {
    fn kind(&self) -> Kind {
        match self.proto {
            Proto::Udp => Kind::Udp,
            Proto::Tcp(_) => Kind::Tcp,
        }
    }

    fn tcp(&self) -> Option<&TcpSock> {
        match &self.proto {
            Proto::Tcp(t) => Some(t),
            Proto::Udp => None,
        }
    }

    fn tcp_mut(&mut self) -> Option<&mut TcpSock> {
        match &mut self.proto {
            Proto::Tcp(t) => Some(t),
            Proto::Udp => None,
        }
    }

    /// Received TCP data held back from the ring (none for UDP).
    fn rx_hold(&self) -> impl Iterator<Item = &Handle> {
        self.tcp()
            .into_iter()
            .flat_map(|t| t.rx_hold.iter().map(|(h, _)| h))
    }

    fn wake(&self, yes: bool) {
        wake(&self.kick_end, yes);
    }

    /// A listener: writes how many connections wait for `accept` into
    /// its memory, where the application reads its readiness.
    fn publish_accepts(&self) {
        if let (Some(t), Some(mem)) = (self.tcp(), &self.mem) {
            if self.rec.state == sock_state::LISTEN {
                mem.set_accept_ready(t.accept_q.len());
            }
        }
    }
}

struct Pending {
    session: u64,
    sock: u32,
    op: u32,
    deadline: Instant,
    /// The request itself, to send again when tcpd restarted (it may have
    /// died with it in its ring, or with the reply unsent).
    msg: L4Ctl,
    kind: Kind,
    /// When it was last sent.
    sent: Instant,
    /// Sent more than once: its reply may be the first one's.
    resent: bool,
}

struct Sockd<'a> {
    svc: &'a Service,
    table: SockTable,
    sessions: HashMap<u64, Session>,
    socks: Rows<Sock>,
    /// The ids of the listening sockets among them.
    listeners: HashSet<u32>,
    pending: HashMap<u32, Pending>,
    next_session: u64,
    next_req: u32,
    /// Connections whose ATTACH a re-attach sent again (see
    /// `SockRec::accepted_conn`): an ACCEPTABLE for one of them is a
    /// repeat, not a connection to accept.
    claimed: HashSet<u64>,
    /// Control messages and data for udpd, pushed once per turn.
    to_udp: Vec<Handle>,
    /// The same for tcpd.
    to_tcp: Vec<Handle>,
    /// Control messages that found no pool buffer, oldest first: they go
    /// before any other message or data once buffers free, so none is
    /// lost (a lost ATTACH would leave an accepted connection's data in
    /// tcpd for good) and none overtakes another.
    ctl_wait: VecDeque<(Kind, L4Ctl)>,
    /// tcpd's initial send credit per connection.
    tcp_credit: u64,
    /// The receive ring tcpd assumes unless told (`socket_rx_bytes`).
    rx_ring: u64,
    /// Ports below this need [`Session::low_ports`].
    unprivileged_port_start: u16,
    /// Sockets one process, and all processes of one user, may hold.
    sockets_per_process: u32,
    sockets_per_user: u32,
    /// Sessions all processes of one user may hold.
    sessions_per_user: u32,
    /// What each user's TCP sockets hold at tcpd.
    charges: Charges,
    /// Connections accepted while no descriptor was left to identify
    /// them (their pidfd), waiting for the next try.
    unidentified: Vec<OwnedFd>,
    /// No new sessions until then: the system refused the last one
    /// (EMFILE and the like).
    accept_paused_until: Option<Instant>,
    /// Which of the listener, the sessions and their wake pairs have
    /// something to read (`ready::Ready`): only those are read, so an idle
    /// session costs no system call per turn.
    ready: ready::Ready,
    /// CLOSE and ABORT sent to tcpd for sockets we have forgotten, until
    /// tcpd confirms with CLOSED: sent again if it restarted meanwhile.
    /// (op, first sent, last sent.)
    closes: HashMap<u32, (u32, Instant, Instant)>,
    /// tcpd's instance (pid, start time) last seen running: a new one
    /// lost the requests in its ring and the notifications it had not
    /// pushed.
    tcpd_seen: (u32, u64),
    /// tcpd's heartbeat last seen, and when it last changed.
    tcpd_beat: (u64, Instant),
    /// udpd's heartbeat last seen, and when it last changed.
    udpd_beat: (u64, Instant),
    stats: Stats,
    /// The sockets to look at this turn, each once (`Sock::active`): the
    /// ones a transport, a request or a doorbell named, whose timer came,
    /// or that still wait for something. A turn costs what these cost,
    /// however many sockets sit idle; and a turn looks, oldest first, at
    /// few more than the transports' rings have room for
    /// ([`LOOKS_SPARE`]), however many wait (after a tcpd restart, all of
    /// them).
    active: VecDeque<u32>,
    /// When sockets need a look unasked (SYNC cadence, a READ_CREDIT
    /// waiting for company): (when, socket). A socket's earliest is its
    /// `Sock::due`; other entries of it are stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    /// The next row of the socket table the sweep looks at, and when it
    /// last looked ([`SWEEP_PER_SEC`]: a net under any wake-up missed).
    sweep: (usize, Instant),
    /// Sockets found in the table from before a restart, and when: any
    /// still detached [`REATTACH_GRACE`] later is closed.
    unclaimed: Option<(Instant, Vec<u32>)>,
    /// Sockets per process and per user, and sessions per user, for the
    /// limits.
    socks_of_pid: Tally,
    socks_of_uid: Tally,
    sessions_of_uid: Tally,
}

/// Whom sockd tells of every change of a socket that an event loop
/// watches (`wait::ALWAYS`, `wait::POLLED`).
#[derive(Default)]
struct Notify {
    /// The end of the socket's wake pair sockd kicks (never blocking),
    /// once the application asked for a readiness fd.
    fd: Option<OwnedFd>,
    /// The session's poll bell, and the socket's row to ring there.
    bell: Option<(Rc<SessionBell>, usize)>,
}

/// A session's doorbell (both ways), and the end of its poller's wake
/// pair once the application made a poller.
struct SessionBell {
    bell: Doorbell,
    poll_kick: RefCell<Option<OwnedFd>>,
    /// Rung toward the application this turn and not yet kicked.
    pending: Cell<bool>,
}

thread_local! {
    /// The session bells rung toward their applications this turn,
    /// kicked once each at its end ([`kick_pollers`]).
    static POLL_KICKS: RefCell<Vec<Rc<SessionBell>>> = const { RefCell::new(Vec::new()) };
}

/// Tells whoever watches a socket of a change (`yes`: one watches): its
/// readiness fd is kicked; its session's poller finds its row rung, and
/// is kicked once at the end of the turn.
fn wake(n: &Notify, yes: bool) {
    if !yes {
        return;
    }
    if let Some(e) = &n.fd {
        syscall();
        kick(e);
    }
    if let Some((b, row)) = &n.bell {
        if b.poll_kick.borrow().is_some() {
            b.bell.ring_app(*row);
            if !b.pending.replace(true) {
                POLL_KICKS.with(|k| k.borrow_mut().push(b.clone()));
            }
        }
    }
}

/// Kicks the pollers whose bells rang this turn, once each.
fn kick_pollers() {
    let rung = POLL_KICKS.with(|k| std::mem::take(&mut *k.borrow_mut()));
    for b in rung {
        b.pending.set(false);
        if let Some(fd) = &*b.poll_kick.borrow() {
            syscall();
            kick(fd);
        }
    }
}

/// System calls sockd made on its own since the loop last asked (epoll,
/// session messages, application wake-ups), for the loop's economy
/// counters. A static, so that code anywhere in sockd can count without
/// a handle to the loop.
static SYSCALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one system call of sockd's own.
fn syscall() {
    SYSCALLS.fetch_add(1, Relaxed);
}

fn errno_resp(e: i32) -> Response {
    Response::Error { errno: e }
}

/// sockd holds a descriptor per session and per socket: it takes every
/// descriptor the process may have (the soft limit raised to the hard
/// one; distributions often start it at 1024).
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit, a live
    // local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn main() {
    raise_fd_limit();
    // The arena's format is the socket table's: a sockd of another one
    // would not find its predecessor's sockets (format 2 widened the ids;
    // a running sockd of format 1 is not upgraded live to this one).
    let format = ArenaFormat {
        writes: socktable::VERSION,
        reads_from: socktable::VERSION,
    };
    let svc = Service::start("sockd", format).unwrap_or_else(|e| service::die("sockd", &e));
    let f = &svc.fabric;
    let table = f.sock_table().unwrap_or_else(|e| service::die("sockd", &e));
    let listener =
        service::inherited_fd(LISTEN_FD_ENV).unwrap_or_else(|e| service::die("sockd", &e));
    // The per-socket collections are sized for the table's rows from
    // the start (address space until the sockets come): growing one at
    // 100,000 sockets moved megabytes at once, a pause every connection
    // then waited out.
    let rows = table.capacity();
    let mut d = Sockd {
        svc: &svc,
        table,
        sessions: HashMap::new(),
        socks: Rows::with_rows(rows),
        listeners: HashSet::new(),
        pending: HashMap::new(),
        next_session: 0,
        // Replies to the sockd that died may still come: start far from
        // its request numbers.
        claimed: HashSet::new(),
        next_req: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| {
                d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16)
            }),
        to_udp: Vec::with_capacity(BUDGET * 4),
        to_tcp: Vec::with_capacity(BUDGET * 4),
        ctl_wait: VecDeque::new(),
        tcp_credit: svc.config.socket_tx_bytes as u64,
        rx_ring: u64::from(svc.config.socket_rx_bytes),
        unprivileged_port_start: svc.config.unprivileged_port_start,
        sockets_per_process: svc.config.sockets_per_process,
        sockets_per_user: svc.config.sockets_per_user,
        sessions_per_user: svc.config.sessions_per_user,
        charges: Charges::new(svc.config.send_bytes_per_user),
        unidentified: Vec::new(),
        accept_paused_until: None,
        ready: ready::Ready::new()
            .unwrap_or_else(|e| service::die("sockd", &format!("epoll: {e}"))),
        closes: HashMap::new(),
        tcpd_seen: (0, 0),
        tcpd_beat: (0, Instant::now()),
        udpd_beat: (0, Instant::now()),
        stats: Stats::default(),
        active: VecDeque::with_capacity(rows),
        timers: BinaryHeap::with_capacity(rows),
        sweep: (0, Instant::now()),
        unclaimed: None,
        socks_of_pid: Tally::default(),
        socks_of_uid: Tally::default(),
        sessions_of_uid: Tally::default(),
    };
    // A socket's row (id and record) and its TCP part.
    let per_socket = Rows::<Sock>::row_bytes() + std::mem::size_of::<TcpSock>();
    d.stats.set(Stat::TcpSocketStateBytes, per_socket as u64);
    // Sockets from before a restart wait for their applications.
    let now = Instant::now();
    let found: Vec<(usize, SockRec)> = d.table.iter().collect();
    for (slot, rec) in &found {
        let kind = if rec.proto == 6 { Kind::Tcp } else { Kind::Udp };
        // The send credit is unknown until tcpd says (the first pump asks).
        let mut sk = Sock::new(*slot, kind, *rec, d.tcp_credit, 0);
        sk.detached = true;
        if let Some(t) = sk.tcp_mut() {
            // What the application shut before the last sockd died: the
            // write side goes to tcpd once the send ring has drained, the
            // read side now (tcpd takes a repeat as done).
            t.shut_wr = rec.flags & rec_flags::SHUT_WR != 0;
            t.shut_sent.read = rec.flags & rec_flags::SHUT_RD != 0;
            if t.shut_sent.read {
                d.tcp_ctl(op::SHUTDOWN, rec.id, 0, 0);
            }
        }
        d.insert_sock(rec.id, sk);
    }
    if !found.is_empty() {
        d.unclaimed = Some((now, found.iter().map(|(_, r)| r.id).collect()));
        svc.log(&format!(
            "{} sockets waiting for their applications to re-attach",
            found.len()
        ));
    }
    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    let lp = Loop::new(
        &svc,
        &names,
        &[],
        &[LayerId::UDPD, LayerId::TCPD],
        &[
            (LayerId::UDPD, Overflow::Keep),
            (LayerId::TCPD, Overflow::Keep),
        ],
    );
    // sockd sleeps in its epoll set, which then holds its eventfd too;
    // without one (no eventfd given) it polls the set's fd as before.
    let wake = svc.fabric.wake_fd(svc.me);
    let epoll_sleep = wake >= 0 && d.ready.watch_eventfd(wake).is_ok();
    let mut shell = Shell {
        d,
        listener,
        tx_waiting: false,
        epoll_sleep,
    };
    lp.run(&mut shell)
}

// Inputs and outputs of the loop, in the order given to it.
const FROM_UDP: usize = 0;
const FROM_TCP: usize = 1;
const TO_UDP: usize = 0;
const TO_TCP: usize = 1;

/// sockd's side of the service loop.
struct Shell<'a> {
    d: Sockd<'a>,
    /// The listening socket the launcher bound and passed.
    listener: OwnedFd,
    /// Applications' data waits for room or credit.
    tx_waiting: bool,
    /// sockd sleeps in its epoll set ([`Layer::epoll_fd`]).
    epoll_sleep: bool,
}

impl Layer for Shell<'_> {
    fn begin(&mut self, _cx: &mut Cx) -> usize {
        let d = &mut self.d;
        d.poll_ready();
        d.accept_sessions(&self.listener);
        d.watch_tcpd();
        d.serve_sessions()
    }

    fn input(&mut self, input: usize, h: Handle, cx: &mut Cx) {
        if h.flags & flags::CTRL != 0 {
            if let Ok(Some(m)) = L4Ctl::from_handle(&cx.pool, &h) {
                self.d.on_ctl(m);
            }
            cx.pool.free(&h);
            return;
        }
        match input {
            FROM_UDP => {
                self.d.deliver(&h);
                cx.pool.free(&h);
            }
            FROM_TCP => self.d.deliver_tcp(h),
            _ => unreachable!("sockd has two inputs"),
        }
    }

    fn end(&mut self, cx: &mut Cx) -> usize {
        // Applications' data into pool buffers, as far as each ring has
        // room (and what requests produced this turn).
        let d = &mut self.d;
        // Control messages that waited for buffers first; while any still
        // waits, no data and no read credit compete for the buffers.
        let ctl_waiting = !d.send_waiting_ctl();
        let room = |o| {
            if ctl_waiting {
                0
            } else {
                cx.room(o).min(BUDGET * 4)
            }
        };
        let (udp_room, tcp_room) = (room(TO_UDP), room(TO_TCP));
        let looks = udp_room + tcp_room + LOOKS_SPARE;
        let (udp, tcp) = d.take_active(Instant::now(), looks);
        let (moved, udp_waiting) = d.pump_tx(&udp, udp_room);
        cx.send_all(TO_UDP, d.to_udp.drain(..));
        let (moved_tcp, tcp_waiting) = d.pump_tcp(&tcp, tcp_room);
        cx.send_all(TO_TCP, d.to_tcp.drain(..));
        self.tx_waiting = udp_waiting || tcp_waiting || ctl_waiting || !d.active.is_empty();
        d.expire(Instant::now());
        kick_pollers();
        cx.syscalls(SYSCALLS.swap(0, Relaxed));
        moved + moved_tcp
    }

    fn deadline(&self) -> Option<u64> {
        let Reverse((due, _)) = *self.d.timers.peek()?;
        let left = due.saturating_duration_since(Instant::now());
        Some(strata_ipc::now_ns() + left.as_nanos() as u64)
    }

    fn held(&self) -> bool {
        self.tx_waiting
    }

    fn epoll_fd(&self) -> Option<std::os::fd::RawFd> {
        self.epoll_sleep.then(|| self.d.ready.as_raw_fd())
    }

    fn woke_epoll(&mut self, events: &[libc::epoll_event]) {
        self.d.ready.woke(events);
    }

    fn wait_fds(&self, fds: &mut [libc::pollfd; MAX_WAIT_FDS]) -> usize {
        fds[0] = libc::pollfd {
            fd: self.d.ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        1
    }

    fn counters(&self) -> &[u64] {
        self.d.stats.as_array()
    }
}
