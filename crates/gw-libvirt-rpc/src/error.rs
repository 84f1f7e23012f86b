//! libvirt error numbers (virterror.h) and the error a backend returns.

use thiserror::Error;

/// `virErrorNumber` values this crate produces.
pub mod code {
    /// VIR_ERR_INTERNAL_ERROR
    pub const INTERNAL_ERROR: i32 = 1;
    /// VIR_ERR_NO_SUPPORT
    pub const NO_SUPPORT: i32 = 3;
    /// VIR_ERR_NO_CONNECT
    pub const NO_CONNECT: i32 = 5;
    /// VIR_ERR_INVALID_ARG
    pub const INVALID_ARG: i32 = 8;
    /// VIR_ERR_OPERATION_FAILED
    pub const OPERATION_FAILED: i32 = 9;
    /// VIR_ERR_XML_ERROR
    pub const XML_ERROR: i32 = 27;
    /// VIR_ERR_RPC
    pub const RPC: i32 = 39;
    /// VIR_ERR_OPERATION_INVALID
    pub const OPERATION_INVALID: i32 = 55;
    /// VIR_ERR_NO_NWFILTER
    pub const NO_NWFILTER: i32 = 62;
    /// VIR_ERR_NO_NWFILTER_BINDING
    pub const NO_NWFILTER_BINDING: i32 = 101;
}

/// `virErrorDomain` values this crate produces.
pub mod domain {
    /// VIR_FROM_NONE
    pub const NONE: i32 = 0;
    /// VIR_FROM_RPC: the daemon's dispatch layer reports under this.
    pub const RPC: i32 = 7;
    /// VIR_FROM_NWFILTER: the nwfilter driver and its XML parsers.
    pub const NWFILTER: i32 = 33;
}

/// VIR_ERR_ERROR, the level of every error libvirt's drivers raise.
pub const LEVEL_ERROR: i32 = 2;

/// An error to send back as a libvirt error reply.
///
/// `message` is the whole text libvirt would carry, prefix included
/// ("Network filter not found: ..."); virsh prints it after "error: ".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message} (code {code}, domain {domain})")]
pub struct RpcError {
    /// A `virErrorNumber`.
    pub code: i32,
    /// A `virErrorDomain`.
    pub domain: i32,
    /// The full message.
    pub message: String,
}

impl RpcError {
    /// Any code and domain, message as given.
    pub fn new(code: i32, domain: i32, message: impl Into<String>) -> Self {
        RpcError { code, domain, message: message.into() }
    }

    /// As nwfilterLookupByName reports a missing filter.
    pub fn no_nwfilter_name(name: &str) -> Self {
        Self::no_nwfilter(&format!("no nwfilter with matching name '{name}'"))
    }

    /// As the nwfilter driver reports a missing filter looked up by UUID
    /// (lookup, undefine and dumpxml all find the filter by UUID).
    pub fn no_nwfilter_uuid(uuid: &[u8; 16]) -> Self {
        Self::no_nwfilter(&format!("no nwfilter with matching uuid '{}'", format_uuid(uuid)))
    }

    /// VIR_ERR_NO_NWFILTER with a detail.
    pub fn no_nwfilter(detail: &str) -> Self {
        Self::new(code::NO_NWFILTER, domain::NWFILTER, format!("Network filter not found: {detail}"))
    }

    /// As the nwfilter driver reports a missing binding.
    pub fn no_binding(portdev: &str) -> Self {
        Self::new(
            code::NO_NWFILTER_BINDING,
            domain::NWFILTER,
            format!("Network filter binding not found: no nwfilter binding for port dev '{portdev}'"),
        )
    }

    /// VIR_ERR_OPERATION_INVALID, e.g. `operation_invalid("nwfilter is in use")`.
    pub fn operation_invalid(detail: &str) -> Self {
        Self::new(code::OPERATION_INVALID, domain::NWFILTER, format!("Requested operation is not valid: {detail}"))
    }

    /// VIR_ERR_OPERATION_FAILED, e.g. `operation_failed("binding 'vnet0' already exists")`.
    pub fn operation_failed(detail: &str) -> Self {
        Self::new(code::OPERATION_FAILED, domain::NWFILTER, format!("operation failed: {detail}"))
    }

    /// VIR_ERR_XML_ERROR from the nwfilter XML parsers.
    pub fn xml_error(detail: &str) -> Self {
        Self::new(code::XML_ERROR, domain::NWFILTER, format!("XML error: {detail}"))
    }

    /// VIR_ERR_INVALID_ARG.
    pub fn invalid_arg(detail: &str) -> Self {
        Self::new(code::INVALID_ARG, domain::NWFILTER, format!("invalid argument: {detail}"))
    }

    /// As virCheckFlags reports flags a function does not take.
    pub fn unsupported_flags(flags: u32, function: &str) -> Self {
        Self::invalid_arg(&format!("unsupported flags (0x{flags:x}) in function {function}"))
    }

    /// VIR_ERR_NO_SUPPORT; `what` is the API name, as libvirt names it.
    pub fn no_support(what: &str) -> Self {
        Self::new(
            code::NO_SUPPORT,
            domain::NONE,
            format!("this function is not supported by the connection driver: {what}"),
        )
    }

    /// VIR_ERR_INTERNAL_ERROR from the nwfilter driver.
    pub fn internal(detail: &str) -> Self {
        Self::new(code::INTERNAL_ERROR, domain::NWFILTER, format!("internal error: {detail}"))
    }

    /// VIR_ERR_INTERNAL_ERROR from the dispatch layer (VIR_FROM_RPC), as
    /// libvirtd's "connection not open".
    pub fn dispatch_internal(detail: &str) -> Self {
        Self::new(code::INTERNAL_ERROR, domain::RPC, format!("internal error: {detail}"))
    }

    /// VIR_ERR_RPC: its libvirt format is the bare detail.
    pub fn rpc(detail: impl Into<String>) -> Self {
        Self::new(code::RPC, domain::RPC, detail)
    }
}

/// The canonical 8-4-4-4-12 lowercase form libvirt prints.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses a UUID as libvirt accepts it: 32 hex digits, dashes anywhere
/// between pairs ignored, surrounding whitespace ignored.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut hi: Option<u8> = None;
    for c in s.trim().chars() {
        if c == '-' && hi.is_none() {
            continue;
        }
        let d = c.to_digit(16)? as u8;
        match hi.take() {
            None => hi = Some(d),
            Some(h) => {
                *out.get_mut(n)? = h << 4 | d;
                n += 1;
            }
        }
    }
    (n == 16 && hi.is_none()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text() {
        let u = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7];
        let s = format_uuid(&u);
        assert_eq!(s, "12345678-9abc-def0-0001-020304050607");
        assert_eq!(parse_uuid(&s), Some(u));
        assert_eq!(parse_uuid("123456789abcdef00001020304050607"), Some(u));
        assert_eq!(parse_uuid("1234"), None);
        assert_eq!(parse_uuid("12345678-9abc-def0-0001-020304050607aa"), None);
    }

    #[test]
    fn messages_read_like_libvirt() {
        assert_eq!(
            RpcError::no_nwfilter_name("x").message,
            "Network filter not found: no nwfilter with matching name 'x'"
        );
        assert_eq!(
            RpcError::no_binding("vnet0").message,
            "Network filter binding not found: no nwfilter binding for port dev 'vnet0'"
        );
    }
}
