//! Cross-site request forgery: a browser that holds a client certificate (or sits behind an
//! authenticating proxy) sends it with any page's forms and scripts, so a state-changing
//! request is refused when the browser says it comes from another site. No I/O here.
//!
//! The rule, for every method but GET, HEAD and OPTIONS:
//! 1. an `Origin` listed in `[http] allowed_origins` is accepted (it is trusted by name);
//! 2. otherwise `Sec-Fetch-Site: cross-site` or `same-site` is refused;
//! 3. otherwise an `Origin` other than the front's own (`https://` + the `Host` it was asked
//!    for) is refused, `Origin: null` included.
//!
//! Clients that are not browsers (go-nsq, curl, nsqadmin's own server-side calls) send neither
//! header and are not affected; browsers send `Origin` on every POST, PUT and DELETE.

use ::http::header::{HeaderMap, HOST, ORIGIN};
use ::http::Method;

/// Sent by every current browser: where the request was started, relative to its target.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// Why a request is refused as cross-site.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrossSite {
    #[error("Sec-Fetch-Site: {0}")]
    FetchSite(String),
    #[error("Origin {0} is neither this front nor in http.allowed_origins")]
    Origin(String),
}

/// Ok for a request that may go on; the reason otherwise. `allowed` holds normalized origins
/// (lower case, no trailing slash), as config validation leaves them.
pub fn check(method: &Method, headers: &HeaderMap, allowed: &[String]) -> Result<(), CrossSite> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let origin = headers.get(ORIGIN).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    if origin.as_ref().is_some_and(|o| allowed.contains(o)) {
        return Ok(());
    }
    if let Some(site) = headers.get(SEC_FETCH_SITE) {
        let site = String::from_utf8_lossy(site.as_bytes())
            .trim()
            .to_ascii_lowercase();
        if site == "cross-site" || site == "same-site" {
            return Err(CrossSite::FetchSite(site));
        }
    }
    match origin {
        Some(origin) if Some(&origin) != own_origin(headers).as_ref() => {
            Err(CrossSite::Origin(origin))
        }
        _ => Ok(()),
    }
}

/// The origin a browser gives a page of this front: `https://` and the `Host` it asked for.
fn own_origin(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(HOST)?.to_str().ok()?.trim();
    (!host.is_empty()).then(|| format!("https://{}", host.to_ascii_lowercase()))
}

/// An `allowed_origins` entry in the form browsers send: `scheme://host[:port]`, lower case.
/// `None` when it is not one (a path, a query, user info, another scheme).
pub fn normalize(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    let valid = matches!(scheme, "http" | "https")
        && !authority.contains(['/', '?', '#', '@', ' '])
        && valid_authority(authority);
    valid.then_some(origin)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn valid_authority(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, tail)) => match tail.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    !host.is_empty() && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests;
