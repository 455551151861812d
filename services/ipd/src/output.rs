//! The way out: routing, source address selection, next-hop resolution,
//! fragmentation and the Ethernet header.

use strata_ipc::addrs::{is_loopback, LOOPBACK};
use strata_ipc::handle::{csum, flags::FORWARDED, gso, NO_IFACE};
use strata_ipc::{Buffers, Handle};
use strata_proto::checksum::update_u32;
use strata_proto::ethernet::{ethertype, EthernetHeader};
use strata_proto::ipv4::{fill_checksum, protocol};
use strata_proto::MacAddr;

use crate::neigh::{NeighAddr, Resolve};
use crate::route::is_multicast;
use crate::stats::Stat;
use crate::{IpCore, Outputs, ETH_LEN};

/// The fields of an outgoing datagram's header that the way out needs,
/// read once.
struct OutHdr {
    hl: usize,
    total: usize,
    /// The longest datagram this one puts on the wire ([`gso::wire_len`]).
    wire: usize,
    df: bool,
    src: u32,
    dst: u32,
    frag: bool,
}

fn read_hdr(h: &Handle, d: &[u8]) -> Option<OutHdr> {
    let hl = usize::from(*d.first()? & 0x0f) * 4;
    if d.len() < 20 || hl < 20 || d.len() < hl {
        return None;
    }
    let ff = u16::from_be_bytes([d[6], d[7]]);
    Some(OutHdr {
        hl,
        total: d.len(),
        wire: gso::wire_len(h, d),
        df: ff & 0x4000 != 0,
        src: u32::from_be_bytes([d[12], d[13], d[14], d[15]]),
        dst: u32::from_be_bytes([d[16], d[17], d[18], d[19]]),
        frag: ff & 0x3fff != 0,
    })
}

/// The Ethernet group address of IPv4 multicast group `a` (RFC 1112 §6.4).
fn multicast_mac(a: u32) -> MacAddr {
    let [_, b, c, d] = a.to_be_bytes();
    MacAddr([0x01, 0x00, 0x5e, b & 0x7f, c, d])
}

impl IpCore {
    /// Sends datagram `h` (data window = a valid IPv4 datagram, `l4proto`
    /// set) that ipd or an upper layer originated.
    pub(crate) fn route_out<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        mut h: Handle,
        out: &mut Outputs,
    ) {
        let hdr = match pool.data(&h) {
            Ok(d) => read_hdr(&h, d),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let Some(hdr) = hdr else {
            return self.drop(pool, &h, Stat::OutMalformed);
        };
        let dst = hdr.dst;
        if let Some(slot) = self.net.local_slot(dst) {
            // To ourselves: back up without touching a device, with our own
            // address as source as Linux's loopback route does.
            if hdr.src == 0 {
                self.fill_source(pool, &h, &hdr, dst);
            }
            h.iif = self.net.ifaces[slot].index;
            h.oif = h.iif;
            self.stats.inc(Stat::Loopback);
            return self.local_deliver(now, pool, h, false, false, out);
        }
        if is_loopback(dst) {
            // The loopback network: back up as well, from 127.0.0.1 unless
            // the sender chose, on no interface.
            if hdr.src == 0 {
                self.fill_source(pool, &h, &hdr, LOOPBACK);
            }
            h.iif = NO_IFACE;
            h.oif = NO_IFACE;
            self.stats.inc(Stat::Loopback);
            return self.local_deliver(now, pool, h, false, false, out);
        }
        if dst >> 24 == 0 {
            return self.drop(pool, &h, Stat::NoRoute);
        }
        // Where it goes, and the MAC when routing alone decides it.
        let (slot, nexthop, l2) = if dst == u32::MAX || is_multicast(dst) {
            // The limited broadcast and multicast leave through the
            // interface the sender chose, else the route's, else the first.
            let slot = self
                .net
                .slot(h.oif)
                .or_else(|| self.net.lookup(dst).map(|r| r.slot))
                .or((!self.net.ifaces.is_empty()).then_some(0));
            let Some(slot) = slot else {
                return self.drop(pool, &h, Stat::NoRoute);
            };
            let mac = if dst == u32::MAX {
                MacAddr::BROADCAST
            } else {
                multicast_mac(dst)
            };
            (slot, dst, Some(mac))
        } else {
            let Some(r) = self.net.lookup(dst) else {
                return self.drop(pool, &h, Stat::NoRoute);
            };
            let bcast = self.net.ifaces[r.slot].is_bcast(dst);
            (r.slot, r.nexthop, bcast.then_some(MacAddr::BROADCAST))
        };
        let iface = &self.net.ifaces[slot];
        let (mtu, index, primary) = (iface.mtu as usize, iface.index, iface.primary());
        if hdr.src == 0 {
            // An interface without an address keeps 0.0.0.0 (DHCP).
            if let Some(src) = primary {
                self.fill_source(pool, &h, &hdr, src);
            }
        }
        if hdr.wire > mtu && (hdr.df || hdr.wire < hdr.total) {
            // Locally originated: the sender finds out through path MTU
            // discovery's own timeouts (a forwarded packet gets ICMP
            // fragmentation needed in `forward`).
            return self.drop(pool, &h, Stat::DfTooBig);
        }
        h.oif = index;
        h.nexthop = nexthop;
        if let Some(mac) = l2 {
            return self.transmit(pool, h, slot, mac, out);
        }
        self.send_to_neighbour(now, pool, h, slot, NeighAddr::v4(nexthop), out);
    }

    /// Sends datagram `h` (IPv4 or IPv6) to neighbour `nexthop` on
    /// interface slot `slot`: at once when its MAC is known, else queued
    /// while ARP or neighbour discovery resolves it.
    pub(crate) fn send_to_neighbour<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        h: Handle,
        slot: usize,
        nexthop: NeighAddr,
        out: &mut Outputs,
    ) {
        match self.neigh.resolve(now, slot, nexthop) {
            Resolve::Mac(mac) => self.transmit(pool, h, slot, mac, out),
            Resolve::MacProbe(mac) => {
                self.solicit(pool, slot, nexthop, Some(mac), out);
                self.transmit(pool, h, slot, mac, out);
            }
            Resolve::Pending { idx, solicit } => {
                if solicit {
                    self.solicit(pool, slot, nexthop, None, out);
                }
                if let Some(old) = self.neigh.enqueue(idx, h) {
                    self.drop(pool, &old, Stat::UnresQueueFull);
                }
            }
            Resolve::Full => self.drop(pool, &h, Stat::NeighTableFull),
        }
    }

    /// Writes source address `src` into a datagram sent from 0.0.0.0 and
    /// fixes the IPv4 checksum and, for an unfragmented TCP or UDP
    /// datagram, the transport checksum, whose pseudo-header covers the
    /// source. With checksum offload (`csum::PARTIAL`) the transport field
    /// holds the uncomplemented pseudo-header sum, which is adjusted as such.
    fn fill_source<B: Buffers>(&mut self, pool: &mut B, h: &Handle, hdr: &OutHdr, src: u32) {
        let Ok(d) = pool.data_mut(h) else {
            return;
        };
        d[12..16].copy_from_slice(&src.to_be_bytes());
        fill_checksum(&mut d[..hdr.hl]);
        let at = match d[9] {
            protocol::TCP => hdr.hl + 16,
            protocol::UDP => hdr.hl + 6,
            _ => return,
        };
        if hdr.frag || d.len() < at + 2 {
            return;
        }
        let old = u16::from_be_bytes([d[at], d[at + 1]]);
        let new = if h.csum == csum::PARTIAL {
            !update_u32(!old, 0, src)
        } else if d[9] == protocol::UDP && old == 0 {
            // UDP without a checksum stays without.
            return;
        } else {
            match update_u32(old, 0, src) {
                0 if d[9] == protocol::UDP => 0xffff,
                c => c,
            }
        };
        d[at..at + 2].copy_from_slice(&new.to_be_bytes());
    }

    /// Sends datagram `h` to `mac` on interface slot `slot`, fragmenting it
    /// when it exceeds the MTU.
    pub(crate) fn transmit<B: Buffers>(
        &mut self,
        pool: &mut B,
        h: Handle,
        slot: usize,
        mac: MacAddr,
        out: &mut Outputs,
    ) {
        // A super-segment was checked against the MTU segment by segment
        // (`wire_len`) on its way here.
        let v6 = h.ethertype == ethertype::IPV6;
        let mtu = if v6 {
            self.path_mtu6(pool, &h, slot)
        } else {
            self.net.ifaces[slot].mtu
        };
        if h.data_len as usize > usize::from(mtu) && h.gso_type == gso::NONE {
            if v6 {
                // Only ipd's own IPv6 packets come here: they are cut at
                // their source (RFC 8200 §4.5).
                return self.fragment6(pool, h, slot, mac, mtu, out);
            }
            return self.fragment(pool, h, slot, mac, out);
        }
        if self.push_eth(pool, h, slot, mac, out) {
            self.stats.inc(Stat::TxFrames);
        }
    }

    /// Prepends the Ethernet header into the headroom and emits the frame
    /// (true), or drops it and counts why (false).
    pub(crate) fn push_eth<B: Buffers>(
        &mut self,
        pool: &mut B,
        mut h: Handle,
        slot: usize,
        mac: MacAddr,
        out: &mut Outputs,
    ) -> bool {
        let iface = &self.net.ifaces[slot];
        let v6 = h.ethertype == ethertype::IPV6;
        let eth = EthernetHeader {
            dst: mac,
            src: iface.mac,
            ethertype: if v6 { ethertype::IPV6 } else { ethertype::IPV4 },
        };
        h.oif = iface.index;
        if !h.push_front(ETH_LEN as u32) {
            self.drop(pool, &h, Stat::BadWindow);
            return false;
        }
        let ok = match pool.data_mut(&h) {
            Ok(d) => {
                if !v6 {
                    let hl = d.get(ETH_LEN).map_or(20, |b| usize::from(b & 0x0f) * 4);
                    h.l4_off = (ETH_LEN + hl) as u16;
                }
                eth.emit(d).is_ok()
            }
            Err(_) => false,
        };
        if !ok {
            self.drop(pool, &h, Stat::BadWindow);
            return false;
        }
        h.l2_off = 0;
        h.l3_off = ETH_LEN as u16;
        h.ethertype = eth.ethertype;
        out.tx.push(h);
        true
    }

    /// Cuts datagram `h` into fragments that fit the MTU (RFC 791 §3.2),
    /// each in a new buffer, and frees `h`.
    ///
    /// Copying header and data into fresh buffers is the one payload copy
    /// ipd makes on send, accepted on purpose: a fragment must be a frame
    /// of its own with its own header in front of its slice of the payload,
    /// which handles sharing one buffer cannot express without scatter
    /// lists through every layer below; and it only happens for datagrams
    /// larger than the MTU, which TCP never sends (it segments by MSS).
    fn fragment<B: Buffers>(
        &mut self,
        pool: &mut B,
        h: Handle,
        slot: usize,
        mac: MacAddr,
        out: &mut Outputs,
    ) {
        let mut hdr = [0u8; 60];
        let (hl, total, ff) = match pool.data(&h) {
            Ok(d) => match read_hdr(&h, d) {
                Some(x) => {
                    hdr[..x.hl].copy_from_slice(&d[..x.hl]);
                    (x.hl, x.total, u16::from_be_bytes([d[6], d[7]]))
                }
                None => return self.drop(pool, &h, Stat::OutMalformed),
            },
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let mtu = self.net.ifaces[slot].mtu as usize;
        let chunk = (mtu - hl) & !7;
        // A datagram that is itself a fragment keeps its offset and MF.
        let base_off = usize::from(ff & 0x1fff) * 8;
        let base_mf = ff & 0x2000 != 0;
        let keep_df = ff & 0x4000;
        let payload = total - hl;
        let first_tx = out.tx.len();
        let mut off = 0;
        let mut count = 0;
        while off < payload {
            let n = chunk.min(payload - off);
            let last = off + n == payload;
            let Some(mut f) = pool.alloc(ETH_LEN + hl + n) else {
                // All or nothing: half a datagram is useless to the receiver.
                for done in out.tx.drain(first_tx..) {
                    pool.free(&done);
                }
                return self.drop(pool, &h, Stat::PoolExhausted);
            };
            f.data_len = (hl + n) as u32;
            let src_at = h.data_off as usize + hl + off;
            let copied = pool.copy_raw(&h, src_at, &f, f.data_off as usize + hl, n);
            let wrote = copied.is_ok()
                && pool.data_mut(&f).is_ok_and(|d| {
                    d[..hl].copy_from_slice(&hdr[..hl]);
                    d[2..4].copy_from_slice(&((hl + n) as u16).to_be_bytes());
                    let mut nf = (((base_off + off) / 8) as u16) | keep_df;
                    if !last || base_mf {
                        nf |= 0x2000;
                    }
                    d[6..8].copy_from_slice(&nf.to_be_bytes());
                    fill_checksum(&mut d[..hl]);
                    true
                });
            if !wrote {
                for done in out.tx.drain(first_tx..) {
                    pool.free(&done);
                }
                pool.free(&f);
                return self.drop(pool, &h, Stat::BadWindow);
            }
            f.l3_off = 0;
            f.l4_off = hl as u16;
            f.l4proto = h.l4proto;
            f.nexthop = h.nexthop;
            f.mark = h.mark;
            f.ct_id = h.ct_id;
            f.flow_hash = h.flow_hash;
            if h.flags & FORWARDED != 0 {
                // filterd's FORWARD chain needs to see every fragment as
                // forwarded, from the interface the datagram came in on.
                f.flags |= FORWARDED;
                f.iif = h.iif;
            }
            if off == 0 {
                non_copied_options_to_nop(&mut hdr[..hl]);
            }
            if !self.push_eth(pool, f, slot, mac, out) {
                for done in out.tx.drain(first_tx..) {
                    pool.free(&done);
                }
                return pool.free(&h);
            }
            count += 1;
            off += n;
        }
        self.stats.inc(Stat::FragOutDatagrams);
        self.stats.add(Stat::FragOutCreated, count);
        self.stats.add(Stat::TxFrames, count);
        pool.free(&h);
    }
}

/// Replaces the options that RFC 791 says go only into the first fragment
/// (copy flag clear) with NOPs, keeping the header length, as Linux's
/// `ip_options_fragment` does, so that every later fragment carries the
/// same header size and the fragment arithmetic stays simple.
fn non_copied_options_to_nop(hdr: &mut [u8]) {
    let mut i = 20;
    while i < hdr.len() {
        match hdr[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = hdr.get(i + 1).map_or(0, |&l| usize::from(l));
                if len < 2 || i + len > hdr.len() {
                    break;
                }
                if kind & 0x80 == 0 {
                    hdr[i..i + len].fill(1);
                }
                i += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_not_copied_become_nops() {
        let mut h = [0u8; 32];
        h[0] = 0x48;
        // Record route (not copied), LSRR (copied), EOL.
        h[20..27].copy_from_slice(&[7, 7, 4, 0, 0, 0, 0]);
        h[27..30].copy_from_slice(&[131, 3, 9]);
        non_copied_options_to_nop(&mut h);
        assert_eq!(h[20..27], [1; 7]);
        assert_eq!(h[27..30], [131, 3, 9]);
        assert_eq!(
            multicast_mac(0xe0ff_0102),
            MacAddr([1, 0, 0x5e, 0x7f, 1, 2])
        );
    }
}
