//! `nsqgate revoke`: revokes an API key, an identity or a JWT on every replica at once,
//! through the cluster's Redis ([`super::feed`]). Redis is named by `--redis-url` or by the
//! `[cluster]` section of `--config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::connect::Servers;
use super::revocations::Target;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["api_key_name", "identity", "jti"])))]
#[command(group(clap::ArgGroup::new("redis").required(true).args(["redis_url", "config"])))]
pub struct RevokeArgs {
    /// The API key of `[api_keys.NAME]` in the policy.
    #[arg(long = "api-key-name", value_name = "NAME")]
    api_key_name: Option<String>,
    /// Every credential of this identity.
    #[arg(long, value_name = "ID")]
    identity: Option<String>,
    /// One JWT, by its `jti` claim.
    #[arg(long, value_name = "ID")]
    jti: Option<String>,
    /// How long the revocation lasts: `90s`, `30m`, `1h`, `7d`.
    #[arg(long = "for", value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    lasting: Duration,
    /// The cluster's Redis, e.g. `redis://10.0.0.5:6379` (with a CA or client certificate, use
    /// `--config`).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Take Redis (URL, key prefix, timeout) from this configuration's `[cluster]`.
    #[arg(long, env = "NSQGATE_CONFIG")]
    config: Option<PathBuf>,
    /// The key prefix, with `--redis-url` (the configuration's `cluster.key_prefix` otherwise).
    #[arg(long, default_value = "nsqgate:")]
    key_prefix: String,
}

pub fn run(args: RevokeArgs) -> ExitCode {
    let target = match (args.api_key_name, args.identity, args.jti) {
        (Some(name), _, _) => Target::ApiKey(name),
        (_, Some(id), _) => Target::Identity(id),
        (_, _, Some(jti)) => Target::TokenId(jti),
        _ => return ExitCode::from(2),
    };
    let (servers, url, prefix, timeout) = match (args.redis_url, args.config) {
        (Some(url), _) => match redis::Client::open(url.as_str()) {
            Ok(client) => (
                Servers::Single(client),
                url,
                args.key_prefix,
                Duration::from_secs(5),
            ),
            Err(e) => {
                eprintln!("error: not a Redis URL: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(path)) => match configured(&path) {
            Ok(found) => found,
            Err(code) => return code,
        },
        (None, None) => return ExitCode::from(2),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let published = runtime.block_on(super::feed::publish(
        &servers,
        &prefix,
        &target,
        args.lasting,
        timeout,
    ));
    match published {
        Ok((_, listeners)) => {
            let secs = args.lasting.as_secs();
            println!("revoked {target} for {secs}s; {listeners} replica(s) told at once");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {} : {e}", super::redact(&url));
            ExitCode::from(1)
        }
    }
}

/// Redis as `path`'s `[cluster]` names it, TLS files included: client, URL, prefix, timeout.
fn configured(path: &Path) -> Result<(Servers, String, String, Duration), ExitCode> {
    let config = crate::config::Config::load(path).map_err(|e| {
        eprintln!("config error: {e}");
        ExitCode::from(2)
    })?;
    let Some(cluster) = config.cluster else {
        eprintln!("error: {} has no [cluster] redis_url", path.display());
        return Err(ExitCode::from(2));
    };
    let servers = super::connect::servers(&cluster).map_err(|e| {
        eprintln!("config error: {e}");
        ExitCode::from(2)
    })?;
    // A person waits at the terminal: allow more than the data path's bound.
    let timeout = cluster.timeout.max(Duration::from_secs(5));
    Ok((servers, cluster.redis_url, cluster.key_prefix, timeout))
}

/// `90s`, `30m`, `1h`, `7d` (or bare seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit (90s, 30m, 1h, 7d)"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (s, m, h or d)")),
    };
    match number.checked_mul(unit_secs) {
        Some(0) => Err("a revocation must last at least one second".into()),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("{text:?} is too long")),
    }
}
