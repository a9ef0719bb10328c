//! Logging set-up: the operational log (text on stderr) and the audit log (JSON lines to its
//! own sink), both written through one escaping rule ([`escape`]) applied by the formatters
//! themselves, so no log call can let a client's or a peer's control bytes through.

pub mod escape;
pub mod format;
pub mod sink;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::prelude::*;

use format::{AuditJson, SafeFields};
use sink::{AuditSink, SinkWriters};

/// Installs the process's subscriber: operational lines (filtered by `NSQGATE_LOG`, default
/// `info`) to stderr, audit events (their own target) to the audit file or stderr. Returns
/// the audit sink, to reopen on SIGHUP.
pub fn init(audit_file: Option<&Path>) -> Result<Arc<AuditSink>, String> {
    let sink = AuditSink::open(audit_file).map_err(|e| {
        let path = audit_file.map(|p| p.display().to_string());
        format!("audit file {}: {e}", path.unwrap_or_default())
    })?;
    let filter = EnvFilter::try_from_env("NSQGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: a file or collector gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .fmt_fields(SafeFields)
        .with_filter(filter)
        .with_filter(filter_fn(|meta| meta.target() != crate::audit::TARGET));
    let audit = tracing_subscriber::fmt::layer()
        .event_format(AuditJson)
        .with_writer(SinkWriters(sink.clone()))
        // A failed write is reported (and counted) by `audit::record`, once per interval.
        .log_internal_errors(false)
        .with_filter(filter_fn(|meta| meta.target() == crate::audit::TARGET));
    tracing_subscriber::registry()
        .with(logs)
        .with(audit)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(sink)
}

#[cfg(test)]
mod tests;
