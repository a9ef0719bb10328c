//! The one escaping rule for every value that reaches a log line: control characters (C0,
//! DEL, C1) and the Unicode characters that reorder or break lines become visible escapes, so
//! text from a client or a peer can neither forge a line nor colour a terminal. Pure; no I/O.

use std::fmt::{self, Write};

/// A `fmt::Write` that passes text through with every dangerous character escaped.
pub struct Escaping<W> {
    inner: W,
}

impl<W: Write> Escaping<W> {
    pub fn new(inner: W) -> Escaping<W> {
        Escaping { inner }
    }
}

impl<W: Write> Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Runs of safe text are written whole; only the characters to escape are split out.
        let mut start = 0;
        for (at, c) in text.char_indices() {
            if !needs_escape(c) {
                continue;
            }
            self.inner.write_str(&text[start..at])?;
            match c {
                '\n' => self.inner.write_str("\\n")?,
                '\r' => self.inner.write_str("\\r")?,
                '\t' => self.inner.write_str("\\t")?,
                '\0' => self.inner.write_str("\\0")?,
                c if u32::from(c) < 0x80 => write!(self.inner, "\\x{:02x}", u32::from(c))?,
                c => write!(self.inner, "\\u{{{:x}}}", u32::from(c))?,
            }
            start = at + c.len_utf8();
        }
        self.inner.write_str(&text[start..])
    }
}

/// `text` with every dangerous character escaped. The log lines escape as they write
/// (`Escaping`); the tests compare against this.
#[cfg(test)]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Writing to a String cannot fail.
    let _ = Escaping::new(&mut out).write_str(text);
    out
}

/// Control characters, and the invisible ones that reorder text (bidi overrides, as in
/// "Trojan Source") or end a line for some readers (U+2028, U+2029).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests;
