//! guestwall's nftables backend: port programs ([`gw_ir::PortProgram`]) to
//! one ruleset, applied in one transaction, with the kernel's features
//! found by [`probe`].
//!
//! guestwall owns the tables `bridge guestwall` and `inet guestwall` and
//! never touches any other.
//!
//! # A tour, from the bottom up
//! - [`text`]: the only quoting; text from outside reaches nft through it.
//! - [`netlink`]: nf_tables netlink framing, element batches, events.
//! - [`tickets`]: tells our own commits from others' in the events.
//! - [`names`]: every object name, the two [`Family`]s, base-chain
//!   priorities.
//! - [`features`]: what the kernel offers ([`Features`]).
//! - [`element`]: set and map elements as typed datums, written as nft
//!   text and as netlink key bytes from one definition.
//! - [`expr`]: conditions to nft expressions, values to datums.
//! - [`model`]: the tables as data ([`Plan`], chains with their kind,
//!   sets with their key type).
//! - [`plan`](mod@plan): port programs to a [`Plan`], purely.
//! - `render` and `delta`: a plan as nft text; from one plan to the next
//!   (element batches, staged updates, nft transactions) for both families.
//! - [`client`]: running `nft`, probing the kernel.
//! - [`transaction`]: which transaction takes the loaded plan to the next,
//!   and applying it to the kernel ([`System`]) or to the fake.
//! - [`fake`]: an in-memory kernel for tests, without root.
//! - [`inspect`]: read-only reports on the kernel's ruleset.

pub mod client;
mod delta;
pub mod element;
pub mod expr;
pub mod fake;
pub mod features;
pub mod inspect;
pub mod model;
pub mod names;
pub mod netlink;
pub mod plan;
mod render;
pub mod text;
pub mod tickets;
pub mod transaction;

pub use client::{claim, enable_bridge_nf_call, is_ours, port_is_routed, probe, run_nft, NftError};
pub use features::{Features, MarkBits, MarkMaskError, StateSource};
pub use model::{Plan, PortInput, PortValues, Staged};
pub use names::{Family, BLOCKED, TABLE, TAMPER_COUNTER};
pub use plan::{build, plan, plan_from, port_input, port_values, shareable, BuildError};
pub use transaction::{Backend, Effect, System, Transaction, TxError};
