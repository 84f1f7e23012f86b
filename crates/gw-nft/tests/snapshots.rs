//! Snapshots of the nftables each built-in filter compiles to, for two ports
//! bound to it (showing what is shared and what is per port). Review changes
//! with `cargo insta review`.

use gw_builtins::{Library, BUILTINS};
use gw_model::{Binding, FilterRef, MacAddr, Owner, ParamValue};
use gw_nft::{build, port_input, Features, StateSource};

fn binding(port: &str, mac: &str, filter: &str, params: &[(&str, &str)]) -> Binding {
    Binding {
        owner: Owner { name: format!("guest-{port}"), uuid: "00000000-0000-4000-8000-000000000001".into() },
        portdev: gw_model::IfName::new(port).expect("ifname"),
        linkdev: None,
        mac: MacAddr::parse(mac).expect("mac"),
        filterref: FilterRef {
            filter: filter.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.split(',').map(|v| ParamValue::new(v).expect("a value")).collect()))
                .collect(),
        },
    }
}

fn params_for(filter: &str, n: u8) -> Vec<(&'static str, String)> {
    let v6 = filter.contains("dhcpv6");
    vec![
        ("IP", format!("192.0.2.{n}")),
        ("IPV6", format!("2001:db8::{n}")),
        ("DHCPSERVER", if v6 { "2001:db8::fe".into() } else { "192.0.2.254".into() }),
        ("GATEWAY_MAC", "52:54:00:00:00:fe".into()),
    ]
}

#[test]
fn builtin_rulesets() {
    let lib = Library::builtins().expect("built-ins");
    for (name, _) in BUILTINS {
        let mut inputs = Vec::new();
        for n in [1u8, 2] {
            let p = params_for(name, n);
            let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let b = binding(&format!("vnet{n}"), &format!("52:54:00:00:00:0{n}"), name, &p);
            let bound = gw_ir::bind(&lib, &b).unwrap_or_else(|e| panic!("{name}: {e}"));
            inputs.push(port_input(
                b.portdev.into(),
                name.to_string(),
                bound.template.into(),
                &bound.concrete.into(),
                false,
            ));
        }
        let f = Features {
            state: StateSource::BrNetfilterMark,
            bridge_reject: false,
            counters: false,
            mark: gw_nft::MarkBits::DEFAULT,
        };
        let script = build(&inputs, f).unwrap_or_else(|e| panic!("{name}: {e}"));
        insta::assert_snapshot!(*name, script);
    }
}

#[test]
fn bridge_conntrack_path_uses_ct_state() {
    let lib = Library::builtins().expect("built-ins");
    let b = binding("vnet1", "52:54:00:00:00:01", "allow-dhcp", &[("DHCPSERVER", "192.0.2.254")]);
    let bound = gw_ir::bind(&lib, &b).expect("bind");
    let web = gw_xml::read_filter(
        "<filter name='web'><rule action='accept' direction='in'><tcp dstportstart='22'/></rule></filter>",
    )
    .expect("filter")
    .value;
    let mut lib2 = lib.clone();
    lib2.insert(web, gw_builtins::Origin::Builtin);
    let b2 = binding("vnet2", "52:54:00:00:00:02", "web", &[]);
    let bound2 = gw_ir::bind(&lib2, &b2).expect("bind");
    let inputs = vec![
        port_input("vnet1".into(), "allow-dhcp".into(), bound.template.into(), &bound.concrete.into(), false),
        port_input("vnet2".into(), "web".into(), bound2.template.into(), &bound2.concrete.into(), false),
    ];
    let f = Features {
        state: StateSource::BridgeConntrack,
        bridge_reject: true,
        counters: true,
        mark: gw_nft::MarkBits::DEFAULT,
    };
    insta::assert_snapshot!("bridge-conntrack", build(&inputs, f).expect("build"));
}

#[test]
fn routed_port_uses_the_inet_family() {
    let lib = Library::builtins().expect("built-ins");
    let b = binding("tap0", "52:54:00:00:00:01", "clean-traffic", &[("IP", "198.51.100.2")]);
    let bound = gw_ir::bind(&lib, &b).expect("bind");
    let inputs =
        vec![port_input("tap0".into(), "clean-traffic".into(), bound.template.into(), &bound.concrete.into(), true)];
    let f = Features {
        state: StateSource::BrNetfilterMark,
        bridge_reject: false,
        counters: false,
        mark: gw_nft::MarkBits::DEFAULT,
    };
    insta::assert_snapshot!("routed-clean-traffic", build(&inputs, f).expect("build"));
}
