//! Incremental updates: adding, moving and removing one binding is one
//! transaction that touches only that port's set and map elements and the
//! chains of filters that came or went — checked as text and by the kernel.

use gw_builtins::{Library, Origin};
use gw_nft::{plan, Features, Plan, PortInput, StateSource};
use gw_testns::TestHost;

fn input(lib: &Library, t: &TestHost, i: usize, filter: &str, params: &[(&str, &str)]) -> PortInput {
    let path = t.binding(i, filter, params);
    let b = gw_xml::read_binding(&std::fs::read_to_string(path).expect("read")).expect("binding").value;
    let bound = gw_ir::bind(lib, &b).expect("bind");
    gw_nft::port_input(b.portdev.into(), filter.into(), bound.template.into(), &bound.concrete.into(), false)
}

fn load(t: &TestHost, script: &str) {
    let f = t.filter_file(&format!("script-{}.nft", script.len()), script);
    let o = t.exec(&t.host, &["nft", "-f", &f]);
    assert!(o.status.success(), "nft refused:\n{script}\n{}", String::from_utf8_lossy(&o.stderr));
}

fn spoof_arrives(t: &TestHost, i: usize, tag: &str) -> bool {
    let g = t.guest(i);
    let f = format!(
        "Ether(src='{}', dst='{}')/IP(src='192.0.2.66', dst='{}')/UDP(dport=9)/Raw(b'{tag}')",
        g.mac, t.peer.mac, t.peer.ip
    );
    t.frame_arrives(&g.ns, &f, &t.peer.ns, &format!("p.haslayer(Raw) and bytes(p[Raw].load) == b'{tag}'"))
}

/// The built-ins and a filter `web` (its port may send only from `$IP`),
/// and the br_netfilter features.
fn with_web() -> (Library, Features) {
    let mut lib = Library::builtins().expect("built-ins");
    let web = gw_xml::read_filter(
        "<filter name='web'><rule action='accept' direction='out'><ip srcipaddr='$IP'/></rule><rule action='drop' direction='out'/></filter>",
    )
    .expect("filter")
    .value;
    lib.insert(web, Origin::Builtin);
    let f = Features {
        state: StateSource::BrNetfilterMark,
        bridge_reject: false,
        counters: false,
        mark: gw_nft::MarkBits::DEFAULT,
    };
    (lib, f)
}

#[test]
fn add_move_remove_one_binding() {
    let t = TestHost::new(2);
    let (lib, f) = with_web();
    t.exec(&t.host, &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]);

    let a = vec![input(&lib, &t, 1, "clean-traffic", &[("IP", "192.0.2.1")])];
    let pa: Plan = plan(&a, f).expect("plan");
    load(&t, &pa.render_full());
    assert_eq!(pa.render_update(&pa), "", "no change, no transaction");
    assert!(spoof_arrives(&t, 2, "unbound"), "g2 is not bound yet");

    // add g2 to the same filter: only elements
    let mut b = a.clone();
    b.push(input(&lib, &t, 2, "clean-traffic", &[("IP", "192.0.2.2")]));
    let pb = plan(&b, f).expect("plan");
    let d = pb.render_update(&pa);
    assert!(d.lines().all(|l| l.starts_with("add element ")), "adding a port must only add elements:\n{d}");
    load(&t, &d);
    assert!(!spoof_arrives(&t, 2, "added"), "g2's spoof passed after the update\n{}", t.ruleset());
    assert!(t.ping(&t.guest(2).ns, &t.peer.ip), "g2's legitimate ping");

    // move g2 to another filter: its map elements and the new filter's chains
    let c = vec![b[0].clone(), input(&lib, &t, 2, "web", &[("IP", "192.0.2.2")])];
    let pc = plan(&c, f).expect("plan");
    let d = pc.render_update(&pb);
    assert!(!d.contains("flush chain bridge guestwall f_clean"), "clean-traffic's chains were touched:\n{d}");
    assert!(d.contains("add chain bridge guestwall f_web_"), "{d}");
    assert!(d.contains("delete element bridge guestwall from_guest { \"v2\""), "{d}");
    load(&t, &d);
    assert!(!spoof_arrives(&t, 2, "moved"), "g2's spoof passed under the new filter");
    assert!(!spoof_arrives(&t, 1, "still"), "g1's spoof passed");

    // remove g2: its elements and the web filter's chains and sets go
    let pd = plan(&a, f).expect("plan");
    let d = pd.render_update(&pc);
    assert!(d.contains("delete chain bridge guestwall f_web_"), "{d}");
    load(&t, &d);
    assert_eq!(
        t.ruleset_stateless().replace(char::is_whitespace, ""),
        {
            // the same as loading the final plan from scratch
            load(&t, &pd.render_full());
            t.ruleset_stateless().replace(char::is_whitespace, "")
        },
        "incremental result differs from a full load"
    );
    assert!(spoof_arrives(&t, 2, "removed"), "g2 is unbound again");
}

/// Element-only changes written by netlink, and a full load split into a
/// skeleton (nft) and its elements (netlink), give the kernel exactly what
/// nft gives it from text.
#[test]
fn netlink_elements_match_nft_text() {
    let t = TestHost::new(3);
    let lib = Library::builtins().expect("built-ins");
    let f = Features {
        state: StateSource::BrNetfilterMark,
        bridge_reject: false,
        counters: false,
        mark: gw_nft::MarkBits::DEFAULT,
    };
    t.exec(&t.host, &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]);
    let p1 = input(&lib, &t, 1, "clean-traffic", &[("IP", "192.0.2.1")]);
    let p2 = input(&lib, &t, 2, "clean-traffic", &[("IP", "192.0.2.2")]);
    let p3 = input(&lib, &t, 3, "clean-traffic", &[("IP", "192.0.2.3")]);
    let listing = |script: &str| {
        load(&t, script);
        t.ruleset_stateless()
    };

    // skeleton + elements == full
    let pa = plan(&[p1.clone(), p2.clone()], f).expect("plan");
    let want_a = listing(&pa.render_full());
    t.exec(&t.host, &["nft", "flush", "ruleset"]);
    assert!(!t.in_host(|| gw_nft::netlink::table_exists(gw_nft::netlink::FAMILY_BRIDGE, "guestwall").expect("ask")));
    load(&t, &pa.render_skeleton());
    assert!(t.in_host(|| gw_nft::netlink::table_exists(gw_nft::netlink::FAMILY_BRIDGE, "guestwall").expect("ask")));
    let els = pa.all_elements().expect("clean-traffic's elements all have keys");
    assert!(els.iter().map(|c| c.elements.len()).sum::<usize>() >= 16, "{els:?}");
    t.in_host(|| gw_nft::netlink::commit(&els)).expect("netlink commit");
    assert_eq!(t.ruleset_stateless(), want_a, "skeleton + netlink elements differ from nft's full load");
    assert!(!spoof_arrives(&t, 2, "skeleton"), "g2's spoof passed after the netlink load");

    // add g3, remove g2: elements only
    let pb = plan(&[p1.clone(), p3.clone()], f).expect("plan");
    let d = pb.element_changes(&pa).expect("only elements change");
    assert!(d.iter().any(|c| !c.add) && d.iter().any(|c| c.add));
    t.in_host(|| gw_nft::netlink::commit(&d)).expect("netlink delta");
    let got = t.ruleset_stateless();
    t.exec(&t.host, &["nft", "flush", "ruleset"]);
    assert_eq!(got, listing(&pb.render_full()), "netlink delta differs from nft's full load");
    assert!(spoof_arrives(&t, 2, "unbound"), "g2 is unbound");

    // a change the kernel refuses rolls back whole
    let mut bad = pa.element_changes(&pb).expect("elements");
    bad.push(gw_nft::netlink::SetChange {
        family: gw_nft::netlink::FAMILY_BRIDGE,
        table: "guestwall".into(),
        set: "no_such_set".into(),
        add: true,
        elements: vec![(vec![0; 16], None)],
    });
    let e = t.in_host(|| gw_nft::netlink::commit(&bad)).expect_err("refused");
    assert!(e.to_string().contains("no_such_set"), "{e}");
    assert_eq!(t.ruleset_stateless(), got, "a refused batch changed the ruleset");

    // a filter change is not an element change
    let web = input(&lib, &t, 2, "allow-arp", &[]);
    assert!(plan(&[p1.clone(), web], f).expect("plan").element_changes(&pb).is_none());

    // staged: g2 joins under a new filter and g3 moves to it; clean-traffic
    // keeps g1, so its chains stay and the new filter's are added first
    let q2 = input(&lib, &t, 2, "no-ip-spoofing", &[("IP", "192.0.2.2")]);
    let q3 = input(&lib, &t, 3, "no-ip-spoofing", &[("IP", "192.0.2.3")]);
    let pc = plan(&[p1.clone(), q2, q3], f).expect("plan");
    let st = pc.staged_update(&pb).expect("only additions and elements");
    assert!(st.before.contains("add chain bridge guestwall f_no_ip_spoofing_"), "{}", st.before);
    load(&t, &st.before);
    t.in_host(|| gw_nft::netlink::commit(&st.elements)).expect("netlink");
    assert!(st.after.is_empty(), "nothing is stale yet: {}", st.after);
    let got = t.ruleset_stateless();
    t.exec(&t.host, &["nft", "flush", "ruleset"]);
    assert_eq!(canonical(&got), canonical(&listing(&pc.render_full())), "staged update differs from a full load");
    assert!(!spoof_arrives(&t, 2, "staged"), "g2's spoof passed under its new filter");

    // staged removal: clean-traffic's last port leaves, its chains and sets go after
    let pd = plan(&[input(&lib, &t, 3, "no-ip-spoofing", &[("IP", "192.0.2.3")])], f).expect("plan");
    let st = pd.staged_update(&pc).expect("only removals and elements");
    assert!(st.after.contains("delete chain bridge guestwall f_clean_traffic_"), "{}", st.after);
    assert!(pd.staged_update(&pc).is_some());
    load(&t, &st.before);
    t.in_host(|| gw_nft::netlink::commit(&st.elements)).expect("netlink");
    load(&t, &st.after);
    let got = t.ruleset_stateless();
    t.exec(&t.host, &["nft", "flush", "ruleset"]);
    assert_eq!(canonical(&got), canonical(&listing(&pd.render_full())), "staged removal differs from a full load");

    // a redefined filter (a chain that stays changes) is not staged
    let mut lib2 = lib.clone();
    let nis = gw_xml::read_filter(
        "<filter name='no-ip-spoofing' chain='ipv4-ip'><rule action='drop' direction='out'><ip srcipaddr='$IP'/></rule></filter>",
    )
    .expect("filter")
    .value;
    lib2.insert(nis, Origin::Builtin);
    let r3 = input(&lib2, &t, 3, "no-ip-spoofing", &[("IP", "192.0.2.3")]);
    assert!(plan(&[r3], f).expect("plan").staged_update(&pd).is_none());
}

/// A listing reduced to its lines, sorted: chains appear in creation order.
fn canonical(listing: &str) -> Vec<String> {
    let mut v: Vec<String> =
        listing.replace(',', "\n").lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    v.sort();
    v
}

/// Routed ports (inet table) get deltas too: a port's new values are
/// elements (netlink), a port moving to another filter is an nft delta;
/// the kernel then holds exactly what a full load of the same plan gives.
#[test]
fn routed_port_changes_are_deltas_in_the_kernel() {
    let t = TestHost::new_routed();
    let (lib, f) = with_web();
    let routed = |filter: &str, ip: &str| {
        let mut p = input(&lib, &t, 1, filter, &[("IP", ip)]);
        p.routed = true;
        p
    };
    // nft lists chains in creation order and elements in hash order:
    // compare the listings' lines, sorted.
    let listing = || {
        let mut v: Vec<String> = t
            .ruleset_stateless()
            .replace(',', "\n")
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    };
    let full = |p: &Plan| {
        load(&t, &p.render_full());
        listing()
    };
    let pa = plan(&[routed("clean-traffic", "198.51.100.2")], f).expect("plan");
    let pb = plan(&[routed("clean-traffic", "198.51.100.3")], f).expect("plan");
    let pc = plan(&[routed("web", "198.51.100.3")], f).expect("plan");
    // New values: elements only, in the inet family, by netlink.
    let changes = pb.element_changes(&pa).expect("an element delta");
    assert!(!changes.is_empty() && changes.iter().all(|c| c.family == gw_nft::Family::Inet.nfproto()), "{changes:?}");
    let want_b = full(&pb);
    full(&pa);
    t.in_host(|| gw_nft::netlink::commit(&changes)).expect("netlink delta");
    assert_eq!(listing(), want_b, "the netlink delta differs from a full load");
    // Another filter: an nft delta that leaves the bridge table alone.
    let d = pc.render_update(&pb);
    assert!(!d.is_empty() && !d.contains("table bridge"), "{d}");
    load(&t, &d);
    let got = listing();
    assert_eq!(got, full(&pc), "the nft delta differs from a full load:\n{d}");
}
