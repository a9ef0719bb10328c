//! The size and shape rules nsqd applies to `/pub` and `/mpub` bodies, applied before a byte is
//! forwarded, with nsqd's own status codes. No I/O here.

use ::http::StatusCode;

use crate::nsq::Limits;

/// Which publish endpoint a body is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/pub`: the body is one message.
    Pub,
    /// `/mpub`: one message per line.
    MpubText,
    /// `/mpub?binary=true`: `[count:u32][size:u32][body]...` as in the MPUB command.
    MpubBinary,
}

/// A publish body refused, as nsqd words it: status and code, not yet a response.
#[derive(Debug, PartialEq, Eq)]
pub struct BodyRefusal {
    pub status: StatusCode,
    pub code: &'static str,
}

const fn too_big(code: &'static str) -> BodyRefusal {
    BodyRefusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code,
    }
}

// === impl Kind ===

impl Kind {
    /// nsqd reads `binary` as a boolean; an unrecognised value counts as true.
    pub fn mpub(binary: Option<&str>) -> Kind {
        match binary {
            None | Some("false" | "0") => Kind::MpubText,
            Some(_) => Kind::MpubBinary,
        }
    }

    /// The most body bytes this endpoint accepts.
    pub fn limit(self, limits: &Limits) -> usize {
        let limit = match self {
            Kind::Pub => limits.max_msg_size,
            Kind::MpubText | Kind::MpubBinary => limits.max_body_size,
        };
        usize::try_from(limit).unwrap_or(usize::MAX)
    }

    /// The refusal for a body over [`Kind::limit`] (by its declared length or while reading).
    pub fn too_big(self) -> BodyRefusal {
        match self {
            Kind::Pub => too_big("MSG_TOO_BIG"),
            Kind::MpubText | Kind::MpubBinary => too_big("BODY_TOO_BIG"),
        }
    }

    /// Checks a complete body that is within [`Kind::limit`].
    pub fn check(self, body: &[u8], limits: &Limits) -> Result<(), BodyRefusal> {
        let max_msg = usize::try_from(limits.max_msg_size).unwrap_or(usize::MAX);
        match self {
            Kind::Pub if body.is_empty() => Err(BodyRefusal {
                status: StatusCode::BAD_REQUEST,
                code: "MSG_EMPTY",
            }),
            Kind::Pub => Ok(()),
            Kind::MpubText => {
                if body.split(|&b| b == b'\n').any(|line| line.len() > max_msg) {
                    Err(too_big("MSG_TOO_BIG"))
                } else {
                    Ok(())
                }
            }
            Kind::MpubBinary => check_binary(body, max_msg, limits.max_body_size),
        }
    }
}

impl Kind {
    /// Messages and payload bytes in a body that passed [`Kind::check`], for the rate limits.
    pub fn measure(self, body: &[u8]) -> (u32, u64) {
        match self {
            Kind::Pub => (1, body.len() as u64),
            Kind::MpubText => body
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .fold((0, 0), |(n, bytes), line| {
                    (n + 1, bytes + line.len() as u64)
                }),
            Kind::MpubBinary => {
                let count = read_len(body).map_or(0, |(count, _)| count.max(0) as u32);
                let framing = 4 + 4 * u64::from(count);
                (count, (body.len() as u64).saturating_sub(framing))
            }
        }
    }
}

/// nsqd's `readMPUB`: a positive count no larger than fits the body limit, then that many
/// positive sizes no larger than the message limit, each followed by its body. A failure is
/// 413 with nsqd's code minus `E_`.
fn check_binary(body: &[u8], max_msg: usize, max_body: u32) -> Result<(), BodyRefusal> {
    let (count, mut rest) = read_len(body).ok_or(too_big("BAD_BODY"))?;
    let max_messages = (i64::from(max_body) - 4) / 5;
    if count <= 0 || i64::from(count) > max_messages {
        return Err(too_big("BAD_BODY"));
    }
    for _ in 0..count {
        let (size, after) = read_len(rest).ok_or(too_big("BAD_MESSAGE"))?;
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0 && s <= max_msg)
            .ok_or(too_big("BAD_MESSAGE"))?;
        rest = after.get(size..).ok_or(too_big("BAD_MESSAGE"))?;
    }
    Ok(())
}

fn read_len(buf: &[u8]) -> Option<(i32, &[u8])> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*len), rest))
}
