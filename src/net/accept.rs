//! The accept loop every listener runs (NSQ listeners, HTTPS fronts, plain HTTP): a connection
//! is admitted under the shared connection caps or closed at once, each admitted connection
//! runs as its own task, and shutdown stops accepting, then drains or cuts what is open.
//!
//! Listeners are bound with `SO_REUSEPORT`, so a new nsqgate can bind the addresses of one
//! still running (an upgrade): the kernel spreads new connections over both until the old
//! one, on SIGTERM, closes its listeners and drains. Only a process of the same user can
//! join (Linux keeps a port's reuse group to one user). Connections the kernel had already
//! queued on a closing listener are accepted and served first, not reset.
//!
//! Each admitted connection runs on one of the [`Workers`], registered with that worker's own
//! event loop, and stays there.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::limit::conn::{ConnLimits, ConnPermit};
use crate::metrics::ListenerCounts;
use crate::net::workers::Workers;

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

/// What admits a listener's connections and where they run.
#[derive(Clone)]
pub struct Admission {
    /// The open-connection caps shared by every listener.
    pub conns: Arc<ConnLimits>,
    pub workers: Arc<Workers>,
}

/// Accepts on `listener` until `shutdown` turns true. Each connection the caps admit is handed
/// to `handle` with its permit and runs as its own task on a worker; one over a cap is closed
/// at once, with no handshake, no buffer, nothing held. `kind` names the listener in the log;
/// `counts` are its accepted and open connections in the metrics.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    admission: Admission,
    mut shutdown: watch::Receiver<bool>,
    on_shutdown: OnShutdown,
    (kind, counts): (&'static str, ListenerCounts),
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, ConnPermit) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    let mut open = JoinSet::new();
    let admit = |open: &mut JoinSet<()>, tcp: std::net::TcpStream, peer: SocketAddr| {
        counts.accepted();
        let Ok(permit) = admission.conns.admit() else {
            return drop(tcp);
        };
        let counted = counts.opened();
        let handle = handle.clone();
        admission.workers.spawn_in(open, async move {
            // Registered here, on the worker, so its events wake the worker's thread alone.
            match TcpStream::from_std(tcp) {
                Ok(tcp) => handle(tcp, peer, permit).await,
                Err(e) => warn!(listener = kind, error = %e, "accepted connection lost"),
            }
            drop(counted);
        });
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => match tcp.into_std() {
                    Ok(tcp) => admit(&mut open, tcp, peer),
                    Err(e) => warn!(listener = kind, error = %e, "accepted connection lost"),
                },
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
    // What it had already queued is taken first: closing would reset those connections.
    for (tcp, peer) in take_queued(listener, kind) {
        admit(&mut open, tcp, peer);
    }
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

/// Closes `listener`, returning the connections the kernel had queued on it (accepted with
/// direct calls until none is left, so none is missed for want of a readiness event).
fn take_queued(listener: TcpListener, kind: &str) -> Vec<(std::net::TcpStream, SocketAddr)> {
    let mut queued = Vec::new();
    let Ok(listener) = listener.into_std() else {
        return queued;
    };
    while let Ok((tcp, peer)) = listener.accept() {
        match tcp.set_nonblocking(true) {
            Ok(()) => queued.push((tcp, peer)),
            Err(e) => warn!(listener = kind, error = %e, "queued connection lost"),
        }
    }
    queued
}

/// Most connections the kernel queues for one listener before nsqgate accepts them.
const BACKLOG: u32 = 1024;

/// Binds `address` with `SO_REUSEADDR` and `SO_REUSEPORT` (see the module comment); the error
/// names the address.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(address)?;
        socket.listen(BACKLOG)
    };
    listen().map_err(|source| BindError { address, source })
}

/// A listening address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}
