//! [`PolicyError`]: why policy files could not be loaded, naming the file, line and key; and
//! [`PolicyWarning`]: what loads but deserves a look (a pattern whose meaning changed).

use std::path::{Path, PathBuf};

/// Why policy files could not be loaded. Every variant names a file or folder.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no policy files (*.toml) in this folder", dir.display())]
    NoFiles { dir: PathBuf },
    /// `policies/dev.toml: line 7: roles.writer.allow[1].channels: <reason>`.
    #[error("{}: {}{reason}", file.display(), location(*line, key.as_deref()))]
    Invalid {
        file: PathBuf,
        /// 1-based.
        line: Option<usize>,
        /// Dotted TOML path of the offending key, when known.
        key: Option<String>,
        reason: String,
    },
}

/// Something that loads but may not mean what its author meant.
/// `policies/dev.toml: line 7: roles.demo.allow[0].topics[0]: <message>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{message}", file.display(), location(Some(*line), Some(key)))]
pub struct PolicyWarning {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// Dotted TOML path of the pattern.
    pub key: String,
    pub message: String,
}

// === impl PolicyError ===

impl PolicyError {
    /// The file or folder the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PolicyError::Read { path, .. } => path,
            PolicyError::NoFiles { dir } => dir,
            PolicyError::Invalid { file, .. } => file,
        }
    }

    /// The 1-based line in [`PolicyError::path`], when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Invalid { line, .. } => *line,
            _ => None,
        }
    }

    /// The dotted key the error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            PolicyError::Invalid { key, .. } => key.as_deref(),
            _ => None,
        }
    }
}

/// `line 7: roles.writer: ` with the missing parts left out.
fn location(line: Option<usize>, key: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!("line {line}: "));
    }
    if let Some(key) = key {
        out.push_str(key);
        out.push_str(": ");
    }
    out
}
