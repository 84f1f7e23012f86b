//! What the daemon tests share: a guestwalld in a test host, and waiting.
#![allow(dead_code)]

use gw_testns::TestHost;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

pub const GW: &str = env!("CARGO_BIN_EXE_guestwall");

pub fn daemon_bin() -> String {
    // guestwalld is built next to guestwall (scripts/test builds the workspace).
    let p = Path::new(GW).with_file_name("guestwalld");
    assert!(p.exists(), "{} is missing: build the workspace (cargo build --release)", p.display());
    p.display().to_string()
}

pub struct Daemon {
    pub dir: PathBuf,
    pub pid: u32,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(t: &mut TestHost, dir: &Path) -> Daemon {
        Daemon::start_with(t, dir, &[], &[])
    }

    /// Starts guestwalld in `t`'s host namespace with extra arguments,
    /// behind `prefix` (a command such as `prlimit --nofile=64:64`).
    pub fn start_with(t: &mut TestHost, dir: &Path, prefix: &[&str], extra: &[&str]) -> Daemon {
        std::fs::create_dir_all(dir).expect("daemon dir");
        let sock = dir.join("sock");
        let mut args: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        args.extend([
            daemon_bin(),
            "--socket".into(),
            sock.display().to_string(),
            "--config-dir".into(),
            dir.join("etc").display().to_string(),
            "--state-dir".into(),
            dir.join("var").display().to_string(),
            // Each test's own: daemons of parallel tests must not share one.
            "--libvirt-socket".into(),
            dir.join("libvirt-sock").display().to_string(),
            "--runtime-dir".into(),
            dir.join("run").display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let host = t.host.clone();
        let log = dir.join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        let pid = t.spawn(&host, &args, &log);
        let d = Daemon { dir: dir.to_path_buf(), pid, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if d.gw(&["status"]).status.success() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("guestwalld did not come up; log in {}", d.log.display());
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the daemon's process is still running.
    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|s| s.contains(") Z "))
    }

    pub fn gw(&self, args: &[&str]) -> Output {
        std::process::Command::new(GW)
            .arg("--socket")
            .arg(self.dir.join("sock"))
            .args(args)
            .output()
            .expect("run guestwall")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.gw(args);
        assert!(o.status.success(), "guestwall {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn fails(&self, args: &[&str], want: &str) {
        let o = self.gw(args);
        assert!(!o.status.success(), "guestwall {args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "guestwall {args:?}: expected {want:?} in {err}");
    }
}

pub fn tagged(tag: &str) -> String {
    format!("p.haslayer(Raw) and bytes(p[Raw].load).startswith(b'{tag}')")
}

/// A ruleset listing reduced to its content: nft lists chains in creation
/// order and set elements in hash order, which incremental updates change.
pub fn canonical(ruleset: &str) -> Vec<String> {
    let mut v: Vec<String> =
        ruleset.replace(',', "\n").lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    v.sort();
    v
}

pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if cond() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what} did not happen within 5 s");
}

/// A filter: clean-traffic, plus TCP to the guest only on port `PORT`
/// (replace it before use).
pub const POLICY: &str = "<filter name='policy'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in'><tcp dstportstart='PORT'/></rule>
  <rule action='drop' direction='in'><tcp/></rule>
</filter>
";

/// Defines [`POLICY`] (TCP to the guest only on port 22) and binds guest 1
/// to it with its address as `IP`.
pub fn bind_policy(t: &TestHost, d: &Daemon) {
    let f = t.filter_file("policy.xml", &POLICY.replace("PORT", "22"));
    d.ok(&["filter", "define", &f]);
    let b = t.binding(1, "policy", &[("IP", &t.guest(1).ip)]);
    d.ok(&["binding", "create", b.to_str().expect("path")]);
}
