//! The TAP backend against the kernel's own stack.
//!
//! Every device this file creates lives in a network namespace of the test's
//! own: the namespace is made with `ip netns add`, a dedicated thread enters
//! it with setns (the network namespace is per thread, so the rest of the
//! test process stays where it was) and creates and configures the TAP there,
//! and a guard deletes the namespace when the test ends, pass or fail. The
//! host's own interfaces are never touched. Needs root.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::panic;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use strata_drivers::{tap, Driver, Tap};

/// A network namespace that exists for as long as this value does.
struct Netns {
    name: String,
    handle: Option<File>,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("strata-drv-test-{}-{tag}", std::process::id());
        let status = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "ip netns add {name} failed ({status:?}); these tests need root and iproute2"
        );
        // The guard exists from here on, so a failure below still deletes
        // the namespace.
        let mut ns = Netns { name, handle: None };
        ns.handle = Some(File::open(format!("/var/run/netns/{}", ns.name)).expect("open netns"));
        ns
    }

    /// Runs `body` on a thread inside the namespace and returns its result,
    /// passing on its panic (a failed assertion) if it has one.
    fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        let handle = self.handle.as_ref().expect("netns handle");
        thread::scope(|s| {
            let thread = s.spawn(|| {
                // Nothing may run outside the namespace: fail before body.
                setns(handle, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
                body()
            });
            thread.join().unwrap_or_else(|p| panic::resume_unwind(p))
        })
    }

    /// A command that runs inside the namespace.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    fn output(&self, program: &str, args: &[&str]) -> Output {
        self.command(program, args)
            .output()
            .expect("run a command in the namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.handle = None;
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!(
                "could not delete network namespace {}: {status:?}",
                self.name
            );
        }
    }
}

/// Kills a helper process however the test ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const STACK_MAC: [u8; 6] = [0x02, 0x53, 0x54, 0x00, 0x00, 0x01];
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const STACK_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

fn ethertype(frame: &[u8]) -> u16 {
    frame
        .get(12..14)
        .map_or(0, |t| u16::from_be_bytes([t[0], t[1]]))
}

/// Reads frames until one satisfies `wanted` or five seconds pass.
fn wait_for_frame(tap: &mut Tap, what: &str, wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(tap.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(100u16)).expect("poll");
        while let Some(n) = tap.recv(&mut buf).expect("recv") {
            let frame = &buf[..n];
            if wanted(frame) {
                return frame.to_vec();
            }
            seen.push(format!("{:#06x}/{n}", ethertype(frame)));
        }
    }
    panic!("no {what} arrived within 5 s; saw (ethertype/length): {seen:?}");
}

fn arp_reply(to_mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&to_mac);
    f.extend_from_slice(&STACK_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02]);
    f.extend_from_slice(&STACK_MAC);
    f.extend_from_slice(&STACK_IP.octets());
    f.extend_from_slice(&to_mac);
    f.extend_from_slice(&HOST_IP.octets());
    f.resize(60, 0);
    f
}

#[test]
fn tap_carries_frames_to_and_from_the_kernel() {
    let ns = Netns::new("frames");
    let name = "strata-t0";
    ns.run(|| {
        let mut tap = Tap::create(name, false).unwrap();
        assert_eq!(tap.name(), name);

        // A frame sent while the kernel side is down is lost, not an error.
        assert!(tap.send(&arp_reply([0xff; 6])).unwrap());

        tap::set_mtu(name, 1400).unwrap();
        tap::add_host_addr(name, HOST_IP, 24).unwrap();
        tap::add_host_addr(name, Ipv4Addr::new(10, 200, 1, 1), 24).unwrap();
        tap::add_host_addr(name, HOST_IP, 24).unwrap(); // again: no error
        tap::set_up(name).unwrap();
        let host_mac = tap::host_mac(name).unwrap();
        assert_eq!(host_mac[0] & 1, 0, "kernel side has a unicast MAC");

        let link =
            String::from_utf8_lossy(&ns.output("ip", &["-o", "link", "show", "dev", name]).stdout)
                .into_owned();
        assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
        let addrs = String::from_utf8_lossy(
            &ns.output("ip", &["-o", "-4", "addr", "show", "dev", name])
                .stdout,
        )
        .into_owned();
        assert!(
            addrs.contains("inet 10.200.0.1/24 brd 10.200.0.255"),
            "{addrs}"
        );
        assert!(addrs.contains("inet 10.200.1.1/24"), "{addrs}");

        // The kernel must resolve the stack's address before pinging it.
        let _ping = Reap(
            ns.command(
                "ping",
                &["-c", "5", "-i", "0.5", "-W", "1", &STACK_IP.to_string()],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ping"),
        );
        let arp = wait_for_frame(&mut tap, "ARP request for 10.200.0.2", |f| {
            ethertype(f) == 0x0806 && f.len() >= 42 && f[38..42] == STACK_IP.octets()
        });
        assert_eq!(arp[0..6], [0xff; 6], "broadcast");
        assert_eq!(arp[6..12], host_mac);
        assert_eq!(arp[20..22], [0, 1], "a request");
        assert_eq!(arp[28..32], HOST_IP.octets());

        // Our answer reaches the kernel: it sends the echo request to our MAC.
        assert!(tap.send(&arp_reply(host_mac)).unwrap());
        let echo = wait_for_frame(&mut tap, "ICMP echo request to the stack's MAC", |f| {
            ethertype(f) == 0x0800 && f.len() >= 34 && f[0..6] == STACK_MAC && f[23] == 1
        });
        assert_eq!(echo[30..34], STACK_IP.octets());

        // A frame the kernel rejects is an error, and the device lives on.
        assert!(tap.send(&[0u8; 10]).is_err());
        assert!(tap.send(&arp_reply(host_mac)).unwrap());

        // A frame longer than the buffer is reported, not cut short.
        let mut small = [0u8; 20];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "no frame to truncate arrived");
            match tap.recv(&mut small) {
                Ok(None) => thread::sleep(Duration::from_millis(50)),
                Ok(Some(n)) => assert!(n <= 20),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                    break;
                }
            }
        }
    });
    // The interface was not persistent: closing the TAP removed it.
    assert!(!ns
        .output("ip", &["link", "show", "dev", name])
        .status
        .success());
}

#[test]
fn tap_survives_handover_by_fd_and_vanishes_with_the_last_fd() {
    let ns = Netns::new("handover");
    let name = "strata-t1";
    ns.run(|| {
        let tap = Tap::create(name, false).unwrap();
        let launcher_copy: OwnedFd = tap.as_fd().try_clone_to_owned().unwrap();
        drop(tap);
        let mut driverd = Tap::from_fd(launcher_copy.try_clone().unwrap()).unwrap();
        assert_eq!(driverd.name(), name);
        let mut buf = [0u8; 1514];
        assert_eq!(driverd.recv(&mut buf).unwrap(), None, "non-blocking");

        // driverd dies; the launcher's fd keeps the interface.
        drop(driverd);
        assert!(ns
            .output("ip", &["link", "show", "dev", name])
            .status
            .success());

        // Kernel-chosen names work too.
        let chosen = Tap::create("", false).unwrap();
        assert!(chosen.name().starts_with("tap"), "{}", chosen.name());

        drop(launcher_copy);
        assert!(!ns
            .output("ip", &["link", "show", "dev", name])
            .status
            .success());
    });
}

#[test]
fn bad_names_and_fds_are_refused_without_creating_anything() {
    let err = Tap::create("sixteen-chars-xx", false).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let dev_null = OwnedFd::from(File::open("/dev/null").unwrap());
    assert!(Tap::from_fd(dev_null).is_err());
    assert!(tap::add_host_addr("strata-no-such", HOST_IP, 33).is_err());
    assert!(tap::set_up("strata-no-such").is_err());
    assert!(tap::host_mac("strata-no-such").is_err());
}
