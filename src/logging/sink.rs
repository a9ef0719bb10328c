//! Where audit lines go: a file (reopened on SIGHUP, after logrotate renamed it) or stderr.
//! A failed write is never silent: it is counted for `/metrics`, and the thread that wrote it
//! learns of it, so `audit::record` can report it and, if so configured, refuse the decision.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// Audit lines that could not be written since start (`/metrics` reads it).
pub static FAILURES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The last write failure on this thread, until `take_failure` collects it. Writes happen
    /// on the thread that emitted the event, so this pairs a failure with its event.
    static LAST_FAILURE: RefCell<Option<io::Error>> = const { RefCell::new(None) };
}

/// The audit log's destination.
pub struct AuditSink {
    /// None: stderr.
    path: Option<PathBuf>,
    /// The open file; None once a reopen failed (every write then fails, loudly).
    file: Mutex<Option<File>>,
}

/// A handle the tracing layer makes one writer per event from.
#[derive(Clone)]
pub struct SinkWriters(pub Arc<AuditSink>);

pub struct SinkWriter(Arc<AuditSink>);

/// Audit lines lost to write failures since start.
pub fn failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// The write failure of the last audit line written on this thread, if it failed.
pub fn take_failure() -> Option<io::Error> {
    LAST_FAILURE.with(|last| last.borrow_mut().take())
}

// === impl AuditSink ===

impl AuditSink {
    /// Opens (creating, appending) the audit file, or selects stderr.
    pub fn open(path: Option<&Path>) -> io::Result<Arc<AuditSink>> {
        let file = path.map(open_append).transpose()?;
        Ok(Arc::new(AuditSink {
            path: path.map(Path::to_owned),
            file: Mutex::new(file),
        }))
    }

    /// Opens the file at its path again: after a rename, new lines go to a new file.
    pub fn reopen(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let reopened = open_append(path);
        let mut file = self.file.lock().map_err(|_| io::Error::other("poisoned"))?;
        match reopened {
            Ok(new) => {
                *file = Some(new);
                Ok(())
            }
            Err(e) => {
                *file = None;
                Err(e)
            }
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let written = match &self.path {
            None => io::stderr().lock().write_all(line),
            Some(_) => match self.file.lock() {
                Ok(mut file) => match file.as_mut() {
                    Some(file) => file.write_all(line),
                    None => Err(io::Error::other("the audit file could not be reopened")),
                },
                Err(_) => Err(io::Error::other("audit file lock poisoned")),
            },
        };
        if let Err(e) = &written {
            FAILURES.fetch_add(1, Ordering::Relaxed);
            let copy = io::Error::new(e.kind(), e.to_string());
            LAST_FAILURE.with(|last| *last.borrow_mut() = Some(copy));
        }
        written
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

// === impl SinkWriters ===

impl<'a> MakeWriter<'a> for SinkWriters {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(self.0.clone())
    }
}

impl Write for SinkWriter {
    /// One call per event: the formatted line, whole.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.0.write_line(line).map(|()| line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
