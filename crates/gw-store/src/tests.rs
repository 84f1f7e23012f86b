use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;

/// A fresh directory, removed when dropped (also when the test fails).
pub(crate) struct TestDir(pub(crate) PathBuf);

impl TestDir {
    pub(crate) fn new(tag: &str) -> TestDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("gw-store-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("mkdir");
        TestDir(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A tmpfs of `size` bytes mounted on a fresh directory: unmounted and the
/// directory removed when dropped, also when the test fails. Panics (the
/// test fails, loudly) if it cannot be mounted, e.g. without root.
pub(crate) struct Tmpfs {
    pub(crate) dir: PathBuf,
    mounted: bool,
}

impl Tmpfs {
    pub(crate) fn mount(size: &str) -> Tmpfs {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gw-store-tmpfs-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let mut t = Tmpfs { dir, mounted: false };
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "gw-store-test"])
            .arg(&t.dir)
            .output();
        match out {
            Ok(o) if o.status.success() => t.mounted = true,
            Ok(o) => panic!(
                "this test must mount a small tmpfs (as root) to provoke ENOSPC for real; `mount -t tmpfs` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("this test must mount a small tmpfs (as root) to provoke ENOSPC; cannot run mount: {e}"),
        }
        t
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The names in `dir`, sorted.
pub(crate) fn ls(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).expect("ls").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

pub(crate) fn is_enospc(e: &StoreError) -> bool {
    matches!(e, StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
}

pub(crate) fn read(p: &Path) -> String {
    fs::read_to_string(p).expect("read")
}

/// 64 binding-sized files: one tmpfs page each once written.
fn batch(dir: &Path, n: usize) -> Vec<(PathBuf, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let xml = format!("<filterbinding><portdev name='vnet{i}'/>{}</filterbinding>", "x".repeat(150));
            (dir.join(format!("vnet{i}.xml")), xml.into_bytes())
        })
        .collect()
}

#[test]
fn atomic_write_replaces_and_lock_excludes() {
    let dir = std::env::temp_dir().join(format!("gw-store-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("mkdir");
    let f = dir.join("a.xml");
    write_atomic(&f, b"one").expect("write");
    write_atomic(&f, b"two").expect("write");
    assert_eq!(fs::read_to_string(&f).expect("read"), "two");
    assert_eq!(list(&dir, "xml").expect("list"), vec![f.clone()]);
    let l = StateLock::take(&dir).expect("lock");
    assert!(matches!(StateLock::take(&dir), Err(StoreError::Locked { .. })));
    drop(l);
    assert!(StateLock::take(&dir).is_ok());
    remove_durable(&f).expect("remove");
    remove_durable(&f).expect("remove twice");
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn journaled_batches_settle_and_recover() {
    let dir = std::env::temp_dir().join(format!("gw-store-j-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("mkdir");
    let files: Vec<(PathBuf, Vec<u8>)> =
        (0..5).map(|i| (dir.join(format!("p{i}.xml")), format!("<b{i}/>").into_bytes())).collect();
    let j = write_journaled(&dir, &files).expect("journal");
    assert!(j.exists());
    assert_eq!(list(&dir, "xml").expect("list").len(), 5, "journals are not listed");
    settle(&dir, Some(&j)).expect("settle");
    assert!(!j.exists(), "settled journal stays");
    assert_eq!(fs::read_to_string(dir.join("p3.xml")).expect("read"), "<b3/>");

    // a crash before settling: files lost or torn, the journal brings them back
    let j = write_journaled(&dir, &files).expect("journal");
    fs::remove_file(dir.join("p1.xml")).expect("lose one");
    fs::write(dir.join("p2.xml"), b"").expect("tear one");
    assert_eq!(recover(&dir).expect("recover"), 5);
    assert!(!j.exists());
    assert_eq!(fs::read_to_string(dir.join("p1.xml")).expect("read"), "<b1/>");
    assert_eq!(fs::read_to_string(dir.join("p2.xml")).expect("read"), "<b2/>");
    assert_eq!(recover(&dir).expect("nothing left"), 0);
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// Finding 6: the journal fits, the files do not. The batch must fail and
/// leave nothing, so that recovery does not enforce what the client was
/// told had failed.
#[test]
fn enospc_in_a_journaled_batch_leaves_nothing_to_recover() {
    let fs_ = Tmpfs::mount("128k");
    let dir = fs_.dir.join("bindings");
    fs::create_dir(&dir).expect("mkdir");
    let files = batch(&dir, 64);
    let e = write_journaled(&dir, &files).expect_err("64 files of a page each cannot fit in 128 KiB");
    assert!(is_enospc(&e), "not ENOSPC: {e}");
    // the journal (4 pages) was written, then a file failed
    assert!(!e.to_string().contains(JOURNAL_PREFIX), "the journal itself did not fit, adjust the sizes: {e}");
    assert_eq!(ls(&dir), Vec::<String>::new(), "the failed batch left files behind");
    assert_eq!(recover(&dir).expect("recover"), 0, "recovery brought back a failed batch");
    assert_eq!(ls(&dir), Vec::<String>::new());
    // all of its space is free again
    let j = write_journaled(&dir, &files[..16]).expect("a batch that fits");
    settle(&dir, Some(&j)).expect("settle");
    assert_eq!(list(&dir, "xml").expect("list").len(), 16);
}

/// Finding 6, for the journal itself: no space for it, no temporary file left.
#[test]
fn enospc_for_the_journal_leaves_no_temp_file() {
    let fs_ = Tmpfs::mount("8k");
    let dir = fs_.dir.clone();
    let e = write_journaled(&dir, &batch(&dir, 64)).expect_err("a 14 KiB journal cannot fit in 8 KiB");
    assert!(is_enospc(&e), "not ENOSPC: {e}");
    assert_eq!(ls(&dir), Vec::<String>::new());
    assert_eq!(recover(&dir).expect("recover"), 0);
}

/// Finding 6, for plain batches: files the batch would have replaced keep
/// their old contents, and nothing else is left.
#[test]
fn enospc_in_write_many_keeps_old_files_and_leaves_nothing() {
    let fs_ = Tmpfs::mount("128k");
    let dir = fs_.dir.clone();
    let old: Vec<(PathBuf, Vec<u8>)> =
        (0..4).map(|i| (dir.join(format!("vnet{i}.xml")), format!("old {i}").into_bytes())).collect();
    write_many(&old).expect("four files fit");
    let e = write_many(&batch(&dir, 64)).expect_err("64 more pages cannot fit");
    assert!(is_enospc(&e), "not ENOSPC: {e}");
    assert_eq!(ls(&dir), ["vnet0.xml", "vnet1.xml", "vnet2.xml", "vnet3.xml"]);
    for (p, data) in &old {
        assert_eq!(fs::read(p).expect("read"), *data, "{} changed", p.display());
    }
}

/// A batch failing after some of its files were renamed into place (here
/// at a directory in its way) is undone: new files removed, replaced ones
/// put back, and a journaled batch's journal removed.
#[test]
fn failed_batch_after_renames_is_undone() {
    let d = TestDir::new("undo");
    let dir = d.0.as_path();
    fs::write(dir.join("a.xml"), "old a").expect("write");
    fs::create_dir(dir.join("c.xml")).expect("mkdir");
    let files: Vec<(PathBuf, Vec<u8>)> =
        ["a.xml", "b.xml", "c.xml"].iter().map(|n| (dir.join(n), format!("new {n}").into_bytes())).collect();
    let e = write_many(&files).expect_err("c.xml is a directory");
    assert!(matches!(&e, StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::EISDIR)), "{e}");
    assert_eq!(ls(dir), ["a.xml", "c.xml"]);
    assert_eq!(read(&dir.join("a.xml")), "old a");
    write_journaled(dir, &files).expect_err("c.xml is a directory");
    assert_eq!(ls(dir), ["a.xml", "c.xml"], "journal or files left");
    assert_eq!(read(&dir.join("a.xml")), "old a");
    assert_eq!(recover(dir).expect("recover"), 0);
    assert_eq!(read(&dir.join("a.xml")), "old a");
}

/// `remove_batch` removes the files, then the journal: nothing comes back.
#[test]
fn remove_batch_leaves_nothing_to_recover() {
    let d = TestDir::new("rmbatch");
    let files = batch(&d.0, 5);
    let j = write_journaled(&d.0, &files).expect("write");
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    remove_batch(&paths, Some(&j)).expect("remove");
    assert_eq!(ls(&d.0), Vec::<String>::new());
    assert_eq!(recover(&d.0).expect("recover"), 0);
}

/// A journal is applied whole or not at all: truncated, corrupt, naming a
/// file elsewhere, or not a regular file, it is reported, moved aside with
/// a reason, and none of its files is written; good journals (also of the
/// earlier format) are still applied.
#[test]
fn damaged_journals_are_not_applied_but_moved_aside() {
    let d = TestDir::new("badj");
    let dir = d.0.as_path();
    let journaled = |names: &[&str]| {
        let files: Vec<(PathBuf, Vec<u8>)> =
            names.iter().map(|n| (dir.join(n), format!("<{n}/>").into_bytes())).collect();
        let j = write_journaled(dir, &files).expect("write");
        // a crash before settling: the files are lost
        for (p, _) in &files {
            fs::remove_file(p).expect("lose");
        }
        j
    };
    let good = journaled(&["g.xml"]);
    let truncated = journaled(&["t1.xml", "t2.xml"]);
    let text = fs::read(&truncated).expect("read");
    fs::write(&truncated, &text[..text.len() - 12]).expect("truncate");
    let corrupt = journaled(&["c1.xml", "c2.xml"]);
    let text = read(&corrupt).replace("<c2.xml/>", "<c2.xmX/>");
    fs::write(&corrupt, text).expect("corrupt");
    let escaping = dir.join(".batch-legacy-1.journal");
    fs::write(&escaping, r#"[["l1.xml","<l1/>"],["../escape.xml","<e/>"]]"#).expect("write");
    let legacy = dir.join(".batch-legacy-2.journal");
    fs::write(&legacy, r#"[["old.xml","<old/>"]]"#).expect("write");
    let fifo = dir.join(".batch-fifo.journal");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");

    let r = recover_all(dir).expect("recover");
    assert_eq!(r.written, 2, "the good journals");
    assert_eq!(read(&dir.join("g.xml")), "<g.xml/>");
    assert_eq!(read(&dir.join("old.xml")), "<old/>");
    let mut bad: Vec<&Path> = r.bad.iter().map(|b| b.journal.as_path()).collect();
    bad.sort();
    let mut expected = vec![truncated.as_path(), corrupt.as_path(), escaping.as_path(), fifo.as_path()];
    expected.sort();
    assert_eq!(bad, expected);
    assert!(!good.exists());
    for b in &r.bad {
        assert!(fs::symlink_metadata(&b.journal).is_err(), "{} not moved", b.journal.display());
        assert!(fs::symlink_metadata(&b.moved_to).is_ok(), "{} missing", b.moved_to.display());
        assert_eq!(parent(&b.moved_to), dir.join(QUARANTINE_DIR));
        let mut note = b.moved_to.clone().into_os_string();
        note.push(".reason");
        let note = read(Path::new(&note));
        assert!(note.contains(&b.reason) && note.contains(&b.journal.display().to_string()), "{note}");
    }
    let reason = |j: &Path| r.bad.iter().find(|b| b.journal == j).map(|b| b.reason.clone()).unwrap_or_default();
    assert!(reason(&truncated).contains("truncated"), "{}", reason(&truncated));
    assert!(reason(&corrupt).contains("checksum"), "{}", reason(&corrupt));
    assert!(reason(&fifo).contains("FIFO"), "{}", reason(&fifo));
    // none of a damaged journal's files, not even its good ones
    assert_eq!(ls(dir), ["g.xml", "old.xml", QUARANTINE_DIR]);
    assert!(!parent(dir).join("escape.xml").exists());

    // recover() makes it an error naming the journal, once: it was moved aside
    let bad = journaled(&["x.xml"]);
    let text = fs::read(&bad).expect("read");
    fs::write(&bad, &text[..20]).expect("truncate");
    let e = recover(dir).expect_err("a damaged journal");
    assert!(matches!(&e, StoreError::BadJournal { journal, .. } if *journal == bad), "{e}");
    assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
    assert_eq!(recover(dir).expect("moved aside"), 0);
    assert!(!dir.join("x.xml").exists());
}

/// Finding 10: temporary files are created new, never through a planted
/// symlink, neither at the old predictable name nor at the new names.
#[test]
fn temp_files_never_follow_planted_symlinks() {
    let d = TestDir::new("sym");
    let outside = TestDir::new("victim");
    let victim = outside.0.join("victim");
    fs::write(&victim, "precious").expect("write");
    let a = d.0.join("a.xml");
    let b = d.0.join("b.xml");
    let pid = std::process::id();
    for name in ["a.xml", "b.xml", ".batch-x.journal"] {
        symlink(&victim, d.0.join(format!(".{name}.tmp{pid}"))).expect("plant");
    }
    // the very next names (only a test knows the secret that makes them):
    // creating the temporary files and backups must step over them
    let n = COUNTER.load(Ordering::Relaxed);
    for k in n..n + 8 {
        for p in [&a, &b] {
            let _ = symlink(&victim, temp_name_with(p, k));
        }
    }
    write_atomic(&a, b"<a1/>").expect("write");
    write_many(&[(a.clone(), b"<a2/>".to_vec()), (b.clone(), b"<b2/>".to_vec())]).expect("write");
    write_journaled(&d.0, &[(a.clone(), b"<a3/>".to_vec()), (b.clone(), b"<b3/>".to_vec())]).expect("write");
    assert_eq!(read(&victim), "precious", "a planted symlink was written through");
    assert_eq!((read(&a), read(&b)), ("<a3/>".into(), "<b3/>".into()));
    assert_eq!(fs::metadata(&a).expect("stat").permissions().mode() & 0o777, 0o600);
    // consecutive names share nothing guessable but the pid and counter
    let (t1, t2) = (temp_name_with(&a, 1), temp_name_with(&a, 2));
    let token = |p: &Path| p.to_string_lossy().rsplit('-').next().map(str::to_owned);
    assert_ne!(token(&t1), token(&t2));
    // the planted links are the store's temp names: clean_temp removes them, not their target
    assert!(!clean_temp(&d.0).expect("clean").is_empty());
    assert_eq!(read(&victim), "precious");
}

/// Finding 10: clean_temp removes this store's stale temporary files (of
/// this version and of earlier ones), symlinks included (not followed),
/// and nothing else.
#[test]
fn clean_temp_removes_only_the_stores_temp_files() {
    let d = TestDir::new("clean");
    let dir = d.0.as_path();
    let outside = TestDir::new("clean-victim");
    let victim = outside.0.join("victim");
    fs::write(&victim, "precious").expect("write");
    let stale = temp_name(&dir.join("a.xml"));
    fs::write(&stale, "half").expect("write");
    let stale_journal = temp_name(&dir.join(".batch-1-2-3.journal"));
    fs::write(&stale_journal, "half").expect("write");
    let legacy = dir.join(".a.xml.tmp4242");
    fs::write(&legacy, "half").expect("write");
    let link = temp_name(&dir.join("b.xml"));
    symlink(&victim, &link).expect("symlink");
    let keep = [
        "a.xml",
        ".hid.xml",
        ".batch-1-2-3.journal",
        "notes.tmp",
        ".x.tmp",
        ".a.xml.tmpabc",
        ".tmp12",
        "a.xml.1-2-0123456789abcdef.gwtmp",
        ".a.xml.1-2-0123456789ABCDEF.gwtmp",
        ".a.xml.1-2-3.gwtmp",
        ".a.xml.gwtmp",
    ];
    for k in keep {
        fs::write(dir.join(k), "keep").expect("write");
    }
    let dir_named_like_temp = temp_name(&dir.join("c.xml"));
    fs::create_dir(&dir_named_like_temp).expect("mkdir");

    let mut expected = vec![stale, stale_journal, legacy, link];
    expected.sort();
    assert_eq!(clean_temp(dir).expect("clean"), expected);
    let mut left: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    left.push(dir_named_like_temp.file_name().expect("name").to_string_lossy().into_owned());
    left.sort();
    assert_eq!(ls(dir), left);
    assert_eq!(read(&victim), "precious");
    assert_eq!(clean_temp(dir).expect("again"), Vec::<PathBuf>::new());
    assert_eq!(clean_temp(&dir.join("absent")).expect("absent dir"), Vec::<PathBuf>::new());
}

/// Finding 10: the store's own names never end in `.xml` and are never
/// listed, whatever extension is asked for.
#[test]
fn store_names_never_end_in_xml_and_are_never_listed() {
    let d = TestDir::new("names");
    let a = d.0.join("a.xml");
    let long = d.0.join(format!("{}.xml", "é".repeat(120)));
    for p in [temp_name(&a), temp_name(&long), temp_name(&d.0.join(".xml")), journal_name(&d.0)] {
        let name = p.file_name().expect("name").to_str().expect("utf-8").to_owned();
        assert!(!name.ends_with(".xml"), "{name}");
        assert!(name.len() <= 255, "{name}");
        assert!(is_store_name(&name), "{name}");
        fs::write(&p, "x").expect("write");
    }
    for ext in ["xml", "gwtmp", "journal"] {
        assert_eq!(list(&d.0, ext).expect("list"), Vec::<PathBuf>::new(), "{ext}");
        assert_eq!(read_all(&d.0, ext, MAX_FILE_LEN).expect("read"), Vec::new(), "{ext}");
    }
}

/// Finding 10: a port called `.hid` (file `.hid.xml`) is listed, read and
/// recovered like any other.
#[test]
fn hidden_port_files_are_listed_and_recovered() {
    let d = TestDir::new("hidden");
    let hid = d.0.join(".hid.xml");
    write_journaled(&d.0, &[(hid.clone(), b"<hid/>".to_vec())]).expect("write");
    assert_eq!(list(&d.0, "xml").expect("list"), vec![hid.clone()]);
    fs::remove_file(&hid).expect("lose");
    assert_eq!(recover(&d.0).expect("recover"), 1);
    assert_eq!(
        read_all(&d.0, "xml", MAX_FILE_LEN).expect("read"),
        vec![Entry::Ok { path: hid, text: "<hid/>".into() }]
    );
}

/// Finding 10: reading the stored files at start-up reports every bad
/// file (invalid UTF-8, directory, FIFO, symlink, too big, name not UTF-8)
/// and goes on, without hanging on the FIFO.
#[test]
fn read_all_reports_bad_files_without_stopping_or_hanging() {
    let d = TestDir::new("readall");
    let dir = d.0.clone();
    fs::write(dir.join("a.xml"), "<a/>").expect("write");
    fs::write(dir.join(".hid.xml"), "<hid/>").expect("write");
    fs::write(dir.join("bad.xml"), b"<b\xffc/>").expect("write");
    fs::create_dir(dir.join("d.xml")).expect("mkdir");
    nix::unistd::mkfifo(&dir.join("f.xml"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    symlink(dir.join("a.xml"), dir.join("l.xml")).expect("symlink");
    fs::write(dir.join("big.xml"), "x".repeat(101)).expect("write");
    fs::write(dir.join("limit.xml"), "x".repeat(100)).expect("write");
    fs::write(dir.join(std::ffi::OsStr::from_bytes(b"n\xff.xml")), "<n/>").expect("write");
    fs::write(dir.join("other.txt"), "not listed").expect("write");
    fs::write(temp_name(&dir.join("t.xml")), "not listed").expect("write");

    let (tx, rx) = std::sync::mpsc::channel();
    let reader_dir = dir.clone();
    std::thread::spawn(move || {
        let _ = tx.send(read_all(&reader_dir, "xml", 100));
    });
    let entries = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("read_all hung (opening the FIFO?)")
        .expect("read_all");
    let got: Vec<(String, Result<String, String>)> = entries
        .into_iter()
        .map(|e| {
            let name = e.path().file_name().expect("name").to_string_lossy().into_owned();
            match e {
                Entry::Ok { text, .. } => (name, Ok(text)),
                Entry::Bad { reason, .. } => (name, Err(reason)),
            }
        })
        .collect();
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [".hid.xml", "a.xml", "bad.xml", "big.xml", "d.xml", "f.xml", "l.xml", "limit.xml", "n\u{fffd}.xml"]
    );
    let res = |n: &str| got.iter().find(|(m, _)| m == n).map(|(_, r)| r.clone()).expect("listed");
    assert_eq!(res(".hid.xml"), Ok("<hid/>".into()));
    assert_eq!(res("a.xml"), Ok("<a/>".into()));
    assert_eq!(res("limit.xml"), Ok("x".repeat(100)));
    let bad = |n: &str, what: &str| {
        let r = res(n).expect_err(n);
        assert!(r.contains(what), "{n}: {r}");
    };
    bad("bad.xml", "offset 2");
    bad("big.xml", "101 bytes");
    bad("d.xml", "directory");
    bad("f.xml", "FIFO");
    bad("l.xml", "symbolic link");
    bad("n\u{fffd}.xml", "not UTF-8");
    assert_eq!(read_all(&dir.join("absent"), "xml", 100).expect("absent dir"), Vec::new());
}

/// Finding 10: a bad file of any kind is moved aside, durably, with a note
/// saying why, under a name that never clobbers an earlier one; a
/// symlink's target is untouched.
#[test]
fn quarantine_moves_bad_files_aside_with_a_reason() {
    let d = TestDir::new("quar");
    let dir = d.0.as_path();
    let outside = TestDir::new("quar-victim");
    let victim = outside.0.join("victim");
    fs::write(&victim, "precious").expect("write");
    nix::unistd::mkfifo(&dir.join("f.xml"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    fs::create_dir(dir.join("d.xml")).expect("mkdir");
    symlink(&victim, dir.join("l.xml")).expect("symlink");
    let mut moved = Vec::new();
    for (n, why) in [("f.xml", "a FIFO"), ("d.xml", "a directory"), ("l.xml", "a symbolic link")] {
        moved.push(quarantine(&dir.join(n), why).expect("quarantine"));
    }
    // the same name twice (in the same second): both kept
    for content in ["first", "second"] {
        fs::write(dir.join("a.xml"), content).expect("write");
        moved.push(quarantine(&dir.join("a.xml"), &format!("not UTF-8 ({content})")).expect("quarantine"));
    }
    assert_eq!(ls(dir), [QUARANTINE_DIR]);
    let q = dir.join(QUARANTINE_DIR);
    assert_eq!(fs::metadata(&q).expect("stat").permissions().mode() & 0o777, 0o700);
    assert_eq!(moved.iter().collect::<std::collections::BTreeSet<_>>().len(), 5);
    for m in &moved {
        assert_eq!(parent(m), q);
        let mut note = m.clone().into_os_string();
        note.push(".reason");
        let note = read(Path::new(&note));
        assert!(note.starts_with(&format!("was: {}/", dir.display())), "{note}");
    }
    assert_eq!(read(&moved[3]), "first");
    assert_eq!(read(&moved[4]), "second");
    assert!(fs::symlink_metadata(&moved[2]).expect("stat").file_type().is_symlink());
    assert_eq!(read(&victim), "precious");
    let name = moved[0].file_name().expect("name").to_string_lossy().into_owned();
    assert!(name.starts_with("f.xml.20") && name.ends_with('Z'), "{name}");
    assert!(quarantine(&dir.join("absent.xml"), "gone").is_err());
}

/// A file larger than start-up would read is refused when written, and
/// nothing is left.
#[test]
fn writes_over_the_size_limit_are_refused() {
    let d = TestDir::new("big");
    let big = vec![b'x'; MAX_FILE_LEN as usize + 1];
    let p = d.0.join("big.xml");
    assert!(matches!(write_atomic(&p, &big), Err(StoreError::TooBig { .. })));
    assert!(matches!(write_many(&[(p.clone(), big.clone())]), Err(StoreError::TooBig { .. })));
    assert!(matches!(write_journaled(&d.0, &[(p.clone(), big)]), Err(StoreError::TooBig { .. })));
    assert_eq!(ls(&d.0), Vec::<String>::new());
    write_atomic(&p, &vec![b'x'; MAX_FILE_LEN as usize]).expect("at the limit");
}

#[test]
fn utc_stamps() {
    assert_eq!(utc_stamp(0), "19700101T000000Z");
    assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    assert_eq!(utc_stamp(1_700_000_000), "20231114T221320Z");
    assert_eq!(utc_stamp(4_102_444_799), "20991231T235959Z");
}
