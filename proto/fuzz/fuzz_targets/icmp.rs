//! Fuzzes the ICMP parser, and checks that re-emitting what it accepts
//! reproduces the message; fuzzes the parser of the datagram an ICMP error
//! quotes, and the error builder that quotes one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::icmp::{error_quote_len, IcmpHeader, QuotedDatagram};

fuzz_target!(|data: &[u8]| {
    // The data as the quote of an ICMP error, and as the message's data
    // after its header.
    for quote in [data, data.get(IcmpHeader::LEN..).unwrap_or(&[])] {
        if let Ok(q) = QuotedDatagram::parse(quote) {
            let hl = usize::from(q.header_len);
            assert!(hl >= 20 && hl <= 60, "header length {hl}");
            assert!(quote.len() >= hl + 8, "quote shorter than header + 8");
            assert_eq!(&q.transport[..], &quote[hl..hl + 8]);
            assert_eq!(quote[0] >> 4, 4);
        }
    }
    // An error quoting the data parses back and quotes what it should.
    {
        let mut buf = [0u8; 2048];
        let n = IcmpHeader::error(data.first().copied().unwrap_or(3), 0)
            .emit_error(data, &mut buf)
            .expect("an error fits into 2048 bytes");
        let quote = error_quote_len(data.len());
        assert_eq!(n, IcmpHeader::LEN + quote);
        assert!(IcmpHeader::parse(&buf[..n]).is_ok());
        assert_eq!(&buf[IcmpHeader::LEN..n], &data[..quote]);
    }
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
