//! `strata capture` against tcpdump: a capture during a curl download
//! holds that connection's handshake, data and FIN and nothing its
//! filter leaves out; DNAT is seen on the wire before it and after
//! filterd; the rings between ipd and tcpd hold bare datagrams, which
//! tcpdump reads too; a capture whose reader stops loses packets from the
//! capture, counted, while the download goes on unharmed.

use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_tests::{
    bin, random_file, spawn_app, unique, wait_line, Bg, Netns, Stack, STACK_IP, STACK_IP6,
};

/// A bound for a hang, never reached by a working stack.
const PATIENCE: Duration = Duration::from_secs(60);

fn httpd(st: &Stack, dir: &Path) -> Bg {
    let mut h = spawn_app(
        st,
        "httpd",
        &["--root", dir.to_str().unwrap(), "--listen", "0.0.0.0:8080"],
    );
    wait_line(&mut h, "httpd: serving", Duration::from_secs(15));
    h
}

/// A temporary directory with a random file `big.bin` of `len` bytes;
/// (directory, its sha256).
fn served(len: u64) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(unique("strata-capture"));
    std::fs::create_dir_all(&dir).unwrap();
    let sha = random_file(&dir.join("big.bin"), len);
    (dir, sha)
}

/// `strata capture ARGS` in the background, its stderr on stdout;
/// returned once it says it is capturing.
fn capture(ns: &Netns, st: &Stack, args: &str) -> Bg {
    let cmd = format!(
        "exec {} capture --instance {} {args} 2>&1",
        bin("strata").display(),
        st.instance
    );
    let mut c = ns.spawn(&["sh", "-c", &cmd]);
    wait_line(&mut c, "capturing on", Duration::from_secs(10));
    c
}

/// Ends a capture as Ctrl-C would; what it said at the end.
fn interrupt(c: Bg) -> String {
    // SAFETY: kill takes no pointers; the pid is our child, not reaped.
    unsafe { libc::kill(c.child.id() as i32, libc::SIGINT) };
    c.wait_output(PATIENCE).expect("the capture ended")
}

/// `tcpdump -nr -` on FILE (given as its standard input, which no
/// AppArmor profile of tcpdump's restricts), one line per packet.
fn tcpdump(file: &Path) -> Vec<String> {
    let o = std::process::Command::new("tcpdump")
        .args(["-nr", "-"])
        .stdin(std::fs::File::open(file).expect("the capture file"))
        .output()
        .expect("tcpdump installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The "length N" (TCP payload bytes) of each tcpdump line that has one.
fn lengths(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| {
            let n = l.rsplit("length ").next()?;
            n[..n.find(|c: char| !c.is_ascii_digit()).unwrap_or(n.len())]
                .parse::<u64>()
                .ok()
        })
        .collect()
}

/// curl downloads `url` inside `ns` into `to`; its sha256.
fn download(ns: &Netns, url: &str, to: &Path) -> String {
    let out = ns.run_ok(&[
        "sh",
        "-c",
        &format!(
            "curl -sS --fail --max-time 120 -o {0} {url} && sha256sum {0}",
            to.display()
        ),
    ]);
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_capture_during_a_download_holds_its_handshake_data_and_fin() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let (dir, sha) = served(2_000_000);
    let _h = httpd(&st, &dir);
    let file = dir.join("cap.pcapng");
    // 128 bytes of each packet (every header): the whole download is a
    // few hundred short records, which the capture rings hold however
    // late the client reads them.
    let c = capture(
        &ns,
        &st,
        &format!("-s 128 -w {} tcp port 8080", file.display()),
    );
    // Traffic the filter leaves out.
    assert_eq!(
        strata_tests::ping(&ns, &["-c", "3", "-i", "0.2", STACK_IP]).received,
        3
    );
    let url = format!("http://{STACK_IP}:8080/big.bin");
    assert_eq!(download(&ns, &url, &dir.join("got.bin")), sha);
    let said = interrupt(c);
    assert!(said.contains("packets captured"), "{said}");
    let lines = tcpdump(&file);
    let has = |f: &str| lines.iter().any(|l| l.contains(f));
    assert!(has("Flags [S],"), "the SYN:\n{}", lines.join("\n"));
    assert!(has("Flags [S.],"), "the SYN-ACK");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Flags [F") || l.contains("Flags [FP")),
        "a FIN"
    );
    for l in &lines {
        assert!(l.contains(".8080"), "only port 8080: {l}");
    }
    // The data: the lengths of what the server sent add up to the file
    // (super-frames are captured whole, cut to the snap length).
    let from_server: Vec<String> = lines
        .iter()
        .filter(|l| l.contains(&format!("{STACK_IP}.8080 >")))
        .cloned()
        .collect();
    let payload: u64 = lengths(&from_server).iter().sum();
    assert!(payload >= 2_000_000, "{payload} bytes of the server's data");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dnat_shows_port_80_on_the_wire_and_8080_after_filterd() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let (dir, sha) = served(100_000);
    let _h = httpd(&st, &dir);
    st.filter("-t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080");
    let url = format!("http://{STACK_IP}:80/big.bin");
    for (at, port) in [("wire", 80), ("filterd-out", 8080)] {
        let file = dir.join(format!("{at}.pcap"));
        let c = capture(
            &ns,
            &st,
            &format!(
                "--at {at} --format pcap -w {} tcp and dst host {STACK_IP}",
                file.display()
            ),
        );
        assert_eq!(download(&ns, &url, &dir.join("got.bin")), sha);
        interrupt(c);
        let lines = tcpdump(&file);
        let syn = lines
            .iter()
            .find(|l| l.contains("Flags [S],"))
            .unwrap_or_else(|| panic!("no SYN at {at}:\n{}", lines.join("\n")));
        assert!(
            syn.contains(&format!("> {STACK_IP}.{port}:")),
            "at {at} the SYN goes to port {port}: {syn}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_capture_whose_reader_stops_loses_packets_from_the_capture_not_the_stack() {
    use std::os::unix::fs::OpenOptionsExt;
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let len = 50_000_000;
    let (dir, sha) = served(len);
    let _h = httpd(&st, &dir);
    // The capture writes into a pipe whose reader (this test) takes
    // nothing: the pipe fills, the client blocks, and the layers' capture
    // rings fill behind it.
    let fifo = dir.join("fifo");
    let o = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(o.success());
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let c = capture(&ns, &st, &format!("-w {}", fifo.display()));
    let url = format!("http://{STACK_IP}:8080/big.bin");
    assert_eq!(download(&ns, &url, &dir.join("got.bin")), sha, "identical");
    // The reader goes away: the client's blocked write fails, and it
    // reports what its capture lost.
    drop(reader);
    let said = c.wait_output(PATIENCE).expect("the capture ended");
    let lost: u64 = said
        .lines()
        .find(|l| l.contains("dropped by strata"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no report: {said}"));
    assert!(lost > 0, "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn segment_writes_super_segments_as_the_segments_the_wire_carries() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // Small enough that every record fits the capture rings whatever the
    // client's pace (a few 64 KiB super-segments).
    let len = 200_000;
    let (dir, sha) = served(len);
    let _h = httpd(&st, &dir);
    let url = format!("http://{STACK_IP}:8080/big.bin");
    // The TCP payload lengths tcpdump shows of the server's packets.
    let captured = |segment: &str| -> Vec<u64> {
        let file = dir.join(format!("seg{segment}.pcapng"));
        let args = format!("{segment} -w {} tcp src port 8080", file.display());
        let c = capture(&ns, &st, &args);
        assert_eq!(download(&ns, &url, &dir.join("got.bin")), sha);
        interrupt(c);
        lengths(&tcpdump(&file))
    };
    let held = captured("");
    assert!(held.iter().any(|&n| n > 1460), "super-segments: {held:?}");
    let cut = captured("--segment");
    let total: u64 = cut.iter().sum();
    assert!(total >= len, "{total} bytes of payload captured");
    assert!(
        cut.iter().all(|&n| n <= 1460),
        "every segment fits a 1500-byte MTU: {cut:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_rings_above_ipd_are_captured_as_bare_datagrams() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let len = 200_000;
    let (dir, sha) = served(len);
    let _h = httpd(&st, &dir);
    let file = dir.join("tcpd.pcapng");
    let args = format!(
        "--at tcpd-in --at tcpd-out --segment -w {} tcp port 8080",
        file.display()
    );
    let c = capture(&ns, &st, &args);
    let url = format!("http://{STACK_IP}:8080/big.bin");
    assert_eq!(download(&ns, &url, &dir.join("got.bin")), sha);
    interrupt(c);
    let lines = tcpdump(&file);
    let has = |f: &str| lines.iter().any(|l| l.contains(f));
    assert!(
        has(&format!("> {STACK_IP}.8080: Flags [S],")),
        "the SYN into tcpd:\n{}",
        lines.join("\n")
    );
    assert!(has(&format!("IP {STACK_IP}.8080 > ")), "tcpd's answers");
    let from_server: Vec<String> = lines
        .iter()
        .filter(|l| l.contains(&format!("{STACK_IP}.8080 >")))
        .cloned()
        .collect();
    let sizes = lengths(&from_server);
    assert!(sizes.iter().sum::<u64>() >= len, "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n <= 1460),
        "cut to the MTU: {sizes:?}"
    );

    for (args, says) in [
        (
            vec!["--at", "sockd-in"],
            "socket calls and stream data, not packets",
        ),
        (
            vec!["--at", "tcpd-in", "--at", "wire", "--format", "pcap"],
            "holds one link type",
        ),
    ] {
        let mut a = vec!["capture", "-w", "/dev/null"];
        a.extend(args.iter().copied());
        let o = st.strata(&a);
        assert!(!o.status.success(), "{a:?} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{a:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_capture_whose_client_is_killed_is_ended_by_the_launcher() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let file = std::env::temp_dir().join(format!("{}.pcapng", unique("strata-cap")));
    let args = format!("-w {}", file.display());
    let c = capture(&ns, &st, &args);
    // A second capture is refused while the first runs.
    let o = st.strata(&["capture", "-w", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("another capture"));
    drop(c); // SIGKILL: the client cannot turn its capture off
    st.wait_for("the launcher to end the orphan capture", PATIENCE, || {
        st.log_text().contains("ended without stopping")
    });
    // A new capture starts and sees traffic.
    let c = capture(&ns, &st, &format!("{args} -c 1 icmp"));
    assert_eq!(strata_tests::ping(&ns, &["-c", "1", STACK_IP]).received, 1);
    let said = c
        .wait_output(PATIENCE)
        .expect("the capture ended at its count");
    assert!(said.contains("1 packets captured"), "{said}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn an_icmp6_filter_keeps_the_ipv6_pings_and_leaves_ipv4_out() {
    let ns = Netns::new();
    let st = Stack::up_config(&ns, &strata_tests::tap_config6(""));
    st.wait_for("the stack's IPv6 address", Duration::from_secs(30), || {
        strata_tests::ping(&ns, &["-6", "-c", "1", "-W", "1", STACK_IP6]).received == 1
    });
    let dir = strata_tests::TempDir::new("strata-capture6");
    let file = dir.path().join("cap.pcapng");
    let c = capture(&ns, &st, &format!("-w {} icmp6", file.display()));
    let r = strata_tests::ping(&ns, &["-c", "3", "-i", "0.2", STACK_IP]);
    assert_eq!(r.received, 3, "{}", r.text);
    let r = strata_tests::ping(&ns, &["-6", "-c", "3", "-i", "0.2", STACK_IP6]);
    assert_eq!(r.received, 3, "{}", r.text);
    let said = interrupt(c);
    assert!(said.contains("packets captured"), "{said}");
    let lines = tcpdump(&file);
    let echoes = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
    assert!(echoes("ICMP6, echo request") >= 3, "{}", lines.join("\n"));
    assert!(echoes("ICMP6, echo reply") >= 3, "{}", lines.join("\n"));
    assert!(
        lines.iter().all(|l| l.contains("IP6")),
        "{}",
        lines.join("\n")
    );
}
