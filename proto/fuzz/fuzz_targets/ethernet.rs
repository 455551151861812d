//! Fuzzes the Ethernet header parser, and checks that what it accepts
//! emits back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::ethernet::EthernetHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = EthernetHeader::parse(data) {
        let mut out = [0u8; EthernetHeader::LEN];
        h.emit(&mut out).expect("emit into a 14-byte buffer");
        assert_eq!(&out[..], &data[..EthernetHeader::LEN]);
    }
});
