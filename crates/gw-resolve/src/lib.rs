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
use gw_model::{Entry, FieldValue, Filter, Layer, ParamError, ParamValue, ProtocolMatch, Rule, Value, VarAccess};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Variable values by name; a list has several values.
pub type Params = BTreeMap<String, Vec<ParamValue>>;

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

/// How many filterrefs deep a filter's references may nest: the filter a
/// binding names is depth 0, the filters it references depth 1, and so on.
///
/// libvirt's built-in library nests 2 deep (`clean-traffic` >
/// `no-arp-spoofing` > `no-arp-mac-spoofing`), and hand-written hierarchies
/// a few levels more. 64 is far beyond any of them while keeping what one
/// rule carries bounded (each rule instance keeps the parameters of every
/// filterref on its path) and the error readable. Walks are iterative, so
/// the limit is not what protects the stack; a longer chain is refused
/// with [`ResolveError::TooDeep`].
pub const MAX_FILTERREF_DEPTH: usize = 64;

/// The most entries (rules and filterrefs) the walk of one filter's DAG may
/// visit, a filter reached several times counting each time.
///
/// A DAG can be small and still expand exponentially (a filter that
/// references the next twice, 30 times over, visits 2^30 entries);
/// libvirt's built-ins expand to a few dozen at most. The bound is the same as
/// [`MAX_RULES_PER_BINDING`], since each rule instance is at least one rule
/// of a binding's template. Refused with [`ResolveError::DagTooLarge`].
pub const MAX_DAG_ENTRIES: usize = MAX_RULES_PER_BINDING;

/// The most rules one binding may resolve to, all list expansions counted.
///
/// libvirt has no limit, and three 1,000-value lists walked by three
/// iterators make one rule a billion (the daemon grew to 3 GB). Real
/// bindings have tens to hundreds of rules (libvirt's `clean-traffic` with
/// one address: 17). 16,384 leaves room for generous lists (a rule walking
/// 128 addresses by 128 ports) while keeping one binding cheap. Measured in
/// a release build, one binding of 16,384 rules takes 0.09 s to resolve
/// and lower plus 0.09 s to render as nft text (850 KB), 65 MB at peak;
/// at 65,536 rules it was 0.7 s + 1.2 s and 250 MB, rendering growing
/// faster than linearly. The count is computed from the list lengths
/// (distinct values only) before anything is expanded, and refused with
/// [`ResolveError::TooManyRules`].
pub const MAX_RULES_PER_BINDING: usize = 16_384;

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
    /// `IP`/`IPV6` are used by rules and have no value, and the binding
    /// turned learning off.
    #[error("cannot resolve filter '{filter}': {} used by its rules but not given, and CTRL_IP_LEARNING is 'none' (give {}, or let guestwall learn it with CTRL_IP_LEARNING 'any' or 'dhcp')", vars.join(", "), vars.join(" and "))]
    NotLearned {
        /// The top filter.
        filter: String,
        /// `IP`, `IPV6` or both.
        vars: Vec<String>,
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
    /// A parameter the caller gives is not acceptable (see
    /// [`gw_model::check_param`]): a bad name, a value libvirt does not
    /// allow, a value a reserved variable cannot hold (`IP` that is not an
    /// IPv4 address), or a list longer than [`gw_model::MAX_PARAM_VALUES`].
    #[error("{0}")]
    BadParameter(#[from] gw_model::ParamError),
    /// Filterrefs nest deeper than [`MAX_FILTERREF_DEPTH`].
    #[error("filterrefs nest more than {limit} deep (MAX_FILTERREF_DEPTH): {}", show_chain(path))]
    TooDeep {
        /// The chain of filters from the top filter, down to the first one
        /// past the limit (`limit + 2` names).
        path: Vec<String>,
        /// [`MAX_FILTERREF_DEPTH`].
        limit: usize,
    },
    /// A filter's DAG expands to more than [`MAX_DAG_ENTRIES`] rules and
    /// filterrefs.
    #[error("filter '{filter}': its filterrefs expand to more than {limit} rules and filterrefs (a filter referenced several times counts each time; MAX_DAG_ENTRIES)")]
    DagTooLarge {
        /// The top filter.
        filter: String,
        /// [`MAX_DAG_ENTRIES`].
        limit: usize,
    },
    /// A binding would expand to more than [`MAX_RULES_PER_BINDING`] rules.
    #[error("{0}")]
    TooManyRules(Box<TooManyRules>),
}

/// A chain of filter names for a message: the first three and the last two
/// when it is long.
fn show_chain(path: &[String]) -> String {
    if path.len() <= 8 {
        return path.join(" -> ");
    }
    format!("{} -> ... ({} more) -> {}", path[..3].join(" -> "), path.len() - 5, path[path.len() - 2..].join(" -> "))
}

/// A binding that would expand to more rules than [`MAX_RULES_PER_BINDING`]:
/// the rule at which the count went past it, and the lists it walks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("binding of filter '{filter}' would expand to {total} rules or more, and at most {limit} are allowed (MAX_RULES_PER_BINDING): filter '{rule_filter}' rule {rule} alone expands to {rule_count} ({})", show_lists(lists))]
pub struct TooManyRules {
    /// The top filter.
    pub filter: String,
    /// The filter holding the rule.
    pub rule_filter: String,
    /// The rule's position in that filter (1-based).
    pub rule: usize,
    /// How many rules that rule expands to (saturating).
    pub rule_count: u128,
    /// How many rules the binding has with it (saturating).
    pub total: u128,
    /// The lists the rule walks: the variables walked together (one
    /// iterator) and how many distinct values they give.
    pub lists: Vec<(Vec<String>, usize)>,
    /// [`MAX_RULES_PER_BINDING`].
    pub limit: usize,
}

fn show_lists(lists: &[(Vec<String>, usize)]) -> String {
    if lists.is_empty() {
        return "no list variables".into();
    }
    lists
        .iter()
        .map(|(vars, n)| format!("{}: {n} values", vars.iter().map(|v| format!("${v}")).collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join(" x ")
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
    fn get(&self, name: &str) -> Option<&'a Vec<ParamValue>> {
        self.params.get(name).or_else(|| self.path.iter().find_map(|p| p.get(name)))
    }
}

/// Walks `top`'s DAG depth-first, in document order, without recursion:
/// every rule with the filterref parameters on its path. Cycles, unknown
/// filters, chains deeper than [`MAX_FILTERREF_DEPTH`] and DAGs expanding to
/// more than [`MAX_DAG_ENTRIES`] entries are errors.
fn walk<'a>(src: &'a dyn FilterSource, top: &'a Filter, out: &mut Vec<RuleInst<'a>>) -> Result<(), ResolveError> {
    // The filters being walked, each with the index of its next entry; the
    // parameters of the filterrefs between them.
    let mut stack: Vec<(&'a Filter, usize)> = vec![(top, 0)];
    let mut path: Vec<&'a Params> = Vec::new();
    let mut visited = 0usize;
    while let Some(&mut (filter, ref mut next)) = stack.last_mut() {
        let Some(e) = filter.entries.get(*next) else {
            stack.pop();
            path.pop();
            continue;
        };
        let i = *next;
        *next += 1;
        visited += 1;
        if visited > MAX_DAG_ENTRIES {
            return Err(ResolveError::DagTooLarge { filter: top.name.clone(), limit: MAX_DAG_ENTRIES });
        }
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
                if let Some(pos) = stack.iter().position(|(f, _)| f.name == fr.filter) {
                    let mut cycle: Vec<String> = stack[pos..].iter().map(|(f, _)| f.name.clone()).collect();
                    cycle.push(fr.filter.clone());
                    return Err(ResolveError::Cycle { path: cycle });
                }
                let child = src.filter(&fr.filter).ok_or_else(|| ResolveError::UnknownFilter {
                    from: filter.name.clone(),
                    missing: fr.filter.clone(),
                })?;
                if stack.len() > MAX_FILTERREF_DEPTH {
                    let mut chain: Vec<String> = stack.iter().map(|(f, _)| f.name.clone()).collect();
                    chain.push(fr.filter.clone());
                    return Err(ResolveError::TooDeep { path: chain, limit: MAX_FILTERREF_DEPTH });
                }
                path.push(&fr.params);
                stack.push((child, 0));
            }
        }
    }
    Ok(())
}

/// The rule instances of a filter's DAG in libvirt's order: rules of filters
/// in the `root` chain first, then by priority; equal priorities keep DAG
/// order (a stable sort).
fn instances<'a>(src: &'a dyn FilterSource, filter: &'a Filter) -> Result<Vec<RuleInst<'a>>, ResolveError> {
    let mut insts = Vec::new();
    walk(src, filter, &mut insts)?;
    // Identical instances (one filter reached twice with the same
    // parameters) are told apart by their order of appearance.
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    // Each filterref's parameters as they enter the keys, computed once per
    // filterref rather than once per rule below it.
    let mut texts: std::collections::HashMap<*const Params, String> = std::collections::HashMap::new();
    for i in &insts {
        for p in &i.path {
            texts.entry(*p as *const Params).or_insert_with(|| key_text(p));
        }
    }
    for i in insts.iter_mut() {
        let path: Vec<&str> = i.path.iter().map(|p| texts[&(*p as *const Params)].as_str()).collect();
        let content = fnv64(format!("{:?}\u{0}[{}]\u{0}{}", i.rule, path.join(", "), i.chain).as_bytes());
        let n = seen.entry(content).or_default();
        *n += 1;
        i.key = fnv64(format!("{content}#{n}").as_bytes());
    }
    insts.sort_by_key(|i| (i.chain != "root", i.rule.priority));
    Ok(insts)
}

/// Filterref parameters longer than this (as text) enter rule keys as a
/// digest: 16,384 rules under a filterref with 1 MB of parameters would
/// otherwise format and hash 16 GB. Shorter ones (all real ones) enter as
/// they are, so their keys are what they always were.
const KEY_PARAMS_INLINE: usize = 256;

/// A filterref's parameters as they enter a rule's key (see
/// [`KEY_PARAMS_INLINE`]).
fn key_text(p: &Params) -> String {
    let t = format!("{p:?}");
    if t.len() <= KEY_PARAMS_INLINE {
        t
    } else {
        format!("#{:016x}/{}", fnv64(t.as_bytes()), t.len())
    }
}

/// FNV-1a, 64 bits: stable across runs and builds (unlike std's hasher).
fn fnv64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(*x)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Checks a DAG for unknown filters, cycles, chains deeper than
/// [`MAX_FILTERREF_DEPTH`] and expansions past [`MAX_DAG_ENTRIES`], without
/// resolving variables. Iterative (an explicit stack), and linear in the
/// size of the library: each filter is explored once, and what is known of
/// it (its height and expanded size) is reused wherever it is referenced
/// again.
pub fn check_references(src: &dyn FilterSource, filter: &Filter) -> Result<(), ResolveError> {
    /// A filter explored: how deep its references go, how many entries it
    /// expands to, and the child on its deepest chain.
    #[derive(Clone, Copy)]
    struct Known<'a> {
        height: usize,
        size: usize,
        deepest: Option<&'a Filter>,
    }
    impl<'a> Known<'a> {
        /// Takes in a child explored as `k`: its size, and its chain if
        /// deeper. `false` when the size passes the limit.
        fn absorb(&mut self, k: Known<'a>, child: &'a Filter) -> bool {
            self.size = self.size.saturating_add(k.size);
            if k.height + 1 > self.height {
                self.height = k.height + 1;
                self.deepest = Some(child);
            }
            self.size <= MAX_DAG_ENTRIES
        }
    }
    struct Frame<'a> {
        f: &'a Filter,
        next: usize,
        known: Known<'a>,
    }
    let frame = |f| Frame { f, next: 0, known: Known { height: 0, size: 0, deepest: None } };
    let too_large = || ResolveError::DagTooLarge { filter: filter.name.clone(), limit: MAX_DAG_ENTRIES };
    // The chain down to `child`, then down its deepest references, long
    // enough to show where the limit is passed.
    let too_deep = |stack: &[Frame], child: &Filter, done: &BTreeMap<&str, Known>| {
        let mut chain: Vec<String> = stack.iter().map(|fr| fr.f.name.clone()).collect();
        let mut at = Some(child);
        while let Some(f) = at.filter(|_| chain.len() < MAX_FILTERREF_DEPTH + 2) {
            chain.push(f.name.clone());
            at = done.get(f.name.as_str()).and_then(|k| k.deepest);
        }
        ResolveError::TooDeep { path: chain, limit: MAX_FILTERREF_DEPTH }
    };
    let mut done: BTreeMap<&str, Known> = BTreeMap::new();
    let mut stack: Vec<Frame> = vec![frame(filter)];
    loop {
        let depth = stack.len().saturating_sub(1);
        let Some(top) = stack.last_mut() else { return Ok(()) };
        let f = top.f;
        match f.entries.get(top.next) {
            Some(e) => {
                top.next += 1;
                top.known.size += 1;
                if top.known.size > MAX_DAG_ENTRIES {
                    return Err(too_large());
                }
                let Entry::FilterRef(r) = e else { continue };
                let name = r.filter.as_str();
                if let Some(pos) = stack.iter().position(|fr| fr.f.name == name) {
                    let mut path: Vec<String> = stack[pos..].iter().map(|fr| fr.f.name.clone()).collect();
                    path.push(name.to_string());
                    return Err(ResolveError::Cycle { path });
                }
                let child = src
                    .filter(name)
                    .ok_or_else(|| ResolveError::UnknownFilter { from: f.name.clone(), missing: name.to_string() })?;
                match done.get(child.name.as_str()).copied() {
                    Some(k) => {
                        if depth + 1 + k.height > MAX_FILTERREF_DEPTH {
                            return Err(too_deep(&stack, child, &done));
                        }
                        if !stack.last_mut().expect("not empty").known.absorb(k, child) {
                            return Err(too_large());
                        }
                    }
                    None => {
                        if depth + 1 > MAX_FILTERREF_DEPTH {
                            return Err(too_deep(&stack, child, &done));
                        }
                        stack.push(frame(child));
                    }
                }
            }
            None => {
                let k = top.known;
                stack.pop();
                done.insert(&f.name, k);
                if stack.last_mut().is_some_and(|parent| !parent.known.absorb(k, f)) {
                    return Err(too_large());
                }
            }
        }
    }
}

/// Whether `target` is `from` or is reachable from it through filterrefs
/// (unknown filters lead nowhere). Iterative, each filter visited once.
pub fn reaches(src: &dyn FilterSource, from: &str, target: &str) -> bool {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = vec![from];
    while let Some(name) = todo.pop() {
        if name == target {
            return true;
        }
        if !seen.insert(name) {
            continue;
        }
        if let Some(f) = src.filter(name) {
            todo.extend(f.references().filter(|r| !seen.contains(r)));
        }
    }
    false
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
    /// The positions the iterator takes, in order: `min`, then every later
    /// one whose values (of all its variables) did not occur before (libvirt
    /// skips repeated combinations).
    positions: Vec<usize>,
}

/// How a rule's variables are walked: its iterators and which one each
/// variable access follows. Knows how many rules it gives before giving them.
struct Plan<'v, 'a> {
    vars: Vars<'v>,
    accesses: &'a [&'v VarAccess],
    iters: Vec<Iter<'v>>,
    slot_of: Vec<usize>,
}

/// Plans the combinations of variable values a rule expands to.
fn plan<'v, 'a>(inst: &RuleInst, vars: Vars<'v>, accesses: &'a [&'v VarAccess]) -> Result<Plan<'v, 'a>, ResolveError> {
    // Iterator 0 always exists first, used or not.
    let mut iters: Vec<Iter> = vec![Iter { id: Some(0), names: Vec::new(), min: 0, max: 0, positions: Vec::new() }];
    let mut lens: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut slot_of: Vec<usize> = Vec::with_capacity(accesses.len());
    for va in accesses {
        let values = vars.get(&va.name).map(Vec::as_slice).unwrap_or(&[]);
        let (idx, min, max) = match va.access {
            Access::Iterator(id) => {
                let idx = match iters.iter().position(|it| it.id == Some(id)) {
                    Some(i) => i,
                    None => {
                        iters.push(Iter { id: Some(id), names: Vec::new(), min: 0, max: 0, positions: Vec::new() });
                        iters.len() - 1
                    }
                };
                (idx, 0, values.len().saturating_sub(1))
            }
            Access::Element(n) => {
                iters.push(Iter {
                    id: None,
                    names: Vec::new(),
                    min: n as usize,
                    max: n as usize,
                    positions: Vec::new(),
                });
                (iters.len() - 1, n as usize, n as usize)
            }
        };
        let it = &mut iters[idx];
        if it.names.is_empty() {
            it.min = min;
            it.max = max;
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
    let value_at = |name: &str, i: usize| vars.get(name).and_then(|v| v.get(i)).map(ParamValue::as_str);
    // A position of an iterator repeats an earlier one when all its variables
    // have the same values there (compared with every earlier position from
    // 0, as libvirt does): it is skipped. A set makes this linear.
    for it in &mut iters {
        let tuple = |i: usize| it.names.iter().map(|n| value_at(n, i)).collect::<Vec<_>>();
        let mut seen: std::collections::HashSet<Vec<Option<&str>>> = (0..it.min).map(tuple).collect();
        let mut positions = vec![it.min];
        seen.insert(tuple(it.min));
        for i in it.min + 1..=it.max {
            if seen.insert(tuple(i)) {
                positions.push(i);
            }
        }
        it.positions = positions;
    }
    Ok(Plan { vars, accesses, iters, slot_of })
}

impl<'v> Plan<'v, '_> {
    /// How many rules the plan gives (saturating).
    fn count(&self) -> u128 {
        self.iters.iter().fold(1u128, |n, it| n.saturating_mul(it.positions.len() as u128))
    }

    /// The lists walked (variables of one iterator, and how many positions
    /// it takes), for messages.
    fn lists(&self) -> Vec<(Vec<String>, usize)> {
        let mut out = Vec::new();
        for (idx, it) in self.iters.iter().enumerate() {
            if it.positions.len() > 1 {
                let vars = self
                    .accesses
                    .iter()
                    .zip(&self.slot_of)
                    .filter(|(_, s)| **s == idx)
                    .map(|(va, _)| va.to_string())
                    .collect();
                out.push((vars, it.positions.len()));
            }
        }
        out
    }

    /// Every combination, in libvirt's order: the first iterator varies
    /// fastest.
    fn expand(&self) -> Vec<Combo<'v>> {
        let value_at = |name: &str, i: usize| self.vars.get(name).and_then(|v| v.get(i));
        let mut cur = vec![0usize; self.iters.len()];
        let mut out = Vec::new();
        loop {
            let mut combo = BTreeMap::new();
            for (va, idx) in self.accesses.iter().zip(&self.slot_of) {
                if let Some(v) = value_at(&va.name, self.iters[*idx].positions[cur[*idx]]) {
                    combo.insert(*va, v);
                }
            }
            out.push(combo);
            let mut i = 0;
            loop {
                if i == self.iters.len() {
                    return out;
                }
                cur[i] += 1;
                if cur[i] < self.iters[i].positions.len() {
                    break;
                }
                cur[i] = 0;
                i += 1;
            }
        }
    }
}

/// One assignment of values to the variable accesses of a rule.
pub type Combo<'v> = BTreeMap<&'v VarAccess, &'v ParamValue>;

fn substitute(inst: &RuleInst, m: &ProtocolMatch, combo: &Combo) -> Result<ProtocolMatch, ResolveError> {
    let mut out = ProtocolMatch::new(m.protocol);
    for spec in m.protocol.attributes() {
        let Some(fv) = m.fields.get(&spec.field) else {
            continue;
        };
        let value = match &fv.value {
            Value::Var(va) => {
                let given = combo.get(va).copied();
                let converted = match given {
                    Some(v) => v.as_kind(spec.kind),
                    // Not reached: only rules whose variables all have
                    // values are expanded. Kept as the empty text it was.
                    None => parse_value(spec.kind, ""),
                };
                converted.map_err(|reason| {
                    ResolveError::BadValue(Box::new(BadValue {
                        filter: inst.origin.filter.clone(),
                        rule: inst.origin.entry,
                        protocol: m.protocol.element().to_string(),
                        attribute: spec.field.name().to_string(),
                        var: va.to_string(),
                        value: given.map(ParamValue::to_string).unwrap_or_default(),
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
    /// The binding turned learning off (`CTRL_IP_LEARNING=none`): an absent
    /// `IP`/`IPV6` its rules use is an error naming it, as in libvirt,
    /// rather than an address to wait for.
    pub learning_off: bool,
}

impl ResolveOptions {
    /// What a port binding uses: `IP` and `IPV6` may be absent.
    pub fn for_binding() -> ResolveOptions {
        ResolveOptions {
            may_be_absent: [reserved::IP, reserved::IPV6].iter().map(|s| s.to_string()).collect(),
            learning_off: false,
        }
    }

    /// What a binding with these parameters uses: [`Self::for_binding`],
    /// unless `CTRL_IP_LEARNING` is `none` (then nothing may be absent).
    pub fn for_binding_params(params: &Params) -> ResolveOptions {
        let off = params
            .get(reserved::CTRL_IP_LEARNING)
            .and_then(|v| v.first())
            .is_some_and(|v| v.as_str().eq_ignore_ascii_case("none"));
        match off {
            true => ResolveOptions { may_be_absent: BTreeSet::new(), learning_off: true },
            false => ResolveOptions::for_binding(),
        }
    }
}

fn check_params(params: &Params) -> Result<(), ResolveError> {
    for (name, values) in params {
        gw_model::check_param(name, values)?;
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
    if opts.learning_off {
        let unlearned: Vec<String> = [reserved::IP, reserved::IPV6]
            .iter()
            .filter(|v| missing.iter().any(|m: &String| m == *v || m.starts_with(&format!("{v}["))))
            .map(|v| v.to_string())
            .collect();
        if !unlearned.is_empty() {
            return Err(ResolveError::NotLearned { filter: filter.name.clone(), vars: unlearned });
        }
    }
    if !missing.is_empty() {
        return Err(ResolveError::MissingVariables {
            filter: filter.name.clone(),
            missing: missing.into_iter().collect(),
        });
    }

    // How many rules each instance gives, known before anything is
    // expanded: the binding is refused as soon as the total passes the limit.
    let accesses: Vec<Vec<&VarAccess>> =
        insts.iter().map(|i| i.rule.matches.as_ref().map(|m| m.variables()).unwrap_or_default()).collect();
    let mut plans: Vec<Option<Plan>> = Vec::with_capacity(insts.len());
    let mut total: u128 = 0;
    for ((inst, vars), accesses) in insts.iter().zip(vars.iter().copied()).zip(&accesses) {
        if !accesses.iter().all(|va| is_available(va, vars)) {
            plans.push(None);
            continue;
        }
        let p = plan(inst, vars, accesses)?;
        let count = p.count();
        total = total.saturating_add(count);
        if total > MAX_RULES_PER_BINDING as u128 {
            return Err(ResolveError::TooManyRules(Box::new(TooManyRules {
                filter: filter.name.clone(),
                rule_filter: inst.origin.filter.clone(),
                rule: inst.origin.entry,
                rule_count: count,
                total,
                lists: p.lists(),
                limit: MAX_RULES_PER_BINDING,
            })));
        }
        plans.push(Some(p));
    }

    let mut expanded: Vec<Vec<ResolvedRule>> = Vec::with_capacity(insts.len());
    for (idx, (inst, p)) in insts.iter().zip(&plans).enumerate() {
        let mut rules = Vec::new();
        if let Some(p) = p {
            for combo in p.expand() {
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

/// Why `NAME=VALUE` pairs are not parameters (see [`params_from_pairs`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// The text has no `=`.
    #[error("parameter '{pair}' is not NAME=VALUE")]
    NotAPair {
        /// The text.
        pair: String,
    },
    /// The name is empty or has characters other than letters, digits and `_`.
    #[error("parameter name '{name}' may only have letters, digits and '_'")]
    BadName {
        /// The name.
        name: String,
    },
    /// The value is not one the parameter may have (see
    /// [`gw_model::read_param_value`]).
    #[error("{0}")]
    BadValue(ParamError),
}

/// Parses `NAME=VALUE` pairs into parameters; a name given twice is a list.
/// Values are read as a binding's are: one a reserved variable cannot hold
/// (`IP=192.0.2.1/24`) is refused here.
pub fn params_from_pairs<'a>(pairs: impl IntoIterator<Item = &'a str>) -> Result<Params, PairError> {
    let mut p = Params::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').ok_or_else(|| PairError::NotAPair { pair: pair.to_string() })?;
        if k.is_empty() || !k.chars().all(gw_model::value::is_var_name_char) {
            return Err(PairError::BadName { name: k.to_string() });
        }
        let value = gw_model::read_param_value(k, v).map_err(PairError::BadValue)?;
        p.entry(k.to_string()).or_default().push(value);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_filterref_parameters_keep_their_keys() {
        // Keys name nft sets: for parameters of real size the key text is
        // the path's Debug text, as it always was.
        let v = |s: &str| ParamValue::new(s).expect("a value");
        let p1: Params = [("A".to_string(), vec![v("1"), v("2")])].into_iter().collect();
        let p2 = Params::new();
        let path: Vec<&Params> = vec![&p1, &p2];
        let joined = path.iter().map(|p| key_text(p)).collect::<Vec<_>>().join(", ");
        assert_eq!(format!("[{joined}]"), format!("{path:?}"));
        assert_eq!(format!("[{}]", Vec::<String>::new().join(", ")), format!("{:?}", Vec::<&Params>::new()));
        let big: Params = [("A".to_string(), (0..100).map(|i| v(&i.to_string())).collect())].into_iter().collect();
        assert!(key_text(&big).starts_with('#') && key_text(&big).len() < 40);
    }
}
