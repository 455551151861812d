//! Fuzzes the MLD query parser: any bytes, any source and hop limit, no
//! panic; what it accepts is a query with a sane group.
#![no_main]

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use strata_proto::mld::Query;

fuzz_target!(|data: &[u8]| {
    let Some((&hops, msg)) = data.split_first() else {
        return;
    };
    for src in [
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
    ] {
        if let Ok(q) = Query::parse(msg, src, hops) {
            assert!(q.group.is_unspecified() || q.group.is_multicast());
            assert!(msg.len() >= 24);
        }
    }
});
