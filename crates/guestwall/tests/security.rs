//! Regression tests for the attacks of the security review (issue 9), each
//! reproduced as it was found and named after what it guards. Real packets
//! in test hosts: a flooding sender, a sniffer counting what got through.

use gw_testns::TestHost;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A frame from guest `i`'s MAC claiming source address `ip`, to the peer,
/// tagged so the peer's sniffer can count it.
fn spoofed(mac: &str, ip: &str, tag: &str) -> String {
    format!("Ether(src='{mac}', dst='ff:ff:ff:ff:ff:ff')/IP(src='{ip}', dst='192.0.2.9')/UDP(sport=4000, dport=4000)/Raw(b'{tag}')")
}

fn binding_doc(port: &str, mac: &str, ip: &str) -> String {
    format!(
        "<filterbinding><owner><name>g-{port}</name><uuid>00000000-0000-4000-8000-000000000099</uuid></owner><portdev name='{port}'/><mac address='{mac}'/><filterref filter='clean-traffic'><parameter name='IP' value='{ip}'/></filterref></filterbinding>"
    )
}

fn ip(args: &[&str]) {
    let o = std::process::Command::new("ip").args(args).output().expect("ip");
    assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Finding 1: a filter name with newlines was written into the nft
/// script's comment header and ran as commands (`delete table inet fw`).
#[test]
fn filter_names_never_reach_nft_as_commands() {
    let mut t = TestHost::new(1);
    let host = t.host.clone();
    let o = t.exec(&host, &["nft", "add table inet fw; add chain inet fw keep"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let evil = "<filter name='x&#10;delete table inet fw&#10;#'><filterref filter='clean-traffic'/></filter>";
    let f = t.filter_file("evil.xml", evil);
    d.fails(&["filter", "define", &f], "name");
    // The same file placed by hand in the config directory: start-up sets it
    // aside, and nothing it says reaches nft.
    std::fs::write(dir.join("etc/evil.xml"), evil).expect("plant filter");
    let b = t.binding(1, "clean-traffic", &[("IP", "192.0.2.1")]);
    d.ok(&["binding", "create", &b.display().to_string()]);
    d.ok(&["reload"]);
    t.kill9(d.pid);
    let d = Daemon::start(&mut t, &dir);
    d.ok(&["reload"]);
    let _ = t.exec(&host, &["nft", "flush", "ruleset"]);
    let _ = t.exec(&host, &["nft", "add table inet fw; add chain inet fw keep"]);
    wait_for(|| t.ruleset().contains("table bridge guestwall"), "healing after the flush");
    d.ok(&["reload"]);
    assert!(t.ruleset().contains("table inet fw"), "the host's own table was deleted:\n{}", t.ruleset());
    assert!(d.log().contains("evil.xml"), "the bad file is not named in the log:\n{}", d.log());
}

/// Finding 2: ports named `*` and `v*` (legal Linux names) were read by nft
/// as wildcards: full loads failed, healing failed, restarts left nothing
/// active. They must be exact names like any other.
#[test]
fn ports_named_like_wildcards_are_exact_names() {
    let mut t = TestHost::new(1);
    let host = t.host.clone();
    for name in ["*", "v*"] {
        ip(&["-n", &host, "link", "add", name, "type", "veth", "peer", "name", &format!("peer{}", name.len())]);
        ip(&["-n", &host, "link", "set", name, "master", "br0", "up"]);
    }
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    for (port, n) in [("*", 7), ("v*", 8)] {
        let f = t.filter_file(
            &format!("b{n}.xml"),
            &binding_doc(port, &format!("52:54:00:00:00:0{n}"), &format!("192.0.2.{n}")),
        );
        d.ok(&["binding", "create", &f]);
    }
    let g = t.guest(1).clone();
    let b = t.binding(1, "clean-traffic", &[("IP", "192.0.2.1")]);
    d.ok(&["binding", "create", &b.display().to_string()]);
    let list = d.ok(&["binding", "list"]);
    assert_eq!(list.matches("yes").count(), 3, "{list}");
    // A foreign edit: healing must work (it re-loads everything as nft text).
    let o = t.exec(&host, &["nft", "delete", "element", "bridge", "guestwall", "from_guest", "{ \"v1\" }"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(|| t.ruleset().contains("\"v1\" : goto"), "healing of v1's entry");
    let sniff = t.sniffer(&t.peer.ns, &tagged("gwspoof2"));
    let flood = t.flood(&g.ns, 1.5, 1000, &spoofed(&g.mac, "192.0.2.66", "gwspoof2"));
    let sent = flood.sent();
    assert!(sent > 500, "only {sent} frames sent");
    assert_eq!(sniff.count(), 0, "spoofed frames from v1 passed after healing");
    // A restart keeps all three active; each can be deleted while the other exists.
    t.kill9(d.pid);
    let d = Daemon::start(&mut t, &dir);
    let list = d.ok(&["binding", "list"]);
    assert_eq!(list.matches("yes").count(), 3, "after a restart: {list}\n{}", d.log());
    d.ok(&["binding", "delete", "*"]);
    assert!(d.ok(&["binding", "list"]).contains("v*"));
    d.ok(&["binding", "delete", "v*"]);
    assert!(!t.ruleset().contains("\"v*\""), "{}", t.ruleset());
}

/// Finding 3: a bound port was unfiltered for ~33 ms after it appeared,
/// and for as long as another guest kept flapping its link (the link
/// events were debounced). Its entries must be there before it exists.
#[test]
fn a_new_port_is_filtered_from_its_first_frame_even_under_link_flapping() {
    let mut t = TestHost::new(1);
    let host = t.host.clone();
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let b1 = t.binding(1, "clean-traffic", &[("IP", "192.0.2.1")]);
    d.ok(&["binding", "create", &b1.display().to_string()]);
    let g5 = format!("{host}-g5");
    ip(&["netns", "add", &g5]);
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _g5 = Ns(g5.clone());
    let mac5 = "52:54:00:00:00:05";
    for round in 0..3 {
        let f = t.filter_file(&format!("b5-{round}.xml"), &binding_doc("v5", mac5, "192.0.2.5"));
        let out = d.ok(&["binding", "create", &f]);
        assert!(out.contains("waiting for the interface"), "{out}");
        // Guest 1 flaps its own link every 10 ms the whole time.
        let g1 = t.guest(1).ns.clone();
        let flapper = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &g1,
                "sh",
                "-c",
                "for i in $(seq 200); do ip link set eth0 down; sleep 0.005; ip link set eth0 up; sleep 0.005; done",
            ])
            .spawn()
            .expect("flapper");
        // The guest side exists and floods before its port is on the bridge.
        ip(&["link", "add", "v5", "netns", &host, "type", "veth", "peer", "name", "eth0", "netns", &g5]);
        ip(&["-n", &g5, "link", "set", "eth0", "address", mac5, "up"]);
        let tag = format!("gwspoof3{round}");
        let sniff = t.sniffer(&t.peer.ns, &tagged(&tag));
        let flood = t.flood(&g5, 2.0, 2000, &spoofed(mac5, "192.0.2.66", &tag));
        std::thread::sleep(Duration::from_millis(300));
        ip(&["-n", &host, "link", "set", "v5", "master", "br0", "up"]);
        let sent = flood.sent();
        let mut flapper = flapper;
        let _ = flapper.wait();
        assert!(sent > 1000, "only {sent} frames sent");
        let passed = sniff.count();
        assert_eq!(passed, 0, "round {round}: {passed} of {sent} spoofed frames passed the new port");
        // Legitimate traffic from it does pass (the sniffer works, the port is bridged).
        assert!(
            t.frame_arrives(&g5, &spoofed(mac5, "192.0.2.5", "gwlegit3"), &t.peer.ns, &tagged("gwlegit3")),
            "legitimate frames from v5 do not arrive:\n{}",
            t.ruleset()
        );
        d.ok(&["binding", "delete", "v5"]);
        let _ = std::process::Command::new("ip").args(["-n", &host, "link", "del", "v5"]).output();
    }
}

/// Finding 4: 1,101 idle connections under a 1,024 descriptor limit made
/// the accept loop return and the daemon exit; nothing healed after that.
#[test]
fn running_out_of_descriptors_never_stops_the_daemon() {
    let mut t = TestHost::new(1);
    let host = t.host.clone();
    let dir = t.dir.join("gw");
    let d = Daemon::start_with(&mut t, &dir, &["prlimit", "--nofile=64:64"], &["--idle-timeout", "1"]);
    let b = t.binding(1, "clean-traffic", &[("IP", "192.0.2.1")]);
    d.ok(&["binding", "create", &b.display().to_string()]);
    let sock = dir.join("sock");
    let idle: Vec<UnixStream> = (0..200).filter_map(|_| UnixStream::connect(&sock).ok()).collect();
    assert!(idle.len() >= 100, "only {} connections opened", idle.len());
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.alive(), "the daemon exited:\n{}", d.log());
    // Clients never take the descriptors healing needs: a flush is healed
    // while the idle connections are still open.
    let _ = t.exec(&host, &["nft", "flush", "ruleset"]);
    wait_for(|| t.ruleset().contains("\"v1\" : goto"), "healing while clients hold connections");
    // Idle connections time out: the daemon answers again.
    let started = Instant::now();
    while !d.gw(&["status"]).status.success() {
        assert!(started.elapsed() < Duration::from_secs(30), "no answer within 30 s:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(idle);
    d.ok(&["binding", "delete", "v1"]);
    assert!(d.alive());
}

/// The connection limit: at the limit every connection is served; past
/// it, new ones wait in the queue until an idle one times out.
#[test]
fn connections_past_the_limit_wait_and_are_then_served() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start_with(&mut t, &dir, &[], &["--max-connections", "4", "--idle-timeout", "1.5"]);
    let sock = dir.join("sock");
    // At the limit: three idle connections, the fourth is served at once.
    let idle: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&sock).expect("connect")).collect();
    let started = Instant::now();
    d.ok(&["status"]);
    assert!(started.elapsed() < Duration::from_millis(1000), "served only after {:?}", started.elapsed());
    // Past it: a fourth idle one fills the slots; the next request waits
    // for an idle timeout, then it is served.
    let more = UnixStream::connect(&sock).expect("connect");
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    d.ok(&["status"]);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(700), "served after {waited:?}: the limit was not applied");
    // An idle connection is told why it is closed.
    let mut c = idle.into_iter().next().expect("idle");
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.contains("no complete request line"), "{answer:?}");
    drop(more);
}

/// Finding 5: deep nesting made the daemon (and `filter validate`) abort
/// with a stack overflow.
#[test]
fn deep_nesting_is_refused_and_the_daemon_keeps_serving() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let deep_rules = format!("<filter name='deep'>{}{}</filter>", "<rule>".repeat(5000), "</rule>".repeat(5000));
    let f = t.filter_file("deep.xml", &deep_rules);
    d.fails(&["filter", "define", &f], "deep");
    let o = std::process::Command::new(GW).args(["filter", "validate", &f]).output().expect("validate");
    assert_eq!(o.status.code(), Some(1), "validate: {}", String::from_utf8_lossy(&o.stderr));
    let deep_params = format!(
        "<filterbinding><owner><name>g</name><uuid>00000000-0000-4000-8000-000000000001</uuid></owner><portdev name='v1'/><mac address='52:54:00:00:00:01'/><filterref filter='clean-traffic'>{}{}</filterref></filterbinding>",
        "<parameter name='IP' value='192.0.2.1'>".repeat(5000),
        "</parameter>".repeat(5000)
    );
    let b = t.filter_file("deepb.xml", &deep_params);
    d.fails(&["binding", "create", &b], "deep");
    // A filterref chain 7,000 long, written one by one (the last first).
    for i in (0..200).rev() {
        let next = if i == 199 {
            "<filterref filter='clean-traffic'/>".to_string()
        } else {
            format!("<filterref filter='c{}'/>", i + 1)
        };
        let f = t.filter_file(&format!("c{i}.xml"), &format!("<filter name='c{i}'>{next}</filter>"));
        let o = d.gw(&["filter", "define", &f]);
        if !o.status.success() {
            // The depth limit refuses the chain before it gets deep.
            assert!(String::from_utf8_lossy(&o.stderr).contains("deep"), "{}", String::from_utf8_lossy(&o.stderr));
            break;
        }
    }
    assert!(d.alive(), "the daemon died:\n{}", d.log());
    d.ok(&["status"]);
}

/// Finding 6: a batch refused for lack of space came back after a restart
/// (its journal stayed and start-up wrote it out).
#[test]
fn a_batch_refused_for_lack_of_space_never_comes_back() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let var = dir.join("var");
    std::fs::create_dir_all(&var).expect("var");
    let o = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "gw-enospc"])
        .arg(&var)
        .output()
        .expect("mount");
    assert!(o.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&o.stderr));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).output();
        }
    }
    let _u = Unmount(var.clone());
    let d = Daemon::start(&mut t, &dir);
    // Bindings large enough that the batch does not fit on the file system.
    let pad = "x".repeat(1500);
    let docs: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "<filterbinding><owner><name>{pad}{i}</name><uuid>00000000-0000-4000-8000-{i:012}</uuid></owner><portdev name='n{i}'/><mac address='52:54:00:00:01:{:02x}'/><filterref filter='clean-traffic'><parameter name='IP' value='192.0.2.{}'/></filterref></filterbinding>",
                i % 256,
                i % 250 + 1
            )
        })
        .collect();
    let files: Vec<String> = docs.iter().enumerate().map(|(i, doc)| t.filter_file(&format!("n{i}.xml"), doc)).collect();
    let mut args = vec!["binding", "create"];
    args.extend(files.iter().map(String::as_str));
    let o = d.gw(&args);
    assert!(!o.status.success(), "the batch fitted: make the bindings bigger");
    t.kill9(d.pid);
    let d = Daemon::start(&mut t, &dir);
    let list = d.ok(&["binding", "list"]);
    assert!(!list.contains("n1"), "a refused binding came back after a restart:\n{list}");
}

/// Finding 7: huge expansions held the engine (and grew to gigabytes);
/// meanwhile nothing was served and a flush was not healed.
#[test]
fn huge_expansions_are_refused_and_healing_never_waits() {
    let mut t = TestHost::new(1);
    let host = t.host.clone();
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let b = t.binding(1, "clean-traffic", &[("IP", "192.0.2.1")]);
    d.ok(&["binding", "create", &b.display().to_string()]);
    let filter = "<filter name='iter'><rule action='accept' direction='out'><tcp srcipaddr='$A[@1]' dstipaddr='$B[@2]' dstportstart='$C[@3]'/></rule></filter>";
    let f = t.filter_file("iter.xml", filter);
    d.ok(&["filter", "define", &f]);
    let list = |base: &str| -> Vec<String> { (0..1000).map(|i| format!("{base}{}", i % 250)).collect() };
    let mut params = String::new();
    for (name, values) in
        [("A", list("198.51.100.")), ("B", list("203.0.113.")), ("C", (1..=1000).map(|p| p.to_string()).collect())]
    {
        for v in values {
            params.push_str(&format!("<parameter name='{name}' value='{v}'/>"));
        }
    }
    let doc = format!("<filterbinding><owner><name>g</name><uuid>00000000-0000-4000-8000-000000000002</uuid></owner><portdev name='v2'/><mac address='52:54:00:00:00:02'/><filterref filter='iter'>{params}</filterref></filterbinding>");
    let bf = t.filter_file("big.xml", &doc);
    let started = Instant::now();
    let sock = dir.join("sock");
    let req = std::thread::spawn(move || {
        std::process::Command::new(GW).arg("--socket").arg(sock).args(["binding", "create", &bf]).output().expect("run")
    });
    // A flush while the request runs is healed at once.
    std::thread::sleep(Duration::from_millis(50));
    let _ = t.exec(&host, &["nft", "flush", "ruleset"]);
    wait_for(|| t.ruleset().contains("\"v1\" : goto"), "healing during a big request");
    let o = req.join().expect("request thread");
    assert!(!o.status.success(), "10^9 rules were accepted");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("at most 16384"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "refusing took {:?}", started.elapsed());
    // A long request (a batch of 4,000 bindings: parsing, compiling and
    // creating 4,000 files) does not delay healing: a flush made while it
    // runs is healed before it answers.
    let files: Vec<String> = (0..4000)
        .map(|i| {
            t.filter_file(&format!("long{i}.xml"), &binding_doc(&format!("l{i}"), "52:54:00:00:03:01", "192.0.2.3"))
        })
        .collect();
    let sock = dir.join("sock");
    let req = std::thread::spawn(move || {
        let started = Instant::now();
        let mut c = std::process::Command::new(GW);
        c.arg("--socket").arg(sock).args(["binding", "create"]).args(&files);
        let o = c.output().expect("run");
        (o, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(150));
    let flushed = Instant::now();
    let _ = t.exec(&host, &["nft", "flush", "ruleset"]);
    wait_for(|| t.ruleset().contains("\"v1\" : goto"), "healing during a long request");
    let healed = flushed.elapsed();
    let (o, took) = req.join().expect("request thread");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        healed + Duration::from_millis(150) < took,
        "healing took {healed:?}, the request {took:?}: healing waited for it (or the request was too short to tell)"
    );
    // An entity expanded 10,000 times: refused, quickly.
    let ent = format!(
        "<!DOCTYPE filter [<!ENTITY e '{}'>]><filter name='ent'>{}</filter>",
        "a".repeat(100_000),
        "&e;".repeat(10_000)
    );
    let f = t.filter_file("ent.xml", &ent);
    let started = Instant::now();
    assert!(!d.gw(&["filter", "define", &f]).status.success());
    assert!(started.elapsed() < Duration::from_secs(5), "refusing took {:?}", started.elapsed());
    assert!(d.alive());
}

/// Binds guest 1 to a filter that lets in only replies to its own traffic.
fn bind_replies_only(t: &TestHost, d: &Daemon) {
    let filter = "<filter name='replies-only'>
  <rule action='accept' direction='out'><all state='NEW,ESTABLISHED,RELATED'/></rule>
  <rule action='accept' direction='in'><all state='ESTABLISHED,RELATED'/></rule>
  <rule action='accept' direction='inout'><arp/></rule>
  <rule action='drop' direction='inout'><all/></rule>
</filter>";
    let f = t.filter_file("ro.xml", filter);
    d.ok(&["filter", "define", &f]);
    let b = t.binding(1, "replies-only", &[]);
    d.ok(&["binding", "create", &b.display().to_string()]);
}

/// Finding 9: a foreign bridge chain that set a conntrack state bit let
/// unsolicited traffic into a guest that accepts only replies.
#[test]
fn state_bits_set_by_another_writer_let_nothing_in() {
    let mut t = TestHost::new(1);
    let host = t.host.clone();
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    bind_replies_only(&t, &d);
    let g = t.guest(1).clone();
    let peer = t.peer.clone();
    assert!(t.ping(&g.ns, &peer.ip), "the guest's own ping gets no reply:\n{}", t.ruleset());
    assert!(!t.ping(&peer.ns, &g.ip), "an unsolicited ping got in");
    // Another tool sets the ESTABLISHED bit between guestwall's chains.
    let evil = "add table bridge evil; add chain bridge evil c { type filter hook prerouting priority 100; }; add rule bridge evil c meta mark set meta mark | 0x02000000";
    let o = t.exec(&host, &["nft", evil]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for _ in 0..3 {
        assert!(!t.ping(&peer.ns, &g.ip), "an unsolicited ping got in with a forged state bit");
    }
    // The report is refreshed every few seconds, off the request path.
    let started = Instant::now();
    let mut status = d.ok(&["status"]);
    while !(status.contains("packet(s) dropped because another writer") && status.contains("bridge evil chain c")) {
        assert!(started.elapsed() < Duration::from_secs(15), "the tampering is not reported:\n{status}");
        std::thread::sleep(Duration::from_millis(200));
        status = d.ok(&["status"]);
    }
    assert!(d.log().contains("another writer"), "the tampering is not logged:\n{}", d.log());
}

/// Finding 9: the mark bits are the admin's choice.
#[test]
fn the_conntrack_mark_bits_can_be_moved() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start_with(&mut t, &dir, &[], &["--ct-mark-mask", "0x0000f800"]);
    bind_replies_only(&t, &d);
    let g = t.guest(1).clone();
    let peer = t.peer.clone();
    let rules = t.ruleset();
    if rules.contains("meta mark") {
        assert!(rules.contains("0x0000f800") && !rules.contains("0x1f000000"), "{rules}");
    }
    assert!(t.ping(&g.ns, &peer.ip), "the guest's own ping gets no reply:\n{rules}");
    assert!(!t.ping(&peer.ns, &g.ip), "an unsolicited ping got in");
    let bad = std::process::Command::new(daemon_bin()).args(["--ct-mark-mask", "0xff"]).output().expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("five bits"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// Finding 10: bad files in the state and config directories stopped
/// start-up (or hung it, or were merged silently), and truncated bindings
/// left their ports unfiltered.
#[test]
fn bad_state_files_are_set_aside_and_every_good_binding_stays_enforced() {
    let mut t = TestHost::new(2);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    for i in 1..=2 {
        let b = t.binding(i, "clean-traffic", &[("IP", &format!("192.0.2.{i}"))]);
        d.ok(&["binding", "create", &b.display().to_string()]);
    }
    let hid = t.filter_file("hid.xml", &binding_doc(".hid", "52:54:00:00:00:0a", "192.0.2.10"));
    d.ok(&["binding", "create", &hid]);
    let own = t.filter_file("own.xml", "<filter name='own'><filterref filter='clean-traffic'/></filter>");
    d.ok(&["filter", "define", &own]);
    t.kill9(d.pid);
    let bindings = dir.join("var/bindings");
    let etc = dir.join("etc");
    // v2's binding truncated: its port must be blocked, not left open.
    let v2 = std::fs::read_to_string(bindings.join("v2.xml")).expect("v2.xml");
    std::fs::write(bindings.join("v2.xml"), &v2[..v2.len() / 2]).expect("truncate");
    std::fs::write(bindings.join("v7.xml"), b"<filterbinding>\xff</filterbinding>").expect("bad utf-8");
    std::fs::create_dir_all(bindings.join("x.xml")).expect("dir");
    let fifo = bindings.join("f.xml");
    let _ = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(fifo.exists(), "mkfifo failed");
    // A file named for one port holding another's binding.
    std::fs::write(bindings.join("v3.xml"), binding_doc("v1", "52:54:00:00:00:09", "192.0.2.99")).expect("mismatch");
    std::fs::write(etc.join("broken.xml"), "<filter name='broken'><rule action='drop'").expect("truncated filter");
    std::fs::write(etc.join("other.xml"), "<filter name='own'><filterref filter='allow-arp'/></filter>").expect("dup");
    let d = Daemon::start(&mut t, &dir);
    let log = d.log();
    for name in ["v2.xml", "v7.xml", "x.xml", "f.xml", "v3.xml", "broken.xml", "other.xml"] {
        assert!(log.contains(name), "{name} is not named in the log:\n{log}");
    }
    let list = d.ok(&["binding", "list"]);
    assert!(list.contains(".hid"), "the binding for .hid vanished:\n{list}");
    // v1 enforced with its own values (not v3.xml's).
    let g1 = t.guest(1).clone();
    assert!(!t.frame_arrives(&g1.ns, &spoofed(&g1.mac, "192.0.2.66", "gwspoof10a"), &t.peer.ns, &tagged("gwspoof10a")));
    assert!(t.frame_arrives(&g1.ns, &spoofed(&g1.mac, "192.0.2.1", "gwlegit10a"), &t.peer.ns, &tagged("gwlegit10a")));
    // v2 (truncated binding): nothing passes, spoofed or not.
    let g2 = t.guest(2).clone();
    assert!(!t.frame_arrives(&g2.ns, &spoofed(&g2.mac, "192.0.2.66", "gwspoof10b"), &t.peer.ns, &tagged("gwspoof10b")));
    assert!(!t.frame_arrives(&g2.ns, &spoofed(&g2.mac, "192.0.2.2", "gwspoof10c"), &t.peer.ns, &tagged("gwspoof10c")));
    assert!(Path::new(&dir).join("var/quarantine").exists() || log.contains("quarantine"), "{log}");
}

/// Finding 11: a malformed IP value was dropped with a warning and the
/// binding reported active (the guest then lost all IPv4).
#[test]
fn malformed_parameter_values_are_refused() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    for bad in ["192.0.2.1/32", "192.0.2.1 } ; flush ruleset ; {"] {
        let b = t.binding(1, "clean-traffic", &[("IP", bad)]);
        d.fails(&["binding", "create", &b.display().to_string()], "IP");
    }
    assert!(!d.ok(&["binding", "list"]).contains("v1"));
}

/// Finding 11: a request with invalid UTF-8 got no reply at all.
#[test]
fn every_request_gets_an_answer() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let _d = Daemon::start(&mut t, &dir);
    let mut c = UnixStream::connect(dir.join("sock")).expect("connect");
    c.write_all(b"{\"version\":1,\"request\":{\"op\":\"filter_dumpxml\",\"name\":\"\xff\"}}\n").expect("write");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("read");
    assert!(answer.contains("UTF-8"), "{answer:?}");
}

/// Finding 11: "ready: the rules were in the kernel" was logged after nft
/// had refused them.
#[test]
fn start_up_says_when_the_rules_are_not_in_the_kernel() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let b = t.binding(1, "clean-traffic", &[("IP", "192.0.2.1")]);
    d.ok(&["binding", "create", &b.display().to_string()]);
    t.kill9(d.pid);
    // An nft that checks but refuses every load.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let real = String::from_utf8_lossy(
        &std::process::Command::new("sh").args(["-c", "command -v nft"]).output().expect("sh").stdout,
    )
    .trim()
    .to_string();
    let fake = bin.join("nft");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$*\" in *--check*) exec {real} \"$@\";; esac\necho 'refused by the test' >&2\nexit 1\n"
        ),
    )
    .expect("fake nft");
    let _ = std::process::Command::new("chmod").arg("+x").arg(&fake).status();
    let _ = t.exec(&t.host.clone(), &["nft", "flush", "ruleset"]);
    let path = format!("PATH={}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let d = Daemon::start_with(&mut t, &dir, &["env", &path], &[]);
    let log = d.log();
    assert!(!log.contains("ready: the rules were in the kernel"), "{log}");
    assert!(log.contains("NOT in the kernel"), "{log}");
}

/// Finding 10: refused creates left their compiled bindings in the cache
/// (4.5 MB per 1,000).
#[test]
fn refused_creates_leave_nothing_cached() {
    let mut t = TestHost::new(1);
    let dir = t.dir.join("gw");
    let d = Daemon::start(&mut t, &dir);
    let needs = t.filter_file(
        "needs.xml",
        "<filter name='needs'><rule action='accept' direction='out'><ip srcipaddr='$NEEDED'/></rule></filter>",
    );
    d.ok(&["filter", "define", &needs]);
    let cached = |d: &Daemon| -> String {
        let s = d.ok(&["status"]);
        s.lines().find(|l| l.contains("cached")).unwrap_or_default().to_string()
    };
    let before = cached(&d);
    assert!(before.contains(" 0 compiled"), "{before}");
    for i in 0..20 {
        let good =
            t.filter_file(&format!("g{i}.xml"), &binding_doc(&format!("n{i}"), "52:54:00:00:02:01", "192.0.2.1"));
        let bad = t.filter_file(
            &format!("b{i}.xml"),
            &format!("<filterbinding><owner><name>b</name><uuid>00000000-0000-4000-8000-000000000003</uuid></owner><portdev name='m{i}'/><mac address='52:54:00:00:02:02'/><filterref filter='needs'/></filterbinding>"),
        );
        let o = d.gw(&["binding", "create", &good, &bad]);
        assert!(!o.status.success(), "a binding without NEEDED was accepted");
    }
    assert_eq!(cached(&d), before, "refused creates stayed in the compile cache");
    assert!(!d.ok(&["binding", "list"]).contains("n1"));
}
