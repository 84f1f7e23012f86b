//! Micro-benchmarks of the pipeline on the built-in filters: parse (XML →
//! model), resolve (DAG + variables), lower (program) and plan+render (nft),
//! for one binding; and plan+render for 1,000 ports sharing a filter.

use criterion::{criterion_group, criterion_main, Criterion};
use gw_builtins::{Library, BUILTINS};
use gw_model::{Binding, FilterRef, MacAddr, Owner, ParamValue};
use gw_nft::{plan, port_input, Features, PortInput, StateSource};
use std::hint::black_box;
use std::sync::Arc;

fn binding(i: u32, filter: &str) -> Binding {
    Binding {
        owner: Owner { name: format!("g{i}"), uuid: "00000000-0000-4000-8000-000000000001".into() },
        portdev: gw_model::IfName::new(format!("p{i}")).expect("ifname"),
        linkdev: None,
        mac: MacAddr([0x52, 0x54, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        filterref: FilterRef {
            filter: filter.into(),
            params: [
                ("IP", format!("10.0.{}.{}", (i >> 8) & 0xff, i & 0xff)),
                ("IPV6", "2001:db8::1".to_string()),
                ("DHCPSERVER", if filter.contains("dhcpv6") { "2001:db8::fe" } else { "192.0.2.254" }.to_string()),
                ("GATEWAY_MAC", "52:54:00:00:00:fe".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), vec![ParamValue::new(v).expect("a value")]))
            .collect(),
        },
    }
}

fn pipeline(c: &mut Criterion) {
    let lib = Library::builtins().expect("built-ins");
    let f = Features {
        state: StateSource::BrNetfilterMark,
        bridge_reject: false,
        counters: false,
        mark: gw_nft::MarkBits::DEFAULT,
    };
    c.bench_function("parse all 24 built-ins", |b| {
        b.iter(|| {
            for (_, xml) in BUILTINS {
                black_box(gw_xml::read_filter(black_box(xml)).expect("parses"));
            }
        })
    });
    let ct = lib.get("clean-traffic").expect("clean-traffic").0.clone();
    let params = gw_ir::binding_params(&binding(1, "clean-traffic"));
    c.bench_function("resolve clean-traffic", |b| {
        b.iter(|| black_box(gw_resolve::resolve(&lib, black_box(&ct), black_box(&params)).expect("resolves")))
    });
    let resolved = gw_resolve::resolve(&lib, &ct, &params).expect("resolves");
    c.bench_function("lower clean-traffic", |b| {
        b.iter(|| black_box(gw_ir::lower(black_box(&resolved)).expect("lowers")))
    });
    c.bench_function("compile all 24 built-ins (1 port each)", |b| {
        b.iter(|| {
            for (name, _) in BUILTINS {
                let bd = binding(1, name);
                let bound = gw_ir::bind(&lib, &bd).expect("binds");
                let input = port_input(
                    bd.portdev.into(),
                    name.to_string(),
                    Arc::new(bound.template),
                    &Arc::new(bound.concrete),
                    false,
                );
                black_box(plan(&[input], f).expect("plans").render_full());
            }
        })
    });
    let template = Arc::new(gw_ir::template_of(&lib, &binding(1, "clean-traffic")).expect("template"));
    let inputs: Vec<PortInput> = (1..=1000)
        .map(|i| {
            let bd = binding(i, "clean-traffic");
            let concrete = Arc::new(gw_ir::concrete_of(&lib, &bd).expect("binds").1);
            port_input(bd.portdev.to_string(), "clean-traffic".into(), template.clone(), &concrete, false)
        })
        .collect();
    c.bench_function("plan+render clean-traffic, 1000 ports", |b| {
        b.iter(|| black_box(plan(black_box(&inputs), f).expect("plans").render_full()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = pipeline
}
criterion_main!(benches);
