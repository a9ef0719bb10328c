//! The client leg: its stream before and after TLS, and the session's reads and writes on it
//! (commands charged to the unauthenticated budget, frames written, the last frame told).

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::auth::Principal;
use crate::compress::Compression;
use crate::error::{FatalReply, Kind};
use crate::limit::memory::OverBudget;
use crate::net::compressed::Compressed;
use crate::net::stream::{Io, Replay};
use crate::nsq::{self, DecodedCommand, ErrorCode};
use crate::proxy::relay;
use crate::proxy::Listener;
use crate::shared::Shared;

use super::failure::SessionError;
use super::timing::ClientTls;
use super::Session;

/// The most a read into an empty buffer takes at once (on the stack, see
/// [`Session::read_more`]): the magic and IDENTIFY, an AUTH with its JWT, or a TLS-first
/// client's whole ClientHello (post-quantum key shares included) in one read, where the
/// buffer used to grow in 64-byte steps (a 136-byte opening took a peek and two reads).
const LANDING: usize = 2048;

/// The least room a read offers while a command is part-read: the rest of most commands in
/// one read.
const PARTIAL_READ: usize = 512;

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
    /// The next command, read as the client sends it (see [`Session::read_more`]).
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
            self.read_more("IDENTIFY").await?;
        }
    }

    /// Reads until `want` bytes are buffered.
    pub(super) async fn fill(
        &mut self,
        want: usize,
        during: &'static str,
    ) -> Result<(), SessionError> {
        while self.buf.len() < want {
            self.read_more(during).await?;
        }
        Ok(())
    }

    /// One read of what the client sent next, appended to the buffer. With nothing buffered
    /// (a client that has just connected, or one between commands) the read lands on the
    /// worker's stack and only the bytes that came are kept, so a client that sends nothing
    /// holds no buffer; with a command part-read, the read goes into the buffer's spare room.
    ///
    /// While the client has no identity (`charge`), what the buffer is to hold is charged to
    /// the shared budget before it holds it. Whatever a read takes beyond the current command
    /// (an AUTH behind IDENTIFY, a ClientHello sent before IDENTIFY's reply) is inside that
    /// charge, and bounded by the read's size.
    async fn read_more(&mut self, during: &'static str) -> Result<(), SessionError> {
        let came = match self.buf.is_empty() {
            true => self.read_landing().await?,
            false => self.read_into_buffer().await?,
        };
        match came {
            0 => Err(SessionError::Closed(during)),
            _ => Ok(()),
        }
    }

    /// Nothing buffered: up to [`LANDING`] bytes, read on the stack, kept in a buffer of their
    /// own size. Cancel-safe (the session's wait for AUTH selects on it): the bytes reach the
    /// buffer in the poll that read them.
    async fn read_landing(&mut self) -> Result<usize, SessionError> {
        let Session {
            client,
            buf,
            charge,
            listener,
            ..
        } = self;
        let codec_memory = client.codec_memory();
        // Given back before the wait (an empty view may still hold the block it was split
        // from), so a quiet client holds, and is charged for, its codec only.
        *buf = BytesMut::new();
        if let Some(charge) = charge {
            charge
                .hold(codec_memory)
                .map_err(|over| over_budget(listener, over))?;
        }
        poll_fn(|cx| {
            // A local of this poll, not of the future: it costs a waiting client nothing.
            let mut landing = [MaybeUninit::<u8>::uninit(); LANDING];
            let mut read = ReadBuf::uninit(&mut landing);
            ready!(Pin::new(client.io()).poll_read(cx, &mut read))?;
            let came = read.filled();
            if let Some(charge) = charge {
                let wanted = came.len() + codec_memory;
                charge
                    .hold(wanted)
                    .map_err(|over| over_budget(listener, over))?;
            }
            *buf = BytesMut::from(came);
            Poll::Ready(Ok(came.len()))
        })
        .await
    }

    /// A command part-read: into the buffer, with [`PARTIAL_READ`] bytes of room at least
    /// (more where the codec reserved a declared body). With room to spare, `read_buf`
    /// reserves nothing itself: the capacity charged is the capacity read into.
    async fn read_into_buffer(&mut self) -> Result<usize, SessionError> {
        self.buf.reserve(PARTIAL_READ);
        if let Some(charge) = &mut self.charge {
            let wanted = self.buf.capacity() + self.client.codec_memory();
            charge
                .hold(wanted)
                .map_err(|over| over_budget(&self.listener, over))?;
        }
        Ok(self.client.io().read_buf(&mut self.buf).await?)
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

/// The refusal of a client whose next read the unauthenticated budget cannot cover.
fn over_budget(listener: &Listener, over: OverBudget) -> SessionError {
    listener
        .shared
        .metrics
        .size_limited("unauthenticated_memory");
    let text = format!("{over} (try again later)");
    SessionError::Refused(FatalReply::new(Kind::Limit, ErrorCode::BadBody, &text))
}
