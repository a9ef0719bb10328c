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

#[cfg(test)]
mod tests;

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
    /// What each message body holds.
    #[arg(long, value_enum, default_value = "repeated")]
    pub body: Body,
}

/// A message body's content: what compression gets to work on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Body {
    /// One byte repeated (compresses to almost nothing).
    Repeated,
    /// JSON-like records with varying numbers (about 2-3x with snappy, as real events).
    Text,
}

/// Distinct text bodies a run cycles through: 256 KiB of 1 KiB bodies, more than DEFLATE's
/// 32 KiB window and a snappy block's 64 KiB, so no message is compressed against its own copy.
const TEXT_BODIES: usize = 256;

/// Body number `index` of `size` bytes of `kind`: the same for every run.
pub fn body(kind: Body, size: usize, index: usize) -> Vec<u8> {
    match kind {
        Body::Repeated => vec![b'x'; size],
        Body::Text => {
            let keys = [
                "\"user\":",
                "\"ts\":",
                "\"path\":\"/api/v",
                "\"ms\":",
                "\"ok\":",
            ];
            let mut out = Vec::with_capacity(size + 32);
            let mut seed = 0x2545_f491_u32 ^ (index as u32).wrapping_mul(0x9e37_79b9);
            while out.len() < size {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                out.extend_from_slice(keys[(seed >> 16) as usize % keys.len()].as_bytes());
                out.extend_from_slice((seed % 100_000).to_string().as_bytes());
                out.push(b',');
            }
            out.truncate(size);
            out
        }
    }
}

/// The commands (PUB, or MPUB of `batch`) a run cycles through: one for repeated bodies;
/// for text, enough that every body of a cycle differs.
pub fn commands(load: &Load) -> Vec<BytesMut> {
    let batch = load.batch.max(1);
    let count = match load.body {
        Body::Repeated => 1,
        Body::Text => (TEXT_BODIES / batch).max(1),
    };
    (0..count)
        .map(|k| {
            let bodies: Vec<Vec<u8>> = (0..batch)
                .map(|i| body(load.body, load.size, k * batch + i))
                .collect();
            let mut out = BytesMut::new();
            if batch > 1 {
                crate::wire::multi_publish(&mut out, &load.topic, &bodies);
            } else {
                crate::wire::publish(&mut out, &load.topic, &bodies[0]);
            }
            out
        })
        .collect()
}

/// The first of `commands`: for runs that send one command over and over.
pub fn command(load: &Load) -> BytesMut {
    commands(load).swap_remove(0)
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
    commands: Arc<Vec<BytesMut>>,
    depth: usize,
    per_ack: u64,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<(), Error> {
    let (mut in_flight, mut next) = (0usize, 0usize);
    let mut batch = BytesMut::new();
    loop {
        let sending = !stop.load(Ordering::Relaxed) && in_flight <= depth / 2;
        while sending && in_flight < depth {
            batch.extend_from_slice(&commands[next % commands.len()]);
            (in_flight, next) = (in_flight + 1, next + 1);
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
    let commands = Arc::new(commands(load));
    let mut tasks = tokio::task::JoinSet::new();
    for conn in conns {
        let per_ack = load.batch.max(1) as u64;
        let (acked, stop) = (acked.clone(), stop.clone());
        tasks.spawn(pump(
            conn,
            commands.clone(),
            load.depth,
            per_ack,
            acked,
            stop,
        ));
    }
    tokio::time::sleep(warmup).await;
    let (first, start) = (acked.load(Ordering::Relaxed), window::snapshot(watched)?);
    let wire_start = target.wire.total();
    // Markers for bench/profile, which starts and stops its profilers on them.
    eprintln!("nsqgate-bench: window start");
    tokio::time::sleep(seconds).await;
    let (last, end) = (acked.load(Ordering::Relaxed), window::snapshot(watched)?);
    let wire = target.wire.total() - wire_start;
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
    window::insert_wire(&mut out, wire, messages);
    Ok(out)
}
