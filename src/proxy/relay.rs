//! The relay phase: commands flow client → nsqd, frames flow nsqd → client, both with
//! backpressure (a side stops reading while its writer is blocked) and bounded buffers.
//!
//! Replies are paired FIFO, as nsqd and every stock client pair them. A reply nsqgate makes
//! itself (an error for a denied command, say) is queued behind the replies still owed by nsqd,
//! so a producer with pipelined PUBs never sees nsqgate's answer in place of nsqd's. nsqgate
//! never acknowledges a publish: the client's OK is always nsqd's OK.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::nsq::{self, ErrorCode, FrameType, Limits};
use crate::proxy::guard::{Guard, Verdict};
use crate::proxy::stream::Io;
use crate::proxy::upstream::Upstream;

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
enum Slot {
    /// This many replies will come from nsqd.
    Upstream(usize),
    /// nsqgate's own reply, due once every earlier reply has been sent.
    Local { frame: Bytes, fatal: bool },
}

/// How the client → nsqd direction ended.
enum ClientSide {
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

async fn client_to_upstream<R, W>(
    client: &mut R,
    mut buf: BytesMut,
    mut upstream: W,
    slots: mpsc::Sender<Slot>,
    guard: &mut Guard,
    settings: &RelaySettings,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<ClientSide>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    let mut revoked_at = None;
    let mut last_read_full = false;
    // A started command must arrive whole in time: one byte a minute holds nothing for long.
    let mut partial_since: Option<tokio::time::Instant> = None;
    let auth_deadline = tokio::time::Instant::now() + settings.auth_timeout;
    loop {
        // Decode everything already buffered, so one read becomes one upstream write.
        let mut owed = 0usize;
        let mut refusal = None;
        loop {
            let decoded = match nsq::decode_command(&mut buf, &settings.limits) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "malformed command from client");
                    refusal = Some(e.to_frame());
                    break;
                }
            };
            let mut verdict = guard.screen(&decoded);
            if matches!(verdict, Verdict::Forward) && decoded.command.message_count() > 0 {
                let admission = guard.admit(&decoded);
                tokio::pin!(admission);
                // Usually there are tokens; only a publish that must wait flushes what came
                // before it, so batching survives and nothing earlier is held hostage.
                let refused = tokio::select! {
                    biased;
                    refused = &mut admission => refused,
                    _ = std::future::ready(()) => {
                        flush(&mut out, &mut owed, &mut upstream, &slots, settings.write_timeout).await?;
                        admission.await
                    }
                };
                if let Some(refused) = refused {
                    verdict = refused;
                }
            }
            match verdict {
                Verdict::Drop => {}
                Verdict::Forward => {
                    if decoded.command.expects_reply() {
                        owed += 1;
                    }
                    out.extend_from_slice(&decoded.raw);
                }
                Verdict::Reply { frame, fatal } => {
                    // Everything before it goes first, then the local reply takes its turn.
                    flush(
                        &mut out,
                        &mut owed,
                        &mut upstream,
                        &slots,
                        settings.write_timeout,
                    )
                    .await?;
                    if fatal {
                        refusal = Some(frame);
                        break;
                    }
                    send_slot(&slots, Slot::Local { frame, fatal }).await?;
                }
            }
        }
        flush(
            &mut out,
            &mut owed,
            &mut upstream,
            &slots,
            settings.write_timeout,
        )
        .await?;
        if let Some(frame) = refusal {
            send_slot(&slots, Slot::Local { frame, fatal: true }).await?;
            return Ok(ClientSide::Refused);
        }

        partial_since = match (buf.is_empty(), partial_since) {
            (true, _) => None,
            (false, None) => Some(tokio::time::Instant::now()),
            (false, since) => since,
        };
        let (deadline, expiry) = next_deadline(settings, partial_since, guard, auth_deadline);
        prepare_read_buffer(&mut buf, last_read_full);
        let spare = buf.capacity() - buf.len();
        let read = tokio::select! {
            read = client.read_buf(&mut buf) => read,
            _ = stopping(&mut shutdown) => {
                // Like a client that hung up: nsqd answers what it owes, then closes, and the
                // other direction hands those answers to the client before closing it.
                debug!("shutting down: no more commands from this client");
                let _ = upstream.shutdown().await;
                return Ok(ClientSide::Closed);
            }
            _ = tokio::time::sleep_until(deadline) => {
                let Some(frame) = expiry else {
                    return Ok(ClientSide::Idle);
                };
                send_slot(&slots, Slot::Local { frame, fatal: true }).await?;
                return Ok(ClientSide::Refused);
            }
            revocation = guard.revoked(), if revoked_at.is_none() => {
                // Stop deliveries now; in-flight messages may still be finished until the grace
                // period ends, then the client is told and disconnected.
                debug!(reason = revocation.reason, "subscription revoked");
                revoked_at = Some(tokio::time::Instant::now() + settings.revocation_grace);
                write_within(&mut upstream, b"RDY 0\n", settings.write_timeout).await?;
                continue;
            }
            _ = sleep_until_or_never(revoked_at) => {
                send_slot(&slots, Slot::Local {
                    frame: nsq::error_frame(ErrorCode::Unauthorized, "permission revoked"),
                    fatal: true,
                }).await?;
                return Ok(ClientSide::Refused);
            }
        };
        match read {
            Ok(0) => {
                // Half-close toward nsqd: it answers what it owes, then closes its side.
                let _ = upstream.shutdown().await;
                return Ok(ClientSide::Closed);
            }
            Ok(n) => last_read_full = n == spare,
            Err(e) => return Err(e),
        }
    }
}

/// The earliest of the idle, slow-command and missing-AUTH deadlines, with the error frame
/// to send when it passes (none for idle: like nsqd, an idle client is just disconnected).
fn next_deadline(
    settings: &RelaySettings,
    partial_since: Option<tokio::time::Instant>,
    guard: &Guard,
    auth_deadline: tokio::time::Instant,
) -> (tokio::time::Instant, Option<Bytes>) {
    let now = tokio::time::Instant::now();
    let mut deadline = (now + settings.idle, None);
    if let Some(since) = partial_since {
        let at = since + settings.partial_frame_timeout;
        if at < deadline.0 {
            let frame = nsq::error_frame(ErrorCode::Invalid, "command not completed in time");
            deadline = (at, Some(frame));
        }
    }
    if guard.awaiting_identity() && auth_deadline < deadline.0 {
        let frame = nsq::error_frame(ErrorCode::AuthFirst, "AUTH not sent in time");
        deadline = (auth_deadline, Some(frame));
    }
    deadline
}

/// Small reads for quiet connections, large ones while data streams in; a drained buffer that
/// grew for one large frame is given back, so idle connections hold little memory.
fn prepare_read_buffer(buf: &mut BytesMut, last_read_full: bool) {
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

/// Completes once shutdown is asked for; never, if nobody can ask any more.
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    if shutdown.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Announces the replies `out` will cause, then writes it: the slot goes first so the other
/// direction can never see a reply it was not told about.
async fn flush<W: AsyncWrite + Unpin>(
    out: &mut BytesMut,
    owed: &mut usize,
    upstream: &mut W,
    slots: &mpsc::Sender<Slot>,
    limit: Duration,
) -> std::io::Result<()> {
    if *owed > 0 {
        send_slot(slots, Slot::Upstream(*owed)).await?;
        *owed = 0;
    }
    if !out.is_empty() {
        // split() hands the bytes over and leaves `out` empty without capacity: an idle
        // connection keeps no write buffer.
        let chunk = out.split();
        write_within(upstream, &chunk, limit).await?;
    }
    Ok(())
}

/// Writes and flushes within `limit`: a peer that stops reading cannot hold a connection (and
/// everything queued behind it) forever.
async fn write_within<W: AsyncWrite + Unpin>(
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

async fn send_slot(slots: &mpsc::Sender<Slot>, slot: Slot) -> std::io::Result<()> {
    slots
        .send(slot)
        .await
        .map_err(|_| std::io::Error::other("client writer is gone"))
}

async fn upstream_to_client<R, W>(
    mut upstream: R,
    mut buf: BytesMut,
    mut client: W,
    mut slots: mpsc::Receiver<Slot>,
    max_frame_size: u32,
    write_timeout: Duration,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut owed: VecDeque<Slot> = VecDeque::new();
    let mut out = BytesMut::new();
    let mut slots_open = true;
    let mut last_read_full = false;
    loop {
        // Frames already buffered are handled before waiting on anything.
        loop {
            let frame = match nsq::decode_frame(&mut buf, max_frame_size) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "malformed frame from nsqd; closing");
                    return Ok(());
                }
            };
            if is_reply(&frame) {
                // The slot for this reply was queued before the command was written.
                while let Ok(slot) = slots.try_recv() {
                    owed.push_back(slot);
                }
                if emit_due_local(&mut owed, &mut out, &mut client, write_timeout).await? {
                    return Ok(());
                }
                match owed.front_mut() {
                    Some(Slot::Upstream(n)) => {
                        *n -= 1;
                        if *n == 0 {
                            owed.pop_front();
                        }
                    }
                    _ => {
                        warn!("nsqd sent a reply nobody asked for; closing");
                        return Ok(());
                    }
                }
            }
            out.extend_from_slice(&frame.raw);
        }
        // The last reply nsqd owed may have been just handled: a local reply queued behind it
        // is due now.
        if emit_due_local(&mut owed, &mut out, &mut client, write_timeout).await? {
            return Ok(());
        }
        if !out.is_empty() {
            let chunk = out.split();
            write_within(&mut client, &chunk, write_timeout).await?;
        }

        prepare_read_buffer(&mut buf, last_read_full);
        let spare = buf.capacity() - buf.len();
        tokio::select! {
            biased;
            slot = slots.recv(), if slots_open => match slot {
                Some(slot) => {
                    owed.push_back(slot);
                    if emit_due_local(&mut owed, &mut out, &mut client, write_timeout).await? {
                        return Ok(());
                    }
                }
                None => slots_open = false,
            },
            read = upstream.read_buf(&mut buf) => {
                let n = read?;
                if n == 0 {
                    debug!("nsqd closed the connection");
                    let _ = client.shutdown().await;
                    return Ok(());
                }
                last_read_full = n == spare;
            }
        }
    }
}

/// Writes the local replies at the head of the queue. Returns true after a fatal one.
async fn emit_due_local<W: AsyncWrite + Unpin>(
    owed: &mut VecDeque<Slot>,
    out: &mut BytesMut,
    client: &mut W,
    write_timeout: Duration,
) -> std::io::Result<bool> {
    while let Some(Slot::Local { .. }) = owed.front() {
        let Some(Slot::Local { frame, fatal }) = owed.pop_front() else {
            break;
        };
        out.extend_from_slice(&frame);
        if fatal {
            write_within(client, out, write_timeout).await?;
            let _ = client.shutdown().await;
            return Ok(true);
        }
    }
    Ok(false)
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
