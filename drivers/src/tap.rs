//! A Linux TAP device, and the helpers that configure its kernel side.
//!
//! The TAP is opened with `IFF_TAP | IFF_NO_PI`: every read and write is one
//! Ethernet frame. With offloads (`IFF_VNET_HDR`, the default for the
//! stack's TAPs) a 10-byte virtio-net header goes in front of each frame,
//! and the kernel is told (TUNSETOFFLOAD) that we take partial checksums
//! and TCP/IPv4 super-segments of up to 64 KiB: it then hands us its TCP
//! data in super-segments, unsegmented and with no checksum computed, and
//! takes ours the same way. Without offloads every frame is a plain one
//! whose checksums are complete. It is not made persistent, so the interface vanishes
//! when the last fd on it closes — a stack that dies leaves nothing behind,
//! while the launcher's own fd keeps the interface (and the addresses the
//! kernel side was given) alive across driverd restarts.
//!
//! The helpers ([`set_up`], [`set_mtu`], [`add_host_addr`],
//! [`add_host_addr6`], [`host_mac`])
//! configure the kernel's side of an interface by ioctl and rtnetlink, so the
//! launcher needs no external `ip` command. They act in the network namespace
//! of the calling thread.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use strata_proto::offload::{VnetHdr, VNET_HDR_LEN};

use crate::{bad_vnet, offload_of, truncated, vnet_of, Driver, Offload, Offloads, MAX_PARTS};

/// What [`Tap::create`] asks of the kernel with offloads: partial
/// checksums and TCP/IPv4 segmentation, both ways (TUN_F_CSUM, TUN_F_TSO4).
const TUN_OFFLOADS: libc::c_uint = 0x01 | 0x02;

/// The longest interface name the kernel accepts (IFNAMSIZ less the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// An open TAP device: the stack's end of a virtual Ethernet link whose other
/// end is the kernel's network stack.
///
/// Reads and writes never block (the fd is non-blocking); see [`Driver`].
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    /// Frames carry a virtio-net header (and the device has offloads on).
    vnet: bool,
}

impl Tap {
    /// Creates a TAP interface named `name` (empty, or a pattern with `%d`,
    /// lets the kernel choose) in the calling thread's network namespace.
    ///
    /// Needs CAP_NET_ADMIN. The interface starts down and unconfigured; the
    /// kernel-chosen name is [`Tap::name`]. With `offloads` frames carry a
    /// virtio-net header and the kernel exchanges partial checksums and
    /// TCP super-segments with us (see the module documentation).
    pub fn create(name: &str, offloads: bool) -> io::Result<Tap> {
        let mut req = ifreq(name)?;
        let vnet = if offloads { libc::IFF_VNET_HDR } else { 0 };
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | vnet) as libc::c_short;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")?;
        // SAFETY: TUNSETIFF reads and updates the one ifreq we pass, which
        // lives for the whole call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
        Errno::result(rc)?;
        let name = name_of(&req)?;
        if offloads {
            let fd = file.as_raw_fd();
            let size = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int, which outlives the call.
            Errno::result(unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ as _, &size) })?;
            // SAFETY: TUNSETOFFLOAD takes its argument by value.
            Errno::result(unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD as _, TUN_OFFLOADS) })?;
        }
        Ok(Tap {
            file,
            name,
            vnet: offloads,
        })
    }

    /// Takes over an fd that already refers to a TAP device, e.g. the copy
    /// driverd inherits from the launcher.
    ///
    /// Checks that the fd is a TAP opened the way [`Tap::create`] opens one
    /// (frames without packet info; a virtio-net header means offloads are
    /// on, as [`Tap::create`] set them), and makes it
    /// non-blocking — a flag shared with every copy of the fd, which is
    /// harmless since only driverd does I/O on it.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Tap> {
        let file = File::from(fd);
        // SAFETY: an all-zero ifreq is a valid value (plain integers and
        // arrays); TUNGETIFF only writes into it.
        let mut req: libc::ifreq = unsafe { mem::zeroed() };
        // SAFETY: TUNGETIFF writes one ifreq, which outlives the call. On a
        // file that is not a TUN/TAP device the ioctl fails harmlessly.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNGETIFF as _, &mut req) };
        Errno::result(rc).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "fd {} is not an attached TUN/TAP device: {e}",
                    file.as_raw_fd()
                ),
            )
        })?;
        // SAFETY: TUNGETIFF fills in the flags member of the union.
        let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags });
        let wanted = libc::IFF_TAP | libc::IFF_NO_PI;
        if flags & (wanted | libc::IFF_TUN) != wanted {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fd {} is a TUN/TAP device not opened as TAP with IFF_NO_PI (flags {flags:#x})",
                    file.as_raw_fd()
                ),
            ));
        }
        let vnet = flags & libc::IFF_VNET_HDR != 0;
        let name = name_of(&req)?;
        let status = OFlag::from_bits_retain(fcntl(file.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(
            file.as_raw_fd(),
            FcntlArg::F_SETFL(status | OFlag::O_NONBLOCK),
        )?;
        Ok(Tap { file, name, vnet })
    }

    /// Takes over a raw fd number, e.g. one named on driverd's command line;
    /// see [`Tap::from_fd`].
    ///
    /// # Safety
    ///
    /// `fd` must be open and owned by nobody else: the returned `Tap` (or the
    /// error path) closes it.
    pub unsafe fn from_raw_fd(fd: RawFd) -> io::Result<Tap> {
        // SAFETY: the caller hands over ownership of an open fd.
        Tap::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The interface's name as the kernel knows it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Driver for Tap {
    fn recv_split(
        &mut self,
        head: &mut [u8],
        tail: &mut [u8],
    ) -> io::Result<Option<(usize, Offload)>> {
        // The tun driver silently cuts a frame to fit the buffers, so one
        // spare byte tells a frame that filled them exactly from one that
        // did not fit.
        let mut spare = [0u8; 1];
        let mut vh = [0u8; VNET_HDR_LEN];
        let len = head.len() + tail.len();
        let pre = if self.vnet { VNET_HDR_LEN } else { 0 };
        loop {
            let mut iov = [
                IoSliceMut::new(&mut vh[..pre]),
                IoSliceMut::new(head),
                IoSliceMut::new(tail),
                IoSliceMut::new(&mut spare),
            ];
            match nix::sys::uio::readv(&self.file, &mut iov) {
                Ok(n) if n < pre => return Err(truncated(0)),
                Ok(n) if n - pre > len => return Err(truncated(len)),
                Ok(n) => {
                    let off = if self.vnet {
                        offload_of(&VnetHdr::parse(&vh).map_err(bad_vnet)?)?
                    } else {
                        Offload::default()
                    };
                    return Ok(Some((n - pre, off)));
                }
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send_parts(&mut self, parts: &[&[u8]], off: &Offload) -> io::Result<bool> {
        if parts.len() > MAX_PARTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a frame in more parts than a send takes",
            ));
        }
        let vh = vnet_of(off).to_bytes();
        let pre = if self.vnet { VNET_HDR_LEN } else { 0 };
        let mut iov = [IoSlice::new(&[]); MAX_PARTS + 1];
        iov[0] = IoSlice::new(&vh[..pre]);
        for (slot, part) in iov[1..].iter_mut().zip(parts) {
            *slot = IoSlice::new(part);
        }
        loop {
            match nix::sys::uio::writev(&self.file, &iov[..=parts.len()]) {
                Ok(_) => return Ok(true),
                Err(Errno::EAGAIN) => return Ok(false),
                // The kernel side is down: like a frame sent on an unplugged
                // cable, it is simply lost.
                Err(Errno::EIO) => return Ok(true),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn offloads(&self) -> Offloads {
        Offloads {
            csum: self.vnet,
            tso4: self.vnet,
        }
    }

    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl IntoRawFd for Tap {
    fn into_raw_fd(self) -> RawFd {
        self.file.into_raw_fd()
    }
}

impl From<Tap> for OwnedFd {
    fn from(tap: Tap) -> OwnedFd {
        tap.file.into()
    }
}

/// Brings the interface `name` up (IFF_UP), keeping its other flags.
pub fn set_up(name: &str) -> io::Result<()> {
    let sock = ctl_socket()?;
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS fills in the flags of the ifreq we own.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) })?;
    // SAFETY: the flags member is the one SIOCGIFFLAGS just wrote.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) })?;
    Ok(())
}

/// Sets how many frames the kernel queues for the interface `name` (its
/// `txqueuelen`; for a TAP, the frames waiting for our reads: beyond it
/// the kernel drops them and counts TX drops).
pub fn set_queue_len(name: &str, frames: u32) -> io::Result<()> {
    set_int(name, libc::SIOCSIFTXQLEN, "queue length", frames)
}

/// Sets the MTU of the interface `name`.
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    set_int(name, libc::SIOCSIFMTU, "MTU", mtu)
}

/// Sets an int property of the interface `name` by the ioctl `request`
/// (SIOCSIFMTU, SIOCSIFTXQLEN: the ifreq's int member, which libc names
/// for each of its uses, `ifru_mtu` among them).
fn set_int(name: &str, request: libc::c_ulong, what: &str, value: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(value).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {value} is too large"),
        )
    })?;
    let sock = ctl_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_mtu = value;
    // SAFETY: both requests read the ifreq we own, and only its int.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &req) })?;
    Ok(())
}

/// The MAC address of the interface `name` (for a TAP: the kernel side's).
pub fn host_mac(name: &str) -> io::Result<[u8; 6]> {
    let sock = ctl_socket()?;
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFHWADDR fills in the hardware address of the ifreq we own.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut req) })?;
    // SAFETY: the hwaddr member is the one SIOCGIFHWADDR just wrote.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name} is not an Ethernet interface (hardware type {})",
                hw.sa_family
            ),
        ));
    }
    let mut mac = [0u8; 6];
    for (out, byte) in mac.iter_mut().zip(hw.sa_data) {
        *out = byte as u8;
    }
    Ok(mac)
}

/// Adds the IPv4 address `addr/prefix_len` to the interface `name`, with the
/// subnet route and broadcast address the kernel derives from it.
///
/// This goes through rtnetlink (RTM_NEWADDR) rather than SIOCSIFADDR because
/// the ioctl replaces the interface's primary address, so a second host
/// address would silently evict the first. Adding an address the interface
/// already has succeeds.
pub fn add_host_addr(name: &str, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    check_prefix(prefix_len, 32)?;
    let index = nix::net::if_::if_nametoindex(name)?;
    rtnetlink_request(&new_addr_request(index, addr, prefix_len))
}

/// Adds the IPv6 address `addr/prefix_len` to the interface `name`, with the
/// prefix route the kernel derives from it, by rtnetlink as
/// [`add_host_addr`] does.
///
/// Duplicate address detection is off for it (IFA_F_NODAD): the caller
/// makes sure the address is not the stack's, and detection would only
/// keep the address unusable for a second or more. Adding an address the
/// interface already has succeeds.
pub fn add_host_addr6(name: &str, addr: Ipv6Addr, prefix_len: u8) -> io::Result<()> {
    check_prefix(prefix_len, 128)?;
    let index = nix::net::if_::if_nametoindex(name)?;
    rtnetlink_request(&new_addr6_request(index, addr, prefix_len))
}

/// Refuses a prefix length above `max`.
fn check_prefix(prefix_len: u8, max: u8) -> io::Result<()> {
    if prefix_len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("prefix length {prefix_len} is out of range 0..={max}"),
        ));
    }
    Ok(())
}

/// Sends one rtnetlink request (asking for an acknowledgement, with
/// sequence number [`NL_SEQ`]) on a fresh socket and waits for the kernel's
/// answer.
fn rtnetlink_request(request: &[u8]) -> io::Result<()> {
    let sock = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    // The kernel always answers; the timeout only guards against a hang
    // should it not.
    socket::setsockopt(&sock, socket::sockopt::ReceiveTimeout, &TimeVal::new(5, 0))?;
    socket::sendto(
        sock.as_raw_fd(),
        request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut reply = [0u8; 4096];
    loop {
        let n = socket::recv(sock.as_raw_fd(), &mut reply, MsgFlags::empty())?;
        if let Some(result) = netlink_ack(&reply[..n.min(reply.len())]) {
            return result;
        }
    }
}

/// The sequence number of our one rtnetlink request; a fresh socket per call
/// means no other answer can be waiting on it.
const NL_SEQ: u32 = 1;

/// `ifa_flags` bit: no duplicate address detection for this IPv6 address
/// (`IFA_F_NODAD` of linux/if_addr.h).
const IFA_F_NODAD: u8 = 0x02;

/// Builds RTM_NEWADDR for `addr/prefix_len` on interface `index`: nlmsghdr,
/// ifaddrmsg, then IFA_LOCAL, IFA_ADDRESS and (below /31) IFA_BROADCAST.
fn new_addr_request(index: u32, addr: Ipv4Addr, prefix_len: u8) -> Vec<u8> {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    let broadcast = Ipv4Addr::from(u32::from(addr) | !mask);
    let mut attrs = vec![
        (libc::IFA_LOCAL, addr.octets()),
        (libc::IFA_ADDRESS, addr.octets()),
    ];
    if prefix_len < 31 {
        attrs.push((libc::IFA_BROADCAST, broadcast.octets()));
    }
    let ifa = IfAddrMsg {
        family: libc::AF_INET as u8,
        prefix_len,
        flags: 0,
        index,
    };
    addr_request(&ifa, &attrs)
}

/// Builds RTM_NEWADDR for the IPv6 `addr/prefix_len` on interface `index`,
/// without duplicate address detection: nlmsghdr, ifaddrmsg, then
/// IFA_LOCAL and IFA_ADDRESS.
fn new_addr6_request(index: u32, addr: Ipv6Addr, prefix_len: u8) -> Vec<u8> {
    let ifa = IfAddrMsg {
        family: libc::AF_INET6 as u8,
        prefix_len,
        flags: IFA_F_NODAD,
        index,
    };
    let attrs = [
        (libc::IFA_LOCAL, addr.octets()),
        (libc::IFA_ADDRESS, addr.octets()),
    ];
    addr_request(&ifa, &attrs)
}

/// The fields of an ifaddrmsg that differ between requests (the scope is
/// always universe).
struct IfAddrMsg {
    family: u8,
    prefix_len: u8,
    flags: u8,
    index: u32,
}

/// Builds an RTM_NEWADDR request (create or replace, acknowledged) of
/// `ifa` with address attributes `attrs`, each an IFA_* type and an
/// address of 4 or 16 bytes (so that every attribute stays 4-byte
/// aligned).
fn addr_request<const N: usize>(ifa: &IfAddrMsg, attrs: &[(u16, [u8; N])]) -> Vec<u8> {
    const RTA_HDR: usize = 4;
    let len = 16 + 8 + (RTA_HDR + N) * attrs.len();
    let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
    let mut msg = Vec::with_capacity(len);
    // nlmsghdr
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_NEWADDR.to_ne_bytes());
    msg.extend_from_slice(&(flags as u16).to_ne_bytes());
    msg.extend_from_slice(&NL_SEQ.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // ifaddrmsg
    msg.push(ifa.family);
    msg.push(ifa.prefix_len);
    msg.push(ifa.flags);
    msg.push(libc::RT_SCOPE_UNIVERSE);
    msg.extend_from_slice(&ifa.index.to_ne_bytes());
    // rtattrs: a 4-byte header, then the address
    for (kind, value) in attrs {
        msg.extend_from_slice(&((RTA_HDR + N) as u16).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(value);
    }
    msg
}

/// Finds the kernel's answer to our request among the netlink messages in
/// `datagram`: Some(result) for it, None if the datagram held none.
fn netlink_ack(mut datagram: &[u8]) -> Option<io::Result<()>> {
    const HDR: usize = 16;
    while datagram.len() >= HDR {
        let len = u32::from_ne_bytes(datagram[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().ok()?);
        let seq = u32::from_ne_bytes(datagram[8..12].try_into().ok()?);
        if len < HDR || len > datagram.len() {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed rtnetlink reply",
            )));
        }
        if seq == NL_SEQ && i32::from(kind) == libc::NLMSG_ERROR {
            let code = datagram.get(HDR..HDR + 4)?;
            let code = i32::from_ne_bytes(code.try_into().ok()?);
            return Some(match code {
                0 => Ok(()),
                e => Err(io::Error::from_raw_os_error(e.saturating_neg())),
            });
        }
        // Messages are padded to 4 bytes.
        let next = (len + 3) & !3;
        datagram = datagram.get(next..).unwrap_or(&[]);
    }
    None
}

/// A socket to aim interface ioctls at; any AF_INET socket will do.
fn ctl_socket() -> io::Result<OwnedFd> {
    Ok(socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// An ifreq naming `name`, after checking the name fits.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.len() > MAX_NAME_LEN || name.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name:?} is not a valid interface name (at most {MAX_NAME_LEN} bytes, no NUL)"
            ),
        ));
    }
    // SAFETY: an all-zero ifreq is a valid value (plain integers and arrays),
    // and leaves the name NUL-terminated after we copy at most 15 bytes.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (out, byte) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *out = byte as libc::c_char;
    }
    Ok(req)
}

/// The interface name the kernel wrote into `req`.
fn name_of(req: &libc::ifreq) -> io::Result<String> {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "interface name is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_fit_ifreq() {
        assert!(ifreq("strata0").is_ok());
        assert!(ifreq("fifteen-chars-x").is_ok());
        let err = ifreq("sixteen-chars-xx").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(ifreq("a\0b").is_err());
        assert_eq!(name_of(&ifreq("tap%d").unwrap()).unwrap(), "tap%d");
    }

    #[test]
    fn new_addr_request_layout() {
        let msg = new_addr_request(7, Ipv4Addr::new(10, 200, 0, 1), 24);
        assert_eq!(msg.len(), 48);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 48);
        assert_eq!(
            u16::from_ne_bytes(msg[4..6].try_into().unwrap()),
            libc::RTM_NEWADDR
        );
        assert_eq!(&msg[16..20], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(u32::from_ne_bytes(msg[20..24].try_into().unwrap()), 7);
        assert_eq!(&msg[44..48], &[10, 200, 0, 255]);
        // No broadcast on point-to-point prefixes.
        assert_eq!(
            new_addr_request(7, Ipv4Addr::new(10, 0, 0, 1), 32).len(),
            40
        );
        assert_eq!(new_addr_request(7, Ipv4Addr::new(10, 0, 0, 1), 0).len(), 48);
    }

    #[test]
    fn new_addr6_request_layout() {
        let addr: Ipv6Addr = "fd00:77::1".parse().unwrap();
        let msg = new_addr6_request(7, addr, 64);
        assert_eq!(msg.len(), 16 + 8 + 2 * 20);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 64);
        assert_eq!(
            u16::from_ne_bytes(msg[4..6].try_into().unwrap()),
            libc::RTM_NEWADDR
        );
        assert_eq!(
            &msg[16..20],
            &[
                libc::AF_INET6 as u8,
                64,
                IFA_F_NODAD,
                libc::RT_SCOPE_UNIVERSE
            ]
        );
        assert_eq!(u32::from_ne_bytes(msg[20..24].try_into().unwrap()), 7);
        for (at, kind) in [(24, libc::IFA_LOCAL), (44, libc::IFA_ADDRESS)] {
            assert_eq!(u16::from_ne_bytes(msg[at..at + 2].try_into().unwrap()), 20);
            assert_eq!(
                u16::from_ne_bytes(msg[at + 2..at + 4].try_into().unwrap()),
                kind
            );
            assert_eq!(&msg[at + 4..at + 20], &addr.octets());
        }
    }

    #[test]
    fn prefix_lengths_are_checked_per_family() {
        assert!(check_prefix(32, 32).is_ok());
        assert!(check_prefix(128, 128).is_ok());
        let e = check_prefix(33, 32).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(add_host_addr6("strata-none", Ipv6Addr::LOCALHOST, 129).is_err());
    }

    fn ack(seq: u32, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m
    }

    #[test]
    fn netlink_ack_parsing() {
        assert!(matches!(netlink_ack(&ack(NL_SEQ, 0)), Some(Ok(()))));
        let err = netlink_ack(&ack(NL_SEQ, -libc::EEXIST))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        // Another sequence number, a truncated datagram, garbage: no panic.
        assert!(netlink_ack(&ack(99, 0)).is_none());
        assert!(netlink_ack(&ack(NL_SEQ, 0)[..10]).is_none());
        assert!(matches!(netlink_ack(&[0xff; 16]), Some(Err(_))));
        let mut short = ack(NL_SEQ, 0);
        short[0..4].copy_from_slice(&16u32.to_ne_bytes());
        short.truncate(16);
        assert!(netlink_ack(&short).is_none());
    }
}
