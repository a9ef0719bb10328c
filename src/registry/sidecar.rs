//! The registration sidecar, beside nsqd: nsqd's `--lookupd-tcp-address` points at its
//! loopback listener; for each connection it opens a mutual-TLS connection to the guard
//! (verifying the guard's certificate and name, presenting its own) and relays the V1
//! protocol command by command, each answered before the next is read, as nsqd expects.
//! Lengths are bounded here too, so nothing unbounded leaves or enters nsqd's host.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::crypto::ring;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use super::stream::{Framed, RelayError};
use super::wire::{self, WireLimits};
use super::Roles;
use crate::config::registry::SidecarConfig;
use crate::tls::{self, TlsError};

const ROLE: &str = "sidecar";

/// What every sidecar connection shares.
pub struct Sidecar {
    config: SidecarConfig,
    connector: TlsConnector,
    roles: Arc<Roles>,
}

impl Sidecar {
    /// Only a guard whose certificate chains to `tls_ca` and carries `tls_server_name` is
    /// spoken to; this sidecar's own certificate goes with every connection.
    pub fn new(config: SidecarConfig, roles: Arc<Roles>) -> Result<Sidecar, TlsError> {
        let client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
            .with_root_certificates(tls::root_store(&config.ca)?)
            .with_client_auth_cert(tls::load_certs(&config.cert)?, tls::load_key(&config.key)?)?;
        Ok(Sidecar {
            connector: TlsConnector::from(Arc::new(client)),
            config,
            roles,
        })
    }

    /// One nsqd connection: relayed until either side closes.
    pub async fn serve(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let mut nsqd = Framed::new(tcp);
        match self.relay(&mut nsqd).await {
            Ok(()) => debug!(%peer, "registry sidecar: nsqd closed"),
            Err(e) => {
                let reason = match &e {
                    RelayError::Wire(_) => "protocol",
                    RelayError::Timeout(_) => "timeout",
                    RelayError::Io(_) | RelayError::Truncated(_) => "guard_unavailable",
                };
                self.roles.metrics.registry_refused(ROLE, reason);
                warn!(%peer, guard = %self.config.guard_address, error = %e, "registry sidecar: relay ended");
                if let RelayError::Wire(e) = &e {
                    let text = format!("{} {e}", e.code());
                    nsqd.answer_and_close(text.as_bytes(), self.roles.timeouts.write)
                        .await;
                }
            }
        }
    }

    async fn relay(&self, nsqd: &mut Framed<TcpStream>) -> Result<(), RelayError> {
        let timeouts = self.roles.timeouts;
        let limits = WireLimits::default();
        nsqd.read_magic(timeouts.identify).await?;
        let mut guard = Framed::new(self.connect_guard().await?);
        guard.write(wire::MAGIC_V1, timeouts.write).await?;
        let mut out = BytesMut::new();
        while let Some(command) = nsqd.read_command(&limits, timeouts.idle).await? {
            out.clear();
            wire::encode_command(&command, &mut out);
            guard.write(&out, timeouts.write).await?;
            let answer = guard
                .read_response(limits.max_response_size, timeouts.upstream_connect)
                .await?;
            self.roles
                .metrics
                .registry_relayed(ROLE, super::command_label(&command));
            out.clear();
            wire::encode_response(&answer, &mut out);
            nsqd.write(&out, timeouts.write).await?;
        }
        Ok(())
    }

    async fn connect_guard(
        &self,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, RelayError> {
        let timeouts = self.roles.timeouts;
        let address = &self.config.guard_address;
        let tcp = tokio::time::timeout(timeouts.upstream_connect, TcpStream::connect(address))
            .await
            .map_err(|_| RelayError::Timeout("connection to the guard"))??;
        let _ = tcp.set_nodelay(true);
        let name = self.config.server_name.clone();
        let tls = tokio::time::timeout(timeouts.tls_handshake, self.connector.connect(name, tcp))
            .await
            .map_err(|_| RelayError::Timeout("TLS handshake with the guard"))??;
        Ok(tls)
    }
}
