//! `guestwall filter ...`: validate, normalize, resolve and list filters.

use crate::{error_text, print, print_json, Outcome};
use anyhow::{Context, Result};
use clap::Subcommand;
use gw_builtins::{Library, Origin};
use gw_model::Filter;
use gw_resolve::{params_from_pairs, resolve, PairError, Resolved, ResolvedRule, RootEntry};
use gw_xml::{match_elements, read_filter, write_filter, Diagnostic, Parsed};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum FilterCmd {
    /// Check filter files; exit 0 when all are valid, 1 otherwise.
    ///
    /// Anything libvirt would ignore, merge or silently change is an error
    /// here unless --libvirt-quirks accepts libvirt's reading.
    Validate {
        /// Filter XML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Accept what libvirt silently ignores or changes (warn instead).
        #[arg(long)]
        libvirt_quirks: bool,
        /// Directory of further filters that filterrefs may name.
        #[arg(long)]
        filter_dir: Option<PathBuf>,
    },
    /// Print a filter as libvirt would dump it (quirks warned on stderr).
    Normalize {
        /// A filter XML file.
        file: PathBuf,
    },
    /// Print the flattened, ordered rules a binding with these parameters gets.
    Resolve {
        /// A filter name (built-in or from --filter-dir) or an XML file.
        filter: String,
        /// A parameter NAME=VALUE; repeat a name to make a list.
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Directory of filters that override or add to the built-ins.
        #[arg(long)]
        filter_dir: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the built-in filters.
    Builtins {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Define (or redefine) a filter in guestwalld; every binding using it
    /// is re-instantiated in one transaction.
    Define {
        /// The filter's XML.
        file: PathBuf,
        /// Accept what libvirt would ignore or change.
        #[arg(long)]
        libvirt_quirks: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a filter from guestwalld (refused while something uses it).
    Undefine {
        /// The filter.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List guestwalld's filters.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a filter's XML from guestwalld.
    Dumpxml {
        /// The filter.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Edit a filter in $EDITOR and define the result.
    Edit {
        /// The filter.
        name: String,
    },
}

pub fn run(cmd: FilterCmd, socket: &Path) -> Result<Outcome> {
    use crate::daemon_cmd::{define, edit, send};
    use gw_api::Request;
    match cmd {
        FilterCmd::Define { file, libvirt_quirks, json } => define(socket, &file, libvirt_quirks, json),
        FilterCmd::Undefine { name, json } => send(socket, Request::FilterUndefine { name }, json),
        FilterCmd::List { json } => send(socket, Request::FilterList, json),
        FilterCmd::Dumpxml { name, json } => send(socket, Request::FilterDumpxml { name }, json),
        FilterCmd::Edit { name } => edit(socket, &name),
        FilterCmd::Validate { files, libvirt_quirks, filter_dir } => {
            validate(&files, libvirt_quirks, filter_dir.as_deref())
        }
        FilterCmd::Normalize { file } => normalize(&file),
        FilterCmd::Resolve { filter, params, filter_dir, json } => {
            resolve_cmd(&filter, &params, filter_dir.as_deref(), json)
        }
        FilterCmd::Builtins { json } => builtins(json),
    }
}

/// Prints `FILE:LINE:COL: [label]element/attribute: message`.
fn print_diag(file: &Path, d: &Diagnostic, label: &str) {
    let what = match &d.attribute {
        Some(a) => format!("{}/{a}", d.element),
        None => d.element.clone(),
    };
    eprintln!("{}:{}:{}: {label}{what}: {}", file.display(), d.line, d.col, d.message);
}

/// Reads a file; on failure prints every error as FILE:LINE:COL and returns None.
///
/// A file larger than [`gw_xml::MAX_DOCUMENT_BYTES`] is refused without
/// reading more than that (and one byte) of it.
fn read_file(path: &Path) -> Result<Option<Parsed<Filter>>> {
    use std::io::Read as _;
    let limit = gw_xml::MAX_DOCUMENT_BYTES;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > limit {
        let what = match std::fs::metadata(path).map(|m| m.len()) {
            Ok(n) if n > limit as u64 => format!("{n} bytes"),
            _ => format!("more than {limit} bytes"),
        };
        eprintln!(
            "{}:1:1: xml: the document is {what}; at most {limit} bytes (1 MiB, MAX_DOCUMENT_BYTES) are read",
            path.display()
        );
        return Ok(None);
    }
    let text = String::from_utf8(bytes).with_context(|| format!("cannot read {}: not UTF-8", path.display()))?;
    match read_filter(&text) {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            for d in &e.errors {
                print_diag(path, d, "");
            }
            Ok(None)
        }
    }
}

fn load_library(dir: Option<&Path>) -> Result<Library> {
    Ok(match dir {
        Some(d) => Library::with_dir(d).context("cannot load the filters of --filter-dir")?,
        None => Library::builtins()?,
    })
}

fn validate(files: &[PathBuf], libvirt_quirks: bool, dir: Option<&Path>) -> Result<Outcome> {
    let mut lib = load_library(dir)?;
    let mut ok = true;
    let mut read = Vec::new();
    for f in files {
        match read_file(f)? {
            None => ok = false,
            Some(p) => {
                for q in &p.quirks {
                    if libvirt_quirks {
                        print_diag(f, q, "warning: ");
                    } else {
                        print_diag(f, q, "");
                        ok = false;
                    }
                }
                lib.insert(p.value.clone(), Origin::File(f.clone()));
                read.push((f, p.value));
            }
        }
    }
    // With every given file known, each filterref must name a known filter
    // and the references must not loop.
    for (f, filter) in &read {
        if let Err(e) = gw_resolve::check_references(&lib, filter) {
            eprintln!("{}: filter {}: {}", f.display(), filter.name, error_text(&e));
            ok = false;
        }
    }
    Ok(if ok { Outcome::Ok } else { Outcome::Invalid })
}

fn normalize(file: &Path) -> Result<Outcome> {
    let Some(p) = read_file(file)? else {
        return Ok(Outcome::Invalid);
    };
    for q in &p.quirks {
        print_diag(file, q, "warning: ");
    }
    print(write_filter(&p.value).as_bytes())?;
    Ok(Outcome::Ok)
}

fn resolve_cmd(name: &str, pairs: &[String], dir: Option<&Path>, json: bool) -> Result<Outcome> {
    let mut lib = load_library(dir)?;
    let params = match params_from_pairs(pairs.iter().map(String::as_str)) {
        Ok(p) => p,
        // A value a parameter cannot have is invalid input, as it was when
        // resolution found it; a malformed pair is a usage error.
        Err(PairError::BadValue(e)) => {
            eprintln!("guestwall: {}", error_text(&e));
            return Ok(Outcome::Invalid);
        }
        Err(e) => return Err(e.into()),
    };
    let path = Path::new(name);
    let filter = if lib.get(name).is_some() && !(name.ends_with(".xml") && path.is_file()) {
        lib.get(name).map(|(f, _)| f.clone())
    } else if path.is_file() {
        let Some(p) = read_file(path)? else {
            return Ok(Outcome::Invalid);
        };
        for q in &p.quirks {
            print_diag(path, q, "warning: ");
        }
        lib.insert(p.value.clone(), Origin::File(path.to_path_buf()));
        Some(p.value)
    } else {
        None
    };
    let Some(filter) = filter else {
        eprintln!("guestwall: no filter named '{name}' (built-in or in --filter-dir) and no such file");
        return Ok(Outcome::Invalid);
    };
    let resolved = match resolve(&lib, &filter, &params) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("guestwall: {}", error_text(&e));
            return Ok(Outcome::Invalid);
        }
    };
    if json {
        print_json(&resolved)?;
    } else {
        print(render(&resolved).as_bytes())?;
    }
    Ok(Outcome::Ok)
}

fn rule_line(r: &ResolvedRule) -> String {
    let rule = &r.rule;
    let mut s = format!("{:>5}  {:<8} {:<5}", rule.priority, rule.action.name(), rule.direction.name());
    if !rule.statematch {
        s.push_str(" statematch=false");
    }
    match &rule.matches {
        Some(m) => {
            s.push(' ');
            s.push_str(&match_elements(m).join(" "));
        }
        None => s.push_str(" (every frame)"),
    }
    s.push_str(&format!("   # {}#{}", r.origin.filter, r.origin.entry));
    s
}

/// The text form of a resolved binding.
pub fn render(r: &Resolved) -> String {
    let mut s = String::new();
    s.push_str(&format!("filter {}", r.filter));
    for (k, vs) in &r.params {
        s.push_str(&format!(" {k}={}", vs.join(",")));
    }
    s.push_str("\n\nethernet chain root:\n");
    for e in &r.root {
        match e {
            RootEntry::Rule(rr) => s.push_str(&format!("  {}\n", rule_line(rr))),
            RootEntry::Jump(j) => {
                let dirs = match (j.out, j.r#in) {
                    (true, true) => "inout",
                    (true, false) => "out",
                    _ => "in",
                };
                s.push_str(&format!(
                    "  {:>5}  jump     {dirs:<5} chain {} ({} frames)\n",
                    j.priority, j.chain, j.family
                ));
            }
        }
    }
    for c in &r.chains {
        s.push_str(&format!("\nethernet chain {} (priority {}):\n", c.name, c.priority));
        for rr in &c.rules {
            s.push_str(&format!("  {}\n", rule_line(rr)));
        }
    }
    for (title, rules) in [("ipv4", &r.ipv4), ("ipv6", &r.ipv6)] {
        if !rules.is_empty() {
            s.push_str(&format!("\n{title} rules:\n"));
            for rr in rules.iter() {
                s.push_str(&format!("  {}\n", rule_line(rr)));
            }
        }
    }
    s
}

/// The first line of a built-in's leading XML comment, as its description.
fn description(xml: &str) -> String {
    xml.split_once("<!--")
        .and_then(|(_, rest)| rest.split_once("-->"))
        .map(|(c, _)| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `filter builtins`: a table, or with `--json` `{"filters":[...]}` (the
/// shape of `filter list --json`; see [`crate::print_json`]).
fn builtins(json: bool) -> Result<Outcome> {
    let lib = Library::builtins()?;
    let rows: Vec<serde_json::Value> = gw_builtins::BUILTINS
        .iter()
        .filter_map(|(name, xml)| {
            let (f, _) = lib.get(name)?;
            Some(serde_json::json!({
                "name": name,
                "chain": f.chain,
                "priority": f.priority,
                "references": f.references().collect::<Vec<_>>(),
                "description": description(xml),
            }))
        })
        .collect();
    if json {
        return print_json(&serde_json::json!({ "filters": rows })).map(|()| Outcome::Ok);
    }
    let mut out = String::new();
    for r in &rows {
        out.push_str(&format!(
            "{:<24} {:<6} {}\n",
            r["name"].as_str().unwrap_or(""),
            r["chain"].as_str().unwrap_or(""),
            r["description"].as_str().unwrap_or("")
        ));
    }
    print(out.as_bytes())?;
    Ok(Outcome::Ok)
}
