//! Reading a request or response body into memory with a cap enforced while it streams:
//! the first byte over the limit ends the read, so an oversized body is never held whole,
//! and never forwarded.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {0} bytes")]
    TooBig(usize),
    #[error("body not complete in time")]
    Timeout,
    #[error("reading the body failed: {0}")]
    Read(String),
}

/// Collects `body`, failing as soon as it holds more than `limit` bytes or `deadline` passes.
/// The body is borrowed, so a caller that refuses it can still [`drain`] the rest.
pub async fn read_limited<B>(
    body: &mut B,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    tokio::time::timeout(deadline, collect(body, limit))
        .await
        .map_err(|_| BodyError::Timeout)?
}

async fn collect<B>(body: &mut B, limit: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > limit {
                return Err(BodyError::TooBig(limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and discards up to `max` more bytes of a refused body (bounded by `deadline`), so the
/// client, still sending, can read the refusal instead of a connection reset.
pub async fn drain<B>(body: &mut B, max: usize, deadline: Duration)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > max {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(deadline, discard).await;
}
