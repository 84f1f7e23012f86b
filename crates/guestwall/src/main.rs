//! `guestwall`: the command-line client.
//!
//! The `filter` verbs work offline on XML files and the built-in library;
//! no daemon is needed for them.

mod daemon_cmd;
mod engine_cmd;
mod filter_cmd;

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
    /// guestwall's tables atomically.
    Apply(engine_cmd::EngineArgs),
    /// Bindings kept by guestwalld.
    #[command(subcommand)]
    Binding(daemon_cmd::BindingCmd),
    /// Ask guestwalld to re-apply everything.
    Reload,
    /// guestwalld's status.
    Status,
}

/// What `try_main` reports back: success, or a failure already printed.
pub enum Outcome {
    /// Everything was fine.
    Ok,
    /// Input was invalid; the reasons were printed.
    Invalid,
}

fn try_main() -> anyhow::Result<Outcome> {
    let cli = Cli::parse();
    match cli.command {
        Command::Filter(cmd) => filter_cmd::run(cmd, &cli.socket),
        Command::Binding(cmd) => daemon_cmd::binding(&cli.socket, cmd),
        Command::Reload => daemon_cmd::send(&cli.socket, gw_api::Request::Reload, false),
        Command::Status => daemon_cmd::send(&cli.socket, gw_api::Request::Status, false),
        Command::Compile(args) => engine_cmd::compile(args),
        Command::Apply(args) => engine_cmd::apply(args),
    }
}

fn main() -> ExitCode {
    match try_main() {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Invalid) => ExitCode::from(1),
        Err(err) => {
            // A closed pipe (guestwall ... | head) is not a failure.
            if err
                .chain()
                .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("guestwall: error: {err:#}");
            ExitCode::from(1)
        }
    }
}
