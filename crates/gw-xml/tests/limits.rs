//! Limits on what the reader accepts: each at the limit (read) and past it
//! (refused with an error that names the limit), control characters in
//! names, and inputs that used to abort (stack overflow) or take quadratic
//! time. These run on the test harness's threads (2 MiB stacks), so a
//! regression to recursion crashes the test.

use gw_model::MAX_PARAM_VALUES;
use gw_xml::{
    read_binding, read_filter, ReadError, MAX_DOCUMENT_BYTES, MAX_XML_ATTRIBUTES, MAX_XML_DEPTH, MAX_XML_NODES,
};
use std::time::{Duration, Instant};

fn only_error(e: &ReadError) -> String {
    assert_eq!(e.errors.len(), 1, "{e}");
    e.to_string()
}

fn binding(filterref_inner: &str) -> String {
    format!(
        "<filterbinding><owner><name>vm</name><uuid>5c6d49af-b071-6127-b4ec-6f8ed4b55335</uuid></owner>\
         <portdev name='vnet0'/><mac address='52:54:00:00:00:01'/>\
         <filterref filter='clean-traffic'>{filterref_inner}</filterref></filterbinding>"
    )
}

const RULE: &str = "<rule action='accept' direction='in'>";

/// A filter whose elements nest `depth` deep (the filter element is 1), each
/// opened with `open`.
fn nested_filter(depth: usize, open: &str) -> String {
    let inner = depth - 1;
    format!("<filter name='x'>{}{}</filter>", open.repeat(inner), "</rule>".repeat(inner))
}

// ---- control characters in names ----

#[test]
fn filter_name_with_newline_is_refused() {
    let e =
        read_filter("<filter name='x&#10;delete table inet fw&#10;#'><rule action='accept' direction='in'/></filter>")
            .unwrap_err();
    let s = only_error(&e);
    assert!(s.starts_with("1:9: filter/name: filter name 'x\\ndelete table inet fw\\n#'"), "{s}");
    assert!(s.contains("U+000A") && !s.contains('\n'), "{s}");
}

#[test]
fn filter_names_with_any_control_or_format_character_are_refused() {
    // (Other characters below 0x20 are not XML at all: the parser refuses
    // them.)
    for c in ["&#9;", "&#13;", "&#x7f;", "&#x85;", "&#x200b;", "&#x202e;", "&#x2028;", "&#xfeff;"] {
        let e = read_filter(&format!("<filter name='a{c}b'/>")).unwrap_err();
        assert!(only_error(&e).contains("filter/name: filter name"), "{c}: {e}");
    }
    // What names may have stays as it was.
    for ok in ["clean-traffic", "a b", "é-中", "x.y:z_1"] {
        assert!(read_filter(&format!("<filter name='{ok}'/>")).is_ok(), "{ok}");
    }
}

#[test]
fn chain_names_with_control_characters_are_refused() {
    let e = read_filter("<filter name='x' chain='arp&#10;x'/>").unwrap_err();
    let s = only_error(&e);
    assert!(s.contains("filter/chain: chain name 'arp\\nx' has the character '\\n'") && !s.contains('\n'), "{s}");
}

#[test]
fn filterref_names_with_control_characters_are_refused() {
    let e = read_filter("<filter name='x'>\n  <filterref filter='y&#10;flush ruleset'/>\n</filter>").unwrap_err();
    let s = only_error(&e);
    assert!(s.starts_with("2:14: filterref/filter: filter name 'y\\nflush ruleset'"), "{s}");
    let doc = binding("").replace("filter='clean-traffic'", "filter='clean-traffic&#x202e;'");
    let e = read_binding(&doc).unwrap_err();
    assert!(only_error(&e).contains("filterref/filter: filter name 'clean-traffic\\u{202e}'"), "{e}");
}

#[test]
fn parameter_names_with_control_characters_are_refused() {
    // In a filter, libvirt skips a parameter with a bad name (a quirk); one
    // with a control character is an error.
    let e = read_filter(
        "<filter name='x'><filterref filter='y'><parameter name='A&#10;B' value='1'/></filterref></filter>",
    )
    .unwrap_err();
    assert!(only_error(&e).contains("parameter/name: parameter name 'A\\nB'"), "{e}");
    let e =
        read_filter("<filter name='x'><filterref filter='y'><parameter name='A' value='1&#10;'/></filterref></filter>")
            .unwrap_err();
    assert!(only_error(&e).contains("parameter/value: parameter value '1\\n'"), "{e}");
    let p =
        read_filter("<filter name='x'><filterref filter='y'><parameter name='A-B' value='1'/></filterref></filter>")
            .expect("a bad name without control characters stays a quirk");
    assert_eq!(p.quirks.len(), 1);
    let e = read_binding(&binding("<parameter name='A&#9;' value='1'/>")).unwrap_err();
    assert!(only_error(&e).contains("parameter/name"), "{e}");
}

#[test]
fn owner_names_with_control_characters_are_refused() {
    let doc = binding("").replace("<name>vm</name>", "<name>vm&#10;x</name>");
    let e = read_binding(&doc).unwrap_err();
    assert!(only_error(&e).contains("name: owner name 'vm\\nx'"), "{e}");
}

// ---- bindings: malformed parameters are refused, not skipped ----

#[test]
fn binding_with_malformed_ip_is_refused() {
    for bad in ["192.0.2.1/32", "192.0.2.1 } ; flush ruleset ; {", "192.0.2.300", "fe80::1"] {
        let doc = binding(&format!("<parameter name='IP' value='192.0.2.2'/>\n<parameter name='IP' value='{bad}'/>"));
        let e = read_binding(&doc).unwrap_err();
        let s = only_error(&e);
        assert!(s.starts_with("2:22: parameter/value: parameter IP: value '"), "{s}");
        assert!(s.contains(&format!("'{bad}' is not an IPv4 address")), "{s}");
    }
    let e = read_binding(&binding("<parameter name='IPV6' value='2001:db8::1/64'/>")).unwrap_err();
    assert!(only_error(&e).contains("parameter IPV6: value '2001:db8::1/64' is not an IPv6 address"), "{e}");
    let e = read_binding(&binding("<parameter name='PORT' value='80 443'/>")).unwrap_err();
    assert!(only_error(&e).contains("parameter PORT: value '80 443' may only have letters, digits and _.:"), "{e}");
    let e = read_binding(&binding("<parameter name='PORT'/>")).unwrap_err();
    assert!(only_error(&e).contains("parameter: a parameter needs value="), "{e}");
    let ok = read_binding(&binding(
        "<parameter name='IP' value='192.0.2.1'/><parameter name='IPV6' value='2001:db8::1'/><parameter name='CTRL_IP_LEARNING' value='none'/>",
    ))
    .expect("good parameters");
    assert!(ok.quirks.is_empty());
    assert_eq!(ok.value.filterref.params["IP"], ["192.0.2.1"]);
    assert!(ok.value.check().is_ok(), "what the reader accepts, Binding::check accepts");
}

#[test]
fn parameter_lists_at_and_past_the_limit() {
    let values = |n: usize| (0..n).map(|i| format!("<parameter name='P' value='{i}'/>")).collect::<String>();
    let p = read_binding(&binding(&values(MAX_PARAM_VALUES))).expect("at the limit");
    assert_eq!(p.value.filterref.params["P"].len(), MAX_PARAM_VALUES);
    let e = read_binding(&binding(&values(MAX_PARAM_VALUES + 1))).unwrap_err();
    let s = only_error(&e);
    assert!(s.contains("parameter P has more than 1024 values") && s.contains("MAX_PARAM_VALUES"), "{s}");
    // The same in a filter's filterref.
    let f = |n| format!("<filter name='x'><filterref filter='y'>{}</filterref></filter>", values(n));
    assert!(read_filter(&f(MAX_PARAM_VALUES)).is_ok());
    assert!(only_error(&read_filter(&f(MAX_PARAM_VALUES + 1)).unwrap_err()).contains("MAX_PARAM_VALUES"));
}

// ---- nesting depth ----

#[test]
fn nesting_at_the_depth_limit_is_read() {
    let p = read_filter(&nested_filter(MAX_XML_DEPTH, RULE)).expect("at the limit");
    assert_eq!(p.value.entries.len(), 1);
    assert!(p.quirks[0].message.contains("unknown element <rule>"), "{:?}", p.quirks);
}

#[test]
fn nesting_past_the_depth_limit_is_refused() {
    let e = read_filter(&nested_filter(MAX_XML_DEPTH + 1, RULE)).unwrap_err();
    let s = only_error(&e);
    let col = 18 + RULE.len() * (MAX_XML_DEPTH - 1);
    assert!(s.starts_with(&format!("1:{col}: rule: elements are nested more than 64 deep (MAX_XML_DEPTH)")), "{s}");
}

#[test]
fn rules_nested_5000_deep_are_refused_without_overflow() {
    let doc = nested_filter(5000, "<rule>");
    assert!(doc.len() > 64_000 && doc.len() < 70_000, "{}", doc.len());
    let e = read_filter(&doc).unwrap_err();
    assert!(only_error(&e).contains("MAX_XML_DEPTH"), "{e}");
    // With attributes and protocol elements too.
    let doc = nested_filter(5000, "<rule action='accept' direction='in'><tcp/>");
    assert!(only_error(&read_filter(&doc).unwrap_err()).contains("MAX_XML_DEPTH"));
}

#[test]
fn binding_parameters_nested_5000_deep_are_refused_without_overflow() {
    let inner = format!("{}{}", "<parameter name='A' value='1'>".repeat(5000), "</parameter>".repeat(5000));
    let e = read_binding(&binding(&inner)).unwrap_err();
    let s = only_error(&e);
    assert!(s.contains("parameter: elements are nested more than 64 deep"), "{s}");
}

#[test]
fn depth_scan_is_not_fooled_by_quotes_comments_or_empty_elements() {
    // '>' and '/' in values, '<' in comments and PIs, empty elements: none
    // of these nests.
    let mut doc = String::from("<?xml version='1.0'?><filter name='x'><!-- <a><b><c> -->");
    for _ in 0..(2 * MAX_XML_DEPTH) {
        doc.push_str("<rule action='accept' direction='in'><tcp comment='/>x>' srcportstart='1'/></rule><?pi <x>?>");
    }
    doc.push_str("</filter>");
    let p = read_filter(&doc).expect("flat document");
    assert_eq!(p.value.entries.len(), 2 * MAX_XML_DEPTH);
}

// ---- document size, nodes, attributes ----

fn padded_filter(len: usize) -> String {
    let head = "<filter name='x'><!--";
    let tail = "--></filter>";
    format!("{head}{}{tail}", "a".repeat(len - head.len() - tail.len()))
}

#[test]
fn document_size_at_and_past_the_limit() {
    let at = padded_filter(MAX_DOCUMENT_BYTES);
    assert_eq!(at.len(), 1 << 20);
    assert!(read_filter(&at).is_ok());
    let e = read_filter(&padded_filter(MAX_DOCUMENT_BYTES + 1)).unwrap_err();
    let s = only_error(&e);
    assert!(s.starts_with("1:1: xml: the document is 1048577 bytes; at most 1048576 bytes"), "{s}");
    assert!(s.contains("MAX_DOCUMENT_BYTES"), "{s}");
    let big = binding(&format!("<!--{}-->", "a".repeat(MAX_DOCUMENT_BYTES)));
    assert!(only_error(&read_binding(&big).unwrap_err()).contains("MAX_DOCUMENT_BYTES"));
}

#[test]
fn nodes_at_and_past_the_limit() {
    // The parser counts its document node, the <filter> element and here
    // one comment node each.
    let with_comments = |n: usize| format!("<filter name='x'>{}</filter>", "<!---->".repeat(n));
    let at = MAX_XML_NODES as usize - 2;
    assert!(read_filter(&with_comments(at)).is_ok());
    let e = read_filter(&with_comments(at + 1)).unwrap_err();
    let s = only_error(&e);
    assert!(s.contains("more than 100000 XML nodes") && s.contains("MAX_XML_NODES"), "{s}");
}

#[test]
fn attributes_at_and_past_the_limit() {
    let tcp = |n: usize| {
        let attrs: String = (0..n).map(|i| format!(" x{i}=''")).collect();
        format!("<filter name='x'><rule action='accept' direction='in'><tcp{attrs}/></rule></filter>")
    };
    let p = read_filter(&tcp(MAX_XML_ATTRIBUTES)).expect("at the limit");
    assert_eq!(p.quirks.len(), MAX_XML_ATTRIBUTES, "each unknown attribute is a quirk");
    let e = read_filter(&tcp(MAX_XML_ATTRIBUTES + 1)).unwrap_err();
    let s = only_error(&e);
    assert!(
        s.starts_with("1:55: tcp: <tcp> has 65 attributes; an element may have at most 64 (MAX_XML_ATTRIBUTES)"),
        "{s}"
    );
    // 20,000 attributes on one element used to take 30 s (pairwise checks).
    let t = Instant::now();
    assert!(read_filter(&tcp(20_000)).is_err());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

// ---- DTDs, entities, CDATA, references ----

#[test]
fn dtds_are_refused() {
    let e = read_filter("<!DOCTYPE filter [<!ENTITY e 'x'>]>\n<filter name='&e;'/>").unwrap_err();
    let s = only_error(&e);
    assert!(s.starts_with("1:1: xml: a document type declaration (<!DOCTYPE ...>) is not accepted"), "{s}");
    // The entity bomb: one 100 KB entity referenced 10,000 times (130 KB
    // of text, gigabytes expanded) is refused at once.
    let doc = format!(
        "<!DOCTYPE filter [<!ENTITY e '{}'>]><filter name='x'><uuid>{}</uuid></filter>",
        "a".repeat(100_000),
        "&e;".repeat(10_000)
    );
    assert!(doc.len() > 130_000);
    let t = Instant::now();
    assert!(only_error(&read_filter(&doc).unwrap_err()).contains("<!DOCTYPE"));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let e = read_binding(&format!("<!DOCTYPE filterbinding>{}", binding(""))).unwrap_err();
    assert!(only_error(&e).contains("<!DOCTYPE"));
}

#[test]
fn cdata_is_refused() {
    let e = read_filter("<filter name='x'><uuid><![CDATA[5c6d49af-b071-6127-b4ec-6f8ed4b55335]]></uuid></filter>")
        .unwrap_err();
    assert!(only_error(&e).starts_with("1:24: xml: CDATA sections are not accepted"), "{e}");
}

#[test]
fn character_references_in_text_read_in_linear_time() {
    // Text made of many references (and predefined entities) is one piece
    // for the parser: reading it grows with its length only. 100,000
    // references in <uuid> and as many in the filter's text (~0.9 MB) take
    // about 0.1 s in a debug build.
    let doc =
        |n: usize| format!("<filter name='x'>{}<uuid>{}</uuid></filter>", "&#65;&lt;".repeat(n / 2), "&#65;".repeat(n));
    let time = |n: usize| {
        let t = Instant::now();
        let r = read_filter(&doc(n));
        assert!(only_error(&r.unwrap_err()).contains("malformed uuid"));
        t.elapsed()
    };
    let small = time(2_000);
    let large = time(100_000);
    eprintln!("2,000 references: {small:?}; 100,000: {large:?}");
    assert!(large < Duration::from_secs(3), "{large:?}");
}

#[test]
fn many_quirks_are_placed_in_linear_time() {
    // 20,000 misspelt attributes, each a quirk with its line and column:
    // computing each place from the start of the text took 134 s.
    let n = 20_000;
    let doc = format!("<filter name='x'>{}\n</filter>", "\n<rule action='accept' direction='in' x='1'/>".repeat(n));
    assert!(doc.len() < MAX_DOCUMENT_BYTES);
    let t = Instant::now();
    let p = read_filter(&doc).expect("quirks only");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(p.quirks.len(), n);
    assert_eq!((p.quirks[0].line, p.quirks[0].col), (2, 38));
    assert_eq!((p.quirks[n - 1].line, p.quirks[n - 1].col), (n as u32 + 1, 38));
}
