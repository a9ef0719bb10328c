//! Guarded registration: nsqd's registrations with nsqlookupd (TCP protocol V1) carried over
//! mutual TLS and checked against what each nsqd may announce. Two roles of the one binary:
//! the sidecar beside each nsqd, the guard in front of nsqlookupd (`[registry.*]`).
//!
//! - [`wire`]: the V1 codec, bounded (sans-io).
//! - [`rules`]: what one nsqd identity may announce and register (pure).
//! - [`stream`]: the bounded read loops over a socket.
//! - [`sidecar`], [`guard`]: the two roles and their listeners.

pub mod guard;
pub mod rules;
pub mod sidecar;
pub mod stream;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::info;

use crate::config::registry::RegistryConfig;
use crate::config::Timeouts;
use crate::metrics::Metrics;
use crate::net::accept::{self, Admission, BindError, OnShutdown};
use crate::tls::TlsError;

use guard::Guard;
use sidecar::Sidecar;
use wire::Command;

/// What both roles share.
pub struct Roles {
    pub timeouts: Timeouts,
    pub metrics: Arc<Metrics>,
}

/// Why a role could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryStartError {
    #[error("registry: {0}")]
    Tls(#[from] TlsError),
    #[error("registry: {0}")]
    Bind(#[from] BindError),
    #[error("registry: metrics: {0}")]
    Metrics(prometheus::Error),
}

/// The bound addresses of the roles that run, for the ready file.
#[derive(Clone, Debug, Default)]
pub struct Bound {
    pub sidecar: Option<SocketAddr>,
    pub guard: Option<SocketAddr>,
}

/// Binds the configured roles and serves them until `shutdown` turns true (open relays are
/// cut then: nsqd reconnects and registers again on its own).
pub async fn spawn(
    config: &RegistryConfig,
    roles: Arc<Roles>,
    admission: Admission,
    shutdown: watch::Receiver<bool>,
) -> Result<Bound, RegistryStartError> {
    let mut bound = Bound::default();
    if let Some(settings) = &config.sidecar {
        let sidecar = Arc::new(Sidecar::new(settings.clone(), roles.clone())?);
        let sockets = accept::bind_per_worker(settings.listen, &admission.workers)?;
        let address = sockets.local_addr();
        let counts = roles
            .metrics
            .listener("registry_sidecar", &address.to_string());
        info!(%address, guard = %settings.guard_address, "registry sidecar listening");
        tokio::spawn(accept::serve(
            sockets,
            admission.clone(),
            shutdown.clone(),
            OnShutdown::Cut,
            ("registry_sidecar", counts),
            move |tcp, peer, permit| {
                let sidecar = sidecar.clone();
                async move {
                    sidecar.serve(tcp, peer).await;
                    drop(permit);
                }
            },
        ));
        bound.sidecar = Some(address);
    }
    if let Some(settings) = &config.guard {
        let guard = Arc::new(Guard::new(settings.clone(), roles.clone())?);
        let sockets = accept::bind_per_worker(settings.listen, &admission.workers)?;
        let address = sockets.local_addr();
        let counts = roles
            .metrics
            .listener("registry_guard", &address.to_string());
        info!(%address, nsqlookupd = %settings.nsqlookupd_tcp_address, nsqd = settings.grants.len(), "registry guard listening");
        tokio::spawn(accept::serve(
            sockets,
            admission,
            shutdown,
            OnShutdown::Cut,
            ("registry_guard", counts),
            move |tcp, peer, permit| {
                let guard = guard.clone();
                async move {
                    guard.serve(tcp, peer).await;
                    drop(permit);
                }
            },
        ));
        bound.guard = Some(address);
    }
    Ok(bound)
}

/// Builds each configured role's TLS set-up, as a start would (for `check-config`).
pub fn check(config: &RegistryConfig, timeouts: Timeouts) -> Result<(), RegistryStartError> {
    let roles = Arc::new(Roles {
        timeouts,
        metrics: Metrics::new().map_err(RegistryStartError::Metrics)?,
    });
    if let Some(settings) = &config.sidecar {
        Sidecar::new(settings.clone(), roles.clone())?;
    }
    if let Some(settings) = &config.guard {
        Guard::new(settings.clone(), roles)?;
    }
    Ok(())
}

/// A command's metric label.
pub(crate) fn command_label(command: &Command) -> &'static str {
    match command {
        Command::Identify { .. } => "IDENTIFY",
        Command::Register { .. } => "REGISTER",
        Command::Unregister { .. } => "UNREGISTER",
        Command::Ping => "PING",
    }
}
