//! Reads nwfilter XML exactly as libvirt 9.0 does.
//!
//! The rules of libvirt's reader (`virNWFilterDefParseXML`,
//! `virNWFilterRuleParse`, `virNWFilterRuleDetailsParse` in
//! `src/conf/nwfilter_conf.c`) are kept, quirks included:
//! - unknown elements and attributes are ignored;
//! - the first protocol element of a rule fixes its protocol; later elements
//!   of the same name are merged into it, others are ignored;
//! - `match='no'` applies to the attributes of its own element, then masks
//!   and range ends take the negation of their leader;
//! - an out-of-range rule priority silently becomes 500.
//!
//! Every such place is reported as a [`Severity::Quirk`] so callers can warn
//! (`filter normalize`) or refuse (`filter validate`). Values libvirt refuses
//! are [`Severity::Error`]s, all of them collected, never the first only.

use crate::diag::{locate, Diagnostic, Parsed, ReadError, Severity};
use crate::limits::{prescan, MAX_XML_NODES};
use gw_model::filter::{check_chain_name, check_filter_name, default_chain_priority, RULE_PRIORITY_RANGE};
use gw_model::text::check_no_control;
use gw_model::value::{is_var_name_char, parse_value, MAX_COMMENT_LEN};
use gw_model::{read_param_value, ParamError, ParamValue, MAX_PARAM_VALUES};
use gw_model::{
    Action, Direction, Entry, Field, FieldValue, Filter, FilterRef, FixupChange, Kind, Protocol, ProtocolMatch, Rule,
    Value, VarAccess, DEFAULT_RULE_PRIORITY,
};
use roxmltree::{Document, Node, ParsingOptions};
use std::collections::{BTreeMap, BTreeSet};

/// Collects diagnostics at byte offsets of a document; their lines and
/// columns are computed at the end, in one pass ([`Reader::finish`]).
pub(crate) struct Reader<'a> {
    doc: &'a Document<'a>,
    diags: Vec<(usize, Diagnostic)>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(doc: &'a Document<'a>) -> Reader<'a> {
        Reader { doc, diags: Vec::new() }
    }

    /// The diagnostics, in the order found, with their places.
    pub(crate) fn finish(self) -> Vec<Diagnostic> {
        locate(self.doc.input_text(), self.diags)
    }

    fn at(&mut self, sev: Severity, pos: usize, element: &str, attribute: Option<&str>, message: String) {
        // Messages quote what they are about; a quoted newline must not
        // split the one-line-per-problem output.
        let message = match gw_model::text::find_forbidden_char(&message) {
            Some(_) => gw_model::text::Shown(&message).to_string(),
            None => message,
        };
        self.diags.push((
            pos,
            Diagnostic {
                severity: sev,
                line: 0,
                col: 0,
                element: element.to_string(),
                attribute: attribute.map(str::to_string),
                message,
            },
        ));
    }

    pub(crate) fn node(&mut self, sev: Severity, node: Node, message: String) {
        let name = node.tag_name().name().to_string();
        self.at(sev, node.range().start, &name, None, message);
    }

    pub(crate) fn attr(&mut self, sev: Severity, node: Node, attr: &str, message: String) {
        let pos = node.attributes().find(|a| a.name() == attr).map(|a| a.range_qname().start);
        let name = node.tag_name().name().to_string();
        self.at(sev, pos.unwrap_or(node.range().start), &name, Some(attr), message);
    }

    /// Reports attributes of `node` that libvirt does not read.
    fn unknown_attrs(&mut self, node: Node, known: &[&str], what: &str) {
        for a in node.attributes() {
            if !known.contains(&a.name()) {
                let msg = format!("unknown attribute '{}' is ignored; {what} takes {}", a.name(), known.join(", "));
                self.attr(Severity::Quirk, node, a.name(), msg);
            }
        }
    }
}

/// libvirt reads `string(./@x)` through XPath, which turns an empty value into
/// "absent".
fn nonempty_attr<'n>(node: Node<'n, '_>, name: &str) -> Option<&'n str> {
    node.attribute(name).filter(|v| !v.is_empty())
}

/// `virStrToLong_i` in base 10: leading blanks and a sign, then digits only.
fn parse_i32(s: &str) -> Option<i32> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let t = t.strip_prefix('+').unwrap_or(t);
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// `virUUIDParse`: 32 hex digits, dashes anywhere between them, blanks around.
pub fn parse_uuid(s: &str) -> Option<String> {
    let t = s.trim_matches(' ');
    let mut hex = String::with_capacity(32);
    for c in t.chars() {
        if c == '-' {
            continue;
        }
        if !c.is_ascii_hexdigit() || hex.len() == 32 {
            return None;
        }
        hex.push(c.to_ascii_lowercase());
    }
    if hex.len() != 32 {
        return None;
    }
    Some(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
}

/// Parses a document within the limits of [`crate::limits`]: they are
/// checked first, without recursion, so that the XML parser never sees a
/// document that could exhaust its stack, memory or time. DTDs are refused
/// (neither libvirt's corpus nor its built-ins have one).
pub(crate) fn parse_doc(text: &str) -> Result<Document<'_>, ReadError> {
    parse_checked(text, prescan(text))
}

/// Parses a document written by another program (a libvirt domain) within
/// the depth, attribute and node limits of [`crate::limits`] and at most
/// `max_bytes` long (`limit_name` names that limit in the error). CDATA
/// sections are accepted, DTDs are not.
pub fn parse_foreign<'a>(text: &'a str, max_bytes: usize, limit_name: &str) -> Result<Document<'a>, ReadError> {
    parse_checked(text, crate::limits::prescan_with(text, max_bytes, limit_name, true))
}

fn parse_checked(text: &str, scanned: Result<(), crate::limits::Refused>) -> Result<Document<'_>, ReadError> {
    if let Err(r) = scanned {
        let mut errors = locate(
            text,
            vec![(
                r.pos,
                Diagnostic {
                    severity: Severity::Error,
                    line: 0,
                    col: 0,
                    element: r.element,
                    attribute: None,
                    message: r.message,
                },
            )],
        );
        if r.pos == 0 {
            // The size limit: no need to scan a too large text for a place.
            errors[0].line = 1;
            errors[0].col = 1;
        }
        return Err(ReadError { errors });
    }
    let opts = ParsingOptions { allow_dtd: false, nodes_limit: MAX_XML_NODES };
    Document::parse_with_options(text, opts).map_err(|e| {
        let p = e.pos();
        let message = match e {
            roxmltree::Error::NodesLimitReached => format!(
                "the document has more than {MAX_XML_NODES} XML nodes (elements, text pieces and comments; MAX_XML_NODES)"
            ),
            roxmltree::Error::DtdDetected => "a document type declaration (<!DOCTYPE ...>) is not accepted".into(),
            e => format!("malformed XML: {e}"),
        };
        ReadError {
            errors: vec![Diagnostic {
                severity: Severity::Error,
                line: p.row,
                col: p.col,
                element: "xml".into(),
                attribute: None,
                message,
            }],
        }
    })
}

fn finish<T>(value: T, diags: Vec<Diagnostic>) -> Result<Parsed<T>, ReadError> {
    let (errors, quirks): (Vec<_>, Vec<_>) = diags.into_iter().partition(|d| d.severity == Severity::Error);
    if errors.is_empty() {
        Ok(Parsed { value, quirks })
    } else {
        Err(ReadError { errors })
    }
}

/// Reads one `<filter>` document.
pub fn read_filter(text: &str) -> Result<Parsed<Filter>, ReadError> {
    let doc = parse_doc(text)?;
    let mut r = Reader::new(&doc);
    let root = doc.root_element();
    let filter = read_filter_node(&mut r, root);
    finish(filter, r.finish())
}

fn read_filter_node(r: &mut Reader, root: Node) -> Filter {
    let mut filter = Filter::new("");
    if root.tag_name().name() != "filter" {
        r.node(
            Severity::Error,
            root,
            format!("unknown root element <{}>; a filter document starts with <filter>", root.tag_name().name()),
        );
        return filter;
    }
    r.unknown_attrs(root, &["name", "chain", "priority"], "<filter>");
    match nonempty_attr(root, "name") {
        Some(n) => match check_filter_name(n) {
            Ok(()) => filter.name = n.to_string(),
            Err(e) => r.attr(Severity::Error, root, "name", e),
        },
        None => r.node(Severity::Error, root, "filter has no name: add name='...'".into()),
    }
    let mut priority = None;
    if let Some(p) = nonempty_attr(root, "priority") {
        match parse_i32(p) {
            Some(v) if gw_model::filter::CHAIN_PRIORITY_RANGE.contains(&v) => priority = Some(v),
            Some(v) => r.attr(
                Severity::Error,
                root,
                "priority",
                format!("chain priority {v} is outside the valid range -1000..1000"),
            ),
            None => r.attr(
                Severity::Error,
                root,
                "priority",
                format!("could not read chain priority '{p}': give an integer in -1000..1000"),
            ),
        }
    }
    match nonempty_attr(root, "chain") {
        Some(chain) => match check_chain_name(chain) {
            Ok(_) => {
                filter.chain = chain.to_string();
                filter.priority = priority.unwrap_or_else(|| default_chain_priority(chain));
            }
            Err(e) => r.attr(Severity::Error, root, "chain", e),
        },
        None => {
            if priority.is_some() {
                r.attr(
                    Severity::Quirk,
                    root,
                    "priority",
                    "a chain priority without chain= is ignored; the filter goes to the root chain".into(),
                );
            }
        }
    }
    let mut uuid_seen = false;
    for child in root.children().filter(Node::is_element) {
        match child.tag_name().name() {
            "uuid" => {
                if uuid_seen {
                    r.node(Severity::Quirk, child, "a second <uuid> is ignored".into());
                    continue;
                }
                uuid_seen = true;
                let text: String = child.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect();
                if text.is_empty() {
                    continue;
                }
                match parse_uuid(&text) {
                    Some(u) => filter.uuid = Some(u),
                    None => r.node(
                        Severity::Error,
                        child,
                        format!(
                            "malformed uuid '{text}': expected 32 hex digits like 5c6d49af-b071-6127-b4ec-6f8ed4b55335"
                        ),
                    ),
                }
            }
            "rule" => {
                if let Some(rule) = read_rule(r, child) {
                    filter.entries.push(Entry::Rule(rule));
                }
            }
            "filterref" => {
                if let Some(fr) = read_filterref(r, child) {
                    filter.entries.push(Entry::FilterRef(fr));
                }
            }
            other => r.node(
                Severity::Quirk,
                child,
                format!("unknown element <{other}> is ignored; <filter> holds <uuid>, <rule> and <filterref>"),
            ),
        }
    }
    filter
}

/// How `<parameter>`s that libvirt would skip are treated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamMode {
    /// In a filter's filterref: skipped with a quirk, as libvirt does (unless
    /// a name or value has control characters, which is an error).
    Filter,
    /// In a binding: an error, as is a value a reserved variable cannot hold
    /// (`IP='192.0.2.1/32'`): skipping it would leave the guest without the
    /// address, or the rules without their value.
    Binding,
}

/// Reads `<parameter name value>` children into a parameter map, as libvirt's
/// `virNWFilterParseParamAttributes` (invalid ones are skipped, see
/// [`ParamMode`]). A list longer than [`MAX_PARAM_VALUES`] is an error.
pub(crate) fn params_of(r: &mut Reader, node: Node, mode: ParamMode) -> BTreeMap<String, Vec<ParamValue>> {
    let mut params: BTreeMap<String, Vec<ParamValue>> = BTreeMap::new();
    let mut too_many: BTreeSet<String> = BTreeSet::new();
    for p in node.children().filter(Node::is_element) {
        if p.tag_name().name() != "parameter" {
            r.node(
                Severity::Quirk,
                p,
                format!(
                    "unknown element <{}> is ignored; <{}> holds <parameter>",
                    p.tag_name().name(),
                    node.tag_name().name()
                ),
            );
            continue;
        }
        r.unknown_attrs(p, &["name", "value"], "<parameter>");
        let name = p.attribute("name");
        let value = p.attribute("value");
        if let Some(e) = name.and_then(|n| check_no_control("parameter name", n).err()) {
            r.attr(Severity::Error, p, "name", e);
            continue;
        }
        if let Some(e) = value.and_then(|v| check_no_control("parameter value", v).err()) {
            r.attr(Severity::Error, p, "value", e);
            continue;
        }
        // libvirt takes an empty name (and so do we in filters); a binding
        // may not give one.
        let name_ok =
            name.is_some_and(|n| (mode == ParamMode::Filter || !n.is_empty()) && n.chars().all(is_var_name_char));
        let ignored = |r: &mut Reader, why: &str| r.node(Severity::Quirk, p, format!("parameter is ignored: {why}"));
        let bad_name = "its name is missing or has characters other than letters, digits and '_'";
        let bad_value = "its value is missing, empty, or has characters other than letters, digits and _.:";
        match (name, value, mode) {
            (Some(n), Some(v), ParamMode::Binding) if name_ok => match read_param_value(n, v) {
                Ok(v) => params.entry(n.to_string()).or_default().push(v),
                Err(e) => r.attr(Severity::Error, p, "value", e.to_string()),
            },
            (Some(n), _, ParamMode::Binding) if !name_ok => {
                r.attr(Severity::Error, p, "name", ParamError::BadName { name: n.to_string() }.to_string())
            }
            (_, _, ParamMode::Binding) => {
                let why = if name.is_none() { "a parameter needs name='...'" } else { "a parameter needs value='...'" };
                r.node(Severity::Error, p, why.into())
            }
            (Some(n), Some(v), ParamMode::Filter) if name_ok => match ParamValue::new(v) {
                Ok(v) => params.entry(n.to_string()).or_default().push(v),
                Err(_) => ignored(r, bad_value),
            },
            _ => ignored(r, if name_ok { bad_value } else { bad_name }),
        }
        if let Some(n) = name {
            if params.get(n).is_some_and(|v| v.len() > MAX_PARAM_VALUES) && too_many.insert(n.to_string()) {
                r.node(
                    Severity::Error,
                    p,
                    format!("parameter {n} has more than {MAX_PARAM_VALUES} values; a parameter may have at most {MAX_PARAM_VALUES} (MAX_PARAM_VALUES)"),
                );
            }
        }
    }
    params
}

fn read_filterref(r: &mut Reader, node: Node) -> Option<FilterRef> {
    r.unknown_attrs(node, &["filter"], "<filterref>");
    let filter = match node.attribute("filter") {
        Some(f) => f.to_string(),
        None => {
            r.node(Severity::Error, node, "filterref needs a filter='NAME' attribute".into());
            return None;
        }
    };
    if let Err(e) = check_no_control("filter name", &filter) {
        r.attr(Severity::Error, node, "filter", e);
        return None;
    }
    if filter.is_empty() {
        r.attr(Severity::Quirk, node, "filter", "an empty filter name can never be resolved".into());
    }
    let params = params_of(r, node, ParamMode::Filter);
    Some(FilterRef { filter, params })
}

fn read_rule(r: &mut Reader, node: Node) -> Option<Rule> {
    r.unknown_attrs(node, &["action", "direction", "priority", "statematch"], "<rule>");
    let action = match node.attribute("action") {
        None => {
            r.node(
                Severity::Error,
                node,
                "rule needs an action attribute: drop, accept, reject, return or continue".into(),
            );
            None
        }
        Some(a) => Action::from_name(a).or_else(|| {
            r.attr(
                Severity::Error,
                node,
                "action",
                format!("unknown action '{a}': use drop, accept, reject, return or continue"),
            );
            None
        }),
    };
    let direction = match node.attribute("direction") {
        None => {
            r.node(Severity::Error, node, "rule needs a direction attribute: in, out or inout".into());
            None
        }
        Some(d) => Direction::from_name(d).or_else(|| {
            r.attr(Severity::Error, node, "direction", format!("unknown direction '{d}': use in, out or inout"));
            None
        }),
    };
    let mut priority = DEFAULT_RULE_PRIORITY;
    if let Some(p) = node.attribute("priority") {
        match parse_i32(p) {
            Some(v) if RULE_PRIORITY_RANGE.contains(&v) => priority = v,
            _ => r.attr(
                Severity::Quirk,
                node,
                "priority",
                format!("priority '{p}' is not an integer in -1000..1000; libvirt silently uses 500"),
            ),
        }
    }
    let mut statematch = true;
    if let Some(s) = node.attribute("statematch") {
        if s == "0" || s.eq_ignore_ascii_case("false") {
            statematch = false;
        } else if !(s == "1" || s.eq_ignore_ascii_case("true")) {
            r.attr(
                Severity::Quirk,
                node,
                "statematch",
                format!("statematch '{s}' is ignored (state matching stays on); use 'false' or '0' to turn it off"),
            );
        }
    }

    let mut matches: Option<ProtocolMatch> = None;
    let mut failed = false;
    for child in node.children().filter(Node::is_element) {
        let name = child.tag_name().name();
        let proto = Protocol::from_element(name);
        match (&mut matches, proto) {
            (None, Some(p)) => {
                let mut m = ProtocolMatch::new(p);
                failed |= !read_protocol(r, child, &mut m);
                failed |= !validate_ports(r, child, &m);
                matches = Some(m);
            }
            (Some(m), Some(p)) if p == m.protocol => {
                r.node(
                    Severity::Quirk,
                    child,
                    format!("a second <{name}> in one rule is merged into the first; write one element per rule"),
                );
                failed |= !read_protocol(r, child, m);
                failed |= !validate_ports(r, child, m);
            }
            (Some(m), _) => {
                let first = m.protocol;
                r.node(
                    Severity::Quirk,
                    child,
                    format!("<{name}> is ignored: this rule already matches <{first}>, and a rule has one protocol"),
                );
            }
            (None, None) => r.node(
                Severity::Quirk,
                child,
                format!(
                    "unknown element <{name}> is ignored (the rule then matches more than written); protocols are {}",
                    protocol_list()
                ),
            ),
        }
    }
    if let Some(m) = &mut matches {
        for change in m.fixup() {
            let msg = match change {
                FixupChange::NegationChanged { field, leader, now_negated } => {
                    if now_negated {
                        format!("{field} is negated because {leader} is (libvirt ties their match='no')")
                    } else {
                        format!("match='no' on {field} is dropped because {leader} is not negated (libvirt ties their match='no'); the rule matches {field} positively")
                    }
                }
                FixupChange::IpSetDropped => {
                    "libvirt drops ipset and ipsetflags here: it keeps them only as ipset without ipsetflags, or on <all>".into()
                }
                FixupChange::IpSetFlagsDefaulted => continue,
            };
            let proto = m.protocol.element();
            r.at(Severity::Quirk, node.range().start, proto, None, msg);
        }
    }
    match (action, direction, failed) {
        (Some(action), Some(direction), false) => Some(Rule { action, direction, priority, statematch, matches }),
        _ => None,
    }
}

fn protocol_list() -> String {
    Protocol::ALL.iter().map(|p| p.element()).collect::<Vec<_>>().join(", ")
}

/// Reads one protocol element's attributes into `m`. Returns false when an
/// attribute has a value libvirt refuses.
fn read_protocol(r: &mut Reader, node: Node, m: &mut ProtocolMatch) -> bool {
    let negated = match node.attribute("match") {
        Some("no") => true,
        Some("yes") | None => false,
        Some(other) => {
            r.attr(Severity::Quirk, node, "match", format!("match='{other}' is ignored; use 'no' to negate or 'yes'"));
            false
        }
    };
    let mut ok = true;
    let specs = m.protocol.attributes();
    for a in node.attributes() {
        if a.name() == "match" {
            continue;
        }
        if !specs.iter().any(|s| s.field.name() == a.name()) {
            let known: Vec<&str> = specs.iter().map(|s| s.field.name()).collect();
            let msg = format!(
                "unknown attribute '{}' is ignored (the rule then matches more than written); <{}> takes {}",
                a.name(),
                m.protocol,
                known.join(", ")
            );
            r.attr(Severity::Quirk, node, a.name(), msg);
        }
    }
    for spec in specs {
        let Some(raw) = node.attribute(spec.field.name()) else {
            continue;
        };
        let value = if let Some(var) = raw.strip_prefix('$') {
            VarAccess::parse(var).map(Value::Var)
        } else {
            parse_value(spec.kind, raw)
        };
        match value {
            Ok(mut v) => {
                if let (Kind::Comment, Value::Text(t)) = (spec.kind, &mut v) {
                    if t.len() > MAX_COMMENT_LEN {
                        let mut cut = MAX_COMMENT_LEN;
                        while !t.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        t.truncate(cut);
                        r.attr(
                            Severity::Quirk,
                            node,
                            spec.field.name(),
                            format!("comment is longer than {MAX_COMMENT_LEN} bytes and is cut there"),
                        );
                    }
                }
                if let (Kind::Bool, Value::Bool(false)) = (spec.kind, &v) {
                    if !matches!(raw, "false" | "0" | "no") {
                        r.attr(
                            Severity::Quirk,
                            node,
                            spec.field.name(),
                            format!("'{raw}' reads as false; use true/false, yes/no or 1/0"),
                        );
                    }
                }
                m.fields.insert(spec.field, FieldValue { value: v, negated });
            }
            Err(e) => {
                ok = false;
                r.attr(Severity::Error, node, spec.field.name(), format!("illegal value: {e}"));
            }
        }
    }
    ok
}

/// libvirt's `virNWFilterRuleValidate`: ports on `<ip>`/`<ipv6>` need a
/// protocol that has ports. It runs after each protocol element.
fn validate_ports(r: &mut Reader, node: Node, m: &ProtocolMatch) -> bool {
    if !matches!(m.protocol, Protocol::Ip | Protocol::Ipv6) {
        return true;
    }
    let has_ports = [Field::SrcPortStart, Field::SrcPortEnd, Field::DstPortStart, Field::DstPortEnd]
        .iter()
        .any(|f| m.fields.contains_key(f));
    if !has_ports {
        return true;
    }
    let proto_ok =
        matches!(m.get(Field::IpProtocol).map(|f| &f.value), Some(Value::Num { value: 6 | 17 | 33 | 132, .. }));
    if !proto_ok {
        let what = if m.protocol == Protocol::Ip { "IP" } else { "IPv6" };
        r.node(
            Severity::Error,
            node,
            format!("{what} rule with ports needs protocol= one of tcp(6), udp(17), dccp(33) or sctp(132), given before or in the same element"),
        );
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_forms() {
        assert_eq!(
            parse_uuid("5C6D49AF-B071-6127-B4EC-6F8ED4B55335").as_deref(),
            Some("5c6d49af-b071-6127-b4ec-6f8ed4b55335")
        );
        assert_eq!(
            parse_uuid("5c6d49afb0716127b4ec6f8ed4b55335").as_deref(),
            Some("5c6d49af-b071-6127-b4ec-6f8ed4b55335")
        );
        assert_eq!(parse_uuid("5c6d49af"), None);
        assert_eq!(parse_uuid("zc6d49afb0716127b4ec6f8ed4b55335"), None);
    }

    #[test]
    fn errors_name_place_and_reason() {
        let e = read_filter("<filter name='x'>\n  <rule action='accept' direction='in'>\n    <tcp dstportstart='65536'/>\n  </rule>\n</filter>").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("3:10: tcp/dstportstart: illegal value"), "{s}");
        assert!(s.contains("0..65535"), "{s}");
    }

    #[test]
    fn quirks_are_reported() {
        let p = read_filter(
            "<filter name='x'><rule action='drop' direction='in'><tcpp dstportstart='22'/></rule></filter>",
        )
        .unwrap();
        assert_eq!(p.quirks.len(), 1);
        assert!(p.quirks[0].message.contains("unknown element <tcpp>"));
        let Entry::Rule(rule) = &p.value.entries[0] else { panic!() };
        assert!(rule.matches.is_none());
    }

    #[test]
    fn malformed_xml_is_an_error() {
        let e = read_filter("<filter name='x'><rule></filter>").unwrap_err();
        assert!(e.to_string().contains("malformed XML"));
    }

    #[test]
    fn ports_need_protocol() {
        assert!(read_filter(
            "<filter name='x'><rule action='drop' direction='in'><ip dstportstart='22'/></rule></filter>"
        )
        .is_err());
        assert!(read_filter("<filter name='x'><rule action='drop' direction='in'><ip protocol='tcp' dstportstart='22'/></rule></filter>").is_ok());
    }
}
