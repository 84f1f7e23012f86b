//! Reading a libvirt domain's XML for the qemu hook, and moving its
//! `<filterref>`s into guestwall's metadata. Pure: text in, values or text
//! out; nothing here talks to a daemon or to libvirt.
//!
//! A domain names its guestwall filters in one element of its `<metadata>`,
//! in guestwall's own namespace ([`NAMESPACE`]), keyed by the NIC's MAC:
//!
//! ```xml
//! <metadata>
//!   <guestwall:filters xmlns:guestwall="https://guestwall.dev/xmlns/libvirt-domain/1">
//!     <guestwall:interface mac="52:54:00:00:00:01">
//!       <guestwall:filterref filter="clean-traffic">
//!         <guestwall:parameter name="IP" value="192.0.2.10"/>
//!       </guestwall:filterref>
//!     </guestwall:interface>
//!   </guestwall:filters>
//! </metadata>
//! ```
//!
//! The MAC is the key because libvirt keeps it in the persistent definition,
//! whereas the tap's name (`<target dev='vnetN'/>`) is chosen anew at each
//! start. The element names mirror libvirt's own `<filterref>` so that
//! moving one in is a rename, and the metadata survives `virsh define`,
//! migration and save/restore, since libvirt keeps foreign metadata whole.

use gw_model::{Binding, FilterRef, IfName, MacAddr, Owner};
use roxmltree::{Document, Node};
use std::collections::BTreeMap;

/// guestwall's XML namespace in a domain's `<metadata>`. Versioned in the
/// path, so that a later format can live beside this one.
pub const NAMESPACE: &str = "https://guestwall.dev/xmlns/libvirt-domain/1";

/// The prefix written by the conversion (and the `--key` for
/// `virsh metadata`); readers go by the namespace, whatever the prefix.
pub const PREFIX: &str = "guestwall";

/// The largest domain XML read: 4 MiB, libvirt's own limit for one string
/// in its RPC protocol (`VIR_NET_MESSAGE_STRING_MAX`), so no domain that
/// `virsh dumpxml` can show is refused. Real domains are tens of kilobytes.
pub const MAX_DOMAIN_XML_BYTES: usize = 4 << 20;

/// A domain XML that cannot be used, with its place (`SOURCE:LINE:COL`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}:{col}: {message}")]
pub struct DomainError {
    /// Where the XML came from (a file name, or `stdin`).
    pub source_name: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// What is wrong.
    pub message: String,
}

/// Where an interface's filter reference was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefSource {
    /// guestwall's `<metadata>` element, by MAC.
    Metadata,
    /// A plain `<filterref>` inside the `<interface>` (libvirt's own form).
    Interface,
}

/// One `<interface>` of a domain, as far as filtering cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its line in the XML (for messages).
    pub line: u32,
    /// `type='...'` (bridge, network, ethernet, direct, ...).
    pub kind: String,
    /// `<mac address='...'/>`.
    pub mac: Option<MacAddr>,
    /// `<target dev='...'/>`: the host's port, set by libvirt at start.
    pub target: Option<String>,
    /// The filter reference, and where it came from.
    pub filterref: Option<(FilterRef, RefSource)>,
}

impl Interface {
    /// How messages name it: its port and MAC where known, else its line.
    pub fn describe(&self) -> String {
        match (&self.target, self.mac) {
            (Some(t), Some(m)) => format!("interface {t} ({m})"),
            (None, Some(m)) => format!("interface with MAC {m}"),
            (Some(t), None) => format!("interface {t}"),
            (None, None) => format!("<interface type='{}'> at line {}", self.kind, self.line),
        }
    }
}

/// What the hook needs of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// `<name>`.
    pub name: String,
    /// `<uuid>`, lower case with dashes.
    pub uuid: String,
    /// Its interfaces in document order.
    pub interfaces: Vec<Interface>,
    /// MACs that guestwall's metadata names but no interface has (a NIC
    /// removed since): nothing to filter, reported by the hook's callers.
    pub unmatched: Vec<MacAddr>,
}

impl Domain {
    /// Whether any interface has a filter reference.
    pub fn has_references(&self) -> bool {
        self.interfaces.iter().any(|i| i.filterref.is_some())
    }

    /// The bindings the domain's references ask for, one per interface with
    /// a reference: owner = the domain, port = its `<target dev>`.
    ///
    /// An interface with a reference but no MAC or no target (a type whose
    /// port the host does not see, such as `user` or `hostdev`, or an XML
    /// from before the start) cannot be filtered: an error naming it, never
    /// a silently unfiltered NIC.
    pub fn bindings(&self) -> Result<Vec<Binding>, String> {
        let mut out = Vec::new();
        for i in &self.interfaces {
            let Some((filterref, _)) = &i.filterref else { continue };
            let Some(mac) = i.mac else {
                return Err(format!("{} has a filter reference but no <mac address>", i.describe()));
            };
            let Some(target) = &i.target else {
                return Err(format!(
                    "{} (type '{}') has a filter reference but no host port (<target dev>); \
                     guestwall filters tap and macvtap ports only",
                    i.describe(),
                    i.kind
                ));
            };
            let portdev = IfName::new(target.as_str()).map_err(|e| format!("{}: {e}", i.describe()))?;
            out.push(Binding {
                owner: Owner { name: self.name.clone(), uuid: self.uuid.clone() },
                portdev,
                linkdev: None,
                mac,
                filterref: filterref.clone(),
            });
        }
        Ok(out)
    }
}

/// A reading of one `<filterref>`: the filter, and the parameters in
/// document order (kept for the conversion, which rewrites them as written).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefRead {
    filter: String,
    params: Vec<(String, gw_model::ParamValue)>,
}

impl RefRead {
    fn model(&self) -> FilterRef {
        let mut params: BTreeMap<String, Vec<gw_model::ParamValue>> = BTreeMap::new();
        for (n, v) in &self.params {
            params.entry(n.clone()).or_default().push(v.clone());
        }
        FilterRef { filter: self.filter.clone(), params }
    }
}

struct Ctx<'a> {
    doc: &'a Document<'a>,
    source_name: &'a str,
}

impl Ctx<'_> {
    fn err(&self, node: Node, message: impl Into<String>) -> DomainError {
        let p = self.doc.text_pos_at(node.range().start);
        DomainError { source_name: self.source_name.to_string(), line: p.row, col: p.col, message: message.into() }
    }

    fn line(&self, node: Node) -> u32 {
        self.doc.text_pos_at(node.range().start).row
    }
}

fn elements<'a, 'i>(n: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(|c| c.is_element())
}

/// libvirt's own elements have no namespace.
fn plain<'a, 'i>(n: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    elements(n).filter(move |c| c.tag_name().name() == name && c.tag_name().namespace().is_none())
}

fn ours<'a, 'i>(n: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    elements(n).filter(move |c| c.tag_name().name() == name && c.tag_name().namespace() == Some(NAMESPACE))
}

fn parse<'a>(text: &'a str, source_name: &str) -> Result<Document<'a>, DomainError> {
    gw_xml::parse_foreign(text, MAX_DOMAIN_XML_BYTES, "4 MiB, MAX_DOMAIN_XML_BYTES").map_err(|e| {
        let (line, col, message) = match e.errors.first() {
            Some(d) => (d.line, d.col, d.message.clone()),
            None => (1, 1, "unreadable XML".to_string()),
        };
        DomainError { source_name: source_name.to_string(), line, col, message }
    })
}

/// Reads a `<filterref>` (libvirt's, or guestwall's with `ns`): a filter
/// name and `<parameter name= value=>` children.
fn read_ref(cx: &Ctx, node: Node, ns: bool) -> Result<RefRead, DomainError> {
    let filter = match node.attribute("filter") {
        Some(f) if !f.trim().is_empty() => f.to_string(),
        _ => return Err(cx.err(node, "filterref needs filter='NAME'")),
    };
    if let Err(m) = gw_model::filter::check_filter_name(&filter) {
        return Err(cx.err(node, format!("filterref filter='{filter}': {m}")));
    }
    let params: Vec<Node> = if ns { ours(node, "parameter").collect() } else { plain(node, "parameter").collect() };
    let mut out = Vec::new();
    for p in params {
        match (p.attribute("name"), p.attribute("value")) {
            // Checked here, where the place is known: a value guestwall
            // cannot take is refused with its line and column.
            (Some(n), Some(v)) if !n.is_empty() => match gw_model::read_param_value(n, v) {
                Ok(v) => out.push((n.to_string(), v)),
                Err(e) => return Err(cx.err(p, format!("parameter {n}: {e}"))),
            },
            _ => return Err(cx.err(p, "parameter needs name='NAME' and value='VALUE'")),
        }
    }
    Ok(RefRead { filter, params: out })
}

fn read_mac(cx: &Ctx, node: Node, attr: &str) -> Result<MacAddr, DomainError> {
    let text = node.attribute(attr).unwrap_or("");
    match MacAddr::parse(text) {
        Some(m) if m.0[0] & 1 == 0 => Ok(m),
        Some(_) => Err(cx.err(node, format!("MAC {text} is multicast; a NIC's MAC is unicast"))),
        None => Err(cx.err(node, format!("{attr}='{text}' is not a MAC address (like 52:54:00:12:34:56)"))),
    }
}

/// guestwall's metadata element, if the domain has one.
fn our_metadata<'a, 'i>(cx: &Ctx, root: Node<'a, 'i>) -> Result<Option<Node<'a, 'i>>, DomainError> {
    let mut found = None;
    for m in plain(root, "metadata") {
        for f in elements(m).filter(|c| c.tag_name().namespace() == Some(NAMESPACE)) {
            if f.tag_name().name() != "filters" {
                return Err(
                    cx.err(f, format!("guestwall's metadata element is <filters>, not <{}>", f.tag_name().name()))
                );
            }
            if found.is_some() {
                // libvirt keeps one element per namespace; two are a hand edit.
                return Err(cx.err(f, "a second guestwall <filters> element; merge them into one"));
            }
            found = Some(f);
        }
    }
    Ok(found)
}

/// The metadata's references by MAC, each with its `<interface>` node.
fn metadata_refs<'a, 'i>(
    cx: &Ctx,
    filters: Option<Node<'a, 'i>>,
) -> Result<BTreeMap<MacAddr, (RefRead, Node<'a, 'i>)>, DomainError> {
    let mut out = BTreeMap::new();
    let Some(filters) = filters else { return Ok(out) };
    for e in elements(filters) {
        if e.tag_name().namespace() != Some(NAMESPACE) || e.tag_name().name() != "interface" {
            return Err(cx.err(
                e,
                format!("guestwall <filters> holds <interface mac='...'> elements, not <{}>", e.tag_name().name()),
            ));
        }
        let mac = read_mac(cx, e, "mac")?;
        let refs: Vec<Node> = ours(e, "filterref").collect();
        let r = match refs.as_slice() {
            [one] => read_ref(cx, *one, true)?,
            [] => return Err(cx.err(e, format!("interface {mac}: missing <filterref filter='...'>"))),
            [_, second, ..] => return Err(cx.err(*second, format!("interface {mac}: one <filterref> per interface"))),
        };
        if out.insert(mac, (r, e)).is_some() {
            return Err(cx.err(e, format!("interface {mac} is named twice in guestwall's metadata")));
        }
    }
    Ok(out)
}

/// Reads what the hook needs from a domain XML. `source_name` names the
/// input in errors.
///
/// A plain `<filterref>` on an interface counts as a reference too (the
/// form libvirt's own nwfilter driver reads); an interface with both a
/// plain `<filterref>` and an entry in guestwall's metadata is an error,
/// since it is not clear which filter is meant.
pub fn read_domain(text: &str, source_name: &str) -> Result<Domain, DomainError> {
    let doc = parse(text, source_name)?;
    let cx = Ctx { doc: &doc, source_name };
    let root = doc.root_element();
    if root.tag_name().name() != "domain" || root.tag_name().namespace().is_some() {
        return Err(cx.err(root, format!("a domain XML starts with <domain>, not <{}>", root.tag_name().name())));
    }
    let text_of = |name: &'static str| plain(root, name).next().map(|n| (n, n.text().unwrap_or("").trim().to_string()));
    let name = match text_of("name") {
        Some((_, t)) if !t.is_empty() => t,
        _ => return Err(cx.err(root, "the domain has no <name>")),
    };
    if let Err(m) = gw_model::text::check_no_control("domain name", &name) {
        return Err(cx.err(root, m));
    }
    let uuid = match text_of("uuid") {
        Some((n, t)) => match gw_xml::read::parse_uuid(&t) {
            Some(u) => u,
            None => return Err(cx.err(n, format!("malformed <uuid> '{t}'"))),
        },
        None => return Err(cx.err(root, "the domain has no <uuid>")),
    };
    let mut meta = metadata_refs(&cx, our_metadata(&cx, root)?)?;
    let mut interfaces = Vec::new();
    for devices in plain(root, "devices") {
        for i in plain(devices, "interface") {
            let kind = i.attribute("type").unwrap_or("").to_string();
            let mac = match plain(i, "mac").next() {
                Some(m) => Some(read_mac(&cx, m, "address")?),
                None => None,
            };
            let target = plain(i, "target").next().and_then(|t| t.attribute("dev")).map(str::to_string);
            let own = match plain(i, "filterref").next() {
                Some(f) => Some(read_ref(&cx, f, false)?),
                None => None,
            };
            let from_meta = mac.and_then(|m| meta.remove(&m));
            let filterref = match (own, from_meta) {
                (Some(_), Some((_, at))) => {
                    let what = mac.map(|m| m.to_string()).unwrap_or_default();
                    return Err(cx.err(
                        at,
                        format!(
                            "interface {what} has both a <filterref> of its own (line {}) and one in guestwall's \
                             metadata; keep one (guestwall libvirt-convert-domain moves the first into the second)",
                            cx.line(i)
                        ),
                    ));
                }
                (Some(r), None) => Some((r.model(), RefSource::Interface)),
                (None, Some((r, _))) => Some((r.model(), RefSource::Metadata)),
                (None, None) => None,
            };
            interfaces.push(Interface { line: cx.line(i), kind, mac, target, filterref });
        }
    }
    let unmatched = meta.into_keys().collect();
    Ok(Domain { name, uuid, interfaces, unmatched })
}

/// What the conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// The new domain XML.
    pub xml: String,
    /// How many `<filterref>`s were moved.
    pub moved: usize,
}

fn render_ref(out: &mut String, mac: MacAddr, r: &RefRead, indent: &str) {
    use gw_xml::write::escape;
    let p = PREFIX;
    out.push_str(&format!("{indent}  <{p}:interface mac=\"{mac}\">\n"));
    if r.params.is_empty() {
        out.push_str(&format!("{indent}    <{p}:filterref filter=\"{}\"/>\n", escape(&r.filter)));
    } else {
        out.push_str(&format!("{indent}    <{p}:filterref filter=\"{}\">\n", escape(&r.filter)));
        for (n, v) in &r.params {
            out.push_str(&format!("{indent}      <{p}:parameter name=\"{}\" value=\"{}\"/>\n", escape(n), escape(v)));
        }
        out.push_str(&format!("{indent}    </{p}:filterref>\n"));
    }
    out.push_str(&format!("{indent}  </{p}:interface>\n"));
}

fn render_filters(refs: &BTreeMap<MacAddr, RefRead>, indent: &str) -> String {
    let mut out = format!("<{PREFIX}:filters xmlns:{PREFIX}=\"{NAMESPACE}\">\n");
    for (mac, r) in refs {
        render_ref(&mut out, *mac, r, indent);
    }
    out.push_str(&format!("{indent}</{PREFIX}:filters>"));
    out
}

/// The whitespace before the line `pos` is on, and where that line starts
/// when only whitespace precedes `pos` on it (so that removing an element
/// also removes its indentation).
fn line_start(text: &str, pos: usize) -> (usize, &str) {
    let start = text[..pos].rfind('\n').map_or(0, |n| n + 1);
    let lead = &text[start..pos];
    if lead.chars().all(|c| c == ' ' || c == '\t') {
        (start, lead)
    } else {
        (pos, "")
    }
}

/// Moves every interface's `<filterref>` into guestwall's metadata (keyed
/// by the interface's MAC) and returns the new XML; everything else is kept
/// byte for byte. An interface with a `<filterref>` and no `<mac>` is an
/// error naming it: without a MAC the reference could not be found again.
/// Entries already in the metadata are kept; one for a MAC that also has a
/// `<filterref>` of its own is an error (which one is meant is not clear).
pub fn convert_domain(text: &str, source_name: &str) -> Result<Converted, DomainError> {
    let doc = parse(text, source_name)?;
    let cx = Ctx { doc: &doc, source_name };
    let root = doc.root_element();
    if root.tag_name().name() != "domain" || root.tag_name().namespace().is_some() {
        return Err(cx.err(root, format!("a domain XML starts with <domain>, not <{}>", root.tag_name().name())));
    }
    let existing = our_metadata(&cx, root)?;
    let mut refs: BTreeMap<MacAddr, RefRead> =
        metadata_refs(&cx, existing)?.into_iter().map(|(mac, (r, _))| (mac, r)).collect();
    // (start, end, replacement), applied from the end.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut moved = 0;
    for devices in plain(root, "devices") {
        for i in plain(devices, "interface") {
            let Some(f) = plain(i, "filterref").next() else { continue };
            let mac = match plain(i, "mac").next() {
                Some(m) => read_mac(&cx, m, "address")?,
                None => {
                    let kind = i.attribute("type").unwrap_or("");
                    return Err(cx.err(
                        i,
                        format!(
                            "<interface type='{kind}'> has a <filterref> but no <mac address='...'/>: give it a MAC \
                             (libvirt adds one when the domain is defined) so the reference can be keyed by it"
                        ),
                    ));
                }
            };
            let r = read_ref(&cx, f, false)?;
            if refs.insert(mac, r).is_some() {
                return Err(cx.err(
                    f,
                    format!("interface {mac} already has an entry in guestwall's metadata; remove one of the two"),
                ));
            }
            let range = f.range();
            let (start, _) = line_start(text, range.start);
            let end =
                if start < range.start && text[range.end..].starts_with('\n') { range.end + 1 } else { range.end };
            edits.push((start, end, String::new()));
            moved += 1;
        }
    }
    if moved == 0 {
        return Ok(Converted { xml: text.to_string(), moved });
    }
    match existing {
        Some(f) => {
            let (_, indent) = line_start(text, f.range().start);
            edits.push((f.range().start, f.range().end, render_filters(&refs, indent)));
        }
        None => match plain(root, "metadata").next() {
            Some(m) => {
                let (_, indent) = line_start(text, m.range().start);
                let inner = format!("{indent}  ");
                let block = render_filters(&refs, &inner);
                let range = m.range();
                if text[..range.end].ends_with("/>") {
                    let open = &text[range.start..range.end - 2];
                    edits.push((range.start, range.end, format!("{open}>\n{inner}{block}\n{indent}</metadata>")));
                } else {
                    // Before </metadata>, on a line of its own.
                    let close = text[..range.end].rfind("</").unwrap_or(range.end);
                    let (at, _) = line_start(text, close);
                    edits.push((at, at, format!("{inner}{block}\n")));
                }
            }
            None => {
                // A new <metadata> as the domain's last child.
                let range = root.range();
                let close = text[..range.end].rfind("</").unwrap_or(range.end);
                let (at, _) = line_start(text, close);
                let indent = plain(root, "name").next().map_or("  ", |n| line_start(text, n.range().start).1);
                let inner = format!("{indent}  ");
                let block = render_filters(&refs, &inner);
                // `</domain>` after other text on its line: the block starts a line of its own.
                let sep = if at == 0 || text[..at].ends_with('\n') { "" } else { "\n" };
                edits.push((at, at, format!("{sep}{indent}<metadata>\n{inner}{block}\n{indent}</metadata>\n")));
            }
        },
    }
    edits.sort_by_key(|e| (e.0, e.1));
    let mut xml = text.to_string();
    for (start, end, new) in edits.into_iter().rev() {
        xml.replace_range(start..end, &new);
    }
    Ok(Converted { xml, moved })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "c7a5fdbd-cdaf-9455-926a-d65c16db1809";

    fn domain(metadata: &str, interfaces: &str) -> String {
        format!(
            "<domain type='qemu' id='1'>\n  <name>vm1</name>\n  <uuid>{UUID}</uuid>\n{metadata}  <devices>\n{interfaces}  </devices>\n</domain>\n"
        )
    }

    fn iface(mac: &str, target: Option<&str>, inner: &str) -> String {
        let target = target.map(|t| format!("      <target dev='{t}'/>\n")).unwrap_or_default();
        format!(
            "    <interface type='bridge'>\n      <mac address='{mac}'/>\n      <source bridge='gwtbr0'/>\n{target}{inner}      <model type='virtio'/>\n    </interface>\n"
        )
    }

    fn meta(entries: &str) -> String {
        format!("  <metadata>\n    <gw:filters xmlns:gw='{NAMESPACE}'>\n{entries}    </gw:filters>\n  </metadata>\n")
    }

    fn entry(mac: &str, filter: &str, params: &[(&str, &str)]) -> String {
        let mut s = format!("      <gw:interface mac='{mac}'>\n        <gw:filterref filter='{filter}'>\n");
        for (n, v) in params {
            s.push_str(&format!("          <gw:parameter name='{n}' value='{v}'/>\n"));
        }
        s.push_str("        </gw:filterref>\n      </gw:interface>\n");
        s
    }

    const MAC1: &str = "52:54:00:00:00:01";
    const MAC2: &str = "52:54:00:00:00:02";

    fn mac(s: &str) -> MacAddr {
        MacAddr::parse(s).unwrap()
    }

    #[test]
    fn metadata_references_are_keyed_by_mac() {
        let xml = domain(
            &meta(&(entry(MAC2, "clean-traffic", &[("IP", "192.0.2.10"), ("IP", "192.0.2.11")]))),
            &(iface(MAC1, Some("vnet0"), "") + &iface(MAC2, Some("vnet1"), "")),
        );
        let d = read_domain(&xml, "t.xml").unwrap();
        assert_eq!((d.name.as_str(), d.uuid.as_str()), ("vm1", UUID));
        assert_eq!(d.interfaces.len(), 2);
        assert_eq!(d.interfaces[0].filterref, None);
        let (r, src) = d.interfaces[1].filterref.clone().unwrap();
        assert_eq!(src, RefSource::Metadata);
        assert_eq!(r.filter, "clean-traffic");
        assert_eq!(r.params["IP"], ["192.0.2.10", "192.0.2.11"]);
        let b = d.bindings().unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].portdev.as_str(), b[0].mac), ("vnet1", mac(MAC2)));
        assert_eq!((b[0].owner.name.as_str(), b[0].owner.uuid.as_str()), ("vm1", UUID));
        // What the daemon reads back is what was meant.
        let doc = gw_xml::write_binding(&b[0]);
        assert_eq!(gw_xml::read_binding(&doc).unwrap().value, b[0]);
    }

    #[test]
    fn any_prefix_and_mac_case() {
        let xml = domain(
            &format!(
                "<metadata><x:filters xmlns:x=\"{NAMESPACE}\"><x:interface mac='52:54:00:AB:00:01'>\
                 <x:filterref filter='no-mac-spoofing'/></x:interface></x:filters></metadata>\n"
            ),
            &iface("52:54:00:ab:00:01", Some("vnet3"), ""),
        );
        let d = read_domain(&xml, "t").unwrap();
        assert_eq!(d.bindings().unwrap()[0].filterref.filter, "no-mac-spoofing");
    }

    #[test]
    fn plain_filterref_counts() {
        let inner = "      <filterref filter='clean-traffic'>\n        <parameter name='IP' value='198.51.100.7'/>\n      </filterref>\n";
        let d = read_domain(&domain("", &iface(MAC1, Some("vnet0"), inner)), "t").unwrap();
        let (r, src) = d.interfaces[0].filterref.clone().unwrap();
        assert_eq!(src, RefSource::Interface);
        assert_eq!(r.params["IP"], ["198.51.100.7"]);
    }

    #[test]
    fn no_references_is_nothing_to_do() {
        let d = read_domain(&domain("", &iface(MAC1, Some("vnet0"), "")), "t").unwrap();
        assert!(!d.has_references());
        assert_eq!(d.bindings().unwrap(), vec![]);
        // Other programs' metadata is not ours.
        let other =
            "  <metadata>\n    <app:x xmlns:app='https://example.org/x'><app:filters/></app:x>\n  </metadata>\n";
        assert!(!read_domain(&domain(other, ""), "t").unwrap().has_references());
    }

    #[test]
    fn unmatched_metadata_is_reported_not_bound() {
        let d = read_domain(&domain(&meta(&entry(MAC2, "clean-traffic", &[])), &iface(MAC1, Some("vnet0"), "")), "t")
            .unwrap();
        assert!(!d.has_references());
        assert_eq!(d.unmatched, vec![mac(MAC2)]);
    }

    #[test]
    fn a_reference_without_a_port_cannot_be_filtered() {
        let d = read_domain(&domain(&meta(&entry(MAC1, "clean-traffic", &[])), &iface(MAC1, None, "")), "t").unwrap();
        let e = d.bindings().unwrap_err();
        assert!(e.contains("interface with MAC 52:54:00:00:00:01") && e.contains("no host port"), "{e}");
    }

    #[test]
    fn errors_name_the_place() {
        let both = domain(
            &meta(&entry(MAC1, "clean-traffic", &[])),
            &iface(MAC1, Some("vnet0"), "      <filterref filter='clean-traffic'/>\n"),
        );
        let e = read_domain(&both, "d.xml").unwrap_err();
        assert_eq!((e.source_name.as_str(), e.line), ("d.xml", 6));
        assert!(e.message.contains("both a <filterref> of its own (line 13)"), "{e}");

        let dup = domain(&meta(&(entry(MAC1, "a", &[]) + &entry(MAC1, "b", &[]))), "");
        let e = read_domain(&dup, "d.xml").unwrap_err();
        assert!(e.to_string().starts_with("d.xml:10:7: interface 52:54:00:00:00:01 is named twice"), "{e}");

        let bad_mac = domain(&meta(&entry("52:54:00:00:00", "a", &[])), "");
        assert!(read_domain(&bad_mac, "d").unwrap_err().message.contains("not a MAC address"));
        let multicast = domain(&meta(&entry("01:00:5e:00:00:01", "a", &[])), "");
        assert!(read_domain(&multicast, "d").unwrap_err().message.contains("multicast"));

        let no_param_value = domain(
            &meta("      <gw:interface mac='52:54:00:00:00:01'><gw:filterref filter='a'><gw:parameter name='IP'/></gw:filterref></gw:interface>\n"),
            "",
        );
        let e = read_domain(&no_param_value, "d").unwrap_err();
        assert!(e.message.contains("parameter needs name") && e.line == 6, "{e}");

        let no_filter = domain("", &iface(MAC1, Some("vnet0"), "      <filterref/>\n"));
        assert!(read_domain(&no_filter, "d").unwrap_err().message.contains("filterref needs filter"));

        let e = read_domain("<network/>", "d").unwrap_err();
        assert!(e.message.contains("starts with <domain>"), "{e}");
        let e = read_domain("<domain><name>a</name><uuid>xyz</uuid></domain>", "d").unwrap_err();
        assert!(e.message.contains("malformed <uuid>"), "{e}");
        let e = read_domain("<domain><uuid>c7a5fdbd-cdaf-9455-926a-d65c16db1809</uuid></domain>", "d").unwrap_err();
        assert!(e.message.contains("no <name>"), "{e}");
        let e = read_domain("<domain><name>a</name>", "stdin").unwrap_err();
        assert!(e.to_string().starts_with("stdin:1:") && e.message.contains("malformed XML"), "{e}");
    }

    #[test]
    fn limits_hold_and_cdata_is_read() {
        let e = read_domain(&"<a>".repeat(100), "d").unwrap_err();
        assert!(e.message.contains("nested more than"), "{e}");
        let big = domain(&format!("  <description>{}</description>\n", "x".repeat(MAX_DOMAIN_XML_BYTES)), "");
        let e = read_domain(&big, "d").unwrap_err();
        assert!(e.message.contains("MAX_DOMAIN_XML_BYTES") && (e.line, e.col) == (1, 1), "{e}");
        let e = read_domain("<!DOCTYPE domain [<!ENTITY a 'b'>]><domain/>", "d").unwrap_err();
        assert!(e.message.contains("document type declaration"), "{e}");
        // Another program's CDATA in its metadata does not stop a start.
        let cdata =
            "  <metadata>\n    <app:x xmlns:app='https://example.org/x'><![CDATA[<not xml>]]></app:x>\n  </metadata>\n";
        let d = read_domain(&domain(cdata, &iface(MAC1, Some("vnet0"), "")), "d").unwrap();
        assert_eq!(d.interfaces.len(), 1);
    }

    #[test]
    fn conversion_moves_filterrefs_into_metadata() {
        let inner = "      <filterref filter='clean-traffic'>\n        <parameter name='IP' value='192.0.2.10'/>\n        <parameter name='IP' value='192.0.2.11'/>\n      </filterref>\n";
        let before = domain("", &(iface(MAC1, None, inner) + &iface(MAC2, None, "")));
        let c = convert_domain(&before, "d").unwrap();
        assert_eq!(c.moved, 1);
        assert!(!c.xml.contains("<filterref"), "{}", c.xml);
        assert!(c
            .xml
            .contains("      <mac address='52:54:00:00:00:01'/>\n      <source bridge='gwtbr0'/>\n      <model"));
        assert!(
            c.xml.contains(&format!("  <metadata>\n    <guestwall:filters xmlns:guestwall=\"{NAMESPACE}\">\n")),
            "{}",
            c.xml
        );
        assert!(c.xml.contains("  </devices>\n  <metadata>\n"), "no blank line before it: {}", c.xml);
        assert!(c.xml.ends_with("  </metadata>\n</domain>\n"), "{}", c.xml);
        // What the hook then reads is what the interface said.
        let (before_ref, after) = (read_domain(&before, "d").unwrap(), read_domain(&c.xml, "d").unwrap());
        assert_eq!(
            after.interfaces[0].filterref.as_ref().map(|f| &f.0),
            before_ref.interfaces[0].filterref.as_ref().map(|f| &f.0)
        );
        assert_eq!(after.interfaces[0].filterref.as_ref().map(|f| f.1), Some(RefSource::Metadata));
        assert!(c.xml.find("192.0.2.10") < c.xml.find("192.0.2.11"), "parameters keep their order");
        // Converting again changes nothing.
        let again = convert_domain(&c.xml, "d").unwrap();
        assert_eq!((again.moved, again.xml.as_str()), (0, c.xml.as_str()));
    }

    #[test]
    fn conversion_merges_with_existing_metadata() {
        let other = "    <app:x xmlns:app='https://example.org/x'/>\n";
        let with_other = domain(
            &format!("  <metadata>\n{other}  </metadata>\n"),
            &iface(MAC1, None, "      <filterref filter='a&amp;b'/>\n"),
        );
        let c = convert_domain(&with_other, "d").unwrap();
        assert!(c.xml.contains(other), "{}", c.xml);
        let d = read_domain(&c.xml, "d").unwrap();
        assert_eq!(d.interfaces[0].filterref.as_ref().map(|f| f.0.filter.as_str()), Some("a&b"));

        let ours = domain(&meta(&entry(MAC2, "x", &[])), &iface(MAC1, None, "      <filterref filter='y'/>\n"));
        let d = read_domain(&convert_domain(&ours, "d").unwrap().xml, "d").unwrap();
        assert_eq!(d.unmatched, vec![mac(MAC2)], "the entry already there is kept");
        assert_eq!(d.interfaces[0].filterref.as_ref().map(|f| f.0.filter.as_str()), Some("y"));

        let empty = domain("  <metadata/>\n", &iface(MAC1, None, "      <filterref filter='y'/>\n"));
        let c = convert_domain(&empty, "d").unwrap();
        assert!(read_domain(&c.xml, "d").unwrap().has_references(), "{}", c.xml);
    }

    #[test]
    fn conversion_refuses_what_it_cannot_key() {
        let no_mac = domain(
            "",
            "    <interface type='network'>\n      <source network='default'/>\n      <filterref filter='a'/>\n    </interface>\n",
        );
        let e = convert_domain(&no_mac, "d.xml").unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.message.contains("<interface type='network'> has a <filterref> but no <mac"), "{e}");
        let clash = domain(&meta(&entry(MAC1, "x", &[])), &iface(MAC1, None, "      <filterref filter='y'/>\n"));
        assert!(convert_domain(&clash, "d").unwrap_err().message.contains("already has an entry"));
    }
}
