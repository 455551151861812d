//! The configured rules as the launcher keeps them: every table (IPv4's
//! filter and nat, IPv6's filter and nat), their chains and rules, and for
//! every rule the counter slot it counts into. The IPv6 tables are the
//! JSON's `filter6` and `nat6` (absent in sets from before them: empty,
//! ACCEPT policies).
//! [`Tables::apply`] carries out a parsed [`Command`]; the result is then
//! compiled into a [`RuleSet`](crate::ruleset::RuleSet) for filterd.
//!
//! Counter slots outlive recompilation: a rule keeps its slot while it
//! exists, so counters (which the shell keeps in shared memory, two
//! `u64`s per slot) survive edits to other rules and filterd restarts.

use crate::rule::{Command, DeleteBy, Hook, Policy, Rule, Table};
use crate::ruleset::{self, Counters};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Default number of counter slots (so of rules in all tables): every
/// slot of filterd's arena.
pub const DEFAULT_MAX_RULES: u32 = crate::shm::COUNTER_SLOTS as u32;

/// A rule with its counter slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The rule.
    pub rule: Rule,
    /// Its counter slot.
    pub slot: u32,
}

/// A chain: a built-in one (with a policy) or a user-defined one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Name.
    pub name: String,
    /// Policy of a built-in chain; `None` for user chains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// Rules in order.
    #[serde(default)]
    pub rules: Vec<Entry>,
}

/// The chains of one table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRules {
    /// Chains, built-in ones first.
    pub chains: Vec<Chain>,
}

impl TableRules {
    fn new(t: Table) -> TableRules {
        TableRules {
            chains: t
                .hooks()
                .iter()
                .map(|h| Chain {
                    name: h.name().to_string(),
                    policy: Some(Policy::Accept),
                    rules: Vec::new(),
                })
                .collect(),
        }
    }

    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    fn chain_mut(&mut self, name: &str) -> Result<&mut Chain, String> {
        self.chains
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("no chain {name}"))
    }

    fn references(&self, name: &str) -> usize {
        self.chains
            .iter()
            .flat_map(|c| &c.rules)
            .filter(|e| matches!(&e.rule.target, Some(crate::rule::Target::Jump(j)) if j == name))
            .count()
    }
}

/// Every table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    /// The filter table.
    pub filter: TableRules,
    /// The nat table.
    pub nat: TableRules,
    /// The IPv6 filter table (`-6`).
    #[serde(default = "filter6_default")]
    pub filter6: TableRules,
    /// The IPv6 nat table (`-6 -t nat`).
    #[serde(default = "nat6_default")]
    pub nat6: TableRules,
    /// Counter slots available (rules in all tables together).
    #[serde(default = "default_max")]
    pub max_rules: u32,
}

fn default_max() -> u32 {
    DEFAULT_MAX_RULES
}

fn filter6_default() -> TableRules {
    TableRules::new(Table::Filter6)
}

fn nat6_default() -> TableRules {
    TableRules::new(Table::Nat6)
}

impl Default for Tables {
    fn default() -> Self {
        Tables::new(DEFAULT_MAX_RULES)
    }
}

/// Counter slots no rule has, lowest first.
struct FreeSlots {
    used: Vec<bool>,
    /// Every slot below is taken.
    next: usize,
}

impl FreeSlots {
    /// Takes the lowest free slot, if one is left.
    fn take(&mut self) -> Option<u32> {
        let i = self.next + self.used[self.next..].iter().position(|u| !u)?;
        self.used[i] = true;
        self.next = i + 1;
        Some(i as u32)
    }
}

/// What [`Tables::apply`] produced besides the change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Counter slots that now belong to new rules (or were zeroed): the
    /// shell clears their counters.
    pub reset_slots: Vec<u32>,
    /// Whether the rules changed (the set must be recompiled).
    pub changed: bool,
}

impl Tables {
    /// Empty tables with ACCEPT policies and `max_rules` counter slots.
    pub fn new(max_rules: u32) -> Tables {
        Tables {
            filter: TableRules::new(Table::Filter),
            nat: TableRules::new(Table::Nat),
            filter6: TableRules::new(Table::Filter6),
            nat6: TableRules::new(Table::Nat6),
            max_rules,
        }
    }

    /// One table.
    pub fn table(&self, t: Table) -> &TableRules {
        match t {
            Table::Filter => &self.filter,
            Table::Nat => &self.nat,
            Table::Filter6 => &self.filter6,
            Table::Nat6 => &self.nat6,
        }
    }

    fn table_mut(&mut self, t: Table) -> &mut TableRules {
        match t {
            Table::Filter => &mut self.filter,
            Table::Nat => &mut self.nat,
            Table::Filter6 => &mut self.filter6,
            Table::Nat6 => &mut self.nat6,
        }
    }

    /// The counter slots no rule has.
    fn free_slots(&self) -> FreeSlots {
        let mut used = vec![false; self.max_rules as usize];
        for t in Table::ALL {
            for e in self.table(t).chains.iter().flat_map(|c| &c.rules) {
                if let Some(u) = used.get_mut(e.slot as usize) {
                    *u = true;
                }
            }
        }
        FreeSlots { used, next: 0 }
    }

    /// Carries out `cmds` in order as one [`apply`](Self::apply) each
    /// would, with the same checks, errors and counter slots, in time
    /// linear in the rules where `apply` would take time linear in the
    /// rules per command: a rule added that [`ruleset::check_alone`] can
    /// check is checked alone and takes the next free slot, and only other
    /// commands copy and check the whole tables. The error is the failing
    /// command's position and `apply`'s error; the tables then hold what
    /// the commands before it made.
    pub fn apply_all<'a>(
        &mut self,
        cmds: impl IntoIterator<Item = &'a Command>,
    ) -> Result<Outcome, (usize, String)> {
        let mut out = Outcome::default();
        // Valid while only rules are added: then the lowest free slot is
        // the next one not taken.
        let mut free: Option<FreeSlots> = None;
        for (i, cmd) in cmds.into_iter().enumerate() {
            let alone = match cmd {
                Command::Add { table, chain, rule }
                | Command::Insert {
                    table, chain, rule, ..
                } => ruleset::check_alone(*table, chain, rule),
                _ => None,
            };
            let done = match alone {
                Some(checked) => {
                    let slot = free.get_or_insert_with(|| self.free_slots()).take();
                    self.add_rule(cmd, slot, checked).map(|slot| Outcome {
                        reset_slots: vec![slot],
                        changed: true,
                    })
                }
                None => {
                    free = None;
                    self.apply(cmd)
                }
            };
            let done = done.map_err(|e| (i, e))?;
            out.reset_slots.extend(done.reset_slots);
            out.changed |= done.changed;
        }
        Ok(out)
    }

    /// Adds the rule of `cmd` (an `Add` or `Insert`) with counter slot
    /// `slot` (`None`: every one is taken), if it can go where `cmd` says
    /// and `checked`, the result of checking it, is fine; the slot, or why
    /// not (the first of these).
    fn add_rule(
        &mut self,
        cmd: &Command,
        slot: Option<u32>,
        checked: Result<(), String>,
    ) -> Result<u32, String> {
        let (Command::Add { table, chain, rule }
        | Command::Insert {
            table, chain, rule, ..
        }) = cmd
        else {
            unreachable!("only Add and Insert add a rule");
        };
        let slot = slot.ok_or_else(|| format!("too many rules (at most {})", self.max_rules))?;
        let c = self.table_mut(*table).chain_mut(chain)?;
        let pos = match cmd {
            Command::Insert { pos, .. } => {
                if *pos > c.rules.len() + 1 {
                    return Err(format!(
                        "cannot insert at {pos}: {chain} has {} rules",
                        c.rules.len()
                    ));
                }
                pos - 1
            }
            _ => c.rules.len(),
        };
        checked?;
        c.rules.insert(
            pos,
            Entry {
                rule: rule.clone(),
                slot,
            },
        );
        Ok(slot)
    }

    /// Carries out `cmd` (List does nothing here, see [`Tables::list`]).
    /// The tables change only if the result still compiles (known jump
    /// targets, no loops, NAT targets where they belong).
    pub fn apply(&mut self, cmd: &Command) -> Result<Outcome, String> {
        let mut next = self.clone();
        let out = next.apply_unchecked(cmd)?;
        if out.changed {
            ruleset::validate(&next)?;
        }
        *self = next;
        Ok(out)
    }

    fn apply_unchecked(&mut self, cmd: &Command) -> Result<Outcome, String> {
        let mut out = Outcome {
            changed: true,
            ..Outcome::default()
        };
        match cmd {
            Command::Add { .. } | Command::Insert { .. } => {
                let slot = self.free_slots().take();
                out.reset_slots.push(self.add_rule(cmd, slot, Ok(()))?);
            }
            Command::Delete {
                table,
                chain,
                which,
            } => {
                let c = self.table_mut(*table).chain_mut(chain)?;
                let i = match which {
                    DeleteBy::Number(n) => {
                        if *n == 0 || *n > c.rules.len() {
                            return Err(format!(
                                "no rule {n} in {chain} ({} rules)",
                                c.rules.len()
                            ));
                        }
                        n - 1
                    }
                    DeleteBy::Spec(r) => c
                        .rules
                        .iter()
                        .position(|e| e.rule == *r)
                        .ok_or_else(|| format!("no such rule in {chain}"))?,
                };
                c.rules.remove(i);
            }
            Command::List { .. } => out.changed = false,
            Command::Flush { table, chain } | Command::Zero { table, chain } => {
                let zero = matches!(cmd, Command::Zero { .. });
                let t = self.table_mut(*table);
                if let Some(name) = chain {
                    t.chain_mut(name)?;
                }
                for c in t
                    .chains
                    .iter_mut()
                    .filter(|c| chain.as_ref().is_none_or(|n| *n == c.name))
                {
                    if zero {
                        out.reset_slots.extend(c.rules.iter().map(|e| e.slot));
                    } else {
                        c.rules.clear();
                    }
                }
                out.changed = !zero;
            }
            Command::NewChain { table, chain } => {
                let t = self.table_mut(*table);
                if t.chain(chain).is_some() {
                    return Err(format!("chain {chain} exists"));
                }
                t.chains.push(Chain {
                    name: chain.clone(),
                    policy: None,
                    rules: Vec::new(),
                });
            }
            Command::DeleteChain { table, chain } => {
                let t = self.table_mut(*table);
                match chain {
                    Some(name) => {
                        let c = t.chain(name).ok_or_else(|| format!("no chain {name}"))?;
                        if c.policy.is_some() {
                            return Err(format!("{name} is a built-in chain"));
                        }
                        if !c.rules.is_empty() {
                            return Err(format!("{name} is not empty"));
                        }
                        let refs = t.references(name);
                        if refs > 0 {
                            return Err(format!("{name} is referenced by {refs} rules"));
                        }
                        t.chains.retain(|c| c.name != *name);
                    }
                    None => {
                        let names: Vec<String> = t
                            .chains
                            .iter()
                            .filter(|c| c.policy.is_none())
                            .map(|c| c.name.clone())
                            .collect();
                        for n in &names {
                            let c = t.chain(n).map_or(0, |c| c.rules.len());
                            if c > 0 || t.references(n) > 0 {
                                return Err(format!("{n} is not empty or still referenced"));
                            }
                        }
                        t.chains.retain(|c| c.policy.is_some());
                    }
                }
            }
            Command::Policy {
                table,
                chain,
                policy,
            } => {
                let c = self.table_mut(*table).chain_mut(chain)?;
                if c.policy.is_none() {
                    return Err(format!("{chain} is not a built-in chain"));
                }
                c.policy = Some(*policy);
            }
        }
        Ok(out)
    }

    /// The listing `strata filter list` prints: per chain its policy or
    /// reference count, then numbered rules with packet and byte counts.
    pub fn list<C: Counters + ?Sized>(
        &self,
        table: Table,
        chain: Option<&str>,
        counters: &C,
    ) -> Result<String, String> {
        let t = self.table(table);
        if let Some(n) = chain {
            t.chain(n).ok_or_else(|| format!("no chain {n}"))?;
        }
        let mut s = String::new();
        for c in t
            .chains
            .iter()
            .filter(|c| chain.is_none_or(|n| n == c.name))
        {
            if !s.is_empty() {
                s.push('\n');
            }
            match c.policy {
                Some(p) => {
                    let _ = writeln!(s, "Chain {} (policy {})", c.name, p.name());
                }
                None => {
                    let _ = writeln!(s, "Chain {} ({} references)", c.name, t.references(&c.name));
                }
            }
            let _ = writeln!(s, "{:>4} {:>10} {:>12}  rule", "num", "pkts", "bytes");
            for (i, e) in c.rules.iter().enumerate() {
                let (p, b) = counters.read(e.slot);
                let _ = writeln!(s, "{:>4} {:>10} {:>12}  {}", i + 1, p, b, e.rule);
            }
        }
        Ok(s)
    }

    /// Whether `hook` has a built-in chain in `table`.
    pub fn has_chain(&self, table: Table, hook: Hook) -> bool {
        self.table(table).chain(hook.name()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::parse_command;
    use crate::ruleset::NoCounters;

    fn run(t: &mut Tables, s: &str) -> Result<Outcome, String> {
        let w: Vec<&str> = s.split_whitespace().collect();
        let c = parse_command(&w).map_err(|e| e.to_string())?;
        t.apply(&c)
    }

    #[test]
    fn slots_are_kept_and_reused() {
        let mut t = Tables::new(3);
        assert_eq!(
            run(&mut t, "add INPUT -j ACCEPT").unwrap().reset_slots,
            vec![0]
        );
        assert_eq!(
            run(&mut t, "insert INPUT -j DROP").unwrap().reset_slots,
            vec![1]
        );
        assert_eq!(t.filter.chain("INPUT").unwrap().rules[1].slot, 0);
        run(&mut t, "del INPUT 1").unwrap();
        assert_eq!(
            run(&mut t, "add OUTPUT -j DROP").unwrap().reset_slots,
            vec![1]
        );
        run(&mut t, "add OUTPUT -j DROP").unwrap();
        assert!(run(&mut t, "add OUTPUT -j DROP")
            .unwrap_err()
            .contains("too many"));
    }

    fn parse_all(lines: &[&str]) -> Vec<Command> {
        lines
            .iter()
            .map(|l| parse_command(&l.split_whitespace().collect::<Vec<_>>()).unwrap())
            .collect()
    }

    /// `apply_all` of `cmds` leaves the tables, outcome and error that
    /// one `apply` per command leaves; that outcome or error.
    fn all_as_one_by_one(start: &Tables, cmds: &[Command]) -> Result<Outcome, (usize, String)> {
        let mut each = start.clone();
        let mut want = Ok(Outcome::default());
        for (i, c) in cmds.iter().enumerate() {
            match each.apply(c) {
                Ok(o) => {
                    let w = want.as_mut().unwrap();
                    w.reset_slots.extend(o.reset_slots);
                    w.changed |= o.changed;
                }
                Err(e) => {
                    want = Err((i, e));
                    break;
                }
            }
        }
        let mut all = start.clone();
        assert_eq!(all.apply_all(cmds), want, "{cmds:?}");
        assert_eq!(all, each, "{cmds:?}");
        want
    }

    #[test]
    fn many_commands_at_once_as_one_at_a_time() {
        let mut start = Tables::new(6);
        run(&mut start, "add INPUT -j ACCEPT").unwrap();
        run(&mut start, "add INPUT -j ACCEPT").unwrap();
        run(&mut start, "del INPUT 1").unwrap();
        // Slot 0 is free, 1 taken: added rules take 0, then 2...
        let fine = parse_all(&[
            "add INPUT -p tcp --dport 1 -j DROP",
            "insert INPUT 1 -s 10.0.0.0/8 -j ACCEPT",
            "-N web",
            "add web -p tcp --dport 80 -j ACCEPT",
            "add INPUT -j web",
            "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2:8080",
            // A deletion frees a slot the next rule takes.
            "del INPUT 1",
            "-6 add INPUT -p icmpv6 -j ACCEPT",
            "-P INPUT DROP",
        ]);
        assert!(all_as_one_by_one(&start, &fine).is_ok());
        // Each failing command, checked alone or with the whole set, fails
        // where and as it fails one at a time.
        let mut failing = vec![
            parse_all(&["add INPUT -j nowhere"]),
            parse_all(&["add NOPE -j DROP"]),
            parse_all(&["insert INPUT 9 -j DROP"]),
            parse_all(&["-t nat -A POSTROUTING -j DNAT --to-destination 10.0.0.2"]),
            // Allowed in a chain reached from POSTROUTING alone.
            parse_all(&[
                "-t nat -N dn",
                "-t nat -A dn -j MASQUERADE",
                "-t nat -A POSTROUTING -j dn",
                "-t nat -A PREROUTING -j dn",
            ]),
            parse_all(&["add INPUT -s 10.0.0.0/8 -j DROP"]),
        ];
        // An IPv4 address in an IPv6 table (the parser makes none).
        if let Command::Add { table, .. } = &mut failing[5][0] {
            *table = Table::Filter6;
        }
        for f in failing {
            let mut cmds = fine[..5].to_vec();
            cmds.extend(f);
            assert!(all_as_one_by_one(&start, &cmds).is_err(), "{cmds:?}");
        }
        // Out of slots.
        let many = parse_all(&["add OUTPUT -j DROP"; 8]);
        assert!(all_as_one_by_one(&start, &many).is_err());
    }

    #[test]
    fn the_most_rules_fit_the_arena_and_one_more_is_refused() {
        let lines: Vec<String> = (0..crate::shm::COUNTER_SLOTS)
            .map(|i| format!("add INPUT -p tcp --dport {} -j DROP", i % 65_536))
            .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let cmds = parse_all(&lines);
        let mut t = Tables::default();
        let out = t.apply_all(&cmds).unwrap();
        assert_eq!(out.reset_slots.len(), crate::shm::COUNTER_SLOTS);
        assert_eq!(out.reset_slots[65_535], 65_535);
        let json = serde_json::to_vec(&t).unwrap();
        // Some 115 bytes a rule, the largest slot numbers taking five
        // digits.
        let per_rule = json.len() / crate::shm::COUNTER_SLOTS;
        assert!((110..=120).contains(&per_rule), "{per_rule}");
        assert!(json.len() <= crate::shm::RULES_MAX);
        let e = t.apply_all(&cmds[..1]).unwrap_err();
        assert_eq!(e, (0, "too many rules (at most 65536)".to_string()));
    }

    #[test]
    fn chains_and_validation() {
        let mut t = Tables::default();
        assert!(run(&mut t, "add INPUT -j web").unwrap_err().contains("web"));
        run(&mut t, "-N web").unwrap();
        run(&mut t, "add INPUT -j web").unwrap();
        run(&mut t, "-N b").unwrap();
        run(&mut t, "add web -j b").unwrap();
        let before = t.clone();
        assert!(run(&mut t, "add b -j web").unwrap_err().contains("loop"));
        assert_eq!(t, before);
        assert!(run(&mut t, "-X web").is_err());
        run(&mut t, "-F web").unwrap();
        run(&mut t, "-D INPUT -j web").unwrap();
        run(&mut t, "-X web").unwrap();
        let l = t.list(Table::Filter, None, &NoCounters).unwrap();
        assert!(l.contains("Chain INPUT (policy ACCEPT)"), "{l}");
        assert!(l.contains("Chain b (0 references)"), "{l}");
        run(&mut t, "-P INPUT DROP").unwrap();
        assert_eq!(t.filter.chain("INPUT").unwrap().policy, Some(Policy::Drop));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Tables>(&json).unwrap(), t);
    }

    #[test]
    fn nat_targets_by_hook() {
        let mut t = Tables::default();
        run(
            &mut t,
            "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2:8080",
        )
        .unwrap();
        let e = run(
            &mut t,
            "-t nat -A POSTROUTING -j DNAT --to-destination 10.0.0.2",
        )
        .unwrap_err();
        assert!(e.contains("DNAT"), "{e}");
        run(&mut t, "-t nat -N snat").unwrap();
        run(&mut t, "-t nat -A snat -j SNAT --to-source 1.2.3.4").unwrap();
        assert!(run(&mut t, "-t nat -A OUTPUT -j snat").is_err());
        run(&mut t, "-t nat -A POSTROUTING -j snat").unwrap();
    }
}
