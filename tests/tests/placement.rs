//! CPU placement (`[cpu]`): each layer runs where its policy puts it, in
//! the scheduling class asked for (SCHED_BATCH by default), as the kernel
//! reports it in `/proc/PID/status` and `stat` and `strata status` shows
//! it, and the stack serves TCP and UDP under every policy.

use std::time::Duration;

use strata_tests::{
    spawn_app, status_field, wait_line, Netns, Stack, ECHO_10MB, LAYERS, UDP_ECHO_ROUNDS,
};

/// The CPUs in a list as `/proc/PID/status` writes it ("0-3,6").
fn expand(list: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<u32>().unwrap()..=b.parse().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

/// `Cpus_allowed_list` of process `pid` ("self" for this one).
fn cpus_of(pid: &str) -> Vec<u32> {
    expand(&status_field(pid, "Cpus_allowed_list:"))
}

/// SCHED_OTHER and SCHED_BATCH, as `/proc/PID/stat` gives the policy.
const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// The scheduling policy of process `pid` (field 41 of its stat line).
fn policy_of(pid: &str) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which ends at the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace()
        .nth(41 - 3)
        .unwrap()
        .parse()
        .unwrap()
}

/// Starts a stack with `cpu` as its `[cpu]` section, checks that layer k
/// (in start order) runs on `expect(k)` in scheduling policy `policy`,
/// and that TCP and UDP echo work.
fn placed_and_serving(cpu: &str, policy: u32, expect: impl Fn(usize, &str) -> Vec<u32>) {
    let ns = Netns::new();
    let st = Stack::up_with(&ns, cpu);
    let status = st.json("status");
    for (k, l) in status["layers"].as_array().unwrap().iter().enumerate() {
        let name = l["layer"].as_str().unwrap();
        let want = expect(k, name);
        assert_eq!(cpus_of(&l["pid"].to_string()), want, "{name} under {cpu}");
        assert_eq!(policy_of(&l["pid"].to_string()), policy, "{name}'s policy");
        let shown = expand(l["cpus"].as_str().expect("cpus shown"));
        assert_eq!(shown, want, "{name}: strata status");
    }
    assert_eq!(status["layers"].as_array().unwrap().len(), LAYERS.len());
    let mut echo = spawn_app(&st, "echo", &["--tcp", "0.0.0.0:7", "--udp", "0.0.0.0:7"]);
    wait_line(&mut echo, "serving UDP", Duration::from_secs(10));
    let udp = ns.run_ok(&["python3", "-c", UDP_ECHO_ROUNDS, "100"]);
    assert_eq!(udp.trim(), "ok");
    let tcp = ns.run_ok(&["python3", "-c", ECHO_10MB, "7"]);
    assert_eq!(tcp.trim(), "ok");
    for layer in LAYERS {
        assert_eq!(st.restarts(layer), 0, "{layer} restarted");
    }
}

#[test]
fn compact_puts_every_layer_on_the_first_cpu_and_a_layer_of_its_own_elsewhere() {
    let cpus = cpus_of("self");
    let (first, last) = (cpus[0], cpus[cpus.len() - 1]);
    placed_and_serving(
        &format!("[cpu]\npolicy = \"compact\"\n[cpu.layer]\ntcpd = \"{last}\"\n"),
        SCHED_BATCH,
        |_, name| vec![if name == "tcpd" { last } else { first }],
    );
}

#[test]
fn spread_places_the_layers_in_turn_and_normal_scheduling_is_kept() {
    let cpus = cpus_of("self");
    let cpu = "[cpu]\npolicy = \"spread\"\nscheduling = \"normal\"\n";
    placed_and_serving(cpu, SCHED_OTHER, |k, _| vec![cpus[k % cpus.len()]]);
}
