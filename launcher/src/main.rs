//! `strata`: starts a stack instance and supervises its layers, and is the
//! command-line client of a running one.

mod capture;
mod config;
mod control;
mod cpu;
mod demo;
mod filter;
mod metrics;
mod netconf;
mod netstat;
mod plan;
mod qdisc;
mod supervisor;
mod top;
mod up;
mod upgrade;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// strata: a TCP/IP stack whose layers are supervised processes.
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    /// Instance to talk to (or to start, when the config does not name one).
    #[arg(
        long,
        short,
        global = true,
        env = "STRATA_INSTANCE",
        default_value = "default"
    )]
    instance: String,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a stack instance and supervise it until Ctrl-C or SIGTERM.
    Up {
        /// TOML configuration (interfaces, addresses, routes, limits).
        /// Without it: one TAP "strata0", stack 10.77.0.2/24, host side
        /// 10.77.0.1/24.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show each layer's pid, state, uptime, restarts, reclaimed buffers
    /// and quarantined inputs, ring occupancy and the packet pool.
    Status,
    /// Show per-layer and per-interface counters, drops by reason.
    Stats,
    /// List sockets (protocol, state, queues, addresses, owning process),
    /// like `ss -tuanp`, and TCP connections no socket owns any more
    /// (TIME-WAIT, closing, not yet accepted).
    Ss {
        /// Show TCP internals, like `ss --info`: congestion control, RTT
        /// and RTO, MSS, windows, receive buffer, queues. (No `-i`: that
        /// names the instance, as for every command.)
        #[arg(long)]
        info: bool,
    },
    /// SIGKILL one layer (fault injection); the launcher restarts it.
    Kill {
        /// driverdN, netdevd, filterd, ipd, tcpd, udpd or sockd.
        layer: String,
    },
    /// Replace a running layer with a new binary, losing no connection,
    /// socket, binding, rule or buffer: the running instance hands over
    /// at an event boundary and the new binary takes over its arena and
    /// rings. A binary that is another layer, maps another fabric layout
    /// or cannot read the layer's arena format is refused, and the
    /// running instance goes on.
    Upgrade {
        /// driverdN, netdevd, filterd, ipd, tcpd, udpd, sockd, or `all`
        /// (one after the other, in start order).
        layer: String,
        /// The new binary (for `all`: the directory holding them).
        /// Default: the path the layer runs from, rebuilt in place.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Inject network faults or limit the rate on an interface, at run
    /// time (netdevd applies them; they survive its restart).
    ///
    /// IFACE [ingress|egress|both] [loss P%] [duplicate P%] [reorder P%]
    /// [delay MS [jitter MS]] [rate RATE] [burst BYTES] [seed N], or
    /// IFACE [ingress|egress|both] clear, or [IFACE] show. Setting replaces
    /// the whole configuration of the direction (egress unless named).
    /// RATE: 100mbit, 1gbit, 500kbit...; times in ms unless given (2.5ms,
    /// 500us, 1s). Faults act per packet as the stack holds it: a TCP
    /// super-segment (up to 64 KiB, with offloads) is lost, duplicated
    /// or delayed whole, as netem does with a GSO packet.
    #[command(verbatim_doc_comment)]
    Qdisc {
        /// The interface (as in the configuration), or `show` for all.
        iface: String,
        /// What to set (see above).
        words: Vec<String>,
    },
    /// Packet filter and NAT rules, iptables style:
    ///   strata filter add|insert|del|list|flush|zero|policy|new-chain|delete-chain ...
    ///   (or -A -I -D -L -F -Z -P -N -X), `-t nat` for the nat table.
    /// Examples:
    ///   strata filter add INPUT -p tcp --dport 8080 -j REJECT --reject-with tcp-reset
    ///   strata filter add INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT
    ///   strata filter policy INPUT DROP
    ///   strata filter -t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080
    ///   strata filter -t nat -A POSTROUTING -o strata1 -j MASQUERADE
    ///   strata filter list [CHAIN]
    /// IPv6 rules are separate, as ip6tables' are: `-6` anywhere in the
    /// command (same chains and policies, IPv6 addresses, -p icmpv6 with
    /// --icmpv6-type, REJECT --reject-with icmp6-port-unreachable (default),
    /// icmp6-adm-prohibited, icmp6-addr-unreachable, icmp6-no-route or
    /// tcp-reset), and a nat table of their own, `-6 -t nat`, whose
    /// addresses are IPv6 ones, in brackets before a port:
    ///   strata filter -6 -t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination [fd00::2]:8080
    ///   strata filter -6 -t nat -A POSTROUTING -o strata1 -j MASQUERADE
    /// Neighbour discovery and MLD are ICMPv6
    /// that conntrack leaves untracked: with an IPv6 INPUT DROP policy they
    /// pass only if a rule accepts them, so a stateful IPv6 set needs e.g.
    ///   strata filter -6 add INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT
    ///   strata filter -6 add INPUT -p icmpv6 -j ACCEPT
    ///   strata filter -6 policy INPUT DROP
    ///   strata filter -6 list
    /// Every change replaces the whole rule set at once.
    #[command(verbatim_doc_comment)]
    Filter {
        /// The command and rule (see above).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        words: Vec<String>,
    },
    /// Connection tracking: `list` the entries, IPv4 and IPv6 (as
    /// conntrack -L), or `flush` them.
    Conntrack {
        /// list or flush.
        #[arg(default_value = "list")]
        action: String,
    },
    /// The counters in the OpenMetrics text format Prometheus scrapes:
    /// printed once, or served over HTTP with `--listen` (on the host's
    /// own network; `curl http://ADDR/metrics`). Standard counters under
    /// their Linux names (strata_netstat_TcpActiveOpens_total...), every
    /// layer's and interface's counters, rings, pool, restarts and
    /// recovery times.
    Metrics {
        /// Serve on this address and port until killed (e.g.
        /// 127.0.0.1:9477) instead of printing once.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Capture packets at a point of the stack as pcapng (or pcap) for
    /// tcpdump and Wireshark: `strata capture -w - | tcpdump -r -`.
    /// The point is the wire side of an interface (default) or the rings
    /// into or out of a layer (`--at filterd-in`, `--at ipd-out`; driverd,
    /// netdevd, filterd and ipd). The filter is a tcpdump expression:
    /// host, net, port, src, dst, ip, ip6, tcp, udp, icmp, icmp6, arp,
    /// and, or, not, parentheses (host and net take IPv4 addresses). A capture that falls behind loses packets from the
    /// capture (counted at the end), never from the stack. Ctrl-C ends it.
    Capture {
        /// The interface (as in the configuration; default: the first).
        #[arg(short = 'i', long = "interface")]
        iface: Option<String>,
        /// Where to capture: wire, or LAYER-in / LAYER-out; repeatable.
        #[arg(long)]
        at: Vec<String>,
        /// The file to write, `-` for stdout (not a terminal).
        #[arg(short = 'w', long, default_value = "-")]
        write: String,
        /// Stop after this many packets.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Bytes kept of each packet (super-frames are up to 64 KiB).
        #[arg(short = 's', long, default_value_t = strata_ipc::capture::MAX_SNAPLEN)]
        snaplen: u32,
        /// pcapng (default: one interface per ring captured) or pcap.
        #[arg(long, default_value = "pcapng")]
        format: String,
        /// Write each TCP super-segment as the MTU-sized segments it
        /// leaves or entered the stack as (default: whole, as held).
        #[arg(long)]
        segment: bool,
        /// The filter expression.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        expr: Vec<String>,
    },
    /// A live view, refreshed every interval: per interface packets and
    /// bits per second; per layer state, CPU, handles in and out per
    /// second, wake-ups per second, packets per wake-up and restarts;
    /// ring occupancy and pool use. q (or Esc) quits. `--once` prints one
    /// view after one interval (`--json` for scripts).
    Top {
        /// Print one view and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes (and the span of the rates).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// The stack's addresses, like `ip addr`: `show [dev IFACE]`,
    /// `add ADDR/N dev IFACE`, `del ADDR[/N] dev IFACE` with an IPv4 or
    /// IPv6 ADDR (`dev` may be left out when there is one interface). Takes
    /// effect at once and is kept across any layer's restart; a new IPv6
    /// address is used once duplicate address detection passes.
    Addr {
        /// show (default), add or del, then its arguments.
        words: Vec<String>,
    },
    /// Routes of both families, like `ip route`: `show` the connected,
    /// added and learnt ones, `add DEST [via GATEWAY] [dev IFACE]`, `del
    /// DEST` (DEST: default, A.B.C.D/N or A.B.C.D for IPv4; ::/0, X:X::X/N
    /// or X:X::X for IPv6; a link-local GATEWAY needs dev). Takes effect at
    /// once and is kept across any layer's restart.
    Route {
        /// show (default), add or del, then its arguments.
        words: Vec<String>,
    },
    /// The neighbour (ARP) cache, like `ip neigh`: `show` it; `add
    /// A.B.C.D lladdr MAC dev IFACE` a permanent entry (never aged,
    /// probed, relearnt or flushed); `del A.B.C.D dev IFACE` an entry;
    /// `flush` every learnt one (the stack then resolves them anew).
    Neigh {
        /// show (default), add, del or flush, then its arguments.
        words: Vec<String>,
    },
    /// Interfaces, like `ip link`: `show` them (index, name, state, MTU,
    /// MAC), `set IFACE up|down` (down: the stack takes in and sends out
    /// nothing on it) or `set IFACE mtu N` (68..=9000). Kept across any
    /// layer's restart.
    Link {
        /// show (default) or set, then its arguments.
        words: Vec<String>,
    },
    /// Stop a running instance.
    Down,
    /// Build a private network namespace with a TAP device, start the stack
    /// in it, ping it, kill a layer, show it coming back, and clean up.
    Demo,
}

/// `strata addr|route|neigh|link WORDS`: the launcher answers with what
/// to print (`text`), or the data itself with `--json`.
fn ip_style(instance: &str, cmd: &str, words: Vec<String>, as_json: bool) -> Result<(), String> {
    let mut v = control::request(instance, json!({"cmd": cmd, "words": words}))?;
    let text = v
        .as_object_mut()
        .and_then(|o| o.remove("text"))
        .unwrap_or_default();
    if as_json {
        println!("{v}");
    } else {
        print!("{}", text.as_str().unwrap_or_default());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command that prints and ends stops quietly when its reader goes
    // (`strata ss | head`), as other tools do: Rust ignores SIGPIPE, and
    // the next print panicked. Not so for those that serve others (the
    // launcher, the metrics server), draw a screen, or say themselves
    // what a reader gone cost (a capture reports what it lost).
    let serves = matches!(
        cli.cmd,
        Cmd::Up { .. }
            | Cmd::Metrics { listen: Some(_) }
            | Cmd::Demo
            | Cmd::Top { .. }
            | Cmd::Capture { .. }
    );
    if !serves {
        use nix::sys::signal::{signal, SigHandler, Signal};
        // SAFETY: the default action installs no handler of ours, and no
        // other thread is running yet.
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    }
    let res = match cli.cmd {
        Cmd::Up { config } => up::run(config.as_deref(), &cli.instance),
        Cmd::Status => query(&cli.instance, "status", cli.json, print_status),
        Cmd::Stats => query(&cli.instance, "stats", cli.json, print_stats),
        Cmd::Ss { info } => query(&cli.instance, "ss", cli.json, |v| print_ss(v, info)),
        Cmd::Kill { layer } => {
            control::request(&cli.instance, json!({"cmd": "kill", "layer": layer})).map(|v| {
                if cli.json {
                    println!("{v}");
                } else {
                    println!(
                        "killed {} (pid {})",
                        v["layer"].as_str().unwrap_or("?"),
                        v["pid"]
                    );
                }
            })
        }
        Cmd::Upgrade { layer, binary } => upgrade_cmd(&cli.instance, &layer, binary, cli.json),
        Cmd::Qdisc { iface, words } => return qdisc_cmd(&cli.instance, &iface, &words, cli.json),
        Cmd::Filter { words } => {
            control::request(&cli.instance, json!({"cmd": "filter", "words": words})).map(|v| {
                if cli.json {
                    println!("{v}");
                } else if let Some(t) = v["text"].as_str() {
                    print!("{t}");
                }
            })
        }
        Cmd::Conntrack { action } => {
            control::request(&cli.instance, json!({"cmd": "conntrack", "action": action})).map(
                |v| {
                    if cli.json {
                        println!("{v}");
                    } else {
                        for e in v["entries"].as_array().into_iter().flatten() {
                            println!("{}", e.as_str().unwrap_or_default());
                        }
                    }
                },
            )
        }
        Cmd::Metrics { listen: None } => metrics::scrape(&cli.instance).map(|t| print!("{t}")),
        Cmd::Metrics { listen: Some(addr) } => metrics::serve(&cli.instance, &addr),
        Cmd::Capture {
            iface,
            at,
            write,
            count,
            snaplen,
            format,
            segment,
            expr,
        } => match format.as_str() {
            "pcapng" | "pcap" => capture::run(
                &cli.instance,
                &capture::Args {
                    iface,
                    at,
                    write,
                    count,
                    snaplen,
                    pcap: format == "pcap",
                    segment,
                    expr,
                },
            ),
            f => Err(format!("capture: --format {f}: pcapng or pcap")),
        },
        Cmd::Top { once, interval } => match std::time::Duration::try_from_secs_f64(interval) {
            Ok(d) if d >= std::time::Duration::from_millis(100) => {
                top::run(&cli.instance, once, cli.json, d)
            }
            _ => Err(format!(
                "top: --interval {interval}: at least 0.1 (seconds)"
            )),
        },
        Cmd::Addr { words } => ip_style(&cli.instance, "addr", words, cli.json),
        Cmd::Route { words } => ip_style(&cli.instance, "route", words, cli.json),
        Cmd::Neigh { words } => ip_style(&cli.instance, "neigh", words, cli.json),
        Cmd::Link { words } => ip_style(&cli.instance, "link", words, cli.json),
        Cmd::Down => control::request(&cli.instance, json!({"cmd": "stop"})).map(|_| ()),
        Cmd::Demo => demo::run(),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `strata qdisc`: errors are reported as `strata qdisc: ...`, naming the
/// word at fault.
fn qdisc_cmd(instance: &str, iface: &str, words: &[String], as_json: bool) -> ExitCode {
    let res = (|| {
        let (iface, cmd) = if iface.eq_ignore_ascii_case("show") && words.is_empty() {
            (None, qdisc::QdiscCmd::Show)
        } else {
            (Some(iface), qdisc::parse(words)?)
        };
        let v = control::request(instance, qdisc::request(iface, &cmd))?;
        if as_json {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            qdisc::print(&v);
        }
        Ok::<(), String>(())
    })();
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata qdisc: {}", e.strip_prefix("qdisc: ").unwrap_or(&e));
            ExitCode::FAILURE
        }
    }
}

/// `strata upgrade`: one request per layer, each answered once the new
/// instance serves.
fn upgrade_cmd(
    instance: &str,
    layer: &str,
    binary: Option<PathBuf>,
    as_json: bool,
) -> Result<(), String> {
    let binary = binary
        .map(|b| std::fs::canonicalize(&b).map_err(|e| format!("{}: {e}", b.display())))
        .transpose()?;
    let layers: Vec<String> = if layer == "all" {
        if binary.as_ref().is_some_and(|b| !b.is_dir()) {
            return Err("with `all`, --binary names the directory of the layer binaries".into());
        }
        let st = control::request(instance, json!({"cmd": "status"}))?;
        st["layers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["layer"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![layer.to_string()]
    };
    for name in layers {
        let path = match (&binary, layer == "all") {
            (Some(dir), true) => {
                let id = strata_ipc::LayerId::from_label(&name).ok_or("unknown layer")?;
                Some(dir.join(id.name()))
            }
            (b, _) => b.clone(),
        };
        let mut req = json!({"cmd": "upgrade", "layer": name});
        if let Some(p) = path {
            req["binary"] = json!(p.display().to_string());
        }
        // The launcher answers once the new instance serves, or says why
        // not within its own bounds (probe, grace, start-up).
        let v = control::request_waiting(instance, req, std::time::Duration::from_secs(30))
            .map_err(|e| format!("{name}: {e}"))?;
        if as_json {
            println!("{v}");
        } else {
            println!(
                "upgraded {} (pid {} -> {}, arena format {} -> {}): handed over in {:.1} ms, \
                 then serving again in {:.1} ms",
                s(&v["layer"]),
                s(&v["pid_before"]),
                s(&v["pid"]),
                s(&v["arena_format_before"]),
                s(&v["arena_format"]),
                v["handover_ms"].as_f64().unwrap_or(0.0),
                v["pause_ms"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

fn query(instance: &str, cmd: &str, as_json: bool, show: impl Fn(&Value)) -> Result<(), String> {
    let v = control::request(instance, json!({ "cmd": cmd }))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        show(&v);
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

fn print_status(v: &Value) {
    println!(
        "instance {}  launcher pid {}  up {:.0}s",
        s(&v["instance"]),
        s(&v["launcher_pid"]),
        v["uptime_s"].as_f64().unwrap_or(0.0)
    );
    for i in v["interfaces"].as_array().into_iter().flatten() {
        println!("interface {}: {}", s(&i["name"]), s(&i["device"]));
    }
    let c = &v["bytes_per_tcp_connection"];
    println!(
        "an idle TCP connection: {} bytes (tcpd block {}, socket table row {}, sockd record {}, conntrack entry {}), its data rings aside",
        s(&c["total"]),
        s(&c["tcpd_block"]),
        s(&c["socket_table_row"]),
        s(&c["sockd_record"]),
        s(&c["conntrack_entry"])
    );
    println!();
    println!(
        "{:<10} {:>8} {:<9} {:>9} {:>5} {:>8} {:>9} {:>11} {:>9}  last exit",
        "LAYER",
        "PID",
        "STATE",
        "UPTIME",
        "CPUS",
        "RESTARTS",
        "RECLAIMED",
        "QUARANTINED",
        "RECOVERY"
    );
    for l in v["layers"].as_array().into_iter().flatten() {
        // The last restart: from the death to the new instance serving.
        let recovery = l["last_recovery_ms"]["total"]
            .as_f64()
            .map_or_else(|| "-".to_string(), |ms| format!("{ms:.1}ms"));
        println!(
            "{:<10} {:>8} {:<9} {:>8.1}s {:>5} {:>8} {:>9} {:>11} {:>9}  {}",
            s(&l["layer"]),
            s(&l["pid"]),
            control::shown_state(l),
            l["uptime_s"].as_f64().unwrap_or(0.0),
            l["cpus"].as_str().unwrap_or("any"),
            s(&l["restarts"]),
            s(&l["reclaimed_buffers"]),
            s(&l["quarantined_inputs"]),
            recovery,
            s(&l["last_exit"])
        );
    }
    println!();
    let quarantine = v["quarantine"].as_array().map_or(&[][..], |a| a.as_slice());
    if !quarantine.is_empty() {
        println!(
            "{:<10} {:>7} {:<16} {:>9}",
            "QUARANTINE", "BYTES", "HASH", "DROPPED"
        );
        for q in quarantine {
            println!(
                "{:<10} {:>7} {:<16} {:>9}",
                s(&q["layer"]),
                s(&q["len"]),
                s(&q["hash"]),
                s(&q["dropped"])
            );
        }
        println!();
    }
    println!("{:<22} {:>6} {:>6}  TAKEN BY", "RING", "USED", "SIZE");
    for r in v["rings"].as_array().into_iter().flatten() {
        // Who takes from it, when not its consumer (which stands aside).
        let by = if r["taken_by"] != r["to"] {
            s(&r["taken_by"])
        } else {
            String::new()
        };
        println!(
            "{:<22} {:>6} {:>6}  {}",
            format!("{} -> {}", s(&r["from"]), s(&r["to"])),
            s(&r["len"]),
            s(&r["size"]),
            by
        );
    }
    println!();
    print_pool(&v["pool"]);
}

fn print_pool(p: &Value) {
    println!(
        "pool: small {}/{} free, large {}/{} free, {} in use{}, {} kept in arenas; refused: {} stale, {} double frees",
        s(&p["small_free"]),
        s(&p["small_total"]),
        s(&p["large_free"]),
        s(&p["large_total"]),
        s(&p["in_use"]),
        p["in_use_by_owner"]
            .as_object()
            .filter(|m| !m.is_empty())
            .map(|m| format!(
                " ({})",
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .unwrap_or_default(),
        s(&p["pinned"]),
        s(&p["stale_refused"]),
        s(&p["double_free_refused"]),
    );
}

fn print_counters(m: &Value) {
    let Some(m) = m.as_object() else { return };
    let nonzero: Vec<_> = m.iter().filter(|(_, v)| v.as_u64() != Some(0)).collect();
    if nonzero.is_empty() {
        println!("    (all zero)");
    }
    for (k, v) in nonzero {
        println!("    {k:<28} {v}");
    }
}

fn print_ss(v: &Value, info: bool) {
    println!(
        "{:<6} {:<10} {:>7} {:>7} {:<22} {:<22} Process",
        "Netid", "State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port"
    );
    for x in v["sockets"].as_array().into_iter().flatten() {
        let tcp = &x["tcp"];
        // tcpd's state is the precise one for TCP (FIN-WAIT-2, TIME-WAIT...).
        let state = if tcp.is_object() {
            &tcp["state"]
        } else {
            &x["state"]
        };
        let users = if x["pid"].as_u64().unwrap_or(0) == 0 {
            String::new()
        } else {
            format!("users:((\"{}\",pid={}))", s(&x["process"]), s(&x["pid"]))
        };
        println!(
            "{:<6} {:<10} {:>7} {:>7} {:<22} {:<22} {users}",
            s(&x["proto"]),
            s(state),
            s(&x["recv_q"]),
            s(&x["send_q"]),
            s(&x["local"]),
            s(&x["peer"]),
        );
        if info && tcp.is_object() && tcp["state"] != "LISTEN" && tcp["state"] != "CLOSED" {
            let ms = |v: &Value| v.as_f64().unwrap_or(0.0) / 1000.0;
            println!(
                "\t {} rto:{:.0} rtt:{:.3} mss:{} cwnd:{} ssthresh:{} unacked:{} snd_wnd:{} rcv_wnd:{} rcvbuf:{} ooo:{}",
                s(&tcp["cc"]),
                ms(&tcp["rto_us"]),
                ms(&tcp["srtt_us"]),
                s(&tcp["mss"]),
                s(&tcp["cwnd"]),
                s(&tcp["ssthresh"]),
                s(&tcp["unacked"]),
                s(&tcp["snd_wnd"]),
                s(&tcp["rcv_wnd"]),
                s(&tcp["rcvbuf"]),
                s(&tcp["ooo_q"]),
            );
        }
    }
}

fn print_stats(v: &Value) {
    for i in v["interfaces"].as_array().into_iter().flatten() {
        println!("interface {} ({})", s(&i["name"]), s(&i["index"]));
        print_counters(&i["counters"]);
    }
    if let Some(layers) = v["layers"].as_object() {
        for (name, c) in layers {
            println!("{name}");
            print_counters(c);
        }
    }
    // In the standard's order, not sorted as the map would be.
    if let Some(layers) = v["layers"].as_object() {
        println!("standard counters (Linux names, as nstat shows them)");
        for (name, n) in netstat::from_layers(layers) {
            println!("    {name:<28} {n}");
        }
    }
    print_pool(&v["pool"]);
}
