//! Handing a running libvirt host over to guestwall, and back, with real
//! libvirtd 9.0 (Debian's packages) enforcing clean-traffic with its own
//! ebtables/iptables rules, while the guest floods spoofed frames: not one
//! may pass at any moment. As root; fails if libvirtd is missing.
//!
//! libvirtd runs in the test host's network namespace and in a mount
//! namespace of its own, over private copies of /etc/libvirt, /run/libvirt,
//! /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt, so that it
//! never meets another libvirtd (bench/libvirt does the same).

mod common;

use common::{tagged, wait_for, Daemon, GW};
use gw_testns::{require_root, TestHost};
use std::path::{Path, PathBuf};
use std::process::Command;

const DIRS: [&str; 5] = ["/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt"];

struct Libvirtd {
    pid: u32,
    work: PathBuf,
    /// Host mount points this test made (removed at the end).
    made: Vec<PathBuf>,
}

impl Libvirtd {
    fn private(work: &Path, dir: &str) -> PathBuf {
        work.join(format!("lv{}", dir.replace('/', "_")))
    }

    fn start(t: &mut TestHost, work: &Path) -> Libvirtd {
        let found = Command::new("libvirtd").arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(found, "libvirtd is missing: this test needs Debian's libvirt-daemon (scripts/deps installs it)");
        assert!(
            Path::new("/etc/libvirt/nwfilter/clean-traffic.xml").exists(),
            "libvirt's filters are missing: install libvirt-daemon-config-nwfilter"
        );
        let mut made = Vec::new();
        let mut script = String::from("set -e\n");
        for d in DIRS {
            let p = Libvirtd::private(work, d);
            std::fs::create_dir_all(&p).expect("private dir");
            if !Path::new(d).is_dir() {
                std::fs::create_dir_all(d).expect("mount point");
                made.push(PathBuf::from(d));
            }
            script.push_str(&format!("mount --bind '{}' '{d}'\n", p.display()));
        }
        let ok = Command::new("cp")
            .args(["-a", "/etc/libvirt/.", &Libvirtd::private(work, "/etc/libvirt").display().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "copying /etc/libvirt failed");
        let log = work.join("libvirtd.log");
        script.push_str(&format!("export LIBVIRT_LOG_OUTPUTS='3:file:{}'\nexec libvirtd\n", log.display()));
        let host = t.host.clone();
        let pid = t.spawn(
            &host,
            &["unshare", "-m", "--propagation", "private", "sh", "-c", &script],
            &work.join("libvirtd.out"),
        );
        let lv = Libvirtd { pid, work: work.to_path_buf(), made };
        wait_for(|| virsh(&lv, &["nwfilter-list"]).status.success(), "libvirtd answering");
        lv
    }

    fn uri(&self) -> String {
        format!(
            "nwfilter:///system?socket={}",
            Libvirtd::private(&self.work, "/run/libvirt").join("libvirt-sock").display()
        )
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        std::thread::sleep(std::time::Duration::from_millis(300));
        for d in &self.made {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn virsh(lv: &Libvirtd, args: &[&str]) -> std::process::Output {
    Command::new("virsh").arg("-q").arg("-c").arg(lv.uri()).args(args).output().expect("run virsh")
}

fn spoofed(mac: &str, tag: &str) -> String {
    format!("Ether(src='{mac}', dst='ff:ff:ff:ff:ff:ff')/IP(src='192.0.2.66', dst='192.0.2.9')/UDP(sport=4000, dport=4000)/Raw(b'{tag}')")
}

fn gw(d: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(GW).arg("--socket").arg(d.dir.join("sock")).args(args).output().expect("run guestwall")
}

#[test]
fn a_running_libvirt_host_is_handed_over_and_back_with_no_spoofed_frame_passing() {
    require_root();
    let mut t = TestHost::new(1);
    let work = t.dir.join("lv");
    std::fs::create_dir_all(&work).expect("work");
    let lv = Libvirtd::start(&mut t, &work);
    let g = t.guest(1).clone();
    let b = t.binding(1, "clean-traffic", &[("IP", "192.0.2.1")]);
    let o = virsh(&lv, &["nwfilter-binding-create", &b.display().to_string()]);
    assert!(o.status.success(), "libvirt's binding: {}", String::from_utf8_lossy(&o.stderr));
    // libvirt enforces it: the guest's own traffic passes, a spoofed source does not.
    assert!(t.ping(&g.ns, "192.0.2.9"), "libvirt's filter drops the guest's own traffic");
    let sniff = t.sniffer(&t.peer.ns, &tagged("gwlvcheck"));
    assert!(t.flood(&g.ns, 0.5, 500, &spoofed(&g.mac, "gwlvcheck")).sent() > 100);
    assert_eq!(sniff.count(), 0, "libvirt itself lets spoofed frames through: the test cannot judge a handover");

    let gw_dir = t.dir.join("gw");
    let chains =
        |t: &TestHost| String::from_utf8_lossy(&t.exec(&t.host, &["ebtables", "-t", "nat", "-L"]).stdout).into_owned();
    assert!(chains(&t).contains("libvirt-I-v1"), "libvirt's ebtables chain for v1 is not there: {}", chains(&t));
    let d = Daemon::start(&mut t, &gw_dir);
    let nwfilter = Libvirtd::private(&work, "/etc/libvirt").join("nwfilter").display().to_string();
    let bindings = Libvirtd::private(&work, "/run/libvirt").join("nwfilter-binding").display().to_string();
    // The report first: it changes nothing.
    let o = gw(&d, &["libvirt-import", "--nwfilter-dir", &nwfilter, "--binding-dir", &bindings, "--check"]);
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{report}{}", String::from_utf8_lossy(&o.stderr));
    assert!(report.contains("binding v1: imported") && report.contains("filter clean-traffic:"), "{report}");
    assert!(d.ok(&["binding", "list"]).lines().count() <= 1, "--check created bindings");

    // Hand over while the guest floods spoofed frames.
    let sniff = t.sniffer(&t.peer.ns, &tagged("gwhandover"));
    let flood = t.flood(&g.ns, 4.0, 1000, &spoofed(&g.mac, "gwhandover"));
    let lv_uri = lv.uri();
    let o = gw(&d, &["libvirt-import", "--nwfilter-dir", &nwfilter, "--binding-dir", &bindings, "--handover", &lv_uri]);
    assert!(
        o.status.success(),
        "handover: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let sent = flood.sent();
    assert!(sent > 1000, "only {sent} spoofed frames sent");
    assert_eq!(sniff.count(), 0, "spoofed frames passed during the handover");
    // libvirt has let go (its rules are gone), guestwall filters the port.
    let listed = String::from_utf8_lossy(&virsh(&lv, &["nwfilter-binding-list"]).stdout).into_owned();
    assert!(!listed.contains("v1"), "libvirt still has the binding: {listed}");
    assert!(!chains(&t).contains("libvirt-I-v1"), "libvirt's chains stayed: {}", chains(&t));
    let list = d.ok(&["binding", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(v["bindings"][0]["portdev"], "v1", "{list}");
    assert_eq!((v["bindings"][0]["active"].as_bool(), v["bindings"][0]["runtime"].as_bool()), (Some(true), Some(true)));
    assert!(t.ping(&g.ns, "192.0.2.9"), "guestwall drops the guest's own traffic after the handover");
    let sniff = t.sniffer(&t.peer.ns, &tagged("gwafter"));
    assert!(t.flood(&g.ns, 0.5, 500, &spoofed(&g.mac, "gwafter")).sent() > 100);
    assert_eq!(sniff.count(), 0, "guestwall lets spoofed frames through after the handover");

    // And back, under the same flood.
    let sniff = t.sniffer(&t.peer.ns, &tagged("gwback"));
    let flood = t.flood(&g.ns, 4.0, 1000, &spoofed(&g.mac, "gwback"));
    let o = gw(&d, &["libvirt-import", "--back", &lv_uri]);
    assert!(o.status.success(), "back: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(flood.sent() > 1000);
    assert_eq!(sniff.count(), 0, "spoofed frames passed on the way back");
    let listed = String::from_utf8_lossy(&virsh(&lv, &["nwfilter-binding-list"]).stdout).into_owned();
    assert!(listed.contains("v1"), "libvirt did not get the binding back: {listed}");
    assert!(!d.ok(&["binding", "list"]).contains("v1"), "guestwall kept the binding");
    assert!(t.ping(&g.ns, "192.0.2.9"), "libvirt drops the guest's own traffic after the way back");
    assert!(chains(&t).contains("libvirt-I-v1"), "libvirt's rules are not back: {}", chains(&t));
}
