//! Fuzzes the UDP parser and checksum verification, over IPv4 and IPv6.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use strata_proto::udp::UdpHeader;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose the pseudo-header addresses.
    let (addrs, d) = data.split_at(data.len().min(8));
    let mut a = [0u8; 8];
    a[..addrs.len()].copy_from_slice(addrs);
    let src = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
    let dst = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
    // IPv6 addresses from the same bytes: fe80::/64 and those 8.
    let mut b6 = [0u8; 16];
    b6[0] = 0xfe;
    b6[1] = 0x80;
    b6[8..].copy_from_slice(&a);
    let (src6, dst6) = (Ipv6Addr::from(b6), Ipv6Addr::UNSPECIFIED);

    let _ = UdpHeader::verify_checksum(d, src, dst);
    // Over IPv6 a zero checksum never verifies (RFC 8200 §8.1).
    if UdpHeader::verify_checksum_v6(d, src6, dst6) {
        assert_ne!(&d[6..8], &[0, 0]);
    }
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
            // The same over IPv6: never zero, always verifies.
            h.emit_v6(m, src6, dst6).expect("emit_v6");
            assert_ne!(&m[6..8], &[0, 0]);
            assert!(UdpHeader::verify_checksum_v6(m, src6, dst6));
            assert_eq!(&m[8..], &dgram[8..]);
        }
    }
});
