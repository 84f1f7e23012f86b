//! The qemu hook with a real libvirtd 9.0 and QEMU (TCG): bindings made at
//! `start` for the domain's taps, removed at `destroy`, made again at
//! `reconnect`, and a start refused with the hook's message when guestwalld
//! is not there. Needs root, libvirtd, virsh and qemu-system-x86_64; fails
//! (never skips) without them.
//!
//! Nothing on the host changes: the bridge, the taps, libvirtd, QEMU and
//! guestwalld live in a network namespace of the test's own, and libvirtd
//! in a private mount namespace whose /etc/libvirt, /run, /var/lib/libvirt,
//! /var/log and /var/cache/libvirt are the test's directories or tmpfs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const GW: &str = env!("CARGO_BIN_EXE_guestwall");
const NAMESPACE: &str = "https://guestwall.dev/xmlns/libvirt-domain/1";

fn need(path: &str, package: &str) {
    assert!(Path::new(path).exists(), "{path} is missing: apt-get install -y {package} (this test never skips)");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

struct Host {
    ns: String,
    dir: PathBuf,
    libvirtd: Option<Child>,
    guestwalld: Option<Child>,
}

impl Host {
    fn new() -> Host {
        assert!(nix_is_root(), "the libvirt hook test needs root (libvirtd, taps, nftables)");
        need("/usr/sbin/libvirtd", "libvirt-daemon-system libvirt-daemon-driver-qemu");
        need("/usr/bin/virsh", "libvirt-clients");
        need("/usr/bin/qemu-system-x86_64", "qemu-system-x86");
        let ns = format!("gwhook{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("gwhook-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["root/etc", "run", "lib", "log", "cache", "gw/etc", "gw/var"] {
            std::fs::create_dir_all(dir.join(d)).expect("test dir");
        }
        let h = Host { ns, dir, libvirtd: None, guestwalld: None };
        let ok = |c: &mut Command| {
            let o = run(c);
            assert!(o.status.success(), "{c:?}: {}", text(&o));
        };
        ok(Command::new("ip").args(["netns", "add", &h.ns]));
        ok(Command::new("ip").args(["-n", &h.ns, "link", "set", "lo", "up"]));
        ok(Command::new("ip").args(["-n", &h.ns, "link", "add", "gwtbr0", "type", "bridge"]));
        ok(Command::new("ip").args(["-n", &h.ns, "link", "set", "gwtbr0", "up"]));
        // libvirt's own configuration (its nwfilter library included), with
        // QEMU as root, no cgroups, namespaces or virtlogd: a test box has
        // none of these set up.
        ok(Command::new("cp").args(["-a", "/etc/libvirt/.", &h.etc().display().to_string()]));
        let qemu_conf = h.etc().join("qemu.conf");
        let mut conf = std::fs::read_to_string(&qemu_conf).unwrap_or_default();
        conf.push_str(
            "\nuser = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nsecurity_driver = \"none\"\n\
             stdio_handler = \"file\"\nnamespaces = [ ]\ncgroup_controllers = [ ]\nremember_owner = 0\n",
        );
        std::fs::write(&qemu_conf, conf).expect("qemu.conf");
        // No autostarted networks: they want dnsmasq.
        let _ = std::fs::remove_dir_all(h.etc().join("qemu/networks/autostart"));
        h
    }

    fn etc(&self) -> PathBuf {
        self.dir.join("root/etc/libvirt")
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("gw/sock")
    }

    fn start_guestwalld(&mut self) {
        let bin = Path::new(GW).with_file_name("guestwalld");
        assert!(bin.exists(), "{} is missing: cargo build --release -p guestwalld", bin.display());
        let log = std::fs::File::create(self.dir.join("gw/log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&bin)
            .arg("--socket")
            .arg(self.sock())
            .arg("--config-dir")
            .arg(self.dir.join("gw/etc"))
            .arg("--state-dir")
            .arg(self.dir.join("gw/var"))
            .arg("--runtime-dir")
            .arg(self.dir.join("gw/run"))
            .arg("--no-libvirt")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("guestwalld");
        self.guestwalld = Some(child);
        wait_for(|| self.gw(&["status"]).status.success(), "guestwalld to answer");
    }

    fn stop_guestwalld(&mut self) {
        if let Some(child) = self.guestwalld.take() {
            kill_wait(child);
        }
    }

    fn start_libvirtd(&mut self) {
        let d = self.dir.display();
        let script = format!(
            "set -e; mount --bind {d}/root/etc/libvirt /etc/libvirt; mount -t tmpfs gwhook /run; mkdir /run/libvirt; \
             mount --bind {d}/run /run/libvirt; mount --bind {d}/lib /var/lib/libvirt; mount -t tmpfs gwhook /var/log; \
             mkdir /var/log/libvirt; mount --bind {d}/log /var/log/libvirt; mkdir -p /var/cache/libvirt; \
             mount --bind {d}/cache /var/cache/libvirt; exec /usr/sbin/libvirtd"
        );
        let log = std::fs::File::create(self.dir.join("libvirtd.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "unshare", "-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("libvirtd");
        // ip netns exec, unshare and sh each exec the next: the pid is libvirtd's.
        self.libvirtd = Some(child);
        wait_for(|| self.virsh(&["version"]).status.success(), "libvirtd to answer");
    }

    fn stop_libvirtd(&mut self) {
        if let Some(child) = self.libvirtd.take() {
            kill_wait(child);
        }
    }

    fn virsh(&self, args: &[&str]) -> Output {
        let pid = self.libvirtd.as_ref().map(Child::id).expect("libvirtd runs").to_string();
        run(Command::new("nsenter").args(["-t", &pid, "-m", "-n", "virsh", "-c", "qemu:///system"]).args(args))
    }

    fn virsh_ok(&self, args: &[&str]) -> String {
        let o = self.virsh(args);
        assert!(o.status.success(), "virsh {args:?}: {}\nlibvirtd log:\n{}", text(&o), self.libvirtd_log());
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn libvirtd_log(&self) -> String {
        let t = std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default();
        t.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn gw(&self, args: &[&str]) -> Output {
        run(Command::new(GW).arg("--socket").arg(self.sock()).args(args))
    }

    /// guestwalld's bindings: (port, filter, owner).
    fn bindings(&self) -> Vec<(String, String, String)> {
        let o = self.gw(&["binding", "list", "--json"]);
        assert!(o.status.success(), "binding list: {}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        let mut out: Vec<_> = v["bindings"]
            .as_array()
            .expect("bindings")
            .iter()
            .map(|b| {
                let s = |k: &str| b[k].as_str().unwrap_or_default().to_string();
                (s("portdev"), s("filter"), s("owner"))
            })
            .collect();
        out.sort();
        out
    }

    /// The domain's taps, from `virsh domiflist`.
    fn taps(&self, domain: &str) -> Vec<String> {
        let mut t: Vec<String> = self
            .virsh_ok(&["domiflist", domain])
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|t| t != "-")
            .collect();
        t.sort();
        t
    }

    fn define(&self, name: &str, xml: &str) {
        let path = self.dir.join(format!("{name}.xml"));
        std::fs::write(&path, xml).expect("domain xml");
        self.virsh_ok(&["define", &path.display().to_string()]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.libvirtd.is_some() {
            for d in ["gwt-a", "gwt-four", "gwt-plain"] {
                let _ = self.virsh(&["destroy", d]);
            }
        }
        self.stop_libvirtd();
        self.stop_guestwalld();
        let _ = Command::new("ip").args(["-n", &self.ns, "link", "del", "gwtbr0"]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        if std::env::var_os("GWHOOK_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// SIGTERM, then SIGKILL after 10 s; reaped either way.
fn kill_wait(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).output();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn mac(i: usize) -> String {
    format!("52:54:00:6a:00:{i:02x}")
}

/// A TCG domain with no disk and `n` bridge interfaces on gwtbr0; `meta`
/// puts clean-traffic for each in guestwall's metadata, otherwise each
/// interface has a plain <filterref>.
fn domain_xml(name: &str, uuid: &str, n: usize, meta: bool) -> String {
    let mut ifs = String::new();
    let mut entries = String::new();
    for i in 1..=n {
        let (m, ip) = (mac(i), format!("192.0.2.{}", 10 + i));
        let fr = if meta {
            entries.push_str(&format!(
                "<gw:interface mac='{m}'><gw:filterref filter='clean-traffic'><gw:parameter name='IP' value='{ip}'/></gw:filterref></gw:interface>"
            ));
            String::new()
        } else {
            format!("<filterref filter='clean-traffic'><parameter name='IP' value='{ip}'/></filterref>")
        };
        ifs.push_str(&format!(
            "<interface type='bridge'><mac address='{m}'/><source bridge='gwtbr0'/><model type='virtio'/><rom enabled='no'/>{fr}</interface>\n"
        ));
    }
    let metadata = if meta {
        format!("<metadata><gw:filters xmlns:gw='{NAMESPACE}'>{entries}</gw:filters></metadata>")
    } else {
        String::new()
    };
    format!(
        "<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid>{metadata}<memory unit='MiB'>64</memory><vcpu>1</vcpu>\n\
         <os><type arch='x86_64' machine='pc'>hvm</type></os>\n<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\n{ifs}\
         <video><model type='none'/></video></devices></domain>\n"
    )
}

#[test]
fn libvirtd_runs_the_hook() {
    let mut h = Host::new();
    h.start_guestwalld();
    let o = h.gw(&["libvirt-hook", "install", "--root", &h.dir.join("root").display().to_string()]);
    assert!(o.status.success(), "install: {}", text(&o));
    let hook = h.etc().join("hooks/qemu.d/guestwall");
    let script = std::fs::read_to_string(&hook).expect("hook written");
    assert!(script.contains("libvirt-hook qemu \"$@\""), "{script}");
    // A second hook keeps the XML libvirtd gives at each op, to record
    // which ops name the taps.
    let dump = h.etc().join("hooks/qemu.d/zz-dump");
    std::fs::write(&dump, format!("#!/bin/sh\ncat > {}/hook-$1-$2.xml\n", h.dir.display())).unwrap();
    run(Command::new("chmod").arg("755").arg(&dump));
    // libvirtd looks for hooks when it starts: start it after the install.
    h.start_libvirtd();

    // start: bindings for the taps, before the guest runs.
    h.define("gwt-a", &domain_xml("gwt-a", "6a6a0000-0000-4000-8000-000000000001", 2, true));
    h.virsh_ok(&["start", "gwt-a"]);
    let taps = h.taps("gwt-a");
    assert_eq!(taps.len(), 2, "{taps:?}");
    let want: Vec<_> = taps.iter().map(|t| (t.clone(), "clean-traffic".to_string(), "gwt-a".to_string())).collect();
    assert_eq!(h.bindings(), want, "guestwall's bindings for the domain's taps {taps:?}");
    let libvirts = h.virsh_ok(&["nwfilter-binding-list"]);
    assert!(!libvirts.contains("vnet"), "libvirt's own driver filters nothing here: {libvirts}");
    eprintln!("observed: at start, guestwall bound {taps:?}; libvirt's own binding list: {libvirts:?}");

    // reconnect: a binding lost while libvirtd was down comes back, the
    // others stay.
    h.stop_libvirtd();
    let o = h.gw(&["binding", "delete", &taps[0]]);
    assert!(o.status.success(), "{}", text(&o));
    h.start_libvirtd();
    wait_for(|| h.bindings().len() == 2, "the reconnect hook to bind the port again");
    assert_eq!(h.bindings(), want);
    assert!(h.virsh_ok(&["domstate", "gwt-a"]).contains("running"));

    // guestwalld restarts while the guest runs: the bindings (runtime state,
    // their taps still there) are back and filtering, nothing else changes.
    h.stop_guestwalld();
    h.start_guestwalld();
    assert_eq!(h.bindings(), want, "after a restart of guestwalld");
    let o = h.gw(&["binding", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let states: Vec<_> = v["bindings"]
        .as_array()
        .expect("bindings")
        .iter()
        .map(|b| (b["active"].as_bool(), b["runtime"].as_bool()))
        .collect();
    assert_eq!(states, [(Some(true), Some(true)); 2], "{v}");
    assert!(h.virsh_ok(&["domstate", "gwt-a"]).contains("running"));

    // destroy: the stopped hook removes them.
    h.virsh_ok(&["destroy", "gwt-a"]);
    assert_eq!(h.bindings(), vec![], "bindings removed at destroy; libvirtd:\n{}", h.libvirtd_log());

    let has_taps = |op: &str| {
        let xml = std::fs::read_to_string(h.dir.join(format!("hook-gwt-a-{op}.xml"))).unwrap_or_default();
        assert!(xml.contains("<domain"), "libvirtd ran no {op} hook");
        xml.contains("<target dev='vnet")
    };
    let named: Vec<(&str, bool)> = ["prepare", "start", "started", "reconnect", "stopped", "release"]
        .iter()
        .map(|op| (*op, has_taps(op)))
        .collect();
    eprintln!("observed: ops whose XML names the taps: {named:?}");
    assert!(!has_taps("prepare") && has_taps("start") && !has_taps("stopped"), "{named:?}");

    // The hook's own time for 4 interfaces, on the live XML libvirtd gave.
    h.define("gwt-four", &domain_xml("gwt-four", "6a6a0000-0000-4000-8000-000000000004", 4, true));
    let t0 = Instant::now();
    h.virsh_ok(&["start", "gwt-four"]);
    let start_with_hook = t0.elapsed();
    let live = h.virsh_ok(&["dumpxml", "gwt-four"]);
    assert_eq!(h.bindings().len(), 4);
    h.virsh_ok(&["destroy", "gwt-four"]);
    assert_eq!(h.bindings(), vec![]);
    let mut times = Vec::new();
    for _ in 0..5 {
        let hook = |op: &str| {
            let mut c = Command::new(GW);
            c.arg("--socket").arg(h.sock()).args(["libvirt-hook", "qemu", "gwt-four", op, "begin", "-"]);
            c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = c.spawn().expect("hook");
            use std::io::Write as _;
            child.stdin.take().expect("stdin").write_all(live.as_bytes()).expect("write");
            let o = child.wait_with_output().expect("hook");
            assert!(o.status.success(), "hook {op}: {}", text(&o));
        };
        let t0 = Instant::now();
        hook("start");
        times.push(t0.elapsed());
        hook("stopped");
    }
    times.sort();
    eprintln!(
        "latency: the hook at start for 4 interfaces (4 binding dumpxml + 1 batch create): median {:?}, min {:?}, max {:?}; \
         the whole `virsh start` with the hook: {:?}",
        times[2], times[0], times[4], start_with_hook
    );

    // A plain <filterref> with libvirt's driver built in: libvirt filters
    // the port itself (ebtables) and the hook binds it in guestwall too.
    h.define("gwt-plain", &domain_xml("gwt-plain", "6a6a0000-0000-4000-8000-000000000003", 1, false));
    let o = h.virsh(&["start", "gwt-plain"]);
    let libvirts = h.virsh(&["nwfilter-binding-list"]);
    let ebt = run(Command::new("ip").args(["netns", "exec", &h.ns, "ebtables", "-t", "nat", "-L", "PREROUTING"]));
    eprintln!(
        "observed: plain <filterref> start: {}; libvirt's bindings: {}; ebtables PREROUTING: {}; guestwall's: {:?}",
        text(&o).trim(),
        text(&libvirts).trim(),
        text(&ebt).trim(),
        h.bindings()
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&libvirts).contains("clean-traffic"), "libvirt's driver instantiates the plain filterref itself");
    assert_eq!(h.bindings().len(), 1, "and the hook binds it in guestwall");
    h.virsh_ok(&["destroy", "gwt-plain"]);
    assert_eq!(h.bindings(), vec![]);

    // No guestwalld: the start fails, with the hook's message in virsh's error.
    h.stop_guestwalld();
    let t0 = Instant::now();
    let o = h.virsh(&["start", "gwt-a"]);
    let took = t0.elapsed();
    let err = text(&o);
    eprintln!("observed: start without guestwalld, after {took:?}: {}", err.trim());
    assert!(!o.status.success(), "the start must fail: {err}");
    assert!(err.contains("guestwall: error: domain gwt-a:") && err.contains("cannot connect to guestwalld"), "{err}");
    assert!(h.virsh_ok(&["domstate", "gwt-a"]).contains("shut off"));
}
