//! Recovery: a TCP transfer, over IPv4 or IPv6, carries on while the
//! layer that implements it is killed.

use std::time::Duration;
use strata_tests::{spawn_app, tap_config6, unique, wait_line, Netns, Stack, STACK_IP, STACK_IP6};

/// curl downloads 50 MB from examples/httpd, over IPv6 when `v6`, while
/// each of `layers` is killed in turn.
fn download_while_killing(layers: &[&str], v6: bool) {
    let ns = Netns::new();
    let st = if v6 {
        let st = Stack::up_config(&ns, &tap_config6(""));
        st.wait_dad(STACK_IP6);
        st
    } else {
        Stack::up(&ns)
    };
    let (listen, host) = if v6 {
        ("[::]:8080", format!("[{STACK_IP6}]"))
    } else {
        ("0.0.0.0:8080", STACK_IP.to_string())
    };
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
            listen,
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
            "curl -g -sS --fail --max-time 300 -o {} http://{host}:8080/big.bin && sha256sum {0}",
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
    download_while_killing(&["tcpd"], false);
}

#[test]
fn kill_sockd_during_download() {
    download_while_killing(&["sockd"], false);
}

#[test]
fn kill_every_layer_in_turn_during_download() {
    download_while_killing(
        &[
            "tcpd", "sockd", "ipd", "netdevd", "filterd", "driverd0", "udpd", "sockd", "tcpd",
        ],
        false,
    );
}

#[test]
fn kill_every_layer_in_turn_during_an_ipv6_download() {
    download_while_killing(
        &[
            "tcpd", "sockd", "ipd", "netdevd", "filterd", "driverd0", "tcpd",
        ],
        true,
    );
}
