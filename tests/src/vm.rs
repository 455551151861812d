//! A virtual machine for the tests that need hardware this machine lacks:
//! a qemu guest with an IOMMU, whose network card a user-space driver
//! reaches through VFIO.
//!
//! # What boots
//!
//! [`Vm::boot`] starts `qemu-system-x86_64` inside the test's network
//! namespace, with TCG (pure emulation: no KVM, so it runs wherever the
//! tests run, slowly), a q35 machine, two CPUs and 2 GiB of memory. The
//! guest has:
//!
//! - an emulated Intel IOMMU (`-device intel-iommu,intremap=on`, and
//!   `intel_iommu=on` on the kernel's command line), see below;
//! - one network card, a modern-only virtio-net (`virtio-net-pci` with
//!   `disable-legacy=on,iommu_platform=on`: virtio 1.x, PCI id
//!   1af4:1041, its DMA translated by the IOMMU) at [`NIC_PCI_ADDR`],
//!   with MAC [`GUEST_MAC`]. Its other end is a TAP device qemu creates in
//!   the test's namespace ([`Vm::tap`], `vmtap0` unless
//!   [`BootOpts::tap`] says otherwise), down and without addresses unless
//!   [`BootOpts::host_addresses`] gives some;
//! - its console on the first serial port, which [`Vm`] collects
//!   ([`Vm::console`]; every failure message ends with it);
//! - a virtio-serial device (`virtio-serial-pci`, modern only, at
//!   `0000:00:04.0`) with one port, [`CMD_PORT`], on a Unix socket: the
//!   command channel, which carries what [`Vm::run`], [`Vm::spawn`] and
//!   [`Vm::write_file`] send and what comes back (see "The command
//!   channel" below) — apart from the console, so the kernel's messages
//!   never mix with a command's output.
//!
//! The kernel is Debian's (the one `linux-image-amd64` depends on),
//! unpacked by `tests/vm/prepare` (run by `.ci/run`; run it by hand on a
//! new machine) into [`cache_dir`] without being installed, with the
//! modules the guest loads ([`GUEST_MODULES`]: VFIO and vfio-pci, tun,
//! virtio_pci and virtio_console, and what they need), uncompressed. The
//! root file system is an initramfs [`Vm::boot`] writes for each guest
//! (a newc cpio, see [`Initramfs`]): busybox (static), strata's release
//! binaries from [`crate::bin_dir`] in [`GUEST_BIN`] (every layer, the
//! launcher, and the other workspace binaries [`BootOpts::binaries`]
//! names: the examples) with the shared libraries `ldd` says they need,
//! the modules, the files [`BootOpts::files`] adds, and an `/init` that:
//!
//! 1. mounts proc, sysfs, devtmpfs, devpts, tmpfs on `/dev/shm`, `/tmp`
//!    and `/run`, installs busybox's applets and brings `lo` up;
//! 2. loads the modules but the virtio ones (`insmod`, dependencies
//!    first);
//! 3. finds the virtio-net card in `/sys/bus/pci/devices` (vendor 0x1af4,
//!    device 0x1041) and binds it to vfio-pci (`driver_override`, then
//!    `drivers_probe`) while no virtio driver is loaded, so nothing else
//!    takes it; `driver_override` keeps every other driver off it after;
//! 4. loads the virtio modules, for the virtio-serial device (virtio_pci
//!    and virtio_console; never virtio_net), then prints `strata-vm: nic
//!    ADDR driver vfio-pci group N` and `ls -l /dev/vfio` on the console;
//! 5. finds the command port, `/dev/vportNpM` (the one whose
//!    `/sys/class/virtio-ports/*/name` is [`CMD_PORT`]: busybox has no
//!    udev for `/dev/virtio-ports/`), prints `strata-vm: ready` and runs
//!    the command agent on it.
//!
//! Boot is awaited by these lines (never by a fixed sleep), up to
//! [`BootOpts::boot_timeout`]; a kernel panic ends qemu at once
//! (`panic=-1` and `-no-reboot`), and so does `/init` when it finds no
//! card or no command port (it says so on the console and powers off):
//! the boot fails with the console. [`Vm::boot`] fails if the card is
//! not bound to vfio-pci.
//!
//! # The IOMMU and interrupt remapping
//!
//! VFIO's type1 IOMMU driver refuses a device (at `VFIO_SET_IOMMU`)
//! unless its MSIs are isolated — interrupt remapping — or
//! `vfio_iommu_type1` is loaded with `allow_unsafe_interrupts=1`. The
//! guest gets the real thing: qemu's Intel IOMMU emulates interrupt
//! remapping (`intremap=on`; with TCG it needs no split irqchip), the
//! guest kernel turns it on (`DMAR-IR: Enabled IRQ remapping` in `dmesg`),
//! and `vfio_iommu_type1` is loaded without the unsafe parameter. So the
//! guest checks what a real machine would, MSI-X included, and a driver
//! that works here does not lean on a relaxed check.
//! [`BootOpts::interrupt_remapping`] `= false` gives the other choice
//! (`intremap=off`, `allow_unsafe_interrupts=1`) should remapping ever
//! be in the way.
//!
//! # Running commands
//!
//! [`Vm::run`] sends a shell script (any text), which busybox `sh` runs
//! in `/root` with stdin from `/dev/null`; stdout and stderr come back
//! together, byte for byte, with the exit status. Commands run one at a
//! time, in order. Busybox's shell runs its own applets before anything
//! in `PATH`, so a workspace binary that shares an applet's name
//! (`httpd`, `echo`) must be called by its path, e.g.
//! `/opt/strata/bin/httpd` ([`GUEST_BIN`]). What a command leaves running
//! in the background and prints after the command ends is lost: start
//! such processes with [`Vm::spawn`], whose output goes to a log file in
//! the guest ([`Spawned::log`], read with [`Vm::log`] and
//! [`Vm::wait_log`]). [`Vm::write_file`] puts bytes (any bytes) in a
//! guest file. Every wait has a timeout and fails with the guest's
//! console; a command still running at its timeout is killed in the
//! guest, and the failure shows what it had printed.
//!
//! # The command channel
//!
//! Commands and their output must arrive whole: a test parses what
//! `strata ... --json` prints, and a byte lost there would fail it for
//! nothing or, worse, change a number it checks. So they do not travel on
//! a serial port. An emulated 16550 has no flow control: qemu gives up on
//! a byte after a few failed writes to the socket and drops it, and a
//! guest that does not drain its receive side in time loses bytes too.
//! They travel on a virtio-serial port (`virtserialport`, not
//! `virtconsole`, whose console data qemu drops when the socket is full)
//! instead, which has flow control both ways: qemu takes what the guest
//! writes only as fast as the socket accepts it (the guest's writes
//! block meanwhile), and reads from the socket only into buffers the
//! guest has posted. Nothing is dropped, however slow either side is.
//!
//! On top of that, every message is framed and checked, so that should a
//! byte still go astray the test fails at once, saying so, instead of
//! reading something else than was sent:
//!
//! - the host sends a line `VERB ID LEN CRC SECS` and `LEN` bytes (the
//!   script, or a file's contents), `CRC` their CRC-32 in hex; the agent
//!   (a busybox `sh` script, its stdin and stdout the port, its stderr the
//!   console) reads exactly `LEN` bytes into `/tmp/vm/ID.in` and answers
//!   `__VM_BAD__ ID ...` unless their length and CRC-32 match;
//! - `RUN` runs the script, its output into a file, killed after `SECS`
//!   seconds, and answers `__VM_DONE__ ID STATUS KILLED LEN CRC`, the
//!   `LEN` bytes of output, and `__VM_END__ ID`; the host reads exactly
//!   that, and checks the id, the end line and the CRC-32;
//! - `SPAWN` starts the script in the background and answers
//!   `__VM_SPAWNED__ ID PID`; `PUT` leaves the bytes in `/tmp/vm/ID.in`
//!   (for [`Vm::write_file`], which then moves them) and answers
//!   `__VM_STORED__ ID`.
//!
//! A reply must begin where the previous one ended, with the id of the
//! message it answers: a command's output cannot be mistaken for the
//! channel's own lines, whatever it prints. A reply that is damaged, out
//! of step or late panics with the console, and leaves the channel
//! broken: every later command fails too, rather than read a reply meant
//! for another.
//!
//! # strata in the guest
//!
//! [`Vm::strata_up`] writes a configuration to
//! `/etc/strata/INSTANCE.toml` (the `instance` line added), starts
//! `strata up --config` on it in the background and waits for its
//! `strata: ready` line; then `vm.run("strata -i INSTANCE status")` and
//! the like talk to it, and applications find it by `-i INSTANCE` or
//! `STRATA_INSTANCE`. E.g. a stack on the card through a VFIO driver:
//!
//! ```no_run
//! # use strata_tests::{vm::{self, BootOpts, Vm}, Netns};
//! # if vm::available().is_err() { return; }
//! let ns = Netns::new();
//! let vm = Vm::boot(&ns, BootOpts { host_addresses: vec!["10.99.0.1/24".into()], ..Default::default() });
//! let cfg = format!(
//!     "[[interface]]\nname = \"eth0\"\ndriver = \"vfio\"\ndevice = \"{}\"\naddresses = [\"10.99.0.2/24\"]\n",
//!     vm.pci_addr()
//! );
//! let _launcher = vm.strata_up("vm", &cfg);
//! println!("{}", vm.run_ok("strata -i vm status"));
//! ns.run_ok(&["ping", "-c", "3", "10.99.0.2"]);
//! ```
//!
//! Dropping the [`Vm`] kills qemu (by its pid) and removes the initramfs
//! and the socket; the TAP goes with qemu, the namespace with its
//! [`Netns`].

use crate::{bin_dir, Netns, TempDir};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The qemu binary [`Vm::boot`] runs (looked up in `PATH`).
pub const QEMU: &str = "qemu-system-x86_64";

/// The guest card's PCI address (qemu is told to put it there).
pub const NIC_PCI_ADDR: &str = "0000:00:03.0";

/// The guest card's MAC address.
pub const GUEST_MAC: &str = "52:54:00:53:54:02";

/// Where strata's binaries are in the guest (also first in its `PATH`).
pub const GUEST_BIN: &str = "/opt/strata/bin";

/// The binaries of strata itself, all of which every guest holds.
pub const STRATA_BINARIES: [&str; 8] = [
    "strata", "driverd", "netdevd", "filterd", "ipd", "tcpd", "udpd", "sockd",
];

/// Modules the guest loads that `tests/vm/prepare` must have put in the
/// cache (with what they depend on): VFIO for the card, tun, and the
/// virtio-serial driver for the command port.
pub const GUEST_MODULES: [&str; 5] = [
    "vfio_pci",
    "vfio_iommu_type1",
    "tun",
    "virtio_pci",
    "virtio_console",
];

/// The directory `tests/vm/prepare` fills: `STRATA_VM_DIR`, or
/// `/var/cache/strata-vm`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("STRATA_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/strata-vm"))
}

/// Whether a guest can boot here. `Err` (say why, and skip the test)
/// only when qemu is not installed; a machine with qemu but no prepared
/// kernel is a broken set-up, and this panics saying to run
/// `tests/vm/prepare`.
pub fn available() -> Result<(), String> {
    if which(QEMU).is_none() {
        return Err(format!(
            "{QEMU} is not installed (apt-get install qemu-system-x86 busybox-static, \
             then run tests/vm/prepare)"
        ));
    }
    if let Err(e) = Kernel::prepared() {
        panic!("{e}");
    }
    Ok(())
}

/// The first `name` in `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The kernel and modules `tests/vm/prepare` left in [`cache_dir`].
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// The modules, in the order they are loaded (each after those it
    /// depends on).
    pub modules: Vec<PathBuf>,
    /// The package it came from, and its version.
    pub package: String,
}

impl Kernel {
    /// What the cache holds, or an error saying to run `tests/vm/prepare`.
    pub fn prepared() -> Result<Kernel, String> {
        let dir = cache_dir();
        let missing = |what: &str| {
            format!(
                "the VM tests' kernel is not prepared ({what} in {}): run tests/vm/prepare \
                 as root (.ci/run does)",
                dir.display()
            )
        };
        let vmlinuz = dir.join("vmlinuz");
        if !vmlinuz.is_file() {
            return Err(missing("no vmlinuz"));
        }
        let order = std::fs::read_to_string(dir.join("modules/load-order"))
            .map_err(|_| missing("no modules/load-order"))?;
        let modules: Vec<PathBuf> = order
            .split_whitespace()
            .map(|m| dir.join("modules").join(m))
            .collect();
        if let Some(m) = modules.iter().find(|m| !m.is_file()) {
            return Err(missing(&format!("no {}", m.display())));
        }
        // A cache from before the command port: prepare refreshes it.
        for m in GUEST_MODULES {
            if !order.split_whitespace().any(|o| o == format!("{m}.ko")) {
                return Err(missing(&format!("no {m}.ko in modules/load-order")));
            }
        }
        let package = std::fs::read_to_string(dir.join("kernel"))
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok(Kernel {
            vmlinuz,
            modules,
            package,
        })
    }
}

/// A file put into the guest's initramfs.
#[derive(Debug, Clone)]
pub struct GuestFile {
    /// Absolute path in the guest.
    pub path: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Permission bits (e.g. 0o644, 0o755).
    pub mode: u32,
}

/// How to boot a guest; `Default` is what most tests want.
#[derive(Debug, Clone)]
pub struct BootOpts {
    /// Other workspace binaries (in [`crate::bin_dir`]: the examples of
    /// `examples/`) to put in [`GUEST_BIN`] besides strata's own.
    /// Default: `httpd`.
    pub binaries: Vec<String>,
    /// Extra files for the guest (a configuration, a script).
    pub files: Vec<GuestFile>,
    /// Name of the TAP qemu creates in the test's namespace.
    pub tap: String,
    /// Addresses (`A.B.C.D/N`) to give the TAP in the test's namespace,
    /// which is then set up, once the guest has booted. None: it stays
    /// down.
    pub host_addresses: Vec<String>,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Interrupt remapping in the IOMMU (true, the default), or none and
    /// `vfio_iommu_type1 allow_unsafe_interrupts=1` (see the module
    /// documentation).
    pub interrupt_remapping: bool,
    /// Extra words for the kernel's command line.
    pub kernel_args: Vec<String>,
    /// How long the guest may take to boot (TCG is slow, and slower on a
    /// busy machine).
    pub boot_timeout: Duration,
    /// How long [`Vm::run`] waits for a command.
    pub command_timeout: Duration,
}

impl Default for BootOpts {
    fn default() -> Self {
        BootOpts {
            binaries: vec!["httpd".into()],
            files: Vec::new(),
            tap: "vmtap0".into(),
            host_addresses: Vec::new(),
            memory_mib: 2048,
            cpus: 2,
            interrupt_remapping: true,
            kernel_args: Vec::new(),
            boot_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(120),
        }
    }
}

impl BootOpts {
    /// Adds a file for the guest at `path` with `data` and `mode`.
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push(GuestFile {
            path: path.into(),
            data: data.into(),
            mode,
        });
        self
    }
}

/// A newc ("070701") cpio archive, the format the kernel unpacks as an
/// initramfs, written entry by entry. Parent directories are added as
/// needed (the kernel creates none itself); paths are absolute guest
/// paths.
pub struct Initramfs {
    out: BufWriter<File>,
    ino: u32,
    dirs: BTreeSet<String>,
    entries: BTreeSet<String>,
}

impl Initramfs {
    /// A new archive written to `path`.
    pub fn create(path: &Path) -> io::Result<Initramfs> {
        Ok(Initramfs {
            out: BufWriter::new(File::create(path)?),
            ino: 1,
            dirs: BTreeSet::new(),
            entries: BTreeSet::new(),
        })
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        let mut h = String::with_capacity(110);
        let fields = [
            self.ino,
            mode,
            0,                                               // uid
            0,                                               // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 }, // nlink
            0,                                               // mtime
            u32::try_from(data.len()).map_err(|_| io::Error::other("file over 4 GiB"))?,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1, // namesize, with the NUL
            0,                     // check
        ];
        self.ino += 1;
        h.push_str("070701");
        for f in fields {
            write!(h, "{f:08x}").unwrap();
        }
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, len: usize) -> io::Result<()> {
        self.out.write_all(&[0; 3][..(4 - len % 4) % 4])
    }

    /// Adds the parent directories of `path` that are not in yet.
    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut at = 0;
        while let Some(i) = path[at + 1..].find('/') {
            at += 1 + i;
            self.dir(&path[..at])?;
        }
        Ok(())
    }

    /// Refuses a second entry at `path` (the kernel would take the last;
    /// a test would not notice what it lost).
    fn claim(&mut self, path: &str) -> io::Result<()> {
        assert!(path.starts_with('/'), "guest paths are absolute: {path}");
        if !self.entries.insert(path.to_string()) {
            return Err(io::Error::other(format!(
                "{path} is in the initramfs twice"
            )));
        }
        self.parents(path)
    }

    /// A directory (mode 0755), with its parents; nothing if it is in.
    pub fn dir(&mut self, path: &str) -> io::Result<()> {
        if self.dirs.contains(path) {
            return Ok(());
        }
        self.parents(path)?;
        self.dirs.insert(path.to_string());
        self.entries.insert(path.to_string());
        self.entry(path, 0o040755, (0, 0), &[])
    }

    /// A regular file with `data` and permission bits `mode`.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> io::Result<()> {
        self.claim(path)?;
        self.entry(path, 0o100000 | (mode & 0o7777), (0, 0), data)
    }

    /// A copy of the host's file `host` (following symlinks), with its
    /// permission bits.
    pub fn copy(&mut self, path: &str, host: &Path) -> io::Result<()> {
        let data = std::fs::read(host)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", host.display())))?;
        let mode = std::fs::metadata(host)?.permissions().mode();
        self.file(path, &data, mode)
    }

    /// A symbolic link at `path` to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.claim(path)?;
        self.entry(path, 0o120777, (0, 0), target.as_bytes())
    }

    /// A character device node.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> io::Result<()> {
        self.claim(path)?;
        self.entry(path, 0o020000 | (mode & 0o7777), (major, minor), &[])
    }

    /// The host's program `host` at `path`, and the shared libraries it
    /// needs (as `ldd` finds them, the dynamic loader included) at the
    /// paths `ldd` names, once each.
    pub fn program(&mut self, path: &str, host: &Path) -> io::Result<()> {
        self.copy(path, host)?;
        for lib in shared_libraries(host)? {
            let at = lib.to_str().expect("a UTF-8 library path").to_string();
            if !self.entries.contains(&at) {
                self.copy(&at, &lib)?;
            }
        }
        Ok(())
    }

    /// Ends the archive (its trailer) and flushes it.
    pub fn finish(mut self) -> io::Result<()> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()
    }
}

/// The shared libraries `ldd` lists for `program` (none for a static
/// one), the dynamic loader included.
pub fn shared_libraries(program: &Path) -> io::Result<Vec<PathBuf>> {
    let o = Command::new("ldd").arg(program).output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        // A static program: "not a dynamic executable".
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
        let path = match l.split_once("=> ") {
            Some((_, rest)) => rest,
            None => l,
        };
        let path = path.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if l.contains("not found") {
            return Err(io::Error::other(format!("{}: ldd: {l}", program.display())));
        }
    }
    Ok(libs)
}

/// The name of the virtio-serial port that carries the commands (qemu's
/// `virtserialport,name=...`; the guest finds it by this name in
/// `/sys/class/virtio-ports/*/name`).
pub const CMD_PORT: &str = "strata.cmd";

/// The guest's `/init` (see the module documentation).
const INIT: &str = r#"#!/bin/busybox sh
# strata's test VM: set up, bind the NIC to vfio-pci, serve commands.
/bin/busybox --install -s
export PATH=/opt/strata/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
. /lib/strata-vm/settings
say() { echo "strata-vm: $*"; }
# Boot cannot go on: say why on the console and end the guest (qemu exits).
die() { say "error: $*"; poweroff -f; sleep 10; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
hostname strata-vm
ip link set lo up
say "kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ { print $2 }' /proc/meminfo) kB"
# $1: "virtio" for the virtio modules (loaded last), "other" for the rest.
load() {
    for m in $(cat /lib/strata-vm/modules/load-order); do
        case $m in
        virtio*) [ "$1" = virtio ] || continue ;;
        *) [ "$1" = other ] || continue ;;
        esac
        args=""
        [ "$m" = vfio_iommu_type1.ko ] && args="$TYPE1_ARGS"
        insmod "/lib/strata-vm/modules/$m" $args || say "error: insmod $m $args failed"
    done
}
load other
nic=""
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1041 ]; then
        nic=${d##*/}
        break
    fi
done
[ -n "$nic" ] || die "no virtio-net card (1af4:1041) in /sys/bus/pci/devices"
# The card goes to vfio-pci, and only to it, before virtio_pci exists.
echo vfio-pci > "/sys/bus/pci/devices/$nic/driver_override"
echo "$nic" > /sys/bus/pci/drivers_probe
# Now virtio_pci, for the command port's virtio-serial device.
load virtio
drv=$(readlink "/sys/bus/pci/devices/$nic/driver")
group=$(readlink "/sys/bus/pci/devices/$nic/iommu_group")
say "nic $nic driver ${drv##*/} group ${group##*/}"
ls -l /dev/vfio
port=""
for i in $(seq 200); do
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = "$CMD_PORT" ] && [ -c "/dev/${p##*/}" ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || die "no virtio-serial port named $CMD_PORT (/sys/class/virtio-ports: $(ls /sys/class/virtio-ports))"
say "commands on $port"
say ready
# A port opens once at a time: one open file, shared by the agent's stdin
# and stdout. The agent's own errors go to the console.
exec 3<>"$port"
exec sh /lib/strata-vm/agent <&3 >&3 2>/dev/console 3>&-
"#;

/// The command agent (see the module documentation): reads a header line
/// `VERB ID LEN CRC SECS` and `LEN` bytes, checks their CRC-32, acts, and
/// answers with a header line (and for `RUN` the output, framed).
const AGENT: &str = r#"# strata's test VM: the command agent (stdin and stdout: the command
# port, a virtio-serial port; stderr: the console).
mkdir -p /tmp/vm
cd /root
# "LEN CRC" of file $1: its size and CRC-32 (as the host computes them).
sum() { echo "$(wc -c < "$1") $(crc32 < "$1")"; }
# Written once the host's end is connected (until then, writes wait).
echo __VM_READY__
while :; do
    if ! read -r verb id len crc secs; then
        # End of file: the host's end is not connected (qemu ending).
        [ -z "$verb" ] || echo "__VM_BAD__ ${id:-0} a header cut short"
        sleep 0.2
        continue
    fi
    in=/tmp/vm/$id.in
    if [ "$len" -gt 0 ] 2>/dev/null; then
        dd of="$in" bs="$len" count=1 iflag=fullblock status=none
    else
        : > "$in"
    fi
    got=$(sum "$in")
    if [ "$got" != "$len $crc" ]; then
        echo "__VM_BAD__ $id got $got for $verb $len $crc"
        continue
    fi
    case $verb in
    RUN)
        out=/tmp/vm/$id.out
        read up _ < /proc/uptime
        t0=${up%.*}
        timeout -s KILL "$secs" sh "$in" </dev/null >"$out" 2>&1
        st=$?
        read up _ < /proc/uptime
        late=0
        [ $st = 137 ] && [ $((${up%.*} - t0)) -ge "$secs" ] && late=1
        echo "__VM_DONE__ $id $st $late $(sum "$out")"
        cat "$out"
        echo "__VM_END__ $id"
        rm -f "$out"
        ;;
    SPAWN)
        setsid sh "$in" </dev/null >"/tmp/vm/$id.log" 2>&1 &
        echo "__VM_SPAWNED__ $id $!"
        ;;
    PUT)
        echo "__VM_STORED__ $id"
        ;;
    *)
        echo "__VM_BAD__ $id verb $verb"
        ;;
    esac
done
"#;

/// The guest's console, as qemu's stdout and stderr bring it.
struct Console {
    text: Mutex<String>,
    grew: Condvar,
    /// qemu closed its stdout: it has exited.
    ended: AtomicBool,
}

impl Console {
    fn follow(self: &Arc<Self>, mut from: impl Read + Send + 'static, prefix: &'static str) {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut line_start = true;
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // Without carriage returns and escape sequences (the
                // firmware clears the screen), which would garble a
                // failure message.
                let chunk: String = String::from_utf8_lossy(&buf[..n])
                    .chars()
                    .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
                    .collect();
                let mut t = me.text.lock().unwrap();
                for c in chunk.chars() {
                    if line_start {
                        t.push_str(prefix);
                    }
                    t.push(c);
                    line_start = c == '\n';
                }
                me.grew.notify_all();
            }
            if prefix.is_empty() {
                me.ended.store(true, Ordering::Release);
                me.grew.notify_all();
            }
        });
    }

    /// The line containing `what`, once the console has one, or an error
    /// after `timeout` or when qemu ends.
    fn wait_line(&self, what: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut t = self.text.lock().unwrap();
        loop {
            if let Some(i) = t.find(what) {
                let start = t[..i].rfind('\n').map_or(0, |s| s + 1);
                let end = t[i..].find('\n').map_or(t.len(), |e| i + e);
                return Ok(t[start..end].to_string());
            }
            if self.ended.load(Ordering::Acquire) {
                return Err(format!("qemu ended before the console said {what:?}"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the console did not say {what:?} within {timeout:?}"
                ));
            }
            t = self.grew.wait_timeout(t, left).unwrap().0;
        }
    }
}

/// The command channel: the command port's socket, what has come from it
/// and not been consumed, and the next message's id (see the module
/// documentation for what travels on it).
struct Channel {
    stream: UnixStream,
    buf: Vec<u8>,
    next: u64,
    /// Why the channel is out of step (a reply that did not come, or came
    /// wrong): every later message fails with it rather than read a reply
    /// meant for another.
    broken: Option<String>,
}

/// The agent's answer to a message.
#[derive(Debug, PartialEq)]
enum Reply {
    /// `RUN`: the exit status, whether the guest killed the command at its
    /// timeout, and its output.
    Done {
        status: i32,
        killed: bool,
        output: Vec<u8>,
    },
    /// `SPAWN`: the background command's pid.
    Spawned(u32),
    /// `PUT`: the payload is in `/tmp/vm/ID.in`.
    Stored,
}

/// How much longer than a command's timeout [`Vm::run_timeout`] waits for
/// the guest's answer (which says whether the guest killed the command).
const REPLY_GRACE: Duration = Duration::from_secs(60);

/// How long a header line from the agent may be.
const MAX_HEADER: usize = 4096;

impl Channel {
    fn new(stream: UnixStream) -> Channel {
        Channel {
            stream,
            buf: Vec::new(),
            next: 1,
            broken: None,
        }
    }

    /// Reads what the socket has (waiting for something) up to `deadline`.
    fn read_more(&mut self, deadline: Instant, console: &Console) -> Result<(), String> {
        let mut tmp = [0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let from = self.buf.len().saturating_sub(4096);
                return Err(format!(
                    "timed out; the command channel has {} bytes unread, ending {:?}",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf[from..])
                ));
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))
                .map_err(|e| format!("the command channel: {e}"))?;
            match self.stream.read(&mut tmp) {
                Ok(0) => return Err("qemu closed the command channel (see the console)".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if console.ended.load(Ordering::Acquire) {
                        return Err("qemu has exited".into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading the command channel: {e}")),
            }
        }
    }

    /// The next line from the agent, without its newline: a header, so
    /// text, and short.
    fn line(&mut self, deadline: Instant, console: &Console) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..=i);
                return Ok(l);
            }
            if self.buf.len() > MAX_HEADER {
                return Err(format!(
                    "the command channel is out of step: {:?}... where a header should be",
                    String::from_utf8_lossy(&self.buf[..200])
                ));
            }
            self.read_more(deadline, console)?;
        }
    }

    /// The next `n` bytes from the agent.
    fn take(&mut self, n: usize, deadline: Instant, console: &Console) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            self.read_more(deadline, console)?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Sends `verb` with `payload` (and `secs`, the guest's timeout for a
    /// `RUN`) and reads the agent's reply, up to `deadline`: the message's
    /// id and the reply. Any error leaves the channel broken.
    fn exchange(
        &mut self,
        verb: &str,
        payload: &[u8],
        secs: u64,
        deadline: Instant,
        console: &Console,
    ) -> Result<(u64, Reply), String> {
        if let Some(why) = &self.broken {
            return Err(format!(
                "the command channel has been out of step since an earlier message: {why}"
            ));
        }
        let id = self.next;
        self.next += 1;
        let r = self.exchange_id(id, verb, payload, secs, deadline, console);
        if let Err(e) = &r {
            self.broken = Some(format!("{verb} {id}: {e}"));
        }
        r.map(|reply| (id, reply))
    }

    fn exchange_id(
        &mut self,
        id: u64,
        verb: &str,
        payload: &[u8],
        secs: u64,
        deadline: Instant,
        console: &Console,
    ) -> Result<Reply, String> {
        let mut msg = format!(
            "{verb} {id} {} {:08x} {secs}\n",
            payload.len(),
            crc32(payload)
        )
        .into_bytes();
        msg.extend_from_slice(payload);
        let left = deadline.saturating_duration_since(Instant::now());
        self.stream
            .set_write_timeout(Some(left.max(Duration::from_millis(1))))
            .and_then(|()| self.stream.write_all(&msg))
            .map_err(|e| format!("sending {verb} {id} to the guest: {e}"))?;
        let head = self.line(deadline, console)?;
        let w: Vec<&str> = head.split(' ').collect();
        let out_of_step =
            || format!("the command channel is out of step: {head:?} answers {verb} {id}");
        let this = |i: &str| i.parse() == Ok(id);
        match (verb, w.as_slice()) {
            (_, ["__VM_BAD__", i, ..]) if this(i) => Err(format!(
                "the guest received {verb} {id} damaged ({head}); a bug in the channel"
            )),
            ("RUN", ["__VM_DONE__", i, status, killed, len, crc]) if this(i) => {
                let (Ok(status), Ok(len), Ok(crc)) =
                    (status.parse(), len.parse(), u32::from_str_radix(crc, 16))
                else {
                    return Err(out_of_step());
                };
                let output = self.take(len, deadline, console)?;
                let end = self.line(deadline, console)?;
                if end != format!("__VM_END__ {id}") {
                    return Err(format!(
                        "the command channel is out of step: {end:?} after {len} bytes of \
                         output where __VM_END__ {id} should be (bytes lost or added?)"
                    ));
                }
                if crc32(&output) != crc {
                    return Err(format!(
                        "the output came damaged: CRC-32 {:08x} here, {crc:08x} in the guest",
                        crc32(&output)
                    ));
                }
                Ok(Reply::Done {
                    status,
                    killed: *killed == "1",
                    output,
                })
            }
            ("SPAWN", ["__VM_SPAWNED__", i, pid]) if this(i) => {
                pid.parse().map(Reply::Spawned).map_err(|_| out_of_step())
            }
            ("PUT", ["__VM_STORED__", i]) if this(i) => Ok(Reply::Stored),
            _ => Err(out_of_step()),
        }
    }
}

/// CRC-32 (IEEE 802.3: zlib's, and busybox `crc32`'s).
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// A background command in the guest ([`Vm::spawn`]).
#[derive(Debug, Clone)]
pub struct Spawned {
    /// Its pid in the guest (`kill PID` stops it).
    pub pid: u32,
    /// The guest file its stdout and stderr go to.
    pub log: String,
}

/// A running guest; qemu is killed on drop.
pub struct Vm {
    qemu: Child,
    console: Arc<Console>,
    chan: Mutex<Channel>,
    pci_addr: String,
    vfio_group: String,
    tap: String,
    booted_in: Duration,
    command_timeout: Duration,
    _dir: TempDir,
}

/// `s` quoted for a POSIX shell (single quotes).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the initramfs for `opts` to `path`.
fn build_initramfs(path: &Path, kernel: &Kernel, opts: &BootOpts) -> io::Result<()> {
    let mut img = Initramfs::create(path)?;
    for d in [
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/run",
        "/root",
        "/etc",
        "/srv",
    ] {
        img.dir(d)?;
    }
    img.char_dev("/dev/console", 5, 1, 0o600)?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| io::Error::other("no busybox (apt-get install busybox-static)"))?;
    img.program("/bin/busybox", &busybox)?;
    img.file("/init", INIT.as_bytes(), 0o755)?;
    img.file("/lib/strata-vm/agent", AGENT.as_bytes(), 0o644)?;
    let type1 = if opts.interrupt_remapping {
        ""
    } else {
        "allow_unsafe_interrupts=1"
    };
    img.file(
        "/lib/strata-vm/settings",
        format!("TYPE1_ARGS=\"{type1}\"\nCMD_PORT={CMD_PORT}\n").as_bytes(),
        0o644,
    )?;
    img.file("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)?;
    img.file("/etc/group", b"root:x:0:\n", 0o644)?;
    let mut order = String::new();
    for m in &kernel.modules {
        let name = m.file_name().unwrap().to_str().unwrap();
        img.copy(&format!("/lib/strata-vm/modules/{name}"), m)?;
        order.push_str(name);
        order.push('\n');
    }
    img.file("/lib/strata-vm/modules/load-order", order.as_bytes(), 0o644)?;
    let bins = bin_dir();
    for b in STRATA_BINARIES
        .iter()
        .copied()
        .chain(opts.binaries.iter().map(String::as_str))
    {
        let host = bins.join(b);
        if !host.is_file() {
            return Err(io::Error::other(format!(
                "{} not built: cargo build --release --workspace --bins",
                host.display()
            )));
        }
        img.program(&format!("{GUEST_BIN}/{b}"), &host)?;
    }
    for f in &opts.files {
        img.file(&f.path, &f.data, f.mode)?;
    }
    img.finish()
}

impl Vm {
    /// Boots a guest in `ns` (see the module documentation) and returns
    /// once it serves commands, its card bound to vfio-pci; panics with
    /// the console otherwise. Panics too if qemu or the prepared kernel
    /// is missing: call [`available`] first.
    pub fn boot(ns: &Netns, opts: BootOpts) -> Vm {
        let started = Instant::now();
        if let Err(e) = available() {
            panic!("{e}");
        }
        let kernel = Kernel::prepared().unwrap_or_else(|e| panic!("{e}"));
        let dir = TempDir::new("strata-vm");
        let initrd = dir.path().join("initramfs.cpio");
        build_initramfs(&initrd, &kernel, &opts)
            .unwrap_or_else(|e| panic!("writing the guest's initramfs: {e}"));
        let size = std::fs::metadata(&initrd).map_or(0, |m| m.len());
        let built = started.elapsed();
        let sock = dir.path().join("cmd.sock");
        let mut append = vec![
            "console=ttyS0",
            "intel_iommu=on",
            "panic=-1",
            "rdinit=/init",
        ];
        append.extend(opts.kernel_args.iter().map(String::as_str));
        let mut qemu = ns.cmd(QEMU);
        qemu.args(qemu_args(&opts, &kernel.vmlinuz, &initrd, &sock))
            .arg("-append")
            .arg(append.join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = qemu.spawn().unwrap_or_else(|e| panic!("{QEMU}: {e}"));
        let console = Arc::new(Console {
            text: Mutex::new(String::new()),
            grew: Condvar::new(),
            ended: AtomicBool::new(false),
        });
        console.follow(child.stderr.take().unwrap(), "qemu: ");
        console.follow(child.stdout.take().unwrap(), "");
        // qemu waits for this connection before it starts the guest
        // (`wait=on`), so nothing the agent says is missed.
        let deadline = started + opts.boot_timeout;
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break Some(s),
                Err(_) if Instant::now() < deadline && !console.ended.load(Ordering::Acquire) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => break None,
            }
        };
        let mut vm = Vm {
            qemu: child,
            console,
            chan: Mutex::new(Channel::new(match stream {
                Some(s) => s,
                // A placeholder, so that drop kills qemu; fail() panics.
                None => UnixStream::pair().unwrap().0,
            })),
            pci_addr: String::new(),
            vfio_group: String::new(),
            tap: opts.tap.clone(),
            booted_in: Duration::ZERO,
            command_timeout: opts.command_timeout,
            _dir: dir,
        };
        if vm.console.text.lock().unwrap().is_empty() && vm.console.ended.load(Ordering::Acquire) {
            vm.fail("qemu ended at once");
        }
        let ready = vm.chan.lock().unwrap().line(deadline, &vm.console);
        match ready {
            Ok(l) if l == "__VM_READY__" => {}
            Ok(l) => vm.fail(&format!(
                "the command channel began with {l:?}, not __VM_READY__"
            )),
            Err(e) => vm.fail(&format!("the guest did not boot: {e}")),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let nic = vm
            .console
            .wait_line("strata-vm: nic ", left.max(Duration::from_secs(5)))
            .unwrap_or_else(|e| vm.fail(&e));
        // "strata-vm: nic ADDR driver DRIVER group N"
        let w: Vec<&str> = nic.split_whitespace().collect();
        if w.len() < 7 || w[4] != "vfio-pci" || w[6].is_empty() {
            vm.fail(&format!("the card is not bound to vfio-pci: {nic}"));
        }
        vm.pci_addr = w[2].to_string();
        vm.vfio_group = w[6].to_string();
        vm.booted_in = started.elapsed();
        eprintln!(
            "vm: {} booted in {:.1} s (its {} MB initramfs written in {:.1} s), card {} in group {}",
            kernel.package,
            vm.booted_in.as_secs_f64(),
            size >> 20,
            built.as_secs_f64(),
            vm.pci_addr,
            vm.vfio_group
        );
        if !opts.host_addresses.is_empty() {
            for a in &opts.host_addresses {
                ns.run_ok(&["ip", "addr", "add", a, "dev", &vm.tap]);
            }
            ns.run_ok(&["ip", "link", "set", &vm.tap, "up"]);
        }
        vm
    }

    /// Sends a message to the agent and returns its reply; panics with
    /// `what` and the console if the exchange fails.
    fn exchange(
        &self,
        what: &str,
        verb: &str,
        payload: &[u8],
        secs: u64,
        deadline: Instant,
    ) -> (u64, Reply) {
        let r = self
            .chan
            .lock()
            .unwrap()
            .exchange(verb, payload, secs, deadline, &self.console);
        r.unwrap_or_else(|e| self.fail(&format!("{what}: {e}")))
    }

    /// Runs `script` in the guest (busybox `sh`), up to the boot options'
    /// command timeout: its exit status and its output (stdout and
    /// stderr).
    pub fn run(&self, script: &str) -> (i32, String) {
        self.run_timeout(script, self.command_timeout)
    }

    /// [`Vm::run`] with its own timeout; panics with the console (and what
    /// the command printed) if the command has not finished by then.
    pub fn run_timeout(&self, script: &str, timeout: Duration) -> (i32, String) {
        // The guest kills the command at its timeout and sends what it
        // printed; the host waits longer, for a guest that does not answer.
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let deadline = Instant::now() + timeout + REPLY_GRACE;
        let what = format!("`{script}` in the guest");
        match self.exchange(&what, "RUN", script.as_bytes(), secs.max(1), deadline) {
            (
                _,
                Reply::Done {
                    killed: true,
                    output,
                    ..
                },
            ) => self.fail(&format!(
                "{what} did not finish within {timeout:?} (killed there); it printed:\n{}",
                String::from_utf8_lossy(&output)
            )),
            (_, Reply::Done { status, output, .. }) => {
                (status, String::from_utf8_lossy(&output).into_owned())
            }
            (_, r) => unreachable!("{r:?}"),
        }
    }

    /// Runs `script` in the guest; its output, or a panic with it (and the
    /// console) unless it exits 0.
    pub fn run_ok(&self, script: &str) -> String {
        let (status, out) = self.run(script);
        if status != 0 {
            self.fail(&format!("`{script}` in the guest exited {status}:\n{out}"));
        }
        out
    }

    /// Starts `script` in the background in the guest, in a session of
    /// its own, its stdout and stderr to [`Spawned::log`].
    pub fn spawn(&self, script: &str) -> Spawned {
        let deadline = Instant::now() + self.command_timeout;
        let what = format!("spawning `{script}` in the guest");
        match self.exchange(&what, "SPAWN", script.as_bytes(), 0, deadline) {
            (id, Reply::Spawned(pid)) => Spawned {
                pid,
                log: format!("/tmp/vm/{id}.log"),
            },
            (_, r) => unreachable!("{r:?}"),
        }
    }

    /// What a background command has printed so far.
    pub fn log(&self, s: &Spawned) -> String {
        self.run_ok(&format!("cat {}", s.log))
    }

    /// Whether a background command still runs.
    pub fn alive(&self, s: &Spawned) -> bool {
        self.run(&format!("kill -0 {}", s.pid)).0 == 0
    }

    /// Waits until a background command's output has a line containing
    /// `what` (polling), and returns that line; panics with the output and
    /// the console after `timeout`.
    pub fn wait_log(&self, s: &Spawned, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(100);
        loop {
            let alive = self.alive(s);
            let log = self.log(s);
            if let Some(l) = log.lines().find(|l| l.contains(what)) {
                return l.to_string();
            }
            if !alive {
                self.fail(&format!(
                    "guest pid {} ended without printing `{what}`:\n{log}",
                    s.pid
                ));
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "`{what}` not in the output of guest pid {} within {timeout:?}:\n{log}",
                    s.pid
                ));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// Writes `data` to the guest's file `path` (created, or truncated;
    /// its directory too if need be).
    pub fn write_file(&self, path: &str, data: &[u8]) {
        let deadline = Instant::now() + self.command_timeout;
        let what = format!("writing {} bytes to the guest's {path}", data.len());
        let (id, _) = self.exchange(&what, "PUT", data, 0, deadline);
        let q = sh_quote(path);
        self.run_ok(&format!(
            "mkdir -p \"$(dirname {q})\" && cat /tmp/vm/{id}.in > {q} && rm /tmp/vm/{id}.in"
        ));
    }

    /// Starts a strata instance `instance` in the guest with `body` as its
    /// configuration (written to `/etc/strata/INSTANCE.toml` with the
    /// `instance` line added) and returns once it says it is ready; panics
    /// with its log otherwise. `strata -i INSTANCE ...` then talks to it.
    pub fn strata_up(&self, instance: &str, body: &str) -> Spawned {
        let path = format!("/etc/strata/{instance}.toml");
        self.write_file(
            &path,
            format!("instance = \"{instance}\"\n\n{body}").as_bytes(),
        );
        let launcher = self.spawn(&format!(
            "exec {GUEST_BIN}/strata up --config {}",
            sh_quote(&path)
        ));
        let timeout = self.command_timeout;
        self.wait_log(&launcher, "strata: ready", timeout);
        launcher
    }

    /// The console so far (kernel messages, `/init`'s lines, and qemu's
    /// own stderr prefixed `qemu: `).
    pub fn console(&self) -> String {
        self.console.text.lock().unwrap().clone()
    }

    /// The card's PCI address in the guest, as `/init` found it.
    pub fn pci_addr(&self) -> &str {
        &self.pci_addr
    }

    /// The card's IOMMU group in the guest (`/dev/vfio/GROUP`).
    pub fn vfio_group(&self) -> &str {
        &self.vfio_group
    }

    /// The TAP at the card's other end, in the test's namespace.
    pub fn tap(&self) -> &str {
        &self.tap
    }

    /// How long the boot took, from [`Vm::boot`]'s call (the initramfs
    /// written, qemu started, the guest serving commands).
    pub fn boot_time(&self) -> Duration {
        self.booted_in
    }

    /// qemu's pid on the host.
    pub fn qemu_pid(&self) -> u32 {
        self.qemu.id()
    }

    /// Panics with `msg` and the end of the guest's console.
    pub fn fail(&self, msg: &str) -> ! {
        let console = self.console();
        let lines: Vec<&str> = console.lines().collect();
        let tail = lines[lines.len().saturating_sub(200)..].join("\n");
        panic!(
            "{msg}\n--- guest console (its last 200 lines) ---\n{tail}\n--- end of the console ---"
        );
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// qemu's arguments but `-append` (see the module documentation).
fn qemu_args(opts: &BootOpts, vmlinuz: &Path, initrd: &Path, sock: &Path) -> Vec<String> {
    let intremap = if opts.interrupt_remapping {
        "on"
    } else {
        "off"
    };
    let s = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    [
        "-accel",
        "tcg",
        "-machine",
        "q35",
        "-cpu",
        "max",
        "-smp",
        &opts.cpus.to_string(),
        "-m",
        &format!("{}M", opts.memory_mib),
        "-nodefaults",
        "-nographic",
        "-no-reboot",
        "-no-user-config",
        // The IOMMU first: the devices after it are behind it.
        "-device",
        &format!("intel-iommu,intremap={intremap}"),
        "-kernel",
        &s(vmlinuz),
        "-initrd",
        &s(initrd),
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
        "-chardev",
        &format!("socket,id=cmd,path={},server=on,wait=on", s(sock)),
        "-device",
        "virtio-serial-pci,id=vser,disable-legacy=on,bus=pcie.0,addr=0x4",
        "-device",
        &format!("virtserialport,bus=vser.0,chardev=cmd,name={CMD_PORT}"),
        "-netdev",
        &format!("tap,id=net0,ifname={},script=no,downscript=no", opts.tap),
        "-device",
        &format!(
            "virtio-net-pci,netdev=net0,mac={GUEST_MAC},disable-legacy=on,iommu_platform=on,\
             bus=pcie.0,addr=0x3"
        ),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"hello"), 0x3610_a686);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    /// The agent's answer to `RUN` (see the module documentation).
    fn done(id: u64, status: i32, out: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "__VM_DONE__ {id} {status} 0 {} {:08x}\n",
            out.len(),
            crc32(out)
        )
        .into_bytes();
        r.extend_from_slice(out);
        r.extend_from_slice(format!("__VM_END__ {id}\n").as_bytes());
        r
    }

    type Results = Vec<Result<(u64, Reply), String>>;

    /// Sends `msgs` on a channel whose other end, a fake agent, answers
    /// each with the next of `replies`: what the exchanges returned, and
    /// the messages the agent received.
    fn fake_agent(msgs: &[(&str, &[u8])], replies: Vec<Vec<u8>>) -> (Results, Vec<Vec<u8>>) {
        use std::io::BufRead;
        let (host, agent) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut r = io::BufReader::new(agent.try_clone().unwrap());
            let mut w = agent;
            let mut got = Vec::new();
            for reply in replies {
                let mut head = String::new();
                if r.read_line(&mut head).unwrap() == 0 {
                    break;
                }
                let len: usize = head.split(' ').nth(2).unwrap().parse().unwrap();
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                got.push([head.as_bytes(), &body].concat());
                w.write_all(&reply).unwrap();
            }
            got
        });
        let console = Console {
            text: Mutex::new(String::new()),
            grew: Condvar::new(),
            ended: AtomicBool::new(false),
        };
        let mut ch = Channel::new(host);
        let results = msgs
            .iter()
            .map(|(verb, payload)| {
                let deadline = Instant::now() + Duration::from_secs(10);
                ch.exchange(verb, payload, 9, deadline, &console)
            })
            .collect();
        drop(ch);
        (results, t.join().unwrap())
    }

    #[test]
    fn messages_and_replies_are_framed() {
        let tricky = b"__VM_END__ 1\n__VM_DONE__ 2 0 0 0 00000000\n\xff\x00no newline";
        let (r, got) = fake_agent(
            &[
                ("RUN", b"echo hi"),
                ("SPAWN", b"sleep 9"),
                ("PUT", b"\x00\x01"),
                ("RUN", b"x"),
            ],
            vec![
                done(1, 3, tricky),
                b"__VM_SPAWNED__ 2 77\n".to_vec(),
                b"__VM_STORED__ 3\n".to_vec(),
                done(4, 0, b""),
            ],
        );
        let output = tricky.to_vec();
        assert_eq!(
            r,
            [
                Ok((
                    1,
                    Reply::Done {
                        status: 3,
                        killed: false,
                        output
                    }
                )),
                Ok((2, Reply::Spawned(77))),
                Ok((3, Reply::Stored)),
                Ok((
                    4,
                    Reply::Done {
                        status: 0,
                        killed: false,
                        output: Vec::new()
                    }
                )),
            ]
        );
        assert_eq!(
            got[0],
            format!("RUN 1 7 {:08x} 9\necho hi", crc32(b"echo hi")).as_bytes()
        );
        assert_eq!(
            got[2],
            format!("PUT 3 2 {:08x} 9\n\x00\x01", crc32(b"\x00\x01")).as_bytes()
        );
    }

    /// Each bad reply fails its exchange, and the channel with it.
    fn fails_and_breaks(reply: Vec<u8>, why: &str) {
        let (r, got) = fake_agent(
            &[("RUN", b"a"), ("RUN", b"b")],
            vec![reply, done(2, 0, b"")],
        );
        let e = r[0].as_ref().unwrap_err();
        assert!(e.contains(why), "{e}");
        let e = r[1].as_ref().unwrap_err();
        assert!(e.contains("out of step since an earlier message"), "{e}");
        assert_eq!(got.len(), 1, "a message sent on a broken channel");
    }

    #[test]
    fn a_lost_byte_fails() {
        let mut reply = done(1, 0, b"hello\n");
        reply.remove(reply.len() - 16);
        fails_and_breaks(reply, "out of step");
    }

    #[test]
    fn a_changed_byte_fails() {
        let mut reply = done(1, 0, b"hello\n");
        let at = reply.len() - 16;
        reply[at] ^= 0x20;
        fails_and_breaks(reply, "damaged");
    }

    #[test]
    fn a_reply_to_another_message_fails() {
        fails_and_breaks(done(7, 0, b""), "out of step");
        fails_and_breaks(b"__VM_BAD__ 1 got 0 00000000\n".to_vec(), "damaged");
        fails_and_breaks(b"garbage\n".to_vec(), "out of step");
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn a_cpio_has_its_parents_and_a_trailer() {
        let dir = TempDir::new("cpio");
        let p = dir.path().join("x.cpio");
        let mut c = Initramfs::create(&p).unwrap();
        c.file("/a/b/c", b"hello", 0o644).unwrap();
        assert!(c.file("/a/b/c", b"again", 0o644).is_err());
        c.finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let names: Vec<String> = bytes
            .windows(6)
            .enumerate()
            .filter(|(_, w)| *w == b"070701")
            .map(|(i, _)| {
                let n = usize::from_str_radix(
                    std::str::from_utf8(&bytes[i + 94..i + 102]).unwrap(),
                    16,
                )
                .unwrap();
                String::from_utf8_lossy(&bytes[i + 110..i + 110 + n - 1]).into_owned()
            })
            .collect();
        assert_eq!(names, ["a", "a/b", "a/b/c", "TRAILER!!!"]);
    }
}
