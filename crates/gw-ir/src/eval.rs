//! Which rule decides a packet, and what it decides.

use crate::{Cond, IrRule, L2Item, Sel, SideProgram, Test};
use gw_model::{Action, MacAddr, Value};
use gw_resolve::Origin;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A frame as the filter sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// Source MAC.
    pub ether_src: MacAddr,
    /// Destination MAC.
    pub ether_dst: MacAddr,
    /// Ethertype (the outer one for tagged frames).
    pub ether_type: u16,
    /// 802.1Q tag: VLAN id and the encapsulated ethertype.
    #[serde(default)]
    pub vlan: Option<(u16, u16)>,
    /// ARP/RARP header.
    #[serde(default)]
    pub arp: Option<Arp>,
    /// IP header and transport fields.
    #[serde(default)]
    pub ip: Option<Ip>,
    /// Raw frame bytes from the start of the Ethernet header, for STP
    /// BPDU fields; may be empty.
    #[serde(default)]
    pub raw: Vec<u8>,
    /// Connection-tracking state bits (`gw_model::value::state`); 0 for
    /// untracked or non-IP.
    #[serde(default)]
    pub ct: u8,
}

/// ARP header fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arp {
    /// Hardware type.
    pub htype: u16,
    /// Protocol type.
    pub ptype: u16,
    /// Opcode.
    pub op: u16,
    /// Sender MAC.
    pub sha: MacAddr,
    /// Sender IP.
    pub spa: std::net::Ipv4Addr,
    /// Target MAC.
    pub tha: MacAddr,
    /// Target IP.
    pub tpa: std::net::Ipv4Addr,
}

/// IP header and transport fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ip {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Protocol / next header.
    pub proto: u8,
    /// DSCP.
    #[serde(default)]
    pub dscp: u8,
    /// Source port (TCP, UDP, UDP-Lite, SCTP, DCCP).
    #[serde(default)]
    pub sport: Option<u16>,
    /// Destination port.
    #[serde(default)]
    pub dport: Option<u16>,
    /// ICMP/ICMPv6 type and code.
    #[serde(default)]
    pub icmp: Option<(u8, u8)>,
    /// TCP flags.
    #[serde(default)]
    pub tcp_flags: Option<u8>,
}

/// The fate of a packet at a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// It passes.
    Accept,
    /// It is dropped silently.
    Drop,
    /// It is dropped and the sender told.
    Reject,
}

/// A verdict and the rule that decided it (none: a layer's default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// The deciding rule, if a rule decided.
    pub rule: Option<Origin>,
    /// `ethernet` or `ip`: the layer that decided.
    pub layer: &'static str,
}

fn as_u32(v: &Value) -> Option<u32> {
    match v {
        Value::Num { value, .. } => Some(*value),
        Value::Prefix(p) => Some(u32::from(*p)),
        _ => None,
    }
}

fn mac_eq(a: &MacAddr, v: &Value, mask: Option<&Value>) -> bool {
    let Value::Mac(b) = v else { return false };
    let m = match mask {
        Some(Value::Mac(m)) => m.0,
        _ => [0xff; 6],
    };
    (0..6).all(|i| a.0[i] & m[i] == b.0[i] & m[i])
}

fn ip_in(a: IpAddr, v: &Value, prefix: Option<u32>) -> bool {
    match (a, v) {
        (IpAddr::V4(a), Value::Ipv4(b)) => {
            let p = prefix.unwrap_or(32).min(32);
            let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & m == u32::from(*b) & m
        }
        (IpAddr::V6(a), Value::Ipv6(b)) => {
            let p = prefix.unwrap_or(128).min(128);
            let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & m == u128::from(*b) & m
        }
        _ => false,
    }
}

fn ip_range(a: IpAddr, lo: &Value, hi: &Value) -> bool {
    match (a, lo, hi) {
        (IpAddr::V4(a), Value::Ipv4(l), Value::Ipv4(h)) => *l <= a && a <= *h,
        (IpAddr::V6(a), Value::Ipv6(l), Value::Ipv6(h)) => *l <= a && a <= *h,
        _ => false,
    }
}

/// The test result of one condition, before negation; `None` when the
/// frame has no such field (the condition then fails, negated or not, as a
/// header match on a missing header does).
fn test(c: &Cond, p: &Packet) -> Option<bool> {
    let num_test = |x: u32| -> Option<bool> {
        Some(match &c.test {
            Test::Eq(v) => as_u32(v)? == x,
            Test::Range(a, b) => as_u32(a)? <= x && x <= as_u32(b)?,
            _ => return None,
        })
    };
    let ip = p.ip.as_ref();
    let arp = p.arp.as_ref();
    match c.sel {
        Sel::EtherSrc | Sel::EtherDst => {
            let a = if c.sel == Sel::EtherSrc { &p.ether_src } else { &p.ether_dst };
            match &c.test {
                Test::Eq(v) => Some(mac_eq(a, v, None)),
                Test::Masked(v, m) => Some(mac_eq(a, v, Some(m))),
                _ => None,
            }
        }
        Sel::EtherType => num_test(u32::from(p.ether_type)),
        Sel::VlanId => num_test(u32::from(p.vlan?.0)),
        Sel::VlanType => num_test(u32::from(p.vlan?.1)),
        Sel::ArpHtype => num_test(u32::from(arp?.htype)),
        Sel::ArpPtype => num_test(u32::from(arp?.ptype)),
        Sel::ArpOp => num_test(u32::from(arp?.op)),
        Sel::ArpSha | Sel::ArpTha => {
            let a = if c.sel == Sel::ArpSha { &arp?.sha } else { &arp?.tha };
            match &c.test {
                Test::Eq(v) => Some(mac_eq(a, v, None)),
                _ => None,
            }
        }
        Sel::ArpSpa | Sel::ArpTpa => {
            let a = IpAddr::V4(if c.sel == Sel::ArpSpa { arp?.spa } else { arp?.tpa });
            match &c.test {
                Test::Eq(v) => Some(ip_in(a, v, None)),
                Test::Masked(v, m) => Some(ip_in(a, v, as_u32(m))),
                _ => None,
            }
        }
        Sel::ArpGratuitous => Some(arp?.spa == arp?.tpa),
        Sel::Ip4Src | Sel::Ip4Dst | Sel::Ip6Src | Sel::Ip6Dst => {
            let ip = ip?;
            let a = if matches!(c.sel, Sel::Ip4Src | Sel::Ip6Src) { ip.src } else { ip.dst };
            let v6 = matches!(c.sel, Sel::Ip6Src | Sel::Ip6Dst);
            if a.is_ipv6() != v6 {
                return None;
            }
            match &c.test {
                Test::Eq(v) => Some(ip_in(a, v, None)),
                Test::Masked(v, m) => Some(ip_in(a, v, as_u32(m))),
                Test::Range(lo, hi) => Some(ip_range(a, lo, hi)),
                _ => None,
            }
        }
        Sel::L4Proto => num_test(u32::from(ip?.proto)),
        Sel::Dscp => num_test(u32::from(ip?.dscp)),
        Sel::SrcPort => num_test(u32::from(ip?.sport?)),
        Sel::DstPort => num_test(u32::from(ip?.dport?)),
        Sel::IcmpType | Sel::Icmp6Type | Sel::IcmpCode | Sel::Icmp6Code => {
            // An ICMP field exists only in packets of its own ICMP version.
            let ip = ip?;
            let want = if matches!(c.sel, Sel::IcmpType | Sel::IcmpCode) { 1 } else { 58 };
            if ip.proto != want {
                return None;
            }
            let (ty, code) = ip.icmp?;
            num_test(u32::from(if matches!(c.sel, Sel::IcmpType | Sel::Icmp6Type) { ty } else { code }))
        }
        Sel::TcpFlags => {
            let f = ip?.tcp_flags?;
            match c.test {
                Test::Flags { mask, set } => Some(f & mask == set),
                _ => None,
            }
        }
        Sel::CtState => match c.test {
            // ct 0 on an IP packet: untracked (see crate::UNTRACKED).
            Test::States(bits) => {
                Some(p.ip.is_some() && ((if p.ct == 0 { crate::UNTRACKED } else { p.ct }) & bits) != 0)
            }
            _ => None,
        },
        Sel::Stp { offset, len } => {
            let o = usize::from(offset);
            let bytes = p.raw.get(o..o + usize::from(len))?;
            match &c.test {
                Test::Eq(Value::Mac(m)) => Some(bytes == m.0),
                Test::Masked(v, m) => {
                    let (Value::Mac(v), Value::Mac(m)) = (v, m) else { return None };
                    Some((0..6).all(|i| bytes[i] & m.0[i] == v.0[i] & m.0[i]))
                }
                _ => num_test(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))),
            }
        }
    }
}

fn matches(rule_conds: &[Cond], p: &Packet) -> bool {
    rule_conds.iter().all(|c| match test(c, p) {
        Some(r) => r != c.negated,
        None => false,
    })
}

enum L2Outcome {
    Done(Decision),
    ToIp,
}

/// Evaluates one side of a port's program on a packet.
pub fn eval(prog: &SideProgram, p: &Packet) -> Decision {
    match eval_l2(prog, p) {
        L2Outcome::Done(d) => d,
        L2Outcome::ToIp => eval_ip(&prog.ip, p),
    }
}

fn decided(rule: &IrRule, verdict: Verdict, layer: &'static str) -> Decision {
    Decision { verdict, rule: Some(rule.origin.clone()), layer }
}

fn eval_l2(prog: &SideProgram, p: &Packet) -> L2Outcome {
    for item in &prog.root {
        match item {
            L2Item::Rule(r) if matches(&r.conds, p) => match r.action {
                // libvirt's ebtables has no reject: it drops.
                Action::Drop | Action::Reject => return L2Outcome::Done(decided(r, Verdict::Drop, "ethernet")),
                Action::Accept | Action::Return => return L2Outcome::ToIp,
                Action::Continue => {}
            },
            L2Item::Rule(_) => {}
            L2Item::Jump { chain, guard } if matches(guard, p) => {
                let Some(c) = prog.chains.get(*chain) else { continue };
                for r in &c.rules {
                    if !matches(&r.conds, p) {
                        continue;
                    }
                    match r.action {
                        Action::Drop | Action::Reject => {
                            return L2Outcome::Done(decided(r, Verdict::Drop, "ethernet"));
                        }
                        Action::Accept => return L2Outcome::ToIp,
                        Action::Return => break,
                        Action::Continue => {}
                    }
                }
            }
            L2Item::Jump { .. } => {}
        }
    }
    L2Outcome::ToIp
}

fn eval_ip(rules: &[IrRule], p: &Packet) -> Decision {
    for r in rules {
        if matches(&r.conds, p) {
            match r.action {
                Action::Accept | Action::Return => return decided(r, Verdict::Accept, "ip"),
                Action::Drop => return decided(r, Verdict::Drop, "ip"),
                Action::Reject => return decided(r, Verdict::Reject, "ip"),
                Action::Continue => {}
            }
        }
    }
    Decision { verdict: Verdict::Accept, rule: None, layer: "ip" }
}
