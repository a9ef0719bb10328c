//! The process around the listeners: the log and audit sinks, the runtime, and the signals an
//! operator sends (SIGTERM/Ctrl-C stop, SIGHUP reopens the audit file). No protocol here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Where audit lines go, what a lost one means, and how refusals fold.
pub struct AuditSettings {
    pub file: Option<PathBuf>,
    pub on_failure: crate::audit::OnFailure,
    pub fold: Option<Duration>,
}

/// Starts the log and audit sinks; None (after saying why on stderr) when they cannot be.
pub fn start_logging(
    audit: &AuditSettings,
    log_format: crate::logging::LogFormat,
) -> Option<Arc<crate::logging::sink::AuditSink>> {
    match crate::logging::init(audit.file.as_deref(), log_format) {
        Ok(sink) => {
            crate::audit::configure(audit.on_failure, audit.fold);
            Some(sink)
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// Runs `serve` on a new runtime until SIGTERM or Ctrl-C; SIGHUP reopens the audit file.
/// `pid_file` (when given) is written once SIGHUP is handled and removed at the end.
pub fn serve_until_stopped<F, Fut>(
    audit_sink: Arc<crate::logging::sink::AuditSink>,
    fold: Option<Duration>,
    pid_file: Option<&std::path::Path>,
    serve: F,
) -> ExitCode
where
    F: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::app::StartError>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        // Signals an operator relies on (stop, reopen the audit file) must be heard, or the
        // process says so and does not start.
        let (hangup, terminate) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(hangup), Ok(terminate)) => (hangup, terminate),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP and SIGTERM");
                return ExitCode::from(1);
            }
        };
        tokio::spawn(audit_upkeep(audit_sink, fold, hangup));
        if let Some(path) = pid_file {
            if let Err(e) = crate::pidfile::write(path) {
                tracing::error!(file = %path.display(), error = %e, "cannot write the pid file");
                return ExitCode::from(1);
            }
        }
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal(terminate).await;
            tracing::info!("shutdown signal received");
            let _ = stop.send(true);
        });
        let served = serve(stopped).await;
        if let Some(path) = pid_file {
            crate::pidfile::remove(path);
        }
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "nsqgate could not start");
                ExitCode::from(1)
            }
        }
    })
}

/// SIGTERM or Ctrl-C.
async fn wait_for_signal(mut terminate: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Keeps the audit log current: reopens its file on SIGHUP (after logrotate renamed it) and
/// writes the counts of folded refusals once their interval ends.
async fn audit_upkeep(
    sink: Arc<crate::logging::sink::AuditSink>,
    fold: Option<Duration>,
    mut hangup: tokio::signal::unix::Signal,
) {
    let tick = fold.map_or(Duration::from_secs(3600), |f| {
        (f / 2).max(Duration::from_millis(100))
    });
    loop {
        tokio::select! {
            Some(()) = hangup.recv() => match (sink.reopen(), sink.path()) {
                (Ok(()), Some(path)) => tracing::info!(file = %path.display(), "audit file reopened"),
                (Ok(()), None) => {}
                (Err(e), _) => tracing::error!(error = %e, "audit file cannot be reopened: audit lines are being lost"),
            },
            _ = tokio::time::sleep(tick) => crate::audit::flush_folded(),
        }
    }
}
