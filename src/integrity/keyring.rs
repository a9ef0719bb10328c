//! Signing keys by id: what the envelope needs to seal and open. Holds key material, never
//! prints it (Debug shows ids only); reading keys from files or the environment is `config`'s.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use hmac::digest::KeyInit;
use hmac::SimpleHmac;
use sha2::Sha256;

/// HMAC-SHA256 with its key schedule done.
pub(super) type HmacSha256 = SimpleHmac<Sha256>;

/// Fewest secret bytes a key may have: HMAC-SHA256's own output size.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest key id: it travels in every envelope.
pub const MAX_KEY_ID_LEN: usize = 32;

/// A key id: 1 to 32 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyId(Arc<str>);

/// One signing key.
#[derive(Clone)]
pub struct Key {
    id: KeyId,
    /// HMAC state keyed once at load; each tag starts from a clone of it.
    mac: HmacSha256,
}

/// Every configured key, by id.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: HashMap<KeyId, Key>,
}

/// Why a key was refused at load.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key id {0:?} must be 1 to 32 characters of [A-Za-z0-9._-]")]
    BadId(String),
    #[error("key {id}: the secret has {len} bytes, at least 32 are needed")]
    ShortSecret { id: String, len: usize },
    #[error("key {0} is configured twice")]
    Duplicate(String),
}

// === impl KeyId ===

impl KeyId {
    pub fn parse(text: &str) -> Result<KeyId, KeyError> {
        let valid = (1..=MAX_KEY_ID_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(KeyId(Arc::from(text)))
        } else {
            Err(KeyError::BadId(text.escape_debug().to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Key ===

impl Key {
    /// A key from its id and secret bytes (at least [`MIN_SECRET_LEN`]).
    pub fn new(id: KeyId, secret: &[u8]) -> Result<Key, KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::ShortSecret {
                id: id.to_string(),
                len: secret.len(),
            });
        }
        // HMAC accepts keys of every length; the error arm exists for fixed-size MACs only.
        let mac =
            <HmacSha256 as KeyInit>::new_from_slice(secret).map_err(|_| KeyError::ShortSecret {
                id: id.to_string(),
                len: secret.len(),
            })?;
        Ok(Key { id, mac })
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub(super) fn mac(&self) -> &HmacSha256 {
        &self.mac
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

// === impl Keyring ===

impl Keyring {
    pub fn insert(&mut self, key: Key) -> Result<(), KeyError> {
        if self.keys.contains_key(key.id()) {
            return Err(KeyError::Duplicate(key.id().to_string()));
        }
        self.keys.insert(key.id().clone(), key);
        Ok(())
    }

    pub fn get(&self, id: &KeyId) -> Option<&Key> {
        self.keys.get(id)
    }
}
