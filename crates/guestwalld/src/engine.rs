//! The daemon's state and what changes it: filters, bindings, the plan in
//! the kernel. Every change is checked in full (parse, resolve, compile)
//! before anything is written or loaded; disk and kernel then change
//! together, or neither does.

use gw_api::{ApiError, BindingInfo, ErrorCode, FilterInfo, Request, Response};
use gw_builtins::{Library, Origin};
use gw_model::{Binding, Filter};
use gw_nft::{Features, Plan, PortInput};
use gw_store::{list, remove_durable, write_atomic};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{error, info, warn};

fn err(code: ErrorCode, msg: impl Into<String>) -> ApiError {
    ApiError { code, messages: vec![msg.into()] }
}

/// The daemon's state.
pub struct Engine {
    config_dir: PathBuf,
    state_dir: PathBuf,
    lib: Library,
    bindings: BTreeMap<String, Binding>,
    features: Features,
    applied: Option<Plan>,
    /// Compiled bindings for the current library, by port (cleared when the
    /// library changes): a request about one binding compiles only it.
    compiled: std::cell::RefCell<BTreeMap<String, (Binding, PortInput)>>,
    /// The host's interfaces, as of the last link event: listing 20,000 of
    /// them costs about 100 ms, too much to repeat for every request.
    links: crate::links::Links,
    /// Set while healing a deletion seen in the events (see `heal`).
    known_absent: bool,
}

/// Why the daemon heals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heal {
    /// Another process deleted guestwall's tables (and did nothing else to them).
    Deleted,
    /// Another process changed them otherwise.
    Changed,
    /// Events were lost.
    Lost,
}

/// Batches of at least this many bindings are stored through a journal
/// (`gw_store::write_journaled`): one fsync instead of a `syncfs` of
/// thousands of new files.
const JOURNAL_FROM: usize = 64;

/// Element changes above this size are committed without per-element
/// events (see `gw_nft::netlink::commit_quietly`).
const QUIET_ABOVE: usize = 1000;

fn count(changes: &[gw_nft::netlink::SetChange]) -> usize {
    changes.iter().map(|c| c.elements.len()).sum()
}

/// Which of guestwall's two tables are in the kernel.
fn tables_present() -> (bool, bool) {
    use gw_nft::netlink::{table_exists, FAMILY_BRIDGE, FAMILY_INET};
    // An error asking counts as present: a full load replaces them anyway.
    let ask = |f| table_exists(f, gw_nft::TABLE).unwrap_or(true);
    (ask(FAMILY_BRIDGE), ask(FAMILY_INET))
}

fn yes(b: bool) -> &'static str {
    if b {
        "present"
    } else {
        "missing"
    }
}

fn random_uuid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
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
        Ok(gw_nft::port_input(b.portdev.clone(), b.filterref.filter.clone(), template.clone(), &concrete, *routed))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads < 2 || items.len() < 256 {
        return items.iter().map(one).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> =
            items.chunks(chunk).map(|c| s.spawn(move || c.iter().map(one).collect::<Vec<_>>())).collect();
        parts.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

fn parse_binding(doc: &str) -> Result<(Binding, Vec<String>), ApiError> {
    if doc.trim_start().starts_with('{') {
        let b: Binding = serde_json::from_str(doc)
            .map_err(|e| err(ErrorCode::Invalid, format!("{}:{}: {e}", e.line(), e.column())))?;
        gw_model::check_ifname(&b.portdev).map_err(|e| err(ErrorCode::Invalid, format!("portdev: {e}")))?;
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
    pub fn load(config_dir: &Path, state_dir: &Path, features: Features) -> anyhow::Result<Engine> {
        std::fs::create_dir_all(config_dir)?;
        std::fs::create_dir_all(state_dir.join("bindings"))?;
        let lib = Library::with_dir(config_dir)?;
        let recovered = gw_store::recover(&state_dir.join("bindings"))?;
        if recovered > 0 {
            warn!("{recovered} binding file(s) written again from a batch journal (the daemon stopped before they were durable)");
        }
        for (path, q) in lib.quirks() {
            warn!("{}:{q}", path.display());
        }
        let mut bindings = BTreeMap::new();
        for path in list(&state_dir.join("bindings"), "xml")? {
            let text = std::fs::read_to_string(&path)?;
            match parse_binding(&text) {
                Ok((b, _)) => {
                    bindings.insert(b.portdev.clone(), b);
                }
                Err(e) => error!("{}: skipped, not a valid binding: {e}", path.display()),
            }
        }
        info!(
            "loaded {} defined filter(s) and {} binding(s)",
            lib.iter().filter(|(_, o)| matches!(o, Origin::File(_))).count(),
            bindings.len()
        );
        Ok(Engine {
            config_dir: config_dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            lib,
            bindings,
            features,
            applied: None,
            links: crate::links::Links::new(),
            known_absent: false,
            compiled: Default::default(),
        })
    }

    fn binding_path(&self, port: &str) -> PathBuf {
        self.state_dir.join("bindings").join(format!("{port}.xml"))
    }

    fn filter_path(&self, name: &str) -> PathBuf {
        self.config_dir.join(format!("{name}.xml"))
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
                let r = self.reaches(f, c, &mut Vec::new());
                reach.borrow_mut().insert(f.clone(), r);
                !r
            })
        };
        let mut cache = self.compiled.borrow_mut();
        let t0 = std::time::Instant::now();
        let mut inputs = Vec::new();
        let mut fresh = Vec::new();
        let mut todo = Vec::new();
        let mut new_templates: BTreeMap<&str, Option<Arc<gw_ir::PortProgram>>> = BTreeMap::new();
        // Keyed by the templates' addresses, alive (in the cache and in
        // new_templates) for as long as this map.
        let mut fit: BTreeMap<(usize, usize), bool> = BTreeMap::new();
        for b in bindings.values() {
            let Some(bridged) = self.links.get(&b.portdev) else {
                continue;
            };
            let routed = !bridged;
            if let Some((cb, input)) = cache.get(&b.portdev).filter(|(cb, i)| cb == b && i.routed == routed) {
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
                        cache.insert(b.portdev.clone(), ((*b).clone(), input.clone()));
                    } else {
                        fresh.push(((*b).clone(), input.clone()));
                    }
                    inputs.push(input);
                }
                Err(e) if strict => return Err(err(ErrorCode::Invalid, e.to_string())),
                Err(e) => error!("binding for {} left out: {e}", b.portdev),
            }
        }
        let t1 = std::time::Instant::now();
        let plan = gw_nft::plan_from(&inputs, self.features, self.applied.as_ref())
            .map_err(|e| err(ErrorCode::Invalid, e.to_string()))?;
        tracing::debug!("{} binding(s) compiled by {:?}, planned in {:?}", todo.len(), t1 - t0, t1.elapsed());
        Ok((plan, fresh))
    }

    /// Loads `plan` into the kernel: only what changed since the last plan,
    /// in one transaction. Ports coming and going under filters already
    /// loaded are set elements, written by netlink (its cost is the change,
    /// not the ruleset); everything else is nft text.
    fn load_plan(&mut self, plan: Plan) -> Result<String, ApiError> {
        let t0 = std::time::Instant::now();
        let kernel = |e: &dyn std::fmt::Display| err(ErrorCode::Kernel, e.to_string());
        let mut foreign = false;
        let changes = self.applied.as_ref().and_then(|old| plan.element_changes(old));
        // Only worth three steps when many elements would go through nft.
        let staged = match (&self.applied, &changes) {
            (Some(old), None) => plan.staged_update(old).filter(|st| count(&st.elements) > QUIET_ABOVE),
            _ => None,
        };
        let message = match &self.applied {
            Some(old) => match (changes, staged) {
                (Some(changes), _) if changes.is_empty() => return Ok("the kernel already matches".into()),
                (Some(changes), _) => {
                    let n = count(&changes);
                    if n > QUIET_ABOVE {
                        foreign = gw_nft::netlink::commit_quietly(&changes).map_err(|e| kernel(&e))?;
                    } else {
                        gw_nft::netlink::commit(&changes).map_err(|e| kernel(&e))?;
                    }
                    format!("one transaction of {n} set element change(s)")
                }
                (None, Some(st)) => {
                    let n = count(&st.elements);
                    gw_nft::run_nft(&st.before, false).map_err(|e| kernel(&e))?;
                    match gw_nft::netlink::commit_quietly(&st.elements) {
                        Ok(f) => foreign = f,
                        Err(e) => {
                            // Put back exactly what was loaded (without the new,
                            // unused chains) before reporting.
                            if let Err(e2) = gw_nft::run_nft(&old.render_full(), false) {
                                error!("restoring the previous rules failed too: {e2}");
                            }
                            return Err(kernel(&e));
                        }
                    }
                    if !st.after.is_empty() {
                        if let Err(e) = gw_nft::run_nft(&st.after, false) {
                            warn!("removing chains no port uses failed ({e}); the next full load removes them");
                        }
                    }
                    format!("new chains, then one transaction of {n} set element change(s)")
                }
                (None, None) => {
                    let script = plan.render_update(old);
                    if script.is_empty() {
                        return Ok("the kernel already matches".into());
                    }
                    gw_nft::run_nft(&script, false).map_err(|e| kernel(&e))?;
                    format!("one transaction of {} line(s)", script.lines().filter(|l| !l.starts_with('#')).count())
                }
            },
            None => {
                let (message, f) = self.load_full(&plan)?;
                foreign = f;
                message
            }
        };
        tracing::debug!("loaded in {:?}: {message}", t0.elapsed());
        self.applied = Some(plan);
        if foreign {
            // Their events were not seen: at least make sure our tables are there.
            self.heal(Heal::Lost);
        }
        Ok(message)
    }

    /// Replaces guestwall's tables with `plan`. When they are absent (boot,
    /// or after a flush) nothing is filtered yet, and the load is split:
    /// chains and empty sets by nft, then every element in one netlink
    /// transaction, which costs a fraction of nft parsing them. When they
    /// are present, one nft transaction replaces them: no instant without
    /// filtering.
    fn load_full(&self, plan: &Plan) -> Result<(String, bool), ApiError> {
        let kernel = |e: &dyn std::fmt::Display| err(ErrorCode::Kernel, e.to_string());
        if self.known_absent || tables_present() == (false, false) {
            let t0 = std::time::Instant::now();
            if let Some(elements) = plan.all_elements() {
                let t1 = std::time::Instant::now();
                gw_nft::run_nft(&plan.render_skeleton(), false).map_err(|e| kernel(&e))?;
                let t2 = std::time::Instant::now();
                let r = gw_nft::netlink::commit_quietly(&elements);
                tracing::debug!("elements {:?}, skeleton {:?}, netlink {:?}", t1 - t0, t2 - t1, t2.elapsed());
                match r {
                    Ok(foreign) => {
                        let n = count(&elements);
                        return Ok((format!("tables created, then {n} set element(s) in one transaction"), foreign));
                    }
                    Err(e) => warn!("writing set elements by netlink failed ({e}); loading them as nft text"),
                }
            }
        }
        gw_nft::run_nft(&plan.render_full(), false).map_err(|e| kernel(&e))?;
        Ok(("tables replaced in one transaction".into(), false))
    }

    /// Lists the host's interfaces again.
    fn refresh_links(&mut self) -> Result<(), ApiError> {
        self.links = crate::links::dump().map_err(|e| err(ErrorCode::Kernel, format!("listing interfaces: {e}")))?;
        Ok(())
    }

    /// Start-up and SIGHUP: replace guestwall's tables with the stored state
    /// in one transaction (no flush first, so no window).
    pub fn apply_all(&mut self, why: &str) -> Result<(), ApiError> {
        self.refresh_links()?;
        self.replace_tables(why, false)
    }

    /// Replaces guestwall's tables; with `reuse`, with the plan already in
    /// memory (healing: what we loaded is still what we want).
    fn replace_tables(&mut self, why: &str, reuse: bool) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        let plan = match self.applied.take() {
            Some(p) if reuse => p,
            _ => self.desired(&self.lib, &self.bindings, false)?,
        };
        let planned = started.elapsed();
        let how = self.load_plan(plan)?;
        info!(
            "{why}: {how}, done in {:?} ({} binding(s), {} active; planning took {planned:?})",
            started.elapsed(),
            self.bindings.len(),
            self.applied.as_ref().map_or(0, |p| p.port_count()),
        );
        Ok(())
    }

    /// Ports came or went: bring the kernel in line.
    pub fn sync_ports(&mut self) {
        if let Err(e) = self.refresh_links() {
            error!("interfaces changed, but listing them failed: {e}");
            return;
        }
        match self.desired(&self.lib, &self.bindings, false) {
            Ok(plan) => {
                if self.applied.as_ref() != Some(&plan) {
                    match self.load_plan(plan) {
                        Ok(m) => info!("interfaces changed: {m}"),
                        Err(e) => error!("interfaces changed, but loading failed: {e}"),
                    }
                }
            }
            Err(e) => error!("interfaces changed, but planning failed: {e}"),
        }
    }

    /// Another process changed guestwall's tables (`lost`: events were
    /// lost, so it may have): restore them. A lost-events alarm with both
    /// tables present is only logged, since re-loading costs O(ruleset).
    pub fn heal(&mut self, why: Heal) {
        if why == Heal::Lost {
            if tables_present() == (true, true) {
                warn!("nftables events were lost; guestwall's tables are present, left as they are");
                return;
            }
            warn!("nftables events were lost and guestwall's tables are gone: restoring them");
        } else {
            warn!("another process changed guestwall's tables: restoring them");
        }
        let started = std::time::Instant::now();
        // Deleted: nothing of ours filters now, so the fast split load needs
        // no question to the kernel (which is busy freeing what was deleted).
        self.known_absent = why == Heal::Deleted;
        let r = self.replace_tables("healing", true);
        self.known_absent = false;
        match r {
            Ok(()) => info!("restored in {:?}", started.elapsed()),
            Err(e) => error!("could not restore the rules: {e}"),
        }
    }

    /// Answers one request.
    pub fn handle(&mut self, req: Request) -> Response {
        match self.dispatch(req) {
            Ok(r) => r,
            Err(e) => Response::Error(e),
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
            Request::BindingCreate { document } => self.bind(&[document]),
            Request::BindingCreateBatch { documents } => self.bind(&documents),
            Request::BindingDelete { portdev } => self.unbind(&portdev),
            Request::BindingList => Ok(Response::Bindings {
                bindings: self
                    .bindings
                    .values()
                    .map(|b| BindingInfo {
                        portdev: b.portdev.clone(),
                        filter: b.filterref.filter.clone(),
                        owner: b.owner.name.clone(),
                        active: self.applied.as_ref().is_some_and(|p| p.has_port(&b.portdev)),
                    })
                    .collect(),
            }),
            Request::BindingDumpxml { portdev } => match self.bindings.get(&portdev) {
                Some(b) => Ok(Response::Xml { xml: gw_xml::write_binding(b) }),
                None => Err(err(ErrorCode::NotFound, format!("no binding for port '{portdev}'"))),
            },
            Request::Reload => {
                self.apply_all("reload requested")?;
                Ok(Response::Ok { message: "re-applied every binding".into(), warnings: Vec::new() })
            }
            Request::Status => Ok(Response::Status {
                lines: vec![
                    self.features.describe(),
                    format!(
                        "{} binding(s), {} active",
                        self.bindings.len(),
                        self.applied.as_ref().map_or(0, |p| p.port_count())
                    ),
                    {
                        let (b, i) = tables_present();
                        format!("tables in the kernel: bridge {}, inet {}", yes(b), yes(i))
                    },
                ],
            }),
        }
    }

    /// The bindings whose filter DAG contains `name`.
    fn users(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for b in self.bindings.values() {
            if self.reaches(&b.filterref.filter, name, &mut Vec::new()) {
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

    fn reaches(&self, from: &str, target: &str, seen: &mut Vec<String>) -> bool {
        if from == target {
            return true;
        }
        if seen.iter().any(|s| s == from) {
            return false;
        }
        seen.push(from.to_string());
        let Some((f, _)) = self.lib.get(from) else { return false };
        f.references().any(|r| self.reaches(r, target, seen))
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
        let path = self.filter_path(&name);
        let mut lib = self.lib.clone();
        lib.insert(filter.clone(), Origin::File(path.clone()));
        if let Err(e @ gw_resolve::ResolveError::Cycle { .. }) = gw_resolve::check_references(&lib, &filter) {
            return Err(err(ErrorCode::Invalid, e.to_string()));
        }
        // Every binding must still compile: a change that does not is refused.
        let (plan, fresh) = self.desired_with(&lib, &self.bindings, true, Some(&name))?;
        let affected: Vec<String> = self
            .bindings
            .values()
            .filter(|b| self.reaches(&b.filterref.filter, &name, &mut Vec::new()))
            .map(|b| b.portdev.clone())
            .collect();
        let old_text = std::fs::read(&path).ok();
        write_atomic(&path, gw_xml::write_filter(&filter).as_bytes())
            .map_err(|e| err(ErrorCode::Storage, e.to_string()))?;
        match self.load_plan(plan) {
            Ok(m) => {
                self.lib = lib;
                let mut cache = self.compiled.borrow_mut();
                for port in &affected {
                    cache.remove(port);
                }
                for (b, input) in fresh {
                    cache.insert(b.portdev.clone(), (b, input));
                }
                drop(cache);
                info!("filter {name} defined ({} binding(s) use it): {m}", affected.len());
                Ok(Response::Ok {
                    message: format!("filter {name} defined ({m})"),
                    warnings: parsed.quirks.iter().map(|q| q.to_string()).collect(),
                })
            }
            Err(e) => {
                let _ = match old_text {
                    Some(t) => write_atomic(&path, &t),
                    None => remove_durable(&path),
                };
                Err(e)
            }
        }
    }

    fn undefine(&mut self, name: &str) -> Result<Response, ApiError> {
        match self.lib.get(name) {
            None => return Err(err(ErrorCode::NotFound, format!("no filter named '{name}'"))),
            Some((_, Origin::Builtin)) => {
                return Err(err(ErrorCode::InUse, format!("'{name}' is a built-in filter and cannot be undefined")))
            }
            Some(_) => {}
        }
        let users = self.users(name);
        if !users.is_empty() {
            return Err(ApiError {
                code: ErrorCode::InUse,
                messages: vec![format!("filter '{name}' is in use by: {}", users.join(", "))],
            });
        }
        let path = self.filter_path(name);
        remove_durable(&path).map_err(|e| err(ErrorCode::Storage, e.to_string()))?;
        self.lib = Library::with_dir(&self.config_dir).map_err(|e| err(ErrorCode::Storage, e.to_string()))?;
        self.compiled.borrow_mut().clear();
        info!("filter {name} undefined");
        Ok(Response::Ok { message: format!("filter {name} undefined"), warnings: Vec::new() })
    }

    fn bind(&mut self, documents: &[String]) -> Result<Response, ApiError> {
        let t0 = std::time::Instant::now();
        let mut bindings = self.bindings.clone();
        let mut added = Vec::new();
        let mut warnings = Vec::new();
        let mut parsed = Vec::new();
        for document in documents {
            let (b, w) = parse_binding(document)?;
            warnings.extend(w);
            let port = b.portdev.clone();
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
        if parsed.iter().any(|b| !self.links.contains_key(&b.portdev)) {
            self.refresh_links()?;
        }
        let links = &self.links;
        let items: Vec<(&Binding, bool)> =
            parsed.iter().map(|b| (b, links.get(&b.portdev).is_some_and(|bridged| !bridged))).collect();
        let t1 = std::time::Instant::now();
        let compiled = compile_all(&self.lib, &items);
        tracing::debug!("parsed {} binding(s) in {:?}, compiled in {:?}", items.len(), t1 - t0, t1.elapsed());
        for (b, input) in parsed.iter().zip(compiled) {
            let input = input.map_err(|e| err(ErrorCode::Invalid, e.to_string()))?;
            self.compiled.borrow_mut().insert(b.portdev.clone(), (b.clone(), input));
        }
        added.extend(parsed);
        let plan = self.desired(&self.lib, &bindings, true)?;
        let files: Vec<(PathBuf, Vec<u8>)> =
            added.iter().map(|b| (self.binding_path(&b.portdev), gw_xml::write_binding(b).into_bytes())).collect();
        let written: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
        let t0 = std::time::Instant::now();
        let dir = self.state_dir.join("bindings");
        // Large batches: one journal file made durable, the files later.
        let mut journal = None;
        let stored = if files.len() >= JOURNAL_FROM {
            gw_store::write_journaled(&dir, &files).map(|j| journal = Some(j))
        } else {
            gw_store::write_many(&files)
        };
        tracing::debug!("{} binding file(s) made durable in {:?}", files.len(), t0.elapsed());
        // Undoing a batch removes its journal first: recovery must not bring it back.
        let undo = |journal: &Option<PathBuf>| {
            if let Some(j) = journal {
                let _ = remove_durable(j);
            }
            for p in written.iter() {
                let _ = remove_durable(p);
            }
        };
        if let Err(e) = stored {
            undo(&journal);
            return Err(err(ErrorCode::Storage, e.to_string()));
        }
        match self.load_plan(plan) {
            Ok(m) => {
                self.bindings = bindings;
                let message = if let [b] = added.as_slice() {
                    let port = &b.portdev;
                    let active = self.applied.as_ref().is_some_and(|p| p.has_port(port));
                    let state = if active { "active" } else { "waiting for the interface" };
                    info!("binding {port} -> {} created, {state}: {m}", b.filterref.filter);
                    format!("binding for {port} created, {state}")
                } else {
                    info!("{} bindings created: {m}", added.len());
                    format!("{} bindings created ({m})", added.len())
                };
                if let Some(j) = journal {
                    // Durable already (the journal); the files follow.
                    std::thread::spawn(move || {
                        if let Err(e) = gw_store::settle(&dir, Some(&j)) {
                            warn!(
                                "making a batch's binding files durable failed ({e}); its journal stays for recovery"
                            );
                        }
                    });
                }
                Ok(Response::Ok { message, warnings })
            }
            Err(e) => {
                undo(&journal);
                Err(e)
            }
        }
    }

    fn unbind(&mut self, port: &str) -> Result<Response, ApiError> {
        let Some(b) = self.bindings.get(port).cloned() else {
            return Err(err(ErrorCode::NotFound, format!("no binding for port '{port}'")));
        };
        let mut bindings = self.bindings.clone();
        bindings.remove(port);
        let plan = self.desired(&self.lib, &bindings, false)?;
        let path = self.binding_path(port);
        // A journal naming this binding must not outlive its file.
        gw_store::settle(&self.state_dir.join("bindings"), None).map_err(|e| err(ErrorCode::Storage, e.to_string()))?;
        remove_durable(&path).map_err(|e| err(ErrorCode::Storage, e.to_string()))?;
        match self.load_plan(plan) {
            Ok(m) => {
                self.bindings = bindings;
                info!("binding {port} deleted: {m}");
                Ok(Response::Ok { message: format!("binding for {port} deleted"), warnings: Vec::new() })
            }
            Err(e) => {
                let _ = write_atomic(&path, gw_xml::write_binding(&b).as_bytes());
                Err(e)
            }
        }
    }
}
