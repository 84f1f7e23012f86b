//! Planning: port programs and host facts to a [`Plan`], purely (nothing
//! here asks the kernel).
//!
//! Ports are grouped by filter; each group gets one set of chains per side
//! (Ethernet root, protocol sub-chains, IP layer) shared by its ports, and
//! the values that differ per port (`$IP`, `$MAC`, lists, iterator
//! combinations) become elements of per-port sets keyed by the port, so a
//! packet's cost does not grow with the number of ports. A filter whose
//! variables cannot be looked up that way (negated, in ranges, masks given
//! as variables) gets its own chains per port instead. Routed taps get
//! their groups in the inet family, where rules about Ethernet details they
//! do not have are left out.

use crate::element::{Datum, Element};
use crate::expr::{cond, datum, has_var, selector, settable, ExprError};
use crate::features::{Features, MarkBits, StateSource};
use crate::model::{
    Chain, ChainKind, Expansion, Layer as ChainLayer, Plan, PlannedSet, PortInput, PortValues, RuleKey, SetType,
    TablePlan,
};
use crate::names;
use crate::text;
use gw_ir::{IrRule, L2Item, PortProgram, Sel, Side, SideProgram, Test};
use gw_model::value::state;
use gw_model::{Action, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Why a ruleset could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A rule of a port cannot be written as nftables.
    #[error("port {port}: filter '{filter}' rule {entry}: {source}")]
    Rule {
        /// The port.
        port: String,
        /// The filter.
        filter: String,
        /// The rule's position in it.
        entry: usize,
        /// What cannot be expressed.
        #[source]
        source: ExprError,
    },
    /// Two bindings for one port.
    #[error("port {0} is bound twice")]
    DuplicatePort(String),
}

/// An nft set of per-port values for one rule.
struct SetDef {
    name: String,
    set: Arc<PlannedSet>,
}

struct Out {
    skipped: usize,
    chains: Vec<(String, Chain)>,
    sets: Vec<SetDef>,
    needs_same_byte: bool,
    uses_related: bool,
}

fn is_v6(r: &IrRule) -> bool {
    r.conds.iter().any(|c| c.sel == Sel::EtherType && c.test == Test::Eq(Value::Num { value: 0x86dd, hex: false }))
}

fn comment(r: &IrRule) -> String {
    let text = match &r.comment {
        Some(c) => format!("{}#{}: {c}", r.origin.filter, r.origin.entry),
        None => format!("{}#{}", r.origin.filter, r.origin.entry),
    };
    format!(" comment \"{}\"", text::comment(&text, 120))
}

/// Which layer of the filter language a rule is in (an Ethernet-layer
/// rule's verdict leads to the IP layer; an IP-layer rule's ends it).
#[derive(Clone, Copy)]
enum Layer {
    L2,
    Ip,
}

struct Ctx<'a> {
    group: &'a str,
    side: Side,
    states: StateSource,
    mark: MarkBits,
    bridge_reject: bool,
    /// Ports sharing these chains with their concrete programs; empty when
    /// the chains are a single port's own (all values constant).
    ports: &'a [(&'a str, &'a PortValues)],
    port_for_errors: &'a str,
    /// Rendering for routed ports, in the inet family on the tap itself.
    routed: bool,
    /// Rules carry counters.
    counters: bool,
    /// The previous plan's sets, when this group's ports and their values
    /// are the very same as then: a set of the same name is reused, not
    /// written again.
    reuse: Option<&'a BTreeMap<String, Arc<PlannedSet>>>,
}

/// What a condition becomes on a routed port (inet family): `Some(text)` to
/// use instead, `None` when no frame on such a port can match it.
fn routed_cond(c: &gw_ir::Cond, side: Side) -> Option<Option<String>> {
    let num = |v: &Value| match v {
        Value::Num { value, .. } => Some(*value),
        _ => None,
    };
    match (c.sel, &c.test) {
        (Sel::EtherType, Test::Eq(v)) => {
            let family = match num(v) {
                Some(0x0800) => "ipv4",
                Some(0x86dd) => "ipv6",
                // Only IP reaches the inet hooks: other ethertypes never do.
                _ => return Some(if c.negated { Some(String::new()) } else { None }),
            };
            Some(Some(format!("meta nfproto {}{family}", if c.negated { "!= " } else { "" })))
        }
        (Sel::VlanId | Sel::VlanType | Sel::Stp { .. }, _) => Some(None),
        (
            Sel::ArpHtype
            | Sel::ArpPtype
            | Sel::ArpOp
            | Sel::ArpSha
            | Sel::ArpTha
            | Sel::ArpSpa
            | Sel::ArpTpa
            | Sel::ArpGratuitous,
            _,
        ) => Some(None),
        // Sent to a routed guest, a packet has no Ethernet header yet.
        (Sel::EtherSrc | Sel::EtherDst, _) if side == Side::ToGuest => Some(None),
        _ => None,
    }
}

impl Ctx<'_> {
    /// The matching part of a rule: constants written out, variables looked
    /// up in a per-port set.
    fn matches(&self, r: &IrRule, layer: Layer, out: &mut Out) -> Result<Option<String>, BuildError> {
        let err = |e: ExprError| BuildError::Rule {
            port: self.port_for_errors.to_string(),
            filter: r.origin.filter.clone(),
            entry: r.origin.entry,
            source: e,
        };
        let v6 = is_v6(r);
        let mut parts = Vec::new();
        let var_idx: Vec<usize> = (0..r.conds.len()).filter(|i| has_var(&r.conds[*i])).collect();
        for (i, c) in r.conds.iter().enumerate() {
            if var_idx.contains(&i) {
                continue;
            }
            if c.sel == Sel::ArpGratuitous {
                out.needs_same_byte = true;
            }
            if let Test::States(b) = c.test {
                if b & state::RELATED != 0 {
                    out.uses_related = true;
                }
            }
            if self.routed {
                match routed_cond(c, self.side) {
                    Some(Some(text)) => {
                        if !text.is_empty() {
                            parts.push(text);
                        }
                        continue;
                    }
                    Some(None) => return Ok(None),
                    None => {}
                }
            }
            let states = if self.routed { StateSource::BridgeConntrack } else { self.states };
            parts.push(cond(c, v6, states, self.mark).map_err(err)?);
        }
        if !var_idx.is_empty() {
            let key_sel = match self.side {
                Side::FromGuest => "iifname",
                Side::ToGuest => "oifname",
            };
            let mut ty = SetType { fields: vec![key_sel.to_string()], interval: false };
            for &i in &var_idx {
                ty.fields.push(selector(r.conds[i].sel, v6));
                ty.interval |= matches!(r.conds[i].test, Test::Masked(..));
            }
            let typeof_ = ty.typeof_();
            let fingerprint = format!("{typeof_}\u{0}{}", r.key);
            let base = names::port_set(self.group, self.side, matches!(layer, Layer::Ip), r.reversed, &fingerprint);
            let mut name = base.clone();
            let mut n = 1;
            while out.sets.iter().any(|s| s.name == name) {
                n += 1;
                name = format!("{base}_{n}");
            }
            parts.push(format!("{typeof_} @{name}"));
            if let Some(old) = self.reuse.and_then(|sets| sets.get(&name)) {
                if old.ty == ty {
                    out.sets.push(SetDef { name, set: old.clone() });
                    return Ok(Some(parts.join(" ")));
                }
            }
            let mut elements = Vec::new();
            for (port, pv) in self.ports {
                for expansion in pv.expansions(self.side, r) {
                    let values = expansion.as_ref().map_err(|e| err(ExprError(format!("port {port}: {e}"))))?;
                    let key = std::iter::once(Datum::Ifname((*port).into())).chain(values.iter().cloned()).collect();
                    elements.push(Element { key, verdict: None });
                }
            }
            // In the order of their text, as the scripts list them.
            elements.sort_by_cached_key(Element::text);
            elements.dedup();
            out.sets.push(SetDef { name, set: Arc::new(PlannedSet { ty, elements }) });
        }
        Ok(Some(parts.join(" ")))
    }

    fn verdict(&self, a: Action, layer: Layer, in_sub: bool) -> String {
        let to_ip = format!("goto {}", names::ip_chain(self.group, self.side));
        match (layer, a) {
            (_, Action::Continue) => String::new(),
            (Layer::L2, Action::Drop | Action::Reject) => "drop".into(),
            (Layer::L2, Action::Accept) => to_ip,
            (Layer::L2, Action::Return) if in_sub => "return".into(),
            (Layer::L2, Action::Return) => to_ip,
            (Layer::Ip, Action::Accept | Action::Return) => "accept".into(),
            (Layer::Ip, Action::Drop) => "drop".into(),
            (Layer::Ip, Action::Reject) if self.bridge_reject => "reject".into(),
            (Layer::Ip, Action::Reject) => "drop".into(),
        }
    }

    fn rule_line(&self, r: &IrRule, layer: Layer, in_sub: bool, out: &mut Out) -> Result<Option<String>, BuildError> {
        let Some(m) = self.matches(r, layer, out)? else {
            out.skipped += 1;
            return Ok(None);
        };
        let v = self.verdict(r.action, layer, in_sub);
        let mut line = String::new();
        let counter = if self.counters { "counter" } else { "" };
        for p in [m.as_str(), counter, v.as_str()] {
            if !p.is_empty() {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(p);
            }
        }
        line.push_str(&comment(r));
        Ok(Some(line))
    }

    fn side(&self, p: &SideProgram, out: &mut Out) -> Result<(), BuildError> {
        let mut root = Vec::new();
        let reads_state = rules_of(p).any(|r| r.conds.iter().any(|c| matches!(c.test, Test::States(_))));
        if reads_state && !self.routed && self.states == StateSource::BrNetfilterMark {
            root.push(self.mark.guard());
        }
        for item in &p.root {
            match item {
                L2Item::Rule(r) => root.extend(self.rule_line(r, Layer::L2, false, out)?),
                L2Item::Jump { chain, guard } => {
                    let mut g: Vec<String> = Vec::new();
                    let mut impossible = false;
                    for c in guard {
                        match if self.routed { routed_cond(c, self.side) } else { None } {
                            Some(Some(t)) => g.push(t),
                            Some(None) => impossible = true,
                            None => g.push(cond(c, false, self.states, self.mark).map_err(|e| BuildError::Rule {
                                port: self.port_for_errors.into(),
                                filter: String::new(),
                                entry: 0,
                                source: e,
                            })?),
                        }
                    }
                    if impossible {
                        continue;
                    }
                    let name = p.chains.get(*chain).map(|c| c.name.as_str()).unwrap_or("");
                    let mut line = g.join(" ");
                    if !line.is_empty() {
                        line.push(' ');
                    }
                    let sub = names::sub_chain(self.group, self.side, *chain);
                    let _ = write!(line, "jump {sub} comment \"chain {}\"", text::comment(name, 100));
                    root.push(line);
                }
            }
        }
        root.push(format!("goto {}", names::ip_chain(self.group, self.side)));
        out.chains.push((names::root_chain(self.group, self.side), filter_chain(ChainLayer::Root, root)));
        for (i, c) in p.chains.iter().enumerate() {
            let mut lines = Vec::new();
            for r in &c.rules {
                lines.extend(self.rule_line(r, Layer::L2, true, out)?);
            }
            out.chains.push((names::sub_chain(self.group, self.side, i), filter_chain(ChainLayer::Sub, lines)));
        }
        let mut ip = Vec::new();
        for r in &p.ip {
            ip.extend(self.rule_line(r, Layer::Ip, false, out)?);
        }
        ip.push("accept".into());
        out.chains.push((names::ip_chain(self.group, self.side), filter_chain(ChainLayer::Ip, ip)));
        Ok(())
    }
}

impl PortValues {
    /// Whether these values serve `template` as well as the template they
    /// were taken from (`from`): both have the same rules with variables
    /// (same fingerprints, sides and reversal). Then a redefinition that left
    /// those rules alone needs no port to be compiled again.
    pub fn fit(from: &PortProgram, template: &PortProgram) -> bool {
        var_rule_keys(from) == var_rule_keys(template)
    }

    fn expansions(&self, side: Side, t: &IrRule) -> &[Expansion] {
        let key = (side, t.key, t.reversed);
        match self.by_rule.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => &self.by_rule[i].1,
            Err(_) => &[],
        }
    }
}

fn var_rule_keys(t: &PortProgram) -> std::collections::BTreeSet<RuleKey> {
    Side::BOTH
        .iter()
        .flat_map(|side| {
            rules_of(t.side(*side)).filter(|r| r.conds.iter().any(has_var)).map(move |r| (*side, r.key, r.reversed))
        })
        .collect()
}

/// Extracts a port's values for the sets of `template` from its program.
pub fn port_values(template: &PortProgram, concrete: &PortProgram) -> PortValues {
    let mut by_rule: BTreeMap<RuleKey, Vec<Expansion>> = BTreeMap::new();
    for side in Side::BOTH {
        for t in rules_of(template.side(side)) {
            let var_idx: Vec<usize> = (0..t.conds.len()).filter(|i| has_var(&t.conds[*i])).collect();
            if var_idx.is_empty() {
                continue;
            }
            let entry = by_rule.entry((side, t.key, t.reversed)).or_default();
            for r in rules_of(concrete.side(side)).filter(|r| r.key == t.key && r.reversed == t.reversed) {
                let conds: Vec<&gw_ir::Cond> = var_idx.iter().filter_map(|i| r.conds.get(*i)).collect();
                if conds.len() != var_idx.len() {
                    entry.push(Err("its program does not line up with the template".into()));
                    continue;
                }
                let mut values = Vec::with_capacity(conds.len());
                let mut failed = None;
                for c in conds {
                    match datum(c) {
                        Ok(d) => values.push(d),
                        // The last failure is the one reported.
                        Err(e) => failed = Some(e.0),
                    }
                }
                entry.push(match failed {
                    Some(e) => Err(e),
                    None => Ok(values.into_boxed_slice()),
                });
            }
        }
    }
    PortValues { by_rule: by_rule.into_iter().collect() }
}

fn rules_of(p: &SideProgram) -> impl Iterator<Item = &IrRule> {
    p.root
        .iter()
        .filter_map(|i| match i {
            L2Item::Rule(r) => Some(r),
            L2Item::Jump { .. } => None,
        })
        .chain(p.chains.iter().flat_map(|c| c.rules.iter()))
        .chain(p.ip.iter())
}

/// Whether every variable of a template can be looked up in sets (else each
/// port gets its own chains, built from its whole program).
pub fn shareable(t: &PortProgram) -> bool {
    Side::BOTH.iter().all(|s| rules_of(t.side(*s)).all(|r| r.conds.iter().all(|c| !has_var(c) || settable(c))))
}

/// Plans the ruleset for these ports.
pub fn plan(ports: &[PortInput], features: Features) -> Result<Plan, BuildError> {
    plan_from(ports, features, None)
}

/// [`plan`], reusing the sets of `prev` for groups whose ports and values
/// are the very same (`Arc`s) as in `prev`: redefining a filter thousands
/// of ports use then costs its chains, not their elements.
pub fn plan_from(ports: &[PortInput], features: Features, prev: Option<&Plan>) -> Result<Plan, BuildError> {
    // A port may be in both families (one that does not exist yet), not
    // twice in one.
    let mut seen = std::collections::BTreeSet::new();
    for p in ports {
        if !seen.insert((p.routed, p.port.as_str())) {
            return Err(BuildError::DuplicatePort(p.port.clone()));
        }
    }
    // Group ports by filter; a filter that cannot share gets one group per
    // port; routed ports get their own groups in the inet family.
    let mut groups: BTreeMap<(bool, String, Option<String>), Vec<&PortInput>> = BTreeMap::new();
    for p in ports {
        let own = if shareable(&p.template) { None } else { Some(p.port.clone()) };
        groups.entry((p.routed, p.key.clone(), own)).or_default().push(p);
    }
    let new_out =
        || Out { skipped: 0, chains: Vec::new(), sets: Vec::new(), needs_same_byte: false, uses_related: false };
    let mut out = new_out();
    let mut rout = new_out();
    let mut plan = Plan {
        features,
        summary: Vec::new(),
        bridge: TablePlan::default(),
        inet: TablePlan::default(),
        same_byte: false,
        uses_related: false,
        members: BTreeMap::new(),
    };
    for ((routed, key, own), members) in &groups {
        let shared = own.is_none();
        let group = names::group(key, own.as_deref(), *routed);
        let pairs: Vec<(&str, &PortValues)> = members.iter().map(|p| (p.port.as_str(), &*p.values)).collect();
        let values: Vec<(String, Arc<PortValues>)> =
            members.iter().map(|p| (p.port.clone(), p.values.clone())).collect();
        let unchanged = prev.and_then(|p| p.members.get(&group)).is_some_and(|old| {
            old.len() == values.len()
                && old.iter().zip(&values).all(|((op, ov), (np, nv))| op == np && Arc::ptr_eq(ov, nv))
        });
        let reuse = match (unchanged, prev) {
            (true, Some(p)) if *routed => Some(&p.inet.sets),
            (true, Some(p)) => Some(&p.bridge.sets),
            _ => None,
        };
        let prog: &PortProgram = if shared {
            &members[0].template
        } else {
            members[0].concrete.as_deref().ok_or_else(|| BuildError::Rule {
                port: members[0].port.clone(),
                filter: key.clone(),
                entry: 0,
                source: ExprError("its filter cannot share chains, and its program was not given".into()),
            })?
        };
        for side in Side::BOTH {
            let ctx = Ctx {
                group: &group,
                side,
                states: features.state,
                mark: features.mark,
                bridge_reject: features.bridge_reject && !routed,
                ports: if shared { &pairs } else { &[] },
                port_for_errors: members[0].port.as_str(),
                routed: *routed,
                counters: features.counters,
                reuse,
            };
            ctx.side(prog.side(side), if *routed { &mut rout } else { &mut out })?;
        }
        if shared {
            plan.members.insert(group.clone(), values);
        }
        let table = if *routed { &mut plan.inet } else { &mut plan.bridge };
        for p in members {
            table.from_guest.insert(p.port.clone(), names::root_chain(&group, Side::FromGuest));
            table.to_guest.insert(p.port.clone(), names::root_chain(&group, Side::ToGuest));
        }
        // Name a few ports only: nft reads very long comment lines slowly
        // (a 60 kB line of 10,000 names cost it seconds).
        let mut names: Vec<&str> = members.iter().take(8).map(|p| p.port.as_str()).collect();
        if members.len() > names.len() {
            names.push("...");
        }
        // A `#` line ends at a newline: the names (from outside) are
        // written through text::comment, which has none.
        plan.summary.push(format!(
            "# {group}: filter {}{}{}: {} port(s): {}",
            text::comment(key, 200),
            if *routed { " on routed ports" } else { "" },
            if shared { "" } else { " (own chains: its variables cannot be shared)" },
            members.len(),
            text::comment(&names.join(" "), 200)
        ));
    }
    let sets =
        |v: Vec<SetDef>| -> BTreeMap<String, Arc<PlannedSet>> { v.into_iter().map(|s| (s.name, s.set)).collect() };
    if rout.skipped > 0 {
        plan.summary.push(format!(
            "# {} rule(s) match only Ethernet details routed ports do not have (ARP, VLAN, STP, MACs of packets to the guest) and are left out there",
            rout.skipped
        ));
    }
    plan.bridge.chains = out.chains.into_iter().collect();
    plan.bridge.sets = sets(out.sets);
    plan.inet.chains = rout.chains.into_iter().collect();
    plan.inet.sets = sets(rout.sets);
    plan.inet.skipped = rout.skipped;
    plan.same_byte = out.needs_same_byte;
    plan.uses_related = out.uses_related || rout.uses_related;
    Ok(plan)
}

/// The whole ruleset for these ports, as one nft script that replaces
/// guestwall's tables atomically (`nft -f`), and nothing else.
pub fn build(ports: &[PortInput], features: Features) -> Result<String, BuildError> {
    plan(ports, features).map(|p| p.render_full())
}

/// A port's input for [`plan`] from its programs, keeping the whole
/// program only when its filter cannot share chains.
pub fn port_input(
    port: String,
    key: String,
    template: Arc<PortProgram>,
    concrete: &Arc<PortProgram>,
    routed: bool,
) -> PortInput {
    let values = Arc::new(port_values(&template, concrete));
    let concrete = if shareable(&template) { None } else { Some(concrete.clone()) };
    PortInput { port, key, template, concrete, values, routed }
}

fn filter_chain(layer: ChainLayer, rules: Vec<String>) -> Chain {
    Chain { kind: ChainKind::Filter(layer), rules }
}
