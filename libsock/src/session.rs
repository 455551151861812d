//! The process's session with one stack's sockd: the seqpacket control
//! socket, the request/response exchange, the registry of live sockets,
//! and recovery when sockd goes away (reconnect, re-attach every socket).
//!
//! One [`Session`] exists per instance name per process, in a global map.
//! Its state sits behind one mutex, which also serialises the requests of
//! all threads on the control socket (sockd answers every request at
//! once, so the lock is held for one round trip). Recovery runs with the
//! lock held: threads that make requests meanwhile wait for it, which is
//! the "pause" an application sees; data moving through the sockets'
//! shared memory needs no lock and goes on.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use strata_proto::sock::{self as wire, Kind, Request, Response};

use crate::slots::{SlotRef, Slots};
use crate::{INSTANCE_ENV, RECONNECT_ENV};
use strata_ipc::sockring::{Doorbell, SockMem};
use strata_ipc::socktable::sock_id;

/// Default time to keep trying to reach a restarted sockd.
const DEFAULT_RECONNECT: Duration = Duration::from_secs(10);
/// Pause between reconnect attempts.
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// The first pause after a failed reconnect, doubling up to
/// [`RETRY_EVERY`]: the launcher has a new sockd listening a few ms after
/// a death, and a flat 50 ms made that the bulk of the outage.
const RETRY_FIRST: Duration = Duration::from_millis(1);
/// Requests retried at most this often across back-to-back recoveries
/// (a request that kills sockd every time must not loop forever).
const MAX_RETRIES: usize = 5;

/// Locks, ignoring poison: every critical section leaves the state
/// consistent between statements that can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the session keeps of each live socket, to re-attach it after a
/// sockd restart: its memory and where it lies, and its readiness fd.
pub(crate) struct Attach {
    /// The socket's shared memory.
    pub(crate) mem: SockMem,
    /// Where it lies.
    slot: SlotRef,
    /// The socket's readiness fd, once asked for.
    pub(crate) ready: OnceLock<WakePair>,
    /// Non-zero (an errno from sockd) once a restarted sockd refused to
    /// take the socket back.
    pub(crate) lost: AtomicI32,
}

/// A connection an accept took from sockd.
pub(crate) struct Taken {
    /// The new socket's id.
    pub(crate) id: u32,
    /// The peer.
    pub(crate) peer: wire::Addr,
    pub(crate) attach: Arc<Attach>,
}

/// A socket's wake pair (`sockring::wake_pair`), made for an event loop.
pub(crate) struct WakePair {
    /// The end the application polls: readable when kicked.
    pub(crate) wait: OwnedFd,
    /// The other end, which sockd (and the application itself) kicks.
    pub(crate) kick: OwnedFd,
}

impl Attach {
    /// Wakes whatever waits on the socket in this process: sleeping
    /// threads, and an event loop.
    pub(crate) fn wake(&self) {
        self.mem.wake_sleepers();
        if let Some(p) = self.ready.get() {
            strata_ipc::sockring::kick(&p.kick);
        }
    }
}

/// The doorbell of one link and the wake pair end that goes with it.
pub(crate) struct ServerKick {
    kick: OwnedFd,
    bell: Doorbell,
}

/// One connected control socket.
struct Link {
    sock: Arc<OwnedFd>,
}

struct State {
    link: Option<Link>,
    /// Bumped whenever the link is replaced or given up, so that threads
    /// that saw the same failure recover once.
    generation: u64,
    /// Live sockets by id.
    sockets: HashMap<u32, Arc<Attach>>,
    /// Their memory.
    slots: Slots,
    /// The end of the poller's wake pair that sockd kicks, while the
    /// process has a [`crate::Poller`] for this session.
    poller: Option<Arc<OwnedFd>>,
    /// Why the session is down, once recovery gave up (kind, message).
    dead: Option<(io::ErrorKind, String)>,
    /// The watcher thread runs.
    watching: bool,
}

/// The session with one instance's sockd.
pub(crate) struct Session {
    instance: String,
    path: PathBuf,
    state: Mutex<State>,
    /// Signalled when a link is installed (the watcher waits for one).
    linked: Condvar,
    /// How this session tells sockd which socket needs it: the doorbell
    /// and the end of the session's wake pair toward sockd, rung and
    /// kicked when a socket's memory asks for it.
    server_kick: RwLock<Option<Arc<ServerKick>>>,
    /// Mirror of `state.dead.is_some()` for the data path.
    dead: AtomicBool,
    /// Links installed: a poller reports every socket again when this
    /// moved (what rang on the old link's doorbell is gone).
    epoch: AtomicU64,
    /// An fd that is always readable (an eventfd never drained), handed
    /// out as a socket's readiness fd where none could be made: an event
    /// loop then looks at the socket on every turn, and every operation
    /// tries first, so nothing is missed.
    always_ready: OwnedFd,
}

/// How an exchange failed.
enum Fail {
    /// The control socket is gone (sockd died): recover and retry.
    Lost(io::Error),
    /// Anything else: report.
    Other(io::Error),
}

/// The instance named by the environment, or `"default"`.
pub(crate) fn env_instance() -> String {
    match std::env::var(INSTANCE_ENV) {
        Ok(s) if !s.is_empty() => s,
        _ => "default".to_string(),
    }
}

/// Path of an instance's sockd socket.
pub(crate) fn socket_path(instance: &str) -> PathBuf {
    strata_ipc::runtime::run_dir(instance).join(wire::SOCKET_FILE)
}

fn reconnect_window() -> Duration {
    std::env::var(RECONNECT_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_RECONNECT)
}

/// The error for an instance whose sockd cannot be reached.
fn not_running(instance: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "no strata stack \"{instance}\" is running ({}: {e})",
            path.display()
        ),
    )
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn is_lost(e: Errno) -> bool {
    matches!(e, Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN)
}

/// The lock of requests shared with forked processes (see
/// [`prepare_fork`]): a memfd that this process and its children hold.
static FORK_LOCK: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// Prepares the process's sessions for a `fork(2)` after which the child
/// keeps using the parent's sockets (call it just before the fork, e.g.
/// from a `pthread_atfork` prepare handler).
///
/// A child shares the parent's session with sockd (its Unix socket),
/// so the child's requests about its inherited sockets (shutdown,
/// close, names, options) go over that same socket. (After a restart of
/// sockd each process re-attaches on a session of its own; sockd lets a
/// process forked from a socket's creator take it back too.) From the first call on,
/// every request/response exchange of this process and of the children
/// forked after holds a POSIX record lock on a memfd they share (record
/// locks are per process, so they exclude each other), and the
/// exchanges of the processes never interleave. The data path (rings,
/// wake-ups) needs no lock: it is shared memory, as before.
///
/// ```no_run
/// libsock::prepare_fork();
/// // fork(2) here; parent and child may both use the sockets.
/// ```
pub fn prepare_fork() {
    FORK_LOCK.get_or_init(|| {
        // SAFETY: memfd_create takes a NUL-terminated name and flags, and
        // makes a new fd, which is wrapped once.
        let fd = unsafe { libc::memfd_create(c"libsock-fork-lock".as_ptr(), libc::MFD_CLOEXEC) };
        // SAFETY: `fd`, when not negative, is new and ours alone.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    });
}

/// Holds the fork lock (if [`prepare_fork`] made one) while alive.
struct ForkLock(Option<RawFd>);

impl ForkLock {
    fn take() -> ForkLock {
        let Some(Some(fd)) = FORK_LOCK.get() else {
            return ForkLock(None);
        };
        let fd = fd.as_raw_fd();
        if Self::set(fd, libc::F_WRLCK) {
            ForkLock(Some(fd))
        } else {
            ForkLock(None)
        }
    }

    fn set(fd: RawFd, ty: i32) -> bool {
        // SAFETY: an all-zero flock is valid; the fields set say "the
        // whole file".
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = ty as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        loop {
            // SAFETY: F_SETLKW takes a pointer to a live flock.
            let r = unsafe { libc::fcntl(fd, libc::F_SETLKW, &fl) };
            if r == 0 {
                return true;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return false;
            }
        }
    }
}

impl Drop for ForkLock {
    fn drop(&mut self) {
        if let Some(fd) = self.0 {
            Self::set(fd, libc::F_UNLCK);
        }
    }
}

/// Sends `req` with `fds` attached and reads the one response, with the
/// fds that came with it.
fn exchange(
    sock: &OwnedFd,
    req: &Request,
    fds: &[RawFd],
) -> Result<(Response, Vec<OwnedFd>), Fail> {
    let _forked = ForkLock::take();
    let bytes = req.encode();
    let iov = [IoSlice::new(&bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) if is_lost(e) => return Err(Fail::Lost(errno_io(e))),
            Err(e) => return Err(Fail::Other(errno_io(e))),
        }
    }
    let mut buf = [0u8; wire::MAX_MSG];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(Errno::EINTR) => continue,
            Err(e) if is_lost(e) => return Err(Fail::Lost(errno_io(e))),
            Err(e) => return Err(Fail::Other(errno_io(e))),
        };
        // Take ownership of every fd that came along first, so that none
        // leaks whatever happens next.
        let mut got = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(v) = c {
                    // SAFETY: SCM_RIGHTS fds are new descriptors the kernel
                    // installed in this process for this message; nothing else
                    // owns them, and each is wrapped once.
                    got.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        let n = msg.bytes;
        let flags = msg.flags;
        if n == 0 {
            return Err(Fail::Lost(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sockd closed the session",
            )));
        }
        if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            return Err(Fail::Other(io::Error::new(
                io::ErrorKind::InvalidData,
                "sockd sent an oversized response",
            )));
        }
        return match Response::decode(&buf[..n]) {
            Ok(r) => Ok((r, got)),
            Err(e) => Err(Fail::Other(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sockd sent a bad response: {e}"),
            ))),
        };
    }
}

/// Connects to sockd and says hello. Fails at once when nothing listens,
/// saying so.
fn connect_link(path: &Path, instance: &str) -> io::Result<(Link, Arc<ServerKick>)> {
    connect_raw(path, instance).map_err(|f| match f {
        Fail::Lost(e) => not_running(instance, path, e),
        Fail::Other(e) => e,
    })
}

/// [`connect_link`], with the failures to reach sockd (`Lost`) kept apart
/// and unadorned.
fn connect_raw(path: &Path, instance: &str) -> Result<(Link, Arc<ServerKick>), Fail> {
    let sock = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Fail::Other(errno_io(e)))?;
    let addr = UnixAddr::new(path).map_err(|e| Fail::Lost(errno_io(e)))?;
    loop {
        match socket::connect(sock.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Fail::Lost(errno_io(e))),
        }
    }
    let hello = Request::Hello {
        version: wire::VERSION,
    };
    // sockd waits on one end of the session's wake pair; we kick the
    // other, after ringing the doorbell for the socket that needs it.
    let (server_wait, kick) = strata_ipc::sockring::wake_pair().map_err(Fail::Other)?;
    let (bell, bell_fd) = Doorbell::create().map_err(Fail::Other)?;
    let (resp, _) = exchange(
        &sock,
        &hello,
        &[server_wait.as_raw_fd(), bell_fd.as_raw_fd()],
    )?;
    let other = |e| Err(Fail::Other(e));
    match resp {
        Response::Welcome { .. } => Ok((
            Link {
                sock: Arc::new(sock),
            },
            Arc::new(ServerKick { kick, bell }),
        )),
        Response::Error { errno } => {
            let e = io::Error::from_raw_os_error(errno);
            other(io::Error::new(
                e.kind(),
                format!(
                    "strata stack \"{instance}\" refused the session (protocol version {}): {e}",
                    wire::VERSION
                ),
            ))
        }
        r => other(unexpected(&r)),
    }
}

/// The error for a response that does not fit the request.
pub(crate) fn unexpected(r: &Response) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected response from sockd: {r:?}"),
    )
}

/// `Ok` → `()`, `Error` → the errno, anything else → an error.
pub(crate) fn expect_ok(r: Response) -> io::Result<()> {
    match r {
        Response::Ok => Ok(()),
        Response::Error { errno } => Err(io::Error::from_raw_os_error(errno)),
        other => Err(unexpected(&other)),
    }
}

static SESSIONS: OnceLock<Mutex<HashMap<String, Arc<Session>>>> = OnceLock::new();

impl Session {
    /// The process's session with `instance`, connecting it first if
    /// needed. Fails at once if no such stack runs.
    pub(crate) fn get(instance: &str) -> io::Result<Arc<Session>> {
        let map = SESSIONS.get_or_init(Default::default);
        let mut map = lock(map);
        if let Some(s) = map.get(instance) {
            return Ok(s.clone());
        }
        let path = socket_path(instance);
        let (link, kick) = connect_link(&path, instance)?;
        // SAFETY: no pointers; the call only makes a descriptor.
        let fd = unsafe { libc::eventfd(1, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is new and ours alone.
        let always_ready = unsafe { OwnedFd::from_raw_fd(fd) };
        let s = Arc::new(Session {
            instance: instance.to_string(),
            path,
            state: Mutex::new(State {
                link: Some(link),
                generation: 0,
                sockets: HashMap::new(),
                slots: Slots::default(),
                poller: None,
                dead: None,
                watching: false,
            }),
            linked: Condvar::new(),
            server_kick: RwLock::new(Some(kick)),
            dead: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            always_ready,
        });
        s.start_watcher();
        map.insert(instance.to_string(), s.clone());
        Ok(s)
    }

    /// The instance name.
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// Starts the thread that notices a lost control socket even when no
    /// request is being made (event loops waiting on readiness fds,
    /// threads blocked on data), and recovers.
    fn start_watcher(self: &Arc<Self>) {
        let mut st = lock(&self.state);
        if st.watching {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("libsock-watch".into())
            .spawn(move || me.watch());
        // Without the thread, requests still recover by themselves.
        st.watching = spawned.is_ok();
    }

    fn watch(&self) {
        loop {
            let (sock, generation) = {
                let mut st = lock(&self.state);
                loop {
                    if let Some(l) = &st.link {
                        break (l.sock.clone(), st.generation);
                    }
                    st = self.linked.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            let mut pfd = libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLRDHUP,
                revents: 0,
            };
            // SAFETY: pfd is a live local, and the count says one.
            let r = unsafe { libc::poll(&mut pfd, 1, -1) };
            if r < 0 {
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    std::thread::sleep(RETRY_EVERY);
                }
                continue;
            }
            let gone = libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL;
            if pfd.revents & gone == 0 {
                continue;
            }
            drop(sock);
            let mut st = lock(&self.state);
            if st.generation == generation && st.link.is_some() {
                let _ = self.recover_locked(&mut st);
            }
        }
    }

    /// True once recovery gave up (the stack is gone).
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// The error for calls on a session whose stack is gone.
    pub(crate) fn dead_error(&self) -> io::Error {
        let st = lock(&self.state);
        match &st.dead {
            Some((kind, msg)) => io::Error::new(*kind, msg.clone()),
            None => io::Error::new(
                io::ErrorKind::NotConnected,
                format!("strata stack \"{}\" is not reachable", self.instance),
            ),
        }
    }

    /// Fails if the stack is gone for good.
    pub(crate) fn check_alive(&self) -> io::Result<()> {
        if self.is_dead() {
            Err(self.dead_error())
        } else {
            Ok(())
        }
    }

    /// Tells sockd that socket `id` needs it (its memory asked for it):
    /// rings the doorbell for it and kicks.
    pub(crate) fn kick_server(&self, id: u32) {
        self.with_link_bell(|k| {
            if let Some(row) = sock_id::slot(id) {
                k.bell.ring(row);
            }
            strata_ipc::sockring::kick(&k.kick);
        });
    }

    /// Runs `f` on the current link's doorbell and kick, if there is a
    /// link.
    fn with_link_bell(&self, f: impl FnOnce(&ServerKick)) {
        let k = self.server_kick.read().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = k.as_ref() {
            f(k);
        }
    }

    fn install(&self, st: &mut State, link: Link, kick: Arc<ServerKick>) {
        st.link = Some(link);
        st.generation += 1;
        st.dead = None;
        *self.server_kick.write().unwrap_or_else(|e| e.into_inner()) = Some(kick);
        self.dead.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.linked.notify_all();
    }

    /// Wakes every thread waiting on one of the process's sockets, so it
    /// looks again (at a session that recovered, or died).
    fn kick_all(st: &State) {
        for a in st.sockets.values() {
            a.wake();
        }
        if let Some(k) = &st.poller {
            strata_ipc::sockring::kick(&**k);
        }
    }

    /// Re-attaches every live socket on a fresh link: the segments of
    /// socket memory first, then each socket, and its readiness fd.
    /// Sockets sockd refuses are marked lost and forgotten. Err: the link
    /// broke.
    fn reattach_all(st: &mut State, link: &Link) -> io::Result<()> {
        if let Some(k) = &st.poller {
            if let Err(Fail::Lost(e)) = exchange(&link.sock, &Request::Poller, &[k.as_raw_fd()]) {
                return Err(e);
            }
        }
        for sr in st.slots.segments() {
            // A segment refused shows as its sockets' refusal below.
            let req = Request::Segment { seg: sr.id };
            if let Err(Fail::Lost(e)) = exchange(&link.sock, &req, &[sr.fd.as_raw_fd()]) {
                return Err(e);
            }
        }
        let mut lost = Vec::new();
        for (&id, a) in &st.sockets {
            let req = Request::Reattach {
                id,
                mem: a.slot.wire(),
            };
            let errno = match exchange(&link.sock, &req, &[]) {
                Ok((Response::Ok, _)) => match a.ready.get() {
                    None => continue,
                    Some(p) => {
                        let req = Request::Readiness { id };
                        match exchange(&link.sock, &req, &[p.kick.as_raw_fd()]) {
                            Ok((Response::Ok, _)) => continue,
                            Ok((Response::Error { errno }, _)) => errno,
                            Ok(_) => libc::EPROTO,
                            Err(Fail::Lost(e)) => return Err(e),
                            Err(Fail::Other(e)) => e.raw_os_error().unwrap_or(libc::EIO),
                        }
                    }
                },
                Ok((Response::Error { errno }, _)) => errno,
                Ok(_) => libc::EPROTO,
                Err(Fail::Lost(e)) => return Err(e),
                Err(Fail::Other(e)) => e.raw_os_error().unwrap_or(libc::EIO),
            };
            a.lost.store(errno.max(1), Ordering::Release);
            a.wake();
            lost.push(id);
        }
        for id in lost {
            // Its memory is free once the application lets go of it
            // (`close`).
            st.sockets.remove(&id);
        }
        st.slots.sockd_restarted();
        Ok(())
    }

    /// The link is gone: reconnect (retrying for the reconnect window),
    /// re-attach every socket, wake every waiter. On failure the session
    /// is marked dead; later requests try once more, at once.
    fn recover_locked(&self, st: &mut State) -> io::Result<()> {
        st.link = None;
        *self.server_kick.write().unwrap_or_else(|e| e.into_inner()) = None;
        let window = reconnect_window();
        let deadline = Instant::now() + window;
        let mut pause = RETRY_FIRST;
        let last = loop {
            let err = match connect_raw(&self.path, &self.instance) {
                Ok((link, kick)) => match Self::reattach_all(st, &link) {
                    Ok(()) => {
                        self.install(st, link, kick);
                        Self::kick_all(st);
                        return Ok(());
                    }
                    Err(e) => e,
                },
                Err(Fail::Lost(e) | Fail::Other(e)) => e,
            };
            if Instant::now() >= deadline {
                break err;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(RETRY_EVERY);
        };
        let msg = format!(
            "strata stack \"{}\" went away: sockd did not come back within {} ms ({}: {last})",
            self.instance,
            window.as_millis(),
            self.path.display()
        );
        st.dead = Some((last.kind(), msg.clone()));
        st.generation += 1;
        self.dead.store(true, Ordering::Release);
        Self::kick_all(st);
        Err(io::Error::new(last.kind(), msg))
    }

    /// Makes sure there is a link: after recovery gave up, one immediate
    /// attempt (a stack started again is found; none fails at once).
    fn ensure_link(&self, st: &mut State) -> io::Result<()> {
        if st.link.is_some() {
            return Ok(());
        }
        let (link, kick) = connect_link(&self.path, &self.instance)?;
        Self::reattach_all(st, &link)?;
        self.install(st, link, kick);
        Self::kick_all(st);
        Ok(())
    }

    /// One request and its response, recovering from a lost link (and
    /// then sending the request again) as often as needed.
    fn transact_locked(
        &self,
        st: &mut State,
        req: &Request,
        fds: &[RawFd],
    ) -> io::Result<(Response, Vec<OwnedFd>)> {
        let mut tries = 0;
        loop {
            self.ensure_link(st)?;
            let sock = match &st.link {
                Some(l) => l.sock.clone(),
                None => return Err(self.dead_error()),
            };
            match exchange(&sock, req, fds) {
                Ok(r) => return Ok(r),
                Err(Fail::Other(e)) => return Err(e),
                Err(Fail::Lost(e)) => {
                    tries += 1;
                    if tries > MAX_RETRIES {
                        return Err(e);
                    }
                    self.recover_locked(st)?;
                }
            }
        }
    }

    /// One request, its response (fds that came along are closed).
    pub(crate) fn call(&self, req: &Request) -> io::Result<Response> {
        let mut st = lock(&self.state);
        self.transact_locked(&mut st, req, &[]).map(|(r, _)| r)
    }

    /// Lays out memory for a socket with rings of `tx` and `rx` bytes,
    /// registering a new segment with sockd if it takes one.
    fn take_memory(&self, st: &mut State, tx: usize, rx: usize) -> io::Result<Arc<Attach>> {
        let (slot, mem, new) = st.slots.take(tx, rx)?;
        if let Some(sr) = new {
            let reg = Request::Segment { seg: sr.id };
            expect_ok(self.transact_locked(st, &reg, &[sr.fd.as_raw_fd()])?.0)?;
            st.slots.adopt(sr, &slot);
        }
        Ok(Arc::new(Attach {
            mem,
            slot,
            ready: OnceLock::new(),
            lost: AtomicI32::new(0),
        }))
    }

    /// Creates a socket of `kind` with rings of `tx` and `rx` bytes. The
    /// socket is registered for re-attachment in the same critical
    /// section as its creation, so that no recovery can miss it; memory
    /// sockd did not take is free again.
    pub(crate) fn create(
        &self,
        kind: Kind,
        tx: usize,
        rx: usize,
    ) -> io::Result<(u32, Arc<Attach>)> {
        let mut st = lock(&self.state);
        let a = self.take_memory(&mut st, tx, rx)?;
        let req = Request::Socket {
            kind,
            mem: a.slot.wire(),
        };
        let r = self.transact_locked(&mut st, &req, &[]);
        if let Ok((Response::Created { id }, _)) = r {
            st.sockets.insert(id, a.clone());
            return Ok((id, a));
        }
        st.slots.unused(a.slot.clone());
        match r?.0 {
            Response::Error { errno } => Err(io::Error::from_raw_os_error(errno)),
            other => Err(unexpected(&other)),
        }
    }

    /// Non-blocking accept on listener `id` of up to `want` connections
    /// (at most [`wire::MAX_ACCEPT`]) in one request, each new socket
    /// with rings of `tx` and `rx` bytes; none when none waits. As in
    /// [`Session::create`], the sockets are registered in the same
    /// critical section, and memory left over is free again.
    pub(crate) fn accept(
        &self,
        id: u32,
        tx: usize,
        rx: usize,
        want: usize,
    ) -> io::Result<Vec<Taken>> {
        let mut st = lock(&self.state);
        let mut mems = Vec::with_capacity(want.clamp(1, wire::MAX_ACCEPT));
        for _ in 0..mems.capacity() {
            match self.take_memory(&mut st, tx, rx) {
                Ok(a) => mems.push(a),
                Err(e) if mems.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        let req = Request::Accept {
            id,
            mems: mems.iter().map(|a| a.slot.wire()).collect(),
        };
        let r = self.transact_locked(&mut st, &req, &[]);
        let mut taken = Vec::new();
        if let Ok((Response::Accepted { conns }, _)) = &r {
            for (c, attach) in conns.iter().zip(&mems) {
                st.sockets.insert(c.id, attach.clone());
                taken.push(Taken {
                    id: c.id,
                    peer: c.peer,
                    attach: attach.clone(),
                });
            }
        }
        for a in &mems[taken.len()..] {
            st.slots.unused(a.slot.clone());
        }
        match r? {
            (Response::Accepted { .. }, _) if !taken.is_empty() => Ok(taken),
            (Response::Error { errno }, _)
                if errno == libc::EAGAIN || errno == libc::EWOULDBLOCK =>
            {
                Ok(taken)
            }
            (Response::Error { errno }, _) => Err(io::Error::from_raw_os_error(errno)),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Gives socket `id` a readiness fd: a wake pair whose one end sockd
    /// kicks on every change. Once made, it is sent again whenever the
    /// socket is re-attached.
    pub(crate) fn readiness(&self, id: u32, a: &Attach) -> io::Result<RawFd> {
        let mut st = lock(&self.state);
        if let Some(p) = a.ready.get() {
            return Ok(p.wait.as_raw_fd());
        }
        let (wait, kick) = strata_ipc::sockring::wake_pair()?;
        let req = Request::Readiness { id };
        expect_ok(self.transact_locked(&mut st, &req, &[kick.as_raw_fd()])?.0)?;
        let p = a.ready.get_or_init(|| WakePair { wait, kick });
        Ok(p.wait.as_raw_fd())
    }

    /// Makes `kick` (the end of a poller's wake pair) the session's
    /// poller's: sockd kicks it when it changed a polled socket.
    pub(crate) fn set_poller(&self, kick: OwnedFd) -> io::Result<()> {
        let mut st = lock(&self.state);
        if st.poller.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this process has a poller for this stack already",
            ));
        }
        let kick = Arc::new(kick);
        expect_ok(
            self.transact_locked(&mut st, &Request::Poller, &[kick.as_raw_fd()])?
                .0,
        )?;
        st.poller = Some(kick);
        Ok(())
    }

    /// The poller is gone (sockd may kick its old end on: nobody reads
    /// it).
    pub(crate) fn clear_poller(&self) {
        lock(&self.state).poller = None;
    }

    /// How many links were installed (see [`Session::epoch`]'s field).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Has the poller look at the socket in row `row` (rings it on the
    /// application's side of the doorbell, and kicks the poller).
    pub(crate) fn ring_poller(&self, row: usize) {
        self.with_link_bell(|k| k.bell.ring_app(row));
        if let Some(p) = &lock(&self.state).poller {
            strata_ipc::sockring::kick(&**p);
        }
    }

    /// Takes the rows rung for the poller.
    pub(crate) fn take_poller_rows(&self, f: impl FnMut(usize)) {
        self.with_link_bell(|k| k.bell.take_app(f));
    }

    /// The fd that is always readable.
    pub(crate) fn always_ready(&self) -> RawFd {
        self.always_ready.as_raw_fd()
    }

    /// Closes socket `id` with a reset (`SO_LINGER` 0), as Linux resets
    /// the connections a listener leaves unaccepted when it closes.
    pub(crate) fn abort(&self, id: u32, a: &Attach) {
        let linger = wire::SockOpt::Linger { on: true, secs: 0 };
        let _ = self.call(&Request::SetOption { id, opt: linger });
        self.close(id, a);
    }

    /// Closes socket `id` (on drop): tells sockd and forgets it; its
    /// memory is reused once sockd is done with it. A link sockd's
    /// restart broke since the last request (a forked process, which has
    /// no watcher thread, notices only now) is recovered first, taking
    /// the socket back with the others, so that the Close comes from a
    /// session that holds it; with the stack gone for good, it is only
    /// forgotten.
    pub(crate) fn close(&self, id: u32, a: &Attach) {
        let mut st = lock(&self.state);
        if st.sockets.contains_key(&id) && st.dead.is_none() {
            let _ = self.transact_locked(&mut st, &Request::Close { id }, &[]);
        }
        if st.sockets.remove(&id).is_some() {
            st.slots.retire(a.slot.clone(), a.mem.clone());
        } else if a.lost.load(Ordering::Acquire) != 0 {
            // A restarted sockd refused it: nobody else holds it.
            st.slots.unused(a.slot.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_stack_fails_at_once_with_a_clear_message() {
        let name = "libsock-test-no-such-instance";
        let t = Instant::now();
        let e = Session::get(name)
            .err()
            .expect("no stack runs under this name");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("no strata stack \"{name}\" is running (")),
            "{msg}"
        );
        assert!(
            msg.contains(&socket_path(name).display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn refused_socket_fails_at_once_as_connection_refused() {
        // A socket file nobody listens on any more.
        let dir = std::env::temp_dir().join(format!("libsock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sockd.sock");
        let _ = std::fs::remove_file(&path);
        {
            let s = socket::socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            socket::bind(s.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        }
        let t = Instant::now();
        let e = connect_link(&path, "gone").err().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(
            e.to_string()
                .contains("no strata stack \"gone\" is running"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn socket_path_follows_the_runtime_layout() {
        assert_eq!(
            socket_path("lab"),
            PathBuf::from("/run/strata/lab/sockd.sock")
        );
    }

    #[test]
    fn error_responses_map_to_std_kinds() {
        let e = expect_ok(Response::Error {
            errno: libc::EADDRINUSE,
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
        let e = expect_ok(Response::Error {
            errno: libc::ECONNREFUSED,
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(expect_ok(Response::Ok).is_ok());
        assert_eq!(
            expect_ok(Response::Created { id: 1 }).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
