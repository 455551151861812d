//! Fuzzes the ICMPv6 parser (checksum over the pseudo-header and the
//! message), checks that re-emitting what it accepts reproduces the
//! message, and fuzzes the echo reply and error builders and the error
//! rate limiter.
#![no_main]

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use strata_proto::icmpv6::{
    emit_echo_reply, error_quote_len, fill_checksum, icmpv6_type, Icmpv6Header, RateLimiter,
    ERROR_MAX_LEN,
};

fuzz_target!(|data: &[u8]| {
    // The first 32 bytes choose the pseudo-header addresses.
    let (addrs, msg) = data.split_at(data.len().min(32));
    let mut a = [0u8; 32];
    a[..addrs.len()].copy_from_slice(addrs);
    let mut s = [0u8; 16];
    let mut d = [0u8; 16];
    s.copy_from_slice(&a[..16]);
    d.copy_from_slice(&a[16..]);
    let (src, dst) = (Ipv6Addr::from(s), Ipv6Addr::from(d));

    if let Ok(h) = Icmpv6Header::parse(msg, src, dst) {
        if msg.len() <= 2048 {
            let mut buf = [0u8; 2048];
            let m = &mut buf[..msg.len()];
            m.copy_from_slice(msg);
            assert_eq!(h.emit(m, src, dst), Ok(msg.len()));
            // The fresh checksum may differ from the received one: 0x0000
            // and 0xffff are both valid for some messages.
            let p = Icmpv6Header::parse(m, src, dst).expect("re-parse");
            assert_eq!(
                p,
                Icmpv6Header {
                    checksum: p.checksum,
                    ..h
                }
            );
            assert_eq!(&m[8..], &msg[8..]);
        }
        if h.icmp_type == icmpv6_type::ECHO_REQUEST && msg.len() <= 2048 {
            let mut buf = [0u8; 2048];
            let n = emit_echo_reply(msg, &mut buf, dst, src).expect("reply fits");
            assert_eq!(n, msg.len());
            let r = Icmpv6Header::parse(&buf[..n], dst, src).expect("reply parses");
            assert_eq!(
                (r.icmp_type, r.code, r.rest),
                (icmpv6_type::ECHO_REPLY, 0, h.rest)
            );
            assert_eq!(&buf[8..n], &msg[8..]);
        }
    }

    // An error quoting the message parses back, quotes what it should, and
    // stays within the minimum MTU.
    {
        let mut buf = [0u8; 2048];
        let h = Icmpv6Header::parameter_problem(a[0] % 4, u32::from(a[1]));
        let n = h
            .emit_error(msg, &mut buf, dst, src)
            .expect("an error fits into 2048 bytes");
        let quote = error_quote_len(msg.len());
        assert_eq!(n, Icmpv6Header::LEN + quote);
        assert!(n + 40 <= ERROR_MAX_LEN);
        let p = Icmpv6Header::parse(&buf[..n], dst, src).expect("error parses");
        assert_eq!((p.code, p.pointer()), (h.code, h.pointer()));
        assert_eq!(&buf[Icmpv6Header::LEN..n], &msg[..quote]);
    }

    // Fill a correct checksum over the input and parse that.
    if msg.len() >= Icmpv6Header::LEN && msg.len() <= 2048 {
        let mut buf = [0u8; 2048];
        let m = &mut buf[..msg.len()];
        m.copy_from_slice(msg);
        fill_checksum(m, src, dst).expect("fill");
        let p = Icmpv6Header::parse(m, src, dst).expect("a message with a filled checksum parses");
        assert_eq!((p.icmp_type, p.code), (msg[0], msg[1]));
    }

    // The message's bytes as the time steps of a rate limiter: never more
    // messages than the burst and the elapsed time pay for.
    let interval = u64::from(a[2]) + 1;
    let burst = u32::from(a[3] % 8);
    let mut r = RateLimiter::new(interval, burst, 0);
    let (mut now, mut sent) = (0u64, 0u64);
    for &step in msg {
        now += u64::from(step);
        if r.allow(now) {
            sent += 1;
        }
        assert!(sent <= u64::from(burst) + now / interval);
    }
});
