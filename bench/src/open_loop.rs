//! Publishing, open loop, for latency: PUBs are sent at a fixed offered rate whatever the target
//! does, and each latency runs from the message's *intended* send time to its OK, into an HDR
//! histogram, so a stall shows as the latency of every message it delayed (no coordinated
//! omission). A thread with nanosleep keeps the schedule (tokio's timer ticks in milliseconds);
//! when it wakes late it hands over every message now due, each with its own intended time.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::conn::{self, Stream, Target};
use crate::publish::{self, Load};
use crate::window::{self, Watched};
use crate::{wire, Error};

/// How long replies still owed at the end are waited for; each then counts at its age.
const DRAIN: Duration = Duration::from_secs(10);

fn ticker(senders: Vec<UnboundedSender<Instant>>, rate: f64, start: Instant, end: Instant) {
    let period = Duration::from_secs_f64(1.0 / rate);
    for k in 0u64.. {
        let intended = start + period.mul_f64(k as f64);
        if intended >= end {
            return;
        }
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        if senders[k as usize % senders.len()].send(intended).is_err() {
            return;
        }
    }
}

async fn writer(
    mut io: WriteHalf<Box<dyn Stream>>,
    command: BytesMut,
    mut due: UnboundedReceiver<Instant>,
    sent: UnboundedSender<Instant>,
) -> Result<(), Error> {
    let mut out = BytesMut::new();
    while let Some(first) = due.recv().await {
        let mut next = Some(first);
        while let Some(intended) = next {
            out.extend_from_slice(&command);
            sent.send(intended)?;
            next = due.try_recv().ok();
        }
        conn::send(&mut io, &out.split()).await?;
    }
    Ok(())
}

struct Latencies {
    histogram: Histogram<u64>,
    unanswered: u64,
    /// With `--timeline`: (intended send time, latency) of every measured message.
    timeline: Option<Vec<(Instant, u64)>>,
}

async fn reader(
    mut io: ReadHalf<Box<dyn Stream>>,
    mut buf: BytesMut,
    mut sent: UnboundedReceiver<Instant>,
    measure_from: Instant,
    drain_until: tokio::time::Instant,
    timeline: bool,
) -> Result<Latencies, Error> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut unanswered = 0;
    let mut timeline = timeline.then(Vec::new);
    let mut record = |intended: Instant, histogram: &mut Histogram<u64>| {
        if intended >= measure_from {
            let micros = intended.elapsed().as_micros() as u64;
            histogram.saturating_record(micros);
            if let Some(timeline) = &mut timeline {
                timeline.push((intended, micros));
            }
        }
    };
    'owed: while let Some(intended) = sent.recv().await {
        loop {
            match wire::take_frame(&mut buf)? {
                Some(frame) if frame.is_heartbeat() => continue, // runs end before nsqd minds
                Some(frame) if frame.kind == wire::FRAME_ERROR => {
                    return Err(String::from_utf8_lossy(&frame.data).into_owned().into())
                }
                Some(_) => break,
                None => {}
            }
            match tokio::time::timeout_at(drain_until, io.read_buf(&mut buf)).await {
                Ok(Ok(0)) => return Err("connection closed by the target".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    record(intended, &mut histogram);
                    unanswered += 1;
                    continue 'owed;
                }
            }
        }
        record(intended, &mut histogram);
    }
    Ok(Latencies {
        histogram,
        unanswered,
        timeline,
    })
}

pub async fn open_loop(
    target: Arc<Target>,
    load: &Load,
    rate: f64,
    warmup: Duration,
    seconds: Duration,
    watched: &[Watched],
    timeline: Option<&Path>,
) -> Result<Map<String, Value>, Error> {
    let conns = publish::connect_all(&target, load.connections).await?;
    let command = publish::command(load);
    let start = Instant::now() + Duration::from_millis(10);
    let (measure_from, end) = (start + warmup, start + warmup + seconds);
    let drain_until = tokio::time::Instant::from_std(end + DRAIN);
    let (mut senders, mut readers, mut writers) = (vec![], vec![], vec![]);
    for conn in conns {
        let (read, write) = tokio::io::split(conn.io);
        let (due_tx, due_rx) = unbounded_channel();
        let (sent_tx, sent_rx) = unbounded_channel();
        senders.push(due_tx);
        writers.push(tokio::spawn(writer(
            write,
            command.clone(),
            due_rx,
            sent_tx,
        )));
        let buf = conn.buf;
        readers.push(tokio::spawn(reader(
            read,
            buf,
            sent_rx,
            measure_from,
            drain_until,
            timeline.is_some(),
        )));
    }
    let schedule = std::thread::spawn(move || ticker(senders, rate, start, end));
    tokio::time::sleep_until(measure_from.into()).await;
    let first = window::snapshot(watched)?;
    // The same markers as the closed loop's: a profiler can count a fixed offered load.
    eprintln!("nsqgate-bench: window start");
    tokio::time::sleep_until(end.into()).await;
    let last = window::snapshot(watched)?;
    eprintln!("nsqgate-bench: window end");
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut unanswered = 0;
    let mut rows = Vec::new();
    for (connection, reader) in readers.into_iter().enumerate() {
        let latencies = reader.await??;
        histogram.add(&latencies.histogram)?;
        unanswered += latencies.unanswered;
        for (intended, micros) in latencies.timeline.unwrap_or_default() {
            rows.push((intended.duration_since(measure_from), micros, connection));
        }
    }
    if let Some(path) = timeline {
        write_timeline(path, measure_from, rows)?;
    }
    for writer in writers {
        writer.await??;
    }
    schedule
        .join()
        .map_err(|_| "the schedule thread panicked")?;
    let mut out = window::report(watched, &first, &last);
    let messages = histogram.len();
    out.insert("messages".into(), json!(messages));
    out.insert("offered_per_s".into(), json!(rate));
    out.insert(
        "msgs_per_s".into(),
        json!(messages as f64 / seconds.as_secs_f64()),
    );
    out.insert("unanswered".into(), json!(unanswered));
    for (key, q) in [("p50_us", 0.5), ("p99_us", 0.99), ("p999_us", 0.999)] {
        out.insert(key.into(), json!(histogram.value_at_quantile(q)));
    }
    out.insert("max_us".into(), json!(histogram.max()));
    Ok(out)
}

/// One line per measured message, in intended order: when it was due (µs into the measured
/// window), its latency (µs) and its connection, to see which messages a stall hit.
/// The first line gives the window's start as std prints an `Instant` (CLOCK_MONOTONIC on
/// Linux, the clock `perf record -k mono` stamps events with), to line stalls up with a trace.
fn write_timeline(
    path: &Path,
    measure_from: Instant,
    mut rows: Vec<(Duration, u64, usize)>,
) -> Result<(), Error> {
    rows.sort_unstable();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "# window start: {measure_from:?}")?;
    writeln!(out, "intended_us,latency_us,connection")?;
    for (at, micros, connection) in rows {
        writeln!(out, "{},{micros},{connection}", at.as_micros())?;
    }
    out.flush()?;
    Ok(())
}
