//! Protocols, their attributes, and the order libvirt keeps them in.
//!
//! The tables mirror libvirt's `virXMLAttr2Struct` arrays in
//! `src/conf/nwfilter_conf.c`: the attribute order is the order libvirt prints
//! them in, and the kind says how a value is read and written. Keeping them as
//! data (not one struct per protocol) is what lets the reader, the writer, the
//! resolver and the fuzz/property tests share one source of truth.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A protocol element of a rule (`<tcp>`, `<arp>`, `<all-ipv6>`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    Mac,
    Vlan,
    Stp,
    Arp,
    Rarp,
    Ip,
    Ipv6,
    Tcp,
    Icmp,
    Igmp,
    Udp,
    Udplite,
    Esp,
    Ah,
    Sctp,
    All,
    TcpIpv6,
    Icmpv6,
    UdpIpv6,
    UdpliteIpv6,
    EspIpv6,
    AhIpv6,
    SctpIpv6,
    AllIpv6,
}

/// Which firewall layer a protocol element is enforced in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Ethernet-level rules (libvirt: ebtables); they live in the filter's chain.
    Ethernet,
    /// IPv4 transport rules (libvirt: iptables); chains do not apply.
    Ipv4,
    /// IPv6 transport rules (libvirt: ip6tables); chains do not apply.
    Ipv6,
}

impl Protocol {
    /// Every protocol, in the order libvirt's parser tries element names.
    pub const ALL: [Protocol; 24] = [
        Protocol::Arp,
        Protocol::Rarp,
        Protocol::Mac,
        Protocol::Vlan,
        Protocol::Stp,
        Protocol::Ip,
        Protocol::Ipv6,
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Udplite,
        Protocol::Esp,
        Protocol::Ah,
        Protocol::Sctp,
        Protocol::Icmp,
        Protocol::All,
        Protocol::Igmp,
        Protocol::TcpIpv6,
        Protocol::UdpIpv6,
        Protocol::UdpliteIpv6,
        Protocol::EspIpv6,
        Protocol::AhIpv6,
        Protocol::SctpIpv6,
        Protocol::Icmpv6,
        Protocol::AllIpv6,
    ];

    /// The XML element name.
    pub fn element(self) -> &'static str {
        match self {
            Protocol::Mac => "mac",
            Protocol::Vlan => "vlan",
            Protocol::Stp => "stp",
            Protocol::Arp => "arp",
            Protocol::Rarp => "rarp",
            Protocol::Ip => "ip",
            Protocol::Ipv6 => "ipv6",
            Protocol::Tcp => "tcp",
            Protocol::Icmp => "icmp",
            Protocol::Igmp => "igmp",
            Protocol::Udp => "udp",
            Protocol::Udplite => "udplite",
            Protocol::Esp => "esp",
            Protocol::Ah => "ah",
            Protocol::Sctp => "sctp",
            Protocol::All => "all",
            Protocol::TcpIpv6 => "tcp-ipv6",
            Protocol::Icmpv6 => "icmpv6",
            Protocol::UdpIpv6 => "udp-ipv6",
            Protocol::UdpliteIpv6 => "udplite-ipv6",
            Protocol::EspIpv6 => "esp-ipv6",
            Protocol::AhIpv6 => "ah-ipv6",
            Protocol::SctpIpv6 => "sctp-ipv6",
            Protocol::AllIpv6 => "all-ipv6",
        }
    }

    /// Looks a protocol up by its element name (exact, as libxml2 compares).
    pub fn from_element(name: &str) -> Option<Protocol> {
        Protocol::ALL.iter().copied().find(|p| p.element() == name)
    }

    /// The layer whose rules this protocol's matches become.
    pub fn layer(self) -> Layer {
        use Protocol::*;
        match self {
            Mac | Vlan | Stp | Arp | Rarp | Ip | Ipv6 => Layer::Ethernet,
            Tcp | Icmp | Igmp | Udp | Udplite | Esp | Ah | Sctp | All => Layer::Ipv4,
            TcpIpv6 | Icmpv6 | UdpIpv6 | UdpliteIpv6 | EspIpv6 | AhIpv6 | SctpIpv6 | AllIpv6 => Layer::Ipv6,
        }
    }

    /// The attributes this element accepts, in libvirt's print order.
    pub fn attributes(self) -> &'static [AttrSpec] {
        use Protocol::*;
        match self {
            Mac => MAC_ATTRS,
            Vlan => VLAN_ATTRS,
            Stp => STP_ATTRS,
            Arp | Rarp => ARP_ATTRS,
            Ip => IP_ATTRS,
            Ipv6 => IPV6_ATTRS,
            Tcp => TCP_ATTRS,
            Udp | Sctp => UDP_ATTRS,
            Udplite | Esp | Ah | All | Igmp => L3_ATTRS,
            Icmp => ICMP_ATTRS,
            TcpIpv6 => TCP6_ATTRS,
            UdpIpv6 | SctpIpv6 => UDP6_ATTRS,
            UdpliteIpv6 | EspIpv6 | AhIpv6 | AllIpv6 => L3_6_ATTRS,
            Icmpv6 => ICMP6_ATTRS,
        }
    }

    /// The spec of one attribute of this element, if it has it.
    pub fn spec(self, field: Field) -> Option<&'static AttrSpec> {
        self.attributes().iter().find(|a| a.field == field)
    }

    /// The spec of an attribute by its XML name.
    pub fn spec_by_name(self, name: &str) -> Option<&'static AttrSpec> {
        self.attributes().iter().find(|a| a.field.name() == name)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.element())
    }
}

/// One attribute of a protocol element.
///
/// `StpFlags` and `TcpFlags` share the XML name `flags` but not the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Field {
    SrcMacAddr,
    SrcMacMask,
    DstMacAddr,
    DstMacMask,
    ProtocolId,
    VlanId,
    EncapProtocol,
    Type,
    StpFlags,
    RootPriority,
    RootPriorityHi,
    RootAddress,
    RootAddressMask,
    RootCost,
    RootCostHi,
    SenderPriority,
    SenderPriorityHi,
    SenderAddress,
    SenderAddressMask,
    Port,
    PortHi,
    Age,
    AgeHi,
    MaxAge,
    MaxAgeHi,
    HelloTime,
    HelloTimeHi,
    ForwardDelay,
    ForwardDelayHi,
    HwType,
    ProtocolType,
    Opcode,
    ArpSrcMacAddr,
    ArpDstMacAddr,
    ArpSrcIpAddr,
    ArpSrcIpMask,
    ArpDstIpAddr,
    ArpDstIpMask,
    Gratuitous,
    SrcIpAddr,
    SrcIpMask,
    DstIpAddr,
    DstIpMask,
    SrcIpFrom,
    SrcIpTo,
    DstIpFrom,
    DstIpTo,
    IpProtocol,
    SrcPortStart,
    SrcPortEnd,
    DstPortStart,
    DstPortEnd,
    TypeEnd,
    Code,
    CodeEnd,
    Dscp,
    ConnlimitAbove,
    State,
    IpSet,
    IpSetFlags,
    TcpOption,
    TcpFlags,
    Comment,
}

impl Field {
    /// The XML attribute name.
    pub fn name(self) -> &'static str {
        use Field::*;
        match self {
            SrcMacAddr => "srcmacaddr",
            SrcMacMask => "srcmacmask",
            DstMacAddr => "dstmacaddr",
            DstMacMask => "dstmacmask",
            ProtocolId => "protocolid",
            VlanId => "vlanid",
            EncapProtocol => "encap-protocol",
            Type => "type",
            StpFlags => "flags",
            RootPriority => "root-priority",
            RootPriorityHi => "root-priority-hi",
            RootAddress => "root-address",
            RootAddressMask => "root-address-mask",
            RootCost => "root-cost",
            RootCostHi => "root-cost-hi",
            SenderPriority => "sender-priority",
            SenderPriorityHi => "sender-priority-hi",
            SenderAddress => "sender-address",
            SenderAddressMask => "sender-address-mask",
            Port => "port",
            PortHi => "port-hi",
            Age => "age",
            AgeHi => "age-hi",
            MaxAge => "max-age",
            MaxAgeHi => "max-age-hi",
            HelloTime => "hello-time",
            HelloTimeHi => "hello-time-hi",
            ForwardDelay => "forward-delay",
            ForwardDelayHi => "forward-delay-hi",
            HwType => "hwtype",
            ProtocolType => "protocoltype",
            Opcode => "opcode",
            ArpSrcMacAddr => "arpsrcmacaddr",
            ArpDstMacAddr => "arpdstmacaddr",
            ArpSrcIpAddr => "arpsrcipaddr",
            ArpSrcIpMask => "arpsrcipmask",
            ArpDstIpAddr => "arpdstipaddr",
            ArpDstIpMask => "arpdstipmask",
            Gratuitous => "gratuitous",
            SrcIpAddr => "srcipaddr",
            SrcIpMask => "srcipmask",
            DstIpAddr => "dstipaddr",
            DstIpMask => "dstipmask",
            SrcIpFrom => "srcipfrom",
            SrcIpTo => "srcipto",
            DstIpFrom => "dstipfrom",
            DstIpTo => "dstipto",
            IpProtocol => "protocol",
            SrcPortStart => "srcportstart",
            SrcPortEnd => "srcportend",
            DstPortStart => "dstportstart",
            DstPortEnd => "dstportend",
            TypeEnd => "typeend",
            Code => "code",
            CodeEnd => "codeend",
            Dscp => "dscp",
            ConnlimitAbove => "connlimit-above",
            State => "state",
            IpSet => "ipset",
            IpSetFlags => "ipsetflags",
            TcpOption => "option",
            TcpFlags => "flags",
            Comment => "comment",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an attribute's value is read and printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// 0..=255, decimal or hex.
    U8,
    /// 0..=65535, decimal or hex.
    U16,
    /// 32-bit, decimal or hex.
    U32,
    /// 0..=65535, decimal only (`connlimit-above`).
    U16Dec,
    /// A MAC address.
    Mac,
    /// A MAC mask (contiguous ones).
    MacMask,
    /// An IPv4 address.
    Ipv4,
    /// An IPv4 mask: a prefix length or a dotted mask.
    Ipv4Mask,
    /// An IPv6 address.
    Ipv6,
    /// An IPv6 mask: a prefix length or a mask address.
    Ipv6Mask,
    /// Free text, at most 256 bytes (`comment`).
    Comment,
    /// true/1/yes, anything else false (`gratuitous`).
    Bool,
    /// An ethertype ≥ 0x600 or a name (arp, rarp, ipv4, ipv6, vlan).
    EtherType,
    /// A VLAN id 0..=4095.
    VlanId,
    /// An encapsulated ethertype ≥ 0x3c or a name.
    VlanEncap,
    /// An ARP opcode: number or name (Request, Reply, ...).
    ArpOpcode,
    /// An IP protocol: number or name (tcp, udp, ...).
    IpProtocol,
    /// DSCP 0..=63.
    Dscp,
    /// Connection states: NEW,ESTABLISHED,RELATED,INVALID or NONE.
    State,
    /// TCP flags `MASK/FLAGS`.
    TcpFlags,
    /// An ipset name.
    IpSetName,
    /// ipset direction flags, `src,dst,...`.
    IpSetFlags,
}

/// One attribute of one protocol element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrSpec {
    /// Which attribute.
    pub field: Field,
    /// How its value is read.
    pub kind: Kind,
}

const fn a(field: Field, kind: Kind) -> AttrSpec {
    AttrSpec { field, kind }
}

use Field as F;
use Kind as K;

const MAC_ATTRS: &[AttrSpec] = &[
    a(F::SrcMacAddr, K::Mac),
    a(F::SrcMacMask, K::MacMask),
    a(F::DstMacAddr, K::Mac),
    a(F::DstMacMask, K::MacMask),
    a(F::ProtocolId, K::EtherType),
    a(F::Comment, K::Comment),
];

const VLAN_ATTRS: &[AttrSpec] = &[
    a(F::SrcMacAddr, K::Mac),
    a(F::SrcMacMask, K::MacMask),
    a(F::DstMacAddr, K::Mac),
    a(F::DstMacMask, K::MacMask),
    a(F::VlanId, K::VlanId),
    a(F::EncapProtocol, K::VlanEncap),
    a(F::Comment, K::Comment),
];

const STP_ATTRS: &[AttrSpec] = &[
    a(F::SrcMacAddr, K::Mac),
    a(F::SrcMacMask, K::MacMask),
    a(F::Type, K::U8),
    a(F::StpFlags, K::U8),
    a(F::RootPriority, K::U16),
    a(F::RootPriorityHi, K::U16),
    a(F::RootAddress, K::Mac),
    a(F::RootAddressMask, K::MacMask),
    a(F::RootCost, K::U32),
    a(F::RootCostHi, K::U32),
    a(F::SenderPriority, K::U16),
    a(F::SenderPriorityHi, K::U16),
    a(F::SenderAddress, K::Mac),
    a(F::SenderAddressMask, K::MacMask),
    a(F::Port, K::U16),
    a(F::PortHi, K::U16),
    a(F::Age, K::U16),
    a(F::AgeHi, K::U16),
    a(F::MaxAge, K::U16),
    a(F::MaxAgeHi, K::U16),
    a(F::HelloTime, K::U16),
    a(F::HelloTimeHi, K::U16),
    a(F::ForwardDelay, K::U16),
    a(F::ForwardDelayHi, K::U16),
    a(F::Comment, K::Comment),
];

const ARP_ATTRS: &[AttrSpec] = &[
    a(F::SrcMacAddr, K::Mac),
    a(F::SrcMacMask, K::MacMask),
    a(F::DstMacAddr, K::Mac),
    a(F::DstMacMask, K::MacMask),
    a(F::HwType, K::U16),
    a(F::ProtocolType, K::U16),
    a(F::Opcode, K::ArpOpcode),
    a(F::ArpSrcMacAddr, K::Mac),
    a(F::ArpDstMacAddr, K::Mac),
    a(F::ArpSrcIpAddr, K::Ipv4),
    a(F::ArpSrcIpMask, K::Ipv4Mask),
    a(F::ArpDstIpAddr, K::Ipv4),
    a(F::ArpDstIpMask, K::Ipv4Mask),
    a(F::Gratuitous, K::Bool),
    a(F::Comment, K::Comment),
];

const IP_ATTRS: &[AttrSpec] = &[
    a(F::SrcMacAddr, K::Mac),
    a(F::SrcMacMask, K::MacMask),
    a(F::DstMacAddr, K::Mac),
    a(F::DstMacMask, K::MacMask),
    a(F::SrcIpAddr, K::Ipv4),
    a(F::SrcIpMask, K::Ipv4Mask),
    a(F::DstIpAddr, K::Ipv4),
    a(F::DstIpMask, K::Ipv4Mask),
    a(F::IpProtocol, K::IpProtocol),
    a(F::SrcPortStart, K::U16),
    a(F::SrcPortEnd, K::U16),
    a(F::DstPortStart, K::U16),
    a(F::DstPortEnd, K::U16),
    a(F::Dscp, K::Dscp),
    a(F::Comment, K::Comment),
];

const IPV6_ATTRS: &[AttrSpec] = &[
    a(F::SrcMacAddr, K::Mac),
    a(F::SrcMacMask, K::MacMask),
    a(F::DstMacAddr, K::Mac),
    a(F::DstMacMask, K::MacMask),
    a(F::SrcIpAddr, K::Ipv6),
    a(F::SrcIpMask, K::Ipv6Mask),
    a(F::DstIpAddr, K::Ipv6),
    a(F::DstIpMask, K::Ipv6Mask),
    a(F::IpProtocol, K::IpProtocol),
    a(F::SrcPortStart, K::U16),
    a(F::SrcPortEnd, K::U16),
    a(F::DstPortStart, K::U16),
    a(F::DstPortEnd, K::U16),
    a(F::Type, K::U8),
    a(F::TypeEnd, K::U8),
    a(F::Code, K::U8),
    a(F::CodeEnd, K::U8),
    a(F::Comment, K::Comment),
];

/// Builds the shared IP-header part of the transport protocols' tables.
///
/// libvirt declares `dstipto` as an IPv4 address even for the `-ipv6`
/// elements (a slip in its `COMMON_IP_PROPS` macro); we keep that so our
/// reading of a filter is libvirt's.
macro_rules! l3_table {
    ($addr:expr, $mask:expr; $($extra:expr),* $(,)?) => {
        &[
            a(F::SrcMacAddr, K::Mac),
            a(F::SrcIpAddr, $addr),
            a(F::SrcIpMask, $mask),
            a(F::DstIpAddr, $addr),
            a(F::DstIpMask, $mask),
            a(F::SrcIpFrom, $addr),
            a(F::SrcIpTo, $addr),
            a(F::DstIpFrom, $addr),
            a(F::DstIpTo, K::Ipv4),
            a(F::Dscp, K::Dscp),
            a(F::ConnlimitAbove, K::U16Dec),
            a(F::State, K::State),
            a(F::IpSet, K::IpSetName),
            a(F::IpSetFlags, K::IpSetFlags),
            $($extra,)*
            a(F::Comment, K::Comment),
        ]
    };
}

const L3_ATTRS: &[AttrSpec] = l3_table!(K::Ipv4, K::Ipv4Mask;);
const L3_6_ATTRS: &[AttrSpec] = l3_table!(K::Ipv6, K::Ipv6Mask;);
const TCP_ATTRS: &[AttrSpec] = l3_table!(K::Ipv4, K::Ipv4Mask;
    a(F::SrcPortStart, K::U16),
    a(F::SrcPortEnd, K::U16),
    a(F::DstPortStart, K::U16),
    a(F::DstPortEnd, K::U16),
    a(F::TcpOption, K::U8),
    a(F::TcpFlags, K::TcpFlags),
);
// libvirt's tcp-ipv6 has `option` but no `flags`.
const TCP6_ATTRS: &[AttrSpec] = l3_table!(K::Ipv6, K::Ipv6Mask;
    a(F::SrcPortStart, K::U16),
    a(F::SrcPortEnd, K::U16),
    a(F::DstPortStart, K::U16),
    a(F::DstPortEnd, K::U16),
    a(F::TcpOption, K::U8),
);
const UDP_ATTRS: &[AttrSpec] = l3_table!(K::Ipv4, K::Ipv4Mask;
    a(F::SrcPortStart, K::U16),
    a(F::SrcPortEnd, K::U16),
    a(F::DstPortStart, K::U16),
    a(F::DstPortEnd, K::U16),
);
const UDP6_ATTRS: &[AttrSpec] = l3_table!(K::Ipv6, K::Ipv6Mask;
    a(F::SrcPortStart, K::U16),
    a(F::SrcPortEnd, K::U16),
    a(F::DstPortStart, K::U16),
    a(F::DstPortEnd, K::U16),
);
const ICMP_ATTRS: &[AttrSpec] = l3_table!(K::Ipv4, K::Ipv4Mask;
    a(F::Type, K::U8),
    a(F::Code, K::U8),
);
const ICMP6_ATTRS: &[AttrSpec] = l3_table!(K::Ipv6, K::Ipv6Mask;
    a(F::Type, K::U8),
    a(F::Code, K::U8),
);

/// Pairs whose negation libvirt forces to follow a leader after parsing
/// (`virNWFilterRuleDefFixup`): `(follower, leader)`.
///
/// libvirt copies the leader's `match='no'` onto the follower even when the
/// leader is absent, so `<tcp match='no' dstportstart='22'/>` ends up a
/// positive match. We read filters the same way and warn about it.
pub fn negation_links(protocol: Protocol) -> &'static [(Field, Field)] {
    use Protocol::*;
    const MACS: &[(Field, Field)] = &[(F::SrcMacMask, F::SrcMacAddr), (F::DstMacMask, F::DstMacAddr)];
    const STP: &[(Field, Field)] = &[
        (F::SrcMacMask, F::SrcMacAddr),
        (F::RootPriorityHi, F::RootPriority),
        (F::RootAddressMask, F::RootAddress),
        (F::RootCostHi, F::RootCost),
        (F::SenderPriorityHi, F::SenderPriority),
        (F::SenderAddressMask, F::SenderAddress),
        (F::PortHi, F::Port),
        (F::AgeHi, F::Age),
        (F::MaxAgeHi, F::MaxAge),
        (F::HelloTimeHi, F::HelloTime),
        (F::ForwardDelayHi, F::ForwardDelay),
    ];
    const IP: &[(Field, Field)] = &[(F::SrcIpMask, F::SrcIpAddr), (F::DstIpMask, F::DstIpAddr)];
    const IPV6: &[(Field, Field)] = &[
        (F::SrcIpMask, F::SrcIpAddr),
        (F::DstIpMask, F::DstIpAddr),
        (F::TypeEnd, F::Type),
        (F::Code, F::Type),
        (F::CodeEnd, F::Type),
    ];
    const L3: &[(Field, Field)] = &[
        (F::SrcIpMask, F::SrcIpAddr),
        (F::DstIpMask, F::DstIpAddr),
        (F::SrcIpTo, F::SrcIpFrom),
        (F::DstIpTo, F::DstIpFrom),
    ];
    const PORTS: &[(Field, Field)] = &[
        (F::SrcIpMask, F::SrcIpAddr),
        (F::DstIpMask, F::DstIpAddr),
        (F::SrcIpTo, F::SrcIpFrom),
        (F::DstIpTo, F::DstIpFrom),
        (F::SrcPortEnd, F::SrcPortStart),
        (F::DstPortStart, F::SrcPortStart),
        (F::DstPortEnd, F::SrcPortStart),
    ];
    const ICMP: &[(Field, Field)] = &[
        (F::SrcIpMask, F::SrcIpAddr),
        (F::DstIpMask, F::DstIpAddr),
        (F::SrcIpTo, F::SrcIpFrom),
        (F::DstIpTo, F::DstIpFrom),
        (F::Code, F::Type),
    ];
    match protocol {
        Mac | Vlan => MACS,
        Stp => STP,
        Arp | Rarp => &[],
        Ip => IP,
        Ipv6 => IPV6,
        Tcp | TcpIpv6 | Udp | UdpIpv6 | Sctp | SctpIpv6 => PORTS,
        Udplite | UdpliteIpv6 | Esp | EspIpv6 | Ah | AhIpv6 | All | AllIpv6 | Igmp => L3,
        Icmp | Icmpv6 => ICMP,
    }
}

/// Whether libvirt applies its ipset clean-up to this protocol
/// (`virNWFilterRuleDefFixupIPSet`; `all` and `all-ipv6` are spared).
pub fn has_ipset_fixup(protocol: Protocol) -> bool {
    !matches!(
        protocol,
        Protocol::All
            | Protocol::AllIpv6
            | Protocol::Mac
            | Protocol::Vlan
            | Protocol::Stp
            | Protocol::Arp
            | Protocol::Rarp
    )
}
