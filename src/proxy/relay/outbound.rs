//! nsqd → client: relay frames as they come, pair each reply with the oldest command owed one,
//! and emit nsqgate's own replies in their turn (closing after a refusal).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::debug;

use prometheus::local::LocalHistogram;

use crate::metrics::Metrics;
use crate::nsq::{self, FrameType};

use super::reading::Reader;
use super::replies::Answered;
use super::signed::Delivery;
use super::{write_within, NsqdError, RelayEnd, RelayError, Replies, Signed, Slot, WriteFailed};

/// The nsqd → client direction of one connection.
pub(super) struct Outbound<'a, W> {
    client: W,
    /// Replies owed to the client, oldest first, queued by the other direction.
    replies: &'a Replies,
    /// Frames for the client, written once per read from nsqd.
    out: BytesMut,
    write_timeout: Duration,
    /// The connection's span, the parent of what this direction logs.
    span: &'a tracing::Span,
    /// The last fatal error nsqd sent the client: why nsqd closes, if it does.
    last_error: Option<NsqdError>,
    metrics: Arc<Metrics>,
    /// Publish round trips measured since the last flush (made at the first one).
    round_trips: Option<LocalHistogram>,
    /// Opens deliveries on a signed topic (or withholds them) before the client sees them.
    signed: Option<Arc<Signed>>,
}

// === impl Outbound ===

impl<'a, W: AsyncWrite + Unpin> Outbound<'a, W> {
    pub(super) fn new(
        client: W,
        replies: &'a Replies,
        write_timeout: Duration,
        metrics: Arc<Metrics>,
        span: &'a tracing::Span,
    ) -> Self {
        Outbound {
            client,
            replies,
            out: BytesMut::new(),
            write_timeout,
            span,
            last_error: None,
            metrics,
            round_trips: None,
            signed: None,
        }
    }

    /// Deliveries and nsqd's unasked errors pass through `signed` first.
    pub(super) fn with(mut self, signed: Option<Arc<Signed>>) -> Self {
        self.signed = signed;
        self
    }

    /// Not an `async fn`: its arguments would be kept twice in the future's state, which every
    /// idle connection holds.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run<R: AsyncRead + Unpin>(
        mut self,
        mut upstream: R,
        mut buf: BytesMut,
        max_frame_size: u32,
    ) -> impl Future<Output = Result<RelayEnd, RelayError>> + use<'a, W, R> {
        async move {
            let mut reader = Reader::default();
            // Registered once and again only after it fired, not per reply (docs/perf-profile.md,
            // "A pinned 1-deep producer").
            let replies = self.replies;
            let mut local_queued = std::pin::pin!(replies.local_queued());
            loop {
                if let Some(end) = self.relay_buffered(&mut buf, max_frame_size).await? {
                    return Ok(end);
                }
                self.replies.release_if_empty();
                tokio::select! {
                    biased;
                    () = local_queued.as_mut() => {
                        local_queued.set(replies.local_queued());
                        if let Some(end) = self.emit_due_local().await? {
                            return Ok(end);
                        }
                    }
                    read = reader.read(&mut upstream, &mut buf) => {
                        let n = read.or_else(nsqd_closed_tls).map_err(RelayError::Nsqd)?;
                        if n == 0 {
                            debug!(parent: self.span, "nsqd closed the connection");
                            let _ = self.client.shutdown().await;
                            let last_error = self.last_error.take();
                            return Ok(RelayEnd::NsqdClosed { last_error });
                        }
                    }
                }
            }
        }
    }

    /// Relays the frames already buffered, pairing each reply with what it answers, and writes
    /// them in one go. Some when a refusal in its turn ended the connection.
    async fn relay_buffered(
        &mut self,
        buf: &mut BytesMut,
        max_frame_size: u32,
    ) -> Result<Option<RelayEnd>, RelayError> {
        let mut messages = 0;
        // One clock reading per read for the publishes it answers, taken at the first.
        let mut now = None;
        loop {
            let frame = match nsq::decode_frame(buf, max_frame_size) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(RelayError::NsqdFrame(e)),
            };
            if !is_reply(&frame) {
                let relayed = match &self.signed {
                    Some(signed) => signed.incoming(&frame),
                    None => Delivery::Relay(frame.raw.clone()),
                };
                if let Delivery::Relay(bytes) = relayed {
                    messages += u64::from(frame.frame_type == FrameType::Message);
                    self.out.extend_from_slice(&bytes);
                }
                continue;
            }
            if let Some(end) = self.pair_reply(&mut now).await? {
                return Ok(Some(end));
            }
            if frame.frame_type == FrameType::Error {
                let code = frame.error_code();
                let text = frame.data.clone();
                self.last_error = Some(NsqdError { code, text });
            }
            self.out.extend_from_slice(&frame.raw);
        }
        // The last reply nsqd owed may have been just handled: a local reply queued behind it
        // is due now.
        if let Some(end) = self.emit_due_local().await? {
            return Ok(Some(end));
        }
        // Counted once per read, not per frame: a few atomic adds however many frames came.
        self.metrics.messages_delivered.inc_by(messages);
        if let Some(round_trips) = &self.round_trips {
            round_trips.flush();
        }
        if !self.out.is_empty() {
            let chunk = self.out.split();
            self.write(&chunk).await?;
        }
        Ok(None)
    }

    /// Takes the slot of the command a reply from nsqd answers; local replies due before it
    /// go first. A publish's round trip is measured to `now`, read at the first one.
    async fn pair_reply(
        &mut self,
        now: &mut Option<Instant>,
    ) -> Result<Option<RelayEnd>, RelayError> {
        // The slot for this reply was queued before the command was written.
        if let Some(end) = self.emit_due_local().await? {
            return Ok(Some(end));
        }
        match self.replies.answer() {
            Some(Answered::Publish { sent }) => {
                let now = *now.get_or_insert_with(Instant::now);
                let took = now.saturating_duration_since(sent).as_secs_f64();
                let metrics = &self.metrics;
                let round_trips =
                    (self.round_trips).get_or_insert_with(|| metrics.publish_round_trips());
                round_trips.observe(took);
            }
            Some(Answered::Other) => {}
            None => return Err(RelayError::UnaskedReply),
        }
        Ok(None)
    }

    /// Writes the local replies at the head of the queue; a refusal is the last thing the
    /// client hears (nothing at all where nsqd would say nothing), then its side is closed.
    async fn emit_due_local(&mut self) -> Result<Option<RelayEnd>, RelayError> {
        loop {
            match self.replies.pop_local() {
                Some(Slot::Reply(frame)) => self.out.extend_from_slice(&frame),
                Some(Slot::Refusal(refusal)) => {
                    if let Some(frame) = refusal.frame() {
                        self.out.extend_from_slice(frame);
                    }
                    let chunk = self.out.split();
                    self.write(&chunk).await?;
                    let _ = self.client.shutdown().await;
                    return Ok(Some(RelayEnd::Refused(*refusal)));
                }
                // pop_local takes nothing else: none of its own is due.
                _ => break,
            }
        }
        Ok(None)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        self.metrics.bytes_to_client.inc_by(bytes.len() as u64);
        write_within(&mut self.client, bytes, self.write_timeout)
            .await
            .map_err(|failed| match failed {
                WriteFailed::Io(e) => RelayError::Client(e),
                WriteFailed::Stalled(limit) => RelayError::ClientStalled(limit),
            })
    }
}

/// Heartbeats, messages and the non-fatal FIN/REQ/TOUCH errors arrive unasked; every other
/// response or error answers the oldest command still owed a reply.
fn is_reply(frame: &nsq::Frame) -> bool {
    match frame.frame_type {
        FrameType::Message => false,
        FrameType::Response => !frame.is_heartbeat(),
        FrameType::Error => frame.error_code().is_none_or(|code| code.is_fatal()),
    }
}

/// nsqd ends a TLS connection by closing its TCP connection, without TLS's close_notify
/// (it closes the socket under its TLS stream): the end of stream rustls then reports is how
/// nsqd always closes, not a failure. Nothing is lost to a cut: NSQ frames carry their
/// length, so a frame cut short is never relayed, as on a plain connection.
fn nsqd_closed_tls(e: std::io::Error) -> std::io::Result<usize> {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Ok(0),
        _ => Err(e),
    }
}
