//! guestwall's nftables backend: port programs ([`gw_ir::PortProgram`]) to
//! one ruleset ([`build`]), applied in one transaction ([`run_nft`]), with the
//! kernel's features found by [`probe`].
//!
//! guestwall owns the tables `bridge guestwall` and `inet guestwall` and
//! never touches any other.

pub mod client;
pub mod expr;
pub mod inspect;
pub mod netlink;
pub mod ruleset;
pub mod text;

pub use client::{claim, enable_bridge_nf_call, is_ours, port_is_routed, probe, run_nft, NftError};
pub use expr::{MarkBits, StateSource, TAMPER_COUNTER};

/// A port's input for [`plan`] from its programs, keeping the whole
/// program only when its filter cannot share chains.
pub fn port_input(
    port: String,
    key: String,
    template: std::sync::Arc<gw_ir::PortProgram>,
    concrete: &std::sync::Arc<gw_ir::PortProgram>,
    routed: bool,
) -> PortInput {
    let values = std::sync::Arc::new(port_values(&template, concrete));
    let concrete = if shareable(&template) { None } else { Some(concrete.clone()) };
    PortInput { port, key, template, concrete, values, routed }
}
pub use ruleset::{
    build, plan, plan_from, port_values, shareable, BuildError, Features, Plan, PortInput, PortValues, Staged, BLOCKED,
    TABLE,
};
