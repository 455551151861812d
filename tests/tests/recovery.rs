//! Recovery: a TCP transfer carries on while the layer that implements it
//! is killed.

use std::time::Duration;
use strata_tests::{spawn_app, unique, wait_line, Netns, Stack, STACK_IP};

fn download_while_killing(layers: &[&str]) {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let dir = std::env::temp_dir().join(unique("strata-rec"));
    std::fs::create_dir_all(&dir).unwrap();
    let want = strata_tests::random_file(&dir.join("big.bin"), 50_000_000);
    let mut httpd = spawn_app(
        &st,
        "httpd",
        &[
            "--root",
            dir.to_str().unwrap(),
            "--listen",
            "0.0.0.0:8080",
            "--timeout",
            "30",
        ],
    );
    wait_line(&mut httpd, "httpd: serving", Duration::from_secs(5));
    let o = st.strata(&["qdisc", "strata0", "egress", "rate", "40mbit"]);
    assert!(o.status.success());
    let mut curl = ns.spawn(&[
        "bash",
        "-c",
        &format!("curl -sS --fail --max-time 60 http://{STACK_IP}:8080/big.bin | sha256sum"),
    ]);
    for (k, layer) in layers.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(700));
        assert!(curl.alive(), "ended before kill {k}");
        let before = st.restarts(layer);
        let o = st.strata(&["kill", layer]);
        assert!(o.status.success());
        st.wait_for("restart", Duration::from_secs(10), || {
            st.restarts(layer) > before
        });
    }
    let out = curl
        .wait_output(Duration::from_secs(70))
        .expect("curl finished");
    eprintln!("{}", st.log_text());
    assert_eq!(out.split_whitespace().next(), Some(want.as_str()), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_tcpd_during_download() {
    download_while_killing(&["tcpd"]);
}

#[test]
fn kill_sockd_during_download() {
    download_while_killing(&["sockd"]);
}

#[test]
fn kill_every_layer_in_turn_during_download() {
    download_while_killing(&[
        "tcpd", "sockd", "ipd", "netdevd", "filterd", "driverd0", "udpd", "sockd", "tcpd",
    ]);
}
