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
//!   ([`Vm::console`]; every failure message ends with it), and a second
//!   serial port, on a Unix socket, that carries the commands
//!   [`Vm::run`] and [`Vm::spawn`] send and their output — so the
//!   kernel's messages never mix with a command's output.
//!
//! The kernel is Debian's (the one `linux-image-amd64` depends on),
//! unpacked by `tests/vm/prepare` (run by `.ci/run`; run it by hand on a
//! new machine) into [`cache_dir`] without being installed, with the
//! modules the guest loads (VFIO, vfio-pci, tun and what they need),
//! uncompressed. The root file system is an initramfs [`Vm::boot`]
//! writes for each guest (a newc cpio, see [`Initramfs`]): busybox
//! (static), strata's release binaries from [`crate::bin_dir`] in
//! [`GUEST_BIN`] (every layer, the launcher, and the other workspace
//! binaries [`BootOpts::binaries`] names: the examples) with
//! the shared libraries `ldd` says they need, the modules, the files
//! [`BootOpts::files`] adds, and an `/init` that:
//!
//! 1. mounts proc, sysfs, devtmpfs, devpts, tmpfs on `/dev/shm`, `/tmp`
//!    and `/run`, installs busybox's applets and brings `lo` up;
//! 2. loads the modules (`insmod`, dependencies first);
//! 3. finds the virtio-net card in `/sys/bus/pci/devices` (vendor 0x1af4,
//!    device 0x1041) and binds it to vfio-pci (`driver_override`, then
//!    `drivers_probe`; no virtio driver is loaded, so nothing else holds
//!    it), then prints `strata-vm: nic ADDR driver vfio-pci group N` and
//!    `ls -l /dev/vfio` on the console;
//! 4. prints `strata-vm: ready` and runs the command agent on the second
//!    port.
//!
//! Boot is awaited by these lines (never by a fixed sleep), up to
//! [`BootOpts::boot_timeout`]; a kernel panic ends qemu at once
//! (`panic=-1` and `-no-reboot`), and the boot fails with the console.
//! [`Vm::boot`] fails if the card is not bound to vfio-pci.
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
//! [`Vm::run`] sends a shell script (any text: it travels base64-encoded
//! on one line), which busybox `sh` runs in `/root` with stdin from
//! `/dev/null`; stdout and stderr come back together with the exit
//! status. Commands run one at a time, in order. Busybox's shell runs
//! its own applets before anything in `PATH`, so a workspace binary that
//! shares an applet's name (`httpd`, `echo`) must be called by its path,
//! e.g. `/opt/strata/bin/httpd` ([`GUEST_BIN`]). A command must not leave
//! a background process writing to its stdout (its output would land in
//! a later command's): start those with [`Vm::spawn`], whose output goes
//! to a log file in the guest ([`Spawned::log`], read with [`Vm::log`]
//! and [`Vm::wait_log`]). Every wait has a timeout and fails with the
//! guest's console.
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

/// The guest's `/init` (see the module documentation).
const INIT: &str = r#"#!/bin/busybox sh
# strata's test VM: set up, bind the NIC to vfio-pci, serve commands.
/bin/busybox --install -s
export PATH=/opt/strata/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
. /lib/strata-vm/settings
say() { echo "strata-vm: $*"; }
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
for m in $(cat /lib/strata-vm/modules/load-order); do
    args=""
    [ "$m" = vfio_iommu_type1.ko ] && args="$TYPE1_ARGS"
    insmod "/lib/strata-vm/modules/$m" $args || say "error: insmod $m $args failed"
done
nic=""
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1041 ]; then
        nic=${d##*/}
        break
    fi
done
if [ -z "$nic" ]; then
    say "error: no virtio-net card (1af4:1041) in /sys/bus/pci/devices"
else
    echo vfio-pci > "/sys/bus/pci/devices/$nic/driver_override"
    echo "$nic" > /sys/bus/pci/drivers_probe
    drv=$(readlink "/sys/bus/pci/devices/$nic/driver")
    group=$(readlink "/sys/bus/pci/devices/$nic/iommu_group")
    say "nic $nic driver ${drv##*/} group ${group##*/}"
    ls -l /dev/vfio
fi
say ready
exec sh /lib/strata-vm/agent </dev/ttyS1 >/dev/ttyS1 2>&1
"#;

/// The command agent on the second serial port: reads `VERB ID BASE64`
/// lines, runs the decoded script, answers with markers.
const AGENT: &str = r#"# strata's test VM: the command agent (stdin and stdout: /dev/ttyS1).
stty raw -echo
mkdir -p /tmp/vm
cd /root
echo __VM_READY__
while IFS= read -r line; do
    set -- $line
    [ $# = 3 ] || continue
    echo "$3" | base64 -d > "/tmp/vm/$2.sh"
    case $1 in
    RUN)
        echo "__VM_BEGIN__ $2"
        sh "/tmp/vm/$2.sh" </dev/null 2>&1
        printf '\n__VM_DONE__ %s %s\n' "$2" "$?"
        ;;
    SPAWN)
        setsid sh "/tmp/vm/$2.sh" </dev/null >"/tmp/vm/$2.log" 2>&1 &
        echo "__VM_SPAWNED__ $2 $!"
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

/// The command channel: the second serial port's socket, what has come
/// from it and not been consumed, and the next command's id.
struct Channel {
    stream: UnixStream,
    buf: Vec<u8>,
    next: u64,
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

/// Standard base64 (RFC 4648, with padding), as busybox's `base64 -d`
/// reads it.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            s.push(if i <= c.len() {
                A[(n >> shift) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    s
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
        format!("TYPE1_ARGS=\"{type1}\"\n").as_bytes(),
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
            chan: Mutex::new(Channel {
                stream: match stream {
                    Some(s) => s,
                    // A placeholder, so that drop kills qemu; fail() panics.
                    None => UnixStream::pair().unwrap().0,
                },
                buf: Vec::new(),
                next: 1,
            }),
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
        let ready = vm
            .await_bytes(deadline, |b| find(b, b"__VM_READY__\n").map(|i| i + 13))
            .unwrap_or_else(|e| vm.fail(&format!("the guest did not boot: {e}")));
        vm.chan.lock().unwrap().buf.drain(..ready);
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

    /// Reads the command channel until `done` finds what it wants in what
    /// came (returning how far it consumed, or a value), up to `deadline`.
    fn await_bytes<T>(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, String> {
        let mut ch = self.chan.lock().unwrap();
        let mut tmp = [0u8; 65536];
        loop {
            if let Some(t) = done(&ch.buf) {
                return Ok(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "timed out; the command channel had said: {:?}",
                    String::from_utf8_lossy(&ch.buf)
                ));
            }
            ch.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))
                .unwrap();
            match ch.stream.read(&mut tmp) {
                Ok(0) => return Err("qemu closed the command channel (see the console)".into()),
                Ok(n) => ch.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.console.ended.load(Ordering::Acquire) {
                        return Err("qemu has exited".into());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading the command channel: {e}")),
            }
        }
    }

    /// Sends `verb` with `script` to the agent; the command's id.
    fn send(&self, verb: &str, script: &str) -> u64 {
        let mut ch = self.chan.lock().unwrap();
        let id = ch.next;
        ch.next += 1;
        let line = format!("{verb} {id} {}\n", base64(script.as_bytes()));
        if let Err(e) = ch.stream.write_all(line.as_bytes()) {
            drop(ch);
            self.fail(&format!("sending a command to the guest: {e}"));
        }
        id
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
        let deadline = Instant::now() + timeout;
        let id = self.send("RUN", script);
        let begin = format!("__VM_BEGIN__ {id}\n");
        let done = format!("\n__VM_DONE__ {id} ");
        let r = self.await_bytes(deadline, |b| {
            let s = find(b, begin.as_bytes())? + begin.len();
            let e = s + find(&b[s..], done.as_bytes())?;
            let st = e + done.len();
            let nl = st + find(&b[st..], b"\n")?;
            let status: i32 = String::from_utf8_lossy(&b[st..nl]).trim().parse().ok()?;
            Some((
                status,
                String::from_utf8_lossy(&b[s..e]).into_owned(),
                nl + 1,
            ))
        });
        match r {
            Ok((status, out, used)) => {
                self.chan.lock().unwrap().buf.drain(..used);
                (status, out)
            }
            Err(e) => self.fail(&format!("`{script}` in the guest: {e}")),
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
        let id = self.send("SPAWN", script);
        let mark = format!("__VM_SPAWNED__ {id} ");
        let r = self.await_bytes(deadline, |b| {
            let s = find(b, mark.as_bytes())? + mark.len();
            let nl = s + find(&b[s..], b"\n")?;
            let pid: u32 = String::from_utf8_lossy(&b[s..nl]).trim().parse().ok()?;
            Some((pid, nl + 1))
        });
        match r {
            Ok((pid, used)) => {
                self.chan.lock().unwrap().buf.drain(..used);
                Spawned {
                    pid,
                    log: format!("/tmp/vm/{id}.log"),
                }
            }
            Err(e) => self.fail(&format!("spawning `{script}` in the guest: {e}")),
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

    /// Writes `data` to the guest's file `path` (created, or truncated),
    /// in pieces small enough for one command line each.
    pub fn write_file(&self, path: &str, data: &[u8]) {
        let q = sh_quote(path);
        self.run_ok(&format!("mkdir -p \"$(dirname {q})\" && : > {q}"));
        for piece in data.chunks(24 << 10) {
            self.run_ok(&format!("echo {} | base64 -d >> {q}", base64(piece)));
        }
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

/// The first place `what` occurs in `hay`.
fn find(hay: &[u8], what: &[u8]) -> Option<usize> {
    hay.windows(what.len()).position(|w| w == what)
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
        "-serial",
        "chardev:cmd",
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
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
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
