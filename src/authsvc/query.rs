//! The request stock nsqd makes of its auth server (`internal/auth` in nsqd v1.3.0):
//! `GET /auth?remote_ip=IP&tls=true|false&secret=SECRET&common_name=CN`, parsed strictly and
//! within bounds before anything is looked up. No I/O here.

use http::Method;

/// The path nsqd asks when `--auth-http-address` is `host:port` (a full URL names its own).
pub const PATH: &str = "/auth";

/// The parameters of one auth request. Only `secret` decides anything; the rest is what
/// nsqd knows about its client, recorded in the audit line.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthQuery {
    /// The client's AUTH body, as nsqd received it.
    pub secret: String,
    /// The client's address as nsqd sees it (empty for a Unix socket client).
    pub remote_ip: String,
    /// Whether the client's connection to nsqd is TLS.
    pub tls: bool,
    /// The CN of the client's certificate at nsqd, when it sent one. Not trusted as an
    /// identity: nsqd may not verify client certificates at all.
    pub common_name: String,
}

/// Why a request is not an auth request nsqgate answers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("no such path (nsqd asks {PATH})")]
    NotFound,
    #[error("only GET is answered")]
    MethodNotAllowed,
    #[error("query longer than {0} bytes")]
    TooLong(usize),
    #[error("missing or empty `secret`")]
    MissingSecret,
    #[error("`{0}` given more than once")]
    Repeated(&'static str),
    #[error("`tls` is neither true nor false")]
    BadTls,
    #[error("bad percent-encoding or not UTF-8 in `{0}`")]
    BadEncoding(&'static str),
}

impl QueryError {
    /// The HTTP status nsqd gets (any non-200 is "AUTH failed" to the client).
    pub fn status(&self) -> http::StatusCode {
        match self {
            QueryError::NotFound => http::StatusCode::NOT_FOUND,
            QueryError::MethodNotAllowed => http::StatusCode::METHOD_NOT_ALLOWED,
            QueryError::TooLong(_) => http::StatusCode::URI_TOO_LONG,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// The names nsqd sends; others are ignored (a later nsqd may add some).
const NAMES: [&str; 4] = ["secret", "remote_ip", "tls", "common_name"];

/// Parses `method`, `path` and the raw `query`. `max_query` bounds the query's length
/// (percent-encoding may triple a secret, so callers allow for that).
pub fn parse(
    method: &Method,
    path: &str,
    query: Option<&str>,
    max_query: usize,
) -> Result<AuthQuery, QueryError> {
    if path != PATH {
        return Err(QueryError::NotFound);
    }
    if method != Method::GET {
        return Err(QueryError::MethodNotAllowed);
    }
    let query = query.unwrap_or("");
    if query.len() > max_query {
        return Err(QueryError::TooLong(max_query));
    }
    let mut values: [Option<String>; 4] = Default::default();
    for part in query.split('&').filter(|part| !part.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let Some((index, known)) = NAMES.into_iter().enumerate().find(|(_, n)| *n == name) else {
            continue;
        };
        let decoded = decode(value).ok_or(QueryError::BadEncoding(known))?;
        match values.get_mut(index) {
            Some(slot @ None) => *slot = Some(decoded),
            _ => return Err(QueryError::Repeated(known)),
        }
    }
    let [secret, remote_ip, tls, common_name] = values;
    let secret = secret
        .filter(|s| !s.is_empty())
        .ok_or(QueryError::MissingSecret)?;
    let tls = match tls.as_deref() {
        Some("true") => true,
        Some("false") | None => false,
        Some(_) => return Err(QueryError::BadTls),
    };
    Ok(AuthQuery {
        secret,
        remote_ip: remote_ip.unwrap_or_default(),
        tls,
        common_name: common_name.unwrap_or_default(),
    })
}

/// `application/x-www-form-urlencoded` decoding as Go's `url.Values.Encode` wrote it (`+` is
/// a space); None on a broken `%XX` or bytes that are not UTF-8.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'%' => {
                // Two hex digits exactly (from_str_radix alone would take a sign).
                let hex = bytes.get(at + 1..at + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                at += 3;
            }
            b'+' => {
                out.push(b' ');
                at += 1;
            }
            other => {
                out.push(other);
                at += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
