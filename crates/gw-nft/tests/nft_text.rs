//! No text from outside reaches nft as syntax (issue 9, finding 1 and 2).
//!
//! Filter names, rule comments, port names and parameter values are
//! generated with every byte class (newlines, quotes, backslashes, `*`,
//! `#`, `;`, braces, control and non-ASCII characters) and put into the
//! model directly, past the XML reader's own checks, so that the nft layer
//! is tested as the last line of defence. Each generated ruleset is loaded
//! into a fresh network namespace and read back as JSON: it must hold
//! exactly guestwall's two tables, the dispatch maps exactly the ports that
//! were given, and comments only what `gw_nft::text` lets through; a table
//! that exists before must still be there. Needs root (run by
//! scripts/test); fails loudly without it.

use gw_builtins::{Library, Origin};
use gw_model::filter::{Entry, FieldValue};
use gw_model::{Binding, FilterRef, MacAddr, Owner, Value};
use gw_nft::{build, port_input, Features, MarkBits, StateSource};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};

const F: Features =
    Features { state: StateSource::BrNetfilterMark, bridge_reject: false, counters: false, mark: MarkBits::DEFAULT };

/// A string of every byte class nft's scanner treats specially.
fn nasty(max: usize) -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("\n".to_string()),
        Just("\r".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("*".to_string()),
        Just("#".to_string()),
        Just(";".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("$".to_string()),
        Just("@".to_string()),
        Just("'".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("\u{0}".to_string()),
        Just("\u{7f}".to_string()),
        Just("é".to_string()),
        Just("\u{2028}".to_string()),
        Just("delete table inet fw".to_string()),
        "[a-z0-9._-]{1,4}",
    ];
    prop::collection::vec(pieces, 1..6).prop_map(move |v| {
        let mut s: String = v.concat();
        while s.len() > max {
            s.pop();
        }
        s
    })
}

/// A binding for port `vnet0`: the nasty port names go straight to the nft
/// layer (`port_input`), past the checks a `Binding` makes.
fn binding(filter: &str, ip: u32, i: usize) -> Binding {
    Binding {
        owner: Owner { name: format!("g{i}"), uuid: "00000000-0000-4000-8000-000000000001".into() },
        portdev: gw_model::IfName::new("vnet0").expect("ifname"),
        linkdev: None,
        mac: MacAddr::parse(&format!("52:54:00:00:00:{:02x}", i % 256)).expect("mac"),
        filterref: FilterRef {
            filter: filter.into(),
            params: [(
                "IP".to_string(),
                vec![gw_model::ParamValue::new(std::net::Ipv4Addr::from(ip).to_string()).expect("an address")],
            )]
            .into_iter()
            .collect(),
        },
    }
}

fn netns() -> String {
    let id = format!("gwnft{}x{}", std::process::id(), rand_id());
    let o = Command::new("ip").args(["netns", "add", &id]).output().expect("ip");
    assert!(o.status.success(), "ip netns add (this test needs root): {}", String::from_utf8_lossy(&o.stderr));
    id
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn nft(ns: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft");
    if let Some(text) = stdin {
        use std::io::Write;
        c.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    }
    drop(c.stdin.take());
    let o = c.wait_with_output().expect("nft");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every string value under `v` whose key is `key`.
fn strings_at<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    if let Some(s) = x.as_str() {
                        out.push(s);
                    }
                }
                strings_at(x, key, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings_at(x, key, out)),
        _ => {}
    }
}

fn check(filter_name: String, comment: String, ports: Vec<String>, ips: Vec<u32>) -> Result<(), TestCaseError> {
    let mut lib = Library::builtins().expect("built-ins");
    let mut f = gw_xml::read_filter(
        "<filter name='web'><filterref filter='clean-traffic'/><rule action='drop' direction='out'><ip srcipaddr='$IP' comment='c'/></rule></filter>",
    )
    .expect("filter")
    .value;
    f.name = filter_name.clone();
    for e in &mut f.entries {
        if let Entry::Rule(r) = e {
            if let Some(m) = r.matches.as_mut() {
                m.fields.insert(
                    gw_model::Field::Comment,
                    FieldValue { value: Value::Text(comment.clone()), negated: false },
                );
            }
        }
    }
    lib.insert(f, Origin::Builtin);
    let mut inputs = Vec::new();
    let mut wanted = BTreeSet::new();
    for (i, (port, ip)) in ports.iter().zip(&ips).enumerate() {
        if !wanted.insert(port.clone()) {
            continue;
        }
        let b = binding(&filter_name, *ip, i);
        let bound = gw_ir::bind(&lib, &b).expect("bind");
        inputs.push(port_input(
            port.clone(),
            filter_name.clone(),
            bound.template.into(),
            &bound.concrete.into(),
            false,
        ));
    }
    let script = build(&inputs, F).expect("build");
    let ns = netns();
    let _guard = Ns(ns.clone());
    let (ok, _, err) = nft(&ns, &["-f", "-"], Some("add table inet fw\nadd chain inet fw keep\n"));
    prop_assert!(ok, "{err}");
    let (ok, _, err) = nft(&ns, &["-f", "-"], Some(&script));
    prop_assert!(ok, "nft refused the ruleset: {err}\n{script}");
    let (ok, out, err) = nft(&ns, &["-j", "list", "ruleset"], None);
    prop_assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let mut tables = BTreeSet::new();
    for item in v["nftables"].as_array().expect("array") {
        if let Some(t) = item.get("table") {
            tables.insert(format!("{} {}", t["family"].as_str().unwrap_or(""), t["name"].as_str().unwrap_or("")));
        }
    }
    let expected: BTreeSet<String> =
        ["bridge guestwall", "inet guestwall", "inet fw"].iter().map(|s| s.to_string()).collect();
    prop_assert_eq!(&tables, &expected, "tables");
    // The dispatch map holds exactly the ports given (names nft cannot take
    // become a name no interface has, never a wildcard).
    let mut keys = BTreeSet::new();
    for item in v["nftables"].as_array().expect("array") {
        if let Some(m) = item.get("map").filter(|m| m["name"] == "from_guest") {
            for e in m["elem"].as_array().into_iter().flatten() {
                keys.insert(e[0].as_str().unwrap_or("").to_string());
            }
        }
    }
    let expect_keys: BTreeSet<String> = wanted
        .iter()
        .map(|p| if gw_nft::text::ifname(p).is_ok() { p.clone() } else { gw_nft::text::placeholder(p) })
        .collect();
    prop_assert_eq!(&keys, &expect_keys, "dispatch keys");
    let mut comments = Vec::new();
    strings_at(&v, "comment", &mut comments);
    for c in comments {
        prop_assert!(c.chars().all(|ch| (' '..='~').contains(&ch) && ch != '"' && ch != '\\'), "comment {c:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn outside_text_never_becomes_nft_syntax(
        filter_name in nasty(40),
        comment in nasty(200),
        ports in prop::collection::vec(nasty(15).prop_filter("a name", |s| !s.is_empty()), 1..5),
        ips in prop::collection::vec(any::<u32>(), 5),
    ) {
        check(filter_name, comment, ports, ips)?;
    }
}

#[test]
fn the_reported_injection_and_wildcards_are_inert() {
    check(
        "x\ndelete table inet fw\n#".into(),
        "\"; delete table inet fw; #".into(),
        vec!["*".into(), "v*".into(), "a\\*".into(), "x$y;{}#".into()],
        vec![0xc000_0201, 0xc000_0202, 0xc000_0203, 0xc000_0204, 0],
    )
    .expect("inert");
}
