//! libvirt-compatible nwfilter XML: reading ([`read_filter`]) and writing
//! ([`write_filter`]).
//!
//! Reading is libvirt 9.0's reading, quirks included; every quirk met is
//! returned as a [`Diagnostic`] with line and column so callers can warn or
//! refuse. Writing is `virsh nwfilter-dumpxml`'s format, so our output is
//! accepted by libvirt and libvirt's by us. No semantics live here.

pub mod binding;
pub mod diag;
pub mod limits;
pub mod read;
pub mod write;

pub use binding::{read_binding, write_binding};
pub use diag::{Diagnostic, Parsed, ReadError, Severity};
pub use limits::{MAX_DOCUMENT_BYTES, MAX_XML_ATTRIBUTES, MAX_XML_DEPTH, MAX_XML_NODES};
pub use read::{parse_foreign, read_filter};
pub use write::{match_elements, write_filter};
