//! Control messages between sockd and the transport layers (udpd, tcpd),
//! on the same rings as data, flagged with
//! [`flags::CTRL`](crate::handle::flags::CTRL), so that a control message
//! and the data around it stay in order. One with no address or port
//! rides in the handle itself ([`L4Ctl::inline`]); the rest take a pool
//! buffer.
//!
//! Data on these hops:
//! - transport → sockd: the data window is the whole IPv4 datagram as
//!   received, `l3_off` 0, `l4_off` at the transport header; the payload
//!   starts after the transport header. `sock` names the socket.
//! - sockd → transport: the data window is the payload alone, preceded by
//!   a [`SendMeta`] that sockd pushes in front of it (into the headroom);
//!   `sock` names the socket. The transport replaces the meta with its
//!   own headers.
//! - TCP differs: data both ways is the stream's payload alone (tcpd →
//!   sockd: in order, no headers; sockd → tcpd: no SendMeta), and flow
//!   control runs on credits: sockd hands tcpd at most the send buffer
//!   tcpd granted (initially the socket's send size, then
//!   [`op::SEND_CREDIT`]), and tcpd delivers at most what the receive ring
//!   can take (initially its size, then [`op::READ_CREDIT`]). The receive
//!   window tcpd advertises is that credit less what it holds.

use crate::arena::Pod;
use crate::bufs::{BufError, Buffers};
use crate::handle::{flags, Handle, INLINE, NO_IFACE};

/// Operations. Requests go sockd → transport, replies and notifications
/// transport → sockd.
pub mod op {
    /// Bind `sock` to `local_addr:local_port` (0 = any / ephemeral).
    pub const BIND: u32 = 1;
    /// Connect `sock` to `remote_addr:remote_port` (binding it first to an
    /// ephemeral port if unbound). A zero remote address disconnects.
    pub const CONNECT: u32 = 2;
    /// Close `sock`: release its port. No reply (tcpd: CLOSED follows,
    /// also for a socket it no longer knows, so a repeat is confirmed).
    pub const CLOSE: u32 = 3;
    /// Reply: the request succeeded; the addresses are the socket's now.
    pub const OK: u32 = 100;
    /// Reply: the request failed with `errno`.
    pub const ERROR: u32 = 101;
    /// Notification: the socket was bound implicitly (first send on an
    /// unbound socket); the addresses are the socket's now.
    pub const BOUND: u32 = 102;
    /// Notification: an ICMP error arrived for the connected socket; `errno`
    /// is what the application sees on its next call. (TCP: the
    /// connection failed or was reset; `errno` says how.)
    pub const SOCK_ERROR: u32 = 103;

    // ---- TCP (sockd ↔ tcpd) ------------------------------------------
    /// Request: listen on the bound `sock` with an accept queue of
    /// `value` connections. Reply OK/ERROR.
    pub const LISTEN: u32 = 4;
    /// Request: `sock` is the socket sockd made for the accepted
    /// connection `value` (tcpd's connection id, from ACCEPTABLE); from
    /// now on the connection's data and notifications carry `sock`. No
    /// reply.
    pub const ATTACH: u32 = 5;
    /// Request: shut down `sock`; `value` 0 read, 1 write, 2 both. A write
    /// shutdown sends FIN after everything queued. No reply.
    pub const SHUTDOWN: u32 = 6;
    /// Request: abort `sock`: send RST, forget it (close with unread data,
    /// as Linux). No reply; CLOSED follows, as for CLOSE.
    pub const ABORT: u32 = 7;
    /// Request: the application has read `value` bytes of `sock`'s stream
    /// in total (the receive ring's consumer index, low 32 bits used):
    /// tcpd may deliver up to a ring's worth beyond it. Absolute, so that
    /// a message lost in a restart or sent twice does no harm; with
    /// [`ctl_flags::SYNC`] tcpd answers with SEND_CREDIT at once.
    pub const READ_CREDIT: u32 = 8;
    /// Request: set an option on `sock`: `flags` names it (see
    /// [`tcp_opt`]), `value` is its value. No reply.
    pub const SETOPT: u32 = 9;
    /// Notification: the connection of `sock` is established (after
    /// CONNECT); addresses filled in.
    pub const CONNECTED: u32 = 104;
    /// Notification: listener `sock` has a new established connection,
    /// tcpd's id `value`, peer in `remote_*`, local in `local_*`; it
    /// waits for an ATTACH (and counts against the backlog until then).
    pub const ACCEPTABLE: u32 = 105;
    /// Notification: the peer sent FIN: after the data already delivered,
    /// `sock` reads end-of-file. `value` (low 32 bits, wrapping): the
    /// stream offset where the data ends; a sockd that has less asks
    /// again (RESYNC) and shows the end only when tcpd repeats it.
    pub const EOF: u32 = 106;
    /// Notification: `value` is a [`SendCredit`](super::SendCredit):
    /// how much of `sock`'s data left tcpd's send buffer in total
    /// (acknowledged, or discarded with the connection), so that sockd
    /// may have a send buffer's worth beyond that with tcpd, and how much
    /// tcpd took from sockd. Absolute, like READ_CREDIT.
    pub const SEND_CREDIT: u32 = 107;
    /// Notification: tcpd forgot `sock` (closed both ways, or reset);
    /// sockd may release the socket once the application closed it.
    pub const CLOSED: u32 = 108;
}

/// Option names for [`op::SETOPT`].
pub mod tcp_opt {
    /// TCP_NODELAY (value 0/1).
    pub const NODELAY: u32 = 1;
    /// SO_KEEPALIVE (value 0/1).
    pub const KEEPALIVE: u32 = 2;
    /// TCP_CONGESTION (value 0 CUBIC, 1 NewReno).
    pub const CONGESTION: u32 = 3;
    /// The bytes of the socket's receive ring (what SO_RCVBUF sets on
    /// Linux), which bounds what tcpd delivers unread: sockd says it when
    /// the application's ring is not the configured size.
    pub const RCVBUF: u32 = 4;
    /// TCP_KEEPIDLE, seconds (0: the configured default).
    pub const KEEPIDLE: u32 = 5;
    /// TCP_KEEPINTVL, seconds (0: the configured default).
    pub const KEEPINTVL: u32 = 6;
    /// TCP_KEEPCNT (0: the configured default).
    pub const KEEPCNT: u32 = 7;
}

/// Request flags.
pub mod ctl_flags {
    /// SO_REUSEADDR was set on the socket.
    pub const REUSEADDR: u32 = 1;
    /// READ_CREDIT: answer with the send state (SEND_CREDIT) now; sockd
    /// asks after its own restart and every so often, so that a
    /// notification lost when a layer died is made good.
    pub const SYNC: u32 = 2;
    /// READ_CREDIT: the high 32 bits of `value` are the stream bytes
    /// sockd has written into the application's ring (wrapping): tcpd
    /// may forget what it delivered up to there.
    pub const WRITTEN: u32 = 4;
    /// READ_CREDIT: sockd lost data tcpd delivered (it restarted, or saw
    /// a gap): tcpd delivers again from what sockd has written, and
    /// repeats CONNECTED for an established connection. On a listener:
    /// tcpd repeats ACCEPTABLE for every connection still waiting for an
    /// ATTACH (a restarted sockd lost its accept queue). On a socket tcpd
    /// no longer knows: CLOSED (the one sent may have died with tcpd).
    pub const RESYNC: u32 = 8;
    /// BIND, LISTEN, CONNECT: sent again (tcpd restarted, or the reply is
    /// late); the first may have taken effect, and then this one
    /// answers OK rather than EINVAL, EALREADY or EISCONN.
    pub const REPEAT: u32 = 16;
    /// BIND, CONNECT: SO_REUSEPORT was set on the socket (sockd has
    /// checked that every socket sharing the port is its user's).
    pub const REUSEPORT: u32 = 32;
    /// BIND, CONNECT, LISTEN: IPV6_V6ONLY is set on the IPv6 socket: a
    /// wildcard `::` takes IPv6 only, not IPv4 as mapped addresses.
    pub const V6ONLY: u32 = 64;
    /// READ_CREDIT with RESYNC: sockd's table has the connection as
    /// established, addresses and all, so tcpd need not repeat
    /// CONNECTED (which carries addresses, so takes a pool buffer: after
    /// a tcpd restart, one for each of a hundred thousand connections at
    /// once took the whole pool, and the deliveries queued behind them
    /// with it). sockd then cuts the stream by its default segment size
    /// until tcpd says otherwise.
    pub const KNOWN_CONNECTED: u32 = 128;
}

/// The reuse options in a BIND's or CONNECT's [`ctl_flags`], as a
/// transport's own bits: `addr` for SO_REUSEADDR, `port` for
/// SO_REUSEPORT.
pub fn reuse_options(flags: u32, addr: u32, port: u32) -> u32 {
    let mut bits = 0;
    if flags & ctl_flags::REUSEADDR != 0 {
        bits |= addr;
    }
    if flags & ctl_flags::REUSEPORT != 0 {
        bits |= port;
    }
    bits
}

/// Which of `n` sockets sharing a port with SO_REUSEPORT takes what
/// comes from `addr:port`: a function of the peer only, so that every
/// segment of a connection (and every datagram of a flow) picks the same
/// one while the group stays as it is.
pub fn reuseport_pick(addr: u32, port: u16, n: usize) -> usize {
    let key = u64::from(addr) << 16 | u64::from(port);
    // Fibonacci hashing: the high half mixes every bit of the key.
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (h % n.max(1) as u64) as usize
}

/// What READ_CREDIT's `value` carries: two stream offsets (wrapping
/// byte counts since the connection began), absolute so that a lost or
/// repeated message does no harm.
///
/// `read` (low half) is what the application has read, from which tcpd's
/// receive credit follows (the ring holds the socket's receive size);
/// `written` (high half, meaningful with [`ctl_flags::WRITTEN`]) is what
/// sockd has written into the application's ring, which tcpd then no
/// longer needs to keep for redelivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCredit {
    /// Stream bytes the application has read.
    pub read: u32,
    /// Stream bytes sockd has written into the application's ring.
    pub written: u32,
}

impl ReadCredit {
    /// The `value` of a READ_CREDIT message.
    pub fn pack(self) -> u64 {
        u64::from(self.read) | u64::from(self.written) << 32
    }

    /// The two offsets of a READ_CREDIT `value`.
    pub fn unpack(value: u64) -> ReadCredit {
        ReadCredit {
            read: value as u32,
            written: (value >> 32) as u32,
        }
    }
}

/// What SEND_CREDIT's `value` carries: two stream offsets (wrapping byte
/// counts since the connection began), absolute like [`ReadCredit`].
///
/// `freed` (low half) is what has left tcpd's send buffer (acknowledged
/// by the peer, or discarded), from which sockd's send credit follows;
/// `taken` (high half) is what tcpd has taken from sockd, so sockd may
/// free the application's ring up to there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendCredit {
    /// Stream bytes that left tcpd's send buffer.
    pub freed: u32,
    /// Stream bytes tcpd took from sockd.
    pub taken: u32,
}

impl SendCredit {
    /// The `value` of a SEND_CREDIT message.
    pub fn pack(self) -> u64 {
        u64::from(self.freed) | u64::from(self.taken) << 32
    }

    /// The two offsets of a SEND_CREDIT `value`.
    pub fn unpack(value: u64) -> SendCredit {
        SendCredit {
            freed: value as u32,
            taken: (value >> 32) as u32,
        }
    }
}

/// One control message. Ports in host byte order; addresses as 128-bit
/// values, IPv4 ones mapped ([`crate::addrs::mapped`]), so that
/// `mapped(0)` is IPv4's "any" and 0 IPv6's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L4Ctl {
    /// One of [`op`].
    pub op: u32,
    /// sockd's socket id.
    pub sock: u32,
    /// Request id, echoed in the reply.
    pub req: u32,
    /// Error number (libc errno) for [`op::ERROR`] and [`op::SOCK_ERROR`].
    pub errno: i32,
    /// Local address.
    pub local_addr: u128,
    /// Remote address (0 in a CONNECT: disconnect).
    pub remote_addr: u128,
    /// Local port.
    pub local_port: u16,
    /// Remote port.
    pub remote_port: u16,
    /// [`ctl_flags`].
    pub flags: u32,
    /// Operation-specific value.
    pub value: u64,
}

// SAFETY: repr(C), integers only, no padding that matters.
unsafe impl Pod for L4Ctl {}

/// Bytes of an [`L4Ctl`] on the wire.
pub const L4CTL_LEN: usize = 64;

impl L4Ctl {
    /// The local address as IPv4 (host order), if it is one; what a
    /// transport that speaks IPv4 only refuses otherwise.
    pub fn local_v4(&self) -> Option<u32> {
        crate::addrs::unmapped(self.local_addr)
    }

    /// The remote address as IPv4 (host order), if it is one.
    pub fn remote_v4(&self) -> Option<u32> {
        crate::addrs::unmapped(self.remote_addr)
    }
}

/// Destination of a datagram sent with `send_to`, in front of the payload
/// on sockd → transport hops. Address 0 (`::`) or IPv4's 0.0.0.0, never
/// destinations: use the connected peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendMeta {
    /// Destination address (IPv4 mapped), 0 for the connected peer.
    pub addr: u128,
    /// Destination port (host order).
    pub port: u16,
}

/// Bytes of a [`SendMeta`]: the address, the port, and padding that
/// keeps the payload 8-byte aligned.
pub const SEND_META_LEN: usize = 24;

impl SendMeta {
    /// Encodes into [`SEND_META_LEN`] bytes (network order).
    pub fn to_bytes(&self) -> [u8; SEND_META_LEN] {
        let mut b = [0u8; SEND_META_LEN];
        b[..16].copy_from_slice(&self.addr.to_be_bytes());
        b[16..18].copy_from_slice(&self.port.to_be_bytes());
        b
    }

    /// Decodes [`SEND_META_LEN`] bytes.
    pub fn from_bytes(b: &[u8; SEND_META_LEN]) -> SendMeta {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        SendMeta {
            addr: u128::from_be_bytes(a),
            port: u16::from_be_bytes([b[16], b[17]]),
        }
    }
}

impl L4Ctl {
    /// Encodes into bytes (little-endian, fixed layout).
    pub fn to_bytes(&self) -> [u8; L4CTL_LEN] {
        let mut b = [0u8; L4CTL_LEN];
        b[0..4].copy_from_slice(&self.op.to_le_bytes());
        b[4..8].copy_from_slice(&self.sock.to_le_bytes());
        b[8..12].copy_from_slice(&self.req.to_le_bytes());
        b[12..16].copy_from_slice(&self.errno.to_le_bytes());
        b[16..32].copy_from_slice(&self.local_addr.to_le_bytes());
        b[32..48].copy_from_slice(&self.remote_addr.to_le_bytes());
        b[48..50].copy_from_slice(&self.local_port.to_le_bytes());
        b[50..52].copy_from_slice(&self.remote_port.to_le_bytes());
        b[52..56].copy_from_slice(&self.flags.to_le_bytes());
        b[56..64].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    /// Decodes bytes written by [`L4Ctl::to_bytes`]; `None` when too short.
    pub fn from_bytes(b: &[u8]) -> Option<L4Ctl> {
        if b.len() < L4CTL_LEN {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u128_at = |i: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[i..i + 16]);
            u128::from_le_bytes(a)
        };
        let mut value = [0u8; 8];
        value.copy_from_slice(&b[56..64]);
        Some(L4Ctl {
            op: u32_at(0),
            sock: u32_at(4),
            req: u32_at(8),
            errno: u32_at(12) as i32,
            local_addr: u128_at(16),
            remote_addr: u128_at(32),
            local_port: u16_at(48),
            remote_port: u16_at(50),
            flags: u32_at(52),
            value: u64::from_le_bytes(value),
        })
    }

    /// The message as a handle that names no buffer ([`INLINE`]), if it
    /// fits: one with no address or port (credits, SYNCs, closes,
    /// shutdowns, most notifications). The fields it rides in are ones
    /// no layer reads on these hops.
    pub fn inline(&self) -> Option<Handle> {
        let compact = self.local_addr == 0
            && self.remote_addr == 0
            && self.local_port == 0
            && self.remote_port == 0;
        compact.then(|| Handle {
            buf: INLINE,
            flags: flags::CTRL,
            sock: self.sock,
            ct_id: self.op,
            mark: self.req,
            nexthop: self.errno as u32,
            flow_hash: self.flags,
            tstamp: self.value,
            iif: NO_IFACE,
            oif: NO_IFACE,
            ..Handle::default()
        })
    }

    /// The message as a control handle: [`L4Ctl::inline`] when it fits,
    /// else in a fresh buffer (`None` when the pool has none).
    pub fn to_handle<B: Buffers>(&self, pool: &mut B) -> Option<Handle> {
        if let Some(h) = self.inline() {
            return Some(h);
        }
        let mut h = pool.alloc(L4CTL_LEN)?;
        h.data_len = L4CTL_LEN as u32;
        h.flags |= flags::CTRL;
        h.sock = self.sock;
        match pool.data_mut(&h) {
            Ok(d) => d.copy_from_slice(&self.to_bytes()),
            Err(_) => {
                pool.free(&h);
                return None;
            }
        }
        Some(h)
    }

    /// Reads the message out of a control handle (which the caller
    /// frees; freeing an inline one does nothing).
    pub fn from_handle<B: Buffers>(pool: &B, h: &Handle) -> Result<Option<L4Ctl>, BufError> {
        if h.is_inline() {
            return Ok(Some(L4Ctl {
                op: h.ct_id,
                sock: h.sock,
                req: h.mark,
                errno: h.nexthop as i32,
                flags: h.flow_hash,
                value: h.tstamp,
                ..L4Ctl::default()
            }));
        }
        Ok(L4Ctl::from_bytes(pool.data(h)?))
    }

    /// Reply or notification `m` from `l4proto`'s layer, to sockd, made
    /// from `h` (a request, or a buffer taken for it): in the handle
    /// itself when it fits ([`L4Ctl::inline`]; `h`'s buffer, if any, is
    /// freed), else in `h`'s buffer, or in a fresh one when `h` names
    /// none. `Err(BadIndex)` when no buffer was to be had; any error
    /// leaves `h` as it was, for the caller to count and free.
    pub fn reply_in<B: Buffers>(
        &self,
        pool: &mut B,
        h: &Handle,
        l4proto: u8,
    ) -> Result<Handle, BufError> {
        let mut c = match self.inline() {
            Some(c) => {
                pool.free(h);
                c
            }
            None if h.is_inline() => self.to_handle(pool).ok_or(BufError::BadIndex)?,
            None => {
                let mut c = Handle::new(h.buf, h.gen, h.data_off);
                c.data_len = L4CTL_LEN as u32;
                c.flags = flags::CTRL;
                c.sock = self.sock;
                pool.data_mut(&c)?.copy_from_slice(&self.to_bytes());
                c
            }
        };
        c.l4proto = l4proto;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapPool;

    #[test]
    fn credit_pairs_pack_low_and_high_halves() {
        let r = ReadCredit {
            read: 0xdead_beef,
            written: 7,
        };
        assert_eq!(r.pack(), 7 << 32 | 0xdead_beef);
        assert_eq!(ReadCredit::unpack(r.pack()), r);
        let s = SendCredit {
            freed: 1,
            taken: u32::MAX,
        };
        assert_eq!(s.pack(), u64::from(u32::MAX) << 32 | 1);
        assert_eq!(SendCredit::unpack(s.pack()), s);
    }

    #[test]
    fn ctl_round_trips_through_a_buffer() {
        let mut p = HeapPool::new(2, 0);
        let m = L4Ctl {
            op: op::BIND,
            sock: 7,
            req: 9,
            errno: -3,
            local_addr: crate::addrs::mapped(0x0a4d0002),
            remote_addr: u128::from(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
            local_port: 5353,
            remote_port: 53,
            flags: ctl_flags::REUSEADDR,
            value: u64::MAX - 1,
        };
        let h = m.to_handle(&mut p).unwrap();
        assert_eq!(h.flags & flags::CTRL, flags::CTRL);
        assert_eq!(L4Ctl::from_handle(&p, &h).unwrap(), Some(m));
        assert_eq!((m.local_v4(), m.remote_v4()), (Some(0x0a4d0002), None));
        assert_eq!(L4Ctl::from_bytes(&[0; 5]), None);
        p.free(&h);
    }

    #[test]
    fn ctl_without_addresses_rides_in_the_handle() {
        let mut p = HeapPool::new(1, 0);
        let credit = L4Ctl {
            op: op::READ_CREDIT,
            sock: 7,
            req: 1,
            errno: -5,
            flags: ctl_flags::SYNC,
            value: u64::MAX,
            ..L4Ctl::default()
        };
        let h = credit.to_handle(&mut p).unwrap();
        assert!(h.is_inline());
        assert_eq!((h.flags, h.sock, h.data_len), (flags::CTRL, 7, 0));
        assert_eq!(L4Ctl::from_handle(&p, &h).unwrap(), Some(credit));
        p.free(&h);
        assert_eq!(p.stale_frees, 0, "freeing one is nothing");
        // With an address it takes a buffer; as a reply to an inline
        // request, a fresh one.
        let bound = L4Ctl {
            local_port: 53,
            ..credit
        };
        let b = bound.reply_in(&mut p, &h, 17).unwrap();
        assert!(!b.is_inline());
        assert_eq!(b.l4proto, 17);
        assert_eq!(L4Ctl::from_handle(&p, &b).unwrap(), Some(bound));
        assert_eq!(
            bound.reply_in(&mut p, &h, 17),
            Err(BufError::BadIndex),
            "pool empty"
        );
        // A reply that fits frees the request's buffer.
        let c = credit.reply_in(&mut p, &b, 6).unwrap();
        assert!(c.is_inline());
        assert!(p.alloc(10).is_some(), "the buffer came back");
    }

    #[test]
    fn send_meta_round_trips() {
        for addr in [crate::addrs::mapped(0x0a000001), u128::MAX, 0] {
            let m = SendMeta { addr, port: 4242 };
            assert_eq!(SendMeta::from_bytes(&m.to_bytes()), m);
        }
    }
}
