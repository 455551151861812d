//! What a layer may not do once it serves: a seccomp filter, installed by
//! [`Service::ready`](crate::Service::ready), refuses the system calls no
//! layer of a network stack has a use for (running programs, tracing or
//! reading other processes, mounting, loading modules or BPF, entering
//! namespaces, rebooting, changing the clock...). A layer that makes one
//! gets SIGSYS: the handler writes the call's number to the launcher's log
//! and the layer dies of it, to be restarted like a crashed one.
//!
//! This is a deny-list, the first step: an allow-list per layer, measured
//! from what each layer calls, is the goal.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The calls refused to every layer.
const DENIED: &[i64] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_open_by_handle_at,
    libc::SYS_userfaultfd,
];

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// The filter: every call allowed but [`DENIED`], which traps (SIGSYS).
fn program() -> Result<BpfProgram, String> {
    let rules = DENIED
        .iter()
        .map(|&nr| (nr, Vec::new()))
        .collect::<BTreeMap<_, _>>();
    let f = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trap, ARCH)
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

/// Installs the SIGSYS handler and the filter for every thread of the
/// process. Needs no_new_privs, which the launcher sets.
pub fn install() -> Result<(), String> {
    let prog = program()?;
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
    fn the_filter_builds() {
        let p = program().unwrap();
        assert!(p.len() > DENIED.len(), "a check per denied call at least");
    }
}
