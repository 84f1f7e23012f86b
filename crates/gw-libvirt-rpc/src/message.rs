//! Framing, the message header, the programs, and the error reply body
//! (virnetprotocol.x, virkeepaliveprotocol.x).
//!
//! A frame is a 4-byte big-endian length that counts itself, then the
//! 24-byte header, then the XDR body.

use crate::error::{RpcError, LEVEL_ERROR};
use crate::xdr::{Decode, Encode, NonnullString, Reader, RemoteString, Uuid, Writer, XdrError, XdrString};

/// VIR_NET_MESSAGE_MAX in libvirt 9.0: the most a header plus body may be.
/// libvirt checks it against the length word minus the word itself.
pub const MESSAGE_MAX: usize = 33_554_432;
/// VIR_NET_MESSAGE_LEN_MAX: the length word.
pub const LEN_SIZE: usize = 4;
/// VIR_NET_MESSAGE_HEADER_MAX: the header's encoded size.
pub const HEADER_SIZE: usize = 24;
/// The largest value the length word may hold.
pub const FRAME_MAX: usize = MESSAGE_MAX + LEN_SIZE;
/// The smallest frame that carries a header.
pub const FRAME_MIN: usize = LEN_SIZE + HEADER_SIZE;

/// REMOTE_PROGRAM
pub const REMOTE_PROGRAM: u32 = 0x2000_8086;
/// REMOTE_PROTOCOL_VERSION
pub const REMOTE_VERSION: u32 = 1;
/// KEEPALIVE_PROGRAM ("keep")
pub const KEEPALIVE_PROGRAM: u32 = 0x6b65_6570;
/// KEEPALIVE_PROTOCOL_VERSION
pub const KEEPALIVE_VERSION: u32 = 1;
/// KEEPALIVE_PROC_PING
pub const KEEPALIVE_PING: i32 = 1;
/// KEEPALIVE_PROC_PONG
pub const KEEPALIVE_PONG: i32 = 2;

/// `virNetMessageType`; unknown values are kept so they can be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// VIR_NET_CALL
    Call,
    /// VIR_NET_REPLY
    Reply,
    /// VIR_NET_MESSAGE
    Message,
    /// VIR_NET_STREAM
    Stream,
    /// VIR_NET_CALL_WITH_FDS
    CallWithFds,
    /// VIR_NET_REPLY_WITH_FDS
    ReplyWithFds,
    /// VIR_NET_STREAM_HOLE
    StreamHole,
    /// Anything else.
    Other(i32),
}

impl MessageType {
    fn to_i32(self) -> i32 {
        match self {
            MessageType::Call => 0,
            MessageType::Reply => 1,
            MessageType::Message => 2,
            MessageType::Stream => 3,
            MessageType::CallWithFds => 4,
            MessageType::ReplyWithFds => 5,
            MessageType::StreamHole => 6,
            MessageType::Other(v) => v,
        }
    }

    fn from_i32(v: i32) -> Self {
        match v {
            0 => MessageType::Call,
            1 => MessageType::Reply,
            2 => MessageType::Message,
            3 => MessageType::Stream,
            4 => MessageType::CallWithFds,
            5 => MessageType::ReplyWithFds,
            6 => MessageType::StreamHole,
            v => MessageType::Other(v),
        }
    }
}

/// `virNetMessageStatus`; unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// VIR_NET_OK
    Ok,
    /// VIR_NET_ERROR: a `virNetMessageError` body follows.
    Error,
    /// VIR_NET_CONTINUE (streams)
    Continue,
    /// Anything else.
    Other(i32),
}

impl Status {
    fn to_i32(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Error => 1,
            Status::Continue => 2,
            Status::Other(v) => v,
        }
    }

    fn from_i32(v: i32) -> Self {
        match v {
            0 => Status::Ok,
            1 => Status::Error,
            2 => Status::Continue,
            v => Status::Other(v),
        }
    }

    /// The wire value, as libvirt's messages print it.
    pub fn raw(self) -> i32 {
        self.to_i32()
    }
}

/// `virNetMessageHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure within the program.
    pub proc: i32,
    /// Message type.
    pub kind: MessageType,
    /// Serial, echoed in replies.
    pub serial: u32,
    /// Status.
    pub status: Status,
}

impl Header {
    /// The header of the reply to this call, with the given status.
    pub fn reply(&self, status: Status) -> Header {
        Header { kind: MessageType::Reply, status, ..*self }
    }
}

impl Encode for Header {
    fn encode(&self, w: &mut Writer) {
        self.prog.encode(w);
        self.vers.encode(w);
        self.proc.encode(w);
        self.kind.to_i32().encode(w);
        self.serial.encode(w);
        self.status.to_i32().encode(w);
    }
}

impl Decode for Header {
    const MIN_SIZE: usize = HEADER_SIZE;
    fn decode(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        Ok(Header {
            prog: u32::decode(r)?,
            vers: u32::decode(r)?,
            proc: i32::decode(r)?,
            kind: MessageType::from_i32(i32::decode(r)?),
            serial: u32::decode(r)?,
            status: Status::from_i32(i32::decode(r)?),
        })
    }
}

/// Builds a whole frame: length word, header, body.
pub fn frame(header: &Header, body: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    // The length is patched once known; a placeholder keeps one buffer.
    0u32.encode(&mut w);
    header.encode(&mut w);
    w.raw(body);
    let mut out = w.into_bytes();
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out[..LEN_SIZE].copy_from_slice(&len.to_be_bytes());
    out
}

/// The keepalive PONG a server sends for a PING: serial 0, no body.
pub fn pong() -> Vec<u8> {
    frame(
        &Header {
            prog: KEEPALIVE_PROGRAM,
            vers: KEEPALIVE_VERSION,
            proc: KEEPALIVE_PONG,
            kind: MessageType::Message,
            serial: 0,
            status: Status::Ok,
        },
        &[],
    )
}

xdr_struct! {
    /// `virNetMessageNonnullDomain`; never sent by this crate (always null).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct NonnullDomain {
        /// Name.
        pub name: NonnullString,
        /// UUID.
        pub uuid: Uuid,
        /// Id.
        pub id: i32,
    }
}

xdr_struct! {
    /// `virNetMessageNonnullNetwork`; never sent by this crate.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct NonnullNetwork {
        /// Name.
        pub name: NonnullString,
        /// UUID.
        pub uuid: Uuid,
    }
}

xdr_struct! {
    /// `virNetMessageError` (`remote_error`), the body of a VIR_NET_ERROR reply.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct WireError {
        /// virErrorNumber
        pub code: i32,
        /// virErrorDomain
        pub domain: i32,
        /// The text virsh prints.
        pub message: RemoteString,
        /// virErrorLevel
        pub level: i32,
        /// Unused by libvirt; null.
        pub dom: Option<NonnullDomain>,
        /// Extra information.
        pub str1: RemoteString,
        /// Extra information.
        pub str2: RemoteString,
        /// Extra information.
        pub str3: RemoteString,
        /// Extra information.
        pub int1: i32,
        /// Extra information.
        pub int2: i32,
        /// Unused by libvirt; null.
        pub net: Option<NonnullNetwork>,
    }
}

impl From<&RpcError> for WireError {
    fn from(e: &RpcError) -> Self {
        WireError {
            code: e.code,
            domain: e.domain,
            message: Some(XdrString(e.message.clone())),
            level: LEVEL_ERROR,
            dom: None,
            str1: None,
            str2: None,
            str3: None,
            // virReportError passes -1 for both when it has no numbers.
            int1: -1,
            int2: -1,
            net: None,
        }
    }
}

/// The error reply frame to a call: the call's program, version, procedure
/// and serial, type REPLY, status ERROR, a `virNetMessageError` body.
pub fn error_reply(call: &Header, err: &RpcError) -> Vec<u8> {
    let body = crate::xdr::to_bytes(&WireError::from(err));
    frame(&call.reply(Status::Error), &body)
}

/// The successful reply frame to a call with an encoded body.
pub fn ok_reply(call: &Header, body: &[u8]) -> Vec<u8> {
    frame(&call.reply(Status::Ok), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::{from_bytes, to_bytes};
    use proptest::prelude::*;

    #[test]
    fn frame_counts_itself() {
        let h =
            Header { prog: REMOTE_PROGRAM, vers: 1, proc: 1, kind: MessageType::Call, serial: 7, status: Status::Ok };
        let f = frame(&h, &[0, 0, 0, 0]);
        assert_eq!(f.len(), 32);
        assert_eq!(&f[..4], &[0, 0, 0, 32]);
        assert_eq!(&f[4..8], &[0x20, 0x00, 0x80, 0x86]);
        assert_eq!(from_bytes::<Header>(&f[4..]), Ok(h));
    }

    #[test]
    fn pong_is_keepalive_message() {
        let p = pong();
        assert_eq!(p.len(), FRAME_MIN);
        let h: Header = from_bytes(&p[4..]).expect("a header we built");
        assert_eq!((h.prog, h.vers, h.proc, h.kind, h.serial), (KEEPALIVE_PROGRAM, 1, 2, MessageType::Message, 0));
    }

    proptest! {
        #[test]
        fn header_round_trips(prog: u32, vers: u32, proc: i32, kind: i32, serial: u32, status: i32) {
            let h = Header { prog, vers, proc, kind: MessageType::from_i32(kind), serial, status: Status::from_i32(status) };
            prop_assert_eq!(from_bytes::<Header>(&to_bytes(&h)), Ok(h));
        }

        #[test]
        fn error_round_trips(code: i32, domain: i32, msg in proptest::option::of(".{0,30}"), s1 in proptest::option::of(".{0,5}"),
                             int1: i32, int2: i32, dom: bool) {
            let e = WireError {
                code, domain, message: msg.map(XdrString), level: 2,
                dom: dom.then(|| NonnullDomain { name: XdrString("d".into()), uuid: [7; 16], id: 3 }),
                str1: s1.map(XdrString), str2: None, str3: Some(XdrString(String::new())), int1, int2,
                net: dom.then(|| NonnullNetwork { name: XdrString("n".into()), uuid: [9; 16] }),
            };
            prop_assert_eq!(from_bytes::<WireError>(&to_bytes(&e)), Ok(e));
        }

        #[test]
        fn error_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = from_bytes::<WireError>(&b);
        }
    }
}
