//! Copies of withheld deliveries, published to their quarantine topic over nsqgate's own
//! connection to the nsqd they came from. Only once nsqd said OK to the copy is the original
//! FINed; a copy that could not be published has its original requeued instead, so evidence
//! is never dropped. One task per session that needs it, started at its first suspect; a
//! connection per batch of suspects (they are rare), closed when the batch is done.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::warn;

use crate::metrics::Metrics;
use crate::net::stream::Io;
use crate::nsq::{self, Command, FrameType, MessageId};
use crate::proxy::identify::UpstreamIdentify;
use crate::proxy::upstream::{Destination, UpstreamError};

/// Suspects waiting for their copy at once; past this one is requeued without a copy.
const QUEUED: usize = 256;
/// Most copies published over one connection before it is closed and the originals settled.
const BATCH: usize = 64;
/// How long nsqd may take to answer one copy.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a requeued original waits before nsqd delivers it again.
pub const REQUEUE_MS: u64 = 10_000;

/// Publishes quarantine copies for the sessions of one listener.
pub struct Quarantiner {
    destination: Destination,
    /// nsqgate's own IDENTIFY (no client metadata): the copies are nsqgate's publishes.
    identify: UpstreamIdentify,
    max_frame_size: u32,
    metrics: Arc<Metrics>,
}

/// A delivery withheld from the consumer, to be copied to `topic`.
pub struct Suspect {
    pub id: MessageId,
    /// The bytes nsqd delivered, envelope (or whatever stands in its place) and all.
    pub body: Bytes,
    pub topic: String,
}

/// What the consumer's connection tells nsqd about a withheld delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// The copy is in the quarantine topic: the original is done.
    Fin(MessageId),
    /// No copy was made: nsqd delivers the original again later.
    Requeue(MessageId),
}

#[derive(Debug, thiserror::Error)]
enum CopyFailed {
    #[error("{0}")]
    Connect(#[from] UpstreamError),
    #[error("connection to nsqd: {0}")]
    Io(#[from] std::io::Error),
    #[error("nsqd refused the copy: {0}")]
    Refused(String),
    #[error("nsqd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("nsqd sent something that is not NSQ: {0}")]
    Protocol(nsq::ProtocolError),
    #[error("nsqd closed the connection")]
    Closed,
}

// === impl Quarantiner ===

impl Quarantiner {
    pub fn new(
        destination: Destination,
        identify: UpstreamIdentify,
        max_frame_size: u32,
        metrics: Arc<Metrics>,
    ) -> Quarantiner {
        Quarantiner {
            destination,
            identify,
            max_frame_size,
            metrics,
        }
    }

    /// Starts the task copying suspects; each one's outcome goes to `settle`. The task ends
    /// when the returned sender is dropped or `settle` is closed.
    pub fn start(self: Arc<Self>, settle: mpsc::Sender<Settle>) -> mpsc::Sender<Suspect> {
        let (suspects, queue) = mpsc::channel(QUEUED);
        tokio::spawn(self.run(queue, settle));
        suspects
    }

    async fn run(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<Suspect>,
        settle: mpsc::Sender<Settle>,
    ) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(suspect) => batch.push(suspect),
                    Err(_) => break,
                }
            }
            let copied = match self.copy(&batch).await {
                Ok(()) => batch.len(),
                Err((copied, e)) => {
                    warn!(upstream = self.destination.address(), error = %e, requeued = batch.len() - copied, "quarantine copy failed; the originals are requeued");
                    copied
                }
            };
            for (i, suspect) in batch.iter().enumerate() {
                let ok = i < copied;
                self.metrics.integrity.quarantine_published(ok);
                let outcome = if ok {
                    Settle::Fin(suspect.id)
                } else {
                    Settle::Requeue(suspect.id)
                };
                if settle.send(outcome).await.is_err() {
                    // The session ended: nsqd redelivers what it had in flight.
                    return;
                }
            }
        }
    }

    /// Publishes each copy in order, one at a time. On failure: how many made it, and why.
    async fn copy(&self, batch: &[Suspect]) -> Result<(), (usize, CopyFailed)> {
        let routed =
            (self.destination.connect(self.identify.clone()).await).map_err(|e| (0, e.into()))?;
        let mut io = routed.upstream.io;
        let mut buf = routed.upstream.buf;
        for (i, suspect) in batch.iter().enumerate() {
            let publish = Command::Pub {
                topic: suspect.topic.as_str().into(),
                body: suspect.body.clone(),
            };
            let mut out = BytesMut::new();
            publish.encode(&mut out);
            let answered = async {
                io.write_all(&out).await?;
                io.flush().await?;
                self.await_ok(&mut io, &mut buf).await
            };
            match tokio::time::timeout(REPLY_TIMEOUT, answered).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err((i, e)),
                Err(_) => return Err((i, CopyFailed::Timeout(REPLY_TIMEOUT))),
            }
        }
        drop(routed.lease);
        Ok(())
    }

    /// Reads up to nsqd's answer to one PUB, answering heartbeats on the way.
    async fn await_ok(&self, io: &mut Box<dyn Io>, buf: &mut BytesMut) -> Result<(), CopyFailed> {
        loop {
            match nsq::decode_frame(buf, self.max_frame_size).map_err(CopyFailed::Protocol)? {
                Some(frame) if frame.is_heartbeat() => io.write_all(b"NOP\n").await?,
                Some(frame) if frame.frame_type == FrameType::Response => return Ok(()),
                Some(frame) => {
                    let text = String::from_utf8_lossy(&frame.data)
                        .escape_debug()
                        .to_string();
                    return Err(CopyFailed::Refused(text));
                }
                None => {
                    if io.read_buf(buf).await? == 0 {
                        return Err(CopyFailed::Closed);
                    }
                }
            }
        }
    }
}
