//! Fuzzes the decoders of the messages applications send sockd (and its
//! answers), and checks that whatever decodes re-encodes to a message
//! that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::sock::{Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(Request::decode(&r.encode()).as_ref(), Ok(&r));
    }
    if let Ok(r) = Response::decode(data) {
        assert_eq!(Response::decode(&r.encode()).as_ref(), Ok(&r));
    }
});
