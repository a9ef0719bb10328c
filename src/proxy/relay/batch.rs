//! Commands bound for nsqd: gathered from one read of the client, then written in one go
//! behind the reply slots that announce what they cause.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::nsq::DecodedCommand;

use super::{write_within, Owed, RelayError, RelaySettings, Replies, Slot, WriteFailed};

/// Commands bound for nsqd, written in one go, and the reply slots announcing what they cause.
pub(super) struct Batch<'a, W> {
    pub(super) upstream: W,
    pub(super) replies: &'a Replies,
    out: BytesMut,
    /// Replies the commands in `out` will get from nsqd.
    owed: usize,
    /// Publishes among them, and the messages they carry (an MPUB's each).
    publishes: usize,
    messages: u64,
    write_timeout: Duration,
    pub(super) metrics: Arc<Metrics>,
}

// === impl Batch ===

impl<'a, W: AsyncWrite + Unpin> Batch<'a, W> {
    pub(super) fn new(upstream: W, replies: &'a Replies, settings: &RelaySettings) -> Self {
        Batch {
            upstream,
            replies,
            out: BytesMut::new(),
            owed: 0,
            publishes: 0,
            messages: 0,
            write_timeout: settings.write_timeout,
            metrics: settings.metrics.clone(),
        }
    }

    pub(super) fn push(&mut self, decoded: &DecodedCommand) {
        if decoded.command.expects_reply() {
            self.owed += 1;
        }
        let messages = decoded.command.message_count();
        if messages > 0 {
            self.publishes += 1;
            self.messages += u64::from(messages);
        }
        self.out.extend_from_slice(&decoded.raw);
    }

    /// Announces the replies the batch will cause, then writes it: the slot goes first so the
    /// other direction can never see a reply it was not told about.
    pub(super) async fn flush(&mut self) -> Result<(), RelayError> {
        if self.owed > 0 {
            let owed = Owed {
                replies: std::mem::take(&mut self.owed),
                publishes: std::mem::take(&mut self.publishes),
                sent: Instant::now(),
            };
            self.replies.push(Slot::Upstream(owed)).await;
        }
        let messages = std::mem::take(&mut self.messages);
        self.metrics.messages_published.inc_by(messages);
        if !self.out.is_empty() {
            // Split off, so `out` keeps the rest of the allocation: once the chunk is written
            // and dropped, the next batch reuses all of it without allocating (taking `out`
            // whole instead cost an allocation and a free per read, which showed natively;
            // sizing it ahead for the whole read would keep a partly read large frame's size).
            let chunk = self.out.split();
            self.write_now(&chunk).await?;
        }
        Ok(())
    }

    /// Writes `bytes` to nsqd at once, outside the batch.
    pub(super) async fn write_now(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        self.metrics.bytes_to_nsqd.inc_by(bytes.len() as u64);
        write_within(&mut self.upstream, bytes, self.write_timeout)
            .await
            .map_err(|failed| match failed {
                WriteFailed::Io(e) => RelayError::Nsqd(e),
                WriteFailed::Stalled(limit) => RelayError::NsqdStalled(limit),
            })
    }
}
