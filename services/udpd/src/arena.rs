//! udpd's arena: its binding table, copied there whenever it changes
//! ([`strata_ipc::Records`]), so that a restarted or upgraded udpd keeps
//! every binding. Two record formats:
//!
//! 1. A [`Binding`] as the core exports it: IPv4 addresses as `u32`.
//! 2. Addresses as 16 bytes, IPv4 ones IPv4-mapped (RFC 4291 §2.5.5.2),
//!    so that the table can hold IPv6 bindings without another format.
//!
//! This udpd writes format 2 and reads both: an upgrade from a udpd of
//! format 1 keeps its bindings. Built with the `arena-v1` feature it is
//! the udpd of format 1 (for the upgrade test, which needs a running
//! udpd of the previous format to upgrade from).

use std::net::{Ipv4Addr, Ipv6Addr};
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

/// Format 1: the core's binding as it is.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct RecV1(Binding);
// SAFETY: Binding is repr(C), made of u32 and u16 fields with no padding
// (4+4+4+2+2+4+4 bytes), and any bit pattern is a value the core's restore
// validates.
unsafe impl Pod for RecV1 {}

/// Format 2: addresses of 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecV2 {
    sock: u32,
    flags: u32,
    seq: u32,
    local_port: u16,
    remote_port: u16,
    /// The local address (IPv4-mapped ::ffff:0.0.0.0: IPv4, any).
    local_addr: [u8; 16],
    remote_addr: [u8; 16],
}
// SAFETY: repr(C), u32, u16 and byte-array fields with no padding
// (4+4+4+2+2+16+16 bytes); any bit pattern is a record, validated as it
// is turned back into a binding.
unsafe impl Pod for RecV2 {}

impl RecV2 {
    fn of(b: &Binding) -> RecV2 {
        let mapped = |a: u32| Ipv4Addr::from(a).to_ipv6_mapped().octets();
        RecV2 {
            sock: b.sock,
            flags: b.flags,
            seq: b.seq,
            local_port: b.local_port,
            remote_port: b.remote_port,
            local_addr: mapped(b.local_addr),
            remote_addr: mapped(b.remote_addr),
        }
    }

    /// The binding, if both addresses are IPv4 ones (all this udpd
    /// serves).
    fn binding(&self) -> Option<Binding> {
        let v4 = |a: [u8; 16]| Ipv6Addr::from(a).to_ipv4_mapped().map(u32::from);
        Some(Binding {
            sock: self.sock,
            local_addr: v4(self.local_addr)?,
            remote_addr: v4(self.remote_addr)?,
            local_port: self.local_port,
            remote_port: self.remote_port,
            flags: self.flags,
            seq: self.seq,
        })
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
    /// Records this udpd cannot serve (IPv6 addresses), left out.
    pub skipped: usize,
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
        let (bindings, skipped) = match format {
            1 => (self.v1.load().into_iter().map(|r| r.0).collect(), 0),
            2 if FORMAT.reads(2) => {
                let recs = self.v2.load();
                let b: Vec<Binding> = recs.iter().filter_map(RecV2::binding).collect();
                let skipped = recs.len() - b.len();
                (b, skipped)
            }
            _ => (Vec::new(), 0),
        };
        Loaded {
            bindings,
            format,
            skipped,
        }
    }

    /// Replaces the stored table with `bindings`, in this build's format.
    pub fn store(&self, bindings: impl Iterator<Item = Binding>) {
        match FORMAT.writes {
            1 => self.v1.store(bindings.map(RecV1)),
            _ => self.v2.store(bindings.map(|b| RecV2::of(&b))),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Binding> {
        vec![
            Binding {
                sock: 7,
                local_addr: u32::from(Ipv4Addr::new(10, 77, 0, 2)),
                remote_addr: 0,
                local_port: 5353,
                remote_port: 0,
                flags: 2,
                seq: 1,
            },
            Binding {
                sock: 9,
                local_addr: 0,
                remote_addr: u32::from(Ipv4Addr::new(10, 77, 0, 1)),
                local_port: 40000,
                remote_port: 53,
                flags: 0,
                seq: 2,
            },
        ]
    }

    /// The fixture: an arena as a udpd of format 1 left it, read by this
    /// one, which then stores its own format.
    #[test]
    fn a_format_1_table_is_read_and_then_stored_as_this_builds_format() {
        let mut mem = vec![0u64; 8192];
        let p = mem.as_mut_ptr() as *mut u8;
        let n = mem.len() * 8;
        // SAFETY: the vector outlives the views and is used only by them.
        let (old, t) = unsafe { (Records::<RecV1>::new(p, n, 1), Table::over(p, n)) };
        old.store(sample().into_iter().map(RecV1));
        let got = t.load();
        assert_eq!((got.format, got.skipped), (1, 0));
        assert_eq!(got.bindings, sample());
        t.store(got.bindings.into_iter());
        let again = t.load();
        assert_eq!(again.format, FORMAT.writes);
        assert_eq!(again.bindings, sample());
    }

    #[test]
    fn format_2_keeps_ipv4_addresses_and_leaves_out_what_it_cannot_serve() {
        for b in sample() {
            assert_eq!(RecV2::of(&b).binding(), Some(b));
        }
        let mut v6 = RecV2::of(&sample()[0]);
        v6.local_addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(v6.binding(), None);
        assert_eq!(std::mem::size_of::<RecV2>(), 48);
    }
}
