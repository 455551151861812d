//! Fuzzes the IPv6 header parser, the extension-header walk and the
//! fragment header parser, and checks the invariants a caller relies on
//! for what they accept and decide.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::ipv6::{self, next_header, Disposition, FragmentHeader, Ipv6Header};

/// The upper-layer protocols the walk is told the caller handles.
const UPPER: &[u8] = &[next_header::TCP, next_header::UDP, next_header::ICMPV6];

/// Checks what `walk` decided about `payload`, which came with header `h`.
fn check_walk(h: &Ipv6Header, payload: &[u8]) {
    let len = payload.len().min(usize::from(h.payload_len));
    match ipv6::walk(h, payload, UPPER) {
        Disposition::Upper {
            protocol,
            offset,
            fragment,
        } => {
            assert!(UPPER.contains(&protocol));
            assert!(offset <= len);
            if let Some(f) = fragment {
                assert!(f.is_atomic());
            }
        }
        Disposition::Fragment {
            header,
            header_offset,
            data_offset,
            next_header_at,
        } => {
            assert!(!header.is_atomic());
            assert_eq!(data_offset, header_offset + FragmentHeader::LEN);
            assert!(data_offset <= len);
            assert_eq!(FragmentHeader::parse(&payload[header_offset..]), Ok(header));
            assert!(next_header_at < Ipv6Header::LEN + header_offset);
            if header.more {
                assert_eq!((len - data_offset) % 8, 0);
            }
        }
        Disposition::ParamProblem { code, pointer } => {
            let at = pointer as usize;
            assert!(code <= 3, "code {code}");
            assert!(at < Ipv6Header::LEN + len.max(1), "pointer {at} past {len}");
            if code == 1 {
                // The pointer is at a next header value the walk did not
                // follow and the caller does not handle.
                let nh = match at.checked_sub(Ipv6Header::LEN) {
                    Some(i) => payload[i],
                    None => {
                        assert_eq!(at, 6);
                        h.next_header
                    }
                };
                assert!(!UPPER.contains(&nh) && nh != next_header::NO_NEXT);
            }
        }
        Disposition::Discard(_) => {}
    }
}

fn check(data: &[u8]) {
    if let Ok(f) = FragmentHeader::parse(data) {
        let mut out = [0u8; 8];
        assert_eq!(f.emit(&mut out), Ok(8));
        assert_eq!(FragmentHeader::parse(&out), Ok(f));
        // Only the reserved fields differ: zero in what was emitted.
        let word = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]);
        assert_eq!((out[0], out[1], &out[4..]), (data[0], 0, &data[4..8]));
        assert_eq!(word(&out), word(data) & !0x0006);
    }
    if let Ok(h) = Ipv6Header::parse(data) {
        let payload = h.payload(data);
        assert!(Ipv6Header::LEN + payload.len() <= data.len());
        assert_eq!(payload.len(), usize::from(h.payload_len));
        // Re-emitting gives back the same 40 bytes.
        let mut out = [0u8; 40];
        assert_eq!(h.emit(&mut out), Ok(40));
        assert_eq!(&out[..], &data[..40]);
        check_walk(&h, payload);
        // The walk reads no further than the payload length.
        check_walk(&h, &data[Ipv6Header::LEN..]);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Most random inputs fail the version or length check; also try the
    // same bytes with version 6, a payload length that fits, and a first
    // next header that is most likely an extension header.
    if data.len() >= 40 && data.len() <= 2048 {
        let mut fixed = [0u8; 2048];
        let b = &mut fixed[..data.len()];
        b.copy_from_slice(data);
        b[0] = 0x60 | (b[0] & 0x0f);
        let payload_len = (data.len() - 40) as u16;
        b[4..6].copy_from_slice(&payload_len.to_be_bytes());
        const FIRST: [u8; 8] = [0, 43, 44, 60, 60, 6, 17, 59];
        b[6] = FIRST[usize::from(b[6] % 8)];
        check(b);
    }
});
