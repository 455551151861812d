//! The virtual-machine harness (`strata_tests::vm`) end to end, before
//! any VFIO driver: a guest boots with its card on vfio-pci, a VFIO
//! user-space program can take the card, and strata runs in the guest on
//! a TAP of its own.

use std::time::{Duration, Instant};
use strata_tests::vm::{self, BootOpts, Vm, GUEST_BIN, NIC_PCI_ADDR};
use strata_tests::{tap_config, Netns, LAYERS, STACK_IP};

#[test]
fn a_guest_boots_with_its_card_on_vfio_pci_and_runs_strata() {
    if let Err(why) = vm::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let t0 = Instant::now();
    let ns = Netns::new();
    let body = "hello from the guest's httpd\n";
    let opts = BootOpts {
        binaries: vec!["httpd".into(), "vfio-probe".into()],
        host_addresses: vec!["10.99.0.1/24".into()],
        ..Default::default()
    }
    .file("/srv/hello.txt", body, 0o644);
    let vm = Vm::boot(&ns, opts);

    // qemu's TAP is in the test's namespace, up with its address.
    let link = ns.run_ok(&["ip", "-br", "addr", "show", "dev", vm.tap()]);
    assert!(link.contains("10.99.0.1/24"), "{link}");

    // (a) The card is on vfio-pci, its group's node is there, and a VFIO
    // program can take it (the IOMMU and interrupt remapping are what
    // type1 wants).
    assert_eq!(vm.pci_addr(), NIC_PCI_ADDR);
    let group = vm.vfio_group();
    let ls = vm.run_ok("ls -l /dev/vfio");
    eprintln!("vm: card {} in IOMMU group {group}:\n{ls}", vm.pci_addr());
    assert!(
        ls.lines().any(|l| l.ends_with(&format!(" {group}"))),
        "no /dev/vfio/{group}: {ls}"
    );
    let driver = vm.run_ok(&format!(
        "basename $(readlink /sys/bus/pci/devices/{}/driver)",
        vm.pci_addr()
    ));
    assert_eq!(driver.trim(), "vfio-pci");
    let dmesg = vm.run_ok("dmesg");
    assert!(
        dmesg.contains("Enabled IRQ remapping"),
        "the guest did not turn interrupt remapping on:\n{dmesg}"
    );
    let probe = vm.run_ok(&format!("vfio-probe {} {group}", vm.pci_addr()));
    eprintln!("vm: {}", probe.trim());
    assert!(
        probe.contains("vfio-probe: ok: device 1af4:1041"),
        "{probe}"
    );

    // (b) strata in the guest, on a TAP in the guest: it comes up, answers
    // `strata status`, the guest's kernel pings it, and an example
    // application serves a file through it.
    let t1 = Instant::now();
    let launcher = vm.strata_up("vm", &tap_config(""));
    eprintln!("vm: strata up in {:.1} s", t1.elapsed().as_secs_f64());
    let status = vm.run_ok("strata -i vm status");
    eprintln!("vm: strata -i vm status:\n{status}");
    for layer in LAYERS {
        assert!(status.contains(layer), "no {layer} in:\n{status}");
    }
    let ping = vm.run_ok(&format!("ping -c 3 -W 10 {STACK_IP}"));
    assert!(ping.contains("3 packets received"), "{ping}");
    // By its path: busybox has an httpd of its own, which its shell
    // would run instead.
    let httpd = vm.spawn(&format!(
        "exec {GUEST_BIN}/httpd -i vm --root /srv --listen 0.0.0.0:8080"
    ));
    vm.wait_log(&httpd, "httpd: serving", Duration::from_secs(60));
    let got = vm.run_ok(&format!("wget -q -O - http://{STACK_IP}:8080/hello.txt"));
    assert_eq!(got, body);
    vm.run_ok(&format!("kill {}", httpd.pid));
    vm.run_ok("strata -i vm down");
    vm.run_ok(&format!(
        "for i in $(seq 100); do kill -0 {} 2>/dev/null || exit 0; sleep 0.1; done; exit 1",
        launcher.pid
    ));
    eprintln!(
        "vm: the whole test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
