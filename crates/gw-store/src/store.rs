//! The typed store: the only code that turns a filter's or port's name into
//! a path. The daemon asks for `put_filter`, `put_bindings`,
//! `remove_binding`, ... and never builds a path or chooses between
//! [`write_atomic`], [`write_many`] and [`write_journaled`] itself.
//!
//! Layout: `CONFIG/NAME.xml` for filters (or the file a filter was read
//! from), `STATE/bindings/PORT.xml` for bindings, `STATE/lock` for the
//! [`StateLock`], which a [`Store`] holds for as long as it lives; with a
//! runtime directory ([`Store::with_runtime`], under `/run`), the bindings
//! libvirt makes are kept in `RUNTIME/bindings/PORT.xml` (with its own
//! lock), gone after a reboot as libvirt's own are.

use super::*;

/// Batches of at least this many bindings go through a journal
/// ([`write_journaled`]): one fsync instead of a `syncfs` of thousands of
/// new files.
pub const JOURNAL_FROM: usize = 64;

/// The longest port name, in bytes: Linux's `IFNAMSIZ` (16) less the NUL.
pub const MAX_PORT_LEN: usize = 15;

/// The subdirectory of the state directory that holds the bindings.
const BINDINGS_DIR: &str = "bindings";

/// How long a binding is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lifetime {
    /// Until it is deleted (the state directory).
    Persistent,
    /// Until it is deleted or the host reboots (the runtime directory):
    /// the bindings libvirt creates for a running guest, as libvirt keeps
    /// its own under /run.
    Runtime,
}

/// The daemon's filters and bindings on disk.
///
/// [`Store::open`] takes the [`StateLock`] and the store holds it: every
/// write, and [`Store::load`]'s removal of stale temporary files (which
/// would remove those of a write under way in another process), can then
/// only happen under the lock, by construction, and one process has one
/// store per state directory.
pub struct Store {
    config: PathBuf,
    bindings: PathBuf,
    /// The runtime bindings' directory and its lock, if there is one.
    runtime: Option<(PathBuf, StateLock)>,
    _lock: StateLock,
}

/// What [`Store::load`] found at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The filter files (`CONFIG/*.xml`), sorted by path, each read or
    /// saying why it could not be.
    pub filters: Vec<Entry>,
    /// The binding files (`STATE/bindings/*.xml`), sorted by path, with the
    /// port each is named for (the file's stem, which the caller checks: a
    /// file whose name is no valid port is still reported).
    pub bindings: Vec<(String, Entry)>,
    /// The runtime directory's binding files, the same way.
    pub runtime_bindings: Vec<(String, Entry)>,
    /// How many binding files were written out again from batch journals
    /// (the daemon stopped before they were durable).
    pub recovered: usize,
    /// Damaged journals, none of which was applied; each was moved aside.
    pub bad_journals: Vec<BadJournal>,
    /// The stale temporary files removed, bindings' directory first, then
    /// the config directory's.
    pub removed_temps: Vec<PathBuf>,
    /// Failures to remove stale temporary files: start-up goes on (they are
    /// never read as filters or bindings).
    pub temp_errors: Vec<StoreError>,
}

/// A batch of binding files written by [`Store::put_bindings`]: durable
/// already (each file, or the batch's journal), to be kept with
/// [`Batch::settle`] or taken back with [`Batch::undo`]. Dropped without
/// either, its journal (if any) stays and is settled by the next
/// [`Store::remove_binding`] or recovered at the next start-up, which is
/// safe but slower.
#[must_use = "a batch is settled (kept) or undone"]
#[derive(Debug)]
pub struct Batch {
    dir: PathBuf,
    files: Vec<PathBuf>,
    journal: Option<PathBuf>,
}

impl Batch {
    /// How many binding files it wrote.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it wrote none.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The journal that makes it durable until it is settled (batches of
    /// [`JOURNAL_FROM`] bindings or more).
    pub fn journal(&self) -> Option<&Path> {
        self.journal.as_deref()
    }

    /// Keeps the batch. A journaled batch's files are made durable and its
    /// journal removed by a background thread ([`settle`]); `on_error` is
    /// called there if that fails (the journal then stays for recovery).
    /// Returns that thread, if one was needed and could be started; if none
    /// could be started, the journal stays (see [`Batch`]).
    pub fn settle(self, on_error: impl FnOnce(StoreError) + Send + 'static) -> Option<std::thread::JoinHandle<()>> {
        let journal = self.journal?;
        let dir = self.dir;
        std::thread::Builder::new()
            .name("gw-store-settle".into())
            .spawn(move || {
                if let Err(e) = settle(&dir, Some(&journal)) {
                    on_error(e);
                }
            })
            .ok()
    }

    /// [`Batch::settle`], in this thread.
    pub fn settle_now(self) -> Result<(), StoreError> {
        match &self.journal {
            Some(j) => settle(&self.dir, Some(j)),
            None => Ok(()),
        }
    }

    /// Takes the batch back (the kernel refused it, say): removes its files,
    /// then its journal, durably ([`remove_batch`]), so that neither
    /// recovery nor the next start-up brings any of it back. A file the
    /// batch replaced is not put back: the daemon writes only bindings of
    /// ports that have none, or whose file was unusable.
    pub fn undo(self) -> Result<(), StoreError> {
        remove_batch(&self.files, self.journal.as_deref())
    }
}

/// A filter file written by [`Store::put_filter`], durable already, with
/// what it replaced kept aside until it is kept ([`FilterWrite::keep`], or
/// dropping it) or undone ([`FilterWrite::undo`]).
#[must_use = "a filter write is kept or undone"]
#[derive(Debug)]
pub struct FilterWrite {
    path: PathBuf,
    /// A hard link to the file it replaced (any kind of file, never read),
    /// under a temporary name that [`clean_temp`] removes after a crash.
    backup: Option<PathBuf>,
}

impl FilterWrite {
    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the new file (the same as dropping this).
    pub fn keep(self) {}

    /// Puts back the file it replaced (the very same file: contents, mode
    /// and owner), or removes the new one if it replaced none, durably.
    pub fn undo(mut self) -> Result<(), StoreError> {
        restore(&self.path, self.backup.take())
    }
}

impl Drop for FilterWrite {
    fn drop(&mut self) {
        if let Some(b) = self.backup.take() {
            // Not durably: a backup a crash leaves is a temporary file.
            let _ = fs::remove_file(b);
        }
    }
}

/// Puts `backup` back at `path`, or removes `path` if there is none, durably.
fn restore(path: &Path, backup: Option<PathBuf>) -> Result<(), StoreError> {
    match backup {
        Some(b) => {
            fs::rename(&b, path).map_err(io("put back", path))?;
            sync_dir(parent(path))
        }
        None => remove_durable(path),
    }
}

fn bad_name(kind: &'static str, name: impl Into<String>, reason: &'static str) -> StoreError {
    StoreError::BadName { kind, name: name.into(), reason }
}

/// Checks a port's name as Linux checks an interface's (`dev_valid_name`):
/// 1 to 15 bytes, not `.` or `..`, no `/`, `:`, NUL or ASCII blank. So it is
/// one file name of the bindings' directory, never a path elsewhere; `.hid`
/// is a port (file `.hid.xml`).
fn check_port(port: &str) -> Result<(), StoreError> {
    let reason = if port.is_empty() {
        "empty"
    } else if port.len() > MAX_PORT_LEN {
        "longer than 15 bytes (Linux's limit for interface names)"
    } else if port == "." || port == ".." {
        "not an interface name"
    } else if port.bytes().any(|b| matches!(b, b'/' | b':' | b'\0') || b.is_ascii_whitespace()) {
        "an interface name has no '/', ':', NUL or blank"
    } else {
        return Ok(());
    };
    Err(bad_name("port", port, reason))
}

/// Checks a filter's name as one file name: `NAME.xml` (so `.` and `..`
/// are fine) of at most 255 bytes, no `/` or NUL.
fn check_filter(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains(['/', '\0']) {
        "a filter's name has no '/' or NUL (it names a file)"
    } else if name.len() + ".xml".len() > 255 {
        "longer than a file name allows"
    } else {
        return Ok(());
    };
    Err(bad_name("filter", name, reason))
}

impl Store {
    /// Opens the store of `config_dir` (filters) and `state_dir`
    /// (bindings, lock), creating the directories if needed, and takes the
    /// state directory's lock ([`StoreError::Locked`] if another process
    /// holds it).
    pub fn open(config_dir: &Path, state_dir: &Path) -> Result<Store, StoreError> {
        let lock = StateLock::take(state_dir)?;
        fs::create_dir_all(config_dir).map_err(io("create", config_dir))?;
        let bindings = state_dir.join(BINDINGS_DIR);
        fs::create_dir_all(&bindings).map_err(io("create", &bindings))?;
        Ok(Store { config: config_dir.to_path_buf(), bindings, runtime: None, _lock: lock })
    }

    /// Keeps [`Lifetime::Runtime`] bindings in `dir` (created if needed,
    /// and locked as the state directory is: two daemons never share one).
    /// Without it they are kept with the persistent ones.
    pub fn with_runtime(mut self, dir: &Path) -> Result<Store, StoreError> {
        let lock = StateLock::take(dir)?;
        let bindings = dir.join(BINDINGS_DIR);
        fs::create_dir_all(&bindings).map_err(io("create", &bindings))?;
        self.runtime = Some((bindings, lock));
        Ok(self)
    }

    fn dir_of(&self, lifetime: Lifetime) -> &Path {
        match (&self.runtime, lifetime) {
            (Some((dir, _)), Lifetime::Runtime) => dir,
            _ => &self.bindings,
        }
    }

    /// The bindings' directories: the state directory's, then the runtime one's.
    fn binding_dirs(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.bindings.as_path()).chain(self.runtime.as_ref().map(|(d, _)| d.as_path()))
    }

    /// The config directory, for reading the filters into a library.
    pub fn config_dir(&self) -> &Path {
        &self.config
    }

    /// At start-up, before anything is written, once: removes the stale
    /// temporary files of both directories ([`clean_temp`]; a failure is
    /// reported, not fatal), writes out the batch journals a crash left
    /// ([`recover_all`]), then reads every filter and binding file
    /// ([`read_all`], at most [`MAX_FILE_LEN`] bytes each). Nothing is
    /// moved aside but damaged journals: a bad binding file stays, so that
    /// its port stays blocked until the binding is deleted or created again.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let mut out = Loaded::default();
        for d in self.binding_dirs().chain([self.config.as_path()]) {
            match clean_temp(d) {
                Ok(removed) => out.removed_temps.extend(removed),
                Err(e) => out.temp_errors.push(e),
            }
        }
        for d in self.binding_dirs() {
            let recovery = recover_all(d)?;
            out.recovered += recovery.written;
            out.bad_journals.extend(recovery.bad);
        }
        out.filters = read_all(&self.config, "xml", MAX_FILE_LEN)?;
        let ports = |dir: &Path| -> Result<Vec<(String, Entry)>, StoreError> {
            Ok(read_all(dir, "xml", MAX_FILE_LEN)?
                .into_iter()
                .map(|e| {
                    let port = e.path().file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                    (port, e)
                })
                .collect())
        };
        out.bindings = ports(&self.bindings)?;
        if let Some((dir, _)) = &self.runtime {
            out.runtime_bindings = ports(dir)?;
        }
        Ok(out)
    }

    fn binding_file(&self, port: &str, lifetime: Lifetime) -> Result<PathBuf, StoreError> {
        check_port(port)?;
        Ok(self.dir_of(lifetime).join(format!("{port}.xml")))
    }

    /// The file filter `name` is stored in: `origin`, the file it was read
    /// from (which must be a `.xml` file of the config directory), or else
    /// `CONFIG/NAME.xml`.
    pub fn filter_file(&self, name: &str, origin: Option<&Path>) -> Result<PathBuf, StoreError> {
        check_filter(name)?;
        let Some(origin) = origin else {
            return Ok(self.config.join(format!("{name}.xml")));
        };
        let file = origin.file_name().and_then(|n| n.to_str());
        if parent(origin) != self.config || !file.is_some_and(|n| n.ends_with(".xml") && valid_entry_name(n)) {
            return Err(bad_name("file", origin.display().to_string(), "not a filter file of the config directory"));
        }
        Ok(origin.to_path_buf())
    }

    /// Writes filter `name` (its XML) atomically and durably to
    /// [`Store::filter_file`]. All or nothing; on success, the file it
    /// replaced is kept aside until the returned [`FilterWrite`] is kept or
    /// undone. Refuses more than [`MAX_FILE_LEN`] bytes.
    pub fn put_filter(&self, name: &str, xml: &[u8], origin: Option<&Path>) -> Result<FilterWrite, StoreError> {
        let path = self.filter_file(name, origin)?;
        check_len(&path, xml.len(), MAX_FILE_LEN)?;
        let tmp = write_temp(&path, xml, true)?;
        let backup = match place_one(&tmp, &path) {
            Ok(b) => b,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = sync_dir(parent(&path)) {
            return Err(undone(e, restore(&path, backup)));
        }
        Ok(FilterWrite { path, backup })
    }

    /// Removes filter `name`'s file ([`Store::filter_file`]) durably;
    /// absent is fine.
    pub fn remove_filter(&self, name: &str, origin: Option<&Path>) -> Result<(), StoreError> {
        remove_durable(&self.filter_file(name, origin)?)
    }

    /// Writes the binding files of these ports (each with its XML), all or
    /// nothing, durably: one binding by itself (an fsync of the file and
    /// of the directory), fewer than [`JOURNAL_FROM`] with [`write_many`]
    /// (one `syncfs`), more through a journal ([`write_journaled`]: one
    /// fsync; [`Batch::settle`] makes the files durable later). Runtime
    /// bindings are written whole but not made durable (see
    /// `write_volatile_in`: a system crash makes them stale anyway). Every name
    /// is checked before any path is made of it, and a port given twice is
    /// refused; on any error nothing of the batch is left.
    /// `lifetime` says which directory they go to.
    pub fn put_bindings<P: AsRef<str>, D: AsRef<[u8]>>(
        &self,
        bindings: &[(P, D)],
        lifetime: Lifetime,
    ) -> Result<Batch, StoreError> {
        let mut seen = std::collections::HashSet::with_capacity(bindings.len());
        let mut files = Vec::with_capacity(bindings.len());
        for (port, data) in bindings {
            let port = port.as_ref();
            let path = self.binding_file(port, lifetime)?;
            if !seen.insert(port) {
                return Err(bad_name("port", port, "given twice in one batch"));
            }
            files.push((path, data.as_ref()));
        }
        let volatile = lifetime == Lifetime::Runtime && self.runtime.is_some();
        let journal = match files.as_slice() {
            [] => None,
            _ if volatile => write_volatile_in(&files).map(|()| None)?,
            [(path, data)] => write_one(path, data).map(|()| None)?,
            _ if files.len() < JOURNAL_FROM => write_many_in(&files).map(|()| None)?,
            _ => Some(write_journaled_in(self.dir_of(lifetime), &files)?),
        };
        Ok(Batch {
            dir: self.dir_of(lifetime).to_path_buf(),
            files: files.into_iter().map(|(p, _)| p).collect(),
            journal,
        })
    }

    /// [`Store::put_bindings`] for one binding, kept at once (it is durable
    /// when this returns), e.g. to put back a binding whose removal the
    /// kernel refused.
    pub fn put_binding(&self, port: &str, xml: &[u8], lifetime: Lifetime) -> Result<(), StoreError> {
        match (lifetime, &self.runtime) {
            (Lifetime::Runtime, Some(_)) => write_volatile_in(&[(self.binding_file(port, lifetime)?, xml)]),
            _ => write_one(&self.binding_file(port, lifetime)?, xml),
        }
    }

    /// Removes port `port`'s binding file durably (absent is fine), after
    /// settling every journal of the bindings' directory, so that no
    /// journal naming the binding outlives its file: a deleted binding
    /// never comes back through recovery.
    /// Either lifetime's file goes (a port has one binding).
    pub fn remove_binding(&self, port: &str) -> Result<(), StoreError> {
        check_port(port)?;
        for dir in self.binding_dirs() {
            settle(dir, None)?;
            remove_durable(&dir.join(format!("{port}.xml")))?;
        }
        Ok(())
    }

    /// Moves a bad file of the store aside ([`quarantine`]) and returns
    /// where it is now. Only files directly in the config or bindings
    /// directory are moved.
    pub fn quarantine(&self, path: &Path, reason: &str) -> Result<PathBuf, StoreError> {
        let dir = parent(path);
        if path.file_name().is_none() || !(dir == self.config || self.binding_dirs().any(|d| d == dir)) {
            return Err(bad_name("file", path.display().to_string(), "not a file of the store"));
        }
        quarantine(path, reason)
    }
}

#[cfg(test)]
mod tests;
