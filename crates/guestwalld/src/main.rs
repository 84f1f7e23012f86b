//! `guestwalld`: keeps the kernel's rules true to the stored filters and
//! bindings.
//!
//! - serves the API (gw-api) on a root-only Unix socket;
//! - follows interfaces (rtnetlink link events): a binding becomes active
//!   when its port appears, its rules go when the port goes;
//! - follows nftables (the kernel's ruleset events, not polling): when
//!   another process flushes, deletes or edits guestwall's tables, it
//!   restores them;
//! - SIGHUP re-applies everything; on exit the rules stay in the kernel.

/// Planning thousands of ports allocates and frees millions of small
/// objects, on every core: glibc's malloc spent a fifth of that time in its
/// own bookkeeping and kept freed memory resident.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod engine;
mod links;

use anyhow::{bail, Context, Result};
use clap::Parser;
use engine::Engine;
use gw_api::{ApiError, Envelope, ErrorCode, Response, API_VERSION};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tracing::{error, info, warn};

/// guestwall's daemon.
#[derive(Parser)]
#[command(name = "guestwalld", version, about)]
struct Args {
    /// The API socket.
    #[arg(long, default_value = gw_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where filters are kept (one NAME.xml each).
    #[arg(long, default_value = "/etc/guestwall")]
    config_dir: PathBuf,
    /// Where bindings are kept.
    #[arg(long, default_value = "/var/lib/guestwall")]
    state_dir: PathBuf,
    /// Give every rule a counter (costs forwarding rate; shows which rules decide).
    #[arg(long)]
    counters: bool,
}

type Shared = Arc<Mutex<Engine>>;

fn with_engine<T>(engine: &Shared, f: impl FnOnce(&mut Engine) -> T) -> T {
    // A panic while holding the lock would poison it; the state itself is
    // still consistent (every change is all-or-nothing), so keep going.
    let mut guard = engine.lock().unwrap_or_else(|p| p.into_inner());
    let r = f(&mut guard);
    drop(guard);
    give_back_memory();
    r
}

/// Returns memory freed by the last request to the system at once (its
/// garbage can be tens of megabytes with thousands of ports).
fn give_back_memory() {
    // SAFETY: mi_collect has no preconditions.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Binds the socket: root-only (0600), refusing to steal one a live daemon
/// answers on.
fn bind_socket(path: &PathBuf) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use by a running guestwalld", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.with_context(|| format!("bind {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn serve_one(engine: Shared, stream: UnixStream) -> Result<()> {
    let uid = {
        use std::os::fd::AsFd;
        nix::sys::socket::getsockopt(&stream.as_fd(), nix::sys::socket::sockopt::PeerCredentials)
            .map(|c| c.uid())
            .unwrap_or(u32::MAX)
    };
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = if uid != 0 {
        warn!("refused a request from uid {uid}");
        Response::Error(ApiError {
            code: ErrorCode::Denied,
            messages: vec![format!("guestwalld accepts requests only from root (you are uid {uid})")],
        })
    } else {
        match serde_json::from_str::<Envelope>(&line) {
            Ok(env) if env.version == API_VERSION => {
                let e = engine.clone();
                tokio::task::spawn_blocking(move || with_engine(&e, |eng| eng.handle(env.request))).await?
            }
            Ok(env) => Response::Error(ApiError {
                code: ErrorCode::BadRequest,
                messages: vec![format!(
                    "API version {} is not supported (this daemon speaks {API_VERSION})",
                    env.version
                )],
            }),
            Err(e) => {
                Response::Error(ApiError { code: ErrorCode::BadRequest, messages: vec![format!("bad request: {e}")] })
            }
        }
    };
    let mut out = serde_json::to_string(&response)?;
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    Ok(())
}

/// Wakes `notify` on every interface event (new, changed, removed links).
async fn watch_links(notify: Arc<Notify>) -> Result<()> {
    use futures::StreamExt;
    use netlink_sys::AsyncSocket;
    let (mut conn, _handle, mut messages) = rtnetlink::new_connection()?;
    conn.socket_mut().socket_mut().bind(&netlink_sys::SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK))?;
    tokio::spawn(conn);
    while messages.next().await.is_some() {
        notify.notify_one();
    }
    bail!("the rtnetlink event stream ended")
}

/// What the nftables events since the last heal said.
#[derive(Default)]
struct HealFlags {
    lost: std::sync::atomic::AtomicBool,
    deleted: std::sync::atomic::AtomicBool,
    edited: std::sync::atomic::AtomicBool,
}

/// Follows the kernel's ruleset events on a thread of its own and wakes
/// `notify` when another process changed guestwall's tables (or events were
/// lost, then `lost` is set). Our own transactions are recognised by the
/// committing process the kernel names.
fn watch_nft(notify: Arc<Notify>, flags: Arc<HealFlags>) -> std::io::Result<()> {
    // Opened here, so no change made after start-up is missed.
    std::thread::Builder::new().name("nft-events".into()).spawn(move || {
        let r = gw_nft::netlink::watch(gw_nft::TABLE, gw_nft::is_ours, |ev| {
            use std::sync::atomic::Ordering::SeqCst;
            match ev {
                gw_nft::netlink::Event::Lost => flags.lost.store(true, SeqCst),
                gw_nft::netlink::Event::Foreign { deleted: true } => flags.deleted.store(true, SeqCst),
                gw_nft::netlink::Event::Foreign { deleted: false } => flags.edited.store(true, SeqCst),
            }
            notify.notify_one();
        });
        if let Err(e) = r {
            error!("nftables events: {e}; healing is off");
        }
    })?;
    Ok(())
}

/// Runs `job` after each wake-up, once events have been quiet for `settle`.
async fn debounced(notify: Arc<Notify>, settle: Duration, engine: Shared, job: fn(&mut Engine)) {
    loop {
        notify.notified().await;
        loop {
            tokio::select! {
                _ = notify.notified() => continue,
                _ = tokio::time::sleep(settle) => break,
            }
        }
        let e = engine.clone();
        let _ = tokio::task::spawn_blocking(move || with_engine(&e, job)).await;
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // journald and log files get plain text
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let process_started = std::time::Instant::now();
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("guestwalld must run as root");
    }
    let _lock = gw_store::StateLock::take(&args.state_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(args, process_started))
}

async fn run(args: Args, process_started: std::time::Instant) -> Result<()> {
    let features = gw_nft::Features { counters: args.counters, ..gw_nft::probe().context("probing nftables")? };
    info!("{}", features.describe());
    if features.state == gw_nft::StateSource::BrNetfilterMark {
        match gw_nft::enable_bridge_nf_call() {
            Ok(c) if !c.is_empty() => info!("set {}", c.join(", ")),
            Ok(_) => {}
            Err(e) => warn!("cannot enable bridge-nf-call sysctls: {e}"),
        }
    }
    let listener = bind_socket(&args.socket)?;
    let nft = Arc::new(Notify::new());
    let flags = Arc::new(HealFlags::default());
    watch_nft(nft.clone(), flags.clone())?;
    let engine: Shared = Arc::new(Mutex::new(Engine::load(&args.config_dir, &args.state_dir, features)?));
    // On a worker thread like every request, so that the allocator gives
    // the start-up's garbage back the same way.
    let e = engine.clone();
    tokio::task::spawn_blocking(move || {
        with_engine(&e, |eng| {
            if let Err(err) = eng.apply_all("start-up") {
                error!("start-up: {err}");
            }
        })
    })
    .await?;
    // Reading the stored bindings happened on this thread.
    give_back_memory();
    info!("ready: the rules were in the kernel in {:?} from the process's start", process_started.elapsed());

    let links = Arc::new(Notify::new());
    tokio::spawn({
        let n = links.clone();
        async move {
            if let Err(e) = watch_links(n).await {
                error!("interface events: {e:#}");
            }
        }
    });
    tokio::spawn(debounced(links, Duration::from_millis(30), engine.clone(), Engine::sync_ports));
    let engine_for_heal = engine.clone();
    tokio::spawn(async move {
        loop {
            nft.notified().await;
            use std::sync::atomic::Ordering::SeqCst;
            let (lost, deleted, edited) =
                (flags.lost.swap(false, SeqCst), flags.deleted.swap(false, SeqCst), flags.edited.swap(false, SeqCst));
            // A deletion known from the events needs no question to the
            // kernel, unless something else may have happened too.
            let why = match (lost, deleted, edited) {
                (true, _, _) => engine::Heal::Lost,
                (false, true, false) => engine::Heal::Deleted,
                _ => engine::Heal::Changed,
            };
            let e = engine_for_heal.clone();
            let _ = tokio::task::spawn_blocking(move || with_engine(&e, |eng| eng.heal(why))).await;
        }
    });

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    info!("listening on {}", args.socket.display());
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let (stream, _) = conn?;
                let e = engine.clone();
                tokio::spawn(async move {
                    if let Err(err) = serve_one(e, stream).await {
                        warn!("request failed: {err:#}");
                    }
                });
            }
            _ = hup.recv() => {
                let e = engine.clone();
                tokio::task::spawn_blocking(move || with_engine(&e, |eng| {
                    if let Err(err) = eng.apply_all("SIGHUP") {
                        error!("SIGHUP: {err}");
                    }
                })).await?;
            }
            _ = term.recv() => {
                info!("stopping; the rules stay in the kernel");
                let _ = std::fs::remove_file(&args.socket);
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => {
                info!("stopping; the rules stay in the kernel");
                let _ = std::fs::remove_file(&args.socket);
                return Ok(());
            }
        }
    }
}
