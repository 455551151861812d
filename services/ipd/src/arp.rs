//! ARP (RFC 826) on top of the neighbour table: answering requests for our
//! addresses, learning senders, and sending requests.

use strata_ipc::handle::flags::FORWARDED;
use strata_ipc::{Buffers, Handle};
use strata_proto::arp::{ArpError, ArpPacket, OP_REPLY, OP_REQUEST};
use strata_proto::ethernet::{ethertype, EthernetHeader};
use strata_proto::icmp::{unreach_code, IcmpHeader};
use strata_proto::MacAddr;

use crate::neigh::{Learn, Learned, NeighAddr};
use crate::stats::Stat;
use crate::{IpCore, Outputs, ETH_LEN};

/// An ARP frame: Ethernet header and the 28-byte packet. Padding to the
/// 60-byte Ethernet minimum is the device's business.
const ARP_FRAME: usize = ETH_LEN + ArpPacket::LEN;

impl IpCore {
    pub(crate) fn arp_input<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        h: Handle,
        slot: usize,
        out: &mut Outputs,
    ) {
        let p = match pool.data(&h) {
            Ok(d) => ArpPacket::parse(d.get(ETH_LEN..).unwrap_or(&[])),
            Err(e) => return self.bad_handle(pool, &h, e),
        };
        let p = match p {
            Ok(p) => p,
            Err(e) => return self.drop(pool, &h, arp_stat(e)),
        };
        self.stats.inc(Stat::RxArp);
        self.stats.inc(if p.op == OP_REQUEST {
            Stat::ArpRxRequests
        } else {
            Stat::ArpRxReplies
        });
        let iface = &self.net.ifaces[slot];
        let sip = u32::from(p.sender_ip);
        // Only addresses of the interface the request came in on are
        // answered (Linux `arp_ignore=1`): an address on another link is
        // not reachable through this one.
        let for_us = iface.has_addr(u32::from(p.target_ip));
        let bad_mac = p.sender_mac.is_multicast() || p.sender_mac == MacAddr::ZERO;
        if sip == 0 {
            // An RFC 5227 probe ("is this address taken?"): defend ours by
            // answering, but there is no sender to learn.
            if p.op == OP_REQUEST && for_us && !bad_mac {
                return self.arp_reply(pool, h, slot, &p, out);
            }
            return self.drop(pool, &h, Stat::ArpInvalidSender);
        }
        if !self.usable_neighbour(sip, p.sender_mac) {
            return self.drop(pool, &h, Stat::ArpInvalidSender);
        }
        // RFC 826 merge: update a known sender whatever the ARP says;
        // create an entry only when the ARP was aimed at us.
        let how = if p.op == OP_REPLY && for_us {
            Learn::Confirmed
        } else {
            Learn::Seen
        };
        let key = NeighAddr::v4(sip);
        self.learn_neighbour(now, pool, slot, key, p.sender_mac, how, for_us, out);
        if for_us && p.op == OP_REQUEST {
            self.arp_reply(pool, h, slot, &p, out);
        } else if for_us {
            pool.free(&h);
        } else {
            self.drop(pool, &h, Stat::ArpNotForUs);
        }
    }

    /// Answers request `req` in its own buffer.
    fn arp_reply<B: Buffers>(
        &mut self,
        pool: &mut B,
        mut h: Handle,
        slot: usize,
        req: &ArpPacket,
        out: &mut Outputs,
    ) {
        let iface = &self.net.ifaces[slot];
        let (mac, index) = (iface.mac, iface.index);
        let eth = EthernetHeader {
            dst: req.sender_mac,
            src: mac,
            ethertype: ethertype::ARP,
        };
        h.data_len = ARP_FRAME as u32;
        let written = pool
            .data_mut(&h)
            .map(|d| eth.emit(d).is_ok() && req.reply(mac).emit(&mut d[ETH_LEN..]).is_ok());
        match written {
            Ok(true) => {}
            Ok(false) => return self.drop(pool, &h, Stat::BadWindow),
            Err(e) => return self.bad_handle(pool, &h, e),
        }
        h.oif = index;
        self.stats.inc(Stat::ArpTxReplies);
        self.stats.inc(Stat::TxFrames);
        out.tx.push(h);
    }

    /// Sends an ARP request for `target` on interface slot `slot` from
    /// `sender` (our address; `target == sender` makes it gratuitous):
    /// broadcast, or unicast to `unicast` when re-confirming a STALE entry.
    pub(crate) fn send_arp_request<B: Buffers>(
        &mut self,
        pool: &mut B,
        slot: usize,
        sender: u32,
        target: u32,
        unicast: Option<MacAddr>,
        out: &mut Outputs,
    ) {
        let Some(mut h) = pool.alloc(ARP_FRAME) else {
            return self.stats.inc(Stat::PoolExhausted);
        };
        let iface = &self.net.ifaces[slot];
        let eth = EthernetHeader {
            dst: unicast.unwrap_or(MacAddr::BROADCAST),
            src: iface.mac,
            ethertype: ethertype::ARP,
        };
        let req = ArpPacket::request(iface.mac, sender.into(), target.into());
        h.data_len = ARP_FRAME as u32;
        h.oif = iface.index;
        h.l3_off = ETH_LEN as u16;
        h.ethertype = ethertype::ARP;
        let ok = pool
            .data_mut(&h)
            .map(|d| eth.emit(d).is_ok() && req.emit(&mut d[ETH_LEN..]).is_ok());
        if ok != Ok(true) {
            return self.drop(pool, &h, Stat::BadWindow);
        }
        self.stats.inc(Stat::ArpTxRequests);
        self.stats.inc(Stat::TxFrames);
        out.tx.push(h);
    }

    /// Asks for the MAC of neighbour `target` on interface slot `slot`:
    /// an ARP request or, for IPv6, a neighbour solicitation
    /// ([`solicit6`](Self::solicit6)); to everyone, or to `unicast` when
    /// re-confirming a known MAC.
    pub(crate) fn solicit<B: Buffers>(
        &mut self,
        pool: &mut B,
        slot: usize,
        target: NeighAddr,
        unicast: Option<MacAddr>,
        out: &mut Outputs,
    ) {
        match (target.as_v4(), target.as_v6()) {
            (Some(v4), _) => self.arp_solicit(pool, slot, v4, unicast, out),
            (_, Some(v6)) => self.solicit6(pool, slot, v6, unicast, out),
            _ => {}
        }
    }

    /// Sends an ARP request for neighbour `target`, from our address on
    /// the same subnet (so the neighbour can answer and learn us), else
    /// the interface's first.
    fn arp_solicit<B: Buffers>(
        &mut self,
        pool: &mut B,
        slot: usize,
        target: u32,
        unicast: Option<MacAddr>,
        out: &mut Outputs,
    ) {
        let iface = &self.net.ifaces[slot];
        let sender = iface
            .addrs
            .iter()
            .find(|a| target & a.mask == a.addr & a.mask)
            .or(iface.addrs.first())
            .map(|a| a.addr)
            .unwrap_or(0);
        self.send_arp_request(pool, slot, sender, target, unicast, out);
    }

    /// Records what a packet from neighbour `ip` on `slot` says of its MAC
    /// ([`Neighbours::learn`](crate::neigh::Neighbours::learn)), sends what
    /// waited for it, and counts a table too full to take it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn learn_neighbour<B: Buffers>(
        &mut self,
        now: u64,
        pool: &mut B,
        slot: usize,
        ip: NeighAddr,
        mac: MacAddr,
        how: Learn,
        create: bool,
        out: &mut Outputs,
    ) {
        match self.neigh.learn(now, slot, ip, mac, how, create) {
            Learned::Entry(idx) => self.flush_neighbour(pool, idx, slot, out),
            Learned::Full => self.stats.inc(Stat::NeighTableFull),
            Learned::Unknown => {}
        }
    }

    /// Sends everything queued on neighbour entry `idx` now that its MAC is
    /// known.
    pub(crate) fn flush_neighbour<B: Buffers>(
        &mut self,
        pool: &mut B,
        idx: usize,
        slot: usize,
        out: &mut Outputs,
    ) {
        let Some(mac) = self.neigh.mac(idx) else {
            return;
        };
        while let Some(q) = self.neigh.dequeue(idx) {
            self.transmit(pool, q, slot, mac, out);
        }
    }

    /// Runs every neighbour's timers.
    pub(crate) fn neigh_timers<B: Buffers>(&mut self, now: u64, pool: &mut B, out: &mut Outputs) {
        use crate::neigh::Tick;
        self.neigh.begin_scan();
        for i in 0..self.neigh.capacity() {
            match self.neigh.tick(i, now) {
                Tick::Idle => {}
                Tick::Solicit { slot, ip, mac } => self.solicit(pool, slot, ip, mac, out),
                Tick::Failed => {
                    self.stats.inc(Stat::NeighFailed);
                    // Local senders learn of the failure by their own
                    // timeouts; the sources of forwarded packets get ICMP
                    // host unreachable below, once the scan is over.
                    while let Some(q) = self.neigh.dequeue(i) {
                        if q.flags & FORWARDED != 0 {
                            // Never grows: it has room for every queue slot.
                            self.unreachable.push(q);
                        } else {
                            self.drop(pool, &q, Stat::ArpFailed);
                        }
                    }
                }
            }
        }
        // Taken out and put back so the loop can borrow the core; the
        // vector keeps its allocation.
        let mut failed = core::mem::take(&mut self.unreachable);
        for q in failed.drain(..) {
            if q.ethertype == strata_proto::ethernet::ethertype::IPV6 {
                // RFC 4443 §3.1: address unreachable.
                if let Some(slot) = self.net.slot(q.iif) {
                    let msg = strata_proto::icmpv6::Icmpv6Header::dest_unreachable(
                        strata_proto::icmpv6::unreach_code::ADDRESS,
                    );
                    self.icmp6_error(now, pool, &q, slot, msg, false, out);
                }
            } else {
                let msg = IcmpHeader::dest_unreachable(unreach_code::HOST, 0);
                self.icmp_error(now, pool, &q, msg, false, out);
            }
            self.drop(pool, &q, Stat::FwdNeighFailed);
        }
        self.unreachable = failed;
    }
}

/// The counter for an ARP parse error.
fn arp_stat(e: ArpError) -> Stat {
    match e {
        ArpError::Truncated => Stat::ArpTruncated,
        ArpError::BadHardwareType => Stat::ArpBadHardwareType,
        ArpError::BadProtocolType => Stat::ArpBadProtocolType,
        ArpError::BadAddressLen => Stat::ArpBadAddressLen,
        ArpError::BadOp => Stat::ArpBadOp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arp_error_has_a_counter_named_after_it() {
        for e in [
            ArpError::Truncated,
            ArpError::BadHardwareType,
            ArpError::BadProtocolType,
            ArpError::BadAddressLen,
            ArpError::BadOp,
        ] {
            assert_eq!(arp_stat(e).name(), format!("arp_{}", e.reason()));
        }
    }
}
