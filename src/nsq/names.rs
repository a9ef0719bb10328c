//! Topic and channel name rules, and Go's `%q` quoting used in nsqd's error texts. No I/O here.

/// Suffix that makes a topic or channel disappear with its last client.
const EPHEMERAL_SUFFIX: &[u8] = b"#ephemeral";

/// nsqd's bound on a name, counting the `#ephemeral` suffix.
const MAX_NAME_LEN: usize = 64;

/// Whether nsqd accepts `name` as a topic: `^[.a-zA-Z0-9_-]+(#ephemeral)?$`, 1..=64 bytes.
pub fn is_valid_topic_name(name: &str) -> bool {
    is_valid_name(name.as_bytes())
}

/// Whether nsqd accepts `name` as a channel (the same rule as topics).
pub fn is_valid_channel_name(name: &str) -> bool {
    is_valid_name(name.as_bytes())
}

/// Whether a (valid) topic or channel name carries the `#ephemeral` suffix.
pub fn is_ephemeral(name: &str) -> bool {
    name.as_bytes().ends_with(EPHEMERAL_SUFFIX)
}

/// The byte-level rule, so the decoder can check a parameter before making a `String` of it.
pub(crate) fn is_valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let stem = name.strip_suffix(EPHEMERAL_SUFFIX).unwrap_or(name);
    !stem.is_empty() && stem.iter().all(|&b| is_name_byte(b))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Quotes bytes the way Go's `fmt` `%q` (strconv.Quote) does, so error texts match nsqd's.
///
/// Exact for ASCII and invalid UTF-8 (each bad byte becomes `\xNN`). For other characters Go
/// consults Unicode's "printable" tables, which std lacks: controls, spaces other than U+0020,
/// format and private-use characters are escaped here; unassigned code points are not.
pub(crate) fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c);
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '"' | '\\' => {
            out.push('\\');
            out.push(c);
        }
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        c if is_go_printable(c) => out.push(c),
        c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

fn is_go_printable(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    !(c.is_control() || c.is_whitespace() || is_format_or_private(c))
}

/// Unicode categories Cf (format) and Co (private use), which Go does not print.
fn is_format_or_private(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
        | 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD)
}
