//! Conditions → nft expressions, and values → nft literals.

use crate::element::Datum;
use crate::features::{MarkBits, StateSource};
use gw_ir::{Cond, Sel, Test};
use gw_model::value::state;
use gw_model::Value;

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

/// A condition's concrete value as a set element's datum: typed where
/// netlink can write it too, text otherwise (see [`Datum`]).
pub fn datum(c: &Cond) -> Result<Datum, ExprError> {
    let v = match &c.test {
        Test::Eq(v) => v,
        Test::Masked(v, m) => return Ok(Datum::Text(prefixed(c.sel, v, m)?.into())),
        _ => return Err(ExprError("not a set element".into())),
    };
    let num = |v: &Value| match v {
        Value::Num { value, .. } => Some(*value),
        _ => None,
    };
    let u16_of = |v: &Value| num(v).and_then(|n| u16::try_from(n).ok());
    let u8_of = |v: &Value| num(v).and_then(|n| u8::try_from(n).ok());
    // Each typed arm must render as `literal` writes the same value: the
    // snapshots and the kernel tests hold both to it.
    let text = || literal(c.sel, v).map(|t| Datum::Text(t.into()));
    Ok(match (c.sel, v) {
        (Sel::EtherSrc | Sel::EtherDst, Value::Mac(m)) => Datum::Ether(*m),
        (Sel::ArpSha | Sel::ArpTha, Value::Mac(m)) => Datum::EtherRaw(*m),
        (Sel::Ip4Src | Sel::Ip4Dst, Value::Ipv4(a)) => Datum::Ipv4(*a),
        (Sel::ArpSpa | Sel::ArpTpa, Value::Ipv4(a)) => Datum::Ipv4Raw(*a),
        (Sel::Ip6Src | Sel::Ip6Dst, Value::Ipv6(a)) => Datum::Ipv6(*a),
        (Sel::EtherType | Sel::ArpPtype, v) => u16_of(v).map_or_else(text, |n| Ok(Datum::U16Hex(n)))?,
        (Sel::SrcPort | Sel::DstPort | Sel::ArpOp | Sel::ArpHtype, v) => {
            u16_of(v).map_or_else(text, |n| Ok(Datum::U16(n)))?
        }
        (Sel::L4Proto | Sel::IcmpType | Sel::IcmpCode | Sel::Icmp6Type | Sel::Icmp6Code, v) => {
            u8_of(v).map_or_else(text, |n| Ok(Datum::U8(n)))?
        }
        // Fields whose storage nft transforms (`vlan id`, `ip dscp`), and
        // values out of a field's range: text only.
        _ => text()?,
    })
}
