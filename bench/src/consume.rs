//! Consuming, fan-out: one connection per channel through the target subscribes with RDY 0, a
//! publisher straight to nsqd (plain TCP, so the target sees only egress) fills the topic,
//! then every consumer sends RDY at once and FINs each message (one write per read's worth of
//! messages), until it has them all or the time is up. Without a fill (`--prefill 0`) the
//! consumers read what the topic already holds for `--seconds`, as bench_reader does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{json, Map, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::Barrier;

use crate::conn::{self, Conn, Target};
use crate::publish::{self, Body, Load};
use crate::window::{self, Watched};
use crate::{wire, Error};

#[derive(Clone, Debug, clap::Args)]
pub struct Fanout {
    #[arg(long, default_value = "fanout")]
    pub topic: String,
    /// Channels (ch0, ch1, ...).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Connections per channel (only without a fill: the fill is counted per channel).
    #[arg(long, default_value_t = 1)]
    pub connections_per_channel: usize,
    /// Messages published into the topic before the consumers start (0: none).
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// nsqd's plain TCP address for the fill.
    #[arg(long)]
    pub publish_addr: Option<SocketAddr>,
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// What the fill's message bodies hold.
    #[arg(long, value_enum, default_value = "repeated")]
    pub body: Body,
    #[arg(long, default_value_t = 2500)]
    pub rdy: u32,
}

async fn consume(
    mut conn: Conn,
    rdy: u32,
    quota: Option<u64>,
    start: Arc<Barrier>,
    deadline: tokio::time::Instant,
) -> Result<u64, Error> {
    start.wait().await;
    let mut out = BytesMut::new();
    wire::ready(&mut out, rdy);
    conn::send(&mut conn.io, &out.split()).await?;
    let mut received = 0u64;
    while quota.is_none_or(|q| received < q) {
        while let Some(frame) = wire::take_frame(&mut conn.buf)? {
            if frame.kind == wire::FRAME_ERROR {
                return Err(String::from_utf8_lossy(&frame.data).into_owned().into());
            } else if frame.is_heartbeat() {
                wire::nop(&mut out);
            } else if let Some(id) = frame.message_id() {
                wire::finish(&mut out, id);
                received += 1;
            }
        }
        if !out.is_empty() {
            conn::send(&mut conn.io, &out.split()).await?;
        }
        if quota.is_some_and(|q| received >= q) {
            break;
        }
        match tokio::time::timeout_at(deadline, conn.io.read_buf(&mut conn.buf)).await {
            Ok(Ok(0)) => return Err("connection closed by the target".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => break,
        }
    }
    Ok(received)
}

async fn subscribe(target: &Target, topic: &str, channel: &str) -> Result<Conn, Error> {
    let mut conn = conn::connect(target, None).await?;
    let mut out = BytesMut::new();
    wire::subscribe(&mut out, topic, channel);
    conn::send(&mut conn.io, &out).await?;
    conn.read_frame().await?;
    Ok(conn)
}

/// Publishes `count` messages of `size` bytes to `topic` straight to nsqd at `addr` (plain
/// TCP, MPUBs of 100): the fill of a fan-out run, and `nsqgate-bench fill`.
pub async fn fill(
    addr: SocketAddr,
    topic: &str,
    count: u64,
    size: usize,
    body: Body,
) -> Result<(), Error> {
    let publisher = Target::plain(addr);
    let batch = 100u64;
    let load = Load {
        topic: topic.into(),
        connections: 1,
        depth: 1,
        size,
        batch: batch as usize,
        body,
    };
    let full = publish::commands(&load);
    let mut conn = conn::connect(&publisher, None).await?;
    let (mut left, mut next) = (count, 0usize);
    while left > 0 {
        // Eight MPUBs per write: the fill is set-up, not measured.
        let (mut out, mut owed) = (BytesMut::new(), 0);
        while left > 0 && owed < 8 {
            let n = left.min(batch);
            if n == batch {
                out.extend_from_slice(&full[next % full.len()]);
                next += 1;
            } else {
                out.extend_from_slice(&publish::command(&Load {
                    batch: n as usize,
                    ..load.clone()
                }));
            }
            left -= n;
            owed += 1;
        }
        conn::send(&mut conn.io, &out).await?;
        for _ in 0..owed {
            conn.read_frame().await?;
        }
    }
    Ok(())
}

pub async fn fanout(
    target: Arc<Target>,
    fanout: &Fanout,
    seconds: Duration,
    watched: &[Watched],
) -> Result<Map<String, Value>, Error> {
    let per_channel = if fanout.prefill > 0 {
        1
    } else {
        fanout.connections_per_channel
    };
    let mut conns = vec![];
    for channel in 0..fanout.channels {
        for _ in 0..per_channel {
            conns.push(subscribe(&target, &fanout.topic, &format!("ch{channel}")).await?);
        }
    }
    if fanout.prefill > 0 {
        let addr = fanout
            .publish_addr
            .ok_or("--prefill needs --publish-addr")?;
        fill(
            addr,
            &fanout.topic,
            fanout.prefill,
            fanout.size,
            fanout.body,
        )
        .await?;
    }
    let quota = (fanout.prefill > 0).then_some(fanout.prefill);
    let start = Arc::new(Barrier::new(conns.len() + 1));
    let deadline = tokio::time::Instant::now() + seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for conn in conns {
        tasks.spawn(consume(conn, fanout.rdy, quota, start.clone(), deadline));
    }
    let first = window::snapshot(watched)?;
    let wire_start = target.wire.total();
    // Markers for bench/profile, which starts and stops its profilers on them.
    eprintln!("nsqgate-bench: window start");
    start.wait().await;
    let mut received = 0;
    while let Some(done) = tasks.join_next().await {
        received += done??;
    }
    let last = window::snapshot(watched)?;
    eprintln!("nsqgate-bench: window end");
    let wire = target.wire.total() - wire_start;
    let mut out = window::report(watched, &first, &last);
    out.insert("messages".into(), json!(received));
    let rate = received as f64 / window::elapsed(&first, &last).as_secs_f64();
    out.insert("msgs_per_s".into(), json!(rate));
    window::insert_wire(&mut out, wire, received);
    Ok(out)
}
