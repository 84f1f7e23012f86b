//! An in-memory nwfilter server over a Unix socket, shared by
//! `examples/memserver.rs` and the virsh test (examples cannot be spawned
//! from tests, so both include this file).

use gw_libvirt_rpc::error::{format_uuid, parse_uuid};
use gw_libvirt_rpc::{serve_blocking, Backend, BindingRef, FilterRef, RpcError};
use std::collections::BTreeMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, PoisonError};

/// Filters by name (uuid, XML) and bindings by port device (filter, XML).
#[derive(Debug, Default)]
pub struct MemBackend {
    filters: BTreeMap<String, ([u8; 16], String)>,
    bindings: BTreeMap<String, (String, String)>,
}

fn parse(xml: &str) -> Result<roxmltree::Document<'_>, RpcError> {
    roxmltree::Document::parse(xml).map_err(|e| RpcError::xml_error(&e.to_string()))
}

/// A stable UUID for a filter that names none (libvirt would pick a random
/// one; a stable one keeps this test server free of a randomness source).
fn uuid_for(name: &str) -> [u8; 16] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        for b in name.bytes().chain([i as u8]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        *o = (h >> 24) as u8;
    }
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

impl MemBackend {
    fn by_uuid(&self, uuid: &[u8; 16]) -> Result<(&String, &String), RpcError> {
        self.filters
            .iter()
            .find(|(_, (u, _))| u == uuid)
            .map(|(n, (_, x))| (n, x))
            .ok_or_else(|| RpcError::no_nwfilter_uuid(uuid))
    }
}

impl Backend for MemBackend {
    fn define_filter(&mut self, xml: &str, _validate: bool) -> Result<FilterRef, RpcError> {
        let doc = parse(xml)?;
        let root = doc.root_element();
        if root.tag_name().name() != "filter" {
            return Err(RpcError::xml_error("unknown root element for nw filter"));
        }
        let name = root.attribute("name").ok_or_else(|| RpcError::xml_error("filter has no name"))?.to_owned();
        let given = root.children().find(|n| n.has_tag_name("uuid")).and_then(|n| n.text());
        let uuid = match given {
            Some(t) => parse_uuid(t).ok_or_else(|| RpcError::xml_error("malformed uuid element"))?,
            None => self.filters.get(&name).map(|(u, _)| *u).unwrap_or_else(|| uuid_for(&name)),
        };
        self.filters.insert(name.clone(), (uuid, xml.to_owned()));
        Ok(FilterRef::new(name, uuid))
    }

    fn undefine_filter(&mut self, filter: &FilterRef) -> Result<(), RpcError> {
        let name = self.by_uuid(&filter.uuid)?.0.clone();
        if self.bindings.values().any(|(f, _)| *f == name) {
            return Err(RpcError::operation_invalid("nwfilter is in use"));
        }
        self.filters.remove(&name);
        Ok(())
    }

    fn filter_by_name(&mut self, name: &str) -> Result<FilterRef, RpcError> {
        let (u, _) = self.filters.get(name).ok_or_else(|| RpcError::no_nwfilter_name(name))?;
        Ok(FilterRef::new(name, *u))
    }

    fn filter_by_uuid(&mut self, uuid: &[u8; 16]) -> Result<FilterRef, RpcError> {
        let (n, _) = self.by_uuid(uuid)?;
        Ok(FilterRef::new(n.clone(), *uuid))
    }

    fn filter_xml(&mut self, filter: &FilterRef) -> Result<String, RpcError> {
        let (_, xml) = self.by_uuid(&filter.uuid)?;
        // Store what was given but always show the UUID, as libvirt does.
        if xml.contains("<uuid>") {
            return Ok(xml.clone());
        }
        let uuid = format_uuid(&filter.uuid);
        Ok(xml.replacen('>', &format!(">\n  <uuid>{uuid}</uuid>"), 1))
    }

    fn list_filters(&mut self) -> Result<Vec<FilterRef>, RpcError> {
        Ok(self.filters.iter().map(|(n, (u, _))| FilterRef::new(n.clone(), *u)).collect())
    }

    fn create_binding(&mut self, xml: &str, _flags: u32) -> Result<BindingRef, RpcError> {
        let doc = parse(xml)?;
        let root = doc.root_element();
        if root.tag_name().name() != "filterbinding" {
            return Err(RpcError::xml_error("unknown root element for nwfilter binding"));
        }
        let portdev = root
            .children()
            .find(|n| n.has_tag_name("portdev"))
            .and_then(|n| n.attribute("name"))
            .ok_or_else(|| RpcError::xml_error("missing portdev name"))?
            .to_owned();
        let filter = root
            .children()
            .find(|n| n.has_tag_name("filterref"))
            .and_then(|n| n.attribute("filter"))
            .ok_or_else(|| RpcError::xml_error("missing filter reference"))?
            .to_owned();
        if !self.filters.contains_key(&filter) {
            return Err(RpcError::no_nwfilter_name(&filter));
        }
        if self.bindings.contains_key(&portdev) {
            return Err(RpcError::operation_invalid(&format!("Filter binding for portdev {portdev} already exists")));
        }
        self.bindings.insert(portdev.clone(), (filter.clone(), xml.to_owned()));
        Ok(BindingRef::new(portdev, filter))
    }

    fn delete_binding(&mut self, portdev: &str) -> Result<(), RpcError> {
        self.bindings.remove(portdev).map(|_| ()).ok_or_else(|| RpcError::no_binding(portdev))
    }

    fn binding_by_port(&mut self, portdev: &str) -> Result<BindingRef, RpcError> {
        let (f, _) = self.bindings.get(portdev).ok_or_else(|| RpcError::no_binding(portdev))?;
        Ok(BindingRef::new(portdev, f.clone()))
    }

    fn binding_xml(&mut self, portdev: &str) -> Result<String, RpcError> {
        self.bindings.get(portdev).map(|(_, x)| x.clone()).ok_or_else(|| RpcError::no_binding(portdev))
    }

    fn list_bindings(&mut self) -> Result<Vec<BindingRef>, RpcError> {
        Ok(self.bindings.iter().map(|(p, (f, _))| BindingRef::new(p.clone(), f.clone())).collect())
    }
}

/// Procedure numbers seen, in order, for tests to inspect.
pub type Trace = Arc<Mutex<Vec<i32>>>;

/// Serves one client until it hangs up, closes, or breaks the framing.
pub fn serve_client(mut stream: UnixStream, backend: Arc<Mutex<MemBackend>>, trace: Trace) {
    let r = serve_blocking(&mut stream, |session, c| {
        trace.lock().unwrap_or_else(PoisonError::into_inner).push(c.header.proc);
        let mut b = backend.lock().unwrap_or_else(PoisonError::into_inner);
        session.dispatch(c, &mut *b)
    });
    if let Err(e) = r {
        eprintln!("memserver: closing client: {e}");
    }
}

/// Accepts clients forever, a thread each, sharing one backend.
pub fn serve(listener: UnixListener, trace: Trace) {
    let backend = Arc::new(Mutex::new(MemBackend::default()));
    for stream in listener.incoming().flatten() {
        let (b, t) = (backend.clone(), trace.clone());
        std::thread::spawn(move || serve_client(stream, b, t));
    }
}
