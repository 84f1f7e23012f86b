//! The offline `guestwall filter` verbs, run as a user runs them.

use std::path::PathBuf;
use std::process::{Command, Output};

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
    assert_eq!(v.as_array().expect("array").len(), 24);
}
