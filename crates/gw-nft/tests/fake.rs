//! Planning and both families' deltas, checked against the in-memory
//! kernel (`gw_nft::fake`): no root needed.

use gw_builtins::Library;
use gw_model::{Binding, FilterRef, MacAddr, Owner, ParamValue};
use gw_nft::fake::{FakeKernel, Refused};
use gw_nft::model::{ChainKind, Hook, Layer};
use gw_nft::names::{self, Family};
use gw_nft::netlink::SetChange;
use gw_nft::{plan, port_input, Features, MarkBits, Plan, PortInput, StateSource};

const F: Features =
    Features { state: StateSource::BrNetfilterMark, bridge_reject: false, counters: false, mark: MarkBits::DEFAULT };

/// Port `port` (guest `n`, `$IP` 192.0.2.n) bound to `filter`.
fn port(lib: &Library, port: &str, n: u8, filter: &str, routed: bool) -> PortInput {
    let b = Binding {
        owner: Owner { name: format!("g{n}"), uuid: "00000000-0000-4000-8000-000000000001".into() },
        portdev: gw_model::IfName::new(port).expect("ifname"),
        linkdev: None,
        mac: MacAddr::parse(&format!("52:54:00:00:00:{n:02x}")).expect("mac"),
        filterref: FilterRef {
            filter: filter.into(),
            params: [
                ("IP".to_string(), vec![ParamValue::new(format!("192.0.2.{n}")).expect("an address")]),
                ("DHCPSERVER".to_string(), vec![ParamValue::new("192.0.2.254").expect("an address")]),
            ]
            .into_iter()
            .collect(),
        },
    };
    let bound = gw_ir::bind(lib, &b).expect("bind");
    port_input(port.into(), filter.into(), bound.template.into(), &bound.concrete.into(), routed)
}

fn loaded(p: &Plan) -> FakeKernel {
    let mut k = FakeKernel::new();
    k.load(p);
    k
}

fn count(changes: &[SetChange]) -> usize {
    changes.iter().map(|c| c.elements.len()).sum()
}

/// Applies `new.element_changes(old)` to a kernel holding `old`: it must
/// then hold exactly what loading `new` gives.
fn delta_equals_load(old: &Plan, new: &Plan) -> Vec<SetChange> {
    let changes = new.element_changes(old).expect("only elements change");
    let mut k = loaded(old);
    k.commit(&changes).unwrap_or_else(|e| panic!("refused: {e}\n{changes:?}"));
    let want = loaded(new);
    assert!(k == want, "delta differs from a full load:\n{}\nwant:\n{}", k.dump(), want.dump());
    changes
}

#[test]
fn ports_of_one_filter_share_its_chains_and_differ_in_elements() {
    let lib = Library::builtins().expect("built-ins");
    let p = plan(
        &[
            port(&lib, "vnet1", 1, "clean-traffic", false),
            port(&lib, "vnet2", 2, "clean-traffic", false),
            port(&lib, "tap0", 5, "allow-dhcp", true),
        ],
        F,
    )
    .expect("plan");
    let bridge = p.table(Family::Bridge);
    assert_eq!(bridge.from_guest["vnet1"], bridge.from_guest["vnet2"], "one root chain for both ports");
    assert!(bridge.from_guest["vnet1"].starts_with("f_clean_traffic_") && bridge.from_guest["vnet1"].ends_with("_out"));
    // Each chain's kind is data, and agrees with its name.
    for (name, chain) in &bridge.chains {
        let want = if name.ends_with("_ip") {
            Layer::Ip
        } else if name.ends_with("_out") || name.ends_with("_in") {
            Layer::Root
        } else {
            Layer::Sub
        };
        assert_eq!(chain.kind, ChainKind::Filter(want), "{name}");
    }
    // Every per-port set holds an element for each port (the port first).
    for (name, set) in &bridge.sets {
        assert_eq!(set.ty.fields[0], if name.contains("_out_") { "iifname" } else { "oifname" }, "{name}");
        for port in ["vnet1", "vnet2"] {
            assert!(set.elements.iter().any(|e| e.text().starts_with(&format!("\"{port}\""))), "{name}: {port}");
        }
    }
    // The routed port is in the inet table only.
    assert!(!bridge.from_guest.contains_key("tap0"));
    let inet = p.table(Family::Inet);
    assert!(inet.from_guest["tap0"].starts_with("r_allow_dhcp_"));
    let [blocked, pre, post] = p.dispatch_chains(Family::Bridge);
    assert_eq!(blocked.0, names::BLOCKED);
    assert_eq!(
        (pre.1.kind, post.1.kind),
        (
            ChainKind::Base { hook: Hook::Prerouting, priority: names::BRIDGE_DISPATCH_PRIORITY },
            ChainKind::Base { hook: Hook::Postrouting, priority: names::BRIDGE_DISPATCH_PRIORITY }
        )
    );
    // Text and netlink agree: the skeleton plus every element is the full load.
    let mut k = FakeKernel::new();
    k.load_skeleton(&p);
    k.commit(&p.all_elements().expect("every element has key bytes")).expect("commit");
    assert_eq!(k, loaded(&p));
}

#[test]
fn a_routed_ports_change_is_an_element_delta_in_the_inet_family() {
    let lib = Library::builtins().expect("built-ins");
    let bridged = port(&lib, "vnet1", 1, "clean-traffic", false);
    let a = plan(&[bridged.clone(), port(&lib, "tap0", 5, "clean-traffic", true)], F).expect("plan");
    // tap0's guest gets another MAC and IP address: one element out and one
    // in, in each of the two sets that hold them (MAC, IP).
    let b = plan(&[bridged.clone(), port(&lib, "tap0", 6, "clean-traffic", true)], F).expect("plan");
    let changes = delta_equals_load(&a, &b);
    assert!(changes.iter().all(|c| c.family == Family::Inet.nfproto()), "{changes:?}");
    assert_eq!(count(&changes), 4, "{changes:#?}");
    // A second routed port joins.
    let c =
        plan(&[bridged, port(&lib, "tap0", 6, "clean-traffic", true), port(&lib, "tap1", 7, "clean-traffic", true)], F)
            .expect("plan");
    let changes = delta_equals_load(&b, &c);
    assert!(changes.iter().all(|c| c.family == Family::Inet.nfproto() && c.add), "{changes:?}");
    // Its MAC and IP, and its two map entries.
    assert_eq!(count(&changes), 4, "{changes:#?}");
}

#[test]
fn a_routed_port_moving_to_another_filter_is_an_inet_delta() {
    let lib = Library::builtins().expect("built-ins");
    let bridged = port(&lib, "vnet1", 1, "clean-traffic", false);
    let a = plan(&[bridged.clone(), port(&lib, "tap0", 5, "clean-traffic", true)], F).expect("plan");
    let b = plan(&[bridged, port(&lib, "tap0", 5, "allow-dhcp", true)], F).expect("plan");
    assert!(b.element_changes(&a).is_none(), "new chains are not elements");
    let script = b.render_update(&a);
    assert!(!script.contains("delete table") && !script.contains("bridge guestwall"), "{script}");
    assert!(script.contains("add chain inet guestwall r_allow_dhcp_"), "{script}");
    assert!(script.contains("delete chain inet guestwall r_clean_traffic_"), "{script}");
    let staged = b.staged_update(&a).expect("only additions, removals and elements");
    assert!(staged.elements.iter().all(|c| c.family == Family::Inet.nfproto()));
    assert!(staged.before.contains("add chain inet guestwall r_allow_dhcp_"), "{}", staged.before);
    assert!(staged.after.contains("delete chain inet guestwall r_clean_traffic_"), "{}", staged.after);
}

#[test]
fn bridge_deltas_equal_full_loads() {
    let lib = Library::builtins().expect("built-ins");
    let p = |n: u8, f: &str| port(&lib, &format!("vnet{n}"), n, f, false);
    let a = plan(&[p(1, "clean-traffic"), p(2, "clean-traffic")], F).expect("plan");
    // vnet2 goes, vnet3 comes.
    let b = plan(&[p(1, "clean-traffic"), p(3, "clean-traffic")], F).expect("plan");
    let changes = delta_equals_load(&a, &b);
    assert!(changes.iter().all(|c| c.family == Family::Bridge.nfproto()));
    assert!(changes.iter().any(|c| !c.add) && changes.iter().any(|c| c.add));
    assert!(changes.iter().position(|c| c.add) > changes.iter().rposition(|c| !c.add), "deletions first");
    // And back.
    delta_equals_load(&b, &a);
    // Blocking a port is two map entries per family.
    let mut blocked = b.clone();
    blocked.block(["vnet9"]);
    assert_eq!(count(&delta_equals_load(&b, &blocked)), 4);
    // A port moving to a filter not loaded yet needs chains.
    let c = plan(&[p(1, "clean-traffic"), p(3, "allow-arp")], F).expect("plan");
    assert!(c.element_changes(&b).is_none());
}

#[test]
fn a_refused_transaction_changes_nothing() {
    let lib = Library::builtins().expect("built-ins");
    let p = |n: u8| port(&lib, &format!("vnet{n}"), n, "clean-traffic", false);
    let a = plan(&[p(1), p(2)], F).expect("plan");
    let b = plan(&[p(1), p(3)], F).expect("plan");
    let good = b.element_changes(&a).expect("elements");
    let before = loaded(&a);
    let refuse = |changes: &[SetChange]| {
        let mut k = before.clone();
        let e = k.commit(changes).expect_err("refused");
        assert_eq!(k, before, "a refused batch changed the kernel");
        e
    };
    let mut bad = good.clone();
    bad.push(SetChange {
        family: Family::Bridge.nfproto(),
        table: names::TABLE.into(),
        set: "no_such_set".into(),
        add: true,
        elements: vec![(vec![0; 16], None)],
    });
    assert_eq!(refuse(&bad), Refused::NoSet("no_such_set".into()));
    // The same batch twice: its deletions find nothing the second time.
    let mut k = before.clone();
    k.commit(&good).expect("commit");
    let after = k.clone();
    assert!(matches!(k.commit(&good), Err(Refused::Missing(_))));
    assert_eq!(k, after);
    // Adding what is there.
    let again = a.all_elements().expect("elements");
    assert!(matches!(refuse(&again), Refused::Exists(_)));
    // A verdict to a chain that is not loaded.
    let c = plan(&[p(1), port(&lib, "vnet3", 3, "allow-arp", false)], F).expect("plan");
    let moved = c.staged_update(&a).expect("staged").elements;
    assert!(matches!(refuse(&moved), Refused::NoChain { .. }));
}

#[test]
fn every_element_delta_between_plans_equals_a_full_load() {
    let lib = Library::builtins().expect("built-ins");
    let ports = |spec: &[(&str, u8, &str, bool)]| {
        let inputs: Vec<PortInput> = spec.iter().map(|(n, i, f, r)| port(&lib, n, *i, f, *r)).collect();
        plan(&inputs, F).expect("plan")
    };
    let plans = [
        ports(&[("vnet1", 1, "clean-traffic", false), ("vnet2", 2, "clean-traffic", false)]),
        ports(&[("vnet1", 1, "clean-traffic", false), ("vnet3", 3, "clean-traffic", false)]),
        ports(&[("vnet1", 11, "clean-traffic", false), ("vnet2", 2, "clean-traffic", false)]),
        ports(&[
            ("vnet1", 1, "clean-traffic", false),
            ("vnet2", 2, "clean-traffic", false),
            ("tap0", 5, "clean-traffic", true),
        ]),
        ports(&[
            ("vnet2", 2, "clean-traffic", false),
            ("vnet3", 3, "clean-traffic", false),
            ("tap0", 6, "clean-traffic", true),
            ("tap1", 7, "clean-traffic", true),
        ]),
        ports(&[("vnet1", 1, "allow-dhcp", false), ("tap0", 8, "allow-dhcp", true)]),
        ports(&[("vnet2", 2, "allow-dhcp", false), ("tap1", 8, "allow-dhcp", true)]),
    ];
    let mut deltas = 0;
    for a in &plans {
        for b in &plans {
            if b.element_changes(a).is_some() {
                delta_equals_load(a, b);
                deltas += 1;
            }
        }
    }
    assert!(deltas >= 15, "{deltas} pairs were element deltas");
}

/// `n` ports `p0..` of `filter`, bridged.
fn ports(lib: &Library, filter: &str, n: usize, from: usize) -> Vec<PortInput> {
    (from..from + n).map(|i| port(lib, &format!("p{i}"), (i % 250 + 1) as u8, filter, false)).collect()
}

/// The daemon's choice of transaction, for each kind of change, and what
/// each does to a kernel: the result is always the new plan, loaded whole.
#[test]
fn the_transaction_chosen_for_each_change_reaches_the_new_plan() {
    use gw_nft::Transaction;
    let lib = Library::builtins().expect("built-ins");
    let one = plan(&ports(&lib, "clean-traffic", 1, 0), F).expect("plan");
    let two = plan(&ports(&lib, "clean-traffic", 2, 0), F).expect("plan");
    // Nothing loaded, tables absent: split load (elements by netlink).
    let tx = Transaction::choose(None, &one, || true);
    assert!(matches!(tx, Transaction::Split { .. }), "{tx:?}");
    // Nothing loaded, tables present (a restart): one replacing transaction.
    assert!(matches!(Transaction::choose(None, &one, || false), Transaction::Replace(_)));
    // The same plan: nothing to do; asking about the tables is not needed.
    let tx = Transaction::choose(Some(&one), &one, || panic!("asked the kernel"));
    assert!(matches!(tx, Transaction::Nothing), "{tx:?}");
    // A port more under a filter already loaded: elements only.
    assert!(matches!(Transaction::choose(Some(&one), &two, || false), Transaction::Elements(_)));
    // A new filter with few ports: one nft delta.
    let mut mixed = ports(&lib, "clean-traffic", 1, 0);
    mixed.push(port(&lib, "q1", 9, "no-mac-spoofing", false));
    let mixed = plan(&mixed, F).expect("plan");
    assert!(matches!(Transaction::choose(Some(&one), &mixed, || false), Transaction::Update(_)));
    // A new filter with many elements: staged (nft, one netlink batch, nft).
    let mut many = ports(&lib, "clean-traffic", 1, 0);
    many.extend((0..600).map(|i| port(&lib, &format!("m{i}"), (i % 250 + 1) as u8, "no-mac-spoofing", false)));
    let many = plan(&many, F).expect("plan");
    let staged = Transaction::choose(Some(&one), &many, || false);
    assert!(matches!(staged, Transaction::Staged(_)), "{}", staged.describe());
    for (old, new, tx) in [
        (None, &one, Transaction::choose(None, &one, || true)),
        (None, &one, Transaction::choose(None, &one, || false)),
        (Some(&one), &two, Transaction::choose(Some(&one), &two, || false)),
        (Some(&one), &mixed, Transaction::choose(Some(&one), &mixed, || false)),
        (Some(&one), &many, staged),
    ] {
        let mut k = old.map_or_else(FakeKernel::new, loaded);
        tx.apply(&mut k, old, new).unwrap_or_else(|e| panic!("{}: {e}", tx.describe()));
        assert!(k == loaded(new), "{} does not reach the new plan:\n{}", tx.describe(), k.dump());
    }
}

/// A refused step leaves what was loaded: a refused batch changes nothing,
/// a staged update whose batch is refused is rolled back (its new chains
/// and empty sets removed), and a split load whose batch is refused falls
/// back to one nft transaction.
#[test]
fn a_refused_step_rolls_back_to_what_was_loaded() {
    use gw_nft::Transaction;
    let lib = Library::builtins().expect("built-ins");
    let one = plan(&ports(&lib, "clean-traffic", 1, 0), F).expect("plan");
    let two = plan(&ports(&lib, "clean-traffic", 2, 0), F).expect("plan");
    let mut many = ports(&lib, "clean-traffic", 1, 0);
    many.extend((0..600).map(|i| port(&lib, &format!("m{i}"), (i % 250 + 1) as u8, "no-mac-spoofing", false)));
    let many = plan(&many, F).expect("plan");
    for new in [&two, &many] {
        let tx = Transaction::choose(Some(&one), new, || false);
        let mut k = loaded(&one);
        k.refuse_commit = Some(Refused::NoSet("injected".into()));
        assert!(tx.apply(&mut k, Some(&one), new).is_err(), "{} was not refused", tx.describe());
        assert!(k == loaded(&one), "{} left a change behind:\n{}", tx.describe(), k.dump());
    }
    let tx = Transaction::choose(None, &two, || true);
    let mut k = FakeKernel::new();
    k.refuse_commit = Some(Refused::NoSet("injected".into()));
    tx.apply(&mut k, None, &two).expect("falls back to nft");
    assert!(k == loaded(&two), "{}", k.dump());
}
