//! guestwall's two tables as data: what [`crate::plan()`] produces,
//! `render` writes as nft text, `delta` compares, and [`crate::fake`]
//! loads.
//!
//! A [`Plan`] holds one [`TablePlan`] per [`Family`]: the per-port part
//! (the filters' chains, the per-port sets and the two dispatch maps).
//! The rest of each table (the blocking chain, the base chains, the inet
//! table's conntrack-state copy) follows from the features and two flags,
//! and is given as data by [`Plan::dispatch_chains`] and
//! [`Plan::state_chains`]. Chains carry their kind (base chain with hook
//! and priority, or a filter's chain at one layer) so that nothing parses
//! it back out of a name; rule bodies stay nft text, so that nft's errors
//! stay readable.

use crate::element::{Datum, Element};
use crate::features::{Features, StateSource};
use crate::names::{self, Family, BLOCKED, STATE_IN, STATE_LOCAL, STATE_MARK_PRIORITY};
use gw_ir::{PortProgram, Side};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A hook a base chain hangs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Frames and packets as they arrive.
    Prerouting,
    /// Frames and packets as they leave.
    Postrouting,
    /// Packets the host itself sends.
    Output,
}

impl Hook {
    /// The hook as nft spells it.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Postrouting => "postrouting",
            Hook::Output => "output",
        }
    }
}

/// Where a filter's chain sits in one side's program. The order is the
/// order of jumps: a root jumps to sub-chains and goes to the IP layer, a
/// sub-chain goes to the IP layer, the IP layer jumps nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    /// The Ethernet layer's root, where the dispatch map goes.
    Root,
    /// A protocol sub-chain of the Ethernet layer.
    Sub,
    /// The IP layer.
    Ip,
}

/// What kind of chain a chain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// Called by the kernel at `hook`, in `priority` order; its policy is
    /// accept (what it does not drop goes on to other tables' chains).
    Base {
        /// The hook.
        hook: Hook,
        /// The priority (see the constants in [`crate::names`]).
        priority: i32,
    },
    /// A filter's chain, shared by the ports bound to it.
    Filter(Layer),
    /// Any other regular chain; it jumps nowhere.
    Leaf,
}

/// A chain: its kind and its rules (nft text, one rule a line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Base or regular, and for a filter's chain its layer.
    pub kind: ChainKind,
    /// The rules, in order.
    pub rules: Vec<String>,
}

impl Chain {
    /// A regular chain that jumps nowhere.
    pub fn leaf(rules: Vec<String>) -> Chain {
        Chain { kind: ChainKind::Leaf, rules }
    }

    /// A base chain.
    pub fn base(hook: Hook, priority: i32, rules: Vec<String>) -> Chain {
        Chain { kind: ChainKind::Base { hook, priority }, rules }
    }
}

/// A set's key type: the nft expressions whose values it holds, joined
/// as nft's `typeof` (the port's interface name first), and whether its
/// elements are intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetType {
    /// The fields (nft expressions such as `iifname`, `ip saddr`).
    pub fields: Vec<String>,
    /// `flags interval`: elements are prefixes or ranges.
    pub interval: bool,
}

impl SetType {
    /// The key as nft's `typeof` (and as a rule's lookup) writes it.
    pub fn typeof_(&self) -> String {
        self.fields.join(" . ")
    }
}

/// A set of per-port values, as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSet {
    /// The key type.
    pub ty: SetType,
    /// The elements, each once, ordered by their nft text (the order the
    /// scripts list them in).
    pub elements: Vec<Element>,
}

/// One family's per-port part: the filters' chains, the per-port sets and
/// the dispatch maps (port to the root chain of its side).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TablePlan {
    /// Per-port sets by name.
    pub sets: BTreeMap<String, Arc<PlannedSet>>,
    /// `from_map`: each port's chain for the frames it sends.
    pub from_guest: BTreeMap<String, String>,
    /// `to_map`: each port's chain for the frames sent to it.
    pub to_guest: BTreeMap<String, String>,
    /// The filters' chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Rules left out because no packet in this family can match them.
    pub skipped: usize,
}

impl TablePlan {
    /// The two dispatch maps: name and port-to-chain entries.
    pub fn maps(&self, family: Family) -> [(&'static str, &BTreeMap<String, String>); 2] {
        let d = family.dispatch();
        [(d.from_map, &self.from_guest), (d.to_map, &self.to_guest)]
    }

    /// The same chains, and the same sets with the same types: only
    /// elements differ.
    pub fn same_shape(&self, old: &TablePlan) -> bool {
        self.chains == old.chains
            && self.sets.len() == old.sets.len()
            && self.sets.iter().all(|(n, s)| old.sets.get(n).is_some_and(|o| o.ty == s.ty))
    }
}

/// What one port contributes to its filter's shared sets: for each template
/// rule that uses variables (by side, instance and reversal), one set
/// element per expansion of the rule, as typed values (without the port in
/// front). A daemon with thousands of ports keeps this per port instead of
/// the port's whole program: about a kilobyte, and planning only prefixes
/// the port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortValues {
    pub(crate) by_rule: Vec<(RuleKey, Vec<Expansion>)>,
}

/// One expansion of a rule for a port: its values in the set's key order
/// (after the port), or why they cannot be written.
pub(crate) type Expansion = Result<Box<[Datum]>, String>;

/// A template rule's side, instance fingerprint and reversal: stable when
/// a filter is redefined without touching this rule (see
/// [`gw_resolve::ResolvedRule::key`]), so a port's values can be kept.
pub(crate) type RuleKey = (Side, u64, bool);

/// A port to filter: its name and its program, concrete and as a template.
#[derive(Debug, Clone)]
pub struct PortInput {
    /// The port's interface name.
    pub port: String,
    /// What ports with the same program shape share (the filter's name).
    pub key: String,
    /// The filter's program with variables in place (shared: one per filter).
    pub template: Arc<PortProgram>,
    /// This port's program with its values. Needed only when its filter
    /// cannot share chains (see [`crate::shareable`]); otherwise
    /// [`PortInput::values`] is all that is used.
    pub concrete: Option<Arc<PortProgram>>,
    /// This port's values for the template's per-port sets ([`crate::port_values`]).
    pub values: Arc<PortValues>,
    /// The port is a routed tap (not a bridge port): it is filtered in the
    /// inet family on the tap itself.
    pub routed: bool,
}

/// A change in three steps (see [`Plan::staged_update`]).
#[derive(Debug, Clone)]
pub struct Staged {
    /// nft: new sets (empty) and new chains.
    pub before: String,
    /// netlink: every element change, in one batch.
    pub elements: Vec<crate::netlink::SetChange>,
    /// nft: chains and sets no longer used.
    pub after: String,
}

/// Everything guestwall's tables hold, before it is written as nft text.
/// Keep the plan that was applied: [`Plan::render_update`] turns the next
/// one into a transaction that touches only what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub(crate) features: Features,
    /// `#` lines for the script's header: one per group of ports.
    pub(crate) summary: Vec<String>,
    /// Bridged ports, in `table bridge guestwall`.
    pub(crate) bridge: TablePlan,
    /// Routed ports, in `table inet guestwall`.
    pub(crate) inet: TablePlan,
    /// Some rule compares byte pairs through [`names::SAME_BYTE`].
    pub(crate) same_byte: bool,
    /// Some rule reads RELATED: the FTP helper is assigned.
    pub(crate) uses_related: bool,
    /// Each shared group's ports and their values (kept, so that identity
    /// says "unchanged": see [`crate::plan_from`]).
    pub(crate) members: BTreeMap<String, Vec<(String, Arc<PortValues>)>>,
}

impl Plan {
    /// One family's per-port part.
    pub fn table(&self, family: Family) -> &TablePlan {
        match family {
            Family::Bridge => &self.bridge,
            Family::Inet => &self.inet,
        }
    }

    /// The features the plan was made for.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Whether the parts of the tables that are not per port are the same:
    /// then only per-port parts need to change.
    pub(crate) fn same_table_parts(&self, old: &Plan) -> bool {
        self.features == old.features && self.same_byte == old.same_byte && self.uses_related == old.uses_related
    }

    /// The chains every table has after the filters' chains: the one that
    /// blocks, and the two base chains that look ports up in the maps.
    pub fn dispatch_chains(&self, family: Family) -> [(String, Chain); 3] {
        let d = family.dispatch();
        [
            // Ports whose binding cannot be read or compiled: nothing passes.
            (BLOCKED.to_string(), Chain::leaf(vec!["drop".into()])),
            (
                d.pre_chain.to_string(),
                Chain::base(Hook::Prerouting, d.priority, vec![format!("iifname vmap @{}", d.from_map)]),
            ),
            (
                d.post_chain.to_string(),
                Chain::base(Hook::Postrouting, d.priority, vec![format!("oifname vmap @{}", d.to_map)]),
            ),
        ]
    }

    /// The inet table's chains that copy conntrack state into the mark
    /// bits (when there is no bridge conntrack) and assign the FTP helper.
    pub fn state_chains(&self) -> Vec<(String, Chain)> {
        let mut out = Vec::new();
        let states = self.features.mark.states();
        let marking = self.features.state == StateSource::BrNetfilterMark;
        if marking {
            // One verdict-map lookup per packet, then one rule that replaces
            // our bits and keeps the others (instead of a rule per state).
            let keep = !self.features.mark.mask();
            for (st, bit) in states {
                out.push((
                    names::mark_chain(st),
                    Chain::leaf(vec![format!("meta mark set meta mark & {keep:#010x} | {bit:#010x}")]),
                ));
            }
        }
        for (hook, name) in [(Hook::Prerouting, STATE_IN), (Hook::Output, STATE_LOCAL)] {
            let mut rules = Vec::new();
            if self.uses_related {
                rules.push(format!("ct state new tcp dport 21 ct helper set \"{}\"", names::FTP_HELPER));
            }
            if marking {
                let arms: Vec<String> =
                    states.iter().map(|(st, _)| format!("{st} : goto {}", names::mark_chain(st))).collect();
                rules.push(format!("ct state vmap {{ {} }}", arms.join(", ")));
            }
            out.push((name.to_string(), Chain::base(hook, STATE_MARK_PRIORITY, rules)));
        }
        out
    }

    /// Blocks `ports` (that the plan has no filter for) in both families:
    /// each of their frames is dropped.
    pub fn block<'a>(&mut self, ports: impl IntoIterator<Item = &'a str>) {
        for port in ports {
            for t in [&mut self.bridge, &mut self.inet] {
                if !t.from_guest.contains_key(port) {
                    t.from_guest.insert(port.to_string(), BLOCKED.into());
                    t.to_guest.insert(port.to_string(), BLOCKED.into());
                }
            }
        }
    }

    /// Whether `port` is dispatched to the blocking chain.
    pub fn is_blocked(&self, port: &str) -> bool {
        self.bridge.from_guest.get(port).is_some_and(|c| c == BLOCKED)
    }

    /// Whether `port` is filtered by this plan.
    pub fn has_port(&self, port: &str) -> bool {
        self.bridge.from_guest.contains_key(port) || self.inet.from_guest.contains_key(port)
    }
}
