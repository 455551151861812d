//! The standard counters under the names Linux gives them in
//! `/proc/net/snmp` and `/proc/net/netstat` (as `nstat` prints them:
//! protocol and name run together, `IpInReceives`), each the sum of
//! strata counters of one layer. `strata stats` shows them beside the
//! layers' own; `strata metrics` exports them.

use serde_json::{Map, Value};

/// One standard counter: its nstat name, the layer that counts it and
/// the counters of that layer it adds up.
pub struct Standard {
    pub name: &'static str,
    pub layer: &'static str,
    pub sum: &'static [&'static str],
}

const fn std(name: &'static str, layer: &'static str, sum: &'static [&'static str]) -> Standard {
    Standard { name, layer, sum }
}

/// The standard counters, in `/proc/net/snmp` order within each protocol.
pub const STANDARD: &[Standard] = &[
    std("IpInReceives", "ipd", &["rx_ipv4"]),
    std(
        "IpInHdrErrors",
        "ipd",
        &[
            "ipv4_truncated",
            "ipv4_bad_version",
            "ipv4_bad_header_len",
            "ipv4_bad_total_len",
            "ipv4_total_len_exceeds_frame",
            "ipv4_bad_checksum",
            "ipv4_bad_options",
            "fwd_ttl_exceeded",
        ],
    ),
    std("IpInAddrErrors", "ipd", &["not_for_us", "fwd_martian_dest"]),
    std("IpForwDatagrams", "ipd", &["forwarded"]),
    std("IpInUnknownProtos", "ipd", &["unknown_protocol"]),
    std("IpInDelivers", "ipd", &["delivered"]),
    std("IpOutRequests", "ipd", &["out_requests"]),
    std("IpOutNoRoutes", "ipd", &["no_route", "fwd_no_route"]),
    std("IpReasmReqds", "ipd", &["frag_received"]),
    std("IpReasmOKs", "ipd", &["frag_reassembled"]),
    std(
        "IpReasmFails",
        "ipd",
        &[
            "frag_timeout",
            "frag_mem_limit",
            "frag_table_full",
            "frag_too_big",
            "frag_bad_length",
            "frag_inconsistent",
            "frag_too_many_holes",
            "frag_overlap",
        ],
    ),
    std("IpFragOKs", "ipd", &["frag_out_datagrams"]),
    std("IpFragFails", "ipd", &["df_too_big", "fwd_frag_needed"]),
    std("IpFragCreates", "ipd", &["frag_out_created"]),
    std("IcmpInMsgs", "ipd", &["icmp_in_msgs"]),
    std(
        "IcmpInErrors",
        "ipd",
        &["icmp_truncated", "icmp_bad_checksum"],
    ),
    std("IcmpInCsumErrors", "ipd", &["icmp_bad_checksum"]),
    std("IcmpInDestUnreachs", "ipd", &["icmp_in_dest_unreach"]),
    std("IcmpInTimeExcds", "ipd", &["icmp_in_time_exceeded"]),
    std("IcmpInEchos", "ipd", &["icmp_in_echo_requests"]),
    std("IcmpInEchoReps", "ipd", &["icmp_in_echo_replies"]),
    std(
        "IcmpOutMsgs",
        "ipd",
        &[
            "icmp_out_echo_replies",
            "icmp_out_dest_unreach",
            "icmp_out_time_exceeded",
            "icmp_out_other_errors",
        ],
    ),
    std("IcmpOutDestUnreachs", "ipd", &["icmp_out_dest_unreach"]),
    std("IcmpOutTimeExcds", "ipd", &["icmp_out_time_exceeded"]),
    std("IcmpOutEchoReps", "ipd", &["icmp_out_echo_replies"]),
    std("TcpActiveOpens", "tcpd", &["active_opens"]),
    std("TcpPassiveOpens", "tcpd", &["passive_opens"]),
    std(
        "TcpAttemptFails",
        "tcpd",
        &["conn_refused", "icmp_reported"],
    ),
    std("TcpEstabResets", "tcpd", &["reset_by_peer", "aborted"]),
    std("TcpInSegs", "tcpd", &["in_segs"]),
    std("TcpOutSegs", "tcpd", &["out_segs"]),
    std("TcpRetransSegs", "tcpd", &["retrans_segs"]),
    std(
        "TcpInErrs",
        "tcpd",
        &["bad_checksum", "tcp_truncated", "tcp_bad_options"],
    ),
    std("TcpOutRsts", "tcpd", &["out_rsts"]),
    std("TcpInCsumErrors", "tcpd", &["bad_checksum"]),
    std("UdpInDatagrams", "udpd", &["delivered"]),
    std("UdpNoPorts", "udpd", &["no_port"]),
    std(
        "UdpInErrors",
        "udpd",
        &[
            "udp_bad_checksum",
            "udp_truncated",
            "udp_bad_length",
            "udp_length_exceeds_packet",
            "sock_ring_full",
        ],
    ),
    std("UdpOutDatagrams", "udpd", &["out_datagrams"]),
    std("UdpRcvbufErrors", "udpd", &["sock_ring_full"]),
    std("UdpInCsumErrors", "udpd", &["udp_bad_checksum"]),
    std("UdpIgnoredMulti", "udpd", &["no_port_broadcast"]),
    std("TcpExtSyncookiesSent", "tcpd", &["syn_cookies_sent"]),
    std("TcpExtSyncookiesRecv", "tcpd", &["syn_cookies_ok"]),
    std("TcpExtSyncookiesFailed", "tcpd", &["syn_cookies_bad"]),
    std("TcpExtPAWSEstab", "tcpd", &["paws_rejected"]),
    std("TcpExtDelayedACKs", "tcpd", &["delayed_acks"]),
    std("TcpExtListenOverflows", "tcpd", &["listen_overflows"]),
    std("TcpExtListenDrops", "tcpd", &["listen_drops"]),
    std("TcpExtTCPSACKRecovery", "tcpd", &["sack_recoveries"]),
    std("TcpExtTCPFastRetrans", "tcpd", &["fast_retrans"]),
    std("TcpExtTCPTimeouts", "tcpd", &["rto_expired"]),
    std("TcpExtTCPLossProbes", "tcpd", &["tlp_probes"]),
    std("TcpExtTCPOFOQueue", "tcpd", &["ooo_segs"]),
    std("TcpExtTCPOFODrop", "tcpd", &["ooo_dropped"]),
    std(
        "TcpExtTCPChallengeACK",
        "tcpd",
        &["rst_challenged", "syn_challenged"],
    ),
    std("TcpExtTCPWinProbe", "tcpd", &["window_probes"]),
    std("TcpExtTCPKeepAlive", "tcpd", &["keepalive_probes"]),
];

/// The standard counters from the layers' counters (`strata stats`'
/// `layers` object), in [`STANDARD`] order. A counter a layer does not
/// publish (a layer not running yet) counts as 0.
pub fn from_layers(layers: &Map<String, Value>) -> Vec<(&'static str, u64)> {
    STANDARD
        .iter()
        .map(|s| {
            let c = &layers.get(s.layer);
            let v = s
                .sum
                .iter()
                .map(|k| {
                    c.and_then(|c| c.get(*k))
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                })
                .fold(0u64, u64::wrapping_add);
            (s.name, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_unique_and_sums_add_up() {
        let mut names: Vec<_> = STANDARD.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), STANDARD.len());
        let layers = json!({
            "ipd": {"icmp_in_echo_requests": 100, "no_route": 2, "fwd_no_route": 3},
            "tcpd": {"active_opens": 7},
        });
        let got = from_layers(layers.as_object().unwrap());
        let get = |n: &str| got.iter().find(|(k, _)| *k == n).unwrap().1;
        assert_eq!(get("IcmpInEchos"), 100);
        assert_eq!(get("IpOutNoRoutes"), 5);
        assert_eq!(get("TcpActiveOpens"), 7);
        assert_eq!(get("UdpInDatagrams"), 0, "udpd absent");
    }

    #[test]
    fn every_term_is_a_counter_its_layer_publishes() {
        let names = |layer: &str| -> Vec<&'static str> {
            match layer {
                "ipd" => strata_ipd::Stat::ALL.iter().map(|s| s.name()).collect(),
                "tcpd" => strata_tcpd::Stat::ALL.iter().map(|s| s.name()).collect(),
                "udpd" => strata_udpd::Stat::ALL.iter().map(|s| s.name()).collect(),
                other => panic!("no counters known for {other}"),
            }
        };
        for s in STANDARD {
            let have = names(s.layer);
            for term in s.sum {
                assert!(have.contains(term), "{}: {} has no {term}", s.name, s.layer);
            }
        }
    }
}
