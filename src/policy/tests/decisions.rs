//! The decision table: who may do what where, and which rule decided.

use super::{policy, subject, w};
use crate::policy::{Action, Decision, Policy};

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
