//! The relay phase: commands flow client → nsqd, frames flow nsqd → client, both with
//! backpressure (a side stops reading while its writer is blocked) and bounded buffers.
//!
//! Replies are paired FIFO, as nsqd and every stock client pair them. A reply nsqgate makes
//! itself (an error for a denied command, say) is queued behind the replies still owed by nsqd,
//! so a producer with pipelined PUBs never sees nsqgate's answer in place of nsqd's. nsqgate
//! never acknowledges a publish: the client's OK is always nsqd's OK.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Classify, Ending, FatalReply, Kind};
use crate::net::stream::Io;
use crate::nsq::{ErrorCode, Limits, ProtocolError};
use crate::proxy::guard::Guard;
use crate::proxy::upstream::Upstream;

mod batch;
mod inbound;
mod outbound;
mod reading;
mod replies;
mod signed;
mod watches;
mod woken;

use inbound::{ClientSide, Inbound};
use outbound::Outbound;
use replies::Replies;
use signed::Signed;
use woken::WhenWoken;

/// After the client side ended, how long nsqd may take to send the replies it still owes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection keeps reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_secs(1);

/// One entry of the FIFO of replies owed to the client.
enum Slot {
    /// Replies that will come from nsqd for one batch of commands.
    Upstream(Owed),
    /// nsqgate's own reply, due once every earlier reply has been sent.
    Reply(Bytes),
    /// nsqgate's refusal, due likewise; the connection closes after it. Boxed: a refusal comes
    /// once at most, and every slot of a queue is as large as the largest.
    Refusal(Box<FatalReply>),
}

/// What nsqd owes for one batch written to it.
struct Owed {
    replies: usize,
    /// How many of those replies answer a publish (their round trip is measured).
    publishes: usize,
    /// When the batch was handed to nsqd.
    sent: tokio::time::Instant,
}

pub struct RelaySettings {
    pub limits: Limits,
    pub idle: Duration,
    pub partial_frame_timeout: Duration,
    /// How long a connection may go on without an identity when one is required.
    pub auth_timeout: Duration,
    pub max_frame_size: u32,
    /// How long a write to either peer may take before the connection is given up.
    pub write_timeout: Duration,
    /// Turns true on SIGTERM: stop reading commands, deliver what nsqd owes, close.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// How long a consumer whose permission was revoked may finish in-flight messages.
    pub revocation_grace: Duration,
    /// Messages and bytes each way, and the publish round trip, are counted here.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Topics whose messages are sealed toward nsqd and opened toward the client.
    pub integrity: crate::integrity::Integrity,
    /// Publishes copies of withheld deliveries; None when no topic is signed.
    pub quarantiner: Option<std::sync::Arc<crate::proxy::quarantine::Quarantiner>>,
    /// The connection's span (`conn{peer=...}`): the parent of what the relay logs. The relay
    /// is not run inside it, which would enter it at every poll.
    pub span: tracing::Span,
}

/// How a relay ended without failing.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client closed its side; nsqd answered what it owed.
    ClientClosed,
    /// nsqd closed the connection, on its own or right after `last_error`, a fatal error it
    /// sent the client.
    NsqdClosed { last_error: Option<NsqdError> },
    /// nsqgate refused a command: the client was told (after the replies owed before it).
    Refused(FatalReply),
    /// No byte from the client within the idle timeout: dropped without a word, as nsqd does.
    Idle,
    /// nsqgate is shutting down: the replies nsqd owed were delivered.
    Shutdown,
}

/// A fatal error frame nsqd sent the client (already relayed), kept to say why nsqd closed.
#[derive(Debug)]
pub struct NsqdError {
    pub code: Option<ErrorCode>,
    pub text: Bytes,
}

/// Why a relay failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading from or writing to the client failed (reset, a bad TLS record).
    #[error("client connection: {0}")]
    Client(std::io::Error),
    #[error("peer stopped reading: the client took nothing for {0:?}")]
    ClientStalled(Duration),
    #[error("nsqd connection: {0}")]
    Nsqd(std::io::Error),
    #[error("peer stopped reading: nsqd took nothing for {0:?}")]
    NsqdStalled(Duration),
    #[error("malformed frame from nsqd: {0}")]
    NsqdFrame(ProtocolError),
    #[error("nsqd sent a reply nobody asked for")]
    UnaskedReply,
    #[error("nsqd did not send the replies it owed within {0:?} of the client's end")]
    NsqdOwes(Duration),
}

/// Runs until either side ends the connection.
pub async fn run(
    client: Box<dyn Io>,
    client_buf: BytesMut,
    upstream: Upstream,
    guard: &mut Guard,
    settings: &RelaySettings,
) -> Result<RelayEnd, RelayError> {
    // nsqd's IDENTIFY reply (a JSON map, ~2 KiB on the heap) was the base of the client's
    // long ago: a connection that stays idle for hours need not keep it.
    let Upstream {
        io: upstream_io,
        buf: upstream_buf,
        identify_reply,
    } = upstream;
    drop(identify_reply);
    let (mut client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream_io);
    let replies = Replies::default();
    let metrics = settings.metrics.clone();
    let quarantiner = settings.quarantiner.clone();
    let (signed, settles) = Signed::new(settings.integrity.clone(), quarantiner, metrics).unzip();

    let (result, linger) = {
        let signing = (signed.clone(), settles);
        let inbound = Inbound::new(upstream_write, &replies, guard, settings, signing);
        let metrics = settings.metrics.clone();
        let (timeout, span) = (settings.write_timeout, &settings.span);
        let outbound = Outbound::new(client_write, &replies, timeout, metrics, span).with(signed);
        // Boxed where they are built: pinned in place, each direction's future was kept twice
        // in this one's state (the moved-from local too), and that state is what every idle
        // connection's task holds (heaptrack: a 10 KiB task).
        // Each polled only when woken for itself: nsqd's reply does not poll the client
        // side's wait again, nor a client's command nsqd's side.
        let mut inbound = WhenWoken::new(Box::pin(inbound.run(&mut client_read, client_buf)));
        let max_frame_size = settings.max_frame_size;
        let mut outbound = WhenWoken::new(Box::pin(outbound.run(
            upstream_read,
            upstream_buf,
            max_frame_size,
        )));
        // In a fixed order, nsqd's side first: a random order costs a random number per
        // wake-up.
        tokio::select! {
            biased;
            result = &mut outbound => (result, true),
            ended = &mut inbound => match ended {
                Ok(ClientSide::Idle) => (Ok(RelayEnd::Idle), false),
                Ok(side) => {
                    // nsqd owes at most a few replies now; do not wait on it forever.
                    let owed = tokio::time::timeout(DRAIN_TIMEOUT, &mut outbound)
                        .await
                        .unwrap_or(Err(RelayError::NsqdOwes(DRAIN_TIMEOUT)));
                    (side.ended(owed), true)
                }
                Err(e) => (Err(e), false),
            },
        }
    };
    if linger {
        drain_before_close(&mut client_read).await;
    }
    result
}

/// Reads and discards what the client still sends, until it closes or LINGER passes. Closing a
/// socket with unread input makes the kernel send RST, which can destroy the last frame (an
/// error telling the client why) before the client reads it.
pub async fn drain_before_close<R: AsyncRead + Unpin + ?Sized>(client: &mut R) {
    // On the heap: an array here would sit in every session's future for its whole life.
    let mut scratch = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + LINGER;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, client.read(&mut scratch)).await {
        if n == 0 {
            break;
        }
    }
}

/// A write that did not complete.
enum WriteFailed {
    Io(std::io::Error),
    /// The peer took nothing for this long.
    Stalled(Duration),
}

/// Writes and flushes within `limit`: a peer that stops reading cannot hold a connection (and
/// everything queued behind it) forever.
async fn write_within<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), WriteFailed> {
    let write = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    let mut write = std::pin::pin!(write);
    // Nearly every write completes on its first poll (the socket has room): the timer is
    // made only for one that has to wait, not twice per 1-deep message (docs/perf-profile.md,
    // "A pinned 1-deep producer").
    if let Some(written) = poll_once(write.as_mut()).await {
        return written.map_err(WriteFailed::Io);
    }
    match tokio::time::timeout(limit, write).await {
        Ok(written) => written.map_err(WriteFailed::Io),
        Err(_) => Err(WriteFailed::Stalled(limit)),
    }
}

/// Polls `future` once with the task's own context: its output, or None when it has to wait
/// (its wake-up is registered, so awaiting it afterwards loses nothing).
async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

// === impl RelayEnd ===

impl Classify for RelayEnd {
    fn ending(&self) -> Ending {
        match self {
            RelayEnd::ClientClosed => Ending::of(Kind::Closed),
            RelayEnd::NsqdClosed { last_error: None } => Ending::of(Kind::UpstreamUnavailable),
            RelayEnd::NsqdClosed {
                last_error: Some(error),
            } => Ending::after_nsqd_error(error.code),
            RelayEnd::Refused(reply) => reply.ending(),
            RelayEnd::Idle => Ending::of(Kind::ClientTimeout),
            RelayEnd::Shutdown => Ending::of(Kind::Shutdown),
        }
    }
}

impl fmt::Display for RelayEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayEnd::ClientClosed => f.write_str("client closed the connection"),
            RelayEnd::NsqdClosed { last_error: None } => f.write_str("nsqd closed the connection"),
            RelayEnd::NsqdClosed {
                last_error: Some(error),
            } => write!(
                f,
                "nsqd closed the connection after {}",
                String::from_utf8_lossy(&error.text)
            ),
            RelayEnd::Refused(reply) => write!(f, "refused: {reply}"),
            RelayEnd::Idle => f.write_str("client idle past the timeout"),
            RelayEnd::Shutdown => f.write_str("shut down"),
        }
    }
}

// === impl RelayError ===

impl Classify for RelayError {
    fn ending(&self) -> Ending {
        match self {
            RelayError::Client(e) => client_io_ending(e),
            RelayError::ClientStalled(_) => Ending::of(Kind::ClientTimeout),
            RelayError::Nsqd(_) | RelayError::NsqdStalled(_) | RelayError::NsqdOwes(_) => {
                Ending::of(Kind::UpstreamUnavailable)
            }
            RelayError::NsqdFrame(_) | RelayError::UnaskedReply => {
                Ending::of(Kind::UpstreamProtocol)
            }
        }
    }
}

/// A failed read or write on the client leg: a corrupt compressed stream or a bad TLS record
/// surfaces as invalid data; a reset or a broken pipe is a client that went away.
pub fn client_io_ending(e: &std::io::Error) -> Ending {
    match e.kind() {
        _ if crate::net::compressed::is_corrupt_stream(e) => Ending::of(Kind::ClientProtocol),
        std::io::ErrorKind::InvalidData => Ending::of(Kind::Tls),
        std::io::ErrorKind::TimedOut => Ending::of(Kind::ClientTimeout),
        _ => Ending::of(Kind::Closed),
    }
}

#[cfg(test)]
mod tests;
