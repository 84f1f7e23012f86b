//! Real virsh against the in-memory server. Fails (never skips) when virsh
//! is missing: install `libvirt-clients`.

mod common;

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

const FILTER: &str = "<filter name='gw-test' chain='root'>
  <uuid>5e2f4c1a-9b3d-4e6f-8a1b-2c3d4e5f6a7b</uuid>
  <rule action='accept' direction='in' priority='500'>
    <tcp dstportstart='22'/>
  </rule>
</filter>
";

const BINDING: &str = "<filterbinding>
  <owner>
    <name>guest1</name>
    <uuid>11111111-2222-3333-4444-555555555555</uuid>
  </owner>
  <portdev name='vnet0'/>
  <mac address='52:54:00:aa:bb:cc'/>
  <filterref filter='gw-test'/>
</filterbinding>
";

struct Virsh {
    uri: String,
}

impl Virsh {
    /// Runs one virsh command; returns (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("virsh").arg("-c").arg(&self.uri).args(args).output().unwrap_or_else(|e| {
            panic!("cannot run virsh ({e}); install libvirt-clients: this test needs the real virsh")
        });
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "virsh {args:?} failed: {err}");
        out
    }

    fn fails(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(!ok, "virsh {args:?} should fail, printed {out}");
        err
    }
}

#[test]
fn virsh_drives_the_nwfilter_protocol() {
    assert!(
        Command::new("virsh").arg("--version").output().is_ok_and(|o| o.status.success()),
        "virsh is not installed (apt-get install libvirt-clients); this test requires the real client"
    );
    let dir = std::env::temp_dir().join(format!("gw-libvirt-rpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sock: PathBuf = dir.join("nwfilter.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).expect("bind test socket");
    let trace = Arc::new(Mutex::new(Vec::new()));
    let t = trace.clone();
    std::thread::spawn(move || common::serve(listener, t));

    let f = dir.join("f.xml");
    let b = dir.join("b.xml");
    std::fs::write(&f, FILTER).expect("write filter");
    std::fs::write(&b, BINDING).expect("write binding");
    let (f, b) = (f.to_string_lossy().into_owned(), b.to_string_lossy().into_owned());
    let v = Virsh { uri: format!("nwfilter:///system?socket={}", sock.display()) };

    assert_eq!(v.ok(&["nwfilter-define", &f]), format!("Network filter gw-test defined from {f}\n\n"));
    let list = v.ok(&["nwfilter-list"]);
    assert!(list.contains(" 5e2f4c1a-9b3d-4e6f-8a1b-2c3d4e5f6a7b   gw-test"), "nwfilter-list printed:\n{list}");
    assert_eq!(v.ok(&["nwfilter-dumpxml", "gw-test"]), format!("{FILTER}\n"));
    assert_eq!(v.ok(&["nwfilter-dumpxml", "5e2f4c1a-9b3d-4e6f-8a1b-2c3d4e5f6a7b"]), format!("{FILTER}\n"));

    assert_eq!(v.ok(&["nwfilter-binding-create", &b]), format!("Network filter binding on vnet0 created from {b}\n\n"));
    let list = v.ok(&["nwfilter-binding-list"]);
    assert!(list.contains(" vnet0      gw-test"), "nwfilter-binding-list printed:\n{list}");
    assert_eq!(v.ok(&["nwfilter-binding-dumpxml", "vnet0"]), format!("{BINDING}\n"));
    let err = v.fails(&["nwfilter-undefine", "gw-test"]);
    assert!(err.contains("error: Requested operation is not valid: nwfilter is in use"), "{err}");
    assert_eq!(v.ok(&["nwfilter-binding-delete", "vnet0"]), "Network filter binding on vnet0 deleted\n\n");
    assert_eq!(v.ok(&["nwfilter-undefine", "gw-test"]), "Network filter gw-test undefined\n\n");

    let err = v.fails(&["nwfilter-dumpxml", "nosuch"]);
    assert_eq!(
        err,
        "error: failed to get nwfilter 'nosuch'\nerror: Network filter not found: no nwfilter with matching name 'nosuch'\n"
    );
    let err = v.fails(&["nwfilter-binding-delete", "nosuch"]);
    assert!(
        err.contains("error: Network filter binding not found: no nwfilter binding for port dev 'nosuch'"),
        "{err}"
    );
    let list = v.ok(&["nwfilter-list"]);
    assert!(!list.contains("gw-test"), "{list}");

    // Every virsh connection opened the same way and closed cleanly.
    let t = trace.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert!(t.starts_with(&[66, 60, 1, 60, 60, 360]), "connect sequence was {t:?}");
    assert!(t.ends_with(&[361, 2]), "disconnect sequence was {t:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
