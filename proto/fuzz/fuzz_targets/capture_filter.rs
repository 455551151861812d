//! Fuzzes what a layer does with a capture request: a filter program read
//! from shared memory is checked before use, and a checked program
//! evaluates any frame or bare datagram without panicking; what it
//! encodes decodes back to the same program.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_ipc::capture::{Carries, Program};

fuzz_target!(|data: &[u8]| {
    let Some((&[n], rest)) = data.split_first_chunk::<1>() else {
        return;
    };
    let n = usize::from(n % 70);
    let words: Vec<[u32; 3]> = rest
        .chunks_exact(12)
        .take(n)
        .map(|c| {
            let w = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().unwrap());
            [w(0), w(4), w(8)]
        })
        .collect();
    let frame = &rest[(words.len() * 12).min(rest.len())..];
    if let Ok(p) = Program::decode(&words) {
        let _ = p.matches(frame, Carries::Ethernet);
        let _ = p.matches(frame, Carries::Ipv4);
        let again: Vec<[u32; 3]> = p.ops().iter().map(|o| o.encode()).collect();
        assert_eq!(Program::decode(&again).as_ref(), Ok(&p));
    }
});
