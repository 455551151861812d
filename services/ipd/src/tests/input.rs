//! Every input drop reason, each counted once and the buffer freed.

use super::*;
use strata_ipc::handle::NO_IFACE;
use strata_proto::ipv4::protocol;

/// Feeds `frame` and checks that exactly `why` was counted as a drop,
/// nothing came out and no buffer is held.
fn drops(r: &mut Rig, frame: &[u8], why: Stat) {
    let before = r.stat(why);
    r.input(frame);
    assert_eq!(r.stat(why), before + 1, "{}", why.name());
    assert!(r.out.tx.is_empty() && r.out.up.is_empty(), "{}", why.name());
    assert_eq!(r.pool.in_use(), 0, "{}", why.name());
}

fn udp() -> Ip {
    Ip::new(protocol::UDP)
}

fn frame_of(d: &[u8]) -> Vec<u8> {
    eth(OUR_MAC, PEER_MAC, ethertype::IPV4, d)
}

#[test]
fn each_input_drop_reason_is_counted() {
    let mut r = Rig::new();
    r.core.set_upper(protocol::UDP, true);

    drops(&mut r, &[0u8; 10], Stat::EthTruncated);
    drops(
        &mut r,
        &eth(OUR_MAC, PEER_MAC, 0x88cc, &[0; 40]),
        Stat::UnknownEthertype,
    );
    drops(
        &mut r,
        &eth(
            MacAddr([2, 9, 9, 9, 9, 9]),
            PEER_MAC,
            ethertype::IPV4,
            &udp().build(&[0; 8]),
        ),
        Stat::L2OtherHost,
    );

    let good = udp().build(&[0; 8]);
    let mut bad = good.clone();
    bad[10] ^= 0xff;
    drops(&mut r, &frame_of(&bad), Stat::Ipv4BadChecksum);
    drops(&mut r, &frame_of(&good[..12]), Stat::Ipv4Truncated);
    let mut long = good.clone();
    long[2..4].copy_from_slice(&100u16.to_be_bytes());
    fill_checksum(&mut long);
    drops(&mut r, &frame_of(&long), Stat::Ipv4TotalLenExceedsFrame);
    let mut short = good.clone();
    short[2..4].copy_from_slice(&12u16.to_be_bytes());
    fill_checksum(&mut short);
    drops(&mut r, &frame_of(&short), Stat::Ipv4BadTotalLen);
    let mut v6 = good.clone();
    v6[0] = 0x65;
    drops(&mut r, &frame_of(&v6), Stat::Ipv4BadVersion);
    let mut ihl = good.clone();
    ihl[0] = 0x44;
    drops(&mut r, &frame_of(&ihl), Stat::Ipv4BadHeaderLen);
    let mut ip = udp();
    ip.options = vec![7, 9, 0, 0];
    drops(&mut r, &ip.frame(&[0; 8]), Stat::Ipv4BadOptions);

    let mut ip = udp();
    ip.ttl = 0;
    drops(&mut r, &ip.frame(&[0; 8]), Stat::TtlZero);

    for src in [
        "0.0.0.0",
        "0.1.2.3",
        "127.0.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "10.0.0.1",
        "10.0.0.255",
    ] {
        let mut ip = udp();
        ip.src = src.parse().unwrap();
        drops(&mut r, &ip.frame(&[0; 8]), Stat::MartianSource);
    }
    for dst in ["10.0.0.7", "8.8.8.8", "224.0.0.1", "10.0.1.255"] {
        let mut ip = udp();
        ip.dst = dst.parse().unwrap();
        drops(&mut r, &ip.frame(&[0; 8]), Stat::NotForUs);
    }
    assert_eq!(r.stat(Stat::Delivered), 0);

    // And the good one goes through.
    r.input(&frame_of(&good));
    assert_eq!(r.up().len(), 1);
    r.finish();
}

#[test]
fn bad_handles() {
    let mut r = Rig::new();
    // Unknown interface.
    let mut h = r.buf(&udp().frame(&[0; 8]));
    h.iif = 7;
    r.core.input(r.now, &mut r.pool, h, &mut r.out);
    assert_eq!(r.stat(Stat::UnknownIface), 1);
    let mut h = r.buf(&udp().frame(&[0; 8]));
    h.iif = NO_IFACE;
    r.core.input(r.now, &mut r.pool, h, &mut r.out);
    assert_eq!(r.stat(Stat::UnknownIface), 2);
    // A window beyond the buffer: ours, freed.
    let mut h = r.buf(&[0; 60]);
    h.data_len = 100_000;
    h.iif = IFACE;
    r.core.input(r.now, &mut r.pool, h, &mut r.out);
    assert_eq!(r.stat(Stat::BadWindow), 1);
    // A stale handle: not ours to free (the pool would count it).
    let h = r.buf(&udp().frame(&[0; 8]));
    r.pool.free(&h);
    r.core.input(r.now, &mut r.pool, h, &mut r.out);
    r.core.output(r.now, &mut r.pool, h, &mut r.out);
    assert_eq!(r.stat(Stat::StaleHandle), 2);
    let bogus = Handle {
        buf: 1_000_000,
        ..h
    };
    r.core.input(r.now, &mut r.pool, bogus, &mut r.out);
    assert_eq!(r.stat(Stat::StaleHandle), 3);
    assert_eq!(r.pool.in_use(), 0);
    r.finish();
}

#[test]
fn multicast_and_broadcast_frames_are_accepted_at_l2() {
    let mut r = Rig::new();
    r.core.set_upper(protocol::UDP, true);
    let d = udp().build(&[0; 8]);
    r.input(&eth(MacAddr::BROADCAST, PEER_MAC, ethertype::IPV4, &d));
    r.input(&eth(
        MacAddr([1, 0, 0x5e, 0, 0, 1]),
        PEER_MAC,
        ethertype::IPV4,
        &d,
    ));
    assert_eq!(r.up().len(), 2);
    r.finish();
}
