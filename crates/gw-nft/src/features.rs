//! What the kernel offers guestwall, found at start-up by
//! [`crate::probe`]: where conntrack state comes from, whether the bridge
//! family can reject, and the mark bits that carry conntrack state when
//! there is no bridge conntrack. Planning takes these as data; nothing
//! below asks the kernel mid-build.

use crate::names::TAMPER_COUNTER;
use gw_model::value::state;

/// What the kernel offers, found at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    /// Where conntrack state comes from.
    pub state: StateSource,
    /// Whether `reject` works in the bridge family (NFT_BRIDGE_REJECT).
    pub bridge_reject: bool,
    /// Whether every rule carries a counter. Off by default: counters cost
    /// about 15% of the small-packet forwarding rate (bench/forward); turn
    /// them on to see which rules decide.
    pub counters: bool,
    /// The mark bits that carry conntrack state ([`StateSource::BrNetfilterMark`]).
    pub mark: MarkBits,
}

impl Features {
    /// A line saying which paths are in use.
    pub fn describe(&self) -> String {
        let st = match self.state {
            StateSource::BridgeConntrack => "stateful filtering via bridge-family conntrack (nf_conntrack_bridge)",
            StateSource::BrNetfilterMark => &format!(
                "stateful filtering via br_netfilter (no nf_conntrack_bridge): conntrack state carried in mark bits {:#010x}",
                self.mark.mask()
            ),
        };
        let rj = if self.bridge_reject {
            "reject sends ICMP unreachable"
        } else {
            "reject is enforced as drop (no bridge-family reject in this kernel)"
        };
        format!("{st}; {rj}")
    }
}

/// How connection-tracking state reaches the bridge chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateSource {
    /// The kernel has nf_conntrack_bridge: `ct state` works in the bridge family.
    BridgeConntrack,
    /// No bridge conntrack: br_netfilter sends bridged IP through the inet
    /// hooks, where conntrack runs; an inet chain copies the state into
    /// [`MarkBits`] of the packet mark for the bridge chains.
    BrNetfilterMark,
}

/// The packet-mark bits that carry conntrack state from the inet hooks to
/// the bridge chains ([`StateSource::BrNetfilterMark`]): five bits under a
/// mask the admin can choose (`--ct-mark-mask`), since other tools use the
/// mark too (Calico's default mask is 0xffff0000, kube-proxy uses 0x4000
/// and 0x8000). Bits outside the mask are left as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MarkBits(u32);

/// Why a mark mask cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conntrack mark mask {0:#010x} must have exactly five bits set (one per state: new, established, related, invalid, untracked); it has {1}")]
pub struct MarkMaskError(pub u32, pub u32);

impl MarkBits {
    /// 0x1f000000: bits no common tool on virtualisation hosts sets.
    pub const DEFAULT: MarkBits = MarkBits(0x1f00_0000);

    /// The five bits of `mask`, lowest first: new, established, related,
    /// invalid, untracked.
    pub fn new(mask: u32) -> Result<MarkBits, MarkMaskError> {
        if mask.count_ones() == 5 {
            Ok(MarkBits(mask))
        } else {
            Err(MarkMaskError(mask, mask.count_ones()))
        }
    }

    /// All five bits.
    pub fn mask(self) -> u32 {
        self.0
    }

    fn nth(self, n: u32) -> u32 {
        let mut m = self.0;
        for _ in 0..n {
            m &= m - 1;
        }
        m & m.wrapping_neg()
    }

    /// The bit standing for NEW.
    pub fn new_bit(self) -> u32 {
        self.nth(0)
    }
    /// The bit standing for ESTABLISHED.
    pub fn established(self) -> u32 {
        self.nth(1)
    }
    /// The bit standing for RELATED.
    pub fn related(self) -> u32 {
        self.nth(2)
    }
    /// The bit standing for INVALID.
    pub fn invalid(self) -> u32 {
        self.nth(3)
    }
    /// The bit standing for untracked.
    pub fn untracked(self) -> u32 {
        self.nth(4)
    }

    /// Each state's name (as nft's `ct state` knows it) and bit.
    pub fn states(self) -> [(&'static str, u32); 5] {
        [
            ("new", self.new_bit()),
            ("untracked", self.untracked()),
            ("established", self.established()),
            ("related", self.related()),
            ("invalid", self.invalid()),
        ]
    }

    /// The bits standing for these states.
    pub fn of(self, bits: u8) -> u32 {
        let mut m = 0;
        if bits & state::NEW != 0 {
            m |= self.new_bit();
        }
        if bits & state::ESTABLISHED != 0 {
            m |= self.established();
        }
        if bits & state::RELATED != 0 {
            m |= self.related();
        }
        if bits & state::INVALID != 0 {
            m |= self.invalid();
        }
        if bits & gw_ir::UNTRACKED != 0 {
            m |= self.untracked();
        }
        m
    }

    /// The first rule of a chain whose rules read the state bits: an IP
    /// packet whose bits are not exactly one state was changed by another
    /// writer of these mark bits after guestwall set them, and could
    /// otherwise pass as a reply. It is dropped and counted in the named
    /// counter [`TAMPER_COUNTER`] (shown by `guestwall status`).
    pub fn guard(self) -> String {
        let valid: Vec<String> = self.states().iter().map(|(_, b)| format!("{b:#010x}")).collect();
        format!(
            "meta protocol {{ ip, ip6 }} meta mark & {:#010x} != {{ {} }} counter name \"{TAMPER_COUNTER}\" drop comment \"conntrack state bits changed by another writer of the mark\"",
            self.0,
            valid.join(", ")
        )
    }
}
