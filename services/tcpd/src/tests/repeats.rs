//! Requests sockd sends again after a tcpd restart (or a late reply):
//! one that already took effect is answered as done, and a socket tcpd
//! forgot is restated as CLOSED, so that nothing sockd waits for hangs.

use super::*;
use strata_ipc::l4::ctl_flags;

fn repeat(h: &mut H, m: L4Ctl) -> Option<L4Ctl> {
    h.ctl(L4Ctl {
        flags: m.flags | ctl_flags::REPEAT,
        ..m
    })
}

#[test]
fn a_repeated_bind_listen_and_connect_answer_ok() {
    let mut h = H::new();
    h.listen(1, LPORT, 4);
    let bind = L4Ctl {
        op: op::BIND,
        sock: 1,
        local_addr: mapped(0),
        local_port: LPORT,
        ..L4Ctl::default()
    };
    assert_eq!(repeat(&mut h, bind).unwrap().op, op::OK);
    // Without the flag it is the application's second bind: refused.
    assert_eq!(h.ctl(bind).unwrap().op, op::ERROR);
    let listen = L4Ctl {
        op: op::LISTEN,
        sock: 1,
        value: 4,
        ..L4Ctl::default()
    };
    assert_eq!(repeat(&mut h, listen).unwrap().op, op::OK);

    let connect = L4Ctl {
        op: op::CONNECT,
        sock: 5,
        local_addr: mapped(0),
        remote_addr: mapped(u(PEER)),
        remote_port: 443,
        ..L4Ctl::default()
    };
    assert_eq!(h.ctl(connect).unwrap().op, op::OK);
    let syn = h.expect(SYN);
    // In progress: OK again, and no second SYN.
    assert_eq!(repeat(&mut h, connect).unwrap().op, op::OK);
    h.expect_none();
    let e = h.ctl(connect).unwrap();
    assert_eq!((e.op, e.errno), (op::ERROR, libc::EALREADY));
    h.lport = syn.tcp.src_port;
    h.pport = 443;
    h.peer_opts(SYN | ACK, PISS, syn.seq() + 1, &[], TcpOptions::default());
    h.expect(ACK);
    h.expect_up(op::CONNECTED);
    // Established: OK, not EISCONN.
    let r = repeat(&mut h, connect).unwrap();
    assert_eq!((r.op, r.remote_port), (op::OK, 443));
}

#[test]
fn a_repeated_close_and_a_resync_of_a_forgotten_socket_say_closed() {
    let mut h = H::new();
    let r = h.bind(3, 4000);
    assert_eq!(r.op, op::OK);
    h.req(op::CLOSE, 3, 0);
    h.expect_up(op::CLOSED);
    // Sent again after a restart that lost the first CLOSED.
    h.req(op::CLOSE, 3, 0);
    assert_eq!(h.expect_up(op::CLOSED).sock, 3);
    h.ctl(L4Ctl {
        op: op::READ_CREDIT,
        sock: 3,
        flags: ctl_flags::SYNC | ctl_flags::RESYNC,
        ..L4Ctl::default()
    });
    assert_eq!(h.expect_up(op::CLOSED).sock, 3);
    // A plain SYNC of an unknown socket stays unanswered.
    h.ctl(L4Ctl {
        op: op::READ_CREDIT,
        sock: 3,
        flags: ctl_flags::SYNC,
        ..L4Ctl::default()
    });
    h.no_ctl_up();
    h.finish();
}
