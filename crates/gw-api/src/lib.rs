//! guestwall's daemon API.
//!
//! The protocol is one JSON [`Request`] per connection, written as a single
//! line, answered by one JSON [`Response`] line. It needs no HTTP stack: the
//! socket is local, root-only, and carries small documents; a line of JSON is
//! the whole framing (see the justification in the guide: no hand-rolled
//! HTTP). Versioned by [`API_VERSION`].
//!
//! Both ends frame and decode through this crate: the daemon reads at most
//! [`REQUEST_READ_LIMIT`] bytes up to the first newline, decodes them with
//! [`decode_request`] and answers with [`encode_response`]; the client sends
//! [`encode_request`] and decodes the answer in [`call`].
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, ErrorKind, Write};
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
        /// Runtime state (libvirt's bindings of running guests): kept under
        /// /run, gone after a reboot, and deleted when its port goes away.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        runtime: bool,
    },
    /// Bind several ports in one transaction (all or none).
    BindingCreateBatch {
        /// The `<filterbinding>` XML or JSON documents.
        documents: Vec<String>,
        /// As for [`Request::BindingCreate`].
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        runtime: bool,
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

/// The longest request line the daemon accepts, in bytes, not counting its
/// newline.
///
/// The largest legitimate request is a [`Request::BindingCreateBatch`]: a
/// batch of 10,000 bindings is about 5-10 MB of JSON (each `<filterbinding>`
/// document is half a kilobyte to a kilobyte once escaped). 64 MiB
/// leaves six times that headroom, yet bounds what one connection can make
/// the daemon buffer: the line itself, then its decoded copy, a few hundred
/// megabytes at worst rather than whatever a runaway writer sends. A longer
/// line is refused with a [`ErrorCode::BadRequest`] that says so (see
/// [`decode_request`]); [`call`] refuses to send one at all.
pub const MAX_REQUEST_LEN: usize = 64 * 1024 * 1024;

/// How many bytes the daemon reads from a connection at most: one more than
/// [`MAX_REQUEST_LEN`], so that a line of exactly `MAX_REQUEST_LEN` bytes
/// keeps its newline and a longer one is seen to be too long.
///
/// With tokio, read one request like this (the `take` is what bounds memory;
/// [`decode_request`] then refuses a line that reached the limit without
/// ending):
///
/// ```ignore
/// use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
/// let mut line = Vec::new();
/// BufReader::new(read_half.take(gw_api::REQUEST_READ_LIMIT)).read_until(b'\n', &mut line).await?;
/// if line.is_empty() {
///     return Ok(()); // connected and closed without asking anything
/// }
/// let response = match gw_api::decode_request(&line) {
///     Ok(request) => handle(request),
///     Err(e) => gw_api::Response::Error(e),
/// };
/// write_half.write_all(&gw_api::encode_response(&response)).await?;
/// ```
///
/// Read bytes (`read_until`), not a `String` (`read_line`): `read_line`
/// fails on invalid UTF-8 before anything can be answered, where
/// [`decode_request`] answers with the offset of the bad byte.
pub const REQUEST_READ_LIMIT: u64 = MAX_REQUEST_LEN as u64 + 1;

fn bad_request(message: String) -> ApiError {
    ApiError { code: ErrorCode::BadRequest, messages: vec![message] }
}

fn unsupported_version(version: u32) -> ApiError {
    bad_request(format!("API version {version} is not supported (this daemon speaks {API_VERSION})"))
}

/// The longest part of a JSON error message, in characters, taken from the
/// request itself (serde_json quotes an unknown `op` or a value of the wrong
/// type whole, which can be megabytes).
const MAX_QUOTED: usize = 512;

/// `text` as one line of at most [`MAX_QUOTED`] characters (and an
/// ellipsis): control characters and line separators, which serde_json
/// quotes decoded from the request, are escaped.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX_QUOTED {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// `serde_json`'s message without the position it puts last (" at line L
/// column C"), for callers that show the position first, as
/// `FILE:LINE:COL: what` (the position is `e.line()`, `e.column()`; a line
/// of 0 means the error has none). Not shortened: see [`decode_request`]
/// for a request's one-line form.
pub fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if e.line() == 0 {
        return text;
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(what) => what.to_string(),
        None => text,
    }
}

/// `serde_json`'s message as `LINE:COL: what` (its own text puts the
/// position last, as " at line L column C"), on one line.
fn json_error(e: &serde_json::Error) -> ApiError {
    let what = one_line(&json_message(e));
    if e.line() == 0 {
        return bad_request(format!("bad request: {what}"));
    }
    // Columns count from 1; serde_json says 0 for an error on the first byte
    // found before reading it (a top-level array, say).
    bad_request(format!("bad request: {}:{}: {what}", e.line(), e.column().max(1)))
}

/// Decodes one request line: the bytes the daemon read up to and including
/// the first newline (the newline may be missing, as when the client closed
/// its end after writing).
///
/// Every refusal is an [`ErrorCode::BadRequest`] with one message:
/// - a line longer than [`MAX_REQUEST_LEN`] (newline not counted);
/// - an empty line;
/// - bytes that are not UTF-8, naming the offset of the first bad byte;
/// - a newline before the end (a request is exactly one line; the client
///   never writes one, JSON strings escape theirs);
/// - JSON that is not a request, as `LINE:COL: what` (one line, however
///   much of the request serde_json quotes);
/// - a version other than [`API_VERSION`], checked before the request
///   itself, so a newer client asking for an operation this daemon lacks
///   learns about the version, not about an unknown `op`.
///
/// It never panics, whatever the bytes (fuzzed by `fuzz/fuzz_targets/request.rs`).
pub fn decode_request(line: &[u8]) -> Result<Request, ApiError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.len() > MAX_REQUEST_LEN {
        return Err(bad_request(format!(
            "bad request: longer than the limit of {MAX_REQUEST_LEN} bytes (64 MiB); send large batches in parts"
        )));
    }
    if line.is_empty() {
        return Err(bad_request("bad request: empty request".to_string()));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        bad_request(format!("bad request: invalid UTF-8 at byte offset {} (a request is UTF-8 JSON)", e.valid_up_to()))
    })?;
    if let Some(at) = text.find('\n') {
        return Err(bad_request(format!(
            "bad request: newline at byte offset {at}, before the end of the request (a request is one line)"
        )));
    }
    match serde_json::from_str::<Envelope>(text) {
        Ok(env) if env.version == API_VERSION => Ok(env.request),
        Ok(env) => Err(unsupported_version(env.version)),
        Err(e) => {
            // Only the version, to tell a request of another version (whose
            // body this daemon may not know) from a malformed one.
            #[derive(Deserialize)]
            struct Version {
                version: u32,
            }
            match serde_json::from_str::<Version>(text) {
                Ok(v) if v.version != API_VERSION => Err(unsupported_version(v.version)),
                _ => Err(json_error(&e)),
            }
        }
    }
}

/// An [`Envelope`] by reference, to encode a request without moving it.
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    version: u32,
    #[serde(flatten)]
    request: &'a Request,
}

/// One request line as the client sends it: `{"version":1,"op":...}` and a
/// newline.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let mut line = serde_json::to_vec(&EnvelopeRef { version: API_VERSION, request })
        // Only strings, booleans, sequences and structs with string keys:
        // serde_json cannot fail on those.
        .expect("a Request always encodes as JSON");
    line.push(b'\n');
    line
}

/// One response line as the daemon sends it: JSON and a newline.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(response)
        // Only strings, booleans, sequences, options and structs with string
        // keys: serde_json cannot fail on those.
        .expect("a Response always encodes as JSON");
    line.push(b'\n');
    line
}

/// The hint every "no answer" error ends with.
const MAY_HAVE_APPLIED: &str = "the change may or may not have been applied (check with `guestwall status`, \
                                `guestwall binding list` or `guestwall filter list`)";

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
    /// The request is longer than the daemon accepts ([`MAX_REQUEST_LEN`]);
    /// nothing was sent.
    #[error(
        "the request is {len} bytes, over guestwalld's limit of {MAX_REQUEST_LEN} bytes (64 MiB); \
         nothing was sent: send the bindings in smaller batches"
    )]
    TooLarge {
        /// The request's length, newline not counted.
        len: usize,
    },
    /// The daemon closed the connection, or it was reset, before a whole
    /// answer line arrived: it may have died while handling the request.
    ///
    /// What happened is kept as text, not as a source error: a lost
    /// connection must never read as the client's own closed stdout
    /// (`guestwall ... | head`, which the command line ends on quietly).
    #[error("guestwalld went away before answering ({what}); {MAY_HAVE_APPLIED}")]
    DaemonGone {
        /// What the client saw: no answer, part of one, a reset.
        what: String,
    },
    /// Talking to the daemon failed.
    #[error("talking to guestwalld: {0}")]
    Io(#[from] std::io::Error),
    /// A whole answer line arrived that is not a [`Response`].
    #[error("guestwalld answered something this client does not understand: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Whether an I/O error means the daemon's end of the connection is gone.
fn is_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof
    )
}

/// Reads the answer line and decodes it; a missing or partial line is
/// [`ClientError::DaemonGone`].
fn read_response(stream: UnixStream) -> Result<Response, ClientError> {
    let mut answer = Vec::new();
    match BufReader::new(stream).read_until(b'\n', &mut answer) {
        Ok(_) => {}
        Err(e) if is_gone(&e) => {
            let what = match answer.len() {
                0 => format!("connection lost with no answer: {e}"),
                n => format!("connection lost after {n} bytes of an answer: {e}"),
            };
            return Err(ClientError::DaemonGone { what });
        }
        Err(e) => return Err(e.into()),
    }
    if answer.last() != Some(&b'\n') {
        let what = match answer.len() {
            0 => "connection closed with no answer".to_string(),
            n => format!("connection closed after {n} bytes of an answer, before its end"),
        };
        return Err(ClientError::DaemonGone { what });
    }
    Ok(serde_json::from_slice(&answer)?)
}

/// Sends one request and waits for the answer.
pub fn call(socket: &Path, request: Request) -> Result<Response, ClientError> {
    let line = encode_request(&request);
    drop(request);
    if line.len() - 1 > MAX_REQUEST_LEN {
        return Err(ClientError::TooLarge { len: line.len() - 1 });
    }
    let mut stream = UnixStream::connect(socket).map_err(|source| {
        let hint = match source.kind() {
            ErrorKind::PermissionDenied => " (guestwalld accepts only root)",
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => " (is guestwalld running?)",
            _ => "",
        };
        ClientError::Connect { path: socket.display().to_string(), source, hint }
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    if let Err(e) = stream.write_all(&line) {
        if !is_gone(&e) {
            return Err(e.into());
        }
        // The daemon stopped reading: it may have answered first (a refusal),
        // and what it wrote before closing can still be read.
        return read_response(stream).map_err(|r| match r {
            ClientError::DaemonGone { .. } | ClientError::Io(_) => {
                ClientError::DaemonGone { what: format!("it stopped reading the request: {e}") }
            }
            other => other,
        });
    }
    read_response(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;

    fn every_request() -> Vec<Request> {
        vec![
            Request::FilterDefine { xml: "<filter name='a' chain='root'/>\n\"é\"".into(), libvirt_quirks: true },
            Request::FilterDefine { xml: String::new(), libvirt_quirks: false },
            Request::FilterUndefine { name: "a".into() },
            Request::FilterList,
            Request::FilterDumpxml { name: "clean-traffic".into() },
            Request::BindingCreate { document: "<filterbinding/>".into(), runtime: false },
            Request::BindingCreate { document: "<filterbinding/>".into(), runtime: true },
            Request::BindingCreateBatch { documents: vec!["<filterbinding/>".into(), "{}".into()], runtime: false },
            Request::BindingCreateBatch { documents: vec![], runtime: true },
            Request::BindingDelete { portdev: "vnet0".into() },
            Request::BindingList,
            Request::BindingDumpxml { portdev: "vnet0".into() },
            Request::Reload,
            Request::Status,
        ]
    }

    /// The one message of a refusal, which must be a bad request.
    fn refusal(line: &[u8]) -> String {
        let e = decode_request(line).expect_err("should be refused");
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.messages.len(), 1, "{:?}", e.messages);
        e.messages[0].clone()
    }

    #[test]
    fn every_request_round_trips() {
        for request in every_request() {
            let line = encode_request(&request);
            assert_eq!(line.last(), Some(&b'\n'));
            assert!(!line[..line.len() - 1].contains(&b'\n'), "one line: {}", String::from_utf8_lossy(&line));
            assert_eq!(decode_request(&line), Ok(request.clone()));
            assert_eq!(decode_request(&line[..line.len() - 1]), Ok(request), "without its newline");
        }
    }

    #[test]
    fn wire_format_is_unchanged() {
        assert_eq!(encode_request(&Request::Reload), b"{\"version\":1,\"op\":\"reload\"}\n");
        assert_eq!(
            encode_request(&Request::BindingDelete { portdev: "vnet0".into() }),
            b"{\"version\":1,\"op\":\"binding_delete\",\"portdev\":\"vnet0\"}\n"
        );
        // What the client of before this crate's encoder wrote, and any order.
        assert_eq!(decode_request(b"{\"op\":\"status\",\"version\":1}\r\n"), Ok(Request::Status));
        assert_eq!(
            decode_request(b"{\"version\":1,\"op\":\"filter_define\",\"xml\":\"x\"}\n"),
            Ok(Request::FilterDefine { xml: "x".into(), libvirt_quirks: false })
        );
    }

    #[test]
    fn every_response_round_trips() {
        let responses = [
            Response::Ok { message: "done".into(), warnings: vec!["w".into()] },
            Response::Xml { xml: "<filter/>\n".into() },
            Response::Filters {
                filters: vec![FilterInfo {
                    name: "a".into(),
                    origin: "builtin".into(),
                    chain: "root".into(),
                    uuid: None,
                }],
            },
            Response::Bindings {
                bindings: vec![BindingInfo {
                    portdev: "vnet0".into(),
                    filter: "a".into(),
                    owner: "vm".into(),
                    active: true,
                }],
            },
            Response::Status { lines: vec!["ok".into()] },
            Response::Error(ApiError { code: ErrorCode::InUse, messages: vec!["used by b".into()] }),
        ];
        for response in responses {
            let line = encode_response(&response);
            assert_eq!(line.last(), Some(&b'\n'));
            assert!(!line[..line.len() - 1].contains(&b'\n'));
            assert_eq!(serde_json::from_slice::<Response>(&line).unwrap(), response);
        }
    }

    #[test]
    fn json_message_leaves_the_position_to_the_caller() {
        let e = serde_json::from_str::<FilterInfo>("{\"name\": 1}").unwrap_err();
        let m = json_message(&e);
        assert!(m.starts_with("invalid type: integer `1`"), "{m}");
        assert!(!m.contains("line") && !m.contains("column"), "the position is said once, by the caller: {m}");
        assert_eq!((e.line(), e.column()), (1, 10));
    }

    #[test]
    fn invalid_utf8_names_its_offset() {
        let mut line = b"{\"version\":1,\"op\":\"filter_dumpxml\",\"name\":\"a".to_vec();
        let at = line.len();
        line.extend_from_slice(b"\xff\"}\n");
        let m = refusal(&line);
        assert!(m.contains("invalid UTF-8") && m.contains(&format!("byte offset {at}")), "{m}");
        // A truncated multi-byte character at the very end.
        let m = refusal(b"{\"version\":1,\"op\":\"status\"}\xc3");
        assert!(m.contains("byte offset 27"), "{m}");
    }

    #[test]
    fn at_the_length_limit_is_accepted() {
        let head = br#"{"version":1,"op":"filter_define","xml":""#;
        let tail = br#""}"#;
        let mut line = Vec::with_capacity(MAX_REQUEST_LEN + 2);
        line.extend_from_slice(head);
        line.resize(MAX_REQUEST_LEN - tail.len(), b'a');
        line.extend_from_slice(tail);
        assert_eq!(line.len(), MAX_REQUEST_LEN);
        let xml_len = MAX_REQUEST_LEN - head.len() - tail.len();
        let check = |r: Result<Request, ApiError>| match r {
            Ok(Request::FilterDefine { xml, libvirt_quirks: false }) => assert_eq!(xml.len(), xml_len),
            other => panic!("{:?}", other.map(|_| ())),
        };
        check(decode_request(&line));
        line.push(b'\n');
        assert_eq!(line.len() as u64, REQUEST_READ_LIMIT, "the newline fits in what the daemon reads");
        check(decode_request(&line));
    }

    #[test]
    fn one_past_the_length_limit_is_refused() {
        // Valid JSON (trailing spaces are whitespace), one byte too long.
        let mut line = br#"{"version":1,"op":"status"}"#.to_vec();
        line.resize(MAX_REQUEST_LEN + 1, b' ');
        assert_eq!(line.len() as u64, REQUEST_READ_LIMIT, "what the daemon reads of a longer line");
        let m = refusal(&line);
        assert!(m.contains("longer than the limit") && m.contains(&MAX_REQUEST_LEN.to_string()), "{m}");
        line.push(b'\n');
        assert!(refusal(&line).contains("longer than the limit"));
    }

    #[test]
    fn wrong_version_is_refused() {
        let m = refusal(b"{\"version\":2,\"op\":\"status\"}\n");
        assert_eq!(m, "API version 2 is not supported (this daemon speaks 1)");
        // Even when the body is not one this version knows.
        let m = refusal(b"{\"version\":7,\"op\":\"frobnicate\",\"how\":[1]}\n");
        assert_eq!(m, "API version 7 is not supported (this daemon speaks 1)");
        assert!(refusal(b"{\"op\":\"status\"}").contains("missing field `version`"));
        assert!(refusal(b"{\"version\":-1,\"op\":\"status\"}").contains("1:"));
    }

    #[test]
    fn garbage_is_refused_with_line_and_column() {
        assert_eq!(refusal(b"hello\n"), "bad request: 1:1: expected value");
        let m = refusal(b"{\"version\":1,\"op\":\"frobnicate\"}");
        assert!(m.starts_with("bad request: 1:") && m.contains("unknown variant `frobnicate`"), "{m}");
        let m = refusal(b"{\"version\":1,\"op\":\"status\"} {}");
        assert!(m.starts_with("bad request: 1:29: trailing characters"), "{m}");
        let m = refusal(b"{\"version\":1,\"op\":\"binding_delete\"}");
        assert!(m.contains("missing field `portdev`"), "{m}");
        assert_eq!(refusal(b""), "bad request: empty request");
        assert_eq!(refusal(b"\n"), "bad request: empty request");
        let m = refusal(b"{\"version\":1,\n\"op\":\"status\"}\n");
        assert!(m.contains("newline at byte offset 13"), "{m}");
        let deep = [b"[".repeat(100_000), b"]".repeat(100_000)].concat();
        let m = refusal(&deep);
        assert!(m.starts_with("bad request: 1:1: invalid type: sequence"), "{m}");
        let deep = [br#"{"version":1,"op":"status","x":"#.to_vec(), b"[".repeat(100_000)].concat();
        let m = refusal(&deep);
        assert!(m.starts_with("bad request: 1:") && m.contains("recursion limit exceeded"), "{m}");
        // serde_json quotes the request: the message stays one short line.
        let m = refusal(b"{\"version\":1,\"op\":\"a\\nb\\u001b[2Jc\\u2028\"}");
        assert!(m.contains("unknown variant `a\\nb\\u{1b}[2Jc\\u{2028}`"), "{m}");
        let long =
            format!(r#"{{"version":1,"op":"filter_define","xml":"","libvirt_quirks":"{}"}}"#, "é".repeat(1 << 20));
        let m = refusal(long.as_bytes());
        assert!(m.len() < 2 * MAX_QUOTED + 100 && m.contains("invalid type: string") && m.ends_with('…'), "{m}");
        refusal(b"\0\x01\x02");
        refusal(b"{\"version\":1,\"op\":\"binding_create_batch\",\"documents\":[1]}");
    }

    /// A socket in a directory of its own, served by `daemon` on a thread
    /// for one connection.
    fn serve_once(
        name: &str,
        daemon: impl FnOnce(UnixStream) + Send + 'static,
    ) -> (PathBuf, std::thread::JoinHandle<()>) {
        let dir = std::env::temp_dir().join(format!("gw-api-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("guestwall.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            daemon(stream);
        });
        (path, server)
    }

    /// Calls `request` on a daemon that does `daemon`, then cleans up.
    fn call_on(
        name: &str,
        request: Request,
        daemon: impl FnOnce(UnixStream) + Send + 'static,
    ) -> Result<Response, ClientError> {
        let (path, server) = serve_once(name, daemon);
        let r = call(&path, request);
        server.join().unwrap();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        r
    }

    fn read_request(stream: &UnixStream) -> Request {
        let mut line = Vec::new();
        BufReader::new(stream).read_until(b'\n', &mut line).unwrap();
        decode_request(&line).unwrap()
    }

    fn assert_gone(r: Result<Response, ClientError>, what: &str) {
        match r {
            Err(e @ ClientError::DaemonGone { .. }) => {
                let m = e.to_string();
                assert!(m.contains("went away before answering") && m.contains("may or may not have been applied"));
                assert!(m.contains(what), "{m}");
            }
            other => panic!("expected DaemonGone, got {other:?}"),
        }
    }

    #[test]
    fn client_daemon_closes_without_answering() {
        let r = call_on("close", Request::Reload, |s| {
            assert_eq!(read_request(&s), Request::Reload);
        });
        assert_gone(r, "connection closed with no answer");
    }

    #[test]
    fn client_daemon_closes_after_half_a_line() {
        let r = call_on("half", Request::Status, |mut s| {
            read_request(&s);
            s.write_all(b"{\"status\":{\"lines\":[\"up").unwrap();
        });
        assert_gone(r, "after 23 bytes of an answer");
    }

    #[test]
    fn client_connection_reset() {
        // Closing with the request unread resets the connection.
        let r = call_on("reset", Request::BindingList, |mut s| {
            s.read_exact(&mut [0; 1]).unwrap();
        });
        assert_gone(r, "connection lost with no answer");
    }

    #[test]
    fn client_daemon_answers_then_stops_reading() {
        // The daemon refuses early and closes while the client still
        // writes: the client reads the refusal.
        let big = Request::FilterDefine { xml: "a".repeat(4 << 20), libvirt_quirks: false };
        let refusal = Response::Error(ApiError { code: ErrorCode::BadRequest, messages: vec!["too long".into()] });
        let answer = encode_response(&refusal);
        let r = call_on("early", big, move |mut s| {
            s.read_exact(&mut [0; 16]).unwrap();
            s.write_all(&answer).unwrap();
        });
        assert_eq!(r.unwrap(), refusal);
    }

    #[test]
    fn client_does_not_understand_a_whole_line() {
        let r = call_on("garbage", Request::Status, |mut s| {
            read_request(&s);
            s.write_all(b"{\"what\":1}\n").unwrap();
        });
        match r {
            Err(e @ ClientError::Decode(_)) => assert!(e.to_string().contains("does not understand"), "{e}"),
            other => panic!("expected Decode, got {other:?}"),
        }
    }

    #[test]
    fn client_gets_the_answer() {
        let answer = Response::Status { lines: vec!["up".into()] };
        let line = encode_response(&answer);
        let r = call_on("answer", Request::Status, move |mut s| {
            assert_eq!(read_request(&s), Request::Status);
            s.write_all(&line).unwrap();
        });
        assert_eq!(r.unwrap(), answer);
    }

    #[test]
    fn client_refuses_a_request_over_the_limit() {
        let huge = Request::BindingCreate { document: "a".repeat(MAX_REQUEST_LEN), runtime: false };
        let r = call(Path::new("/nonexistent/guestwall.sock"), huge);
        assert!(matches!(r, Err(ClientError::TooLarge { len }) if len > MAX_REQUEST_LEN), "{r:?}");
    }
}
