//! Connections rather than messages: the rate of complete connection set-ups (TCP, TLS,
//! IDENTIFY, AUTH, one PUB, close), and the memory each idle authenticated connection holds.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

use crate::conn::{self, Conn, Target};
use crate::window::{self, Watched};
use crate::{wire, Error};

async fn one_connection(target: &Target, pub_frame: &[u8]) -> Result<(), Error> {
    let mut conn = conn::connect(target, None).await?;
    conn::send(&mut conn.io, pub_frame).await?;
    conn.read_frame().await?;
    conn.io.shutdown().await?;
    Ok(())
}

/// `workers` loops of connect + PUB + close; counts the set-ups completed in the window.
pub async fn connect_rate(
    target: Arc<Target>,
    workers: usize,
    warmup: Duration,
    seconds: Duration,
    watched: &[Watched],
) -> Result<Map<String, Value>, Error> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut pub_frame = BytesMut::new();
    wire::publish(&mut pub_frame, "bench_connect", &[b'x'; 100]);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (target, done, stop) = (target.clone(), done.clone(), stop.clone());
        let pub_frame = pub_frame.clone();
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                one_connection(&target, &pub_frame).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), Error>(())
        });
    }
    tokio::time::sleep(warmup).await;
    let (first, start) = (done.load(Ordering::Relaxed), window::snapshot(watched)?);
    // Markers for bench/profile, which starts and stops its profilers on them.
    eprintln!("nsqgate-bench: window start");
    tokio::time::sleep(seconds).await;
    let (last, end) = (done.load(Ordering::Relaxed), window::snapshot(watched)?);
    eprintln!("nsqgate-bench: window end");
    stop.store(true, Ordering::Relaxed);
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let mut out = window::report(watched, &start, &end);
    let count = last - first;
    out.insert("messages".into(), json!(count));
    out.insert("connections".into(), json!(count));
    let rate = count as f64 / window::elapsed(&start, &end).as_secs_f64();
    out.insert("msgs_per_s".into(), json!(rate));
    out.insert("handshakes_per_s".into(), json!(rate));
    Ok(out)
}

fn rss_kib(pid: &str) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("short VmRSS")?
        .parse()?)
}

/// Holds one connection open, answering heartbeats, until the run ends.
async fn hold(mut conn: Conn) {
    while conn.read_frame().await.is_ok() {}
}

fn source(index: usize, sources: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (index % sources) as u8))
}

/// Opens idle authenticated connections up to each step (from several 127.0.0.x sources),
/// reading every watched process's RSS at each; the slope is per connection between the
/// first and the last step.
pub async fn idle(
    target: Arc<Target>,
    steps: &[usize],
    sources: usize,
    watched: &[Watched],
) -> Result<Map<String, Value>, Error> {
    let mut held = tokio::task::JoinSet::new();
    let mut opened = 0;
    let mut readings: Vec<(usize, Vec<u64>)> = vec![];
    let settle = Duration::from_secs(1);
    for &step in steps {
        while opened < step {
            let batch = (step - opened).min(64);
            let mut opening = tokio::task::JoinSet::new();
            for i in opened..opened + batch {
                let target = target.clone();
                let from = source(i, sources.max(1));
                opening.spawn(async move { conn::connect(&target, Some(from)).await });
            }
            while let Some(conn) = opening.join_next().await {
                held.spawn(hold(conn??));
            }
            opened += batch;
        }
        tokio::time::sleep(settle).await;
        let rss: Result<Vec<u64>, Error> = watched.iter().map(|w| rss_kib(&w.pid)).collect();
        readings.push((opened, rss?));
    }
    let mut out = Map::new();
    if let (Some((n0, first)), Some((n1, last))) = (readings.first(), readings.last()) {
        let mut slope = Map::new();
        for (i, w) in watched.iter().enumerate() {
            let kib = (last[i] as f64 - first[i] as f64) / (n1 - n0).max(1) as f64;
            slope.insert(w.name.clone(), json!(kib));
        }
        out.insert("rss_kib_per_conn".into(), Value::Object(slope));
    }
    let steps: Vec<Value> = readings
        .iter()
        .map(|(n, rss)| json!({"connections": n, "rss_kib": rss}))
        .collect();
    out.insert("steps".into(), Value::Array(steps));
    out.insert(
        "sockstat".into(),
        json!(std::fs::read_to_string("/proc/net/sockstat")?),
    );
    held.abort_all();
    Ok(out)
}
