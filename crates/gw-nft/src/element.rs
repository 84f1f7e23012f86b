//! Set and map elements as typed data.
//!
//! An element is written twice: as nft text (`nft -f`) and as the key
//! bytes of a netlink batch. Both come from the one [`Datum`] here, so they
//! cannot disagree: a port's `$IP` is an [`std::net::Ipv4Addr`] until it is
//! written, and each variant says once how it reads in nft and how the
//! kernel stores it. What netlink cannot write (intervals, fields whose
//! storage nft transforms) is [`Datum::Text`], and an element holding one
//! goes through `nft` only.

use gw_model::MacAddr;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// One field of a set element's key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Datum {
    /// An interface name (a port): quoted and escaped by [`crate::text`].
    Ifname(Box<str>),
    /// A MAC address read by `ether saddr`/`ether daddr`.
    Ether(MacAddr),
    /// A MAC address in a raw header field (`@nh,64,48`), written as hex.
    EtherRaw(MacAddr),
    /// An IPv4 address read by `ip saddr`/`ip daddr`.
    Ipv4(Ipv4Addr),
    /// An IPv4 address in a raw ARP header field, written as hex.
    Ipv4Raw(Ipv4Addr),
    /// An IPv6 address.
    Ipv6(Ipv6Addr),
    /// A 16-bit field written in decimal (ports, ARP opcode).
    U16(u16),
    /// A 16-bit field written in hex (ethertypes).
    U16Hex(u16),
    /// An 8-bit field (protocol numbers, ICMP types and codes).
    U8(u8),
    /// A value only nft text can carry, already written.
    Text(Box<str>),
}

impl Datum {
    /// The datum as nft writes it.
    pub fn write_text(&self, s: &mut String) {
        let _ = match self {
            Datum::Ifname(n) => write!(s, "{}", crate::text::ifname_checked(n)),
            Datum::Ether(m) => write!(s, "{m}"),
            Datum::EtherRaw(m) => {
                s.push_str("0x");
                m.0.iter().try_for_each(|b| write!(s, "{b:02x}"))
            }
            Datum::Ipv4(a) => write!(s, "{a}"),
            Datum::Ipv4Raw(a) => write!(s, "{:#010x}", u32::from(*a)),
            Datum::Ipv6(a) => write!(s, "{a}"),
            Datum::U16(n) => write!(s, "{n}"),
            Datum::U16Hex(n) => write!(s, "{n:#06x}"),
            Datum::U8(n) => write!(s, "{n}"),
            Datum::Text(t) => write!(s, "{t}"),
        };
    }

    /// Appends the datum as the kernel keeps it in a concatenated key
    /// (network byte order, each field padded to 32 bits); `false` for
    /// [`Datum::Text`], which netlink cannot write.
    pub fn write_key(&self, b: &mut Vec<u8>) -> bool {
        let start = b.len();
        match self {
            // IFNAMSIZ bytes, zero-padded: the name `text` writes.
            Datum::Ifname(n) => b.extend_from_slice(&crate::text::ifname_key(n)),
            Datum::Ether(m) | Datum::EtherRaw(m) => b.extend_from_slice(&m.0),
            Datum::Ipv4(a) | Datum::Ipv4Raw(a) => b.extend_from_slice(&a.octets()),
            Datum::Ipv6(a) => b.extend_from_slice(&a.octets()),
            Datum::U16(n) | Datum::U16Hex(n) => b.extend_from_slice(&n.to_be_bytes()),
            Datum::U8(n) => b.push(*n),
            Datum::Text(_) => return false,
        }
        b.resize(start + ((b.len() - start + 3) & !3), 0);
        true
    }
}

/// What a verdict-map element decides.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// `goto <chain>`.
    Goto(String),
}

/// A set element (a key) or a verdict-map element (a key and a verdict).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    /// The key's fields, in the set's key order.
    pub key: Box<[Datum]>,
    /// For a verdict map, what the key maps to.
    pub verdict: Option<Verdict>,
}

impl Element {
    /// A port's entry in a dispatch map: frames go to `chain`.
    pub fn dispatch(port: &str, chain: &str) -> Element {
        Element { key: Box::new([Datum::Ifname(port.into())]), verdict: Some(Verdict::Goto(chain.into())) }
    }

    /// The element as nft writes it (`"vnet1" . 192.0.2.1`,
    /// `"vnet1" : goto chain`).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (i, d) in self.key.iter().enumerate() {
            if i > 0 {
                s.push_str(" . ");
            }
            d.write_text(&mut s);
        }
        if let Some(Verdict::Goto(c)) = &self.verdict {
            let _ = write!(s, " : goto {c}");
        }
        s
    }

    /// The key as the kernel keeps it; `None` when a field is text only.
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        let mut b = Vec::new();
        self.key.iter().all(|d| d.write_key(&mut b)).then_some(b)
    }

    /// The element for a netlink batch: its key, and when `add`ing to a
    /// verdict map the chain to go to (a deletion names the key only).
    pub fn netlink(&self, add: bool) -> Option<(Vec<u8>, Option<String>)> {
        let goto = match (&self.verdict, add) {
            (Some(Verdict::Goto(c)), true) => Some(c.clone()),
            _ => None,
        };
        Some((self.key_bytes()?, goto))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_key_come_from_one_datum() {
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let e = Element {
            key: Box::new([
                Datum::Ifname("vnet1".into()),
                Datum::Ether(mac),
                Datum::Ipv4Raw(Ipv4Addr::new(192, 0, 2, 1)),
                Datum::U16Hex(0x0800),
                Datum::U8(6),
            ]),
            verdict: None,
        };
        assert_eq!(e.text(), "\"vnet1\" . 52:54:00:00:00:01 . 0xc0000201 . 0x0800 . 6");
        let mut want = b"vnet1".to_vec();
        want.resize(16, 0);
        want.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 1, 0, 0, 192, 0, 2, 1, 8, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(e.key_bytes(), Some(want));
    }

    #[test]
    fn text_only_datums_have_no_key() {
        let e = Element { key: Box::new([Datum::Ifname("v".into()), Datum::Text("10.0.0.0/8".into())]), verdict: None };
        assert_eq!(e.text(), "\"v\" . 10.0.0.0/8");
        assert_eq!(e.key_bytes(), None);
    }

    #[test]
    fn dispatch_entries_carry_their_chain_when_added_only() {
        let e = Element::dispatch("v*", "f_x_out");
        assert_eq!(e.text(), "\"v\\*\" : goto f_x_out");
        let (key, goto) = e.netlink(true).expect("key");
        assert_eq!(&key[..3], b"v*\0");
        assert_eq!(goto.as_deref(), Some("f_x_out"));
        assert_eq!(e.netlink(false).map(|(_, g)| g), Some(None));
    }
}
