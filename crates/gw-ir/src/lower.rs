//! Resolved rules → per-side programs.

use crate::{Cond, IrRule, L2Chain, L2Item, PortProgram, Sel, Side, SideProgram, Test, STP_BGA};
use gw_model::value::state;
use gw_model::{Action, Direction, Field, FieldValue, MacAddr, Protocol, ProtocolMatch, Value};
use gw_resolve::{Jump, Resolved, ResolvedRule, RootEntry};

/// A rule guestwall cannot enforce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter '{filter}' rule {entry}: <{protocol} {attribute}>: {why}")]
pub struct LowerError {
    /// The filter holding the rule.
    pub filter: String,
    /// The rule's position in that filter.
    pub entry: usize,
    /// The protocol element.
    pub protocol: String,
    /// The attribute.
    pub attribute: String,
    /// Why it cannot be enforced.
    pub why: String,
}

fn num(v: u32) -> Value {
    Value::Num { value: v, hex: false }
}

/// The conditions a protocol element implies by itself.
fn implicit(p: Protocol) -> Vec<Cond> {
    use Protocol::*;
    let et = |t: u32| Cond { sel: Sel::EtherType, test: Test::Eq(num(t)), negated: false };
    let l4 = |n: u32| Cond { sel: Sel::L4Proto, test: Test::Eq(num(n)), negated: false };
    match p {
        Mac => vec![],
        Vlan => vec![et(0x8100)],
        Stp => vec![Cond { sel: Sel::EtherDst, test: Test::Eq(Value::Mac(MacAddr(STP_BGA))), negated: false }],
        Arp => vec![et(0x0806)],
        Rarp => vec![et(0x8035)],
        Ip | All => vec![et(0x0800)],
        Ipv6 | AllIpv6 => vec![et(0x86dd)],
        Tcp => vec![et(0x0800), l4(6)],
        Udp => vec![et(0x0800), l4(17)],
        Udplite => vec![et(0x0800), l4(136)],
        Esp => vec![et(0x0800), l4(50)],
        Ah => vec![et(0x0800), l4(51)],
        Sctp => vec![et(0x0800), l4(132)],
        Icmp => vec![et(0x0800), l4(1)],
        Igmp => vec![et(0x0800), l4(2)],
        TcpIpv6 => vec![et(0x86dd), l4(6)],
        UdpIpv6 => vec![et(0x86dd), l4(17)],
        UdpliteIpv6 => vec![et(0x86dd), l4(136)],
        EspIpv6 => vec![et(0x86dd), l4(50)],
        AhIpv6 => vec![et(0x86dd), l4(51)],
        SctpIpv6 => vec![et(0x86dd), l4(132)],
        Icmpv6 => vec![et(0x86dd), l4(58)],
    }
}

/// The selector a field's value is tested on, for the frame as written.
fn selector(p: Protocol, f: Field) -> Option<Sel> {
    use Field::*;
    let v6 = matches!(
        p,
        Protocol::Ipv6
            | Protocol::TcpIpv6
            | Protocol::UdpIpv6
            | Protocol::UdpliteIpv6
            | Protocol::EspIpv6
            | Protocol::AhIpv6
            | Protocol::SctpIpv6
            | Protocol::Icmpv6
            | Protocol::AllIpv6
    );
    let stp = |offset: u8, len: u8| Some(Sel::Stp { offset, len });
    Some(match f {
        SrcMacAddr => Sel::EtherSrc,
        DstMacAddr => Sel::EtherDst,
        ProtocolId => Sel::EtherType,
        VlanId => Sel::VlanId,
        EncapProtocol => Sel::VlanType,
        HwType => Sel::ArpHtype,
        ProtocolType => Sel::ArpPtype,
        Opcode => Sel::ArpOp,
        ArpSrcMacAddr => Sel::ArpSha,
        ArpDstMacAddr => Sel::ArpTha,
        ArpSrcIpAddr => Sel::ArpSpa,
        ArpDstIpAddr => Sel::ArpTpa,
        SrcIpAddr | SrcIpFrom if v6 => Sel::Ip6Src,
        DstIpAddr | DstIpFrom if v6 => Sel::Ip6Dst,
        SrcIpAddr | SrcIpFrom => Sel::Ip4Src,
        DstIpAddr | DstIpFrom => Sel::Ip4Dst,
        IpProtocol => Sel::L4Proto,
        SrcPortStart => Sel::SrcPort,
        DstPortStart => Sel::DstPort,
        Dscp => Sel::Dscp,
        Type if p == Protocol::Stp => return stp(20, 1),
        StpFlags => return stp(21, 1),
        RootPriority => return stp(22, 2),
        RootAddress => return stp(24, 6),
        RootCost => return stp(30, 4),
        SenderPriority => return stp(34, 2),
        SenderAddress => return stp(36, 6),
        Port => return stp(42, 2),
        Age => return stp(44, 2),
        MaxAge => return stp(46, 2),
        HelloTime => return stp(48, 2),
        ForwardDelay => return stp(50, 2),
        Type if v6 => Sel::Icmp6Type,
        Code if v6 => Sel::Icmp6Code,
        Type => Sel::IcmpType,
        Code => Sel::IcmpCode,
        TcpFlags => Sel::TcpFlags,
        _ => return None,
    })
}

/// The field that completes a leader: its mask or the end of its range.
fn partner(f: Field) -> Option<(Field, bool)> {
    use Field::*;
    // (partner, is_mask)
    Some(match f {
        SrcMacAddr => (SrcMacMask, true),
        DstMacAddr => (DstMacMask, true),
        ArpSrcIpAddr => (ArpSrcIpMask, true),
        ArpDstIpAddr => (ArpDstIpMask, true),
        SrcIpAddr => (SrcIpMask, true),
        DstIpAddr => (DstIpMask, true),
        RootAddress => (RootAddressMask, true),
        SenderAddress => (SenderAddressMask, true),
        SrcIpFrom => (SrcIpTo, false),
        DstIpFrom => (DstIpTo, false),
        SrcPortStart => (SrcPortEnd, false),
        DstPortStart => (DstPortEnd, false),
        RootPriority => (RootPriorityHi, false),
        RootCost => (RootCostHi, false),
        SenderPriority => (SenderPriorityHi, false),
        Port => (PortHi, false),
        Age => (AgeHi, false),
        MaxAge => (MaxAgeHi, false),
        HelloTime => (HelloTimeHi, false),
        ForwardDelay => (ForwardDelayHi, false),
        Type => (TypeEnd, false),
        Code => (CodeEnd, false),
        _ => return None,
    })
}

fn swap(sel: Sel) -> Sel {
    match sel {
        Sel::EtherSrc => Sel::EtherDst,
        Sel::EtherDst => Sel::EtherSrc,
        Sel::ArpSha => Sel::ArpTha,
        Sel::ArpTha => Sel::ArpSha,
        Sel::ArpSpa => Sel::ArpTpa,
        Sel::ArpTpa => Sel::ArpSpa,
        Sel::Ip4Src => Sel::Ip4Dst,
        Sel::Ip4Dst => Sel::Ip4Src,
        Sel::Ip6Src => Sel::Ip6Dst,
        Sel::Ip6Dst => Sel::Ip6Src,
        Sel::SrcPort => Sel::DstPort,
        Sel::DstPort => Sel::SrcPort,
        s => s,
    }
}

/// The conditions of a protocol element, not yet reversed.
fn conditions(rr: &ResolvedRule, m: &ProtocolMatch) -> Result<Vec<Cond>, LowerError> {
    let unsupported = |f: Field, why: &str| LowerError {
        filter: rr.origin.filter.clone(),
        entry: rr.origin.entry,
        protocol: m.protocol.element().to_string(),
        attribute: f.name().to_string(),
        why: why.to_string(),
    };
    let mut conds = implicit(m.protocol);
    for spec in m.protocol.attributes() {
        let f = spec.field;
        let Some(FieldValue { value, negated }) = m.get(f) else { continue };
        match f {
            Field::IpSet | Field::IpSetFlags => {
                return Err(unsupported(
                    f,
                    "external ipsets are not supported; list the addresses in a variable instead",
                ))
            }
            Field::ConnlimitAbove => {
                return Err(unsupported(f, "connection limits are not supported by guestwall's engine yet"))
            }
            Field::TcpOption => {
                return Err(unsupported(f, "matching TCP options is not supported by guestwall's engine yet"))
            }
            Field::State => {
                // Explicit states replace the automatic state match; NONE
                // means no state match at all.
                if let Value::State(bits) = value {
                    if bits & state::NONE == 0 {
                        let untracked = if bits & state::NEW != 0 { crate::UNTRACKED } else { 0 };
                        conds.push(Cond {
                            sel: Sel::CtState,
                            test: Test::States(*bits | untracked),
                            negated: *negated,
                        });
                    }
                }
                continue;
            }
            Field::Gratuitous => {
                match value {
                    Value::Bool(true) => {
                        conds.push(Cond { sel: Sel::ArpGratuitous, test: Test::True, negated: *negated });
                    }
                    Value::Bool(false) => {}
                    _ => return Err(unsupported(f, "gratuitous must be true or false")),
                }
                continue;
            }
            _ => {}
        }
        let Some(sel) = selector(m.protocol, f) else { continue };
        let test = match (partner(f), value) {
            (_, Value::TcpFlags { mask, set }) => Test::Flags { mask: *mask, set: *set },
            (Some((p, true)), v) => match m.get(p) {
                Some(mask) => Test::Masked(v.clone(), mask.value.clone()),
                None => Test::Eq(v.clone()),
            },
            (Some((p, false)), v) => match m.get(p) {
                Some(end) => Test::Range(v.clone(), end.value.clone()),
                None => Test::Eq(v.clone()),
            },
            (None, v) => Test::Eq(v.clone()),
        };
        conds.push(Cond { sel, test, negated: *negated });
    }
    // libvirt's IPv6 ICMP type/code match implies the ICMPv6 protocol.
    if m.protocol == Protocol::Ipv6
        && conds.iter().any(|c| matches!(c.sel, Sel::Icmp6Type | Sel::Icmp6Code))
        && !conds.iter().any(|c| c.sel == Sel::L4Proto)
    {
        conds.push(Cond { sel: Sel::L4Proto, test: Test::Eq(num(58)), negated: false });
    }
    Ok(conds)
}

fn reverse(conds: &[Cond], drop_src_mac: bool) -> Vec<Cond> {
    conds
        .iter()
        .filter(|c| !(drop_src_mac && c.sel == Sel::EtherSrc))
        .map(|c| Cond { sel: swap(c.sel), ..c.clone() })
        .collect()
}

fn ir_rule(rr: &ResolvedRule, conds: Vec<Cond>, reversed: bool) -> IrRule {
    let comment = rr.rule.matches.as_ref().and_then(|m| match m.get(Field::Comment) {
        Some(FieldValue { value: Value::Text(t), .. }) => Some(t.clone()),
        _ => None,
    });
    IrRule {
        conds,
        action: rr.rule.action,
        origin: rr.origin.clone(),
        inst: rr.inst,
        key: rr.key,
        priority: rr.rule.priority,
        comment,
        reversed,
    }
}

/// An Ethernet-layer rule on one side, if it applies there.
fn l2_rule(rr: &ResolvedRule, side: Side) -> Result<Option<IrRule>, LowerError> {
    let d = rr.rule.direction;
    let applies = match side {
        Side::FromGuest => d.covers_out(),
        Side::ToGuest => d.covers_in(),
    };
    if !applies {
        return Ok(None);
    }
    let conds = match &rr.rule.matches {
        Some(m) => conditions(rr, m)?,
        None => Vec::new(),
    };
    // libvirt builds the guest-side copy of an inout rule reversed.
    let reversed = side == Side::FromGuest && d == Direction::Inout;
    let conds = if reversed { reverse(&conds, false) } else { conds };
    Ok(Some(ir_rule(rr, conds, reversed)))
}

/// An IP-layer rule on one side, if it applies there (see the crate doc).
fn ip_rule(rr: &ResolvedRule, side: Side) -> Result<Option<IrRule>, LowerError> {
    let Some(m) = &rr.rule.matches else { return Ok(None) };
    let d = rr.rule.direction;
    let own = match d {
        Direction::Out => side == Side::FromGuest,
        Direction::In => side == Side::ToGuest,
        Direction::Inout => side == Side::ToGuest,
    };
    let conds = conditions(rr, m)?;
    let explicit_state = m.get(Field::State).is_some();
    let icmp_type = matches!(m.protocol, Protocol::Icmp | Protocol::Icmpv6) && m.get(Field::Type).is_some();
    if !own && d != Direction::Inout && (explicit_state || icmp_type || m.get(Field::ConnlimitAbove).is_some()) {
        return Ok(None);
    }
    let mut conds = if own { conds } else { reverse(&conds, true) };
    let stateful = rr.rule.action == Action::Accept && rr.rule.statematch && !explicit_state && d != Direction::Inout;
    if stateful {
        let bits = crate::UNTRACKED | if own { state::NEW | state::ESTABLISHED } else { state::ESTABLISHED };
        conds.push(Cond { sel: Sel::CtState, test: Test::States(bits), negated: false });
    }
    Ok(Some(ir_rule(rr, conds, !own)))
}

/// The guard of a jump to a sub-chain of this protocol family.
fn guard(j: &Jump) -> Vec<Cond> {
    let et = |t: u32| vec![Cond { sel: Sel::EtherType, test: Test::Eq(num(t)), negated: false }];
    match j.family.as_str() {
        "stp" => vec![Cond { sel: Sel::EtherDst, test: Test::Eq(Value::Mac(MacAddr(STP_BGA))), negated: false }],
        "vlan" => et(0x8100),
        "arp" => et(0x0806),
        "rarp" => et(0x8035),
        "ipv4" => et(0x0800),
        "ipv6" => et(0x86dd),
        _ => Vec::new(),
    }
}

fn side_program(r: &Resolved, side: Side) -> Result<SideProgram, LowerError> {
    let mut p = SideProgram::default();
    for c in &r.chains {
        let mut rules = Vec::new();
        for rr in &c.rules {
            rules.extend(l2_rule(rr, side)?);
        }
        p.chains.push(L2Chain { name: c.name.clone(), rules });
    }
    for e in &r.root {
        match e {
            RootEntry::Rule(rr) => p.root.extend(l2_rule(rr, side)?.map(L2Item::Rule)),
            RootEntry::Jump(j) => {
                let used = match side {
                    Side::FromGuest => j.out,
                    Side::ToGuest => j.r#in,
                };
                if used {
                    let idx = r.chains.iter().position(|c| c.name == j.chain).unwrap_or(0);
                    p.root.push(L2Item::Jump { chain: idx, guard: guard(j) });
                }
            }
        }
    }
    for rr in r.ipv4.iter().chain(&r.ipv6) {
        p.ip.extend(ip_rule(rr, side)?);
    }
    Ok(p)
}

/// Lowers a resolved binding (or template) into the program of each side.
pub fn lower(r: &Resolved) -> Result<PortProgram, LowerError> {
    Ok(PortProgram { from_guest: side_program(r, Side::FromGuest)?, to_guest: side_program(r, Side::ToGuest)? })
}
