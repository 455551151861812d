//! The messages between an application (libsock) and sockd, on the
//! instance's Unix seqpacket socket: one request, one response, each one
//! packet, encoded with rkyv and validated on receipt (sockd reads them
//! from untrusted clients). File descriptors travel beside them with
//! SCM_RIGHTS where a message says so.
//!
//! Every request is answered at once; operations that wait (a blocking
//! receive, an accept, a TCP connect) wait on the socket's shared memory,
//! not on this channel, so one busy socket never holds up the others of
//! the same process.
//!
//! A socket's memory is a slot ([`Slot`]) of a segment the session
//! registered before ([`Request::Segment`]): a socket costs no fd and no
//! mapping of its own on either side. Threads sleep on a futex in the
//! slot. Wake-ups that need an fd (toward sockd, once per session; toward
//! an application's event loop, per socket that asks with
//! [`Request::Readiness`]) go over Unix datagram socket pairs the
//! application creates (`strata_ipc::sockring::wake_pair`), kicked with
//! `MSG_DONTWAIT`: sockd never writes an fd whose blocking a client
//! controls, and no client holds an fd the layers share.

// rkyv's derive generates archived twins of these types without docs.
#![allow(missing_docs)]

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Version of this protocol, exchanged in [`Request::Hello`].
pub const VERSION: u32 = 6;
/// Largest encoded message.
pub const MAX_MSG: usize = 4096;
/// Most connections one [`Request::Accept`] takes (its answer fits in
/// [`MAX_MSG`]).
pub const MAX_ACCEPT: usize = 32;
/// Name of the socket file in the instance's runtime directory.
pub const SOCKET_FILE: &str = "sockd.sock";

/// Where a socket's memory lies: a slot of a registered segment.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct Slot {
    /// The segment ([`Request::Segment`]).
    pub seg: u64,
    /// Byte offset of the slot in it (a multiple of 4096).
    pub off: u64,
}

/// A socket address of either family: the address as one 128-bit value
/// (an IPv6 address's bits; an IPv4 address mapped into `::ffff:0:0/96`,
/// so that `::ffff:0.0.0.0` is IPv4's "any" and `::` IPv6's) and the
/// port.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[rkyv(derive(Debug))]
pub struct Addr {
    /// Address.
    pub ip: u128,
    /// Port.
    pub port: u16,
}

impl Addr {
    /// IPv4 address `ip` (host order) and `port`.
    pub fn v4(ip: u32, port: u16) -> Addr {
        let mapped = std::net::Ipv4Addr::from(ip).to_ipv6_mapped();
        Addr {
            ip: u128::from(mapped),
            port,
        }
    }

    /// The IPv4 address (host order), if this is one.
    pub fn ipv4(&self) -> Option<u32> {
        std::net::Ipv6Addr::from(self.ip)
            .to_ipv4_mapped()
            .map(u32::from)
    }
}

impl From<std::net::SocketAddr> for Addr {
    fn from(a: std::net::SocketAddr) -> Self {
        match a {
            std::net::SocketAddr::V4(a) => Addr::from(a),
            std::net::SocketAddr::V6(a) => Addr {
                ip: u128::from(*a.ip()),
                port: a.port(),
            },
        }
    }
}

impl From<std::net::SocketAddrV4> for Addr {
    fn from(a: std::net::SocketAddrV4) -> Self {
        Addr::v4(u32::from(*a.ip()), a.port())
    }
}

impl From<Addr> for std::net::SocketAddr {
    /// An IPv4-mapped address comes back as IPv4.
    fn from(a: Addr) -> Self {
        match a.ipv4() {
            Some(v4) => std::net::SocketAddr::new(std::net::Ipv4Addr::from(v4).into(), a.port),
            None => std::net::SocketAddr::new(std::net::Ipv6Addr::from(a.ip).into(), a.port),
        }
    }
}

/// Socket types.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Kind {
    /// SOCK_DGRAM / UDP.
    Udp,
    /// SOCK_STREAM / TCP.
    Tcp,
}

/// Socket options that sockd (or the transport behind it) applies.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum SockOpt {
    /// SO_REUSEADDR.
    ReuseAddr(bool),
    /// TCP_NODELAY.
    NoDelay(bool),
    /// SO_KEEPALIVE.
    KeepAlive(bool),
    /// TCP_CONGESTION: 0 CUBIC, 1 NewReno.
    Congestion(u8),
    /// TCP_KEEPIDLE, seconds (1 to 32767, as Linux takes).
    KeepIdle(u32),
    /// TCP_KEEPINTVL, seconds (1 to 32767).
    KeepIntvl(u32),
    /// TCP_KEEPCNT (1 to 127).
    KeepCnt(u32),
    /// SO_LINGER: on with a zero timeout, close resets the connection
    /// (RST) instead of sending what is queued; a non-zero timeout, or
    /// off, closes gracefully.
    Linger {
        /// `l_onoff`.
        on: bool,
        /// `l_linger`, seconds.
        secs: u32,
    },
    /// SO_REUSEPORT: sockets of one user may bind the same address and
    /// port; the stack spreads connections (TCP) or datagrams (UDP) over
    /// them by the peer's address and port.
    ReusePort(bool),
    /// IPV6_V6ONLY, for an IPv6 socket not bound yet (Linux: EINVAL
    /// once it is): a wildcard `::` then takes IPv6 only, not IPv4 as
    /// mapped addresses. Off by default (dual-stack, as Linux's
    /// `net.ipv6.bindv6only = 0`). Kept with the socket and sent as
    /// `ctl_flags::V6ONLY` with its BIND, CONNECT and LISTEN.
    V6Only(bool),
}

/// How to shut a connection down.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum How {
    /// No more reads.
    Read,
    /// No more writes (FIN after queued data).
    Write,
    /// Both.
    Both,
}

/// Application → sockd.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Request {
    /// First message of a session. Attach two fds: the end of the
    /// session's wake pair sockd waits on, and the session's doorbell (a
    /// sealed memfd, `strata_ipc::sockring::Doorbell`). When a socket's
    /// shared memory asks for it, the application rings the doorbell for
    /// the socket and kicks the other end of the pair. Response:
    /// [`Response::Welcome`].
    Hello {
        /// [`VERSION`].
        version: u32,
    },
    /// Registers a segment of socket memory for this session's sockets.
    /// Attach one fd: a sealed memfd (see `strata_ipc::sockring`).
    /// Registering the same memory under the same id again (after a
    /// fork, or a sockd restart) is `Ok`. Response: `Ok`.
    Segment {
        /// The application's name for it (random: processes that share
        /// a session after a fork pick their own).
        seg: u64,
    },
    /// A new socket in `mem`, laid out by the application. Response:
    /// [`Response::Created`].
    Socket {
        /// Socket type.
        kind: Kind,
        /// Its memory.
        mem: Slot,
    },
    /// From now on kick an fd on every change of this socket, for an
    /// event loop. Attach one fd: the end of a wake pair sockd kicks (the
    /// application polls the other). Response: `Ok`.
    Readiness {
        /// Socket.
        id: u32,
    },
    /// bind(2).
    Bind {
        /// Socket.
        id: u32,
        /// Local address (ip 0: any; port 0: ephemeral).
        addr: Addr,
    },
    /// connect(2). For UDP, ip 0 dissolves the association. For TCP the
    /// response comes at once; completion shows in the shared memory.
    Connect {
        /// Socket.
        id: u32,
        /// Peer.
        addr: Addr,
    },
    /// listen(2).
    Listen {
        /// Socket.
        id: u32,
        /// Accept queue length.
        backlog: u32,
    },
    /// The session's poller. Attach one fd: the end of a wake pair sockd
    /// kicks (once a turn at most) when it changed a socket whose memory
    /// says it is polled (`strata_ipc::sockring::wait::POLLED`), after
    /// ringing that socket's row on the application's side of the
    /// session's doorbell. Sent again after a sockd restart. Response:
    /// `Ok`.
    Poller,
    /// accept(2), non-blocking, for up to `mems.len()` connections (1 to
    /// [`MAX_ACCEPT`]): the i-th accepted is laid out in `mems[i]`, and
    /// memory beyond the last accepted stays the application's. One
    /// request so serves a burst of connections. Response:
    /// [`Response::Accepted`] with one connection or more, or `Error`
    /// (`EAGAIN` when none waits).
    Accept {
        /// Listening socket.
        id: u32,
        /// The new sockets' memory, in the order they take it.
        mems: Vec<Slot>,
    },
    /// shutdown(2).
    Shutdown {
        /// Socket.
        id: u32,
        /// Which half.
        how: How,
    },
    /// close(2).
    Close {
        /// Socket.
        id: u32,
    },
    /// setsockopt(2).
    SetOption {
        /// Socket.
        id: u32,
        /// Option and value.
        opt: SockOpt,
    },
    /// getsockname(2) and getpeername(2). Response: [`Response::Names`].
    Names {
        /// Socket.
        id: u32,
    },
    /// After sockd restarted: take this existing socket back, with its
    /// memory (its segment registered again first). A readiness fd is
    /// sent again with [`Request::Readiness`]. Response: `Ok` or an error
    /// if the socket is gone.
    Reattach {
        /// Socket.
        id: u32,
        /// Its memory, as before.
        mem: Slot,
    },
}

/// sockd → application.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Response {
    /// Done.
    Ok,
    /// Session accepted.
    Welcome {
        /// Session id.
        session: u64,
    },
    /// Socket created.
    Created {
        /// Its id.
        id: u32,
    },
    /// Socket names.
    Names {
        /// Local address.
        local: Addr,
        /// Peer address, if connected.
        peer: Option<Addr>,
    },
    /// Connections accepted, in the order of the request's memory.
    Accepted {
        /// At least one, at most as many as the request gave memory for.
        conns: Vec<Accepted>,
    },
    /// Failed with a libc errno.
    Error {
        /// errno.
        errno: i32,
    },
}

/// One connection of [`Response::Accepted`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Accepted {
    /// The new socket's id.
    pub id: u32,
    /// The peer.
    pub peer: Addr,
    /// The local address.
    pub local: Addr,
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn aligned(b: &[u8]) -> AlignedVec {
    let mut v = AlignedVec::with_capacity(b.len());
    v.extend_from_slice(b);
    v
}

impl Request {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rancor::Error>(self)
            .map(|v| v.to_vec())
            .unwrap_or_default()
    }

    /// Decodes and validates untrusted bytes.
    pub fn decode(b: &[u8]) -> Result<Request, DecodeError> {
        if b.len() > MAX_MSG {
            return Err(DecodeError("too long".into()));
        }
        rkyv::from_bytes::<Request, rancor::Error>(&aligned(b))
            .map_err(|e| DecodeError(e.to_string()))
    }
}

impl Response {
    /// Encodes.
    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rancor::Error>(self)
            .map(|v| v.to_vec())
            .unwrap_or_default()
    }

    /// Decodes and validates.
    pub fn decode(b: &[u8]) -> Result<Response, DecodeError> {
        if b.len() > MAX_MSG {
            return Err(DecodeError("too long".into()));
        }
        rkyv::from_bytes::<Response, rancor::Error>(&aligned(b))
            .map_err(|e| DecodeError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_of_both_families_convert_and_ipv4_comes_back_as_ipv4() {
        use std::net::SocketAddr;
        for s in ["10.77.0.2:53", "0.0.0.0:0", "[fd00::1]:8080", "[::]:7"] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(SocketAddr::from(Addr::from(a)), a, "{s}");
        }
        assert_eq!(Addr::v4(0x0a4d0002, 53).ipv4(), Some(0x0a4d0002));
        let v6: SocketAddr = "[fd00::1]:1".parse().unwrap();
        assert_eq!(Addr::from(v6).ipv4(), None);
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let reqs = [
            Request::Hello { version: VERSION },
            Request::Socket {
                kind: Kind::Udp,
                mem: Slot {
                    seg: u64::MAX,
                    off: 1 << 40,
                },
            },
            Request::Segment { seg: 7 },
            Request::Poller,
            Request::Readiness { id: 3 },
            Request::Accept {
                id: 9,
                mems: vec![Slot { seg: 1, off: 4096 }],
            },
            Request::Reattach {
                id: 9,
                mem: Slot::default(),
            },
            Request::Bind {
                id: 3,
                addr: Addr::v4(0x0a4d0002, 53),
            },
            Request::SetOption {
                id: 1,
                opt: SockOpt::ReuseAddr(true),
            },
            Request::SetOption {
                id: 2,
                opt: SockOpt::V6Only(true),
            },
            Request::Bind {
                id: 4,
                addr: Addr::from("[::]:8080".parse::<std::net::SocketAddr>().unwrap()),
            },
            Request::Shutdown {
                id: 9,
                how: How::Write,
            },
        ];
        for r in reqs {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        let resps = [
            Response::Ok,
            Response::Names {
                local: Addr {
                    ip: u128::from(std::net::Ipv6Addr::LOCALHOST),
                    port: 2,
                },
                peer: None,
            },
            Response::Error { errno: 98 },
        ];
        for r in resps {
            assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn the_largest_accept_and_its_answer_fit_in_a_message() {
        let r = Request::Accept {
            id: u32::MAX,
            mems: vec![
                Slot {
                    seg: u64::MAX,
                    off: u64::MAX,
                };
                MAX_ACCEPT
            ],
        };
        let b = r.encode();
        assert!(b.len() <= MAX_MSG, "{} bytes", b.len());
        assert_eq!(Request::decode(&b).unwrap(), r);
        let any = Addr {
            ip: u128::MAX,
            port: u16::MAX,
        };
        let a = Response::Accepted {
            conns: vec![
                Accepted {
                    id: u32::MAX,
                    peer: any,
                    local: any,
                };
                MAX_ACCEPT
            ],
        };
        let b = a.encode();
        assert!(b.len() <= MAX_MSG, "{} bytes", b.len());
        assert_eq!(Response::decode(&b).unwrap(), a);
    }

    proptest! {
        #[test]
        fn options_round_trip(id in any::<u32>(), on in any::<bool>(), n in any::<u32>()) {
            for opt in [
                SockOpt::V6Only(on),
                SockOpt::ReusePort(on),
                SockOpt::KeepCnt(n),
                SockOpt::Linger { on, secs: n },
            ] {
                let r = Request::SetOption { id, opt };
                prop_assert_eq!(Request::decode(&r.encode()).unwrap(), r);
            }
        }

        #[test]
        fn addresses_of_either_family_round_trip(ip in any::<u128>(), port in any::<u16>(), id in any::<u32>()) {
            let r = Request::Connect { id, addr: Addr { ip, port } };
            prop_assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::decode(&b);
            let _ = Response::decode(&b);
        }
    }
}
