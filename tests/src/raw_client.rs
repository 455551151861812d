//! A client of sockd speaking the socket protocol by hand, as a hostile
//! program could.

use nix::sys::socket::{
    connect, recvmsg, sendmsg, socket, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use strata_ipc::sockring::{wake_pair, SockMem};
use strata_proto::sock::{Kind, Request, Response, VERSION};

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
    /// The end of the session's wake pair it would kick sockd with.
    pub _kick: OwnedFd,
}

impl RawClient {
    /// Connects to sockd of `instance` and says hello.
    pub fn connect(instance: &str) -> RawClient {
        RawClient::hello(connect_sockd(instance)).expect("sockd answers hello")
    }

    /// Says hello on a connection to sockd; None if sockd closes it.
    pub fn hello(fd: OwnedFd) -> Option<RawClient> {
        let (wait, kick) = wake_pair().unwrap();
        let c = RawClient { fd, _kick: kick };
        match c.try_call(&Request::Hello { version: VERSION }, &[wait.as_raw_fd()])? {
            Response::Welcome { .. } => Some(c),
            r => panic!("hello answered {r:?}"),
        }
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

    /// `r` (a socket or a re-attach) with a new socket's two fds: 4 KiB
    /// of sealed memory and a wake pair's end, closed after the answer.
    pub fn call_with_socket_fds(&self, r: &Request) -> Response {
        let (_mem, memfd) = SockMem::create(4096, 4096).unwrap();
        let (_wait, kick) = wake_pair().unwrap();
        self.call(r, &[memfd.as_raw_fd(), kick.as_raw_fd()])
    }

    /// A UDP socket: its id, memory, memfd and wake pair (the end to wait
    /// on, the end sockd kicks).
    pub fn udp_socket(&self) -> (u32, SockMem, OwnedFd, (OwnedFd, OwnedFd)) {
        let (mem, memfd) = SockMem::create(4096, 4096).unwrap();
        let (wait, kick) = wake_pair().unwrap();
        match self.call(
            &Request::Socket { kind: Kind::Udp },
            &[memfd.as_raw_fd(), kick.as_raw_fd()],
        ) {
            Response::Created { id } => (id, mem, memfd, (wait, kick)),
            r => panic!("{r:?}"),
        }
    }
}
