//! Where each layer runs: CPU lists ("0-3,6"), the placement policies, and
//! the affinity the launcher gives each layer between fork and exec.
//!
//! A round trip crosses a dozen processes. On a virtual machine, waking a
//! process on an idle vCPU costs an inter-processor interrupt and a halt
//! exit; waking one on the vCPU that is running costs a context switch.
//! So the data path belongs on as few CPUs as possible unless a layer
//! has a core's worth of work of its own (docs/ARCHITECTURE.md,
//! "Placement", has the numbers).

use std::fmt;

use serde::Serialize;

/// How the layers are placed on the CPUs they may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Every layer on the first CPU of the set: no wake-up crosses cores.
    Compact,
    /// Layers in turn over the set, in start order.
    Spread,
    /// No affinity: wherever the kernel's scheduler puts them.
    None,
}

/// The scheduling class the layers run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// SCHED_BATCH: a layer woken by another does not preempt it; it runs
    /// when the waker sleeps, so on a shared CPU a packet climbs the
    /// layers in one pass (docs/ARCHITECTURE.md, "Waiting").
    Batch,
    /// SCHED_OTHER: every wake-up may preempt the waker.
    Normal,
}

impl Scheduling {
    /// The class named `s`.
    pub fn parse(s: &str) -> Option<Scheduling> {
        match s {
            "batch" => Some(Scheduling::Batch),
            "normal" => Some(Scheduling::Normal),
            _ => None,
        }
    }
}

impl Policy {
    /// The policy named `s`.
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "compact" => Some(Policy::Compact),
            "spread" => Some(Policy::Spread),
            "none" => Some(Policy::None),
            _ => None,
        }
    }
}

/// The most CPUs a list may name (the kernel's `cpu_set_t` holds 1024).
pub const MAX_CPU: u32 = 1023;

/// A set of CPUs, kept sorted and without repeats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuList(pub Vec<u32>);

impl CpuList {
    /// Parses a list as `taskset -c` and `/proc/PID/status` write it:
    /// numbers and ranges separated by commas ("0-3,6").
    pub fn parse(s: &str) -> Result<CpuList, String> {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim) {
            let num = |t: &str| {
                t.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&n| n <= MAX_CPU)
                    .ok_or_else(|| format!("{t:?} is not a CPU number (0..={MAX_CPU})"))
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if b < a {
                        return Err(format!("{part:?}: the range runs backwards"));
                    }
                    v.extend(a..=b);
                }
                None => v.push(num(part)?),
            }
        }
        v.sort_unstable();
        v.dedup();
        if v.is_empty() {
            return Err("no CPU named".into());
        }
        Ok(CpuList(v))
    }

    /// The CPUs this process may run on.
    pub fn allowed() -> CpuList {
        // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity
        // writes at most its size into it; CPU_ISSET reads it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return CpuList(vec![0]);
            }
            CpuList(
                (0..=MAX_CPU)
                    .filter(|&c| libc::CPU_ISSET(c as usize, &set))
                    .collect(),
            )
        }
    }

    /// As a kernel CPU set, for `sched_setaffinity`.
    pub fn to_set(&self) -> libc::cpu_set_t {
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes one
        // bit inside it (every CPU here is at most MAX_CPU, below its
        // 1024 bits).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in &self.0 {
                libc::CPU_SET(c as usize, &mut set);
            }
            set
        }
    }
}

impl Serialize for CpuList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl fmt::Display for CpuList {
    /// Ranges joined by commas, as `taskset -c` takes them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < self.0.len() {
            let mut j = i;
            while j + 1 < self.0.len() && self.0[j + 1] == self.0[j] + 1 {
                j += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if j > i {
                write!(f, "{}-{}", self.0[i], self.0[j])?;
            } else {
                write!(f, "{}", self.0[i])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// The CPUs of the `k`-th layer (in start order) under `policy` over
/// `cpus`; None: no affinity.
pub fn place(policy: Policy, cpus: &CpuList, k: usize) -> Option<CpuList> {
    match policy {
        Policy::Compact => Some(CpuList(vec![cpus.0[0]])),
        Policy::Spread => Some(CpuList(vec![cpus.0[k % cpus.0.len()]])),
        Policy::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_print_as_taskset_writes_them() {
        let l = CpuList::parse("6, 0-3,2").unwrap();
        assert_eq!(l.0, vec![0, 1, 2, 3, 6]);
        assert_eq!(l.to_string(), "0-3,6");
        assert_eq!(CpuList::parse("5").unwrap().to_string(), "5");
        for bad in ["", "a", "3-1", "1-", "2000", "-1"] {
            assert!(CpuList::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn compact_puts_every_layer_on_one_cpu_and_spread_takes_turns() {
        let cpus = CpuList::parse("2-4").unwrap();
        let on = |p, k| place(p, &cpus, k).map(|l| l.to_string());
        assert_eq!(on(Policy::Compact, 0), Some("2".into()));
        assert_eq!(on(Policy::Compact, 5), Some("2".into()));
        assert_eq!(
            (0..4)
                .map(|k| on(Policy::Spread, k).unwrap())
                .collect::<Vec<_>>(),
            ["2", "3", "4", "2"]
        );
        assert_eq!(on(Policy::None, 0), None);
    }

    #[test]
    fn a_set_round_trips_through_the_kernels_type() {
        let l = CpuList::parse("0,5,63,64").unwrap();
        let set = l.to_set();
        // SAFETY: CPU_ISSET reads one bit of a live cpu_set_t.
        let back: Vec<u32> = (0..=MAX_CPU)
            .filter(|&c| unsafe { libc::CPU_ISSET(c as usize, &set) })
            .collect();
        assert_eq!(back, l.0);
    }
}
