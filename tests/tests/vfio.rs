//! The VFIO driver (`driver = "vfio"`) on a real virtio-net device: a qemu
//! guest (`strata_tests::vm`) whose card is bound to vfio-pci runs strata
//! on it, and the kernel of the test's namespace, at the card's TAP,
//! pings the stack and downloads from an application on it while driverd
//! is killed.

use std::io::Read;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use strata_tests::vm::{self, BootOpts, Vm, GUEST_BIN, GUEST_MAC};
use strata_tests::{ping, Bg, Netns};

const HOST_IP: &str = "10.99.0.1";
const STACK_IP: &str = "10.99.0.2";
/// Bytes of the file downloaded: the 50 MB.
const FILE_LEN: u64 = 50 << 20;

fn vfio_config(pci: &str, extra: &str) -> String {
    format!(
        "[[interface]]\nname = \"eth0\"\ndriver = \"vfio\"\ndevice = \"{pci}\"\n\
         addresses = [\"{STACK_IP}/24\"]\n{extra}"
    )
}

/// `strata -i vm CMD --json` in the guest, parsed.
fn json(vm: &Vm, cmd: &str) -> Value {
    let out = vm.run_ok(&format!("strata -i vm {cmd} --json"));
    serde_json::from_str(&out).unwrap_or_else(|e| vm.fail(&format!("strata {cmd}: {e}: {out}")))
}

fn driverd(vm: &Vm, name: &str) -> u64 {
    json(vm, "stats")["layers"]["driverd0"][name]
        .as_u64()
        .unwrap_or_else(|| vm.fail(&format!("no counter driverd0.{name}")))
}

/// Pool buffers driverd took out of the pool and has not seen freed.
fn driverd_buffers(vm: &Vm) -> u64 {
    json(vm, "status")["pool"]["in_use_by_owner"]["driverd0"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until the only pool buffers driverd has out are those the
/// device holds to receive into: none leaked, none left in flight.
fn wait_at_rest(vm: &Vm) {
    wait_until(
        vm,
        "driverd's buffers at rest",
        Duration::from_secs(60),
        || driverd_buffers(vm) == driverd(vm, "dev_rx_buffers"),
    );
}

fn restarts(vm: &Vm) -> u64 {
    let st = json(vm, "status");
    strata_tests::layer_of(&st, "driverd0")["restarts"]
        .as_u64()
        .unwrap_or_else(|| vm.fail("no restart count for driverd0"))
}

/// Waits for `what` to hold, polling; fails with the guest's console.
fn wait_until(vm: &Vm, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() > timeout {
            vm.fail(&format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A download by curl in the test's namespace, its bytes read and hashed
/// here: after `pause_at` bytes the reader stops until told to go on, so
/// the transfer stalls part-way (curl's pipe and the TCP window fill)
/// however fast the machine is.
struct Download {
    curl: Bg,
    paused: mpsc::Receiver<()>,
    go_on: mpsc::Sender<()>,
    /// The bytes read and their SHA-256, or what went wrong.
    done: mpsc::Receiver<Result<(u64, String), String>>,
}

impl Download {
    fn start(ns: &Netns, url: &str, pause_at: u64) -> Download {
        let mut child = ns
            .cmd("curl")
            .args(["-sS", "--fail", "--max-time", "900", url])
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl installed");
        let mut out = child.stdout.take().expect("curl's stdout");
        let (paused_tx, paused) = mpsc::channel();
        let (go_on, go_rx) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0u64;
            let mut waited = false;
            let r = loop {
                if !waited && n >= pause_at {
                    waited = true;
                    let _ = paused_tx.send(());
                    if go_rx.recv().is_err() {
                        break Err("the test gave up".to_string());
                    }
                }
                let want = if waited {
                    buf.len()
                } else {
                    buf.len().min((pause_at - n) as usize).max(1)
                };
                match out.read(&mut buf[..want]) {
                    Ok(0) => break Ok((n, format!("{:x}", h.finalize()))),
                    Ok(k) => {
                        h.update(&buf[..k]);
                        n += k as u64;
                    }
                    Err(e) => break Err(e.to_string()),
                }
            };
            let _ = done_tx.send(r);
        });
        Download {
            curl: Bg::new(child),
            paused,
            go_on,
            done,
        }
    }
}

#[test]
fn the_kernel_reaches_the_stack_on_a_vfio_nic_even_as_driverd_dies() {
    if let Err(why) = vm::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let t0 = Instant::now();
    let ns = Netns::new();
    let vm = Vm::boot(
        &ns,
        BootOpts {
            host_addresses: vec![format!("{HOST_IP}/24")],
            ..Default::default()
        },
    );
    let pci = vm.pci_addr().to_string();
    // The file to serve, made in the guest (the command channel would
    // take minutes to carry 50 MB), and its digest there.
    vm.run_ok(&format!(
        "mkdir -p /srv && dd if=/dev/urandom of=/srv/big bs=1M count={} 2>/dev/null",
        FILE_LEN >> 20
    ));
    let digest = vm.run_ok("sha256sum /srv/big");
    let digest = digest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();

    let launcher = vm.strata_up("vm", &vfio_config(&pci, ""));
    let st = json(&vm, "status");
    let device = st["interfaces"][0]["device"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        device.starts_with(&format!("vfio, {pci}, IOMMU group ")),
        "{device}"
    );
    let r = ping(&ns, &["-c", "3", "-i", "0.2", "-W", "10", STACK_IP]);
    assert_eq!(r.received, 3, "{r:?}");
    // The stack answers with the card's own MAC (the configuration
    // names none).
    let neigh = ns.run_ok(&["ip", "neigh", "show", STACK_IP]);
    assert!(neigh.contains(&format!("lladdr {GUEST_MAC}")), "{neigh}");
    assert_eq!(driverd(&vm, "dev_link_up"), 1);
    // The device's receive buffers are the pool's, and at rest they are
    // all driverd has out of it.
    wait_at_rest(&vm);
    assert!(
        driverd(&vm, "dev_rx_buffers") > 0,
        "no pool buffer with the device"
    );
    assert!(
        driverd(&vm, "dev_interrupts") > 0,
        "the device raised no interrupt"
    );

    // 50 MB from an application on the stack, driverd killed during it.
    let httpd = vm.spawn(&format!(
        "exec {GUEST_BIN}/httpd -i vm --root /srv --listen 0.0.0.0:8080"
    ));
    vm.wait_log(&httpd, "httpd: serving", Duration::from_secs(60));
    let url = format!("http://{STACK_IP}:8080/big");
    let dl = Download::start(&ns, &url, FILE_LEN / 5);
    if dl.paused.recv_timeout(Duration::from_secs(600)).is_err() {
        vm.fail("the download did not reach a fifth of the file");
    }
    let before = restarts(&vm);
    vm.run_ok("strata -i vm kill driverd0");
    wait_until(&vm, "driverd0 restarted", Duration::from_secs(60), || {
        restarts(&vm) > before
    });
    dl.go_on.send(()).expect("the reader waits");
    match dl.done.recv_timeout(Duration::from_secs(900)) {
        Ok(Ok((n, sha))) => {
            assert_eq!(n, FILE_LEN, "bytes downloaded");
            assert_eq!(sha, digest, "the download differs from the file");
        }
        Ok(Err(e)) => vm.fail(&format!("the download failed: {e}")),
        Err(_) => vm.fail("the download did not finish"),
    }
    assert!(
        dl.curl.wait_output(Duration::from_secs(60)).is_some(),
        "curl did not end"
    );
    // What the dead driverd and the device held went back to the pool.
    wait_at_rest(&vm);
    // The stack sent with TSO: the device took super-segments whole.
    assert!(
        driverd(&vm, "tx_super_frames") > 0,
        "no super-segment went out"
    );
    assert_eq!(driverd(&vm, "dev_bad_completions"), 0);
    // Every frame went by reference, from the pool's buffers.
    assert_eq!(driverd(&vm, "dev_tx_copied"), 0, "frames sent by copy");
    eprintln!(
        "vfio: driverd0 after the download: {}",
        json(&vm, "stats")["layers"]["driverd0"]
    );
    eprintln!(
        "vfio: the download and restart took {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // The same device again, polled and without offloads: a new launcher
    // takes it over from the old one's reset.
    vm.run_ok(&format!("kill {}", httpd.pid));
    vm.run_ok("strata -i vm down");
    wait_gone(&vm, launcher.pid);
    let launcher = vm.strata_up("vm", &vfio_config(&pci, "poll = true\noffloads = false\n"));
    let r = ping(&ns, &["-c", "3", "-i", "0.2", "-W", "10", STACK_IP]);
    assert_eq!(r.received, 3, "{r:?}");
    let httpd = vm.spawn(&format!(
        "exec {GUEST_BIN}/httpd -i vm --root /srv --listen 0.0.0.0:8080"
    ));
    vm.wait_log(&httpd, "httpd: serving", Duration::from_secs(60));
    let dl = Download::start(&ns, &url, 0);
    dl.paused.recv().expect("the reader starts");
    dl.go_on.send(()).expect("the reader waits");
    match dl.done.recv_timeout(Duration::from_secs(900)) {
        Ok(Ok((n, sha))) => assert_eq!((n, sha), (FILE_LEN, digest), "the polled download"),
        Ok(Err(e)) => vm.fail(&format!("the polled download failed: {e}")),
        Err(_) => vm.fail("the polled download did not finish"),
    }
    assert_eq!(
        driverd(&vm, "dev_interrupts"),
        0,
        "a polled device raised interrupts"
    );
    assert_eq!(
        driverd(&vm, "tx_super_frames"),
        0,
        "super-segments with offloads off"
    );
    // The stack's super-segments, cut by driverd, went by copy.
    let cut = driverd(&vm, "gso_soft_segments");
    assert!(cut > 0, "no super-segment cut in software");
    assert!(driverd(&vm, "dev_tx_copied") >= cut);
    vm.run_ok(&format!("kill {}", httpd.pid));
    vm.run_ok("strata -i vm down");
    wait_gone(&vm, launcher.pid);
    eprintln!(
        "vfio: the whole test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Waits for the guest's process `pid` to end.
fn wait_gone(vm: &Vm, pid: u32) {
    vm.run_ok(&format!(
        "for i in $(seq 300); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; exit 1"
    ));
}
