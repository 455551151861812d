//! Restart: a new core over the same storage carries on every connection
//! (queues, sequence numbers, timers); a block restore cannot trust is
//! reset alone. (Kills in the middle of an event: `crash.rs`.)

use super::*;
use crate::Stat;

fn o() -> TcpOptions {
    TcpOptions {
        mss: Some(1000),
        sack_permitted: true,
        ..TcpOptions::default()
    }
}

#[test]
fn connections_queues_and_timers_survive_a_restart() {
    // The RTO's deadline is what is checked, not a probe before it.
    let mut h = H::with(TcpConfig {
        tail_loss_probe: false,
        ..config()
    });
    h.listen(1, LPORT, 4);
    let iss = h.accept(2, o());
    // In flight: 3 segments unacknowledged.
    h.nodelay(2);
    h.send(2, &pattern(3000, 1));
    for _ in 0..3 {
        h.expect(ACK);
    }
    // Out of order: bytes 1000..2000 of the peer's stream.
    h.peer(ACK, PISS + 1001, iss + 1, &pattern(1000, 2)[..]);
    h.expect(ACK);
    // A second connection waiting in the accept queue, with data.
    h.pport = 40001;
    h.peer(SYN, PISS, 0, &[]);
    let sa = h.expect(SYN | ACK);
    h.peer(ACK, PISS + 1, sa.seq() + 1, b"queued");
    h.expect(ACK);
    let acc = h.expect_up(op::ACCEPTABLE);
    h.pport = PPORT;
    let before: Vec<_> = h.core.connections().collect();
    assert_eq!(before.len(), 3);

    h.advance(50);
    assert_eq!(h.restart(None), 3);
    h.expect_none();
    h.no_ctl_up();
    let after: Vec<_> = h.core.connections().collect();
    assert_eq!(before, after, "every block as it was");
    assert_eq!(h.core.stats().get(Stat::Restored), 3);

    // The retransmission timer still runs from where it was (200 ms
    // after sending; 50 ms have passed).
    h.advance(149);
    h.expect_none();
    h.advance(1);
    assert_eq!(h.expect(ACK).seq(), iss + 1);
    // The out-of-order queue is still there: the gap fills.
    h.peer(ACK, PISS + 1, iss + 3001, &pattern(1000, 3));
    assert_eq!(h.expect(ACK).ack(), PISS + 2001);
    let mut want = pattern(1000, 3);
    want.extend(pattern(1000, 2));
    assert_eq!(h.data_for(2), want);
    // The accept queue too.
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 3,
        value: acc.value,
        ..L4Ctl::default()
    });
    assert_eq!(h.data_for(3), b"queued");
    h.finish();
}

#[test]
fn a_block_marked_bad_is_reset_alone() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    let iss = h.accept(2, o());
    h.nodelay(2);
    h.send(2, &pattern(2000, 1));
    h.segs.clear();
    h.pport = 40001;
    h.peer(SYN, PISS, 0, &[]);
    let sa = h.expect(SYN | ACK);
    h.peer(ACK, PISS + 1, sa.seq() + 1, &[]);
    let acc = h.expect_up(op::ACCEPTABLE);
    h.ctl(L4Ctl {
        op: op::ATTACH,
        sock: 3,
        value: acc.value,
        ..L4Ctl::default()
    });
    h.pport = PPORT;
    let in_use = h.pool.in_use();
    assert_eq!(h.restart(Some(2)), 2);
    // Its peer gets a RST, sockd hears of it; its buffers are freed.
    let r = h.expect(RST | ACK);
    assert_eq!((r.seq(), r.tcp.dst_port), (iss + 2001, PPORT));
    assert_eq!(h.expect_up(op::SOCK_ERROR).errno, libc::ECONNRESET);
    assert_eq!(h.expect_up(op::CLOSED).sock, 2);
    assert!(h.pool.in_use() < in_use);
    assert_eq!(h.core.stats().get(Stat::RestoreReset), 1);
    // The other one carries on.
    h.pport = 40001;
    h.peer(ACK, PISS + 1, sa.seq() + 1, b"still here");
    assert_eq!(h.data_for(3), b"still here");
    h.pport = PPORT;
    h.finish();
}

#[test]
fn unlinked_entries_are_reclaimed_at_restore() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    let _iss = h.accept(2, o());
    h.nodelay(2);
    h.send(2, &pattern(500, 1));
    h.segs.clear();
    // A queue entry nobody links (as if a crash came between taking it
    // and linking it), holding a buffer.
    let placeholder = TcpCore::new(h.cfg.clone(), storage(1, 1)).unwrap();
    let old = std::mem::replace(&mut h.core, placeholder);
    let st = old.into_storage();
    let stray = h.pool.alloc(100).unwrap();
    let free = st.segs.iter().position(|e| e.owner == 0).unwrap();
    st.segs[free].owner = 1;
    st.segs[free].h = stray;
    let (core, kept) = TcpCore::restore(h.cfg.clone(), st, h.now, &mut h.pool, &mut h.out).unwrap();
    h.core = core;
    assert_eq!(kept, 2);
    assert_eq!(h.core.entries_in_use(), 1, "the send queue's entry only");
    h.finish();
}

#[test]
fn a_block_whose_state_is_garbage_is_reset_without_a_rst() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    h.accept(2, o());
    h.segs.clear();
    let placeholder = TcpCore::new(h.cfg.clone(), storage(1, 1)).unwrap();
    let old = std::mem::replace(&mut h.core, placeholder);
    let st = old.into_storage();
    let c = st
        .conns
        .iter_mut()
        .find(|c| c.in_use() && c.sock == 2)
        .unwrap();
    c.state = 99;
    assert_eq!(c.slot(), crate::Slot::Garbage(99));
    let (core, kept) = TcpCore::restore(h.cfg.clone(), st, h.now, &mut h.pool, &mut h.out).unwrap();
    h.core = core;
    h.collect();
    assert_eq!(kept, 1, "the listener");
    // Garbage names no peer to trust: sockd alone hears of it.
    h.expect_none();
    assert_eq!(h.expect_up(op::SOCK_ERROR).errno, libc::ECONNRESET);
    assert_eq!(h.expect_up(op::CLOSED).sock, 2);
    assert_eq!(h.core.stats().get(Stat::RestoreReset), 1);
    assert_eq!(h.core.connection_of(2), None);
    h.finish();
}

#[test]
fn a_restore_reads_no_block_past_the_last_one_ever_taken() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    h.accept(2, o());
    // Two blocks taken, the lowest first: a restore reads those two.
    let mut read = 0;
    h.restart_with(|st| {
        read = st.journal.blocks_to_read(st.conns.len());
        // Garbage past the mark stays unread (a restore that read it
        // would reset it and count that).
        st.conns[10].state = 0xdead;
    });
    assert_eq!(read, 2);
    assert_eq!(h.core.stats().get(Stat::RestoreReset), 0);
    assert_eq!(h.core.connections().count(), 2);
    // (Only tcpd writes its arena, so nothing past the mark is ever
    // anything but free; the garbage goes before the core scans on.)
    h.restart_with(|st| st.conns[10] = Default::default());
    // A third connection raises the mark.
    h.pport = 40001;
    h.peer(SYN, PISS, 0, &[]);
    h.expect(SYN | ACK);
    h.pport = PPORT;
    h.restart_with(|st| read = st.journal.blocks_to_read(st.conns.len()));
    assert_eq!(read, 3);
    assert_eq!(h.core.connections().count(), 3);
    h.finish();
}

#[test]
fn an_arena_without_a_high_water_mark_is_read_whole_and_then_gets_one() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    h.accept(2, o());
    // As an older tcpd leaves it: no mark, and garbage far out.
    let n = h.restart_with(|st| {
        st.journal.blocks_used = 0;
        st.conns[10].state = 0xdead;
    });
    assert_eq!(n, 2);
    // The garbage block was read, and reset.
    assert_eq!(h.core.stats().get(Stat::RestoreReset), 1);
    let mut read = 0;
    h.restart_with(|st| read = st.journal.blocks_to_read(st.conns.len()));
    assert_eq!(read, 2, "the mark, set by the full read");
    h.finish();
}
