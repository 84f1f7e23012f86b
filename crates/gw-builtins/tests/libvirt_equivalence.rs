//! Our built-in filters mean what libvirt 9.0's filters of the same names
//! mean: for the same parameters, each resolves to the same ordered rules
//! (same chains, jumps, actions, directions, priorities and matches).

use gw_builtins::{Library, BUILTINS};
use gw_model::Filter;
use gw_resolve::{params_from_pairs, resolve, FilterSource};
use gw_xml::read_filter;
use std::collections::BTreeMap;
use std::path::Path;

fn libvirt_library() -> BTreeMap<String, Filter> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/libvirt/src/nwfilter/xml");
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("libvirt built-ins not found at {}: {e}", dir.display()));
    let mut lib = BTreeMap::new();
    for e in entries {
        let path = e.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let f = read_filter(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())).value;
        lib.insert(f.name.clone(), f);
    }
    lib
}

/// Parameter sets: single values, and lists that exercise iteration.
/// libvirt's DHCPv6 filters read $DHCPSERVER as an IPv6 address.
fn parameter_sets(filter: &str) -> Vec<gw_resolve::Params> {
    let v6 = filter.contains("dhcpv6");
    [
        vec![
            "IP=192.0.2.10",
            "MAC=52:54:00:12:34:56",
            "IPV6=2001:db8::10",
            if v6 { "DHCPSERVER=2001:db8::1" } else { "DHCPSERVER=192.0.2.1" },
            "GATEWAY_MAC=52:54:00:00:00:01",
        ],
        vec![
            "IP=192.0.2.10",
            "IP=198.51.100.7",
            "MAC=52:54:00:12:34:56",
            "IPV6=2001:db8::10",
            "IPV6=2001:db8::11",
            if v6 { "DHCPSERVER=2001:db8::1" } else { "DHCPSERVER=192.0.2.1" },
            if v6 { "DHCPSERVER=2001:db8::2" } else { "DHCPSERVER=192.0.2.2" },
            "GATEWAY_MAC=52:54:00:00:00:01",
        ],
    ]
    .iter()
    .map(|p| params_from_pairs(p.iter().copied()).expect("valid params"))
    .collect()
}

#[test]
fn every_libvirt_builtin_has_an_equivalent() {
    let theirs = libvirt_library();
    let ours = Library::builtins().expect("built-ins load");
    assert_eq!(theirs.len(), 24, "libvirt 9.0 ships 24 built-in filters");
    let our_names: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
    let their_names: Vec<&str> = theirs.keys().map(String::as_str).collect();
    assert_eq!(our_names, their_names, "same names");

    let mut compared = 0;
    for name in their_names {
        for params in parameter_sets(name) {
            let a = resolve(&theirs, &theirs[name], &params).unwrap_or_else(|e| panic!("libvirt's {name}: {e}"));
            let b =
                resolve(&ours, ours.filter(name).expect("ours"), &params).unwrap_or_else(|e| panic!("our {name}: {e}"));
            // Compare everything but the position of each rule inside its
            // file, which is ours to choose.
            let strip = |r: &gw_resolve::Resolved| {
                let mut v = serde_json::to_value(r).expect("serialise");
                strip_entry_positions(&mut v);
                v
            };
            assert_eq!(strip(&a), strip(&b), "{name} with {params:?}");
            compared += 1;
        }
    }
    assert_eq!(compared, 48);
}

fn strip_entry_positions(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Object(o)) = m.get_mut("origin") {
                o.remove("entry");
            }
            m.values_mut().for_each(strip_entry_positions);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_entry_positions),
        _ => {}
    }
}

#[test]
fn builtins_parse_without_quirks() {
    for (name, xml) in BUILTINS {
        let p = read_filter(xml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(p.quirks.is_empty(), "{name}: {:?}", p.quirks);
        assert_eq!(&p.value.name, name);
    }
}

#[test]
fn config_dir_overrides_a_builtin() {
    let dir = std::env::temp_dir().join(format!("gw-builtins-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("mine.xml"),
        "<filter name='allow-arp' chain='arp'><rule action='drop' direction='inout'/></filter>",
    )
    .expect("write");
    let lib = Library::with_dir(&dir).expect("loads");
    let (f, origin) = lib.get("allow-arp").expect("present");
    assert_eq!(f.entries.len(), 1);
    assert!(matches!(origin, gw_builtins::Origin::File(p) if p.ends_with("mine.xml")));
    std::fs::write(dir.join("other.xml"), "<filter name='allow-arp'/>").expect("write");
    let e = Library::with_dir(&dir).unwrap_err();
    assert!(e.to_string().contains("both define filter 'allow-arp'"), "{e}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
