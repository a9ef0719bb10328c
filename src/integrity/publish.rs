//! Publishes to a signed topic, resealed: every body of a PUB, DPUB or MPUB in its envelope,
//! the command re-encoded. Sizes are judged after sealing against nsqd's limits, so nsqd never
//! refuses what nsqgate forwards; an MPUB with one message too big is refused whole. No I/O.

use bytes::BytesMut;

use crate::nsq::{Command, DecodedCommand, Limits, ProtocolError};

use super::TopicSeal;

/// `decoded` with its bodies sealed, or nsqd's own refusal when a sealed body would not fit.
/// A refused body is reported with its size as sent and the most the client may send
/// (nsqd's limit less the envelope), so the number means something to the client.
pub fn seal_publish(
    decoded: &DecodedCommand,
    seal: &TopicSeal,
    limits: &Limits,
) -> Result<DecodedCommand, ProtocolError> {
    let overhead = seal.overhead();
    let fits = |command: &'static str, body: &[u8]| {
        let max = (limits.max_msg_size as usize).saturating_sub(overhead);
        if body.len() <= max {
            return Ok(());
        }
        Err(ProtocolError::MessageTooBig {
            command,
            size: i32::try_from(body.len()).unwrap_or(i32::MAX),
            max: u32::try_from(max).unwrap_or(u32::MAX),
        })
    };
    let command = match &decoded.command {
        Command::Pub { topic, body } => {
            fits("PUB", body)?;
            Command::Pub {
                topic: topic.clone(),
                body: seal.seal(body),
            }
        }
        Command::Dpub {
            topic,
            defer_ms,
            body,
        } => {
            fits("DPUB", body)?;
            Command::Dpub {
                topic: topic.clone(),
                defer_ms: *defer_ms,
                body: seal.seal(body),
            }
        }
        Command::Mpub { topic, messages } => {
            for message in messages {
                fits("MPUB", &message)?;
            }
            let sealed_len = 4 + messages
                .iter()
                .map(|m| 4 + m.len() + overhead)
                .sum::<usize>();
            if sealed_len > limits.max_body_size as usize {
                return Err(ProtocolError::BodyTooBig {
                    command: "MPUB",
                    size: i32::try_from(sealed_len).unwrap_or(i32::MAX),
                    max: limits.max_body_size,
                });
            }
            Command::Mpub {
                topic: topic.clone(),
                messages: messages.iter().map(|m| seal.seal(&m)).collect(),
            }
        }
        _ => return Ok(decoded.clone()),
    };
    let mut raw = BytesMut::new();
    command.encode(&mut raw);
    Ok(DecodedCommand {
        command,
        raw: raw.freeze(),
    })
}
