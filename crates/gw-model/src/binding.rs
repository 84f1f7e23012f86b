//! A binding: a filter with parameters, bound to one port of the host.

use crate::filter::FilterRef;
use crate::value::MacAddr;
use serde::{Deserialize, Serialize};

/// libvirt's `<filterbinding>`: which filter, with which parameters, guards
/// which port, on behalf of which guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The guest the port belongs to.
    pub owner: Owner,
    /// The host-side interface of the guest NIC (tap, vif, veth).
    pub portdev: String,
    /// The device the port is linked to (macvtap), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linkdev: Option<String>,
    /// The guest NIC's MAC address; `$MAC` when the filter is not given one.
    pub mac: MacAddr,
    /// The filter and its parameters.
    pub filterref: FilterRef,
}

/// The guest owning a binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The guest's name.
    pub name: String,
    /// The guest's UUID.
    pub uuid: String,
}

/// Checks a Linux interface name: 1 to 15 bytes, no '/', ':' or blanks, not
/// "." or "..". The error says what is allowed.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("'{name}' is not an interface name: it must have 1 to 15 characters"));
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' is not an interface name"));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control() || *c == '"') {
        return Err(format!("'{name}' is not an interface name: it must not contain {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames() {
        assert!(check_ifname("vnet0").is_ok());
        assert!(check_ifname("a-very-long-name0").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("..").is_err());
    }
}
