//! The admin listener's TLS set-up (`[admin] tls_cert`, `tls_key`, `tls_client_ca`): its own
//! certificate, and client certificates from its own CA when one is configured. Built whole
//! from the files, at start and on each reload. Reads PEM files; no sockets here.

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use super::{load_certs, load_key, root_store, TlsError};
use crate::config::admin::AdminTls;

/// The admin listener's server configuration; the certificate must match the key and the
/// client CA (when set) must parse.
pub fn admin_config(settings: &AdminTls) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&settings.cert)?;
    let key = load_key(&settings.key)?;
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let roots = root_store(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Ca {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(certs, key)?))
}
