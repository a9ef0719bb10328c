//! The relay phase: commands flow client → nsqd, frames flow nsqd → client, both with
//! backpressure (a side stops reading while its writer is blocked) and bounded buffers.
//!
//! Replies are paired FIFO, as nsqd and every stock client pair them. A reply nsqgate makes
//! itself (an error for a denied command, say) is queued behind the replies still owed by nsqd,
//! so a producer with pipelined PUBs never sees nsqgate's answer in place of nsqd's. nsqgate
//! never acknowledges a publish: the client's OK is always nsqd's OK.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::debug;

use crate::nsq::Limits;
use crate::proxy::guard::Guard;
use crate::proxy::stream::Io;
use crate::proxy::upstream::Upstream;

mod inbound;
mod outbound;

use inbound::client_to_upstream;
use outbound::upstream_to_client;

/// How many reply slots may be outstanding before the client side stops reading; a client that
/// pipelines more than this waits for nsqd, which is the backpressure we want.
const REPLY_SLOTS: usize = 256;
/// Read sizes: small while a connection is quiet, large while reads come back full. A frame
/// larger than either grows the buffer only to its own (limit-checked) size.
const SMALL_READ: usize = 512;
const LARGE_READ: usize = 64 * 1024;
/// After the client side ended, how long nsqd may take to send the replies it still owes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection keeps reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_secs(1);

/// One entry of the FIFO of replies owed to the client.
pub(super) enum Slot {
    /// This many replies will come from nsqd.
    Upstream(usize),
    /// nsqgate's own reply, due once every earlier reply has been sent.
    Local { frame: Bytes, fatal: bool },
}

/// How the client → nsqd direction ended.
pub(super) enum ClientSide {
    /// The client closed its side; nsqd is told and may still send owed replies.
    Closed,
    /// A fatal local reply is queued; the other direction ends the connection after it.
    Refused,
    /// No byte from the client within the idle timeout.
    Idle,
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
}

/// Runs until either side ends the connection.
pub async fn run(
    client: Box<dyn Io>,
    client_buf: BytesMut,
    upstream: Upstream,
    guard: &mut Guard,
    settings: &RelaySettings,
) -> std::io::Result<()> {
    let (mut client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream.io);
    let (slots_tx, slots_rx) = mpsc::channel(REPLY_SLOTS);

    let (result, linger) = {
        let inbound = client_to_upstream(
            &mut client_read,
            client_buf,
            upstream_write,
            slots_tx,
            guard,
            settings,
            settings.shutdown.clone(),
        );
        let outbound = upstream_to_client(
            upstream_read,
            upstream.buf,
            client_write,
            slots_rx,
            settings.max_frame_size,
            settings.write_timeout,
        );
        tokio::pin!(inbound, outbound);
        tokio::select! {
            result = &mut outbound => (result, true),
            ended = &mut inbound => match ended {
                Ok(ClientSide::Idle) => {
                    debug!("client idle past the timeout");
                    (Ok(()), false)
                }
                Ok(side) => {
                    debug!(refused = matches!(side, ClientSide::Refused), "client side ended");
                    // nsqd owes at most a few replies now; do not wait on it forever.
                    let result = tokio::time::timeout(DRAIN_TIMEOUT, &mut outbound)
                        .await
                        .unwrap_or(Ok(()));
                    (result, true)
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

/// Small reads for quiet connections, large ones while data streams in; a drained buffer that
/// grew for one large frame is given back, so idle connections hold little memory.
pub(super) fn prepare_read_buffer(buf: &mut BytesMut, last_read_full: bool) {
    if buf.is_empty() && buf.capacity() > LARGE_READ {
        *buf = BytesMut::new();
    }
    let want = if last_read_full {
        LARGE_READ
    } else {
        SMALL_READ
    };
    if buf.capacity() - buf.len() < want / 2 {
        buf.reserve(want);
    }
}

/// Writes and flushes within `limit`: a peer that stops reading cannot hold a connection (and
/// everything queued behind it) forever.
pub(super) async fn write_within<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    let write = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    tokio::time::timeout(limit, write)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "peer stopped reading"))?
}

pub(super) async fn send_slot(slots: &mpsc::Sender<Slot>, slot: Slot) -> std::io::Result<()> {
    slots
        .send(slot)
        .await
        .map_err(|_| std::io::Error::other("client writer is gone"))
}
