//! Reload: what nsqgate re-reads while it runs, on SIGHUP and when a file changes (looked at
//! every `auth.policy_reload_ms`). Each part (the config file with the JWT settings and keys,
//! limits, timeouts, quotas and audit settings; the client leg's TLS set-up: certificate,
//! key, client CA, CRLs; the set-up toward nsqd: CA and client certificate; the admin
//! listener's certificate, key and client CA; the policy) is
//! built and checked whole before it replaces the one in force: new connections, handshakes
//! and decisions use it at once, established connections continue. Keys only a restart can
//! change are logged as "needs restart" (`restart`). A part that fails changes nothing of
//! itself; the failure is logged with its reason and counted. The SHA-256 of the config and
//! of every policy file goes to the audit log at start and at each reload.

mod digest;
mod restart;

pub use digest::{Digests, FileDigest, Part};

use std::sync::Arc;

use tokio::signal::unix::Signal;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::auth::jwt::{JwtConfigError, JwtVerifier};
use crate::config::{Config, ConfigError};
use crate::policy::Policy;
use crate::shared::Shared;

/// Re-reads the parts whose files changed; owns the sender of policy versions.
pub struct Reloader {
    shared: Arc<Shared>,
    policy: watch::Sender<Arc<Policy>>,
    seen: Digests,
    /// Files that changed at the last look: acted on once they stay so for one interval.
    pending: Option<Digests>,
    /// SIGHUP, registered at start (a process that cannot hear it does not start).
    hangup: Signal,
}

/// Why a changed config file was not put in force.
#[derive(Debug, thiserror::Error)]
pub enum ConfigReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Permissions(String),
    #[error("JWT keys rejected: {0}")]
    Jwt(#[from] JwtConfigError),
}

// === impl Reloader ===

impl Reloader {
    /// Takes the files as they are now as the ones loaded at start, and records their digests.
    pub fn new(
        shared: Arc<Shared>,
        policy: watch::Sender<Arc<Policy>>,
        hangup: Signal,
    ) -> Reloader {
        let seen = Digests::of(&shared.config());
        audit_files("start", &seen);
        Reloader {
            shared,
            policy,
            seen,
            pending: None,
            hangup,
        }
    }

    /// Looks for changes every `auth.policy_reload_ms`, and reloads every part on SIGHUP.
    pub async fn run(mut self) {
        loop {
            let every = self.shared.config().auth.policy_reload;
            let forced = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                Some(()) = self.hangup.recv() => true,
            };
            if !self.check(forced) {
                return;
            }
        }
    }

    /// Reloads each part whose files changed (every part when `forced`). False once no
    /// listener is left to hear of a new policy.
    fn check(&mut self, forced: bool) -> bool {
        let now = Digests::of(&self.shared.config());
        let changed = if forced {
            Part::ALL.to_vec()
        } else {
            let changed = self.seen.changed_parts(&now);
            // A certificate and its key are seldom replaced in one step: act once the files
            // have stayed as they are for one interval.
            if changed.is_empty() || self.pending.as_ref() != Some(&now) {
                self.pending = (!changed.is_empty()).then_some(now);
                return true;
            }
            changed
        };
        self.pending = None;
        let mut now = now;
        let mut changed = changed;
        if changed.contains(&Part::Config)
            && record(&self.shared, Part::Config, self.reload_config())
        {
            // The new file may name other TLS files or another policy folder.
            let after = Digests::of(&self.shared.config());
            changed.extend(now.changed_parts(&after));
            now = after;
        }
        self.seen = now;
        if forced {
            info!("SIGHUP: reloading the config, certificates, keys and the policy");
        }
        let config = self.shared.config();
        let judge_again = self.reload_tls(&changed, &config);
        let current = self.policy.borrow().clone();
        let mut next = None;
        if changed.contains(&Part::Policy) {
            let loaded = safe_modes(&config, Part::Policy)
                .and_then(|()| map_err(Policy::load_dir(&config.auth.policy_dir)));
            next = loaded.as_ref().ok().cloned();
            record(&self.shared, Part::Policy, loaded.map(|_| ()));
        }
        if changed.contains(&Part::Policy) || changed.contains(&Part::Config) {
            audit_files("reload", &self.seen);
        }
        let next = match next {
            Some(next) => next,
            // The same rules under a new version, so live connections are judged again.
            None if judge_again => Policy::clone(&current),
            None => return true,
        };
        let next = next.with_version(current.version() + 1);
        info!(version = next.version(), "policy version in force");
        self.policy.send(Arc::new(next)).is_ok()
    }
}

impl Reloader {
    /// Rebuilds each TLS set-up whose files changed: the client leg's, the one toward nsqd,
    /// the admin listener's. True when live connections must be judged again (the client CA
    /// and CRLs in force changed).
    fn reload_tls(&self, changed: &[Part], config: &Config) -> bool {
        let tls = &self.shared.tls;
        let mut judge_again = false;
        if changed.contains(&Part::ClientTls) {
            let reloaded = safe_modes(config, Part::ClientTls)
                .and_then(|()| map_err(tls.reload_server(&config.client)));
            judge_again =
                record(&self.shared, Part::ClientTls, reloaded) && tls.client_certs().is_some();
        }
        if changed.contains(&Part::UpstreamTls) {
            let settings = config.upstream.tls.as_ref();
            let reloaded = safe_modes(config, Part::UpstreamTls)
                .and_then(|()| map_err(tls.reload_upstream(settings)));
            record(&self.shared, Part::UpstreamTls, reloaded);
        }
        if changed.contains(&Part::AdminTls) {
            let settings = config.admin.as_ref().and_then(|admin| admin.tls.as_ref());
            let reloaded = safe_modes(config, Part::AdminTls)
                .and_then(|()| map_err(tls.reload_admin(settings)));
            record(&self.shared, Part::AdminTls, reloaded);
        }
        judge_again
    }

    /// Loads the config file again and puts what may change at run time in force: the
    /// config itself (read by what starts from now on), the JWT verifier, rate and name
    /// quotas, audit settings. Restart-only keys stay as started and are named in the log.
    fn reload_config(&self) -> Result<(), ConfigReloadError> {
        let old = self.shared.config();
        let mut new = Config::load(&old.source)?;
        let insecure: Vec<String> = new
            .insecure_files()
            .iter()
            .map(ToString::to_string)
            .collect();
        if !insecure.is_empty() && !old.allow_insecure_permissions {
            return Err(ConfigReloadError::Permissions(insecure.join("; ")));
        }
        for file in &insecure {
            warn!("{file}");
        }
        for key in restart::changed(&old, &new) {
            warn!(key, "needs restart: changed in the config file; in force as started until nsqgate restarts");
        }
        restart::keep(&old, &mut new);
        let jwt = match (&new.auth.jwt, self.shared.jwt()) {
            (Some(settings), Some(previous)) => {
                Some(Arc::new(JwtVerifier::keeping_jwks(settings, &previous)?))
            }
            (Some(settings), None) => Some(Arc::new(JwtVerifier::new(settings)?)),
            (None, _) => None,
        };
        self.shared.rates.set_settings(new.rates.clone());
        self.shared.names.set_defaults(new.name_quotas);
        crate::audit::configure(new.audit_on_failure, new.audit_fold);
        self.shared.jwt.store(Arc::new(jwt));
        self.shared.set_config(Arc::new(new));
        Ok(())
    }
}

/// The files of `part` whose mode a start would refuse, named (unless the operator allowed
/// loose modes): a key or policy that others could have changed is not loaded.
fn safe_modes(config: &Config, part: Part) -> Result<(), String> {
    if config.allow_insecure_permissions {
        return Ok(());
    }
    let found: Vec<String> = (config.insecure_files().iter())
        .filter(|insecure| digest::part_of(&insecure.file) == part)
        .map(ToString::to_string)
        .collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(found.join("; "))
    }
}

fn map_err<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, String> {
    result.map_err(|e| e.to_string())
}

/// Logs and counts a part's reload (`nsqgate_reloads_total{what,outcome}`); a refused one
/// makes `/readyz` name the part until a reload of it succeeds. True when it replaced what
/// was in force.
fn record<E: std::fmt::Display>(shared: &Shared, part: Part, result: Result<(), E>) -> bool {
    let what = part.as_str();
    let outcomes_so_far = shared.metrics.reloaded(what, result.is_ok());
    match result {
        Ok(()) => {
            info!(what, "{what} reloaded");
            shared.readiness.clear(what);
            if matches!(
                part,
                Part::ClientTls | Part::UpstreamTls | Part::AdminTls | Part::Config
            ) {
                shared.record_certificates();
            }
            true
        }
        Err(e) => {
            shared
                .readiness
                .set_failed(what, format!("reload refused, the previous one stays: {e}"));
            error!(
                what = part.as_str(),
                error = %e,
                failures = outcomes_so_far,
                "{} change refused; what was in force stays",
                part.as_str()
            );
            false
        }
    }
}

/// One audit line per config and policy file with its SHA-256 (`when`: start or reload), so
/// a change made behind nsqgate's back is visible afterwards.
fn audit_files(when: &str, digests: &Digests) {
    for file in digests.audited() {
        tracing::info!(
            target: crate::audit::TARGET,
            action = "load",
            outcome = when,
            file = %file.path.display(),
            sha256 = file.sha256.as_deref().unwrap_or("missing"),
            "audit"
        );
    }
}
