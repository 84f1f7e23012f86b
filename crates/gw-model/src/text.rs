//! Characters that names must not contain.
//!
//! Names (of filters, chains, referenced filters, parameters, guests) end up
//! in nftables scripts, comments, file names and log lines. A newline or
//! another control character in one can end a statement early and start a
//! new one (`<filter name='x&#10;delete table inet fw&#10;#'>`), and
//! invisible format characters (bidirectional overrides, zero-width spaces)
//! make two different names look the same. None of them is in any libvirt
//! filter or binding we know of (libvirt's corpus and built-ins have none),
//! so they are refused everywhere a name is read.

use std::fmt;

/// Unicode format characters (general category `Cf`, as of Unicode 15) and
/// the line and paragraph separators (`Zl`, `Zp`), as inclusive ranges.
const FORMAT_RANGES: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{2028}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// Whether `c` may not appear in a name: an ASCII control character (below
/// 0x20, or 0x7f), another Unicode control character (`Cc`, 0x80..0x9f), a
/// Unicode format character (`Cf`: zero-width spaces and joiners,
/// bidirectional marks and overrides, the byte-order mark, ...) or a line or
/// paragraph separator (U+2028, U+2029).
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control() || FORMAT_RANGES.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
}

/// The first character of `s` that [`is_forbidden_char`], if any.
pub fn find_forbidden_char(s: &str) -> Option<char> {
    s.chars().find(|c| is_forbidden_char(*c))
}

/// A name with control characters escaped (`\n`, `\u{202e}`), for messages:
/// an error about a name must not itself carry the newline it complains of.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if is_forbidden_char(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Checks that `name` (a `what`, such as "filter name") has no forbidden
/// character; the error names the character by its code point.
pub fn check_no_control(what: &str, name: &str) -> Result<(), String> {
    match find_forbidden_char(name) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{what} '{}' contains the control or format character U+{:04X}; names may not contain control characters (below 0x20, 0x7f, 0x80-0x9f) or Unicode format characters",
            Shown(name),
            u32::from(c)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_characters() {
        for c in [
            '\0',
            '\n',
            '\r',
            '\t',
            '\x1f',
            '\x7f',
            '\u{85}',
            '\u{9f}',
            '\u{200b}',
            '\u{202e}',
            '\u{2028}',
            '\u{feff}',
            '\u{e0041}',
        ] {
            assert!(is_forbidden_char(c), "{c:?}");
        }
        for c in [' ', 'a', '-', '_', '.', ':', '/', 'é', '中', '\u{a0}'] {
            assert!(!is_forbidden_char(c), "{c:?}");
        }
    }

    #[test]
    fn messages_escape_the_name() {
        let e = check_no_control("filter name", "x\ndelete table inet fw\n#").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("'x\\ndelete table inet fw\\n#'") && e.contains("U+000A"), "{e}");
        assert!(check_no_control("filter name", "clean-traffic").is_ok());
    }
}
