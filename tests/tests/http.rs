//! HTTP over strata's TCP against the Linux kernel: the kernel's `curl`
//! downloads from examples/httpd, a libsock client downloads from the
//! kernel's `python3 -m http.server`, keep-alive, and httpd's refusals.
//!
//! The bulk transfers move `STRATA_HTTP_BYTES` bytes (default 200 MB).

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use strata_tests::{spawn_app, wait_line, Bg, Netns, Stack, TempDir, HOST_IP, STACK_IP};

/// Bytes of the big file each download test moves.
fn big_bytes() -> u64 {
    std::env::var("STRATA_HTTP_BYTES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(200_000_000)
}

/// Byte `i` of the test files: a hash of `i / 8`, so that no shift,
/// repeat or loss of any length can reproduce the right bytes.
fn word(w: u64) -> u64 {
    let mut z = w.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the pattern bytes starting at offset `at`.
fn pattern(at: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        let i = at + k as u64;
        *b = (word(i / 8) >> (8 * (i % 8))) as u8;
    }
}

/// Writes a pattern file of `len` bytes.
fn make_file(path: &Path, len: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        pattern(at, &mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        at += n as u64;
    }
    f.flush().unwrap();
}

fn start_httpd(st: &Stack, root: &str) -> Bg {
    let mut httpd = spawn_app(
        st,
        "httpd",
        &[
            "--root",
            root,
            "--listen",
            "0.0.0.0:8080",
            "--timeout",
            "20",
        ],
    );
    wait_line(&mut httpd, "httpd: serving", Duration::from_secs(15));
    httpd
}

/// After a transfer under faults: the faults really happened, and TCP
/// repaired them: by retransmitting when strata sent, by queueing out of
/// order segments until the kernel's retransmission filled the hole when
/// strata received.
fn assert_faults_were_repaired(st: &Stack, strata_sent: bool) {
    let tcpd = [
        "retrans_segs",
        "rto_expired",
        "lost_retrans",
        "tlp_probes",
        "fast_retrans",
        "sack_recoveries",
        "ooo_segs",
        "dup_data",
    ]
    .map(|c| format!("{c}={}", st.counter("tcpd", c)));
    eprintln!("tcpd: {}", tcpd.join(" "));
    for dir in ["", "ingress_"] {
        for c in ["fault_loss", "fault_reorder", "fault_duplicate"] {
            let c = format!("{dir}{c}");
            assert!(st.counter("netdevd", &c) > 0, "no {c} was injected");
        }
    }
    if strata_sent {
        assert!(
            st.counter("tcpd", "retrans_segs") > 0,
            "nothing retransmitted"
        );
    } else {
        assert!(st.counter("tcpd", "ooo_segs") > 0, "nothing out of order");
    }
}

#[test]
fn curl_downloads_a_big_file_from_httpd_intact() {
    curl_download(false);
}

#[test]
fn curl_downloads_a_big_file_from_httpd_intact_under_faults() {
    curl_download(true);
}

fn curl_download(faults: bool) {
    let len = big_bytes();
    let dir = TempDir::new("strata-http");
    let file = dir.path().join("big.bin");
    make_file(&file, len);
    let want = strata_tests::sha256_file(&file);

    let ns = Netns::new();
    let st = Stack::up(&ns);
    if faults {
        st.inject_faults();
    }
    let mut httpd = start_httpd(&st, dir.path_str());
    let t = Instant::now();
    // curl's exit status survives the pipe; its size and status line too.
    let out = ns.run_ok(&[
        "bash",
        "-c",
        &format!(
            "set -o pipefail; curl -sS --fail --max-time 300 \
             -w '%{{stderr}}%{{http_code}} %{{size_download}}\\n' \
             http://{STACK_IP}:8080/big.bin 2>/tmp/{0}.curl | sha256sum; \
             rc=$?; cat /tmp/{0}.curl; rm -f /tmp/{0}.curl; exit $rc",
            st.instance
        ),
    ]);
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "curl <- httpd (faults: {faults}): {len} bytes in {secs:.2} s ({:.2} Gbit/s)",
        len as f64 * 8.0 / secs / 1e9
    );
    let mut lines = out.lines();
    let got = lines.next().unwrap().split_whitespace().next().unwrap();
    assert_eq!(lines.next(), Some(format!("200 {len}").as_str()), "{out}");
    assert_eq!(got, want, "sha256 differs");
    assert!(httpd.alive(), "httpd died");
    if faults {
        assert_faults_were_repaired(&st, true);
    }
}

/// Parses an HTTP/1.x response head: (status, content-length).
fn response_head(head: &[u8]) -> (u16, Option<u64>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {text:?}"));
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok());
    (status, len)
}

#[test]
fn a_libsock_client_downloads_a_big_file_from_python_http_server_intact() {
    libsock_download(false);
}

#[test]
fn a_libsock_client_downloads_a_big_file_from_python_http_server_intact_under_faults() {
    libsock_download(true);
}

fn libsock_download(faults: bool) {
    let len = big_bytes();
    let dir = TempDir::new("strata-http");
    make_file(&dir.path().join("big.bin"), len);

    let ns = Netns::new();
    let st = Stack::up(&ns);
    if faults {
        st.inject_faults();
    }
    let _server = ns.http_server(HOST_IP, 8000, dir.path(), Duration::from_secs(10));

    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let t = Instant::now();
    let mut s = stack
        .builder()
        .tcp_connect(format!("{HOST_IP}:8000").as_str())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        format!("GET /big.bin HTTP/1.1\r\nHost: {HOST_IP}:8000\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();

    // The head, then the body checked against the pattern as it comes.
    let mut buf = vec![0u8; 256 << 10];
    let mut want = vec![0u8; 256 << 10];
    let mut head = Vec::new();
    let body_start = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the response head");
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(head.len() < 64 << 10, "no end of head");
    };
    let (status, clen) = response_head(&head[..body_start]);
    assert_eq!(status, 200);
    assert_eq!(clen, Some(len));
    let mut got = 0u64;
    let mut check = |data: &[u8], got: &mut u64| {
        let want = &mut want[..data.len()];
        pattern(*got, want);
        assert!(
            data == &want[..],
            "body differs in bytes {}..{}",
            *got,
            *got + data.len() as u64
        );
        *got += data.len() as u64;
    };
    check(&head[body_start..], &mut got);
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(got + n as u64 <= len, "more body than Content-Length");
        check(&buf[..n], &mut got);
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "libsock <- python http.server (faults: {faults}): {got} bytes in {secs:.2} s ({:.2} Gbit/s)",
        got as f64 * 8.0 / secs / 1e9
    );
    assert_eq!(got, len, "short body");
    if faults {
        assert_faults_were_repaired(&st, false);
    }
}

#[test]
fn curl_reuses_one_connection_for_two_requests() {
    let dir = TempDir::new("strata-http");
    std::fs::write(dir.path().join("a.txt"), "first\n").unwrap();
    std::fs::write(dir.path().join("b.txt"), "second\n").unwrap();
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let _httpd = start_httpd(&st, dir.path_str());
    let base = format!("http://{STACK_IP}:8080");
    // Keep-alive: the second transfer makes no new connection.
    let out = ns.run_ok(&[
        "curl",
        "-sS",
        "--fail",
        "-w",
        " connects=%{num_connects}\n",
        &format!("{base}/a.txt"),
        &format!("{base}/b.txt"),
    ]);
    assert_eq!(out, "first\n connects=1\nsecond\n connects=0\n");
    // Connection: close is honoured: a new connection each time.
    let out = ns.run_ok(&[
        "curl",
        "-sS",
        "--fail",
        "-H",
        "Connection: close",
        "-w",
        " connects=%{num_connects}\n",
        &format!("{base}/a.txt"),
        &format!("{base}/b.txt"),
    ]);
    assert_eq!(out, "first\n connects=1\nsecond\n connects=1\n");
}

/// Sends each raw request on a connection of its own and prints the
/// status line of every response until the server closes, or stays
/// quiet for 5 s after a status line came (`open`; 20 s without one: a
/// bound for a hang). The quiet time runs from the last byte, so a slow
/// answer is waited for, and a close that follows it is seen.
const RAW: &str = r#"
import re, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
for req in sys.argv[3:]:
    s = socket.create_connection((host, port), timeout=20)
    s.settimeout(0.2)
    s.sendall(req.encode("latin-1").decode("unicode_escape").encode("latin-1"))
    data = b""
    closed = False
    start = last = time.time()
    while True:
        now = time.time()
        if re.search(rb"HTTP/1\.1 \d{3} ", data):
            if now - last > 5:
                break
        elif now - start > 20:
            break
        try:
            b = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed = True
            break
        if not b:
            closed = True
            break
        data += b
        last = time.time()
    lines = re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", data)
    print(" | ".join(l.decode() for l in lines), "closed" if closed else "open", len(data))
    s.close()
"#;

#[test]
fn httpd_answers_bad_requests_with_errors_and_stays_up() {
    let dir = TempDir::new("strata-http");
    std::fs::write(dir.path().join("a.txt"), "first\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub").join("index.html"), "<p>hi</p>\n").unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("escape")).unwrap();
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut httpd = start_httpd(&st, dir.path_str());
    let h = "Host: x\\r\\n";
    let reqs = [
        format!("GET /a.txt HTTP/1.1\\r\\n{h}Connection: close\\r\\n\\r\\n"),
        format!("HEAD /a.txt HTTP/1.1\\r\\n{h}Connection: close\\r\\n\\r\\n"),
        format!("GET /missing HTTP/1.1\\r\\n{h}Connection: close\\r\\n\\r\\n"),
        format!("DELETE /a.txt HTTP/1.1\\r\\n{h}Connection: close\\r\\n\\r\\n"),
        format!("GET /../../etc/passwd HTTP/1.1\\r\\n{h}Connection: close\\r\\n\\r\\n"),
        format!("GET /%2e%2e/etc/passwd HTTP/1.1\\r\\n{h}Connection: close\\r\\n\\r\\n"),
        format!("GET /escape/passwd HTTP/1.1\\r\\n{h}Connection: close\\r\\n\\r\\n"),
        format!("GET /sub/ HTTP/1.1\\r\\n{h}Connection: close\\r\\n\\r\\n"),
        // Pipelined: two answers on one connection, then close.
        format!("GET /a.txt HTTP/1.1\\r\\n{h}\\r\\nGET /sub HTTP/1.1\\r\\n{h}Connection: close\\r\\n\\r\\n"),
        // Garbage and malformed heads: 400 and the connection closes.
        "\\x16\\x03\\x01\\x00\\xa5\\x01\\x00\\x00\\xa1\\x03\\x03\\r\\n\\r\\n".to_string(),
        "GET / HTTP/1.1\\r\\n\\r\\n".to_string(),
        format!("GET /a.txt HTTP/1.1\\r\\n{h} bad: fold\\r\\n\\r\\n"),
        format!("GET /a.txt HTTP/3.0\\r\\n{h}\\r\\n"),
        format!("GET /a.txt HTTP/1.1\\r\\n{h}X: {}\\r\\n\\r\\n", "y".repeat(20000)),
        // No Connection: close, so it stays open until the client goes.
        format!("GET /a.txt HTTP/1.1\\r\\n{h}\\r\\n"),
    ];
    let mut args = vec!["python3", "-c", RAW, STACK_IP, "8080"];
    args.extend(reqs.iter().map(String::as_str));
    let out = ns.run_ok(&args);
    let lines: Vec<&str> = out.lines().collect();
    let status: Vec<String> = lines
        .iter()
        .map(|l| l.rsplit_once(' ').map_or("", |p| p.0).to_string())
        .collect();
    let expect = [
        "HTTP/1.1 200 OK closed",
        "HTTP/1.1 200 OK closed",
        "HTTP/1.1 404 Not Found closed",
        "HTTP/1.1 405 Method Not Allowed closed",
        "HTTP/1.1 403 Forbidden closed",
        "HTTP/1.1 403 Forbidden closed",
        "HTTP/1.1 403 Forbidden closed",
        "HTTP/1.1 200 OK closed",
        "HTTP/1.1 200 OK | HTTP/1.1 200 OK closed",
        "HTTP/1.1 400 Bad Request closed",
        "HTTP/1.1 400 Bad Request closed",
        "HTTP/1.1 400 Bad Request closed",
        "HTTP/1.1 505 HTTP Version Not Supported closed",
        "HTTP/1.1 431 Request Header Fields Too Large closed",
        "HTTP/1.1 200 OK open",
    ];
    for (i, e) in expect.iter().enumerate() {
        assert_eq!(
            status.get(i).map(String::as_str),
            Some(*e),
            "request {i}: {:?}\n{out}",
            reqs[i]
        );
    }
    // HEAD: the GET's head, no body.
    let len = |l: &str| l.rsplit(' ').next().unwrap().parse::<usize>().unwrap();
    assert_eq!(len(lines[0]), len(lines[1]) + "first\n".len(), "{out}");
    assert!(httpd.alive(), "httpd died");
}
