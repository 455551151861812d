//! A socket's blocking mode (`O_NONBLOCK`), and calls in it.
//!
//! libsock keeps the mode per socket, not per call, so `MSG_DONTWAIT` on
//! a blocking socket switches the libsock object to non-blocking for the
//! one call. That is safe only while no other thread of the process is
//! inside a blocking call on the same socket (it would wake up to a
//! `WouldBlock` it never asked for): the gate counts those calls, runs a
//! `MSG_DONTWAIT` call alone ("exclusive") when there are none, makes
//! blocking calls that arrive meanwhile wait for it (it never blocks, so
//! that is short), and reports [`Busy`] when there are some.

use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex};

use libsock::{TcpListener, TcpStream, UdpSocket};

use crate::table::lock;

/// A socket's libsock object.
#[derive(Clone, Debug)]
pub(crate) enum Obj {
    /// A listening TCP socket.
    Listener(Arc<TcpListener>),
    /// A TCP connection (also while it connects).
    Stream(Arc<TcpStream>),
    /// A UDP socket.
    Udp(Arc<UdpSocket>),
}

impl Obj {
    /// libsock's own non-blocking mode of the object.
    pub(crate) fn set_nonblocking(&self, on: bool) {
        // libsock's set_nonblocking cannot fail (it stores a flag).
        let _ = match self {
            Obj::Listener(l) => l.set_nonblocking(on),
            Obj::Stream(s) => s.set_nonblocking(on),
            Obj::Udp(u) => u.set_nonblocking(on),
        };
    }

    /// The object's readiness fd (libsock's, made on first use; the
    /// caller dups it), or why it could not be made.
    pub(crate) fn readiness_fd(&self) -> std::io::Result<RawFd> {
        match self {
            Obj::Listener(l) => l.readiness_fd(),
            Obj::Stream(s) => s.readiness_fd(),
            Obj::Udp(u) => u.readiness_fd(),
        }
    }
}

/// A `MSG_DONTWAIT` call could not run: another thread is inside a
/// blocking call on the socket.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Busy;

#[derive(Debug)]
struct GateState {
    /// `O_NONBLOCK`, as the application set it.
    nonblocking: bool,
    /// Calls in progress in blocking mode.
    blocking: u32,
    /// A `MSG_DONTWAIT` call runs with the object switched to
    /// non-blocking.
    exclusive: bool,
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Gate {
    st: Mutex<GateState>,
    cv: Condvar,
}

/// Ends a blocking call's count, also if it unwinds.
struct Leave<'a>(&'a Gate);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.0.st);
        st.blocking = st.blocking.saturating_sub(1);
    }
}

impl Gate {
    pub(crate) fn new(nonblocking: bool) -> Gate {
        Gate {
            st: Mutex::new(GateState {
                nonblocking,
                blocking: 0,
                exclusive: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// `O_NONBLOCK`.
    pub(crate) fn nonblocking(&self) -> bool {
        lock(&self.st).nonblocking
    }

    /// Sets `O_NONBLOCK`; `obj`, the socket's object if it has one,
    /// follows at once (or when a running `MSG_DONTWAIT` call ends).
    pub(crate) fn set_nonblocking(&self, on: bool, obj: Option<&Obj>) {
        let mut st = lock(&self.st);
        st.nonblocking = on;
        if !st.exclusive {
            if let Some(o) = obj {
                o.set_nonblocking(on);
            }
        }
    }

    /// Puts a socket's new object in the socket's mode.
    pub(crate) fn adopt(&self, obj: &Obj) {
        let st = lock(&self.st);
        obj.set_nonblocking(st.nonblocking);
    }

    /// Runs `f`, a call on `obj`, in the socket's mode, or without
    /// waiting when `dontwait`; `f` learns whether it may block.
    pub(crate) fn run<T>(
        &self,
        obj: &Obj,
        dontwait: bool,
        f: impl FnOnce(bool) -> T,
    ) -> Result<T, Busy> {
        let mut st = lock(&self.st);
        while st.exclusive && !st.nonblocking {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.nonblocking {
            drop(st);
            return Ok(f(false));
        }
        if !dontwait {
            st.blocking += 1;
            drop(st);
            let _leave = Leave(self);
            return Ok(f(true));
        }
        if st.blocking > 0 {
            return Err(Busy);
        }
        st.exclusive = true;
        obj.set_nonblocking(true);
        drop(st);
        /// Ends the exclusive call, also if it unwinds.
        struct Restore<'a>(&'a Gate, &'a Obj);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let mut st = lock(&self.0.st);
                self.1.set_nonblocking(st.nonblocking);
                st.exclusive = false;
                self.0.cv.notify_all();
            }
        }
        let _restore = Restore(self, obj);
        Ok(f(false))
    }
}
