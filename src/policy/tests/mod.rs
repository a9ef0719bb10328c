//! Policy tests over fixed policies, no I/O: `decisions` (the table of allow/deny cases),
//! `audit` (audit rules report without deciding), `subjects` (what the policy says about a
//! subject beyond one check), `wildcards` (the changed meaning of `*`).

mod audit;
mod decisions;
mod subjects;
mod wildcards;

use std::path::PathBuf;

use super::{Policy, Subject};

const WRITER: &str = r#"
[roles.writer]
allow = [
  { action = "publish", topics = ["orders.*", "${identity}.*"] },
  { action = "subscribe", topics = ["orders.*"], channels = ["billing", "tail*#ephemeral"] },
  { action = "admin", topics = ["orders.*"] },
]
deny = [
  { action = "publish", topics = ["orders.internal"] },
  { action = "subscribe", topics = ["orders.secret"] },
  { action = "publish", topics = ["orders.audited"], audit = true },
]

[roles.reader]
allow = [{ action = "subscribe", topics = ["*"], channels = ["*"] }]

[roles.ephemeral]
allow = [{ action = "publish", topics = ["*#ephemeral"] }]

[roles.channel-admin]
allow = [{ action = "admin", topics = ["jobs"], channels = ["a*"] }]

[identities]
alice = ["writer"]
"alice.bob" = ["writer"]
"a*" = ["writer"]
team-a = ["writer"]
bob = ["reader"]
"#;

const AUDIT: &str = r#"
mode = "audit"

[roles.auditor]
allow = [{ action = "publish", topics = ["audit.*"] }]
deny = [{ action = "subscribe", topics = ["*"], channels = ["secret"] }]

[identities]
carol = ["auditor", "reader"]
"#;

/// The writer policy plus an audit-mode file, as most tests use them.
fn policy() -> Policy {
    let sources = [
        (PathBuf::from("policies/writer.toml"), WRITER.to_owned()),
        (PathBuf::from("policies/z-audit.toml"), AUDIT.to_owned()),
    ];
    match Policy::from_sources(&sources) {
        Ok(policy) => policy,
        Err(err) => panic!("test policy does not load: {err}"),
    }
}

fn subject<'a>(identity: &'a str, claimed: &'a [String]) -> Subject<'a> {
    Subject {
        identity,
        claimed_roles: claimed,
    }
}

/// A rule id of the writer file.
fn w(rule: &str) -> String {
    format!("writer.toml roles.{rule}")
}

/// A one-file policy named `p.toml`.
fn load(text: &str) -> Policy {
    match Policy::from_sources(&[("p.toml".into(), text.to_owned())]) {
        Ok(policy) => policy,
        Err(err) => panic!("test policy does not load: {err}"),
    }
}
