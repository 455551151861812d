//! Fuzzes the IPv4 header parser and the options iterator, and checks the
//! invariants a caller relies on for what the parser accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::checksum;
use strata_proto::ipv4::{self, Ipv4Header};

fn check(data: &[u8]) {
    let mut n = 0;
    for o in ipv4::options(data) {
        n += 1;
        assert!(n <= 41, "options iterator does not terminate");
        if let Ok((_, d)) = o {
            assert!(d.len() <= 38);
        }
    }
    if let Ok(h) = Ipv4Header::parse(data) {
        let hl = usize::from(h.header_len);
        let tl = usize::from(h.total_len);
        assert!((20..=60).contains(&hl) && hl % 4 == 0);
        assert!(hl <= tl && tl <= data.len());
        assert!(checksum::verify(&data[..hl]));
        assert!(ipv4::options(data).all(|o| o.is_ok()));
        assert_eq!(h.payload_len(), tl - hl);
        // Re-emitting an option-less header gives back the same fields.
        let mut out = [0u8; 20];
        assert_eq!(h.emit(&mut out), Ok(20));
        let again = Ipv4Header::parse(&out[..]).map(|p| (p.src, p.dst, p.ttl, p.protocol));
        if tl == 20 {
            assert_eq!(again, Ok((h.src, h.dst, h.ttl, h.protocol)));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Most random inputs fail the version or checksum check; also try the
    // same bytes with version 4 and a correct checksum, to get past them.
    if data.len() >= 20 && data.len() <= 2048 {
        let mut fixed = [0u8; 2048];
        let b = &mut fixed[..data.len()];
        b.copy_from_slice(data);
        b[0] = 0x40 | (b[0] & 0x0f);
        ipv4::fill_checksum(b);
        check(b);
        let _ = ipv4::decrement_ttl(b);
    }
});
