//! From a filter and a binding's parameters to the ordered rules a port gets.
//!
//! This is libvirt's instantiation (`virNWFilterDefToInst` in
//! `nwfilter_gentech_driver.c` and the ordering in
//! `ebiptablesApplyNewRules`), as pure data:
//! 1. walk the filterref DAG depth-first; a filterref's parameters are
//!    defaults that the caller's variables override; unknown filters and
//!    cycles are errors;
//! 2. check every variable a rule uses is defined (and every `$X[N]` has an
//!    N-th value), reporting all that are missing at once;
//! 3. sort the rules: rules of filters in the `root` chain first, then by
//!    priority, keeping document order among equals;
//! 4. expand list variables: `$X` / `$X[@N]` walk lists (same N in lockstep,
//!    different N in all combinations, duplicates skipped), `$X[N]` picks one;
//! 5. split by layer: Ethernet rules go to their filter's chain, with jumps
//!    from `root` placed by chain priority; IPv4 and IPv6 transport rules form
//!    one list each, where chains do not apply.
//!
//! The result is deterministic: the same filters and parameters give the same
//! [`Resolved`], byte for byte once serialised.

use gw_model::filter::chain_prefix;
use gw_model::value::{parse_value, Access};
use gw_model::{Entry, FieldValue, Filter, Layer, ProtocolMatch, Rule, Value, VarAccess};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Variable values by name; a list has several values.
pub type Params = BTreeMap<String, Vec<String>>;

/// Where filters are looked up by name.
pub trait FilterSource {
    /// The filter of that name, if there is one.
    fn filter(&self, name: &str) -> Option<&Filter>;
}

impl FilterSource for BTreeMap<String, Filter> {
    fn filter(&self, name: &str) -> Option<&Filter> {
        self.get(name)
    }
}

/// libvirt's reserved variable names.
pub mod reserved {
    /// The guest's IPv4 address(es); learned when not given.
    pub const IP: &str = "IP";
    /// The guest's MAC address; the binding's MAC when not given.
    pub const MAC: &str = "MAC";
    /// The guest's IPv6 address(es).
    pub const IPV6: &str = "IPV6";
    /// Trusted DHCP server(s).
    pub const DHCPSERVER: &str = "DHCPSERVER";
    /// Trusted DHCPv6 server(s).
    pub const DHCPSERVERV6: &str = "DHCPSERVERV6";
    /// How to learn IP: any, dhcp or none.
    pub const CTRL_IP_LEARNING: &str = "CTRL_IP_LEARNING";
    /// All of them.
    pub const ALL: [&str; 6] = [IP, MAC, IPV6, DHCPSERVER, DHCPSERVERV6, CTRL_IP_LEARNING];
}

/// Why a binding's rules could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A filterref names a filter that does not exist.
    #[error("filter '{from}' references unknown filter '{missing}'")]
    UnknownFilter {
        /// The referencing filter.
        from: String,
        /// The name that was not found.
        missing: String,
    },
    /// Filters reference each other in a loop.
    #[error("filterref cycle: {}", path.join(" -> "))]
    Cycle {
        /// The filters on the loop, the first repeated at the end.
        path: Vec<String>,
    },
    /// Variables used by rules have no value.
    #[error("cannot resolve filter '{filter}': unresolvable variables or unavailable list elements: {}", missing.join(", "))]
    MissingVariables {
        /// The top filter.
        filter: String,
        /// The variable accesses without value (`IP`, `PORTS[3]`).
        missing: Vec<String>,
    },
    /// Variables walked by one iterator have lists of different lengths.
    #[error("filter '{filter}' rule {rule}: variables {} share iterator {iterator} but their lists have different lengths ({})", vars.join(", "), lengths.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(" vs "))]
    ListLengthMismatch {
        /// The filter holding the rule.
        filter: String,
        /// The rule's position in that filter (1-based, counting rules and filterrefs).
        rule: usize,
        /// The iterator id.
        iterator: u32,
        /// The variables walked together.
        vars: Vec<String>,
        /// Their list lengths.
        lengths: Vec<usize>,
    },
    /// A variable's value does not fit the attribute it is used in.
    #[error("{0}")]
    BadValue(Box<BadValue>),
    /// A parameter value has characters libvirt does not allow.
    #[error("parameter {name}: value '{value}' may only have letters, digits and _.:")]
    BadParameter {
        /// The parameter.
        name: String,
        /// Its value.
        value: String,
    },
}

/// A variable's value that does not fit the attribute it is used in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter '{filter}' rule {rule}: <{protocol} {attribute}='${var}'>: value '{value}' does not fit: {reason}")]
pub struct BadValue {
    /// The filter holding the rule.
    pub filter: String,
    /// The rule's position in that filter (1-based).
    pub rule: usize,
    /// The protocol element.
    pub protocol: String,
    /// The attribute.
    pub attribute: String,
    /// The variable access.
    pub var: String,
    /// The offending value.
    pub value: String,
    /// What is allowed.
    pub reason: String,
}

/// Where a resolved rule came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The filter that holds the rule.
    pub filter: String,
    /// Its position among that filter's entries (1-based).
    pub entry: usize,
}

/// One rule with all variables filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedRule {
    /// The rule, its match holding only concrete values.
    pub rule: Rule,
    /// The chain of its filter.
    pub chain: String,
    /// Where it came from.
    pub origin: Origin,
    /// The index of the rule instance it expands (see [`template`]): all
    /// expansions of one instance share it.
    pub inst: usize,
    /// A fingerprint of the instance (its rule, the filterref parameters on
    /// its path, its chain): the same in every resolution of a library in
    /// which that instance is unchanged, wherever other rules come or go.
    /// Equal keys mean equal values for equal binding parameters.
    #[serde(skip)]
    pub key: u64,
}

/// A jump from the root chain into a sub-chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jump {
    /// The sub-chain.
    pub chain: String,
    /// Its priority, which places the jump among root rules.
    pub priority: i32,
    /// The protocol family the chain is for (its name's prefix).
    pub family: String,
    /// Whether traffic sent by the guest goes there (some rule is out/inout).
    pub out: bool,
    /// Whether traffic sent to the guest goes there (some rule is in/inout).
    pub r#in: bool,
}

/// An entry of the root chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RootEntry {
    /// A rule of a filter in the root chain.
    Rule(ResolvedRule),
    /// A jump to a sub-chain.
    Jump(Jump),
}

/// A sub-chain with its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubChain {
    /// The chain's name (`arp`, `ipv4`, `arp-xyz`, ...).
    pub name: String,
    /// Its priority.
    pub priority: i32,
    /// Its rules in order.
    pub rules: Vec<ResolvedRule>,
}

/// The flattened, ordered rules a binding gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// The top filter.
    pub filter: String,
    /// The variables used, as given.
    pub params: Params,
    /// The Ethernet-level root chain: rules and jumps in order.
    pub root: Vec<RootEntry>,
    /// The Ethernet-level sub-chains, in jump order.
    pub chains: Vec<SubChain>,
    /// IPv4 transport rules in order.
    pub ipv4: Vec<ResolvedRule>,
    /// IPv6 transport rules in order.
    pub ipv6: Vec<ResolvedRule>,
}

impl Resolved {
    /// Every rule, in the order the listing shows them.
    pub fn rules(&self) -> impl Iterator<Item = &ResolvedRule> {
        self.root
            .iter()
            .filter_map(|e| match e {
                RootEntry::Rule(r) => Some(r),
                RootEntry::Jump(_) => None,
            })
            .chain(self.chains.iter().flat_map(|c| c.rules.iter()))
            .chain(self.ipv4.iter())
            .chain(self.ipv6.iter())
    }
}

/// A rule found in the DAG walk, with the filterref parameters on its path.
struct RuleInst<'a> {
    rule: &'a Rule,
    chain: &'a str,
    chain_priority: i32,
    origin: Origin,
    /// filterref parameters from the outermost reference inwards.
    path: Vec<&'a Params>,
    /// See [`ResolvedRule::key`].
    key: u64,
}

impl<'a> RuleInst<'a> {
    /// The variables this rule sees for a binding with `params`: each
    /// filterref's parameters are defaults the caller's variables override
    /// (libvirt's virNWFilterCreateVarsFrom).
    fn vars<'s>(&'s self, params: &'s Params) -> Vars<'s> {
        Vars { params, path: &self.path }
    }
}

/// The variables a rule instance sees, looked up without copying them (a
/// binding's resolution reads them once per rule instance).
#[derive(Clone, Copy)]
struct Vars<'a> {
    params: &'a Params,
    path: &'a [&'a Params],
}

impl<'a> Vars<'a> {
    fn get(&self, name: &str) -> Option<&'a Vec<String>> {
        self.params.get(name).or_else(|| self.path.iter().find_map(|p| p.get(name)))
    }
}

fn walk<'a>(
    src: &'a dyn FilterSource,
    filter: &'a Filter,
    path: &mut Vec<&'a Params>,
    stack: &mut Vec<String>,
    out: &mut Vec<RuleInst<'a>>,
) -> Result<(), ResolveError> {
    stack.push(filter.name.clone());
    for (i, e) in filter.entries.iter().enumerate() {
        match e {
            Entry::Rule(rule) => out.push(RuleInst {
                rule,
                chain: &filter.chain,
                chain_priority: filter.priority,
                origin: Origin { filter: filter.name.clone(), entry: i + 1 },
                path: path.clone(),
                key: 0,
            }),
            Entry::FilterRef(fr) => {
                if let Some(pos) = stack.iter().position(|n| n == &fr.filter) {
                    let mut cycle = stack[pos..].to_vec();
                    cycle.push(fr.filter.clone());
                    return Err(ResolveError::Cycle { path: cycle });
                }
                let child = src.filter(&fr.filter).ok_or_else(|| ResolveError::UnknownFilter {
                    from: filter.name.clone(),
                    missing: fr.filter.clone(),
                })?;
                path.push(&fr.params);
                walk(src, child, path, stack, out)?;
                path.pop();
            }
        }
    }
    stack.pop();
    Ok(())
}

/// The rule instances of a filter's DAG in libvirt's order: rules of filters
/// in the `root` chain first, then by priority; equal priorities keep DAG
/// order (a stable sort).
fn instances<'a>(src: &'a dyn FilterSource, filter: &'a Filter) -> Result<Vec<RuleInst<'a>>, ResolveError> {
    let mut insts = Vec::new();
    walk(src, filter, &mut Vec::new(), &mut Vec::new(), &mut insts)?;
    // Identical instances (one filter reached twice with the same
    // parameters) are told apart by their order of appearance.
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for i in insts.iter_mut() {
        let content = fnv64(format!("{:?}\u{0}{:?}\u{0}{}", i.rule, i.path, i.chain).as_bytes());
        let n = seen.entry(content).or_default();
        *n += 1;
        i.key = fnv64(format!("{content}#{n}").as_bytes());
    }
    insts.sort_by_key(|i| (i.chain != "root", i.rule.priority));
    Ok(insts)
}

/// FNV-1a, 64 bits: stable across runs and builds (unlike std's hasher).
fn fnv64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(*x)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Checks a DAG for unknown filters and cycles without resolving variables.
pub fn check_references(src: &dyn FilterSource, filter: &Filter) -> Result<(), ResolveError> {
    fn visit<'a>(
        src: &'a dyn FilterSource,
        f: &'a Filter,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Result<(), ResolveError> {
        if done.contains(f.name.as_str()) {
            return Ok(());
        }
        stack.push(&f.name);
        for r in f.references() {
            if let Some(pos) = stack.iter().position(|n| *n == r) {
                let mut path: Vec<String> = stack[pos..].iter().map(|s| s.to_string()).collect();
                path.push(r.to_string());
                return Err(ResolveError::Cycle { path });
            }
            let child = src
                .filter(r)
                .ok_or_else(|| ResolveError::UnknownFilter { from: f.name.clone(), missing: r.to_string() })?;
            visit(src, child, stack, done)?;
        }
        stack.pop();
        done.insert(&f.name);
        Ok(())
    }
    visit(src, filter, &mut Vec::new(), &mut BTreeSet::new())
}

fn is_available(va: &VarAccess, vars: Vars) -> bool {
    match (vars.get(&va.name), va.access) {
        (None, _) => false,
        (Some(v), Access::Element(i)) => (i as usize) < v.len(),
        (Some(v), Access::Iterator(_)) => !v.is_empty(),
    }
}

/// One iterator of libvirt's combination iterator (`virNWFilterVarCombIter`).
struct Iter<'v> {
    id: Option<u32>,
    names: Vec<&'v str>,
    min: usize,
    max: usize,
    cur: usize,
}

/// Every combination of variable values a rule expands to, in libvirt's order.
fn combinations<'v>(
    inst: &RuleInst,
    vars: Vars<'v>,
    accesses: &[&'v VarAccess],
) -> Result<Vec<Combo<'v>>, ResolveError> {
    // Iterator 0 always exists first, used or not.
    let mut iters: Vec<Iter> = vec![Iter { id: Some(0), names: Vec::new(), min: 0, max: 0, cur: 0 }];
    let mut lens: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut slot_of: Vec<usize> = Vec::with_capacity(accesses.len());
    for va in accesses {
        let values = vars.get(&va.name).map(Vec::as_slice).unwrap_or(&[]);
        let (idx, min, max) = match va.access {
            Access::Iterator(id) => {
                let idx = match iters.iter().position(|it| it.id == Some(id)) {
                    Some(i) => i,
                    None => {
                        iters.push(Iter { id: Some(id), names: Vec::new(), min: 0, max: 0, cur: 0 });
                        iters.len() - 1
                    }
                };
                (idx, 0, values.len().saturating_sub(1))
            }
            Access::Element(n) => {
                iters.push(Iter { id: None, names: Vec::new(), min: n as usize, max: n as usize, cur: n as usize });
                (iters.len() - 1, n as usize, n as usize)
            }
        };
        let it = &mut iters[idx];
        if it.names.is_empty() {
            it.min = min;
            it.max = max;
            it.cur = min;
        }
        lens.entry(idx).or_default().push(values.len());
        it.names.push(&va.name);
        slot_of.push(idx);
    }
    for (idx, l) in &lens {
        let it = &iters[*idx];
        if let Some(id) = it.id {
            if l.iter().any(|x| *x != l[0]) {
                return Err(ResolveError::ListLengthMismatch {
                    filter: inst.origin.filter.clone(),
                    rule: inst.origin.entry,
                    iterator: id,
                    vars: it.names.iter().map(|s| s.to_string()).collect(),
                    lengths: l.clone(),
                });
            }
        }
    }
    let value_at = |name: &str, i: usize| vars.get(name).and_then(|v| v.get(i)).map(String::as_str);
    // A position of an iterator repeats an earlier one when all its variables
    // have the same values there: libvirt skips those.
    let unique =
        |it: &Iter| -> bool { (0..it.cur).all(|i| it.names.iter().any(|n| value_at(n, i) != value_at(n, it.cur))) };
    let mut out = Vec::new();
    loop {
        let mut combo = BTreeMap::new();
        for (va, idx) in accesses.iter().zip(&slot_of) {
            if let Some(v) = value_at(&va.name, iters[*idx].cur) {
                combo.insert(*va, v);
            }
        }
        out.push(combo);
        let mut i = 0;
        loop {
            if i == iters.len() {
                return Ok(out);
            }
            iters[i].cur += 1;
            if iters[i].cur <= iters[i].max {
                if !unique(&iters[i]) {
                    continue;
                }
                break;
            }
            iters[i].cur = iters[i].min;
            i += 1;
        }
    }
}

/// One assignment of values to the variable accesses of a rule.
pub type Combo<'v> = BTreeMap<&'v VarAccess, &'v str>;

fn substitute(inst: &RuleInst, m: &ProtocolMatch, combo: &Combo) -> Result<ProtocolMatch, ResolveError> {
    let mut out = ProtocolMatch::new(m.protocol);
    for spec in m.protocol.attributes() {
        let Some(fv) = m.fields.get(&spec.field) else {
            continue;
        };
        let value = match &fv.value {
            Value::Var(va) => {
                let raw = combo.get(va).copied().unwrap_or_default();
                parse_value(spec.kind, raw).map_err(|reason| {
                    ResolveError::BadValue(Box::new(BadValue {
                        filter: inst.origin.filter.clone(),
                        rule: inst.origin.entry,
                        protocol: m.protocol.element().to_string(),
                        attribute: spec.field.name().to_string(),
                        var: va.to_string(),
                        value: raw.to_string(),
                        reason,
                    }))
                })?
            }
            v => v.clone(),
        };
        out.fields.insert(spec.field, FieldValue { value, negated: fv.negated });
    }
    Ok(out)
}

/// How resolution treats variables a binding does not give.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Variables that may be absent: a rule using one then expands to no
    /// rule at all (matches nothing), instead of being an error. Bindings use
    /// this for `IP`/`IPV6` until the address is known, as libvirt's rules
    /// with learning pending.
    pub may_be_absent: BTreeSet<String>,
}

impl ResolveOptions {
    /// What a port binding uses: `IP` and `IPV6` may be absent.
    pub fn for_binding() -> ResolveOptions {
        ResolveOptions { may_be_absent: [reserved::IP, reserved::IPV6].iter().map(|s| s.to_string()).collect() }
    }
}

fn check_params(params: &Params) -> Result<(), ResolveError> {
    for (name, values) in params {
        if let Some(v) = values.iter().find(|v| v.is_empty() || !v.chars().all(gw_model::value::is_var_value_char)) {
            return Err(ResolveError::BadParameter { name: name.clone(), value: v.clone() });
        }
    }
    Ok(())
}

/// Resolves `filter` with `params` into the ordered rules a binding gets.
pub fn resolve(src: &dyn FilterSource, filter: &Filter, params: &Params) -> Result<Resolved, ResolveError> {
    resolve_with(src, filter, params, &ResolveOptions::default())
}

/// [`resolve`] with options.
pub fn resolve_with(
    src: &dyn FilterSource,
    filter: &Filter,
    params: &Params,
    opts: &ResolveOptions,
) -> Result<Resolved, ResolveError> {
    prepare(src, filter)?.resolve(params, opts)
}

/// A filter's DAG walked once, for resolving many bindings of it (the walk
/// does not depend on the parameters).
pub struct Prepared<'a> {
    filter: &'a Filter,
    insts: Vec<RuleInst<'a>>,
}

/// Walks `filter`'s DAG for [`Prepared::resolve`].
pub fn prepare<'a>(src: &'a dyn FilterSource, filter: &'a Filter) -> Result<Prepared<'a>, ResolveError> {
    Ok(Prepared { filter, insts: instances(src, filter)? })
}

impl Prepared<'_> {
    /// [`resolve_with`] for this filter.
    pub fn resolve(&self, params: &Params, opts: &ResolveOptions) -> Result<Resolved, ResolveError> {
        resolve_insts(self.filter, &self.insts, params, opts)
    }
}

fn resolve_insts(
    filter: &Filter,
    insts: &[RuleInst],
    params: &Params,
    opts: &ResolveOptions,
) -> Result<Resolved, ResolveError> {
    check_params(params)?;
    let vars: Vec<Vars> = insts.iter().map(|i| i.vars(params)).collect();

    let mut missing = BTreeSet::new();
    for (inst, vars) in insts.iter().zip(vars.iter().copied()) {
        if let Some(m) = &inst.rule.matches {
            for va in m.variables() {
                if !is_available(va, vars) && !opts.may_be_absent.contains(&va.name) {
                    missing.insert(va.to_string());
                }
            }
        }
    }
    if !missing.is_empty() {
        return Err(ResolveError::MissingVariables {
            filter: filter.name.clone(),
            missing: missing.into_iter().collect(),
        });
    }

    let mut expanded: Vec<Vec<ResolvedRule>> = Vec::with_capacity(insts.len());
    for (idx, (inst, vars)) in insts.iter().zip(vars.iter().copied()).enumerate() {
        let mut rules = Vec::new();
        let accesses = inst.rule.matches.as_ref().map(|m| m.variables()).unwrap_or_default();
        if accesses.iter().all(|va| is_available(va, vars)) {
            for combo in combinations(inst, vars, &accesses)? {
                let matches = match &inst.rule.matches {
                    Some(m) => Some(substitute(inst, m, &combo)?),
                    None => None,
                };
                let r = inst.rule;
                let rule = Rule {
                    matches,
                    action: r.action,
                    direction: r.direction,
                    priority: r.priority,
                    statematch: r.statematch,
                };
                rules.push(ResolvedRule {
                    rule,
                    chain: inst.chain.to_string(),
                    origin: inst.origin.clone(),
                    inst: idx,
                    key: inst.key,
                });
            }
        }
        expanded.push(rules);
    }
    Ok(layout(filter, params, insts, expanded))
}

/// The binding-independent shape of a filter: one rule per instance, with
/// its variables left in place, in the same layout as [`resolve`] gives.
/// Ports bound to the same filter share this shape; only the values differ.
pub fn template(src: &dyn FilterSource, filter: &Filter) -> Result<Resolved, ResolveError> {
    let insts = instances(src, filter)?;
    let per_inst = insts
        .iter()
        .enumerate()
        .map(|(idx, i)| {
            vec![ResolvedRule {
                rule: i.rule.clone(),
                chain: i.chain.to_string(),
                origin: i.origin.clone(),
                inst: idx,
                key: i.key,
            }]
        })
        .collect();
    Ok(layout(filter, &Params::new(), &insts, per_inst))
}

/// Lays the instances' rules out in chains. Jumps and chains follow the
/// instances (not how many rules each expanded to), so a binding's layout
/// is its filter's template's layout.
fn layout(filter: &Filter, params: &Params, insts: &[RuleInst], expanded: Vec<Vec<ResolvedRule>>) -> Resolved {
    let mut root_rules: Vec<(i32, Vec<ResolvedRule>)> = Vec::new();
    let mut subchains: Vec<SubChain> = Vec::new();
    let mut jumps: Vec<Jump> = Vec::new();
    let mut ipv4 = Vec::new();
    let mut ipv6 = Vec::new();
    for (inst, rules) in insts.iter().zip(expanded) {
        let layer = inst.rule.matches.as_ref().map_or(Layer::Ethernet, |m| m.protocol.layer());
        match layer {
            Layer::Ipv4 => ipv4.extend(rules),
            Layer::Ipv6 => ipv6.extend(rules),
            Layer::Ethernet if inst.chain == "root" => root_rules.push((inst.rule.priority, rules)),
            Layer::Ethernet => {
                let dir = inst.rule.direction;
                // The last rule of a chain (in sorted order) sets its jump's
                // priority, as libvirt's hash update does.
                match jumps.iter_mut().find(|j| j.chain == inst.chain) {
                    Some(j) => {
                        j.priority = inst.chain_priority;
                        j.out |= dir.covers_out();
                        j.r#in |= dir.covers_in();
                    }
                    None => jumps.push(Jump {
                        chain: inst.chain.to_string(),
                        priority: inst.chain_priority,
                        family: chain_prefix(inst.chain).unwrap_or("root").to_string(),
                        out: dir.covers_out(),
                        r#in: dir.covers_in(),
                    }),
                }
                match subchains.iter_mut().find(|c| c.name == inst.chain) {
                    Some(c) => c.rules.extend(rules),
                    None => {
                        subchains.push(SubChain { name: inst.chain.to_string(), priority: inst.chain_priority, rules })
                    }
                }
            }
        }
    }
    jumps.sort_by_key(|j| j.priority);
    for c in &mut subchains {
        c.priority = jumps.iter().find(|j| j.chain == c.name).map_or(c.priority, |j| j.priority);
    }
    subchains.sort_by_key(|c| c.priority);

    // A jump goes before the first root rule whose priority is not lower
    // (ties: the jump first); jumps past every root rule go last.
    let mut root = Vec::new();
    let mut pending = jumps.into_iter().peekable();
    for (priority, rules) in root_rules {
        while let Some(j) = pending.next_if(|j| j.priority <= priority) {
            root.push(RootEntry::Jump(j));
        }
        root.extend(rules.into_iter().map(RootEntry::Rule));
    }
    root.extend(pending.map(RootEntry::Jump));

    Resolved { filter: filter.name.clone(), params: params.clone(), root, chains: subchains, ipv4, ipv6 }
}

/// Parses `NAME=VALUE` pairs into parameters; a name given twice is a list.
pub fn params_from_pairs<'a>(pairs: impl IntoIterator<Item = &'a str>) -> Result<Params, String> {
    let mut p = Params::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("parameter '{pair}' is not NAME=VALUE"))?;
        if k.is_empty() || !k.chars().all(gw_model::value::is_var_name_char) {
            return Err(format!("parameter name '{k}' may only have letters, digits and '_'"));
        }
        p.entry(k.to_string()).or_default().push(v.to_string());
    }
    Ok(p)
}
