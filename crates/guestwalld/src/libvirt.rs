//! libvirt's RPC protocol for the nwfilter driver, served on its own socket
//! (by default virtnwfilterd's), so that virsh, libvirt-python and
//! virtqemud reach guestwall as they would reach virtnwfilterd.
//!
//! The wire is `gw_libvirt_rpc`'s; this module is only its I/O and the
//! [`Backend`] that turns each call into the same [`Request`] the daemon's
//! own API sends through the reconciler's inbox: the two front doors share
//! every check, and neither writes anything itself.
//!
//! Each client gets a thread of its own with blocking I/O: libvirt's
//! clients are few and long-lived (virtqemud holds one connection for as
//! long as it runs), and a blocking loop keeps the session's framing
//! simple. At most `max_clients` are served at once; more are closed.

use crate::events::Inbox;
use gw_api::{ApiError, ErrorCode, Request, Response};
use gw_libvirt_rpc::error::{format_uuid, parse_uuid};
use gw_libvirt_rpc::{serve_blocking, Backend, BindingRef, FilterRef, RpcError};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tracing::{info, warn};

/// Serves libvirt's clients on `listener` until the process ends.
pub fn serve(listener: UnixListener, inbox: Inbox, max_clients: usize) -> std::io::Result<()> {
    let clients = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("libvirt-accept".into()).spawn(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    warn!("libvirt socket: accepting a connection failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
            };
            if clients.fetch_add(1, Ordering::SeqCst) >= max_clients {
                clients.fetch_sub(1, Ordering::SeqCst);
                warn!("libvirt socket: {max_clients} clients already; closing a new one");
                continue;
            }
            let (inbox, clients) = (inbox.clone(), clients.clone());
            let spawned = std::thread::Builder::new().name("libvirt-client".into()).spawn(move || {
                serve_client(stream, &inbox);
                clients.fetch_sub(1, Ordering::SeqCst);
            });
            if let Err(e) = spawned {
                warn!("libvirt socket: no thread for a client: {e}");
            }
        }
    })?;
    Ok(())
}

fn peer_uid(stream: &UnixStream) -> u32 {
    use std::os::fd::AsFd;
    nix::sys::socket::getsockopt(&stream.as_fd(), nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.uid())
        .unwrap_or(u32::MAX)
}

/// One client, until it hangs up, closes, or breaks the framing.
fn serve_client(mut stream: UnixStream, inbox: &Inbox) {
    let uid = peer_uid(&stream);
    if uid != 0 {
        // virtnwfilterd's socket is root-only too; the file mode already
        // keeps others out, this is the second lock.
        warn!("libvirt socket: refused a client with uid {uid}");
        return;
    }
    let mut backend = Daemon { inbox };
    if let Err(e) = serve_blocking(&mut stream, |session, call| session.dispatch(call, &mut backend)) {
        warn!("libvirt socket: closing a client: {e}");
    }
}

/// The daemon behind the protocol: every call is a request to the
/// reconciler.
struct Daemon<'a> {
    inbox: &'a Inbox,
}

fn joined(e: &ApiError) -> String {
    e.messages.join("; ")
}

/// A document guestwall cannot read, as libvirt's XML error (one line:
/// virsh prints it after "error: ").
fn xml_error(e: &gw_xml::ReadError) -> RpcError {
    RpcError::xml_error(&e.errors.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "))
}

/// Errors the daemon gives for any request, as libvirt reports them.
fn general(e: ApiError) -> RpcError {
    match e.code {
        ErrorCode::Invalid => RpcError::xml_error(&joined(&e)),
        ErrorCode::InUse => RpcError::operation_invalid(&joined(&e)),
        ErrorCode::Exists => RpcError::operation_failed(&joined(&e)),
        ErrorCode::Denied => RpcError::operation_invalid(&joined(&e)),
        ErrorCode::BadRequest => RpcError::invalid_arg(&joined(&e)),
        ErrorCode::NotFound | ErrorCode::Kernel | ErrorCode::Storage => RpcError::internal(&joined(&e)),
    }
}

impl Daemon<'_> {
    fn ask(&self, req: Request) -> Result<Response, ApiError> {
        match self.inbox.request_blocking(req) {
            Response::Error(e) => Err(e),
            r => Ok(r),
        }
    }

    fn filters(&self) -> Result<Vec<FilterRef>, RpcError> {
        match self.ask(Request::FilterList).map_err(general)? {
            Response::Filters { filters } => Ok(filters
                .into_iter()
                .filter_map(|f| {
                    // Every filter has one (built-ins a stable one); a
                    // hand-written file with a malformed one is left out
                    // rather than shown under a made-up UUID.
                    let uuid = parse_uuid(f.uuid.as_deref()?)?;
                    Some(FilterRef::new(f.name, uuid))
                })
                .collect()),
            other => Err(RpcError::internal(&format!("unexpected answer to a filter list: {other:?}"))),
        }
    }

    fn bindings(&self) -> Result<Vec<gw_api::BindingInfo>, RpcError> {
        match self.ask(Request::BindingList).map_err(general)? {
            Response::Bindings { bindings } => Ok(bindings),
            other => Err(RpcError::internal(&format!("unexpected answer to a binding list: {other:?}"))),
        }
    }

    fn xml(&self, req: Request) -> Result<String, ApiError> {
        match self.ask(req)? {
            Response::Xml { xml } => Ok(xml),
            other => Err(ApiError { code: ErrorCode::Kernel, messages: vec![format!("unexpected answer: {other:?}")] }),
        }
    }
}

impl Backend for Daemon<'_> {
    fn define_filter(&mut self, xml: &str, _validate: bool) -> Result<FilterRef, RpcError> {
        // guestwall always checks a filter in full (VALIDATE adds nothing).
        // The name is read here to find the filter's UUID afterwards; the
        // daemon reads the document again, as it reads every request.
        let name = gw_xml::read_filter(xml).map_err(|e| xml_error(&e))?.value.name;
        // libvirt's clients expect libvirt's reading of the document.
        self.ask(Request::FilterDefine { xml: xml.to_string(), libvirt_quirks: true }).map_err(general)?;
        info!("libvirt: filter {name} defined");
        self.filter_by_name(&name)
    }

    fn undefine_filter(&mut self, filter: &FilterRef) -> Result<(), RpcError> {
        let found = self.filter_by_uuid(&filter.uuid)?;
        self.ask(Request::FilterUndefine { name: found.name.0.clone() }).map_err(|e| match e.code {
            // libvirt's words for both: a filter still referenced.
            ErrorCode::InUse => RpcError::operation_invalid("nwfilter is in use"),
            _ => general(e),
        })?;
        Ok(())
    }

    fn filter_by_name(&mut self, name: &str) -> Result<FilterRef, RpcError> {
        self.filters()?.into_iter().find(|f| f.name.0 == name).ok_or_else(|| RpcError::no_nwfilter_name(name))
    }

    fn filter_by_uuid(&mut self, uuid: &[u8; 16]) -> Result<FilterRef, RpcError> {
        self.filters()?.into_iter().find(|f| f.uuid == *uuid).ok_or_else(|| RpcError::no_nwfilter_uuid(uuid))
    }

    fn filter_xml(&mut self, filter: &FilterRef) -> Result<String, RpcError> {
        let found = self.filter_by_uuid(&filter.uuid)?;
        self.xml(Request::FilterDumpxml { name: found.name.0.clone() }).map_err(|e| match e.code {
            ErrorCode::NotFound => {
                RpcError::no_nwfilter(&format!("no nwfilter with matching uuid '{}'", format_uuid(&filter.uuid)))
            }
            _ => general(e),
        })
    }

    fn list_filters(&mut self) -> Result<Vec<FilterRef>, RpcError> {
        self.filters()
    }

    fn create_binding(&mut self, xml: &str, _flags: u32) -> Result<BindingRef, RpcError> {
        let b = gw_xml::read_binding(xml).map_err(|e| xml_error(&e))?.value;
        let port = b.portdev.to_string();
        // libvirt's bindings are its running guests' runtime state.
        self.ask(Request::BindingCreate { document: xml.to_string(), runtime: true }).map_err(|e| match e.code {
            ErrorCode::Exists => RpcError::operation_failed(&format!("binding '{port}' already exists")),
            ErrorCode::NotFound => {
                RpcError::internal(&format!("referenced filter '{}' is missing", b.filterref.filter))
            }
            _ => general(e),
        })?;
        info!("libvirt: binding {port} -> {} created", b.filterref.filter);
        Ok(BindingRef::new(port, b.filterref.filter))
    }

    fn delete_binding(&mut self, portdev: &str) -> Result<(), RpcError> {
        self.ask(Request::BindingDelete { portdev: portdev.to_string() }).map_err(|e| match e.code {
            ErrorCode::NotFound | ErrorCode::Invalid => RpcError::no_binding(portdev),
            _ => general(e),
        })?;
        info!("libvirt: binding {portdev} deleted");
        Ok(())
    }

    fn binding_by_port(&mut self, portdev: &str) -> Result<BindingRef, RpcError> {
        self.bindings()?
            .into_iter()
            .find(|b| b.portdev == portdev)
            .map(|b| BindingRef::new(b.portdev, b.filter))
            .ok_or_else(|| RpcError::no_binding(portdev))
    }

    fn binding_xml(&mut self, portdev: &str) -> Result<String, RpcError> {
        self.xml(Request::BindingDumpxml { portdev: portdev.to_string() }).map_err(|e| match e.code {
            ErrorCode::NotFound => RpcError::no_binding(portdev),
            _ => general(e),
        })
    }

    fn list_bindings(&mut self) -> Result<Vec<BindingRef>, RpcError> {
        Ok(self.bindings()?.into_iter().map(|b| BindingRef::new(b.portdev, b.filter)).collect())
    }
}
