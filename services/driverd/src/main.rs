//! driverd: moves frames between one device and the pool, in batches
//! (NAPI-style: read up to a budget, hand the batch up in one ring update,
//! then sleep on device readiness and the eventfd).
//!
//! The launcher opened the device and holds it; we work on an inherited
//! copy of its fd, so our death does not take the interface down.

use std::collections::VecDeque;
use std::os::fd::{IntoRawFd, RawFd};
use strata_drivers::Driver;
use strata_ipc::service::{self, DEVICE_FD_ENV};
use strata_ipc::{ifc, now_ns, Buffers, Handle, LayerId, Service, BUDGET, HEADROOM};

const C_RX: usize = 0;
const C_TX: usize = 1;
const C_RX_NOBUF: usize = 2;
const C_TX_ERR: usize = 3;
const C_RX_ERR: usize = 4;

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

fn main() {
    let svc = Service::start("driverd").unwrap_or_else(|e| service::die("driverd", &e));
    let f = &svc.fabric;
    let me = svc.me;
    let iface = me.iface().expect("driverd has an interface");
    let cfg = svc
        .config
        .ifaces
        .get(iface as usize)
        .unwrap_or_else(|| service::die("driverd", "no such interface in the configuration"));
    let fd: RawFd = service::inherited_fd(DEVICE_FD_ENV)
        .unwrap_or_else(|e| service::die("driverd", &e))
        .into_raw_fd();
    let mut dev = open_device(&cfg.driver, fd)
        .unwrap_or_else(|e| service::die("driverd", &format!("device fd {fd}: {e}")));
    f.register_counters(
        me,
        &[
            "rx_frames",
            "tx_frames",
            "rx_no_buffer",
            "tx_error",
            "rx_error",
        ],
    );
    let mut up = f
        .producer(me, LayerId::NETDEVD)
        .expect("ring driverd->netdevd");
    let mut down = f
        .consumer(LayerId::NETDEVD, me)
        .expect("ring netdevd->driverd");
    let mut pool = f.pool(me);
    let max_frame = cfg.mtu as usize + 14 + 4;
    let mut batch = [Handle::default(); BUDGET];
    // Frames the device would not take yet; bounded by one ring's worth.
    let mut pending: VecDeque<Handle> = VecDeque::with_capacity(f.params().ring_size as usize);
    svc.ready();
    loop {
        f.beat(me);
        // Receive: only as many frames as the ring can take, so that a
        // slow stack leaves frames in the device queue rather than losing
        // them here.
        let room = (up.space() as usize).min(BUDGET);
        let mut n = 0;
        let mut dev_empty = false;
        while n < room {
            let Some(mut h) = f.alloc(me, max_frame) else {
                f.count(me, C_RX_NOBUF, 1);
                f.iface_add(iface, ifc::RX_DROP_NO_BUFFER, 1);
                break;
            };
            let raw = pool.raw_mut(&h).expect("fresh buffer");
            let start = HEADROOM as usize;
            match dev.recv(&mut raw[start..]) {
                Ok(Some(len)) => {
                    h.data_len = len as u32;
                    h.iif = iface;
                    h.tstamp = now_ns();
                    batch[n] = h;
                    n += 1;
                }
                Ok(None) => {
                    pool.free(&h);
                    dev_empty = true;
                    break;
                }
                Err(_) => {
                    pool.free(&h);
                    f.count(me, C_RX_ERR, 1);
                    f.iface_add(iface, ifc::RX_ERROR, 1);
                    dev_empty = true;
                    break;
                }
            }
        }
        if n > 0 {
            up.push(&batch[..n]);
            f.count(me, C_RX, n as u64);
        }

        // Transmit: what the device refused earlier goes first.
        let mut sent = 0;
        let room = pending.capacity() - pending.len();
        let m = down.pop(&mut batch[..room.min(BUDGET)]);
        pending.extend(batch[..m].iter().copied());
        let mut dev_full = false;
        while let Some(h) = pending.front().copied() {
            if !f.take_input(me, &h) {
                pending.pop_front();
                continue;
            }
            let res = match pool.data(&h) {
                Ok(d) => dev.send(d),
                Err(_) => Ok(true),
            };
            match res {
                Ok(true) => {
                    pending.pop_front();
                    pool.free(&h);
                    sent += 1;
                }
                Ok(false) => {
                    dev_full = true;
                    break;
                }
                Err(_) => {
                    pending.pop_front();
                    pool.free(&h);
                    f.count(me, C_TX_ERR, 1);
                    f.iface_add(iface, ifc::TX_DROP_DEVICE, 1);
                }
            }
        }
        if sent > 0 {
            f.count(me, C_TX, sent as u64);
        }

        if (dev_empty || n == 0) && m == 0 && sent == 0 {
            let mut pfd = [libc::pollfd {
                fd: dev.as_raw_fd(),
                // A full ring means we could not take frames anyway: do
                // not let a readable device wake us just to spin.
                events: if up.space() > 0 { libc::POLLIN } else { 0 }
                    | if dev_full { libc::POLLOUT } else { 0 },
                revents: 0,
            }];
            let tick = if up.space() == 0 {
                1
            } else {
                service::IDLE_TICK_MS
            };
            f.sleep(me, &mut pfd, tick, || down.is_empty());
        }
    }
}
