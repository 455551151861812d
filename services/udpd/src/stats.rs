//! udpd's counters: one `u64` per [`Stat`], in a fixed array so that
//! counting is an index and an add, and the shell can copy the whole array
//! into the fabric for `strata stats` without knowing what each slot means.

strata_ipc::layer_stats! { "udpd";
    // ---- from ipd: datagrams ----
    /// UDP datagrams handed to [`from_ip`](crate::UdpCore::from_ip).
    InDatagrams => "in_datagrams",
    /// Of those, the ones over IPv6.
    InDatagrams6 => "in_datagrams6",
    /// Datagrams (or copies of a broadcast) handed to sockd.
    Delivered => "delivered",
    /// Datagrams received for a broadcast or multicast address.
    InBroadcast => "in_broadcast",
    /// Datagrams for a port no socket matches, answered with ICMP port
    /// unreachable (Linux `NoPorts`).
    NoPort => "no_port",
    /// Broadcast or multicast datagrams no socket matches (dropped
    /// silently).
    NoPortBroadcast => "no_port_broadcast",
    /// Accepted without verification: the checksum field was zero (the
    /// sender computed none; IPv4 only).
    CsumZero => "csum_zero",
    /// Accepted without verification: the handle says the checksum was
    /// verified by the device, or is still to be filled (local loopback).
    CsumTrusted => "csum_trusted",
    /// UDP checksum wrong (Linux `InCsumErrors`).
    UdpBadChecksum => "udp_bad_checksum",
    /// IPv6 datagrams with a zero checksum field, dropped: over IPv6 the
    /// checksum is mandatory (RFC 8200 §8.1).
    Udp6ZeroChecksum => "udp6_zero_checksum",
    /// Fewer bytes than a UDP header after the IPv4 header.
    UdpTruncated => "udp_truncated",
    /// UDP length field below 8.
    UdpBadLength => "udp_bad_length",
    /// UDP length field beyond the IPv4 payload.
    UdpLengthExceedsPacket => "udp_length_exceeds_packet",
    /// The handle's bytes are not a valid IPv4 or IPv6 datagram, or its
    /// transport offset lies outside it (ipd never sends those; counted
    /// rather than trusted).
    IpMalformed => "ip_malformed",
    /// IPv6 datagrams (or quotes in ICMPv6 errors) with an IPv4-mapped
    /// source or destination, dropped: such addresses never travel in
    /// IPv6 headers (RFC 4291 §2.5.5.2), and here they name IPv4 peers.
    Ip6MappedAddress => "ip6_mapped_address",
    /// The datagram's protocol is not the one the handle claims, or the
    /// handle's `l4proto` is neither UDP nor ICMP.
    WrongProtocol => "wrong_protocol",
    /// A fragment reached udpd (ipd reassembles; never expected).
    IpFragment => "ip_fragment",

    // ---- from ipd: ICMP errors ----
    /// ICMP errors handed to [`from_ip`](crate::UdpCore::from_ip).
    IcmpInErrors => "icmp_in_errors",
    /// Of those, the ICMPv6 ones.
    Icmp6InErrors => "icmp6_in_errors",
    /// ICMP errors that are malformed or quote no UDP datagram.
    IcmpMalformed => "icmp_malformed",
    /// ICMP messages of a type that carries nothing for a socket.
    IcmpIgnoredType => "icmp_ignored_type",
    /// ICMP errors quoting a datagram no socket sent.
    IcmpNoSocket => "icmp_no_socket",
    /// ICMP errors for an unconnected socket, ignored (as Linux does
    /// without `IP_RECVERR`).
    IcmpUnconnected => "icmp_unconnected",
    /// Soft ICMP errors (net/host unreachable, time exceeded, fragmentation
    /// needed; over IPv6 no route, address unreachable, beyond scope, time
    /// exceeded) for a connected socket, ignored (as Linux does without
    /// `IP_RECVERR`).
    IcmpSoftIgnored => "icmp_soft_ignored",
    /// ICMP errors reported to sockd as [`op::SOCK_ERROR`](strata_ipc::l4::op::SOCK_ERROR).
    IcmpReported => "icmp_reported",

    // ---- from sockd: datagrams to send ----
    /// Payloads handed to [`from_sock`](crate::UdpCore::from_sock).
    OutRequests => "out_requests",
    /// Datagrams sent to ipd.
    OutDatagrams => "out_datagrams",
    /// Of those, the ones over IPv6.
    OutDatagrams6 => "out_datagrams6",
    /// Payload without a destination: no address given and the socket is
    /// not connected.
    OutNoDestination => "out_no_destination",
    /// Destination port 0.
    OutBadPort => "out_bad_port",
    /// Payload above 65,507 bytes (what fits one IPv4 datagram; IPv6
    /// keeps the same limit).
    OutTooBig => "out_too_big",
    /// Handle too short to hold the send metadata.
    OutMalformed => "out_malformed",
    /// Not enough headroom in front of the payload for the headers.
    OutNoHeadroom => "out_no_headroom",
    /// Sockets bound to an ephemeral port by their first send.
    ImplicitBinds => "implicit_binds",
    /// Sends dropped because no ephemeral port was free.
    OutNoPort => "out_no_port",
    /// Connects refused (ENETUNREACH) and sends dropped: an IPV6_V6ONLY
    /// socket and an IPv4 peer (Linux `__ip6_datagram_connect`,
    /// `udpv6_sendmsg`).
    V6OnlyRefused => "v6only_refused",
    /// Connects refused (EAFNOSUPPORT) and sends dropped: a peer of a
    /// family the socket cannot use (an IPv4 socket and an IPv6 peer, or
    /// a socket bound to an address of the other family).
    WrongFamily => "wrong_family",

    // ---- from sockd: control ----
    /// Control requests received.
    CtlRequests => "ctl_requests",
    /// Control handles too short to hold a message.
    CtlMalformed => "ctl_malformed",
    /// Control requests with an unknown operation (answered EOPNOTSUPP).
    CtlUnknownOp => "ctl_unknown_op",
    /// Successful binds.
    Binds => "binds",
    /// Binds refused: address in use, or no ephemeral port free.
    BindAddrInUse => "bind_addr_in_use",
    /// Binds refused: not one of the stack's addresses.
    BindAddrNotAvail => "bind_addr_not_avail",
    /// Binds refused: the socket was bound already, or an IPV6_V6ONLY
    /// socket named an IPv4 address.
    BindInvalid => "bind_invalid",
    /// Requests refused because the binding table is full.
    TableFull => "table_full",
    /// Successful connects.
    Connects => "connects",
    /// Connects refused because no ephemeral port was free.
    ConnectNoPort => "connect_no_port",
    /// Disconnects (connect to AF_UNSPEC).
    Disconnects => "disconnects",
    /// Closes of bound sockets.
    Closes => "closes",
    /// Bindings restored from the arena at start.
    Restored => "restored",
    /// Arena records not restored (malformed, duplicate, or an address the
    /// stack no longer has).
    RestoreSkipped => "restore_skipped",

    // ---- plumbing ----
    /// Handles whose buffer could not be reached (stale generation or bad
    /// index); the buffer is not ours to free.
    StaleHandle => "stale_handle",
    /// Handles whose data window lies outside their buffer.
    BadWindow => "bad_window",
    /// Work dropped because the pool had no buffer to allocate.
    PoolExhausted => "pool_exhausted",
    /// Datagrams or notifications dropped because the ring to sockd was
    /// full (sockd applies per-socket limits on its side).
    SockRingFull => "sock_ring_full",
    /// Port-unreachable requests dropped because the ring to ipd was full.
    IpRingFull => "ip_ring_full",
}

#[cfg(test)]
mod tests {
    use strata_proto::udp::UdpError;

    #[test]
    fn every_udp_error_has_a_counter_named_after_it() {
        for e in [
            UdpError::Truncated,
            UdpError::BadLength,
            UdpError::LengthExceedsPacket,
            UdpError::BadChecksum,
        ] {
            assert_eq!(crate::udp_stat(e).name(), format!("udp_{}", e.reason()));
        }
    }
}
