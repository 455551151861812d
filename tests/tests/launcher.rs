//! The launcher refuses bad configuration clearly and leaves nothing
//! half-started.

use strata_tests::{bin, unique, Netns};

#[test]
fn bad_configuration_is_refused_naming_the_field_and_nothing_is_left() {
    let ns = Netns::new();
    let inst = unique("bad");
    let cases = [
        (
            "[[interface]]\nname = \"strata0\"\nmac = \"zz:00\"\naddresses = [\"10.1.0.2/24\"]\n",
            "interface[0].mac",
        ),
        (
            "[[interface]]\nname = \"strata0\"\naddresses = [\"10.1.0.2/33\"]\n",
            "interface[0].addresses[0]",
        ),
        (
            "[[interface]]\nname = \"strata0\"\naddresses = [\"10.1.0.2/24\"]\n[[route]]\nto = \"default\"\nvia = \"10.1.0.1\"\ndev = \"eth9\"\n",
            "route[0].dev",
        ),
        ("[[interface]]\nname = \"strata0\"\naddresses = [\"10.1.0.2/24\"]\n[limits]\nring_size = 100\n", "limits.ring_size"),
        (
            "[[interface]]\nname = \"strata0\"\naddresses = [\"10.1.0.2/24\"]\n[security]\nlayer_uid_base = 5\n",
            "security.layer_uid_base",
        ),
        (
            "[[interface]]\nname = \"strata0\"\naddresses = [\"10.1.0.2/24\"]\n[cpu]\npolicy = \"fast\"\n",
            "cpu.policy",
        ),
        (
            "[[interface]]\nname = \"strata0\"\naddresses = [\"10.1.0.2/24\"]\n[cpu]\nscheduling = \"fifo\"\n",
            "cpu.scheduling",
        ),
        (
            "[[interface]]\nname = \"strata0\"\naddresses = [\"10.1.0.2/24\"]\n[cpu.layer]\nfoo = \"0\"\n",
            "cpu.layer.foo",
        ),
        // A CPU this machine does not let the launcher use.
        (
            "[[interface]]\nname = \"strata0\"\naddresses = [\"10.1.0.2/24\"]\n[cpu]\ncpus = \"1023\"\n",
            "cpu.cpus",
        ),
        // The block 65530..=65546 holds nobody's 65534: the layers must
        // share their ids with no one.
        (
            "[[interface]]\nname = \"strata0\"\naddresses = [\"10.1.0.2/24\"]\n[security]\nlayer_uid_base = 65530\n",
            "id 65534",
        ),
    ];
    for (body, field) in cases {
        let path = std::env::temp_dir().join(format!("{inst}.toml"));
        std::fs::write(&path, format!("instance = \"{inst}\"\n{body}")).unwrap();
        let o = ns
            .cmd(bin("strata").to_str().unwrap())
            .args(["up", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "accepted:\n{body}");
        assert!(err.contains(field), "error does not name {field}: {err}");
        std::fs::remove_file(&path).unwrap();
    }
    assert!(!std::path::Path::new(&format!("/dev/shm/strata-{inst}")).exists());
    assert!(!std::path::Path::new(&format!("/run/strata/{inst}")).exists());
    let links = ns.run_ok(&["ip", "-o", "link"]);
    assert!(!links.contains("strata0"), "{links}");
}

#[test]
fn queries_without_a_running_stack_fail_at_once_with_a_clear_error() {
    let o = std::process::Command::new(bin("strata"))
        .args(["--instance", "no-such-instance", "status"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no strata instance \"no-such-instance\" is running"),
        "{err}"
    );
}
