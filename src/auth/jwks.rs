//! Fetching an issuer's JWKS over verified HTTPS, once at start and then in the background.
//! A refresh applies every usable entry (the verifier skips and counts the others), so a key
//! the issuer removed is gone after the next refresh. A failed refresh keeps the last good set
//! (and says so in the log) until it is older than `jwks_max_stale_secs`; then it fails closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{error, info, warn};

use crate::auth::jwt::LiveJwt;
use crate::config::JwksSource;

/// A JWKS document larger than this is not a key set.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// One fetch, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("{0}: {1}")]
    Tls(String, String),
    #[error("cannot reach {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{0} did not answer within {FETCH_TIMEOUT:?}")]
    Timeout(String),
}

/// Fills `[auth.jwt]`'s JWKS from `jwks_url` when one is configured (once, at start).
pub async fn load_initial(config: &mut crate::config::Config) -> Result<(), JwksError> {
    if let (Some(source), Some(settings)) = (&config.auth.jwks_source, config.auth.jwt.as_mut()) {
        settings.jwks = Some(fetch(source).await?);
    }
    Ok(())
}

/// GETs the document, verifying the server against `source.ca` and the URL's host.
pub async fn fetch(source: &JwksSource) -> Result<Vec<u8>, JwksError> {
    let url = source.url.to_string();
    tokio::time::timeout(FETCH_TIMEOUT, get(source))
        .await
        .map_err(|_| JwksError::Timeout(url))?
}

async fn get(source: &JwksSource) -> Result<Vec<u8>, JwksError> {
    let url = source.url.to_string();
    let host = source.url.host().unwrap_or_default().to_owned();
    let port = source.url.port_u16().unwrap_or(443);
    let roots = crate::tls::root_store(&source.ca)
        .map_err(|e| JwksError::Tls(url.clone(), e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| JwksError::Tls(url.clone(), e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| JwksError::Tls(url.clone(), e.to_string()))?;
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| JwksError::Connect(url.clone(), e))?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| JwksError::Tls(url.clone(), e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| JwksError::Http(e.to_string()))?;
    tokio::spawn(connection);
    let path = source
        .url
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| JwksError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| JwksError::Http(e.to_string()))?;
    if response.status() != http::StatusCode::OK {
        return Err(JwksError::Status {
            url,
            status: response.status().as_u16(),
        });
    }
    let body = Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| JwksError::Http(e.to_string()))?;
    Ok(body.to_bytes().to_vec())
}

/// Re-fetches every `source.refresh`; a usable document replaces the JWKS keys of the verifier
/// in force (unusable entries skipped; a reloaded verifier shares the set). A failure is counted and logged; once the set in force is older
/// than `jwks_max_stale_secs`, its keys verify nothing and the log says so at error level.
pub async fn refresh_forever(source: JwksSource, live: Arc<LiveJwt>) {
    loop {
        tokio::time::sleep(source.refresh).await;
        let Some(verifier) = Option::clone(&live.load()) else {
            continue;
        };
        let outcome = match fetch(&source).await {
            Ok(document) => verifier
                .replace_jwks(&document)
                .map_err(|e| format!("unusable document: {e}")),
            Err(e) => Err(e.to_string()),
        };
        let reason = match outcome {
            Ok(0) => {
                info!(url = %source.url, "JWKS refreshed");
                continue;
            }
            Ok(skipped) => {
                warn!(url = %source.url, skipped, "JWKS refreshed; unusable entries skipped");
                continue;
            }
            Err(reason) => reason,
        };
        let max_stale_secs = verifier.jwks_max_stale().map_or(0, |d| d.as_secs());
        match verifier.jwks_refresh_failed() {
            Some(age) => error!(
                url = %source.url,
                %reason,
                age_secs = age.as_secs(),
                max_stale_secs,
                "JWKS refresh failed and the key set is older than jwks_max_stale_secs: \
                 tokens signed by its keys are refused until a refresh succeeds"
            ),
            None => warn!(
                url = %source.url,
                %reason,
                max_stale_secs,
                "JWKS refresh failed; the last good keys stay in force until jwks_max_stale_secs"
            ),
        }
    }
}
