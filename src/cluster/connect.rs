//! Connection set-up: the Redis client a `[cluster]` section names, with its TLS files read
//! and checked. Used at start, by `check-config` and by `nsqgate revoke --config`, so the
//! three fail on the same bad file with the same words. Certificate checking is never off:
//! a Redis whose certificate does not chain to `tls_ca` (or the system's roots) is refused.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::cluster::{ClusterConfig, RedisTls};

/// Why the client for Redis could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cluster.{key}: cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cluster.{key}: {} holds no {what}", path.display())]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("cluster.{key}: {}: {reason}", path.display())]
    Unusable {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cluster.redis_url: {0}")]
    Url(redis::RedisError),
}

/// The client for `config`'s Redis: plain, or TLS with the configured CA and certificate.
pub fn client(config: &ClusterConfig) -> Result<redis::Client, ConnectError> {
    let url = config.redis_url.as_str();
    let Some(tls) = &config.tls else {
        return redis::Client::open(url).map_err(ConnectError::Url);
    };
    let certificates = certificates(tls)?;
    redis::Client::build_with_tls(url, certificates).map_err(ConnectError::Url)
}

/// Reads and checks the PEM files, so a wrong one is named here rather than at a handshake.
fn certificates(tls: &RedisTls) -> Result<redis::TlsCertificates, ConnectError> {
    let root_cert = match &tls.ca {
        Some(path) => {
            let pem = read("tls_ca", path)?;
            check_certificates("tls_ca", path, &pem)?;
            Some(pem)
        }
        None => None,
    };
    let client_tls = match &tls.client {
        Some((cert_path, key_path)) => {
            let client_cert = read("tls_cert", cert_path)?;
            check_certificates("tls_cert", cert_path, &client_cert)?;
            let client_key = read("tls_key", key_path)?;
            check_key(key_path, &client_key)?;
            Some(redis::ClientTlsConfig {
                client_cert,
                client_key,
            })
        }
        None => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

fn check_certificates(key: &'static str, path: &Path, pem: &[u8]) -> Result<(), ConnectError> {
    let unusable = |reason: String| ConnectError::Unusable {
        key,
        path: path.to_owned(),
        reason,
    };
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|e| unusable(format!("not a PEM certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(ConnectError::Empty {
            key,
            path: path.to_owned(),
            what: "PEM certificate",
        });
    }
    Ok(())
}

/// The key must be one the TLS provider nsqgate uses (ring) can sign with.
fn check_key(path: &Path, pem: &[u8]) -> Result<(), ConnectError> {
    let unusable = |reason: String| ConnectError::Unusable {
        key: "tls_key",
        path: path.to_owned(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| unusable(format!("no PEM private key: {e}")))?;
    rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| unusable(format!("not a usable private key: {e}")))?;
    Ok(())
}
