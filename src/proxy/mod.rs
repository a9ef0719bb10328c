//! The NSQ TCP listener and its sessions. All network I/O of the TCP path lives below here.

pub mod guard;
pub mod identify;
pub mod learn;
pub mod quarantine;
pub mod relay;
pub mod session;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::info;

use crate::http::upstream::{HttpUpstream, PoolBounds, UpstreamSettings};
use crate::net::accept::{self, Admission, Listeners, OnShutdown};
use crate::net::workers::Workers;
use crate::shared::Shared;
use upstream::{Destination, UpstreamError};

/// One NSQ listener: the process-wide core, plus where this listener's clients go and what it
/// learned about that nsqd. Every session of the listener shares it.
pub struct Listener {
    pub shared: Arc<Shared>,
    /// Where this listener's clients go: `[upstream]`, a `[[nodes]]` entry, or the pool.
    pub destination: Destination,
    /// nsqd's reply to an IDENTIFY that asks for nothing and the ranges it applies, learned
    /// once: nsqgate answers in nsqd's place a client that has no nsqd connection yet. Each
    /// listener learns its own: another nsqd may be configured differently.
    learned: tokio::sync::OnceCell<learn::Learned>,
    /// nsqd's HTTP API (from `[http.nsqd]`), asked for IDENTIFY ranges; known for `[upstream]`
    /// only.
    nsqd_http: Option<Arc<HttpUpstream>>,
    /// What nsqd records about each connection (its /stats), unless the client's is forwarded.
    pub own_metadata: identify::Metadata,
}

// === impl Listener ===

impl Listener {
    pub fn new(
        shared: Arc<Shared>,
        destination: Destination,
        nsqd_http: Option<Arc<HttpUpstream>>,
    ) -> Listener {
        Listener {
            shared,
            destination,
            learned: tokio::sync::OnceCell::new(),
            nsqd_http,
            own_metadata: identify::Metadata::own(&own_hostname()),
        }
    }

    /// What nsqd does with IDENTIFY: its reply to a probe (over a verified connection that is
    /// closed right after) and the ranges it applies, learned once and remembered.
    pub async fn learned(&self) -> Result<&learn::Learned, UpstreamError> {
        self.learned
            .get_or_try_init(|| async {
                let probe = identify::ClientIdentify::default().upstream(
                    self.shared.upstream_tls(),
                    &self.own_metadata,
                    false,
                );
                let routed = self.destination.connect(probe).await?;
                let reply = routed.upstream.identify_reply;
                let told = learn::ask(self.nsqd_http.as_deref()).await;
                let options = &self.shared.config().upstream.nsqd_options;
                let ranges = learn::ranges(&reply, &told, options);
                info!(
                    upstream = self.destination.address(),
                    ?ranges,
                    "learned nsqd's IDENTIFY ranges"
                );
                Ok(learn::Learned { reply, ranges })
            })
            .await
    }
}

/// nsqd's HTTP API as the `[http.nsqd]` front reaches it, if that front is configured.
pub fn nsqd_http(shared: &Shared) -> Option<Arc<HttpUpstream>> {
    let config = shared.config();
    let front = config.http.as_ref().and_then(|h| h.nsqd.as_ref())?;
    let tls = if front.upstream_tls {
        shared.tls_to_upstream()
    } else {
        None
    };
    let timeout = config.timeouts.upstream_connect;
    let http = config.http.as_ref()?;
    Some(Arc::new(HttpUpstream::new(UpstreamSettings {
        address: front.upstream.clone(),
        tls,
        connect_timeout: timeout,
        response_timeout: timeout,
        bounds: PoolBounds::of(http),
        opened: shared
            .metrics
            .http
            .upstream_connections_opened
            .with_label_values(&["nsqd"]),
    })))
}

/// Serves NSQ clients on `tcp` until `shutdown` turns true, then lets open sessions hand the
/// client every reply nsqd still owes, up to the shutdown deadline.
pub async fn serve(
    listener: Arc<Listener>,
    sockets: Listeners,
    workers: Arc<Workers>,
    shutdown: watch::Receiver<bool>,
) {
    let address = sockets.local_addr().to_string();
    info!(%address, upstream = listener.destination.address(), "listening for NSQ clients");
    let admission = Admission {
        conns: listener.shared.conns.clone(),
        workers,
    };
    let counts = listener.shared.metrics.listener("nsq", &address);
    let drain = OnShutdown::Drain(listener.shared.config().timeouts.shutdown);
    let sessions = shutdown.clone();
    let session = move |tcp: TcpStream, peer: SocketAddr, permit| {
        session::serve(listener.clone(), tcp, peer, permit, sessions.clone())
    };
    accept::serve(
        sockets,
        admission,
        shutdown,
        drain,
        ("nsq", counts),
        session,
    )
    .await;
}

/// The host nsqgate runs on, as nsqd's /stats should show it.
fn own_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "nsqgate".to_owned())
}

/// Completes once shutdown is asked for; never, if nobody can ask any more.
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}
