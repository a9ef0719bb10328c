//! `/pub` and `/mpub` bodies for a signed topic, sealed: each message in its envelope, an MPUB
//! (text or binary) re-encoded in the binary form, since an envelope may hold a `\n`. Sizes are
//! judged after sealing against nsqd's limits, with nsqd's own status and codes. No I/O here.

use bytes::{BufMut, Bytes, BytesMut};

use crate::http::publish::{BodyRefusal, Kind};
use crate::integrity::TopicSeal;
use crate::nsq::Limits;

/// A sealed body and the endpoint kind it is now in.
#[derive(Debug)]
pub struct Sealed {
    pub body: Bytes,
    /// `/mpub` bodies leave as `binary=true`.
    pub kind: Kind,
}

/// `body` (already through [`Kind::check`]) with every message sealed for `seal`'s topic.
pub fn seal_body(
    kind: Kind,
    body: &[u8],
    seal: &TopicSeal,
    limits: &Limits,
) -> Result<Sealed, BodyRefusal> {
    let max_msg = limits.max_msg_size as usize;
    let too_big = |kind: Kind| Err(kind.too_big());
    let messages: Vec<&[u8]> = match kind {
        Kind::Pub => {
            let sealed = seal.seal(body);
            if sealed.len() > max_msg {
                return too_big(Kind::Pub);
            }
            return Ok(Sealed { body: sealed, kind });
        }
        // nsqd skips empty lines; a body of none has nothing to sign and goes as it came.
        Kind::MpubText => body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect(),
        Kind::MpubBinary => binary_messages(body),
    };
    if messages.is_empty() {
        return Ok(Sealed {
            body: Bytes::copy_from_slice(body),
            kind,
        });
    }
    let mut out = BytesMut::new();
    out.put_u32(u32::try_from(messages.len()).unwrap_or(u32::MAX));
    for message in messages {
        let sealed = seal.seal(message);
        if sealed.len() > max_msg {
            return too_big(Kind::Pub);
        }
        out.put_u32(u32::try_from(sealed.len()).unwrap_or(u32::MAX));
        out.put_slice(&sealed);
    }
    if out.len() > limits.max_body_size as usize {
        return too_big(Kind::MpubBinary);
    }
    Ok(Sealed {
        body: out.freeze(),
        kind: Kind::MpubBinary,
    })
}

/// The messages of a binary MPUB body that passed nsqd's checks (count, then size + body).
fn binary_messages(body: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    let Some((count, mut rest)) = body.split_first_chunk::<4>() else {
        return messages;
    };
    for _ in 0..u32::from_be_bytes(*count) {
        let Some((size, after)) = rest.split_first_chunk::<4>() else {
            break;
        };
        let size = u32::from_be_bytes(*size) as usize;
        let Some(message) = after.get(..size) else {
            break;
        };
        messages.push(message);
        rest = &after[size..];
    }
    messages
}

#[cfg(test)]
mod tests;
