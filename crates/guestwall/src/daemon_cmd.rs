//! The virsh-like verbs that talk to guestwalld.

use crate::Outcome;
use anyhow::{Context, Result};
use clap::Subcommand;
use gw_api::{call, Request, Response};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum BindingCmd {
    /// Bind a filter to a port (<filterbinding> XML or JSON); several files
    /// are bound in one transaction, all or none.
    Create {
        /// The binding documents.
        #[arg(required = true)]
        files: Vec<PathBuf>,
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

/// Sends `req` and prints the answer as text or JSON.
pub fn send(socket: &Path, req: Request, json: bool) -> Result<Outcome> {
    let resp = call(socket, req)?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &resp)?;
        writeln!(out)?;
        return Ok(if matches!(resp, Response::Error(_)) { Outcome::Invalid } else { Outcome::Ok });
    }
    match resp {
        Response::Ok { message, warnings } => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            writeln!(out, "{message}")?;
        }
        Response::Xml { xml } => out.write_all(xml.as_bytes())?,
        Response::Filters { filters } => {
            writeln!(out, "{:<28} {:<8} {:<10} UUID", "NAME", "ORIGIN", "CHAIN")?;
            for f in filters {
                writeln!(out, "{:<28} {:<8} {:<10} {}", f.name, f.origin, f.chain, f.uuid.unwrap_or_default())?;
            }
        }
        Response::Bindings { bindings } => {
            writeln!(out, "{:<16} {:<24} {:<16} ACTIVE", "PORT", "FILTER", "OWNER")?;
            for b in bindings {
                writeln!(
                    out,
                    "{:<16} {:<24} {:<16} {}",
                    b.portdev,
                    b.filter,
                    b.owner,
                    if b.active { "yes" } else { "no" }
                )?;
            }
        }
        Response::Status { lines } => {
            for l in lines {
                writeln!(out, "{l}")?;
            }
        }
        Response::Error(e) => {
            for m in &e.messages {
                eprintln!("guestwall: {m}");
            }
            return Ok(Outcome::Invalid);
        }
    }
    Ok(Outcome::Ok)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn binding(socket: &Path, cmd: BindingCmd) -> Result<Outcome> {
    match cmd {
        BindingCmd::Create { files, json } => {
            let req = match files.as_slice() {
                [one] => Request::BindingCreate { document: read(one)? },
                many => Request::BindingCreateBatch { documents: many.iter().map(|f| read(f)).collect::<Result<_>>()? },
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
            eprintln!("guestwall: {e}");
            return Ok(Outcome::Invalid);
        }
        other => anyhow::bail!("unexpected answer {other:?}"),
    };
    let path = std::env::temp_dir().join(format!("guestwall-edit-{}-{name}.xml", std::process::id()));
    std::fs::write(&path, &xml)?;
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("run {editor}"))?;
    let edited = std::fs::read_to_string(&path)?;
    let _ = std::fs::remove_file(&path);
    if !status.success() {
        anyhow::bail!("{editor} failed; nothing changed");
    }
    if edited == xml {
        println!("filter {name} not changed");
        return Ok(Outcome::Ok);
    }
    send(socket, Request::FilterDefine { xml: edited, libvirt_quirks: false }, false)
}
