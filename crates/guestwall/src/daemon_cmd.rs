//! The virsh-like verbs that talk to guestwalld.

use crate::{print, print_json, Outcome};
use anyhow::{Context, Result};
use clap::Subcommand;
use gw_api::{call, Request, Response};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum BindingCmd {
    /// Bind a filter to a port (<filterbinding> XML or JSON); several files
    /// are bound in one transaction, all or none.
    Create {
        /// The binding documents.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Runtime state, as libvirt's bindings of running guests: kept
        /// under the daemon's runtime directory (/run), gone after a reboot,
        /// and deleted when the port goes away.
        #[arg(long)]
        runtime: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a port's binding.
    Delete {
        /// The port.
        portdev: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the bindings.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a binding's XML.
    Dumpxml {
        /// The port.
        portdev: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The `--json` form of an answer: one object whose keys are the answer's
/// own fields (`{"bindings":[...]}`, `{"filters":[...]}`, `{"xml":"..."}`,
/// `{"message":"...","warnings":[...]}`, `{"lines":[...]}`), not wrapped in
/// another object named after its kind; a refusal is
/// `{"error":{"code":"...","messages":[...]}}`.
pub fn json_answer(resp: &Response) -> serde_json::Value {
    use serde_json::json;
    match resp {
        Response::Ok { message, warnings } => json!({ "message": message, "warnings": warnings }),
        Response::Xml { xml } => json!({ "xml": xml }),
        Response::Filters { filters } => json!({ "filters": filters }),
        Response::Bindings { bindings } => json!({ "bindings": bindings }),
        Response::Status { lines } => json!({ "lines": lines }),
        Response::Error(e) => json!({ "error": e }),
    }
}

/// The text form of an answer (an error's messages go to stderr instead,
/// in [`send`]); warnings are printed on stderr.
fn text_answer(resp: Response) -> String {
    let mut out = String::new();
    match resp {
        Response::Ok { message, warnings } => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            out = format!("{message}\n");
        }
        Response::Xml { xml } => out = xml,
        Response::Filters { filters } => {
            out.push_str(&format!("{:<28} {:<8} {:<10} UUID\n", "NAME", "ORIGIN", "CHAIN"));
            for f in filters {
                let uuid = f.uuid.unwrap_or_default();
                out.push_str(&format!("{:<28} {:<8} {:<10} {uuid}\n", f.name, f.origin, f.chain));
            }
        }
        Response::Bindings { bindings } => {
            out.push_str(&format!("{:<16} {:<24} {:<16} ACTIVE\n", "PORT", "FILTER", "OWNER"));
            for b in bindings {
                let active = if b.active { "yes" } else { "no" };
                out.push_str(&format!("{:<16} {:<24} {:<16} {active}\n", b.portdev, b.filter, b.owner));
            }
        }
        Response::Status { lines } => {
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
        Response::Error(_) => {}
    }
    out
}

/// Sends `req` and prints the answer as text or JSON (see [`json_answer`]).
pub fn send(socket: &Path, req: Request, json: bool) -> Result<Outcome> {
    let resp = call(socket, req)?;
    let refused = matches!(resp, Response::Error(_));
    if json {
        print_json(&json_answer(&resp))?;
    } else if let Response::Error(e) = &resp {
        for m in &e.messages {
            eprintln!("guestwall: {m}");
        }
    } else {
        print(text_answer(resp).as_bytes())?;
    }
    Ok(if refused { Outcome::Invalid } else { Outcome::Ok })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn binding(socket: &Path, cmd: BindingCmd) -> Result<Outcome> {
    match cmd {
        BindingCmd::Create { files, runtime, json } => {
            let req = match files.as_slice() {
                [one] => Request::BindingCreate { document: read(one)?, runtime },
                many => Request::BindingCreateBatch {
                    documents: many.iter().map(|f| read(f)).collect::<Result<_>>()?,
                    runtime,
                },
            };
            send(socket, req, json)
        }
        BindingCmd::Delete { portdev, json } => send(socket, Request::BindingDelete { portdev }, json),
        BindingCmd::List { json } => send(socket, Request::BindingList, json),
        BindingCmd::Dumpxml { portdev, json } => send(socket, Request::BindingDumpxml { portdev }, json),
    }
}

pub fn define(socket: &Path, file: &Path, libvirt_quirks: bool, json: bool) -> Result<Outcome> {
    send(socket, Request::FilterDefine { xml: read(file)?, libvirt_quirks }, json)
}

/// `filter edit`: the filter's XML in $EDITOR, defined again when saved.
pub fn edit(socket: &Path, name: &str) -> Result<Outcome> {
    let xml = match call(socket, Request::FilterDumpxml { name: name.to_string() })? {
        Response::Xml { xml } => xml,
        Response::Error(e) => {
            for m in &e.messages {
                eprintln!("guestwall: {m}");
            }
            return Ok(Outcome::Invalid);
        }
        other => anyhow::bail!("guestwalld answered a dumpxml with {other:?}"),
    };
    let path = std::env::temp_dir().join(format!("guestwall-edit-{}-{name}.xml", std::process::id()));
    std::fs::write(&path, &xml).with_context(|| format!("cannot write {}", path.display()))?;
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("run {editor}"))?;
    let edited = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()));
    let _ = std::fs::remove_file(&path);
    let edited = edited?;
    if !status.success() {
        anyhow::bail!("{editor} failed; nothing changed");
    }
    if edited == xml {
        print(format!("filter {name} not changed\n").as_bytes())?;
        return Ok(Outcome::Ok);
    }
    send(socket, Request::FilterDefine { xml: edited, libvirt_quirks: false }, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gw_api::{ApiError, BindingInfo, ErrorCode, FilterInfo};

    fn keys(v: &serde_json::Value) -> Vec<&str> {
        v.as_object().expect("an object").keys().map(String::as_str).collect()
    }

    #[test]
    fn json_answer_is_not_nested_in_its_kind() {
        let b = BindingInfo { portdev: "vnet0".into(), filter: "f".into(), owner: "vm".into(), active: true };
        let v = json_answer(&Response::Bindings { bindings: vec![b] });
        assert_eq!(keys(&v), ["bindings"]);
        assert_eq!(v["bindings"][0]["portdev"], "vnet0");
        let f = FilterInfo { name: "f".into(), origin: "builtin".into(), chain: "root".into(), uuid: None };
        assert_eq!(keys(&json_answer(&Response::Filters { filters: vec![f] })), ["filters"]);
        assert_eq!(keys(&json_answer(&Response::Xml { xml: "<x/>".into() })), ["xml"]);
        assert_eq!(keys(&json_answer(&Response::Status { lines: vec![] })), ["lines"]);
        let ok = json_answer(&Response::Ok { message: "done".into(), warnings: vec![] });
        assert_eq!(keys(&ok), ["message", "warnings"]);
        let e = json_answer(&Response::Error(ApiError { code: ErrorCode::NotFound, messages: vec!["no".into()] }));
        assert_eq!(keys(&e), ["error"]);
        assert_eq!(e["error"]["code"], "not_found");
        assert_eq!(e["error"]["messages"][0], "no");
    }
}
