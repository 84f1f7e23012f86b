//! libvirt's own clients against guestwalld, over libvirt's RPC protocol
//! on the daemon's libvirt socket: real virsh (Debian's libvirt-clients
//! 9.0), libvirt's corpus dumped through it, the calls virtqemud makes at a
//! guest's start and stop replayed by a protocol client, and bad input.
//! As root (the daemon runs in a test host's namespace); fails if virsh is
//! missing.

mod common;

use common::{daemon_bin, wait_for, Daemon};
use gw_libvirt_rpc::message::{frame, Header, MessageType, Status, WireError, REMOTE_PROGRAM, REMOTE_VERSION};
use gw_libvirt_rpc::proc::num;
use gw_libvirt_rpc::{xdr, BindingRef, Call};
use gw_testns::{require_root, TestHost};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/libvirt");

fn virsh_bin() -> &'static str {
    let found = Command::new("virsh").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "virsh is not installed: this test needs Debian's libvirt-clients (.ci/run installs it)");
    "virsh"
}

/// A test host (guest 1 on port v1) with a guestwalld in it (in `t.dir/d`).
fn host() -> (TestHost, Daemon) {
    require_root();
    let mut t = TestHost::new(1);
    let dir = t.dir.join("d");
    let d = Daemon::start(&mut t, &dir);
    (t, d)
}

/// Defines filter `web` (clean-traffic) through virsh.
fn define_web(t: &TestHost, d: &Daemon) {
    let f = write(&t.dir, "web.xml", "<filter name='web'><filterref filter='clean-traffic'/></filter>");
    virsh_ok(d, &["nwfilter-define", &f]);
}

fn libvirt_sock(d: &Daemon) -> PathBuf {
    d.dir.join("libvirt-sock")
}

fn virsh(d: &Daemon, args: &[&str]) -> Output {
    let uri = format!("nwfilter:///system?socket={}", libvirt_sock(d).display());
    Command::new(virsh_bin()).arg("-c").arg(uri).args(args).output().expect("run virsh")
}

fn virsh_ok(d: &Daemon, args: &[&str]) -> String {
    let o = virsh(d, args);
    assert!(
        o.status.success(),
        "virsh {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn virsh_err(d: &Daemon, args: &[&str]) -> String {
    let o = virsh(d, args);
    assert!(!o.status.success(), "virsh {args:?} succeeded: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

/// `virsh nwfilter-list`: (uuid, name) per line.
fn filter_list(d: &Daemon) -> Vec<(String, String)> {
    virsh_ok(d, &["nwfilter-list"])
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (uuid, name) = (w.next()?, w.next()?);
            (uuid.len() == 36).then(|| (uuid.to_string(), name.to_string()))
        })
        .collect()
}

/// guestwall's own listing: (port, active) per binding.
fn active(d: &Daemon) -> Vec<(String, bool)> {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["binding", "list", "--json"])).expect("json");
    v["bindings"]
        .as_array()
        .expect("bindings")
        .iter()
        .map(|b| (b["portdev"].as_str().unwrap_or_default().to_string(), b["active"].as_bool().unwrap_or(false)))
        .collect()
}

const BINDING: &str = "<filterbinding>
  <owner><name>vm1</name><uuid>5c6d49af-b071-6127-b4ec-6f8ed4b55335</uuid></owner>
  <portdev name='PORT'/>
  <mac address='52:54:00:00:00:01'/>
  <filterref filter='FILTER'><parameter name='IP' value='192.0.2.1'/></filterref>
</filterbinding>
";

#[test]
fn virsh_nwfilter_verbs_work_against_guestwalld_as_against_libvirt() {
    let (t, d) = host();
    let files = t.dir.clone();

    // The built-ins are listed, each with a UUID.
    let list = filter_list(&d);
    assert!(list.len() >= 24, "{list:?}");
    assert!(list.iter().any(|(_, n)| n == "clean-traffic"), "{list:?}");
    assert!(list.iter().all(|(u, _)| u.len() == 36), "{list:?}");

    let f = write(&files, "web.xml", &common::POLICY.replace("policy", "web").replace("PORT", "22"));
    assert_eq!(virsh_ok(&d, &["nwfilter-define", &f]).trim(), format!("Network filter web defined from {f}"));
    let xml = virsh_ok(&d, &["nwfilter-dumpxml", "web"]);
    assert!(xml.contains("<filter name='web' chain='root'>") && xml.contains("<uuid>"), "{xml}");
    // By UUID too.
    let uuid = filter_list(&d).into_iter().find(|(_, n)| n == "web").map(|(u, _)| u).expect("web listed");
    assert_eq!(virsh_ok(&d, &["nwfilter-dumpxml", &uuid]), xml);

    let b = write(&files, "b.xml", &BINDING.replace("PORT", "v1").replace("FILTER", "web"));
    assert_eq!(
        virsh_ok(&d, &["nwfilter-binding-create", &b]).trim(),
        format!("Network filter binding on v1 created from {b}")
    );
    // guestwall's own view agrees, and the port is filtered now.
    assert_eq!(active(&d), [("v1".to_string(), true)]);
    let listed = virsh_ok(&d, &["nwfilter-binding-list"]);
    assert!(listed.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["v1", "web"]), "{listed}");
    let dumped = virsh_ok(&d, &["nwfilter-binding-dumpxml", "v1"]);
    assert!(dumped.contains("<portdev name='v1'/>") && dumped.contains("value='192.0.2.1'"), "{dumped}");

    // Errors read as libvirt's.
    let e = virsh_err(&d, &["nwfilter-binding-create", &b]);
    assert!(e.contains("error: operation failed: binding 'v1' already exists"), "{e}");
    let e = virsh_err(&d, &["nwfilter-undefine", "web"]);
    assert!(e.contains("error: Requested operation is not valid: nwfilter is in use"), "{e}");
    let e = virsh_err(&d, &["nwfilter-dumpxml", "nosuch"]);
    assert!(e.contains("error: Network filter not found: no nwfilter with matching name 'nosuch'"), "{e}");
    let e = virsh_err(&d, &["nwfilter-binding-dumpxml", "nosuch"]);
    assert!(e.contains("error: Network filter binding not found: no nwfilter binding for port dev 'nosuch'"), "{e}");
    let bad = write(&files, "bad.xml", "<filter name='x'><rule action='jump' direction='in'/></filter>");
    let e = virsh_err(&d, &["nwfilter-define", &bad]);
    assert!(e.contains("error: XML error:"), "{e}");
    let other = write(&files, "web2.xml", &format!("<filter name='web2'><uuid>{uuid}</uuid></filter>"));
    let e = virsh_err(&d, &["nwfilter-define", &other]);
    assert!(e.contains("filter with same UUID but different name ('web') already exists"), "{e}");

    // nwfilter-edit: virsh dumps, runs $EDITOR on the file, defines it again.
    let uri = format!("nwfilter:///system?socket={}", libvirt_sock(&d).display());
    let editor = write(&files, "editor", "#!/bin/sh\nsed -i \"s/dstportstart='22'/dstportstart='2222'/\" \"$1\"\n");
    let ok = Command::new("chmod").args(["755", &editor]).status().is_ok_and(|s| s.success());
    assert!(ok, "chmod {editor}");
    let o = Command::new(virsh_bin())
        .args(["-c", &uri, "nwfilter-edit", "web"])
        .env("EDITOR", &editor)
        .output()
        .expect("virsh nwfilter-edit");
    assert!(o.status.success(), "nwfilter-edit: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Network filter web XML configuration edited."), "{o:?}");
    assert!(virsh_ok(&d, &["nwfilter-dumpxml", "web"]).contains("dstportstart='2222'"));

    assert_eq!(virsh_ok(&d, &["nwfilter-binding-delete", "v1"]).trim(), "Network filter binding on v1 deleted");
    assert_eq!(virsh_ok(&d, &["nwfilter-undefine", "web"]).trim(), "Network filter web undefined");
    assert!(!virsh_ok(&d, &["nwfilter-binding-list"]).contains("v1"));
}

#[test]
fn every_filter_keeps_its_uuid_across_restarts() {
    let (mut t, d) = host();
    let dir = d.dir.clone();
    define_web(&t, &d);
    let before = filter_list(&d);
    t.kill9(d.pid);
    let d = Daemon::start(&mut t, &dir);
    assert_eq!(filter_list(&d), before);
    // Another host's built-ins have the same UUIDs (they are derived from the names).
    let other = t.dir.join("other");
    let d2 = Daemon::start(&mut t, &other);
    let builtins = |l: &[(String, String)]| l.iter().filter(|(_, n)| n != "web").cloned().collect::<Vec<_>>();
    assert_eq!(builtins(&filter_list(&d2)), builtins(&before));
}

/// Parsed XML reduced as `shared/tools/xml2xml-check` compares: element
/// order, tags, attributes (numbers by value, MACs in lower case), text.
fn canon(xml: &str, keep_uuid: bool) -> String {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("not XML ({e}): {xml}"));
    fn value(v: &str) -> String {
        let v = v.trim();
        let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(h) => i64::from_str_radix(h, 16).ok(),
            None => v.parse::<i64>().ok(),
        };
        match n {
            Some(n) => n.to_string(),
            None if v.len() == 17 && v.matches(':').count() == 5 => v.to_ascii_lowercase(),
            None => v.to_string(),
        }
    }
    fn walk(n: roxmltree::Node, keep_uuid: bool, out: &mut String) {
        if n.has_tag_name("uuid") && !keep_uuid {
            return;
        }
        let mut attrs: Vec<String> = n.attributes().map(|a| format!("{}={}", a.name(), value(a.value()))).collect();
        attrs.sort();
        out.push_str(&format!("<{} {}>", n.tag_name().name(), attrs.join(" ")));
        let text: String = n.children().filter(|c| c.is_text()).filter_map(|c| c.text()).collect();
        out.push_str(text.trim());
        for c in n.children().filter(|c| c.is_element()) {
            walk(c, keep_uuid, out);
        }
        out.push_str("</>");
    }
    let mut out = String::new();
    walk(doc.root_element(), keep_uuid, &mut out);
    out
}

#[test]
fn libvirts_corpus_dumps_through_virsh_as_libvirt_9_0_dumps_it() {
    require_root();
    let corpus = Path::new(CORPUS);
    assert!(corpus.is_dir(), "{} is missing: the suite needs shared/ beside the repository", corpus.display());
    let mut t = TestHost::new(1);
    let dir = t.dir.join("d");
    let d = Daemon::start(&mut t, &dir);
    let (mut dumped, mut rejected) = (0, 0);
    let mut failures = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(corpus.join("observed-9.0"))
        .expect("observed-9.0")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for observed in names {
        let (Some(stem), Some(ext)) = (observed.file_stem().and_then(|s| s.to_str()), observed.extension()) else {
            continue;
        };
        let input = corpus.join("tests/nwfilterxml2xmlin").join(format!("{stem}.xml"));
        if !input.exists() {
            continue;
        }
        let input = input.display().to_string();
        let o = virsh(&d, &["nwfilter-define", &input]);
        if ext == "rejected" {
            rejected += 1;
            if o.status.success() {
                failures.push(format!("{stem}: libvirt 9.0 refused it, guestwall defined it"));
                let _ = virsh(&d, &["nwfilter-undefine", "testcase"]);
            }
            continue;
        }
        if !o.status.success() {
            failures.push(format!("{stem}: define failed: {}", String::from_utf8_lossy(&o.stderr)));
            continue;
        }
        let want = std::fs::read_to_string(&observed).expect("observed");
        let name = roxmltree::Document::parse(&want)
            .ok()
            .and_then(|doc| doc.root_element().attribute("name").map(str::to_string))
            .unwrap_or_else(|| "testcase".into());
        let got = virsh_ok(&d, &["nwfilter-dumpxml", &name]);
        let keep = want.contains("<uuid>") && got.contains("<uuid>");
        if canon(&got, keep) != canon(&want, keep) {
            failures.push(format!("{stem}: dumped\n{got}\nlibvirt 9.0 dumped\n{want}"));
        } else {
            dumped += 1;
        }
        virsh_ok(&d, &["nwfilter-undefine", &name]);
    }
    assert!(failures.is_empty(), "{} difference(s):\n{}", failures.len(), failures.join("\n"));
    assert!(dumped >= 20 && rejected >= 20, "too few corpus cases ran: {dumped} dumped, {rejected} rejected");
}

/// A client of libvirt's protocol, as virtqemud is one.
struct Client {
    s: UnixStream,
    serial: u32,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect to the libvirt socket");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut c = Client { s, serial: 0 };
        c.call(&Call::AuthList).expect("auth list");
        c.call(&Call::ConnectOpen { name: Some("nwfilter:///system".into()), flags: 0 }).expect("open");
        c
    }

    fn read_frame(&mut self) -> Option<(Header, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).ok()?;
        let len = u32::from_be_bytes(len) as usize;
        let mut rest = vec![0u8; len.checked_sub(4)?];
        self.s.read_exact(&mut rest).ok()?;
        let header: Header = xdr::from_bytes(&rest[..24]).ok()?;
        Some((header, rest[24..].to_vec()))
    }

    /// Sends `call`; its reply body, or libvirt's error.
    fn call(&mut self, call: &Call) -> Result<Vec<u8>, Box<WireError>> {
        self.serial += 1;
        let h = Header {
            prog: REMOTE_PROGRAM,
            vers: REMOTE_VERSION,
            proc: call.proc(),
            kind: MessageType::Call,
            serial: self.serial,
            status: Status::Ok,
        };
        self.s.write_all(&frame(&h, &call.encode_args())).expect("send");
        let (reply, body) = self.read_frame().expect("a reply");
        assert_eq!((reply.serial, reply.proc), (self.serial, call.proc()), "reply to another call");
        match reply.status {
            Status::Ok => Ok(body),
            _ => Err(Box::new(xdr::from_bytes(&body).expect("an error body"))),
        }
    }
}

#[test]
fn virtqemuds_calls_at_guest_start_and_stop_work_as_with_virtnwfilterd() {
    let (t, d) = host();
    let mut c = Client::connect(&libvirt_sock(&d));
    // Start: is there a binding already (virDomainConfNWFilterInstantiate
    // with ignoreExists)? Then create it, flags 0, in libvirt's format.
    let e = c.call(&Call::BindingLookupByPortDev { portdev: "v1".into() }).expect_err("no binding yet");
    assert_eq!(e.code, gw_libvirt_rpc::error::code::NO_NWFILTER_BINDING);
    let xml = BINDING.replace("PORT", "v1").replace("FILTER", "clean-traffic");
    let body = c.call(&Call::BindingCreateXml { xml, flags: 0 }).expect("create");
    let b: BindingRef = xdr::from_bytes(&body).expect("binding ref");
    assert_eq!((b.portdev.0.as_str(), b.filtername.0.as_str()), ("v1", "clean-traffic"));
    assert_eq!(active(&d), [("v1".to_string(), true)]);
    // The port is filtered and its guest's own traffic passes.
    let g = t.guest(1).clone();
    assert!(t.ping(&g.ns, "192.0.2.254"), "the guest's own address is dropped");
    // Stop: look it up, delete it.
    let body = c.call(&Call::BindingLookupByPortDev { portdev: "v1".into() }).expect("lookup");
    let b: BindingRef = xdr::from_bytes(&body).expect("binding ref");
    c.call(&Call::BindingDelete { binding: b }).expect("delete");
    let e = c.call(&Call::BindingLookupByPortDev { portdev: "v1".into() }).expect_err("gone");
    assert_eq!(e.code, gw_libvirt_rpc::error::code::NO_NWFILTER_BINDING);
    assert!(active(&d).is_empty());
    c.call(&Call::ConnectClose).expect("close");
}

#[test]
fn bad_protocol_input_changes_nothing_and_other_clients_are_served() {
    let (t, d) = host();
    let dir = d.dir.clone();
    define_web(&t, &d);
    let b = write(&t.dir, "b.xml", &BINDING.replace("PORT", "v1").replace("FILTER", "web"));
    virsh_ok(&d, &["nwfilter-binding-create", &b]);
    let state = || {
        let mut v: Vec<(PathBuf, Vec<u8>)> = ["etc", "var/bindings"]
            .iter()
            .flat_map(|s| std::fs::read_dir(dir.join(s)).into_iter().flatten().flatten())
            .map(|e| (e.path(), std::fs::read(e.path()).unwrap_or_default()))
            .collect();
        v.sort();
        (v, t.exec(&t.host, &["nft", "list", "table", "bridge", "guestwall"]).stdout)
    };
    let before = state();
    let sock = libvirt_sock(&d);
    let send = |bytes: &[u8]| -> Vec<u8> {
        let mut s = UnixStream::connect(&sock).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    let header = |prog: u32, vers: u32, proc: i32| Header {
        prog,
        vers,
        proc,
        kind: MessageType::Call,
        serial: 7,
        status: Status::Ok,
    };
    let is_error_reply = |out: &[u8]| out.len() > 28 && out[24..28] == 1i32.to_be_bytes();
    // Oversized and undersized length words: the connection is closed.
    assert!(send(&u32::MAX.to_be_bytes()).is_empty());
    assert!(send(&8u32.to_be_bytes()).is_empty());
    // Truncated: a length promising more than comes, then the client goes.
    let mut trunc = frame(&header(REMOTE_PROGRAM, REMOTE_VERSION, num::AUTH_LIST), &[]);
    trunc[3] += 40;
    assert!(send(&trunc).is_empty());
    // Wrong program, wrong version, unknown procedure, garbage arguments:
    // each a libvirt error reply.
    for h in [
        header(0x1234_5678, 1, 1),
        header(REMOTE_PROGRAM, 9, 1),
        header(REMOTE_PROGRAM, REMOTE_VERSION, 9999),
        header(REMOTE_PROGRAM, REMOTE_VERSION, num::NWFILTER_DEFINE_XML),
    ] {
        let out = send(&frame(&h, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
        assert!(is_error_reply(&out), "{h:?}: {out:?}");
    }
    // A hundred clients at once, each vanishing mid-message, while virsh works.
    let held: Vec<UnixStream> = (0..100)
        .filter_map(|_| {
            let mut s = UnixStream::connect(&sock).ok()?;
            let _ = s.write_all(&64u32.to_be_bytes());
            Some(s)
        })
        .collect();
    assert!(held.len() >= 90, "only {} of 100 clients connected", held.len());
    assert!(virsh_ok(&d, &["nwfilter-binding-list"]).contains("v1"));
    drop(held);
    assert!(virsh_ok(&d, &["nwfilter-list"]).contains("web"));
    assert!(d.alive());
    assert!(state() == before, "the disk or the kernel changed");
}

#[test]
fn socket_activation_starts_guestwalld_on_the_first_libvirt_connection() {
    require_root();
    let activate = "systemd-socket-activate";
    let found = Command::new(activate).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "{activate} is missing: this test needs Debian's systemd package (scripts/deps installs it)");
    let mut t = TestHost::new(1);
    let dir = t.dir.join("d");
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("libvirt-sock");
    let p = |s: &str| dir.join(s).display().to_string();
    let listen = sock.display().to_string();
    let bin = daemon_bin();
    let args = [
        activate,
        "-l",
        &listen,
        "--fdname=libvirt",
        &bin,
        "--socket",
        &p("sock"),
        "--config-dir",
        &p("etc"),
        "--state-dir",
        &p("var"),
        "--runtime-dir",
        &p("run"),
    ];
    let host = t.host.clone();
    let log = dir.join("daemon.log");
    t.spawn(&host, &args, &log);
    wait_for(|| sock.exists(), "systemd-socket-activate listening");
    assert!(!dir.join("sock").exists(), "guestwalld ran before anyone connected");
    // virsh's connection starts it, waits in the socket's queue, and is served.
    let uri = format!("nwfilter:///system?socket={listen}");
    let o = Command::new(virsh_bin()).args(["-c", &uri, "nwfilter-list"]).output().expect("virsh");
    assert!(o.status.success(), "virsh: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("clean-traffic"));
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("libvirt's socket comes from systemd"), "{logged}");
    // Its own API is up too.
    wait_for(|| dir.join("sock").exists(), "guestwalld's API socket");
}

/// libvirt-python (Debian's python3-libvirt, for the system's python3),
/// unchanged: what a management tool written against libvirt does.
const PYTHON: &str = r#"
import sys, libvirt
conn = libvirt.open(sys.argv[1])
f = conn.nwfilterDefineXML(open(sys.argv[2]).read())
assert f.name() == "web", f.name()
assert "web" in [x.name() for x in conn.listAllNWFilters()]
assert conn.nwfilterLookupByUUIDString(f.UUIDString()).name() == "web"
assert "<filterref filter='clean-traffic'/>" in f.XMLDesc()
b = conn.nwfilterBindingCreateXML(open(sys.argv[3]).read())
assert (b.portDev(), b.filterName()) == ("v1", "web")
assert [x.portDev() for x in conn.listAllNWFilterBindings()] == ["v1"]
assert "value='192.0.2.1'" in conn.nwfilterBindingLookupByPortDev("v1").XMLDesc()
try:
    conn.nwfilterLookupByName("nosuch")
    raise SystemExit("found a filter that does not exist")
except libvirt.libvirtError as e:
    assert e.get_error_code() == libvirt.VIR_ERR_NO_NWFILTER, e.get_error_code()
b.delete()
f.undefine()
assert "web" not in [x.name() for x in conn.listAllNWFilters()]
conn.close()
print("ok")
"#;

#[test]
fn libvirt_python_defines_lists_dumps_and_binds_through_guestwalld() {
    require_root();
    let python = "/usr/bin/python3";
    let found = Command::new(python).args(["-c", "import libvirt"]).output().is_ok_and(|o| o.status.success());
    assert!(found, "{python} cannot import libvirt: install python3-libvirt (scripts/deps does)");
    let mut t = TestHost::new(1);
    let dir = t.dir.join("d");
    let d = Daemon::start(&mut t, &dir);
    let script = write(&t.dir, "client.py", PYTHON);
    let f = write(&t.dir, "web.xml", "<filter name='web'><filterref filter='clean-traffic'/></filter>");
    let b = write(&t.dir, "b.xml", &BINDING.replace("PORT", "v1").replace("FILTER", "web"));
    let uri = format!("nwfilter:///system?socket={}", libvirt_sock(&d).display());
    let o = Command::new(python).args([&script, &uri, &f, &b]).output().expect("run python3");
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok",
        "libvirt-python: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(active(&d).is_empty(), "the script's binding stayed");
}
