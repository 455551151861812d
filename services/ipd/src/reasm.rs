//! Reassembly of IPv4 datagrams (RFC 791 §3.2, RFC 815) and IPv6
//! packets (RFC 8200 §4.5), into one large pool buffer per datagram.
//!
//! Each fragment's payload is copied into the datagram's buffer at its
//! offset, and the fragment's own buffer is freed at once. This is the one
//! payload copy ipd makes on receive, and it is accepted on purpose: the
//! alternative, a chain of fragment buffers, would make every upper layer
//! (and sockd's copy to the client) walk scattered buffers for a case that
//! is rare on the fast path, and would pin one pool buffer per fragment for
//! up to 30 s instead of one per datagram.
//!
//! The buffer is laid out so the header can be written last, when its
//! length is known (it comes with fragment 0, which may arrive last):
//!
//! ```text
//! | HEADROOM | 128 bytes: header space | payload offset 0 ... |
//!                    ^ header written right-aligned here
//! ```
//!
//! For IPv6 the "header" is the unfragmentable part of fragment 0 (the
//! IPv6 header and the extension headers before the fragment header),
//! and the fragments of one packet are those with the same source,
//! destination and 32-bit identification, whatever their Next Header.
//! The reassembled packet has no fragment header: the Next Header field
//! that named it names what followed it, and the packet is walked again.
//!
//! Received data is tracked as sorted, merged byte ranges (RFC 815's holes
//! are the gaps between them). Policy follows Linux since 4.19: a fragment
//! wholly inside data already received is a duplicate and is ignored; one
//! that partly overlaps received data drops the whole datagram (overlaps
//! are only ever used to evade filters; RFC 5722 for IPv6).
//!
//! Memory: a reassembly holds exactly one large buffer from its first
//! fragment on, so that buffer's size is what it is charged against the
//! per-source and total limits (Linux charges each fragment's truesize).

use strata_ipc::{Buffers, Handle};
use strata_proto::checksum;
use strata_proto::ethernet::ethertype;

use crate::config::IpLimits;
use crate::stats::Stat;

/// Room kept for the header in front of payload offset 0: an IPv4
/// header, or the unfragmentable part of an IPv6 packet (longer ones are
/// dropped as `frag_too_big`).
const HDR_SPACE: usize = 128;
/// Disjoint pieces a datagram may be in before it is dropped. In-order
/// arrival keeps one; any real reordering stays far below this.
const MAX_RANGES: usize = 64;
/// Largest IPv4 datagram, and largest IPv6 payload.
const MAX_DATAGRAM: usize = 65535;
/// Length of the IPv6 header, which an IPv6 payload length leaves out.
const IPV6_HDR: usize = 40;

/// What the core tells reassembly about one fragment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FragInfo {
    /// Addresses, IPv4 ones mapped into IPv6 (as [`crate::NeighAddr`]).
    pub src: u128,
    pub dst: u128,
    /// IPv4's protocol; 0 for IPv6, whose fragments are matched without
    /// it.
    pub proto: u8,
    pub ident: u32,
    /// This fragment's header length: the IPv4 header, or the IPv6
    /// unfragmentable part.
    pub hl: usize,
    /// Where the fragment's data starts, from the start of its header
    /// (IPv4: `hl`; IPv6: after the fragment header).
    pub data_at: usize,
    /// IPv6: where, from the start of the header, the Next Header field
    /// that names the fragment header is, and what it names after
    /// reassembly. `None` for IPv4.
    pub v6_next: Option<(usize, u8)>,
    /// Offset of the payload in the datagram, bytes.
    pub offset: usize,
    pub payload_len: usize,
    pub more: bool,
    pub iif: u8,
    /// Raw offset (from the buffer start) of the IPv4 header in the
    /// fragment's buffer.
    pub ip_at: usize,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    active: bool,
    src: u128,
    dst: u128,
    proto: u8,
    ident: u32,
    iif: u8,
    /// IPv6 only, from fragment 0: see [`FragInfo::v6_next`].
    v6_next: Option<(usize, u8)>,
    /// The packet is IPv6.
    v6: bool,
    buf: Handle,
    charge: usize,
    expires: u64,
    /// Payload length, once the last fragment (MF clear) arrived.
    total: Option<usize>,
    /// Header length of fragment 0 once it arrived, else 0.
    hl0: usize,
    ranges: [(u16, u16); MAX_RANGES],
    nranges: usize,
}

const IDLE: Slot = Slot {
    active: false,
    src: 0,
    dst: 0,
    proto: 0,
    ident: 0,
    iif: 0,
    v6_next: None,
    v6: false,
    buf: Handle {
        buf: 0,
        gen: 0,
        data_off: 0,
        data_len: 0,
        l2_off: 0,
        l3_off: 0,
        l4_off: 0,
        iif: 0,
        oif: 0,
        ethertype: 0,
        l4proto: 0,
        csum: 0,
        gso_size: 0,
        gso_type: 0,
        flags: 0,
        ct_id: 0,
        mark: 0,
        nexthop: 0,
        flow_hash: 0,
        tstamp: 0,
        sock: 0,
        stream_off: 0,
    },
    charge: 0,
    expires: 0,
    total: None,
    hl0: 0,
    ranges: [(0, 0); MAX_RANGES],
    nranges: 0,
};

/// A partial datagram whose time ran out.
pub(crate) struct Expired {
    /// The datagram's buffer; the caller frees it.
    pub buf: Handle,
    /// A view of fragment 0's header and the contiguous data after it, for
    /// the ICMP time exceeded quote; `None` when fragment 0 never came.
    pub quote: Option<Handle>,
    /// The datagram was IPv6 (the quote is answered with ICMPv6).
    pub v6: bool,
    /// The interface its fragments came in on.
    pub iif: u8,
}

/// The reassembly table.
pub(crate) struct Reassembly {
    slots: Vec<Slot>,
    mem_total: usize,
    limit_total: usize,
    limit_src: usize,
    timeout_ns: u64,
}

impl Reassembly {
    pub fn new(l: &IpLimits) -> Self {
        Reassembly {
            slots: vec![IDLE; l.max_reassemblies],
            mem_total: 0,
            limit_total: l.frag_mem_total,
            limit_src: l.frag_mem_per_src,
            timeout_ns: l.frag_timeout_ns,
        }
    }

    /// Takes fragment `frag` (always: it is freed or its bytes copied and
    /// then freed). Returns the whole datagram when this fragment completed
    /// it (data window = the datagram, `l3_off` 0, `l4_off` its header
    /// length), `Ok(None)` while it is incomplete, or the drop reason.
    pub fn insert<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        frag: Handle,
        f: &FragInfo,
    ) -> Result<Option<Handle>, Stat> {
        let r = self.insert_inner(now, pool, &frag, f);
        pool.free(&frag);
        r
    }

    fn insert_inner<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        frag: &Handle,
        f: &FragInfo,
    ) -> Result<Option<Handle>, Stat> {
        let end = f.offset + f.payload_len;
        let found = self.slots.iter().position(|s| {
            s.active && s.src == f.src && s.dst == f.dst && s.proto == f.proto && s.ident == f.ident
        });
        // IPv4 bounds the whole datagram, IPv6 what follows the header.
        let fixed = if f.v6_next.is_some() { IPV6_HDR } else { 0 };
        if f.hl + end > MAX_DATAGRAM + fixed || f.hl > HDR_SPACE {
            if let Some(i) = found {
                self.kill(pool, i);
            }
            return Err(Stat::FragTooBig);
        }
        // Linux drops the whole queue here; dropping only the fragment
        // keeps a spoofed bad fragment from killing a good datagram.
        if f.payload_len == 0 || (f.more && f.payload_len & 7 != 0) {
            return Err(Stat::FragBadLength);
        }
        let i = match found {
            Some(i) => i,
            None => self.open(now, pool, f)?,
        };
        let s = &mut self.slots[i];
        let seen_end = if s.nranges > 0 {
            s.ranges[s.nranges - 1].1 as usize
        } else {
            0
        };
        let consistent = match (f.more, s.total) {
            (true, Some(t)) => end <= t,
            (true, None) => true,
            (false, Some(t)) => end == t,
            (false, None) => end >= seen_end,
        };
        if !consistent {
            self.kill(pool, i);
            return Err(Stat::FragInconsistent);
        }
        let (start, stop) = (f.offset as u16, end as u16);
        let ranges = &s.ranges[..s.nranges];
        if ranges.iter().any(|&(a, b)| a <= start && stop <= b) {
            return Err(Stat::FragDuplicate);
        }
        if ranges.iter().any(|&(a, b)| start < b && a < stop) {
            self.kill(pool, i);
            return Err(Stat::FragOverlap);
        }
        let p = ranges.partition_point(|&(a, _)| a < start);
        let left = p > 0 && s.ranges[p - 1].1 == start;
        let right = p < s.nranges && s.ranges[p].0 == stop;
        match (left, right) {
            (true, true) => {
                s.ranges[p - 1].1 = s.ranges[p].1;
                s.ranges.copy_within(p + 1..s.nranges, p);
                s.nranges -= 1;
            }
            (true, false) => s.ranges[p - 1].1 = stop,
            (false, true) => s.ranges[p].0 = start,
            (false, false) => {
                if s.nranges == MAX_RANGES {
                    self.kill(pool, i);
                    return Err(Stat::FragTooManyHoles);
                }
                s.ranges.copy_within(p..s.nranges, p + 1);
                s.ranges[p] = (start, stop);
                s.nranges += 1;
            }
        }
        if !f.more {
            s.total = Some(end);
        }
        let base = s.buf.data_off as usize + HDR_SPACE;
        let buf = s.buf;
        let payload_at = f.ip_at + f.data_at;
        if pool
            .copy_raw(frag, payload_at, &buf, base + f.offset, f.payload_len)
            .is_err()
        {
            self.kill(pool, i);
            return Err(Stat::BadWindow);
        }
        if f.offset == 0 {
            if pool
                .copy_raw(frag, f.ip_at, &buf, base - f.hl, f.hl)
                .is_err()
            {
                self.kill(pool, i);
                return Err(Stat::BadWindow);
            }
            self.slots[i].hl0 = f.hl;
            self.slots[i].v6_next = f.v6_next;
        }
        let s = &self.slots[i];
        match s.total {
            Some(t) if s.hl0 != 0 && s.nranges == 1 && s.ranges[0] == (0, t as u16) => {
                self.finish(pool, i).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Starts reassembling the datagram `f` belongs to.
    fn open<B: Buffers>(&mut self, now: u64, pool: &mut B, f: &FragInfo) -> Result<usize, Stat> {
        let i = self
            .slots
            .iter()
            .position(|s| !s.active)
            .ok_or(Stat::FragTableFull)?;
        // Ask for the largest datagram plus header space: the size is not
        // known until the last fragment.
        let need = HDR_SPACE + MAX_DATAGRAM;
        let from_src: usize = self
            .slots
            .iter()
            .filter(|s| s.active && s.src == f.src)
            .map(|s| s.charge)
            .sum();
        // The charge is the buffer's size, known only once allocated; the
        // request size is a lower bound, good enough to refuse early.
        if self.mem_total + need > self.limit_total || from_src + need > self.limit_src {
            return Err(Stat::FragMemLimit);
        }
        let buf = pool.alloc(need).ok_or(Stat::PoolExhausted)?;
        let charge = pool.raw(&buf).map(|r| r.len()).unwrap_or(need);
        self.mem_total += charge;
        self.slots[i] = Slot {
            active: true,
            src: f.src,
            dst: f.dst,
            proto: f.proto,
            ident: f.ident,
            iif: f.iif,
            v6: f.v6_next.is_some(),
            buf,
            charge,
            expires: now.saturating_add(self.timeout_ns),
            ..IDLE
        };
        Ok(i)
    }

    /// Writes the final header and hands the datagram out.
    fn finish<B: Buffers>(&mut self, pool: &mut B, i: usize) -> Result<Handle, Stat> {
        let s = self.slots[i];
        let total = s.total.unwrap_or(0);
        let len = s.hl0 + total;
        let fixed = if s.v6 { IPV6_HDR } else { 0 };
        if len > MAX_DATAGRAM + fixed {
            self.kill(pool, i);
            return Err(Stat::FragTooBig);
        }
        let hstart = s.buf.data_off as usize + HDR_SPACE - s.hl0;
        let Ok(raw) = pool.raw_mut(&s.buf) else {
            self.kill(pool, i);
            return Err(Stat::StaleHandle);
        };
        let hdr = &mut raw[hstart..hstart + s.hl0];
        match s.v6_next {
            Some((at, next)) if s.v6 => {
                // RFC 8200 §4.5: the payload length covers what follows
                // the fixed header, and the fragment header is gone.
                hdr[4..6].copy_from_slice(&((len - IPV6_HDR) as u16).to_be_bytes());
                hdr[at] = next;
            }
            _ => {
                hdr[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                // Offset and MF go; DF stays as fragment 0 had it.
                hdr[6] &= 0x40;
                hdr[7] = 0;
                hdr[10] = 0;
                hdr[11] = 0;
                let c = checksum::checksum(hdr);
                hdr[10..12].copy_from_slice(&c.to_be_bytes());
            }
        }
        let mut h = s.buf;
        h.data_off = hstart as u32;
        h.data_len = len as u32;
        h.l2_off = 0;
        h.l3_off = 0;
        h.l4_off = s.hl0 as u16;
        h.l4proto = s.proto;
        h.ethertype = if s.v6 {
            ethertype::IPV6
        } else {
            ethertype::IPV4
        };
        h.iif = s.iif;
        self.release(i);
        Ok(h)
    }

    /// Forgets slot `i` without freeing its buffer.
    fn release(&mut self, i: usize) {
        self.mem_total -= self.slots[i].charge;
        self.slots[i] = IDLE;
    }

    /// Drops slot `i` and its buffer.
    fn kill<B: Buffers>(&mut self, pool: &mut B, i: usize) {
        let buf = self.slots[i].buf;
        pool.free(&buf);
        self.release(i);
    }

    /// Takes one partial datagram whose time ran out at `now`.
    pub fn expire(&mut self, now: u64) -> Option<Expired> {
        let i = self
            .slots
            .iter()
            .position(|s| s.active && s.expires <= now)?;
        let s = self.slots[i];
        let quote = (s.hl0 != 0 && s.nranges > 0 && s.ranges[0].0 == 0).then(|| {
            let mut q = s.buf;
            q.data_off = (s.buf.data_off as usize + HDR_SPACE - s.hl0) as u32;
            q.data_len = (s.hl0 + s.ranges[0].1 as usize) as u32;
            q
        });
        self.release(i);
        Some(Expired {
            buf: s.buf,
            quote,
            v6: s.v6,
            iif: s.iif,
        })
    }

    /// When the next partial datagram times out.
    pub fn next_wake(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| s.active)
            .map(|s| s.expires)
            .min()
    }

    /// Datagrams being reassembled.
    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.active).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ipc::{HeapPool, HEADROOM};
    use strata_proto::ipv4::Ipv4Header;

    const S: u64 = 1_000_000_000;

    /// A fragment of the 24-byte payload 0..24 as its own buffer.
    fn frag(
        pool: &mut HeapPool,
        ident: u16,
        off: usize,
        len: usize,
        more: bool,
    ) -> (Handle, FragInfo) {
        let mut h = pool.alloc(20 + len).unwrap();
        h.data_len = (20 + len) as u32;
        let hdr = Ipv4Header {
            header_len: 20,
            tos: 0,
            total_len: (20 + len) as u16,
            ident,
            dont_frag: false,
            more_frags: more,
            frag_offset: off as u16,
            ttl: 64,
            protocol: 17,
            checksum: 0,
            src: [10, 0, 0, 2].into(),
            dst: [10, 0, 0, 1].into(),
        };
        let d = pool.data_mut(&h).unwrap();
        hdr.emit(d).unwrap();
        for (k, b) in d[20..].iter_mut().enumerate() {
            *b = (off + k) as u8;
        }
        let f = FragInfo {
            src: 0x0a00_0002,
            dst: 0x0a00_0001,
            proto: 17,
            ident: u32::from(ident),
            hl: 20,
            data_at: 20,
            v6_next: None,
            offset: off,
            payload_len: len,
            more,
            iif: 1,
            ip_at: HEADROOM as usize,
        };
        (h, f)
    }

    fn table() -> Reassembly {
        Reassembly::new(&IpLimits::default())
    }

    fn put(
        r: &mut Reassembly,
        p: &mut HeapPool,
        now: u64,
        off: usize,
        len: usize,
        more: bool,
    ) -> Result<Option<Handle>, Stat> {
        let (h, f) = frag(p, 7, off, len, more);
        r.insert(now, p, h, &f)
    }

    fn check_whole(p: &mut HeapPool, h: Handle, len: usize) {
        let d = p.data(&h).unwrap();
        let hdr = Ipv4Header::parse(d).unwrap();
        assert_eq!(hdr.total_len as usize, 20 + len);
        assert!(!hdr.is_fragment());
        assert!(d[20..].iter().enumerate().all(|(k, &b)| b == k as u8));
        assert_eq!((h.l3_off, h.l4_off, h.l4proto, h.iif), (0, 20, 17, 1));
        p.free(&h);
    }

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let mut p = HeapPool::new(16, 4);
        let mut r = table();
        assert_eq!(put(&mut r, &mut p, 0, 0, 8, true), Ok(None));
        assert_eq!(put(&mut r, &mut p, 0, 8, 8, true), Ok(None));
        let h = put(&mut r, &mut p, 0, 16, 8, false).unwrap().unwrap();
        check_whole(&mut p, h, 24);

        assert_eq!(put(&mut r, &mut p, 0, 16, 8, false), Ok(None));
        assert_eq!(
            put(&mut r, &mut p, 0, 16, 8, false),
            Err(Stat::FragDuplicate)
        );
        assert_eq!(put(&mut r, &mut p, 0, 0, 8, true), Ok(None));
        assert_eq!(put(&mut r, &mut p, 0, 0, 8, true), Err(Stat::FragDuplicate));
        let h = put(&mut r, &mut p, 0, 8, 8, true).unwrap().unwrap();
        check_whole(&mut p, h, 24);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn overlap_drops_the_datagram() {
        let mut p = HeapPool::new(16, 4);
        let mut r = table();
        assert_eq!(put(&mut r, &mut p, 0, 0, 16, true), Ok(None));
        assert_eq!(put(&mut r, &mut p, 0, 8, 16, false), Err(Stat::FragOverlap));
        assert_eq!(r.active(), 0);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn inconsistent_lengths_and_bad_lengths() {
        let mut p = HeapPool::new(16, 4);
        let mut r = table();
        assert_eq!(put(&mut r, &mut p, 0, 16, 8, false), Ok(None));
        assert_eq!(
            put(&mut r, &mut p, 0, 24, 8, true),
            Err(Stat::FragInconsistent)
        );
        assert_eq!(put(&mut r, &mut p, 0, 0, 7, true), Err(Stat::FragBadLength));
        assert_eq!(
            put(&mut r, &mut p, 0, 65528, 8, false),
            Err(Stat::FragTooBig)
        );
        assert_eq!(r.active(), 0);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn timeout_quotes_fragment_zero() {
        let mut p = HeapPool::new(16, 4);
        let mut r = table();
        assert_eq!(put(&mut r, &mut p, 5, 0, 8, true), Ok(None));
        assert_eq!(r.next_wake(), Some(5 + 30 * S));
        assert!(r.expire(5 + 30 * S - 1).is_none());
        let e = r.expire(5 + 30 * S).unwrap();
        let q = e.quote.unwrap();
        assert_eq!(p.data(&q).unwrap().len(), 28);
        p.free(&e.buf);
        assert_eq!(put(&mut r, &mut p, 0, 8, 8, true), Ok(None));
        let e = r.expire(30 * S).unwrap();
        assert!(e.quote.is_none());
        p.free(&e.buf);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn limits() {
        let mut p = HeapPool::new(16, 4);
        let mut r = Reassembly::new(&IpLimits {
            max_reassemblies: 3,
            frag_mem_per_src: 2 * strata_ipc::LARGE_BUF,
            ..IpLimits::default()
        });
        for ident in 0..3u16 {
            let (h, f) = frag(&mut p, ident, 0, 8, true);
            let want = if ident < 2 {
                Ok(None)
            } else {
                Err(Stat::FragMemLimit)
            };
            assert_eq!(r.insert(0, &mut p, h, &f), want);
        }
        let (h, mut f) = frag(&mut p, 9, 0, 8, true);
        f.src = 99;
        assert_eq!(r.insert(0, &mut p, h, &f), Ok(None));
        let (h, mut f) = frag(&mut p, 9, 0, 8, true);
        f.src = 98;
        assert_eq!(r.insert(0, &mut p, h, &f), Err(Stat::FragTableFull));
        while let Some(e) = r.expire(u64::MAX) {
            p.free(&e.buf);
        }
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn many_holes() {
        let mut p = HeapPool::new(16, 4);
        let mut r = table();
        for k in 0..MAX_RANGES {
            assert_eq!(put(&mut r, &mut p, 0, k * 16, 8, true), Ok(None));
        }
        assert_eq!(
            put(&mut r, &mut p, 0, MAX_RANGES * 16, 8, true),
            Err(Stat::FragTooManyHoles)
        );
        // Filling every hole in reverse order completes it.
        let mut r = table();
        let n = 40;
        for k in (0..n).rev() {
            let res = put(&mut r, &mut p, 0, k * 8, 8, k + 1 < n).unwrap();
            if k == 0 {
                check_whole(&mut p, res.unwrap(), n * 8);
            }
        }
        assert_eq!(p.in_use(), 0);
    }
}
