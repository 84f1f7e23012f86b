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
mod events;
mod kernel;
mod libvirt;
mod links;
#[cfg(test)]
mod tests;

use anyhow::{bail, Context, Result};
use clap::Parser;
use engine::Engine;
use events::Inbox;
use gw_api::{ApiError, ErrorCode, Response};
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
    /// Where libvirt's clients (virsh, virtqemud, libvirt-python) reach the
    /// nwfilter driver: guestwall serves libvirt's RPC protocol there.
    /// Left alone (with a warning) when virtnwfilterd answers on it.
    #[arg(long, default_value = LIBVIRT_SOCKET)]
    libvirt_socket: PathBuf,
    /// Do not serve libvirt's protocol.
    #[arg(long)]
    no_libvirt: bool,
    /// Where filters are kept (one NAME.xml each).
    #[arg(long, default_value = "/etc/guestwall")]
    config_dir: PathBuf,
    /// Where bindings are kept.
    #[arg(long, default_value = "/var/lib/guestwall")]
    state_dir: PathBuf,
    /// Where runtime bindings are kept (libvirt's, and `binding create
    /// --runtime`): on a tmpfs, so that they are gone after a reboot.
    #[arg(long, default_value = "/run/guestwall")]
    runtime_dir: PathBuf,
    /// Give every rule a counter (costs forwarding rate; shows which rules decide).
    #[arg(long)]
    counters: bool,
    /// The five packet-mark bits that carry conntrack state to the bridge
    /// chains when the kernel has no bridge conntrack (choose bits no other
    /// tool on this host uses).
    #[arg(long, default_value = "0x1f000000", value_parser = parse_mark_mask)]
    ct_mark_mask: gw_nft::MarkBits,
    /// Connections served at once; more wait in the listen queue.
    #[arg(long, default_value_t = MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds a connection may take to send its request (and to take its
    /// answer) before it is closed.
    #[arg(long, default_value_t = IDLE_TIMEOUT.as_secs_f64())]
    idle_timeout: f64,
}

/// virtnwfilterd's socket: libvirt's clients connect there for
/// `nwfilter:///system`.
pub const LIBVIRT_SOCKET: &str = "/run/libvirt/virtnwfilterd-sock";

fn parse_mark_mask(s: &str) -> Result<gw_nft::MarkBits, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("'{s}' is not a 32-bit number: {e}"))?;
    gw_nft::MarkBits::new(v).map_err(|e| e.to_string())
}

/// At most this many connections are served at once; more wait in the
/// listen queue. Each holds a file descriptor and a task, and a request's
/// work is serialised on the engine anyway.
pub const MAX_CONNECTIONS: usize = 256;

/// A connection must deliver its whole request within this time, and take
/// its answer within it, or it is closed: idle connections would otherwise
/// hold descriptors forever.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

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

fn refusal(code: ErrorCode, message: String) -> Response {
    Response::Error(ApiError { code, messages: vec![message] })
}

async fn serve_one(inbox: Inbox, stream: UnixStream, idle: Duration) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let uid = {
        use std::os::fd::AsFd;
        nix::sys::socket::getsockopt(&stream.as_fd(), nix::sys::socket::sockopt::PeerCredentials)
            .map(|c| c.uid())
            .unwrap_or(u32::MAX)
    };
    let (read, mut write) = stream.into_split();
    if uid != 0 {
        // Refused before reading: a stranger cannot make the daemon hold a
        // 64 MiB line.
        warn!("refused a request from uid {uid}");
        let r = refusal(ErrorCode::Denied, format!("guestwalld accepts requests only from root (you are uid {uid})"));
        tokio::time::timeout(idle, write.write_all(&gw_api::encode_response(&r))).await??;
        return Ok(());
    }
    // One line, at most MAX_REQUEST_LEN bytes (one more tells it is too
    // long), within IDLE_TIMEOUT.
    let mut line = Vec::new();
    let limit = gw_api::MAX_REQUEST_LEN as u64 + 1;
    let read = tokio::time::timeout(idle, BufReader::new(read.take(limit)).read_until(b'\n', &mut line)).await;
    let response = match read {
        Err(_) => {
            // Say why before closing, if the peer still listens.
            refusal(ErrorCode::BadRequest, format!("no complete request line within {:?}: connection closed", idle))
        }
        Ok(Err(e)) => return Err(e.into()),
        // Connected and closed without asking (a liveness probe).
        Ok(Ok(0)) => return Ok(()),
        Ok(Ok(_)) => match gw_api::decode_request(&line) {
            Ok(request) => {
                drop(line);
                inbox.request(request).await
            }
            Err(e) => Response::Error(e),
        },
    };
    let out = gw_api::encode_response(&response);
    tokio::time::timeout(idle, write.write_all(&out)).await.context("the client did not take its answer")??;
    Ok(())
}

/// Posts [`events::Event::LinksChanged`] on every interface event (new,
/// changed, removed links).
async fn watch_links(inbox: Inbox) -> Result<()> {
    use futures::StreamExt;
    use netlink_sys::AsyncSocket;
    let (mut conn, _handle, mut messages) = rtnetlink::new_connection()?;
    conn.socket_mut().socket_mut().bind(&netlink_sys::SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK))?;
    tokio::spawn(conn);
    while messages.next().await.is_some() {
        inbox.links_changed();
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

/// Lets the daemon hold as many descriptors as the hard limit allows: each
/// client, netlink socket and nft pipe is one.
/// Returns the (new) soft limit.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() => hard,
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// How often the mark-bit report is refreshed.
const MARK_REPORT_EVERY: Duration = Duration::from_secs(3);

/// Descriptors kept free of clients: healing and requests need some for
/// nft's pipes, netlink sockets and the store.
const FD_RESERVE: u64 = 32;

/// Loads nf_conntrack_bridge when the kernel has it as a module, so that
/// the probe finds bridge-family conntrack: state then comes from the
/// kernel itself, and no mark bits are shared with other tools.
fn load_bridge_conntrack() {
    let loaded = std::fs::read_to_string("/proc/modules")
        .is_ok_and(|m| m.lines().any(|l| l.starts_with("nf_conntrack_bridge ")));
    // Only when this kernel ships it as a module: running modprobe costs
    // start-up milliseconds for nothing otherwise.
    let shipped = nix::sys::utsname::uname().is_ok_and(|u| {
        let dep = std::path::Path::new("/lib/modules").join(u.release()).join("modules.dep");
        std::fs::read_to_string(dep).is_ok_and(|d| d.contains("/nf_conntrack_bridge.ko"))
    });
    if loaded || !shipped {
        return;
    }
    match std::process::Command::new("modprobe").args(["-q", "nf_conntrack_bridge"]).status() {
        Ok(s) if s.success() => info!("loaded nf_conntrack_bridge"),
        // Built in, absent, or no modprobe: the probe tells which path is used.
        _ => {}
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
    // The state directory's lock first, before anything touches the kernel.
    let store = gw_store::Store::open(&args.config_dir, &args.state_dir)?.with_runtime(&args.runtime_dir)?;
    let fds = raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(args, store, process_started, fds))
}

async fn run(args: Args, store: gw_store::Store, process_started: std::time::Instant, fds: u64) -> Result<()> {
    load_bridge_conntrack();
    let features = gw_nft::Features {
        counters: args.counters,
        mark: args.ct_mark_mask,
        ..gw_nft::probe().context("probing nftables")?
    };
    info!("{}", features.describe());
    if features.state == gw_nft::StateSource::BrNetfilterMark {
        match gw_nft::enable_bridge_nf_call() {
            Ok(c) if !c.is_empty() => info!("set {}", c.join(", ")),
            Ok(_) => {}
            Err(e) => warn!("cannot enable bridge-nf-call sysctls: {e}"),
        }
    }
    let listener = bind_socket(&args.socket)?;
    // Another nwfilter daemon keeps its socket; guestwall still filters.
    let libvirt_listener = match args.no_libvirt {
        true => None,
        false => match bind_socket(&args.libvirt_socket) {
            Ok(l) => l.into_std().ok(),
            Err(e) => {
                warn!("not serving libvirt's protocol: {e:#}");
                None
            }
        },
    };
    let nft = Arc::new(Notify::new());
    let flags = Arc::new(HealFlags::default());
    watch_nft(nft.clone(), flags.clone())?;
    let kernel = kernel::Kernel::new(features, Box::new(gw_nft::System));
    let report: Arc<Mutex<Vec<String>>> = Default::default();
    let (inbox, ready) = {
        let (kernel, report) = (kernel.clone(), report.clone());
        events::start(move || Engine::load(store, kernel, Box::new(links::System), report))?
    };
    match ready.await.context("the reconciler did not start")?? {
        Response::Error(err) => error!(
            "serving, but the stored rules are NOT in the kernel: start-up failed: {err}; fix the cause, then `guestwall reload`"
        ),
        _ => {
            info!("ready: the rules were in the kernel in {:?} from the process's start", process_started.elapsed())
        }
    }

    let mut sockets = vec![args.socket.clone()];
    if let Some(l) = libvirt_listener {
        // The std listener is blocking: its clients have threads of their own.
        l.set_nonblocking(false)?;
        libvirt::serve(l, inbox.clone(), args.max_connections)?;
        info!("serving libvirt's nwfilter protocol on {}", args.libvirt_socket.display());
        sockets.push(args.libvirt_socket.clone());
    }

    // The mark-bit report: at start and every few seconds, off the request
    // path (listing other tables costs nft runs); new warnings are logged.
    {
        std::thread::Builder::new().name("mark-report".into()).spawn(move || {
            // At low priority (the nft it runs inherits it), and not in the
            // first second, when requests and healing come first.
            // SAFETY: setpriority on this thread's own id has no preconditions.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
            }
            std::thread::sleep(Duration::from_secs(1));
            let mut seen: Vec<String> = Vec::new();
            loop {
                let lines = engine::mark_report(features);
                for l in lines.iter().filter(|l| !seen.contains(l)) {
                    warn!("{l}");
                }
                seen.clone_from(&lines);
                if let Ok(mut r) = report.lock() {
                    *r = lines;
                }
                std::thread::sleep(MARK_REPORT_EVERY);
            }
        })?;
    }
    tokio::spawn({
        let inbox = inbox.clone();
        async move {
            if let Err(e) = watch_links(inbox).await {
                error!("interface events: {e:#}");
            }
        }
    });
    tokio::spawn(async move {
        loop {
            nft.notified().await;
            use std::sync::atomic::Ordering::SeqCst;
            let (lost, deleted, edited) =
                (flags.lost.swap(false, SeqCst), flags.deleted.swap(false, SeqCst), flags.edited.swap(false, SeqCst));
            // A deletion known from the events needs no question to the
            // kernel, unless something else may have happened too.
            let why = match (lost, deleted, edited) {
                (true, _, _) => kernel::Heal::Lost,
                (false, true, false) => kernel::Heal::Deleted,
                _ => kernel::Heal::Changed,
            };
            // The kernel's lock only: a client's request holds the engine
            // while it parses, compiles and stores, and must not delay this.
            let k = kernel.clone();
            let _ = tokio::task::spawn_blocking(move || kernel::lock(&k).heal(why)).await;
        }
    });

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    info!("listening on {}", args.socket.display());
    // Clients never take the descriptors healing needs.
    let room = usize::try_from(fds.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX).max(1);
    if room < args.max_connections {
        warn!("serving at most {room} connections at once: the descriptor limit is {fds}");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(args.max_connections.min(room).max(1)));
    let idle = Duration::try_from_secs_f64(args.idle_timeout).unwrap_or(IDLE_TIMEOUT);
    let mut last_accept_warning: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            (permit, conn) = async {
                let permit = slots.clone().acquire_owned().await;
                (permit, listener.accept().await)
            } => {
                let stream = match conn {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors (EMFILE, ENFILE) or memory, or a
                        // client gone before it was accepted: the daemon goes
                        // on; connections time out and free descriptors.
                        if last_accept_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            warn!("accepting a connection failed: {e}; retrying");
                            last_accept_warning = Some(std::time::Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(err) = serve_one(inbox, stream, idle).await {
                        warn!("request failed: {err:#}");
                    }
                });
            }
            _ = hup.recv() => inbox.reload("SIGHUP"),
            _ = term.recv() => {
                info!("stopping; the rules stay in the kernel");
                sockets.iter().for_each(|s| { let _ = std::fs::remove_file(s); });
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => {
                info!("stopping; the rules stay in the kernel");
                sockets.iter().for_each(|s| { let _ = std::fs::remove_file(s); });
                return Ok(());
            }
        }
    }
}
