//! Fuzzes the Neighbor Discovery parsers and the option iterator, checks
//! that re-emitting what they accept parses back the same, and exercises
//! the address helpers.
#![no_main]

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use strata_proto::icmpv6::Icmpv6Header;
use strata_proto::ipv6::{next_header, Ipv6Header};
use strata_proto::ndp::{
    self, NeighborAdvertisement, NeighborSolicitation, Redirect, RouterAdvertisement,
    RouterSolicitation,
};
use strata_proto::MacAddr;

/// Checks that `emit` writes a message with a correct checksum that
/// `parse` reads back as `want`.
fn round_trip<T: PartialEq + core::fmt::Debug>(
    want: T,
    ip: &Ipv6Header,
    emit: impl FnOnce(&mut [u8]) -> Result<usize, strata_proto::EmitError>,
    parse: impl FnOnce(&[u8]) -> bool,
) {
    let mut buf = [0u8; 4096];
    let n = emit(&mut buf).expect("emit");
    assert!(Icmpv6Header::parse(&buf[..n], ip.src, ip.dst).is_ok());
    assert!(parse(&buf[..n]), "{want:?} does not parse back");
}

fuzz_target!(|data: &[u8]| {
    // The first 33 bytes choose the IPv6 source, destination and hop limit.
    let (head, msg) = data.split_at(data.len().min(33));
    let mut a = [0u8; 33];
    a[..head.len()].copy_from_slice(head);
    let mut s = [0u8; 16];
    let mut d = [0u8; 16];
    s.copy_from_slice(&a[..16]);
    d.copy_from_slice(&a[16..32]);
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: 0,
        payload_len: 0,
        next_header: next_header::ICMPV6,
        hop_limit: if a[32] < 0xf0 { ndp::HOP_LIMIT } else { a[32] },
        src: Ipv6Addr::from(s),
        dst: Ipv6Addr::from(d),
    };
    let (src, dst) = (ip.src, ip.dst);

    // The options iterator terminates, and each option it yields emits
    // and decodes back to itself.
    let mut n = 0;
    for o in ndp::options(msg) {
        n += 1;
        assert!(
            n <= msg.len() / 8 + 1,
            "options iterator does not terminate"
        );
        if let Ok(o) = o {
            let mut buf = [0u8; 2048];
            let len = o.emit(&mut buf).expect("an option read back fits");
            assert_eq!(len, o.encoded_len());
            assert_eq!(ndp::options(&buf[..len]).next(), Some(Ok(o)));
        }
    }

    if msg.len() > 2048 {
        return;
    }
    let mut buf = [0u8; 2048];
    // The same bytes as each message type.
    for t in 133..=137u8 {
        let m = &mut buf[..msg.len()];
        m.copy_from_slice(msg);
        if let Some(first) = m.first_mut() {
            *first = t;
        }
        let m = &*m;
        if let Ok(rs) = RouterSolicitation::parse(m, &ip) {
            assert!(rs.options().all(|o| o.is_ok()));
            round_trip(
                rs,
                &ip,
                |b| rs.emit(b, src, dst),
                |b| RouterSolicitation::parse(b, &ip) == Ok(rs),
            );
        }
        if let Ok(ra) = RouterAdvertisement::parse(m, &ip) {
            assert!(ra.options().all(|o| o.is_ok()));
            let _ = (ra.mtu(), ra.prefixes().count(), ra.source_link_addr());
            round_trip(
                ra,
                &ip,
                |b| ra.emit(b, src, dst),
                |b| RouterAdvertisement::parse(b, &ip) == Ok(ra),
            );
        }
        if let Ok(ns) = NeighborSolicitation::parse(m, &ip) {
            assert!(!ns.target.is_multicast());
            round_trip(
                ns,
                &ip,
                |b| ns.emit(b, src, dst),
                |b| NeighborSolicitation::parse(b, &ip) == Ok(ns),
            );
        }
        if let Ok(na) = NeighborAdvertisement::parse(m, &ip) {
            assert!(!na.target.is_multicast());
            assert!(!(na.solicited && dst.is_multicast()));
            let _ = na.target_link_addr();
            round_trip(
                na,
                &ip,
                |b| na.emit(b, src, dst),
                |b| NeighborAdvertisement::parse(b, &ip) == Ok(na),
            );
        }
        if let Ok(r) = Redirect::parse(m, &ip) {
            assert!(!r.destination.is_multicast());
            assert!(ndp::is_link_local(r.target) || r.target == r.destination);
            let _ = (r.redirected_header(), r.target_link_addr());
        }
    }

    // Address helpers.
    let sn = ndp::solicited_node(src);
    assert!(ndp::is_solicited_node(sn) && sn.is_multicast());
    assert_eq!(ndp::multicast_mac(sn).octets()[2..], sn.octets()[12..]);
    let mac = MacAddr([a[0], a[1], a[2], a[3], a[4], a[5]]);
    let ll = ndp::link_local_from_mac(mac);
    assert!(ndp::is_link_local(ll));
    assert_eq!(ll.octets()[8..], ndp::interface_id(mac));
});
