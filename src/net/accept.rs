//! The accept loops every connection listener runs (NSQ listeners, HTTPS fronts, plain HTTP,
//! registration roles): a connection is admitted under the shared connection caps or closed at
//! once, each admitted connection runs as its own task, and shutdown stops accepting, then
//! drains or cuts what is open.
//!
//! Each of the [`Workers`] accepts its own connections: a listener is one socket per worker,
//! all bound to the same address with `SO_REUSEPORT`, and the worker that owns a socket accepts
//! on it and runs what it accepts on its own event loop. A connection is registered with one
//! event loop once and wakes no other thread, from accept to close (a listener on the main
//! runtime registered each socket twice and woke the main thread at the hand-off and again when
//! the connection ended: docs/perf-profile.md, "Accepting on each worker").
//!
//! The kernel picks the socket, so the worker, by a hash of the connection's addresses and
//! ports, not in turn: many connections spread evenly, a few may not (three connections land on
//! three different workers of three only 2 times in 9).
//!
//! `SO_REUSEPORT` also lets a new nsqgate bind the addresses of one still running (an upgrade):
//! the kernel spreads new connections over both until the old one, on SIGTERM, closes its
//! listeners and drains. Only a process of the same user can join (Linux keeps a port's reuse
//! group to one user). Connections the kernel had already queued on a closing socket are
//! accepted and served first, not reset.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::limit::conn::{ConnLimits, ConnPermit};
use crate::metrics::ListenerCounts;
use crate::net::workers::Workers;

/// How long an accept failure (out of file descriptors, usually) pauses a worker's loop.
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

/// One listening address: a socket per worker, all on the same port (see the module comment).
pub struct Listeners {
    address: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// The address bound, with the port the kernel chose when asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

/// Accepts on `listeners` until `shutdown` turns true, each worker on its own socket. Each
/// connection the caps admit is handed to `handle` with its permit and runs as its own task on
/// the worker that accepted it; one over a cap is closed at once, with no handshake, no buffer,
/// nothing held. `kind` names the listener in the log; `counts` are its accepted and open
/// connections in the metrics. Returns once every connection has ended or was cut off.
pub async fn serve<F, Fut>(
    listeners: Listeners,
    admission: Admission,
    shutdown: watch::Receiver<bool>,
    on_shutdown: OnShutdown,
    (kind, counts): (&'static str, ListenerCounts),
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, ConnPermit) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    let mut loops = Vec::with_capacity(listeners.sockets.len());
    for (worker, socket) in listeners.sockets.into_iter().enumerate() {
        let admit = Admit {
            conns: admission.conns.clone(),
            kind,
            counts: counts.clone(),
            handle: handle.clone(),
        };
        let accepting = accept_until(socket, admit, shutdown.clone());
        loops.push(admission.workers.spawn_on(worker, accepting));
    }
    // Every socket is closed before the log says so: a client connecting after this line is
    // refused, not queued on a socket one worker has yet to close.
    let mut open = Vec::with_capacity(loops.len());
    for accepting in loops {
        // A loop ends without its set only when its worker stopped, which ended its tasks.
        if let Ok(set) = accepting.await {
            open.push(set);
        }
    }
    if let OnShutdown::Drain(deadline) = on_shutdown {
        info!(
            listener = kind,
            open = still_open(&open),
            "stopped accepting; draining connections"
        );
        let drained = tokio::time::timeout(deadline, async {
            for set in &mut open {
                while set.join_next().await.is_some() {}
            }
        })
        .await;
        if drained.is_err() {
            info!(
                listener = kind,
                open = still_open(&open),
                "drain deadline passed; closing the rest"
            );
        }
    } else {
        info!(
            listener = kind,
            open = still_open(&open),
            "listener stopped"
        );
    }
    for mut set in open {
        set.shutdown().await;
    }
}

/// How many connections the workers' sets hold.
fn still_open(sets: &[JoinSet<()>]) -> usize {
    sets.iter().map(JoinSet::len).sum()
}

/// What one worker's loop needs to admit and run a connection.
struct Admit<F> {
    conns: Arc<ConnLimits>,
    kind: &'static str,
    counts: ListenerCounts,
    handle: Arc<F>,
}

impl<F, Fut> Admit<F>
where
    F: Fn(TcpStream, SocketAddr, ConnPermit) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Runs `tcp` as a task in `open` (on this worker), or closes it when over a cap.
    fn admit(&self, open: &mut JoinSet<()>, tcp: TcpStream, peer: SocketAddr) {
        self.counts.accepted();
        let Ok(permit) = self.conns.admit() else {
            return drop(tcp);
        };
        let counted = self.counts.opened();
        let handle = self.handle.clone();
        open.spawn(async move {
            handle(tcp, peer, permit).await;
            drop(counted);
        });
    }
}

/// One worker's loop, run on that worker: accepts on `socket` until `shutdown` turns true,
/// then closes it and returns the connections still open.
async fn accept_until<F, Fut>(
    socket: std::net::TcpListener,
    admit: Admit<F>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinSet<()>
where
    F: Fn(TcpStream, SocketAddr, ConnPermit) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let kind = admit.kind;
    let mut open = JoinSet::new();
    // Registered here, with this worker's event loop, as is every connection it accepts.
    let listener = match TcpListener::from_std(socket) {
        Ok(listener) => listener,
        Err(e) => {
            warn!(listener = kind, error = %e, "cannot accept on this worker");
            return open;
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => admit.admit(&mut open, tcp, peer),
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
        admit.admit(&mut open, tcp, peer);
    }
    open
}

/// Closes `listener`, returning the connections the kernel had queued on it (accepted with
/// direct calls until none is left, so none is missed for want of a readiness event).
fn take_queued(listener: TcpListener, kind: &str) -> Vec<(TcpStream, SocketAddr)> {
    let mut queued = Vec::new();
    let Ok(listener) = listener.into_std() else {
        return queued;
    };
    while let Ok((tcp, peer)) = listener.accept() {
        match tcp
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(tcp))
        {
            Ok(tcp) => queued.push((tcp, peer)),
            Err(e) => warn!(listener = kind, error = %e, "queued connection lost"),
        }
    }
    queued
}

/// Most connections the kernel queues for one socket before nsqgate accepts them.
const BACKLOG: i32 = 1024;

/// Binds `address` once per worker (see the module comment). With port 0, the first socket
/// takes the port the kernel chooses and the others bind that port, so the address returned
/// is every socket's; the error names the address asked for.
pub fn bind_per_worker(address: SocketAddr, workers: &Workers) -> Result<Listeners, BindError> {
    let first = listen(address).map_err(|source| BindError { address, source })?;
    let bound = first
        .local_addr()
        .map_err(|source| BindError { address, source })?;
    let mut sockets = vec![first];
    for _ in 1..workers.count() {
        sockets.push(listen(bound).map_err(|source| BindError { address, source })?);
    }
    Ok(Listeners {
        address: bound,
        sockets,
    })
}

/// Binds `address` once, for a listener that runs on the caller's runtime (the admin listener
/// and the auth service); the error names the address.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    listen(address)
        .and_then(TcpListener::from_std)
        .map_err(|source| BindError { address, source })
}

/// A non-blocking socket listening on `address` with `SO_REUSEADDR` and `SO_REUSEPORT`.
fn listen(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A listening address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

#[cfg(test)]
mod tests;
