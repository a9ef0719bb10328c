//! The short fill-decode loops both roles run over a byte stream: read until [`super::wire`]
//! has a whole magic, command or response, each read under a deadline, the buffer never past
//! the wire's bounds. No protocol decisions here.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::wire::{self, Command, WireError, WireLimits};

/// Why a relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no {0} within the deadline")]
    Timeout(&'static str),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("the peer closed the connection in the middle of a {0}")]
    Truncated(&'static str),
}

/// One side of a relay: its stream and the bytes read from it not yet decoded.
pub struct Framed<S> {
    stream: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    pub fn new(stream: S) -> Framed<S> {
        Framed {
            stream,
            buf: BytesMut::with_capacity(512),
        }
    }

    /// The V1 magic; an error for anything else.
    pub async fn read_magic(&mut self, within: Duration) -> Result<(), RelayError> {
        self.fill_until(within, "protocol magic", |buf| {
            Ok(wire::decode_magic(buf)?.then_some(((), wire::MAGIC_V1.len())))
        })
        .await?
        .ok_or(RelayError::Truncated("protocol magic"))
    }

    /// The next command; None when the peer closed between commands.
    pub async fn read_command(
        &mut self,
        limits: &WireLimits,
        within: Duration,
    ) -> Result<Option<Command>, RelayError> {
        self.fill_until(within, "command", |buf| wire::decode_command(buf, limits))
            .await
    }

    /// The next response, at most `limit` bytes of data.
    pub async fn read_response(
        &mut self,
        limit: u32,
        within: Duration,
    ) -> Result<Bytes, RelayError> {
        self.fill_until(within, "response", |buf| wire::decode_response(buf, limit))
            .await?
            .ok_or(RelayError::Truncated("response"))
    }

    pub async fn write(&mut self, bytes: &[u8], within: Duration) -> Result<(), RelayError> {
        timeout(within, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| RelayError::Timeout("write"))??;
        Ok(())
    }

    /// Writes one response and then closes the stream: the last word of a refusal.
    pub async fn answer_and_close(&mut self, data: &[u8], within: Duration) {
        let mut out = BytesMut::new();
        wire::encode_response(data, &mut out);
        // The connection is ending either way; a peer that stopped reading loses the text.
        let _ = self.write(&out, within).await;
        let _ = timeout(within, self.stream.shutdown()).await;
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Decodes from the buffer, reading more while `decode` needs it. Ok(None): the peer
    /// closed with nothing buffered. The decoders bound every length, so the buffer stays
    /// within a line or a bounded body.
    async fn fill_until<T>(
        &mut self,
        within: Duration,
        what: &'static str,
        decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, WireError>,
    ) -> Result<Option<T>, RelayError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some((value, used)) = decode(&self.buf)? {
                let _ = self.buf.split_to(used);
                return Ok(Some(value));
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| RelayError::Timeout(what))??;
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(RelayError::Truncated(what))
                };
            }
        }
    }
}
