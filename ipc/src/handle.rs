//! The packet handle: the one-cache-line descriptor that moves between layers.

/// Checksum state of a packet, as a device or an earlier layer left it.
pub mod csum {
    /// Nothing is known: every checksum must be verified in software.
    pub const NONE: u8 = 0;
    /// The device (or a layer) verified the L3/L4 checksums.
    pub const VERIFIED: u8 = 1;
    /// The L4 checksum still has to be filled in on the way out (offload).
    pub const PARTIAL: u8 = 2;
}

/// Values of [`Handle::gso_type`]: what kind of super-packet the handle
/// holds. A super-packet is one datagram carrying the payload of several
/// segments, `gso_size` bytes each (the last one the rest); no layer
/// fragments it, and the driver cuts it into segments in software where
/// its device cannot (see `strata_proto::offload`).
pub mod gso {
    /// An ordinary packet.
    pub const NONE: u8 = 0;
    /// TCP over IPv4.
    pub const TCPV4: u8 = 1;

    /// The longest IPv4 datagram `ip` (the datagram `h` holds, from its
    /// IPv4 header) puts on the wire: itself, or for a TCP super-segment,
    /// its headers and one segment, since the driver (or its device) cuts
    /// it into those. This is what the MTU bounds; a super-segment is never
    /// fragmented.
    pub fn wire_len(h: &super::Handle, ip: &[u8]) -> usize {
        if h.gso_type != TCPV4 || h.gso_size == 0 {
            return ip.len();
        }
        let hl = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
        let thl = usize::from(ip.get(hl + 12).map_or(0, |b| b >> 4)) * 4;
        ip.len().min(hl + thl + usize::from(h.gso_size))
    }

    /// The most payload one TCP super-segment of `mss`-byte segments
    /// carries: whole segments within IPv4's 16-bit total length, less the
    /// largest IPv4 and TCP headers (at least one segment).
    pub fn tcp_max_payload(mss: u32) -> u32 {
        let most = 65535 - 60 - 60;
        (most - most % mss.max(1)).max(mss)
    }
}

/// Bits of [`Handle::flags`].
pub mod flags {
    /// The buffer holds a control message ([`crate::l4::L4Ctl`]) rather
    /// than a packet (sockd ↔ transport rings).
    pub const CTRL: u8 = 1;
    /// transport → ipd: do not send this datagram; answer it with ICMP
    /// port unreachable (the data window is the received IPv4 datagram).
    pub const ICMP_PORT_UNREACH: u8 = 2;
    /// ipd → filterd: a datagram ipd forwarded rather than originated
    /// (`iif` is where it came in, `oif` where it goes). filterd ran
    /// FORWARD on it on the way in; on the way out it gets POSTROUTING
    /// only, not OUTPUT.
    pub const FORWARDED: u8 = 4;
}

/// Interface index meaning "none / not yet decided".
pub const NO_IFACE: u8 = 0xff;

/// `Handle::buf` of a handle that names no buffer: a control message
/// small enough to ride in the handle's own fields
/// ([`crate::l4::L4Ctl::inline`]). The rings carry it like any other;
/// taking or freeing it touches no buffer, and it needs none to be sent,
/// so the messages that let a full pool drain (READ_CREDIT, SEND_CREDIT)
/// never wait for the pool.
pub const INLINE: u32 = u32::MAX;

/// A packet descriptor: plain data, exactly one cache line, copied into ring
/// slots. It names a pool buffer by index and generation; the payload bytes
/// never move with it.
///
/// `data_off`/`data_len` delimit the valid bytes inside the buffer; the space
/// before `data_off` is headroom into which lower layers prepend headers.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Handle {
    /// Global buffer index in the pool (small buffers first, then large).
    pub buf: u32,
    /// Generation of the buffer when this handle was made; a mismatch with
    /// the pool's header marks the handle stale.
    pub gen: u32,
    /// Offset of the first valid byte in the buffer.
    pub data_off: u32,
    /// Number of valid bytes.
    pub data_len: u32,
    /// Offset of the L2 header from `data_off` (0 when data starts at L2).
    pub l2_off: u16,
    /// Offset of the L3 header from `data_off`.
    pub l3_off: u16,
    /// Offset of the L4 header from `data_off`.
    pub l4_off: u16,
    /// Input interface index, or [`NO_IFACE`].
    pub iif: u8,
    /// Output interface index, or [`NO_IFACE`].
    pub oif: u8,
    /// EtherType of the L3 payload (0x0800 IPv4, 0x0806 ARP).
    pub ethertype: u16,
    /// IP protocol number of the L4 payload.
    pub l4proto: u8,
    /// Checksum state, one of [`csum`].
    pub csum: u8,
    /// Payload bytes per segment of a super-packet (0 when not one).
    pub gso_size: u16,
    /// Kind of super-packet, one of [`gso`].
    pub gso_type: u8,
    /// Free-form flags for the layer that owns the handle.
    pub flags: u8,
    /// Connection-tracking entry id (0: untracked).
    pub ct_id: u32,
    /// Packet mark (netfilter MARK).
    pub mark: u32,
    /// IPv4 next hop chosen by routing, in host byte order (0: none).
    pub nexthop: u32,
    /// Flow hash, for queue selection.
    pub flow_hash: u32,
    /// Receive or creation timestamp in nanoseconds (monotonic clock).
    pub tstamp: u64,
    /// Socket id (sockd's) on the hops between sockd and a transport
    /// layer; 0 elsewhere.
    pub sock: u32,
    /// Stream offset (wrapping) of the first payload byte on the hops
    /// between sockd and tcpd, so that either side can tell data it
    /// already has, or a gap, after the other restarted; 0 elsewhere.
    pub stream_off: u32,
}

const _: () = assert!(core::mem::size_of::<Handle>() == 64);

impl Handle {
    /// Whether this handle names no buffer ([`INLINE`]).
    pub fn is_inline(&self) -> bool {
        self.buf == INLINE
    }

    /// A fresh handle for buffer `buf` of generation `gen`, with `headroom`
    /// bytes left in front of an empty data window.
    pub fn new(buf: u32, gen: u32, headroom: u32) -> Self {
        Handle {
            buf,
            gen,
            data_off: headroom,
            data_len: 0,
            iif: NO_IFACE,
            oif: NO_IFACE,
            ..Default::default()
        }
    }

    /// Moves the start of the data window `n` bytes earlier (to prepend a
    /// header). Returns false, changing nothing, when the headroom is short.
    pub fn push_front(&mut self, n: u32) -> bool {
        if n > self.data_off {
            return false;
        }
        self.data_off -= n;
        self.data_len += n;
        true
    }

    /// Moves the start of the data window `n` bytes later (to strip a
    /// header). Returns false, changing nothing, when the data is shorter.
    pub fn pull_front(&mut self, n: u32) -> bool {
        if n > self.data_len {
            return false;
        }
        self.data_off += n;
        self.data_len -= n;
        true
    }
}
