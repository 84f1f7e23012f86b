//! Fuzz the libvirt protocol session (gw-libvirt-rpc) as a client would
//! drive it: arbitrary bytes, cut into arbitrary feeds.
//!
//! Invariants checked:
//! * no input panics the session or the dispatch of what it decodes;
//! * every reply is a whole frame whose length word is its own length and
//!   at most the protocol's maximum;
//! * after a fatal error every later feed is refused too.
#![no_main]

use gw_libvirt_rpc::message::FRAME_MAX;
use gw_libvirt_rpc::{Backend, BindingRef, Event, FilterRef, RpcError, Session};
use libfuzzer_sys::fuzz_target;

/// Answers every call, some with errors, without state.
struct Echo;

impl Backend for Echo {
    fn define_filter(&mut self, xml: &str, _: bool) -> Result<FilterRef, RpcError> {
        Ok(FilterRef::new(xml.chars().take(16).collect::<String>(), [7; 16]))
    }
    fn undefine_filter(&mut self, _: &FilterRef) -> Result<(), RpcError> {
        Err(RpcError::operation_invalid("nwfilter is in use"))
    }
    fn filter_by_name(&mut self, name: &str) -> Result<FilterRef, RpcError> {
        Err(RpcError::no_nwfilter_name(name))
    }
    fn filter_by_uuid(&mut self, uuid: &[u8; 16]) -> Result<FilterRef, RpcError> {
        Ok(FilterRef::new("f", *uuid))
    }
    fn filter_xml(&mut self, f: &FilterRef) -> Result<String, RpcError> {
        Ok(format!("<filter name='{}'/>", f.name.0))
    }
    fn list_filters(&mut self) -> Result<Vec<FilterRef>, RpcError> {
        Ok(vec![FilterRef::new("a", [1; 16]), FilterRef::new("b", [2; 16])])
    }
    fn create_binding(&mut self, _: &str, _: u32) -> Result<BindingRef, RpcError> {
        Ok(BindingRef::new("vnet0", "clean-traffic"))
    }
    fn delete_binding(&mut self, port: &str) -> Result<(), RpcError> {
        Err(RpcError::no_binding(port))
    }
    fn binding_by_port(&mut self, port: &str) -> Result<BindingRef, RpcError> {
        Ok(BindingRef::new(port, "f"))
    }
    fn binding_xml(&mut self, port: &str) -> Result<String, RpcError> {
        Err(RpcError::no_binding(port))
    }
    fn list_bindings(&mut self) -> Result<Vec<BindingRef>, RpcError> {
        Ok(Vec::new())
    }
}

fn check_frame(out: &[u8]) {
    assert!(out.len() >= 28 && out.len() <= FRAME_MAX, "reply of {} bytes", out.len());
    let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
    assert_eq!(len, out.len(), "length word {len} for a frame of {}", out.len());
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the feed size, so frames split anywhere.
    let Some((&cut, rest)) = data.split_first() else { return };
    let step = usize::from(cut % 64) + 1;
    let mut session = Session::new();
    let mut failed = false;
    for chunk in rest.chunks(step) {
        match session.feed(chunk) {
            Ok(()) => assert!(!failed, "a feed after a fatal error was accepted"),
            Err(_) => {
                failed = true;
                continue;
            }
        }
        while let Some(ev) = session.next_call() {
            let out = match ev {
                Event::Send(b) => b,
                Event::Call(c) => session.dispatch(c, &mut Echo),
            };
            check_frame(&out);
        }
    }
});
