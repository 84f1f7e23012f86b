//! Test hosts in network namespaces, for guestwall's enforcement tests.
//!
//! A [`TestHost`] is a host namespace with a bridge `br0` (192.0.2.254/24),
//! guests in their own namespaces on veth ports (`v1`, `v2`, ... → the guest's
//! `eth0`), and a peer namespace on port `v9` that guestwall does not filter.
//! Only documentation addresses are used. Everything is deleted on drop,
//! also when a test fails. Tests need root, `ip`, `nft` and python3 with
//! scapy; without them they fail loudly, never pass silently.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A guest of a test host.
#[derive(Debug, Clone)]
pub struct Guest {
    /// Its namespace's name.
    pub ns: String,
    /// Its port on the host bridge (`v1`, ...).
    pub port: String,
    /// Its MAC.
    pub mac: String,
    /// Its IPv4 address.
    pub ip: String,
}

/// A host namespace with a bridge, guests and a peer.
pub struct TestHost {
    /// The host namespace.
    pub host: String,
    /// The guests, in creation order.
    pub guests: Vec<Guest>,
    /// The unfiltered peer (port `v9`, 192.0.2.9).
    pub peer: Guest,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// A scratch directory for binding files and the like.
    pub dir: PathBuf,
}

fn run(cmd: &[&str]) -> Output {
    Command::new(cmd[0]).args(&cmd[1..]).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", cmd.join(" ")))
}

fn must(cmd: &[&str]) {
    let o = run(cmd);
    assert!(o.status.success(), "{} failed: {}", cmd.join(" "), String::from_utf8_lossy(&o.stderr));
}

/// The packet helper script.
pub fn helper() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("helpers/gwpkt.py").display().to_string()
}

/// Fails loudly when the machine cannot run namespace tests.
pub fn require_root() {
    let uid = run(&["id", "-u"]);
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "namespace tests need root (run scripts/test as root)"
    );
    for tool in ["ip", "nft", "python3", "ping"] {
        assert!(
            run(&["sh", "-c", &format!("command -v {tool}")]).status.success(),
            "{tool} is missing: run scripts/deps"
        );
    }
    let scapy = run(&["python3", "-c", "import scapy"]);
    assert!(scapy.status.success(), "python3 scapy is missing: run scripts/deps");
}

impl TestHost {
    /// Creates `g`'s namespace and its veth pair: `g.port` in the host,
    /// `eth0` (with `g`'s MAC and /24 address, up) in the guest.
    fn add_guest_ns(&mut self, g: &Guest) {
        must(&["ip", "netns", "add", &g.ns]);
        self.namespaces.push(g.ns.clone());
        must(&[
            "ip", "link", "add", &g.port, "netns", &self.host, "type", "veth", "peer", "name", "eth0", "netns", &g.ns,
        ]);
        must(&["ip", "-n", &g.ns, "link", "set", "eth0", "address", &g.mac]);
        must(&["ip", "-n", &g.ns, "addr", "add", &format!("{}/24", g.ip), "dev", "eth0"]);
        must(&["ip", "-n", &g.ns, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", &g.ns, "link", "set", "lo", "up"]);
    }

    /// A host namespace with nothing in it yet, and its name prefix.
    fn empty(tag: &str) -> (TestHost, String) {
        require_root();
        let id = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{tag}{}x{id}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let host = format!("{prefix}-h");
        must(&["ip", "netns", "add", &host]);
        must(&["ip", "-n", &host, "link", "set", "lo", "up"]);
        let t = TestHost {
            host: host.clone(),
            guests: Vec::new(),
            peer: Guest { ns: String::new(), port: String::new(), mac: String::new(), ip: String::new() },
            namespaces: vec![host],
            children: Vec::new(),
            dir,
        };
        (t, prefix)
    }

    /// A host with `n` guests (1..=8): guest i has port `vi`, MAC
    /// 52:54:00:00:00:0i and address 192.0.2.i.
    pub fn new(n: usize) -> TestHost {
        let (mut t, prefix) = TestHost::empty("gwt");
        let host = t.host.clone();
        must(&["ip", "-n", &host, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &host, "link", "set", "br0", "up"]);
        must(&["ip", "-n", &host, "addr", "add", "192.0.2.254/24", "dev", "br0"]);
        for i in (1..=n).chain([9]) {
            let g = Guest {
                ns: format!("{prefix}-{}", if i == 9 { "peer".to_string() } else { format!("g{i}") }),
                port: format!("v{i}"),
                mac: format!("52:54:00:00:00:0{i}"),
                ip: format!("192.0.2.{i}"),
            };
            t.add_guest_ns(&g);
            must(&["ip", "-n", &host, "link", "set", &g.port, "master", "br0"]);
            must(&["ip", "-n", &host, "link", "set", &g.port, "up"]);
            // No IPv6 DAD/router noise in the guests' captures.
            let _ = run(&["ip", "netns", "exec", &g.ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"]);
            if i == 9 {
                t.peer = g;
            } else {
                t.guests.push(g);
            }
        }
        t
    }

    /// A host that routes (no bridge): guest 1 on tap-like veth `v1`
    /// (198.51.100.2/24, the host is .1) and the peer on `v9`
    /// (203.0.113.2/24, the host is .1), with forwarding on.
    pub fn new_routed() -> TestHost {
        let (mut t, prefix) = TestHost::empty("gwr");
        let host = t.host.clone();
        let _ = t.exec(&host, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for (i, net) in [(1, "198.51.100"), (9, "203.0.113")] {
            let g = Guest {
                ns: format!("{prefix}-{}", if i == 9 { "peer" } else { "g1" }),
                port: format!("v{i}"),
                mac: format!("52:54:00:00:00:0{i}"),
                ip: format!("{net}.2"),
            };
            t.add_guest_ns(&g);
            must(&["ip", "-n", &host, "addr", "add", &format!("{net}.1/24"), "dev", &g.port]);
            must(&["ip", "-n", &host, "link", "set", &g.port, "up"]);
            must(&["ip", "-n", &g.ns, "route", "add", "default", "via", &format!("{net}.1")]);
            if i == 9 {
                t.peer = g;
            } else {
                t.guests.push(g);
            }
        }
        t
    }

    /// The MAC of an interface in the host namespace.
    pub fn host_mac(&self, dev: &str) -> String {
        let o = self.exec(&self.host, &["cat", &format!("/sys/class/net/{dev}/address")]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Guest `i` (1-based).
    pub fn guest(&self, i: usize) -> &Guest {
        &self.guests[i - 1]
    }

    /// Runs a command in a namespace.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(cmd);
        run(&full)
    }

    /// Writes a binding for guest `i` to `filter` with extra parameters and
    /// returns its path.
    pub fn binding(&self, i: usize, filter: &str, params: &[(&str, &str)]) -> PathBuf {
        let g = self.guest(i);
        let mut p = String::new();
        for (k, v) in params {
            p.push_str(&format!("    <parameter name='{k}' value='{v}'/>\n"));
        }
        let xml = format!(
            "<filterbinding>\n  <owner>\n    <name>guest{i}</name>\n    <uuid>00000000-0000-4000-8000-00000000000{i}</uuid>\n  </owner>\n  <portdev name='{}'/>\n  <mac address='{}'/>\n  <filterref filter='{filter}'>\n{p}  </filterref>\n</filterbinding>\n",
            g.port, g.mac
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(format!("binding-{i}-{n}.xml"));
        std::fs::write(&path, xml).expect("write binding");
        path
    }

    /// Writes a filter into the scratch filter directory (see
    /// [`TestHost::filter_dir`]).
    pub fn filter(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.dir.join("filters");
        std::fs::create_dir_all(&dir).expect("filter dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write filter");
        path
    }

    /// Writes a file into the scratch directory (not the filter directory)
    /// and returns its path.
    pub fn filter_file(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write file");
        path.display().to_string()
    }

    /// The directory [`TestHost::filter`] writes to.
    pub fn filter_dir(&self) -> String {
        self.dir.join("filters").display().to_string()
    }

    /// Runs `guestwall ARGS` inside the host namespace.
    pub fn guestwall(&self, bin: &str, args: &[&str]) -> Output {
        let mut cmd = vec![bin];
        cmd.extend_from_slice(args);
        self.exec(&self.host, &cmd)
    }

    /// Whether one ping from `ns` to `ip` is answered.
    pub fn ping(&self, ns: &str, ip: &str) -> bool {
        self.exec(ns, &["ping", "-c", "1", "-W", "1", "-q", ip]).status.success()
    }

    /// Starts a long-running helper command in a namespace, waiting for its
    /// "ready" line. It is killed on drop.
    pub fn serve(&mut self, ns: &str, args: &[&str]) {
        let h = helper();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "python3", &h]).args(args).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start helper");
        let mut out = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 6];
        use std::io::Read;
        out.read_exact(&mut buf).expect("helper ready line");
        assert_eq!(&buf, b"ready\n");
        self.children.push(child);
    }

    /// Starts a long-running command in a namespace (killed on drop), its
    /// output going to `log`. Returns its pid (`ip netns exec` execs it).
    pub fn spawn(&mut self, ns: &str, cmd: &[&str], log: &std::path::Path) -> u32 {
        let f = std::fs::File::create(log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Kills a spawned process with SIGKILL and reaps it.
    pub fn kill9(&mut self, pid: u32) {
        if let Some(c) = self.children.iter_mut().find(|c| c.id() == pid) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether a TCP connection from `ns` to `ip:port` (optionally from
    /// `sport`) gets the server's answer.
    pub fn tcp(&self, ns: &str, ip: &str, port: u16, sport: u16) -> bool {
        let h = helper();
        self.exec(ns, &["python3", &h, "tcp-connect", ip, &port.to_string(), &sport.to_string(), "1.5"])
            .status
            .success()
    }

    /// Whether a UDP datagram from `ns` to `ip:port` is echoed back.
    pub fn udp(&self, ns: &str, ip: &str, port: u16) -> bool {
        let h = helper();
        self.exec(ns, &["python3", &h, "udp-query", ip, &port.to_string(), "1.5"]).status.success()
    }

    /// Runs a sniffer (`gwpkt.py ARGS`) in `to`, calls `send` once it is
    /// ready, then closes its stdin (everything is sent) and returns what it
    /// printed after its ready line, and its stderr.
    fn sniff_around(&self, to: &str, args: &[&str], send: impl FnOnce()) -> (String, String) {
        use std::io::Read;
        let h = helper();
        let mut sniffer = Command::new("ip")
            .args(["netns", "exec", to, "python3", &h])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sniffer");
        let mut out = sniffer.stdout.take().expect("stdout");
        let mut buf = [0u8; 6];
        out.read_exact(&mut buf).expect("sniffer ready");
        std::thread::sleep(Duration::from_millis(100));
        send();
        drop(sniffer.stdin.take());
        let mut rest = String::new();
        out.read_to_string(&mut rest).expect("sniffer output");
        let mut err = String::new();
        if let Some(mut e) = sniffer.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = sniffer.wait();
        (rest, err)
    }

    /// Sends a scapy frame `expr` out of `from`'s eth0 and tells whether a
    /// frame satisfying `test` (a Python expression over `p`) was seen on
    /// `to`'s eth0.
    pub fn frame_arrives(&self, from: &str, expr: &str, to: &str, test: &str) -> bool {
        let h = helper();
        let (out, err) = self.sniff_around(to, &["sniff", "eth0", "0.5", test], || {
            let sent = self.exec(from, &["python3", &h, "send", "eth0", expr]);
            assert!(sent.status.success(), "send failed: {}", String::from_utf8_lossy(&sent.stderr));
        });
        out.trim().parse::<usize>().unwrap_or_else(|_| panic!("sniffer said {out:?}: {err}")) > 0
    }

    /// Sends the scapy frames `exprs` out of `from`'s eth0 and returns the
    /// `gwtNNNN` tags seen on `to`'s eth0.
    pub fn tags_arriving(&self, from: &str, exprs: &[String], to: &str) -> std::collections::BTreeSet<String> {
        let h = helper();
        let file = self.dir.join(format!("frames-{from}.txt"));
        std::fs::write(&file, exprs.join("\n")).expect("write frames");
        let (out, _) = self.sniff_around(to, &["sniff-tags", "eth0", "0.7"], || {
            let sent = self.exec(from, &["python3", &h, "send-many", "eth0", &file.display().to_string()]);
            assert!(sent.status.success(), "send failed: {}", String::from_utf8_lossy(&sent.stderr));
        });
        out.split_whitespace().map(str::to_string).collect()
    }

    /// Starts sending frame `expr` (scapy) out of `ns`'s eth0 at about
    /// `pps` frames a second for `secs` seconds, also while eth0 is down or
    /// not there yet; [`Flood::sent`] waits for it and says how many went out.
    pub fn flood(&self, ns: &str, secs: f64, pps: u32, expr: &str) -> Flood {
        Flood(self.helper_process(ns, &["flood", "eth0", &secs.to_string(), &pps.to_string(), expr]))
    }

    /// Starts counting frames satisfying `test` (a Python expression over
    /// `p`) on `ns`'s eth0; [`Sniffer::count`] stops it and gives the count.
    pub fn sniffer(&self, ns: &str, test: &str) -> Sniffer {
        Sniffer(self.helper_process(ns, &["sniff", "eth0", "0.5", test]))
    }

    fn helper_process(&self, ns: &str, args: &[&str]) -> Child {
        use std::io::Read;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", &helper()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start packet helper");
        let mut buf = [0u8; 6];
        child.stdout.as_mut().expect("stdout").read_exact(&mut buf).expect("packet helper ready line");
        assert_eq!(&buf, b"ready\n");
        child
    }

    /// Runs `f` on a thread inside the host namespace (for code that talks
    /// netlink itself).
    pub fn in_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let path = format!("/run/netns/{}", self.host);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns on an fd we own; it changes only this thread's namespace.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in the host namespace panicked")
        })
    }

    /// The host's ruleset without counters, for comparing before and after.
    pub fn ruleset_stateless(&self) -> String {
        String::from_utf8_lossy(&self.exec(&self.host, &["nft", "-s", "list", "ruleset"]).stdout).into_owned()
    }

    /// The host's ruleset, for failure messages.
    pub fn ruleset(&self) -> String {
        String::from_utf8_lossy(&self.exec(&self.host, &["nft", "list", "ruleset"]).stdout).into_owned()
    }
}

/// A running [`TestHost::flood`].
pub struct Flood(Child);

impl Flood {
    /// Waits until it is done; how many frames were sent.
    pub fn sent(mut self) -> usize {
        use std::io::Read;
        let mut out = String::new();
        let _ = self.0.stdout.take().expect("stdout").read_to_string(&mut out);
        let _ = self.0.wait();
        out.trim().parse().unwrap_or_else(|_| panic!("flood said {out:?}"))
    }
}

/// A running [`TestHost::sniffer`].
pub struct Sniffer(Child);

impl Sniffer {
    /// Stops it (after half a second for frames in flight); how many
    /// matching frames it saw.
    pub fn count(mut self) -> usize {
        use std::io::Read;
        drop(self.0.stdin.take());
        let mut out = String::new();
        let _ = self.0.stdout.take().expect("stdout").read_to_string(&mut out);
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = self.0.wait();
        out.trim().parse().unwrap_or_else(|_| panic!("sniffer said {out:?}: {err}"))
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
