//! `setsockopt(2)` and `getsockopt(2)`.

use std::mem::size_of;
use std::time::Duration;

use libc::{c_int, c_void, socklen_t, timeval};

use crate::errno::{self, Errno, Res};
use crate::socket::{ring_bytes, Inner, Socket, State};

/// An option value the application gave: `len` bytes at `ptr`.
pub(crate) struct OptIn {
    ptr: *const c_void,
    len: usize,
}

impl OptIn {
    /// # Safety
    ///
    /// `ptr`, unless null, points to `len` readable bytes.
    pub(crate) unsafe fn new(ptr: *const c_void, len: socklen_t) -> OptIn {
        OptIn {
            ptr,
            len: len as usize,
        }
    }

    /// A value of type `T`: `EINVAL` when `len` is too short for it,
    /// `EFAULT` for a null pointer (Linux checks in that order).
    fn read<T: Copy>(&self) -> Res<T> {
        if self.len < size_of::<T>() {
            return Err(libc::EINVAL);
        }
        if self.ptr.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: `ptr` points to `len` >= size_of::<T>() readable bytes
        // (the promise of `new`); any bit pattern is a valid `T` for the
        // plain C types read here (int, struct timeval).
        Ok(unsafe { std::ptr::read_unaligned(self.ptr.cast::<T>()) })
    }

    fn int(&self) -> Res<c_int> {
        self.read::<c_int>()
    }

    /// A name of at most `max` bytes, ended by a NUL or by `len` (as
    /// Linux reads `TCP_CONGESTION`).
    fn name(&self, max: usize) -> Res<Vec<u8>> {
        if self.ptr.is_null() && self.len > 0 {
            return Err(libc::EFAULT);
        }
        let n = self.len.min(max);
        // SAFETY: `ptr` points to `len` >= n readable bytes (the promise
        // of `new`); n is 0 when it is null.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), n) };
        Ok(bytes.split(|&b| b == 0).next().unwrap_or_default().to_vec())
    }

    fn flag(&self) -> Res<bool> {
        self.int().map(|v| v != 0)
    }

    /// The flag of an `IPPROTO_IPV6` option, read as Linux's
    /// `do_ipv6_setsockopt` reads it: a null pointer is 0 (no
    /// `EFAULT`), a length under an int `EINVAL`.
    fn ipv6_flag(&self) -> Res<bool> {
        if self.len < size_of::<c_int>() {
            return Err(libc::EINVAL);
        }
        if self.ptr.is_null() {
            return Ok(false);
        }
        self.flag()
    }

    /// A `struct timeval` timeout: None for zero (no timeout), `EDOM`
    /// for microseconds out of range, as Linux says.
    fn timeout(&self) -> Res<Option<Duration>> {
        let tv = self.read::<timeval>()?;
        if !(0..1_000_000).contains(&tv.tv_usec) {
            return Err(libc::EDOM);
        }
        if tv.tv_sec == 0 && tv.tv_usec == 0 {
            return Ok(None);
        }
        if tv.tv_sec < 0 {
            // Linux: a negative timeout does not wait at all.
            return Ok(Some(Duration::from_nanos(1)));
        }
        Ok(Some(
            Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64),
        ))
    }
}

/// Where to put an option's value: at most `*len` bytes at `ptr`.
pub(crate) struct OptOut {
    ptr: *mut c_void,
    len: *mut socklen_t,
}

impl OptOut {
    /// # Safety
    ///
    /// `len`, unless null, points to a readable and writable
    /// `socklen_t`; `ptr`, unless null, to `*len` writable bytes.
    pub(crate) unsafe fn new(ptr: *mut c_void, len: *mut socklen_t) -> OptOut {
        OptOut { ptr, len }
    }

    /// `*len`: `EFAULT` when `len` is null, `EINVAL` when negative.
    pub(crate) fn room(&self) -> Res<usize> {
        if self.len.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: `len` is not null and readable (the promise of `new`).
        let n = unsafe { std::ptr::read_unaligned(self.len) };
        if (n as c_int) < 0 {
            return Err(libc::EINVAL);
        }
        Ok(n as usize)
    }

    /// Writes `v` as Linux does: `min(*len, size_of::<T>())` bytes, and
    /// that count to `*len`.
    fn write<T: Copy>(&self, v: T) -> Res<()> {
        let n = self.room()?.min(size_of::<T>());
        if n > 0 && self.ptr.is_null() {
            return Err(libc::EFAULT);
        }
        // SAFETY: `v` is a live local of size_of::<T>() >= n bytes, and
        // `ptr` has room for `*len` >= n bytes (the promise of `new`).
        unsafe {
            std::ptr::copy_nonoverlapping((&v as *const T).cast::<u8>(), self.ptr.cast::<u8>(), n)
        };
        // SAFETY: `len` is not null (checked by `room`) and writable.
        unsafe { std::ptr::write_unaligned(self.len, n as socklen_t) };
        Ok(())
    }

    fn int(&self, v: c_int) -> Res<()> {
        self.write(v)
    }

    /// A name, NUL-padded to `size` bytes and cut to the room given.
    fn name(&self, name: &str, size: usize) -> Res<()> {
        let mut b = [0u8; TCP_CA_NAME_MAX];
        let n = name.len().min(size).min(TCP_CA_NAME_MAX);
        b[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.write(b)
    }

    fn timeout(&self, t: Option<Duration>) -> Res<()> {
        let t = t.unwrap_or_default();
        self.write(timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        })
    }
}

/// Longest congestion control name Linux takes and gives
/// (`TCP_CA_NAME_MAX`).
const TCP_CA_NAME_MAX: usize = 16;

/// `TCP_CONGESTION` names strata has (tcpd's CUBIC and NewReno, under
/// Linux's module names).
fn congestion(name: &[u8]) -> Res<&'static str> {
    match name {
        b"cubic" => Ok("cubic"),
        b"reno" => Ok("reno"),
        // Linux: no such algorithm (module) to load.
        _ => Err(libc::ENOENT),
    }
}

/// `setsockopt(2)`.
pub(crate) fn set(s: &Socket, level: c_int, name: c_int, val: &OptIn) -> Res<()> {
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => {
            let on = val.flag()?;
            let mut g = s.lock();
            if let State::Udp(u) = &g.state {
                u.set_reuse_address(on).map_err(errno::io)?;
            }
            // TCP: taken by listen(); on Linux too it matters only at
            // bind time.
            g.opts.reuse_addr = on;
            Ok(())
        }
        (libc::SOL_SOCKET, libc::SO_REUSEPORT) => {
            let on = val.flag()?;
            let mut g = s.lock();
            if let State::Udp(u) = &g.state {
                u.set_reuse_port(on).map_err(errno::io)?;
            }
            // TCP: taken by listen(), as SO_REUSEADDR.
            g.opts.reuse_port = on;
            Ok(())
        }
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => {
            let on = val.flag()?;
            let mut g = s.lock();
            if let State::Connecting(t) | State::Connected(t) = &g.state {
                t.set_keepalive(on).map_err(errno::io)?;
            }
            // Else kept: for the connection to come, or those a listener
            // accepts (UDP: no effect, as on Linux).
            g.opts.keepalive = on;
            Ok(())
        }
        (libc::SOL_SOCKET, libc::SO_RCVBUF | libc::SO_SNDBUF) => {
            // Negative sizes are huge ones to Linux (then capped).
            let n = val.int()? as u32 as usize;
            let mut g = s.lock();
            // The rings are made with the socket's libsock object and
            // never change size: a TCP socket not yet listening or
            // connected takes the size; any other keeps its rings, as
            // Linux keeps within its limits, and getsockopt says what
            // is in effect.
            if matches!(g.state, State::Pending) {
                if name == libc::SO_RCVBUF {
                    g.opts.rcvbuf = ring_bytes(n);
                } else {
                    g.opts.sndbuf = ring_bytes(n);
                }
            }
            Ok(())
        }
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) => {
            let t = val.timeout()?;
            let mut g = s.lock();
            let read = name == libc::SO_RCVTIMEO;
            let r = match &g.state {
                State::Connecting(c) | State::Connected(c) if read => c.set_read_timeout(t),
                State::Connecting(c) | State::Connected(c) => c.set_write_timeout(t),
                State::Udp(u) if read => u.set_read_timeout(t),
                State::Udp(u) => u.set_write_timeout(t),
                // Kept for the connection to come (a listener passes it
                // to the streams it accepts; its accept waits without).
                _ => Ok(()),
            };
            r.map_err(errno::io)?;
            if read {
                g.opts.rcvtimeo = t;
            } else {
                g.opts.sndtimeo = t;
            }
            Ok(())
        }
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) if !s.udp => {
            let on = val.flag()?;
            let mut g = s.lock();
            if let State::Connecting(t) | State::Connected(t) = &g.state {
                t.set_nodelay(on).map_err(errno::io)?;
            }
            g.opts.nodelay = on;
            Ok(())
        }
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE | libc::TCP_KEEPINTVL | libc::TCP_KEEPCNT)
            if !s.udp =>
        {
            let v = val.int()?;
            // Linux's bounds (MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL,
            // MAX_TCP_KEEPCNT).
            let max = if name == libc::TCP_KEEPCNT {
                127
            } else {
                32767
            };
            if !(1..=max).contains(&v) {
                return Err(libc::EINVAL);
            }
            let v = v as u32;
            let secs = |on: bool| on.then(|| Duration::from_secs(u64::from(v)));
            let mut g = s.lock();
            if let State::Connecting(t) | State::Connected(t) = &g.state {
                let cnt = (name == libc::TCP_KEEPCNT).then_some(v);
                t.set_keepalive_timing(
                    secs(name == libc::TCP_KEEPIDLE),
                    secs(name == libc::TCP_KEEPINTVL),
                    cnt,
                )
                .map_err(errno::io)?;
            }
            // Else kept for the connection to come, or those a listener
            // accepts.
            match name {
                libc::TCP_KEEPIDLE => g.opts.keepidle = Some(v),
                libc::TCP_KEEPINTVL => g.opts.keepintvl = Some(v),
                _ => g.opts.keepcnt = Some(v),
            }
            Ok(())
        }
        (libc::SOL_SOCKET, libc::SO_LINGER) => {
            let l = val.read::<libc::linger>()?;
            let linger = (l.l_onoff != 0, l.l_linger.max(0) as u32);
            let mut g = s.lock();
            // A zero time resets the connection at close; any other
            // closes gracefully without close waiting (see the header).
            // UDP: taken, no effect, as on Linux.
            if let State::Connecting(t) | State::Connected(t) = &g.state {
                let d = linger.0.then(|| Duration::from_secs(u64::from(linger.1)));
                t.set_linger(d).map_err(errno::io)?;
            }
            g.opts.linger = linger;
            Ok(())
        }
        // Linux: an AF_INET socket's IP layer (ip_setsockopt) knows no
        // IPPROTO_IPV6 options.
        (libc::IPPROTO_IPV6, _) if !s.v6 => Err(libc::ENOPROTOOPT),
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) => {
            let on = val.ipv6_flag()?;
            set_only_v6(&mut s.lock(), on)
        }
        // Other IPPROTO_IPV6 options (IPV6_TCLASS, IPV6_RECVPKTINFO,
        // hop limits, multicast...) fall to ENOPROTOOPT below, as their
        // IPv4 counterparts (IP_TOS, IP_PKTINFO, ...) do: strata has
        // none of them, and a program that sets one is told so rather
        // than led to believe it took effect (IPV6_TCLASS included:
        // programs that set it, like ssh, go on when it fails).
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) if !s.udp => {
            let cc = congestion(&val.name(TCP_CA_NAME_MAX)?)?;
            let mut g = s.lock();
            if let State::Connecting(t) | State::Connected(t) = &g.state {
                t.set_congestion(cc).map_err(errno::io)?;
            }
            // Else kept for the connection to come, or those a listener
            // accepts.
            g.opts.congestion = Some(cc);
            Ok(())
        }
        _ => Err(libc::ENOPROTOOPT),
    }
}

/// `IPV6_V6ONLY` set to `on` on the socket of lock `g` (an `AF_INET6`
/// one). Linux takes it only while the socket has no port
/// (`inet_num == 0`; else `EINVAL`): a TCP socket neither bound (a TCP
/// `bind` takes the port at once on Linux, here at `listen`) nor
/// listening nor connected; a UDP socket not bound (libsock says
/// `EINVAL` once its bind, or the first send's, took a port).
pub(crate) fn set_only_v6(g: &mut Inner, on: bool) -> Res<()> {
    match &g.state {
        State::Pending if g.bound.is_none() => {}
        State::Udp(u) => u.set_only_v6(on).map_err(errno::io)?,
        State::Closed => return Err(libc::EBADF),
        _ => return Err(libc::EINVAL),
    }
    g.opts.v6only = on;
    Ok(())
}

/// The errno of `getsockopt(2)` for an option at `level` that is none
/// of strata's, on a socket of the kind given, as Linux answers it.
fn unknown_get(level: c_int, udp: bool, v6: bool) -> Errno {
    match level {
        // An option Linux does not know at a level the socket has.
        libc::SOL_SOCKET | libc::SOL_IP => libc::ENOPROTOOPT,
        libc::IPPROTO_TCP if !udp => libc::ENOPROTOOPT,
        libc::IPPROTO_UDP if udp => libc::ENOPROTOOPT,
        // A level the socket has not: an AF_INET6 socket's
        // ipv6_getsockopt says ENOPROTOOPT for any level but SOL_IPV6
        // (and its unknown options); an AF_INET socket's
        // do_ip_getsockopt says EOPNOTSUPP for any level but SOL_IP,
        // IPPROTO_IPV6 included.
        _ if v6 => libc::ENOPROTOOPT,
        _ => libc::EOPNOTSUPP,
    }
}

/// `getsockopt(2)`.
pub(crate) fn get(s: &Socket, level: c_int, name: c_int, out: &OptOut) -> Res<()> {
    // Linux checks the length before it looks at the option.
    out.room()?;
    let opts = || s.lock().opts.clone();
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_ERROR) => out.int(s.take_error()?),
        (libc::SOL_SOCKET, libc::SO_TYPE) => out.int(if s.udp {
            libc::SOCK_DGRAM
        } else {
            libc::SOCK_STREAM
        }),
        (libc::SOL_SOCKET, libc::SO_DOMAIN) => {
            out.int(if s.v6 { libc::AF_INET6 } else { libc::AF_INET })
        }
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) if s.v6 => out.int(s.only_v6() as c_int),
        (libc::SOL_SOCKET, libc::SO_PROTOCOL) => out.int(if s.udp {
            libc::IPPROTO_UDP
        } else {
            libc::IPPROTO_TCP
        }),
        (libc::SOL_SOCKET, libc::SO_ACCEPTCONN) => {
            out.int(matches!(s.state(), State::Listening(_)) as c_int)
        }
        (libc::SOL_SOCKET, libc::SO_REUSEADDR) => out.int(opts().reuse_addr as c_int),
        (libc::SOL_SOCKET, libc::SO_REUSEPORT) => out.int(opts().reuse_port as c_int),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => out.int(opts().keepalive as c_int),
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => out.int(opts().rcvbuf as c_int),
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => out.int(opts().sndbuf as c_int),
        (libc::SOL_SOCKET, libc::SO_RCVTIMEO) => out.timeout(opts().rcvtimeo),
        (libc::SOL_SOCKET, libc::SO_SNDTIMEO) => out.timeout(opts().sndtimeo),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) if !s.udp => out.int(opts().nodelay as c_int),
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) if !s.udp => {
            out.name(opts().congestion.unwrap_or("cubic"), TCP_CA_NAME_MAX)
        }
        (libc::SOL_SOCKET, libc::SO_LINGER) => {
            let (on, secs) = opts().linger;
            out.write(libc::linger {
                l_onoff: on as c_int,
                l_linger: secs.min(c_int::MAX as u32) as c_int,
            })
        }
        // Unset: the stack's defaults, which are Linux's (tcpd's
        // `keepalive_*` settings).
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) if !s.udp => {
            out.int(opts().keepidle.unwrap_or(7200) as c_int)
        }
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) if !s.udp => {
            out.int(opts().keepintvl.unwrap_or(75) as c_int)
        }
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) if !s.udp => {
            out.int(opts().keepcnt.unwrap_or(9) as c_int)
        }
        _ => Err(unknown_get(level, s.udp, s.v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_are_checked_like_linux() {
        let v: c_int = 7;
        // SAFETY: `v` is a live int; lengths up to its size are read.
        let ok = unsafe { OptIn::new((&v as *const c_int).cast(), 4) };
        assert_eq!(ok.int(), Ok(7));
        // SAFETY: as above; nothing is read at a short length.
        let short = unsafe { OptIn::new((&v as *const c_int).cast(), 3) };
        assert_eq!(short.int(), Err(libc::EINVAL));
        // SAFETY: a null pointer is never read.
        let null = unsafe { OptIn::new(std::ptr::null(), 4) };
        assert_eq!(null.int(), Err(libc::EFAULT));
        let tv = timeval {
            tv_sec: 1,
            tv_usec: 1_000_000,
        };
        let len = size_of::<timeval>() as socklen_t;
        // SAFETY: `tv` is a live timeval of `len` bytes.
        let bad = unsafe { OptIn::new((&tv as *const timeval).cast(), len) };
        assert_eq!(bad.timeout(), Err(libc::EDOM));
        let tv = timeval {
            tv_sec: 2,
            tv_usec: 500_000,
        };
        // SAFETY: as above.
        let good = unsafe { OptIn::new((&tv as *const timeval).cast(), len) };
        assert_eq!(good.timeout(), Ok(Some(Duration::from_millis(2500))));
    }

    #[test]
    fn congestion_names_are_read_to_the_nul_and_unknown_ones_refused() {
        let v = *b"reno\0garbage";
        // SAFETY: `v` is a live array of its length.
        let given = unsafe { OptIn::new(v.as_ptr().cast(), v.len() as socklen_t) };
        assert_eq!(
            congestion(&given.name(TCP_CA_NAME_MAX).unwrap()),
            Ok("reno")
        );
        let c = *b"cubic";
        // SAFETY: `c` is a live array of 5 bytes ("cubic" without a NUL).
        let cut = unsafe { OptIn::new(c.as_ptr().cast(), 5) };
        assert_eq!(congestion(&cut.name(TCP_CA_NAME_MAX).unwrap()), Ok("cubic"));
        assert_eq!(congestion(b"bbr"), Err(libc::ENOENT));
        let mut buf = [0xffu8; 16];
        let mut len: socklen_t = 16;
        // SAFETY: `buf` has `len` writable bytes; `len` is live.
        let out = unsafe { OptOut::new(buf.as_mut_ptr().cast(), &mut len) };
        out.name("cubic", TCP_CA_NAME_MAX).unwrap();
        assert_eq!((len, &buf[..6]), (16, &b"cubic\0"[..]));
    }

    fn pending(v6only: bool, bound: Option<std::net::SocketAddr>) -> Inner {
        let mut opts = crate::socket::Opts::new(false);
        opts.v6only = v6only;
        Inner {
            state: State::Pending,
            opts,
            bound,
            numbers: vec![],
        }
    }

    #[test]
    fn v6only_is_set_before_the_bind_only_like_linux() {
        // Dual-stack by default.
        assert!(!crate::socket::Opts::new(true).v6only);
        let mut g = pending(false, None);
        assert_eq!(set_only_v6(&mut g, true), Ok(()));
        assert!(g.opts.v6only);
        assert_eq!(set_only_v6(&mut g, false), Ok(()));
        assert!(!g.opts.v6only);
        // Bound (Linux takes a TCP port at bind): EINVAL, kept as it was.
        let mut g = pending(true, Some("[::]:80".parse().unwrap()));
        assert_eq!(set_only_v6(&mut g, false), Err(libc::EINVAL));
        assert!(g.opts.v6only);
        let mut g = pending(false, None);
        g.state = State::Closed;
        assert_eq!(set_only_v6(&mut g, true), Err(libc::EBADF));
    }

    #[test]
    fn v6only_values_are_read_as_linux_reads_them() {
        let one: c_int = 1;
        // SAFETY: `one` is a live int of 4 bytes.
        let v = unsafe { OptIn::new((&one as *const c_int).cast(), 4) };
        assert_eq!(v.ipv6_flag(), Ok(true));
        // SAFETY: nothing is read at a short length.
        let short = unsafe { OptIn::new((&one as *const c_int).cast(), 3) };
        assert_eq!(short.ipv6_flag(), Err(libc::EINVAL));
        // Linux's do_ipv6_setsockopt: a null value is 0, no EFAULT.
        // SAFETY: a null pointer is never read.
        let null = unsafe { OptIn::new(std::ptr::null(), 4) };
        assert_eq!(null.ipv6_flag(), Ok(false));
    }

    #[test]
    fn unknown_options_get_linuxs_errno_for_the_family() {
        use libc::{IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP, SOL_IP, SOL_SOCKET};
        for v6 in [false, true] {
            assert_eq!(unknown_get(SOL_SOCKET, false, v6), libc::ENOPROTOOPT);
            assert_eq!(unknown_get(SOL_IP, true, v6), libc::ENOPROTOOPT);
            assert_eq!(unknown_get(IPPROTO_TCP, false, v6), libc::ENOPROTOOPT);
            assert_eq!(unknown_get(IPPROTO_UDP, true, v6), libc::ENOPROTOOPT);
        }
        // An AF_INET socket's IP layer: EOPNOTSUPP for another level,
        // IPPROTO_IPV6 included; an AF_INET6 one's: ENOPROTOOPT.
        assert_eq!(unknown_get(IPPROTO_IPV6, true, false), libc::EOPNOTSUPP);
        assert_eq!(unknown_get(IPPROTO_UDP, false, false), libc::EOPNOTSUPP);
        assert_eq!(unknown_get(IPPROTO_IPV6, false, true), libc::ENOPROTOOPT);
        assert_eq!(unknown_get(IPPROTO_TCP, true, true), libc::ENOPROTOOPT);
    }

    #[test]
    fn values_out_are_cut_to_the_room_given() {
        let mut buf = [0xffu8; 16];
        let mut len: socklen_t = 2;
        // SAFETY: `buf` has 8 >= `len` writable bytes; `len` is live.
        let out = unsafe { OptOut::new(buf.as_mut_ptr().cast(), &mut len) };
        out.int(0x0102_0304).unwrap();
        assert_eq!(len, 2);
        assert_eq!(&buf[..2], &0x0102_0304i32.to_ne_bytes()[..2]);
        assert_eq!(buf[2], 0xff);
        let mut len: socklen_t = 16;
        // SAFETY: as above, with room for 16 bytes; an int takes 4.
        let out = unsafe { OptOut::new(buf.as_mut_ptr().cast(), &mut len) };
        out.int(5).unwrap();
        assert_eq!(len, 4);
        let mut neg: socklen_t = (-1i32) as socklen_t;
        // SAFETY: the negative length is refused before any write.
        let out = unsafe { OptOut::new(buf.as_mut_ptr().cast(), &mut neg) };
        assert_eq!(out.int(5), Err(libc::EINVAL));
        // SAFETY: null pointers are refused before any access.
        let out = unsafe { OptOut::new(buf.as_mut_ptr().cast(), std::ptr::null_mut()) };
        assert_eq!(out.int(5), Err(libc::EFAULT));
    }
}
