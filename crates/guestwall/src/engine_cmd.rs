//! `guestwall compile` and `guestwall apply`: bindings → nftables.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use gw_builtins::Library;
use gw_model::Binding;
use gw_nft::{Features, StateSource};
use gw_xml::read_binding;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Which conntrack path to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConntrackPath {
    /// Ask the kernel (needs nft and root; else br-netfilter).
    Auto,
    /// Bridge-family conntrack (nf_conntrack_bridge).
    Bridge,
    /// br_netfilter with state carried in mark bits.
    BrNetfilter,
}

#[derive(Args)]
pub struct EngineArgs {
    /// Binding files: libvirt <filterbinding> XML, or JSON.
    #[arg(required = true)]
    bindings: Vec<PathBuf>,
    /// Directory of filters that override or add to the built-ins.
    #[arg(long)]
    filter_dir: Option<PathBuf>,
    /// Which conntrack path to use for stateful rules.
    #[arg(long, value_enum, default_value = "auto")]
    conntrack: ConntrackPath,
    /// Print which conntrack path was chosen (and what the kernel offers).
    #[arg(long)]
    family_info: bool,
    /// Give every rule a counter (costs forwarding rate; shows which rules decide).
    #[arg(long)]
    counters: bool,
}

fn read_binding_file(path: &Path) -> Result<Option<Binding>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim_start().starts_with('{') {
        return match serde_json::from_str::<Binding>(&text) {
            Ok(b) => {
                if let Err(e) = gw_model::check_ifname(&b.portdev) {
                    eprintln!("{}: portdev: {e}", path.display());
                    return Ok(None);
                }
                Ok(Some(b))
            }
            Err(e) => {
                eprintln!("{}:{}:{}: {e}", path.display(), e.line(), e.column());
                Ok(None)
            }
        };
    }
    match read_binding(&text) {
        Ok(p) => {
            for q in &p.quirks {
                eprintln!("{}:{}:{}: warning: {}: {}", path.display(), q.line, q.col, q.element, q.message);
            }
            Ok(Some(p.value))
        }
        Err(e) => {
            for d in &e.errors {
                let what = match &d.attribute {
                    Some(a) => format!("{}/{a}", d.element),
                    None => d.element.clone(),
                };
                eprintln!("{}:{}:{}: {what}: {}", path.display(), d.line, d.col, d.message);
            }
            Ok(None)
        }
    }
}

fn features(path: ConntrackPath, counters: bool) -> Result<Features> {
    let f = match path {
        ConntrackPath::Bridge => Features {
            state: StateSource::BridgeConntrack,
            bridge_reject: false,
            counters,
            mark: gw_nft::MarkBits::DEFAULT,
        },
        ConntrackPath::BrNetfilter => Features {
            state: StateSource::BrNetfilterMark,
            bridge_reject: false,
            counters,
            mark: gw_nft::MarkBits::DEFAULT,
        },
        ConntrackPath::Auto => match gw_nft::probe() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("guestwall: cannot probe the kernel ({e}); assuming br_netfilter without bridge reject");
                Features {
                    state: StateSource::BrNetfilterMark,
                    bridge_reject: false,
                    counters,
                    mark: gw_nft::MarkBits::DEFAULT,
                }
            }
        },
    };
    Ok(Features { counters, ..f })
}

/// Reads the bindings and builds the ruleset; `None` when input was invalid
/// (reasons printed).
fn ruleset(args: &EngineArgs) -> Result<Option<(String, Features)>> {
    let lib = match &args.filter_dir {
        Some(d) => Library::with_dir(d)?,
        None => Library::builtins()?,
    };
    let mut ok = true;
    let mut inputs = Vec::new();
    for path in &args.bindings {
        let Some(b) = read_binding_file(path)? else {
            ok = false;
            continue;
        };
        match gw_ir::bind(&lib, &b) {
            Ok(bound) => inputs.push(gw_nft::port_input(
                b.portdev.clone(),
                b.filterref.filter.clone(),
                bound.template.into(),
                &bound.concrete.into(),
                gw_nft::port_is_routed(&b.portdev),
            )),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                ok = false;
            }
        }
    }
    if !ok {
        return Ok(None);
    }
    let f = features(args.conntrack, args.counters)?;
    match gw_nft::build(&inputs, f) {
        Ok(s) => Ok(Some((s, f))),
        Err(e) => {
            eprintln!("guestwall: {e}");
            Ok(None)
        }
    }
}

pub fn compile(args: EngineArgs) -> Result<Outcome> {
    let Some((script, f)) = ruleset(&args)? else { return Ok(Outcome::Invalid) };
    if args.family_info {
        eprintln!("guestwall: {}", f.describe());
    }
    std::io::stdout().write_all(script.as_bytes())?;
    Ok(Outcome::Ok)
}

pub fn apply(args: EngineArgs) -> Result<Outcome> {
    let Some((script, f)) = ruleset(&args)? else { return Ok(Outcome::Invalid) };
    if args.family_info {
        eprintln!("guestwall: {}", f.describe());
    }
    if f.state == StateSource::BrNetfilterMark {
        match gw_nft::enable_bridge_nf_call() {
            Ok(changed) if !changed.is_empty() => eprintln!("guestwall: set {}", changed.join(", ")),
            Ok(_) => {}
            Err(e) => bail!("cannot enable br_netfilter's bridge-nf-call sysctls (is br_netfilter loaded?): {e}"),
        }
    }
    if let Err(e) = gw_nft::run_nft(&script, false) {
        eprintln!("guestwall: {e}");
        return Ok(Outcome::Invalid);
    }
    Ok(Outcome::Ok)
}
