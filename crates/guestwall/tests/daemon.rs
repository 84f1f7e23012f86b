//! guestwalld in a test host: defining, binding, redefining under traffic,
//! healing, restarting, interfaces coming and going, and bad requests.

use gw_testns::TestHost;
use std::path::Path;
use std::time::Duration;

mod common;
use common::*;

#[test]
fn define_bind_redefine_heal_restart() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let (g1, peer) = (t.guest(1).clone(), t.peer.clone());
    let f1 = t.filter_file("policy1.xml", &POLICY.replace("PORT", "22"));
    d.ok(&["filter", "define", &f1]);
    let b = t.binding(1, "policy", &[("IP", &g1.ip)]);
    d.ok(&["binding", "create", b.to_str().expect("p")]);
    t.serve(&g1.ns, &["tcp-serve", "22"]);
    t.serve(&g1.ns, &["tcp-serve", "2222"]);
    assert!(t.tcp(&peer.ns, &g1.ip, 22, 0), "ssh in\n{}", t.ruleset());
    assert!(!t.tcp(&peer.ns, &g1.ip, 2222, 0), "2222 in passed");

    // Redefine twice while g1 keeps sending spoofed frames: none may pass,
    // and the new rules apply.
    let spoofs: Vec<String> = (0..150)
        .map(|i| {
            format!(
                "Ether(src='{}', dst='{}')/IP(src='192.0.2.66', dst='{}')/UDP(dport=9)/Raw(b'spoof{i:03}')",
                g1.mac, peer.mac, peer.ip
            )
        })
        .collect();
    let f2 = t.filter_file("policy2.xml", &POLICY.replace("PORT", "2222"));
    let redefine = {
        let (d1, d2, dirc) = (f2.clone(), f1.clone(), d.dir.clone());
        std::thread::spawn(move || {
            let gw = |f: &str| {
                std::process::Command::new(GW)
                    .arg("--socket")
                    .arg(dirc.join("sock"))
                    .args(["filter", "define", f])
                    .output()
                    .expect("define")
            };
            std::thread::sleep(Duration::from_millis(200));
            let a = gw(&d1);
            std::thread::sleep(Duration::from_millis(200));
            let b = gw(&d2);
            std::thread::sleep(Duration::from_millis(200));
            let c = gw(&d1);
            (a.status.success(), b.status.success(), c.status.success())
        })
    };
    let arrived = t.tags_arriving(&g1.ns, &spoofs, &peer.ns);
    let (a, b2, c) = redefine.join().expect("redefine thread");
    assert!(a && b2 && c, "redefining failed");
    assert!(arrived.is_empty(), "spoofed frames passed during redefinition: {arrived:?}");
    assert!(t.tcp(&peer.ns, &g1.ip, 2222, 0), "the new rule does not apply\n{}", t.ruleset());
    assert!(!t.tcp(&peer.ns, &g1.ip, 22, 0), "the old rule still applies");

    // Healing: flush everything; the rules come back by themselves.
    let before = canonical(&t.ruleset_stateless());
    t.exec(&t.host.clone(), &["nft", "flush", "ruleset"]);
    let took = wait_for(|| canonical(&t.ruleset_stateless()) == before, "healing after nft flush ruleset");
    eprintln!("healed after {took:?}");
    let spoof = format!(
        "Ether(src='{}', dst='{}')/IP(src='192.0.2.66', dst='{}')/UDP(dport=9)/Raw(b'healed')",
        g1.mac, peer.mac, peer.ip
    );
    assert!(!t.frame_arrives(&g1.ns, &spoof, &peer.ns, &tagged("healed")), "spoof passed after healing");
    // Someone deletes one of our chains' rules: also restored.
    t.exec(&t.host.clone(), &["nft", "delete", "table", "bridge", "guestwall"]);
    wait_for(|| canonical(&t.ruleset_stateless()) == before, "healing after the bridge table was deleted");

    // SIGHUP re-applies everything (and finds nothing to change).
    let _ = std::process::Command::new("kill").args(["-HUP", &d.pid.to_string()]).status();
    wait_for(
        || {
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
                .any(|e| std::fs::read_to_string(e.path()).unwrap_or_default().contains("SIGHUP: tables replaced"))
        },
        "SIGHUP re-apply",
    );
    assert_eq!(canonical(&t.ruleset_stateless()), before, "SIGHUP changed the rules");
    // Healing reacts to others' changes only: the flush and the deletion,
    // never to the daemon's own transactions.
    let log: String = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert_eq!(log.matches("another process changed guestwall's tables").count(), 2, "heals:\n{log}");

    // kill -9: the rules stay while the daemon is down; a restart changes nothing.
    let list = d.ok(&["binding", "list"]);
    t.kill9(d.pid);
    assert_eq!(canonical(&t.ruleset_stateless()), before, "rules changed when the daemon died");
    assert!(
        !t.frame_arrives(&g1.ns, &spoof.replace("healed", "down"), &peer.ns, &tagged("down")),
        "spoof passed while down"
    );
    let d2 = Daemon::start(&mut t, &dir);
    assert_eq!(d2.ok(&["binding", "list"]), list);
    assert_eq!(canonical(&t.ruleset_stateless()), before, "rules changed across the restart");
    assert!(d2.ok(&["filter", "dumpxml", "policy"]).contains("dstportstart='2222'"));
}

#[test]
fn bindings_follow_their_interfaces() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let host = t.host.clone();
    // A binding for a port that does not exist yet is kept, not active, and
    // its entries are in place in both families already: the port is
    // filtered from its first frame, on a bridge or routed.
    let late = t.filter_file(
        "late.xml",
        "<filterbinding><owner><name>late</name><uuid>00000000-0000-4000-8000-000000000005</uuid></owner><portdev name='v5'/><mac address='52:54:00:00:00:05'/><filterref filter='clean-traffic'><parameter name='IP' value='192.0.2.5'/></filterref></filterbinding>",
    );
    let out = d.ok(&["binding", "create", &late]);
    assert!(out.contains("waiting for the interface"), "{out}");
    let has_v5 = |t: &TestHost| t.ruleset().contains("\"v5\" : goto");
    let routed_v5 = |t: &TestHost| t.ruleset().matches("\"v5\" : goto r_").count() == 2;
    assert!(has_v5(&t) && routed_v5(&t), "{}", t.ruleset());
    let active = |d: &Daemon| d.ok(&["binding", "list"]).lines().any(|l| l.contains("v5") && l.contains("yes"));
    assert!(!active(&d));
    // It appears: its rules come.
    let g5 = format!("{host}-g5");
    t.exec("/", &["true"]);
    for cmd in [
        vec!["ip", "netns", "add", g5.as_str()],
        vec![
            "ip",
            "link",
            "add",
            "v5",
            "netns",
            host.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            g5.as_str(),
        ],
        vec!["ip", "-n", host.as_str(), "link", "set", "v5", "master", "br0", "up"],
    ] {
        let o = std::process::Command::new(cmd[0]).args(&cmd[1..]).output().expect("ip");
        assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    // Once it is a bridge port, only the bridge family has it.
    wait_for(|| active(&d) && !routed_v5(&t), "v5 active on its bridge");
    assert!(has_v5(&t));
    // It goes: the binding stays, not active, its entries wait for it.
    let _ = std::process::Command::new("ip").args(["-n", &host, "link", "del", "v5"]).output();
    wait_for(|| !active(&d) && routed_v5(&t), "v5 inactive after it disappeared");
    assert!(has_v5(&t) && d.ok(&["binding", "list"]).contains("v5"));
    // It comes back.
    let o = std::process::Command::new("ip")
        .args(["link", "add", "v5", "netns", &host, "type", "veth", "peer", "name", "eth0", "netns", &g5])
        .output()
        .expect("ip");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // It comes back (not on a bridge: a routed port now).
    wait_for(|| active(&d), "v5 active after it came back");
    assert!(routed_v5(&t), "{}", t.ruleset());
    let _ = std::process::Command::new("ip").args(["netns", "del", &g5]).output();
}

#[test]
fn bad_requests_change_nothing() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let g1 = t.guest(1).clone();
    bind_policy(&t, &d);
    // The same binding again, for the refusals below.
    let b = t.binding(1, "policy", &[("IP", &g1.ip)]);
    let rules = t.ruleset_stateless();
    let files = || {
        let mut v: Vec<String> = Vec::new();
        for sub in ["etc", "var/bindings"] {
            for e in std::fs::read_dir(dir.join(sub)).expect("dir") {
                let p = e.expect("entry").path();
                v.push(format!("{}={}", p.display(), std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
        v.sort();
        v
    };
    let disk = files();
    let bad_xml = t.filter_file("bad.xml", "<filter name='x'>\n  <rule action='accept' direction='in'>\n</filter>\n");
    d.fails(&["filter", "define", &bad_xml], "3:");
    let quirky =
        t.filter_file("quirky.xml", "<filter name='quirky'><rule action='drop' direction='in'><tcpp/></rule></filter>");
    d.fails(&["filter", "define", &quirky], "unknown element <tcpp>");
    let unknown = t.filter_file(
        "unknown.xml",
        "<filterbinding><owner><name>u</name><uuid>00000000-0000-4000-8000-000000000003</uuid></owner><portdev name='v3'/><mac address='52:54:00:00:00:03'/><filterref filter='no-such-filter'/></filterbinding>",
    );
    d.fails(&["binding", "create", &unknown], "unknown filter 'no-such-filter'");
    d.fails(&["binding", "create", b.to_str().expect("p")], "already bound");
    d.fails(&["filter", "undefine", "policy"], "in use by: binding v1");
    d.fails(&["filter", "undefine", "clean-traffic"], "built-in");
    d.fails(&["binding", "delete", "v7"], "no binding for port 'v7'");
    // A redefinition that would not compile for a bound port is refused.
    let broken = t.filter_file(
        "broken.xml",
        "<filter name='policy'><rule action='accept' direction='in'><tcp dstportstart='$NOPE'/></rule></filter>",
    );
    d.fails(&["filter", "define", &broken], "NOPE");
    // A cycle is refused.
    let cyc = t.filter_file("cyc.xml", "<filter name='cyc'><filterref filter='cyc'/></filter>");
    d.fails(&["filter", "define", &cyc], "cycle");
    assert_eq!(t.ruleset_stateless(), rules, "a refused request changed the rules");
    assert_eq!(files(), disk, "a refused request changed the state on disk");

    // Non-root callers: the socket is 0600, and the daemon checks credentials.
    let sock = dir.join("sock");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).expect("socket").permissions().mode() & 0o777, 0o600);
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", GW, "--socket"])
            .arg(&sock)
            .args(args)
            .output()
            .expect("setpriv")
    };
    let o = as_nobody(&["binding", "list"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("accepts only root"), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&t.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let o = as_nobody(&["binding", "delete", "v1"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("only from root"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files(), disk);

    // A second daemon on the same state, or on a socket in use, is refused.
    let refused = |sock: &Path, etc: &str, var: &str, want: &str| {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &t.host, &daemon_bin(), "--socket"])
            .arg(sock)
            .arg("--config-dir")
            .arg(dir.join(etc))
            .arg("--state-dir")
            .arg(dir.join(var))
            .output()
            .expect("another daemon");
        assert!(!o.status.success(), "a daemon started with {etc}, {var}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}");
    };
    refused(&dir.join("sock2"), "etc", "var", "another guestwalld");
    refused(&sock, "etc3", "var3", "in use by a running guestwalld");
    assert_eq!(t.ruleset_stateless(), rules);
}

fn journals(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("var/bindings"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".batch-"))
                .collect()
        })
        .unwrap_or_default()
}

fn binding_doc(port: &str, n: usize) -> String {
    format!(
        "<filterbinding><owner><name>g{n}</name><uuid>00000000-0000-4000-8000-{n:012}</uuid></owner><portdev name='{port}'/><mac address='52:54:00:00:{:02x}:{:02x}'/><filterref filter='clean-traffic'><parameter name='IP' value='192.0.2.{}'/></filterref></filterbinding>",
        n / 256,
        n % 256,
        n % 250 + 1
    )
}

/// A large batch is stored through one journal, which settles; after a
/// crash a journal left behind is written out again; deleting a binding
/// first settles the journals, so a deleted binding never comes back.
#[test]
fn batch_journal_settles_recovers_and_never_resurrects() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let files: Vec<String> = (0..70)
        .map(|i| {
            let f = t.filter_file(&format!("jb{i}.xml"), &binding_doc(&format!("jb{i}"), i));
            f
        })
        .collect();
    let args: Vec<&str> = ["binding", "create"].into_iter().chain(files.iter().map(String::as_str)).collect();
    d.ok(&args);
    wait_for(|| journals(&dir).is_empty(), "the batch's journal to settle");
    assert_eq!(d.ok(&["binding", "list"]).matches("jb").count(), 70, "bindings after the batch");

    // delete one right after another batch, then crash: it stays deleted
    let more: Vec<String> =
        (70..140).map(|i| t.filter_file(&format!("jb{i}.xml"), &binding_doc(&format!("jb{i}"), i))).collect();
    let args: Vec<&str> = ["binding", "create"].into_iter().chain(more.iter().map(String::as_str)).collect();
    d.ok(&args);
    d.ok(&["binding", "delete", "jb100"]);
    assert!(journals(&dir).is_empty(), "deleting a binding leaves a journal behind: {:?}", journals(&dir));
    t.kill9(d.pid);

    // a journal a crash left behind, with files lost and torn
    let journal = dir.join("var/bindings/.batch-1-1.journal");
    let entries = format!(
        "[[\"jr1.xml\",{}],[\"jr2.xml\",{}]]",
        serde_json::to_string(&binding_doc("jr1", 201)).expect("json"),
        serde_json::to_string(&binding_doc("jr2", 202)).expect("json")
    );
    std::fs::write(&journal, entries).expect("journal");
    std::fs::write(dir.join("var/bindings/jr2.xml"), "").expect("torn file");
    let d2 = Daemon::start(&mut t, &dir);
    let list: serde_json::Value = serde_json::from_str(&d2.ok(&["binding", "list", "--json"])).expect("json list");
    let ports: std::collections::BTreeSet<String> = list
        .pointer("/bindings")
        .and_then(|b| b.as_array())
        .unwrap_or_else(|| panic!("a list of bindings: {list}"))
        .iter()
        .filter_map(|b| b.get("portdev").and_then(|p| p.as_str()).map(str::to_string))
        .collect();
    assert!(ports.contains("jr1") && ports.contains("jr2"), "journal not recovered: {ports:?}");
    assert!(!ports.contains("jb100"), "a deleted binding came back");
    assert!(ports.contains("jb99") && ports.contains("jb101"), "{ports:?}");
    assert_eq!(ports.len(), 139 + 2, "bindings after the restart: {ports:?}");
    assert!(journals(&dir).is_empty(), "recovered journal stays: {:?}", journals(&dir));
}
