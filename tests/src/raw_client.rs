//! A client of sockd speaking the socket protocol by hand, as a hostile
//! program could.

use nix::sys::socket::{
    connect, recvmsg, sendmsg, socket, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use strata_ipc::sockring::{kick, wake_pair, Doorbell, Segment, SockMem};
use strata_proto::sock::{Kind, Request, Response, Slot, VERSION};

/// The name a [`RawClient`] registers its one segment under.
pub const RAW_SEGMENT: u64 = 1;
/// Its bytes.
const RAW_SEGMENT_LEN: usize = 16 << 20;

/// A connection to sockd of `instance`, before any request.
pub fn connect_sockd(instance: &str) -> OwnedFd {
    let path = strata_ipc::runtime::run_dir(instance).join(strata_proto::sock::SOCKET_FILE);
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    fd
}

/// A client speaking the socket protocol by hand, as a hostile program
/// could.
pub struct RawClient {
    pub fd: OwnedFd,
    /// The end of the session's wake pair it kicks sockd with.
    pub kick: OwnedFd,
    /// The session's doorbell.
    pub bell: Doorbell,
    /// Its segment of socket memory (registered at hello) and its fd.
    pub segment: Arc<Segment>,
    pub segment_fd: OwnedFd,
    /// The next unused byte of the segment.
    used: AtomicUsize,
}

impl RawClient {
    /// Connects to sockd of `instance` and says hello.
    pub fn connect(instance: &str) -> RawClient {
        RawClient::hello(connect_sockd(instance)).expect("sockd answers hello")
    }

    /// Says hello on a connection to sockd; None if sockd closes it.
    pub fn hello(fd: OwnedFd) -> Option<RawClient> {
        let (wait, kick) = wake_pair().unwrap();
        let (bell, bell_fd) = Doorbell::create().unwrap();
        let (segment, segment_fd) = Segment::create(RAW_SEGMENT_LEN).unwrap();
        let c = RawClient {
            fd,
            kick,
            bell,
            segment,
            segment_fd,
            used: AtomicUsize::new(0),
        };
        let hello = Request::Hello { version: VERSION };
        match c.try_call(&hello, &[wait.as_raw_fd(), bell_fd.as_raw_fd()])? {
            Response::Welcome { .. } => {}
            r => panic!("hello answered {r:?}"),
        }
        let reg = Request::Segment { seg: RAW_SEGMENT };
        match c.try_call(&reg, &[c.segment_fd.as_raw_fd()])? {
            Response::Ok => Some(c),
            r => panic!("segment answered {r:?}"),
        }
    }

    /// Asks sockd to look at socket `id` (its doorbell, and a kick).
    pub fn ring(&self, id: u32) {
        if let Some(row) = strata_ipc::socktable::sock_id::slot(id) {
            self.bell.ring(row);
        }
        kick(&self.kick);
    }

    /// A fresh socket's memory (4 KiB rings) in the client's segment.
    pub fn new_slot(&self) -> (Slot, SockMem) {
        let len = strata_ipc::sockring::slot_len(4096, 4096);
        let off = self.used.fetch_add(len, Ordering::Relaxed);
        let mem = SockMem::init(&self.segment, off, 4096, 4096).expect("room in the segment");
        (
            Slot {
                seg: RAW_SEGMENT,
                off: mem.offset() as u64,
            },
            mem,
        )
    }

    pub fn call(&self, r: &Request, fds: &[RawFd]) -> Response {
        self.call_bytes(&r.encode(), fds)
    }

    /// A call; None if sockd closed the session instead of answering.
    pub fn try_call(&self, r: &Request, fds: &[RawFd]) -> Option<Response> {
        self.try_call_bytes(&r.encode(), fds)
    }

    pub fn call_bytes(&self, b: &[u8], fds: &[RawFd]) -> Response {
        self.try_call_bytes(b, fds).expect("sockd answers")
    }

    fn try_call_bytes(&self, b: &[u8], fds: &[RawFd]) -> Option<Response> {
        let cm = [ControlMessage::ScmRights(fds)];
        let cms: &[ControlMessage] = if fds.is_empty() { &[] } else { &cm };
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[IoSlice::new(b)],
            cms,
            MsgFlags::empty(),
            None,
        )
        .ok()?;
        let mut buf = [0u8; 2048];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([RawFd; 4]);
        let m = recvmsg::<()>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .ok()?;
        for c in m.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(v) = c {
                for f in v {
                    // SAFETY: SCM_RIGHTS fds are new descriptors the kernel
                    // installed in this process for this message; nothing else
                    // owns them, and each is wrapped once.
                    drop(unsafe { OwnedFd::from_raw_fd(f) });
                }
            }
        }
        let n = m.bytes;
        (n > 0).then(|| Response::decode(&buf[..n]).unwrap())
    }

    /// The request `r` makes of a fresh slot (a socket or a re-attach).
    pub fn call_with_slot(&self, r: impl Fn(Slot) -> Request) -> Response {
        let (slot, _mem) = self.new_slot();
        self.call(&r(slot), &[])
    }

    /// A UDP socket: its id and memory.
    pub fn udp_socket(&self) -> (u32, SockMem) {
        let (mem_at, mem) = self.new_slot();
        match self.call(
            &Request::Socket {
                kind: Kind::Udp,
                mem: mem_at,
            },
            &[],
        ) {
            Response::Created { id } => (id, mem),
            r => panic!("{r:?}"),
        }
    }

    /// A readiness fd for socket `id`: its wake pair (the end to wait on,
    /// the end sockd kicks).
    pub fn readiness(&self, id: u32) -> (OwnedFd, OwnedFd) {
        let (wait, kick) = wake_pair().unwrap();
        match self.call(&Request::Readiness { id }, &[kick.as_raw_fd()]) {
            Response::Ok => (wait, kick),
            r => panic!("{r:?}"),
        }
    }
}
