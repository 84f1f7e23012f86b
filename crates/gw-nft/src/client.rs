//! Running `nft`: probing the kernel and applying a ruleset in one call.
//!
//! We drive the `nft` binary (as Proxmox and kube-proxy do) rather than
//! netlink: one `nft -f -` is one kernel transaction, its errors name the
//! offending line, and the text we feed it is the text users can read.

use crate::expr::StateSource;
use crate::ruleset::Features;
use std::io::Write;
use std::process::{Command, Stdio};

/// `nft` failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started.
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` refused the ruleset; nothing was changed.
    #[error("nft refused the ruleset, nothing was changed:\n{stderr}")]
    Refused {
        /// What nft said.
        stderr: String,
    },
}

/// Processes and threads that committed our transactions lately: the
/// kernel names the committer of every ruleset generation, and changes by
/// others to our tables are what healing reacts to.
static OURS: std::sync::Mutex<std::collections::VecDeque<u32>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// Remembers `pid` (a process or thread id) as one of ours.
pub fn claim(pid: u32) {
    if let Ok(mut v) = OURS.lock() {
        if v.len() >= 64 {
            v.pop_front();
        }
        v.push_back(pid);
    }
}

/// Whether `pid` committed a transaction of ours lately.
pub fn is_ours(pid: u32) -> bool {
    OURS.lock().map(|v| v.contains(&pid)).unwrap_or(false)
}

/// Feeds `script` to `nft -f -` (with `--check`: validate only).
pub fn run_nft(script: &str, check: bool) -> Result<(), NftError> {
    let mut cmd = Command::new("nft");
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
    if !check {
        claim(child.id());
    }
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(NftError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused { stderr: String::from_utf8_lossy(&out.stderr).into_owned() })
    }
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
        Err(NftError::Refused { stderr }) => {
            let lines: Vec<usize> =
                [BASE_LINE, CT_LINE, REJECT_LINE].into_iter().filter(|l| stderr.contains(&format!(":{l}:"))).collect();
            // A refusal on none of the probe lines is nft itself failing.
            if lines.is_empty() || lines.contains(&BASE_LINE) {
                return Err(NftError::Refused { stderr });
            }
            lines
        }
        Err(e) => return Err(e),
    };
    let state = if failed.contains(&CT_LINE) { StateSource::BrNetfilterMark } else { StateSource::BridgeConntrack };
    Ok(Features { state, bridge_reject: !failed.contains(&REJECT_LINE), counters: false })
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
