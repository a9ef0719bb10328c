//! Logging set-up: the operational log (text or JSON lines on stderr, `--log-format`) and the
//! audit log (JSON lines to its own sink), all written through one escaping rule
//! ([`escape`]) applied by the formatters themselves, so no log call can let a client's or a
//! peer's control bytes through.

pub mod escape;
pub mod format;
pub mod json;
pub mod sink;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::prelude::*;

use format::{JsonLines, SafeFields};
use sink::{AuditSink, SinkWriters};

/// How operational lines are written (`--log-format`, `NSQGATE_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL target: message key=value ...`, for people.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?}: use \"text\" or \"json\"")),
        }
    }
}

/// Installs the process's subscriber: operational lines (filtered by `NSQGATE_LOG`, default
/// `info`) to stderr in `format`, audit events (their own target) to the audit file or
/// stderr. Returns the audit sink, to reopen on SIGHUP.
pub fn init(audit_file: Option<&Path>, format: LogFormat) -> Result<Arc<AuditSink>, String> {
    let sink = AuditSink::open(audit_file).map_err(|e| {
        let path = audit_file.map(|p| p.display().to_string());
        format!("audit file {}: {e}", path.unwrap_or_default())
    })?;
    let filter = EnvFilter::try_from_env("NSQGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let operational = filter_fn(|meta| meta.target() != crate::audit::TARGET);
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: a file or collector gets plain text.
        .with_ansi(format == LogFormat::Text && std::io::stderr().is_terminal())
        .fmt_fields(SafeFields);
    let logs = match format {
        LogFormat::Text => logs.with_filter(filter).with_filter(operational).boxed(),
        LogFormat::Json => (logs.event_format(JsonLines))
            .with_filter(filter)
            .with_filter(operational)
            .boxed(),
    };
    let audit = tracing_subscriber::fmt::layer()
        .event_format(JsonLines)
        .with_writer(SinkWriters(sink.clone()))
        // A failed write is reported (and counted) by `audit::record`, once per interval.
        .log_internal_errors(false)
        // Audit lines are INFO or WARN: the hint lets a disabled `debug!` anywhere (and the
        // `log` records of rustls, through tracing-log) be skipped at its call site instead
        // of asking both layers at every call.
        .with_filter(
            filter_fn(|meta| meta.target() == crate::audit::TARGET)
                .with_max_level_hint(tracing::Level::INFO),
        );
    tracing_subscriber::registry()
        .with(logs)
        .with(audit)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(sink)
}

#[cfg(test)]
mod tests;
