//! From the plan that is loaded to the next: the changes, for both
//! families alike.
//!
//! Three forms, cheapest first:
//! - [`Plan::element_changes`]: only set and map elements differ (ports
//!   came, went or changed values under filters already loaded); one
//!   netlink batch, whose cost is the change, not the ruleset.
//! - [`Plan::staged_update`]: filters were added or dropped but none that
//!   stays changed; new chains by nft, then every element by netlink, then
//!   the stale chains by nft.
//! - [`Plan::render_update`]: any change, as one nft transaction that
//!   touches only what differs (a full replacement when the tables' global
//!   parts differ).
//!
//! A port that changes is deleted and re-added in the same transaction,
//! so it is never unfiltered. Elements are diffed as typed values
//! ([`crate::element`]), so the text and the netlink forms of a change are
//! the same change.

use crate::element::Element;
use crate::model::{ChainKind, PlannedSet, SetType, Staged, TablePlan};
use crate::names::{Family, TABLE};
use crate::netlink::SetChange;
use crate::render::{elements_text, write_set_body};
use crate::Plan;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

impl Plan {
    /// Every per-port set and map element, for netlink; `None` if some
    /// element can only be written as nft text.
    pub fn all_elements(&self) -> Option<Vec<SetChange>> {
        let mut out = Vec::new();
        for family in Family::BOTH {
            let t = self.table(family);
            let change = |set: &str, elements| SetChange {
                family: family.nfproto(),
                table: TABLE.into(),
                set: set.into(),
                add: true,
                elements,
            };
            for (name, set) in &t.sets {
                if set.elements.is_empty() {
                    continue;
                }
                if set.ty.interval {
                    return None;
                }
                out.push(change(name, set.elements.iter().map(|e| e.netlink(true)).collect::<Option<_>>()?));
            }
            for (name, m) in t.maps(family) {
                if m.is_empty() {
                    continue;
                }
                out.push(change(
                    name,
                    m.iter().map(|(p, c)| Element::dispatch(p, c).netlink(true)).collect::<Option<_>>()?,
                ));
            }
        }
        Some(out)
    }

    /// The change from `old` (what is loaded) to this plan as set and map
    /// elements only, for netlink: `Some` when nothing else differs (ports
    /// came, went or changed values under filters already loaded) and every
    /// element has its key bytes. Deletions come first, so a port that
    /// changes is never without its entries at commit.
    pub fn element_changes(&self, old: &Plan) -> Option<Vec<SetChange>> {
        if !Family::BOTH.iter().all(|f| self.table(*f).same_shape(old.table(*f))) {
            return None;
        }
        self.elements_diff(old)
    }

    /// The set and map element changes from `old`, for sets in this plan
    /// (sets new here are diffed against empty ones); `None` when the
    /// tables' global parts differ, a set changed its type or an element has
    /// no key bytes.
    fn elements_diff(&self, old: &Plan) -> Option<Vec<SetChange>> {
        if !self.same_table_parts(old) {
            return None;
        }
        let (mut dels, mut adds) = (Vec::new(), Vec::new());
        for family in Family::BOTH {
            diff_family(family, self.table(family), old.table(family), (&mut dels, &mut adds))?;
        }
        dels.extend(adds);
        Some(dels)
    }

    /// The change from `old` in three steps, for when it adds filters (new
    /// chains and sets) and many elements: `before` (nft) adds the new sets,
    /// empty, and the new chains, which nothing refers to yet; `elements`
    /// (one netlink batch) fills the sets and points the ports at their
    /// chains, all at once; `after` (nft) deletes the chains and sets no port
    /// uses any more. Each port goes from its old program to its new one in
    /// the one middle transaction. `None` when a chain or set that stays
    /// would change (a redefined filter): then [`Plan::render_update`].
    pub fn staged_update(&self, old: &Plan) -> Option<Staged> {
        for family in Family::BOTH {
            let (new, old) = (self.table(family), old.table(family));
            if old.chains.iter().any(|(n, c)| new.chains.get(n).is_some_and(|nc| nc != c)) {
                return None;
            }
        }
        let elements = self.elements_diff(old)?;
        let (mut before, mut after) = (String::new(), String::new());
        for family in Family::BOTH {
            let (new, old) = (self.table(family), old.table(family));
            render_additions(family, new, old, false, &mut before);
            render_removals(family, new, old, &mut after);
        }
        Some(Staged { before, elements, after })
    }

    /// A transaction that turns `old` (what is loaded) into this plan,
    /// touching only what differs, in both tables: set and map elements of
    /// ports that came, went or changed, and the chains of filters that
    /// changed. Falls back to a full replacement when the tables' global
    /// parts differ. Empty when nothing changed.
    pub fn render_update(&self, old: &Plan) -> String {
        if !self.same_table_parts(old) {
            return self.render_full();
        }
        let mut s = String::new();
        for family in Family::BOTH {
            let (new, old) = (self.table(family), old.table(family));
            let t = format!("{} {TABLE}", family.name());
            render_additions(family, new, old, true, &mut s);
            let mut elements = |verb: &str, set: &str, list: String| {
                if !list.is_empty() {
                    let _ = writeln!(s, "{verb} element {t} {set} {{ {list} }}");
                }
            };
            for (name, set) in &new.sets {
                if let Some(o) = old.sets.get(name).filter(|o| !Arc::ptr_eq(o, set)) {
                    let (gone, added) = diff_set(o, set);
                    elements("delete", name, elements_text(gone));
                    elements("add", name, elements_text(added));
                }
            }
            for ((map, m), (_, oldm)) in new.maps(family).into_iter().zip(old.maps(family)) {
                let (gone, added) = diff_map(oldm, m);
                // A port moving to another filter is deleted and re-added in
                // the same transaction: it is never unfiltered.
                elements("delete", map, elements_text(&gone));
                elements("add", map, elements_text(&added));
            }
            render_removals(family, new, old, &mut s);
        }
        s
    }
}

/// Sets new in `new` (with their elements or empty) and chains new or
/// changed since `old`, as nft commands on `family`'s table.
fn render_additions(family: Family, new: &TablePlan, old: &TablePlan, with_elements: bool, s: &mut String) {
    let t = format!("{} {TABLE}", family.name());
    for (name, set) in new.sets.iter().filter(|(n, _)| !old.sets.contains_key(*n)) {
        let _ = writeln!(s, "add set {t} {name} {{");
        write_set_body(s, set, "", with_elements);
        let _ = writeln!(s, "}}");
    }
    for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
        let _ = writeln!(s, "add chain {t} {name}");
    }
    for (name, chain) in &new.chains {
        match old.chains.get(name) {
            Some(o) if o == chain => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain {t} {name}");
            }
            None => {}
        }
        for l in &chain.rules {
            let _ = writeln!(s, "add rule {t} {name} {l}");
        }
    }
}

/// Chains and sets of `old` that `new` no longer has, deleted.
fn render_removals(family: Family, new: &TablePlan, old: &TablePlan, s: &mut String) {
    let t = format!("{} {TABLE}", family.name());
    let mut stale: Vec<(&String, ChainKind)> =
        old.chains.iter().filter(|(n, _)| !new.chains.contains_key(*n)).map(|(n, c)| (n, c.kind)).collect();
    // Stale chains may still jump to each other: empty them all first.
    for (name, _) in &stale {
        let _ = writeln!(s, "flush chain {t} {name}");
    }
    // Then delete each before the chains it jumps to (stable: by name
    // within a layer).
    stale.sort_by_key(|(_, kind)| match kind {
        ChainKind::Filter(layer) => Some(*layer),
        _ => None,
    });
    for (name, _) in stale {
        let _ = writeln!(s, "delete chain {t} {name}");
    }
    for name in old.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
        let _ = writeln!(s, "delete set {t} {name}");
    }
}

/// A set's elements gone since `old` and those new in `new`, in text order.
fn diff_set<'a>(old: &'a PlannedSet, new: &'a PlannedSet) -> (Vec<&'a Element>, Vec<&'a Element>) {
    let (o, n): (HashSet<&Element>, HashSet<&Element>) = (old.elements.iter().collect(), new.elements.iter().collect());
    let gone = old.elements.iter().filter(|e| !n.contains(e)).collect();
    let added = new.elements.iter().filter(|e| !o.contains(e)).collect();
    (gone, added)
}

/// A dispatch map's entries to remove (gone, or going elsewhere) and to add
/// (new, or going elsewhere), in port order.
fn diff_map(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> (Vec<Element>, Vec<Element>) {
    let entries = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
        a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).map(|(p, c)| Element::dispatch(p, c)).collect()
    };
    (entries(old, new), entries(new, old))
}

/// One table's set and map element changes from `old` to `new` (sets new
/// here are diffed against empty ones), as deletions and additions; `None`
/// when a set changed its type or an element has no key bytes.
fn diff_family(
    family: Family,
    new: &TablePlan,
    old: &TablePlan,
    (dels, adds): (&mut Vec<SetChange>, &mut Vec<SetChange>),
) -> Option<()> {
    let mut push = |set: &str, add: bool, elements: Vec<&Element>| -> Option<()> {
        if !elements.is_empty() {
            let elements = elements.into_iter().map(|e| e.netlink(add)).collect::<Option<_>>()?;
            let change = SetChange { family: family.nfproto(), table: TABLE.into(), set: set.into(), add, elements };
            if add { &mut *adds } else { &mut *dels }.push(change);
        }
        Some(())
    };
    let empty = PlannedSet { ty: SetType { fields: Vec::new(), interval: false }, elements: Vec::new() };
    for (name, set) in &new.sets {
        let o = match old.sets.get(name) {
            Some(o) if Arc::ptr_eq(o, set) => continue,
            Some(o) if o.ty != set.ty => return None,
            Some(o) => &**o,
            None => &empty,
        };
        let (gone, added) = diff_set(o, set);
        if set.ty.interval && !(gone.is_empty() && added.is_empty()) {
            return None;
        }
        push(name, false, gone)?;
        push(name, true, added)?;
    }
    for ((map, m), (_, oldm)) in new.maps(family).into_iter().zip(old.maps(family)) {
        let (gone, added) = diff_map(oldm, m);
        push(map, false, gone.iter().collect())?;
        push(map, true, added.iter().collect())?;
    }
    Some(())
}
