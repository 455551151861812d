//! What a layer may do once it serves: a seccomp allow-list per layer,
//! installed by [`Service::ready`](crate::Service::ready). Everything else
//! (running programs, opening files, sockets, tracing, mounting, BPF,
//! namespaces, `mprotect`, executable memory...) raises SIGSYS: the
//! handler writes the call's number to the launcher's log and the layer
//! dies of it, to be restarted like a crashed one.
//!
//! The lists were measured: the whole test suite run with every layer
//! under `strace -f`, keeping the calls each made after installing its
//! filter. A layer in its loop only polls, reads and writes its eventfds
//! and device, and allocates; sockd also accepts sessions, passes fds,
//! maps its clients' memory and reads `/proc` for their credentials. To
//! those come the calls of paths the suite rarely takes but a layer may
//! (memory growth, a panic's message and abort, the SIGSYS handler
//! itself). Two calls are narrowed by their arguments: no mapping is
//! executable, and only sockd maps anything but anonymous memory.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use crate::layer::LayerId;

/// Calls every layer may make without condition.
const COMMON: &[i64] = &[
    // The loop: eventfds, the device, stderr (the launcher's log).
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_restart_syscall,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getrandom,
    libc::SYS_close,
    // Memory (the allocator; `mmap` is narrowed below).
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    // Signals: the SIGSYS handler, a panic's abort, the end.
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Calls one layer makes beyond [`COMMON`].
fn extra(me: LayerId) -> &'static [i64] {
    if me.iface().is_some() {
        // driverd: a pair link's socket reconnects to its other end; an
        // AF_XDP socket's rings are found (getsockopt) and the kernel
        // woken for them (zero-length sendto and recvfrom).
        return &[
            libc::SYS_connect,
            libc::SYS_recvmsg,
            libc::SYS_sendmsg,
            libc::SYS_getsockopt,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
        ];
    }
    if me == LayerId::SOCKD {
        return &[
            // Sessions: which are ready, accept, credentials, requests
            // with fds.
            #[cfg(target_arch = "x86_64")]
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_accept4,
            libc::SYS_getsockopt,
            libc::SYS_recvfrom,
            libc::SYS_recvmsg,
            libc::SYS_recvmmsg,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_fcntl,
            // A client's /proc/PID/status and stat.
            libc::SYS_openat,
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_fstat,
            libc::SYS_lseek,
        ];
    }
    &[]
}

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// `arg` of a call, under `mask`, equals `value`.
fn arg_masked(arg: u8, mask: u64, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, Len::Qword, Op::MaskedEq(mask), value)
        .expect("argument index below 6")
}

/// The filter of layer `me`: its calls allowed, every other traps
/// (SIGSYS).
fn program(me: LayerId) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(extra(me))
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let rule = |c: Vec<SeccompCondition>| SeccompRule::new(c).map_err(|e| e.to_string());
    // mmap(addr, len, prot, flags, ...): never executable; anonymous only,
    // but for sockd, which maps its clients' socket memory, and driverd,
    // an AF_XDP socket's rings and UMEM.
    let no_exec = arg_masked(2, libc::PROT_EXEC as u64, 0);
    let anon = libc::MAP_ANONYMOUS as u64;
    let mmap = if me == LayerId::SOCKD || me.iface().is_some() {
        vec![no_exec]
    } else {
        vec![no_exec, arg_masked(3, anon, anon)]
    };
    rules.insert(libc::SYS_mmap, vec![rule(mmap)?]);
    if me == LayerId::SOCKD {
        // pidfd_send_signal(pidfd, 0, ...): whether a client still lives,
        // never a real signal.
        rules.insert(
            libc::SYS_pidfd_send_signal,
            vec![rule(vec![arg_masked(1, u64::MAX, 0)])?],
        );
    }
    let f = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, ARCH)
        .map_err(|e| e.to_string())?;
    BpfProgram::try_from(f).map_err(|e| e.to_string())
}

/// Writes "forbidden system call N" to stderr and dies of the signal.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let mut buf = *b"forbidden system call                \n";
    let start = b"forbidden system call ".len();
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler;
    // for SIGSYS from seccomp, the syscall number sits in `si_syscall`,
    // the int at byte 24 of the structure on Linux (after si_signo,
    // si_errno, si_code, padding and si_call_addr).
    let nr = unsafe { *(info as *const u8).add(24).cast::<libc::c_int>() };
    let mut digits = [0u8; 12];
    let mut n = nr.unsigned_abs();
    let mut k = digits.len();
    loop {
        k -= 1;
        digits[k] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let d = &digits[k..];
    buf[start..start + d.len()].copy_from_slice(d);
    buf[start + d.len()] = b'\n';
    // SAFETY: write, signal and raise are async-signal-safe and take
    // pointers to live locals only.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), start + d.len() + 1);
        libc::signal(libc::SIGSYS, libc::SIG_DFL);
        libc::raise(libc::SIGSYS);
    }
}

/// Installs the SIGSYS handler and `me`'s filter for every thread of
/// the process. Needs no_new_privs, which the launcher sets.
pub fn install(me: LayerId) -> Result<(), String> {
    let prog = program(me)?;
    // SAFETY: a zeroed sigaction is a valid empty one; the handler is an
    // extern "C" function of the signature SA_SIGINFO expects, and the
    // kernel copies the structure during the call.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layers_filter_builds() {
        for me in LayerId::SERVICES.into_iter().chain([LayerId::driver(0)]) {
            let p = program(me).unwrap();
            assert!(p.len() > COMMON.len() + extra(me).len(), "{me}");
        }
    }

    #[test]
    fn only_sockd_may_open_files_or_accept() {
        for me in LayerId::SERVICES.into_iter().chain([LayerId::driver(0)]) {
            let open = extra(me).contains(&libc::SYS_openat);
            assert_eq!(open, me == LayerId::SOCKD, "{me}");
            assert!(!COMMON.contains(&libc::SYS_openat));
            assert!(!COMMON.contains(&libc::SYS_mprotect));
            assert!(!COMMON.contains(&libc::SYS_execve));
        }
    }
}
