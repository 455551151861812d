//! The launcher's side of filterd: it owns the rule tables (from the
//! configuration file, then `strata filter` commands), checks every
//! change by compiling the whole set before anything is published, and
//! publishes it through filterd's arena, where filterd picks it up
//! between packets. `strata conntrack` reads or flushes the table filterd
//! keeps in the same arena.
//!
//! IPv6 rules (`strata filter -6 ...`, or `-6` in a configuration line)
//! go to their own tables, `filter6` and `nat6` in the published JSON,
//! which IPv6 packets meet as ip6tables' filter and nat tables
//! (`-6 -t nat`, NAT addresses written `ADDR` or `[ADDR]:PORT`).
//! Conntrack entries of both families are listed alike.

use serde_json::{json, Value};

use strata_filterd::conntrack::Conntrack;
use strata_filterd::rule::{parse_command, Command};
use strata_filterd::shm::Shm;
use strata_filterd::tables::Tables;
use strata_ipc::{now_ns, Fabric, LayerId};

/// The rules in force and the arena they are published in.
pub struct FilterState {
    tables: Tables,
    shm: Shm,
}

/// Splits a configuration line into words, honouring double quotes (for
/// `--log-prefix "a b"`).
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if any {
        words.push(cur);
    }
    Ok(words)
}

impl FilterState {
    /// The state over `fabric`'s filterd arena, with the configuration's
    /// rule lines applied in order and published once. Errors name the
    /// line and the word at fault. Lines are checked as `strata filter`
    /// checks a command, but a rule that can be checked alone
    /// ([`Tables::apply_all`]) does not cost a check of every rule
    /// before it: start-up takes time linear in the rules.
    pub fn new(fabric: &Fabric, lines: &[String]) -> Result<FilterState, String> {
        let (p, n) = fabric.arena_bytes(LayerId::FILTERD);
        // SAFETY: the launcher keeps the fabric mapped while it runs.
        let shm = unsafe { Shm::new(p, n) }
            .ok_or_else(|| format!("filterd's arena ({n} bytes) is too small"))?;
        let mut cmds = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let words = split_words(line).map_err(|e| format!("filter rule {}: {e}", i + 1))?;
            let w: Vec<&str> = words.iter().map(String::as_str).collect();
            let cmd =
                parse_command(&w).map_err(|e| format!("filter rule {} ({line:?}): {e}", i + 1))?;
            cmds.push(cmd);
        }
        let mut tables = Tables::default();
        let out = tables
            .apply_all(&cmds)
            .map_err(|(i, e)| format!("filter rule {} ({:?}): {e}", i + 1, lines[i]))?;
        shm.reset_counters(&out.reset_slots);
        let st = FilterState { tables, shm };
        st.publish(&st.tables)
            .map_err(|e| format!("the configured filter rules: {e}"))?;
        Ok(st)
    }

    /// Publishes `tables` as the rule set filterd runs.
    fn publish(&self, tables: &Tables) -> Result<(), String> {
        let json = serde_json::to_vec(tables).map_err(|e| e.to_string())?;
        self.shm.publish(&json)
    }

    /// `strata filter WORDS...`: a listing, or a change published as one
    /// new rule set (filterd swaps whole sets between packets), which is
    /// in force for every packet after this returns: filterd has loaded
    /// it and, if it stood aside, is back in the path. A change that
    /// cannot be published (a set too large) changes nothing.
    pub fn command(&mut self, fabric: &Fabric, words: &[String]) -> Result<Value, String> {
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        let cmd = parse_command(&w).map_err(|e| e.to_string())?;
        if let Command::List { table, chain } = cmd {
            let text = self
                .tables
                .list(table, chain.as_deref(), self.shm.counters())?;
            return Ok(json!({ "text": text }));
        }
        let mut next = self.tables.clone();
        let out = next.apply(&cmd)?;
        // Before the set that counts into them is published.
        self.shm.reset_counters(&out.reset_slots);
        self.publish(&next)?;
        self.tables = next;
        let gen = self.shm.generation();
        crate::control::wait_for_layer(fabric, LayerId::FILTERD, || self.shm.in_force() >= gen)
            .map_err(|e| {
                format!("rule set {gen} published, but {e}: it takes effect once filterd runs")
            })?;
        Ok(json!({ "generation": gen }))
    }

    /// `strata conntrack list`: the table as filterd left it, read from a
    /// copy of its arena so that filterd is neither stopped nor disturbed.
    pub fn conntrack_list(&self) -> Result<Value, String> {
        let (p, n) = self.shm.conntrack_region();
        // A 64-byte aligned copy: the table's layout wants 8.
        #[repr(C, align(64))]
        #[derive(Clone, Copy)]
        struct Line([u8; 64]);
        let mut copy = vec![Line([0; 64]); n / 64];
        // SAFETY: `p..p+n` is filterd's mapped arena; entries being
        // written while copied are caught by their sequence numbers when
        // the copy is restored.
        unsafe { std::ptr::copy_nonoverlapping(p, copy.as_mut_ptr() as *mut u8, n / 64 * 64) };
        let now = now_ns() / 1_000_000;
        // SAFETY: the copy is ours.
        let (ct, fresh) =
            unsafe { Conntrack::from_raw(copy.as_mut_ptr() as *mut u8, n / 64 * 64, [0; 2], now) }
                .ok_or("no conntrack table")?;
        let entries: Vec<String> = if fresh {
            Vec::new()
        } else {
            ct.list(now).iter().map(|e| e.to_string()).collect()
        };
        Ok(json!({ "entries": entries, "capacity": ct.capacity() }))
    }

    /// `strata conntrack flush`: filterd empties its table; waits until
    /// it has (it must be running).
    pub fn conntrack_flush(&self, fabric: &Fabric) -> Result<Value, String> {
        let req = self.shm.request_flush();
        crate::control::wait_for_layer(fabric, LayerId::FILTERD, || self.shm.flushed(req))?;
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_blanks_and_keep_quoted_ones() {
        assert_eq!(
            split_words(r#" -A INPUT -j LOG --log-prefix "in: "  "#).unwrap(),
            ["-A", "INPUT", "-j", "LOG", "--log-prefix", "in: "]
        );
        assert_eq!(
            split_words(r#"-j LOG --log-prefix """#).unwrap(),
            ["-j", "LOG", "--log-prefix", ""]
        );
        assert!(split_words(r#"-j "LOG"#).is_err());
    }
}
