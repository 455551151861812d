//! The few system-call wrappers the backends share: errors from return
//! values, owned fds, memfds and shared mappings.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The calling thread's last OS error.
pub(crate) fn last() -> io::Error {
    io::Error::last_os_error()
}

/// A system call's return value as an fd, or its error.
pub(crate) fn cvt(r: libc::c_long) -> io::Result<RawFd> {
    if r < 0 {
        Err(last())
    } else {
        Ok(r as RawFd)
    }
}

/// An owned fd from a raw one just made.
pub(crate) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel to us alone.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A new memfd named `name` of `len` bytes (zeros), closed on exec.
pub(crate) fn memfd(name: &std::ffi::CStr, len: u64) -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name and flags; a new fd.
    let fd = owned(cvt(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC)
    }
    .into())?);
    // SAFETY: ftruncate on our own memfd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
        return Err(last());
    }
    Ok(fd)
}

/// A shared mapping, unmapped on drop.
pub(crate) struct Map {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

// SAFETY: the mapping is plain shared memory (or device registers); what
// is shared in it is accessed through atomics or volatile operations.
unsafe impl Send for Map {}

impl Map {
    /// Maps `len` bytes of `fd` from `offset`, readable and writable,
    /// never executable, with its pages populated.
    pub(crate) fn new(fd: RawFd, len: usize, offset: i64) -> io::Result<Map> {
        // SAFETY: a new shared mapping of `fd`, not executable, at an
        // address the kernel picks; nothing else is there.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last());
        }
        Ok(Map { ptr: p.cast(), len })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
