//! `vfio-probe ADDR GROUP`: checks, inside the test VM (see the tests
//! crate's `vm` module), that a PCI device bound to vfio-pci can be used
//! from user space the way a VFIO driver uses it: the container takes
//! the group and the type1 IOMMU (which refuses unless MSIs are isolated
//! by interrupt remapping, or `allow_unsafe_interrupts` is set), the
//! device's fd comes, its configuration space reads, and a page maps for
//! DMA and unmaps. Prints `vfio-probe: ok ...` and exits 0, or says
//! which step failed and exits 1.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`: every VFIO ioctl is numbered so.
const fn vfio_io(n: u64) -> u64 {
    ((b';' as u64) << 8) | (100 + n)
}
const VFIO_GET_API_VERSION: u64 = vfio_io(0);
const VFIO_CHECK_EXTENSION: u64 = vfio_io(1);
const VFIO_SET_IOMMU: u64 = vfio_io(2);
const VFIO_GROUP_GET_STATUS: u64 = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: u64 = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
const VFIO_DEVICE_GET_INFO: u64 = vfio_io(7);
const VFIO_DEVICE_GET_REGION_INFO: u64 = vfio_io(8);
const VFIO_DEVICE_GET_IRQ_INFO: u64 = vfio_io(9);
const VFIO_IOMMU_MAP_DMA: u64 = vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: u64 = vfio_io(14);

const VFIO_API_VERSION: libc::c_int = 0;
const VFIO_TYPE1V2_IOMMU: libc::c_ulong = 3;
const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;
const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;
const VFIO_DMA_MAP_FLAG_READ: u32 = 1;
const VFIO_DMA_MAP_FLAG_WRITE: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct DeviceInfo {
    argsz: u32,
    flags: u32,
    num_regions: u32,
    num_irqs: u32,
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

#[repr(C)]
#[derive(Default)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

#[repr(C)]
#[derive(Default)]
struct DmaUnmap {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
}

/// The `argsz` of a VFIO structure: its own size.
fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// An ioctl whose argument is a plain value; its result, or `what` and
/// the error.
fn ioctl_val(fd: RawFd, req: u64, arg: libc::c_ulong, what: &str) -> Result<i32, String> {
    // SAFETY: the request takes its argument by value (no memory is
    // passed); a wrong fd or request only fails.
    let rc = unsafe { libc::ioctl(fd, req as _, arg) };
    if rc < 0 {
        return Err(format!("{what}: {}", io::Error::last_os_error()));
    }
    Ok(rc)
}

/// An ioctl that reads and writes `*arg`; its result, or `what` and the
/// error.
fn ioctl_ref<T>(fd: RawFd, req: u64, arg: &mut T, what: &str) -> Result<i32, String> {
    // SAFETY: `arg` is a live, exclusively borrowed #[repr(C)] structure
    // of the layout the request expects, its argsz saying its size, so
    // the kernel reads and writes within it.
    let rc = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if rc < 0 {
        return Err(format!("{what}: {}", io::Error::last_os_error()));
    }
    Ok(rc)
}

fn open(path: &str) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))
}

fn probe(addr: &str, group: &str) -> Result<String, String> {
    let container = open("/dev/vfio/vfio")?;
    let c = container.as_raw_fd();
    let v = ioctl_val(c, VFIO_GET_API_VERSION, 0, "VFIO_GET_API_VERSION")?;
    if v != VFIO_API_VERSION {
        return Err(format!("VFIO API version {v}, not {VFIO_API_VERSION}"));
    }
    if ioctl_val(
        c,
        VFIO_CHECK_EXTENSION,
        VFIO_TYPE1V2_IOMMU,
        "VFIO_CHECK_EXTENSION",
    )? != 1
    {
        return Err("no type1v2 IOMMU (VFIO_CHECK_EXTENSION)".into());
    }
    let grp = open(&format!("/dev/vfio/{group}"))?;
    let g = grp.as_raw_fd();
    let mut st = GroupStatus {
        argsz: argsz::<GroupStatus>(),
        ..Default::default()
    };
    ioctl_ref(g, VFIO_GROUP_GET_STATUS, &mut st, "VFIO_GROUP_GET_STATUS")?;
    if st.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
        return Err(format!(
            "group {group} is not viable (a device in it is bound to another driver)"
        ));
    }
    let mut cfd: libc::c_int = c;
    ioctl_ref(
        g,
        VFIO_GROUP_SET_CONTAINER,
        &mut cfd,
        "VFIO_GROUP_SET_CONTAINER",
    )?;
    // Where type1 checks interrupt remapping (see the vm module).
    ioctl_val(
        c,
        VFIO_SET_IOMMU,
        VFIO_TYPE1V2_IOMMU,
        "VFIO_SET_IOMMU type1v2",
    )?;
    let name = CString::new(addr).map_err(|_| "a NUL in the address".to_string())?;
    // SAFETY: the request reads the NUL-terminated string, which outlives
    // the call.
    let dfd = unsafe { libc::ioctl(g, VFIO_GROUP_GET_DEVICE_FD as _, name.as_ptr()) };
    if dfd < 0 {
        return Err(format!(
            "VFIO_GROUP_GET_DEVICE_FD {addr}: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: a new fd the kernel just gave us, owned by nobody else.
    let device = unsafe { File::from_raw_fd(dfd) };
    let d = device.as_raw_fd();
    let mut info = DeviceInfo {
        argsz: argsz::<DeviceInfo>(),
        ..Default::default()
    };
    ioctl_ref(d, VFIO_DEVICE_GET_INFO, &mut info, "VFIO_DEVICE_GET_INFO")?;
    let mut cfg = RegionInfo {
        argsz: argsz::<RegionInfo>(),
        index: VFIO_PCI_CONFIG_REGION_INDEX,
        ..Default::default()
    };
    ioctl_ref(
        d,
        VFIO_DEVICE_GET_REGION_INFO,
        &mut cfg,
        "config region info",
    )?;
    let mut id = [0u8; 4];
    device
        .read_exact_at(&mut id, cfg.offset)
        .map_err(|e| format!("reading the configuration space: {e}"))?;
    let vendor = u16::from_le_bytes([id[0], id[1]]);
    let dev = u16::from_le_bytes([id[2], id[3]]);
    let mut msix = IrqInfo {
        argsz: argsz::<IrqInfo>(),
        index: VFIO_PCI_MSIX_IRQ_INDEX,
        ..Default::default()
    };
    ioctl_ref(d, VFIO_DEVICE_GET_IRQ_INFO, &mut msix, "MSI-X irq info")?;
    // One page of our memory, mapped for the device at IOVA 1 MiB.
    let len = 4096usize;
    // SAFETY: an anonymous private mapping at an address the kernel
    // chooses; nothing else refers to it.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(format!("mmap: {}", io::Error::last_os_error()));
    }
    let iova = 1u64 << 20;
    let mut map = DmaMap {
        argsz: argsz::<DmaMap>(),
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: page as u64,
        iova,
        size: len as u64,
    };
    ioctl_ref(c, VFIO_IOMMU_MAP_DMA, &mut map, "VFIO_IOMMU_MAP_DMA")?;
    let mut unmap = DmaUnmap {
        argsz: argsz::<DmaUnmap>(),
        iova,
        size: len as u64,
        ..Default::default()
    };
    ioctl_ref(c, VFIO_IOMMU_UNMAP_DMA, &mut unmap, "VFIO_IOMMU_UNMAP_DMA")?;
    if unmap.size != len as u64 {
        return Err(format!("unmapped {} bytes, not {len}", unmap.size));
    }
    Ok(format!(
        "device {vendor:04x}:{dev:04x}, {} regions, {} irq types, {} MSI-X vectors, \
         config space {} bytes, a page mapped for DMA at {iova:#x} and unmapped",
        info.num_regions, info.num_irqs, msix.count, cfg.size
    ))
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: vfio-probe PCI-ADDRESS IOMMU-GROUP (e.g. 0000:00:03.0 3)");
        return std::process::ExitCode::from(2);
    }
    match probe(&args[1], &args[2]) {
        Ok(s) => {
            println!("vfio-probe: ok: {s}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("vfio-probe: failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
