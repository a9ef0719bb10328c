//! Client → nsqd: decode every buffered command, let the guard screen it, draw publishes from
//! the rate limits, and forward in one write per read; the deadlines (idle, slow command,
//! missing AUTH, revocation grace, shutdown) live here.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::debug;

use crate::nsq::{self, ErrorCode};
use crate::proxy::guard::{Guard, Verdict};

use super::{prepare_read_buffer, send_slot, write_within, ClientSide, RelaySettings, Slot};

pub(super) async fn client_to_upstream<R, W>(
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
                let (refused, waited) = {
                    let admission = guard.admit(&decoded);
                    tokio::pin!(admission);
                    // Usually there are tokens; only a publish that must wait flushes what came
                    // before it, so batching survives and nothing earlier is held hostage.
                    tokio::select! {
                        biased;
                        refused = &mut admission => (refused, false),
                        _ = std::future::ready(()) => {
                            flush(&mut out, &mut owed, &mut upstream, &slots, settings.write_timeout).await?;
                            (admission.await, true)
                        }
                    }
                };
                if let Some(refused) = refused {
                    verdict = refused;
                } else if waited {
                    // Time passed: the token may have expired, or a reload revoked the right.
                    verdict = guard.recheck(&decoded);
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
                // A subscriber's deliveries stop now; it may finish in-flight messages until the
                // grace period ends, then it is told and disconnected. Anyone else (RDY before
                // SUB would be an error) is told at once, after the replies nsqd still owes.
                debug!(reason = %revocation.reason, "revoked");
                let grace = if revocation.subscribed {
                    write_within(&mut upstream, b"RDY 0\n", settings.write_timeout).await?;
                    settings.revocation_grace
                } else {
                    Duration::ZERO
                };
                revoked_at = Some(tokio::time::Instant::now() + grace);
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
