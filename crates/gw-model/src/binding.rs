//! A binding: a filter with parameters, bound to one port of the host.

use crate::filter::{check_filter_name, FilterRef};
use crate::param::{ParamValue, ParamValueError};
use crate::text::{check_no_control, Shown};
use crate::value::{is_var_name_char, MacAddr};
use serde::{Deserialize, Serialize};

/// libvirt's `<filterbinding>`: which filter, with which parameters, guards
/// which port, on behalf of which guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The guest the port belongs to.
    pub owner: Owner,
    /// The host-side interface of the guest NIC (tap, vif, veth).
    pub portdev: IfName,
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

/// The most values one parameter (a list variable) may have, in a binding or
/// in a filterref.
///
/// libvirt has no such limit; its documentation and our users give a guest a
/// handful of addresses or ports. 1,024 covers a guest owning a whole /22 one
/// address per value, while bounding what one list costs to keep and to walk
/// (lists are walked in combination: two 1,024-value lists on different
/// iterators already reach 1M rules, which resolution refuses with its own
/// per-binding rule limit).
pub const MAX_PARAM_VALUES: usize = 1024;

/// A parameter (variable) that a binding may not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The name is empty or has characters other than letters, digits and `_`
    /// (libvirt's `VALID_VARNAME`); this includes control characters.
    #[error("parameter name '{}' is refused: a parameter name is letters, digits and '_'", Shown(.name))]
    BadName {
        /// The name.
        name: String,
    },
    /// A value libvirt would skip (empty, or characters other than letters,
    /// digits and `_.:`), or a value a reserved variable cannot hold.
    #[error("parameter {name}: value '{}' {reason}", Shown(.value))]
    BadValue {
        /// The parameter.
        name: String,
        /// The refused value.
        value: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The list has more values than [`MAX_PARAM_VALUES`].
    #[error("parameter {name} has {count} values; a parameter may have at most {limit} (MAX_PARAM_VALUES)")]
    TooManyValues {
        /// The parameter.
        name: String,
        /// How many values it has.
        count: usize,
        /// [`MAX_PARAM_VALUES`].
        limit: usize,
    },
}

/// What a reserved variable holds, checked on the values a binding gives:
/// the guest's addresses must be addresses, since a value that fits no rule
/// would otherwise leave the guest with no address at all.
fn check_reserved(name: &str, value: &ParamValue) -> Result<(), ParamError> {
    let ok = match name {
        "IP" => value.ipv4().is_some(),
        "IPV6" | "DHCPSERVERV6" => value.ipv6().is_some(),
        "DHCPSERVER" => value.ipv4().is_some() || value.ipv6().is_some(),
        "MAC" => value.mac().is_some(),
        "CTRL_IP_LEARNING" => ["any", "dhcp", "none"].iter().any(|v| v.eq_ignore_ascii_case(value)),
        _ => true,
    };
    match reserved_problem(name) {
        Some(problem) if !ok => {
            Err(ParamError::BadValue { name: name.to_string(), value: value.to_string(), reason: problem.to_string() })
        }
        _ => Ok(()),
    }
}

/// What is wrong with a value a reserved variable cannot hold.
fn reserved_problem(name: &str) -> Option<&'static str> {
    Some(match name {
        "IP" => "is not an IPv4 address: IP holds the guest's IPv4 addresses, one plain address per value (no prefix length)",
        "IPV6" => "is not an IPv6 address: IPV6 holds the guest's IPv6 addresses, one plain address per value (no prefix length)",
        "DHCPSERVERV6" => "is not an IPv6 address: DHCPSERVERV6 holds DHCPv6 servers' addresses, one per value",
        "DHCPSERVER" => "is not an IPv4 or IPv6 address: DHCPSERVER holds DHCP servers' addresses, one per value",
        "MAC" => "is not a MAC address (like 52:54:00:12:34:56)",
        "CTRL_IP_LEARNING" => "is not one of any, dhcp or none",
        _ => return None,
    })
}

/// A text refused as a value of parameter `name`. For a reserved variable
/// the message says what it holds (no text that fails [`ParamValue::new`]
/// is an address, a MAC or a learning mode, and the user most likely meant
/// one: `IP='192.0.2.1/32'`).
pub fn param_value_refused(name: &str, e: ParamValueError) -> ParamError {
    let reason = reserved_problem(name).map_or_else(|| e.problem.to_string(), str::to_string);
    ParamError::BadValue { name: name.to_string(), value: e.value, reason }
}

/// Checks a parameter a binding gives (or a caller's parameter in
/// resolution): a valid name, at most [`MAX_PARAM_VALUES`] values, and for
/// libvirt's reserved variables (`IP`, `IPV6`, `MAC`, `DHCPSERVER`,
/// `DHCPSERVERV6`, `CTRL_IP_LEARNING`) values of their kind. That each value
/// is one libvirt accepts (not empty; letters, digits and `_.:`) is known:
/// it is a [`ParamValue`].
pub fn check_param(name: &str, values: &[ParamValue]) -> Result<(), ParamError> {
    if name.is_empty() || !name.chars().all(is_var_name_char) {
        return Err(ParamError::BadName { name: name.to_string() });
    }
    if values.len() > MAX_PARAM_VALUES {
        return Err(ParamError::TooManyValues { name: name.to_string(), count: values.len(), limit: MAX_PARAM_VALUES });
    }
    for v in values {
        check_reserved(name, v)?;
    }
    Ok(())
}

/// Reads `text` as a value of parameter `name` where a binding's parameters
/// come in: a [`ParamValue`] that, for a reserved variable, is of its kind
/// (see [`check_param`]).
pub fn read_param_value(name: &str, text: &str) -> Result<ParamValue, ParamError> {
    let v = ParamValue::new(text).map_err(|e| param_value_refused(name, e))?;
    check_reserved(name, &v)?;
    Ok(v)
}

/// Why a binding cannot be accepted (see [`Binding::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// A field of the binding is not acceptable.
    #[error("{field}: {message}")]
    Field {
        /// The field (`owner.name`, `portdev`, `filterref.filter`, ...).
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A parameter is not acceptable.
    #[error("filterref parameter: {0}")]
    Param(#[from] ParamError),
}

impl Binding {
    /// Checks what the XML reader checks, for bindings that come some other
    /// way (the JSON form, read with serde): the owner's name is not empty
    /// and, like its UUID, has no control characters; `portdev` and
    /// `linkdev` are interface names; the filter's name has no control
    /// characters or '/'; every parameter passes [`check_param`]; the MAC is
    /// unicast.
    pub fn check(&self) -> Result<(), BindingError> {
        let field = |field: &'static str| move |message: String| BindingError::Field { field, message };
        if self.owner.name.is_empty() {
            return Err(field("owner.name")("the owner needs a non-empty name".into()));
        }
        check_no_control("owner name", &self.owner.name).map_err(field("owner.name"))?;
        check_no_control("owner uuid", &self.owner.uuid).map_err(field("owner.uuid"))?;
        // portdev is an IfName: checked when it was made.
        if let Some(l) = &self.linkdev {
            check_ifname(l).map_err(field("linkdev"))?;
        }
        if self.mac.0[0] & 1 != 0 {
            return Err(field("mac")(format!("{} is not unicast: a NIC's MAC must be unicast", self.mac)));
        }
        if self.filterref.filter.is_empty() {
            return Err(field("filterref.filter")("the binding needs a filter name".into()));
        }
        check_filter_name(&self.filterref.filter).map_err(field("filterref.filter"))?;
        for (name, values) in &self.filterref.params {
            check_param(name, values)?;
        }
        Ok(())
    }
}

/// A Linux interface name that guestwall can filter, checked once where it
/// comes in ([`check_ifname`]): code that holds one never checks again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    /// `name`, if it is an interface name guestwall can filter.
    pub fn new(name: impl Into<String>) -> Result<IfName, String> {
        let name = name.into();
        check_ifname(&name)?;
        Ok(IfName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = String;
    fn try_from(s: String) -> Result<IfName, String> {
        IfName::new(s)
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl std::ops::Deref for IfName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for IfName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IfName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for IfName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for IfName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
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
    // nftables reads `\*` as an escaped wildcard in a name that ends in
    // `*`, so such a port could not be matched exactly.
    if name.ends_with('*') && name.contains('\\') {
        return Err(format!(
            "'{name}' cannot be filtered: nftables cannot match a name that ends in '*' and has a '\\'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ifname_is_checked_once_where_it_is_made() {
        let n = IfName::new("vnet0").expect("valid");
        assert_eq!(n, "vnet0");
        assert_eq!(n.len(), 5, "reads as a str");
        assert!(IfName::new("a/b").is_err());
        let json: IfName = serde_json::from_str("\".hid\"").expect("a hidden name is a name");
        assert_eq!(json.as_str(), ".hid");
        let bad = serde_json::from_str::<IfName>("\"v\\\\*\"").expect_err("ends in \\*");
        assert!(bad.to_string().contains("cannot be filtered"), "{bad}");
        assert_eq!(serde_json::to_string(&n).expect("json"), "\"vnet0\"");
    }

    #[test]
    fn ifnames() {
        assert!(check_ifname("vnet0").is_ok());
        assert!(check_ifname("a-very-long-name0").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("..").is_err());
    }

    fn binding(params: &[(&str, &[&str])]) -> Binding {
        Binding {
            owner: Owner { name: "vm".into(), uuid: "5c6d49af-b071-6127-b4ec-6f8ed4b55335".into() },
            portdev: IfName::new("vnet0").expect("ifname"),
            linkdev: None,
            mac: MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            filterref: FilterRef {
                filter: "clean-traffic".into(),
                params: params
                    .iter()
                    .map(|(n, vs)| {
                        (n.to_string(), vs.iter().map(|v| ParamValue::new(*v).expect("a valid value")).collect())
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn malformed_ip_is_refused_naming_parameter_and_value() {
        assert!(binding(&[("IP", &["192.0.2.1"]), ("IPV6", &["2001:db8::1"])]).check().is_ok());
        // Texts that are no value at all are refused where they come in,
        // with what the reserved variable holds.
        for bad in ["192.0.2.1/32", "192.0.2.1 } ; flush ruleset ; {", ""] {
            let e = read_param_value("IP", bad).unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with(&format!("parameter IP: value '{bad}' is not an IPv4 address")), "{s}");
        }
        // Values that are not of the reserved variable's kind are refused
        // where they come in and by the binding's check.
        let e = binding(&[("IP", &["192.0.2.2", "192.0.2.300"])]).check().unwrap_err();
        let s = e.to_string();
        assert!(s.contains("parameter IP: value '192.0.2.300' is not an IPv4 address"), "{s}");
        assert_eq!(read_param_value("IP", "192.0.2.300").unwrap_err().to_string(), s["filterref parameter: ".len()..]);
        let e = read_param_value("IPV6", "2001:db8::1/64").unwrap_err();
        assert!(e.to_string().contains("not an IPv6 address"), "{e}");
        let e = binding(&[("IPV6", &["192.0.2.1"])]).check().unwrap_err();
        assert!(e.to_string().contains("not an IPv6 address"), "{e}");
        let e = binding(&[("CTRL_IP_LEARNING", &["sometimes"])]).check().unwrap_err();
        assert!(e.to_string().contains("any, dhcp or none"), "{e}");
        assert!(binding(&[("CTRL_IP_LEARNING", &["DHCP"])]).check().is_ok());
        let e = read_param_value("PORT", "80;").unwrap_err();
        assert!(e.to_string().contains("parameter PORT: value '80;' may only have"), "{e}");
        assert_eq!(read_param_value("PORT", "80").expect("a port").reading(), ParamValue::new("80").unwrap().reading());
    }

    #[test]
    fn json_values_are_read_where_they_come_in() {
        let json = |params: &str| {
            format!(
                r#"{{"owner":{{"name":"vm","uuid":"u"}},"portdev":"vnet0","mac":"52:54:00:00:00:01","filterref":{{"filter":"f","params":{params}}}}}"#
            )
        };
        let b: Binding = serde_json::from_str(&json(r#"{"IP":["192.0.2.1"],"PORT":["0x50"]}"#)).expect("json");
        assert_eq!(b.filterref.params["PORT"], ["0x50"]);
        assert_eq!(b.filterref.params["IP"][0].ipv4(), Some(std::net::Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(
            serde_json::to_string(&b).expect("json"),
            json(r#"{"IP":["192.0.2.1"],"PORT":["0x50"]}"#),
            "written back as it came"
        );
        let e = serde_json::from_str::<Binding>(&json(r#"{"IP":["192.0.2.1/32"]}"#)).unwrap_err().to_string();
        assert!(e.starts_with("parameter IP: value '192.0.2.1/32' is not an IPv4 address"), "{e}");
        let e = serde_json::from_str::<Binding>(&json(r#"{"P":["a","80 443"]}"#)).unwrap_err().to_string();
        assert!(e.starts_with("parameter P: value '80 443' may only have letters, digits and _.:"), "{e}");
        let e = serde_json::from_str::<Binding>(&json(r#"{"P":[""]}"#)).unwrap_err().to_string();
        assert!(e.starts_with("parameter P: value '' is empty"), "{e}");
    }

    #[test]
    fn control_characters_are_refused() {
        let e = binding(&[("A\nB", &["1"])]).check().unwrap_err();
        assert!(matches!(e, BindingError::Param(ParamError::BadName { .. })), "{e:?}");
        let mut b = binding(&[]);
        b.filterref.filter = "x\ndelete table inet fw\n#".into();
        let e = b.check().unwrap_err();
        assert!(e.to_string().starts_with("filterref.filter: filter name 'x\\ndelete"), "{e}");
        let mut b = binding(&[]);
        b.owner.name = "vm\u{202e}".into();
        assert!(b.check().is_err());
    }

    #[test]
    fn param_values_at_and_past_the_limit() {
        let value = |i: usize| ParamValue::new(i.to_string()).expect("a number");
        let at: Vec<ParamValue> = (0..MAX_PARAM_VALUES).map(value).collect();
        assert!(check_param("PORTS", &at).is_ok());
        let past: Vec<ParamValue> = (0..=MAX_PARAM_VALUES).map(value).collect();
        let e = check_param("PORTS", &past).unwrap_err();
        assert_eq!(e, ParamError::TooManyValues { name: "PORTS".into(), count: MAX_PARAM_VALUES + 1, limit: 1024 });
        assert!(e.to_string().contains("PORTS has 1025 values") && e.to_string().contains("at most 1024"), "{e}");
    }
}
