//! Healing cannot be skipped by reusing a pid (security review, finding 8).
//!
//! The kernel names the committer of each ruleset generation by its pid.
//! Once the daemon's `nft` is reaped, or one of its threads has exited,
//! another process may get that pid; its changes to guestwall's tables must
//! still be healed. These tests give a foreign `nft` exactly such a pid: they
//! set the kernel's pid cursor (`/proc/sys/kernel/ns_last_pid`, in the
//! initial pid namespace, where the kernel's events name committers) just
//! below it, start a shell that waits before it execs `nft`, and keep it
//! only if it got the pid (other processes fork too).

use gw_testns::TestHost;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use common::{bind_policy, wait_for, Daemon};

/// The tests move the system's pid cursor: one at a time.
static PIDS: Mutex<()> = Mutex::new(());

/// How often the daemon healed so far.
trait Heals {
    fn heals(&self) -> usize;
}

impl Heals for Daemon {
    fn heals(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("another process changed guestwall's tables")
            .count()
    }
}

/// A ruleset generation as `nft monitor` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generation {
    id: u32,
    pid: u32,
    comm: String,
}

/// `nft monitor` in a namespace: the generations committed there.
struct Monitor {
    child: Child,
    lines: Receiver<Generation>,
}

impl Monitor {
    /// Starts one in the host namespace and waits until it hears commits.
    fn start(t: &TestHost) -> Monitor {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &t.host, "nft", "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("nft monitor");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // "# new generation 12 by process 3456 (nft)"
                let Some(rest) = line.strip_prefix("# new generation ") else { continue };
                let mut w = rest.split_whitespace();
                let id = w.next().and_then(|s| s.parse().ok());
                let pid = w.nth(2).and_then(|s| s.parse().ok());
                let comm = w.next().unwrap_or_default().trim_matches(|c| c == '(' || c == ')').to_string();
                if let (Some(id), Some(pid)) = (id, pid) {
                    if tx.send(Generation { id, pid, comm }).is_err() {
                        return;
                    }
                }
            }
        });
        let m = Monitor { child, lines };
        let start = Instant::now();
        // Each of these is a generation (adding a table that exists is not).
        for verb in ["add", "delete"].iter().cycle() {
            assert!(start.elapsed() < Duration::from_secs(10), "nft monitor hears nothing");
            let o = t.exec(&t.host, &["nft", verb, "table", "inet", "pid_reuse_probe"]);
            assert!(o.status.success(), "nft: {}", String::from_utf8_lossy(&o.stderr));
            if *verb == "delete" && m.lines.recv_timeout(Duration::from_millis(300)).is_ok() {
                break;
            }
        }
        m.drain(Duration::from_millis(300));
        m
    }

    /// The generations reported until `quiet` passes without one.
    fn drain(&self, quiet: Duration) -> Vec<Generation> {
        let mut v = Vec::new();
        while let Ok(g) = self.lines.recv_timeout(quiet) {
            v.push(g);
        }
        v
    }

    fn next(&self, within: Duration) -> Generation {
        self.lines.recv_timeout(within).unwrap_or_else(|e| panic!("no generation within {within:?}: {e}"))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `nft ARGS` in namespace `ns` as process `pid` (which must be free),
/// or returns `None` when other processes kept taking that pid.
fn nft_as_pid(ns: &str, pid: u32, args: &[&str]) -> Option<Output> {
    for attempt in 1..=500 {
        if Path::new(&format!("/proc/{pid}")).exists() {
            // Taken, and kept.
            return None;
        }
        // The next process anyone starts gets the next free pid after the cursor.
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("write /proc/sys/kernel/ns_last_pid (needs root in the initial pid namespace)");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("read go && exec ip netns exec \"$0\" nft \"$@\"")
            .arg(ns)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh");
        if child.id() != pid {
            // Someone else got it first; this one never ran nft.
            let _ = child.kill();
            let _ = child.wait();
            continue;
        }
        eprintln!("a foreign nft runs as pid {pid} (attempt {attempt})");
        // `ip netns exec` and then nft replace the shell: same pid.
        child.stdin.take().expect("stdin").write_all(b"go\n").expect("release the shell");
        return Some(child.wait_with_output().expect("nft"));
    }
    None
}

/// The element of port `port` in one of guestwall's verdict maps, as
/// `nft list ruleset` shows it: (family, map).
fn map_with(ruleset: &str, port: &str) -> Option<(String, String)> {
    let mut family = String::new();
    let mut map = None;
    for line in ruleset.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            family = rest.split_whitespace().next().unwrap_or_default().to_string();
        }
        if let Some(rest) = line.strip_prefix("map ") {
            map = rest.split_whitespace().next().map(str::to_string);
        }
        if line.contains(&format!("\"{port}\" : ")) {
            if let Some(m) = &map {
                return Some((family, m.clone()));
            }
        }
    }
    None
}

/// The daemon commits with `nft -f` (a reload); once that nft is reaped, a
/// foreign nft gets its pid and deletes a port's map entry: the daemon must
/// put it back. (With the committing pids remembered as ours, it did not.)
#[test]
fn foreign_change_from_a_reused_pid_is_healed() {
    let _one = PIDS.lock().unwrap_or_else(|p| p.into_inner());
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let g1 = t.guest(1).clone();
    bind_policy(&t, &d);
    let (family, map) =
        map_with(&t.ruleset(), &g1.port).unwrap_or_else(|| panic!("no map entry for {}:\n{}", g1.port, t.ruleset()));
    let has_entry = |t: &TestHost| {
        let o = t.exec(&t.host, &["nft", "list", "map", &family, "guestwall", &map]);
        String::from_utf8_lossy(&o.stdout).contains(&format!("\"{}\" : ", g1.port))
    };
    assert!(has_entry(&t), "{family} map {map} has no entry for {}:\n{}", g1.port, t.ruleset());
    eprintln!("deleting {}'s entry in {family} map {map}", g1.port);
    let monitor = Monitor::start(&t);
    let host = t.host.clone();
    let mut attempts = Vec::new();
    for _ in 0..5 {
        // The daemon's own commit, by an nft it runs and then reaps.
        d.ok(&["reload"]);
        let ours = monitor.next(Duration::from_secs(5));
        assert_eq!(ours.comm, "nft", "the reload is one nft transaction: {ours:?}");
        assert!(monitor.drain(Duration::from_millis(300)).is_empty(), "the reload made more than one generation");
        let reused = ours.pid;
        let key = format!("\"{}\"", g1.port);
        let Some(o) = nft_as_pid(&host, reused, &["delete", "element", &family, "guestwall", &map, "{", &key, "}"])
        else {
            attempts.push(reused);
            continue;
        };
        assert!(o.status.success(), "nft delete element: {}", String::from_utf8_lossy(&o.stderr));
        let foreign = monitor.next(Duration::from_secs(5));
        assert_eq!(
            (foreign.id, foreign.pid),
            (ours.id + 1, reused),
            "the deletion is the next generation, by the daemon's nft's pid"
        );
        wait_for(|| has_entry(&t), "healing the map entry deleted by a process with a reused pid");
        assert_eq!(d.heals(), 1, "one heal (for the deletion, none for the daemon's own commits)");
        return;
    }
    panic!("pids {attempts:?} were always taken by other processes first");
}

/// The same through the library, for netlink batches: a thread of ours
/// commits and exits; a foreign nft gets its thread id and changes our
/// table: the watcher reports it.
#[test]
fn foreign_commit_from_a_reused_thread_id_is_foreign() {
    let _one = PIDS.lock().unwrap_or_else(|p| p.into_inner());
    let t = TestHost::new(1);
    let host = t.host.clone();
    let o = t.exec(
        &host,
        &["nft", "add table bridge guestwall; add set bridge guestwall s { type ipv4_addr; }; add table inet other"],
    );
    assert!(o.status.success(), "nft: {}", String::from_utf8_lossy(&o.stderr));
    let (tx, events) = channel();
    t.in_host(move || {
        // A thread started here is in the host namespace too. It runs
        // until the test process ends.
        std::thread::spawn(move || {
            let _ = gw_nft::netlink::watch("guestwall", gw_nft::is_ours, move |ev| {
                let _ = tx.send(ev);
            });
        })
    });
    let quiet = |events: &Receiver<gw_nft::netlink::Event>, d| match events.recv_timeout(d) {
        Err(RecvTimeoutError::Timeout) => true,
        Ok(ev) => panic!("unexpected event {ev:?}"),
        Err(e) => panic!("the watcher stopped: {e}"),
    };
    // The watcher is listening once it reports a foreign change.
    let start = Instant::now();
    for verb in ["add", "delete"].iter().cycle() {
        assert!(start.elapsed() < Duration::from_secs(10), "the watcher reports nothing");
        let o = t.exec(&host, &["nft", verb, "element", "bridge", "guestwall", "s", "{", "192.0.2.200", "}"]);
        assert!(o.status.success(), "nft: {}", String::from_utf8_lossy(&o.stderr));
        if *verb == "delete" && events.recv_timeout(Duration::from_millis(300)).is_ok() {
            break;
        }
    }
    while events.recv_timeout(Duration::from_millis(300)).is_ok() {}
    // Not our table: nothing to report.
    let o = t.exec(&host, &["nft", "add", "chain", "inet", "other", "c"]);
    assert!(o.status.success(), "nft: {}", String::from_utf8_lossy(&o.stderr));
    assert!(quiet(&events, Duration::from_millis(300)));

    for _ in 0..5 {
        // Our commit, from a thread that then exits.
        let tid = t.in_host(|| {
            let change = gw_nft::netlink::SetChange {
                family: gw_nft::netlink::FAMILY_BRIDGE,
                table: "guestwall".into(),
                set: "s".into(),
                add: true,
                elements: vec![(vec![192, 0, 2, 1], None)],
            };
            gw_nft::netlink::commit(&[change]).expect("netlink commit");
            let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
            let tid = me.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok());
            tid.unwrap_or_else(|| panic!("thread id from {}", me.display()))
        });
        assert!(quiet(&events, Duration::from_millis(500)), "our own commit was reported");
        let Some(o) = nft_as_pid(&host, tid, &["delete", "element", "bridge", "guestwall", "s", "{", "192.0.2.1", "}"])
        else {
            continue;
        };
        assert!(o.status.success(), "nft delete element: {}", String::from_utf8_lossy(&o.stderr));
        match events.recv_timeout(Duration::from_secs(5)) {
            Ok(gw_nft::netlink::Event::Foreign { deleted: false }) => return,
            other => panic!("a foreign nft with our exited thread's id {tid} changed our table: {other:?}"),
        }
    }
    panic!("thread ids were always taken by other processes first");
}
