//! The host's interfaces, from one rtnetlink dump: which exist, and which
//! are bridge ports (the rest are routed taps).
//!
//! Asking sysfs instead costs two path lookups per binding, and with
//! thousands of interfaces those lookups were a fifth of start-up time. The
//! rtnetlink crate is async and decodes every attribute of every link; we
//! need two attributes, so the few lines of parsing are written here.

use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use std::collections::HashMap;

const RTM_GETLINK: u16 = 18;
const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFINFOMSG_LEN: usize = 16;

/// Interface name → whether it is a bridge port.
pub type Links = HashMap<String, bool>;

fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, data))
    })
}

fn cstr(d: &[u8]) -> String {
    String::from_utf8_lossy(d.split(|c| *c == 0).next().unwrap_or(d)).into_owned()
}

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
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            if len < 16 || at + len > n {
                break;
            }
            match ty {
                NLMSG_DONE => return Ok(links),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes([buf[at + 16], buf[at + 17], buf[at + 18], buf[at + 19]]);
                    return Err(std::io::Error::from_raw_os_error(-code));
                }
                RTM_NEWLINK if len >= 16 + IFINFOMSG_LEN => {
                    let (mut name, mut bridged) = (None, false);
                    for (t, d) in attrs(&buf[at + 16 + IFINFOMSG_LEN..at + len]) {
                        match t {
                            IFLA_IFNAME => name = Some(cstr(d)),
                            IFLA_LINKINFO => {
                                bridged = attrs(d).any(|(k, v)| k == IFLA_INFO_SLAVE_KIND && cstr(v) == "bridge")
                            }
                            _ => {}
                        }
                    }
                    if let Some(name) = name {
                        links.insert(name, bridged);
                    }
                }
                _ => {}
            }
            at += (len + 3) & !3;
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
