//! Malformed IPv4 from the kernel side is counted as drops by reason and
//! disturbs nothing.

use strata_tests::{ping_all, Netns, Stack, STACK_IP};

/// Sends hand-made frames to the stack through a raw packet socket on the
/// kernel side of the TAP: five of each kind.
const INJECT: &str = r#"
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def ip(ttl=64, total=None, payload=b"\x08\x00\xf7\xff\x00\x00\x00\x00", good=True):
    total = total if total is not None else 20 + len(payload)
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, ttl, 1, 0,
                    socket.inet_aton("10.77.0.1"), socket.inet_aton("10.77.0.2"))
    c = csum(h)
    if not good: c ^= 0x5555
    return h[:10] + struct.pack("!H", c) + h[12:] + payload
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("strata0", 0))
src = s.getsockname()[4]
eth = bytes.fromhex("025354000001") + src + b"\x08\x00"
kinds = {
    "bad_checksum": ip(good=False),
    "truncated": ip()[:10],
    "total_len_exceeds_frame": ip(total=400),
    "ttl_zero": ip(ttl=0),
    "bad_version": bytes([0x65]) + ip()[1:],
}
for name, pkt in kinds.items():
    frame = eth + pkt
    # Short frames get padded by nobody on a TAP: pad like a NIC would,
    # except the truncated one, whose point is its shortness... which the
    # total length check then sees as well, so pad that one too.
    frame = frame + b"\0" * max(0, 60 - len(frame)) if name != "truncated" else frame
    for _ in range(5):
        s.send(frame)
print("sent")
"#;

#[test]
fn malformed_ipv4_is_counted_by_reason_and_disturbs_nothing() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    let r = ping_all(&ns, &["-c", "2", "-i", "0.2", "-W", "1", STACK_IP]);
    assert_eq!(r.received, 2, "{}", r.text);
    let out = ns.run_ok(&["python3", "-c", INJECT]);
    assert!(out.contains("sent"));
    for (reason, counter) in [
        ("bad_checksum", "ipv4_bad_checksum"),
        ("truncated", "ipv4_truncated"),
        ("total_len_exceeds_frame", "ipv4_total_len_exceeds_frame"),
        ("ttl_zero", "ttl_zero"),
        ("bad_version", "ipv4_bad_version"),
    ] {
        st.wait_for(reason, std::time::Duration::from_secs(20), || {
            st.counter("ipd", counter) >= 5
        });
    }
    // Nothing was answered to garbage, nothing restarted, and the stack
    // still answers.
    let r = ping_all(&ns, &["-c", "5", "-i", "0.1", "-W", "1", STACK_IP]);
    assert_eq!(r.received, 5, "{}", r.text);
    for l in st.json("status")["layers"].as_array().unwrap() {
        assert_eq!(l["restarts"], 0, "{l}");
    }
}
