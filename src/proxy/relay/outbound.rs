//! nsqd → client: relay frames as they come, pair each reply with the oldest command owed one,
//! and emit nsqgate's own replies in their turn (closing after a fatal one).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::nsq::{self, FrameType};

use super::{prepare_read_buffer, write_within, Slot};

pub(super) async fn upstream_to_client<R, W>(
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
