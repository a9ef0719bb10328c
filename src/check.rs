//! `nsqgate check-config`: everything a start loads, loaded and checked without binding a
//! listener (the config itself is loaded by the caller): the policy folder, every TLS
//! certificate with its key (each pair must match; the admin listener's too), the CAs and CRLs, the JWT keys; and with
//! `--probe`, a verified handshake with each nsqd the config names and the JWKS fetch, as the
//! first client after a start would make them. Reads files; connects only when probing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::jwt::{JwtConfigError, JwtVerifier};
use crate::config::Config;
use crate::policy::{Policy, PolicyError};
use crate::proxy::identify::{ClientIdentify, Metadata};
use crate::proxy::upstream::Connector;
use crate::shared::Shared;
use crate::tls::{LiveTls, TlsError};

/// What a start would refuse, found without starting.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("JWT keys rejected: {0}")]
    Jwt(#[from] JwtConfigError),
    #[error("Redis: {0}")]
    Redis(#[from] crate::cluster::connect::ConnectError),
}

/// Loads the policy folder, both legs' and the admin listener's TLS set-ups, the Redis TLS
/// files and the JWT keys as a start would. The
/// policy is returned for its warnings and for [`probe`].
pub fn load_everything(config: &Config) -> Result<Policy, CheckError> {
    let policy = Policy::load_dir(&config.auth.policy_dir)?;
    LiveTls::load(
        &config.client,
        config.upstream.tls.as_ref(),
        config.admin.as_ref().and_then(|admin| admin.tls.as_ref()),
    )?;
    if let Some(cluster) = &config.cluster {
        crate::cluster::connect::servers(cluster)?;
    }
    // Keys that only a JWKS fetch brings are checked by `probe`.
    if let Some(settings) = &config.auth.jwt {
        if !settings.keys.is_empty() || settings.jwks.is_some() {
            JwtVerifier::new(settings)?;
        }
    }
    Ok(policy)
}

/// One probe: what was reached and how it went.
pub struct Probed {
    pub what: String,
    pub outcome: Result<(), String>,
}

/// Connects to `[upstream]`'s nsqd and each node's with nsqgate's own IDENTIFY and the
/// verified TLS upgrade (and AUTH when nsqd asks), then closes; makes the verified handshake
/// with nsqd's HTTPS port behind `[http.nsqd]`; fetches the JWKS when `jwks_url` is set. Each
/// within `timeouts.upstream_connect`.
pub async fn probe(config: Config, policy: Policy) -> Vec<Probed> {
    let mut probed = Vec::new();
    let mut config = config;
    if let Some(source) = &config.auth.jwks_source {
        let what = format!("JWKS {}", source.url);
        let outcome = crate::auth::jwks::load_initial(&mut config)
            .await
            .map_err(|e| e.to_string());
        probed.push(Probed { what, outcome });
    }
    let config = Arc::new(config);
    let (_keep, policy) = watch::channel(Arc::new(policy));
    let shared = match Shared::new(config.clone(), policy) {
        Ok(shared) => shared,
        Err(e) => {
            probed.push(Probed {
                what: "nsqgate's set-up".into(),
                outcome: Err(e.to_string()),
            });
            return probed;
        }
    };
    let upstreams =
        std::iter::once(&config.upstream).chain(config.nodes.iter().map(|n| &n.upstream));
    for upstream in upstreams {
        let connector = Connector::for_nsqd(&shared, upstream);
        let identify = ClientIdentify::default().upstream(
            shared.upstream_tls(),
            &Metadata::own("nsqgate-check-config"),
            false,
        );
        let deadline = config.timeouts.upstream_connect + Duration::from_millis(100);
        let outcome = match tokio::time::timeout(deadline, connector.connect(identify)).await {
            Ok(Ok(_connected)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        };
        let verified = match &upstream.tls {
            Some(tls) => format!(" (TLS verified as {:?})", tls.server_name.to_str()),
            None => " (no TLS: upstream.tls = false)".into(),
        };
        probed.push(Probed {
            what: format!("nsqd {}{verified}", upstream.nsqd_tcp_address),
            outcome,
        });
    }
    if let Some(front) = config.http.as_ref().and_then(|h| h.nsqd.as_ref()) {
        if let Some(to_nsqd) = front
            .upstream_tls
            .then(|| shared.tls_to_upstream())
            .flatten()
        {
            let deadline = config.timeouts.upstream_connect;
            let handshake = async {
                let tcp = tokio::net::TcpStream::connect(&front.upstream).await?;
                to_nsqd
                    .connector()
                    .connect(to_nsqd.server_name(), tcp)
                    .await
            };
            let outcome = match tokio::time::timeout(deadline, handshake).await {
                Ok(Ok(_tls)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".into()),
            };
            probed.push(Probed {
                what: format!("nsqd HTTPS {} (TLS verified)", front.upstream),
                outcome,
            });
        }
    }
    probed
}
