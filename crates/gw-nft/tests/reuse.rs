//! Redefining a filter keeps what it can: ports' values when the rules
//! with variables are the same ([`PortValues::fit`]), and whole sets when a
//! group's ports and values are the very same ([`plan_from`]); the result
//! must equal planning from scratch.

use gw_builtins::{Library, Origin};
use gw_model::{Binding, FilterRef, MacAddr, Owner};
use gw_nft::{plan, plan_from, port_input, Features, PortInput, PortValues, StateSource};
use std::sync::Arc;

const F: Features = Features {
    state: StateSource::BrNetfilterMark,
    bridge_reject: false,
    counters: false,
    mark: gw_nft::MarkBits::DEFAULT,
};

fn binding(n: u8, filter: &str) -> Binding {
    Binding {
        owner: Owner { name: format!("g{n}"), uuid: "00000000-0000-4000-8000-000000000001".into() },
        portdev: gw_model::IfName::new(format!("vnet{n}")).expect("ifname"),
        linkdev: None,
        mac: MacAddr::parse(&format!("52:54:00:00:00:{n:02x}")).expect("mac"),
        filterref: FilterRef {
            filter: filter.into(),
            params: [("IP".to_string(), vec![gw_model::ParamValue::new(format!("192.0.2.{n}")).expect("an address")])]
                .into_iter()
                .collect(),
        },
    }
}

fn input(lib: &Library, b: &Binding) -> PortInput {
    let bound = gw_ir::bind(lib, b).expect("bind");
    port_input(b.portdev.to_string(), b.filterref.filter.clone(), bound.template.into(), &bound.concrete.into(), false)
}

fn with_filter(xml: &str) -> Library {
    let mut lib = Library::builtins().expect("built-ins");
    lib.insert(gw_xml::read_filter(xml).expect("filter").value, Origin::Builtin);
    lib
}

const BASE: &str = "<filter name='web'><filterref filter='clean-traffic'/>
  <rule action='accept' direction='in'><tcp dstportstart='22'/></rule>
  <rule action='drop' direction='in'><tcp/></rule></filter>";

#[test]
fn values_fit_when_only_constant_rules_change() {
    let old = with_filter(BASE);
    let added = with_filter(&BASE.replace(
        "<rule action='drop'",
        "<rule action='accept' direction='in' priority='400'><tcp dstportstart='80'/></rule><rule action='drop'",
    ));
    let var_changed = with_filter(&BASE.replace(
        "<rule action='drop' direction='in'><tcp/></rule>",
        "<rule action='drop' direction='in'><tcp/></rule><rule action='drop' direction='out'><ip dstipaddr='$IP'/></rule>",
    ));
    // a parameter passed down a filterref changes what a rule's variable is
    let inner = "<filter name='inner'><rule action='drop' direction='out'><ip dstipaddr='$NET'/></rule></filter>";
    let outer = |v: &str| {
        let mut lib = with_filter(&BASE.replace(
            "<filterref filter='clean-traffic'/>",
            &format!("<filterref filter='clean-traffic'/><filterref filter='inner'><parameter name='NET' value='{v}'/></filterref>"),
        ));
        lib.insert(gw_xml::read_filter(inner).expect("filter").value, Origin::Builtin);
        lib
    };
    let (net1, net2) = (outer("198.51.100.1"), outer("198.51.100.2"));
    let t1 = gw_ir::template_of(&net1, &binding(1, "web")).expect("template");
    let t2 = gw_ir::template_of(&net2, &binding(1, "web")).expect("template");
    assert!(!PortValues::fit(&t1, &t2), "other parameters on a path must not keep the values");
    let t1b = gw_ir::template_of(&outer("198.51.100.1"), &binding(1, "web")).expect("template");
    assert!(PortValues::fit(&t1, &t1b), "the same library must fit");
    let b: Vec<Binding> = (1..=3).map(|n| binding(n, "web")).collect();
    let before: Vec<PortInput> = b.iter().map(|b| input(&old, b)).collect();
    let pa = plan(&before, F).expect("plan");

    // one more constant rule: values fit, and keeping them gives the plan a
    // fresh compile gives, with the very same sets
    let t_new = Arc::new(gw_ir::template_of(&added, &b[0]).expect("template"));
    assert!(PortValues::fit(&before[0].template, &t_new));
    let kept: Vec<PortInput> = before.iter().map(|i| PortInput { template: t_new.clone(), ..i.clone() }).collect();
    let reused = plan_from(&kept, F, Some(&pa)).expect("plan");
    let fresh = plan(&b.iter().map(|b| input(&added, b)).collect::<Vec<_>>(), F).expect("plan");
    assert_eq!(reused, fresh, "kept values plan differently from a fresh compile");
    assert_eq!(reused.render_full(), fresh.render_full());
    assert!(reused.element_changes(&pa).is_none(), "the chains changed");
    assert!(
        reused.render_update(&pa).lines().all(|l| !l.contains("element")),
        "no element may be written again:\n{}",
        reused.render_update(&pa)
    );

    // a new rule with a variable, or other parameters on a path: no fit
    let t = gw_ir::template_of(&var_changed, &b[0]).expect("template");
    assert!(!PortValues::fit(&before[0].template, &t), "a new rule with a variable must not keep the values");
}
