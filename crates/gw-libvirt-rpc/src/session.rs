//! An I/O-free server session: bytes in, decoded calls out, reply frames
//! back. The daemon owns the socket; this owns the protocol's state.

use crate::error::{domain, RpcError};
use crate::message::{
    self, Header, MessageType, Status, FRAME_MAX, FRAME_MIN, KEEPALIVE_PING, KEEPALIVE_PROGRAM, KEEPALIVE_VERSION,
    LEN_SIZE, REMOTE_PROGRAM, REMOTE_VERSION,
};
use crate::proc::{self, feature, num, BindingRef, Call, FilterRef, Reply};
use crate::xdr::{self, Decode, Reader};
use std::collections::VecDeque;
use thiserror::Error;

/// libvirt 9.0.0 as `virConnectGetLibVersion` numbers it: the protocol
/// version we speak, so clients gate features as against that release.
pub const LIB_VERSION: u64 = 9_000_000;

/// A protocol violation after which libvirt drops the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Fatal {
    /// The length word is beyond VIR_NET_MESSAGE_MAX.
    #[error("frame of {0} bytes exceeds the maximum of {max}", max = FRAME_MAX)]
    TooLarge(usize),
    /// The length word leaves no room for a header.
    #[error("frame of {0} bytes is shorter than a header ({min})", min = FRAME_MIN)]
    TooSmall(usize),
    /// More unread input than a frame may hold: the peer sends without
    /// reading what we answered.
    #[error("more than {0} bytes of input buffered")]
    Backlog(usize),
    /// An earlier fatal error closed this session.
    #[error("session already failed")]
    Closed,
}

/// The most unread input a session holds: one largest frame plus the start
/// of the next; a daemon drains calls after every feed, so only a peer that
/// never reads can reach it.
pub const BUFFER_MAX: usize = 2 * FRAME_MAX;

/// A call ready for [`Session::dispatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The call's header (its serial is echoed).
    pub header: Header,
    /// The decoded call.
    pub call: Call,
}

/// What the session yields for each complete frame that needs an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A call for the daemon to dispatch.
    Call(Incoming),
    /// A frame to send as is: an error reply to a call that could not be
    /// decoded, or a keepalive PONG.
    Send(Vec<u8>),
}

/// The store the daemon puts behind the protocol. Errors are sent to the
/// client as they are, so their messages should read like libvirt's (see
/// [`RpcError`]'s constructors).
pub trait Backend {
    /// Defines (creates or replaces) a filter from its XML; `validate` is
    /// VIR_NWFILTER_DEFINE_VALIDATE (check the XML against the schema).
    fn define_filter(&mut self, xml: &str, validate: bool) -> Result<FilterRef, RpcError>;
    /// Removes a filter. libvirt finds it by `filter.uuid`.
    fn undefine_filter(&mut self, filter: &FilterRef) -> Result<(), RpcError>;
    /// Finds a filter by name.
    fn filter_by_name(&mut self, name: &str) -> Result<FilterRef, RpcError>;
    /// Finds a filter by UUID.
    fn filter_by_uuid(&mut self, uuid: &[u8; 16]) -> Result<FilterRef, RpcError>;
    /// A filter's XML. libvirt finds it by `filter.uuid`.
    fn filter_xml(&mut self, filter: &FilterRef) -> Result<String, RpcError>;
    /// Every filter.
    fn list_filters(&mut self) -> Result<Vec<FilterRef>, RpcError>;
    /// Creates a binding from its XML; `flags` are
    /// VIR_NWFILTER_BINDING_CREATE_* (only VALIDATE = 1 gets this far).
    fn create_binding(&mut self, xml: &str, flags: u32) -> Result<BindingRef, RpcError>;
    /// Removes the binding of a port device.
    fn delete_binding(&mut self, portdev: &str) -> Result<(), RpcError>;
    /// Finds the binding of a port device.
    fn binding_by_port(&mut self, portdev: &str) -> Result<BindingRef, RpcError>;
    /// A binding's XML.
    fn binding_xml(&mut self, portdev: &str) -> Result<String, RpcError>;
    /// Every binding.
    fn list_bindings(&mut self) -> Result<Vec<BindingRef>, RpcError>;
}

/// One client connection's protocol state.
#[derive(Debug, Default)]
pub struct Session {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out as frames.
    consumed: usize,
    failed: bool,
    /// The URI given to a successful connect open.
    uri: Option<String>,
    close_requested: bool,
    pending: VecDeque<Event>,
}

impl Session {
    /// A fresh connection: not yet opened.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether connect open has succeeded.
    pub fn is_open(&self) -> bool {
        self.uri.is_some()
    }

    /// Whether the client sent connect close: the daemon should close the
    /// connection once the reply is written, as libvirtd does.
    pub fn close_requested(&self) -> bool {
        self.close_requested
    }

    /// Buffers input. Checks every length word it can see, so an oversize or
    /// undersize frame fails here, before its body has to be buffered.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Fatal> {
        if self.failed {
            return Err(Fatal::Closed);
        }
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        if self.buf.len().saturating_add(bytes.len()) > BUFFER_MAX {
            return self.fail(Fatal::Backlog(BUFFER_MAX));
        }
        self.buf.extend_from_slice(bytes);
        let mut pos = 0;
        while let Some(word) = self.buf.get(pos..pos + LEN_SIZE) {
            let len = u32::from_be_bytes([word[0], word[1], word[2], word[3]]) as usize;
            if len > FRAME_MAX {
                return self.fail(Fatal::TooLarge(len));
            }
            if len < FRAME_MIN {
                return self.fail(Fatal::TooSmall(len));
            }
            pos += len;
        }
        Ok(())
    }

    fn fail(&mut self, f: Fatal) -> Result<(), Fatal> {
        self.failed = true;
        self.buf.clear();
        self.consumed = 0;
        Err(f)
    }

    /// The next event from the buffered input, or `None` until more input
    /// completes a frame. Frames that need no answer (a PONG, stray stream
    /// data, replies) are consumed silently.
    pub fn next_call(&mut self) -> Option<Event> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        if self.failed {
            return None;
        }
        loop {
            let (header, body) = {
                let rest = self.buf.get(self.consumed..)?;
                let word = rest.get(..LEN_SIZE)?;
                let len = u32::from_be_bytes([word[0], word[1], word[2], word[3]]) as usize;
                // feed() has checked FRAME_MIN <= len <= FRAME_MAX.
                let frame = rest.get(..len)?;
                let mut r = Reader::new(frame.get(LEN_SIZE..)?);
                let header = Header::decode(&mut r).ok()?;
                let body = frame.get(LEN_SIZE + message::HEADER_SIZE..)?.to_vec();
                self.consumed += len;
                (header, body)
            };
            if let Some(e) = self.classify(header, &body) {
                return Some(e);
            }
        }
    }

    fn classify(&mut self, header: Header, body: &[u8]) -> Option<Event> {
        if header.prog == KEEPALIVE_PROGRAM && header.vers == KEEPALIVE_VERSION && header.kind == MessageType::Message {
            // libvirt answers PING and ignores PONG and unknown keepalive
            // procedures.
            return (header.proc == KEEPALIVE_PING).then(|| Event::Send(message::pong()));
        }
        if header.prog != REMOTE_PROGRAM || header.vers != REMOTE_VERSION {
            // libvirtd answers any message for a program it lacks, whatever
            // its type; the reply carries the asked-for program and version.
            let err =
                RpcError::rpc(format!("Cannot find program {} version {}", header.prog as i32, header.vers as i32));
            return Some(Event::Send(message::error_reply(&header, &err)));
        }
        match header.kind {
            MessageType::Call => {}
            MessageType::CallWithFds => {
                // No fds can arrive through a byte buffer; refuse rather than
                // misread the fd count as the body.
                let err = RpcError::rpc("Passing file descriptors is not supported by this server");
                return Some(Event::Send(message::error_reply(&header, &err)));
            }
            // Non-calls get no answer from libvirtd either (stream data for a
            // closed stream, stray replies).
            _ => return None,
        }
        if header.status != Status::Ok {
            let err = RpcError::rpc(format!("Unexpected message status {}", header.status.raw()));
            return Some(Event::Send(message::error_reply(&header, &err)));
        }
        if !(1..=num::LAST).contains(&header.proc) {
            let err = RpcError::rpc(format!("unknown procedure: {}", header.proc));
            return Some(Event::Send(message::error_reply(&header, &err)));
        }
        match Call::decode(header.proc, body) {
            Ok(call) => Some(Event::Call(Incoming { header, call })),
            Err(_) => {
                let err = RpcError::rpc("Unable to decode message payload");
                Some(Event::Send(message::error_reply(&header, &err)))
            }
        }
    }

    /// Runs a call against the backend and returns the reply frame, with the
    /// call's serial.
    pub fn dispatch(&mut self, incoming: Incoming, backend: &mut impl Backend) -> Vec<u8> {
        let header = incoming.header;
        match self.answer(incoming.call, backend) {
            Ok(reply) => {
                let frame = message::ok_reply(&header, &xdr::to_bytes(&reply));
                // The client would drop the connection on a frame beyond the
                // maximum; libvirtd fails the call instead, and so do we.
                if frame.len() > FRAME_MAX {
                    return message::error_reply(&header, &RpcError::rpc("Unable to encode message payload"));
                }
                frame
            }
            Err(e) => message::error_reply(&header, &e),
        }
    }

    fn answer(&mut self, call: Call, b: &mut impl Backend) -> Result<Reply, RpcError> {
        // What libvirtd's dispatcher says when a call needs the connection
        // that connect open makes: connect-level calls ask for the
        // "hypervisor" connection, nwfilter calls for the nwfilter one.
        let hyp = || RpcError::dispatch_internal("hypervisor connection not open");
        let nwf = || RpcError::dispatch_internal("connection not open");
        let open = self.is_open();
        match call {
            Call::ConnectOpen { name, flags } => self.open(name, flags).map(|()| Reply::Empty),
            Call::ConnectClose => {
                self.close_requested = true;
                Ok(Reply::Empty)
            }
            Call::AuthList => Ok(Reply::AuthList(vec![proc::AUTH_NONE])),
            Call::SupportsFeature { feature } => {
                if feature == feature::PROGRAM_KEEPALIVE {
                    // Asked before connect open, as the client decides
                    // whether to ping at all.
                    return Ok(Reply::Int(1));
                }
                if !open {
                    return Err(hyp());
                }
                Ok(Reply::Int(i32::from(matches!(
                    feature,
                    // libvirtd answers these itself; every other feature goes
                    // to the nwfilter driver, which claims none.
                    feature::FD_PASSING | feature::REMOTE_EVENT_CALLBACK | feature::REMOTE_CLOSE_CALLBACK
                ))))
            }
            _ if !open && is_connect_level(&call) => Err(hyp()),
            _ if !open => Err(nwf()),
            // The nwfilter driver's connection has no type callback, so
            // virConnectGetType answers with the driver's name.
            Call::GetType => Ok(Reply::Str("nwfilter".into())),
            // Nor version or hostname callbacks: virtnwfilterd refuses these.
            Call::GetVersion => Err(RpcError::no_support("virConnectGetVersion")),
            Call::GetHostname => Err(RpcError::no_support("virConnectGetHostname")),
            Call::GetLibVersion => Ok(Reply::U64(LIB_VERSION)),
            Call::GetUri => Ok(Reply::Str(self.uri.clone().unwrap_or_default())),
            // We never close a connection under a client except by dropping
            // it, so there is no event to register for; accept as libvirtd.
            Call::RegisterCloseCallback | Call::UnregisterCloseCallback => Ok(Reply::Empty),
            Call::NumOfFilters => Ok(Reply::Int(count(b.list_filters()?.len())?)),
            Call::ListFilters { maxnames } => {
                let max = usize::try_from(maxnames).unwrap_or(0);
                if maxnames < 0 || max > proc::NWFILTER_LIST_MAX {
                    return Err(RpcError::rpc("maxnames > REMOTE_NWFILTER_LIST_MAX"));
                }
                let mut names: Vec<String> = b.list_filters()?.into_iter().map(|f| f.name.0).collect();
                names.truncate(max);
                Ok(Reply::Names(names))
            }
            Call::ListAllFilters { need_results, flags } => {
                check_flags(flags, 0, "nwfilterConnectListAllNWFilters")?;
                let all = b.list_filters()?;
                let ret = list_count(all.len(), proc::NWFILTER_LIST_MAX, "nwfilters")?;
                let filters = if need_results != 0 { all } else { Vec::new() };
                Ok(Reply::Filters { filters, ret })
            }
            Call::FilterLookupByName { name } => b.filter_by_name(&name).map(Reply::Filter),
            Call::FilterLookupByUuid { uuid } => b.filter_by_uuid(&uuid).map(Reply::Filter),
            Call::FilterDefineXml { xml, flags, with_flags: _ } => {
                check_flags(flags, proc::DEFINE_VALIDATE, "nwfilterDefineXMLFlags")?;
                b.define_filter(&xml, flags & proc::DEFINE_VALIDATE != 0).map(Reply::Filter)
            }
            Call::FilterUndefine { filter } => b.undefine_filter(&filter).map(|()| Reply::Empty),
            Call::FilterGetXmlDesc { filter, flags } => {
                check_flags(flags, 0, "nwfilterGetXMLDesc")?;
                b.filter_xml(&filter).map(Reply::Str)
            }
            Call::BindingLookupByPortDev { portdev } => b.binding_by_port(&portdev).map(Reply::Binding),
            Call::BindingCreateXml { xml, flags } => {
                check_flags(flags, proc::BINDING_CREATE_VALIDATE, "nwfilterBindingCreateXML")?;
                b.create_binding(&xml, flags).map(Reply::Binding)
            }
            Call::BindingDelete { binding } => b.delete_binding(&binding.portdev.0).map(|()| Reply::Empty),
            Call::BindingGetXmlDesc { binding, flags } => {
                check_flags(flags, 0, "nwfilterBindingGetXMLDesc")?;
                b.binding_xml(&binding.portdev.0).map(Reply::Str)
            }
            Call::ListAllBindings { need_results, flags } => {
                check_flags(flags, 0, "nwfilterConnectListAllNWFilterBindings")?;
                let all = b.list_bindings()?;
                let ret = list_count(all.len(), proc::NWFILTER_BINDING_LIST_MAX, "nwfilter bindings")?;
                let bindings = if need_results != 0 { all } else { Vec::new() };
                Ok(Reply::Bindings { bindings, ret })
            }
            Call::Unsupported(p) => Err(RpcError::no_support(&format!("remote procedure {p}"))),
        }
    }

    fn open(&mut self, name: Option<String>, flags: u32) -> Result<(), RpcError> {
        if self.is_open() {
            return Err(RpcError::dispatch_internal("connection already open"));
        }
        let Some(name) = name else {
            return Err(RpcError::dispatch_internal("connection not open"));
        };
        let Some(rest) = name.strip_prefix("nwfilter://") else {
            return Err(RpcError::new(
                crate::error::code::NO_CONNECT,
                domain::NONE,
                format!("no connection driver available for {name}"),
            ));
        };
        // nwfilter is local only: no host part; the path must be /system
        // (query parameters were the client's, it strips its own).
        let path = rest.split(['?', '#']).next().unwrap_or("");
        if path != "/system" {
            return Err(RpcError::internal(&format!("unexpected nwfilter URI path '{path}', try nwfilter:///system")));
        }
        check_flags(flags, proc::CONNECT_RO, "nwfilterConnectOpen")?;
        self.uri = Some(name);
        Ok(())
    }
}

/// Serves one client over a blocking byte stream (the caller's socket)
/// until it hangs up, sends connect close, or breaks the framing (the
/// error then says how). `dispatch` answers each decoded call, usually
/// with [`Session::dispatch`]; keepalive and undecodable calls are answered
/// here. The loop is the same for every server, so it lives here once.
pub fn serve_blocking<S: std::io::Read + std::io::Write>(
    stream: &mut S,
    mut dispatch: impl FnMut(&mut Session, Incoming) -> Vec<u8>,
) -> Result<(), Fatal> {
    let mut session = Session::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
        session.feed(&buf[..n])?;
        while let Some(ev) = session.next_call() {
            let out = match ev {
                Event::Send(b) => b,
                Event::Call(c) => dispatch(&mut session, c),
            };
            if stream.write_all(&out).is_err() || session.close_requested() {
                return Ok(());
            }
        }
    }
}

fn is_connect_level(call: &Call) -> bool {
    matches!(
        call,
        Call::GetType
            | Call::GetVersion
            | Call::GetLibVersion
            | Call::GetHostname
            | Call::GetUri
            | Call::RegisterCloseCallback
            | Call::UnregisterCloseCallback
            // Other procedures would reach the hypervisor connection first.
            | Call::Unsupported(_)
    )
}

fn check_flags(flags: u32, allowed: u32, function: &str) -> Result<(), RpcError> {
    if flags & !allowed != 0 {
        return Err(RpcError::unsupported_flags(flags & !allowed, function));
    }
    Ok(())
}

fn count(n: usize) -> Result<i32, RpcError> {
    i32::try_from(n).map_err(|_| RpcError::rpc("too many items"))
}

fn list_count(n: usize, max: usize, what: &str) -> Result<u32, RpcError> {
    if n > max {
        return Err(RpcError::rpc(format!("Too many {what} '{n}' for limit '{max}'")));
    }
    u32::try_from(n).map_err(|_| RpcError::rpc("too many items"))
}
