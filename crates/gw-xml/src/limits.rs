//! Limits on the documents we read, checked before the XML parser sees them.
//!
//! The XML parser (roxmltree) descends recursively into nested elements, so a
//! deeply nested document would overflow the stack and abort the process; it
//! expands DTD entities (a 100 KB entity referenced 10,000 times takes
//! gigabytes) and joins adjacent text pieces by copying (quadratic in the
//! number of pieces); and it checks an element's attributes for duplicates
//! pairwise (quadratic in their number). A single pass over the text, without
//! recursion, refuses all of these first, with a message that names the
//! limit. nwfilter documents are small and shallow: libvirt's largest
//! built-in filter is under 1 KB and its test corpus's largest document
//! 2.6 KB, nested 3 elements deep (`filter` > `rule` > `tcp`), with at most a
//! few dozen attributes on an element and no DTD, entity or CDATA section.

/// The largest document (filter or binding) read, in bytes: 1 MiB.
///
/// libvirt's largest built-in filter is under 1 KB and its corpus's largest
/// document 2.6 KB; 1 MiB still holds a generated filter of about 10,000
/// rules, while bounding what one document costs to parse (the parsed tree
/// takes a few times the text; reading 1 MiB takes well under a second).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The deepest nesting of elements accepted (the root element is depth 1).
///
/// Filters nest 3 deep (`filter` > `rule` > `tcp`) and bindings 3 deep
/// (`filterbinding` > `filterref` > `parameter`); 64 leaves room for any
/// extension while keeping the XML parser's recursion (one level per
/// element) far from the smallest thread stacks (2 MiB for Rust threads).
pub const MAX_XML_DEPTH: usize = 64;

/// The most attributes one element may have.
///
/// The protocol element with the most attributes (`tcp`) has about 20, plus
/// `match`; 64 leaves room for misspelt ones (reported as quirks) while
/// keeping the parser's duplicate-attribute check (pairwise) and our quirk
/// reports cheap.
pub const MAX_XML_ATTRIBUTES: usize = 64;

/// The most XML nodes (elements, text pieces, comments, processing
/// instructions) a document may have; the XML parser stops at this count.
///
/// A rule written one element per line is about 5 nodes (two elements and
/// the whitespace between them) in about 100 bytes, so a full
/// [`MAX_DOCUMENT_BYTES`] document of rules has about 55,000 nodes; 100,000
/// leaves room for that and bounds the parsed tree (tens of bytes per node)
/// to a few MB whatever the document holds.
pub const MAX_XML_NODES: u32 = 100_000;

/// A document refused by [`prescan`]: the byte offset, the element (or
/// `xml`) and the message.
pub(crate) struct Refused {
    pub pos: usize,
    pub element: String,
    pub message: String,
}

fn tag_name(text: &str, start: usize) -> String {
    let rest = &text[start..];
    let end = rest.find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>').unwrap_or(rest.len());
    rest[..end].chars().take(64).collect()
}

/// Checks the limits above in one pass over the text, with no recursion.
///
/// The scan follows XML's lexical structure only as far as it needs to
/// (comments, processing instructions, CDATA, DOCTYPE, tags and quoted
/// attribute values). Malformed text it cannot follow is left to the XML
/// parser, which then reports it; the scan never reads past the text's end.
pub(crate) fn prescan(text: &str) -> Result<(), Refused> {
    prescan_with(text, MAX_DOCUMENT_BYTES, "1 MiB, MAX_DOCUMENT_BYTES", false)
}

/// [`prescan`] with another size limit (`limit_name` says it in the
/// message), and CDATA sections allowed or not: documents written by
/// others (a libvirt domain, whose `<metadata>` may hold another program's
/// CDATA) are read with the same depth and attribute limits.
pub(crate) fn prescan_with(text: &str, max_bytes: usize, limit_name: &str, allow_cdata: bool) -> Result<(), Refused> {
    let refuse = |pos: usize, element: String, message: String| Err(Refused { pos, element, message });
    if text.len() > max_bytes {
        return refuse(
            0,
            "xml".into(),
            format!("the document is {} bytes; at most {max_bytes} bytes ({limit_name}) are read", text.len()),
        );
    }
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(off) = text[i..].find('<') {
        let start = i + off;
        let rest = &text[start..];
        if let Some(body) = rest.strip_prefix("<!--") {
            match body.find("-->") {
                Some(e) => i = start + 4 + e + 3,
                None => return Ok(()),
            }
        } else if let Some(body) = rest.strip_prefix("<![CDATA[").filter(|_| allow_cdata) {
            match body.find("]]>") {
                Some(e) => i = start + 9 + e + 3,
                None => return Ok(()),
            }
        } else if rest.starts_with("<![CDATA[") {
            return refuse(
                start,
                "xml".into(),
                "CDATA sections are not accepted: nwfilter documents have no text that needs one (write &lt; and &amp; instead)".into(),
            );
        } else if rest.starts_with("<!DOCTYPE") {
            return refuse(
                start,
                "xml".into(),
                "a document type declaration (<!DOCTYPE ...>) is not accepted: nwfilter documents need no DTD or entities, and expanding entities can take unbounded memory and time".into(),
            );
        } else if let Some(body) = rest.strip_prefix("<?") {
            match body.find("?>") {
                Some(e) => i = start + 2 + e + 2,
                None => return Ok(()),
            }
        } else if rest.starts_with("</") {
            depth = depth.saturating_sub(1);
            match rest.find('>') {
                Some(e) => i = start + e + 1,
                None => return Ok(()),
            }
        } else if rest.starts_with("<!") {
            // Not XML the parser accepts; it reports it.
            return Ok(());
        } else {
            // A start tag: find its end outside quoted values, counting the
            // attributes by their '='.
            let mut j = start + 1;
            let mut quote: Option<u8> = None;
            let mut attrs = 0usize;
            let end = loop {
                let Some(&c) = b.get(j) else { return Ok(()) };
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None => match c {
                        b'\'' | b'"' => quote = Some(c),
                        b'=' => attrs += 1,
                        b'>' => break j,
                        b'<' => return Ok(()),
                        _ => {}
                    },
                }
                j += 1;
            };
            let name = tag_name(text, start + 1);
            if attrs > MAX_XML_ATTRIBUTES {
                let message = format!(
                    "<{name}> has {attrs} attributes; an element may have at most {MAX_XML_ATTRIBUTES} (MAX_XML_ATTRIBUTES)"
                );
                return refuse(start, name, message);
            }
            if b[end - 1] != b'/' {
                depth += 1;
                if depth > MAX_XML_DEPTH {
                    let message = format!(
                        "elements are nested more than {MAX_XML_DEPTH} deep (MAX_XML_DEPTH); filters and bindings nest 3 deep"
                    );
                    return refuse(start, name, message);
                }
            }
            i = end + 1;
        }
    }
    Ok(())
}
