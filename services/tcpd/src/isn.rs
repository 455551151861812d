//! Keyed hashing for initial sequence numbers (RFC 6528), SYN cookies and
//! timestamp offsets: SipHash-2-4 over the connection's 4-tuple with the
//! secret from the configuration. The core has no randomness source; the
//! shell draws the secret once and keeps it for the life of the stack
//! (cookies and ISNs must stay valid across a restart of tcpd).

/// SipHash-2-4 of the 32-bit words `words` under `key`.
pub fn siphash(key: [u64; 2], words: &[u32]) -> u64 {
    let mut v0 = 0x736f_6d65_7073_6575u64 ^ key[0];
    let mut v1 = 0x646f_7261_6e64_6f6du64 ^ key[1];
    let mut v2 = 0x6c79_6765_6e65_7261u64 ^ key[0];
    let mut v3 = 0x7465_6462_7974_6573u64 ^ key[1];
    #[inline]
    fn round(v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64) {
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13);
        *v1 ^= *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16);
        *v3 ^= *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21);
        *v3 ^= *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17);
        *v1 ^= *v2;
        *v2 = v2.rotate_left(32);
    }
    let len = words.len() * 4;
    let compress = |m: u64, v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64| {
        *v3 ^= m;
        round(v0, v1, v2, v3);
        round(v0, v1, v2, v3);
        *v0 ^= m;
    };
    let mut chunks = words.chunks_exact(2);
    for c in &mut chunks {
        // Little-endian bytes of the two words, as the reference reads them.
        let m = u64::from(c[0]) | u64::from(c[1]) << 32;
        compress(m, &mut v0, &mut v1, &mut v2, &mut v3);
    }
    let mut last = (len as u64 & 0xff) << 56;
    if let [w] = chunks.remainder() {
        last |= u64::from(*w);
    }
    compress(last, &mut v0, &mut v1, &mut v2, &mut v3);
    v2 ^= 0xff;
    for _ in 0..4 {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    v0 ^ v1 ^ v2 ^ v3
}

/// The 32-bit words of a 128-bit address, most significant first, for
/// the keyed hashes (an IPv4 address is hashed in its mapped form).
fn words(a: u128) -> [u32; 4] {
    [
        (a >> 96) as u32,
        (a >> 64) as u32,
        (a >> 32) as u32,
        a as u32,
    ]
}

/// SipHash-2-4 under `key` of two addresses, the ports as one word, and
/// `extra` words.
fn hash_tuple(key: [u64; 2], a: u128, b: u128, ports: u32, extra: &[u32]) -> u64 {
    let mut w = [0u32; 11];
    w[..4].copy_from_slice(&words(a));
    w[4..8].copy_from_slice(&words(b));
    w[8] = ports;
    let n = 9 + extra.len().min(2);
    w[9..n].copy_from_slice(&extra[..n - 9]);
    siphash(key, &w[..n])
}

/// RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secret),
/// M a timer ticking every 4 µs.
pub fn isn(key: [u64; 2], now_ns: u64, laddr: u128, lport: u16, raddr: u128, rport: u16) -> u32 {
    let m = (now_ns / 4000) as u32;
    let f = hash_tuple(
        key,
        laddr,
        raddr,
        u32::from(lport) << 16 | u32::from(rport),
        &[],
    ) as u32;
    m.wrapping_add(f)
}

/// Per-connection offset of the timestamp clock (RFC 7323 §7.1).
pub fn ts_offset(key: [u64; 2], laddr: u128, lport: u16, raddr: u128, rport: u16) -> u32 {
    let ports = u32::from(rport) << 16 | u32::from(lport);
    hash_tuple([key[1], key[0]], raddr, laddr, ports, &[]) as u32
}

/// The IPv6 flow label of a connection (RFC 6437 §3: a keyed hash of the
/// flow's addresses and ports, 20 bits, never 0, the same for every
/// packet of the flow whichever side computes it here).
pub fn flow_label(key: [u64; 2], laddr: u128, lport: u16, raddr: u128, rport: u16) -> u32 {
    let ports = u32::from(lport) << 16 | u32::from(rport);
    let k = [key[0].rotate_left(29), key[1] ^ 0x464c_4f57];
    let f = hash_tuple(k, laddr, raddr, ports, &[]) as u32 & 0xf_ffff;
    f.max(1)
}

/// MSS values a SYN cookie can encode over IPv4 (Linux `msstab`).
pub const COOKIE_MSS: [u16; 4] = [536, 1300, 1440, 1460];
/// MSS values a SYN cookie can encode over IPv6 (Linux's IPv6
/// `msstab`: the minimum MTU's, then 1480, 1500 and 9000 less 60).
pub const COOKIE_MSS6: [u16; 4] = [1220, 1420, 1440, 8940];
const COOKIE_BITS: u32 = 24;
const COOKIE_MASK: u32 = (1 << COOKIE_BITS) - 1;
/// Minutes a cookie stays valid (Linux `MAX_SYNCOOKIE_AGE`).
const COOKIE_MAX_AGE: u32 = 2;

fn cookie_hash(key: [u64; 2], t: &CookieTuple, count: u32, c: u32) -> u32 {
    let k = [
        key[0] ^ 0x5359_4e43_4f4f_4b49,
        key[1].rotate_left(u32::from(c == 1) * 17),
    ];
    let ports = u32::from(t.sport) << 16 | u32::from(t.dport);
    hash_tuple(k, t.saddr, t.daddr, ports, &[count, c]) as u32
}

/// The addresses of a SYN (and of the ACK that answers our cookie), as
/// the peer sent them (mapped for IPv4).
#[derive(Clone, Copy, Debug)]
pub struct CookieTuple {
    /// Peer address.
    pub saddr: u128,
    /// Our address.
    pub daddr: u128,
    /// Peer port.
    pub sport: u16,
    /// Our port.
    pub dport: u16,
}

impl CookieTuple {
    /// The MSS values a cookie of this tuple's family encodes.
    pub fn mss_table(&self) -> &'static [u16; 4] {
        if strata_ipc::addrs::unmapped(self.saddr).is_some() {
            &COOKIE_MSS
        } else {
            &COOKIE_MSS6
        }
    }
}

/// The minute counter of the cookie clock.
pub fn cookie_count(now_ns: u64) -> u32 {
    (now_ns / 60_000_000_000) as u32
}

/// The index into `table` ([`COOKIE_MSS`] or [`COOKIE_MSS6`]) of the
/// largest value not above `mss` (the first if none is).
pub fn cookie_mss_index(table: &[u16; 4], mss: u16) -> u32 {
    let mut i = 0;
    for (k, &m) in table.iter().enumerate() {
        if m <= mss {
            i = k;
        }
    }
    i as u32
}

/// Our ISN for a SYN answered with a cookie (Linux
/// `secure_tcp_syn_cookie`): the peer's ISN `sseq`, the minute counter
/// and the MSS index, bound to the 4-tuple by the keyed hash.
pub fn make_cookie(key: [u64; 2], t: &CookieTuple, sseq: u32, mss_index: u32, now_ns: u64) -> u32 {
    let count = cookie_count(now_ns);
    cookie_hash(key, t, 0, 0)
        .wrapping_add(sseq)
        .wrapping_add(count << COOKIE_BITS)
        .wrapping_add(cookie_hash(key, t, count, 1).wrapping_add(mss_index) & COOKIE_MASK)
}

/// Checks the cookie `cookie` (the ACK's acknowledgment number less one)
/// for the peer's ISN `sseq` (the ACK's sequence number less one); the
/// MSS index it encodes if it is valid and at most two minutes old.
pub fn check_cookie(
    key: [u64; 2],
    t: &CookieTuple,
    cookie: u32,
    sseq: u32,
    now_ns: u64,
) -> Option<u32> {
    let count = cookie_count(now_ns);
    let c = cookie.wrapping_sub(cookie_hash(key, t, 0, 0).wrapping_add(sseq));
    let diff = count.wrapping_sub(c >> COOKIE_BITS) & (u32::MAX >> COOKIE_BITS);
    if diff >= COOKIE_MAX_AGE {
        return None;
    }
    let idx = c.wrapping_sub(cookie_hash(key, t, count.wrapping_sub(diff), 1)) & COOKIE_MASK;
    ((idx as usize) < t.mss_table().len()).then_some(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_reference_vectors() {
        // The SipHash paper's key 00 01 .. 0f; message bytes 00 01 02 ...
        let key = [0x0706_0504_0302_0100u64, 0x0f0e_0d0c_0b0a_0908u64];
        assert_eq!(siphash(key, &[]), 0x726f_db47_dd0e_0e31);
        // 8 bytes 00..07 = words 0x03020100, 0x07060504.
        assert_eq!(
            siphash(key, &[0x0302_0100, 0x0706_0504]),
            0x93f5_f579_9a93_2462
        );
        // 4 bytes 00..03.
        assert_eq!(siphash(key, &[0x0302_0100]), 0xcf27_94e0_2771_87b7);
    }

    #[test]
    fn isn_advances_with_the_clock_and_differs_per_tuple() {
        let k = [1, 2];
        let a = isn(k, 0, 1, 2, 3, 4);
        assert_eq!(isn(k, 4000, 1, 2, 3, 4), a.wrapping_add(1));
        assert_ne!(isn(k, 0, 1, 2, 3, 5), a);
        assert_ne!(isn([1, 3], 0, 1, 2, 3, 4), a);
        // Every word of an IPv6 address counts.
        for bit in [1, 40, 70, 127] {
            assert_ne!(isn(k, 0, 1 << bit | 1, 2, 3, 4), a, "bit {bit}");
            assert_ne!(
                ts_offset(k, 1, 2, 3 ^ 1 << bit, 4),
                ts_offset(k, 1, 2, 3, 4)
            );
        }
    }

    #[test]
    fn flow_labels_are_20_bits_nonzero_and_per_flow() {
        let k = [5, 6];
        let (a, b) = (0x2001_0db8 << 96 | 1, 0x2001_0db8 << 96 | 2);
        let f = flow_label(k, a, 80, b, 40000);
        assert!(f > 0 && f <= 0xf_ffff);
        assert_eq!(flow_label(k, a, 80, b, 40000), f);
        assert_ne!(flow_label(k, a, 80, b, 40001), f);
        assert_ne!(flow_label([5, 7], a, 80, b, 40000), f);
    }

    #[test]
    fn cookies_round_trip_and_expire() {
        let k = [7, 9];
        let v4 = CookieTuple {
            saddr: strata_ipc::addrs::mapped(0x0a00_0002),
            daddr: strata_ipc::addrs::mapped(0x0a00_0001),
            sport: 40000,
            dport: 80,
        };
        let v6 = CookieTuple {
            saddr: 0xfd00 << 112 | 2,
            daddr: 0xfd00 << 112 | 1,
            ..v4
        };
        assert_eq!(v4.mss_table(), &COOKIE_MSS);
        assert_eq!(v6.mss_table(), &COOKIE_MSS6);
        for t in [v4, v6] {
            cookies_of(k, t);
        }
        assert_eq!(cookie_mss_index(&COOKIE_MSS, 1460), 3);
        assert_eq!(cookie_mss_index(&COOKIE_MSS, 1400), 1);
        assert_eq!(cookie_mss_index(&COOKIE_MSS, 100), 0);
        assert_eq!(cookie_mss_index(&COOKIE_MSS6, 1440), 2);
        assert_eq!(cookie_mss_index(&COOKIE_MSS6, 9000), 3);
        assert_eq!(cookie_mss_index(&COOKIE_MSS6, 536), 0);
    }

    /// Cookies of tuple `t` check, expire, and bind the tuple.
    fn cookies_of(k: [u64; 2], t: CookieTuple) {
        let now = 3_600_000_000_000;
        for i in 0..4 {
            let c = make_cookie(k, &t, 12345, i, now);
            assert_eq!(check_cookie(k, &t, c, 12345, now), Some(i));
            assert_eq!(check_cookie(k, &t, c, 12345, now + 61_000_000_000), Some(i));
            assert_eq!(check_cookie(k, &t, c, 12345, now + 121_000_000_000), None);
            assert_eq!(check_cookie(k, &t, c, 12345 + 999_999, now), None);
            assert_eq!(check_cookie(k, &t, c ^ 0x0010_0000, 12345, now), None);
            let t2 = CookieTuple { sport: 40001, ..t };
            assert_eq!(check_cookie(k, &t2, c, 12345, now), None);
            let t3 = CookieTuple {
                saddr: t.saddr ^ 1 << 100,
                ..t
            };
            assert_eq!(check_cookie(k, &t3, c, 12345, now), None);
        }
    }
}
