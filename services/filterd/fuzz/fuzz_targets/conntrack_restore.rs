//! Fuzzes what a restarted filterd finds in its arena: arbitrary bytes as
//! the conntrack table, restored, listed and used.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_filterd::conntrack::Conntrack;

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

fuzz_target!(|data: &[u8]| {
    let mut mem = vec![Line([0; 64]); 64];
    let n = mem.len() * 64;
    // A laid-out table first, then the fuzzer's bytes over it.
    // SAFETY: mem outlives the table, which is dropped at once, and nothing
    // else uses mem meanwhile; Line is 64-aligned.
    let _ = unsafe { Conntrack::from_raw(mem.as_mut_ptr() as *mut u8, n, [1, 2], 0) };
    // SAFETY: the n bytes of mem, used only through this slice until the next
    // from_raw below.
    let bytes = unsafe { std::slice::from_raw_parts_mut(mem.as_mut_ptr() as *mut u8, n) };
    let k = data.len().min(n - 64);
    bytes[64..64 + k].copy_from_slice(&data[..k]);
    // SAFETY: as above: mem outlives the table; bytes is not used again.
    if let Some((mut ct, _)) = unsafe { Conntrack::from_raw(mem.as_mut_ptr() as *mut u8, n, [1, 2], 1000) } {
        let _ = ct.list(1000);
        ct.expire(1_000_000_000);
    }
});
