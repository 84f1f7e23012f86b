//! Resolution: filterref DAGs, variables, iterators and libvirt's ordering.

use gw_model::{Filter, ParamValue};
use gw_resolve::{params_from_pairs, resolve, PairError, Params, ResolveError, Resolved, RootEntry};
use gw_xml::{match_elements, read_filter};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn lib(xmls: &[&str]) -> BTreeMap<String, Filter> {
    xmls.iter()
        .map(|x| {
            let f = read_filter(x).unwrap_or_else(|e| panic!("{e}\n{x}")).value;
            (f.name.clone(), f)
        })
        .collect()
}

fn params(pairs: &[&str]) -> Params {
    params_from_pairs(pairs.iter().copied()).expect("valid pairs")
}

fn run(xmls: &[&str], top: &str, p: &[&str]) -> Result<Resolved, ResolveError> {
    let l = lib(xmls);
    resolve(&l, &l[top], &params(p))
}

/// Each rule as `action dir <element...>`, in listing order.
fn lines(r: &Resolved) -> Vec<String> {
    r.rules()
        .map(|rr| {
            let m = rr.rule.matches.as_ref().map(|m| match_elements(m).join(" ")).unwrap_or_default();
            format!("{} {} {m}", rr.rule.action, rr.rule.direction)
        })
        .collect()
}

#[test]
fn different_iterators_combine_first_varies_fastest() {
    let r = run(
        &["<filter name='t'><rule action='accept' direction='in'><tcp srcipaddr='$A[@1]' dstportstart='$P[@2]'/></rule></filter>"],
        "t",
        &["A=192.0.2.1", "A=192.0.2.2", "P=80", "P=8080"],
    )
    .expect("resolves");
    assert_eq!(
        lines(&r),
        [
            "accept in <tcp srcipaddr='192.0.2.1' dstportstart='80'/>",
            "accept in <tcp srcipaddr='192.0.2.2' dstportstart='80'/>",
            "accept in <tcp srcipaddr='192.0.2.1' dstportstart='8080'/>",
            "accept in <tcp srcipaddr='192.0.2.2' dstportstart='8080'/>",
        ]
    );
}

#[test]
fn same_iterator_walks_in_lockstep_and_skips_repeats() {
    let r = run(
        &["<filter name='t'><rule action='accept' direction='in'><tcp srcipaddr='$A' dstportstart='$P'/></rule></filter>"],
        "t",
        &["A=192.0.2.1", "A=192.0.2.2", "A=192.0.2.1", "P=80", "P=81", "P=80"],
    )
    .expect("resolves");
    assert_eq!(
        lines(&r),
        [
            "accept in <tcp srcipaddr='192.0.2.1' dstportstart='80'/>",
            "accept in <tcp srcipaddr='192.0.2.2' dstportstart='81'/>"
        ]
    );
}

#[test]
fn element_access_picks_one_value() {
    let r = run(
        &["<filter name='t'><rule action='accept' direction='in'><udp dstportstart='$P[1]'/></rule></filter>"],
        "t",
        &["P=53", "P=67"],
    )
    .expect("resolves");
    assert_eq!(lines(&r), ["accept in <udp dstportstart='67'/>"]);
}

#[test]
fn element_out_of_range_is_reported() {
    let e = run(
        &["<filter name='t'><rule action='accept' direction='in'><udp dstportstart='$P[2]' srcipaddr='$X'/></rule></filter>"],
        "t",
        &["P=53", "P=67"],
    )
    .unwrap_err();
    assert_eq!(e, ResolveError::MissingVariables { filter: "t".into(), missing: vec!["P[2]".into(), "X".into()] });
    assert!(e.to_string().contains("unresolvable variables or unavailable list elements: P[2], X"), "{e}");
}

#[test]
fn mismatched_list_lengths_are_an_error() {
    let e = run(
        &["<filter name='t'><rule action='accept' direction='in'><tcp srcipaddr='$A' dstportstart='$P'/></rule></filter>"],
        "t",
        &["A=192.0.2.1", "A=192.0.2.2", "P=80"],
    )
    .unwrap_err();
    assert!(
        matches!(e, ResolveError::ListLengthMismatch { iterator: 0, ref lengths, .. } if lengths == &[2, 1]),
        "{e:?}"
    );
    assert!(e.to_string().contains("share iterator 0"), "{e}");
}

#[test]
fn values_must_fit_the_attribute() {
    let e = run(
        &["<filter name='t'><rule action='drop' direction='out'><ip srcipaddr='$ADDR'/></rule></filter>"],
        "t",
        &["ADDR=300.1.1.1"],
    )
    .unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("<ip srcipaddr='$ADDR'>") && s.contains("'300.1.1.1'") && s.contains("not an IPv4 address"),
        "{s}"
    );
}

#[test]
fn cycles_and_unknown_filters_are_errors() {
    let a = "<filter name='a'><filterref filter='b'/></filter>";
    let b = "<filter name='b'><filterref filter='c'/></filter>";
    let c = "<filter name='c'><filterref filter='a'/></filter>";
    let e = run(&[a, b, c], "a", &[]).unwrap_err();
    assert_eq!(e, ResolveError::Cycle { path: vec!["a".into(), "b".into(), "c".into(), "a".into()] });
    assert_eq!(e.to_string(), "filterref cycle: a -> b -> c -> a");
    let e = run(&[a, b], "a", &[]).unwrap_err();
    assert_eq!(e.to_string(), "filter 'b' references unknown filter 'c'");
    // A diamond is not a cycle.
    let d = "<filter name='d'><filterref filter='e'/><filterref filter='e'/></filter>";
    let ee = "<filter name='e'><rule action='drop' direction='in'/></filter>";
    assert_eq!(run(&[d, ee], "d", &[]).expect("diamond resolves").rules().count(), 2);
}

#[test]
fn filterref_parameters_are_defaults_the_caller_overrides() {
    let top = "<filter name='top'><filterref filter='sub'><parameter name='IP' value='192.0.2.99'/><parameter name='P' value='22'/></filterref></filter>";
    let sub = "<filter name='sub'><rule action='accept' direction='in'><tcp srcipaddr='$IP' dstportstart='$P'/></rule></filter>";
    let r = run(&[top, sub], "top", &["IP=192.0.2.1"]).expect("resolves");
    assert_eq!(lines(&r), ["accept in <tcp srcipaddr='192.0.2.1' dstportstart='22'/>"]);
}

#[test]
fn root_rules_first_then_priority_then_document_order() {
    let top = "<filter name='top'>
        <rule action='accept' direction='in' priority='300'><tcp dstportstart='3'/></rule>
        <filterref filter='sub'/>
        <rule action='accept' direction='in' priority='100'><tcp dstportstart='1'/></rule>
        <rule action='drop' direction='in' priority='300'><tcp dstportstart='4'/></rule>
    </filter>";
    // a filter in another chain: its tcp rules come after every root rule
    let sub = "<filter name='sub' chain='ipv4'><rule action='accept' direction='in' priority='-900'><tcp dstportstart='9'/></rule></filter>";
    let r = run(&[top, sub], "top", &[]).expect("resolves");
    assert_eq!(
        lines(&r),
        [
            "accept in <tcp dstportstart='1'/>",
            "accept in <tcp dstportstart='3'/>",
            "drop in <tcp dstportstart='4'/>",
            "accept in <tcp dstportstart='9'/>",
        ]
    );
}

#[test]
fn jumps_interleave_with_root_rules_by_chain_priority() {
    let top = "<filter name='top'>
        <rule action='accept' direction='out' priority='-500'><mac protocolid='arp'/></rule>
        <filterref filter='arpf'/>
        <filterref filter='ipf'/>
        <rule action='drop' direction='inout' priority='1000'/>
    </filter>";
    let arpf = "<filter name='arpf' chain='arp'><rule action='drop' direction='out'><arp/></rule></filter>";
    let ipf =
        "<filter name='ipf' chain='ipv4' priority='-700'><rule action='drop' direction='in'><ip/></rule></filter>";
    let r = run(&[top, arpf, ipf], "top", &[]).expect("resolves");
    let root: Vec<String> = r
        .root
        .iter()
        .map(|e| match e {
            RootEntry::Rule(rr) => format!("rule {}", rr.rule.priority),
            RootEntry::Jump(j) => format!("jump {} {} out={} in={}", j.chain, j.priority, j.out, j.r#in),
        })
        .collect();
    // -700 before -500; the arp jump at -500 ties with the root rule and goes first.
    assert_eq!(root, ["jump ipv4 -700 out=false in=true", "jump arp -500 out=true in=false", "rule -500", "rule 1000"]);
    assert_eq!(r.chains.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["ipv4", "arp"]);
}

#[test]
fn parameter_values_are_checked() {
    let e = params_from_pairs(["IP=192.0.2.4/24"]).unwrap_err();
    assert!(matches!(e, PairError::BadValue(_)), "{e:?}");
    assert!(e.to_string().contains("parameter IP: value '192.0.2.4/24' is not an IPv4 address"), "{e}");
    let e = params_from_pairs(["IP=300.1.1.1"]).unwrap_err();
    assert!(e.to_string().contains("parameter IP: value '300.1.1.1' is not an IPv4 address"), "{e}");
    // A reserved variable's value must be of its kind even if no rule uses
    // it, however the parameters were made.
    let l = lib(&["<filter name='t'/>"]);
    let p: Params = [("IP".to_string(), vec![ParamValue::new("300.1.1.1").expect("a value")])].into_iter().collect();
    let e = resolve(&l, &l["t"], &p).unwrap_err();
    assert!(matches!(e, ResolveError::BadParameter(_)), "{e:?}");
    assert!(e.to_string().contains("parameter IP: value '300.1.1.1' is not an IPv4 address"), "{e}");
    assert_eq!(params_from_pairs(["noequals"]).unwrap_err(), PairError::NotAPair { pair: "noequals".into() });
    assert_eq!(params_from_pairs(["BAD-NAME=1"]).unwrap_err(), PairError::BadName { name: "BAD-NAME".into() });
    let e = params_from_pairs(["P=80 443"]).unwrap_err();
    assert!(e.to_string().contains("parameter P: value '80 443' may only have letters, digits and _.:"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Generated libraries (with references that may be missing or loop) and
    /// parameters never make resolve panic, and it is deterministic.
    #[test]
    fn resolve_never_panics(
        f1 in gw_model::arb::filter_named("f1".into(), vec!["f1", "f2", "f3", "missing"]),
        f2 in gw_model::arb::filter_named("f2".into(), vec!["f2", "f3"]),
        f3 in gw_model::arb::filter_named("f3".into(), vec!["f1", "f3"]),
        p in gw_model::arb::params(),
    ) {
        let l: BTreeMap<String, Filter> = [f1, f2, f3].into_iter().map(|f| (f.name.clone(), f)).collect();
        let a = resolve(&l, &l["f1"], &p);
        let b = resolve(&l, &l["f1"], &p);
        prop_assert_eq!(a, b);
    }
}
