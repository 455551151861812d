//! A virtio-net PCI device driven from user space through VFIO.
//!
//! # Who holds what
//! The launcher ([`VfioAttach::open`], root) opens what must outlive a
//! driverd: the VFIO container with the device's IOMMU group in it, the
//! device, and the DMA area — a memfd of [`DMA_LEN`] bytes mapped into the
//! IOMMU at [`IOVA_BASE`]; once the fabric exists it maps the packet
//! pool's buffers too ([`VfioAttach::map_pool`], at [`POOL_IOVA`] plus
//! their offset in the region). The device reaches those and nothing
//! else. driverd ([`Vfio::from_fds`]) inherits copies of the device and
//! memfd fds, maps the device's registers and the area, and runs the
//! device: it resets it, negotiates features, lays out a receive and a
//! transmit queue in the area, wires MSI-X to an eventfd it sleeps on,
//! and starts it.
//!
//! # Frames by reference
//! The device receives into pool buffers driverd gives it, each described
//! from 12 bytes before the buffer's data start so that the virtio-net
//! header lands in the headroom and the frame where a frame's data
//! begins; and it sends from the stack's buffers, the header written in
//! front of the frame ([`PoolDevice`]). The device holds a reference on
//! every buffer it may touch, so a driverd that opens one must settle its
//! predecessor's references only after the reset in [`Vfio::from_fds`]
//! (driverd does, with `Fabric::reconcile`). A frame without 12 bytes of
//! headroom, or a segment software GSO cut, is copied into the copy
//! buffer of its transmit descriptor instead.
//!
//! # The DMA area
//! `[rx queue][tx queue]` (a [`virtq::AREA`] each) from its start, then
//! from [`BUFS_AT`] one copy buffer of [`BUF`] bytes per transmit
//! descriptor, room for the 12-byte header and a 64 KiB super-segment.
//!
//! # The device
//! Virtio 1.x over PCI (modern transport only: §4.1 of the virtio
//! specification), device type network (§5.1), with split queues. Its
//! registers are found by the capability walk of
//! [`strata_proto::virtio`] and reached through mappings of its BARs, so
//! serving the queues costs no system call but the eventfd read that
//! re-arms an interrupt and the doorbell writes the device asks for.
//!
//! Features taken when offered: `VERSION_1` (required),
//! `ACCESS_PLATFORM` (the device's DMA goes through the IOMMU; required by
//! a device that offers it), `MAC`, `MTU` and `STATUS` (read for `strata
//! stats` and to check the stack's MTU), and with offloads on, `CSUM`,
//! `GUEST_CSUM`, `HOST_TSO4` and `GUEST_TSO4` (partial checksums and TCP
//! super-segments both ways, as with a TAP). `MRG_RXBUF` is not taken:
//! receive buffers are large ones when super-segments may come.
//!
//! # Interrupts or polling
//! With MSI-X (the default), both queues signal vector 0, whose eventfd
//! driverd sleeps on; a queue in use is asked for no interrupts
//! (§2.7.7) until it runs dry. With `poll` (or a device without MSI-X)
//! the eventfd stays signalled and driverd never sleeps: the lowest
//! latency, a core's worth of CPU.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{fence, Ordering};

use strata_ipc::fabric::{BufferArea, Pool};
use strata_ipc::{Buffers, Handle};
use strata_proto::offload::{VnetHdr, VNET_HDR_LEN};
use strata_proto::virtio::{BarRange, VirtioCaps, CONFIG_LEN};

use crate::sys::{cvt, last, memfd, owned, Map};
use crate::virtq::{self, Queue, Used};
use crate::{
    bad_vnet, offload_of, truncated, vnet_of, DeviceStats, Driver, Offload, Offloads, PoolDevice,
    Rx,
};

/// Where the DMA area starts in the device's (IOMMU) address space: above
/// 4 GiB, clear of the interrupt window at 0xfee00000.
pub const IOVA_BASE: u64 = 1 << 32;
/// Where the packet pool's region starts in the device's address space:
/// a pool byte at offset `o` of the region is at `POOL_IOVA + o` (only
/// the buffers are mapped).
pub const POOL_IOVA: u64 = 1 << 36;
/// Descriptors per queue (fewer when the device offers fewer).
pub const QUEUE: u16 = virtq::MAX;
/// Bytes of each copy buffer: the virtio-net header and a 64 KiB frame,
/// page rounded.
pub const BUF: usize = 68 * 1024;
/// Where the copy buffers start in the DMA area.
pub const BUFS_AT: usize = 64 * 1024;
/// Bytes of the DMA area: the two queues and a copy buffer per transmit
/// descriptor.
pub const DMA_LEN: usize = BUFS_AT + QUEUE as usize * BUF;
/// Receive buffers kept with the device when they are large ones (a
/// super-segment each): a sixteenth of the pool's default large buffers.
const RX_LARGE: u16 = 64;

// The area holds both queues and every copy buffer; a whole
// super-segment fits a buffer, and buffers stay page-aligned.
const _: () = assert!(2 * virtq::AREA <= BUFS_AT);
const _: () = assert!(BUF >= HDR + 14 + 65535 && BUF.is_multiple_of(4096));

/// The virtio-net header with `VERSION_1` (§5.1.6): the TAP's 10 bytes
/// and `num_buffers`.
const HDR: usize = 12;

// linux/vfio.h: _IO(VFIO_TYPE, VFIO_BASE + n).
const fn vfio_io(n: u64) -> libc::c_ulong {
    ((b';' as u64) << 8 | (100 + n)) as libc::c_ulong
}
const GET_API_VERSION: libc::c_ulong = vfio_io(0);
const CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
const SET_IOMMU: libc::c_ulong = vfio_io(2);
const GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
const GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
const GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
const DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_io(8);
const DEVICE_GET_IRQ_INFO: libc::c_ulong = vfio_io(9);
const DEVICE_SET_IRQS: libc::c_ulong = vfio_io(10);
const IOMMU_MAP_DMA: libc::c_ulong = vfio_io(13);
const API_VERSION: i32 = 0;
const TYPE1_IOMMU: libc::c_ulong = 1;
const TYPE1V2_IOMMU: libc::c_ulong = 3;
const GROUP_FLAGS_VIABLE: u32 = 1;
const REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
const PCI_CONFIG_REGION_INDEX: u32 = 7;
const PCI_MSIX_IRQ_INDEX: u32 = 2;
const IRQ_SET_DATA_NONE: u32 = 1 << 0;
const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
const DMA_MAP_FLAG_READ: u32 = 1;
const DMA_MAP_FLAG_WRITE: u32 = 2;

/// PCI command register: memory space and bus master enable.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

// virtio §2.1 device status bits.
const STATUS_ACKNOWLEDGE: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_FAILED: u8 = 128;

// virtio §5.1.3 and §6 feature bits.
const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_MTU: u64 = 1 << 3;
const F_MAC: u64 = 1 << 5;
const F_GUEST_TSO4: u64 = 1 << 7;
const F_HOST_TSO4: u64 = 1 << 11;
const F_STATUS: u64 = 1 << 16;
const F_VERSION_1: u64 = 1 << 32;
const F_ACCESS_PLATFORM: u64 = 1 << 33;
const OFFLOAD_FEATURES: u64 = F_CSUM | F_GUEST_CSUM | F_HOST_TSO4 | F_GUEST_TSO4;

// virtio §4.1.4.3 common configuration, offsets.
const DEVICE_FEATURE_SELECT: usize = 0x00;
const DEVICE_FEATURE: usize = 0x04;
const DRIVER_FEATURE_SELECT: usize = 0x08;
const DRIVER_FEATURE: usize = 0x0c;
const CONFIG_MSIX_VECTOR: usize = 0x10;
const DEVICE_STATUS: usize = 0x14;
const QUEUE_SELECT: usize = 0x16;
const QUEUE_SIZE: usize = 0x18;
const QUEUE_MSIX_VECTOR: usize = 0x1a;
const QUEUE_ENABLE: usize = 0x1c;
const QUEUE_NOTIFY_OFF: usize = 0x1e;
const QUEUE_DESC: usize = 0x20;
const QUEUE_DRIVER: usize = 0x28;
const QUEUE_DEVICE: usize = 0x30;
const COMMON_LEN: u32 = 0x38;
/// No MSI-X vector (§4.1.5.1.2).
const NO_VECTOR: u16 = 0xffff;

// virtio §5.1.4 network device configuration, offsets.
const NET_MAC: usize = 0;
const NET_STATUS: usize = 6;
const NET_MTU: usize = 10;
const NET_S_LINK_UP: u16 = 1;

/// Queue indices of a network device's first pair (§5.1.2).
const RXQ: u16 = 0;
const TXQ: u16 = 1;

#[repr(C)]
#[derive(Default)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct RegionInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
}

#[repr(C)]
#[derive(Default)]
struct IrqInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    count: u32,
}

/// `struct vfio_irq_set` with room for one eventfd.
#[repr(C)]
struct IrqSet {
    argsz: u32,
    flags: u32,
    index: u32,
    start: u32,
    count: u32,
    fd: i32,
}

#[repr(C)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

/// `ioctl(fd, req, arg)` for the VFIO requests, whose argument is a
/// pointer or a plain number.
fn ioctl(fd: &OwnedFd, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: every request here takes either a number or a pointer to a
    // live structure of the kind the request names, whose `argsz` says
    // its size; the kernel writes no further.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) }.into())
}

fn ptr<T>(v: &mut T) -> libc::c_ulong {
    v as *mut T as libc::c_ulong
}

fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

fn err(kind: io::ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

/// Whether `s` is a PCI address as sysfs spells it, `DDDD:BB:DD.F` in
/// lower-case hex.
pub fn valid_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| {
        b[r].iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && hex(0..4)
        && hex(5..7)
        && hex(8..10)
        && (b'0'..=b'7').contains(&b[11])
}

/// What the launcher holds for a VFIO device: the container (with the
/// DMA area mapped into the IOMMU), the group, the device and the area.
pub struct VfioAttach {
    container: OwnedFd,
    _group: OwnedFd,
    device: OwnedFd,
    dma: OwnedFd,
    /// The launcher's own mapping of the area, the one given to the IOMMU.
    _map: Map,
    group_name: String,
    mac: Option<[u8; 6]>,
}

impl VfioAttach {
    /// Opens the PCI device at `pci` (bound to vfio-pci) through VFIO,
    /// with a new DMA area mapped for it. Root only.
    pub fn open(pci: &str) -> io::Result<VfioAttach> {
        if !valid_pci_address(pci) {
            return Err(err(
                io::ErrorKind::InvalidInput,
                format!("{pci:?} is not a PCI address (DDDD:BB:DD.F)"),
            ));
        }
        let sys = Path::new("/sys/bus/pci/devices").join(pci);
        if !sys.exists() {
            return Err(err(
                io::ErrorKind::NotFound,
                format!("no PCI device {pci} (see lspci or /sys/bus/pci/devices)"),
            ));
        }
        let driver = fs::read_link(sys.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        if driver.as_deref() != Some("vfio-pci") {
            return Err(err(
                io::ErrorKind::InvalidInput,
                format!(
                    "{pci} is bound to {}, not vfio-pci: modprobe vfio-pci; \
                     echo vfio-pci > {dir}/driver_override; \
                     echo {pci} > {dir}/driver/unbind (if bound); \
                     echo {pci} > /sys/bus/pci/drivers_probe",
                    driver.as_deref().unwrap_or("no driver"),
                    dir = sys.display()
                ),
            ));
        }
        let group = fs::read_link(sys.join("iommu_group"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| {
                err(
                    io::ErrorKind::NotFound,
                    format!("{pci} is in no IOMMU group: the machine has no IOMMU, or it is off (intel_iommu=on)"),
                )
            })?;
        let group_path = format!("/dev/vfio/{group}");
        if !Path::new(&group_path).exists() {
            let noiommu = Path::new("/dev/vfio").join(format!("noiommu-{group}"));
            return Err(err(
                io::ErrorKind::Unsupported,
                if noiommu.exists() {
                    format!("{pci} is in no-IOMMU mode ({}): strata needs an IOMMU to confine the device's DMA", noiommu.display())
                } else {
                    format!("{group_path} does not exist")
                },
            ));
        }
        let open = |path: &str| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map(OwnedFd::from)
                .map_err(|e| err(e.kind(), format!("{path}: {e}")))
        };
        let container = open("/dev/vfio/vfio")?;
        if ioctl(&container, GET_API_VERSION, 0)? != API_VERSION {
            return Err(err(io::ErrorKind::Unsupported, "unknown VFIO API version"));
        }
        let iommu = if ioctl(&container, CHECK_EXTENSION, TYPE1V2_IOMMU)? > 0 {
            TYPE1V2_IOMMU
        } else if ioctl(&container, CHECK_EXTENSION, TYPE1_IOMMU)? > 0 {
            TYPE1_IOMMU
        } else {
            return Err(err(
                io::ErrorKind::Unsupported,
                "VFIO offers no type 1 IOMMU (modprobe vfio_iommu_type1)",
            ));
        };
        let group_fd = open(&group_path)?;
        let mut st = GroupStatus {
            argsz: argsz::<GroupStatus>(),
            flags: 0,
        };
        ioctl(&group_fd, GROUP_GET_STATUS, ptr(&mut st))?;
        if st.flags & GROUP_FLAGS_VIABLE == 0 {
            return Err(err(
                io::ErrorKind::InvalidInput,
                format!("IOMMU group {group} is not viable: bind every device in it to vfio-pci"),
            ));
        }
        let mut cfd = container.as_raw_fd();
        ioctl(&group_fd, GROUP_SET_CONTAINER, ptr(&mut cfd))
            .map_err(|e| err(e.kind(), format!("IOMMU group {group}: {e} (in use?)")))?;
        ioctl(&container, SET_IOMMU, iommu)?;
        let dma = memfd(c"strata-vfio-dma", DMA_LEN as u64)?;
        let map = Map::new(dma.as_raw_fd(), DMA_LEN, 0)?;
        let mut m = DmaMap {
            argsz: argsz::<DmaMap>(),
            flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
            vaddr: map.ptr as u64,
            iova: IOVA_BASE,
            size: DMA_LEN as u64,
        };
        ioctl(&container, IOMMU_MAP_DMA, ptr(&mut m))
            .map_err(|e| err(e.kind(), format!("mapping the DMA area: {e}")))?;
        let name = CString::new(pci).expect("a checked address");
        let device = owned(ioctl(
            &group_fd,
            GROUP_GET_DEVICE_FD,
            name.as_ptr() as libc::c_ulong,
        )?);
        // Its own address, when it has one, for a stack told none.
        let mac = device_mac(&device).ok().flatten();
        Ok(VfioAttach {
            mac,
            container,
            _group: group_fd,
            device,
            dma,
            _map: map,
            group_name: group,
        })
    }

    /// Lets the device reach the packet pool's buffers (`area`, from
    /// `Fabric::buffer_area`) at [`POOL_IOVA`] plus their offset in the
    /// region, so frames move between the device and the pool uncopied.
    /// The mapping pins those pages for the life of the container.
    pub fn map_pool(&self, area: BufferArea) -> io::Result<()> {
        let mut m = DmaMap {
            argsz: argsz::<DmaMap>(),
            flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
            vaddr: area.addr as u64,
            iova: POOL_IOVA + area.offset as u64,
            size: area.len as u64,
        };
        ioctl(&self.container, IOMMU_MAP_DMA, ptr(&mut m))
            .map(|_| ())
            .map_err(|e| {
                err(
                    e.kind(),
                    format!("mapping the packet pool for the device: {e}"),
                )
            })
    }

    /// The device's fd, for driverd.
    pub fn device_fd(&self) -> RawFd {
        self.device.as_raw_fd()
    }

    /// The DMA area's memfd, for driverd.
    pub fn dma_fd(&self) -> RawFd {
        self.dma.as_raw_fd()
    }

    /// The IOMMU group, for `strata status`.
    pub fn group(&self) -> &str {
        &self.group_name
    }

    /// The device's MAC address, when it offers one (`MAC`): the stack's
    /// on this interface unless the configuration names another.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac
    }
}

/// Reads a device's MAC address through the device fd (no mapping: the
/// launcher reads it once, before any driverd runs): None when the
/// device does not offer `MAC`.
fn device_mac(dev: &OwnedFd) -> io::Result<Option<[u8; 6]>> {
    // Its registers answer only with memory space on.
    let caps = virtio_caps(dev, PCI_COMMAND_MEMORY)?;
    let Some(net) = caps.device else {
        return Ok(None);
    };
    let common = region(dev, u32::from(caps.common.bar))?;
    let at = u64::from(caps.common.offset);
    region_write(
        dev,
        &common,
        at + DEVICE_FEATURE_SELECT as u64,
        &0u32.to_le_bytes(),
    )?;
    let mut low = [0u8; 4];
    region_read(dev, &common, at + DEVICE_FEATURE as u64, &mut low)?;
    if u64::from(u32::from_le_bytes(low)) & F_MAC == 0 {
        return Ok(None);
    }
    let bar = region(dev, u32::from(net.bar))?;
    let mut mac = [0u8; 6];
    region_read(dev, &bar, u64::from(net.offset) + NET_MAC as u64, &mut mac)?;
    Ok(Some(mac))
}

/// How driverd runs a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Negotiate checksum offload and TSO.
    pub offloads: bool,
    /// Never sleep: poll the queues rather than take interrupts.
    pub poll: bool,
    /// The stack's MTU on this interface, checked against the device's.
    pub mtu: u16,
}

/// A region of the device's fd: where it is and how long.
fn region(dev: &OwnedFd, index: u32) -> io::Result<RegionInfo> {
    let mut r = RegionInfo {
        argsz: argsz::<RegionInfo>(),
        index,
        ..RegionInfo::default()
    };
    ioctl(dev, DEVICE_GET_REGION_INFO, ptr(&mut r))?;
    Ok(r)
}

/// The device's virtio structures, found in its PCI configuration space,
/// after turning on `command` bits of its PCI command register (memory
/// space, bus mastering).
fn virtio_caps(dev: &OwnedFd, command: u16) -> io::Result<VirtioCaps> {
    let cfg = region(dev, PCI_CONFIG_REGION_INDEX)?;
    let mut space = [0u8; CONFIG_LEN];
    region_read(dev, &cfg, 0, &mut space)?;
    let caps =
        VirtioCaps::parse(&space).map_err(|e| err(io::ErrorKind::InvalidData, e.to_string()))?;
    let cmd = u16::from_le_bytes([space[4], space[5]]) | command;
    region_write(dev, &cfg, PCI_COMMAND, &cmd.to_le_bytes())?;
    Ok(caps)
}

/// Reads `buf.len()` bytes of a region of the device (its PCI
/// configuration space, or a BAR) from `at`.
fn region_read(dev: &OwnedFd, cfg: &RegionInfo, at: u64, buf: &mut [u8]) -> io::Result<()> {
    // SAFETY: reads into our own buffer of the length given.
    let n = unsafe {
        libc::pread(
            dev.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            (cfg.offset + at) as libc::off_t,
        )
    };
    if n != buf.len() as isize {
        return Err(if n < 0 { last() } else { truncated(buf.len()) });
    }
    Ok(())
}

/// Writes `buf` into a region of the device from `at`.
fn region_write(dev: &OwnedFd, cfg: &RegionInfo, at: u64, buf: &[u8]) -> io::Result<()> {
    // SAFETY: writes from our own buffer of the length given.
    let n = unsafe {
        libc::pwrite(
            dev.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            (cfg.offset + at) as libc::off_t,
        )
    };
    if n != buf.len() as isize {
        return Err(if n < 0 {
            last()
        } else {
            err(io::ErrorKind::WriteZero, "short configuration write")
        });
    }
    Ok(())
}

/// A range of a mapped BAR: device registers, read and written with
/// volatile operations of the width the specification gives each.
struct Regs {
    /// Index into [`Vfio::bars`].
    bar: usize,
    offset: usize,
    len: usize,
}

/// A virtio-net device run by driverd.
pub struct Vfio {
    dev: OwnedFd,
    dma: Map,
    /// The BARs mapped, by index (0 to 5).
    bars: Vec<(u8, Map)>,
    common: Regs,
    device_cfg: Option<Regs>,
    rx: Queue,
    tx: Queue,
    /// Each queue's doorbell: offset in the notify BAR.
    rx_bell: Regs,
    tx_bell: Regs,
    features: u64,
    irq: OwnedFd,
    poll: bool,
    /// Receive descriptors: the pool buffer each holds for the device.
    rx_slots: Vec<Option<Handle>>,
    /// Receive descriptors without a buffer.
    rx_free: Vec<u16>,
    /// Buffers kept with the device.
    rx_target: u16,
    /// Bytes a receive buffer needs after its headroom: the longest frame.
    rx_need: usize,
    /// Transmit descriptors free, and which are with the device: `Some`
    /// with the pool buffer sent by reference, `None` with a copy buffer.
    tx_free: Vec<u16>,
    tx_busy: Vec<bool>,
    tx_slots: Vec<Option<Handle>>,
    /// Pool buffers the device is done sending, to free when the pool is
    /// at hand.
    tx_done: Vec<Handle>,
    /// Transmit interrupts are on because the queue ran full, or because
    /// driverd found nothing to receive with frames still with the
    /// device (so that their buffers come back on an idle link).
    tx_full: bool,
    tx_idle: bool,
    /// Polls that found the receive queue empty (polling only).
    dry_polls: u32,
    stats: DeviceStats,
}

impl Vfio {
    /// Takes over the device (fd from [`VfioAttach::device_fd`]) with the
    /// DMA area (from [`VfioAttach::dma_fd`]): resets it and brings it up
    /// with both queues ready.
    pub fn from_fds(dev: OwnedFd, dma: OwnedFd, opts: Options) -> io::Result<Vfio> {
        let dma = Map::new(dma.as_raw_fd(), DMA_LEN, 0)?;
        // Memory space on, and bus mastering: the device may DMA.
        let caps = virtio_caps(&dev, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)?;
        let mut bars: Vec<(u8, Map)> = Vec::new();
        let mut regs = |r: BarRange, min: u32| -> io::Result<Regs> {
            if r.length < min {
                return Err(err(
                    io::ErrorKind::InvalidData,
                    format!("a virtio structure of {} bytes, {min} needed", r.length),
                ));
            }
            let at = match bars.iter().position(|(b, _)| *b == r.bar) {
                Some(i) => i,
                None => {
                    let info = region(&dev, u32::from(r.bar))?;
                    if info.flags & REGION_INFO_FLAG_MMAP == 0 {
                        return Err(err(
                            io::ErrorKind::Unsupported,
                            format!("BAR {} cannot be mapped", r.bar),
                        ));
                    }
                    let len = usize::try_from(info.size)
                        .map_err(|_| err(io::ErrorKind::InvalidData, "a BAR too large"))?;
                    bars.push((r.bar, Map::new(dev.as_raw_fd(), len, info.offset as i64)?));
                    bars.len() - 1
                }
            };
            if r.end() > bars[at].1.len as u64 {
                return Err(err(
                    io::ErrorKind::InvalidData,
                    format!("a virtio structure beyond BAR {}", r.bar),
                ));
            }
            Ok(Regs {
                bar: at,
                offset: r.offset as usize,
                len: r.length as usize,
            })
        };
        let common = regs(caps.common, COMMON_LEN)?;
        let notify = regs(caps.notify, 2)?;
        let device_cfg = caps.device.map(|d| regs(d, 12)).transpose()?;
        let irq = owned(cvt(
            // SAFETY: makes a new fd.
            unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }.into(),
        )?);
        let base = dma.ptr;
        // SAFETY: each queue's area is AREA bytes at the start of the DMA
        // mapping, page aligned, kept alive in `Vfio` with the queues and
        // used by nothing else in this process.
        let (rx, tx) = unsafe {
            (
                Queue::new(base, QUEUE),
                Queue::new(base.add(virtq::AREA), QUEUE),
            )
        };
        let mut v = Vfio {
            dev,
            dma,
            bars,
            common,
            device_cfg,
            rx,
            tx,
            rx_bell: Regs {
                bar: notify.bar,
                offset: notify.offset,
                len: 2,
            },
            tx_bell: Regs {
                bar: notify.bar,
                offset: notify.offset,
                len: 2,
            },
            features: 0,
            irq,
            poll: opts.poll,
            rx_slots: Vec::new(),
            rx_free: Vec::new(),
            rx_target: 0,
            rx_need: 0,
            tx_free: Vec::new(),
            tx_busy: Vec::new(),
            tx_slots: Vec::new(),
            tx_done: Vec::new(),
            tx_full: false,
            tx_idle: false,
            dry_polls: 0,
            stats: DeviceStats::default(),
        };
        v.start(&caps, &notify, opts)?;
        Ok(v)
    }

    fn reg_ptr<T>(&self, r: &Regs, at: usize) -> *mut T {
        assert!(
            at + std::mem::size_of::<T>() <= r.len,
            "register {at} of {}",
            r.len
        );
        let map = &self.bars[r.bar].1;
        // SAFETY: `r` was checked to lie inside the BAR's mapping when it
        // was made, and `at` inside `r` just above.
        unsafe { map.ptr.add(r.offset + at).cast() }
    }

    fn read8(&self, r: &Regs, at: usize) -> u8 {
        // SAFETY: a device register inside the mapping (see reg_ptr).
        unsafe { self.reg_ptr::<u8>(r, at).read_volatile() }
    }
    fn read16(&self, r: &Regs, at: usize) -> u16 {
        // SAFETY: as above; the register is 2 bytes and aligned.
        u16::from_le(unsafe { self.reg_ptr::<u16>(r, at).read_volatile() })
    }
    fn read32(&self, r: &Regs, at: usize) -> u32 {
        // SAFETY: as above; 4 bytes, aligned.
        u32::from_le(unsafe { self.reg_ptr::<u32>(r, at).read_volatile() })
    }
    fn write8(&self, r: &Regs, at: usize, v: u8) {
        // SAFETY: as above.
        unsafe { self.reg_ptr::<u8>(r, at).write_volatile(v) }
    }
    fn write16(&self, r: &Regs, at: usize, v: u16) {
        // SAFETY: as above.
        unsafe { self.reg_ptr::<u16>(r, at).write_volatile(v.to_le()) }
    }
    fn write32(&self, r: &Regs, at: usize, v: u32) {
        // SAFETY: as above.
        unsafe { self.reg_ptr::<u32>(r, at).write_volatile(v.to_le()) }
    }
    /// A 64-bit register as two 32-bit writes, low half first.
    fn write64(&self, r: &Regs, at: usize, v: u64) {
        self.write32(r, at, v as u32);
        self.write32(r, at + 4, (v >> 32) as u32);
    }

    fn status(&self) -> u8 {
        self.read8(&self.common, DEVICE_STATUS)
    }

    fn set_status(&self, bits: u8) {
        self.write8(&self.common, DEVICE_STATUS, self.status() | bits);
    }

    /// §4.1.4.3.1: writing 0 resets; the device says it is done by
    /// reading back 0.
    fn reset(&self) -> io::Result<()> {
        self.write8(&self.common, DEVICE_STATUS, 0);
        let t0 = std::time::Instant::now();
        while self.status() != 0 {
            if t0.elapsed() > std::time::Duration::from_secs(5) {
                return Err(err(io::ErrorKind::TimedOut, "the device did not reset"));
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    /// §3.1.1, the driver's initialization sequence, with the queues and
    /// interrupts of §4.1.5.
    fn start(&mut self, caps: &VirtioCaps, notify: &Regs, opts: Options) -> io::Result<()> {
        self.reset()?;
        self.set_status(STATUS_ACKNOWLEDGE);
        self.set_status(STATUS_DRIVER);
        let offered = self.device_features();
        if offered & F_VERSION_1 == 0 {
            return self.fail("the device offers no virtio 1.x (VERSION_1): a legacy device");
        }
        let mut want = F_VERSION_1 | F_ACCESS_PLATFORM | F_MAC | F_MTU | F_STATUS;
        if opts.offloads {
            want |= OFFLOAD_FEATURES;
        }
        let mut features = offered & want;
        // Offloads both ways or not at all: the stack's offload switch is
        // one, as a TAP's is.
        if features & OFFLOAD_FEATURES != OFFLOAD_FEATURES {
            features &= !OFFLOAD_FEATURES;
        }
        self.features = features;
        for (half, bits) in [(0u32, features as u32), (1, (features >> 32) as u32)] {
            self.write32(&self.common, DRIVER_FEATURE_SELECT, half);
            self.write32(&self.common, DRIVER_FEATURE, bits);
        }
        self.set_status(STATUS_FEATURES_OK);
        if self.status() & STATUS_FEATURES_OK == 0 {
            return self.fail("the device refused the features chosen");
        }
        if features & F_MTU != 0 {
            if let Some(d) = &self.device_cfg {
                let max = self.read16(d, NET_MTU);
                if opts.mtu > max {
                    return self.fail(&format!(
                        "the stack's MTU {} is above the device's {max}",
                        opts.mtu
                    ));
                }
            }
        }
        let vector = if opts.poll {
            NO_VECTOR
        } else {
            self.wire_msix()
        };
        self.write16(&self.common, CONFIG_MSIX_VECTOR, vector);
        let mut vector_ok =
            vector != NO_VECTOR && self.read16(&self.common, CONFIG_MSIX_VECTOR) == vector;
        for q in [RXQ, TXQ] {
            self.write16(&self.common, QUEUE_SELECT, q);
            let max = self.read16(&self.common, QUEUE_SIZE);
            if max == 0 {
                return self.fail(&format!("the device has no queue {q}"));
            }
            // A power of two no larger than the device's nor ours.
            let size = 1u16 << (15 - max.min(QUEUE).leading_zeros().min(15));
            self.write16(&self.common, QUEUE_SIZE, size);
            self.write16(&self.common, QUEUE_MSIX_VECTOR, vector);
            vector_ok &=
                vector == NO_VECTOR || self.read16(&self.common, QUEUE_MSIX_VECTOR) == vector;
            let area = IOVA_BASE + (usize::from(q) * virtq::AREA) as u64;
            self.write64(&self.common, QUEUE_DESC, area);
            self.write64(&self.common, QUEUE_DRIVER, area + virtq::AVAIL_AT as u64);
            self.write64(&self.common, QUEUE_DEVICE, area + virtq::USED_AT as u64);
            let bell = usize::from(self.read16(&self.common, QUEUE_NOTIFY_OFF))
                * caps.notify_multiplier as usize;
            if bell + 2 > notify.len {
                return self.fail("a queue's doorbell lies beyond the notification area");
            }
            let regs = Regs {
                bar: notify.bar,
                offset: notify.offset + bell,
                len: 2,
            };
            // SAFETY: the queue's area at its offset in the DMA mapping,
            // as in `from_fds`, now sized as the device has it.
            let queue = unsafe { Queue::new(self.dma.ptr.add(usize::from(q) * virtq::AREA), size) };
            if q == RXQ {
                self.rx = queue;
                self.rx_bell = regs;
            } else {
                self.tx = queue;
                self.tx_bell = regs;
            }
            self.write16(&self.common, QUEUE_ENABLE, 1);
        }
        // Without a working vector, poll: the eventfd stays signalled.
        self.poll = !vector_ok;
        if self.poll {
            self.signal_self();
        }
        // Receive buffers come from the pool at the first receive (after
        // driverd has settled its predecessor's references); every
        // transmit descriptor is free.
        let large = features & F_GUEST_TSO4 != 0;
        self.rx_need = if large {
            14 + 65535
        } else {
            usize::from(opts.mtu) + 14 + 4
        };
        self.rx_target = if large {
            self.rx.size().min(RX_LARGE)
        } else {
            self.rx.size()
        };
        self.rx_slots = vec![None; usize::from(self.rx.size())];
        self.rx_free = (0..self.rx.size()).rev().collect();
        self.tx_free = (0..self.tx.size()).rev().collect();
        self.tx_busy = vec![false; usize::from(self.tx.size())];
        self.tx_slots = vec![None; usize::from(self.tx.size())];
        self.tx.set_interrupts(false);
        self.set_status(STATUS_DRIVER_OK);
        self.note_link();
        Ok(())
    }

    /// Marks the device failed (§3.1.1 step 8) and says why.
    fn fail(&self, why: &str) -> io::Result<()> {
        self.set_status(STATUS_FAILED);
        Err(err(io::ErrorKind::Unsupported, why))
    }

    fn device_features(&self) -> u64 {
        let mut f = 0u64;
        for half in 0..2u32 {
            self.write32(&self.common, DEVICE_FEATURE_SELECT, half);
            f |= u64::from(self.read32(&self.common, DEVICE_FEATURE)) << (32 * half);
        }
        f
    }

    /// MSI-X vector 0 to our eventfd; the vector, or [`NO_VECTOR`] when
    /// the device has no MSI-X.
    fn wire_msix(&self) -> u16 {
        let mut info = IrqInfo {
            argsz: argsz::<IrqInfo>(),
            index: PCI_MSIX_IRQ_INDEX,
            ..IrqInfo::default()
        };
        if ioctl(&self.dev, DEVICE_GET_IRQ_INFO, ptr(&mut info)).is_err() || info.count == 0 {
            return NO_VECTOR;
        }
        // A predecessor's vectors first off (its eventfd died with it).
        let mut off = IrqSet {
            argsz: argsz::<IrqSet>() - 4,
            flags: IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER,
            index: PCI_MSIX_IRQ_INDEX,
            start: 0,
            count: 0,
            fd: -1,
        };
        let _ = ioctl(&self.dev, DEVICE_SET_IRQS, ptr(&mut off));
        let mut on = IrqSet {
            argsz: argsz::<IrqSet>(),
            flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            index: PCI_MSIX_IRQ_INDEX,
            start: 0,
            count: 1,
            fd: self.irq.as_raw_fd(),
        };
        match ioctl(&self.dev, DEVICE_SET_IRQS, ptr(&mut on)) {
            Ok(_) => 0,
            Err(_) => NO_VECTOR,
        }
    }

    /// Where transmit descriptor `id`'s copy buffer is in the DMA area.
    fn copy_at(id: u16) -> usize {
        BUFS_AT + usize::from(id) * BUF
    }

    fn copy_buf(&mut self, id: u16) -> &mut [u8] {
        let at = Self::copy_at(id);
        assert!(at + BUF <= self.dma.len);
        // SAFETY: inside the DMA mapping (checked); the device is not
        // using this buffer: its descriptor is free.
        unsafe { std::slice::from_raw_parts_mut(self.dma.ptr.add(at), BUF) }
    }

    /// The bus address of byte `at` of `h`'s buffer.
    fn pool_iova(pool: &Pool, h: &Handle, at: u32) -> Option<u64> {
        let off = pool.fabric().buf_region_offset(h).ok()?;
        Some(POOL_IOVA + off as u64 + u64::from(at))
    }

    /// Writes queue `q`'s doorbell (§4.1.5.2).
    fn ring(&mut self, q: u16) {
        let bell = if q == RXQ {
            &self.rx_bell
        } else {
            &self.tx_bell
        };
        self.write16(bell, 0, q);
        self.stats.notifies += 1;
    }

    /// Keeps the eventfd readable: a polling driverd never sleeps.
    fn signal_self(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.irq.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Takes the pending interrupts off the eventfd, counting them.
    fn drain_irq(&mut self) {
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our eventfd.
        let r = unsafe { libc::read(self.irq.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
        if r == 8 {
            self.stats.interrupts += n;
            self.note_link();
        }
    }

    /// Gives the device pool buffers for the receive descriptors that
    /// have none, up to its target; false when the pool had none left.
    fn refill(&mut self, pool: &mut Pool) -> bool {
        let mut ok = true;
        while self.rx.outstanding() < self.rx_target {
            let Some(id) = self.rx_free.pop() else { break };
            let Some(h) = pool.alloc(self.rx_need) else {
                self.rx_free.push(id);
                ok = false;
                break;
            };
            // The header goes just before the headroom's end, the frame
            // at it: a received frame is where any frame's data starts.
            let cap = pool
                .raw(&h)
                .map_or(0, |r| r.len())
                .saturating_sub(h.data_off as usize);
            match Self::pool_iova(pool, &h, h.data_off - HDR as u32) {
                Some(bus) if cap >= self.rx_need => {
                    self.rx.push(id, bus, (HDR + cap) as u32, true);
                    self.rx_slots[usize::from(id)] = Some(h);
                }
                _ => {
                    pool.free(&h);
                    self.rx_free.push(id);
                    ok = false;
                    break;
                }
            }
        }
        if self.rx.publish() {
            self.ring(RXQ);
        }
        ok
    }

    /// The frame the device wrote into the buffer of used entry `u`: its
    /// handle with the data window set, and its offload state; None (the
    /// buffer freed, the fault counted) when the device got it wrong.
    fn take(&mut self, pool: &mut Pool, u: Used) -> Option<(Handle, Offload)> {
        self.rx_free.push(u.id);
        let Some(mut h) = self.rx_slots[usize::from(u.id)].take() else {
            self.stats.bad_completions += 1;
            return None;
        };
        let len = u.len as usize;
        // The header sits just before the data start (see `refill`).
        let start = h.data_off as usize - HDR;
        let off = match pool.raw(&h) {
            Ok(raw) if (HDR..=raw.len() - start).contains(&len) => {
                VnetHdr::parse(&raw[start..start + VNET_HDR_LEN])
                    .map_err(bad_vnet)
                    .and_then(|v| offload_of(&v))
                    .ok()
            }
            _ => None,
        };
        let Some(off) = off else {
            self.stats.bad_completions += 1;
            pool.free(&h);
            return None;
        };
        h.data_len = (len - HDR) as u32;
        Some((h, off))
    }

    /// Takes back the transmit buffers the device is done with.
    fn reap(&mut self) {
        while let Some(u) = self.tx.pop_used() {
            match u {
                Ok(u) if self.tx_busy[usize::from(u.id)] => {
                    self.tx_busy[usize::from(u.id)] = false;
                    self.tx_free.push(u.id);
                    if let Some(h) = self.tx_slots[usize::from(u.id)].take() {
                        self.tx_done.push(h);
                    }
                }
                _ => self.stats.bad_completions += 1,
            }
        }
        let was = self.tx_full || self.tx_idle;
        self.tx_full &= self.tx_free.is_empty();
        self.tx_idle &= self.tx.outstanding() > 0;
        if was && !(self.tx_full || self.tx_idle) {
            self.tx.set_interrupts(false);
        }
    }

    /// Turns transmit interrupts on because the queue is `full` (else
    /// because driverd is idle), then takes back what the device finished
    /// meanwhile.
    fn want_tx_interrupts(&mut self, full: bool) {
        if self.poll {
            return self.reap();
        }
        if !(self.tx_full || self.tx_idle) {
            self.tx.set_interrupts(true);
        }
        if full {
            self.tx_full = true;
        } else {
            self.tx_idle = true;
        }
        self.reap();
    }

    /// Reads whether the link is up into the counters: 1 when the device
    /// cannot say (no `STATUS`). Called at start, after an interrupt (a
    /// link change raises one) and now and then when polling.
    fn note_link(&mut self) {
        self.stats.link_up = match (&self.device_cfg, self.features & F_STATUS != 0) {
            (Some(d), true) => u64::from(self.read16(d, NET_STATUS) & NET_S_LINK_UP != 0),
            _ => 1,
        };
    }
}

impl Driver for Vfio {
    /// Frames come by reference ([`PoolDevice::receive`]), never by
    /// copy: nothing here.
    fn recv_split(
        &mut self,
        _head: &mut [u8],
        _tail: &mut [u8],
    ) -> io::Result<Option<(usize, Offload)>> {
        Ok(None)
    }

    fn send_parts(&mut self, parts: &[&[u8]], off: &Offload) -> io::Result<bool> {
        self.reap();
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if HDR + len > BUF {
            return Err(err(
                io::ErrorKind::InvalidInput,
                format!("a {len}-byte frame, longer than a transmit buffer"),
            ));
        }
        let Some(id) = self.tx_free.pop() else {
            // Full: an interrupt when the device gives buffers back.
            self.want_tx_interrupts(true);
            return Ok(false);
        };
        let vh = vnet_of(off).to_bytes();
        let buf = self.copy_buf(id);
        buf[..VNET_HDR_LEN].copy_from_slice(&vh);
        buf[VNET_HDR_LEN..HDR].fill(0);
        let mut at = HDR;
        for p in parts {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        self.tx_busy[usize::from(id)] = true;
        self.stats.tx_copied += 1;
        self.tx
            .push(id, IOVA_BASE + Self::copy_at(id) as u64, at as u32, false);
        // A long batch starts moving before its end.
        if self.tx.unpublished() >= 64 {
            self.flush()?;
        }
        Ok(true)
    }

    fn flush(&mut self) -> io::Result<()> {
        fence(Ordering::Release);
        if self.tx.publish() {
            self.ring(TXQ);
        }
        Ok(())
    }

    fn offloads(&self) -> Offloads {
        let on = self.features & OFFLOAD_FEATURES == OFFLOAD_FEATURES;
        Offloads { csum: on, tso4: on }
    }

    fn wait_for_room(&self) -> i16 {
        // Transmit room comes with an interrupt, on the same eventfd.
        libc::POLLIN
    }

    fn device_stats(&self) -> Option<DeviceStats> {
        Some(DeviceStats {
            rx_buffers: u64::from(self.rx.outstanding()),
            ..self.stats
        })
    }

    fn pool_device(&mut self) -> Option<&mut dyn PoolDevice> {
        Some(self)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.irq.as_raw_fd()
    }
}

impl PoolDevice for Vfio {
    fn receive(&mut self, pool: &mut Pool, max: usize, out: &mut Vec<(Handle, Offload)>) -> Rx {
        // Sent buffers go back whenever driverd looks at the device, so an
        // idle link holds none for long.
        self.reap();
        for h in self.tx_done.drain(..) {
            pool.free(&h);
        }
        let mut rx = Rx::default();
        let mut got = 0;
        while got < max {
            match self.rx.pop_used() {
                Some(Ok(u)) => {
                    // Busy: no interrupts until the queue runs dry.
                    self.rx.set_interrupts(false);
                    if let Some(f) = self.take(pool, u) {
                        out.push(f);
                        got += 1;
                    }
                }
                Some(Err(_)) => self.stats.bad_completions += 1,
                None if self.poll => {
                    self.dry_polls = self.dry_polls.wrapping_add(1);
                    if self.dry_polls.is_multiple_of(4096) {
                        self.note_link();
                    }
                    rx.dry = true;
                    break;
                }
                None => {
                    // Dry: interrupts back on, then one more look, for a
                    // frame used before the device saw the flag.
                    self.drain_irq();
                    self.rx.set_interrupts(true);
                    if !self.rx.has_used() {
                        rx.dry = true;
                        break;
                    }
                }
            }
        }
        if rx.dry && self.tx.outstanding() > 0 {
            // driverd may sleep next: the device's word on what it sent
            // wakes it to free those buffers.
            self.want_tx_interrupts(false);
            for h in self.tx_done.drain(..) {
                pool.free(&h);
            }
        }
        rx.no_buffer = !self.refill(pool);
        rx
    }

    fn transmit(&mut self, pool: &mut Pool, h: &Handle, off: &Offload) -> io::Result<bool> {
        // The header goes in the headroom, just before the frame.
        let at = h.data_off.checked_sub(HDR as u32);
        let bus = at.and_then(|at| Self::pool_iova(pool, h, at));
        let (Some(at), Some(bus)) = (at, bus) else {
            // Copied into a buffer of the area; nothing of the pool kept.
            let frame = pool.data(h).map_err(|_| io::ErrorKind::InvalidInput)?;
            return self.send_parts(&[frame], off);
        };
        self.reap();
        let Some(id) = self.tx_free.pop() else {
            // Full: an interrupt when the device gives buffers back.
            self.want_tx_interrupts(true);
            return Ok(false);
        };
        if pool.add_ref(h).is_err() {
            self.tx_free.push(id);
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let Ok(raw) = pool.raw_mut(h) else {
            pool.free(h);
            self.tx_free.push(id);
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let at = at as usize;
        raw[at..at + VNET_HDR_LEN].copy_from_slice(&vnet_of(off).to_bytes());
        raw[at + VNET_HDR_LEN..at + HDR].fill(0);
        self.tx_busy[usize::from(id)] = true;
        self.tx_slots[usize::from(id)] = Some(*h);
        self.tx.push(id, bus, HDR as u32 + h.data_len, false);
        if self.tx.unpublished() >= 64 {
            self.flush()?;
        }
        Ok(true)
    }

    fn transmit_copy(
        &mut self,
        _pool: &mut Pool,
        parts: &[&[u8]],
        off: &Offload,
    ) -> io::Result<bool> {
        self.send_parts(parts, off)
    }

    fn settles_references(&self) -> bool {
        true
    }
}

impl Drop for Vfio {
    fn drop(&mut self) {
        // The device stops using the area (a successor resets it anyway).
        self.write8(&self.common, DEVICE_STATUS, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_are_checked() {
        assert!(valid_pci_address("0000:00:03.0"));
        assert!(valid_pci_address("0000:af:1f.7"));
        for bad in [
            "0000:00:03",
            "0000:00:03.8",
            "00:03.0",
            "0000:00:0G.0",
            "0000:AF:00.0",
            "../../../x.0",
        ] {
            assert!(!valid_pci_address(bad), "{bad}");
        }
    }
}
