//! Fuzzes the virtio-net header parser and the offload fallbacks: software
//! GSO must cut any frame it accepts into segments that put back together
//! give its payload, each with a valid checksum, and checksum completion
//! must stay inside the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::offload::{complete_checksum, segment_tcp4, IpFrame, VnetHdr};
use strata_proto::tcp::TcpHeader;

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b, c], frame)) = data.split_first_chunk::<3>() else {
        return;
    };
    let mss = u16::from_be_bytes([a, b]);
    let _ = VnetHdr::parse(frame);
    if let Ok(segs) = segment_tcp4(frame, mss) {
        let f = IpFrame::parse(frame).expect("accepted frames parse");
        let n = segs.remaining();
        let mut payload = Vec::new();
        let mut count = 0;
        for s in segs {
            let h = s.headers();
            let mut seg = h[f.l4..].to_vec();
            seg.extend_from_slice(s.payload);
            let src = <[u8; 4]>::try_from(&h[f.l3 + 12..f.l3 + 16]).unwrap();
            let dst = <[u8; 4]>::try_from(&h[f.l3 + 16..f.l3 + 20]).unwrap();
            assert!(TcpHeader::verify_checksum(&seg, src.into(), dst.into()));
            payload.extend_from_slice(s.payload);
            count += 1;
        }
        assert_eq!(count, n);
        let thl = usize::from(frame[f.l4 + 12] >> 4) * 4;
        assert_eq!(payload, &frame[f.l4 + thl..f.end]);
    }
    let mut copy = frame.to_vec();
    let _ = complete_checksum(&mut copy, usize::from(c), 16);
});
