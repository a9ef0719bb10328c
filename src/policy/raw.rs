//! One policy file as written: serde types with spans, and TOML errors turned into
//! [`PolicyError`]s naming file, line and key. No I/O here.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{PolicyError, RateQuota};

/// A list of strings, each with its place in the file.
pub(super) type SpannedList = Spanned<Vec<Spanned<String>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) mode: Mode,
    /// `wildcards = "segment"`: written knowing that `*` stays within one `.` segment, so
    /// its single `*`s are not flagged as patterns whose meaning changed.
    pub(super) wildcards: Option<Wildcards>,
    #[serde(default)]
    pub(super) roles: BTreeMap<Spanned<String>, RawRole>,
    #[serde(default)]
    pub(super) identities: BTreeMap<Spanned<String>, SpannedList>,
    #[serde(default)]
    pub(super) api_keys: BTreeMap<Spanned<String>, RawApiKey>,
}

/// `mode = "audit"` makes every rule in the file report instead of decide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// The wildcard meaning a file declares it was written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Wildcards {
    /// `*` within one segment, `**` across segments.
    Segment,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRole {
    #[serde(default)]
    pub(super) allow: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(super) deny: Vec<Spanned<RawRule>>,
    /// Token bucket per identity holding this role, over all its connections.
    pub(super) rate: Option<Spanned<RateQuota>>,
    /// Token bucket per identity holding this role and topic.
    pub(super) topic_rate: Option<Spanned<RateQuota>>,
    /// Quotas on new topic and channel names for identities holding this role.
    pub(super) names: Option<crate::limit::names::NameQuota>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) action: Spanned<String>,
    pub(super) topics: SpannedList,
    pub(super) channels: Option<SpannedList>,
    #[serde(default)]
    pub(super) audit: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApiKey {
    pub(super) sha256: Spanned<String>,
    pub(super) roles: Option<SpannedList>,
}

/// Parses one file, or fails with the line and (when it can be found) the key at fault.
pub(super) fn parse(file: &Path, text: &str) -> Result<RawFile, PolicyError> {
    toml::from_str(text).map_err(|err| {
        let at = err.span().map(|span| span.start);
        PolicyError::Invalid {
            file: file.to_owned(),
            line: at.map(|at| line_of(text, at)),
            key: at.and_then(|at| key_at(text, at)),
            reason: err.message().trim().to_owned(),
        }
    })
}

/// The 1-based line holding byte offset `at`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    let end = at.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Dotted path of `keys` as TOML would write it: `api_keys."spiffe://x".roles[0]`.
pub(super) fn key_path(keys: &[&str]) -> String {
    let mut out = String::new();
    for key in keys {
        push_key(&mut out, key);
    }
    out
}

/// Appends `.key` (or `key` at the start, or `[n]` for a `[n]` index) to a dotted path.
pub(super) fn push_key(out: &mut String, key: &str) {
    if key.starts_with('[') {
        out.push_str(key);
        return;
    }
    if !out.is_empty() {
        out.push('.');
    }
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        out.push_str(key);
    } else {
        out.push_str(&format!("{key:?}"));
    }
}

/// The key or array element nearest before byte `at` (the deepest on ties): for a value or
/// a key the error points at, that is the key path of the value itself. `None` when the text
/// does not parse (a syntax error) or `at` precedes every key.
fn key_at(text: &str, at: usize) -> Option<String> {
    let table = DeTable::parse(text).ok()?;
    let mut best = Best {
        at,
        found: None,
        path: Vec::new(),
    };
    best.walk_table(table.get_ref());
    best.found.map(|(_, _, path)| path)
}

/// Search state for [`key_at`]: the best (start, depth, path) so far and the current path.
struct Best {
    at: usize,
    found: Option<(usize, usize, String)>,
    path: Vec<String>,
}

impl Best {
    fn walk_table(&mut self, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            let start = key.span().start.min(value.span().start);
            self.path.push(key.get_ref().to_string());
            self.visit(start, value);
            self.path.pop();
        }
    }

    fn visit(&mut self, start: usize, value: &Spanned<DeValue<'_>>) {
        if start <= self.at {
            let depth = self.path.len();
            let better = match &self.found {
                Some((s, d, _)) => (start, depth) >= (*s, *d),
                None => true,
            };
            if better {
                let keys: Vec<&str> = self.path.iter().map(String::as_str).collect();
                self.found = Some((start, depth, key_path(&keys)));
            }
        }
        match value.get_ref() {
            DeValue::Table(table) => self.walk_table(table),
            DeValue::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.path.push(format!("[{index}]"));
                    self.visit(item.span().start, item);
                    self.path.pop();
                }
            }
            _ => {}
        }
    }
}
