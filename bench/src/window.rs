//! The measured window: CPU time of every watched process (utime + stime from /proc, all
//! threads, in USER_HZ ticks, which are 1/100 s on x86 Linux; and stime alone, the kernel's
//! share) and the machine's steal time, read at the window's start and end by the generator
//! itself so they match its counts.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::Error;

const TICKS_PER_SEC: f64 = 100.0;

/// A process to watch: a name for the report ("nsqd", "proxy") and its pid ("self" too).
#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub pid: String,
}

pub fn parse_watched(text: &str) -> Result<Watched, String> {
    let (name, pid) = text.split_once('=').ok_or("expected NAME=PID")?;
    Ok(Watched {
        name: name.into(),
        pid: pid.into(),
    })
}

/// utime and stime in ticks.
fn cpu_ticks(pid: &str) -> Result<(u64, u64), Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = stat.rsplit_once(')').ok_or("unreadable /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11).ok_or("short /proc stat")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("short /proc stat")?.parse()?;
    Ok((utime, stime))
}

fn steal_ticks() -> Result<u64, Error> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().ok_or("empty /proc/stat")?;
    Ok(cpu
        .split_whitespace()
        .nth(8)
        .ok_or("no steal in /proc/stat")?
        .parse()?)
}

pub struct Snapshot {
    at: Instant,
    /// (utime, stime) per process, this one first.
    cpu: Vec<(u64, u64)>,
    steal: u64,
}

pub fn snapshot(watched: &[Watched]) -> Result<Snapshot, Error> {
    let mut cpu = Vec::with_capacity(watched.len() + 1);
    cpu.push(cpu_ticks("self")?);
    for process in watched {
        cpu.push(cpu_ticks(&process.pid)?);
    }
    Ok(Snapshot {
        at: Instant::now(),
        cpu,
        steal: steal_ticks()?,
    })
}

/// CPU seconds per watched process ("loadgen" is this process), the kernel's part of them,
/// and steal over the window.
pub fn report(watched: &[Watched], start: &Snapshot, end: &Snapshot) -> Map<String, Value> {
    let (mut cpu, mut sys) = (Map::new(), Map::new());
    let names = std::iter::once("loadgen").chain(watched.iter().map(|w| w.name.as_str()));
    for (i, name) in names.enumerate() {
        let user = end.cpu[i].0.saturating_sub(start.cpu[i].0);
        let kernel = end.cpu[i].1.saturating_sub(start.cpu[i].1);
        cpu.insert(name.into(), json!((user + kernel) as f64 / TICKS_PER_SEC));
        sys.insert(name.into(), json!(kernel as f64 / TICKS_PER_SEC));
    }
    let mut out = Map::new();
    out.insert("seconds".into(), json!(elapsed(start, end).as_secs_f64()));
    out.insert("cpu_s".into(), Value::Object(cpu));
    out.insert("cpu_sys_s".into(), Value::Object(sys));
    let steal = end.steal.saturating_sub(start.steal) as f64 / TICKS_PER_SEC;
    out.insert("steal_s".into(), json!(steal));
    out
}

pub fn elapsed(start: &Snapshot, end: &Snapshot) -> Duration {
    end.at.duration_since(start.at)
}

/// Bytes on the load generator's sockets per message over the window (both directions).
pub fn insert_wire(out: &mut Map<String, Value>, bytes: u64, messages: u64) {
    if messages > 0 {
        out.insert(
            "wire_bytes_per_msg".into(),
            json!(bytes as f64 / messages as f64),
        );
    }
}
