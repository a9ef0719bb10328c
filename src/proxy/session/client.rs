//! The client leg: its stream before and after TLS, and the session's reads and writes on it
//! (commands charged to the unauthenticated budget, frames written, the last frame told).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::Principal;
use crate::compress::Compression;
use crate::error::{FatalReply, Kind};
use crate::net::compressed::Compressed;
use crate::net::stream::{Io, Replay};
use crate::nsq::{self, DecodedCommand, ErrorCode};
use crate::proxy::relay;
use crate::shared::Shared;

use super::failure::SessionError;
use super::timing::ClientTls;
use super::Session;

/// The client leg before and after TLS, and after compression (inside TLS, if any).
pub(super) enum ClientStream {
    Plain(TcpStream),
    Secure(Box<dyn Io>),
    Compressed {
        io: Box<dyn Io>,
        tls: bool,
        compression: Compression,
    },
}

// === impl ClientStream ===

impl ClientStream {
    pub(super) fn io(&mut self) -> &mut (dyn Io + '_) {
        match self {
            ClientStream::Plain(tcp) => tcp,
            ClientStream::Secure(io) | ClientStream::Compressed { io, .. } => io.as_mut(),
        }
    }

    pub(super) fn is_tls(&self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            ClientStream::Secure(_) => true,
            ClientStream::Compressed { tls, .. } => *tls,
        }
    }

    pub(super) fn tls(&self) -> ClientTls {
        match self.is_tls() {
            false => ClientTls::Plain,
            true => ClientTls::Secure,
        }
    }

    pub(super) fn into_io(self) -> Box<dyn Io> {
        match self {
            ClientStream::Plain(tcp) => Box::new(tcp),
            ClientStream::Secure(io) | ClientStream::Compressed { io, .. } => io,
        }
    }

    /// The leg with `compression` on both directions; `already_read` is compressed input the
    /// command reader had buffered (nsqd would lose it; nsqgate decodes it).
    pub(super) fn compressed(self, compression: Compression, already_read: Bytes) -> ClientStream {
        let tls = self.is_tls();
        let io = Box::new(Compressed::new(self.into_io(), compression, already_read));
        ClientStream::Compressed {
            io,
            tls,
            compression,
        }
    }

    /// Memory the leg holds beyond the command buffer, charged while it has no identity.
    pub(super) fn codec_memory(&self) -> usize {
        match self {
            ClientStream::Compressed { compression, .. } => compression.memory_bound(),
            _ => 0,
        }
    }

    /// Sends `refusal`'s frame (none where nsqd says nothing), then closes without destroying
    /// it: what the client still sends is read and dropped for a moment first.
    pub(super) async fn tell(&mut self, refusal: &FatalReply) {
        let io = self.io();
        if let Some(frame) = refusal.frame() {
            let _ = io.write_all(frame).await;
            let _ = io.flush().await;
        }
        let _ = io.shutdown().await;
        relay::drain_before_close(io).await;
    }
}

/// Runs the server handshake on `raw` (bytes already read first); a verified client
/// certificate yields the client's identity.
pub(super) async fn accept_tls(
    shared: &Shared,
    raw: Replay<TcpStream>,
) -> Result<(ClientStream, Option<Principal>), SessionError> {
    let accept = crate::net::tls_stream::accept(shared.tls.server_config(), raw);
    let handshake = tokio::time::timeout(shared.config().timeouts.tls_handshake, accept).await;
    let failure = crate::metrics::handshake_failure(&handshake);
    shared
        .metrics
        .tls_handshake(crate::metrics::Leg::Client, failure);
    let tls = handshake
        .map_err(|_| SessionError::Timeout("the TLS handshake"))?
        .map_err(SessionError::Tls)?;
    // rustls has already verified the chain against the client CA (and CRLs) by now.
    let principal = crate::auth::identity::from_certificate(
        tls.state().peer_certificates(),
        &shared.config().client.cert_identity_order,
    );
    Ok((ClientStream::Secure(Box::new(tls)), principal))
}

// === impl Session (the client leg) ===

impl Session {
    /// The next command; while the client has no identity (`charge`), the buffer's capacity
    /// (the codec reserves a declared body before reading it) is charged to the shared budget
    /// first.
    pub(super) async fn read_command(&mut self) -> Result<DecodedCommand, SessionError> {
        let limits = self.config().limits;
        loop {
            match nsq::decode_command(&mut self.buf, &limits) {
                Ok(Some(decoded)) => return Ok(decoded),
                Ok(None) => {}
                Err(e) => {
                    if let Some(limit) = e.size_limit() {
                        self.listener.shared.metrics.size_limited(limit);
                    }
                    return Err(SessionError::Refused(FatalReply::malformed(&e)));
                }
            }
            if let Some(charge) = &mut self.charge {
                // tokio's read_buf reserves a little when the buffer is full.
                let wanted =
                    self.buf.capacity().max(self.buf.len() + 64) + self.client.codec_memory();
                let metrics = &self.listener.shared.metrics;
                charge.hold(wanted).map_err(|over| {
                    metrics.size_limited("unauthenticated_memory");
                    let text = format!("{over} (try again later)");
                    let refusal = FatalReply::new(Kind::Limit, ErrorCode::BadBody, &text);
                    SessionError::Refused(refusal)
                })?;
            }
            if self.client.io().read_buf(&mut self.buf).await? == 0 {
                return Err(SessionError::Closed("IDENTIFY"));
            }
        }
    }

    /// Reads until `want` bytes are buffered.
    pub(super) async fn fill(
        &mut self,
        want: usize,
        during: &'static str,
    ) -> Result<(), SessionError> {
        while self.buf.len() < want {
            if self.client.io().read_buf(&mut self.buf).await? == 0 {
                return Err(SessionError::Closed(during));
            }
        }
        Ok(())
    }

    /// Puts a command back in front of what is buffered, for the next phase to handle.
    pub(super) fn unread(&mut self, decoded: &DecodedCommand) {
        let mut replayed = BytesMut::from(&decoded.raw[..]);
        replayed.extend_from_slice(&self.buf);
        self.buf = replayed;
    }

    /// Writes and flushes a frame (within the opening's own deadline).
    pub(super) async fn send(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        let io = self.client.io();
        io.write_all(frame).await?;
        io.flush().await?;
        Ok(())
    }

    /// Writes and flushes a frame within the write timeout.
    pub(super) async fn send_within_timeout(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        let limit = self.config().timeouts.write;
        tokio::time::timeout(limit, self.send(frame))
            .await
            .map_err(|_| SessionError::Timeout("a write to the client"))?
    }
}
