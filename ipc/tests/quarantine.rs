//! Poison-input quarantine on real shared memory: what the launcher finds
//! after a death, and what a layer drops once an input is quarantined.

mod common;

use strata_ipc::layout::QUARANTINE_SLOTS;
use strata_ipc::quarantine::{
    hex_dump, input_hash, parse_crash_env, CrashHook, DeadInput, DUMP_MAX,
};
use strata_ipc::{Buffers, Fabric, Handle, LayerId};

fn fabric() -> Fabric {
    Fabric::create(&common::name("qtest"), common::small()).unwrap()
}

const L: LayerId = LayerId::IPD;

/// A buffer held by `L` holding `bytes`, as if just popped.
fn input(f: &Fabric, bytes: &[u8]) -> Handle {
    let mut h = f.alloc(L, bytes.len()).unwrap();
    h.data_len = bytes.len() as u32;
    f.pool(L).data_mut(&h).unwrap().copy_from_slice(bytes);
    h
}

#[test]
fn a_held_input_is_found_after_a_death_and_a_finished_one_is_not() {
    let f = fabric();
    assert_eq!(f.dead_input(L), None, "nothing taken yet");
    let h = input(&f, b"hello");
    assert!(f.take_input(L, &h));
    let d = f.dead_input(L).expect("held at the death");
    assert_eq!(d.len, 5);
    assert_eq!(d.hash, input_hash(b"hello", None));
    assert_eq!(d.taken_hash, None, "not watched");
    assert_eq!(d.head, b"hello");
    // The record is cleared by reading it.
    assert_eq!(f.dead_input(L), None);

    // An input the layer freed (or that was freed and reused) did not
    // kill it.
    assert!(f.take_input(L, &h));
    f.pool(L).free(&h);
    assert_eq!(f.dead_input(L), None);
    // Nor one it passed on to another layer, which took it.
    let h = input(&f, b"passed on");
    assert!(f.take_input(L, &h));
    assert_eq!(f.producer(L, LayerId::UDPD).unwrap().push(&[h]), 1);
    let mut got = [Handle::default(); 1];
    assert_eq!(f.consumer(L, LayerId::UDPD).unwrap().pop(&mut got), 1);
    assert_eq!(f.dead_input(L), None);
    // Nor one it shares with a layer that keeps it, once it let go.
    let h = input(&f, b"shared");
    f.add_ref_as(LayerId::TCPD, &h).unwrap();
    assert!(f.take_input(L, &h));
    f.pool(L).free(&h);
    assert!(f.check(&h).is_ok(), "tcpd still holds it");
    assert_eq!(f.dead_input(L), None);
}

#[test]
fn a_second_death_on_the_same_input_quarantines_it_and_copies_are_dropped() {
    let f = fabric();
    let poison = b"....POISON....".to_vec();
    let (free0, _) = f.free_counts();

    // First death: the launcher watches inputs of that length.
    let h = input(&f, &poison);
    assert!(f.take_input(L, &h));
    let first = f.dead_input(L).unwrap();
    f.pool(L).free(&h); // reclaim
    f.watch_inputs(L, Some(first.len));

    // Inputs of other lengths are not hashed while watched.
    let other = input(&f, b"short");
    assert!(f.take_input(L, &other));
    f.pool(L).free(&other);
    // The next instance takes a copy, and its logic scribbles on it before
    // dying: the launcher still knows the hash it arrived with.
    let h = input(&f, &poison);
    assert!(f.take_input(L, &h));
    f.pool(L).data_mut(&h).unwrap()[0] = b'X';
    let second = f.dead_input(L).unwrap();
    f.pool(L).free(&h);
    assert_eq!(second.taken_hash, Some(input_hash(&poison, None)));
    assert_ne!(second.hash, input_hash(&poison, None));
    // Deaths on the same input leave the same bytes when the logic is
    // deterministic (here the first instance did not scribble, so compare
    // with a first death that did): the same input either way.
    let scribbled_first = DeadInput {
        hash: second.hash,
        taken_hash: None,
        ..first.clone()
    };
    assert!(second.same_as(&scribbled_first));
    let other_len = DeadInput {
        len: 99,
        ..scribbled_first.clone()
    };
    assert!(!second.same_as(&other_len));

    assert!(f.quarantine(L, second.len, second.key()));
    assert!(!f.quarantine(L, second.len, second.key()), "already there");
    f.watch_inputs(L, None);

    // Copies of the poison are now dropped (and freed), anything else
    // passes, including inputs of the same length.
    for _ in 0..3 {
        let h = input(&f, &poison);
        assert!(!f.take_input(L, &h));
    }
    let mut same_len = poison.clone();
    same_len[5] = b'Q';
    let h = input(&f, &same_len);
    assert!(f.take_input(L, &h));
    f.pool(L).free(&h);
    assert_eq!(f.free_counts().0, free0, "dropped copies were freed");
    assert_eq!(f.quarantine_counts(L), (1, 3));
    let e = f.quarantine_entries(L);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].len, poison.len() as u32);
    assert_eq!(e[0].hash, input_hash(&poison, None));
    assert_eq!(e[0].hits, 3);
    // Other layers are not affected.
    let mut h = f.alloc(LayerId::UDPD, poison.len()).unwrap();
    h.data_len = poison.len() as u32;
    f.pool(LayerId::UDPD)
        .data_mut(&h)
        .unwrap()
        .copy_from_slice(&poison);
    assert!(f.take_input(LayerId::UDPD, &h));
}

/// An Ethernet frame with an IPv4/UDP datagram carrying `payload`, with
/// IP identification `id` (and a header checksum to match).
fn frame(id: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0x53, 0x54, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    let sum: u32 = ip
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend(ip);
    f.extend([0x30, 0x39, 0x27, 0x0f]);
    f.extend((8 + payload.len() as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend(payload);
    f
}

#[test]
fn copies_of_a_datagram_that_differ_only_in_their_ip_id_are_the_same_input() {
    let a = frame(1, b"poison");
    let b = frame(2, b"poison");
    assert_ne!(a, b);
    assert_eq!(input_hash(&a, Some(14)), input_hash(&b, Some(14)));
    assert_ne!(input_hash(&a, None), input_hash(&b, None));
    assert_ne!(
        input_hash(&a, Some(14)),
        input_hash(&frame(1, b"poisoN"), Some(14))
    );
    // Not IPv4 where the handle says: hashed as it is.
    assert_eq!(input_hash(&a, Some(0)), input_hash(&a, None));
    assert_eq!(input_hash(&a[..20], Some(14)), input_hash(&a[..20], None));

    // Through the fabric: the handle says where the header is.
    let f = fabric();
    let ipv4 = |bytes: &[u8]| {
        let mut h = input(&f, bytes);
        h.ethertype = 0x0800;
        h.l3_off = 14;
        h
    };
    let h = ipv4(&a);
    assert!(f.take_input(L, &h));
    let d = f.dead_input(L).unwrap();
    assert_eq!(d.hash, input_hash(&a, Some(14)));
    f.pool(L).free(&h);
    assert!(f.quarantine(L, d.len, d.key()));
    let h = ipv4(&b);
    assert!(!f.take_input(L, &h), "another copy, numbered anew");
    let h = ipv4(&frame(3, b"poisoN"));
    assert!(f.take_input(L, &h));
}

#[test]
fn the_quarantine_table_keeps_the_newest_entries() {
    let f = fabric();
    let n = QUARANTINE_SLOTS as u32 + 3;
    for k in 0..n {
        assert!(f.quarantine(L, 100 + k, 1000 + k as u64));
    }
    let e = f.quarantine_entries(L);
    assert_eq!(e.len(), QUARANTINE_SLOTS);
    let lens: Vec<u32> = e.iter().map(|e| e.len).collect();
    let want: Vec<u32> = (n - QUARANTINE_SLOTS as u32..n).map(|k| 100 + k).collect();
    assert_eq!(lens, want, "oldest first, the first three gone");
    assert_eq!(f.quarantine_counts(L).0, n as u64);
}

#[test]
fn the_dump_is_bounded_and_looks_like_xxd() {
    let f = fabric();
    let big = vec![0x41u8; 1000];
    let h = input(&f, &big);
    assert!(f.take_input(L, &h));
    let d = f.dead_input(L).unwrap();
    assert_eq!(d.len, 1000);
    assert_eq!(d.head.len(), DUMP_MAX);
    assert_eq!(
        hex_dump(b"E\x00\x00\x54hello, world!!\x01"),
        "00000000: 4500 0054 6865 6c6c 6f2c 2077 6f72 6c64  E..Thello, world\n\
         00000010: 2121 01                                  !!.\n"
    );
}

#[test]
fn the_fault_hook_names_a_layer_and_a_pattern() {
    let hook = |layer, hang, pattern: &[u8]| {
        Some(CrashHook {
            layer,
            hang,
            once: false,
            pattern: pattern.to_vec(),
        })
    };
    assert_eq!(
        parse_crash_env("ipd:504f49534f4e"),
        hook(LayerId::IPD, false, b"POISON")
    );
    assert_eq!(
        parse_crash_env("driverd1:ff"),
        hook(LayerId::driver(1), false, &[0xff])
    );
    assert_eq!(
        parse_crash_env("udpd:hang:00ff"),
        hook(LayerId::UDPD, true, &[0, 0xff])
    );
    assert_eq!(
        parse_crash_env("tcpd:once:00ff"),
        Some(CrashHook {
            layer: LayerId::TCPD,
            hang: false,
            once: true,
            pattern: vec![0, 0xff],
        })
    );
    assert_eq!(parse_crash_env("ipd:5"), None);
    assert_eq!(parse_crash_env("ipd:zz"), None);
    assert_eq!(parse_crash_env("ipd:hang:"), None);
    assert_eq!(parse_crash_env("nosuch:00"), None);
    assert_eq!(parse_crash_env("ipd"), None);
}
