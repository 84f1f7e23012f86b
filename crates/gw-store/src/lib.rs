//! guestwall's on-disk state.
//!
//! Filters live in the config directory as `NAME.xml`, bindings in the state
//! directory as `bindings/PORT.xml`. Every write goes to a temporary file in
//! the same directory, is fsynced, renamed over the old file and the
//! directory fsynced, so a crash leaves the old or the new file, never half
//! of one. Large batches are the exception that keeps this cheap: one
//! journal file holds the whole batch durably while its files are written
//! without syncing, until [`settle`] makes them durable (see
//! [`write_journaled`]). A lock file in the state directory keeps a second
//! daemon off the same state.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A storage failure, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("{} is locked: another guestwalld uses this state directory", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}

fn invalid(op: &'static str, path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Io { op, path: path.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) }
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The temporary file `path` is written to before it is renamed into place.
fn tmp_for(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent(path).join(format!(".{name}.tmp{}", std::process::id()))
}

/// One `syncfs` of the file system `f` is on.
fn syncfs(f: &File, path: &Path) -> Result<(), StoreError> {
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(f)).map_err(|e| StoreError::Io {
        op: "syncfs",
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Writes `data` to `path` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let dir = parent(path);
    let tmp = tmp_for(path);
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(data).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("rename into", path))?;
    sync_dir(dir)
}

/// Writes several files atomically each and durably. The temporary files
/// are made durable together by one `syncfs` of their file system before
/// any is renamed into place, and each directory is synced once at the end:
/// a batch of thousands of bindings would otherwise spend seconds in
/// per-file fsync (10,000 fsyncs took 9.5 s on the CI kind).
pub fn write_many(files: &[(PathBuf, Vec<u8>)]) -> Result<(), StoreError> {
    let mut renames = Vec::with_capacity(files.len());
    let mut last: Option<File> = None;
    for (path, data) in files {
        let tmp = tmp_for(path);
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(data).map_err(io("write", &tmp))?;
        renames.push((tmp, path));
        last = Some(f);
    }
    if let (Some(f), Some((tmp, _))) = (last, renames.last()) {
        syncfs(&f, tmp)?;
    }
    let mut dirs = std::collections::BTreeSet::new();
    for (tmp, path) in renames {
        fs::rename(&tmp, path).map_err(io("rename into", path))?;
        dirs.insert(parent(path).to_path_buf());
    }
    for d in dirs {
        sync_dir(&d)?;
    }
    Ok(())
}

/// Journals of batches whose files may not be durable yet live beside them
/// as `.batch-*.journal` (hidden, so [`list`] does not return them).
const JOURNAL_PREFIX: &str = ".batch-";
const JOURNAL_SUFFIX: &str = ".journal";

/// Writes many files of one directory, durable at the cost of one file:
/// the whole batch is first written as one journal (one fsync), then the
/// files themselves without syncing. [`settle`] later makes them durable and
/// removes the journal; after a crash, [`recover`] writes the journal out
/// again. Making 10,000 binding files durable with `syncfs` took 0.5-4.4 s
/// on the CI kind; the journal takes one file's fsync.
///
/// Every file must be in `dir`. The caller must settle the journals before
/// removing any of these files (or recovery would bring it back). Returns
/// the journal's path.
pub fn write_journaled(dir: &Path, files: &[(PathBuf, Vec<u8>)]) -> Result<PathBuf, StoreError> {
    let entries: Vec<(String, &str)> = files
        .iter()
        .map(|(path, data)| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if parent(path) != dir || name.is_empty() {
                return Err(invalid("journal", path, std::io::Error::other("not a file of the journal's directory")));
            }
            std::str::from_utf8(data).map(|d| (name, d)).map_err(|e| invalid("journal", path, e))
        })
        .collect::<Result<_, _>>()?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let journal = dir.join(format!("{JOURNAL_PREFIX}{}-{stamp}{JOURNAL_SUFFIX}", std::process::id()));
    let text = serde_json::to_vec(&entries).map_err(|e| invalid("journal", &journal, e))?;
    write_atomic(&journal, &text)?;
    for (path, data) in files {
        let tmp = tmp_for(path);
        fs::write(&tmp, data).map_err(io("write", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename into", path))?;
    }
    Ok(journal)
}

fn journals(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    entries(dir, |n| n.starts_with(JOURNAL_PREFIX) && n.ends_with(JOURNAL_SUFFIX))
}

/// Makes the files of the journals in `dir` (all of them, or only `only`)
/// durable with one `syncfs`, then removes those journals.
pub fn settle(dir: &Path, only: Option<&Path>) -> Result<(), StoreError> {
    let listed = match only {
        Some(j) => vec![j.to_path_buf()],
        None => journals(dir)?,
    };
    if listed.is_empty() {
        return Ok(());
    }
    syncfs(&File::open(dir).map_err(io("open", dir))?, dir)?;
    for j in listed {
        remove_durable(&j)?;
    }
    Ok(())
}

/// After a crash: writes out (durably) every file of the journals left in
/// `dir`, then removes the journals. Returns how many files were written.
pub fn recover(dir: &Path) -> Result<usize, StoreError> {
    let mut n = 0;
    for j in journals(dir)? {
        let text = fs::read(&j).map_err(io("read", &j))?;
        let entries: Vec<(String, String)> =
            serde_json::from_slice(&text).map_err(|e| invalid("parse journal", &j, e))?;
        let files: Vec<(PathBuf, Vec<u8>)> = entries
            .into_iter()
            // names are single file names of this directory, nothing else
            .filter(|(name, _)| !name.is_empty() && !name.contains('/') && !name.starts_with('.'))
            .map(|(name, data)| (dir.join(name), data.into_bytes()))
            .collect();
        write_many(&files)?;
        n += files.len();
        remove_durable(&j)?;
    }
    Ok(n)
}

/// Removes `path` durably (absent is fine).
pub fn remove_durable(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::Io { op: "remove", path: path.to_path_buf(), source: e }),
    }
    sync_dir(parent(path))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync", dir))
}

/// The files of a directory with this extension, sorted (absent dir: none;
/// hidden files, such as temporary files and journals, are not listed).
pub fn list(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, StoreError> {
    let suffix = format!(".{ext}");
    entries(dir, |n| n.ends_with(&suffix) && !n.starts_with('.'))
}

/// The paths in `dir` whose file names `keep` accepts, sorted.
fn entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io { op: "list", path: dir.to_path_buf(), source: e }),
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| keep(&n.to_string_lossy())))
        .collect();
    out.sort();
    Ok(out)
}

/// An exclusive lock on a state directory, held while this value lives.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock, creating the directory if needed.
    pub fn take(state_dir: &Path) -> Result<StateLock, StoreError> {
        fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
        let path = state_dir.join("lock");
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io("open", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Io { op: "lock", path, source: e }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
