//! Raw policy files -> a validated, merged [`Policy`]. Parse, don't validate later: every
//! pattern is compiled and every role reference resolved here, and each rejection names the
//! file, the line and the key. The only I/O is [`read_dir`].

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::pattern::Pattern;
use super::raw::{
    self, key_path, Mode, RawApiKey, RawFile, RawRole, RawRule, SpannedList, Wildcards,
};
use super::rule::{Effect, Role, Rule};
use super::{Action, ApiKey, Policy, PolicyError, PolicyWarning};

/// Reads the `*.toml` files directly in `dir`, in name order, skipping hidden files (editor
/// lock and swap files start with a dot).
pub(super) fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, PolicyError> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| PolicyError::Read { path, source }
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error(dir))? {
        let path = entry.map_err(read_error(dir))?.path();
        let hidden = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        let toml = path.extension().is_some_and(|ext| ext == "toml");
        if toml && !hidden && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path, text)),
            Err(source) => Err(PolicyError::Read { path, source }),
        })
        .collect()
}

/// Parses, validates and merges `sources` in order.
pub(super) fn build(sources: &[(PathBuf, String)]) -> Result<Policy, PolicyError> {
    let mut builder = Builder::default();
    for (file, text) in sources {
        let raw = raw::parse(file, text)?;
        let source = Source::new(file, text, raw.mode, raw.wildcards);
        builder.add(&source, raw)?;
    }
    builder.finish()
}

/// Where something was written, to point at it in an error.
#[derive(Clone, Debug)]
struct Origin {
    file: PathBuf,
    line: usize,
    key: String,
}

impl Origin {
    fn error(&self, reason: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            file: self.file.clone(),
            line: Some(self.line),
            key: Some(self.key.clone()),
            reason: reason.into(),
        }
    }

    fn warning(self, message: String) -> PolicyWarning {
        PolicyWarning {
            file: self.file,
            line: self.line,
            key: self.key,
            message,
        }
    }

    /// `a.toml line 3`, for naming the other half of a conflict.
    fn place(&self) -> String {
        format!("{} (line {})", self.file.display(), self.line)
    }
}

/// The file being added.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
    /// The file name alone, which prefixes rule ids: `writer.toml roles.writer.allow[0]`.
    name: String,
    /// `mode = "audit"`: every rule in the file is an audit rule.
    audit: bool,
    /// `wildcards = "segment"`: the author knows `*` stays within a segment; no warnings.
    segment_stars_meant: bool,
}

impl<'a> Source<'a> {
    fn new(file: &'a Path, text: &'a str, mode: Mode, wildcards: Option<Wildcards>) -> Source<'a> {
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        Source {
            file,
            text,
            name,
            audit: mode == Mode::Audit,
            segment_stars_meant: wildcards == Some(Wildcards::Segment),
        }
    }

    fn origin(&self, span: Range<usize>, key: String) -> Origin {
        Origin {
            file: self.file.to_owned(),
            line: raw::line_of(self.text, span.start),
            key,
        }
    }
}

/// A role named by an `[identities]` or `[api_keys]` entry; resolved once every file is in,
/// since roles may be defined in a later file.
struct RoleRef {
    /// `None` for an API key's role, which is claimed by the key rather than bound to the name.
    identity: Option<String>,
    role: String,
    origin: Origin,
}

#[derive(Default)]
struct Builder {
    roles: BTreeMap<String, (Role, Origin)>,
    refs: Vec<RoleRef>,
    api_keys: HashMap<[u8; 32], (ApiKey, Origin)>,
    api_identities: HashMap<String, Origin>,
    files: Vec<PathBuf>,
    warnings: Vec<PolicyWarning>,
}

// === impl Builder ===

impl Builder {
    fn add(&mut self, source: &Source<'_>, raw: RawFile) -> Result<(), PolicyError> {
        self.files.push(source.file.to_owned());
        // Checked in file order so the first error reported is the first in the file.
        for (name, role) in by_position(raw.roles) {
            self.add_role(source, name, role)?;
        }
        for (identity, roles) in by_position(raw.identities) {
            let base = key_path(&["identities", identity.get_ref()]);
            if identity.get_ref().is_empty() {
                return Err(source.origin(identity.span(), base).error("empty identity"));
            }
            self.add_refs(source, Some(identity.get_ref()), &base, roles);
        }
        for (identity, key) in by_position(raw.api_keys) {
            self.add_api_key(source, identity, key)?;
        }
        Ok(())
    }

    fn add_role(
        &mut self,
        source: &Source<'_>,
        name: Spanned<String>,
        raw: RawRole,
    ) -> Result<(), PolicyError> {
        let RawRole {
            allow,
            deny,
            rate,
            topic_rate,
            names,
        } = raw;
        let origin = source.origin(name.span(), key_path(&["roles", name.get_ref()]));
        let mut quotas = [None, None];
        for (slot, (field, quota)) in quotas
            .iter_mut()
            .zip([("rate", rate), ("topic_rate", topic_rate)])
        {
            if let Some(quota) = quota {
                let at = source.origin(quota.span(), key_path(&["roles", name.get_ref(), field]));
                let quota = quota.into_inner();
                quota.validate().map_err(|reason| at.error(reason))?;
                *slot = Some(quota);
            }
        }
        let [rate, topic_rate] = quotas;
        if name.get_ref().is_empty() {
            return Err(origin.error("empty role name"));
        }
        if let Some((_, first)) = self.roles.get(name.get_ref()) {
            return Err(origin.error(format!(
                "role {:?} is already defined in {}; a role may be defined in one file only",
                name.get_ref(),
                first.place()
            )));
        }
        let lists = [
            (Effect::Allow, "allow", allow),
            (Effect::Deny, "deny", deny),
        ];
        let mut rules = Vec::new();
        for (effect, list, raw_rules) in lists {
            for (index, rule) in raw_rules.into_iter().enumerate() {
                let base = key_path(&["roles", name.get_ref(), list, &format!("[{index}]")]);
                rules.push(compile_rule(
                    source,
                    base,
                    effect,
                    rule,
                    &mut self.warnings,
                )?);
            }
        }
        let name = name.into_inner();
        let role = Role {
            name: name.clone(),
            rules,
            rate,
            topic_rate,
            names,
        };
        self.roles.insert(name, (role, origin));
        Ok(())
    }

    fn add_api_key(
        &mut self,
        source: &Source<'_>,
        identity: Spanned<String>,
        key: RawApiKey,
    ) -> Result<(), PolicyError> {
        let base = key_path(&["api_keys", identity.get_ref()]);
        let origin = source.origin(identity.span(), base.clone());
        if identity.get_ref().is_empty() {
            return Err(origin.error("empty API key identity"));
        }
        if let Some(first) = self.api_identities.get(identity.get_ref()) {
            return Err(origin.error(format!(
                "API key identity {:?} is already defined in {}",
                identity.get_ref(),
                first.place()
            )));
        }
        let hash_origin = source.origin(key.sha256.span(), format!("{base}.sha256"));
        let hash = parse_sha256(key.sha256.get_ref()).ok_or_else(|| {
            hash_origin.error("sha256 must be 64 hex characters (the SHA-256 of the API key)")
        })?;
        if let Some((other, first)) = self.api_keys.get(&hash) {
            return Err(hash_origin.error(format!(
                "the same key hash is already used by API key {:?} in {}",
                other.identity,
                first.place()
            )));
        }
        let names = key.roles.as_ref().map_or_else(Vec::new, |list| {
            list.get_ref()
                .iter()
                .map(|role| role.get_ref().clone())
                .collect()
        });
        if let Some(roles) = key.roles {
            self.add_refs(source, None, &base, roles);
        }
        let identity = identity.into_inner();
        self.api_identities.insert(identity.clone(), origin.clone());
        let api_key = ApiKey {
            identity,
            roles: names,
        };
        self.api_keys.insert(hash, (api_key, origin));
        Ok(())
    }

    fn add_refs(
        &mut self,
        source: &Source<'_>,
        identity: Option<&str>,
        base: &str,
        roles: SpannedList,
    ) {
        let field = if identity.is_some() { "" } else { ".roles" };
        for (index, role) in roles.into_inner().into_iter().enumerate() {
            let key = format!("{base}{field}[{index}]");
            self.refs.push(RoleRef {
                identity: identity.map(str::to_owned),
                origin: source.origin(role.span(), key),
                role: role.into_inner(),
            });
        }
    }

    fn finish(self) -> Result<Policy, PolicyError> {
        let roles: Vec<Role> = self.roles.into_values().map(|(role, _)| role).collect();
        let mut identities: HashMap<String, Vec<usize>> = HashMap::new();
        for reference in self.refs {
            let Ok(index) = roles.binary_search_by(|r| r.name.as_str().cmp(&reference.role)) else {
                return Err(reference.origin.error(format!(
                    "role {:?} is not defined; a policy may not reference an undefined role",
                    reference.role
                )));
            };
            if let Some(identity) = reference.identity {
                identities.entry(identity).or_default().push(index);
            }
        }
        for indices in identities.values_mut() {
            indices.sort_unstable();
            indices.dedup();
        }
        Ok(Policy {
            roles,
            identities,
            api_keys: self
                .api_keys
                .into_iter()
                .map(|(hash, (key, _))| (hash, key))
                .collect(),
            files: self.files,
            warnings: self.warnings,
            version: 0,
        })
    }
}

/// Map entries in the order they were written.
fn by_position<V>(map: BTreeMap<Spanned<String>, V>) -> Vec<(Spanned<String>, V)> {
    let mut entries: Vec<_> = map.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Validates one rule; `base` is its key, `roles.writer.allow[0]`.
fn compile_rule(
    source: &Source<'_>,
    base: String,
    effect: Effect,
    rule: Spanned<RawRule>,
    warnings: &mut Vec<PolicyWarning>,
) -> Result<Rule, PolicyError> {
    let rule_span = rule.span();
    let raw = rule.into_inner();
    let at = |span: Range<usize>, field: &str| source.origin(span, format!("{base}.{field}"));
    let action: Action = raw
        .action
        .get_ref()
        .parse()
        .map_err(|err: super::UnknownAction| {
            at(raw.action.span(), "action").error(err.to_string())
        })?;
    let topics_span = raw.topics.span();
    let topics = compile_patterns(source, &format!("{base}.topics"), raw.topics, warnings)?
        .ok_or_else(|| at(topics_span, "topics").error("a rule must list topics"))?;
    let allow_subscribe = effect == Effect::Allow && action == Action::Subscribe;
    let must_list = "an allow-subscribe rule must list channels";
    let channels = match (action, raw.channels) {
        (Action::Publish, Some(list)) => {
            return Err(at(list.span(), "channels").error(
                "a publish rule may not list channels (publishing does not name a channel)",
            ));
        }
        (_, Some(list)) => {
            let span = list.span();
            let patterns = compile_patterns(source, &format!("{base}.channels"), list, warnings)?;
            Some(patterns.ok_or_else(|| {
                at(span, "channels").error(if allow_subscribe {
                    must_list
                } else {
                    "an empty list matches no channel; leave `channels` out to match every channel"
                })
            })?)
        }
        (_, None) if allow_subscribe => return Err(at(rule_span, "channels").error(must_list)),
        (_, None) => None,
    };
    Ok(Rule {
        id: format!("{} {base}", source.name),
        effect,
        action,
        topics,
        channels,
        audit: raw.audit || source.audit,
    })
}

/// Compiles a list of patterns; `Ok(None)` when the list is empty. A single `*` is flagged
/// (unless the file says it means it): it used to cross `.` and now stays within a segment.
fn compile_patterns(
    source: &Source<'_>,
    base: &str,
    list: SpannedList,
    warnings: &mut Vec<PolicyWarning>,
) -> Result<Option<Vec<Pattern>>, PolicyError> {
    let items = list.into_inner();
    if items.is_empty() {
        return Ok(None);
    }
    let mut patterns = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let origin = source.origin(item.span(), format!("{base}[{index}]"));
        let pattern = Pattern::parse(item.get_ref()).map_err(|reason| origin.error(reason))?;
        if pattern.has_segment_star() && !source.segment_stars_meant {
            warnings.push(origin.warning(format!(
                "pattern {:?}: `*` now matches within one `.`-separated segment (it used to \
                 cross `.`); write `**` to match across segments, or put \
                 `wildcards = \"segment\"` at the top of this file once it says what it means",
                item.get_ref()
            )));
        }
        patterns.push(pattern);
    }
    Ok(Some(patterns))
}

/// 64 hex digits (either case) -> 32 bytes.
fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

#[cfg(test)]
mod tests;
