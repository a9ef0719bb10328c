//! The grants nsqd is told, replayed through nsqd's own matching (ported from
//! `internal/auth/authorizations.go`, with the `regex` crate for Go's regexp): never more
//! than `Policy::check` allows, and exactly that when no deny overlaps an allow.

use regex::Regex;

use super::{NsqdAuthorization, NsqdGrants};
use crate::policy::{Action, Policy, Subject};

fn load(text: &str) -> Policy {
    match Policy::from_sources(&[("p.toml".into(), text.to_owned())]) {
        Ok(policy) => policy,
        Err(err) => panic!("test policy does not load: {err}"),
    }
}

fn grants(policy: &Policy, identity: &str) -> NsqdGrants {
    policy.nsqd_grants(&Subject {
        identity,
        claimed_roles: &[],
    })
}

/// nsqd's `State.IsAllowed`: a publish is checked as the empty channel and needs the
/// `publish` permission, a subscribe needs `subscribe`; regexes match unanchored.
fn nsqd_allows(grants: &[NsqdAuthorization], topic: &str, channel: &str) -> bool {
    let matches = |regex: &str, text: &str| match Regex::new(regex) {
        Ok(regex) => regex.is_match(text),
        Err(e) => panic!("nsqd would refuse {regex:?}: {e}"),
    };
    let permission = if channel.is_empty() {
        "publish"
    } else {
        "subscribe"
    };
    grants.iter().any(|grant| {
        grant.permissions.contains(&permission)
            && matches(&grant.topic, topic)
            && grant.channels.iter().any(|c| matches(c, channel))
    })
}

const NAMES: &[&str] = &[
    "orders",
    "orders.new",
    "orders.eu.new",
    "orders.internal",
    "orders.secret",
    "alice.x",
    "alice.bob.x",
    "bob.x",
    "other",
    "tail#ephemeral",
    "tail1#ephemeral",
    "billing",
    "audit.x",
    "x#ephemeral",
];

/// Every publish and subscribe over [`NAMES`]: nsqd's answer against the policy's.
fn compare(policy: &Policy, identity: &str) -> Vec<String> {
    let told = grants(policy, identity).authorizations;
    let subject = Subject {
        identity,
        claimed_roles: &[],
    };
    let mut differences = Vec::new();
    for topic in NAMES {
        let mut cases = vec![(Action::Publish, "")];
        cases.extend(NAMES.iter().map(|channel| (Action::Subscribe, *channel)));
        for (action, channel) in cases {
            let nsqd = nsqd_allows(&told, topic, channel);
            let channel_arg = (!channel.is_empty()).then_some(channel);
            let gate = policy
                .check(&subject, action, topic, channel_arg)
                .decision
                .is_allow();
            assert!(
                gate || !nsqd,
                "nsqd would allow {action} {topic} {channel:?} that nsqgate denies: {told:?}"
            );
            if gate != nsqd {
                differences.push(format!("{action} {topic} {channel}"));
            }
        }
    }
    differences
}

const WRITER: &str = r#"
wildcards = "segment"
[roles.writer]
allow = [
  { action = "publish", topics = ["orders.*", "${identity}.*"] },
  { action = "subscribe", topics = ["orders.**"], channels = ["billing", "tail*#ephemeral"] },
  { action = "admin", topics = ["**"] },
  { action = "publish", topics = ["audit.*"], audit = true },
]
[identities]
alice = ["writer"]
"#;

#[test]
fn without_denies_nsqd_is_told_exactly_the_policy() {
    let policy = load(WRITER);
    assert_eq!(compare(&policy, "alice"), Vec::<String>::new());
    assert_eq!(compare(&policy, "nobody"), Vec::<String>::new());
    let told = grants(&policy, "alice");
    assert!(told.omitted.is_empty());
    assert_eq!(told.authorizations.len(), 3, "{told:?}");
}

#[test]
fn publish_grants_match_the_empty_channel_only() {
    let told = grants(&load(WRITER), "alice").authorizations;
    let publish: Vec<_> = told
        .iter()
        .filter(|g| g.permissions == ["publish"])
        .collect();
    assert_eq!(publish.len(), 2);
    for grant in publish {
        assert_eq!(grant.channels, ["^$"]);
    }
    // A subscribe grant never lets a publish through (nsqd checks it as channel "").
    assert!(!nsqd_allows(&told, "orders.eu.new", ""));
    assert!(nsqd_allows(&told, "orders.eu.new", "billing"));
}

#[test]
fn an_identity_gets_its_own_namespace_only() {
    let told = grants(&load(WRITER), "alice").authorizations;
    assert!(nsqd_allows(&told, "alice.x", ""));
    assert!(!nsqd_allows(&told, "alice.bob.x", ""));
    assert!(!nsqd_allows(&told, "xalice.x", ""), "anchored at the start");
    assert!(
        !nsqd_allows(&told, "orders.new.x", ""),
        "anchored at the end"
    );
}

const CARVED: &str = r#"
wildcards = "segment"
[roles.writer]
allow = [
  { action = "publish", topics = ["orders.*", "orders.internal", "other"] },
  { action = "subscribe", topics = ["orders.**"], channels = ["billing", "*"] },
]
deny = [
  { action = "publish", topics = ["orders.internal"] },
  { action = "subscribe", topics = ["orders.secret"], channels = ["billing"] },
]
[identities]
alice = ["writer"]
"#;

#[test]
fn a_deny_inside_a_wildcard_leaves_the_wildcard_out() {
    let policy = load(CARVED);
    let told = grants(&policy, "alice");
    // Fail closed: orders.* cannot exclude orders.internal in nsqd, so it is not granted.
    assert!(!nsqd_allows(&told.authorizations, "orders.new", ""));
    assert!(!nsqd_allows(&told.authorizations, "orders.internal", ""));
    assert!(nsqd_allows(&told.authorizations, "other", ""));
    // The subscribe deny names channel billing only: the `*` channel overlaps it too.
    assert!(!nsqd_allows(&told.authorizations, "orders.x", "billing"));
    assert!(!nsqd_allows(&told.authorizations, "orders.x", "tail"));
    assert_eq!(
        told.omitted,
        [
            "p.toml roles.writer.allow[0] (topic 0) overlaps p.toml roles.writer.deny[0]",
            "p.toml roles.writer.allow[0] (topic 1) overlaps p.toml roles.writer.deny[0]",
            "p.toml roles.writer.allow[1] (topic 0) overlaps p.toml roles.writer.deny[1]",
        ]
    );
    // Never more than nsqgate allows; less exactly where the omitted grants were.
    let differences = compare(&policy, "alice");
    assert!(differences.contains(&"publish orders.new ".to_owned()));
    assert!(!differences.iter().any(|d| d.starts_with("publish other")));
}

#[test]
fn a_deny_elsewhere_changes_nothing() {
    let policy = load(
        r#"
wildcards = "segment"
[roles.writer]
allow = [{ action = "publish", topics = ["orders.*"] }]
deny = [
  { action = "publish", topics = ["orders.eu.*", "other"] },
  { action = "subscribe", topics = ["orders.*"] },
]
[identities]
alice = ["writer"]
"#,
    );
    let told = grants(&policy, "alice");
    assert!(told.omitted.is_empty(), "{:?}", told.omitted);
    assert_eq!(compare(&policy, "alice"), Vec::<String>::new());
}

#[test]
fn audit_rules_and_unknown_subjects_grant_nothing() {
    let policy = load(WRITER);
    let told = grants(&policy, "alice").authorizations;
    assert!(!nsqd_allows(&told, "audit.x", ""));
    assert!(grants(&policy, "mallory").authorizations.is_empty());
    assert!(grants(&policy, "").authorizations.is_empty());
}
