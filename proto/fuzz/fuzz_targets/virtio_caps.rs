//! Fuzzes the virtio PCI capability walk over a device's configuration
//! space: any bytes end in a description whose every structure lies in a
//! BAR from 0 to 5, or in an error, never a panic or an endless walk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::virtio::VirtioCaps;

fuzz_target!(|data: &[u8]| {
    if let Ok(caps) = VirtioCaps::parse(data) {
        for r in [Some(caps.common), Some(caps.notify), caps.isr, caps.device]
            .into_iter()
            .flatten()
        {
            assert!(r.bar <= 5);
        }
    }
});
