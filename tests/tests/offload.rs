//! Device offloads: the kernel and the stack exchanging TCP super-segments
//! and partial checksums over a TAP with a virtio-net header, and the
//! software fallbacks where a device has no offloads (a TAP with
//! `offloads = false`, the pair driver).

use std::sync::Arc;
use std::time::Duration;
use strata_tests::{
    connect_and_echo, echo_to_eof, kernel_echo_server, pair_config, pattern, Netns, Stack,
};

/// Sends `len` bytes from the stack to a kernel echo server on `port` and
/// checks that the same bytes come back.
fn echo_with_kernel(st: &Stack, ns: &Netns, port: u16, len: usize) {
    let server = kernel_echo_server(ns, port, 1, Duration::from_secs(15));
    let data = Arc::new(pattern(len, port.into()));
    let stack = libsock::Stack::connect(&st.instance).unwrap();
    let back = connect_and_echo(stack.builder(), port, data.clone()).expect("echo");
    assert_eq!(back.len(), len, "bytes echoed");
    assert!(back == *data, "the echo differs from what was sent");
    assert!(
        server.wait_output(Duration::from_secs(30)).is_some(),
        "the kernel's echo server did not finish"
    );
}

/// A counter of the interface's driverd.
fn drv(st: &Stack, name: &str) -> u64 {
    st.counter("driverd0", name)
}

/// tcpd's segments in that were checked in software.
fn csum_checked(st: &Stack) -> u64 {
    st.counter("tcpd", "in_segs") - st.counter("tcpd", "csum_trusted")
}

#[test]
fn two_hundred_megabytes_each_way_as_super_segments_with_offloads_on() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    echo_with_kernel(&st, &ns, 7001, 200_000_000);
    // Super-segments both ways, whole: the kernel cut them, not driverd.
    assert!(drv(&st, "rx_super_frames") > 0, "no super-segment came in");
    assert!(drv(&st, "tx_super_frames") > 0, "no super-segment went out");
    assert!(drv(&st, "rx_super_segments") > 2 * drv(&st, "rx_super_frames"));
    assert_eq!(drv(&st, "gso_soft_frames"), 0);
    // No checksum computed in software on either side of the TAP: the
    // kernel completes ours, and left its own partial or verified them.
    assert_eq!(drv(&st, "csum_soft"), 0);
    assert!(drv(&st, "tx_csum_offloaded") > 0);
    assert!(
        csum_checked(&st) <= 8,
        "{} segments checked in software (the kernel's own replies, such as a \
         TIME-WAIT ACK, may be complete ones)",
        csum_checked(&st)
    );
}

#[test]
fn two_hundred_megabytes_each_way_in_plain_frames_with_offloads_off() {
    let ns = Netns::new();
    let st = Stack::up_with(&ns, "offloads = false\n");
    echo_with_kernel(&st, &ns, 7002, 200_000_000);
    assert_eq!(drv(&st, "rx_super_frames"), 0);
    assert_eq!(drv(&st, "tx_super_frames"), 0);
    assert_eq!(drv(&st, "tx_csum_offloaded"), 0);
    // tcpd still sends super-segments: driverd cuts them (software GSO)
    // and completes every checksum.
    assert!(drv(&st, "gso_soft_frames") > 0, "no software GSO");
    assert!(drv(&st, "gso_soft_segments") > 2 * drv(&st, "gso_soft_frames"));
    assert!(drv(&st, "csum_soft") > 0);
    // And merges the kernel's segments back into super-segments (GRO),
    // whose checksums it checked: tcpd checks none of those again.
    assert!(drv(&st, "gro_super_frames") > 0, "no software GRO");
    assert!(drv(&st, "gro_segments") > 2 * drv(&st, "gro_super_frames"));
    assert_eq!(drv(&st, "gro_bad_checksum"), 0);
    assert!(st.counter("tcpd", "csum_trusted") > 0);
}

#[test]
fn fifty_megabytes_each_way_survive_loss_reordering_and_duplication_with_offloads() {
    let ns = Netns::new();
    let st = Stack::up(&ns);
    // netem-like faults on both directions; a super-segment is dropped,
    // delayed or duplicated whole, as netem does.
    st.inject_faults();
    echo_with_kernel(&st, &ns, 7003, 50_000_000);
    assert!(drv(&st, "rx_super_frames") > 0);
    assert!(drv(&st, "tx_super_frames") > 0);
    assert!(st.counter("netdevd", "fault_loss") > 0);
    assert!(st.counter("netdevd", "fault_duplicate") > 0);
    assert!(st.counter("tcpd", "retrans_segs") > 0);
}

#[test]
fn mtu_9000_on_the_tap_carries_jumbo_frames_both_ways() {
    for offloads in [false, true] {
        let ns = Netns::new();
        let st = Stack::up_with(&ns, &format!("mtu = 9000\noffloads = {offloads}\n"));
        echo_with_kernel(&st, &ns, 7004, 20_000_000);
        let stats = st.json("stats");
        let big = |dir: &str| {
            let c = &stats["interfaces"][0]["counters"];
            let pkts = c[format!("{dir}_packets")].as_u64().unwrap_or(0);
            let bytes = c[format!("{dir}_bytes")].as_u64().unwrap_or(0);
            bytes / pkts.max(1)
        };
        if offloads {
            assert!(drv(&st, "rx_super_frames") > 0);
            assert!(drv(&st, "tx_super_frames") > 0);
        } else {
            // Frames averaging well above 1500 bytes went each way.
            assert!(big("rx") > 4000, "average frame in: {}", big("rx"));
            assert!(big("tx") > 4000, "average frame out: {}", big("tx"));
        }
    }
}

#[test]
fn the_pair_driver_carries_fifty_megabytes_through_software_gso_and_gro() {
    let ns = Netns::new();
    let a = Stack::up_config(
        &ns,
        &pair_config("o", "a", "10.89.0.1", "02:00:00:00:89:01"),
    );
    let b = Stack::up_config(
        &ns,
        &pair_config("o", "b", "10.89.0.2", "02:00:00:00:89:02"),
    );
    let lb = libsock::Stack::connect(&b.instance).unwrap();
    let listener = lb.builder().tcp_bind("0.0.0.0:7005").unwrap();
    let server = std::thread::spawn(move || echo_to_eof(listener.accept().unwrap().0));
    let la = libsock::Stack::connect(&a.instance).unwrap();
    let data = Arc::new(pattern(50_000_000, 7005));
    let s = la.builder().tcp_connect("10.89.0.2:7005").unwrap();
    let back = {
        use std::io::{Read, Write};
        let r = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut back = Vec::new();
            (&r).read_to_end(&mut back).map(|_| back)
        });
        (&s).write_all(&data).unwrap();
        s.shutdown(libsock::Shutdown::Write).unwrap();
        reader.join().unwrap().unwrap()
    };
    assert_eq!(server.join().unwrap().unwrap(), data.len());
    assert!(back == *data, "the echo differs from what was sent");
    for st in [&a, &b] {
        assert!(drv(st, "gso_soft_frames") > 0, "no software GSO");
        assert!(drv(st, "gro_super_frames") > 0, "no software GRO");
        assert!(drv(st, "csum_soft") > 0);
        assert_eq!(drv(st, "tx_super_frames"), 0);
    }
}
