//! Desired state and the events that change it: filters, bindings,
//! blocked ports, the host's links. [`Engine::on`] is the reconciler's
//! step: one event in, desired state checked in full (parse, resolve,
//! compile), then one plan handed to the kernel side as one transaction;
//! disk and kernel change together, or neither does.

use gw_api::{ApiError, BindingInfo, ErrorCode, FilterInfo, Request, Response};
use gw_builtins::{Library, Origin};
use gw_model::{Binding, Filter};
use gw_nft::{Features, Plan, PortInput};
use gw_store::{Lifetime, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use tracing::{error, info, warn};

use crate::events::Event;
use crate::kernel::{self, SharedKernel};
use crate::links::Host;

fn err(code: ErrorCode, msg: impl Into<String>) -> ApiError {
    ApiError { code, messages: vec![msg.into()] }
}

fn storage(e: StoreError) -> ApiError {
    err(ErrorCode::Storage, e.to_string())
}

/// The daemon's state.
pub struct Engine {
    /// Filters and bindings on disk (and the state directory's lock).
    store: Store,
    lib: Library,
    bindings: BTreeMap<String, Binding>,
    /// Ports whose bindings are runtime state (libvirt's, kept under /run):
    /// such a binding lives as long as its port, so that a guest whose
    /// port goes away without its binding being deleted (a crash) never
    /// passes it on to the next interface of that name.
    runtime: BTreeSet<String>,
    /// Runtime bindings' ports seen present since the binding was made
    /// (and those loaded at start-up, which existed before): when one of
    /// these is absent, its port went away.
    seen: BTreeSet<String>,
    /// Ports whose binding file could not be read, and why: they are
    /// blocked (every frame dropped) until the binding is deleted or
    /// created again.
    blocked: BTreeMap<String, String>,
    /// Warnings about other writers of the conntrack mark bits.
    mark_report: Arc<std::sync::Mutex<Vec<String>>>,
    features: Features,
    /// What is loaded, behind its own lock (the healer takes only that).
    kernel: SharedKernel,
    /// Compiled bindings for the current library, by port (cleared when the
    /// library changes): a request about one binding compiles only it.
    compiled: std::cell::RefCell<BTreeMap<String, (Binding, PortInput)>>,
    /// The host's interfaces, as of the last link event: listing 20,000 of
    /// them costs about 100 ms, too much to repeat for every request.
    links: crate::links::Links,
    /// Where the links come from.
    host: Box<dyn Host>,
}

/// Warnings for `status` when another writer of the packet mark may change
/// the conntrack state bits (br_netfilter mode only): packets the guard
/// dropped, and rules outside guestwall's tables that write the mark.
pub fn mark_report(features: Features) -> Vec<String> {
    let mut lines = Vec::new();
    if features.state != gw_nft::StateSource::BrNetfilterMark {
        return lines;
    }
    let mask = features.mark.mask();
    if let Some(n) = gw_nft::inspect::tamper_count().filter(|n| *n > 0) {
        lines.push(format!(
            "WARNING: {n} packet(s) dropped because another writer of the packet mark changed their conntrack state bits ({mask:#010x})"
        ));
    }
    for w in gw_nft::inspect::mark_writers(features.mark) {
        lines.push(format!(
            "WARNING: another writer of the packet mark may change the conntrack state bits {mask:#010x}: {w} (choose other bits with --ct-mark-mask)"
        ));
    }
    lines
}

fn yes(b: bool) -> &'static str {
    if b {
        "present"
    } else {
        "missing"
    }
}

fn random_uuid() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// Compiles bindings (with whether each port is routed) into their
/// planning inputs: each filter's template and DAG walk once, then the
/// bindings side by side on every core. Only the port's values are kept
/// (its whole program only if its filter cannot share chains): memory per
/// port stays small.
fn compile_all(lib: &Library, items: &[(&Binding, bool)]) -> Vec<Result<PortInput, gw_ir::BindError>> {
    type Template<'a> = (Arc<gw_ir::PortProgram>, gw_resolve::Prepared<'a>);
    let make = |b: &Binding| -> Result<Template, gw_ir::BindError> {
        Ok((Arc::new(gw_ir::template_of(lib, b)?), gw_ir::prepared(lib, b)?))
    };
    let mut templates: BTreeMap<&str, Option<Template>> = BTreeMap::new();
    for (b, _) in items {
        templates.entry(&b.filterref.filter).or_insert_with(|| make(b).ok());
    }
    let one = |(b, routed): &(&Binding, bool)| -> Result<PortInput, gw_ir::BindError> {
        let own;
        let (template, prepared) = match templates.get(b.filterref.filter.as_str()) {
            Some(Some(t)) => t,
            // The filter's template failed: this binding's attempt says why.
            _ => {
                own = make(b)?;
                &own
            }
        };
        let concrete = Arc::new(gw_ir::concrete_with(prepared, b)?.1);
        Ok(gw_nft::port_input(b.portdev.to_string(), b.filterref.filter.clone(), template.clone(), &concrete, *routed))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads < 2 || items.len() < 256 {
        return items.iter().map(one).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> =
            items.chunks(chunk).map(|c| s.spawn(move || c.iter().map(one).collect::<Vec<_>>())).collect();
        // A chunk whose worker panicked gives one error per binding, so the
        // results stay paired with their bindings.
        parts
            .into_iter()
            .zip(items.chunks(chunk))
            .flat_map(|(h, c)| {
                h.join().unwrap_or_else(|_| {
                    c.iter().map(|(b, _)| Err(gw_ir::BindError::Internal { port: b.portdev.to_string() })).collect()
                })
            })
            .collect()
    })
}

fn lifetime(runtime: bool) -> Lifetime {
    match runtime {
        true => Lifetime::Runtime,
        false => Lifetime::Persistent,
    }
}

fn parse_binding(doc: &str) -> Result<(Binding, Vec<String>), ApiError> {
    if doc.trim_start().starts_with('{') {
        let b: Binding = serde_json::from_str(doc)
            .map_err(|e| err(ErrorCode::Invalid, format!("{}:{}: {e}", e.line(), e.column())))?;
        b.check().map_err(|e| err(ErrorCode::Invalid, e.to_string()))?;
        return Ok((b, Vec::new()));
    }
    match gw_xml::read_binding(doc) {
        Ok(p) => Ok((p.value, p.quirks.iter().map(|q| q.to_string()).collect())),
        Err(e) => {
            Err(ApiError { code: ErrorCode::Invalid, messages: e.errors.iter().map(|d| d.to_string()).collect() })
        }
    }
}

impl Engine {
    /// Loads the stored filters and bindings (nothing is applied yet).
    /// `mark_report` is where the mark-bit report thread keeps its lines.
    pub fn load(
        store: Store,
        kernel: SharedKernel,
        host: Box<dyn Host>,
        mark_report: Arc<std::sync::Mutex<Vec<String>>>,
    ) -> anyhow::Result<Engine> {
        let features = kernel::lock(&kernel).features();
        // Nothing a file holds may stop start-up: a bad file is reported by
        // name and left out, and a port whose binding cannot be read or
        // compiled is blocked, never left unfiltered.
        let loaded = store.load()?;
        let filters = loaded.filters.iter().map(|e| match e {
            gw_store::Entry::Ok { path, text } => (path.clone(), Ok(text.clone())),
            gw_store::Entry::Bad { path, reason } => (path.clone(), Err(reason.clone())),
        });
        let (lib, problems) = Library::from_files(filters)?;
        for p in problems {
            match &p {
                gw_builtins::LoadError::Duplicate { second, .. } => match store.quarantine(second, &p.to_string()) {
                    Ok(to) => error!("{p}: {} moved to {}", second.display(), to.display()),
                    Err(e) => error!("{p}; {} is left out (moving it aside failed: {e})", second.display()),
                },
                _ => error!("{p}; this filter is left out, and ports bound to it are blocked"),
            }
        }
        let mut stale: BTreeMap<&Path, usize> = BTreeMap::new();
        for p in &loaded.removed_temps {
            *stale.entry(p.parent().unwrap_or(Path::new("."))).or_default() += 1;
        }
        for (d, n) in stale {
            info!("removed {n} stale temporary file(s) in {}", d.display());
        }
        for e in &loaded.temp_errors {
            warn!("cleaning temporary files: {e}");
        }
        if loaded.recovered > 0 {
            warn!(
                "{} binding file(s) written again from a batch journal (the daemon stopped before they were durable)",
                loaded.recovered
            );
        }
        for bad in &loaded.bad_journals {
            error!("{}: {}; not applied, moved to {}", bad.journal.display(), bad.reason, bad.moved_to.display());
        }
        for (path, q) in lib.quirks() {
            warn!("{}:{q}", path.display());
        }
        let mut bindings = BTreeMap::new();
        let mut blocked = BTreeMap::new();
        let mut runtime = BTreeSet::new();
        let persistent = loaded.bindings.into_iter().map(|b| (b, Lifetime::Persistent));
        for ((port, entry), lifetime) in
            persistent.chain(loaded.runtime_bindings.into_iter().map(|b| (b, Lifetime::Runtime)))
        {
            let path = entry.path().to_path_buf();
            let problem = match entry {
                gw_store::Entry::Bad { reason, .. } => reason,
                gw_store::Entry::Ok { text, .. } => match parse_binding(&text) {
                    Ok((b, _)) if b.portdev.as_str() == port => {
                        if lifetime == Lifetime::Runtime {
                            if bindings.contains_key(&port) {
                                warn!(
                                    "{}: port {port} has a stored binding too; this runtime one is used",
                                    path.display()
                                );
                            }
                            runtime.insert(port.clone());
                        }
                        bindings.insert(b.portdev.to_string(), b);
                        continue;
                    }
                    Ok((b, _)) => format!("it holds the binding of port '{}', not of '{port}'", b.portdev),
                    Err(e) => format!("not a valid binding: {}", e.messages.join("; ")),
                },
            };
            if gw_model::check_ifname(&port).is_ok() {
                error!(
                    "{}: {problem}; port {port} is blocked until its binding is deleted or created again",
                    path.display()
                );
                blocked.insert(port, problem);
            } else {
                error!("{}: {problem}; left out", path.display());
            }
        }
        info!(
            "loaded {} defined filter(s) and {} binding(s)",
            lib.iter().filter(|(_, o)| matches!(o, Origin::File(_))).count(),
            bindings.len()
        );
        Ok(Engine {
            store,
            lib,
            bindings,
            seen: runtime.clone(),
            runtime,
            blocked,
            mark_report,
            features,
            kernel,
            links: crate::links::Links::new(),
            host,
            compiled: Default::default(),
        })
    }

    /// The plan for these filters and bindings: ports that exist now.
    /// With `strict`, a binding that cannot be compiled is an error;
    /// without, it is logged and left out (start-up, port events).
    fn desired(&self, lib: &Library, bindings: &BTreeMap<String, Binding>, strict: bool) -> Result<Plan, ApiError> {
        self.desired_with(lib, bindings, strict, None).map(|(plan, _)| plan)
    }

    /// [`Engine::desired`] for a candidate library in which only filter
    /// `changed` differs from the current one: bindings whose filters never
    /// reach it keep their compiled inputs, and so do those whose filters'
    /// rules with variables are unchanged (only the shared chains change).
    /// Also returns the inputs made for the candidate (for the cache, once
    /// it is adopted).
    fn desired_with(
        &self,
        lib: &Library,
        bindings: &BTreeMap<String, Binding>,
        strict: bool,
        changed: Option<&str>,
    ) -> Result<(Plan, Vec<(Binding, PortInput)>), ApiError> {
        // The cache holds inputs compiled against self.lib only.
        let cached = std::ptr::eq(lib, &self.lib);
        // Per filter, not per binding: thousands of bindings share a few filters.
        let reach: std::cell::RefCell<BTreeMap<String, bool>> = Default::default();
        let unaffected = |b: &Binding| {
            changed.is_some_and(|c| {
                let f = &b.filterref.filter;
                if let Some(r) = reach.borrow().get(f) {
                    return !r;
                }
                let r = self.reaches(f, c);
                reach.borrow_mut().insert(f.clone(), r);
                !r
            })
        };
        let mut cache = self.compiled.borrow_mut();
        let t0 = std::time::Instant::now();
        let mut inputs = Vec::new();
        let mut fresh = Vec::new();
        let mut todo = Vec::new();
        let mut failed: Vec<&str> = Vec::new();
        let mut new_templates: BTreeMap<&str, Option<Arc<gw_ir::PortProgram>>> = BTreeMap::new();
        // Keyed by the templates' addresses, alive (in the cache and in
        // new_templates) for as long as this map.
        let mut fit: BTreeMap<(usize, usize), bool> = BTreeMap::new();
        for b in bindings.values() {
            // A port that does not exist (yet) is planned too, in both
            // families: its entries are keyed by name, so its first frame
            // is filtered, whether it appears on a bridge or as a routed
            // tap, before any link event is handled.
            let routed = self.links.get(b.portdev.as_str()).is_some_and(|bridged| !bridged);
            if let Some((cb, input)) = cache.get(b.portdev.as_str()).filter(|(cb, i)| cb == b && i.routed == routed) {
                if cached || unaffected(b) {
                    inputs.push(input.clone());
                    continue;
                }
                // A redefinition that left the rules with variables alone:
                // the port's values stay, only the template is new.
                if input.concrete.is_none() {
                    let t = new_templates
                        .entry(&b.filterref.filter)
                        .or_insert_with(|| gw_ir::template_of(lib, b).ok().map(Arc::new));
                    if let Some(t) = t.as_ref().filter(|t| gw_nft::shareable(t)) {
                        // Ports of one filter share its template: decide once per template.
                        let from = Arc::as_ptr(&input.template) as usize;
                        let fits = *fit
                            .entry((from, Arc::as_ptr(t) as usize))
                            .or_insert_with(|| gw_nft::PortValues::fit(&input.template, t));
                        if fits {
                            let kept = PortInput { template: t.clone(), ..input.clone() };
                            fresh.push((cb.clone(), kept.clone()));
                            inputs.push(kept);
                            continue;
                        }
                    }
                }
            }
            todo.push((b, routed));
        }
        tracing::debug!("{} compiled binding(s) reused in {:?}", inputs.len(), t0.elapsed());
        for ((b, _), compiled) in todo.iter().zip(compile_all(lib, &todo)) {
            match compiled {
                Ok(input) => {
                    if cached {
                        cache.insert(b.portdev.to_string(), ((*b).clone(), input.clone()));
                    } else {
                        fresh.push(((*b).clone(), input.clone()));
                    }
                    inputs.push(input);
                }
                Err(e) if strict => return Err(err(ErrorCode::Invalid, e.to_string())),
                Err(e) => {
                    error!("binding for {} cannot be compiled, its port is blocked: {e}", b.portdev);
                    failed.push(b.portdev.as_str());
                }
            }
        }
        // A port that is not a bridge port now (absent, or a tap not yet
        // on its bridge, as libvirt creates them) is planned in both
        // families: whichever it turns out to be, its first frame is
        // filtered, before any link event is handled.
        let both: Vec<PortInput> = inputs
            .iter()
            .filter(|i| self.links.get(&i.port) != Some(&true))
            .map(|i| PortInput { routed: !i.routed, ..i.clone() })
            .collect();
        inputs.extend(both);
        let t1 = std::time::Instant::now();
        let prev = self.applied();
        let mut plan = gw_nft::plan_from(&inputs, self.features, prev.as_deref())
            .map_err(|e| err(ErrorCode::Invalid, e.to_string()))?;
        plan.block(failed.into_iter().chain(self.blocked.keys().map(String::as_str)));
        tracing::debug!("{} binding(s) compiled by {:?}, planned in {:?}", todo.len(), t1 - t0, t1.elapsed());
        Ok((plan, fresh))
    }

    /// Loads `plan` (see [`Kernel::load_plan`]).
    fn load_plan(&self, plan: Plan) -> Result<String, ApiError> {
        kernel::lock(&self.kernel).load_plan(plan)
    }

    /// The plan in the kernel.
    fn applied(&self) -> Option<Arc<Plan>> {
        kernel::lock(&self.kernel).applied()
    }

    /// Whether `port` exists and is filtered.
    fn active(&self, applied: Option<&Plan>, port: &str) -> bool {
        self.links.contains_key(port) && applied.is_some_and(|p| p.has_port(port) && !p.is_blocked(port))
    }

    /// Lists the host's interfaces again.
    fn refresh_links(&mut self) -> Result<(), ApiError> {
        self.links = self.host.links().map_err(|e| err(ErrorCode::Kernel, format!("listing interfaces: {e}")))?;
        Ok(())
    }

    /// The reconciler's step: handles one event. Requests get their
    /// answer; the other events' outcome is logged (and returned for tests).
    pub fn on(&mut self, event: Event) -> Response {
        let r = match event {
            Event::Request(req) => self.dispatch(req),
            Event::LinksChanged => self.sync_ports(),
            Event::Reload(why) => self
                .apply_all(why)
                .map(|()| Response::Ok { message: format!("{why}: every binding applied"), warnings: Vec::new() })
                .inspect_err(|e| error!("{why}: {e}")),
        };
        r.unwrap_or_else(Response::Error)
    }

    /// Start-up and SIGHUP: replace guestwall's tables with the stored state
    /// in one transaction (no flush first, so no window).
    fn apply_all(&mut self, why: &str) -> Result<(), ApiError> {
        self.refresh_links()?;
        self.drop_gone_ports();
        let started = std::time::Instant::now();
        let plan = self.desired(&self.lib, &self.bindings, false)?;
        let planned = started.elapsed();
        let how = {
            let mut k = kernel::lock(&self.kernel);
            // A full replacement, in one transaction (no flush first).
            k.forget();
            k.load_plan(plan)?
        };
        info!(
            "{why}: {how}, done in {:?} ({} binding(s), {} active; planning took {planned:?})",
            started.elapsed(),
            self.bindings.len(),
            self.active_count(),
        );
        Ok(())
    }

    /// Deletes the runtime bindings whose ports went away (see
    /// [`Engine::runtime`]); the next plan leaves them out. Their ports are
    /// gone, so no port loses its filter.
    fn drop_gone_ports(&mut self) {
        let mut gone = Vec::new();
        for port in &self.runtime {
            match self.links.contains_key(port) {
                true => {
                    self.seen.insert(port.clone());
                }
                false if self.seen.contains(port) => gone.push(port.clone()),
                false => {}
            }
        }
        for port in gone {
            if let Err(e) = self.store.remove_binding(&port) {
                error!(
                    "port {port} went away, but removing its runtime binding's file failed: {e}; it is dropped anyway"
                );
            }
            let owner = self.bindings.remove(&port).map(|b| b.owner.name).unwrap_or_default();
            self.runtime.remove(&port);
            self.seen.remove(&port);
            self.compiled.borrow_mut().remove(&port);
            info!("port {port} went away: its runtime binding (guest {owner}) is deleted");
        }
    }

    /// How many bound ports exist and are filtered.
    fn active_count(&self) -> usize {
        let applied = self.applied();
        self.bindings.keys().filter(|p| self.active(applied.as_deref(), p)).count()
    }

    /// Ports came or went: bring the kernel in line.
    fn sync_ports(&mut self) -> Result<Response, ApiError> {
        let done = |m: String| Ok(Response::Ok { message: m, warnings: Vec::new() });
        if let Err(e) = self.refresh_links() {
            error!("interfaces changed, but listing them failed: {e}");
            return Err(e);
        }
        self.drop_gone_ports();
        let plan = self.desired(&self.lib, &self.bindings, false).inspect_err(|e| {
            error!("interfaces changed, but planning failed: {e}");
        })?;
        if self.applied().as_deref() == Some(&plan) {
            return done("the kernel already matches".into());
        }
        match self.load_plan(plan) {
            Ok(m) => {
                info!("interfaces changed: {m}");
                done(m)
            }
            Err(e) => {
                error!("interfaces changed, but loading failed: {e}");
                Err(e)
            }
        }
    }

    fn dispatch(&mut self, req: Request) -> Result<Response, ApiError> {
        match req {
            Request::FilterDefine { xml, libvirt_quirks } => self.define(&xml, libvirt_quirks),
            Request::FilterUndefine { name } => self.undefine(&name),
            Request::FilterList => Ok(Response::Filters {
                filters: self
                    .lib
                    .iter()
                    .map(|(f, o)| FilterInfo {
                        name: f.name.clone(),
                        origin: if matches!(o, Origin::Builtin) { "builtin".into() } else { "defined".into() },
                        chain: f.chain.clone(),
                        uuid: f.uuid.clone(),
                    })
                    .collect(),
            }),
            Request::FilterDumpxml { name } => match self.lib.get(&name) {
                Some((f, _)) => Ok(Response::Xml { xml: gw_xml::write_filter(f) }),
                None => Err(err(ErrorCode::NotFound, format!("no filter named '{name}'"))),
            },
            Request::BindingCreate { document, runtime } => self.bind(&[document], lifetime(runtime)),
            Request::BindingCreateBatch { documents, runtime } => self.bind(&documents, lifetime(runtime)),
            Request::BindingDelete { portdev } => {
                // Parsed where it comes in, like every port name.
                let port = gw_model::IfName::new(portdev).map_err(|e| err(ErrorCode::Invalid, e))?;
                self.unbind(&port)
            }
            Request::BindingList => Ok(Response::Bindings {
                bindings: {
                    let applied = self.applied();
                    self.bindings
                        .values()
                        .map(|b| BindingInfo {
                            portdev: b.portdev.to_string(),
                            filter: b.filterref.filter.clone(),
                            owner: b.owner.name.clone(),
                            active: self.active(applied.as_deref(), &b.portdev),
                        })
                        .collect()
                },
            }),
            Request::BindingDumpxml { portdev } => match self.bindings.get(&portdev) {
                Some(b) => Ok(Response::Xml { xml: gw_xml::write_binding(b) }),
                None => Err(err(ErrorCode::NotFound, format!("no binding for port '{portdev}'"))),
            },
            Request::Reload => {
                self.apply_all("reload requested")?;
                Ok(Response::Ok { message: "re-applied every binding".into(), warnings: Vec::new() })
            }
            Request::Status => Ok(Response::Status { lines: self.status() }),
        }
    }

    fn status(&self) -> Vec<String> {
        let mut lines = vec![
            self.features.describe(),
            format!(
                "{} binding(s), {} active, {} compiled binding(s) cached",
                self.bindings.len(),
                self.active_count(),
                self.compiled.borrow().len()
            ),
            {
                let mut k = kernel::lock(&self.kernel);
                let (b, i) = k.tables_present();
                let last = k.last_transaction().unwrap_or("none yet");
                format!("tables in the kernel: bridge {}, inet {}; last transaction: {last}", yes(b), yes(i))
            },
        ];
        for (port, why) in &self.blocked {
            lines.push(format!("port {port} is BLOCKED: its stored binding is unusable ({why})"));
        }
        lines.extend(self.mark_report.lock().map(|r| r.clone()).unwrap_or_default());
        lines
    }

    /// The bindings whose filter DAG contains `name`.
    fn users(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for b in self.bindings.values() {
            if self.reaches(&b.filterref.filter, name) {
                out.push(format!("binding {}", b.portdev));
            }
        }
        for (f, _) in self.lib.iter() {
            if f.name != name && f.references().any(|r| r == name) {
                out.push(format!("filter {}", f.name));
            }
        }
        out
    }

    fn reaches(&self, from: &str, target: &str) -> bool {
        gw_resolve::reaches(&self.lib, from, target)
    }

    fn define(&mut self, xml: &str, libvirt_quirks: bool) -> Result<Response, ApiError> {
        let parsed = gw_xml::read_filter(xml).map_err(|e| ApiError {
            code: ErrorCode::Invalid,
            messages: e.errors.iter().map(|d| d.to_string()).collect(),
        })?;
        let quirks: Vec<String> = parsed.quirks.iter().map(|q| q.to_string()).collect();
        if !quirks.is_empty() && !libvirt_quirks {
            let mut messages = quirks;
            messages.push("refused: libvirt would read this filter differently from how it is written (define with libvirt_quirks to accept libvirt's reading)".into());
            return Err(ApiError { code: ErrorCode::Invalid, messages });
        }
        let mut filter: Filter = parsed.value;
        if filter.uuid.is_none() {
            filter.uuid = Some(match self.lib.get(&filter.name) {
                Some((old, _)) if old.uuid.is_some() => old.uuid.clone().unwrap_or_default(),
                _ => random_uuid(),
            });
        }
        let name = filter.name.clone();
        // A UUID names one filter, as in libvirt (its clients look filters
        // up by UUID): a redefinition keeps its UUID, and no two share one.
        // UUIDs compare by value: a file may write one in capitals.
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let uuid = filter.uuid.clone().unwrap_or_default();
        if let Some(old) = self.lib.get(&name).and_then(|(f, _)| f.uuid.clone()).filter(|u| !same(u, &uuid)) {
            return Err(err(ErrorCode::Exists, format!("filter '{name}' already exists with uuid {old}")));
        }
        if let Some((other, _)) =
            self.lib.iter().find(|(f, _)| f.name != name && f.uuid.as_deref().is_some_and(|u| same(u, &uuid)))
        {
            return Err(err(
                ErrorCode::Exists,
                format!("filter with same UUID but different name ('{}') already exists", other.name),
            ));
        }
        // A filter read from a file of another name is redefined in that
        // file: a second file defining it would make two definitions.
        let origin = match self.lib.get(&name) {
            Some((_, Origin::File(p))) => Some(p.clone()),
            _ => None,
        };
        let path = self.store.filter_file(&name, origin.as_deref()).map_err(storage)?;
        let mut lib = self.lib.clone();
        lib.insert(filter.clone(), Origin::File(path));
        if let Err(
            e @ (gw_resolve::ResolveError::Cycle { .. }
            | gw_resolve::ResolveError::TooDeep { .. }
            | gw_resolve::ResolveError::DagTooLarge { .. }),
        ) = gw_resolve::check_references(&lib, &filter)
        {
            return Err(err(ErrorCode::Invalid, e.to_string()));
        }
        // Every binding must still compile: a change that does not is refused.
        let (plan, fresh) = self.desired_with(&lib, &self.bindings, true, Some(&name))?;
        let affected: Vec<String> = self
            .bindings
            .values()
            .filter(|b| self.reaches(&b.filterref.filter, &name))
            .map(|b| b.portdev.to_string())
            .collect();
        let written = self
            .store
            .put_filter(&name, gw_xml::write_filter(&filter).as_bytes(), origin.as_deref())
            .map_err(storage)?;
        match self.load_plan(plan) {
            Ok(m) => {
                written.keep();
                self.lib = lib;
                let mut cache = self.compiled.borrow_mut();
                for port in &affected {
                    cache.remove(port);
                }
                for (b, input) in fresh {
                    cache.insert(b.portdev.to_string(), (b, input));
                }
                drop(cache);
                info!("filter {name} defined ({} binding(s) use it): {m}", affected.len());
                Ok(Response::Ok {
                    message: format!("filter {name} defined ({m})"),
                    warnings: parsed.quirks.iter().map(|q| q.to_string()).collect(),
                })
            }
            Err(e) => {
                if let Err(u) = written.undo() {
                    error!("putting back filter {name}'s file after the kernel refused it failed: {u}");
                }
                Err(e)
            }
        }
    }

    fn undefine(&mut self, name: &str) -> Result<Response, ApiError> {
        let origin = match self.lib.get(name) {
            None => return Err(err(ErrorCode::NotFound, format!("no filter named '{name}'"))),
            Some((_, Origin::Builtin)) => {
                return Err(err(ErrorCode::InUse, format!("'{name}' is a built-in filter and cannot be undefined")))
            }
            Some((_, Origin::File(p))) => p.clone(),
        };
        let users = self.users(name);
        if !users.is_empty() {
            return Err(ApiError {
                code: ErrorCode::InUse,
                messages: vec![format!("filter '{name}' is in use by: {}", users.join(", "))],
            });
        }
        self.store.remove_filter(name, Some(&origin)).map_err(storage)?;
        self.lib = Library::with_dir(self.store.config_dir()).map_err(|e| err(ErrorCode::Storage, e.to_string()))?;
        self.compiled.borrow_mut().clear();
        info!("filter {name} undefined");
        Ok(Response::Ok { message: format!("filter {name} undefined"), warnings: Vec::new() })
    }

    fn bind(&mut self, documents: &[String], lifetime: Lifetime) -> Result<Response, ApiError> {
        let mut tried = Vec::new();
        let r = self.bind_all(documents, lifetime, &mut tried);
        if r.is_err() {
            // What a refused request compiled must not stay in the cache.
            let mut cache = self.compiled.borrow_mut();
            for port in tried.iter().filter(|p| !self.bindings.contains_key(*p)) {
                cache.remove(port);
            }
        }
        r
    }

    fn bind_all(
        &mut self,
        documents: &[String],
        lifetime: Lifetime,
        tried: &mut Vec<String>,
    ) -> Result<Response, ApiError> {
        let t0 = std::time::Instant::now();
        let mut bindings = self.bindings.clone();
        let mut added = Vec::new();
        let mut warnings = Vec::new();
        let mut parsed = Vec::new();
        for document in documents {
            let (b, w) = parse_binding(document)?;
            warnings.extend(w);
            let port = b.portdev.to_string();
            if bindings.contains_key(&port) {
                return Err(err(ErrorCode::Exists, format!("port {port} is already bound (delete its binding first)")));
            }
            if self.lib.get(&b.filterref.filter).is_none() {
                return Err(err(ErrorCode::NotFound, format!("port {port}: unknown filter '{}'", b.filterref.filter)));
            }
            bindings.insert(port.clone(), b.clone());
            parsed.push(b);
        }
        // Compile them even when their ports do not exist yet, so errors show
        // now; planning reuses the results.
        // Ports may have appeared since the last link event was handled.
        if parsed.iter().any(|b| !self.links.contains_key(b.portdev.as_str())) {
            self.refresh_links()?;
        }
        let links = &self.links;
        let items: Vec<(&Binding, bool)> =
            parsed.iter().map(|b| (b, links.get(b.portdev.as_str()).is_some_and(|bridged| !bridged))).collect();
        let t1 = std::time::Instant::now();
        let compiled = compile_all(&self.lib, &items);
        tracing::debug!("parsed {} binding(s) in {:?}, compiled in {:?}", items.len(), t1 - t0, t1.elapsed());
        for (b, input) in parsed.iter().zip(compiled) {
            let input = input.map_err(|e| err(ErrorCode::Invalid, e.to_string()))?;
            tried.push(b.portdev.to_string());
            self.compiled.borrow_mut().insert(b.portdev.to_string(), (b.clone(), input));
        }
        added.extend(parsed);
        let plan = self.desired(&self.lib, &bindings, true)?;
        let files: Vec<(&str, String)> = added.iter().map(|b| (b.portdev.as_str(), gw_xml::write_binding(b))).collect();
        let t0 = std::time::Instant::now();
        // Large batches: one journal file made durable, the files later. A
        // failed store has undone itself (nothing of the batch is left,
        // journal included, so nothing comes back after a restart).
        let batch = self.store.put_bindings(&files, lifetime).map_err(storage)?;
        tracing::debug!("{} binding file(s) made durable in {:?}", batch.len(), t0.elapsed());
        match self.load_plan(plan) {
            Ok(m) => {
                self.bindings = bindings;
                for b in &added {
                    let port = b.portdev.as_str();
                    self.blocked.remove(port);
                    if lifetime == Lifetime::Runtime {
                        self.runtime.insert(port.to_string());
                        if self.links.contains_key(port) {
                            self.seen.insert(port.to_string());
                        }
                    }
                }
                let message = if let [b] = added.as_slice() {
                    let port = &b.portdev;
                    let active = self.active(self.applied().as_deref(), port);
                    let state = if active { "active" } else { "waiting for the interface" };
                    info!("binding {port} -> {} created, {state}: {m}", b.filterref.filter);
                    format!("binding for {port} created, {state}")
                } else {
                    info!("{} bindings created: {m}", added.len());
                    format!("{} bindings created ({m})", added.len())
                };
                // Durable already (each file, or the journal); a journal's files follow.
                let _ = batch.settle(|e| {
                    warn!("making a batch's binding files durable failed ({e}); its journal stays for recovery")
                });
                Ok(Response::Ok { message, warnings })
            }
            Err(e) => {
                // The files first, the journal last: recovery must not bring them back.
                if let Err(u) = batch.undo() {
                    error!("removing the files of a refused batch failed: {u}");
                }
                Err(e)
            }
        }
    }

    fn unbind(&mut self, port: &str) -> Result<Response, ApiError> {
        if let Some(why) = self.blocked.remove(port) {
            // A blocked port's bad file goes with it.
            let r = self.desired(&self.lib, &self.bindings, false).and_then(|plan| {
                self.store.remove_binding(port).map_err(storage)?;
                self.load_plan(plan)
            });
            return match r {
                Ok(_) => {
                    info!("blocked port {port} ({why}) unblocked: its binding file was deleted");
                    Ok(Response::Ok {
                        message: format!("binding for {port} deleted (it was blocked: {why})"),
                        warnings: Vec::new(),
                    })
                }
                Err(e) => {
                    self.blocked.insert(port.to_string(), why);
                    Err(e)
                }
            };
        }
        let Some(b) = self.bindings.get(port).cloned() else {
            return Err(err(ErrorCode::NotFound, format!("no binding for port '{port}'")));
        };
        let mut bindings = self.bindings.clone();
        bindings.remove(port);
        let plan = self.desired(&self.lib, &bindings, false)?;
        // Settles the journals first: one naming this binding must not outlive its file.
        self.store.remove_binding(port).map_err(storage)?;
        match self.load_plan(plan) {
            Ok(m) => {
                self.bindings = bindings;
                self.seen.remove(port);
                self.runtime.remove(port);
                info!("binding {port} deleted: {m}");
                Ok(Response::Ok { message: format!("binding for {port} deleted"), warnings: Vec::new() })
            }
            Err(e) => {
                let kept = lifetime(self.runtime.contains(port));
                if let Err(u) = self.store.put_binding(port, gw_xml::write_binding(&b).as_bytes(), kept) {
                    error!("putting back the binding of {port} after the kernel refused its removal failed: {u}");
                }
                Err(e)
            }
        }
    }
}
