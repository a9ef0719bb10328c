//! Decision tests: table-driven allow/deny cases over a fixed policy, and audit reporting.
//! No I/O.

use std::path::PathBuf;

use super::{Action, Decision, Policy, Subject};

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

fn w(rule: &str) -> String {
    format!("writer.toml roles.{rule}")
}

/// `Some(rule)` for allow by that rule; `None` for deny (with `deny_rule`).
struct Case {
    identity: &'static str,
    claimed: &'static [&'static str],
    action: Action,
    topic: &'static str,
    channel: Option<&'static str>,
    allow: Option<&'static str>,
    deny_rule: Option<&'static str>,
}

const fn case(identity: &'static str, action: Action, topic: &'static str) -> Case {
    Case {
        identity,
        claimed: &[],
        action,
        topic,
        channel: None,
        allow: None,
        deny_rule: None,
    }
}

impl Case {
    const fn on(mut self, channel: &'static str) -> Case {
        self.channel = Some(channel);
        self
    }
    const fn claims(mut self, claimed: &'static [&'static str]) -> Case {
        self.claimed = claimed;
        self
    }
    const fn allowed_by(mut self, rule: &'static str) -> Case {
        self.allow = Some(rule);
        self
    }
    const fn denied_by(mut self, rule: &'static str) -> Case {
        self.deny_rule = Some(rule);
        self
    }
}

use Action::{Admin, Publish, Subscribe};

const CASES: &[Case] = &[
    // Allow by pattern; deny wins over allow; default deny names no rule.
    case("alice", Publish, "orders.new").allowed_by("writer.allow[0]"),
    case("alice", Publish, "orders.").allowed_by("writer.allow[0]"),
    case("alice", Publish, "orders.internal").denied_by("writer.deny[0]"),
    case("alice", Publish, "orders"),
    case("alice", Publish, "invoices.new"),
    case("alice", Publish, "orders.new#ephemeral"),
    // ${identity} is substituted and matched literally.
    case("alice", Publish, "alice.events").allowed_by("writer.allow[0]"),
    case("alice", Publish, "bob.events"),
    // `*` stays within one segment: alice's namespace is not alice.bob's.
    case("alice", Publish, "alice.bob.orders"),
    case("alice.bob", Publish, "alice.bob.orders").allowed_by("writer.allow[0]"),
    case("alice", Publish, "orders.new.deep"),
    case("team-a", Publish, "team-a.x").allowed_by("writer.allow[0]"),
    case("team-a", Publish, "team-ab.x"),
    case("a*", Publish, "abc.x"),
    case("a*", Publish, "a.x"),
    case("a*", Publish, "a*.x"),
    case("", Publish, ".x").claims(&["writer"]),
    case("", Publish, "orders.x")
        .claims(&["writer"])
        .allowed_by("writer.allow[0]"),
    // Subscribe needs a listed channel; ephemeral only matches `#ephemeral` patterns.
    case("alice", Subscribe, "orders.new")
        .on("billing")
        .allowed_by("writer.allow[1]"),
    case("alice", Subscribe, "orders.new").on("shipping"),
    case("alice", Subscribe, "orders.new"),
    case("alice", Subscribe, "orders.new")
        .on("tail#ephemeral")
        .allowed_by("writer.allow[1]"),
    case("alice", Subscribe, "orders.new")
        .on("tail-42#ephemeral")
        .allowed_by("writer.allow[1]"),
    case("alice", Subscribe, "orders.new").on("tail-42"),
    case("alice", Subscribe, "orders.new").on("billing#ephemeral"),
    case("alice", Subscribe, "orders.new").on("tail#ephemeral#ephemeral"),
    // A deny-subscribe rule without channels denies every channel.
    case("alice", Subscribe, "orders.secret")
        .on("billing")
        .denied_by("writer.deny[1]"),
    case("alice", Subscribe, "orders.secret").denied_by("writer.deny[1]"),
    // Admin: channels default to all, including topic-level (no channel).
    case("alice", Admin, "orders.x").allowed_by("writer.allow[2]"),
    case("alice", Admin, "orders.x")
        .on("billing")
        .allowed_by("writer.allow[2]"),
    case("alice", Admin, "jobs"),
    case("x", Admin, "jobs").claims(&["channel-admin"]),
    case("x", Admin, "jobs")
        .on("abc")
        .claims(&["channel-admin"])
        .allowed_by("channel-admin.allow[0]"),
    case("x", Admin, "jobs").on("b").claims(&["channel-admin"]),
    // A lone `*` matches any one-segment non-ephemeral name, never an ephemeral one.
    case("bob", Subscribe, "anything")
        .on("any")
        .allowed_by("reader.allow[0]"),
    case("bob", Subscribe, "any.thing").on("any"),
    case("bob", Subscribe, "t#ephemeral").on("any"),
    case("bob", Subscribe, "t").on("c#ephemeral"),
    case("bob", Subscribe, "bad topic").on("any"),
    case("bob", Publish, "anything"),
    case("bob", Admin, "anything"),
    // Claimed roles count when defined; undefined claims are ignored.
    case("jwt", Subscribe, "x")
        .on("y")
        .claims(&["reader", "nope"])
        .allowed_by("reader.allow[0]"),
    case("jwt", Publish, "x#ephemeral")
        .claims(&["ephemeral"])
        .allowed_by("ephemeral.allow[0]"),
    case("jwt", Publish, "x").claims(&["ephemeral"]),
    case("jwt", Publish, "orders.x").claims(&["nope"]),
    case("stranger", Subscribe, "orders.new").on("billing"),
    // Publish ignores a channel argument.
    case("alice", Publish, "orders.new")
        .on("whatever")
        .allowed_by("writer.allow[0]"),
];

#[test]
fn table_of_decisions() {
    let policy = policy();
    for (index, case) in CASES.iter().enumerate() {
        let claimed: Vec<String> = case.claimed.iter().map(|s| s.to_string()).collect();
        let who = subject(case.identity, &claimed);
        let check = policy.check(&who, case.action, case.topic, case.channel);
        let expected = match (case.allow, case.deny_rule) {
            (Some(rule), _) => Decision::Allow { rule: w(rule) },
            (None, rule) => Decision::Deny {
                rule: rule.map(w),
                reason: String::new(),
            },
        };
        let label = format!(
            "case {index}: {} {} {:?} {:?}",
            case.identity, case.action, case.topic, case.channel
        );
        assert_eq!(check.decision.is_allow(), expected.is_allow(), "{label}");
        assert_eq!(check.decision.rule(), expected.rule(), "{label}");
    }
}

#[test]
fn deny_reasons_name_the_request_and_rule() {
    let policy = policy();
    let denied = policy.check(&subject("alice", &[]), Publish, "bob.events", None);
    let expected = Decision::Deny {
        rule: None,
        reason: "no rule allows publish on topic bob.events".to_owned(),
    };
    assert_eq!(denied.decision, expected);
    let by_rule = policy.check(
        &subject("alice", &[]),
        Subscribe,
        "orders.secret",
        Some("c"),
    );
    assert_eq!(
        by_rule.decision.to_string(),
        "denied: rule writer.toml roles.writer.deny[1] denies subscribe on topic orders.secret \
         channel c"
    );
}

#[test]
fn empty_policy_denies_everything() {
    let policy = Policy::empty();
    let claimed = vec!["writer".to_owned()];
    for action in Action::ALL {
        let check = policy.check(&subject("alice", &claimed), action, "t", Some("c"));
        assert!(!check.decision.is_allow());
        assert!(check.audit.is_none());
    }
    assert_eq!(policy.version(), 0);
    assert!(policy.files().is_empty());
}

#[test]
fn audit_rule_reports_without_deciding() {
    let policy = policy();
    let check = policy.check(&subject("alice", &[]), Publish, "orders.audited", None);
    assert_eq!(check.decision.rule(), Some(w("writer.allow[0]").as_str()));
    let audit = check.audit.as_ref().map(|d| (d.is_allow(), d.rule()));
    assert_eq!(audit, Some((false, Some(w("writer.deny[2]").as_str()))));

    let same = policy.check(&subject("alice", &[]), Publish, "orders.new", None);
    assert!(same.decision.is_allow() && same.audit.is_none());
}

#[test]
fn audit_mode_file_reports_without_deciding() {
    let policy = policy();
    let carol = subject("carol", &[]);
    let publish = policy.check(&carol, Publish, "audit.x", None);
    assert_eq!(publish.decision.rule(), None);
    assert!(!publish.decision.is_allow());
    let audit = publish.audit.as_ref().map(|d| (d.is_allow(), d.rule()));
    assert_eq!(
        audit,
        Some((true, Some("z-audit.toml roles.auditor.allow[0]")))
    );

    let subscribe = policy.check(&carol, Subscribe, "t", Some("secret"));
    assert!(subscribe.decision.is_allow());
    let audit = subscribe.audit.as_ref().map(|d| (d.is_allow(), d.rule()));
    assert_eq!(
        audit,
        Some((false, Some("z-audit.toml roles.auditor.deny[0]")))
    );

    let untouched = policy.check(&carol, Subscribe, "t", Some("public"));
    assert!(untouched.decision.is_allow() && untouched.audit.is_none());
}

#[test]
fn roles_are_resolved_sorted_and_unknown_claims_reported() {
    let policy = policy();
    let claimed: Vec<String> = ["writer", "reader", "ghost", "ghost", "admin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let alice = subject("alice", &claimed);
    assert_eq!(policy.roles_of(&alice), ["reader", "writer"]);
    assert_eq!(policy.unknown_claimed_roles(&alice), ["admin", "ghost"]);
    assert_eq!(
        policy.roles_of(&subject("carol", &[])),
        ["auditor", "reader"]
    );
    assert!(policy.roles_of(&subject("nobody", &[])).is_empty());
}

#[test]
fn version_and_files_are_kept() {
    let policy = policy().with_version(7);
    assert_eq!(policy.version(), 7);
    let files: Vec<String> = policy
        .files()
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    assert_eq!(files, ["policies/writer.toml", "policies/z-audit.toml"]);
}

#[test]
fn action_round_trips_through_text() {
    for action in Action::ALL {
        assert_eq!(action.to_string().parse::<Action>().ok(), Some(action));
    }
    assert!("Publish".parse::<Action>().is_err());
}

#[test]
fn may_subscribe_somewhere_finds_channel_restricted_consumers() {
    let policy = Policy::from_sources(&[(
        "p.toml".into(),
        r#"
[roles.billing]
allow = [{ action = "subscribe", topics = ["orders"], channels = ["billing"] }]
deny = [{ action = "subscribe", topics = ["orders.secret"] }]
[roles.trial]
allow = [{ action = "subscribe", topics = ["trial"], channels = ["*"], audit = true }]
[identities]
alice = ["billing", "trial"]
"#
        .to_owned(),
    )])
    .unwrap();
    let alice = Subject {
        identity: "alice",
        claimed_roles: &[],
    };
    let bob = Subject {
        identity: "bob",
        claimed_roles: &[],
    };
    assert!(policy.may_subscribe_somewhere(&alice, "orders"));
    assert!(!policy.may_subscribe_somewhere(&alice, "payments"));
    assert!(!policy.may_subscribe_somewhere(&bob, "orders"));
    // An audit-only allow does not count.
    assert!(!policy.may_subscribe_somewhere(&alice, "trial"));
}

fn load(text: &str) -> Policy {
    match Policy::from_sources(&[("p.toml".into(), text.to_owned())]) {
        Ok(policy) => policy,
        Err(err) => panic!("test policy does not load: {err}"),
    }
}

#[test]
fn everywhere_is_decided_from_the_rules_not_by_probing_names() {
    let policy = load(
        r#"
[roles.probes]
allow = [{ action = "admin", topics = ["*_*", "*0*"] }]
[roles.durable]
allow = [{ action = "admin", topics = ["**"] }]
[roles.ops]
allow = [
  { action = "admin", topics = ["**", "**#ephemeral"] },
  { action = "subscribe", topics = ["**", "**#ephemeral"], channels = ["**"] },
]
[roles.reader]
allow = [{ action = "subscribe", topics = ["**"], channels = ["**", "**#ephemeral"] }]
[roles.reader-eph]
allow = [{ action = "subscribe", topics = ["**#ephemeral"], channels = ["**#ephemeral", "**"] }]
[roles.fenced]
deny = [{ action = "admin", topics = ["secret.**"] }]
[roles.trial]
allow = [{ action = "admin", topics = ["**", "**#ephemeral"], audit = true }]
"#,
    );
    let everywhere = |roles: &[&str], action| {
        let claimed: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        policy.allows_everywhere(&subject("x", &claimed), action)
    };
    assert!(
        !everywhere(&["probes"], Admin),
        "two probe-like patterns are not everything"
    );
    assert!(
        !everywhere(&["durable"], Admin),
        "ephemeral topics are topics too"
    );
    assert!(everywhere(&["ops"], Admin));
    assert!(everywhere(&["probes", "ops"], Admin));
    assert!(
        !everywhere(&["ops", "fenced"], Admin),
        "a deny narrows everything"
    );
    assert!(!everywhere(&["trial"], Admin), "audit rules never grant");
    assert!(
        !everywhere(&["ops"], Subscribe),
        "channels must cover everything too"
    );
    assert!(!everywhere(&["reader"], Subscribe));
    assert!(everywhere(&["reader", "reader-eph"], Subscribe));
    assert!(!everywhere(&["ops"], Publish));
}

#[test]
fn single_stars_are_flagged_unless_the_file_says_it_means_them() {
    let flagged = load(
        r#"
[roles.w]
allow = [
  { action = "publish", topics = ["orders.**", "${identity}.*"] },
  { action = "subscribe", topics = ["a"], channels = ["tail*#ephemeral"] },
]
"#,
    );
    let warnings: Vec<String> = flagged.warnings().iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("p.toml: line 4: roles.w.allow[0].topics[1]: pattern \"${identity}.*\": `*` now matches within one `.`-separated segment"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].contains("roles.w.allow[1].channels[0]"),
        "{}",
        warnings[1]
    );
    let meant = load(
        "wildcards = \"segment\"\n[roles.w]\nallow = [{ action = \"publish\", topics = [\"a.*\"] }]\n",
    );
    assert!(meant.warnings().is_empty());
}

#[test]
fn crossing_stars_show_the_old_meaning() {
    let policy = load("[roles.w]\nallow = [{ action = \"publish\", topics = [\"${identity}.*\"] }]\n[identities]\nalice = [\"w\"]\n");
    let alice = subject("alice", &[]);
    assert!(!policy
        .check(&alice, Publish, "alice.bob.orders", None)
        .decision
        .is_allow());
    let old = policy.with_crossing_stars();
    assert!(old
        .check(&alice, Publish, "alice.bob.orders", None)
        .decision
        .is_allow());
}
