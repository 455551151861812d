//! Software GRO: merging the in-order TCP/IPv4 segments of one flow that a
//! device without offloads delivers in one batch into a super-segment, so
//! that the layers above handle one packet where the wire carried many
//! (Linux's `napi_gro_receive` and `tcp4_gro_receive`).
//!
//! Segments merge when they continue a held flow exactly: the same
//! addresses and ports, the next sequence number, the same ACK number,
//! window, TOS, TTL and DF, byte-identical TCP options, flags ACK (PSH on
//! the last only), and a payload no longer than the first one's, which
//! becomes the super-segment's segment size. A shorter segment, or one with
//! PSH, is merged and closes the flow. Each segment's checksums are checked
//! before it is merged; the super-segment then carries a partial checksum,
//! as Linux's `tcp4_gro_complete` leaves it, so that a router can send it
//! on to a device (or driverd) that completes it. Nothing is held across
//! batches: [`Gro::flush`] ends each.

use strata_ipc::handle::{csum, gso};
use strata_ipc::{Buffers, Handle, HEADROOM, LARGE_BUF};
use strata_proto::checksum::{pseudo_header_v4, verify};
use strata_proto::offload::IpFrame;

/// Flows held at once in a batch (Linux keeps 8 per NAPI bucket).
const MAX_FLOWS: usize = 8;

/// TCP flags that a merged segment may carry: ACK, and PSH (which closes
/// the flow).
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// What GRO did, for driverd's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroStats {
    /// Super-segments made.
    pub super_frames: u64,
    /// Segments merged into them (the first of each included).
    pub segments: u64,
    /// Segments not merged because their checksum was wrong (passed on
    /// for tcpd to count and drop).
    pub bad_checksum: u64,
    /// Flows cut short for want of a large buffer.
    pub no_buffer: u64,
}

/// The facts about one TCP segment that decide whether it merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seg {
    /// Source and destination addresses and ports.
    key: [u32; 3],
    seq: u32,
    ack: u32,
    /// Window, TOS, TTL and DF packed, all of which must match.
    same: u64,
    /// The TCP options, which must match byte for byte.
    opts: [u8; 40],
    flags: u8,
    /// Offsets in the frame: transport header, payload.
    l4: usize,
    hdrs: usize,
    len: usize,
}

/// A flow held in the current batch.
#[derive(Clone, Copy, Debug)]
struct Flow {
    /// The frame (the first segment, then the super-segment).
    h: Handle,
    first: Seg,
    next_seq: u32,
    segs: u32,
    /// A short or PSH segment ended it: nothing more merges.
    closed: bool,
}

/// The GRO state of one device: the flows held in the current batch.
#[derive(Debug, Default)]
pub struct Gro {
    flows: [Option<Flow>; MAX_FLOWS],
    /// What was done so far.
    pub stats: GroStats,
}

impl Gro {
    /// Takes frame `h` (a received Ethernet frame, checksums unverified):
    /// merges it into a held flow, holds it as a new flow, or hands it on
    /// to `out`, after whatever it must follow.
    pub fn receive<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Vec<Handle>) {
        let Some(seg) = pool.data(&h).ok().and_then(parse) else {
            return out.push(h);
        };
        let ok = mergeable(&seg) && self.check(pool, &h, &seg);
        let slot = self
            .flows
            .iter()
            .position(|f| f.is_some_and(|f| f.first.key == seg.key));
        if let Some(i) = slot {
            let merged = ok
                && self.flows[i].is_some_and(|f| continues(&f, &seg))
                && self.merge(pool, i, &h, &seg);
            if merged {
                return;
            }
            // It does not continue the flow: the held part goes first.
            self.emit(pool, i, out);
        }
        if !ok {
            return out.push(h);
        }
        let free = match self.flows.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.emit(pool, 0, out);
                0
            }
        };
        self.flows[free] = Some(Flow {
            h,
            first: seg,
            next_seq: seg.seq.wrapping_add(seg.len as u32),
            segs: 1,
            closed: seg.flags & PSH != 0,
        });
    }

    /// Ends the batch: every held flow goes to `out`.
    pub fn flush<B: Buffers>(&mut self, pool: &mut B, out: &mut Vec<Handle>) {
        for i in 0..MAX_FLOWS {
            self.emit(pool, i, out);
        }
    }

    /// Whether the segment's IPv4 and TCP checksums are right (a wrong one
    /// is counted and the segment passed on unmerged).
    fn check<B: Buffers>(&mut self, pool: &B, h: &Handle, seg: &Seg) -> bool {
        let Ok(d) = pool.data(h) else { return false };
        let ip = &d[14..seg.l4];
        let tcp = &d[seg.l4..seg.hdrs + seg.len];
        let [src, dst, _] = seg.key;
        let mut c = pseudo_header_v4(src.into(), dst.into(), 6, tcp.len() as u16);
        c.add_bytes(tcp);
        let good = verify(ip) && c.sum() == 0xffff;
        if !good {
            self.stats.bad_checksum += 1;
        }
        good
    }

    /// Appends `seg`'s payload to flow `i`, moving the flow into a large
    /// buffer first if it is still its first segment; frees `h`. False
    /// (nothing changed) when no large buffer can be had.
    fn merge<B: Buffers>(&mut self, pool: &mut B, i: usize, h: &Handle, seg: &Seg) -> bool {
        let Some(mut f) = self.flows[i] else {
            return false;
        };
        if f.segs == 1 {
            let Some(mut big) = pool.alloc(LARGE_BUF - HEADROOM as usize) else {
                self.stats.no_buffer += 1;
                return false;
            };
            big.iif = f.h.iif;
            big.tstamp = f.h.tstamp;
            big.data_len = f.h.data_len;
            let copied = pool
                .copy_raw(
                    &f.h,
                    f.h.data_off as usize,
                    &big,
                    big.data_off as usize,
                    f.h.data_len as usize,
                )
                .is_ok();
            if !copied {
                pool.free(&big);
                return false;
            }
            pool.free(&f.h);
            f.h = big;
        }
        let at = f.h.data_len as usize;
        let (from, to) = (h.data_off as usize + seg.hdrs, f.h.data_off as usize + at);
        if pool.copy_raw(h, from, &f.h, to, seg.len).is_err() {
            return false;
        }
        f.h.data_len += seg.len as u32;
        pool.free(h);
        f.next_seq = f.next_seq.wrapping_add(seg.len as u32);
        f.segs += 1;
        if seg.flags & PSH != 0 {
            f.first.flags |= PSH;
            if let Ok(d) = pool.data_mut(&f.h) {
                d[f.first.l4 + 13] |= PSH;
            }
        }
        f.closed = seg.len < f.first.len || seg.flags & PSH != 0;
        self.flows[i] = Some(f);
        true
    }

    /// Hands flow `i` (if any) to `out`: a lone segment as it came, a
    /// super-segment with its IPv4 length and checksum rewritten and its
    /// TCP checksum made partial.
    fn emit<B: Buffers>(&mut self, pool: &mut B, i: usize, out: &mut Vec<Handle>) {
        let Some(f) = self.flows[i].take() else {
            return;
        };
        let mut h = f.h;
        // Its checksums were checked on the way in.
        h.csum = csum::VERIFIED;
        if f.segs > 1 {
            if let Ok(d) = pool.data_mut(&h) {
                let total = (d.len() - 14) as u16;
                d[16..18].copy_from_slice(&total.to_be_bytes());
                strata_proto::ipv4::fill_checksum(&mut d[14..f.first.l4]);
                let [src, dst, _] = f.first.key;
                let tcp_len = (d.len() - f.first.l4) as u16;
                let pseudo = pseudo_header_v4(src.into(), dst.into(), 6, tcp_len).sum();
                d[f.first.l4 + 16..f.first.l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
            }
            h.csum = csum::PARTIAL;
            h.gso_type = gso::TCPV4;
            h.gso_size = f.first.len as u16;
            self.stats.super_frames += 1;
            self.stats.segments += u64::from(f.segs);
        }
        out.push(h);
    }
}

/// Whether segment `seg` continues flow `f`.
fn continues(f: &Flow, seg: &Seg) -> bool {
    !f.closed
        && mergeable(seg)
        && seg.seq == f.next_seq
        && seg.ack == f.first.ack
        && seg.same == f.first.same
        && seg.len <= f.first.len
        && seg.hdrs - seg.l4 == f.first.hdrs - f.first.l4
        && seg.opts == f.first.opts
        && f.next_seq.wrapping_sub(f.first.seq) as usize + seg.len
            <= gso::tcp_max_payload(f.first.len as u32) as usize
}

/// Whether a segment may be merged at all: data with ACK, and no flag but
/// PSH beside it.
fn mergeable(seg: &Seg) -> bool {
    seg.len > 0 && seg.flags & !PSH == ACK
}

/// The facts GRO needs about frame `d`, if it is an unfragmented TCP/IPv4
/// segment without IPv4 options whose lengths agree with the frame.
fn parse(d: &[u8]) -> Option<Seg> {
    let f = IpFrame::parse(d).ok()?;
    if f.v6
        || f.protocol != 6
        || f.fragment
        || f.l4 != 14 + 20
        || f.end != d.len()
        || f.l4 + 20 > f.end
    {
        return None;
    }
    let thl = usize::from(d[f.l4 + 12] >> 4) * 4;
    let hdrs = f.l4 + thl;
    if thl < 20 || hdrs > f.end {
        return None;
    }
    let mut opts = [0u8; 40];
    opts[..thl - 20].copy_from_slice(&d[f.l4 + 20..hdrs]);
    let be32 = |at: usize| u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
    let be16 = |at: usize| u16::from_be_bytes([d[at], d[at + 1]]);
    Some(Seg {
        key: [be32(26), be32(30), be32(f.l4)],
        seq: be32(f.l4 + 4),
        ack: be32(f.l4 + 8),
        same: u64::from(be16(f.l4 + 14))
            | u64::from(d[15]) << 16
            | u64::from(d[22]) << 24
            | u64::from(d[20] & 0x40) << 32,
        opts,
        flags: d[f.l4 + 13],
        l4: f.l4,
        hdrs,
        len: f.end - hdrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use strata_ipc::HeapPool;
    use strata_proto::ipv4::Ipv4Header;
    use strata_proto::offload::segment_tcp4;
    use strata_proto::tcp::{TcpFlags, TcpHeader, TcpOptions};

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// A received frame: `len` payload bytes of flow `sport` at `seq`.
    fn frame(
        pool: &mut HeapPool,
        sport: u16,
        seq: u32,
        len: usize,
        fl: TcpFlags,
        ts: u32,
    ) -> Handle {
        let opts = TcpOptions {
            timestamp: Some((ts, 9)),
            ..TcpOptions::default()
        };
        let thl = TcpHeader::header_len_for(&opts);
        let total = 20 + thl + len;
        let mut f = vec![0u8; 14 + total];
        f[12] = 0x08;
        Ipv4Header {
            header_len: 20,
            tos: 0,
            total_len: total as u16,
            ident: seq as u16,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            ttl: 64,
            protocol: 6,
            checksum: 0,
            src: A,
            dst: B,
        }
        .emit(&mut f[14..])
        .unwrap();
        for (i, b) in f[34 + thl..].iter_mut().enumerate() {
            *b = (seq as usize + i) as u8;
        }
        let tcp = TcpHeader {
            src_port: sport,
            dst_port: 80,
            seq,
            ack: 77,
            header_len: 0,
            flags: fl,
            window: 500,
            checksum: 0,
            urgent: 0,
        };
        tcp.emit(&opts, &mut f[34..], A, B).unwrap();
        let mut h = pool.alloc(f.len()).unwrap();
        h.data_len = f.len() as u32;
        pool.data_mut(&h).unwrap().copy_from_slice(&f);
        h
    }

    fn run(pool: &mut HeapPool, frames: Vec<Handle>) -> (Vec<Handle>, GroStats) {
        let mut g = Gro::default();
        let mut out = Vec::new();
        for h in frames {
            g.receive(pool, h, &mut out);
        }
        g.flush(pool, &mut out);
        (out, g.stats)
    }

    /// The payload of `h` cut back into segments (as driverd's software
    /// GSO would), checking each one's checksums.
    fn resegment(pool: &HeapPool, h: &Handle) -> Vec<(u32, Vec<u8>)> {
        let d = pool.data(h).unwrap();
        let mss = if h.gso_size > 0 {
            h.gso_size
        } else {
            d.len() as u16
        };
        segment_tcp4(d, mss)
            .unwrap()
            .map(|s| {
                let mut seg = s.headers()[34..].to_vec();
                seg.extend_from_slice(s.payload);
                assert!(TcpHeader::verify_checksum(&seg, A, B));
                (TcpHeader::parse(&seg).unwrap().0.seq, s.payload.to_vec())
            })
            .collect()
    }

    #[test]
    fn in_order_segments_of_a_flow_become_one_super_segment() {
        let mut p = HeapPool::new(64, 4);
        let mut v: Vec<_> = (0..10)
            .map(|i| frame(&mut p, 1, 1000 + i * 1400, 1400, TcpFlags::ACK, 5))
            .collect();
        v.push(frame(
            &mut p,
            1,
            1000 + 14_000,
            300,
            TcpFlags::ACK | TcpFlags::PSH,
            5,
        ));
        let (out, st) = run(&mut p, v);
        assert_eq!(out.len(), 1);
        let h = out[0];
        assert_eq!(
            (h.gso_type, h.gso_size, h.csum),
            (gso::TCPV4, 1400, csum::PARTIAL)
        );
        assert_eq!((st.super_frames, st.segments), (1, 11));
        let d = p.data(&h).unwrap();
        let ip = Ipv4Header::parse(&d[14..]).unwrap();
        assert_eq!(usize::from(ip.total_len), d.len() - 14);
        assert!(strata_proto::checksum::verify(&d[14..34]));
        let segs = resegment(&p, &h);
        assert_eq!(segs.len(), 11);
        for (i, (seq, payload)) in segs.iter().enumerate() {
            assert_eq!(*seq, 1000 + i as u32 * 1400);
            let want: Vec<u8> = (0..payload.len())
                .map(|k| (*seq as usize + k) as u8)
                .collect();
            assert_eq!(payload, &want);
        }
        // The last segment's PSH survives.
        assert_ne!(d[34 + 13] & PSH, 0);
        p.free(&h);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn what_does_not_continue_a_flow_is_not_merged_into_it() {
        let mut p = HeapPool::new(64, 8);
        let v = vec![
            frame(&mut p, 1, 0, 1000, TcpFlags::ACK, 5),
            frame(&mut p, 1, 1000, 1000, TcpFlags::ACK, 5),
            // A gap.
            frame(&mut p, 1, 3000, 1000, TcpFlags::ACK, 5),
            // Another flow in between.
            frame(&mut p, 2, 0, 1000, TcpFlags::ACK, 5),
            frame(&mut p, 1, 4000, 1000, TcpFlags::ACK, 5),
            // A new timestamp.
            frame(&mut p, 1, 5000, 1000, TcpFlags::ACK, 6),
            frame(&mut p, 2, 1000, 1000, TcpFlags::ACK, 5),
            // A FIN is never merged, and comes after its flow's data.
            frame(&mut p, 2, 2000, 10, TcpFlags::ACK | TcpFlags::FIN, 5),
        ];
        let (out, st) = run(&mut p, v);
        let seqs: Vec<Vec<u32>> = out
            .iter()
            .map(|h| resegment(&p, h).into_iter().map(|(s, _)| s).collect())
            .collect();
        assert_eq!(
            seqs,
            [
                vec![0, 1000],
                vec![3000, 4000],
                vec![0, 1000],
                vec![2000],
                vec![5000]
            ]
        );
        assert_eq!(st.super_frames, 3);
        for h in out {
            p.free(&h);
        }
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn a_bad_checksum_or_no_large_buffer_passes_segments_on_alone() {
        let mut p = HeapPool::new(64, 0);
        let a = frame(&mut p, 1, 0, 1000, TcpFlags::ACK, 5);
        let b = frame(&mut p, 1, 1000, 1000, TcpFlags::ACK, 5);
        let c = frame(&mut p, 1, 2000, 1000, TcpFlags::ACK, 5);
        p.data_mut(&c).unwrap()[100] ^= 1;
        let (out, st) = run(&mut p, vec![a, b, c]);
        assert_eq!(out.len(), 3, "each alone: no large buffer, then a bad one");
        assert_eq!((st.no_buffer, st.bad_checksum, st.super_frames), (1, 1, 0));
        // Checked ones are marked so; the bad one is left for tcpd.
        assert_eq!(
            out.iter().map(|h| h.csum).collect::<Vec<_>>(),
            [csum::VERIFIED, csum::VERIFIED, csum::NONE]
        );
        for h in out {
            p.free(&h);
        }
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn frames_that_are_not_tcp_data_pass_at_once() {
        let mut p = HeapPool::new(8, 2);
        let mut g = Gro::default();
        let mut out = Vec::new();
        let ack = frame(&mut p, 1, 0, 0, TcpFlags::ACK, 5);
        g.receive(&mut p, ack, &mut out);
        let mut arp = p.alloc(60).unwrap();
        arp.data_len = 60;
        g.receive(&mut p, arp, &mut out);
        assert_eq!(out.len(), 2);
        for h in out {
            p.free(&h);
        }
    }
}
