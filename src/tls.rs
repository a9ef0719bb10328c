//! rustls configurations for both legs: the server side that clients connect to, and the
//! verifying client side nsqgate uses toward nsqd, and the client-certificate verifier whose CRLs
//! are re-read on reload ([`ClientCerts`]); the admin listener's own set-up; and the set-ups in
//! force, swapped whole on reload ([`LiveTls`]). Reads PEM files; no sockets here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{ClientCertMode, ClientConfig as ClientLegConfig, TlsVersion, UpstreamTls};

mod admin;
mod client_certs;
mod live;

pub use admin::admin_config;
pub use client_certs::ClientCerts;
pub use live::{LiveTls, ToNsqd};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: no PEM certificate could be read: {reason}", path.display())]
    Certificates { path: PathBuf, reason: String },
    #[error("{}: no PEM private key could be read: {reason}", path.display())]
    PrivateKey { path: PathBuf, reason: String },
    #[error("{}: CA certificate rejected: {reason}", path.display())]
    Ca { path: PathBuf, reason: String },
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ALPN-free server configuration for the client leg.
pub fn server_config(client: &ClientLegConfig) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(server_tls(client)?.config)
}

/// The client leg's server configuration and, when client certificates are on, its verifier
/// (whose CRLs can be re-read while the configuration is in use).
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub client_certs: Option<Arc<ClientCerts>>,
}

pub fn server_tls(client: &ClientLegConfig) -> Result<ServerTls, TlsError> {
    let certs = load_certs(&client.tls_cert)?;
    let key = load_key(&client.tls_key)?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(protocol_versions(client.tls_min_version))?;
    let (builder, client_certs) = match (&client.tls_client_ca, client.client_cert) {
        (Some(ca), ClientCertMode::Optional | ClientCertMode::Required) => {
            let verifier = Arc::new(ClientCerts::load(
                ca,
                root_store(ca)?,
                &client.tls_client_crls,
                client.client_cert == ClientCertMode::Optional,
                provider,
            )?);
            (
                builder.with_client_cert_verifier(verifier.clone()),
                Some(verifier),
            )
        }
        _ => (builder.with_no_client_auth(), None),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    // One resumption ticket per connection, as nsqd (Go's TLS) sends: a client resumes its
    // next connection with it and gets a new one there. rustls's default of two cost each new
    // connection three more random draws (system calls), a sealed record and a cache entry.
    config.send_tls13_tickets = 1;
    Ok(ServerTls {
        config: Arc::new(config),
        client_certs,
    })
}

/// The upstream client configuration: only nsqd certificates that chain to `tls.ca` pass;
/// the server name is checked by the caller handing `tls.server_name` to the connector.
pub fn upstream_config(tls: &UpstreamTls) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(&tls.ca)?;
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_root_certificates(roots);
    let config = match &tls.client_cert {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// TLS 1.2 stays available by default: go-nsq caps itself at 1.2 once any `tls_*` option is
/// set, and pynsq asks for exactly 1.2.
const ONLY_TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn protocol_versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        TlsVersion::V1_2 => rustls::ALL_VERSIONS,
        TlsVersion::V1_3 => ONLY_TLS13,
    }
}

pub fn root_store(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: ca.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

pub(crate) fn load_crl(path: &Path) -> Result<CertificateRevocationListDer<'static>, TlsError> {
    CertificateRevocationListDer::from_pem_file(path).map_err(|e| TlsError::Ca {
        path: path.to_owned(),
        reason: format!("not a PEM CRL: {}", pem_reason(&e)),
    })
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::Certificates {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(fail("the file holds no CERTIFICATE block".into()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::PrivateKey {
        path: path.to_owned(),
        reason: pem_reason(&e),
    })
}

/// A PEM error as text: the markers it names as text, not as byte lists.
fn pem_reason(error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { end_marker } => format!(
            "no end line {:?}: the file is cut short",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {:?}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    }
}
