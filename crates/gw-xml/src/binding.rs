//! Reads and writes libvirt's `<filterbinding>` documents
//! (`virNWFilterBindingDefParseXML` / `virNWFilterBindingDefFormatBuf`).

use crate::diag::{ReadError, Severity};
use crate::read::{params_of, parse_doc, parse_uuid, ParamMode, Reader};
use crate::write::{escape, write_filterref};
use gw_model::filter::check_filter_name;
use gw_model::text::check_no_control;
use gw_model::{check_ifname, Binding, FilterRef, IfName, MacAddr, Owner};
use roxmltree::Node;
use std::fmt::Write as _;

/// Reads one `<filterbinding>` document.
///
/// Stricter than filters: a `<parameter>` libvirt would skip is an error
/// here, as is a value a reserved variable cannot hold (`IP` not an IPv4
/// address, ...; see [`gw_model::check_param`]), since skipping it would
/// silently change what the port is allowed. Names (owner, filter,
/// parameters) may not contain control characters.
pub fn read_binding(text: &str) -> Result<crate::Parsed<Binding>, ReadError> {
    let doc = parse_doc(text)?;
    let root = doc.root_element();
    let mut r = Reader::new(&doc);
    let e = Severity::Error;
    if root.tag_name().name() != "filterbinding" {
        r.node(e, root, "a binding document starts with <filterbinding>".into());
        return Err(ReadError { errors: r.finish() });
    }
    let child = |name: &str| root.children().find(|c| c.is_element() && c.tag_name().name() == name);
    let text_of = |n: Node| n.text().unwrap_or("").trim().to_string();

    let mut owner = Owner { name: String::new(), uuid: String::new() };
    match child("owner") {
        None => r.node(e, root, "missing <owner> with <name> and <uuid>".into()),
        Some(o) => {
            let sub = |name: &str| o.children().find(|c| c.is_element() && c.tag_name().name() == name);
            match sub("name") {
                Some(n) if !text_of(n).is_empty() => match check_no_control("owner name", &text_of(n)) {
                    Ok(()) => owner.name = text_of(n),
                    Err(m) => r.node(e, n, m),
                },
                _ => r.node(e, o, "owner needs a non-empty <name>".into()),
            }
            match sub("uuid") {
                Some(u) => match parse_uuid(&text_of(u)) {
                    Some(v) => owner.uuid = v,
                    None => r.node(e, u, format!("malformed uuid '{}'", text_of(u))),
                },
                None => r.node(e, o, "owner needs a <uuid>".into()),
            }
        }
    }
    let mut portdev = None;
    match child("portdev") {
        None => r.node(e, root, "missing <portdev name='...'/>".into()),
        Some(p) => match p.attribute("name") {
            Some(n) => match IfName::new(n) {
                Ok(name) => portdev = Some(name),
                Err(m) => r.attr(e, p, "name", m),
            },
            None => r.node(e, p, "portdev needs name='...'".into()),
        },
    }
    let linkdev = match child("linkdev") {
        Some(l) => match l.attribute("name") {
            Some(n) if check_ifname(n).is_ok() => Some(n.to_string()),
            _ => {
                r.attr(e, l, "name", "linkdev needs a valid interface name".into());
                None
            }
        },
        None => None,
    };
    let mut mac = MacAddr([0; 6]);
    match child("mac") {
        None => r.node(e, root, "missing <mac address='...'/>".into()),
        Some(m) => match m.attribute("address").and_then(MacAddr::parse) {
            Some(a) if a.0[0] & 1 == 0 => mac = a,
            Some(_) => r.attr(e, m, "address", "a NIC's MAC must be unicast".into()),
            None => r.attr(e, m, "address", "not a MAC address (like 52:54:00:12:34:56)".into()),
        },
    }
    let mut filterref = FilterRef { filter: String::new(), params: Default::default() };
    match child("filterref") {
        None => r.node(e, root, "missing <filterref filter='...'>".into()),
        Some(f) => match f.attribute("filter") {
            Some(name) if !name.is_empty() => match check_filter_name(name) {
                Ok(()) => {
                    filterref.filter = name.to_string();
                    filterref.params = params_of(&mut r, f, ParamMode::Binding);
                }
                Err(m) => r.attr(e, f, "filter", m),
            },
            _ => r.attr(e, f, "filter", "filterref needs a filter name".into()),
        },
    }
    let (errors, quirks): (Vec<_>, Vec<_>) = r.finish().into_iter().partition(|d| d.severity == Severity::Error);
    let portdev = match portdev {
        Some(p) if errors.is_empty() => p,
        _ => return Err(ReadError { errors }),
    };
    Ok(crate::Parsed { value: Binding { owner, portdev, linkdev, mac, filterref }, quirks })
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
