//! Wires a loaded configuration to its listeners and runs them until shutdown; the reloader
//! (`crate::reload`) keeps certificates, keys and the policy current.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::info;

use crate::auth::jwks::JwksError;
use crate::auth::jwt::JwtConfigError;
use crate::config::registry::RegistryOnly;
use crate::config::Config;
use crate::net::accept::{self, Admission, BindError};
use crate::net::workers::Workers;
use crate::policy::{Policy, PolicyError};
use crate::proxy::upstream::{Connector, Destination, Pool};
use crate::proxy::Listener;
use crate::registry::{Bound, Roles};
use crate::reload::Reloader;
use crate::shared::Shared;
use crate::tls::TlsError;

/// Why nsqgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("JWT keys rejected: {0}")]
    JwtKeys(#[from] JwtConfigError),
    /// Without the issuer's keys no token could be checked: nsqgate fails closed at start.
    #[error("JWT keys rejected: initial JWKS fetch failed: {0}")]
    Jwks(#[from] JwksError),
    #[error(transparent)]
    Bind(#[from] BindError),
    /// SIGHUP is how an operator asks for a reload: a process that cannot hear it says so at
    /// start instead of ignoring the signal.
    #[error("cannot listen for SIGHUP (policy and CRL reloads): {0}")]
    Hangup(std::io::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryStartError),
    #[error("cannot start the connection workers: {0}")]
    Workers(std::io::Error),
    #[error("cannot write the ready file {}: {source}", path.display())]
    ReadyFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Binds every listener of `config` and serves until `shutdown` turns true. Once all are
/// bound, their addresses are written to `ready_file` (when given).
pub async fn run(
    config: Config,
    shutdown: watch::Receiver<bool>,
    ready_file: Option<&Path>,
) -> Result<(), StartError> {
    let workers = start_workers(config.workers)?;
    let (shared, policy) = start_shared(config).await?;
    let shared = Arc::new(shared);
    let hangup = signal(SignalKind::hangup()).map_err(StartError::Hangup)?;
    tokio::spawn(Reloader::new(shared.clone(), policy, hangup).run());
    spawn_background(&shared);
    // The HTTP fronts share the core's policy, JWT verifier, limits and TLS set-up.
    let http = crate::http::spawn(shared.clone(), workers.clone(), shutdown.clone()).await?;
    let nsq = nsq_listeners(&shared);
    let admin = match &shared.config().admin {
        Some(config) => {
            let probed: Vec<Arc<Listener>> = nsq.iter().map(|(_, l)| l.clone()).collect();
            Some(crate::admin::spawn(shared.clone(), config, &probed, shutdown.clone()).await?)
        }
        None => None,
    };
    let auth_service = match &shared.config().auth_service {
        Some(config) => {
            Some(crate::authsvc::spawn(shared.clone(), config, shutdown.clone()).await?)
        }
        None => None,
    };
    let mut listeners = tokio::task::JoinSet::new();
    let mut bound = Vec::new();
    for (address, listener) in nsq {
        let sockets = accept::bind_per_worker(address, &workers)?;
        bound.push(sockets.local_addr());
        let serve = crate::proxy::serve(listener, sockets, workers.clone(), shutdown.clone());
        listeners.spawn(serve);
    }
    let registry = match &shared.config().registry {
        Some(config) => {
            let roles = Arc::new(Roles {
                timeouts: shared.config().timeouts,
                metrics: shared.metrics.clone(),
            });
            let admission = Admission {
                conns: shared.conns.clone(),
                workers: workers.clone(),
            };
            crate::registry::spawn(config, roles, admission, shutdown.clone()).await?
        }
        None => Bound::default(),
    };
    // The HTTP fronts were bound above (http::spawn) before any NSQ listener.
    if let Some(path) = ready_file {
        let operators = Operators {
            admin,
            auth_service,
        };
        write_ready_file(path, &bound, &http, operators, &registry).map_err(|source| {
            StartError::ReadyFile {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    while listeners.join_next().await.is_some() {}
    Ok(())
}

/// Runs only the registration roles of a file without `[client]` (see
/// `config::registry`) until `shutdown` turns true.
pub async fn run_registry_only(
    config: RegistryOnly,
    mut shutdown: watch::Receiver<bool>,
    ready_file: Option<&Path>,
) -> Result<(), StartError> {
    let roles = Arc::new(Roles {
        timeouts: config.timeouts,
        metrics: crate::metrics::Metrics::new()?,
    });
    let admission = Admission {
        conns: crate::limit::conn::ConnLimits::new(config.connections.clone()),
        workers: start_workers(config.workers)?,
    };
    let bound =
        crate::registry::spawn(&config.registry, roles, admission, shutdown.clone()).await?;
    if let Some(path) = ready_file {
        write_ready_file(path, &[], &[], Operators::default(), &bound).map_err(|source| {
            StartError::ReadyFile {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The policy and the issuer's keys, loaded (failing closed), and the core built over them,
/// with the sender of policy versions for the reloader.
async fn start_shared(
    mut config: Config,
) -> Result<(Shared, watch::Sender<Arc<Policy>>), StartError> {
    let policy = load_policy(&config.auth.policy_dir, 1)?;
    info!(
        files = policy.files().len(),
        dir = %config.auth.policy_dir.display(),
        "policy loaded"
    );
    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    // Fail closed at start: without the issuer's keys no token could be checked.
    crate::auth::jwks::load_initial(&mut config).await?;
    let shared = Shared::new(Arc::new(config), policy_rx)?;
    Ok((shared, policy_tx))
}

/// The threads connections run on (`[connections] workers`).
fn start_workers(count: std::num::NonZeroUsize) -> Result<Arc<Workers>, StartError> {
    let workers = Workers::start(count).map_err(StartError::Workers)?;
    info!(workers = workers.count(), "connection workers started");
    Ok(Arc::new(workers))
}

/// The core's housekeeping: JWKS refresh, idle rate buckets and connection counts evicted.
fn spawn_background(shared: &Shared) {
    if let Some(source) = &shared.config().auth.jwks_source {
        tokio::spawn(crate::auth::jwks::refresh_forever(
            source.clone(),
            shared.jwt.clone(),
        ));
    }
    tokio::spawn(shared.rates.clone().evict_forever());
    if let Some(cluster) = &shared.cluster {
        let feed = crate::cluster::feed::follow(cluster.clone(), shared.revocations.clone());
        tokio::spawn(feed);
    }
    if let Some(slots) = &shared.slots {
        tokio::spawn(slots.clone().renew_forever());
    }
    let conns = shared.conns.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            conns.evict_idle();
        }
    });
}

/// One NSQ listener per destination: `[upstream]`, each `[[nodes]]` entry, and the producer
/// pool (over all of them).
fn nsq_listeners(shared: &Arc<Shared>) -> Vec<(SocketAddr, Arc<Listener>)> {
    let config = shared.config();
    let first = Connector::for_nsqd(shared, &config.upstream);
    let nsqd_http = crate::proxy::nsqd_http(shared);
    let mut members = vec![first.clone()];
    let mut listeners = vec![(
        config.client.listen,
        Arc::new(Listener::new(
            shared.clone(),
            Destination::Node(first),
            nsqd_http,
        )),
    )];
    for node in &config.nodes {
        let connector = Connector::for_nsqd(shared, &node.upstream);
        members.push(connector.clone());
        // nsqgate knows no HTTP address for a node's nsqd: its ranges are nsqd_options or
        // nsqd's defaults.
        let listener = Listener::new(shared.clone(), Destination::Node(connector), None);
        listeners.push((node.listen, Arc::new(listener)));
    }
    if let Some(pool) = &config.producer_pool {
        let members = Pool::new(members);
        tokio::spawn(members.clone().check_health_forever(pool.health_check));
        let listener = Listener::new(shared.clone(), Destination::Pool(members), None);
        listeners.push((pool.listen, Arc::new(listener)));
    }
    listeners
}

/// The operators' listeners that are bound, for the ready file.
#[derive(Default)]
struct Operators {
    admin: Option<SocketAddr>,
    auth_service: Option<SocketAddr>,
}

/// Writes the bound addresses as JSON (`{"nsq": [ADDR, ...], "http": {FRONT: ADDR, ...},
/// "admin": ADDR, "auth_service": ADDR, "registry": {"sidecar": ADDR, "guard": ADDR}}`, the
/// last three only when they run), whole or not at all (a temporary file renamed into place),
/// so a reader that sees the file sees every address.
fn write_ready_file(
    path: &Path,
    nsq: &[SocketAddr],
    http: &[(String, SocketAddr)],
    operators: Operators,
    registry: &Bound,
) -> std::io::Result<()> {
    let nsq: Vec<String> = nsq.iter().map(ToString::to_string).collect();
    let http: serde_json::Map<String, serde_json::Value> = http
        .iter()
        .map(|(front, address)| (front.clone(), address.to_string().into()))
        .collect();
    let mut body = serde_json::json!({ "nsq": nsq, "http": http });
    if let Some(admin) = operators.admin {
        body["admin"] = admin.to_string().into();
    }
    if let Some(auth_service) = operators.auth_service {
        body["auth_service"] = auth_service.to_string().into();
    }
    let mut roles = serde_json::Map::new();
    for (role, address) in [("sidecar", registry.sidecar), ("guard", registry.guard)] {
        if let Some(address) = address {
            roles.insert(role.to_owned(), address.to_string().into());
        }
    }
    if !roles.is_empty() {
        body["registry"] = roles.into();
    }
    let body = body.to_string();
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, body)?;
    std::fs::rename(&partial, path)
}

pub fn load_policy(dir: &Path, version: u64) -> Result<Policy, PolicyError> {
    Ok(Policy::load_dir(dir)?.with_version(version))
}
