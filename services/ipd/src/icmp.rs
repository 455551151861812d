//! ICMP (RFC 792, RFC 1122 §3.2.2): echo, received errors (counted, and
//! handed to the transport layer whose datagram they quote), and sending
//! errors with RFC 1122's restrictions and a rate limit.

use strata_ipc::addrs::is_loopback;
use strata_ipc::{Buffers, Handle};
use strata_proto::checksum::update_u16;
use strata_proto::icmp::{
    self, error_quote_len, icmp_type, IcmpError, IcmpHeader, QuotedDatagram, ERROR_QUOTE_MAX,
};
use strata_proto::ipv4::{protocol, Ipv4Header};

use crate::route::{is_martian, is_multicast};
use crate::stats::Stat;
use crate::{IpCore, Outputs};

/// IPv4 + ICMP headers of an error we send.
const ERR_HDRS: usize = Ipv4Header::MIN_LEN + IcmpHeader::LEN;
/// TTL of datagrams ipd originates (Linux `ip_default_ttl`).
pub(crate) const DEFAULT_TTL: u8 = 64;
/// Precedence "internetwork control" for ICMP errors (RFC 1812 §4.3.2.5).
const TOS_INTERNETCONTROL: u8 = 0xc0;

/// The counter of a received ICMP error of type `t`.
fn error_stat(t: u8) -> Stat {
    match t {
        icmp_type::DEST_UNREACHABLE => Stat::IcmpInDestUnreach,
        icmp_type::TIME_EXCEEDED => Stat::IcmpInTimeExceeded,
        _ => Stat::IcmpInOtherErrors,
    }
}

/// The transport protocol (TCP or UDP) of `quote`, the datagram an ICMP
/// error carries after its 8-byte header, if [`QuotedDatagram::parse`]
/// reads it (a whole IPv4 header of an unfragmented datagram or a first
/// fragment and at least the 8 bytes after it, the ports).
pub(crate) fn quoted_protocol(quote: &[u8]) -> Option<u8> {
    let p = QuotedDatagram::parse(quote).ok()?.protocol;
    matches!(p, protocol::TCP | protocol::UDP).then_some(p)
}

impl IpCore {
    /// An ICMP message for us (data window = the datagram).
    pub(crate) fn icmp_input<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        h: Handle,
        bcast: bool,
        out: &mut Outputs,
    ) {
        let hl = h.l4_off as usize;
        let icmp = match pool.data(&h) {
            Ok(d) => IcmpHeader::parse(d.get(hl..).unwrap_or(&[])),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let icmp = match icmp {
            Ok(i) => i,
            Err(IcmpError::Truncated) => return self.drop(pool, &h, Stat::IcmpTruncated),
            Err(IcmpError::BadChecksum) => return self.drop(pool, &h, Stat::IcmpBadChecksum),
        };
        self.stats.inc(Stat::IcmpInMsgs);
        // Errors sent to a broadcast address are not believed (RFC 1122
        // §3.2.2); the others go to the layer that owns the quoted flow as
        // they are: data window = the whole datagram, `l4_off` at the ICMP
        // header, `l4proto` ICMP.
        if !bcast && self.error_for_upper(pool, &h, icmp.icmp_type).is_some() {
            self.stats.inc(error_stat(icmp.icmp_type));
            self.stats.inc(Stat::IcmpErrDelivered);
            out.up.push(h);
            return;
        }
        let counter = match icmp.icmp_type {
            icmp_type::ECHO_REQUEST => {
                self.stats.inc(Stat::IcmpInEchoRequests);
                if bcast {
                    Stat::IcmpEchoBroadcastIgnored
                } else {
                    return self.echo_reply(now, pool, h, out);
                }
            }
            // Ping sockets would take these; none exist yet.
            icmp_type::ECHO_REPLY => Stat::IcmpInEchoReplies,
            // Errors no upper layer takes (see `error_for_upper`) are only
            // counted.
            t if icmp::is_error(t) => error_stat(t),
            _ => Stat::IcmpInOther,
        };
        self.drop(pool, &h, counter);
    }

    /// The protocol (TCP or UDP) of the datagram quoted by ICMP error `h`
    /// of type `t`, when that protocol's layer is attached and should be
    /// told ([`icmp::reaches_transport`]: destination unreachable, time
    /// exceeded and parameter problem), quoting a whole IPv4 header of a
    /// first fragment plus the 8 bytes that hold the ports, as Linux
    /// requires before it looks for a socket.
    fn error_for_upper<B: Buffers>(&self, pool: &B, h: &Handle, t: u8) -> Option<u8> {
        if !icmp::reaches_transport(t) {
            return None;
        }
        let d = pool.data(h).ok()?;
        let p = quoted_protocol(d.get(usize::from(h.l4_off) + IcmpHeader::LEN..)?)?;
        (self.upper[usize::from(p)]).then_some(p)
    }

    /// Turns echo request `h` into its reply in the same buffer: the data
    /// stays where it is, only the headers change.
    fn echo_reply<B: Buffers>(&mut self, now: u64, pool: &mut B, mut h: Handle, out: &mut Outputs) {
        let hl = h.l4_off as usize;
        let ident = self.next_ident();
        let Ok(d) = pool.data_mut(&h) else {
            return self.drop(pool, &h, Stat::BadWindow);
        };
        // Type 8 -> 0; the rest of the message is unchanged, so the
        // checksum is updated rather than recomputed over the whole payload.
        let old = u16::from_be_bytes([d[hl], d[hl + 1]]);
        d[hl] = icmp_type::ECHO_REPLY;
        let new = u16::from_be_bytes([d[hl], d[hl + 1]]);
        let c = update_u16(u16::from_be_bytes([d[hl + 2], d[hl + 3]]), old, new);
        d[hl + 2..hl + 4].copy_from_slice(&c.to_be_bytes());
        let reply = Ipv4Header {
            header_len: 20,
            tos: d[1],
            total_len: (d.len() - (hl - 20)) as u16,
            ident,
            // Without DF, so a reassembled request's reply can be fragmented.
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            ttl: DEFAULT_TTL,
            protocol: protocol::ICMP,
            checksum: 0,
            src: [d[16], d[17], d[18], d[19]].into(),
            dst: [d[12], d[13], d[14], d[15]].into(),
        };
        // Options are not echoed (RFC 1122 only says SHOULD for record
        // route and timestamp): the new 20-byte header is written right in
        // front of the ICMP message.
        h.pull_front((hl - 20) as u32);
        let Ok(d) = pool.data_mut(&h) else {
            return self.drop(pool, &h, Stat::BadWindow);
        };
        if reply.emit(d).is_err() {
            return self.drop(pool, &h, Stat::BadWindow);
        }
        h.l3_off = 0;
        h.l4_off = 20;
        // Both checksums are complete now, whatever the request's state.
        h.csum = strata_ipc::handle::csum::NONE;
        self.stats.inc(Stat::IcmpOutEchoReplies);
        self.route_out(now, pool, h, out);
    }

    /// Sends the ICMP error `icmp_type`/`code` about `original`, a datagram
    /// that reached us: its IPv4 header starts at `l3_off` in its data
    /// window (so a frame and a bare datagram both do). The shell calls
    /// this for port unreachable when udpd reports a closed port.
    ///
    /// Nothing is sent (RFC 1122 §3.2.2) about an ICMP error, a fragment
    /// other than the first, a datagram to a broadcast or multicast address
    /// or from an address that does not name a single host; errors beyond
    /// the rate limit are counted and dropped. `original` stays the
    /// caller's: it is read, never freed.
    pub fn send_icmp_error<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        original: &Handle,
        icmp_type: u8,
        code: u8,
        out: &mut Outputs,
    ) {
        let msg = IcmpHeader::error(icmp_type, code);
        self.icmp_error(now, pool, original, msg, false, out);
    }

    /// Answers datagram `orig` (window = the datagram as it came, IPv4
    /// or IPv6) with port unreachable: no socket took it.
    pub fn port_unreachable<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        orig: &Handle,
        out: &mut Outputs,
    ) {
        if orig.ethertype != strata_proto::ethernet::ethertype::IPV6 {
            return self.send_icmp_error(
                now,
                pool,
                orig,
                icmp_type::DEST_UNREACHABLE,
                icmp::unreach_code::PORT,
                out,
            );
        }
        let Some(slot) = self
            .net
            .slot(orig.iif)
            .or((!self.v6.is_empty()).then_some(0))
        else {
            return;
        };
        let msg = strata_proto::icmpv6::Icmpv6Header::dest_unreachable(
            strata_proto::icmpv6::unreach_code::PORT,
        );
        self.icmp6_error(now, pool, orig, slot, msg, false, out);
    }

    /// [`send_icmp_error`](Self::send_icmp_error) with the whole header
    /// given (for the MTU of fragmentation needed) and whether the original
    /// came as a link-layer broadcast.
    pub(crate) fn icmp_error<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        orig: &Handle,
        msg: IcmpHeader,
        l2_bcast: bool,
        out: &mut Outputs,
    ) {
        let Ok(d) = pool.data(orig) else {
            return self.stats.inc(Stat::IcmpOutSuppressed);
        };
        let ip = d.get(orig.l3_off as usize..).unwrap_or(&[]);
        let hl = ip.first().map_or(0, |b| usize::from(b & 0x0f) * 4);
        if ip.len() < 20 || ip[0] >> 4 != 4 || hl < 20 || ip.len() < hl {
            return self.stats.inc(Stat::IcmpOutSuppressed);
        }
        let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
        let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
        let frag_off = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
        // A truncated ICMP header counts as an error: better silent than
        // answering an error with an error.
        let about_error = ip[9] == protocol::ICMP
            && match ip.get(hl) {
                None => true,
                Some(&t) => icmp::is_error(t),
            };
        if frag_off != 0
            || about_error
            || l2_bcast
            || is_multicast(dst)
            || self.net.is_bcast(dst)
            // 127/8 between loopback addresses can only be the stack's own
            // traffic (input drops it from a wire): answered.
            || (is_martian(src) && !(is_loopback(src) && is_loopback(dst)))
            || self.net.is_bcast(src)
        {
            return self.stats.inc(Stat::IcmpOutSuppressed);
        }
        if !self.icmp_allow(now) {
            return self.stats.inc(Stat::IcmpOutRatelimited);
        }
        let tos = (ip[1] & 0x1e) | TOS_INTERNETCONTROL;
        // The part of the datagram the error quotes, held on the stack
        // while the error's buffer is allocated (the pool lends one buffer
        // at a time).
        let quote = error_quote_len(ip.len());
        let mut quoted = [0u8; ERROR_QUOTE_MAX];
        quoted[..quote].copy_from_slice(&ip[..quote]);
        // Answer from the address the datagram was sent to when it is ours;
        // otherwise routing fills in the outgoing interface's address.
        let from = if self.net.is_local(dst) || is_loopback(dst) {
            dst
        } else {
            0
        };
        let Some(mut e) = pool.alloc(ERR_HDRS + quote) else {
            return self.stats.inc(Stat::PoolExhausted);
        };
        e.data_len = (ERR_HDRS + quote) as u32;
        let hdr = Ipv4Header {
            header_len: 20,
            tos,
            total_len: (ERR_HDRS + quote) as u16,
            ident: self.next_ident(),
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            ttl: DEFAULT_TTL,
            protocol: protocol::ICMP,
            checksum: 0,
            src: from.into(),
            dst: src.into(),
        };
        let ok = pool
            .data_mut(&e)
            .map(|d| hdr.emit(d).is_ok() && msg.emit_error(&quoted[..quote], &mut d[20..]).is_ok());
        if ok != Ok(true) {
            return self.drop(pool, &e, Stat::BadWindow);
        }
        e.l3_off = 0;
        e.l4_off = 20;
        e.l4proto = protocol::ICMP;
        self.stats.inc(match msg.icmp_type {
            icmp_type::DEST_UNREACHABLE => Stat::IcmpOutDestUnreach,
            icmp_type::TIME_EXCEEDED => Stat::IcmpOutTimeExceeded,
            _ => Stat::IcmpOutOtherErrors,
        });
        self.route_out(now, pool, e, out);
    }

    /// Token bucket for ICMP errors (Linux `icmp_msgs_per_sec` and
    /// `icmp_msgs_burst`): one token per `1 s / rate`, at most `burst`
    /// saved up. A rate of 0 turns the limit off.
    pub(crate) fn icmp_allow(&mut self, now: u64) -> bool {
        let rate = u64::from(self.limits.icmp_rate_per_sec);
        if rate == 0 {
            return true;
        }
        let interval = (1_000_000_000 / rate).max(1);
        let burst = self.limits.icmp_burst;
        if now > self.icmp_last {
            let add = (now - self.icmp_last) / interval;
            let add32 = add.min(u64::from(burst)) as u32;
            self.icmp_tokens = self.icmp_tokens.saturating_add(add32).min(burst);
            self.icmp_last += add * interval;
            if self.icmp_tokens == burst {
                // A full bucket banks no further credit.
                self.icmp_last = now;
            }
        }
        if self.icmp_tokens > 0 {
            self.icmp_tokens -= 1;
            true
        } else {
            false
        }
    }
}
