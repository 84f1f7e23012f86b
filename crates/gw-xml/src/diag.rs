//! Diagnostics with the place in the document they are about.

use std::fmt;

/// Whether a diagnostic stops the document from being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The document cannot be read.
    Error,
    /// libvirt reads the document, but not as it is written (something is
    /// ignored, merged or changed). `filter validate` refuses these unless
    /// told to accept libvirt's reading.
    Quirk,
}

/// One finding, pointing at an element and maybe one of its attributes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or quirk.
    pub severity: Severity,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// The element's name.
    pub element: String,
    /// The attribute's name, when the finding is about one.
    pub attribute: Option<String>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.element)?;
        if let Some(a) = &self.attribute {
            write!(f, "/{a}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A document that could not be read: every error found, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ReadError {
    /// The errors (never empty).
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// A document read successfully, with the quirks met on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<T> {
    /// What was read.
    pub value: T,
    /// What libvirt's reading ignored, merged or changed.
    pub quirks: Vec<Diagnostic>,
}

/// Fills in the line and column of diagnostics found at byte offsets of
/// `text`, in one pass over the text whatever their number (computing each
/// position from the start of the text would make a document with many
/// findings quadratic to read). Lines count `\n`; columns count characters
/// from the line's start, both from 1, as the XML parser's positions.
pub(crate) fn locate(text: &str, items: Vec<(usize, Diagnostic)>) -> Vec<Diagnostic> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].0);
    let mut items = items;
    let (mut at, mut line, mut col) = (0usize, 1u32, 1u32);
    for i in order {
        let mut pos = items[i].0.min(text.len());
        while !text.is_char_boundary(pos) {
            pos -= 1;
        }
        for c in text[at..pos].chars() {
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        at = pos;
        items[i].1.line = line;
        items[i].1.col = col;
    }
    items.into_iter().map(|(_, d)| d).collect()
}
