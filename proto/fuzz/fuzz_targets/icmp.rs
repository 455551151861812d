//! Fuzzes the ICMP parser, and checks that re-emitting what it accepts
//! reproduces the message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::icmp::IcmpHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = IcmpHeader::parse(data) {
        if data.len() <= 2048 {
            let mut buf = [0u8; 2048];
            let m = &mut buf[..data.len()];
            m.copy_from_slice(data);
            h.emit(m).expect("emit into a message of the same size");
            // The fresh checksum may differ from the received one: 0x0000
            // and 0xffff are both valid for some messages.
            let p = IcmpHeader::parse(m).expect("re-parse");
            assert_eq!(
                p,
                IcmpHeader {
                    checksum: p.checksum,
                    ..h
                }
            );
            assert_eq!(&m[8..], &data[8..]);
        }
    }
    // Also fill a correct checksum over the input and parse that.
    if data.len() >= IcmpHeader::LEN && data.len() <= 2048 {
        let mut buf = [0u8; 2048];
        let m = &mut buf[..data.len()];
        m.copy_from_slice(data);
        let h = IcmpHeader {
            icmp_type: data[0],
            code: data[1],
            checksum: 0,
            rest: [data[4], data[5], data[6], data[7]],
        };
        h.emit(m).expect("emit");
        let p = IcmpHeader::parse(m).expect("a message with a filled checksum parses");
        assert_eq!(
            p,
            IcmpHeader {
                checksum: p.checksum,
                ..h
            }
        );
    }
});
