//! The only way text from outside (port names, filter and chain names,
//! comments) enters an nft script.
//!
//! nft reads its scripts as a language: a newline in a `#` comment line ends
//! the comment and starts a command, a `"` ends a string, and a trailing `*`
//! in an interface name is a wildcard even inside quotes. Everything that did
//! not come from guestwall's own code goes through one of these functions,
//! which either write it so that nft reads back exactly that value or refuse
//! it; nothing else in this crate quotes.

/// Why a name cannot be written as nft text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// An interface name nft cannot be given literally.
    #[error("interface name {0:?} cannot be written for nftables: {1}")]
    Ifname(String, &'static str),
}

/// An interface name as an nft string literal that matches exactly that
/// name. Linux allows any byte in a name but `/`, `:`, NUL and white space;
/// of the rest only `"` cannot be quoted for nft (its strings have no escape
/// for it), and control characters are refused because nothing prints them
/// sanely. A trailing `*` is escaped (`\*`): unescaped, nft reads it as a
/// wildcard, so a port named `v*` would stand for every port starting with
/// `v`. When a string ends in an escaped `*`, nft also drops the
/// backslashes before other `*`s, so a name ending in `*` that has a
/// backslash cannot be written at all and is refused.
pub fn ifname(name: &str) -> Result<String, TextError> {
    if name.is_empty() || name.len() > 15 {
        return Err(TextError::Ifname(name.into(), "it must have 1 to 15 bytes"));
    }
    if let Some(bad) = name.chars().find(|c| *c == '"' || c.is_control() || c.is_whitespace() || *c == '/') {
        return Err(TextError::Ifname(
            name.into(),
            match bad {
                '"' => "it contains '\"'",
                '/' => "it contains '/'",
                _ => "it contains a control or white-space character",
            },
        ));
    }
    if name.ends_with('*') && name.contains('\\') {
        return Err(TextError::Ifname(name.into(), "it ends in '*' and has a '\\', which nft cannot write"));
    }
    let mut s = String::with_capacity(name.len() + 3);
    s.push('"');
    match name.strip_suffix('*') {
        Some(head) => {
            s.push_str(head);
            s.push_str("\\*");
        }
        None => s.push_str(name),
    }
    s.push('"');
    Ok(s)
}

/// [`ifname`] for names already checked at the boundary
/// (`gw_model::check_ifname`): a name that still cannot be written becomes
/// [`placeholder`], which no interface can have, so a mistake elsewhere can
/// never widen a rule or break a whole load.
pub fn ifname_checked(name: &str) -> String {
    ifname(name).unwrap_or_else(|_| format!("\"{}\"", placeholder(name)))
}

/// What stands for a name nft cannot be given: `gw/` and a hash of the
/// name (Linux refuses `/` in interface names, so it matches nothing; one
/// per name, so two such ports never collide).
pub fn placeholder(name: &str) -> String {
    let h = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("gw/{h:08x}")
}

/// The kernel's key for an interface name (its bytes, NUL-padded to 16):
/// the same name [`ifname_checked`] writes, so text and netlink agree.
pub fn ifname_key(name: &str) -> Vec<u8> {
    let mut b = match ifname(name) {
        Ok(_) => name.as_bytes().to_vec(),
        Err(_) => placeholder(name).into_bytes(),
    };
    b.resize(16, 0);
    b
}

/// Text for an nft `comment "..."` or a `#` script comment: printable ASCII
/// only, without `"` and `\`, at most `max` bytes. Anything else becomes `?`.
/// Comments are for people reading `nft list ruleset`; the exact text is in
/// the filter itself.
pub fn comment(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() >= max {
            break;
        }
        out.push(if (' '..='~').contains(&c) && c != '"' && c != '\\' { c } else { '?' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_star_is_never_a_wildcard() {
        assert_eq!(ifname("*").as_deref(), Ok("\"\\*\""));
        assert_eq!(ifname("v*").as_deref(), Ok("\"v\\*\""));
        assert!(ifname("a\\*").is_err());
        assert_eq!(ifname("a\\").as_deref(), Ok("\"a\\\""));
        assert_eq!(ifname("v*x").as_deref(), Ok("\"v*x\""));
        assert_eq!(ifname("x$y;{}#").as_deref(), Ok("\"x$y;{}#\""));
    }

    #[test]
    fn names_nft_cannot_quote_are_refused() {
        for bad in ["", "a\"b", "a\nb", "a b", "a/b", "0123456789abcdef", "a\u{7f}"] {
            assert!(ifname(bad).is_err(), "{bad:?}");
            assert!(ifname_checked(bad).starts_with("\"gw/"), "{bad:?}");
            assert_eq!(&ifname_key(bad)[..3], b"gw/");
        }
    }

    #[test]
    fn comments_cannot_end_a_line_or_a_string() {
        let c = comment("x\ndelete table inet fw\n#\"\\\u{2028}é", 120);
        assert_eq!(c, "x?delete table inet fw?#????");
        assert_eq!(comment(&"a".repeat(300), 120).len(), 120);
    }
}
