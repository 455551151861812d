//! Sending and receiving one message with file descriptors on a seqpacket
//! Unix socket.

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use strata_proto::sock::MAX_MSG;

/// What a receive produced.
pub enum Recv {
    /// A message and the fds that came with it.
    Msg(Vec<u8>, Vec<OwnedFd>),
    /// Nothing now.
    Empty,
    /// The peer hung up.
    Closed,
}

/// Receives one message without blocking. A message longer than
/// [`MAX_MSG`] or with more than 4 fds is an error.
pub fn recv(fd: &OwnedFd) -> std::io::Result<Recv> {
    let mut buf = [0u8; MAX_MSG + 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let r = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    );
    let msg = match r {
        Ok(m) => m,
        Err(nix::errno::Errno::EAGAIN) => return Ok(Recv::Empty),
        Err(e) => return Err(e.into()),
    };
    let mut fds = Vec::new();
    // Take ownership of every fd first, so none leaks whatever else is
    // wrong with the message.
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(v) = c {
                for f in v {
                    // SAFETY: the kernel installed each SCM_RIGHTS
                    // descriptor in this process for this message only;
                    // nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(f) });
                }
            }
        }
    }
    let n = msg.bytes;
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    if n == 0 && fds.is_empty() {
        return Ok(Recv::Closed);
    }
    if truncated || n > MAX_MSG {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "message or fds truncated",
        ));
    }
    Ok(Recv::Msg(buf[..n].to_vec(), fds))
}

/// Sends one message with `fds` attached.
pub fn send(fd: &OwnedFd, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cm = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cm };
    sendmsg::<()>(
        fd.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    Ok(())
}
