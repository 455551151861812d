//! Sending: building segments (IP and TCP headers, options, checksums;
//! the IP header of either family is [`ip::emit`]'s),
//! the transmit engine (windows, Nagle, SACK-driven recovery, FIN,
//! persist), ACK and window policy, RTT/RTO arithmetic, and what goes up
//! to sockd (payload within the receive credit, notifications in order).

use strata_ipc::handle::gso;
use strata_ipc::l4::{op, L4Ctl, SendCredit};
use strata_ipc::{Buffers, Handle};
use strata_proto::ipv4::protocol;
use strata_proto::tcp::{TcpFlags, TcpHeader, TcpOptions};

use crate::block::{cf, ef, pend, rec, ConnBlock, State, NIL};
use crate::config::TcpConfig;
use crate::ip::{self, is_v4};
use crate::{cc, conn_msg, isn, sack, seq, Outputs, Stat, TcpCore};

/// Room ipd needs in front of a datagram for the Ethernet header.
const L2_ROOM: u32 = 14;

/// The retransmission timeout with back-off applied, in ns.
pub(crate) fn rto_ns(c: &ConnBlock, cfg: &TcpConfig) -> u64 {
    let base = u64::from(c.rto_us).max(1) * 1000;
    let max = cfg.rto_max_ms * 1_000_000;
    base.saturating_mul(1u64 << c.backoff.min(30)).min(max)
}

/// Feeds an RTT sample (µs) into SRTT/RTTVAR and recomputes the RTO
/// (RFC 6298 §2, clamped to the configured bounds).
pub(crate) fn rtt_sample(c: &mut ConnBlock, us: u64, cfg: &TcpConfig) {
    let r = us.clamp(1, u64::from(u32::MAX / 8)) as u32;
    if c.srtt_us == 0 {
        c.srtt_us = r;
        c.rttvar_us = r / 2;
    } else {
        let delta = c.srtt_us.abs_diff(r);
        c.rttvar_us = c.rttvar_us - c.rttvar_us / 4 + delta / 4;
        c.srtt_us = c.srtt_us - c.srtt_us / 8 + r / 8;
    }
    let rto = u64::from(c.srtt_us) + u64::from(c.rttvar_us.saturating_mul(4)).max(1000);
    let rto = rto.clamp(cfg.rto_min_ms * 1000, cfg.rto_max_ms * 1000);
    c.rto_us = rto.min(u64::from(u32::MAX)) as u32;
}

/// Receive-window arithmetic.
impl TcpCore<'_> {
    /// Bytes the peer may send beyond `rcv_nxt` as far as credit goes.
    pub(crate) fn rcv_space(&self, c: &ConnBlock) -> u32 {
        // Credit sockd has not returned is data waiting in the socket's
        // ring: it fills the (auto-tuned) buffer as much as tcpd's queue.
        let unread = self.rx_ring(c).saturating_sub(c.rx_credit);
        let cap = Self::rcvbuf(c).saturating_sub(unread);
        c.rx_credit.min(cap).saturating_sub(c.rcv_q.bytes)
    }

    /// The socket's receive ring: what tcpd may have delivered unread.
    pub(crate) fn rx_ring(&self, c: &ConnBlock) -> u32 {
        match c.rx_ring {
            0 => self.cfg.socket_rx_bytes,
            n => n.min(self.cfg.socket_rx_bytes),
        }
    }

    /// The connection's receive buffer (a block from before auto-tuning
    /// existed has 0: no cap beyond the credit).
    pub(crate) fn rcvbuf(c: &ConnBlock) -> u32 {
        if c.rcvbuf == 0 {
            u32::MAX
        } else {
            c.rcvbuf
        }
    }

    /// The receive buffer new connections start with.
    pub(crate) fn initial_rcvbuf(&self) -> u32 {
        self.cfg
            .rcvbuf_initial
            .clamp(1, self.cfg.socket_rx_bytes.max(1))
    }

    /// Receive-buffer auto-tuning (dynamic right-sizing, as Linux's
    /// `tcp_rcv_space_adjust`): once per round trip, room for twice what
    /// the application read in the last one plus sixteen segments of
    /// slack, so a reader keeping up sees the window double each round
    /// trip until the socket's ring bounds it, while a slow or idle reader
    /// keeps a small one and with it few of tcpd's buffers.
    pub(crate) fn rcvbuf_adjust(&mut self, c: &mut ConnBlock) {
        let max = self.rx_ring(c);
        if c.rcvbuf == 0 || c.rcvbuf >= max || c.has(cf::FIN_RCVD) {
            return;
        }
        let now_ms = (self.now / 1_000_000) as u32;
        let rtt_ms = (c.srtt_us / 1000).max(1);
        if now_ms.wrapping_sub(c.rcvq_time) < rtt_ms {
            return;
        }
        let copied = c.rcv_read.wrapping_sub(c.rcvq_seq);
        let want = copied
            .saturating_mul(2)
            .saturating_add(16 * c.our_mss.max(1));
        if want > c.rcvbuf {
            c.rcvbuf = want.min(max);
            self.stats.inc(Stat::RcvbufGrown);
        }
        c.rcvq_seq = c.rcv_read;
        c.rcvq_time = now_ms;
    }

    /// The window currently offered: what is left of the last
    /// advertisement.
    pub(crate) fn rcv_wnd(c: &ConnBlock) -> u32 {
        if seq::gt(c.rcv_adv, c.rcv_nxt) {
            c.rcv_adv.wrapping_sub(c.rcv_nxt)
        } else {
            0
        }
    }

    /// The window field of a non-SYN segment: the free space, never
    /// moving the right edge back (RFC 9293 §3.8.6.2.2) and never
    /// opening by less than min(buffer/2, MSS) (receiver SWS avoidance);
    /// records the new right edge.
    fn advertise(&self, c: &mut ConnBlock) -> u16 {
        let cur = Self::rcv_wnd(c);
        let free = self.rcv_space(c);
        let sws = (Self::rcvbuf(c) / 2).min(c.our_mss.max(1));
        let w = if free > cur && (free - cur >= sws || cur == 0 && free >= sws) {
            free
        } else {
            cur
        };
        let ws = if c.has(cf::WS_OK) { c.rcv_wscale } else { 0 };
        let mut field = (w >> ws).min(65535);
        if (field << ws) < cur && field < 65535 {
            field += 1;
        }
        c.rcv_adv = c.rcv_nxt.wrapping_add(field << ws);
        field as u16
    }

    /// Whether sockd reading enough to (at least) double a small window
    /// warrants a window update (Linux `tcp_cleanup_rbuf`).
    pub(crate) fn window_update_due(&self, c: &ConnBlock) -> bool {
        let cur = Self::rcv_wnd(c);
        let free = self.rcv_space(c);
        c.state().is_synchronized()
            && !c.has(cf::FIN_RCVD)
            && cur.saturating_mul(2) <= Self::rcvbuf(c).min(self.rx_ring(c))
            && free >= cur.saturating_mul(2)
            && free - cur >= c.our_mss.max(1)
    }

    /// Our timestamp clock for `c` (ms).
    pub(crate) fn ts_now(&self, c: &ConnBlock) -> u32 {
        ((self.now / 1_000_000) as u32).wrapping_add(c.ts_offset)
    }
}

/// Segment building.
impl TcpCore<'_> {
    /// Builds one segment of connection `c` and queues it for ipd:
    /// sequence number `seq`, `flags`, and `len` payload bytes from the
    /// send queue starting at `seq` (`len` 0: none). Segments with ACK
    /// carry `rcv_nxt` and the window, and settle pending ACKs. False when
    /// no buffer could be had (the block then goes on the retry list).
    pub(crate) fn xmit<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        seqno: u32,
        fl: TcpFlags,
        len: u32,
        out: &mut Outputs,
    ) -> bool {
        let mut opts = TcpOptions::default();
        let syn = fl.contains(TcpFlags::SYN);
        if syn {
            let active = !c.has(cf::PASSIVE);
            opts.mss = Some(c.our_mss.min(65535) as u16);
            if self.cfg.window_scaling && (active || c.has(cf::PEER_WS)) {
                opts.window_scale = Some(c.rcv_wscale as u8);
            }
            if self.cfg.sack && (active || c.has(cf::SACK_OK)) {
                opts.sack_permitted = true;
            }
            if self.cfg.timestamps && (active || c.has(cf::TS_OK)) {
                let ecr = if fl.contains(TcpFlags::ACK) {
                    c.ts_recent
                } else {
                    0
                };
                opts.timestamp = Some((self.ts_now(c), ecr));
            }
        } else {
            if c.has(cf::TS_OK) {
                opts.timestamp = Some((self.ts_now(c), c.ts_recent));
            }
            if c.has(cf::SACK_OK) && fl.contains(TcpFlags::ACK) && !c.ooo_q.is_empty() {
                self.fill_sack(c, &mut opts);
                // A data segment was cut to `snd_mss`, which leaves room
                // for the timestamp option only (`set_mss`): SACK blocks
                // beyond what the payload leaves free wait for a segment
                // with room (a pure ACK), or the datagram would exceed the
                // path's MTU and ipd would drop it (RFC 2018 §3 lets a
                // segment carry fewer blocks than there are).
                if len > 0 {
                    let ts = if c.has(cf::TS_OK) { 12 } else { 0 };
                    let room = TcpHeader::MIN_LEN + ts + c.snd_mss.saturating_sub(len) as usize;
                    while opts.sack_count > 0 && TcpHeader::header_len_for(&opts) > room {
                        opts.sack_count -= 1;
                    }
                }
            }
        }
        let thl = TcpHeader::header_len_for(&opts);
        let hdrs = (ip::header_len(c.remote_addr) + thl) as u32;
        let first = seq::ge(seqno, c.snd_max);
        let h = match self.segment_buffer(pool, c, seqno, len, hdrs, first) {
            Some(h) => h,
            None => {
                // Tried again from the retry list (`TcpCore::end`), not by
                // a timer per connection: a hundred thousand connections
                // short of a buffer cost a poll no more than its budget.
                self.stats.inc(Stat::PoolExhausted);
                self.xmit_missed = true;
                return false;
            }
        };
        let window = if syn {
            self.rcv_space(c).min(65535) as u16
        } else {
            self.advertise(c)
        };
        let ack = if fl.contains(TcpFlags::ACK) {
            c.last_ack_sent = c.rcv_nxt;
            c.flags &= !cf::ACK_NOW;
            c.segs_unacked = 0;
            c.t_delack = 0;
            c.quickacks = c.quickacks.saturating_sub(1);
            if syn {
                c.rcv_adv = c.rcv_nxt.wrapping_add(u32::from(window));
            }
            c.rcv_nxt
        } else {
            0
        };
        let tcp = TcpHeader {
            src_port: c.local_port as u16,
            dst_port: c.remote_port as u16,
            seq: seqno,
            ack,
            header_len: 0,
            flags: fl,
            window,
            checksum: 0,
            urgent: 0,
        };
        let ends = (c.local_addr, c.remote_addr);
        if self.emit_headers(pool, &h, ends, c.flow_label, &tcp, &opts, true) {
            self.count_out(c.remote_addr, fl);
            let mut o = ip::finish_handle(&h, c.remote_addr, true);
            // Only IPv4 sends super-segments (`send_one`).
            if len > c.snd_mss && is_v4(c.remote_addr) {
                o.gso_type = gso::TCPV4;
                o.gso_size = c.snd_mss as u16;
                self.stats.inc(Stat::OutSuperSegs);
            }
            out.to_ip.push(o);
            if len > 0 {
                // Whatever is SACKed above the fence was sent after this
                // segment (of a super-segment, its first): the evidence
                // that it was lost.
                let fence = self.fence(c, seqno, seqno.wrapping_add(len));
                let us = (self.now / 1000) as u32;
                self.mark_sent(c, seqno, len, us);
                if seqno == c.snd_una {
                    c.rtx_fence = fence;
                    c.rtx_fence_us = us;
                    c.rtx_sacked = 0;
                }
            }
            true
        } else {
            pool.free(&h);
            self.stats.inc(Stat::BadWindow);
            false
        }
    }

    /// A buffer holding `hdrs` bytes of room and then `len` payload bytes
    /// from the send queue at `seqno`: the queued buffer itself, shared,
    /// when the segment starts one of sockd's buffers and ends inside it,
    /// is sent for the first time, and its headroom suffices; else a fresh
    /// copy.
    fn segment_buffer<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        seqno: u32,
        len: u32,
        hdrs: u32,
        first: bool,
    ) -> Option<Handle> {
        if len > 0 && first {
            if let Some(e) = self.find_entry(c, seqno) {
                let x = *self.slab.get(e);
                if x.seq == seqno
                    && len <= x.len()
                    && x.h.data_off >= hdrs + L2_ROOM
                    && pool.add_ref(&x.h).is_ok()
                {
                    let mut h = Handle::new(x.h.buf, x.h.gen, x.h.data_off);
                    h.data_len = len;
                    h.push_front(hdrs);
                    return Some(h);
                }
            }
        }
        let mut h = pool.alloc(hdrs as usize + len as usize)?;
        h.data_len = hdrs + len;
        if len > 0 {
            let mut at = hdrs as usize;
            let mut s = seqno;
            let mut left = len;
            let mut e = self.find_entry(c, seqno);
            while left > 0 {
                let Some(i) = e else { break };
                let x = *self.slab.get(i);
                let off = s.wrapping_sub(x.seq);
                let n = x.len().saturating_sub(off).min(left);
                let ok = n > 0
                    && pool
                        .copy_raw(
                            &x.h,
                            x.h.data_off as usize + off as usize,
                            &h,
                            h.data_off as usize + at,
                            n as usize,
                        )
                        .is_ok();
                if !ok {
                    pool.free(&h);
                    return None;
                }
                at += n as usize;
                s = s.wrapping_add(n);
                left -= n;
                e = (x.next != NIL).then_some(x.next);
            }
            if left > 0 {
                pool.free(&h);
                return None;
            }
            self.stats.add(Stat::TxCopyBytes, u64::from(len));
        }
        Some(h)
    }

    /// The fence of the segment sent at `start` as part of a send ending
    /// at `end`: data SACKed above it was sent later. The segments of a
    /// super-segment leave in sequence order, so each one's fence is its
    /// own end (as RACK breaks a tie of send times by sequence, RFC 8985
    /// §6.1); a retransmission's is SND.NXT, all new data being later.
    fn fence(&self, c: &ConnBlock, start: u32, end: u32) -> u32 {
        let seg_end = seq::min(end, start.wrapping_add(c.snd_mss.max(1)));
        seq::max(c.snd_nxt, seg_end)
    }

    /// Marks the send-queue entries holding bytes of the `len` bytes sent
    /// from `seqno` whose first byte was among them (and the one holding
    /// `seqno`) as sent now, each with its fence.
    fn mark_sent(&mut self, c: &mut ConnBlock, seqno: u32, len: u32, us: u32) {
        let end = seqno.wrapping_add(len);
        let mut e = self.find_entry(c, seqno);
        while let Some(i) = e {
            let start = seq::max(self.slab.get(i).seq, seqno);
            let fence = self.fence(c, start, end);
            self.slab.set_sent(i, fence, us);
            let next = self.slab.get(i).next;
            e = (next != NIL && seq::lt(self.slab.get(next).seq, end)).then_some(next);
        }
    }

    /// The send-queue entry holding sequence number `s`, starting from the
    /// cursor when it is still one of `c`'s send entries at or before `s`.
    pub(crate) fn find_entry(&mut self, c: &mut ConnBlock, s: u32) -> Option<u32> {
        let mut i = c.snd_q.head;
        if let Some(x) = self.slab.e.get(c.snd_cur as usize) {
            if x.owner == c.index.wrapping_add(1)
                && x.flags & ef::SND != 0
                && seq::le(x.seq, s)
                && seq::ge(x.seq, c.snd_una)
            {
                i = c.snd_cur;
            }
        }
        let mut steps = 0usize;
        while i != NIL && steps <= self.slab.e.len() {
            let x = self.slab.get(i);
            if seq::within(s, x.seq, x.end()) {
                c.snd_cur = i;
                return Some(i);
            }
            if seq::gt(x.seq, s) {
                break;
            }
            i = x.next;
            steps += 1;
        }
        None
    }

    /// Writes the IP header (of the family of `src` and `dst`, which are
    /// one; see [`ip::emit`]) and the TCP header at the start of `h`'s
    /// data window, whose payload is in place; the TCP checksum final, or
    /// with `partial` left for the device or driverd to complete. `flow`
    /// is an IPv6 packet's flow label.
    #[allow(clippy::too_many_arguments)]
    fn emit_headers<B: Buffers>(
        &mut self,
        pool: &mut B,
        h: &Handle,
        (src, dst): (u128, u128),
        flow: u32,
        tcp: &TcpHeader,
        opts: &TcpOptions,
        partial: bool,
    ) -> bool {
        if is_v4(dst) {
            self.ident = self.ident.wrapping_add(1);
        }
        let stamp = ip::Stamp {
            ident: self.ident,
            flow,
        };
        match pool.data_mut(h) {
            Ok(d) => ip::emit(d, src, dst, stamp, tcp, opts, partial),
            Err(_) => false,
        }
    }

    /// Counts a segment sent to `peer` with flags `fl`.
    fn count_out(&mut self, peer: u128, fl: TcpFlags) {
        self.stats.inc(Stat::OutSegs);
        if !is_v4(peer) {
            self.stats.inc(Stat::OutSegs6);
        }
        if fl.contains(TcpFlags::RST) {
            self.stats.inc(Stat::OutRsts);
        }
    }

    /// A segment with no connection (RST, or a SYN cookie's SYN-ACK) from
    /// `src:sport` to `dst:dport` (addresses of one family), its checksum
    /// final. Over IPv6 its flow label is the one the connection of these
    /// addresses and ports has (or would have).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn xmit_bare<B: Buffers>(
        &mut self,
        pool: &mut B,
        (src, sport): (u128, u16),
        (dst, dport): (u128, u16),
        seqno: u32,
        ack: u32,
        fl: TcpFlags,
        window: u16,
        opts: &TcpOptions,
        out: &mut Outputs,
    ) {
        let n = ip::header_len(dst) + TcpHeader::header_len_for(opts);
        let Some(mut h) = pool.alloc(n) else {
            self.stats.inc(Stat::PoolExhausted);
            return;
        };
        h.data_len = n as u32;
        let tcp = TcpHeader {
            src_port: sport,
            dst_port: dport,
            seq: seqno,
            ack,
            header_len: 0,
            flags: fl,
            window,
            checksum: 0,
            urgent: 0,
        };
        let flow = if is_v4(dst) {
            0
        } else {
            isn::flow_label(self.cfg.secret, src, sport, dst, dport)
        };
        if self.emit_headers(pool, &h, (src, dst), flow, &tcp, opts, false) {
            self.count_out(dst, fl);
            out.to_ip.push(ip::finish_handle(&h, dst, false));
        } else {
            pool.free(&h);
        }
    }

    /// SACK blocks from the out-of-order queue: the run holding the most
    /// recent segment first, then the others in order (RFC 2018 §4).
    fn fill_sack(&self, c: &ConnBlock, opts: &mut TcpOptions) {
        let mut runs = [(0u32, 0u32); 8];
        let mut n = 0;
        let mut i = c.ooo_q.head;
        let mut steps = 0;
        while i != NIL && steps <= self.slab.e.len() {
            let x = self.slab.get(i);
            if n > 0 && runs[n - 1].1 == x.seq {
                runs[n - 1].1 = x.end();
            } else if n < runs.len() {
                runs[n] = (x.seq, x.end());
                n += 1;
            } else {
                break;
            }
            i = x.next;
            steps += 1;
        }
        let recent = runs[..n]
            .iter()
            .position(|&(l, r)| seq::within(c.last_ooo, l, r.wrapping_add(1)));
        if let Some(k) = recent {
            opts.push_sack(runs[k]);
        }
        for (k, &r) in runs[..n].iter().enumerate() {
            if Some(k) != recent && r.0 != r.1 && !opts.push_sack(r) {
                break;
            }
        }
    }
}

/// The transmit engine.
impl TcpCore<'_> {
    /// Sends whatever `c` may send now: a SYN or SYN-ACK, data within the
    /// congestion and receive windows (Nagle and sender SWS avoidance
    /// applied), retransmissions picked by the SACK scoreboard during
    /// recovery, the FIN, and a pure ACK if one is due and nothing else
    /// carried it. Arms the retransmission and delayed-ACK timers.
    pub(crate) fn output<B: Buffers>(
        &mut self,
        pool: &mut B,
        _idx: usize,
        c: &mut ConnBlock,
        out: &mut Outputs,
    ) {
        let before = out.to_ip.len();
        let state = c.state();
        match state {
            // RFC 9293 §3.10.1 OPEN (active: SYN), §3.10.7.2 (passive:
            // SYN-ACK); `snd_nxt` back at the ISN means (re)send it.
            State::SynSent | State::SynReceived if c.snd_nxt == c.iss => {
                let fl = if state == State::SynSent {
                    TcpFlags::SYN
                } else {
                    TcpFlags::SYN | TcpFlags::ACK
                };
                if self.xmit(pool, c, c.iss, fl, 0, out) {
                    if c.retries > 0 {
                        self.stats.inc(Stat::RetransSegs);
                    } else if c.rtt_time == 0 {
                        c.rtt_time = self.now;
                        c.rtt_seq = c.iss;
                    }
                    c.snd_nxt = c.iss.wrapping_add(1);
                    c.snd_max = seq::max(c.snd_max, c.snd_nxt);
                }
            }
            // Our SYN is out: data waits for ESTABLISHED (§3.10.2).
            State::SynSent | State::SynReceived => {}
            // §3.10.2 SEND, §3.10.4 CLOSE: data, then our FIN, while the
            // send side is open or its FIN unacknowledged.
            State::Established
            | State::CloseWait
            | State::FinWait1
            | State::Closing
            | State::LastAck => {
                self.send_data(pool, c, out);
            }
            // Everything of ours is acknowledged (FIN-WAIT-2, TIME-WAIT),
            // or there is no connection.
            State::FinWait2 | State::TimeWait | State::Closed | State::Listen => {}
        }
        let sent_ack = out.to_ip.len() > before;
        if c.has(cf::ACK_NOW) && !sent_ack && c.state().has_peer_syn() {
            let s = acceptable_seq(c);
            // No buffer: ACK_NOW stays, and the block waits its turn on
            // the retry list (`xmit`, `TcpCore::end`).
            self.xmit(pool, c, s, TcpFlags::ACK, 0, out);
        }
        // Retransmission timer: on while anything is unacknowledged.
        if c.snd_una != c.snd_max && c.t_rtx == 0 {
            c.t_rtx = self.now + rto_ns(c, &self.cfg);
        }
        self.arm_tlp(c);
    }

    /// Arms the tail loss probe (RFC 8985 §7.2): with data in flight and
    /// no recovery under way, an ACK-less 2·SRTT means the last segments
    /// or their ACKs were lost; a probe then draws an ACK (with SACK)
    /// that lets loss detection work, where waiting for the RTO would
    /// cost 200 ms or more. One probe per silence: then the RTO.
    fn arm_tlp(&self, c: &mut ConnBlock) {
        if !self.cfg.tail_loss_probe
            || !c.has(cf::SACK_OK)
            || c.has(cf::TLP_SENT | cf::TLP_TIMER | cf::REO_TIMER | cf::LOSS | cf::PERSIST)
            || c.recovery != rec::NONE
            || c.snd_una == c.snd_max
            || c.srtt_us == 0
            || !c.state().sends_new_data()
        {
            return;
        }
        let srtt = u64::from(c.srtt_us) * 1000;
        let mut pto = 2 * srtt + 2_000_000;
        if c.snd_max.wrapping_sub(c.snd_una) <= c.snd_mss {
            // A lone segment's ACK may be delayed by the peer.
            pto = pto.max(srtt * 3 / 2 + self.cfg.delack_ms * 1_000_000);
        }
        let at = self.now + pto;
        if c.t_rtx == 0 || at < c.t_rtx {
            c.t_rtx = at;
            c.flags |= cf::TLP_TIMER;
        }
    }

    /// Sends the tail loss probe (RFC 8985 §7.3): new data if the peer's
    /// window has room, else the last segment again.
    pub(crate) fn tlp_probe<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        out: &mut Outputs,
    ) {
        self.stats.inc(Stat::TlpProbes);
        c.flags |= cf::TLP_SENT;
        let mss = c.snd_mss.max(1);
        let sent = c.snd_nxt == c.snd_max
            && seq::lt(c.snd_nxt, c.snd_end)
            && self.send_one(pool, c, mss, true, out);
        if !sent {
            let end = seq::min(c.snd_max, c.snd_end);
            let s = seq::max(c.snd_una, end.wrapping_sub(mss));
            if seq::lt(s, end) && self.xmit(pool, c, s, TcpFlags::ACK, end.wrapping_sub(s), out) {
                self.stats.inc(Stat::RetransSegs);
                c.flags |= cf::RTX_DONE;
            } else if seq::gt(c.snd_max, c.snd_end) {
                // Only our FIN is outstanding.
                self.retransmit_head(pool, c, out);
            }
        }
        c.t_rtx = self.now + rto_ns(c, &self.cfg);
    }

    /// Data, FIN and recovery retransmissions for a synchronized state.
    fn send_data<B: Buffers>(&mut self, pool: &mut B, c: &mut ConnBlock, out: &mut Outputs) {
        let mss = c.snd_mss.max(1);
        if c.recovery == rec::SACK {
            // RFC 6675 §5 step (C): while cwnd − pipe ≥ SMSS, NextSeg.
            let mut guard = 0;
            loop {
                guard += 1;
                if guard > 10_000 {
                    break;
                }
                let pipe = sack::pipe(c, mss);
                if c.cwnd < pipe.saturating_add(mss) {
                    break;
                }
                let flight = c.snd_nxt.wrapping_sub(c.snd_una);
                let have_new = seq::lt(c.snd_nxt, c.snd_end)
                    && flight.saturating_add(mss.min(c.snd_end.wrapping_sub(c.snd_nxt)))
                        <= c.snd_wnd;
                match sack::next_seg(c, mss, have_new) {
                    Some(sack::Next::Rtx(s, len)) => {
                        let len = len.min(c.snd_end.wrapping_sub(s));
                        if len == 0 || !self.xmit(pool, c, s, TcpFlags::ACK, len, out) {
                            break;
                        }
                        self.stats.inc(Stat::RetransSegs);
                        c.flags |= cf::RTX_DONE;
                        c.high_rxt = s.wrapping_add(len);
                    }
                    Some(sack::Next::New) => {
                        if !self.send_one(pool, c, mss, true, out) {
                            break;
                        }
                    }
                    None => break,
                }
            }
            return;
        }
        let mut guard = 0;
        while guard < 100_000 {
            guard += 1;
            if !self.send_one(pool, c, mss, false, out) {
                break;
            }
        }
    }

    /// Sends the next segment at `snd_nxt` if the windows, Nagle and SWS
    /// avoidance allow (`force_window`: the caller checked the congestion
    /// window already); true if something was sent.
    fn send_one<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        mss: u32,
        cwnd_checked: bool,
        out: &mut Outputs,
    ) -> bool {
        // After a timeout, skip what the peer SACKed.
        if c.has(cf::SACK_OK) && seq::lt(c.snd_nxt, c.snd_max) {
            if let Some(end) = sack::sacked_end(c, c.snd_nxt) {
                c.snd_nxt = end;
            }
        }
        let in_flight = c.snd_nxt.wrapping_sub(c.snd_una);
        let cwnd = if cwnd_checked { u32::MAX } else { c.cwnd };
        let usable = cwnd.min(c.snd_wnd).saturating_sub(in_flight);
        let avail = if seq::lt(c.snd_nxt, c.snd_end) {
            c.snd_end.wrapping_sub(c.snd_nxt)
        } else {
            0
        };
        let fin_state = c.state().fin_unacked();
        if avail == 0 {
            if c.has(cf::FIN_QUEUED) && fin_state && c.snd_nxt == c.snd_end {
                let rtx = seq::lt(c.snd_nxt, c.snd_max);
                if self.xmit(pool, c, c.snd_end, TcpFlags::FIN | TcpFlags::ACK, 0, out) {
                    if rtx {
                        self.stats.inc(Stat::RetransSegs);
                    }
                    c.snd_nxt = c.snd_end.wrapping_add(1);
                    c.snd_max = seq::max(c.snd_max, c.snd_nxt);
                }
            }
            return false;
        }
        let rtx = seq::lt(c.snd_nxt, c.snd_max);
        // New data goes in super-segments where the windows allow more than
        // one segment (TSO), unless the caller (SACK recovery, a probe)
        // checked room for one only, or we hold out-of-order data: then a
        // runt needs room for SACK blocks, which every segment of a
        // super-segment would carry, or none. Over IPv4 only: the devices
        // offer TSO for IPv4 alone, so an IPv6 connection sends one
        // segment of at most one MSS per handle (gso NONE).
        let sacking = c.has(cf::SACK_OK) && !c.ooo_q.is_empty();
        let tso = self.cfg.tso && is_v4(c.remote_addr);
        let most = if tso && !rtx && !cwnd_checked && !sacking {
            gso::tcp_max_payload(mss)
        } else {
            mss
        };
        let mut len = avail.min(most).min(usable);
        if len > mss && len < avail {
            // Whole segments; the runt waits for more data, as Nagle and
            // SWS avoidance would have it.
            len -= len % mss;
        } else if len > mss && len % mss != 0 && self.nagle_holds(c) {
            // All that is queued, but Nagle holds its runt tail back
            // (Linux's `tcp_mss_split_point`).
            len -= len % mss;
        }
        if c.has(cf::SACK_OK) && seq::lt(c.snd_nxt, c.snd_max) {
            // Stop at the next SACKed range.
            if let Some((l, _)) = sack::ranges(c).find(|&(l, _)| seq::gt(l, c.snd_nxt)) {
                len = len.min(l.wrapping_sub(c.snd_nxt));
            }
        }
        if len == 0 {
            // Receive window closed with nothing in flight: probe it.
            if in_flight == 0 && c.snd_wnd < avail.min(mss) && c.t_rtx == 0 {
                c.flags |= cf::PERSIST;
                c.t_rtx = self.now + rto_ns(c, &self.cfg);
            }
            return false;
        }
        if len < mss && !rtx {
            let all = len == avail;
            // Sender SWS avoidance (RFC 9293 §3.8.6.2.1): a window-limited
            // runt waits unless it is half the peer's largest window or
            // nothing is in flight.
            if !all && in_flight > 0 && len < c.max_snd_wnd / 2 {
                return false;
            }
            if all && self.nagle_holds(c) {
                return false;
            }
        }
        let s = c.snd_nxt;
        let mut fl = Self::data_flags(c, len);
        let missed = self.xmit_missed;
        let mut sent = self.xmit(pool, c, s, fl, len, out);
        if !sent && len > mss {
            // No large buffer for a super-segment: one segment, in a
            // small one (and nothing to retry if it goes).
            len = mss;
            fl = Self::data_flags(c, len);
            sent = self.xmit(pool, c, s, fl, len, out);
            if sent {
                self.xmit_missed = missed;
            }
        }
        if !sent {
            // Out of buffers: the block is on the retry list (`xmit`).
            return false;
        }
        let end = c.snd_nxt.wrapping_add(len);
        let with_fin = fl.contains(TcpFlags::FIN);
        if rtx {
            self.stats.inc(Stat::RetransSegs);
            c.flags |= cf::RTX_DONE;
        } else {
            self.stats.add(Stat::OutDataBytes, u64::from(len));
            if c.rtt_time == 0 {
                c.rtt_time = self.now;
                c.rtt_seq = s;
            }
        }
        c.flags &= !cf::PERSIST;
        if len % mss != 0 {
            c.snd_sml = end;
        }
        c.snd_nxt = end.wrapping_add(u32::from(with_fin));
        c.snd_max = seq::max(c.snd_max, c.snd_nxt);
        if c.t_rtx == 0 {
            c.t_rtx = self.now + rto_ns(c, &self.cfg);
        }
        true
    }

    /// The flags of `len` bytes of data sent from SND.NXT: ACK; PSH when
    /// they empty the send queue; FIN too when the close waits behind
    /// them.
    fn data_flags(c: &ConnBlock, len: u32) -> TcpFlags {
        let end = c.snd_nxt.wrapping_add(len);
        let mut fl = TcpFlags::ACK;
        if end == c.snd_end {
            fl |= TcpFlags::PSH;
            if c.has(cf::FIN_QUEUED) && c.state().fin_unacked() {
                fl |= TcpFlags::FIN;
            }
        }
        fl
    }

    /// Nagle (RFC 1122 §4.2.3.4) with Minshall's refinement, as Linux: one
    /// runt unacknowledged at most; true when a runt must wait.
    fn nagle_holds(&self, c: &ConnBlock) -> bool {
        seq::gt(c.snd_sml, c.snd_una) && !c.has(cf::NODELAY) && !c.has(cf::FIN_QUEUED)
    }

    /// Retransmits one segment from `snd_una` (fast retransmit, NewReno
    /// partial ACK).
    pub(crate) fn retransmit_head<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        out: &mut Outputs,
    ) -> u32 {
        let s = c.snd_una;
        // Only what was sent: the head may hold more than went out (a
        // send the peer's window cut short), and bytes past SND.MAX would
        // ignore that window and draw ACKs beyond SND.MAX, which the ACK
        // check refuses, every one of them, from then on.
        let sent_end = seq::min(c.snd_max, c.snd_end);
        if seq::lt(s, sent_end) {
            let len = sent_end.wrapping_sub(s).min(c.snd_mss.max(1));
            let mut fl = TcpFlags::ACK;
            let end = s.wrapping_add(len);
            let fin = c.has(cf::FIN_QUEUED) && end == c.snd_end && seq::gt(c.snd_max, c.snd_end);
            if fin {
                fl |= TcpFlags::FIN;
            }
            if self.xmit(pool, c, s, fl, len, out) {
                self.stats.inc(Stat::RetransSegs);
                c.flags |= cf::RTX_DONE;
                c.rtt_time = 0;
                return len;
            }
        } else if s == c.snd_end
            && c.has(cf::FIN_QUEUED)
            && seq::gt(c.snd_max, s)
            && self.xmit(pool, c, s, TcpFlags::FIN | TcpFlags::ACK, 0, out)
        {
            self.stats.inc(Stat::RetransSegs);
        }
        0
    }

    /// A segment that elicits an ACK without carrying anything new:
    /// `snd_una − 1`, no data (zero-window and keep-alive probes).
    pub(crate) fn send_probe<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        out: &mut Outputs,
    ) {
        let s = c.snd_una.wrapping_sub(1);
        self.xmit(pool, c, s, TcpFlags::ACK, 0, out);
    }

    /// A RST for connection `c`: `<SEQ=SND.NXT><CTL=RST>` (RFC 9293
    /// §3.10.5 ABORT), with ACK once the peer's SYN is in.
    pub(crate) fn send_rst<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        out: &mut Outputs,
    ) {
        let s = acceptable_seq(c);
        let fl = if c.state().has_peer_syn() {
            TcpFlags::RST | TcpFlags::ACK
        } else {
            TcpFlags::RST
        };
        self.xmit(pool, c, s, fl, 0, out);
    }
}

/// The sequence number of a segment without data (a pure ACK, a RST).
///
/// SND.MAX, not SND.NXT: after a timeout sends SND.NXT back to SND.UNA, a
/// segment numbered from there is an old duplicate to a peer that
/// received more, which drops it unread (FreeBSD's `tcp_output`). But not
/// beyond the right edge of the peer's window either: a peer that
/// dropped what we sent (its buffer pruned) and shrank its window to
/// zero takes a zero-length segment only at RCV.NXT (RFC 9293 §3.10.7.4)
/// and would drop every ACK of ours, its data then unacknowledged for
/// good. There the edge is used, as Linux's `tcp_acceptable_seq` does.
pub(crate) fn acceptable_seq(c: &ConnBlock) -> u32 {
    let edge = c.snd_una.wrapping_add(c.snd_wnd);
    if seq::le(c.snd_max, edge) {
        c.snd_max
    } else {
        edge
    }
}

/// Everything for sockd.
impl TcpCore<'_> {
    /// Tells sockd, in order, what it must hear about `c`: ACCEPTABLE (to
    /// the listener's socket), CONNECTED, payload within the receive
    /// credit, EOF after the last byte, SEND_CREDIT, SOCK_ERROR, CLOSED
    /// (after which the block forgets the socket). Stops at the first
    /// notification the pool cannot hold; it stays pending.
    pub(crate) fn sock_sync<B: Buffers>(
        &mut self,
        pool: &mut B,
        idx: usize,
        c: &mut ConnBlock,
        out: &mut Outputs,
    ) {
        if c.pend & pend::ACCEPTABLE != 0 {
            match self.parent_of(c) {
                Some(l) if self.conns[l].sock != 0 => {
                    let mut m = conn_msg(op::ACCEPTABLE, self.conns[l].sock, c);
                    m.value = c.id(idx);
                    if !self.notify(pool, &m, out) {
                        return;
                    }
                    c.pend &= !pend::ACCEPTABLE;
                }
                _ => {
                    // The listener is gone: nobody will accept this one.
                    c.pend &= !pend::ACCEPTABLE;
                    if !c.has(cf::DEAD) {
                        self.send_rst(pool, c, out);
                        self.terminate(c, 0);
                    }
                }
            }
        }
        if c.sock == 0 {
            return;
        }
        let sock = c.sock;
        if c.pend & pend::CONNECTED != 0 {
            // `value`: the MSS, so sockd can cut the stream into buffers
            // of one segment (sent without a copy).
            let mut m = conn_msg(op::CONNECTED, sock, c);
            m.value = u64::from(c.snd_mss);
            if !self.notify(pool, &m, out) {
                return;
            }
            c.pend &= !pend::CONNECTED;
        }
        let hard = c.has(cf::DEAD) && c.pend & pend::ERROR != 0;
        if !c.has(cf::IN_ACCEPTQ) && !hard {
            let before = self.rcv_space(c);
            self.deliver(pool, c, out);
            let _ = before;
            if c.has(cf::FIN_RCVD) && c.rcv_q.is_empty() && !c.has(cf::EOF_SENT) {
                let mut m = reply(op::EOF, sock, 0);
                // Where the stream ends (the FIN takes the last sequence
                // number), so that a sockd missing bytes before it asks
                // for them instead of showing the end early.
                m.value = u64::from(c.rcv_nxt.wrapping_sub(c.irs.wrapping_add(2)));
                if !self.notify(pool, &m, out) {
                    return;
                }
                c.flags |= cf::EOF_SENT;
            }
        }
        let threshold = (self.cfg.socket_tx_bytes / 4).clamp(1, 64 * 1024);
        let due =
            c.tx_owed > 0 && (c.tx_owed >= threshold || c.snd_q.is_empty() || c.has(cf::DEAD));
        // sockd frees the application's ring only as far as tcpd took.
        let taken = c.tx_taken.wrapping_sub(c.tx_taken_told) >= threshold / 2;
        if due || taken || c.has(cf::SYNC_ASKED) {
            let mut m = reply(op::SEND_CREDIT, sock, 0);
            m.value = SendCredit {
                freed: c.tx_freed,
                taken: c.tx_taken,
            }
            .pack();
            if c.has(cf::SYNC_ASKED) {
                m.flags = strata_ipc::l4::ctl_flags::SYNC;
            }
            if !self.notify(pool, &m, out) {
                return;
            }
            c.tx_owed = 0;
            c.tx_taken_told = c.tx_taken;
            c.flags &= !cf::SYNC_ASKED;
        }
        if c.pend & pend::ERROR != 0 {
            let mut m = reply(op::SOCK_ERROR, sock, 0);
            m.errno = c.err as i32;
            if !self.notify(pool, &m, out) {
                return;
            }
            c.pend &= !pend::ERROR;
        }
        // Not before sockd confirmed every byte it was handed: a sockd that
        // died with some would ask for them again, of a socket forgotten.
        let delivered = c.rcv_q.is_empty() && c.dlv_q.is_empty();
        if c.pend & pend::CLOSED != 0 && (delivered || hard || c.has(cf::ORPHAN)) {
            if !self.notify(pool, &reply(op::CLOSED, sock, 0), out) {
                return;
            }
            c.pend &= !pend::CLOSED;
            if self.by_sock.get(&sock) == Some(&(idx as u32)) {
                self.by_sock.remove(&sock);
            }
            c.sock = 0;
        }
    }

    /// Hands in-order payload to sockd, at most the receive credit. tcpd
    /// keeps a reference to what it hands over (in `dlv_q`, pinned) until
    /// sockd confirms it written into the application's ring, so that a
    /// sockd that dies with it costs a second delivery, not the bytes.
    /// Each handle carries its stream offset, by which sockd tells data
    /// it already has.
    fn deliver<B: Buffers>(&mut self, pool: &mut B, c: &mut ConnBlock, out: &mut Outputs) {
        let base = c.irs.wrapping_add(1);
        let idx = c.index as usize;
        while c.rx_credit > 0 {
            let Some(&i) = (c.rcv_q.head != NIL).then_some(&c.rcv_q.head) else {
                break;
            };
            let x = *self.slab.get(i);
            let n = x.len();
            let take = n.min(c.rx_credit);
            if pool.add_ref(&x.h).is_err() {
                break;
            }
            if take < n {
                // Part of the buffer: its own entry (and reference) in
                // the delivered queue; the rest stays queued.
                let mut part = x.h;
                part.data_len = take;
                if pool.add_ref(&x.h).is_err() {
                    pool.free(&x.h);
                    break;
                }
                let Some(e) = self.slab.alloc(idx, part, x.seq, ef::PART) else {
                    // Both references taken above.
                    pool.free(&x.h);
                    pool.free(&x.h);
                    break;
                };
                self.slab.push_back(&mut c.dlv_q, e);
                self.slab.trim_front(&mut c.rcv_q, i, take);
            } else {
                self.slab.pop_front(&mut c.rcv_q);
                self.slab.push_back(&mut c.dlv_q, i);
            }
            let mut h = Handle::new(x.h.buf, x.h.gen, x.h.data_off);
            h.data_len = take;
            h.sock = c.sock;
            h.l4proto = protocol::TCP;
            h.tstamp = x.h.tstamp;
            h.stream_off = x.seq.wrapping_sub(base);
            c.rx_credit -= take;
            self.stats.add(Stat::DeliveredBytes, u64::from(take));
            out.to_sock.push(h);
        }
        if self.window_update_due(c) {
            c.flags |= cf::ACK_NOW;
        }
    }

    /// Hands sockd again what `c` delivered and sockd has not confirmed,
    /// and EOF if it was sent, changing nothing: after a restart, since
    /// the dead core's last outputs may never have left it. sockd skips
    /// what it has by stream offset.
    pub(crate) fn deliver_again<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &ConnBlock,
        out: &mut Outputs,
    ) {
        let base = c.irs.wrapping_add(1);
        let mut i = c.dlv_q.head;
        let mut left = c.dlv_q.count;
        while i != NIL && left > 0 {
            let x = *self.slab.get(i);
            if pool.add_ref(&x.h).is_err() {
                return;
            }
            let mut h = Handle::new(x.h.buf, x.h.gen, x.h.data_off);
            h.data_len = x.len();
            h.sock = c.sock;
            h.l4proto = protocol::TCP;
            h.tstamp = x.h.tstamp;
            h.stream_off = x.seq.wrapping_sub(base);
            out.to_sock.push(h);
            i = x.next;
            left -= 1;
        }
        if c.has(cf::EOF_SENT) {
            self.notify(pool, &reply(op::EOF, c.sock, 0), out);
        }
    }

    /// Forgets what sockd confirmed written, up to stream offset `upto`.
    pub(crate) fn confirm_delivered(&mut self, c: &mut ConnBlock, upto: u32, out: &mut Outputs) {
        let base = c.irs.wrapping_add(1);
        while let Some(&i) = (c.dlv_q.head != NIL).then_some(&c.dlv_q.head) {
            let x = *self.slab.get(i);
            let start = x.seq.wrapping_sub(base);
            let end = start.wrapping_add(x.len());
            // Wrapping comparison: `upto` at or past the entry's end.
            if (upto.wrapping_sub(end) as i32) < 0 {
                break;
            }
            self.slab.pop_front(&mut c.dlv_q);
            if x.flags & ef::PART == 0 {
                out.unpin.push(x.h);
            }
            self.slab.discard(i);
            self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(x.len()));
        }
    }

    /// Puts everything delivered but not confirmed back in front of the
    /// receive queue, to be delivered again, less what sockd says it has
    /// (`from`, a stream offset, when it says); the peer's FIN is
    /// announced again after it.
    pub(crate) fn redeliver(&mut self, c: &mut ConnBlock, from: Option<u32>) {
        let base = c.irs.wrapping_add(1);
        let mut l = std::mem::take(&mut c.dlv_q);
        while let Some(i) = self.slab.pop_front(&mut c.rcv_q) {
            self.slab.push_back(&mut l, i);
        }
        if let (Some(from), Some(&i)) = (from, (l.head != NIL).then_some(&l.head)) {
            let x = *self.slab.get(i);
            let have = from.wrapping_sub(x.seq.wrapping_sub(base));
            if (have as i32) > 0 && have < x.len() {
                self.slab.trim_front(&mut l, i, have);
            }
        }
        c.rcv_q = l;
        c.flags &= !cf::EOF_SENT;
    }

    /// Arms (or stops) the keep-alive timer as the flags and state say.
    pub(crate) fn arm_keepalive(&self, c: &mut ConnBlock) {
        let on = c.has(cf::KEEPALIVE) && !c.has(cf::DEAD) && c.state().keeps_alive();
        if !on {
            c.t_keepalive = 0;
        } else if c.t_keepalive == 0 {
            let idle = self.keepalive(c).0;
            c.t_keepalive = c.last_rx.max(1).saturating_add(idle).max(self.now + 1);
        }
    }

    /// `c`'s keep-alive idle time and probe interval (ns) and probe count:
    /// its own (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT) where set, else
    /// the configured ones.
    pub(crate) fn keepalive(&self, c: &ConnBlock) -> (u64, u64, u32) {
        let own = |s: u32, ms: u64| {
            if s == 0 {
                ms * 1_000_000
            } else {
                u64::from(s) * 1_000_000_000
            }
        };
        let cnt = if c.ka_cnt == 0 {
            self.cfg.keepalive_probes
        } else {
            c.ka_cnt
        };
        (
            own(c.ka_idle_s, self.cfg.keepalive_idle_ms),
            own(c.ka_intvl_s, self.cfg.keepalive_intvl_ms),
            cnt,
        )
    }

    /// The congestion control of `c`.
    pub(crate) fn cc_of(c: &ConnBlock) -> &'static dyn cc::CongestionControl {
        cc::algo(c)
    }
}

/// Builds a control message to `sock` (used by control replies).
pub(crate) fn reply(op_: u32, sock: u32, req: u32) -> L4Ctl {
    L4Ctl {
        op: op_,
        sock,
        req,
        ..L4Ctl::default()
    }
}
