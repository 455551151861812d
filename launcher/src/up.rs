//! `strata up`: build the instance, supervise it, tear it down.

use crate::control::{self, Shared};
use crate::plan::{DeviceSpec, Plan};
use crate::supervisor::{log, Supervisor};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_ipc::runtime::{control_socket, run_dir};
use strata_ipc::{Fabric, MAX_LAYERS};

/// Devices, eventfds and sockd's listening socket: the launcher holds
/// them for the instance's lifetime and hands them to each (re)started
/// layer.
/// A device the launcher holds for the life of the stack.
enum HeldDevice {
    /// A TAP or pair end ("tap" or "pair"): one fd.
    Fd(OwnedFd, &'static str),
    /// An AF_XDP interface: its socket and the XDP program (detached
    /// when this goes); shared with the supervisor, which binds a new
    /// socket for each new driverd.
    Xdp(Arc<Mutex<strata_drivers::xdp::XdpAttach>>),
    /// A VFIO device: its container, group and DMA area, and the device.
    Vfio(strata_drivers::vfio::VfioAttach, String),
}

impl HeldDevice {
    /// What `strata status` says of the device.
    fn describe(&self) -> String {
        match self {
            HeldDevice::Fd(_, kind) => (*kind).into(),
            HeldDevice::Xdp(x) => {
                let mode = x.lock().map_or("unknown", |x| x.mode());
                format!("af_xdp, {mode} mode, queue 0")
            }
            HeldDevice::Vfio(v, pci) => format!("vfio, {pci}, IOMMU group {}", v.group()),
        }
    }

    /// The fds driverd inherits: the device, and its memory if it has one.
    fn fds(&self) -> (RawFd, Option<RawFd>) {
        match self {
            HeldDevice::Fd(fd, _) => (fd.as_raw_fd(), None),
            HeldDevice::Xdp(x) => (x.lock().map_or(-1, |x| x.socket_fd()), None),
            HeldDevice::Vfio(v, _) => (v.device_fd(), Some(v.dma_fd())),
        }
    }
}

struct Held {
    devices: Vec<HeldDevice>,
    _wake: Vec<OwnedFd>,
    listener: OwnedFd,
}

/// Refuses a layer id block that this machine's users or groups already
/// name: a layer must share its ids with no one.
fn check_layer_ids(base: u32) -> Result<(), String> {
    if base == 0 {
        return Ok(());
    }
    let block = base..=base + MAX_LAYERS as u32;
    for file in ["/etc/passwd", "/etc/group"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines() {
            let mut f = line.split(':');
            let (name, id) = (f.next(), f.nth(1).and_then(|v| v.parse::<u32>().ok()));
            if let (Some(name), Some(id)) = (name, id) {
                if block.contains(&id) {
                    return Err(format!(
                        "[security] layer_uid_base = {base}: id {id} is {name:?} in {file}; \
                         the layers need {}..={} to themselves",
                        block.start(),
                        block.end()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Refuses CPUs `strata up` may not run on itself (the layers could not
/// either).
fn check_cpus(cpu: &crate::config::Cpu) -> Result<(), String> {
    let allowed = crate::cpu::CpuList::allowed();
    let lists = cpu
        .cpus
        .iter()
        .map(|l| ("cpu.cpus".to_string(), l))
        .chain(cpu.layer.iter().map(|(n, l)| (format!("cpu.layer.{n}"), l)));
    for (field, list) in lists {
        if let Some(c) = list.0.iter().find(|c| !allowed.0.contains(c)) {
            return Err(format!(
                "{field}: CPU {c} is not one this process may use ({allowed})"
            ));
        }
    }
    Ok(())
}

/// sockd's listening socket, `/run/strata/<instance>/sockd.sock`, with the
/// configured mode and group. The launcher binds it, so that sockd needs
/// no right to the runtime directory and the socket outlives sockd's
/// restarts.
fn sockd_listener(plan: &Plan) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
    use std::os::unix::fs::PermissionsExt;
    let path = run_dir(&plan.instance).join(strata_proto::sock::SOCKET_FILE);
    let _ = std::fs::remove_file(&path);
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &nix::sys::socket::UnixAddr::new(&path)?)?;
    // Who may open sockets: by default any local user (SO_PEERCRED tells
    // sockd who each is); `[sockd]` narrows it to a group.
    if let Some(g) = plan.socket_group {
        std::os::unix::fs::chown(&path, None, Some(g))?;
    }
    std::fs::set_permissions(
        &path,
        std::fs::Permissions::from_mode(plan.socket_mode & 0o777),
    )?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

/// Frames the kernel queues for driverd on a TAP (its `txqueuelen`; the
/// kernel's default is 1,000), enough for a burst of retransmissions
/// while the stack is busy: see ARCHITECTURE, "driverd and the devices".
/// `ip link set <tap> txqueuelen N` changes it while the stack runs.
const TAP_QUEUE_FRAMES: u32 = 16_384;

/// Creates the TAP `name` of interface `i` and configures its kernel
/// side: MTU, queue length, addresses of both families, up.
fn open_tap(
    i: usize,
    name: &str,
    mtu: u16,
    host_addrs: &[(Ipv4Addr, u8)],
    host_addrs6: &[(Ipv6Addr, u8)],
    offloads: bool,
) -> Result<OwnedFd, String> {
    let tap = strata_drivers::Tap::create(name, offloads)
        .map_err(|e| format!("interface[{i}]: cannot create TAP {name:?}: {e}"))?;
    let kname = tap.name().to_string();
    strata_drivers::tap::set_mtu(&kname, u32::from(mtu))
        .map_err(|e| format!("interface[{i}]: MTU {mtu} on {kname}: {e}"))?;
    strata_drivers::tap::set_queue_len(&kname, TAP_QUEUE_FRAMES)
        .map_err(|e| format!("interface[{i}]: queue length on {kname}: {e}"))?;
    let failed = |a: &dyn std::fmt::Display, p: &u8, e: std::io::Error| {
        format!("interface[{i}]: host address {a}/{p} on {kname}: {e}")
    };
    for (a, p) in host_addrs {
        strata_drivers::tap::add_host_addr(&kname, *a, *p).map_err(|e| failed(a, p, e))?;
    }
    for (a, p) in host_addrs6 {
        strata_drivers::tap::add_host_addr6(&kname, *a, *p).map_err(|e| failed(a, p, e))?;
    }
    strata_drivers::tap::set_up(&kname)
        .map_err(|e| format!("interface[{i}]: bringing {kname} up: {e}"))?;
    Ok(tap.into())
}

/// The configuration with each vfio device's own MAC for an interface
/// whose MAC it did not name (a NIC's address is the one its network
/// knows), and its plan.
fn with_device_macs(
    mut cfg: crate::config::Config,
    plan: Plan,
    devices: &[HeldDevice],
) -> Result<(crate::config::Config, Plan), String> {
    let mut changed = false;
    for (ifc, d) in cfg.interfaces.iter_mut().zip(devices) {
        if let (HeldDevice::Vfio(v, _), false) = (d, ifc.mac_given) {
            if let Some(mac) = v.mac() {
                ifc.mac = crate::config::MacAddr(mac);
                changed = true;
            }
        }
    }
    if !changed {
        return Ok((cfg, plan));
    }
    cfg.validate().map_err(|e| e.to_string())?;
    let plan = Plan::from_config(&cfg);
    Ok((cfg, plan))
}

fn open_devices(plan: &Plan) -> Result<Vec<HeldDevice>, String> {
    let mut out = Vec::new();
    for (i, d) in plan.devices.iter().enumerate() {
        let fd: OwnedFd = match d {
            DeviceSpec::AfXdp { device } => {
                let x = strata_drivers::xdp::XdpAttach::open(device)
                    .map_err(|e| format!("interface[{i}]: AF_XDP on {device:?}: {e}"))?;
                out.push(HeldDevice::Xdp(Arc::new(Mutex::new(x))));
                continue;
            }
            DeviceSpec::Vfio { device } => {
                let v = strata_drivers::vfio::VfioAttach::open(device)
                    .map_err(|e| format!("interface[{i}]: VFIO device {device}: {e}"))?;
                out.push(HeldDevice::Vfio(v, device.clone()));
                continue;
            }
            DeviceSpec::Tap {
                name,
                mtu,
                host_addrs,
                host_addrs6,
                offloads,
            } => open_tap(i, name, *mtu, host_addrs, host_addrs6, *offloads)?,
            DeviceSpec::Pair { link, side_a } => {
                let side = if *side_a {
                    strata_drivers::Side::A
                } else {
                    strata_drivers::Side::B
                };
                strata_drivers::Pair::open(link, side)
                    .map_err(|e| format!("interface[{i}]: pair link {link:?}: {e}"))?
                    .into()
            }
        };
        let kind = if matches!(d, DeviceSpec::Tap { .. }) {
            "tap"
        } else {
            "pair"
        };
        out.push(HeldDevice::Fd(fd, kind));
    }
    Ok(out)
}

fn make_wakeups() -> Result<(Vec<OwnedFd>, [RawFd; MAX_LAYERS]), String> {
    let mut owned = Vec::new();
    let mut fds = [-1; MAX_LAYERS];
    for slot in fds.iter_mut() {
        let fd = strata_ipc::fabric::new_eventfd().map_err(|e| format!("eventfd: {e}"))?;
        // SAFETY: freshly created, owned by nobody else.
        owned.push(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
        *slot = fd;
    }
    Ok((owned, fds))
}

/// Removes what a killed launcher of the same instance left behind, or
/// refuses if that instance is alive.
fn clear_leftovers(instance: &str) -> Result<(), String> {
    let sock = control_socket(instance);
    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        return Err(format!(
            "instance {instance:?} is already running (control socket {})",
            sock.display()
        ));
    }
    if Fabric::remove_stale(instance) {
        log(&format!(
            "removed a stale shared-memory segment of instance {instance:?}"
        ));
    }
    let _ = std::fs::remove_dir_all(run_dir(instance));
    Ok(())
}

/// An interface's addresses, IPv4 then IPv6, as the ready message lists
/// them: `10.77.0.2/24,fd00:77::2/64`.
fn fmt_addrs(v4: &[(Ipv4Addr, u8)], v6: &[(Ipv6Addr, u8)]) -> String {
    let v4 = v4.iter().map(|(a, p)| format!("{a}/{p}"));
    let v6 = v6.iter().map(|(a, p)| format!("{a}/{p}"));
    v4.chain(v6).collect::<Vec<_>>().join(",")
}

/// How often the supervision loop checks heartbeats (and, without pidfds,
/// reaps the dead).
const TICK: Duration = Duration::from_millis(20);

/// Waits until one of `fds` is readable or `timeout` passes.
fn wait_readable(fds: &[RawFd], timeout: Duration) {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // Rounded up, so that a due deadline is not polled for at 0 ms again
    // and again.
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    // SAFETY: `p` is a valid array of `p.len()` pollfds. EINTR (a stop
    // signal) just ends the wait early.
    unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
}

/// Runs the instance described by `config` (or the default one) until
/// stopped.
pub fn run(config: Option<&Path>, instance: &str) -> Result<(), String> {
    let cfg = match config {
        Some(p) => crate::config::load(p).map_err(|e| e.to_string())?,
        None => {
            let c = crate::config::Config {
                instance: instance.to_string(),
                ..Default::default()
            };
            c.validate().map_err(|e| e.to_string())?;
            c
        }
    };
    let plan = Plan::from_config(&cfg);
    let inst = plan.instance.clone();
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("strata up needs root (TAP devices, /run/strata)".into());
    }
    check_layer_ids(plan.layer_uid_base)?;
    check_cpus(&plan.cpu)?;
    clear_leftovers(&inst)?;

    // Stop requests are taken from here on, so that a Ctrl-C during
    // start-up still leaves nothing behind.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, SeqCst))
            .map_err(|e| format!("signal handler: {e}"))?;
    }

    let devices = open_devices(&plan)?;
    let (cfg, plan) = with_device_macs(cfg, plan, &devices)?;
    let (wake_owned, wake_fds) = make_wakeups()?;
    let dir = run_dir(&inst);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let listener = sockd_listener(&plan).map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        format!("sockd's socket: {e}")
    })?;
    let held = Held {
        devices,
        _wake: wake_owned,
        listener,
    };
    let mut fabric = Fabric::create(&inst, plan.params).map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        e.to_string()
    })?;
    // So that the launcher's own kicks (an upgrade, a flush, a new
    // configuration) wake a layer asleep in poll, not only one on its
    // futex.
    fabric.set_wakeups(wake_fds);
    // VFIO and AF_XDP devices reach the pool's buffers themselves.
    for (i, d) in held.devices.iter().enumerate() {
        let done = match d {
            HeldDevice::Vfio(v, pci) => v
                .map_pool(fabric.buffer_area())
                .map_err(|e| format!("interface[{i}]: VFIO device {pci}: {e}")),
            HeldDevice::Xdp(x) => x
                .lock()
                .expect("not shared yet")
                .bind(fabric.buffer_area())
                .map_err(|e| format!("interface[{i}]: an AF_XDP socket over the packet pool: {e}")),
            HeldDevice::Fd(..) => Ok(()),
        };
        if let Err(e) = done {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    }
    let result = (|| {
        if plan.layer_uid_base != 0 {
            // Only the layers' group (and root) may map the region.
            fabric
                .grant_group(plan.layer_uid_base)
                .map_err(|e| format!("shared memory: {e}"))?;
        }
        fabric
            .config()
            .publish(&plan.stack)
            .map_err(|e| e.to_string())?;
        for ifc in &plan.stack.ifaces {
            fabric.set_iface_info(ifc.index, &ifc.name, ifc.mac, ifc.mtu as u32);
        }
        // The rule set is in filterd's arena before filterd starts.
        let filter = crate::filter::FilterState::new(&fabric, &plan.filter_rules)?;
        let dev_fds: Vec<(RawFd, Option<RawFd>)> =
            held.devices.iter().map(HeldDevice::fds).collect();
        let mut sup = Supervisor::new(&plan, &dev_fds, held.listener.as_raw_fd(), &wake_fds);
        for (i, d) in held.devices.iter().enumerate() {
            if let HeldDevice::Xdp(x) = d {
                let x = x.clone();
                sup.reopen_with(
                    i,
                    Box::new(move || {
                        let mut x = x.lock().expect("the socket's lock");
                        x.rebind()?;
                        Ok(x.socket_fd())
                    }),
                );
            }
        }
        let fabric = Arc::new(fabric);
        sup.start_all(&fabric, Duration::from_secs(10))?;
        let shared = Arc::new(Shared {
            fabric: fabric.clone(),
            sup: Mutex::new(sup),
            instance: inst.clone(),
            started: Instant::now(),
            stop: stop.clone(),
            filter: Mutex::new(filter),
            config: Mutex::new(cfg.clone()),
            devices: held.devices.iter().map(HeldDevice::describe).collect(),
        });
        if let Err(e) = control::serve(shared.clone(), &control_socket(&inst)) {
            shared.sup.lock().unwrap().stop_all(&fabric);
            return Err(format!("control socket: {e}"));
        }
        let ifs: Vec<String> = plan
            .stack
            .ifaces
            .iter()
            .map(|i| format!("{} {}", i.name, fmt_addrs(&i.addrs, &i.addrs6)))
            .collect();
        println!(
            "strata: ready: instance {inst}, {} layers, {}, pid {}",
            shared.sup.lock().unwrap().layers.len(),
            ifs.join("; "),
            std::process::id()
        );
        log(&format!("instance {inst} ready"));
        let mut next_tick = Instant::now();
        while !stop.load(SeqCst) {
            // Sleep until a layer dies (its pidfd turns readable), a
            // delayed restart is due or the tick for heartbeats comes;
            // without the lock, so the control socket is served meanwhile.
            // Only this thread closes pidfds, so the fds stay valid.
            let (fds, due) = {
                let sup = shared.sup.lock().unwrap();
                (sup.death_fds(), sup.next_restart())
            };
            let until = due.map_or(next_tick, |d| d.min(next_tick));
            wait_readable(&fds, until.saturating_duration_since(Instant::now()));
            // Every wake-up is a full tick: it is cheap, and the heartbeat
            // checks go by elapsed time, not by how often they run.
            shared.sup.lock().unwrap().tick(&fabric);
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + TICK;
            }
        }
        log("stopping");
        shared.sup.lock().unwrap().stop_all(&fabric);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    // The control thread keeps a mapping alive until the process exits,
    // so unlink the segment by name now rather than on drop.
    Fabric::remove_stale(&inst);
    // Devices close last, so the TAP interfaces vanish only after every
    // layer is gone.
    drop(held);
    if result.is_ok() {
        log("stopped; nothing left behind");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_message_lists_both_families() {
        let v4 = [(Ipv4Addr::new(10, 77, 0, 2), 24)];
        let v6 = [("fd00:77::2".parse().unwrap(), 64)];
        assert_eq!(fmt_addrs(&v4, &v6), "10.77.0.2/24,fd00:77::2/64");
        assert_eq!(fmt_addrs(&[], &v6), "fd00:77::2/64");
        assert_eq!(fmt_addrs(&v4, &[]), "10.77.0.2/24");
    }
}
