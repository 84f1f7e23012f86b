//! The host's interfaces, from one rtnetlink dump: which exist, and which
//! are bridge ports (the rest are routed taps).
//!
//! Asking sysfs instead costs two path lookups per binding, and with
//! thousands of interfaces those lookups were a fifth of start-up time. The
//! rtnetlink crate is async and decodes every attribute of every link; we
//! need two attributes, read with the netlink helpers of `gw_nft::netlink`.

use gw_nft::netlink::{attributes, cstr, error_code, messages};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use std::collections::HashMap;

const RTM_GETLINK: u16 = 18;
const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFINFOMSG_LEN: usize = 16;

/// Interface name → whether it is a bridge port.
pub type Links = HashMap<String, bool>;

/// Every interface of this network namespace.
pub fn dump() -> std::io::Result<Links> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    let mut req = Vec::with_capacity(32);
    req.extend_from_slice(&32u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[0u8; IFINFOMSG_LEN]);
    s.send(&req, 0)?;
    let mut links = Links::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = s.recv(&mut &mut buf[..], 0)?;
        for (ty, _, payload) in messages(&buf[..n]) {
            if ty == NLMSG_DONE {
                return Ok(links);
            }
            if let Some(errno) = error_code(ty, payload) {
                return Err(std::io::Error::from_raw_os_error(errno));
            }
            if ty != RTM_NEWLINK || payload.len() < IFINFOMSG_LEN {
                continue;
            }
            let (mut name, mut bridged) = (None, false);
            for (t, d) in attributes(&payload[IFINFOMSG_LEN..]) {
                match t {
                    IFLA_IFNAME => name = Some(String::from_utf8_lossy(cstr(d)).into_owned()),
                    IFLA_LINKINFO => {
                        bridged = attributes(d).any(|(k, v)| k == IFLA_INFO_SLAVE_KIND && cstr(v) == b"bridge")
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
