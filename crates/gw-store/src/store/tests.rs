//! The typed store: names checked before they are paths, batches kept or
//! undone, deletions that recovery never brings back, start-up's report.

use super::*;
use crate::tests::{is_enospc, ls, read, TestDir, Tmpfs};
use std::os::unix::fs::symlink;

/// A store in a fresh directory: `DIR/config` and `DIR/state`.
fn store(root: &Path) -> Store {
    Store::open(&root.join("config"), &root.join("state")).expect("open")
}

fn xml(port: &str) -> Vec<u8> {
    format!("<filterbinding><portdev name='{port}'/>{}</filterbinding>", "x".repeat(150)).into_bytes()
}

/// `n` bindings, `vnet0` ... `vnet{n-1}`.
fn ports(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n).map(|i| format!("vnet{i}")).map(|p| (p.clone(), xml(&p))).collect()
}

fn bindings_dir(root: &Path) -> PathBuf {
    root.join("state").join(BINDINGS_DIR)
}

/// The ports whose files `load` read, with their contents.
fn loaded_ports(l: &Loaded) -> Vec<(String, String)> {
    l.bindings
        .iter()
        .map(|(p, e)| match e {
            Entry::Ok { text, .. } => (p.clone(), text.clone()),
            Entry::Bad { reason, .. } => panic!("{p}: {reason}"),
        })
        .collect()
}

#[test]
fn open_creates_the_directories_and_holds_the_lock() {
    let d = TestDir::new("st-open");
    let s = store(&d.0);
    assert!(d.0.join("config").is_dir() && bindings_dir(&d.0).is_dir());
    assert_eq!(s.config_dir(), d.0.join("config"));
    let again = Store::open(&d.0.join("config"), &d.0.join("state"));
    assert!(matches!(again, Err(StoreError::Locked { .. })), "a second store on one state directory");
    assert!(matches!(StateLock::take(&d.0.join("state")), Err(StoreError::Locked { .. })));
    drop(s);
    store(&d.0);
}

#[test]
fn filters_are_put_kept_undone_and_removed() {
    let d = TestDir::new("st-filter");
    let s = store(&d.0);
    let config = d.0.join("config");
    // a new filter: NAME.xml; undone, it is gone
    let w = s.put_filter("f", b"<filter name='f'/>", None).expect("put");
    assert_eq!(w.path(), config.join("f.xml"));
    assert_eq!(read(&config.join("f.xml")), "<filter name='f'/>");
    w.undo().expect("undo");
    assert_eq!(ls(&config), Vec::<String>::new());
    // kept, then replaced and undone: the very same file is back
    s.put_filter("f", b"one", None).expect("put").keep();
    let before = fs::metadata(config.join("f.xml")).expect("stat");
    let w = s.put_filter("f", b"two", None).expect("put");
    assert_eq!(read(&config.join("f.xml")), "two");
    w.undo().expect("undo");
    assert_eq!(read(&config.join("f.xml")), "one");
    let after = fs::metadata(config.join("f.xml")).expect("stat");
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&before), std::os::unix::fs::MetadataExt::ino(&after));
    // dropping a write keeps it, and no backup is left
    drop(s.put_filter("f", b"three", None).expect("put"));
    assert_eq!(read(&config.join("f.xml")), "three");
    assert_eq!(ls(&config), ["f.xml"]);
    // a filter read from a file of another name is written there
    let other = config.join("other-name.xml");
    fs::write(&other, "old g").expect("write");
    let w = s.put_filter("g", b"new g", Some(&other)).expect("put");
    assert_eq!(w.path(), other);
    w.keep();
    assert_eq!(read(&other), "new g");
    assert!(!config.join("g.xml").exists());
    s.remove_filter("g", Some(&other)).expect("remove");
    s.remove_filter("f", None).expect("remove");
    s.remove_filter("f", None).expect("remove twice");
    assert_eq!(ls(&config), Vec::<String>::new());
    // .xml files of the config directory only
    for origin in [d.0.join("elsewhere.xml"), config.join("f.txt"), config.join("sub").join("f.xml")] {
        assert!(matches!(s.put_filter("f", b"x", Some(&origin)), Err(StoreError::BadName { .. })), "{origin:?}");
        assert!(matches!(s.remove_filter("f", Some(&origin)), Err(StoreError::BadName { .. })), "{origin:?}");
    }
    assert!(matches!(s.put_filter("f", &vec![b'x'; MAX_FILE_LEN as usize + 1], None), Err(StoreError::TooBig { .. })));
    assert_eq!(ls(&config), Vec::<String>::new());
}

#[test]
fn bindings_are_put_and_removed() {
    let d = TestDir::new("st-bind");
    let s = store(&d.0);
    let dir = bindings_dir(&d.0);
    // one binding, a small batch, a hidden port and a 15-byte one: no journal
    let one = s.put_bindings(&[("vnet0", xml("vnet0"))], Lifetime::Persistent).expect("put");
    assert_eq!((one.len(), one.journal()), (1, None));
    one.settle_now().expect("settle");
    let small: Vec<(String, Vec<u8>)> =
        [".hid", "a-name-15-bytes", "vnet1"].iter().map(|p| (p.to_string(), xml(p))).collect();
    let b = s.put_bindings(&small, Lifetime::Persistent).expect("put");
    assert_eq!((b.len(), b.journal()), (3, None));
    assert!(b.settle(|e| panic!("{e}")).is_none(), "nothing to settle");
    assert!(s.put_bindings::<&str, &[u8]>(&[], Lifetime::Persistent).expect("empty").is_empty());
    assert_eq!(ls(&dir), [".hid.xml", "a-name-15-bytes.xml", "vnet0.xml", "vnet1.xml"]);
    assert_eq!(fs::read(dir.join(".hid.xml")).expect("read"), xml(".hid"));
    s.remove_binding(".hid").expect("remove");
    s.remove_binding("vnet0").expect("remove");
    s.remove_binding("vnet0").expect("remove twice");
    s.put_binding("vnet2", &xml("vnet2"), Lifetime::Persistent).expect("put one");
    assert_eq!(ls(&dir), ["a-name-15-bytes.xml", "vnet1.xml", "vnet2.xml"]);
    drop(s);
    let l = store(&d.0).load().expect("load");
    let names: Vec<String> = loaded_ports(&l).into_iter().map(|(p, _)| p).collect();
    assert_eq!(names, ["a-name-15-bytes", "vnet1", "vnet2"]);
}

#[test]
fn a_batch_of_64_goes_through_a_journal_and_settles() {
    let d = TestDir::new("st-journal");
    let s = store(&d.0);
    let dir = bindings_dir(&d.0);
    let b = s.put_bindings(&ports(63), Lifetime::Persistent).expect("put");
    assert_eq!(b.journal(), None, "63 bindings are one syncfs, not a journal");
    b.settle_now().expect("settle");
    for p in 0..63 {
        s.remove_binding(&format!("vnet{p}")).expect("remove");
    }
    let b = s.put_bindings(&ports(64), Lifetime::Persistent).expect("put");
    let j = b.journal().expect("64 bindings go through a journal").to_path_buf();
    assert_eq!(parent(&j), dir);
    assert!(j.exists());
    assert_eq!(list(&dir, "xml").expect("list").len(), 64);
    b.settle(|e| panic!("settling failed: {e}")).expect("a settling thread").join().expect("settled");
    assert!(!j.exists(), "a settled journal stays");
    assert_eq!(fs::read(dir.join("vnet63.xml")).expect("read"), xml("vnet63"));
    // nothing for start-up to recover
    drop(s);
    let l = store(&d.0).load().expect("load");
    assert_eq!(l.recovered, 0);
    assert_eq!(l.bindings.len(), 64);
}

#[test]
fn undo_leaves_nothing_for_recovery() {
    let d = TestDir::new("st-undo");
    let s = store(&d.0);
    let dir = bindings_dir(&d.0);
    for n in [1, 5, 64, 200] {
        let b = s.put_bindings(&ports(n), Lifetime::Persistent).expect("put");
        assert_eq!(b.journal().is_some(), n >= JOURNAL_FROM);
        assert_eq!(ls(&dir).len(), n + usize::from(n >= JOURNAL_FROM), "{n}: the files and journal");
        b.undo().expect("undo");
        assert_eq!(ls(&dir), Vec::<String>::new(), "{n}: files or journal left");
    }
    drop(s);
    let l = store(&d.0).load().expect("load");
    assert_eq!((l.recovered, l.bindings.len(), l.bad_journals.len()), (0, 0, 0));
}

#[test]
fn remove_binding_settles_journals_first() {
    let d = TestDir::new("st-rm");
    let dir = bindings_dir(&d.0);
    let s = store(&d.0);
    // Without settling, a deleted binding would come back from its journal:
    let j = write_journaled(&dir, &[(dir.join("vnet3.xml"), xml("vnet3"))]).expect("write");
    remove_durable(&dir.join("vnet3.xml")).expect("remove");
    assert_eq!(recover(&dir).expect("recover"), 1);
    assert!(dir.join("vnet3.xml").exists() && !j.exists());
    remove_durable(&dir.join("vnet3.xml")).expect("remove");

    // a batch neither settled nor undone: its journal stays
    let b = s.put_bindings(&ports(64), Lifetime::Persistent).expect("put");
    let j = b.journal().expect("journaled").to_path_buf();
    drop(b);
    s.remove_binding("vnet3").expect("remove");
    assert!(!j.exists(), "the journal naming vnet3 outlived its file");
    drop(s);
    let l = store(&d.0).load().expect("load");
    assert_eq!(l.recovered, 0);
    let names: Vec<String> = loaded_ports(&l).into_iter().map(|(p, _)| p).collect();
    assert_eq!(names.len(), 63);
    assert!(!names.contains(&"vnet3".to_string()), "a deleted binding came back");
}

#[test]
fn bad_port_and_filter_names_are_refused_before_they_are_paths() {
    let d = TestDir::new("st-names");
    let s = store(&d.0);
    let state = d.0.join("state");
    // what "../x" and "../lock" would reach
    fs::write(state.join("x.xml"), "precious").expect("write");
    let bad = ["../x", "../lock", "..", ".", "", "a/b", "/x", "x/..", "a:b", "a b", "a\tb", "a\0b", "sixteen-bytes-xx"];
    for port in bad {
        let e = s.put_bindings(&[(port, xml(port))], Lifetime::Persistent).expect_err(port);
        assert!(matches!(&e, StoreError::BadName { kind: "port", .. }), "{port:?}: {e}");
        assert!(matches!(s.put_binding(port, b"x", Lifetime::Persistent), Err(StoreError::BadName { .. })), "{port:?}");
        assert!(matches!(s.remove_binding(port), Err(StoreError::BadName { .. })), "{port:?}");
    }
    // one bad name, and none of the batch is written (also of a journaled one)
    for n in [3, 70] {
        let mut batch = ports(n);
        batch.push(("../x".into(), xml("x")));
        assert!(matches!(s.put_bindings(&batch, Lifetime::Persistent), Err(StoreError::BadName { .. })));
    }
    let twice = [("vnet0", xml("vnet0")), ("vnet0", xml("vnet0"))];
    let e = s.put_bindings(&twice, Lifetime::Persistent).expect_err("twice");
    assert!(e.to_string().contains("twice"), "{e}");
    assert_eq!(ls(&bindings_dir(&d.0)), Vec::<String>::new());
    assert_eq!(read(&state.join("x.xml")), "precious");
    assert!(state.join("lock").exists());
    for name in ["", "a/b", "../x", "a\0b", &"f".repeat(252)] {
        assert!(matches!(s.put_filter(name, b"x", None), Err(StoreError::BadName { kind: "filter", .. })), "{name:?}");
        assert!(matches!(s.remove_filter(name, None), Err(StoreError::BadName { .. })), "{name:?}");
    }
    // "." and ".." are file names here: ..xml and ...xml
    s.put_filter("..", b"x", None).expect("put").undo().expect("undo");
    s.put_filter(&"f".repeat(251), b"x", None).expect("at the limit").undo().expect("undo");
    assert_eq!(ls(&d.0.join("config")), Vec::<String>::new());
    assert_eq!(ls(&d.0), ["config", "state"]);
}

#[test]
fn load_reports_bad_files_and_what_it_cleaned_and_recovered() {
    let d = TestDir::new("st-load");
    let config = d.0.join("config");
    let dir = bindings_dir(&d.0);
    drop(store(&d.0));
    // bindings: good, not UTF-8, a directory, a FIFO, a symlink, a hidden one
    fs::write(dir.join("vnet0.xml"), xml("vnet0")).expect("write");
    fs::write(dir.join("vnet1.xml"), b"<a\xff/>").expect("write");
    fs::create_dir(dir.join("vnet2.xml")).expect("mkdir");
    nix::unistd::mkfifo(&dir.join("vnet3.xml"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    symlink(dir.join("vnet0.xml"), dir.join("vnet4.xml")).expect("symlink");
    fs::write(dir.join(".hid.xml"), xml(".hid")).expect("write");
    // a journal whose file was lost, and a damaged one
    let j = write_journaled(&dir, &[(dir.join("vnet5.xml"), xml("vnet5"))]).expect("write");
    fs::remove_file(dir.join("vnet5.xml")).expect("lose");
    let damaged = write_journaled(&dir, &[(dir.join("vnet6.xml"), xml("vnet6"))]).expect("write");
    fs::remove_file(dir.join("vnet6.xml")).expect("lose");
    let text = fs::read(&damaged).expect("read");
    fs::write(&damaged, &text[..text.len() - 5]).expect("truncate");
    // stale temporary files in both directories
    let stale = [temp_name(&dir.join("vnet7.xml")), temp_name(&config.join("f.xml"))];
    for t in &stale {
        fs::write(t, "half").expect("write");
    }
    // filters: good, not UTF-8, too big
    fs::write(config.join("f.xml"), "<filter name='f'/>").expect("write");
    fs::write(config.join("g.xml"), b"\xfe").expect("write");
    fs::write(config.join("h.xml"), vec![b'x'; MAX_FILE_LEN as usize + 1]).expect("write");

    let l = store(&d.0).load().expect("load");
    assert_eq!(l.removed_temps, stale);
    assert!(l.temp_errors.is_empty());
    assert_eq!(l.recovered, 1);
    assert!(!j.exists());
    assert_eq!(l.bad_journals.len(), 1);
    assert_eq!(l.bad_journals[0].journal, damaged);
    assert!(l.bad_journals[0].reason.contains("truncated"), "{}", l.bad_journals[0].reason);
    assert!(l.bad_journals[0].moved_to.exists());
    let got = |entries: Vec<(String, &Entry)>| -> Vec<(String, Result<String, String>)> {
        entries
            .into_iter()
            .map(|(n, e)| match e {
                Entry::Ok { text, .. } => (n, Ok(text.clone())),
                Entry::Bad { reason, .. } => (n, Err(reason.clone())),
            })
            .collect()
    };
    let bindings = got(l.bindings.iter().map(|(p, e)| (p.clone(), e)).collect());
    let names: Vec<&str> = bindings.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, [".hid", "vnet0", "vnet1", "vnet2", "vnet3", "vnet4", "vnet5"]);
    let is_bad = |r: &Result<String, String>, what: &str| matches!(r, Err(why) if why.contains(what));
    assert!(bindings[0].1.is_ok() && bindings[1].1.is_ok() && bindings[6].1.is_ok());
    assert!(is_bad(&bindings[2].1, "not UTF-8"), "{:?}", bindings[2]);
    assert!(is_bad(&bindings[3].1, "directory"), "{:?}", bindings[3]);
    assert!(is_bad(&bindings[4].1, "FIFO"), "{:?}", bindings[4]);
    assert!(is_bad(&bindings[5].1, "symbolic link"), "{:?}", bindings[5]);
    let filters = got(l.filters.iter().map(|e| (e.path().file_name().unwrap().to_string_lossy().into(), e)).collect());
    assert_eq!(filters.len(), 3);
    assert_eq!(filters[0], ("f.xml".into(), Ok("<filter name='f'/>".into())));
    assert!(is_bad(&filters[1].1, "not UTF-8"), "{:?}", filters[1]);
    assert!(is_bad(&filters[2].1, "over the limit"), "{:?}", filters[2]);
    // bad binding files stay (their ports stay blocked); nothing else changed
    assert!(dir.join("vnet1.xml").exists() && dir.join("vnet3.xml").exists());
}

#[test]
fn quarantine_moves_only_files_of_the_store() {
    let d = TestDir::new("st-quar");
    let s = store(&d.0);
    let dir = bindings_dir(&d.0);
    fs::write(dir.join("vnet0.xml"), "bad").expect("write");
    let to = s.quarantine(&dir.join("vnet0.xml"), "test").expect("quarantine");
    assert_eq!(parent(&to), dir.join(QUARANTINE_DIR));
    fs::write(d.0.join("config").join("f.xml"), "dup").expect("write");
    s.quarantine(&d.0.join("config").join("f.xml"), "test").expect("quarantine");
    let outside = d.0.join("state").join("lock");
    for p in [outside.clone(), d.0.join("x.xml"), dir.join(".."), dir.join(QUARANTINE_DIR).join("x")] {
        assert!(matches!(s.quarantine(&p, "test"), Err(StoreError::BadName { .. })), "{p:?}");
    }
    assert!(outside.exists());
}

/// As root: a batch the disk cannot hold fails and leaves nothing that the
/// next start-up would bring back; a filter that does not fit leaves the
/// old one.
#[test]
fn enospc_in_put_bindings_or_put_filter_leaves_nothing() {
    let t = Tmpfs::mount("128k");
    let root = t.dir.as_path();
    let s = store(root);
    s.put_filter("f", b"old", None).expect("put").keep();
    let e =
        s.put_bindings(&ports(64), Lifetime::Persistent).expect_err("64 files of a page each cannot fit in 128 KiB");
    assert!(is_enospc(&e), "not ENOSPC: {e}");
    assert!(!e.to_string().contains(JOURNAL_PREFIX), "the journal itself did not fit, adjust the sizes: {e}");
    assert_eq!(ls(&bindings_dir(root)), Vec::<String>::new());
    let e = s.put_filter("f", &vec![b'x'; 200 << 10], None).expect_err("200 KiB cannot fit in 128 KiB");
    assert!(is_enospc(&e), "not ENOSPC: {e}");
    assert_eq!(ls(&root.join("config")), ["f.xml"]);
    assert_eq!(read(&root.join("config").join("f.xml")), "old");
    drop(s);
    let s = store(root);
    let l = s.load().expect("load");
    assert_eq!((l.recovered, l.bindings.len(), l.removed_temps.len()), (0, 0, 0));
    // all of its space is free again
    s.put_bindings(&ports(16), Lifetime::Persistent).expect("a batch that fits").settle_now().expect("settle");
    assert_eq!(ls(&bindings_dir(root)).len(), 16);
}

#[test]
fn runtime_bindings_live_in_the_runtime_directory_and_one_removal_takes_either() {
    let d = TestDir::new("runtime");
    let s = store(&d.0).with_runtime(&d.0.join("run")).expect("runtime");
    s.put_bindings(&[("vnet0", xml("vnet0"))], Lifetime::Runtime).expect("put").settle_now().expect("settle");
    s.put_bindings(&[("tap1", xml("tap1"))], Lifetime::Persistent).expect("put").settle_now().expect("settle");
    assert_eq!(ls(&d.0.join("run/bindings")), ["vnet0.xml"]);
    assert_eq!(ls(&d.0.join("state/bindings")), ["tap1.xml"]);
    let loaded = s.load().expect("load");
    let names = |v: &[(String, Entry)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!((names(&loaded.bindings), names(&loaded.runtime_bindings)), (vec!["tap1".into()], vec!["vnet0".into()]));
    s.remove_binding("vnet0").expect("remove");
    s.remove_binding("tap1").expect("remove");
    assert!(ls(&d.0.join("run/bindings")).is_empty() && ls(&d.0.join("state/bindings")).is_empty());
    // A large runtime batch needs no journal (nothing of it is made
    // durable); it is still all or nothing.
    let big = s.put_bindings(&ports(100), Lifetime::Runtime).expect("put");
    assert!(big.journal().is_none());
    assert_eq!(ls(&d.0.join("run/bindings")).len(), 100);
    big.undo().expect("undo");
    assert!(ls(&d.0.join("run/bindings")).is_empty());
    let mut bad = ports(10);
    bad.push(("a/b".into(), xml("x")));
    assert!(s.put_bindings(&bad, Lifetime::Runtime).is_err());
    assert!(ls(&d.0.join("run/bindings")).is_empty(), "a refused runtime batch left files");
    // Two daemons never share a runtime directory.
    let other = Store::open(&d.0.join("c2"), &d.0.join("s2")).expect("open");
    assert!(matches!(other.with_runtime(&d.0.join("run")), Err(StoreError::Locked { .. })));
}
