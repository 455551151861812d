//! Sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4): `a` is before
//! `b` when `b - a`, taken as a signed 32-bit number, is positive.

/// `a < b` in sequence space.
#[inline]
pub fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in sequence space.
#[inline]
pub fn le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// `a > b` in sequence space.
#[inline]
pub fn gt(a: u32, b: u32) -> bool {
    lt(b, a)
}

/// `a >= b` in sequence space.
#[inline]
pub fn ge(a: u32, b: u32) -> bool {
    le(b, a)
}

/// The later of two sequence numbers.
#[inline]
pub fn max(a: u32, b: u32) -> u32 {
    if lt(a, b) {
        b
    } else {
        a
    }
}

/// The earlier of two sequence numbers.
#[inline]
pub fn min(a: u32, b: u32) -> u32 {
    if lt(a, b) {
        a
    } else {
        b
    }
}

/// `lo <= x < hi` in sequence space.
#[inline]
pub fn within(x: u32, lo: u32, hi: u32) -> bool {
    le(lo, x) && lt(x, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps() {
        assert!(lt(0xffff_fff0, 5));
        assert!(gt(5, 0xffff_fff0));
        assert!(le(7, 7) && ge(7, 7) && !lt(7, 7));
        assert_eq!(max(0xffff_fff0, 5), 5);
        assert_eq!(min(0xffff_fff0, 5), 0xffff_fff0);
        assert!(within(0, 0xffff_ff00, 10));
        assert!(!within(10, 0xffff_ff00, 10));
    }
}
