//! proptest strategies for generated filters (feature `arbitrary`), shared
//! by the round-trip tests of `gw-xml` and the resolver's no-panic tests.
//!
//! Values are generated as text and read with [`parse_value`], so every
//! generated model is one the reader can produce, and libvirt's clean-up
//! ([`ProtocolMatch::fixup`]) is applied, as after reading.

use crate::filter::{Action, Direction, Entry, FieldValue, Filter, FilterRef, ProtocolMatch, Rule};
use crate::param::ParamValue;
use crate::protocol::{Field, Kind, Protocol};
use crate::value::{parse_value, Value, VarAccess};
use proptest::prelude::*;
use proptest::sample::select;
use std::collections::BTreeMap;

/// Text for a value of `kind`; may be refused by the reader (then dropped).
fn value_text(kind: Kind) -> BoxedStrategy<String> {
    let num = |max: u32| {
        prop_oneof![(0..=max).prop_map(|v| v.to_string()), (0..=max).prop_map(|v| format!("{v:#x}"))].boxed()
    };
    let ip4 = (any::<[u8; 4]>()).prop_map(|b| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]));
    let ip6 = any::<[u16; 8]>().prop_map(|w| std::net::Ipv6Addr::from(w).to_string());
    let mac = any::<[u8; 6]>().prop_map(|b| crate::value::MacAddr(b).to_string());
    match kind {
        Kind::U8 => num(0xff),
        Kind::U16 | Kind::ArpOpcode => num(0xffff),
        Kind::U32 => num(u32::MAX),
        Kind::U16Dec => (0..=0xffffu32).prop_map(|v| v.to_string()).boxed(),
        Kind::Dscp => num(63),
        Kind::VlanId => num(4095),
        Kind::EtherType | Kind::VlanEncap => {
            prop_oneof![select(vec!["arp", "rarp", "ipv4", "ipv6", "vlan"]).prop_map(str::to_string), num(0xffff)]
                .boxed()
        }
        Kind::IpProtocol => {
            prop_oneof![select(vec!["tcp", "udp", "icmp", "sctp", "esp"]).prop_map(str::to_string), num(0xff)].boxed()
        }
        Kind::Mac => mac.boxed(),
        Kind::MacMask => (0..=48u32)
            .prop_map(|p| {
                let bits: u64 = if p == 0 { 0 } else { (!0u64 << (48 - p)) & 0xffff_ffff_ffff };
                let b = bits.to_be_bytes();
                crate::value::MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]]).to_string()
            })
            .boxed(),
        Kind::Ipv4 => ip4.boxed(),
        Kind::Ipv6 => ip6.boxed(),
        Kind::Ipv4Mask => (0..=32u32).prop_map(|v| v.to_string()).boxed(),
        Kind::Ipv6Mask => (0..=128u32).prop_map(|v| v.to_string()).boxed(),
        Kind::Comment => "[a-zA-Z0-9 _.,:;!?<>&'\"/=-]{0,40}".boxed(),
        Kind::Bool => select(vec!["true", "false"]).prop_map(str::to_string).boxed(),
        Kind::State => select(vec!["NEW", "ESTABLISHED", "NEW,ESTABLISHED", "RELATED,INVALID", "NONE"])
            .prop_map(str::to_string)
            .boxed(),
        Kind::TcpFlags => {
            select(vec!["SYN/SYN", "SYN,ACK/ALL", "NONE/ALL", "FIN,RST/RST"]).prop_map(str::to_string).boxed()
        }
        Kind::IpSetName => "[a-z][a-z0-9_.:+-]{0,10}".boxed(),
        Kind::IpSetFlags => select(vec!["src", "dst", "src,dst", "dst,src,src"]).prop_map(str::to_string).boxed(),
    }
}

/// A variable reference over a small set of names.
pub fn var_access() -> impl Strategy<Value = VarAccess> {
    (
        select(vec!["IP", "MAC", "A", "B", "PORTS"]),
        prop_oneof![Just(None), (0..3u32).prop_map(Some), (0..3u32).prop_map(|i| Some(i + 100))],
    )
        .prop_map(|(n, a)| {
            let access = match a {
                None => crate::value::Access::Iterator(0),
                Some(i) if i >= 100 => crate::value::Access::Element(i - 100),
                Some(i) => crate::value::Access::Iterator(i),
            };
            VarAccess { name: n.to_string(), access }
        })
}

/// A protocol element with some attributes, cleaned up as after reading.
pub fn protocol_match() -> impl Strategy<Value = ProtocolMatch> {
    select(Protocol::ALL.to_vec()).prop_flat_map(|p| {
        let fields: Vec<BoxedStrategy<Option<(Field, FieldValue)>>> = p
            .attributes()
            .iter()
            .map(|spec| {
                let spec = *spec;
                let text = prop_oneof![4 => value_text(spec.kind).prop_map(Some), 1 => var_access().prop_map(|v| Some(format!("${v}")))];
                (any::<bool>(), any::<bool>(), text)
                    .prop_map(move |(present, negated, text)| {
                        if !present {
                            return None;
                        }
                        let text = text?;
                        let value = match text.strip_prefix('$') {
                            Some(v) => Value::Var(VarAccess::parse(v).ok()?),
                            None => parse_value(spec.kind, &text).ok()?,
                        };
                        Some((spec.field, FieldValue { value, negated }))
                    })
                    .boxed()
            })
            .collect();
        (Just(p), fields)
    })
    .prop_map(|(p, fields)| {
        let mut m = ProtocolMatch::new(p);
        m.fields.extend(fields.into_iter().flatten());
        // The reader refuses ports on <ip>/<ipv6> without a port protocol.
        if matches!(p, Protocol::Ip | Protocol::Ipv6)
            && !matches!(m.get(Field::IpProtocol).map(|f| &f.value), Some(Value::Num { value: 6 | 17 | 33 | 132, .. }))
        {
            for f in [Field::SrcPortStart, Field::SrcPortEnd, Field::DstPortStart, Field::DstPortEnd] {
                m.fields.remove(&f);
            }
        }
        m.fixup();
        m
    })
}

/// A rule.
pub fn rule() -> impl Strategy<Value = Rule> {
    (
        select(Action::NAMES.iter().map(|(a, _)| *a).collect::<Vec<_>>()),
        select(Direction::NAMES.iter().map(|(d, _)| *d).collect::<Vec<_>>()),
        -1000..=1000i32,
        any::<bool>(),
        proptest::option::weighted(0.85, protocol_match()),
    )
        .prop_map(|(action, direction, priority, statematch, matches)| Rule {
            action,
            direction,
            priority,
            statematch,
            matches,
        })
}

/// Parameters: valid names with one to three valid values.
pub fn params() -> impl Strategy<Value = BTreeMap<String, Vec<ParamValue>>> {
    proptest::collection::btree_map(
        select(vec!["IP", "MAC", "A", "B", "PORTS", "DHCPSERVER"]).prop_map(str::to_string),
        proptest::collection::vec(
            prop_oneof!["192\\.0\\.2\\.[0-9]{1,2}", "[0-9]{1,4}", "52:54:00:0[0-9]:00:0[0-9]", "[a-z]{1,5}",]
                .prop_filter_map("a valid parameter value", |t| ParamValue::new(t).ok()),
            1..4,
        ),
        0..4,
    )
}

/// A filterref to one of `names`.
pub fn filterref(names: Vec<&'static str>) -> impl Strategy<Value = FilterRef> {
    (select(names), params()).prop_map(|(f, params)| FilterRef { filter: f.to_string(), params })
}

/// A filter named `name` whose filterrefs point into `names`.
pub fn filter_named(name: String, names: Vec<&'static str>) -> impl Strategy<Value = Filter> {
    let chain = prop_oneof![
        Just(("root".to_string(), None)),
        (
            select(vec!["mac", "vlan", "stp", "arp", "rarp", "ipv4", "ipv6"]),
            "(-[a-z0-9]{1,3})?",
            proptest::option::of(-1000..=1000i32)
        )
            .prop_map(|(p, suffix, prio)| (format!("{p}{suffix}"), prio)),
    ];
    let uuid = proptest::option::of(any::<[u8; 16]>().prop_map(|b| {
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
    }));
    let entries = proptest::collection::vec(
        prop_oneof![4 => rule().prop_map(Entry::Rule), 1 => filterref(names).prop_map(Entry::FilterRef)],
        0..6,
    );
    (chain, uuid, entries).prop_map(move |((chain, prio), uuid, entries)| {
        let priority = prio.unwrap_or_else(|| crate::filter::default_chain_priority(&chain));
        Filter { name: name.clone(), chain, priority, uuid, entries }
    })
}

/// A filter with a generated name.
pub fn filter() -> impl Strategy<Value = Filter> {
    "[a-zA-Z][a-zA-Z0-9_.-]{0,15}".prop_flat_map(|n| filter_named(n, vec!["clean-traffic", "f1", "f2", "f3"]))
}
