//! JSON lines written directly, byte for byte as serde_json wrote them from a `Map` of
//! `Value`s (what the JSON formatter built for every line before: ~35,000 instructions a
//! line, most of them the map's nodes and strings): keys in byte order (serde_json's `Map`
//! is a `BTreeMap` without its `preserve_order` feature), a later value for a key replacing
//! an earlier one, strings escaped as serde_json escapes them, no spaces. No I/O here.

use std::fmt::{self, Write};
use std::ops::Range;

/// One JSON object built a field at a time, in any order, then written whole.
#[derive(Default)]
pub struct JsonObject {
    /// Every value's JSON text, one after the other.
    values: String,
    /// Each field's key and where its value lies in `values`, in the order they came.
    fields: Vec<(&'static str, Range<usize>)>,
}

/// A `fmt::Write` that writes text as the inside of a JSON string, escaped as serde_json
/// escapes it: `"` and `\`, and C0 controls (`\b \t \n \f \r` by name, others as `\u00xx`);
/// everything else, DEL and non-ASCII included, as it is.
pub struct JsonString<W>(pub W);

// === impl JsonObject ===

impl JsonObject {
    /// A string value, written by `write` into a [`JsonString`] (so it is escaped as it goes).
    pub fn string(
        &mut self,
        key: &'static str,
        write: impl FnOnce(&mut JsonString<&mut String>) -> fmt::Result,
    ) -> fmt::Result {
        let start = self.values.len();
        self.values.push('"');
        write(&mut JsonString(&mut self.values))?;
        self.values.push('"');
        self.fields.push((key, start..self.values.len()));
        Ok(())
    }

    /// A value already in JSON (a number, `true`, `null`).
    pub fn raw(&mut self, key: &'static str, json: fmt::Arguments<'_>) -> fmt::Result {
        let start = self.values.len();
        self.values.write_fmt(json)?;
        self.fields.push((key, start..self.values.len()));
        Ok(())
    }

    /// Writes `{"key":value,...}`: keys in byte order, the last value given for a key.
    pub fn write_to(&self, out: &mut impl Write) -> fmt::Result {
        let mut order: Vec<usize> = (0..self.fields.len()).collect();
        // Stable: among equal keys the one given last stays last.
        order.sort_by_key(|&i| self.fields[i].0.as_bytes());
        let mut separator = "{";
        for (at, &i) in order.iter().enumerate() {
            let (key, value) = &self.fields[i];
            let replaced = order
                .get(at + 1)
                .is_some_and(|&next| self.fields[next].0 == *key);
            if replaced {
                continue;
            }
            out.write_str(separator)?;
            separator = ",";
            out.write_char('"')?;
            JsonString(&mut *out).write_str(key)?;
            out.write_str("\":")?;
            out.write_str(&self.values[value.clone()])?;
        }
        match separator {
            "{" => out.write_str("{}"),
            _ => out.write_char('}'),
        }
    }
}

// === impl JsonString ===

impl<W: Write> Write for JsonString<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Every byte escaped is ASCII, so the runs between them are whole characters.
        let mut start = 0;
        for (at, byte) in text.bytes().enumerate() {
            let named = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[start..at])?;
            match named {
                "" => write!(self.0, "\\u{:04x}", byte)?,
                named => self.0.write_str(named)?,
            }
            start = at + 1;
        }
        self.0.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests;
