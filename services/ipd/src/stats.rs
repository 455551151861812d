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

    /// IPv6 packets received (header parsed successfully).
    RxIpv6 => "rx_ipv6",
    /// IPv6 packet shorter than its 40-byte header.
    Ipv6Truncated => "ipv6_truncated",
    /// IPv6 version field not 6.
    Ipv6BadVersion => "ipv6_bad_version",
    /// IPv6 jumbogram (RFC 2675), not supported.
    Ipv6Jumbogram => "ipv6_jumbogram",
    /// IPv6 payload length larger than the frame.
    Ipv6PayloadLenExceedsFrame => "ipv6_payload_len_exceeds_frame",
    /// IPv6 source that can never be a sender (multicast, or one of ours
    /// from outside).
    Ip6MartianSource => "ip6_martian_source",
    /// IPv6 destination neither one of our addresses nor a group we are
    /// in (no IPv6 forwarding yet).
    Ip6NotForUs => "ip6_not_for_us",
    /// IPv6 packet to one of our addresses still under duplicate address
    /// detection, which takes nothing but neighbour discovery (RFC 4862
    /// §5.4).
    Ip6ToTentative => "ip6_to_tentative",
    /// Extension headers end in No Next Header: nothing to deliver.
    Ip6NoNextHeader => "ip6_no_next_header",
    /// An IPv6 extension header runs past the payload.
    Ip6ExtHeaderTruncated => "ip6_ext_header_truncated",
    /// Malformed IPv6 options.
    Ip6BadOptions => "ip6_bad_options",
    /// Unrecognized IPv6 option whose type says to discard silently.
    Ip6UnknownOption => "ip6_unknown_option",
    /// More IPv6 extension headers than ipd walks.
    Ip6TooManyExtHeaders => "ip6_too_many_ext_headers",
    /// IPv6 packets answered with a parameter problem (or dropped where
    /// one may not be sent).
    Ip6ParamProblem => "ip6_param_problem",
    /// TCP and UDP over IPv6 handed to tcpd or udpd (also counted in
    /// `delivered`).
    Ip6Delivered => "ip6_delivered",
    /// IPv6 packets from a transport with no usable source address for
    /// their destination (no address, or all still tentative).
    Ip6NoSource => "ip6_no_source",
    /// No interface reaches this IPv6 destination.
    Ip6NoRoute => "ip6_no_route",
    /// IPv6 packet larger than the interface's MTU that cannot be cut
    /// into fragments (its unfragmentable part alone is too long).
    Ip6TooBig => "ip6_too_big",
    /// IPv6 packets cut into fragments at their source (RFC 8200 §4.5).
    Frag6OutPackets => "frag6_out_packets",
    /// IPv6 packets sent: ipd's own (neighbour discovery, MLD, echo
    /// replies and errors) and the transports'.
    Ip6OutPackets => "ip6_out_packets",
    /// ICMPv6 message shorter than its header.
    Icmp6Truncated => "icmp6_truncated",
    /// ICMPv6 checksum wrong.
    Icmp6BadChecksum => "icmp6_bad_checksum",
    /// ICMPv6 echo requests received.
    Icmp6InEchoRequests => "icmp6_in_echo_requests",
    /// ICMPv6 echo replies sent.
    Icmp6OutEchoReplies => "icmp6_out_echo_replies",
    /// ICMPv6 errors received.
    Icmp6InErrors => "icmp6_in_errors",
    /// ICMPv6 errors sent.
    Icmp6OutErrors => "icmp6_out_errors",
    /// ICMPv6 errors not sent because of the rate limit.
    Icmp6OutRatelimited => "icmp6_out_ratelimited",
    /// ICMPv6 errors not sent because RFC 4443 §2.4 (e) forbids it.
    Icmp6OutSuppressed => "icmp6_out_suppressed",
    /// ICMPv6 messages of other types (router discovery, redirects,
    /// multicast listener discovery, echo replies) received and ignored.
    Icmp6InOther => "icmp6_in_other",
    /// Neighbour solicitations received.
    NdRxSolicits => "nd_rx_solicits",
    /// Neighbour advertisements received.
    NdRxAdverts => "nd_rx_adverts",
    /// Neighbour solicitations sent (resolution, probes and duplicate
    /// address detection).
    NdTxSolicits => "nd_tx_solicits",
    /// Neighbour advertisements sent.
    NdTxAdverts => "nd_tx_adverts",
    /// Neighbour discovery messages about nobody we know or ask about.
    NdNotForUs => "nd_not_for_us",
    /// Neighbour discovery message with an unusable source link-layer
    /// address or source address.
    NdInvalidSender => "nd_invalid_sender",
    /// Another node defends one of our addresses: an advertisement for an
    /// address we use, from someone else.
    NdAddrConflict => "nd_addr_conflict",
    /// Own addresses found duplicate by duplicate address detection and
    /// not used (RFC 4862 §5.4.5).
    DadDuplicate => "dad_duplicate",
    /// MLDv2 reports sent (RFC 3810), announcing the groups ipd listens to.
    MldTxReports => "mld_tx_reports",
    /// Router solicitations sent.
    NdTxRouterSolicits => "nd_tx_router_solicits",
    /// Router advertisements received (valid ones).
    NdRxRouterAdverts => "nd_rx_router_adverts",
    /// Router advertisements ignored because ipd is a router itself.
    NdRaIgnored => "nd_ra_ignored",
    /// A router, prefix or address a router advertised was not taken: its
    /// list is full.
    NdListFull => "nd_list_full",
    /// Addresses made from advertised prefixes (SLAAC).
    SlaacAddresses => "slaac_addresses",
    /// Path MTUs learnt from Packet Too Big about packets of ours.
    Pmtu6Learnt => "pmtu6_learnt",
    /// Multicast listener queries received (valid ones, either version).
    MldRxQueries => "mld_rx_queries",
    /// MLD query of the wrong ICMPv6 type for its parser.
    MldBadType => "mld_bad_type",
    /// MLD query too short for its version or its sources.
    MldTruncated => "mld_truncated",
    /// MLD query not from a link-local address.
    MldSourceNotLinkLocal => "mld_source_not_link_local",
    /// MLD query with a hop limit other than 1.
    MldBadHopLimit => "mld_bad_hop_limit",
    /// MLD query about an address that is not a group.
    MldBadGroup => "mld_bad_group",
    /// ND message of the wrong ICMPv6 type for its parser.
    NdpBadType => "ndp_bad_type",
    /// ND message shorter than its fixed part.
    NdpTruncated => "ndp_truncated",
    /// ND message with an IPv6 hop limit other than 255.
    NdpBadHopLimit => "ndp_bad_hop_limit",
    /// ND message with a code other than 0.
    NdpBadCode => "ndp_bad_code",
    /// ND option running past the message.
    NdpOptionTruncated => "ndp_option_truncated",
    /// ND option of length 0.
    NdpZeroOptionLength => "ndp_zero_option_length",
    /// ND link-layer address option of the wrong length.
    NdpBadLinkAddrLen => "ndp_bad_link_addr_len",
    /// ND prefix or MTU option of the wrong length.
    NdpBadOptionLength => "ndp_bad_option_length",
    /// Router advertisement or redirect not from a link-local source.
    NdpSourceNotLinkLocal => "ndp_source_not_link_local",
    /// Solicitation from :: carrying a source link-layer address.
    NdpLinkAddrFromUnspecified => "ndp_link_addr_from_unspecified",
    /// Solicitation from :: not sent to a solicited-node address.
    NdpDadNotToSolicitedNode => "ndp_dad_not_to_solicited_node",
    /// Solicitation or advertisement for a multicast target.
    NdpMulticastTarget => "ndp_multicast_target",
    /// Advertisement to a multicast address with the S flag.
    NdpSolicitedToMulticast => "ndp_solicited_to_multicast",
    /// Redirect for a multicast destination.
    NdpMulticastDestination => "ndp_multicast_destination",
    /// Redirect whose target is neither link-local nor its destination.
    NdpBadRedirectTarget => "ndp_bad_redirect_target",
}
