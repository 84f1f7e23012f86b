//! The reconciler against the in-memory kernel (`gw_nft::fake`) and a
//! table of links: which transaction each event leads to, that the kernel
//! then holds exactly the plan, and that a refused transaction changes
//! neither the kernel nor the store. No root needed.

use crate::engine::Engine;
use crate::events::{self, Event};
use crate::kernel::{self, Heal, Kernel, SharedKernel};
use crate::links::{Host, Links};
use gw_api::{ErrorCode, Request, Response};
use gw_nft::fake::{FakeKernel, Refused};
use gw_nft::netlink::SetChange;
use gw_nft::{Backend, Effect, Family, Features, MarkBits, StateSource, TxError};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

const F: Features =
    Features { state: StateSource::BrNetfilterMark, bridge_reject: false, counters: false, mark: MarkBits::DEFAULT };

/// The fake kernel, shared between the reconciler and the test.
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeKernel>>);

impl Fake {
    fn get(&self) -> std::sync::MutexGuard<'_, FakeKernel> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for Fake {
    fn nft(&mut self, script: &str, effect: Effect<'_>) -> Result<(), TxError> {
        self.get().nft(script, effect)
    }
    fn commit(&mut self, changes: &[SetChange], quiet: bool) -> Result<bool, TxError> {
        Backend::commit(&mut *self.get(), changes, quiet)
    }
    fn tables_present(&mut self) -> (bool, bool) {
        self.get().tables_present()
    }
}

/// A dump announces itself on the first, then waits for a go on the second.
type Gate = (mpsc::Sender<()>, mpsc::Receiver<()>);

/// The host's links, set by the test; `gate`, when set, makes every dump
/// announce itself and wait for the test's go.
#[derive(Clone, Default)]
struct Table {
    links: Arc<Mutex<Links>>,
    gate: Arc<Mutex<Option<Gate>>>,
    dumps: Arc<Mutex<usize>>,
}

impl Table {
    fn set(&self, port: &str, bridged: Option<bool>) {
        let mut l = self.links.lock().expect("links");
        match bridged {
            Some(b) => l.insert(port.to_string(), b),
            None => l.remove(port),
        };
    }
}

impl Host for Table {
    fn links(&mut self) -> std::io::Result<Links> {
        *self.dumps.lock().expect("dumps") += 1;
        if let Some((entered, go)) = &*self.gate.lock().expect("gate") {
            let _ = entered.send(());
            let _ = go.recv();
        }
        Ok(self.links.lock().expect("links").clone())
    }
}

/// A state directory of its own, removed at the end.
struct Dirs(PathBuf);

impl Dirs {
    fn new(name: &str) -> Dirs {
        let d = std::env::temp_dir().join(format!("gw-reconciler-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Dirs(d)
    }
    fn store(&self) -> gw_store::Store {
        gw_store::Store::open(&self.0.join("etc"), &self.0.join("var"))
            .and_then(|s| s.with_runtime(&self.0.join("run")))
            .expect("store")
    }
    fn binding_file(&self, port: &str) -> PathBuf {
        self.0.join("var/bindings").join(format!("{port}.xml"))
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Rig {
    engine: Engine,
    kernel: SharedKernel,
    fake: Fake,
    host: Table,
}

fn rig(dirs: &Dirs) -> Rig {
    rig_with(dirs, Fake::default())
}

fn rig_with(dirs: &Dirs, fake: Fake) -> Rig {
    let host = Table::default();
    let kernel = Kernel::new(F, Box::new(fake.clone()));
    let engine =
        Engine::load(dirs.store(), kernel.clone(), Box::new(host.clone()), Default::default()).expect("engine");
    Rig { engine, kernel, fake, host }
}

fn json(port: &str, n: u8, filter: &str) -> String {
    format!(
        r#"{{"owner":{{"name":"g{n}","uuid":"5c6d49af-b071-6127-b4ec-6f8ed4b553{n:02x}"}},"portdev":"{port}","mac":"52:54:00:00:00:{n:02x}","filterref":{{"filter":"{filter}","params":{{"IP":["192.0.2.{n}"]}}}}}}"#
    )
}

const WEB: &str = "<filter name='web'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in'><tcp dstportstart='PORT'/></rule>
  <rule action='drop' direction='in'><tcp/></rule>
</filter>
";

impl Rig {
    fn ok(&mut self, event: Event) -> String {
        match self.engine.on(event) {
            Response::Ok { message, .. } => message,
            other => panic!("expected success, got {other:?}"),
        }
    }
    fn refused(&mut self, event: Event) -> ErrorCode {
        match self.engine.on(event) {
            Response::Error(e) => e.code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    fn bind(&mut self, port: &str, n: u8, filter: &str) {
        self.ok(Event::Request(Request::BindingCreate { document: json(port, n, filter), runtime: false }));
    }
    fn define(&mut self, xml: &str) {
        self.ok(Event::Request(Request::FilterDefine { xml: xml.into(), libvirt_quirks: false }));
    }
    fn last(&self) -> &'static str {
        kernel::lock(&self.kernel).last_transaction().unwrap_or("none")
    }
    /// The kernel holds exactly what loading the plan in memory whole gives.
    fn assert_kernel_is_the_plan(&self) {
        let plan = kernel::lock(&self.kernel).applied().expect("a plan is loaded");
        let mut want = FakeKernel::new();
        want.load(&plan);
        let have = self.fake.get();
        assert!(*have == want, "the kernel differs from the plan:\n{}\nwant:\n{}", have.dump(), want.dump());
    }
    fn elements(&self, family: Family) -> usize {
        self.fake.get().tables.get(&family).map_or(0, |t| t.sets.values().map(|s| s.elements.len()).sum())
    }
}

#[test]
fn start_up_into_empty_tables_is_a_split_load_and_each_change_after_it_the_smallest_transaction() {
    let dirs = Dirs::new("choice");
    let mut r = rig(&dirs);
    r.host.set("vnet1", Some(true));
    r.host.set("vnet2", Some(true));
    r.ok(Event::Reload("start-up"));
    assert_eq!(r.last(), "split", "nothing of ours is in the kernel: chains, then elements");
    r.assert_kernel_is_the_plan();

    r.bind("vnet1", 1, "clean-traffic");
    assert_eq!(r.last(), "update", "the first port of a filter brings its chains");
    r.assert_kernel_is_the_plan();
    r.bind("vnet2", 2, "clean-traffic");
    assert_eq!(r.last(), "elements", "a second port of a loaded filter is set elements only");
    r.assert_kernel_is_the_plan();

    r.ok(Event::Request(Request::BindingDelete { portdev: "vnet2".into() }));
    assert_eq!(r.last(), "elements");
    r.assert_kernel_is_the_plan();

    // A restart over the same store, with guestwall's tables still in the
    // kernel: one nft transaction replaces them (no flush first).
    let fake = r.fake.clone();
    drop(r);
    let mut again = rig_with(&dirs, fake);
    again.host.set("vnet1", Some(true));
    again.ok(Event::Reload("start-up"));
    assert_eq!(again.last(), "replace");
    again.assert_kernel_is_the_plan();
}

#[test]
fn a_port_that_does_not_exist_yet_is_filtered_in_both_families_until_it_joins_a_bridge() {
    let dirs = Dirs::new("absent");
    let mut r = rig(&dirs);
    // A routed tap of the same filter: it is planned in both families too
    // (a tap may be put on a bridge later), so the filter's chains are in
    // both tables and ports coming and going are set elements.
    r.host.set("tap7", Some(false));
    r.ok(Event::Reload("start-up"));
    r.bind("tap7", 7, "clean-traffic");
    let (bridge_before, inet_before) = (r.elements(Family::Bridge), r.elements(Family::Inet));
    r.bind("vnet0", 1, "clean-traffic");
    assert_eq!(r.last(), "elements");
    let (bridge_absent, inet_absent) = (r.elements(Family::Bridge), r.elements(Family::Inet));
    assert!(bridge_absent > bridge_before, "no bridge entries for a port that is not there yet");
    assert!(inet_absent > inet_before, "no inet entries for a port that is not there yet");
    r.assert_kernel_is_the_plan();

    // It joins a bridge: its inet entries go, as set elements.
    r.host.set("vnet0", Some(true));
    r.ok(Event::LinksChanged);
    assert_eq!(r.last(), "elements");
    assert_eq!(r.elements(Family::Inet), inet_before, "a bridge port keeps no inet entries");
    assert_eq!(r.elements(Family::Bridge), bridge_absent);
    r.assert_kernel_is_the_plan();

    // It goes away: filtered in both families again, before it comes back.
    r.host.set("vnet0", None);
    r.ok(Event::LinksChanged);
    assert_eq!(r.last(), "elements");
    assert_eq!((r.elements(Family::Bridge), r.elements(Family::Inet)), (bridge_absent, inet_absent));
    r.assert_kernel_is_the_plan();

    // An event that changes nothing runs no transaction.
    kernel::lock(&r.kernel).forget_last();
    assert_eq!(r.ok(Event::LinksChanged), "the kernel already matches");
    assert_eq!(r.last(), "none", "a transaction ran");
}

#[test]
fn redefining_a_filter_that_only_routed_ports_use_changes_only_its_chains() {
    let dirs = Dirs::new("routed");
    let mut r = rig(&dirs);
    r.host.set("tap1", Some(false));
    r.host.set("vnet9", Some(true));
    r.ok(Event::Reload("start-up"));
    r.bind("vnet9", 9, "clean-traffic");
    r.define(&WEB.replace("PORT", "80"));
    r.bind("tap1", 1, "web");
    let before = r.fake.get().clone();
    r.define(&WEB.replace("PORT", "443"));
    assert_eq!(r.last(), "update", "a redefinition is one nft transaction of its chains");
    r.assert_kernel_is_the_plan();
    let after = r.fake.get().clone();
    for (family, t) in &after.tables {
        let old = &before.tables[family];
        assert!(t.sets == old.sets, "{family:?}: set elements changed");
        assert_eq!(t.chains.keys().collect::<Vec<_>>(), old.chains.keys().collect::<Vec<_>>());
        for (name, c) in &t.chains {
            if *c != old.chains[name] {
                assert!(c.rules.iter().any(|r| r.contains("\"web#")), "{family:?}: chain {name} changed: {c:?}");
            }
        }
    }
}

#[test]
fn a_refused_transaction_changes_neither_the_kernel_nor_the_store() {
    let dirs = Dirs::new("refused");
    let mut r = rig(&dirs);
    r.host.set("vnet1", Some(true));
    r.host.set("vnet2", Some(true));
    r.host.set("vnet3", Some(true));
    r.ok(Event::Reload("start-up"));
    r.define(&WEB.replace("PORT", "80"));
    r.bind("vnet1", 1, "web");
    let web_file = dirs.0.join("etc/web.xml");
    let web_before = std::fs::read_to_string(&web_file).expect("web.xml");
    r.bind("vnet3", 3, "clean-traffic");
    let before = r.fake.get().clone();

    // An element batch the kernel refuses: a binding is not created.
    r.fake.get().refuse_commit = Some(Refused::NoSet("test".into()));
    let code = r.refused(Event::Request(Request::BindingCreate {
        document: json("vnet2", 2, "clean-traffic"),
        runtime: false,
    }));
    assert_eq!(code, ErrorCode::Kernel);
    assert!(*r.fake.get() == before, "the kernel changed");
    assert!(!dirs.binding_file("vnet2").exists(), "the refused binding's file stayed");
    match r.engine.on(Event::Request(Request::BindingList)) {
        Response::Bindings { bindings } => assert_eq!(bindings.len(), 2, "{bindings:?}"),
        other => panic!("{other:?}"),
    }

    // An nft transaction the kernel refuses: the filter stays as it was.
    r.fake.get().refuse_nft = Some(Refused::NoSet("test".into()));
    let code =
        r.refused(Event::Request(Request::FilterDefine { xml: WEB.replace("PORT", "8080"), libvirt_quirks: false }));
    assert_eq!(code, ErrorCode::Kernel);
    assert!(*r.fake.get() == before, "the kernel changed");
    assert_eq!(std::fs::read_to_string(&web_file).expect("web.xml"), web_before, "the filter's file changed");

    // Nothing of the refused attempts stayed behind (compile cache
    // included): the same requests now succeed, as the smallest transactions.
    r.bind("vnet2", 2, "clean-traffic");
    assert_eq!(r.last(), "elements");
    r.define(&WEB.replace("PORT", "8080"));
    r.assert_kernel_is_the_plan();
    assert!(dirs.binding_file("vnet2").exists());
}

#[test]
fn healing_after_a_flush_restores_the_loaded_plan_without_the_engine() {
    let dirs = Dirs::new("heal");
    let mut r = rig(&dirs);
    r.host.set("vnet1", Some(true));
    r.ok(Event::Reload("start-up"));
    r.bind("vnet1", 1, "clean-traffic");
    r.fake.get().tables.clear();
    kernel::lock(&r.kernel).heal(Heal::Deleted);
    assert_eq!(r.last(), "split");
    r.assert_kernel_is_the_plan();

    // Something edited our tables: restored whole, in one transaction.
    r.fake.get().tables.remove(&Family::Inet);
    kernel::lock(&r.kernel).heal(Heal::Changed);
    assert_eq!(r.last(), "replace");
    r.assert_kernel_is_the_plan();
}

#[test]
fn interface_events_coalesce_and_requests_are_answered_in_order() {
    let dirs = Dirs::new("inbox");
    let fake = Fake::default();
    let host = Table::default();
    let kernel = Kernel::new(F, Box::new(fake.clone()));
    let store = dirs.store();
    let (inbox, ready) = {
        let (kernel, host) = (kernel.clone(), host.clone());
        events::start(move || Engine::load(store, kernel, Box::new(host), Default::default())).expect("start")
    };
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let first = rt.block_on(ready).expect("ready").expect("loaded");
    assert!(matches!(first, Response::Ok { .. }), "{first:?}");
    let dumps_at_start = *host.dumps.lock().expect("dumps");

    let (entered_tx, entered) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    *host.gate.lock().expect("gate") = Some((entered_tx, go_rx));
    inbox.links_changed();
    entered.recv().expect("the reconciler handles the first event");
    // While it lists the links, a burst: one more event, not a hundred.
    for _ in 0..100 {
        inbox.links_changed();
    }
    go.send(()).expect("go");
    entered.recv().expect("the burst's one event");
    go.send(()).expect("go");
    // A binding for a port that does not exist lists the links once more.
    go.send(()).expect("go");
    let answer = rt.block_on(
        inbox.request(Request::BindingCreate { document: json("vnet5", 5, "clean-traffic"), runtime: false }),
    );
    assert!(matches!(answer, Response::Ok { .. }), "{answer:?}");
    let dumps = *host.dumps.lock().expect("dumps") - dumps_at_start;
    assert_eq!(dumps, 3, "two link events and one request's refresh, not {dumps}");
    // The request was handled after the events before it: its plan has
    // the port, and the kernel holds that plan.
    let plan = kernel::lock(&kernel).applied().expect("plan");
    assert!(plan.has_port("vnet5"));
    let mut want = FakeKernel::new();
    want.load(&plan);
    assert!(*fake.get() == want);
}

impl Rig {
    fn bind_runtime(&mut self, port: &str, n: u8) {
        self.ok(Event::Request(Request::BindingCreate { document: json(port, n, "clean-traffic"), runtime: true }));
    }
    fn ports(&mut self) -> Vec<String> {
        match self.engine.on(Event::Request(Request::BindingList)) {
            Response::Bindings { bindings } => bindings.into_iter().map(|b| b.portdev).collect(),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_runtime_binding_lives_as_long_as_its_port_and_is_never_passed_on() {
    let dirs = Dirs::new("runtime");
    let mut r = rig(&dirs);
    r.host.set("vnet0", Some(true));
    r.host.set("tap1", Some(true));
    r.ok(Event::Reload("start-up"));
    r.bind_runtime("vnet0", 1);
    r.bind("tap1", 2, "clean-traffic");
    assert!(dirs.0.join("run/bindings/vnet0.xml").exists(), "a runtime binding is kept under the runtime directory");
    assert!(dirs.binding_file("tap1").exists());
    // A runtime binding made before its port exists waits for it.
    r.bind_runtime("vnet7", 7);
    r.ok(Event::LinksChanged);
    assert_eq!(r.ports(), ["tap1", "vnet0", "vnet7"]);

    // Both ports go away (the guest crashed; nobody deleted the bindings):
    // the runtime binding goes with its port, the stored one stays.
    r.host.set("vnet0", None);
    r.host.set("tap1", None);
    r.ok(Event::LinksChanged);
    assert_eq!(r.ports(), ["tap1", "vnet7"]);
    assert!(!dirs.0.join("run/bindings/vnet0.xml").exists());
    r.assert_kernel_is_the_plan();
    // A new guest's interface of the same name gets its own binding, not
    // the old guest's.
    r.host.set("vnet0", Some(true));
    r.ok(Event::LinksChanged);
    r.bind_runtime("vnet0", 3);
    r.assert_kernel_is_the_plan();

    // vnet7 appears, then goes: its binding goes too.
    r.host.set("vnet7", Some(true));
    r.ok(Event::LinksChanged);
    r.host.set("vnet7", None);
    r.ok(Event::LinksChanged);
    assert_eq!(r.ports(), ["tap1", "vnet0"]);

    // A restart: runtime bindings whose ports went away while the daemon
    // was down are deleted at start-up; the others stay.
    let fake = r.fake.clone();
    drop(r);
    let mut again = rig_with(&dirs, fake.clone());
    again.host.set("tap1", Some(true));
    again.ok(Event::Reload("start-up"));
    assert_eq!(again.ports(), ["tap1"], "vnet0 went away while the daemon was down");
    drop(again);
    let mut third = rig_with(&dirs, fake);
    third.host.set("vnet0", Some(true));
    third.bind_runtime("vnet0", 4);
    drop(third);
    let mut fourth = rig_with(&dirs, Fake::default());
    fourth.host.set("vnet0", Some(true));
    fourth.ok(Event::Reload("start-up"));
    assert_eq!(fourth.ports(), ["tap1", "vnet0"]);
    fourth.assert_kernel_is_the_plan();
}
