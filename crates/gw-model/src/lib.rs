//! The typed model of libvirt's nwfilter language.
//!
//! A [`Filter`] is a named list of [`Entry`]s: [`Rule`]s and references to
//! other filters ([`FilterRef`]). A rule has an action, a direction, a
//! priority and at most one [`ProtocolMatch`]: a [`Protocol`] and the
//! attributes ([`Field`]s) set on it, each with a [`Value`] and a negation.
//!
//! Which attributes a protocol has, their order and how they are read and
//! written lives in one table per protocol ([`Protocol::attributes`]), the way
//! libvirt keeps it, so reading, writing and resolving agree by construction.
//! This crate has no XML and no semantics beyond libvirt's own clean-up
//! ([`ProtocolMatch::fixup`]).

#[cfg(feature = "arbitrary")]
pub mod arb;
pub mod binding;
pub mod filter;
pub mod param;
pub mod protocol;
pub mod text;
pub mod value;

pub use binding::{
    check_ifname, check_param, param_value_refused, read_param_value, Binding, BindingError, IfName, Owner, ParamError,
    MAX_PARAM_VALUES,
};
pub use filter::{
    check_chain_name, check_filter_name, default_chain_priority, Action, Direction, Entry, FieldValue, Filter,
    FilterRef, FixupChange, ProtocolMatch, Rule, DEFAULT_RULE_PRIORITY,
};
pub use param::{ParamValue, ParamValueError};
pub use protocol::{AttrSpec, Field, Kind, Layer, Protocol};
pub use value::{Access, MacAddr, Value, VarAccess};
