//! sockd's pure core: the decisions the socket server makes that do not
//! need its sessions, shared memory or rings, kept here so that they are
//! unit-tested and so that tcpd's crash test drives tcpd with the same
//! code the real sockd runs.
//!
//! - [`stream`]: one TCP socket's stream offsets and credits between
//!   sockd and tcpd, and how they recover from a restart of either.
//! - [`auth`]: who may bind which port.
//! - [`charge`]: what each user's sockets hold at tcpd, against a limit.
//! - [`tally`]: how many sockets and sessions each process and user holds.
//! - [`family`]: IPv4 and IPv6 on one socket path: a delivered datagram's
//!   source, dual-stack binding overlaps, what IPV6_V6ONLY refuses.
//! - [`rows`]: the sockets by id, stored at their socket table row.
//!
//! The binary (`main.rs` and its modules) is the shell: sessions with
//! libsock, the applications' rings, the service loop.

#![forbid(unsafe_code)]

pub mod auth;
pub mod charge;
pub mod family;
pub mod rows;
pub mod stream;
pub mod tally;
