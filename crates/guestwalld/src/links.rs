//! The host's interfaces, from one rtnetlink dump: which exist, and which
//! are bridge ports (the rest are routed taps).
//!
//! Asking sysfs instead costs two path lookups per binding, and with
//! thousands of interfaces those lookups were a fifth of start-up time.
//!
//! The request and the two attributes we need (`IFLA_IFNAME`, and
//! `IFLA_INFO_PORT_KIND` inside `IFLA_LINKINFO`) are netlink-packet-route
//! 0.34's types, framed by netlink-packet-core 0.9; the other attributes are
//! skipped, not decoded. A whole `LinkMessage` per link (what rtnetlink
//! does) made a dump of 10,000 veths in a namespace take 87-95 ms; reading
//! only these two takes 61-63 ms, against 56-60 ms for the hand-written
//! parser it replaced (fastest of 40 dumps, three rounds).

use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, Parseable,
    ParseableParametrized, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::{InfoPortKind, LinkAttribute, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use std::collections::HashMap;

const RTM_NEWLINK: u16 = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_PORT_KIND: u16 = 4;
/// `struct ifinfomsg`, before the attributes.
const IFINFOMSG_LEN: usize = 16;

/// Interface name → whether it is a bridge port.
pub type Links = HashMap<String, bool>;

/// Where the host's interfaces come from: this network namespace's
/// rtnetlink in the daemon, a table in the reconciler's unit tests.
pub trait Host: Send {
    /// Every interface there is now.
    fn links(&mut self) -> std::io::Result<Links>;
}

/// This network namespace.
pub struct System;

impl Host for System {
    fn links(&mut self) -> std::io::Result<Links> {
        dump()
    }
}

/// Every interface of this network namespace.
pub fn dump() -> std::io::Result<Links> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let get = RouteNetlinkMessage::GetLink(LinkMessage::default());
    let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(get));
    req.finalize();
    let mut bytes = vec![0; req.buffer_len()];
    req.serialize(&mut bytes);
    s.send(&bytes, 0)?;
    let mut links = Links::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = s.recv(&mut &mut buf[..], 0)?;
        let mut at = 0;
        while let Some(m) = buf[..n].get(at..).and_then(|b| NetlinkBuffer::new_checked(b).ok()) {
            at += (m.length() as usize + 3) & !3;
            let payload = m.payload();
            match m.message_type() {
                NLMSG_DONE => return Ok(links),
                NLMSG_ERROR => {
                    let code = ErrorBuffer::new_checked(payload).ok().and_then(|e| e.code());
                    return Err(std::io::Error::from_raw_os_error(code.map_or(0, |c| -c.get())));
                }
                RTM_NEWLINK if payload.len() >= IFINFOMSG_LEN => {}
                _ => continue,
            }
            let (mut name, mut bridged) = (None, false);
            for nla in NlasIterator::new(&payload[IFINFOMSG_LEN..]).map_while(Result::ok) {
                match nla.kind() {
                    IFLA_IFNAME => {
                        if let Ok(LinkAttribute::IfName(n)) =
                            LinkAttribute::parse_with_param(&nla, AddressFamily::Unspec)
                        {
                            name = Some(n);
                        }
                    }
                    IFLA_LINKINFO => {
                        bridged = NlasIterator::new(nla.value())
                            .map_while(Result::ok)
                            .filter(|i| i.kind() == IFLA_INFO_PORT_KIND)
                            .any(|i| matches!(InfoPortKind::parse(&i), Ok(InfoPortKind::Bridge)))
                    }
                    _ => {}
                }
            }
            if let Some(name) = name {
                links.insert(name, bridged);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_listed_and_not_a_bridge_port() {
        let links = super::dump().expect("rtnetlink dump");
        assert_eq!(links.get("lo"), Some(&false), "{links:?}");
    }
}
