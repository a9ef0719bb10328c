//! Load tests: every rejection names file, line and key; merging across files; `load_dir`
//! on real folders (tempfile) and on the shipped `policies/dev.toml`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::policy::{Action, Policy, PolicyError, Subject};

fn sources(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    files
        .iter()
        .map(|(name, text)| (Path::new("policies").join(name), text.to_string()))
        .collect()
}

fn load(files: &[(&str, &str)]) -> Policy {
    match Policy::from_sources(&sources(files)) {
        Ok(policy) => policy,
        Err(err) => panic!("should load: {err}"),
    }
}

fn error(files: &[(&str, &str)]) -> PolicyError {
    match Policy::from_sources(&sources(files)) {
        Ok(_) => panic!("should not load: {files:?}"),
        Err(err) => err,
    }
}

fn error_text(text: &str) -> String {
    error(&[("a.toml", text)]).to_string()
}

const HASH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH_B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

/// Each `(text, expected)`: `text` as `policies/a.toml` is refused with exactly `expected`,
/// which names the file, the line and the key.
fn assert_each_rejected(cases: &[(String, &str)]) {
    for (text, expected) in cases {
        assert_eq!(&error_text(text), expected, "for:\n{text}");
    }
}

/// The start of a file defining role `w`.
const ROLE: &str = "[roles.w]\n";

/// A file that is not TOML: the parser's message, located.
#[test]
fn toml_syntax_errors_name_the_line() {
    assert_each_rejected(&[(
        "[roles.w\n".into(),
        "policies/a.toml: line 1: unclosed table, expected `]`",
    )]);
}

/// A value of the wrong type: the path goes down to the list item.
#[test]
fn wrong_types_name_the_key_path_down_to_the_item() {
    assert_each_rejected(&[
        (
            format!("{ROLE}allow = [{{ action = \"publish\", topics = \"x\" }}]\n"),
            "policies/a.toml: line 2: roles.w.allow[0].topics: invalid type: string \"x\", \
             expected a sequence",
        ),
        (
            format!("{ROLE}allow = [\n  {{ action = \"publish\", topics = [\"a\", 5] }},\n]\n"),
            "policies/a.toml: line 3: roles.w.allow[0].topics[1]: invalid type: integer `5`, \
             expected a string",
        ),
        (
            "[identities]\n\"spiffe://x/y\" = \"w\"\n".into(),
            "policies/a.toml: line 2: identities.\"spiffe://x/y\": invalid type: string \"w\", \
             expected a sequence",
        ),
    ]);
}

/// Unknown keys and words are errors, never ignored: a typo must not widen or narrow access.
#[test]
fn unknown_keys_and_values_are_refused_with_what_was_expected() {
    assert_each_rejected(&[
        (
            "mood = \"audit\"\n".into(),
            "policies/a.toml: line 1: mood: unknown field `mood`, expected one of `mode`, \
             `wildcards`, `roles`, `identities`, `api_keys`",
        ),
        (
            "mode = \"loud\"\n".into(),
            "policies/a.toml: line 1: mode: unknown variant `loud`, expected `enforce` or `audit`",
        ),
        (
            format!("{ROLE}alow = []\n"),
            "policies/a.toml: line 2: roles.w.alow: unknown field `alow`, expected one of `allow`, \
             `deny`, `rate`, `topic_rate`, `names`",
        ),
        (
            format!("{ROLE}[[roles.w.deny]]\naction = \"publish\"\ntopics = [\"a\"]\nchanels = [\"c\"]\n"),
            "policies/a.toml: line 5: roles.w.deny[0].chanels: unknown field `chanels`, \
             expected one of `action`, `topics`, `channels`, `audit`",
        ),
        (
            format!("[api_keys.svc]\nsha256 = \"{HASH_A}\"\nrole = []\n"),
            "policies/a.toml: line 3: api_keys.svc.role: unknown field `role`, expected \
             `sha256` or `roles`",
        ),
    ]);
}

/// A rule names its action and topics; channels only where they mean something.
#[test]
fn rules_must_say_what_they_cover() {
    assert_each_rejected(&[
        (
            format!("{ROLE}allow = [{{ action = \"publish\" }}]\n"),
            "policies/a.toml: line 2: roles.w.allow[0]: missing field `topics`",
        ),
        (
            format!("{ROLE}allow = [{{ action = \"pub\", topics = [\"a\"] }}]\n"),
            "policies/a.toml: line 2: roles.w.allow[0].action: unknown action \"pub\"; expected \
             \"publish\", \"subscribe\" or \"admin\"",
        ),
        (
            format!("{ROLE}allow = [{{ action = \"publish\", topics = [] }}]\n"),
            "policies/a.toml: line 2: roles.w.allow[0].topics: a rule must list topics",
        ),
        (
            format!("{ROLE}allow = [{{ action = \"publish\", topics = [\"a\"], channels = [\"c\"] }}]\n"),
            "policies/a.toml: line 2: roles.w.allow[0].channels: a publish rule may not list \
             channels (publishing does not name a channel)",
        ),
        (
            // The example from the brief: line 7, the second allow rule.
            "# dev\n\n[roles.writer]\nallow = [\n  { action = \"publish\", topics = [\"a\"] },\n\n  \
             { action = \"subscribe\", topics = [\"a\"] },\n]\n"
                .into(),
            "policies/a.toml: line 7: roles.writer.allow[1].channels: an allow-subscribe rule \
             must list channels",
        ),
        (
            format!("{ROLE}allow = [{{ action = \"subscribe\", topics = [\"a\"], channels = [] }}]\n"),
            "policies/a.toml: line 2: roles.w.allow[0].channels: an allow-subscribe rule must \
             list channels",
        ),
        (
            format!("{ROLE}deny = [{{ action = \"admin\", topics = [\"a\"], channels = [] }}]\n"),
            "policies/a.toml: line 2: roles.w.deny[0].channels: an empty list matches no \
             channel; leave `channels` out to match every channel",
        ),
    ]);
}

/// Patterns: the allowed characters, and `#` only in a trailing `#ephemeral`.
#[test]
fn bad_patterns_are_refused_with_the_reason() {
    assert_each_rejected(&[
        (
            format!(
                "{ROLE}allow = [\n  {{ action = \"publish\", topics = [\"a\", \"b?\"] }},\n]\n"
            ),
            "policies/a.toml: line 3: roles.w.allow[0].topics[1]: pattern \"b?\": unexpected \
             character '?'; a pattern uses `.a-zA-Z0-9_-`, `*`, `**` and `${identity}`",
        ),
        (
            format!("{ROLE}allow = [{{ action = \"publish\", topics = [\"a#b\"] }}]\n"),
            "policies/a.toml: line 2: roles.w.allow[0].topics[0]: pattern \"a#b\": `#` may only \
             appear in a trailing `#ephemeral`",
        ),
    ]);
}

/// Identities and API keys may only name roles some file defines.
#[test]
fn undefined_roles_are_refused_where_they_are_named() {
    assert_each_rejected(&[
        (
            format!("{ROLE}[identities]\nalice = [\"w\", \"x\"]\n"),
            "policies/a.toml: line 3: identities.alice[1]: role \"x\" is not defined; a policy \
             may not reference an undefined role",
        ),
        (
            format!("[api_keys.svc]\nsha256 = \"{HASH_A}\"\nroles = [\"nope\"]\n"),
            "policies/a.toml: line 3: api_keys.svc.roles[0]: role \"nope\" is not defined; a \
             policy may not reference an undefined role",
        ),
    ]);
}

/// An API key entry holds the key's SHA-256, in hex, used once.
#[test]
fn api_key_hashes_must_be_sha256_hex_and_unique() {
    assert_each_rejected(&[
        (
            "[api_keys.svc]\nsha256 = \"abc\"\n".into(),
            "policies/a.toml: line 2: api_keys.svc.sha256: sha256 must be 64 hex characters \
             (the SHA-256 of the API key)",
        ),
        (
            format!("[api_keys.svc]\nsha256 = \"+{}\"\n", &HASH_A[1..]),
            "policies/a.toml: line 2: api_keys.svc.sha256: sha256 must be 64 hex characters \
             (the SHA-256 of the API key)",
        ),
        (
            format!(
                "[api_keys.a]\nsha256 = \"{HASH_B}\"\n\n[api_keys.b]\nsha256 = \"{}\"\n",
                HASH_B.to_lowercase()
            ),
            "policies/a.toml: line 5: api_keys.b.sha256: the same key hash is already used by \
             API key \"a\" in policies/a.toml (line 1)",
        ),
    ]);
}

#[test]
fn role_defined_in_two_files_names_both() {
    let err = error(&[
        ("a.toml", "\n[roles.w]\n"),
        ("b.toml", "[roles.x]\n[roles.w]\n"),
    ]);
    assert_eq!(
        err.to_string(),
        "policies/b.toml: line 2: roles.w: role \"w\" is already defined in policies/a.toml \
         (line 2); a role may be defined in one file only"
    );
    assert_eq!(err.path(), Path::new("policies/b.toml"));
    assert_eq!(err.line(), Some(2));
    assert_eq!(err.key(), Some("roles.w"));
}

#[test]
fn api_key_identity_twice_names_both() {
    let err = error(&[
        (
            "a.toml",
            &format!("[api_keys.svc]\nsha256 = \"{HASH_A}\"\n"),
        ),
        (
            "b.toml",
            &format!("\n[api_keys.svc]\nsha256 = \"{HASH_B}\"\n"),
        ),
    ]);
    assert_eq!(
        err.to_string(),
        "policies/b.toml: line 2: api_keys.svc: API key identity \"svc\" is already defined in \
         policies/a.toml (line 1)"
    );
}

#[test]
fn files_merge_roles_identities_and_keys() {
    let policy = load(&[
        ("a.toml", "[identities]\nalice = [\"r2\"]\n\n[roles.r1]\n"),
        (
            "b.toml",
            &format!(
                "[roles.r2]\nallow = [{{ action = \"publish\", topics = [\"t\"] }}]\n\
                 [identities]\nalice = [\"r1\", \"r2\"]\n\
                 [api_keys.svc]\nsha256 = \"{HASH_B}\"\nroles = [\"r1\"]\n"
            ),
        ),
    ]);
    let alice = Subject {
        identity: "alice",
        claimed_roles: &[],
    };
    assert_eq!(policy.roles_of(&alice), ["r1", "r2"]);
    let check = policy.check(&alice, Action::Publish, "t", None);
    assert_eq!(check.decision.rule(), Some("b.toml roles.r2.allow[0]"));
    let key = policy
        .api_key(&[0xbb; 32])
        .map(|k| (k.identity.as_str(), k.roles.clone()));
    assert_eq!(key, Some(("svc", vec!["r1".to_owned()])));
    assert!(policy.api_key(&[0xaa; 32]).is_none());
    assert_eq!(policy.role_names().collect::<Vec<_>>(), ["r1", "r2"]);
}

#[test]
fn load_dir_reads_toml_files_in_name_order() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("b.toml"), "[roles.b]\n")?;
    std::fs::write(dir.path().join("a.toml"), "[identities]\nx = [\"b\"]\n")?;
    std::fs::write(dir.path().join("notes.md"), "not a policy")?;
    std::fs::write(dir.path().join(".#a.toml"), "not = [valid")?;
    std::fs::create_dir(dir.path().join("sub.toml"))?;
    let policy = Policy::load_dir(dir.path())?;
    let names: Vec<_> = policy
        .files()
        .iter()
        .filter_map(|f| f.file_name())
        .collect();
    assert_eq!(names, ["a.toml", "b.toml"]);
    Ok(())
}

#[test]
fn load_dir_rejects_missing_or_empty_folders() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("readme.md"), "")?;
    let empty = Policy::load_dir(dir.path()).err().map(|e| e.to_string());
    let expected = format!(
        "{}: no policy files (*.toml) in this folder",
        dir.path().display()
    );
    assert_eq!(empty, Some(expected));

    let missing = dir.path().join("nope");
    let err = Policy::load_dir(&missing).err().map(|e| e.to_string());
    let prefix = format!("{}: cannot read: ", missing.display());
    assert!(err.is_some_and(|e| e.starts_with(&prefix)));
    Ok(())
}

#[test]
fn shipped_dev_policy_loads_and_allows_the_demo() -> Result<(), PolicyError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let policy = Policy::load_dir(&dir)?;
    let hash: [u8; 32] = Sha256::digest(b"nsqk_demo_only_not_secret_0000000000000000000000").into();
    let key = policy.api_key(&hash).cloned();
    let key = key.unwrap_or_else(|| panic!("dev key missing"));
    assert_eq!(key.identity, "demo-producer");
    let producer = Subject {
        identity: &key.identity,
        claimed_roles: &key.roles,
    };
    assert!(policy
        .check(&producer, Action::Publish, "demo", None)
        .decision
        .is_allow());
    let client = Subject {
        identity: "spiffe://nsqgate.dev/dev-client",
        claimed_roles: &[],
    };
    let allowed = [("demo-1", "c"), ("demo", "tail-1#ephemeral")];
    for (topic, channel) in allowed {
        let check = policy.check(&client, Action::Subscribe, topic, Some(channel));
        assert!(check.decision.is_allow(), "{topic} {channel}");
    }
    let denied = [("other", "c"), ("demo", "c#ephemeral")];
    for (topic, channel) in denied {
        let check = policy.check(&client, Action::Subscribe, topic, Some(channel));
        assert!(!check.decision.is_allow(), "{topic} {channel}");
    }
    assert!(!policy
        .check(&client, Action::Admin, "demo", None)
        .decision
        .is_allow());
    Ok(())
}
