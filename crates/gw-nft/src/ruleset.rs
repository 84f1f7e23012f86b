//! Port programs → one nftables ruleset for the host.
//!
//! Layout (table `bridge guestwall`):
//! - two base chains after br_netfilter (priority 200): `prerouting`
//!   dispatches frames *from* guests with `iifname vmap @from_guest`,
//!   `postrouting` frames *to* guests with `oifname vmap @to_guest`; a frame
//!   between two guests crosses both, so both ports' filters judge it, and
//!   a frame from a guest to the host itself crosses `prerouting`;
//! - per distinct filter, one set of chains per side, shared by every port
//!   bound to it: `tN_out`/`tN_in` (Ethernet root), `tN_out_cM` (sub-chains),
//!   `tN_out_ip` (IP layer). Per-port values (`$IP`, `$MAC`, lists) are set
//!   elements keyed by the port, so the rules are the same for all ports
//!   and a packet's cost does not grow with the number of ports;
//! - a filter whose variables cannot be looked up in sets (negated, ranges,
//!   masks given as variables) gets its own chains per port instead.
//!
//! Table `inet guestwall` (br_netfilter mode) copies conntrack state into
//! mark bits for the bridge chains, and assigns the FTP helper so RELATED
//! works.

use crate::expr::{cond, element, element_key, has_var, ifname_key, selector, settable, ExprError, StateSource};
use crate::expr::{MarkBits, TAMPER_COUNTER};
use crate::netlink::{SetChange, FAMILY_BRIDGE, FAMILY_INET};
use crate::text;
use gw_ir::{IrRule, L2Item, PortProgram, Sel, Side, SideProgram, Test};
use gw_model::value::state;
use gw_model::{Action, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// guestwall's table name (in the `bridge` and `inet` families).
pub const TABLE: &str = "guestwall";

/// What the kernel offers, found at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    /// Where conntrack state comes from.
    pub state: StateSource,
    /// Whether `reject` works in the bridge family (NFT_BRIDGE_REJECT).
    pub bridge_reject: bool,
    /// Whether every rule carries a counter. Off by default: counters cost
    /// about 15% of the small-packet forwarding rate (bench/forward); turn
    /// them on to see which rules decide.
    pub counters: bool,
    /// The mark bits that carry conntrack state ([`StateSource::BrNetfilterMark`]).
    pub mark: MarkBits,
}

impl Features {
    /// A line saying which paths are in use.
    pub fn describe(&self) -> String {
        let st = match self.state {
            StateSource::BridgeConntrack => "stateful filtering via bridge-family conntrack (nf_conntrack_bridge)",
            StateSource::BrNetfilterMark => &format!(
                "stateful filtering via br_netfilter (no nf_conntrack_bridge): conntrack state carried in mark bits {:#010x}",
                self.mark.mask()
            ),
        };
        let rj = if self.bridge_reject {
            "reject sends ICMP unreachable"
        } else {
            "reject is enforced as drop (no bridge-family reject in this kernel)"
        };
        format!("{st}; {rj}")
    }
}

/// A port to filter: its name and its program, concrete and as a template.
#[derive(Debug, Clone)]
pub struct PortInput {
    /// The port's interface name.
    pub port: String,
    /// What ports with the same program shape share (the filter's name).
    pub key: String,
    /// The filter's program with variables in place (shared: one per filter).
    pub template: std::sync::Arc<PortProgram>,
    /// This port's program with its values. Needed only when its filter
    /// cannot share chains (see [`shareable`]); otherwise [`PortInput::values`]
    /// is all that is used.
    pub concrete: Option<std::sync::Arc<PortProgram>>,
    /// This port's values for the template's per-port sets ([`port_values`]).
    pub values: std::sync::Arc<PortValues>,
    /// The port is a routed tap (not a bridge port): it is filtered in the
    /// inet family on the tap itself.
    pub routed: bool,
}

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
    chains: Vec<(String, Vec<String>)>,
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

/// Where a rule is, for naming its set.
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
    fn prefix(&self) -> String {
        format!("{}_{}", self.group, self.side.short())
    }

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
            let mut typeof_ = vec![key_sel.to_string()];
            let mut interval = false;
            for &i in &var_idx {
                typeof_.push(selector(r.conds[i].sel, v6));
                interval |= matches!(r.conds[i].test, Test::Masked(..));
            }
            let layer_tag = match layer {
                Layer::L2 => "l2",
                Layer::Ip => "ip",
            };
            let rev = if r.reversed { "r" } else { "" };
            let typeof_s = typeof_.join(" . ");
            // Named by what decides its elements (the rule instance's
            // fingerprint: its rule and the parameters on its path), not by
            // its position in the DAG: a filter redefined with one more rule
            // keeps its sets, so the change is chains only, whatever the
            // number of ports.
            let base = format!("{}_{layer_tag}{rev}_{:08x}", self.prefix(), fnv(&format!("{typeof_s}\u{0}{}", r.key)));
            let mut name = base.clone();
            let mut n = 1;
            while out.sets.iter().any(|s| s.name == name) {
                n += 1;
                name = format!("{base}_{n}");
            }
            parts.push(format!("{} @{name}", typeof_.join(" . ")));
            if let Some(old) = self.reuse.and_then(|sets| sets.get(&name)) {
                if old.typeof_ == typeof_s && old.interval == interval {
                    out.sets.push(SetDef { name, set: old.clone() });
                    return Ok(Some(parts.join(" ")));
                }
            }
            let mut elements = Vec::new();
            for (port, pv) in self.ports {
                for expansion in pv.expansions(self.side, r) {
                    let (text, more) = expansion.as_ref().map_err(|e| err(ExprError(format!("port {port}: {e}"))))?;
                    let key = match (ifname_key(port), more) {
                        (Some(mut k), Some(more)) => {
                            k.extend_from_slice(more);
                            Some(k)
                        }
                        _ => None,
                    };
                    elements.push((format!("{}{text}", text::ifname_checked(port)), key));
                }
            }
            elements.sort();
            elements.dedup_by(|a, b| a.0 == b.0);
            let set = PlannedSet { typeof_: typeof_s, interval, elements: elements.into_iter().collect() };
            out.sets.push(SetDef { name, set: Arc::new(set) });
        }
        Ok(Some(parts.join(" ")))
    }

    fn verdict(&self, a: Action, layer: Layer, in_sub: bool) -> String {
        let to_ip = format!("goto {}_ip", self.prefix());
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
        let pre = self.prefix();
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
                    let _ = write!(line, "jump {pre}_c{chain} comment \"chain {}\"", text::comment(name, 100));
                    root.push(line);
                }
            }
        }
        root.push(format!("goto {pre}_ip"));
        out.chains.push((pre.clone(), root));
        for (i, c) in p.chains.iter().enumerate() {
            let mut lines = Vec::new();
            for r in &c.rules {
                lines.extend(self.rule_line(r, Layer::L2, true, out)?);
            }
            out.chains.push((format!("{pre}_c{i}"), lines));
        }
        let mut ip = Vec::new();
        for r in &p.ip {
            ip.extend(self.rule_line(r, Layer::Ip, false, out)?);
        }
        ip.push("accept".into());
        out.chains.push((format!("{pre}_ip"), ip));
        Ok(())
    }
}

/// What one port contributes to its filter's shared sets: for each template
/// rule that uses variables (by side, instance and reversal), one set
/// element per expansion of the rule, already written (nft text and key
/// bytes, without the port's name in front). A daemon with thousands of
/// ports keeps this per port instead of the port's whole program: about a
/// kilobyte, and planning only prefixes the port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortValues {
    by_rule: Vec<(RuleKey, Vec<Result<Element, String>>)>,
}

/// A template rule's side, instance fingerprint and reversal: stable when
/// a filter is redefined without touching this rule (see
/// [`gw_resolve::ResolvedRule::key`]), so a port's values can be kept.
type RuleKey = (Side, u64, bool);

/// A set element after the port: " . value . value" and its key bytes.
type Element = (Box<str>, Option<Box<[u8]>>);

impl PortValues {
    /// Whether these values serve `template` as well as the template they
    /// were taken from (`from`): both have the same rules with variables
    /// (same fingerprints, sides and reversal). Then a redefinition that left
    /// those rules alone needs no port to be compiled again.
    pub fn fit(from: &PortProgram, template: &PortProgram) -> bool {
        var_rule_keys(from) == var_rule_keys(template)
    }

    fn expansions(&self, side: Side, t: &IrRule) -> &[Result<Element, String>] {
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
    let mut by_rule: BTreeMap<RuleKey, Vec<Result<Element, String>>> = BTreeMap::new();
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
                let mut text = String::new();
                let mut key = Some(Vec::new());
                let mut failed = None;
                for c in conds {
                    match element(c) {
                        Ok(e) => {
                            text.push_str(" . ");
                            text.push_str(&e);
                        }
                        Err(e) => failed = Some(e.0),
                    }
                    match (key.as_mut(), element_key(c)) {
                        (Some(k), Some(more)) => k.extend_from_slice(&more),
                        _ => key = None,
                    }
                }
                entry.push(match failed {
                    Some(e) => Err(e),
                    None => Ok((text.into_boxed_str(), key.map(Vec::into_boxed_slice))),
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

/// FNV-1a: a short stable hash for names.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The chain-name prefix of a group of ports sharing chains: readable, and
/// stable whatever other filters are bound, so an update touches only what
/// changed.
fn group_name(key: &str, own: Option<&str>, routed: bool) -> String {
    let full = match own {
        Some(p) => format!("{key}\u{0}{p}"),
        None => key.to_string(),
    };
    let mut readable: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(24).collect();
    if let Some(p) = own {
        readable.push('_');
        readable.extend(p.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
    }
    format!("{}_{readable}_{:08x}", if routed { "r" } else { "f" }, fnv(&full))
}

/// A set of per-port values, as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSet {
    typeof_: String,
    interval: bool,
    /// Each element as nft text, with its key bytes when netlink can write it.
    elements: BTreeMap<String, Option<Vec<u8>>>,
}

/// A change in three steps (see [`Plan::staged_update`]).
#[derive(Debug, Clone)]
pub struct Staged {
    /// nft: new sets (empty) and new chains.
    pub before: String,
    /// netlink: every element change, in one batch.
    pub elements: Vec<SetChange>,
    /// nft: chains and sets no longer used.
    pub after: String,
}

/// Everything guestwall's tables hold, before it is written as nft text.
/// Keep the plan that was applied: [`Plan::render_update`] turns the next
/// one into a transaction that touches only what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    features: Features,
    summary: Vec<String>,
    sets: BTreeMap<String, Arc<PlannedSet>>,
    from_guest: BTreeMap<String, String>,
    to_guest: BTreeMap<String, String>,
    chains: BTreeMap<String, Vec<String>>,
    same_byte: bool,
    uses_related: bool,
    /// Routed ports, in `table inet guestwall`.
    routed: RoutedPlan,
    /// Each shared group's ports and their values (kept, so that identity
    /// says "unchanged": see [`plan_from`]).
    members: BTreeMap<String, Vec<(String, Arc<PortValues>)>>,
}

/// The routed ports' part of a plan: chains, sets and maps in the inet table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct RoutedPlan {
    sets: BTreeMap<String, Arc<PlannedSet>>,
    from_guest: BTreeMap<String, String>,
    to_guest: BTreeMap<String, String>,
    chains: BTreeMap<String, Vec<String>>,
    skipped: usize,
}

impl RoutedPlan {
    /// The same chains and sets (of the same types): only elements differ.
    fn same_shape(&self, old: &RoutedPlan) -> bool {
        self.chains == old.chains
            && self.skipped == old.skipped
            && self.sets.len() == old.sets.len()
            && self
                .sets
                .iter()
                .all(|(n, s)| old.sets.get(n).is_some_and(|o| o.typeof_ == s.typeof_ && o.interval == s.interval))
    }
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
        sets: BTreeMap::new(),
        from_guest: BTreeMap::new(),
        to_guest: BTreeMap::new(),
        chains: BTreeMap::new(),
        same_byte: false,
        uses_related: false,
        routed: RoutedPlan::default(),
        members: BTreeMap::new(),
    };
    for ((routed, key, own), members) in &groups {
        let shared = own.is_none();
        let group = group_name(key, own.as_deref(), *routed);
        let pairs: Vec<(&str, &PortValues)> = members.iter().map(|p| (p.port.as_str(), &*p.values)).collect();
        let values: Vec<(String, Arc<PortValues>)> =
            members.iter().map(|p| (p.port.clone(), p.values.clone())).collect();
        let unchanged = prev.and_then(|p| p.members.get(&group)).is_some_and(|old| {
            old.len() == values.len()
                && old.iter().zip(&values).all(|((op, ov), (np, nv))| op == np && Arc::ptr_eq(ov, nv))
        });
        let reuse = match (unchanged, prev) {
            (true, Some(p)) if *routed => Some(&p.routed.sets),
            (true, Some(p)) => Some(&p.sets),
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
        let (from, to) = if *routed {
            (&mut plan.routed.from_guest, &mut plan.routed.to_guest)
        } else {
            (&mut plan.from_guest, &mut plan.to_guest)
        };
        for p in members {
            from.insert(p.port.clone(), format!("{group}_out"));
            to.insert(p.port.clone(), format!("{group}_in"));
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
    plan.chains = out.chains.into_iter().collect();
    plan.sets = sets(out.sets);
    plan.routed.chains = rout.chains.into_iter().collect();
    plan.routed.sets = sets(rout.sets);
    plan.routed.skipped = rout.skipped;
    plan.same_byte = out.needs_same_byte;
    plan.uses_related = out.uses_related || rout.uses_related;
    Ok(plan)
}

/// The whole ruleset for these ports, as one nft script that replaces
/// guestwall's tables atomically (`nft -f`), and nothing else.
pub fn build(ports: &[PortInput], features: Features) -> Result<String, BuildError> {
    plan(ports, features).map(|p| p.render_full())
}

fn set_body(s: &mut String, set: &PlannedSet, indent: &str, with_elements: bool) {
    let _ = writeln!(s, "{indent}  typeof {}", set.typeof_);
    if set.interval {
        let _ = writeln!(s, "{indent}  flags interval");
    }
    if with_elements && !set.elements.is_empty() {
        let _ =
            writeln!(s, "{indent}  elements = {{ {} }}", set.elements.keys().cloned().collect::<Vec<_>>().join(", "));
    }
}

fn map_elements(m: &BTreeMap<String, String>) -> Vec<String> {
    m.iter().map(|(port, chain)| format!("{} : goto {chain}", text::ifname_checked(port))).collect()
}

type Entries<'a, K, V> = Vec<(&'a K, &'a V)>;

/// What changed from `old` to `new`: the entries to remove (gone, or with
/// another value) and those to add (new, or with another value).
fn diff<'a, K: Ord, V: PartialEq>(
    old: &'a BTreeMap<K, V>,
    new: &'a BTreeMap<K, V>,
) -> (Entries<'a, K, V>, Entries<'a, K, V>) {
    let gone = old.iter().filter(|(k, v)| new.get(*k) != Some(*v)).collect();
    let added = new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).collect();
    (gone, added)
}

type Map = BTreeMap<String, String>;
type Sets = BTreeMap<String, Arc<PlannedSet>>;

/// One table's set and map element changes from `old` to `new` (sets new
/// here are diffed against empty ones), as deletions and additions; `None`
/// when a set changed its type or an element has no key bytes.
fn diff_family(
    family: u8,
    (sets, old_sets): (&Sets, &Sets),
    maps: [(&str, &Map, &Map); 2],
    (dels, adds): (&mut Vec<SetChange>, &mut Vec<SetChange>),
) -> Option<()> {
    let empty = BTreeMap::new();
    let mut push = |set: &str, add: bool, elements: Vec<(Vec<u8>, Option<String>)>| {
        if !elements.is_empty() {
            let change = SetChange { family, table: TABLE.into(), set: set.into(), add, elements };
            if add { &mut *adds } else { &mut *dels }.push(change);
        }
    };
    for (name, set) in sets {
        let o = match old_sets.get(name) {
            Some(o) if Arc::ptr_eq(o, set) => continue,
            Some(o) if o.typeof_ != set.typeof_ || o.interval != set.interval => return None,
            Some(o) => &o.elements,
            None => &empty,
        };
        let (gone, new) = diff(o, &set.elements);
        if set.interval && !(gone.is_empty() && new.is_empty()) {
            return None;
        }
        let keys = |l: Vec<(&String, &Option<Vec<u8>>)>| -> Option<Vec<_>> {
            l.into_iter().map(|(_, k)| k.clone().map(|k| (k, None))).collect()
        };
        push(name, false, keys(gone)?);
        push(name, true, keys(new)?);
    }
    for (map, new, oldm) in maps {
        let (gone, added) = diff(oldm, new);
        let gone = gone.into_iter().map(|(p, _)| ifname_key(p).map(|k| (k, None))).collect::<Option<_>>()?;
        let added =
            added.into_iter().map(|(p, c)| ifname_key(p).map(|k| (k, Some(c.clone())))).collect::<Option<_>>()?;
        push(map, false, gone);
        push(map, true, added);
    }
    Some(())
}

/// Chains in an order in which each is deleted before the chains it jumps to.
fn deletion_order(names: Vec<&String>) -> Vec<&String> {
    let rank = |n: &str| {
        if n.ends_with("_ip") {
            2
        } else if n.rsplit('_').next().is_some_and(|l| l.starts_with('c') && l[1..].bytes().all(|b| b.is_ascii_digit()))
        {
            1
        } else {
            0
        }
    };
    let mut v = names;
    v.sort_by_key(|n| rank(n));
    v
}

/// Writes the per-port part of a table: sets, the two dispatch maps, the
/// filters' chains and the two base chains that look ports up in the maps.
fn dispatch_body(
    s: &mut String,
    sets: &BTreeMap<String, Arc<PlannedSet>>,
    chains: &BTreeMap<String, Vec<String>>,
    from: (&str, &BTreeMap<String, String>),
    to: (&str, &BTreeMap<String, String>),
    (pre, post, priority): (&str, &str, i32),
    with_elements: bool,
) {
    for (name, set) in sets {
        let _ = writeln!(s, "  set {name} {{");
        set_body(s, set, "  ", with_elements);
        let _ = writeln!(s, "  }}");
    }
    for (name, m) in [from, to] {
        let _ = writeln!(s, "  map {name} {{\n    typeof iifname : verdict");
        if with_elements && !m.is_empty() {
            let _ = writeln!(s, "    elements = {{ {} }}", map_elements(m).join(", "));
        }
        let _ = writeln!(s, "  }}");
    }
    for (name, lines) in chains {
        let _ = writeln!(s, "  chain {name} {{");
        for l in lines {
            let _ = writeln!(s, "    {l}");
        }
        let _ = writeln!(s, "  }}");
    }
    // Ports whose binding cannot be read or compiled: nothing passes.
    let _ = writeln!(s, "  chain {BLOCKED} {{\n    drop\n  }}");
    for (chain, hook, key, map) in [(pre, "prerouting", "iifname", from.0), (post, "postrouting", "oifname", to.0)] {
        let _ = writeln!(
            s,
            "  chain {chain} {{\n    type filter hook {hook} priority {priority}; policy accept;\n    {key} vmap @{map}\n  }}"
        );
    }
}

/// The chain (in both tables) that drops everything: ports whose stored
/// binding is broken are dispatched to it, never left unfiltered.
pub const BLOCKED: &str = "blocked";

impl Plan {
    /// Blocks `ports` (that the plan has no filter for) in both families:
    /// each of their frames is dropped.
    pub fn block<'a>(&mut self, ports: impl IntoIterator<Item = &'a str>) {
        for port in ports {
            for (from, to) in
                [(&mut self.from_guest, &mut self.to_guest), (&mut self.routed.from_guest, &mut self.routed.to_guest)]
            {
                if !from.contains_key(port) {
                    from.insert(port.to_string(), BLOCKED.into());
                    to.insert(port.to_string(), BLOCKED.into());
                }
            }
        }
    }

    /// Whether `port` is dispatched to the blocking chain.
    pub fn is_blocked(&self, port: &str) -> bool {
        self.from_guest.get(port).is_some_and(|c| c == BLOCKED)
    }

    /// How many ports the plan filters.
    pub fn port_count(&self) -> usize {
        // A port not there yet is planned in both families.
        self.from_guest.len() + self.routed.from_guest.keys().filter(|p| !self.from_guest.contains_key(*p)).count()
    }

    /// Whether `port` is filtered by this plan.
    pub fn has_port(&self, port: &str) -> bool {
        self.from_guest.contains_key(port) || self.routed.from_guest.contains_key(port)
    }

    /// The script that replaces guestwall's tables with this plan.
    pub fn render_full(&self) -> String {
        self.render(true)
    }

    /// [`Plan::render_full`] without the per-port set and map elements:
    /// with [`Plan::all_elements`] after it, the same ruleset in two
    /// transactions, the large one written by netlink. Only for when
    /// guestwall's tables are absent (ports are unfiltered until the
    /// elements land, as they were before).
    pub fn render_skeleton(&self) -> String {
        self.render(false)
    }

    fn render(&self, with_elements: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# guestwall ruleset: {} port(s), {} filter program(s)",
            self.from_guest.len(),
            self.summary.len()
        );
        let _ = writeln!(s, "# {}", self.features.describe());
        for l in &self.summary {
            let _ = writeln!(s, "{l}");
        }
        // Creating the table first makes the delete valid on an empty host;
        // both happen in this one transaction with the new contents.
        let _ = writeln!(s, "table bridge {TABLE}\ndelete table bridge {TABLE}\ntable bridge {TABLE} {{");
        if self.features.state == StateSource::BrNetfilterMark {
            let _ = writeln!(s, "  counter {TAMPER_COUNTER} {{\n  }}");
        }
        if self.same_byte {
            let pairs: Vec<String> = (0..=255).map(|b| format!("{b} . {b}")).collect();
            let _ = writeln!(
                s,
                "  set same_byte {{\n    typeof @nh,112,8 . @nh,192,8\n    elements = {{ {} }}\n  }}",
                pairs.join(", ")
            );
        }
        // After br_netfilter (priority 0) so the inet hooks have run: conntrack
        // state is known and, without bridge conntrack, copied into the mark.
        dispatch_body(
            &mut s,
            &self.sets,
            &self.chains,
            ("from_guest", &self.from_guest),
            ("to_guest", &self.to_guest),
            ("prerouting", "postrouting", 200),
            with_elements,
        );
        let _ = writeln!(s, "}}");
        self.render_inet(&mut s, with_elements);
        s
    }

    fn render_inet(&self, s: &mut String, with_elements: bool) {
        let _ = writeln!(s, "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{");
        let r = &self.routed;
        // Routed taps: after conntrack (-200), on the tap itself.
        dispatch_body(
            s,
            &r.sets,
            &r.chains,
            ("routed_from_guest", &r.from_guest),
            ("routed_to_guest", &r.to_guest),
            ("routed_prerouting", "routed_postrouting", 0),
            with_elements,
        );
        // Kernels do not attach conntrack helpers by themselves any more; a
        // filter using RELATED (active FTP) needs the FTP helper.
        if self.uses_related {
            let _ = writeln!(s, "  ct helper ftp {{\n    type \"ftp\" protocol tcp\n  }}");
        }
        let states = self.features.mark.states();
        let marking = self.features.state == StateSource::BrNetfilterMark;
        if marking {
            // One verdict-map lookup per packet, then one rule that replaces
            // our bits and keeps the others (instead of a rule per state).
            let keep = !self.features.mark.mask();
            for (st, bit) in states {
                let _ =
                    writeln!(s, "  chain mark_{st} {{\n    meta mark set meta mark & {keep:#010x} | {bit:#010x}\n  }}");
            }
        }
        for (hook, name) in [("prerouting", "state_in"), ("output", "state_local")] {
            let _ = writeln!(s, "  chain {name} {{\n    type filter hook {hook} priority -150; policy accept;");
            if self.uses_related {
                let _ = writeln!(s, "    ct state new tcp dport 21 ct helper set \"ftp\"");
            }
            if marking {
                let arms: Vec<String> = states.iter().map(|(st, _)| format!("{st} : goto mark_{st}")).collect();
                let _ = writeln!(s, "    ct state vmap {{ {} }}", arms.join(", "));
            }
            let _ = writeln!(s, "  }}");
        }
        let _ = writeln!(s, "}}");
    }

    /// Every per-port set and map element, for netlink; `None` if some
    /// element can only be written as nft text.
    pub fn all_elements(&self) -> Option<Vec<SetChange>> {
        let mut out = Vec::new();
        for (family, sets, maps) in [
            (FAMILY_BRIDGE, &self.sets, [("from_guest", &self.from_guest), ("to_guest", &self.to_guest)]),
            (
                FAMILY_INET,
                &self.routed.sets,
                [("routed_from_guest", &self.routed.from_guest), ("routed_to_guest", &self.routed.to_guest)],
            ),
        ] {
            for (name, set) in sets {
                if set.elements.is_empty() {
                    continue;
                }
                if set.interval {
                    return None;
                }
                let elements = set.elements.values().map(|k| k.clone().map(|k| (k, None))).collect::<Option<_>>()?;
                out.push(SetChange { family, table: TABLE.into(), set: name.clone(), add: true, elements });
            }
            for (name, m) in maps {
                if m.is_empty() {
                    continue;
                }
                let elements =
                    m.iter().map(|(p, c)| ifname_key(p).map(|k| (k, Some(c.clone())))).collect::<Option<_>>()?;
                out.push(SetChange { family, table: TABLE.into(), set: name.into(), add: true, elements });
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
        if self.chains != old.chains || !self.sets.keys().eq(old.sets.keys()) {
            return None;
        }
        self.elements_diff(old)
    }

    fn same_table_parts(&self, old: &Plan) -> bool {
        self.features == old.features
            && self.same_byte == old.same_byte
            && self.uses_related == old.uses_related
            && self.routed == old.routed
    }

    /// The set and map element changes from `old`, for sets in this plan
    /// (sets new here are diffed against empty ones); `None` when a set
    /// changed its type or an element has no key bytes.
    fn elements_diff(&self, old: &Plan) -> Option<Vec<SetChange>> {
        if !(self.features == old.features
            && self.same_byte == old.same_byte
            && self.uses_related == old.uses_related
            && self.routed.same_shape(&old.routed))
        {
            return None;
        }
        let (mut dels, mut adds) = (Vec::new(), Vec::new());
        diff_family(
            FAMILY_BRIDGE,
            (&self.sets, &old.sets),
            [("from_guest", &self.from_guest, &old.from_guest), ("to_guest", &self.to_guest, &old.to_guest)],
            (&mut dels, &mut adds),
        )?;
        let (r, o) = (&self.routed, &old.routed);
        diff_family(
            FAMILY_INET,
            (&r.sets, &o.sets),
            [("routed_from_guest", &r.from_guest, &o.from_guest), ("routed_to_guest", &r.to_guest, &o.to_guest)],
            (&mut dels, &mut adds),
        )?;
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
        let t = format!("bridge {TABLE}");
        if old.chains.iter().any(|(n, lines)| self.chains.get(n).is_some_and(|l| l != lines)) {
            return None;
        }
        let elements = self.elements_diff(old)?;
        let mut before = String::new();
        self.render_additions(old, &t, false, &mut before);
        let mut after = String::new();
        self.render_removals(old, &t, &mut after);
        Some(Staged { before, elements, after })
    }

    /// Sets new in this plan (with their elements or empty) and chains new
    /// or changed since `old`, as nft commands on table `t`.
    fn render_additions(&self, old: &Plan, t: &str, with_elements: bool, s: &mut String) {
        for (name, set) in self.sets.iter().filter(|(n, _)| !old.sets.contains_key(*n)) {
            let _ = writeln!(s, "add set {t} {name} {{");
            set_body(s, set, "", with_elements);
            let _ = writeln!(s, "}}");
        }
        for name in self.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
            let _ = writeln!(s, "add chain {t} {name}");
        }
        for (name, lines) in &self.chains {
            match old.chains.get(name) {
                Some(o) if o == lines => continue,
                Some(_) => {
                    let _ = writeln!(s, "flush chain {t} {name}");
                }
                None => {}
            }
            for l in lines {
                let _ = writeln!(s, "add rule {t} {name} {l}");
            }
        }
    }

    /// Chains and sets of `old` this plan no longer has, deleted.
    fn render_removals(&self, old: &Plan, t: &str, s: &mut String) {
        let stale: Vec<&String> = old.chains.keys().filter(|n| !self.chains.contains_key(*n)).collect();
        // Stale chains may still jump to each other: empty them all first.
        for name in &stale {
            let _ = writeln!(s, "flush chain {t} {name}");
        }
        for name in deletion_order(stale) {
            let _ = writeln!(s, "delete chain {t} {name}");
        }
        for name in old.sets.keys().filter(|n| !self.sets.contains_key(*n)) {
            let _ = writeln!(s, "delete set {t} {name}");
        }
    }

    /// A transaction that turns `old` (what is loaded) into this plan,
    /// touching only what differs: set and map elements of ports that came,
    /// went or changed, and the chains of filters that changed. Falls back
    /// to a full replacement when the table-wide parts differ. Empty when
    /// nothing changed.
    pub fn render_update(&self, old: &Plan) -> String {
        if !self.same_table_parts(old) {
            return self.render_full();
        }
        let t = format!("bridge {TABLE}");
        let mut s = String::new();
        self.render_additions(old, &t, true, &mut s);
        let mut elements = |verb: &str, set: &str, list: Vec<String>| {
            if !list.is_empty() {
                let _ = writeln!(s, "{verb} element {t} {set} {{ {} }}", list.join(", "));
            }
        };
        for (name, set) in &self.sets {
            if let Some(o) = old.sets.get(name).filter(|o| !Arc::ptr_eq(o, set)) {
                let (gone, new) = diff(&o.elements, &set.elements);
                elements("delete", name, gone.into_iter().map(|(k, _)| k.clone()).collect());
                elements("add", name, new.into_iter().map(|(k, _)| k.clone()).collect());
            }
        }
        for (map, new, oldm) in
            [("from_guest", &self.from_guest, &old.from_guest), ("to_guest", &self.to_guest, &old.to_guest)]
        {
            let (gone, added) = diff(oldm, new);
            let entry = |(p, c): (&String, &String)| format!("{} : goto {c}", text::ifname_checked(p));
            // A port moving to another filter is deleted and re-added in the
            // same transaction: it is never unfiltered.
            elements("delete", map, gone.into_iter().map(entry).collect());
            elements("add", map, added.into_iter().map(entry).collect());
        }
        self.render_removals(old, &t, &mut s);
        s
    }
}
