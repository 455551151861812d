//! Recovery: a TCP transfer carries on while the layer that implements it
//! is killed.

use std::time::Duration;
use strata_tests::{spawn_app, unique, wait_line, Netns, Stack, STACK_IP};

fn download_while_killing(layers: &[&str]) {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let dir = std::env::temp_dir().join(unique("strata-rec"));
    std::fs::create_dir_all(&dir).unwrap();
    let len: u64 = 50_000_000;
    let want = strata_tests::random_file(&dir.join("big.bin"), len);
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
    wait_line(&mut httpd, "httpd: serving", Duration::from_secs(15));
    let o = st.strata(&["qdisc", "strata0", "egress", "rate", "40mbit"]);
    assert!(o.status.success());
    let got = dir.join("got.bin");
    let mut curl = ns.spawn(&[
        "bash",
        "-c",
        &format!(
            "curl -sS --fail --max-time 300 -o {} http://{STACK_IP}:8080/big.bin && sha256sum {0}",
            got.display()
        ),
    ]);
    // Kill k once the download holds k+1 shares of the file's first half
    // (what curl wrote so far): every kill lands mid-transfer however
    // fast or slow the machine, the rate limit keeping the second half
    // from being over in an instant.
    let shares = layers.len() as u64 + 1;
    for (k, layer) in layers.iter().enumerate() {
        let mark = (k as u64 + 1) * len / (2 * shares);
        st.wait_for(
            &format!("{mark} bytes downloaded before kill {k}"),
            Duration::from_secs(60),
            || {
                assert!(curl.alive(), "ended before kill {k}");
                std::fs::metadata(&got).map_or(0, |m| m.len()) >= mark
            },
        );
        let before = st.restarts(layer);
        let o = st.strata(&["kill", layer]);
        assert!(o.status.success());
        st.wait_for("restart", Duration::from_secs(10), || {
            st.restarts(layer) > before
        });
    }
    let out = curl
        .wait_output(Duration::from_secs(330))
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
