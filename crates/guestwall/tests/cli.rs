//! The `guestwall` command line, run as a user runs it: the offline
//! `filter` verbs and `compile`, how errors and output are printed, and
//! (with a guestwalld in a test host) `--json` and `apply` beside a daemon.

use gw_model::{Binding, MacAddr};
use gw_testns::TestHost;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

mod common;
use common::{Daemon, GW};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("guestwall-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guestwall")).args(args).output().expect("run guestwall")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const GOOD: &str = "<filter name='web' chain='root'>
  <filterref filter='clean-traffic'/>
  <rule action='accept' direction='in' priority='500'>
    <tcp dstportstart='22'/>
  </rule>
</filter>
";

#[test]
fn validate_accepts_a_good_filter() {
    let d = TempDir::new("good");
    let f = d.file("web.xml", GOOD);
    let o = gw(&["filter", "validate", f.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "");
}

#[test]
fn validate_refuses_what_libvirt_would_ignore_unless_asked() {
    let d = TempDir::new("quirk");
    let f = d.file(
        "typo.xml",
        "<filter name='typo'>\n  <rule action='drop' direction='in'>\n    <tcpp dstportstart='22'/>\n  </rule>\n  <rule action='accept' direction='in'>\n    <tcp srcportstart='1' srcporttend='24'/>\n  </rule>\n</filter>\n",
    );
    let path = f.to_str().expect("utf-8");
    let o = gw(&["filter", "validate", path]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains(&format!("{path}:3:5: tcpp: unknown element <tcpp> is ignored")), "{err}");
    assert!(
        err.contains(&format!("{path}:6:27: tcp/srcporttend: unknown attribute 'srcporttend' is ignored")),
        "{err}"
    );
    assert!(err.contains("srcportend"), "the message lists the allowed attributes: {err}");

    let o = gw(&["filter", "validate", "--libvirt-quirks", path]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("warning: tcpp: unknown element <tcpp>"), "{}", text(&o.stderr));
}

#[test]
fn validate_reports_every_bad_value_with_place_and_range() {
    let d = TempDir::new("bad");
    let f = d.file(
        "bad.xml",
        "<filter name='bad'>\n  <rule action='accept' direction='in'>\n    <tcp dstportstart='65536' srcipaddr='192.0.2.300'/>\n  </rule>\n  <rule action='sing' direction='in'/>\n</filter>\n",
    );
    let path = f.to_str().expect("utf-8");
    let o = gw(&["filter", "validate", path]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("{path}:3:10: tcp/dstportstart: illegal value: '65536' is not a number in 0..65535")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{path}:3:31: tcp/srcipaddr: illegal value: '192.0.2.300' is not an IPv4 address")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{path}:5:9: rule/action: unknown action 'sing': use drop, accept, reject, return or continue"
        )),
        "{err}"
    );
}

#[test]
fn validate_checks_references_and_cycles() {
    let d = TempDir::new("refs");
    let a = d.file("a.xml", "<filter name='a'><filterref filter='b'/></filter>");
    let b = d.file("b.xml", "<filter name='b'><filterref filter='a'/></filter>");
    let c = d.file("c.xml", "<filter name='c'><filterref filter='nope'/></filter>");
    let o = gw(&["filter", "validate", a.to_str().expect("p"), b.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("filterref cycle: a -> b -> a"), "{}", text(&o.stderr));
    let o = gw(&["filter", "validate", c.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("references unknown filter 'nope'"), "{}", text(&o.stderr));
}

#[test]
fn validate_reports_malformed_xml_with_position() {
    let d = TempDir::new("xml");
    let f = d.file("broken.xml", "<filter name='x'>\n  <rule action='drop' direction='in'>\n</filter>\n");
    let o = gw(&["filter", "validate", f.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("broken.xml:3:") && err.contains("malformed XML"), "{err}");
}

#[test]
fn normalize_prints_libvirts_dump_and_warns_about_quirks() {
    let d = TempDir::new("norm");
    let f = d.file("q.xml", "<filter name='q'>\n<rule action='accept' direction='in' priority='100'>\n<tcp match='no' srcipaddr='192.0.2.3'/>\n<tcp dstportstart='22' srcporttend='3'/>\n</rule>\n</filter>\n");
    let o = gw(&["filter", "normalize", f.to_str().expect("p")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "<filter name='q' chain='root'>\n  <rule action='accept' direction='in' priority='100'>\n    <tcp match='no' srcipaddr='192.0.2.3'/>\n    <tcp dstportstart='22'/>\n  </rule>\n</filter>\n"
    );
    let err = text(&o.stderr);
    assert!(err.contains("q.xml:4:1: warning: tcp: a second <tcp> in one rule is merged"), "{err}");
    assert!(err.contains("q.xml:4:24: warning: tcp/srcporttend: unknown attribute"), "{err}");
}

#[test]
fn normalize_refuses_what_libvirt_refuses() {
    let d = TempDir::new("refuse");
    let f = d.file("r.xml", "<filter name='r'><rule action='accept' direction='in'><ip dscp='64'/></rule></filter>");
    let o = gw(&["filter", "normalize", f.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout), "");
    assert!(
        text(&o.stderr).contains("ip/dscp: illegal value: '64' is not a DSCP value in 0..63"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn resolve_clean_traffic_text_and_json() {
    let o = gw(&["filter", "resolve", "clean-traffic", "--param", "IP=192.0.2.10", "--param", "MAC=52:54:00:00:00:01"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for want in [
        "ethernet chain root:",
        "jump     out   chain mac (mac frames)",
        "return   out   <mac srcmacaddr='52:54:00:00:00:01'/>   # no-mac-spoofing#1",
        "return   out   <ip srcipaddr='192.0.2.10'/>",
        "return   out   <arp arpsrcipaddr='192.0.2.10'/>",
        "1000  drop     inout (every frame)   # no-other-l2-traffic#1",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let o = gw(&[
        "filter",
        "resolve",
        "clean-traffic",
        "-p",
        "IP=192.0.2.10",
        "-p",
        "IP=192.0.2.11",
        "-p",
        "MAC=52:54:00:00:00:01",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let ip_chain =
        v["chains"].as_array().expect("chains").iter().find(|c| c["name"] == "ipv4-ip").expect("ipv4-ip chain");
    // two addresses: two return rules between the DHCP exception and the drop
    assert_eq!(ip_chain["rules"].as_array().expect("rules").len(), 4);
}

#[test]
fn resolve_needs_every_variable() {
    let o = gw(&["filter", "resolve", "clean-traffic", "-p", "MAC=52:54:00:00:00:01"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("unresolvable variables or unavailable list elements: IP"), "{}", text(&o.stderr));
    let o = gw(&["filter", "resolve", "no-such-filter"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no filter named 'no-such-filter'"), "{}", text(&o.stderr));
}

#[test]
fn resolve_a_file_with_a_filter_dir() {
    let d = TempDir::new("dir");
    let lib = TempDir::new("dirlib");
    lib.file(
        "ports.xml",
        "<filter name='ports'><rule action='accept' direction='in'><tcp dstportstart='$PORT'/></rule></filter>",
    );
    let f = d.file("top.xml", "<filter name='top'><filterref filter='ports'><parameter name='PORT' value='22'/><parameter name='PORT' value='80'/></filterref></filter>");
    let o = gw(&["filter", "resolve", f.to_str().expect("p"), "--filter-dir", lib.0.to_str().expect("p")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("<tcp dstportstart='22'/>") && out.contains("<tcp dstportstart='80'/>"), "{out}");
}

#[test]
fn builtins_lists_all_24() {
    let o = gw(&["filter", "builtins"]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 24, "{out}");
    assert!(out.lines().any(|l| l.starts_with("clean-traffic ")), "{out}");
    let o = gw(&["filter", "builtins", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(keys(&v), ["filters"], "the shape of `filter list --json`: {v}");
    assert_eq!(v["filters"].as_array().expect("array").len(), 24);
}

/// A binding of guest port vnet0 to `filter`, in JSON, with its MAC as `mac`
/// (a JSON value: the string form, or the old array of numbers).
fn json_binding(filter: &str, mac: &str) -> String {
    format!(
        r#"{{"owner":{{"name":"vm1","uuid":"5c6d49af-b071-6127-b4ec-6f8ed4b55335"}},"portdev":"vnet0","mac":{mac},"filterref":{{"filter":"{filter}","params":{{"IP":["192.0.2.10"]}}}}}}"#
    )
}

/// The keys of a JSON object, in order.
fn keys(v: &serde_json::Value) -> Vec<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn error_causes_are_printed_once() {
    let d = TempDir::new("once");
    let b = d.file("b.xml", "<filterbinding/>\n");
    let b = b.to_str().expect("utf-8");
    let f = d.file("web.xml", GOOD);
    let f = f.to_str().expect("utf-8");
    let enoent = std::io::Error::from_raw_os_error(2).to_string();
    for (args, context) in [
        (vec!["compile", "--filter-dir", "/nonexistent", b], "--filter-dir: /nonexistent: "),
        (vec!["filter", "validate", "--filter-dir", "/nonexistent", f], "--filter-dir: /nonexistent: "),
        (vec!["filter", "resolve", "clean-traffic", "--filter-dir", "/nonexistent"], "--filter-dir: /nonexistent: "),
        (vec!["compile", "/nonexistent/b.xml"], "cannot read /nonexistent/b.xml: "),
        (vec!["filter", "normalize", "/nonexistent/f.xml"], "cannot read /nonexistent/f.xml: "),
        (
            vec!["--socket", "/nonexistent/guestwall.sock", "binding", "list"],
            "cannot connect to guestwalld at /nonexistent/guestwall.sock: ",
        ),
    ] {
        let o = gw(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = text(&o.stderr);
        assert_eq!(err.matches(&enoent).count(), 1, "{args:?}: the cause exactly once in {err:?}");
        assert!(err.contains(&format!("{context}{enoent}")), "{args:?}: {context:?} in {err:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err:?}");
    }
}

#[test]
fn json_binding_errors_give_file_line_and_column_once() {
    let d = TempDir::new("jsonerr");
    let f = d.file("b.json", &json_binding("clean-traffic", r#""52:54:00:00:00:zz""#));
    let path = f.to_str().expect("utf-8");
    let o = gw(&["compile", "--conntrack", "bridge", path]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with(&format!("{path}:1:")) && err.contains("'52:54:00:00:00:zz' is not a MAC address"),
        "{err}"
    );
    assert!(!err.contains(" at line "), "the position is said once, first: {err}");
    // what serde accepts but a binding may not have names the field
    let f = d.file("multicast.json", &json_binding("clean-traffic", r#""01:00:5e:00:00:01""#));
    let o = gw(&["compile", "--conntrack", "bridge", f.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("multicast.json: mac: 01:00:5e:00:00:01 is not unicast"), "{}", text(&o.stderr));
}

/// `guestwall ARGS` with stdout a pipe whose reader reads `keep` bytes and
/// closes it; the exit status and stderr.
fn with_early_closed_stdout(args: &[&str], keep: usize) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_guestwall"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run guestwall");
    let mut out = child.stdout.take().expect("stdout");
    let mut head = vec![0u8; keep];
    out.read_exact(&mut head).expect("the first bytes");
    drop(out);
    let o = child.wait_with_output().expect("wait");
    (o.status.code(), text(&o.stderr))
}

#[test]
fn closed_stdout_is_not_an_error() {
    // A reader gone before anything is written: every write fails.
    let d = TempDir::new("closed");
    let f = d.file("web.xml", GOOD);
    let f = f.to_str().expect("utf-8");
    for args in [vec!["filter", "builtins", "--json"], vec!["filter", "builtins"], vec!["filter", "normalize", f]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_guestwall"))
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run guestwall");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        assert_eq!(text(&o.stderr), "", "{args:?}");
    }
    // `guestwall ... --json | head -c 10`: output far larger than the pipe
    // holds, so guestwall is still writing when the reader closes.
    let ips: Vec<String> = (0..1000).map(|i| format!("IP=10.0.{}.{}", i / 250, i % 250 + 1)).collect();
    let mut args = vec!["filter", "resolve", "clean-traffic", "-p", "MAC=52:54:00:00:00:01"];
    for ip in &ips {
        args.extend(["-p", ip.as_str()]);
    }
    let (code, err) = with_early_closed_stdout(&args, 10);
    assert_eq!((code, err.as_str()), (Some(0), ""), "text");
    args.push("--json");
    let (code, err) = with_early_closed_stdout(&args, 10);
    assert_eq!((code, err.as_str()), (Some(0), ""), "--json");
}

#[test]
fn mac_addr_json_is_the_string_users_write() {
    let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    assert_eq!(serde_json::to_string(&mac).expect("json"), r#""52:54:00:00:00:01""#);
    assert_eq!(serde_json::from_str::<MacAddr>(r#""52:54:00:00:00:01""#).expect("string"), mac);
    assert_eq!(serde_json::from_str::<MacAddr>(r#""52:54:0:0:0:1""#).expect("short octets"), mac);
    assert_eq!(serde_json::from_str::<MacAddr>("[82,84,0,0,0,1]").expect("the old form still reads"), mac);
    for bad in [r#""52:54:00:00:00""#, r#""52:54:00:00:00:01:02""#, "[82,84,0,0,0]", "[82,84,0,0,0,256]", "1"] {
        assert!(serde_json::from_str::<MacAddr>(bad).is_err(), "{bad}");
    }
    // a binding: written with the string, read from either form
    let b: Binding = serde_json::from_str(&json_binding("clean-traffic", r#""52:54:00:00:00:01""#)).expect("binding");
    assert_eq!(b.mac, mac);
    let v = serde_json::to_value(&b).expect("json");
    assert_eq!(v["mac"], "52:54:00:00:00:01");
    let old: Binding = serde_json::from_str(&json_binding("clean-traffic", "[82,84,0,0,0,1]")).expect("old binding");
    assert_eq!(old, b);
    assert_eq!(serde_json::from_value::<Binding>(v).expect("round trip"), b);
    // a MAC in a rule (`filter resolve --json`) is the string too
    let o = gw(&["filter", "resolve", "clean-traffic", "-p", "IP=192.0.2.10", "-p", "MAC=52:54:00:00:00:01", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(r#""mac": "52:54:00:00:00:01""#), "{}", text(&o.stdout));
}

#[test]
fn compile_reads_json_bindings_with_either_mac_form() {
    let d = TempDir::new("jsonmac");
    for (name, mac) in [("new.json", r#""52:54:00:00:00:01""#), ("old.json", "[82,84,0,0,0,1]")] {
        let f = d.file(name, &json_binding("clean-traffic", mac));
        let o = gw(&["compile", "--conntrack", "bridge", f.to_str().expect("utf-8")]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        assert!(text(&o.stdout).contains(r#""vnet0" . 52:54:00:00:00:01"#), "{name}: {}", text(&o.stdout));
    }
}

#[test]
fn json_output_is_one_object_named_for_what_it_holds() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let b = t.binding(1, "allow-arp", &[]);
    let v = json(&d.ok(&["binding", "create", b.to_str().expect("utf-8"), "--json"]));
    assert_eq!(keys(&v), ["message", "warnings"], "{v}");
    let v = json(&d.ok(&["binding", "list", "--json"]));
    assert_eq!(keys(&v), ["bindings"], "not nested twice: {v}");
    let list = v["bindings"].as_array().expect("an array of bindings");
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!((&list[0]["portdev"], &list[0]["filter"]), (&"v1".into(), &"allow-arp".into()), "{v}");
    let v = json(&d.ok(&["filter", "list", "--json"]));
    assert_eq!(keys(&v), ["filters"], "{v}");
    assert!(v["filters"].as_array().expect("filters").iter().any(|f| f["name"] == "clean-traffic"), "{v}");
    let v = json(&d.ok(&["binding", "dumpxml", "v1", "--json"]));
    assert_eq!(keys(&v), ["xml"], "{v}");
    assert!(v["xml"].as_str().expect("xml").contains("<filterbinding"), "{v}");
    // a refusal: exit 1, the error object on stdout
    let o = d.gw(&["binding", "dumpxml", "nope", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&text(&o.stdout));
    assert_eq!(keys(&v), ["error"], "{v}");
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    assert!(!v["error"]["messages"].as_array().expect("messages").is_empty(), "{v}");
}

#[test]
fn apply_is_refused_while_guestwalld_owns_the_tables() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let b = t.binding(1, "allow-arp", &[]);
    let b = b.to_str().expect("utf-8");
    d.ok(&["binding", "create", b]);
    let sock = dir.join("sock").display().to_string();
    let lock = dir.join("var/lock").display().to_string();
    let state = dir.join("var").display().to_string();
    let before = t.ruleset_stateless();
    let refused = |o: Output, why: &str| {
        assert_eq!(o.status.code(), Some(1), "apply was not refused: {}", text(&o.stderr));
        let err = text(&o.stderr);
        for want in ["guestwalld is running", why, "guestwall binding create", "stop guestwalld", "--force"] {
            assert!(err.contains(want), "{want:?} in {err}");
        }
        assert_eq!(err.lines().count(), 1, "{err}");
    };
    // its socket answers, in this network namespace
    refused(t.guestwall(GW, &["--socket", &sock, "apply", b]), &format!("it answers on {sock}"));
    // its socket elsewhere, its state directory's lock held
    refused(
        t.guestwall(GW, &["--socket", "/nonexistent/guestwall.sock", "apply", "--state-dir", &state, b]),
        &format!("it holds {lock}"),
    );
    assert_eq!(t.ruleset_stateless(), before, "a refused apply changed the ruleset");
    assert!(std::path::Path::new(&lock).exists());

    // The daemon filters its own namespace only: apply in another is not in its way.
    let other = TestHost::new(1);
    let b2 = other.binding(1, "allow-arp", &[]);
    let o = other.guestwall(GW, &["--socket", &sock, "apply", "--state-dir", &state, b2.to_str().expect("utf-8")]);
    assert!(o.status.success(), "apply in another namespace: {}", text(&o.stderr));
    assert!(other.ruleset().contains("table bridge guestwall"), "{}", other.ruleset());

    // --force overrides, saying so; the daemon stays up.
    let o = t.guestwall(GW, &["--socket", &sock, "apply", "--force", b]);
    assert!(o.status.success(), "--force: {}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--force: applying anyway"), "{}", text(&o.stderr));
    assert!(d.alive(), "guestwalld died; log: {}", d.log());
}

#[test]
fn learning_off_without_an_address_is_refused_naming_the_variable() {
    let d = TempDir::new("learnoff");
    let doc = json_binding("clean-traffic", r#""52:54:00:00:00:01""#)
        .replace(r#""IP":["192.0.2.10"]"#, r#""CTRL_IP_LEARNING":["none"]"#);
    let b = d.file("b.json", &doc);
    let o = gw(&["compile", b.to_str().expect("utf-8")]);
    assert!(!o.status.success(), "compiled: {}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(err.contains("IP used by its rules but not given") && err.contains("CTRL_IP_LEARNING is 'none'"), "{err}");
    // With learning on (the default), the same binding compiles: it waits for its address.
    let b = d.file("b2.json", &doc.replace(r#""CTRL_IP_LEARNING":["none"]"#, r#""CTRL_IP_LEARNING":["any"]"#));
    assert!(gw(&["compile", b.to_str().expect("utf-8")]).status.success());
}
