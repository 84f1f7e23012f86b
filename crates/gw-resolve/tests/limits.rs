//! Resolution limits, each at the limit (resolved) and past it (refused with
//! an error naming the limit), and inputs that used to abort: deep filterref
//! chains (stack overflow in the recursive walks) and huge list expansions
//! (the daemon grew to 3 GB). These run on the test harness's threads
//! (2 MiB stacks), so a regression to recursion crashes the test.

use gw_model::{Action, Direction, Entry, Filter, FilterRef, ParamError, ParamValue, Rule, MAX_PARAM_VALUES};
use gw_resolve::{
    check_references, params_from_pairs, prepare, reaches, resolve, resolve_with, template, Params, ResolveError,
    ResolveOptions, TooManyRules, MAX_DAG_ENTRIES, MAX_FILTERREF_DEPTH, MAX_RULES_PER_BINDING,
};
use gw_xml::read_filter;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

type Lib = BTreeMap<String, Filter>;

fn rule() -> Entry {
    Entry::Rule(Rule::new(Action::Accept, Direction::In))
}

fn fref(name: &str) -> Entry {
    Entry::FilterRef(FilterRef { filter: name.into(), params: Params::new() })
}

fn filter(name: &str, entries: Vec<Entry>) -> Filter {
    let mut f = Filter::new(name);
    f.entries = entries;
    f
}

/// c0 -> c1 -> ... -> c{n-1}, each with one rule: `n - 1` filterrefs deep.
fn chain(n: usize) -> Lib {
    (0..n)
        .map(|i| {
            let mut entries = vec![rule()];
            if i + 1 < n {
                entries.push(fref(&format!("c{}", i + 1)));
            }
            (format!("c{i}"), filter(&format!("c{i}"), entries))
        })
        .collect()
}

fn xml_lib(xmls: &[&str]) -> Lib {
    xmls.iter()
        .map(|x| {
            let f = read_filter(x).unwrap_or_else(|e| panic!("{e}\n{x}")).value;
            (f.name.clone(), f)
        })
        .collect()
}

/// Texts as parameter values.
fn values(texts: impl IntoIterator<Item = String>) -> Vec<ParamValue> {
    texts.into_iter().map(|t| ParamValue::new(t).unwrap_or_else(|e| panic!("{e}"))).collect()
}

/// Sets parameter `name` to `texts`.
fn list(p: &mut Params, name: &str, texts: impl IntoIterator<Item = String>) {
    p.insert(name.into(), values(texts));
}

fn ports(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| (i + 1).to_string())
}

// ---- filterref depth ----

#[test]
fn filterref_chain_at_the_depth_limit_resolves() {
    let lib = chain(MAX_FILTERREF_DEPTH + 1);
    let top = &lib["c0"];
    let r = resolve(&lib, top, &Params::new()).expect("at the limit");
    assert_eq!(r.rules().count(), MAX_FILTERREF_DEPTH + 1);
    assert_eq!(check_references(&lib, top), Ok(()));
    assert!(template(&lib, top).is_ok());
}

#[test]
fn filterref_chain_past_the_depth_limit_is_refused() {
    let lib = chain(MAX_FILTERREF_DEPTH + 2);
    let top = &lib["c0"];
    for e in [resolve(&lib, top, &Params::new()).unwrap_err(), check_references(&lib, top).unwrap_err()] {
        let ResolveError::TooDeep { path, limit } = &e else { panic!("{e:?}") };
        assert_eq!(*limit, 64);
        assert_eq!(path.len(), MAX_FILTERREF_DEPTH + 2);
        assert_eq!(path.last().map(String::as_str), Some("c65"));
        assert_eq!(
            e.to_string(),
            "filterrefs nest more than 64 deep (MAX_FILTERREF_DEPTH): c0 -> c1 -> c2 -> ... (61 more) -> c64 -> c65"
        );
    }
}

#[test]
fn filterref_chain_7000_deep_is_refused_without_overflow() {
    let lib = chain(7000);
    let top = &lib["c0"];
    assert!(matches!(resolve(&lib, top, &Params::new()), Err(ResolveError::TooDeep { .. })));
    assert!(matches!(template(&lib, top), Err(ResolveError::TooDeep { .. })));
    assert!(matches!(prepare(&lib, top).map(|_| ()), Err(ResolveError::TooDeep { .. })));
    assert!(matches!(check_references(&lib, top), Err(ResolveError::TooDeep { .. })));
    // From the bottom, the same library is fine.
    assert!(resolve(&lib, &lib["c6990"], &Params::new()).is_ok());
}

#[test]
fn check_references_on_a_10000_filter_chain_is_refused_without_overflow() {
    let lib = chain(10_000);
    let t = Instant::now();
    let e = check_references(&lib, &lib["c0"]).unwrap_err();
    assert!(matches!(e, ResolveError::TooDeep { .. }), "{e:?}");
    // Checking each filter of the library in turn stays fast too.
    let deep = lib.values().filter(|f| check_references(&lib, f).is_err()).count();
    assert_eq!(deep, 10_000 - (MAX_FILTERREF_DEPTH + 1));
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn depth_counts_the_deepest_path_through_shared_filters() {
    // `x` heads a chain 62 deep; `top` reaches it at depth 1 (fine: 63) and
    // again at depth 3 through y and z (65): refused, although x was already
    // checked through the shallow path. Through z alone it is 64: fine.
    let mut lib = chain(63);
    let x = lib.remove("c0").expect("c0");
    lib.insert("x".into(), filter("x", x.entries));
    lib.insert("top".into(), filter("top", vec![fref("x"), fref("y")]));
    lib.insert("y".into(), filter("y", vec![fref("z")]));
    lib.insert("z".into(), filter("z", vec![fref("x")]));
    let e = check_references(&lib, &lib["top"]).unwrap_err();
    let ResolveError::TooDeep { path, .. } = &e else { panic!("{e:?}") };
    assert_eq!(&path[..4], ["top", "y", "z", "x"]);
    assert_eq!(path.len(), MAX_FILTERREF_DEPTH + 2);
    assert!(matches!(resolve(&lib, &lib["top"], &Params::new()), Err(ResolveError::TooDeep { .. })));
    lib.insert("top".into(), filter("top", vec![fref("x"), fref("z")]));
    assert_eq!(check_references(&lib, &lib["top"]), Ok(()));
    assert!(resolve(&lib, &lib["top"], &Params::new()).is_ok());
}

#[test]
fn cycles_are_still_found() {
    let lib: Lib = [
        ("a".to_string(), filter("a", vec![fref("b")])),
        ("b".to_string(), filter("b", vec![rule(), fref("c")])),
        ("c".to_string(), filter("c", vec![fref("a")])),
    ]
    .into_iter()
    .collect();
    let want = ResolveError::Cycle { path: vec!["a".into(), "b".into(), "c".into(), "a".into()] };
    assert_eq!(check_references(&lib, &lib["a"]), Err(want.clone()));
    assert_eq!(resolve(&lib, &lib["a"], &Params::new()), Err(want));
}

// ---- DAG expansion ----

#[test]
fn dag_entries_at_and_past_the_limit() {
    let at: Lib = [("f".to_string(), filter("f", vec![rule(); MAX_DAG_ENTRIES]))].into_iter().collect();
    assert_eq!(check_references(&at, &at["f"]), Ok(()));
    let r = resolve(&at, &at["f"], &Params::new()).expect("at the limit");
    assert_eq!(r.rules().count(), MAX_DAG_ENTRIES);
    // One more entry, here a filterref to an empty filter.
    let mut entries = vec![rule(); MAX_DAG_ENTRIES];
    entries.push(fref("empty"));
    let past: Lib =
        [("f".to_string(), filter("f", entries)), ("empty".to_string(), filter("empty", vec![]))].into_iter().collect();
    let want = ResolveError::DagTooLarge { filter: "f".into(), limit: MAX_DAG_ENTRIES };
    assert_eq!(check_references(&past, &past["f"]), Err(want.clone()));
    assert_eq!(resolve(&past, &past["f"], &Params::new()), Err(want.clone()));
    assert!(
        want.to_string().contains("more than 16384 rules and filterrefs")
            && want.to_string().contains("MAX_DAG_ENTRIES")
    );
}

#[test]
fn exponential_dag_is_refused_quickly() {
    // d0 references d1 twice, d1 references d2 twice, ... 40 levels: 2^40
    // entries from 41 small filters.
    let lib: Lib = (0..=40)
        .map(|i| {
            let entries = if i == 40 { vec![rule()] } else { vec![fref(&format!("d{}", i + 1)); 2] };
            (format!("d{i}"), filter(&format!("d{i}"), entries))
        })
        .collect();
    let t = Instant::now();
    assert!(matches!(check_references(&lib, &lib["d0"]), Err(ResolveError::DagTooLarge { .. })));
    assert!(matches!(resolve(&lib, &lib["d0"], &Params::new()), Err(ResolveError::DagTooLarge { .. })));
    assert!(matches!(template(&lib, &lib["d0"]), Err(ResolveError::DagTooLarge { .. })));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // 11 levels (2,048 rules, 4,094 filterrefs) are fine.
    assert_eq!(check_references(&lib, &lib["d29"]), Ok(()));
    assert_eq!(resolve(&lib, &lib["d29"], &Params::new()).expect("resolves").rules().count(), 1 << 11);
}

#[test]
fn many_rules_under_large_filterref_parameters_stay_fast() {
    // 30 lists of 1,000 values on one filterref, 16,000 rules below it:
    // each rule's key used to format and hash all of them (5.5 s for 2,000).
    let params: Params = (0..30).map(|n| (format!("V{n}"), values((0..1000).map(|i| format!("value{i}"))))).collect();
    let lib: Lib = [
        ("a".to_string(), filter("a", vec![Entry::FilterRef(FilterRef { filter: "b".into(), params })])),
        ("b".to_string(), filter("b", vec![rule(); 16_000])),
    ]
    .into_iter()
    .collect();
    let t = Instant::now();
    assert_eq!(template(&lib, &lib["a"]).expect("template").rules().count(), 16_000);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

// ---- rules per binding ----

const TWO_LISTS: &str = "<filter name='t'><rule action='accept' direction='in'><tcp srcipaddr='$A[@1]' dstportstart='$P[@2]'/></rule></filter>";

fn addrs(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!("10.0.{}.{}", i / 256, i % 256))
}

#[test]
fn rules_per_binding_at_the_limit() {
    let lib = xml_lib(&[TWO_LISTS]);
    let mut p = Params::new();
    list(&mut p, "A", addrs(128));
    list(&mut p, "P", ports(128));
    let r = resolve(&lib, &lib["t"], &p).expect("at the limit");
    assert_eq!(r.rules().count(), MAX_RULES_PER_BINDING);
}

#[test]
fn rules_per_binding_past_the_limit_are_refused() {
    let lib = xml_lib(&[TWO_LISTS]);
    let mut p = Params::new();
    list(&mut p, "A", addrs(128));
    list(&mut p, "P", ports(129));
    let e = resolve(&lib, &lib["t"], &p).unwrap_err();
    let ResolveError::TooManyRules(t) = &e else { panic!("{e:?}") };
    assert_eq!(
        **t,
        TooManyRules {
            filter: "t".into(),
            rule_filter: "t".into(),
            rule: 1,
            rule_count: 128 * 129,
            total: 128 * 129,
            lists: vec![(vec!["A[@1]".into()], 128), (vec!["P[@2]".into()], 129)],
            limit: MAX_RULES_PER_BINDING,
        }
    );
    assert_eq!(
        e.to_string(),
        "binding of filter 't' would expand to 16512 rules or more, and at most 16384 are allowed (MAX_RULES_PER_BINDING): filter 't' rule 1 alone expands to 16512 ($A[@1]: 128 values x $P[@2]: 129 values)"
    );
}

#[test]
fn three_lists_of_1000_are_refused_before_expanding() {
    let lib = xml_lib(&["<filter name='t'>\
        <rule action='accept' direction='in'><udp dstportstart='53'/></rule>\
        <rule action='accept' direction='in'><tcp srcipaddr='$A[@1]' dstipaddr='$B[@2]' dstportstart='$P[@3]'/></rule>\
        </filter>"]);
    let mut p = Params::new();
    list(&mut p, "A", addrs(1000));
    list(&mut p, "B", addrs(1000));
    list(&mut p, "P", ports(1000));
    let t = Instant::now();
    let e = resolve_with(&lib, &lib["t"], &p, &ResolveOptions::for_binding()).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let s = e.to_string();
    assert!(s.contains("filter 't' rule 2 alone expands to 1000000000"), "{s}");
    assert!(s.contains("$A[@1]: 1000 values x $B[@2]: 1000 values x $P[@3]: 1000 values"), "{s}");
    assert!(s.contains("MAX_RULES_PER_BINDING"), "{s}");
}

#[test]
fn rules_of_a_binding_add_up() {
    // Two rules of 10,000 each: the second takes the binding past the limit.
    let lib = xml_lib(&[
        "<filter name='t'><filterref filter='u'/><filterref filter='u'/></filter>",
        "<filter name='u'><rule action='accept' direction='in'><tcp srcipaddr='$A[@1]' dstportstart='$P[@2]'/></rule></filter>",
    ]);
    let mut p = Params::new();
    list(&mut p, "A", addrs(100));
    list(&mut p, "P", ports(100));
    let e = resolve(&lib, &lib["t"], &p).unwrap_err();
    let ResolveError::TooManyRules(t) = &e else { panic!("{e:?}") };
    assert_eq!((t.rule_filter.as_str(), t.rule, t.rule_count, t.total), ("u", 1, 10_000, 20_000));
    list(&mut p, "P", ports(80));
    assert_eq!(resolve(&lib, &lib["t"], &p).expect("16,000 rules").rules().count(), 16_000);
}

#[test]
fn repeated_values_are_not_counted() {
    // libvirt skips repeated combinations, and so does the count: 1024
    // values of which 2 distinct, x 1024 x 8 distinct = 16,384 exactly.
    let lib = xml_lib(&["<filter name='t'><rule action='accept' direction='in'><tcp srcipaddr='$A[@1]' dstipaddr='$B[@2]' dstportstart='$P[@3]'/></rule></filter>"]);
    let mut p = Params::new();
    list(&mut p, "A", (0..MAX_PARAM_VALUES).map(|i| format!("10.1.1.{}", i % 2)));
    list(&mut p, "B", addrs(MAX_PARAM_VALUES));
    list(&mut p, "P", (0..MAX_PARAM_VALUES).map(|i| (i % 8 + 1).to_string()));
    let t = Instant::now();
    let r = resolve(&lib, &lib["t"], &p).expect("at the limit");
    assert_eq!(r.rules().count(), MAX_RULES_PER_BINDING);
    eprintln!("16,384 rules resolved in {:?}", t.elapsed());
    list(&mut p, "A", (0..MAX_PARAM_VALUES).map(|i| format!("10.1.1.{}", i % 3)));
    assert!(matches!(resolve(&lib, &lib["t"], &p), Err(ResolveError::TooManyRules(_))));
}

#[test]
fn parameter_lists_past_the_limit_are_refused() {
    let lib = xml_lib(&["<filter name='t'/>"]);
    let mut p = Params::new();
    list(&mut p, "P", ports(MAX_PARAM_VALUES));
    assert!(resolve(&lib, &lib["t"], &p).is_ok());
    list(&mut p, "P", ports(MAX_PARAM_VALUES + 1));
    let e = resolve(&lib, &lib["t"], &p).unwrap_err();
    assert_eq!(
        e,
        ResolveError::BadParameter(ParamError::TooManyValues {
            name: "P".into(),
            count: 1025,
            limit: MAX_PARAM_VALUES
        })
    );
}

#[test]
fn malformed_ip_parameters_are_refused() {
    // Texts that are no value are refused where they come in.
    for bad in ["192.0.2.1/32", "192.0.2.1 } ; flush ruleset ; {"] {
        let e = params_from_pairs(["IP=192.0.2.2", &format!("IP={bad}")]).unwrap_err();
        assert!(e.to_string().starts_with(&format!("parameter IP: value '{bad}' is not an IPv4 address")), "{e}");
    }
    // A value that is not an address, given by a caller as a value, is
    // refused by resolution.
    let lib =
        xml_lib(&["<filter name='t'><rule action='accept' direction='out'><ip srcipaddr='$IP'/></rule></filter>"]);
    let mut p = params_from_pairs(["IP=192.0.2.2"]).expect("pairs");
    p.get_mut("IP").expect("IP").extend(values(["192.0.2.256".to_string()]));
    let e = resolve_with(&lib, &lib["t"], &p, &ResolveOptions::for_binding()).unwrap_err();
    assert!(e.to_string().starts_with("parameter IP: value '192.0.2.256' is not an IPv4 address"), "{e}");
}

// ---- reaches ----

#[test]
fn reaches_follows_references_without_recursion() {
    let lib = chain(10_000);
    assert!(reaches(&lib, "c0", "c9999"));
    assert!(reaches(&lib, "c5", "c5"));
    assert!(!reaches(&lib, "c9999", "c0"));
    assert!(!reaches(&lib, "c0", "nowhere"));
    assert!(!reaches(&lib, "unknown", "c0"));
    let cyc: Lib = [
        ("a".to_string(), filter("a", vec![fref("b"), fref("missing")])),
        ("b".to_string(), filter("b", vec![fref("a"), fref("c")])),
        ("c".to_string(), filter("c", vec![])),
    ]
    .into_iter()
    .collect();
    assert!(reaches(&cyc, "a", "c"));
    assert!(reaches(&cyc, "b", "missing"), "a name referenced is reached even if no such filter exists");
    assert!(!reaches(&cyc, "c", "a"));
    assert!(!reaches(&cyc, "a", "d"));
}

#[test]
fn learning_off_without_an_address_is_refused_naming_the_variable() {
    // As no-ip-spoofing: the guest's own address, by variable.
    let lib = xml_lib(&["<filter name='t'>\
        <rule action='return' direction='out'><ip srcipaddr='$IP'/></rule>\
        <rule action='drop' direction='out'><ip/></rule>\
        </filter>"]);
    let f = &lib["t"];
    let with = |pairs: &[&str]| gw_resolve::params_from_pairs(pairs.iter().copied()).expect("params");
    let mac = "MAC=52:54:00:00:00:01";
    // Learning on (the default, or any/dhcp): the address is waited for.
    for p in [vec![mac], vec![mac, "CTRL_IP_LEARNING=any"], vec![mac, "CTRL_IP_LEARNING=dhcp"]] {
        let p = with(&p);
        assert!(resolve_with(&lib, f, &p, &ResolveOptions::for_binding_params(&p)).is_ok(), "{p:?}");
    }
    // Off, without IP: refused, and the message says which and why.
    let p = with(&[mac, "CTRL_IP_LEARNING=NONE"]);
    let e = resolve_with(&lib, f, &p, &ResolveOptions::for_binding_params(&p)).unwrap_err();
    let s = e.to_string();
    assert!(matches!(e, gw_resolve::ResolveError::NotLearned { .. }), "{e:?}");
    assert!(s.contains("IP used by its rules but not given") && s.contains("CTRL_IP_LEARNING is 'none'"), "{s}");
    // Off, with IP: fine.
    let p = with(&[mac, "CTRL_IP_LEARNING=none", "IP=192.0.2.1"]);
    assert!(resolve_with(&lib, f, &p, &ResolveOptions::for_binding_params(&p)).is_ok());
}
