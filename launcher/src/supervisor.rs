//! Starting, watching and restarting the layer processes.

use crate::cpu::{CpuList, Scheduling};
use crate::plan::Plan;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};
use strata_ipc::capture::CAPTURE_CLEARING;
use strata_ipc::fabric::format_wake_env;
use strata_ipc::layout::state;
use strata_ipc::quarantine::{hex_dump, DeadInput};
use strata_ipc::service::{
    DEVICE_FD_ENV, DEVICE_MEM_FD_ENV, INSTANCE_ENV, LAYER_ENV, LISTEN_FD_ENV,
};
use strata_ipc::{now_ns, Fabric, LayerId, MAX_LAYERS, WAKE_ENV};

/// Deaths within this window count towards a crash loop.
const LOOP_WINDOW: Duration = Duration::from_secs(10);
/// Deaths in the window before restarts are delayed.
const LOOP_DEATHS: usize = 3;
/// How long after a death on an input the layer keeps hashing inputs of
/// that length as it takes them (see `strata_ipc::quarantine`).
const WATCH_TIME: Duration = Duration::from_secs(60);

/// One supervised layer.
pub struct Layer {
    /// Which layer.
    pub id: LayerId,
    child: Option<Child>,
    /// When the current instance started.
    pub started: Instant,
    /// Restarts so far.
    pub restarts: u32,
    deaths: VecDeque<Instant>,
    /// When a delayed restart is due.
    pub restart_at: Option<Instant>,
    last_beat: u64,
    last_beat_change: Instant,
    /// An fd the layer inherits, and the variable that names it: the
    /// device (driverd), the listening socket (sockd).
    inherit: [Option<(&'static str, RawFd)>; 2],
    /// Who the layer runs as.
    ids: Ids,
    /// Where it runs (None: wherever the kernel puts it).
    pub cpus: Option<CpuList>,
    /// How the previous instance ended.
    pub last_exit: Option<String>,
    /// The input the last death (not by request) was on, if it held one.
    last_input: Option<DeadInput>,
    /// Until when the layer hashes inputs of that input's length.
    watch_until: Option<Instant>,
    /// The coming death is our `kill`: no input caused it, and it does
    /// not count towards a crash loop.
    killed_by_request: bool,
    /// Readable once the running instance exits, so that the supervision
    /// loop learns of a death at once rather than at its next tick. None
    /// where the kernel has no pidfds (before 5.3): the tick then reaps.
    pidfd: Option<OwnedFd>,
    /// [`now_ns`] when we sent our `kill`, if the coming death is that.
    kill_ns: u64,
    /// A restart under way, until the new instance serves.
    pending: Option<Pending>,
    /// How long the last restart took.
    pub last_recovery: Option<Recovery>,
    /// The binary the layer runs: its name in the binaries' directory
    /// until `strata upgrade` names another.
    pub binary: PathBuf,
    /// An upgrade under way, until its instance serves.
    upgrade: Option<Upgrade>,
    /// Upgrades finished (done or failed), and how the last one went.
    pub upgrades: u64,
    pub last_upgrade: Option<Result<Recovery, String>>,
}

/// An upgrade under way (`strata upgrade`).
struct Upgrade {
    /// What to go back to if the new binary dies before it serves.
    previous: PathBuf,
    /// [`now_ns`] when the old instance was asked to hand over.
    asked_ns: u64,
    /// The old instance has exited and the new one is starting.
    handed_over: bool,
}

/// [`now_ns`] stamps of a restart under way (0: not yet).
#[derive(Clone, Copy)]
struct Pending {
    /// Our SIGKILL, for a `strata kill`.
    killed_ns: u64,
    noticed_ns: u64,
    /// Just before the fork.
    fork_ns: u64,
    /// When `spawn` returned, which is once the exec succeeded.
    exec_ns: u64,
}

/// Where the time from a death to the new instance serving went.
#[derive(Clone, Copy, Debug)]
pub struct Recovery {
    /// From our SIGKILL to noticing the death (`strata kill` only).
    pub detect_ns: Option<u64>,
    /// From noticing the death to the fork: reclaim, and any back-off.
    pub reclaim_ns: u64,
    /// From the fork to the new instance declaring itself serving: the
    /// exec, mapping the fabric, loading the configuration, restoring.
    pub startup_ns: u64,
    /// Of that, from the fork until the launcher saw the exec succeed
    /// (which may be after the layer was already serving).
    pub exec_ns: u64,
}

impl Recovery {
    /// Noticed (or, for our own kill, killed) to serving.
    pub fn total_ns(&self) -> u64 {
        self.detect_ns.unwrap_or(0) + self.reclaim_ns + self.startup_ns
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: a plain system call; the fd it returns (close-on-exec, as
    // pidfd_open always makes them) is ours alone.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: pidfd_open returned this fd (checked non-negative) and nothing
    // else owns it.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Layer {
    /// Pid of the running instance.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// The launcher's view of its layers.
pub struct Supervisor {
    /// The layers, in start order.
    pub layers: Vec<Layer>,
    instance: String,
    wake_env: String,
    heartbeat_timeout: Duration,
    backoff_max: Duration,
    /// The highest capability number this kernel knows.
    cap_last: u32,
    /// The layers run as SCHED_BATCH (`[cpu] scheduling`).
    batch: bool,
    /// By interface: how to give a dead driverd's device back to the
    /// kernel and open it anew before its buffers are reclaimed (an
    /// AF_XDP socket: see [`Supervisor::reopen_with`]).
    reopen: Vec<Option<Reopen>>,
}

/// Opens a device anew for the next driverd; the fd it inherits.
pub type Reopen = Box<dyn FnMut() -> std::io::Result<RawFd> + Send>;

/// The user and group a layer runs as; uid 0 (`[security] layer_uid_base
/// = 0`) leaves it root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

impl Ids {
    /// Layer `id`'s user in the block starting at `base`: the group is
    /// `base`, the user `base + 1 + id`.
    pub fn of(base: u32, id: LayerId) -> Ids {
        if base == 0 {
            Ids { uid: 0, gid: 0 }
        } else {
            Ids {
                uid: base + 1 + u32::from(id.0),
                gid: base,
            }
        }
    }
}

/// The highest capability number the running kernel knows (what the
/// bounding set must be emptied up to).
fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// In the child, before exec: empties the capability bounding set and
/// becomes `ids` for good (real, effective and saved ids, one group).
/// Leaving uid 0 clears the permitted, effective and ambient sets too
/// (no SECBIT_KEEP_CAPS), so the layer holds no capability and, with
/// no_new_privs, can never regain one.
///
/// # Safety
/// Only between fork and exec: it makes raw system calls on plain values.
unsafe fn drop_privileges(ids: Ids, cap_last: u32) -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    // SAFETY: prctl, setgroups, setresgid and setresuid take plain values
    // and a pointer to one live local (the group list).
    unsafe {
        for cap in 0..=cap_last {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(err());
            }
        }
        let groups = [ids.gid];
        if libc::setgroups(1, groups.as_ptr()) != 0
            || libc::setresgid(ids.gid, ids.gid, ids.gid) != 0
            || libc::setresuid(ids.uid, ids.uid, ids.uid) != 0
        {
            return Err(err());
        }
    }
    Ok(())
}

fn describe(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("signal {s} ({})", signal_name(s)),
        _ => "unknown".into(),
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGINT => "SIGINT",
        libc::SIGSYS => "SIGSYS: a forbidden system call",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        _ => "?",
    }
}

/// Where the layer binaries are: `STRATA_BIN_DIR`, else beside `strata`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STRATA_BIN_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Logs a line to the launcher's log (stderr), with a timestamp.
pub fn log(msg: &str) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = t.as_secs();
    eprintln!(
        "{:02}:{:02}:{:02}.{:03} strata: {msg}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        t.subsec_millis()
    );
}

impl Supervisor {
    /// A supervisor for `plan`'s layers; `device_fds` by interface index,
    /// `wake_fds` by layer id, `listen_fd` sockd's listening socket.
    pub fn new(
        plan: &Plan,
        device_fds: &[(RawFd, Option<RawFd>)],
        listen_fd: RawFd,
        wake_fds: &[RawFd; MAX_LAYERS],
    ) -> Supervisor {
        let mut layers = Vec::new();
        let now = Instant::now();
        let dir = bin_dir();
        let mk = |id: LayerId, inherit| Layer {
            id,
            child: None,
            started: now,
            restarts: 0,
            deaths: VecDeque::new(),
            restart_at: None,
            last_beat: 0,
            last_beat_change: now,
            inherit,
            ids: Ids::of(plan.layer_uid_base, id),
            cpus: None,
            last_exit: None,
            last_input: None,
            watch_until: None,
            killed_by_request: false,
            pidfd: None,
            kill_ns: 0,
            pending: None,
            last_recovery: None,
            binary: dir.join(id.name()),
            upgrade: None,
            upgrades: 0,
            last_upgrade: None,
        };
        for (i, &(fd, mem)) in device_fds.iter().enumerate() {
            let inherit = [
                Some((DEVICE_FD_ENV, fd)),
                mem.map(|m| (DEVICE_MEM_FD_ENV, m)),
            ];
            layers.push(mk(LayerId::driver(i as u8), inherit));
        }
        for id in LayerId::SERVICES {
            let inherit = (id == LayerId::SOCKD).then_some((LISTEN_FD_ENV, listen_fd));
            layers.push(mk(id, [inherit, None]));
        }
        Supervisor {
            layers,
            instance: plan.instance.clone(),
            wake_env: format_wake_env(wake_fds),
            heartbeat_timeout: plan.heartbeat_timeout,
            backoff_max: plan.backoff_max,
            cap_last: cap_last_cap(),
            batch: plan.cpu.scheduling == Scheduling::Batch,
            reopen: device_fds.iter().map(|_| None).collect(),
        }
        .placed(&plan.cpu)
    }

    /// Has interface `iface`'s device reopened by `f` each time its
    /// driverd ends, before what that driverd held is reclaimed: for a
    /// device that holds pool buffers no ring shows, which it lets go of
    /// only when closed. The new fd is what the next driverd inherits.
    pub fn reopen_with(&mut self, iface: usize, f: Reopen) {
        self.reopen[iface] = Some(f);
    }

    /// Gives each layer its CPUs: its own list if `[cpu.layer]` has one,
    /// else the policy's choice for its place in the start order.
    fn placed(mut self, cpu: &crate::config::Cpu) -> Supervisor {
        let set = cpu.cpus.clone().unwrap_or_else(CpuList::allowed);
        for (k, l) in self.layers.iter_mut().enumerate() {
            l.cpus = match cpu.layer.get(&l.id.label()) {
                Some(own) => Some(own.clone()),
                None => crate::cpu::place(cpu.policy, &set, k),
            };
        }
        self
    }

    fn spawn(&mut self, f: &Fabric, k: usize) -> std::io::Result<()> {
        let l = &mut self.layers[k];
        let bin = l.binary.clone();
        let mut cmd = Command::new(&bin);
        cmd.env(INSTANCE_ENV, &self.instance)
            .env(LAYER_ENV, l.id.label())
            .env(WAKE_ENV, &self.wake_env)
            .stdin(Stdio::null());
        let inherit = l.inherit.map(|i| i.map(|(_, fd)| fd));
        for (var, fd) in l.inherit.into_iter().flatten() {
            cmd.env(var, fd.to_string());
        }
        let (ids, cap_last) = (l.ids, self.cap_last);
        let cpus = l.cpus.as_ref().map(CpuList::to_set);
        let batch = self.batch;
        // SAFETY: the closure runs in the child between fork and exec, and
        // calls only async-signal-safe functions (prctl, sched_*,
        // setgroups, set*id, setpgid, fcntl) on plain values: no
        // allocation, no lock.
        // Clearing close-on-exec on the inherited fd is what hands it over.
        unsafe {
            cmd.pre_exec(move || {
                // No exec of the layer, or of anything it runs, gains
                // privileges (setuid, file capabilities).
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(set) = &cpus {
                    let size = std::mem::size_of::<libc::cpu_set_t>();
                    if libc::sched_setaffinity(0, size, set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // No preemption on wake-up (docs/ARCHITECTURE.md,
                // "Waiting"); any user may choose it.
                let normal = libc::sched_param { sched_priority: 0 };
                if batch && libc::sched_setscheduler(0, libc::SCHED_BATCH, &normal) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if ids.uid != 0 {
                    drop_privileges(ids, cap_last)?;
                }
                // Die with the launcher, whatever kills it (set after the
                // ids change, which clears it); and stay out of the
                // terminal's process group so that Ctrl-C reaches only the
                // launcher, which then stops the layers in order.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setpgid(0, 0);
                for fd in inherit.into_iter().flatten() {
                    libc::fcntl(fd, libc::F_SETFD, 0);
                }
                Ok(())
            });
        }
        let ctl = f.ctl(l.id);
        ctl.ready_ns.store(0, Relaxed);
        ctl.state.store(state::STARTING, Release);
        let fork_ns = now_ns();
        let spawned = cmd.spawn();
        if let Some(p) = &mut l.pending {
            p.fork_ns = fork_ns;
            p.exec_ns = now_ns();
        }
        let child = spawned.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (build every layer with `cargo build --release --workspace --bins`)"
            } else {
                ""
            };
            std::io::Error::new(e.kind(), format!("{}: {e}{hint}", bin.display()))
        })?;
        let now = Instant::now();
        // The start time before the pid (which publishes it): a layer
        // that tells instances apart by (pid, start), as sockd tells
        // tcpd's, must not see the new pid with the old start and take
        // one restart for two.
        f.launch(l.id).started_ms.store(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            Relaxed,
        );
        ctl.pid.store(child.id(), Release);
        // Opened after the fork, which is safe: the child cannot be reaped
        // before we wait for it, so its pid is not reused meanwhile.
        l.pidfd = pidfd_open(child.id());
        l.child = Some(child);
        l.started = now;
        l.last_beat = ctl.heartbeat.load(Relaxed);
        l.last_beat_change = now;
        l.restart_at = None;
        Ok(())
    }

    /// Starts every layer and waits until all serve, or fails (having
    /// stopped whatever did start).
    pub fn start_all(&mut self, f: &Fabric, timeout: Duration) -> Result<(), String> {
        for k in 0..self.layers.len() {
            if let Err(e) = self.spawn(f, k) {
                self.stop_all(f);
                return Err(format!("cannot start {}: {e}", self.layers[k].id));
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for l in &mut self.layers {
                if let Some(Ok(Some(st))) = l.child.as_mut().map(|c| c.try_wait()) {
                    let msg = format!("{} exited during start-up: {}", l.id, describe(st));
                    self.stop_all(f);
                    return Err(msg);
                }
                if f.ctl(l.id).state.load(Acquire) != state::RUNNING {
                    all = false;
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                let slow: Vec<String> = self
                    .layers
                    .iter()
                    .filter(|l| f.ctl(l.id).state.load(Acquire) != state::RUNNING)
                    .map(|l| l.id.label())
                    .collect();
                self.stop_all(f);
                return Err(format!("layers not ready in time: {}", slow.join(", ")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// One round of supervision: reap the dead, catch the hung, restart;
    /// and end a capture whose client died without ending it.
    pub fn tick(&mut self, f: &Fabric) {
        let now = Instant::now();
        end_orphan_capture(f);
        for k in 0..self.layers.len() {
            let id = self.layers[k].id;
            let ctl = f.ctl(id);
            // Dead?
            let exited = match self.layers[k].child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(st))) => Some((describe(st), st.success())),
                Some(Err(e)) => Some((format!("wait failed: {e}"), false)),
                _ => None,
            };
            if let Some((how, clean)) = exited {
                self.on_death(f, k, how, clean, now);
                continue;
            }
            // Hung? A running layer beats at least every IDLE_TICK_MS.
            let l = &mut self.layers[k];
            if let Some(c) = &l.child {
                let beat = ctl.heartbeat.load(Relaxed);
                if beat != l.last_beat {
                    l.last_beat = beat;
                    l.last_beat_change = now;
                } else if ctl.state.load(Acquire) == state::RUNNING
                    && now.duration_since(l.last_beat_change) > self.heartbeat_timeout
                {
                    log(&format!(
                        "{} (pid {}) missed its heartbeat for {:?}: killing it",
                        id,
                        c.id(),
                        self.heartbeat_timeout
                    ));
                    // SAFETY: kill takes no pointers; the pid is our child,
                    // not yet reaped (we hold its Child), so it cannot name
                    // another process.
                    unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
                    l.last_beat_change = now;
                }
            }
            Self::note_ready(f, &mut self.layers[k]);
            let l = &mut self.layers[k];
            if l.watch_until.is_some_and(|t| now >= t) {
                l.watch_until = None;
                f.watch_inputs(id, None);
            }
            // A delayed restart due?
            if self.layers[k].child.is_none() {
                if let Some(at) = self.layers[k].restart_at {
                    if now >= at {
                        self.restart(f, k);
                    }
                }
            }
        }
    }

    /// Logs and keeps the timing of a restart whose instance serves.
    /// Called at every tick, and at a death, since an instance can serve
    /// and die between two ticks (deliberate kills in a row).
    fn note_ready(f: &Fabric, l: &mut Layer) {
        let Some(p) = l.pending else { return };
        let ready = f.ctl(l.id).ready_ns.load(Relaxed);
        if ready == 0 || p.fork_ns == 0 {
            return;
        }
        let r = Recovery {
            detect_ns: (p.killed_ns != 0).then(|| p.noticed_ns.saturating_sub(p.killed_ns)),
            reclaim_ns: p.fork_ns.saturating_sub(p.noticed_ns),
            startup_ns: ready.saturating_sub(p.fork_ns),
            exec_ns: p.exec_ns.saturating_sub(p.fork_ns),
        };
        l.pending = None;
        l.last_recovery = Some(r);
        if l.upgrade.take().is_some() {
            l.upgrades += 1;
            l.last_upgrade = Some(Ok(r));
            log(&format!(
                "{} upgraded to {}: handed over in {:.1} ms, then serving again {:.1} ms after \
                 the old instance exited (reclaim {:.1} ms, fork to serving {:.1} ms)",
                l.id,
                l.binary.display(),
                ms(r.detect_ns.unwrap_or(0)),
                ms(r.reclaim_ns + r.startup_ns),
                ms(r.reclaim_ns),
                ms(r.startup_ns)
            ));
            return;
        }
        log(&format!(
            "{} serving again {:.1} ms after {}{} (reclaim {:.1} ms, fork to serving {:.1} ms \
             of which {:.1} ms until the exec was seen)",
            l.id,
            ms(r.total_ns()),
            if r.detect_ns.is_some() {
                "our kill"
            } else {
                "its death was noticed"
            },
            r.detect_ns
                .map(|d| format!(", noticed in {:.1} ms", ms(d)))
                .unwrap_or_default(),
            ms(r.reclaim_ns),
            ms(r.startup_ns),
            ms(r.exec_ns)
        ));
    }

    /// An instance ended (`clean`: it exited with status 0, as one that
    /// hands over does): reclaim what it held and start the next.
    fn on_death(&mut self, f: &Fabric, k: usize, how: String, clean: bool, now: Instant) {
        let noticed_ns = now_ns();
        // The dead instance may have served since the last tick.
        Self::note_ready(f, &mut self.layers[k]);
        let l = &mut self.layers[k];
        let pid = l.child.take().map(|c| c.id()).unwrap_or(0);
        l.pidfd = None;
        let id = l.id;
        let ctl = f.ctl(id);
        ctl.state.store(state::DEAD, Release);
        ctl.pid.store(0, Release);
        let mut by_request = std::mem::take(&mut l.killed_by_request);
        let mut killed_ns = std::mem::take(&mut l.kill_ns);
        match &mut l.upgrade {
            // The new binary's instance died before serving: back to the
            // binary that ran before.
            Some(u) if u.handed_over => {
                let back = std::mem::replace(&mut l.binary, u.previous.clone());
                let msg = format!(
                    "{} (pid {pid}) died before serving: {how}; running {} again",
                    back.display(),
                    l.binary.display()
                );
                log(&format!("{id}: upgrade failed: {msg}"));
                l.upgrade = None;
                l.upgrades += 1;
                l.last_upgrade = Some(Err(msg));
            }
            // The old instance made way (or died meanwhile): the new
            // binary starts.
            Some(u) => {
                u.handed_over = true;
                if clean {
                    by_request = true;
                    killed_ns = u.asked_ns;
                }
            }
            None => {}
        }
        // Before reclaim frees it: the input it died on, if it held one.
        let verdict = match f.dead_input(id) {
            Some(inp) if !by_request => Self::judge_input(f, l, inp, &how, now),
            _ => None,
        };
        let reopen = id
            .iface()
            .and_then(|i| self.reopen.get_mut(usize::from(i)))
            .and_then(Option::as_mut);
        if let Some(reopen) = reopen {
            match reopen() {
                Ok(fd) => l.inherit[0] = Some((DEVICE_FD_ENV, fd)),
                Err(e) => log(&format!("{id}: reopening its device: {e}")),
            }
        }
        let freed = f.reclaim(id);
        let lived = now.duration_since(l.started);
        // Only deaths of the layer's own making count towards a crash
        // loop: a `strata kill` (chaos testing, the recovery bench) says
        // nothing about whether the next instance will survive, and
        // delaying its restart would only lengthen the outage the kill
        // was meant to exercise. Hangs count: we killed it, but for a
        // fault of its own.
        if !by_request {
            l.deaths.push_back(now);
        }
        while l
            .deaths
            .front()
            .is_some_and(|t| now.duration_since(*t) > LOOP_WINDOW)
        {
            l.deaths.pop_front();
        }
        let delay = if l.deaths.len() >= LOOP_DEATHS {
            let exp = (l.deaths.len() - LOOP_DEATHS).min(10) as u32;
            Duration::from_millis(100 * (1u64 << exp)).min(self.backoff_max)
        } else {
            Duration::ZERO
        };
        if clean && l.upgrade.is_some() {
            log(&format!(
                "{id} (pid {pid}) handed over; reclaimed {freed} buffers; starting {}",
                l.binary.display()
            ));
        } else {
            log(&format!(
                "{id} (pid {pid}) died after {:.1}s: {how}; reclaimed {freed} buffers; \
                 restarting{}",
                lived.as_secs_f64(),
                if delay.is_zero() {
                    String::new()
                } else {
                    format!(" in {} ms (crash loop back-off)", delay.as_millis())
                }
            ));
        }
        if let Some(v) = verdict {
            log(&v);
        }
        l.last_exit = Some(how);
        l.pending = Some(Pending {
            killed_ns: if by_request { killed_ns } else { 0 },
            noticed_ns,
            fork_ns: 0,
            exec_ns: 0,
        });
        l.restart_at = Some(now + delay);
        if delay.is_zero() {
            self.restart(f, k);
        }
    }

    /// A second death on the same input quarantines it before the
    /// restart; a first makes the next instance hash inputs of its length
    /// as it takes them, so the entry can hold their hash from before any
    /// logic changed them. Returns what to log.
    fn judge_input(
        f: &Fabric,
        l: &mut Layer,
        inp: DeadInput,
        how: &str,
        now: Instant,
    ) -> Option<String> {
        let id = l.id;
        if l.last_input.as_ref().is_some_and(|p| inp.same_as(p)) {
            let key = inp.key();
            f.quarantine(id, inp.len, key);
            f.watch_inputs(id, None);
            l.watch_until = None;
            l.last_input = None;
            let shown = if inp.head.len() < inp.len as usize {
                format!(" (first {} bytes)", inp.head.len())
            } else {
                String::new()
            };
            let dump: Vec<String> = hex_dump(&inp.head)
                .lines()
                .map(|r| format!("    {r}"))
                .collect();
            Some(format!(
                "{id} died twice on the same input ({how}): quarantined it, {} bytes, \
                 hash {key:016x}; copies are dropped from now on; the input{shown}:\n{}",
                inp.len,
                dump.join("\n")
            ))
        } else {
            let msg = format!(
                "{id} was handling an input of {} bytes (hash {:016x}); watching for it",
                inp.len, inp.hash
            );
            f.watch_inputs(id, Some(inp.len));
            l.watch_until = Some(now + WATCH_TIME);
            l.last_input = Some(inp);
            Some(msg)
        }
    }

    fn restart(&mut self, f: &Fabric, k: usize) {
        let id = self.layers[k].id;
        // Counted in the fabric before the new instance runs, so that it
        // knows from its first input that it is not the first.
        f.launch(id).restarts.fetch_add(1, Relaxed);
        match self.spawn(f, k) {
            Ok(()) => {
                let l = &mut self.layers[k];
                l.restarts += 1;
                log(&format!("{id} restarted (pid {})", l.pid().unwrap_or(0)));
            }
            Err(e) => {
                f.launch(id).restarts.fetch_sub(1, Relaxed);
                log(&format!("{id}: restart failed: {e}; retrying"));
                self.layers[k].restart_at = Some(Instant::now() + self.backoff_max);
            }
        }
    }

    /// What the supervision loop waits on between ticks: the pidfds of the
    /// running layers.
    pub fn death_fds(&self) -> Vec<RawFd> {
        self.layers
            .iter()
            .filter_map(|l| l.pidfd.as_ref().map(|p| p.as_raw_fd()))
            .collect()
    }

    /// The earliest delayed restart, if any is due.
    pub fn next_restart(&self) -> Option<Instant> {
        self.layers
            .iter()
            .filter(|l| l.child.is_none())
            .filter_map(|l| l.restart_at)
            .min()
    }

    /// Sends SIGKILL to a layer (fault injection). Returns its pid.
    pub fn kill(&mut self, id: LayerId) -> Result<u32, String> {
        let l = self
            .layers
            .iter_mut()
            .find(|l| l.id == id)
            .ok_or_else(|| format!("this instance has no layer {id}"))?;
        let pid = l.pid().ok_or_else(|| format!("{id} is not running"))?;
        l.killed_by_request = true;
        l.kill_ns = now_ns();
        // SAFETY: kill takes no pointers; the pid is our running child, not
        // yet reaped, so it cannot name another process.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        log(&format!("{id} (pid {pid}) killed by request"));
        Ok(pid)
    }

    /// Layer `id`, if this instance has it.
    pub fn layer(&self, id: LayerId) -> Option<&Layer> {
        self.layers.iter().find(|l| l.id == id)
    }

    /// What an upgrade of `id` starts from: the binary it runs, the user
    /// it runs as, and its running instance's pid.
    pub fn upgrade_target(&self, id: LayerId) -> Result<(PathBuf, Ids, u32), String> {
        let l = self
            .layer(id)
            .ok_or_else(|| format!("this instance has no layer {id}"))?;
        let pid = l.pid().ok_or_else(|| format!("{id} is not running"))?;
        Ok((l.binary.clone(), l.ids, pid))
    }

    /// Asks layer `id`'s running instance to hand over at its next event
    /// boundary, and has `binary` (checked by the caller) start in its
    /// place once it has: the launcher's half of `strata upgrade`. Returns
    /// the number [`Layer::upgrades`] reaches when this one is done.
    pub fn begin_upgrade(
        &mut self,
        f: &Fabric,
        id: LayerId,
        binary: PathBuf,
    ) -> Result<u64, String> {
        let l = self
            .layers
            .iter_mut()
            .find(|l| l.id == id)
            .ok_or_else(|| format!("this instance has no layer {id}"))?;
        if l.upgrade.is_some() {
            return Err(format!("{id} is already being upgraded"));
        }
        if l.pid().is_none() || l.pending.is_some() {
            return Err(format!("{id} is restarting: try again once it serves"));
        }
        let previous = std::mem::replace(&mut l.binary, binary);
        l.upgrade = Some(Upgrade {
            previous,
            asked_ns: now_ns(),
            handed_over: false,
        });
        f.launch(id).upgrade_req.fetch_add(1, SeqCst);
        f.kick(id);
        log(&format!(
            "{id} (pid {}) asked to hand over to {}",
            l.pid().unwrap_or(0),
            l.binary.display()
        ));
        Ok(l.upgrades + 1)
    }

    /// Stops every layer: SIGTERM top-down, then SIGKILL what lingers.
    pub fn stop_all(&mut self, f: &Fabric) {
        for l in self.layers.iter().rev() {
            if let Some(c) = &l.child {
                // SAFETY: kill takes no pointers; the pid is our child, not
                // yet reaped (we hold its Child).
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for l in self.layers.iter_mut().rev() {
            l.pidfd = None;
            l.pending = None;
            if let Some(mut c) = l.child.take() {
                loop {
                    match c.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() > deadline => {
                            let _ = c.kill();
                            let _ = c.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
            f.ctl(l.id).state.store(state::STOPPED, Release);
            f.ctl(l.id).pid.store(0, Release);
        }
    }
}

/// A capture whose client is gone (SIGKILL) would keep the layers
/// evaluating its filter for nobody: the launcher takes it down. It holds
/// the capture meanwhile ([`CAPTURE_CLEARING`]), so that a new client
/// cannot start one that the clearing would end.
fn end_orphan_capture(f: &Fabric) {
    let ctl = f.capture_ctl();
    let owner = ctl.owner.load(Acquire);
    if owner == 0 || owner == CAPTURE_CLEARING {
        return;
    }
    if !std::path::Path::new(&format!("/proc/{owner}")).exists()
        && ctl
            .owner
            .compare_exchange(owner, CAPTURE_CLEARING, AcqRel, Acquire)
            .is_ok()
    {
        ctl.rings.store(0, Release);
        ctl.owner.store(0, Release);
        log(&format!(
            "capture by pid {owner} ended without stopping: turned off"
        ));
    }
}
