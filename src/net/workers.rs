//! Connection workers: a few threads, each running its own single-threaded runtime, each
//! accepting connections on its own socket of every listener (`net::accept`) and running them.
//! A connection stays on the worker that accepted it for its whole life, so the events of its
//! two legs (client and nsqd) wake only that worker's thread.
//!
//! Why not one multi-threaded runtime: its work stealing wakes an idle thread whenever a task
//! becomes runnable, so a 1-deep producer cost a futex wake and 1.5 more context switches per
//! message, and a quarter more CPU (docs/perf-profile.md, "One event loop per worker"). Envoy
//! and nginx have the same shape: one event loop per core, each accepting its own connections.

use std::future::Future;
use std::num::NonZeroUsize;
use std::time::Duration;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a stopping worker waits for its blocking tasks (name lookups) before it exits.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The worker threads; dropping this stops them.
pub struct Workers {
    handles: Vec<Handle>,
    /// One per worker: sending (or dropping) it ends that worker's runtime.
    stops: Vec<oneshot::Sender<()>>,
}

/// The number of workers when the configuration does not say: the cores this process may use
/// (its CPU affinity and cgroup quota count).
pub fn default_count() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

impl Workers {
    /// Starts `count` worker threads, each with its own runtime (I/O and timers), and returns
    /// once every one runs (its name already set: `tests/workers.rs` finds them by it as soon
    /// as nsqgate reports its addresses).
    pub fn start(count: NonZeroUsize) -> std::io::Result<Workers> {
        let mut handles = Vec::with_capacity(count.get());
        let mut stops = Vec::with_capacity(count.get());
        let (running, started) = std::sync::mpsc::channel::<()>();
        for index in 0..count.get() {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            let running = running.clone();
            std::thread::Builder::new()
                .name(format!("nsqgate-w{index}"))
                .spawn(move || {
                    let _ = running.send(());
                    // The runtime runs its connections only while something blocks on it.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    runtime.shutdown_timeout(STOP_GRACE);
                })?;
        }
        drop(running);
        let workers = Workers { handles, stops };
        for _ in 0..count.get() {
            // An error only if a worker thread ended before it could say it runs.
            started.recv().map_err(std::io::Error::other)?;
        }
        Ok(workers)
    }

    /// Runs `task` on worker `index` (counted from 0, modulo the number of workers).
    pub fn spawn_on<F>(&self, index: usize, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handles.get(index % self.handles.len().max(1)) {
            Some(worker) => worker.spawn(task),
            // Unreachable (start makes at least one); the caller's runtime runs it then.
            None => tokio::spawn(task),
        }
    }

    /// How many workers run connections.
    pub fn count(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests;
