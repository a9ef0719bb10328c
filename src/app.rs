//! Wires a loaded configuration to its listeners and runs them until shutdown; keeps the
//! policy current by re-reading its folder when a file in it changes (or on SIGHUP).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tracing::{error, info};

use crate::config::Config;
use crate::policy::{Policy, PolicyError};
use crate::proxy::upstream::{Pool, Route};
use crate::proxy::{Gateway, Listener, StartError};

/// Binds every listener of `config` and serves until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), StartError> {
    let policy = load_policy(&config.auth.policy_dir, 1).map_err(StartError::Policy)?;
    info!(
        files = policy.files().len(),
        dir = %config.auth.policy_dir.display(),
        "policy loaded"
    );
    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    tokio::spawn(watch_policy(
        config.auth.policy_dir.clone(),
        config.auth.policy_reload,
        policy_tx,
    ));
    let mut config = config;
    // Fail closed at start: without the issuer's keys no token could be checked.
    crate::jwks::load_initial(&mut config)
        .await
        .map_err(|e| StartError::Jwt(format!("initial JWKS fetch failed: {e}")))?;
    let gateway = Arc::new(Gateway::new(Arc::new(config), policy_rx)?);
    if let (Some(source), Some(verifier)) = (&gateway.config.auth.jwks_source, &gateway.jwt) {
        tokio::spawn(crate::jwks::refresh_forever(
            source.clone(),
            verifier.clone(),
        ));
    }
    tokio::spawn(gateway.rates.clone().evict_forever());
    let conns = gateway.conns.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            conns.evict_idle();
        }
    });
    // The HTTP fronts share the gateway's policy, JWT verifier and TLS set-up.
    crate::http::spawn(gateway.clone(), shutdown.clone()).await?;
    // One listener per route: [upstream], each [[nodes]] entry, and the producer pool.
    let mut routes = vec![(gateway.config.client.listen, gateway.clone())];
    let mut members = vec![gateway.connector(&gateway.config.upstream)?];
    for node in &gateway.config.nodes {
        let connector = gateway.connector(&node.upstream)?;
        members.push(connector.clone());
        routes.push((
            node.listen,
            Arc::new(gateway.with_route(Route::Node(connector))),
        ));
    }
    if let Some(pool) = &gateway.config.producer_pool {
        let members = Pool::new(members);
        tokio::spawn(members.clone().check_health_forever(pool.health_check));
        routes.push((
            pool.listen,
            Arc::new(gateway.with_route(Route::Pool(members))),
        ));
    }
    let mut listeners = tokio::task::JoinSet::new();
    for (address, gateway) in routes {
        let listener = Listener::bind(gateway, address).await?;
        listeners.spawn(listener.run(shutdown.clone()));
    }
    while listeners.join_next().await.is_some() {}
    Ok(())
}

pub fn load_policy(dir: &Path, version: u64) -> Result<Policy, PolicyError> {
    Ok(Policy::load_dir(dir)?.with_version(version))
}

/// Polls the policy folder; a changed, valid policy replaces the live one. An invalid one is
/// refused loudly and the last good policy stays in force.
async fn watch_policy(
    dir: PathBuf,
    every: std::time::Duration,
    policy: watch::Sender<Arc<Policy>>,
) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = fingerprint(&dir);
    let mut version = 1;
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            Some(_) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = fingerprint(&dir);
        if now == seen && !forced {
            continue;
        }
        seen = now;
        match load_policy(&dir, version + 1) {
            Ok(next) => {
                version += 1;
                info!(version, "policy reloaded");
                if policy.send(Arc::new(next)).is_err() {
                    return;
                }
            }
            Err(e) => {
                error!(error = %e, "policy change refused; the previous policy stays in force")
            }
        }
    }
}

/// Names, sizes and modification times of the folder's files: cheap change detection.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            Some((entry.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}
