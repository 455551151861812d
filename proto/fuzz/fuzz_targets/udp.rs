//! Fuzzes the UDP parser and checksum verification.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use strata_proto::udp::UdpHeader;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose the pseudo-header addresses.
    let (addrs, d) = data.split_at(data.len().min(8));
    let mut a = [0u8; 8];
    a[..addrs.len()].copy_from_slice(addrs);
    let src = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
    let dst = Ipv4Addr::new(a[4], a[5], a[6], a[7]);

    let _ = UdpHeader::verify_checksum(d, src, dst);
    if let Ok(h) = UdpHeader::parse(d) {
        let len = usize::from(h.length);
        assert!((UdpHeader::LEN..=d.len()).contains(&len));
        let dgram = &d[..len];
        let ok = UdpHeader::verify_checksum(dgram, src, dst);
        // Re-emitting with a fresh checksum always verifies, and keeps the
        // ports and the payload.
        if len <= 2048 {
            let mut buf = [0u8; 2048];
            let m = &mut buf[..len];
            m.copy_from_slice(dgram);
            h.emit(m, src, dst).expect("emit");
            assert!(UdpHeader::verify_checksum(m, src, dst));
            assert_eq!(&m[8..], &dgram[8..]);
            let p = UdpHeader::parse(m).expect("re-parse");
            assert_eq!(
                (p.src_port, p.dst_port, p.length),
                (h.src_port, h.dst_port, h.length)
            );
            if ok && h.checksum != 0 {
                assert_eq!(p.checksum, h.checksum);
            }
        }
    }
});
