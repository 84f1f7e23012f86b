//! guestwall's nftables backend: port programs ([`gw_ir::PortProgram`]) to
//! one ruleset ([`build`]), applied in one transaction ([`run_nft`]), with the
//! kernel's features found by [`probe`].
//!
//! guestwall owns the tables `bridge guestwall` and `inet guestwall` and
//! never touches any other.

pub mod client;
pub mod expr;
pub mod ruleset;

pub use client::{enable_bridge_nf_call, port_is_routed, probe, run_nft, NftError};
pub use expr::StateSource;
pub use ruleset::{build, plan, BuildError, Features, Plan, PortInput, TABLE};
