//! `guestwall compile` and `guestwall apply`: bindings → nftables.

use crate::{error_text, print, Outcome};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use gw_builtins::Library;
use gw_model::Binding;
use gw_nft::{Features, StateSource};
use gw_xml::read_binding;
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

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Apply even though guestwalld is running (it will put its own tables back).
    #[arg(long)]
    force: bool,
    /// guestwalld's state directory, whose lock shows a running daemon.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

/// guestwalld's default `--state-dir`.
const DEFAULT_STATE_DIR: &str = "/var/lib/guestwall";

/// Reads a binding file, XML or JSON; `None` when it is invalid (every
/// reason printed as `FILE:LINE:COL: what`).
fn read_binding_file(path: &Path) -> Result<Option<Binding>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim_start().starts_with('{') {
        return match serde_json::from_str::<Binding>(&text) {
            Ok(b) => match b.check() {
                Ok(()) => Ok(Some(b)),
                Err(e) => {
                    eprintln!("{}: {}", path.display(), error_text(&e));
                    Ok(None)
                }
            },
            Err(e) if e.line() == 0 => {
                eprintln!("{}: {}", path.display(), gw_api::json_message(&e));
                Ok(None)
            }
            Err(e) => {
                eprintln!("{}:{}:{}: {}", path.display(), e.line(), e.column().max(1), gw_api::json_message(&e));
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
                eprintln!(
                    "guestwall: cannot probe the kernel ({}); assuming br_netfilter without bridge reject",
                    error_text(&e)
                );
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
        Some(d) => Library::with_dir(d).context("cannot load the filters of --filter-dir")?,
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
                b.portdev.to_string(),
                b.filterref.filter.clone(),
                bound.template.into(),
                &bound.concrete.into(),
                gw_nft::port_is_routed(&b.portdev),
            )),
            Err(e) => {
                eprintln!("{}: {}", path.display(), error_text(&e));
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
            eprintln!("guestwall: {}", error_text(&e));
            Ok(None)
        }
    }
}

pub fn compile(args: EngineArgs) -> Result<Outcome> {
    let Some((script, f)) = ruleset(&args)? else { return Ok(Outcome::Invalid) };
    if args.family_info {
        eprintln!("guestwall: {}", f.describe());
    }
    print(script.as_bytes())?;
    Ok(Outcome::Ok)
}

/// What shows that a guestwalld owns the tables `apply` would write (those
/// of this network namespace), if anything does:
/// - its socket accepts a connection (as guestwalld itself checks before
///   taking a socket over), and the socket is one of this namespace's
///   (`/proc/net/unix` lists only those): a daemon serving another
///   namespace's tables on that path (a test host, `ip netns exec`) is
///   not in the way;
/// - or the lock of its state directory is held (only a running guestwalld
///   holds it; the kernel drops it when the process ends) by a process of
///   this namespace. The lock is only tried, never kept, never created.
///
/// When it cannot be told which namespace a daemon is in, it is taken to
/// be in this one.
fn running_daemon(socket: &Path, state_dir: &Path) -> Option<String> {
    // Read before connecting: a connection adds a socket bound to that path
    // in this namespace (the daemon's end of it, until it is accepted).
    let listens_here = listening_in_this_netns(socket);
    if listens_here != Some(false) && std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Some(format!("it answers on {}", socket.display()));
    }
    let lock = state_dir.join("lock");
    let file = std::fs::File::open(&lock).ok()?;
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => {}
        _ => return None,
    }
    let here = std::fs::read_link("/proc/self/ns/net").ok();
    let holders = lock_holders(&file);
    let elsewhere = |pid: &u32| {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        here.is_some() && theirs.is_some() && theirs != here
    };
    if !holders.is_empty() && holders.iter().all(elsewhere) {
        return None;
    }
    Some(format!("it holds {}", lock.display()))
}

/// Whether a Unix socket listening at `socket` belongs to this network
/// namespace: `/proc/net/unix` lists this namespace's sockets with the path
/// each was bound to, listening ones with the `__SO_ACCEPTCON` flag
/// (0x10000). `None` when it cannot be read.
fn listening_in_this_netns(socket: &Path) -> Option<bool> {
    const SO_ACCEPTCON: u32 = 1 << 16;
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let full = std::fs::canonicalize(socket).unwrap_or_else(|_| socket.to_path_buf());
    let found = table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode [Path]
        let fields: Vec<&str> = line.split_whitespace().collect();
        let listening =
            fields.get(3).and_then(|f| u32::from_str_radix(f, 16).ok()).is_some_and(|f| f & SO_ACCEPTCON != 0);
        let Some(bound) = fields.get(7).map(Path::new) else { return false };
        listening && (bound == socket || bound == full || (bound.is_relative() && full.ends_with(bound)))
    });
    Some(found)
}

/// The processes holding a flock on `file`, from `/proc/locks`
/// (`N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END`), matched by
/// inode number.
fn lock_holders(file: &std::fs::File) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(meta), Ok(locks)) = (file.metadata(), std::fs::read_to_string("/proc/locks")) else {
        return Vec::new();
    };
    let ino = meta.ino().to_string();
    locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().filter(|f| *f != "->").collect();
            if fields.get(1) != Some(&"FLOCK") {
                return None;
            }
            let at = fields.iter().position(|f| f.split(':').count() == 3)?;
            if fields[at].rsplit(':').next() != Some(ino.as_str()) {
                return None;
            }
            fields.get(at.checked_sub(1)?)?.parse().ok()
        })
        .collect()
}

pub fn apply(args: ApplyArgs, socket: &Path) -> Result<Outcome> {
    if let Some(why) = running_daemon(socket, &args.state_dir) {
        if !args.force {
            bail!(
                "guestwalld is running ({why}) and owns guestwall's tables: apply would replace them and the \
                 daemon would put its own back. Bind through the daemon (`guestwall binding create FILE...`), \
                 or stop guestwalld first; --force applies anyway"
            );
        }
        eprintln!("guestwall: warning: guestwalld is running ({why}); --force: applying anyway");
    }
    let args = args.engine;
    let Some((script, f)) = ruleset(&args)? else { return Ok(Outcome::Invalid) };
    if args.family_info {
        eprintln!("guestwall: {}", f.describe());
    }
    if f.state == StateSource::BrNetfilterMark {
        match gw_nft::enable_bridge_nf_call() {
            Ok(changed) if !changed.is_empty() => eprintln!("guestwall: set {}", changed.join(", ")),
            Ok(_) => {}
            Err(e) => bail!(
                "cannot enable br_netfilter's bridge-nf-call sysctls (is br_netfilter loaded?): {}",
                error_text(&e)
            ),
        }
    }
    if let Err(e) = gw_nft::run_nft(&script, false) {
        eprintln!("guestwall: {}", error_text(&e));
        return Ok(Outcome::Invalid);
    }
    Ok(Outcome::Ok)
}
