//! Publishing, closed loop: every connection keeps `depth` PUBs (or MPUBs of `batch`
//! messages) in flight and refills once half the window is acknowledged, so each write carries
//! many commands as a pipelining producer's would. Capacity, not latency: see open_loop.rs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use crate::conn::{self, Conn, Target};
use crate::window::{self, Watched};
use crate::Error;

#[derive(Clone, Debug, clap::Args)]
pub struct Load {
    /// Topic to publish to.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Connections.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Commands in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Messages per command: 1 sends PUB, more sends MPUB.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

/// One command's bytes (PUB or MPUB) and the messages it carries.
pub fn command(load: &Load) -> BytesMut {
    let body = vec![b'x'; load.size];
    let mut out = BytesMut::new();
    if load.batch > 1 {
        crate::wire::multi_publish(&mut out, &load.topic, &body, load.batch);
    } else {
        crate::wire::publish(&mut out, &load.topic, &body);
    }
    out
}

pub async fn connect_all(target: &Arc<Target>, count: usize) -> Result<Vec<Conn>, Error> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let target = target.clone();
        tasks.spawn(async move { conn::connect(&target, None).await });
    }
    let mut conns = Vec::with_capacity(count);
    while let Some(conn) = tasks.join_next().await {
        conns.push(conn??);
    }
    Ok(conns)
}

async fn pump(
    mut conn: Conn,
    command: BytesMut,
    depth: usize,
    per_ack: u64,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<(), Error> {
    let mut in_flight = 0usize;
    let mut batch = BytesMut::new();
    loop {
        let sending = !stop.load(Ordering::Relaxed) && in_flight <= depth / 2;
        while sending && in_flight < depth {
            batch.extend_from_slice(&command);
            in_flight += 1;
        }
        if !batch.is_empty() {
            conn::send(&mut conn.io, &batch.split()).await?;
        }
        if in_flight == 0 {
            return Ok(());
        }
        conn.read_frame().await?;
        acked.fetch_add(per_ack, Ordering::Relaxed);
        in_flight -= 1;
    }
}

/// Runs `warmup`, then measures `seconds`; returns the report's fields.
pub async fn closed_loop(
    target: Arc<Target>,
    load: &Load,
    warmup: Duration,
    seconds: Duration,
    watched: &[Watched],
) -> Result<Map<String, Value>, Error> {
    let conns = connect_all(&target, load.connections).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let command = command(load);
    let mut tasks = tokio::task::JoinSet::new();
    for conn in conns {
        let per_ack = load.batch.max(1) as u64;
        let (acked, stop) = (acked.clone(), stop.clone());
        tasks.spawn(pump(
            conn,
            command.clone(),
            load.depth,
            per_ack,
            acked,
            stop,
        ));
    }
    tokio::time::sleep(warmup).await;
    let (first, start) = (acked.load(Ordering::Relaxed), window::snapshot(watched)?);
    // Markers for bench/profile, which starts and stops its profilers on them.
    eprintln!("nsqgate-bench: window start");
    tokio::time::sleep(seconds).await;
    let (last, end) = (acked.load(Ordering::Relaxed), window::snapshot(watched)?);
    eprintln!("nsqgate-bench: window end");
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let mut out = window::report(watched, &start, &end);
    let messages = last - first;
    out.insert("messages".into(), json!(messages));
    let rate = messages as f64 / window::elapsed(&start, &end).as_secs_f64();
    out.insert("msgs_per_s".into(), json!(rate));
    Ok(out)
}
