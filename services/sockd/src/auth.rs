//! Who may do what: the checks sockd makes of the process behind a
//! session, as Linux makes them of the caller of `bind`.

/// Linux's capability number for binding ports below the unprivileged
/// start.
const CAP_NET_BIND_SERVICE: u32 = 10;

/// The effective capability set in the text of `/proc/PID/status`
/// (`CapEff:` in hex), if it is there.
pub fn effective_caps(status: &str) -> Option<u64> {
    let v = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(v.trim(), 16).ok()
}

/// Whether a process of `uid` with effective capabilities `caps` may
/// bind low ports: root, or CAP_NET_BIND_SERVICE.
pub fn may_bind_low(uid: u32, caps: Option<u64>) -> bool {
    uid == 0 || caps.is_some_and(|c| c & (1 << CAP_NET_BIND_SERVICE) != 0)
}

/// Whether binding `port` is allowed with ports below `unprivileged_start`
/// reserved to processes that [`may_bind_low`]. Port 0 (any) always is.
pub fn may_bind(port: u16, unprivileged_start: u16, low_ok: bool) -> bool {
    port == 0 || port >= unprivileged_start || low_ok
}

/// A process's start time from the text of `/proc/PID/stat`: field 22,
/// `starttime`, in clock ticks since boot, low 32 bits (the command name
/// before it may hold spaces and parentheses, so fields count from the
/// last `)`).
pub fn start_time(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields from the third (state) on; starttime is the 22nd.
    let t: u64 = rest.split_whitespace().nth(22 - 3)?.parse().ok()?;
    Some(t as u32)
}

/// A process's parent from the text of `/proc/PID/stat` (field 4,
/// `ppid`; counted from the last `)` as in [`start_time`]).
pub fn parent(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(4 - 3)?.parse().ok()
}

/// Who a socket belongs to, and who asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub uid: u32,
    /// [`start_time`]; 0: unknown.
    pub start_time: u32,
}

/// Whether `asker` may re-attach a socket `owner` created: the same
/// process (pid and start time, so that a reused pid does not pass) of
/// the same user. A socket recorded without a start time (by an older
/// sockd) goes by pid and user.
pub fn may_reattach(owner: Owner, asker: Owner) -> bool {
    owner.pid == asker.pid
        && owner.uid == asker.uid
        && (owner.start_time == 0 || owner.start_time == asker.start_time)
}

/// Whether `asker`, whose ancestors (parent first) are `ancestors`, may
/// share a socket `owner` made: a process of the same user forked from
/// the owner (directly or not) inherited the socket's memory with it, as
/// a child inherits a kernel socket. Used after a restart of sockd, when
/// each process of a forking server re-attaches on its own session.
pub fn may_share(owner: Owner, asker: Owner, ancestors: &[Owner]) -> bool {
    owner.uid == asker.uid
        && ancestors.iter().any(|a| {
            a.pid == owner.pid && (owner.start_time == 0 || a.start_time == owner.start_time)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\n\
                          CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
                          CapEff:\t0000000000000400\nCapBnd:\t000001ffffffffff\n";

    #[test]
    fn the_effective_set_is_read_from_proc_status() {
        assert_eq!(effective_caps(STATUS), Some(0x400));
        assert_eq!(effective_caps("Name:\tx\n"), None);
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
    }

    #[test]
    fn low_ports_need_root_or_cap_net_bind_service() {
        assert!(may_bind_low(0, None));
        assert!(may_bind_low(1000, effective_caps(STATUS)));
        assert!(!may_bind_low(1000, Some(0x3ff)));
        assert!(!may_bind_low(1000, None));
    }

    #[test]
    fn only_ports_below_the_start_are_reserved() {
        assert!(may_bind(0, 1024, false), "any port");
        assert!(may_bind(1024, 1024, false));
        assert!(!may_bind(80, 1024, false));
        assert!(may_bind(80, 1024, true));
        assert!(may_bind(80, 0, false), "start 0: no reserved ports");
    }

    #[test]
    fn start_time_is_field_22_whatever_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1 2 0 0 20 0 1 0 987654321 12345678 300";
        assert_eq!(start_time(stat), Some(987_654_321));
        assert_eq!(start_time("4242 (x) S 1"), None);
        assert_eq!(start_time("no parenthesis"), None);
    }

    #[test]
    fn parent_is_field_4_whatever_the_command_name() {
        let stat = "4242 (a (weird) name) S 17 4242 4242 0 -1";
        assert_eq!(parent(stat), Some(17));
        assert_eq!(parent("4242 (x) S"), None);
    }

    #[test]
    fn only_a_descendant_of_the_owner_of_the_same_user_shares() {
        let owner = Owner {
            pid: 100,
            uid: 1000,
            start_time: 5000,
        };
        let child = Owner {
            pid: 200,
            uid: 1000,
            start_time: 6000,
        };
        let init = Owner {
            pid: 1,
            uid: 0,
            start_time: 1,
        };
        assert!(may_share(owner, child, &[owner, init]));
        let grandchild = Owner { pid: 300, ..child };
        assert!(may_share(owner, grandchild, &[child, owner, init]));
        // Another line, a reused pid, another user.
        assert!(!may_share(owner, child, &[init]));
        let reused = Owner {
            start_time: 9000,
            ..owner
        };
        assert!(!may_share(owner, child, &[reused, init]));
        assert!(!may_share(owner, Owner { uid: 0, ..child }, &[owner, init]));
    }

    #[test]
    fn a_reused_pid_or_another_user_cannot_reattach() {
        let owner = Owner {
            pid: 100,
            uid: 1000,
            start_time: 5000,
        };
        assert!(may_reattach(owner, owner));
        assert!(
            !may_reattach(
                owner,
                Owner {
                    start_time: 9000,
                    ..owner
                }
            ),
            "pid reused"
        );
        assert!(!may_reattach(owner, Owner { uid: 0, ..owner }));
        assert!(!may_reattach(owner, Owner { pid: 101, ..owner }));
        let old = Owner {
            start_time: 0,
            ..owner
        };
        assert!(may_reattach(old, owner), "recorded before start times");
    }
}
