//! libvirt's qemu hook for a monolithic libvirtd (one whose nwfilter driver
//! is built in, as Debian 12's libvirt 9.0): `/etc/libvirt/hooks/qemu.d/guestwall`
//! runs `guestwall libvirt-hook qemu DOMAIN OP SUBOP EXTRA` with the domain
//! XML on stdin, and guestwall binds the domain's ports through guestwalld.
//!
//! When each op runs (libvirt 9.0, `src/qemu/qemu_process.c`):
//! - `prepare` comes before the taps exist (`qemuProcessInit`);
//! - `start` comes after `qemuBuildCommandLine`, which creates every tap and
//!   puts it on its bridge, and before QEMU is even executed, so the guest's
//!   CPUs have not run: this is where the bindings are made;
//! - `started` comes after the CPUs are running: too late;
//! - `stopped` and `release` come after libvirt forgot the generated tap
//!   names (their XML has no `<target dev>`), so the domain's bindings are
//!   found by their owner; `release` finds none left after `stopped`;
//! - `reconnect` when libvirtd restarts with the guest running; a failure
//!   there makes libvirtd kill the guest;
//! - `migrate` (incoming) and `restore` are XML filters whose empty output
//!   means "unchanged"; the start ops follow them as for any start.
//!
//! The hook never calls libvirt (libvirt holds the domain's job while it
//! runs: a call back would deadlock), and is bounded in time ([`DEADLINE`]).

use crate::libvirt_domain::{read_domain, Domain, MAX_DOMAIN_XML_BYTES};
use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use gw_api::{ClientError, ErrorCode, Request, Response};
use gw_model::Binding;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the hook may take, all of it: reading stdin, every request to
/// guestwalld and the daemon's answers. libvirtd waits for a hook without a
/// limit of its own while it holds the domain's job, and other calls on that
/// domain give up after 30 s waiting for it (libvirt's job wait time); 15 s
/// stays well inside that, yet covers a daemon busy with the largest request
/// it serves (a 10,000-binding batch, 5-7 s here) before ours.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// How long a missing daemon is waited for (its socket absent or not
/// accepting): long enough for systemd to restart it (RestartSec=1) or for a
/// boot that started libvirtd first, short enough that a start without the
/// daemon fails promptly.
pub const DAEMON_WAIT: Duration = Duration::from_secs(5);

/// The hook's file, under the root given to `install`.
pub const HOOK_PATH: &str = "etc/libvirt/hooks/qemu.d/guestwall";

#[derive(Subcommand)]
pub enum HookCmd {
    /// What libvirtd runs: `qemu DOMAIN OP SUBOP EXTRA`, the domain XML on stdin.
    Qemu {
        /// The domain's name.
        domain: String,
        /// prepare, start, started, stopped, release, reconnect, migrate, restore, attach, ...
        op: String,
        /// begin or end (or -).
        #[arg(allow_hyphen_values = true)]
        subop: Option<String>,
        /// Anything else libvirtd passes (-).
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        extra: Vec<String>,
    },
    /// Write ROOT/etc/libvirt/hooks/qemu.d/guestwall, a script that runs this
    /// binary; restart libvirtd afterwards so that it sees the hook.
    Install {
        /// Where / is (for tests and images).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

/// What the hook does at an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Make sure every binding exists as the XML says (replacing a stale
    /// or foreign one), creating the missing in one request.
    Ensure,
    /// Delete the domain's bindings.
    Remove,
    /// Check the XML can be read (and print nothing: unchanged).
    Check,
    /// Nothing.
    Nothing,
}

/// The action for an op (see the module's doc for when each runs).
pub fn action(op: &str) -> Action {
    match op {
        "start" | "reconnect" => Action::Ensure,
        "stopped" | "release" => Action::Remove,
        "migrate" | "restore" => Action::Check,
        _ => Action::Nothing,
    }
}

/// A hook failure: one line for libvirt's error (it shows the hook's stderr).
#[derive(Debug, thiserror::Error)]
#[error("domain {domain}: {message}")]
pub struct HookFailed {
    domain: String,
    message: String,
}

fn read_stdin(deadline: Instant) -> Result<String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_DOMAIN_XML_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .context("cannot read the domain XML from stdin")?;
    if buf.len() > MAX_DOMAIN_XML_BYTES {
        bail!("the domain XML on stdin is over {MAX_DOMAIN_XML_BYTES} bytes (4 MiB, MAX_DOMAIN_XML_BYTES)");
    }
    if Instant::now() > deadline {
        bail!("reading the domain XML took longer than {} s", DEADLINE.as_secs());
    }
    String::from_utf8(buf)
        .map_err(|e| anyhow::anyhow!("the domain XML is not UTF-8 (byte {})", e.utf8_error().valid_up_to()))
}

/// guestwalld's socket, and how long a daemon not (yet) there is waited for.
struct Client<'a> {
    socket: &'a Path,
    wait: Duration,
}

/// One request to guestwalld.
fn call(c: &Client, request: Request) -> Result<Response> {
    let t0 = Instant::now();
    loop {
        match gw_api::call(c.socket, request.clone()) {
            Err(ClientError::Connect { source, .. })
                if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused)
                    && t0.elapsed() < c.wait =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            r => return Ok(r?),
        }
    }
}

fn refused(what: &str, e: gw_api::ApiError) -> anyhow::Error {
    anyhow::anyhow!("guestwalld refused to {what}: {}", e.messages.join("; "))
}

/// The binding guestwalld keeps for a port, if any.
fn current(c: &Client, port: &str) -> Result<Option<Binding>> {
    match call(c, Request::BindingDumpxml { portdev: port.to_string() })? {
        Response::Xml { xml } => match gw_xml::read_binding(&xml) {
            Ok(b) => Ok(Some(b.value)),
            // Not ours to judge: a binding we cannot read is replaced.
            Err(_) => Ok(Some(placeholder(port)?)),
        },
        Response::Error(e) if e.code == ErrorCode::NotFound => Ok(None),
        Response::Error(e) => Err(refused(&format!("show the binding of {port}"), e)),
        other => bail!("guestwalld answered a binding dumpxml with {other:?}"),
    }
}

/// A binding that equals nothing the domain wants, so it is replaced.
fn placeholder(port: &str) -> Result<Binding> {
    Ok(Binding {
        owner: gw_model::Owner { name: String::new(), uuid: String::new() },
        portdev: gw_model::IfName::new(port).map_err(anyhow::Error::msg)?,
        linkdev: None,
        mac: gw_model::MacAddr([0; 6]),
        filterref: gw_model::FilterRef { filter: String::new(), params: Default::default() },
    })
}

fn delete(c: &Client, port: &str) -> Result<bool> {
    match call(c, Request::BindingDelete { portdev: port.to_string() })? {
        Response::Ok { .. } => Ok(true),
        Response::Error(e) if e.code == ErrorCode::NotFound => Ok(false),
        Response::Error(e) => Err(refused(&format!("delete the binding of {port}"), e)),
        other => bail!("guestwalld answered a binding delete with {other:?}"),
    }
}

/// What [`ensure`] did.
#[derive(Debug, Default)]
pub struct Ensured {
    /// Already bound as wanted.
    pub kept: usize,
    /// Bound to something else before (another guest, MAC or filter): deleted, then created.
    pub replaced: usize,
    /// Created.
    pub created: usize,
}

/// Makes guestwalld's bindings for these ports equal to `wanted`: a binding
/// that already is so stays (a reconnect, or libvirt made it through the
/// nwfilter RPC); one with another owner, MAC or filter is deleted, since
/// the tap is this domain's now and nothing of another may stay on it; the
/// missing ones are created in one request, all or none.
fn ensure(c: &Client, wanted: &[Binding]) -> Result<Ensured> {
    let mut done = Ensured::default();
    let mut create = Vec::new();
    for b in wanted {
        match current(c, &b.portdev)? {
            Some(have) if have == *b => done.kept += 1,
            Some(_) => {
                delete(c, &b.portdev)?;
                done.replaced += 1;
                create.push(b);
            }
            None => create.push(b),
        }
    }
    if create.is_empty() {
        return Ok(done);
    }
    let documents = create.iter().map(|b| gw_xml::write_binding(b)).collect();
    match call(c, Request::BindingCreateBatch { documents, runtime: true })? {
        Response::Ok { .. } => {
            done.created = create.len();
            Ok(done)
        }
        Response::Error(e) => {
            let ports: Vec<&str> = create.iter().map(|b| b.portdev.as_str()).collect();
            Err(refused(&format!("bind {}", ports.join(", ")), e))
        }
        other => bail!("guestwalld answered a binding create with {other:?}"),
    }
}

/// Deletes the domain's bindings: those guestwalld keeps for this domain's
/// uuid. They are found by the owner, not by the XML's ports: libvirt 9.0
/// has already forgotten the tap names when it runs `stopped` (its XML then
/// has no `<target dev>`). A port whose binding another guest holds now is
/// left alone. Returns how many went.
fn remove(c: &Client, domain: &Domain) -> Result<usize> {
    let listed = match call(c, Request::BindingList)? {
        Response::Bindings { bindings } => bindings,
        Response::Error(e) => return Err(refused("list the bindings", e)),
        other => bail!("guestwalld answered a binding list with {other:?}"),
    };
    let mut ports: Vec<String> = listed.into_iter().filter(|b| b.owner == domain.name).map(|b| b.portdev).collect();
    ports.extend(domain.interfaces.iter().filter_map(|i| i.target.clone()));
    ports.sort();
    ports.dedup();
    let mut n = 0;
    for port in ports {
        let ours = matches!(current(c, &port)?, Some(b) if b.owner.uuid == domain.uuid);
        if ours && delete(c, &port)? {
            n += 1;
        }
    }
    Ok(n)
}

fn run_op(socket: &Path, name: &str, op: &str, deadline: Instant) -> Result<()> {
    let what = action(op);
    if what == Action::Nothing {
        return Ok(());
    }
    let xml = read_stdin(deadline)?;
    let domain = read_domain(&xml, "domain XML")?;
    if domain.name != name {
        bail!("the XML on stdin is of domain '{}', not '{name}'", domain.name);
    }
    if !domain.has_references() {
        return Ok(());
    }
    match what {
        Action::Ensure => {
            let wanted = domain.bindings().map_err(anyhow::Error::msg)?;
            let t0 = Instant::now();
            // A daemon starting (boot, restart) is waited for: a start that
            // fails for want of it costs the guest its start or, at
            // reconnect, its life.
            let done = ensure(&Client { socket, wait: DAEMON_WAIT }, &wanted)?;
            // libvirtd shows a hook's output only when it fails; this line is
            // for people running the hook by hand, and for the tests.
            eprintln!(
                "guestwall: domain {name}: {op}: {} binding(s) created, {} replaced, {} already in place, in {:?}",
                done.created,
                done.replaced,
                done.kept,
                t0.elapsed()
            );
            Ok(())
        }
        Action::Remove => {
            // libvirtd goes on whatever the hook says here: no waiting. A
            // binding left behind is replaced when its port is next bound.
            let n = remove(&Client { socket, wait: Duration::ZERO }, &domain)?;
            eprintln!("guestwall: domain {name}: {op}: {n} binding(s) deleted");
            Ok(())
        }
        Action::Check => domain.bindings().map(drop).or_else(|e| {
            // Before the start there is no <target dev> yet: only the
            // references themselves are checked here.
            if e.contains("no host port") {
                Ok(())
            } else {
                Err(anyhow::Error::msg(e))
            }
        }),
        Action::Nothing => Ok(()),
    }
}

/// `guestwall libvirt-hook qemu ...`: runs the op within [`DEADLINE`]; any
/// failure is one line, `guestwall: domain D: ...`, and status 1, which
/// makes libvirtd refuse the start (and shows the line in its error).
pub fn qemu(socket: &Path, name: &str, op: &str) -> Result<crate::Outcome> {
    let deadline = Instant::now() + DEADLINE;
    let (tx, rx) = std::sync::mpsc::channel();
    let (s, n, o) = (socket.to_path_buf(), name.to_string(), op.to_string());
    // On a thread, so that the deadline holds whatever blocks (a daemon that
    // accepts and never answers, a full listen queue, a stdin never closed);
    // the process exits with it still running.
    std::thread::spawn(move || {
        let r = run_op(&s, &n, &o, deadline);
        let _ = tx.send(r);
    });
    let r = match rx.recv_timeout(DEADLINE) {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "no answer from guestwalld at {} within {} s; the ports are not filtered",
            socket.display(),
            DEADLINE.as_secs()
        )),
    };
    match r {
        Ok(()) => Ok(crate::Outcome::Ok),
        Err(e) => {
            // One line: libvirt puts it into its own one-line error.
            let message = crate::chain_text(e.chain()).replace('\n', "; ");
            Err(HookFailed { domain: name.to_string(), message }.into())
        }
    }
}

/// Quotes a word for sh: inside single quotes nothing is special but the
/// single quote itself.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The hook script: a tiny shell script, so that libvirtd (which runs every
/// executable in qemu.d) reaches the binary wherever it is installed.
pub fn script(binary: &Path, socket: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         # guestwall's qemu hook, written by `guestwall libvirt-hook install`.\n\
         # libvirtd runs it as: guestwall DOMAIN OP SUBOP EXTRA, the domain XML on stdin.\n\
         exec {} --socket {} libvirt-hook qemu \"$@\"\n",
        sh_quote(&binary.display().to_string()),
        sh_quote(&socket.display().to_string())
    )
}

/// `guestwall libvirt-hook install`: writes the script, mode 0755, through a
/// temporary file renamed into place (libvirtd may be running hooks).
pub fn install(socket: &Path, root: &Path) -> Result<crate::Outcome> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let binary = std::env::current_exe().context("cannot tell where this guestwall binary is")?;
    let binary = binary.canonicalize().unwrap_or(binary);
    let path = root.join(HOOK_PATH);
    let dir = path.parent().context("the hook path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".guestwall.{}.tmp", std::process::id()));
    let text = script(&binary, socket);
    let written = std::fs::OpenOptions::new()
        .write(true)
        // create_new and O_NOFOLLOW: a file or symlink planted at the
        // temporary name is never written through.
        .create_new(true)
        .mode(0o755)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            // The mode asked at creation is masked by the umask.
            f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    crate::print(
        format!(
            "wrote {} (runs {}); restart libvirtd so that it sees the new hook\n",
            path.display(),
            binary.display()
        )
        .as_bytes(),
    )?;
    Ok(crate::Outcome::Ok)
}

pub fn run(socket: &Path, cmd: HookCmd) -> Result<crate::Outcome> {
    match cmd {
        HookCmd::Qemu { domain, op, .. } => qemu(socket, &domain, &op),
        HookCmd::Install { root } => install(socket, &root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops() {
        assert_eq!(action("start"), Action::Ensure);
        assert_eq!(action("reconnect"), Action::Ensure);
        assert_eq!(action("stopped"), Action::Remove);
        assert_eq!(action("release"), Action::Remove);
        assert_eq!(action("migrate"), Action::Check);
        assert_eq!(action("restore"), Action::Check);
        for op in ["prepare", "started", "attach", "frobnicate", ""] {
            assert_eq!(action(op), Action::Nothing, "{op}");
        }
    }

    #[test]
    fn script_quotes_its_paths() {
        let s = script(Path::new("/opt/it's/guestwall"), Path::new("/run/g w.sock"));
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(
            s.contains("exec '/opt/it'\\''s/guestwall' --socket '/run/g w.sock' libvirt-hook qemu \"$@\"\n"),
            "{s}"
        );
    }
}
