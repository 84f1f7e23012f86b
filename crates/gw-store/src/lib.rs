//! guestwall's on-disk state.
//!
//! The daemon uses [`Store`] (the `store` module): it holds the state
//! directory's [`StateLock`], owns every path, checks every name before it
//! becomes one, and chooses how each write is made durable. The free
//! functions below are what it is built of; tools and tests use them too.
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
//!
//! A write that fails leaves nothing behind: its temporary files are
//! removed, files it had already put in place are removed again (or, if they
//! replaced a file, the old file is put back) and a batch's journal is
//! removed last, so neither recovery nor the next start-up brings back a
//! write the caller was told had failed.
//!
//! Temporary files are created new (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600)
//! under a name no other process can predict, so a planted file or symlink
//! is never written through; [`clean_temp`] removes the ones a crash left.
//! Reading goes through [`read_all`], which opens without following
//! symlinks or blocking, reads regular files only, up to a size limit, and
//! reports every bad file instead of stopping; [`quarantine`] moves a bad
//! file aside. Names the store makes for itself (temporary files, journals)
//! never end in `.xml` and are never listed.

use nix::libc;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

mod store;
pub use store::{Batch, FilterWrite, Lifetime, Loaded, Store, JOURNAL_FROM, MAX_PORT_LEN};

/// The largest filter or binding file the store writes or reads (1 MiB).
///
/// A binding is a few hundred bytes and a large filter some tens of
/// kilobytes, and the XML reader refuses documents over the same size
/// (`gw_xml::limits::MAX_DOCUMENT_BYTES`), so this leaves ample room; its
/// purpose is that a stray huge file in the state or config directory (or
/// a FIFO or device posing as one) cannot make start-up read it whole into
/// memory. Writes of more are refused, so the daemon never stores a file its
/// next start-up would refuse to read.
pub const MAX_FILE_LEN: u64 = 1 << 20;

/// The largest batch journal the store writes or reads (256 MiB): a whole
/// batch is at most one request (64 MiB, `gw_api::MAX_REQUEST_LEN`), which
/// JSON escaping in the journal can at most double or so.
pub const MAX_JOURNAL_LEN: u64 = 256 << 20;

/// The directory, inside the directory of a bad file, that [`quarantine`]
/// moves it to.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Mode of every file the store creates: only the daemon (root) reads them;
/// clients see filters and bindings through the daemon's socket.
const FILE_MODE: u32 = 0o600;

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
    /// Data larger than the store accepts for one file.
    #[error("{}: {len} bytes, over the store's limit of {limit} bytes (start-up would refuse to read it)", path.display())]
    TooBig {
        /// The file that was to be written.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The limit ([`MAX_FILE_LEN`] or [`MAX_JOURNAL_LEN`]).
        limit: u64,
    },
    /// A batch journal is damaged (truncated, corrupt, or naming files
    /// outside its directory): none of it was applied, and it was moved aside.
    #[error("batch journal {} is damaged ({reason}): none of it was applied; moved to {}", journal.display(), moved_to.display())]
    BadJournal {
        /// Where the journal was.
        journal: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// Where it is now (see [`quarantine`]).
        moved_to: PathBuf,
    },
    /// A name the store will not make a file name of (see [`Store`]).
    #[error("{kind} {name:?} refused: {reason}")]
    BadName {
        /// What the name is of: "port", "filter" or "file".
        kind: &'static str,
        /// The name (or path) as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A write failed and undoing what it had done also failed: some of it
    /// may be left on disk.
    #[error("{error}; undoing the partial write also failed, some of it may be left: {undo}")]
    Undo {
        /// Why the write failed.
        error: Box<StoreError>,
        /// Why undoing it failed.
        undo: Box<StoreError>,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { op, path: path.to_path_buf(), source }
}

fn invalid(op: &'static str, path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Io { op, path: path.to_path_buf(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) }
}

/// `error`, or, if undoing failed too, both.
fn undone(error: StoreError, undo: Result<(), StoreError>) -> StoreError {
    match undo {
        Ok(()) => error,
        Err(undo) => StoreError::Undo { error: Box::new(error), undo: Box::new(undo) },
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn check_len(path: &Path, len: usize, limit: u64) -> Result<(), StoreError> {
    let len = len as u64;
    if len > limit {
        return Err(StoreError::TooBig { path: path.to_path_buf(), len, limit });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Names of the store's own files

/// Temporary files are `.NAME.PID-COUNTER-TOKEN.gwtmp`: TOKEN is 16 hex
/// digits derived from a secret random seed, so the name cannot be guessed
/// in advance; the suffix keeps it from ever ending in `.xml`.
const TEMP_SUFFIX: &str = ".gwtmp";
/// Journals of batches whose files may not be durable yet live beside them
/// as `.batch-PID-COUNTER-NANOS.journal`.
const JOURNAL_PREFIX: &str = ".batch-";
const JOURNAL_SUFFIX: &str = ".journal";
/// How much of the target's name a temporary file's name keeps (file names
/// are at most 255 bytes).
const TEMP_NAME_KEEP: usize = 96;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A secret per process, from the kernel's random source (the time and pid
/// if that cannot be read).
fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        match File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
            Ok(()) => u64::from_ne_bytes(b),
            Err(_) => {
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
                (t as u64) ^ ((t >> 64) as u64) ^ (u64::from(std::process::id()) << 32)
            }
        }
    })
}

/// splitmix64's finaliser: one counter value in, an unrelated-looking word out.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The temporary file for writing `path` with counter value `n`.
fn temp_name_with(path: &Path, n: u64) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut keep = name.len().min(TEMP_NAME_KEEP);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    let token = mix(seed() ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    parent(path).join(format!(".{}.{}-{n}-{token:016x}{TEMP_SUFFIX}", &name[..keep], std::process::id()))
}

/// A fresh temporary name for writing `path` (or for a backup of it).
fn temp_name(path: &Path) -> PathBuf {
    temp_name_with(path, COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `name` is one of the store's temporary files: this version's
/// `.NAME.PID-COUNTER-TOKEN.gwtmp`, or the `.NAME.tmpPID` of earlier ones.
fn is_temp_name(name: &str) -> bool {
    if let Some(stem) = name.strip_suffix(TEMP_SUFFIX) {
        let Some((head, tail)) = stem.rsplit_once('.') else { return false };
        let mut parts = tail.split('-');
        let (Some(pid), Some(n), Some(token), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        return head.len() >= 2
            && head.starts_with('.')
            && digits(pid)
            && digits(n)
            && token.len() == 16
            && token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    }
    match name.rsplit_once(".tmp") {
        Some((head, pid)) => head.len() >= 2 && head.starts_with('.') && digits(pid),
        None => false,
    }
}

fn is_journal_name(name: &str) -> bool {
    name.len() > JOURNAL_PREFIX.len() + JOURNAL_SUFFIX.len()
        && name.starts_with(JOURNAL_PREFIX)
        && name.ends_with(JOURNAL_SUFFIX)
}

/// Whether `name` is a file the store makes for itself, never a filter or binding.
fn is_store_name(name: &str) -> bool {
    is_temp_name(name) || is_journal_name(name)
}

fn journal_name(dir: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{JOURNAL_PREFIX}{}-{n}-{stamp}{JOURNAL_SUFFIX}", std::process::id()))
}

/// Whether a journal may name `name`: one file of its own directory that
/// is not one of the store's own files.
fn valid_entry_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && !is_store_name(name)
}

// ---------------------------------------------------------------------------
// Writing

/// Creates a new temporary file for `path`: `O_CREAT|O_EXCL|O_NOFOLLOW`
/// (never an existing file, never through a symlink), mode 0600.
fn create_temp(path: &Path) -> Result<(PathBuf, File), StoreError> {
    let mut attempt = 0;
    loop {
        let tmp = temp_name(path);
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        match opened {
            Ok(f) => return Ok((tmp, f)),
            // Someone planted this name: take another.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(StoreError::Io { op: "create", path: tmp, source: e }),
        }
    }
}

/// Writes `data` to a new temporary file for `path` (synced if `sync`) and
/// returns its name; on failure nothing is left.
fn write_temp(path: &Path, data: &[u8], sync: bool) -> Result<PathBuf, StoreError> {
    let (tmp, mut f) = create_temp(path)?;
    let written = f.write_all(data).map_err(io("write", &tmp)).and_then(|()| {
        if sync {
            f.sync_all().map_err(io("fsync", &tmp))
        } else {
            Ok(())
        }
    });
    drop(f);
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// One `syncfs` of the file system `f` is on.
fn syncfs(f: &File, path: &Path) -> Result<(), StoreError> {
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(f)).map_err(|e| StoreError::Io {
        op: "syncfs",
        path: path.to_path_buf(),
        source: e.into(),
    })
}

fn syncfs_dir(dir: &Path) -> Result<(), StoreError> {
    syncfs(&File::open(dir).map_err(io("open", dir))?, dir)
}

/// Writes `data` to `path` atomically and durably. On failure the old file
/// (if any) is left as it was and no temporary file remains, except that
/// if only the final fsync of the directory fails, the new file is in place
/// but may not be durable. Refuses more than [`MAX_FILE_LEN`] bytes.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    check_len(path, data.len(), MAX_FILE_LEN)?;
    write_atomic_unchecked(path, data)
}

fn write_atomic_unchecked(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let tmp = write_temp(path, data, true)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::Io { op: "rename into", path: path.to_path_buf(), source: e });
    }
    sync_dir(parent(path))
}

/// A hard link to the file at `path` under a fresh temporary name, to put
/// back if a batch replacing it fails (`None`: there is no file there).
fn backup_of(path: &Path) -> Result<Option<PathBuf>, StoreError> {
    let mut attempt = 0;
    loop {
        let backup = temp_name(path);
        match fs::hard_link(path, &backup) {
            Ok(()) => return Ok(Some(backup)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => {
                // Hard links to directories are refused with EPERM: say what it is.
                let e = match fs::symlink_metadata(path) {
                    Ok(m) if m.is_dir() => std::io::Error::from_raw_os_error(libc::EISDIR),
                    _ => e,
                };
                return Err(StoreError::Io { op: "replace", path: path.to_path_buf(), source: e });
            }
        }
    }
}

/// Renames `tmp` to `path`, returning the backup of the file it replaced.
/// A new file (the common case: new bindings) costs one `renameat2`.
fn place_one(tmp: &Path, path: &Path) -> Result<Option<PathBuf>, StoreError> {
    match rename_noreplace(tmp, path) {
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::Io { op: "rename into", path: path.to_path_buf(), source: e }),
    }
    let backup = backup_of(path)?;
    match fs::rename(tmp, path) {
        Ok(()) => Ok(backup),
        Err(e) => {
            if let Some(b) = backup {
                let _ = fs::remove_file(b);
            }
            Err(StoreError::Io { op: "rename into", path: path.to_path_buf(), source: e })
        }
    }
}

/// The files of a batch being written: what to remove or put back if it fails.
#[derive(Default)]
struct Staging<'a> {
    /// Temporary files written, not renamed yet, with their targets.
    staged: Vec<(PathBuf, &'a Path)>,
    /// Targets renamed into place, with the backup of the file each replaced.
    placed: Vec<(&'a Path, Option<PathBuf>)>,
}

impl<'a> Staging<'a> {
    fn stage(&mut self, path: &'a Path, data: &[u8], sync: bool) -> Result<(), StoreError> {
        let tmp = write_temp(path, data, sync)?;
        self.staged.push((tmp, path));
        Ok(())
    }

    /// Renames every staged file into place.
    fn place(&mut self) -> Result<(), StoreError> {
        let mut staged = std::mem::take(&mut self.staged).into_iter();
        while let Some((tmp, path)) = staged.next() {
            let placed = place_one(&tmp, path);
            match placed {
                Ok(backup) => self.placed.push((path, backup)),
                Err(e) => {
                    self.staged.push((tmp, path));
                    self.staged.extend(staged);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The directories of the files placed.
    fn dirs(&self) -> std::collections::BTreeSet<&'a Path> {
        self.placed.iter().map(|(p, _)| parent(p)).collect()
    }

    /// Undoes the batch, durably: files placed are removed or put back, in
    /// reverse order, temporary files removed, directories synced.
    fn undo(&mut self) -> Result<(), StoreError> {
        let dirs = self.dirs();
        let mut first = Ok(());
        let mut keep = |r: Result<(), StoreError>| {
            if first.is_ok() {
                first = r;
            }
        };
        for (path, backup) in self.placed.drain(..).rev() {
            keep(match backup {
                Some(b) => fs::rename(&b, path).map_err(io("put back", path)),
                None => match fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(StoreError::Io { op: "remove", path: path.to_path_buf(), source: e })
                    }
                    _ => Ok(()),
                },
            });
        }
        for (tmp, _) in self.staged.drain(..) {
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    keep(Err(StoreError::Io { op: "remove", path: tmp, source: e }))
                }
                _ => {}
            }
        }
        for d in dirs {
            keep(sync_dir(d));
        }
        first
    }

    /// The batch is in place: drops the backups (a crash before they are
    /// gone leaves temporary files, which [`clean_temp`] removes).
    fn finish(mut self) {
        for (_, backup) in self.placed.drain(..) {
            if let Some(b) = backup {
                let _ = fs::remove_file(b);
            }
        }
    }
}

/// Writes several files atomically each and durably. The temporary files
/// are made durable together by one `syncfs` of their file system before
/// any is renamed into place, and each directory is synced once at the end:
/// a batch of thousands of bindings would otherwise spend seconds in
/// per-file fsync (10,000 fsyncs took 9.5 s on the CI kind).
///
/// All or nothing: on failure, every file of the batch is as it was before
/// (files it created are removed again, files it replaced are put back) and
/// no temporary file remains. Refuses files of more than [`MAX_FILE_LEN`].
pub fn write_many(files: &[(PathBuf, Vec<u8>)]) -> Result<(), StoreError> {
    write_many_in(files)
}

/// Runs `steps` on a fresh [`Staging`]: kept if they all succeed, undone
/// (every file as it was before) if one fails.
fn all_or_nothing<'a>(steps: impl FnOnce(&mut Staging<'a>) -> Result<(), StoreError>) -> Result<(), StoreError> {
    let mut batch = Staging::default();
    match steps(&mut batch) {
        Ok(()) => {
            batch.finish();
            Ok(())
        }
        Err(e) => Err(undone(e, batch.undo())),
    }
}

/// [`write_many`] for any kind of paths and contents (no copies).
fn write_many_in<P: AsRef<Path>, D: AsRef<[u8]>>(files: &[(P, D)]) -> Result<(), StoreError> {
    for (path, data) in files {
        check_len(path.as_ref(), data.as_ref().len(), MAX_FILE_LEN)?;
    }
    all_or_nothing(|batch| {
        for (path, data) in files {
            batch.stage(path.as_ref(), data.as_ref(), false)?;
        }
        let dirs: std::collections::BTreeSet<&Path> = files.iter().map(|(p, _)| parent(p.as_ref())).collect();
        for d in &dirs {
            syncfs_dir(d)?;
        }
        batch.place()?;
        for d in &dirs {
            sync_dir(d)?;
        }
        Ok(())
    })
}

/// [`write_many_in`] without making anything durable (no fsync, no
/// `syncfs`): for runtime state. What fsync adds over the page cache is
/// surviving a crash of the whole system, and after one the runtime
/// bindings are stale anyway (their guests are gone; a runtime binding
/// whose port is absent at start-up is deleted, and a file the crash left
/// damaged blocks its port, never opens it). Still all or nothing, and
/// each file is whole (a temporary file, then a rename), so a crash of the
/// daemon itself loses nothing.
fn write_volatile_in<P: AsRef<Path>, D: AsRef<[u8]>>(files: &[(P, D)]) -> Result<(), StoreError> {
    for (path, data) in files {
        check_len(path.as_ref(), data.as_ref().len(), MAX_FILE_LEN)?;
    }
    all_or_nothing(|batch| {
        for (path, data) in files {
            batch.stage(path.as_ref(), data.as_ref(), false)?;
        }
        batch.place()
    })
}

/// Writes one file atomically and durably, at [`write_atomic`]'s cost (an
/// fsync of the file and one of its directory, no `syncfs`), but all or
/// nothing like [`write_many`]: if even the directory's fsync fails, the
/// file it replaced is put back (or the new one removed).
fn write_one(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    check_len(path, data.len(), MAX_FILE_LEN)?;
    all_or_nothing(|batch| {
        batch.stage(path, data, true)?;
        batch.place()?;
        sync_dir(parent(path))
    })
}

/// The first line of a journal: magic, version, length of the JSON body and
/// its FNV-1a 64 checksum, so a truncated or corrupt journal is recognised
/// as such. (Journals of earlier versions are the bare JSON body.)
const JOURNAL_MAGIC: &str = "guestwall-journal";

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

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
///
/// All or nothing: on failure (no space for the journal or for one of the
/// files, ...), the files are put back as they were, no temporary file
/// remains, and the journal is removed, durably, before the error is
/// returned, so recovery does not bring the batch back.
pub fn write_journaled(dir: &Path, files: &[(PathBuf, Vec<u8>)]) -> Result<PathBuf, StoreError> {
    write_journaled_in(dir, files)
}

/// [`write_journaled`] for any kind of paths and contents (no copies).
fn write_journaled_in<P: AsRef<Path>, D: AsRef<[u8]>>(dir: &Path, files: &[(P, D)]) -> Result<PathBuf, StoreError> {
    let entries: Vec<(&str, &str)> = files
        .iter()
        .map(|(path, data)| {
            let (path, data) = (path.as_ref(), data.as_ref());
            check_len(path, data.len(), MAX_FILE_LEN)?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if parent(path) != dir || !valid_entry_name(name) {
                return Err(invalid("journal", path, std::io::Error::other("not a file of the journal's directory")));
            }
            std::str::from_utf8(data).map(|d| (name, d)).map_err(|e| invalid("journal", path, e))
        })
        .collect::<Result<_, _>>()?;
    let journal = journal_name(dir);
    let body = serde_json::to_vec(&entries).map_err(|e| invalid("journal", &journal, e))?;
    let mut text = format!("{JOURNAL_MAGIC} 1 {} {:016x}\n", body.len(), fnv1a64(&body)).into_bytes();
    text.extend_from_slice(&body);
    drop(body);
    check_len(&journal, text.len(), MAX_JOURNAL_LEN)?;
    write_atomic_unchecked(&journal, &text)?;
    let mut batch = Staging::default();
    let done = (|| {
        for (path, data) in files {
            batch.stage(path.as_ref(), data.as_ref(), false)?;
        }
        batch.place()
    })();
    match done {
        Ok(()) => {
            batch.finish();
            Ok(journal)
        }
        // The files first, the journal last: a crash in between recovers
        // the whole batch, never a part of it.
        Err(e) => Err(undone(e, batch.undo().and_then(|()| remove_durable(&journal)))),
    }
}

/// Removes the files of a batch that was written but must not stay (the
/// kernel refused it, say), then its journal, durably: the files first and
/// the journal last, with one fsync per directory, so that a crash in
/// between brings back the whole batch (through the journal) or none of it.
pub fn remove_batch(files: &[PathBuf], journal: Option<&Path>) -> Result<(), StoreError> {
    let mut dirs = std::collections::BTreeSet::new();
    for path in files {
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", path)(e)),
            _ => {}
        }
        dirs.insert(parent(path));
    }
    for d in dirs {
        sync_dir(d)?;
    }
    match journal {
        Some(j) => remove_durable(j),
        None => Ok(()),
    }
}

fn journals(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    entries(dir, is_journal_name)
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
    syncfs_dir(dir)?;
    for j in listed {
        remove_durable(&j)?;
    }
    Ok(())
}

/// What [`recover_all`] did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// How many files were written out again from journals.
    pub written: usize,
    /// The damaged journals, none of which was applied; each was moved aside.
    pub bad: Vec<BadJournal>,
}

/// A damaged journal that [`recover_all`] did not apply.
#[derive(Debug)]
pub struct BadJournal {
    /// Where the journal was.
    pub journal: PathBuf,
    /// What is wrong with it.
    pub reason: String,
    /// Where it is now (see [`quarantine`]).
    pub moved_to: PathBuf,
}

/// The files of a batch, with their contents.
type Files = Vec<(PathBuf, Vec<u8>)>;

/// The files a journal names, or why it is damaged (outer error: it could
/// not be read).
fn read_journal(dir: &Path, journal: &Path) -> Result<Result<Files, String>, StoreError> {
    let text = match read_checked(journal, MAX_JOURNAL_LEN) {
        Got::Data(text) => text,
        Got::Bad(reason) => return Ok(Err(reason)),
        Got::Failed(op, e) => return Err(StoreError::Io { op, path: journal.to_path_buf(), source: e }),
        Got::Gone => return Ok(Ok(Vec::new())),
    };
    let body: &[u8] = if text.starts_with(b"[") {
        // an earlier version's journal: the JSON alone
        &text
    } else {
        let Some(nl) = text.iter().position(|b| *b == b'\n') else {
            return Ok(Err("no header line (truncated?)".into()));
        };
        let header = String::from_utf8_lossy(&text[..nl]);
        let body = &text[nl + 1..];
        let fields: Vec<&str> = header.split(' ').collect();
        let [magic, version, len, sum] = fields[..] else {
            return Ok(Err(format!("bad header line {header:?}")));
        };
        if magic != JOURNAL_MAGIC || version != "1" {
            return Ok(Err(format!("bad header line {header:?}")));
        }
        if len.parse::<usize>().ok() != Some(body.len()) {
            return Ok(Err(format!("{} bytes after the header, which announces {len} (truncated?)", body.len())));
        }
        if u64::from_str_radix(sum, 16).ok() != Some(fnv1a64(body)) {
            return Ok(Err("checksum mismatch (corrupt)".into()));
        }
        body
    };
    let entries: Vec<(String, String)> = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => return Ok(Err(format!("not a valid journal: {e}"))),
    };
    // All or nothing: one bad entry and none is applied.
    let mut files = Vec::with_capacity(entries.len());
    for (name, data) in entries {
        if !valid_entry_name(&name) {
            return Ok(Err(format!("names {name:?}, which is not a file of its directory")));
        }
        if data.len() as u64 > MAX_FILE_LEN {
            return Ok(Err(format!("{name}: {} bytes, over the limit of {MAX_FILE_LEN}", data.len())));
        }
        files.push((dir.join(name), data.into_bytes()));
    }
    Ok(Ok(files))
}

/// After a crash: writes out (durably) every file of the journals left in
/// `dir`, each journal all or nothing, then removes the journals. A damaged
/// journal (truncated, corrupt, naming anything but files of `dir`) is not
/// applied at all: it is moved aside with [`quarantine`] and reported, and
/// recovery goes on with the others. An I/O error (including while
/// writing a journal's files, which then stays for the next attempt) stops
/// it with an error.
pub fn recover_all(dir: &Path) -> Result<Recovery, StoreError> {
    let mut out = Recovery::default();
    for j in journals(dir)? {
        match read_journal(dir, &j)? {
            Ok(files) => {
                write_many(&files)?;
                out.written += files.len();
                remove_durable(&j)?;
            }
            Err(reason) => {
                let moved_to = quarantine(&j, &reason)?;
                out.bad.push(BadJournal { journal: j, reason, moved_to });
            }
        }
    }
    Ok(out)
}

/// [`recover_all`], returning how many files were written; a damaged
/// journal is an error ([`StoreError::BadJournal`], naming it and where it
/// was moved), returned after every other journal has been applied and
/// every damaged one moved aside, so the next call succeeds.
pub fn recover(dir: &Path) -> Result<usize, StoreError> {
    let r = recover_all(dir)?;
    match r.bad.into_iter().next() {
        Some(BadJournal { journal, reason, moved_to }) => Err(StoreError::BadJournal { journal, reason, moved_to }),
        None => Ok(r.written),
    }
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

/// Removes the temporary files a crash (or an earlier version of the
/// store) left in `dir`, and returns them, sorted. Only the store's own
/// temporary names are touched, and only regular files and symlinks (a
/// symlink is removed, never followed); every other file stays. Call it at
/// start-up, holding the [`StateLock`], before anything is written: it would
/// remove the temporary files of a write under way.
pub fn clean_temp(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io { op: "list", path: dir.to_path_buf(), source: e }),
    };
    let mut removed = Vec::new();
    for e in rd {
        let e = e.map_err(io("list", dir))?;
        if !e.file_name().to_str().is_some_and(is_temp_name) {
            continue;
        }
        let path = e.path();
        let t = e.file_type().map_err(io("stat", &path))?;
        if !(t.is_file() || t.is_symlink()) {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io { op: "remove", path, source: e }),
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    removed.sort();
    Ok(removed)
}

// ---------------------------------------------------------------------------
// Reading

/// One file found by [`read_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file within the size limit, valid UTF-8.
    Ok {
        /// The file.
        path: PathBuf,
        /// Its contents.
        text: String,
    },
    /// Anything else with the extension: it was not read (or not whole).
    Bad {
        /// The file.
        path: PathBuf,
        /// Why: not a regular file (symlink, directory, FIFO, ...), too
        /// big, not UTF-8 (with the byte offset), or the I/O error.
        reason: String,
    },
}

impl Entry {
    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            Entry::Ok { path, .. } | Entry::Bad { path, .. } => path,
        }
    }
}

/// What reading one file gave.
enum Got {
    Data(Vec<u8>),
    /// Not a regular file, or too big.
    Bad(String),
    /// An I/O error.
    Failed(&'static str, std::io::Error),
    /// Removed since it was listed.
    Gone,
}

fn describe(t: fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Reads `path` if it is a regular file of at most `max_len` bytes, without
/// following a symlink or blocking on a FIFO.
fn read_checked(path: &Path, max_len: u64) -> Got {
    let not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    // Not even opened unless it looks like a regular file: opening a device
    // can have effects of its own.
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(m) => return Got::Bad(format!("{}, not a regular file", describe(m.file_type()))),
        Err(e) if not_found(&e) => return Got::Gone,
        Err(e) => return Got::Failed("stat", e),
    }
    let opened =
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC).open(path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Got::Bad("a symbolic link".into()),
        Err(e) if not_found(&e) => return Got::Gone,
        Err(e) => return Got::Failed("open", e),
    };
    // What was opened, which may not be what was looked at.
    let m = match f.metadata() {
        Ok(m) => m,
        Err(e) => return Got::Failed("fstat", e),
    };
    if !m.is_file() {
        return Got::Bad(format!("{}, not a regular file", describe(m.file_type())));
    }
    if m.len() > max_len {
        return Got::Bad(format!("{} bytes, over the limit of {max_len}", m.len()));
    }
    let mut data = Vec::with_capacity(m.len() as usize);
    if let Err(e) = f.take(max_len + 1).read_to_end(&mut data) {
        return Got::Failed("read", e);
    }
    if data.len() as u64 > max_len {
        return Got::Bad(format!("grew over the limit of {max_len} bytes while read"));
    }
    Got::Data(data)
}

/// Reads every file of `dir` whose name ends in `.EXT`, hidden ones
/// included (a port may be called `.hid`), the store's own files excluded,
/// sorted by path; absent `dir`: none. Files are opened with
/// `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC` and read only if they are regular
/// files of at most `max_len` bytes (use [`MAX_FILE_LEN`]) of valid UTF-8;
/// anything else is an [`Entry::Bad`] saying why, and reading goes on, so
/// one bad file cannot stop or hang start-up. Only listing `dir` itself
/// failing is an error.
pub fn read_all(dir: &Path, ext: &str, max_len: u64) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::new();
    for (path, utf8) in names(dir, ext)? {
        if !utf8 {
            out.push(Entry::Bad { path, reason: "its name is not UTF-8".into() });
            continue;
        }
        let entry = match read_checked(&path, max_len) {
            Got::Data(data) => match String::from_utf8(data) {
                Ok(text) => Entry::Ok { path, text },
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    Entry::Bad { path, reason: format!("not UTF-8: invalid byte at offset {at}") }
                }
            },
            Got::Bad(reason) => Entry::Bad { path, reason },
            Got::Failed(op, e) => Entry::Bad { path, reason: format!("{op}: {e}") },
            Got::Gone => continue,
        };
        out.push(entry);
    }
    Ok(out)
}

/// The names in `dir` ending in `.EXT` (hidden ones included, the store's
/// own excluded), sorted, each with whether it is UTF-8.
fn names(dir: &Path, ext: &str) -> Result<Vec<(PathBuf, bool)>, StoreError> {
    let suffix = format!(".{ext}");
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io { op: "list", path: dir.to_path_buf(), source: e }),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io("list", dir))?;
        let name = e.file_name();
        let (keep, utf8) = match name.to_str() {
            Some(n) => (n.ends_with(&suffix) && !is_store_name(n), true),
            None => (name.as_bytes().ends_with(suffix.as_bytes()), false),
        };
        if keep {
            out.push((e.path(), utf8));
        }
    }
    out.sort();
    Ok(out)
}

/// The files of a directory with this extension, sorted (absent dir: none).
/// Hidden files are listed too; the store's own temporary files and
/// journals never are. Whatever they are (directories, FIFOs, ...): use
/// [`read_all`] to read them safely.
pub fn list(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, StoreError> {
    Ok(names(dir, ext)?.into_iter().map(|(p, _)| p).collect())
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

// ---------------------------------------------------------------------------
// Quarantine

/// `secs` since the epoch as `YYYYMMDDTHHMMSSZ`.
fn utc_stamp(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Renames `from` to `to` unless `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{renameat2, RenameFlags};
        match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => {}
            r => return r.map_err(Into::into),
        }
    }
    // No RENAME_NOREPLACE on this file system: check, then rename (the
    // directories are the daemon's own, held under its lock).
    match fs::symlink_metadata(to) {
        Ok(_) => Err(std::io::Error::from_raw_os_error(libc::EEXIST)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::rename(from, to),
        Err(e) => Err(e),
    }
}

/// Moves a bad file (any kind: regular file, FIFO, symlink, directory) out
/// of the way, durably, and returns where it is now:
/// `DIR/quarantine/NAME.YYYYMMDDTHHMMSSZ` (a `-N` suffix if that exists),
/// with `NAME.YYYYMMDDTHHMMSSZ.reason` beside it saying where it was, when
/// and why. `DIR` is `path`'s directory, so the file stays on its file
/// system; the `quarantine` directory (mode 0700) is neither read by
/// [`read_all`] nor a name the daemon gives a filter or binding file
/// (those end in `.xml`). The file is never opened.
pub fn quarantine(path: &Path, reason: &str) -> Result<PathBuf, StoreError> {
    let dir = parent(path);
    let qdir = dir.join(QUARANTINE_DIR);
    match fs::DirBuilder::new().mode(0o700).create(&qdir) {
        Ok(()) => sync_dir(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::Io { op: "create", path: qdir, source: e }),
    }
    match fs::symlink_metadata(&qdir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            let e = std::io::Error::from_raw_os_error(libc::ENOTDIR);
            return Err(StoreError::Io { op: "quarantine into", path: qdir, source: e });
        }
        Err(e) => return Err(StoreError::Io { op: "stat", path: qdir, source: e }),
    }
    let Some(name) = path.file_name() else {
        let e = std::io::Error::from(std::io::ErrorKind::InvalidInput);
        return Err(StoreError::Io { op: "quarantine", path: path.to_path_buf(), source: e });
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let stamp = utc_stamp(now);
    let note = format!("was: {}\nmoved: {stamp}\nreason: {reason}\n", path.display());
    for i in 0u32.. {
        let mut base = OsString::from(name);
        base.push(if i == 0 { format!(".{stamp}") } else { format!(".{stamp}-{i}") });
        let target = qdir.join(&base);
        base.push(".reason");
        let reason_path = qdir.join(&base);
        // The note first, so that a quarantined file always has one.
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&reason_path);
        let mut f = match created {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && i < 1000 => continue,
            Err(e) => return Err(StoreError::Io { op: "create", path: reason_path, source: e }),
        };
        if let Err(e) = f.write_all(note.as_bytes()).and_then(|()| f.sync_all()) {
            let _ = fs::remove_file(&reason_path);
            return Err(StoreError::Io { op: "write", path: reason_path, source: e });
        }
        drop(f);
        match rename_noreplace(path, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && i < 1000 => {
                let _ = fs::remove_file(&reason_path);
                continue;
            }
            Err(e) => {
                let _ = fs::remove_file(&reason_path);
                return Err(StoreError::Io { op: "move aside", path: path.to_path_buf(), source: e });
            }
        }
        sync_dir(&qdir)?;
        sync_dir(dir)?;
        return Ok(target);
    }
    unreachable!("the loop returns")
}

// ---------------------------------------------------------------------------
// Locking

/// An exclusive lock on a state directory, held while this value lives.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock, creating the directory if needed.
    pub fn take(state_dir: &Path) -> Result<StateLock, StoreError> {
        fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
        let path = state_dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io("open", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Io { op: "lock", path, source: e }),
        }
    }
}

#[cfg(test)]
mod tests;
