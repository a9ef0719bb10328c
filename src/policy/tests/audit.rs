//! Audit rules and audit-mode files: reported beside the decision, never deciding.

use super::{policy, subject, w};
use crate::policy::Action::{Publish, Subscribe};

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
