//! Session behaviour on hand-built frames: framing, refusals, keepalive,
//! and garbage bodies.

use gw_libvirt_rpc::error::code;
use gw_libvirt_rpc::message::{self, Header, MessageType, Status, WireError, KEEPALIVE_PROGRAM, REMOTE_PROGRAM};
use gw_libvirt_rpc::proc::num;
use gw_libvirt_rpc::xdr::{from_bytes, to_bytes};
use gw_libvirt_rpc::{Backend, BindingRef, Call, Event, Fatal, FilterRef, RpcError, Session};
use proptest::prelude::*;

/// One filter "f" and nothing else.
struct One;

impl Backend for One {
    fn define_filter(&mut self, _xml: &str, _validate: bool) -> Result<FilterRef, RpcError> {
        Ok(FilterRef::new("f", [1; 16]))
    }
    fn undefine_filter(&mut self, _f: &FilterRef) -> Result<(), RpcError> {
        Ok(())
    }
    fn filter_by_name(&mut self, name: &str) -> Result<FilterRef, RpcError> {
        if name == "f" {
            Ok(FilterRef::new("f", [1; 16]))
        } else {
            Err(RpcError::no_nwfilter_name(name))
        }
    }
    fn filter_by_uuid(&mut self, uuid: &[u8; 16]) -> Result<FilterRef, RpcError> {
        Err(RpcError::no_nwfilter_uuid(uuid))
    }
    fn filter_xml(&mut self, _f: &FilterRef) -> Result<String, RpcError> {
        Ok("<filter name='f'/>".into())
    }
    fn list_filters(&mut self) -> Result<Vec<FilterRef>, RpcError> {
        Ok(vec![FilterRef::new("f", [1; 16])])
    }
    fn create_binding(&mut self, _xml: &str, _flags: u32) -> Result<BindingRef, RpcError> {
        Ok(BindingRef::new("vnet0", "f"))
    }
    fn delete_binding(&mut self, p: &str) -> Result<(), RpcError> {
        Err(RpcError::no_binding(p))
    }
    fn binding_by_port(&mut self, p: &str) -> Result<BindingRef, RpcError> {
        Err(RpcError::no_binding(p))
    }
    fn binding_xml(&mut self, p: &str) -> Result<String, RpcError> {
        Err(RpcError::no_binding(p))
    }
    fn list_bindings(&mut self) -> Result<Vec<BindingRef>, RpcError> {
        Ok(vec![])
    }
}

fn hdr(prog: u32, vers: u32, proc: i32, kind: MessageType, serial: u32) -> Header {
    Header { prog, vers, proc, kind, serial, status: Status::Ok }
}

fn call_frame(serial: u32, call: &Call) -> Vec<u8> {
    message::frame(&hdr(REMOTE_PROGRAM, 1, call.proc(), MessageType::Call, serial), &call.encode_args())
}

/// Splits a reply frame into header and body, checking the length word.
fn parse(frame: &[u8]) -> (Header, Vec<u8>) {
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len, frame.len());
    (from_bytes(&frame[4..]).expect("header"), frame[28..].to_vec())
}

fn error_of(frame: &[u8]) -> (Header, WireError) {
    let (h, body) = parse(frame);
    assert_eq!(h.status, Status::Error, "expected an error reply");
    (h, from_bytes(&body).expect("error body"))
}

fn msg(e: &WireError) -> &str {
    e.message.as_ref().map(|s| s.0.as_str()).unwrap_or("")
}

/// Feeds a frame and expects a ready-made reply.
fn sent(s: &mut Session, f: &[u8]) -> Vec<u8> {
    s.feed(f).expect("feed");
    match s.next_call() {
        Some(Event::Send(b)) => b,
        other => panic!("expected a ready reply, got {other:?}"),
    }
}

/// Feeds a call and dispatches it.
fn roundtrip(s: &mut Session, serial: u32, call: &Call) -> Vec<u8> {
    s.feed(&call_frame(serial, call)).expect("feed");
    match s.next_call() {
        Some(Event::Call(c)) => {
            assert_eq!(&c.call, call);
            s.dispatch(c, &mut One)
        }
        other => panic!("expected a call, got {other:?}"),
    }
}

fn opened() -> Session {
    let mut s = Session::new();
    let r = roundtrip(&mut s, 1, &Call::ConnectOpen { name: Some("nwfilter:///system".into()), flags: 0 });
    assert_eq!(parse(&r).0.status, Status::Ok);
    s
}

#[test]
fn framing_split_across_feeds() {
    let mut s = Session::new();
    let f = call_frame(5, &Call::AuthList);
    for chunk in f.chunks(3) {
        assert_eq!(s.next_call(), None);
        s.feed(chunk).expect("feed");
    }
    let Some(Event::Call(c)) = s.next_call() else { panic!("no call") };
    assert_eq!(c.header.serial, 5);
    let (h, body) = parse(&s.dispatch(c, &mut One));
    assert_eq!((h.serial, h.kind, h.status, h.proc), (5, MessageType::Reply, Status::Ok, num::AUTH_LIST));
    assert_eq!(body, [0, 0, 0, 1, 0, 0, 0, 0], "one auth type: REMOTE_AUTH_NONE");
    assert_eq!(s.next_call(), None);
}

#[test]
fn two_frames_in_one_feed() {
    let mut s = Session::new();
    let mut both = call_frame(1, &Call::AuthList);
    both.extend(call_frame(2, &Call::SupportsFeature { feature: 10 }));
    s.feed(&both).expect("feed");
    let Some(Event::Call(a)) = s.next_call() else { panic!("first") };
    let Some(Event::Call(b)) = s.next_call() else { panic!("second") };
    assert_eq!((a.header.serial, b.header.serial), (1, 2));
    let (_, body) = parse(&s.dispatch(b, &mut One));
    assert_eq!(body, [0, 0, 0, 1], "keepalive is supported before open");
    assert_eq!(s.next_call(), None);
}

#[test]
fn oversize_is_fatal() {
    let mut s = Session::new();
    let too_big = (message::FRAME_MAX as u32 + 1).to_be_bytes();
    assert_eq!(s.feed(&too_big), Err(Fatal::TooLarge(message::FRAME_MAX + 1)));
    assert_eq!(s.feed(&[0]), Err(Fatal::Closed));
    // The maximum itself is accepted (libvirt allows MAX after the length word).
    let mut s = Session::new();
    assert_eq!(s.feed(&(message::FRAME_MAX as u32).to_be_bytes()), Ok(()));
}

#[test]
fn truncated_header_is_fatal() {
    let mut s = Session::new();
    assert_eq!(s.feed(&[0, 0, 0, 27, 0, 0]), Err(Fatal::TooSmall(27)));
    let mut s = Session::new();
    assert_eq!(s.feed(&[0, 0, 0, 0]), Err(Fatal::TooSmall(0)));
    // A frame of exactly a header is fine (a body-less call).
    let mut s = Session::new();
    s.feed(&call_frame(1, &Call::ConnectClose)).expect("feed");
    assert!(matches!(s.next_call(), Some(Event::Call(_))));
}

#[test]
fn wrong_program() {
    let mut s = Session::new();
    let r = sent(&mut s, &message::frame(&hdr(0x1234, 1, 1, MessageType::Call, 9), &[]));
    let (h, e) = error_of(&r);
    assert_eq!((h.prog, h.serial, h.kind), (0x1234, 9, MessageType::Reply));
    assert_eq!((e.code, msg(&e)), (code::RPC, "Cannot find program 4660 version 1"));
    assert_eq!(s.next_call(), None);
}

#[test]
fn wrong_version() {
    let mut s = Session::new();
    let r = sent(&mut s, &message::frame(&hdr(REMOTE_PROGRAM, 2, 1, MessageType::Call, 3), &[]));
    let (h, e) = error_of(&r);
    assert_eq!((h.vers, h.serial), (2, 3));
    assert_eq!((e.code, msg(&e)), (code::RPC, "Cannot find program 536903814 version 2"));
}

#[test]
fn unknown_procedure_gets_error_and_session_continues() {
    let mut s = opened();
    // Known to libvirt but not to the nwfilter driver.
    let r = roundtrip(&mut s, 7, &Call::Unsupported(23));
    let (h, e) = error_of(&r);
    assert_eq!((h.proc, h.serial), (23, 7));
    assert_eq!(e.code, code::NO_SUPPORT);
    // Beyond libvirt's table.
    let r = sent(&mut s, &message::frame(&hdr(REMOTE_PROGRAM, 1, 9999, MessageType::Call, 8), &[]));
    let (_, e) = error_of(&r);
    assert_eq!((e.code, msg(&e)), (code::RPC, "unknown procedure: 9999"));
    // Still usable.
    let r = roundtrip(&mut s, 9, &Call::FilterLookupByName { name: "f".into() });
    assert_eq!(parse(&r).0.status, Status::Ok);
}

#[test]
fn keepalive_ping_gets_pong() {
    let mut s = Session::new();
    let ping = message::frame(&hdr(KEEPALIVE_PROGRAM, 1, 1, MessageType::Message, 0), &[]);
    let r = sent(&mut s, &ping);
    assert_eq!(r, message::pong());
    // A PONG from the client needs no answer.
    let pong = message::frame(&hdr(KEEPALIVE_PROGRAM, 1, 2, MessageType::Message, 0), &[]);
    s.feed(&pong).expect("feed");
    assert_eq!(s.next_call(), None);
}

#[test]
fn calls_before_open_are_refused_like_libvirtd() {
    let mut s = Session::new();
    let (_, e) = error_of(&roundtrip(&mut s, 1, &Call::ListAllFilters { need_results: 1, flags: 0 }));
    assert_eq!((e.code, msg(&e)), (code::INTERNAL_ERROR, "internal error: connection not open"));
    let (_, e) = error_of(&roundtrip(&mut s, 2, &Call::GetUri));
    assert_eq!(msg(&e), "internal error: hypervisor connection not open");
    let (_, e) = error_of(&roundtrip(&mut s, 3, &Call::SupportsFeature { feature: 8 }));
    assert_eq!(msg(&e), "internal error: hypervisor connection not open");
    let r = roundtrip(&mut s, 4, &Call::AuthList);
    assert_eq!(parse(&r).0.status, Status::Ok);
}

#[test]
fn open_checks_uri() {
    let mut s = Session::new();
    let (_, e) = error_of(&roundtrip(&mut s, 1, &Call::ConnectOpen { name: Some("qemu:///system".into()), flags: 0 }));
    assert_eq!((e.code, msg(&e)), (code::NO_CONNECT, "no connection driver available for qemu:///system"));
    let (_, e) =
        error_of(&roundtrip(&mut s, 2, &Call::ConnectOpen { name: Some("nwfilter:///session".into()), flags: 0 }));
    assert_eq!(msg(&e), "internal error: unexpected nwfilter URI path '/session', try nwfilter:///system");
    let mut s = opened();
    let (_, body) = parse(&roundtrip(&mut s, 2, &Call::GetUri));
    assert_eq!(from_bytes::<gw_libvirt_rpc::xdr::NonnullString>(&body).map(|x| x.0), Ok("nwfilter:///system".into()));
    let (_, e) =
        error_of(&roundtrip(&mut s, 3, &Call::ConnectOpen { name: Some("nwfilter:///system".into()), flags: 0 }));
    assert_eq!(msg(&e), "internal error: connection already open");
}

#[test]
fn backend_errors_and_flags() {
    let mut s = opened();
    let (h, e) = error_of(&roundtrip(&mut s, 4, &Call::FilterLookupByName { name: "x".into() }));
    assert_eq!(h.serial, 4);
    assert_eq!((e.code, e.domain), (code::NO_NWFILTER, 33));
    assert_eq!(msg(&e), "Network filter not found: no nwfilter with matching name 'x'");
    let (_, e) =
        error_of(&roundtrip(&mut s, 5, &Call::FilterDefineXml { xml: "<filter/>".into(), flags: 6, with_flags: true }));
    assert_eq!(msg(&e), "invalid argument: unsupported flags (0x6) in function nwfilterDefineXMLFlags");
    let r = roundtrip(&mut s, 6, &Call::ListAllFilters { need_results: 0, flags: 0 });
    assert_eq!(parse(&r).1, [0, 0, 0, 0, 0, 0, 0, 1], "no filters sent, count 1");
}

#[test]
fn garbage_body_is_an_error_reply() {
    let mut s = opened();
    let f = message::frame(&hdr(REMOTE_PROGRAM, 1, num::NWFILTER_LOOKUP_BY_NAME, MessageType::Call, 3), &[0, 0, 1]);
    let (h, e) = error_of(&sent(&mut s, &f));
    assert_eq!((h.serial, e.code), (3, code::RPC));
    assert_eq!(msg(&e), "Unable to decode message payload");
}

#[test]
fn error_body_encodes_null_pointers() {
    let e = WireError::from(&RpcError::no_binding("p"));
    let b = to_bytes(&e);
    assert_eq!(from_bytes::<WireError>(&b), Ok(e));
}

proptest! {
    /// Every procedure we know, and some we don't, fed random bodies: the
    /// session answers each with one reply and stays usable.
    #[test]
    fn random_bodies_never_panic(
        p in prop_oneof![proptest::sample::select(num::KNOWN), -3i32..500],
        body in proptest::collection::vec(any::<u8>(), 0..80),
        serial: u32,
    ) {
        let mut s = opened();
        s.feed(&message::frame(&hdr(REMOTE_PROGRAM, 1, p, MessageType::Call, serial), &body)).expect("feed");
        let reply = match s.next_call() {
            Some(Event::Send(b)) => b,
            Some(Event::Call(c)) => s.dispatch(c, &mut One),
            None => return Err(TestCaseError::fail("no answer to a call")),
        };
        let (h, _) = parse(&reply);
        prop_assert_eq!(h.serial, serial);
        prop_assert_eq!(h.kind, MessageType::Reply);
        let r = roundtrip(&mut s, serial.wrapping_add(1), &Call::NumOfFilters);
        prop_assert_eq!(parse(&r).0.status, Status::Ok);
    }

    /// Arbitrary input never panics the session; it is fed in random
    /// chunks and drained after each.
    #[test]
    fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 1usize..50) {
        let mut s = Session::new();
        for chunk in data.chunks(cut) {
            if s.feed(chunk).is_err() {
                break;
            }
            while let Some(e) = s.next_call() {
                if let Event::Call(c) = e {
                    let _ = s.dispatch(c, &mut One);
                }
            }
        }
    }
}
