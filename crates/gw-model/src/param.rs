//! Parameter values, checked and read once where they come in.
//!
//! A binding's or filterref's parameter value is text that rules read as a
//! number, an address, a mask or a word, depending on the attribute that
//! uses it. [`ParamValue`] is made only by a checked constructor, keeps the
//! text exactly as given (it is written back and named in messages), and
//! holds what the text reads as ([`Reading`]), so resolution converts it to
//! each attribute's kind ([`ParamValue::as_kind`]) without reading the text
//! again.

use crate::protocol::Kind;
use crate::text::Shown;
use crate::value::{is_var_value_char, parse_ipv4, parse_ipv6, read_value, strtoul, MacAddr, Readings, Value};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A parameter value libvirt accepts: not empty, letters, digits and `_.:`
/// only (libvirt's `VALID_VARVALUE`).
///
/// Equality, order and hashing are those of the text (what it reads as
/// follows from the text). Serialized as the plain string.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ParamValue {
    // A boxed str rather than a String: values are never grown, and tens of
    // thousands of them are kept (one per binding parameter).
    text: Box<str>,
    reading: Reading,
}

/// What a parameter value's text reads as, found once when the value is made.
///
/// The readings of a text do not overlap except where kept together here:
/// a number (decimal or hex) may also be an IPv4 address (`inet_aton` reads
/// `10` as 0.0.0.10), so the number keeps its address reading. Addresses with
/// ':' are never numbers or IPv4 addresses; a MAC address (exactly six
/// non-empty groups, no '.') is never an IPv6 address, which needs eight
/// groups, a `::` or a dotted tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reading {
    /// Decimal digits whose value fits 32 bits (`strtoul(s, 10)`).
    Dec {
        /// The value.
        value: u32,
        /// The text as an IPv4 address ([`parse_ipv4`]: octal with a
        /// leading 0).
        ipv4: Option<Ipv4Addr>,
    },
    /// A hex number that is not decimal (`strtoul(s, 16)`: hex letters or a
    /// `0x` prefix), fitting 32 bits.
    Hex {
        /// The value.
        value: u32,
        /// The text as an IPv4 address (with a `0x` prefix only).
        ipv4: Option<Ipv4Addr>,
    },
    /// An IPv4 address that is not a number ([`parse_ipv4`]).
    Ipv4(Ipv4Addr),
    /// A MAC address ([`MacAddr::parse`]).
    Mac(MacAddr),
    /// An IPv6 address ([`parse_ipv6`]).
    Ipv6(Ipv6Addr),
    /// None of these: a word (`tcp`, `NEW`, `src`, `any`) or nothing a kind
    /// takes.
    Text,
}

impl Reading {
    fn of(text: &str) -> Reading {
        if let Some(value) = strtoul(text, 10) {
            return Reading::Dec { value, ipv4: parse_ipv4(text) };
        }
        if let Some(value) = strtoul(text, 16) {
            return Reading::Hex { value, ipv4: parse_ipv4(text) };
        }
        if let Some(a) = parse_ipv4(text) {
            return Reading::Ipv4(a);
        }
        if let Some(m) = MacAddr::parse(text) {
            return Reading::Mac(m);
        }
        if let Some(a) = parse_ipv6(text) {
            return Reading::Ipv6(a);
        }
        Reading::Text
    }
}

/// The number a string of decimal digits reads as in hex (`"10"` is 0x10),
/// found from its decimal value: leading zeros change neither reading.
fn decimal_digits_as_hex(mut v: u32) -> Option<u32> {
    let (mut out, mut shift) = (0u64, 0u32);
    while v > 0 {
        out |= u64::from(v % 10) << shift;
        shift += 4;
        v /= 10;
    }
    u32::try_from(out).ok()
}

// Each reading below is what the text reads as, derived without the text;
// the order in which `Reading::of` tries them is what makes "else None"
// right (a Hex, Ipv4, Mac, Ipv6 or Text reading is one the earlier readers
// refused).
impl Readings for Reading {
    fn dec(&self) -> Option<u32> {
        match *self {
            Reading::Dec { value, .. } => Some(value),
            _ => None,
        }
    }

    fn hex(&self) -> Option<u32> {
        match *self {
            // A valid value has no blanks or sign, so a decimal one is all
            // digits, which strtoul also reads in base 16.
            Reading::Dec { value, .. } => decimal_digits_as_hex(value),
            Reading::Hex { value, .. } => Some(value),
            _ => None,
        }
    }

    fn ipv4(&self) -> Option<Ipv4Addr> {
        match *self {
            Reading::Dec { ipv4, .. } | Reading::Hex { ipv4, .. } => ipv4,
            Reading::Ipv4(a) => Some(a),
            _ => None,
        }
    }

    fn ipv6(&self) -> Option<Ipv6Addr> {
        match *self {
            Reading::Ipv6(a) => Some(a),
            _ => None,
        }
    }

    fn mac(&self) -> Option<MacAddr> {
        match *self {
            Reading::Mac(m) => Some(m),
            _ => None,
        }
    }
}

/// A text that is not a parameter value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value '{}' {problem}", Shown(.value))]
pub struct ParamValueError {
    /// The refused text.
    pub value: String,
    /// What is wrong with it.
    pub problem: ValueProblem,
}

/// Why a text is not a parameter value; the message says what is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValueProblem {
    /// The text is empty.
    #[error("is empty: a parameter needs a value")]
    Empty,
    /// The text has a character other than letters, digits and `_.:`.
    #[error("may only have letters, digits and _.:")]
    BadChar,
}

impl ParamValue {
    /// `text` as a parameter value, if libvirt accepts it as one: not empty,
    /// and letters, digits and `_.:` only.
    pub fn new(text: impl Into<String>) -> Result<ParamValue, ParamValueError> {
        let text = text.into();
        let problem = if text.is_empty() {
            ValueProblem::Empty
        } else if !text.chars().all(is_var_value_char) {
            ValueProblem::BadChar
        } else {
            let reading = Reading::of(&text);
            return Ok(ParamValue { text: text.into_boxed_str(), reading });
        };
        Err(ParamValueError { value: text, problem })
    }

    /// The text, as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What the text reads as.
    pub fn reading(&self) -> &Reading {
        &self.reading
    }

    /// The value as an IPv4 address, as libvirt reads one (`inet_aton`: `10`
    /// is 0.0.0.10).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.reading.ipv4()
    }

    /// The value as an IPv6 address.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.reading.ipv6()
    }

    /// The value as a MAC address.
    pub fn mac(&self) -> Option<MacAddr> {
        self.reading.mac()
    }

    /// The value as an attribute of `kind` takes it: exactly what
    /// [`crate::value::parse_value`] gives for the text, value or message.
    ///
    /// Numbers, addresses and masks come from the reading found when the
    /// value was made. The kinds made of words (names of ethertypes, ARP
    /// opcodes and IP protocols; states, TCP flags, ipset names and flags,
    /// booleans, comments) are read from the text, as their words are the
    /// value; so are the messages, which quote it.
    pub fn as_kind(&self, kind: Kind) -> Result<Value, String> {
        read_value(kind, &self.text, &self.reading)
    }
}

impl From<MacAddr> for ParamValue {
    /// A MAC address as a value (hex digits and ':' only, always valid).
    fn from(m: MacAddr) -> ParamValue {
        ParamValue { text: m.to_string().into_boxed_str(), reading: Reading::Mac(m) }
    }
}

impl TryFrom<String> for ParamValue {
    type Error = ParamValueError;
    fn try_from(s: String) -> Result<ParamValue, ParamValueError> {
        ParamValue::new(s)
    }
}

impl TryFrom<&str> for ParamValue {
    type Error = ParamValueError;
    fn try_from(s: &str) -> Result<ParamValue, ParamValueError> {
        ParamValue::new(s)
    }
}

impl From<ParamValue> for String {
    fn from(v: ParamValue) -> String {
        v.text.into_string()
    }
}

/// As the text's `Debug`: parameters enter rule keys (and so nft set names)
/// through their `Debug` text, which must stay what it was for strings.
impl fmt::Debug for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for ParamValue {
    fn eq(&self, other: &ParamValue) -> bool {
        self.text == other.text
    }
}

impl Eq for ParamValue {}

impl PartialOrd for ParamValue {
    fn partial_cmp(&self, other: &ParamValue) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ParamValue {
    fn cmp(&self, other: &ParamValue) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl std::hash::Hash for ParamValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}

impl std::ops::Deref for ParamValue {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::borrow::Borrow<str> for ParamValue {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for ParamValue {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for ParamValue {
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}

impl PartialEq<&str> for ParamValue {
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{parse_value, FromText};
    use proptest::prelude::*;
    use proptest::sample::select;

    fn pv(s: &str) -> ParamValue {
        ParamValue::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn readings() {
        assert_eq!(pv("80").reading(), &Reading::Dec { value: 80, ipv4: Some(Ipv4Addr::new(0, 0, 0, 80)) });
        assert_eq!(pv("010").reading(), &Reading::Dec { value: 10, ipv4: Some(Ipv4Addr::new(0, 0, 0, 8)) });
        assert_eq!(pv("09").reading(), &Reading::Dec { value: 9, ipv4: None });
        assert_eq!(pv("0x1F").reading(), &Reading::Hex { value: 31, ipv4: Some(Ipv4Addr::new(0, 0, 0, 31)) });
        assert_eq!(pv("ff").reading(), &Reading::Hex { value: 255, ipv4: None });
        assert_eq!(pv("037777777777").reading(), &Reading::Ipv4(Ipv4Addr::BROADCAST), "octal past decimal's range");
        assert_eq!(pv("0x").reading(), &Reading::Ipv4(Ipv4Addr::UNSPECIFIED), "inet_aton reads a bare 0x");
        assert_eq!(pv("192.0.2.1").reading(), &Reading::Ipv4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(pv("52:54:0:0:0:1").reading(), &Reading::Mac(MacAddr([0x52, 0x54, 0, 0, 0, 1])));
        assert_eq!(pv("2001:db8::1").ipv6(), Some("2001:db8::1".parse().expect("v6")));
        assert_eq!(pv("tcp").reading(), &Reading::Text);
        assert_eq!(pv("4294967296").reading(), &Reading::Text, "past 32 bits in every reading");
    }

    #[test]
    fn text_is_kept_and_checked() {
        let v = pv("0X0010");
        assert_eq!(v.as_str(), "0X0010");
        assert_eq!(format!("{v:?}"), "\"0X0010\"", "Debug is the text's");
        assert_eq!(serde_json::to_string(&v).expect("json"), "\"0X0010\"");
        assert_eq!(serde_json::from_str::<ParamValue>("\"0X0010\"").expect("json"), v);
        let e = serde_json::from_str::<ParamValue>("\"1.2.3.4/32\"").expect_err("a '/'");
        assert!(e.to_string().contains("value '1.2.3.4/32' may only have letters, digits and _.:"), "{e}");
        assert_eq!(ParamValue::new("").unwrap_err().problem, ValueProblem::Empty);
        let e = ParamValue::new("a\nb").unwrap_err();
        assert_eq!(e.to_string(), "value 'a\\nb' may only have letters, digits and _.:");
        let m = MacAddr([0x52, 0x54, 0, 0xab, 0, 1]);
        let from = ParamValue::from(m);
        assert_eq!(from.reading(), pv(&m.to_string()).reading());
    }

    #[test]
    fn small() {
        assert!(std::mem::size_of::<ParamValue>() <= 40, "{}", std::mem::size_of::<ParamValue>());
    }

    #[test]
    fn decimal_digits_read_as_hex() {
        for (d, h) in
            [(0, Some(0)), (9, Some(9)), (10, Some(0x10)), (99_999_999, Some(0x9999_9999)), (100_000_000, None)]
        {
            assert_eq!(decimal_digits_as_hex(d), h, "{d}");
        }
        assert_eq!(decimal_digits_as_hex(u32::MAX), None);
    }

    /// Texts near every reading's edges: numbers of every size and base,
    /// dotted forms of inet_aton, MACs, IPv6 forms, words, and junk.
    fn text() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            (0u64..600).prop_map(|v| v.to_string()),
            any::<u32>().prop_map(|v| v.to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            (0u64..0x1_0000_0001).prop_map(|v| format!("{v:#x}")),
            (0u64..0x1_0000_0001).prop_map(|v| format!("{v:#X}")),
            (0u64..0x1_0000_0001).prop_map(|v| format!("{v:o}")),
            (0u64..0x1_0000_0001).prop_map(|v| format!("0{v:o}")),
            (0u64..0x1_0000_0001).prop_map(|v| format!("{v:x}")),
            "0*[0-9a-fA-F]{1,12}",
            select(vec!["0", "00", "0x", "0X", "08", "09", "0x0", "x", "ff", "FF"]).prop_map(str::to_string),
        ];
        let dotted = proptest::collection::vec(part.clone(), 1..6).prop_map(|p| p.join("."));
        let mac = proptest::collection::vec(
            prop_oneof![
                any::<u8>().prop_map(|b| format!("{b:02x}")),
                any::<u8>().prop_map(|b| format!("{b:X}")),
                select(vec!["ff", "0", "00", "f0", "80", "", "fff", "g"]).prop_map(str::to_string),
            ],
            4..9,
        )
        .prop_map(|p| p.join(":"));
        let ip6 = prop_oneof![
            any::<[u16; 8]>().prop_map(|w| Ipv6Addr::from(w).to_string()),
            any::<[u16; 8]>().prop_map(|w| crate::value::format_ipv6(&Ipv6Addr::from(w))),
            any::<[u16; 8]>().prop_map(|w| w.iter().map(|x| format!("{x:X}")).collect::<Vec<_>>().join(":")),
            (0u32..=128).prop_map(|p| {
                let bits = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                Ipv6Addr::from(bits).to_string()
            }),
            (any::<[u8; 4]>(), 0usize..7).prop_map(|(b, n)| format!("{}::{}", "1:".repeat(n), Ipv4Addr::from(b))),
            "[0-9a-f:.]{1,40}",
        ];
        let words = select(vec![
            "arp",
            "RARP",
            "ipv4",
            "IPv6",
            "vlan",
            "Request",
            "request_reverse",
            "ARP_NAK",
            "tcp",
            "UDP",
            "icmpv6",
            "NEW",
            "newestablished",
            "ESTABLISHEDrelated",
            "NONE",
            "src",
            "DST",
            "srcdst",
            "true",
            "yes",
            "1",
            "01",
            "any",
            "ALL",
            "SYNACK",
        ])
        .prop_map(str::to_string);
        prop_oneof![
            part,
            dotted,
            mac,
            ip6,
            words,
            "[0-9a-fA-FxX.:]{1,24}",
            "[A-Za-z0-9_.:]{0,40}",
            "[ -~]{0,12}",
            any::<String>(),
        ]
    }

    const ALL_KINDS: [Kind; 22] = [
        Kind::U8,
        Kind::U16,
        Kind::U32,
        Kind::U16Dec,
        Kind::Mac,
        Kind::MacMask,
        Kind::Ipv4,
        Kind::Ipv4Mask,
        Kind::Ipv6,
        Kind::Ipv6Mask,
        Kind::Comment,
        Kind::Bool,
        Kind::EtherType,
        Kind::VlanId,
        Kind::VlanEncap,
        Kind::ArpOpcode,
        Kind::IpProtocol,
        Kind::Dscp,
        Kind::State,
        Kind::TcpFlags,
        Kind::IpSetName,
        Kind::IpSetFlags,
    ];

    /// Fails to compile when a kind is added and `ALL_KINDS` does not list it.
    #[allow(dead_code)]
    fn all_kinds_are_listed(k: Kind) -> usize {
        match k {
            Kind::U8 => 0,
            Kind::U16 => 1,
            Kind::U32 => 2,
            Kind::U16Dec => 3,
            Kind::Mac => 4,
            Kind::MacMask => 5,
            Kind::Ipv4 => 6,
            Kind::Ipv4Mask => 7,
            Kind::Ipv6 => 8,
            Kind::Ipv6Mask => 9,
            Kind::Comment => 10,
            Kind::Bool => 11,
            Kind::EtherType => 12,
            Kind::VlanId => 13,
            Kind::VlanEncap => 14,
            Kind::ArpOpcode => 15,
            Kind::IpProtocol => 16,
            Kind::Dscp => 17,
            Kind::State => 18,
            Kind::TcpFlags => 19,
            Kind::IpSetName => 20,
            Kind::IpSetFlags => 21,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// A value reads as every kind exactly as its text does.
        #[test]
        fn as_kind_is_parse_value(t in text()) {
            let valid = !t.is_empty() && t.chars().all(is_var_value_char);
            let v = ParamValue::new(t.as_str());
            prop_assert_eq!(v.is_ok(), valid, "{:?}", v);
            if let Ok(v) = v {
                prop_assert_eq!(v.as_str(), t.as_str());
                for k in ALL_KINDS {
                    prop_assert_eq!(v.as_kind(k), parse_value(k, &t), "{:?} as {:?}", t, k);
                }
                let r = FromText(&t);
                prop_assert_eq!(v.reading().dec(), r.dec(), "dec of {:?}", t);
                prop_assert_eq!(v.reading().hex(), r.hex(), "hex of {:?}", t);
                prop_assert_eq!(v.ipv4(), r.ipv4(), "ipv4 of {:?}", t);
                prop_assert_eq!(v.ipv6(), r.ipv6(), "ipv6 of {:?}", t);
                prop_assert_eq!(v.mac(), r.mac(), "mac of {:?}", t);
            }
        }
    }
}
