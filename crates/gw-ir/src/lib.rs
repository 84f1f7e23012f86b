//! The backend-neutral program a port runs, and an evaluator for it.
//!
//! A resolved binding ([`gw_resolve::Resolved`]) becomes one [`SideProgram`]
//! per side of the port: [`Side::FromGuest`] (frames the guest sends, libvirt's
//! `out`) and [`Side::ToGuest`] (frames sent to it, `in`). Each side has an
//! Ethernet layer (libvirt's ebtables chains: a root chain with jumps to
//! protocol sub-chains) and an IP layer (libvirt's iptables rules); a frame
//! passes a port only when both layers let it.
//!
//! Meanings kept from libvirt (see docs/enforcement.md):
//! - Ethernet layer: `accept` ends the layer; `return` leaves a sub-chain
//!   (in the root chain it ends the layer); `continue` goes on; a sub-chain
//!   that ends returns to the root chain; the root chain ends in accept.
//!   `inout` rules apply to both sides, reversed (source ↔ destination) on the
//!   guest's side.
//! - IP layer: a rule applies to its own side as written and to the other side
//!   reversed. An `accept` with the default state match takes NEW,ESTABLISHED
//!   on its own side and ESTABLISHED on the other, so replies come back but
//!   unsolicited "replies" do not. An explicit `state` (or `connlimit-above`,
//!   or an ICMP type) keeps the rule on its own side only. The layer ends in
//!   accept.
//!
//! The same lowering runs on a template (values may be variables, see
//! [`gw_resolve::template`]) for the nftables backend, and on a concrete
//! binding for [`eval`], which is the oracle of the tests and the engine of
//! `trace`.

pub mod bind;
pub mod eval;
pub mod lower;

pub use bind::{bind, binding_params, concrete_of, concrete_with, prepared, template_of, BindError, Bound};
pub use eval::{eval, Decision, Packet, Verdict};
pub use lower::{lower, LowerError};

use gw_model::{Action, Value};
use gw_resolve::Origin;
use serde::Serialize;

/// Which way a frame crosses the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// Sent by the guest (libvirt's `out`).
    FromGuest,
    /// Sent to the guest (libvirt's `in`).
    ToGuest,
}

impl Side {
    /// Both sides.
    pub const BOTH: [Side; 2] = [Side::FromGuest, Side::ToGuest];

    /// A short name for chain names and listings.
    pub fn short(self) -> &'static str {
        match self {
            Side::FromGuest => "out",
            Side::ToGuest => "in",
        }
    }
}

/// What a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sel {
    EtherSrc,
    EtherDst,
    EtherType,
    VlanId,
    VlanType,
    ArpHtype,
    ArpPtype,
    ArpOp,
    ArpSha,
    ArpTha,
    ArpSpa,
    ArpTpa,
    /// ARP sender IP equals target IP.
    ArpGratuitous,
    Ip4Src,
    Ip4Dst,
    Ip6Src,
    Ip6Dst,
    /// The IP protocol / IPv6 next header (as the kernel's l4proto).
    L4Proto,
    Dscp,
    SrcPort,
    DstPort,
    IcmpType,
    IcmpCode,
    Icmp6Type,
    Icmp6Code,
    TcpFlags,
    /// Connection-tracking state.
    CtState,
    /// An STP BPDU field: byte offset from the start of the frame and width
    /// in bytes.
    Stp {
        offset: u8,
        len: u8,
    },
}

/// How a condition tests its selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// Equal to a value (which may be a template variable).
    Eq(Value),
    /// Equal under a mask: MAC with MAC mask, IP with prefix length.
    Masked(Value, Value),
    /// Within an inclusive range.
    Range(Value, Value),
    /// TCP flags: of the `mask` bits exactly `set` are set.
    Flags { mask: u8, set: u8 },
    /// Any of these connection states (bits of `gw_model::value::state`).
    States(u8),
    /// The selector is true (used by [`Sel::ArpGratuitous`]).
    True,
}

/// One condition; all of a rule's conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Cond {
    /// What it looks at.
    pub sel: Sel,
    /// How.
    pub test: Test,
    /// `match='no'`: the test must fail.
    pub negated: bool,
}

/// A rule of one layer of one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IrRule {
    /// The conditions (all must hold).
    pub conds: Vec<Cond>,
    /// What a match does.
    pub action: Action,
    /// Where the rule came from.
    pub origin: Origin,
    /// Its resolved instance (shared by all expansions of one rule).
    pub inst: usize,
    /// The instance's fingerprint ([`gw_resolve::ResolvedRule::key`]).
    #[serde(skip)]
    pub key: u64,
    /// Its priority.
    pub priority: i32,
    /// The rule's comment attribute.
    pub comment: Option<String>,
    /// A copy applied to the other side with source and destination swapped.
    pub reversed: bool,
}

/// An entry of the Ethernet root chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum L2Item {
    /// A rule.
    Rule(IrRule),
    /// A jump to the sub-chain at this index of [`SideProgram::chains`],
    /// taken when the guard holds.
    Jump {
        /// Index into `chains`.
        chain: usize,
        /// Which frames go there (the chain's protocol).
        guard: Vec<Cond>,
    },
}

/// An Ethernet sub-chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L2Chain {
    /// Its libvirt name (`arp`, `ipv4-ip`, ...).
    pub name: String,
    /// Its rules.
    pub rules: Vec<IrRule>,
}

/// What one side of a port runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SideProgram {
    /// The Ethernet root chain.
    pub root: Vec<L2Item>,
    /// Ethernet sub-chains.
    pub chains: Vec<L2Chain>,
    /// The IP layer.
    pub ip: Vec<IrRule>,
}

/// What a port runs, both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortProgram {
    /// Frames the guest sends.
    pub from_guest: SideProgram,
    /// Frames sent to the guest.
    pub to_guest: SideProgram,
}

impl PortProgram {
    /// The program of one side.
    pub fn side(&self, side: Side) -> &SideProgram {
        match side {
            Side::FromGuest => &self.from_guest,
            Side::ToGuest => &self.to_guest,
        }
    }
}

/// A state bit for packets conntrack leaves untracked (IPv6 neighbour
/// discovery, for one), next to `gw_model::value::state`'s bits. They have
/// no connection whose state could be checked, so guestwall lets them pass
/// the automatic state match on both sides, and counts them as NEW for an
/// explicit `state` list (libvirt matches them nowhere).
pub const UNTRACKED: u8 = 1 << 6;

/// The destination MAC of STP BPDUs (IEEE 802.1D bridge group address).
pub const STP_BGA: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00];
