//! ipd's counters: one `u64` per [`Stat`], in a fixed array so that counting
//! is an index and an add, and the shell can copy the whole array into the
//! fabric for `strata stats` without knowing what each slot means.

strata_ipc::layer_stats! { "ipd";
    /// Frames handed to [`input`](crate::IpCore::input).
    RxFrames => "rx_frames",
    /// ARP packets received (parsed successfully).
    RxArp => "rx_arp",
    /// IPv4 packets received (header parsed successfully).
    RxIpv4 => "rx_ipv4",
    /// Datagrams handed up to tcpd/udpd.
    Delivered => "delivered",
    /// Datagrams handed to [`output`](crate::IpCore::output) by an upper layer.
    OutRequests => "out_requests",
    /// Ethernet frames emitted (ARP, IPv4 and every fragment).
    TxFrames => "tx_frames",
    /// Handles whose buffer could not be reached (stale generation or bad
    /// index); the buffer is not ours to free.
    StaleHandle => "stale_handle",
    /// Handles whose data window lies outside their buffer.
    BadWindow => "bad_window",
    /// Work dropped because the pool had no buffer to allocate.
    PoolExhausted => "pool_exhausted",

    /// Frame shorter than an Ethernet header.
    EthTruncated => "eth_truncated",
    /// Frame from an interface ipd does not know.
    UnknownIface => "unknown_iface",
    /// Unicast frame addressed to another host's MAC.
    L2OtherHost => "l2_other_host",
    /// EtherType neither IPv4 nor ARP.
    UnknownEthertype => "unknown_ethertype",

    /// ARP packet too short.
    ArpTruncated => "arp_truncated",
    /// ARP hardware type not Ethernet.
    ArpBadHardwareType => "arp_bad_hardware_type",
    /// ARP protocol type not IPv4.
    ArpBadProtocolType => "arp_bad_protocol_type",
    /// ARP address lengths not 6/4.
    ArpBadAddressLen => "arp_bad_address_len",
    /// ARP operation neither request nor reply.
    ArpBadOp => "arp_bad_op",
    /// ARP requests received.
    ArpRxRequests => "arp_rx_requests",
    /// ARP replies received.
    ArpRxReplies => "arp_rx_replies",
    /// ARP requests sent (broadcast, unicast refresh and gratuitous).
    ArpTxRequests => "arp_tx_requests",
    /// ARP replies sent.
    ArpTxReplies => "arp_tx_replies",
    /// ARP ignored because its sender address is unusable (0.0.0.0 outside
    /// a probe, ours, broadcast/multicast IP, or a group MAC).
    ArpInvalidSender => "arp_invalid_sender",
    /// ARP neither for one of our addresses nor about a known neighbour.
    ArpNotForUs => "arp_not_for_us",
    /// A neighbour could not be added: the table is full of entries in use.
    NeighTableFull => "neigh_table_full",
    /// Neighbour resolutions that failed (no reply after all retries).
    NeighFailed => "neigh_failed",
    /// Packets dropped from a full resolution queue (the oldest goes).
    UnresQueueFull => "unres_queue_full",
    /// Queued packets dropped because their neighbour failed to resolve
    /// (forwarded ones are counted as `fwd_neigh_failed` instead).
    ArpFailed => "arp_failed",

    /// IPv4 packet shorter than its header.
    Ipv4Truncated => "ipv4_truncated",
    /// IPv4 version field not 4.
    Ipv4BadVersion => "ipv4_bad_version",
    /// IPv4 header length (IHL) below 20 bytes.
    Ipv4BadHeaderLen => "ipv4_bad_header_len",
    /// IPv4 total length smaller than the header length.
    Ipv4BadTotalLen => "ipv4_bad_total_len",
    /// IPv4 total length larger than the frame.
    Ipv4TotalLenExceedsFrame => "ipv4_total_len_exceeds_frame",
    /// IPv4 header checksum wrong.
    Ipv4BadChecksum => "ipv4_bad_checksum",
    /// IPv4 options malformed.
    Ipv4BadOptions => "ipv4_bad_options",
    /// Received with a TTL of zero.
    TtlZero => "ttl_zero",
    /// Source address that can never be a sender (0/8, 127/8, multicast,
    /// class E, broadcast, or one of ours).
    MartianSource => "martian_source",
    /// Destination is not one of our addresses or broadcasts, and
    /// forwarding is off.
    NotForUs => "not_for_us",
    /// Broadcast datagram for a protocol other than UDP (or ICMP, counted
    /// separately).
    BroadcastNonUdp => "broadcast_non_udp",
    /// Datagram for a protocol ipd neither handles nor has a layer for.
    UnknownProtocol => "unknown_protocol",
    /// TCP or UDP datagram while that layer is not attached.
    UpperNotAttached => "upper_not_attached",

    /// Fragments received.
    FragReceived => "frag_received",
    /// Datagrams reassembled.
    FragReassembled => "frag_reassembled",
    /// Fragments ignored because their data had already been received.
    FragDuplicate => "frag_duplicate",
    /// Datagrams dropped because two fragments partly overlapped.
    FragOverlap => "frag_overlap",
    /// Partial datagrams dropped when their reassembly timer expired.
    FragTimeout => "frag_timeout",
    /// Fragments dropped because a reassembly memory limit was reached.
    FragMemLimit => "frag_mem_limit",
    /// Fragments dropped because all reassembly slots were busy.
    FragTableFull => "frag_table_full",
    /// Datagrams dropped because they would exceed 65535 bytes.
    FragTooBig => "frag_too_big",
    /// Fragments of zero length, or non-final ones not a multiple of 8.
    FragBadLength => "frag_bad_length",
    /// Datagrams dropped because fragments disagreed on the total length.
    FragInconsistent => "frag_inconsistent",
    /// Datagrams dropped because they arrived in too many disjoint pieces.
    FragTooManyHoles => "frag_too_many_holes",

    /// Datagrams from an upper layer whose IPv4 header is malformed.
    OutMalformed => "out_malformed",
    /// No route to the destination.
    NoRoute => "no_route",
    /// Datagram larger than the MTU with Don't Fragment set, or a
    /// super-segment whose segments are (it cannot be fragmented).
    DfTooBig => "df_too_big",
    /// Datagrams fragmented on output.
    FragOutDatagrams => "frag_out_datagrams",
    /// Fragments created on output.
    FragOutCreated => "frag_out_created",
    /// Datagrams sent back up locally (destination was one of ours).
    Loopback => "loopback",

    /// Datagrams forwarded: routed, TTL decremented and sent on (or queued
    /// for the next hop's resolution), like Linux's `ForwDatagrams`.
    Forwarded => "forwarded",
    /// Not forwarded: it came as a link-layer broadcast or multicast
    /// (RFC 1812 §5.3.4; Linux drops them too).
    FwdL2Broadcast => "fwd_l2_broadcast",
    /// Not forwarded: the destination is multicast (no multicast routing),
    /// 0/8, 127/8 or class E.
    FwdMartianDest => "fwd_martian_dest",
    /// Not forwarded: it carries a source route option (Linux's default
    /// `accept_source_route=0`).
    FwdSourceRoute => "fwd_source_route",
    /// Not forwarded: no route to the destination (ICMP net unreachable
    /// sent).
    FwdNoRoute => "fwd_no_route",
    /// Not forwarded: the TTL would reach 0 (ICMP time exceeded sent).
    FwdTtlExceeded => "fwd_ttl_exceeded",
    /// Not forwarded: larger than the outgoing MTU with Don't Fragment set
    /// (ICMP fragmentation needed sent, with the MTU).
    FwdFragNeeded => "fwd_frag_needed",
    /// Forwarded datagrams dropped because the next hop did not answer ARP
    /// (ICMP host unreachable sent).
    FwdNeighFailed => "fwd_neigh_failed",

    /// ICMP messages received.
    IcmpInMsgs => "icmp_in_msgs",
    /// ICMP message shorter than its header.
    IcmpTruncated => "icmp_truncated",
    /// ICMP checksum wrong.
    IcmpBadChecksum => "icmp_bad_checksum",
    /// ICMP echo requests received.
    IcmpInEchoRequests => "icmp_in_echo_requests",
    /// ICMP echo replies received.
    IcmpInEchoReplies => "icmp_in_echo_replies",
    /// ICMP destination unreachable received.
    IcmpInDestUnreach => "icmp_in_dest_unreach",
    /// ICMP time exceeded received.
    IcmpInTimeExceeded => "icmp_in_time_exceeded",
    /// Other ICMP errors received (parameter problem, source quench,
    /// redirect).
    IcmpInOtherErrors => "icmp_in_other_errors",
    /// ICMP messages of other types received and ignored.
    IcmpInOther => "icmp_in_other",
    /// Echo requests to a broadcast address, ignored (like Linux's
    /// `icmp_echo_ignore_broadcasts`).
    IcmpEchoBroadcastIgnored => "icmp_echo_broadcast_ignored",
    /// ICMP echo replies sent.
    IcmpOutEchoReplies => "icmp_out_echo_replies",
    /// ICMP destination unreachable sent.
    IcmpOutDestUnreach => "icmp_out_dest_unreach",
    /// ICMP time exceeded sent.
    IcmpOutTimeExceeded => "icmp_out_time_exceeded",
    /// Other ICMP errors sent.
    IcmpOutOtherErrors => "icmp_out_other_errors",
    /// ICMP errors not sent because of the rate limit.
    IcmpOutRatelimited => "icmp_out_ratelimited",
    /// ICMP errors not sent because RFC 1122 forbids it (about an ICMP
    /// error, a non-first fragment, or a broadcast/multicast/invalid address).
    IcmpOutSuppressed => "icmp_out_suppressed",
    /// Received ICMP errors (also counted by type above) handed up to the
    /// transport layer whose TCP or UDP datagram they quote.
    IcmpErrDelivered => "icmp_err_delivered",
    /// Datagrams for tcpd or udpd dropped because that layer's ring was
    /// full.
    UpperRingFull => "upper_ring_full",
}
