//! `guestwall`: the command-line client.
//!
//! The `filter` verbs work offline on XML files and the built-in library;
//! no daemon is needed for them.

mod daemon_cmd;
mod engine_cmd;
mod filter_cmd;
mod libvirt_domain;
mod libvirt_hook;
mod libvirt_import;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Per-guest network filtering for virtual-machine hosts.
#[derive(Parser)]
#[command(name = "guestwall", version, about)]
struct Cli {
    /// guestwalld's socket.
    #[arg(long, global = true, default_value = gw_api::DEFAULT_SOCKET)]
    socket: std::path::PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with nwfilter XML filters (offline).
    #[command(subcommand)]
    Filter(filter_cmd::FilterCmd),
    /// Print the complete nftables script for these bindings (nft -f - loads it).
    Compile(engine_cmd::EngineArgs),
    /// Load the ruleset for these bindings in one transaction, replacing
    /// guestwall's tables atomically (refused while guestwalld runs, unless
    /// --force).
    Apply(engine_cmd::ApplyArgs),
    /// Bindings kept by guestwalld.
    #[command(subcommand)]
    Binding(daemon_cmd::BindingCmd),
    /// Ask guestwalld to re-apply everything.
    Reload,
    /// guestwalld's status.
    Status,
    /// Take a libvirt host's filters and running bindings over (report,
    /// define, bind; with --handover, remove libvirt's rules after
    /// guestwall's are in; --back for the way back).
    LibvirtImport(libvirt_import::ImportArgs),
    /// libvirt's qemu hook (monolithic libvirtd): what libvirtd runs, and its install.
    #[command(subcommand)]
    LibvirtHook(libvirt_hook::HookCmd),
    /// Move every <interface><filterref> of a domain XML into guestwall's
    /// <metadata> (keyed by MAC) and print the new XML:
    /// `virsh dumpxml --inactive D | guestwall libvirt-convert-domain | virsh define /dev/stdin`.
    LibvirtConvertDomain {
        /// The domain XML (stdin when absent or -).
        file: Option<std::path::PathBuf>,
    },
}

/// What `try_main` reports back: success, or a failure already printed.
pub enum Outcome {
    /// Everything was fine.
    Ok,
    /// Input was invalid; the reasons were printed.
    Invalid,
}

/// Standard output was closed by its reader (`guestwall ... | head`): not a
/// failure, and nothing more to say.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `bytes` to standard output and flushes it. Every command prints
/// through this (or [`print_json`]), so that a reader that closed the pipe
/// early is told apart from a real failure: a broken pipe becomes
/// [`StdoutClosed`], which `main` ends on quietly with status 0.
pub fn print(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
        _ => anyhow::Error::new(e).context("cannot write to standard output"),
    })
}

/// Prints `value` as pretty JSON and a newline (see [`print`]).
///
/// Every `--json` output is one JSON object whose keys name what it holds
/// (`{"bindings":[...]}`, `{"filters":[...]}`, `{"xml":"..."}`, ...; a
/// refusal is `{"error":{"code":...,"messages":[...]}}`), never wrapped in
/// another object.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(text.as_bytes())
}

/// An error and its causes on one line, each said once: a cause is left
/// out when the text before it already contains it (thiserror messages
/// such as `"{path}: {source}"` both show their source and chain it, and
/// anyhow's contexts chain what they wrap).
fn chain_text<'a>(mut chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> String {
    let mut text = chain.next().map(ToString::to_string).unwrap_or_default();
    for cause in chain {
        let c = cause.to_string();
        if !c.is_empty() && !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// [`chain_text`] for an error value: what commands print for a failure.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    chain_text(std::iter::successors(Some(e), |e| e.source()))
}

fn try_main() -> anyhow::Result<Outcome> {
    let cli = Cli::parse();
    match cli.command {
        Command::Filter(cmd) => filter_cmd::run(cmd, &cli.socket),
        Command::Binding(cmd) => daemon_cmd::binding(&cli.socket, cmd),
        Command::Reload => daemon_cmd::send(&cli.socket, gw_api::Request::Reload, false),
        Command::Status => daemon_cmd::send(&cli.socket, gw_api::Request::Status, false),
        Command::Compile(args) => engine_cmd::compile(args),
        Command::Apply(args) => engine_cmd::apply(args, &cli.socket),
        Command::LibvirtImport(args) => libvirt_import::run(args, &cli.socket),
        Command::LibvirtHook(cmd) => libvirt_hook::run(&cli.socket, cmd),
        Command::LibvirtConvertDomain { file } => convert_domain(file.as_deref()),
    }
}

/// `libvirt-convert-domain`: the converted XML on stdout, a count on stderr.
fn convert_domain(file: Option<&std::path::Path>) -> anyhow::Result<Outcome> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let limit = libvirt_domain::MAX_DOMAIN_XML_BYTES as u64 + 1;
    let (name, mut bytes) =
        (file.filter(|f| f.as_os_str() != "-").map_or("stdin".to_string(), |f| f.display().to_string()), Vec::new());
    match file.filter(|f| f.as_os_str() != "-") {
        Some(f) => std::fs::File::open(f).and_then(|h| h.take(limit).read_to_end(&mut bytes)),
        None => std::io::stdin().lock().take(limit).read_to_end(&mut bytes),
    }
    .with_context(|| format!("cannot read {name}"))?;
    // Over the limit: the reader says so, with the limit's name.
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{name}: not UTF-8 (byte {})", e.utf8_error().valid_up_to()))?;
    let c = libvirt_domain::convert_domain(&text, &name)?;
    print(c.xml.as_bytes())?;
    eprintln!("guestwall: {} filterref(s) moved into guestwall's metadata", c.moved);
    Ok(Outcome::Ok)
}

fn main() -> ExitCode {
    match try_main() {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Invalid) => ExitCode::from(1),
        Err(err) if err.chain().any(|c| c.is::<StdoutClosed>()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("guestwall: error: {}", chain_text(err.chain()));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    /// What `#[error("{path}: {source}")]` with `#[source]` derives.
    #[derive(Debug)]
    struct ShowsAndChains {
        path: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for ShowsAndChains {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.path, self.source)
        }
    }

    impl std::error::Error for ShowsAndChains {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    fn not_found() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    #[test]
    fn error_text_says_each_cause_once() {
        let cause = not_found().to_string();
        // a thiserror message that formats its source and chains it
        let e = ShowsAndChains { path: "/nonexistent".into(), source: not_found() };
        assert_eq!(error_text(&e), format!("/nonexistent: {cause}"));
        // the same under an anyhow context
        let a = anyhow::Error::new(e).context("--filter-dir");
        assert_eq!(chain_text(a.chain()), format!("--filter-dir: /nonexistent: {cause}"));
        // a context over a plain error still shows the cause
        let r: Result<(), std::io::Error> = Err(not_found());
        let a = r.context("cannot read b.xml").unwrap_err();
        assert_eq!(chain_text(a.chain()), format!("cannot read b.xml: {cause}"));
    }

    #[test]
    fn stdout_closed_is_found_through_contexts() {
        let e = anyhow::Error::new(StdoutClosed).context("printing");
        assert!(e.chain().any(|c| c.is::<StdoutClosed>()));
    }
}
