//! Running `nft`: probing the kernel and applying a ruleset in one call.
//!
//! We drive the `nft` binary (as Proxmox and kube-proxy do) rather than
//! netlink: one `nft -f -` is one kernel transaction, its errors name the
//! offending line, and the text we feed it is the text users can read.

use crate::features::{Features, MarkBits, StateSource};
use crate::tickets::Ticket;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

pub use crate::tickets::is_ours;

/// `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started.
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` refused the ruleset; nothing was changed.
    #[error("{}", refused(*status, stderr))]
    Refused {
        /// nft's exit status.
        status: i32,
        /// What nft said.
        stderr: String,
    },
    /// `nft` was killed by a signal (the out-of-memory killer sends
    /// SIGKILL): whether its transaction was committed is not known.
    #[error(
        "nft was killed by signal {signal}{}; the change may or may not have been applied{}",
        signal_name(*signal),
        said(stderr)
    )]
    Killed {
        /// The signal.
        signal: i32,
        /// What nft said before it died.
        stderr: String,
    },
}

fn refused(status: i32, stderr: &str) -> String {
    if stderr.trim().is_empty() {
        format!("nft refused the ruleset (exit status {status}, no message), nothing was changed")
    } else {
        format!("nft refused the ruleset, nothing was changed:\n{stderr}")
    }
}

fn said(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; nft said:\n{stderr}")
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => " (SIGKILL: possibly the out-of-memory killer)",
        libc::SIGSEGV => " (SIGSEGV: nft crashed)",
        libc::SIGABRT => " (SIGABRT: nft aborted)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGHUP => " (SIGHUP)",
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGBUS => " (SIGBUS)",
        _ => "",
    }
}

/// Opens a ticket for the transaction that `pid` (a process or thread id)
/// is about to commit in this thread's network namespace, so that
/// [`is_ours`] recognises its generation. `pid` must be ours now and until
/// the ticket is settled or dropped: a child not yet reaped, a thread not
/// yet exited. Without a ticket (outside the initial pid namespace, or the
/// generation unreadable) the commit will count as foreign.
pub fn claim(pid: u32) -> Ticket {
    crate::tickets::claim(pid, || crate::netlink::generation().ok())
}

/// How a child ended, read without reaping it.
enum Ended {
    Exited(i32),
    Killed,
}

/// Waits for child `pid` to end and leaves it a zombie, waitable again:
/// until it is reaped its pid is no one else's.
fn ended_unreaped(pid: u32) -> std::io::Result<Ended> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only `info`; WNOWAIT leaves the child to
        // the `wait` that reaps it.
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            if info.si_code != libc::CLD_EXITED {
                return Ok(Ended::Killed);
            }
            // SAFETY: waitid succeeded with WEXITED: a child's SIGCHLD information.
            return Ok(Ended::Exited(unsafe { info.si_status() }));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Feeds `script` to `nft -f -` (with `--check`: validate only).
pub fn run_nft(script: &str, check: bool) -> Result<(), NftError> {
    run_program(std::ffi::OsStr::new("nft"), script, check)
}

fn run_program(program: &std::ffi::OsStr, script: &str, check: bool) -> Result<(), NftError> {
    let mut cmd = Command::new(program);
    if check {
        cmd.arg("--check");
    }
    let mut child = cmd
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Spawn)?;
    // nft commits only once it has read all of its input, and its pid is
    // ours until it is reaped below.
    let ticket = (!check).then(|| claim(child.id()));
    // Closing stdin ends nft's input.
    let written = child.stdin.take().map_or(Ok(()), |mut stdin| stdin.write_all(script.as_bytes()));
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut stderr);
    }
    let ended = ended_unreaped(child.id());
    if let Some(ticket) = ticket {
        match ended {
            // Refused: nothing was committed.
            Ok(Ended::Exited(code)) if code != 0 => drop(ticket),
            // Committed, or killed at a point unknown: whatever it did is
            // behind the generation now, read while its zombie holds the pid.
            Ok(_) => ticket.settle(crate::netlink::generation().ok()),
            Err(_) => drop(ticket),
        }
    }
    let status = child.wait().map_err(NftError::Spawn)?;
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        return Err(NftError::Killed { signal, stderr });
    }
    if !status.success() {
        return Err(NftError::Refused { status: status.code().unwrap_or(-1), stderr });
    }
    written.map_err(NftError::Spawn)
}

/// Asks the kernel (of the current network namespace) what it supports, by
/// checking small rulesets without committing them.
pub fn probe() -> Result<Features, NftError> {
    // One `nft --check` for all three (start-up time): the kernel checks
    // every message of a batch and nft reports each refusal with its line,
    // so the lines that fail say what is missing.
    const BASE_LINE: usize = 3;
    const CT_LINE: usize = 6;
    const REJECT_LINE: usize = 9;
    let script = "table bridge guestwall_probe {\n  chain p_base {\n    type filter hook prerouting priority 0; accept\n  }\n  chain p_ct {\n    type filter hook prerouting priority 0; ct state new accept\n  }\n  chain p_rj {\n    type filter hook prerouting priority 0; meta l4proto tcp reject\n  }\n}\n";
    let failed = match run_nft(script, true) {
        Ok(()) => Vec::new(),
        Err(NftError::Refused { status, stderr }) => {
            let lines: Vec<usize> =
                [BASE_LINE, CT_LINE, REJECT_LINE].into_iter().filter(|l| stderr.contains(&format!(":{l}:"))).collect();
            // A refusal on none of the probe lines is nft itself failing.
            if lines.is_empty() || lines.contains(&BASE_LINE) {
                return Err(NftError::Refused { status, stderr });
            }
            lines
        }
        Err(e) => return Err(e),
    };
    let state = if failed.contains(&CT_LINE) { StateSource::BrNetfilterMark } else { StateSource::BridgeConntrack };
    Ok(Features { state, bridge_reject: !failed.contains(&REJECT_LINE), counters: false, mark: MarkBits::DEFAULT })
}

/// Makes br_netfilter pass bridged IPv4/IPv6 through the inet hooks (where
/// conntrack runs), as the br_netfilter state path needs. Returns what it
/// changed.
pub fn enable_bridge_nf_call() -> std::io::Result<Vec<String>> {
    let mut changed = Vec::new();
    for f in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
        let path = format!("/proc/sys/net/bridge/{f}");
        let cur = std::fs::read_to_string(&path)?;
        if cur.trim() != "1" {
            std::fs::write(&path, "1")?;
            changed.push(format!("net.bridge.{f}=1"));
        }
    }
    Ok(changed)
}

/// Whether a port is a routed tap: the interface exists and is not a
/// bridge port. A port that does not exist yet counts as bridged (its
/// bridge-family map entries are harmless until it appears).
pub fn port_is_routed(port: &str) -> bool {
    let dev = std::path::Path::new("/sys/class/net").join(port);
    dev.exists() && !dev.join("brport").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for nft: a shell script, in a directory of its own.
    fn fake_nft(name: &str, body: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gw-nft-fake-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("nft");
        std::fs::write(&path, format!("#!/bin/sh\ncat >/dev/null\n{body}\n")).expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn run_fake(name: &str, body: &str) -> Result<(), NftError> {
        let path = fake_nft(name, body);
        // Another test thread forking while the script was being written
        // can hold it open for a moment: exec then fails with ETXTBSY.
        let mut r = run_program(path.as_os_str(), "table inet x {}\n", true);
        for _ in 0..50 {
            match &r {
                Err(NftError::Spawn(e)) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    r = run_program(path.as_os_str(), "table inet x {}\n", true);
                }
                _ => break,
            }
        }
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
        r
    }

    #[test]
    fn nft_killed_by_a_signal_may_have_applied_the_change() {
        let e = run_fake("killed", "kill -KILL $$").expect_err("killed");
        assert!(matches!(e, NftError::Killed { signal: 9, .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.contains("killed by signal 9 (SIGKILL: possibly the out-of-memory killer)"), "{m}");
        assert!(m.contains("may or may not have been applied"), "{m}");
        assert!(!m.contains("nothing was changed"), "{m}");
        let e = run_fake("segv", "echo 'half a message' >&2; kill -SEGV $$").expect_err("crashed");
        let m = e.to_string();
        assert!(m.contains("signal 11 (SIGSEGV: nft crashed)") && m.contains("half a message"), "{m}");
    }

    #[test]
    fn nft_failing_without_a_message_names_its_exit_status() {
        let e = run_fake("silent", "exit 3").expect_err("failed");
        assert!(matches!(e, NftError::Refused { status: 3, .. }), "{e:?}");
        assert_eq!(e.to_string(), "nft refused the ruleset (exit status 3, no message), nothing was changed");
        let e = run_fake("said", "echo 'Error: no such table' >&2; exit 1").expect_err("refused");
        assert_eq!(e.to_string(), "nft refused the ruleset, nothing was changed:\nError: no such table\n");
        run_fake("fine", "exit 0").expect("nft succeeded");
    }
}
