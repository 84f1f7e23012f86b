//! Filters, rules and filter references.

use crate::param::ParamValue;
use crate::protocol::{has_ipset_fixup, negation_links, Field, Protocol};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Drop the packet.
    Drop,
    /// Accept the packet (for this layer).
    Accept,
    /// Drop it and tell the sender (ICMP unreachable / TCP reset).
    Reject,
    /// Leave the current chain; evaluation goes on in the caller.
    Return,
    /// Go on with the next rule.
    Continue,
}

impl Action {
    /// All actions with their XML names.
    pub const NAMES: [(Action, &'static str); 5] = [
        (Action::Drop, "drop"),
        (Action::Accept, "accept"),
        (Action::Reject, "reject"),
        (Action::Return, "return"),
        (Action::Continue, "continue"),
    ];

    /// The XML name.
    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(a, _)| *a == self).map(|(_, n)| *n).unwrap_or("drop")
    }

    /// Reads an XML name (exact, as libvirt).
    pub fn from_name(s: &str) -> Option<Action> {
        Self::NAMES.iter().find(|(_, n)| *n == s).map(|(a, _)| *a)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which traffic a rule looks at, seen from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic sent to the guest.
    In,
    /// Traffic sent by the guest.
    Out,
    /// Both.
    Inout,
}

impl Direction {
    /// All directions with their XML names.
    pub const NAMES: [(Direction, &'static str); 3] =
        [(Direction::In, "in"), (Direction::Out, "out"), (Direction::Inout, "inout")];

    /// The XML name.
    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(a, _)| *a == self).map(|(_, n)| *n).unwrap_or("in")
    }

    /// Reads an XML name (exact, as libvirt).
    pub fn from_name(s: &str) -> Option<Direction> {
        Self::NAMES.iter().find(|(_, n)| *n == s).map(|(a, _)| *a)
    }

    /// Whether this direction covers traffic sent by the guest.
    pub fn covers_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Inout)
    }

    /// Whether this direction covers traffic sent to the guest.
    pub fn covers_in(self) -> bool {
        matches!(self, Direction::In | Direction::Inout)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rule priorities are in this range; 500 when not given.
pub const RULE_PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;
/// The priority of a rule that gives none.
pub const DEFAULT_RULE_PRIORITY: i32 = 500;
/// Chain priorities are in this range.
pub const CHAIN_PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;
/// Longest chain name libvirt accepts.
pub const MAX_CHAIN_NAME_LEN: usize = 12;

/// The protocol families a chain name can start with, in the order libvirt
/// tries them.
pub const CHAIN_PREFIXES: [&str; 8] = ["root", "mac", "vlan", "stp", "arp", "rarp", "ipv4", "ipv6"];

/// The default priority of a chain, from its prefix, as libvirt 9.0 assigns it.
///
/// libvirt documents -810 for `stp` but its lookup table has no `stp` entry,
/// so `stp` chains get 0 (the middle of the range). We follow the code: it is
/// what `virsh nwfilter-dumpxml` shows and what orders the rules.
pub fn default_chain_priority(chain: &str) -> i32 {
    match chain_prefix(chain) {
        Some("mac") => -800,
        Some("vlan") => -750,
        Some("ipv4") => -700,
        Some("ipv6") => -600,
        Some("arp") => -500,
        Some("rarp") => -400,
        _ => 0,
    }
}

/// The protocol prefix of a chain name (`arp-xyz` → `arp`), as libvirt
/// checks it: `root` only as a whole name, the others as prefixes.
pub fn chain_prefix(chain: &str) -> Option<&'static str> {
    for p in CHAIN_PREFIXES {
        if p == "root" {
            if chain == "root" {
                return Some("root");
            }
            if chain.starts_with("root") {
                return None;
            }
        }
        if chain.starts_with(p) {
            return Some(p);
        }
    }
    None
}

/// Checks a chain name; the error says what is allowed.
pub fn check_chain_name(chain: &str) -> Result<&'static str, String> {
    if chain.len() > MAX_CHAIN_NAME_LEN {
        let shown = crate::text::Shown(chain);
        return Err(format!("chain name '{shown}' is longer than {MAX_CHAIN_NAME_LEN} characters"));
    }
    if let Some(c) = chain.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.:-".contains(*c))) {
        let shown = crate::text::Shown(chain);
        return Err(format!("chain name '{shown}' has the character {:?}; allowed are letters, digits and _.:-", c));
    }
    chain_prefix(chain).ok_or_else(|| {
        format!(
            "invalid chain name '{chain}': use 'root' or a name starting with mac, vlan, stp, arp, rarp, ipv4 or ipv6"
        )
    })
}

/// Checks a filter's name: no '/' (names are file names in the daemon's
/// store, as in libvirt's) and no control or format characters (see
/// [`crate::text`]). Emptiness is the caller's to judge.
pub fn check_filter_name(name: &str) -> Result<(), String> {
    crate::text::check_no_control("filter name", name)?;
    if name.contains('/') {
        return Err(format!("filter name '{name}' must not contain '/'"));
    }
    Ok(())
}

/// A filter: a named, ordered list of rules and references to other filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// The filter's name.
    pub name: String,
    /// The chain its Ethernet-level rules go to (`root` when not given).
    pub chain: String,
    /// The chain's priority (the chain's default when not given).
    pub priority: i32,
    /// The filter's UUID, lower-case with dashes, when it has one.
    pub uuid: Option<String>,
    /// Rules and filter references, in document order.
    pub entries: Vec<Entry>,
}

impl Filter {
    /// A filter with no entries in the root chain.
    pub fn new(name: impl Into<String>) -> Filter {
        Filter { name: name.into(), chain: "root".into(), priority: 0, uuid: None, entries: Vec::new() }
    }

    /// The names of the filters this one references, in order.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|e| match e {
            Entry::FilterRef(r) => Some(r.filter.as_str()),
            Entry::Rule(_) => None,
        })
    }
}

/// One entry of a filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// A rule.
    Rule(Rule),
    /// A reference to another filter.
    FilterRef(FilterRef),
}

/// `<filterref filter='NAME'>` with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRef {
    /// The referenced filter.
    pub filter: String,
    /// Parameters by name; a name given several times is a list.
    #[serde(deserialize_with = "params_from_json")]
    pub params: BTreeMap<String, Vec<ParamValue>>,
}

/// Reads a filterref's parameters (a map of names to lists of strings),
/// each value as a [`ParamValue`]. Not through `ParamValue`'s own
/// `Deserialize`: a refused value's message names its parameter, as the XML
/// reader's does.
fn params_from_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<ParamValue>>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = BTreeMap<String, Vec<ParamValue>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of parameter names to lists of values")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((name, texts)) = map.next_entry::<String, Vec<String>>()? {
                let values = texts
                    .into_iter()
                    .map(|t| {
                        ParamValue::new(t)
                            .map_err(|e| serde::de::Error::custom(crate::binding::param_value_refused(&name, e)))
                    })
                    .collect::<Result<Vec<_>, A::Error>>()?;
                out.insert(name, values);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Visitor)
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// What it does.
    pub action: Action,
    /// Which traffic it looks at.
    pub direction: Direction,
    /// Its priority, -1000..=1000.
    pub priority: i32,
    /// `false` when `statematch='false'` turned off the automatic state match.
    pub statematch: bool,
    /// What it matches; `None` matches every frame.
    pub matches: Option<ProtocolMatch>,
}

impl Rule {
    /// A rule with the default priority and no match.
    pub fn new(action: Action, direction: Direction) -> Rule {
        Rule { action, direction, priority: DEFAULT_RULE_PRIORITY, statematch: true, matches: None }
    }
}

/// The protocol element of a rule with its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolMatch {
    /// The protocol.
    pub protocol: Protocol,
    /// Attributes that are set.
    pub fields: BTreeMap<Field, FieldValue>,
}

/// One attribute's value and whether it is negated (`match='no'`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldValue {
    /// The value.
    pub value: Value,
    /// `true` when the attribute came from an element with `match='no'`.
    pub negated: bool,
}

/// What libvirt's post-parse clean-up changed in a rule; the reader turns
/// these into warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixupChange {
    /// `field`'s `match='no'` was replaced by `leader`'s.
    NegationChanged {
        /// The attribute whose negation changed.
        field: Field,
        /// The attribute it now follows.
        leader: Field,
        /// The negation it has now.
        now_negated: bool,
    },
    /// `ipset`/`ipsetflags` were dropped (libvirt keeps them only when
    /// `ipset` is given without `ipsetflags`, except on `all`).
    IpSetDropped,
    /// `ipsetflags='src'` was added to an `ipset` without flags.
    IpSetFlagsDefaulted,
}

impl ProtocolMatch {
    /// An element with no attributes.
    pub fn new(protocol: Protocol) -> ProtocolMatch {
        ProtocolMatch { protocol, fields: BTreeMap::new() }
    }

    /// The value of an attribute, if set.
    pub fn get(&self, field: Field) -> Option<&FieldValue> {
        self.fields.get(&field)
    }

    /// Applies libvirt's post-parse clean-up (`virNWFilterRuleDefFixup`):
    /// masks and range ends follow the negation of their leader, and ipset
    /// attributes are normalised. Returns what it changed.
    pub fn fixup(&mut self) -> Vec<FixupChange> {
        let mut changes = Vec::new();
        for &(follower, leader) in negation_links(self.protocol) {
            let lead_neg = self.fields.get(&leader).is_some_and(|v| v.negated);
            if let Some(fv) = self.fields.get_mut(&follower) {
                if fv.negated != lead_neg {
                    fv.negated = lead_neg;
                    changes.push(FixupChange::NegationChanged { field: follower, leader, now_negated: lead_neg });
                }
            }
        }
        if has_ipset_fixup(self.protocol) {
            let has_set = self.fields.contains_key(&Field::IpSet);
            let has_flags = self.fields.contains_key(&Field::IpSetFlags);
            if has_set && !has_flags {
                let negated = false;
                self.fields.insert(Field::IpSetFlags, FieldValue { value: Value::IpSetFlags(vec![true]), negated });
                changes.push(FixupChange::IpSetFlagsDefaulted);
            } else if has_set || has_flags {
                self.fields.remove(&Field::IpSet);
                self.fields.remove(&Field::IpSetFlags);
                changes.push(FixupChange::IpSetDropped);
            }
        }
        changes
    }

    /// The variables this match uses, in libvirt's order (attribute table
    /// order), each once.
    pub fn variables(&self) -> Vec<&crate::value::VarAccess> {
        let mut out: Vec<&crate::value::VarAccess> = Vec::new();
        for spec in self.protocol.attributes() {
            if let Some(FieldValue { value: Value::Var(v), .. }) = self.fields.get(&spec.field) {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names() {
        assert_eq!(check_chain_name("root"), Ok("root"));
        assert_eq!(check_chain_name("arp-xyz"), Ok("arp"));
        assert_eq!(check_chain_name("rarp-x"), Ok("rarp"));
        assert_eq!(check_chain_name("macfoo"), Ok("mac"));
        assert!(check_chain_name("rootx").is_err());
        assert!(check_chain_name("tcp").is_err());
        assert!(check_chain_name("arp-waytoolong").is_err());
        assert!(check_chain_name("arp/x").is_err());
        assert_eq!(default_chain_priority("arp-x"), -500);
        assert_eq!(default_chain_priority("stp-xyz"), 0);
    }
}
