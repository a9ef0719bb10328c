//! The `nsqgate` command: run the proxy, check a configuration, make development certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use nsqgate::config::Config;
use nsqgate::process::{serve_until_stopped, start_logging, AuditSettings};

#[derive(Parser)]
#[command(
    name = "nsqgate",
    version,
    about = "An authenticating TLS proxy for NSQ"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy.
    Run {
        #[arg(long, env = "NSQGATE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        checks: StartChecks,
        /// Once every listener (NSQ, HTTP, admin) is bound, write their addresses here as JSON
        /// (`{"nsq": ["127.0.0.1:4150", ...], "http": {...}, "admin": "127.0.0.1:9150"}`): for
        /// orchestration and tests.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Write the process id here once SIGHUP is handled (for `nsqgate reload`).
        #[arg(long, env = "NSQGATE_PID_FILE")]
        pid_file: Option<PathBuf>,
        /// How log lines are written on stderr: `text` for people, `json` (one object per
        /// line) for log shippers. The audit log is JSON lines either way.
        #[arg(long, env = "NSQGATE_LOG_FORMAT", default_value = "text")]
        log_format: nsqgate::logging::LogFormat,
    },
    /// Load and check a configuration and everything it names (policy, certificates and
    /// keys, CAs, CRLs, JWT keys) as a start would; exit 0 when good, 1 naming what is not.
    CheckConfig {
        #[arg(long, env = "NSQGATE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        checks: StartChecks,
        /// Also connect to each nsqd with a verified TLS handshake (and fetch the JWKS).
        #[arg(long)]
        probe: bool,
    },
    /// Certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCmd,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCmd,
    },
    /// Reload the nsqgate whose `run --pid-file` wrote PID_FILE: sends it SIGHUP (as `kill
    /// -HUP`); its log, `nsqgate_reloads_total` and `/readyz` tell what changed or was refused.
    Reload {
        #[arg(long, env = "NSQGATE_PID_FILE")]
        pid_file: PathBuf,
    },
    /// Revoke an API key, an identity or a JWT on every replica sharing `[cluster]`'s Redis:
    /// live connections are cut within a second, new AUTHs refused until it ends.
    Revoke(nsqgate::cluster::command::RevokeArgs),
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCmd,
    },
}

/// What `run` and `check-config` verify beyond the configuration's content.
#[derive(clap::Args)]
struct StartChecks {
    /// Start even when a private key is readable, or the config, a policy, CA, CRL or key file
    /// is writable, by group or others (each such file is still named on stderr).
    #[arg(long)]
    allow_insecure_permissions: bool,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Print whether a caller may publish or subscribe, and the rule that decided.
    /// Exit 0 when allowed, 1 when denied, 2 on a usage or configuration error.
    Explain(nsqgate::explain::command::ExplainArgs),
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Print a fresh API key (once) and the policy entry that admits it.
    New {
        /// The identity the key authenticates as.
        #[arg(long)]
        identity: String,
        /// A role to grant (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Write a development CA plus nsqgate, nsqd and client certificates (not for production).
    Dev {
        #[arg(long)]
        out: PathBuf,
        /// A DNS name or IP the server certificates are valid for (repeatable).
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::CheckConfig { config, checks, .. } if registry_only(&config) => {
            check_registry_only(&config, &checks)
        }
        Cmd::CheckConfig {
            config,
            checks,
            probe,
        } => match load(&config, &checks) {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    eprintln!("warning: {warning}");
                }
                check_everything(loaded, &config, probe)
            }
            Err(code) => code,
        },
        Cmd::Certs {
            command: CertsCmd::Dev { out, hosts },
        } => match nsqgate::certs::write_dev_set(&out, &hosts) {
            Ok(files) => {
                for file in files {
                    println!("wrote {file}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("certs: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Run {
            config,
            checks,
            ready_file,
            pid_file,
            log_format,
        } => run(config, &checks, (ready_file, pid_file), log_format),
        Cmd::Reload { pid_file } => match nsqgate::pidfile::signal_reload(&pid_file) {
            Ok(pid) => {
                println!("sent SIGHUP to nsqgate (pid {pid}): see its log for the outcome");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("reload: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Policy {
            command: PolicyCmd::Explain(args),
        } => nsqgate::explain::command::run(&args),
        Cmd::Revoke(args) => nsqgate::cluster::command::run(args),
        Cmd::Keys {
            command: KeysCmd::New { identity, roles },
        } => {
            let key = nsqgate::auth::apikey::generate();
            let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
            println!("API key (shown once; store it in the client's auth_secret):");
            println!("{key}");
            println!();
            println!("Policy entry (add to a file in the policy folder):");
            println!("[api_keys.{identity:?}]");
            println!(
                "sha256 = {:?}",
                nsqgate::auth::apikey::hash_hex(key.as_bytes())
            );
            println!("roles = [{}]", roles.join(", "));
            ExitCode::SUCCESS
        }
    }
}

/// Everything the config names must load as at a start (a policy pattern whose meaning
/// changed is a warning); with `probe`, each nsqd must answer a verified handshake.
fn check_everything(config: Config, path: &std::path::Path, probe: bool) -> ExitCode {
    let policy = match nsqgate::check::load_everything(&config) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    for warning in policy.warnings() {
        eprintln!("warning: {warning}");
    }
    if let Some(registry) = &config.registry {
        if let Err(e) = nsqgate::registry::check(registry, config.timeouts) {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    if probe {
        let probed = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(nsqgate::check::probe(config, policy)),
            Err(e) => {
                eprintln!("cannot start the runtime: {e}");
                return ExitCode::from(1);
            }
        };
        let mut failed = false;
        for p in probed {
            match p.outcome {
                Ok(()) => println!("probe {}: ok", p.what),
                Err(e) => {
                    failed = true;
                    eprintln!("probe {}: failed: {e}", p.what);
                }
            }
        }
        if failed {
            return ExitCode::from(1);
        }
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

/// Loads and validates the configuration, then the modes of every file it names; each
/// problem is printed to stderr.
fn load(path: &std::path::Path, checks: &StartChecks) -> Result<Config, ExitCode> {
    // First, so that the default connection caps are sized from the limit nsqgate runs with.
    if let Err(e) = nsqgate::limit::conn::raise_descriptor_limit() {
        eprintln!("warning: cannot raise the descriptor limit to its hard limit: {e}");
    }
    let mut config = Config::load(path).map_err(|e| {
        eprintln!("config error: {e}");
        ExitCode::from(1)
    })?;
    config.allow_insecure_permissions = checks.allow_insecure_permissions;
    refuse_insecure(&config.insecure_files(), checks)?;
    Ok(config)
}

/// Whether the file at `path` configures only the registration roles; a file that cannot be
/// read is not, and the full load reports why.
fn registry_only(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .is_ok_and(|text| nsqgate::config::registry::is_registry_only(&text))
}

/// [`load`] for a registration-only file.
fn load_registry_only(
    path: &std::path::Path,
    checks: &StartChecks,
) -> Result<nsqgate::config::registry::RegistryOnly, ExitCode> {
    let config = nsqgate::config::registry::RegistryOnly::load(path).map_err(|e| {
        eprintln!("config error: {e}");
        ExitCode::from(1)
    })?;
    refuse_insecure(&nsqgate::config::perms::insecure(&config.files), checks)?;
    Ok(config)
}

/// Names each file others may read or write: a warning under `--allow-insecure-permissions`,
/// otherwise a config error that stops the start.
fn refuse_insecure(
    insecure: &[nsqgate::config::perms::Insecure],
    checks: &StartChecks,
) -> Result<(), ExitCode> {
    let kind = if checks.allow_insecure_permissions {
        "warning"
    } else {
        "config error"
    };
    for file in insecure {
        eprintln!("{kind}: {file}");
    }
    if insecure.is_empty() || checks.allow_insecure_permissions {
        Ok(())
    } else {
        Err(ExitCode::from(1))
    }
}

/// `check-config` for a registration-only file: it loads, and each role's certificates,
/// keys and CAs make a TLS set-up.
fn check_registry_only(path: &std::path::Path, checks: &StartChecks) -> ExitCode {
    let config = match load_registry_only(path, checks) {
        Ok(config) => config,
        Err(code) => return code,
    };
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    if let Err(e) = nsqgate::registry::check(&config.registry, config.timeouts) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

/// The ready file and the pid file `run` writes, when asked.
type StartFiles = (Option<PathBuf>, Option<PathBuf>);

fn run(
    path: PathBuf,
    checks: &StartChecks,
    (ready_file, pid_file): StartFiles,
    log_format: nsqgate::logging::LogFormat,
) -> ExitCode {
    if registry_only(&path) {
        return run_registry_only(path, checks, (ready_file, pid_file), log_format);
    }
    let config = match load(&path, checks) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let audit = AuditSettings {
        file: config.audit_file.clone(),
        on_failure: config.audit_on_failure,
        fold: config.audit_fold,
    };
    let Some(audit_sink) = start_logging(&audit, log_format) else {
        return ExitCode::from(1);
    };
    let caps = &config.connections;
    tracing::info!(
        descriptors = nsqgate::limit::conn::descriptor_limit(),
        max_total = %cap(caps.max_total),
        max_per_ip = %cap(caps.max_per_ip),
        max_per_identity = %cap(caps.max_per_identity),
        max_per_nsqd = %cap(caps.max_per_nsqd),
        "connection caps"
    );
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    serve_until_stopped(
        audit_sink,
        audit.fold,
        pid_file.as_deref(),
        move |stopped| async move { nsqgate::app::run(config, stopped, ready_file.as_deref()).await },
    )
}

/// `run` for a file that configures only the registration roles (`[registry]`, no
/// `[client]`).
fn run_registry_only(
    path: PathBuf,
    checks: &StartChecks,
    (ready_file, pid_file): StartFiles,
    log_format: nsqgate::logging::LogFormat,
) -> ExitCode {
    let config = match load_registry_only(&path, checks) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let audit = AuditSettings {
        file: config.audit_file.clone(),
        on_failure: config.audit_on_failure,
        fold: config.audit_fold,
    };
    let Some(audit_sink) = start_logging(&audit, log_format) else {
        return ExitCode::from(1);
    };
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    serve_until_stopped(
        audit_sink,
        audit.fold,
        pid_file.as_deref(),
        move |stopped| async move {
            nsqgate::app::run_registry_only(config, stopped, ready_file.as_deref()).await
        },
    )
}

/// A connection cap as the start line prints it: the number, or `off`.
fn cap(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "off".to_owned(), |n| n.to_string())
}
