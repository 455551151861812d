//! What every layer process does around its protocol logic: find its
//! instance and identity, map the fabric, take its eventfds, load the
//! runtime configuration, and announce itself.

use crate::fabric::Fabric;
use crate::layer::LayerId;
use crate::layout::state;
use crate::runtime::StackConfig;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::*;

/// Environment variable naming the instance.
pub const INSTANCE_ENV: &str = "STRATA_INSTANCE";
/// Environment variable naming the layer (its label, e.g. `driverd0`).
pub const LAYER_ENV: &str = "STRATA_LAYER";
/// Environment variable with the inherited device fd (driverd only).
pub const DEVICE_FD_ENV: &str = "STRATA_DEVICE_FD";

/// The environment variable naming a driverd's second inherited fd, for
/// a device that has one: an AF_XDP interface's UMEM.
pub const DEVICE_MEM_FD_ENV: &str = "STRATA_DEVICE_MEM_FD";
/// Environment variable with the inherited listening socket, bound to
/// `/run/strata/<instance>/sockd.sock` by the launcher (sockd only): the
/// layer needs no right to the runtime directory, and the socket outlives
/// a restart of sockd, so applications connecting meanwhile wait in its
/// backlog.
pub const LISTEN_FD_ENV: &str = "STRATA_LISTEN_FD";

/// Environment variable that, set to `poll`, makes layers with no fd to
/// watch sleep in poll on their eventfd rather than in a futex wait (the
/// default): for measuring one against the other (docs/ARCHITECTURE.md,
/// "Waiting").
pub const WAIT_ENV: &str = "STRATA_WAIT";

/// The fd the launcher handed over in the environment variable `var`.
pub fn inherited_fd(var: &str) -> Result<OwnedFd, String> {
    let fd: RawFd = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{var} not set: layers are started by `strata up`"))?;
    // SAFETY: F_GETFD takes no pointer; it only asks whether `fd` is open.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("{var}: fd {fd} is not open"));
    }
    // SAFETY: the fd is open (checked above) and was handed to this
    // process for it alone to use: nothing else here owns or closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Most handles a layer moves per ring per turn of its loop (a NAPI-style
/// budget: large enough to amortise a wake-up, small enough that one busy
/// ring cannot starve the others).
pub const BUDGET: usize = 64;

/// Longest a layer sleeps without beating its heartbeat, in ms.
pub const IDLE_TICK_MS: i32 = 100;

/// The formats of a layer's arena a binary knows: the one it writes, and
/// the oldest it can still read (every format from that one to the one it
/// writes). A restarted or upgraded instance finds its predecessor's
/// arena; a layer that changes what it keeps there bumps `writes` and
/// keeps reading the previous format, so that `strata upgrade` can move
/// a running stack to the new binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaFormat {
    pub writes: u32,
    pub reads_from: u32,
}

impl ArenaFormat {
    /// A layer whose arena has had one format.
    pub const FIRST: ArenaFormat = ArenaFormat {
        writes: 1,
        reads_from: 1,
    };

    /// Whether an arena last declared `found` (0: nothing yet) can be
    /// read.
    pub fn reads(&self, found: u32) -> bool {
        found == 0 || (self.reads_from..=self.writes).contains(&found)
    }
}

/// The argument with which a layer binary, instead of running, prints
/// what it is as one line of JSON ([`Probe`]) and exits: the launcher asks
/// it of a binary before an upgrade.
pub const PROBE_ARG: &str = "--strata-probe";

/// What a layer binary says it is when run with [`PROBE_ARG`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// The layer's name (`tcpd`; `driverd` for every driver instance).
    pub layer: String,
    /// The fabric layout it maps ([`crate::layout::VERSION`]).
    pub layout: u32,
    pub arena_writes: u32,
    pub arena_reads_from: u32,
}

/// A running layer's context.
pub struct Service {
    /// The mapped fabric, with this layer's eventfds set.
    pub fabric: Fabric,
    /// Who we are.
    pub me: LayerId,
    /// The stack's configuration, as it was when the layer started.
    pub config: StackConfig,
    /// Its generation ([`crate::runtime::ConfigCtl`]).
    pub config_gen: u64,
    /// The arena formats this binary knows.
    pub arena: ArenaFormat,
    /// [`crate::layout::LaunchCtl::upgrade_req`] as the instance started:
    /// a change asks it to hand over.
    pub upgrade_req: u64,
}

impl Service {
    /// Sets up a layer process from what the launcher passed it: layer
    /// `expect`, keeping its arena in `arena`'s format. Errors are
    /// messages for the launcher's log. Run with [`PROBE_ARG`], prints
    /// the binary's [`Probe`] and exits instead.
    pub fn start(expect: &'static str, arena: ArenaFormat) -> Result<Service, String> {
        if std::env::args().nth(1).as_deref() == Some(PROBE_ARG) {
            let p = Probe {
                layer: expect.to_string(),
                layout: crate::layout::VERSION,
                arena_writes: arena.writes,
                arena_reads_from: arena.reads_from,
            };
            println!("{}", serde_json::to_string(&p).unwrap_or_default());
            std::process::exit(0);
        }
        let instance = std::env::var(INSTANCE_ENV)
            .map_err(|_| format!("{INSTANCE_ENV} not set: layers are started by `strata up`"))?;
        let label = std::env::var(LAYER_ENV).map_err(|_| format!("{LAYER_ENV} not set"))?;
        let me = LayerId::from_label(&label).ok_or_else(|| format!("unknown layer {label}"))?;
        if me.name() != expect {
            return Err(format!("{expect} started as {label}"));
        }
        let mut fabric = Fabric::open(&instance).map_err(|e| e.to_string())?;
        fabric
            .protect_for(me)
            .map_err(|e| format!("read-only view of the region: {e}"))?;
        fabric.set_me(me);
        fabric.wakeups_from_env().map_err(|e| e.to_string())?;
        fabric.set_futex_wait(std::env::var(WAIT_ENV).map_or(true, |v| v != "poll"));
        let (config_gen, config) = fabric.config().read_settled()?;
        let ctl = fabric.ctl(me);
        // The launcher checks an upgrade's binary before it starts it; this
        // guards against a binary put in place of the layer's by hand.
        let found = ctl.arena_format.load(Acquire);
        if !arena.reads(found) {
            return Err(format!(
                "its arena holds format {found}, and this binary reads formats {} to {}",
                arena.reads_from, arena.writes
            ));
        }
        ctl.pid.store(std::process::id(), Relaxed);
        ctl.config_gen.store(config_gen, Release);
        let upgrade_req = fabric.launch(me).upgrade_req.load(Acquire);
        Ok(Service {
            fabric,
            me,
            config,
            config_gen,
            arena,
            upgrade_req,
        })
    }

    /// Confines the layer (`confine`: from here on, a forbidden system
    /// call kills it) and tells the launcher it is serving.
    pub fn ready(&self) {
        if let Err(e) = crate::confine::install(self.me) {
            die(self.me.name(), &format!("seccomp: {e}"));
        }
        let ctl = self.fabric.ctl(self.me);
        // Restored by now, and what it saves from here on is in its own
        // format.
        ctl.arena_format.store(self.arena.writes, Release);
        ctl.ready_ns.store(now_ns(), Relaxed);
        ctl.state.store(state::RUNNING, Release);
        self.fabric.beat(self.me);
        forbidden_call_test_hook(self.me);
    }

    /// Prints a line to the launcher's log (our stderr is its log).
    pub fn log(&self, msg: &str) {
        eprintln!("{}[{}]: {msg}", self.me.label(), std::process::id());
    }
}

/// Tests only: with `STRATA_TEST_FORBIDDEN_CALL=<layer label>`, that
/// layer makes a forbidden system call when it receives SIGUSR1, to show
/// what follows (it dies of SIGSYS, the call logged, and is restarted).
pub const FORBIDDEN_CALL_ENV: &str = "STRATA_TEST_FORBIDDEN_CALL";

fn forbidden_call_test_hook(me: LayerId) {
    extern "C" fn on_usr1(_: libc::c_int) {
        // SAFETY: ptrace(PTRACE_TRACEME) takes no pointers; the filter
        // traps it before it does anything.
        unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) };
    }
    if std::env::var(FORBIDDEN_CALL_ENV).is_ok_and(|v| v == me.label()) {
        // SAFETY: the handler is an extern "C" fn(c_int), as signal()
        // expects, and makes one raw system call.
        unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    }
}

/// Monotonic time in nanoseconds (the clock every layer shares).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Exits with a message, for setup failures (the launcher logs and
/// restarts with back-off).
pub fn die(layer: &str, msg: &str) -> ! {
    eprintln!("{layer}: {msg}");
    std::process::exit(1)
}
