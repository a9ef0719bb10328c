//! nsqd → client: relay frames as they come, pair each reply with the oldest command owed one,
//! and emit nsqgate's own replies in their turn (closing after a refusal).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
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
    ///
    /// Frames are read where they lie (`peek_frame`): no reference-counted slice per frame.
    /// What is relayed as it came is written straight from `buf` unless one of nsqgate's own
    /// replies or an opened signed delivery is to go between frames; then `out` takes the
    /// frames before it (`buf[copied..at]`), it, and the rest.
    async fn relay_buffered(
        &mut self,
        buf: &mut BytesMut,
        max_frame_size: u32,
    ) -> Result<Option<RelayEnd>, RelayError> {
        let mut messages = 0;
        // One clock reading per read for the publishes it answers, taken at the first.
        let mut timing = Timing::default();
        // Frames up to `at` are handled; those up to `copied` are in `out` already.
        let (mut at, mut copied) = (0, 0);
        loop {
            let frame = match nsq::peek_frame(&buf[at..], max_frame_size) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(RelayError::NsqdFrame(e)),
            };
            let (frame_type, len) = (frame.frame_type, frame.len);
            if !is_reply(&frame) {
                let Some(signed) = &self.signed else {
                    messages += u64::from(frame_type == FrameType::Message);
                    at += len;
                    continue;
                };
                // Opened, or withheld, before the client sees it: what came before goes first.
                self.out.extend_from_slice(&buf[copied..at]);
                buf.advance(at);
                (at, copied) = (0, 0);
                let frame = nsq::take_frame(buf, frame_type, len);
                if let Delivery::Relay(bytes) = signed.incoming(&frame) {
                    messages += u64::from(frame_type == FrameType::Message);
                    self.out.extend_from_slice(&bytes);
                }
                continue;
            }
            let error = (frame_type == FrameType::Error).then(|| NsqdError {
                code: frame.error_code(),
                text: Bytes::copy_from_slice(frame.data),
            });
            if let Some(end) = self.pair_reply(&mut timing, buf, &mut copied, at).await? {
                return Ok(Some(end));
            }
            if error.is_some() {
                self.last_error = error;
            }
            at += len;
        }
        // The last reply nsqd owed may have been just handled: a local reply queued behind it
        // is due now.
        if let Some(end) = self.emit_due_local_after(buf, &mut copied, at).await? {
            return Ok(Some(end));
        }
        // Counted once per read, not per frame: a few atomic adds however many frames came.
        self.metrics.messages_delivered.inc_by(messages);
        if let Some(round_trips) = &self.round_trips {
            round_trips.flush();
        }
        if self.out.is_empty() {
            if copied < at {
                self.write(&buf[copied..at]).await?;
            }
        } else {
            self.out.extend_from_slice(&buf[copied..at]);
            let chunk = self.out.split();
            self.write(&chunk).await?;
        }
        buf.advance(at);
        nsq::reserve_rest_of_frame(buf);
        Ok(None)
    }

    /// Takes the slot of the command a reply from nsqd answers (the reply ends
    /// `buf[..at]`); nsqgate's own replies due before it go first. A publish's round trip is
    /// measured to the clock reading `timing` takes at the first one.
    async fn pair_reply(
        &mut self,
        timing: &mut Timing,
        buf: &[u8],
        copied: &mut usize,
        at: usize,
    ) -> Result<Option<RelayEnd>, RelayError> {
        // The slot for this reply was queued before the command was written; only when it is
        // not at the front are there local replies to send first.
        let answered = match self.replies.answer() {
            Some(answered) => answered,
            None => {
                if let Some(end) = self.emit_due_local_after(buf, copied, at).await? {
                    return Ok(Some(end));
                }
                self.replies.answer().ok_or(RelayError::UnaskedReply)?
            }
        };
        if let Answered::Publish { sent } = answered {
            let took = timing.since(sent);
            let metrics = &self.metrics;
            let round_trips =
                (self.round_trips).get_or_insert_with(|| metrics.publish_round_trips());
            round_trips.observe(took);
        }
        Ok(None)
    }

    /// Writes the local replies at the head of the queue; a refusal is the last thing the
    /// client hears (nothing at all where nsqd would say nothing), then its side is closed.
    async fn emit_due_local(&mut self) -> Result<Option<RelayEnd>, RelayError> {
        self.emit_due_local_after(&[], &mut 0, 0).await
    }

    /// [`Self::emit_due_local`] behind the relayed frames `buf[*copied..at]`, which go into
    /// `out` first when a local reply is due.
    async fn emit_due_local_after(
        &mut self,
        buf: &[u8],
        copied: &mut usize,
        at: usize,
    ) -> Result<Option<RelayEnd>, RelayError> {
        while let Some(slot) = self.replies.pop_local() {
            self.out.extend_from_slice(&buf[*copied..at]);
            *copied = at;
            match slot {
                Slot::Reply(frame) => self.out.extend_from_slice(&frame),
                Slot::Refusal(refusal) => {
                    if let Some(frame) = refusal.frame() {
                        self.out.extend_from_slice(frame);
                    }
                    let chunk = self.out.split();
                    self.write(&chunk).await?;
                    let _ = self.client.shutdown().await;
                    return Ok(Some(RelayEnd::Refused(*refusal)));
                }
                // pop_local takes nothing else.
                Slot::Upstream(_) => break,
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

/// The publish round trips of one read from nsqd: one clock reading for all of them, and one
/// subtraction per batch they were sent in (a batch's publishes share their send time).
#[derive(Default)]
struct Timing {
    now: Option<Instant>,
    /// The last send time measured, and its round trip in seconds.
    last: Option<(Instant, f64)>,
}

impl Timing {
    fn since(&mut self, sent: Instant) -> f64 {
        if let Some((last_sent, took)) = self.last {
            if last_sent == sent {
                return took;
            }
        }
        let now = *self.now.get_or_insert_with(Instant::now);
        let took = now.saturating_duration_since(sent).as_secs_f64();
        self.last = Some((sent, took));
        took
    }
}

/// Heartbeats, messages and the non-fatal FIN/REQ/TOUCH errors arrive unasked; every other
/// response or error answers the oldest command still owed a reply.
fn is_reply(frame: &nsq::FrameView<'_>) -> bool {
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
