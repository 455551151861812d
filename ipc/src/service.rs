//! What every layer process does around its protocol logic: find its
//! instance and identity, map the fabric, take its eventfds, load the
//! runtime configuration, and announce itself.

use crate::fabric::Fabric;
use crate::layer::LayerId;
use crate::layout::state;
use crate::runtime::StackConfig;
use std::sync::atomic::Ordering::*;

/// Environment variable naming the instance.
pub const INSTANCE_ENV: &str = "STRATA_INSTANCE";
/// Environment variable naming the layer (its label, e.g. `driverd0`).
pub const LAYER_ENV: &str = "STRATA_LAYER";
/// Environment variable with the inherited device fd (driverd only).
pub const DEVICE_FD_ENV: &str = "STRATA_DEVICE_FD";

/// Most handles a layer moves per ring per turn of its loop (a NAPI-style
/// budget: large enough to amortise a wake-up, small enough that one busy
/// ring cannot starve the others).
pub const BUDGET: usize = 64;

/// Longest a layer sleeps without beating its heartbeat, in ms.
pub const IDLE_TICK_MS: i32 = 100;

/// A running layer's context.
pub struct Service {
    /// The mapped fabric, with this layer's eventfds set.
    pub fabric: Fabric,
    /// Who we are.
    pub me: LayerId,
    /// The stack's configuration.
    pub config: StackConfig,
}

impl Service {
    /// Sets up a layer process from what the launcher passed it. Errors are
    /// messages for the launcher's log.
    pub fn start(expect: &str) -> Result<Service, String> {
        let instance = std::env::var(INSTANCE_ENV)
            .map_err(|_| format!("{INSTANCE_ENV} not set: layers are started by `strata up`"))?;
        let label = std::env::var(LAYER_ENV).map_err(|_| format!("{LAYER_ENV} not set"))?;
        let me = LayerId::from_label(&label).ok_or_else(|| format!("unknown layer {label}"))?;
        if me.name() != expect {
            return Err(format!("{expect} started as {label}"));
        }
        let mut fabric = Fabric::open(&instance).map_err(|e| e.to_string())?;
        fabric.set_me(me);
        fabric.wakeups_from_env().map_err(|e| e.to_string())?;
        let config = StackConfig::load(&instance)?;
        let ctl = fabric.ctl(me);
        ctl.pid.store(std::process::id(), Relaxed);
        Ok(Service { fabric, me, config })
    }

    /// Tells the launcher the layer is serving.
    pub fn ready(&self) {
        let ctl = self.fabric.ctl(self.me);
        ctl.ready_ns.store(now_ns(), Relaxed);
        ctl.state.store(state::RUNNING, Release);
        self.fabric.beat(self.me);
    }

    /// Prints a line to the launcher's log (our stderr is its log).
    pub fn log(&self, msg: &str) {
        eprintln!("{}[{}]: {msg}", self.me.label(), std::process::id());
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
