//! tcpd's counters: one `u64` per [`Stat`], in a fixed array so that
//! counting is an index and an add, and the shell can copy the whole array
//! into the fabric for `strata stats` without knowing what each slot means.

strata_ipc::layer_stats! { "tcpd";
    // ---- segments from ipd ----
    /// TCP segments handed to [`from_ip`](crate::TcpCore::from_ip), of
    /// either family.
    InSegs => "in_segs",
    /// Of those, segments that came over IPv6.
    InSegs6 => "in_segs6",
    /// Segments with a wrong TCP checksum (Linux `InCsumErrors`).
    BadChecksum => "bad_checksum",
    /// Segments whose checksum the device verified or left partial (the
    /// kernel sent them): not checked in software.
    CsumTrusted => "csum_trusted",
    /// Segments shorter than their TCP header, or with a data offset below 5.
    TcpTruncated => "tcp_truncated",
    /// Segments with malformed TCP options.
    TcpBadOptions => "tcp_bad_options",
    /// Handles whose bytes are not a valid IPv4 datagram or IPv6 packet
    /// (or whose ethertype names the other family, or whose transport
    /// offset lies outside the packet).
    IpMalformed => "ip_malformed",
    /// Datagrams whose protocol is not the one the handle claims.
    WrongProtocol => "wrong_protocol",
    /// Fragments (ipd reassembles; never expected).
    IpFragment => "ip_fragment",
    /// Segments from or to a broadcast, multicast or zero address, or to
    /// an address that is not ours, or with a zero port; IPv6 packets
    /// with an IPv4-mapped address (RFC 4291 §2.5.5.2).
    BadAddress => "bad_address",
    /// Segments with no connection or listener, answered with a reset
    /// (Linux `OutRsts` share, RFC 9293 §3.10.7.1).
    NoConnReset => "no_conn_reset",
    /// Resets with no connection, dropped silently.
    NoConnDropped => "no_conn_dropped",
    /// Segments dropped for an illegal flag combination (SYN with FIN or
    /// RST, no flags at all in LISTEN...).
    BadFlags => "bad_flags",

    // ---- listeners ----
    /// SYNs to a listener.
    ListenSyns => "listen_syns",
    /// SYNs answered with a SYN cookie because the SYN queue was full.
    SynCookiesSent => "syn_cookies_sent",
    /// Connections established from a valid SYN cookie.
    SynCookiesOk => "syn_cookies_ok",
    /// ACKs to a listener, while it sends cookies, whose cookie did not
    /// check: dropped, not reset (a cookie connection's later segment
    /// whose first was lost; the peer's retransmission of that one makes
    /// the connection).
    SynCookiesBad => "syn_cookies_bad",
    /// SYNs dropped because the SYN queue was full and cookies are off,
    /// or the accept queue was full (Linux `ListenDrops`).
    ListenDrops => "listen_drops",
    /// Handshake completions dropped because the accept queue was full
    /// (Linux `ListenOverflows`).
    ListenOverflows => "listen_overflows",
    /// SYN-RECEIVED connections given up after their SYN-ACK retries.
    SynAckTimeouts => "synack_timeouts",

    // ---- validation (RFC 9293 §3.10.7.4, RFC 5961, RFC 7323) ----
    /// Segments outside the receive window (answered with an ACK).
    OutOfWindow => "out_of_window",
    /// Segments failing the PAWS check (RFC 7323 §5).
    PawsRejected => "paws_rejected",
    /// Resets accepted (exact sequence number).
    RstAccepted => "rst_accepted",
    /// In-window resets answered with a challenge ACK (RFC 5961 §3).
    RstChallenged => "rst_challenged",
    /// Resets outside the window, dropped.
    RstIgnored => "rst_ignored",
    /// SYNs on a synchronized connection answered with a challenge ACK
    /// (RFC 5961 §4).
    SynChallenged => "syn_challenged",
    /// ACKs acknowledging data never sent or too old (RFC 5961 §5),
    /// answered with an ACK and dropped.
    AckInvalid => "ack_invalid",
    /// Challenge ACKs not sent because of the rate limit.
    ChallengeAckLimited => "challenge_ack_limited",
    /// TIME-WAIT connections replaced by a new SYN (RFC 6191).
    TimeWaitReused => "time_wait_reused",

    // ---- data received ----
    /// Payload bytes accepted in order.
    InDataBytes => "in_data_bytes",
    /// Segments queued out of order.
    OooSegs => "ooo_segs",
    /// Out-of-order segments not kept: the connection's share of buffers
    /// for them was used up, or the pool was short.
    OooDropped => "ooo_dropped",
    /// Out-of-order segments given up to make room for one nearer the
    /// stream's next byte (Linux `OfoPruned`).
    OooPruned => "ooo_pruned",
    /// Segments whose data was entirely a duplicate.
    DupData => "dup_data",
    /// Segments whose data (or part of it) lay beyond the receive window.
    BeyondWindow => "beyond_window",
    /// Payload bytes handed to sockd.
    DeliveredBytes => "delivered_bytes",
    /// Receive-buffer auto-tuning steps (the window's cap grew).
    RcvbufGrown => "rcvbuf_grown",

    // ---- sending ----
    /// Segments sent to ipd, of either family.
    OutSegs => "out_segs",
    /// Of those, segments sent over IPv6.
    OutSegs6 => "out_segs6",
    /// Super-segments sent (each counted once in `out_segs`).
    OutSuperSegs => "out_super_segs",
    /// Payload bytes sent for the first time.
    OutDataBytes => "out_data_bytes",
    /// Resets sent.
    OutRsts => "out_rsts",
    /// Segments retransmitted (any reason).
    RetransSegs => "retrans_segs",
    /// Retransmission timeouts.
    RtoExpired => "rto_expired",
    /// Retransmissions found lost (data sent after them was SACKed) and
    /// sent again without waiting for a timeout.
    LostRetrans => "lost_retrans",
    /// Tail loss probes sent (RFC 8985 §7).
    TlpProbes => "tlp_probes",
    /// Fast retransmits (entries into loss recovery).
    FastRetrans => "fast_retrans",
    /// Loss recoveries driven by the SACK scoreboard (RFC 6675).
    SackRecoveries => "sack_recoveries",
    /// Partial ACKs during NewReno recovery (RFC 6582).
    PartialAcks => "partial_acks",
    /// Duplicate ACKs received.
    DupAcks => "dup_acks",
    /// Delayed ACKs sent when their timer fired.
    DelayedAcks => "delayed_acks",
    /// Zero-window probes sent.
    WindowProbes => "window_probes",
    /// Keep-alive probes sent.
    KeepaliveProbes => "keepalive_probes",
    /// Payload bytes copied into a fresh buffer for sending (segments that
    /// are not exactly one of sockd's buffers, and retransmissions).
    TxCopyBytes => "tx_copy_bytes",

    // ---- connections ----
    /// Active opens (CONNECT).
    ActiveOpens => "active_opens",
    /// Of those, to IPv6 peers.
    ActiveOpens6 => "active_opens6",
    /// Passive opens established (Linux `PassiveOpens`).
    PassiveOpens => "passive_opens",
    /// Of those, from IPv6 peers.
    PassiveOpens6 => "passive_opens6",
    /// Connections reset by the peer.
    ResetByPeer => "reset_by_peer",
    /// Connects refused by a reset.
    ConnRefused => "conn_refused",
    /// Connections given up after retransmission, SYN or keep-alive
    /// timeouts (`ETIMEDOUT`).
    ConnTimeouts => "conn_timeouts",
    /// Connections aborted by sockd (ABORT, or CLOSE with unread data).
    Aborted => "aborted",
    /// Connections that ended and were forgotten (any way).
    ConnClosed => "conn_closed",
    /// TIME-WAIT periods that ran out.
    TimeWaitExpired => "time_wait_expired",
    /// Requests or SYNs refused because the connection table was full.
    ConnLimit => "conn_limit",
    /// Segments or payloads refused because the queue slab or the memory
    /// limit was exhausted.
    MemLimit => "mem_limit",
    /// Connections that reached ESTABLISHED (either way of opening).
    Established => "established",

    // ---- ICMP ----
    /// ICMP and ICMPv6 errors handed to
    /// [`from_ip`](crate::TcpCore::from_ip).
    IcmpIn => "icmp_in",
    /// Of those, ICMPv6 errors.
    Icmp6In => "icmp6_in",
    /// ICMP errors malformed, of an ignored type, or quoting no segment
    /// of a connection (or a sequence number outside the window).
    IcmpIgnored => "icmp_ignored",
    /// ICMP errors that failed a connection attempt.
    IcmpReported => "icmp_reported",
    /// Fragmentation-needed errors (IPv4) and packet-too-big errors
    /// (IPv6) that lowered a connection's MSS.
    IcmpPmtu => "icmp_pmtu",

    // ---- from sockd ----
    /// Control requests received.
    CtlRequests => "ctl_requests",
    /// Control handles too short to hold a message.
    CtlMalformed => "ctl_malformed",
    /// Control requests with an unknown operation (answered EOPNOTSUPP).
    CtlUnknownOp => "ctl_unknown_op",
    /// Requests or payloads for a socket tcpd does not know.
    UnknownSock => "unknown_sock",
    /// Successful binds.
    Binds => "binds",
    /// Binds or connects refused with `EADDRINUSE` (or no ephemeral port).
    AddrInUse => "addr_in_use",
    /// Binds refused: not one of the stack's addresses.
    AddrNotAvail => "addr_not_avail",
    /// Requests refused as invalid in the socket's state (`EINVAL`,
    /// `EISCONN`, `EALREADY`...).
    BadState => "bad_state",
    /// Payload handles from sockd.
    SockDataIn => "sock_data_in",
    /// Payload bytes from sockd.
    SockDataBytes => "sock_data_bytes",
    /// Payload from sockd that tcpd already had (sent again after a
    /// restart), skipped.
    SockDataRepeat => "sock_data_repeat",
    /// Payload from sockd beyond a gap (what came before was lost in a
    /// restart), dropped until sockd sends again.
    SockDataGap => "sock_data_gap",
    /// Payloads dropped: the connection cannot send any more (shut down,
    /// closed or not connected).
    SockDataDropped => "sock_data_dropped",

    // ---- plumbing ----
    /// Handles whose buffer could not be reached (stale generation or bad
    /// index); the buffer is not ours to free.
    StaleHandle => "stale_handle",
    /// Handles whose data window lies outside their buffer.
    BadWindow => "bad_window",
    /// Work dropped or delayed because the pool had no buffer to allocate.
    PoolExhausted => "pool_exhausted",
    /// Segments dropped because the ring to ipd was full.
    IpRingFull => "ip_ring_full",
    /// Connections restored from the arena at start.
    Restored => "restored",
    /// Connections reset at start because their block was mid-update or
    /// inconsistent.
    RestoreReset => "restore_reset",
}
