//! The accept loop every listener runs (NSQ listeners, HTTPS fronts, plain HTTP): a connection
//! is admitted under the shared connection caps or closed at once, each admitted connection
//! runs as its own task, and shutdown stops accepting, then drains or cuts what is open.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::limit::conn::{ConnLimits, ConnPermit};
use crate::metrics::ListenerCounts;

/// How long an accept failure (out of file descriptors, usually) pauses the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What happens to open connections once `shutdown` turns true.
#[derive(Clone, Copy, Debug)]
pub enum OnShutdown {
    /// They may finish within this deadline; whatever is still open then is cut off.
    Drain(Duration),
    /// They are cut off at once.
    Cut,
}

/// Accepts on `listener` until `shutdown` turns true. Each connection the caps admit is handed
/// to `handle` with its permit and runs as its own task; one over a cap is closed at once, with
/// no handshake, no buffer, nothing held. `kind` names the listener in the log; `counts` are
/// its accepted and open connections in the metrics.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    conns: Arc<ConnLimits>,
    mut shutdown: watch::Receiver<bool>,
    on_shutdown: OnShutdown,
    (kind, counts): (&'static str, ListenerCounts),
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr, ConnPermit) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut open = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    counts.accepted();
                    match conns.admit() {
                        Ok(permit) => {
                            let counted = counts.opened();
                            let connection = handle(tcp, peer, permit);
                            open.spawn(async move {
                                connection.await;
                                drop(counted);
                            });
                        }
                        Err(_) => drop(tcp),
                    }
                }
                Err(e) => {
                    // Back off instead of spinning on an error that persists.
                    warn!(listener = kind, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = open.join_next(), if !open.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    // Closed now, not when the drain ends: the kernel would otherwise keep completing
    // handshakes for clients nobody will serve, who would wait out the drain for nothing.
    drop(listener);
    if let OnShutdown::Drain(deadline) = on_shutdown {
        info!(
            listener = kind,
            open = open.len(),
            "stopped accepting; draining connections"
        );
        let drained = tokio::time::timeout(deadline, async {
            while open.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            info!(
                listener = kind,
                open = open.len(),
                "drain deadline passed; closing the rest"
            );
        }
    } else {
        info!(listener = kind, open = open.len(), "listener stopped");
    }
    open.shutdown().await;
}

/// Binds `address`; the error names the address.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| BindError { address, source })
}

/// A listening address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}
