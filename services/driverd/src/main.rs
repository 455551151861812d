//! driverd: moves frames between one device and the pool, in batches
//! (NAPI-style: read up to a budget, hand the batch up in one ring update,
//! then sleep on device readiness and the eventfd; an empty device is not
//! read again until poll says it is readable, frames went out, or the
//! loop has been busy for a few turns).
//!
//! The launcher opened the device and holds it; we work on an inherited
//! copy of its fd, so our death does not take the interface down.

use std::collections::VecDeque;
use std::os::fd::{IntoRawFd, RawFd};
use strata_drivers::Driver;
use strata_ipc::serve::{Cx, Layer, Loop, Overflow, MAX_WAIT_FDS};
use strata_ipc::service::{self, DEVICE_FD_ENV};
use strata_ipc::{ifc, Buffers, Handle, LayerId, Service, BUDGET, HEADROOM};

strata_ipc::layer_stats! { "driverd";
    /// Frames read from the device.
    RxFrames => "rx_frames",
    /// Frames written to the device.
    TxFrames => "tx_frames",
    /// Reads not made for want of a pool buffer (the frame waits in the
    /// device).
    RxNoBuffer => "rx_no_buffer",
    /// Frames the device refused with an error.
    TxError => "tx_error",
    /// Reads that failed (oversized frame, device error).
    RxError => "rx_error",
    /// Reads that found the device empty.
    RxEmptyReads => "rx_empty_reads",
}

fn open_device(kind: &str, fd: RawFd) -> std::io::Result<Box<dyn Driver>> {
    // SAFETY: the launcher passed us this fd for exactly this purpose, and
    // nothing else in this process uses it.
    unsafe {
        Ok(match kind {
            "pair" => Box::new(strata_drivers::pair::Pair::from_raw_fd(fd)?),
            _ => Box::new(strata_drivers::tap::Tap::from_raw_fd(fd)?),
        })
    }
}

/// Busy turns (no wait, so no poll of the device) after which an empty
/// device is read again: frames can arrive while the loop transmits.
const REARM_AFTER_TURNS: u32 = 2;

/// The loop's one input (from netdevd) and one output (to it).
const TO_NETDEV: usize = 0;

/// driverd's side of the service loop.
struct Shell {
    dev: Box<dyn Driver>,
    iface: u8,
    max_frame: usize,
    /// Frames the device would not take yet; bounded by one ring's worth.
    pending: VecDeque<Handle>,
    /// The device may have frames: set when poll says it is readable,
    /// while reads fill their budget, after frames went out, and when the
    /// loop has been busy for a few turns without polling; cleared by a
    /// read that finds it empty. So a busy loop does not ask an empty
    /// device each turn.
    rx_armed: bool,
    /// Turns since the loop last waited (and so polled the device).
    awake_turns: u32,
    /// The device refused a frame: wait for it to be writable.
    dev_full: bool,
    /// netdevd's ring was full when we last looked.
    up_full: bool,
    stats: Stats,
}

impl Shell {
    /// Reads frames into pool buffers, as many as netdevd's ring can take
    /// (a slow stack leaves them in the device queue rather than losing
    /// them here). Returns how many.
    fn receive(&mut self, cx: &mut Cx) -> usize {
        let room = cx.room(TO_NETDEV).min(BUDGET);
        let mut n = 0;
        while n < room {
            let Some(mut h) = cx.pool.alloc(self.max_frame) else {
                self.stats.inc(Stat::RxNoBuffer);
                cx.pool
                    .fabric()
                    .iface_add(self.iface, ifc::RX_DROP_NO_BUFFER, 1);
                break;
            };
            cx.syscalls(1);
            let raw = cx.pool.raw_mut(&h).expect("fresh buffer");
            match self.dev.recv(&mut raw[HEADROOM as usize..]) {
                Ok(Some(len)) => {
                    h.data_len = len as u32;
                    h.iif = self.iface;
                    h.tstamp = cx.now;
                    cx.send(TO_NETDEV, h);
                    n += 1;
                }
                Ok(None) => {
                    cx.pool.free(&h);
                    self.stats.inc(Stat::RxEmptyReads);
                    self.rx_armed = false;
                    break;
                }
                Err(_) => {
                    cx.pool.free(&h);
                    self.stats.inc(Stat::RxError);
                    cx.pool.fabric().iface_add(self.iface, ifc::RX_ERROR, 1);
                    self.rx_armed = false;
                    break;
                }
            }
        }
        self.stats.add(Stat::RxFrames, n as u64);
        cx.received(n as u64);
        n
    }

    /// Writes what waits for the device, oldest first, until it refuses.
    /// Returns how many frames left.
    fn transmit(&mut self, cx: &mut Cx) -> usize {
        let mut sent = 0;
        self.dev_full = false;
        while let Some(h) = self.pending.front().copied() {
            cx.syscalls(1);
            let res = match cx.pool.data(&h) {
                Ok(d) => self.dev.send(d),
                Err(_) => Ok(true),
            };
            match res {
                Ok(true) => {
                    self.pending.pop_front();
                    cx.pool.free(&h);
                    sent += 1;
                }
                Ok(false) => {
                    self.dev_full = true;
                    break;
                }
                Err(_) => {
                    self.pending.pop_front();
                    cx.pool.free(&h);
                    self.stats.inc(Stat::TxError);
                    cx.pool
                        .fabric()
                        .iface_add(self.iface, ifc::TX_DROP_DEVICE, 1);
                }
            }
        }
        self.stats.add(Stat::TxFrames, sent as u64);
        sent
    }
}

impl Layer for Shell {
    fn begin(&mut self, cx: &mut Cx) -> usize {
        self.awake_turns += 1;
        if self.awake_turns > REARM_AFTER_TURNS {
            self.awake_turns = 0;
            self.rx_armed = true;
        }
        self.up_full = cx.room(TO_NETDEV) == 0;
        if self.rx_armed && !self.up_full {
            self.receive(cx)
        } else {
            0
        }
    }

    fn admit(&self, _input: usize, _cx: &Cx) -> usize {
        self.pending.capacity() - self.pending.len()
    }

    fn input(&mut self, _input: usize, h: Handle, _cx: &mut Cx) {
        self.pending.push_back(h);
    }

    fn end(&mut self, cx: &mut Cx) -> usize {
        let sent = self.transmit(cx);
        if sent > 0 {
            // The kernel handles a frame written to a TAP in the writer's
            // system call, and a peer on this CPU often answers before we
            // would sleep: read again next turn rather than poll first.
            self.rx_armed = true;
        }
        sent
    }

    fn held(&self) -> bool {
        // A full ring means we could not take frames anyway: nap rather
        // than let a readable device wake us just to spin.
        self.up_full
    }

    fn wait_fds(&self, fds: &mut [libc::pollfd; MAX_WAIT_FDS]) -> usize {
        fds[0] = libc::pollfd {
            fd: self.dev.as_raw_fd(),
            events: if self.up_full { 0 } else { libc::POLLIN }
                | if self.dev_full { libc::POLLOUT } else { 0 },
            revents: 0,
        };
        1
    }

    fn woke(&mut self, fds: &[libc::pollfd]) {
        self.awake_turns = 0;
        if fds.first().is_some_and(|p| p.revents & libc::POLLIN != 0) {
            self.rx_armed = true;
        }
        // A wait that ended for any other reason (a kick, the tick) after
        // a full ring: netdevd may have made room.
        if self.up_full {
            self.rx_armed = true;
        }
    }

    fn counters(&self) -> &[u64] {
        self.stats.as_array()
    }
}

fn main() {
    let svc = Service::start("driverd").unwrap_or_else(|e| service::die("driverd", &e));
    let f = &svc.fabric;
    let iface = svc.me.iface().expect("driverd has an interface");
    let cfg = svc
        .config
        .ifaces
        .get(iface as usize)
        .unwrap_or_else(|| service::die("driverd", "no such interface in the configuration"));
    let fd: RawFd = service::inherited_fd(DEVICE_FD_ENV)
        .unwrap_or_else(|e| service::die("driverd", &e))
        .into_raw_fd();
    let dev = open_device(&cfg.driver, fd)
        .unwrap_or_else(|e| service::die("driverd", &format!("device fd {fd}: {e}")));
    let names: Vec<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
    let lp = Loop::new(
        &svc,
        &names,
        &[],
        &[LayerId::NETDEVD],
        &[(LayerId::NETDEVD, Overflow::Keep)],
    );
    let mut shell = Shell {
        dev,
        iface,
        max_frame: cfg.mtu as usize + 14 + 4,
        pending: VecDeque::with_capacity(f.params().ring_size as usize),
        rx_armed: true,
        awake_turns: 0,
        dev_full: false,
        up_full: false,
        stats: Stats::default(),
    };
    lp.run(&mut shell)
}
