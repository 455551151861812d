//! udpd's arena: its binding table, copied there whenever it changes
//! ([`strata_ipc::Records`]), so that a restarted or upgraded udpd keeps
//! every binding. Two record formats:
//!
//! 1. IPv4 addresses as `u32` (host order), 0 for any.
//! 2. Addresses as 16 bytes, IPv4 ones IPv4-mapped (RFC 4291 §2.5.5.2):
//!    `::ffff:0.0.0.0` is IPv4's any, `::` IPv6's. Made for IPv6 bindings
//!    from the start, so this udpd, which has them, writes it as it is:
//!    its new [`bflags`](strata_udpd::bflags) (`V6ONLY`, `INET6`) sit in
//!    the flags word. A udpd of format 2 that serves IPv4 only skips the
//!    IPv6 records (their addresses are not mapped; their flags unknown
//!    to it) and keeps the rest, so going back to it loses only those.
//!
//! This udpd writes format 2 and reads both: an upgrade from a udpd of
//! format 1 keeps its bindings, IPv4 ones coming back mapped. Built with
//! the `arena-v1` feature it is the udpd of format 1 (for the upgrade
//! test, which needs a running udpd of the previous format to upgrade
//! from); that one cannot store IPv6 bindings, and leaves them out.

use std::net::Ipv6Addr;
use strata_ipc::addrs::{is_any, mapped, unmapped};
use strata_ipc::arena::{Pod, Records};
use strata_ipc::service::ArenaFormat;
use strata_ipc::{Fabric, LayerId};
use strata_udpd::Binding;

/// The formats this build writes and reads.
pub const FORMAT: ArenaFormat = if cfg!(feature = "arena-v1") {
    ArenaFormat::FIRST
} else {
    ArenaFormat {
        writes: 2,
        reads_from: 1,
    }
};

/// Format 1: IPv4 addresses as `u32`, host order, 0 for any (and for no
/// peer).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecV1 {
    sock: u32,
    local_addr: u32,
    remote_addr: u32,
    local_port: u16,
    remote_port: u16,
    flags: u32,
    seq: u32,
}
// SAFETY: repr(C), u32 and u16 fields with no padding (4+4+4+2+2+4+4
// bytes); any bit pattern is a record, validated as the core restores it.
unsafe impl Pod for RecV1 {}

impl RecV1 {
    /// The record of `b`, if it is an IPv4 socket's.
    fn of(b: &Binding) -> Option<RecV1> {
        if b.inet6() {
            return None;
        }
        let remote = if b.connected() {
            b.remote_addr
        } else {
            mapped(0)
        };
        Some(RecV1 {
            sock: b.sock,
            local_addr: unmapped(b.local_addr)?,
            remote_addr: unmapped(remote)?,
            local_port: b.local_port,
            remote_port: b.remote_port,
            flags: b.flags,
            seq: b.seq,
        })
    }

    /// The binding, its addresses mapped (an unconnected peer as 0).
    fn binding(&self) -> Binding {
        Binding {
            sock: self.sock,
            local_addr: mapped(self.local_addr),
            remote_addr: if self.remote_addr == 0 {
                0
            } else {
                mapped(self.remote_addr)
            },
            local_port: self.local_port,
            remote_port: self.remote_port,
            flags: self.flags,
            seq: self.seq,
        }
    }
}

/// Format 2: addresses of 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecV2 {
    sock: u32,
    flags: u32,
    seq: u32,
    local_port: u16,
    remote_port: u16,
    /// The local address (IPv4-mapped ::ffff:0.0.0.0: IPv4, any; `::`:
    /// IPv6, any).
    local_addr: [u8; 16],
    /// The peer's address; any (of either family): not connected.
    remote_addr: [u8; 16],
}
// SAFETY: repr(C), u32, u16 and byte-array fields with no padding
// (4+4+4+2+2+16+16 bytes); any bit pattern is a record, validated as it
// is turned back into a binding.
unsafe impl Pod for RecV2 {}

impl RecV2 {
    fn of(b: &Binding) -> RecV2 {
        // An IPv4 socket's missing peer as the udpd that wrote only IPv4
        // ones wrote it (it reads `::` as an IPv6 address and skips it).
        let remote = if b.connected() {
            b.remote_addr
        } else {
            b.any()
        };
        RecV2 {
            sock: b.sock,
            flags: b.flags,
            seq: b.seq,
            local_port: b.local_port,
            remote_port: b.remote_port,
            local_addr: Ipv6Addr::from(b.local_addr).octets(),
            remote_addr: Ipv6Addr::from(remote).octets(),
        }
    }

    /// The binding (an unconnected peer as 0).
    fn binding(&self) -> Binding {
        let remote = u128::from(Ipv6Addr::from(self.remote_addr));
        Binding {
            sock: self.sock,
            local_addr: u128::from(Ipv6Addr::from(self.local_addr)),
            remote_addr: if is_any(remote) { 0 } else { remote },
            local_port: self.local_port,
            remote_port: self.remote_port,
            flags: self.flags,
            seq: self.seq,
        }
    }
}

/// The table, read in whichever format the arena holds and written in
/// this build's.
pub struct Table<'a> {
    v1: Records<'a, RecV1>,
    v2: Records<'a, RecV2>,
}

/// What [`Table::load`] found.
pub struct Loaded {
    pub bindings: Vec<Binding>,
    /// The format they were stored in (0: none stored).
    pub format: u32,
}

impl<'a> Table<'a> {
    /// udpd's table in `f`.
    pub fn of(f: &'a Fabric) -> Table<'a> {
        Table {
            v1: f.records(LayerId::UDPD, 1),
            v2: f.records(LayerId::UDPD, 2),
        }
    }

    /// The table over `p..p+n` (tests).
    ///
    /// # Safety
    /// As [`Records::new`].
    #[cfg(test)]
    unsafe fn over(p: *mut u8, n: usize) -> Table<'a> {
        // SAFETY: the caller's contract; the two views are never used at
        // once, they only read or write whole copies in turn.
        unsafe {
            Table {
                v1: Records::new(p, n, 1),
                v2: Records::new(p, n, 2),
            }
        }
    }

    /// Bindings the table can hold in this build's format.
    pub fn capacity(&self) -> usize {
        match FORMAT.writes {
            1 => self.v1.capacity(),
            _ => self.v2.capacity(),
        }
    }

    /// The stored bindings, whichever format this build reads they are in.
    pub fn load(&self) -> Loaded {
        let format = self.v1.stored_format();
        let bindings = match format {
            1 => self.v1.load().iter().map(RecV1::binding).collect(),
            2 if FORMAT.reads(2) => self.v2.load().iter().map(RecV2::binding).collect(),
            _ => Vec::new(),
        };
        Loaded { bindings, format }
    }

    /// Replaces the stored table with `bindings`, in this build's format
    /// (format 1 leaves IPv6 bindings out: it cannot hold them).
    pub fn store(&self, bindings: impl Iterator<Item = Binding>) {
        match FORMAT.writes {
            1 => self.v1.store(bindings.filter_map(|b| RecV1::of(&b))),
            _ => self.v2.store(bindings.map(|b| RecV2::of(&b))),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use strata_udpd::{bflags, IfaceAddrs, UdpConfig, UdpCore};

    fn v4(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a))
    }

    /// Records as a udpd of format 1 left them.
    fn v1_sample() -> Vec<RecV1> {
        vec![
            RecV1 {
                sock: 7,
                local_addr: v4([10, 77, 0, 2]),
                remote_addr: 0,
                local_port: 5353,
                remote_port: 0,
                flags: bflags::ADDR_LOCK,
                seq: 1,
            },
            RecV1 {
                sock: 9,
                local_addr: 0,
                remote_addr: v4([10, 77, 0, 1]),
                local_port: 40000,
                remote_port: 53,
                flags: 0,
                seq: 2,
            },
        ]
    }

    /// The bindings of [`v1_sample`], as this udpd keeps them.
    fn v4_bindings() -> Vec<Binding> {
        vec![
            Binding {
                sock: 7,
                local_addr: mapped(v4([10, 77, 0, 2])),
                remote_addr: 0,
                local_port: 5353,
                remote_port: 0,
                flags: bflags::ADDR_LOCK,
                seq: 1,
            },
            Binding {
                sock: 9,
                local_addr: mapped(0),
                remote_addr: mapped(v4([10, 77, 0, 1])),
                local_port: 40000,
                remote_port: 53,
                flags: 0,
                seq: 2,
            },
        ]
    }

    /// IPv6 bindings: `::` V6ONLY, a specific address connected to an
    /// IPv6 peer, and a dual-stack socket connected to an IPv4 peer.
    fn v6_bindings() -> Vec<Binding> {
        let ip6 = |s: &str| u128::from(s.parse::<Ipv6Addr>().unwrap());
        vec![
            Binding {
                sock: 11,
                local_addr: 0,
                local_port: 53,
                flags: bflags::V6ONLY | bflags::INET6 | bflags::PORT_LOCK,
                seq: 3,
                ..Binding::default()
            },
            Binding {
                sock: 12,
                local_addr: ip6("2001:db8::2"),
                remote_addr: ip6("2001:db8::99"),
                local_port: 4000,
                remote_port: 4001,
                flags: bflags::INET6 | bflags::ADDR_LOCK | bflags::PORT_LOCK,
                seq: 4,
            },
            Binding {
                sock: 13,
                local_addr: mapped(v4([10, 77, 0, 2])),
                remote_addr: mapped(v4([10, 77, 0, 1])),
                local_port: 4002,
                remote_port: 53,
                flags: bflags::INET6 | bflags::PORT_LOCK,
                seq: 5,
            },
        ]
    }

    /// An arena of `words` zeroed u64s and this build's table over it,
    /// with a format-1 and a format-2 view for writing fixtures.
    struct Arena {
        _mem: Vec<u64>,
        p: *mut u8,
        n: usize,
    }

    impl Arena {
        fn new() -> Arena {
            let mut mem = vec![0u64; 8192];
            let p = mem.as_mut_ptr() as *mut u8;
            let n = mem.len() * 8;
            Arena { _mem: mem, p, n }
        }

        fn table(&self) -> Table<'_> {
            // SAFETY: the vector outlives the views, which take turns.
            unsafe { Table::over(self.p, self.n) }
        }

        fn v1(&self) -> Records<'_, RecV1> {
            // SAFETY: as above.
            unsafe { Records::new(self.p, self.n, 1) }
        }

        fn v2(&self) -> Records<'_, RecV2> {
            // SAFETY: as above.
            unsafe { Records::new(self.p, self.n, 2) }
        }
    }

    /// The fixture: an arena as a udpd of format 1 left it, read by this
    /// one (IPv4 addresses mapped), which then stores its own format.
    #[test]
    fn a_format_1_table_is_read_mapped_and_then_stored_as_this_builds_format() {
        let a = Arena::new();
        a.v1().store(v1_sample());
        let t = a.table();
        let got = t.load();
        assert_eq!(got.format, 1);
        assert_eq!(got.bindings, v4_bindings());
        t.store(got.bindings.into_iter());
        let again = t.load();
        assert_eq!(again.format, FORMAT.writes);
        assert_eq!(again.bindings, v4_bindings());
    }

    /// What the udpd of format 2 that served IPv4 only wrote: unconnected
    /// peers as `::ffff:0.0.0.0`.
    #[test]
    fn a_format_2_table_of_ipv4_only_is_read_as_it_was() {
        let a = Arena::new();
        let old: Vec<RecV2> = v1_sample()
            .iter()
            .map(|r| RecV2 {
                sock: r.sock,
                flags: r.flags,
                seq: r.seq,
                local_port: r.local_port,
                remote_port: r.remote_port,
                local_addr: Ipv4Addr::from(r.local_addr).to_ipv6_mapped().octets(),
                remote_addr: Ipv4Addr::from(r.remote_addr).to_ipv6_mapped().octets(),
            })
            .collect();
        a.v2().store(old.iter().copied());
        let got = a.table().load();
        assert_eq!(got.format, 2);
        if FORMAT.reads(2) {
            assert_eq!(got.bindings, v4_bindings());
        }
        // This udpd writes IPv4 records exactly as that one did.
        for (b, r) in v4_bindings().iter().zip(&old) {
            assert_eq!(RecV2::of(b), *r);
        }
    }

    #[test]
    fn format_2_keeps_ipv6_bindings_which_an_ipv4_only_udpd_skips() {
        let a = Arena::new();
        let all: Vec<Binding> = v4_bindings().into_iter().chain(v6_bindings()).collect();
        a.v2().store(all.iter().map(RecV2::of));
        if FORMAT.reads(2) {
            assert_eq!(a.table().load().bindings, all);
        }
        assert_eq!(std::mem::size_of::<RecV2>(), 48);
        // The udpd before IPv6 restored a record only if both addresses
        // were mapped and its flags were all known (1 to 8): every IPv6
        // binding fails one or the other, so it leaves them out.
        for b in v6_bindings() {
            let r = RecV2::of(&b);
            let mapped_both = [r.local_addr, r.remote_addr]
                .iter()
                .all(|a| Ipv6Addr::from(*a).to_ipv4_mapped().is_some());
            assert!(!mapped_both || b.flags & !15 != 0, "{b:?}");
        }
        // Format 1 cannot hold them: only the IPv4 bindings.
        let v1: Vec<RecV1> = all.iter().filter_map(RecV1::of).collect();
        assert_eq!(v1, v1_sample());
        assert_eq!(std::mem::size_of::<RecV1>(), 24);
    }

    /// A format-1 arena restored into a core: the bindings serve again,
    /// as IPv4 ones.
    #[test]
    fn a_format_1_table_restores_into_a_core() {
        let a = Arena::new();
        a.v1().store(v1_sample());
        let cfg = UdpConfig {
            ifaces: vec![IfaceAddrs {
                index: 1,
                addrs: vec![(Ipv4Addr::new(10, 77, 0, 2), 24)],
                ..IfaceAddrs::default()
            }],
            ..UdpConfig::default()
        };
        let mut core = UdpCore::new(cfg).unwrap();
        assert_eq!(core.restore(&a.table().load().bindings), 2);
        for b in v4_bindings() {
            let got = core.binding(b.sock).unwrap();
            assert_eq!(got, b);
            assert!(!got.inet6(), "an IPv4 socket");
        }
        assert!(core.binding(9).unwrap().connected());
        assert!(!core.binding(7).unwrap().connected());
    }
}
