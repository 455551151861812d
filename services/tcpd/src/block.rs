//! The state tcpd keeps across a restart (docs/DESIGN.md, "Fabric" and
//! "Recovery"): a fixed array of connection blocks and a fixed slab of
//! queue entries, both plain `#[repr(C)]` integers, linked by index, with
//! no pointers, so that the shell can place them in tcpd's fabric arena
//! and a restarted tcpd finds every connection, its queues and its timer
//! deadlines where they were.
//!
//! The core reads and writes these through the `&mut [T]` slices of a
//! [`Storage`]; tests pass vectors. Lookup tables, the timer heap and the
//! free lists are rebuilt from them by [`TcpCore::restore`](crate::TcpCore::restore).
//!
//! Crash consistency: tcpd may be killed at any instruction, and the
//! restarted one must find every connection as it was before or as it was
//! after the event that was running, never in between (so none is reset).
//! An event works on a copy of its block, so the block in the arena keeps
//! the state before the event until the copy is written back. What leaks
//! out earlier is bounded and journaled in the [`Journal`]:
//!
//! - A queue entry that existed before the event is changed in place only
//!   after its old fields are saved as an [`UndoRec`] (once per event);
//!   entries taken for the event are new and unlinked as far as the old
//!   block knows.
//! - Nothing is freed during the event: entries unlinked by it stay as
//!   they were (still allocated, their buffer still referenced) until the
//!   block is written back, and are released with their buffers after.
//! - The write-back is itself journaled: the new block goes into the
//!   journal first, then the journal says [`journal::COMMIT`], then the
//!   block is copied, then the journal goes back to [`journal::IDLE`].
//!
//! So restore ([`TcpCore::restore`](crate::TcpCore::restore)) finds the
//! journal ACTIVE (undo the saved entries: the state before), COMMIT (copy
//! the new block again: the state after) or IDLE; entries then linked
//! from no block are the interrupted event's new or unlinked ones, freed
//! with their buffers (each entry is cleared before its buffer is freed,
//! so a restore killed in turn never frees one twice). Restore itself
//! only finishes what the journal says and frees; killed at any point, the
//! next one does the rest.
//!
//! References: every allocated entry holds one pool reference to its
//! buffer; any other reference a dead tcpd held (segments and deliveries
//! not yet pushed, a buffer between two steps) is named by no entry and
//! is for the fabric's reclaim, not for restore.
//!
//! Events run one at a time. An event may run others inside it (a
//! listener closing or re-announcing its children) only before it changed
//! any entry: each inner event commits on its own, so a kill between them
//! leaves each block as before or after its own event. Outside the
//! journal the core writes only values restore recomputes or can lose (a
//! listener's child counts and overflow time) and the fresh block
//! `alloc_block` takes for an event, which restore frees if the event
//! never committed (a CLOSED block without a socket).

use strata_ipc::arena::Pod;
use strata_ipc::Handle;

/// No index (end of a list, no parent, no cursor).
pub const NIL: u32 = u32::MAX;

/// The stored encoding of [`State`] in [`ConnBlock::state`] (plain
/// integers, for the arena): read through [`ConnBlock::slot`] and
/// [`ConnBlock::state`], written only by [`ConnBlock::set_state`].
pub(crate) mod st {
    /// The block is free.
    pub const FREE: u32 = 0;
    /// A socket that is bound (or about to connect) but has no connection.
    pub const CLOSED: u32 = 1;
    /// Waiting for SYNs.
    pub const LISTEN: u32 = 2;
    /// SYN sent, waiting for the SYN-ACK.
    pub const SYN_SENT: u32 = 3;
    /// SYN received and answered.
    pub const SYN_RECEIVED: u32 = 4;
    /// Open both ways.
    pub const ESTABLISHED: u32 = 5;
    /// We sent FIN; the peer has not acknowledged it or sent its own.
    pub const FIN_WAIT_1: u32 = 6;
    /// Our FIN is acknowledged; waiting for the peer's.
    pub const FIN_WAIT_2: u32 = 7;
    /// The peer sent FIN; we may still send.
    pub const CLOSE_WAIT: u32 = 8;
    /// Both sent FIN at once; waiting for the ACK of ours.
    pub const CLOSING: u32 = 9;
    /// We sent FIN after the peer's; waiting for its ACK.
    pub const LAST_ACK: u32 = 10;
    /// Both FINs acknowledged; waiting 2·MSL.
    pub const TIME_WAIT: u32 = 11;
}

/// A connection state (RFC 9293 §3.3.2), plus CLOSED for a socket that
/// has no connection (yet, or any more).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Bound or fresh socket without a connection.
    Closed,
    /// LISTEN.
    Listen,
    /// SYN-SENT.
    SynSent,
    /// SYN-RECEIVED.
    SynReceived,
    /// ESTABLISHED.
    Established,
    /// FIN-WAIT-1.
    FinWait1,
    /// FIN-WAIT-2.
    FinWait2,
    /// CLOSE-WAIT.
    CloseWait,
    /// CLOSING.
    Closing,
    /// LAST-ACK.
    LastAck,
    /// TIME-WAIT.
    TimeWait,
}

impl State {
    /// The state of a stored value (`None` for a free block or garbage).
    pub fn from_raw(v: u32) -> Option<State> {
        Some(match v {
            st::CLOSED => State::Closed,
            st::LISTEN => State::Listen,
            st::SYN_SENT => State::SynSent,
            st::SYN_RECEIVED => State::SynReceived,
            st::ESTABLISHED => State::Established,
            st::FIN_WAIT_1 => State::FinWait1,
            st::FIN_WAIT_2 => State::FinWait2,
            st::CLOSE_WAIT => State::CloseWait,
            st::CLOSING => State::Closing,
            st::LAST_ACK => State::LastAck,
            st::TIME_WAIT => State::TimeWait,
            _ => return None,
        })
    }

    /// The stored value of the state (never [`st::FREE`]).
    fn raw(self) -> u32 {
        match self {
            State::Closed => st::CLOSED,
            State::Listen => st::LISTEN,
            State::SynSent => st::SYN_SENT,
            State::SynReceived => st::SYN_RECEIVED,
            State::Established => st::ESTABLISHED,
            State::FinWait1 => st::FIN_WAIT_1,
            State::FinWait2 => st::FIN_WAIT_2,
            State::CloseWait => st::CLOSE_WAIT,
            State::Closing => st::CLOSING,
            State::LastAck => st::LAST_ACK,
            State::TimeWait => st::TIME_WAIT,
        }
    }

    /// Whether the connection is synchronized: both SYNs sent and
    /// acknowledged (RFC 9293 §3.5.2, the third group of reset
    /// generation; §3.10.7.4 processes segments alike from here on).
    pub fn is_synchronized(self) -> bool {
        match self {
            State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck
            | State::TimeWait => true,
            // §3.5.2: the non-synchronized states (and a socket with no
            // connection).
            State::Closed | State::Listen | State::SynSent | State::SynReceived => false,
        }
    }

    /// Whether the peer's SYN is in: RCV.NXT is defined, and what we send
    /// carries ACK (RFC 9293 §3.10.7.4; the reset of §3.10.5 ABORT).
    pub fn has_peer_syn(self) -> bool {
        match self {
            // §3.10.7.2: a SYN to LISTEN makes a child in SYN-RECEIVED;
            // §3.10.7.3: so does a bare SYN in SYN-SENT (simultaneous
            // open).
            State::SynReceived => true,
            State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck
            | State::TimeWait => true,
            // Nothing received from a peer yet.
            State::Closed | State::Listen | State::SynSent => false,
        }
    }

    /// Whether the block is a connection, with a peer: SYN-SENT onward
    /// (RFC 9293 §3.3.2; CLOSED and LISTEN have no remote end).
    pub fn has_peer(self) -> bool {
        match self {
            State::Closed | State::Listen => false,
            State::SynSent
            | State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
            | State::Closing
            | State::LastAck
            | State::TimeWait => true,
        }
    }

    /// Whether payload from the application is taken (RFC 9293 §3.10.2
    /// SEND): queued until the handshake ends, or sent.
    pub fn accepts_send(self) -> bool {
        match self {
            // §3.10.2: "queue the data for transmission after entering
            // ESTABLISHED".
            State::SynSent | State::SynReceived => true,
            // §3.10.2: "segmentize the buffer and send it".
            State::Established | State::CloseWait => true,
            // §3.10.2: "connection closing" (our FIN is out), or no
            // connection at all.
            State::FinWait1
            | State::FinWait2
            | State::Closing
            | State::LastAck
            | State::TimeWait
            | State::Closed
            | State::Listen => false,
        }
    }

    /// Whether new data may still go out: synchronized, and our side not
    /// closed (RFC 9293 §3.10.2: ESTABLISHED and CLOSE-WAIT send).
    pub fn sends_new_data(self) -> bool {
        match self {
            State::Established | State::CloseWait => true,
            // §3.10.4 CLOSE: our FIN is queued or sent, nothing follows it.
            State::FinWait1
            | State::FinWait2
            | State::Closing
            | State::LastAck
            | State::TimeWait => false,
            // Not synchronized: data waits for the handshake.
            State::Closed | State::Listen | State::SynSent | State::SynReceived => false,
        }
    }

    /// Whether our FIN is sent (or due after the data) and not yet
    /// acknowledged (RFC 9293 §3.10.4 CLOSE; §3.10.7.4, fifth step).
    pub fn fin_unacked(self) -> bool {
        match self {
            State::FinWait1 | State::Closing | State::LastAck => true,
            // §3.10.7.4: FIN-WAIT-2 and TIME-WAIT follow the ACK of our
            // FIN.
            State::FinWait2 | State::TimeWait => false,
            // Our side is open (a FIN queued in SYN-SENT or SYN-RECEIVED
            // waits for ESTABLISHED, §3.10.4).
            State::Closed
            | State::Listen
            | State::SynSent
            | State::SynReceived
            | State::Established
            | State::CloseWait => false,
        }
    }

    /// Whether keep-alive probes run (RFC 1122 §4.2.3.6) when the option
    /// is on: in the states where the peer may go silent with nothing of
    /// ours in flight to notice it (as Linux's `tcp_keepalive_timer`).
    pub fn keeps_alive(self) -> bool {
        match self {
            State::Established | State::CloseWait | State::FinWait2 => true,
            // The handshake, FIN and TIME-WAIT timers watch these; CLOSED
            // and LISTEN have no peer.
            State::SynSent
            | State::SynReceived
            | State::FinWait1
            | State::Closing
            | State::LastAck
            | State::TimeWait
            | State::Closed
            | State::Listen => false,
        }
    }

    /// The name `ss` uses (`ESTAB`, `SYN-SENT`...).
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Listen => "LISTEN",
            State::SynSent => "SYN-SENT",
            State::SynReceived => "SYN-RECV",
            State::Established => "ESTAB",
            State::FinWait1 => "FIN-WAIT-1",
            State::FinWait2 => "FIN-WAIT-2",
            State::CloseWait => "CLOSE-WAIT",
            State::Closing => "CLOSING",
            State::LastAck => "LAST-ACK",
            State::TimeWait => "TIME-WAIT",
        }
    }
}

/// Bits of [`ConnBlock::flags`].
pub mod cf {
    /// SO_REUSEADDR.
    pub const REUSEADDR: u32 = 1;
    /// The block holds a local port.
    pub const BOUND: u32 = 1 << 1;
    /// TCP_NODELAY: Nagle off.
    pub const NODELAY: u32 = 1 << 2;
    /// SO_KEEPALIVE.
    pub const KEEPALIVE: u32 = 1 << 3;
    /// SACK negotiated.
    pub const SACK_OK: u32 = 1 << 4;
    /// Timestamps negotiated.
    pub const TS_OK: u32 = 1 << 5;
    /// Window scaling negotiated.
    pub const WS_OK: u32 = 1 << 6;
    /// Opened passively (a listener's child).
    pub const PASSIVE: u32 = 1 << 7;
    /// In the listener's accept queue: ACCEPTABLE is (to be) sent, no
    /// ATTACH yet.
    pub const IN_ACCEPTQ: u32 = 1 << 8;
    /// Our FIN follows the queued data (write shut down).
    pub const FIN_QUEUED: u32 = 1 << 9;
    /// Read side shut down.
    pub const RD_SHUT: u32 = 1 << 10;
    /// The peer's FIN arrived in order (`rcv_nxt` counts it).
    pub const FIN_RCVD: u32 = 1 << 11;
    /// EOF was sent to sockd.
    pub const EOF_SENT: u32 = 1 << 12;
    /// An ACK must go out now.
    pub const ACK_NOW: u32 = 1 << 13;
    /// The connection is over: free the block once its notifications are
    /// out.
    pub const DEAD: u32 = 1 << 14;
    /// Established from a SYN cookie.
    pub const COOKIE: u32 = 1 << 15;
    /// Data was retransmitted since the last RTT sample (Karn's rule).
    pub const RTX_DONE: u32 = 1 << 16;
    /// The port was chosen by an explicit bind.
    pub const PORT_LOCK: u32 = 1 << 17;
    /// The address was chosen by an explicit bind.
    pub const ADDR_LOCK: u32 = 1 << 18;
    /// The retransmission timer runs as the persist timer (zero window).
    pub const PERSIST: u32 = 1 << 19;
    /// The connection reached ESTABLISHED at some point.
    pub const WAS_ESTABLISHED: u32 = 1 << 20;
    /// The socket's CLOSE was received (no socket any more).
    pub const ORPHAN: u32 = 1 << 21;
    /// The peer's SYN carried a window scale (SYN-ACK must echo it).
    pub const PEER_WS: u32 = 1 << 22;
    /// Resending after a timeout until `snd_una` passes `recover`.
    pub const LOSS: u32 = 1 << 23;
    /// The retransmission timer runs early, as the reordering timer: the
    /// head is declared lost when it fires (RFC 8985 §6.2 in spirit).
    pub const REO_TIMER: u32 = 1 << 24;
    /// The retransmission timer runs early, as the tail loss probe timer
    /// (RFC 8985 §7).
    pub const TLP_TIMER: u32 = 1 << 25;
    /// A tail loss probe went out and no ACK has advanced since.
    pub const TLP_SENT: u32 = 1 << 26;
    /// sockd asked for the send state: SEND_CREDIT goes out at once.
    pub const SYNC_ASKED: u32 = 1 << 27;
    /// SO_REUSEPORT: shares its port with other such sockets (sockd
    /// checked they are one user's); listeners of one address and port
    /// split the connections.
    pub const REUSEPORT: u32 = 1 << 28;
    /// IPV6_V6ONLY: an IPv6 socket bound to `::` takes IPv6 only, not
    /// IPv4 as mapped addresses (RFC 3493 §5.3).
    pub const V6ONLY: u32 = 1 << 29;
}

/// Bits of [`ConnBlock::pend`]: notifications for sockd still to send
/// (kept in the block, so a pool shortage or a restart delays them but
/// never loses one).
pub mod pend {
    /// op::CONNECTED.
    pub const CONNECTED: u32 = 1;
    /// op::ACCEPTABLE to the listener's socket.
    pub const ACCEPTABLE: u32 = 2;
    /// op::SOCK_ERROR with [`ConnBlock::err`](super::ConnBlock::err).
    pub const ERROR: u32 = 4;
    /// op::CLOSED, after which the block forgets its socket.
    pub const CLOSED: u32 = 8;
}

/// Loss-recovery modes, [`ConnBlock::recovery`].
pub mod rec {
    /// Not recovering.
    pub const NONE: u32 = 0;
    /// NewReno fast recovery (RFC 6582).
    pub const NEWRENO: u32 = 1;
    /// SACK-based recovery (RFC 6675).
    pub const SACK: u32 = 2;
}

/// Most SACKed ranges the scoreboard tracks per connection.
pub const SACK_RANGES: usize = 16;

/// A singly linked list of queue entries, by slab index.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct List {
    /// First entry, or [`NIL`].
    pub head: u32,
    /// Last entry, or [`NIL`].
    pub tail: u32,
    /// Entries.
    pub count: u32,
    /// Payload bytes of all entries.
    pub bytes: u32,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            count: 0,
            bytes: 0,
        }
    }
}

impl List {
    /// Whether the list has no entry.
    pub fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

/// One connection (or socket, or listener): everything tcpd knows about
/// it, as plain integers. Times are monotonic nanoseconds (0: timer off);
/// sequence numbers are raw 32-bit values; ports host order; addresses
/// 128-bit values of either family, IPv4 ones mapped into
/// `::ffff:0:0/96` ([`strata_ipc::addrs::mapped`]), as on the socket path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnBlock {
    // ---- addresses (first: the 16-byte alignment they need) ----
    /// Local address: `mapped(0)` any IPv4 address, `0` (`::`) any
    /// address (IPv6, and IPv4 too unless [`cf::V6ONLY`]).
    pub local_addr: u128,
    /// Peer address (0: none). A connection's two addresses are of one
    /// family: both mapped (IPv4) or neither (IPv6).
    pub remote_addr: u128,

    // ---- timers and times (ns) ----
    /// Retransmission (or SYN, SYN-ACK, persist) timer.
    pub t_rtx: u64,
    /// Delayed-ACK timer.
    pub t_delack: u64,
    /// Keep-alive timer.
    pub t_keepalive: u64,
    /// State timer: TIME-WAIT, orphaned FIN-WAIT-2.
    pub t_state: u64,
    /// Last segment received (keep-alive idle time).
    pub last_rx: u64,
    /// When the segment being timed was sent (0: none).
    pub rtt_time: u64,
    /// When `ts_recent` was last updated.
    pub ts_recent_age: u64,
    /// CUBIC: start of the current epoch (0: none).
    pub cc_epoch: u64,
    /// CUBIC: W_max in segments (f64 bits).
    pub cc_wmax: u64,
    /// CUBIC: K in seconds (f64 bits).
    pub cc_k: u64,
    /// CUBIC: W_est in segments (f64 bits).
    pub cc_west: u64,
    /// CUBIC: cwnd before the last reduction, segments (f64 bits).
    pub cc_prior: u64,
    /// Listener: when its SYN queue last overflowed (cookies are checked
    /// for two minutes after).
    pub overflow_ts: u64,

    // ---- identity ----
    /// The state, stored as a plain integer (0: free block): read with
    /// [`slot`](Self::slot) or [`state`](Self::state), write with
    /// [`set_state`](Self::set_state).
    pub state: u32,
    /// [`cf`] bits.
    pub flags: u32,
    /// Bytes of the socket's receive ring as sockd said (SETOPT RCVBUF);
    /// 0: the configured `socket_rx_bytes`.
    pub rx_ring: u32,
    /// Generation: bumped when the block is freed, part of the
    /// connection id.
    pub gen: u32,
    /// sockd's socket id (0: none).
    pub sock: u32,
    /// The listener of a passive connection (index, or [`NIL`]).
    pub parent: u32,
    /// The listener's generation when the child was made.
    pub parent_gen: u32,
    /// Local port (0: unbound).
    pub local_port: u32,
    /// Peer port.
    pub remote_port: u32,
    /// Listener: accept-queue limit (the listen backlog).
    pub backlog: u32,
    /// Listener: children in SYN-RECEIVED.
    pub syn_q: u32,
    /// Listener: established children not yet attached.
    pub acc_q: u32,

    // ---- send sequence space ----
    /// Our initial sequence number.
    pub iss: u32,
    /// The peer's initial sequence number.
    pub irs: u32,
    /// Oldest unacknowledged sequence number.
    pub snd_una: u32,
    /// Next sequence number to send.
    pub snd_nxt: u32,
    /// Highest sequence number sent, plus one.
    pub snd_max: u32,
    /// Sequence number after the last queued data byte (our FIN's).
    pub snd_end: u32,
    /// Peer's window, scaled (bytes).
    pub snd_wnd: u32,
    /// Largest window the peer offered.
    pub max_snd_wnd: u32,
    /// Segment sequence number of the last window update.
    pub snd_wl1: u32,
    /// Segment acknowledgment number of the last window update.
    pub snd_wl2: u32,

    // ---- receive side ----
    /// Next sequence number expected.
    pub rcv_nxt: u32,
    /// Right edge of the window last advertised.
    pub rcv_adv: u32,
    /// Bytes sockd can still take.
    pub rx_credit: u32,
    /// Send credit to return to sockd (bytes acknowledged and freed).
    pub tx_owed: u32,

    // ---- segment sizes and scaling ----
    /// Payload bytes per segment we send (options excluded).
    pub snd_mss: u32,
    /// MSS the peer announced.
    pub peer_mss: u32,
    /// MSS we announce.
    pub our_mss: u32,
    /// Shift of the peer's windows.
    pub snd_wscale: u32,
    /// Shift of our windows.
    pub rcv_wscale: u32,

    // ---- RTT (RFC 6298) ----
    /// Smoothed RTT, µs (0: no sample yet).
    pub srtt_us: u32,
    /// RTT variance, µs.
    pub rttvar_us: u32,
    /// Current RTO before back-off, µs.
    pub rto_us: u32,
    /// First sequence number of the segment being timed.
    pub rtt_seq: u32,
    /// Back-off exponent.
    pub backoff: u32,
    /// Consecutive retransmission timeouts (or SYN, probe retries).
    pub retries: u32,

    // ---- timestamps (RFC 7323) ----
    /// TS.Recent.
    pub ts_recent: u32,
    /// Last.ACK.sent.
    pub last_ack_sent: u32,
    /// Offset of our timestamp clock.
    pub ts_offset: u32,

    // ---- congestion control ----
    /// Congestion window, bytes.
    pub cwnd: u32,
    /// Slow-start threshold, bytes.
    pub ssthresh: u32,
    /// Bytes acknowledged towards the next congestion-avoidance increase.
    pub cwnd_cnt: u32,
    /// Recovery point (RFC 6582 `recover`, RFC 6675 `RecoveryPoint`).
    pub recover: u32,
    /// RFC 6675 `HighRxt`.
    pub high_rxt: u32,
    /// One of [`rec`].
    pub recovery: u32,
    /// Consecutive duplicate ACKs.
    pub dupacks: u32,
    /// [`CcAlgo`](crate::cc::CcAlgo) as a number.
    pub cc_algo: u32,

    // ---- miscellany ----
    /// Full-sized segments received since our last ACK.
    pub segs_unacked: u32,
    /// ACKs still to send at once (quick-ACK mode at the start).
    pub quickacks: u32,
    /// Keep-alive probes sent without an answer.
    pub ka_probes: u32,
    /// Soft error (errno of an ICMP error) reported if a connect times out.
    pub soft_err: u32,
    /// Error to report with [`pend::ERROR`].
    pub err: u32,
    /// [`pend`] bits.
    pub pend: u32,
    /// Start of the most recent out-of-order segment (first SACK block).
    pub last_ooo: u32,
    /// Send-queue entry holding `snd_nxt` (a hint, validated on use).
    pub snd_cur: u32,
    /// SACKed ranges in use.
    pub sack_cnt: u32,
    /// The block's own index in the table (checked at restore).
    pub index: u32,
    /// End of the last segment sent shorter than the MSS (Minshall's
    /// Nagle: hold a runt only while an earlier runt is unacknowledged).
    pub snd_sml: u32,
    /// `snd_nxt` (at least the segment's end) when the segment at
    /// `snd_una` was last sent: data SACKed above this was sent after it.
    pub rtx_fence: u32,
    /// Bytes newly SACKed above [`rtx_fence`](Self::rtx_fence) since then;
    /// past DupThresh segments, the head's retransmission is lost too.
    pub rtx_sacked: u32,
    /// Receive buffer (auto-tuned): the window never offers more, however
    /// much credit sockd gives.
    pub rcvbuf: u32,
    /// [`rcv_read`](Self::rcv_read) when the current auto-tuning
    /// measurement began.
    pub rcvq_seq: u32,
    /// When it began (ms, the timestamp clock without offset).
    pub rcvq_time: u32,
    /// When the head segment was last sent, as far as
    /// [`rtx_fence`](Self::rtx_fence) knows (µs clock, wrapping).
    pub rtx_fence_us: u32,
    /// Bytes the application read (sockd's READ_CREDIT), wrapping: what
    /// auto-tuning measures.
    pub rcv_read: u32,
    /// Bytes that left the send buffer in total (acknowledged or
    /// discarded), wrapping: what SEND_CREDIT reports.
    pub tx_freed: u32,
    /// Stream offset of the next byte expected from sockd (what it handed
    /// over and tcpd took, queued or discarded): earlier bytes are
    /// repeats, later ones mean something was lost.
    pub tx_taken: u32,
    /// `tx_taken` as SEND_CREDIT last reported it.
    pub tx_taken_told: u32,
    /// TCP_KEEPIDLE in seconds (0: the configured default).
    pub ka_idle_s: u32,
    /// TCP_KEEPINTVL in seconds (0: the configured default).
    pub ka_intvl_s: u32,
    /// TCP_KEEPCNT (0: the configured default).
    pub ka_cnt: u32,
    /// IPv6 connections: the flow label of every packet sent (RFC 6437
    /// §3: one per flow, from a keyed hash of its addresses and ports;
    /// never 0 for a connection, so that a path may use it).
    pub flow_label: u32,
    /// Reserved; zero.
    pub reserved: [u32; 1],

    // ---- queues ----
    /// Data from sockd: unacknowledged (sent or not), in order.
    pub snd_q: List,
    /// Data received in order, not yet handed to sockd.
    pub rcv_q: List,
    /// Data received out of order, sorted, disjoint.
    pub ooo_q: List,
    /// Data handed to sockd that sockd has not yet confirmed written into
    /// the application's ring: kept (and pinned) so that it can be handed
    /// over again if sockd dies with it.
    pub dlv_q: List,
    /// SACK scoreboard: `[left, right)` pairs above `snd_una`, sorted,
    /// disjoint.
    pub sacked: [[u32; 2]; SACK_RANGES],
}

const _: () = assert!(std::mem::size_of::<ConnBlock>() == 2 * 16 + 13 * 8 + 122 * 4);
const _: () = assert!(std::mem::size_of::<ConnBlock>().is_multiple_of(16));
const _: () = assert!(std::mem::offset_of!(ConnBlock, t_rtx) == 32);

// SAFETY: repr(C), only u128/u64/u32 fields and arrays of them, the u128
// ones first (at offsets 0 and 16), laid out with no padding (checked by
// the assertions above: the fields' sizes add up to the struct's, a
// multiple of its alignment); any bit pattern is a value (restore
// validates what it relies on).
#[allow(unsafe_code)]
unsafe impl Pod for ConnBlock {}

/// What a block's stored state word holds: the arena is plain integers,
/// so a block may hold anything after a crash or a stray write; restore
/// resets a block whose state is [`Slot::Garbage`], so the core's events
/// only ever see [`Slot::Live`] blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The block is free.
    Free,
    /// A socket, listener or connection in this state.
    Live(State),
    /// No state at all: this stored value.
    Garbage(u32),
}

impl ConnBlock {
    /// Whether the block is in use (anything but [`Slot::Free`]).
    pub fn in_use(&self) -> bool {
        self.state != st::FREE
    }

    /// What the stored state says, garbage included.
    pub fn slot(&self) -> Slot {
        match State::from_raw(self.state) {
            Some(s) => Slot::Live(s),
            None if self.state == st::FREE => Slot::Free,
            None => Slot::Garbage(self.state),
        }
    }

    /// The state of a block in use. The core runs events only on such
    /// blocks, whose state is always valid: restore resets the others,
    /// and [`set_state`](Self::set_state) writes only states. Code that
    /// looks at any block (a scan of the table, restore, a listing from
    /// outside) uses [`slot`](Self::slot).
    ///
    /// # Panics
    /// If the block is free or holds garbage: a broken invariant (tcpd
    /// then restarts, and restore deals with the block).
    #[track_caller]
    pub fn state(&self) -> State {
        match self.slot() {
            Slot::Live(s) => s,
            Slot::Free | Slot::Garbage(_) => {
                panic!("block {} has no state: {:?}", self.index, self.slot())
            }
        }
    }

    /// Moves the block to state `s`.
    pub fn set_state(&mut self, s: State) {
        self.state = s.raw();
    }

    /// Whether a flag is set.
    #[inline]
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// The connection id sockd sees (generation and index).
    pub fn id(&self, idx: usize) -> u64 {
        u64::from(self.gen) << 32 | idx as u64
    }
}

/// Bits of [`SegEntry::flags`].
pub mod ef {
    /// Out-of-order entry: the peer's FIN follows this entry's data.
    pub const FIN: u32 = 1;
    /// Send-queue entry.
    pub const SND: u32 = 2;
    /// Delivered-queue entry made for part of a buffer whose rest is
    /// still queued: freeing it must not unpin the buffer.
    pub const PART: u32 = 4;
}

/// One queued buffer: a [`Handle`] whose data window is stream payload,
/// the sequence number of its first byte, and the index of the next entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SegEntry {
    /// The buffer (data window = payload).
    pub h: Handle,
    /// Next entry of the list, or [`NIL`].
    pub next: u32,
    /// Index of the owning block plus one (0: free entry).
    pub owner: u32,
    /// Sequence number of the first payload byte.
    pub seq: u32,
    /// [`ef`] bits.
    pub flags: u32,
    /// Send-queue entries: `snd_nxt` (at least the segment's end) after
    /// this entry's data was last sent, 0 if never; the
    /// [`ConnBlock::rtx_fence`] of its first byte as the head.
    pub sent_fence: u32,
    /// Send-queue entries: when this entry's data was last sent (µs clock,
    /// wrapping).
    pub sent_us: u32,
    /// Reserved; zero.
    pub reserved: [u32; 10],
}

const _: () = assert!(std::mem::size_of::<SegEntry>() == 128);

// SAFETY: repr(C); a Handle (repr(C), integers only, 64 bytes with no
// padding) followed by u32 fields that fill the second cache line exactly.
#[allow(unsafe_code)]
unsafe impl Pod for SegEntry {}

impl SegEntry {
    /// Payload bytes.
    pub fn len(&self) -> u32 {
        self.h.data_len
    }

    /// Whether the entry has no payload.
    pub fn is_empty(&self) -> bool {
        self.h.data_len == 0
    }

    /// Sequence number after the last payload byte.
    pub fn end(&self) -> u32 {
        self.seq.wrapping_add(self.h.data_len)
    }
}

/// States of [`Journal::state`].
pub mod journal {
    /// No event in progress (or one that changed nothing yet).
    pub const IDLE: u32 = 0;
    /// An event on [`Journal::block`](super::Journal::block) is in
    /// progress: the block in the arena is as before it, and the first
    /// [`Journal::n`](super::Journal::n) undo records hold the old fields
    /// of the entries it changed.
    pub const ACTIVE: u32 = 1;
    /// The event is over: [`Journal::after`](super::Journal::after) is
    /// the block as it left it, being copied into place.
    pub const COMMIT: u32 = 2;
}

/// The record of the event in progress (one at a time), for restore to
/// finish or undo it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Journal {
    /// One of [`journal`].
    pub state: u32,
    /// The block of the event.
    pub block: u32,
    /// Undo records in use.
    pub n: u32,
    /// One more than the number of connection blocks a restore must read:
    /// no block at or above `blocks_used - 1` is in use. 0: not known (an
    /// arena an older tcpd left), so every block is read.
    pub blocks_used: u32,
    /// The block as the event left it (valid in [`journal::COMMIT`]).
    pub after: ConnBlock,
}

const _: () = assert!(std::mem::size_of::<Journal>() == 16 + std::mem::size_of::<ConnBlock>());

impl Journal {
    /// How many connection blocks, of `n`, a restore must read: those
    /// below the high-water mark, or all when it is not known.
    pub fn blocks_to_read(&self, n: usize) -> usize {
        match self.blocks_used {
            0 => n,
            v => (v as usize - 1).min(n),
        }
    }

    /// Records that blocks below `upto` (and none at or above it) may be
    /// in use.
    pub fn set_blocks_used(&mut self, upto: usize) {
        self.blocks_used = u32::try_from(upto).map_or(0, |u| u.saturating_add(1));
    }
}

/// The fields of queue entry [`idx`](Self::idx) before the event in
/// progress changed it in place (links, trims, send marks): all that an
/// event writes of an entry that existed before it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UndoRec {
    /// The entry.
    pub idx: u32,
    /// [`SegEntry::next`].
    pub next: u32,
    /// [`SegEntry::seq`].
    pub seq: u32,
    /// [`SegEntry::flags`].
    pub flags: u32,
    /// [`SegEntry::sent_fence`].
    pub sent_fence: u32,
    /// [`SegEntry::sent_us`].
    pub sent_us: u32,
    /// The handle's `data_off`.
    pub data_off: u32,
    /// The handle's `data_len`.
    pub data_len: u32,
}

impl UndoRec {
    /// The undo record of entry `idx` as it is.
    pub fn of(idx: u32, e: &SegEntry) -> UndoRec {
        UndoRec {
            idx,
            next: e.next,
            seq: e.seq,
            flags: e.flags,
            sent_fence: e.sent_fence,
            sent_us: e.sent_us,
            data_off: e.h.data_off,
            data_len: e.h.data_len,
        }
    }

    /// Puts the saved fields back into `e`.
    pub fn apply(&self, e: &mut SegEntry) {
        e.next = self.next;
        e.seq = self.seq;
        e.flags = self.flags;
        e.sent_fence = self.sent_fence;
        e.sent_us = self.sent_us;
        e.h.data_off = self.data_off;
        e.h.data_len = self.data_len;
    }
}

/// The memory the core keeps its connections in.
pub struct Storage<'a> {
    /// Connection blocks.
    pub conns: &'a mut [ConnBlock],
    /// Queue entries.
    pub segs: &'a mut [SegEntry],
    /// The event journal.
    pub journal: &'a mut Journal,
    /// Undo records, as many as queue entries (an event saves each entry
    /// at most once).
    pub undo: &'a mut [UndoRec],
}

/// The first 64 bytes of the arena when the shell lays a [`Storage`] out
/// with [`Storage::from_raw`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StorageHeader {
    /// [`STORAGE_MAGIC`] once laid out.
    pub magic: u64,
    /// [`STORAGE_VERSION`].
    pub version: u32,
    /// Connection blocks.
    pub n_conns: u32,
    /// Queue entries.
    pub n_segs: u32,
    /// Reserved.
    pub reserved: u32,
    /// The secret of the keyed hashes, kept here by the shell so that a
    /// restarted tcpd keeps its ISN and cookie key.
    pub secret: [u64; 2],
    /// Reserved.
    pub reserved2: [u64; 3],
}

const _: () = assert!(std::mem::size_of::<StorageHeader>() == 64);

/// What [`Storage::from_raw`] relies on for alignment: every part's type
/// needs at most the 64 bytes its offset is rounded to, and the undo
/// records, which follow the journal directly, stay aligned after it.
const LAYOUT_ALIGNED: bool = std::mem::align_of::<StorageHeader>() <= 64
    && std::mem::align_of::<ConnBlock>() <= 64
    && std::mem::align_of::<Journal>() <= 64
    && std::mem::align_of::<SegEntry>() <= 64
    && std::mem::size_of::<Journal>().is_multiple_of(std::mem::align_of::<UndoRec>())
    && std::mem::align_of::<UndoRec>() <= 64;
const _: () = assert!(LAYOUT_ALIGNED);

/// Marks an arena laid out by [`Storage::from_raw`].
pub const STORAGE_MAGIC: u64 = 0x5443_5044_5354_4f52;
/// Layout version of [`ConnBlock`] and [`SegEntry`] (8: addresses of 16
/// bytes, for IPv6). An arena of another version is laid out afresh, and
/// tcpd's arena format (its `ArenaFormat`) is this version, read only by
/// a tcpd of the same one: `strata upgrade` refuses to move a running
/// stack between versions rather than lose its connections.
pub const STORAGE_VERSION: u32 = 8;

impl<'a> Storage<'a> {
    /// Offset of the journal (after the header and the blocks).
    pub(crate) fn journal_off(n_conns: usize) -> usize {
        (64 + n_conns * std::mem::size_of::<ConnBlock>()).div_ceil(64) * 64
    }

    /// Offset of the queue entries when there are `n_segs` of them (after
    /// the journal and the undo records).
    fn segs_off(n_conns: usize, n_segs: usize) -> usize {
        let j = Self::journal_off(n_conns) + std::mem::size_of::<Journal>();
        (j + n_segs * std::mem::size_of::<UndoRec>()).div_ceil(64) * 64
    }

    /// Bytes of arena to give a tcpd of `n_conns` connections: their
    /// blocks and the journal, and 10 MiB of queue entries (which follow
    /// the pool's buffers, not the connections: an idle connection holds
    /// none).
    /// (Whole pages, so that what follows in the fabric stays aligned.)
    pub fn arena_bytes(n_conns: usize) -> usize {
        (Self::journal_off(n_conns) + std::mem::size_of::<Journal>() + (10 << 20)).div_ceil(4096)
            * 4096
    }

    /// Bytes of arena [`Storage::from_raw`] needs for `n_conns` blocks and
    /// `n_segs` queue entries.
    pub fn bytes_for(n_conns: usize, n_segs: usize) -> usize {
        Self::segs_off(n_conns, n_segs) + n_segs * std::mem::size_of::<SegEntry>()
    }

    /// Lays out (or finds) a header, `n_conns` blocks, the journal and as
    /// many queue entries (each with its undo record) as fit in `len`
    /// bytes at `p`. [`Fresh`] says whether the memory was laid out afresh
    /// (magic, version or sizes differed): then the caller uses
    /// [`TcpCore::new`](crate::TcpCore::new), which clears it (or, over
    /// memory never written, [`TcpCore::new_on_zeroed`](crate::TcpCore::new_on_zeroed)),
    /// else [`TcpCore::restore`](crate::TcpCore::restore). `None` when `p` is
    /// not 64-byte aligned or `len` holds no entry.
    ///
    /// # Safety
    /// `p..p+len` must be mapped, writable, used by nothing else for `'a`.
    #[allow(unsafe_code)]
    pub unsafe fn from_raw(
        p: *mut u8,
        len: usize,
        n_conns: usize,
    ) -> Option<(&'a mut StorageHeader, Storage<'a>, Fresh)> {
        if p.is_null() || !(p as usize).is_multiple_of(64) || n_conns > u32::MAX as usize / 2 {
            return None;
        }
        let per = std::mem::size_of::<SegEntry>() + std::mem::size_of::<UndoRec>();
        let fixed = Storage::journal_off(n_conns) + std::mem::size_of::<Journal>();
        let mut n_segs = len.checked_sub(fixed)? / per;
        while n_segs > 0 && Storage::bytes_for(n_conns, n_segs) > len {
            n_segs -= 1;
        }
        if n_segs == 0 || n_conns == 0 {
            return None;
        }
        let j_off = Storage::journal_off(n_conns);
        let u_off = j_off + std::mem::size_of::<Journal>();
        let segs_off = Storage::segs_off(n_conns, n_segs);
        let at = |off: usize| p.wrapping_add(off);
        // SAFETY: the caller gives us `p..p+len`, mapped, writable and
        // used by nothing else for 'a. The five parts are disjoint and
        // inside it (in this order; the last ends at `bytes_for(n_conns,
        // n_segs)`, at most `len` by the loop above). Each is aligned for
        // its type: `p` is 64-aligned (checked), the header, the journal
        // and the entries start at multiples of 64, the blocks at 64, the
        // undo records right after the journal (see the assertions on
        // `LAYOUT_ALIGNED`). All five types are plain integers, so
        // whatever bytes the region holds are valid values.
        let (hdr, conns, journal, undo, segs) = unsafe {
            (
                &mut *at(0).cast::<StorageHeader>(),
                std::slice::from_raw_parts_mut(at(64).cast::<ConnBlock>(), n_conns),
                &mut *at(j_off).cast::<Journal>(),
                std::slice::from_raw_parts_mut(at(u_off).cast::<UndoRec>(), n_segs),
                std::slice::from_raw_parts_mut(at(segs_off).cast::<SegEntry>(), n_segs),
            )
        };
        let fresh = hdr.magic != STORAGE_MAGIC
            || hdr.version != STORAGE_VERSION
            || hdr.n_conns as usize != n_conns
            || hdr.n_segs as usize != n_segs;
        // Never laid out: a new arena, all zero.
        let zeroed = hdr.magic == 0;
        if fresh {
            *hdr = StorageHeader {
                magic: STORAGE_MAGIC,
                version: STORAGE_VERSION,
                n_conns: n_conns as u32,
                n_segs: n_segs as u32,
                ..StorageHeader::default()
            };
            *journal = Journal::default();
        }
        Some((
            hdr,
            Storage {
                conns,
                segs,
                journal,
                undo,
            },
            if zeroed {
                Fresh::Zeroed
            } else if fresh {
                Fresh::Yes
            } else {
                Fresh::No
            },
        ))
    }
}

/// Whether [`Storage::from_raw`] laid the storage out anew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    /// It holds a previous instance's state.
    No,
    /// Laid out anew over what another layout left.
    Yes,
    /// Laid out anew over memory never written (all zero).
    Zeroed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_layout_round_trips() {
        let n = Storage::bytes_for(3, 5);
        let mut mem = vec![0u64; n / 8 + 16];
        let p = mem.as_mut_ptr().cast::<u8>();
        let p = p.wrapping_add((p as usize).next_multiple_of(64) - p as usize);
        #[allow(unsafe_code)]
        let lay = |len: usize| {
            // SAFETY: `p..p+n` lies inside `mem` (its 16 spare words
            // cover the alignment), which outlives every use below; each
            // layout's references are last used before the next one is
            // made, so none aliases another in use.
            unsafe { Storage::from_raw(p, len, 3).unwrap() }
        };
        let (h, s, fresh) = lay(n);
        // Never written: laid out over zeros, whose blocks are free ones
        // of generation 0, as cleared ones are (`TcpCore::new_on_zeroed`
        // relies on it: a block taken for a connection is laid out whole).
        assert_eq!(fresh, Fresh::Zeroed);
        let d = ConnBlock::default();
        assert!(!s.conns[1].in_use() && !d.in_use());
        assert_eq!((s.conns[1].gen, s.conns[1].state), (d.gen, d.state));
        assert_eq!((s.conns.len(), s.segs.len(), s.undo.len()), (3, 5, 5));
        s.journal.n = 2;
        h.secret = [4, 5];
        s.conns[2].gen = 9;
        let (h, s, fresh) = lay(n);
        assert_eq!(fresh, Fresh::No);
        assert_eq!(h.secret, [4, 5]);
        assert_eq!(s.conns[2].gen, 9);
        assert_eq!(s.journal.n, 2);
        // One byte short: an entry fewer.
        let (_, s, fresh) = lay(n - 1);
        assert_eq!(fresh, Fresh::Yes);
        assert_eq!(s.segs.len(), 4);
    }

    const ALL: [State; 11] = [
        State::Closed,
        State::Listen,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
    ];

    #[test]
    fn states_round_trip_through_their_stored_values() {
        for s in ALL {
            let mut c = ConnBlock::default();
            assert_eq!(c.slot(), Slot::Free);
            c.set_state(s);
            assert!(c.in_use());
            assert_eq!((c.slot(), c.state()), (Slot::Live(s), s));
            assert_eq!(State::from_raw(c.state), Some(s));
        }
        let c = ConnBlock {
            state: 12,
            ..ConnBlock::default()
        };
        assert!(c.in_use());
        assert_eq!(c.slot(), Slot::Garbage(12));
    }

    #[test]
    #[should_panic(expected = "has no state")]
    fn a_free_block_has_no_state() {
        ConnBlock::default().state();
    }

    /// The predicates keep the meaning of the ordering comparisons on the
    /// stored values they replaced.
    #[test]
    fn predicates_follow_the_stored_order() {
        for s in ALL {
            let v = s.raw();
            assert_eq!(s.has_peer(), v >= st::SYN_SENT, "{s:?}");
            assert_eq!(s.has_peer_syn(), v >= st::SYN_RECEIVED, "{s:?}");
            assert_eq!(s.is_synchronized(), v >= st::ESTABLISHED, "{s:?}");
            let sends = [st::ESTABLISHED, st::CLOSE_WAIT];
            assert_eq!(s.sends_new_data(), sends.contains(&v), "{s:?}");
            let takes = [
                st::SYN_SENT,
                st::SYN_RECEIVED,
                st::ESTABLISHED,
                st::CLOSE_WAIT,
            ];
            assert_eq!(s.accepts_send(), takes.contains(&v), "{s:?}");
            let fin = [st::FIN_WAIT_1, st::CLOSING, st::LAST_ACK];
            assert_eq!(s.fin_unacked(), fin.contains(&v), "{s:?}");
            let ka = [st::ESTABLISHED, st::CLOSE_WAIT, st::FIN_WAIT_2];
            assert_eq!(s.keeps_alive(), ka.contains(&v), "{s:?}");
        }
    }
}
