//! The accept loop of an operators' listener (the admin listener, the auth service): few
//! callers, trusted networks, so no shared connection caps; instead a fixed number of
//! connections at once (the next waits in the kernel's queue) and a lifetime per connection,
//! so a stuck peer cannot hold a slot for ever.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info};

use crate::metrics::ListenerCounts;

/// How long an accept failure (out of file descriptors, usually) pauses the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How many connections an operators' listener serves at once, and for how long each.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub connections: usize,
    pub lifetime: Duration,
}

/// Accepts on `tcp` until `shutdown` turns true, each connection as its own task under
/// `bounds`; `name` says which listener in the log, `counts` are its metrics.
pub async fn serve<F, Fut>(
    tcp: TcpListener,
    name: &'static str,
    counts: &ListenerCounts,
    bounds: Bounds,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(bounds.connections));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = shutdown.changed() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        counts.accepted();
        let open = counts.opened();
        let served = tokio::time::timeout(bounds.lifetime, handle(stream, peer));
        tokio::spawn(async move {
            let _held = (open, slot);
            let _ = served.await;
        });
    }
    info!(listener = name, "stopped");
}
