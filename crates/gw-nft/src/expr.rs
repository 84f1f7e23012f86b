//! Conditions → nft expressions, and values → nft literals.

use gw_ir::{Cond, Sel, Test};
use gw_model::value::state;
use gw_model::Value;

/// How connection-tracking state reaches the bridge chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateSource {
    /// The kernel has nf_conntrack_bridge: `ct state` works in the bridge family.
    BridgeConntrack,
    /// No bridge conntrack: br_netfilter sends bridged IP through the inet
    /// hooks, where conntrack runs; an inet chain copies the state into
    /// [`MARK_MASK`] bits of the packet mark for the bridge chains.
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

/// The bridge table's counter of packets whose state bits another writer
/// of the mark changed (see [`MarkBits::guard`]).
pub const TAMPER_COUNTER: &str = "state_tampered";

/// An expression could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

/// The nft expression a selector reads, for a rule on IPv6 when `v6`.
pub fn selector(sel: Sel, v6: bool) -> String {
    match sel {
        Sel::EtherSrc => "ether saddr".into(),
        Sel::EtherDst => "ether daddr".into(),
        Sel::EtherType => "ether type".into(),
        Sel::VlanId => "vlan id".into(),
        Sel::VlanType => "vlan type".into(),
        // ARP fields are read as raw offsets into the network header: nft's
        // `arp ...` expressions imply `ether type arp`, and libvirt's rules
        // read the same fields in RARP frames.
        Sel::ArpHtype => "@nh,0,16".into(),
        Sel::ArpPtype => "@nh,16,16".into(),
        Sel::ArpOp => "@nh,48,16".into(),
        Sel::ArpSha => "@nh,64,48".into(),
        Sel::ArpSpa => "@nh,112,32".into(),
        Sel::ArpTha => "@nh,144,48".into(),
        Sel::ArpTpa => "@nh,192,32".into(),
        Sel::ArpGratuitous => "arp gratuitous".into(),
        Sel::Ip4Src => "ip saddr".into(),
        Sel::Ip4Dst => "ip daddr".into(),
        Sel::Ip6Src => "ip6 saddr".into(),
        Sel::Ip6Dst => "ip6 daddr".into(),
        Sel::L4Proto => "meta l4proto".into(),
        Sel::Dscp if v6 => "ip6 dscp".into(),
        Sel::Dscp => "ip dscp".into(),
        Sel::SrcPort => "th sport".into(),
        Sel::DstPort => "th dport".into(),
        Sel::IcmpType => "icmp type".into(),
        Sel::IcmpCode => "icmp code".into(),
        Sel::Icmp6Type => "icmpv6 type".into(),
        Sel::Icmp6Code => "icmpv6 code".into(),
        Sel::TcpFlags => "tcp flags".into(),
        Sel::CtState => "ct state".into(),
        Sel::Stp { offset, len } => format!("@ll,{},{}", u32::from(offset) * 8, u32::from(len) * 8),
    }
}

/// An nft literal for a value read by `sel`.
pub fn literal(sel: Sel, v: &Value) -> Result<String, ExprError> {
    Ok(match v {
        Value::Num { value, .. } => match sel {
            Sel::EtherType | Sel::VlanType | Sel::ArpPtype => format!("{value:#06x}"),
            _ => value.to_string(),
        },
        Value::Ipv4(a) if matches!(sel, Sel::ArpSpa | Sel::ArpTpa) => format!("{:#010x}", u32::from(*a)),
        Value::Mac(m) if matches!(sel, Sel::Stp { .. } | Sel::ArpSha | Sel::ArpTha) => {
            format!("0x{}", m.0.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
        Value::Mac(m) => m.to_string(),
        Value::Ipv4(a) => a.to_string(),
        Value::Ipv6(a) => a.to_string(),
        Value::Prefix(p) => p.to_string(),
        Value::Var(va) => return Err(ExprError(format!("variable ${va} has no value here"))),
        other => return Err(ExprError(format!("cannot write {other:?} as an nft value"))),
    })
}

fn prefix_of(v: &Value) -> Option<u8> {
    match v {
        Value::Prefix(p) => Some(*p),
        _ => None,
    }
}

/// `value/prefix` for an address under a prefix mask (a range for the raw
/// ARP fields).
pub fn prefixed(sel: Sel, v: &Value, mask: &Value) -> Result<String, ExprError> {
    let p = prefix_of(mask).ok_or_else(|| ExprError(format!("mask {mask:?} is not a prefix length")))?;
    if let (Sel::ArpSpa | Sel::ArpTpa, Value::Ipv4(a)) = (sel, v) {
        let m = if p == 0 { 0 } else { u32::MAX << (32 - u32::from(p.min(32))) };
        let lo = u32::from(*a) & m;
        let hi = lo | !m;
        return Ok(if lo == hi { format!("{lo:#010x}") } else { format!("{lo:#010x}-{hi:#010x}") });
    }
    Ok(format!("{}/{p}", literal(sel, v)?))
}

fn ct_names(bits: u8) -> Vec<&'static str> {
    let mut out = Vec::new();
    if bits & state::NEW != 0 {
        out.push("new");
    }
    if bits & gw_ir::UNTRACKED != 0 {
        out.push("untracked");
    }
    if bits & state::ESTABLISHED != 0 {
        out.push("established");
    }
    if bits & state::RELATED != 0 {
        out.push("related");
    }
    if bits & state::INVALID != 0 {
        out.push("invalid");
    }
    out
}

/// One condition as nft text (constants only).
pub fn cond(c: &Cond, v6: bool, states: StateSource, mark: MarkBits) -> Result<String, ExprError> {
    let s = selector(c.sel, v6);
    let op = if c.negated { "!= " } else { "" };
    Ok(match (&c.test, c.sel) {
        (Test::States(bits), _) => match states {
            StateSource::BridgeConntrack => {
                let names = ct_names(*bits).join(", ");
                if c.negated {
                    format!("ct state & ({}) == 0", ct_names(*bits).join("|"))
                } else {
                    format!("ct state {{ {names} }}")
                }
            }
            StateSource::BrNetfilterMark => {
                let m = mark.of(*bits);
                format!("meta mark & {m:#010x} {} 0", if c.negated { "==" } else { "!=" })
            }
        },
        (Test::True, Sel::ArpGratuitous) => {
            if c.negated {
                return Err(ExprError("a negated gratuitous ARP match cannot be expressed in nftables".into()));
            }
            // nft cannot compare two fields; compare the four bytes of the
            // sender and target IP pairwise through a set of equal pairs.
            (0..4)
                .map(|i| format!("@nh,{},8 . @nh,{},8 @same_byte", 112 + 8 * i, 192 + 8 * i))
                .collect::<Vec<_>>()
                .join(" ")
        }
        (Test::Eq(v), _) => format!("{s} {op}{}", literal(c.sel, v)?),
        (Test::Range(a, b), _) => {
            let (la, lb) = (literal(c.sel, a)?, literal(c.sel, b)?);
            if range_inverted(a, b) {
                return Err(ExprError(format!("{s}: range {la}-{lb} ends below its start")));
            }
            if la == lb {
                format!("{s} {op}{la}")
            } else {
                format!("{s} {op}{la}-{lb}")
            }
        }
        (Test::Masked(v, m), Sel::EtherSrc | Sel::EtherDst) => {
            format!("{s} & {} {} {}", literal(c.sel, m)?, if c.negated { "!=" } else { "==" }, literal(c.sel, v)?)
        }
        (Test::Masked(v, m), Sel::Stp { .. }) => {
            format!("{s} & {} {} {}", literal(c.sel, m)?, if c.negated { "!=" } else { "==" }, literal(c.sel, v)?)
        }
        (Test::Masked(v, m), _) => format!("{s} {op}{}", prefixed(c.sel, v, m)?),
        (Test::Flags { mask, set }, _) => {
            format!("{s} & {mask:#04x} {} {set:#04x}", if c.negated { "!=" } else { "==" })
        }
        (Test::True, _) => return Err(ExprError(format!("{s}: no such test"))),
    })
}

fn range_inverted(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Num { value: x, .. }, Value::Num { value: y, .. }) => x > y,
        (Value::Ipv4(x), Value::Ipv4(y)) => x > y,
        (Value::Ipv6(x), Value::Ipv6(y)) => x > y,
        _ => false,
    }
}

/// Whether a condition's variable can be looked up in a per-port set:
/// a positive equality, or an address under a constant prefix.
pub fn settable(c: &Cond) -> bool {
    if c.negated || matches!(c.sel, Sel::Stp { .. } | Sel::ArpGratuitous | Sel::CtState | Sel::TcpFlags) {
        return false;
    }
    match &c.test {
        Test::Eq(_) => true,
        Test::Masked(_, m) => {
            !matches!(m, Value::Var(_))
                && matches!(c.sel, Sel::Ip4Src | Sel::Ip4Dst | Sel::Ip6Src | Sel::Ip6Dst | Sel::ArpSpa | Sel::ArpTpa)
        }
        _ => false,
    }
}

/// Whether a condition mentions a variable.
pub fn has_var(c: &Cond) -> bool {
    let var = |v: &Value| matches!(v, Value::Var(_));
    match &c.test {
        Test::Eq(v) => var(v),
        Test::Masked(a, b) | Test::Range(a, b) => var(a) || var(b),
        _ => false,
    }
}

/// The set element part for a condition's concrete value.
pub fn element(c: &Cond) -> Result<String, ExprError> {
    match &c.test {
        Test::Eq(v) => literal(c.sel, v),
        Test::Masked(v, m) => prefixed(c.sel, v, m),
        _ => Err(ExprError("not a set element".into())),
    }
}

/// A set element's bytes for a condition's concrete value, as the kernel
/// keeps them in a concatenated key (network byte order, each field padded
/// to 32 bits). `None` for what is only written as nft text (intervals, and
/// fields whose storage nft transforms, such as `vlan id` or `ip dscp`).
pub fn element_key(c: &Cond) -> Option<Vec<u8>> {
    let Test::Eq(v) = &c.test else { return None };
    let mut b = match (c.sel, v) {
        (Sel::EtherSrc | Sel::EtherDst | Sel::ArpSha | Sel::ArpTha, Value::Mac(m)) => m.0.to_vec(),
        (Sel::ArpSpa | Sel::ArpTpa | Sel::Ip4Src | Sel::Ip4Dst, Value::Ipv4(a)) => a.octets().to_vec(),
        (Sel::Ip6Src | Sel::Ip6Dst, Value::Ipv6(a)) => a.octets().to_vec(),
        (
            Sel::SrcPort | Sel::DstPort | Sel::EtherType | Sel::ArpOp | Sel::ArpHtype | Sel::ArpPtype,
            Value::Num { value, .. },
        ) => u16::try_from(*value).ok()?.to_be_bytes().to_vec(),
        (Sel::L4Proto | Sel::IcmpType | Sel::IcmpCode | Sel::Icmp6Type | Sel::Icmp6Code, Value::Num { value, .. }) => {
            vec![u8::try_from(*value).ok()?]
        }
        _ => return None,
    };
    b.resize((b.len() + 3) & !3, 0);
    Some(b)
}

/// An interface name as a set key: `IFNAMSIZ` bytes, zero-padded.
pub fn ifname_key(name: &str) -> Option<Vec<u8>> {
    Some(crate::text::ifname_key(name))
}
