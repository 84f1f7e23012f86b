//! Reads and writes libvirt's `<filterbinding>` documents
//! (`virNWFilterBindingDefParseXML` / `virNWFilterBindingDefFormatBuf`).

use crate::diag::{Diagnostic, Parsed, ReadError, Severity};
use crate::read::{parse_doc, parse_uuid, read_params};
use crate::write::{escape, write_filterref};
use gw_model::{check_ifname, Binding, FilterRef, MacAddr, Owner};
use roxmltree::Node;
use std::fmt::Write as _;

fn err(doc: &roxmltree::Document, node: Node, attribute: Option<&str>, message: String) -> Diagnostic {
    let pos = attribute
        .and_then(|a| node.attributes().find(|x| x.name() == a))
        .map(|a| a.range_qname().start)
        .unwrap_or(node.range().start);
    let p = doc.text_pos_at(pos);
    Diagnostic {
        severity: Severity::Error,
        line: p.row,
        col: p.col,
        element: node.tag_name().name().to_string(),
        attribute: attribute.map(str::to_string),
        message,
    }
}

/// Reads one `<filterbinding>` document.
pub fn read_binding(text: &str) -> Result<Parsed<Binding>, ReadError> {
    let doc = parse_doc(text)?;
    let root = doc.root_element();
    let mut errors = Vec::new();
    if root.tag_name().name() != "filterbinding" {
        errors.push(err(&doc, root, None, "a binding document starts with <filterbinding>".into()));
        return Err(ReadError { errors });
    }
    let child = |name: &str| root.children().find(|c| c.is_element() && c.tag_name().name() == name);
    let text_of = |n: Node| n.text().unwrap_or("").trim().to_string();

    let mut owner = Owner { name: String::new(), uuid: String::new() };
    match child("owner") {
        None => errors.push(err(&doc, root, None, "missing <owner> with <name> and <uuid>".into())),
        Some(o) => {
            let sub = |name: &str| o.children().find(|c| c.is_element() && c.tag_name().name() == name);
            match sub("name").map(text_of) {
                Some(n) if !n.is_empty() => owner.name = n,
                _ => errors.push(err(&doc, o, None, "owner needs a non-empty <name>".into())),
            }
            match sub("uuid") {
                Some(u) => match parse_uuid(&text_of(u)) {
                    Some(v) => owner.uuid = v,
                    None => errors.push(err(&doc, u, None, format!("malformed uuid '{}'", text_of(u)))),
                },
                None => errors.push(err(&doc, o, None, "owner needs a <uuid>".into())),
            }
        }
    }
    let mut portdev = String::new();
    match child("portdev") {
        None => errors.push(err(&doc, root, None, "missing <portdev name='...'/>".into())),
        Some(p) => match p.attribute("name") {
            Some(n) => match check_ifname(n) {
                Ok(()) => portdev = n.to_string(),
                Err(e) => errors.push(err(&doc, p, Some("name"), e)),
            },
            None => errors.push(err(&doc, p, None, "portdev needs name='...'".into())),
        },
    }
    let linkdev = match child("linkdev") {
        Some(l) => match l.attribute("name") {
            Some(n) if check_ifname(n).is_ok() => Some(n.to_string()),
            _ => {
                errors.push(err(&doc, l, Some("name"), "linkdev needs a valid interface name".into()));
                None
            }
        },
        None => None,
    };
    let mut mac = MacAddr([0; 6]);
    match child("mac") {
        None => errors.push(err(&doc, root, None, "missing <mac address='...'/>".into())),
        Some(m) => match m.attribute("address").and_then(MacAddr::parse) {
            Some(a) if a.0[0] & 1 == 0 => mac = a,
            Some(_) => errors.push(err(&doc, m, Some("address"), "a NIC's MAC must be unicast".into())),
            None => errors.push(err(&doc, m, Some("address"), "not a MAC address (like 52:54:00:12:34:56)".into())),
        },
    }
    let mut filterref = FilterRef { filter: String::new(), params: Default::default() };
    let mut quirks = Vec::new();
    match child("filterref") {
        None => errors.push(err(&doc, root, None, "missing <filterref filter='...'>".into())),
        Some(f) => match f.attribute("filter") {
            Some(name) if !name.is_empty() => {
                filterref.filter = name.to_string();
                let mut diags = Vec::new();
                filterref.params = read_params(&doc, &mut diags, f);
                quirks.extend(diags);
            }
            _ => errors.push(err(&doc, f, Some("filter"), "filterref needs a filter name".into())),
        },
    }
    if !errors.is_empty() {
        return Err(ReadError { errors });
    }
    Ok(Parsed { value: Binding { owner, portdev, linkdev, mac, filterref }, quirks })
}

/// Writes a binding as `virsh nwfilter-binding-dumpxml` does.
pub fn write_binding(b: &Binding) -> String {
    let mut out = String::from("<filterbinding>\n  <owner>\n");
    let _ = writeln!(out, "    <name>{}</name>", escape(&b.owner.name));
    let _ = writeln!(out, "    <uuid>{}</uuid>", b.owner.uuid);
    out.push_str("  </owner>\n");
    let _ = writeln!(out, "  <portdev name='{}'/>", escape(&b.portdev));
    if let Some(l) = &b.linkdev {
        let _ = writeln!(out, "  <linkdev name='{}'/>", escape(l));
    }
    let _ = writeln!(out, "  <mac address='{}'/>", b.mac);
    write_filterref(&mut out, &b.filterref, "  ");
    out.push_str("</filterbinding>\n");
    out
}
