//! A kernel in memory, for tests without root (in the spirit of
//! knftables' `Fake`).
//!
//! It holds guestwall's two tables as the kernel would after a load:
//! chains with their kind and rules, sets and verdict maps with their
//! elements. It takes the two kinds of transaction guestwall commits
//! outside `nft -f` scripts it cannot read: a full load of a [`Plan`], and
//! a netlink batch of element changes ([`SetChange`]), which it applies
//! all or nothing and refuses as the kernel does: an element deleted that
//! is not there, an element added that is (our batches never re-add: a
//! changed entry is deleted first), a set or table that does not exist, a
//! verdict that goes to a chain that does not. So planning, both
//! families' deltas and rollback are checked by comparing fakes.

use crate::element::Element;
use crate::model::Chain;
use crate::names::{Family, SAME_BYTE, TABLE};
use crate::netlink::SetChange;
use crate::Plan;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A key as the fake keeps it: the kernel's bytes, or, for what only nft
/// text can write (intervals), the text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// The key bytes netlink writes.
    Bytes(Vec<u8>),
    /// An element netlink cannot write, as nft text.
    Text(String),
}

/// A set or verdict map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Set {
    /// A verdict map (its elements go to a chain) rather than a set.
    pub map: bool,
    /// Each element's key, and for a map the chain it goes to.
    pub elements: BTreeMap<Key, Option<String>>,
}

/// One table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps by name.
    pub sets: BTreeMap<String, Set>,
}

/// Why the fake refused a transaction (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No such table (`ENOENT`).
    #[error("no table {family} {table}")]
    NoTable {
        /// The family's name.
        family: String,
        /// The table.
        table: String,
    },
    /// No such set (`ENOENT`).
    #[error("no set {0}")]
    NoSet(String),
    /// Deleting an element that is not there (`ENOENT`).
    #[error("set {0}: no such element")]
    Missing(String),
    /// Adding an element that is there (`EEXIST`).
    #[error("set {0}: element exists")]
    Exists(String),
    /// A verdict to a chain that does not exist (`ENOENT`).
    #[error("set {set}: no chain {chain}")]
    NoChain {
        /// The map.
        set: String,
        /// The chain.
        chain: String,
    },
}

/// guestwall's tables in memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FakeKernel {
    /// The tables there are, by family (all named [`TABLE`]).
    pub tables: BTreeMap<Family, Table>,
    /// Refuse the next nft script with this (for rollback tests).
    pub refuse_nft: Option<Refused>,
    /// Refuse the next netlink batch with this (for rollback tests).
    pub refuse_commit: Option<Refused>,
}

fn key_of(e: &Element) -> Key {
    e.key_bytes().map_or_else(|| Key::Text(e.text()), Key::Bytes)
}

impl FakeKernel {
    /// No tables.
    pub fn new() -> FakeKernel {
        FakeKernel::default()
    }

    /// Replaces both tables with `plan`, as [`Plan::render_full`] does.
    pub fn load(&mut self, plan: &Plan) {
        self.load_with(plan, true);
    }

    /// Replaces both tables with `plan` without its per-port elements, as
    /// [`Plan::render_skeleton`] does.
    pub fn load_skeleton(&mut self, plan: &Plan) {
        self.load_with(plan, false);
    }

    fn load_with(&mut self, plan: &Plan, with_elements: bool) {
        self.tables.clear();
        for family in Family::BOTH {
            let p = plan.table(family);
            let mut t = Table::default();
            t.chains.extend(p.chains.iter().map(|(n, c)| (n.clone(), c.clone())));
            t.chains.extend(plan.dispatch_chains(family));
            for (name, set) in &p.sets {
                let elements = set.elements.iter().filter(|_| with_elements).map(|e| (key_of(e), None)).collect();
                t.sets.insert(name.clone(), Set { map: false, elements });
            }
            for (name, m) in p.maps(family) {
                let elements = m
                    .iter()
                    .filter(|_| with_elements)
                    .map(|(port, chain)| (key_of(&Element::dispatch(port, chain)), Some(chain.clone())))
                    .collect();
                t.sets.insert(name.to_string(), Set { map: true, elements });
            }
            match family {
                Family::Bridge if plan.same_byte => {
                    // Not per port: in the skeleton too.
                    let elements = (0..=255u8).map(|b| (Key::Bytes(vec![b, 0, 0, 0, b, 0, 0, 0]), None)).collect();
                    t.sets.insert(SAME_BYTE.into(), Set { map: false, elements });
                }
                Family::Bridge => {}
                Family::Inet => t.chains.extend(plan.state_chains()),
            }
            self.tables.insert(family, t);
        }
    }

    /// Adds the chains and (empty) sets of `plan` that are missing, as the
    /// first step of a staged update does.
    pub fn add_missing(&mut self, plan: &Plan) {
        let mut target = FakeKernel::new();
        target.load_skeleton(plan);
        for (family, t) in target.tables {
            let have = self.tables.entry(family).or_default();
            for (name, chain) in t.chains {
                have.chains.entry(name).or_insert(chain);
            }
            for (name, set) in t.sets {
                have.sets.entry(name).or_insert(set);
            }
        }
    }

    /// Removes the chains and sets `plan` does not have, as the last step
    /// of a staged update does.
    pub fn remove_others(&mut self, plan: &Plan) {
        let mut target = FakeKernel::new();
        target.load_skeleton(plan);
        for (family, have) in &mut self.tables {
            let Some(t) = target.tables.get(family) else { continue };
            have.chains.retain(|n, _| t.chains.contains_key(n));
            have.sets.retain(|n, _| t.sets.contains_key(n));
        }
    }

    /// Applies one netlink batch: every change, or (refused) none.
    pub fn commit(&mut self, changes: &[SetChange]) -> Result<(), Refused> {
        let mut next = self.tables.clone();
        for c in changes {
            let family = Family::from_nfproto(c.family);
            let t = match family.and_then(|f| next.get_mut(&f)).filter(|_| c.table == TABLE) {
                Some(t) => t,
                None => {
                    let family = family.map_or_else(|| c.family.to_string(), |f| f.name().to_string());
                    return Err(Refused::NoTable { family, table: c.table.clone() });
                }
            };
            let chains = &t.chains;
            let set = t.sets.get_mut(&c.set).ok_or_else(|| Refused::NoSet(c.set.clone()))?;
            for (key, goto) in &c.elements {
                let key = Key::Bytes(key.clone());
                if !c.add {
                    set.elements.remove(&key).ok_or_else(|| Refused::Missing(c.set.clone()))?;
                    continue;
                }
                if let Some(chain) = goto.as_ref().filter(|ch| !chains.contains_key(*ch)) {
                    return Err(Refused::NoChain { set: c.set.clone(), chain: chain.clone() });
                }
                if set.elements.insert(key, goto.clone()).is_some() {
                    return Err(Refused::Exists(c.set.clone()));
                }
            }
        }
        self.tables = next;
        Ok(())
    }

    /// The number of elements in all sets and maps.
    pub fn element_count(&self) -> usize {
        self.tables.values().flat_map(|t| t.sets.values()).map(|s| s.elements.len()).sum()
    }

    /// A stable listing, for comparing fakes in test failures.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for (family, t) in &self.tables {
            let _ = writeln!(s, "table {} {TABLE}", family.name());
            for (name, set) in &t.sets {
                let _ = writeln!(s, "  {} {name}", if set.map { "map" } else { "set" });
                for (k, v) in &set.elements {
                    let k = match k {
                        Key::Bytes(b) => b.iter().map(|b| format!("{b:02x}")).collect(),
                        Key::Text(t) => t.clone(),
                    };
                    let _ = writeln!(s, "    {k}{}", v.as_ref().map(|c| format!(" : goto {c}")).unwrap_or_default());
                }
            }
            for (name, c) in &t.chains {
                let _ = writeln!(s, "  chain {name} ({:?}): {} rule(s)", c.kind, c.rules.len());
            }
        }
        s
    }
}
