//! guestwall's built-in filters and the filter library a host sees.
//!
//! The built-ins carry libvirt's names and meaning (`clean-traffic`,
//! `no-ip-spoofing`, `allow-dhcp`, ...) and are written by us, as XML files
//! under `filters/` compiled into the binary. A [`Library`] starts from them
//! and overlays the `*.xml` files of a config directory: a file that defines a
//! filter of the same name replaces the built-in, as an admin would expect.

use gw_model::Filter;
use gw_resolve::FilterSource;
use gw_xml::{read_filter, Diagnostic, ReadError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

macro_rules! builtins {
    ($($name:literal),* $(,)?) => {
        /// The built-in filters as `(name, xml)`.
        pub const BUILTINS: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../filters/", $name, ".xml"))),)*
        ];
    };
}

builtins!(
    "allow-arp",
    "allow-dhcp",
    "allow-dhcp-server",
    "allow-dhcpv6",
    "allow-dhcpv6-server",
    "allow-incoming-ipv4",
    "allow-incoming-ipv6",
    "allow-ipv4",
    "allow-ipv6",
    "clean-traffic",
    "clean-traffic-gateway",
    "no-arp-ip-spoofing",
    "no-arp-mac-spoofing",
    "no-arp-spoofing",
    "no-ip-multicast",
    "no-ip-spoofing",
    "no-ipv6-multicast",
    "no-ipv6-spoofing",
    "no-mac-broadcast",
    "no-mac-spoofing",
    "no-other-l2-traffic",
    "no-other-rarp-traffic",
    "qemu-announce-self",
    "qemu-announce-self-rarp",
);

/// Where a filter of the library comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Shipped inside the binary.
    Builtin,
    /// Read from this file.
    File(PathBuf),
}

/// The largest filter file the daemon reads: libvirt's filters are a few
/// kilobytes; a megabyte is far beyond any real one and bounds the memory a
/// stray file can take at start-up.
pub const MAX_FILTER_FILE: u64 = gw_xml::MAX_DOCUMENT_BYTES as u64;

/// Why the library could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A built-in does not parse: a defect of this build.
    #[error("built-in filter {name} is broken: {source}")]
    Builtin {
        /// The built-in.
        name: String,
        /// What is wrong.
        #[source]
        source: ReadError,
    },
    /// The directory could not be listed or a file not read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a valid filter.
    #[error("{}:{source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ReadError,
    },
    /// Two files define the same filter.
    #[error("{} and {} both define filter '{name}'", first.display(), second.display())]
    Duplicate {
        /// The filter's name.
        name: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
}

/// The filters a host knows: the built-ins, overlaid by a config directory.
#[derive(Debug, Clone, Default)]
pub struct Library {
    filters: BTreeMap<String, (Filter, Origin)>,
    quirks: Vec<(PathBuf, Diagnostic)>,
}

/// The namespace of the built-ins' UUIDs (a random UUID, fixed forever).
const BUILTIN_NAMESPACE: uuid::Uuid = uuid::uuid!("7f3c2a5e-4b1d-4e8a-9c6f-2d0b5a7e1c93");

/// A built-in filter's UUID: the same on every host and across restarts
/// (libvirt gives every filter one, and its clients look filters up by it;
/// libvirt's own built-ins get a random one when installed).
pub fn builtin_uuid(name: &str) -> String {
    uuid::Uuid::new_v5(&BUILTIN_NAMESPACE, name.as_bytes()).hyphenated().to_string()
}

impl Library {
    /// Only the built-ins.
    pub fn builtins() -> Result<Library, LoadError> {
        let mut lib = Library::default();
        for (name, xml) in BUILTINS {
            let mut parsed =
                read_filter(xml).map_err(|source| LoadError::Builtin { name: name.to_string(), source })?;
            parsed.value.uuid.get_or_insert_with(|| builtin_uuid(name));
            lib.filters.insert(parsed.value.name.clone(), (parsed.value, Origin::Builtin));
        }
        Ok(lib)
    }

    /// The built-ins overlaid by the `*.xml` files of `dir` (read as libvirt
    /// reads them; their quirks are kept in [`Library::quirks`]).
    pub fn with_dir(dir: &Path) -> Result<Library, LoadError> {
        let (lib, mut problems) = Library::with_dir_lenient(dir)?;
        match problems.is_empty() {
            true => Ok(lib),
            false => Err(problems.remove(0)),
        }
    }

    /// [`Library::with_dir`] for a daemon that must start whatever the
    /// directory holds: a file that cannot be read or parsed (or is not a
    /// regular file, or is larger than [`MAX_FILTER_FILE`]) is left out and
    /// reported; of two files defining one filter, `NAME.xml` wins (the
    /// name the daemon writes), else the first in name order. Bindings of a
    /// filter left out cannot compile; the daemon blocks their ports.
    pub fn with_dir_lenient(dir: &Path) -> Result<(Library, Vec<LoadError>), LoadError> {
        let io = |source| LoadError::Io { path: dir.to_path_buf(), source };
        let mut paths: Vec<PathBuf> =
            std::fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "xml"));
        paths.sort();
        let files = paths.into_iter().map(|path| {
            let text = match std::fs::symlink_metadata(&path) {
                Ok(m) if !m.file_type().is_file() => Err("not a regular file".to_string()),
                Ok(m) if m.len() > MAX_FILTER_FILE => {
                    Err(format!("{} bytes, more than the {MAX_FILTER_FILE} a filter may have", m.len()))
                }
                Ok(_) => std::fs::read_to_string(&path).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            (path, text)
        });
        Library::from_files(files)
    }

    /// The built-ins overlaid by filter files already read (`Err`: why a
    /// file could not be read), leniently as [`Library::with_dir_lenient`]:
    /// a daemon reads them with its store's safe reader and passes them here.
    pub fn from_files(
        files: impl IntoIterator<Item = (PathBuf, Result<String, String>)>,
    ) -> Result<(Library, Vec<LoadError>), LoadError> {
        let mut lib = Library::builtins()?;
        let mut problems = Vec::new();
        let mut parsed_files = Vec::new();
        for (path, text) in files {
            match text {
                Err(why) => {
                    problems.push(LoadError::Io { path, source: std::io::Error::other(format!("{why}: left out")) })
                }
                Ok(text) => match read_filter(&text) {
                    Ok(parsed) => parsed_files.push((path, parsed)),
                    Err(source) => problems.push(LoadError::Parse { path, source }),
                },
            }
        }
        let canonical = |path: &Path, name: &str| path.file_stem().is_some_and(|s| s == name);
        // NAME.xml first, so that it wins over another file naming NAME.
        parsed_files.sort_by_key(|(path, parsed)| !canonical(path, &parsed.value.name));
        for (path, parsed) in parsed_files {
            let name = parsed.value.name.clone();
            if let Some((_, Origin::File(first))) = lib.filters.get(&name) {
                problems.push(LoadError::Duplicate { name, first: first.clone(), second: path });
                continue;
            }
            lib.quirks.extend(parsed.quirks.into_iter().map(|q| (path.clone(), q)));
            lib.filters.insert(name, (parsed.value, Origin::File(path)));
        }
        Ok((lib, problems))
    }

    /// Adds or replaces one filter.
    pub fn insert(&mut self, filter: Filter, origin: Origin) {
        self.filters.insert(filter.name.clone(), (filter, origin));
    }

    /// A filter and where it comes from.
    pub fn get(&self, name: &str) -> Option<(&Filter, &Origin)> {
        self.filters.get(name).map(|(f, o)| (f, o))
    }

    /// All filters by name.
    pub fn iter(&self) -> impl Iterator<Item = (&Filter, &Origin)> {
        self.filters.values().map(|(f, o)| (f, o))
    }

    /// Quirks met while reading the config directory.
    pub fn quirks(&self) -> &[(PathBuf, Diagnostic)] {
        &self.quirks
    }
}

impl FilterSource for Library {
    fn filter(&self, name: &str) -> Option<&Filter> {
        self.filters.get(name).map(|(f, _)| f)
    }
}
