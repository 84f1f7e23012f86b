//! Every name guestwall gives an nftables object, the two families, and
//! the base chains' priorities: the one place that knows them, so that
//! planning, rendering, deltas and the kernel's readers cannot disagree.
//!
//! Names are stable: a filter's chains and sets are named by the filter
//! (and, for sets, by the rule they serve), never by what else is bound,
//! so that an update touches only what changed. None of them is an nft
//! keyword (`fwd` would be, see `kernel.md`).

use crate::netlink::{FAMILY_BRIDGE, FAMILY_INET};
use gw_ir::Side;

/// guestwall's table name (in the `bridge` and `inet` families).
pub const TABLE: &str = "guestwall";

/// The chain (in both tables) that drops everything: ports whose stored
/// binding is broken are dispatched to it, never left unfiltered.
pub const BLOCKED: &str = "blocked";

/// The bridge table's counter of packets whose state bits another writer
/// of the mark changed (see [`crate::MarkBits::guard`]).
pub const TAMPER_COUNTER: &str = "state_tampered";

/// The bridge set of equal byte pairs that gratuitous-ARP rules compare
/// against (nft cannot compare two packet fields directly).
pub const SAME_BYTE: &str = "same_byte";

/// The inet table's FTP conntrack helper, for filters that use RELATED.
pub const FTP_HELPER: &str = "ftp";

/// The inet base chains that copy conntrack state into the mark (and
/// assign the FTP helper): one for forwarded and bridged packets, one for
/// the host's own.
pub const STATE_IN: &str = "state_in";
/// See [`STATE_IN`].
pub const STATE_LOCAL: &str = "state_local";

/// The inet chain that writes `state`'s mark bit.
pub fn mark_chain(state: &str) -> String {
    format!("mark_{state}")
}

/// Bridge dispatch runs after br_netfilter's bridge hooks (priority 0,
/// `NF_BR_PRI_BRNF`): by then the inet hooks have run for bridged IP, so
/// conntrack state is known and, without bridge conntrack, already copied
/// into the mark.
pub const BRIDGE_DISPATCH_PRIORITY: i32 = 200;

/// Routed dispatch runs at the filter priority (`NF_IP_PRI_FILTER`), after
/// conntrack (-200) has set `ct state` for the packet on the tap.
pub const ROUTED_DISPATCH_PRIORITY: i32 = 0;

/// The state copy runs at the mangle priority (`NF_IP_PRI_MANGLE`): after
/// conntrack (-200) has looked the packet up, and in the inet hooks that
/// br_netfilter runs before the bridge chains read the mark.
pub const STATE_MARK_PRIORITY: i32 = -150;

/// An nftables family guestwall has a table in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `table bridge guestwall`: bridged ports.
    Bridge,
    /// `table inet guestwall`: routed taps, and the conntrack-state copy.
    Inet,
}

impl Family {
    /// Both families, in the order their tables are written.
    pub const BOTH: [Family; 2] = [Family::Bridge, Family::Inet];

    /// The family as nft spells it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Bridge => "bridge",
            Family::Inet => "inet",
        }
    }

    /// The family's `NFPROTO_*` number, for netlink.
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Bridge => FAMILY_BRIDGE,
            Family::Inet => FAMILY_INET,
        }
    }

    /// The family with this `NFPROTO_*` number.
    pub fn from_nfproto(n: u8) -> Option<Family> {
        Family::BOTH.into_iter().find(|f| f.nfproto() == n)
    }

    /// The names of a family's per-port dispatch: its two verdict maps and
    /// the base chains that look ports up in them.
    pub fn dispatch(self) -> Dispatch {
        match self {
            Family::Bridge => Dispatch {
                from_map: "from_guest",
                to_map: "to_guest",
                pre_chain: "prerouting",
                post_chain: "postrouting",
                priority: BRIDGE_DISPATCH_PRIORITY,
            },
            Family::Inet => Dispatch {
                from_map: "routed_from_guest",
                to_map: "routed_to_guest",
                pre_chain: "routed_prerouting",
                post_chain: "routed_postrouting",
                priority: ROUTED_DISPATCH_PRIORITY,
            },
        }
    }
}

/// A family's dispatch objects (see [`Family::dispatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    /// The map from a port to the chain of frames it sends.
    pub from_map: &'static str,
    /// The map from a port to the chain of frames sent to it.
    pub to_map: &'static str,
    /// The base chain (prerouting hook) that looks up `from_map`.
    pub pre_chain: &'static str,
    /// The base chain (postrouting hook) that looks up `to_map`.
    pub post_chain: &'static str,
    /// Both base chains' priority.
    pub priority: i32,
}

/// FNV-1a: a short stable hash for names.
pub fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// The chain-name prefix of a group of ports sharing chains (`own`: the
/// port, for a filter whose ports cannot share): readable, and stable
/// whatever other filters are bound, so an update touches only what
/// changed.
pub fn group(key: &str, own: Option<&str>, routed: bool) -> String {
    let full = match own {
        Some(p) => format!("{key}\u{0}{p}"),
        None => key.to_string(),
    };
    let mut readable: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(24).collect();
    if let Some(p) = own {
        readable.push('_');
        readable.extend(p.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }));
    }
    format!("{}_{readable}_{:08x}", if routed { "r" } else { "f" }, fnv(&full))
}

/// A side's Ethernet root chain, which the dispatch maps go to
/// (`<group>_out`, `<group>_in`); also the prefix of the side's other names.
pub fn root_chain(group: &str, side: Side) -> String {
    format!("{group}_{}", side.short())
}

/// A side's `n`th protocol sub-chain.
pub fn sub_chain(group: &str, side: Side, n: usize) -> String {
    format!("{}_c{n}", root_chain(group, side))
}

/// A side's IP-layer chain, where the Ethernet layer goes on accept.
pub fn ip_chain(group: &str, side: Side) -> String {
    format!("{}_ip", root_chain(group, side))
}

/// The name of the set of per-port values one rule looks up, before any
/// `_N` that tells apart two sets of the same name. Named by what decides
/// its elements (`fingerprint`: the key type and the rule instance's
/// fingerprint, its rule and the parameters on its path), not by its
/// position in the DAG: a filter redefined with one more rule keeps its
/// sets, so the change is chains only, whatever the number of ports.
pub fn port_set(group: &str, side: Side, ip_layer: bool, reversed: bool, fingerprint: &str) -> String {
    format!(
        "{}_{}{}_{:08x}",
        root_chain(group, side),
        if ip_layer { "ip" } else { "l2" },
        if reversed { "r" } else { "" },
        fnv(fingerprint)
    )
}
