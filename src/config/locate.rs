//! Where a key stands in the config file, so every rejection names file, line and key; and
//! the small checks every section uses. No I/O but resolving paths against the file's folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ConfigError, ENV_PREFIX};

/// Finds where a dotted key stands in the config file, so errors can name the line.
pub struct Locator<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
}

impl Locator<'_> {
    /// A path from the file, relative to the file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_owned();
        }
        self.file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(path)
    }

    /// A path from the file that must name an existing file.
    pub fn existing(&self, key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
        let full = self.resolve(path);
        if full.is_file() {
            Ok(full)
        } else {
            Err(self.invalid(key, format!("file {} does not exist", full.display())))
        }
    }

    pub fn invalid(&self, key: &str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line: key_line(self.text, key),
            key: key.to_owned(),
            reason,
        }
    }

    pub(super) fn figment_error(&self, err: figment::Error) -> ConfigError {
        let mut key = err.path.join(".");
        let reason = match &err.kind {
            figment::error::Kind::UnknownField(field, expected) => {
                append_segment(&mut key, field);
                match nearest(field, expected) {
                    Some(near) => format!("unknown key; did you mean `{near}`?"),
                    None => format!("unknown key; valid here: {}", expected.join(", ")),
                }
            }
            figment::error::Kind::MissingField(field) => {
                append_segment(&mut key, field);
                "required key is missing".to_owned()
            }
            kind => kind.to_string(),
        };
        let from_env = err
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains("environment"));
        let reason = if from_env {
            format!("{reason} (set by an {ENV_PREFIX}* environment variable)")
        } else {
            reason
        };
        self.invalid(&key, reason)
    }
}

/// figment names the field in the path for some errors and not for others.
fn append_segment(key: &mut String, field: &str) {
    if key.rsplit('.').next() == Some(field) {
        return;
    }
    if !key.is_empty() {
        key.push('.');
    }
    key.push_str(field);
}

/// 1-based line of a dotted key in a TOML text: `section.key`, the `[section]` header for a
/// one-part key, and keys inside arrays of tables (`nodes[1].listen` or `nodes.1.listen`: the
/// second `[[nodes]]`'s `listen`, or that header itself for `nodes[1]`).
fn key_line(text: &str, dotted: &str) -> Option<usize> {
    let dotted = bracket_indexes(dotted);
    let (table, key) = match dotted.rsplit_once('.') {
        Some((table, key)) => (table, key),
        None => ("", dotted.as_str()),
    };
    let mut current = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        let header = if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]"))
        {
            let name = name.trim().to_owned();
            let seen = arrays.entry(name.clone()).or_insert(0);
            *seen += 1;
            Some(format!("{name}[{}]", *seen - 1))
        } else {
            (line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))
                .map(|name| name.trim().to_owned())
        };
        if let Some(header) = header {
            current = header;
            if table.is_empty() && current == key {
                return Some(index + 1);
            }
            continue;
        }
        if current == table {
            if let Some((name, _)) = line.split_once('=') {
                if name.trim().trim_matches('"') == key {
                    return Some(index + 1);
                }
            }
        }
    }
    None
}

/// `nodes.1.listen` (figment's form) as `nodes[1].listen` (the validators' form).
fn bracket_indexes(dotted: &str) -> String {
    let mut out = String::new();
    for segment in dotted.split('.') {
        if !out.is_empty() && segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// Levenshtein distance: characters inserted, deleted or replaced to turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let replaced = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = replaced.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The expected key closest to a misspelt `field`, when one is close enough to be meant.
fn nearest<'a>(field: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|candidate| (edit_distance(field, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len().max(field.len()) / 3).max(2))
        .min()
        .map(|(_, candidate)| candidate)
}

pub fn nonzero(at: &Locator<'_>, key: &str, value: u32) -> Result<u32, ConfigError> {
    if value == 0 {
        Err(at.invalid(key, "must be greater than 0".into()))
    } else {
        Ok(value)
    }
}

pub fn millis(at: &Locator<'_>, key: &str, value: u64) -> Result<Duration, ConfigError> {
    if value == 0 {
        Err(at.invalid(key, "must be greater than 0".into()))
    } else {
        Ok(Duration::from_millis(value))
    }
}
