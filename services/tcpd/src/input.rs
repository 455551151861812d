//! Segment arrival (RFC 9293 §3.10.7): validation, demultiplexing, RST
//! generation for segments to nothing, listeners (SYN queue, accept
//! queue, SYN cookies), SYN-SENT, and the synchronized states with the
//! RFC 5961 checks, PAWS, ACK processing (RTT, congestion control,
//! duplicate ACKs and loss recovery), data (in order and out of order),
//! and FIN. ICMP and ICMPv6 errors quoting our segments too.

use strata_ipc::addrs::mapped;
use strata_ipc::handle::csum;
use strata_ipc::{Buffers, Handle, SMALL_BUF};
use strata_proto::icmp::{self, icmp_type, unreach_code, IcmpHeader, QuotedDatagram, SocketError};
use strata_proto::icmpv6::{self, icmpv6_type};
use strata_proto::ipv4::{protocol, Ipv4Header};
use strata_proto::ipv6::{next_header, Ipv6Header};
use strata_proto::tcp::{TcpError, TcpFlags, TcpHeader, TcpOptions, MAX_WINDOW_SCALE};

use crate::block::{cf, ef, pend, rec, ConnBlock, List, State, NIL};
use crate::config::IPV6_MIN_MTU;
use crate::ip::{self, is_v4};
use crate::output::{rto_ns, rtt_sample};
use crate::{isn, sack, seq, Outputs, Stat, TcpCore, Tuple, DEFAULT_MSS, DEFAULT_MSS6};

/// A parsed, validated segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seg {
    /// Source address (IPv4 mapped).
    pub src: u128,
    /// Destination address (IPv4 mapped).
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub fl: TcpFlags,
    pub wnd: u16,
    pub opts: TcpOptions,
    /// Payload offset from the handle's data start.
    pub off: u32,
    /// Payload bytes.
    pub len: u32,
}

impl Seg {
    fn has(&self, f: TcpFlags) -> bool {
        self.fl.contains(f)
    }

    /// SEG.LEN: payload plus SYN and FIN.
    fn seg_len(&self) -> u32 {
        self.len + u32::from(self.has(TcpFlags::SYN)) + u32::from(self.has(TcpFlags::FIN))
    }
}

/// What an ACK to a listener made of its cookie.
enum Cookie {
    /// A connection, established from the cookie.
    Valid(usize),
    /// A valid cookie, but the connection table is full.
    NoRoom,
    /// Not a cookie of ours.
    Invalid,
}

/// The counter for a TCP header error.
fn tcp_stat(e: TcpError) -> Stat {
    match e {
        TcpError::Truncated | TcpError::BadHeaderLen => Stat::TcpTruncated,
        TcpError::BadOptions => Stat::TcpBadOptions,
        TcpError::BadChecksum => Stat::BadChecksum,
    }
}

/// Validates packet `d` (`h`'s data window): IPv4 or IPv6 ([`ip::parse`]),
/// TCP header and options, checksum over the family's pseudo-header
/// (unless `trusted`).
fn parse_segment(d: &[u8], h: &Handle, trusted: bool) -> Result<Seg, Stat> {
    let p = ip::parse(d, h, protocol::TCP)?;
    let seg = d.get(p.l4..p.end).ok_or(Stat::IpMalformed)?;
    let (th, opts) = TcpHeader::parse(seg).map_err(tcp_stat)?;
    if !trusted && !ip::verify_checksum(seg, p.src, p.dst) {
        return Err(Stat::BadChecksum);
    }
    let thl = usize::from(th.header_len);
    Ok(Seg {
        src: p.src,
        dst: p.dst,
        sport: th.src_port,
        dport: th.dst_port,
        seq: th.seq,
        ack: th.ack,
        fl: th.flags,
        wnd: th.window,
        opts,
        off: (p.l4 + thl) as u32,
        len: (seg.len() - thl) as u32,
    })
}

/// The MSS a peer of `addr`'s family is assumed to take when its SYN
/// names none (RFC 9293 §3.7.1).
fn default_mss(addr: u128) -> u32 {
    if is_v4(addr) {
        DEFAULT_MSS
    } else {
        DEFAULT_MSS6
    }
}

impl TcpCore<'_> {
    pub(crate) fn tcp_input<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::InSegs);
        let trusted = h.csum == csum::PARTIAL || h.csum == csum::VERIFIED;
        if trusted {
            self.stats.inc(Stat::CsumTrusted);
        }
        let parsed = match pool.data(&h) {
            Ok(d) => parse_segment(d, &h, trusted),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let seg = match parsed {
            Ok(s) => s,
            Err(s) => return self.drop(pool, &h, s),
        };
        if !is_v4(seg.src) {
            self.stats.inc(Stat::InSegs6);
        }
        if self.net.is_bad_peer(seg.src) || !self.ours(seg.dst) || seg.sport == 0 || seg.dport == 0
        {
            return self.drop(pool, &h, Stat::BadAddress);
        }
        self.segment(pool, h, seg, out);
    }

    /// Whether a segment to `dst` is for us: an IPv4 address of ours; an
    /// IPv6 unicast address (ipd delivers only what is addressed to one
    /// of ours, and it alone knows the addresses it made itself, by
    /// SLAAC; tcpd's configuration names the configured ones only).
    fn ours(&self, dst: u128) -> bool {
        if is_v4(dst) {
            self.net.is_local(dst)
        } else {
            !self.net.is_bad_peer(dst)
        }
    }

    /// Demultiplexes a valid segment: connection, else listener, else RST.
    /// The listeners are looked up only for a segment to no connection,
    /// or a SYN that may replace a TIME-WAIT one.
    fn segment<B: Buffers>(&mut self, pool: &mut B, h: Handle, seg: Seg, out: &mut Outputs) {
        let t = Tuple {
            la: seg.dst,
            lp: seg.dport,
            ra: seg.src,
            rp: seg.sport,
        };
        let mut isn_floor = None;
        let l;
        if let Some(&i) = self.by_tuple.get(&t) {
            let i = i as usize;
            let c = &self.conns[i];
            let tw_syn = c.state() == State::TimeWait
                && seg.has(TcpFlags::SYN)
                && !seg
                    .fl
                    .intersects(TcpFlags::ACK | TcpFlags::RST | TcpFlags::FIN)
                && match (c.has(cf::TS_OK), seg.opts.timestamp) {
                    (true, Some((tsval, _))) => seq::gt(tsval, c.ts_recent),
                    _ => seq::gt(seg.seq, c.rcv_nxt),
                };
            l = if tw_syn { self.listener_for(&t) } else { None };
            if l.is_none() {
                return self.conn_input(pool, i, h, &seg, out);
            }
            // RFC 6191: a new incarnation may replace TIME-WAIT; its ISN
            // must lie beyond everything the old one sent.
            isn_floor = Some(c.snd_max.wrapping_add(65535 + 2));
            let mut c = self.begin(i);
            self.stats.inc(Stat::TimeWaitReused);
            self.terminate(&mut c, 0);
            self.end(pool, i, c, out);
        } else {
            l = self.listener_for(&t);
        }
        match l {
            Some(l) => self.listen_input(pool, l as usize, h, &seg, isn_floor, out),
            None => self.reset_for(pool, h, &seg, Stat::NoConnReset, out),
        }
    }

    /// RFC 9293 §3.10.7.1: a segment to no connection gets a RST, unless
    /// it is one.
    fn reset_for<B: Buffers>(
        &mut self,
        pool: &mut B,
        h: Handle,
        seg: &Seg,
        why: Stat,
        out: &mut Outputs,
    ) {
        pool.free(&h);
        if seg.has(TcpFlags::RST) {
            self.stats.inc(Stat::NoConnDropped);
            return;
        }
        self.stats.inc(why);
        let (s, a, fl) = if seg.has(TcpFlags::ACK) {
            (seg.ack, 0, TcpFlags::RST)
        } else {
            (
                0,
                seg.seq.wrapping_add(seg.seg_len()),
                TcpFlags::RST | TcpFlags::ACK,
            )
        };
        self.xmit_bare(
            pool,
            (seg.dst, seg.dport),
            (seg.src, seg.sport),
            s,
            a,
            fl,
            0,
            &TcpOptions::default(),
            out,
        );
    }

    // ---- LISTEN ----

    fn listen_input<B: Buffers>(
        &mut self,
        pool: &mut B,
        l: usize,
        h: Handle,
        seg: &Seg,
        isn_floor: Option<u32>,
        out: &mut Outputs,
    ) {
        if seg.has(TcpFlags::RST) {
            return self.drop(pool, &h, Stat::NoConnDropped);
        }
        if seg.has(TcpFlags::ACK) && !seg.has(TcpFlags::SYN) {
            // Perhaps the answer to a SYN cookie.
            let recent = self.conns[l].overflow_ts != 0
                && self.now.saturating_sub(self.conns[l].overflow_ts) < 120_000_000_000;
            if self.cfg.syn_cookies && recent {
                return match self.cookie_ack(l, seg) {
                    Cookie::Valid(i) => self.conn_input(pool, i, h, seg, out),
                    Cookie::NoRoom => pool.free(&h),
                    // Not a reset, while cookies are out: it may be a
                    // later segment of a cookie connection whose first
                    // one (the only one a cookie checks) was lost on the
                    // way. Unanswered, the peer sends that first segment
                    // again when its timer runs out, and it makes the
                    // connection; a reset would end it (the SYN queue's
                    // overflow, a local shortage, would have cost it).
                    Cookie::Invalid => self.drop(pool, &h, Stat::SynCookiesBad),
                };
            }
            return self.reset_for(pool, h, seg, Stat::NoConnReset, out);
        }
        if !seg.has(TcpFlags::SYN) || seg.fl.intersects(TcpFlags::FIN) {
            return self.drop(pool, &h, Stat::BadFlags);
        }
        pool.free(&h);
        self.stats.inc(Stat::ListenSyns);
        let lb = self.conns[l];
        // Linux `sk_acceptq_is_full`: more than the backlog waiting.
        if lb.acc_q > lb.backlog {
            self.stats.inc(Stat::ListenDrops);
            return;
        }
        let syn_limit = lb.backlog.min(self.cfg.max_syn_backlog).max(1);
        if lb.syn_q >= syn_limit {
            if self.cfg.syn_cookies {
                self.conns[l].overflow_ts = self.now.max(1);
                return self.send_cookie(pool, seg, out);
            }
            self.stats.inc(Stat::ListenDrops);
            return;
        }
        let Some(i) = self.alloc_block() else {
            // No cookie: its ACK would find no block either, and the
            // peer's later segments would then fail the cookie check and
            // be reset. Dropped, the SYN is retried by the peer.
            self.stats.inc(Stat::ConnLimit);
            return;
        };
        let mut c = self.begin(i);
        self.init_child(&mut c, l, seg);
        let mut iss = isn::isn(
            self.cfg.secret,
            self.now,
            c.local_addr,
            c.local_port as u16,
            c.remote_addr,
            c.remote_port as u16,
        );
        if let Some(floor) = isn_floor {
            if seq::lt(iss, floor) {
                iss = floor;
            }
        }
        self.set_iss(&mut c, iss);
        c.set_state(State::SynReceived);
        c.t_rtx = 0;
        self.conns[l].syn_q += 1;
        self.by_tuple.insert(Tuple::of(&c), i as u32);
        *self.port_use.entry(c.local_port as u16).or_insert(0) += 1;
        self.end(pool, i, c, out);
    }

    /// Fills a new passive connection from listener `l` and the SYN.
    fn init_child(&mut self, c: &mut ConnBlock, l: usize, seg: &Seg) {
        let lb = self.conns[l];
        c.parent = l as u32;
        c.parent_gen = lb.gen;
        c.flags = cf::BOUND
            | cf::PASSIVE
            | (lb.flags
                & (cf::REUSEADDR | cf::REUSEPORT | cf::NODELAY | cf::KEEPALIVE | cf::PORT_LOCK));
        c.cc_algo = lb.cc_algo;
        (c.ka_idle_s, c.ka_intvl_s, c.ka_cnt) = (lb.ka_idle_s, lb.ka_intvl_s, lb.ka_cnt);
        c.local_addr = seg.dst;
        c.local_port = u32::from(seg.dport);
        c.remote_addr = seg.src;
        c.remote_port = u32::from(seg.sport);
        c.flow_label = isn::flow_label(
            self.cfg.secret,
            c.local_addr,
            c.local_port as u16,
            c.remote_addr,
            c.remote_port as u16,
        );
        c.irs = seg.seq;
        c.rcv_nxt = seg.seq.wrapping_add(1);
        c.rcv_adv = c.rcv_nxt;
        c.rx_credit = self.cfg.socket_rx_bytes;
        c.rcvbuf = self.initial_rcvbuf();
        c.last_rx = self.now;
        self.negotiate(c, &seg.opts, true);
        c.snd_wnd = u32::from(seg.wnd);
        c.max_snd_wnd = c.snd_wnd;
        c.snd_wl1 = seg.seq;
    }

    /// Records the peer's SYN options (`passive`: we answer, so we offer
    /// what the peer offered and we support).
    fn negotiate(&self, c: &mut ConnBlock, o: &TcpOptions, passive: bool) {
        c.our_mss = self.net.mss_for(c.remote_addr).max(64);
        let default = default_mss(c.remote_addr);
        c.peer_mss = o.mss.map_or(default, u32::from).max(64);
        let ws = self.cfg.window_scaling && o.window_scale.is_some();
        if passive && o.window_scale.is_some() {
            c.flags |= cf::PEER_WS;
        }
        if ws {
            c.flags |= cf::WS_OK;
            c.snd_wscale = u32::from(o.window_scale.unwrap_or(0).min(MAX_WINDOW_SCALE));
        } else {
            c.flags &= !cf::WS_OK;
            c.snd_wscale = 0;
        }
        // Active opens chose their scale when they sent the SYN.
        if !ws {
            c.rcv_wscale = 0;
        } else if passive {
            c.rcv_wscale = self.wscale_for_buffer();
        }
        if self.cfg.sack && o.sack_permitted {
            c.flags |= cf::SACK_OK;
        } else {
            c.flags &= !cf::SACK_OK;
        }
        match (self.cfg.timestamps, o.timestamp) {
            (true, Some((tsval, _))) => {
                c.flags |= cf::TS_OK;
                c.ts_recent = tsval;
                c.ts_recent_age = self.now;
            }
            _ => c.flags &= !cf::TS_OK,
        }
        c.ts_offset = isn::ts_offset(
            self.cfg.secret,
            c.local_addr,
            c.local_port as u16,
            c.remote_addr,
            c.remote_port as u16,
        );
        self.set_mss(c);
    }

    /// Payload bytes per segment: the smaller MSS less the timestamp
    /// option.
    pub(crate) fn set_mss(&self, c: &mut ConnBlock) {
        let opt = if c.has(cf::TS_OK) { 12 } else { 0 };
        c.snd_mss = c.peer_mss.min(c.our_mss).saturating_sub(opt).max(48);
    }

    /// The window scale our receive buffer needs (RFC 7323 §2.3).
    pub(crate) fn wscale_for_buffer(&self) -> u32 {
        let mut s = 0;
        while s < u32::from(MAX_WINDOW_SCALE)
            && (65535u64 << s) < u64::from(self.cfg.socket_rx_bytes)
        {
            s += 1;
        }
        s
    }

    /// Sets the ISN and everything that starts from it.
    pub(crate) fn set_iss(&self, c: &mut ConnBlock, iss: u32) {
        c.iss = iss;
        c.snd_una = iss;
        c.snd_nxt = iss;
        c.snd_max = iss;
        c.snd_end = iss.wrapping_add(1);
        c.recover = iss;
        c.high_rxt = iss;
        c.snd_sml = iss;
        c.snd_wl2 = iss;
        c.cwnd = self.cfg.initial_cwnd.max(1) * c.snd_mss.max(1);
        c.ssthresh = u32::MAX / 2;
    }

    /// Answers a SYN with a cookie SYN-ACK (no state kept).
    fn send_cookie<B: Buffers>(&mut self, pool: &mut B, seg: &Seg, out: &mut Outputs) {
        self.stats.inc(Stat::SynCookiesSent);
        let t = isn::CookieTuple {
            saddr: seg.src,
            daddr: seg.dst,
            sport: seg.sport,
            dport: seg.dport,
        };
        let mtu_mss = self.net.mss_for(seg.src).min(65535) as u16;
        let default = default_mss(seg.src) as u16;
        let peer = seg.opts.mss.unwrap_or(default).min(mtu_mss);
        let mi = isn::cookie_mss_index(t.mss_table(), peer);
        let iss = isn::make_cookie(self.cfg.secret, &t, seg.seq, mi, self.now);
        let mut opts = TcpOptions {
            mss: Some(mtu_mss),
            ..TcpOptions::default()
        };
        // Options survive only inside the timestamp (Linux
        // `cookie_init_timestamp`): without it, none is offered.
        if let (true, Some((tsval, _))) = (self.cfg.timestamps, seg.opts.timestamp) {
            let ws = match seg.opts.window_scale {
                Some(w) if self.cfg.window_scaling => u32::from(w.min(MAX_WINDOW_SCALE)),
                _ => 0xf,
            };
            let sack = u32::from(self.cfg.sack && seg.opts.sack_permitted);
            let now_ts = ((self.now / 1_000_000) as u32).wrapping_add(isn::ts_offset(
                self.cfg.secret,
                seg.dst,
                seg.dport,
                seg.src,
                seg.sport,
            ));
            let mut ts = (now_ts & !0x3f) | ws | sack << 4;
            if seq::gt(ts, now_ts) {
                ts = ts.wrapping_sub(64);
            }
            opts.timestamp = Some((ts, tsval));
            if ws != 0xf {
                opts.window_scale = Some(self.wscale_for_buffer() as u8);
            }
            opts.sack_permitted = sack != 0;
        }
        let window = self.cfg.socket_rx_bytes.min(65535) as u16;
        self.xmit_bare(
            pool,
            (seg.dst, seg.dport),
            (seg.src, seg.sport),
            iss,
            seg.seq.wrapping_add(1),
            TcpFlags::SYN | TcpFlags::ACK,
            window,
            &opts,
            out,
        );
    }

    /// Checks an ACK to listener `l` as the answer to a cookie; makes the
    /// established connection if it is one.
    fn cookie_ack(&mut self, l: usize, seg: &Seg) -> Cookie {
        let t = isn::CookieTuple {
            saddr: seg.src,
            daddr: seg.dst,
            sport: seg.sport,
            dport: seg.dport,
        };
        let iss = seg.ack.wrapping_sub(1);
        let irs = seg.seq.wrapping_sub(1);
        let Some(mi) = isn::check_cookie(self.cfg.secret, &t, iss, irs, self.now) else {
            return Cookie::Invalid;
        };
        // A full accept queue does not turn the ACK away here: the
        // connection is made in SYN-RECEIVED like any embryo, and its ACK
        // processing waits for room there (dropped, counted as an
        // overflow, retried by the peer or elicited by our SYN-ACK
        // retransmission). Dropping it here instead would forget the
        // handshake, and the peer's next segment, whose sequence number no
        // longer matches the cookie, would be answered with a reset.
        let Some(i) = self.alloc_block() else {
            self.stats.inc(Stat::ConnLimit);
            return Cookie::NoRoom;
        };
        self.stats.inc(Stat::SynCookiesOk);
        let mut c = self.begin(i);
        let mut opts = TcpOptions {
            mss: Some(t.mss_table()[mi as usize]),
            ..TcpOptions::default()
        };
        if let (true, Some((tsval, tsecr))) = (self.cfg.timestamps, seg.opts.timestamp) {
            let ws = tsecr & 0xf;
            if ws != 0xf && self.cfg.window_scaling {
                opts.window_scale = Some(ws as u8);
            }
            opts.sack_permitted = tsecr & 0x10 != 0;
            opts.timestamp = Some((tsval, 0));
        }
        self.init_child(&mut c, l, &Seg { opts, ..*seg });
        c.irs = irs;
        c.rcv_nxt = seg.seq;
        c.rcv_adv = seg
            .seq
            .wrapping_add(u32::from(self.cfg.socket_rx_bytes.min(65535) as u16));
        if !c.has(cf::WS_OK) {
            c.rcv_wscale = 0;
        }
        self.set_iss(&mut c, iss);
        c.snd_nxt = iss.wrapping_add(1);
        c.snd_max = c.snd_nxt;
        c.flags |= cf::COOKIE;
        c.set_state(State::SynReceived);
        self.conns[l].syn_q += 1;
        self.by_tuple.insert(Tuple::of(&c), i as u32);
        *self.port_use.entry(c.local_port as u16).or_insert(0) += 1;
        // Its own event; the ACK is a second one.
        self.commit_block(i, c);
        Cookie::Valid(i)
    }

    // ---- connections ----

    /// A segment for connection `idx`.
    fn conn_input<B: Buffers>(
        &mut self,
        pool: &mut B,
        idx: usize,
        h: Handle,
        seg: &Seg,
        out: &mut Outputs,
    ) {
        let mut c = self.begin(idx);
        let kept = match c.state() {
            // RFC 9293 §3.10.7.3.
            State::SynSent => {
                self.syn_sent_input(pool, &mut c, seg, out);
                false
            }
            // §3.10.7.4: SYN-RECEIVED and the synchronized states.
            State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck
            | State::TimeWait => self.sync_input(pool, idx, &mut c, h, seg, out),
            // No connection (§3.10.7.1, §3.10.7.2 are the demultiplexer's):
            // the tuple table holds no such block; dropped.
            State::Closed | State::Listen => false,
        };
        if !kept {
            pool.free(&h);
        }
        self.end(pool, idx, c, out);
    }

    /// RFC 9293 §3.10.7.3.
    fn syn_sent_input<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        seg: &Seg,
        out: &mut Outputs,
    ) {
        let mut acceptable = false;
        if seg.has(TcpFlags::ACK) {
            if seq::le(seg.ack, c.iss) || seq::gt(seg.ack, c.snd_max) {
                if !seg.has(TcpFlags::RST) {
                    self.stats.inc(Stat::NoConnReset);
                    self.xmit_bare(
                        pool,
                        (c.local_addr, c.local_port as u16),
                        (c.remote_addr, c.remote_port as u16),
                        seg.ack,
                        0,
                        TcpFlags::RST,
                        0,
                        &TcpOptions::default(),
                        out,
                    );
                }
                return;
            }
            acceptable = true;
        }
        if seg.has(TcpFlags::RST) {
            if acceptable {
                self.stats.inc(Stat::ConnRefused);
                self.terminate(c, libc::ECONNREFUSED);
            } else {
                self.stats.inc(Stat::RstIgnored);
            }
            return;
        }
        if !seg.has(TcpFlags::SYN) {
            return;
        }
        c.irs = seg.seq;
        c.rcv_nxt = seg.seq.wrapping_add(1);
        c.rcv_adv = c.rcv_nxt;
        c.last_rx = self.now;
        self.negotiate(c, &seg.opts, false);
        c.cwnd = self.cfg.initial_cwnd.max(1) * c.snd_mss;
        // The window of a SYN is never scaled (RFC 7323 §2.2).
        c.snd_wnd = u32::from(seg.wnd);
        c.max_snd_wnd = c.snd_wnd;
        c.snd_wl1 = seg.seq;
        c.snd_wl2 = seg.ack;
        if acceptable {
            c.snd_una = seg.ack;
            if c.rtt_time != 0 && !c.has(cf::RTX_DONE) {
                rtt_sample(c, self.now.saturating_sub(c.rtt_time) / 1000, &self.cfg);
            }
            c.rtt_time = 0;
            c.retries = 0;
            c.backoff = 0;
            c.t_rtx = 0;
            self.establish(c);
            c.pend |= pend::CONNECTED;
            c.flags |= cf::ACK_NOW;
        } else {
            // Simultaneous open: answer with SYN-ACK from the same ISN.
            c.set_state(State::SynReceived);
            c.snd_nxt = c.iss;
            c.t_rtx = 0;
        }
    }

    /// The connection is established (RFC 9293: ESTABLISHED, or FIN-WAIT-1
    /// when the application shut down writing meanwhile).
    fn establish(&mut self, c: &mut ConnBlock) {
        c.set_state(if c.has(cf::FIN_QUEUED) {
            State::FinWait1
        } else {
            State::Established
        });
        c.flags |= cf::WAS_ESTABLISHED;
        c.quickacks = 16;
        c.rcvq_seq = c.rcv_read;
        c.rcvq_time = (self.now / 1_000_000) as u32;
        self.stats.inc(Stat::Established);
    }

    /// A challenge ACK (RFC 5961 §3.2, §4.2, §5.2), rate-limited per
    /// second across all connections.
    fn challenge_ack(&mut self, c: &mut ConnBlock) {
        let sec = self.now / 1_000_000_000;
        if self.challenge.0 != sec {
            self.challenge = (sec, 0);
        }
        if self.challenge.1 >= self.cfg.challenge_ack_limit {
            self.stats.inc(Stat::ChallengeAckLimited);
            return;
        }
        self.challenge.1 += 1;
        c.flags |= cf::ACK_NOW;
    }

    /// RFC 9293 §3.10.7.4 for SYN-RECEIVED and the synchronized states.
    /// Returns true when the segment's buffer was kept (queued payload).
    fn sync_input<B: Buffers>(
        &mut self,
        pool: &mut B,
        idx: usize,
        c: &mut ConnBlock,
        h: Handle,
        seg: &Seg,
        out: &mut Outputs,
    ) -> bool {
        let rst = seg.has(TcpFlags::RST);
        if c.state() == State::SynReceived
            && seg.fl.0 & (TcpFlags::SYN | TcpFlags::ACK | TcpFlags::RST).0 == TcpFlags::SYN.0
            && seg.seq == c.irs
        {
            // The peer retransmitted its SYN: resend our SYN-ACK (Linux
            // `tcp_check_req`).
            if c.has(cf::PASSIVE) || c.snd_nxt != c.iss {
                c.snd_nxt = c.iss;
            }
            return false;
        }
        // PAWS (RFC 7323 §5.3).
        if c.has(cf::TS_OK) && !rst {
            if let Some((tsval, _)) = seg.opts.timestamp {
                let stale = self.now.saturating_sub(c.ts_recent_age) > 24 * 86_400 * 1_000_000_000;
                if seq::lt(tsval, c.ts_recent) && !stale {
                    self.stats.inc(Stat::PawsRejected);
                    c.flags |= cf::ACK_NOW;
                    return false;
                }
            }
        }
        // First: sequence number (four cases).
        let wnd = Self::rcv_wnd(c);
        let slen = seg.seg_len();
        let (s, e) = (seg.seq, seg.seq.wrapping_add(slen));
        let nxt = c.rcv_nxt;
        let edge = nxt.wrapping_add(wnd);
        let mut acceptable = match (slen, wnd) {
            (0, 0) => s == nxt,
            // Up to and including the right edge: a peer that filled our
            // window sends its ACKs with SEG.SEQ = RCV.NXT + RCV.WND.
            // RFC 9293's `<` would drop them, and with them the
            // acknowledgement of our data, for as long as the hole at
            // RCV.NXT stays open; if the peer likewise cannot hear our
            // ACKs, neither side moves again. Linux (`tcp_sequence`) and
            // smoltcp accept the edge.
            (0, _) => seq::le(nxt, s) && seq::le(s, edge),
            (_, 0) => false,
            _ => seq::within(s, nxt, edge) || seq::within(e.wrapping_sub(1), nxt, edge),
        };
        // A zero window still takes ACKs at RCV.NXT (§3.10.7.4 note).
        let zero_wnd_ack = !acceptable && wnd == 0 && s == nxt;
        if c.state() == State::TimeWait && seg.has(TcpFlags::FIN) && e == nxt {
            acceptable = true;
        }
        if !acceptable && !zero_wnd_ack {
            if rst {
                self.stats.inc(Stat::RstIgnored);
            } else {
                self.stats.inc(Stat::OutOfWindow);
                c.flags |= cf::ACK_NOW;
            }
            return false;
        }
        c.last_rx = self.now;
        c.ka_probes = 0;
        // Second: RST (RFC 5961 §3.2).
        if rst {
            if s != nxt {
                self.stats.inc(Stat::RstChallenged);
                self.challenge_ack(c);
                return false;
            }
            self.stats.inc(Stat::RstAccepted);
            let state = c.state();
            let errno = match state {
                // §3.10.7.4: a passive open goes back to LISTEN (the
                // child goes, its listener stays); an active one is
                // refused.
                State::SynReceived if c.has(cf::PASSIVE) => 0,
                State::SynReceived => libc::ECONNREFUSED,
                // "connection reset" (Linux: EPIPE once the peer's FIN is
                // in).
                State::CloseWait => libc::EPIPE,
                State::Established | State::FinWait1 | State::FinWait2 => libc::ECONNRESET,
                // Closing anyway: no error.
                State::TimeWait | State::Closing | State::LastAck => 0,
                // Not here (conn_input sends these elsewhere).
                State::Closed | State::Listen | State::SynSent => libc::ECONNRESET,
            };
            if errno == libc::ECONNREFUSED {
                self.stats.inc(Stat::ConnRefused);
            } else if state != State::SynReceived && state != State::TimeWait {
                self.stats.inc(Stat::ResetByPeer);
            }
            self.discard_rcv(c);
            self.terminate(c, errno);
            return false;
        }
        // Timestamps: TS.Recent (RFC 7323 §4.3).
        if c.has(cf::TS_OK) {
            if let Some((tsval, _)) = seg.opts.timestamp {
                if seq::le(s, c.last_ack_sent) && seq::ge(tsval, c.ts_recent) {
                    c.ts_recent = tsval;
                    c.ts_recent_age = self.now;
                }
            }
        }
        // Fourth: SYN (RFC 5961 §4.2).
        if seg.has(TcpFlags::SYN) {
            self.stats.inc(Stat::SynChallenged);
            self.challenge_ack(c);
            return false;
        }
        // Fifth: ACK.
        if !seg.has(TcpFlags::ACK) {
            return false;
        }
        if c.state() == State::SynReceived {
            if !(seq::lt(c.snd_una, seg.ack) && seq::le(seg.ack, c.snd_max)) {
                self.stats.inc(Stat::NoConnReset);
                self.xmit_bare(
                    pool,
                    (c.local_addr, c.local_port as u16),
                    (c.remote_addr, c.remote_port as u16),
                    seg.ack,
                    0,
                    TcpFlags::RST,
                    0,
                    &TcpOptions::default(),
                    out,
                );
                return false;
            }
            if c.has(cf::PASSIVE) {
                let Some(l) = self.parent_of(c) else {
                    self.send_rst(pool, c, out);
                    self.terminate(c, 0);
                    return false;
                };
                let lb = &self.conns[l];
                if lb.acc_q > lb.backlog {
                    self.stats.inc(Stat::ListenOverflows);
                    return false;
                }
                let lb = &mut self.conns[l];
                lb.syn_q = lb.syn_q.saturating_sub(1);
                lb.acc_q += 1;
                c.flags |= cf::IN_ACCEPTQ;
                c.pend |= pend::ACCEPTABLE;
                self.stats.inc(Stat::PassiveOpens);
                if !is_v4(c.remote_addr) {
                    self.stats.inc(Stat::PassiveOpens6);
                }
            } else {
                c.pend |= pend::CONNECTED;
            }
            if c.rtt_time != 0 && !c.has(cf::RTX_DONE) && seq::gt(seg.ack, c.rtt_seq) {
                rtt_sample(c, self.now.saturating_sub(c.rtt_time) / 1000, &self.cfg);
            }
            c.rtt_time = 0;
            c.retries = 0;
            c.backoff = 0;
            c.snd_una = seg.ack;
            c.t_rtx = 0;
            c.snd_wnd = u32::from(seg.wnd) << c.snd_wscale;
            c.max_snd_wnd = c.snd_wnd;
            c.snd_wl1 = s;
            c.snd_wl2 = seg.ack;
            self.establish(c);
        }
        // RFC 5961 §5.2: acceptable ACKs lie in
        // [SND.UNA − MAX.SND.WND, SND.NXT].
        let lo = c.snd_una.wrapping_sub(c.max_snd_wnd);
        if seq::gt(seg.ack, c.snd_max) || seq::lt(seg.ack, lo) {
            self.stats.inc(Stat::AckInvalid);
            self.challenge_ack(c);
            return false;
        }
        self.ack_input(pool, c, seg, out);
        if c.has(cf::DEAD) {
            return false;
        }
        let fin_acked = c.has(cf::FIN_QUEUED) && seq::gt(c.snd_una, c.snd_end);
        match c.state() {
            // §3.10.7.4, fifth step: "if the FIN segment is now
            // acknowledged, then enter FIN-WAIT-2".
            State::FinWait1 if fin_acked => {
                c.set_state(State::FinWait2);
                if c.has(cf::ORPHAN) {
                    c.t_state = self.now + self.cfg.fin_timeout_ms * 1_000_000;
                }
            }
            // "if the ACK acknowledges our FIN, then enter the TIME-WAIT
            // state".
            State::Closing if fin_acked => {
                self.enter_time_wait(c);
            }
            // "If our FIN is now acknowledged, delete the TCB".
            State::LastAck if fin_acked => {
                self.terminate(c, 0);
                return false;
            }
            // Our FIN still unacknowledged,
            State::FinWait1 | State::Closing | State::LastAck => {}
            // or none sent, or acknowledged before.
            State::Established | State::CloseWait | State::FinWait2 | State::TimeWait => {}
            // Left above (established, or handled elsewhere).
            State::Closed | State::Listen | State::SynSent | State::SynReceived => {}
        }
        // Seventh: text, and eighth: FIN.
        match c.state() {
            // §3.10.7.4, seventh step: the receive side is open.
            State::Established | State::FinWait1 | State::FinWait2 => {
                if zero_wnd_ack && seg.len > 0 {
                    self.stats.inc(Stat::BeyondWindow);
                    c.flags |= cf::ACK_NOW;
                    return false;
                }
                if seg.len > 0 || seg.has(TcpFlags::FIN) {
                    if c.has(cf::ORPHAN)
                        && seg.len > 0
                        && seq::gt(s.wrapping_add(seg.len), c.rcv_nxt)
                    {
                        // Data for a closed socket: Linux resets
                        // (`TCPAbortOnData`).
                        self.send_rst(pool, c, out);
                        self.discard_rcv(c);
                        self.terminate(c, 0);
                        return false;
                    }
                    return self.data_input(pool, idx, c, h, seg, out);
                }
                false
            }
            // Seventh step: text after the peer's FIN "should not occur"
            // and is ignored; a repeated FIN is acknowledged again.
            State::CloseWait | State::Closing | State::LastAck => {
                if seg.has(TcpFlags::FIN) || seg.len > 0 {
                    c.flags |= cf::ACK_NOW;
                }
                false
            }
            // Eighth step: "Remain in the TIME-WAIT state. Restart the
            // 2 MSL time-wait timeout".
            State::TimeWait => {
                if seg.has(TcpFlags::FIN) {
                    c.flags |= cf::ACK_NOW;
                    c.t_state = self.now + 2 * self.cfg.msl_ms * 1_000_000;
                }
                false
            }
            // Left above (established, or handled elsewhere).
            State::Closed | State::Listen | State::SynSent | State::SynReceived => false,
        }
    }

    /// ACK processing for the synchronized states: SACK blocks, new data
    /// acknowledged (RTT, freeing, congestion control, recovery), duplicate
    /// ACKs, window update.
    fn ack_input<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        seg: &Seg,
        out: &mut Outputs,
    ) {
        let ack = seg.ack;
        let wnd = u32::from(seg.wnd) << c.snd_wscale;
        let mut sack_new = 0;
        if c.has(cf::SACK_OK) {
            for &(l, r) in seg.opts.sack() {
                if seq::lt(l, r) {
                    // The part above the fence first, to count it alone.
                    let above = sack::add(c, seq::max(l, c.rtx_fence), r);
                    c.rtx_sacked = c.rtx_sacked.saturating_add(above);
                    sack_new += above + sack::add(c, l, r);
                }
            }
        }
        if c.snd_una == c.snd_max {
            // Nothing in flight: an ACK answers a window probe.
            c.retries = 0;
        }
        if seq::gt(ack, c.snd_una) {
            self.new_ack(pool, c, seg, out);
        } else if ack == c.snd_una && self.head_retransmission_lost(c) {
            self.stats.inc(Stat::LostRetrans);
            self.retransmit_head(pool, c, out);
            c.rtx_sacked = 0;
        } else if ack == c.snd_una
            && seg.len == 0
            && !seg.fl.intersects(TcpFlags::SYN | TcpFlags::FIN)
            && c.snd_una != c.snd_max
            && (wnd == c.snd_wnd || sack_new > 0)
        {
            c.dupacks += 1;
            self.stats.inc(Stat::DupAcks);
            self.dupack(pool, c, out);
        }
        // Window update (RFC 9293 §3.10.7.4).
        if seq::lt(c.snd_wl1, seg.seq) || c.snd_wl1 == seg.seq && seq::le(c.snd_wl2, ack) {
            let opened = wnd > c.snd_wnd;
            c.snd_wnd = wnd;
            c.max_snd_wnd = c.max_snd_wnd.max(wnd);
            c.snd_wl1 = seg.seq;
            c.snd_wl2 = ack;
            if opened && c.has(cf::PERSIST) {
                c.flags &= !cf::PERSIST;
                c.backoff = 0;
                if c.snd_una == c.snd_max {
                    c.t_rtx = 0;
                }
            }
        }
        self.arm_reo_timer(c);
    }

    fn new_ack<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        seg: &Seg,
        out: &mut Outputs,
    ) {
        let ack = seg.ack;
        let acked = ack.wrapping_sub(c.snd_una);
        let flight_before = c.snd_max.wrapping_sub(c.snd_una);
        // RTT: the timed segment (Karn: never a retransmitted one), else
        // the timestamp echo (RFC 7323 §4, valid across retransmissions).
        if c.rtt_time != 0 && seq::gt(ack, c.rtt_seq) {
            rtt_sample(c, self.now.saturating_sub(c.rtt_time) / 1000, &self.cfg);
            c.rtt_time = 0;
        } else if let (true, Some((_, ecr))) = (c.has(cf::TS_OK), seg.opts.timestamp) {
            if ecr != 0 && c.has(cf::RTX_DONE) {
                let ms = self.ts_now(c).wrapping_sub(ecr);
                if ms < 600_000 {
                    rtt_sample(c, u64::from(ms.max(1)) * 1000, &self.cfg);
                    c.flags &= !cf::RTX_DONE;
                }
            }
        }
        // Free what is acknowledged.
        let data_end = seq::min(ack, c.snd_end);
        while let Some(&i) = (c.snd_q.head != NIL).then_some(&c.snd_q.head) {
            let x = *self.slab.get(i);
            if seq::le(x.end(), data_end) {
                self.slab.pop_front(&mut c.snd_q);
                self.slab.discard(i);
                c.tx_owed = c.tx_owed.saturating_add(x.len());
                c.tx_freed = c.tx_freed.wrapping_add(x.len());
                self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(x.len()));
                if c.snd_cur == i {
                    c.snd_cur = NIL;
                }
            } else {
                if seq::lt(x.seq, data_end) {
                    let n = data_end.wrapping_sub(x.seq);
                    self.slab.trim_front(&mut c.snd_q, i, n);
                    c.tx_owed = c.tx_owed.saturating_add(n);
                    c.tx_freed = c.tx_freed.wrapping_add(n);
                    self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(n));
                }
                break;
            }
        }
        c.snd_una = ack;
        if seq::lt(c.snd_nxt, ack) {
            c.snd_nxt = ack;
        }
        if seq::ge(ack, c.recover) {
            c.flags &= !cf::LOSS;
        }
        self.new_head_fence(c);
        if seq::lt(c.high_rxt, ack) {
            c.high_rxt = ack;
        }
        c.backoff = 0;
        c.retries = 0;
        sack::on_ack(c);
        let cc = Self::cc_of(c);
        match c.recovery {
            rec::NEWRENO => {
                if seq::ge(ack, c.recover) {
                    // Full ACK (RFC 6582 §3.2 step 3, option 1).
                    let flight = c.snd_max.wrapping_sub(c.snd_una);
                    c.cwnd = c.ssthresh.min(flight.max(c.snd_mss) + c.snd_mss);
                    c.recovery = rec::NONE;
                    c.dupacks = 0;
                } else {
                    // Partial ACK (step 4): retransmit the next hole,
                    // deflate by what was acknowledged, add one segment.
                    self.stats.inc(Stat::PartialAcks);
                    self.retransmit_head(pool, c, out);
                    c.cwnd = c.cwnd.saturating_sub(acked);
                    if acked >= c.snd_mss {
                        c.cwnd += c.snd_mss;
                    }
                    c.cwnd = c.cwnd.max(c.snd_mss);
                    c.t_rtx = self.now + rto_ns(c, &self.cfg);
                }
            }
            rec::SACK => {
                if seq::ge(ack, c.recover) {
                    c.recovery = rec::NONE;
                    c.cwnd = c.ssthresh.max(c.snd_mss);
                    c.dupacks = 0;
                }
            }
            _ => {
                c.dupacks = 0;
                // Grow only when the window was in use (RFC 7661 spirit).
                if flight_before.saturating_mul(2) >= c.cwnd || c.cwnd < c.ssthresh {
                    cc.on_ack(c, acked, self.now);
                }
            }
        }
        // RFC 6298 §5.2/5.3.
        c.t_rtx = if c.snd_una == c.snd_max {
            0
        } else {
            self.now + rto_ns(c, &self.cfg)
        };
        c.flags &= !(cf::PERSIST | cf::REO_TIMER | cf::TLP_TIMER | cf::TLP_SENT);
    }

    /// Takes the new head's fence from its send-queue entry, with what the
    /// scoreboard already holds above it. While resending after a timeout
    /// the scoreboard holds data received before the resend, so only
    /// data sent from now on counts.
    fn new_head_fence(&mut self, c: &mut ConnBlock) {
        c.rtx_fence = c.snd_nxt;
        c.rtx_fence_us = (self.now / 1000) as u32;
        c.rtx_sacked = 0;
        if c.has(cf::LOSS) || c.snd_q.head == NIL {
            return;
        }
        let e = *self.slab.get(c.snd_q.head);
        if e.sent_fence == 0 || !seq::within(c.snd_una, e.seq, e.end()) {
            return;
        }
        c.rtx_fence = e.sent_fence;
        c.rtx_fence_us = e.sent_us;
        c.rtx_sacked = sack::ranges(c)
            .map(|(l, r)| {
                let l = seq::max(l, e.sent_fence);
                if seq::lt(l, r) {
                    r.wrapping_sub(l)
                } else {
                    0
                }
            })
            .sum();
    }

    /// Arms the reordering timer (RFC 8985 §6.2, for the head only): data
    /// sent after the head was SACKed, so once a round trip and a
    /// reordering allowance have passed since the head was sent, it is
    /// lost, however few segments followed it (a small window gives too
    /// few duplicate ACKs for DupThresh, and waiting for the RTO instead
    /// costs 200 ms or more).
    fn arm_reo_timer(&self, c: &mut ConnBlock) {
        if !c.has(cf::SACK_OK) || c.rtx_sacked == 0 || c.snd_una == c.snd_max || c.srtt_us == 0 {
            return;
        }
        let srtt = u64::from(c.srtt_us);
        let wait_us = srtt + (srtt / 4).max(1000);
        let since = u64::from(((self.now / 1000) as u32).wrapping_sub(c.rtx_fence_us));
        let at = self.now + wait_us.saturating_sub(since) * 1000;
        if c.t_rtx == 0 || at < c.t_rtx || c.has(cf::TLP_TIMER) {
            c.t_rtx = at;
            c.flags = (c.flags | cf::REO_TIMER) & !cf::TLP_TIMER;
        }
    }

    /// The reordering timer found the head lost: fast retransmit (with
    /// the window reduction) if no recovery is under way, else resend
    /// the head, whose retransmission was lost.
    pub(crate) fn reo_timeout<B: Buffers>(
        &mut self,
        pool: &mut B,
        c: &mut ConnBlock,
        out: &mut Outputs,
    ) {
        if c.recovery == rec::NONE && !c.has(cf::LOSS) && seq::gt(c.snd_una, c.recover) {
            self.enter_recovery(pool, c, out);
        } else {
            self.stats.inc(Stat::LostRetrans);
            self.retransmit_head(pool, c, out);
        }
        c.t_rtx = self.now + rto_ns(c, &self.cfg);
    }

    /// Whether the segment at `snd_una`, already retransmitted, was lost
    /// again: DupThresh segments' worth of data sent after it were SACKed
    /// (the lost-retransmission detection RACK generalises, RFC 8985
    /// §2). Applies during SACK recovery once the head was retransmitted,
    /// and in the go-back-N resend after a timeout, where RFC 6582's
    /// `recover` check keeps fast retransmit off and each lost resend
    /// would otherwise cost another timeout.
    fn head_retransmission_lost(&self, c: &ConnBlock) -> bool {
        let retransmitted = match c.recovery {
            rec::SACK => seq::gt(c.high_rxt, c.snd_una),
            rec::NONE => c.has(cf::LOSS) && seq::gt(c.snd_nxt, c.snd_una),
            _ => false,
        };
        retransmitted && c.has(cf::SACK_OK) && c.rtx_sacked >= sack::DUP_THRESH * c.snd_mss.max(1)
    }

    /// A duplicate ACK: enter fast retransmit / recovery after three (or
    /// when SACK says the first segment is lost), inflate in NewReno.
    fn dupack<B: Buffers>(&mut self, pool: &mut B, c: &mut ConnBlock, out: &mut Outputs) {
        let mss = c.snd_mss.max(1);
        match c.recovery {
            rec::NONE => {
                let lost = c.has(cf::SACK_OK) && sack::is_lost(c, c.snd_una, mss);
                // RFC 6582 §3.2 step 2: not before passing `recover`.
                if (c.dupacks >= 3 || lost) && seq::gt(c.snd_una, c.recover) {
                    self.enter_recovery(pool, c, out);
                } else if c.dupacks >= 3 && !seq::gt(c.snd_una, c.recover) {
                    // Still within an earlier episode: nothing.
                }
            }
            rec::NEWRENO => {
                c.cwnd = c.cwnd.saturating_add(mss);
            }
            _ => {}
        }
    }

    fn enter_recovery<B: Buffers>(&mut self, pool: &mut B, c: &mut ConnBlock, out: &mut Outputs) {
        self.stats.inc(Stat::FastRetrans);
        let mss = c.snd_mss.max(1);
        let flight = c.snd_max.wrapping_sub(c.snd_una);
        let cc = Self::cc_of(c);
        c.ssthresh = cc.ssthresh(c, flight, self.now);
        c.recover = c.snd_max;
        c.rtt_time = 0;
        c.flags &= !(cf::TLP_TIMER | cf::REO_TIMER);
        if c.has(cf::SACK_OK) {
            self.stats.inc(Stat::SackRecoveries);
            c.recovery = rec::SACK;
            c.cwnd = c.ssthresh;
            c.high_rxt = c.snd_una;
            let n = self.retransmit_head(pool, c, out);
            c.high_rxt = c.snd_una.wrapping_add(n);
        } else {
            c.recovery = rec::NEWRENO;
            c.cwnd = c.ssthresh + 3 * mss;
            self.retransmit_head(pool, c, out);
        }
        c.t_rtx = self.now + rto_ns(c, &self.cfg);
    }

    /// Payload (and FIN) of an acceptable segment in ESTABLISHED or
    /// FIN-WAIT-1/2: in order into the receive queue (draining the
    /// out-of-order queue behind it), else into the out-of-order queue.
    fn data_input<B: Buffers>(
        &mut self,
        pool: &mut B,
        idx: usize,
        c: &mut ConnBlock,
        h: Handle,
        seg: &Seg,
        out: &mut Outputs,
    ) -> bool {
        let mut s = seg.seq;
        let mut off = seg.off;
        let mut len = seg.len;
        let mut fin = seg.has(TcpFlags::FIN);
        if seq::lt(s, c.rcv_nxt) {
            let d = c.rcv_nxt.wrapping_sub(s);
            if d >= len {
                // Old data; perhaps a new FIN right after it.
                let fin_new = fin && d == len && !c.has(cf::FIN_RCVD);
                c.flags |= cf::ACK_NOW;
                if !fin_new {
                    self.stats.inc(Stat::DupData);
                    return false;
                }
                off += len;
                len = 0;
            } else {
                off += d;
                len -= d;
            }
            s = c.rcv_nxt;
        }
        let wnd = Self::rcv_wnd(c).max(self.rcv_space(c));
        let edge = c.rcv_nxt.wrapping_add(wnd);
        if seq::gt(s.wrapping_add(len), edge) {
            self.stats.inc(Stat::BeyondWindow);
            let cut = s.wrapping_add(len).wrapping_sub(edge);
            len = len.saturating_sub(cut);
            fin = false;
            c.flags |= cf::ACK_NOW;
        }
        if len == 0 && !fin {
            return false;
        }
        let mut hh = h;
        hh.data_off += off;
        hh.data_len = len;
        hh.flags = 0;
        hh.sock = 0;
        let room = self.slab.free_count() > 0
            && self.queued_bytes + u64::from(len) <= self.cfg.max_queued_bytes;
        if s == c.rcv_nxt {
            let had_ooo = !c.ooo_q.is_empty();
            let mut kept = false;
            if len > 0 {
                if !room {
                    self.stats.inc(Stat::MemLimit);
                    return false;
                }
                let Some(e) = self.slab.alloc(idx, hh, s, 0) else {
                    return false;
                };
                self.slab.push_back(&mut c.rcv_q, e);
                out.pin.push(hh);
                c.rcv_nxt = c.rcv_nxt.wrapping_add(len);
                self.queued_bytes += u64::from(len);
                self.stats.add(Stat::InDataBytes, u64::from(len));
                kept = true;
            }
            if self.ooo_drain(c) {
                fin = true;
            }
            if fin {
                self.fin_input(c);
            } else if had_ooo {
                c.flags |= cf::ACK_NOW;
            } else {
                // Delayed ACK: every second full segment, at once in
                // quick-ACK mode, else within the delayed-ACK timeout. A
                // super-segment counts as the segments it carries, so one
                // of two or more is acknowledged at once, as Linux
                // acknowledges a GRO packet.
                let full = c.our_mss.saturating_sub(64).min(c.snd_mss).max(1);
                if len >= full {
                    c.segs_unacked += len / full;
                }
                if c.segs_unacked >= 2 || c.quickacks > 0 {
                    c.flags |= cf::ACK_NOW;
                } else if c.t_delack == 0 {
                    c.t_delack = self.now + self.cfg.delack_ms * 1_000_000;
                }
            }
            if !kept {
                return false;
            }
            true
        } else {
            c.flags |= cf::ACK_NOW;
            if !room {
                self.stats.inc(Stat::MemLimit);
                return false;
            }
            let truesize = pool.raw(&hh).map_or(0, |r| r.len() as u64);
            let short = self.pool_short[usize::from(truesize > SMALL_BUF as u64)]
                || self.ooo_segs >= self.cfg.max_ooo_segs;
            if short || !self.ooo_make_room(pool, c, s, truesize) {
                self.stats.inc(Stat::OooDropped);
                return false;
            }
            self.stats.inc(Stat::OooSegs);
            self.ooo_insert(idx, c, hh, s, fin, out)
        }
    }

    /// What a connection's out-of-order queue may hold, in whole buffers
    /// (truesize, as Linux charges `sk_rcvbuf`): four times its receive
    /// buffer. A full window of 536-byte segments (the MSS of a peer that
    /// names none) in 2 KiB buffers stays under it; a peer sending one
    /// byte per hole gets a few dozen buffers per 64 KiB, not the pool.
    fn ooo_cap(&self, c: &ConnBlock) -> u64 {
        4 * u64::from(Self::rcvbuf(c).min(self.rx_ring(c)))
    }

    /// Makes room for a segment at `s` holding a buffer of `truesize` in
    /// the out-of-order queue: if the queue would exceed its cap, gives up
    /// entries from its far end, as long as they lie beyond `s` (data
    /// nearer the next expected byte is worth more; `tcp_prune_ofo_queue`
    /// does the same). False if there is no room for it.
    fn ooo_make_room<B: Buffers>(
        &mut self,
        pool: &B,
        c: &mut ConnBlock,
        s: u32,
        truesize: u64,
    ) -> bool {
        let cap = self.ooo_cap(c);
        loop {
            // The queue's truesize and its last entry (and the one before).
            let (mut held, mut prev, mut last) = (0u64, NIL, NIL);
            let mut cur = c.ooo_q.head;
            let mut steps = 0;
            while cur != NIL && steps <= self.slab.e.len() {
                steps += 1;
                let x = self.slab.get(cur);
                held += pool.raw(&x.h).map_or(0, |r| r.len() as u64);
                prev = last;
                last = cur;
                cur = x.next;
            }
            if held + truesize <= cap {
                return true;
            }
            if last == NIL || !seq::gt(self.slab.get(last).seq, s) {
                return false;
            }
            let x = *self.slab.get(last);
            self.slab.unlink_after(&mut c.ooo_q, prev);
            self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(x.len()));
            self.slab.discard(last);
            self.stats.inc(Stat::OooPruned);
        }
    }

    /// Inserts `[s, s + h.len)` (and a FIN after it) into the sorted,
    /// disjoint out-of-order queue, trimming overlaps. True if `h` was
    /// kept.
    #[allow(clippy::too_many_arguments)]
    fn ooo_insert(
        &mut self,
        idx: usize,
        c: &mut ConnBlock,
        mut h: Handle,
        s: u32,
        mut fin: bool,
        out: &mut Outputs,
    ) -> bool {
        let mut start = s;
        let mut end = s.wrapping_add(h.data_len);
        let mut prev = NIL;
        let mut cur = c.ooo_q.head;
        let mut steps = 0;
        while cur != NIL && steps <= self.slab.e.len() {
            steps += 1;
            let x = *self.slab.get(cur);
            if seq::le(x.end(), start) && !(x.end() == start && x.is_empty()) {
                prev = cur;
                cur = x.next;
                continue;
            }
            if seq::ge(x.seq, end) && (x.seq != end || start != end) {
                break;
            }
            if seq::le(x.seq, start) && seq::ge(x.end(), end) {
                // Covered already.
                if fin && x.end() == end {
                    self.slab.set_flags(cur, x.flags | ef::FIN);
                }
                self.stats.inc(Stat::DupData);
                return false;
            }
            if seq::lt(x.seq, start) {
                // x overlaps our front.
                let d = x.end().wrapping_sub(start);
                h.pull_front(d.min(h.data_len));
                start = x.end();
                prev = cur;
                cur = x.next;
                continue;
            }
            if seq::le(x.end(), end) {
                // x lies inside ours: ours replaces it.
                if x.flags & ef::FIN != 0 && x.end() == end {
                    fin = true;
                }
                let next = x.next;
                self.slab.unlink_after(&mut c.ooo_q, prev);
                self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(x.len()));
                self.slab.discard(cur);
                cur = next;
                continue;
            }
            // x extends beyond our end: cut ours.
            let cut = end.wrapping_sub(x.seq);
            h.data_len = h.data_len.saturating_sub(cut);
            end = x.seq;
            fin = false;
            break;
        }
        if start == end && !fin {
            return false;
        }
        let Some(e) = self
            .slab
            .alloc(idx, h, start, if fin { ef::FIN } else { 0 })
        else {
            return false;
        };
        self.slab.insert_after(&mut c.ooo_q, prev, e);
        out.pin.push(h);
        self.queued_bytes += u64::from(h.data_len);
        c.last_ooo = start;
        true
    }

    /// Moves out-of-order entries that now continue the stream into the
    /// receive queue; true if the peer's FIN came with them.
    fn ooo_drain(&mut self, c: &mut ConnBlock) -> bool {
        while c.ooo_q.head != NIL {
            let i = c.ooo_q.head;
            let x = *self.slab.get(i);
            if seq::gt(x.seq, c.rcv_nxt) {
                break;
            }
            self.slab.pop_front(&mut c.ooo_q);
            let fin = x.flags & ef::FIN != 0;
            if seq::le(x.end(), c.rcv_nxt) {
                self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(x.len()));
                self.slab.discard(i);
                if fin && x.end() == c.rcv_nxt {
                    return true;
                }
                continue;
            }
            let d = c.rcv_nxt.wrapping_sub(x.seq);
            // Unlinked already: the trim counts against no list.
            self.slab.trim_front(&mut List::default(), i, d);
            self.slab.set_flags(i, 0);
            self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(d));
            let n = self.slab.get(i).len();
            self.slab.push_back(&mut c.rcv_q, i);
            c.rcv_nxt = c.rcv_nxt.wrapping_add(n);
            self.stats.add(Stat::InDataBytes, u64::from(n));
            if fin {
                return true;
            }
        }
        false
    }

    /// The peer's FIN arrived in order (eighth step).
    fn fin_input(&mut self, c: &mut ConnBlock) {
        c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
        c.flags |= cf::FIN_RCVD | cf::ACK_NOW;
        // Anything still out of order lies beyond the FIN.
        while let Some(i) = self.slab.pop_front(&mut c.ooo_q) {
            let x = *self.slab.get(i);
            self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(x.len()));
            self.slab.discard(i);
        }
        let fin_acked = c.has(cf::FIN_QUEUED) && seq::gt(c.snd_una, c.snd_end);
        match c.state() {
            // RFC 9293 §3.10.7.4, eighth step: "Enter the CLOSE-WAIT
            // state".
            State::SynReceived | State::Established => c.set_state(State::CloseWait),
            // "If our FIN has been ACKed ... enter TIME-WAIT ...;
            // otherwise, enter the CLOSING state".
            State::FinWait1 if fin_acked => self.enter_time_wait(c),
            State::FinWait1 => c.set_state(State::Closing),
            // "Enter the TIME-WAIT state".
            State::FinWait2 => self.enter_time_wait(c),
            // "Remain in the CLOSE-WAIT / CLOSING / LAST-ACK state"
            // (TIME-WAIT's restart is sync_input's).
            State::CloseWait | State::Closing | State::LastAck | State::TimeWait => {}
            // "Do not process the FIN if the state is CLOSED, LISTEN, or
            // SYN-SENT" (they never get here).
            State::Closed | State::Listen | State::SynSent => {}
        }
    }

    /// TIME-WAIT for 2·MSL; the socket is told CLOSED (after its data).
    pub(crate) fn enter_time_wait(&mut self, c: &mut ConnBlock) {
        c.set_state(State::TimeWait);
        c.t_state = self.now + 2 * self.cfg.msl_ms * 1_000_000;
        c.t_rtx = 0;
        c.t_keepalive = 0;
        c.flags &= !cf::PERSIST;
        while let Some(i) = self.slab.pop_front(&mut c.snd_q) {
            let x = *self.slab.get(i);
            self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(x.len()));
            self.slab.discard(i);
        }
        c.snd_cur = NIL;
        if c.sock != 0 {
            c.pend |= pend::CLOSED;
        }
    }

    /// Drops everything received and not yet delivered.
    pub(crate) fn discard_rcv(&mut self, c: &mut ConnBlock) {
        for q in [&mut c.rcv_q, &mut c.ooo_q, &mut c.dlv_q] {
            while let Some(i) = self.slab.pop_front(q) {
                let x = *self.slab.get(i);
                self.queued_bytes = self.queued_bytes.saturating_sub(u64::from(x.len()));
                self.slab.discard(i);
            }
        }
    }

    // ---- ICMP ----

    /// An ICMP error quoting one of our segments (RFC 5927 checks): hard
    /// errors ([`icmp::socket_error`], Linux's table) fail a connection
    /// that is still opening, soft ones are remembered for a connect that
    /// times out; fragmentation needed lowers the MSS.
    pub(crate) fn icmp_input<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::IcmpIn);
        let parsed = match pool.data(&h) {
            Ok(d) => parse_icmp(d),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        pool.free(&h);
        match parsed {
            Some(q) => self.icmp_error(pool, &q, out),
            None => self.stats.inc(Stat::IcmpIgnored),
        }
    }

    /// An ICMPv6 error quoting one of our segments (RFC 4443 §2.4, the
    /// RFC 5927 checks as for IPv4): as Linux's `tcp_v6_err`, packet too
    /// big lowers the MSS (RFC 8201), the others are mapped by
    /// [`icmpv6::socket_error`] (Linux's `icmpv6_err_convert`) and, hard,
    /// fail a connection still opening, else are remembered.
    pub(crate) fn icmp6_input<B: Buffers>(&mut self, pool: &mut B, h: Handle, out: &mut Outputs) {
        self.stats.inc(Stat::IcmpIn);
        self.stats.inc(Stat::Icmp6In);
        let parsed = match pool.data(&h) {
            Ok(d) => parse_icmp6(d, &h),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        pool.free(&h);
        match parsed {
            Some(q) => self.icmp_error(pool, &q, out),
            None => self.stats.inc(Stat::IcmpIgnored),
        }
    }

    /// What an ICMP or ICMPv6 error quoting a segment of ours does to
    /// its connection.
    fn icmp_error<B: Buffers>(&mut self, pool: &mut B, q: &Quoted, out: &mut Outputs) {
        let t = Tuple {
            la: q.local,
            lp: q.lport,
            ra: q.remote,
            rp: q.rport,
        };
        let Some(&i) = self.by_tuple.get(&t) else {
            self.stats.inc(Stat::IcmpIgnored);
            return;
        };
        let i = i as usize;
        let cb = &self.conns[i];
        // The quoted sequence number must be in flight.
        if !seq::within(q.seq, cb.snd_una, cb.snd_max.wrapping_add(1)) || !cb.state().has_peer() {
            self.stats.inc(Stat::IcmpIgnored);
            return;
        }
        let mut c = self.begin(i);
        match q.what {
            Icmp::Pmtu(mtu) => self.lower_mss(&mut c, mtu),
            Icmp::Error(SocketError { errno, hard }) => {
                if c.state() == State::SynSent && hard {
                    self.stats.inc(Stat::IcmpReported);
                    self.terminate(&mut c, errno);
                } else {
                    c.soft_err = errno as u32;
                    self.stats.inc(Stat::IcmpIgnored);
                }
            }
            Icmp::Nothing => self.stats.inc(Stat::IcmpIgnored),
        }
        self.end(pool, i, c, out);
    }

    /// A smaller path MTU (IPv4 fragmentation needed, RFC 1191; IPv6
    /// packet too big, RFC 8201): the MSS follows it down (never below
    /// IPv4's 576 or IPv6's 1280, RFC 8200 §5: a smaller IPv6 MTU is
    /// taken as 1280), and what is in flight goes again at the new size.
    fn lower_mss(&mut self, c: &mut ConnBlock, mtu: u32) {
        let (floor, ip) = if is_v4(c.remote_addr) {
            (576, 40)
        } else {
            (u32::from(IPV6_MIN_MTU), 60)
        };
        let mtu = if is_v4(c.remote_addr) {
            mtu
        } else {
            mtu.max(floor)
        };
        if mtu >= floor && mtu - ip < c.our_mss {
            c.our_mss = mtu - ip;
            self.set_mss(c);
            self.stats.inc(Stat::IcmpPmtu);
            // Resend what is in flight at the new size.
            c.snd_nxt = c.snd_una;
        } else {
            self.stats.inc(Stat::IcmpIgnored);
        }
    }
}

/// What an ICMP or ICMPv6 error asks of a connection.
#[derive(Clone, Copy, Debug)]
enum Icmp {
    /// The path MTU is this many bytes.
    Pmtu(u32),
    /// An error for the socket.
    Error(SocketError),
    /// Nothing for TCP.
    Nothing,
}

/// What an ICMP error quotes, and what it asks.
struct Quoted {
    what: Icmp,
    local: u128,
    lport: u16,
    remote: u128,
    rport: u16,
    seq: u32,
}

fn parse_icmp(d: &[u8]) -> Option<Quoted> {
    let ip = Ipv4Header::parse(d).ok()?;
    if ip.protocol != protocol::ICMP || ip.is_fragment() {
        return None;
    }
    let msg = d.get(usize::from(ip.header_len)..usize::from(ip.total_len))?;
    let icmp = IcmpHeader::parse(msg).ok()?;
    // Source quench and redirect are not the transport's business.
    if !icmp::reaches_transport(icmp.icmp_type) {
        return None;
    }
    let q = QuotedDatagram::parse(&msg[IcmpHeader::LEN..]).ok()?;
    if q.protocol != protocol::TCP {
        return None;
    }
    let frag =
        icmp.icmp_type == icmp_type::DEST_UNREACHABLE && icmp.code == unreach_code::FRAG_NEEDED;
    let what = if frag {
        Icmp::Pmtu(u32::from(icmp.next_hop_mtu()))
    } else {
        icmp::socket_error(icmp.icmp_type, icmp.code).map_or(Icmp::Nothing, Icmp::Error)
    };
    Some(Quoted {
        what,
        local: mapped(u32::from(q.src)),
        remote: mapped(u32::from(q.dst)),
        lport: q.src_port(),
        rport: q.dst_port(),
        seq: q.tcp_seq(),
    })
}

/// The ICMPv6 error in packet `d` (`h.l4_off` at its header, its checksum
/// checked by ipd) and the TCP segment of ours it quotes: an IPv6 header
/// right after the 8-byte ICMPv6 header, TCP right behind it (tcpd sends
/// no extension headers), at least the 8 bytes of ports and sequence
/// number (RFC 4443 §2.4 (c) quotes as much as fits).
fn parse_icmp6(d: &[u8], h: &Handle) -> Option<Quoted> {
    let p = ip::parse(d, h, next_header::ICMPV6).ok()?;
    let msg = d.get(p.l4..p.end)?;
    let (&icmp_type, &code) = (msg.first()?, msg.get(1)?);
    if !icmpv6::is_error(icmp_type) {
        return None;
    }
    let quote = msg.get(8..)?;
    let q = Ipv6Header::parse_quoted(quote).ok()?;
    if q.next_header != next_header::TCP {
        return None;
    }
    let tcp = quote.get(Ipv6Header::LEN..Ipv6Header::LEN + 8)?;
    let (local, remote) = (u128::from(q.src), u128::from(q.dst));
    if is_v4(local) || is_v4(remote) {
        return None;
    }
    let what = if icmp_type == icmpv6_type::PACKET_TOO_BIG {
        let m = msg.get(4..8)?;
        Icmp::Pmtu(u32::from_be_bytes([m[0], m[1], m[2], m[3]]))
    } else {
        icmpv6::socket_error(icmp_type, code).map_or(Icmp::Nothing, Icmp::Error)
    };
    Some(Quoted {
        what,
        local,
        remote,
        lport: u16::from_be_bytes([tcp[0], tcp[1]]),
        rport: u16::from_be_bytes([tcp[2], tcp[3]]),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
    })
}
