//! `strata demo`: the whole story in one command, on a private network
//! namespace that it creates and removes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STACK_IP: &str = "10.77.0.2";
const STACK_IP6: &str = "fd00:77::2";

struct Cleanup {
    ns: String,
    launcher: Option<Child>,
    config: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.launcher.take() {
            // SAFETY: kill takes no pointers; the pid is our own child, not
            // yet reaped (we still hold its Child), so it cannot name another
            // process.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_file(&self.config);
    }
}

fn step(msg: &str) {
    println!("\n==> {msg}");
}

fn ns_run(ns: &str, args: &[&str]) -> Result<std::process::Output, String> {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))
}

fn ping(ns: &str, count: u32, dst: &str) -> Result<String, String> {
    let out = ns_run(
        ns,
        &[
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            dst,
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("transmitted") || l.starts_with("rtt"))
        .collect();
    for l in &summary {
        println!("    {l}");
    }
    if !out.status.success() {
        return Err(format!("ping failed:\n{text}"));
    }
    Ok(text)
}

fn strata(instance: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .arg("--instance")
        .arg(instance)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Runs the demo.
pub fn run() -> Result<(), String> {
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the demo needs root (it creates a network namespace and a TAP device)".into());
    }
    let pid = std::process::id();
    let ns = format!("strata-demo-{pid}");
    let instance = format!("demo-{pid}");
    let config = std::env::temp_dir().join(format!("strata-demo-{pid}.toml"));
    let mut guard = Cleanup {
        ns: ns.clone(),
        launcher: None,
        config: config.clone(),
    };
    std::fs::write(
        &config,
        format!(
            "instance = \"{instance}\"\n\n[[interface]]\nname = \"strata0\"\ndriver = \"tap\"\n\
             addresses = [\"{STACK_IP}/24\", \"{STACK_IP6}/64\"]\n\
             host_addresses = [\"10.77.0.1/24\", \"fd00:77::1/64\"]\n"
        ),
    )
    .map_err(|e| e.to_string())?;

    step(&format!("creating network namespace {ns}"));
    let st = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .map_err(|e| format!("ip: {e} (install iproute2)"))?;
    if !st.success() {
        return Err(format!("ip netns add {ns} failed"));
    }

    step(
        "starting strata on a TAP device strata0 inside it \
         (stack 10.77.0.2 and fd00:77::2, kernel 10.77.0.1 and fd00:77::1)",
    );
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&exe)
        .args(["up", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().expect("piped");
    guard.launcher = Some(child);
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(l)) if l.contains("ready") => println!("    {l}"),
        other => return Err(format!("the stack did not come up: {other:?}")),
    }

    step("the kernel pings the stack (ARP first, then ICMP echo)");
    ping(&ns, 5, STACK_IP)?;

    step(&format!(
        "and over IPv6 at {STACK_IP6} (neighbour discovery first, then ICMPv6 echo)"
    ));
    ping(&ns, 5, STACK_IP6)?;

    step("status of the layers");
    print!("{}", strata(&instance, &["status"])?);

    step("killing ipd with SIGKILL while the kernel keeps pinging");
    let before = Instant::now();
    let pinger = Command::new("ip")
        .args([
            "netns", "exec", &ns, "ping", "-c", "20", "-i", "0.1", "-W", "1", STACK_IP,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    print!("    {}", strata(&instance, &["kill", "ipd"])?);
    let out = pinger.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines().filter(|l| l.contains("transmitted")) {
        println!("    {l}");
    }
    println!(
        "    (took {:.1}s; at most a reply or two is lost while ipd restarts)",
        before.elapsed().as_secs_f64()
    );

    step("ipd is back, with one restart recorded");
    let st = strata(&instance, &["status"])?;
    for l in st
        .lines()
        .filter(|l| l.starts_with("ipd") || l.starts_with("LAYER"))
    {
        println!("    {l}");
    }
    ping(&ns, 3, STACK_IP)?;

    step("stopping the stack and removing the namespace");
    drop(guard);
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&left.stdout).contains(&ns) {
        return Err(format!("namespace {ns} is still there"));
    }
    println!("    done: no namespace, TAP device, process or shared memory left behind");
    Ok(())
}
