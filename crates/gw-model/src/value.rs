//! Attribute values: how each kind is read from text and written back.
//!
//! Reading follows libvirt's `virNWFilterRuleDetailsParse` (numbers are tried
//! as decimal, then as hex; masks are prefix lengths or dotted masks; names of
//! ethertypes, opcodes and IP protocols are case-insensitive). Writing follows
//! `virNWFilterRuleDefDetailsFormat` (hex stays hex, masks become prefix
//! lengths, well-known numbers become names).

use crate::protocol::Kind;
use serde::{Deserialize, Serialize};
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A variable reference: `$NAME`, `$NAME[@ITER]` or `$NAME[INDEX]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VarAccess {
    /// The variable's name.
    pub name: String,
    /// How the variable's list is walked.
    pub access: Access,
}

/// How a rule walks a variable's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// `$X` (iterator 0) or `$X[@N]`: every value, in step with other
    /// variables of the same iterator.
    Iterator(u32),
    /// `$X[N]`: only the N-th value (0-based).
    Element(u32),
}

/// The largest iterator id libvirt accepts.
pub const MAX_ITER_ID: u32 = 1000;

/// Characters allowed in a variable name (libvirt's `VALID_VARNAME`).
pub fn is_var_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Characters allowed in a parameter value (libvirt's `VALID_VARVALUE`).
pub fn is_var_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':')
}

impl VarAccess {
    /// Parses the text after the `$`.
    pub fn parse(s: &str) -> Result<VarAccess, String> {
        let end = s.find(|c: char| !is_var_name_char(c)).unwrap_or(s.len());
        let name = &s[..end];
        if name.is_empty() {
            return Err("a variable needs a name of letters, digits and '_'".into());
        }
        let rest = &s[end..];
        if rest.is_empty() {
            return Ok(VarAccess { name: name.to_string(), access: Access::Iterator(0) });
        }
        // libvirt (virNWFilterVarAccessParse) skips blanks inside the
        // brackets and ignores whatever follows the closing one.
        let malformed = || format!("malformed variable '${s}': expected $NAME, $NAME[N] or $NAME[@N]");
        let inner = rest.strip_prefix('[').ok_or_else(malformed)?.trim_start();
        let (is_iter, inner) = match inner.strip_prefix('@') {
            Some(d) => (true, d.trim_start()),
            None => (false, inner),
        };
        let digits_end = inner.find(|c: char| !c.is_ascii_digit()).unwrap_or(inner.len());
        let (digits, tail) = inner.split_at(digits_end);
        let n: Option<u32> = digits.parse().ok();
        let (Some(n), true) = (n, tail.trim_start().starts_with(']')) else {
            return Err(if is_iter {
                format!("malformed iterator id in '${s}'")
            } else {
                format!("malformed array index in '${s}'")
            });
        };
        let access = if is_iter {
            if n > MAX_ITER_ID {
                return Err(format!("iterator id {n} exceeds the maximum of {MAX_ITER_ID}"));
            }
            Access::Iterator(n)
        } else {
            Access::Element(n)
        };
        Ok(VarAccess { name: name.to_string(), access })
    }
}

impl fmt::Display for VarAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match self.access {
            Access::Iterator(0) => Ok(()),
            Access::Iterator(n) => write!(f, "[@{n}]"),
            Access::Element(n) => write!(f, "[{n}]"),
        }
    }
}

/// A MAC address (also used for MAC masks).
///
/// Serialized as the string everyone writes (`"52:54:00:00:00:01"`, as
/// [`fmt::Display`] prints it); deserialized from that string (as
/// [`MacAddr::parse`] reads it) or, for JSON written before, from an array
/// of six numbers (`[82,84,0,0,0,1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<MacAddr, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MacAddr;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MAC address like \"52:54:00:12:34:56\"")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<MacAddr, E> {
                MacAddr::parse(s).ok_or_else(|| {
                    E::custom(format_args!(
                        "'{}' is not a MAC address: expected six hex octets like \"52:54:00:12:34:56\"",
                        s.escape_debug()
                    ))
                })
            }

            /// The form serde's derive wrote before: six numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<MacAddr, A::Error> {
                let mut out = [0u8; 6];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = seq.next_element()?.ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(7, &self));
                }
                Ok(MacAddr(out))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl MacAddr {
    /// Parses `a:b:c:d:e:f` with one or two hex digits per octet.
    pub fn parse(s: &str) -> Option<MacAddr> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for o in out.iter_mut() {
            let p = parts.next()?;
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *o = u8::from_str_radix(p, 16).ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// Connection-state flags of the `state` attribute.
pub mod state {
    /// NEW
    pub const NEW: u8 = 1 << 1;
    /// ESTABLISHED
    pub const ESTABLISHED: u8 = 1 << 2;
    /// RELATED
    pub const RELATED: u8 = 1 << 3;
    /// INVALID
    pub const INVALID: u8 = 1 << 4;
    /// NONE: no state match at all.
    pub const NONE: u8 = 1 << 5;
    /// Names in libvirt's print order.
    pub const NAMES: [(u8, &str); 5] =
        [(NEW, "NEW"), (ESTABLISHED, "ESTABLISHED"), (RELATED, "RELATED"), (INVALID, "INVALID"), (NONE, "NONE")];
}

/// TCP flag bits, as libvirt names them.
pub const TCP_FLAG_NAMES: [(u8, &str); 6] =
    [(0x1, "FIN"), (0x2, "SYN"), (0x4, "RST"), (0x8, "PSH"), (0x10, "ACK"), (0x20, "URG")];

/// Ethertype names libvirt knows.
pub const ETHERTYPE_NAMES: [(u16, &str); 5] =
    [(0x0806, "arp"), (0x8035, "rarp"), (0x0800, "ipv4"), (0x86dd, "ipv6"), (0x8100, "vlan")];

/// ARP opcode names libvirt knows.
pub const ARP_OPCODE_NAMES: [(u16, &str); 9] = [
    (1, "Request"),
    (2, "Reply"),
    (3, "Request_Reverse"),
    (4, "Reply_Reverse"),
    (5, "DRARP_Request"),
    (6, "DRARP_Reply"),
    (7, "DRARP_Error"),
    (8, "InARP_Request"),
    (9, "ARP_NAK"),
];

/// IP protocol names libvirt knows.
pub const IP_PROTOCOL_NAMES: [(u8, &str); 9] = [
    (6, "tcp"),
    (17, "udp"),
    (136, "udplite"),
    (50, "esp"),
    (51, "ah"),
    (1, "icmp"),
    (2, "igmp"),
    (132, "sctp"),
    (58, "icmpv6"),
];

/// A concrete attribute value, or a variable to be filled in at resolve time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// A number; `hex` remembers that it was written in hex so it prints back so.
    Num {
        /// The value.
        value: u32,
        /// Written in hex.
        hex: bool,
    },
    /// A MAC address or MAC mask.
    Mac(MacAddr),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address.
    Ipv6(Ipv6Addr),
    /// A mask as prefix length.
    Prefix(u8),
    /// Free text.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// Connection states (bits of [`state`]).
    State(u8),
    /// TCP flags: which bits to look at, and which of them must be set.
    TcpFlags {
        /// Bits examined.
        mask: u8,
        /// Bits that must be set.
        set: u8,
    },
    /// An ipset name.
    IpSet(String),
    /// ipset direction flags; `true` = src.
    IpSetFlags(Vec<bool>),
    /// A variable reference.
    Var(VarAccess),
}

/// libvirt's maximum comment length in bytes.
pub const MAX_COMMENT_LEN: usize = 256;
/// libvirt's maximum ipset name length in bytes.
pub const MAX_IPSET_NAME_LEN: usize = 31;

/// Reads an unsigned number the way libvirt's `virStrToLong_ui` does with
/// strtoul: leading blanks and a sign are allowed, `-N` wraps to 2^32-N, the
/// whole string must be digits of the base (hex may carry `0x`).
pub(crate) fn strtoul(s: &str, radix: u32) -> Option<u32> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let t = if radix == 16 {
        t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).filter(|r| !r.is_empty()).unwrap_or(t)
    } else {
        t
    };
    if t.is_empty() || !t.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = u64::from_str_radix(t, radix).ok()?;
    if neg {
        // strtoul negates in unsigned long; libvirt then keeps the low 32 bits
        // only when the magnitude fits.
        if v > u64::from(u32::MAX) {
            return None;
        }
        return Some((v as u32).wrapping_neg());
    }
    u32::try_from(v).ok()
}

/// What a value's text reads as under each of the number and address
/// readers the kinds use. [`parse_value`] reads the text when asked;
/// [`crate::param::ParamValue`] answers from what it read once when it was
/// made. Both go through [`read_value`], so they read every kind alike.
pub(crate) trait Readings {
    /// `strtoul(s, 10)` ([`strtoul`]).
    fn dec(&self) -> Option<u32>;
    /// `strtoul(s, 16)` ([`strtoul`]).
    fn hex(&self) -> Option<u32>;
    /// [`parse_ipv4`].
    fn ipv4(&self) -> Option<Ipv4Addr>;
    /// [`parse_ipv6`].
    fn ipv6(&self) -> Option<Ipv6Addr>;
    /// [`MacAddr::parse`].
    fn mac(&self) -> Option<MacAddr>;
}

/// The readings of a text, each read when asked.
pub(crate) struct FromText<'a>(pub(crate) &'a str);

impl Readings for FromText<'_> {
    fn dec(&self) -> Option<u32> {
        strtoul(self.0, 10)
    }
    fn hex(&self) -> Option<u32> {
        strtoul(self.0, 16)
    }
    fn ipv4(&self) -> Option<Ipv4Addr> {
        parse_ipv4(self.0)
    }
    fn ipv6(&self) -> Option<Ipv6Addr> {
        parse_ipv6(self.0)
    }
    fn mac(&self) -> Option<MacAddr> {
        MacAddr::parse(self.0)
    }
}

/// Reads a number as decimal, then as hex, as libvirt's datatype loop does.
/// Returns the value and whether it was read as hex.
fn read_num(r: &impl Readings, max: u32, hex_ok: bool) -> Option<(u32, bool)> {
    if let Some(v) = r.dec() {
        if v <= max {
            return Some((v, false));
        }
    }
    if hex_ok {
        if let Some(v) = r.hex() {
            if v <= max {
                return Some((v, true));
            }
        }
    }
    None
}

/// Reads an IPv4 address the way glibc's numeric `getaddrinfo` (inet_aton)
/// does: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x), the last
/// part filling the remaining bytes.
pub fn parse_ipv4(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut vals = Vec::with_capacity(4);
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if radix != 16 && digits.is_empty() {
            return None;
        }
        let v = if digits.is_empty() {
            0
        } else {
            if !digits.chars().all(|c| c.is_digit(radix)) {
                return None;
            }
            u64::from_str_radix(digits, radix).ok()?
        };
        vals.push(v);
    }
    let last = *vals.last()?;
    let head = &vals[..vals.len() - 1];
    if head.iter().any(|&v| v > 255) {
        return None;
    }
    let tail_bytes = 4 - head.len();
    if last >= 1u64 << (8 * tail_bytes) {
        return None;
    }
    let mut n: u32 = 0;
    for (i, &v) in head.iter().enumerate() {
        n |= (v as u32) << (24 - 8 * i);
    }
    n |= last as u32;
    Some(Ipv4Addr::from(n))
}

/// Reads an IPv6 address (inet_pton syntax).
pub fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    s.parse().ok()
}

/// Writes an IPv6 address the way glibc's `inet_ntop` does (libvirt prints
/// through it): the longest run of two or more zero groups becomes `::`, and
/// IPv4-compatible or -mapped addresses end in dotted decimal.
pub fn format_ipv6(a: &Ipv6Addr) -> String {
    let w = a.segments();
    let (mut best_base, mut best_len) = (None::<usize>, 0usize);
    let mut i = 0;
    while i < 8 {
        if w[i] == 0 {
            let start = i;
            while i < 8 && w[i] == 0 {
                i += 1;
            }
            let len = i - start;
            if len >= 2 && len > best_len {
                best_base = Some(start);
                best_len = len;
            }
        } else {
            i += 1;
        }
    }
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if Some(i) == best_base {
            if i == 0 {
                out.push(':');
            }
            out.push(':');
            i += best_len;
            continue;
        }
        if i == 6 && best_base == Some(0) && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)) {
            let o = a.octets();
            let _ = write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            return out;
        }
        let _ = write!(out, "{:x}", w[i]);
        if i < 7 {
            out.push(':');
        }
        i += 1;
    }
    out
}

/// Prefix length of a contiguous mask, `None` if the ones are not contiguous.
fn prefix_of(bytes: &[u8]) -> Option<u8> {
    let mut ones = 0u32;
    let mut seen_zero = false;
    for b in bytes {
        for bit in (0..8).rev() {
            if b & (1 << bit) != 0 {
                if seen_zero {
                    return None;
                }
                ones += 1;
            } else {
                seen_zero = true;
            }
        }
    }
    u8::try_from(ones).ok()
}

fn lookup_name<T: Copy>(names: &[(T, &str)], s: &str) -> Option<T> {
    names.iter().find(|(_, n)| n.eq_ignore_ascii_case(s)).map(|(v, _)| *v)
}

/// Reads `s` as a value of `kind`; the error says what is allowed.
///
/// Variables (`$X`) are handled by the caller, since every kind takes them.
pub fn parse_value(kind: Kind, s: &str) -> Result<Value, String> {
    read_value(kind, s, &FromText(s))
}

/// [`parse_value`] with the number and address readings of `s` given by `r`
/// (which must be those of `s`). The kinds made of words (names of
/// ethertypes, opcodes and protocols, states, TCP flags, ipsets, booleans,
/// comments) are read from `s` itself, as are the texts of messages.
pub(crate) fn read_value(kind: Kind, s: &str, r: &impl Readings) -> Result<Value, String> {
    let num = |max: u32, hex_ok: bool, what: &str| {
        read_num(r, max, hex_ok)
            .map(|(value, hex)| Value::Num { value, hex })
            .ok_or_else(|| format!("'{s}' is not {what}"))
    };
    match kind {
        Kind::U8 => num(0xff, true, "a number in 0..255 (decimal or 0x hex)"),
        Kind::U16 => num(0xffff, true, "a number in 0..65535 (decimal or 0x hex)"),
        Kind::U32 => num(u32::MAX, true, "a 32-bit number (decimal or 0x hex)"),
        Kind::U16Dec => num(0xffff, false, "a decimal number in 0..65535"),
        Kind::Dscp => num(63, true, "a DSCP value in 0..63"),
        Kind::VlanId => num(4095, true, "a VLAN id in 0..4095"),
        Kind::EtherType | Kind::VlanEncap => {
            let min = if kind == Kind::EtherType { 0x600 } else { 0x3c };
            if let Some(v) = lookup_name(&ETHERTYPE_NAMES, s) {
                return Ok(Value::Num { value: u32::from(v), hex: false });
            }
            match read_num(r, 0xffff, true) {
                // A known ethertype prints as its name whatever its spelling.
                Some((value, _)) if ETHERTYPE_NAMES.iter().any(|(n, _)| u32::from(*n) == value) => {
                    Ok(Value::Num { value, hex: false })
                }
                Some((value, hex)) if value >= min => Ok(Value::Num { value, hex }),
                _ => Err(format!(
                    "'{s}' is not an ethertype: use arp, rarp, ipv4, ipv6, vlan or a number in {min:#x}..0xffff"
                )),
            }
        }
        Kind::ArpOpcode => {
            if let Some(v) = lookup_name(&ARP_OPCODE_NAMES, s) {
                return Ok(Value::Num { value: u32::from(v), hex: false });
            }
            // Opcodes print in decimal whatever their spelling.
            num(0xffff, true, "an ARP opcode: Request, Reply, Request_Reverse, Reply_Reverse, DRARP_Request, DRARP_Reply, DRARP_Error, InARP_Request, ARP_NAK or a number in 0..65535")
                .map(|v| match v {
                    Value::Num { value, .. } => Value::Num { value, hex: false },
                    v => v,
                })
        }
        Kind::IpProtocol => {
            if let Some(v) = lookup_name(&IP_PROTOCOL_NAMES, s) {
                return Ok(Value::Num { value: u32::from(v), hex: true });
            }
            num(
                0xff,
                true,
                "an IP protocol: tcp, udp, udplite, esp, ah, icmp, igmp, sctp, icmpv6 or a number in 0..255",
            )
            .map(|v| match v {
                // A known protocol prints as its name whatever its spelling.
                Value::Num { value, .. } if IP_PROTOCOL_NAMES.iter().any(|(n, _)| u32::from(*n) == value) => {
                    Value::Num { value, hex: true }
                }
                v => v,
            })
        }
        Kind::Mac => {
            r.mac().map(Value::Mac).ok_or_else(|| format!("'{s}' is not a MAC address (like 52:54:00:12:34:56)"))
        }
        Kind::MacMask => match r.mac() {
            Some(m) if prefix_of(&m.0).is_some() => Ok(Value::Mac(m)),
            Some(_) => Err(format!("'{s}' is not a MAC mask: the ones must be contiguous, like ff:ff:ff:00:00:00")),
            None => Err(format!("'{s}' is not a MAC mask (like ff:ff:ff:ff:ff:ff)")),
        },
        Kind::Ipv4 => r.ipv4().map(Value::Ipv4).ok_or_else(|| format!("'{s}' is not an IPv4 address")),
        Kind::Ipv6 => r.ipv6().map(Value::Ipv6).ok_or_else(|| format!("'{s}' is not an IPv6 address")),
        Kind::Ipv4Mask | Kind::Ipv6Mask => {
            let (max, v6) = if kind == Kind::Ipv4Mask { (32, false) } else { (128, true) };
            if let Some(v) = r.dec() {
                return if v <= max {
                    Ok(Value::Prefix(v as u8))
                } else {
                    Err(format!("'{s}' is not a mask: a prefix length must be in 0..{max}"))
                };
            }
            let bytes: Option<Vec<u8>> =
                if v6 { r.ipv6().map(|a| a.octets().to_vec()) } else { r.ipv4().map(|a| a.octets().to_vec()) };
            match bytes.as_deref().map(prefix_of) {
                Some(Some(p)) => Ok(Value::Prefix(p)),
                Some(None) => Err(format!("'{s}' is not a mask: the ones must be contiguous")),
                None => Err(format!("'{s}' is not a mask: give a prefix length in 0..{max} or a netmask")),
            }
        }
        Kind::Comment => Ok(Value::Text(s.to_string())),
        Kind::Bool => Ok(Value::Bool(matches!(s, "true" | "1" | "yes"))),
        Kind::State => parse_state(s).map(Value::State).ok_or_else(|| {
            format!("'{s}' is not a state list: use NEW, ESTABLISHED, RELATED, INVALID separated by ',' or NONE")
        }),
        Kind::TcpFlags => {
            let err =
                || format!("'{s}' is not MASK/FLAGS, each a ','-list of SYN, ACK, URG, PSH, FIN, RST, ALL or NONE");
            let (m, f) = s.split_once('/').ok_or_else(err)?;
            let mask = parse_tcp_flags(m).ok_or_else(err)?;
            let set = parse_tcp_flags(f).ok_or_else(err)?;
            Ok(Value::TcpFlags { mask, set })
        }
        Kind::IpSetName => {
            if s.len() > MAX_IPSET_NAME_LEN {
                return Err(format!("ipset name '{s}' is longer than {MAX_IPSET_NAME_LEN} characters"));
            }
            if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.:-+ ".contains(*c))) {
                return Err(format!(
                    "ipset name '{s}' has the character '{c}'; allowed are letters, digits and _.:-+ and space"
                ));
            }
            Ok(Value::IpSet(s.to_string()))
        }
        Kind::IpSetFlags => parse_ipset_flags(s)
            .map(Value::IpSetFlags)
            .ok_or_else(|| format!("'{s}' is not a list of 1 to 6 'src'/'dst' separated by ','")),
    }
}

/// libvirt's `parseStringItems`: names may follow each other with blanks or
/// the separator between them, matched case-insensitively by prefix.
fn parse_items(names: &[(u8, &str)], s: &str) -> Option<u8> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut flags = 0u8;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let (v, n) = names
            .iter()
            .find(|(_, n)| b.len() - i >= n.len() && b[i..i + n.len()].eq_ignore_ascii_case(n.as_bytes()))?;
        flags |= v;
        i += n.len();
    }
    Some(flags)
}

fn parse_state(s: &str) -> Option<u8> {
    let f = parse_items(&state::NAMES, s)?;
    Some(if f & state::NONE != 0 { state::NONE } else { f })
}

fn parse_tcp_flags(s: &str) -> Option<u8> {
    let mut names: Vec<(u8, &str)> = TCP_FLAG_NAMES.to_vec();
    names.push((0x3f, "ALL"));
    names.push((0, "NONE"));
    parse_items(&names, s).map(|f| f & 0x3f)
}

fn parse_ipset_flags(s: &str) -> Option<Vec<bool>> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while out.len() < 6 {
        let word = b.get(i..i + 3)?;
        if word.eq_ignore_ascii_case(b"src") {
            out.push(true);
        } else if word.eq_ignore_ascii_case(b"dst") {
            out.push(false);
        } else {
            return None;
        }
        i += 3;
        if b.get(i) != Some(&b',') {
            break;
        }
        i += 1;
    }
    (i == b.len()).then_some(out)
}

fn write_items(out: &mut String, names: &[(u8, &str)], flags: u8) {
    let mut first = true;
    for (bit, name) in names {
        if flags & bit != 0 {
            if !first {
                out.push(',');
            }
            out.push_str(name);
            first = false;
        }
    }
}

fn write_tcp_flags(out: &mut String, f: u8) {
    match f {
        0 => out.push_str("NONE"),
        0x3f => out.push_str("ALL"),
        _ => write_items(out, &TCP_FLAG_NAMES, f),
    }
}

/// Writes a value of `kind` as libvirt's formatter does.
pub fn format_value(kind: Kind, v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Var(va) => {
            let _ = write!(out, "${va}");
        }
        Value::Num { value, hex } => {
            let named = match kind {
                Kind::EtherType | Kind::VlanEncap => {
                    ETHERTYPE_NAMES.iter().find(|(n, _)| u32::from(*n) == *value).map(|(_, s)| *s)
                }
                Kind::ArpOpcode => ARP_OPCODE_NAMES.iter().find(|(n, _)| u32::from(*n) == *value).map(|(_, s)| *s),
                Kind::IpProtocol => IP_PROTOCOL_NAMES.iter().find(|(n, _)| u32::from(*n) == *value).map(|(_, s)| *s),
                _ => None,
            };
            match named {
                Some(n) => out.push_str(n),
                // libvirt prints unnamed opcodes in decimal whatever they were.
                None if *hex && kind != Kind::ArpOpcode => {
                    let _ = write!(out, "{value:#x}");
                }
                None => {
                    let _ = write!(out, "{value}");
                }
            }
        }
        Value::Mac(m) => {
            let _ = write!(out, "{m}");
        }
        Value::Ipv4(a) => {
            let _ = write!(out, "{a}");
        }
        Value::Ipv6(a) => out.push_str(&format_ipv6(a)),
        Value::Prefix(p) => {
            let _ = write!(out, "{p}");
        }
        Value::Text(t) | Value::IpSet(t) => out.push_str(t),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::State(f) => write_items(&mut out, &state::NAMES, *f),
        Value::TcpFlags { mask, set } => {
            write_tcp_flags(&mut out, *mask);
            out.push('/');
            write_tcp_flags(&mut out, *set);
        }
        Value::IpSetFlags(fl) => {
            let words: Vec<&str> = fl.iter().map(|s| if *s { "src" } else { "dst" }).collect();
            out.push_str(&words.join(","));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_decimal_then_hex() {
        assert_eq!(parse_value(Kind::U16, "0x1234"), Ok(Value::Num { value: 0x1234, hex: true }));
        assert_eq!(parse_value(Kind::U16, "65535"), Ok(Value::Num { value: 65535, hex: false }));
        assert!(parse_value(Kind::U16, "65536").is_err());
        assert!(parse_value(Kind::U8, "256").is_err());
        assert!(parse_value(Kind::Dscp, "0x40").is_err());
        assert_eq!(parse_value(Kind::Dscp, "0x3f"), Ok(Value::Num { value: 63, hex: true }));
        // hex without prefix is accepted when decimal fails, as strtoul does
        assert_eq!(parse_value(Kind::U8, "ff"), Ok(Value::Num { value: 255, hex: true }));
        assert!(parse_value(Kind::U16Dec, "0x10").is_err());
    }

    #[test]
    fn masks() {
        assert_eq!(parse_value(Kind::Ipv4Mask, "255.255.255.0"), Ok(Value::Prefix(24)));
        assert_eq!(parse_value(Kind::Ipv4Mask, "32"), Ok(Value::Prefix(32)));
        assert!(parse_value(Kind::Ipv4Mask, "33").is_err());
        assert!(parse_value(Kind::Ipv4Mask, "255.0.255.0").is_err());
        assert_eq!(parse_value(Kind::Ipv6Mask, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:8000"), Ok(Value::Prefix(113)));
        assert!(parse_value(Kind::Ipv6Mask, "129").is_err());
        assert!(parse_value(Kind::MacMask, "ff:00:ff:00:00:00").is_err());
    }

    #[test]
    fn ipv6_like_glibc() {
        for (i, o) in [
            ("::10.1.2.3", "::10.1.2.3"),
            ("::1", "::1"),
            ("a:b:c::d:e:f", "a:b:c::d:e:f"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("1:0:0:1:0:0:0:1", "1:0:0:1::1"),
            ("1:0:2:0:3:0:4:0", "1:0:2:0:3:0:4:0"),
            ("::", "::"),
            ("2001:db8::", "2001:db8::"),
        ] {
            assert_eq!(format_ipv6(&parse_ipv6(i).unwrap()), o, "{i}");
        }
    }

    #[test]
    fn ipv4_like_inet_aton() {
        assert_eq!(parse_ipv4("10.1.2.3"), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(parse_ipv4("10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(parse_ipv4("0x7f.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(parse_ipv4("010.0.0.1"), Some(Ipv4Addr::new(8, 0, 0, 1)));
        assert_eq!(parse_ipv4("256.1.1.1"), None);
        assert_eq!(parse_ipv4("a:b:c"), None);
        assert_eq!(parse_ipv4(""), None);
    }

    #[test]
    fn named_values() {
        assert_eq!(format_value(Kind::EtherType, &parse_value(Kind::EtherType, "0x806").unwrap()), "arp");
        assert_eq!(format_value(Kind::EtherType, &parse_value(Kind::EtherType, "0x1234").unwrap()), "0x1234");
        assert!(parse_value(Kind::EtherType, "15").is_err());
        assert_eq!(format_value(Kind::ArpOpcode, &parse_value(Kind::ArpOpcode, "request").unwrap()), "Request");
        assert_eq!(format_value(Kind::IpProtocol, &parse_value(Kind::IpProtocol, "UDP").unwrap()), "udp");
        assert_eq!(format_value(Kind::IpProtocol, &parse_value(Kind::IpProtocol, "99").unwrap()), "99");
    }

    #[test]
    fn states_flags_ipsets() {
        let v = parse_value(Kind::State, "established,new").unwrap();
        assert_eq!(format_value(Kind::State, &v), "NEW,ESTABLISHED");
        assert_eq!(format_value(Kind::State, &parse_value(Kind::State, "NEW,NONE").unwrap()), "NONE");
        assert!(parse_value(Kind::State, "NEWISH").is_err());
        let f = parse_value(Kind::TcpFlags, "SYN,ACK/ALL").unwrap();
        assert_eq!(format_value(Kind::TcpFlags, &f), "SYN,ACK/ALL");
        assert!(parse_value(Kind::TcpFlags, "SYN").is_err());
        let s = parse_value(Kind::IpSetFlags, "SRC,dSt,SRC").unwrap();
        assert_eq!(format_value(Kind::IpSetFlags, &s), "src,dst,src");
        assert!(parse_value(Kind::IpSetFlags, "src,").is_err());
        assert!(parse_value(Kind::IpSetName, "bad/name").is_err());
    }

    #[test]
    fn mac_addr_deserializes_from_its_string_and_the_old_array() {
        use serde::de::value::{Error, SeqDeserializer, StrDeserializer};
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let from_str = |s: &str| MacAddr::deserialize(StrDeserializer::<Error>::new(s));
        assert_eq!(from_str("52:54:00:00:00:01"), Ok(mac));
        assert_eq!(from_str("52:54:0:0:0:1"), Ok(mac));
        assert_eq!(from_str("52:54:00:00:00:01").unwrap().to_string(), "52:54:00:00:00:01");
        let e = from_str("52:54:00:00:00").unwrap_err().to_string();
        assert!(e.contains("'52:54:00:00:00' is not a MAC address"), "{e}");
        assert!(from_str("52:54:00:00:00:01:02").is_err());
        let from_seq = |v: &[u8]| MacAddr::deserialize(SeqDeserializer::<_, Error>::new(v.iter().copied()));
        assert_eq!(from_seq(&[0x52, 0x54, 0, 0, 0, 1]), Ok(mac));
        assert!(from_seq(&[1, 2, 3, 4, 5]).is_err(), "five numbers");
        assert!(from_seq(&[1, 2, 3, 4, 5, 6, 7]).is_err(), "seven numbers");
        let from_wide = |v: &[u32]| MacAddr::deserialize(SeqDeserializer::<_, Error>::new(v.iter().copied()));
        assert!(from_wide(&[1, 2, 3, 4, 5, 256]).is_err(), "a number over 255");
    }

    #[test]
    fn var_access() {
        assert_eq!(VarAccess::parse("IP").unwrap().to_string(), "IP");
        assert_eq!(VarAccess::parse("IP[@0]").unwrap().to_string(), "IP");
        assert_eq!(VarAccess::parse("IP[@2]").unwrap().to_string(), "IP[@2]");
        assert_eq!(VarAccess::parse("IP[ 3 ]").unwrap().to_string(), "IP[3]");
        assert!(VarAccess::parse("IP[@1001]").is_err());
        assert!(VarAccess::parse("IP[x]").is_err());
        assert_eq!(VarAccess::parse("B[  @0 ] ").unwrap().to_string(), "B");
        assert!(VarAccess::parse("").is_err());
        assert!(VarAccess::parse("IP-x").is_err());
    }
}
