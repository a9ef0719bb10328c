//! Reading what a request asks for, with no I/O: screening a raw request head for smuggling
//! tricks before hyper parses it, query parameters (nsqd reads parameters from the query string
//! only), and the credential a caller presents.

use ::http::header::{HeaderMap, AUTHORIZATION};

/// The header a caller may use instead of `Authorization: Bearer`: an API key or a JWT, as
/// sent in NSQ's AUTH command. Handy for tools that cannot set a bearer token.
pub const X_NSQ_AUTH: &str = "x-nsq-auth";

/// Why a request head is refused before it reaches the HTTP parser.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Both framings present: two parsers may disagree about where the body ends.
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    /// More than one Content-Length header (or a list in one).
    #[error("several Content-Length values")]
    SeveralLengths,
    /// More than one Transfer-Encoding header line.
    #[error("several Transfer-Encoding headers")]
    SeveralEncodings,
    /// A header line hyper might read differently from another server (obs-fold, a name
    /// with whitespace before the colon, a line without a colon).
    #[error("malformed header line")]
    Malformed,
    /// A line ended by LF alone, not CRLF.
    #[error("a line ended by a bare LF")]
    BareLineFeed,
    /// More header lines than hyper parses ([`MAX_HEADERS`]): hyper would answer 431 with
    /// no body; refused here with the JSON every other refusal has.
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
}

/// The most header lines hyper's HTTP/1 parser takes (its default).
pub const MAX_HEADERS: usize = 100;

/// The end of the request head (index just past its empty line), once `buf` holds all of
/// it. A bare LF ends a line here too, so that a head written with bare LFs is screened (and
/// refused) at once instead of waiting out the head deadline.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|at| match buf.get(at + 1..) {
        Some([b'\n', ..]) => Some(at + 2),
        Some([b'\r', b'\n', ..]) => Some(at + 3),
        _ => None,
    })
}

/// Screens the lines of a complete request head (request line included) and says how the
/// bytes after it are framed: one pass over the head for both.
pub fn screen_head(head: &[u8]) -> Result<Framing, HeadError> {
    let mut lengths = 0;
    let mut encodings = 0;
    let mut framing = Framing {
        body: Some(0),
        last: false,
    };
    // An unreadable Content-Length, reported only once the rest of the screen passed.
    let mut unreadable_length = false;
    let mut http10 = false;
    let mut lines = head.split(|&b| b == b'\n');
    // What follows the last LF is not a line of the head (nothing, for a whole head).
    let _ = lines.next_back();
    for (index, line) in lines.enumerate() {
        // A bare LF ends a line for some parsers and not for others.
        let line = line.strip_suffix(b"\r").ok_or(HeadError::BareLineFeed)?;
        if index == 0 {
            // HTTP/1.0 closes after each request unless asked to keep alive.
            http10 = line.trim_ascii_end().ends_with(b"HTTP/1.0");
            framing.last = http10;
            continue;
        }
        if line.is_empty() {
            break;
        }
        if index > MAX_HEADERS {
            return Err(HeadError::TooManyHeaders);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(HeadError::Malformed);
        }
        let colon = memchr::memchr(b':', line).ok_or(HeadError::Malformed)?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(HeadError::Malformed);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if value.contains(&b',') {
                return Err(HeadError::SeveralLengths);
            }
            framing.body = content_length(value);
            unreadable_length |= framing.body.is_none();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            framing.body = None;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    framing.last = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    framing.last = false;
                }
            }
        }
    }
    match (lengths, encodings) {
        (l, e) if l > 0 && e > 0 => return Err(HeadError::LengthAndChunked),
        (l, _) if l > 1 => return Err(HeadError::SeveralLengths),
        (_, e) if e > 1 => return Err(HeadError::SeveralEncodings),
        _ => {}
    }
    if unreadable_length {
        return Err(HeadError::Malformed);
    }
    framing.last |= framing.body.is_none();
    Ok(framing)
}

/// A Content-Length value: ASCII digits only, within a `u64`.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// What a screened head says about the bytes that follow it on a kept-alive connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Framing {
    /// The body's length in bytes; `None` for a chunked body, whose end only a parser finds
    /// (such a request is the connection's last).
    pub body: Option<u64>,
    /// The client asked to close after this request (`Connection: close`, or HTTP/1.0
    /// without `keep-alive`), or the body is chunked.
    pub last: bool,
}

/// Query parameters, percent-decoded, in order. Like Go's `url.Values.Get`, the first value of
/// a repeated name wins.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

// === impl Query ===

impl Query {
    /// Parses a raw query string; undecodable parts are kept as written (nsqd then refuses
    /// the name as invalid, as it would).
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|part| !part.is_empty())
            .map(|part| {
                let (name, value) = part.split_once('=').unwrap_or((part, ""));
                (decode(name), decode(value))
            })
            .collect();
        Query { pairs }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The query re-encoded from the decoded pairs, so the upstream sees exactly the names
    /// nsqgate authorized (no second parser reading the raw text differently).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.pairs {
            if !out.is_empty() {
                out.push('&');
            }
            encode_into(&mut out, name);
            out.push('=');
            encode_into(&mut out, value);
        }
        out
    }

    /// `path?query`, or just `path` when there are no parameters.
    pub fn with_path(&self, path: &str) -> String {
        match self.encode() {
            query if query.is_empty() => path.to_owned(),
            query => format!("{path}?{query}"),
        }
    }

    /// Only the named parameters, in their original order.
    pub fn only(&self, names: &[&str]) -> Query {
        Query {
            pairs: self
                .pairs
                .iter()
                .filter(|(name, _)| names.contains(&name.as_str()))
                .cloned()
                .collect(),
        }
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.pairs.retain(|(n, _)| n != name);
        self.pairs.push((name.to_owned(), value.to_owned()));
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn decode(text: &str) -> String {
    percent_decode(text, true)
}

/// A URL path as Go's `url.URL.Path` holds it (what nsqadmin's router matches): `%XX` decoded,
/// `+` kept.
pub fn decode_path(path: &str) -> String {
    percent_decode(path, false)
}

fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') if plus_is_space => out.push(b' '),
            (None, other) => out.push(other),
        }
        i += 1;
    }
    // Valid UTF-8 (nearly always) is taken as it is, without a second copy.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// What a caller presented as its credential.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// Nothing: the client certificate (or anonymity) decides.
    None,
    /// A bearer token or `X-NSQ-Auth` value: an API key or a JWT.
    Secret(&'a [u8]),
    /// An `Authorization` header of another scheme, or an empty value.
    Unusable,
}

/// `Authorization: Bearer <secret>` first, then `X-NSQ-Auth: <secret>`.
pub fn credential(headers: &HeaderMap) -> Credential<'_> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value.as_bytes();
        let token = value
            .split_first_chunk::<7>()
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|(_, rest)| rest.trim_ascii());
        return match token {
            Some(token) if !token.is_empty() => Credential::Secret(token),
            _ => Credential::Unusable,
        };
    }
    match headers.get(X_NSQ_AUTH).map(|v| v.as_bytes().trim_ascii()) {
        Some([]) => Credential::Unusable,
        Some(secret) => Credential::Secret(secret),
        None => Credential::None,
    }
}

/// The Go pprof profiles nsqd and nsqlookupd serve under `/debug/pprof/`.
pub fn is_pprof_profile(name: &str) -> bool {
    [
        "cmdline",
        "profile",
        "heap",
        "goroutine",
        "block",
        "threadcreate",
    ]
    .contains(&name)
}

/// The longest part of a client-sent text (a path, an origin) written to a log line.
const MAX_LOGGED: usize = 256;

/// `text` cut to [`MAX_LOGGED`] bytes (at a character boundary), for log lines.
pub fn for_log(text: &str) -> String {
    if text.len() <= MAX_LOGGED {
        return text.to_owned();
    }
    let mut end = MAX_LOGGED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
