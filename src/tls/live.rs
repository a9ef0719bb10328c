//! The TLS set-ups in force, each replaceable while connections use it: a handshake takes the
//! set-up in force when it starts, an established connection keeps the one it was made with.
//! A reload builds the whole set-up from its files first (certificate and key must match, CA
//! and CRLs must parse) and swaps it in only when that succeeded, so a broken file changes
//! nothing. Reads PEM files; no sockets here.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::admin::admin_config;
use super::{server_tls, upstream_config, ClientCerts, ServerTls, TlsError};
use crate::config::admin::AdminTls;
use crate::config::{ClientConfig as ClientLegConfig, UpstreamTls};
use crate::swap::Swap;

/// The client leg's set-up (NSQ listeners and HTTPS fronts), the one toward nsqd, and the
/// admin listener's.
pub struct LiveTls {
    server: Swap<ServerTls>,
    /// None when TLS toward nsqd is off, which only a restart changes.
    upstream: Option<Arc<Swap<rustls::ClientConfig>>>,
    /// None when the admin listener is off or plain HTTP (only a restart changes that).
    admin: Option<Swap<rustls::ServerConfig>>,
}

/// What a connection to nsqd verifies: the CA set-up in force at connect time, and the name
/// nsqd's certificate must carry.
#[derive(Clone)]
pub struct ToNsqd {
    config: Arc<Swap<rustls::ClientConfig>>,
    name: ServerName<'static>,
}

// === impl LiveTls ===

impl LiveTls {
    pub fn load(
        client: &ClientLegConfig,
        upstream: Option<&UpstreamTls>,
        admin: Option<&AdminTls>,
    ) -> Result<LiveTls, TlsError> {
        let server = server_tls(client)?;
        let upstream = match upstream {
            Some(settings) => Some(Arc::new(Swap::new(upstream_config(settings)?))),
            None => None,
        };
        let admin = match admin {
            Some(settings) => Some(Swap::new(admin_config(settings)?)),
            None => None,
        };
        Ok(LiveTls {
            server: Swap::new(Arc::new(server)),
            upstream,
            admin,
        })
    }

    /// The admin listener's acceptor for a handshake starting now; None when it is plain.
    pub fn admin_acceptor(&self) -> Option<TlsAcceptor> {
        Some(TlsAcceptor::from(self.admin.as_ref()?.load()))
    }

    /// The acceptor for a handshake starting now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config())
    }

    /// The client leg's configuration for a handshake starting now.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.load().config.clone()
    }

    /// The client-certificate verifier in force (CA and CRLs), when client certificates are on.
    pub fn client_certs(&self) -> Option<Arc<ClientCerts>> {
        self.server.load().client_certs.clone()
    }

    /// The set-up toward nsqd, checking its certificate for `name`; None when TLS is off.
    pub fn to_nsqd(&self, name: ServerName<'static>) -> Option<ToNsqd> {
        let config = self.upstream.clone()?;
        Some(ToNsqd { config, name })
    }

    /// Rebuilds the client leg's set-up from `client`'s files; on an error the set-up in
    /// force stays.
    pub fn reload_server(&self, client: &ClientLegConfig) -> Result<(), TlsError> {
        self.server.store(Arc::new(server_tls(client)?));
        Ok(())
    }

    /// Rebuilds the set-up toward nsqd (CA, client certificate) from `settings`' files; on
    /// an error the set-up in force stays. Nothing to do while TLS toward nsqd is off.
    pub fn reload_upstream(&self, settings: Option<&UpstreamTls>) -> Result<(), TlsError> {
        if let (Some(current), Some(settings)) = (&self.upstream, settings) {
            current.store(upstream_config(settings)?);
        }
        Ok(())
    }

    /// Rebuilds the admin listener's set-up (certificate, key, client CA) from `settings`'
    /// files; on an error the set-up in force stays. Nothing to do while it is plain HTTP.
    pub fn reload_admin(&self, settings: Option<&AdminTls>) -> Result<(), TlsError> {
        if let (Some(current), Some(settings)) = (&self.admin, settings) {
            current.store(admin_config(settings)?);
        }
        Ok(())
    }
}

// === impl ToNsqd ===

impl ToNsqd {
    /// A connector with the set-up in force now.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.config.load())
    }

    /// The set-up in force now; a reload replaces it with a new one (a new `Arc`).
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.load()
    }

    pub fn server_name(&self) -> ServerName<'static> {
        self.name.clone()
    }
}
