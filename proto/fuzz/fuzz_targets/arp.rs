//! Fuzzes the ARP parser, and checks that what it accepts emits back to the
//! same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::arp::ArpPacket;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ArpPacket::parse(data) {
        let mut out = [0u8; ArpPacket::LEN];
        p.emit(&mut out).expect("emit into a 28-byte buffer");
        assert_eq!(&out[..], &data[..ArpPacket::LEN]);
        assert_eq!(ArpPacket::parse(&out), Ok(p));
    }
});
