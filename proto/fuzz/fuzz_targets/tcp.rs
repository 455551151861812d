//! Fuzzes the TCP header and option parser and checksum verification, and
//! checks that what the parser accepts emits and parses back the same.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use strata_proto::tcp::{TcpHeader, TcpOptions, MAX_WINDOW_SCALE};

fuzz_target!(|data: &[u8]| {
    let src = Ipv4Addr::new(10, 0, 0, 1);
    let dst = Ipv4Addr::new(10, 0, 0, 2);
    let _ = TcpHeader::verify_checksum(data, src, dst);
    let _ = TcpOptions::parse(data.get(..data.len().min(40)).unwrap_or_default());
    if let Ok((h, o)) = TcpHeader::parse(data) {
        let hl = usize::from(h.header_len);
        assert!((20..=60).contains(&hl) && hl <= data.len());
        assert!(o.sack().len() <= 4);
        assert!(o.window_scale.unwrap_or(0) <= MAX_WINDOW_SCALE);
        // Re-emit header and parsed options in front of the payload.
        let payload = &data[hl..];
        let nhl = TcpHeader::header_len_for(&o);
        assert!(nhl <= 60 && nhl % 4 == 0);
        if nhl + payload.len() <= 2048 {
            let mut buf = [0u8; 2048];
            let seg = &mut buf[..nhl + payload.len()];
            seg[nhl..].copy_from_slice(payload);
            assert_eq!(h.emit(&o, seg, src, dst), Ok(nhl));
            assert!(TcpHeader::verify_checksum(seg, src, dst));
            let (p, po) = TcpHeader::parse(seg).expect("re-parse");
            assert_eq!(
                p,
                TcpHeader {
                    header_len: nhl as u8,
                    checksum: p.checksum,
                    ..h
                }
            );
            let mut expect = o;
            let n = o.emitted_sack_count();
            expect.sack_count = n as u8;
            expect.sack_blocks = [(0, 0); 4];
            expect.sack_blocks[..n].copy_from_slice(&o.sack()[..n]);
            assert_eq!(po, expect);
        }
    }
});
