//! guestwall's on-disk state.
//!
//! Filters live in the config directory as `NAME.xml`, bindings in the state
//! directory as `bindings/PORT.xml`. Every write goes to a temporary file in
//! the same directory, is fsynced, renamed over the old file and the
//! directory fsynced, so a crash leaves the old or the new file, never half
//! of one. A lock file in the state directory keeps a second daemon off the
//! same state.

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

/// Writes `data` to `path` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
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
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(data).map_err(io("write", &tmp))?;
        renames.push((tmp, path));
        last = Some(f);
    }
    if let (Some(f), Some((tmp, _))) = (last, renames.last()) {
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)).map_err(|e| StoreError::Io {
            op: "syncfs",
            path: tmp.clone(),
            source: e.into(),
        })?;
    }
    let mut dirs = std::collections::BTreeSet::new();
    for (tmp, path) in renames {
        fs::rename(&tmp, path).map_err(io("rename into", path))?;
        dirs.insert(path.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    for d in dirs {
        sync_dir(&d)?;
    }
    Ok(())
}

/// Removes `path` durably (absent is fine).
pub fn remove_durable(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::Io { op: "remove", path: path.to_path_buf(), source: e }),
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync", dir))
}

/// The files of a directory with this extension, sorted (absent dir: none).
pub fn list(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io { op: "list", path: dir.to_path_buf(), source: e }),
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == ext)
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
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
}
