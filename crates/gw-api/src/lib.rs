//! guestwall's daemon API.
//!
//! The protocol is one JSON [`Request`] per connection, written as a single
//! line, answered by one JSON [`Response`] line. It needs no HTTP stack: the
//! socket is local, root-only, and carries small documents; a line of JSON is
//! the whole framing (see the justification in the guide: no hand-rolled
//! HTTP). Versioned by [`API_VERSION`].
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The protocol version a client speaks.
pub const API_VERSION: u32 = 1;

/// The default socket path.
pub const DEFAULT_SOCKET: &str = "/run/guestwall/guestwall.sock";

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Define (or redefine) a filter from its XML.
    FilterDefine {
        /// The filter's XML.
        xml: String,
        /// Accept what libvirt would ignore or change (warnings instead of errors).
        #[serde(default)]
        libvirt_quirks: bool,
    },
    /// Remove a filter defined in the config directory.
    FilterUndefine {
        /// Its name.
        name: String,
    },
    /// List the filters.
    FilterList,
    /// A filter's XML.
    FilterDumpxml {
        /// Its name.
        name: String,
    },
    /// Bind a filter to a port.
    BindingCreate {
        /// The `<filterbinding>` XML or JSON.
        document: String,
    },
    /// Bind several ports in one transaction (all or none).
    BindingCreateBatch {
        /// The `<filterbinding>` XML or JSON documents.
        documents: Vec<String>,
    },
    /// Remove a port's binding.
    BindingDelete {
        /// The port.
        portdev: String,
    },
    /// List the bindings.
    BindingList,
    /// A binding's XML.
    BindingDumpxml {
        /// The port.
        portdev: String,
    },
    /// Re-apply everything (as SIGHUP does).
    Reload,
    /// The daemon's status.
    Status,
}

/// A request with its protocol version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// [`API_VERSION`].
    pub version: u32,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// A stable error code, for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The document is not valid.
    Invalid,
    /// No such filter or binding.
    NotFound,
    /// The name or port is taken.
    Exists,
    /// It is used by something else.
    InUse,
    /// The kernel refused the rules.
    Kernel,
    /// The caller is not allowed.
    Denied,
    /// The daemon could not write its state.
    Storage,
    /// The request is not understood.
    BadRequest,
}

/// What went wrong, with the chain of reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// One line per problem (`FILE:LINE:COL: ...` for documents).
    pub messages: Vec<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.messages.join("\n"))
    }
}

/// One filter in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterInfo {
    /// Its name.
    pub name: String,
    /// `builtin` or `defined`.
    pub origin: String,
    /// Its chain.
    pub chain: String,
    /// Its UUID.
    pub uuid: Option<String>,
}

/// One binding in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingInfo {
    /// The port.
    pub portdev: String,
    /// The filter.
    pub filter: String,
    /// The guest.
    pub owner: String,
    /// Whether the port exists and is filtered now.
    pub active: bool,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Done, nothing to report.
    Ok {
        /// What happened, for humans.
        message: String,
        /// Warnings (libvirt quirks accepted on request).
        #[serde(default)]
        warnings: Vec<String>,
    },
    /// An XML document.
    Xml {
        /// The document.
        xml: String,
    },
    /// Filters.
    Filters {
        /// The filters by name.
        filters: Vec<FilterInfo>,
    },
    /// Bindings.
    Bindings {
        /// The bindings by port.
        bindings: Vec<BindingInfo>,
    },
    /// Status lines.
    Status {
        /// What the daemon says of itself.
        lines: Vec<String>,
    },
    /// A failure.
    Error(ApiError),
}

/// The client could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to guestwalld at {path}: {source}{hint}")]
    Connect {
        /// The socket path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// Talking to the daemon failed.
    #[error("talking to guestwalld: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not understood.
    #[error("guestwalld answered something this client does not understand: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends one request and waits for the answer.
pub fn call(socket: &Path, request: Request) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::PermissionDenied => " (guestwalld accepts only root)",
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => " (is guestwalld running?)",
            _ => "",
        };
        ClientError::Connect { path: socket.display().to_string(), source, hint }
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_string(&Envelope { version: API_VERSION, request })?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer)?)
}
