//! No input lost with a dying transport: what ipd had handed tcpd or udpd
//! and they had not finished when they died is handed to their next
//! instance. The test-only fault hook (`STRATA_CRASH_ON=LAYER:once:HEX`)
//! makes the layer's first instance abort on the input that carries the
//! pattern; the datagram or segment must still arrive, exactly once.
//! An input that kills the layer every time is replayed once, kills it a
//! second time, and is then quarantined instead of replayed again.

use std::time::Duration;
use strata_tests::{layer_of, spawn_app, wait_line, Netns, Stack, HOST_IP, STACK_IP};

const PATTERN: &[u8] = b"STRATA-REPLAY-51c2";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn up_with_hook(ns: &Netns, hook: &str) -> Stack {
    Stack::up_config_env(
        ns,
        &format!(
            "[[interface]]\nname = \"strata0\"\ndriver = \"tap\"\n\
             addresses = [\"{STACK_IP}/24\"]\nhost_addresses = [\"{HOST_IP}/24\"]\n"
        ),
        &[("STRATA_CRASH_ON", hook)],
    )
}

/// One UDP datagram (hex) to the echo server, sent once; prints what came
/// back, or "timeout" (a bound for a hang, never reached by a working
/// stack).
const UDP_ONCE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(30.0)
s.connect((sys.argv[1], 7))
s.send(bytes.fromhex(sys.argv[2]))
try:
    print("got", s.recv(4096).hex())
except socket.timeout:
    print("timeout")
"#;

/// A TCP echo of a message (hex), then end of stream; prints what came
/// back.
const TCP_ONCE: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], 7), timeout=60)
s.sendall(bytes.fromhex(sys.argv[2]))
s.shutdown(socket.SHUT_WR)
back = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    back += d
print("got", back.hex())
"#;

fn echo_server(st: &Stack, proto: &str) -> strata_tests::Bg {
    let mut echo = spawn_app(st, "echo", &[proto, "0.0.0.0:7"]);
    let says = if proto == "--udp" {
        "serving UDP"
    } else {
        "serving TCP"
    };
    wait_line(&mut echo, says, Duration::from_secs(15));
    echo
}

#[test]
fn a_datagram_udpd_died_holding_is_delivered_by_its_next_instance() {
    let ns = Netns::new();
    let st = up_with_hook(&ns, &format!("udpd:once:{}", hex(PATTERN)));
    let _echo = echo_server(&st, "--udp");
    let payload = [b"udp ".as_slice(), PATTERN, b" once"].concat();
    let out = ns.run_ok(&["python3", "-c", UDP_ONCE, STACK_IP, &hex(&payload)]);
    // UDP has no retransmission: only the replay can have delivered it.
    assert_eq!(
        out.trim(),
        format!("got {}", hex(&payload)),
        "{}",
        st.log_text()
    );
    assert_eq!(st.restarts("udpd"), 1, "{}", st.log_text());
    assert!(st.counter("udpd", "loop_replayed") >= 1);
    assert_eq!(
        layer_of(&st.json("status"), "udpd")["quarantined_inputs"],
        0
    );
}

#[test]
fn a_segment_tcpd_died_holding_is_taken_by_its_next_instance_exactly_once() {
    let ns = Netns::new();
    let st = up_with_hook(&ns, &format!("tcpd:once:{}", hex(PATTERN)));
    let _echo = echo_server(&st, "--tcp");
    let msg = [b"tcp ".as_slice(), PATTERN, b" once".as_slice()].concat();
    let out = ns.run_ok(&["python3", "-c", TCP_ONCE, STACK_IP, &hex(&msg)]);
    // Identical: neither lost nor doubled by the replay.
    assert_eq!(
        out.trim(),
        format!("got {}", hex(&msg)),
        "{}",
        st.log_text()
    );
    assert_eq!(st.restarts("tcpd"), 1, "{}", st.log_text());
    assert!(
        st.counter("tcpd", "loop_replayed") >= 1,
        "the segment came back by replay"
    );
}

#[test]
fn an_input_that_kills_twice_is_replayed_once_then_quarantined() {
    let ns = Netns::new();
    let st = up_with_hook(&ns, &format!("udpd:{}", hex(PATTERN)));
    let _echo = echo_server(&st, "--udp");
    let poison = [b"udp ".as_slice(), PATTERN].concat();
    // Sent once: the second death comes from the replay.
    let send = "import socket,sys\nsocket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(bytes.fromhex(sys.argv[2]),(sys.argv[1],7))";
    ns.run_ok(&["python3", "-c", send, STACK_IP, &hex(&poison)]);
    st.wait_for("udpd's input quarantined", Duration::from_secs(30), || {
        st.log_text().contains("died twice on the same input")
    });
    let udpd = layer_of(&st.json("status"), "udpd").clone();
    assert_eq!(udpd["restarts"], 2, "{}", st.log_text());
    assert_eq!(udpd["quarantined_inputs"], 1);
    assert!(
        st.counter("udpd", "quarantined") >= 1,
        "dropped, not replayed a third time"
    );
    // The rest goes on.
    let fine = b"a normal datagram".to_vec();
    let out = ns.run_ok(&["python3", "-c", UDP_ONCE, STACK_IP, &hex(&fine)]);
    assert_eq!(out.trim(), format!("got {}", hex(&fine)));
    assert_eq!(st.restarts("udpd"), 2);
}
