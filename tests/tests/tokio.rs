//! libsock's tokio types against the kernel: hyper serving curl over
//! strata (also across a restart of sockd), an async client echoing
//! through a kernel server with its reader and writer in separate tasks,
//! UDP both ways, refused connections, and futures dropped half-way
//! (cancellation) losing nothing.

use std::sync::Arc;
use std::time::Duration;

use libsock::tokio::{TcpListener, TcpStream, UdpSocket};
use strata_tests::{
    kernel_echo_server, pattern, spawn_app, wait_line, Netns, Stack, HOST_IP, STACK_IP,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A bound for a hang, never reached by a working stack.
const PATIENCE: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn builder(st: &Stack) -> libsock::Builder {
    libsock::Builder::new().instance(st.instance.clone())
}

/// An HTTP/1.1 GET of `/bytes/N` from hyper-hello on port 8080 that
/// reads the first megabyte, says "half", waits until the FIFO (third
/// argument) is written, then reads the rest; prints the body's sha256.
const HALF_THEN_REST: &str = r#"
import hashlib, socket, sys
host, n, fifo = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, 8080), timeout=60)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: strata\r\nConnection: close\r\n\r\n" % n)
data = b""
while len(data) < 1 << 20:
    d = s.recv(65536)
    if not d:
        break
    data += d
print("half", flush=True)
open(fifo).read()
while True:
    d = s.recv(1 << 20)
    if not d:
        break
    data += d
body = data.split(b"\r\n\r\n", 1)[1]
print("body", len(body), hashlib.sha256(body).hexdigest(), flush=True)
"#;

/// What hyper-hello's `/bytes/N` answers.
fn bytes_body(n: usize) -> Vec<u8> {
    (0..n).map(|i| b"0123456789abcdef"[i % 16]).collect()
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(b))
}

#[test]
fn hyper_on_strata_serves_curl_also_across_a_sockd_restart() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let mut h = spawn_app(&st, "hyper-hello", &["--listen", "0.0.0.0:8080"]);
    wait_line(&mut h, "hyper-hello: serving", Duration::from_secs(15));
    let out = ns.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        &format!("http://{STACK_IP}:8080/"),
    ]);
    assert_eq!(out, "hello from strata\n");
    // Ten at once.
    let n = 300_000;
    let many = ns.run_ok(&[
        "sh",
        "-c",
        &format!(
            "seq 10 | xargs -P 10 -I{{}} sh -c 'curl -sS --fail --max-time 60 http://{STACK_IP}:8080/bytes/{n} | sha256sum'"
        ),
    ]);
    let want = sha(&bytes_body(n));
    assert_eq!(
        many.lines().filter(|l| l.starts_with(&want)).count(),
        10,
        "{many}"
    );
    // A download that sockd's restart interrupts carries on. The client
    // stops reading after the first megabyte and waits on a FIFO, so the
    // kill lands in the middle however fast the machine is.
    let big = 10_000_000;
    let fifo = std::env::temp_dir().join(strata_tests::unique("strata-go"));
    let o = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(o.success());
    let mut dl = ns.spawn(&[
        "python3",
        "-c",
        HALF_THEN_REST,
        STACK_IP,
        &big.to_string(),
        fifo.to_str().unwrap(),
    ]);
    wait_line(&mut dl, "half", PATIENCE);
    let before = st.kill_layer("sockd");
    st.wait_restarted("sockd", before);
    std::fs::write(&fifo, b"go").unwrap();
    let got = dl.wait_output(PATIENCE).expect("the download ended");
    let _ = std::fs::remove_file(&fifo);
    assert!(
        got.contains(&sha(&bytes_body(big))),
        "{got}\n{}",
        st.log_text()
    );
    let out = ns.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        &format!("http://{STACK_IP}:8080/nope"),
    ]);
    assert_eq!(out, "not found\n");
}

#[test]
fn an_async_client_echoes_through_the_kernel_with_reader_and_writer_apart() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let _server = kernel_echo_server(&ns, 7401, 1, Duration::from_secs(15));
    let data = Arc::new(pattern(3_000_000, 7401));
    let back = runtime().block_on(async {
        let s = TcpStream::connect_with(&builder(&st), (HOST_IP, 7401)).await?;
        assert_eq!(s.peer_addr()?.to_string(), format!("{HOST_IP}:7401"));
        let (mut r, mut w) = tokio::io::split(s);
        let d = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&d).await?;
            w.shutdown().await
        });
        let mut back = Vec::new();
        tokio::time::timeout(PATIENCE, r.read_to_end(&mut back))
            .await
            .expect("the echo ended")?;
        writer.await.unwrap()?;
        std::io::Result::Ok(back)
    });
    let back = back.expect("echo");
    assert_eq!(back.len(), data.len());
    assert!(back == *data, "the echo differs");
}

#[test]
fn udp_both_ways_refused_connects_and_dropped_futures() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // A kernel UDP echo.
    let mut udp_echo = ns.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('{HOST_IP}',7402))\nprint('ready',flush=True)\n\
             while True:\n    d,a=s.recvfrom(65536)\n    s.sendto(d,a)"
        ),
    ]);
    wait_line(&mut udp_echo, "ready", Duration::from_secs(15));
    runtime().block_on(async {
        let b = builder(&st);
        // UDP through the kernel's echo, one task sending, one receiving.
        let u = Arc::new(UdpSocket::bind_with(&b, "0.0.0.0:0").await.unwrap());
        // One exchange first: ipd holds only three datagrams for a
        // neighbour it is still resolving (Linux's unres_qlen of old).
        u.send_to(b"warm up", (HOST_IP, 7402)).await.unwrap();
        let mut first = [0u8; 64];
        let (n, _) = tokio::time::timeout(PATIENCE, u.recv_from(&mut first))
            .await
            .expect("the first echo")
            .unwrap();
        assert_eq!(&first[..n], b"warm up");
        let rx = u.clone();
        let got = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 2048];
            while seen.len() < 50 {
                let (n, from) = rx.recv_from(&mut buf).await.unwrap();
                assert_eq!(from.to_string(), format!("{HOST_IP}:7402"));
                seen.push(buf[..n].to_vec());
            }
            seen
        });
        for i in 0..50u8 {
            // 50 × 100 bytes: far below the socket's receive ring.
            u.send_to(&[i; 100], (HOST_IP, 7402)).await.unwrap();
        }
        let seen = tokio::time::timeout(PATIENCE, got)
            .await
            .expect("echoes")
            .unwrap();
        for (i, d) in seen.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 100]);
        }

        // Nobody listens on that port: refused, as tokio says it.
        let e = TcpStream::connect_with(&b, (HOST_IP, 7499))
            .await
            .err()
            .expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);

        // An accept dropped before a connection came takes nothing: the
        // connection that comes after goes to the next accept.
        let l = TcpListener::bind_with(&b, "0.0.0.0:7403").await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(20), l.accept())
            .await
            .is_err());
        let client = tokio::spawn({
            let b = b.clone();
            async move {
                let mut c = TcpStream::connect_with(&b, (STACK_IP, 7403)).await.unwrap();
                c.write_all(b"first ").await.unwrap();
                c
            }
        });
        let (mut s, _) = tokio::time::timeout(PATIENCE, l.accept())
            .await
            .unwrap()
            .unwrap();
        let mut c = client.await.unwrap();
        // A read dropped half-way loses nothing either.
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"first ");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf))
                .await
                .is_err()
        );
        c.write_all(b"second").await.unwrap();
        c.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, b"second");
    });
}
