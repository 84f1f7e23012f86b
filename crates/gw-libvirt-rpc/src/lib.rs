//! The server side of libvirt's RPC protocol, as far as the nwfilter driver
//! needs it, written from libvirt 9.0's protocol files (virnetprotocol.x,
//! remote_protocol.x, virkeepaliveprotocol.x).
//!
//! This crate owns the wire: XDR ([`xdr`]), framing, headers and error
//! bodies ([`message`]), the nwfilter procedures as typed calls and replies
//! ([`proc`]), and a per-connection state machine ([`session`]) that turns
//! input bytes into calls, answers what the protocol itself answers
//! (keepalive, malformed or unknown calls, calls before connect open) and
//! encodes replies from a [`session::Backend`] the daemon provides.
//!
//! Limits: no I/O (the daemon reads and writes the socket), no
//! authentication beyond announcing REMOTE_AUTH_NONE (the socket's file
//! permissions are the access control), no file-descriptor passing, no
//! streams, no events sent to the client, and only the nwfilter driver's
//! procedures; every other procedure gets libvirt's "not supported" error.
//! Error texts follow libvirt's so virsh prints the same lines.

#[macro_use]
pub mod xdr;
pub mod error;
pub mod message;
pub mod proc;
pub mod session;

pub use error::RpcError;
pub use proc::{BindingRef, Call, FilterRef, Reply};
pub use session::{serve_blocking, Backend, Event, Fatal, Incoming, Session};
