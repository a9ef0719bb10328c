//! One request at a time, repeated: each worker runs its operation again as soon as the last
//! one is answered (closed loop, one deep, as nsqd talks to nsqlookupd and to its auth
//! server). Counts and latencies (HDR, microseconds) are taken over the measured window only.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::window::{self, Watched};
use crate::Error;

/// One worker's repeated request. State (an open connection) lives in the implementor.
pub trait Operation: Send + 'static {
    fn once(&mut self) -> impl Future<Output = Result<(), Error>> + Send;
}

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

fn histogram() -> Result<Histogram<u64>, Error> {
    Ok(Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?)
}

async fn work<O: Operation>(
    mut op: O,
    phase: Arc<AtomicU8>,
) -> Result<(Histogram<u64>, u64), Error> {
    let mut latencies = histogram()?;
    let mut done = 0u64;
    while phase.load(Ordering::Relaxed) != STOPPED {
        let started = Instant::now();
        op.once().await?;
        if phase.load(Ordering::Relaxed) == MEASURING {
            latencies.record((started.elapsed().as_micros() as u64).max(1))?;
            done += 1;
        }
    }
    Ok((latencies, done))
}

/// Runs every operation in its own task for `warmup`, then measures `seconds`; returns the
/// report's fields: `operations`, `ops_per_s`, latency percentiles and CPU per watched process.
pub async fn repeat<O: Operation>(
    ops: Vec<O>,
    warmup: Duration,
    seconds: Duration,
    watched: &[Watched],
) -> Result<Map<String, Value>, Error> {
    let phase = Arc::new(AtomicU8::new(WARMING));
    let mut tasks = tokio::task::JoinSet::new();
    for op in ops {
        tasks.spawn(work(op, phase.clone()));
    }
    tokio::time::sleep(warmup).await;
    let start = window::snapshot(watched)?;
    phase.store(MEASURING, Ordering::Relaxed);
    // Markers for bench/profile, which starts and stops its profilers on them.
    eprintln!("nsqgate-bench: window start");
    tokio::time::sleep(seconds).await;
    phase.store(STOPPED, Ordering::Relaxed);
    let end = window::snapshot(watched)?;
    eprintln!("nsqgate-bench: window end");
    let mut latencies = histogram()?;
    let mut done = 0;
    while let Some(worker) = tasks.join_next().await {
        let (worker_latencies, worker_done) = worker??;
        latencies.add(&worker_latencies)?;
        done += worker_done;
    }
    let mut out = window::report(watched, &start, &end);
    out.insert("operations".into(), json!(done));
    let rate = done as f64 / window::elapsed(&start, &end).as_secs_f64();
    out.insert("ops_per_s".into(), json!(rate));
    for (key, q) in [("p50_us", 0.5), ("p99_us", 0.99), ("p999_us", 0.999)] {
        out.insert(key.into(), json!(latencies.value_at_quantile(q)));
    }
    out.insert("max_us".into(), json!(latencies.max()));
    Ok(out)
}
