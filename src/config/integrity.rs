//! `[integrity]`: signing keys (from files or the environment, base64, at least 32 bytes) and
//! the rules naming which topics are signed with which keys and where failures are copied.
//! Key material is read here once and never logged; errors name the key id, not its bytes.

use std::path::PathBuf;

use base64::Engine;
use serde::Deserialize;

use crate::integrity::{Integrity, Key, KeyId, Keyring, Rule};
use crate::nsq::is_valid_topic_name;

use super::{ConfigError, Locator};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntegrity {
    /// Where failed messages go when a rule names no quarantine topic of its own.
    pub quarantine_topic: Option<String>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub topics: Vec<RawRule>,
}

/// One key: exactly one of `file` or `env` holds its secret, base64-encoded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub id: String,
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Topic patterns, in the policy's syntax.
    pub topics: Vec<String>,
    pub signing_key: String,
    /// Key ids a delivered message may also be signed with (rotation).
    #[serde(default)]
    pub accept: Vec<String>,
    pub quarantine_topic: Option<String>,
}

/// The validated section; an absent one signs nothing.
pub(super) fn integrity(
    raw: Option<RawIntegrity>,
    at: &Locator<'_>,
) -> Result<Integrity, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Integrity::default());
    };
    let keyring = keyring(&raw.keys, at)?;
    let key = |id: &str, field: &str| -> Result<Key, ConfigError> {
        let parsed = KeyId::parse(id).map_err(|e| at.invalid(field, e.to_string()))?;
        keyring
            .get(&parsed)
            .cloned()
            .ok_or_else(|| at.invalid(field, format!("key {id:?} is not among [[integrity.keys]]")))
    };
    let mut rules = Vec::new();
    let mut quarantines = Vec::new();
    for (index, rule) in raw.topics.iter().enumerate() {
        let name = format!("integrity.topics[{index}]");
        let signing = key(&rule.signing_key, "integrity.topics")?;
        let accepted = (rule.accept.iter())
            .map(|id| key(id, "integrity.topics"))
            .collect::<Result<Vec<_>, _>>()?;
        let quarantine = (rule.quarantine_topic.clone())
            .or_else(|| raw.quarantine_topic.clone())
            .ok_or_else(|| {
                let text = format!("{name}: set quarantine_topic here or in [integrity]");
                at.invalid("integrity.topics", text)
            })?;
        if !is_valid_topic_name(&quarantine) {
            let text = format!("{name}: {quarantine:?} is not a valid topic name");
            return Err(at.invalid("integrity.topics", text));
        }
        quarantines.push(quarantine.clone());
        let rule = Rule::new(&rule.topics, signing, accepted, quarantine)
            .map_err(|e| at.invalid("integrity.topics", format!("{name}: {e}")))?;
        rules.push(rule);
    }
    let integrity = Integrity::new(rules);
    // A quarantined copy is unsigned: on a signed topic it would be quarantined again.
    if let Some(looped) = quarantines.iter().find(|q| integrity.signs(q)) {
        let text = format!("quarantine topic {looped:?} is itself signed by a rule");
        return Err(at.invalid("integrity.topics", text));
    }
    Ok(integrity)
}

fn keyring(raw: &[RawKey], at: &Locator<'_>) -> Result<Keyring, ConfigError> {
    let field = "integrity.keys";
    let mut keyring = Keyring::default();
    for key in raw {
        let id = KeyId::parse(&key.id).map_err(|e| at.invalid(field, e.to_string()))?;
        let encoded = match (&key.file, &key.env) {
            (Some(file), None) => {
                let path = at.existing(field, file)?;
                std::fs::read_to_string(&path)
                    .map_err(|e| at.invalid(field, format!("key {id}: {}: {e}", path.display())))?
            }
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                at.invalid(
                    field,
                    format!("key {id}: environment variable {var} is not set"),
                )
            })?,
            _ => {
                let text = format!("key {id}: set exactly one of file or env");
                return Err(at.invalid(field, text));
            }
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| at.invalid(field, format!("key {id}: the secret is not base64")))?;
        let key = Key::new(id, &secret).map_err(|e| at.invalid(field, e.to_string()))?;
        keyring
            .insert(key)
            .map_err(|e| at.invalid(field, e.to_string()))?;
    }
    Ok(keyring)
}

#[cfg(test)]
mod tests;
