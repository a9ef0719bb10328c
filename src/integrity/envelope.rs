//! The signed envelope around a message body, sans-io: seal a body for a topic, open one back.
//!
//! Layout (version 1), in front of the original body, nothing after it:
//!
//! ```text
//! offset  size  field
//! 0       3     magic "NGS"
//! 3       1     version, 0x01
//! 4       1     key id length n (1..=32)
//! 5       n     key id, ASCII [A-Za-z0-9._-]
//! 5+n     32    HMAC-SHA256 tag
//! 37+n    ...   the body, unchanged
//! ```
//!
//! The tag covers `version, n, key id, topic length (1 byte), topic, body`: a tag made for one
//! topic fails on every other, and the version and key id cannot be swapped under it.

use bytes::{BufMut, Bytes, BytesMut};
use hmac::Mac;

use super::keyring::Key;

/// The first bytes of every envelope.
pub const MAGIC: &[u8; 3] = b"NGS";
/// The envelope layout this code writes and reads.
pub const VERSION: u8 = 1;
/// Length of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Bytes in front of the body besides the key id: magic, version, key id length, tag.
const FIXED_LEN: usize = MAGIC.len() + 1 + 1 + TAG_LEN;

/// Why a body on a signed topic did not open: the quarantine reason, a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No magic at the start: written by something other than nsqgate.
    #[error("no envelope")]
    NoEnvelope,
    /// The magic is there but the rest cannot be read (unknown version, cut short).
    #[error("malformed envelope")]
    Malformed,
    /// A key id this topic does not accept (retired, or never configured).
    #[error("unknown key id")]
    UnknownKey,
    /// The tag does not match: the body, topic or key id changed after signing.
    #[error("bad signature")]
    BadSignature,
}

// === impl Rejection ===

impl Rejection {
    /// The metric label and audit reason.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::NoEnvelope => "no_envelope",
            Rejection::Malformed => "malformed",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
        }
    }
}

/// How many bytes sealing with `key` adds to a body.
pub fn overhead(key: &Key) -> usize {
    FIXED_LEN + key.id().as_str().len()
}

/// The body in its envelope, signed with `key` for `topic`.
pub fn seal(key: &Key, topic: &str, body: &[u8]) -> Bytes {
    let id = key.id().as_str().as_bytes();
    let tag = tag(key, topic, body).finalize().into_bytes();
    let mut out = BytesMut::with_capacity(overhead(key) + body.len());
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
    // A key id is at most 32 bytes (KeyId checks), so the length fits.
    out.put_u8(id.len() as u8);
    out.put_slice(id);
    out.put_slice(&tag);
    out.put_slice(body);
    out.freeze()
}

/// The body inside `sealed`, if its tag verifies for `topic` under one of the `accepted` keys
/// (the one its key id names). The tag is compared in constant time.
pub fn open(accepted: &[Key], topic: &str, sealed: &Bytes) -> Result<Bytes, Rejection> {
    let Some(rest) = sealed.strip_prefix(MAGIC.as_slice()) else {
        return Err(Rejection::NoEnvelope);
    };
    let (&version, rest) = rest.split_first().ok_or(Rejection::Malformed)?;
    let (&id_len, rest) = rest.split_first().ok_or(Rejection::Malformed)?;
    if version != VERSION || id_len == 0 {
        return Err(Rejection::Malformed);
    }
    let id = rest
        .get(..usize::from(id_len))
        .ok_or(Rejection::Malformed)?;
    let rest = &rest[id.len()..];
    let given = rest.get(..TAG_LEN).ok_or(Rejection::Malformed)?;
    let body_at = FIXED_LEN + id.len();
    let key = accepted
        .iter()
        .find(|key| key.id().as_str().as_bytes() == id)
        .ok_or(Rejection::UnknownKey)?;
    let body = sealed.slice(body_at..);
    tag(key, topic, &body)
        .verify_slice(given)
        .map_err(|_| Rejection::BadSignature)?;
    Ok(body)
}

/// The HMAC over everything the tag covers, ready to finalize or verify.
fn tag(key: &Key, topic: &str, body: &[u8]) -> super::keyring::HmacSha256 {
    let id = key.id().as_str().as_bytes();
    // The key schedule was run once, when the key was loaded.
    let mut mac = key.mac().clone();
    // Topic names are at most 64 bytes (nsqd's rule, checked before a publish gets here).
    let topic_len = u8::try_from(topic.len()).unwrap_or(u8::MAX);
    mac.update(&[VERSION, id.len() as u8]);
    mac.update(id);
    mac.update(&[topic_len]);
    mac.update(topic.as_bytes());
    mac.update(body);
    mac
}
