//! Writes filters the way `virsh nwfilter-dumpxml` prints them
//! (`virNWFilterDefFormat` in libvirt's `src/conf/nwfilter_conf.c`).

use gw_model::filter::default_chain_priority;
use gw_model::protocol::has_ipset_fixup;
use gw_model::value::format_value;
use gw_model::{Entry, Field, Filter, FilterRef, ProtocolMatch, Rule, Value};
use std::fmt::Write as _;

/// Escapes text for a single-quoted attribute or element content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

/// The canonical XML of a filter.
pub fn write_filter(f: &Filter) -> String {
    let mut out = String::new();
    let _ = write!(out, "<filter name='{}' chain='{}'", escape(&f.name), escape(&f.chain));
    // libvirt prints the priority only when it is not 0, which loses an
    // explicit 0 on chains whose default is not 0 (a re-read would give the
    // default). We also print it in that case so that reading our output gives
    // the same filter back.
    if f.priority != 0 || default_chain_priority(&f.chain) != 0 {
        let _ = write!(out, " priority='{}'", f.priority);
    }
    out.push_str(">\n");
    if let Some(u) = &f.uuid {
        let _ = writeln!(out, "  <uuid>{u}</uuid>");
    }
    for e in &f.entries {
        match e {
            Entry::Rule(r) => write_rule(&mut out, r),
            Entry::FilterRef(fr) => write_filterref(&mut out, fr, "  "),
        }
    }
    out.push_str("</filter>\n");
    out
}

/// Writes a `<filterref>` with its parameters sorted by name, as libvirt does.
pub fn write_filterref(out: &mut String, fr: &FilterRef, indent: &str) {
    let _ = write!(out, "{indent}<filterref filter='{}'", escape(&fr.filter));
    if fr.params.is_empty() {
        out.push_str("/>\n");
        return;
    }
    out.push_str(">\n");
    for (name, values) in &fr.params {
        for v in values {
            let _ = writeln!(out, "{indent}  <parameter name='{}' value='{}'/>", escape(name), escape(v));
        }
    }
    let _ = writeln!(out, "{indent}</filterref>");
}

fn write_rule(out: &mut String, r: &Rule) {
    let _ = write!(out, "  <rule action='{}' direction='{}' priority='{}'", r.action, r.direction, r.priority);
    if !r.statematch {
        out.push_str(" statematch='false'");
    }
    match &r.matches {
        None => out.push_str("/>\n"),
        Some(m) => {
            out.push_str(">\n");
            for line in match_elements(m) {
                let _ = writeln!(out, "    {line}");
            }
            out.push_str("  </rule>\n");
        }
    }
}

/// The XML element(s) of a protocol match, one per line. Attributes go in
/// table order; when the negation changes from one attribute to the next,
/// the element is closed and a new one opened, which is how libvirt
/// represents per-attribute `match='no'` (`virNWFilterRuleDefDetailsFormat`).
pub fn match_elements(m: &ProtocolMatch) -> Vec<String> {
    let name = m.protocol.element();
    let mut lines = Vec::new();
    let mut cur: Option<(bool, String)> = None; // (negated, element so far)
                                                // libvirt gives an `ipset` without flags the flags `src`, but drops both
                                                // when a rule has both (except on `all`); so its own dump of such a rule
                                                // reads back without the ipset. We leave the implied `src` out so our
                                                // output reads back to the same rule.
    let implied_flags = has_ipset_fixup(m.protocol)
        && m.fields.contains_key(&Field::IpSet)
        && m.get(Field::IpSetFlags).is_some_and(|f| f.value == Value::IpSetFlags(vec![true]));
    for spec in m.protocol.attributes() {
        let Some(fv) = m.fields.get(&spec.field) else {
            continue;
        };
        if implied_flags && spec.field == Field::IpSetFlags {
            continue;
        }
        if cur.as_ref().is_some_and(|(neg, _)| *neg != fv.negated) {
            if let Some((_, e)) = cur.take() {
                lines.push(e + "/>");
            }
        }
        let (_, e) = cur.get_or_insert_with(|| {
            (fv.negated, if fv.negated { format!("<{name} match='no'") } else { format!("<{name}") })
        });
        let _ = write!(e, " {}='{}'", spec.field.name(), escape(&format_value(spec.kind, &fv.value)));
    }
    if let Some((_, e)) = cur {
        lines.push(e + "/>");
    }
    if lines.is_empty() {
        lines.push(format!("<{name}/>"));
    }
    lines
}
